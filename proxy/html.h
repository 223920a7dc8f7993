/*
 * html — the pieces the admin console (proxy/console.c) writes pages
 * with: escaping for HTML text and attributes, percent-encoding for query
 * values, and reading one value out of a query string or a form body.
 * Pure functions, unit-tested in tests/unit/test_html.c.
 */
#ifndef AF_HTML_H
#define AF_HTML_H

#include <stddef.h>

struct evbuffer;

/* Appends the n bytes of s to b with & < > " ' written as character
 * references, so the result is safe as element text and inside a quoted
 * attribute value (HTML 5, 13.1.2.6). Bytes are copied otherwise: the
 * caller passes text (see af_utf8_valid). */
void af_html_escape(struct evbuffer *b, const char *s, size_t n);
/* The same for a NUL-terminated string; NULL appends nothing. */
void af_html_text(struct evbuffer *b, const char *s);

/* Appends s (n bytes) percent-encoded for a query value: every byte but
 * RFC 3986's unreserved characters is %XX, so the result is also safe in
 * an attribute without escaping. */
void af_html_query(struct evbuffer *b, const char *s, size_t n);

/*
 * The value of the first parameter called name in an
 * application/x-www-form-urlencoded string qs (a URL's query or a POST
 * body; NULL is empty): '+' is a space, %XX a byte. Returns 1 with a
 * malloc'd value in *out (NUL-terminated; its length, which may count
 * NUL bytes, in *len unless len is NULL), 0 when there is no such
 * parameter, -1 when its value holds a malformed %-escape.
 */
int af_form_value(const char *qs, const char *name, char **out, size_t *len);

#endif
