/*
 * apiserver — start and stop of the API server (apiserver.h): binds the
 * sockets, then starts the backend thread (backend.c) and the listener
 * thread (listener.c) joined by two job queues.
 */
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <event2/event.h>

#include "apiserver/apiserver.h"
#include "apiserver/apiserver-internal.h"
#include "apiserver/backend.h"
#include "apiserver/envelope.h"
#include "apiserver/listener.h"
#include "apiserver/service.h"
#include "apiserver/services/logservice_store.h"
#include "common/hostcheck.h"
#include "common/log.h"
#include "common/xalloc.h"

struct af_api {
    /* A copy of the caller's options whose strings point into the owned
     * copies below; services keep a pointer to it (create()). */
    struct af_api_options opts;
    char *host, *socket_path, *app_id, *module, *version, *server_host, *storage_path,
        *datastore_path;
    struct af_api_module *modules; /* the copy opts.modules points at; strings owned */
    char *info_json;
    struct af_hostcheck hostcheck; /* the HTTP port's; the listener borrows it */
    int port;
    struct af_api_jobq inbox, outbox;
    bool inbox_ok, outbox_ok;
    struct af_api_jobq mainq; /* internal replies and notices for the main thread */
    bool mainq_ok;
    struct af_api_jobq postq; /* posted jobs the backend ran, back for reuse */
    bool postq_ok;
    struct af_api_job *spare_posts; /* main thread only: jobs to reuse */
    size_t n_spare_posts;
    size_t posts_out;  /* main thread only: posted, not yet back */
    bool bound_socket; /* socket_path is ours to unlink */
    struct af_backend *backend;
    struct af_api_listener *listener;
    /* Main thread only: who gets which internal reply (apiserver.h). */
    struct {
        af_api_internal_fn fn; /* NULL: the id is free */
        void *arg;
    } consumers[AF_API_MAX_CONSUMERS + 1]; /* [0] unused: id 0 is no one */
    int n_consumers;
    struct event *internal_ev; /* watches mainq while anyone subscribes */
};

