/*
 * timeouts — many timeouts of one fixed duration behind a single libevent
 * timer.
 *
 * Every client connection is always under a timeout (the head deadline,
 * the keep-alive idle limit), and each request re-arms it twice. A struct
 * event per connection costs 128 bytes on every idle connection and a
 * min-heap update per arm. Since all timeouts of one kind last the same
 * time, arming one is appending it to a FIFO whose order is then the order
 * of expiry: O(1), 32 bytes, and one timer event for the whole queue,
 * armed for the queue's head.
 *
 * Front-end thread only. Times come from CLOCK_MONOTONIC_COARSE: a timeout
 * fires at its due time or up to one clock tick (a few ms) later.
 */
#ifndef AF_TIMEOUTS_H
#define AF_TIMEOUTS_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/queue.h>

#include <event2/event.h>

struct af_timeout_queue;

/* Embedded in whatever can time out. Zeroed memory is a disarmed timeout. */
struct af_timeout {
    TAILQ_ENTRY(af_timeout) link;
    uint64_t due_ms;
    struct af_timeout_queue *q; /* the queue it is armed on, or NULL */
};

struct af_timeout_queue {
    TAILQ_HEAD(, af_timeout) armed; /* oldest (first due) first */
    struct event *ev;
    int ms;
    /* Called once per expired timeout, which is disarmed by then; it may
     * arm or cancel any timeout, on any queue. */
    void (*expired)(struct af_timeout *t);
};

/* Returns 0, or -1 when the timer event cannot be made. */
int af_timeout_queue_init(struct af_timeout_queue *q, struct event_base *base, int ms,
                          void (*expired)(struct af_timeout *t));
/* Frees the timer event; every timeout on the queue is disarmed. */
void af_timeout_queue_release(struct af_timeout_queue *q);

/* (Re)arms t on q: it expires q->ms from now, whatever it was armed on. */
void af_timeout_arm(struct af_timeout_queue *q, struct af_timeout *t);
/* Disarms t; a no-op when it is not armed. */
void af_timeout_cancel(struct af_timeout *t);

static inline bool af_timeout_armed_on(const struct af_timeout *t, const struct af_timeout_queue *q)
{
    return t->q == q;
}

#endif
