/*
 * Unit tests of transactional task adds: the taskqueue and the datastore
 * services, both real (SQLite files in a temporary directory), driven
 * through their method tables as the backend drives them, and tied only by
 * apiserver/services/txn_hooks.h. A task added with a transaction exists
 * exactly when the transaction commits: not on rollback, on a lost commit
 * (CONCURRENT_TRANSACTION), when the transaction expires idle, or when the
 * other side of the hook fails.
 *
 * The datastore's .c is included to age a transaction (idle expiry); the
 * taskqueue is reached only through its service table.
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
#include "taskqueue.pb-c.h"
#include "tests/unit/svc_call.h"

extern const struct af_service af_service_taskqueue;

#define TQ(name) AF__TASKQUEUE__TASK_QUEUE_SERVICE_ERROR__ERROR_CODE__##name
/* DATASTORE_ERROR + datastore_v3's BAD_REQUEST, production's answer. */
#define TQ_DS_BAD_REQUEST (TQ(DATASTORE_ERROR) + AF__DATASTORE__ERROR__ERROR_CODE__BAD_REQUEST)

/* A second listener next to the taskqueue (below), to watch the hook and
 * make it fail. */
struct fake {
    bool fail_prepare, fail_commit;
    int prepared, committed, aborted;
};

struct fixture {
    char dir[64];
    void *ds, *tq;
    struct fake fake; /* listening once a test calls listen_fake() */
};

static const struct af_txn_listener fake_ops;

static void start_tq(struct fixture *f)
{
    struct af_api_options o = {.storage_path = f->dir}; /* queue "default" only */
    f->tq = af_service_taskqueue.create(&o);
}

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof(*f));
    strcpy(f->dir, "/tmp/af-tqtxn-test-XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    struct af_api_options o = {.storage_path = f->dir};
    f->ds = af_service_datastore_v3.create(&o);
    start_tq(f);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    af_txn_unlisten(&fake_ops, &f->fake); /* also after a failed test */
    af_service_taskqueue.destroy(f->tq);
    af_service_datastore_v3.destroy(f->ds);
    char cmd[200];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", f->dir);
    assert_int_equal(system(cmd), 0);
    free(f);
    return 0;
}

/* ---- calls -------------------------------------------------------------- */

/* Runs method of svc on m, packed in the official encoding. */
static struct af_result wcall(const struct af_service *svc, void *st, const char *method,
                              const ProtobufCMessage *m)
{
    size_t len;
    uint8_t *buf = af_ds_wire_pack(m, &len);
    struct af_result r = svc_call_raw(svc, st, method, "req-1", buf, len);
    free(buf);
    return r;
}

static void expect_error(struct af_result *r, int code, const char *detail_part)
{
    if (r->kind != AF_RESULT_APP_ERROR || r->code != code)
        fail_msg("want app error %d, got kind %d code %d (%s)", code, r->kind, r->code,
                 r->detail ? r->detail : "");
    if (detail_part && !strstr(r->detail, detail_part))
        fail_msg("detail \"%s\" does not say \"%s\"", r->detail, detail_part);
    svc_result_free(r);
}

static void expect_ok(struct af_result *r)
{
    if (r->kind != AF_RESULT_OK)
        fail_msg("want OK, got kind %d code %d (%s)", r->kind, r->code,
                 r->detail ? r->detail : "");
    svc_result_free(r);
}

static uint64_t begin(struct fixture *f)
{
    Af__Datastore__BeginTransactionRequest req = AF__DATASTORE__BEGIN_TRANSACTION_REQUEST__INIT;
    req.app = "dev~app";
    struct af_result r = wcall(&af_service_datastore_v3, f->ds, "BeginTransaction", &req.base);
    assert_int_equal(r.kind, AF_RESULT_OK);
    Af__Datastore__Transaction *t = (Af__Datastore__Transaction *)af_ds_wire_unpack(
        &af__datastore__transaction__descriptor, r.response, r.response_len);
    assert_non_null(t);
    uint64_t h = t->handle;
    protobuf_c_message_free_unpacked(&t->base, NULL);
    svc_result_free(&r);
    return h;
}

