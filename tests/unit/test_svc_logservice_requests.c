/*
 * Unit tests of the logservice's request records: the front end's batches
 * (apiserver/reqlog.h) kept within bounds, joined with app log lines by
 * request id in Read, filtered by module and version, and a damaged batch
 * keeping what precedes the damage.
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

#include "apiserver/services/logservice.c"
#include "tests/unit/svc_call.h"
#include "tests/unit/logservice_batch.h"


static int setup(void **state)
{
    static const struct af_api_module mods[] = {
        {.name = "default", .version = "1"},
        {.name = "worker", .version = "2"},
    };
    static const struct af_api_options opts = {.app_id = "testapp",
                                               .module = "default",
                                               .version = "1",
                                               .modules = mods,
                                               .n_modules = 2};
    *state = af_service_logservice.create(&opts);
    return 0;
}

static int teardown(void **state)
{
    af_service_logservice.destroy(*state);
    return 0;
}

static void test_join_lines_and_records(void **state)
{
    void *st = *state;
    flush_line(st, "rid-a", 1100000, 3, "a's line");
    flush_line(st, "running", 1200000, 1, "still running");
    const struct rec_spec recs[] = {
        {.id = "rid-a", .method = "POST", .resource = "/a?x=1", .status = 201, .start = 1000000,
         .end = 1300000, .size = 12, .ua = "agent \"q\"", .referrer = "http://r/",
         .nickname = "ann", .url_map = "/a.*"},
        {.id = "rid-b", .status = 404, .start = 2000000, .end = 2000500},
    };
    post_ok(st, recs, 2);

    Af__Log__LogReadRequest req = AF__LOG__LOG_READ_REQUEST__INIT;
    req.app_id = "testapp";
    req.has_include_app_logs = true;
    req.include_app_logs = true;
    Af__Log__LogReadResponse *out = do_read(st, &req);
    assert_int_equal(out->n_log, 3);
    /* Newest activity first: rid-b's record, rid-a's record, the running one. */
    Af__Log__RequestLog *b = out->log[0], *a = out->log[1], *r = out->log[2];
    assert_memory_equal(b->request_id.data, "rid-b", 5);
    assert_int_equal(b->status, 404);
    assert_int_equal(b->n_line, 0); /* a request that logged nothing */
    assert_true(b->has_finished && b->finished);
    assert_null(b->user_agent);
    assert_null(b->nickname);

    assert_memory_equal(a->request_id.data, "rid-a", 5);
    assert_string_equal(a->method, "POST");
    assert_string_equal(a->resource, "/a?x=1");
    assert_string_equal(a->http_version, "HTTP/1.1");
    assert_int_equal(a->status, 201);
    assert_int_equal(a->response_size, 12);
    assert_int_equal(a->start_time, 1000000);
    assert_int_equal(a->end_time, 1300000);
    assert_int_equal(a->latency, 300000);
    assert_int_equal(a->mcycles, 0);
    assert_string_equal(a->ip, "127.0.0.1");
    assert_string_equal(a->host, "localhost:8080");
    assert_string_equal(a->nickname, "ann");
    assert_string_equal(a->referrer, "http://r/");
    assert_string_equal(a->user_agent, "agent \"q\"");
    assert_string_equal(a->module_id, "default");
    assert_string_equal(a->version_id, "1");
    assert_string_equal(a->url_map_entry, "/a.*");
    assert_string_equal(b->url_map_entry, ""); /* no handler matched */
    assert_string_equal(a->combined, "127.0.0.1 - ann [01/Jan/1970:00:00:01 +0000] "
                                     "\"POST /a?x=1 HTTP/1.1\" 201 12 \"http://r/\" "
                                     "\"agent \\\"q\\\"\"");
    assert_int_equal(a->n_line, 1);
    assert_string_equal(a->line[0]->log_message, "a's line");
    assert_int_equal(a->line[0]->level, 3);

    assert_memory_equal(r->request_id.data, "running", 7);
    assert_true(r->has_finished && !r->finished);
    assert_string_equal(r->method, "");
    assert_int_equal(r->start_time, 1200000);
    af__log__log_read_response__free_unpacked(out, NULL);

    /* The request id filter finds a record with no lines; a minimum level
     * excludes it (it has no line at all). */
    ProtobufCBinaryData id = {.data = (uint8_t *)"rid-b", .len = 5};
    req.n_request_id = 1;
    req.request_id = &id;
    out = do_read(st, &req);
    assert_int_equal(out->n_log, 1);
    assert_int_equal(out->log[0]->status, 404);
    af__log__log_read_response__free_unpacked(out, NULL);
    req.has_minimum_log_level = true;
    req.minimum_log_level = 0;
    out = do_read(st, &req);
    assert_int_equal(out->n_log, 0);
    af__log__log_read_response__free_unpacked(out, NULL);
}

