/*
 * backend — the one place where API calls cross threads, and the services
 * backend thread that runs them (see the top of backend.c for the locking
 * rules).
 *
 * The listener thread turns each call into a struct af_api_job, pushes it on the
 * backend's inbox and forgets it; the backend thread runs jobs one at a time
 * and pushes each, now carrying its result (which the listener packs into
 * the reply), on the outbox, whose eventfd the listener's event loop watches.
 */
#ifndef AF_BACKEND_H
#define AF_BACKEND_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "apiserver/apiserver.h"
#include "apiserver/envelope.h"
#include "apiserver/service.h"
#include "remote_api.pb-c.h"

enum af_api_job_kind {
    AF_API_JOB_CALL,  /* run req, reply is an encoded Response */
    AF_API_JOB_CLEAR, /* POST /clear: reset one service (stub) or all (stub NULL) */
    /* main thread -> backend -> main thread: run req through the service's
     * `internal` table; reply is the service's own response, status 0 (ok)
     * or -1 (failed, already logged; then res.kind and res.code say how
     * and reply holds the detail, not NUL-terminated, or is NULL). */
    AF_API_JOB_INTERNAL,
    /* backend -> main thread: the service named in stub asked to be heard
     * (struct af_result.notify_main). */
    AF_API_JOB_NOTICE,
    /* main thread -> backend, one way: hand reply[0..reply_len) to the
     * `internal` method post_method of service post_service (which copies
     * what it keeps); no answer goes back: the backend pushes the job,
     * lazily, on post_back for the poster to reuse, or frees it
     * (af_api_post, apiserver.h). */
    AF_API_JOB_POST,
};

/*
 * One unit of work travelling listener → backend → listener. A job belongs
 * to exactly one thread at a time: whoever last took it off a queue.
 */
struct af_api_job {
    struct af_api_job *next; /* queue link, touched only under the queue lock */
    enum af_api_job_kind kind;
    /* The listener's connection. Opaque here: the backend never dereferences
     * it, it only carries it back so the listener can find the connection
     * (which the listener keeps alive until the job returns). */
    void *owner;
    uint64_t deadline_ns;        /* CLOCK_MONOTONIC; a job not started by then is not run */
    Af__RemoteApi__Request *req; /* CALL, INTERNAL: decoded into arena, freed with the job */
    struct af_envelope_arena arena;
    char *stub;                  /* CLEAR: owned service name, or NULL for all */
    const char *post_service;    /* POST: static strings */
    const char *post_method;
    struct af_api_jobq *post_back; /* POST: where the run job goes back, or NULL */
    size_t reply_cap;              /* POST: bytes allocated for reply */

    /* A deferred call (service.h, af_result_defer): how the I/O thread
     * runs it, and the work's state, owned by the job until the work
     * finishes (freed through defer_ops->cancel with the job). */
    const struct af_defer_ops *defer_ops;
    void *defer_arg;

    /* Filled by the backend, or by the I/O thread for a deferred call. */
    /* CALL: what to answer, owned (response, detail); the listener packs
     * the Response envelope straight into the connection's output. */
    struct af_result res;
    uint8_t *reply; /* owned: CLEAR: text for a person; INTERNAL: the bare response;
                       POST: the data handed to the method */
    size_t reply_len;
    int status; /* CLEAR: HTTP status (200, 404); INTERNAL: 0 or -1 */
    uint64_t tag; /* INTERNAL: the main thread's own id for the call */
};

/* Returns a new job of that kind, every other field zero (owned by the
 * caller until pushed; released with af_api_job_free). */
struct af_api_job *af_api_job_new(enum af_api_job_kind kind);
/* Frees job and everything it owns (not owner), cancelling deferred work
 * it still holds. NULL is a no-op. */
void af_api_job_free(struct af_api_job *job);
/* Cancels and forgets the deferred work job holds, if any. */
void af_api_job_free_work(struct af_api_job *job);
/* Makes *res (not DEFER) job's answer: takes its response and detail,
 * leaving res empty. */
void af_api_job_set_result(struct af_api_job *job, struct af_result *res);
/* Makes rpc_error {code, detail} job's answer; detail is copied. */
void af_api_job_set_rpc_error(struct af_api_job *job, int code, const char *detail);

/* The current CLOCK_MONOTONIC time in nanoseconds. */
uint64_t af_api_now_ns(void);

