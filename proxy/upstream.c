/*
 * upstream — the instance side of an exchange. See upstream.h.
 *
 * The response head is checked by the strict scanner and split by
 * proxy/h1.h, as requests are; the body is relayed as it arrives. Its
 * framing toward the client is chosen here: the instance's Content-Length
 * when it gave one, else chunked for HTTP/1.1 clients, else the end of the
 * connection (HTTP/1.0). Reading from the instance pauses while the client's
 * output buffer is above AF_HIGH_WATER, so a slow client holds at most that
 * much of a response in memory.
 */
#include "proxy/upstream.h"

#include <errno.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/event.h>

#include "common/log.h"
#include "common/xalloc.h"
#include "proxy/exchange.h"
#include "proxy/blob.h"
#include "proxy/h1.h"
#include "proxy/instance.h"
#include "proxy/server.h"
#include "proxy/wire.h"

#define MAX_RESPONSE_HEAD (64 * 1024)
#define MAX_RESPONSE_FIELDS 1000
/* Above App Engine's largest max_concurrent_requests (80), so a busy
 * instance never has its connections closed and reopened. */
#define MAX_IDLE_PER_INSTANCE 128

static const struct af_stream_ops up_ops;

/* ---- the pool --------------------------------------------------------- */

void af_upstream_free(struct af_upstream *up)
{
    af_stream_release(&up->s);
    af_instance_unref(up->inst);
    free(up);
}

static void idle_remove(struct af_upstream *up)
{
    TAILQ_REMOVE(&up->inst->idle, up, link);
    up->inst->n_idle--;
}

void af_upstream_drain_pool(struct af_instance *inst)
{
    struct af_upstream *up;
    while ((up = TAILQ_FIRST(&inst->idle)) != NULL) {
        idle_remove(up);
        af_upstream_free(up);
    }
}

struct af_upstream *af_upstream_take(struct af_instance *inst, struct af_exchange *ex,
                                     bool *ready)
{
    struct af_upstream *up = TAILQ_FIRST(&inst->idle);
    if (up) {
        idle_remove(up);
        up->ex = ex;
        up->uses++;
        *ready = true;
        return up;
    }
    struct sockaddr_storage ss;
    socklen_t len;
    if (inst->sock_path) {
        struct sockaddr_un *sun = (struct sockaddr_un *)&ss;
        memset(sun, 0, sizeof(*sun));
        sun->sun_family = AF_UNIX;
        snprintf(sun->sun_path, sizeof(sun->sun_path), "%s", inst->sock_path);
        len = sizeof(*sun);
    } else {
        struct sockaddr_in *sin = (struct sockaddr_in *)&ss;
        memset(sin, 0, sizeof(*sin));
        sin->sin_family = AF_INET;
        sin->sin_port = htons((uint16_t)inst->tcp_port);
        sin->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        len = sizeof(*sin);
    }
    up = af_xcalloc(1, sizeof(*up));
    int rc = af_stream_connect(&up->s, inst->mod->srv->base, (struct sockaddr *)&ss, len, &up_ops,
                               up);
    if (rc < 0) {
        int e = errno;
        free(up);
        errno = e;
        return NULL;
    }
    up->inst = inst;
    af_instance_ref(inst);
    up->ex = ex;
    up->uses = 1;
    up->connected = rc == 1;
    up->s.read_max = AF_HIGH_WATER;
    up->s.low_water = AF_HIGH_WATER / 2;
    *ready = up->connected;
    return up;
}

void af_upstream_put(struct af_upstream *up, bool reusable)
{
    struct af_instance *inst = up->inst;
    up->ex = NULL;
    if (!reusable || !up->connected || inst->state != AF_INST_READY ||
        inst->n_idle >= MAX_IDLE_PER_INSTANCE ||
        evbuffer_get_length(up->s.in) > 0 || evbuffer_get_length(up->s.out) > 0) {
        af_upstream_free(up);
        return;
    }
    /* Idle: keep reading so a close by the instance is noticed at once. */
    af_stream_read(&up->s, true);
    TAILQ_INSERT_HEAD(&inst->idle, up, link);
    inst->n_idle++;
}

