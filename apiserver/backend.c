/*
 * backend — the hand-off queue and the services backend thread.
 *
 * Threads cross here and nowhere else. The rules:
 *
 *  - Two queues, struct af_api_jobq: the inbox (listener → backend) and the
 *    outbox (backend → listener). Each is a linked list guarded by its own
 *    mutex plus an eventfd used as a counting wakeup. A queue's mutex is held
 *    only to link or unlink jobs, never across a call, an allocation or a
 *    write(2) to the eventfd, so neither thread ever waits on the other's
 *    work. No code path holds both mutexes.
 *  - A job is owned by one thread at a time: the pusher gives it up in
 *    af_api_jobq_push() and must not touch it afterwards; the thread that takes
 *    it in af_api_jobq_take_all() or af_api_jobq_wait_all() owns it from
 *    then on.
 *  - Wake-ups are written only when needed. Each queue has a flag,
 *    _sleeping, set by the consumer under the mutex when it is about to wait
 *    on the eventfd without looking at the list again: in
 *    af_api_jobq_take_all(), after taking the list (an event-loop consumer
 *    goes back to its loop), and in af_api_jobq_wait_all() only after
 *    finding the list empty (the backend keeps taking jobs without a system
 *    call while there are any). A producer links the job and, under the same
 *    mutex, tests and clears the flag; it writes the eventfd (after
 *    unlocking) only if the flag was set. So a burst of pushes costs one
 *    write, and a busy backend costs none.
 *    Why no job is stranded. A "look" is the consumer taking the list under
 *    the mutex. The invariant: whenever _sleeping is clear, the consumer is
 *    bound to look again without needing a new write — either it has not
 *    waited since its last look (wait_all found jobs: it looks again before
 *    it blocks), or the producer that cleared the flag owes a write, made
 *    after that producer's unlock and hence not consumed by any read before
 *    it (the eventfd counter keeps it until the consumer reads), and every
 *    read is followed by a look. A producer links under the mutex: if the
 *    flag is set, the consumer is waiting or about to, and the producer
 *    clears the flag and writes, restoring the invariant; if it is clear,
 *    the invariant promises a look, which comes after the link because both
 *    take the mutex. So every job is taken by a later look. The cost of a
 *    race is at worst one wakeup that finds the list empty (the write came
 *    after a look that already took the job), which is harmless.
 *  - The backend blocks in read(2) on the inbox's eventfd. The listener
 *    watches the outbox's (non-blocking) eventfd from its event loop.
 *  - job->owner is the listener's connection. The backend never dereferences
 *    it; the listener keeps the connection alive (marked dead if its client
 *    went away) until the job comes back, so a late reply is dropped safely.
 *  - Service state (what create() returned) is touched by the backend thread
 *    only, one call at a time: services need no locks.
 *  - Deferred calls (slow external I/O such as urlfetch; service.h,
 *    af_result_defer) take a third queue of the same kind: the backend
 *    pushes the job, carrying the work's own state (never service state), on
 *    the I/O thread's inbox (apiserver/iothread.c), whose libevent loop
 *    watches its eventfd and runs many such calls at once. When the work is
 *    done the I/O thread sets the job's result and pushes the job on the same
 *    outbox as the backend: the outbox has two producers and one consumer,
 *    under its mutex like any queue. A job still belongs to one thread at a
 *    time, and the backend never waits on the I/O thread or the network.
 *  - The main thread (the task runner, proxy/taskrunner.c) reaches services
 *    through a fourth queue of the same kind, the main queue, whose
 *    (non-blocking) eventfd the main event loop watches. The main thread
 *    pushes AF_API_JOB_INTERNAL jobs on the backend's inbox, like the
 *    listener; the backend runs them through the service's `internal`
 *    table (unreachable from clients) and pushes them back on the main
 *    queue instead of the outbox. When a handler sets
 *    af_result.notify_main, the backend pushes an AF_API_JOB_NOTICE on the
 *    main queue, at most one at a time: none is sent again until the main
 *    thread's next internal call has run, which by then sees the change.
 *    So the main queue never grows while nobody reads it.
 *  - The main thread also posts one-way jobs (AF_API_JOB_POST: the front
 *    end's finished requests for the logservice, proxy/reqlog.c) on the
 *    inbox, usually with af_api_jobq_push_lazy(), which links the job
 *    without waking the backend: it is taken at the backend's next look,
 *    in FIFO order with every call (so a logservice Read queued after it
 *    sees it). The poster bounds what it leaves waiting and pushes with a
 *    wake-up once that bound is reached. No answer comes back, but the
 *    job itself does, on a fifth queue nobody waits on (no eventfd write,
 *    af_api_jobq_push_lazy / af_api_jobq_take_nowait): the main thread
 *    reuses it and its buffer, so what the main thread allocates is freed
 *    by the main thread. Once the inbox is closed (shutdown) the posts
 *    still waiting are run, then freed here: a lazy post is never woken
 *    for, and its records must reach the logservice (and --logs_path's
 *    file) before it goes.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include "apiserver/backend.h"
#include "apiserver/envelope.h"
#include "apiserver/iothread.h"
#include "apiserver/peer.h"
#include "apiserver/service.h"
#include "common/log.h"
#include "common/xalloc.h"

uint64_t af_api_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

void af_api_job_free_work(struct af_api_job *job)
{
    if (job->defer_arg && job->defer_ops && job->defer_ops->cancel)
        job->defer_ops->cancel(job->defer_arg);
    job->defer_arg = NULL;
    job->defer_ops = NULL;
}

struct af_api_job *af_api_job_new(enum af_api_job_kind kind)
{
    /* malloc, not calloc: glibc's calloc bypasses the thread cache, and a
     * job is allocated per call. */
    struct af_api_job *job = af_xmalloc(sizeof(*job));
    *job = (struct af_api_job){.kind = kind};
    return job;
}

