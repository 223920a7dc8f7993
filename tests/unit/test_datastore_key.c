/*
 * Unit tests of the datastore's encodings and wire rewriting:
 *  - key encodings sort like App Engine keys (ids before names, parents
 *    before children, a parent's descendants contiguous) and decode back;
 *  - property values sort in App Engine's cross-type order and within each
 *    type, and decode back (projections read them);
 *  - key validation;
 *  - exactly the proto2 groups of the official protocol are treated as
 *    groups, and group bytes survive unpack + pack unchanged.
 */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "apiserver/services/datastore_key.h"
#include "apiserver/services/datastore_wire.h"

typedef Af__Datastore__PropertyValue__ReferenceValue__PathElement ref_elem_t;

/* ---- keys --------------------------------------------------------------- */

/* A path from "Kind:id" / "Kind:'name'" strings. */
static void encode_path(struct af_ds_buf *b, int n, const char *const *elems)
{
    for (int i = 0; i < n; i++) {
        char kind[64];
        const char *colon = strchr(elems[i], ':');
        snprintf(kind, sizeof(kind), "%.*s", (int)(colon - elems[i]), elems[i]);
        struct af_ds_elem e = {.type = kind};
        char name[64];
        if (colon[1] == '\'') {
            snprintf(name, sizeof(name), "%.*s", (int)strlen(colon + 2) - 1, colon + 2);
            e.name = name;
        } else {
            e.has_id = true;
            e.id = strtoll(colon + 1, NULL, 10);
        }
        af_ds_elem_encode(b, &e);
    }
}

static int cmp_bufs(const struct af_ds_buf *a, const struct af_ds_buf *b)
{
    size_t n = a->len < b->len ? a->len : b->len;
    int c = memcmp(a->p, b->p, n);
    if (c)
        return c;
    return a->len < b->len ? -1 : a->len > b->len;
}

static void test_key_order(void **state)
{
    /* Each row is one key; rows are in App Engine's key order. */
    static const char *const keys[][3] = {
        {"A:1"},
        {"A:1", "B:1"},
        {"A:1", "B:1", "C:'z'"},
        {"A:1", "B:2"},
        {"A:1", "B:'a'"},
        {"A:1", "C:1"},
        {"A:2"},
        {"A:255"},
        {"A:256"},
        {"A:9007199254740991"},
        {"A:'a'"},
        {"A:'a\x01'"},
        {"A:'ab'"},
        {"A:'b'"},
        {"AA:1"},
        {"B:1"},
    };
    size_t n = sizeof(keys) / sizeof(keys[0]);
    struct af_ds_buf prev = {0};
    for (size_t i = 0; i < n; i++) {
        int depth = keys[i][2] ? 3 : keys[i][1] ? 2 : 1;
        struct af_ds_buf cur = {0};
        encode_path(&cur, depth, keys[i]);
        if (prev.len)
            assert_true(cmp_bufs(&prev, &cur) < 0);
        /* Decodes back to the same key. */
        ds_path_t *p = af_ds_path_decode(cur.p, cur.len);
        assert_non_null(p);
        assert_int_equal(p->n_element, depth);
        struct af_ds_buf again = {0};
        af_ds_path_encode(&again, p, p->n_element);
        assert_int_equal(again.len, cur.len);
        assert_memory_equal(again.p, cur.p, cur.len);
        protobuf_c_message_free_unpacked(&p->base, NULL);
        af_ds_buf_release(&again);
        af_ds_buf_release(&prev);
        prev = cur;
    }
    af_ds_buf_release(&prev);
}

static void test_ancestor_range(void **state)
{
    static const char *const parent[] = {"A:1"};
    static const char *const child[] = {"A:1", "Z:'zzz'"};
    static const char *const sibling[] = {"A:2"};
    struct af_ds_buf p = {0}, c = {0}, s = {0}, hi = {0};
    encode_path(&p, 1, parent);
    encode_path(&c, 2, child);
    encode_path(&s, 1, sibling);
    assert_true(af_ds_prefix_successor(&hi, p.p, p.len));
    assert_true(cmp_bufs(&p, &c) < 0);
    assert_true(cmp_bufs(&c, &hi) < 0);
    assert_true(cmp_bufs(&hi, &s) <= 0);
    /* No successor for an all-0xff prefix. */
    struct af_ds_buf none = {0};
    const uint8_t ff[2] = {0xff, 0xff};
    assert_false(af_ds_prefix_successor(&none, ff, 2));
    af_ds_buf_release(&p);
    af_ds_buf_release(&c);
    af_ds_buf_release(&s);
    af_ds_buf_release(&hi);
}

