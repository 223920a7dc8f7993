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

#include "proxy/selfreq.h"

struct af_cron_job;
struct af_server;

/* Starts job on sr (proxy/selfreq.h): done is called once on a later loop
 * turn unless the run is cancelled (af_selfreq_cancel). Returns the run,
 * or NULL with a one-line reason in err (a target that names no module,
 * no address). */
struct af_selfreq_run *af_cron_start(struct af_selfreq *sr, struct af_server *srv,
                                     const struct af_cron_job *job, af_selfreq_done_fn done,
                                     void *arg, char *err, size_t errlen);

#endif