static void set_err(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void set_err(char *err, size_t errlen, const char *fmt, ...)
{
    if (!err || errlen == 0)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

static char *dup_or_null(const char *s)
{
    return s ? af_xstrdup(s) : NULL;
}

/* A deep copy of the module table (NULL for none). */
static struct af_api_module *copy_modules(const struct af_api_module *m, size_t n)
{
    if (!m || n == 0)
        return NULL;
    struct af_api_module *out = af_xcalloc(n, sizeof(*out));
    for (size_t i = 0; i < n; i++) {
        out[i].name = af_xstrdup(m[i].name ? m[i].name : "default");
        out[i].version = af_xstrdup(m[i].version ? m[i].version : "1");
        out[i].hostname = af_xstrdup(m[i].hostname ? m[i].hostname : "localhost");
        out[i].instances = m[i].instances;
        out[i].background = m[i].background;
    }
    return out;
}

static void free_modules(struct af_api_module *m, size_t n)
{
    for (size_t i = 0; m && i < n; i++) {
        free((char *)m[i].name);
        free((char *)m[i].version);
        free((char *)m[i].hostname);
    }
    free(m);
}

/* ---- sockets ------------------------------------------------------------ */

/*
 * Binds host:port for HTTP. "localhost" usually resolves to both 127.0.0.1
 * and ::1, and clients (Go's dialer among them) may try either, so every
 * address gets a listener on the same port, IPv4 first; only the first must
 * succeed. Returns the number of sockets in fds (1 or 2) and sets *bound, or
 * -1 with a message.
 */
static int bind_http(const char *host, int port, int fds[2], int *bound, char *err, size_t errlen)
{
    struct addrinfo hints = {.ai_family = AF_UNSPEC,
                             .ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_PASSIVE | AI_NUMERICSERV};
    struct addrinfo *res = NULL;
    char portstr[16];
    snprintf(portstr, sizeof(portstr), "%d", port);
    int gai = getaddrinfo(host, portstr, &hints, &res);
    if (gai != 0) {
        set_err(err, errlen, "API server: cannot resolve --api_host %s: %s", host,
                gai_strerror(gai));
        return -1;
    }

    struct addrinfo *order[2] = {NULL, NULL};
    for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
        if (ai->ai_family == AF_INET && !order[0])
            order[0] = ai;
        else if (ai->ai_family == AF_INET6 && !order[1])
            order[1] = ai;
    }
    if (!order[0]) {
        order[0] = order[1];
        order[1] = NULL;
    }

    int n = 0;
    *bound = port;
    for (int i = 0; i < 2 && order[i]; i++) {
        struct addrinfo *ai = order[i];
        struct sockaddr_storage ss;
        memcpy(&ss, ai->ai_addr, ai->ai_addrlen);
        if (ss.ss_family == AF_INET)
            ((struct sockaddr_in *)&ss)->sin_port = htons((uint16_t)*bound);
        else
            ((struct sockaddr_in6 *)&ss)->sin6_port = htons((uint16_t)*bound);

        int fd = socket(ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        int one = 1;
        if (fd >= 0) {
            setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
            if (ai->ai_family == AF_INET6)
                setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
        }
        if (fd < 0 || bind(fd, (struct sockaddr *)&ss, ai->ai_addrlen) != 0 ||
            listen(fd, SOMAXCONN) != 0) {
            int e = errno;
            if (fd >= 0)
                close(fd);
            if (n == 0) {
                set_err(err, errlen,
                        "API server: cannot listen on %s:%d: %s (use --api_port=0 "
                        "to pick a free port)",
                        host, *bound, strerror(e));
                freeaddrinfo(res);
                return -1;
            }
            continue; /* a second family is a convenience only */
        }
        if (n == 0) {
            struct sockaddr_storage got;
            socklen_t len = sizeof(got);
            getsockname(fd, (struct sockaddr *)&got, &len);
            *bound = ntohs(got.ss_family == AF_INET ? ((struct sockaddr_in *)&got)->sin_port
                                                    : ((struct sockaddr_in6 *)&got)->sin6_port);
        }
        fds[n++] = fd;
    }
    freeaddrinfo(res);
    return n;
}

/* Binds the framed Unix socket at path with mode 0600. A stale socket file
 * left by a crashed server is replaced; a live one is an error. */
static int bind_framed(const char *path, char *err, size_t errlen)
{
    struct sockaddr_un sun = {.sun_family = AF_UNIX};
    if (strlen(path) >= sizeof(sun.sun_path)) {
        set_err(err, errlen, "API server: socket path %s is longer than %zu bytes", path,
                sizeof(sun.sun_path) - 1);
        return -1;
    }
    memcpy(sun.sun_path, path, strlen(path) + 1);

    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        set_err(err, errlen, "API server: socket(): %s", strerror(errno));
        return -1;
    }
    struct stat st;
    if (lstat(path, &st) == 0) {
        if (!S_ISSOCK(st.st_mode)) {
            set_err(err, errlen, "API server: %s exists and is not a socket; remove it", path);
            close(fd);
            return -1;
        }
        int probe = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        bool live = probe >= 0 && connect(probe, (struct sockaddr *)&sun, sizeof(sun)) == 0;
        if (probe >= 0)
            close(probe);
        if (live) {
            set_err(err, errlen, "API server: %s is in use by a running server", path);
            close(fd);
            return -1;
        }
        unlink(path);
    }
    /* The socket lives in appfront's private 0700 directory, so the moment
     * between bind() and chmod() exposes nothing; chmod() makes 0600 hold
     * even when the caller chose another directory. */
    if (bind(fd, (struct sockaddr *)&sun, sizeof(sun)) != 0 || chmod(path, 0600) != 0 ||
        listen(fd, SOMAXCONN) != 0) {
        set_err(err, errlen, "API server: cannot listen on %s: %s", path, strerror(errno));
        close(fd);
        unlink(path);
        return -1;
    }
    return fd;
}

/* ---- GET / -------------------------------------------------------------- */

static void json_string(FILE *f, const char *s)
{
    fputc('"', f);
    for (const unsigned char *p = (const unsigned char *)(s ? s : ""); *p; p++) {
        if (*p == '"' || *p == '\\')
            fprintf(f, "\\%c", *p);
        else if (*p < 0x20)
            fprintf(f, "\\u%04x", *p);
        else
            fputc(*p, f);
    }
    fputc('"', f);
}

static char *build_info_json(const struct af_api_options *o,
                             const struct af_service *const *services, size_t n_services)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    if (!f)
        return af_xstrdup("{}\n");
    fputs("{\"server\": \"appfront\", \"app_id\": ", f);
    json_string(f, o->app_id);
    fputs(", \"module\": ", f);
    json_string(f, o->module);
    fputs(", \"version\": ", f);
    json_string(f, o->version);
    /* The framed socket's path, so a tool given only the HTTP port (from the
     * startup line) can find the other transport. */
    fputs(", \"socket\": ", f);
    if (o->socket_path)
        json_string(f, o->socket_path);
    else
        fputs("null", f);
    fputs(", \"services\": [", f);
    bool first = true;
    for (size_t i = 0; i < n_services; i++) {
        if (!services[i])
            continue;
        fputs(first ? "" : ", ", f);
        json_string(f, services[i]->name);
        first = false;
    }
    fputs("]}\n", f);
    fclose(f);
    return buf;
}

