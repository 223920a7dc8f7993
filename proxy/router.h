/*
 * router — app.yaml's handlers on the main port (issue 3: app.yaml routing).
 *
 * af_router_handle() is called for every request on the main port once its
 * head is complete and valid, before an instance is chosen. It either
 * answers the request itself — static files, login redirects and pages,
 * secure redirects, 404 when no handler matches — with af_ex_reply() and
 * returns true, or returns false to forward it to the module's instances (a
 * script handler). docs/app-yaml.md says what each handler field does.
 *
 * Each module has its own router, built from the module's app.yaml by
 * af_router_init() at startup and again after the app.yaml is reloaded
 * (lazily, on the next request); an exchange is routed by the router of its
 * module (ex->mod: the port's, or dispatch.yaml's choice). Main thread
 * only.
 */
#ifndef AF_ROUTER_H
#define AF_ROUTER_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/stat.h>

struct af_exchange;
struct af_server;
struct af_app_yaml;
struct af_headers;
struct evbuffer;

bool af_router_handle(struct af_exchange *ex);

/* Builds every module's router from its app.yaml and srv->cfg: compiles
 * every pattern once and logs a warning for each secure: always handler
 * (there is no https port) and each http_headers field it cannot send.
 * Idempotent; does nothing in api mode. */
void af_router_init(struct af_server *srv);

struct af_module;
/* Frees a module's router (af_module_free calls it). */
void af_router_release(struct af_module *mod);

/*
 * The app's error page (error_handlers) for an error answered by appfront
 * with `status`, as a new evbuffer holding the file (caller frees), with
 * *content_type set to a static string; or NULL to answer as usual.
 *
 * Decision: 504 (the request deadline) serves `timeout`, 503 (no instance
 * available in time, queue full) serves `over_quota`, each falling back to
 * the default page; 500 serves the default page. 502 keeps appfront's text,
 * which carries the instance's last stderr lines a developer needs, and so
 * do the protocol errors (400, 408, 413, 431, 501) answered before a
 * request is understood. The router's own 400, 401, 404 and 405 use the
 * default page (see af_router_handle).
 */
struct evbuffer *af_router_error_page(struct af_module *mod, int status,
                                      const char **content_type);

/* ---- the decision, without an exchange (for tests) ---------------------- */

struct af_router;

/* A router for `app` (borrowed; must outlive it). https_port 0 means none,
 * which is the case today. */
struct af_router *af_router_new(const struct af_app_yaml *app, bool allow_skipped_files,
                                int https_port);
void af_router_free(struct af_router *r);

enum af_route_kind {
    AF_ROUTE_FORWARD,  /* a script handler, or no handlers at all */
    AF_ROUTE_FILE,     /* a static file: fd, st, name */
    AF_ROUTE_REDIRECT, /* status, location */
    AF_ROUTE_ERROR,    /* status, why */
    AF_ROUTE_LOGIN,    /* /_ah/login: query */
    AF_ROUTE_LOGOUT,   /* /_ah/logout: query */
};

struct af_route_result {
    enum af_route_kind kind;
    int status;
    int handler;      /* index in app->handlers of the handler used, or -1 */
    char *location;   /* REDIRECT; owned */
    const char *why;  /* ERROR; static */
    const char *allow;/* ERROR 405: the Allow field; static */
    const char *query;/* LOGIN, LOGOUT: raw query after '?', into the target; or NULL */
    int fd;           /* FILE; owned (-1 when none) */
    struct stat st;   /* FILE */
    char *rel;        /* FILE: the path relative to the app directory; owned */
};

/*
 * Routes one request: method (http_parser's enum), the raw request target,
 * the request's header fields (for the login cookie), and the host to name
 * in redirects ("host:port"). Fills *out; release it with
 * af_route_result_release().
 */
void af_router_route(struct af_router *r, unsigned method, const char *target,
                     const struct af_headers *headers, const char *host,
                     struct af_route_result *out);
/* The same; trusted: a request of appfront's own task runner
 * (taskrunner.h), which passes every login check as an administrator. */
void af_router_route_as(struct af_router *r, unsigned method, const char *target,
                        const struct af_headers *headers, const char *host, bool trusted,
                        struct af_route_result *out);
void af_route_result_release(struct af_route_result *res);

/* True if a decoded path has a "." or ".." segment (RFC 3986 §3.3). */
bool af_router_has_dot_segment(const char *path);

/* Expands \1..\9 of `tmpl` with the groups of a match (ovector of n pairs,
 * PCRE2_UNSET for unmatched, which expand to ""), and "\\" to "\". Caller
 * frees. */
char *af_router_expand(const char *tmpl, const char *subject, const size_t *ovector,
                       unsigned n);

#endif
