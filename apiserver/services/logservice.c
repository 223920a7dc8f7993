/*
 * logservice — the "logservice" service: application log lines.
 *
 * Flush: the client libraries buffer an app's log lines and send them as an
 * encoded UserAppLogGroup inside FlushRequest.logs, once a second or so.
 * Each line is printed on stderr attributed to its request (the envelope's
 * request_id, the same id as X-AppEngine-API-Ticket) with its own level and
 * time, and kept in memory for Read.
 *
 * Memory is bounded: the newest LOG_MAX_LINES lines whose text totals at
 * most LOG_MAX_BYTES are kept, older ones are dropped first (a ring), and a
 * single message longer than LOG_MAX_MESSAGE is cut. A development server
 * needs recent logs, not an archive.
 *
 * RequestLogs (internal, posted by the front end once per loop turn,
 * proxy/reqlog.c): batches of records of finished HTTP requests (method,
 * resource, status, times, ip, ...; apiserver/reqlog.h), appended as they
 * are (one copy, no parsing) to 64 KiB chunks, so the memory they take does
 * not depend on how many records each batch holds: the newest
 * LOG_MAX_REQUESTS records are kept, in chunks totalling at most
 * LOG_MAX_REQUEST_BYTES (the newest chunk always).
 *
 * Read: a request log is the request's record joined with the app log lines
 * that carry its request id (the X-AppEngine-API-Ticket the front end gave
 * the app). A request that logged nothing is its record alone; lines whose
 * id has no record (the request is still running, or the calls came from
 * outside the front end, as aetest's do) form a request log of their own,
 * not finished, timed by its first and last line. See docs/services.md.
 *
 * With --logs_path (af_api_options.logstore), every line and record is
 * also written to an SQLite file (logservice_store.h), one transaction per
 * Flush and per batch of records, on this thread, after the memory copy;
 * at startup the newest of them, within the same bounds, are loaded back
 * with their sequence numbers, so Read (still served from memory) answers
 * after a restart what it answered before, and its offsets stay valid.
 */
#include <inttypes.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <http_parser.h>

#include "logservice.pb-c.h"

#include "apiserver/reqlog.h"
#include "apiserver/service.h"
#include "apiserver/services/logservice_store.h"
#include "common/log.h"
#include "common/xalloc.h"

#define LOG_MAX_LINES 10000
/* Half the envelope's 32 MiB limit (AF_API_MAX_MESSAGE), so even a Read
 * that returns every kept line with its framing still fits one response. */
#define LOG_MAX_BYTES (16u << 20)
/* The Go library already cuts lines at 8 KiB; the same bound here holds
 * for every client. */
#define LOG_MAX_MESSAGE (8u << 10)
/* Request ids are short ("dev~app/default.1.0", a hex id); a longer one is
 * cut rather than trusted. */
#define LOG_MAX_REQUEST_ID 256

/* Read answers this many request logs when the caller gives no count, and
 * never more than LOG_READ_MAX_COUNT, as production does. */
#define LOG_READ_DEFAULT_COUNT 20
#define LOG_READ_MAX_COUNT 1000

/* The front end's request records (apiserver/reqlog.h): as many as lines,
 * and a quarter of their bytes (a record's strings are cut at 2 KiB each,
 * a typical one is 150 bytes). With at most LOG_READ_MAX_COUNT records in
 * a Read, a response stays far below the envelope's limit. A batch is
 * what one front-end loop turn finished (proxy/reqlog.h). */
#define LOG_MAX_REQUESTS 10000
#define LOG_MAX_REQUEST_BYTES (4u << 20)

#define LOGERR(name) AF__LOG__LOG_SERVICE_ERROR__ERROR_CODE__##name

struct log_line {
    char *request_id;
    char *message;
    int64_t time_usec;
    int level;    /* 0 debug .. 4 critical, clamped */
    uint64_t seq; /* arrival order, unique: orders lines and pages */
};

/* Every line and every batch of records takes the next number of one
 * sequence; a record's own seq is its batch's number shifted left by this,
 * plus its index in the batch, and a line's its number shifted the same:
 * one order for both, unique, and the page offset of Read. */
#define SEQ_SHIFT 20
#define LOG_CHUNK (64u << 10)

/* The records of one batch within a chunk: from record `first` on, until
 * the next segment, with seq `seq` + (index - first). */
struct req_seg {
    size_t first;
    uint64_t seq;
};

/* The front end's records, batches appended one after the other. */
struct req_batch {
    struct req_batch *next; /* newer */
    uint8_t *data;          /* records only (apiserver/reqlog.h) */
    size_t len, cap;
    size_t n;    /* records in data */
    size_t skip; /* the oldest of them, dropped by the count bound */
    struct req_seg *segs;
    size_t n_segs, cap_segs;
};

struct log_state {
    struct log_line ring[LOG_MAX_LINES];
    struct req_batch *batches, *last_batch; /* oldest first */
    size_t req_count;                       /* records held, skipped ones not counted */
    size_t req_bytes;                       /* bytes allocated for them */
    /* The last chunk dropped, kept for the next one: under a steady load
     * the store allocates nothing. */
    struct req_batch *spare_chunk;
    size_t head;  /* index of the oldest line */
    size_t count; /* lines held */
    size_t bytes; /* message + request id bytes held */
    uint64_t next_seq;
    char *app_id;
    char *module;
    char *version;
    /* Every module's name and version, in af_api_options.modules' order
     * (records name their module by index); the default one alone when
     * the options list none. */
    char **mod_names, **mod_versions;
    /* Records loaded from the file may name modules and versions this run
     * does not serve (app.yaml changed): they get slots after the
     * options' ones, up to LOG_MAX_MODULE_SLOTS in all. */
    size_t n_mods;
    /* --logs_path's file, or NULL (borrowed: the API server owns it). */
    struct af_logstore *store;
};

