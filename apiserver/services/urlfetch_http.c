/*
 * urlfetch_http — the HTTP/1.1 client behind urlfetch.Fetch. It runs on the
 * API I/O thread (apiserver/iothread.c) as deferred work: every fetch is a
 * small state machine on that thread's libevent loop, so any number of them
 * wait on slow servers at once and none holds the backend.
 *
 *   DIALING --connected--> EXCHANGING
 *   (dial.c: the lookup,    (request written, the response
 *   then one address         parsed with http-parser)
 *   after another)
 *   DIALING --https through a proxy--> TUNNELING --200--> EXCHANGING
 *                                      (CONNECT sent, the answer read)
 *   EXCHANGING --3xx, following--> DIALING (the next hop)
 *   any state --answer, error, deadline--> DONE
 *
 * With a proxy (urlfetch_proxy.c; chosen again for every hop) the proxy is
 * dialed instead of the origin. An http URL is then asked for in absolute
 * form ("GET http://host/path HTTP/1.1", RFC 9112 section 3.2.2); an https
 * URL gets a tunnel ("CONNECT host:port", RFC 9110 section 9.3.6), and TLS
 * with the origin runs inside it as a filter over the plain connection, the
 * certificate checked against the origin's name as on a direct connection.
 * Whatever goes wrong before the origin is reached (the proxy's name, its
 * port, its refusal to tunnel) is FETCH_ERROR naming the proxy.
 *
 * Connections are reused (urlfetch_pool.c): a hop first asks the I/O
 * thread's pool for an idle connection with its key (origin, proxy, TLS
 * checking) and only without one dials (dial.c). When a response leaves
 * its connection fit for another request (uf_pool_reusable: it ended by its
 * framing, read exactly, neither side said close), the connection is parked
 * again before the answer goes out or the redirect is followed, so a
 * redirect to the same origin runs on it too.
 *
 * A parked connection may have been closed by the server just as the
 * request went out. When a reused connection ends or fails before any byte
 * of the response arrived, the hop runs again once on a fresh connection —
 * for GET, HEAD, PUT and DELETE only, the methods RFC 9110 section 9.2.2
 * makes idempotent: the server may have read the request before it closed,
 * and a POST or PATCH must never reach it twice. Those fail with
 * CONNECTION_ERROR instead; the pool's check that an idle socket has not
 * ended just before it is used keeps that rare. The deadline covers the
 * whole fetch, redirects and the retry included.
 *
 * DONE does not free the fetch at once: the answer is handed over from a
 * zero-delay event (done_ev), so no callback ever frees the fetch while a
 * caller further up the stack (http-parser, libevent) still uses it.
 *
 * Compression, as the stock development server does it: when the app sent
 * no Accept-Encoding the service asks for gzip itself, and a response with
 * Content-Encoding gzip (or x-gzip) is decoded as it arrives
 * (urlfetch_gzip.c), its Content-Encoding dropped and its Content-Length
 * made the length of what the app gets. The 32 MiB limit counts decoded
 * bytes. When the app chose an Accept-Encoding, nothing is touched.
 *
 * https goes through OpenSSL under libevent's bufferevent_openssl. With
 * MustValidateServerCertificate the chain is checked against the system's
 * CA store (SSL_CERT_FILE and SSL_CERT_DIR override it, as for any OpenSSL
 * program) and the name against the URL's host; a failure is
 * SSL_CERTIFICATE_ERROR.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <math.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/dns.h>
#include <event2/event.h>
#include <event2/util.h>
#include <http_parser.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "apiserver/envelope.h"
#include "apiserver/services/dial.h"
#include "apiserver/services/urlfetch.h"
#include "common/log.h"
#include "common/xalloc.h"

#define USER_AGENT_SUFFIX "AppEngine-Google; (+http://code.google.com/appengine)"

enum fetch_state {
    F_DIALING,
    F_TUNNELING,
    F_EXCHANGING,
    F_DONE,
};

struct uf_fetch {
    enum fetch_state state;
    struct af_io_call *call;
    struct event_base *base;

    struct uf_request req; /* method and payload change on some redirects */
    struct uf_url url;     /* the current hop */
    double deadline_s;
    SSL_CTX *ssl_ctx;
    int redirects;
    char *original_url;
    bool ask_gzip; /* the app sent no Accept-Encoding: the service asks for gzip */
    struct uf_proxy_config *proxies; /* a reference, or NULL */
    const struct uf_proxy *proxy;    /* this hop's (borrowed from proxies), or NULL: direct */

    struct event *deadline_ev;
    struct event *done_ev;
    struct af_result result; /* what done_ev hands over */

    /* DIALING */
    struct af_dial *dial;
    char last_addr[UF_ADDR_LEN]; /* the connection's address, for messages */

    /* Connection reuse (urlfetch_pool.c) */
    struct uf_pool *pool; /* the I/O thread's (borrowed), or NULL */
    char *pool_key;       /* this hop's */
    int conn_fd;          /* the socket under bev (not owned), -1 without one */
    bool reused;          /* this hop's connection came from the pool */

    /* EXCHANGING */
    struct bufferevent *bev;
    http_parser parser;
    bool head_only; /* the response has no body (HEAD) */
    bool got_bytes; /* some of this hop's response arrived */
    bool complete;  /* the response message ended */
    bool leftover;  /* bytes arrived after the message */
    bool eof;       /* the server closed the connection */
    int status;
    struct uf_header *hdrs;
    size_t n_hdrs, cap_hdrs;
    char *field, *value; /* the header being parsed */
    size_t field_len, value_len;
    bool in_value;
    uint8_t *body;
    size_t body_len, body_cap;
    bool truncated;
    struct uf_gunzip *gunzip; /* decoding this response's gzip content, or NULL */
    bool decoded;             /* this response's Content-Encoding gzip is undone */
    int fail_code;            /* set by a parser callback that stops it */
    char fail_detail[480];

    int64_t bytes_sent, bytes_received;
};

