/*
 * pct — percent-decoding (RFC 3986 section 2.1). One decoder serves the
 * front end's paths and query values, the admin console's form values and
 * urlfetch's proxy credentials; they differ only in what they forgive,
 * which the flags say.
 */
#ifndef AF_PCT_H
#define AF_PCT_H

#include <stddef.h>
#include <sys/types.h>

enum {
    AF_PCT_PLUS_SPACE = 1, /* '+' is a space (a form's values, HTML's urlencoded) */
    AF_PCT_KEEP_BAD = 2,   /* a '%' without two hex digits after it stays a '%' instead of failing */
    AF_PCT_NO_NUL = 4,     /* a NUL byte, raw or %00, fails: no path or query value carries one */
};

/* The value of the hex digit c (either case), or -1. */
int af_hex_digit(int c);

/*
 * Decodes the n bytes at s into out, which has room for n bytes (the result
 * is never longer). Returns the decoded length, or -1 for a malformed
 * escape (unless AF_PCT_KEEP_BAD) or a NUL with AF_PCT_NO_NUL. out is not
 * NUL-terminated.
 */
ssize_t af_pct_decode(const char *s, size_t n, char *out, unsigned flags);

#endif
