/*
 * background — background requests and the instance table (see
 * background.h). All on the main thread; state is one static struct, as
 * there is one front end per process.
 *
 *   notice "system"  → one internal call system.BackgroundTake at a time
 *                      (a notice while one is out sets `again`);
 *   its answer       → for each {id, ticket}: the ring says which module
 *                      and instance ran the ticket's request; a request to
 *                      that module's main port through selfreq (a
 *                      connection of its own, the process's secret).
 */
#include "proxy/background.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <event2/event.h>

#include "system.pb-c.h"

#include "apiserver/apiserver.h"
#include "apiserver/reqlog.h"
#include "apiserver/sysinfo.h"
#include "common/log.h"
#include "proxy/headers.h"
#include "proxy/instance.h"
#include "proxy/module.h"
#include "proxy/selfreq.h"
#include "proxy/server.h"

/* A request that ran on an instance of a module allowing background ones. */
struct note {
    char id[AF_REQLOG_ID_LEN];
    const struct af_module *mod; /* modules live as long as the server */
    int inst_id;
};

/* One background request in flight: a slot of bg.runs, so that nothing is
 * left to free when selfreq abandons it at stop. */
struct bg_run {
    bool used;
    char id[17]; /* 16 hex digits (apiserver/services/system.c) */
};

static struct {
    struct af_server *srv;
    struct af_api *api;
    struct af_selfreq *sr; /* sends the requests; NULL while not started */
    int consumer;
    struct note ring[AF_BG_RING];
    size_t ring_next;
    bool taking, again;
    uint64_t take_seq, take_tag;
    int running;
    struct bg_run runs[AF_BG_MAX_RUNNING];
    struct event *table_ev; /* posts the instance table (deferred, retried) */
} bg = {.consumer = -1};

/* ---- trust ------------------------------------------------------------------ */

int af_background_trusted(struct af_headers *h)
{
    static const size_t name_len = sizeof(AF_BG_SECRET_HEADER) - 1;
    int seen = 0, inst = -1;
    for (size_t i = 0; h->n_appfront && i < h->n; i++) {
        struct af_header *f = &h->v[i];
        if (f->id != AF_H_X_APPFRONT || f->name_len != name_len || strncasecmp(f->name, AF_BG_SECRET_HEADER, name_len) != 0)
            continue;
        f->drop = true; /* never forwarded, whoever sent it */
        seen++;
        /* "SECRET INSTANCE": the selfreq secret, a space, a decimal id. */
        if (!bg.sr || f->value_len < 34 || f->value_len > 42 || f->value[32] != ' ' ||
            !af_selfreq_secret_is(f->value, 32))
            continue;
        long id = 0;
        size_t k = 33;
        while (k < f->value_len && f->value[k] >= '0' && f->value[k] <= '9')
            id = id * 10 + (f->value[k++] - '0');
        if (k == f->value_len)
            inst = (int)id;
    }
    return seen == 1 ? inst : -1;
}

/* ---- which instance ran a request ---------------------------------------------- */

void af_background_note(const char *request_id, const struct af_module *mod,
                        const struct af_instance *inst)
{
    if (!bg.sr)
        return;
    struct note *n = &bg.ring[bg.ring_next];
    bg.ring_next = (bg.ring_next + 1) % AF_BG_RING;
    memcpy(n->id, request_id, AF_REQLOG_ID_LEN);
    n->mod = mod;
    n->inst_id = inst->id;
}

static const struct note *note_find(const char *ticket)
{
    if (strlen(ticket) != AF_REQLOG_ID_LEN)
        return NULL;
    /* Newest first: the request that asked ran a moment ago. */
    for (size_t k = 1; k <= AF_BG_RING; k++) {
        const struct note *n = &bg.ring[(bg.ring_next + AF_BG_RING - k) % AF_BG_RING];
        if (n->mod && memcmp(n->id, ticket, AF_REQLOG_ID_LEN) == 0)
            return n;
    }
    return NULL;
}

/* ---- sending ------------------------------------------------------------------ */

static void on_done(void *arg, int status, long elapsed_ms)
{
    struct bg_run *run = arg;
    if (status == 0 || status >= 500)
        af_warn("background request %s answered %d after %ld ms%s", run->id, status, elapsed_ms,
                status ? "" : " (no answer from the instance)");
    else
        af_debug("background request %s answered %d after %ld ms", run->id, status, elapsed_ms);
    bg.running--;
    run->used = false;
}

static int module_index(const struct af_module *mod)
{
    for (size_t i = 0; i < bg.srv->n_modules; i++)
        if (bg.srv->modules[i] == mod)
            return (int)i;
    return -1;
}

