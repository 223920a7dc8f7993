/*
 * server — listeners and the shutdown sequence of the main thread.
 *
 * Shutdown (SIGINT, SIGTERM, GET /quit): stop accepting; close connections
 * idle between requests; let in-flight exchanges finish for up to
 * STOP_GRACE_MS; then close what is left, SIGTERM the instances and SIGKILL
 * them INSTANCE_GRACE_MS later; break the loop once every instance has been
 * reaped, or at the latest STOP_HARD_MS after the start of the shutdown.
 */
#include "proxy/server.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <event2/event.h>
#include <event2/listener.h>

#include "common/log.h"
#include "proxy/exchange.h"
#include "proxy/module.h"

#define STOP_GRACE_MS 5000
#define INSTANCE_GRACE_MS 2000
#define STOP_HARD_MS 9000
#define ACCEPT_PAUSE_MS 100

enum stop_phase { PHASE_DRAIN, PHASE_INSTANCES, PHASE_HARD };
static enum stop_phase phase;

static void accept_cb(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *addr,
                      int len, void *arg)
{
    af_conn_accept(arg, fd, addr, len);
}

static void listeners_enable(struct af_server *srv, bool on)
{
    struct af_listener *ls[] = {&srv->main_port, &srv->direct_port};
    for (size_t i = 0; i < 2; i++) {
        if (!ls[i]->l)
            continue;
        if (on)
            evconnlistener_enable(ls[i]->l);
        else
            evconnlistener_disable(ls[i]->l);
    }
}

static void accept_resume_cb(evutil_socket_t fd, short what, void *arg)
{
    struct af_server *srv = arg;
    if (!srv->stopping)
        listeners_enable(srv, true);
}

/* Out of descriptors: libevent would report the same pending connection on
 * every loop turn and spin. Release the spare descriptor to accept and close
 * one connection (the client sees a clean close, not a hang), then stop
 * accepting for a moment so in-flight work can free descriptors. */
static void accept_error_cb(struct evconnlistener *l, void *arg)
{
    struct af_listener *lst = arg;
    struct af_server *srv = lst->srv;
    int e = EVUTIL_SOCKET_ERROR();
    if (e != EMFILE && e != ENFILE && e != ENOBUFS && e != ENOMEM) {
        af_warn("accept on port %d: %s", lst->port, strerror(e));
        return;
    }
    if (srv->spare_fd >= 0) {
        close(srv->spare_fd);
        int fd = accept(evconnlistener_get_fd(l), NULL, NULL);
        if (fd >= 0)
            close(fd);
        srv->spare_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    }
    static time_t last;
    time_t now = time(NULL);
    if (now != last) {
        af_warn("Out of file descriptors (%s) with %d connections open; pausing accept for "
                "%d ms. Raise the limit with ulimit -n.",
                strerror(e), srv->n_conns, ACCEPT_PAUSE_MS);
        last = now;
    }
    listeners_enable(srv, false);
    struct timeval tv = {0, ACCEPT_PAUSE_MS * 1000};
    event_add(srv->accept_resume, &tv);
}

static int listen_one(struct af_server *srv, struct af_listener *lst, const char *host, int port,
                      char *err, size_t errlen)
{
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE};
    struct addrinfo *res = NULL;
    char portstr[16];
    snprintf(portstr, sizeof(portstr), "%d", port);
    /* IPv4 first: "localhost" then binds 127.0.0.1, which every client
     * tries, instead of ::1 alone. */
    hints.ai_family = AF_INET;
    int rc = getaddrinfo(host, portstr, &hints, &res);
    if (rc != 0) {
        hints.ai_family = AF_UNSPEC;
        rc = getaddrinfo(host, portstr, &hints, &res);
    }
    if (rc != 0) {
        snprintf(err, errlen, "cannot resolve host '%s': %s", host, gai_strerror(rc));
        return -1;
    }
    lst->srv = srv;
    lst->l = evconnlistener_new_bind(srv->base, accept_cb, lst,
                                     LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE |
                                         LEV_OPT_CLOSE_ON_EXEC,
                                     1024, res->ai_addr, (int)res->ai_addrlen);
    int e = errno;
    freeaddrinfo(res);
    if (!lst->l) {
        snprintf(err, errlen, "cannot listen on %s:%d: %s", host, port, strerror(e));
        return -1;
    }
    evconnlistener_set_error_cb(lst->l, accept_error_cb);
    struct sockaddr_storage ss;
    socklen_t len = sizeof(ss);
    getsockname(evconnlistener_get_fd(lst->l), (struct sockaddr *)&ss, &len);
    lst->port = ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
                                               : ((struct sockaddr_in *)&ss)->sin_port);
    return 0;
}

