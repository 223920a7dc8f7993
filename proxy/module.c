/*
 * module — instances, slots, the wait queue and scaling. See module.h.
 *
 * Scaling rules (docs/architecture.md):
 *   manual:    exactly `instances`, respawned when one dies, never stopped
 *              for being idle;
 *   automatic: min_instances (at least 1) at start; one more whenever the
 *              queued requests exceed what the starting instances will take,
 *              up to max_instances; an instance idle for AUTOMATIC_IDLE_MS
 *              is stopped while more than min_instances (at least 1) run and
 *              more than max_idle_instances are idle;
 *   basic:     like automatic, from 1, up to max_instances; an instance idle
 *              for idle_timeout is stopped, down to none.
 * A crash delays the next spawn (100 ms, doubling to 5 s); an instance that
 * served for a while resets the delay.
 *
 * Scaling down loses no request: the idle instance is first marked
 * draining, so nothing new is routed to it (a request arriving then goes to
 * another instance, or waits for a new one), and the drain path that
 * restarts use stops it only while it holds no request.
 *
 * The developer loop (docs/devloop.md): the watcher reports changed files;
 * app.yaml is re-read, the app rebuilt when it needs a build, and a new
 * generation of instances started. Traffic moves to it when its first
 * instance is ready; the old instances finish what they hold and stop.
 */
#include "proxy/module.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>

#include "common/log.h"
#include "common/xalloc.h"
#include "proxy/background.h"
#include "proxy/build.h"
#include "proxy/instance.h"
#include "proxy/router.h"
#include "proxy/server.h"
#include "proxy/watcher.h"

#define DEFAULT_MAX_INSTANCES 20
#define BACKOFF_MIN_MS 100
#define BACKOFF_MAX_MS 5000
/* SIGTERM to SIGKILL for an old instance once its requests are done. */
#define DRAIN_GRACE_MS 2000
/* Changes reported this soon after a build ended were made during it: the
 * watcher's window (100 ms) plus slack for a loaded machine. */
#define BUILD_ECHO_MS 300
/* At most this many paths changed during one build are remembered. */
#define DURING_MAX 4096
/* Automatic scaling stops an instance beyond min_instances once it has held
 * no request for this long. dev_appserver quit at most one idle instance a
 * minute. A minute also outlasts the pauses between a developer's bursts of
 * requests (a page and what it loads, a test run, a benchmark's rounds), so
 * a burst does not pay again for the cold starts of the instances the one
 * before needed, while what a load test added is gone soon after it ends.
 * The environment variable below replaces it, for appfront's own tests. */
#define AUTOMATIC_IDLE_MS 60000
#define AUTOMATIC_IDLE_ENV "APPFRONT_TEST_AUTOMATIC_IDLE_MS"
/* basic_scaling without idle_timeout: App Engine's default, 5 minutes
 * (dev_appserver used 15). */
#define BASIC_IDLE_DEFAULT_S 300

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
    /* Draining instances take nothing new. The ready instances that are
     * not draining all belong to one generation: the current one once it
     * has a ready instance, the retired one until then. */
    TAILQ_FOREACH(inst, &mod->instances, link)
    {
        if (inst->state == AF_INST_READY && !inst->draining &&
            inst->active < mod->max_concurrent)
            return inst;
    }
    return NULL;
}

