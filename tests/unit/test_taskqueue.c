/*
 * Unit tests of the "taskqueue" service and queue.yaml: requests in the
 * official encoding (proto2 groups included, packed through
 * datastore_wire.c) go through the service's method table, with a real
 * SQLite store in memory; the runner's internal call is driven the way
 * proxy/taskrunner.c drives it.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "apiserver/services/taskqueue.c"
#include "tests/unit/svc_call.h"

/* struct add literals name the leading fields only; the rest are zero. */
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"

static const char queue_yaml[] = "total_storage_limit: 1G\n"
                                 "queue:\n"
                                 "- name: default\n"
                                 "  rate: 100/s\n"
                                 "  bucket_size: 10\n"
                                 "- name: slow\n"
                                 "  rate: 1/s\n"
                                 "  bucket_size: 2\n"
                                 "- name: one\n"
                                 "  rate: 100/s\n"
                                 "  bucket_size: 10\n"
                                 "  max_concurrent_requests: 1\n"
                                 "  retry_parameters:\n"
                                 "    task_retry_limit: 1\n"
                                 "    min_backoff_seconds: 2\n"
                                 "- name: pullq\n"
                                 "  mode: pull\n";

#define TQ(name) AF__TASKQUEUE__TASK_QUEUE_SERVICE_ERROR__ERROR_CODE__##name

static int setup(void **state)
{
    struct af_queue_yaml *q;
    char err[256];
    assert_int_equal(af_queue_yaml_parse("queue.yaml", queue_yaml, strlen(queue_yaml), &q, err,
                                         sizeof(err)),
                     0);
    struct af_api_options o = {.queues = q}; /* no storage_path: SQLite in memory */
    *state = af_service_taskqueue.create(&o);
    af_queue_yaml_free(q); /* the service keeps its own copy */
    return 0;
}

static int teardown(void **state)
{
    af_service_taskqueue.destroy(*state);
    return 0;
}

/* ---- helpers ------------------------------------------------------------ */

static struct af_result wire_call(void *st, const char *method, const ProtobufCMessage *m)
{
    size_t len;
    uint8_t *buf = af_ds_wire_pack(m, &len);
    struct af_result r = svc_call_raw(&af_service_taskqueue, st, method, "req-1", buf, len);
    free(buf);
    return r;
}

static ProtobufCBinaryData bin(const char *s)
{
    return (ProtobufCBinaryData){.len = strlen(s), .data = (uint8_t *)s};
}

struct add {
    const char *queue, *name, *url, *body;
    int64_t eta; /* 0: now */
    bool pull;
    const char *tag;
};

static void fill_add(Af__Taskqueue__TaskQueueAddRequest *a, const struct add *x,
                     Af__Taskqueue__TaskQueueAddRequest__Header *h,
                     Af__Taskqueue__TaskQueueAddRequest__Header **hp)
{
    af__taskqueue__task_queue_add_request__init(a);
    a->queue_name = bin(x->queue);
    a->task_name = bin(x->name ? x->name : "");
    a->eta_usec = x->eta ? x->eta : now_usec();
    if (x->pull) {
        a->has_mode = true;
        a->mode = AF__TASKQUEUE__TASK_QUEUE_MODE__MODE__PULL;
    } else {
        a->has_url = x->url != NULL;
        if (x->url)
            a->url = bin(x->url);
        af__taskqueue__task_queue_add_request__header__init(h);
        h->key = bin("X-Test");
        h->value = bin("yes");
        hp[0] = h;
        a->n_header = 1;
        a->header = hp;
    }
    if (x->body) {
        a->has_body = true;
        a->body = bin(x->body);
    }
    if (x->tag) {
        a->has_tag = true;
        a->tag = bin(x->tag);
    }
}

/* Adds one task; returns the application error code (0 when added). */
static int add(void *st, struct add x, char *chosen, size_t chosen_len)
{
    Af__Taskqueue__TaskQueueAddRequest a;
    Af__Taskqueue__TaskQueueAddRequest__Header h, *hp[1];
    fill_add(&a, &x, &h, hp);
    struct af_result r = wire_call(st, "Add", &a.base);
    int code = r.kind == AF_RESULT_OK ? 0 : r.code;
    if (r.kind != AF_RESULT_OK)
        assert_int_equal(r.kind, AF_RESULT_APP_ERROR);
    if (chosen && r.kind == AF_RESULT_OK) {
        Af__Taskqueue__TaskQueueAddResponse *resp =
            af__taskqueue__task_queue_add_response__unpack(NULL, r.response_len, r.response);
        assert_non_null(resp);
        snprintf(chosen, chosen_len, "%.*s", (int)resp->chosen_task_name.len,
                 resp->chosen_task_name.data);
        af__taskqueue__task_queue_add_response__free_unpacked(resp, NULL);
    }
    svc_result_free(&r);
    return code;
}