void af_api_job_free(struct af_api_job *job)
{
    if (!job)
        return;
    af_api_job_free_work(job);
    af_envelope_arena_release(&job->arena);
    free(job->res.response);
    free(job->res.detail);
    free(job->stub);
    free(job->reply);
    free(job);
}

void af_api_job_set_result(struct af_api_job *job, struct af_result *res)
{
    free(job->res.response);
    free(job->res.detail);
    job->res = (struct af_result){.kind = res->kind,
                                  .code = res->code,
                                  .detail = res->detail,
                                  .response = res->response,
                                  .response_len = res->response_len};
    res->detail = NULL;
    res->response = NULL;
    res->response_len = 0;
}

void af_api_job_set_rpc_error(struct af_api_job *job, int code, const char *detail)
{
    struct af_result res = {
        .kind = AF_RESULT_RPC_ERROR, .code = code, .detail = detail ? af_xstrdup(detail) : NULL};
    af_api_job_set_result(job, &res);
}

int af_api_jobq_init(struct af_api_jobq *q, bool nonblock)
{
    memset(q, 0, sizeof(*q));
    q->efd = eventfd(0, EFD_CLOEXEC | (nonblock ? EFD_NONBLOCK : 0));
    if (q->efd < 0)
        return -errno;
    q->_sleeping = true; /* the consumer starts out waiting */
    pthread_mutex_init(&q->_mu, NULL);
    return 0;
}

void af_api_jobq_release(struct af_api_jobq *q)
{
    struct af_api_job *job = q->_head;
    while (job) {
        struct af_api_job *next = job->next;
        af_api_job_free(job);
        job = next;
    }
    q->_head = q->_tail = NULL;
    if (q->efd >= 0)
        close(q->efd);
    q->efd = -1;
    pthread_mutex_destroy(&q->_mu);
}

static void jobq_wake(struct af_api_jobq *q)
{
    uint64_t one = 1;
    /* Can only fail if the counter would overflow 2^64-2, i.e. never; the
     * counter being non-zero is all that matters anyway. */
    ssize_t n = write(q->efd, &one, sizeof(one));
    (void)n;
}

/* Links job at the tail of q, whose mutex the caller holds. */
static void jobq_link(struct af_api_jobq *q, struct af_api_job *job)
{
    job->next = NULL;
    if (q->_tail)
        q->_tail->next = job;
    else
        q->_head = job;
    q->_tail = job;
}

void af_api_jobq_push(struct af_api_jobq *q, struct af_api_job *job)
{
    pthread_mutex_lock(&q->_mu);
    jobq_link(q, job);
    bool wake = q->_sleeping;
    q->_sleeping = false;
    pthread_mutex_unlock(&q->_mu);
    if (wake)
        jobq_wake(q);
}

