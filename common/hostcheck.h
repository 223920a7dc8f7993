/*
 * hostcheck — which Host header values the admin server and the API
 * server's HTTP port answer (dev_appserver's --enable_host_checking and
 * --addn_host).
 *
 * Both servers act on what a request asks (delete an entity, flush
 * memcache, run any service call), and both listen on localhost. A web page
 * can still reach them through DNS rebinding: its own name, re-resolved to
 * 127.0.0.1, makes the browser treat the server as the page's origin. Such
 * a request carries the page's name in Host. So a name is answered only
 * when it is one of the machine's own:
 *
 *   - an IP literal (a rebinding needs a name), with or without a port;
 *   - localhost and any name under .localhost;
 *   - the name the server was told to bind (--admin_host, --api_host) and
 *     the machine's host name;
 *   - a --addn_host: an exact name, "*.example.org" (one label more) or
 *     "**.example.org" (one or more labels more);
 *
 * and a request without Host (HTTP/1.0, which no browser sends) passes.
 * Names compare without case and without a trailing dot.
 */
#ifndef AF_HOSTCHECK_H
#define AF_HOSTCHECK_H

#include <stdbool.h>
#include <stddef.h>

struct af_hostcheck {
    bool enabled;
    char *bind_host;  /* lower-case; NULL when an IP literal or none */
    char *machine;    /* gethostname(), lower-case; NULL if unknown */
    char **extra;     /* --addn_host patterns, lower-case */
    size_t n_extra;
};

/* Copies what it keeps. extra may be NULL with n_extra 0. */
void af_hostcheck_init(struct af_hostcheck *h, bool enabled, const char *bind_host,
                       char *const *extra, size_t n_extra);
void af_hostcheck_release(struct af_hostcheck *h);

/* Whether a request whose Host field is host (len bytes; NULL when the
 * request has none) is answered. Always true when checking is off (or h
 * is NULL). */
bool af_hostcheck_ok(const struct af_hostcheck *h, const char *host, size_t len);

/* Writes the one-line refusal every checked server sends with its 403,
 * naming the server ("the admin server"), the refused Host (cut at 100
 * bytes) and the two flags that allow it; returns buf. */
char *af_hostcheck_refusal(char *buf, size_t len, const char *server, const char *host,
                           size_t host_len);

#endif
