#include "proxy/headers.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <event2/buffer.h>

#include "common/xalloc.h"

struct af_headers_extra {
    struct af_headers_extra *next;
    char data[];
};

/* The first block is small (most heads of a local load are); a list whose
 * strings overflowed it gets a block that fits them at its next clear, so a
 * reused list settles at what its traffic needs, up to HEADERS_BLOCK_MAX. */
#define HEADERS_BLOCK 256
#define HEADERS_BLOCK_MAX 16384

void af_headers_init(struct af_headers *h)
{
    memset(h, 0, sizeof(*h));
}

void af_headers_clear(struct af_headers *h)
{
    struct af_headers_extra *e = h->extra, *next;
    for (; e; e = next) {
        next = e->next;
        free(e);
    }
    if (h->extra && h->block_size < HEADERS_BLOCK_MAX) {
        size_t want = h->block_size;
        while (want < h->block_used + h->overflow && want < HEADERS_BLOCK_MAX)
            want *= 2;
        free(h->block);
        h->block = af_xmalloc(want);
        h->block_size = want;
    }
    h->extra = NULL;
    h->overflow = 0;
    h->block_used = 0;
    h->n = 0;
    h->n_appfront = 0;
    h->blob_key = false;
}

void af_headers_release(struct af_headers *h)
{
    af_headers_clear(h);
    free(h->v);
    free(h->block);
    af_headers_init(h);
}

/* Room for n bytes of field strings. */
static char *strings_alloc(struct af_headers *h, size_t n)
{
    if (!h->block) {
        h->block_size = n > HEADERS_BLOCK ? n : HEADERS_BLOCK;
        h->block = af_xmalloc(h->block_size);
    }
    if (h->block_size - h->block_used >= n) {
        char *p = h->block + h->block_used;
        h->block_used += n;
        return p;
    }
    struct af_headers_extra *e = af_xmalloc(sizeof(*e) + n);
    e->next = h->extra;
    h->extra = e;
    h->overflow += n;
    return e->data;
}

/* Whether name (n bytes) is `lower` ignoring ASCII case; `lower` is all
 * lower case. */
static bool same_name(const char *name, const char *lower, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)name[i];
        if (c >= 'A' && c <= 'Z')
            c = (unsigned char)(c + ('a' - 'A'));
        if (c != (unsigned char)lower[i])
            return false;
    }
    return true;
}

#define IS(lit) same_name(name, lit, sizeof(lit) - 1)

/* The id of a field name: by its length first, so a name is compared with
 * at most two candidates (every field of every head goes through here). */
static enum af_header_id classify(struct af_headers *h, const char *name, size_t len)
{
    if (len >= 11 && (name[0] | 0x20) == 'x') {
        if (len >= 12 && IS("x-appengine-")) {
            /* The one response field the front end acts on (proxy/blob.h),
             * noted here so that no response pays for looking for it. */
            if (len == 19 && IS("x-appengine-blobkey"))
                h->blob_key = true;
            return AF_H_X_APPENGINE;
        }
        if (IS("x-appfront-"))
            return AF_H_X_APPFRONT;
    }
    switch (len) {
    case 2:
        return IS("te") ? AF_H_TE : AF_H_OTHER;
    case 4:
        return IS("host") ? AF_H_HOST : AF_H_OTHER;
    case 6:
        return IS("cookie") ? AF_H_COOKIE : IS("expect") ? AF_H_EXPECT : AF_H_OTHER;
    case 7:
        return IS("trailer") ? AF_H_TRAILER : IS("upgrade") ? AF_H_UPGRADE : AF_H_OTHER;
    case 10:
        return IS("connection")   ? AF_H_CONNECTION
               : IS("keep-alive") ? AF_H_KEEP_ALIVE
                                  : AF_H_OTHER;
    case 14:
        return IS("content-length") ? AF_H_CONTENT_LENGTH : AF_H_OTHER;
    case 15:
        return IS("x-forwarded-for") ? AF_H_X_FORWARDED_FOR : AF_H_OTHER;
    case 16:
        return IS("proxy-connection") ? AF_H_PROXY_CONNECTION : AF_H_OTHER;
    case 17:
        return IS("transfer-encoding")   ? AF_H_TRANSFER_ENCODING
               : IS("x-forwarded-proto") ? AF_H_X_FORWARDED_PROTO
                                         : AF_H_OTHER;
    case 18:
        return IS("proxy-authenticate") ? AF_H_PROXY_AUTHENTICATE : AF_H_OTHER;
    case 19:
        return IS("proxy-authorization") ? AF_H_PROXY_AUTHORIZATION : AF_H_OTHER;
    default:
        return AF_H_OTHER;
    }
}

#undef IS

