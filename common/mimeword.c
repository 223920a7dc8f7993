/* mimeword — see mimeword.h. */
#include "common/mimeword.h"

#include <stdbool.h>
#include <string.h>

#include <openssl/evp.h>

#include "common/xalloc.h"

/* 45 bytes are 60 characters of base64: with "=?utf-8?b?" and "?=", a
 * 72-character word, under RFC 2047's 75. */
#define WORD_BYTES 45

char *af_mime_encoded_words(const char *s, size_t n)
{
    /* Per word: 3 (fold) + 10 + 60 + 2 + 1 (NUL) at most. */
    char *out = af_xmalloc((n / WORD_BYTES + 1) * 80 + 1);
    size_t o = 0, i = 0;
    do {
        size_t take = n - i < WORD_BYTES ? n - i : WORD_BYTES;
        /* Back to the start of a character, unless that leaves nothing. */
        while (take > 0 && i + take < n && ((unsigned char)s[i + take] & 0xc0) == 0x80)
            take--;
        if (take == 0)
            take = n - i < WORD_BYTES ? n - i : WORD_BYTES;
        if (i > 0) {
            memcpy(out + o, "\r\n ", 3);
            o += 3;
        }
        memcpy(out + o, "=?utf-8?b?", 10);
        o += 10;
        o += (size_t)EVP_EncodeBlock((unsigned char *)out + o, (const unsigned char *)s + i,
                                     (int)take);
        memcpy(out + o, "?=", 2);
        o += 2;
        i += take;
    } while (i < n);
    out[o] = '\0';
    return out;
}

static bool header_safe(const char *s)
{
    if (strlen(s) > 900 || strstr(s, "=?"))
        return false;
    for (const unsigned char *p = (const unsigned char *)s; *p; p++)
        if (*p >= 0x7f || (*p < 0x20 && *p != '\t'))
            return false;
    return true;
}

char *af_mime_header_text(const char *s)
{
    return header_safe(s) ? af_xstrdup(s) : af_mime_encoded_words(s, strlen(s));
}