static void begin_hop(struct uf_fetch *f);
static void connect_fresh(struct uf_fetch *f);

/* ---- teardown and results ------------------------------------------------ */

static void free_headers(struct uf_header *h, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free(h[i].key);
        free(h[i].value);
    }
    free(h);
}

/* Drops everything of the current hop: lookup, sockets, parsed response. */
static void hop_release(struct uf_fetch *f)
{
    af_dial_cancel(f->dial);
    f->dial = NULL;
    if (f->bev)
        bufferevent_free(f->bev); /* closes the socket, frees the SSL */
    f->bev = NULL;
    f->conn_fd = -1;
    f->reused = f->leftover = f->eof = false;
    free_headers(f->hdrs, f->n_hdrs);
    f->hdrs = NULL;
    f->n_hdrs = f->cap_hdrs = 0;
    free(f->field);
    free(f->value);
    f->field = f->value = NULL;
    f->field_len = f->value_len = 0;
    f->in_value = false;
    free(f->body);
    f->body = NULL;
    f->body_len = f->body_cap = 0;
    f->truncated = f->complete = f->got_bytes = false;
    uf_gunzip_free(f->gunzip);
    f->gunzip = NULL;
    f->decoded = false;
    f->status = 0;
    f->fail_code = 0;
}

static void fetch_free(struct uf_fetch *f)
{
    hop_release(f);
    if (f->deadline_ev)
        event_free(f->deadline_ev);
    if (f->done_ev)
        event_free(f->done_ev);
    free(f->result.response);
    free(f->result.detail);
    if (f->ssl_ctx)
        SSL_CTX_free(f->ssl_ctx);
    uf_request_release(&f->req);
    uf_url_release(&f->url);
    free(f->original_url);
    free(f->pool_key);
    uf_proxy_config_unref(f->proxies);
    free(f);
}

static void on_done(evutil_socket_t fd, short what, void *arg)
{
    struct uf_fetch *f = arg;
    af_io_finish(f->call, &f->result);
    fetch_free(f);
}

/* Enters DONE: the sockets close now, the answer leaves from done_ev. */
static void fetch_done(struct uf_fetch *f)
{
    f->state = F_DONE;
    if (f->deadline_ev)
        event_del(f->deadline_ev);
    event_active(f->done_ev, EV_TIMEOUT, 1);
}

