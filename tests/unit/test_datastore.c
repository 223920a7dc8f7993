/*
 * Unit tests of the datastore_v3 service through its method table, against
 * a real SQLite file in a temporary directory: every method, the errors a
 * client library never provokes (bad keys, garbage, unsupported query
 * shapes), ids across a restart of the service, transactions that
 * conflict, cursors, and clear(). Built with SANITIZE=1 this is also the
 * leak check of the service code.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "apiserver/service.h"
#include "apiserver/services/datastore_key.h"
#include "apiserver/services/datastore_wire.h"

extern const struct af_service af_service_datastore_v3;

#define BAD_REQUEST AF__DATASTORE__ERROR__ERROR_CODE__BAD_REQUEST
#define CONCURRENT AF__DATASTORE__ERROR__ERROR_CODE__CONCURRENT_TRANSACTION

struct fixture {
    char dir[64];
    char path[128];
    void *ds;
};

static void *start(struct fixture *f, bool clear)
{
    struct af_api_options o = {.datastore_path = f->path, .clear_datastore = clear};
    f->ds = af_service_datastore_v3.create(&o);
    return f->ds;
}

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof(*f));
    strcpy(f->dir, "/tmp/af-ds-test-XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    snprintf(f->path, sizeof(f->path), "%s/ds.sqlite3", f->dir);
    start(f, false);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    af_service_datastore_v3.destroy(f->ds);
    char cmd[200];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", f->dir);
    assert_int_equal(system(cmd), 0);
    free(f);
    return 0;
}

static void result_release(struct af_result *res)
{
    free(res->detail);
    free(res->response);
    memset(res, 0, sizeof(*res));
}

/* Runs method on the packed message m (official bytes). */
static void call_raw(void *ds, const char *method, const uint8_t *req, size_t len,
                     struct af_result *res)
{
    memset(res, 0xa5, sizeof(*res));
    for (const struct af_method *m = af_service_datastore_v3.methods; m->name; m++) {
        if (strcmp(m->name, method) == 0) {
            struct af_call c = {"datastore_v3", method, req, len, "", 0};
            m->fn(ds, &c, res);
            return;
        }
    }
    fail_msg("no method %s", method);
}

static void call(void *ds, const char *method, const ProtobufCMessage *m, struct af_result *res)
{
    size_t n;
    uint8_t *req = af_ds_wire_pack(m, &n);
    call_raw(ds, method, req, n, res);
    free(req);
}

static void expect_app_error(struct af_result *res, int code)
{
    if (res->kind != AF_RESULT_APP_ERROR || res->code != code)
        fail_msg("want app error %d, got kind %d code %d (%s)", code, res->kind, res->code,
                 res->detail ? res->detail : "");
    result_release(res);
}

/* ---- message builders (everything malloc'd, freed with free_unpacked) --- */

static ds_reference_t *key(const char *kind, int64_t id, const char *name)
{
    ds_reference_t *r = calloc(1, sizeof(*r));
    af__datastore__reference__init(r);
    r->app = strdup("dev~app");
    r->path = calloc(1, sizeof(*r->path));
    af__datastore__path__init(r->path);
    r->path->element = calloc(4, sizeof(*r->path->element));
    ds_element_t *e = calloc(1, sizeof(*e));
    af__datastore__path__element__init(e);
    e->type = strdup(kind);
    e->has_id = id != 0;
    e->id = id;
    e->name = name ? strdup(name) : NULL;
    r->path->element[r->path->n_element++] = e;
    return r;
}

/* An entity with one indexed int property "n" and, when text is given, an
 * unindexed text property. */
