/*
 * admin — the admin server: GET /quit, GET / (the status JSON, or the
 * console's overview for a browser) and the console's pages
 * (proxy/console.c), on evhttp, on the main thread.
 */
#include "proxy/admin.h"

#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>

#include "common/hostcheck.h"
#include "common/log.h"
#include "common/xalloc.h"
#include "proxy/console.h"
#include "proxy/dispatch.h"
#include "proxy/instance.h"
#include "proxy/module.h"
#include "proxy/server.h"

struct af_admin {
    struct af_server *srv;
    struct evhttp *http;
    int port;
    struct event *quit_ev;
    struct af_console *console;
    struct af_hostcheck hostcheck; /* which Host values it answers */
};

/* A console form is a few fields; a bigger body is refused unread. */
#define ADMIN_MAX_BODY (64 << 10)

const char *af_admin_state_name(enum af_instance_state s)
{
    static const char *const names[] = {
        [AF_INST_STARTING] = "starting",
        [AF_INST_READY] = "ready",
        [AF_INST_STOPPING] = "stopping",
        [AF_INST_DEAD] = "dead",
    };
    return names[s];
}

/* s as a JSON string literal (names come from app.yaml files). */
static void json_string(struct evbuffer *b, const char *s)
{
    evbuffer_add(b, "\"", 1);
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p == '"' || *p == '\\')
            evbuffer_add_printf(b, "\\%c", *p);
        else if (*p < 0x20)
            evbuffer_add_printf(b, "\\u%04x", *p);
        else
            evbuffer_add(b, p, 1);
    }
    evbuffer_add(b, "\"", 1);
}

/* One module: its configuration, ports, queue and instances. */
static void module_json(struct evbuffer *b, const struct af_server *srv, size_t i)
{
    const struct af_module *m = srv->modules[i];
    evbuffer_add_printf(b, "{\"name\": ");
    json_string(b, m->name);
    evbuffer_add_printf(b, ", \"version\": ");
    json_string(b, m->version);
    evbuffer_add_printf(b, ", \"default\": %s, \"port\": %d, \"direct_port\": ",
                        m == srv->module ? "true" : "false", srv->main_ports[i]->port);
    if (srv->direct_ports[i])
        evbuffer_add_printf(b, "%d", srv->direct_ports[i]->port);
    else
        evbuffer_add_printf(b, "null");
    evbuffer_add_printf(b,
                        ", \"max_concurrent_requests\": %d, \"max_instances\": %d, "
                        "\"queued\": %d, \"instances\": [",
                        m->max_concurrent, m->max_instances, m->queue_len);
    const struct af_instance *inst;
    bool first = true;
    TAILQ_FOREACH(inst, &m->instances, link)
    {
        evbuffer_add_printf(b,
                            "%s{\"name\": \"%s\", \"pid\": %d, \"state\": \"%s\", "
                            "\"active\": %d, \"idle_connections\": %d}",
                            first ? "" : ", ", inst->name, (int)inst->pid,
                            af_admin_state_name(inst->state), inst->active + inst->active_direct,
                            inst->n_idle);
        first = false;
    }
    evbuffer_add_printf(b, "]}");
}

/*
 * GET /: the application, its default module's port ("port") and that
 * module ("module", as before several modules were served), then every
 * module in command-line order ("modules") and the dispatch.yaml in force
 * ("dispatch": its path, or null).
 */
static void status_page(struct af_admin *a, struct evhttp_request *req)
{
    struct af_server *srv = a->srv;
    struct evbuffer *b = evbuffer_new();
    evbuffer_add_printf(b, "{\"application\": ");
    json_string(b, srv->app_id);
    evbuffer_add_printf(b, ", \"port\": %d, \"api_port\": %d", srv->main_port.port, srv->api_port);
    if (srv->module) {
        evbuffer_add_printf(b, ", \"module\": ");
        module_json(b, srv, srv->default_index);
    }
    evbuffer_add_printf(b, ", \"modules\": [");
    for (size_t i = 0; i < srv->n_modules; i++) {
        if (i)
            evbuffer_add_printf(b, ", ");
        module_json(b, srv, i);
    }
    evbuffer_add_printf(b, "], \"dispatch\": ");
    if (srv->main_port.dispatch)
        json_string(b, srv->dispatch->path);
    else
        evbuffer_add_printf(b, "null");
    evbuffer_add_printf(b, "}\n");
    evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type",
                      "application/json");
    evhttp_send_reply(req, 200, "OK", b);
    evbuffer_free(b);
}

