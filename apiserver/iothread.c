/*
 * iothread — the API I/O thread (iothread.h). The rules for crossing
 * threads are those of backend.c, whose queue type this file reuses:
 *
 *  - The backend pushes deferred jobs on io->inbox (an af_api_jobq whose
 *    non-blocking eventfd this thread's loop watches) and forgets them.
 *  - This thread owns a job from the moment it takes it off the inbox until
 *    it pushes it, result set, on the listener's outbox. The outbox thus
 *    has two producers (the backend and this thread); its mutex is what makes
 *    that safe, and the listener cannot tell who answered.
 *  - Everything else here (the event loop, the resolver, the list of calls
 *    in progress, the work's own sockets and timers, the state kept between
 *    calls by af_io_local) is touched by this thread only, and after it was
 *    joined by the thread that stops it.
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include <event2/dns.h>
#include <event2/event.h>

#include "apiserver/envelope.h"
#include "apiserver/iothread.h"
#include "apiserver/service.h"
#include "common/log.h"
#include "common/xalloc.h"

struct af_io_call {
    struct af_io_call *prev, *next; /* io->calls */
    struct af_io *io;
    struct af_api_job *job; /* its defer_arg is the work's state until finished */
    uint64_t start_ns;
};

struct af_io {
    pthread_t thread;
    bool started;
    struct event_base *base;
    struct evdns_base *dns; /* made on first use */
    bool dns_failed;
    struct af_api_jobq inbox; /* backend -> this thread */
    bool inbox_ok;
    struct af_api_jobq *outbox; /* this thread -> listener */
    struct event *inbox_ev;
    struct af_io_call *calls; /* in progress */
    size_t n_calls;
    struct {
        const struct af_io_local_ops *ops;
        void *state;
    } locals[AF_IO_MAX_LOCALS]; /* af_io_local; the first n_locals are set */
    size_t n_locals;
};

struct event_base *af_io_base(struct af_io_call *call)
{
    return call->io->base;
}

struct evdns_base *af_io_dns(struct af_io_call *call)
{
    struct af_io *io = call->io;
    if (!io->dns && !io->dns_failed) {
        /* Reads /etc/resolv.conf and /etc/hosts; made only when a call
         * first needs a name resolved, so a server that never fetches never
         * pays for it. */
        io->dns = evdns_base_new(io->base, EVDNS_BASE_INITIALIZE_NAMESERVERS);
        io->dns_failed = io->dns == NULL;
        if (io->dns_failed)
            af_warn("api: cannot set up the DNS resolver for external calls");
    }
    return io->dns;
}

void *af_io_local(struct af_io_call *call, const struct af_io_local_ops *ops)
{
    struct af_io *io = call->io;
    for (size_t i = 0; i < io->n_locals; i++)
        if (io->locals[i].ops == ops)
            return io->locals[i].state;
    if (io->n_locals == AF_IO_MAX_LOCALS) {
        af_warn("api: no room for more state kept on the I/O thread (%d kinds)",
                AF_IO_MAX_LOCALS);
        return NULL;
    }
    void *state = ops->create(io->base);
    io->locals[io->n_locals].ops = ops;
    io->locals[io->n_locals].state = state;
    io->n_locals++;
    return state;
}

static void call_unlink(struct af_io_call *call)
{
    struct af_io *io = call->io;
    if (call->prev)
        call->prev->next = call->next;
    else
        io->calls = call->next;
    if (call->next)
        call->next->prev = call->prev;
    io->n_calls--;
}

void af_io_finish(struct af_io_call *call, struct af_result *res)
{
    struct af_io *io = call->io;
    struct af_api_job *job = call->job;
    const char *what = job->defer_ops->what;
    /* From here on the work frees its own state. */
    job->defer_arg = NULL;
    job->defer_ops = NULL;
    if (res->kind == AF_RESULT_DEFER) {
        /* A bug in the work; answer rather than strand the caller. */
        res->kind = AF_RESULT_RPC_ERROR;
        res->code = AF_RPC_UNKNOWN;
    }
    enum af_result_kind kind = res->kind;
    int code = res->code;
    af_api_job_set_result(job, res);
    if (af_log_enabled(AF_LOG_DEBUG)) {
        uint64_t us = (af_api_now_ns() - call->start_ns) / 1000;
        af_debug("api: %s finished: %s %d (%" PRIu64 " us on the I/O thread)", what,
                 kind == AF_RESULT_OK          ? "ok"
                 : kind == AF_RESULT_APP_ERROR ? "application_error"
                                               : "rpc_error",
                 code, us);
    }
    call_unlink(call);
    free(call);
    af_api_jobq_push(io->outbox, job);
}

