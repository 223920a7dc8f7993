/*
 * conn — the client side of the front end: one HTTP/1.1 connection, as an
 * explicit state machine (enum af_conn_state), and the exchange that serves
 * each request on it.
 *
 *   HEAD ──head complete──▶ EXCHANGE ──response done, keep-alive──▶ HEAD
 *     │                        │
 *     └── bad input, timeout ──┴── error, close requested ──▶ CLOSING ──▶ freed
 *
 * A head stays in the input buffer until the strict scanner (strict.h) has
 * checked all of it and found its end; then proxy/h1.h splits it and it is
 * drained. Reading never runs ahead of the exchange: no body byte is read
 * before the request is routed and its instance connected, and a pipelined
 * request stays in the input buffer until the current response is done,
 * which keeps answers in order.
 */
#include "proxy/exchange.h"

#include <arpa/inet.h>
#include <errno.h>
#include <malloc.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/event.h>

#include "common/evmem.h"
#include "common/log.h"
#include "common/xalloc.h"
#include "proxy/background.h"
#include "proxy/blob.h"
#include "proxy/h1.h"
#include "proxy/instance.h"
#include "proxy/login.h"
#include "proxy/reqlog.h"
#include "proxy/taskrunner.h"
#include "proxy/router.h"
#include "proxy/server.h"
#include "proxy/upstream.h"
#include "proxy/wire.h"

/* Limits of a request head (issue: strict input limits). */
#define MAX_HEAD_BYTES (64 * 1024)
#define MAX_HEADERS 256
#define KEEPALIVE_IDLE_MS 60000
/* How long a 502 waits for the instance's exit, to show its stderr. */
#define DEATH_WAIT_MS 300

static void ex_begin(struct af_exchange *ex);
static void ex_assigned(struct af_exchange *ex, struct af_instance *inst);
static inline void ex_route(struct af_exchange *ex);
static void ex_free(struct af_exchange *ex);
static void conn_drive(struct af_conn *c);

/* ---- small helpers -------------------------------------------------------- */

static const char *reason_phrase(int status)
{
    switch (status) {
    case 400: return "Bad Request";
    case 408: return "Request Timeout";
    case 413: return "Content Too Large";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 505: return "HTTP Version Not Supported";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    default: return http_status_str((enum http_status)status);
    }
}

/* A request id unique across runs: 64 random bits chosen at startup and a
 * counter. The same id is the Request-Log-Id, the Dev-Request-Id and the
 * API ticket, so service calls can be attributed to their request. */
static void make_request_id(char out[40])
{
    /* Rendered once: 2.5% of a request's instructions when it was not.
     * Hex digits are never NUL, so a first byte of 0 means not yet. */
    static char prefix_hex[16];
    static uint64_t counter;
    if (!prefix_hex[0]) {
        uint64_t prefix;
        if (getrandom(&prefix, sizeof(prefix), 0) != sizeof(prefix))
            prefix = (uint64_t)getpid() << 32 ^ (uint64_t)time(NULL);
        af_put_hex16(prefix_hex, prefix);
    }
    memcpy(out, prefix_hex, 16);
    char *p = af_put_hex16(out + 16, ++counter);
    *p = '\0';
}

static long elapsed_us(const struct timeval *start)
{
    struct timeval now;
    gettimeofday(&now, NULL);
    return (now.tv_sec - start->tv_sec) * 1000000L + (now.tv_usec - start->tv_usec);
}

static void ms_to_tv(int ms, struct timeval *tv)
{
    tv->tv_sec = ms / 1000;
    tv->tv_usec = (ms % 1000) * 1000;
}

/* ---- connection lifecycle ------------------------------------------------ */

void af_conn_enter(struct af_conn *c)
{
    c->busy++;
}

static void conn_free(struct af_conn *c)
{
    struct af_server *srv = c->srv;
    if (c->ex)
        ex_free(c->ex);
    LIST_REMOVE(c, link);
    srv->n_conns--;
    af_timeout_cancel(&c->timeout);
    af_stream_release(&c->s);
    free(c);
    af_server_maybe_done(srv);
}

void af_conn_leave(struct af_conn *c)
{
    if (--c->busy == 0 && c->dead)
        conn_free(c);
}

void af_conn_close(struct af_conn *c)
{
    if (c->dead)
        return;
    c->dead = true;
    af_stream_stop(&c->s);
    af_timeout_cancel(&c->timeout);
    if (c->busy == 0)
        conn_free(c);
}

/* Close once everything queued for the client has been written. */
static void conn_close_after_flush(struct af_conn *c)
{
    c->state = AF_CONN_CLOSING;
    af_stream_read(&c->s, false);
    if (af_stream_flush(&c->s)) {
        af_conn_close(c);
        return;
    }
    /* Bound the flush: a client that stops reading is not waited for. */
    af_timeout_arm(&c->srv->idle_timeouts, &c->timeout);
}

/* An answer from appfront itself, always followed by closing the
 * connection: the request body may be unread, so the stream position is
 * unknown and the connection cannot be reused safely. */
static void conn_send_error(struct af_conn *c, int status, const char *msg, bool head)
{
    if (!af_stream_unpark(&c->s)) {
        af_conn_close(c);
        return;
    }
    struct evbuffer *out = c->s.out;
    /* The answer to HEAD has the head only (RFC 9110 §9.3.2). */
    /* The app's error_handlers page, where router.h says one applies. */
    const char *ctype = "text/plain; charset=utf-8";
    struct evbuffer *page = c->lst->direct ? NULL : af_router_error_page(c->lst->module, status,
                                                                         &ctype);
    if (!page) {
        page = evbuffer_new();
        evbuffer_add_printf(page, "%s\n", msg);
    }
    evbuffer_add_printf(out,
                        "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n"
                        "Connection: close\r\n\r\n",
                        status, reason_phrase(status), ctype, evbuffer_get_length(page));
    if (!head)
        evbuffer_add_buffer(out, page);
    evbuffer_free(page);
    conn_close_after_flush(c);
}

/* Whether the request whose head is still in the input buffer (refused
 * while reading it) is a HEAD. */
static bool head_is_head(struct af_conn *c)
{
    char first[5];
    return c->s.in && evbuffer_copyout(c->s.in, first, 5) == 5 && memcmp(first, "HEAD ", 5) == 0;
}

static void conn_expired(struct af_conn *c, bool head)
{
    af_conn_enter(c);
    if (c->state == AF_CONN_HEAD && head) {
        af_log(AF_LOG_INFO, "%s: request head not complete within %d ms: 408", c->peer_ip,
               c->srv->cfg->head_timeout_ms);
        conn_send_error(c, 408, "The request head was not received in time.",
                        head_is_head(c));
    } else {
        af_conn_close(c);
    }
    af_conn_leave(c);
}

