/*
 * datastore_key — key validation and the order-preserving encodings
 * described in datastore_key.h.
 */
#include <stdlib.h>
#include <string.h>

#include "apiserver/services/datastore_key.h"
#include "common/xalloc.h"

/* Element kinds after the kind string: ids sort before names. */
#define ELEM_ID 0x01
#define ELEM_NAME 0x02

/* ---- buffers ------------------------------------------------------------ */

void af_ds_buf_put(struct af_ds_buf *b, const void *data, size_t n)
{
    if (b->cap - b->len < n) {
        size_t cap = b->cap ? b->cap : 64;
        while (cap - b->len < n)
            cap *= 2;
        b->p = af_xrealloc(b->p, cap);
        b->cap = cap;
    }
    if (n)
        memcpy(b->p + b->len, data, n);
    b->len += n;
}

void af_ds_buf_byte(struct af_ds_buf *b, uint8_t c)
{
    af_ds_buf_put(b, &c, 1);
}

void af_ds_buf_release(struct af_ds_buf *b)
{
    free(b->p);
    b->p = NULL;
    b->len = b->cap = 0;
}

static void put_u64(struct af_ds_buf *b, uint64_t v)
{
    uint8_t be[8];
    for (int i = 0; i < 8; i++)
        be[i] = (uint8_t)(v >> (56 - 8 * i));
    af_ds_buf_put(b, be, 8);
}

/* Signed integers: flipping the sign bit makes two's complement sort as
 * unsigned big-endian bytes. */
static void put_i64(struct af_ds_buf *b, int64_t v)
{
    put_u64(b, (uint64_t)v ^ (UINT64_C(1) << 63));
}

/* IEEE 754 doubles: positive numbers get the sign bit set, negative ones are
 * inverted, so the bytes sort like the numbers. -0.0 is written as 0.0
 * (they compare equal). */
static void put_double(struct af_ds_buf *b, double d)
{
    if (d == 0)
        d = 0;
    uint64_t u;
    memcpy(&u, &d, 8);
    u = (u & (UINT64_C(1) << 63)) ? ~u : u | (UINT64_C(1) << 63);
    put_u64(b, u);
}

void af_ds_string_encode(struct af_ds_buf *b, const uint8_t *s, size_t n)
{
    size_t start = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] == 0) {
            af_ds_buf_put(b, s + start, i - start + 1);
            af_ds_buf_byte(b, 0xff);
            start = i + 1;
        }
    }
    af_ds_buf_put(b, s + start, n - start);
    static const uint8_t term[2] = {0x00, 0x01};
    af_ds_buf_put(b, term, 2);
}

static void put_cstr(struct af_ds_buf *b, const char *s)
{
    af_ds_string_encode(b, (const uint8_t *)(s ? s : ""), s ? strlen(s) : 0);
}

/* ---- readers ------------------------------------------------------------ */

struct rd {
    const uint8_t *p, *end;
};

static bool get_u64(struct rd *r, uint64_t *out)
{
    if (r->end - r->p < 8)
        return false;
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v = (v << 8) | r->p[i];
    r->p += 8;
    *out = v;
    return true;
}

static bool get_i64(struct rd *r, int64_t *out)
{
    uint64_t u;
    if (!get_u64(r, &u))
        return false;
    *out = (int64_t)(u ^ (UINT64_C(1) << 63));
    return true;
}

static bool get_double(struct rd *r, double *out)
{
    uint64_t u;
    if (!get_u64(r, &u))
        return false;
    u = (u & (UINT64_C(1) << 63)) ? u & ~(UINT64_C(1) << 63) : ~u;
    memcpy(out, &u, 8);
    return true;
}

/* Decodes an escaped string into a malloc'd, NUL-terminated buffer (the
 * NUL is not counted in *len). */
static bool get_string(struct rd *r, uint8_t **out, size_t *len)
{
    struct af_ds_buf b = {0};
    for (;;) {
        if (r->p == r->end)
            goto fail;
        uint8_t c = *r->p++;
        if (c != 0) {
            af_ds_buf_byte(&b, c);
            continue;
        }
        if (r->p == r->end)
            goto fail;
        uint8_t next = *r->p++;
        if (next == 0x01)
            break;
        if (next != 0xff)
            goto fail;
        af_ds_buf_byte(&b, 0);
    }
    *len = b.len;
    af_ds_buf_byte(&b, 0);
    *out = b.p;
    return true;
fail:
    af_ds_buf_release(&b);
    return false;
}

static bool get_cstr(struct rd *r, char **out)
{
    size_t n;
    return get_string(r, (uint8_t **)out, &n);
}

/* ---- keys --------------------------------------------------------------- */

