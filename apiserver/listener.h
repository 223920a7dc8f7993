/*
 * listener — the API listener thread: accepts connections on the framed Unix
 * socket and on the HTTP port, parses calls, hands them to the backend
 * (backend.h) and writes the replies back. Internal to apiserver/.
 *
 * Every connection is a state machine (listener.c) with at most one call with
 * the backend at a time.
 */
#ifndef AF_LISTENER_H
#define AF_LISTENER_H

#include <stddef.h>

#include "apiserver/backend.h"
#include "common/hostcheck.h"

struct af_api_listener_config {
    /* Listening sockets, already bound and listening, non-blocking. Ownership
     * passes to the listener, which closes them. -1 entries are skipped. */
    int http_fds[2];
    int framed_fd;
    struct af_api_jobq *inbox;  /* borrowed: where calls go (the backend's inbox) */
    struct af_api_jobq *outbox; /* borrowed: where replies come from; non-blocking eventfd */
    int default_deadline_ms;    /* for calls that carry no deadline of their own */
    const char *info_json;      /* borrowed, must outlive the listener: body of GET / */
    const struct af_hostcheck *hostcheck; /* borrowed likewise: which Host values HTTP answers */
};

struct af_api_listener;

/* Starts the listener thread. Returns 0 and sets *out, or -errno; on failure
 * the fds in cfg are closed. cfg's pointers must outlive the listener. */
int af_api_listener_start(const struct af_api_listener_config *cfg, struct af_api_listener **out);

/* Stops the loop and joins the thread, then closes every listening socket
 * and connection. Connections with a call still with the backend stay
 * allocated (their replies may still arrive) until af_api_listener_free(). */
void af_api_listener_stop(struct af_api_listener *l);

/* After the backend has stopped: frees replies still queued in the outbox,
 * every connection and the event loop. NULL is a no-op. */
void af_api_listener_free(struct af_api_listener *l);

#endif