#define LOG_MAX_MODULE_SLOTS 1024

static void load_store(struct log_state *st);

static void *log_create(const struct af_api_options *opts)
{
    struct log_state *st = af_xcalloc(1, sizeof(*st));
    st->app_id = af_xstrdup(opts && opts->app_id ? opts->app_id : "");
    st->module = af_xstrdup(opts && opts->module && opts->module[0] ? opts->module : "default");
    st->version = af_xstrdup(opts && opts->version && opts->version[0] ? opts->version : "1");
    st->next_seq = 1;
    st->n_mods = opts && opts->modules && opts->n_modules ? opts->n_modules : 1;
    st->mod_names = af_xcalloc(st->n_mods, sizeof(char *));
    st->mod_versions = af_xcalloc(st->n_mods, sizeof(char *));
    for (size_t i = 0; i < st->n_mods; i++) {
        const struct af_api_module *m =
            opts && opts->modules && opts->n_modules ? &opts->modules[i] : NULL;
        st->mod_names[i] = af_xstrdup(m && m->name && m->name[0] ? m->name : st->module);
        st->mod_versions[i] =
            af_xstrdup(m && m->version && m->version[0] ? m->version : st->version);
    }
    st->store = opts ? opts->logstore : NULL;
    if (st->store)
        load_store(st);
    return st;
}

static void drop_oldest(struct log_state *st)
{
    struct log_line *l = &st->ring[st->head];
    st->bytes -= strlen(l->message) + strlen(l->request_id);
    free(l->message);
    free(l->request_id);
    memset(l, 0, sizeof(*l));
    st->head = (st->head + 1) % LOG_MAX_LINES;
    st->count--;
}

static void free_chunk(struct req_batch *b)
{
    if (!b)
        return;
    free(b->data);
    free(b->segs);
    free(b);
}

static void drop_oldest_batch(struct log_state *st)
{
    struct req_batch *b = st->batches;
    st->batches = b->next;
    if (!st->batches)
        st->last_batch = NULL;
    st->req_count -= b->n - b->skip;
    st->req_bytes -= b->cap + b->cap_segs * sizeof(struct req_seg);
    if (!st->spare_chunk && b->cap == LOG_CHUNK) {
        b->next = NULL;
        b->len = b->n = b->skip = b->n_segs = 0;
        st->spare_chunk = b;
        return;
    }
    free_chunk(b);
}

/* Empties memory; the file is left alone (log_destroy). */
static void clear_memory(struct log_state *st)
{
    while (st->count > 0)
        drop_oldest(st);
    st->head = 0;
    while (st->batches)
        drop_oldest_batch(st);
    free_chunk(st->spare_chunk);
    st->spare_chunk = NULL;
}

/* POST /clear?stub=logservice: memory and the file. The sequence goes on
 * (and the file keeps where it stood), so an offset from before the clear
 * never names a later log. */
static void log_clear(void *state)
{
    struct log_state *st = state;
    clear_memory(st);
    if (st->store)
        af_logstore_clear(st->store, st->next_seq << SEQ_SHIFT);
}

static void log_destroy(void *state)
{
    struct log_state *st = state;
    if (!st)
        return;
    clear_memory(st);
    for (size_t i = 0; i < st->n_mods; i++) {
        free(st->mod_names[i]);
        free(st->mod_versions[i]);
    }
    free(st->mod_names);
    free(st->mod_versions);
    free(st->app_id);
    free(st->module);
    free(st->version);
    free(st);
}

/* App log levels are 0..4 (DEBUG..CRITICAL) on the wire, the same order as
 * enum af_log_level; anything else is clamped rather than refused so a
 * line is never lost to a bad level. */
static int clamp_level(int64_t level)
{
    if (level < 0)
        return 0;
    if (level > 4)
        return 4;
    return (int)level;
}

static const char *const level_names[] = {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"};

/*
 * Makes a message fit for one stderr log entry: trailing newlines go,
 * inner newlines become an indented continuation (stack traces stay
 * readable and cannot pass for a log line of their own), other control
 * bytes become '?', so an app cannot move the terminal's cursor. Returns a
 * malloc'd string.
 */
static char *printable(const char *msg)
{
    size_t len = strlen(msg);
    while (len > 0 && (msg[len - 1] == '\n' || msg[len - 1] == '\r'))
        len--;
    size_t newlines = 0;
    for (size_t i = 0; i < len; i++)
        newlines += msg[i] == '\n';
    char *out = af_xmalloc(len + newlines * 4 + 1);
    char *o = out;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)msg[i];
        if (c == '\n') {
            memcpy(o, "\n    ", 5);
            o += 5;
        } else if ((c < 0x20 && c != '\t') || c == 0x7f) {
            *o++ = '?';
        } else {
            *o++ = (char)c;
        }
    }
    *o = '\0';
    return out;
}

/* The line's own time, not the time of the flush, because lines arrive up
 * to a second (or a minute, on retry) after they were written. */
