/*
 * Unit tests of the memcache service: every method through the service's
 * method table with encoded requests, the hand-written group codec against
 * bytes produced by the official Go library, expiration with a fake clock,
 * LRU eviction under a small cap, CAS, counters and namespaces.
 *
 * The .c is included so the tests can reach the codec and the clock hook.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "apiserver/services/memcache.c"

/* A fixed "now" well inside the absolute-time range. */
#define T0 1700000000ll
static int64_t fake_now = T0;
static int64_t fake_clock(void)
{
    return fake_now;
}

typedef Af__Memcache__MemcacheSetResponse__SetStatusCode set_status_t;
#define STORED AF__MEMCACHE__MEMCACHE_SET_RESPONSE__SET_STATUS_CODE__STORED
#define NOT_STORED AF__MEMCACHE__MEMCACHE_SET_RESPONSE__SET_STATUS_CODE__NOT_STORED
#define SET_ERROR AF__MEMCACHE__MEMCACHE_SET_RESPONSE__SET_STATUS_CODE__ERROR
#define EXISTS AF__MEMCACHE__MEMCACHE_SET_RESPONSE__SET_STATUS_CODE__EXISTS
#define DELETED AF__MEMCACHE__MEMCACHE_DELETE_RESPONSE__DELETE_STATUS_CODE__DELETED
#define NOT_FOUND AF__MEMCACHE__MEMCACHE_DELETE_RESPONSE__DELETE_STATUS_CODE__NOT_FOUND
#define INCR_STATUS_OK AF__MEMCACHE__MEMCACHE_INCREMENT_RESPONSE__INCREMENT_STATUS_CODE__OK
#define INCR_STATUS_NOT_CHANGED                                                                    \
    AF__MEMCACHE__MEMCACHE_INCREMENT_RESPONSE__INCREMENT_STATUS_CODE__NOT_CHANGED
#define INCR_STATUS_ERROR AF__MEMCACHE__MEMCACHE_INCREMENT_RESPONSE__INCREMENT_STATUS_CODE__ERROR
#define ERR_UNSPECIFIED AF__MEMCACHE__MEMCACHE_SERVICE_ERROR__ERROR_CODE__UNSPECIFIED_ERROR
#define ERR_INVALID_VALUE AF__MEMCACHE__MEMCACHE_SERVICE_ERROR__ERROR_CODE__INVALID_VALUE

/* ---- plumbing ---------------------------------------------------------- */

static void *new_cache(long long cap)
{
    struct af_api_options opts = {.memcache_max_bytes = cap};
    mc_now = fake_clock;
    fake_now = T0;
    return af_service_memcache.create(&opts);
}

static int setup_default(void **state)
{
    *state = new_cache(0);
    return 0;
}

static int teardown(void **state)
{
    af_service_memcache.destroy(*state);
    return 0;
}

static void result_release(struct af_result *res)
{
    free(res->detail);
    free(res->response);
    memset(res, 0, sizeof(*res));
}

/* Runs one method the way the backend does: by name, through the table. */
static void call(void *st, const char *method, const uint8_t *req, size_t len,
                 struct af_result *res)
{
    memset(res, 0xa5, sizeof(*res)); /* the handler must set every field */
    for (const struct af_method *m = af_service_memcache.methods; m->name; m++) {
        if (strcmp(m->name, method) == 0) {
            struct af_call c = {"memcache", method, req, len, "", 0};
            m->fn(st, &c, res);
            return;
        }
    }
    fail_msg("no method %s", method);
}

/* Calls a method with a protobuf-c message as the request. */
static void call_msg(void *st, const char *method, const ProtobufCMessage *msg,
                     struct af_result *res)
{
    size_t len = protobuf_c_message_get_packed_size(msg);
    uint8_t *buf = af_xmalloc(len);
    protobuf_c_message_pack(msg, buf);
    call(st, method, buf, len, res);
    free(buf);
}

static struct mc_bytes lit(const char *s)
{
    return (struct mc_bytes){(const uint8_t *)s, strlen(s)};
}

/* One Set item with the fields a client sends. cas 0: none. policy 0: absent
 * (the server's default, SET). */
static struct mc_set_item set_item(const char *key, const char *value, int policy, uint32_t exp,
                                   uint64_t cas)
{
    struct mc_set_item it = {
        .present = WF_BIT(2) | WF_BIT(3), .key = lit(key), .value = lit(value)};
    if (policy) {
        it.present |= WF_BIT(5);
        it.set_policy = policy;
    }
    if (exp) {
        it.present |= WF_BIT(6);
        it.expiration_time = exp;
    }
    if (cas) {
        it.present |= WF_BIT(8) | WF_BIT(9);
        it.cas_id = cas;
        it.for_cas = true;
    }
    return it;
}

/* Sends a Set of n items; fills status[]. */
static void set_n(void *st, const char *ns, struct mc_set_item *items, size_t n,
                  set_status_t *status)
{
    struct wf_msg msg = {.items = items, .n_items = n};
    if (ns) {
        msg.has_name_space = true;
        msg.name_space = lit(ns);
    }
    size_t len;
    uint8_t *buf = wf_encode(&wf_set_request, &msg, &len);
    struct af_result res;
    call(st, "Set", buf, len, &res);
    free(buf);
    assert_int_equal(res.kind, AF_RESULT_OK);
    Af__Memcache__MemcacheSetResponse *r =
        af__memcache__memcache_set_response__unpack(NULL, res.response_len, res.response);
    assert_non_null(r);
    assert_int_equal(r->n_set_status, n);
    for (size_t i = 0; i < n; i++)
        status[i] = r->set_status[i];
    af__memcache__memcache_set_response__free_unpacked(r, NULL);
    result_release(&res);
}

static set_status_t set_full(void *st, const char *ns, const char *key, const char *value,
                             int policy, uint32_t exp, uint64_t cas)
{
    struct mc_set_item it = set_item(key, value, policy, exp, cas);
    set_status_t s;
    set_n(st, ns, &it, 1, &s);
    return s;
}

static set_status_t set1(void *st, const char *key, const char *value)
{
    return set_full(st, NULL, key, value, MC_SET, 0, 0);
}

/* What Get returned for one key. */
struct got {
    bool found;
    char value[128];
    uint32_t flags;
    bool has_cas;
    uint64_t cas;
};

/* Sends a Get of n keys; returns the decoded item count and fills out[] in
 * request order (misses have found == false). */