bool af_api_jobq_push_lazy(struct af_api_jobq *q, struct af_api_job *job)
{
    /* The invariant at the top holds: the flag is left as it is, so a
     * waiting consumer is still owed a write by the next producer that
     * finds it set, and that write's look takes this job too. */
    pthread_mutex_lock(&q->_mu);
    jobq_link(q, job);
    bool waiting = q->_sleeping;
    pthread_mutex_unlock(&q->_mu);
    return waiting;
}

int af_api_jobq_try_push_lazy(struct af_api_jobq *q, struct af_api_job *job)
{
    if (pthread_mutex_trylock(&q->_mu) != 0)
        return -1;
    jobq_link(q, job);
    bool waiting = q->_sleeping;
    pthread_mutex_unlock(&q->_mu);
    return waiting;
}

int af_api_jobq_try_post_join(struct af_api_jobq *q, struct af_api_job *job, const uint8_t *data,
                              size_t len, bool *joined)
{
    if (pthread_mutex_trylock(&q->_mu) != 0)
        return -1;
    /* The tail is still the queue's (the consumer takes jobs only under
     * this mutex), so its buffer can still grow. */
    struct af_api_job *t = q->_tail;
    *joined = t && t->kind == AF_API_JOB_POST && t->post_back == job->post_back &&
              t->post_service == job->post_service && t->post_method == job->post_method &&
              t->reply_cap - t->reply_len >= len;
    if (*joined) {
        memcpy(t->reply + t->reply_len, data, len);
        t->reply_len += len;
    } else {
        memcpy(job->reply, data, len);
        job->reply_len = len;
        jobq_link(q, job);
    }
    bool waiting = q->_sleeping;
    pthread_mutex_unlock(&q->_mu);
    return waiting;
}

struct af_api_job *af_api_jobq_try_take(struct af_api_jobq *q)
{
    if (pthread_mutex_trylock(&q->_mu) != 0)
        return NULL;
    struct af_api_job *list = q->_head;
    q->_head = q->_tail = NULL;
    pthread_mutex_unlock(&q->_mu);
    return list;
}

struct af_api_job *af_api_jobq_take_nowait(struct af_api_jobq *q)
{
    pthread_mutex_lock(&q->_mu);
    struct af_api_job *list = q->_head;
    q->_head = q->_tail = NULL;
    pthread_mutex_unlock(&q->_mu);
    return list;
}

void af_api_jobq_close(struct af_api_jobq *q)
{
    pthread_mutex_lock(&q->_mu);
    q->_closed = true;
    q->_sleeping = false;
    pthread_mutex_unlock(&q->_mu);
    jobq_wake(q); /* unconditionally: closing is rare and must be seen */
}

static void jobq_read_wakeup(struct af_api_jobq *q)
{
    uint64_t count;
    ssize_t n;
    do
        n = read(q->efd, &count, sizeof(count));
    while (n < 0 && errno == EINTR);
}

struct af_api_job *af_api_jobq_take_all(struct af_api_jobq *q, bool *closed)
{
    jobq_read_wakeup(q);
    pthread_mutex_lock(&q->_mu);
    struct af_api_job *list = q->_head;
    q->_head = q->_tail = NULL;
    *closed = q->_closed;
    /* The caller goes back to waiting on the eventfd. */
    q->_sleeping = true;
    pthread_mutex_unlock(&q->_mu);
    return list;
}

struct af_api_job *af_api_jobq_wait_all(struct af_api_jobq *q, bool *closed)
{
    pthread_mutex_lock(&q->_mu);
    while (!q->_head && !q->_closed) {
        q->_sleeping = true;
        pthread_mutex_unlock(&q->_mu);
        jobq_read_wakeup(q);
        pthread_mutex_lock(&q->_mu);
    }
    struct af_api_job *list = q->_head;
    q->_head = q->_tail = NULL;
    *closed = q->_closed;
    pthread_mutex_unlock(&q->_mu);
    return list;
}

/* ---- the backend thread ------------------------------------------------ */

