/* Unit tests for proxy/timeouts.c on a real event base and real time. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <time.h>

#include <event2/event.h>

#include "proxy/timeouts.h"

struct item {
    struct af_timeout t;
    int id;
};

static int fired[8];
static int n_fired;
static struct af_timeout_queue *rearm_q;
static struct item *rearm_once;

static void expired(struct af_timeout *t)
{
    struct item *it = (struct item *)t;
    fired[n_fired++] = it->id;
    if (it == rearm_once) {
        rearm_once = NULL;
        af_timeout_arm(rearm_q, t); /* again from inside the callback */
    }
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void run_for(struct event_base *base, int ms)
{
    struct timeval tv = {0, ms * 1000};
    event_base_loopexit(base, &tv);
    event_base_dispatch(base);
}

static void test_order_cancel_and_rearm(void **state)
{
    struct event_base *base = event_base_new();
    struct af_timeout_queue q;
    assert_int_equal(af_timeout_queue_init(&q, base, 100, expired), 0);
    struct item a = {.id = 1}, b = {.id = 2}, c = {.id = 3};
    n_fired = 0;
    double t0 = now_s();
    af_timeout_arm(&q, &a.t);
    af_timeout_arm(&q, &b.t);
    af_timeout_arm(&q, &c.t);
    assert_true(af_timeout_armed_on(&b.t, &q));
    af_timeout_cancel(&b.t);
    assert_false(af_timeout_armed_on(&b.t, &q));
    af_timeout_cancel(&b.t); /* twice is harmless */
    /* Re-arming moves a to the back: c is due first now. */
    af_timeout_arm(&q, &a.t);
    run_for(base, 10);
    assert_int_equal(n_fired, 0); /* not before its time */
    run_for(base, 300);
    assert_int_equal(n_fired, 2);
    assert_int_equal(fired[0], 3);
    assert_int_equal(fired[1], 1);
    assert_true(now_s() - t0 >= 0.095);
    assert_false(af_timeout_armed_on(&a.t, &q));
    af_timeout_queue_release(&q);
    event_base_free(base);
}

/* The head cancelled: the timer set for it fires early, finds nothing due,
 * and waits for the next one. A callback may re-arm its own timeout. */
static void test_early_fire_and_rearm_in_callback(void **state)
{
    struct event_base *base = event_base_new();
    struct af_timeout_queue q;
    assert_int_equal(af_timeout_queue_init(&q, base, 100, expired), 0);
    struct item a = {.id = 1}, b = {.id = 2};
    n_fired = 0;
    af_timeout_arm(&q, &a.t);
    run_for(base, 50);
    af_timeout_arm(&q, &b.t); /* due about 50 ms after a */
    af_timeout_cancel(&a.t);
    rearm_q = &q;
    rearm_once = &b;
    run_for(base, 60); /* a's time passes: nothing fires */
    assert_int_equal(n_fired, 0);
    run_for(base, 500); /* b fires, re-arms, fires again */
    assert_int_equal(n_fired, 2);
    assert_int_equal(fired[0], 2);
    assert_int_equal(fired[1], 2);
    af_timeout_queue_release(&q);
    event_base_free(base);
}

static void test_release_disarms(void **state)
{
    struct event_base *base = event_base_new();
    struct af_timeout_queue q;
    assert_int_equal(af_timeout_queue_init(&q, base, 1000, expired), 0);
    struct item a = {.id = 1};
    af_timeout_arm(&q, &a.t);
    af_timeout_queue_release(&q);
    assert_false(af_timeout_armed_on(&a.t, &q));
    af_timeout_cancel(&a.t);
    event_base_free(base);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_order_cancel_and_rearm),
        cmocka_unit_test(test_early_fire_and_rearm_in_callback),
        cmocka_unit_test(test_release_disarms),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
