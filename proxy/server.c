/*
 * server — listeners, modules and the shutdown sequence of the main thread.
 *
 * Each module has its own main port (and direct port when the flag is on),
 * and a listener knows its module, so a request finds its module without
 * any lookup. The default module's main port also applies dispatch.yaml when
 * the app has one (docs/modules.md).
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
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include <event2/event.h>
#include <event2/listener.h>

#include "common/log.h"
#include "common/xalloc.h"
#include "proxy/dispatch.h"
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

/* Every listener of every module: main ports, then direct ports (NULL
 * entries when off). */
static struct af_listener *listener_at(struct af_server *srv, size_t i)
{
    return i < srv->n_modules ? srv->main_ports[i] : srv->direct_ports[i - srv->n_modules];
}

static void listeners_enable(struct af_server *srv, bool on)
{
    for (size_t i = 0; i < 2 * srv->n_modules; i++) {
        struct af_listener *lst = listener_at(srv, i);
        if (!lst || !lst->l)
            continue;
        if (on)
            evconnlistener_enable(lst->l);
        else
            evconnlistener_disable(lst->l);
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

/* The port module i asks for from a first port: consecutive ports from a
 * fixed one, or 0 (any free port) for each when the first is 0. */
static int nth_port(int first, size_t i)
{
    return first == 0 ? 0 : first + (int)i;
}

/* The modules take n consecutive ports from --port, and as many from
 * --direct_port: both ranges must exist and must not meet. */
static int check_port_ranges(const struct af_server *srv, char *err, size_t errlen)
{
    const struct af_config *cfg = srv->cfg;
    int n = (int)srv->n_modules;
    if (cfg->port > 0 && cfg->port + n - 1 > 65535) {
        snprintf(err, errlen,
                 "--port=%d leaves no port for module \"%s\": the %d modules take "
                 "consecutive ports from --port; choose a lower one (or 0)",
                 cfg->port, srv->apps[65535 - cfg->port + 1]->service, n);
        return -1;
    }
    if (cfg->direct_port > 0 && cfg->direct_port + n - 1 > 65535) {
        snprintf(err, errlen,
                 "--direct_port=%d leaves no port for module \"%s\": the %d "
                 "modules take consecutive ports from --direct_port; choose a lower one (or 0)",
                 cfg->direct_port, srv->apps[65535 - cfg->direct_port + 1]->service, n);
        return -1;
    }
    if (n > 1 && cfg->port > 0 && cfg->direct_port > 0 && cfg->direct_port < cfg->port + n &&
        cfg->port < cfg->direct_port + n) {
        snprintf(err, errlen,
                 "--direct_port=%d: the %d modules take ports %d-%d from --port "
                 "and %d-%d from --direct_port, which overlap; choose ports %d apart",
                 cfg->direct_port, n, cfg->port, cfg->port + n - 1, cfg->direct_port,
                 cfg->direct_port + n - 1, n);
        return -1;
    }
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
    if (check_port_ranges(srv, err, errlen) < 0)
        return -1;
    size_t n = srv->n_modules;
    srv->modules = af_xcalloc(n ? n : 1, sizeof(*srv->modules));
    srv->main_ports = af_xcalloc(n ? n : 1, sizeof(*srv->main_ports));
    srv->direct_ports = af_xcalloc(n ? n : 1, sizeof(*srv->direct_ports));
    /* Every main port first, in command-line order, then the direct ports:
     * with fixed ports that is the order a reader of the startup lines
     * expects, and a clash names the port that could not be had. */
    for (size_t i = 0; i < n; i++) {
        struct af_listener *lst =
            i == srv->default_index ? &srv->main_port : af_xcalloc(1, sizeof(*lst));
        srv->main_ports[i] = lst;
        if (listen_one(srv, lst, cfg->host, nth_port(cfg->port, i), err, errlen) < 0)
            return -1;
    }
    for (size_t i = 0; cfg->direct_port >= 0 && i < n; i++) {
        struct af_listener *lst =
            i == srv->default_index ? &srv->direct_port : af_xcalloc(1, sizeof(*lst));
        srv->direct_ports[i] = lst;
        lst->direct = true;
        if (listen_one(srv, lst, cfg->host, nth_port(cfg->direct_port, i), err, errlen) < 0)
            return -1;
    }
    return 0;
}

int af_server_find_module(const struct af_server *srv, const char *name)
{
    for (size_t i = 0; i < srv->n_modules; i++)
        if (strcmp(srv->apps[i]->service, name) == 0)
            return (int)i;
    return -1;
}

struct af_module *af_server_module_named(const struct af_server *srv, const char *name,
                                         size_t len)
{
    for (size_t i = 0; i < srv->n_modules; i++) {
        const char *m = srv->modules[i]->name;
        if (strncasecmp(m, name, len) == 0 && m[len] == '\0')
            return srv->modules[i];
    }
    return NULL;
}

void af_server_attach_modules(struct af_server *srv)
{
    for (size_t i = 0; i < srv->n_modules; i++) {
        srv->main_ports[i]->module = srv->modules[i];
        if (srv->direct_ports[i])
            srv->direct_ports[i]->module = srv->modules[i];
    }
    srv->module = srv->n_modules ? srv->modules[srv->default_index] : NULL;
    if (!srv->module)
        return;
    /* With several modules, MODULE.localhost host names reach them: the
     * default module's main port routes every request. */
    bool hosts = srv->n_modules > 1;
    const struct af_dispatch *d = srv->dispatch;
    if (d && d->n_rules > 0) {
        /* Rules that all lead to the default module change nothing when it
         * is the only module: the port then skips dispatching altogether.
         * With several, they still win over a MODULE.localhost host. */
        bool elsewhere = false;
        srv->dispatch_to = af_xcalloc(d->n_rules, sizeof(*srv->dispatch_to));
        for (size_t i = 0; i < d->n_rules; i++) {
            int m = af_server_find_module(srv, d->rules[i].service);
            srv->dispatch_to[i] = m >= 0 ? srv->modules[m] : srv->module;
            elsewhere |= srv->dispatch_to[i] != srv->module;
        }
        if (elsewhere || hosts) {
            srv->main_port.dispatch = d;
            srv->main_port.dispatch_to = srv->dispatch_to;
        }
    }
    srv->main_port.routes = srv->main_port.dispatch != NULL || hosts;
}

struct af_module *af_server_dispatch(const struct af_listener *lst, const struct af_exchange *ex)
{
    const struct af_header *host = af_headers_find_id(&ex->req_headers, AF_H_HOST);
    const char *hv = host ? host->value : NULL;
    size_t hl = host ? host->value_len : 0;
    /* A module's host name: "VERSION.MODULE.localhost" is never dispatched,
     * "MODULE.localhost" only when no rule matches (production's order). */
    struct af_module *named = NULL;
    const char *label;
    size_t label_len;
    enum af_module_host form = hl ? af_dispatch_module_host(hv, hl, &label, &label_len)
                                  : AF_HOST_PLAIN;
    if (form != AF_HOST_PLAIN) {
        named = af_server_module_named(lst->srv, label, label_len);
        if (named && form == AF_HOST_VERSIONED)
            return named;
    }
    if (lst->dispatch) {
        int i = af_dispatch_match(lst->dispatch, hv, hl, ex->url);
        if (i >= 0)
            return lst->dispatch_to[i];
    }
    return named ? named : lst->module;
}

void af_server_release(struct af_server *srv)
{
    for (size_t i = 0; srv->main_ports && i < 2 * srv->n_modules; i++) {
        struct af_listener *lst = listener_at(srv, i);
        if (!lst)
            continue;
        if (lst->l)
            evconnlistener_free(lst->l);
        lst->l = NULL;
        if (lst != &srv->main_port && lst != &srv->direct_port)
            free(lst);
    }
    for (size_t i = 0; srv->modules && i < srv->n_modules; i++)
        af_module_free(srv->modules[i]);
    free(srv->modules);
    free(srv->main_ports);
    free(srv->direct_ports);
    free(srv->apps);
    free(srv->dispatch_to);
    srv->modules = NULL;
    srv->main_ports = srv->direct_ports = NULL;
    srv->apps = NULL;
    srv->dispatch_to = NULL;
    srv->module = NULL;
    srv->n_modules = 0;
}

static void stop_instances(struct af_server *srv)
{
    if (phase != PHASE_DRAIN)
        return;
    phase = PHASE_INSTANCES;
    for (size_t i = 0; i < srv->n_modules; i++)
        if (srv->modules[i])
            af_module_stop(srv->modules[i], INSTANCE_GRACE_MS);
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
    for (size_t i = 0; i < 2 * srv->n_modules; i++) {
        struct af_listener *lst = listener_at(srv, i);
        if (lst && lst->l) {
            evconnlistener_free(lst->l);
            lst->l = NULL;
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
    for (size_t i = 0; i < srv->n_modules; i++)
        if (srv->modules[i] && af_module_live(srv->modules[i]) > 0)
            return;
    event_base_loopbreak(srv->base);
}
