/*
 * taskrunner — push tasks run through the front end (see taskrunner.h).
 *
 * The loop, all on the main thread:
 *
 *   poll:   one internal call taskqueue.RunnerPoll at a time, carrying the
 *           outcomes gathered since the last one and how many more tasks
 *           may run (AF_TASK_MAX_RUNNING minus those running);
 *   answer: the tasks to run now, and when to poll again; each task is
 *           sent as its own HTTP request on a connection of its own to the
 *           main port (libevent's HTTP client), with the task headers;
 *   done:   the status (0 when no answer came) goes into the next poll,
 *           which is made at once.
 *
 * A poll is also made when the timer the last answer asked for fires, and
 * when the service sends a notice (a task was added that is due before
 * then). While one poll is out, further reasons to poll only set a flag,
 * so calls never pile up. When appfront stops, nothing new is polled or
 * sent.
 */
#include "proxy/taskrunner.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>

#include "taskqueue.pb-c.h"

#include "apiserver/apiserver.h"
#include "common/log.h"
#include "common/xalloc.h"
#include "proxy/dispatch.h"
#include "proxy/headers.h"
#include "proxy/module.h"
#include "proxy/selfreq.h"
#include "proxy/server.h"

/* Tasks running at once, over all queues (each holds a connection). */
#define AF_TASK_MAX_RUNNING 32
/* After a failed poll (the service answered an error), try again after
 * this long rather than at once. */
#define AF_TASK_POLL_RETRY_MS 1000

struct run;

/* A module a task may run on: where its main port is. */
struct rt_module {
    const char *name;    /* borrowed from the server */
    const char *version; /* its app.yaml's, borrowed */
    char addr[64];       /* its main port's address, numeric */
    int port;
    char *hostname; /* "HOST:PORT", what the modules API's GetHostname answers; owned */
};

struct af_taskrunner {
    struct af_server *srv;
    struct af_api *api;
    int consumer;           /* its id with the internal-reply dispatcher; -1: none */
    struct event *timer;    /* the next poll the service asked for */
    struct rt_module *mods; /* every module, in the server's order */
    size_t n_mods;
    size_t dflt;  /* the default module's index */
    char *names;  /* "default, worker": for messages */

    bool polling;     /* a RunnerPoll is out */
    bool poll_again;  /* something happened while it was out */
    uint64_t poll_seq, poll_tag;
    int running;
    struct run *runs; /* every task in flight */

    Af__Taskqueue__RunnerResult **results; /* gathered for the next poll */
    size_t n_results, cap_results;

    /* Connections whose request finished, freed on the next loop turn:
     * libevent does not allow freeing one from its own request's callback. */
    struct evhttp_connection **dead;
    size_t n_dead, cap_dead;
    struct event *reap_ev;
};

/* One task being run. */
struct run {
    struct run *next, **prevp;
    struct af_taskrunner *r;
    struct evhttp_connection *conn;
    char *queue;
    char *name;
    uint64_t lease;
    struct timespec start;
};

static void poll_now(struct af_taskrunner *r);

/* ---- trust ---------------------------------------------------------------- */

bool af_taskrunner_trusted(struct af_headers *h)
{
    static const size_t name_len = sizeof(AF_TASK_SECRET_HEADER) - 1;
    int seen = 0;
    bool match = false;
    for (size_t i = 0; h->n_appfront && i < h->n; i++) {
        struct af_header *f = &h->v[i];
        if (f->id != AF_H_X_APPFRONT || f->name_len != name_len || strncasecmp(f->name, AF_TASK_SECRET_HEADER, name_len) != 0)
            continue;
        f->drop = true; /* never forwarded, whoever sent it */
        seen++;
        match = af_selfreq_secret_is(f->value, f->value_len);
    }
    return seen == 1 && match;
}

/* ---- results -------------------------------------------------------------- */

