/*
 * Eventual consistency (--datastore_consistency_policy, docs/datastore.md
 * "Consistency") through the datastore_v3 method table on a real SQLite
 * file: for `time` (with the service's clock replaced, so delays are
 * exact), `random` and `consistent`, what global queries (kind, kindless,
 * keys-only, count, cursors) see of pending writes; Get, ancestor queries,
 * transactions and new writes rolling a group forward; deletes and
 * overwrites while a write is pending; pending writes in the file before a
 * restart and applied by it. The service is included to reach its state.
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

#include "apiserver/services/datastore.c"

#define CONCURRENT AF__DATASTORE__ERROR__ERROR_CODE__CONCURRENT_TRANSACTION

struct fixture {
    char dir[64];
    char path[128];
    struct ds_state *ds;
};

/* The service's clock in the time-policy tests (monotonic ms). */
static int64_t fake_now;
static int64_t fake_clock(void)
{
    return fake_now;
}

static void start(struct fixture *f, const char *policy)
{
    struct af_api_options o = {.datastore_path = f->path, .datastore_consistency_policy = policy};
    f->ds = af_service_datastore_v3.create(&o);
    assert_non_null(f->ds->db);
    fake_now = 1000000;
    f->ds->ev.now_ms = fake_clock;
}

static void stop(struct fixture *f)
{
    af_service_datastore_v3.destroy(f->ds);
    f->ds = NULL;
}

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof(*f));
    strcpy(f->dir, "/tmp/af-dsev-test-XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    snprintf(f->path, sizeof(f->path), "%s/ds.sqlite3", f->dir);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    if (f->ds)
        stop(f);
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

static void call(struct fixture *f, const char *method, const ProtobufCMessage *m,
                 struct af_result *res)
{
    size_t n;
    uint8_t *req = af_ds_wire_pack(m, &n);
    memset(res, 0, sizeof(*res));
    for (const struct af_method *x = af_service_datastore_v3.methods; x->name; x++) {
        if (strcmp(x->name, method) == 0) {
            struct af_call c = {"datastore_v3", method, req, n, "", 0};
            x->fn(f->ds, &c, res);
            free(req);
            return;
        }
    }
    fail_msg("no method %s", method);
}

static void expect_ok(struct af_result *res, const char *what)
{
    if (res->kind != AF_RESULT_OK)
        fail_msg("%s: kind %d code %d: %s", what, res->kind, res->code,
                 res->detail ? res->detail : "");
}

/* ---- message builders ---------------------------------------------------- */

/* Key Root:root_name[/K:name] in app dev~app (child when name is given). */
static ds_reference_t *key(const char *root_name, const char *name)
{
    ds_reference_t *r = calloc(1, sizeof(*r));
    af__datastore__reference__init(r);
    r->app = strdup("dev~app");
    r->path = calloc(1, sizeof(*r->path));
    af__datastore__path__init(r->path);
    r->path->element = calloc(2, sizeof(*r->path->element));
    const char *kinds[2] = {"K", "K"};
    const char *names[2] = {root_name, name};
    for (int i = 0; i < (name ? 2 : 1); i++) {
        ds_element_t *e = calloc(1, sizeof(*e));
        af__datastore__path__element__init(e);
        e->type = strdup(kinds[i]);
        e->name = strdup(names[i]);
        r->path->element[r->path->n_element++] = e;
    }
    return r;
}

static ds_entity_t *entity(ds_reference_t *k, int64_t n)
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
    return e;
}

/* Puts entities (n of them, taken) in one call, in txn when given. */
static void put_many(struct fixture *f, ds_entity_t **es, size_t n,
                     Af__Datastore__Transaction *txn)
{
    Af__Datastore__PutRequest req = AF__DATASTORE__PUT_REQUEST__INIT;
    req.entity = es;
    req.n_entity = n;
    req.transaction = txn;
    struct af_result res;
    call(f, "Put", &req.base, &res);
    for (size_t i = 0; i < n; i++)
        protobuf_c_message_free_unpacked(&es[i]->base, NULL);
    expect_ok(&res, "Put");
    result_release(&res);
}

