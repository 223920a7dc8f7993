/*
 * memcache — typed memcache helpers of the C client library (appfront.h).
 *
 * Get, Set and Delete exchange messages that carry their items as proto2
 * groups (see proto/memcache.proto), which protoc-c cannot generate. Those
 * are written and read here by hand with the few wire-format primitives
 * below; Increment and the simple responses use the generated code.
 *
 * Field numbers are those of App Engine's memcache_service.proto:
 *   MemcacheSetRequest    { group Item = 1 { key = 2; value = 3; flags = 4
 *                           (fixed32); set_policy = 5; expiration_time = 6
 *                           (fixed32) } name_space = 7 }
 *   MemcacheDeleteRequest { group Item = 1 { key = 2 } name_space = 4 }
 *   MemcacheGetResponse   { group Item = 1 { key = 2; value = 3; flags = 4
 *                           (fixed32); ... } }
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "apiserver/client/appfront.h"
#include "apiserver/client/client-internal.h"
#include "memcache.pb-c.h"

#define MC_DEADLINE_MS 5000
#define MC_SET_POLICY_SET 1
/* MemcacheServiceError.UNSPECIFIED_ERROR, for a store the service declined. */
#define MC_UNSPECIFIED_ERROR 1

enum wire_type {
    WT_VARINT = 0,
    WT_FIXED64 = 1,
    WT_BYTES = 2,
    WT_START_GROUP = 3,
    WT_END_GROUP = 4,
    WT_FIXED32 = 5,
};

/* ---- writing ------------------------------------------------------------- */

struct wbuf {
    uint8_t *p;
    size_t len, cap;
};

static void wb_put(struct wbuf *b, const void *data, size_t n)
{
    if (b->len + n > b->cap) {
        size_t cap = b->cap ? b->cap * 2 : 64;
        while (cap < b->len + n)
            cap *= 2;
        uint8_t *p = realloc(b->p, cap);
        if (!p)
            abort();
        b->p = p;
        b->cap = cap;
    }
    if (n)
        memcpy(b->p + b->len, data, n);
    b->len += n;
}

static void wb_varint(struct wbuf *b, uint64_t v)
{
    uint8_t tmp[10];
    size_t n = 0;
    do {
        tmp[n++] = (uint8_t)((v & 0x7f) | (v > 0x7f ? 0x80 : 0));
        v >>= 7;
    } while (v);
    wb_put(b, tmp, n);
}

static void wb_tag(struct wbuf *b, unsigned field, enum wire_type wt)
{
    wb_varint(b, (uint64_t)field << 3 | wt);
}

static void wb_bytes(struct wbuf *b, unsigned field, const void *data, size_t n)
{
    wb_tag(b, field, WT_BYTES);
    wb_varint(b, n);
    wb_put(b, data, n);
}

static void wb_fixed32(struct wbuf *b, unsigned field, uint32_t v)
{
    uint8_t le[4] = {(uint8_t)v, (uint8_t)(v >> 8), (uint8_t)(v >> 16), (uint8_t)(v >> 24)};
    wb_tag(b, field, WT_FIXED32);
    wb_put(b, le, 4);
}

/* ---- reading ------------------------------------------------------------- */

struct rbuf {
    const uint8_t *p, *end;
};

static bool rb_varint(struct rbuf *r, uint64_t *v)
{
    *v = 0;
    for (unsigned shift = 0; shift < 64 && r->p < r->end; shift += 7) {
        uint8_t byte = *r->p++;
        *v |= (uint64_t)(byte & 0x7f) << shift;
        if (!(byte & 0x80))
            return true;
    }
    return false;
}

static bool rb_bytes(struct rbuf *r, const uint8_t **data, size_t *n)
{
    uint64_t len;
    if (!rb_varint(r, &len) || len > (uint64_t)(r->end - r->p))
        return false;
    *data = r->p;
    *n = (size_t)len;
    r->p += len;
    return true;
}

static bool rb_fixed(struct rbuf *r, size_t n, uint64_t *v)
{
    if ((size_t)(r->end - r->p) < n)
        return false;
    *v = 0;
    for (size_t i = 0; i < n; i++)
        *v |= (uint64_t)r->p[i] << (8 * i);
    r->p += n;
    return true;
}

/* Skips one field of wire type wt whose tag was just read. Groups nest;
 * depth bounds the recursion a hostile message could cause. */