static void result_add(struct af_taskrunner *r, const struct run *run, int status)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    Af__Taskqueue__RunnerResult *res = af_xcalloc(1, sizeof(*res));
    af__taskqueue__runner_result__init(res);
    res->queue_name = af_xstrdup(run->queue);
    res->task_name = af_xstrdup(run->name);
    res->lease = run->lease;
    res->status = status;
    res->has_elapsed_usec = true;
    res->elapsed_usec = (int64_t)(now.tv_sec - run->start.tv_sec) * 1000000 +
                        (now.tv_nsec - run->start.tv_nsec) / 1000;
    if (r->n_results == r->cap_results) {
        r->cap_results = r->cap_results ? r->cap_results * 2 : 16;
        r->results = af_xrealloc(r->results, r->cap_results * sizeof(*r->results));
    }
    r->results[r->n_results++] = res;
}

static void results_free(Af__Taskqueue__RunnerResult **v, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free(v[i]->queue_name);
        free(v[i]->task_name);
        free(v[i]);
    }
}

/* ---- one task ---------------------------------------------------------------- */

static void run_free(struct run *run)
{
    free(run->queue);
    free(run->name);
    free(run);
}

static void reap_dead(struct af_taskrunner *r)
{
    while (r->n_dead > 0)
        evhttp_connection_free(r->dead[--r->n_dead]);
}

static void on_reap(evutil_socket_t fd, short what, void *arg)
{
    reap_dead(arg);
}

static void on_task_done(struct evhttp_request *req, void *arg)
{
    struct run *run = arg;
    struct af_taskrunner *r = run->r;
    int status = req ? evhttp_request_get_response_code(req) : 0;
    af_debug("tasks: %s/%s answered %d", run->queue, run->name, status);
    result_add(r, run, status);
    *run->prevp = run->next;
    if (run->next)
        run->next->prevp = run->prevp;
    if (r->n_dead == r->cap_dead) {
        r->cap_dead = r->cap_dead ? r->cap_dead * 2 : AF_TASK_MAX_RUNNING;
        r->dead = af_xrealloc(r->dead, r->cap_dead * sizeof(*r->dead));
    }
    r->dead[r->n_dead++] = run->conn;
    struct timeval zero = {0, 0};
    evtimer_add(r->reap_ev, &zero);
    run_free(run);
    r->running--;
    poll_now(r);
}

/* The body of the answer is of no interest: drop it as it comes, so a
 * large answer costs no memory. */
static void on_task_chunk(struct evhttp_request *req, void *arg)
{
    struct evbuffer *in = evhttp_request_get_input_buffer(req);
    evbuffer_drain(in, evbuffer_get_length(in));
}

static enum evhttp_cmd_type method_type(const char *m)
{
    if (strcmp(m, "GET") == 0)
        return EVHTTP_REQ_GET;
    if (strcmp(m, "HEAD") == 0)
        return EVHTTP_REQ_HEAD;
    if (strcmp(m, "PUT") == 0)
        return EVHTTP_REQ_PUT;
    if (strcmp(m, "DELETE") == 0)
        return EVHTTP_REQ_DELETE;
    return EVHTTP_REQ_POST;
}

/* The module called name[0..len) (any case), or -1. */
static int module_index(const struct af_taskrunner *r, const char *name, size_t len)
{
    for (size_t i = 0; i < r->n_mods; i++)
        if (strncasecmp(r->mods[i].name, name, len) == 0 && r->mods[i].name[len] == '\0')
            return (int)i;
    return -1;
}

/*
 * Where task t runs (docs/taskqueue.md, "Which module runs a task"): sets
 * *mod to the module whose port the request is sent to and returns its
 * Host field (owned). The queue's target comes first, then the task's own
 * Host field (host, or NULL), then the default module. A target or a
 * MODULE.localhost host naming no module being served is logged and gives
 * NULL: the run counts as failed (retried, or dropped at the retry limit).
 */