static void quit_cb(evutil_socket_t fd, short what, void *arg)
{
    struct af_admin *a = arg;
    af_server_shutdown(a->srv);
}

static void quit_sent_cb(struct evhttp_request *req, void *arg)
{
    struct af_admin *a = arg;
    event_active(a->quit_ev, EV_TIMEOUT, 0);
}

/* A browser asks for HTML (its Accept names text/html); programs that
 * read the status send no Accept, or application/json, and keep getting
 * JSON (docs/admin.md). */
static bool wants_html(struct evhttp_request *req)
{
    const char *accept = evhttp_find_header(evhttp_request_get_input_headers(req), "Accept");
    return accept && strcasestr(accept, "text/html") != NULL;
}

static void request_cb(struct evhttp_request *req, void *arg)
{
    struct af_admin *a = arg;
    const char *host = evhttp_find_header(evhttp_request_get_input_headers(req), "Host");
    if (!af_hostcheck_ok(&a->hostcheck, host, host ? strlen(host) : 0)) {
        /* Plain text: the refused name is the requester's to choose. */
        char msg[512];
        struct evbuffer *b = evbuffer_new();
        evbuffer_add_printf(b, "%s\n",
                            af_hostcheck_refusal(msg, sizeof(msg), "The admin server", host,
                                                 strlen(host)));
        evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type",
                          "text/plain; charset=utf-8");
        evhttp_send_reply(req, 403, "Forbidden", b);
        evbuffer_free(b);
        return;
    }
    const char *path = evhttp_uri_get_path(evhttp_request_get_evhttp_uri(req));
    if (!path)
        path = "/";
    if (strcmp(path, "/quit") == 0) {
        struct evbuffer *b = evbuffer_new();
        evbuffer_add_printf(b, "appfront is shutting down\n");
        /* Shut down once the reply is written: the loop may end right
         * after, and the caller must get its 200 first. */
        evhttp_request_set_on_complete_cb(req, quit_sent_cb, a);
        evhttp_send_reply(req, 200, "OK", b);
        evbuffer_free(b);
        return;
    }
    if (strcmp(path, "/") == 0) {
        if (wants_html(req))
            af_console_overview(a->console, req);
        else
            status_page(a, req);
        return;
    }
    if (af_console_handle(a->console, req, path))
        return;
    evhttp_send_error(req, 404,
                      "Not found: the admin server answers /, /quit, /datastore, /memcache and "
                      "/taskqueue");
}

struct af_admin *af_admin_start(struct af_server *srv, struct af_api *api, const char *host,
                                int port, char *err, size_t errlen)
{
    struct af_admin *a = af_xcalloc(1, sizeof(*a));
    a->srv = srv;
    af_hostcheck_init(&a->hostcheck, srv->cfg->enable_host_checking, host, srv->cfg->addn_hosts,
                      srv->cfg->n_addn_hosts);
    a->http = evhttp_new(srv->base);
    evhttp_set_max_body_size(a->http, ADMIN_MAX_BODY);
    evhttp_set_gencb(a->http, request_cb, a);
    evhttp_set_allowed_methods(a->http, EVHTTP_REQ_GET | EVHTTP_REQ_POST | EVHTTP_REQ_HEAD);
    struct evhttp_bound_socket *s = evhttp_bind_socket_with_handle(a->http, host, (ev_uint16_t)port);
    if (!s) {
        snprintf(err, errlen, "cannot listen on %s:%d for the admin server", host, port);
        evhttp_free(a->http);
        af_hostcheck_release(&a->hostcheck);
        free(a);
        return NULL;
    }
    struct sockaddr_storage ss;
    socklen_t len = sizeof(ss);
    getsockname(evhttp_bound_socket_get_fd(s), (struct sockaddr *)&ss, &len);
    a->port = ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
                                             : ((struct sockaddr_in *)&ss)->sin_port);
    a->quit_ev = event_new(srv->base, -1, 0, quit_cb, a);
    a->console = af_console_new(srv, api);
    return a;
}

int af_admin_port(const struct af_admin *a)
{
    return a->port;
}

void af_admin_free(struct af_admin *a)
{
    if (!a)
        return;
    /* Its pending requests belong to the evhttp: answered before it goes. */
    af_console_free(a->console);
    evhttp_free(a->http);
    event_free(a->quit_ev);
    af_hostcheck_release(&a->hostcheck);
    free(a);
}