static void test_module_filter(void **state)
{
    void *st = *state;
    const struct rec_spec recs[] = {
        {.id = "d", .status = 200, .start = 1, .end = 2},
        {.id = "w", .module = 1, .status = 200, .start = 3, .end = 4},
    };
    post_ok(st, recs, 2);
    Af__Log__LogReadRequest req = AF__LOG__LOG_READ_REQUEST__INIT;
    req.app_id = "testapp";
    Af__Log__LogModuleVersion mv = AF__LOG__LOG_MODULE_VERSION__INIT;
    mv.module_id = "worker";
    mv.version_id = "2.123";
    Af__Log__LogModuleVersion *mvp = &mv;
    req.n_module_version = 1;
    req.module_version = &mvp;
    Af__Log__LogReadResponse *out = do_read(st, &req);
    assert_int_equal(out->n_log, 1);
    assert_string_equal(out->log[0]->module_id, "worker");
    assert_string_equal(out->log[0]->version_id, "2");
    af__log__log_read_response__free_unpacked(out, NULL);

    /* version_id names the default module. */
    char *v = "1";
    req.n_module_version = 0;
    req.n_version_id = 1;
    req.version_id = &v;
    out = do_read(st, &req);
    assert_int_equal(out->n_log, 1);
    assert_memory_equal(out->log[0]->request_id.data, "d", 1);
    af__log__log_read_response__free_unpacked(out, NULL);
}

static void test_bounds_and_damage(void **state)
{
    struct log_state *st = *state;
    /* More records than kept, in two batches: the oldest go, whole
     * batches or the front of the oldest. */
    struct batch b = {0};
    char id[32];
    for (int i = 0; i < LOG_MAX_REQUESTS + 10; i++) {
        snprintf(id, sizeof(id), "id-%d", i);
        struct rec_spec r = {.id = id, .status = 200, .start = i, .end = i};
        add(&b, &r);
        if (i == 99) {
            struct af_result res = post(st, &b);
            assert_int_equal(res.kind, AF_RESULT_OK);
        }
    }
    struct af_result res = post(st, &b);
    assert_int_equal(res.kind, AF_RESULT_OK);
    svc_result_free(&res);
    assert_int_equal(st->req_count, LOG_MAX_REQUESTS);
    char *text;
    struct req_record *recs;
    size_t n = unpack_records(st, &recs, &text);
    assert_int_equal(n, LOG_MAX_REQUESTS);
    assert_string_equal(recs[0].id, "id-10");
    assert_string_equal(recs[n - 1].id, "id-10009");
    assert_true(recs[0].seq < recs[1].seq && recs[1].seq < recs[n - 1].seq);
    assert_int_equal(recs[1].seq, recs[0].seq + 1); /* one batch */
    free(recs);
    free(text);

    /* The byte bound: batches of long resources (cut at
     * AF_REQLOG_MAX_STR) drop old batches long before the count bound. */
    char *big = malloc(AF_REQLOG_MAX_STR + 100);
    memset(big, 'r', AF_REQLOG_MAX_STR + 99);
    big[AF_REQLOG_MAX_STR + 99] = '\0';
    for (int k = 0; k < 30; k++) {
        for (int i = 0; i < 100; i++) {
            struct rec_spec r = {.id = "big", .resource = big, .status = 200};
            add(&b, &r);
        }
        res = post(st, &b);
        assert_int_equal(res.kind, AF_RESULT_OK);
    }
    assert_true(st->req_bytes <= LOG_MAX_REQUEST_BYTES);
    assert_true(st->req_count < 3000 && st->req_count >= 1000);
    n = unpack_records(st, &recs, &text);
    assert_int_equal(n, st->req_count);
    assert_int_equal(strlen(recs[n - 1].str[AF_RQ_RESOURCE]), AF_REQLOG_MAX_STR);
    free(recs);
    free(text);
    free(big);

    /* A batch cut short: the whole records before the cut are kept, and
     * the post fails (the backend's error line). */
    log_clear(st);
    struct rec_spec r1 = {.id = "ok-1", .status = 200}, r2 = {.id = "ok-2", .status = 200};
    add(&b, &r1);
    size_t first = b.len;
    add(&b, &r2);
    b.len -= 3; /* the second record is cut short */
    res = post(st, &b);
    assert_int_equal(res.kind, AF_RESULT_APP_ERROR);
    assert_non_null(strstr(res.detail, "record 2"));
    svc_result_free(&res);
    assert_int_equal(st->req_count, 1);
    /* A length over the bound: the same. */
    log_clear(st);
    add(&b, &r1);
    add(&b, &r2);
    struct af_reqlog_head h;
    memcpy(&h, b.buf + first, sizeof(h));
    h.len[AF_RQ_RESOURCE] = AF_REQLOG_MAX_STR + 1;
    memcpy(b.buf + first, &h, sizeof(h));
    res = post(st, &b);
    assert_int_equal(res.kind, AF_RESULT_APP_ERROR);
    svc_result_free(&res);
    n = unpack_records(st, &recs, &text);
    assert_int_equal(n, 1);
    assert_string_equal(recs[0].id, "ok-1");
    free(recs);
    free(text);
    /* Too short for one record: refused, nothing kept. */
    log_clear(st);
    b.buf = malloc(2);
    b.len = 2;
    res = post(st, &b);
    assert_int_equal(res.kind, AF_RESULT_APP_ERROR);
    svc_result_free(&res);
    assert_int_equal(st->req_count, 0);

    /* clear drops records too. */
    log_clear(st);
    assert_int_equal(st->req_count, 0);
    assert_int_equal(st->req_bytes, 0);
    assert_null(st->batches);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_join_lines_and_records, setup, teardown),
        cmocka_unit_test_setup_teardown(test_module_filter, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bounds_and_damage, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