static void send_one(const char *id, const char *ticket)
{
    const struct note *n = note_find(ticket);
    if (!n) {
        af_error("background request %.16s not sent: the request that asked for it (%.40s) "
                 "ran on no module with manual or basic scaling that appfront knows of "
                 "(runtime.RunInBackground needs one, docs/services.md)",
                 id, ticket);
        return;
    }
    if (bg.running >= AF_BG_MAX_RUNNING) {
        af_error("background request %.16s not sent: %d background requests run already", id,
                 AF_BG_MAX_RUNNING);
        return;
    }
    int mi = module_index(n->mod);
    if (mi < 0) {
        af_error("background request %.16s not sent: its module is gone", id);
        return;
    }
    struct bg_run *run = bg.runs;
    while (run->used)
        run++; /* one is free: fewer than AF_BG_MAX_RUNNING run */
    run->used = true;
    snprintf(run->id, sizeof(run->id), "%.16s", id);
    char trust[64], err[200];
    snprintf(trust, sizeof(trust), "%s %d", af_selfreq_secret(), n->inst_id);
    const struct af_selfreq_header h[] = {
        {.name = AF_BG_SECRET_HEADER, .value = trust},
        {.name = "X-AppEngine-BackgroundRequest", .value = run->id},
    };
    struct af_selfreq_run *sent = af_selfreq_start(bg.sr, (size_t)mi, "GET", "/_ah/background", h,
                                                   2, NULL, 0, on_done, run, err, sizeof(err));
    if (!sent) {
        af_error("background request %s not sent: %s", run->id, err);
        run->used = false;
        return;
    }
    /* No deadline (docs/services.md): the function runs as long as it
     * needs, as in dev_appserver. */
    af_selfreq_no_deadline(sent);
    af_debug("background request %s: to instance %s.%d", run->id, n->mod->name, n->inst_id);
    bg.running++;
}

/* ---- taking ------------------------------------------------------------------- */

static void take_now(void)
{
    if (bg.srv->stopping)
        return;
    if (bg.taking) {
        bg.again = true;
        return;
    }
    Af__System__BackgroundTakeRequest q = AF__SYSTEM__BACKGROUND_TAKE_REQUEST__INIT;
    uint8_t buf[8];
    size_t len = af__system__background_take_request__pack(&q, buf);
    bg.take_tag = AF_API_TAG(bg.consumer, ++bg.take_seq);
    if (af_api_internal_call(bg.api, "system", "BackgroundTake", buf, len, bg.take_tag) < 0)
        return;
    bg.taking = true;
    bg.again = false;
}

static void on_reply(void *arg, const struct af_api_internal_reply *rep)
{
    if (rep->notice) {
        if (strcmp(rep->service, "system") == 0)
            take_now();
        return;
    }
    if (!bg.taking || rep->tag != bg.take_tag)
        return;
    bg.taking = false;
    Af__System__BackgroundTakeResponse *resp =
        rep->ok ? af__system__background_take_response__unpack(NULL, rep->len, rep->data) : NULL;
    if (resp) {
        for (size_t i = 0; i < resp->n_start && !bg.srv->stopping; i++)
            send_one(resp->start[i]->background_id, resp->start[i]->ticket);
        af__system__background_take_response__free_unpacked(resp, NULL);
    }
    if (bg.again)
        take_now();
}

/* ---- the instance table -------------------------------------------------------- */

static void post_table(evutil_socket_t fd, short what, void *arg)
{
    static struct af_sys_instance t[AF_SYS_MAX_INSTANCES];
    size_t n = 0;
    for (size_t m = 0; m < bg.srv->n_modules; m++) {
        struct af_module *mod = bg.srv->modules[m];
        struct af_instance *inst;
        if (!mod)
            continue;
        TAILQ_FOREACH(inst, &mod->instances, link)
        {
            if (inst->state != AF_INST_READY || n == AF_SYS_MAX_INSTANCES)
                continue;
            t[n++] = (struct af_sys_instance){
                .pid = (int32_t)inst->pid, .id = inst->id, .module = (uint16_t)m, .flags = 0};
        }
    }
    if (af_api_post(bg.api, "system", "Instances", (const uint8_t *)t, n * sizeof(t[0]), 0) < 0) {
        /* The backend is behind: try again shortly. */
        struct timeval later = {0, 100000};
        evtimer_add(bg.table_ev, &later);
    }
}

void af_background_instances_changed(void)
{
    if (!bg.table_ev || bg.srv->stopping)
        return;
    struct timeval zero = {0, 0};
    evtimer_add(bg.table_ev, &zero);
}

/* ---- start and stop ------------------------------------------------------------ */

int af_background_start(struct af_server *srv, struct af_api *api)
{
    bg.srv = srv;
    bg.api = api;
    if (!af_selfreq_secret()[0]) {
        af_warn("background requests: no random bytes; runtime.RunInBackground will not run");
        return -1;
    }
    bg.sr = af_selfreq_new(srv);
    bg.table_ev = evtimer_new(srv->base, post_table, NULL);
    bg.consumer = af_api_internal_subscribe(api, srv->base, on_reply, NULL);
    if (!bg.table_ev || bg.consumer < 0) {
        af_warn("background requests: event setup failed; runtime.RunInBackground will not run");
        af_background_stop();
        return -1;
    }
    af_background_instances_changed();
    return 0;
}

void af_background_stop(void)
{
    if (!bg.srv)
        return;
    /* Requests in flight are abandoned (their callbacks are not called;
     * their slots go with bg). */
    af_selfreq_free(bg.sr);
    if (bg.table_ev)
        event_free(bg.table_ev);
    af_api_internal_unsubscribe(bg.api, bg.consumer);
    memset(&bg, 0, sizeof(bg));
    bg.consumer = -1;
}
