/*
 * upstream — connections from the front end to one instance (HTTP/1.1 over
 * its Unix socket, or loopback TCP for stock runtimes), kept alive in a pool
 * per instance, and the instance side of an exchange: writing the request
 * head, parsing and relaying the response with backpressure.
 */
#ifndef AF_UPSTREAM_H
#define AF_UPSTREAM_H

#include <stdbool.h>
#include <sys/queue.h>

#include "proxy/stream.h"

struct af_instance;
struct af_exchange;
struct evbuffer;

struct af_upstream {
    TAILQ_ENTRY(af_upstream) link; /* in inst->idle while idle */
    struct af_instance *inst;      /* one reference held */
    struct af_stream s;
    struct af_exchange *ex; /* the exchange using it, or NULL while idle */
    bool connected;
    bool reading_paused; /* the client's output is full */
    unsigned uses;
};

/*
 * Binds an upstream connection to ex: an idle pooled one, or a new one.
 * *ready = true when it is connected (pooled, or a Unix socket that
 * connected at once): the caller proceeds now. Otherwise it is connecting
 * and af_ex_upstream_ready() or af_ex_upstream_failed() follows from the
 * event loop. Returns NULL when no connection can be made (errno set).
 */
struct af_upstream *af_upstream_take(struct af_instance *inst, struct af_exchange *ex,
                                     bool *ready);
/* Returns a connection to its instance's pool, or frees it if it cannot be
 * reused. */
void af_upstream_put(struct af_upstream *up, bool reusable);
/* Closes and frees. */
void af_upstream_free(struct af_upstream *up);
/* Frees every idle connection of inst. */
void af_upstream_drain_pool(struct af_instance *inst);

/* The output buffer towards the instance (request head and body). */
struct evbuffer *af_upstream_output(struct af_upstream *up);
/* Starts (or resumes) reading the response. */
void af_upstream_start_reading(struct af_upstream *up);
/* Pauses reading the response while the client cannot take more. */
void af_upstream_pause_reading(struct af_upstream *up);

#define AF_HIGH_WATER (256 * 1024) /* bytes queued toward a peer before pausing */

#endif
