/*
 * Unit tests of the hand-off queue (apiserver/backend.c): producers push
 * while the consumer is busy, asleep or in between, and not one job may be
 * stranded by the "write the eventfd only when the consumer sleeps" rule.
 * Both kinds of consumer are driven: the backend's (af_api_jobq_wait_all on
 * a blocking eventfd) and an event loop's (poll on a non-blocking eventfd,
 * then af_api_jobq_take_all). A lost wake-up shows as a consumer that
 * blocks forever (caught by a poll timeout or the test's alarm).
 */
#include <poll.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <unistd.h>

#include <cmocka.h>

#include "apiserver/backend.h"

enum { PRODUCERS = 4, PER_PRODUCER = 20000 };

struct producer {
    struct af_api_jobq *q;
    int id;
    int pause_every; /* sleep a little every so many pushes: let the consumer sleep */
};

static void *produce(void *arg)
{
    struct producer *p = arg;
    for (int i = 0; i < PER_PRODUCER; i++) {
        struct af_api_job *job = af_api_job_new(AF_API_JOB_CLEAR);
        job->tag = (uint64_t)p->id << 32 | (uint64_t)i;
        af_api_jobq_push(p->q, job);
        if (p->pause_every && i % p->pause_every == 0)
            usleep(50);
    }
    return NULL;
}

/* Checks that each producer's jobs arrive in order, counts them, frees them. */
static int consume_list(struct af_api_job *list, int next[PRODUCERS])
{
    int n = 0;
    while (list) {
        struct af_api_job *job = list;
        list = job->next;
        int id = (int)(job->tag >> 32), seq = (int)(job->tag & 0xffffffffu);
        assert_true(id >= 0 && id < PRODUCERS);
        assert_int_equal(seq, next[id]);
        next[id]++;
        af_api_job_free(job);
        n++;
    }
    return n;
}

static void start_producers(struct af_api_jobq *q, pthread_t *t, struct producer *p)
{
    for (int i = 0; i < PRODUCERS; i++) {
        /* Half push flat out (the consumer is busy, few wake-ups), half
         * pause now and then (the consumer goes to sleep in between). */
        p[i] = (struct producer){.q = q, .id = i, .pause_every = i % 2 ? 64 : 0};
        pthread_create(&t[i], NULL, produce, &p[i]);
    }
}

static void *close_later(void *arg)
{
    usleep(20 * 1000);
    af_api_jobq_close(arg);
    return NULL;
}

/* The backend's way: block in wait_all while the queue is empty. */
static void test_blocking_consumer(void **state)
{
    struct af_api_jobq q;
    assert_int_equal(af_api_jobq_init(&q, false), 0);
    pthread_t t[PRODUCERS];
    struct producer p[PRODUCERS];
    start_producers(&q, t, p);

    int next[PRODUCERS] = {0};
    int got = 0;
    bool closed = false;
    while (got < PRODUCERS * PER_PRODUCER) {
        /* Blocks for ever if a wake-up was lost (alarm below). */
        got += consume_list(af_api_jobq_wait_all(&q, &closed), next);
        assert_false(closed);
    }
    for (int i = 0; i < PRODUCERS; i++)
        pthread_join(t[i], NULL);

    /* Closing wakes a consumer blocked on an empty queue. */
    pthread_t closer;
    pthread_create(&closer, NULL, close_later, &q);
    assert_null(af_api_jobq_wait_all(&q, &closed));
    assert_true(closed);
    pthread_join(closer, NULL);
    af_api_jobq_release(&q);
}

/* An event loop's way: poll the eventfd, then take_all. */
static void test_event_loop_consumer(void **state)
{
    struct af_api_jobq q;
    assert_int_equal(af_api_jobq_init(&q, true), 0);
    pthread_t t[PRODUCERS];
    struct producer p[PRODUCERS];
    start_producers(&q, t, p);

    int next[PRODUCERS] = {0};
    int got = 0;
    while (got < PRODUCERS * PER_PRODUCER) {
        struct pollfd pfd = {.fd = q.efd, .events = POLLIN};
        int rc = poll(&pfd, 1, 5000);
        /* Jobs queued and no wake-up for 5 s: one was lost. */
        assert_int_equal(rc, 1);
        bool closed;
        got += consume_list(af_api_jobq_take_all(&q, &closed), next);
    }
    for (int i = 0; i < PRODUCERS; i++)
        pthread_join(t[i], NULL);
    af_api_jobq_release(&q);
}

int main(void)
{
    alarm(120); /* a lost wake-up in the blocking test hangs instead of failing */
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_blocking_consumer),
        cmocka_unit_test(test_event_loop_consumer),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