static void print_line(const struct log_line *l)
{
    if (!af_log_enabled((enum af_log_level)l->level))
        return;
    time_t secs = (time_t)(l->time_usec / 1000000);
    int ms = (int)((l->time_usec % 1000000) / 1000);
    struct tm tm;
    char when[16];
    if (l->time_usec >= 0 && localtime_r(&secs, &tm))
        snprintf(when, sizeof(when), "%02d:%02d:%02d.%03d", tm.tm_hour, tm.tm_min, tm.tm_sec, ms);
    else
        snprintf(when, sizeof(when), "??:??:??.???");
    char *text = printable(l->message);
    af_log_raw("%-8s %s [%s] %s", level_names[l->level], when,
               l->request_id[0] ? l->request_id : "no request", text);
    free(text);
}

/* A line as kept: copies of the id and the message, both cut to their
 * bounds. */
static struct log_line make_line(const char *request_id, int64_t time_usec, int64_t level,
                                 const char *message, uint64_t seq)
{
    size_t mlen = strnlen(message, LOG_MAX_MESSAGE + 1);
    char *msg;
    if (mlen > LOG_MAX_MESSAGE) {
        size_t full = strlen(message);
        char suffix[48];
        int slen = snprintf(suffix, sizeof(suffix), "...(length %zu)", full);
        size_t keep = LOG_MAX_MESSAGE - (size_t)slen;
        msg = af_xmalloc(LOG_MAX_MESSAGE + 1);
        memcpy(msg, message, keep);
        memcpy(msg + keep, suffix, (size_t)slen + 1);
    } else {
        msg = af_xstrndup(message, mlen);
    }
    struct log_line l = {
        .request_id = af_xstrndup(request_id, LOG_MAX_REQUEST_ID),
        .message = msg,
        .time_usec = time_usec,
        .level = clamp_level(level),
        .seq = seq,
    };
    return l;
}

/* Takes l's strings; drops the oldest lines past the bounds. */
static void ring_add(struct log_state *st, struct log_line l)
{
    size_t size = strlen(l.message) + strlen(l.request_id);
    while (st->count > 0 && (st->count == LOG_MAX_LINES || st->bytes + size > LOG_MAX_BYTES))
        drop_oldest(st);
    st->ring[(st->head + st->count) % LOG_MAX_LINES] = l;
    st->count++;
    st->bytes += size;
}

static void flush(void *state, const struct af_call *call, struct af_result *res)
{
    struct log_state *st = state;
    Af__Log__FlushRequest *req =
        af__log__flush_request__unpack(NULL, call->request_len, call->request);
    if (!req) {
        af_result_app_error(res, LOGERR(INVALID_REQUEST), "logservice: cannot decode FlushRequest");
        return;
    }
    Af__Log__UserAppLogGroup *group = NULL;
    if (req->has_logs && req->logs.len > 0) {
        group = af__log__user_app_log_group__unpack(NULL, req->logs.len, req->logs.data);
        if (!group) {
            af_result_app_error(res, LOGERR(INVALID_REQUEST),
                                "logservice: FlushRequest.logs (%zu bytes) is not a "
                                "UserAppLogGroup",
                                req->logs.len);
            goto done;
        }
        bool to_file = st->store && group->n_log_line > 0 && af_logstore_begin(st->store) == 0;
        for (size_t i = 0; i < group->n_log_line; i++) {
            const Af__Log__UserAppLogLine *in = group->log_line[i];
            struct log_line l = make_line(call->request_id ? call->request_id : "",
                                          in->timestamp_usec, in->level, in->message,
                                          st->next_seq++ << SEQ_SHIFT);
            print_line(&l);
            if (to_file)
                to_file = af_logstore_put_line(st->store, l.seq, l.request_id, l.time_usec,
                                               l.level, l.message) == 0;
            ring_add(st, l);
        }
        /* After a failed put this rolls back: the file misses the group. */
        if (st->store && group->n_log_line > 0)
            af_logstore_commit(st->store, LOG_MAX_REQUESTS, LOG_MAX_LINES);
        af__log__user_app_log_group__free_unpacked(group, NULL);
    }
    /* The response is base.VoidProto: empty. */
    af_result_ok(res, NULL, 0);
done:
    af__log__flush_request__free_unpacked(req, NULL);
}

/* ---- the front end's request records ---------------------------------- */

/* Copies the n records of a batch (rlen bytes at recs) to the end of the newest chunk or a new one, then drops the oldest records
 * past the bounds: whole chunks, or the front of the oldest one. */
