/*
 * url — see url.h.
 */
#include "proxy/url.h"

#include <stdlib.h>
#include <string.h>

#include "common/pct.h"
#include "common/xalloc.h"

char *af_url_decode(const char *s, size_t n, bool plus_is_space)
{
    char *out = af_xmalloc(n + 1);
    ssize_t len = af_pct_decode(s, n, out, AF_PCT_NO_NUL | (plus_is_space ? AF_PCT_PLUS_SPACE : 0));
    if (len < 0) {
        free(out);
        return NULL;
    }
    out[len] = '\0';
    return out;
}

char *af_url_encode(const char *s)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t n = strlen(s);
    char *out = af_xmalloc(3 * n + 1);
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)s[i];
        bool unreserved = (ch >= '0' && ch <= '9') || ((ch | 0x20) >= 'a' && (ch | 0x20) <= 'z') ||
                          ch == '-' || ch == '.' || ch == '_' || ch == '~';
        if (unreserved) {
            out[o++] = (char)ch;
        } else {
            out[o++] = '%';
            out[o++] = hex[ch >> 4];
            out[o++] = hex[ch & 15];
        }
    }
    out[o] = '\0';
    return out;
}

char *af_url_query_param(const char *query, const char *name)
{
    size_t name_len = strlen(name);
    const char *p = query;
    while (p && *p) {
        size_t len = strcspn(p, "&");
        const char *eq = memchr(p, '=', len);
        size_t key_len = eq ? (size_t)(eq - p) : len;
        if (key_len == name_len && memcmp(p, name, name_len) == 0) {
            if (!eq)
                return af_xstrdup("");
            return af_url_decode(eq + 1, len - key_len - 1, true);
        }
        p += len;
        if (*p == '&')
            p++;
    }
    return NULL;
}