static void test_path_decode_rejects_garbage(void **state)
{
    static const uint8_t bad[][6] = {
        {'A', 0x00},                   /* unterminated string */
        {'A', 0x00, 0x01, 0x07},       /* unknown element tag */
        {'A', 0x00, 0x01, 0x01, 1, 2}, /* short id */
        {'A', 0x00, 0x02, 0x00},       /* bad escape */
    };
    static const size_t lens[] = {2, 4, 6, 4};
    for (size_t i = 0; i < sizeof(lens) / sizeof(lens[0]); i++)
        assert_null(af_ds_path_decode(bad[i], lens[i]));
}

/* ---- key validation ----------------------------------------------------- */

struct key_fixture {
    ds_reference_t ref;
    ds_path_t path;
    ds_element_t elems[2];
    ds_element_t *ptrs[2];
};

static ds_reference_t *make_key(struct key_fixture *f, const char *k0, int64_t id0,
                                const char *name0, const char *k1, int64_t id1, const char *name1)
{
    af__datastore__reference__init(&f->ref);
    af__datastore__path__init(&f->path);
    f->ref.app = "dev~app";
    f->ref.path = &f->path;
    const char *kinds[2] = {k0, k1};
    int64_t ids[2] = {id0, id1};
    const char *names[2] = {name0, name1};
    size_t n = k1 ? 2 : 1;
    for (size_t i = 0; i < n; i++) {
        af__datastore__path__element__init(&f->elems[i]);
        f->elems[i].type = (char *)kinds[i];
        f->elems[i].has_id = ids[i] != -1;
        f->elems[i].id = ids[i] == -1 ? 0 : ids[i];
        f->elems[i].name = (char *)names[i];
        f->ptrs[i] = &f->elems[i];
    }
    f->path.element = f->ptrs;
    f->path.n_element = n;
    return &f->ref;
}

static void test_key_check(void **state)
{
    struct key_fixture f;
    /* id -1 below means "no id field". */
    assert_null(af_ds_key_check(make_key(&f, "K", 1, NULL, NULL, 0, NULL), false));
    assert_null(af_ds_key_check(make_key(&f, "K", -1, "n", "C", 3, NULL), false));
    assert_null(af_ds_key_check(make_key(&f, "K", 1, NULL, "C", -1, NULL), true));
    assert_true(af_ds_key_incomplete(make_key(&f, "K", 1, NULL, "C", -1, NULL)));

    assert_non_null(af_ds_key_check(make_key(&f, "", 1, NULL, NULL, 0, NULL), false));
    assert_non_null(af_ds_key_check(make_key(&f, "K", 0, NULL, NULL, 0, NULL), true));
    assert_non_null(af_ds_key_check(make_key(&f, "K", -5, NULL, NULL, 0, NULL), true));
    assert_non_null(af_ds_key_check(make_key(&f, "K", 1, "n", NULL, 0, NULL), true));
    assert_non_null(af_ds_key_check(make_key(&f, "K", -1, "", NULL, 0, NULL), true));
    /* Incomplete: refused where a complete key is needed, and always as a
     * parent. */
    assert_non_null(af_ds_key_check(make_key(&f, "K", -1, NULL, NULL, 0, NULL), false));
    assert_non_null(af_ds_key_check(make_key(&f, "K", -1, NULL, "C", 1, NULL), true));
    assert_non_null(af_ds_key_check(make_key(&f, "K", 1, NULL, "", 1, NULL), true));
    make_key(&f, "K", 1, NULL, NULL, 0, NULL);
    f.ref.app = "";
    assert_non_null(af_ds_key_check(&f.ref, false));
    f.ref.app = "a";
    f.path.n_element = 0;
    assert_non_null(af_ds_key_check(&f.ref, false));
}

/* ---- values ------------------------------------------------------------- */

static ds_value_t *v_int(int64_t i)
{
    ds_value_t *v = calloc(1, sizeof(*v));
    af__datastore__property_value__init(v);
    v->has_int64_value = true;
    v->int64_value = i;
    return v;
}

