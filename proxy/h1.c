#include "proxy/h1.h"

#include <event2/buffer.h>
#include <http_parser.h>
#include <string.h>
#include <strings.h>

#include "proxy/headers.h"
#include "proxy/strict.h"
#include "proxy/wire.h"

/* The methods <http_parser.h> names, so the rest of the front end keeps
 * using enum http_method and http_method_str(). */
struct method {
    const char *name;
    unsigned char len;
    unsigned char id;
};

#define XX(num, name, string) {#string, sizeof(#string) - 1, num},
static const struct method methods[] = {HTTP_METHOD_MAP(XX)};
#undef XX

/* tchar of RFC 9110 §5.6.2 (a method is a token). */
static bool is_tchar(unsigned char c)
{
    static const char extra[] = "!#$%&'*+-.^_`|~";
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
           (c && strchr(extra, c));
}

static int find_method(const char *p, size_t n, unsigned *id, const char **why)
{
    /* The two of nearly every request first. */
    if (n == 3 && memcmp(p, "GET", 3) == 0) {
        *id = HTTP_GET;
        return 0;
    }
    if (n == 4 && memcmp(p, "POST", 4) == 0) {
        *id = HTTP_POST;
        return 0;
    }
    for (size_t i = 0; i < sizeof(methods) / sizeof(methods[0]); i++) {
        if (methods[i].len == n && memcmp(methods[i].name, p, n) == 0) {
            *id = methods[i].id;
            return 0;
        }
    }
    for (size_t i = 0; i < n; i++) {
        if (!is_tchar((unsigned char)p[i])) {
            *why = "the method is not a token";
            return 400;
        }
    }
    /* RFC 9110 §9.1: a method the server does not know is 501 (methods are
     * case-sensitive, so "get" is one of them). */
    *why = "the method is not one appfront knows";
    return 501;
}

/* "HTTP/" DIGIT "." DIGIT, exactly (RFC 9112 §2.3). */
static bool parse_version(const char *p, size_t n, unsigned short *major, unsigned short *minor)
{
    if (n != 8 || memcmp(p, "HTTP/", 5) != 0 || p[6] != '.' || p[5] < '0' || p[5] > '9' ||
        p[7] < '0' || p[7] > '9')
        return false;
    *major = (unsigned short)(p[5] - '0');
    *minor = (unsigned short)(p[7] - '0');
    return true;
}

/* Past any empty lines before the start line (RFC 9112 §2.2). */
static const char *skip_empty_lines(const char *p, const char *end)
{
    while (end - p >= 2 && p[0] == '\r' && p[1] == '\n')
        p += 2;
    return p;
}

/*
 * The field lines from q to the empty line. The scanner guaranteed their
 * shape (name of tchars, a colon, a value without CR, LF or NUL, CRLF), so
 * each line is two memchr calls. Returns 0, 1 past max fields, or -1 if the
 * bytes are not what the scanner passes (never, short of a caller's bug).
 */
static int split_fields(const char *q, const char *end, size_t max, struct af_headers *h)
{
    size_t count = 0;
    while (q < end && *q != '\r') {
        const char *le = memchr(q, '\r', (size_t)(end - q));
        const char *colon = le ? memchr(q, ':', (size_t)(le - q)) : NULL;
        if (!colon || colon == q || end - le < 2)
            return -1;
        if (++count > max)
            return 1;
        const char *v = colon + 1, *ve = le;
        while (v < ve && (*v == ' ' || *v == '\t'))
            v++;
        while (ve > v && (ve[-1] == ' ' || ve[-1] == '\t'))
            ve--;
        af_headers_add(h, q, (size_t)(colon - q), v, (size_t)(ve - v));
        q = le + 2;
    }
    return q < end ? 0 : -1;
}

