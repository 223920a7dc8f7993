/*
 * admin — the admin server: GET /quit (200, then a graceful shutdown),
 * GET / (a JSON status document: app, module, instances; or, for a
 * browser, the console's overview: docs/admin.md) and the admin console's
 * pages (proxy/console.h). It uses libevent's evhttp: these are a handful
 * of local requests, not the proxied path.
 */
#ifndef AF_ADMIN_H
#define AF_ADMIN_H

#include <stddef.h>

#include "proxy/instance.h"

struct af_server;
struct af_api;
struct af_admin;

/* Binds host:port (0 picks one). api (borrowed; may be NULL) is how the
 * console reaches the services: free the admin server before stopping it.
 * Returns NULL with a message in err. */
struct af_admin *af_admin_start(struct af_server *srv, struct af_api *api, const char *host,
                                int port, char *err, size_t errlen);
int af_admin_port(const struct af_admin *a);
void af_admin_free(struct af_admin *a);

/* An instance state's name, as the status JSON and the console show it. */
const char *af_admin_state_name(enum af_instance_state s);

#endif