static ds_value_t *v_bool(bool b)
{
    ds_value_t *v = v_int(0);
    v->has_int64_value = false;
    v->has_boolean_value = true;
    v->boolean_value = b;
    return v;
}

static ds_value_t *v_str(const char *s, size_t n)
{
    ds_value_t *v = v_int(0);
    v->has_int64_value = false;
    v->has_string_value = true;
    v->string_value.data = malloc(n + 1);
    memcpy(v->string_value.data, s, n);
    v->string_value.len = n;
    return v;
}

static ds_value_t *v_double(double d)
{
    ds_value_t *v = v_int(0);
    v->has_int64_value = false;
    v->has_double_value = true;
    v->double_value = d;
    return v;
}

static ds_value_t *v_point(double x, double y)
{
    ds_value_t *v = v_int(0);
    v->has_int64_value = false;
    v->pointvalue = malloc(sizeof(*v->pointvalue));
    af__datastore__property_value__point_value__init(v->pointvalue);
    v->pointvalue->x = x;
    v->pointvalue->y = y;
    return v;
}

static ds_value_t *v_user(const char *email)
{
    ds_value_t *v = v_int(0);
    v->has_int64_value = false;
    v->uservalue = malloc(sizeof(*v->uservalue));
    af__datastore__property_value__user_value__init(v->uservalue);
    v->uservalue->email = strdup(email);
    v->uservalue->auth_domain = strdup("gmail.com");
    return v;
}

static ds_value_t *v_ref(const char *kind, int64_t id, const char *child_kind, int64_t child_id)
{
    ds_value_t *v = v_int(0);
    v->has_int64_value = false;
    Af__Datastore__PropertyValue__ReferenceValue *rv = malloc(sizeof(*rv));
    af__datastore__property_value__reference_value__init(rv);
    rv->app = strdup("dev~app");
    size_t n = child_kind ? 2 : 1;
    rv->pathelement = calloc(n, sizeof(*rv->pathelement));
    const char *kinds[2] = {kind, child_kind};
    int64_t ids[2] = {id, child_id};
    for (size_t i = 0; i < n; i++) {
        ref_elem_t *e = malloc(sizeof(*e));
        af__datastore__property_value__reference_value__path_element__init(e);
        e->type = strdup(kinds[i]);
        e->has_id = true;
        e->id = ids[i];
        rv->pathelement[i] = e;
    }
    rv->n_pathelement = n;
    v->referencevalue = rv;
    return v;
}

