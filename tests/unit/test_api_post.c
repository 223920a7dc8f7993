/*
 * Unit tests of the one-way posts of the main thread (af_api_post,
 * apiserver/backend.c): a lazy push links without waking the consumer and
 * says whether the job now waits for a wake-up; the next ordinary push
 * wakes the consumer, which takes both, in order; and a POST job runs its
 * service's internal method through the real backend thread, then comes
 * back on its poster's queue.
 */
#include <errno.h>
#include <poll.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include <stdatomic.h>
#include <stdio.h>
#include <sys/stat.h>

#include "apiserver/apiserver-internal.h"
#include "apiserver/apiserver.h"
#include "apiserver/backend.h"

static bool readable(int fd, int ms)
{
    struct pollfd p = {.fd = fd, .events = POLLIN};
    return poll(&p, 1, ms) == 1;
}

static void test_lazy_push(void **state)
{
    struct af_api_jobq q;
    assert_int_equal(af_api_jobq_init(&q, true), 0);
    /* The consumer starts out waiting: the job waits for a wake-up. */
    struct af_api_job *a = af_api_job_new(AF_API_JOB_POST);
    a->tag = 1;
    assert_true(af_api_jobq_push_lazy(&q, a));
    assert_false(readable(q.efd, 20));
    /* An ordinary push wakes the consumer, which takes both, in order. */
    struct af_api_job *b = af_api_job_new(AF_API_JOB_CLEAR);
    b->tag = 2;
    af_api_jobq_push(&q, b);
    assert_true(readable(q.efd, 1000));
    bool closed;
    struct af_api_job *list = af_api_jobq_take_all(&q, &closed);
    assert_ptr_equal(list, a);
    assert_ptr_equal(list->next, b);
    assert_null(b->next);
    af_api_job_free(a);
    af_api_job_free(b);

    /* While the consumer is bound to look anyway (it found jobs and did not
     * wait since), a lazy push says so. */
    af_api_jobq_push(&q, af_api_job_new(AF_API_JOB_CLEAR)); /* clears _sleeping */
    struct af_api_job *c = af_api_job_new(AF_API_JOB_POST);
    assert_false(af_api_jobq_push_lazy(&q, c));
    list = af_api_jobq_take_all(&q, &closed);
    assert_non_null(list);
    assert_ptr_equal(list->next, c);
    af_api_job_free(list);
    af_api_job_free(c);
    af_api_jobq_release(&q);
}

/* A service with one internal method that records what it got. */
static uint8_t *got_data;
static size_t got_len;
static atomic_int got_calls;

/* Every Record call's data, each followed by '|'. */
static char got_log[256];

static void record(void *st, const struct af_call *call, struct af_result *res)
{
    free(got_data);
    got_data = malloc(call->request_len);
    memcpy(got_data, call->request, call->request_len);
    got_len = call->request_len;
    size_t n = strlen(got_log);
    snprintf(got_log + n, sizeof(got_log) - n, "%.*s|", (int)call->request_len,
             (const char *)call->request);
    atomic_fetch_add(&got_calls, 1);
    af_result_ok(res, NULL, 0);
}

static const struct af_method no_methods[] = {{.name = NULL}};
/* Holds the backend thread until `hold` is cleared: posts pile up. */
static atomic_bool hold;
static atomic_int held_runs;
static atomic_bool in_stall;

static void stall(void *st, const struct af_call *call, struct af_result *res)
{
    atomic_store(&in_stall, true);
    while (atomic_load(&hold))
        usleep(1000);
    atomic_fetch_add(&held_runs, 1);
    af_result_ok(res, NULL, 0);
}

static const struct af_method internal_methods[] = {{.name = "Record", .fn = record},
                                                    {.name = "Stall", .fn = stall},
                                                    {.name = NULL}};
static const struct af_service svc = {
    .name = "sink", .methods = no_methods, .internal = internal_methods};
static const struct af_service *const table[] = {&svc};

