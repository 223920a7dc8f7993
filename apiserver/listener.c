/*
 * listener — the API listener thread (see listener.h and docs/api.md).
 *
 * One libevent loop, owned by this thread alone, serves two transports:
 *
 *  - framed: the Unix socket. Each message is a 4-byte big-endian length and
 *    that many bytes of encoded remote_api.Request; the reply is framed the
 *    same way with an encoded Response.
 *  - http: HTTP/1.1 on TCP, parsed with http-parser (the same parser as the
 *    front end, so the project has one HTTP parser to fuzz and trust).
 *    POST on any path is a call; POST /clear resets services; GET / answers
 *    an info document.
 *
 * Every connection is a small state machine:
 *
 *   READING --call submitted--> WAITING --reply from backend--> WRITING
 *      ^                                                           |
 *      +-----------------reply flushed (keep-alive)----------------+
 *   any state --peer gone, error, timeout--> CLOSED
 *
 * Only READING parses input, so there is at most one call per connection
 * with the backend and replies come back in order. While WAITING or WRITING
 * the socket is still read up to a small high-water mark, so a client that
 * disconnects is noticed; the bytes read (a pipelined next request) wait in
 * the input buffer.
 *
 * A CLOSED connection whose call is still with the backend is kept, socket
 * freed, until the job comes back, and only then freed: the job carries the
 * connection pointer, and nobody but this thread ever dereferences it, so a
 * client disconnecting mid-call costs a dropped reply and never a
 * use-after-free.
 */
#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <http_parser.h>

#include "apiserver/envelope.h"
#include "apiserver/listener.h"
#include "common/log.h"
#include "common/xalloc.h"

/* While a call is with the backend, read at most this much ahead. Enough to
 * see a disconnect and a pipelined request or two; small enough that a client
 * streaming garbage cannot make us buffer without bound. */
#define WAIT_READ_HIGHWAT (64 * 1024)
/* An idle keep-alive HTTP connection is closed after this long. Longer than
 * the 90 s the official Go library keeps idle connections, so it is the
 * client that closes first and never reuses a connection we just closed. */
#define HTTP_IDLE_TIMEOUT_S 120
/* A client that does not read its reply for this long is dropped. */
#define WRITE_TIMEOUT_S 60
/* Bounds on the parts of an HTTP request we keep. Longer header names or
 * values cannot be ones we care about and are ignored; a longer URL is an
 * error. http-parser itself caps the whole header block (80 KiB). */
#define HTTP_URL_MAX 4096
#define HTTP_FIELD_MAX 64
#define HTTP_VALUE_MAX 256
/* The longest deadline honoured from a header: a day. */
#define MAX_DEADLINE_S 86400.0

enum conn_kind {
    CONN_FRAMED,
    CONN_HTTP,
};

enum conn_state {
    CONN_READING, /* parsing the next request */
    CONN_WAITING, /* a job is with the backend */
    CONN_WRITING, /* the reply is being flushed */
    CONN_CLOSED,  /* socket freed; kept only until its job returns */
};

/* What we keep of one HTTP request while parsing it. */
struct http_req {
    char url[HTTP_URL_MAX + 1];
    size_t url_len;
    bool url_too_long;

    char field[HTTP_FIELD_MAX + 1];
    size_t field_len;
    char value[HTTP_VALUE_MAX + 1];
    size_t value_len;
    bool in_value; /* the last header callback was a value */

    char host[HTTP_VALUE_MAX + 1]; /* the Host field */
    size_t host_len;
    bool has_host;
    bool host_too_long;

    bool has_deadline;
    double deadline_s;
    bool expect_continue;
    bool keep_alive;
    bool upgrade;
    bool too_large; /* body over AF_API_MAX_MESSAGE: answered without reading it */

    uint8_t *body; /* owned */
    size_t body_len, body_cap;
};

struct conn {
    struct conn *prev, *next; /* l->conns: every connection, for shutdown */
    struct af_api_listener *l;
    enum conn_kind kind;
    enum conn_state state;
    struct bufferevent *bev; /* NULL once CLOSED */
    bool in_backend;         /* a job pointing here has not come back yet */
    bool close_after_write;  /* close once the reply is flushed */
    bool read_paused;        /* reading stopped: WAIT_READ_HIGHWAT bytes ahead */
    bool processing;         /* inside conn_process: parsing input */
    unsigned long id;        /* for log lines */

    /* CONN_HTTP only. */
    http_parser parser;
    struct http_req req;
};

struct af_api_listener {
    struct event_base *base;
    pthread_t thread;
    bool thread_started;
    struct evconnlistener *http_lev[2];
    struct evconnlistener *framed_lev;
    struct event *reply_ev;  /* outbox eventfd readable */
    struct event *stop_ev;   /* stop_efd readable */
    struct event *resume_ev; /* re-enables accepting after EMFILE */
    int stop_efd;
    struct af_api_jobq *inbox, *outbox;
    int default_deadline_ms;
    const char *info_json;
    const struct af_hostcheck *hostcheck;
    struct conn *conns;
    unsigned long next_id;
};

