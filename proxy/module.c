/*
 * module — instances, slots, the wait queue and scaling. See module.h.
 *
 * Scaling rules (docs/architecture.md):
 *   manual:    exactly `instances`, respawned when one dies;
 *   automatic: min_instances (at least 1) at start; one more whenever the
 *              queued requests exceed what the starting instances will take,
 *              up to max_instances;
 *   basic:     like automatic, from 1, up to max_instances.
 * A crash delays the next spawn (100 ms, doubling to 5 s); an instance that
 * served for a while resets the delay.
 */
#include "proxy/module.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>

#include "common/log.h"
#include "common/xalloc.h"
#include "proxy/instance.h"
#include "proxy/server.h"

#define DEFAULT_MAX_INSTANCES 20
#define BACKOFF_MIN_MS 100
#define BACKOFF_MAX_MS 5000

static void spawn_one(struct af_module *mod);

static int limit_instances(const struct af_module *mod)
{
    return mod->max_instances;
}

static int live_count(const struct af_module *mod)
{
    return mod->n_starting + mod->n_ready;
}

static void dispatch_soon(struct af_module *mod)
{
    event_active(mod->dispatch_ev, EV_TIMEOUT, 0);
}

static struct af_instance *pick_routed(struct af_module *mod)
{
    struct af_instance *inst;
    /* The first instance with room: packing requests onto the oldest
     * instances keeps their pooled connections warm. */
    TAILQ_FOREACH(inst, &mod->instances, link)
    {
        if (inst->state == AF_INST_READY && inst->active < mod->max_concurrent)
            return inst;
    }
    return NULL;
}

static struct af_instance *pick_direct(struct af_module *mod)
{
    struct af_instance *inst, *best = NULL;
    TAILQ_FOREACH(inst, &mod->instances, link)
    {
        if (inst->state != AF_INST_READY)
            continue;
        if (!best || inst->active + inst->active_direct < best->active + best->active_direct)
            best = inst;
    }
    return best;
}

static void take_slot(struct af_instance *inst, bool direct)
{
    if (direct)
        inst->active_direct++;
    else
        inst->active++;
}

/* More instances while requests wait, if the limit allows. */
static void maybe_scale_up(struct af_module *mod)
{
    if (mod->fixed || mod->stopping || mod->unavailable)
        return;
    int routed_waiting = 0;
    struct af_waiter *w;
    TAILQ_FOREACH(w, &mod->queue, link)
    {
        if (!w->direct)
            routed_waiting++;
    }
    int coming = mod->n_starting * mod->max_concurrent;
    if (mod->n_ready == 0 && mod->n_starting == 0 && mod->queue_len > 0)
        routed_waiting = routed_waiting ? routed_waiting : 1; /* direct needs one too */
    if (routed_waiting > coming && live_count(mod) < limit_instances(mod))
        spawn_one(mod);
}

static void spawn_timer_cb(evutil_socket_t fd, short what, void *arg)
{
    struct af_module *mod = arg;
    mod->spawn_pending = false;
    if (mod->fixed) {
        while (live_count(mod) < mod->min_instances && !mod->spawn_pending)
            spawn_one(mod);
    } else {
        if (live_count(mod) < mod->min_instances)
            spawn_one(mod);
        maybe_scale_up(mod);
    }
}

static void spawn_one(struct af_module *mod)
{
    if (mod->stopping || mod->spawn_pending)
        return;
    struct timeval now, wait;
    gettimeofday(&now, NULL);
    if (timercmp(&mod->next_spawn, &now, >)) {
        /* After a crash, wait before the next spawn; the timer re-runs the
         * scaling decision. */
        timersub(&mod->next_spawn, &now, &wait);
        mod->spawn_pending = true;
        event_add(mod->spawn_timer, &wait);
        return;
    }
    char err[256];
    struct af_instance *inst = af_instance_spawn(mod, mod->next_id++, err, sizeof(err));
    if (!inst) {
        af_log(AF_LOG_ERROR, "Could not start an instance of module \"%s\": %s", mod->name, err);
        struct timeval b = {BACKOFF_MAX_MS / 1000, 0};
        timeradd(&now, &b, &mod->next_spawn);
        return;
    }
    TAILQ_INSERT_TAIL(&mod->instances, inst, link);
    mod->n_starting++;
}