static size_t get_n(void *st, const char *ns, const char *const *keys, size_t n, bool for_cas,
                    struct got *out)
{
    Af__Memcache__MemcacheGetRequest req = AF__MEMCACHE__MEMCACHE_GET_REQUEST__INIT;
    ProtobufCBinaryData *k = af_xcalloc(n, sizeof(*k));
    for (size_t i = 0; i < n; i++)
        k[i] = (ProtobufCBinaryData){strlen(keys[i]), (uint8_t *)keys[i]};
    req.n_key = n;
    req.key = k;
    if (ns)
        req.name_space = (char *)ns;
    req.has_for_cas = for_cas;
    req.for_cas = for_cas;
    struct af_result res;
    call_msg(st, "Get", &req.base, &res);
    free(k);
    assert_int_equal(res.kind, AF_RESULT_OK);

    struct wf_msg msg;
    assert_true(wf_decode(&wf_get_response, res.response, res.response_len, &msg));
    const struct mc_get_item *items = msg.items;
    memset(out, 0, n * sizeof(*out));
    for (size_t j = 0; j < msg.n_items; j++) {
        const struct mc_get_item *it = &items[j];
        for (size_t i = 0; i < n; i++) {
            if (it->key.len == strlen(keys[i]) && memcmp(it->key.data, keys[i], it->key.len) == 0) {
                out[i].found = true;
                assert_true(it->value.len < sizeof(out[i].value));
                memcpy(out[i].value, it->value.data, it->value.len);
                out[i].value[it->value.len] = 0;
                assert_true(it->present & WF_BIT(4));
                out[i].flags = it->flags;
                out[i].has_cas = (it->present & WF_BIT(5)) != 0;
                out[i].cas = it->cas_id;
            }
        }
    }
    size_t got = msg.n_items;
    wf_msg_release(&msg);
    result_release(&res);
    return got;
}

static struct got get_ns(void *st, const char *ns, const char *key)
{
    struct got g;
    get_n(st, ns, &key, 1, true, &g);
    return g;
}

static struct got get1(void *st, const char *key)
{
    return get_ns(st, NULL, key);
}

static int del_full(void *st, const char *ns, const char *key, uint32_t delete_time)
{
    struct mc_delete_item it = {.present = WF_BIT(2), .key = lit(key)};
    if (delete_time) {
        it.present |= WF_BIT(3);
        it.delete_time = delete_time;
    }
    struct wf_msg msg = {.items = &it, .n_items = 1};
    if (ns) {
        msg.has_name_space = true;
        msg.name_space = lit(ns);
    }
    size_t len;
    uint8_t *buf = wf_encode(&wf_delete_request, &msg, &len);
    struct af_result res;
    call(st, "Delete", buf, len, &res);
    free(buf);
    assert_int_equal(res.kind, AF_RESULT_OK);
    Af__Memcache__MemcacheDeleteResponse *r =
        af__memcache__memcache_delete_response__unpack(NULL, res.response_len, res.response);
    assert_non_null(r);
    assert_int_equal(r->n_delete_status, 1);
    int s = r->delete_status[0];
    af__memcache__memcache_delete_response__free_unpacked(r, NULL);
    result_release(&res);
    return s;
}

/* An Increment. delta < 0 decrements. initial < 0: no initial_value.
 * Returns the application error code, or 0 with *resp filled. */
struct incr {
    bool has_new_value;
    uint64_t new_value;
    int status;
};

static int incr_full(void *st, const char *ns, const char *key, uint64_t delta, bool decrement,
                     bool has_initial, uint64_t initial, struct incr *out)
{
    Af__Memcache__MemcacheIncrementRequest req = AF__MEMCACHE__MEMCACHE_INCREMENT_REQUEST__INIT;
    req.key = (ProtobufCBinaryData){strlen(key), (uint8_t *)key};
    if (ns)
        req.name_space = (char *)ns;
    req.has_delta = true;
    req.delta = delta;
    if (decrement) {
        req.has_direction = true;
        req.direction = AF__MEMCACHE__MEMCACHE_INCREMENT_REQUEST__DIRECTION__DECREMENT;
    }
    req.has_initial_value = has_initial;
    req.initial_value = initial;
    struct af_result res;
    call_msg(st, "Increment", &req.base, &res);
    if (res.kind == AF_RESULT_APP_ERROR) {
        int code = res.code;
        assert_non_null(res.detail);
        result_release(&res);
        return code;
    }
    assert_int_equal(res.kind, AF_RESULT_OK);
    Af__Memcache__MemcacheIncrementResponse *r =
        af__memcache__memcache_increment_response__unpack(NULL, res.response_len, res.response);
    assert_non_null(r);
    out->has_new_value = r->has_new_value;
    out->new_value = r->new_value;
    out->status = r->has_increment_status ? (int)r->increment_status : 0;
    af__memcache__memcache_increment_response__free_unpacked(r, NULL);
    result_release(&res);
    return 0;
}

static Af__Memcache__MergedNamespaceStats stats(void *st)
{
    Af__Memcache__MemcacheStatsRequest req = AF__MEMCACHE__MEMCACHE_STATS_REQUEST__INIT;
    struct af_result res;
    call_msg(st, "Stats", &req.base, &res);
    assert_int_equal(res.kind, AF_RESULT_OK);
    Af__Memcache__MemcacheStatsResponse *r =
        af__memcache__memcache_stats_response__unpack(NULL, res.response_len, res.response);
    assert_non_null(r);
    assert_non_null(r->stats);
    Af__Memcache__MergedNamespaceStats s = *r->stats;
    af__memcache__memcache_stats_response__free_unpacked(r, NULL);
    result_release(&res);
    return s;
}

static void flush(void *st)
{
    Af__Memcache__MemcacheFlushRequest req = AF__MEMCACHE__MEMCACHE_FLUSH_REQUEST__INIT;
    struct af_result res;
    call_msg(st, "FlushAll", &req.base, &res);
    assert_int_equal(res.kind, AF_RESULT_OK);
    assert_int_equal(res.response_len, 0);
    result_release(&res);
}

static size_t unhex(const char *hex, uint8_t *out)
{
    size_t n = strlen(hex) / 2;
    for (size_t i = 0; i < n; i++) {
        unsigned v;
        assert_int_equal(sscanf(hex + 2 * i, "%2x", &v), 1);
        out[i] = (uint8_t)v;
    }
    return n;
}

/* ---- the group codec against the official encoding -------------------- */

