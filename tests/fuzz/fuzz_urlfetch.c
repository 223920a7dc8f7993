/*
 * fuzz_urlfetch — the parsers of the urlfetch service under libFuzzer: the
 * hand-written URLFetchRequest decoder (apiserver/services/urlfetch_wire.c,
 * proto2 groups included), the checks of Fetch on the backend thread
 * (urlfetch.c), absolute URLs and redirect targets (urlfetch_url.c), the
 * response encoder fed with what was decoded, and the streaming gzip
 * decoder (urlfetch_gzip.c).
 *
 * Input: an encoded URLFetchRequest. Its Url is also used as a Location
 * against a fixed base, each header value as another, and its Payload as
 * gzip content.
 *
 * Invariants: no memory error, leak or undefined behaviour; a failed decode
 * says why (a non-empty, terminated message); a URL that parses prints
 * (uf_url_string) as a URL that parses again to the same string; a resolved
 * Location either is refused (NULL) or is a string without control bytes;
 * an encoded response never exceeds its limit; gzip content decodes to the
 * same status and bytes whether it comes whole or in pieces, never past its
 * limit, and a failure says why; Fetch either refuses with a detail or
 * defers, and the deferred fetch is cancelled without leaking.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "apiserver/services/urlfetch.c"
#include "apiserver/services/urlfetch_http.c"
#include "common/log.h"

static void die(const char *what, const char *detail)
{
    fprintf(stderr, "fuzz_urlfetch: invariant violated: %s [%s]\n", what, detail ? detail : "");
    abort();
}

static void *state;
static struct uf_url base;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    af_log_set_level(getenv("FUZZ_VERBOSE") ? AF_LOG_DEBUG : AF_LOG_CRITICAL);
    state = af_service_urlfetch.create(NULL);
    char err[256];
    if (uf_url_parse("http://base.example:8080/dir/page?q=1", &base, err, sizeof(err)) != 0)
        die("the base URL does not parse", err);
    return 0;
}

static void check_url(const char *s)
{
    struct uf_url u;
    char err[256] = "";
    if (uf_url_parse(s, &u, err, sizeof(err)) != 0) {
        if (!err[0] || strlen(err) >= sizeof(err))
            die("a refused URL without a message", s);
        return;
    }
    char *once = uf_url_string(&u);
    struct uf_url again;
    if (uf_url_parse(once, &again, err, sizeof(err)) != 0)
        die("a printed URL does not parse", once);
    char *twice = uf_url_string(&again);
    if (strcmp(once, twice) != 0)
        die("printing a URL is not stable", once);
    free(once);
    free(twice);
    uf_url_release(&again);
    uf_url_release(&u);
}

static void check_location(const char *loc)
{
    char *r = uf_url_resolve(&base, loc);
    if (!r)
        return;
    for (const unsigned char *p = (const unsigned char *)r; *p; p++)
        if (*p < 0x20 || *p == 0x7f)
            die("a resolved Location has a control byte", r);
    check_url(r);
    free(r);
}

struct gunzipped {
    enum uf_gunzip_status st;
    int end;
    uint8_t *buf;
    size_t len, cap;
};

/* data through a decoder in pieces of `piece` bytes, under max. */
static struct gunzipped gunzip(const uint8_t *data, size_t n, size_t piece, size_t max)
{
    struct gunzipped r = {.st = UF_GUNZIP_MORE};
    struct uf_gunzip *g = uf_gunzip_new();
    for (size_t off = 0; off < n && r.st == UF_GUNZIP_MORE; off += piece)
        r.st = uf_gunzip_feed(g, data + off, n - off < piece ? n - off : piece, &r.buf, &r.len,
                              &r.cap, max);
    r.end = r.st == UF_GUNZIP_MORE ? uf_gunzip_end(g) : -1;
    if (r.len > max || r.cap > max)
        die("the gzip decoder went past its limit", NULL);
    if ((r.st == UF_GUNZIP_BAD || (r.st == UF_GUNZIP_MORE && r.end != 0)) &&
        (!uf_gunzip_error(g) || !uf_gunzip_error(g)[0]))
        die("a gzip failure without a message", NULL);
    if (r.st == UF_GUNZIP_FULL && r.len != max)
        die("the gzip decoder is full before its limit", NULL);
    uf_gunzip_free(g);
    return r;
}

static void check_gunzip(const uint8_t *data, size_t n)
{
    if (n == 0)
        return;
    /* A small limit, so that cutting is exercised; the piece size from the
     * length, so that it varies without taking input bytes. */
    const size_t max = 1 << 16;
    struct gunzipped whole = gunzip(data, n, n, max);
    struct gunzipped parts = gunzip(data, n, 1 + n % 61, max);
    if (whole.st != parts.st || whole.end != parts.end)
        die("gzip content decodes differently in pieces", NULL);
    if (whole.st != UF_GUNZIP_BAD &&
        (whole.len != parts.len || (whole.len && memcmp(whole.buf, parts.buf, whole.len) != 0)))
        die("gzip content decodes to other bytes in pieces", NULL);
    free(whole.buf);
    free(parts.buf);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct uf_request req;
    char err[300] = "";
    if (uf_request_decode(data, size, &req, err, sizeof(err)) != 0) {
        if (!err[0])
            die("a refused request without a message", NULL);
    } else {
        check_url(req.url);
        check_location(req.url);
        for (size_t i = 0; i < req.n_headers; i++)
            check_location(req.headers[i].value);
        check_gunzip(req.payload, req.payload_len);

        /* The decoded headers and payload as a response, under a small
         * limit so that cutting is exercised. */
        struct uf_response r = {.status = req.method,
                                .headers = req.headers,
                                .n_headers = req.n_headers,
                                .content = req.payload,
                                .content_len = req.payload_len,
                                .final_url = req.url};
        uint8_t *buf;
        struct uf_response bare = r;
        bare.content_len = 0;
        bare.truncated = true;
        size_t rest = uf_response_encode(&bare, SIZE_MAX, &buf);
        free(buf);
        size_t max = rest + 6 + size / 2;
        size_t len = uf_response_encode(&r, max, &buf);
        if (len > max)
            die("an encoded response exceeds its limit", NULL);
        free(buf);
        uf_request_release(&req);
    }

    /* The whole Fetch check; a deferred fetch is cancelled unrun. */
    struct af_result res = {0};
    struct af_call call = {.service = "urlfetch",
                           .method = "Fetch",
                           .request = data,
                           .request_len = size,
                           .request_id = ""};
    urlfetch_methods[0].fn(state, &call, &res);
    if (res.kind == AF_RESULT_DEFER) {
        res.defer_ops->cancel(res.defer_arg);
    } else if (res.kind == AF_RESULT_OK) {
        die("Fetch answered without fetching", NULL);
    } else if (!res.detail || !res.detail[0]) {
        die("Fetch refused without a detail", NULL);
    }
    free(res.detail);
    free(res.response);
    return 0;
}
