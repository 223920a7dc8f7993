/*
 * hello — the minimal native app that runs under appfront.
 *
 * It serves HTTP/1.1 on the Unix socket appfront passes in
 * APPFRONT_HTTP_SOCKET (or on 127.0.0.1:$PORT when only PORT is set, so it
 * also runs as a "stock runtime" app or by hand). It is built on libevent's
 * evhttp: the point of the example is to show how little a native app needs,
 * and the end-to-end tests use its routes to observe what appfront does:
 *
 *   GET  /                   a greeting
 *   GET  /sleep?ms=N         answers after N ms (0..60000) from an event timer,
 *                            so one instance holds many sleeping requests
 *   GET  /crash              writes "hello: crashing on purpose" to stderr
 *                            and exits(1) without answering
 *   GET  /garbage            writes bytes that are not HTTP, then closes
 *   GET  /headers            the request headers as a JSON object
 *   GET  /response_headers?Name=Value&...
 *                            answers 200 with each query pair as a header
 *   POST /echo               the request body back (see HELLO_MAX_BODY)
 *   GET  /chunked?n=N&size=S N chunks of S bytes, chunk i all 'a' + i % 26
 *   GET  /env[?name=VAR]     appfront's variables (or one variable) as JSON
 *   GET  /pid                the process id
 *   GET  /counter            increments the memcache counter "hello-counter"
 *                            through appfront's C client library and shows it
 *
 * evhttp reads a whole request body before it calls the handler, and once it
 * starts writing a reply it stops reading that connection, so a handler
 * cannot echo while the body is still arriving. /echo therefore holds the
 * body (up to HELLO_MAX_BODY) and hands the very same buffer back without a
 * copy. appfront still has to stream both ways: the request body into this
 * process, and the reply back out, each bigger than its own buffers.
 */
#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/queue.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <event2/listener.h>

#include "apiserver/client/appfront.h"

/* The biggest body /echo accepts. It must cover the 64 MiB streaming test;
 * larger bodies get evhttp's own 413. */
#define HELLO_MAX_BODY (128LL * 1024 * 1024)
/* /sleep refuses longer naps: a test asking for more is a typo. */
#define HELLO_MAX_SLEEP_MS 60000L

extern char **environ;

static struct event_base *hello_base;

/* --- small helpers ------------------------------------------------------- */

/* Appends s to buf as a JSON string literal. Header bytes are not known to be
 * UTF-8, so bytes >= 0x80 are written as \u00XX (their Latin-1 reading, which
 * is how HTTP clients such as Python's decode header bytes too). */
static void hello_json_string(struct evbuffer *buf, const char *s)
{
    evbuffer_add(buf, "\"", 1);
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        switch (*p) {
        case '"':
            evbuffer_add(buf, "\\\"", 2);
            break;
        case '\\':
            evbuffer_add(buf, "\\\\", 2);
            break;
        case '\n':
            evbuffer_add(buf, "\\n", 2);
            break;
        case '\r':
            evbuffer_add(buf, "\\r", 2);
            break;
        case '\t':
            evbuffer_add(buf, "\\t", 2);
            break;
        default:
            if (*p < 0x20 || *p >= 0x7f)
                evbuffer_add_printf(buf, "\\u%04x", *p);
            else
                evbuffer_add(buf, p, 1);
        }
    }
    evbuffer_add(buf, "\"", 1);
}

static void hello_reply_text(struct evhttp_request *req, int code, const char *reason,
                             const char *fmt, ...) __attribute__((format(printf, 4, 5)));

static void hello_reply_text(struct evhttp_request *req, int code, const char *reason,
                             const char *fmt, ...)
{
    struct evbuffer *out = evhttp_request_get_output_buffer(req);
    va_list ap;

    va_start(ap, fmt);
    evbuffer_add_vprintf(out, fmt, ap);
    va_end(ap);
    evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type",
                      "text/plain; charset=utf-8");
    evhttp_send_reply(req, code, reason, NULL);
}