/* Hands out freed slots to waiters, oldest first. */
static void dispatch_cb(evutil_socket_t fd, short what, void *arg)
{
    struct af_module *mod = arg;
    struct af_waiter *w = TAILQ_FIRST(&mod->queue), *next;
    for (; w; w = next) {
        next = TAILQ_NEXT(w, link);
        struct af_instance *inst = w->direct ? pick_direct(mod) : pick_routed(mod);
        if (!inst) {
            if (!w->direct)
                break; /* FIFO among routed requests */
            continue;
        }
        TAILQ_REMOVE(&mod->queue, w, link);
        mod->queue_len--;
        w->queued = false;
        take_slot(inst, w->direct);
        /* The callback may free other waiters' exchanges only through their
         * own connections, never this queue's order: `next` stays valid
         * because cancel() only removes the waiter being cancelled. */
        next = TAILQ_FIRST(&mod->queue);
        w->ready(w, inst, 0, NULL);
    }
    maybe_scale_up(mod);
}

struct af_module *af_module_new(struct af_server *srv, const struct af_app_yaml *app)
{
    const struct af_config *cfg = srv->cfg;
    struct af_module *mod = af_xcalloc(1, sizeof(*mod));
    mod->srv = srv;
    mod->app = app;
    mod->name = af_xstrdup(app->service ? app->service : "default");
    mod->version = af_xstrdup(app->version ? app->version : "1");
    mod->stock_runtime = af_runtime_is_stock(app->runtime);
    bool threadsafe = app->threadsafe;
    af_config_threadsafe_override(cfg, mod->name, &threadsafe);
    mod->max_concurrent = threadsafe ? (app->max_concurrent_requests > 0
                                            ? app->max_concurrent_requests
                                            : 10)
                                     : 1;
    switch (app->scaling) {
    case AF_SCALING_MANUAL:
        mod->fixed = true;
        mod->min_instances = app->manual_instances > 0 ? app->manual_instances : 1;
        mod->max_instances = mod->min_instances;
        break;
    case AF_SCALING_BASIC:
        mod->min_instances = 1;
        mod->max_instances = app->basic_max_instances > 0 ? app->basic_max_instances
                                                          : DEFAULT_MAX_INSTANCES;
        break;
    case AF_SCALING_AUTOMATIC:
        mod->min_instances = app->min_instances > 0 ? app->min_instances : 1;
        mod->max_instances = app->max_instances > 0 ? app->max_instances : DEFAULT_MAX_INSTANCES;
        break;
    }
    if (cfg->max_module_instances > 0 && mod->max_instances > cfg->max_module_instances)
        mod->max_instances = cfg->max_module_instances;
    if (mod->min_instances > mod->max_instances)
        mod->min_instances = mod->max_instances;
    mod->queue_max = cfg->max_pending_requests;
    TAILQ_INIT(&mod->instances);
    TAILQ_INIT(&mod->queue);
    mod->dispatch_ev = event_new(srv->base, -1, 0, dispatch_cb, mod);
    mod->spawn_timer = evtimer_new(srv->base, spawn_timer_cb, mod);

    if (!app->entrypoint) {
        mod->unavailable = af_xasprintf(
            "Module \"%s\" (runtime %s) has no entrypoint in app.yaml, and appfront does not "
            "build apps yet: add an entrypoint that starts your server.",
            mod->name, app->runtime ? app->runtime : "?");
        af_log(AF_LOG_WARNING, "%s", mod->unavailable);
        return mod;
    }
    for (int i = 0; i < mod->min_instances; i++)
        spawn_one(mod);
    return mod;
}

struct af_instance *af_module_acquire(struct af_module *mod, struct af_waiter *w, int *status,
                                      const char **why)
{
    *status = 0;
    if (mod->unavailable) {
        *status = 500;
        *why = mod->unavailable;
        return NULL;
    }
    if (mod->stopping) {
        *status = 503;
        *why = "The server is shutting down.";
        return NULL;
    }
    if (live_count(mod) == 0 && mod->start_failure) {
        /* The last start failed and the next one waits for its backoff:
         * say why now instead of holding the request. */
        spawn_one(mod);
        *status = 502;
        *why = mod->start_failure;
        return NULL;
    }
    /* Routed requests keep FIFO order: nobody overtakes the queue. */
    if (w->direct || mod->queue_len == 0) {
        struct af_instance *inst = w->direct ? pick_direct(mod) : pick_routed(mod);
        if (inst) {
            take_slot(inst, w->direct);
            return inst;
        }
    }
    if (mod->queue_len >= mod->queue_max) {
        *status = 503;
        *why = "Too many requests are waiting for an instance.";
        return NULL;
    }
    TAILQ_INSERT_TAIL(&mod->queue, w, link);
    mod->queue_len++;
    w->queued = true;
    maybe_scale_up(mod);
    return NULL;
}

