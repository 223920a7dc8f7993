/*
 * background — the front end's half of the system service
 * (docs/services.md, "system"). Main thread only.
 *
 * runtime.RunInBackground asks the system service for a background
 * request; the service answers the app with an id and tells the main thread
 * (a notice), which takes the list through the internal call
 * system.BackgroundTake (the way of the task runner, taskrunner.h) and sends
 * each one as `GET /_ah/background` with `X-AppEngine-BackgroundRequest: ID`
 * to the very instance that ran the asking request: the Go library matches
 * the two inside one process.
 *
 * Which instance ran a request: the front end notes, when a request of a
 * module with manual or basic scaling is given an instance, its id (the API
 * ticket) and the instance in a ring of the last AF_BG_RING; the lookup
 * happens a few loop turns later, while or just after the request runs.
 *
 * The request goes to the module's own main port through selfreq (as cron
 * jobs and tasks do, proxy/selfreq.h), with a field X-Appfront-Background:
 * "SECRET INSTANCE-ID", SECRET being selfreq's per-process secret (128 random
 * bits, never written anywhere). The front end asks af_background_trusted()
 * about every request of a main port: the field is dropped in every case,
 * and only with the secret is the request a background one: it keeps its
 * X-AppEngine-* fields, skips dispatch.yaml and app.yaml's handlers, goes to
 * that instance alone (outside its concurrency limit, as dev_appserver's
 * background threads are), and has no deadline.
 *
 * It also posts the table of running instances to the system service
 * (apiserver/sysinfo.h) whenever an instance becomes ready or dies.
 */
#ifndef AF_BACKGROUND_H
#define AF_BACKGROUND_H

#include <stdbool.h>

struct af_server;
struct af_api;
struct af_headers;
struct af_module;
struct af_instance;

#define AF_BG_SECRET_HEADER "X-Appfront-Background"
/* Requests remembered for the lookup of the instance that ran them. */
#define AF_BG_RING 1024
/* Background requests in flight at once, over all instances; one more is
 * refused with an error line (its function never runs). */
#define AF_BG_MAX_RUNNING 64

/* Starts: subscribes to the internal replies and posts the instance table.
 * srv and api are borrowed and must outlive it. Returns -1 (with a warning)
 * when it cannot start: background requests are then never sent. */
int af_background_start(struct af_server *srv, struct af_api *api);

/* Stops: requests in flight are abandoned. No-op when not started. */
void af_background_stop(void);

/* The front end: a request of mod (manual or basic scaling) was given inst.
 * request_id is its 32 hex digits. */
void af_background_note(const char *request_id, const struct af_module *mod,
                        const struct af_instance *inst);

/* The module: an instance became ready or died (the table is posted once
 * the loop turn ends). No-op when not started. */
void af_background_instances_changed(void);

/*
 * For the front end, on every request of a main port: drops every
 * X-Appfront-Background field of h and returns the instance id it names
 * when there was exactly one and it holds this process's secret, else -1.
 */
int af_background_trusted(struct af_headers *h);

#endif