/* Sends whatever JSON the handler put in the output buffer. */
static void hello_reply_json(struct evhttp_request *req)
{
    evbuffer_add(evhttp_request_get_output_buffer(req), "\n", 1);
    evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type",
                      "application/json");
    evhttp_send_reply(req, HTTP_OK, "OK", NULL);
}

/* The decoded query of req in q (caller clears it with evhttp_clear_headers).
 * Returns false for a query evhttp cannot decode. */
static bool hello_query(struct evhttp_request *req, struct evkeyvalq *q)
{
    const char *query = evhttp_uri_get_query(evhttp_request_get_evhttp_uri(req));

    TAILQ_INIT(q);
    if (query == NULL)
        return true;
    return evhttp_parse_query_str(query, q) == 0;
}

/* --- handlers ------------------------------------------------------------ */

static void hello_root(struct evhttp_request *req)
{
    hello_reply_text(req, HTTP_OK, "OK", "Hello from appfront!\n");
}

struct hello_sleep {
    struct evhttp_request *req;
    struct event *timer;
    long ms;
    LIST_ENTRY(hello_sleep) link;
};

/* Every pending /sleep, so that stopping can answer and free them: nothing
 * is left for a leak checker when hello runs under the sanitizers. */
static LIST_HEAD(, hello_sleep) hello_sleeping = LIST_HEAD_INITIALIZER(hello_sleeping);

static void hello_sleep_free(struct hello_sleep *s)
{
    LIST_REMOVE(s, link);
    event_free(s->timer);
    free(s);
}

static void hello_sleep_done(evutil_socket_t fd, short what, void *arg)
{
    struct hello_sleep *s = arg;

    /* If the client went away meanwhile, evhttp has detached the request
     * from its connection instead of freeing it; sending the reply is then
     * what frees it, so the reply is sent either way. */
    hello_reply_text(s->req, HTTP_OK, "OK", "slept %ld ms\n", s->ms);
    hello_sleep_free(s);
}

static void hello_sleep(struct evhttp_request *req)
{
    struct evkeyvalq q;
    const char *arg;
    char *end;
    long ms = -1;

    if (!hello_query(req, &q)) {
        hello_reply_text(req, HTTP_BADREQUEST, "Bad Request", "undecodable query\n");
        return;
    }
    arg = evhttp_find_header(&q, "ms");
    if (arg != NULL) {
        errno = 0;
        ms = strtol(arg, &end, 10);
        if (errno != 0 || end == arg || *end != '\0')
            ms = -1;
    }
    evhttp_clear_headers(&q);
    if (ms < 0 || ms > HELLO_MAX_SLEEP_MS) {
        hello_reply_text(req, HTTP_BADREQUEST, "Bad Request",
                         "/sleep wants ms=N with 0 <= N <= %ld\n", HELLO_MAX_SLEEP_MS);
        return;
    }

    struct hello_sleep *s = calloc(1, sizeof(*s));
    if (s == NULL)
        abort();
    s->req = req;
    s->ms = ms;
    s->timer = evtimer_new(hello_base, hello_sleep_done, s);
    if (s->timer == NULL)
        abort();
    LIST_INSERT_HEAD(&hello_sleeping, s, link);
    struct timeval tv = {.tv_sec = ms / 1000, .tv_usec = (ms % 1000) * 1000};
    evtimer_add(s->timer, &tv);
}

static void hello_crash(struct evhttp_request *req)
{
    /* The tests look for this exact line in the 502 page appfront serves
     * for the requests this process held. */
    fprintf(stderr, "hello: crashing on purpose\n");
    fflush(stderr);
    exit(1);
}

static void hello_garbage(struct evhttp_request *req)
{
    struct evhttp_connection *evcon = evhttp_request_get_connection(req);
    struct bufferevent *bev = evhttp_connection_get_bufferevent(evcon);
    evutil_socket_t fd = bufferevent_getfd(bev);
    static const char junk[] = "THIS IS NOT HTTP\r\n\r\n";

    /* Written straight to the socket, behind evhttp's back, then the socket
     * is shut down: appfront must see a reply it cannot parse followed by
     * EOF. The reply evhttp sends afterwards fails to write, and that
     * failure is what makes evhttp free the connection and the request. */
    if (write(fd, junk, sizeof(junk) - 1) < 0)
        fprintf(stderr, "hello: /garbage: write: %s\n", strerror(errno));
    shutdown(fd, SHUT_RDWR);
    evhttp_send_reply(req, HTTP_OK, "OK", NULL);
}