/*
 * Golden bytes: proto.Marshal, by the official Go package
 * google.golang.org/appengine/internal/memcache (Debian's
 * golang-google-appengine-dev), of the messages rebuilt below. The package
 * is internal, so a test outside its tree cannot import it; the bytes were
 * printed once by a throwaway program in a copy of that tree, and
 * tests/go/src/appfronttest/memcache_test.go covers the same encodings end
 * to end through the library.
 *
 * Set: items {k1, v1, flags 7, CAS, expiration 3600, cas_id
 * 0x0102030405060708, for_cas} and {k2, "", ADD}, name_space "ns".
 */
static const char GOLDEN_SET[] =
    "0b12026b311a0276312507000000280435100e000041080706050403020148010c"
    "0b12026b321a0028020c3a026e73";
/* Delete: items {a} and {bc, delete_time 10}, name_space "". */
static const char GOLDEN_DELETE[] = "0b1201610c0b120262631d0a0000000c2200";
/* Get response: items {k1, hello, flags 0xdeadbeef, cas_id 42} and
 * {k2, "", flags 0, expires_in_seconds -1}. */
static const char GOLDEN_GET_RESPONSE[] = "0b12026b311a0568656c6c6f25efbeadde292a000000000000000c"
                                          "0b12026b321a00250000000030ffffffffffffffffff010c";

static void test_wire_set_request_matches_go(void **state)
{
    struct mc_set_item items[2] = {
        set_item("k1", "v1", MC_CAS, 3600, 0x0102030405060708ull),
        set_item("k2", "", MC_ADD, 0, 0),
    };
    items[0].present |= WF_BIT(4);
    items[0].flags = 7;
    struct wf_msg msg = {
        .items = items, .n_items = 2, .has_name_space = true, .name_space = lit("ns")};
    size_t len;
    uint8_t *buf = wf_encode(&wf_set_request, &msg, &len);
    uint8_t want[128];
    size_t want_len = unhex(GOLDEN_SET, want);
    assert_int_equal(len, want_len);
    assert_memory_equal(buf, want, len);
    free(buf);

    struct wf_msg dec;
    assert_true(wf_decode(&wf_set_request, want, want_len, &dec));
    assert_int_equal(dec.n_items, 2);
    assert_true(dec.has_name_space);
    assert_int_equal(dec.name_space.len, 2);
    assert_memory_equal(dec.name_space.data, "ns", 2);
    const struct mc_set_item *d = dec.items;
    assert_int_equal(d[0].present, items[0].present);
    assert_int_equal(d[0].key.len, 2);
    assert_memory_equal(d[0].key.data, "k1", 2);
    assert_memory_equal(d[0].value.data, "v1", 2);
    assert_int_equal(d[0].flags, 7);
    assert_int_equal(d[0].set_policy, MC_CAS);
    assert_int_equal(d[0].expiration_time, 3600);
    assert_true(d[0].cas_id == 0x0102030405060708ull);
    assert_true(d[0].for_cas);
    assert_int_equal(d[1].present, WF_BIT(2) | WF_BIT(3) | WF_BIT(5));
    assert_int_equal(d[1].value.len, 0);
    assert_int_equal(d[1].set_policy, MC_ADD);
    wf_msg_release(&dec);
}

static void test_wire_delete_request_matches_go(void **state)
{
    struct mc_delete_item items[2] = {
        {.present = WF_BIT(2), .key = lit("a")},
        {.present = WF_BIT(2) | WF_BIT(3), .key = lit("bc"), .delete_time = 10},
    };
    struct wf_msg msg = {
        .items = items, .n_items = 2, .has_name_space = true, .name_space = lit("")};
    size_t len;
    uint8_t *buf = wf_encode(&wf_delete_request, &msg, &len);
    uint8_t want[64];
    size_t want_len = unhex(GOLDEN_DELETE, want);
    assert_int_equal(len, want_len);
    assert_memory_equal(buf, want, len);
    free(buf);

    struct wf_msg dec;
    assert_true(wf_decode(&wf_delete_request, want, want_len, &dec));
    assert_int_equal(dec.n_items, 2);
    const struct mc_delete_item *d = dec.items;
    assert_int_equal(d[1].delete_time, 10);
    assert_int_equal(d[1].key.len, 2);
    assert_true(dec.has_name_space);
    assert_int_equal(dec.name_space.len, 0);
    wf_msg_release(&dec);
}

static void test_wire_get_response_matches_go(void **state)
{
    struct mc_get_item items[2] = {
        {.present = WF_BIT(2) | WF_BIT(3) | WF_BIT(4) | WF_BIT(5),
         .key = lit("k1"),
         .value = lit("hello"),
         .flags = 0xdeadbeef,
         .cas_id = 42},
        {.present = WF_BIT(2) | WF_BIT(3) | WF_BIT(4) | WF_BIT(6),
         .key = lit("k2"),
         .value = lit(""),
         .expires_in_seconds = -1},
    };
    struct wf_msg msg = {.items = items, .n_items = 2};
    size_t len;
    uint8_t *buf = wf_encode(&wf_get_response, &msg, &len);
    uint8_t want[128];
    size_t want_len = unhex(GOLDEN_GET_RESPONSE, want);
    assert_int_equal(len, want_len);
    assert_memory_equal(buf, want, len);
    free(buf);

    struct wf_msg dec;
    assert_true(wf_decode(&wf_get_response, want, want_len, &dec));
    assert_int_equal(dec.n_items, 2);
    const struct mc_get_item *d = dec.items;
    assert_int_equal(d[0].flags, 0xdeadbeef);
    assert_true(d[0].cas_id == 42);
    assert_int_equal(d[1].expires_in_seconds, -1);
    wf_msg_release(&dec);
}

/* Every truncation of a valid message, and corrupted ones, must be refused
 * (or parsed) without reading out of bounds; ASan checks the bounds. */
