/*
 * cron — running a cron job of cron.yaml now, for the admin console's
 * "Run now" (docs/admin.md, "Cron jobs"). Main thread only.
 *
 * A job runs as App Engine's cron service runs it: `GET URL` on the main
 * port of its target module (the default module without one), with
 * `X-AppEngine-Cron: true`, on a connection of its own. The request carries
 * the process's secret (proxy/selfreq.h) in the task runner's field, so the
 * front end keeps its X-AppEngine-Cron field (a client's is removed) and
 * lets it pass `login: admin` handlers, as cron requests do in production.
 * It is routed by dispatch.yaml and app.yaml like any request.
 */
#ifndef AF_CRON_H
#define AF_CRON_H

#include <stddef.h>

struct af_server;
struct af_cron_job;
struct af_cron;
struct af_cron_run;

/* status: the response's status, 0 when none came (refused, reset, timed
 * out); elapsed_ms from the start. */
typedef void (*af_cron_done_fn)(void *arg, int status, long elapsed_ms);

struct af_cron *af_cron_new(struct af_server *srv);

/* Abandons every run (their callbacks are not called) and frees. NULL is a
 * no-op. */
void af_cron_free(struct af_cron *c);

/* Starts job; done is called once, on a later loop turn, unless the run is
 * cancelled first. Returns the run, or NULL with a one-line reason in err
 * (a target that names no module, no address). */
struct af_cron_run *af_cron_start(struct af_cron *c, const struct af_cron_job *job,
                                  af_cron_done_fn done, void *arg, char *err, size_t errlen);

/* Forgets run: done is not called. */
void af_cron_cancel(struct af_cron *c, struct af_cron_run *run);

#endif