static struct af_instance *pick_direct(struct af_module *mod)
{
    struct af_instance *inst, *best = NULL;
    TAILQ_FOREACH(inst, &mod->instances, link)
    {
        if (inst->state != AF_INST_READY || inst->draining)
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

static void queue_push(struct af_module *mod, struct af_waiter *w)
{
    TAILQ_INSERT_TAIL(&mod->queue, w, link);
    mod->queue_len++;
    mod->queue_direct += w->direct;
    w->queued = true;
}

static void queue_remove(struct af_module *mod, struct af_waiter *w)
{
    TAILQ_REMOVE(&mod->queue, w, link);
    mod->queue_len--;
    mod->queue_direct -= w->direct;
    w->queued = false;
}

/* More instances while requests wait, if the limit allows. */
static void maybe_scale_up(struct af_module *mod)
{
    if (mod->fixed || mod->stopping || mod->unavailable)
        return;
    if (live_count(mod) >= limit_instances(mod))
        return;
    int routed_waiting = mod->queue_len - mod->queue_direct;
    int coming = mod->n_starting * mod->max_concurrent;
    if (mod->n_ready == 0 && mod->n_starting == 0 && mod->queue_len > 0)
        routed_waiting = routed_waiting ? routed_waiting : 1; /* direct needs one too */
    if (routed_waiting > coming)
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
    /* No entrypoint: the first build has not succeeded yet. */
    if (mod->stopping || mod->spawn_pending || !mod->entrypoint || mod->unavailable)
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
        queue_remove(mod, w);
        take_slot(inst, w->direct);
        /* The callback may free other waiters' exchanges only through their
         * own connections, never this queue's order: `next` stays valid
         * because cancel() only removes the waiter being cancelled. */
        next = TAILQ_FIRST(&mod->queue);
        w->ready(w, inst, 0, NULL);
    }
    maybe_scale_up(mod);
}

/* Stops the draining instances that hold no request any more. Deferred
 * from af_module_release(): stopping closes pooled connections, which the
 * releasing exchange must not see under its feet. */
static void drain_cb(evutil_socket_t fd, short what, void *arg)
{
    struct af_module *mod = arg;
    struct af_instance *inst;
    TAILQ_FOREACH(inst, &mod->instances, link)
    {
        if (inst->draining && inst->state == AF_INST_READY && inst->active == 0 &&
            inst->active_direct == 0)
            af_instance_stop(inst, DRAIN_GRACE_MS);
    }
}

/* Traffic moves to the current generation: retired instances take no new
 * request and stop once idle. */
static void switch_over(struct af_module *mod)
{
    bool any = false;
    struct af_instance *inst;
    TAILQ_FOREACH(inst, &mod->instances, link)
    {
        if (inst->retired && !inst->draining) {
            inst->draining = true;
            any = true;
        }
    }
    if (any)
        event_active(mod->drain_ev, EV_TIMEOUT, 0);
}

/* ---- scaling down --------------------------------------------------------- */

/* Milliseconds of a monotonic clock: idle periods must not stretch or
 * shrink when the wall clock is set. The coarse clock (a few ms of
 * resolution) is read without a system call, on every release. */
static long long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* AUTOMATIC_IDLE_MS, or what the test variable says (read once). */
static long long automatic_idle_ms(void)
{
    static long long ms = -1;
    if (ms >= 0)
        return ms;
    ms = AUTOMATIC_IDLE_MS;
    const char *v = getenv(AUTOMATIC_IDLE_ENV);
    if (!v || !*v)
        return ms;
    char *end;
    long long n = strtoll(v, &end, 10);
    if (*end || n < 1 || n > 86400000LL || !(*v >= '0' && *v <= '9'))
        af_log(AF_LOG_ERROR, "%s=%s: expected milliseconds from 1 to 86400000; idle instances "
               "of automatic scaling are stopped after %d ms", AUTOMATIC_IDLE_ENV, v,
               AUTOMATIC_IDLE_MS);
    else
        ms = n;
    return ms;
}

/* An instance scaling down may stop: ready, serving the current
 * generation, holding no request. */
static bool is_idle(const struct af_instance *inst)
{
    return inst->state == AF_INST_READY && !inst->draining && !inst->retired &&
           inst->active == 0 && inst->active_direct == 0;
}

/* Arms the idle check for a full period from now, unless it is armed (for
 * an earlier instance, whose deadline comes first: every instance of the
 * module has the same period) or no instance could be stopped. */
static void idle_arm(struct af_module *mod)
{
    if (mod->idle_armed || mod->idle_ms == 0 || live_count(mod) <= mod->keep_min)
        return;
    struct timeval tv = {(time_t)(mod->idle_ms / 1000), (suseconds_t)(mod->idle_ms % 1000) * 1000};
    evtimer_add(mod->idle_timer, &tv);
    mod->idle_armed = true;
}

/*
 * Stops the instances idle for a whole period, the longest idle first,
 * while more than keep_min run and more than keep_idle are idle; then arms
 * itself for the next one due. When nothing may be stopped it stays unarmed
 * until an instance becomes idle or ready again (idle_arm).
 */
static void idle_cb(evutil_socket_t fd, short what, void *arg)
{
    struct af_module *mod = arg;
    mod->idle_armed = false;
    /* While the build fails, the running instances are what the direct port
     * still reaches (docs/devloop.md): keep them. */
    if (mod->idle_ms == 0 || mod->stopping || mod->unavailable || mod->build_failure)
        return;
    long long now = now_ms();
    for (;;) {
        struct af_instance *inst, *oldest = NULL;
        int idle = 0;
        TAILQ_FOREACH(inst, &mod->instances, link)
        {
            if (!is_idle(inst))
                continue;
            idle++;
            if (!oldest || inst->idle_since_ms < oldest->idle_since_ms)
                oldest = inst;
        }
        /* Waiting requests need every instance there is. */
        if (!oldest || live_count(mod) <= mod->keep_min || idle <= mod->keep_idle ||
            mod->queue_len > 0)
            return;
        long long due = oldest->idle_since_ms + mod->idle_ms;
        if (due > now) {
            struct timeval tv = {(time_t)((due - now) / 1000),
                                 (suseconds_t)((due - now) % 1000) * 1000};
            evtimer_add(mod->idle_timer, &tv);
            mod->idle_armed = true;
            return;
        }
        /* Out of rotation at once: from here on pick_routed() and
         * pick_direct() pass it by, and it leaves the counts that scaling up
         * goes by, so a request arriving now goes to another instance or
         * starts one. drain_cb stops it (SIGTERM, then SIGKILL), which also
         * closes its pooled connections. */
        oldest->scaled_down = true;
        oldest->draining = true;
        mod->n_ready--;
        af_log(AF_LOG_INFO, "Instance %s held no request for %lld ms: stopping it (%d left)",
               oldest->name, now - oldest->idle_since_ms, live_count(mod));
        event_active(mod->drain_ev, EV_TIMEOUT, 0);
    }
}

void af_module_restart(struct af_module *mod)
{
    if (mod->stopping || mod->unavailable || !mod->entrypoint)
        return;
    gettimeofday(&mod->restarted, NULL);
    mod->gen++;
    struct af_instance *inst;
    TAILQ_FOREACH(inst, &mod->instances, link)
    {
        if (inst->retired || inst->scaled_down)
            continue;
        inst->retired = true;
        if (inst->ever_ready)
            mod->n_ready--;
        else
            mod->n_starting--;
        mod->n_retired++;
        /* One that is still starting runs the old code and serves nobody
         * yet: it goes now. A ready one serves until the new one is ready. */
        if (inst->state == AF_INST_STARTING)
            af_instance_stop(inst, 0);
    }
    /* New code deserves a prompt start, whatever the old code's crashes. */
    mod->backoff_ms = 0;
    timerclear(&mod->next_spawn);
    event_del(mod->spawn_timer);
    mod->spawn_pending = false;
    free(mod->start_failure);
    mod->start_failure = NULL;
    if (mod->gen > 1)
        af_log(AF_LOG_INFO, "Module \"%s\": starting generation %d of its instances", mod->name,
               mod->gen);
    int n = mod->min_instances > 0 ? mod->min_instances : 1;
    for (int i = 0; i < n; i++)
        spawn_one(mod);
}

static bool needs_go_build(const struct af_app_yaml *app)
{
    return !app->entrypoint && app->runtime && strncmp(app->runtime, "go", 2) == 0;
}

/* 'path' for /bin/sh, whatever the path holds. */
static char *sh_quote(const char *s)
{
    size_t n = 3;
    for (const char *p = s; *p; p++)
        n += *p == '\'' ? 4 : 1;
    char *q = af_xmalloc(n), *o = q;
    *o++ = '\'';
    for (const char *p = s; *p; p++) {
        if (*p == '\'') {
            memcpy(o, "'\\''", 4);
            o += 4;
        } else {
            *o++ = *p;
        }
    }
    *o++ = '\'';
    *o = '\0';
    return q;
}

static void on_build_done(void *arg, const struct af_build_result *r);
static void echo_cb(evutil_socket_t fd, short what, void *arg);
static void list_clear(char ***v, size_t *n);

/* Takes app's settings: limits, runtime, what to run and how to build it.
 * At start and after app.yaml is reloaded. */
static void configure(struct af_module *mod, const struct af_app_yaml *app)
{
    const struct af_config *cfg = mod->srv->cfg;
    mod->app = app;
    mod->stock_runtime = af_runtime_is_stock(app->runtime);
    bool threadsafe = app->threadsafe;
    af_config_threadsafe_override(cfg, mod->name, &threadsafe);
    mod->max_concurrent = threadsafe ? (app->max_concurrent_requests > 0
                                            ? app->max_concurrent_requests
                                            : 10)
                                     : 1;
    mod->fixed = false;
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
    switch (app->scaling) {
    case AF_SCALING_MANUAL:
        mod->idle_ms = 0;
        break;
    case AF_SCALING_BASIC:
        mod->idle_ms = 1000LL * (app->basic_idle_timeout_s > 0 ? app->basic_idle_timeout_s
                                                               : BASIC_IDLE_DEFAULT_S);
        mod->keep_min = 0;
        mod->keep_idle = 0;
        break;
    case AF_SCALING_AUTOMATIC:
        /* min_idle_instances only keeps instances here: appfront starts
         * none ahead of the load to have them idle. */
        mod->idle_ms = automatic_idle_ms();
        mod->keep_min = mod->min_instances;
        mod->keep_idle = app->max_idle_instances > app->min_idle_instances
                             ? app->max_idle_instances
                             : app->min_idle_instances;
        if (mod->keep_idle < 0)
            mod->keep_idle = 0;
        break;
    }
    /* A timer armed for the old period would hold back a shorter new one. */
    event_del(mod->idle_timer);
    mod->idle_armed = false;
    idle_arm(mod);

    free(mod->unavailable);
    mod->unavailable = NULL;
    af_builder_free(mod->builder);
    mod->builder = NULL;
    bool go = needs_go_build(app);
    if (!app->entrypoint && !go) {
        mod->unavailable = af_xasprintf(
            "Module \"%s\" (runtime %s) has no entrypoint in app.yaml, and appfront builds "
            "only Go apps (runtime go1xx) itself: add an entrypoint that starts your server.",
            mod->name, app->runtime ? app->runtime : "?");
        return;
    }
    if (cfg->build_command || go) {
        char *prefix = go ? af_xasprintf("%s/%s-go", mod->srv->run_dir, mod->name) : NULL;
        struct af_builder_options bo = {
            .name = mod->name,
            .dir = app->dir,
            .build_command = cfg->build_command,
            .go_out_prefix = prefix,
            .cb = on_build_done,
            .arg = mod,
        };
        mod->builder = af_builder_new(mod->srv->base, &bo);
        free(prefix);
        /* The entrypoint is set when the build succeeds: until then the
         * instances that exist keep what they run. */
    } else {
        free(mod->entrypoint);
        mod->entrypoint = af_xstrdup(app->entrypoint);
    }
}

struct af_module *af_module_new(struct af_server *srv, const struct af_app_yaml *app)
{
    struct af_module *mod = af_xcalloc(1, sizeof(*mod));
    mod->srv = srv;
    mod->name = af_xstrdup(app->service ? app->service : "default");
    mod->version = af_xstrdup(app->version ? app->version : "1");
    mod->queue_max = srv->cfg->max_pending_requests;
    TAILQ_INIT(&mod->instances);
    TAILQ_INIT(&mod->queue);
    mod->dispatch_ev = event_new(srv->base, -1, 0, dispatch_cb, mod);
    mod->spawn_timer = evtimer_new(srv->base, spawn_timer_cb, mod);
    mod->drain_ev = event_new(srv->base, -1, 0, drain_cb, mod);
    mod->idle_timer = evtimer_new(srv->base, idle_cb, mod);
    mod->echo_ev = evtimer_new(srv->base, echo_cb, mod);
    configure(mod, app);
    if (mod->unavailable) {
        af_log(AF_LOG_WARNING, "%s", mod->unavailable);
        return mod;
    }
    /* In the background: aetest, for one, expects the startup lines in
     * milliseconds. Requests wait in the queue meanwhile. */
    if (mod->builder)
        af_builder_start(mod->builder);
    else
        af_module_restart(mod);
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
    /* The app as it is on disk does not build: show why rather than what
     * older code would answer. The direct port still reaches the instances
     * that run (docs/devloop.md). */
    if (mod->build_failure && !(w->direct && mod->n_ready > 0)) {
        *status = 500;
        *why = mod->build_failure;
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
    /* A background request goes to the instance that asked for it, or
     * nowhere: the function to run lives in that process alone. */
    if (w->pinned) {
        struct af_instance *inst;
        TAILQ_FOREACH(inst, &mod->instances, link)
        {
            if (inst->id == w->pin_id && inst->state == AF_INST_READY) {
                take_slot(inst, true);
                return inst;
            }
        }
        *status = 503;
        *why = "The instance this background request is for is no longer running.";
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
    queue_push(mod, w);
    maybe_scale_up(mod);
    return NULL;
}

void af_module_cancel(struct af_module *mod, struct af_waiter *w)
{
    if (!w->queued)
        return;
    queue_remove(mod, w);
}

void af_module_release(struct af_module *mod, struct af_instance *inst, bool direct)
{
    if (direct)
        inst->active_direct--;
    else
        inst->active--;
    if (inst->active == 0 && inst->active_direct == 0) {
        if (inst->draining) {
            event_active(mod->drain_ev, EV_TIMEOUT, 0);
        } else if (mod->idle_ms) {
            inst->idle_since_ms = now_ms();
            idle_arm(mod);
        }
    }
    if (mod->queue_len > 0)
        dispatch_soon(mod);
}

void af_module_instance_ready(struct af_module *mod, struct af_instance *inst)
{
    af_background_instances_changed(); /* the system service's table */
    if (inst->retired)
        return; /* cannot happen: retired starting instances are stopped */
    mod->n_starting--;
    mod->n_ready++;
    free(mod->start_failure);
    mod->start_failure = NULL;
    /* Idle from the start: an instance nobody asks for goes too. */
    inst->idle_since_ms = now_ms();
    idle_arm(mod);
    if (mod->n_retired > 0) {
        struct timeval now, d;
        gettimeofday(&now, NULL);
        timersub(&now, &mod->restarted, &d);
        af_log(AF_LOG_INFO, "Module \"%s\": instance %s of the new generation is ready %ld ms "
               "after the restart; the old instances finish their requests and stop",
               mod->name, inst->name, (long)(d.tv_sec * 1000 + d.tv_usec / 1000));
        switch_over(mod);
    }
    if (mod->queue_len > 0)
        dispatch_soon(mod);
}

/* Fails every queued waiter when no instance is left to serve them. */
static void fail_waiters(struct af_module *mod, int status, const char *why)
{
    struct af_waiter *w;
    while ((w = TAILQ_FIRST(&mod->queue)) != NULL) {
        queue_remove(mod, w);
        w->ready(w, NULL, status, why);
    }
}

void af_module_instance_died(struct af_module *mod, struct af_instance *inst)
{
    af_background_instances_changed();
    if (inst->retired || inst->scaled_down) {
        /* An old generation's instance, or one scaled down: stopped on
         * purpose, or it died before its turn came; either way no backoff
         * and no respawn. */
        if (inst->retired)
            mod->n_retired--;
        TAILQ_REMOVE(&mod->instances, inst, link);
        af_instance_unref(inst);
        if (mod->stopping)
            af_server_maybe_done(mod->srv);
        return;
    }
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
            /* The new code does not start: what it says is what the
             * developer needs to see, not the old code's answers. */
            switch_over(mod);
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
    event_del(mod->idle_timer);
    mod->idle_armed = false;
    if (mod->builder)
        af_builder_cancel(mod->builder);
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
    af_router_release(mod);
    af_watcher_free(mod->watcher);
    af_builder_free(mod->builder);
    event_free(mod->dispatch_ev);
    event_free(mod->spawn_timer);
    event_free(mod->drain_ev);
    event_free(mod->idle_timer);
    event_free(mod->echo_ev);
    list_clear(&mod->outputs, &mod->n_outputs);
    list_clear(&mod->during, &mod->n_during);
    list_clear(&mod->prev_during, &mod->n_prev_during);
    for (size_t i = 0; i < mod->n_own_apps; i++)
        af_appyaml_free(mod->own_apps[i]);
    free(mod->own_apps);
    free(mod->entrypoint);
    free(mod->build_failure);
    free(mod->go_binary);
    free(mod->unavailable);
    free(mod->start_failure);
    free(mod->name);
    free(mod->version);
    free(mod);
}

/* ---- the developer loop: builds, reloads, file changes ------------------ */

static bool in_list(char **v, size_t n, const char *s)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(v[i], s) == 0)
            return true;
    return false;
}

static void list_add(char ***v, size_t *n, const char *s)
{
    *v = af_xrealloc(*v, (*n + 1) * sizeof(char *));
    (*v)[(*n)++] = af_xstrdup(s);
}

static void list_clear(char ***v, size_t *n)
{
    for (size_t i = 0; i < *n; i++)
        free((*v)[i]);
    free(*v);
    *v = NULL;
    *n = 0;
}

/*
 * Judges what changed while the last build ran, once its events are in.
 * Only --build_command can write into the app directory (go build writes
 * into the run directory), and a build that does (make, a generator) would
 * otherwise start the next build forever. So: changes made during a build
 * start one more build, since they may be the developer's edits. A path that
 * changed during that build too is the build's output: it is learnt, and
 * ignored from then on. A build that writes nothing costs nothing extra.
 */
static void echo_cb(evutil_socket_t fd, short what, void *arg)
{
    struct af_module *mod = arg;
    if (mod->stopping || !mod->builder || af_builder_running(mod->builder))
        return;
    if (mod->echo_builds > 0) {
        /* After two such builds in a row, whatever still changes is the
         * build's (a file name with a time in it, say). */
        bool all = mod->echo_builds >= 2;
        char **keep = NULL;
        size_t n_keep = 0;
        char learnt[512];
        size_t off = 0;
        learnt[0] = '\0';
        for (size_t i = 0; i < mod->n_during; i++) {
            const char *p = mod->during[i];
            if (all || in_list(mod->prev_during, mod->n_prev_during, p)) {
                list_add(&mod->outputs, &mod->n_outputs, p);
                if (off < sizeof(learnt))
                    off += (size_t)snprintf(learnt + off, sizeof(learnt) - off, "%s%s",
                                            off ? ", " : "", p);
            } else {
                list_add(&keep, &n_keep, p);
            }
        }
        if (off)
            af_log(AF_LOG_INFO, "Module \"%s\": its build writes %s into the app directory; "
                   "changes there no longer start a build (put them in skip_files to say so)",
                   mod->name, learnt);
        list_clear(&mod->during, &mod->n_during);
        mod->during = keep;
        mod->n_during = n_keep;
        if (all && mod->during_more)
            mod->during_more = false; /* cannot be learnt; give up */
    }
    list_clear(&mod->prev_during, &mod->n_prev_during);
    if (mod->n_during == 0 && !mod->during_more) {
        mod->echo_builds = 0;
        return;
    }
    char list[512];
    size_t off = 0;
    list[0] = '\0';
    for (size_t i = 0; i < mod->n_during && off < sizeof(list); i++)
        off += (size_t)snprintf(list + off, sizeof(list) - off, "%s%s", i ? ", " : "",
                                mod->during[i]);
    af_log(AF_LOG_INFO, "Module \"%s\": %s%s changed while it was building: building again",
           mod->name, list, mod->during_more ? " and more" : "");
    mod->echo_builds++;
    mod->prev_during = mod->during;
    mod->n_prev_during = mod->n_during;
    mod->during = NULL;
    mod->n_during = 0;
    mod->during_more = false;
    af_builder_start(mod->builder);
}

static void on_build_done(void *arg, const struct af_build_result *r)
{
    struct af_module *mod = arg;
    gettimeofday(&mod->build_ended, NULL);
    if (mod->stopping)
        return;
    struct timeval echo = {0, BUILD_ECHO_MS * 1000};
    evtimer_add(mod->echo_ev, &echo);
    if (!r->ok) {
        free(mod->build_failure);
        mod->build_failure = af_xasprintf(
            "The build of module \"%s\" failed: %s %s.\n\n%s\n"
            "appfront builds again when a file of the app changes.%s\n",
            mod->name, r->step, r->how, r->output,
            mod->n_ready > 0 ? " Until a build succeeds, the instances already running "
                               "stay up (reachable through the direct port) and requests "
                               "here get this page."
                             : "");
        fail_waiters(mod, 500, mod->build_failure);
        return;
    }
    if (mod->build_failure)
        af_log(AF_LOG_INFO, "Module \"%s\" builds again", mod->name);
    free(mod->build_failure);
    mod->build_failure = NULL;
    free(mod->entrypoint);
    if (r->binary) {
        /* Running instances keep their binary open: unlinking the old one
         * only frees its name. */
        if (mod->go_binary)
            unlink(mod->go_binary);
        free(mod->go_binary);
        mod->go_binary = af_xstrdup(r->binary);
        char *q = sh_quote(r->binary);
        mod->entrypoint = af_xasprintf("exec %s", q);
        free(q);
    } else {
        mod->entrypoint = af_xstrdup(mod->app->entrypoint);
    }
    af_module_restart(mod);
}

/* Re-reads app.yaml. On an error the configuration in force stays. */
static int reload(struct af_module *mod)
{
    char err[1024];
    struct af_app_yaml *app = NULL;
    if (af_appyaml_load(mod->app->path, &app, err, sizeof(err)) < 0) {
        af_log(AF_LOG_ERROR, "%s; keeping the previous configuration", err);
        return -1;
    }
    const char *service = app->service ? app->service : "default";
    if (strcmp(service, mod->name) != 0)
        af_log(AF_LOG_WARNING, "%s: the service name changed from \"%s\" to \"%s\"; that takes "
               "a restart of appfront", app->path, mod->name, service);
    if (mod->watcher &&
        af_watcher_set_skip_files(mod->watcher, app->skip_files, app->n_skip_files, err,
                                  sizeof(err)) < 0)
        af_log(AF_LOG_WARNING, "%s: skip_files: %s", app->path, err);
    mod->own_apps = af_xrealloc(mod->own_apps, (mod->n_own_apps + 1) * sizeof(*mod->own_apps));
    mod->own_apps[mod->n_own_apps++] = app;
    /* Earlier configurations stay allocated until the module is freed:
     * whoever borrowed one may still hold it. The module's router is rebuilt
     * from the new one on the next request (proxy/router.c). */
    if (mod->srv->module == mod)
        mod->srv->app = app;
    configure(mod, app);
    af_log(AF_LOG_INFO, "Reloaded %s", app->path);
    if (mod->unavailable) {
        af_log(AF_LOG_WARNING, "%s", mod->unavailable);
        switch_over(mod);
    }
    return 0;
}

static long ms_between(const struct timeval *a, const struct timeval *b)
{
    return (b->tv_sec - a->tv_sec) * 1000L + (b->tv_usec - a->tv_usec) / 1000;
}

/* index.yaml at the top of the app directory is the datastore's: appfront
 * itself appends to it when a query needs a new index, and neither the
 * app's code nor its configuration depends on it. A change to it restarts
 * nothing (docs/datastore.md, "Indexes"). */
static bool is_index_yaml(const char *rel)
{
    return strcmp(rel, "index.yaml") == 0 || strcmp(rel, "index.yml") == 0;
}

static void on_files_changed(void *arg, const struct af_watch_batch *b)
{
    struct af_module *mod = arg;
    if (mod->stopping)
        return;
    const char *yaml = strrchr(mod->app->path, '/');
    yaml = yaml ? yaml + 1 : mod->app->path;
    /* An overflow or a long list may hide app.yaml: read it again then. */
    bool yaml_changed = b->overflow || b->n_more > 0, others = b->overflow || b->n_more > 0;
    char list[512];
    size_t off = 0;
    list[0] = '\0';
    size_t n_index = 0;
    for (size_t i = 0; i < b->n_paths; i++) {
        if (strcmp(b->paths[i], yaml) == 0)
            yaml_changed = true;
        else if (is_index_yaml(b->paths[i]))
            n_index++;
        else
            others = true;
        if (off < sizeof(list))
            off += (size_t)snprintf(list + off, sizeof(list) - off, "%s%s", i ? ", " : "",
                                    b->paths[i]);
    }
    if (off >= sizeof(list))
        snprintf(list + sizeof(list) - 5, 5, "...");
    if (n_index > 0 && n_index == b->n_paths && !b->n_more && !b->overflow)
        return;
    struct timeval now;
    gettimeofday(&now, NULL);
    bool building = mod->builder && af_builder_running(mod->builder);
    bool echo_window = timerisset(&mod->build_ended) &&
                       ms_between(&mod->build_ended, &now) < BUILD_ECHO_MS;
    /* Only --build_command may write into the app directory. */
    if (mod->builder && mod->srv->cfg->build_command && !b->overflow) {
        /* Learnt build outputs are not changes; what changes during a
         * build is judged when it ends (echo_cb). */
        size_t n_real = 0;
        for (size_t i = 0; i < b->n_paths; i++) {
            if (strcmp(b->paths[i], yaml) == 0 || is_index_yaml(b->paths[i]) ||
                in_list(mod->outputs, mod->n_outputs, b->paths[i]))
                continue;
            n_real++;
            if ((building || echo_window) && !in_list(mod->during, mod->n_during, b->paths[i])) {
                if (mod->n_during < DURING_MAX)
                    list_add(&mod->during, &mod->n_during, b->paths[i]);
                else
                    mod->during_more = true;
            }
        }
        if ((building || echo_window) && b->n_more)
            mod->during_more = true;
        others = n_real > 0 || b->n_more > 0;
        if (!yaml_changed && !others)
            return;
        if (!yaml_changed && (building || echo_window)) {
            af_log(AF_LOG_DEBUG, "Module \"%s\": changed during its build: %s", mod->name, list);
            return;
        }
    }
    af_log(AF_LOG_INFO, "Module \"%s\": changed: %s%s%s", mod->name, list,
           b->n_more ? " and more" : "", b->overflow ? " (events were lost)" : "");
    if (yaml_changed && reload(mod) < 0 && !others)
        return;
    if (mod->unavailable)
        return;
    if (mod->builder) {
        mod->echo_builds = 0;
        list_clear(&mod->during, &mod->n_during);
        list_clear(&mod->prev_during, &mod->n_prev_during);
        mod->during_more = false;
        af_builder_start(mod->builder);
    } else {
        af_module_restart(mod);
    }
}

void af_module_watch(struct af_module *mod)
{
    const struct af_config *cfg = mod->srv->cfg;
    if (!cfg->automatic_restart || mod->watcher)
        return;
    struct af_watcher_options o = {
        .root = mod->app->dir,
        .skip_files = mod->app->skip_files,
        .n_skip_files = mod->app->n_skip_files,
        .ignore_re = cfg->watcher_ignore_re,
        .use_mtime = cfg->use_mtime_file_watcher,
        .cb = on_files_changed,
        .arg = mod,
    };
    char err[512];
    struct timeval t0, t1;
    gettimeofday(&t0, NULL);
    mod->watcher = af_watcher_new(mod->srv->base, &o, err, sizeof(err));
    if (!mod->watcher) {
        af_log(AF_LOG_ERROR, "Not watching module \"%s\" for changes: %s", mod->name, err);
        return;
    }
    gettimeofday(&t1, NULL);
    struct af_watcher_stats st;
    af_watcher_stats(mod->watcher, &st);
    if (st.inotify)
        af_log(AF_LOG_INFO, "Watching %s for changes: %zu directories with inotify%s (%ld ms)",
               mod->app->dir, st.watched_dirs,
               st.polled_roots ? ", the rest polled" : "", ms_between(&t0, &t1));
    else
        af_log(AF_LOG_INFO, "Watching %s for changes: polling %zu entries every second (%ld ms)",
               mod->app->dir, st.polled_files, ms_between(&t0, &t1));
}
