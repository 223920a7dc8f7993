/*
 * client — af_client_call() over the framed Unix socket (appfront.h).
 *
 * Framing (docs/api.md): every message is a 4-byte big-endian length and an
 * encoded remote_api envelope; the server answers each Request with one
 * Response, in order, one call in flight per connection.
 *
 * Connections live in a pool guarded by pool_mu. A thread takes one out (or
 * opens a new one), owns it exclusively for the call, and gives it back only
 * if the call ended cleanly; any error or timeout closes it instead, so a
 * pooled connection is always at a message boundary. The lock is never held
 * across I/O.
 *
 * This file must not use anything from common/: native apps link
 * libappfront.a alone. Allocation is plain malloc, aborting on failure, the
 * same policy as appfront's own af_xmalloc.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "apiserver/client/appfront.h"
#include "apiserver/client/client-internal.h"
#include "remote_api.pb-c.h"

/* Idle connections kept; more are closed when returned. A native app rarely
 * has more threads making calls at once than this. */
#define POOL_MAX 16
#define DEFAULT_DEADLINE_MS 60000

static pthread_mutex_t pool_mu = PTHREAD_MUTEX_INITIALIZER;
static int pool_fds[POOL_MAX]; /* guarded by pool_mu */
static int pool_n;             /* guarded by pool_mu */
static char *socket_override;  /* guarded by pool_mu */
static pthread_once_t atfork_once = PTHREAD_ONCE_INIT;

static __thread char tls_request_id[128];

void *af_client_xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (!p) {
        fprintf(stderr, "appfront client: out of memory allocating %zu bytes\n", n);
        abort();
    }
    return p;
}

void af_client_set_error(struct af_client_error *err, enum af_client_status status, int code,
                         const char *fmt, ...)
{
    if (!err)
        return;
    err->status = status;
    err->code = code;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err->detail, sizeof(err->detail), fmt, ap);
    va_end(ap);
}

static void clear_error(struct af_client_error *err)
{
    if (err) {
        err->status = AF_CLIENT_OK;
        err->code = 0;
        err->detail[0] = '\0';
    }
}

/* ---- the pool ------------------------------------------------------------ */

/* In a child after fork() the pooled sockets are shared with the parent:
 * using them would interleave two processes' frames. Forget them (closing
 * only the child's copies) and reset the lock, which another thread of the
 * parent may have held at the moment of fork(). */
static void atfork_child(void)
{
    pthread_mutex_init(&pool_mu, NULL);
    for (int i = 0; i < pool_n; i++)
        close(pool_fds[i]);
    pool_n = 0;
}

static void register_atfork(void)
{
    pthread_atfork(NULL, NULL, atfork_child);
}

static int pool_take(void)
{
    int fd = -1;
    pthread_mutex_lock(&pool_mu);
    if (pool_n > 0)
        fd = pool_fds[--pool_n];
    pthread_mutex_unlock(&pool_mu);
    return fd;
}

static void pool_give(int fd)
{
    pthread_mutex_lock(&pool_mu);
    if (pool_n < POOL_MAX) {
        pool_fds[pool_n++] = fd;
        fd = -1;
    }
    pthread_mutex_unlock(&pool_mu);
    if (fd >= 0)
        close(fd);
}

void af_client_close_all(void)
{
    pthread_mutex_lock(&pool_mu);
    for (int i = 0; i < pool_n; i++)
        close(pool_fds[i]);
    pool_n = 0;
    pthread_mutex_unlock(&pool_mu);
}

void af_client_set_socket_path(const char *path)
{
    char *copy = path ? strdup(path) : NULL;
    if (path && !copy)
        abort();
    pthread_mutex_lock(&pool_mu);
    free(socket_override);
    socket_override = copy;
    pthread_mutex_unlock(&pool_mu);
    af_client_close_all();
}

void af_client_set_request_id(const char *id)
{
    if (!id) {
        tls_request_id[0] = '\0';
        return;
    }
    snprintf(tls_request_id, sizeof(tls_request_id), "%s", id);
}

/* ---- I/O with a deadline ------------------------------------------------- */

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Waits until fd is ready for events or the deadline passes. Returns 0,
 * -ETIMEDOUT or -errno. */
static int wait_fd(int fd, short events, int64_t deadline)
{
    for (;;) {
        int64_t left = deadline - now_ms();
        if (left <= 0)
            return -ETIMEDOUT;
        struct pollfd p = {.fd = fd, .events = events};
        int n = poll(&p, 1, left > 1000000 ? 1000000 : (int)left);
        if (n > 0)
            return 0;
        if (n < 0 && errno != EINTR)
            return -errno;
    }
}