static const http_parser_settings http_settings;

/* ---- connection lifecycle ---------------------------------------------- */

static void http_req_reset(struct http_req *r)
{
    free(r->body);
    memset(r, 0, sizeof(*r));
}

static void conn_free(struct conn *c)
{
    if (c->prev)
        c->prev->next = c->next;
    else
        c->l->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    http_req_reset(&c->req);
    free(c);
}

/* Idempotent. Frees c at once unless a job still points to it; after this
 * call the caller must not touch c. */
static void conn_close(struct conn *c)
{
    if (c->state == CONN_CLOSED)
        return;
    c->state = CONN_CLOSED;
    if (c->bev) {
        bufferevent_free(c->bev);
        c->bev = NULL;
    }
    http_req_reset(&c->req);
    if (!c->in_backend)
        conn_free(c);
}

/*
 * Timeouts and read-ahead are set up once per connection (accept_conn), not
 * at every state change: re-arming them costs libevent an event_add per
 * event, and most state changes would not change them.
 *
 *  - Write timeout (both transports): WRITE_TIMEOUT_S. libevent only arms it
 *    while the output buffer holds bytes the socket did not take, which is
 *    only ever the case in WRITING: so it is "a client that does not read
 *    its reply" and nothing else.
 *  - Read timeout (HTTP only): the idle limit, HTTP_IDLE_TIMEOUT_S. libevent
 *    restarts it at every read; conn_enter_reading restarts it when the
 *    connection becomes idle. It also runs while a call is out, where it
 *    means nothing: on_event re-enables reading instead of closing when it
 *    fires outside READING (at most once per HTTP_IDLE_TIMEOUT_S of a long
 *    call). The framed socket has no read timeout.
 *  - Read-ahead while a call is out: on_read stops reading once the input
 *    holds WAIT_READ_HIGHWAT bytes (c->read_paused), conn_enter_reading
 *    resumes. No watermark: one would add an evbuffer callback to every
 *    read and drain, and an event_add to every change of the mark.
 */
static void conn_enter_reading(struct conn *c)
{
    c->state = CONN_READING;
    /* For HTTP, enabling an enabled read re-adds the event with its timeout:
     * that is what restarts the idle timer. */
    if (c->read_paused || c->kind == CONN_HTTP)
        bufferevent_enable(c->bev, EV_READ);
    c->read_paused = false;
}

static void conn_enter_waiting(struct conn *c)
{
    /* The call's own deadline bounds the wait, not an idle timer. */
    c->state = CONN_WAITING;
}

/*
 * The reply is in c's output: write it at once. Most replies are small and
 * the socket takes them whole, so the write event (two epoll_ctl calls per
 * reply) is armed only when it does not — or when the connection closes
 * after the reply, a rare path left to libevent, which calls on_write once
 * everything is written. Finishing a reply inline (conn_reply_written) may
 * parse the next pipelined request, so it is done only when c is not
 * already parsing (a reply from the backend, in on_replies); a reply made
 * while parsing (c->processing: an error answered by the listener itself)
 * only moves c back to READING, and the parsing loop goes on with the next
 * request.
 */
static void conn_reply_written(struct conn *c);

/* Writes c's output at once. Returns true when all of it was written;
 * otherwise (EAGAIN, a partial write, an error) libevent finishes the write
 * under the write timeout, or reports the error to on_event, and calls
 * on_write once the output is empty. */
static bool conn_write_now(struct conn *c)
{
    struct evbuffer *out = bufferevent_get_output(c->bev);
    /* A socket bufferevent freezes the front of its output so that only its
     * own write callback drains it; write the way that callback does. */
    evbuffer_unfreeze(out, 1);
    int n = evbuffer_write(out, bufferevent_getfd(c->bev));
    evbuffer_freeze(out, 1);
    if (n >= 0 && evbuffer_get_length(out) == 0)
        return true;
    bufferevent_enable(c->bev, EV_WRITE);
    return false;
}

static void conn_enter_writing(struct conn *c)
{
    c->state = CONN_WRITING;
    if (c->close_after_write) {
        bufferevent_enable(c->bev, EV_WRITE);
        return;
    }
    if (!conn_write_now(c))
        return;
    if (c->processing)
        conn_enter_reading(c);
    else
        conn_reply_written(c);
}

static void free_cleanup(const void *data, size_t len, void *arg)
{
    free((void *)data);
}