static struct af_api *start_api(char *dir, size_t dir_size)
{
    snprintf(dir, dir_size, "/tmp/af-posttest.XXXXXX");
    assert_non_null(mkdtemp(dir));
    static char sock[96];
    snprintf(sock, sizeof(sock), "%s/api.sock", dir);
    static struct af_api_options o;
    o = (struct af_api_options){.host = "127.0.0.1",
                                .socket_path = sock,
                                .app_id = "t",
                                .module = "default",
                                .version = "1",
                                .storage_path = dir,
                                .memcache_max_bytes = 1 << 20};
    struct af_api *api;
    char err[256] = "";
    if (af_api_start_services(&o, table, 1, &api, err, sizeof(err)) != 0)
        fail_msg("af_api_start: %s", err);
    af_api_post_start(api);
    return api;
}

static void test_post_runs_internal_method(void **state)
{
    struct af_api_jobq inbox, outbox, back;
    assert_int_equal(af_api_jobq_init(&inbox, false), 0);
    assert_int_equal(af_api_jobq_init(&outbox, true), 0);
    assert_int_equal(af_api_jobq_init(&back, true), 0);
    struct af_api_options opts = {.app_id = "t"};
    struct af_backend *be;
    assert_int_equal(af_backend_start(&opts, table, 1, &inbox, &outbox, NULL, &be), 0);

    uint8_t *data = malloc(4);
    memcpy(data, "abcd", 4);
    struct af_api_job *job = af_api_job_new(AF_API_JOB_POST);
    job->post_service = "sink";
    job->post_method = "Record";
    job->reply = data;
    job->reply_len = 4;
    job->post_back = &back;
    /* Lazy: nothing runs until the next ordinary push wakes the backend
     * (the backend may still be between its start and its first wait, in
     * which case it is bound to look: either way it runs after that push). */
    af_api_jobq_push_lazy(&inbox, job);
    struct af_api_job *post2 = af_api_job_new(AF_API_JOB_POST);
    post2->post_service = "sink";
    post2->post_method = "Nope"; /* no such method: logged, freed */
    af_api_jobq_push(&inbox, post2);
    /* Stop joins the backend after it ran everything queued before the
     * close... it drops what it finds after the close, so wait first. */
    for (int i = 0; i < 200 && got_calls == 0; i++)
        usleep(5000);
    af_backend_stop(be);
    assert_int_equal(got_calls, 1);
    assert_int_equal(got_len, 4);
    assert_memory_equal(got_data, "abcd", 4);
    free(got_data);
    got_data = NULL;
    /* Nothing came back on the outbox: posts have no reply. */
    bool closed;
    assert_null(af_api_jobq_take_all(&outbox, &closed));
    /* The job came back, its data with it; the one without post_back was
     * freed. */
    struct af_api_job *ret = af_api_jobq_take_nowait(&back);
    assert_ptr_equal(ret, job);
    assert_null(ret->next);
    assert_memory_equal(ret->reply, "abcd", 4);
    af_api_job_free(ret);
    af_api_jobq_release(&inbox);
    af_api_jobq_release(&outbox);
    af_api_jobq_release(&back);
}

/* However long the backend thread is kept from running, the posts out are
 * bounded: af_api_post_full() says so, the caller holds its data, and once
 * the backend runs them they all come back and posting goes on. */
static void test_posts_out_are_bounded(void **state)
{
    char dir[64];
    struct af_api *api = start_api(dir, sizeof(dir));
    atomic_store(&hold, true);
    atomic_store(&held_runs, 0);
    int posted = 0;
    while (!af_api_post_full(api) && posted < 1000) {
        af_api_post(api, "sink", "Stall", (const uint8_t *)"x", 1, false);
        posted++;
    }
    assert_true(af_api_post_full(api));
    assert_in_range(posted, 2, 64);
    atomic_store(&hold, false);
    for (int i = 0; i < 400 && atomic_load(&held_runs) < posted; i++)
        usleep(5000);
    assert_int_equal(atomic_load(&held_runs), posted);
    for (int i = 0; i < 400 && af_api_post_full(api); i++)
        usleep(5000);
    assert_false(af_api_post_full(api));
    /* A post over the size bound is refused, never truncated. */
    uint8_t *big = calloc(1, AF_API_POST_MAX_BYTES + 1);
    assert_int_equal(af_api_post(api, "sink", "Stall", big, AF_API_POST_MAX_BYTES + 1, false), -1);
    free(big);
    af_api_stop(api);
    rmdir(dir);
}