static ds_entity_t *entity(ds_reference_t *k, int64_t n, const char *text)
{
    ds_entity_t *e = calloc(1, sizeof(*e));
    af__datastore__entity_proto__init(e);
    e->key = k;
    e->entity_group = calloc(1, sizeof(*e->entity_group));
    af__datastore__path__init(e->entity_group);
    e->property = calloc(1, sizeof(*e->property));
    ds_property_t *p = calloc(1, sizeof(*p));
    af__datastore__property__init(p);
    p->name = strdup("n");
    p->value = calloc(1, sizeof(*p->value));
    af__datastore__property_value__init(p->value);
    p->value->has_int64_value = true;
    p->value->int64_value = n;
    e->property[e->n_property++] = p;
    if (text) {
        e->raw_property = calloc(1, sizeof(*e->raw_property));
        ds_property_t *t = calloc(1, sizeof(*t));
        af__datastore__property__init(t);
        t->name = strdup("text");
        t->value = calloc(1, sizeof(*t->value));
        af__datastore__property_value__init(t->value);
        t->value->has_string_value = true;
        t->value->string_value.len = strlen(text);
        t->value->string_value.data = (uint8_t *)strdup(text);
        t->has_meaning = true;
        t->meaning = AF__DATASTORE__PROPERTY__MEANING__TEXT;
        e->raw_property[e->n_raw_property++] = t;
    }
    return e;
}

static Af__Datastore__Transaction *txn_of(struct af_result *res)
{
    assert_int_equal(res->kind, AF_RESULT_OK);
    Af__Datastore__Transaction *t = (Af__Datastore__Transaction *)af_ds_wire_unpack(
        &af__datastore__transaction__descriptor, res->response, res->response_len);
    assert_non_null(t);
    result_release(res);
    return t;
}

/* Puts one entity (in txn when given); returns the key's last id. */
static int64_t put(void *ds, ds_entity_t *e, Af__Datastore__Transaction *txn, int want_error)
{
    Af__Datastore__PutRequest req = AF__DATASTORE__PUT_REQUEST__INIT;
    req.entity = &e;
    req.n_entity = 1;
    req.transaction = txn;
    struct af_result res;
    call(ds, "Put", &req.base, &res);
    protobuf_c_message_free_unpacked(&e->base, NULL);
    if (want_error) {
        expect_app_error(&res, want_error);
        return 0;
    }
    if (res.kind != AF_RESULT_OK)
        fail_msg("Put: %s", res.detail);
    Af__Datastore__PutResponse *r = (Af__Datastore__PutResponse *)af_ds_wire_unpack(
        &af__datastore__put_response__descriptor, res.response, res.response_len);
    assert_non_null(r);
    assert_int_equal(r->n_key, 1);
    ds_path_t *p = r->key[0]->path;
    int64_t id = p->element[p->n_element - 1]->id;
    protobuf_c_message_free_unpacked(&r->base, NULL);
    result_release(&res);
    return id;
}

/* Gets one key: the value of "n", or -1 when missing. */
static int64_t get(void *ds, ds_reference_t *k, Af__Datastore__Transaction *txn)
{
    Af__Datastore__GetRequest req = AF__DATASTORE__GET_REQUEST__INIT;
    req.key = &k;
    req.n_key = 1;
    req.transaction = txn;
    struct af_result res;
    call(ds, "Get", &req.base, &res);
    protobuf_c_message_free_unpacked(&k->base, NULL);
    if (res.kind != AF_RESULT_OK)
        fail_msg("Get: %s", res.detail);
    Af__Datastore__GetResponse *r = (Af__Datastore__GetResponse *)af_ds_wire_unpack(
        &af__datastore__get_response__descriptor, res.response, res.response_len);
    assert_non_null(r);
    assert_int_equal(r->n_entity, 1);
    int64_t v = -1;
    if (r->entity[0]->entity) {
        assert_null(r->entity[0]->key);
        v = r->entity[0]->entity->property[0]->value->int64_value;
    } else {
        assert_non_null(r->entity[0]->key);
    }
    protobuf_c_message_free_unpacked(&r->base, NULL);
    result_release(&res);
    return v;
}

static Af__Datastore__Transaction *begin(void *ds, bool xg)
{
    Af__Datastore__BeginTransactionRequest req = AF__DATASTORE__BEGIN_TRANSACTION_REQUEST__INIT;
    req.app = "dev~app";
    req.has_allow_multiple_eg = xg;
    req.allow_multiple_eg = xg;
    struct af_result res;
    call(ds, "BeginTransaction", &req.base, &res);
    return txn_of(&res);
}