/* Appends buf to c's output without copying; takes buf. */
static void conn_add_owned(struct conn *c, uint8_t *buf, size_t len)
{
    struct evbuffer *out = bufferevent_get_output(c->bev);
    if (len == 0 || evbuffer_add_reference(out, buf, len, free_cleanup, NULL) != 0)
        free(buf);
}

/* ---- replies ------------------------------------------------------------ */

struct status_line {
    int code;
    const char *reason;
};

static const struct status_line status_lines[] = {
    {200, "OK"},           {400, "Bad Request"},
    {404, "Not Found"},    {405, "Method Not Allowed"},
    {414, "URI Too Long"}, {500, "Internal Server Error"},
};

static const char *reason_phrase(int code)
{
    for (size_t i = 0; i < sizeof(status_lines) / sizeof(status_lines[0]); i++)
        if (status_lines[i].code == code)
            return status_lines[i].reason;
    return "Unknown";
}

/* Appends the head of an HTTP response with a body of len bytes to c's
 * output. */
static void http_respond_head(struct conn *c, int status, const char *ctype, size_t len)
{
    struct evbuffer *out = bufferevent_get_output(c->bev);
    bool keep = c->req.keep_alive && !c->close_after_write;
    const char *conn_hdr = "";
    if (!keep)
        conn_hdr = "Connection: close\r\n";
    else if (c->parser.http_major == 1 && c->parser.http_minor == 0)
        conn_hdr = "Connection: keep-alive\r\n"; /* HTTP/1.0 needs it said (RFC 7230 A.1.2) */
    evbuffer_add_printf(out,
                        "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n"
                        "%s%s\r\n",
                        status, reason_phrase(status), ctype, len, conn_hdr,
                        status == 405 ? "Allow: GET, POST\r\n" : "");
    if (!keep)
        c->close_after_write = true;
}

/* Sends an HTTP response with body (owned, malloc'd, may be NULL when len
 * is 0) and moves c to WRITING. */
static void http_respond(struct conn *c, int status, const char *ctype, uint8_t *body, size_t len)
{
    http_respond_head(c, status, ctype, len);
    conn_add_owned(c, body, len);
    conn_enter_writing(c);
}

static void http_respond_text(struct conn *c, int status, const char *text)
{
    char *body = af_xstrdup(text);
    http_respond(c, status, "text/plain; charset=utf-8", (uint8_t *)body, strlen(body));
}

/* Sends the Response envelope for res (borrowed) on either transport,
 * packed straight into c's output: no buffer of its own. */
static void conn_send_result(struct conn *c, const struct af_result *res)
{
    struct af_envelope_response r;
    size_t len = af_envelope_response_init(&r, res);
    struct evbuffer *out = bufferevent_get_output(c->bev);
    size_t hdr = 0;
    if (c->kind == CONN_HTTP)
        http_respond_head(c, 200, "application/octet-stream", len);
    else
        hdr = 4; /* the frame's big-endian length */
    /* One extent, so the envelope is packed in one piece. */
    struct evbuffer_iovec v;
    if (evbuffer_reserve_space(out, (ev_ssize_t)(hdr + len), &v, 1) != 1) {
        /* Only fails when out of memory: the one OOM policy (xalloc.h). */
        fprintf(stderr, "appfront: out of memory reserving %zu bytes\n", hdr + len);
        abort();
    }
    uint8_t *p = v.iov_base;
    if (hdr) {
        p[0] = (uint8_t)(len >> 24);
        p[1] = (uint8_t)(len >> 16);
        p[2] = (uint8_t)(len >> 8);
        p[3] = (uint8_t)len;
    }
    af_envelope_response_pack(&r, p + hdr);
    v.iov_len = hdr + len;
    evbuffer_commit_space(out, &v, 1);
    conn_enter_writing(c);
}

static void conn_send_rpc_error(struct conn *c, int code, const char *detail)
{
    struct af_result res = {.kind = AF_RESULT_RPC_ERROR, .code = code, .detail = (char *)detail};
    conn_send_result(c, &res);
}

/* ---- calls -------------------------------------------------------------- */

/* Gives job to the backend on behalf of c. */
static void conn_submit(struct conn *c, struct af_api_job *job)
{
    job->owner = c;
    c->in_backend = true;
    conn_enter_waiting(c);
    af_api_jobq_push(c->l->inbox, job);
}

/* Decodes one encoded Request from the wire and submits it, or answers
 * PARSE_ERROR. buf is borrowed. deadline_s < 0: none given. */