/* ---- start and stop ----------------------------------------------------- */

/* Starts a thread-creating call with every asynchronous signal blocked, so
 * the new thread inherits that mask: SIGINT/SIGTERM are the main loop's to
 * handle, and a write to a vanished peer must fail with EPIPE rather than
 * raise SIGPIPE. */
static void block_signals(sigset_t *old)
{
    sigset_t all;
    sigfillset(&all);
    sigdelset(&all, SIGSEGV);
    sigdelset(&all, SIGBUS);
    sigdelset(&all, SIGFPE);
    sigdelset(&all, SIGILL);
    sigdelset(&all, SIGABRT);
    pthread_sigmask(SIG_BLOCK, &all, old);
}

int af_api_start(const struct af_api_options *opts, struct af_api **out, char *err, size_t errlen)
{
    return af_api_start_services(opts, af_services, af_n_services, out, err, errlen);
}

int af_api_start_services(const struct af_api_options *opts,
                          const struct af_service *const *services, size_t n_services,
                          struct af_api **out, char *err, size_t errlen)
{
    struct af_api *api = af_xcalloc(1, sizeof(*api));
    int http_fds[2] = {-1, -1};
    int framed_fd = -1;

    api->opts = *opts;
    api->opts.host = api->host = af_xstrdup(opts->host ? opts->host : "localhost");
    api->opts.socket_path = api->socket_path = dup_or_null(opts->socket_path);
    api->opts.app_id = api->app_id = af_xstrdup(opts->app_id ? opts->app_id : "testapp");
    api->opts.module = api->module = af_xstrdup(opts->module ? opts->module : "default");
    api->opts.version = api->version = af_xstrdup(opts->version ? opts->version : "1");
    api->opts.server_host = api->server_host = dup_or_null(opts->server_host);
    api->opts.storage_path = api->storage_path = dup_or_null(opts->storage_path);
    api->opts.datastore_path = api->datastore_path = dup_or_null(opts->datastore_path);
    api->opts.modules = api->modules = copy_modules(opts->modules, opts->n_modules);
    api->opts.n_modules = api->modules ? opts->n_modules : 0;
    if (api->opts.default_deadline_ms <= 0)
        api->opts.default_deadline_ms = 60000;
    api->info_json = build_info_json(&api->opts, services, n_services);
    af_hostcheck_init(&api->hostcheck, opts->enable_host_checking, opts->host, opts->addn_hosts,
                      opts->n_addn_hosts);