static bool rb_skip(struct rbuf *r, unsigned field, unsigned wt, int depth)
{
    uint64_t v;
    const uint8_t *d;
    size_t n;
    switch (wt) {
    case WT_VARINT:
        return rb_varint(r, &v);
    case WT_FIXED64:
        return rb_fixed(r, 8, &v);
    case WT_FIXED32:
        return rb_fixed(r, 4, &v);
    case WT_BYTES:
        return rb_bytes(r, &d, &n);
    case WT_START_GROUP:
        if (depth > 16)
            return false;
        for (;;) {
            uint64_t tag;
            if (!rb_varint(r, &tag))
                return false;
            if ((tag & 7) == WT_END_GROUP)
                return (tag >> 3) == field;
            if (!rb_skip(r, (unsigned)(tag >> 3), (unsigned)(tag & 7), depth + 1))
                return false;
        }
    default:
        return false;
    }
}

/* One item of a MemcacheGetResponse, pointing into the response. */
struct get_item {
    const uint8_t *key, *value;
    size_t key_len, value_len;
    uint32_t flags;
};

/* Reads the body of a group Item (after its start tag, through its end
 * tag). */
static bool read_get_item(struct rbuf *r, struct get_item *it)
{
    memset(it, 0, sizeof(*it));
    for (;;) {
        uint64_t tag, v;
        if (!rb_varint(r, &tag))
            return false;
        unsigned field = (unsigned)(tag >> 3), wt = (unsigned)(tag & 7);
        if (wt == WT_END_GROUP)
            return field == 1;
        if (field == 2 && wt == WT_BYTES) {
            if (!rb_bytes(r, &it->key, &it->key_len))
                return false;
        } else if (field == 3 && wt == WT_BYTES) {
            if (!rb_bytes(r, &it->value, &it->value_len))
                return false;
        } else if (field == 4 && wt == WT_FIXED32) {
            if (!rb_fixed(r, 4, &v))
                return false;
            it->flags = (uint32_t)v;
        } else if (!rb_skip(r, field, wt, 1)) {
            return false;
        }
    }
}

/* ---- the helpers --------------------------------------------------------- */

static int bad_reply(struct af_client_error *err, const char *method)
{
    af_client_set_error(err, AF_CLIENT_RPC_ERROR, AF_CLIENT_RPC_PARSE_ERROR,
                        "memcache.%s: the response cannot be decoded", method);
    return -1;
}

int af_memcache_get(const char *ns, const void *key, size_t key_len, uint8_t **value,
                    size_t *value_len, uint32_t *flags, struct af_client_error *err)
{
    *value = NULL;
    *value_len = 0;
    Af__Memcache__MemcacheGetRequest req = AF__MEMCACHE__MEMCACHE_GET_REQUEST__INIT;
    ProtobufCBinaryData k = {.len = key_len, .data = (uint8_t *)key};
    req.n_key = 1;
    req.key = &k;
    if (ns && *ns)
        req.name_space = (char *)ns;
    size_t len = af__memcache__memcache_get_request__get_packed_size(&req);
    uint8_t *buf = af_client_xmalloc(len);
    af__memcache__memcache_get_request__pack(&req, buf);

    uint8_t *resp;
    size_t resp_len;
    int rc = af_client_call("memcache", "Get", buf, len, &resp, &resp_len, err, MC_DEADLINE_MS);
    free(buf);
    if (rc < 0)
        return -1;

    struct rbuf r = {resp, resp + resp_len};
    int found = 0;
    while (r.p < r.end) {
        uint64_t tag;
        if (!rb_varint(&r, &tag))
            goto bad;
        unsigned field = (unsigned)(tag >> 3), wt = (unsigned)(tag & 7);
        if (field == 1 && wt == WT_START_GROUP) {
            struct get_item it;
            if (!read_get_item(&r, &it))
                goto bad;
            if (!found && it.key_len == key_len && memcmp(it.key, key, key_len) == 0) {
                *value = af_client_xmalloc(it.value_len);
                if (it.value_len)
                    memcpy(*value, it.value, it.value_len);
                *value_len = it.value_len;
                if (flags)
                    *flags = it.flags;
                found = 1;
            }
        } else if (!rb_skip(&r, field, wt, 0)) {
            goto bad;
        }
    }
    free(resp);
    return found;
bad:
    free(*value);
    *value = NULL;
    *value_len = 0;
    free(resp);
    return bad_reply(err, "Get");
}

int af_memcache_set(const char *ns, const void *key, size_t key_len, const void *value,
                    size_t value_len, uint32_t flags, uint32_t expiration_s,
                    struct af_client_error *err)
{
    struct wbuf b = {0};
    wb_tag(&b, 1, WT_START_GROUP);
    wb_bytes(&b, 2, key, key_len);
    wb_bytes(&b, 3, value, value_len);
    wb_fixed32(&b, 4, flags);
    wb_tag(&b, 5, WT_VARINT);
    wb_varint(&b, MC_SET_POLICY_SET);
    wb_fixed32(&b, 6, expiration_s);
    wb_tag(&b, 1, WT_END_GROUP);
    if (ns && *ns)
        wb_bytes(&b, 7, ns, strlen(ns));