static void conn_call(struct conn *c, const uint8_t *buf, size_t len, bool has_deadline,
                      double deadline_s)
{
    struct af_api_job *job = af_api_job_new(AF_API_JOB_CALL);
    job->req = af_envelope_request_decode(&job->arena, buf, len);
    if (!job->req) {
        af_api_job_free(job);
        af_debug("api: connection %lu: undecodable envelope of %zu bytes", c->id, len);
        conn_send_rpc_error(c, AF_RPC_PARSE_ERROR,
                            "the request is not a valid remote_api.Request envelope");
        return;
    }
    uint64_t now = af_api_now_ns();
    uint64_t budget_ns;
    if (has_deadline)
        budget_ns = deadline_s <= 0 ? 0 : (uint64_t)(deadline_s * 1e9);
    else
        budget_ns = (uint64_t)c->l->default_deadline_ms * 1000000u;

    job->deadline_ns = now + budget_ns;
    conn_submit(c, job);
}

/* ---- framed transport --------------------------------------------------- */

static void framed_process(struct conn *c)
{
    struct evbuffer *in = bufferevent_get_input(c->bev);
    while (c->state == CONN_READING) {
        uint8_t hdr[4];
        if (evbuffer_copyout(in, hdr, sizeof(hdr)) < (ev_ssize_t)sizeof(hdr))
            return;
        uint32_t len =
            (uint32_t)hdr[0] << 24 | (uint32_t)hdr[1] << 16 | (uint32_t)hdr[2] << 8 | hdr[3];
        if (len > AF_API_MAX_MESSAGE) {
            /* The stream cannot be resynchronised without reading the whole
             * frame, which is what the limit exists to avoid: answer, then
             * close. */
            char detail[96];
            snprintf(detail, sizeof(detail), "frame of %u bytes exceeds the %u byte limit", len,
                     AF_API_MAX_MESSAGE);
            af_warn("api: connection %lu: %s; closing it", c->id, detail);
            c->close_after_write = true;
            conn_send_rpc_error(c, AF_RPC_REQUEST_TOO_LARGE, detail);
            return;
        }
        if (evbuffer_get_length(in) < sizeof(hdr) + (size_t)len)
            return;
        const uint8_t *frame = evbuffer_pullup(in, (ev_ssize_t)(sizeof(hdr) + len));
        conn_call(c, frame + sizeof(hdr), len, false, 0);
        evbuffer_drain(in, sizeof(hdr) + len);
    }
}

/* ---- HTTP transport ----------------------------------------------------- */

static void append_bounded(char *dst, size_t *len, size_t cap, const char *src, size_t n,
                           bool *overflow)
{
    if (*len + n > cap) {
        if (overflow)
            *overflow = true;
        n = *len < cap ? cap - *len : 0;
    }
    memcpy(dst + *len, src, n);
    *len += n;
    dst[*len] = '\0';
}

static void http_header_done(struct http_req *r)
{
    if (r->field_len < HTTP_FIELD_MAX && strcasecmp(r->field, "Host") == 0) {
        /* Checked whole in http_dispatch: a cut one is refused, not ignored. */
        r->has_host = true;
        r->host_too_long = r->value_len >= HTTP_VALUE_MAX;
        memcpy(r->host, r->value, r->value_len + 1);
        r->host_len = r->value_len;
        return;
    }
    if (r->field_len >= HTTP_FIELD_MAX || r->value_len >= HTTP_VALUE_MAX)
        return; /* truncated: not a header we interpret */
    if (strcasecmp(r->field, "X-Google-RPC-Service-Deadline") == 0) {
        /* Seconds as a decimal float (strconv.FormatFloat(..., 'f', -1) in
         * the Go library). Unparsable: ignore it and use the default. */
        char *end;
        double s = strtod(r->value, &end);
        if (end != r->value && !isnan(s)) {
            r->has_deadline = true;
            r->deadline_s = s > MAX_DEADLINE_S ? MAX_DEADLINE_S : s;
        }
    } else if (strcasecmp(r->field, "Expect") == 0 && strcasecmp(r->value, "100-continue") == 0) {
        r->expect_continue = true;
    }
}

static int on_message_begin(http_parser *p)
{
    struct conn *c = p->data;
    http_req_reset(&c->req);
    return 0;
}

static int on_url(http_parser *p, const char *at, size_t n)
{
    struct conn *c = p->data;
    append_bounded(c->req.url, &c->req.url_len, HTTP_URL_MAX, at, n, &c->req.url_too_long);
    return 0;
}

static int on_header_field(http_parser *p, const char *at, size_t n)
{
    struct http_req *r = &((struct conn *)p->data)->req;
    if (r->in_value) {
        http_header_done(r);
        r->in_value = false;
        r->field_len = r->value_len = 0;
        r->field[0] = r->value[0] = '\0';
    }
    append_bounded(r->field, &r->field_len, HTTP_FIELD_MAX, at, n, NULL);
    return 0;
}

static int on_header_value(http_parser *p, const char *at, size_t n)
{
    struct http_req *r = &((struct conn *)p->data)->req;
    r->in_value = true;
    append_bounded(r->value, &r->value_len, HTTP_VALUE_MAX, at, n, NULL);
    return 0;
}

