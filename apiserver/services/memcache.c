/*
 * memcache — the "memcache" service: an in-memory cache with App Engine's
 * semantics (docs/memcache.md).
 *
 * State is one hash table of entries keyed by (namespace, key) plus one
 * doubly linked LRU list through the same entries, so every operation on one
 * key is O(1): find in the table, unlink from the list, relink at the head.
 * The table doubles when it holds more entries than buckets, which keeps
 * chains short at an amortized O(1) cost. Memory is capped by
 * af_api_options.memcache_max_bytes, counted as key + value bytes of every
 * entry (what App Engine bills an item for); an insert evicts from the LRU
 * tail until it fits, as a real memcache does under pressure.
 *
 * Semantics follow the official development server's stub where it is
 * specified and the production service where the stub is silent:
 *  - expiration 0 is "never"; a value below 30 years is relative seconds,
 *    anything larger an absolute Unix time (the rule of the production
 *    server, which the Go library relies on: it sends e.g. 60 days as a
 *    relative 5184000);
 *  - Delete with a delete_time hides the item and "locks" the key until then:
 *    Get misses, ADD and REPLACE are refused, SET still works;
 *  - Increment keeps unsigned 64-bit decimal values, wraps on overflow and
 *    clamps a decrement at 0.
 *
 * Four messages of the protocol carry their items as proto2 groups, which
 * protoc-c cannot generate (see proto/memcache.proto). They are encoded and
 * decoded here from small field tables ("wf_" below); everything else uses
 * the generated protobuf-c code.
 *
 * Runs on the backend thread only (apiserver/service.h): no locks.
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include "admin.pb-c.h"
#include "memcache.pb-c.h"

#include "apiserver/service.h"
#include "apiserver/services/pbwire.h"
#include "common/log.h"
#include "common/xalloc.h"

/* App Engine's documented limits: keys up to 250 bytes (the client libraries
 * hash longer ones before sending), one item (key + value) up to 1 MiB. */
#define MC_MAX_KEY 250
#define MC_MAX_ITEM (1u << 20)
/* Namespaces are at most 100 characters in App Engine; bounding them keeps
 * the per-entry header small. */
#define MC_MAX_NAMESPACE 100
/* When the options give no cap. */
#define MC_DEFAULT_MAX_BYTES (64ll << 20)
/* A Get answer stops growing here (App Engine's 32 MB API response limit);
 * the keys left out are reported as misses, which a cache client must handle
 * anyway. */
#define MC_MAX_RESPONSE (32u << 20)
/* Expiration values below this many seconds (30 years) are relative. */
#define MC_RELATIVE_LIMIT (30ll * 365 * 24 * 60 * 60)
/* Entries by bucket before the first doubling. */
#define MC_INITIAL_BUCKETS 1024

/* The set policies of MemcacheSetRequest.Item.set_policy. The enum lives in
 * a group-bearing message, so protoc-c never sees it. */
enum mc_set_policy {
    MC_SET = 1,
    MC_ADD = 2,
    MC_REPLACE = 3,
    MC_CAS = 4,
};

/* Seconds since the Unix epoch. A hook so tests can move time. */
static int64_t mc_clock_real(void)
{
    return (int64_t)time(NULL);
}
static int64_t (*mc_now)(void) = mc_clock_real;

/* ------------------------------------------------------------------------ */
/* Wire codec for the group-bearing messages.                                */
/* ------------------------------------------------------------------------ */


/* Bytes borrowed from a request buffer or a cache entry. */
struct mc_bytes {
    const uint8_t *data;
    size_t len;
};

/* How a group field is stored in its C item struct. */
enum wf_kind {
    WF_BYTES,   /* struct mc_bytes */
    WF_FIXED32, /* uint32_t */
    WF_FIXED64, /* uint64_t */
    WF_INT32,   /* int32_t, varint (enums too: they are int32 on the wire) */
    WF_BOOL,    /* bool, varint */
};

static const enum af_pb_wire_type wf_wire_type[] = {
    [WF_BYTES] = AF_PB_LEN,    [WF_FIXED32] = AF_PB_FIXED32, [WF_FIXED64] = AF_PB_FIXED64,
    [WF_INT32] = AF_PB_VARINT, [WF_BOOL] = AF_PB_VARINT,
};

struct wf_field {
    uint32_t num;
    enum wf_kind kind;
    bool required;
    size_t off; /* offset in the item struct */
};

/* A repeated group. Every item struct starts with `uint32_t present`, a bit
 * per field number (all of them are below 32), because proto2 optional
 * fields are sent only when set and the Go library tells "absent" from
 * "zero" (a missing cas_id is not cas_id 0). */
struct wf_group {
    uint32_t num;
    const struct wf_field *fields; /* in field-number order: encoding order */
    size_t n_fields;
    size_t item_size;
};

/* A message made of one repeated group and, optionally, a name_space string
 * after it (the four group-bearing messages all have this shape; their
 * AppOverride field is read past and never written). */
struct wf_message {
    const struct wf_group *group;
    uint32_t ns_field; /* 0: none */
};

/* A decoded or to-be-encoded message. items is malloc'd by the decoder. */
struct wf_msg {
    void *items;
    size_t n_items;
    bool has_name_space;
    struct mc_bytes name_space;
};

#define WF_BIT(num) (1u << (num))

struct mc_get_item {
    uint32_t present;
    struct mc_bytes key;
    struct mc_bytes value;
    uint32_t flags;
    uint64_t cas_id;
    int32_t expires_in_seconds;
};

struct mc_set_item {
    uint32_t present;
    struct mc_bytes key;
    struct mc_bytes value;
    uint32_t flags;
    int32_t set_policy;
    uint32_t expiration_time;
    uint64_t cas_id;
    bool for_cas;
};

struct mc_delete_item {
    uint32_t present;
    struct mc_bytes key;
    uint32_t delete_time;
};

#define WF(type, num, kind, req, member)                                                           \
    {                                                                                              \
        num, kind, req, offsetof(type, member)                                                     \
    }

