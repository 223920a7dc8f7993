/*
 * Unit tests of deferred calls (apiserver/service.h, af_result_defer): the
 * real listener, backend and I/O threads, driven through the C client
 * library over the framed socket, with a test service whose "Wait" method
 * defers its answer to a timer on the I/O thread's loop. They show that a
 * deferred call does not hold the backend (other calls are answered while
 * it waits), that many deferred calls wait at once, and that stopping the
 * server cancels the work still in progress.
 */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <event2/event.h>

#include "apiserver/apiserver-internal.h"
#include "apiserver/client/appfront.h"
#include "apiserver/service.h"

/* ---- the test service ----------------------------------------------------- */

static atomic_int cancelled; /* cancel() calls */
static atomic_int started;   /* start() calls */
static atomic_int backend_calls;

struct wait_work {
    int ms;
    struct af_io_call *call;
    struct event *timer;
};

static void wait_free(struct wait_work *w)
{
    if (w->timer)
        event_free(w->timer);
    free(w);
}

static void wait_done(evutil_socket_t fd, short what, void *arg)
{
    struct wait_work *w = arg;
    struct af_result res = {0};
    char *text = strdup("waited");
    af_result_ok(&res, (uint8_t *)text, strlen(text));
    af_io_finish(w->call, &res);
    wait_free(w);
}

/* State kept on the I/O thread between calls: a count of the calls that
 * saw it. */
static atomic_int local_created, local_destroyed, local_uses;

static void *local_create(struct event_base *base)
{
    atomic_fetch_add(&local_created, 1);
    return calloc(1, sizeof(int));
}

static void local_destroy(void *state)
{
    atomic_store(&local_uses, *(int *)state);
    atomic_fetch_add(&local_destroyed, 1);
    free(state);
}

static const struct af_io_local_ops local_ops = {.create = local_create,
                                                 .destroy = local_destroy};

static void wait_start(void *arg, struct af_io_call *call)
{
    struct wait_work *w = arg;
    atomic_fetch_add(&started, 1);
    w->call = call;
    int *uses = af_io_local(call, &local_ops);
    assert_non_null(uses);
    ++*uses;
    if (w->ms < 0) {
        /* Finishes inside start(). */
        struct af_result res = {0};
        af_result_app_error(&res, 7, "refused at once");
        af_io_finish(call, &res);
        wait_free(w);
        return;
    }
    w->timer = evtimer_new(af_io_base(call), wait_done, w);
    struct timeval tv = {.tv_sec = w->ms / 1000, .tv_usec = (w->ms % 1000) * 1000};
    evtimer_add(w->timer, &tv);
}

static void wait_cancel(void *arg)
{
    atomic_fetch_add(&cancelled, 1);
    wait_free(arg);
}

static const struct af_defer_ops wait_ops = {
    .what = "test.Wait",
    .start = wait_start,
    .cancel = wait_cancel,
};

/* Wait: the request is a decimal number of milliseconds (negative: answer
 * from inside start()). */
static void m_wait(void *state, const struct af_call *call, struct af_result *res)
{
    atomic_fetch_add(&backend_calls, 1);
    struct wait_work *w = calloc(1, sizeof(*w));
    char buf[16] = "";
    memcpy(buf, call->request, call->request_len < 15 ? call->request_len : 15);
    w->ms = atoi(buf);
    af_result_defer(res, &wait_ops, w);
}

static void m_now(void *state, const struct af_call *call, struct af_result *res)
{
    atomic_fetch_add(&backend_calls, 1);
    char *text = strdup("now");
    af_result_ok(res, (uint8_t *)text, strlen(text));
}

static const struct af_method t_methods[] = {
    {"Wait", m_wait},
    {"Now", m_now},
    {NULL, NULL},
};

static const struct af_service t_service = {.name = "test", .methods = t_methods};
static const struct af_service *const t_services[] = {&t_service};

/* ---- fixture ---------------------------------------------------------------- */

struct fx {
    struct af_api *api;
    char dir[64];
    char sock[96];
};