static int on_headers_complete(http_parser *p)
{
    struct conn *c = p->data;
    struct http_req *r = &c->req;
    if (r->in_value)
        http_header_done(r);
    r->in_value = false;
    r->keep_alive = http_should_keep_alive(p);
    r->upgrade = p->upgrade;

    /* Without Content-Length (chunked) the bound is checked in on_body. */
    bool has_length = !(p->flags & F_CHUNKED) && p->content_length != ULLONG_MAX;
    if (has_length && p->content_length > AF_API_MAX_MESSAGE) {
        r->too_large = true;
        http_parser_pause(p, 1);
        return 0;
    }
    if (r->expect_continue && p->method == HTTP_POST) {
        evbuffer_add_printf(bufferevent_get_output(c->bev), "HTTP/1.1 100 Continue\r\n\r\n");
        conn_write_now(c);
    }
    return 0;
}

static int on_body(http_parser *p, const char *at, size_t n)
{
    struct http_req *r = &((struct conn *)p->data)->req;
    if (n > AF_API_MAX_MESSAGE - r->body_len) {
        r->too_large = true;
        http_parser_pause(p, 1);
        return 0;
    }
    if (r->body_len + n > r->body_cap) {
        /* Grow by doubling, never past the limit: what a client declares
         * is not allocated before it arrives. */
        size_t cap = r->body_cap ? r->body_cap : 4096;
        while (cap < r->body_len + n)
            cap *= 2;
        if (cap > AF_API_MAX_MESSAGE)
            cap = AF_API_MAX_MESSAGE;
        r->body = af_xrealloc(r->body, cap);
        r->body_cap = cap;
    }
    memcpy(r->body + r->body_len, at, n);
    r->body_len += n;
    return 0;
}

static int on_message_complete(http_parser *p)
{
    struct conn *c = p->data;
    c->req.keep_alive = http_should_keep_alive(p);
    /* Stop here: the next pipelined request is parsed only after this one is
     * answered, which is what keeps one call in flight per connection. */
    http_parser_pause(p, 1);
    return 0;
}

static const http_parser_settings http_settings = {
    .on_message_begin = on_message_begin,
    .on_url = on_url,
    .on_header_field = on_header_field,
    .on_header_value = on_header_value,
    .on_headers_complete = on_headers_complete,
    .on_body = on_body,
    .on_message_complete = on_message_complete,
};

/* Returns the value of query parameter name in the query string q (not
 * decoded; the caller bounds it), or NULL. */
static const char *query_param(const char *q, size_t qlen, const char *name, size_t *vlen)
{
    size_t nlen = strlen(name);
    const char *p = q, *end = q + qlen;
    while (p < end) {
        const char *amp = memchr(p, '&', (size_t)(end - p));
        const char *stop = amp ? amp : end;
        if ((size_t)(stop - p) > nlen && memcmp(p, name, nlen) == 0 && p[nlen] == '=') {
            *vlen = (size_t)(stop - p - (ptrdiff_t)nlen - 1);
            return p + nlen + 1;
        }
        p = stop + 1;
    }
    return NULL;
}

static void http_clear(struct conn *c, const char *query, size_t qlen)
{
    struct af_api_job *job = af_api_job_new(AF_API_JOB_CLEAR);
    job->deadline_ns = UINT64_MAX;
    size_t vlen = 0;
    const char *stub = query ? query_param(query, qlen, "stub", &vlen) : NULL;
    if (stub && vlen > 0)
        job->stub = af_xstrndup(stub, vlen < 64 ? vlen : 64);
    conn_submit(c, job);
}

