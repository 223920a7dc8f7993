/*
 * guestbook — a native C app on appfront's datastore and memcache
 * (README.md).
 *
 * It serves HTTP/1.1 with libevent's evhttp on the Unix socket appfront
 * passes in APPFRONT_HTTP_SOCKET (or 127.0.0.1:$PORT), and makes its API
 * calls through the C client library (build/libappfront.a). The calls are
 * blocking, made from the event loop: app.yaml says threadsafe: false, so
 * appfront sends one request at a time to an instance.
 *
 * Greetings are entities of kind Greeting under the one parent key
 * Guestbook:default, so the front page is an ancestor query (strongly
 * consistent in App Engine too) and every greeting is in one entity group.
 */
#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <event2/listener.h>

#include "apiserver/client/appfront.h"

#define GB_PAGE_SIZE 20
#define GB_CACHE_KEY "guestbook:front"
#define GB_CACHE_SECONDS 60
/* A greeting's text and author are bounded so a page stays small. */
#define GB_MAX_CONTENT 4000
#define GB_MAX_AUTHOR 100
#define GB_MAX_BODY (64 * 1024)

static struct event_base *gb_base;

static void reply_text(struct evhttp_request *req, int code, const char *reason, const char *fmt,
                       ...) __attribute__((format(printf, 4, 5)));
static void reply_text(struct evhttp_request *req, int code, const char *reason, const char *fmt,
                       ...)
{
    va_list ap;
    va_start(ap, fmt);
    evbuffer_add_vprintf(evhttp_request_get_output_buffer(req), fmt, ap);
    va_end(ap);
    evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type",
                      "text/plain; charset=utf-8");
    evhttp_send_reply(req, code, reason, NULL);
}

static void api_failed(struct evhttp_request *req, const char *what,
                       const struct af_client_error *err)
{
    fprintf(stderr, "guestbook: %s failed: %s\n", what, err->detail);
    reply_text(req, 500, "Internal Server Error", "%s failed: %s\n", what, err->detail);
}

/* Ties the API calls of this request to it in appfront's logs. */
static void set_ticket(struct evhttp_request *req)
{
    af_client_set_request_id(
        evhttp_find_header(evhttp_request_get_input_headers(req), "X-AppEngine-API-Ticket"));
}

static void html_escape(struct evbuffer *out, const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        switch (s[i]) {
        case '<':
            evbuffer_add(out, "&lt;", 4);
            break;
        case '>':
            evbuffer_add(out, "&gt;", 4);
            break;
        case '&':
            evbuffer_add(out, "&amp;", 5);
            break;
        case '"':
            evbuffer_add(out, "&quot;", 6);
            break;
        default:
            evbuffer_add(out, &s[i], 1);
        }
    }
}

static struct af_ds_key *guestbook_key(void)
{
    return af_ds_key_new(NULL, NULL, "Guestbook", "default", 0);
}

/* Renders the front page into out from the datastore. Returns 0 or -1. */
static int render_front(struct evbuffer *out, struct af_client_error *err)
{
    struct af_ds_key *parent = guestbook_key();
    struct af_ds_query *q = af_ds_query_new(NULL, "Greeting");
    af_ds_query_ancestor(q, parent);
    af_ds_query_order(q, "date", 1);
    af_ds_query_limit(q, GB_PAGE_SIZE);
    struct af_ds_entity **list;
    size_t n;
    int rc = af_ds_query_run(q, &list, &n, err);
    af_ds_query_free(q);
    af_ds_key_free(parent);
    if (rc != 0)
        return -1;
    evbuffer_add_printf(out, "<!doctype html>\n<title>Guestbook</title>\n<h1>Guestbook</h1>\n"
                             "<form method=post action=/sign>\n"
                             "<input name=author placeholder=name>\n"
                             "<textarea name=content></textarea>\n"
                             "<button>Sign</button>\n</form>\n<ul>\n");
    for (size_t i = 0; i < n; i++) {
        const char *author = "", *content = "";
        size_t alen = 0, clen = 0;
        int64_t when = 0;
        af_ds_entity_get_string(list[i], "author", &author, &alen);
        af_ds_entity_get_string(list[i], "content", &content, &clen);
        af_ds_entity_get_int(list[i], "date", &when);
        evbuffer_add_printf(out, "<li id=g%" PRId64 " data-date=%" PRId64 "><b>",
                            af_ds_key_id(af_ds_entity_key(list[i])), when);
        html_escape(out, alen ? author : "anonymous", alen ? alen : 9);
        evbuffer_add_printf(out, "</b> wrote: <q>");
        html_escape(out, content, clen);
        evbuffer_add_printf(out, "</q></li>\n");
    }
    evbuffer_add_printf(out, "</ul>\n<p>%zu greeting%s shown.</p>\n", n, n == 1 ? "" : "s");
    af_ds_entities_free(list, n);
    return 0;
}