struct evbuffer *af_upstream_output(struct af_upstream *up)
{
    return up->s.out;
}

/* ---- the response ------------------------------------------------------ */

static bool status_has_no_body(int status)
{
    return (status >= 100 && status < 200) || status == 204 || status == 304;
}

static int malformed(struct af_exchange *ex, const char *why)
{
    ex->rwhy = why;
    return -1;
}

/*
 * A complete response head of hlen bytes at head: an interim 1xx is
 * dropped (the final head follows); a final one chooses the body's framing
 * in both directions and is written toward the client. Returns 0, -1
 * when the head is malformed, or 1 when it names a blob to serve instead
 * (nothing was written).
 */
static int response_head(struct af_exchange *ex, const char *head, size_t hlen)
{
    struct af_conn *c = ex->conn;
    struct af_h1_response rs;
    if (af_h1_parse_response(head, hlen, MAX_RESPONSE_FIELDS, &rs, &ex->resp_headers,
                             &ex->rwhy) < 0)
        return -1;
    if (rs.major != 1)
        return malformed(ex, "the HTTP version is not 1.x");
    int status = rs.status;
    if (status >= 100 && status < 200) {
        /* Interim responses (the instance never saw Expect) are not relayed. */
        if (status == 101)
            return malformed(ex, "101 Switching Protocols was never offered");
        af_headers_clear(&ex->resp_headers);
        return 0; /* an interim response ends with its head (RFC 9112 §6.3) */
    }
    struct af_h1_framing f;
    const char *why;
    if (af_h1_framing(&ex->resp_headers, &f, &why) != 0)
        return malformed(ex, why);
    ex->status = status;
    struct af_headers *h = &ex->resp_headers;
    af_headers_drop_hop_by_hop(h);
    /* X-AppEngine-BlobKey: the blob replaces the body (proxy/blob.h). The
     * scan that built h noted it; no other response pays anything. */
    if (__builtin_expect(h->blob_key, 0))
        return 1;
    bool head_only = ex->method == HTTP_HEAD || status_has_no_body(status);
    bool length_field = false;
    if (head_only) {
        length_field = f.length >= 0 && status != 204 && status != 304;
        ex->rbody = AF_RB_DONE;
    } else if (f.chunked) {
        ex->rbody = AF_RB_CHUNKED;
        af_strict_chunked_decode(&ex->rstrict);
    } else if (f.length >= 0) {
        length_field = true;
        ex->resp_left = (uint64_t)f.length;
        ex->rbody = f.length > 0 ? AF_RB_LENGTH : AF_RB_DONE;
    } else {
        ex->rbody = AF_RB_EOF;
    }
    /* The instance's connection is reusable after a body with known bounds
     * it did not ask to close. */
    ex->rkeepalive = ex->rbody != AF_RB_EOF && af_h1_persists(rs.major, rs.minor, &f);
    if (!head_only && !length_field) {
        if (ex->http_major == 1 && ex->http_minor >= 1)
            ex->chunked_out = true;
        else
            ex->close_after = true; /* HTTP/1.0: the end of the body is the close */
    }
    if (c->srv->stopping)
        ex->close_after = true;

    const char *reason = http_status_str((enum http_status)status);
    if (!reason || strcmp(reason, "<unknown>") == 0)
        reason = "Unknown";
    size_t max = 64 + strlen(reason) + af_headers_wire_size(h) + 64;
    struct evbuffer_iovec v;
    if (evbuffer_reserve_space(c->s.out, (ev_ssize_t)max, &v, 1) < 1)
        return malformed(ex, "out of memory");
    char *w = v.iov_base;
    w = AF_PUT_LIT(w, "HTTP/1.1 ");
    w = af_put_u64(w, (uint64_t)status);
    *w++ = ' ';
    w = af_put_str(w, reason);
    w = AF_PUT_LIT(w, "\r\n");
    w = af_headers_copy(h, w);
    if (length_field) {
        w = AF_PUT_LIT(w, "Content-Length: ");
        w = af_put_u64(w, (uint64_t)f.length);
        w = AF_PUT_LIT(w, "\r\n");
    } else if (ex->chunked_out) {
        w = AF_PUT_LIT(w, "Transfer-Encoding: chunked\r\n");
    }
    if (!ex->keepalive || ex->close_after)
        w = AF_PUT_LIT(w, "Connection: close\r\n");
    else if (ex->http_minor == 0)
        w = AF_PUT_LIT(w, "Connection: keep-alive\r\n");
    w = AF_PUT_LIT(w, "\r\n");
    v.iov_len = (size_t)(w - (char *)v.iov_base);
    evbuffer_commit_space(c->s.out, &v, 1);
    ex->resp_head_sent = true;
    /* 204 and 304 end with their head whatever their fields say (RFC 9112
     * §6.3); bytes an instance sends after one are never relayed, and the
     * connection, no longer in step, is not reused (af_upstream_put). */
    if (ex->rbody == AF_RB_DONE)
        ex->resp_done = true;
    return 0;
}