static void fetch_fail(struct uf_fetch *f, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void fetch_fail(struct uf_fetch *f, int code, const char *fmt, ...)
{
    if (f->state == F_DONE)
        return;
    char detail[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(detail, sizeof(detail), fmt, ap);
    va_end(ap);
    af_debug("urlfetch: %s %s: %s", f->req.url, "failed", detail);
    af_result_app_error(&f->result, code, "%s", detail);
    hop_release(f);
    fetch_done(f);
}

/* Response fields that describe this hop's connection or framing, which
 * the caller never sees (the content is already de-chunked). */
static bool response_header_dropped(const char *key)
{
    static const char *const names[] = {
        "Connection", "Keep-Alive", "Proxy-Connection", "Transfer-Encoding",
        "Trailer",    "TE",         "Upgrade"};
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
        if (strcasecmp(key, names[i]) == 0)
            return true;
    return false;
}

static void fetch_succeed(struct uf_fetch *f)
{
    struct uf_header *shown = af_xcalloc(f->n_hdrs ? f->n_hdrs : 1, sizeof(*shown));
    size_t n = 0;
    /* Decoded content: Content-Length says how long it is, except for HEAD,
     * where it keeps the length the server gave (there is no content). */
    char length[24] = "";
    bool set_length = f->decoded && !f->head_only;
    for (size_t i = 0; i < f->n_hdrs; i++) {
        const char *key = f->hdrs[i].key;
        if (response_header_dropped(key) ||
            (f->decoded && strcasecmp(key, "Content-Encoding") == 0))
            continue;
        shown[n] = f->hdrs[i];
        if (set_length && strcasecmp(key, "Content-Length") == 0)
            shown[n].value = length;
        n++;
    }
    char *final_url = f->redirects > 0 ? uf_url_string(&f->url) : NULL;
    struct uf_response r = {
        .status = f->status,
        .headers = shown,
        .n_headers = n,
        .content = f->body,
        .content_len = f->body_len,
        .truncated = f->truncated,
        .bytes_sent = f->bytes_sent,
        .bytes_received = f->bytes_received,
        .final_url = final_url,
    };
    uint8_t *buf;
    /* The envelope around it must stay within the API's message limit. */
    size_t max = AF_API_MAX_MESSAGE - 16;
    if (set_length) {
        /* The length of the content the app will get, cut to fit or not;
         * the shorter number cannot make the rest longer. */
        snprintf(length, sizeof(length), "%zu", f->body_len);
        size_t fit = uf_response_content_fit(&r, max);
        if (fit < f->body_len) {
            snprintf(length, sizeof(length), "%zu", fit);
            r.content_len = fit;
            r.truncated = true;
        }
    }
    size_t len = uf_response_encode(&r, max, &buf);
    af_result_ok(&f->result, buf, len);
    af_debug("urlfetch: %s: %d, %zu bytes%s%s", f->original_url, f->status, f->body_len,
             f->decoded ? " (gzip decoded)" : "", f->truncated ? " (truncated)" : "");
    free(final_url);
    free(shown);
    hop_release(f);
    fetch_done(f);
}

static void on_deadline(evutil_socket_t fd, short what, void *arg)
{
    struct uf_fetch *f = arg;
    static const char *const doing[] = {
        [F_DIALING] = "connecting",
        [F_TUNNELING] = "waiting for the proxy to open a tunnel",
        [F_EXCHANGING] = "waiting for the response",
        [F_DONE] = "finishing",
    };
    fetch_fail(f, UFERR(DEADLINE_EXCEEDED),
               "no complete response from %s within the %.3g s deadline (still %s%s)",
               f->original_url, f->deadline_s,
               f->state == F_DIALING && af_dial_resolving(f->dial) ? "resolving the host"
                                                                   : doing[f->state],
               f->state == F_EXCHANGING && f->got_bytes ? ", part of it arrived" : "");
}

/* ---- the request --------------------------------------------------------- */

bool uf_header_is_dropped(const char *key)
{
    /* Set by the service (Host, Content-Length, Connection), framing the
     * service owns (Transfer-Encoding, ...), or fields App Engine does not
     * let apps set (Vary, Via, X-Forwarded-For, X-ProxyUser-IP). */
    static const char *const names[] = {
        "Host", "Content-Length",    "Connection",     "Keep-Alive", "Proxy-Connection",
        "TE",   "Transfer-Encoding", "Trailer",        "Upgrade",    "Vary",
        "Via",  "X-Forwarded-For",   "X-ProxyUser-IP", "Expect",
    };
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
        if (strcasecmp(key, names[i]) == 0)
            return true;
    return false;
}

static const char *method_name(int m)
{
    static const char *const names[] = {
        [UF_GET] = "GET", [UF_POST] = "POST",     [UF_HEAD] = "HEAD",
        [UF_PUT] = "PUT", [UF_DELETE] = "DELETE", [UF_PATCH] = "PATCH",
    };
    return m >= UF_GET && m <= UF_PATCH ? names[m] : "GET";
}

static bool method_has_body(int m)
{
    return m == UF_POST || m == UF_PUT || m == UF_PATCH;
}

/* Writes the request of this hop to the bufferevent. */
static void send_request(struct uf_fetch *f)
{
    struct evbuffer *out = evbuffer_new();
    /* Through a proxy (http only; https is tunnelled), the absolute form. */
    bool absolute = f->proxy && !f->url.https;
    evbuffer_add_printf(out, "%s %s%s%s HTTP/1.1\r\nHost: %s\r\n", method_name(f->req.method),
                        absolute ? "http://" : "", absolute ? f->url.authority : "", f->url.target,
                        f->url.authority);
    bool proxy_auth = absolute && f->proxy->auth;
    if (proxy_auth)
        evbuffer_add_printf(out, "Proxy-Authorization: %s\r\n", f->proxy->auth);
    bool ua = false;
    for (size_t i = 0; i < f->req.n_headers; i++) {
        const struct uf_header *h = &f->req.headers[i];
        if (uf_header_is_dropped(h->key) ||
            (proxy_auth && strcasecmp(h->key, "Proxy-Authorization") == 0))
            continue;
        if (strcasecmp(h->key, "User-Agent") == 0) {
            /* Production appends its own product to the app's. */
            evbuffer_add_printf(out, "%s: %s %s\r\n", h->key, h->value, USER_AGENT_SUFFIX);
            ua = true;
            continue;
        }
        evbuffer_add_printf(out, "%s: %s\r\n", h->key, h->value);
    }
    if (!ua)
        evbuffer_add_printf(out, "User-Agent: %s\r\n", USER_AGENT_SUFFIX);
    if (f->ask_gzip)
        evbuffer_add_printf(out, "Accept-Encoding: gzip\r\n");
    bool body = method_has_body(f->req.method);
    if (body)
        evbuffer_add_printf(out, "Content-Length: %zu\r\n", f->req.payload_len);
    /* No Connection field: HTTP/1.1 connections persist (RFC 9112
     * section 9.3), and this one may be parked for the next fetch. */
    evbuffer_add(out, "\r\n", 2);
    if (body && f->req.payload_len)
        evbuffer_add(out, f->req.payload, f->req.payload_len);
    f->bytes_sent += (int64_t)evbuffer_get_length(out);
    bufferevent_write_buffer(f->bev, out);
    evbuffer_free(out);
}

/* ---- the response --------------------------------------------------------- */

static void append(char **s, size_t *len, const char *at, size_t n)
{
    *s = af_xrealloc(*s, *len + n + 1);
    memcpy(*s + *len, at, n);
    *len += n;
    (*s)[*len] = '\0';
}

static void push_header(struct uf_fetch *f)
{
    if (!f->field)
        return;
    if (f->n_hdrs == f->cap_hdrs) {
        f->cap_hdrs = f->cap_hdrs ? f->cap_hdrs * 2 : 16;
        f->hdrs = af_xrealloc(f->hdrs, f->cap_hdrs * sizeof(*f->hdrs));
    }
    /* A field value may hold bytes a header cannot pass on; the API's
     * strings cannot hold a NUL. http-parser refuses NUL and CR/LF. */
    f->hdrs[f->n_hdrs].key = f->field;
    f->hdrs[f->n_hdrs].value = f->value ? f->value : af_xstrdup("");
    f->n_hdrs++;
    f->field = f->value = NULL;
    f->field_len = f->value_len = 0;
    f->in_value = false;
}

static int on_message_begin(http_parser *p)
{
    struct uf_fetch *f = p->data;
    free_headers(f->hdrs, f->n_hdrs);
    f->hdrs = NULL;
    f->n_hdrs = f->cap_hdrs = 0;
    uf_gunzip_free(f->gunzip);
    f->gunzip = NULL;
    f->decoded = false;
    return 0;
}

static int on_header_field(http_parser *p, const char *at, size_t n)
{
    struct uf_fetch *f = p->data;
    if (f->in_value)
        push_header(f);
    append(&f->field, &f->field_len, at, n);
    return 0;
}

static int on_header_value(http_parser *p, const char *at, size_t n)
{
    struct uf_fetch *f = p->data;
    f->in_value = true;
    append(&f->value, &f->value_len, at, n);
    return 0;
}

static const char *find_header(const struct uf_fetch *f, const char *key)
{
    for (size_t i = 0; i < f->n_hdrs; i++)
        if (strcasecmp(f->hdrs[i].key, key) == 0)
            return f->hdrs[i].value;
    return NULL;
}

static bool is_redirect(int status)
{
    return status == 301 || status == 302 || status == 303 || status == 307 || status == 308;
}

/* Whether this hop's response is a redirect the service follows (its body
 * is then dropped). */
static bool will_follow(const struct uf_fetch *f)
{
    return f->req.follow_redirects && is_redirect(f->status) && find_header(f, "Location");
}

/* Whether the response's content is gzip the service asked for and undoes:
 * one Content-Encoding field, "gzip" or its old alias "x-gzip" (RFC 9110
 * section 8.4.1.3). Layered codings ("gzip, br") and any other coding pass
 * through as they are. */
static bool gzip_to_undo(const struct uf_fetch *f)
{
    if (!f->ask_gzip || f->status < 200 || will_follow(f))
        return false;
    const char *coding = NULL;
    for (size_t i = 0; i < f->n_hdrs; i++) {
        if (strcasecmp(f->hdrs[i].key, "Content-Encoding") != 0)
            continue;
        if (coding)
            return false;
        coding = f->hdrs[i].value;
    }
    if (!coding)
        return false;
    coding += strspn(coding, " \t");
    size_t n = strcspn(coding, " \t");
    if (coding[n + strspn(coding + n, " \t")] != '\0')
        return false;
    return (n == 4 && strncasecmp(coding, "gzip", 4) == 0) ||
           (n == 6 && strncasecmp(coding, "x-gzip", 6) == 0);
}

static int on_headers_complete(http_parser *p)
{
    struct uf_fetch *f = p->data;
    push_header(f);
    f->status = (int)p->status_code;
    if (gzip_to_undo(f)) {
        f->decoded = true;
        if (!f->head_only)
            f->gunzip = uf_gunzip_new();
    } else if (f->status >= 200 && p->content_length != ULLONG_MAX && p->content_length > 0) {
        size_t want =
            p->content_length > UF_MAX_CONTENT ? UF_MAX_CONTENT : (size_t)p->content_length;
        if (!f->head_only && want > f->body_cap) {
            f->body = af_xrealloc(f->body, want);
            f->body_cap = want;
        }
    }
    /* 1: no body follows, whatever the fields say (RFC 9112 section 6.3). */
    return f->head_only && f->status >= 200 ? 1 : 0;
}

/* Body bytes through the gzip decoder. */
static int on_gzip_body(struct uf_fetch *f, http_parser *p, const char *at, size_t n)
{
    enum uf_gunzip_status st =
        uf_gunzip_feed(f->gunzip, at, n, &f->body, &f->body_len, &f->body_cap, UF_MAX_CONTENT);
    if (st == UF_GUNZIP_FULL) {
        /* Over 32 MiB decoded: cut and flagged, as for plain content. */
        f->truncated = true;
        f->complete = true;
        http_parser_pause(p, 1);
    } else if (st == UF_GUNZIP_BAD) {
        f->fail_code = UFERR(FETCH_ERROR);
        snprintf(f->fail_detail, sizeof(f->fail_detail),
                 "the gzip content from %.200s is invalid: %s", f->original_url,
                 uf_gunzip_error(f->gunzip));
        http_parser_pause(p, 1);
    }
    return 0;
}

static int on_body(http_parser *p, const char *at, size_t n)
{
    struct uf_fetch *f = p->data;
    if (f->gunzip)
        return on_gzip_body(f, p, at, n);
    size_t room = UF_MAX_CONTENT - f->body_len;
    if (n > room) {
        /* App Engine cuts a response body over 32 MiB and says so; the
         * rest is not read. */
        n = room;
        f->truncated = true;
    }
    if (f->body_len + n > f->body_cap) {
        size_t cap = f->body_cap ? f->body_cap : 16384;
        while (cap < f->body_len + n)
            cap *= 2;
        if (cap > UF_MAX_CONTENT)
            cap = UF_MAX_CONTENT;
        f->body = af_xrealloc(f->body, cap);
        f->body_cap = cap;
    }
    memcpy(f->body + f->body_len, at, n);
    f->body_len += n;
    if (f->truncated) {
        f->complete = true;
        http_parser_pause(p, 1);
    }
    return 0;
}

static int on_message_complete(http_parser *p)
{
    struct uf_fetch *f = p->data;
    /* An interim 1xx answer (other than 101) is followed by the real one. */
    if (f->status >= 100 && f->status < 200 && f->status != 101)
        return 0;
    f->complete = true;
    http_parser_pause(p, 1);
    return 0;
}

static const http_parser_settings parser_settings = {
    .on_message_begin = on_message_begin,
    .on_header_field = on_header_field,
    .on_header_value = on_header_value,
    .on_headers_complete = on_headers_complete,
    .on_body = on_body,
    .on_message_complete = on_message_complete,
};

/* Parks this hop's connection in the pool when the response left it fit
 * for another request. */
static void keep_connection(struct uf_fetch *f)
{
    if (!f->pool || !f->bev)
        return;
    struct uf_reuse r = {
        .http_major = f->parser.http_major,
        .http_minor = f->parser.http_minor,
        .status = f->status,
        .headers = f->hdrs,
        .n_headers = f->n_hdrs,
        .framed = !f->eof,
        .cut = f->truncated,
        .leftover = f->leftover,
        .unsent = evbuffer_get_length(bufferevent_get_output(f->bev)) > 0,
    };
    if (!uf_pool_reusable(&r))
        return;
    /* Everything read belonged to this response (no leftover): the next
     * one starts on an empty buffer. */
    struct evbuffer *in = bufferevent_get_input(f->bev);
    evbuffer_drain(in, evbuffer_get_length(in));
    uf_pool_put(f->pool, f->pool_key, f->bev, f->conn_fd, f->last_addr);
    f->bev = NULL;
    f->conn_fd = -1;
}

/* The response of this hop is complete: answer, or follow a redirect. */
static void response_complete(struct uf_fetch *f)
{
    if (f->gunzip && !f->truncated && uf_gunzip_end(f->gunzip) != 0) {
        fetch_fail(f, UFERR(FETCH_ERROR), "the gzip content from %s is invalid: %s",
                   f->original_url, uf_gunzip_error(f->gunzip));
        return;
    }
    keep_connection(f);
    const char *location = find_header(f, "Location");
    if (!will_follow(f) || f->truncated) {
        fetch_succeed(f);
        return;
    }
    if (f->redirects >= UF_MAX_REDIRECTS) {
        fetch_fail(f, UFERR(TOO_MANY_REDIRECTS),
                   "%s redirected more than %d times; the last Location was \"%.200s\"",
                   f->original_url, UF_MAX_REDIRECTS, location);
        return;
    }
    char *next = uf_url_resolve(&f->url, location);
    struct uf_url u;
    char err[256];
    if (!next || uf_url_parse(next, &u, err, sizeof(err)) != 0) {
        fetch_fail(f, UFERR(FETCH_ERROR),
                   "%s redirected to \"%.200s\", which cannot be fetched: %s", f->original_url,
                   location, next ? err : "not a URL");
        free(next);
        return;
    }
    free(next);
    /* RFC 9110 section 15.4: 303 turns any method but HEAD into GET; so do
     * 301 and 302 for POST, as every browser does. 307 and 308 keep both
     * method and body. */
    int m = f->req.method;
    if ((f->status == 303 && m != UF_HEAD) ||
        ((f->status == 301 || f->status == 302) && m == UF_POST)) {
        f->req.method = UF_GET;
        free(f->req.payload);
        f->req.payload = NULL;
        f->req.payload_len = 0;
    }
    af_debug("urlfetch: %s: %d, following to %s://%s%s", f->original_url, f->status,
             u.https ? "https" : "http", u.authority, u.target);
    uf_url_release(&f->url);
    f->url = u;
    f->redirects++;
    hop_release(f);
    begin_hop(f);
}

static const char *parser_error(const http_parser *p)
{
    return http_errno_description(HTTP_PARSER_ERRNO(p));
}

/* Feeds what arrived to the parser (more: bytes follow this piece);
 * returns false once the fetch is DONE or moved to another hop. */
static bool feed(struct uf_fetch *f, const char *data, size_t len, bool more)
{
    size_t used = http_parser_execute(&f->parser, &parser_settings, data, len);
    enum http_errno e = HTTP_PARSER_ERRNO(&f->parser);
    if (f->fail_code) {
        fetch_fail(f, f->fail_code, "%s", f->fail_detail);
        return false;
    }
    if (f->complete) {
        /* The parser stops at the message's last byte. */
        f->leftover = used < len || more;
        response_complete(f);
        return false;
    }
    if (e == HPE_HEADER_OVERFLOW) {
        fetch_fail(f, UFERR(RESPONSE_TOO_LARGE),
                   "the response head from %s is over %u KiB, more than urlfetch reads",
                   f->original_url, 80);
        return false;
    }
    if (e != HPE_OK) {
        fetch_fail(f, UFERR(MALFORMED_REPLY),
                   "%s answered something that is not HTTP/1.x (%s, at byte %zu of this read)",
                   f->original_url, parser_error(&f->parser), used);
        return false;
    }
    return true;
}

static void on_read(struct bufferevent *bev, void *arg)
{
    struct uf_fetch *f = arg;
    struct evbuffer *in = bufferevent_get_input(bev);
    size_t len = evbuffer_get_length(in);
    if (len == 0)
        return;
    f->got_bytes = true;
    f->bytes_received += (int64_t)len;
    /* Feed piece by piece, without making the buffer contiguous. */
    int n = evbuffer_peek(in, -1, NULL, NULL, 0);
    struct evbuffer_iovec vec_small[8];
    struct evbuffer_iovec *v = n <= 8 ? vec_small : af_xmalloc((size_t)n * sizeof(*v));
    evbuffer_peek(in, -1, NULL, v, n);
    bool more = true;
    for (int i = 0; i < n && more; i++)
        more = feed(f, v[i].iov_base, v[i].iov_len, i + 1 < n);
    if (v != vec_small)
        free(v);
    if (more)
        evbuffer_drain(in, len);
}

/* What went wrong on a TLS connection, as SSL_CERTIFICATE_ERROR when it is
 * the certificate. Returns true when it reported. */
static bool report_tls_error(struct uf_fetch *f)
{
    SSL *ssl = bufferevent_openssl_get_ssl(f->bev);
    if (!ssl)
        return false;
    long vr = f->req.validate_certificate ? SSL_get_verify_result(ssl) : X509_V_OK;
    if (vr != X509_V_OK) {
        fetch_fail(f, UFERR(SSL_CERTIFICATE_ERROR),
                   "the certificate of %s did not validate: %s (set "
                   "MustValidateServerCertificate to false to skip the check)",
                   f->url.authority, X509_verify_cert_error_string(vr));
        return true;
    }
    unsigned long e, last = 0;
    while ((e = bufferevent_get_openssl_error(f->bev)) != 0)
        last = e;
    if (last) {
        char buf[200];
        ERR_error_string_n(last, buf, sizeof(buf));
        fetch_fail(f, UFERR(FETCH_ERROR), "TLS with %s (%s) failed: %s", f->url.authority,
                   f->last_addr, buf);
        return true;
    }
    return false;
}

static bool method_idempotent(int m)
{
    return m == UF_GET || m == UF_HEAD || m == UF_PUT || m == UF_DELETE;
}

/* This hop's connection ended or failed (how: "was closed", an error)
 * before any byte of the response. When it came from the pool it was
 * stale: the hop runs again on a fresh connection if the method may be
 * repeated, or fails saying why it is not. Returns false when the
 * connection was a fresh one, for the caller to report. */
static bool stale_connection(struct uf_fetch *f, const char *how)
{
    if (!f->reused || f->got_bytes)
        return false;
    if (!method_idempotent(f->req.method)) {
        fetch_fail(f, UFERR(CONNECTION_ERROR),
                   "the kept-alive connection to %s (%s) %s before any answer to %s %s; the "
                   "request is not sent again, as the server may have read it",
                   f->url.authority, f->last_addr, how, method_name(f->req.method),
                   f->original_url);
        return true;
    }
    af_debug("urlfetch: the kept-alive connection to %s (%s) %s before any answer; %s %s "
             "again on a new connection",
             f->url.authority, f->last_addr, how, method_name(f->req.method), f->original_url);
    hop_release(f);
    connect_fresh(f);
    return true;
}

static void on_event(struct bufferevent *bev, short what, void *arg)
{
    struct uf_fetch *f = arg;
    if (what & BEV_EVENT_CONNECTED)
        return; /* the TLS handshake is done; the request is already queued */
    if (what & BEV_EVENT_EOF) {
        /* The end of the connection ends a body that has no length, and
         * the connection cannot be kept. */
        f->eof = true;
        on_read(bev, f);
        if (f->state != F_EXCHANGING || f->bev != bev)
            return;
        http_parser_execute(&f->parser, &parser_settings, NULL, 0);
        if (f->complete) {
            response_complete(f);
            return;
        }
        if (stale_connection(f, "was closed"))
            return;
        if (!f->got_bytes)
            fetch_fail(f, UFERR(CONNECTION_ERROR),
                       "%s (%s) closed the connection without answering", f->original_url,
                       f->last_addr);
        else
            fetch_fail(f, UFERR(MALFORMED_REPLY),
                       "%s closed the connection before its response was complete (%s)",
                       f->original_url,
                       f->status ? "the body was cut short" : "the head was cut short");
        return;
    }
    if (what & (BEV_EVENT_ERROR | BEV_EVENT_TIMEOUT)) {
        int err = EVUTIL_SOCKET_ERROR();
        char how[120];
        snprintf(how, sizeof(how), "failed (%s)", err ? strerror(err) : "unknown error");
        if (stale_connection(f, how))
            return;
        if (f->url.https && report_tls_error(f))
            return;
        fetch_fail(f, UFERR(CONNECTION_ERROR), "the connection to %s (%s) failed%s: %s",
                   f->url.authority, f->last_addr,
                   f->got_bytes ? " in the middle of the response" : "",
                   err ? strerror(err) : "unknown error");
    }
}

/* ---- connecting ---------------------------------------------------------- */

static SSL *make_ssl(struct uf_fetch *f, char *err, size_t errlen)
{
    if (!f->ssl_ctx) {
        /* An http URL that redirected to https: this fetch gets a
         * context of its own. */
        f->ssl_ctx = SSL_CTX_new(TLS_client_method());
        if (!f->ssl_ctx || SSL_CTX_set_default_verify_paths(f->ssl_ctx) != 1) {
            snprintf(err, errlen, "OpenSSL cannot make a TLS context");
            return NULL;
        }
    }
    SSL *ssl = SSL_new(f->ssl_ctx);
    if (!ssl) {
        snprintf(err, errlen, "OpenSSL cannot make a TLS session");
        return NULL;
    }
    unsigned char ip[16];
    bool is_ip =
        inet_pton(AF_INET, f->url.host, ip) == 1 || inet_pton(AF_INET6, f->url.host, ip) == 1;
    if (!is_ip)
        SSL_set_tlsext_host_name(ssl, f->url.host); /* SNI is for names only (RFC 6066) */
    if (f->req.validate_certificate) {
        SSL_set_verify(ssl, SSL_VERIFY_PEER, NULL);
        if (is_ip)
            X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), f->url.host);
        else
            SSL_set1_host(ssl, f->url.host);
    } else {
        SSL_set_verify(ssl, SSL_VERIFY_NONE, NULL);
    }
    return ssl;
}

