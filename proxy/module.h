/*
 * module — one App Engine module (service) of the app: its instances, the
 * concurrency limit per instance, the bounded wait queue and scaling.
 *
 * Exchanges ask for an instance with af_module_acquire(); when none has a
 * free slot they wait in a FIFO queue and are handed an instance later, from
 * the event loop, through their waiter's callback. Releasing a slot never
 * calls back into another exchange synchronously: dispatch is deferred to
 * its own event, so callers never see re-entrancy.
 */
#ifndef AF_MODULE_H
#define AF_MODULE_H

#include <stdbool.h>
#include <sys/queue.h>
#include <sys/time.h>

#include "proxy/appyaml.h"

struct af_server;
struct af_instance;
struct event;

struct af_waiter {
    TAILQ_ENTRY(af_waiter) link;
    bool queued;
    bool direct; /* from the direct port: any ready instance, no limit */
    /* Called from the event loop with a slot taken on `inst`, or inst ==
     * NULL when the module gave up (`why` says why; status is the HTTP status
     * to answer, 502 or 503). */
    void (*ready)(struct af_waiter *w, struct af_instance *inst, int status, const char *why);
};

struct af_module {
    struct af_server *srv;
    const struct af_app_yaml *app; /* borrowed */
    char *name;
    char *version;
    bool stock_runtime;  /* PORT instead of a Unix socket */
    int max_concurrent;  /* per instance: max_concurrent_requests, or 1 if not threadsafe */
    int min_instances;   /* kept running */
    int max_instances;   /* never more than this */
    bool fixed;          /* manual scaling: exactly min_instances */
    int queue_max;       /* waiters beyond this get 503 */
    int next_id;

    TAILQ_HEAD(, af_instance) instances; /* STARTING, READY and STOPPING ones */
    int n_starting;
    int n_ready;
    TAILQ_HEAD(, af_waiter) queue;
    int queue_len;

    struct event *dispatch_ev; /* deferred hand-out of freed slots */
    struct event *spawn_timer; /* backoff before the next spawn */
    int backoff_ms;            /* grows on crashes, resets on a healthy instance */
    struct timeval next_spawn; /* no spawn before this time (crash backoff) */
    bool spawn_pending;

    char *unavailable; /* when set, every request is answered 500 with this text */
    char *start_failure; /* why the last instance failed to start; cleared when one is ready */
    bool stopping;
};

/* Creates the module for app and starts its initial instances. */
struct af_module *af_module_new(struct af_server *srv, const struct af_app_yaml *app);

/*
 * Takes a slot. Returns the instance when one is free now; NULL after
 * queueing w (its ready() is called later); or NULL with *status set (503
 * queue full, 500 module unavailable) and *why a static message.
 */
struct af_instance *af_module_acquire(struct af_module *mod, struct af_waiter *w, int *status,
                                      const char **why);
/* Leaves the queue without being called back. No-op if not queued. */
void af_module_cancel(struct af_module *mod, struct af_waiter *w);
/* Gives back the slot taken on inst. */
void af_module_release(struct af_module *mod, struct af_instance *inst, bool direct);

/* Called by instance.c: the instance became ready / died. */
void af_module_instance_ready(struct af_module *mod, struct af_instance *inst);
void af_module_instance_died(struct af_module *mod, struct af_instance *inst);

/* Stops every instance (SIGTERM, then SIGKILL after grace_ms) and fails
 * every waiter. */
void af_module_stop(struct af_module *mod, int grace_ms);
/* Number of instances not yet reaped. */
int af_module_live(const struct af_module *mod);
void af_module_free(struct af_module *mod);

#endif