static void head_expired(struct af_timeout *t)
{
    conn_expired((struct af_conn *)((char *)t - offsetof(struct af_conn, timeout)), true);
}

static void idle_expired(struct af_timeout *t)
{
    conn_expired((struct af_conn *)((char *)t - offsetof(struct af_conn, timeout)), false);
}

static void deadline_expired(struct af_timeout *t);
static void pending_expired(struct af_timeout *t);

int af_conns_init(struct af_server *srv)
{
    const struct af_config *cfg = srv->cfg;
    if (af_timeout_queue_init(&srv->head_timeouts, srv->base, cfg->head_timeout_ms,
                              head_expired) < 0 ||
        af_timeout_queue_init(&srv->idle_timeouts, srv->base, KEEPALIVE_IDLE_MS, idle_expired) < 0 ||
        af_timeout_queue_init(&srv->deadlines, srv->base, cfg->request_deadline_ms,
                              deadline_expired) < 0 ||
        af_timeout_queue_init(&srv->pending_timeouts, srv->base, cfg->max_pending_ms,
                              pending_expired) < 0)
        return -1;
    return 0;
}

/* ---- reading requests ---------------------------------------------------- */

/* A fresh exchange: from the server's pool when one is there. */
static struct af_exchange *ex_alloc(struct af_server *srv)
{
    struct af_exchange *ex = srv->spare_ex;
    if (!ex)
        return af_xcalloc(1, sizeof(*ex));
    srv->spare_ex = ex->next_spare;
    srv->n_spare_ex--;
    ex->next_spare = NULL;
    return ex;
}

/* The first byte of a request arrived: its exchange, and the head timeout. */
static void message_begin(struct af_conn *c)
{
    struct af_exchange *ex = ex_alloc(c->srv);
    ex->conn = c;
    ex->content_length = -1;
    ex->direct = c->lst->direct;
    ex->mod = c->lst->module;
    gettimeofday(&ex->start, NULL);
    c->ex = ex;
    c->scanned = 0;
    af_strict_head(&c->strict);
    if (!af_timeout_armed_on(&c->timeout, &c->srv->head_timeouts))
        af_timeout_arm(&c->srv->head_timeouts, &c->timeout);
}

static int refuse(struct af_conn *c, int status, const char *why)
{
    c->head_error = status;
    c->why = why;
    return -1;
}

/*
 * HEAD state: reads a request head from the input buffer into a new
 * exchange. Returns 1 when one was read (the state is then EXCHANGE), 0
 * when more bytes are needed, -1 when the request is refused (head_error,
 * why).
 */
static int conn_read_head(struct af_conn *c)
{
    struct evbuffer *in = c->s.in;
    size_t len = in ? evbuffer_get_length(in) : 0;
    if (!c->ex) {
        /* Empty lines between requests (RFC 9112 §2.2) start nothing. */
        struct evbuffer_iovec v;
        if (len >= 2 && evbuffer_peek(in, -1, NULL, &v, 1) == 1) {
            const char *b = v.iov_base;
            size_t k = 0;
            while (k + 1 < v.iov_len && b[k] == '\r' && b[k + 1] == '\n')
                k += 2;
            if (k) {
                evbuffer_drain(in, k);
                af_stream_consumed(&c->s);
                len -= k;
            }
        }
        if (len == 0)
            return 0;
        message_begin(c);
    }
    int r = af_h1_scan_head(&c->strict, in, &c->scanned, MAX_HEAD_BYTES, &c->why);
    if (r == -1)
        return refuse(c, 400, c->why);
    if (r == -2)
        return refuse(c, 431, NULL);
    if (r == 0)
        return 0;
    struct af_exchange *ex = c->ex;
    size_t hlen = c->scanned;
    const char *head = (const char *)evbuffer_pullup(in, (ev_ssize_t)hlen);
    struct af_h1_request rq;
    int status = af_h1_parse_request(head, hlen, MAX_HEADERS, &rq, &ex->req_headers, &c->why);
    if (status)
        return refuse(c, status, c->why);
    ex->method = rq.method;
    ex->http_major = rq.major;
    ex->http_minor = rq.minor;
    ex->url = af_xmalloc(rq.target_len + 1);
    memcpy(ex->url, rq.target, rq.target_len);
    ex->url[rq.target_len] = '\0';
    evbuffer_drain(in, hlen);
    af_stream_consumed(&c->s);
    c->scanned = 0;
    c->state = AF_CONN_EXCHANGE;
    af_timeout_cancel(&c->timeout);
    return 1;
}

/* A body's bytes so far against --max_body_bytes. */
static int count_body(struct af_conn *c, size_t n)
{
    struct af_exchange *ex = c->ex;
    long long max = c->srv->cfg->max_body_bytes;
    ex->req_body_bytes += n;
    if (max > 0 && ex->req_body_bytes > (uint64_t)max)
        return refuse(c, 413, NULL);
    return 0;
}

/*
 * EXCHANGE state: moves body bytes from the client to the instance while
 * its output has room; a chunked body is decoded by the strict scanner and
 * re-chunked (its extensions and trailers are never forwarded). Returns 0,
 * or -1 when the body is refused. The next request stays in the buffer.
 */
static int conn_read_body(struct af_conn *c)
{
    struct af_exchange *ex = c->ex;
    struct evbuffer *in = c->s.in;
    while (!ex->req_body_done && !c->dead && evbuffer_get_length(in) > 0) {
        struct evbuffer *out = af_upstream_output(ex->up);
        if (evbuffer_get_length(out) >= AF_HIGH_WATER)
            break;
        size_t avail = evbuffer_get_length(in);
        if (!ex->chunked_in) {
            size_t take = avail < ex->req_body_left ? avail : (size_t)ex->req_body_left;
            if (count_body(c, take) < 0)
                return -1;
            evbuffer_remove_buffer(in, out, take);
            ex->req_body_left -= take;
            if (ex->req_body_left == 0)
                ex->req_body_done = true;
        } else if (af_strict_data_left(&c->strict) > 0) {
            uint64_t left = af_strict_data_left(&c->strict);
            size_t take = avail < left ? avail : (size_t)left;
            if (count_body(c, take) < 0)
                return -1;
            af_h1_move_chunk(in, out, take);
            af_strict_data_taken(&c->strict, take);
        } else {
            /* Chunk sizes, extensions, CRLFs and trailers: checked, dropped. */
            int r = af_h1_skip_chunk_framing(&c->strict, in, &c->why);
            if (r < 0)
                return refuse(c, 400, c->why);
            if (r == 1) {
                evbuffer_add(out, "0\r\n\r\n", 5);
                ex->req_body_done = true;
            }
        }
        af_stream_consumed(&c->s);
        ex->body_read = true;
    }
    return 0;
}

