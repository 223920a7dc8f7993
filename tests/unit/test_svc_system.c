/* Unit tests of the "system" service: /proc/PID/stat parsing, the stats of
 * a posted instance table (this test's own process group, read from the
 * real /proc), and the bookkeeping of background requests. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "apiserver/services/system.c"

#include "svc_call.h"

static struct af_result call_method(void *st, const char *method, const char *request_id,
                                    const uint8_t *req, size_t len)
{
    return svc_call_raw(&af_service_system, st, method, request_id, req, len);
}

static struct af_result call_internal(void *st, const char *method, const uint8_t *req, size_t len)
{
    struct af_result res = {.kind = -1};
    struct af_call c = {.service = "system",
                        .method = method,
                        .request = req,
                        .request_len = len,
                        .request_id = ""};
    const struct af_method *m = af_service_system.internal;
    while (m->name && strcmp(m->name, method) != 0)
        m++;
    assert_non_null(m->name);
    m->fn(st, &c, &res);
    return res;
}

static void *make_state(bool background)
{
    struct af_api_module mod = {.name = "default", .version = "1", .background = background};
    struct af_api_options o = {.modules = &mod, .n_modules = 1};
    return af_service_system.create(&o);
}

static void test_proc_stat_parse(void **state)
{
    /* A name with a space and a ')' of its own: fields count from the last. */
    static const char line[] =
        "4242 (my (odd) app) S 1 4240 4240 0 -1 4194560 100 0 0 0 "
        "250 50 7 3 20 0 1 0 12345 104857600 2560 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 "
        "17 0 0 0 0 0 0\n";
    struct af_proc_stat st;
    assert_true(af_proc_stat_parse(line, sizeof(line) - 1, &st));
    assert_int_equal(st.pid, 4242);
    assert_int_equal(st.pgrp, 4240);
    assert_int_equal(st.cpu_ticks, 250 + 50 + 7 + 3);
    assert_int_equal(st.rss_pages, 2560);
    assert_int_equal(st.start_ticks, 12345);

    /* Cut before rss, no ')' at all, no pid: refused. */
    assert_false(af_proc_stat_parse(line, 60, &st));
    assert_false(af_proc_stat_parse("4242 app S 1 2 3", 16, &st));
    assert_false(af_proc_stat_parse("(app) S 1 2 3", 13, &st));
}

static void unpack_stats(const struct af_result *res, double *cpu_total, double *mem_current,
                         double *mem_avg, double *rate1m)
{
    assert_int_equal(res->kind, AF_RESULT_OK);
    Af__System__GetSystemStatsResponse *out =
        af__system__get_system_stats_response__unpack(NULL, res->response_len, res->response);
    assert_non_null(out);
    assert_non_null(out->cpu);
    assert_non_null(out->memory);
    assert_true(out->cpu->has_total && out->cpu->has_rate1m && out->cpu->has_rate10m);
    assert_true(out->memory->has_current && out->memory->has_average1m);
    assert_true(out->cpu->rate1m >= 0 && out->cpu->rate10m >= 0);
    *cpu_total = out->cpu->total;
    *mem_current = out->memory->current;
    *mem_avg = out->memory->average1m;
    *rate1m = out->cpu->rate1m;
    af__system__get_system_stats_response__free_unpacked(out, NULL);
}