static void keep_batch(struct log_state *st, const uint8_t *recs, size_t rlen, size_t n,
                       uint64_t seq)
{
    struct req_batch *b = st->last_batch;
    if (!b || b->len + rlen > b->cap) {
        if (st->spare_chunk && rlen <= LOG_CHUNK) {
            b = st->spare_chunk;
            st->spare_chunk = NULL;
        } else {
            /* Made whole: the data's pages touched and room for as many
             * batches as the chunk can hold records (each batch has one
             * at least), so a chunk never grows, and the memory of the
             * store depends on how many chunks it holds alone. */
            b = af_xcalloc(1, sizeof(*b));
            b->cap = rlen > LOG_CHUNK ? rlen : LOG_CHUNK;
            b->data = af_xmalloc(b->cap);
            memset(b->data, 0, b->cap);
            b->cap_segs = b->cap / sizeof(struct af_reqlog_head) + 1;
            b->segs = af_xcalloc(b->cap_segs, sizeof(*b->segs));
        }
        if (st->last_batch)
            st->last_batch->next = b;
        else
            st->batches = b;
        st->last_batch = b;
        st->req_bytes += b->cap + b->cap_segs * sizeof(*b->segs);
    }
    b->segs[b->n_segs++] = (struct req_seg){.first = b->n, .seq = seq};
    memcpy(b->data + b->len, recs, rlen);
    b->len += rlen;
    b->n += n;
    st->req_count += n;
    while (st->req_count > LOG_MAX_REQUESTS) {
        struct req_batch *old = st->batches;
        size_t excess = st->req_count - LOG_MAX_REQUESTS;
        if (old->n - old->skip <= excess) {
            drop_oldest_batch(st);
        } else {
            old->skip += excess;
            st->req_count -= excess;
        }
    }
    while (st->req_bytes > LOG_MAX_REQUEST_BYTES && st->batches != st->last_batch)
        drop_oldest_batch(st);
}

/* Writes the whole records from data to end, the first with sequence
 * number seq, in one transaction. A failure costs the file this batch
 * (said once, logservice_store.c); memory has it. */
static void store_batch(struct log_state *st, const uint8_t *data, const uint8_t *end,
                        uint64_t seq)
{
    if (af_logstore_begin(st->store) < 0)
        return;
    const uint8_t *p = data;
    for (uint64_t i = 0; p && p < end; i++) {
        const struct af_reqlog_head *h;
        const char *s[AF_RQ_N];
        p = af_reqlog_next(p, end, &h, s);
        if (!p)
            break;
        size_t m = h->module < st->n_mods ? h->module : 0;
        const char *method = h->method == AF_REQLOG_NO_METHOD ? "" : http_method_str(h->method);
        if (af_logstore_put_record(st->store, seq + i, h, s, st->mod_names[m],
                                   st->mod_versions[m], method) < 0)
            break;
    }
    af_logstore_commit(st->store, LOG_MAX_REQUESTS, LOG_MAX_LINES);
}

/* ---- loading the file at startup --------------------------------------- */

/* http-parser's number for a method name; AF_REQLOG_NO_METHOD for "" or
 * a name it does not know. */
static uint8_t method_code(const char *name)
{
    if (name[0])
        for (int m = 0; m < AF_REQLOG_NO_METHOD; m++) {
            const char *s = http_method_str((enum http_method)m);
            if (strcmp(s, "<unknown>") == 0)
                break;
            if (strcmp(s, name) == 0)
                return (uint8_t)m;
        }
    return AF_REQLOG_NO_METHOD;
}

/* The slot of a module and version in the state's table, added when new
 * (within LOG_MAX_MODULE_SLOTS; past it, the default module's). */
static uint16_t module_slot(struct log_state *st, const char *name, const char *version)
{
    /* Never empty in a file this service wrote; a hand-edited one gets
     * the defaults, as the options do. */
    name = name[0] ? name : st->module;
    version = version[0] ? version : st->version;
    for (size_t i = 0; i < st->n_mods; i++)
        if (strcmp(st->mod_names[i], name) == 0 && strcmp(st->mod_versions[i], version) == 0)
            return (uint16_t)i;
    if (st->n_mods >= LOG_MAX_MODULE_SLOTS)
        return 0;
    st->mod_names = af_xrealloc(st->mod_names, (st->n_mods + 1) * sizeof(char *));
    st->mod_versions = af_xrealloc(st->mod_versions, (st->n_mods + 1) * sizeof(char *));
    st->mod_names[st->n_mods] = af_xstrdup(name);
    st->mod_versions[st->n_mods] = af_xstrdup(version);
    return (uint16_t)st->n_mods++;
}

/* Loaded records are rebuilt in the front end's layout and handed to
 * keep_batch in runs of consecutive sequence numbers of one batch, a
 * quarter chunk at most: the store then holds them exactly as if the
 * batches had just arrived. */
struct load_run {
    struct log_state *st;
    uint8_t *buf;
    size_t len, cap, n;
    uint64_t first_seq, last_seq;
};

static void load_run_flush(struct load_run *r)
{
    if (r->n)
        keep_batch(r->st, r->buf, r->len, r->n, r->first_seq);
    r->len = r->n = 0;
}

static void load_record(void *arg, const struct af_logstore_record *rec, const char *method)
{
    struct load_run *r = arg;
    struct af_reqlog_head h = rec->h;
    h.module = module_slot(r->st, rec->module, rec->version);
    h.method = method_code(method);
    size_t need = af_reqlog_size(&h);
    if (r->n && (rec->seq != r->last_seq + 1 ||
                 rec->seq >> SEQ_SHIFT != r->first_seq >> SEQ_SHIFT ||
                 r->len + need > LOG_CHUNK / 4))
        load_run_flush(r);
    if (r->len + need > r->cap) {
        r->cap = r->len + need > LOG_CHUNK ? r->len + need : LOG_CHUNK;
        r->buf = af_xrealloc(r->buf, r->cap);
    }
    af_reqlog_put(r->buf + r->len, &h, rec->str);
    if (r->n == 0)
        r->first_seq = rec->seq;
    r->last_seq = rec->seq;
    r->len += need;
    r->n++;
}

