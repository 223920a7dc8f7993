/*
 * reqlog — the records of finished HTTP requests, as the front end (main
 * thread, proxy/reqlog.c) hands them to the logservice (backend thread,
 * apiserver/services/logservice.c), which joins them with the app's log
 * lines by request id (docs/services.md, "logservice").
 *
 * A batch is a byte buffer of records, one after the other, each starting
 * at a multiple of AF_REQLOG_ALIGN from the buffer's start; two batches
 * back to back are one batch (the front end's posts join, apiserver.h
 * AF_API_POST_JOIN). A record is a struct
 * af_reqlog_head (the native layout: both ends are the same process)
 * followed by its strings, in the order of enum af_reqlog_str, each
 * head->len[i] bytes, not terminated, then padding. Every string is cut to
 * AF_REQLOG_MAX_STR bytes by the writer; the reader checks every length
 * against the buffer and stops at the first record that does not fit, so a
 * damaged batch costs its tail, never a crash.
 *
 * What the backend can name itself travels as numbers: the module as its
 * index in af_api_options.modules (the front end's order, proxy/main.c),
 * the method as http-parser's enum. The logservice copies a batch's
 * records, unparsed, into its store; Read parses them.
 */
#ifndef AF_REQLOG_H
#define AF_REQLOG_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

enum af_reqlog_str {
    AF_RQ_IP,
    AF_RQ_NICKNAME, /* the logged-in user's, or empty */
    AF_RQ_RESOURCE, /* path and query as the client sent them */
    AF_RQ_REFERRER,
    AF_RQ_USER_AGENT,
    AF_RQ_HOST,
    AF_RQ_URL_MAP, /* app.yaml's url pattern of the handler that matched, or empty */
    AF_RQ_N
};

/* The longest string of a record (a resource, a User-Agent): longer ones
 * are cut. Keeps a record, and so a Read of 1000 of them, bounded. */
#define AF_REQLOG_MAX_STR 2048
/* A request id: the front end's are 32 hex digits (proxy/conn.c); a
 * shorter one is padded with NULs. */
#define AF_REQLOG_ID_LEN 32
/* method when the request line was never read (a refused head) */
#define AF_REQLOG_NO_METHOD 255

#define AF_REQLOG_ALIGN 8

/* flags */
#define AF_RQ_DIRECT 1u    /* came in on the back-door direct port */
#define AF_RQ_FORWARDED 2u /* an instance answered it (else appfront did) */

struct af_reqlog_head {
    int64_t start_usec;    /* wall clock: the first byte of the request */
    int64_t end_usec;      /* wall clock: the response finished */
    int64_t response_size; /* body bytes sent to the client */
    int32_t status;
    uint16_t module; /* index in af_api_options.modules */
    uint8_t method;  /* enum http_method, or AF_REQLOG_NO_METHOD */
    uint8_t http_major, http_minor;
    uint8_t flags;
    char request_id[AF_REQLOG_ID_LEN];
    uint16_t len[AF_RQ_N];
};

/* The bytes a record of head takes (its lengths already cut), padding
 * included. */
static inline size_t af_reqlog_size(const struct af_reqlog_head *h)
{
    size_t n = sizeof(*h);
    for (int i = 0; i < AF_RQ_N; i++)
        n += h->len[i];
    return (n + AF_REQLOG_ALIGN - 1) & ~(size_t)(AF_REQLOG_ALIGN - 1);
}

/* Writes the record (head, whose len[] are set, then the strings s[i] of
 * len[i] bytes, then zero padding) at p, which has af_reqlog_size(h)
 * bytes; returns the end. */
static inline uint8_t *af_reqlog_put(uint8_t *p, const struct af_reqlog_head *h,
                                     const char *const s[AF_RQ_N])
{
    uint8_t *start = p;
    memcpy(p, h, sizeof(*h));
    p += sizeof(*h);
    for (int i = 0; i < AF_RQ_N; i++) {
        if (h->len[i])
            memcpy(p, s[i], h->len[i]);
        p += h->len[i];
    }
    size_t size = af_reqlog_size(h);
    memset(p, 0, size - (size_t)(p - start));
    return start + size;
}

/* The record at p (aligned, before end): its head, in place, and s[]
 * (pointers into the buffer). Returns the next record's start, or NULL when
 * the record does not fit. */
static inline const uint8_t *af_reqlog_next(const uint8_t *p, const uint8_t *end,
                                            const struct af_reqlog_head **h,
                                            const char *s[AF_RQ_N])
{
    if (!p || (size_t)(end - p) < sizeof(**h))
        return NULL;
    const struct af_reqlog_head *hd = (const struct af_reqlog_head *)(const void *)p;
    const uint8_t *q = p + sizeof(*hd);
    for (int i = 0; i < AF_RQ_N; i++) {
        if (hd->len[i] > AF_REQLOG_MAX_STR || (size_t)(end - q) < hd->len[i])
            return NULL;
        s[i] = (const char *)q;
        q += hd->len[i];
    }
    size_t size = af_reqlog_size(hd);
    if ((size_t)(end - p) < size)
        return NULL;
    *h = hd;
    return p + size;
}

/* How many whole records lie back to back from p (aligned) on, at most
 * max; *stop is where the first that does not fit (or the end) starts.
 * The same checks as af_reqlog_next, without the strings: for counting a
 * batch. */
static inline size_t af_reqlog_count(const uint8_t *p, const uint8_t *end, size_t max,
                                     const uint8_t **stop)
{
    size_t n = 0;
    while (n < max && (size_t)(end - p) >= sizeof(struct af_reqlog_head)) {
        const struct af_reqlog_head *h = (const struct af_reqlog_head *)(const void *)p;
        size_t sum = 0;
        unsigned over = 0;
        for (int i = 0; i < AF_RQ_N; i++) {
            sum += h->len[i];
            over |= h->len[i] > AF_REQLOG_MAX_STR;
        }
        size_t size = (sizeof(*h) + sum + AF_REQLOG_ALIGN - 1) & ~(size_t)(AF_REQLOG_ALIGN - 1);
        if (over || (size_t)(end - p) < size)
            break;
        p += size;
        n++;
    }
    *stop = p;
    return n;
}

#endif