/* Commit or Rollback of handle h. */
static struct af_result end_txn(struct fixture *f, const char *method, uint64_t h)
{
    Af__Datastore__Transaction t = AF__DATASTORE__TRANSACTION__INIT;
    t.handle = h;
    t.app = "dev~app";
    return wcall(&af_service_datastore_v3, f->ds, method, &t.base);
}

static ds_reference_t *key(const char *name)
{
    ds_reference_t *r = calloc(1, sizeof(*r));
    af__datastore__reference__init(r);
    r->app = strdup("dev~app");
    r->path = calloc(1, sizeof(*r->path));
    af__datastore__path__init(r->path);
    r->path->element = calloc(1, sizeof(*r->path->element));
    ds_element_t *e = calloc(1, sizeof(*e));
    af__datastore__path__element__init(e);
    e->type = strdup("K");
    e->name = strdup(name);
    r->path->element[r->path->n_element++] = e;
    return r;
}

/* Puts K/name (in transaction h when not 0). */
static void put(struct fixture *f, const char *name, uint64_t h)
{
    ds_entity_t *e = calloc(1, sizeof(*e));
    af__datastore__entity_proto__init(e);
    e->key = key(name);
    e->entity_group = calloc(1, sizeof(*e->entity_group));
    af__datastore__path__init(e->entity_group);
    Af__Datastore__Transaction t = AF__DATASTORE__TRANSACTION__INIT;
    t.handle = h;
    t.app = "dev~app";
    Af__Datastore__PutRequest req = AF__DATASTORE__PUT_REQUEST__INIT;
    req.entity = &e;
    req.n_entity = 1;
    req.transaction = h ? &t : NULL;
    struct af_result r = wcall(&af_service_datastore_v3, f->ds, "Put", &req.base);
    protobuf_c_message_free_unpacked(&e->base, NULL);
    expect_ok(&r);
}

/* Whether K/name exists (read in transaction h when not 0, which notes
 * its group). */
static bool exists(struct fixture *f, const char *name, uint64_t h)
{
    ds_reference_t *k = key(name);
    Af__Datastore__Transaction t = AF__DATASTORE__TRANSACTION__INIT;
    t.handle = h;
    t.app = "dev~app";
    Af__Datastore__GetRequest req = AF__DATASTORE__GET_REQUEST__INIT;
    req.key = &k;
    req.n_key = 1;
    req.transaction = h ? &t : NULL;
    struct af_result r = wcall(&af_service_datastore_v3, f->ds, "Get", &req.base);
    protobuf_c_message_free_unpacked(&k->base, NULL);
    assert_int_equal(r.kind, AF_RESULT_OK);
    Af__Datastore__GetResponse *g = (Af__Datastore__GetResponse *)af_ds_wire_unpack(
        &af__datastore__get_response__descriptor, r.response, r.response_len);
    assert_non_null(g);
    bool found = g->n_entity == 1 && g->entity[0]->entity != NULL;
    protobuf_c_message_free_unpacked(&g->base, NULL);
    svc_result_free(&r);
    return found;
}

static ProtobufCBinaryData bin(const char *s)
{
    return (ProtobufCBinaryData){.len = strlen(s), .data = (uint8_t *)s};
}

/* A push task to "default", due in an hour (nothing runs it here); in
 * transaction h when not 0, named when name is not NULL. */
static void fill_add(Af__Taskqueue__TaskQueueAddRequest *a, Af__Taskqueue__Transaction *t,
                     uint64_t h, const char *name)
{
    af__taskqueue__task_queue_add_request__init(a);
    a->queue_name = bin("default");
    a->task_name = bin(name ? name : "");
    a->eta_usec = (int64_t)time(NULL) * 1000000 + 3600LL * 1000000;
    a->has_url = true;
    a->url = bin("/work");
    af__taskqueue__transaction__init(t);
    t->handle = h;
    t->app = "dev~app";
    a->transaction = h ? t : NULL;
}

/* Adds one task; returns the result (caller frees). chosen gets the name
 * sent back, if any. */