/* f->bev is set up: send the request, parse the response. */
static void start_exchange(struct uf_fetch *f)
{
    f->state = F_EXCHANGING;
    http_parser_init(&f->parser, HTTP_RESPONSE);
    f->parser.data = f;
    f->head_only = f->req.method == UF_HEAD;
    bufferevent_setcb(f->bev, on_read, NULL, on_event, f);
    send_request(f);
    bufferevent_enable(f->bev, EV_READ | EV_WRITE);
}

/* The proxy's answer to CONNECT is read up to this size. */
#define TUNNEL_HEAD_MAX 16384

/* The tunnel is open: TLS with the origin over the plain connection. */
static void tunnel_open(struct uf_fetch *f)
{
    char err[128];
    SSL *ssl = make_ssl(f, err, sizeof(err));
    if (!ssl) {
        fetch_fail(f, UFERR(FETCH_ERROR), "cannot fetch %s: %s", f->original_url, err);
        return;
    }
    /* The filter owns the plain connection and the SSL from now on. */
    struct bufferevent *plain = f->bev;
    f->bev = af_dial_bev_made(bufferevent_openssl_filter_new(f->base, plain, ssl,
                                                             BUFFEREVENT_SSL_CONNECTING,
                                                             BEV_OPT_CLOSE_ON_FREE),
                              "the TLS connection of a fetch");
    bufferevent_openssl_set_allow_dirty_shutdown(f->bev, 1);
    start_exchange(f);
}