static char *task_route(const struct af_taskrunner *r, const Af__Taskqueue__RunnerTask *t,
                        const char *host, size_t *mod)
{
    const struct rt_module *d = &r->mods[r->dflt];
    *mod = r->dflt;
    if (t->target && t->target[0]) {
        /* "MODULE" or "VERSION.MODULE" (checked when queue.yaml was read).
         * Sent to the default module's port as production's host name
         * TARGET.APP.appspot.com would be: the front end routes it. A
         * single name may also be the default module's version. */
        const char *dot = strrchr(t->target, '.');
        const char *m = dot ? dot + 1 : t->target;
        if (module_index(r, m, strlen(m)) < 0 && (dot || strcmp(t->target, d->version) != 0)) {
            af_error("tasks: %s/%s not run: the queue's target \"%s\" names no module being "
                     "served (%s); the run counts as failed",
                     t->queue_name, t->task_name, t->target, r->names);
            return NULL;
        }
        return af_xasprintf("%s.localhost:%d", t->target, d->port);
    }
    if (host) {
        const char *label;
        size_t label_len;
        if (af_dispatch_module_host(host, strlen(host), &label, &label_len) != AF_HOST_PLAIN) {
            if (module_index(r, label, label_len) < 0) {
                af_error("tasks: %s/%s not run: its Host \"%.100s\" names no module being "
                         "served (%s); the run counts as failed",
                         t->queue_name, t->task_name, host, r->names);
                return NULL;
            }
        } else {
            /* GetHostname's answer for a module: that module's own port. */
            for (size_t i = 0; i < r->n_mods; i++)
                if (strcasecmp(host, r->mods[i].hostname) == 0)
                    *mod = i;
        }
        return af_xstrdup(host);
    }
    return af_xstrdup(d->hostname);
}

static void start_task(struct af_taskrunner *r, const Af__Taskqueue__RunnerTask *t)
{
    struct run *run = af_xcalloc(1, sizeof(*run));
    run->r = r;
    run->queue = af_xstrdup(t->queue_name);
    run->name = af_xstrdup(t->task_name);
    run->lease = t->lease;
    clock_gettime(CLOCK_MONOTONIC, &run->start);
    const char *task_host = NULL;
    for (size_t i = 0; i < t->n_header && !task_host; i++)
        if (strcasecmp(t->header[i]->key, "Host") == 0)
            task_host = t->header[i]->value;
    size_t mod;
    char *host = task_route(r, t, task_host, &mod);
    if (!host) {
        result_add(r, run, 0);
        run_free(run);
        return;
    }
    const struct rt_module *to = &r->mods[mod];
    run->conn = evhttp_connection_base_new(r->srv->base, NULL, to->addr, (unsigned short)to->port);
    struct evhttp_request *req = run->conn ? evhttp_request_new(on_task_done, run) : NULL;
    if (!req) {
        af_warn("tasks: cannot open a connection to run %s/%s; it is retried", t->queue_name,
                t->task_name);
        if (run->conn)
            evhttp_connection_free(run->conn);
        result_add(r, run, 0);
        run_free(run);
        free(host);
        return;
    }
    /* The front end's own deadline comes first; this only bounds a hang. */
    evhttp_connection_set_timeout(run->conn, r->srv->cfg->request_deadline_ms / 1000 + 10);
    evhttp_request_set_chunked_cb(req, on_task_chunk);

    struct evkeyvalq *h = evhttp_request_get_output_headers(req);
    char num[32];
    evhttp_add_header(h, "Host", host);
    free(host);
    evhttp_add_header(h, "Connection", "close");
    evhttp_add_header(h, AF_TASK_SECRET_HEADER, af_selfreq_secret());
    evhttp_add_header(h, "X-AppEngine-QueueName", t->queue_name);
    evhttp_add_header(h, "X-AppEngine-TaskName", t->task_name);
    snprintf(num, sizeof(num), "%" PRId32, t->retry_count);
    evhttp_add_header(h, "X-AppEngine-TaskRetryCount", num);
    snprintf(num, sizeof(num), "%" PRId32, t->execution_count);
    evhttp_add_header(h, "X-AppEngine-TaskExecutionCount", num);
    /* Whole seconds since the epoch: the Go library parses an integer. */
    snprintf(num, sizeof(num), "%" PRId64, t->eta_usec / 1000000);
    evhttp_add_header(h, "X-AppEngine-TaskETA", num);
    if (t->has_previous_status) {
        snprintf(num, sizeof(num), "%" PRId32, t->previous_status);
        evhttp_add_header(h, "X-AppEngine-TaskPreviousResponse", num);
    }
    bool has_ctype = false;
    for (size_t i = 0; i < t->n_header; i++) {
        if (strcasecmp(t->header[i]->key, "Host") == 0)
            continue; /* routed by, and sent above */
        if (evhttp_add_header(h, t->header[i]->key, t->header[i]->value) != 0)
            af_warn("tasks: %s/%s: header %s not sent", t->queue_name, t->task_name,
                    t->header[i]->key);
        has_ctype = has_ctype || strcasecmp(t->header[i]->key, "Content-Type") == 0;
    }
    enum evhttp_cmd_type type = method_type(t->method);
    if (t->has_body && (type == EVHTTP_REQ_POST || type == EVHTTP_REQ_PUT)) {
        evbuffer_add(evhttp_request_get_output_buffer(req), t->body.data, t->body.len);
        if (!has_ctype)
            evhttp_add_header(h, "Content-Type", "application/octet-stream");
    }
    af_debug("tasks: running %s/%s: %s %s (retry %d)", t->queue_name, t->task_name, t->method,
             t->url, t->retry_count);
    if (evhttp_make_request(run->conn, req, type, t->url) != 0) {
        /* libevent freed req. */
        af_warn("tasks: cannot send %s/%s; it is retried", t->queue_name, t->task_name);
        evhttp_connection_free(run->conn);
        result_add(r, run, 0);
        run_free(run);
        return;
    }
    run->next = r->runs;
    run->prevp = &r->runs;
    if (r->runs)
        r->runs->prevp = &run->next;
    r->runs = run;
    r->running++;
}

