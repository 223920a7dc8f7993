/*
 * service — how one App Engine API service plugs into the backend.
 *
 * Every service is one file in apiserver/services/ that defines one
 * `const struct af_service af_service_NAME` with a table of methods. All of
 * them run on the backend thread only, one call at a time: no locks inside
 * services (see apiserver/backend.c for the one place threads cross).
 */
#ifndef AF_SERVICE_H
#define AF_SERVICE_H

#include <stddef.h>
#include <stdint.h>

#include "apiserver/apiserver.h"

/* One call, as decoded from the remote_api.Request envelope. Borrowed: valid
 * only while the handler runs. */
struct af_call {
    const char *service;    /* service_name (field 2) */
    const char *method;     /* method (field 3) */
    const uint8_t *request; /* request (field 4), the encoded service message */
    size_t request_len;
    const char *request_id; /* request_id (field 5); "" when absent */
    /* When the caller gives up (CLOCK_MONOTONIC ns, af_api_now_ns); 0: not
     * known. Deferred work that the caller could no longer see finish
     * (a mail the app would believe unsent) stops by then. */
    uint64_t deadline_ns;
};

enum af_result_kind {
    AF_RESULT_OK,        /* response holds the encoded service response */
    AF_RESULT_APP_ERROR, /* Response.application_error {code, detail} */
    AF_RESULT_RPC_ERROR, /* Response.rpc_error {code, detail} (RpcError codes) */
    AF_RESULT_DEFER,     /* finished later on the API I/O thread: af_result_defer() */
};

struct af_defer_ops;

/* What a handler produces. The handler stores malloc'd buffers here and the
 * backend frees them after encoding the envelope. */
struct af_result {
    enum af_result_kind kind;
    int code;          /* application error code or RpcError code */
    char *detail;      /* malloc'd message for a person, or NULL */
    uint8_t *response; /* malloc'd encoded service response (may be NULL for empty) */
    size_t response_len;
    /* AF_RESULT_DEFER only: how the I/O thread runs the rest of the call,
     * and the work's own state (owned by the deferred call). */
    const struct af_defer_ops *defer_ops;
    void *defer_arg;
    /* Set by a handler (the helpers below leave it alone) when the main
     * thread should hear that this service's state changed, e.g. a task
     * became due earlier than the task runner knows: the backend then sends
     * the main thread a notice (af_api_internal_take, apiserver.h). */
    bool notify_main;
    /* The service the notice names; NULL: the service called. Set when a
     * call changes another service's state: a datastore Commit that adds
     * transactional tasks (apiserver/services/txn_hooks.h). Static string. */
    const char *notify_service;
};

/* remote_api RpcError codes (remote_api.proto, RpcError.ErrorCode). */
enum af_rpc_error {
    AF_RPC_UNKNOWN = 0,
    AF_RPC_CALL_NOT_FOUND = 1,
    AF_RPC_PARSE_ERROR = 2,
    AF_RPC_SECURITY_VIOLATION = 3,
    AF_RPC_OVER_QUOTA = 4,
    AF_RPC_REQUEST_TOO_LARGE = 5,
    AF_RPC_CAPABILITY_DISABLED = 6,
    AF_RPC_FEATURE_DISABLED = 7,
    AF_RPC_BAD_REQUEST = 8,
    AF_RPC_RESPONSE_TOO_LARGE = 9,
    AF_RPC_CANCELLED = 10,
    AF_RPC_REPLAY_ERROR = 11,
    AF_RPC_DEADLINE_EXCEEDED = 12,
};

/* A method handler. `state` is what the service's create() returned. */
typedef void (*af_method_fn)(void *state, const struct af_call *call, struct af_result *res);

struct af_method {
    const char *name; /* e.g. "Get" */
    af_method_fn fn;
};