static const struct wf_field get_item_fields[] = {
    WF(struct mc_get_item, 2, WF_BYTES, true, key),
    WF(struct mc_get_item, 3, WF_BYTES, true, value),
    WF(struct mc_get_item, 4, WF_FIXED32, false, flags),
    WF(struct mc_get_item, 5, WF_FIXED64, false, cas_id),
    WF(struct mc_get_item, 6, WF_INT32, false, expires_in_seconds),
};
static const struct wf_field set_item_fields[] = {
    WF(struct mc_set_item, 2, WF_BYTES, true, key),
    WF(struct mc_set_item, 3, WF_BYTES, true, value),
    WF(struct mc_set_item, 4, WF_FIXED32, false, flags),
    WF(struct mc_set_item, 5, WF_INT32, false, set_policy),
    WF(struct mc_set_item, 6, WF_FIXED32, false, expiration_time),
    WF(struct mc_set_item, 8, WF_FIXED64, false, cas_id),
    WF(struct mc_set_item, 9, WF_BOOL, false, for_cas),
};
static const struct wf_field delete_item_fields[] = {
    WF(struct mc_delete_item, 2, WF_BYTES, true, key),
    WF(struct mc_delete_item, 3, WF_FIXED32, false, delete_time),
};

#define WF_GROUP(num, fields, type)                                                                \
    {                                                                                              \
        num, fields, sizeof(fields) / sizeof(fields[0]), sizeof(type)                              \
    }

static const struct wf_group get_item_group = WF_GROUP(1, get_item_fields, struct mc_get_item);
static const struct wf_group set_item_group = WF_GROUP(1, set_item_fields, struct mc_set_item);
static const struct wf_group delete_item_group =
    WF_GROUP(1, delete_item_fields, struct mc_delete_item);

/* MemcacheGetResponse, MemcacheSetRequest, MemcacheDeleteRequest. The
 * fourth group-bearing message, MemcacheGrabTailResponse, belongs to a
 * method not served here. */
static const struct wf_message wf_get_response = {&get_item_group, 0};
static const struct wf_message wf_set_request = {&set_item_group, 7};
static const struct wf_message wf_delete_request = {&delete_item_group, 4};

/* Nesting allowed inside an unknown group we skip. Nothing legitimate nests
 * at all; the bound keeps a hostile request from recursing deep. */
#define WF_MAX_DEPTH 16

static bool rd_fixed(struct af_pb_reader *r, unsigned n, uint64_t *out)
{
    if ((size_t)(r->end - r->p) < n)
        return false;
    uint64_t v = 0;
    for (unsigned i = 0; i < n; i++)
        v |= (uint64_t)r->p[i] << (8 * i);
    r->p += n;
    *out = v;
    return true;
}

static bool rd_len(struct af_pb_reader *r, struct mc_bytes *out)
{
    uint64_t n;
    if (!af_pb_read_varint(r, &n) || n > (uint64_t)(r->end - r->p))
        return false;
    out->data = r->p;
    out->len = (size_t)n;
    r->p += n;
    return true;
}

/* Reads past one field whose tag was already read. */
static bool rd_skip(struct af_pb_reader *r, uint32_t num, unsigned wt, int depth)
{
    return af_pb_skip(r, num, wt, WF_MAX_DEPTH - depth);
}

static const struct wf_field *wf_find(const struct wf_group *g, uint32_t num)
{
    for (size_t i = 0; i < g->n_fields; i++)
        if (g->fields[i].num == num)
            return &g->fields[i];
    return NULL;
}

/* Reads one group item after its start tag, through its end tag. */
static bool wf_decode_item(struct af_pb_reader *r, const struct wf_group *g, uint8_t *item)
{
    uint32_t *present = (uint32_t *)item;
    for (;;) {
        uint32_t num;
        unsigned wt;
        if (!af_pb_read_tag(r, &num, &wt))
            return false;
        if (wt == AF_PB_EGROUP) {
            if (num != g->num)
                return false;
            break;
        }
        const struct wf_field *f = wf_find(g, num);
        if (!f) {
            if (!rd_skip(r, num, wt, 1))
                return false;
            continue;
        }
        if (wt != wf_wire_type[f->kind])
            return false;
        void *dst = item + f->off;
        uint64_t v;
        switch (f->kind) {
        case WF_BYTES:
            if (!rd_len(r, dst))
                return false;
            break;
        case WF_FIXED32:
            if (!rd_fixed(r, 4, &v))
                return false;
            *(uint32_t *)dst = (uint32_t)v;
            break;
        case WF_FIXED64:
            if (!rd_fixed(r, 8, &v))
                return false;
            *(uint64_t *)dst = v;
            break;
        case WF_INT32:
            if (!af_pb_read_varint(r, &v))
                return false;
            /* int32 is sent sign-extended to 64 bits; the low half is it. */
            *(int32_t *)dst = (int32_t)(uint32_t)v;
            break;
        case WF_BOOL:
            if (!af_pb_read_varint(r, &v))
                return false;
            *(bool *)dst = v != 0;
            break;
        }
        *present |= WF_BIT(num);
    }
    for (size_t i = 0; i < g->n_fields; i++)
        if (g->fields[i].required && !(*present & WF_BIT(g->fields[i].num)))
            return false;
    return true;
}

/*
 * Decodes buf as message m into *out. The items point into buf (borrowed),
 * the items array is malloc'd (wf_msg_release). Returns false for anything
 * that is not a valid encoding, missing required fields included.
 */
static bool wf_decode(const struct wf_message *m, const uint8_t *buf, size_t len,
                      struct wf_msg *out)
{
    const struct wf_group *g = m->group;
    struct af_pb_reader r = {buf, buf + len};
    size_t cap = 0;
    memset(out, 0, sizeof(*out));
    while (r.p < r.end) {
        uint32_t num;
        unsigned wt;
        if (!af_pb_read_tag(&r, &num, &wt))
            goto fail;
        if (num == g->num && wt == AF_PB_SGROUP) {
            /* The count is bounded by len: an item takes at least its two
             * tags, so growth stops at len / 2 items. */
            if (out->n_items == cap) {
                cap = cap ? 2 * cap : 8;
                out->items = af_xrealloc(out->items, cap * g->item_size);
            }
            uint8_t *item = (uint8_t *)out->items + out->n_items * g->item_size;
            memset(item, 0, g->item_size);
            if (!wf_decode_item(&r, g, item))
                goto fail;
            out->n_items++;
        } else if (m->ns_field && num == m->ns_field && wt == AF_PB_LEN) {
            if (!rd_len(&r, &out->name_space))
                goto fail;
            out->has_name_space = true;
        } else if (!rd_skip(&r, num, wt, 0)) {
            goto fail;
        }
    }
    return true;
fail:
    free(out->items);
    memset(out, 0, sizeof(*out));
    return false;
}

