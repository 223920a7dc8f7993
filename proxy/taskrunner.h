/*
 * taskrunner — runs push-queue tasks when they are due (docs/taskqueue.md).
 * Main thread only.
 *
 * The runner holds no task state: it asks the taskqueue service, through
 * the API server's internal calls (apiserver.h), which tasks to run, sends
 * each one as an HTTP request to appfront's own main port, so it is routed
 * by app.yaml like any request, and reports every outcome back on its next
 * call. The service decides about rates, retries and deletion.
 *
 * Trust: the front end removes every X-AppEngine-* field a client sends.
 * The runner's requests (and the cron jobs the console runs, proxy/cron.h)
 * carry a secret field, X-Appfront-Task-Secret, whose value is the
 * process's secret (proxy/selfreq.h); the front end asks
 * af_taskrunner_trusted() about each request of the main port, which drops
 * the field in every case and says whether it held the secret. Only then
 * are the request's X-AppEngine-* fields kept, and it passes `login: admin`
 * handlers, as dev_appserver lets task and cron requests do.
 */
#ifndef AF_TASKRUNNER_H
#define AF_TASKRUNNER_H

#include <stdbool.h>

struct af_server;
struct af_api;
struct af_headers;

/* The field that carries the secret. */
#define AF_TASK_SECRET_HEADER "X-Appfront-Task-Secret"

struct af_taskrunner;

/*
 * Starts running tasks: watches the API server's internal replies and polls
 * the taskqueue service at once. srv and api are borrowed and must outlive
 * the runner. Returns NULL (with a warning logged) if it cannot start.
 */
struct af_taskrunner *af_taskrunner_start(struct af_server *srv, struct af_api *api);

/* Stops: requests in flight are abandoned (their tasks run again after the
 * next start). NULL is a no-op. */
void af_taskrunner_free(struct af_taskrunner *r);

/*
 * For the front end, on every request of the main port: drops every
 * X-Appfront-Task-Secret field of h and returns true when there was exactly
 * one and it holds this process's secret.
 */
bool af_taskrunner_trusted(struct af_headers *h);

#endif