/* Body bytes toward the client, as chunks when the client's framing is
 * chunked. n bytes are moved from the front of in. */
static void relay_body(struct af_exchange *ex, struct evbuffer *in, size_t n)
{
    struct evbuffer *out = ex->conn->s.out;
    if (ex->chunked_out)
        af_h1_move_chunk(in, out, n);
    else
        evbuffer_remove_buffer(in, out, n);
    ex->resp_bytes += n;
}

static void body_done(struct af_exchange *ex)
{
    if (ex->chunked_out)
        evbuffer_add(ex->conn->s.out, "0\r\n\r\n", 5);
    ex->rbody = AF_RB_DONE;
    ex->resp_done = true;
}

static void up_on_read(struct af_stream *s, void *arg);

void af_upstream_start_reading(struct af_upstream *up)
{
    struct af_exchange *ex = up->ex;
    if (ex && !ex->rstarted) {
        ex->rstarted = true;
        ex->rbody = AF_RB_HEAD;
        af_strict_head(&ex->rstrict);
        ex->rscanned = 0;
    }
    up->reading_paused = false;
    af_stream_read(&up->s, true);
    /* Bytes may already wait in the input buffer from before the pause. */
    if (ex && evbuffer_get_length(up->s.in) > 0)
        up_on_read(&up->s, up);
}

void af_upstream_pause_reading(struct af_upstream *up)
{
    up->reading_paused = true;
    af_stream_read(&up->s, false);
}

static bool client_has_room(struct af_exchange *ex)
{
    return evbuffer_get_length(ex->conn->s.out) < AF_HIGH_WATER;
}

/* Reads the response from the instance's bytes and relays it. Returns 0,
 * -1 when the response is malformed (ex->rwhy says how), or 1 when the
 * head names a blob: the caller hands the exchange to proxy/blob.c. */