static const char *elem_check(const ds_element_t *e, bool last, bool allow_incomplete)
{
    if (!e->type || !e->type[0])
        return "a key path element has an empty kind";
    if (strlen(e->type) > AF_DS_MAX_KEY_PART)
        return "a key kind is longer than 1500 bytes";
    if (e->has_id && e->name)
        return "a key path element has both an id and a name";
    if (e->has_id && e->id <= 0)
        return "a key id must be a positive integer (0 is not a valid id)";
    if (e->name && !e->name[0])
        return "a key name must not be empty";
    if (e->name && strlen(e->name) > AF_DS_MAX_KEY_PART)
        return "a key name is longer than 1500 bytes";
    if (!e->has_id && !e->name) {
        if (!last)
            return "a key's parent is incomplete (no id or name)";
        if (!allow_incomplete)
            return "the key is incomplete (no id or name)";
    }
    return NULL;
}

const char *af_ds_key_check(const ds_reference_t *key, bool allow_incomplete)
{
    if (!key->app || !key->app[0])
        return "a key has no app";
    if (!key->path || key->path->n_element == 0)
        return "a key has an empty path";
    if (key->path->n_element > AF_DS_MAX_PATH)
        return "a key path has more than 100 elements";
    size_t n = key->path->n_element;
    for (size_t i = 0; i < n; i++) {
        const char *why = elem_check(key->path->element[i], i + 1 == n, allow_incomplete);
        if (why)
            return why;
    }
    return NULL;
}

bool af_ds_key_incomplete(const ds_reference_t *key)
{
    const ds_element_t *e = key->path->element[key->path->n_element - 1];
    return !e->has_id && !e->name;
}

void af_ds_elem_encode(struct af_ds_buf *b, const struct af_ds_elem *e)
{
    put_cstr(b, e->type);
    if (e->name) {
        af_ds_buf_byte(b, ELEM_NAME);
        put_cstr(b, e->name);
    } else {
        af_ds_buf_byte(b, ELEM_ID);
        put_i64(b, e->has_id ? e->id : 0);
    }
}

void af_ds_path_encode(struct af_ds_buf *b, const ds_path_t *path, size_t n)
{
    for (size_t i = 0; i < n && i < path->n_element; i++) {
        const ds_element_t *pe = path->element[i];
        struct af_ds_elem e = {pe->type, pe->has_id, pe->id, pe->name};
        af_ds_elem_encode(b, &e);
    }
}

ds_path_t *af_ds_path_decode(const uint8_t *p, size_t n)
{
    struct rd r = {p, p + n};
    ds_path_t *path = af_xmalloc(sizeof(*path));
    af__datastore__path__init(path);
    size_t cap = 0;
    while (r.p < r.end) {
        if (path->n_element == AF_DS_MAX_PATH)
            goto fail;
        ds_element_t *e = af_xmalloc(sizeof(*e));
        af__datastore__path__element__init(e);
        if (path->n_element == cap) {
            cap = cap ? 2 * cap : 4;
            path->element = af_xrealloc(path->element, cap * sizeof(*path->element));
        }
        path->element[path->n_element++] = e;
        if (!get_cstr(&r, &e->type) || r.p == r.end)
            goto fail;
        uint8_t which = *r.p++;
        if (which == ELEM_ID) {
            if (!get_i64(&r, &e->id))
                goto fail;
            e->has_id = true;
        } else if (which != ELEM_NAME || !get_cstr(&r, &e->name)) {
            goto fail;
        }
    }
    return path;
fail:
    protobuf_c_message_free_unpacked(&path->base, NULL);
    return NULL;
}

bool af_ds_prefix_successor(struct af_ds_buf *b, const uint8_t *prefix, size_t n)
{
    while (n > 0 && prefix[n - 1] == 0xff)
        n--;
    if (n == 0)
        return false;
    af_ds_buf_put(b, prefix, n);
    b->p[b->len - 1]++;
    return true;
}

/* ---- values ------------------------------------------------------------- */

enum af_ds_tag af_ds_value_tag(const ds_value_t *v)
{
    if (v->has_int64_value)
        return AF_DS_TAG_INT;
    if (v->has_boolean_value)
        return AF_DS_TAG_BOOL;
    if (v->has_string_value)
        return AF_DS_TAG_STRING;
    if (v->has_double_value)
        return AF_DS_TAG_DOUBLE;
    if (v->pointvalue)
        return AF_DS_TAG_POINT;
    if (v->uservalue)
        return AF_DS_TAG_USER;
    if (v->referencevalue)
        return AF_DS_TAG_REF;
    return AF_DS_TAG_NULL;
}

/* Optional strings of a user value carry a presence byte so "absent" and
 * "empty" decode apart. */
static void put_opt_cstr(struct af_ds_buf *b, const char *s)
{
    af_ds_buf_byte(b, s ? 1 : 0);
    if (s)
        put_cstr(b, s);
}