void af_headers_add(struct af_headers *h, const char *name, size_t name_len, const char *value,
                    size_t value_len)
{
    if (h->n == h->cap) {
        h->cap = h->cap ? h->cap * 2 : 8;
        h->v = af_xrealloc(h->v, h->cap * sizeof(*h->v));
    }
    struct af_header *f = &h->v[h->n++];
    f->name = strings_alloc(h, name_len + value_len + 2);
    memcpy(f->name, name, name_len);
    f->name[name_len] = '\0';
    f->value = f->name + name_len + 1;
    memcpy(f->value, value, value_len);
    f->value[value_len] = '\0';
    f->name_len = name_len;
    f->value_len = value_len;
    f->id = (unsigned char)classify(h, f->name, f->name_len);
    f->drop = false;
    if (f->id == AF_H_X_APPFRONT)
        h->n_appfront++;
}

struct af_header *af_headers_find_id(const struct af_headers *h, enum af_header_id id)
{
    for (size_t i = 0; i < h->n; i++)
        if (!h->v[i].drop && h->v[i].id == id)
            return &h->v[i];
    return NULL;
}

size_t af_headers_count_id(const struct af_headers *h, enum af_header_id id)
{
    size_t c = 0;
    for (size_t i = 0; i < h->n; i++)
        if (!h->v[i].drop && h->v[i].id == id)
            c++;
    return c;
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
    /* The usual tokens (close, keep-alive) name no field: skip the scan. */
    if ((len == 5 && strncasecmp(tok, "close", 5) == 0) ||
        (len == 10 && strncasecmp(tok, "keep-alive", 10) == 0))
        return;
    /* Host is meant for every recipient (RFC 9110 §7.6.1 forbids naming
     * such a field); dropping it would leave the instance without one. */
    for (size_t i = 0; i < h->n; i++)
        if (h->v[i].name_len == len && h->v[i].id != AF_H_HOST &&
            strncasecmp(h->v[i].name, tok, len) == 0)
            h->v[i].drop = true;
}

/* RFC 9110 §7.6.1 hop-by-hop fields, plus the non-standard Proxy-Connection
 * that old clients still send, plus Content-Length because both sides of the
 * proxy frame their bodies independently. */
static bool is_hop_by_hop(enum af_header_id id)
{
    switch (id) {
    case AF_H_CONNECTION:
    case AF_H_KEEP_ALIVE:
    case AF_H_PROXY_CONNECTION:
    case AF_H_TE:
    case AF_H_TRAILER:
    case AF_H_TRANSFER_ENCODING:
    case AF_H_UPGRADE:
    case AF_H_PROXY_AUTHENTICATE:
    case AF_H_PROXY_AUTHORIZATION:
    case AF_H_CONTENT_LENGTH:
        return true;
    default:
        return false;
    }
}

void af_headers_drop_hop_by_hop(struct af_headers *h)
{
    /* Fields listed in Connection first, while Connection is still visible. */
    for (size_t i = 0; i < h->n; i++)
        if (h->v[i].id == AF_H_CONNECTION)
            each_token(h->v[i].value, drop_named, h);
    for (size_t i = 0; i < h->n; i++)
        if (is_hop_by_hop(h->v[i].id))
            h->v[i].drop = true;
}

void af_headers_drop_appengine(struct af_headers *h)
{
    for (size_t i = 0; i < h->n; i++)
        if (h->v[i].id == AF_H_X_APPENGINE)
            h->v[i].drop = true;
}

size_t af_headers_wire_size(const struct af_headers *h)
{
    size_t n = 0;
    for (size_t i = 0; i < h->n; i++)
        if (!h->v[i].drop)
            n += h->v[i].name_len + h->v[i].value_len + 4;
    return n;
}

char *af_headers_copy(const struct af_headers *h, char *p)
{
    for (size_t i = 0; i < h->n; i++) {
        const struct af_header *f = &h->v[i];
        if (f->drop)
            continue;
        memcpy(p, f->name, f->name_len);
        p += f->name_len;
        *p++ = ':';
        *p++ = ' ';
        memcpy(p, f->value, f->value_len);
        p += f->value_len;
        *p++ = '\r';
        *p++ = '\n';
    }
    return p;
}

void af_headers_write(const struct af_headers *h, struct evbuffer *out)
{
    size_t n = af_headers_wire_size(h);
    if (n == 0)
        return;
    struct evbuffer_iovec v;
    if (evbuffer_reserve_space(out, (ev_ssize_t)n, &v, 1) < 1)
        return;
    v.iov_len = (size_t)(af_headers_copy(h, v.iov_base) - (char *)v.iov_base);
    evbuffer_commit_space(out, &v, 1);
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