/* svc_call looks a method up in the public table; RunnerPoll lives in the
 * internal one, so the tests reach it through this alias table. */
static const struct af_service internal_view = {
    .name = "taskqueue",
    .methods = tq_internal,
};
static struct af_result svc_call_internal(void *st, const char *method, const ProtobufCMessage *m)
{
    size_t len = protobuf_c_message_get_packed_size(m);
    uint8_t *buf = malloc(len ? len : 1);
    protobuf_c_message_pack(m, buf);
    struct af_result r = svc_call_raw(&internal_view, st, method, "", buf, len);
    free(buf);
    return r;
}

static Af__Taskqueue__RunnerPollResponse *poll_runner(void *st, int capacity,
                                                      Af__Taskqueue__RunnerResult **results,
                                                      size_t n)
{
    Af__Taskqueue__RunnerPoll p = AF__TASKQUEUE__RUNNER_POLL__INIT;
    p.capacity = capacity;
    p.result = results;
    p.n_result = n;
    struct af_result r = svc_call_internal(st, "RunnerPoll", &p.base);
    assert_int_equal(r.kind, AF_RESULT_OK);
    Af__Taskqueue__RunnerPollResponse *resp =
        af__taskqueue__runner_poll_response__unpack(NULL, r.response_len, r.response);
    svc_result_free(&r);
    assert_non_null(resp);
    return resp;
}

static void report(void *st, const Af__Taskqueue__RunnerTask *t, int status)
{
    Af__Taskqueue__RunnerResult res = AF__TASKQUEUE__RUNNER_RESULT__INIT;
    res.queue_name = t->queue_name;
    res.task_name = t->task_name;
    res.lease = t->lease;
    res.status = status;
    Af__Taskqueue__RunnerResult *rp[1] = {&res};
    af__taskqueue__runner_poll_response__free_unpacked(poll_runner(st, 0, rp, 1), NULL);
}

static int64_t count(void *st, const char *queue)
{
    int64_t n, oldest;
    assert_int_equal(af_tq_store_count(((struct tq_state *)st)->store, queue, &n, &oldest), 0);
    return n;
}

/* ---- queue.yaml --------------------------------------------------------- */

static void yaml_error(const char *text, const char *want)
{
    struct af_queue_yaml *q = NULL;
    char err[512];
    assert_int_equal(af_queue_yaml_parse("queue.yaml", text, strlen(text), &q, err, sizeof(err)),
                     -1);
    assert_null(q);
    if (!strstr(err, want))
        fail_msg("error \"%s\" does not contain \"%s\"", err, want);
    assert_null(strchr(err, '\n'));
}

