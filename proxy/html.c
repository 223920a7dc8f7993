/*
 * html — escaping and form values for the admin console (see html.h).
 */
#include "proxy/html.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>

#include "common/pct.h"
#include "common/xalloc.h"

void af_html_escape(struct evbuffer *b, const char *s, size_t n)
{
    size_t start = 0;
    for (size_t i = 0; i < n; i++) {
        const char *ref;
        switch (s[i]) {
        case '&':
            ref = "&amp;";
            break;
        case '<':
            ref = "&lt;";
            break;
        case '>':
            ref = "&gt;";
            break;
        case '"':
            ref = "&quot;";
            break;
        case '\'':
            ref = "&#39;";
            break;
        default:
            continue;
        }
        /* Runs of plain bytes go in one copy. */
        evbuffer_add(b, s + start, i - start);
        evbuffer_add(b, ref, strlen(ref));
        start = i + 1;
    }
    evbuffer_add(b, s + start, n - start);
}

void af_html_text(struct evbuffer *b, const char *s)
{
    if (s)
        af_html_escape(b, s, strlen(s));
}

static bool unreserved(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' ||
           c == '.' || c == '_' || c == '~';
}

void af_html_query(struct evbuffer *b, const char *s, size_t n)
{
    static const char hex[] = "0123456789ABCDEF";
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (unreserved(c)) {
            evbuffer_add(b, &s[i], 1);
        } else {
            char esc[3] = {'%', hex[c >> 4], hex[c & 15]};
            evbuffer_add(b, esc, 3);
        }
    }
}

/* Decodes the n bytes at p into a new string; -1 on a bad %-escape. */
static int form_decode(const char *p, size_t n, char **out, size_t *len)
{
    char *v = af_xmalloc(n + 1);
    ssize_t o = af_pct_decode(p, n, v, AF_PCT_PLUS_SPACE);
    if (o < 0) {
        free(v);
        return -1;
    }
    v[o] = '\0';
    *out = v;
    if (len)
        *len = (size_t)o;
    return 0;
}

int af_form_value(const char *qs, const char *name, char **out, size_t *len)
{
    *out = NULL;
    if (!qs)
        return 0;
    size_t name_len = strlen(name);
    const char *p = qs;
    while (*p) {
        const char *end = strchr(p, '&');
        if (!end)
            end = p + strlen(p);
        const char *eq = memchr(p, '=', (size_t)(end - p));
        const char *key_end = eq ? eq : end;
        /* Names are compared as sent: the console's own names need no
         * escapes. */
        if ((size_t)(key_end - p) == name_len && memcmp(p, name, name_len) == 0) {
            const char *v = eq ? eq + 1 : end;
            return form_decode(v, (size_t)(end - v), out, len) < 0 ? -1 : 1;
        }
        p = *end ? end + 1 : end;
    }
    return 0;
}