void af_ds_value_encode(struct af_ds_buf *b, const ds_value_t *v)
{
    enum af_ds_tag tag = af_ds_value_tag(v);
    af_ds_buf_byte(b, (uint8_t)tag);
    switch (tag) {
    case AF_DS_TAG_NULL:
        break;
    case AF_DS_TAG_INT:
        put_i64(b, v->int64_value);
        break;
    case AF_DS_TAG_BOOL:
        af_ds_buf_byte(b, v->boolean_value ? 1 : 0);
        break;
    case AF_DS_TAG_STRING:
        af_ds_string_encode(b, v->string_value.data, v->string_value.len);
        break;
    case AF_DS_TAG_DOUBLE:
        put_double(b, v->double_value);
        break;
    case AF_DS_TAG_POINT:
        put_double(b, v->pointvalue->x);
        put_double(b, v->pointvalue->y);
        break;
    case AF_DS_TAG_USER: {
        const Af__Datastore__PropertyValue__UserValue *u = v->uservalue;
        put_cstr(b, u->email);
        put_cstr(b, u->auth_domain);
        put_opt_cstr(b, u->nickname);
        put_opt_cstr(b, u->federated_identity);
        put_opt_cstr(b, u->federated_provider);
        break;
    }
    case AF_DS_TAG_REF: {
        const Af__Datastore__PropertyValue__ReferenceValue *rv = v->referencevalue;
        put_cstr(b, rv->app);
        put_cstr(b, rv->name_space);
        for (size_t i = 0; i < rv->n_pathelement; i++) {
            const Af__Datastore__PropertyValue__ReferenceValue__PathElement *pe =
                rv->pathelement[i];
            struct af_ds_elem e = {pe->type, pe->has_id, pe->id, pe->name};
            af_ds_elem_encode(b, &e);
        }
        break;
    }
    }
}

static bool get_opt_cstr(struct rd *r, char **out)
{
    if (r->p == r->end)
        return false;
    uint8_t present = *r->p++;
    if (!present)
        return true;
    return present == 1 && get_cstr(r, out);
}

static bool decode_ref(struct rd *r, Af__Datastore__PropertyValue__ReferenceValue *rv)
{
    if (!get_cstr(r, &rv->app) || !get_cstr(r, &rv->name_space))
        return false;
    size_t cap = 0;
    while (r->p < r->end) {
        if (rv->n_pathelement == AF_DS_MAX_PATH)
            return false;
        Af__Datastore__PropertyValue__ReferenceValue__PathElement *e = af_xmalloc(sizeof(*e));
        af__datastore__property_value__reference_value__path_element__init(e);
        if (rv->n_pathelement == cap) {
            cap = cap ? 2 * cap : 4;
            rv->pathelement = af_xrealloc(rv->pathelement, cap * sizeof(*rv->pathelement));
        }
        rv->pathelement[rv->n_pathelement++] = e;
        if (!get_cstr(r, &e->type) || r->p == r->end)
            return false;
        uint8_t which = *r->p++;
        if (which == ELEM_ID) {
            if (!get_i64(r, &e->id))
                return false;
            e->has_id = true;
        } else if (which != ELEM_NAME || !get_cstr(r, &e->name)) {
            return false;
        }
    }
    return true;
}

ds_value_t *af_ds_value_decode(const uint8_t *p, size_t n)
{
    struct rd r = {p, p + n};
    ds_value_t *v = af_xmalloc(sizeof(*v));
    af__datastore__property_value__init(v);
    if (r.p == r.end)
        goto fail;
    switch (*r.p++) {
    case AF_DS_TAG_NULL:
        break;
    case AF_DS_TAG_INT:
        if (!get_i64(&r, &v->int64_value))
            goto fail;
        v->has_int64_value = true;
        break;
    case AF_DS_TAG_BOOL:
        if (r.p == r.end)
            goto fail;
        v->boolean_value = *r.p++ != 0;
        v->has_boolean_value = true;
        break;
    case AF_DS_TAG_STRING:
        if (!get_string(&r, &v->string_value.data, &v->string_value.len))
            goto fail;
        v->has_string_value = true;
        break;
    case AF_DS_TAG_DOUBLE:
        if (!get_double(&r, &v->double_value))
            goto fail;
        v->has_double_value = true;
        break;
    case AF_DS_TAG_POINT:
        v->pointvalue = af_xmalloc(sizeof(*v->pointvalue));
        af__datastore__property_value__point_value__init(v->pointvalue);
        if (!get_double(&r, &v->pointvalue->x) || !get_double(&r, &v->pointvalue->y))
            goto fail;
        break;
    case AF_DS_TAG_USER: {
        Af__Datastore__PropertyValue__UserValue *u = af_xmalloc(sizeof(*u));
        af__datastore__property_value__user_value__init(u);
        v->uservalue = u;
        if (!get_cstr(&r, &u->email) || !get_cstr(&r, &u->auth_domain) ||
            !get_opt_cstr(&r, &u->nickname) || !get_opt_cstr(&r, &u->federated_identity) ||
            !get_opt_cstr(&r, &u->federated_provider))
            goto fail;
        break;
    }
    case AF_DS_TAG_REF:
        v->referencevalue = af_xmalloc(sizeof(*v->referencevalue));
        af__datastore__property_value__reference_value__init(v->referencevalue);
        if (!decode_ref(&r, v->referencevalue))
            goto fail;
        break;
    default:
        goto fail;
    }
    if (r.p != r.end)
        goto fail;
    return v;
fail:
    protobuf_c_message_free_unpacked(&v->base, NULL);
    return NULL;
}