static void test_queue_yaml(void **unused)
{
    struct af_queue_yaml *q;
    char err[256];
    assert_int_equal(af_queue_yaml_parse("queue.yaml", queue_yaml, strlen(queue_yaml), &q, err,
                                         sizeof(err)),
                     0);
    assert_int_equal(q->n, 4);
    const struct af_queue_def *d = af_queue_yaml_find(q, "slow");
    assert_non_null(d);
    assert_true(d->rate == 1.0 && d->bucket_size == 2 && !d->pull);
    d = af_queue_yaml_find(q, "one");
    assert_int_equal(d->max_concurrent, 1);
    assert_int_equal(d->retry.retry_limit, 1);
    assert_true(d->retry.min_backoff_sec == 2.0 && d->retry.max_backoff_sec == 3600);
    assert_true(af_queue_yaml_find(q, "pullq")->pull);
    af_queue_yaml_free(q);

    /* No queue "default" in the file: it is there anyway. */
    const char *other = "queue:\n- name: q1\n  rate: 10/m\n  retry_parameters:\n"
                        "    task_age_limit: 2h\n";
    assert_int_equal(af_queue_yaml_parse("queue.yaml", other, strlen(other), &q, err, sizeof(err)),
                     0);
    assert_non_null(af_queue_yaml_find(q, "default"));
    d = af_queue_yaml_find(q, "q1");
    assert_true(d->rate > 0.166 && d->rate < 0.167);
    assert_int_equal(d->retry.age_limit_sec, 7200);
    af_queue_yaml_free(q);
    assert_int_equal(af_queue_yaml_parse("queue.yaml", "", 0, &q, err, sizeof(err)), 0);
    assert_int_equal(q->n, 1);
    af_queue_yaml_free(q);

    yaml_error("queue:\n- name: a\n  rate: fast\n", "queue.yaml:3:9: rate");
    /* A value quoted in the message cannot break it over two lines. */
    yaml_error("queue:\n- name: a\n  rate: \"fa\\r\\nst\"\n", "queue.yaml:3:9: rate: 'fa??st'");
    yaml_error("queue:\n- name: a\n  rate: 5/x\n", "queue.yaml:3:9:");
    yaml_error("queue:\n- name: bad_name\n  rate: 5/s\n", "queue.yaml:2:9: name");
    yaml_error("queue:\n- name: a\n  rate: 1/s\n- name: a\n  rate: 1/s\n",
               "queue.yaml:4:9: queue 'a' is defined twice");
    yaml_error("queue:\n- name: a\n", "queue.yaml:2:3: queue 'a': a push queue needs a rate");
    yaml_error("queue:\n- name: p\n  mode: pull\n  rate: 1/s\n", "queue.yaml:4:9:");
    yaml_error("queue:\n- name: default\n  mode: pull\n", "always a push queue");
    yaml_error("queue:\n- name: a\n  rate: 1/s\n  mode: sideways\n", "queue.yaml:4:9: mode");
    yaml_error("queue:\n- name: a\n  rate: 1/s\n  bucket_size: 0\n", "bucket_size");
    yaml_error("queue:\n- name: a\n  rate: 1/s\n  retry_parameters:\n    min_backoff_seconds: 9\n"
               "    max_backoff_seconds: 1\n",
               "min_backoff_seconds (9) is larger");
    yaml_error("queue:\n- name: a\n  rate: 1/s\n  retry_parameters:\n    task_age_limit: soon\n",
               "task_age_limit");
    yaml_error("queue: [unclosed\n", "queue.yaml:");
    yaml_error("queue: 5\n", "expected a list");
    yaml_error("queue:\n- rate: 1/s\n", "a queue needs a name");
}

/* ---- retries ------------------------------------------------------------- */

static void test_backoff_and_limits(void **unused)
{
    struct af_queue_retry r;
    af_queue_retry_defaults(&r);
    r.min_backoff_sec = 1;
    r.max_backoff_sec = 100;
    r.max_doublings = 2;
    /* 1, 2, 4, then +4 each time: 8, 12, ...; capped at 100. */
    assert_true(backoff_sec(&r, 1) == 1 && backoff_sec(&r, 2) == 2 && backoff_sec(&r, 3) == 4);
    assert_true(backoff_sec(&r, 4) == 8 && backoff_sec(&r, 5) == 12);
    assert_true(backoff_sec(&r, 1000) == 100);

    int64_t now = 1000 * USEC;
    r.retry_limit = 2;
    assert_false(retries_exhausted(&r, 2, now - 1, now));
    assert_true(retries_exhausted(&r, 3, now - 1, now));
    r.age_limit_sec = 10; /* both limits: both must be reached */
    assert_false(retries_exhausted(&r, 3, now - 5 * USEC, now));
    assert_true(retries_exhausted(&r, 3, now - 11 * USEC, now));
    r.retry_limit = -1;
    assert_true(retries_exhausted(&r, 1, now - 11 * USEC, now));
}

/* ---- the API -------------------------------------------------------------- */