/* ---- polling ---------------------------------------------------------------- */

static void poll_now(struct af_taskrunner *r)
{
    if (r->srv->stopping)
        return;
    if (r->polling) {
        r->poll_again = true;
        return;
    }
    Af__Taskqueue__RunnerPoll p = AF__TASKQUEUE__RUNNER_POLL__INIT;
    p.n_result = r->n_results;
    p.result = r->results;
    p.capacity = AF_TASK_MAX_RUNNING - r->running;
    size_t len = af__taskqueue__runner_poll__get_packed_size(&p);
    uint8_t *buf = af_xmalloc(len ? len : 1);
    af__taskqueue__runner_poll__pack(&p, buf);
    r->poll_tag = AF_API_TAG(r->consumer, ++r->poll_seq);
    af_api_internal_call(r->api, "taskqueue", "RunnerPoll", buf, len, r->poll_tag);
    free(buf);
    results_free(r->results, r->n_results);
    r->n_results = 0;
    r->polling = true;
    r->poll_again = false;
}

static void on_timer(evutil_socket_t fd, short what, void *arg)
{
    poll_now(arg);
}

static void arm_timer_usec(struct af_taskrunner *r, int64_t delay_usec)
{
    if (delay_usec < 0)
        delay_usec = 0;
    /* Beyond a day, wake anyway: clocks may jump. */
    if (delay_usec > 86400LL * 1000000)
        delay_usec = 86400LL * 1000000;
    struct timeval tv = {(time_t)(delay_usec / 1000000), (suseconds_t)(delay_usec % 1000000)};
    evtimer_add(r->timer, &tv);
}