/* One complete request has been parsed: answer it or submit it. */
static void http_dispatch(struct conn *c)
{
    struct http_req *r = &c->req;
    if (r->too_large) {
        char detail[96];
        snprintf(detail, sizeof(detail), "request body exceeds the %u byte limit",
                 AF_API_MAX_MESSAGE);
        af_warn("api: connection %lu: %s; closing it", c->id, detail);
        c->close_after_write = true;
        conn_send_rpc_error(c, AF_RPC_REQUEST_TOO_LARGE, detail);
        return;
    }
    if (r->upgrade) {
        c->close_after_write = true;
        http_respond_text(c, 400, "protocol upgrades are not supported\n");
        return;
    }
    if (r->url_too_long) {
        c->close_after_write = true;
        http_respond_text(c, 414, "URL too long\n");
        return;
    }
    if (r->has_host && (r->host_too_long ||
                        !af_hostcheck_ok(c->l->hostcheck, r->host, r->host_len))) {
        c->close_after_write = true;
        char msg[512];
        af_hostcheck_refusal(msg, sizeof(msg) - 1, "The API server", r->host, r->host_len);
        strcat(msg, "\n");
        http_respond_text(c, 403, msg);
        return;
    }

    struct http_parser_url u;
    http_parser_url_init(&u);
    bool is_connect = c->parser.method == HTTP_CONNECT;
    if (http_parser_parse_url(r->url, r->url_len, is_connect, &u) != 0 ||
        !(u.field_set & (1 << UF_PATH))) {
        http_respond_text(c, 400, "unparsable request target\n");
        return;
    }
    const char *path = r->url + u.field_data[UF_PATH].off;
    size_t plen = u.field_data[UF_PATH].len;
    const char *query = NULL;
    size_t qlen = 0;
    if (u.field_set & (1 << UF_QUERY)) {
        query = r->url + u.field_data[UF_QUERY].off;
        qlen = u.field_data[UF_QUERY].len;
    }

    switch (c->parser.method) {
    case HTTP_POST:
        if (plen == 6 && memcmp(path, "/clear", 6) == 0)
            http_clear(c, query, qlen);
        else
            conn_call(c, r->body, r->body_len, r->has_deadline, r->deadline_s);
        return;
    case HTTP_GET:
        if (plen == 1 && path[0] == '/') {
            char *body = af_xstrdup(c->l->info_json);
            http_respond(c, 200, "application/json", (uint8_t *)body, strlen(body));
        } else {
            http_respond_text(c, 404, "not found: the API server answers GET / and POST\n");
        }
        return;
    default:
        http_respond_text(c, 405, "the API server answers GET / and POST\n");
        return;
    }
}

static void http_process(struct conn *c)
{
    struct evbuffer *in = bufferevent_get_input(c->bev);
    while (c->state == CONN_READING && evbuffer_get_length(in) > 0) {
        struct evbuffer_iovec v;
        if (evbuffer_peek(in, -1, NULL, &v, 1) < 1)
            return;
        size_t n = http_parser_execute(&c->parser, &http_settings, v.iov_base, v.iov_len);
        evbuffer_drain(in, n);
        enum http_errno e = HTTP_PARSER_ERRNO(&c->parser);
        if (e == HPE_PAUSED) {
            http_parser_pause(&c->parser, 0);
            http_dispatch(c);
            /* The call holds its own copy: do not keep up to 32 MiB per
             * idle connection. */
            free(c->req.body);
            c->req.body = NULL;
            c->req.body_len = c->req.body_cap = 0;
            continue;
        }
        if (e != HPE_OK || n < v.iov_len) {
            af_debug("api: connection %lu: bad HTTP request: %s", c->id,
                     e != HPE_OK ? http_errno_description(e) : "trailing data");
            c->req.keep_alive = false;
            c->close_after_write = true;
            char *msg = af_xasprintf("bad HTTP request: %s\n",
                                     e != HPE_OK ? http_errno_description(e) : "trailing data");
            http_respond(c, 400, "text/plain; charset=utf-8", (uint8_t *)msg, strlen(msg));
            return;
        }
    }
}

/* Parses what c's input holds while c is READING. Never frees c. */
static void conn_process(struct conn *c)
{
    c->processing = true;
    if (c->kind == CONN_HTTP)
        http_process(c);
    else
        framed_process(c);
    c->processing = false;
}

/* c's reply is all written: close, or go on with the next request. */
static void conn_reply_written(struct conn *c)
{
    if (c->close_after_write) {
        conn_close(c);
        return;
    }
    conn_enter_reading(c);
    conn_process(c); /* a pipelined request may already be buffered */
}

/* ---- bufferevent callbacks ---------------------------------------------- */

static void on_read(struct bufferevent *bev, void *arg)
{
    struct conn *c = arg;
    if (c->state == CONN_READING) {
        conn_process(c);
    } else if (evbuffer_get_length(bufferevent_get_input(bev)) >= WAIT_READ_HIGHWAT) {
        /* The bytes wait for the current call to finish; enough of them. */
        bufferevent_disable(bev, EV_READ);
        c->read_paused = true;
    }
}

static void on_write(struct bufferevent *bev, void *arg)
{
    struct conn *c = arg;
    /* Libevent wrote what conn_enter_writing could not; the next reply is
     * written at once again. */
    bufferevent_disable(bev, EV_WRITE);
    if (c->state == CONN_WRITING)
        conn_reply_written(c);
}

static void on_event(struct bufferevent *bev, short what, void *arg)
{
    struct conn *c = arg;
    if ((what & BEV_EVENT_TIMEOUT) && (what & BEV_EVENT_READING) && c->state != CONN_READING) {
        /* The idle timer ran out while a call was out or its reply was
         * being written: the connection is not idle. libevent disabled
         * reading; enabling it again restarts the timer. */
        bufferevent_enable(bev, EV_READ);
        return;
    }
    if (what & BEV_EVENT_ERROR)
        af_debug("api: connection %lu: %s", c->id,
                 evutil_socket_error_to_string(EVUTIL_SOCKET_ERROR()));
    else if (what & BEV_EVENT_TIMEOUT)
        af_debug("api: connection %lu: timed out", c->id);
    /* EOF, error or timeout: the client is gone or stuck. A call with the
     * backend finishes; its reply will find the connection CLOSED. */
    conn_close(c);
}

