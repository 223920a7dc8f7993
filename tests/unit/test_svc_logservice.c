/*
 * Unit tests of "logservice": Flush keeps and prints app log lines per
 * request, Read gives them back grouped by request, within bounds.
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

static struct af_result call_raw(void *state, const char *method, const char *request_id,
                                 const uint8_t *req, size_t len)
{
    return svc_call_raw(&af_service_logservice, state, method, request_id, req, len);
}

static uint8_t *pack(const ProtobufCMessage *msg, size_t *len)
{
    *len = protobuf_c_message_get_packed_size(msg);
    uint8_t *buf = malloc(*len ? *len : 1);
    protobuf_c_message_pack(msg, buf);
    return buf;
}


struct line_spec {
    int64_t usec;
    int64_t level;
    const char *msg;
};

/* Flushes lines as one UserAppLogGroup inside a FlushRequest, the way the
 * client libraries do, and returns the result. */
static struct af_result flush_lines(void *st, const char *request_id, const struct line_spec *specs,
                                    size_t n)
{
    Af__Log__UserAppLogLine *lines = calloc(n ? n : 1, sizeof(*lines));
    Af__Log__UserAppLogLine **ptrs = calloc(n ? n : 1, sizeof(*ptrs));
    for (size_t i = 0; i < n; i++) {
        af__log__user_app_log_line__init(&lines[i]);
        lines[i].timestamp_usec = specs[i].usec;
        lines[i].level = specs[i].level;
        lines[i].message = (char *)specs[i].msg;
        ptrs[i] = &lines[i];
    }
    Af__Log__UserAppLogGroup group = AF__LOG__USER_APP_LOG_GROUP__INIT;
    group.n_log_line = n;
    group.log_line = ptrs;
    size_t glen;
    uint8_t *g = pack(&group.base, &glen);
    Af__Log__FlushRequest req = AF__LOG__FLUSH_REQUEST__INIT;
    req.has_logs = true;
    req.logs.data = g;
    req.logs.len = glen;
    size_t len;
    uint8_t *buf = pack(&req.base, &len);
    struct af_result res = call_raw(st, "Flush", request_id, buf, len);
    free(buf);
    free(g);
    free(ptrs);
    free(lines);
    return res;
}

static void flush_ok(void *st, const char *request_id, const struct line_spec *specs, size_t n)
{
    struct af_result res = flush_lines(st, request_id, specs, n);
    assert_int_equal(res.kind, AF_RESULT_OK);
    assert_int_equal(res.response_len, 0);
    svc_result_free(&res);
}

/* Runs Read; returns the decoded response (caller frees) or NULL on error
 * with *res holding the error. */
static Af__Log__LogReadResponse *read_logs_msg(void *st, const Af__Log__LogReadRequest *req,
                                               struct af_result *res)
{
    size_t len;
    uint8_t *buf = pack(&req->base, &len);
    *res = call_raw(st, "Read", "reader", buf, len);
    free(buf);
    if (res->kind != AF_RESULT_OK)
        return NULL;
    Af__Log__LogReadResponse *out =
        af__log__log_read_response__unpack(NULL, res->response_len, res->response);
    assert_non_null(out);
    return out;
}

static int setup(void **state)
{
    static const struct af_api_options opts = {
        .app_id = "testapp", .module = "default", .version = "1"};
    *state = af_service_logservice.create(&opts);
    return 0;
}

static int teardown(void **state)
{
    af_service_logservice.destroy(*state);
    return 0;
}

static const struct line_spec req_a[] = {
    {1000000, 1, "a first"},
    {1500000, 3, "a error"},
    {2000000, 0, "a debug"},
};
static const struct line_spec req_b[] = {
    {3000000, 2, "b warning"},
};