static void test_stats(void **state)
{
    void *st = make_state(false);
    double cpu, mem, avg, rate;
    /* No instance yet: zeros, not an error. */
    struct af_result res = call_method(st, "GetSystemStats", "", NULL, 0);
    unpack_stats(&res, &cpu, &mem, &avg, &rate);
    assert_true(cpu == 0 && mem == 0 && rate == 0);
    svc_result_free(&res);

    /* This process as the one instance, leader of a group of its own as
     * instances are (fails harmlessly when it leads a session already). */
    setpgid(0, 0);
    struct af_sys_instance t = {.pid = (int32_t)getpgrp(), .id = 0, .module = 0};
    res = call_internal(st, "Instances", (const uint8_t *)&t, sizeof(t));
    assert_int_equal(res.kind, AF_RESULT_OK);
    svc_result_free(&res);
    volatile uint64_t x = 0;
    for (uint64_t i = 0; i < 50000000u; i++)
        x += i;
    res = call_method(st, "GetSystemStats", "", NULL, 0);
    unpack_stats(&res, &cpu, &mem, &avg, &rate);
    svc_result_free(&res);
    /* Resident memory of a test binary: more than a megabyte, less than
     * a gigabyte; CPU: the loop above, at 1200 megacycles a second. */
    assert_true(mem > 1 && mem < 1024);
    assert_true(avg > 0);
    assert_true(cpu > 0);
    /* One sample: the rate runs from this process's start, which /proc
     * gives; it used the CPU above, so more than nothing, and at most its
     * whole run on every core this machine could have. */
    assert_true(rate > 0 && rate < 1200.0 * 1024);

    /* Garbage is BAD_REQUEST. */
    static const uint8_t bad[] = {0x08};
    res = call_method(st, "GetSystemStats", "", bad, sizeof(bad));
    assert_int_equal(res.kind, AF_RESULT_RPC_ERROR);
    assert_int_equal(res.code, AF_RPC_BAD_REQUEST);
    assert_non_null(strstr(res.detail, "GetSystemStatsRequest"));
    svc_result_free(&res);
    af_service_system.destroy(st);
}

static void test_window(void **state)
{
    /* Samples by hand: 2 minutes ago, 30 s ago, now. */
    struct sys_state *s = af_xcalloc(1, sizeof(*s));
    uint64_t now = 1000ull * 1000000000u;
    struct sample a = {.t_ns = now - 120ull * 1000000000u, .mcycles = 0, .mb = 10};
    struct sample b = {.t_ns = now - 30ull * 1000000000u, .mcycles = 1200, .mb = 20};
    struct sample c = {.t_ns = now, .mcycles = 4800, .mb = 30};
    sample_add(s, &a);
    sample_add(s, &b);
    sample_add(s, &c);
    double rate, avg;
    /* One minute: from a (the newest at least a minute old). */
    window(s, 60ull * 1000000000u, &rate, &avg);
    assert_true(rate > 39.99 && rate < 40.01); /* 4800 over 120 s */
    assert_true(avg > 24.99 && avg < 25.01);   /* b and c */
    /* Ten minutes: none is that old, the oldest is the base. */
    window(s, 600ull * 1000000000u, &rate, &avg);
    assert_true(rate > 39.99 && rate < 40.01);
    /* Ten seconds: from b. */
    window(s, 10ull * 1000000000u, &rate, &avg);
    assert_true(rate > 119.99 && rate < 120.01); /* 3600 over 30 s */
    assert_true(avg > 29.99 && avg < 30.01);

    /* One sample alone: from the oldest process's start, at 0. */
    s->n_samples = s->next_sample = 0;
    sample_add(s, &c);
    s->start_ns = now - 40ull * 1000000000u;
    window(s, 60ull * 1000000000u, &rate, &avg);
    assert_true(rate > 119.99 && rate < 120.01); /* 4800 over 40 s */
    assert_true(avg > 29.99 && avg < 30.01);
    free(s);
}

static void test_background_required(void **state)
{
    void *st = make_state(false);
    struct af_result res = call_method(st, "StartBackgroundRequest", "abc", NULL, 0);
    assert_int_equal(res.kind, AF_RESULT_APP_ERROR);
    assert_int_equal(res.code, AF__SYSTEM__SYSTEM_SERVICE_ERROR__ERROR_CODE__BACKEND_REQUIRED);
    assert_non_null(strstr(res.detail, "manual_scaling"));
    assert_false(res.notify_main);
    svc_result_free(&res);
    af_service_system.destroy(st);
}