/* Appends the JSON object of req's headers. A header sent more than once is
 * one member whose values are joined with ", " (RFC 9110 section 5.3), and
 * names are matched without regard to case, as HTTP does. */
static void hello_headers(struct evhttp_request *req)
{
    struct evkeyvalq *in = evhttp_request_get_input_headers(req);
    struct evbuffer *out = evhttp_request_get_output_buffer(req);
    struct evkeyval *h, *prev, *later;
    bool first = true;

    evbuffer_add(out, "{", 1);
    TAILQ_FOREACH(h, in, next) {
        bool seen = false;
        for (prev = TAILQ_FIRST(in); prev != h; prev = TAILQ_NEXT(prev, next)) {
            if (strcasecmp(prev->key, h->key) == 0) {
                seen = true;
                break;
            }
        }
        if (seen)
            continue;

        /* Join the values in a scratch buffer, then escape once. */
        struct evbuffer *joined = evbuffer_new();
        evbuffer_add(joined, h->value, strlen(h->value));
        for (later = TAILQ_NEXT(h, next); later != NULL; later = TAILQ_NEXT(later, next)) {
            if (strcasecmp(later->key, h->key) == 0)
                evbuffer_add_printf(joined, ", %s", later->value);
        }
        evbuffer_add(joined, "", 1);

        if (!first)
            evbuffer_add(out, ",", 1);
        first = false;
        hello_json_string(out, h->key);
        evbuffer_add(out, ":", 1);
        hello_json_string(out, (const char *)evbuffer_pullup(joined, -1));
        evbuffer_free(joined);
    }
    evbuffer_add(out, "}", 1);
    hello_reply_json(req);
}

static void hello_response_headers(struct evhttp_request *req)
{
    struct evkeyvalq q;
    struct evkeyval *kv;
    struct evkeyvalq *out = evhttp_request_get_output_headers(req);

    if (!hello_query(req, &q)) {
        hello_reply_text(req, HTTP_BADREQUEST, "Bad Request", "undecodable query\n");
        return;
    }
    TAILQ_FOREACH(kv, &q, next) {
        /* evhttp refuses values holding CR or LF itself; say so instead of
         * quietly answering without the header. */
        if (evhttp_add_header(out, kv->key, kv->value) != 0) {
            evhttp_clear_headers(&q);
            evhttp_clear_headers(out);
            hello_reply_text(req, HTTP_BADREQUEST, "Bad Request", "bad header\n");
            return;
        }
    }
    evhttp_clear_headers(&q);
    hello_reply_text(req, HTTP_OK, "OK", "ok\n");
}

static void hello_echo(struct evhttp_request *req)
{
    struct evbuffer *in = evhttp_request_get_input_buffer(req);
    struct evbuffer *out = evhttp_request_get_output_buffer(req);
    const char *type = evhttp_find_header(evhttp_request_get_input_headers(req), "Content-Type");

    evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type",
                      type != NULL ? type : "application/octet-stream");
    /* Moves the chain of the input buffer, no copy. */
    evbuffer_add_buffer(out, in);
    evhttp_send_reply(req, HTTP_OK, "OK", NULL);
}

/* The variables appfront sets for an instance (shared/DESIGN.md), plus any
 * HELLO_* a test passes through env_variables or --env_var. */
static bool hello_env_selected(const char *name, size_t len)
{
    static const char *const prefixes[] = {"APPFRONT_", "GAE_", "API_", "GOOGLE_", "HELLO_"};
    static const char *const exact[] = {"PORT", "RUN_WITH_DEVAPPSERVER", "SERVER_SOFTWARE"};

    for (size_t i = 0; i < sizeof(prefixes) / sizeof(prefixes[0]); i++) {
        if (strncmp(name, prefixes[i], strlen(prefixes[i])) == 0)
            return true;
    }
    for (size_t i = 0; i < sizeof(exact) / sizeof(exact[0]); i++) {
        if (strlen(exact[i]) == len && strncmp(name, exact[i], len) == 0)
            return true;
    }
    return false;
}