int af_h1_parse_request(const char *p, size_t n, size_t max_fields, struct af_h1_request *rq,
                        struct af_headers *h, const char **why)
{
    const char *end = p + n;
    p = skip_empty_lines(p, end);
    const char *le = memchr(p, '\r', (size_t)(end - p));
    if (!le) {
        *why = "the request line does not end";
        return 400;
    }
    const char *sp1 = memchr(p, ' ', (size_t)(le - p));
    if (!sp1 || sp1 == p) {
        *why = "the request line does not start with a method and a space";
        return 400;
    }
    const char *t = sp1 + 1;
    const char *sp2 = memchr(t, ' ', (size_t)(le - t));
    if (!sp2 || sp2 == t) {
        *why = "the request line is not: method, target, version, one space apart";
        return 400;
    }
    if (!parse_version(sp2 + 1, (size_t)(le - sp2 - 1), &rq->major, &rq->minor)) {
        *why = "the HTTP version is not HTTP/<digit>.<digit>";
        return 400;
    }
    if (rq->major != 1) {
        /* RFC 9110 §15.6.6, whatever the method (say HTTP/2's preface). */
        *why = "only HTTP/1.1 and HTTP/1.0 are spoken here";
        return 505;
    }
    int st = find_method(p, (size_t)(sp1 - p), &rq->method, why);
    if (st)
        return st;
    rq->target = t;
    rq->target_len = (size_t)(sp2 - t);
    switch (split_fields(le + 2, end, max_fields, h)) {
    case 0:
        return 0;
    case 1:
        *why = "too many header fields";
        return 431;
    default:
        *why = "the head is malformed";
        return 400;
    }
}

int af_h1_parse_response(const char *p, size_t n, size_t max_fields, struct af_h1_response *rs,
                         struct af_headers *h, const char **why)
{
    const char *end = p + n;
    p = skip_empty_lines(p, end);
    const char *le = memchr(p, '\r', (size_t)(end - p));
    /* "HTTP/1.1 200 OK": the reason may be empty, and its space with it. */
    if (!le || le - p < 12 || !parse_version(p, 8, &rs->major, &rs->minor) || p[8] != ' ' ||
        (le - p > 12 && p[12] != ' ')) {
        *why = "the status line is not: HTTP/<digit>.<digit> <three digits> <reason>";
        return -1;
    }
    int status = 0;
    for (int i = 9; i < 12; i++) {
        if (p[i] < '0' || p[i] > '9') {
            *why = "the status code is not three digits";
            return -1;
        }
        status = status * 10 + (p[i] - '0');
    }
    if (status < 100) {
        *why = "the status code is below 100";
        return -1;
    }
    rs->status = status;
    switch (split_fields(le + 2, end, max_fields, h)) {
    case 0:
        return 0;
    case 1:
        *why = "too many header fields";
        return -1;
    default:
        *why = "the head is malformed";
        return -1;
    }
}

/* Content-Length = 1*DIGIT (RFC 9110 §8.6), at most 2^62: no sign, no
 * list, no hex. */
static bool parse_length(const char *v, size_t n, int64_t *out)
{
    if (n == 0 || n > 19)
        return false;
    uint64_t x = 0;
    for (size_t i = 0; i < n; i++) {
        if (v[i] < '0' || v[i] > '9')
            return false;
        x = x * 10 + (uint64_t)(v[i] - '0');
    }
    if (x > (UINT64_C(1) << 62))
        return false;
    *out = (int64_t)x;
    return true;
}

/* The codings of one Transfer-Encoding value, in order: counts them and
 * the chunked ones, and notes whether the last was chunked and whether any
 * other appeared. */
struct codings {
    int n, chunked;
    bool last_chunked;
    bool other;
};

static void read_codings(const char *q, struct codings *c)
{
    while (*q) {
        q += strspn(q, " \t,");
        size_t tl = strcspn(q, ",");
        size_t e = tl;
        while (e > 0 && (q[e - 1] == ' ' || q[e - 1] == '\t'))
            e--;
        if (e > 0) {
            c->n++;
            c->last_chunked = e == 7 && strncasecmp(q, "chunked", 7) == 0;
            if (c->last_chunked)
                c->chunked++;
            else
                c->other = true;
        }
        q += tl;
    }
}