static void test_value_order_and_round_trip(void **state)
{
    ds_value_t *null_v = v_int(0);
    null_v->has_int64_value = false;
    /* App Engine's order: null < ints < bools < strings < doubles < points
     * < users < keys; and the natural order inside each type. */
    ds_value_t *vals[] = {
        null_v,
        v_int(INT64_MIN),
        v_int(-1),
        v_int(0),
        v_int(1),
        v_int(INT64_MAX),
        v_bool(false),
        v_bool(true),
        v_str("", 0),
        v_str("\0", 1),
        v_str("\0\0", 2),
        v_str("a", 1),
        v_str("a\0b", 3),
        v_str("ab", 2),
        v_str("\xc3\xa9", 2),
        v_str("\xff", 1),
        v_double(-INFINITY),
        v_double(-1e300),
        v_double(-1.5),
        v_double(-1e-300),
        v_double(0.0),
        v_double(1e-300),
        v_double(2.5),
        v_double(INFINITY),
        v_point(-1, 5),
        v_point(0, -3),
        v_point(0, 0),
        v_user("a@example.com"),
        v_user("b@example.com"),
        v_ref("K", 1, NULL, 0),
        v_ref("K", 1, "C", 1),
        v_ref("K", 2, NULL, 0),
    };
    size_t n = sizeof(vals) / sizeof(vals[0]);
    struct af_ds_buf prev = {0};
    for (size_t i = 0; i < n; i++) {
        struct af_ds_buf cur = {0};
        af_ds_value_encode(&cur, vals[i]);
        if (i > 0 && cmp_bufs(&prev, &cur) >= 0)
            fail_msg("value %zu does not sort after value %zu", i, i - 1);
        ds_value_t *back = af_ds_value_decode(cur.p, cur.len);
        if (!back)
            fail_msg("value %zu does not decode", i);
        assert_int_equal(af_ds_value_tag(back), af_ds_value_tag(vals[i]));
        struct af_ds_buf again = {0};
        af_ds_value_encode(&again, back);
        assert_int_equal(again.len, cur.len);
        assert_memory_equal(again.p, cur.p, cur.len);
        protobuf_c_message_free_unpacked(&back->base, NULL);
        af_ds_buf_release(&again);
        af_ds_buf_release(&prev);
        prev = cur;
    }
    af_ds_buf_release(&prev);

    /* -0.0 is 0.0; a decoded string keeps its NULs. */
    struct af_ds_buf a = {0}, b = {0};
    ds_value_t *neg0 = v_double(-0.0), *pos0 = v_double(0.0);
    af_ds_value_encode(&a, neg0);
    af_ds_value_encode(&b, pos0);
    assert_int_equal(cmp_bufs(&a, &b), 0);
    af_ds_buf_release(&a);
    ds_value_t *s = af_ds_value_decode((const uint8_t *)"\x40x\x00\xffy\x00\x01", 7);
    assert_non_null(s);
    assert_int_equal(s->string_value.len, 3);
    assert_memory_equal(s->string_value.data, "x\0y", 3);
    protobuf_c_message_free_unpacked(&s->base, NULL);
    assert_null(af_ds_value_decode((const uint8_t *)"\x20\x01", 2));     /* short int */
    assert_null(af_ds_value_decode((const uint8_t *)"\x99", 1));         /* unknown tag */
    assert_null(af_ds_value_decode((const uint8_t *)"\x30\x01\x00", 3)); /* trailing byte */
    af_ds_buf_release(&b);
    protobuf_c_message_free_unpacked(&neg0->base, NULL);
    protobuf_c_message_free_unpacked(&pos0->base, NULL);
    for (size_t i = 0; i < n; i++)
        protobuf_c_message_free_unpacked(&vals[i]->base, NULL);
}

/* ---- wire --------------------------------------------------------------- */

/* Every group of the official datastore_v3.proto, as (message, field). */
static const struct {
    const ProtobufCMessageDescriptor *msg;
    unsigned field;
} groups[] = {
    {&af__datastore__property_value__descriptor, 5},
    {&af__datastore__property_value__descriptor, 8},
    {&af__datastore__property_value__descriptor, 12},
    {&af__datastore__property_value__reference_value__descriptor, 14},
    {&af__datastore__path__descriptor, 1},
    {&af__datastore__index__descriptor, 2},
    {&af__datastore__query__descriptor, 4},
    {&af__datastore__query__descriptor, 9},
    {&af__datastore__compiled_query__descriptor, 1},
    {&af__datastore__compiled_query__descriptor, 7},
    {&af__datastore__compiled_query__descriptor, 13},
    {&af__datastore__compiled_cursor__descriptor, 2},
    {&af__datastore__compiled_cursor__position__descriptor, 29},
    {&af__datastore__cost__descriptor, 5},
    {&af__datastore__get_response__descriptor, 1},
    {&af__datastore__commit_response__descriptor, 3},
};

static bool expected_group(const ProtobufCMessageDescriptor *d, unsigned field)
{
    for (size_t i = 0; i < sizeof(groups) / sizeof(groups[0]); i++)
        if (groups[i].msg == d && groups[i].field == field)
            return true;
    return false;
}

