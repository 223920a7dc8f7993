/*
 * utf8 — the two questions the admin console asks of bytes it shows:
 * are they text, and where may a long text be cut.
 */
#ifndef AF_UTF8_H
#define AF_UTF8_H

#include <stdbool.h>
#include <stddef.h>

/* True when the n bytes of s are well-formed UTF-8 (RFC 3629: no
 * overlong forms, no surrogates, nothing past U+10FFFF). */
bool af_utf8_valid(const char *s, size_t n);

/* The length of the longest prefix of the n bytes of s that is at most
 * max bytes and does not end inside a character: where to cut. */
size_t af_utf8_prefix(const char *s, size_t n, size_t max);

#endif