/* The proxy's answer to CONNECT: a 2xx opens the tunnel. */
static void on_tunnel_read(struct bufferevent *bev, void *arg)
{
    struct uf_fetch *f = arg;
    struct evbuffer *in = bufferevent_get_input(bev);
    struct evbuffer_ptr end = evbuffer_search(in, "\r\n\r\n", 4, NULL);
    if (end.pos < 0) {
        if (evbuffer_get_length(in) > TUNNEL_HEAD_MAX)
            fetch_fail(f, UFERR(FETCH_ERROR),
                       "the proxy %s (%s) answered CONNECT %s with a head over %d KiB",
                       f->proxy->authority, f->proxy->var, f->url.authority,
                       TUNNEL_HEAD_MAX / 1024);
        return;
    }
    size_t head_len = (size_t)end.pos + 4;
    char *head = af_xmalloc(head_len + 1);
    evbuffer_remove(in, head, head_len);
    head[head_len] = '\0';
    f->bytes_received += (int64_t)head_len;
    size_t line = strcspn(head, "\r\n");
    head[line] = '\0';
    for (char *c = head; *c; c++)
        if ((unsigned char)*c < 0x20 || *c == 0x7f)
            *c = '?';
    /* "HTTP/1.x NNN reason" (RFC 9112 section 4). */
    int status = -1;
    if (line >= 12 && strncmp(head, "HTTP/1.", 7) == 0 && head[8] == ' ' &&
        strspn(head + 9, "0123456789") == 3 && (head[12] == ' ' || head[12] == '\0'))
        status = atoi(head + 9);
    if (status < 0)
        fetch_fail(f, UFERR(FETCH_ERROR),
                   "the proxy %s (%s) answered CONNECT %s with something that is not HTTP: "
                   "\"%.80s\"",
                   f->proxy->authority, f->proxy->var, f->url.authority, head);
    else if (status < 200 || status > 299)
        fetch_fail(f, UFERR(FETCH_ERROR),
                   "the proxy %s (%s) refused to open a tunnel to %s: \"%.100s\"%s",
                   f->proxy->authority, f->proxy->var, f->url.authority, head,
                   status == 407 ? " (it wants credentials: user:password@ in the variable)" : "");
    else if (evbuffer_get_length(in) > 0)
        fetch_fail(f, UFERR(FETCH_ERROR),
                   "the proxy %s (%s) sent data after its CONNECT answer, before TLS began",
                   f->proxy->authority, f->proxy->var);
    else
        tunnel_open(f);
    free(head);
}