/* Answers a request refused while reading it, and closes. */
static void conn_refused(struct af_conn *c)
{
    int status = c->head_error ? c->head_error : 400;
    char msg[256];
    if (status == 431)
        snprintf(msg, sizeof(msg),
                 "The request head is larger than %d bytes or has more than %d fields.",
                 MAX_HEAD_BYTES, MAX_HEADERS);
    else if (status == 413)
        snprintf(msg, sizeof(msg), "The request body is larger than %lld bytes.",
                 c->srv->cfg->max_body_bytes);
    else if (status == 400)
        snprintf(msg, sizeof(msg), "Malformed request: %s.",
                 c->why ? c->why : "it breaks the HTTP/1.1 grammar");
    else
        snprintf(msg, sizeof(msg), "Not supported: %s.", c->why ? c->why : "unknown");
    struct af_exchange *ex = c->ex;
    if (ex && ex->resp_head_sent) {
        /* Mid-body error with the response under way: nothing sane to send. */
        af_conn_close(c);
        return;
    }
    bool head = ex && ex->url ? ex->method == HTTP_HEAD : head_is_head(c);
    af_log(AF_LOG_INFO, "%s: %d %s", c->peer_ip, status, msg);
    if (ex) {
        ex->status = status;
        ex_free(ex);
        c->ex = NULL;
    }
    conn_send_error(c, status, msg, head);
}

/* The state machine's one driver: called whenever input arrived or a
 * blocking condition (routing, backpressure, previous response) cleared. */
static void conn_drive(struct af_conn *c)
{
    while (!c->dead) {
        switch (c->state) {
        case AF_CONN_HEAD: {
            int r = conn_read_head(c);
            if (r < 0) {
                conn_refused(c);
                return;
            }
            if (r == 0)
                return; /* need more bytes */
            ex_begin(c->ex);
            break;
        }
        case AF_CONN_EXCHANGE: {
            struct af_exchange *ex = c->ex;
            if (ex && ex->blob && ex->body_flowing && !ex->req_body_done) {
                af_blob_upload_read(ex);
                return;
            }
            if (!ex || !ex->body_flowing || ex->req_body_done || !ex->up)
                return;
            if (conn_read_body(c) < 0)
                conn_refused(c);
            return;
        }
        case AF_CONN_CLOSING:
            return;
        }
    }
}

/* Writes what the exchange queued toward its instance. */
static void ex_flush_upstream(struct af_exchange *ex)
{
    if (ex && ex->up)
        af_stream_flush_deferred(&ex->up->s);
}

void af_conn_pump(struct af_conn *c)
{
    conn_drive(c);
    if (!c->dead)
        ex_flush_upstream(c->ex);
}

static void conn_on_read(struct af_stream *s, void *arg)
{
    struct af_conn *c = arg;
    af_conn_enter(c);
    af_conn_pump(c);
    af_conn_leave(c);
}

static void conn_on_drain(struct af_stream *s, void *arg)
{
    struct af_conn *c = arg;
    af_conn_enter(c);
    if (c->state == AF_CONN_CLOSING) {
        if (evbuffer_get_length(c->s.out) == 0)
            af_conn_close(c);
    } else if (c->ex && c->ex->up && !c->ex->resp_done) {
        /* The client drained: let the response flow again. */
        af_upstream_start_reading(c->ex->up);
    }
    af_conn_leave(c);
}

static void conn_on_event(struct af_stream *s, enum af_stream_event what, void *arg)
{
    struct af_conn *c = arg;
    af_conn_enter(c);
    struct af_exchange *ex = c->ex;
    if (ex && ex->state != AF_EX_DONE)
        af_log(AF_LOG_INFO, "%s: client went away during %s %s", c->peer_ip,
               http_method_str(ex->method), ex->url ? ex->url : "");
    af_conn_close(c);
    af_conn_leave(c);
}

static const struct af_stream_ops conn_ops = {
    .on_read = conn_on_read,
    .on_drain = conn_on_drain,
    .on_event = conn_on_event,
};

void af_conn_accept(struct af_listener *lst, int fd, const struct sockaddr *addr, int addrlen)
{
    struct af_server *srv = lst->srv;
    if (srv->stopping || srv->n_conns >= srv->cfg->max_connections) {
        /* Over the limit: shed at once rather than queue without bound. */
        close(fd);
        return;
    }
    struct af_conn *c = af_xcalloc(1, sizeof(*c));
    c->srv = srv;
    c->lst = lst;
    if (af_stream_init(&c->s, srv->base, fd, &conn_ops, c) < 0) {
        close(fd);
        free(c);
        return;
    }
    if (addr->sa_family == AF_INET)
        inet_ntop(AF_INET, &((const struct sockaddr_in *)addr)->sin_addr, c->peer_ip,
                  sizeof(c->peer_ip));
    else if (addr->sa_family == AF_INET6)
        inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)addr)->sin6_addr, c->peer_ip,
                  sizeof(c->peer_ip));
    else
        snprintf(c->peer_ip, sizeof(c->peer_ip), "127.0.0.1");
    c->state = AF_CONN_HEAD;
    af_strict_head(&c->strict);
    LIST_INSERT_HEAD(&srv->conns, c, link);
    srv->n_conns++;
    /* Bounded buffering: stop reading from a client that sends faster than
     * the instance takes; resume the response when the output is half
     * drained. */
    c->s.read_max = AF_HIGH_WATER;
    c->s.low_water = AF_HIGH_WATER / 2;
    af_stream_read(&c->s, true);
    af_timeout_arm(&srv->head_timeouts, &c->timeout);
}

void af_conns_close_idle(struct af_server *srv)
{
    struct af_conn *c = LIST_FIRST(&srv->conns), *next;
    for (; c; c = next) {
        next = LIST_NEXT(c, link);
        if (c->state == AF_CONN_HEAD && !c->ex)
            af_conn_close(c);
    }
}

/* ---- the exchange ---------------------------------------------------------- */

/* Longest URL a request line shows; longer ones end in "..." (the line
 * must fit one log batch, see common/log.h). */
#define LOG_URL_MAX 8000