static void test_add_and_errors(void **state)
{
    void *st = *state;
    char chosen[64];
    int64_t far = now_usec() + 3600 * USEC;
    assert_int_equal(add(st, (struct add){"default", "", "/x", NULL, far}, chosen, sizeof(chosen)),
                     0);
    assert_true(strlen(chosen) == 19);
    assert_int_equal(add(st, (struct add){"default", "named", "/x", "b", far}, NULL, 0), 0);
    assert_int_equal(add(st, (struct add){"default", "named", "/x", NULL, far}, NULL, 0),
                     TQ(TASK_ALREADY_EXISTS));
    assert_int_equal(add(st, (struct add){"nosuch", "", "/x"}, NULL, 0), TQ(UNKNOWN_QUEUE));
    assert_int_equal(add(st, (struct add){"no way", "", "/x"}, NULL, 0), TQ(INVALID_QUEUE_NAME));
    assert_int_equal(add(st, (struct add){"default", "a.b", "/x"}, NULL, 0),
                     TQ(INVALID_TASK_NAME));
    assert_int_equal(add(st, (struct add){"default", "", "x"}, NULL, 0), TQ(INVALID_URL));
    assert_int_equal(add(st, (struct add){"default", "", "/x", NULL, -1}, NULL, 0),
                     TQ(INVALID_ETA));
    assert_int_equal(add(st, (struct add){"default", "", NULL, NULL, 0, true}, NULL, 0),
                     TQ(INVALID_QUEUE_MODE));
    assert_int_equal(add(st, (struct add){"pullq", "", "/x"}, NULL, 0), TQ(INVALID_QUEUE_MODE));
    char *big = malloc(200 * 1024);
    memset(big, 'x', 200 * 1024 - 1);
    big[200 * 1024 - 1] = '\0';
    assert_int_equal(add(st, (struct add){"default", "", "/x", big}, NULL, 0),
                     TQ(TASK_TOO_LARGE));
    assert_int_equal(add(st, (struct add){"pullq", "", NULL, big, 0, true}, NULL, 0), 0);
    free(big);
    assert_int_equal(count(st, "default"), 2);

    /* Delete: OK, then TOMBSTONED_TASK; an unknown name is UNKNOWN_TASK. */
    Af__Taskqueue__TaskQueueDeleteRequest d = AF__TASKQUEUE__TASK_QUEUE_DELETE_REQUEST__INIT;
    ProtobufCBinaryData names[2] = {bin("named"), bin("never")};
    d.queue_name = bin("default");
    d.task_name = names;
    d.n_task_name = 2;
    struct af_result r = wire_call(st, "Delete", &d.base);
    assert_int_equal(r.kind, AF_RESULT_OK);
    Af__Taskqueue__TaskQueueDeleteResponse *dr =
        af__taskqueue__task_queue_delete_response__unpack(NULL, r.response_len, r.response);
    assert_int_equal(dr->n_result, 2);
    assert_int_equal(dr->result[0], TQ(OK));
    assert_int_equal(dr->result[1], TQ(UNKNOWN_TASK));
    af__taskqueue__task_queue_delete_response__free_unpacked(dr, NULL);
    svc_result_free(&r);
    assert_int_equal(add(st, (struct add){"default", "named", "/x", NULL, far}, NULL, 0),
                     TQ(TOMBSTONED_TASK));

    /* Purge empties the queue. */
    Af__Taskqueue__TaskQueuePurgeQueueRequest p = AF__TASKQUEUE__TASK_QUEUE_PURGE_QUEUE_REQUEST__INIT;
    p.queue_name = bin("default");
    r = wire_call(st, "PurgeQueue", &p.base);
    assert_int_equal(r.kind, AF_RESULT_OK);
    svc_result_free(&r);
    assert_int_equal(count(st, "default"), 0);
}