static void wf_msg_release(struct wf_msg *msg)
{
    free(msg->items);
    msg->items = NULL;
    msg->n_items = 0;
}

static uint8_t *put_fixed(uint8_t *p, uint64_t v, unsigned n)
{
    for (unsigned i = 0; i < n; i++)
        *p++ = (uint8_t)(v >> (8 * i));
    return p;
}

static uint64_t tag_of(uint32_t num, enum af_pb_wire_type wt)
{
    return ((uint64_t)num << 3) | wt;
}

/* The encoded size of one present field, tag included. */
static size_t wf_field_size(const struct wf_field *f, const uint8_t *item)
{
    const void *src = item + f->off;
    size_t n = af_pb_varint_size(tag_of(f->num, wf_wire_type[f->kind]));
    switch (f->kind) {
    case WF_BYTES: {
        const struct mc_bytes *b = src;
        return n + af_pb_varint_size(b->len) + b->len;
    }
    case WF_FIXED32:
        return n + 4;
    case WF_FIXED64:
        return n + 8;
    case WF_INT32:
        return n + af_pb_varint_size((uint64_t)(int64_t) * (const int32_t *)src);
    case WF_BOOL:
        return n + 1;
    }
    return n;
}

static uint8_t *wf_field_put(uint8_t *p, const struct wf_field *f, const uint8_t *item)
{
    const void *src = item + f->off;
    p = af_pb_put_varint(p, tag_of(f->num, wf_wire_type[f->kind]));
    switch (f->kind) {
    case WF_BYTES: {
        const struct mc_bytes *b = src;
        p = af_pb_put_varint(p, b->len);
        if (b->len)
            memcpy(p, b->data, b->len);
        return p + b->len;
    }
    case WF_FIXED32:
        return put_fixed(p, *(const uint32_t *)src, 4);
    case WF_FIXED64:
        return put_fixed(p, *(const uint64_t *)src, 8);
    case WF_INT32:
        return af_pb_put_varint(p, (uint64_t)(int64_t) * (const int32_t *)src);
    case WF_BOOL:
        *p++ = *(const bool *)src ? 1 : 0;
        return p;
    }
    return p;
}

static size_t wf_item_size(const struct wf_group *g, const uint8_t *item)
{
    uint32_t present = *(const uint32_t *)item;
    size_t n = 2 * af_pb_varint_size(tag_of(g->num, AF_PB_SGROUP));
    for (size_t i = 0; i < g->n_fields; i++)
        if (present & WF_BIT(g->fields[i].num))
            n += wf_field_size(&g->fields[i], item);
    return n;
}

/*
 * Encodes msg as message m, fields in field-number order as the official
 * libraries write them. Returns a malloc'd buffer (caller owns) and its
 * length in *len.
 */
static uint8_t *wf_encode(const struct wf_message *m, const struct wf_msg *msg, size_t *len)
{
    const struct wf_group *g = m->group;
    size_t n = 0;
    for (size_t i = 0; i < msg->n_items; i++)
        n += wf_item_size(g, (const uint8_t *)msg->items + i * g->item_size);
    if (m->ns_field && msg->has_name_space)
        n += af_pb_varint_size(tag_of(m->ns_field, AF_PB_LEN)) +
             af_pb_varint_size(msg->name_space.len) + msg->name_space.len;

    uint8_t *buf = af_xmalloc(n);
    uint8_t *p = buf;
    for (size_t i = 0; i < msg->n_items; i++) {
        const uint8_t *item = (const uint8_t *)msg->items + i * g->item_size;
        uint32_t present = *(const uint32_t *)item;
        p = af_pb_put_varint(p, tag_of(g->num, AF_PB_SGROUP));
        for (size_t j = 0; j < g->n_fields; j++)
            if (present & WF_BIT(g->fields[j].num))
                p = wf_field_put(p, &g->fields[j], item);
        p = af_pb_put_varint(p, tag_of(g->num, AF_PB_EGROUP));
    }
    if (m->ns_field && msg->has_name_space) {
        p = af_pb_put_varint(p, tag_of(m->ns_field, AF_PB_LEN));
        p = af_pb_put_varint(p, msg->name_space.len);
        if (msg->name_space.len)
            memcpy(p, msg->name_space.data, msg->name_space.len);
        p += msg->name_space.len;
    }
    *len = (size_t)(p - buf);
    return buf;
}

/* ------------------------------------------------------------------------ */
/* The cache: hash table + LRU list.                                         */
/* ------------------------------------------------------------------------ */

struct mc_entry {
    struct mc_entry *chain;         /* next entry in the same bucket */
    struct mc_entry *newer, *older; /* LRU neighbours; the head is the newest */
    uint64_t hash;
    uint64_t cas_id;
    int64_t expires; /* absolute Unix seconds; 0: never */
    int64_t atime;   /* last time a client stored or read it */
    uint32_t flags;
    uint32_t value_len;
    uint8_t ns_len;  /* <= MC_MAX_NAMESPACE */
    uint8_t key_len; /* <= MC_MAX_KEY */
    /* Deleted with a delete_time: invisible, and ADD/REPLACE refused, until
     * `expires`. */
    bool locked;
    uint8_t data[]; /* namespace, key, value; one allocation per entry */
};

struct mc_cache {
    struct mc_entry **buckets;
    size_t n_buckets; /* a power of two */
    size_t n_items;
    struct mc_entry *head, *tail; /* LRU list */
    uint64_t bytes;               /* key + value bytes of every entry */
    uint64_t max_bytes;
    /* Never reset, not even by FlushAll or clear(): a cas_id handed out
     * before a flush must not match an entry created after it. */
    uint64_t next_cas;
    uint64_t hits, misses, byte_hits;
    uint64_t seed; /* per process, so colliding keys cannot be precomputed */
};