/* One line per request, batched (common/log.h): formatting it with printf
 * and writing it alone cost 10-25% of the proxy's throughput. And one
 * record for the logservice, batched per turn the same way. */
static void ex_log(struct af_exchange *ex)
{
    /* Every finished request, whoever answered it, is a record of the
     * logservice's request log (proxy/reqlog.h), batched like this line. */
    struct timeval now;
    gettimeofday(&now, NULL);
    if (!ex->request_id[0])
        make_request_id(ex->request_id); /* refused before it was routed */
    af_reqlog_add(ex, &now);
    if (!af_log_enabled(AF_LOG_INFO))
        return;
    long us = (now.tv_sec - ex->start.tv_sec) * 1000000L + (now.tv_usec - ex->start.tv_usec);
    const char *mod = ex->mod ? ex->mod->name : "-";
    const char *method = http_method_str(ex->method);
    const char *url = ex->url ? ex->url : "-";
    size_t mod_len = strlen(mod), method_len = strlen(method), url_len = strlen(url);
    bool cut = url_len > LOG_URL_MAX;
    if (cut)
        url_len = LOG_URL_MAX;
    char *p = af_log_begin(AF_LOG_INFO, mod_len + method_len + url_len + 96);
    if (!p)
        return;
    p = af_put(p, mod, mod_len);
    if (ex->direct)
        p = AF_PUT_LIT(p, " (direct)");
    p = AF_PUT_LIT(p, ": ");
    p = af_put(p, method, method_len);
    *p++ = ' ';
    p = af_put(p, url, url_len);
    if (cut)
        p = AF_PUT_LIT(p, "...");
    *p++ = ' ';
    p = af_put_u64(p, (uint64_t)(ex->status < 0 ? 0 : ex->status));
    *p++ = ' ';
    p = af_put_u64(p, ex->resp_bytes);
    p = AF_PUT_LIT(p, "B ");
    if (us < 0)
        us = 0;
    p = af_put_u64(p, (uint64_t)us / 1000);
    *p++ = '.';
    *p++ = (char)('0' + us / 100 % 10);
    *p++ = (char)('0' + us / 10 % 10);
    *p++ = (char)('0' + us % 10);
    p = AF_PUT_LIT(p, "ms");
    af_log_commit(p);
}

/* Gives back the instance slot, the upstream connection and the queue
 * place; the exchange itself stays. */
static void ex_detach(struct af_exchange *ex, bool upstream_reusable)
{
    af_timeout_cancel(&ex->deadline);
    af_timeout_cancel(&ex->pending);
    if (ex->timer)
        event_del(ex->timer);
    if (ex->waiter.queued)
        af_module_cancel(ex->mod, &ex->waiter);
    if (ex->up) {
        af_upstream_put(ex->up, upstream_reusable);
        ex->up = NULL;
    }
    if (ex->inst) {
        struct af_instance *inst = ex->inst;
        ex->inst = NULL;
        LIST_REMOVE(ex, held_link);
        af_module_release(ex->mod, inst, ex->waiter.direct);
        af_instance_unref(inst);
    }
}

void af_ex_give_back(struct af_exchange *ex)
{
    ex_detach(ex, false);
}

/* Spare exchanges kept: enough for the connections busy at once under a
 * heavy local load. Once the pool grew past SPARE_IDLE, a timer checks
 * every SPARE_TRIM_MS whether a new exchange began since it last looked;
 * when none did, the burst is over and the pool shrinks back with the heap.
 * Under load the pool stays as it is (trimming it then only made the next
 * few hundred requests allocate again and fault pages back in). */
#define MAX_SPARE_EXCHANGES 256
#define SPARE_IDLE 8
#define SPARE_TRIM_MS 250

static void ex_destroy(struct af_exchange *ex);

static void spare_trim_arm(struct af_server *srv)
{
    static const struct timeval tv = {0, SPARE_TRIM_MS * 1000};
    srv->ex_begun_seen = srv->ex_begun;
    srv->spare_trim_armed = evtimer_add(srv->spare_trim, &tv) == 0;
}

static void spare_trim_cb(evutil_socket_t fd, short what, void *arg)
{
    struct af_server *srv = arg;
    srv->spare_trim_armed = false;
    if (srv->ex_begun != srv->ex_begun_seen) {
        spare_trim_arm(srv); /* still busy */
        return;
    }
    while (srv->n_spare_ex > SPARE_IDLE) {
        struct af_exchange *ex = srv->spare_ex;
        srv->spare_ex = ex->next_spare;
        srv->n_spare_ex--;
        ex_destroy(ex);
    }
    /* The burst that grew the pool is over: the heap pages it left free
     * (exchanges, buffer chains) go back to the system instead of staying
     * resident for as long as appfront runs; the buffer chains cached for
     * reuse (common/evmem.h) go with them. */
    af_evmem_trim();
    malloc_trim(0);
}

/* Arms the trim, unless it is pending already (no heap work per request). */
static void spare_trim_later(struct af_server *srv)
{
    if (srv->spare_trim_armed || srv->n_spare_ex <= SPARE_IDLE)
        return;
    if (!srv->spare_trim)
        srv->spare_trim = evtimer_new(srv->base, spare_trim_cb, srv);
    if (srv->spare_trim)
        spare_trim_arm(srv);
}

static void ex_destroy(struct af_exchange *ex)
{
    if (ex->timer)
        event_free(ex->timer);
    af_headers_release(&ex->req_headers);
    af_headers_release(&ex->resp_headers);
    free(ex->url);
    free(ex);
}

static void ex_free(struct af_exchange *ex)
{
    if (ex->state != AF_EX_DONE && ex->status)
        ex_log(ex);
    ex_detach(ex, false);
    if (ex->blob)
        af_blob_free(ex);
    if (ex->fwd_body) {
        evbuffer_free(ex->fwd_body);
        ex->fwd_body = NULL;
    }
    struct af_conn *c = ex->conn;
    if (c && c->ex == ex)
        c->ex = NULL;
    struct af_server *srv = c ? c->srv : NULL;
    if (!srv || srv->n_spare_ex >= MAX_SPARE_EXCHANGES) {
        ex_destroy(ex);
        return;
    }
    /* Back to the pool: everything per request is reset; the allocations
     * (field arrays and strings, the timer) are kept. */
    struct af_exchange keep = {
        .req_headers = ex->req_headers,
        .resp_headers = ex->resp_headers,
        .timer = ex->timer,
    };
    af_headers_clear(&keep.req_headers);
    af_headers_clear(&keep.resp_headers);
    free(ex->url);
    *ex = keep;
    ex->next_spare = srv->spare_ex;
    srv->spare_ex = ex;
    srv->n_spare_ex++;
    spare_trim_later(srv);
}