static void put(struct fixture *f, const char *root, const char *name, int64_t n,
                Af__Datastore__Transaction *txn)
{
    ds_entity_t *e = entity(key(root, name), n);
    put_many(f, &e, 1, txn);
}

static void del(struct fixture *f, const char *root, const char *name)
{
    ds_reference_t *k = key(root, name);
    Af__Datastore__DeleteRequest req = AF__DATASTORE__DELETE_REQUEST__INIT;
    req.key = &k;
    req.n_key = 1;
    struct af_result res;
    call(f, "Delete", &req.base, &res);
    protobuf_c_message_free_unpacked(&k->base, NULL);
    expect_ok(&res, "Delete");
    result_release(&res);
}

/* The value of "n" (-1: no entity). */
static int64_t get(struct fixture *f, const char *root, const char *name,
                   Af__Datastore__Transaction *txn, int want_error)
{
    ds_reference_t *k = key(root, name);
    Af__Datastore__GetRequest req = AF__DATASTORE__GET_REQUEST__INIT;
    req.key = &k;
    req.n_key = 1;
    req.transaction = txn;
    struct af_result res;
    call(f, "Get", &req.base, &res);
    protobuf_c_message_free_unpacked(&k->base, NULL);
    if (want_error) {
        if (res.kind != AF_RESULT_APP_ERROR || res.code != want_error)
            fail_msg("Get: want error %d, got kind %d code %d", want_error, res.kind, res.code);
        result_release(&res);
        return 0;
    }
    expect_ok(&res, "Get");
    Af__Datastore__GetResponse *r = (Af__Datastore__GetResponse *)af_ds_wire_unpack(
        &af__datastore__get_response__descriptor, res.response, res.response_len);
    result_release(&res);
    assert_non_null(r);
    int64_t v = r->entity[0]->entity ? r->entity[0]->entity->property[0]->value->int64_value : -1;
    protobuf_c_message_free_unpacked(&r->base, NULL);
    return v;
}

/* A non-transactional Get with failover_ms (an eventually consistent
 * read): whether the entity is found. */
static bool get_eventual(struct fixture *f, const char *root)
{
    ds_reference_t *k = key(root, NULL);
    Af__Datastore__GetRequest req = AF__DATASTORE__GET_REQUEST__INIT;
    req.key = &k;
    req.n_key = 1;
    req.has_failover_ms = true;
    req.failover_ms = 50;
    struct af_result res;
    call(f, "Get", &req.base, &res);
    protobuf_c_message_free_unpacked(&k->base, NULL);
    expect_ok(&res, "eventual Get");
    Af__Datastore__GetResponse *r = (Af__Datastore__GetResponse *)af_ds_wire_unpack(
        &af__datastore__get_response__descriptor, res.response, res.response_len);
    result_release(&res);
    assert_non_null(r);
    bool found = r->entity[0]->entity != NULL;
    protobuf_c_message_free_unpacked(&r->base, NULL);
    return found;
}

/* A query's shape. */
struct q {
    const char *ancestor; /* root name, or NULL: global */
    bool kindless, keys_only, count_only;
    bool projected; /* project n */
    bool composite; /* n > 0 order by n desc, __key__ desc (a composite index) */
    Af__Datastore__Transaction *txn;
};

/* Runs a query of kind K (all its batches, 2 results each) and returns the
 * sum of the "n" values found (count_only: the count), *n the results. */