static void on_tunnel_event(struct bufferevent *bev, short what, void *arg)
{
    struct uf_fetch *f = arg;
    if (what & BEV_EVENT_EOF)
        fetch_fail(f, UFERR(FETCH_ERROR),
                   "the proxy %s (%s, %s) closed the connection without answering CONNECT %s",
                   f->proxy->authority, f->proxy->var, f->last_addr, f->url.authority);
    else if (what & (BEV_EVENT_ERROR | BEV_EVENT_TIMEOUT)) {
        int err = EVUTIL_SOCKET_ERROR();
        fetch_fail(f, UFERR(FETCH_ERROR),
                   "the connection to the proxy %s (%s, %s) failed before the tunnel to %s "
                   "opened: %s",
                   f->proxy->authority, f->proxy->var, f->last_addr, f->url.authority,
                   err ? strerror(err) : "unknown error");
    }
}

/* Connected to the proxy, for an https URL: ask for a tunnel. */
static void start_tunnel(struct uf_fetch *f)
{
    f->state = F_TUNNELING;
    bool v6 = strchr(f->url.host, ':') != NULL;
    struct evbuffer *out = evbuffer_new();
    evbuffer_add_printf(out, "CONNECT %s%s%s:%d HTTP/1.1\r\nHost: %s%s%s:%d\r\n", v6 ? "[" : "",
                        f->url.host, v6 ? "]" : "", f->url.port, v6 ? "[" : "", f->url.host,
                        v6 ? "]" : "", f->url.port);
    if (f->proxy->auth)
        evbuffer_add_printf(out, "Proxy-Authorization: %s\r\n", f->proxy->auth);
    evbuffer_add(out, "\r\n", 2);
    f->bytes_sent += (int64_t)evbuffer_get_length(out);
    bufferevent_write_buffer(f->bev, out);
    evbuffer_free(out);
    bufferevent_setcb(f->bev, on_tunnel_read, NULL, on_tunnel_event, f);
    bufferevent_enable(f->bev, EV_READ | EV_WRITE);
}