static void test_bulk_add(void **state)
{
    void *st = *state;
    int64_t far = now_usec() + 3600 * USEC;
    Af__Taskqueue__TaskQueueAddRequest a[3];
    Af__Taskqueue__TaskQueueAddRequest__Header h[3], *hp[3][1];
    Af__Taskqueue__TaskQueueAddRequest *ap[3] = {&a[0], &a[1], &a[2]};
    struct add x[3] = {{"default", "b1", "/x", NULL, far},
                       {"default", "", "/x", NULL, far},
                       {"default", "b1", "/x", NULL, far}};
    for (int i = 0; i < 3; i++)
        fill_add(&a[i], &x[i], &h[i], hp[i]);
    Af__Taskqueue__TaskQueueBulkAddRequest b = AF__TASKQUEUE__TASK_QUEUE_BULK_ADD_REQUEST__INIT;
    b.add_request = ap;
    b.n_add_request = 3;
    struct af_result r = wire_call(st, "BulkAdd", &b.base);
    assert_int_equal(r.kind, AF_RESULT_OK);
    Af__Taskqueue__TaskQueueBulkAddResponse *resp =
        (Af__Taskqueue__TaskQueueBulkAddResponse *)af_ds_wire_unpack(
            &af__taskqueue__task_queue_bulk_add_response__descriptor, r.response, r.response_len);
    assert_non_null(resp);
    assert_int_equal(resp->n_taskresult, 3);
    assert_int_equal(resp->taskresult[0]->result, TQ(SKIPPED));
    assert_int_equal(resp->taskresult[1]->result, TQ(SKIPPED));
    assert_int_equal(resp->taskresult[2]->result, TQ(DUPLICATE_TASK_NAME));
    protobuf_c_message_free_unpacked(&resp->base, NULL);
    svc_result_free(&r);
    assert_int_equal(count(st, "default"), 0);

    /* Without the duplicate, both are added; the chosen name comes back. */
    b.n_add_request = 2;
    r = wire_call(st, "BulkAdd", &b.base);
    resp = (Af__Taskqueue__TaskQueueBulkAddResponse *)af_ds_wire_unpack(
        &af__taskqueue__task_queue_bulk_add_response__descriptor, r.response, r.response_len);
    assert_int_equal(resp->taskresult[0]->result, TQ(OK));
    assert_false(resp->taskresult[0]->has_chosen_task_name);
    assert_int_equal(resp->taskresult[1]->result, TQ(OK));
    assert_true(resp->taskresult[1]->has_chosen_task_name);
    protobuf_c_message_free_unpacked(&resp->base, NULL);
    svc_result_free(&r);
    assert_int_equal(count(st, "default"), 2);

    /* The official bytes of the response carry TaskResult as a group. */
    r = wire_call(st, "BulkAdd", &b.base);
    assert_int_equal(r.response[0], (1 << 3) | 3);
    svc_result_free(&r);
}

static void test_query_tasks(void **state)
{
    void *st = *state;
    int64_t eta = now_usec() + 3600 * USEC;
    assert_int_equal(add(st, (struct add){"default", "q1", "/work?a=1", "body", eta}, NULL, 0), 0);
    Af__Taskqueue__TaskQueueQueryTasksRequest q = AF__TASKQUEUE__TASK_QUEUE_QUERY_TASKS_REQUEST__INIT;
    q.queue_name = bin("default");
    q.has_max_rows = true;
    q.max_rows = 10;
    struct af_result r = wire_call(st, "QueryTasks", &q.base);
    assert_int_equal(r.kind, AF_RESULT_OK);
    Af__Taskqueue__TaskQueueQueryTasksResponse *resp =
        (Af__Taskqueue__TaskQueueQueryTasksResponse *)af_ds_wire_unpack(
            &af__taskqueue__task_queue_query_tasks_response__descriptor, r.response,
            r.response_len);
    assert_non_null(resp);
    assert_int_equal(resp->n_task, 1);
    Af__Taskqueue__TaskQueueQueryTasksResponse__Task *t = resp->task[0];
    assert_memory_equal(t->task_name.data, "q1", 2);
    assert_int_equal(t->eta_usec, eta);
    assert_memory_equal(t->url.data, "/work?a=1", 9);
    assert_int_equal(t->n_header, 1);
    assert_memory_equal(t->header[0]->key.data, "X-Test", 6);
    assert_int_equal(t->body_size, 4);
    protobuf_c_message_free_unpacked(&resp->base, NULL);
    svc_result_free(&r);
}