    uint8_t *resp;
    size_t resp_len;
    int rc = af_client_call("memcache", "Set", b.p, b.len, &resp, &resp_len, err, MC_DEADLINE_MS);
    free(b.p);
    if (rc < 0)
        return -1;
    Af__Memcache__MemcacheSetResponse *r =
        af__memcache__memcache_set_response__unpack(NULL, resp_len, resp);
    free(resp);
    if (!r || r->n_set_status != 1) {
        if (r)
            af__memcache__memcache_set_response__free_unpacked(r, NULL);
        return bad_reply(err, "Set");
    }
    int status = r->set_status[0];
    af__memcache__memcache_set_response__free_unpacked(r, NULL);
    if (status != AF__MEMCACHE__MEMCACHE_SET_RESPONSE__SET_STATUS_CODE__STORED) {
        af_client_set_error(err, AF_CLIENT_APP_ERROR, MC_UNSPECIFIED_ERROR,
                            "memcache.Set: the item was not stored (status %d)", status);
        return -1;
    }
    return 0;
}

int af_memcache_delete(const char *ns, const void *key, size_t key_len, struct af_client_error *err)
{
    struct wbuf b = {0};
    wb_tag(&b, 1, WT_START_GROUP);
    wb_bytes(&b, 2, key, key_len);
    wb_tag(&b, 1, WT_END_GROUP);
    if (ns && *ns)
        wb_bytes(&b, 4, ns, strlen(ns));

    uint8_t *resp;
    size_t resp_len;
    int rc =
        af_client_call("memcache", "Delete", b.p, b.len, &resp, &resp_len, err, MC_DEADLINE_MS);
    free(b.p);
    if (rc < 0)
        return -1;
    Af__Memcache__MemcacheDeleteResponse *r =
        af__memcache__memcache_delete_response__unpack(NULL, resp_len, resp);
    free(resp);
    if (!r || r->n_delete_status != 1) {
        if (r)
            af__memcache__memcache_delete_response__free_unpacked(r, NULL);
        return bad_reply(err, "Delete");
    }
    int deleted =
        r->delete_status[0] == AF__MEMCACHE__MEMCACHE_DELETE_RESPONSE__DELETE_STATUS_CODE__DELETED;
    af__memcache__memcache_delete_response__free_unpacked(r, NULL);
    return deleted;
}

int af_memcache_increment(const char *ns, const void *key, size_t key_len, int64_t delta,
                          const uint64_t *initial_value, uint64_t *new_value,
                          struct af_client_error *err)
{
    Af__Memcache__MemcacheIncrementRequest req = AF__MEMCACHE__MEMCACHE_INCREMENT_REQUEST__INIT;
    req.key.data = (uint8_t *)key;
    req.key.len = key_len;
    if (ns && *ns)
        req.name_space = (char *)ns;
    req.has_delta = 1;
    req.has_direction = 1;
    if (delta < 0) {
        /* -(delta + 1) + 1 avoids overflowing on INT64_MIN. */
        req.delta = (uint64_t)(-(delta + 1)) + 1;
        req.direction = AF__MEMCACHE__MEMCACHE_INCREMENT_REQUEST__DIRECTION__DECREMENT;
    } else {
        req.delta = (uint64_t)delta;
        req.direction = AF__MEMCACHE__MEMCACHE_INCREMENT_REQUEST__DIRECTION__INCREMENT;
    }
    if (initial_value) {
        req.has_initial_value = 1;
        req.initial_value = *initial_value;
    }
    size_t len = af__memcache__memcache_increment_request__get_packed_size(&req);
    uint8_t *buf = af_client_xmalloc(len);
    af__memcache__memcache_increment_request__pack(&req, buf);

    uint8_t *resp;
    size_t resp_len;
    int rc =
        af_client_call("memcache", "Increment", buf, len, &resp, &resp_len, err, MC_DEADLINE_MS);
    free(buf);
    if (rc < 0)
        return -1;
    Af__Memcache__MemcacheIncrementResponse *r =
        af__memcache__memcache_increment_response__unpack(NULL, resp_len, resp);
    free(resp);
    if (!r)
        return bad_reply(err, "Increment");
    /* No new_value means the key was absent (the official libraries' cache
     * miss). */
    int hit = r->has_new_value ? 1 : 0;
    if (hit && new_value)
        *new_value = r->new_value;
    af__memcache__memcache_increment_response__free_unpacked(r, NULL);
    return hit;
}
