/* cron — see cron.h. */
#include "proxy/cron.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>

#include "common/log.h"
#include "common/xalloc.h"
#include "proxy/cronyaml.h"
#include "proxy/module.h"
#include "proxy/selfreq.h"
#include "proxy/server.h"
#include "proxy/taskrunner.h"

struct af_cron_run {
    struct af_cron_run *next;
    struct af_cron *c;
    struct evhttp_connection *conn;
    af_cron_done_fn done;
    void *arg;
    struct timespec start;
};

struct af_cron {
    struct af_server *srv;
    struct af_cron_run *runs;
    /* Connections whose request finished, freed on a later loop turn:
     * libevent does not allow freeing one from its request's callback. */
    struct evhttp_connection **dead;
    size_t n_dead, cap_dead;
    struct event *reap_ev;
};

static void reap(struct af_cron *c)
{
    while (c->n_dead > 0)
        evhttp_connection_free(c->dead[--c->n_dead]);
}

static void on_reap(evutil_socket_t fd, short what, void *arg)
{
    reap(arg);
}

struct af_cron *af_cron_new(struct af_server *srv)
{
    struct af_cron *c = af_xcalloc(1, sizeof(*c));
    c->srv = srv;
    c->reap_ev = evtimer_new(srv->base, on_reap, c);
    return c;
}

static void unlink_run(struct af_cron *c, struct af_cron_run *run)
{
    for (struct af_cron_run **pp = &c->runs; *pp; pp = &(*pp)->next)
        if (*pp == run) {
            *pp = run->next;
            return;
        }
}

void af_cron_free(struct af_cron *c)
{
    if (!c)
        return;
    while (c->runs) {
        struct af_cron_run *run = c->runs;
        c->runs = run->next;
        evhttp_connection_free(run->conn); /* frees its request, no callback */
        free(run);
    }
    reap(c);
    free(c->dead);
    if (c->reap_ev)
        event_free(c->reap_ev);
    free(c);
}

void af_cron_cancel(struct af_cron *c, struct af_cron_run *run)
{
    unlink_run(c, run);
    evhttp_connection_free(run->conn);
    free(run);
}

static void on_done(struct evhttp_request *req, void *arg)
{
    struct af_cron_run *run = arg;
    struct af_cron *c = run->c;
    int status = req ? evhttp_request_get_response_code(req) : 0;
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    long ms = (long)(now.tv_sec - run->start.tv_sec) * 1000 +
              (now.tv_nsec - run->start.tv_nsec) / 1000000;
    unlink_run(c, run);
    if (c->n_dead == c->cap_dead) {
        c->cap_dead = c->cap_dead ? c->cap_dead * 2 : 8;
        c->dead = af_xrealloc(c->dead, c->cap_dead * sizeof(*c->dead));
    }
    c->dead[c->n_dead++] = run->conn;
    struct timeval zero = {0, 0};
    evtimer_add(c->reap_ev, &zero);
    af_cron_done_fn done = run->done;
    void *done_arg = run->arg;
    free(run);
    done(done_arg, status, ms);
}

/* The answer's body is of no interest. */
static void on_chunk(struct evhttp_request *req, void *arg)
{
    struct evbuffer *in = evhttp_request_get_input_buffer(req);
    evbuffer_drain(in, evbuffer_get_length(in));
}

/* The module a target names ("MODULE" or "VERSION.MODULE"; NULL: the
 * default one), or -1. */
static int target_module(const struct af_server *srv, const char *target)
{
    if (!target)
        return (int)srv->default_index;
    const char *dot = strrchr(target, '.');
    const char *name = dot ? dot + 1 : target;
    for (size_t i = 0; i < srv->n_modules; i++)
        if (strcasecmp(srv->modules[i]->name, name) == 0)
            return (int)i;
    return -1;
}

struct af_cron_run *af_cron_start(struct af_cron *c, const struct af_cron_job *job,
                                  af_cron_done_fn done, void *arg, char *err, size_t errlen)
{
    struct af_server *srv = c->srv;
    int mi = target_module(srv, job->target);
    if (mi < 0) {
        snprintf(err, errlen, "the job's target \"%s\" names no module appfront serves",
                 job->target);
        return NULL;
    }
    char addr[64];
    int port;
    if (!af_selfreq_secret()[0] ||
        af_selfreq_address(srv->main_ports[mi], addr, sizeof(addr), &port) < 0 || !c->reap_ev) {
        snprintf(err, errlen, "module %s cannot be reached (see appfront's log)",
                 srv->modules[mi]->name);
        return NULL;
    }
    struct af_cron_run *run = af_xcalloc(1, sizeof(*run));
    run->c = c;
    run->done = done;
    run->arg = arg;
    clock_gettime(CLOCK_MONOTONIC, &run->start);
    run->conn = evhttp_connection_base_new(srv->base, NULL, addr, (unsigned short)port);
    struct evhttp_request *req = run->conn ? evhttp_request_new(on_done, run) : NULL;
    if (!req) {
        if (run->conn)
            evhttp_connection_free(run->conn);
        free(run);
        snprintf(err, errlen, "cannot open a connection to module %s", srv->modules[mi]->name);
        return NULL;
    }
    /* The front end's own deadline answers first; this bounds a hang. */
    evhttp_connection_set_timeout(run->conn, srv->cfg->request_deadline_ms / 1000 + 10);
    evhttp_request_set_chunked_cb(req, on_chunk);
    struct evkeyvalq *h = evhttp_request_get_output_headers(req);
    char host[320];
    snprintf(host, sizeof(host), "%s:%d", srv->cfg->host, srv->main_ports[mi]->port);
    evhttp_add_header(h, "Host", host);
    evhttp_add_header(h, "Connection", "close");
    evhttp_add_header(h, AF_TASK_SECRET_HEADER, af_selfreq_secret());
    evhttp_add_header(h, "X-AppEngine-Cron", "true");
    if (evhttp_make_request(run->conn, req, EVHTTP_REQ_GET, job->url) != 0) {
        /* libevent freed req. */
        evhttp_connection_free(run->conn);
        free(run);
        snprintf(err, errlen, "cannot send the request to module %s", srv->modules[mi]->name);
        return NULL;
    }
    af_info("cron: running %s on module %s (from the admin console)", job->url,
            srv->modules[mi]->name);
    run->next = c->runs;
    c->runs = run;
    return run;
}