/* ---- tests -------------------------------------------------------------- */

static void test_put_get_delete(void **state)
{
    struct fixture *f = *state;
    int64_t id = put(f->ds, entity(key("K", 0, NULL), 42, "some text"), NULL, 0);
    assert_true(id > 0);
    assert_int_equal(get(f->ds, key("K", id, NULL), NULL), 42);
    assert_int_equal(get(f->ds, key("K", id + 1, NULL), NULL), -1);
    put(f->ds, entity(key("K", id, NULL), 43, NULL), NULL, 0);
    assert_int_equal(get(f->ds, key("K", id, NULL), NULL), 43);

    ds_reference_t *k = key("K", id, NULL);
    Af__Datastore__DeleteRequest del = AF__DATASTORE__DELETE_REQUEST__INIT;
    del.key = &k;
    del.n_key = 1;
    struct af_result res;
    call(f->ds, "Delete", &del.base, &res);
    assert_int_equal(res.kind, AF_RESULT_OK);
    result_release(&res);
    protobuf_c_message_free_unpacked(&k->base, NULL);
    assert_int_equal(get(f->ds, key("K", id, NULL), NULL), -1);
}

static void test_bad_requests(void **state)
{
    struct fixture *f = *state;
    put(f->ds, entity(key("", 1, NULL), 1, NULL), NULL, BAD_REQUEST);
    put(f->ds, entity(key("K", 0, ""), 1, NULL), NULL, BAD_REQUEST);
    ds_reference_t *zero = key("K", 0, NULL);
    zero->path->element[0]->has_id = true; /* id 0 on the wire */
    put(f->ds, entity(zero, 1, NULL), NULL, BAD_REQUEST);
    /* An incomplete parent. */
    ds_reference_t *k = key("P", 0, NULL);
    ds_element_t *child = calloc(1, sizeof(*child));
    af__datastore__path__element__init(child);
    child->type = strdup("C");
    child->name = strdup("c");
    k->path->element[k->path->n_element++] = child;
    put(f->ds, entity(k, 1, NULL), NULL, BAD_REQUEST);

    /* Over 1 MiB. */
    char *big = malloc((1 << 20) + 1);
    memset(big, 'x', 1 << 20);
    big[1 << 20] = 0;
    put(f->ds, entity(key("K", 1, NULL), 1, big), NULL, BAD_REQUEST);
    free(big);

    /* Get and Delete of an incomplete key. */
    ds_reference_t *inc = key("K", 0, NULL);
    Af__Datastore__GetRequest g = AF__DATASTORE__GET_REQUEST__INIT;
    g.key = &inc;
    g.n_key = 1;
    struct af_result res;
    call(f->ds, "Get", &g.base, &res);
    expect_app_error(&res, BAD_REQUEST);
    protobuf_c_message_free_unpacked(&inc->base, NULL);

    /* Garbage. */
    static const uint8_t garbage[] = {0x0b, 0x0b, 0x0b, 0xff};
    const char *methods[] = {"Get",    "Put",      "Delete",           "RunQuery",   "Next",
                             "Commit", "Rollback", "BeginTransaction", "AllocateIds"};
    for (size_t i = 0; i < sizeof(methods) / sizeof(methods[0]); i++) {
        call_raw(f->ds, methods[i], garbage, sizeof(garbage), &res);
        assert_int_equal(res.kind, AF_RESULT_RPC_ERROR);
        assert_int_equal(res.code, AF_RPC_PARSE_ERROR);
        result_release(&res);
    }
    /* An unknown transaction. */
    Af__Datastore__Transaction t = AF__DATASTORE__TRANSACTION__INIT;
    t.handle = 12345;
    t.app = "dev~app";
    call(f->ds, "Commit", &t.base, &res);
    expect_app_error(&res, BAD_REQUEST);
}

