/*
 * urlfetch_wire — URLFetchRequest and URLFetchResponse on the wire, by hand.
 *
 * Both messages carry their headers as a proto2 group (field 3, opened by a
 * start-group tag and closed by an end-group tag), which protoc-c cannot
 * compile (proto/urlfetch_service.proto has the layout). The codec is small:
 * varints, fixed64 for the deadline, length-delimited strings, and the one
 * group. Unknown fields are skipped, groups among them, with nesting bounded
 * so that a hostile message cannot recurse deeply.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "apiserver/services/pbwire.h"
#include "apiserver/services/urlfetch.h"
#include "common/xalloc.h"


/* Field numbers (proto/urlfetch_service.proto). */
enum {
    REQ_METHOD = 1,
    REQ_URL = 2,
    REQ_HEADER = 3,
    HDR_KEY = 4,
    HDR_VALUE = 5,
    REQ_PAYLOAD = 6,
    REQ_FOLLOW_REDIRECTS = 7,
    REQ_DEADLINE = 8,
    REQ_VALIDATE_CERT = 9,

    RESP_CONTENT = 1,
    RESP_STATUS = 2,
    RESP_HEADER = 3,
    RESP_TRUNCATED = 6,
    RESP_BYTES_SENT = 7,
    RESP_BYTES_RECEIVED = 8,
    RESP_FINAL_URL = 9,
};

#define MAX_SKIP_DEPTH 16

/* ---- reading ------------------------------------------------------------ */

static bool read_len(struct af_pb_reader *r, const uint8_t **data, size_t *len)
{
    uint64_t n;
    if (!af_pb_read_varint(r, &n) || n > (uint64_t)(r->end - r->p))
        return false;
    *data = r->p;
    *len = (size_t)n;
    r->p += n;
    return true;
}

/* Skips one field's value; for a group, up to its matching end tag. */
static bool skip_value(struct af_pb_reader *r, uint32_t field, unsigned wt, int depth)
{
    return af_pb_skip(r, field, wt, MAX_SKIP_DEPTH - depth);
}