static void test_flush_then_read(void **state)
{
    flush_ok(*state, "req-a", req_a, 2);
    flush_ok(*state, "req-b", req_b, 1);
    flush_ok(*state, "req-a", req_a + 2, 1); /* a second flush of the same request */

    Af__Log__LogReadRequest req = AF__LOG__LOG_READ_REQUEST__INIT;
    req.app_id = "dev~testapp";
    req.has_include_app_logs = true;
    req.include_app_logs = true;
    struct af_result res;
    Af__Log__LogReadResponse *out = read_logs_msg(*state, &req, &res);
    assert_non_null(out);
    assert_int_equal(out->n_log, 2);
    assert_null(out->offset); /* nothing more */

    /* Newest activity first: req-a flushed last. */
    Af__Log__RequestLog *a = out->log[0], *b = out->log[1];
    assert_int_equal(a->request_id.len, 5);
    assert_memory_equal(a->request_id.data, "req-a", 5);
    assert_memory_equal(b->request_id.data, "req-b", 5);
    assert_string_equal(a->app_id, "testapp");
    assert_string_equal(a->version_id, "1");
    assert_string_equal(a->module_id, "default");
    assert_int_equal(a->start_time, 1000000);
    assert_int_equal(a->end_time, 2000000);
    assert_int_equal(a->latency, 1000000);
    assert_non_null(a->offset);
    assert_int_equal(a->n_line, 3);
    for (size_t i = 0; i < 3; i++) {
        assert_int_equal(a->line[i]->time, req_a[i].usec);
        assert_int_equal(a->line[i]->level, req_a[i].level);
        assert_string_equal(a->line[i]->log_message, req_a[i].msg);
    }
    assert_int_equal(b->n_line, 1);
    assert_string_equal(b->line[0]->log_message, "b warning");
    af__log__log_read_response__free_unpacked(out, NULL);
    svc_result_free(&res);

    /* Without include_app_logs, no lines. */
    req.include_app_logs = false;
    out = read_logs_msg(*state, &req, &res);
    assert_int_equal(out->n_log, 2);
    assert_int_equal(out->log[0]->n_line, 0);
    af__log__log_read_response__free_unpacked(out, NULL);
    svc_result_free(&res);
}

static void test_read_filters(void **state)
{
    flush_ok(*state, "req-a", req_a, 3);
    flush_ok(*state, "req-b", req_b, 1);
    struct af_result res;
    Af__Log__LogReadResponse *out;

    /* By request id. */
    Af__Log__LogReadRequest req = AF__LOG__LOG_READ_REQUEST__INIT;
    req.app_id = "testapp";
    ProtobufCBinaryData ids[] = {{5, (uint8_t *)"req-b"}, {7, (uint8_t *)"missing"}};
    req.n_request_id = 2;
    req.request_id = ids;
    out = read_logs_msg(*state, &req, &res);
    assert_int_equal(out->n_log, 1);
    assert_memory_equal(out->log[0]->request_id.data, "req-b", 5);
    af__log__log_read_response__free_unpacked(out, NULL);
    svc_result_free(&res);
    req.n_request_id = 0;

    /* Minimum level 3 (ERROR): only req-a has such a line. */
    req.has_minimum_log_level = true;
    req.minimum_log_level = 3;
    out = read_logs_msg(*state, &req, &res);
    assert_int_equal(out->n_log, 1);
    assert_memory_equal(out->log[0]->request_id.data, "req-a", 5);
    af__log__log_read_response__free_unpacked(out, NULL);
    svc_result_free(&res);
    req.has_minimum_log_level = false;

    /* Time window on the request's end time: req-a ends at 2 s, req-b at 3 s. */
    req.has_start_time = true;
    req.start_time = 2500000;
    out = read_logs_msg(*state, &req, &res);
    assert_int_equal(out->n_log, 1);
    assert_memory_equal(out->log[0]->request_id.data, "req-b", 5);
    af__log__log_read_response__free_unpacked(out, NULL);
    svc_result_free(&res);
    req.has_start_time = false;
    req.has_end_time = true;
    req.end_time = 3000000; /* exclusive */
    out = read_logs_msg(*state, &req, &res);
    assert_int_equal(out->n_log, 1);
    assert_memory_equal(out->log[0]->request_id.data, "req-a", 5);
    af__log__log_read_response__free_unpacked(out, NULL);
    svc_result_free(&res);
    req.has_end_time = false;

    /* Versions: ours is "1" of "default". */
    struct {
        const char *version;
        const char *mv_module, *mv_version;
        size_t expect;
    } vcases[] = {
        {"1", NULL, NULL, 2},      {"1.987", NULL, NULL, 2},  {"", NULL, NULL, 2},
        {"2", NULL, NULL, 0},      {NULL, "default", "1", 2}, {NULL, "worker", "1", 0},
        {NULL, "default", "3", 0},
    };
    for (size_t i = 0; i < sizeof(vcases) / sizeof(vcases[0]); i++) {
        Af__Log__LogReadRequest vr = AF__LOG__LOG_READ_REQUEST__INIT;
        vr.app_id = "testapp";
        char *v = (char *)vcases[i].version;
        Af__Log__LogModuleVersion mv = AF__LOG__LOG_MODULE_VERSION__INIT;
        Af__Log__LogModuleVersion *mvp = &mv;
        if (v) {
            vr.n_version_id = 1;
            vr.version_id = &v;
        } else {
            mv.module_id = (char *)vcases[i].mv_module;
            mv.version_id = (char *)vcases[i].mv_version;
            vr.n_module_version = 1;
            vr.module_version = &mvp;
        }
        out = read_logs_msg(*state, &vr, &res);
        assert_int_equal(out->n_log, vcases[i].expect);
        af__log__log_read_response__free_unpacked(out, NULL);
        svc_result_free(&res);
    }
}