static void test_wire_rejects_malformed(void **state)
{
    uint8_t buf[128];
    size_t len = unhex(GOLDEN_SET, buf);
    struct wf_msg dec;
    for (size_t i = 0; i < len; i++) {
        /* Truncating right after an item's end tag leaves a valid message. */
        bool ok = wf_decode(&wf_set_request, buf, i, &dec);
        if (ok)
            wf_msg_release(&dec);
        assert_true(!ok || i == 0 || buf[i - 1] == 0x0c);
    }

    /* An item without its required value. */
    uint8_t no_value[] = {0x0b, 0x12, 0x01, 'k', 0x0c};
    assert_false(wf_decode(&wf_set_request, no_value, sizeof(no_value), &dec));
    /* An end tag for another field number. */
    uint8_t wrong_end[] = {0x0b, 0x12, 0x01, 'k', 0x1a, 0x00, 0x14};
    assert_false(wf_decode(&wf_set_request, wrong_end, sizeof(wrong_end), &dec));
    /* A known field with the wrong wire type (key as a varint). */
    uint8_t wrong_type[] = {0x0b, 0x10, 0x01, 0x1a, 0x00, 0x0c};
    assert_false(wf_decode(&wf_set_request, wrong_type, sizeof(wrong_type), &dec));
    /* A length running past the end. */
    uint8_t long_len[] = {0x0b, 0x12, 0x7f, 'k', 0x0c};
    assert_false(wf_decode(&wf_set_request, long_len, sizeof(long_len), &dec));
    /* Field number 0. */
    uint8_t zero_field[] = {0x00, 0x00};
    assert_false(wf_decode(&wf_set_request, zero_field, sizeof(zero_field), &dec));
    /* A varint of 11 bytes. */
    uint8_t long_varint[] = {0x38, 0xff, 0xff, 0xff, 0xff, 0xff,
                             0xff, 0xff, 0xff, 0xff, 0xff, 0x01};
    assert_false(wf_decode(&wf_set_request, long_varint, sizeof(long_varint), &dec));

    /* Unknown fields are skipped, an unknown nested group included; the
     * AppOverride (field 10) is read past. */
    uint8_t unknown[] = {0x0b, 0x12, 0x01, 'k',  0x1a, 0x01,
                         'v',  0x7b, 0x08, 0x01, 0x7c, /* group 15 { varint 1 } */
                         0x0c, 0x52, 0x02, 0x0a, 0x00};
    assert_true(wf_decode(&wf_set_request, unknown, sizeof(unknown), &dec));
    assert_int_equal(dec.n_items, 1);
    wf_msg_release(&dec);

    /* An unknown group closed by another field's end tag. */
    uint8_t bad_unknown[] = {0x0b, 0x12, 0x01, 'k', 0x1a, 0x01, 'v', 0x7b, 0x84, 0x01, 0x0c};
    assert_false(wf_decode(&wf_set_request, bad_unknown, sizeof(bad_unknown), &dec));

    /* Unknown groups nested past the bound are refused, not recursed. */
    uint8_t deep[2 * (WF_MAX_DEPTH + 2)];
    for (size_t i = 0; i < WF_MAX_DEPTH + 2; i++) {
        deep[i] = 0x7b;                    /* start group 15 */
        deep[sizeof(deep) - 1 - i] = 0x7c; /* end group 15 */
    }
    assert_false(wf_decode(&wf_set_request, deep, sizeof(deep), &dec));
}

/* ---- methods ----------------------------------------------------------- */

static void test_set_get_flags_and_cas_ids(void **state)
{
    void *st = *state;
    struct mc_set_item it = set_item("a", "apple", 0, 0, 0); /* no policy: SET */
    it.present |= WF_BIT(4);
    it.flags = 0xfeedface;
    set_status_t s;
    set_n(st, NULL, &it, 1, &s);
    assert_int_equal(s, STORED);

    const char *keys[] = {"a", "missing", "a"};
    struct got g[3];
    assert_int_equal(get_n(st, NULL, keys, 3, false, g), 2);
    assert_true(g[0].found);
    assert_string_equal(g[0].value, "apple");
    assert_int_equal(g[0].flags, 0xfeedface);
    assert_false(g[0].has_cas); /* only when for_cas */
    assert_false(g[1].found);

    struct got c1 = get1(st, "a");
    assert_true(c1.has_cas);
    assert_true(c1.cas != 0);
    assert_int_equal(set1(st, "a", "apricot"), STORED);
    struct got c2 = get1(st, "a");
    assert_string_equal(c2.value, "apricot");
    assert_true(c2.cas != c1.cas);
    assert_int_equal(c2.flags, 0); /* flags belong to the new item */

    /* A binary key and an empty value. */
    assert_int_equal(set1(st, "", ""), STORED);
    struct got e = get1(st, "");
    assert_true(e.found);
    assert_string_equal(e.value, "");
}

static void test_add_and_replace(void **state)
{
    void *st = *state;
    assert_int_equal(set_full(st, NULL, "k", "1", MC_REPLACE, 0, 0), NOT_STORED);
    assert_false(get1(st, "k").found);
    assert_int_equal(set_full(st, NULL, "k", "1", MC_ADD, 0, 0), STORED);
    assert_int_equal(set_full(st, NULL, "k", "2", MC_ADD, 0, 0), NOT_STORED);
    assert_string_equal(get1(st, "k").value, "1");
    assert_int_equal(set_full(st, NULL, "k", "3", MC_REPLACE, 0, 0), STORED);
    assert_string_equal(get1(st, "k").value, "3");
    /* An unknown policy is an error for that item only. */
    struct mc_set_item items[2] = {set_item("x", "1", 9, 0, 0), set_item("y", "2", MC_SET, 0, 0)};
    set_status_t s[2];
    set_n(st, NULL, items, 2, s);
    assert_int_equal(s[0], SET_ERROR);
    assert_int_equal(s[1], STORED);
    assert_false(get1(st, "x").found);
}

static void test_cas(void **state)
{
    void *st = *state;
    assert_int_equal(set1(st, "c", "v1"), STORED);
    struct got g = get1(st, "c");
    /* Someone else writes in between: the stale id conflicts. */
    assert_int_equal(set1(st, "c", "v2"), STORED);
    assert_int_equal(set_full(st, NULL, "c", "mine", MC_CAS, 0, g.cas), EXISTS);
    assert_string_equal(get1(st, "c").value, "v2");
    /* With the current id it goes through, and the id moves on. */
    struct got g2 = get1(st, "c");
    assert_int_equal(set_full(st, NULL, "c", "mine", MC_CAS, 0, g2.cas), STORED);
    assert_string_equal(get1(st, "c").value, "mine");
    assert_int_equal(set_full(st, NULL, "c", "again", MC_CAS, 0, g2.cas), EXISTS);
    /* CAS on a vanished item is NOT_STORED (ErrNotStored, not a conflict). */
    struct got g3 = get1(st, "c");
    assert_int_equal(del_full(st, NULL, "c", 0), DELETED);
    assert_int_equal(set_full(st, NULL, "c", "x", MC_CAS, 0, g3.cas), NOT_STORED);
    /* CAS without a cas_id cannot succeed. */
    assert_int_equal(set1(st, "c", "v"), STORED);
    assert_int_equal(set_full(st, NULL, "c", "x", MC_CAS, 0, 0), NOT_STORED);
    /* A cas_id from before a flush never matches a later item. */
    struct got g4 = get1(st, "c");
    flush(st);
    assert_int_equal(set1(st, "c", "v"), STORED);
    assert_int_equal(set_full(st, NULL, "c", "x", MC_CAS, 0, g4.cas), EXISTS);
}

