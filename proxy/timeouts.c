#include "proxy/timeouts.h"

#include <time.h>

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static void schedule(struct af_timeout_queue *q, uint64_t now)
{
    struct af_timeout *head = TAILQ_FIRST(&q->armed);
    if (!head)
        return;
    uint64_t wait = head->due_ms > now ? head->due_ms - now : 0;
    /* At least a millisecond: the coarse clock may lag the timer's. */
    if (wait == 0)
        wait = 1;
    struct timeval tv = {(time_t)(wait / 1000), (suseconds_t)(wait % 1000) * 1000};
    event_add(q->ev, &tv);
}

static void fire(evutil_socket_t fd, short what, void *arg)
{
    struct af_timeout_queue *q = arg;
    uint64_t now = now_ms();
    struct af_timeout *t;
    /* Entries appended during a callback are due q->ms from now: the loop
     * cannot run forever. */
    while ((t = TAILQ_FIRST(&q->armed)) != NULL && t->due_ms <= now) {
        af_timeout_cancel(t);
        q->expired(t);
    }
    if (!evtimer_pending(q->ev, NULL))
        schedule(q, now);
}

int af_timeout_queue_init(struct af_timeout_queue *q, struct event_base *base, int ms,
                          void (*expired)(struct af_timeout *t))
{
    TAILQ_INIT(&q->armed);
    q->ms = ms;
    q->expired = expired;
    q->ev = evtimer_new(base, fire, q);
    return q->ev ? 0 : -1;
}

void af_timeout_queue_release(struct af_timeout_queue *q)
{
    struct af_timeout *t;
    while ((t = TAILQ_FIRST(&q->armed)) != NULL)
        af_timeout_cancel(t);
    if (q->ev)
        event_free(q->ev);
    q->ev = NULL;
}

void af_timeout_arm(struct af_timeout_queue *q, struct af_timeout *t)
{
    af_timeout_cancel(t);
    uint64_t now = now_ms();
    t->due_ms = now + (uint64_t)q->ms;
    t->q = q;
    /* While the queue holds entries its timer is pending (arming and firing
     * keep it so), due no later than this entry: it stays. When the head it
     * was set for is gone, it fires early and reschedules. */
    bool was_empty = TAILQ_EMPTY(&q->armed);
    TAILQ_INSERT_TAIL(&q->armed, t, link);
    if (was_empty && !evtimer_pending(q->ev, NULL))
        schedule(q, now);
}

void af_timeout_cancel(struct af_timeout *t)
{
    if (!t->q)
        return;
    TAILQ_REMOVE(&t->q->armed, t, link);
    t->q = NULL;
}