static void gb_front(struct evhttp_request *req)
{
    struct af_client_error err;
    uint8_t *cached = NULL;
    size_t len = 0;
    struct evbuffer *out = evhttp_request_get_output_buffer(req);
    struct evkeyvalq *h = evhttp_request_get_output_headers(req);
    set_ticket(req);
    /* A cache failure only costs a datastore query. */
    int hit = af_memcache_get(NULL, GB_CACHE_KEY, strlen(GB_CACHE_KEY), &cached, &len, NULL, &err);
    if (hit == 1) {
        evbuffer_add(out, cached, len);
        free(cached);
        evhttp_add_header(h, "X-Guestbook-Cache", "hit");
    } else {
        if (render_front(out, &err) != 0) {
            evbuffer_drain(out, evbuffer_get_length(out));
            api_failed(req, "the greetings query", &err);
            return;
        }
        size_t n = evbuffer_get_length(out);
        af_memcache_set(NULL, GB_CACHE_KEY, strlen(GB_CACHE_KEY), evbuffer_pullup(out, -1), n, 0,
                        GB_CACHE_SECONDS, &err);
        evhttp_add_header(h, "X-Guestbook-Cache", "miss");
    }
    evhttp_add_header(h, "Content-Type", "text/html; charset=utf-8");
    evhttp_send_reply(req, HTTP_OK, "OK", NULL);
}

static void gb_sign(struct evhttp_request *req)
{
    struct evbuffer *in = evhttp_request_get_input_buffer(req);
    size_t n = evbuffer_get_length(in);
    char *body = malloc(n + 1);
    if (!body)
        abort();
    evbuffer_copyout(in, body, n);
    body[n] = '\0';
    struct evkeyvalq form;
    TAILQ_INIT(&form);
    if (evhttp_parse_query_str(body, &form) != 0) {
        free(body);
        reply_text(req, HTTP_BADREQUEST, "Bad Request", "the form does not decode\n");
        return;
    }
    free(body);
    const char *author = evhttp_find_header(&form, "author");
    const char *content = evhttp_find_header(&form, "content");
    if (!content || !content[0] || strlen(content) > GB_MAX_CONTENT ||
        (author && strlen(author) > GB_MAX_AUTHOR)) {
        evhttp_clear_headers(&form);
        reply_text(req, HTTP_BADREQUEST, "Bad Request",
                   "content is required (at most %d bytes); author at most %d bytes\n",
                   GB_MAX_CONTENT, GB_MAX_AUTHOR);
        return;
    }

    set_ticket(req);
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    struct af_ds_key *parent = guestbook_key();
    struct af_ds_key *key = af_ds_key_new(NULL, parent, "Greeting", NULL, 0);
    struct af_ds_entity *e = af_ds_entity_new(key);
    af_ds_key_free(key);
    af_ds_key_free(parent);
    af_ds_entity_add_string(e, "author", author ? author : "", author ? strlen(author) : 0, 1);
    af_ds_entity_add_string(e, "content", content, strlen(content), 0);
    af_ds_entity_add_time(e, "date", (int64_t)now.tv_sec * 1000000 + now.tv_nsec / 1000, 1);
    evhttp_clear_headers(&form);

    struct af_client_error err;
    if (af_ds_put(e, &err) != 0) {
        af_ds_entity_free(e);
        api_failed(req, "storing the greeting", &err);
        return;
    }
    char location[64];
    snprintf(location, sizeof(location), "/#g%" PRId64, af_ds_key_id(af_ds_entity_key(e)));
    af_ds_entity_free(e);
    /* The cached page no longer shows every greeting. */
    af_memcache_delete(NULL, GB_CACHE_KEY, strlen(GB_CACHE_KEY), &err);
    evhttp_add_header(evhttp_request_get_output_headers(req), "Location", location);
    reply_text(req, 303, "See Other", "stored\n");
}

static void gb_greeting(struct evhttp_request *req)
{
    struct evkeyvalq q;
    TAILQ_INIT(&q);
    const char *query = evhttp_uri_get_query(evhttp_request_get_evhttp_uri(req));
    int64_t id = 0;
    if (query && evhttp_parse_query_str(query, &q) == 0 && evhttp_find_header(&q, "id")) {
        char *end;
        id = strtoll(evhttp_find_header(&q, "id"), &end, 10);
        if (*end)
            id = 0;
    }
    evhttp_clear_headers(&q);
    if (id <= 0) {
        reply_text(req, HTTP_BADREQUEST, "Bad Request", "id must be a positive integer\n");
        return;
    }
    set_ticket(req);
    struct af_ds_key *parent = guestbook_key();
    struct af_ds_key *key = af_ds_key_new(NULL, parent, "Greeting", NULL, id);
    struct af_ds_entity *e = NULL;
    struct af_client_error err;
    int rc = af_ds_get(key, &e, &err);
    af_ds_key_free(key);
    af_ds_key_free(parent);
    if (rc < 0) {
        api_failed(req, "reading the greeting", &err);
        return;
    }
    if (rc == 0) {
        reply_text(req, HTTP_NOTFOUND, "Not Found", "no greeting %" PRId64 "\n", id);
        return;
    }
    const char *author = "", *content = "";
    size_t alen = 0, clen = 0;
    af_ds_entity_get_string(e, "author", &author, &alen);
    af_ds_entity_get_string(e, "content", &content, &clen);
    reply_text(req, HTTP_OK, "OK", "%.*s: %.*s\n", (int)alen, author, (int)clen, content);
    af_ds_entity_free(e);
}