static void test_expiration(void **state)
{
    void *st = *state;
    /* Relative seconds. */
    assert_int_equal(set_full(st, NULL, "rel", "v", MC_SET, 10, 0), STORED);
    fake_now = T0 + 9;
    assert_true(get1(st, "rel").found);
    fake_now = T0 + 10;
    assert_false(get1(st, "rel").found);

    /* Absolute Unix time. */
    fake_now = T0;
    assert_int_equal(set_full(st, NULL, "abs", "v", MC_SET, (uint32_t)(T0 + 100), 0), STORED);
    fake_now = T0 + 99;
    assert_true(get1(st, "abs").found);
    fake_now = T0 + 100;
    assert_false(get1(st, "abs").found);

    /* 60 days is still relative (the production rule the Go library relies
     * on), as is anything below 30 years. */
    fake_now = T0;
    uint32_t sixty_days = 60 * 86400;
    assert_int_equal(set_full(st, NULL, "long", "v", MC_SET, sixty_days, 0), STORED);
    uint32_t almost_30y = (uint32_t)MC_RELATIVE_LIMIT - 1;
    assert_int_equal(set_full(st, NULL, "longer", "v", MC_SET, almost_30y, 0), STORED);
    fake_now = T0 + sixty_days - 1;
    assert_true(get1(st, "long").found);
    fake_now = T0 + sixty_days;
    assert_false(get1(st, "long").found);
    assert_true(get1(st, "longer").found);

    /* 0 is never. */
    fake_now = T0;
    assert_int_equal(set1(st, "forever", "v"), STORED);
    fake_now = T0 + 100ll * 365 * 86400;
    assert_true(get1(st, "forever").found);

    /* A time already past is STORED yet gone, and takes the old value with
     * it (the Go library's sub-second expirations). */
    fake_now = T0;
    assert_int_equal(set1(st, "past", "old"), STORED);
    assert_int_equal(set_full(st, NULL, "past", "new", MC_SET, (uint32_t)(T0 - 5), 0), STORED);
    assert_false(get1(st, "past").found);
    /* An expired item no longer blocks ADD. */
    assert_int_equal(set_full(st, NULL, "rel2", "v", MC_SET, 1, 0), STORED);
    fake_now = T0 + 1;
    assert_int_equal(set_full(st, NULL, "rel2", "w", MC_ADD, 0, 0), STORED);
}

static void test_delete_and_lock(void **state)
{
    void *st = *state;
    assert_int_equal(del_full(st, NULL, "nope", 0), NOT_FOUND);
    assert_int_equal(set1(st, "d", "v"), STORED);
    assert_int_equal(del_full(st, NULL, "d", 0), DELETED);
    assert_false(get1(st, "d").found);
    assert_int_equal(set_full(st, NULL, "d", "v", MC_ADD, 0, 0), STORED);

    /* delete_time locks the key: hidden, ADD and REPLACE refused, SET ok. */
    assert_int_equal(del_full(st, NULL, "d", 30), DELETED);
    assert_false(get1(st, "d").found);
    assert_int_equal(del_full(st, NULL, "d", 0), NOT_FOUND);
    assert_int_equal(set_full(st, NULL, "d", "v", MC_ADD, 0, 0), NOT_STORED);
    assert_int_equal(set_full(st, NULL, "d", "v", MC_REPLACE, 0, 0), NOT_STORED);
    fake_now = T0 + 30;
    assert_int_equal(set_full(st, NULL, "d", "v2", MC_ADD, 0, 0), STORED);
    assert_string_equal(get1(st, "d").value, "v2");

    assert_int_equal(del_full(st, NULL, "d", 30), DELETED);
    assert_int_equal(set1(st, "d", "v3"), STORED);
    assert_string_equal(get1(st, "d").value, "v3");

    /* A key over the limit refuses the whole call. */
    char longkey[MC_MAX_KEY + 2];
    memset(longkey, 'k', sizeof(longkey) - 1);
    longkey[sizeof(longkey) - 1] = 0;
    struct mc_delete_item items[2] = {{.present = WF_BIT(2), .key = lit("d")},
                                      {.present = WF_BIT(2), .key = lit(longkey)}};
    struct wf_msg msg = {.items = items, .n_items = 2};
    size_t len;
    uint8_t *buf = wf_encode(&wf_delete_request, &msg, &len);
    struct af_result res;
    call(st, "Delete", buf, len, &res);
    free(buf);
    assert_int_equal(res.kind, AF_RESULT_APP_ERROR);
    assert_int_equal(res.code, ERR_INVALID_VALUE);
    assert_null(res.response);
    result_release(&res);
    assert_true(get1(st, "d").found);
}

