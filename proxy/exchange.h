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
    enum af_conn_state state;
    struct af_exchange *ex;
    struct af_timeout timeout; /* on srv->head_timeouts or srv->idle_timeouts */
    char peer_ip[46]; /* INET6_ADDRSTRLEN */
    int head_error; /* the status to answer a request refused while reading it */
    struct af_strict strict; /* RFC 9112 grammar of the head, then of a chunked body */
    size_t scanned;          /* head bytes (from the front of the input) checked */
    const char *why;         /* why the request was refused: a static sentence */
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
    AF_EX_BLOB,       /* waiting for the blobstore service (proxy/blob.h) */
    AF_EX_DONE,
};

struct af_upstream;
struct af_blob_op;
struct evbuffer;

/* Where the reading of an instance's response stands. */
enum af_rbody {
    AF_RB_HEAD,    /* a head (after any number of interim 1xx heads) */
    AF_RB_LENGTH,  /* resp_left body bytes */
    AF_RB_CHUNKED, /* a chunked body, decoded by rstrict */
    AF_RB_EOF,     /* a body that ends when the instance closes */
    AF_RB_DONE,
};

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
    struct af_headers req_headers;
    int64_t content_length; /* -1 when absent */
    bool chunked_in;
    bool expect_continue;
    bool keepalive;
    bool body_flowing;  /* body bytes are read from the client and go upstream */
    bool body_read;     /* some of the body (or its chunk framing) was read */
    bool req_body_done; /* the whole request was read */
    uint64_t req_body_bytes;
    uint64_t req_body_left; /* of a Content-Length body */
    bool upstream_reused;
    bool retried;

    /* The response. */
    enum af_rbody rbody; /* what the instance's bytes are now */
    bool rstarted;       /* reading the response has begun */
    struct af_headers resp_headers;
    struct af_strict rstrict; /* the response head's grammar, then a chunked body's */
    size_t rscanned;          /* response head bytes checked */
    const char *rwhy;         /* why the response is malformed */
    uint64_t resp_left;       /* of a Content-Length body */
    bool rkeepalive;          /* the instance keeps the connection open after it */
    int status;
    bool resp_head_sent;
    bool chunked_out;
    bool close_after;
    bool resp_done;
    uint64_t resp_bytes; /* body bytes sent to the client */

    char request_id[40];
    /* The url of the app.yaml handler that matched (its configuration
     * outlives the exchange, proxy/module.c), or NULL: the request log's
     * url_map_entry. */
    const char *handler_url;
    struct timeval start;
    struct af_timeout deadline; /* on srv->deadlines from the end of the head */
    struct af_timeout pending;  /* on srv->pending_timeouts while queued */
    struct event *timer;        /* the death wait (rare: a libevent timer) */
    struct af_exchange *next_spare; /* in the server's pool while unused */
    /* An upload or a blob being served (proxy/blob.h); NULL: neither. */
    struct af_blob_op *blob;
    /* The body sent upstream instead of the client's (an upload's rewritten
     * form), kept whole for a retry; NULL: the client's body. */
    struct evbuffer *fwd_body;
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

/* Routes a validated exchange: app.yaml handlers, then an instance of its
 * module (the second half of reading a request; proxy/blob.c calls it
 * once an upload is stored). */
void af_ex_route(struct af_exchange *ex);
/* Gives back the exchange's instance slot and upstream connection (not
 * reused) and cancels its timeouts; the exchange stays. */
void af_ex_give_back(struct af_exchange *ex);

#endif
