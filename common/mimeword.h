/*
 * mimeword — unstructured mail header text (Subject, a display name, an
 * extra field's value) as RFC 5322 and RFC 2047 allow it: as it is when it
 * is plain ASCII, else as encoded words. Shared by the mail service's
 * messages and the admin console's inbound mail.
 */
#ifndef AF_MIMEWORD_H
#define AF_MIMEWORD_H

#include <stddef.h>

/* RFC 2047 encoded words ("=?utf-8?b?...?=") for the n bytes of UTF-8 at
 * s: each of whole characters and at most 45 bytes (a 72-character word),
 * folded onto lines of their own with CRLF SP. Owned by the caller. */
char *af_mime_encoded_words(const char *s, size_t n);

/* s itself (a copy) when it can stand in a header as it is (printable
 * ASCII and tab, at most 900 bytes, no "=?"), else its encoded words: never
 * a line break, whatever s holds. Owned by the caller. */
char *af_mime_header_text(const char *s);

#endif