static struct af_result add(struct fixture *f, uint64_t h, const char *name, char *chosen,
                            size_t chosen_len)
{
    Af__Taskqueue__TaskQueueAddRequest a;
    Af__Taskqueue__Transaction t;
    fill_add(&a, &t, h, name);
    struct af_result r = wcall(&af_service_taskqueue, f->tq, "Add", &a.base);
    if (chosen && r.kind == AF_RESULT_OK) {
        Af__Taskqueue__TaskQueueAddResponse *resp =
            af__taskqueue__task_queue_add_response__unpack(NULL, r.response_len, r.response);
        assert_non_null(resp);
        assert_true(resp->has_chosen_task_name);
        snprintf(chosen, chosen_len, "%.*s", (int)resp->chosen_task_name.len,
                 resp->chosen_task_name.data);
        af__taskqueue__task_queue_add_response__free_unpacked(resp, NULL);
    }
    return r;
}

/* BulkAdd of n tasks in transaction h; name_at: the index of a named task,
 * or -1. Returns the result (caller frees). */
static struct af_result bulk_add(struct fixture *f, uint64_t h, size_t n, int name_at)
{
    Af__Taskqueue__TaskQueueAddRequest a[8], *ap[8];
    Af__Taskqueue__Transaction t[8];
    assert_true(n <= 8);
    for (size_t i = 0; i < n; i++) {
        fill_add(&a[i], &t[i], h, (int)i == name_at ? "named" : NULL);
        ap[i] = &a[i];
    }
    Af__Taskqueue__TaskQueueBulkAddRequest b = AF__TASKQUEUE__TASK_QUEUE_BULK_ADD_REQUEST__INIT;
    b.add_request = ap;
    b.n_add_request = n;
    return wcall(&af_service_taskqueue, f->tq, "BulkAdd", &b.base);
}

/* The names of the tasks of "default", joined by spaces, into out. Returns
 * their number. */
static size_t tasks(struct fixture *f, char *out, size_t outlen)
{
    Af__Taskqueue__TaskQueueQueryTasksRequest q = AF__TASKQUEUE__TASK_QUEUE_QUERY_TASKS_REQUEST__INIT;
    q.queue_name = bin("default");
    q.has_max_rows = true;
    q.max_rows = 100;
    struct af_result r = wcall(&af_service_taskqueue, f->tq, "QueryTasks", &q.base);
    assert_int_equal(r.kind, AF_RESULT_OK);
    Af__Taskqueue__TaskQueueQueryTasksResponse *resp =
        (Af__Taskqueue__TaskQueueQueryTasksResponse *)af_ds_wire_unpack(
            &af__taskqueue__task_queue_query_tasks_response__descriptor, r.response,
            r.response_len);
    assert_non_null(resp);
    size_t n = resp->n_task, used = 0;
    if (out) {
        out[0] = '\0';
        for (size_t i = 0; i < n; i++)
            used += (size_t)snprintf(out + used, used < outlen ? outlen - used : 0, "%s%.*s",
                                     i ? " " : "", (int)resp->task[i]->task_name.len,
                                     resp->task[i]->task_name.data);
    }
    protobuf_c_message_free_unpacked(&resp->base, NULL);
    svc_result_free(&r);
    return n;
}

/* ---- a second listener, to watch the hook and make it fail -------------- */

static int fake_prepare(void *arg, uint64_t handle, char *why, size_t whylen)
{
    struct fake *k = arg;
    (void)handle;
    k->prepared++;
    if (k->fail_prepare) {
        snprintf(why, whylen, "the fake could not prepare");
        return -1;
    }
    return 0;
}

static int fake_commit(void *arg, uint64_t handle, bool *notify, char *why, size_t whylen)
{
    struct fake *k = arg;
    (void)handle;
    (void)notify;
    k->committed++;
    if (k->fail_commit) {
        snprintf(why, whylen, "the fake lost its work");
        return -1;
    }
    return 0;
}

static void fake_abort(void *arg, uint64_t handle)
{
    struct fake *k = arg;
    (void)handle;
    k->aborted++;
}

static const struct af_txn_listener fake_ops = {
    .service = "fake",
    .prepare = fake_prepare,
    .commit = fake_commit,
    .abort = fake_abort,
};

static struct fake *listen_fake(struct fixture *f, bool fail_prepare, bool fail_commit)
{
    f->fake = (struct fake){.fail_prepare = fail_prepare, .fail_commit = fail_commit};
    af_txn_listen(&fake_ops, &f->fake);
    return &f->fake;
}