static int64_t wall_usec(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static void on_poll_answer(struct af_taskrunner *r, const struct af_api_internal_reply *rep)
{
    r->polling = false;
    Af__Taskqueue__RunnerPollResponse *resp =
        rep->ok ? af__taskqueue__runner_poll_response__unpack(NULL, rep->len, rep->data) : NULL;
    if (!resp) {
        /* Logged by the API server; the outcomes sent are lost, so those
         * tasks run again after the service's run lease. */
        evtimer_del(r->timer);
        arm_timer_usec(r, AF_TASK_POLL_RETRY_MS * 1000LL);
        return;
    }
    if (!r->srv->stopping)
        for (size_t i = 0; i < resp->n_task; i++)
            start_task(r, resp->task[i]);
    evtimer_del(r->timer);
    if (resp->has_next_poll_usec)
        arm_timer_usec(r, resp->next_poll_usec - wall_usec());
    af__taskqueue__runner_poll_response__free_unpacked(resp, NULL);
    /* Outcomes of tasks that could not even be sent are waiting. */
    if (r->poll_again || r->n_results)
        poll_now(r);
}

static void on_reply(void *arg, const struct af_api_internal_reply *rep)
{
    struct af_taskrunner *r = arg;
    if (rep->notice) {
        if (strcmp(rep->service, "taskqueue") == 0)
            poll_now(r);
        return;
    }
    if (rep->tag == r->poll_tag && r->polling)
        on_poll_answer(r, rep);
}

/* ---- start and stop ---------------------------------------------------------- */

/* Every module's main port, and its names for messages. */
static int module_table(struct af_taskrunner *r)
{
    const struct af_server *srv = r->srv;
    if (srv->n_modules == 0)
        return -1;
    r->n_mods = srv->n_modules;
    r->dflt = srv->default_index;
    r->mods = af_xcalloc(r->n_mods, sizeof(*r->mods));
    size_t names_len = 1;
    for (size_t i = 0; i < r->n_mods; i++) {
        struct rt_module *m = &r->mods[i];
        m->name = srv->modules[i]->name;
        m->version = srv->apps[i]->version;
        if (af_selfreq_address(srv->main_ports[i], m->addr, sizeof(m->addr), &m->port) < 0)
            return -1;
        m->hostname = af_xasprintf("%s:%d", srv->cfg->host, srv->main_ports[i]->port);
        names_len += strlen(m->name) + 2;
    }
    r->names = af_xcalloc(1, names_len);
    for (size_t i = 0; i < r->n_mods; i++) {
        if (i)
            strcat(r->names, ", ");
        strcat(r->names, r->mods[i].name);
    }
    return 0;
}

struct af_taskrunner *af_taskrunner_start(struct af_server *srv, struct af_api *api)
{
    struct af_taskrunner *r = af_xcalloc(1, sizeof(*r));
    r->srv = srv;
    r->api = api;
    r->consumer = -1;
    if (module_table(r) < 0 || !af_selfreq_secret()[0]) {
        af_warn("tasks: cannot start the task runner (no main port address or no random "
                "bytes); push tasks will not run");
        af_taskrunner_free(r);
        return NULL;
    }
    r->timer = evtimer_new(srv->base, on_timer, r);
    r->reap_ev = evtimer_new(srv->base, on_reap, r);
    r->consumer = af_api_internal_subscribe(api, srv->base, on_reply, r);
    if (!r->timer || !r->reap_ev || r->consumer < 0) {
        af_warn("tasks: cannot start the task runner (event setup failed); push tasks will "
                "not run");
        af_taskrunner_free(r);
        return NULL;
    }
    af_debug("tasks: running push tasks through %s:%d", r->mods[r->dflt].addr,
             r->mods[r->dflt].port);
    poll_now(r);
    return r;
}

void af_taskrunner_free(struct af_taskrunner *r)
{
    if (!r)
        return;
    while (r->runs) {
        struct run *run = r->runs;
        r->runs = run->next;
        /* Frees the pending request without calling its callback. */
        evhttp_connection_free(run->conn);
        run_free(run);
    }
    reap_dead(r);
    free(r->dead);
    results_free(r->results, r->n_results);
    free(r->results);
    if (r->reap_ev)
        event_free(r->reap_ev);
    if (r->timer)
        event_free(r->timer);
    af_api_internal_unsubscribe(r->api, r->consumer);
    for (size_t i = 0; i < r->n_mods; i++)
        free(r->mods[i].hostname);
    free(r->mods);
    free(r->names);
    free(r);
}
