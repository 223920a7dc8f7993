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
struct af_builder;
struct af_watcher;
struct event;

struct af_waiter {
    TAILQ_ENTRY(af_waiter) link;
    bool queued;
    bool direct; /* from the direct port: any ready instance, no limit */
    /* A background request (proxy/background.h): instance pin_id of the
     * module only, outside its limit (a direct slot), never queued. */
    bool pinned;
    int pin_id;
    /* Called from the event loop with a slot taken on `inst`, or inst ==
     * NULL when the module gave up (`why` says why; status is the HTTP status
     * to answer, 502 or 503). */
    void (*ready)(struct af_waiter *w, struct af_instance *inst, int status, const char *why);
};

struct af_router;

struct af_module {
    struct af_server *srv;
    const struct af_app_yaml *app; /* main's at first; after a reload one of own_apps */
    struct af_router *router;             /* app's handlers (proxy/router.h) */
    const struct af_app_yaml *router_app; /* the app.yaml the router was built from */
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
    int queue_direct; /* of queue_len, waiters for the direct port */

    struct event *dispatch_ev; /* deferred hand-out of freed slots */
    struct event *spawn_timer; /* backoff before the next spawn */
    int backoff_ms;            /* grows on crashes, resets on a healthy instance */
    struct timeval next_spawn; /* no spawn before this time (crash backoff) */
    bool spawn_pending;

    char *unavailable; /* when set, every request is answered 500 with this text */
    char *start_failure; /* why the last instance failed to start; cleared when one is ready */
    bool stopping;

    /*
     * The developer loop (docs/devloop.md). A restart starts a new
     * generation: instances of older ones are "retired". Retired instances
     * keep serving until an instance of the new generation is ready, then
     * they are "draining": no new requests, stopped once their last one is
     * done. n_starting and n_ready count the current generation only.
     */
    int gen;                  /* the generation instances are spawned into */
    int n_retired;            /* retired instances not yet reaped */
    struct timeval restarted; /* when the current generation was asked for */
    char *entrypoint;         /* what instances run; NULL: nothing to run (yet) */
    struct af_builder *builder; /* NULL: nothing to build */
    char *build_failure;      /* when set, routed requests get 500 with this text */
    char *go_binary;          /* the go binary instances run; removed when replaced */
    struct timeval build_ended; /* changes reported soon after were made during it */
    /* Files the build itself writes into the app directory (learnt, see
     * docs/devloop.md "Build outputs"), and what changed during the last
     * build, judged once its events are all in. */
    char **outputs;
    size_t n_outputs;
    char **during;
    size_t n_during;
    char **prev_during; /* what changed during the build before */
    size_t n_prev_during;
    bool during_more;   /* too many to list: cannot be learnt */
    int echo_builds;    /* builds in a row run for changes made during a build */
    struct event *echo_ev;
    struct af_watcher *watcher; /* NULL unless --automatic_restart */
    struct af_app_yaml **own_apps; /* configurations reloaded; freed with the module */
    size_t n_own_apps;
    struct event *drain_ev;   /* deferred stop of idle draining instances */

    /*
     * Scaling down (docs/architecture.md, "Scaling limits"): an instance
     * that has held no request for idle_ms is taken out of rotation and
     * stopped through the drain path, as long as more than keep_min
     * instances are left and more than keep_idle of them are idle.
     */
    long long idle_ms;        /* 0: never (manual scaling) */
    int keep_min;             /* never fewer instances than this */
    int keep_idle;            /* idle instances kept beyond the busy ones */
    struct event *idle_timer; /* armed while an instance could be stopped */
    bool idle_armed;
};

/* Creates the module for app and starts its initial instances, or the build
 * that comes before them (asynchronously: this never waits for a build). */
struct af_module *af_module_new(struct af_server *srv, const struct af_app_yaml *app);

/* Starts watching the app directory when --automatic_restart is on. Called
 * once the startup lines are out: the first walk of a big tree takes a
 * while. */
void af_module_watch(struct af_module *mod);

/* Starts a new generation of instances (see above), building first when the
 * app needs a build. The watcher calls this on a change. */
void af_module_restart(struct af_module *mod);

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