void af_exchanges_release(struct af_server *srv)
{
    struct af_exchange *ex;
    while ((ex = srv->spare_ex) != NULL) {
        srv->spare_ex = ex->next_spare;
        ex_destroy(ex);
    }
    srv->n_spare_ex = 0;
    if (srv->spare_trim)
        event_free(srv->spare_trim);
    srv->spare_trim = NULL;
    af_timeout_queue_release(&srv->head_timeouts);
    af_timeout_queue_release(&srv->idle_timeouts);
    af_timeout_queue_release(&srv->deadlines);
    af_timeout_queue_release(&srv->pending_timeouts);
}

void af_ex_fail(struct af_exchange *ex, int status, const char *fmt, ...)
{
    struct af_conn *c = ex->conn;
    char *msg;
    va_list ap;
    va_start(ap, fmt);
    if (vasprintf(&msg, fmt, ap) < 0)
        msg = NULL;
    va_end(ap);
    ex->status = status;
    bool ex_is_head = ex->method == HTTP_HEAD;
    if (ex->resp_head_sent) {
        /* Part of a response is out: the only honest signal left is to cut
         * the connection so the client sees a truncated message. */
        af_log(AF_LOG_WARNING, "%s: %s %s: aborted mid-response: %s", ex->mod->name,
               http_method_str(ex->method), ex->url, msg ? msg : "");
        ex_free(ex);
        af_conn_close(c);
    } else {
        ex_detach(ex, false);
        ex_log(ex);
        ex->state = AF_EX_DONE;
        ex_free(ex);
        conn_send_error(c, status, msg ? msg : "error", ex_is_head);
    }
    free(msg);
}

/*
 * An exchange's timeouts. The deadline (every exchange, from the end of its
 * head) and the queue wait (while queued) last the same for every exchange,
 * so each is an entry in a FIFO queue (proxy/timeouts.h), not a min-heap
 * timer re-armed at every step; only the rare death wait has a timer of its
 * own.
 */
static void ex_expired(struct af_exchange *ex, bool pending)
{
    struct af_conn *c = ex->conn;
    af_conn_enter(c);
    if (ex->state == AF_EX_ROUTING)
        af_ex_fail(ex, 503,
                   "No instance of module \"%s\" became available in time; the request "
                   "waited %ld ms.",
                   ex->mod->name, elapsed_us(&ex->start) / 1000);
    else if (ex->state == AF_EX_DEATHWAIT)
        af_ex_instance_died(ex);
    else if (ex->state == AF_EX_BLOB)
        af_ex_fail(ex, 408, "The upload did not complete within the request deadline (%d ms).",
                   c->srv->cfg->request_deadline_ms);
    else if (!pending)
        af_ex_fail(ex, 504, "The instance did not answer within the request deadline (%d ms).",
                   c->srv->cfg->request_deadline_ms);
    af_conn_leave(c);
}

static void deadline_expired(struct af_timeout *t)
{
    ex_expired((struct af_exchange *)((char *)t - offsetof(struct af_exchange, deadline)), false);
}

static void pending_expired(struct af_timeout *t)
{
    ex_expired((struct af_exchange *)((char *)t - offsetof(struct af_exchange, pending)), true);
}

static void death_wait_cb(evutil_socket_t fd, short what, void *arg)
{
    struct af_exchange *ex = arg;
    struct af_conn *c = ex->conn;
    af_conn_enter(c);
    af_ex_instance_died(ex);
    af_conn_leave(c);
}

/* Waits briefly for the instance's exit (DEATHWAIT), within the deadline. */
static void ex_arm_death_wait(struct af_exchange *ex)
{
    struct timeval tv;
    ms_to_tv(DEATH_WAIT_MS, &tv);
    if (!ex->timer)
        ex->timer = evtimer_new(ex->conn->srv->base, death_wait_cb, ex);
    event_add(ex->timer, &tv);
}

static void ex_waiter_ready(struct af_waiter *w, struct af_instance *inst, int status,
                            const char *why)
{
    struct af_exchange *ex = (struct af_exchange *)((char *)w - offsetof(struct af_exchange, waiter));
    struct af_conn *c = ex->conn;
    af_conn_enter(c);
    if (inst)
        ex_assigned(ex, inst);
    else
        af_ex_fail(ex, status, "%s", why);
    af_conn_leave(c);
}

/* Checks the request's framing and the rules of RFC 9112 the grammar alone
 * does not catch. Returns 0, or the status to answer with a message in
 * msg. */
static int ex_validate(struct af_exchange *ex, char *msg, size_t len)
{
    const struct af_config *cfg = ex->conn->srv->cfg;
    struct af_h1_framing f;
    const char *why = NULL;
    int status = af_h1_framing(&ex->req_headers, &f, &why);
    if (status == 501 && f.unsupported) {
        snprintf(msg, len, "Transfer-Encoding '%.100s' is not supported; only chunked is.",
                 f.unsupported->value);
        return 501;
    }
    if (status) {
        snprintf(msg, len, "Malformed request: %s.", why);
        return status;
    }
    ex->content_length = f.length;
    ex->chunked_in = f.chunked;
    ex->req_body_left = f.length > 0 ? (uint64_t)f.length : 0;
    ex->req_body_done = !f.chunked && f.length <= 0;
    /* RFC 9112 §6.1: an HTTP/1.0 message with Transfer-Encoding is read as
     * chunked, and the connection closes after it. */
    ex->keepalive = af_h1_persists(ex->http_major, ex->http_minor, &f) &&
                    !(f.chunked && ex->http_minor == 0);
    if (ex->http_major != 1) {
        snprintf(msg, len, "HTTP/%u.%u is not supported; use HTTP/1.1 or HTTP/1.0.",
                 ex->http_major, ex->http_minor);
        return 505;
    }
    /* A later minor version is answered as the highest we speak (RFC 9110
     * §2.5). */
    if (ex->http_minor > 1)
        ex->http_minor = 1;
    size_t hosts = af_headers_count_id(&ex->req_headers, AF_H_HOST);
    if (hosts > 1 || (ex->http_minor == 1 && hosts == 0)) {
        /* RFC 9112 §3.2: exactly one Host in HTTP/1.1, never two in any
         * version — two hosts are two different routing answers. */
        snprintf(msg, len, "A request needs exactly one Host header (HTTP/1.0: at most one).");
        return 400;
    }
    if (ex->method == HTTP_CONNECT) {
        snprintf(msg, len, "CONNECT is not supported.");
        return 501;
    }
    /* absolute-form, which a server must accept (RFC 9112 §3.2.2): the app
     * gets the origin-form path and query. */
    if (ex->url && (strncasecmp(ex->url, "http://", 7) == 0 ||
                    strncasecmp(ex->url, "https://", 8) == 0)) {
        struct http_parser_url u;
        http_parser_url_init(&u);
        if (http_parser_parse_url(ex->url, strlen(ex->url), 0, &u) != 0) {
            snprintf(msg, len, "The request target is not a valid absolute URL.");
            return 400;
        }
        const char *path = (u.field_set & (1 << UF_PATH)) ? ex->url + u.field_data[UF_PATH].off
                                                           : NULL;
        const char *rest = path ? path
                                : (u.field_set & (1 << UF_QUERY))
                                      ? ex->url + u.field_data[UF_QUERY].off - 1
                                      : "";
        char *origin = af_xasprintf("%s%s", path ? "" : "/", rest);
        free(ex->url);
        ex->url = origin;
    }
    /* origin-form, or asterisk-form for OPTIONS only (RFC 9112 §3.2). */
    bool asterisk = ex->url && strcmp(ex->url, "*") == 0;
    if (!ex->url || (ex->url[0] != '/' && !asterisk) || (asterisk && ex->method != HTTP_OPTIONS)) {
        snprintf(msg, len, "The request target must be a path starting with '/' (or * for "
                           "OPTIONS).");
        return 400;
    }
    if (cfg->max_body_bytes > 0 && ex->content_length > cfg->max_body_bytes) {
        snprintf(msg, len, "The request body (%" PRId64 " bytes) is larger than %lld bytes.",
                 ex->content_length, cfg->max_body_bytes);
        return 413;
    }
    return 0;
}

