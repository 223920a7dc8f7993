/*
 * xalloc — the one out-of-memory policy of appfront.
 *
 * A development server that cannot allocate a few hundred bytes has nothing
 * sensible left to do, so every allocation goes through these wrappers and an
 * allocation failure aborts with a message. Sizes that come from outside (a
 * Content-Length, a frame length, a YAML scalar) must be bounded by the caller
 * *before* they reach these functions.
 *
 * Every returned pointer is owned by the caller and released with free().
 */
#ifndef AF_XALLOC_H
#define AF_XALLOC_H

#include <stddef.h>

void *af_xmalloc(size_t n);
void *af_xcalloc(size_t count, size_t size);
void *af_xrealloc(void *p, size_t n);
char *af_xstrdup(const char *s);
char *af_xstrndup(const char *s, size_t n);
/* printf into a fresh string. */
char *af_xasprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#endif