static void test_runner_runs_and_retries(void **state)
{
    struct tq_state *st = *state;
    char chosen[64];
    assert_int_equal(add(st, (struct add){"one", "", "/run", "data"}, chosen, sizeof(chosen)), 0);
    /* The task is due now: the runner gets it with everything it needs. */
    Af__Taskqueue__RunnerPollResponse *p = poll_runner(st, 10, NULL, 0);
    assert_int_equal(p->n_task, 1);
    Af__Taskqueue__RunnerTask *t = p->task[0];
    assert_string_equal(t->queue_name, "one");
    assert_string_equal(t->task_name, chosen);
    assert_string_equal(t->method, "POST");
    assert_string_equal(t->url, "/run");
    assert_int_equal(t->body.len, 4);
    assert_int_equal(t->n_header, 1);
    assert_string_equal(t->header[0]->key, "X-Test");
    assert_int_equal(t->retry_count, 0);
    assert_false(p->has_next_poll_usec);

    /* Running: not handed out twice. */
    Af__Taskqueue__RunnerPollResponse *again = poll_runner(st, 10, NULL, 0);
    assert_int_equal(again->n_task, 0);
    af__taskqueue__runner_poll_response__free_unpacked(again, NULL);

    /* A 500: retried after min_backoff (2 s), announced as the next poll. */
    int64_t before = now_usec();
    report(st, t, 500);
    again = poll_runner(st, 10, NULL, 0);
    assert_int_equal(again->n_task, 0);
    assert_true(again->has_next_poll_usec);
    assert_true(again->next_poll_usec >= before + 2 * USEC);
    af__taskqueue__runner_poll_response__free_unpacked(again, NULL);
    struct af_tq_task row = {0};
    bool found;
    assert_int_equal(af_tq_store_get(st->store, "one", chosen, &row, &found), 0);
    assert_true(found);
    assert_int_equal(row.retry_count, 1);
    assert_int_equal(row.exec_count, 1);
    assert_int_equal(row.last_status, 500);

    /* Due again (made so by hand): retried with the counts; a second failure
     * is over task_retry_limit 1, and the task is gone. */
    row.eta = now_usec();
    assert_int_equal(af_tq_store_update(st->store, &row), 0);
    af_tq_task_release(&row);
    again = poll_runner(st, 10, NULL, 0);
    assert_int_equal(again->n_task, 1);
    assert_int_equal(again->task[0]->retry_count, 1);
    assert_true(again->task[0]->has_previous_status);
    assert_int_equal(again->task[0]->previous_status, 500);
    report(st, again->task[0], 0);
    assert_int_equal(count(st, "one"), 0);
    af__taskqueue__runner_poll_response__free_unpacked(again, NULL);
    af__taskqueue__runner_poll_response__free_unpacked(p, NULL);

    /* A 2xx deletes, and the name is tombstoned. */
    assert_int_equal(add(st, (struct add){"default", "ok1", "/ok"}, NULL, 0), 0);
    p = poll_runner(st, 10, NULL, 0);
    assert_int_equal(p->n_task, 1);
    report(st, p->task[0], 204);
    af__taskqueue__runner_poll_response__free_unpacked(p, NULL);
    assert_int_equal(count(st, "default"), 0);
    assert_int_equal(add(st, (struct add){"default", "ok1", "/ok"}, NULL, 0),
                     TQ(TOMBSTONED_TASK));
}

static void test_runner_rate_and_concurrency(void **state)
{
    void *st = *state;
    /* "slow": 1/s with a bucket of 2: two at once, then one a second. */
    for (int i = 0; i < 4; i++)
        assert_int_equal(add(st, (struct add){"slow", "", "/s"}, NULL, 0), 0);
    int64_t t0 = now_usec();
    Af__Taskqueue__RunnerPollResponse *p = poll_runner(st, 10, NULL, 0);
    assert_int_equal(p->n_task, 2);
    assert_true(p->has_next_poll_usec);
    assert_true(p->next_poll_usec > t0 + 500000 && p->next_poll_usec < t0 + 1500000);
    af__taskqueue__runner_poll_response__free_unpacked(p, NULL);

    /* "one": one at a time whatever the bucket; the runner's capacity
     * counts too. */
    for (int i = 0; i < 3; i++)
        assert_int_equal(add(st, (struct add){"one", "", "/o"}, NULL, 0), 0);
    p = poll_runner(st, 0, NULL, 0);
    assert_int_equal(p->n_task, 0);
    af__taskqueue__runner_poll_response__free_unpacked(p, NULL);
    p = poll_runner(st, 10, NULL, 0);
    assert_int_equal(p->n_task, 1);
    Af__Taskqueue__RunnerPollResponse *q = poll_runner(st, 10, NULL, 0);
    assert_int_equal(q->n_task, 0);
    af__taskqueue__runner_poll_response__free_unpacked(q, NULL);
    report(st, p->task[0], 200);
    q = poll_runner(st, 10, NULL, 0);
    assert_int_equal(q->n_task, 1);
    af__taskqueue__runner_poll_response__free_unpacked(q, NULL);
    af__taskqueue__runner_poll_response__free_unpacked(p, NULL);
}