static const uint8_t *entry_key(const struct mc_entry *e)
{
    return e->data + e->ns_len;
}

static const uint8_t *entry_value(const struct mc_entry *e)
{
    return e->data + e->ns_len + e->key_len;
}

static uint64_t entry_bytes(const struct mc_entry *e)
{
    return (uint64_t)e->key_len + e->value_len;
}

static bool entry_expired(const struct mc_entry *e, int64_t now)
{
    return e->expires != 0 && now >= e->expires;
}

/* The finalizer of splitmix64: spreads FNV's weak low bits over the word. */
static uint64_t mix64(uint64_t x)
{
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ull;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebull;
    x ^= x >> 31;
    return x;
}

static uint64_t mc_hash(const struct mc_cache *c, struct mc_bytes ns, struct mc_bytes key)
{
    const uint64_t prime = 0x100000001b3ull;
    /* The namespace length goes in first so ("ab", "c") and ("a", "bc")
     * hash apart. */
    uint64_t h = c->seed ^ (0xcbf29ce484222325ull + ns.len);
    for (size_t i = 0; i < ns.len; i++)
        h = (h ^ ns.data[i]) * prime;
    for (size_t i = 0; i < key.len; i++)
        h = (h ^ key.data[i]) * prime;
    return mix64(h);
}

static bool entry_is(const struct mc_entry *e, uint64_t hash, struct mc_bytes ns,
                     struct mc_bytes key)
{
    return e->hash == hash && e->ns_len == ns.len && e->key_len == key.len &&
           (ns.len == 0 || memcmp(e->data, ns.data, ns.len) == 0) &&
           (key.len == 0 || memcmp(entry_key(e), key.data, key.len) == 0);
}

static void lru_unlink(struct mc_cache *c, struct mc_entry *e)
{
    if (e->newer)
        e->newer->older = e->older;
    else
        c->head = e->older;
    if (e->older)
        e->older->newer = e->newer;
    else
        c->tail = e->newer;
    e->newer = e->older = NULL;
}

static void lru_push_head(struct mc_cache *c, struct mc_entry *e)
{
    e->newer = NULL;
    e->older = c->head;
    if (c->head)
        c->head->newer = e;
    c->head = e;
    if (!c->tail)
        c->tail = e;
}

/* Marks e as just used. */
static void mc_touch(struct mc_cache *c, struct mc_entry *e, int64_t now)
{
    e->atime = now;
    if (c->head != e) {
        lru_unlink(c, e);
        lru_push_head(c, e);
    }
}

/* Unlinks e from its bucket and the LRU list and frees it. */
static void mc_remove(struct mc_cache *c, struct mc_entry *e)
{
    struct mc_entry **pp = &c->buckets[e->hash & (c->n_buckets - 1)];
    while (*pp != e)
        pp = &(*pp)->chain;
    *pp = e->chain;
    lru_unlink(c, e);
    c->bytes -= entry_bytes(e);
    c->n_items--;
    free(e);
}

/* The entry for (ns, key) as stored, locked or not; an expired one is
 * removed on the way, so no caller ever sees it. */
static struct mc_entry *mc_lookup(struct mc_cache *c, struct mc_bytes ns, struct mc_bytes key,
                                  int64_t now)
{
    uint64_t hash = mc_hash(c, ns, key);
    struct mc_entry *e = c->buckets[hash & (c->n_buckets - 1)];
    while (e && !entry_is(e, hash, ns, key))
        e = e->chain;
    if (e && entry_expired(e, now)) {
        mc_remove(c, e);
        return NULL;
    }
    return e;
}

static void mc_grow(struct mc_cache *c)
{
    size_t n = c->n_buckets * 2;
    struct mc_entry **b = af_xcalloc(n, sizeof(*b));
    for (size_t i = 0; i < c->n_buckets; i++) {
        struct mc_entry *e = c->buckets[i];
        while (e) {
            struct mc_entry *next = e->chain;
            size_t j = e->hash & (n - 1);
            e->chain = b[j];
            b[j] = e;
            e = next;
        }
    }
    free(c->buckets);
    c->buckets = b;
    c->n_buckets = n;
}

/*
 * Stores a new entry for (ns, key), which must not be in the table, evicting
 * from the LRU tail until it fits under the cap. Returns NULL, storing
 * nothing, when the item alone is bigger than the cap.
 */
static struct mc_entry *mc_insert(struct mc_cache *c, struct mc_bytes ns, struct mc_bytes key,
                                  struct mc_bytes value, uint32_t flags, int64_t expires,
                                  int64_t now)
{
    uint64_t size = (uint64_t)key.len + value.len;
    if (size > c->max_bytes)
        return NULL;
    while (c->tail && c->bytes + size > c->max_bytes)
        mc_remove(c, c->tail);
    if (c->n_items >= c->n_buckets)
        mc_grow(c);

    struct mc_entry *e = af_xmalloc(sizeof(*e) + ns.len + key.len + value.len);
    e->hash = mc_hash(c, ns, key);
    e->cas_id = c->next_cas++;
    e->expires = expires;
    e->atime = now;
    e->flags = flags;
    e->value_len = (uint32_t)value.len;
    e->ns_len = (uint8_t)ns.len;
    e->key_len = (uint8_t)key.len;
    e->locked = false;
    if (ns.len)
        memcpy(e->data, ns.data, ns.len);
    if (key.len)
        memcpy(e->data + ns.len, key.data, key.len);
    if (value.len)
        memcpy(e->data + ns.len + key.len, value.data, value.len);

    size_t b = e->hash & (c->n_buckets - 1);
    e->chain = c->buckets[b];
    c->buckets[b] = e;
    lru_push_head(c, e);
    c->bytes += size;
    c->n_items++;
    return e;
}

static void mc_flush(struct mc_cache *c)
{
    while (c->tail)
        mc_remove(c, c->tail);
}

