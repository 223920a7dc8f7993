/*
 * h1 — reading HTTP/1.x heads: the start line, the fields and the framing
 * they give the message (RFC 9112 §§3-7).
 *
 * The strict scanner (proxy/strict.h) walks the bytes as they arrive,
 * checks them against the grammar and finds where the head ends. The head is
 * then split here in one pass over bytes already known good: lines end in
 * CRLF, every field line has a colon after a non-empty token, no control
 * characters. Bodies are the caller's: Content-Length bytes are moved as
 * they are, chunked bodies are decoded by the strict scanner
 * (af_strict_chunked_decode).
 *
 * The front end used http-parser for all of this once; walking every head
 * twice (the scanner, then the parser and its per-field callbacks) was a
 * quarter of the proxy's user-space work (docs/benchmarks.md).
 */
#ifndef AF_H1_H
#define AF_H1_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct af_headers;
struct af_header;
struct af_strict;
struct evbuffer;

/*
 * Checks more of the head at the front of `in` with the strict scanner s
 * (in head mode), from byte *scanned (what earlier calls checked) to the
 * end of the buffer, at most max bytes in all. Returns 1 once the head is
 * complete (*scanned is then its length), 0 while more bytes are needed,
 * -1 when the bytes break the grammar (*why set), -2 when the head is
 * longer than max bytes.
 */
int af_h1_scan_head(struct af_strict *s, struct evbuffer *in, size_t *scanned, size_t max,
                    const char **why);

/* Moves n bytes from the front of in to out as one chunk ("SIZE\r\n"
 * data "\r\n") of a chunked body. */
void af_h1_move_chunk(struct evbuffer *in, struct evbuffer *out, size_t n);

/*
 * Decoding a chunked body at the front of in with s (in decode mode, see
 * af_strict_chunked_decode): checks and drains the framing between chunk
 * data — sizes, extensions, CRLFs, trailers — in the first buffer chain.
 * Returns 1 at the end of the body, 0 when chunk data or more bytes come
 * next, -1 when the framing breaks the grammar (*why set).
 */
int af_h1_skip_chunk_framing(struct af_strict *s, struct evbuffer *in, const char **why);

struct af_h1_request {
    unsigned method;    /* enum http_method of <http_parser.h> */
    const char *target; /* in the head, not NUL-terminated */
    size_t target_len;
    unsigned short major, minor;
};

struct af_h1_response {
    int status;
    unsigned short major, minor;
};

/*
 * Splits a request head of n bytes at p (what the strict scanner passed,
 * from the first byte through the empty line; leading empty lines allowed)
 * and appends its fields to h. Returns 0, or the status to answer (400 for
 * a malformed request line, 505 for a major version other than 1, 501 for
 * an unknown method, 431 for more than max_fields fields) with *why set to
 * a static sentence.
 */
int af_h1_parse_request(const char *p, size_t n, size_t max_fields, struct af_h1_request *rq,
                        struct af_headers *h, const char **why);

/* The same for a response head: 0, or -1 with *why set. */
int af_h1_parse_response(const char *p, size_t n, size_t max_fields, struct af_h1_response *rs,
                         struct af_headers *h, const char **why);

/* How a message's body is delimited, and what Connection said. */
struct af_h1_framing {
    int64_t length; /* Content-Length, or -1 when absent */
    bool chunked;   /* Transfer-Encoding is exactly "chunked" */
    bool close;      /* Connection has "close" */
    bool keep_alive; /* Connection has "keep-alive" */
    /* The first Transfer-Encoding field with a coding other than chunked,
     * when that is why framing failed with 501. */
    const struct af_header *unsupported;
};

/*
 * Reads the framing fields of h (RFC 9112 §6). Returns 0, or 400 (a
 * Content-Length that is not one plain number, two of them, Content-Length
 * with Transfer-Encoding, chunked not last or twice) or 501 (a transfer
 * coding other than chunked), with *why set to a static sentence.
 */
int af_h1_framing(const struct af_headers *h, struct af_h1_framing *f, const char **why);

/* Whether the connection persists after this message (RFC 9112 §9.3):
 * HTTP/1.1 unless "close", HTTP/1.0 only with "keep-alive". */
static inline bool af_h1_persists(unsigned major, unsigned minor, const struct af_h1_framing *f)
{
    if (f->close || major != 1)
        return false;
    return minor >= 1 || f->keep_alive;
}

#endif