static int up_feed(struct af_upstream *up)
{
    struct af_exchange *ex = up->ex;
    struct evbuffer *in = up->s.in;
    size_t len;
    while ((len = evbuffer_get_length(in)) > 0 && !ex->resp_done) {
        if (!client_has_room(ex)) {
            af_upstream_pause_reading(up);
            return 0;
        }
        switch (ex->rbody) {
        case AF_RB_HEAD: {
            /* The same grammar as for requests: an app whose response a
             * client would read differently is answered 502. */
            int r = af_h1_scan_head(&ex->rstrict, in, &ex->rscanned, MAX_RESPONSE_HEAD,
                                    &ex->rwhy);
            if (r == -2)
                return malformed(ex, "the response head is larger than 64 KiB");
            if (r <= 0)
                return r;
            size_t hlen = ex->rscanned;
            const char *head = (const char *)evbuffer_pullup(in, (ev_ssize_t)hlen);
            int rh = head ? response_head(ex, head, hlen) : -1;
            if (rh != 0)
                return rh;
            evbuffer_drain(in, hlen);
            ex->rscanned = 0;
            if (ex->rbody == AF_RB_HEAD)
                af_strict_head(&ex->rstrict); /* after an interim 1xx */
            break;
        }
        case AF_RB_LENGTH: {
            size_t take = len < ex->resp_left ? len : (size_t)ex->resp_left;
            relay_body(ex, in, take);
            ex->resp_left -= take;
            if (ex->resp_left == 0)
                body_done(ex);
            break;
        }
        case AF_RB_CHUNKED: {
            uint64_t left = af_strict_data_left(&ex->rstrict);
            if (left > 0) {
                size_t take = len < left ? len : (size_t)left;
                relay_body(ex, in, take);
                af_strict_data_taken(&ex->rstrict, take);
                break;
            }
            /* Chunk sizes, extensions, CRLFs and trailers: checked, dropped. */
            int r = af_h1_skip_chunk_framing(&ex->rstrict, in, &ex->rwhy);
            if (r < 0)
                return -1;
            if (r == 1)
                body_done(ex);
            break;
        }
        case AF_RB_EOF:
            relay_body(ex, in, len);
            break;
        case AF_RB_DONE:
            return 0;
        }
        af_stream_consumed(&up->s);
    }
    return 0;
}

static void up_on_read(struct af_stream *s, void *arg)
{
    struct af_upstream *up = arg;
    struct af_exchange *ex = up->ex;
    if (!ex) {
        /* An idle connection must be silent; anything else is unusable. */
        idle_remove(up);
        af_upstream_free(up);
        return;
    }
    if (up->reading_paused)
        return;
    struct af_conn *c = ex->conn;
    af_conn_enter(c);
    int r = up_feed(up);
    if (r > 0) {
        af_blob_serve_begin(ex);
    } else if (r < 0) {
        af_ex_fail(ex, 502, "Instance %s sent a malformed response: %s.", up->inst->name,
                   ex->rwhy ? ex->rwhy : "it breaks the HTTP/1.1 grammar");
    } else if (ex->resp_done) {
        af_ex_response_done(ex);
    } else if (!c->dead) {
        af_stream_flush(&c->s); /* what this read relayed */
    }
    af_conn_leave(c);
}

static void up_on_drain(struct af_stream *s, void *arg)
{
    struct af_upstream *up = arg;
    struct af_exchange *ex = up->ex;
    if (!ex)
        return;
    /* The instance took the queued body: read more of it from the client. */
    struct af_conn *c = ex->conn;
    af_conn_enter(c);
    if (!ex->req_body_done && ex->body_flowing)
        af_conn_pump(c);
    af_conn_leave(c);
}

static void up_on_event(struct af_stream *s, enum af_stream_event what, void *arg)
{
    struct af_upstream *up = arg;
    struct af_exchange *ex = up->ex;
    if (what == AF_STREAM_CONNECTED) {
        up->connected = true;
        if (ex) {
            struct af_conn *c = ex->conn;
            af_conn_enter(c);
            af_ex_upstream_ready(ex);
            af_conn_leave(c);
        }
        return;
    }
    if (!ex) {
        idle_remove(up);
        af_upstream_free(up);
        return;
    }
    struct af_conn *c = ex->conn;
    af_conn_enter(c);
    const char *what_s = !up->connected ? "refused the connection"
                                        : "closed the connection without answering";
    if (ex->resp_head_sent && !ex->resp_done) {
        /* The end of a body delimited by the close (no length, no chunks). */
        if (up_feed(up) == 0 && !ex->resp_done && ex->rbody == AF_RB_EOF)
            body_done(ex);
        if (ex->resp_done)
            af_ex_response_done(ex);
        else
            af_ex_upstream_failed(ex, "closed the connection");
    } else if (!ex->resp_done) {
        af_ex_upstream_failed(ex, what_s);
    }
    af_conn_leave(c);
}

static const struct af_stream_ops up_ops = {
    .on_read = up_on_read,
    .on_drain = up_on_drain,
    .on_event = up_on_event,
};