/* An expiration_time or delete_time as an absolute time (0 stays "never"). */
static int64_t mc_deadline(uint32_t t, int64_t now)
{
    if (t == 0)
        return 0;
    if (t < MC_RELATIVE_LIMIT)
        return now + t;
    return t;
}

static struct mc_bytes bytes_of_str(const char *s)
{
    return (struct mc_bytes){(const uint8_t *)s, s ? strlen(s) : 0};
}

/* ------------------------------------------------------------------------ */
/* Methods.                                                                  */
/* ------------------------------------------------------------------------ */

/* A namespace must fit the entry header and must not hold NUL: the generated
 * decoders hand strings over NUL-terminated, so "a\0b" could never be read
 * back by Get. */
static bool namespace_ok(struct mc_bytes ns)
{
    return ns.len <= MC_MAX_NAMESPACE && (ns.len == 0 || !memchr(ns.data, 0, ns.len));
}

static void bad_namespace(struct af_result *res, struct mc_bytes ns)
{
    af_result_app_error(res, AF__MEMCACHE__MEMCACHE_SERVICE_ERROR__ERROR_CODE__INVALID_VALUE,
                        "memcache: namespace of %zu bytes is invalid (at most %d bytes, no NUL)",
                        ns.len, MC_MAX_NAMESPACE);
}

static void bad_key(struct af_result *res, size_t len)
{
    af_result_app_error(res, AF__MEMCACHE__MEMCACHE_SERVICE_ERROR__ERROR_CODE__INVALID_VALUE,
                        "memcache: key of %zu bytes is longer than the %d-byte limit", len,
                        MC_MAX_KEY);
}

static void parse_error(struct af_result *res, const char *method)
{
    af_result_rpc_error(res, AF_RPC_PARSE_ERROR, "memcache.%s: the request does not decode",
                        method);
}

static void mc_get(void *state, const struct af_call *call, struct af_result *res)
{
    struct mc_cache *c = state;
    Af__Memcache__MemcacheGetRequest *req =
        af__memcache__memcache_get_request__unpack(NULL, call->request_len, call->request);
    if (!req) {
        parse_error(res, "Get");
        return;
    }
    struct mc_bytes ns = bytes_of_str(req->name_space);
    if (!namespace_ok(ns)) {
        bad_namespace(res, ns);
        goto out;
    }
    for (size_t i = 0; i < req->n_key; i++) {
        if (req->key[i].len > MC_MAX_KEY) {
            bad_key(res, req->key[i].len);
            goto out;
        }
    }

    int64_t now = mc_now();
    struct mc_get_item *items = af_xcalloc(req->n_key, sizeof(*items));
    struct wf_msg msg = {.items = items};
    size_t total = 0;
    for (size_t i = 0; i < req->n_key; i++) {
        struct mc_bytes key = {req->key[i].data, req->key[i].len};
        struct mc_entry *e = mc_lookup(c, ns, key, now);
        /* Key, value, tags, lengths and fixed fields of one item. */
        size_t cost = e ? entry_bytes(e) + 32 : 0;
        if (!e || e->locked || total + cost > MC_MAX_RESPONSE) {
            c->misses++;
            continue;
        }
        total += cost;
        c->hits++;
        c->byte_hits += entry_bytes(e);
        mc_touch(c, e, now);

        /* Pointing into the entry is safe: nothing is freed until the
         * response is encoded (a later lookup only drops expired entries,
         * and an entry returned here was live at this same `now`). */
        struct mc_get_item *it = &items[msg.n_items++];
        it->present = WF_BIT(2) | WF_BIT(3) | WF_BIT(4);
        it->key = (struct mc_bytes){entry_key(e), e->key_len};
        it->value = (struct mc_bytes){entry_value(e), e->value_len};
        it->flags = e->flags;
        if (req->has_for_cas && req->for_cas) {
            it->present |= WF_BIT(5);
            it->cas_id = e->cas_id;
        }
    }
    size_t len;
    uint8_t *buf = wf_encode(&wf_get_response, &msg, &len);
    free(items);
    af_result_ok(res, buf, len);
out:
    af__memcache__memcache_get_request__free_unpacked(req, NULL);
}

/* Decides one Set item and applies it; returns its set_status. */
static Af__Memcache__MemcacheSetResponse__SetStatusCode
set_one(struct mc_cache *c, struct mc_bytes ns, const struct mc_set_item *it, int64_t now)
{
    uint64_t size = (uint64_t)it->key.len + it->value.len;
    if (it->key.len > MC_MAX_KEY || size > MC_MAX_ITEM || size > c->max_bytes) {
        af_warn("memcache: not storing an item with a %zu-byte key and a %zu-byte value: "
                "keys are limited to %d bytes, items to %u bytes (cache cap %llu)",
                it->key.len, it->value.len, MC_MAX_KEY, MC_MAX_ITEM,
                (unsigned long long)c->max_bytes);
        return AF__MEMCACHE__MEMCACHE_SET_RESPONSE__SET_STATUS_CODE__ERROR;
    }
    int32_t policy = (it->present & WF_BIT(5)) ? it->set_policy : MC_SET;
    struct mc_entry *old = mc_lookup(c, ns, it->key, now);
    bool live = old && !old->locked;

    switch (policy) {
    case MC_SET:
        break;
    case MC_ADD:
        /* A locked key counts as present: that is the point of the lock. */
        if (old)
            return AF__MEMCACHE__MEMCACHE_SET_RESPONSE__SET_STATUS_CODE__NOT_STORED;
        break;
    case MC_REPLACE:
        if (!live)
            return AF__MEMCACHE__MEMCACHE_SET_RESPONSE__SET_STATUS_CODE__NOT_STORED;
        break;
    case MC_CAS:
        /* Gone (evicted, deleted, expired) is NOT_STORED; replaced since the
         * Get is EXISTS, which the Go library reports as ErrCASConflict. */
        if (!(it->present & WF_BIT(8)) || !live)
            return AF__MEMCACHE__MEMCACHE_SET_RESPONSE__SET_STATUS_CODE__NOT_STORED;
        if (old->cas_id != it->cas_id)
            return AF__MEMCACHE__MEMCACHE_SET_RESPONSE__SET_STATUS_CODE__EXISTS;
        break;
    default:
        return AF__MEMCACHE__MEMCACHE_SET_RESPONSE__SET_STATUS_CODE__ERROR;
    }

    if (old)
        mc_remove(c, old);
    uint32_t flags = (it->present & WF_BIT(4)) ? it->flags : 0;
    uint32_t exp = (it->present & WF_BIT(6)) ? it->expiration_time : 0;
    int64_t expires = mc_deadline(exp, now);
    /* Already in the past (the Go library sends "now - 5" for sub-second
     * expirations): stored and expired at once, so only the removal of the
     * old value is visible. */
    if (expires != 0 && expires <= now)
        return AF__MEMCACHE__MEMCACHE_SET_RESPONSE__SET_STATUS_CODE__STORED;
    mc_insert(c, ns, it->key, it->value, flags, expires, now);
    return AF__MEMCACHE__MEMCACHE_SET_RESPONSE__SET_STATUS_CODE__STORED;
}