/* ---- accepting ---------------------------------------------------------- */

static void accept_conn(struct af_api_listener *l, evutil_socket_t fd, enum conn_kind kind)
{
    struct bufferevent *bev = bufferevent_socket_new(l->base, fd, BEV_OPT_CLOSE_ON_FREE);
    if (!bev) {
        close(fd);
        return;
    }
    if (kind == CONN_HTTP) {
        /* Replies are single small writes answering single requests: Nagle
         * would only add a delayed-ACK round trip to each. */
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    }
    struct conn *c = af_xcalloc(1, sizeof(*c));
    c->l = l;
    c->kind = kind;
    c->bev = bev;
    c->id = ++l->next_id;
    c->next = l->conns;
    if (l->conns)
        l->conns->prev = c;
    l->conns = c;
    if (kind == CONN_HTTP) {
        http_parser_init(&c->parser, HTTP_REQUEST);
        c->parser.data = c;
    }
    bufferevent_setcb(bev, on_read, on_write, on_event, c);
    /* Replies are written at once; see conn_enter_writing. */
    bufferevent_disable(bev, EV_WRITE);
    /* Once for the connection's life: see conn_enter_reading. */
    struct timeval rt = {.tv_sec = HTTP_IDLE_TIMEOUT_S}, wt = {.tv_sec = WRITE_TIMEOUT_S};
    bufferevent_set_timeouts(bev, kind == CONN_HTTP ? &rt : NULL, &wt);
    c->state = CONN_READING;
    bufferevent_enable(bev, EV_READ);
}

static void on_accept_http(struct evconnlistener *lev, evutil_socket_t fd, struct sockaddr *sa,
                           int salen, void *arg)
{
    accept_conn(arg, fd, CONN_HTTP);
}

static void on_accept_framed(struct evconnlistener *lev, evutil_socket_t fd, struct sockaddr *sa,
                             int salen, void *arg)
{
    accept_conn(arg, fd, CONN_FRAMED);
}

static void set_accepting(struct af_api_listener *l, bool on)
{
    for (int i = 0; i < 2; i++)
        if (l->http_lev[i])
            (on ? evconnlistener_enable : evconnlistener_disable)(l->http_lev[i]);
    if (l->framed_lev)
        (on ? evconnlistener_enable : evconnlistener_disable)(l->framed_lev);
}

static void on_resume_accept(evutil_socket_t fd, short what, void *arg)
{
    set_accepting(arg, true);
}

static void on_accept_error(struct evconnlistener *lev, void *arg)
{
    struct af_api_listener *l = arg;
    int err = EVUTIL_SOCKET_ERROR();
    /* Out of descriptors: the pending connection stays in the backlog and
     * the listener stays readable, so retrying at once would spin. Pause
     * accepting briefly; finishing connections free descriptors. */
    af_warn("api: accept failed: %s; pausing accepts for 100 ms",
            evutil_socket_error_to_string(err));
    set_accepting(l, false);
    struct timeval tv = {.tv_usec = 100 * 1000};
    evtimer_add(l->resume_ev, &tv);
}

/* ---- replies from the backend ------------------------------------------- */

static void on_replies(evutil_socket_t fd, short what, void *arg)
{
    struct af_api_listener *l = arg;
    bool closed;
    struct af_api_job *job = af_api_jobq_take_all(l->outbox, &closed);
    while (job) {
        struct af_api_job *next = job->next;
        struct conn *c = job->owner;
        c->in_backend = false;
        if (c->state == CONN_CLOSED) {
            af_debug("api: connection %lu went away before its reply; dropped", c->id);
            conn_free(c);
        } else if (job->kind == AF_API_JOB_CALL) {
            conn_send_result(c, &job->res);
        } else {
            http_respond(c, job->status, "text/plain; charset=utf-8", job->reply, job->reply_len);
            job->reply = NULL;
        }
        af_api_job_free(job);
        job = next;
    }
}

static void on_stop(evutil_socket_t fd, short what, void *arg)
{
    struct af_api_listener *l = arg;
    event_base_loopbreak(l->base);
}

static void *listener_main(void *arg)
{
    struct af_api_listener *l = arg;
    pthread_setname_np(pthread_self(), "af-api-listen"); /* top -H, perf, gdb */
    event_base_dispatch(l->base);
    return NULL;
}