static void load_line(void *arg, uint64_t seq, const char *request_id, int64_t time_usec,
                      int level, const char *message)
{
    struct log_state *st = arg;
    ring_add(st, make_line(request_id, time_usec, level, message, seq));
}

/* The newest lines and records of the file, within the memory bounds; the
 * sequence goes on after the file's. */
static void load_store(struct log_state *st)
{
    long nl = af_logstore_load_lines(st->store, LOG_MAX_LINES, load_line, st);
    struct load_run run = {.st = st};
    long nr = af_logstore_load_records(st->store, LOG_MAX_REQUESTS, load_record, &run);
    load_run_flush(&run);
    free(run.buf);
    uint64_t next = (af_logstore_max_seq(st->store) >> SEQ_SHIFT) + 1;
    if (next > st->next_seq)
        st->next_seq = next;
    af_info("logservice: %ld request records and %ld app log lines from %s", nr < 0 ? 0 : nr,
            nl < 0 ? 0 : nl, af_logstore_path(st->store));
}

/* Internal, posted by the front end (af_api_post, proxy/reqlog.c): records,
 * back to back (one turn's batch, or several joined), checked and copied
 * into the store as they are; Read parses them again. Records after a
 * damaged one are dropped with an error. */
static void request_logs(void *state, const struct af_call *call, struct af_result *res)
{
    struct log_state *st = state;
    const uint8_t *data = call->request;
    const uint8_t *end = data + call->request_len;
    const uint8_t *p;
    size_t n = af_reqlog_count(data, end, (1u << SEQ_SHIFT) - 1, &p);
    if (n > 0) {
        uint64_t seq = st->next_seq++ << SEQ_SHIFT;
        keep_batch(st, data, (size_t)(p - data), n, seq);
        if (st->store)
            store_batch(st, data, p, seq);
    }
    if (p < end) {
        af_result_app_error(res, LOGERR(INVALID_REQUEST),
                            "logservice: request record %zu of a batch is damaged "
                            "(%zu of %zu bytes kept)",
                            n + 1, (size_t)(p - data), call->request_len);
        return;
    }
    af_result_ok(res, NULL, 0);
}

/* ---- Read ---------------------------------------------------------------- */

/* A record as Read uses it: copied out of its batch with its strings
 * NUL-terminated. */
struct req_record {
    struct af_reqlog_head h;
    char id[AF_REQLOG_ID_LEN + 1];
    const char *str[AF_RQ_N];
    const char *module, *version, *method; /* static or the state's */
    uint64_t seq;
};

/* Copies the live records of every batch into *recs_out (oldest first),
 * their strings into *text_out (both freed by the caller). A batch's
 * records after a damaged one are left out. Returns how many. */
static size_t unpack_records(const struct log_state *st, struct req_record **recs_out,
                             char **text_out)
{
    struct req_record *recs = af_xcalloc(st->req_count + 1, sizeof(*recs));
    char *text = af_xmalloc(st->req_bytes + st->req_count * AF_RQ_N + 1);
    char *t = text;
    size_t n = 0;
    for (const struct req_batch *b = st->batches; b; b = b->next) {
        const uint8_t *p = b->data;
        const uint8_t *end = b->data + b->len;
        size_t seg = 0;
        for (size_t i = 0; i < b->n && n < st->req_count; i++) {
            while (seg + 1 < b->n_segs && b->segs[seg + 1].first <= i)
                seg++;
            const struct af_reqlog_head *h;
            const char *s[AF_RQ_N];
            p = af_reqlog_next(p, end, &h, s);
            if (!p)
                break;
            if (i < b->skip)
                continue;
            struct req_record *r = &recs[n++];
            r->h = *h;
            r->seq = b->segs[seg].seq + (i - b->segs[seg].first);
            memcpy(r->id, h->request_id, AF_REQLOG_ID_LEN);
            r->id[AF_REQLOG_ID_LEN] = '\0';
            size_t m = h->module < st->n_mods ? h->module : 0;
            r->module = st->mod_names[m];
            r->version = st->mod_versions[m];
            r->method = h->method == AF_REQLOG_NO_METHOD ? "" : http_method_str(h->method);
            for (int k = 0; k < AF_RQ_N; k++) {
                memcpy(t, s[k], h->len[k]);
                t[h->len[k]] = '\0';
                r->str[k] = t;
                t += h->len[k] + 1;
            }
        }
    }
    *recs_out = recs;
    *text_out = text;
    return n;
}

/* One request log: the lines of one request id (a run in the sorted line
 * array) and that id's newest record, either of which may be missing. */
struct req_group {
    const char *id;
    struct log_line **lines; /* sorted by seq */
    size_t n;
    const struct req_record *rec;
    int64_t start_usec, end_usec;
    int max_level; /* -1: no line */
    uint64_t last_seq; /* orders groups newest first and is the page offset */
};

static int by_request_then_seq(const void *a, const void *b)
{
    const struct log_line *x = *(struct log_line *const *)a;
    const struct log_line *y = *(struct log_line *const *)b;
    int c = strcmp(x->request_id, y->request_id);
    if (c)
        return c;
    return x->seq < y->seq ? -1 : x->seq > y->seq;
}

static int rec_by_request_then_seq(const void *a, const void *b)
{
    const struct req_record *x = *(struct req_record *const *)a;
    const struct req_record *y = *(struct req_record *const *)b;
    int c = strcmp(x->id, y->id);
    if (c)
        return c;
    return x->seq < y->seq ? -1 : x->seq > y->seq;
}

