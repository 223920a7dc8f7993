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
struct af_server;
struct af_selfreq;
struct af_selfreq_run;

/* The secret as 32 hex digits, drawn on first use; "" when the system had
 * no random bytes (then nothing is ever trusted). */
const char *af_selfreq_secret(void);

/* Whether value (len bytes) is the secret. Constant time in the secret. */
bool af_selfreq_secret_is(const char *value, size_t len);

/* The numeric address and port of a listener, a wildcard address made
 * loopback (where a request to it is sent). Returns 0, or -1 when the
 * listener is not bound. */
int af_selfreq_address(const struct af_listener *lst, char *addr, size_t addrlen, int *port);

/*
 * Sending: a request to module mi's main port on a connection of its own,
 * Host "HOST:PORT", the secret in the task runner's field
 * (X-Appfront-Task-Secret, proxy/taskrunner.h), so it is trusted: its
 * X-AppEngine-* fields are kept and `login: admin` lets it through. The
 * answer's body is dropped. Used by the console (cron jobs, inbound mail).
 */

/* status: the answer's status, 0 when none came; elapsed_ms from the start. */
typedef void (*af_selfreq_done_fn)(void *arg, int status, long elapsed_ms);

/* One header of a request sent. */
struct af_selfreq_header {
    const char *name, *value;
};

struct af_selfreq *af_selfreq_new(struct af_server *srv);

/* Abandons every run (their callbacks are not called) and frees. NULL is a
 * no-op. */
void af_selfreq_free(struct af_selfreq *sr);

/* Sends method ("GET", "POST") url to module mi with the headers (and body,
 * len bytes, when not NULL); done is called once on a later loop turn
 * unless the run is cancelled first. Returns the run, or NULL with a
 * one-line reason in err. */
struct af_selfreq_run *af_selfreq_start(struct af_selfreq *sr, size_t mi, const char *method,
                                        const char *url, const struct af_selfreq_header *headers,
                                        size_t n_headers, const void *body, size_t len,
                                        af_selfreq_done_fn done, void *arg, char *err,
                                        size_t errlen);

/* For a request the front end gives no deadline (a background request,
 * proxy/background.h): the connection waits up to a day, not the request
 * deadline plus 10 s. */
void af_selfreq_no_deadline(struct af_selfreq_run *run);

/* Forgets run: done is not called. */
void af_selfreq_cancel(struct af_selfreq *sr, struct af_selfreq_run *run);

#endif