    if (bind_http(api->host, opts->port, http_fds, &api->port, err, errlen) < 0)
        goto fail;
    if (api->socket_path) {
        if ((framed_fd = bind_framed(api->socket_path, err, errlen)) < 0)
            goto fail_close_http;
        api->bound_socket = true;
    }

    int rc = af_api_jobq_init(&api->inbox, false);
    api->inbox_ok = rc == 0;
    if (rc == 0) {
        rc = af_api_jobq_init(&api->outbox, true);
        api->outbox_ok = rc == 0;
    }
    if (rc == 0) {
        rc = af_api_jobq_init(&api->mainq, true);
        api->mainq_ok = rc == 0;
    }
    if (rc == 0) {
        rc = af_api_jobq_init(&api->postq, true);
        api->postq_ok = rc == 0;
    }
    if (rc < 0) {
        set_err(err, errlen, "API server: eventfd: %s", strerror(-rc));
        goto fail_close_framed;
    }

    sigset_t old;
    block_signals(&old);
    rc = af_backend_start(&api->opts, services, n_services, &api->inbox, &api->outbox,
                          &api->mainq, &api->backend);
    api->opts.queues = NULL; /* borrowed until here; the service made its copy */
    if (rc < 0) {
        pthread_sigmask(SIG_SETMASK, &old, NULL);
        set_err(err, errlen, "API server: cannot start the backend thread: %s", strerror(-rc));
        goto fail_close_framed;
    }
    struct af_api_listener_config cfg = {
        .http_fds = {http_fds[0], http_fds[1]},
        .framed_fd = framed_fd,
        .inbox = &api->inbox,
        .outbox = &api->outbox,
        .default_deadline_ms = api->opts.default_deadline_ms,
        .info_json = api->info_json,
        .hostcheck = &api->hostcheck,
    };
    rc = af_api_listener_start(&cfg, &api->listener);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (rc < 0) {
        /* af_api_listener_start closed the fds; af_api_stop() stops the backend. */
        set_err(err, errlen, "API server: cannot start the listener thread: %s", strerror(-rc));
        goto fail;
    }
    af_info("api: serving HTTP on %s:%d%s%s", api->host, api->port,
            api->socket_path ? " and framed calls on " : "",
            api->socket_path ? api->socket_path : "");
    *out = api;
    return 0;

fail_close_framed:
    if (framed_fd >= 0)
        close(framed_fd);
fail_close_http:
    for (int i = 0; i < 2; i++)
        if (http_fds[i] >= 0)
            close(http_fds[i]);
fail:
    af_api_stop(api);
    return -1;
}

int af_api_port(const struct af_api *api)
{
    return api->port;
}

/* ---- internal calls from the main thread ------------------------------- */

int af_api_internal_fd(const struct af_api *api)
{
    return api->mainq.efd;
}

int af_api_internal_call(struct af_api *api, const char *service, const char *method,
                         const uint8_t *req, size_t len, uint64_t tag)
{
    /* Encoded and decoded like a client's call, so the job owns a Request
     * exactly as the listener's jobs do. */
    Af__RemoteApi__Request r = AF__REMOTE_API__REQUEST__INIT;
    r.service_name = (char *)service;
    r.method = (char *)method;
    r.request.data = (uint8_t *)req;
    r.request.len = len;
    size_t n = af__remote_api__request__get_packed_size(&r);
    uint8_t *buf = af_xmalloc(n ? n : 1);
    af__remote_api__request__pack(&r, buf);
    struct af_api_job *job = af_api_job_new(AF_API_JOB_INTERNAL);
    job->req = af_envelope_request_decode(&job->arena, buf, n);
    job->tag = tag;
    job->deadline_ns = UINT64_MAX;
    free(buf);
    if (!job->req) {
        af_error("api: internal call %.64s.%.64s does not encode", service, method);
        af_api_job_free(job);
        return -1;
    }
    af_api_jobq_push(&api->inbox, job);
    return 0;
}