struct af_backend {
    pthread_t thread;
    const struct af_api_options *opts;
    const struct af_service *const *services; /* the dispatch table */
    size_t n_services;
    struct af_api_jobq *inbox, *outbox;
    void **states; /* n_services entries: what each create() returned */
    struct af_io *io; /* deferred calls go there; NULL: none (fuzz driver) */
    struct af_api_jobq *mainq; /* internal replies and notices; NULL: none */
    bool notice_out; /* a notice is on mainq and no internal call ran since */

    pthread_mutex_t mu; /* guards ready, for af_backend_start() only */
    pthread_cond_t cv;
    bool ready;
};

/* Returns the index of the service called name in the table, or -1. A
 * linear scan: there are about ten services and strcmp fails fast. */
static int find_service(const struct af_backend *be, const char *name)
{
    for (size_t i = 0; i < be->n_services; i++)
        if (be->services[i] && strcmp(be->services[i]->name, name) == 0)
            return (int)i;
    return -1;
}

static const struct af_method *find_method(const struct af_service *svc, const char *name)
{
    for (const struct af_method *m = svc->methods; m && m->name; m++)
        if (strcmp(m->name, name) == 0)
            return m;
    return NULL;
}

/* Tells the main thread that service `name` asked to be heard, unless a
 * notice is already out (see the rules at the top). */
static void notify_main(struct af_backend *be, const char *name)
{
    if (!be->mainq || be->notice_out)
        return;
    struct af_api_job *job = af_api_job_new(AF_API_JOB_NOTICE);
    job->stub = af_xstrdup(name);
    be->notice_out = true;
    af_api_jobq_push(be->mainq, job);
}

/* Runs one call. Returns true when the call was deferred: the job now
 * belongs to the I/O thread and the caller must not touch it. */
static bool run_call(struct af_backend *be, struct af_api_job *job)
{
    struct af_call call;
    af_envelope_call_from_request(job->req, &call);
    call.deadline_ns = job->deadline_ns;
    uint64_t start = af_api_now_ns();
    char detail[256];

    /* A call that waited past its deadline is not run: its caller has given
     * up (or is about to), and running it anyway would only make the queue
     * behind it later still. */
    if (start > job->deadline_ns) {
        snprintf(detail, sizeof(detail), "%.64s.%.64s: deadline passed while queued", call.service,
                 call.method);
        af_debug("api: %s", detail);
        af_api_job_set_rpc_error(job, AF_RPC_DEADLINE_EXCEEDED, detail);
        return false;
    }

    int idx = find_service(be, call.service);
    if (idx < 0) {
        snprintf(detail, sizeof(detail), "the API server has no service named \"%.64s\"",
                 call.service);
        af_debug("api: %s", detail);
        af_api_job_set_rpc_error(job, AF_RPC_CALL_NOT_FOUND, detail);
        return false;
    }
    const struct af_method *m = find_method(be->services[idx], call.method);
    if (!m || !m->fn) {
        snprintf(detail, sizeof(detail), "service \"%s\" has no method \"%.64s\"",
                 be->services[idx]->name, call.method);
        af_debug("api: %s", detail);
        af_api_job_set_rpc_error(job, AF_RPC_CALL_NOT_FOUND, detail);
        return false;
    }

    /* Zeroed is an empty successful response: the natural outcome of a
     * method whose response is VoidProto. */
    struct af_result res = {0};
    m->fn(be->states[idx], &call, &res);
    if (res.kind == AF_RESULT_DEFER) {
        job->defer_ops = res.defer_ops;
        job->defer_arg = res.defer_arg;
        if (be->io) {
            af_debug("api: %s.%s request_id=%.64s deferred to the I/O thread",
                     be->services[idx]->name, m->name, call.request_id);
            af_io_submit(be->io, job);
            return true;
        }
        af_api_job_free_work(job);
        af_api_job_set_rpc_error(job, AF_RPC_FEATURE_DISABLED, "this server runs no external I/O");
        return false;
    }
    enum af_result_kind kind = res.kind;
    int code = res.code;
    af_api_job_set_result(job, &res);
    if (res.notify_main)
        notify_main(be, res.notify_service ? res.notify_service : be->services[idx]->name);

    if (af_log_enabled(AF_LOG_DEBUG)) {
        uint64_t us = (af_api_now_ns() - start) / 1000;
        af_debug("api: %s.%s request_id=%.64s %s %d (%" PRIu64 " us)", be->services[idx]->name,
                 m->name, call.request_id,
                 kind == AF_RESULT_OK          ? "ok"
                 : kind == AF_RESULT_APP_ERROR ? "application_error"
                                               : "rpc_error",
                 code, us);
    }
    return false;
}