/* A FIFO of jobs plus the eventfd that signals it is non-empty. */
struct af_api_jobq {
    pthread_mutex_t _mu;
    struct af_api_job *_head, *_tail;
    bool _closed;
    bool _sleeping; /* the consumer waits on efd: a push must write it (backend.c) */
    int efd; /* readable while jobs may be waiting; watched by the consumer */
};

/* Returns 0 or -errno. nonblock: the eventfd is O_NONBLOCK (for an event
 * loop); otherwise reads block until a push. */
int af_api_jobq_init(struct af_api_jobq *q, bool nonblock);
/* Frees every job still queued and closes the eventfd. */
void af_api_jobq_release(struct af_api_jobq *q);
/* Appends job (ownership passes to the queue) and wakes the consumer. */
void af_api_jobq_push(struct af_api_jobq *q, struct af_api_job *job);
/* Appends job like af_api_jobq_push() but does not wake the consumer:
 * the job is taken at its next look, which the next ordinary push (or a
 * close) brings about. Returns true when the consumer was waiting, i.e.
 * the job waits for such a push; false when the consumer is bound to look
 * anyway. Order with other pushes holds (one FIFO). */
bool af_api_jobq_push_lazy(struct af_api_jobq *q, struct af_api_job *job);
/* Takes every queued job, oldest first, without touching the eventfd or
 * the waiting flag: for a queue nobody waits on (posted jobs coming back
 * to their poster). */
struct af_api_job *af_api_jobq_take_nowait(struct af_api_jobq *q);
/* The same two without ever waiting for the queue's mutex, for a thread
 * that must not sleep behind the consumer (the front end, on a core it may
 * share with the backend): -1, or NULL, when another thread holds it; the
 * caller tries again later. */
int af_api_jobq_try_push_lazy(struct af_api_jobq *q, struct af_api_job *job);
struct af_api_job *af_api_jobq_try_take(struct af_api_jobq *q);
/* A lazy push of a post (job: AF_API_JOB_POST, reply_cap bytes of buffer,
 * its post fields set) that carries len bytes of data, which join the
 * queue's tail instead when the tail is a post to the same method with the
 * same post_back and room for them (*joined true; job stays the caller's).
 * Otherwise the data is copied into job, which is linked. Never waits for
 * the mutex: -1 when another thread holds it (nothing done); else 1 when
 * the consumer waits (for a push that wakes it), 0 when it does not. */
int af_api_jobq_try_post_join(struct af_api_jobq *q, struct af_api_job *job, const uint8_t *data,
                              size_t len, bool *joined);
/* Marks the queue closed and wakes the consumer. */
void af_api_jobq_close(struct af_api_jobq *q);
/* For a consumer that waits on efd in an event loop, when efd is readable:
 * takes every queued job, oldest first (ownership passes to the caller),
 * after consuming the eventfd's count, and marks the consumer as waiting on
 * efd again. *closed tells whether af_api_jobq_close() was called. Blocks
 * only if the eventfd is blocking and nothing was signalled yet. */
struct af_api_job *af_api_jobq_take_all(struct af_api_jobq *q, bool *closed);
/* For a consumer thread that does nothing else (the backend): takes every
 * queued job, oldest first, blocking on the (blocking) eventfd only while
 * the queue is empty and not closed. */
struct af_api_job *af_api_jobq_wait_all(struct af_api_jobq *q, bool *closed);

/* The backend thread. */
struct af_backend;

/*
 * Starts the backend thread, which calls create() with opts for every
 * service of the table services[0..n_services) (NULL entries skipped) and
 * then serves inbox, pushing finished jobs on outbox, and the I/O thread
 * (iothread.h) that finishes deferred calls and pushes them on outbox too. Returns once every
 * create() has returned. opts and the table must stay valid until
 * af_backend_stop(); inbox and outbox are borrowed and must outlive the
 * backend. mainq (may be NULL) receives the replies of internal calls and
 * the notices for the main thread; borrowed likewise. Returns 0 or -errno.
 */
int af_backend_start(const struct af_api_options *opts, const struct af_service *const *services,
                     size_t n_services, struct af_api_jobq *inbox, struct af_api_jobq *outbox,
                     struct af_api_jobq *mainq, struct af_backend **out);

/* Closes the inbox, lets the call in progress finish, drops the jobs still
 * queued, calls every service's destroy() and joins; then stops the I/O
 * thread, cancelling the deferred calls in progress. NULL is a no-op. */
void af_backend_stop(struct af_backend *be);

#endif