static int setup(void **state)
{
    struct fx *f = calloc(1, sizeof(*f));
    snprintf(f->dir, sizeof(f->dir), "/tmp/af-iotest.XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    snprintf(f->sock, sizeof(f->sock), "%s/api.sock", f->dir);
    struct af_api_options o = {
        .host = "127.0.0.1",
        .socket_path = f->sock,
        .storage_path = f->dir,
    };
    char err[256] = "";
    if (af_api_start_services(&o, t_services, 1, &f->api, err, sizeof(err)) != 0)
        fail_msg("af_api_start: %s", err);
    af_client_set_socket_path(f->sock);
    atomic_store(&cancelled, 0);
    atomic_store(&started, 0);
    atomic_store(&backend_calls, 0);
    atomic_store(&local_created, 0);
    atomic_store(&local_destroyed, 0);
    atomic_store(&local_uses, 0);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fx *f = *state;
    af_client_close_all();
    af_client_set_socket_path(NULL);
    af_api_stop(f->api);
    rmdir(f->dir);
    free(f);
    return 0;
}

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* One call; returns 0 and checks the answer, or the client's status. */
static int call(const char *method, const char *arg, const char *want)
{
    uint8_t *resp = NULL;
    size_t len = 0;
    struct af_client_error err;
    if (af_client_call("test", method, (const uint8_t *)arg, strlen(arg), &resp, &len, &err,
                       10000) != 0)
        return (int)err.status;
    assert_int_equal(len, strlen(want));
    assert_memory_equal(resp, want, len);
    free(resp);
    return 0;
}

struct waiter {
    pthread_t t;
    const char *ms;
    int rc;
    int64_t took_ms;
};

static void *waiter_main(void *arg)
{
    struct waiter *w = arg;
    int64_t t0 = mono_ms();
    w->rc = call("Wait", w->ms, "waited");
    w->took_ms = mono_ms() - t0;
    return NULL;
}

/* ---- tests ------------------------------------------------------------------ */

static void test_deferred_answer(void **state)
{
    assert_int_equal(call("Wait", "10", "waited"), 0);
    assert_int_equal(atomic_load(&started), 1);

    /* Finished from inside start(): the application error reaches the
     * caller like any other. */
    struct af_client_error err;
    uint8_t *resp = NULL;
    size_t len;
    assert_int_equal(
        af_client_call("test", "Wait", (const uint8_t *)"-1", 2, &resp, &len, &err, 5000), -1);
    assert_int_equal(err.status, AF_CLIENT_APP_ERROR);
    assert_int_equal(err.code, 7);
    assert_non_null(strstr(err.detail, "refused at once"));
}

/* While a deferred call waits, the backend answers other calls at once. */
static void test_backend_not_held(void **state)
{
    struct waiter w = {.ms = "1500"};
    pthread_create(&w.t, NULL, waiter_main, &w);
    /* Let the Wait reach the I/O thread. */
    for (int i = 0; i < 200 && atomic_load(&started) == 0; i++)
        usleep(5000);
    assert_int_equal(atomic_load(&started), 1);

    int64_t t0 = mono_ms();
    for (int i = 0; i < 20; i++)
        assert_int_equal(call("Now", "", "now"), 0);
    int64_t took = mono_ms() - t0;
    /* 20 immediate calls: milliseconds; far below the 1.5 s wait even on a
     * loaded machine. */
    assert_true(took < 1000);

    pthread_join(w.t, NULL);
    assert_int_equal(w.rc, 0);
    assert_true(w.took_ms >= 1400);
}

/* Eight 700 ms waits at once take about 700 ms, not 5.6 s. */
static void test_concurrent_deferred(void **state)
{
    enum { N = 8 };
    struct waiter w[N];
    int64_t t0 = mono_ms();
    for (int i = 0; i < N; i++) {
        w[i] = (struct waiter){.ms = "700"};
        pthread_create(&w[i].t, NULL, waiter_main, &w[i]);
    }
    for (int i = 0; i < N; i++) {
        pthread_join(w[i].t, NULL);
        assert_int_equal(w[i].rc, 0);
    }
    int64_t took = mono_ms() - t0;
    assert_true(took >= 650);
    assert_true(took < 3000);
    assert_int_equal(atomic_load(&started), N);
}

/* Stopping the server with deferred calls in progress cancels their work
 * (ASan checks that nothing leaks). */
static void test_stop_cancels(void **state)
{
    struct fx *f = *state;
    enum { N = 3 };
    struct waiter w[N];
    for (int i = 0; i < N; i++) {
        w[i] = (struct waiter){.ms = "60000"};
        pthread_create(&w[i].t, NULL, waiter_main, &w[i]);
    }
    for (int i = 0; i < 400 && atomic_load(&started) < N; i++)
        usleep(5000);
    assert_int_equal(atomic_load(&started), N);

    int64_t t0 = mono_ms();
    af_api_stop(f->api);
    assert_true(mono_ms() - t0 < 2000);
    assert_int_equal(atomic_load(&cancelled), N);
    for (int i = 0; i < N; i++) {
        pthread_join(w[i].t, NULL);
        assert_int_not_equal(w[i].rc, 0); /* the connection closed, no answer */
    }

    /* teardown stops the server again: start a fresh one for it. */
    char err[256] = "";
    struct af_api_options o = {.host = "127.0.0.1", .socket_path = f->sock};
    if (af_api_start_services(&o, t_services, 1, &f->api, err, sizeof(err)) != 0)
        fail_msg("af_api_start: %s", err);
}

/* af_io_local: one state for every call of a kind, made on first use and
 * freed once when the server stops. */
static void test_local_state(void **state)
{
    struct fx *f = *state;
    for (int i = 0; i < 3; i++)
        assert_int_equal(call("Wait", "1", "waited"), 0);
    assert_int_equal(atomic_load(&local_created), 1);
    assert_int_equal(atomic_load(&local_destroyed), 0);
    af_client_close_all();
    af_api_stop(f->api);
    assert_int_equal(atomic_load(&local_destroyed), 1);
    assert_int_equal(atomic_load(&local_uses), 3);

    char err[256] = "";
    struct af_api_options o = {.host = "127.0.0.1", .socket_path = f->sock};
    if (af_api_start_services(&o, t_services, 1, &f->api, err, sizeof(err)) != 0)
        fail_msg("af_api_start: %s", err);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_deferred_answer, setup, teardown),
        cmocka_unit_test_setup_teardown(test_backend_not_held, setup, teardown),
        cmocka_unit_test_setup_teardown(test_concurrent_deferred, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stop_cancels, setup, teardown),
        cmocka_unit_test_setup_teardown(test_local_state, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