static void test_increment(void **state)
{
    void *st = *state;
    struct incr r;
    /* A miss without initial_value: no new_value (Go's ErrCacheMiss). */
    assert_int_equal(incr_full(st, NULL, "n", 1, false, false, 0, &r), 0);
    assert_false(r.has_new_value);
    assert_int_equal(r.status, INCR_STATUS_NOT_CHANGED);
    assert_false(get1(st, "n").found);

    /* initial_value populates, then the delta applies. */
    assert_int_equal(incr_full(st, NULL, "n", 5, false, true, 10, &r), 0);
    assert_true(r.has_new_value);
    assert_true(r.new_value == 15);
    assert_int_equal(r.status, INCR_STATUS_OK);
    assert_string_equal(get1(st, "n").value, "15");
    assert_int_equal(incr_full(st, NULL, "n", 1, false, true, 1000, &r), 0);
    assert_true(r.new_value == 16); /* initial_value ignored when present */

    /* Decrement clamps at zero. */
    assert_int_equal(incr_full(st, NULL, "n", 100, true, false, 0, &r), 0);
    assert_true(r.new_value == 0);
    assert_string_equal(get1(st, "n").value, "0");

    /* Overflow wraps modulo 2^64. */
    assert_int_equal(set1(st, "big", "18446744073709551615"), STORED);
    assert_int_equal(incr_full(st, NULL, "big", 2, false, false, 0, &r), 0);
    assert_true(r.new_value == 1);
    assert_string_equal(get1(st, "big").value, "1");

    /* Growing by a digit keeps flags and expiration, and changes the cas. */
    struct mc_set_item it = set_item("nine", "9", MC_SET, 50, 0);
    it.present |= WF_BIT(4);
    it.flags = 77;
    set_status_t s;
    set_n(st, NULL, &it, 1, &s);
    struct got before = get1(st, "nine");
    assert_int_equal(incr_full(st, NULL, "nine", 1, false, false, 0, &r), 0);
    assert_true(r.new_value == 10);
    struct got after = get1(st, "nine");
    assert_string_equal(after.value, "10");
    assert_int_equal(after.flags, 77);
    assert_true(after.cas != before.cas);
    assert_int_equal(set_full(st, NULL, "nine", "x", MC_CAS, 0, before.cas), EXISTS);
    fake_now = T0 + 50;
    assert_false(get1(st, "nine").found);
    fake_now = T0;

    /* Same width: rewritten in place, cas still changes. */
    assert_int_equal(set1(st, "w", "41"), STORED);
    struct got w0 = get1(st, "w");
    assert_int_equal(incr_full(st, NULL, "w", 1, false, false, 0, &r), 0);
    assert_true(r.new_value == 42);
    struct got w1 = get1(st, "w");
    assert_string_equal(w1.value, "42");
    assert_true(w1.cas != w0.cas);
    assert_int_equal(set1(st, "sp", " 41 "), STORED); /* surrounding spaces parse */
    assert_int_equal(incr_full(st, NULL, "sp", 1, false, false, 0, &r), 0);
    assert_true(r.new_value == 42);

    /* Not a number: an application error, value untouched. */
    assert_int_equal(set1(st, "s", "abc"), STORED);
    assert_int_equal(incr_full(st, NULL, "s", 1, false, false, 0, &r), ERR_UNSPECIFIED);
    assert_string_equal(get1(st, "s").value, "abc");
    assert_int_equal(set1(st, "neg", "-1"), STORED);
    assert_int_equal(incr_full(st, NULL, "neg", 1, false, false, 0, &r), ERR_UNSPECIFIED);
    assert_int_equal(set1(st, "huge", "18446744073709551616"), STORED);
    assert_int_equal(incr_full(st, NULL, "huge", 1, false, false, 0, &r), ERR_UNSPECIFIED);
    assert_int_equal(set1(st, "empty", ""), STORED);
    assert_int_equal(incr_full(st, NULL, "empty", 1, false, false, 0, &r), ERR_UNSPECIFIED);

    /* A locked key counts as missing; initial_value replaces it. */
    assert_int_equal(del_full(st, NULL, "n", 60), DELETED);
    assert_int_equal(incr_full(st, NULL, "n", 1, false, false, 0, &r), 0);
    assert_false(r.has_new_value);
    assert_int_equal(incr_full(st, NULL, "n", 1, false, true, 7, &r), 0);
    assert_true(r.new_value == 8);

    /* Flags of a created counter come from initial_flags. */
    Af__Memcache__MemcacheIncrementRequest req = AF__MEMCACHE__MEMCACHE_INCREMENT_REQUEST__INIT;
    req.key = (ProtobufCBinaryData){2, (uint8_t *)"fl"};
    req.has_initial_value = true;
    req.has_initial_flags = true;
    req.initial_flags = 5;
    struct af_result res;
    call_msg(st, "Increment", &req.base, &res);
    assert_int_equal(res.kind, AF_RESULT_OK);
    result_release(&res);
    struct got fl = get1(st, "fl");
    assert_string_equal(fl.value, "1"); /* default delta 1 */
    assert_int_equal(fl.flags, 5);
}

static void test_batch_increment(void **state)
{
    void *st = *state;
    assert_int_equal(set_full(st, "b", "num", "5", MC_SET, 0, 0), STORED);
    assert_int_equal(set_full(st, "b", "str", "x", MC_SET, 0, 0), STORED);
    assert_int_equal(set1(st, "num", "100"), STORED); /* other namespace */

    char longkey[MC_MAX_KEY + 2];
    memset(longkey, 'k', sizeof(longkey) - 1);
    longkey[sizeof(longkey) - 1] = 0;
    const char *keys[] = {"num", "missing", "str", "new", longkey};
    Af__Memcache__MemcacheIncrementRequest items[5];
    Af__Memcache__MemcacheIncrementRequest *ptrs[5];
    for (size_t i = 0; i < 5; i++) {
        af__memcache__memcache_increment_request__init(&items[i]);
        items[i].key = (ProtobufCBinaryData){strlen(keys[i]), (uint8_t *)keys[i]};
        items[i].has_delta = true;
        items[i].delta = 3;
        ptrs[i] = &items[i];
    }
    items[3].has_initial_value = true;
    items[3].initial_value = 1;
    /* The item's own namespace is ignored in favour of the batch's. */
    items[0].name_space = "elsewhere";
    Af__Memcache__MemcacheBatchIncrementRequest req =
        AF__MEMCACHE__MEMCACHE_BATCH_INCREMENT_REQUEST__INIT;
    req.name_space = "b";
    req.n_item = 5;
    req.item = ptrs;
    struct af_result res;
    call_msg(st, "BatchIncrement", &req.base, &res);
    assert_int_equal(res.kind, AF_RESULT_OK);
    Af__Memcache__MemcacheBatchIncrementResponse *r =
        af__memcache__memcache_batch_increment_response__unpack(NULL, res.response_len,
                                                                res.response);
    assert_non_null(r);
    assert_int_equal(r->n_item, 5);
    assert_int_equal(r->item[0]->increment_status, INCR_STATUS_OK);
    assert_true(r->item[0]->new_value == 8);
    assert_int_equal(r->item[1]->increment_status, INCR_STATUS_NOT_CHANGED);
    assert_false(r->item[1]->has_new_value);
    assert_int_equal(r->item[2]->increment_status, INCR_STATUS_ERROR);
    assert_false(r->item[2]->has_new_value);
    assert_int_equal(r->item[3]->increment_status, INCR_STATUS_OK);
    assert_true(r->item[3]->new_value == 4);
    assert_int_equal(r->item[4]->increment_status, INCR_STATUS_ERROR);
    af__memcache__memcache_batch_increment_response__free_unpacked(r, NULL);
    result_release(&res);
    assert_string_equal(get1(st, "num").value, "100");
    assert_string_equal(get_ns(st, "b", "num").value, "8");
}

