/*
 * background — background requests and the instance table (see
 * background.h). All on the main thread; state is one static struct, as
 * there is one front end per process.
 *
 *   notice "system"  → one internal call system.BackgroundTake at a time
 *                      (a notice while one is out sets `again`);
 *   its answer       → for each {id, ticket}: the ring says which module
 *                      and instance ran the ticket's request; an HTTP
 *                      request on a connection of its own (libevent's
 *                      client) to that module's main port;
 *   its end          → the connection is freed on the next loop turn
 *                      (libevent does not allow it from its own callback).
 */
#include "proxy/background.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>
#include <sys/socket.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <event2/listener.h>

#include "system.pb-c.h"

#include "apiserver/apiserver.h"
#include "apiserver/reqlog.h"
#include "apiserver/sysinfo.h"
#include "common/log.h"
#include "common/xalloc.h"
#include "proxy/headers.h"
#include "proxy/instance.h"
#include "proxy/module.h"
#include "proxy/server.h"

/* A request that ran on an instance of a module allowing background ones. */
struct note {
    char id[AF_REQLOG_ID_LEN];
    const struct af_module *mod; /* modules live as long as the server */
    int inst_id;
};

struct bg_run {
    struct evhttp_connection *conn;
    char id[17];
};

static struct {
    struct af_server *srv;
    struct af_api *api;
    int consumer;
    char secret[33]; /* "" while not started */
    struct note ring[AF_BG_RING];
    size_t ring_next;
    bool taking, again;
    uint64_t take_seq, take_tag;
    int running;
    struct bg_run *runs[AF_BG_MAX_RUNNING]; /* the first `running` are in flight */
    struct evhttp_connection *dead[AF_BG_MAX_RUNNING];
    size_t n_dead;
    struct event *reap_ev;
    struct event *table_ev; /* posts the instance table (deferred, retried) */
} bg = {.consumer = -1};

/* ---- trust ------------------------------------------------------------------ */

int af_background_trusted(struct af_headers *h)
{
    static const size_t name_len = sizeof(AF_BG_SECRET_HEADER) - 1;
    int seen = 0, inst = -1;
    for (size_t i = 0; i < h->n; i++) {
        struct af_header *f = &h->v[i];
        if (f->name_len != name_len || strncasecmp(f->name, AF_BG_SECRET_HEADER, name_len) != 0)
            continue;
        f->drop = true; /* never forwarded, whoever sent it */
        seen++;
        if (!bg.secret[0] || f->value_len < 34 || f->value_len > 44 || f->value[32] != ' ')
            continue;
        /* Compared in constant time: nothing to learn from timing. */
        unsigned char diff = 0;
        for (size_t k = 0; k < 32; k++)
            diff |= (unsigned char)(f->value[k] ^ bg.secret[k]);
        long id = 0;
        for (size_t k = 33; k < f->value_len; k++) {
            if (f->value[k] < '0' || f->value[k] > '9')
                diff = 1;
            else
                id = id * 10 + (f->value[k] - '0');
        }
        if (diff == 0 && id <= 1000000000L)
            inst = (int)id;
    }
    return seen == 1 ? inst : -1;
}

/* ---- which instance ran a request ---------------------------------------------- */