int af_h1_framing(const struct af_headers *h, struct af_h1_framing *f, const char **why)
{
    memset(f, 0, sizeof(*f));
    f->length = -1;
    int lengths = 0;
    bool te = false;
    struct codings cod = {0};
    for (size_t i = 0; i < h->n; i++) {
        const struct af_header *x = &h->v[i];
        if (x->drop)
            continue;
        switch (x->id) {
        case AF_H_CONTENT_LENGTH:
            if (++lengths > 1) {
                *why = "more than one Content-Length";
                return 400;
            }
            if (!parse_length(x->value, x->value_len, &f->length)) {
                *why = "Content-Length is not a plain decimal number";
                return 400;
            }
            break;
        case AF_H_TRANSFER_ENCODING: {
            te = true;
            bool other_before = cod.other;
            read_codings(x->value, &cod);
            if (cod.other && !other_before)
                f->unsupported = x; /* the first field with another coding */
            break;
        }
        case AF_H_CONNECTION:
            if (af_header_has_token(x->value, "close"))
                f->close = true;
            if (af_header_has_token(x->value, "keep-alive"))
                f->keep_alive = true;
            break;
        default:
            break;
        }
    }
    if (!te)
        return 0;
    if (lengths) {
        /* RFC 9112 §6.3: a request with both is a smuggling attempt until
         * proven otherwise. */
        *why = "Content-Length together with Transfer-Encoding";
        return 400;
    }
    /* Only a lone "chunked", last: chunked anywhere else, or twice, leaves
     * the length unknown (400); another coding would reach the reader still
     * encoded (501). */
    if (cod.chunked > 1 || (cod.chunked == 1 && !cod.last_chunked) || cod.n == 0) {
        f->unsupported = NULL;
        *why = "Transfer-Encoding must end with 'chunked', once";
        return 400;
    }
    if (cod.other) {
        *why = "a transfer coding other than chunked";
        return 501;
    }
    f->chunked = true;
    return 0;
}

int af_h1_scan_head(struct af_strict *s, struct evbuffer *in, size_t *scanned, size_t max,
                    const char **why)
{
    size_t len = evbuffer_get_length(in);
    while (*scanned < len && s->mode != AF_STRICT_OFF) {
        struct evbuffer_iovec v;
        struct evbuffer_ptr at;
        if (evbuffer_ptr_set(in, &at, *scanned, EVBUFFER_PTR_SET) < 0 ||
            evbuffer_peek(in, -1, &at, &v, 1) < 1)
            break;
        size_t n = v.iov_len;
        if (n > max + 1 - *scanned)
            n = max + 1 - *scanned;
        ssize_t r = af_strict_scan(s, v.iov_base, n, why);
        if (r < 0)
            return -1;
        *scanned += (size_t)r;
        if (s->mode != AF_STRICT_OFF && *scanned > max)
            return -2;
    }
    return s->mode == AF_STRICT_OFF;
}

void af_h1_move_chunk(struct evbuffer *in, struct evbuffer *out, size_t n)
{
    char size[24];
    char *e = af_put_hex(size, n);
    e = AF_PUT_LIT(e, "\r\n");
    evbuffer_add(out, size, (size_t)(e - size));
    evbuffer_remove_buffer(in, out, n);
    evbuffer_add(out, "\r\n", 2);
}

int af_h1_skip_chunk_framing(struct af_strict *s, struct evbuffer *in, const char **why)
{
    struct evbuffer_iovec v;
    if (evbuffer_peek(in, -1, NULL, &v, 1) < 1)
        return 0;
    ssize_t r = af_strict_scan(s, v.iov_base, v.iov_len, why);
    if (r < 0)
        return -1;
    evbuffer_drain(in, (size_t)r);
    return s->mode == AF_STRICT_OFF;
}