static int send_all(int fd, const uint8_t *buf, size_t len, int64_t deadline)
{
    while (len > 0) {
        /* MSG_NOSIGNAL: a vanished server must be an EPIPE here, not a
         * SIGPIPE that kills the app. */
        ssize_t n = send(fd, buf, len, MSG_NOSIGNAL);
        if (n > 0) {
            buf += n;
            len -= (size_t)n;
        } else if (n < 0 && errno == EINTR) {
            continue;
        } else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            int rc = wait_fd(fd, POLLOUT, deadline);
            if (rc < 0)
                return rc;
        } else {
            return n < 0 ? -errno : -EPIPE;
        }
    }
    return 0;
}

/* Reads exactly len bytes. Returns 0, -ECONNRESET on EOF, -ETIMEDOUT or
 * -errno. */
static int recv_all(int fd, uint8_t *buf, size_t len, int64_t deadline)
{
    while (len > 0) {
        ssize_t n = recv(fd, buf, len, 0);
        if (n > 0) {
            buf += n;
            len -= (size_t)n;
        } else if (n == 0) {
            return -ECONNRESET;
        } else if (errno == EINTR) {
            continue;
        } else if (errno == EAGAIN || errno == EWOULDBLOCK) {
            int rc = wait_fd(fd, POLLIN, deadline);
            if (rc < 0)
                return rc;
        } else {
            return -errno;
        }
    }
    return 0;
}

static int open_conn(struct af_client_error *err)
{
    char path[sizeof(((struct sockaddr_un *)0)->sun_path)];
    pthread_mutex_lock(&pool_mu);
    const char *p = socket_override ? socket_override : getenv("APPFRONT_API_SOCKET");
    bool ok = p && *p && strlen(p) < sizeof(path);
    if (ok)
        memcpy(path, p, strlen(p) + 1);
    pthread_mutex_unlock(&pool_mu);
    if (!ok) {
        af_client_set_error(err, AF_CLIENT_TRANSPORT_ERROR, ENOENT,
                            p && *p ? "APPFRONT_API_SOCKET is too long for a Unix socket path"
                                    : "APPFRONT_API_SOCKET is not set: is this app running "
                                      "under appfront?");
        return -1;
    }

    struct sockaddr_un sun = {.sun_family = AF_UNIX};
    memcpy(sun.sun_path, path, strlen(path) + 1);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0 || connect(fd, (struct sockaddr *)&sun, sizeof(sun)) != 0) {
        int e = errno;
        if (fd >= 0)
            close(fd);
        af_client_set_error(err, AF_CLIENT_TRANSPORT_ERROR, e,
                            "cannot connect to the API server at %s: %s", path, strerror(e));
        return -1;
    }
    /* Non-blocking after connect (a Unix connect completes at once), so
     * every later wait goes through poll() with the call's deadline. */
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    return fd;
}

/* ---- the call ------------------------------------------------------------ */

/* Sends the frame and reads the reply frame on fd. Returns 0 with *reply
 * (malloc'd) or a negative errno; *sent tells whether the frame went out in
 * full. */
static int exchange(int fd, const uint8_t *frame, size_t frame_len, int64_t deadline,
                    uint8_t **reply, size_t *reply_len, bool *sent)
{
    *sent = false;
    int rc = send_all(fd, frame, frame_len, deadline);
    if (rc < 0)
        return rc;
    *sent = true;

    uint8_t hdr[4];
    if ((rc = recv_all(fd, hdr, sizeof(hdr), deadline)) < 0)
        return rc;
    uint32_t len = (uint32_t)hdr[0] << 24 | (uint32_t)hdr[1] << 16 | (uint32_t)hdr[2] << 8 | hdr[3];
    /* Bounded before allocating: a confused peer cannot make us allocate
     * 4 GiB. The server never sends more than its own limit. */
    if (len > AF_CLIENT_MAX_MESSAGE + 64)
        return -EPROTO;
    uint8_t *buf = af_client_xmalloc(len);
    if ((rc = recv_all(fd, buf, len, deadline)) < 0) {
        free(buf);
        return rc;
    }
    *reply = buf;
    *reply_len = len;
    return 0;
}

/* Builds the frame: length prefix + encoded Request. */
static uint8_t *build_frame(const char *service, const char *method, const uint8_t *req,
                            size_t req_len, size_t *frame_len)
{
    Af__RemoteApi__Request env = AF__REMOTE_API__REQUEST__INIT;
    env.service_name = (char *)service;
    env.method = (char *)method;
    env.request.data = (uint8_t *)req;
    env.request.len = req_len;
    if (tls_request_id[0])
        env.request_id = tls_request_id;
    size_t len = af__remote_api__request__get_packed_size(&env);
    if (len > AF_CLIENT_MAX_MESSAGE)
        return NULL;
    uint8_t *frame = af_client_xmalloc(4 + len);
    frame[0] = (uint8_t)(len >> 24);
    frame[1] = (uint8_t)(len >> 16);
    frame[2] = (uint8_t)(len >> 8);
    frame[3] = (uint8_t)len;
    af__remote_api__request__pack(&env, frame + 4);
    *frame_len = 4 + len;
    return frame;
}