static void test_group_rule(void **state)
{
    /* Every message field of these messages: groups exactly where the
     * official protocol has them. */
    const ProtobufCMessageDescriptor *msgs[] = {
        &af__datastore__property_value__descriptor,
        &af__datastore__property_value__reference_value__descriptor,
        &af__datastore__property__descriptor,
        &af__datastore__path__descriptor,
        &af__datastore__reference__descriptor,
        &af__datastore__entity_proto__descriptor,
        &af__datastore__index__descriptor,
        &af__datastore__composite_index__descriptor,
        &af__datastore__transaction__descriptor,
        &af__datastore__query__descriptor,
        &af__datastore__query__filter__descriptor,
        &af__datastore__compiled_query__descriptor,
        &af__datastore__compiled_query__entity_filter__descriptor,
        &af__datastore__compiled_cursor__descriptor,
        &af__datastore__compiled_cursor__position__descriptor,
        &af__datastore__cost__descriptor,
        &af__datastore__get_request__descriptor,
        &af__datastore__get_response__descriptor,
        &af__datastore__get_response__entity__descriptor,
        &af__datastore__put_request__descriptor,
        &af__datastore__put_response__descriptor,
        &af__datastore__delete_request__descriptor,
        &af__datastore__next_request__descriptor,
        &af__datastore__query_result__descriptor,
        &af__datastore__allocate_ids_request__descriptor,
        &af__datastore__begin_transaction_request__descriptor,
        &af__datastore__commit_response__descriptor,
        &af__datastore__commit_response__version__descriptor,
    };
    size_t found = 0;
    for (size_t i = 0; i < sizeof(msgs) / sizeof(msgs[0]); i++) {
        for (unsigned j = 0; j < msgs[i]->n_fields; j++) {
            const ProtobufCFieldDescriptor *f = &msgs[i]->fields[j];
            bool g = af_ds_wire_is_group(msgs[i], f);
            if (g != expected_group(msgs[i], f->id))
                fail_msg("%s.%s: group rule says %d", msgs[i]->name, f->name, g);
            found += g;
        }
    }
    assert_int_equal(found, sizeof(groups) / sizeof(groups[0]));
}

static void test_wire_round_trip(void **state)
{
    /* Reference{app "a", path {group Element{type "K", id 5}
     * group Element{type "C", name "x"}}} as the official libraries write
     * it. */
    static const uint8_t ref[] = {
        0x6a, 0x01, 'a',                               /* app = 13 */
        0x72, 0x0f,                                    /* path = 14, 15 bytes */
        0x0b, 0x12, 0x01, 'K', 0x18, 0x05, 0x0c,       /* group 1 {type, id} */
        0x0b, 0x12, 0x01, 'C', 0x22, 0x01, 'x',  0x0c, /* group 1 {type, name} */
    };
    ds_reference_t *r = (ds_reference_t *)af_ds_wire_unpack(&af__datastore__reference__descriptor,
                                                            ref, sizeof(ref));
    assert_non_null(r);
    assert_string_equal(r->app, "a");
    assert_int_equal(r->path->n_element, 2);
    assert_string_equal(r->path->element[0]->type, "K");
    assert_int_equal(r->path->element[0]->id, 5);
    assert_string_equal(r->path->element[1]->name, "x");
    size_t n;
    uint8_t *out = af_ds_wire_pack(&r->base, &n);
    assert_int_equal(n, sizeof(ref));
    assert_memory_equal(out, ref, n);
    free(out);
    protobuf_c_message_free_unpacked(&r->base, NULL);

    /* Truncated, mismatched end group, and a group nested past the bound
     * are refused; an unknown group is dropped. */
    assert_null(af_ds_wire_unpack(&af__datastore__reference__descriptor, ref, sizeof(ref) - 1));
    static const uint8_t bad_end[] = {0x6a, 0x01, 'a', 0x72, 0x05, 0x0b, 0x12, 0x01, 'K', 0x14};
    assert_null(af_ds_wire_unpack(&af__datastore__reference__descriptor, bad_end, sizeof(bad_end)));
    uint8_t deep[2 * (AF_DS_WIRE_MAX_DEPTH + 2)];
    for (size_t i = 0; i < AF_DS_WIRE_MAX_DEPTH + 2; i++) {
        deep[i] = (15 << 3) | 3; /* unknown field 15: start group */
        deep[sizeof(deep) - 1 - i] = (15 << 3) | 4;
    }
    assert_null(
        af_ds_wire_from_groups(&af__datastore__reference__descriptor, deep, sizeof(deep), &n));
    static const uint8_t unknown[] = {0x6a, 0x01, 'a',  0xfb, 0x01, 0x08,
                                      0x01, 0xfc, 0x01, 0x72, 0x00};
    uint8_t *flat =
        af_ds_wire_from_groups(&af__datastore__reference__descriptor, unknown, sizeof(unknown), &n);
    assert_non_null(flat);
    assert_int_equal(n, 5); /* app and the empty path only */
    free(flat);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_key_order),
        cmocka_unit_test(test_ancestor_range),
        cmocka_unit_test(test_path_decode_rejects_garbage),
        cmocka_unit_test(test_key_check),
        cmocka_unit_test(test_value_order_and_round_trip),
        cmocka_unit_test(test_group_rule),
        cmocka_unit_test(test_wire_round_trip),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