/* Posts out at once (posted, not back yet). Every post job is made by
 * af_api_post_start(), each with an AF_API_POST_MAX_BYTES buffer whose pages are
 * touched then: the memory of posts is fixed from the first request on,
 * whatever batches come and whatever the scheduler does to the backend
 * thread (a soak test measures RSS growth under load). */
#define POST_MAX_OUT 16

/* The posted jobs the backend ran come back to be reused. */
static void take_back_posts(struct af_api *api)
{
    struct af_api_job *back = af_api_jobq_try_take(&api->postq);
    while (back) {
        struct af_api_job *next = back->next;
        api->posts_out--;
        back->next = api->spare_posts;
        api->spare_posts = back;
        api->n_spare_posts++;
        back = next;
    }
}

void af_api_post_start(struct af_api *api)
{
    for (size_t i = 0; i < POST_MAX_OUT; i++) {
        struct af_api_job *j = af_api_job_new(AF_API_JOB_POST);
        j->reply = af_xmalloc(AF_API_POST_MAX_BYTES);
        memset(j->reply, 0, AF_API_POST_MAX_BYTES);
        j->reply_cap = AF_API_POST_MAX_BYTES;
        j->next = api->spare_posts;
        api->spare_posts = j;
        api->n_spare_posts++;
    }
}

bool af_api_post_full(struct af_api *api)
{
    take_back_posts(api);
    return api->posts_out >= POST_MAX_OUT;
}

int af_api_post(struct af_api *api, const char *service, const char *method,
                const uint8_t *data, size_t len, unsigned flags)
{
    take_back_posts(api);
    if (len > AF_API_POST_MAX_BYTES || !api->spare_posts) {
        af_error("api: post to %s.%s dropped (%zu bytes, %zu posts out)", service, method, len,
                 api->posts_out);
        return -1;
    }
    struct af_api_job *job = api->spare_posts;
    api->spare_posts = job->next;
    api->n_spare_posts--;
    job->post_service = service;
    job->post_method = method;
    job->post_back = &api->postq;
    job->deadline_ns = UINT64_MAX;
    if (flags & (AF_API_POST_LAZY | AF_API_POST_JOIN)) {
        bool joined = false;
        int waiting;
        if (flags & AF_API_POST_JOIN) {
            waiting = af_api_jobq_try_post_join(&api->inbox, job, data, len, &joined);
        } else {
            memcpy(job->reply, data, len);
            job->reply_len = len;
            waiting = af_api_jobq_try_push_lazy(&api->inbox, job);
        }
        if (waiting < 0 || joined) { /* not now (the backend holds the inbox), or not needed */
            job->next = api->spare_posts;
            api->spare_posts = job;
            api->n_spare_posts++;
        }
        if (waiting < 0)
            return -1;
        if (!joined)
            api->posts_out++;
        return waiting ? (joined ? AF_API_POST_JOINED : AF_API_POST_WAITING) : 0;
    }
    memcpy(job->reply, data, len);
    job->reply_len = len;
    api->posts_out++;
    af_api_jobq_push(&api->inbox, job);
    return 0;
}

void af_api_internal_take(struct af_api *api, af_api_internal_fn fn, void *arg)
{
    bool closed;
    struct af_api_job *list = af_api_jobq_take_all(&api->mainq, &closed);
    while (list) {
        struct af_api_job *job = list;
        list = job->next;
        struct af_api_internal_reply r = {.notice = job->kind == AF_API_JOB_NOTICE};
        if (r.notice) {
            r.service = job->stub;
        } else {
            r.service = job->req ? job->req->service_name : "";
            r.tag = job->tag;
            r.ok = job->status == 0;
            r.app_error = !r.ok && job->res.kind == AF_RESULT_APP_ERROR;
            r.code = r.ok ? 0 : job->res.code;
            r.data = job->reply;
            r.len = job->reply_len;
        }
        fn(arg, &r);
        af_api_job_free(job);
    }
}

