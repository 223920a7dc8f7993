/* Unit tests for how the admin console shows entities: value types and
 * texts, paths and URL-safe keys (apiserver/services/datastore_admin.c). */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "apiserver/services/datastore_admin.h"
#include "apiserver/services/datastore_wire.h"
#include "common/b64url.h"

#define MEANING(m) AF__DATASTORE__PROPERTY__MEANING__##m

/* Renders a property with value pv and meaning (0: none) and checks its
 * type and text. */
static void check(ds_value_t *pv, int meaning, const char *type, const char *text)
{
    ds_property_t p = AF__DATASTORE__PROPERTY__INIT;
    p.name = "p";
    p.value = pv;
    if (meaning) {
        p.has_meaning = true;
        p.meaning = meaning;
    }
    Af__Admin__DsValue v;
    af_ds_admin_value(&p, 0, &v);
    assert_string_equal(v.type, type);
    assert_string_equal(v.text, text);
    assert_null(v.key);
    af_ds_admin_value_release(&v);
}

static void test_scalars(void **state)
{
    ds_value_t v = AF__DATASTORE__PROPERTY_VALUE__INIT;
    check(&v, 0, "null", "null");
    v.has_int64_value = true;
    v.int64_value = -42;
    check(&v, 0, "int", "-42");
    v.int64_value = 1700000000123456;
    check(&v, MEANING(GD_WHEN), "date", "2023-11-14 22:13:20.123456 UTC");
    v.int64_value = -1; /* a microsecond before the epoch */
    check(&v, MEANING(GD_WHEN), "date", "1969-12-31 23:59:59.999999 UTC");
    v.int64_value = 80;
    check(&v, MEANING(GD_RATING), "rating", "80");

    ds_value_t b = AF__DATASTORE__PROPERTY_VALUE__INIT;
    b.has_boolean_value = true;
    check(&b, 0, "bool", "false");

    ds_value_t d = AF__DATASTORE__PROPERTY_VALUE__INIT;
    d.has_double_value = true;
    d.double_value = 0.1; /* the shortest text that reads back */
    check(&d, 0, "float", "0.1");
    d.double_value = 1.0 / 3;
    check(&d, 0, "float", "0.3333333333333333");
    d.double_value = -2e300;
    check(&d, 0, "float", "-2e+300");
}

static void check_string(const char *s, size_t n, int meaning, const char *type, const char *text)
{
    ds_value_t v = AF__DATASTORE__PROPERTY_VALUE__INIT;
    v.has_string_value = true;
    v.string_value.data = (uint8_t *)s;
    v.string_value.len = n;
    check(&v, meaning, type, text);
}

static void test_strings_and_blobs(void **state)
{
    check_string("<b>é</b>", 9, 0, "string", "<b>é</b>"); /* escaping is the page's job */
    check_string("long", 4, MEANING(TEXT), "text", "long");
    check_string("http://x", 8, MEANING(ATOM_LINK), "link", "http://x");
    check_string("a@b", 3, MEANING(GD_EMAIL), "email", "a@b");
    /* Blobs are shown by size, whatever their bytes. */
    check_string("text", 4, MEANING(BLOB), "blob", "4 bytes");
    check_string("ab", 2, MEANING(BYTESTRING), "blob", "2 bytes");
    check_string("xyz", 3, MEANING(ENTITY_PROTO), "embedded entity", "3 bytes");
    /* A string that is not text is a blob too. */
    check_string("\xff\xfe", 2, 0, "blob", "2 bytes");
    check_string("a\0b", 3, 0, "blob", "3 bytes");
    check_string("", 0, 0, "string", "");
}