/* ---- tests -------------------------------------------------------------- */

/* The task appears when the transaction commits, under the name the Add
 * sent back, in the store file; the runner hears of it. */
static void test_commit_enqueues(void **state)
{
    struct fixture *f = *state;
    /* The runner polled and was told "nothing to wait for": a task that
     * becomes due needs a notice. */
    Af__Taskqueue__RunnerPoll poll = AF__TASKQUEUE__RUNNER_POLL__INIT;
    const struct af_service internal_view = {.name = "taskqueue",
                                             .methods = af_service_taskqueue.internal};
    struct af_result r = svc_call(&internal_view, f->tq, "RunnerPoll", &poll.base);
    expect_ok(&r);

    uint64_t h = begin(f);
    put(f, "a", h);
    char chosen[64];
    r = add(f, h, NULL, chosen, sizeof(chosen));
    expect_ok(&r);
    assert_int_equal(strlen(chosen), 19);
    r = bulk_add(f, h, 2, -1);
    expect_ok(&r);
    assert_int_equal(tasks(f, NULL, 0), 0); /* not before the commit */

    r = end_txn(f, "Commit", h);
    assert_int_equal(r.kind, AF_RESULT_OK);
    assert_true(r.notify_main);
    assert_string_equal(r.notify_service, "taskqueue");
    svc_result_free(&r);
    char names[512];
    assert_int_equal(tasks(f, names, sizeof(names)), 3);
    assert_non_null(strstr(names, chosen));
    assert_true(exists(f, "a", 0));

    /* Committed means stored: a restarted taskqueue has them. */
    af_service_taskqueue.destroy(f->tq);
    start_tq(f);
    assert_int_equal(tasks(f, NULL, 0), 3);

    /* A transaction with tasks and no writes commits them too. */
    h = begin(f);
    r = add(f, h, NULL, NULL, 0);
    expect_ok(&r);
    r = end_txn(f, "Commit", h);
    expect_ok(&r);
    assert_int_equal(tasks(f, NULL, 0), 4);
}

static void test_rollback_drops(void **state)
{
    struct fixture *f = *state;
    uint64_t h = begin(f);
    put(f, "a", h);
    struct af_result r = add(f, h, NULL, NULL, 0);
    expect_ok(&r);
    r = end_txn(f, "Rollback", h);
    expect_ok(&r);
    assert_int_equal(tasks(f, NULL, 0), 0);
    assert_false(exists(f, "a", 0));
    /* The handle is gone for both services. */
    r = add(f, h, NULL, NULL, 0);
    expect_error(&r, TQ_DS_BAD_REQUEST, "does not exist");
    r = end_txn(f, "Commit", h);
    expect_error(&r, ERR_BAD_REQUEST, "does not exist");
    assert_int_equal(tasks(f, NULL, 0), 0);
}

/* A commit that loses (CONCURRENT_TRANSACTION) adds nothing; the winner's
 * tasks are there. */
static void test_failed_commit_drops(void **state)
{
    struct fixture *f = *state;
    struct fake *k = listen_fake(f, false, false);
    put(f, "x", 0);
    uint64_t h1 = begin(f), h2 = begin(f);
    assert_true(exists(f, "x", h1));
    assert_true(exists(f, "x", h2));
    put(f, "x", h1);
    put(f, "x", h2);
    char won[64], lost[64];
    struct af_result r = add(f, h1, NULL, won, sizeof(won));
    expect_ok(&r);
    r = add(f, h2, NULL, lost, sizeof(lost));
    expect_ok(&r);
    r = end_txn(f, "Commit", h1);
    expect_ok(&r);
    r = end_txn(f, "Commit", h2);
    expect_error(&r, ERR_CONCURRENT, "concurrent");
    char names[256];
    assert_int_equal(tasks(f, names, sizeof(names)), 1);
    assert_string_equal(names, won);
    /* Both prepared; the winner committed, the loser was aborted. */
    assert_int_equal(k->prepared, 2);
    assert_int_equal(k->committed, 1);
    assert_int_equal(k->aborted, 1);
}

/* A transaction dropped after 60 idle seconds takes its tasks with it; an
 * Add in a transaction keeps it alive. */