void af_background_note(const char *request_id, const struct af_module *mod,
                        const struct af_instance *inst)
{
    if (!bg.secret[0])
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

static void reap_dead(void)
{
    while (bg.n_dead > 0)
        evhttp_connection_free(bg.dead[--bg.n_dead]);
}

static void on_reap(evutil_socket_t fd, short what, void *arg)
{
    reap_dead();
}

static void on_done(struct evhttp_request *req, void *arg)
{
    struct bg_run *run = arg;
    int status = req ? evhttp_request_get_response_code(req) : 0;
    if (status == 0 || status >= 500)
        af_warn("background request %s answered %d%s", run->id, status,
                status ? "" : " (no answer from the instance)");
    else
        af_debug("background request %s answered %d", run->id, status);
    bg.dead[bg.n_dead++] = run->conn;
    struct timeval zero = {0, 0};
    evtimer_add(bg.reap_ev, &zero);
    for (int i = 0; i < bg.running; i++)
        if (bg.runs[i] == run)
            bg.runs[i] = bg.runs[--bg.running];
    free(run);
}

static void on_chunk(struct evhttp_request *req, void *arg)
{
    struct evbuffer *in = evhttp_request_get_input_buffer(req);
    evbuffer_drain(in, evbuffer_get_length(in));
}

static int module_index(const struct af_module *mod)
{
    for (size_t i = 0; i < bg.srv->n_modules; i++)
        if (bg.srv->modules[i] == mod)
            return (int)i;
    return -1;
}

/* The numeric address of a listener, a wildcard made loopback. */
static int port_address(const struct af_listener *lst, char *addr, size_t len, int *port)
{
    struct sockaddr_storage ss;
    socklen_t sl = sizeof(ss);
    if (!lst || !lst->l || getsockname(evconnlistener_get_fd(lst->l), (struct sockaddr *)&ss, &sl))
        return -1;
    if (ss.ss_family == AF_INET) {
        struct sockaddr_in *in = (struct sockaddr_in *)&ss;
        if (in->sin_addr.s_addr == htonl(INADDR_ANY))
            in->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        inet_ntop(AF_INET, &in->sin_addr, addr, (socklen_t)len);
        *port = ntohs(in->sin_port);
        return 0;
    }
    if (ss.ss_family == AF_INET6) {
        struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&ss;
        if (IN6_IS_ADDR_UNSPECIFIED(&in6->sin6_addr))
            in6->sin6_addr = in6addr_loopback;
        inet_ntop(AF_INET6, &in6->sin6_addr, addr, (socklen_t)len);
        *port = ntohs(in6->sin6_port);
        return 0;
    }
    return -1;
}

static void send_one(const char *id, const char *ticket)
{
    const struct note *n = note_find(ticket);
    if (!n) {
        af_error("background request %s not sent: the request that asked for it (%.40s) ran "
                 "on no module with manual or basic scaling that appfront knows of "
                 "(runtime.RunInBackground needs one, docs/services.md)",
                 id, ticket);
        return;
    }
    if (bg.running >= AF_BG_MAX_RUNNING) {
        af_error("background request %s not sent: %d background requests run already", id,
                 AF_BG_MAX_RUNNING);
        return;
    }
    int mi = module_index(n->mod);
    char addr[64];
    int port;
    if (mi < 0 || port_address(bg.srv->main_ports[mi], addr, sizeof(addr), &port) < 0) {
        af_error("background request %s not sent: module %s has no main port", id,
                 n->mod->name);
        return;
    }
    struct bg_run *run = af_xcalloc(1, sizeof(*run));
    snprintf(run->id, sizeof(run->id), "%.16s", id);
    run->conn = evhttp_connection_base_new(bg.srv->base, NULL, addr, (unsigned short)port);
    struct evhttp_request *req = run->conn ? evhttp_request_new(on_done, run) : NULL;
    if (!req) {
        af_error("background request %s not sent: cannot open a connection", id);
        if (run->conn)
            evhttp_connection_free(run->conn);
        free(run);
        return;
    }
    /* No deadline (docs/services.md): the function runs as long as it
     * needs, as in dev_appserver; a day bounds only a connection that hangs. */
    struct timeval day = {86400, 0};
    evhttp_connection_set_timeout_tv(run->conn, &day);
    evhttp_request_set_chunked_cb(req, on_chunk);
    struct evkeyvalq *h = evhttp_request_get_output_headers(req);
    char host[300], trust[64];
    snprintf(host, sizeof(host), "%s:%d", bg.srv->cfg->host, bg.srv->main_ports[mi]->port);
    snprintf(trust, sizeof(trust), "%s %d", bg.secret, n->inst_id);
    evhttp_add_header(h, "Host", host);
    evhttp_add_header(h, "Connection", "close");
    evhttp_add_header(h, AF_BG_SECRET_HEADER, trust);
    evhttp_add_header(h, "X-AppEngine-BackgroundRequest", run->id);
    if (evhttp_make_request(run->conn, req, EVHTTP_REQ_GET, "/_ah/background") != 0) {
        af_error("background request %s not sent: the request could not be made", id);
        evhttp_connection_free(run->conn);
        free(run);
        return;
    }
    af_debug("background request %s: to instance %s.%d", id, n->mod->name, n->inst_id);
    bg.runs[bg.running++] = run;
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
    unsigned char raw[16];
    bg.srv = srv;
    bg.api = api;
    if (getrandom(raw, sizeof(raw), 0) != (ssize_t)sizeof(raw)) {
        af_warn("background requests: no random bytes; runtime.RunInBackground will not run");
        return -1;
    }
    for (size_t i = 0; i < sizeof(raw); i++)
        snprintf(bg.secret + 2 * i, 3, "%02x", raw[i]);
    bg.reap_ev = evtimer_new(srv->base, on_reap, NULL);
    bg.table_ev = evtimer_new(srv->base, post_table, NULL);
    bg.consumer = af_api_internal_subscribe(api, srv->base, on_reply, NULL);
    if (!bg.reap_ev || !bg.table_ev || bg.consumer < 0) {
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
    /* Requests in flight are abandoned: freeing the connection frees its
     * request without calling back. */
    for (int i = 0; i < bg.running; i++) {
        evhttp_connection_free(bg.runs[i]->conn);
        free(bg.runs[i]);
    }
    reap_dead();
    if (bg.reap_ev)
        event_free(bg.reap_ev);
    if (bg.table_ev)
        event_free(bg.table_ev);
    af_api_internal_unsubscribe(bg.api, bg.consumer);
    memset(&bg, 0, sizeof(bg));
    bg.consumer = -1;
}