static void mc_set(void *state, const struct af_call *call, struct af_result *res)
{
    struct mc_cache *c = state;
    struct wf_msg msg;
    if (!wf_decode(&wf_set_request, call->request, call->request_len, &msg)) {
        parse_error(res, "Set");
        return;
    }
    if (!namespace_ok(msg.name_space)) {
        bad_namespace(res, msg.name_space);
        wf_msg_release(&msg);
        return;
    }
    int64_t now = mc_now();
    const struct mc_set_item *items = msg.items;
    Af__Memcache__MemcacheSetResponse__SetStatusCode *status =
        af_xcalloc(msg.n_items, sizeof(*status));
    for (size_t i = 0; i < msg.n_items; i++)
        status[i] = set_one(c, msg.name_space, &items[i], now);

    Af__Memcache__MemcacheSetResponse resp = AF__MEMCACHE__MEMCACHE_SET_RESPONSE__INIT;
    resp.n_set_status = msg.n_items;
    resp.set_status = status;
    af_result_pack(res, &resp.base);
    free(status);
    wf_msg_release(&msg);
}

static void mc_delete(void *state, const struct af_call *call, struct af_result *res)
{
    struct mc_cache *c = state;
    struct wf_msg msg;
    if (!wf_decode(&wf_delete_request, call->request, call->request_len, &msg)) {
        parse_error(res, "Delete");
        return;
    }
    const struct mc_delete_item *items = msg.items;
    Af__Memcache__MemcacheDeleteResponse__DeleteStatusCode *status = NULL;
    if (!namespace_ok(msg.name_space)) {
        bad_namespace(res, msg.name_space);
        goto out;
    }
    /* Checked before anything is deleted, so a refused call changes nothing. */
    for (size_t i = 0; i < msg.n_items; i++) {
        if (items[i].key.len > MC_MAX_KEY) {
            bad_key(res, items[i].key.len);
            goto out;
        }
    }

    int64_t now = mc_now();
    status = af_xcalloc(msg.n_items, sizeof(*status));
    for (size_t i = 0; i < msg.n_items; i++) {
        struct mc_entry *e = mc_lookup(c, msg.name_space, items[i].key, now);
        if (!e || e->locked) {
            status[i] = AF__MEMCACHE__MEMCACHE_DELETE_RESPONSE__DELETE_STATUS_CODE__NOT_FOUND;
            continue;
        }
        status[i] = AF__MEMCACHE__MEMCACHE_DELETE_RESPONSE__DELETE_STATUS_CODE__DELETED;
        uint32_t t = (items[i].present & WF_BIT(3)) ? items[i].delete_time : 0;
        int64_t until = mc_deadline(t, now);
        if (until == 0 || until <= now) {
            mc_remove(c, e);
        } else {
            /* Keep the entry, invisible, so ADD and REPLACE see the key as
             * taken until the lock expires and lookup removes it. */
            e->locked = true;
            e->expires = until;
        }
    }
    Af__Memcache__MemcacheDeleteResponse resp = AF__MEMCACHE__MEMCACHE_DELETE_RESPONSE__INIT;
    resp.n_delete_status = msg.n_items;
    resp.delete_status = status;
    af_result_pack(res, &resp.base);
out:
    free(status);
    wf_msg_release(&msg);
}

enum incr_outcome {
    INCR_OK,
    INCR_MISS,    /* no such key and no initial_value */
    INCR_NOT_NUM, /* the value is not an unsigned 64-bit decimal */
    INCR_TOO_BIG, /* the initial entry does not fit the cache cap */
    INCR_BAD_KEY, /* longer than MC_MAX_KEY */
};

/* Parses a value as memcache counts it: decimal digits, optionally with
 * surrounding ASCII spaces (as the stub's int() accepts), up to 2^64-1. */
static bool parse_u64(const uint8_t *p, size_t n, uint64_t *out)
{
    size_t i = 0;
    while (i < n && (p[i] == ' ' || p[i] == '\t' || p[i] == '\r' || p[i] == '\n'))
        i++;
    while (n > i && (p[n - 1] == ' ' || p[n - 1] == '\t' || p[n - 1] == '\r' || p[n - 1] == '\n'))
        n--;
    if (i == n)
        return false;
    uint64_t v = 0;
    for (; i < n; i++) {
        if (p[i] < '0' || p[i] > '9')
            return false;
        unsigned d = (unsigned)(p[i] - '0');
        if (v > (UINT64_MAX - d) / 10)
            return false;
        v = v * 10 + d;
    }
    *out = v;
    return true;
}