static void test_idle_transaction_drops(void **state)
{
    struct fixture *f = *state;
    struct ds_state *ds = f->ds;
    struct fake *k = listen_fake(f, false, false);
    uint64_t h = begin(f);
    struct af_result r = add(f, h, NULL, NULL, 0);
    expect_ok(&r);
    assert_true(ds->txns && ds->txns->handle == h);
    ds->txns->last_used -= DS_TXN_IDLE_NS - 1000000000ull; /* 59 s ago */
    r = add(f, h, NULL, NULL, 0); /* touches the transaction */
    expect_ok(&r);
    assert_true(now_ns() - ds->txns->last_used < 1000000000ull);

    ds->txns->last_used -= DS_TXN_IDLE_NS + 1000000000ull; /* 61 s ago */
    uint64_t other = begin(f); /* expiry runs here */
    assert_int_equal(k->aborted, 1);
    r = end_txn(f, "Commit", h);
    expect_error(&r, ERR_BAD_REQUEST, "does not exist");
    r = end_txn(f, "Commit", other);
    expect_ok(&r);
    assert_int_equal(tasks(f, NULL, 0), 0);
}

/* At most 5 tasks per transaction, over all calls; production's error. */
static void test_limit_of_five(void **state)
{
    struct fixture *f = *state;
    uint64_t h = begin(f);
    struct af_result r = bulk_add(f, h, 6, -1);
    expect_error(&r, TQ_DS_BAD_REQUEST, "at most 5");
    for (int i = 0; i < 3; i++) {
        r = add(f, h, NULL, NULL, 0);
        expect_ok(&r);
    }
    r = bulk_add(f, h, 3, -1);
    expect_error(&r, TQ_DS_BAD_REQUEST, "has 3, this call adds 3");
    r = bulk_add(f, h, 2, -1);
    expect_ok(&r);
    r = add(f, h, NULL, NULL, 0);
    expect_error(&r, TQ_DS_BAD_REQUEST, "at most 5");
    /* A refused add does not spoil the transaction. */
    r = end_txn(f, "Commit", h);
    expect_ok(&r);
    assert_int_equal(tasks(f, NULL, 0), 5);
}

static void test_named_refused(void **state)
{
    struct fixture *f = *state;
    uint64_t h = begin(f);
    struct af_result r = add(f, h, "named", NULL, 0);
    expect_error(&r, TQ(INVALID_TASK_NAME), "cannot be named");

    /* In a BulkAdd: that task's error, the others SKIPPED, nothing kept. */
    r = bulk_add(f, h, 3, 1);
    assert_int_equal(r.kind, AF_RESULT_OK);
    Af__Taskqueue__TaskQueueBulkAddResponse *resp =
        (Af__Taskqueue__TaskQueueBulkAddResponse *)af_ds_wire_unpack(
            &af__taskqueue__task_queue_bulk_add_response__descriptor, r.response, r.response_len);
    assert_non_null(resp);
    assert_int_equal(resp->n_taskresult, 3);
    assert_int_equal(resp->taskresult[0]->result, TQ(SKIPPED));
    assert_int_equal(resp->taskresult[1]->result, TQ(INVALID_TASK_NAME));
    assert_int_equal(resp->taskresult[2]->result, TQ(SKIPPED));
    protobuf_c_message_free_unpacked(&resp->base, NULL);
    svc_result_free(&r);
    r = end_txn(f, "Commit", h);
    expect_ok(&r);
    assert_int_equal(tasks(f, NULL, 0), 0);
}

static void test_unknown_handle(void **state)
{
    struct fixture *f = *state;
    uint64_t h = begin(f);
    struct af_result r = add(f, h + 1000, NULL, NULL, 0);
    expect_error(&r, TQ_DS_BAD_REQUEST, "does not exist");

    /* One call, two transactions (or some tasks without one): refused. */
    Af__Taskqueue__TaskQueueAddRequest a[2], *ap[2] = {&a[0], &a[1]};
    Af__Taskqueue__Transaction t[2];
    fill_add(&a[0], &t[0], h, NULL);
    fill_add(&a[1], &t[1], 0, NULL);
    Af__Taskqueue__TaskQueueBulkAddRequest b = AF__TASKQUEUE__TASK_QUEUE_BULK_ADD_REQUEST__INIT;
    b.add_request = ap;
    b.n_add_request = 2;
    r = wcall(&af_service_taskqueue, f->tq, "BulkAdd", &b.base);
    expect_error(&r, TQ(INVALID_REQUEST), "same datastore transaction");
    fill_add(&a[1], &t[1], h + 1, NULL);
    r = wcall(&af_service_taskqueue, f->tq, "BulkAdd", &b.base);
    expect_error(&r, TQ(INVALID_REQUEST), "same datastore transaction");
    r = end_txn(f, "Commit", h);
    expect_ok(&r);
    assert_int_equal(tasks(f, NULL, 0), 0);
}

