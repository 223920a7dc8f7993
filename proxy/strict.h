/*
 * strict — the grammar of RFC 9112, checked byte by byte as a message
 * arrives, before anything reads it (proxy/h1.h splits the heads it
 * passed).
 *
 * Lenient parsers (Debian's http-parser among them) accept whitespace
 * between a field name and its colon, bare CR or LF as line ends, chunk
 * data not followed by CRLF, and a few more shapes that other HTTP
 * implementations read differently. Each is a request-smuggling vector in
 * front of an app whose own parser disagrees, so the front end refuses them
 * (400) here.
 *
 * The scanner knows where a head (or a chunked body) ends and stops there
 * (mode AF_STRICT_OFF); the caller restarts it for the next message.
 */
#ifndef AF_STRICT_H
#define AF_STRICT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

enum af_strict_mode {
    AF_STRICT_OFF,     /* nothing to check: bytes pass */
    AF_STRICT_HEAD,    /* request line and header fields, up to the empty line */
    AF_STRICT_CHUNKED, /* chunk sizes, extensions, data CRLFs, trailers */
};

struct af_strict {
    enum af_strict_mode mode;
    int st;           /* state within the mode */
    uint64_t size;    /* the chunk size being read, then the data left */
    unsigned digits;  /* hex digits of the chunk size */
    bool decode;      /* chunked: stop where chunk data starts (af_strict_data_left) */
};

/* Starts checking a request head (leading empty lines are allowed, RFC 9112
 * §2.2). */
void af_strict_head(struct af_strict *s);
/* Starts checking a chunked body, from its first chunk-size line. */
void af_strict_chunked(struct af_strict *s);

/*
 * Starts decoding a chunked body: the same checks, but af_strict_scan()
 * stops (returning fewer bytes than given, mode still AF_STRICT_CHUNKED)
 * where a chunk's data starts. The caller then takes up to
 * af_strict_data_left() bytes of data itself and reports them with
 * af_strict_data_taken() before scanning on.
 */
void af_strict_chunked_decode(struct af_strict *s);
/* Data bytes of the current chunk still to take (0 outside chunk data). */
uint64_t af_strict_data_left(const struct af_strict *s);
/* The caller took n (at most af_strict_data_left()) data bytes. */
void af_strict_data_taken(struct af_strict *s, uint64_t n);

/*
 * Checks up to n bytes. Returns how many were checked (fewer than n only
 * when the head or body ended: the mode is then AF_STRICT_OFF), or -1 when
 * the bytes break the grammar, with *why set to a static sentence.
 */
ssize_t af_strict_scan(struct af_strict *s, const char *p, size_t n, const char **why);

/*
 * For a parser about to run over the len bytes at p, the front of its input
 * buffer: checks those not checked yet (*checked counts the checked bytes at
 * the front) and returns how many the parser may take — all of them once
 * the mode is off — or -1 with *why set.
 */
ssize_t af_strict_admit(struct af_strict *s, size_t *checked, const char *p, size_t len,
                        const char **why);

/* The parser took n bytes from the front of the buffer. */
static inline void af_strict_taken(size_t *checked, size_t n)
{
    *checked = *checked > n ? *checked - n : 0;
}

#endif