static void wait_calls(int n)
{
    for (int i = 0; i < 400 && got_calls < n; i++)
        usleep(5000);
    assert_int_equal(got_calls, n);
}

/* A joining post appends its data to the newest post of the inbox while
 * the backend has not taken it: one run gets both, back to back. A post
 * to another method, or a job the backend already took, is not joined. */
static void test_posts_join(void **state)
{
    char dir[64];
    struct af_api *api = start_api(dir, sizeof(dir));
    got_calls = 0;
    got_log[0] = '\0';
    /* The backend busy in Stall: the posts after it wait in the inbox. */
    atomic_store(&hold, true);
    atomic_store(&held_runs, 0);
    atomic_store(&in_stall, false);
    assert_int_equal(af_api_post(api, "sink", "Stall", (const uint8_t *)"s", 1, 0), 0);
    for (int i = 0; i < 2000 && !atomic_load(&in_stall); i++)
        usleep(1000);
    assert_true(atomic_load(&in_stall)); /* the backend took it and sits in it */
    assert_true(af_api_post(api, "sink", "Record", (const uint8_t *)"ab", 2, AF_API_POST_JOIN) >=
                0);
    assert_true(af_api_post(api, "sink", "Record", (const uint8_t *)"cd", 2, AF_API_POST_JOIN) >=
                0);
    assert_true(af_api_post(api, "sink", "Record", (const uint8_t *)"ef", 2, AF_API_POST_LAZY) >=
                0);
    assert_true(af_api_post(api, "sink", "Record", (const uint8_t *)"gh", 2, AF_API_POST_JOIN) >=
                0);
    assert_true(af_api_post(api, "sink", "Stall", (const uint8_t *)"t", 1, AF_API_POST_JOIN) >= 0);
    assert_true(af_api_post(api, "sink", "Record", (const uint8_t *)"ij", 2, AF_API_POST_JOIN) >=
                0);
    atomic_store(&hold, false);
    wait_calls(3);
    assert_string_equal(got_log, "abcd|efgh|ij|");

    /* The backend asleep: the first joining post waits in a job of its
     * own, the second joins it, and the next ordinary post wakes the
     * backend, which runs them in order. */
    int r = -1;
    for (int i = 0; i < 400 && r != AF_API_POST_WAITING; i++) {
        int before = atomic_load(&got_calls);
        r = af_api_post(api, "sink", "Record", (const uint8_t *)"-", 1, AF_API_POST_LAZY);
        if (r == 0) /* the backend was not asleep yet: it runs this one */
            wait_calls(before + 1);
        else if (r < 0)
            usleep(1000);
    }
    assert_int_equal(r, AF_API_POST_WAITING);
    atomic_store(&got_calls, 0);
    got_log[0] = '\0';
    assert_int_equal(af_api_post(api, "sink", "Record", (const uint8_t *)"xy", 2, AF_API_POST_JOIN),
                     AF_API_POST_JOINED);
    assert_int_equal(af_api_post(api, "sink", "Record", (const uint8_t *)"z", 1, 0), 0);
    wait_calls(2);
    assert_string_equal(got_log, "-xy|z|");
    free(got_data);
    got_data = NULL;
    af_api_stop(api);
    rmdir(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_lazy_push),
        cmocka_unit_test(test_post_runs_internal_method),
        cmocka_unit_test(test_posts_out_are_bounded),
        cmocka_unit_test(test_posts_join),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