/* Prepare fails after the taskqueue prepared: nothing is applied, the
 * taskqueue's uncommitted tasks are rolled back, the caller hears
 * INTERNAL_ERROR. */
static void test_prepare_failure(void **state)
{
    struct fixture *f = *state;
    struct fake *k = listen_fake(f, true, false);
    uint64_t h = begin(f);
    put(f, "p", h);
    struct af_result r = add(f, h, NULL, NULL, 0);
    expect_ok(&r);
    r = end_txn(f, "Commit", h);
    expect_error(&r, ERR_INTERNAL, "was not committed: the fake could not prepare");
    assert_int_equal(k->prepared, 1);
    assert_int_equal(k->aborted, 1);
    assert_int_equal(k->committed, 0);
    assert_false(exists(f, "p", 0));
    assert_int_equal(tasks(f, NULL, 0), 0);
    /* The taskqueue's store is usable again (its transaction was ended). */
    r = add(f, 0, NULL, NULL, 0);
    expect_ok(&r);
    assert_int_equal(tasks(f, NULL, 0), 1);
}

/* Commit of the other work fails after the datastore committed: the caller
 * hears INTERNAL_ERROR saying the writes are in; the taskqueue's own tasks,
 * which stored fine, stay. */
static void test_commit_failure(void **state)
{
    struct fixture *f = *state;
    struct fake *k = listen_fake(f, false, true);
    uint64_t h = begin(f);
    put(f, "c", h);
    struct af_result r = add(f, h, NULL, NULL, 0);
    expect_ok(&r);
    r = end_txn(f, "Commit", h);
    expect_error(&r, ERR_INTERNAL, "committed its writes, but the fake lost its work");
    assert_int_equal(k->committed, 1);
    assert_int_equal(k->aborted, 0);
    assert_true(exists(f, "c", 0));
    assert_int_equal(tasks(f, NULL, 0), 1);
    /* Rollback reaches every listener. */
    h = begin(f);
    r = end_txn(f, "Rollback", h);
    expect_ok(&r);
    assert_int_equal(k->aborted, 1);
}

/* clear() of either service forgets tasks waiting for a transaction. */
static void test_clear(void **state)
{
    struct fixture *f = *state;
    uint64_t h = begin(f);
    struct af_result r = add(f, h, NULL, NULL, 0);
    expect_ok(&r);
    af_service_taskqueue.clear(f->tq);
    r = end_txn(f, "Commit", h);
    expect_ok(&r);
    assert_int_equal(tasks(f, NULL, 0), 0);

    h = begin(f);
    r = add(f, h, NULL, NULL, 0);
    expect_ok(&r);
    af_service_datastore_v3.clear(f->ds);
    r = add(f, h, NULL, NULL, 0);
    expect_error(&r, TQ_DS_BAD_REQUEST, "does not exist");
    assert_int_equal(tasks(f, NULL, 0), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_commit_enqueues, setup, teardown),
        cmocka_unit_test_setup_teardown(test_rollback_drops, setup, teardown),
        cmocka_unit_test_setup_teardown(test_failed_commit_drops, setup, teardown),
        cmocka_unit_test_setup_teardown(test_idle_transaction_drops, setup, teardown),
        cmocka_unit_test_setup_teardown(test_limit_of_five, setup, teardown),
        cmocka_unit_test_setup_teardown(test_named_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_unknown_handle, setup, teardown),
        cmocka_unit_test_setup_teardown(test_prepare_failure, setup, teardown),
        cmocka_unit_test_setup_teardown(test_commit_failure, setup, teardown),
        cmocka_unit_test_setup_teardown(test_clear, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