struct af_service {
    const char *name;                /* service_name on the wire, e.g. "memcache" */
    const struct af_method *methods; /* terminated by an entry with name == NULL */
    /* Called once on the backend thread before any call. May return NULL for
     * a stateless service. Returns the service state. */
    void *(*create)(const struct af_api_options *opts);
    /* POST /clear?stub=NAME: back to the empty state. May be NULL. */
    void (*clear)(void *state);
    /* At shutdown. May be NULL. */
    void (*destroy)(void *state);
    /* Methods only appfront's main thread can call (af_api_internal_call,
     * apiserver.h), never a client: the task runner's way in. The request
     * and response are the service's own encoded messages. May be NULL;
     * terminated like methods. */
    const struct af_method *internal;
};

/* Helpers for handlers. Each sets every field of res. */
void af_result_ok(struct af_result *res, uint8_t *response, size_t len); /* takes response */
void af_result_app_error(struct af_result *res, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
void af_result_rpc_error(struct af_result *res, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/*
 * Packs a protobuf-c message into res as AF_RESULT_OK. Use as
 *   af_result_pack(res, &msg.base);
 */
struct ProtobufCMessage;
void af_result_pack(struct af_result *res, const struct ProtobufCMessage *msg);

/*
 * Deferred calls. Slow external I/O (urlfetch, SMTP) must not stall the
 * backend thread (DESIGN.md), so a handler that needs it validates the call
 * on the backend thread, packs what the work needs into arg and calls
 * af_result_defer(res, ops, arg). The backend then hands the call to the
 * API I/O thread (apiserver/iothread.c): one libevent loop on which any
 * number of such calls run at once, while the backend goes on with the next
 * call. There ops->start() begins the work, which ends by calling
 * af_io_finish() exactly once, from start() itself or from a later callback
 * on the same loop; the reply then reaches the caller like any other.
 *
 * arg must not point into service state: the backend thread goes on
 * touching that. Everything the work needs is copied into arg.
 */
struct event_base;
struct evdns_base;
struct af_io_call; /* opaque: one deferred call on the I/O thread */

struct af_defer_ops {
    const char *what; /* for log lines, e.g. "urlfetch.Fetch" */
    /* On the I/O thread: begin the work. */
    void (*start)(void *arg, struct af_io_call *call);
    /* Frees arg and everything its work holds (sockets, timers) without
     * finishing: the server is stopping, or the work never started. Called
     * on the I/O thread, or after it was joined. */
    void (*cancel)(void *arg);
};

/* Sets res to AF_RESULT_DEFER; arg's ownership passes to the deferred call
 * (it is freed through ops->cancel unless the work finishes). */
void af_result_defer(struct af_result *res, const struct af_defer_ops *ops, void *arg);

/* For deferred work, on the I/O thread: the thread's event loop, and a DNS
 * resolver on it (made on first use; NULL when it cannot be made). Both are
 * borrowed and live as long as the I/O thread. */
struct event_base *af_io_base(struct af_io_call *call);
struct evdns_base *af_io_dns(struct af_io_call *call);

/*
 * State that deferred work of one kind keeps on the I/O thread from one call
 * to the next (urlfetch's idle connections). ops names the kind: the first
 * af_io_local() with it makes the state with create(base); destroy() frees
 * it when the I/O thread stops, after the work still in progress was
 * cancelled and before the loop is freed. Only the I/O thread touches it.
 */
struct af_io_local_ops {
    void *(*create)(struct event_base *base);
    void (*destroy)(void *state);
};
/* At most this many kinds of local state. */
#define AF_IO_MAX_LOCALS 4

/* On the I/O thread: the state of ops's kind (borrowed; it lives as long as
 * the I/O thread), or NULL when AF_IO_MAX_LOCALS kinds already have one. */
void *af_io_local(struct af_io_call *call, const struct af_io_local_ops *ops);

/*
 * On the I/O thread: the work is done and res is the call's result (its
 * buffers are taken, as from a handler; kind is OK, APP_ERROR or
 * RPC_ERROR). The reply goes to the caller. After this returns, call is
 * gone and arg belongs to the work again, which frees it.
 */
void af_io_finish(struct af_io_call *call, struct af_result *res);

/* The registry: every service the backend serves
 * (apiserver/services/registry.c). af_n_services entries; an entry may be
 * NULL (a service not built in) and is then skipped. */
extern const struct af_service *const af_services[];
extern const size_t af_n_services;

#endif