/* ---- start and stop ----------------------------------------------------- */

static struct evconnlistener *listen_on(struct af_api_listener *l, int fd, evconnlistener_cb cb)
{
    /* Backlog 0: the socket is already listening with SOMAXCONN, and any
     * other value would make libevent call listen() again with a smaller
     * one. */
    struct evconnlistener *lev =
        evconnlistener_new(l->base, cb, l, LEV_OPT_CLOSE_ON_FREE | LEV_OPT_CLOSE_ON_EXEC, 0, fd);
    if (lev)
        evconnlistener_set_error_cb(lev, on_accept_error);
    else
        close(fd);
    return lev;
}

static void listener_release(struct af_api_listener *l)
{
    for (int i = 0; i < 2; i++)
        if (l->http_lev[i])
            evconnlistener_free(l->http_lev[i]);
    if (l->framed_lev)
        evconnlistener_free(l->framed_lev);
    l->http_lev[0] = l->http_lev[1] = l->framed_lev = NULL;
}

int af_api_listener_start(const struct af_api_listener_config *cfg, struct af_api_listener **out)
{
    struct af_api_listener *l = af_xcalloc(1, sizeof(*l));
    int rc = 0;
    l->inbox = cfg->inbox;
    l->outbox = cfg->outbox;
    l->default_deadline_ms = cfg->default_deadline_ms > 0 ? cfg->default_deadline_ms : 60000;
    l->info_json = cfg->info_json;
    l->hostcheck = cfg->hostcheck;
    l->stop_efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    l->base = event_base_new();
    if (l->stop_efd < 0 || !l->base) {
        rc = l->stop_efd < 0 ? -errno : -ENOMEM;
        goto fail_close_fds;
    }

    for (int i = 0; i < 2; i++)
        if (cfg->http_fds[i] >= 0 &&
            !(l->http_lev[i] = listen_on(l, cfg->http_fds[i], on_accept_http)))
            rc = -ENOMEM;
    if (cfg->framed_fd >= 0 && !(l->framed_lev = listen_on(l, cfg->framed_fd, on_accept_framed)))
        rc = -ENOMEM;
    if (rc)
        goto fail_listeners;

    l->reply_ev = event_new(l->base, l->outbox->efd, EV_READ | EV_PERSIST, on_replies, l);
    l->stop_ev = event_new(l->base, l->stop_efd, EV_READ | EV_PERSIST, on_stop, l);
    l->resume_ev = evtimer_new(l->base, on_resume_accept, l);
    if (!l->reply_ev || !l->stop_ev || !l->resume_ev) {
        rc = -ENOMEM;
        goto fail_listeners;
    }
    event_add(l->reply_ev, NULL);
    event_add(l->stop_ev, NULL);

    rc = -pthread_create(&l->thread, NULL, listener_main, l);
    if (rc)
        goto fail_listeners;
    l->thread_started = true;
    *out = l;
    return 0;

fail_listeners:
    listener_release(l);
    af_api_listener_free(l);
    return rc;
fail_close_fds:
    for (int i = 0; i < 2; i++)
        if (cfg->http_fds[i] >= 0)
            close(cfg->http_fds[i]);
    if (cfg->framed_fd >= 0)
        close(cfg->framed_fd);
    af_api_listener_free(l);
    return rc;
}

void af_api_listener_stop(struct af_api_listener *l)
{
    if (!l || !l->thread_started)
        return;
    uint64_t one = 1;
    ssize_t n = write(l->stop_efd, &one, sizeof(one));
    (void)n;
    pthread_join(l->thread, NULL);
    l->thread_started = false;

    /* The loop no longer runs: this thread may now touch its objects. */
    listener_release(l);
    struct conn *c = l->conns;
    while (c) {
        struct conn *next = c->next;
        conn_close(c); /* frees c unless its job is still out */
        c = next;
    }
}

void af_api_listener_free(struct af_api_listener *l)
{
    if (!l)
        return;
    af_api_listener_stop(l);
    /* Replies that arrived after the loop stopped. */
    if (l->outbox && l->outbox->efd >= 0) {
        bool closed;
        struct af_api_job *job = af_api_jobq_take_all(l->outbox, &closed);
        while (job) {
            struct af_api_job *next = job->next;
            af_api_job_free(job);
            job = next;
        }
    }
    /* What is left are CLOSED connections whose jobs were dropped. */
    while (l->conns) {
        l->conns->in_backend = false;
        conn_free(l->conns);
    }
    if (l->reply_ev)
        event_free(l->reply_ev);
    if (l->stop_ev)
        event_free(l->stop_ev);
    if (l->resume_ev)
        event_free(l->resume_ev);
    if (l->base)
        event_base_free(l->base);
    if (l->stop_efd >= 0)
        close(l->stop_efd);
    free(l);
}