static void test_notify_on_due_add(void **state)
{
    void *st = *state;
    Af__Taskqueue__RunnerPollResponse *p = poll_runner(st, 10, NULL, 0);
    af__taskqueue__runner_poll_response__free_unpacked(p, NULL);
    Af__Taskqueue__TaskQueueAddRequest a;
    Af__Taskqueue__TaskQueueAddRequest__Header h, *hp[1];
    /* Due in an hour: the runner need not hear of it... */
    struct add x = {"default", "later", "/x", NULL, now_usec() + 3600 * USEC};
    fill_add(&a, &x, &h, hp);
    struct af_result r = wire_call(st, "Add", &a.base);
    assert_int_equal(r.kind, AF_RESULT_OK);
    assert_true(r.notify_main); /* it was told "nothing to wait for" */
    svc_result_free(&r);
    p = poll_runner(st, 10, NULL, 0);
    assert_true(p->has_next_poll_usec);
    af__taskqueue__runner_poll_response__free_unpacked(p, NULL);
    /* ...once it knows about it, a task due later still says nothing... */
    struct add y = {"default", "later2", "/x", NULL, now_usec() + 7200 * USEC};
    fill_add(&a, &y, &h, hp);
    r = wire_call(st, "Add", &a.base);
    assert_false(r.notify_main);
    svc_result_free(&r);
    /* ...and a task due now does. */
    struct add z = {"default", "now", "/x"};
    fill_add(&a, &z, &h, hp);
    r = wire_call(st, "Add", &a.base);
    assert_true(r.notify_main);
    svc_result_free(&r);
}

static void test_pull_lease(void **state)
{
    void *st = *state;
    assert_int_equal(add(st, (struct add){"pullq", "p1", NULL, "one", 0, true, "red"}, NULL, 0), 0);
    assert_int_equal(add(st, (struct add){"pullq", "p2", NULL, "two", 0, true, "blue"}, NULL, 0),
                     0);
    Af__Taskqueue__TaskQueueQueryAndOwnTasksRequest l =
        AF__TASKQUEUE__TASK_QUEUE_QUERY_AND_OWN_TASKS_REQUEST__INIT;
    l.queue_name = bin("pullq");
    l.lease_seconds = 60;
    l.max_tasks = 10;
    l.has_group_by_tag = true;
    l.group_by_tag = true; /* no tag: the oldest task's */
    struct af_result r = wire_call(st, "QueryAndOwnTasks", &l.base);
    assert_int_equal(r.kind, AF_RESULT_OK);
    Af__Taskqueue__TaskQueueQueryAndOwnTasksResponse *resp =
        (Af__Taskqueue__TaskQueueQueryAndOwnTasksResponse *)af_ds_wire_unpack(
            &af__taskqueue__task_queue_query_and_own_tasks_response__descriptor, r.response,
            r.response_len);
    assert_int_equal(resp->n_task, 1);
    assert_memory_equal(resp->task[0]->task_name.data, "p1", 2);
    assert_memory_equal(resp->task[0]->body.data, "one", 3);
    assert_int_equal(resp->task[0]->retry_count, 1);
    int64_t eta = resp->task[0]->eta_usec;
    protobuf_c_message_free_unpacked(&resp->base, NULL);
    svc_result_free(&r);

    Af__Taskqueue__TaskQueueModifyTaskLeaseRequest m =
        AF__TASKQUEUE__TASK_QUEUE_MODIFY_TASK_LEASE_REQUEST__INIT;
    m.queue_name = bin("pullq");
    m.task_name = bin("p1");
    m.eta_usec = eta + 1; /* not the lease's eta */
    m.lease_seconds = 5;
    r = wire_call(st, "ModifyTaskLease", &m.base);
    assert_int_equal(r.kind, AF_RESULT_APP_ERROR);
    assert_int_equal(r.code, TQ(TASK_LEASE_EXPIRED));
    svc_result_free(&r);
    m.eta_usec = eta;
    r = wire_call(st, "ModifyTaskLease", &m.base);
    assert_int_equal(r.kind, AF_RESULT_OK);
    svc_result_free(&r);
    l.lease_seconds = -1;
    r = wire_call(st, "QueryAndOwnTasks", &l.base);
    assert_int_equal(r.code, TQ(INVALID_REQUEST));
    svc_result_free(&r);
    /* Pull calls on a push queue are refused. */
    l.lease_seconds = 1;
    l.queue_name = bin("default");
    r = wire_call(st, "QueryAndOwnTasks", &l.base);
    assert_int_equal(r.code, TQ(INVALID_QUEUE_MODE));
    svc_result_free(&r);
}