static int by_last_seq_desc(const void *a, const void *b)
{
    const struct req_group *x = a, *y = b;
    return x->last_seq > y->last_seq ? -1 : x->last_seq < y->last_seq;
}

/* A version filter matches `ours` or the production form "ours.MINOR",
 * and an empty one (the Go library sends its own version id, which is
 * empty when the app does not know it) matches every version. */
static bool version_matches(const char *ours, const char *v)
{
    if (!v || !v[0] || strcmp(v, ours) == 0)
        return true;
    size_t n = strlen(ours);
    return strncmp(v, ours, n) == 0 && v[n] == '.';
}

/* True when the request's version filters (version_id for the default
 * module, module_version for any) name the group's module and version, or
 * there are none. A group without a record belongs to the API server's
 * own module and version. */
static bool version_selected(const struct log_state *st, const struct req_group *g,
                             const Af__Log__LogReadRequest *req)
{
    if (req->n_version_id == 0 && req->n_module_version == 0)
        return true;
    const char *module = g->rec ? g->rec->module : st->module;
    const char *version = g->rec ? g->rec->version : st->version;
    for (size_t i = 0; i < req->n_version_id; i++)
        if (strcmp(module, "default") == 0 && version_matches(version, req->version_id[i]))
            return true;
    for (size_t i = 0; i < req->n_module_version; i++) {
        const Af__Log__LogModuleVersion *mv = req->module_version[i];
        const char *m = mv->module_id ? mv->module_id : "default";
        if (strcmp(m, module) == 0 && version_matches(version, mv->version_id))
            return true;
    }
    return false;
}

static bool group_selected(const struct log_state *st, const struct req_group *g,
                           const Af__Log__LogReadRequest *req)
{
    if (req->has_start_time && g->end_usec < req->start_time)
        return false;
    if (req->has_end_time && g->end_usec >= req->end_time)
        return false;
    if (req->has_minimum_log_level && g->max_level < req->minimum_log_level)
        return false;
    if (!version_selected(st, g, req))
        return false;
    if (req->n_request_id == 0)
        return true;
    size_t len = strlen(g->id);
    for (size_t i = 0; i < req->n_request_id; i++)
        if (req->request_id[i].len == len && memcmp(req->request_id[i].data, g->id, len) == 0)
            return true;
    return false;
}

/* Our offsets are the decimal last_seq of the last request log returned:
 * stable while older lines are dropped and new ones arrive. */
static int parse_offset(const Af__Log__LogReadRequest *req, uint64_t *out)
{
    *out = UINT64_MAX;
    if (!req->offset || !req->offset->has_request_id)
        return 0;
    const ProtobufCBinaryData *b = &req->offset->request_id;
    if (b->len == 0 || b->len > 20)
        return -1;
    uint64_t v = 0;
    for (size_t i = 0; i < b->len; i++) {
        if (b->data[i] < '0' || b->data[i] > '9')
            return -1;
        uint64_t d = (uint64_t)(b->data[i] - '0');
        if (v > (UINT64_MAX - d) / 10)
            return -1;
        v = v * 10 + d;
    }
    *out = v;
    return 0;
}

/* What one RequestLog needs besides the message itself; freed after the
 * response is packed. */
struct out_log {
    Af__Log__RequestLog log;
    Af__Log__LogOffset offset;
    char offset_text[24];
    char http_version[16];
    char *combined;
    Af__Log__LogLine *line_store;
    Af__Log__LogLine **line_ptrs;
};

/* Appends s to b for a quoted field of the combined line: '"' and '\' are
 * escaped with '\', control bytes written as \xHH (as Apache does). */
static char *put_escaped(char *b, const char *s)
{
    static const char hex[] = "0123456789abcdef";
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') {
            *b++ = '\\';
            *b++ = (char)c;
        } else if (c < 0x20 || c == 0x7f) {
            *b++ = '\\';
            *b++ = 'x';
            *b++ = hex[c >> 4];
            *b++ = hex[c & 15];
        } else {
            *b++ = (char)c;
        }
    }
    return b;
}

/* The Apache combined log format line of a record:
 *   IP - USER [dd/Mon/yyyy:HH:MM:SS +0000] "METHOD RESOURCE HTTP/x.y" STATUS SIZE "REFERRER" "USER-AGENT"
 * with "-" for an unknown user, a size of 0 and a missing header, and the
 * time the request began, in UTC. Returns a malloc'd string. */
