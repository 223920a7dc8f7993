/*
 * admin — the admin server: GET /quit (200, then a graceful shutdown) and
 * GET / (a JSON status document: app, module, instances). It uses libevent's
 * evhttp: these are a handful of local requests, not the proxied path.
 */
#ifndef AF_ADMIN_H
#define AF_ADMIN_H

#include <stddef.h>

struct af_server;
struct af_admin;

/* Binds host:port (0 picks one). Returns NULL with a message in err. */
struct af_admin *af_admin_start(struct af_server *srv, const char *host, int port, char *err,
                                size_t errlen);
int af_admin_port(const struct af_admin *a);
void af_admin_free(struct af_admin *a);

#endif