/* fd (taken) is connected: wrap it and send the request. */
static void connected(struct uf_fetch *f, int fd)
{
    if (f->url.https && !f->proxy) {
        char err[128];
        SSL *ssl = make_ssl(f, err, sizeof(err));
        if (!ssl) {
            close(fd);
            fetch_fail(f, UFERR(FETCH_ERROR), "cannot fetch %s: %s", f->original_url, err);
            return;
        }
        /* From here on the bufferevent owns the SSL and the socket. */
        f->bev = af_dial_bev_made(bufferevent_openssl_socket_new(f->base, fd, ssl,
                                                                 BUFFEREVENT_SSL_CONNECTING,
                                                                 BEV_OPT_CLOSE_ON_FREE),
                                  "the TLS connection of a fetch");
        /* Many servers close without a TLS close_notify; the end of the
         * connection still ends the response. */
        bufferevent_openssl_set_allow_dirty_shutdown(f->bev, 1);
    } else {
        f->bev = af_dial_bev_made(bufferevent_socket_new(f->base, fd, BEV_OPT_CLOSE_ON_FREE),
                                  "the TCP connection of a fetch");
    }
    f->conn_fd = fd;
    if (f->url.https && f->proxy)
        start_tunnel(f);
    else
        start_exchange(f);
}