struct gb_route {
    const char *path;
    int methods;
    void (*handle)(struct evhttp_request *req);
};

static const struct gb_route gb_routes[] = {
    {"/", EVHTTP_REQ_GET | EVHTTP_REQ_HEAD, gb_front},
    {"/sign", EVHTTP_REQ_POST, gb_sign},
    {"/greeting", EVHTTP_REQ_GET, gb_greeting},
};

static void gb_dispatch(struct evhttp_request *req, void *arg)
{
    const char *path = evhttp_uri_get_path(evhttp_request_get_evhttp_uri(req));
    if (!path || !*path)
        path = "/";
    for (size_t i = 0; i < sizeof(gb_routes) / sizeof(gb_routes[0]); i++) {
        if (strcmp(gb_routes[i].path, path) != 0)
            continue;
        if (!(gb_routes[i].methods & evhttp_request_get_command(req))) {
            reply_text(req, 405, "Method Not Allowed", "method not allowed on %s\n", path);
            return;
        }
        gb_routes[i].handle(req);
        return;
    }
    reply_text(req, HTTP_NOTFOUND, "Not Found", "not found: %s\n", path);
}

static evutil_socket_t listen_unix(const char *path)
{
    struct sockaddr_un sun = {.sun_family = AF_UNIX};
    if (strlen(path) >= sizeof(sun.sun_path)) {
        fprintf(stderr, "guestbook: APPFRONT_HTTP_SOCKET is too long for a Unix socket\n");
        return -1;
    }
    memcpy(sun.sun_path, path, strlen(path) + 1);
    evutil_socket_t fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0) {
        fprintf(stderr, "guestbook: socket: %s\n", strerror(errno));
        return -1;
    }
    unlink(path); /* a stale file in appfront's private directory */
    if (bind(fd, (struct sockaddr *)&sun, sizeof(sun)) != 0 || listen(fd, 128) != 0) {
        fprintf(stderr, "guestbook: cannot listen on %s: %s\n", path, strerror(errno));
        close(fd);
        return -1;
    }
    return fd;
}

static void on_signal(evutil_socket_t sig, short what, void *arg)
{
    event_base_loopexit(gb_base, NULL);
}

int main(void)
{
    const char *sock_path = getenv("APPFRONT_HTTP_SOCKET");
    const char *port = getenv("PORT");
    if ((!sock_path || !*sock_path) && (!port || !*port)) {
        fprintf(stderr, "guestbook: neither APPFRONT_HTTP_SOCKET nor PORT is set; run me "
                        "under appfront: build/appfront examples/guestbook\n");
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    gb_base = event_base_new();
    struct evhttp *http = gb_base ? evhttp_new(gb_base) : NULL;
    if (!http) {
        fprintf(stderr, "guestbook: cannot set up libevent\n");
        return 1;
    }
    evhttp_set_max_body_size(http, GB_MAX_BODY);
    evhttp_set_allowed_methods(http, EVHTTP_REQ_GET | EVHTTP_REQ_HEAD | EVHTTP_REQ_POST);
    evhttp_set_gencb(http, gb_dispatch, NULL);
    if (sock_path && *sock_path) {
        evutil_socket_t fd = listen_unix(sock_path);
        struct evconnlistener *l =
            fd < 0 ? NULL
                   : evconnlistener_new(gb_base, NULL, NULL,
                                        LEV_OPT_CLOSE_ON_FREE | LEV_OPT_CLOSE_ON_EXEC, -1, fd);
        if (!l || !evhttp_bind_listener(http, l)) {
            fprintf(stderr, "guestbook: cannot serve on %s\n", sock_path);
            return 1;
        }
    } else {
        char *end;
        long p = strtol(port, &end, 10);
        if (*end || p <= 0 || p > 65535 ||
            evhttp_bind_socket(http, "127.0.0.1", (ev_uint16_t)p) != 0) {
            fprintf(stderr, "guestbook: cannot listen on 127.0.0.1:%s\n", port);
            return 1;
        }
    }
    struct event *sigterm = evsignal_new(gb_base, SIGTERM, on_signal, NULL);
    struct event *sigint = evsignal_new(gb_base, SIGINT, on_signal, NULL);
    evsignal_add(sigterm, NULL);
    evsignal_add(sigint, NULL);
    event_base_dispatch(gb_base);
    if (sock_path && *sock_path)
        unlink(sock_path);
    event_free(sigterm);
    event_free(sigint);
    evhttp_free(http);
    event_base_free(gb_base);
    af_client_close_all();
    return 0;
}