/* Runs an internal call from the main thread: the service's `internal`
 * table, no deadline, the bare service response as the reply. */
static void run_internal(struct af_backend *be, struct af_api_job *job)
{
    struct af_call call;
    af_envelope_call_from_request(job->req, &call);
    be->notice_out = false; /* this call sees whatever the notice was about */
    job->status = -1;
    int idx = find_service(be, call.service);
    const struct af_method *m = NULL;
    if (idx >= 0)
        for (m = be->services[idx]->internal; m && m->name; m++)
            if (strcmp(m->name, call.method) == 0)
                break;
    if (!m || !m->name || !m->fn) {
        af_error("api: internal call %.64s.%.64s: no such method", call.service, call.method);
        return;
    }
    struct af_result res = {0};
    m->fn(be->states[idx], &call, &res);
    if (res.kind == AF_RESULT_OK) {
        job->status = 0;
        job->reply = res.response;
        job->reply_len = res.response_len;
        res.response = NULL;
    } else {
        /* An application error is an answer the caller expected and shows
         * ("no such queue" for a mistyped console URL); only an RPC error
         * is appfront's own failure. */
        af_log(res.kind == AF_RESULT_APP_ERROR ? AF_LOG_DEBUG : AF_LOG_ERROR,
               "api: internal call %s.%s failed: %s", be->services[idx]->name, m->name,
               res.detail ? res.detail : "no detail");
        /* The caller may show the failure to a person (the admin console:
         * "no such queue"): its kind and code go back, its detail as the
         * reply's bytes. */
        job->res.kind = res.kind;
        job->res.code = res.code;
        if (res.detail) {
            job->reply_len = strlen(res.detail);
            job->reply = (uint8_t *)res.detail;
            res.detail = NULL;
        }
        if (res.kind == AF_RESULT_DEFER) {
            job->defer_ops = res.defer_ops;
            job->defer_arg = res.defer_arg;
            af_api_job_free_work(job);
        }
    }
    free(res.response);
    free(res.detail);
}

/* Runs a one-way post from the main thread (AF_API_JOB_POST): the data
 * goes to the service's internal method, which copies what it keeps;
 * there is no reply. */
static void run_post(struct af_backend *be, struct af_api_job *job)
{
    int idx = find_service(be, job->post_service);
    const struct af_method *m = NULL;
    if (idx >= 0)
        for (m = be->services[idx]->internal; m && m->name; m++)
            if (strcmp(m->name, job->post_method) == 0)
                break;
    if (!m || !m->name || !m->fn) {
        af_error("api: post to %.64s.%.64s: no such method", job->post_service, job->post_method);
        return;
    }
    struct af_call call = {
        .service = be->services[idx]->name,
        .method = m->name,
        .request = job->reply,
        .request_len = job->reply_len,
        .request_id = "",
    };
    struct af_result res = {0};
    m->fn(be->states[idx], &call, &res);
    if (res.kind != AF_RESULT_OK)
        af_error("api: post to %s.%s failed: %s", call.service, call.method,
                 res.detail ? res.detail : "no detail");
    if (res.kind == AF_RESULT_DEFER) {
        job->defer_ops = res.defer_ops;
        job->defer_arg = res.defer_arg;
        af_api_job_free_work(job);
    }
    free(res.response);
    free(res.detail);
}

static void run_clear(struct af_backend *be, struct af_api_job *job)
{
    char *text;
    if (!job->stub) {
        for (size_t i = 0; i < be->n_services; i++)
            if (be->services[i] && be->services[i]->clear)
                be->services[i]->clear(be->states[i]);
        text = af_xstrdup("cleared all services\n");
        job->status = 200;
    } else {
        int idx = find_service(be, job->stub);
        if (idx < 0) {
            text = af_xasprintf("no service named \"%.64s\"\n", job->stub);
            job->status = 404;
        } else {
            if (be->services[idx]->clear)
                be->services[idx]->clear(be->states[idx]);
            text = af_xasprintf("cleared %s\n", be->services[idx]->name);
            job->status = 200;
        }
    }
    af_info("api: %.*s", (int)strcspn(text, "\n"), text);
    job->reply = (uint8_t *)text;
    job->reply_len = strlen(text);
}