static void test_long_texts_are_cut_on_a_character(void **state)
{
    ds_value_t v = AF__DATASTORE__PROPERTY_VALUE__INIT;
    v.has_string_value = true;
    v.string_value.data = (uint8_t *)"ab\xc3\xa9" "cd"; /* "abécd", 6 bytes */
    v.string_value.len = 6;
    ds_property_t p = AF__DATASTORE__PROPERTY__INIT;
    p.name = "p";
    p.value = &v;
    Af__Admin__DsValue out;
    size_t maxes[] = {3, 4, 6, 0};
    const char *texts[] = {"ab", "ab\xc3\xa9",
                           "ab\xc3\xa9"
                           "cd",
                           "ab\xc3\xa9"
                           "cd"};
    bool cuts[] = {true, true, false, false};
    for (size_t i = 0; i < 4; i++) {
        af_ds_admin_value(&p, maxes[i], &out);
        assert_string_equal(out.text, texts[i]);
        assert_int_equal(out.cut, cuts[i]);
        af_ds_admin_value_release(&out);
    }
    /* A blob's text is its size: nothing to cut. */
    p.has_meaning = true;
    p.meaning = MEANING(BLOB);
    af_ds_admin_value(&p, 2, &out);
    assert_string_equal(out.text, "6 bytes");
    assert_false(out.cut);
    af_ds_admin_value_release(&out);
}

static void test_point_and_user(void **state)
{
    ds_value_t v = AF__DATASTORE__PROPERTY_VALUE__INIT;
    Af__Datastore__PropertyValue__PointValue pt = AF__DATASTORE__PROPERTY_VALUE__POINT_VALUE__INIT;
    pt.x = 48.85;
    pt.y = 2.35;
    v.pointvalue = &pt;
    check(&v, 0, "geo point", "48.85, 2.35");
    ds_value_t u = AF__DATASTORE__PROPERTY_VALUE__INIT;
    Af__Datastore__PropertyValue__UserValue uv = AF__DATASTORE__PROPERTY_VALUE__USER_VALUE__INIT;
    uv.email = "me@example.com";
    uv.auth_domain = "gmail.com";
    u.uservalue = &uv;
    check(&u, 0, "user", "me@example.com");
}

/* The Reference a URL-safe key stands for. */
static ds_reference_t *key_ref(const char *key)
{
    uint8_t *bytes;
    size_t n;
    assert_int_equal(af_b64url_decode(key, &bytes, &n), 0);
    ds_reference_t *r =
        (ds_reference_t *)af_ds_wire_unpack(&af__datastore__reference__descriptor, bytes, n);
    free(bytes);
    assert_non_null(r);
    return r;
}

static void test_key_values_link_to_their_entity(void **state)
{
    Af__Datastore__PropertyValue__ReferenceValue__PathElement pe[2] = {
        AF__DATASTORE__PROPERTY_VALUE__REFERENCE_VALUE__PATH_ELEMENT__INIT,
        AF__DATASTORE__PROPERTY_VALUE__REFERENCE_VALUE__PATH_ELEMENT__INIT,
    };
    pe[0].type = "Parent";
    pe[0].has_id = true;
    pe[0].id = 7;
    pe[1].type = "Child";
    pe[1].name = "x\"y";
    Af__Datastore__PropertyValue__ReferenceValue__PathElement *pes[2] = {&pe[0], &pe[1]};
    Af__Datastore__PropertyValue__ReferenceValue rv =
        AF__DATASTORE__PROPERTY_VALUE__REFERENCE_VALUE__INIT;
    rv.app = "dev~app";
    rv.name_space = "ns";
    rv.n_pathelement = 2;
    rv.pathelement = pes;
    ds_value_t v = AF__DATASTORE__PROPERTY_VALUE__INIT;
    v.referencevalue = &rv;
    ds_property_t p = AF__DATASTORE__PROPERTY__INIT;
    p.name = "k";
    p.value = &v;
    Af__Admin__DsValue out;
    af_ds_admin_value(&p, 0, &out);
    assert_string_equal(out.type, "key");
    assert_string_equal(out.text, "Parent:7 > Child:\"x\"y\"");
    assert_non_null(out.key);
    ds_reference_t *r = key_ref(out.key);
    assert_string_equal(r->app, "dev~app");
    assert_string_equal(r->name_space, "ns");
    assert_int_equal(r->path->n_element, 2);
    assert_string_equal(r->path->element[0]->type, "Parent");
    assert_int_equal(r->path->element[0]->id, 7);
    assert_string_equal(r->path->element[1]->name, "x\"y");
    protobuf_c_message_free_unpacked(&r->base, NULL);
    af_ds_admin_value_release(&out);
}

