/*
 * console — the admin console's HTML pages (docs/admin.md): an overview of
 * the app, a datastore viewer, memcache and task queues. proxy/admin.c
 * routes requests here; the pages reach the services only through the API
 * server's internal calls (apiserver.h), so a page that needs a service
 * keeps its evhttp request pending until the reply comes, on the main
 * thread, without blocking it.
 */
#ifndef AF_CONSOLE_H
#define AF_CONSOLE_H

#include <stdbool.h>

struct af_server;
struct af_api;
struct evhttp_request;
struct af_console;

/* At most this many requests wait for a service at once; more get 503. */
#define AF_CONSOLE_MAX_PENDING 32

/*
 * A console for srv (borrowed, outlives it). api (borrowed) may be NULL:
 * the service pages then answer 503. Makes the per-process token that
 * every state-changing form carries. Returns NULL with a log line when it
 * cannot subscribe to the internal replies.
 */
struct af_console *af_console_new(struct af_server *srv, struct af_api *api);

/* Answers every pending request 503 and unsubscribes; call before the API
 * server stops and before the evhttp that owns the requests is freed. NULL
 * is a no-op. */
void af_console_free(struct af_console *c);

/* The HTML overview (GET / from a browser). */
void af_console_overview(struct af_console *c, struct evhttp_request *req);

/* Serves req when path is one of the console's pages (/datastore...,
 * /memcache..., /taskqueue...) and returns true; false when it is not
 * (the caller answers 404). */
bool af_console_handle(struct af_console *c, struct evhttp_request *req, const char *path);

/* The token forms carry (32 hex digits), for tests and for the overview. */
const char *af_console_token(const struct af_console *c);

#endif