static void hello_env(struct evhttp_request *req)
{
    struct evbuffer *out = evhttp_request_get_output_buffer(req);
    struct evkeyvalq q;
    const char *one;

    if (!hello_query(req, &q)) {
        hello_reply_text(req, HTTP_BADREQUEST, "Bad Request", "undecodable query\n");
        return;
    }
    one = evhttp_find_header(&q, "name");
    evbuffer_add(out, "{", 1);
    if (one != NULL) {
        /* Any variable, by name: null when unset. */
        const char *v = getenv(one);
        hello_json_string(out, one);
        evbuffer_add(out, ":", 1);
        if (v != NULL)
            hello_json_string(out, v);
        else
            evbuffer_add(out, "null", 4);
    } else {
        bool first = true;
        for (char **e = environ; *e != NULL; e++) {
            const char *eq = strchr(*e, '=');
            if (eq == NULL || !hello_env_selected(*e, (size_t)(eq - *e)))
                continue;
            char *name = strndup(*e, (size_t)(eq - *e));
            if (name == NULL)
                abort();
            if (!first)
                evbuffer_add(out, ",", 1);
            first = false;
            hello_json_string(out, name);
            evbuffer_add(out, ":", 1);
            hello_json_string(out, eq + 1);
            free(name);
        }
    }
    evbuffer_add(out, "}", 1);
    evhttp_clear_headers(&q);
    hello_reply_json(req);
}

/* Bounds of /chunked: enough to cross appfront's buffers, not to fill
 * memory, since evhttp keeps what the peer has not read yet. */
#define HELLO_MAX_CHUNKS 1024L
#define HELLO_MAX_CHUNK_BYTES (64L * 1024)

static void hello_chunked(struct evhttp_request *req)
{
    struct evkeyvalq q;
    long n = 3, size = 5;

    if (!hello_query(req, &q)) {
        hello_reply_text(req, HTTP_BADREQUEST, "Bad Request", "undecodable query\n");
        return;
    }
    const char *a = evhttp_find_header(&q, "n");
    const char *b = evhttp_find_header(&q, "size");
    if (a != NULL)
        n = strtol(a, NULL, 10);
    if (b != NULL)
        size = strtol(b, NULL, 10);
    evhttp_clear_headers(&q);
    if (n < 0 || n > HELLO_MAX_CHUNKS || size < 1 || size > HELLO_MAX_CHUNK_BYTES) {
        hello_reply_text(req, HTTP_BADREQUEST, "Bad Request",
                         "/chunked wants n=0..%ld and size=1..%ld\n", HELLO_MAX_CHUNKS,
                         HELLO_MAX_CHUNK_BYTES);
        return;
    }

    /* Chunk i is `size` copies of the letter 'a' + i % 26, so a client can
     * check order and boundaries. With an HTTP/1.1 peer evhttp sends these
     * as real chunks (RFC 9112 section 7.1). */
    evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type", "text/plain");
    evhttp_send_reply_start(req, HTTP_OK, "OK");
    struct evbuffer *chunk = evbuffer_new();
    char *fill = malloc((size_t)size);
    if (chunk == NULL || fill == NULL)
        abort();
    for (long i = 0; i < n; i++) {
        memset(fill, 'a' + (int)(i % 26), (size_t)size);
        evbuffer_add(chunk, fill, (size_t)size);
        evhttp_send_reply_chunk(req, chunk);
    }
    free(fill);
    evbuffer_free(chunk);
    evhttp_send_reply_end(req);
}

static void hello_pid(struct evhttp_request *req)
{
    hello_reply_text(req, HTTP_OK, "OK", "%ld\n", (long)getpid());
}

/* A memcache Increment through the C client library (apiserver/client/).
 * The call is synchronous: a local round trip of well under a millisecond,
 * which an example may spend on its event loop; a real app would call from
 * a worker thread. */