/* The dispatcher: a reply goes to the consumer its tag names, a notice
 * to everyone (a consumer that has no use for it ignores it). */
static void dispatch_one(void *arg, const struct af_api_internal_reply *r)
{
    struct af_api *api = arg;
    if (r->notice) {
        for (int id = 1; id <= AF_API_MAX_CONSUMERS; id++)
            if (api->consumers[id].fn)
                api->consumers[id].fn(api->consumers[id].arg, r);
        return;
    }
    int id = AF_API_TAG_CONSUMER(r->tag);
    if (id >= 1 && id <= AF_API_MAX_CONSUMERS && api->consumers[id].fn)
        api->consumers[id].fn(api->consumers[id].arg, r);
}

static void dispatch_cb(evutil_socket_t fd, short what, void *arg)
{
    af_api_internal_take(arg, dispatch_one, arg);
}

int af_api_internal_subscribe(struct af_api *api, struct event_base *base, af_api_internal_fn fn,
                              void *arg)
{
    int id = 1;
    while (id <= AF_API_MAX_CONSUMERS && api->consumers[id].fn)
        id++;
    if (id > AF_API_MAX_CONSUMERS) {
        af_error("api: no room for another consumer of internal replies (%d)",
                 AF_API_MAX_CONSUMERS);
        return -1;
    }
    if (!api->internal_ev) {
        api->internal_ev =
            event_new(base, af_api_internal_fd(api), EV_READ | EV_PERSIST, dispatch_cb, api);
        if (!api->internal_ev || event_add(api->internal_ev, NULL) != 0) {
            af_error("api: cannot watch the internal replies");
            if (api->internal_ev)
                event_free(api->internal_ev);
            api->internal_ev = NULL;
            return -1;
        }
    }
    api->consumers[id].fn = fn;
    api->consumers[id].arg = arg;
    api->n_consumers++;
    return id;
}

void af_api_internal_unsubscribe(struct af_api *api, int id)
{
    if (!api || id < 1 || id > AF_API_MAX_CONSUMERS || !api->consumers[id].fn)
        return;
    api->consumers[id].fn = NULL;
    api->consumers[id].arg = NULL;
    if (--api->n_consumers == 0 && api->internal_ev) {
        event_free(api->internal_ev);
        api->internal_ev = NULL;
    }
}

void af_api_stop(struct af_api *api)
{
    if (!api)
        return;
    /* Every consumer should have unsubscribed; if one did not, its event
     * must not outlive the queue it watches. */
    if (api->internal_ev)
        event_free(api->internal_ev);
    /* Listener first so no new call arrives; then the backend, which
     * finishes its current call; then whatever both left behind. */
    af_api_listener_stop(api->listener);
    af_backend_stop(api->backend);
    /* The backend has run every post it was handed (backend.c): the
     * file now holds all it received. */
    af_logstore_close(api->opts.logstore);
    af_api_listener_free(api->listener);
    if (api->inbox_ok)
        af_api_jobq_release(&api->inbox);
    if (api->outbox_ok)
        af_api_jobq_release(&api->outbox);
    if (api->mainq_ok)
        af_api_jobq_release(&api->mainq);
    if (api->postq_ok)
        af_api_jobq_release(&api->postq);
    while (api->spare_posts) {
        struct af_api_job *job = api->spare_posts;
        api->spare_posts = job->next;
        af_api_job_free(job);
    }
    if (api->bound_socket)
        unlink(api->socket_path);
    free(api->host);
    free(api->socket_path);
    free(api->app_id);
    free(api->module);
    free(api->version);
    free(api->server_host);
    free_modules(api->modules, api->opts.n_modules);
    free(api->storage_path);
    free(api->datastore_path);
    free(api->info_json);
    af_hostcheck_release(&api->hostcheck);
    free(api);
}