static void test_unsupported_queries(void **state)
{
    struct fixture *f = *state;
    struct af_result res;
    Af__Datastore__Query q = AF__DATASTORE__QUERY__INIT;
    q.app = "dev~app";
    q.kind = "K";
    q.search_query = "text";
    call(f->ds, "RunQuery", &q.base, &res);
    assert_non_null(strstr(res.detail, "search"));
    expect_app_error(&res, BAD_REQUEST);

    q.search_query = NULL;
    q.kind = "__property__";
    call(f->ds, "RunQuery", &q.base, &res);
    assert_non_null(strstr(res.detail, "metadata"));
    expect_app_error(&res, BAD_REQUEST);

    /* IN is not an index scan. */
    q.kind = "K";
    Af__Datastore__Query__Filter flt = AF__DATASTORE__QUERY__FILTER__INIT;
    ds_property_t p = AF__DATASTORE__PROPERTY__INIT;
    ds_value_t v = AF__DATASTORE__PROPERTY_VALUE__INIT;
    ds_property_t *pp = &p;
    Af__Datastore__Query__Filter *fp = &flt;
    p.name = "n";
    p.value = &v;
    flt.op = AF__DATASTORE__QUERY__FILTER__OPERATOR__IN;
    flt.property = &pp;
    flt.n_property = 1;
    q.filter = &fp;
    q.n_filter = 1;
    call(f->ds, "RunQuery", &q.base, &res);
    assert_non_null(strstr(res.detail, "operator"));
    expect_app_error(&res, BAD_REQUEST);
}

/* Runs a keys-only query on kind "K" ordered by n, in batches of `count`,
 * and returns the number of results; checks the order. */
static int run_ordered(void *ds, int count, bool desc)
{
    Af__Datastore__Query q = AF__DATASTORE__QUERY__INIT;
    Af__Datastore__Query__Order o = AF__DATASTORE__QUERY__ORDER__INIT;
    Af__Datastore__Query__Order *op = &o;
    o.property = "n";
    o.has_direction = desc;
    o.direction = AF__DATASTORE__QUERY__ORDER__DIRECTION__DESCENDING;
    q.app = "dev~app";
    q.kind = "K";
    q.order = &op;
    q.n_order = 1;
    q.has_count = true;
    q.count = count;
    q.has_compile = true;
    q.compile = true;
    struct af_result res;
    call(ds, "RunQuery", &q.base, &res);
    int total = 0;
    int64_t prev = desc ? INT64_MAX : INT64_MIN;
    for (;;) {
        assert_int_equal(res.kind, AF_RESULT_OK);
        Af__Datastore__QueryResult *r = (Af__Datastore__QueryResult *)af_ds_wire_unpack(
            &af__datastore__query_result__descriptor, res.response, res.response_len);
        assert_non_null(r);
        result_release(&res);
        assert_true(r->n_result <= (size_t)count);
        for (size_t i = 0; i < r->n_result; i++) {
            int64_t n = r->result[i]->property[0]->value->int64_value;
            assert_true(desc ? n <= prev : n >= prev);
            prev = n;
            total++;
        }
        assert_non_null(r->compiled_cursor);
        bool more = r->more_results;
        Af__Datastore__NextRequest next = AF__DATASTORE__NEXT_REQUEST__INIT;
        next.cursor = r->cursor;
        next.has_count = true;
        next.count = count;
        next.has_compile = true;
        next.compile = true;
        if (more)
            call(ds, "Next", &next.base, &res);
        else
            call(ds, "DeleteCursor", &r->cursor->base, &res);
        protobuf_c_message_free_unpacked(&r->base, NULL);
        if (!more) {
            result_release(&res);
            break;
        }
    }
    return total;
}

static void test_queries_and_cursors(void **state)
{
    struct fixture *f = *state;
    for (int i = 0; i < 30; i++)
        put(f->ds, entity(key("K", 0, NULL), (i * 7) % 11, NULL), NULL, 0);
    assert_int_equal(run_ordered(f->ds, 4, false), 30);
    assert_int_equal(run_ordered(f->ds, 7, true), 30);
    assert_int_equal(run_ordered(f->ds, 1000, false), 30);
}