int af_server_listen(struct af_server *srv, char *err, size_t errlen)
{
    const struct af_config *cfg = srv->cfg;
    srv->spare_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    srv->accept_resume = evtimer_new(srv->base, accept_resume_cb, srv);
    LIST_INIT(&srv->conns);
    if (af_conns_init(srv) < 0) {
        snprintf(err, errlen, "cannot make the connection timers");
        return -1;
    }
    if (listen_one(srv, &srv->main_port, cfg->host, cfg->port, err, errlen) < 0)
        return -1;
    if (cfg->direct_port >= 0) {
        srv->direct_port.direct = true;
        if (listen_one(srv, &srv->direct_port, cfg->host, cfg->direct_port, err, errlen) < 0)
            return -1;
    }
    return 0;
}

static void stop_instances(struct af_server *srv)
{
    if (phase != PHASE_DRAIN)
        return;
    phase = PHASE_INSTANCES;
    if (srv->module)
        af_module_stop(srv->module, INSTANCE_GRACE_MS);
    struct timeval tv = {(STOP_HARD_MS - STOP_GRACE_MS) / 1000, 0};
    event_add(srv->stop_timer, &tv);
    af_server_maybe_done(srv);
}

static void stop_timer_cb(evutil_socket_t fd, short what, void *arg)
{
    struct af_server *srv = arg;
    if (phase == PHASE_DRAIN) {
        af_warn("%d connection(s) still busy after %d ms; closing them", srv->n_conns,
                STOP_GRACE_MS);
        struct af_conn *c;
        while ((c = LIST_FIRST(&srv->conns)) != NULL)
            af_conn_close(c);
        stop_instances(srv);
        return;
    }
    phase = PHASE_HARD;
    af_warn("Instances did not exit in time; exiting anyway (they are killed with appfront)");
    event_base_loopbreak(srv->base);
}

void af_server_shutdown(struct af_server *srv)
{
    if (srv->stopping)
        return;
    srv->stopping = true;
    phase = PHASE_DRAIN;
    af_log(AF_LOG_INFO, "Shutting down");
    struct af_listener *ls[] = {&srv->main_port, &srv->direct_port};
    for (size_t i = 0; i < 2; i++) {
        if (ls[i]->l) {
            evconnlistener_free(ls[i]->l);
            ls[i]->l = NULL;
        }
    }
    /* The timer first: closing the last idle connection below may already
     * move the shutdown on to stopping the instances, which re-arms it. */
    srv->stop_timer = evtimer_new(srv->base, stop_timer_cb, srv);
    struct timeval tv = {STOP_GRACE_MS / 1000, 0};
    event_add(srv->stop_timer, &tv);
    af_conns_close_idle(srv);
    af_server_maybe_done(srv);
}

void af_server_maybe_done(struct af_server *srv)
{
    if (!srv->stopping)
        return;
    if (phase == PHASE_DRAIN) {
        if (srv->n_conns == 0)
            stop_instances(srv);
        return;
    }
    if (!srv->module || af_module_live(srv->module) == 0)
        event_base_loopbreak(srv->base);
}