static void ex_begin(struct af_exchange *ex)
{
    struct af_conn *c = ex->conn;
    char msg[256];
    c->requests++;
    c->srv->ex_begun++;
    make_request_id(ex->request_id);
    ex->waiter.direct = ex->direct;
    ex->waiter.pinned = false;
    ex->waiter.ready = ex_waiter_ready;
    struct af_header *expect = af_headers_find_id(&ex->req_headers, AF_H_EXPECT);
    ex->expect_continue = expect && ex->http_minor >= 1 &&
                          strcasecmp(expect->value, "100-continue") == 0;
    int status = ex_validate(ex, msg, sizeof(msg));
    if (status) {
        af_ex_fail(ex, status, "%s", msg);
        return;
    }
    if (c->srv->stopping) {
        af_ex_fail(ex, 503, "The server is shutting down.");
        return;
    }
    /* Blobstore uploads are stored here, then routed to their success
     * path (proxy/blob.h). */
    if (!ex->direct && af_blob_is_upload(ex->url)) {
        af_timeout_arm(&c->srv->deadlines, &ex->deadline);
        af_blob_upload_begin(ex);
        return;
    }
    ex_route(ex);
}

static inline void ex_route(struct af_exchange *ex)
{
    struct af_conn *c = ex->conn;
    int status;
    /* app.yaml handlers: static files, login, redirects are answered here;
     * script handlers fall through to the module's instances. */
    ex->trusted = !ex->direct && af_taskrunner_trusted(&ex->req_headers);
    /* A background request (proxy/background.h) goes to the instance that
     * asked for it: no dispatch, no handlers, no deadline. */
    int bg_inst = ex->direct ? -1 : af_background_trusted(&ex->req_headers);
    if (bg_inst >= 0) {
        ex->trusted = true;
        ex->waiter.pinned = true;
        ex->waiter.pin_id = bg_inst;
        ex->waiter.direct = true;
    } else {
        if (c->lst->routes) /* dispatch.yaml, module host names: the default module's port */
            ex->mod = af_server_dispatch(c->lst, ex);
        if (!ex->direct && af_router_handle(ex))
            return;
    }
    const char *why = NULL;
    ex->state = AF_EX_ROUTING;
    if (bg_inst < 0)
        af_timeout_arm(&c->srv->deadlines, &ex->deadline);
    struct af_instance *inst = af_module_acquire(ex->mod, &ex->waiter, &status, &why);
    if (inst) {
        ex_assigned(ex, inst);
    } else if (status) {
        af_ex_fail(ex, status, "%s", why);
    } else {
        af_timeout_arm(&c->srv->pending_timeouts, &ex->pending); /* queued */
    }
}

/* For the blob front end (proxy/blob.c): a finished upload is routed as
 * any request; ex_begin has its own inlined copy. */
void af_ex_route(struct af_exchange *ex)
{
    ex_route(ex);
}

static void ex_connect(struct af_exchange *ex)
{
    bool ready = false;
    ex->state = AF_EX_CONNECTING;
    ex->up = af_upstream_take(ex->inst, ex, &ready);
    if (!ex->up) {
        /* Refused at once: most often an instance that just died, whose
         * exit (and last stderr lines) the 502 waits for. */
        af_log(AF_LOG_DEBUG, "connect to instance %s: %s", ex->inst->name, strerror(errno));
        ex->upstream_reused = false;
        af_ex_upstream_failed(ex, "refused the connection");
        return;
    }
    ex->upstream_reused = ex->up->uses > 1;
    if (ready)
        af_ex_upstream_ready(ex);
}

static void ex_assigned(struct af_exchange *ex, struct af_instance *inst)
{
    ex->inst = inst;
    af_instance_ref(inst);
    LIST_INSERT_HEAD(&inst->held, ex, held_link);
    /* Which instance ran it, for runtime.RunInBackground. */
    if (inst->mod->app->scaling != AF_SCALING_AUTOMATIC && !ex->waiter.pinned)
        af_background_note(ex->request_id, inst->mod, inst);
    ex->state = AF_EX_CONNECTING;
    af_timeout_cancel(&ex->pending);
    ex_connect(ex);
}

/* "Cookie: dev_appserver_login=email:True|False:user_id" → the user. The
 * router decides "logged in" with the same parser (proxy/login.c). */
static bool login_from_cookie(const struct af_headers *h, char *email, size_t elen, bool *admin,
                              char *uid, size_t ulen)
{
    struct af_user user;
    if (!af_login_from_headers(h, &user))
        return false;
    snprintf(email, elen, "%s", user.email);
    *admin = user.admin;
    snprintf(uid, ulen, "%s", user.user_id);
    return true;
}

/* Writes the request head toward the instance (DESIGN.md header policy).
 * Idempotent, for the retry on a fresh connection. */
