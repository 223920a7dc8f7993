/*
 * b64url — URL-safe base64 without padding (RFC 4648, section 5), the
 * form App Engine gives a datastore key in a URL ("urlsafe" keys). The
 * admin console carries keys in links and forms this way.
 */
#ifndef AF_B64URL_H
#define AF_B64URL_H

#include <stddef.h>
#include <stdint.h>

/* The encoding of n bytes of p: a NUL-terminated string the caller frees. */
char *af_b64url_encode(const uint8_t *p, size_t n);

/*
 * Decodes s (padding '=' at the end accepted, nothing else that is not of
 * the alphabet). Returns 0 with a malloc'd buffer in *out (the caller
 * frees it; never NULL on success) and its length in *n, or -1 when s is
 * not URL-safe base64 (a character outside the alphabet, or a length no
 * encoding has).
 */
int af_b64url_decode(const char *s, uint8_t **out, size_t *n);

#endif
