/* selfreq — see selfreq.h. */
#include "proxy/selfreq.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>

#include <stdlib.h>
#include <time.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <event2/listener.h>

#include "common/xalloc.h"
#include "proxy/module.h"
#include "proxy/server.h"
#include "proxy/taskrunner.h"

static char secret[33];
static bool drawn;

const char *af_selfreq_secret(void)
{
    if (!drawn) {
        drawn = true;
        unsigned char raw[16];
        if (getrandom(raw, sizeof(raw), 0) == (ssize_t)sizeof(raw))
            for (size_t i = 0; i < sizeof(raw); i++)
                snprintf(secret + 2 * i, 3, "%02x", raw[i]);
    }
    return secret;
}

bool af_selfreq_secret_is(const char *value, size_t len)
{
    const char *s = af_selfreq_secret();
    if (!s[0] || len != 32)
        return false;
    unsigned char diff = 0;
    for (size_t k = 0; k < 32; k++)
        diff |= (unsigned char)(value[k] ^ s[k]);
    return diff == 0;
}

int af_selfreq_address(const struct af_listener *lst, char *addr, size_t addrlen, int *port)
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof(ss);
    if (!lst || !lst->l ||
        getsockname(evconnlistener_get_fd(lst->l), (struct sockaddr *)&ss, &len) != 0)
        return -1;
    if (ss.ss_family == AF_INET) {
        struct sockaddr_in *in = (struct sockaddr_in *)&ss;
        if (in->sin_addr.s_addr == htonl(INADDR_ANY))
            in->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        inet_ntop(AF_INET, &in->sin_addr, addr, (socklen_t)addrlen);
        *port = ntohs(in->sin_port);
        return 0;
    }
    if (ss.ss_family == AF_INET6) {
        struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&ss;
        if (IN6_IS_ADDR_UNSPECIFIED(&in6->sin6_addr))
            in6->sin6_addr = in6addr_loopback;
        inet_ntop(AF_INET6, &in6->sin6_addr, addr, (socklen_t)addrlen);
        *port = ntohs(in6->sin6_port);
        return 0;
    }
    return -1;
}

/* ---- sending ---------------------------------------------------------------- */

struct af_selfreq_run {
    struct af_selfreq_run *next;
    struct af_selfreq *sr;
    struct evhttp_connection *conn;
    af_selfreq_done_fn done;
    void *arg;
    struct timespec start;
};

struct af_selfreq {
    struct af_server *srv;
    struct af_selfreq_run *runs;
    /* Connections whose request finished, freed on a later loop turn:
     * libevent does not allow freeing one from its request's callback. */
    struct evhttp_connection **dead;
    size_t n_dead, cap_dead;
    struct event *reap_ev;
};

static void reap(struct af_selfreq *sr)
{
    while (sr->n_dead > 0)
        evhttp_connection_free(sr->dead[--sr->n_dead]);
}

static void on_reap(evutil_socket_t fd, short what, void *arg)
{
    reap(arg);
}

struct af_selfreq *af_selfreq_new(struct af_server *srv)
{
    struct af_selfreq *sr = af_xcalloc(1, sizeof(*sr));
    sr->srv = srv;
    sr->reap_ev = evtimer_new(srv->base, on_reap, sr);
    return sr;
}

static void unlink_run(struct af_selfreq *sr, struct af_selfreq_run *run)
{
    for (struct af_selfreq_run **pp = &sr->runs; *pp; pp = &(*pp)->next)
        if (*pp == run) {
            *pp = run->next;
            return;
        }
}

void af_selfreq_free(struct af_selfreq *sr)
{
    if (!sr)
        return;
    while (sr->runs) {
        struct af_selfreq_run *run = sr->runs;
        sr->runs = run->next;
        evhttp_connection_free(run->conn); /* frees its request, no callback */
        free(run);
    }
    reap(sr);
    free(sr->dead);
    if (sr->reap_ev)
        event_free(sr->reap_ev);
    free(sr);
}

void af_selfreq_no_deadline(struct af_selfreq_run *run)
{
    struct timeval day = {86400, 0};
    evhttp_connection_set_timeout_tv(run->conn, &day);
}

void af_selfreq_cancel(struct af_selfreq *sr, struct af_selfreq_run *run)
{
    unlink_run(sr, run);
    evhttp_connection_free(run->conn);
    free(run);
}

static void on_done(struct evhttp_request *req, void *arg)
{
    struct af_selfreq_run *run = arg;
    struct af_selfreq *sr = run->sr;
    int status = req ? evhttp_request_get_response_code(req) : 0;
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    long ms = (long)(now.tv_sec - run->start.tv_sec) * 1000 +
              (now.tv_nsec - run->start.tv_nsec) / 1000000;
    unlink_run(sr, run);
    if (sr->n_dead == sr->cap_dead) {
        sr->cap_dead = sr->cap_dead ? sr->cap_dead * 2 : 8;
        sr->dead = af_xrealloc(sr->dead, sr->cap_dead * sizeof(*sr->dead));
    }
    sr->dead[sr->n_dead++] = run->conn;
    struct timeval zero = {0, 0};
    evtimer_add(sr->reap_ev, &zero);
    af_selfreq_done_fn done = run->done;
    void *done_arg = run->arg;
    free(run);
    done(done_arg, status, ms);
}

/* The answer's body is of no interest: dropped as it comes. */
static void on_chunk(struct evhttp_request *req, void *arg)
{
    struct evbuffer *in = evhttp_request_get_input_buffer(req);
    evbuffer_drain(in, evbuffer_get_length(in));
}

struct af_selfreq_run *af_selfreq_start(struct af_selfreq *sr, size_t mi, const char *method,
                                        const char *url, const struct af_selfreq_header *headers,
                                        size_t n_headers, const void *body, size_t len,
                                        af_selfreq_done_fn done, void *arg, char *err,
                                        size_t errlen)
{
    struct af_server *srv = sr->srv;
    const char *name = srv->modules[mi]->name;
    char addr[64];
    int port;
    if (!af_selfreq_secret()[0] || !sr->reap_ev ||
        af_selfreq_address(srv->main_ports[mi], addr, sizeof(addr), &port) < 0) {
        snprintf(err, errlen, "module %s cannot be reached (see appfront's log)", name);
        return NULL;
    }
    struct af_selfreq_run *run = af_xcalloc(1, sizeof(*run));
    run->sr = sr;
    run->done = done;
    run->arg = arg;
    clock_gettime(CLOCK_MONOTONIC, &run->start);
    run->conn = evhttp_connection_base_new(srv->base, NULL, addr, (unsigned short)port);
    struct evhttp_request *req = run->conn ? evhttp_request_new(on_done, run) : NULL;
    if (!req) {
        if (run->conn)
            evhttp_connection_free(run->conn);
        free(run);
        snprintf(err, errlen, "cannot open a connection to module %s", name);
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
    for (size_t i = 0; i < n_headers; i++)
        evhttp_add_header(h, headers[i].name, headers[i].value);
    if (body)
        evbuffer_add(evhttp_request_get_output_buffer(req), body, len);
    enum evhttp_cmd_type type = strcmp(method, "POST") == 0 ? EVHTTP_REQ_POST : EVHTTP_REQ_GET;
    if (evhttp_make_request(run->conn, req, type, url) != 0) {
        /* libevent freed req. */
        evhttp_connection_free(run->conn);
        free(run);
        snprintf(err, errlen, "cannot send the request to module %s", name);
        return NULL;
    }
    run->next = sr->runs;
    sr->runs = run;
    return run;
}