/* Turns an encoded Response into the call's outcome. */
static int decode_response(const char *service, const char *method, const uint8_t *buf, size_t len,
                           uint8_t **resp, size_t *resp_len, struct af_client_error *err)
{
    Af__RemoteApi__Response *r = af__remote_api__response__unpack(NULL, len, buf);
    if (!r) {
        af_client_set_error(err, AF_CLIENT_RPC_ERROR, AF_CLIENT_RPC_PARSE_ERROR,
                            "%s.%s: the API server's reply is not a remote_api.Response", service,
                            method);
        return -1;
    }
    int rc = -1;
    if (r->rpc_error) {
        af_client_set_error(err, AF_CLIENT_RPC_ERROR, r->rpc_error->code, "%s.%s: %s", service,
                            method, r->rpc_error->detail ? r->rpc_error->detail : "RPC error");
    } else if (r->application_error) {
        af_client_set_error(err, AF_CLIENT_APP_ERROR, r->application_error->code, "%s.%s: %s",
                            service, method, r->application_error->detail);
    } else if (r->has_exception || r->has_java_exception) {
        af_client_set_error(err, AF_CLIENT_RPC_ERROR, AF_CLIENT_RPC_UNKNOWN,
                            "%s.%s: the API server returned an exception", service, method);
    } else {
        size_t n = r->has_response ? r->response.len : 0;
        *resp = af_client_xmalloc(n);
        if (n)
            memcpy(*resp, r->response.data, n);
        *resp_len = n;
        rc = 0;
    }
    af__remote_api__response__free_unpacked(r, NULL);
    return rc;
}

int af_client_call(const char *service, const char *method, const uint8_t *req, size_t req_len,
                   uint8_t **resp, size_t *resp_len, struct af_client_error *err, int deadline_ms)
{
    *resp = NULL;
    *resp_len = 0;
    clear_error(err);
    pthread_once(&atfork_once, register_atfork);
    if (!service || !method || (!req && req_len)) {
        af_client_set_error(err, AF_CLIENT_RPC_ERROR, AF_CLIENT_RPC_BAD_REQUEST,
                            "af_client_call: service, method and request are required");
        return -1;
    }
    int64_t deadline = now_ms() + (deadline_ms > 0 ? deadline_ms : DEFAULT_DEADLINE_MS);

    size_t frame_len;
    uint8_t *frame = build_frame(service, method, req, req_len, &frame_len);
    if (!frame) {
        af_client_set_error(err, AF_CLIENT_RPC_ERROR, AF_CLIENT_RPC_REQUEST_TOO_LARGE,
                            "%s.%s: request of %zu bytes exceeds the %u byte limit", service,
                            method, req_len, AF_CLIENT_MAX_MESSAGE);
        return -1;
    }

    uint8_t *reply = NULL;
    size_t reply_len = 0;
    int rc = -ENOTCONN;
    int fd = pool_take();
    bool reused = fd >= 0;
    for (int attempt = 0; attempt < 2; attempt++) {
        if (fd < 0 && (fd = open_conn(err)) < 0) {
            free(frame);
            return -1;
        }
        bool sent;
        rc = exchange(fd, frame, frame_len, deadline, &reply, &reply_len, &sent);
        if (rc == 0)
            break;
        close(fd);
        fd = -1;
        /* Retry only what certainly never reached the server: a pooled
         * connection it had closed, found dead before our frame was out.
         * Anything later may have run, and calls are not idempotent. */
        if (!(reused && !sent && (rc == -EPIPE || rc == -ECONNRESET)))
            break;
        reused = false;
    }
    free(frame);

    if (rc == -ETIMEDOUT) {
        af_client_set_error(err, AF_CLIENT_RPC_ERROR, AF_CLIENT_RPC_DEADLINE_EXCEEDED,
                            "%s.%s: no reply from the API server within %d ms", service, method,
                            deadline_ms > 0 ? deadline_ms : DEFAULT_DEADLINE_MS);
        return -1;
    }
    if (rc < 0) {
        af_client_set_error(err, AF_CLIENT_TRANSPORT_ERROR, -rc,
                            "%s.%s: connection to the API server failed: %s", service, method,
                            strerror(-rc));
        return -1;
    }
    pool_give(fd);
    rc = decode_response(service, method, reply, reply_len, resp, resp_len, err);
    free(reply);
    return rc;
}
