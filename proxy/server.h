/*
 * server — the main thread's state: the event loop, the listeners of the
 * front end (a main port and, when on, a direct port per module), the
 * modules with their instances, dispatch.yaml, and the shutdown sequence.
 * Everything here runs on the main thread only. docs/modules.md says how
 * several modules are served.
 */
#ifndef AF_SERVER_H
#define AF_SERVER_H

#include <stdbool.h>
#include <sys/queue.h>

#include "proxy/appyaml.h"
#include "proxy/cli.h"
#include "proxy/timeouts.h"

struct event_base;
struct evconnlistener;
struct event;
struct af_module;
struct af_conn;
struct af_dispatch;
struct af_exchange;

/* One listening socket of the front end. */
struct af_listener {
    struct af_server *srv;
    struct evconnlistener *l;
    /* The module whose instances serve what arrives here; borrowed from the
     * server. Set before the first accept. */
    struct af_module *module;
    /* On the default module's main port when the app has dispatch.yaml
     * rules that matter (one reaches another module, or there are several
     * modules, which MODULE.localhost host names reach), else NULL: the
     * rules, and the module each one names (dispatch_to[i] for rule i).
     * Borrowed from the server. */
    const struct af_dispatch *dispatch;
    struct af_module *const *dispatch_to;
    /* The port picks a module per request with af_server_dispatch():
     * dispatch is set, or the app has several modules (the default
     * module's main port only). */
    bool routes;
    bool direct; /* the back-door port: no routing, no per-instance limit */
    int port;    /* the port actually bound */
};

struct af_server {
    struct event_base *base;
    const struct af_config *cfg;     /* borrowed from main */
    /* The default module's app.yaml (the one the router serves; a reload
     * replaces it); NULL in api mode. Borrowed. */
    const struct af_app_yaml *app;
    struct af_module *module; /* the default module: modules[default_index] */

    /*
     * Every module, in command-line order, and index by index its app.yaml
     * (borrowed from main), its main port and its direct port (NULL when
     * off). Main fills apps, n_modules and default_index before
     * af_server_listen(), which binds the ports, and modules[] after. The
     * default module's ports are main_port and direct_port below; the
     * others' are owned. n_modules is 0 in api mode.
     */
    const struct af_app_yaml **apps;   /* owned array */
    struct af_module **modules;        /* owned, and each module */
    struct af_listener **main_ports;   /* owned array */
    struct af_listener **direct_ports; /* owned array */
    size_t n_modules;
    size_t default_index;

    struct af_listener main_port;   /* the default module's */
    struct af_listener direct_port; /* the default module's; .l == NULL when off */

    /* dispatch.yaml (borrowed from main; NULL when none; every rule names
     * one of the modules) and, per rule, the module it names (owned array,
     * built by af_server_attach_modules()). */
    const struct af_dispatch *dispatch;
    struct af_module **dispatch_to;

    char *run_dir;      /* private 0700 directory for Unix sockets; owned */
    char *api_socket;   /* framed API socket path inside run_dir; owned */
    char *blob_dir;     /* the blobstore directory (uploads go to its tmp/); owned */
    int api_port;       /* the API server's HTTP port */
    char *app_id;       /* app.yaml application, or "testapp"-like default; owned */

    int n_conns;        /* open client connections, main + direct */
    int spare_fd;       /* reserved descriptor released to shed a connection on EMFILE */
    struct event *accept_resume; /* re-enables listeners after descriptor exhaustion */

    LIST_HEAD(, af_conn) conns; /* every open client connection */
    /* Connections waiting for a request head (--head_timeout: 408) and
     * idle between requests (closed silently); see conn.c. */
    struct af_timeout_queue head_timeouts;
    struct af_timeout_queue idle_timeouts;
    struct af_timeout_queue deadlines;        /* exchanges: --request_deadline */
    struct af_timeout_queue pending_timeouts; /* queued exchanges: --max_pending_latency */
    struct af_exchange *spare_ex; /* finished exchanges kept for reuse (conn.c) */
    int n_spare_ex;
    struct event *spare_trim; /* gives the pool back once the server is quiet */
    bool spare_trim_armed;
    unsigned long ex_begun;      /* exchanges begun so far */
    unsigned long ex_begun_seen; /* ex_begun when the trim timer was last armed */

    bool stopping;      /* shutdown has begun: no new connections or requests */
    struct event *stop_timer;
    int exit_code;
};

/* Binds every module's main port and, if configured, direct port: module i
 * on --port + i and --direct_port + i (each a free port when the flag is
 * 0). Returns 0 or -1 with a message in err. */
int af_server_listen(struct af_server *srv, char *err, size_t errlen);

/* Index of the module called name (its app.yaml's service) in srv->apps,
 * or -1. */
int af_server_find_module(const struct af_server *srv, const char *name);

/* The module called name[0..len) in any case, or NULL. */
struct af_module *af_server_module_named(const struct af_server *srv, const char *name,
                                         size_t len);

/* Points each listener at its module, and the default module's main port
 * at the dispatch rules when one reaches another module. Call once the
 * modules exist, before the loop runs. */
void af_server_attach_modules(struct af_server *srv);

/*
 * The module that serves ex on lst, a listener that routes (lst->routes):
 * docs/modules.md. A Host field "VERSION.MODULE.localhost" naming a served
 * module goes to it; otherwise the first dispatch rule that matches ex's
 * Host field and target; otherwise the module a "MODULE.localhost" host
 * names; otherwise lst->module. Allocates nothing. Called by conn.c once
 * the head is read; a listener that does not route needs no call.
 */
struct af_module *af_server_dispatch(const struct af_listener *lst, const struct af_exchange *ex);

/* Frees the modules, the other modules' listeners and the tables (at exit,
 * after the loop). */
void af_server_release(struct af_server *srv);

/* Begins a graceful shutdown: stop accepting, let in-flight exchanges finish
 * within a bound, stop instances, then break the event loop. Idempotent. */
void af_server_shutdown(struct af_server *srv);

/* Called by connections when they close, and by the module when its last
 * instance is gone: finishes the shutdown when nothing is left. */
void af_server_maybe_done(struct af_server *srv);

#endif
