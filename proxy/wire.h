/*
 * wire — writing HTTP heads without printf. Heads are built in place in
 * space reserved in an evbuffer (evbuffer_reserve_space): the size is
 * bounded first, then each piece is copied. On the hot path this replaces
 * evbuffer_add_printf, whose formatting machinery cost more than the rest
 * of a request's work (docs/benchmarks.md).
 */
#ifndef AF_WIRE_H
#define AF_WIRE_H

#include <stdint.h>
#include <string.h>

/* Copies n bytes to p; returns the end. */
static inline char *af_put(char *p, const char *s, size_t n)
{
    memcpy(p, s, n);
    return p + n;
}

/* A string literal, its length known at compile time. */
#define AF_PUT_LIT(p, lit) af_put((p), (lit), sizeof(lit) - 1)

static inline char *af_put_str(char *p, const char *s)
{
    return af_put(p, s, strlen(s));
}

/* Decimal digits of v (at most 20 bytes). */
static inline char *af_put_u64(char *p, uint64_t v)
{
    char tmp[20];
    int n = 0;
    do {
        tmp[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    while (n)
        *p++ = tmp[--n];
    return p;
}

/* Lower-case hex digits of v, no leading zeros (at most 16 bytes). */
static inline char *af_put_hex(char *p, uint64_t v)
{
    static const char digits[] = "0123456789abcdef";
    char tmp[16];
    int n = 0;
    do {
        tmp[n++] = digits[v & 15];
        v >>= 4;
    } while (v);
    while (n)
        *p++ = tmp[--n];
    return p;
}

/* Exactly 16 lower-case hex digits. */
static inline char *af_put_hex16(char *p, uint64_t v)
{
    static const char digits[] = "0123456789abcdef";
    for (int i = 15; i >= 0; i--) {
        p[i] = digits[v & 15];
        v >>= 4;
    }
    return p + 16;
}

#endif