static void test_entity_groups_lists_and_keeps_order(void **state)
{
    ds_element_t el = AF__DATASTORE__PATH__ELEMENT__INIT;
    el.type = "Person";
    el.has_id = true;
    el.id = 3;
    ds_element_t *els[1] = {&el};
    ds_path_t path = AF__DATASTORE__PATH__INIT;
    path.n_element = 1;
    path.element = els;
    ds_reference_t key = AF__DATASTORE__REFERENCE__INIT;
    key.app = "dev~app";
    key.path = &path;

    ds_value_t vals[4];
    ds_property_t props[4];
    ds_property_t *indexed[3], *raw[1];
    const char *names[4] = {"tags", "tags", "age", "photo"};
    for (int i = 0; i < 4; i++) {
        af__datastore__property_value__init(&vals[i]);
        af__datastore__property__init(&props[i]);
        props[i].name = (char *)names[i];
        props[i].value = &vals[i];
        props[i].multiple = i < 2;
    }
    vals[0].has_string_value = vals[1].has_string_value = true;
    vals[0].string_value = (ProtobufCBinaryData){1, (uint8_t *)"a"};
    vals[1].string_value = (ProtobufCBinaryData){1, (uint8_t *)"b"};
    vals[2].has_int64_value = true;
    vals[2].int64_value = 40;
    vals[3].has_string_value = true;
    vals[3].string_value = (ProtobufCBinaryData){5, (uint8_t *)"\x89PNG\0"};
    props[3].has_meaning = true;
    props[3].meaning = MEANING(BLOB);
    indexed[0] = &props[0];
    indexed[1] = &props[1];
    indexed[2] = &props[2];
    raw[0] = &props[3];
    ds_entity_t e = AF__DATASTORE__ENTITY_PROTO__INIT;
    e.key = &key;
    e.n_property = 3;
    e.property = indexed;
    e.n_raw_property = 1;
    e.raw_property = raw;

    Af__Admin__DsEntity *m = af_ds_admin_entity(&e, 0);
    assert_string_equal(m->path, "Person:3");
    assert_string_equal(m->kind, "Person");
    assert_string_equal(m->app, "dev~app");
    assert_string_equal(m->namespace_, "");
    assert_int_equal(m->n_property, 3);
    assert_string_equal(m->property[0]->name, "tags");
    assert_true(m->property[0]->multiple);
    assert_int_equal(m->property[0]->n_value, 2);
    assert_string_equal(m->property[0]->value[1]->text, "b");
    assert_string_equal(m->property[1]->name, "age");
    assert_true(m->property[1]->indexed);
    assert_string_equal(m->property[2]->value[0]->text, "5 bytes");
    assert_false(m->property[2]->indexed);
    /* The key reads back as the entity's own. */
    ds_reference_t *r = key_ref(m->key);
    assert_string_equal(r->path->element[0]->type, "Person");
    assert_int_equal(r->path->element[0]->id, 3);
    protobuf_c_message_free_unpacked(&r->base, NULL);
    af_ds_admin_entity_free(m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_scalars),
        cmocka_unit_test(test_strings_and_blobs),
        cmocka_unit_test(test_long_texts_are_cut_on_a_character),
        cmocka_unit_test(test_point_and_user),
        cmocka_unit_test(test_key_values_link_to_their_entity),
        cmocka_unit_test(test_entity_groups_lists_and_keeps_order),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
