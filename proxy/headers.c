#include "proxy/headers.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <event2/buffer.h>

#include "common/xalloc.h"

void af_headers_init(struct af_headers *h)
{
    h->v = NULL;
    h->n = 0;
    h->cap = 0;
}

void af_headers_clear(struct af_headers *h)
{
    for (size_t i = 0; i < h->n; i++) {
        free(h->v[i].name);
        free(h->v[i].value);
    }
    h->n = 0;
}

void af_headers_release(struct af_headers *h)
{
    af_headers_clear(h);
    free(h->v);
    af_headers_init(h);
}

void af_headers_add(struct af_headers *h, const char *name, size_t name_len, const char *value,
                    size_t value_len)
{
    if (h->n == h->cap) {
        h->cap = h->cap ? h->cap * 2 : 16;
        h->v = af_xrealloc(h->v, h->cap * sizeof(*h->v));
    }
    struct af_header *f = &h->v[h->n++];
    f->name = af_xstrndup(name, name_len);
    f->name_len = strlen(f->name);
    f->value = af_xstrndup(value, value_len);
    f->value_len = strlen(f->value);
    f->drop = false;
}

struct af_header *af_headers_find(const struct af_headers *h, const char *name)
{
    for (size_t i = 0; i < h->n; i++)
        if (!h->v[i].drop && strcasecmp(h->v[i].name, name) == 0)
            return &h->v[i];
    return NULL;
}

size_t af_headers_count(const struct af_headers *h, const char *name)
{
    size_t c = 0;
    for (size_t i = 0; i < h->n; i++)
        if (!h->v[i].drop && strcasecmp(h->v[i].name, name) == 0)
            c++;
    return c;
}

void af_headers_drop(struct af_headers *h, const char *name)
{
    for (size_t i = 0; i < h->n; i++)
        if (strcasecmp(h->v[i].name, name) == 0)
            h->v[i].drop = true;
}

/* RFC 9110 §7.6.1 hop-by-hop fields, plus the non-standard Proxy-Connection
 * that old clients still send, plus Content-Length because both sides of the
 * proxy frame their bodies independently. */
static const char *const hop_by_hop[] = {
    "Connection", "Keep-Alive",          "Proxy-Connection",    "TE",
    "Trailer",    "Transfer-Encoding",   "Upgrade",             "Proxy-Authenticate",
    "Proxy-Authorization", "Content-Length",
};

/* Calls fn(token, len) for each comma-separated token of value, trimmed. */
static void each_token(const char *value, void (*fn)(const char *, size_t, void *), void *arg)
{
    const char *p = value;
    while (*p) {
        while (*p == ',' || *p == ' ' || *p == '\t')
            p++;
        const char *start = p;
        while (*p && *p != ',')
            p++;
        const char *end = p;
        while (end > start && (end[-1] == ' ' || end[-1] == '\t'))
            end--;
        if (end > start)
            fn(start, (size_t)(end - start), arg);
    }
}

static void drop_named(const char *tok, size_t len, void *arg)
{
    struct af_headers *h = arg;
    for (size_t i = 0; i < h->n; i++)
        if (h->v[i].name_len == len && strncasecmp(h->v[i].name, tok, len) == 0)
            h->v[i].drop = true;
}

void af_headers_drop_hop_by_hop(struct af_headers *h)
{
    /* Fields listed in Connection first, while Connection is still visible. */
    for (size_t i = 0; i < h->n; i++)
        if (strcasecmp(h->v[i].name, "Connection") == 0)
            each_token(h->v[i].value, drop_named, h);
    for (size_t k = 0; k < sizeof(hop_by_hop) / sizeof(hop_by_hop[0]); k++)
        af_headers_drop(h, hop_by_hop[k]);
}

void af_headers_drop_appengine(struct af_headers *h)
{
    static const char prefix[] = "X-AppEngine-";
    for (size_t i = 0; i < h->n; i++)
        if (strncasecmp(h->v[i].name, prefix, sizeof(prefix) - 1) == 0)
            h->v[i].drop = true;
}

void af_headers_write(const struct af_headers *h, struct evbuffer *out)
{
    for (size_t i = 0; i < h->n; i++) {
        const struct af_header *f = &h->v[i];
        if (f->drop)
            continue;
        evbuffer_add(out, f->name, f->name_len);
        evbuffer_add(out, ": ", 2);
        evbuffer_add(out, f->value, f->value_len);
        evbuffer_add(out, "\r\n", 2);
    }
}

struct token_search {
    const char *token;
    size_t len;
    bool found;
};

static void match_token(const char *tok, size_t len, void *arg)
{
    struct token_search *s = arg;
    if (len == s->len && strncasecmp(tok, s->token, len) == 0)
        s->found = true;
}

bool af_header_has_token(const char *value, const char *token)
{
    struct token_search s = {token, strlen(token), false};
    each_token(value, match_token, &s);
    return s.found;
}

bool af_header_value_is_safe(const char *value, size_t len)
{
    for (size_t i = 0; i < len; i++)
        if (value[i] == '\r' || value[i] == '\n' || value[i] == '\0')
            return false;
    return true;
}