static void hello_counter(struct evhttp_request *req)
{
    static const char key[] = "hello-counter";
    const char *ticket =
        evhttp_find_header(evhttp_request_get_input_headers(req), "X-AppEngine-API-Ticket");
    af_client_set_request_id(ticket);
    uint64_t initial = 0, value = 0;
    struct af_client_error err;
    int rc = af_memcache_increment("", key, sizeof(key) - 1, 1, &initial, &value, &err);
    if (rc != 1) {
        hello_reply_text(req, 500, "Internal Server Error", "memcache increment failed: %s\n",
                         err.detail);
        return;
    }
    hello_reply_text(req, HTTP_OK, "OK", "%llu\n", (unsigned long long)value);
}

/* --- dispatch ------------------------------------------------------------ */

struct hello_route {
    const char *path;
    int methods; /* EVHTTP_REQ_* mask */
    void (*handle)(struct evhttp_request *req);
};

#define HELLO_GET (EVHTTP_REQ_GET | EVHTTP_REQ_HEAD)

static const struct hello_route hello_routes[] = {
    {.path = "/", .methods = HELLO_GET, .handle = hello_root},
    {.path = "/sleep", .methods = HELLO_GET, .handle = hello_sleep},
    {.path = "/crash", .methods = HELLO_GET | EVHTTP_REQ_POST, .handle = hello_crash},
    {.path = "/garbage", .methods = HELLO_GET, .handle = hello_garbage},
    {.path = "/headers", .methods = HELLO_GET | EVHTTP_REQ_POST, .handle = hello_headers},
    {.path = "/response_headers", .methods = HELLO_GET, .handle = hello_response_headers},
    {.path = "/echo", .methods = EVHTTP_REQ_POST | EVHTTP_REQ_PUT, .handle = hello_echo},
    {.path = "/chunked", .methods = HELLO_GET, .handle = hello_chunked},
    {.path = "/env", .methods = HELLO_GET, .handle = hello_env},
    {.path = "/pid", .methods = HELLO_GET, .handle = hello_pid},
    {.path = "/counter", .methods = HELLO_GET, .handle = hello_counter},
};

static void hello_dispatch(struct evhttp_request *req, void *arg)
{
    const char *path = evhttp_uri_get_path(evhttp_request_get_evhttp_uri(req));
    enum evhttp_cmd_type method = evhttp_request_get_command(req);

    if (path == NULL || *path == '\0')
        path = "/";
    for (size_t i = 0; i < sizeof(hello_routes) / sizeof(hello_routes[0]); i++) {
        const struct hello_route *r = &hello_routes[i];
        if (strcmp(r->path, path) != 0)
            continue;
        if ((r->methods & method) == 0) {
            hello_reply_text(req, 405, "Method Not Allowed", "method not allowed on %s\n",
                             path);
            return;
        }
        r->handle(req);
        return;
    }
    hello_reply_text(req, HTTP_NOTFOUND, "Not Found", "not found: %s\n", path);
}

/* --- listening ----------------------------------------------------------- */

/* Binds the Unix socket at path. Returns the listening fd or -1 (message
 * printed). */
static evutil_socket_t hello_listen_unix(const char *path)
{
    struct sockaddr_un sun = {.sun_family = AF_UNIX};
    evutil_socket_t fd;

    if (strlen(path) >= sizeof(sun.sun_path)) {
        fprintf(stderr, "hello: APPFRONT_HTTP_SOCKET is %zu bytes, longer than a Unix socket "
                        "path may be (%zu)\n",
                strlen(path), sizeof(sun.sun_path) - 1);
        return -1;
    }
    memcpy(sun.sun_path, path, strlen(path) + 1);
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0) {
        fprintf(stderr, "hello: socket: %s\n", strerror(errno));
        return -1;
    }
    /* A stale socket file from an earlier instance would make bind fail;
     * the directory is appfront's private one, so removing it is safe. */
    unlink(path);
    if (bind(fd, (struct sockaddr *)&sun, sizeof(sun)) != 0 || listen(fd, 1024) != 0) {
        fprintf(stderr, "hello: cannot listen on %s: %s\n", path, strerror(errno));
        close(fd);
        return -1;
    }
    return fd;
}