static void test_read_pages(void **state)
{
    char ids[5][16];
    for (int i = 0; i < 5; i++) {
        snprintf(ids[i], sizeof(ids[i]), "r%d", i);
        struct line_spec l = {1000000 * (i + 1), 1, "x"};
        flush_ok(*state, ids[i], &l, 1);
    }
    Af__Log__LogReadRequest req = AF__LOG__LOG_READ_REQUEST__INIT;
    req.app_id = "testapp";
    req.has_count = true;
    req.count = 2;
    const char *expect[] = {"r4", "r3", "r2", "r1", "r0"};
    size_t seen = 0;
    for (int page = 0; page < 5; page++) {
        struct af_result res;
        Af__Log__LogReadResponse *out = read_logs_msg(*state, &req, &res);
        assert_non_null(out);
        for (size_t i = 0; i < out->n_log; i++) {
            assert_true(seen < 5);
            assert_memory_equal(out->log[i]->request_id.data, expect[seen], 2);
            seen++;
        }
        bool more = out->offset != NULL;
        static Af__Log__LogOffset off;
        static uint8_t offbuf[32];
        if (more) {
            af__log__log_offset__init(&off);
            off.has_request_id = true;
            assert_true(out->offset->request_id.len < sizeof(offbuf));
            memcpy(offbuf, out->offset->request_id.data, out->offset->request_id.len);
            off.request_id.data = offbuf;
            off.request_id.len = out->offset->request_id.len;
            req.offset = &off;
        }
        af__log__log_read_response__free_unpacked(out, NULL);
        svc_result_free(&res);
        if (!more)
            break;
    }
    assert_int_equal(seen, 5);

    /* An offset we never made is refused. */
    Af__Log__LogOffset bad = AF__LOG__LOG_OFFSET__INIT;
    bad.has_request_id = true;
    bad.request_id.data = (uint8_t *)"zz";
    bad.request_id.len = 2;
    req.offset = &bad;
    struct af_result res;
    assert_null(read_logs_msg(*state, &req, &res));
    assert_int_equal(res.kind, AF_RESULT_APP_ERROR);
    assert_int_equal(res.code, LOGERR(INVALID_REQUEST));
    svc_result_free(&res);
}

static void test_app_logs_per_request(void **state)
{
    flush_ok(*state, "req-a", req_a, 3);
    Af__Log__LogReadRequest req = AF__LOG__LOG_READ_REQUEST__INIT;
    req.app_id = "testapp";
    req.has_include_app_logs = true;
    req.include_app_logs = true;
    req.has_app_logs_per_request = true;
    req.app_logs_per_request = 2;
    struct af_result res;
    Af__Log__LogReadResponse *out = read_logs_msg(*state, &req, &res);
    assert_int_equal(out->n_log, 1);
    assert_int_equal(out->log[0]->n_line, 2);
    assert_true(out->log[0]->lines_incomplete);
    af__log__log_read_response__free_unpacked(out, NULL);
    svc_result_free(&res);
}

