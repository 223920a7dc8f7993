/*
 * exchange — the layouts shared by the client side (proxy/conn.c) and the
 * instance side (proxy/upstream.c) of one proxied request. Internal to the
 * front end.
 *
 * Ownership: a connection owns at most one exchange at a time (requests on
 * a connection are served in order; pipelined ones wait in the input
 * buffer). An exchange holds, while set: one slot and one reference on its
 * instance, and exclusive use of one upstream connection.
 *
 * Freeing: every callback that can reach a connection brackets its work
 * with af_conn_enter()/af_conn_leave(); a connection closed meanwhile is
 * freed by the outermost af_conn_leave(), never under a caller's feet.
 */
#ifndef AF_EXCHANGE_H
#define AF_EXCHANGE_H

#include <http_parser.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/queue.h>
#include <sys/time.h>

#include "proxy/headers.h"
#include "proxy/timeouts.h"
#include "proxy/module.h"
#include "proxy/strict.h"
#include "proxy/stream.h"

struct af_server;
struct af_listener;
struct sockaddr;
struct af_instance;
struct event;

/* Accumulates header fields that http-parser may hand over in pieces. */
struct af_head_acc {
    char *buf;
    size_t len;
    size_t cap;
    size_t name_len;
    bool in_value;
};

enum af_conn_state {
    AF_CONN_HEAD,     /* reading a request head, or idle between requests */
    AF_CONN_EXCHANGE, /* one request being served */
    AF_CONN_CLOSING,  /* flushing the last response, then close */
};

struct af_conn {
    LIST_ENTRY(af_conn) link;
    struct af_server *srv;
    struct af_listener *lst;
    struct af_stream s; /* the client socket and its buffers */
    http_parser parser;
    enum af_conn_state state;
    struct af_exchange *ex;
    struct af_timeout timeout; /* on srv->head_timeouts or srv->idle_timeouts */
    char peer_ip[46]; /* INET6_ADDRSTRLEN */
    size_t head_bytes;
    unsigned n_headers;
    int head_error; /* status to answer when the parser stopped on a limit */
    struct af_strict strict; /* RFC 9112 framing, checked before the parser */
    size_t scanned;          /* input bytes (from the front) already checked */
    const char *strict_why;  /* what the strict check refused */
    unsigned requests;
    int busy;  /* callbacks in progress; see af_conn_enter() */
    bool dead; /* closed: free when busy drops to 0 */
};

enum af_ex_state {
    AF_EX_ROUTING,    /* waiting in the module's queue for a slot */
    AF_EX_CONNECTING, /* slot taken, upstream connection opening */
    AF_EX_FORWARDING, /* head sent; body and response flowing */
    AF_EX_DEATHWAIT,  /* upstream failed with no response: waiting briefly for
                         the instance's exit so the 502 can show its stderr */
    AF_EX_DONE,
};

struct af_upstream;

struct af_exchange {
    struct af_conn *conn;
    struct af_module *mod;
    struct af_instance *inst;
    struct af_upstream *up;
    struct af_waiter waiter;
    LIST_ENTRY(af_exchange) held_link; /* in inst->held while inst is set */
    enum af_ex_state state;
    bool direct;
    bool trusted; /* sent by appfront's own task runner (taskrunner.h) */

    /* The request as the client sent it. */
    unsigned method;
    unsigned short http_major;
    unsigned short http_minor;
    char *url;
    struct af_head_acc acc; /* the request's fields as they arrive */
    struct af_headers req_headers;
    int64_t content_length; /* -1 when absent */
    bool chunked_in;
    bool expect_continue;
    bool keepalive;
    bool body_flowing;  /* the client parser is unpaused, body goes upstream */
    bool body_started;  /* the strict check moved on to the chunked body */
    bool req_body_done; /* the whole request was read */
    uint64_t req_body_bytes;
    bool upstream_reused;
    bool retried;

    /* The response. */
    http_parser rparser;
    struct af_head_acc racc;
    struct af_headers resp_headers;
    size_t resp_head_bytes;
    struct af_strict rstrict; /* the response's framing, checked before its parser */
    size_t rscanned;
    const char *rstrict_why;
    bool rchunked_pause; /* the parser paused after a chunked head: scanner switches */
    bool rinterim_pause; /* the parser paused after a 1xx: the next head is checked first */
    int status;
    bool resp_head_sent;
    bool chunked_out;
    bool close_after;
    bool resp_done;
    uint64_t resp_bytes; /* body bytes sent to the client */

    char request_id[40];
    struct timeval start;
    struct event *timer; /* queue wait, deadline, death wait */
    struct af_exchange *next_spare; /* in the server's pool while unused */
};

/* Frees the server's pool of spare exchanges (at exit). */
void af_exchanges_release(struct af_server *srv);

/* Sets up what connections share (their timeout queues); before the first
 * accept. Returns 0, or -1 when libevent cannot make a timer. */
int af_conns_init(struct af_server *srv);

/* Bracket every callback that may touch a connection. */
void af_conn_enter(struct af_conn *c);
void af_conn_leave(struct af_conn *c);
/* The instance took the queued body: read more of it from the client. */
void af_conn_pump(struct af_conn *c);

/* Accepts a connection on a front-end listener (called by server.c). */
void af_conn_accept(struct af_listener *lst, int fd, const struct sockaddr *addr, int addrlen);
/* Closes every connection that is idle between requests (shutdown). */
void af_conns_close_idle(struct af_server *srv);
/* Closes the connection now; in-flight work is abandoned. */
void af_conn_close(struct af_conn *c);

/* upstream.c → conn.c: the upstream connection is connected and ours. */
void af_ex_upstream_ready(struct af_exchange *ex);
/* upstream.c → conn.c: the upstream connection failed or closed. */
void af_ex_upstream_failed(struct af_exchange *ex, const char *what);
/* upstream.c → conn.c: the response is complete. */
void af_ex_response_done(struct af_exchange *ex);
/* instance.c → conn.c: the instance this exchange holds has exited. */
void af_ex_instance_died(struct af_exchange *ex);
/* The status, message and close decision of an error answered by appfront. */
void af_ex_fail(struct af_exchange *ex, int status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/*
 * Answers the exchange from appfront itself (static files, redirects, login
 * pages): status, the given header fields (may be NULL; framing and
 * Connection are added here), and a body from `body` (taken and freed) or
 * from `length` bytes of file `fd` at `offset` (taken and closed), or none.
 * HEAD gets the head only. Then the connection goes on with its next request.
 */
struct evbuffer;
void af_ex_reply(struct af_exchange *ex, int status, const struct af_headers *headers,
                 struct evbuffer *body, int fd, int64_t offset, int64_t length);

/* Header accumulator (headers of both directions). Returns the total bytes
 * accumulated so the caller can bound the head. */
void af_head_acc_field(struct af_head_acc *a, struct af_headers *h, const char *p, size_t n);
void af_head_acc_value(struct af_head_acc *a, const char *p, size_t n);
void af_head_acc_finish(struct af_head_acc *a, struct af_headers *h);
void af_head_acc_release(struct af_head_acc *a);

#endif