static int64_t query(struct fixture *f, struct q how, int64_t *n_out)
{
    Af__Datastore__Query q = AF__DATASTORE__QUERY__INIT;
    q.app = "dev~app";
    q.kind = how.kindless ? NULL : "K";
    ds_reference_t *anc = how.ancestor ? key(how.ancestor, NULL) : NULL;
    q.ancestor = anc;
    q.transaction = how.txn;
    q.has_count = true;
    q.count = 2;
    if (how.keys_only || how.count_only) {
        q.has_keys_only = true;
        q.keys_only = true;
    }
    char *proj[1] = {"n"};
    if (how.projected) {
        q.property_name = proj;
        q.n_property_name = 1;
    }
    Af__Datastore__Query__Filter flt = AF__DATASTORE__QUERY__FILTER__INIT;
    Af__Datastore__Query__Filter *flts[1] = {&flt};
    ds_property_t fp = AF__DATASTORE__PROPERTY__INIT;
    ds_property_t *fps[1] = {&fp};
    Af__Datastore__PropertyValue zero = AF__DATASTORE__PROPERTY_VALUE__INIT;
    Af__Datastore__Query__Order o1 = AF__DATASTORE__QUERY__ORDER__INIT,
                                o2 = AF__DATASTORE__QUERY__ORDER__INIT;
    Af__Datastore__Query__Order *orders[2] = {&o1, &o2};
    if (how.composite) {
        zero.has_int64_value = true;
        fp.name = "n";
        fp.value = &zero;
        flt.op = AF__DATASTORE__QUERY__FILTER__OPERATOR__GREATER_THAN;
        flt.property = fps;
        flt.n_property = 1;
        q.filter = flts;
        q.n_filter = 1;
        o1.property = "n";
        o2.property = "__key__";
        o1.has_direction = o2.has_direction = true;
        o1.direction = o2.direction = AF__DATASTORE__QUERY__ORDER__DIRECTION__DESCENDING;
        q.order = orders;
        q.n_order = 2;
    }
    if (how.count_only) {
        q.has_offset = true;
        q.offset = INT32_MAX;
        q.has_limit = true;
        q.limit = 0;
    }
    struct af_result res;
    call(f, "RunQuery", &q.base, &res);
    if (anc)
        protobuf_c_message_free_unpacked(&anc->base, NULL);
    int64_t sum = 0, n = 0;
    for (;;) {
        expect_ok(&res, "RunQuery/Next");
        Af__Datastore__QueryResult *r = (Af__Datastore__QueryResult *)af_ds_wire_unpack(
            &af__datastore__query_result__descriptor, res.response, res.response_len);
        result_release(&res);
        assert_non_null(r);
        if (how.count_only)
            sum += r->has_skipped_results ? r->skipped_results : 0;
        for (size_t i = 0; i < r->n_result; i++) {
            n++;
            if (!how.keys_only && !how.count_only)
                sum += r->result[i]->property[0]->value->int64_value;
        }
        bool more = r->more_results;
        uint64_t handle = r->cursor ? r->cursor->cursor : 0;
        protobuf_c_message_free_unpacked(&r->base, NULL);
        if (!more)
            break;
        Af__Datastore__NextRequest next = AF__DATASTORE__NEXT_REQUEST__INIT;
        Af__Datastore__Cursor c = AF__DATASTORE__CURSOR__INIT;
        c.cursor = handle;
        next.cursor = &c;
        next.has_count = true;
        next.count = 2;
        call(f, "Next", &next.base, &res);
    }
    if (n_out)
        *n_out = n;
    return sum;
}

static int64_t global_sum(struct fixture *f)
{
    return query(f, (struct q){0}, NULL);
}

static int64_t ancestor_sum(struct fixture *f, const char *root)
{
    return query(f, (struct q){.ancestor = root}, NULL);
}

static Af__Datastore__Transaction *begin(struct fixture *f, bool xg)
{
    Af__Datastore__BeginTransactionRequest req = AF__DATASTORE__BEGIN_TRANSACTION_REQUEST__INIT;
    req.app = "dev~app";
    req.has_allow_multiple_eg = xg;
    req.allow_multiple_eg = xg;
    struct af_result res;
    call(f, "BeginTransaction", &req.base, &res);
    expect_ok(&res, "BeginTransaction");
    Af__Datastore__Transaction *t = (Af__Datastore__Transaction *)af_ds_wire_unpack(
        &af__datastore__transaction__descriptor, res.response, res.response_len);
    result_release(&res);
    return t;
}

