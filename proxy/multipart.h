/*
 * multipart — a streaming parser of multipart/form-data bodies (RFC 7578,
 * with the delimiter grammar of RFC 2046 §5.1.1), for blobstore uploads
 * (proxy/blob.c).
 *
 * Bytes are pushed in pieces of any size; the parser calls back at each
 * part's headers, with each run of its data, and at its end. It never
 * holds more than one part's header block (bounded) and the few bytes of
 * a delimiter it has not yet told apart from data, so a file part of any
 * size streams through in constant memory.
 */
#ifndef AF_MULTIPART_H
#define AF_MULTIPART_H

#include <stdbool.h>
#include <stddef.h>

/* The longest header block of one part. */
#define AF_MP_MAX_HEADERS 8192
/* RFC 2046 §5.1.1: a boundary is 1 to 70 characters. */
#define AF_MP_MAX_BOUNDARY 70

/* One part's headers, as the callbacks see them (borrowed for the call). */
struct af_mp_part {
    const char *disposition; /* Content-Disposition's value, or NULL */
    const char *name;        /* its name parameter, or NULL */
    const char *filename;    /* its filename parameter, or NULL when absent */
    const char *content_type; /* Content-Type's value, or NULL */
    const char *headers;     /* the whole header block, each line ending in CRLF */
    size_t headers_len;
};

/* What the parser calls. Each returns 0 to go on, or anything else to
 * stop: af_mp_feed() then returns that value. */
struct af_mp_ops {
    int (*part_begin)(void *arg, const struct af_mp_part *part);
    int (*part_data)(void *arg, const char *data, size_t len);
    int (*part_end)(void *arg);
};

enum af_mp_state {
    AF_MP_PREAMBLE, /* before the first delimiter */
    AF_MP_AFTER,    /* after a delimiter: "--", or padding then CRLF */
    AF_MP_HEADERS,  /* a part's header block */
    AF_MP_DATA,     /* a part's data */
    AF_MP_EPILOGUE, /* after the close delimiter: ignored */
    AF_MP_ERROR,
};

struct af_mp {
    enum af_mp_state state;
    char delim[AF_MP_MAX_BOUNDARY + 4]; /* CRLF "--" boundary */
    size_t delim_len;
    size_t match;     /* delimiter bytes matched and held back */
    unsigned after;   /* AF_MP_AFTER: bytes seen of "--" or CRLF */
    char after_c;     /* the first of them */
    char *hbuf;       /* the header block being read (AF_MP_MAX_HEADERS) */
    size_t hlen;
    unsigned parts;
    const char *why;  /* AF_MP_ERROR: what was wrong, a static sentence */
};

/* Whether b (n bytes) is a boundary RFC 2046 allows. */
bool af_mp_boundary_ok(const char *b, size_t n);

/*
 * Extracts the boundary parameter of a Content-Type value that must be
 * multipart/form-data. Returns the boundary's length and copies it
 * (NUL-terminated) to out (AF_MP_MAX_BOUNDARY + 1 bytes), or -1 with why
 * set when the type is not multipart/form-data or the boundary is
 * missing or invalid.
 */
int af_mp_boundary(const char *content_type, char *out, const char **why);

/* Starts parsing a body with this boundary (af_mp_boundary_ok). */
void af_mp_init(struct af_mp *m, const char *boundary, size_t len);
/* Frees what the parser holds; it may be re-initialised afterwards. */
void af_mp_release(struct af_mp *m);

/* Parses n more bytes. Returns 0, -1 when the body is malformed (m->why),
 * or what a callback returned to stop. */
int af_mp_feed(struct af_mp *m, const struct af_mp_ops *ops, void *arg, const char *p, size_t n);

/* True once the close delimiter was read: the body is complete. */
bool af_mp_done(const struct af_mp *m);

/*
 * Finds parameter `param` (lower case) in a header value such as
 * `form-data; name="f"; filename="a.txt"` and copies its value, unquoted,
 * into out (outlen bytes, NUL-terminated). Returns 1 when found, 0 when
 * absent, -1 when malformed or too long.
 */
int af_mp_param(const char *value, const char *param, char *out, size_t outlen);

#endif