static enum incr_outcome incr_one(struct mc_cache *c, struct mc_bytes ns,
                                  const Af__Memcache__MemcacheIncrementRequest *req, int64_t now,
                                  uint64_t *new_value)
{
    struct mc_bytes key = {req->key.data, req->key.len};
    char digits[24];
    struct mc_entry *e = mc_lookup(c, ns, key, now);
    if (!e || e->locked) {
        if (!req->has_initial_value)
            return INCR_MISS;
        if (e)
            mc_remove(c, e);
        int n = snprintf(digits, sizeof(digits), "%llu", (unsigned long long)req->initial_value);
        uint32_t flags = req->has_initial_flags ? req->initial_flags : 0;
        e = mc_insert(c, ns, key, (struct mc_bytes){(const uint8_t *)digits, (size_t)n}, flags, 0,
                      now);
        if (!e)
            return INCR_TOO_BIG;
    }

    uint64_t old;
    if (!parse_u64(entry_value(e), e->value_len, &old))
        return INCR_NOT_NUM;
    uint64_t delta = req->has_delta ? req->delta : 1;
    uint64_t v;
    if (req->has_direction &&
        req->direction == AF__MEMCACHE__MEMCACHE_INCREMENT_REQUEST__DIRECTION__DECREMENT)
        v = old > delta ? old - delta : 0; /* memcache clamps at zero */
    else
        v = old + delta; /* unsigned: wraps modulo 2^64, as memcache does */

    int n = snprintf(digits, sizeof(digits), "%llu", (unsigned long long)v);
    if ((uint32_t)n == e->value_len) {
        memcpy(e->data + e->ns_len + e->key_len, digits, (size_t)n);
        e->cas_id = c->next_cas++; /* a changed value invalidates earlier Gets */
        mc_touch(c, e, now);
    } else {
        uint32_t flags = e->flags;
        int64_t expires = e->expires;
        mc_remove(c, e);
        if (!mc_insert(c, ns, key, (struct mc_bytes){(const uint8_t *)digits, (size_t)n}, flags,
                       expires, now))
            return INCR_TOO_BIG;
    }
    *new_value = v;
    return INCR_OK;
}

static void mc_increment(void *state, const struct af_call *call, struct af_result *res)
{
    struct mc_cache *c = state;
    Af__Memcache__MemcacheIncrementRequest *req =
        af__memcache__memcache_increment_request__unpack(NULL, call->request_len, call->request);
    if (!req) {
        parse_error(res, "Increment");
        return;
    }
    struct mc_bytes ns = bytes_of_str(req->name_space);
    if (!namespace_ok(ns)) {
        bad_namespace(res, ns);
        goto out;
    }
    if (req->key.len > MC_MAX_KEY) {
        bad_key(res, req->key.len);
        goto out;
    }
    Af__Memcache__MemcacheIncrementResponse resp = AF__MEMCACHE__MEMCACHE_INCREMENT_RESPONSE__INIT;
    uint64_t v = 0;
    switch (incr_one(c, ns, req, mc_now(), &v)) {
    case INCR_OK:
        resp.has_new_value = true;
        resp.new_value = v;
        resp.has_increment_status = true;
        resp.increment_status =
            AF__MEMCACHE__MEMCACHE_INCREMENT_RESPONSE__INCREMENT_STATUS_CODE__OK;
        break;
    case INCR_MISS:
        /* No new_value: the Go library's ErrCacheMiss. */
        resp.has_increment_status = true;
        resp.increment_status =
            AF__MEMCACHE__MEMCACHE_INCREMENT_RESPONSE__INCREMENT_STATUS_CODE__NOT_CHANGED;
        break;
    case INCR_NOT_NUM:
        af_result_app_error(res,
                            AF__MEMCACHE__MEMCACHE_SERVICE_ERROR__ERROR_CODE__UNSPECIFIED_ERROR,
                            "memcache.Increment: the value of the key is not an unsigned 64-bit "
                            "decimal integer");
        goto out;
    case INCR_TOO_BIG:
        af_result_app_error(res,
                            AF__MEMCACHE__MEMCACHE_SERVICE_ERROR__ERROR_CODE__UNSPECIFIED_ERROR,
                            "memcache.Increment: the item does not fit the cache cap of %llu bytes",
                            (unsigned long long)c->max_bytes);
        goto out;
    case INCR_BAD_KEY: /* checked above */
        break;
    }
    af_result_pack(res, &resp.base);
out:
    af__memcache__memcache_increment_request__free_unpacked(req, NULL);
}

static void mc_batch_increment(void *state, const struct af_call *call, struct af_result *res)
{
    struct mc_cache *c = state;
    Af__Memcache__MemcacheBatchIncrementRequest *req =
        af__memcache__memcache_batch_increment_request__unpack(NULL, call->request_len,
                                                               call->request);
    if (!req) {
        parse_error(res, "BatchIncrement");
        return;
    }
    /* The batch's name_space applies to every item, as in the stub; the
     * items' own name_space fields are ignored. */
    struct mc_bytes ns = bytes_of_str(req->name_space);
    if (!namespace_ok(ns)) {
        bad_namespace(res, ns);
        af__memcache__memcache_batch_increment_request__free_unpacked(req, NULL);
        return;
    }
    int64_t now = mc_now();
    Af__Memcache__MemcacheIncrementResponse *items = af_xcalloc(req->n_item, sizeof(*items));
    Af__Memcache__MemcacheIncrementResponse **ptrs = af_xcalloc(req->n_item, sizeof(*ptrs));
    for (size_t i = 0; i < req->n_item; i++) {
        Af__Memcache__MemcacheIncrementResponse *r = &items[i];
        af__memcache__memcache_increment_response__init(r);
        ptrs[i] = r;
        r->has_increment_status = true;
        uint64_t v = 0;
        enum incr_outcome o = req->item[i]->key.len > MC_MAX_KEY
                                  ? INCR_BAD_KEY
                                  : incr_one(c, ns, req->item[i], now, &v);
        switch (o) {
        case INCR_OK:
            r->has_new_value = true;
            r->new_value = v;
            r->increment_status =
                AF__MEMCACHE__MEMCACHE_INCREMENT_RESPONSE__INCREMENT_STATUS_CODE__OK;
            break;
        case INCR_MISS:
            r->increment_status =
                AF__MEMCACHE__MEMCACHE_INCREMENT_RESPONSE__INCREMENT_STATUS_CODE__NOT_CHANGED;
            break;
        case INCR_NOT_NUM:
        case INCR_TOO_BIG:
        case INCR_BAD_KEY:
            r->increment_status =
                AF__MEMCACHE__MEMCACHE_INCREMENT_RESPONSE__INCREMENT_STATUS_CODE__ERROR;
            break;
        }
    }
    Af__Memcache__MemcacheBatchIncrementResponse resp =
        AF__MEMCACHE__MEMCACHE_BATCH_INCREMENT_RESPONSE__INIT;
    resp.n_item = req->n_item;
    resp.item = ptrs;
    af_result_pack(res, &resp.base);
    free(ptrs);
    free(items);
    af__memcache__memcache_batch_increment_request__free_unpacked(req, NULL);
}