static void test_stats_and_queues(void **state)
{
    void *st = *state;
    int64_t eta = now_usec() + 3600 * USEC;
    assert_int_equal(add(st, (struct add){"slow", "s1", "/s", NULL, eta}, NULL, 0), 0);
    Af__Taskqueue__TaskQueueFetchQueueStatsRequest s =
        AF__TASKQUEUE__TASK_QUEUE_FETCH_QUEUE_STATS_REQUEST__INIT;
    ProtobufCBinaryData qn[2] = {bin("slow"), bin("default")};
    s.queue_name = qn;
    s.n_queue_name = 2;
    struct af_result r = wire_call(st, "FetchQueueStats", &s.base);
    assert_int_equal(r.kind, AF_RESULT_OK);
    Af__Taskqueue__TaskQueueFetchQueueStatsResponse *resp =
        (Af__Taskqueue__TaskQueueFetchQueueStatsResponse *)af_ds_wire_unpack(
            &af__taskqueue__task_queue_fetch_queue_stats_response__descriptor, r.response,
            r.response_len);
    assert_int_equal(resp->n_queuestats, 2);
    assert_int_equal(resp->queuestats[0]->num_tasks, 1);
    assert_int_equal(resp->queuestats[0]->oldest_eta_usec, eta);
    assert_int_equal(resp->queuestats[1]->num_tasks, 0);
    assert_int_equal(resp->queuestats[1]->oldest_eta_usec, -1);
    protobuf_c_message_free_unpacked(&resp->base, NULL);
    svc_result_free(&r);
    qn[1] = bin("nosuch");
    r = wire_call(st, "FetchQueueStats", &s.base);
    assert_int_equal(r.code, TQ(UNKNOWN_QUEUE));
    svc_result_free(&r);

    Af__Taskqueue__TaskQueueFetchQueuesRequest f = AF__TASKQUEUE__TASK_QUEUE_FETCH_QUEUES_REQUEST__INIT;
    f.max_rows = 100;
    r = wire_call(st, "FetchQueues", &f.base);
    Af__Taskqueue__TaskQueueFetchQueuesResponse *fr =
        (Af__Taskqueue__TaskQueueFetchQueuesResponse *)af_ds_wire_unpack(
            &af__taskqueue__task_queue_fetch_queues_response__descriptor, r.response,
            r.response_len);
    assert_non_null(fr);
    assert_int_equal(fr->n_queue, 4);
    assert_string_equal(fr->queue[1]->user_specified_rate, "1/s");
    protobuf_c_message_free_unpacked(&fr->base, NULL);
    svc_result_free(&r);
}

static void test_undecodable(void **state)
{
    static const uint8_t junk[] = {0xff, 0xff, 0xff, 0x01, 0x0a};
    for (const struct af_method *m = tq_methods; m->name; m++) {
        struct af_result r = svc_call_raw(&af_service_taskqueue, *state, m->name, "", junk,
                                          sizeof(junk));
        assert_int_equal(r.kind, AF_RESULT_APP_ERROR);
        assert_int_equal(r.code, TQ(INVALID_REQUEST));
        svc_result_free(&r);
        /* An empty request misses required fields, or is a valid empty one. */
        r = svc_call_raw(&af_service_taskqueue, *state, m->name, "", junk, 0);
        assert_true(r.kind == AF_RESULT_APP_ERROR || r.kind == AF_RESULT_OK);
        svc_result_free(&r);
    }
    struct af_result r = svc_call_raw(&internal_view, *state, "RunnerPoll", "", junk,
                                      sizeof(junk));
    assert_int_equal(r.kind, AF_RESULT_APP_ERROR);
    svc_result_free(&r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_queue_yaml),
        cmocka_unit_test(test_backoff_and_limits),
        cmocka_unit_test_setup_teardown(test_add_and_errors, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bulk_add, setup, teardown),
        cmocka_unit_test_setup_teardown(test_query_tasks, setup, teardown),
        cmocka_unit_test_setup_teardown(test_runner_runs_and_retries, setup, teardown),
        cmocka_unit_test_setup_teardown(test_runner_rate_and_concurrency, setup, teardown),
        cmocka_unit_test_setup_teardown(test_notify_on_due_add, setup, teardown),
        cmocka_unit_test_setup_teardown(test_pull_lease, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stats_and_queues, setup, teardown),
        cmocka_unit_test_setup_teardown(test_undecodable, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