static void test_ids_survive_restart(void **state)
{
    struct fixture *f = *state;
    int64_t a = put(f->ds, entity(key("K", 0, NULL), 1, NULL), NULL, 0);
    Af__Datastore__AllocateIdsRequest req = AF__DATASTORE__ALLOCATE_IDS_REQUEST__INIT;
    req.model_key = key("K", 0, NULL);
    free(req.model_key->app);
    req.model_key->app = strdup(""); /* as the Go library sends it */
    req.has_size = true;
    req.size = 10;
    struct af_result res;
    call(f->ds, "AllocateIds", &req.base, &res);
    protobuf_c_message_free_unpacked(&req.model_key->base, NULL);
    assert_int_equal(res.kind, AF_RESULT_OK);
    Af__Datastore__AllocateIdsResponse *r = (Af__Datastore__AllocateIdsResponse *)af_ds_wire_unpack(
        &af__datastore__allocate_ids_response__descriptor, res.response, res.response_len);
    result_release(&res);
    assert_true(r->start > a);
    assert_int_equal(r->end - r->start, 9);
    int64_t end = r->end;
    protobuf_c_message_free_unpacked(&r->base, NULL);

    /* An id reserved by a transaction that never commits is not reused. */
    Af__Datastore__Transaction *t = begin(f->ds, false);
    int64_t in_txn = put(f->ds, entity(key("K", 0, NULL), 2, NULL), t, 0);
    assert_true(in_txn > end);
    protobuf_c_message_free_unpacked(&t->base, NULL);

    af_service_datastore_v3.destroy(f->ds);
    start(f, false);
    int64_t b = put(f->ds, entity(key("K", 0, NULL), 3, NULL), NULL, 0);
    assert_true(b > in_txn);
    assert_int_equal(get(f->ds, key("K", a, NULL), NULL), 1);

    /* --clear_datastore starts empty. */
    af_service_datastore_v3.destroy(f->ds);
    start(f, true);
    assert_int_equal(get(f->ds, key("K", a, NULL), NULL), -1);
}

static void test_transactions(void **state)
{
    struct fixture *f = *state;
    put(f->ds, entity(key("T", 0, "x"), 1, NULL), NULL, 0);

    /* Two transactions read x; the first to commit wins. */
    Af__Datastore__Transaction *t1 = begin(f->ds, false), *t2 = begin(f->ds, false);
    assert_int_equal(get(f->ds, key("T", 0, "x"), t1), 1);
    assert_int_equal(get(f->ds, key("T", 0, "x"), t2), 1);
    put(f->ds, entity(key("T", 0, "x"), 10, NULL), t1, 0);
    put(f->ds, entity(key("T", 0, "x"), 20, NULL), t2, 0);
    struct af_result res;
    call(f->ds, "Commit", &t1->base, &res);
    assert_int_equal(res.kind, AF_RESULT_OK);
    result_release(&res);
    call(f->ds, "Commit", &t2->base, &res);
    expect_app_error(&res, CONCURRENT);
    assert_int_equal(get(f->ds, key("T", 0, "x"), NULL), 10);
    /* Both are gone now. */
    call(f->ds, "Rollback", &t2->base, &res);
    expect_app_error(&res, BAD_REQUEST);
    protobuf_c_message_free_unpacked(&t1->base, NULL);
    protobuf_c_message_free_unpacked(&t2->base, NULL);

    /* Without xg, a second group is refused; rollback drops the writes. */
    Af__Datastore__Transaction *t = begin(f->ds, false);
    put(f->ds, entity(key("T", 0, "x"), 30, NULL), t, 0);
    put(f->ds, entity(key("T", 0, "y"), 30, NULL), t, BAD_REQUEST);
    call(f->ds, "Rollback", &t->base, &res);
    assert_int_equal(res.kind, AF_RESULT_OK);
    result_release(&res);
    protobuf_c_message_free_unpacked(&t->base, NULL);
    assert_int_equal(get(f->ds, key("T", 0, "x"), NULL), 10);
    assert_int_equal(get(f->ds, key("T", 0, "y"), NULL), -1);

    /* xg: both groups commit together. */
    t = begin(f->ds, true);
    put(f->ds, entity(key("T", 0, "x"), 40, NULL), t, 0);
    put(f->ds, entity(key("T", 0, "y"), 41, NULL), t, 0);
    assert_int_equal(get(f->ds, key("T", 0, "y"), NULL), -1); /* not yet */
    call(f->ds, "Commit", &t->base, &res);
    assert_int_equal(res.kind, AF_RESULT_OK);
    result_release(&res);
    protobuf_c_message_free_unpacked(&t->base, NULL);
    assert_int_equal(get(f->ds, key("T", 0, "x"), NULL), 40);
    assert_int_equal(get(f->ds, key("T", 0, "y"), NULL), 41);

    /* clear() drops open transactions and every entity. */
    t = begin(f->ds, false);
    af_service_datastore_v3.clear(f->ds);
    call(f->ds, "Commit", &t->base, &res);
    expect_app_error(&res, BAD_REQUEST);
    protobuf_c_message_free_unpacked(&t->base, NULL);
    assert_int_equal(get(f->ds, key("T", 0, "x"), NULL), -1);
}