static void ex_write_request_head(struct af_exchange *ex)
{
    struct af_conn *c = ex->conn;
    struct af_server *srv = c->srv;
    struct af_headers *h = &ex->req_headers;
    bool direct = ex->direct;

    /* The client's X-Forwarded-For (looked up whatever an earlier call
     * marked), then the policy's marks. */
    const struct af_header *xff = NULL;
    bool has_host = false;
    for (size_t i = 0; i < h->n; i++) {
        if (h->v[i].id == AF_H_X_FORWARDED_FOR && !xff)
            xff = &h->v[i];
        else if (h->v[i].id == AF_H_HOST)
            has_host = true;
    }
    af_headers_drop_hop_by_hop(h);
    for (size_t i = 0; i < h->n; i++) {
        switch (h->v[i].id) {
        case AF_H_EXPECT: /* answered here: 100-continue */
        case AF_H_X_FORWARDED_FOR:
        case AF_H_X_FORWARDED_PROTO:
            h->v[i].drop = true;
            break;
        case AF_H_X_APPENGINE:
            if (!direct && !ex->trusted)
                h->v[i].drop = true; /* clients may not spoof them */
            break;
        default:
            break;
        }
    }
    /* On the back door the client's own X-AppEngine-* stay and win. */
    bool add_ids = !direct || !af_headers_find(h, "X-AppEngine-Request-Log-Id");
    bool add_country = !direct || !af_headers_find(h, "X-AppEngine-Country");
    bool add_dvh = !direct || !af_headers_find(h, "X-AppEngine-Default-Version-Hostname");
    bool add_ip = !direct || !af_headers_find(h, "X-AppEngine-User-IP");
    bool add_inbound = direct && !af_headers_find(h, "X-AppEngine-Inbound-AppId");
    char email[256], uid[128];
    bool admin = false;
    bool user = !direct && login_from_cookie(h, email, sizeof(email), &admin, uid, sizeof(uid));

    const char *method = http_method_str(ex->method);
    size_t host_len = strlen(srv->cfg->host);
    size_t ip_len = strlen(c->peer_ip);
    size_t max = strlen(method) + strlen(ex->url) + 16 + af_headers_wire_size(h) +
                 (host_len + 32) * 2 + (xff ? xff->value_len : 0) + ip_len * 3 +
                 strlen(srv->app_id) + sizeof(email) * 2 + sizeof(uid) + 600 +
                 (user ? strlen(srv->cfg->auth_domain) : 0);
    struct evbuffer *out = af_upstream_output(ex->up);
    struct evbuffer_iovec v;
    if (evbuffer_reserve_space(out, (ev_ssize_t)max, &v, 1) < 1)
        return;
    char *p = v.iov_base;
    p = af_put_str(p, method);
    *p++ = ' ';
    p = af_put_str(p, ex->url);
    p = AF_PUT_LIT(p, " HTTP/1.1\r\n");
    p = af_headers_copy(h, p);
    if (!has_host) {
        p = AF_PUT_LIT(p, "Host: ");
        p = af_put(p, srv->cfg->host, host_len);
        *p++ = ':';
        p = af_put_u64(p, (uint64_t)c->lst->port);
        p = AF_PUT_LIT(p, "\r\n");
    }
    if (add_ids) {
        p = AF_PUT_LIT(p, "X-AppEngine-Request-Log-Id: ");
        p = af_put_str(p, ex->request_id);
        p = AF_PUT_LIT(p, "\r\nX-Appengine-Dev-Request-Id: ");
        p = af_put_str(p, ex->request_id);
        p = AF_PUT_LIT(p, "\r\nX-AppEngine-API-Ticket: ");
        p = af_put_str(p, ex->request_id);
        p = AF_PUT_LIT(p, "\r\n");
    }
    if (add_country)
        p = AF_PUT_LIT(p, "X-AppEngine-Country: ZZ\r\n");
    if (add_dvh) {
        /* The Go library's appengine.DefaultVersionHostname reads this. */
        p = AF_PUT_LIT(p, "X-AppEngine-Default-Version-Hostname: ");
        p = af_put(p, srv->cfg->host, host_len);
        *p++ = ':';
        p = af_put_u64(p, (uint64_t)srv->main_port.port);
        p = AF_PUT_LIT(p, "\r\n");
    }
    if (add_ip) {
        p = AF_PUT_LIT(p, "X-AppEngine-User-IP: ");
        p = af_put(p, c->peer_ip, ip_len);
        p = AF_PUT_LIT(p, "\r\n");
    }
    p = AF_PUT_LIT(p, "X-Forwarded-For: ");
    if (xff) {
        p = af_put(p, xff->value, xff->value_len);
        p = AF_PUT_LIT(p, ", ");
    }
    p = af_put(p, c->peer_ip, ip_len);
    p = AF_PUT_LIT(p, "\r\nX-Forwarded-Proto: http\r\n");
    if (add_inbound) {
        p = AF_PUT_LIT(p, "X-AppEngine-Inbound-AppId: dev~");
        p = af_put_str(p, srv->app_id);
        p = AF_PUT_LIT(p, "\r\n");
    }
    if (user) {
        const char *at = strchr(email, '@');
        p = AF_PUT_LIT(p, "X-AppEngine-User-Email: ");
        p = af_put_str(p, email);
        p = AF_PUT_LIT(p, "\r\nX-AppEngine-User-Id: ");
        p = af_put_str(p, uid);
        p = AF_PUT_LIT(p, "\r\nX-AppEngine-User-Nickname: ");
        p = af_put(p, email, at ? (size_t)(at - email) : strlen(email));
        p = AF_PUT_LIT(p, "\r\nX-AppEngine-User-Is-Admin: ");
        *p++ = admin ? '1' : '0';
        /* The Go library's user.Current reads it (User.String drops the
         * domain from the e-mail of a user in it). */
        p = AF_PUT_LIT(p, "\r\nX-AppEngine-Auth-Domain: ");
        p = af_put_str(p, srv->cfg->auth_domain);
        p = AF_PUT_LIT(p, "\r\n");
    }
    if (ex->chunked_in) {
        p = AF_PUT_LIT(p, "Transfer-Encoding: chunked\r\n");
    } else if (ex->content_length >= 0) {
        p = AF_PUT_LIT(p, "Content-Length: ");
        p = af_put_u64(p, (uint64_t)ex->content_length);
        p = AF_PUT_LIT(p, "\r\n");
    }
    p = AF_PUT_LIT(p, "\r\n");
    v.iov_len = (size_t)(p - (char *)v.iov_base);
    evbuffer_commit_space(out, &v, 1);
}