static void test_namespaces(void **state)
{
    void *st = *state;
    assert_int_equal(set_full(st, "a", "k", "in-a", MC_SET, 0, 0), STORED);
    assert_int_equal(set_full(st, "b", "k", "in-b", MC_SET, 0, 0), STORED);
    assert_false(get1(st, "k").found);
    assert_string_equal(get_ns(st, "a", "k").value, "in-a");
    assert_string_equal(get_ns(st, "b", "k").value, "in-b");
    /* ("ab", "c") and ("a", "bc") are different items. */
    assert_int_equal(set_full(st, "ab", "c", "1", MC_SET, 0, 0), STORED);
    assert_false(get_ns(st, "a", "bc").found);
    /* An empty name_space is the default namespace, as is none. */
    assert_int_equal(set_full(st, "", "d", "v", MC_SET, 0, 0), STORED);
    assert_true(get1(st, "d").found);

    assert_int_equal(del_full(st, "a", "k", 0), DELETED);
    assert_false(get_ns(st, "a", "k").found);
    assert_true(get_ns(st, "b", "k").found);
    struct incr r;
    assert_int_equal(incr_full(st, "a", "cnt", 1, false, true, 0, &r), 0);
    assert_false(get_ns(st, "b", "cnt").found);

    /* FlushAll empties every namespace. */
    flush(st);
    assert_false(get_ns(st, "b", "k").found);
    assert_false(get_ns(st, "a", "cnt").found);

    /* A namespace longer than 100 bytes is refused. */
    char ns[MC_MAX_NAMESPACE + 2];
    memset(ns, 'n', sizeof(ns) - 1);
    ns[sizeof(ns) - 1] = 0;
    struct mc_set_item it = set_item("k", "v", MC_SET, 0, 0);
    struct wf_msg msg = {.items = &it, .n_items = 1, .has_name_space = true, .name_space = lit(ns)};
    size_t len;
    uint8_t *buf = wf_encode(&wf_set_request, &msg, &len);
    struct af_result res;
    call(st, "Set", buf, len, &res);
    free(buf);
    assert_int_equal(res.kind, AF_RESULT_APP_ERROR);
    assert_int_equal(res.code, ERR_INVALID_VALUE);
    result_release(&res);
    Af__Memcache__MemcacheGetRequest get = AF__MEMCACHE__MEMCACHE_GET_REQUEST__INIT;
    get.name_space = ns;
    call_msg(st, "Get", &get.base, &res);
    assert_int_equal(res.kind, AF_RESULT_APP_ERROR);
    assert_int_equal(res.code, ERR_INVALID_VALUE);
    result_release(&res);
    ns[MC_MAX_NAMESPACE] = 0; /* exactly 100 is fine */
    assert_int_equal(set_full(st, ns, "k", "v", MC_SET, 0, 0), STORED);
    /* NUL inside a namespace could never be read back. */
    uint8_t nul_ns[] = {0x0b, 0x12, 0x01, 'k', 0x1a, 0x00, 0x0c, 0x3a, 0x03, 'a', 0, 'b'};
    call(st, "Set", nul_ns, sizeof(nul_ns), &res);
    assert_int_equal(res.kind, AF_RESULT_APP_ERROR);
    result_release(&res);
}

static void test_stats(void **state)
{
    void *st = *state;
    Af__Memcache__MergedNamespaceStats s = stats(st);
    assert_true(s.hits == 0 && s.misses == 0 && s.items == 0 && s.bytes == 0);
    assert_int_equal(s.oldest_item_age, 0);

    assert_int_equal(set1(st, "k1", "12345"), STORED); /* 7 bytes */
    fake_now = T0 + 5;
    assert_int_equal(set_full(st, "x", "k2", "1", MC_SET, 0, 0), STORED); /* 3 bytes */
    fake_now = T0 + 20;
    assert_true(get1(st, "k1").found);
    assert_false(get1(st, "zz").found);
    assert_true(get1(st, "k1").found);
    s = stats(st);
    assert_true(s.hits == 2);
    assert_true(s.misses == 1);
    assert_true(s.byte_hits == 14);
    assert_true(s.items == 2);
    assert_true(s.bytes == 10);
    /* The least recently used item is k2, last touched at T0 + 5. */
    assert_int_equal(s.oldest_item_age, 15);

    /* FlushAll drops items but keeps the counters; clear() resets both. */
    flush(st);
    s = stats(st);
    assert_true(s.items == 0 && s.bytes == 0 && s.hits == 2);
    assert_int_equal(s.oldest_item_age, 0);
    af_service_memcache.clear(st);
    s = stats(st);
    assert_true(s.hits == 0 && s.misses == 0 && s.byte_hits == 0);
}

static void test_lru_eviction(void **state)
{
    /* 100 bytes: three 30-byte items fit, a fourth evicts the oldest. */
    void *st = new_cache(100);
    char v[29];
    memset(v, 'v', 28);
    v[28] = 0;
    assert_int_equal(set1(st, "k1", v), STORED);
    assert_int_equal(set1(st, "k2", v), STORED);
    assert_int_equal(set1(st, "k3", v), STORED);
    assert_true(get1(st, "k1").found); /* k2 is now the oldest */
    assert_int_equal(set1(st, "k4", v), STORED);
    assert_false(get1(st, "k2").found);
    assert_true(get1(st, "k1").found);
    assert_true(get1(st, "k3").found);
    assert_true(get1(st, "k4").found);
    Af__Memcache__MergedNamespaceStats s = stats(st);
    assert_true(s.items == 3);
    assert_true(s.bytes == 90);

    /* Replacing an item frees its old bytes first: no eviction needed. */
    assert_int_equal(set1(st, "k3", v), STORED);
    assert_true(stats(st).items == 3);

    /* A larger item evicts as many as it takes. */
    char big[71];
    memset(big, 'b', 68);
    big[68] = 0;
    assert_int_equal(set1(st, "kb", big), STORED); /* 70 bytes */
    s = stats(st);
    assert_true(s.bytes <= 100);
    assert_true(s.items == 2);
    assert_true(get1(st, "kb").found);
    assert_true(get1(st, "k3").found);

    /* An item bigger than the whole cap is an error, and evicts nothing. */
    char huge[102];
    memset(huge, 'h', 100);
    huge[100] = 0;
    assert_int_equal(set1(st, "kh", huge), SET_ERROR);
    assert_true(stats(st).items == 2);

    /* A counter created under pressure evicts too. */
    struct incr r;
    assert_int_equal(incr_full(st, NULL, "cnt", 1, false, true, 0, &r), 0);
    assert_true(r.new_value == 1);
    assert_true(stats(st).bytes <= 100);
    af_service_memcache.destroy(st);

    /* Under a cap smaller than a new counter, Increment fails instead of
     * storing past the cap. */
    st = new_cache(3);
    assert_int_equal(incr_full(st, NULL, "abc", 1, false, true, 5, &r), ERR_UNSPECIFIED);
    assert_true(stats(st).items == 0);
    af_service_memcache.destroy(st);
}