/* The dial of connect_fresh ended. */
static void on_dialed(const struct af_dial_result *r, void *arg)
{
    struct uf_fetch *f = arg;
    f->dial = NULL;
    _Static_assert(UF_ADDR_LEN >= AF_DIAL_ADDR_LEN, "an address for messages is cut");
    snprintf(f->last_addr, sizeof(f->last_addr), "%s", r->addr);
    switch (r->stage) {
    case AF_DIAL_CONNECTED:
        connected(f, r->fd);
        return;
    case AF_DIAL_LOOKUP:
        if (f->proxy)
            fetch_fail(f, UFERR(FETCH_ERROR),
                       "cannot resolve the host of the proxy %s (%s) to fetch %s: %s",
                       f->proxy->authority, f->proxy->var, f->original_url,
                       evutil_gai_strerror(r->gai_error));
        else
            fetch_fail(f, UFERR(DNS_ERROR), "cannot resolve the host \"%s\": %s", f->url.host,
                       evutil_gai_strerror(r->gai_error));
        return;
    case AF_DIAL_SOCKET:
        fetch_fail(f, UFERR(INTERNAL_TRANSIENT_ERROR), "cannot open a socket to fetch %s: %s",
                   f->original_url, strerror(r->err));
        return;
    case AF_DIAL_CONNECT:
        if (f->proxy)
            fetch_fail(f, UFERR(FETCH_ERROR),
                       "cannot connect to the proxy %s (%s, %s) to fetch %s: %s",
                       f->proxy->authority, f->proxy->var, f->last_addr, f->original_url,
                       strerror(r->err));
        else
            fetch_fail(f, UFERR(CONNECTION_ERROR), "cannot connect to %s (%s): %s",
                       f->url.authority, f->last_addr, strerror(r->err));
        return;
    }
}

/* Starts this hop: on an idle connection of the pool, or on a new one. */
static void begin_hop(struct uf_fetch *f)
{
    f->proxy = uf_proxy_for(f->proxies, &f->url);
    if (f->proxy && f->proxy->error) {
        fetch_fail(f, UFERR(FETCH_ERROR), "cannot fetch %s: %s", f->original_url, f->proxy->error);
        return;
    }
    free(f->pool_key);
    f->pool_key = uf_pool_key(&f->url, f->proxy, f->req.validate_certificate);
    if (f->pool) {
        f->bev = uf_pool_take(f->pool, f->pool_key, &f->conn_fd, f->last_addr,
                              sizeof(f->last_addr));
        if (f->bev) {
            f->reused = true;
            af_debug("urlfetch: %s on the kept-alive connection to %s (%s)", f->original_url,
                     f->url.authority, f->last_addr);
            start_exchange(f);
            return;
        }
    }
    connect_fresh(f);
}

/* Dials this hop's host (or its proxy's). */
static void connect_fresh(struct uf_fetch *f)
{
    f->state = F_DIALING;
    f->last_addr[0] = '\0';
    /* Through a proxy only the proxy's name is looked up; the proxy
     * resolves the origin's. A request leaves in several writes (TLS makes
     * a record of each piece of the buffer): with Nagle's algorithm the
     * second waits for the server's delayed ACK of the first, 40 ms, on
     * every request of a kept-alive connection; hence NODELAY. */
    f->dial = af_dial_start(f->base, af_io_dns(f->call), f->proxy ? f->proxy->host : f->url.host,
                            f->proxy ? f->proxy->port : f->url.port, AF_DIAL_NODELAY, on_dialed, f);
}

/* ---- the deferred-call interface ----------------------------------------- */

static void fetch_start(void *arg, struct af_io_call *call)
{
    struct uf_fetch *f = arg;
    f->call = call;
    f->base = af_io_base(call);
    f->done_ev = evtimer_new(f->base, on_done, f);
    f->deadline_ev = evtimer_new(f->base, on_deadline, f);
    f->pool = af_io_local(call, &uf_pool_local);
    double whole;
    double frac = modf(f->deadline_s, &whole);
    struct timeval tv = {.tv_sec = (time_t)whole, .tv_usec = (suseconds_t)(frac * 1e6)};
    evtimer_add(f->deadline_ev, &tv);
    begin_hop(f);
}

static void fetch_cancel(void *arg)
{
    fetch_free(arg);
}

const struct af_defer_ops uf_fetch_ops = {
    .what = "urlfetch.Fetch",
    .start = fetch_start,
    .cancel = fetch_cancel,
};

struct uf_fetch *uf_fetch_new(struct uf_fetch_spec *spec)
{
    struct uf_fetch *f = af_xcalloc(1, sizeof(*f));
    f->conn_fd = -1;
    f->req = spec->req;
    f->url = spec->url;
    f->deadline_s = spec->deadline_s;
    f->ssl_ctx = spec->ssl_ctx;
    f->proxies = spec->proxies;
    f->original_url = uf_url_string(&f->url);
    f->ask_gzip = true;
    for (size_t i = 0; i < f->req.n_headers; i++)
        if (strcasecmp(f->req.headers[i].key, "Accept-Encoding") == 0)
            f->ask_gzip = false;
    memset(spec, 0, sizeof(*spec));
    return f;
}