static bool request_has_body(const struct af_exchange *ex)
{
    return ex->chunked_in || ex->content_length > 0;
}

void af_ex_upstream_ready(struct af_exchange *ex)
{
    struct af_conn *c = ex->conn;
    ex->state = AF_EX_FORWARDING;
    ex_write_request_head(ex);
    if (ex->fwd_body) {
        /* A copy: a retry on a fresh connection sends it again. */
        struct evbuffer *out = af_upstream_output(ex->up);
        size_t n = evbuffer_get_length(ex->fwd_body);
        evbuffer_add(out, evbuffer_pullup(ex->fwd_body, (ev_ssize_t)n), n);
    }
    /* The client waits for this before sending the body (RFC 9110
     * §10.1.1); the instance never sees Expect. */
    if (ex->expect_continue && request_has_body(ex))
        evbuffer_add(c->s.out, "HTTP/1.1 100 Continue\r\n\r\n", 25);
    if (ex->chunked_in && !ex->req_body_done && c->strict.mode == AF_STRICT_OFF) {
        /* The scanner stopped at the end of the head; the body is decoded
         * and checked from here (once: a retry keeps its state). */
        af_strict_chunked_decode(&c->strict);
    }
    ex->body_flowing = true;
    af_stream_flush(&c->s); /* 100 Continue */
    conn_drive(c);
    if (!c->dead && c->ex == ex)
        ex_flush_upstream(ex);
    /* Last: a response already buffered may complete the exchange here. */
    if (!c->dead && c->ex == ex && ex->up)
        af_upstream_start_reading(ex->up);
}

/* The end of an exchange that answered: log, then the next request on the
 * connection, or the close. */
static void ex_finish(struct af_exchange *ex, bool upstream_reusable)
{
    struct af_conn *c = ex->conn;
    af_stream_flush(&c->s);
    ex->state = AF_EX_DONE;
    ex_detach(ex, upstream_reusable);
    ex_log(ex);
    bool keep = ex->keepalive && !ex->close_after && ex->req_body_done && !c->srv->stopping;
    ex_free(ex);
    if (!keep) {
        conn_close_after_flush(c);
        return;
    }
    c->state = AF_CONN_HEAD;
    af_strict_head(&c->strict);
    c->scanned = 0;
    af_timeout_arm(&c->srv->idle_timeouts, &c->timeout);
    conn_drive(c); /* a pipelined request may be waiting */
    /* Idle with nothing buffered: the connection holds no buffers until its
     * next request (stream.c). */
    if (!c->dead && !c->ex && c->state == AF_CONN_HEAD)
        af_stream_park(&c->s);
}

/* Called when the upstream side finished the response. */
void af_ex_response_done(struct af_exchange *ex)
{
    ex_finish(ex, ex->req_body_done && ex->rkeepalive);
}

void af_ex_reply(struct af_exchange *ex, int status, const struct af_headers *headers,
                 struct evbuffer *body, int fd, int64_t offset, int64_t length)
{
    struct af_conn *c = ex->conn;
    /* A body, if any, is never read: the connection cannot go on. */
    if (!ex->req_body_done)
        ex->close_after = true;
    if (c->srv->stopping)
        ex->close_after = true;
    int64_t len = body ? (int64_t)evbuffer_get_length(body) : fd >= 0 ? length : 0;
    struct evbuffer *out = c->s.out;
    evbuffer_add_printf(out, "HTTP/1.1 %d %s\r\n", status, reason_phrase(status));
    if (headers)
        af_headers_write(headers, out);
    if (status != 304 && status != 204)
        evbuffer_add_printf(out, "Content-Length: %" PRId64 "\r\n", len);
    if (!ex->keepalive || ex->close_after)
        evbuffer_add_printf(out, "Connection: close\r\n");
    else if (ex->http_minor == 0)
        evbuffer_add_printf(out, "Connection: keep-alive\r\n");
    evbuffer_add(out, "\r\n", 2);
    bool send_body = ex->method != HTTP_HEAD && status != 304 && status != 204;
    if (body) {
        if (send_body)
            evbuffer_add_buffer(out, body);
        evbuffer_free(body);
    }
    if (fd >= 0) {
        /* evbuffer_add_file owns fd from here and sends with sendfile(2):
         * the file never passes through user space. */
        if (send_body && length > 0)
            evbuffer_add_file(out, fd, offset, length);
        else
            close(fd);
    }
    ex->status = status;
    ex->resp_head_sent = true;
    ex->resp_bytes = send_body ? (uint64_t)len : 0;
    ex_finish(ex, false);
}

static void ex_send_502(struct af_exchange *ex, const char *what)
{
    char *tail = ex->inst ? af_instance_stderr_tail(ex->inst) : NULL;
    const char *name = ex->inst ? ex->inst->name : "?";
    af_ex_fail(ex, 502, "Instance %s %s.%s%s", name, what,
               tail && *tail ? "\n\nLast lines of its stderr:\n" : "", tail ? tail : "");
    free(tail);
}

void af_ex_upstream_failed(struct af_exchange *ex, const char *what)
{
    if (ex->resp_head_sent) {
        af_ex_fail(ex, 502, "Instance %s %s mid-response.", ex->inst ? ex->inst->name : "?",
                   what);
        return;
    }
    /* A pooled connection the instance closed while idle: retry once on a
     * fresh one, which is safe only while nothing of the body was read
     * (chunk framing included). */
    if (ex->upstream_reused && !ex->retried && !ex->body_read && ex->inst &&
        ex->inst->state == AF_INST_READY) {
        ex->retried = true;
        ex->rstarted = false; /* the new connection's response from its start */
        af_upstream_put(ex->up, false);
        ex->up = NULL;
        /* No body byte may reach the new connection before its head. */
        ex->body_flowing = false;
        ex_connect(ex);
        return;
    }
    if (ex->up) {
        af_upstream_put(ex->up, false);
        ex->up = NULL;
    }
    if (ex->inst && ex->inst->state != AF_INST_DEAD) {
        /* Most likely the instance is dying: wait a moment for its exit so
         * the 502 can carry the last lines it wrote. */
        ex->state = AF_EX_DEATHWAIT;
        ex_arm_death_wait(ex);
        return;
    }
    ex_send_502(ex, what);
}

void af_ex_instance_died(struct af_exchange *ex)
{
    if (ex->state == AF_EX_DEATHWAIT) {
        ex_send_502(ex, "closed the connection without answering");
        return;
    }
    /* Otherwise the upstream connection reports the failure itself. */
}
