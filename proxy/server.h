/*
 * server — the main thread's state: the event loop, the listeners of the
 * front end (main port, direct port), the module with its instances, and the
 * shutdown sequence. Everything here runs on the main thread only.
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

/* One listening socket of the front end. */
struct af_listener {
    struct af_server *srv;
    struct evconnlistener *l;
    bool direct; /* the back-door port: no routing, no per-instance limit */
    int port;    /* the port actually bound */
};

struct af_server {
    struct event_base *base;
    const struct af_config *cfg;     /* borrowed from main */
    const struct af_app_yaml *app;   /* borrowed from main; NULL in api mode */
    struct af_module *module;        /* the default module; owned */

    struct af_listener main_port;
    struct af_listener direct_port;  /* .l == NULL when off */

    char *run_dir;      /* private 0700 directory for Unix sockets; owned */
    char *api_socket;   /* framed API socket path inside run_dir; owned */
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

/* Binds the main and, if configured, direct port. Returns 0 or -1 with a
 * message in err. */
int af_server_listen(struct af_server *srv, char *err, size_t errlen);

/* Begins a graceful shutdown: stop accepting, let in-flight exchanges finish
 * within a bound, stop instances, then break the event loop. Idempotent. */
void af_server_shutdown(struct af_server *srv);

/* Called by connections when they close, and by the module when its last
 * instance is gone: finishes the shutdown when nothing is left. */
void af_server_maybe_done(struct af_server *srv);

#endif