/* Answers job at once with an rpc_error, its work never started. */
static void refuse(struct af_io *io, struct af_api_job *job, int code, const char *detail)
{
    af_api_job_free_work(job);
    af_api_job_set_rpc_error(job, code, detail);
    af_api_jobq_push(io->outbox, job);
}

static void start_job(struct af_io *io, struct af_api_job *job)
{
    if (io->n_calls >= AF_IO_MAX_CALLS) {
        af_warn("api: %s refused: %d calls are already waiting on external I/O",
                job->defer_ops->what, AF_IO_MAX_CALLS);
        refuse(io, job, AF_RPC_OVER_QUOTA,
               "too many calls waiting on external I/O at once; retry later");
        return;
    }
    struct af_io_call *call = af_xcalloc(1, sizeof(*call));
    call->io = io;
    call->job = job;
    call->start_ns = af_api_now_ns();
    call->next = io->calls;
    if (io->calls)
        io->calls->prev = call;
    io->calls = call;
    io->n_calls++;
    /* start() may finish (and free) call before it returns. */
    job->defer_ops->start(job->defer_arg, call);
}

static void on_inbox(evutil_socket_t fd, short what, void *arg)
{
    struct af_io *io = arg;
    bool closed;
    struct af_api_job *list = af_api_jobq_take_all(&io->inbox, &closed);
    while (list) {
        struct af_api_job *job = list;
        list = job->next;
        if (closed)
            af_api_job_free(job); /* stopping: nobody reads the reply */
        else
            start_job(io, job);
    }
    if (closed)
        event_base_loopbreak(io->base);
}

static void *io_main(void *arg)
{
    struct af_io *io = arg;
    pthread_setname_np(pthread_self(), "af-api-io"); /* top -H, perf, gdb */
    event_base_dispatch(io->base);
    return NULL;
}

static void io_free(struct af_io *io)
{
    /* Work still in progress: cancel it (closing its sockets), then let
     * the loop run the callbacks that cancelling queued (the resolver
     * answers cancelled lookups from the loop) before freeing it. */
    while (io->calls) {
        struct af_io_call *call = io->calls;
        call_unlink(call);
        af_api_job_free(call->job);
        free(call);
    }
    /* Then the state kept between calls (its sockets and timers are on
     * the loop, which must still exist). */
    for (size_t i = io->n_locals; i-- > 0;)
        io->locals[i].ops->destroy(io->locals[i].state);
    io->n_locals = 0;
    if (io->base)
        event_base_loop(io->base, EVLOOP_NONBLOCK);
    if (io->dns)
        evdns_base_free(io->dns, 0);
    if (io->inbox_ev)
        event_free(io->inbox_ev);
    if (io->inbox_ok)
        af_api_jobq_release(&io->inbox);
    if (io->base)
        event_base_free(io->base);
    free(io);
}

int af_io_start(struct af_api_jobq *outbox, struct af_io **out)
{
    struct af_io *io = af_xcalloc(1, sizeof(*io));
    io->outbox = outbox;
    int rc = af_api_jobq_init(&io->inbox, true);
    io->inbox_ok = rc == 0;
    if (rc == 0) {
        io->base = event_base_new();
        if (io->base)
            io->inbox_ev = event_new(io->base, io->inbox.efd, EV_READ | EV_PERSIST, on_inbox, io);
        if (!io->inbox_ev || event_add(io->inbox_ev, NULL) != 0)
            rc = -ENOMEM;
    }
    if (rc == 0)
        rc = -pthread_create(&io->thread, NULL, io_main, io);
    if (rc != 0) {
        io_free(io);
        return rc;
    }
    io->started = true;
    *out = io;
    return 0;
}

void af_io_submit(struct af_io *io, struct af_api_job *job)
{
    af_api_jobq_push(&io->inbox, job);
}

void af_io_stop(struct af_io *io)
{
    if (!io)
        return;
    if (io->started) {
        af_api_jobq_close(&io->inbox);
        pthread_join(io->thread, NULL);
    }
    io_free(io);
}