static void test_bounds(void **state)
{
    struct log_state *st = *state;
    /* More lines than the ring holds: the oldest go first. */
    size_t n = LOG_MAX_LINES + 50;
    struct line_spec *specs = calloc(n, sizeof(*specs));
    char(*msgs)[16] = calloc(n, sizeof(*msgs));
    for (size_t i = 0; i < n; i++) {
        snprintf(msgs[i], sizeof(msgs[i]), "m%zu", i);
        specs[i] = (struct line_spec){(int64_t)i, 0, msgs[i]};
    }
    flush_ok(st, "bulk", specs, n);
    assert_int_equal(st->count, LOG_MAX_LINES);
    assert_string_equal(st->ring[st->head].message, "m50");
    free(specs);
    free(msgs);

    /* One huge line is cut, with its real length said. */
    log_clear(st);
    assert_int_equal(st->count, 0);
    assert_int_equal(st->bytes, 0);
    size_t big = LOG_MAX_MESSAGE * 3;
    char *huge = malloc(big + 1);
    memset(huge, 'h', big);
    huge[big] = '\0';
    struct line_spec l = {1, 0, huge}; /* DEBUG: kept, not printed */
    flush_ok(st, "big", &l, 1);
    assert_int_equal(strlen(st->ring[st->head].message), LOG_MAX_MESSAGE);
    char suffix[64];
    snprintf(suffix, sizeof(suffix), "...(length %zu)", big);
    assert_non_null(strstr(st->ring[st->head].message, suffix));

    /* The byte bound: enough maximal lines to pass LOG_MAX_BYTES. */
    size_t many = LOG_MAX_BYTES / LOG_MAX_MESSAGE + 10;
    for (size_t i = 0; i < many; i++)
        flush_ok(st, "big", &l, 1);
    assert_true(st->bytes <= LOG_MAX_BYTES);
    assert_true(st->count < many);
    free(huge);
}

/* Lines go to stderr with level, time and request id; a multi-line message
 * stays one entry and control bytes cannot reach the terminal. */
static void test_printed(void **state)
{
    char path[] = "/tmp/af_test_logservice_XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    int saved = dup(STDERR_FILENO);
    dup2(fd, STDERR_FILENO);
    struct line_spec l[] = {
        {1000, 1, "hello\nsecond line\x1b[2J\n"},
        {2000, 0, "debug is below the default level"},
        {3000, 9, "level out of range"},
    };
    flush_ok(*state, "req-print", l, 3);
    dup2(saved, STDERR_FILENO);
    close(saved);
    char buf[1024] = {0};
    ssize_t got = pread(fd, buf, sizeof(buf) - 1, 0);
    close(fd);
    unlink(path);
    assert_true(got > 0);
    assert_non_null(strstr(buf, "INFO"));
    assert_non_null(strstr(buf, "[req-print] hello\n    second line?[2J\n"));
    assert_null(strstr(buf, "debug is below"));
    assert_non_null(strstr(buf, "CRITICAL"));
    assert_non_null(strstr(buf, "level out of range"));
}

static void test_undecodable(void **state)
{
    static const uint8_t garbage[] = {0x0a, 0x40, 0x01};
    struct af_result res = call_raw(*state, "Flush", "r", garbage, sizeof(garbage));
    assert_int_equal(res.kind, AF_RESULT_APP_ERROR);
    assert_int_equal(res.code, LOGERR(INVALID_REQUEST));
    svc_result_free(&res);

    res = call_raw(*state, "Read", "r", garbage, sizeof(garbage));
    assert_int_equal(res.kind, AF_RESULT_APP_ERROR);
    assert_int_equal(res.code, LOGERR(INVALID_REQUEST));
    svc_result_free(&res);

    /* A FlushRequest whose logs are not a UserAppLogGroup. */
    Af__Log__FlushRequest req = AF__LOG__FLUSH_REQUEST__INIT;
    req.has_logs = true;
    req.logs.data = (uint8_t *)"\x12\x05\x08";
    req.logs.len = 3;
    size_t len;
    uint8_t *buf = pack(&req.base, &len);
    res = call_raw(*state, "Flush", "r", buf, len);
    free(buf);
    assert_int_equal(res.kind, AF_RESULT_APP_ERROR);
    assert_int_equal(res.code, LOGERR(INVALID_REQUEST));
    svc_result_free(&res);

    /* An empty flush is fine and keeps nothing. */
    res = call_raw(*state, "Flush", "r", NULL, 0);
    assert_int_equal(res.kind, AF_RESULT_OK);
    svc_result_free(&res);
    assert_int_equal(((struct log_state *)*state)->count, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_flush_then_read, setup, teardown),
        cmocka_unit_test_setup_teardown(test_read_filters, setup, teardown),
        cmocka_unit_test_setup_teardown(test_read_pages, setup, teardown),
        cmocka_unit_test_setup_teardown(test_app_logs_per_request, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bounds, setup, teardown),
        cmocka_unit_test_setup_teardown(test_printed, setup, teardown),
        cmocka_unit_test_setup_teardown(test_undecodable, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
