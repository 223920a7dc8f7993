/*
 * selfreq — what the front end needs to send requests to its own ports as
 * App Engine's infrastructure does (push tasks, cron jobs run from the
 * console): the address of a module's main port, and the process's secret.
 *
 * Such a request is routed by app.yaml like any other, but it must keep the
 * X-AppEngine-* fields it carries (a client's are removed) and pass
 * `login: admin` handlers. A client cannot be allowed to do that, so the
 * request carries a field holding a secret: 128 random bits drawn once per
 * process (getrandom), never written anywhere, compared in constant time.
 * Main thread only.
 */
#ifndef AF_SELFREQ_H
#define AF_SELFREQ_H

#include <stdbool.h>
#include <stddef.h>

struct af_listener;

/* The secret as 32 hex digits, drawn on first use; "" when the system had
 * no random bytes (then nothing is ever trusted). */
const char *af_selfreq_secret(void);

/* Whether value (len bytes) is the secret. Constant time in the secret. */
bool af_selfreq_secret_is(const char *value, size_t len);

/* The numeric address and port of a listener, a wildcard address made
 * loopback (where a request to it is sent). Returns 0, or -1 when the
 * listener is not bound. */
int af_selfreq_address(const struct af_listener *lst, char *addr, size_t addrlen, int *port);

#endif
