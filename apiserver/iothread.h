/*
 * iothread — the API I/O thread: where deferred calls (apiserver/service.h,
 * af_result_defer) do their slow external I/O, many at once on one libevent
 * loop, so that the serialized backend never waits on the network.
 * Internal to apiserver/; the hand-off rules are at the top of backend.c.
 */
#ifndef AF_IOTHREAD_H
#define AF_IOTHREAD_H

#include "apiserver/backend.h"

/* More deferred calls than this at once are refused (rpc_error OVER_QUOTA):
 * each holds a socket, and descriptors are shared with the front end. */
#define AF_IO_MAX_CALLS 500

struct af_io;

/* Starts the I/O thread. Finished calls are pushed on outbox (borrowed; it
 * must outlive the thread). Returns 0 and sets *out, or -errno. */
int af_io_start(struct af_api_jobq *outbox, struct af_io **out);

/* Backend thread: hands job, whose defer_ops and defer_arg are set, to the
 * I/O thread. Ownership of job passes to it. */
void af_io_submit(struct af_io *io, struct af_api_job *job);

/* Stops the loop and joins the thread, then cancels the work still in
 * progress and frees its jobs (their callers get no reply: the listener has
 * stopped first). NULL is a no-op. */
void af_io_stop(struct af_io *io);

#endif
