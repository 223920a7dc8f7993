/*
 * url — percent-decoding and -encoding, and query parameters, for the
 * router and the login pages (RFC 3986).
 *
 * Every function returns a string the caller owns (free()) or NULL.
 */
#ifndef AF_URL_H
#define AF_URL_H

#include <stdbool.h>
#include <stddef.h>

/*
 * Decodes the n bytes at s: "%XX" becomes the byte XX (RFC 3986 §2.1) and,
 * when plus_is_space (a form's query, HTML §4.10.21.8), '+' becomes a space.
 * Returns NULL for a malformed escape ('%' not followed by two hex digits)
 * or an escape that decodes to NUL, which no path or value may carry.
 */
char *af_url_decode(const char *s, size_t n, bool plus_is_space);

/* Encodes everything but the RFC 3986 §2.3 unreserved characters, so the
 * result is safe as one query parameter value. */
char *af_url_encode(const char *s);

/*
 * The decoded value of the first parameter called `name` in `query` (the
 * part after '?', "a=1&b=2"; ';' is not a separator), with '+' as a space.
 * NULL when absent or undecodable; "" for "name" or "name=".
 */
char *af_url_query_param(const char *query, const char *name);

#endif