static void hello_on_signal(evutil_socket_t sig, short what, void *arg)
{
    event_base_loopexit(hello_base, NULL);
}

int main(void)
{
    const char *sock_path = getenv("APPFRONT_HTTP_SOCKET");
    const char *port = getenv("PORT");
    struct evhttp *http;
    struct evconnlistener *listener;
    struct event *sigterm, *sigint;

    if ((sock_path == NULL || *sock_path == '\0') && (port == NULL || *port == '\0')) {
        fprintf(stderr, "hello: neither APPFRONT_HTTP_SOCKET nor PORT is set; run me under "
                        "appfront, or set PORT=8081 to try me alone\n");
        return 2;
    }
    /* appfront closes pooled connections whenever it likes; a write to one
     * must be an error to handle, not a signal that kills the instance. */
    signal(SIGPIPE, SIG_IGN);

    hello_base = event_base_new();
    http = evhttp_new(hello_base);
    if (hello_base == NULL || http == NULL) {
        fprintf(stderr, "hello: cannot set up libevent\n");
        return 1;
    }
    evhttp_set_max_body_size(http, HELLO_MAX_BODY);
    evhttp_set_allowed_methods(http, EVHTTP_REQ_GET | EVHTTP_REQ_HEAD | EVHTTP_REQ_POST |
                                         EVHTTP_REQ_PUT | EVHTTP_REQ_DELETE |
                                         EVHTTP_REQ_OPTIONS | EVHTTP_REQ_PATCH);
    evhttp_set_gencb(http, hello_dispatch, NULL);

    if (sock_path != NULL && *sock_path != '\0') {
        evutil_socket_t fd = hello_listen_unix(sock_path);
        if (fd < 0)
            return 1;
        listener = evconnlistener_new(hello_base, NULL, NULL,
                                      LEV_OPT_CLOSE_ON_FREE | LEV_OPT_CLOSE_ON_EXEC, -1, fd);
        if (listener == NULL || evhttp_bind_listener(http, listener) == NULL) {
            fprintf(stderr, "hello: cannot serve on %s\n", sock_path);
            return 1;
        }
        fprintf(stderr, "hello: listening on unix:%s (pid %ld)\n", sock_path, (long)getpid());
    } else {
        char *end;
        long p = strtol(port, &end, 10);
        if (*end != '\0' || p <= 0 || p > 65535) {
            fprintf(stderr, "hello: PORT='%s' is not a port number (1-65535)\n", port);
            return 2;
        }
        if (evhttp_bind_socket(http, "127.0.0.1", (ev_uint16_t)p) != 0) {
            fprintf(stderr, "hello: cannot listen on 127.0.0.1:%ld: %s\n", p, strerror(errno));
            return 1;
        }
        fprintf(stderr, "hello: listening on http://127.0.0.1:%ld (pid %ld)\n", p,
                (long)getpid());
    }

    /* SIGTERM is how appfront stops an instance: leave the loop, remove the
     * socket and exit 0 so the stop reads as clean in appfront's log. */
    sigterm = evsignal_new(hello_base, SIGTERM, hello_on_signal, NULL);
    sigint = evsignal_new(hello_base, SIGINT, hello_on_signal, NULL);
    evsignal_add(sigterm, NULL);
    evsignal_add(sigint, NULL);

    event_base_dispatch(hello_base);

    /* Sleepers still pending get a 503; the reply never leaves (the loop
     * is over), but sending it is what frees a request evhttp detached. */
    while (!LIST_EMPTY(&hello_sleeping)) {
        struct hello_sleep *s = LIST_FIRST(&hello_sleeping);
        hello_reply_text(s->req, HTTP_SERVUNAVAIL, "Service Unavailable", "stopping\n");
        hello_sleep_free(s);
    }
    if (sock_path != NULL && *sock_path != '\0')
        unlink(sock_path);
    event_free(sigterm);
    event_free(sigint);
    evhttp_free(http);
    event_base_free(hello_base);
    fprintf(stderr, "hello: stopped\n");
    return 0;
}