static void test_indexes(void **state)
{
    struct fixture *f = *state;
    Af__Datastore__CompositeIndex ci = AF__DATASTORE__COMPOSITE_INDEX__INIT;
    Af__Datastore__Index def = AF__DATASTORE__INDEX__INIT;
    def.entity_type = "K";
    ci.app_id = "dev~app";
    ci.definition = &def;
    ci.state = AF__DATASTORE__COMPOSITE_INDEX__STATE__WRITE_ONLY;
    struct af_result res;
    call(f->ds, "CreateIndex", &ci.base, &res);
    assert_int_equal(res.kind, AF_RESULT_OK);
    result_release(&res);
    Af__Datastore__StringProto app = AF__DATASTORE__STRING_PROTO__INIT;
    app.value = "dev~app";
    call(f->ds, "GetIndices", &app.base, &res);
    assert_int_equal(res.kind, AF_RESULT_OK);
    Af__Datastore__CompositeIndices *all = (Af__Datastore__CompositeIndices *)af_ds_wire_unpack(
        &af__datastore__composite_indices__descriptor, res.response, res.response_len);
    result_release(&res);
    assert_non_null(all);
    assert_int_equal(all->n_index, 1);
    assert_string_equal(all->index[0]->definition->entity_type, "K");
    assert_int_equal(all->index[0]->state, AF__DATASTORE__COMPOSITE_INDEX__STATE__READ_WRITE);
    protobuf_c_message_free_unpacked(&all->base, NULL);
}

/* Mutated requests (random bytes flipped, truncated, extended) on every
 * method: each call answers something and nothing crashes or leaks (run
 * with SANITIZE=1). The seeds are valid requests of every shape. */