static void test_background_take(void **state)
{
    void *st = make_state(true);
    /* No request id: no instance can be chosen. */
    struct af_result res = call_method(st, "StartBackgroundRequest", "", NULL, 0);
    assert_int_equal(res.kind, AF_RESULT_APP_ERROR);
    assert_int_equal(res.code, AF__SYSTEM__SYSTEM_SERVICE_ERROR__ERROR_CODE__BACKEND_REQUIRED);
    svc_result_free(&res);

    char ids[2][17];
    const char *tickets[2] = {"0123456789abcdef0123456789abcdef",
                              "fedcba9876543210fedcba9876543210"};
    for (int i = 0; i < 2; i++) {
        res = call_method(st, "StartBackgroundRequest", tickets[i], NULL, 0);
        assert_int_equal(res.kind, AF_RESULT_OK);
        assert_true(res.notify_main);
        Af__System__StartBackgroundRequestResponse *out =
            af__system__start_background_request_response__unpack(NULL, res.response_len,
                                                                  res.response);
        assert_non_null(out);
        assert_int_equal(strlen(out->request_id), 16);
        assert_int_equal(strspn(out->request_id, "0123456789abcdef"), 16);
        memcpy(ids[i], out->request_id, 17);
        af__system__start_background_request_response__free_unpacked(out, NULL);
        svc_result_free(&res);
    }
    assert_string_not_equal(ids[0], ids[1]);

    res = call_internal(st, "BackgroundTake", NULL, 0);
    assert_int_equal(res.kind, AF_RESULT_OK);
    Af__System__BackgroundTakeResponse *take =
        af__system__background_take_response__unpack(NULL, res.response_len, res.response);
    assert_non_null(take);
    assert_int_equal(take->n_start, 2);
    for (int i = 0; i < 2; i++) {
        assert_string_equal(take->start[i]->background_id, ids[i]);
        assert_string_equal(take->start[i]->ticket, tickets[i]);
    }
    af__system__background_take_response__free_unpacked(take, NULL);
    svc_result_free(&res);

    /* Taken once: the next take is empty. */
    res = call_internal(st, "BackgroundTake", NULL, 0);
    take = af__system__background_take_response__unpack(NULL, res.response_len, res.response);
    assert_non_null(take);
    assert_int_equal(take->n_start, 0);
    af__system__background_take_response__free_unpacked(take, NULL);
    svc_result_free(&res);

    /* Untaken ones are bounded: LIMIT_REACHED, then room again after a take. */
    for (int i = 0; i < SYS_MAX_PENDING; i++) {
        res = call_method(st, "StartBackgroundRequest", tickets[0], NULL, 0);
        assert_int_equal(res.kind, AF_RESULT_OK);
        svc_result_free(&res);
    }
    res = call_method(st, "StartBackgroundRequest", tickets[0], NULL, 0);
    assert_int_equal(res.kind, AF_RESULT_APP_ERROR);
    assert_int_equal(res.code, AF__SYSTEM__SYSTEM_SERVICE_ERROR__ERROR_CODE__LIMIT_REACHED);
    svc_result_free(&res);
    res = call_internal(st, "BackgroundTake", NULL, 0);
    svc_result_free(&res);
    res = call_method(st, "StartBackgroundRequest", tickets[0], NULL, 0);
    assert_int_equal(res.kind, AF_RESULT_OK);
    svc_result_free(&res);

    /* Garbage is BAD_REQUEST. */
    static const uint8_t bad[] = {0x08};
    res = call_method(st, "StartBackgroundRequest", tickets[0], bad, sizeof(bad));
    assert_int_equal(res.kind, AF_RESULT_RPC_ERROR);
    assert_int_equal(res.code, AF_RPC_BAD_REQUEST);
    svc_result_free(&res);
    af_service_system.destroy(st); /* frees what was left untaken */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_proc_stat_parse), cmocka_unit_test(test_stats),
        cmocka_unit_test(test_window),          cmocka_unit_test(test_background_required),
        cmocka_unit_test(test_background_take),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