static void commit(struct fixture *f, Af__Datastore__Transaction *t, int want_error)
{
    struct af_result res;
    call(f, "Commit", &t->base, &res);
    protobuf_c_message_free_unpacked(&t->base, NULL);
    if (want_error) {
        assert_int_equal(res.kind, AF_RESULT_APP_ERROR);
        assert_int_equal(res.code, want_error);
    } else {
        expect_ok(&res, "Commit");
    }
    result_release(&res);
}

/* Rows of the job table, read on a connection of its own: what is in the
 * file, not what the service remembers. */
static int64_t jobs_in_file(struct fixture *f)
{
    sqlite3 *db;
    assert_int_equal(sqlite3_open(f->path, &db), SQLITE_OK);
    sqlite3_stmt *st;
    assert_int_equal(sqlite3_prepare_v2(db, "SELECT count(*) FROM job", -1, &st, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    int64_t n = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    sqlite3_close(db);
    return n;
}

/* Past any delay of the time policy (the longest is 4 minutes). */
static void time_passes(void)
{
    fake_now += 240000;
}

/* ---- time ----------------------------------------------------------------- */

static void test_time_global_query_lags(void **state)
{
    struct fixture *f = *state;
    start(f, "time");
    put(f, "a", NULL, 1, NULL);
    /* Acknowledged: in the file before any query. */
    assert_int_equal(jobs_in_file(f), 1);
    int64_t n;
    assert_int_equal(global_sum(f), 0);
    assert_int_equal(query(f, (struct q){.kindless = true}, &n), 0);
    assert_int_equal(n, 0);
    assert_int_equal(query(f, (struct q){.keys_only = true}, &n), 0);
    assert_int_equal(n, 0);
    assert_int_equal(query(f, (struct q){.count_only = true}, NULL), 0);
    assert_int_equal(query(f, (struct q){.projected = true}, &n), 0);
    assert_int_equal(n, 0);
    assert_int_equal(query(f, (struct q){.composite = true}, &n), 0);
    assert_int_equal(n, 0);
    /* No delay is shorter than 100 ms. */
    fake_now += 99;
    assert_int_equal(global_sum(f), 0);
    time_passes();
    assert_int_equal(global_sum(f), 1);
    assert_int_equal(query(f, (struct q){.count_only = true}, NULL), 1);
    assert_int_equal(query(f, (struct q){.kindless = true}, &n), 1);
    assert_int_equal(query(f, (struct q){.projected = true}, &n), 1);
    assert_int_equal(query(f, (struct q){.composite = true}, &n), 1);
    assert_int_equal(n, 1);
    assert_int_equal(jobs_in_file(f), 0);
}

static void test_time_delays_follow_dev_appserver(void **state)
{
    (void)state;
    struct af_ds_eventual ev;
    af_ds_ev_init(&ev, AF_DS_POLICY_TIME, NULL, NULL, NULL);
    int n100 = 0, n300 = 0, n2000 = 0, n240000 = 0;
    for (int i = 0; i < 100000; i++) {
        switch (af_ds_ev_delay_ms(&ev)) {
        case 100: n100++; break;
        case 300: n300++; break;
        case 2000: n2000++; break;
        case 240000: n240000++; break;
        default: fail_msg("unexpected delay");
        }
    }
    /* 98%, 1%, 0.5%, 0.5%, within a few standard deviations. */
    assert_true(n100 > 97700 && n100 < 98300);
    assert_true(n300 > 800 && n300 < 1200);
    assert_true(n2000 > 350 && n2000 < 650);
    assert_true(n240000 > 350 && n240000 < 650);
}

static void test_get_and_ancestor_roll_forward(void **state)
{
    struct fixture *f = *state;
    start(f, "time");
    put(f, "a", NULL, 1, NULL);
    put(f, "b", NULL, 10, NULL);
    put(f, "b", "c", 100, NULL); /* b's group: rolls b forward first */
    assert_int_equal(global_sum(f), 10);
    /* An eventually consistent Get reads what is applied, and applies
     * nothing. */
    assert_false(get_eventual(f, "a"));
    assert_int_equal(global_sum(f), 10);
    /* Get sees the latest, and applies its group: global queries see it. */
    assert_int_equal(get(f, "a", NULL, NULL, 0), 1);
    assert_int_equal(global_sum(f), 11);
    /* An ancestor query too. */
    assert_int_equal(ancestor_sum(f, "b"), 110);
    assert_int_equal(global_sum(f), 111);
    assert_int_equal(jobs_in_file(f), 0);
}

static void test_overwrite_and_delete_pending(void **state)
{
    struct fixture *f = *state;
    start(f, "time");
    put(f, "a", NULL, 1, NULL);
    assert_int_equal(global_sum(f), 0);
    /* The second write applies the first (its group is rolled forward)
     * and waits itself. */
    put(f, "a", NULL, 2, NULL);
    assert_int_equal(global_sum(f), 1);
    assert_int_equal(ancestor_sum(f, "a"), 2);
    assert_int_equal(global_sum(f), 2);
    /* A pending delete: global queries still see the entity, Get does not. */
    del(f, "a", NULL);
    assert_int_equal(global_sum(f), 2);
    assert_int_equal(jobs_in_file(f), 1);
    assert_int_equal(get(f, "a", NULL, NULL, 0), -1);
    assert_int_equal(global_sum(f), 0);
    /* Put and delete in one transaction: the delete wins when applied. */
    Af__Datastore__Transaction *t = begin(f, false);
    put(f, "z", NULL, 5, t);
    ds_reference_t *k = key("z", NULL);
    Af__Datastore__DeleteRequest req = AF__DATASTORE__DELETE_REQUEST__INIT;
    req.key = &k;
    req.n_key = 1;
    req.transaction = t;
    struct af_result res;
    call(f, "Delete", &req.base, &res);
    protobuf_c_message_free_unpacked(&k->base, NULL);
    expect_ok(&res, "Delete in a transaction");
    result_release(&res);
    commit(f, t, 0);
    time_passes();
    assert_int_equal(global_sum(f), 0);
    assert_int_equal(get(f, "z", NULL, NULL, 0), -1);
    /* Two writes of one key in one Put: the last one is the one applied. */
    ds_entity_t *two[2] = {entity(key("y", NULL), 7), entity(key("y", NULL), 8)};
    put_many(f, two, 2, NULL);
    time_passes();
    assert_int_equal(global_sum(f), 8);
}

static void test_transactions_see_everything(void **state)
{
    struct fixture *f = *state;
    start(f, "time");
    put(f, "a", NULL, 1, NULL);
    /* The snapshot of Begin holds a's pending write: reading a rolls it
     * forward and takes the snapshot again. */
    Af__Datastore__Transaction *t = begin(f, false);
    assert_int_equal(get(f, "a", NULL, t, 0), 1);
    assert_int_equal(global_sum(f), 1);
    put(f, "a", NULL, 2, t);
    commit(f, t, 0);
    /* The commit waits like any write; Get sees it. */
    assert_int_equal(global_sum(f), 1);
    assert_int_equal(get(f, "a", NULL, NULL, 0), 2);

    /* An ancestor query in a transaction. */
    put(f, "b", NULL, 10, NULL);
    t = begin(f, false);
    assert_int_equal(query(f, (struct q){.ancestor = "b", .txn = t}, NULL), 10);
    commit(f, t, 0);

    /* xg: the first group read, then written by someone else; a second
     * group with a pending write cannot be read any more: the transaction
     * could never commit. */
    put(f, "c", NULL, 100, NULL);
    t = begin(f, true);
    assert_int_equal(get(f, "a", NULL, t, 0), 2);
    put(f, "a", NULL, 3, NULL);
    get(f, "c", NULL, t, CONCURRENT);
    protobuf_c_message_free_unpacked(&t->base, NULL);
    /* Without the outside write, both groups are read and it commits. */
    put(f, "d", NULL, 1000, NULL);
    t = begin(f, true);
    assert_int_equal(get(f, "a", NULL, t, 0), 3);
    assert_int_equal(get(f, "d", NULL, t, 0), 1000);
    put(f, "d", NULL, 2000, t);
    commit(f, t, 0);
    assert_int_equal(get(f, "d", NULL, NULL, 0), 2000);
}

static void test_cursor_batches(void **state)
{
    struct fixture *f = *state;
    start(f, "time");
    for (int i = 0; i < 5; i++) {
        char name[8];
        snprintf(name, sizeof(name), "r%d", i);
        put(f, name, NULL, 1, NULL);
    }
    time_passes();
    int64_t n;
    assert_int_equal(query(f, (struct q){0}, &n), 5);
    /* A query in batches of 2: Next goes on with what was applied at
     * RunQuery (dev_appserver grooms once per query), so a write after the
     * first batch is not seen; a new query sees it once applied. */
    Af__Datastore__Query q = AF__DATASTORE__QUERY__INIT;
    q.app = "dev~app";
    q.kind = "K";
    q.has_count = true;
    q.count = 2;
    struct af_result res;
    call(f, "RunQuery", &q.base, &res);
    expect_ok(&res, "RunQuery");
    Af__Datastore__QueryResult *r = (Af__Datastore__QueryResult *)af_ds_wire_unpack(
        &af__datastore__query_result__descriptor, res.response, res.response_len);
    result_release(&res);
    uint64_t handle = r->cursor->cursor;
    protobuf_c_message_free_unpacked(&r->base, NULL);
    put(f, "r9", NULL, 1, NULL); /* sorts after every batch so far */
    Af__Datastore__NextRequest next = AF__DATASTORE__NEXT_REQUEST__INIT;
    Af__Datastore__Cursor c = AF__DATASTORE__CURSOR__INIT;
    c.cursor = handle;
    next.cursor = &c;
    next.has_count = true;
    next.count = 1000;
    call(f, "Next", &next.base, &res);
    expect_ok(&res, "Next");
    r = (Af__Datastore__QueryResult *)af_ds_wire_unpack(&af__datastore__query_result__descriptor,
                                                        res.response, res.response_len);
    result_release(&res);
    assert_int_equal(r->n_result, 3); /* r2..r4, not r9 */
    protobuf_c_message_free_unpacked(&r->base, NULL);
    time_passes();
    assert_int_equal(query(f, (struct q){0}, &n), 6);
}

static void test_restart_applies_pending(void **state)
{
    struct fixture *f = *state;
    start(f, "time");
    put(f, "a", NULL, 1, NULL);
    put(f, "b", NULL, 2, NULL);
    del(f, "b", NULL);
    assert_int_equal(jobs_in_file(f), 2);
    stop(f);
    /* Nothing lost: the next run applies them before its first call. */
    assert_int_equal(jobs_in_file(f), 2);
    start(f, "time");
    assert_int_equal(jobs_in_file(f), 0);
    assert_int_equal(global_sum(f), 1);
    assert_int_equal(get(f, "b", NULL, NULL, 0), -1);

    /* Left pending, then opened under `consistent`: applied too. */
    put(f, "c", NULL, 10, NULL);
    stop(f);
    start(f, "consistent");
    assert_int_equal(global_sum(f), 11);

    /* clear() drops pending writes with everything else. */
    stop(f);
    start(f, "time");
    put(f, "d", NULL, 100, NULL);
    af_service_datastore_v3.clear(f->ds);
    assert_int_equal(jobs_in_file(f), 0);
    assert_int_equal(f->ds->ev.pending, 0);
    time_passes();
    assert_int_equal(global_sum(f), 0);
}

/* A version 1 file (before the job tables) is upgraded in place. */
static void test_schema_1_upgraded(void **state)
{
    struct fixture *f = *state;
    start(f, "consistent");
    put(f, "a", NULL, 1, NULL);
    stop(f);
    sqlite3 *db;
    assert_int_equal(sqlite3_open(f->path, &db), SQLITE_OK);
    assert_int_equal(sqlite3_exec(db, "DROP TABLE job; DROP TABLE job_write; PRAGMA user_version=1",
                                  NULL, NULL, NULL),
                     SQLITE_OK);
    sqlite3_close(db);
    start(f, "time");
    put(f, "b", NULL, 2, NULL);
    assert_int_equal(jobs_in_file(f), 1);
    assert_int_equal(global_sum(f), 1);
    time_passes();
    assert_int_equal(global_sum(f), 3);
}

/* ---- random and consistent ------------------------------------------------- */

static void test_random_policy(void **state)
{
    struct fixture *f = *state;
    start(f, "random");
    /* 20 groups, and in group g0 two writes in one Put (one job: they
     * apply together or not at all). */
    ds_entity_t *two[2] = {entity(key("g0", NULL), 1), entity(key("g0", "child"), 1)};
    put_many(f, two, 2, NULL);
    for (int i = 1; i < 20; i++) {
        char name[8];
        snprintf(name, sizeof(name), "g%d", i);
        put(f, name, NULL, 1, NULL);
    }
    /* Each query applies each waiting job with probability 1/2: neither
     * none nor all of 20 (2^-20 each), and all after a few dozen. */
    int64_t n1 = global_sum(f);
    assert_true(n1 > 0 && n1 < 21);
    int64_t n = n1, rounds = 0;
    while (n < 21 && rounds++ < 64) {
        n = global_sum(f);
        assert_true(ancestor_sum(f, "g0") == 2); /* the group reads whole */
    }
    assert_int_equal(n, 21);
    assert_true(rounds > 1);
}

static void test_consistent_policy(void **state)
{
    struct fixture *f = *state;
    start(f, "consistent");
    put(f, "a", NULL, 1, NULL);
    del(f, "a", NULL);
    put(f, "b", NULL, 2, NULL);
    Af__Datastore__Transaction *t = begin(f, false);
    put(f, "c", NULL, 3, t);
    commit(f, t, 0);
    assert_int_equal(global_sum(f), 5);
    assert_int_equal(jobs_in_file(f), 0);
    assert_int_equal(f->ds->ev.pending, 0);
}

static void test_policy_names(void **state)
{
    (void)state;
    enum af_ds_policy p;
    assert_int_equal(af_ds_policy_parse("TIME", &p), 0);
    assert_int_equal(p, AF_DS_POLICY_TIME);
    assert_int_equal(af_ds_policy_parse("random", &p), 0);
    assert_int_equal(p, AF_DS_POLICY_RANDOM);
    assert_int_equal(af_ds_policy_parse("consistent", &p), 0);
    assert_int_equal(p, AF_DS_POLICY_CONSISTENT);
    assert_int_equal(af_ds_policy_parse("eventual", &p), -1);
    assert_int_equal(af_ds_policy_parse(NULL, &p), -1);
    assert_string_equal(af_ds_policy_name(AF_DS_POLICY_RANDOM), "random");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_time_global_query_lags, setup, teardown),
        cmocka_unit_test(test_time_delays_follow_dev_appserver),
        cmocka_unit_test_setup_teardown(test_get_and_ancestor_roll_forward, setup, teardown),
        cmocka_unit_test_setup_teardown(test_overwrite_and_delete_pending, setup, teardown),
        cmocka_unit_test_setup_teardown(test_transactions_see_everything, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cursor_batches, setup, teardown),
        cmocka_unit_test_setup_teardown(test_restart_applies_pending, setup, teardown),
        cmocka_unit_test_setup_teardown(test_schema_1_upgraded, setup, teardown),
        cmocka_unit_test_setup_teardown(test_random_policy, setup, teardown),
        cmocka_unit_test_setup_teardown(test_consistent_policy, setup, teardown),
        cmocka_unit_test(test_policy_names),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