static void set_err(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void set_err(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

/* A string field as an owned C string; refuses an embedded NUL, which no
 * URL or header may hold and which C strings cannot carry. */
static bool take_string(struct af_pb_reader *r, char **out)
{
    const uint8_t *d;
    size_t n;
    if (!read_len(r, &d, &n) || memchr(d, 0, n))
        return false;
    free(*out);
    *out = af_xstrndup((const char *)d, n);
    return true;
}

static bool read_header_group(struct af_pb_reader *r, struct uf_header *h, char *err, size_t errlen)
{
    for (;;) {
        uint32_t f;
        unsigned wt;
        if (!af_pb_read_tag(r, &f, &wt)) {
            set_err(err, errlen, "Header group is not closed");
            return false;
        }
        if (wt == AF_PB_EGROUP) {
            if (f != REQ_HEADER) {
                set_err(err, errlen, "Header group closed by the end tag of field %u", f);
                return false;
            }
            break;
        }
        if ((f == HDR_KEY || f == HDR_VALUE) && wt == AF_PB_LEN) {
            if (!take_string(r, f == HDR_KEY ? &h->key : &h->value)) {
                set_err(err, errlen, "Header.%s is truncated or holds a NUL byte",
                        f == HDR_KEY ? "Key" : "Value");
                return false;
            }
        } else if (!skip_value(r, f, wt, 1)) {
            set_err(err, errlen, "Header holds a malformed field %u", f);
            return false;
        }
    }
    if (!h->key || !h->value) {
        set_err(err, errlen, "a Header lacks its required %s", h->key ? "Value" : "Key");
        return false;
    }
    return true;
}

int uf_request_decode(const uint8_t *buf, size_t len, struct uf_request *out, char *err,
                      size_t errlen)
{
    memset(out, 0, sizeof(*out));
    out->follow_redirects = true;
    out->validate_certificate = true;
    struct af_pb_reader r = {buf, buf + len};
    bool has_method = false;
    size_t cap = 0;

    while (r.p < r.end) {
        uint32_t f;
        unsigned wt;
        uint64_t v;
        if (!af_pb_read_tag(&r, &f, &wt)) {
            set_err(err, errlen, "malformed field tag");
            goto fail;
        }
        switch (f) {
        case REQ_METHOD:
            if (wt != AF_PB_VARINT || !af_pb_read_varint(&r, &v))
                goto bad_field;
            out->method = (int)(int32_t)v;
            has_method = true;
            break;
        case REQ_URL:
            if (wt != AF_PB_LEN || !take_string(&r, &out->url))
                goto bad_field;
            break;
        case REQ_HEADER:
            if (wt != AF_PB_SGROUP)
                goto bad_field;
            if (out->n_headers == cap) {
                cap = cap ? cap * 2 : 8;
                out->headers = af_xrealloc(out->headers, cap * sizeof(*out->headers));
            }
            out->headers[out->n_headers] = (struct uf_header){0};
            out->n_headers++;
            if (!read_header_group(&r, &out->headers[out->n_headers - 1], err, errlen))
                goto fail;
            break;
        case REQ_PAYLOAD: {
            const uint8_t *d;
            size_t n;
            if (wt != AF_PB_LEN || !read_len(&r, &d, &n))
                goto bad_field;
            free(out->payload);
            out->payload = af_xmalloc(n ? n : 1);
            memcpy(out->payload, d, n);
            out->payload_len = n;
            break;
        }
        case REQ_FOLLOW_REDIRECTS:
        case REQ_VALIDATE_CERT:
            if (wt != AF_PB_VARINT || !af_pb_read_varint(&r, &v))
                goto bad_field;
            if (f == REQ_FOLLOW_REDIRECTS)
                out->follow_redirects = v != 0;
            else
                out->validate_certificate = v != 0;
            break;
        case REQ_DEADLINE: {
            if (wt != AF_PB_FIXED64 || r.end - r.p < 8)
                goto bad_field;
            uint64_t bits = 0;
            for (int i = 7; i >= 0; i--)
                bits = bits << 8 | r.p[i];
            r.p += 8;
            memcpy(&out->deadline_s, &bits, sizeof(bits));
            out->has_deadline = true;
            break;
        }
        default:
            if (!skip_value(&r, f, wt, 0)) {
                set_err(err, errlen, "malformed unknown field %u", f);
                goto fail;
            }
        }
        continue;
    bad_field:
        set_err(err, errlen, "field %u has the wrong wire type, is truncated or holds a NUL byte",
                f);
        goto fail;
    }
    if (!has_method || !out->url) {
        set_err(err, errlen, "the required field %s is missing", has_method ? "Url" : "Method");
        goto fail;
    }
    return 0;

fail:
    uf_request_release(out);
    return -1;
}

void uf_request_release(struct uf_request *r)
{
    for (size_t i = 0; i < r->n_headers; i++) {
        free(r->headers[i].key);
        free(r->headers[i].value);
    }
    free(r->headers);
    free(r->url);
    free(r->payload);
    memset(r, 0, sizeof(*r));
}

/* ---- writing ------------------------------------------------------------ */

static uint8_t *put_bytes(uint8_t *p, uint32_t field, const void *data, size_t len)
{
    p = af_pb_put_tag(p, field, AF_PB_LEN);
    p = af_pb_put_varint(p, len);
    if (len)
        memcpy(p, data, len);
    return p + len;
}

/* Bytes of a length-delimited field with a one-byte tag. */
static size_t len_field_size(size_t len)
{
    return 1 + af_pb_varint_size(len) + len;
}

/* Everything but the content. */
static size_t rest_size(const struct uf_response *r, bool truncated)
{
    size_t n = 1 + af_pb_varint_size((uint64_t)(int64_t)r->status);
    for (size_t i = 0; i < r->n_headers; i++)
        n += 2 + len_field_size(strlen(r->headers[i].key)) +
             len_field_size(strlen(r->headers[i].value));
    if (truncated)
        n += 2;
    n += 1 + af_pb_varint_size((uint64_t)r->bytes_sent);
    n += 1 + af_pb_varint_size((uint64_t)r->bytes_received);
    if (r->final_url)
        n += len_field_size(strlen(r->final_url));
    return n;
}

size_t uf_response_content_fit(const struct uf_response *r, size_t max)
{
    if (rest_size(r, r->truncated) + len_field_size(r->content_len) <= max)
        return r->content_len;
    size_t rest = rest_size(r, true) + 1 + af_pb_varint_size(max);
    size_t fit = rest < max ? max - rest : 0;
    return fit < r->content_len ? fit : r->content_len;
}

size_t uf_response_encode(const struct uf_response *r, size_t max, uint8_t **out)
{
    size_t content_len = uf_response_content_fit(r, max);
    bool truncated =
        r->truncated || rest_size(r, r->truncated) + len_field_size(r->content_len) > max;
    size_t total = rest_size(r, truncated) + len_field_size(content_len);
    uint8_t *buf = af_xmalloc(total);
    uint8_t *p = buf;

    p = put_bytes(p, RESP_CONTENT, r->content, content_len);
    p = af_pb_put_tag(p, RESP_STATUS, AF_PB_VARINT);
    p = af_pb_put_varint(p, (uint64_t)(int64_t)r->status);
    for (size_t i = 0; i < r->n_headers; i++) {
        p = af_pb_put_tag(p, RESP_HEADER, AF_PB_SGROUP);
        p = put_bytes(p, HDR_KEY, r->headers[i].key, strlen(r->headers[i].key));
        p = put_bytes(p, HDR_VALUE, r->headers[i].value, strlen(r->headers[i].value));
        p = af_pb_put_tag(p, RESP_HEADER, AF_PB_EGROUP);
    }
    if (truncated) {
        p = af_pb_put_tag(p, RESP_TRUNCATED, AF_PB_VARINT);
        *p++ = 1;
    }
    p = af_pb_put_tag(p, RESP_BYTES_SENT, AF_PB_VARINT);
    p = af_pb_put_varint(p, (uint64_t)r->bytes_sent);
    p = af_pb_put_tag(p, RESP_BYTES_RECEIVED, AF_PB_VARINT);
    p = af_pb_put_varint(p, (uint64_t)r->bytes_received);
    if (r->final_url)
        p = put_bytes(p, RESP_FINAL_URL, r->final_url, strlen(r->final_url));
    *out = buf;
    return (size_t)(p - buf);
}