static void *backend_main(void *arg)
{
    struct af_backend *be = arg;
    pthread_setname_np(pthread_self(), "af-backend"); /* top -H, perf, gdb */

    for (size_t i = 0; i < be->n_services; i++)
        if (be->services[i] && be->services[i]->create)
            be->states[i] = be->services[i]->create(be->opts);
    /* Services that call one another (the blobstore's metadata live in the
     * datastore) reach each other through this thread's table. */
    af_peer_bind(be->services, be->states, be->n_services);
    pthread_mutex_lock(&be->mu);
    be->ready = true;
    pthread_cond_signal(&be->cv);
    pthread_mutex_unlock(&be->mu);

    for (;;) {
        bool closed;
        struct af_api_job *list = af_api_jobq_wait_all(be->inbox, &closed);
        while (list) {
            struct af_api_job *job = list;
            list = job->next;
            if (closed) {
                /* Shutting down: nobody will read the reply. A post is
                 * still run: it is the front end's last finished requests
                 * (proxy/reqlog.c, af_reqlog_stop), which --logs_path
                 * must commit on a clean shutdown. */
                if (job->kind == AF_API_JOB_POST)
                    run_post(be, job);
                af_api_job_free(job);
                continue;
            }
            if (job->kind == AF_API_JOB_CALL) {
                if (run_call(be, job))
                    continue; /* the I/O thread answers it */
            } else if (job->kind == AF_API_JOB_POST) {
                /* Back to the poster, whose thread allocated it: memory
                 * made on one thread and freed on another drifts. */
                run_post(be, job);
                if (job->post_back)
                    af_api_jobq_push_lazy(job->post_back, job);
                else
                    af_api_job_free(job);
                continue;
            } else if (job->kind == AF_API_JOB_INTERNAL) {
                run_internal(be, job);
                if (be->mainq)
                    af_api_jobq_push(be->mainq, job);
                else
                    af_api_job_free(job);
                continue;
            } else {
                run_clear(be, job);
            }
            af_api_jobq_push(be->outbox, job);
        }
        if (closed)
            break;
    }

    af_peer_bind(NULL, NULL, 0);
    for (size_t i = 0; i < be->n_services; i++)
        if (be->services[i] && be->services[i]->destroy)
            be->services[i]->destroy(be->states[i]);
    return NULL;
}

int af_backend_start(const struct af_api_options *opts, const struct af_service *const *services,
                     size_t n_services, struct af_api_jobq *inbox, struct af_api_jobq *outbox,
                     struct af_api_jobq *mainq, struct af_backend **out)
{
    struct af_backend *be = af_xcalloc(1, sizeof(*be));
    be->opts = opts;
    be->services = services;
    be->n_services = n_services;
    be->inbox = inbox;
    be->outbox = outbox;
    be->mainq = mainq;
    be->states = af_xcalloc(n_services ? n_services : 1, sizeof(void *));
    int rc = af_io_start(outbox, &be->io);
    if (rc < 0) {
        free(be->states);
        free(be);
        return rc;
    }
    pthread_mutex_init(&be->mu, NULL);
    pthread_cond_init(&be->cv, NULL);

    rc = pthread_create(&be->thread, NULL, backend_main, be);
    if (rc != 0) {
        af_io_stop(be->io);
        pthread_cond_destroy(&be->cv);
        pthread_mutex_destroy(&be->mu);
        free(be->states);
        free(be);
        return -rc;
    }
    pthread_mutex_lock(&be->mu);
    while (!be->ready)
        pthread_cond_wait(&be->cv, &be->mu);
    pthread_mutex_unlock(&be->mu);
    *out = be;
    return 0;
}

void af_backend_stop(struct af_backend *be)
{
    if (!be)
        return;
    af_api_jobq_close(be->inbox);
    pthread_join(be->thread, NULL);
    /* After the backend: it was the one feeding the I/O thread. */
    af_io_stop(be->io);
    pthread_cond_destroy(&be->cv);
    pthread_mutex_destroy(&be->mu);
    free(be->states);
    free(be);
}