static void test_mutated_requests(void **state)
{
    struct fixture *f = *state;
    for (int i = 0; i < 5; i++)
        put(f->ds, entity(key("M", 0, NULL), i, "t"), NULL, 0);

    struct seed {
        const char *method;
        uint8_t *bytes;
        size_t len;
    } seeds[4];
    size_t n_seeds = 0;

    ds_entity_t *e = entity(key("M", 0, NULL), 7, "text");
    Af__Datastore__PutRequest put_req = AF__DATASTORE__PUT_REQUEST__INIT;
    put_req.entity = &e;
    put_req.n_entity = 1;
    seeds[n_seeds].method = "Put";
    seeds[n_seeds].bytes = af_ds_wire_pack(&put_req.base, &seeds[n_seeds].len);
    n_seeds++;
    protobuf_c_message_free_unpacked(&e->base, NULL);

    ds_reference_t *k = key("M", 1, NULL);
    Af__Datastore__GetRequest get_req = AF__DATASTORE__GET_REQUEST__INIT;
    get_req.key = &k;
    get_req.n_key = 1;
    seeds[n_seeds].method = "Get";
    seeds[n_seeds].bytes = af_ds_wire_pack(&get_req.base, &seeds[n_seeds].len);
    n_seeds++;

    /* A query with a filter, two orders, an ancestor and a cursor. */
    Af__Datastore__Query q = AF__DATASTORE__QUERY__INIT;
    Af__Datastore__Query__Filter flt = AF__DATASTORE__QUERY__FILTER__INIT;
    Af__Datastore__Query__Filter *fp = &flt;
    ds_property_t p = AF__DATASTORE__PROPERTY__INIT;
    ds_property_t *pp = &p;
    ds_value_t v = AF__DATASTORE__PROPERTY_VALUE__INIT;
    Af__Datastore__Query__Order o1 = AF__DATASTORE__QUERY__ORDER__INIT, o2 = o1;
    Af__Datastore__Query__Order *ops[2] = {&o1, &o2};
    Af__Datastore__CompiledCursor cc = AF__DATASTORE__COMPILED_CURSOR__INIT;
    Af__Datastore__CompiledCursor__Position pos = AF__DATASTORE__COMPILED_CURSOR__POSITION__INIT;
    uint8_t cursor_bytes[] = {0xdc, 1, 0, 0, 0, 0, 1, 0x20};
    v.has_int64_value = true;
    v.int64_value = 2;
    p.name = "n";
    p.value = &v;
    flt.op = AF__DATASTORE__QUERY__FILTER__OPERATOR__GREATER_THAN;
    flt.property = &pp;
    flt.n_property = 1;
    o1.property = "n";
    o2.property = "__key__";
    pos.has_start_key = true;
    pos.start_key.data = cursor_bytes;
    pos.start_key.len = sizeof(cursor_bytes);
    cc.position = &pos;
    q.app = "dev~app";
    q.kind = "M";
    q.filter = &fp;
    q.n_filter = 1;
    q.order = ops;
    q.n_order = 2;
    q.ancestor = k;
    q.compiled_cursor = &cc;
    seeds[n_seeds].method = "RunQuery";
    seeds[n_seeds].bytes = af_ds_wire_pack(&q.base, &seeds[n_seeds].len);
    n_seeds++;
    q.ancestor = NULL;
    q.compiled_cursor = NULL;
    q.has_keys_only = true;
    q.keys_only = true;
    seeds[n_seeds].method = "RunQuery";
    seeds[n_seeds].bytes = af_ds_wire_pack(&q.base, &seeds[n_seeds].len);
    n_seeds++;
    protobuf_c_message_free_unpacked(&k->base, NULL);

    uint32_t rng = 12345;
    uint8_t buf[4096];
    for (int iter = 0; iter < 4000; iter++) {
        const struct seed *sd = &seeds[iter % n_seeds];
        assert_true(sd->len + 16 <= sizeof(buf));
        memcpy(buf, sd->bytes, sd->len);
        size_t len = sd->len;
        int flips = 1 + (int)((rng = rng * 1103515245 + 12345) >> 16) % 4;
        for (int j = 0; j < flips; j++) {
            rng = rng * 1103515245 + 12345;
            buf[(rng >> 8) % len] ^= (uint8_t)(1u << ((rng >> 4) % 8));
        }
        rng = rng * 1103515245 + 12345;
        if ((rng >> 16) % 5 == 0)
            len = (rng >> 4) % len; /* truncated */
        struct af_result res;
        call_raw(f->ds, sd->method, buf, len, &res);
        assert_true(res.kind == AF_RESULT_OK || res.kind == AF_RESULT_APP_ERROR ||
                    res.kind == AF_RESULT_RPC_ERROR);
        if (res.kind == AF_RESULT_APP_ERROR)
            assert_int_not_equal(res.code, AF__DATASTORE__ERROR__ERROR_CODE__INTERNAL_ERROR);
        result_release(&res);
    }
    for (size_t i = 0; i < n_seeds; i++)
        free(seeds[i].bytes);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_put_get_delete, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_requests, setup, teardown),
        cmocka_unit_test_setup_teardown(test_unsupported_queries, setup, teardown),
        cmocka_unit_test_setup_teardown(test_queries_and_cursors, setup, teardown),
        cmocka_unit_test_setup_teardown(test_ids_survive_restart, setup, teardown),
        cmocka_unit_test_setup_teardown(test_transactions, setup, teardown),
        cmocka_unit_test_setup_teardown(test_indexes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_mutated_requests, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