static char *combined_line(const struct req_record *r, const char *http_version)
{
    static const char *const months[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                         "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
    const char *const *s = r->str;
    /* Every escaped byte takes at most four. */
    size_t max = 128 + strlen(s[AF_RQ_IP]) + strlen(s[AF_RQ_NICKNAME]) +
                 4 * (strlen(r->method) + strlen(s[AF_RQ_RESOURCE]) +
                      strlen(s[AF_RQ_REFERRER]) + strlen(s[AF_RQ_USER_AGENT]));
    char *out = af_xmalloc(max);
    char *b = out;
    time_t secs = (time_t)(r->h.start_usec / 1000000);
    struct tm tm;
    if (r->h.start_usec < 0 || !gmtime_r(&secs, &tm))
        memset(&tm, 0, sizeof(tm));
    b += sprintf(b, "%s - %s [%02d/%s/%04d:%02d:%02d:%02d +0000] \"",
                 s[AF_RQ_IP][0] ? s[AF_RQ_IP] : "-",
                 s[AF_RQ_NICKNAME][0] ? s[AF_RQ_NICKNAME] : "-", tm.tm_mday,
                 months[tm.tm_mon % 12], tm.tm_year + 1900, tm.tm_hour, tm.tm_min, tm.tm_sec);
    b = put_escaped(b, r->method);
    *b++ = ' ';
    b = put_escaped(b, s[AF_RQ_RESOURCE]);
    if (http_version[0]) {
        *b++ = ' ';
        b = put_escaped(b, http_version);
    }
    b += sprintf(b, "\" %d ", (int)r->h.status);
    if (r->h.response_size > 0)
        b += sprintf(b, "%" PRId64, r->h.response_size);
    else
        *b++ = '-';
    b = strcpy(b, " \"") + 2;
    b = s[AF_RQ_REFERRER][0] ? put_escaped(b, s[AF_RQ_REFERRER]) : strcpy(b, "-") + 1;
    b = strcpy(b, "\" \"") + 3;
    b = s[AF_RQ_USER_AGENT][0] ? put_escaped(b, s[AF_RQ_USER_AGENT]) : strcpy(b, "-") + 1;
    *b++ = '"';
    *b = '\0';
    return out;
}

/* An optional string field: set only when there is something to say. */
static char *opt_str(const char *v)
{
    return v && v[0] ? (char *)v : NULL;
}

static void fill_request_log(const struct log_state *st, const struct req_group *g,
                             const Af__Log__LogReadRequest *req, struct out_log *o)
{
    Af__Log__RequestLog *rl = &o->log;
    af__log__request_log__init(rl);
    af__log__log_offset__init(&o->offset);
    rl->app_id = st->app_id;
    rl->module_id = st->module;
    rl->version_id = st->version;
    rl->request_id.data = (uint8_t *)g->id;
    rl->request_id.len = strlen(g->id);
    snprintf(o->offset_text, sizeof(o->offset_text), "%" PRIu64, g->last_seq);
    o->offset.has_request_id = true;
    o->offset.request_id.data = (uint8_t *)o->offset_text;
    o->offset.request_id.len = strlen(o->offset_text);
    rl->offset = &o->offset;
    rl->ip = "";
    rl->method = "";
    rl->resource = "";
    rl->http_version = "";
    rl->url_map_entry = "";
    rl->combined = "";
    rl->status = 0;
    rl->response_size = 0;
    rl->mcycles = 0;
    rl->start_time = g->start_usec;
    rl->end_time = g->end_usec;
    rl->latency = g->end_usec - g->start_usec;
    rl->has_finished = true;
    rl->finished = g->rec != NULL;
    if (g->rec) {
        const struct req_record *r = g->rec;
        rl->module_id = (char *)r->module;
        rl->version_id = (char *)r->version;
        rl->ip = (char *)r->str[AF_RQ_IP];
        rl->nickname = opt_str(r->str[AF_RQ_NICKNAME]);
        rl->method = (char *)r->method;
        rl->resource = (char *)r->str[AF_RQ_RESOURCE];
        if (r->h.http_major)
            snprintf(o->http_version, sizeof(o->http_version), "HTTP/%u.%u", r->h.http_major,
                     r->h.http_minor);
        rl->http_version = o->http_version;
        rl->status = r->h.status;
        rl->response_size = r->h.response_size;
        rl->referrer = opt_str(r->str[AF_RQ_REFERRER]);
        rl->user_agent = opt_str(r->str[AF_RQ_USER_AGENT]);
        rl->host = opt_str(r->str[AF_RQ_HOST]);
        rl->url_map_entry = (char *)r->str[AF_RQ_URL_MAP];
        o->combined = combined_line(r, o->http_version);
        rl->combined = o->combined;
    }

    if (!req->has_include_app_logs || !req->include_app_logs)
        return;
    size_t n = g->n;
    if (req->has_app_logs_per_request && req->app_logs_per_request >= 0 &&
        (size_t)req->app_logs_per_request < n) {
        n = (size_t)req->app_logs_per_request;
        rl->has_lines_incomplete = true;
        rl->lines_incomplete = true;
    }
    if (n == 0)
        return;
    o->line_store = af_xcalloc(n, sizeof(*o->line_store));
    o->line_ptrs = af_xcalloc(n, sizeof(*o->line_ptrs));
    for (size_t i = 0; i < n; i++) {
        Af__Log__LogLine *ll = &o->line_store[i];
        af__log__log_line__init(ll);
        ll->time = g->lines[i]->time_usec;
        ll->level = g->lines[i]->level;
        ll->log_message = g->lines[i]->message;
        o->line_ptrs[i] = ll;
    }
    rl->n_line = n;
    rl->line = o->line_ptrs;
}

/* Joins the kept lines and records by request id into groups (each
 * group's lines sorted, its newest record), newest activity first. Returns
 * the groups (n in *n_out); *lines_out, *recs_out and *text_out are what
 * they point into. All are freed by the caller. */
static struct req_group *build_groups(struct log_state *st, struct log_line ***lines_out,
                                      struct req_record **recs_out, char **text_out,
                                      size_t *n_out)
{
    struct log_line **lines = af_xcalloc(st->count + 1, sizeof(*lines));
    for (size_t i = 0; i < st->count; i++)
        lines[i] = &st->ring[(st->head + i) % LOG_MAX_LINES];
    qsort(lines, st->count, sizeof(*lines), by_request_then_seq);
    struct req_record *rec_store;
    size_t n_recs = unpack_records(st, &rec_store, text_out);
    struct req_record **recs = af_xcalloc(n_recs + 1, sizeof(*recs));
    for (size_t i = 0; i < n_recs; i++)
        recs[i] = &rec_store[i];
    qsort(recs, n_recs, sizeof(*recs), rec_by_request_then_seq);

    struct req_group *groups = af_xcalloc(st->count + n_recs + 1, sizeof(*groups));
    size_t n_groups = 0, li = 0, ri = 0;
    while (li < st->count || ri < n_recs) {
        /* The smaller id of the two heads makes the next group. */
        const char *id;
        if (li == st->count)
            id = recs[ri]->id;
        else if (ri == n_recs)
            id = lines[li]->request_id;
        else
            id = strcmp(lines[li]->request_id, recs[ri]->id) <= 0
                     ? lines[li]->request_id
                     : recs[ri]->id;
        struct req_group *g = &groups[n_groups++];
        g->id = id;
        g->max_level = -1;
        g->lines = &lines[li];
        while (li < st->count && strcmp(lines[li]->request_id, id) == 0) {
            struct log_line *l = lines[li++];
            if (g->n == 0 || l->time_usec < g->start_usec)
                g->start_usec = l->time_usec;
            if (g->n == 0 || l->time_usec > g->end_usec)
                g->end_usec = l->time_usec;
            if (l->level > g->max_level)
                g->max_level = l->level;
            if (l->seq > g->last_seq)
                g->last_seq = l->seq;
            g->n++;
        }
        while (ri < n_recs && strcmp(recs[ri]->id, id) == 0)
            g->rec = recs[ri++]; /* the newest one wins */
        if (g->rec) {
            g->start_usec = g->rec->h.start_usec;
            g->end_usec = g->rec->h.end_usec;
            if (g->rec->seq > g->last_seq)
                g->last_seq = g->rec->seq;
        }
    }
    free(recs);
    qsort(groups, n_groups, sizeof(*groups), by_last_seq_desc);
    *lines_out = lines;
    *recs_out = rec_store;
    *n_out = n_groups;
    return groups;
}

static void read_logs(void *state, const struct af_call *call, struct af_result *res)
{
    struct log_state *st = state;
    Af__Log__LogReadRequest *req =
        af__log__log_read_request__unpack(NULL, call->request_len, call->request);
    if (!req) {
        af_result_app_error(res, LOGERR(INVALID_REQUEST),
                            "logservice: cannot decode LogReadRequest");
        return;
    }
    uint64_t after;
    if (parse_offset(req, &after) < 0) {
        af_result_app_error(res, LOGERR(INVALID_REQUEST),
                            "logservice: the offset was not made by this server");
        af__log__log_read_request__free_unpacked(req, NULL);
        return;
    }
    size_t count = LOG_READ_DEFAULT_COUNT;
    if (req->has_count && req->count > 0)
        count = req->count > LOG_READ_MAX_COUNT ? LOG_READ_MAX_COUNT : (size_t)req->count;

    struct log_line **lines = NULL;
    struct req_record *recs = NULL;
    char *text = NULL;
    size_t n_groups = 0;
    struct req_group *groups = build_groups(st, &lines, &recs, &text, &n_groups);

    struct out_log *outs = af_xcalloc(count, sizeof(*outs));
    Af__Log__RequestLog **ptrs = af_xcalloc(count, sizeof(*ptrs));
    size_t n_out = 0;
    bool more = false;
    for (size_t i = 0; i < n_groups; i++) {
        const struct req_group *g = &groups[i];
        if (g->last_seq >= after || !group_selected(st, g, req))
            continue;
        if (n_out == count) {
            more = true;
            break;
        }
        fill_request_log(st, g, req, &outs[n_out]);
        ptrs[n_out] = &outs[n_out].log;
        n_out++;
    }

    Af__Log__LogReadResponse out = AF__LOG__LOG_READ_RESPONSE__INIT;
    out.n_log = n_out;
    out.log = ptrs;
    /* The Go library stops paging when the offset is absent, so it is set
     * only when another page exists. */
    if (more)
        out.offset = outs[n_out - 1].log.offset;
    af_result_pack(res, &out.base);

    for (size_t i = 0; i < n_out; i++) {
        free(outs[i].line_store);
        free(outs[i].line_ptrs);
        free(outs[i].combined);
    }
    free(outs);
    free(ptrs);
    free(groups);
    free(lines);
    free(recs);
    free(text);
    af__log__log_read_request__free_unpacked(req, NULL);
}

static const struct af_method log_methods[] = {
    {.name = "Flush", .fn = flush},
    {.name = "Read", .fn = read_logs},
    {.name = NULL},
};

/* Only the front end calls these (af_api_post, proxy/reqlog.c). */
static const struct af_method log_internal[] = {
    {.name = "RequestLogs", .fn = request_logs},
    {.name = NULL},
};

const struct af_service af_service_logservice = {
    .name = "logservice",
    .methods = log_methods,
    .internal = log_internal,
    .create = log_create,
    .clear = log_clear,
    .destroy = log_destroy,
};