static void test_limits(void **state)
{
    void *st = *state;
    /* Keys: 250 bytes pass, 251 do not. */
    char key[MC_MAX_KEY + 2];
    memset(key, 'k', MC_MAX_KEY + 1);
    key[MC_MAX_KEY] = 0;
    assert_int_equal(set1(st, key, "v"), STORED);
    assert_true(get1(st, key).found);
    key[MC_MAX_KEY] = 'k';
    key[MC_MAX_KEY + 1] = 0;
    assert_int_equal(set1(st, key, "v"), SET_ERROR);
    const char *keys[] = {key};
    Af__Memcache__MemcacheGetRequest get = AF__MEMCACHE__MEMCACHE_GET_REQUEST__INIT;
    ProtobufCBinaryData k = {strlen(keys[0]), (uint8_t *)keys[0]};
    get.n_key = 1;
    get.key = &k;
    struct af_result res;
    call_msg(st, "Get", &get.base, &res);
    assert_int_equal(res.kind, AF_RESULT_APP_ERROR);
    assert_int_equal(res.code, ERR_INVALID_VALUE);
    result_release(&res);
    struct incr r;
    assert_int_equal(incr_full(st, NULL, key, 1, false, true, 0, &r), ERR_INVALID_VALUE);

    /* Items: key + value up to 1 MiB. */
    size_t vlen = MC_MAX_ITEM - 1; /* with the 1-byte key: exactly 1 MiB */
    char *value = af_xmalloc(vlen + 2);
    memset(value, 'v', vlen + 1);
    value[vlen] = 0;
    struct mc_set_item items[2] = {set_item("a", value, MC_SET, 0, 0),
                                   set_item("b", value, MC_SET, 0, 0)};
    items[1].value.len = vlen + 1; /* one byte over */
    set_status_t s[2];
    set_n(st, NULL, items, 2, s);
    assert_int_equal(s[0], STORED);
    assert_int_equal(s[1], SET_ERROR);
    Af__Memcache__MergedNamespaceStats stt = stats(st);
    assert_true(stt.bytes == MC_MAX_ITEM + MC_MAX_KEY + 1);
    free(value);
}

static void test_parse_errors(void **state)
{
    void *st = *state;
    static const char *const methods[] = {
        "Get", "Set", "Delete", "Increment", "BatchIncrement", "FlushAll", "Stats"};
    /* A truncated length-delimited field 1 is invalid in every request. */
    uint8_t junk[] = {0x0a, 0x05, 'x'};
    for (size_t i = 0; i < sizeof(methods) / sizeof(methods[0]); i++) {
        struct af_result res;
        call(st, methods[i], junk, sizeof(junk), &res);
        assert_int_equal(res.kind, AF_RESULT_RPC_ERROR);
        assert_int_equal(res.code, AF_RPC_PARSE_ERROR);
        assert_non_null(res.detail);
        result_release(&res);
    }
    /* Increment without its required key. */
    struct af_result res;
    call(st, "Increment", NULL, 0, &res);
    assert_int_equal(res.kind, AF_RESULT_RPC_ERROR);
    result_release(&res);
    /* Empty Get, Set and Delete are valid and empty. */
    call(st, "Get", NULL, 0, &res);
    assert_int_equal(res.kind, AF_RESULT_OK);
    assert_int_equal(res.response_len, 0);
    result_release(&res);
    call(st, "Set", NULL, 0, &res);
    assert_int_equal(res.kind, AF_RESULT_OK);
    result_release(&res);
    call(st, "Delete", NULL, 0, &res);
    assert_int_equal(res.kind, AF_RESULT_OK);
    result_release(&res);
}

/* Enough items to double the table several times; all stay reachable. */
static void test_table_growth(void **state)
{
    void *st = *state;
    char key[32], val[32];
    for (int i = 0; i < 5000; i++) {
        snprintf(key, sizeof(key), "key%d", i);
        snprintf(val, sizeof(val), "%d", i);
        assert_int_equal(set1(st, key, val), STORED);
    }
    struct mc_cache *c = st;
    assert_true(c->n_buckets >= 5000);
    for (int i = 0; i < 5000; i += 7) {
        snprintf(key, sizeof(key), "key%d", i);
        snprintf(val, sizeof(val), "%d", i);
        struct got g = get1(st, key);
        assert_true(g.found);
        assert_string_equal(g.value, val);
    }
    assert_true(stats(st).items == 5000);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_wire_set_request_matches_go),
        cmocka_unit_test(test_wire_delete_request_matches_go),
        cmocka_unit_test(test_wire_get_response_matches_go),
        cmocka_unit_test(test_wire_rejects_malformed),
        cmocka_unit_test_setup_teardown(test_set_get_flags_and_cas_ids, setup_default, teardown),
        cmocka_unit_test_setup_teardown(test_add_and_replace, setup_default, teardown),
        cmocka_unit_test_setup_teardown(test_cas, setup_default, teardown),
        cmocka_unit_test_setup_teardown(test_expiration, setup_default, teardown),
        cmocka_unit_test_setup_teardown(test_delete_and_lock, setup_default, teardown),
        cmocka_unit_test_setup_teardown(test_increment, setup_default, teardown),
        cmocka_unit_test_setup_teardown(test_batch_increment, setup_default, teardown),
        cmocka_unit_test_setup_teardown(test_namespaces, setup_default, teardown),
        cmocka_unit_test_setup_teardown(test_stats, setup_default, teardown),
        cmocka_unit_test(test_lru_eviction),
        cmocka_unit_test_setup_teardown(test_limits, setup_default, teardown),
        cmocka_unit_test_setup_teardown(test_parse_errors, setup_default, teardown),
        cmocka_unit_test_setup_teardown(test_table_growth, setup_default, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