static void mc_flush_all(void *state, const struct af_call *call, struct af_result *res)
{
    Af__Memcache__MemcacheFlushRequest *req =
        af__memcache__memcache_flush_request__unpack(NULL, call->request_len, call->request);
    if (!req) {
        parse_error(res, "FlushAll");
        return;
    }
    af__memcache__memcache_flush_request__free_unpacked(req, NULL);
    /* Only the items go: hit and miss counters survive a flush, as in
     * memcached, so an app can watch its hit rate across flushes. */
    mc_flush(state);
    Af__Memcache__MemcacheFlushResponse resp = AF__MEMCACHE__MEMCACHE_FLUSH_RESPONSE__INIT;
    af_result_pack(res, &resp.base);
}

static void mc_stats(void *state, const struct af_call *call, struct af_result *res)
{
    struct mc_cache *c = state;
    Af__Memcache__MemcacheStatsRequest *req =
        af__memcache__memcache_stats_request__unpack(NULL, call->request_len, call->request);
    if (!req) {
        parse_error(res, "Stats");
        return;
    }
    af__memcache__memcache_stats_request__free_unpacked(req, NULL);

    Af__Memcache__MergedNamespaceStats st = AF__MEMCACHE__MERGED_NAMESPACE_STATS__INIT;
    st.hits = c->hits;
    st.misses = c->misses;
    st.byte_hits = c->byte_hits;
    st.items = c->n_items;
    st.bytes = c->bytes;
    /* "Age of access of the oldest item": the LRU tail is the item whose
     * last access is the oldest. */
    int64_t age = c->tail ? mc_now() - c->tail->atime : 0;
    st.oldest_item_age = age < 0 ? 0 : age > UINT32_MAX ? UINT32_MAX : (uint32_t)age;
    Af__Memcache__MemcacheStatsResponse resp = AF__MEMCACHE__MEMCACHE_STATS_RESPONSE__INIT;
    resp.stats = &st;
    af_result_pack(res, &resp.base);
}

/* The admin console's look at one item (docs/admin.md): no hit or miss
 * counted, no place moved in the LRU order, so looking changes nothing an
 * app can see. */
static void mc_admin_lookup(void *state, const struct af_call *call, struct af_result *res)
{
    struct mc_cache *c = state;
    Af__Admin__McLookupRequest *req =
        af__admin__mc_lookup_request__unpack(NULL, call->request_len, call->request);
    if (!req) {
        parse_error(res, "AdminLookup");
        return;
    }
    struct mc_bytes ns = bytes_of_str(req->namespace_);
    if (!namespace_ok(ns)) {
        bad_namespace(res, ns);
    } else if (req->key.len > MC_MAX_KEY) {
        bad_key(res, req->key.len);
    } else {
        struct mc_entry *e =
            mc_lookup(c, ns, (struct mc_bytes){req->key.data, req->key.len}, mc_now());
        Af__Admin__McLookupResponse resp = AF__ADMIN__MC_LOOKUP_RESPONSE__INIT;
        resp.has_found = true;
        if (e && !e->locked) {
            resp.found = true;
            resp.has_value = resp.has_flags = resp.has_expires = true;
            resp.value.data = (uint8_t *)entry_value(e);
            resp.value.len = e->value_len;
            resp.flags = e->flags;
            resp.expires = e->expires;
        }
        af_result_pack(res, &resp.base);
    }
    af__admin__mc_lookup_request__free_unpacked(req, NULL);
}

static void *mc_create(const struct af_api_options *opts)
{
    struct mc_cache *c = af_xcalloc(1, sizeof(*c));
    long long cap = opts ? opts->memcache_max_bytes : 0;
    c->max_bytes = cap > 0 ? (uint64_t)cap : (uint64_t)MC_DEFAULT_MAX_BYTES;
    c->n_buckets = MC_INITIAL_BUCKETS;
    c->buckets = af_xcalloc(c->n_buckets, sizeof(*c->buckets));
    c->next_cas = 1; /* 0 is "no cas_id" to the Go library */
    if (getrandom(&c->seed, sizeof(c->seed), GRND_NONBLOCK) != sizeof(c->seed))
        c->seed = (uint64_t)time(NULL) ^ (uint64_t)(uintptr_t)c;
    return c;
}

static void mc_clear(void *state)
{
    struct mc_cache *c = state;
    mc_flush(c);
    c->hits = c->misses = c->byte_hits = 0;
}

static void mc_destroy(void *state)
{
    struct mc_cache *c = state;
    if (!c)
        return;
    mc_flush(c);
    free(c->buckets);
    free(c);
}

/* MemcacheService methods. GrabTail (a task-queue internal of production)
 * and Peek are not served: they answer CALL_NOT_FOUND. */
static const struct af_method mc_methods[] = {
    {"Get", mc_get},
    {"Set", mc_set},
    {"Delete", mc_delete},
    {"Increment", mc_increment},
    {"BatchIncrement", mc_batch_increment},
    {"FlushAll", mc_flush_all},
    {"Stats", mc_stats},
    {NULL, NULL},
};

/* The admin console's way in (apiserver/service.h): Stats and FlushAll as
 * a client calls them, and a lookup that leaves no trace. */
static const struct af_method mc_internal[] = {
    {"AdminStats", mc_stats},
    {"AdminLookup", mc_admin_lookup},
    {"AdminFlush", mc_flush_all},
    {NULL, NULL},
};

const struct af_service af_service_memcache = {
    .name = "memcache",
    .methods = mc_methods,
    .create = mc_create,
    .clear = mc_clear,
    .destroy = mc_destroy,
    .internal = mc_internal,
};