void af_module_cancel(struct af_module *mod, struct af_waiter *w)
{
    if (!w->queued)
        return;
    TAILQ_REMOVE(&mod->queue, w, link);
    mod->queue_len--;
    w->queued = false;
}

void af_module_release(struct af_module *mod, struct af_instance *inst, bool direct)
{
    if (direct)
        inst->active_direct--;
    else
        inst->active--;
    if (mod->queue_len > 0)
        dispatch_soon(mod);
}

void af_module_instance_ready(struct af_module *mod, struct af_instance *inst)
{
    mod->n_starting--;
    mod->n_ready++;
    free(mod->start_failure);
    mod->start_failure = NULL;
    if (mod->queue_len > 0)
        dispatch_soon(mod);
}

/* Fails every queued waiter when no instance is left to serve them. */
static void fail_waiters(struct af_module *mod, int status, const char *why)
{
    struct af_waiter *w;
    while ((w = TAILQ_FIRST(&mod->queue)) != NULL) {
        TAILQ_REMOVE(&mod->queue, w, link);
        mod->queue_len--;
        w->queued = false;
        w->ready(w, NULL, status, why);
    }
}

void af_module_instance_died(struct af_module *mod, struct af_instance *inst)
{
    bool started_ok = inst->ever_ready;
    if (started_ok)
        mod->n_ready--;
    else
        mod->n_starting--; /* it died (or was stopped) while starting */
    TAILQ_REMOVE(&mod->instances, inst, link);
    struct timeval now;
    gettimeofday(&now, NULL);
    long lived_ms = (now.tv_sec - inst->spawned.tv_sec) * 1000L +
                    (now.tv_usec - inst->spawned.tv_usec) / 1000;
    if (!mod->stopping) {
        if (started_ok && lived_ms > 10000)
            mod->backoff_ms = 0;
        else
            mod->backoff_ms = mod->backoff_ms ? mod->backoff_ms * 2 : BACKOFF_MIN_MS;
        if (mod->backoff_ms > BACKOFF_MAX_MS)
            mod->backoff_ms = BACKOFF_MAX_MS;
        struct timeval b = {mod->backoff_ms / 1000, (mod->backoff_ms % 1000) * 1000};
        timeradd(&now, &b, &mod->next_spawn);
        if (!started_ok) {
            char *tail = af_instance_stderr_tail(inst);
            free(mod->start_failure);
            mod->start_failure = af_xasprintf("Instance %s failed to start.%s%s", inst->name,
                                              *tail ? "\n\nLast lines of its stderr:\n" : "",
                                              tail);
            free(tail);
            /* Nothing else can serve: tell the waiters now, with what the
             * instance said, rather than at the timeout. */
            if (live_count(mod) == 0)
                fail_waiters(mod, 502, mod->start_failure);
        }
        if (live_count(mod) < mod->min_instances || mod->queue_len > 0)
            spawn_one(mod);
    }
    af_instance_unref(inst); /* the module list's reference */
    if (mod->stopping)
        af_server_maybe_done(mod->srv);
}

void af_module_stop(struct af_module *mod, int grace_ms)
{
    mod->stopping = true;
    event_del(mod->spawn_timer);
    fail_waiters(mod, 503, "The server is shutting down.");
    struct af_instance *inst;
    TAILQ_FOREACH(inst, &mod->instances, link)
    af_instance_stop(inst, grace_ms);
}

int af_module_live(const struct af_module *mod)
{
    int n = 0;
    struct af_instance *inst;
    TAILQ_FOREACH(inst, &mod->instances, link)
    n++;
    return n;
}

void af_module_free(struct af_module *mod)
{
    if (!mod)
        return;
    struct af_instance *inst;
    while ((inst = TAILQ_FIRST(&mod->instances)) != NULL) {
        TAILQ_REMOVE(&mod->instances, inst, link);
        af_instance_unref(inst);
    }
    event_free(mod->dispatch_ev);
    event_free(mod->spawn_timer);
    free(mod->unavailable);
    free(mod->start_failure);
    free(mod->name);
    free(mod->version);
    free(mod);
}
