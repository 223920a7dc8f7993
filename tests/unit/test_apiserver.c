/*
 * Unit tests of the API server core: the real listener thread, hand-off
 * queue and backend thread, driven over real sockets (framed Unix socket and
 * HTTP on loopback), with a test service of our own plugged in through
 * af_api_start_services(); and the C client library against the same server
 * and against the real memcache service.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "apiserver/apiserver-internal.h"
#include "apiserver/client/appfront.h"
#include "apiserver/envelope.h"
#include "apiserver/service.h"
#include "remote_api.pb-c.h"

/* ---- the test service --------------------------------------------------- */

static atomic_int runs_count;  /* Count calls actually run */
static atomic_int runs_sleep;  /* Sleep calls that finished */
static atomic_int clears;      /* clear() calls */
static atomic_int live_states; /* create() minus destroy() */

static void *t_create(const struct af_api_options *opts)
{
    atomic_fetch_add(&live_states, 1);
    return calloc(1, sizeof(int));
}

static void t_clear(void *state)
{
    *(int *)state = 0;
    atomic_fetch_add(&clears, 1);
}

static void t_destroy(void *state)
{
    atomic_fetch_sub(&live_states, 1);
    free(state);
}

/* Answers "REQUEST_ID|REQUEST". */
static void m_echo(void *state, const struct af_call *call, struct af_result *res)
{
    size_t idlen = strlen(call->request_id);
    uint8_t *out = malloc(idlen + 1 + call->request_len + 1);
    memcpy(out, call->request_id, idlen);
    out[idlen] = '|';
    if (call->request_len)
        memcpy(out + idlen + 1, call->request, call->request_len);
    af_result_ok(res, out, idlen + 1 + call->request_len);
}

/* Counts in the service state and answers the new count in decimal. */
static void m_count(void *state, const struct af_call *call, struct af_result *res)
{
    int n = ++*(int *)state;
    atomic_fetch_add(&runs_count, 1);
    char *out;
    int len = asprintf(&out, "%d", n);
    af_result_ok(res, (uint8_t *)out, (size_t)len);
}

/* Sleeps the number of milliseconds given in decimal: a slow call to queue
 * others behind. */
static void m_sleep(void *state, const struct af_call *call, struct af_result *res)
{
    char buf[16] = {0};
    memcpy(buf, call->request, call->request_len < 15 ? call->request_len : 15);
    usleep((useconds_t)atoi(buf) * 1000);
    atomic_fetch_add(&runs_sleep, 1);
    af_result_ok(res, NULL, 0);
}

static void m_fail(void *state, const struct af_call *call, struct af_result *res)
{
    af_result_app_error(res, 7, "failed on purpose");
}

static void m_big(void *state, const struct af_call *call, struct af_result *res)
{
    size_t n = AF_API_MAX_MESSAGE + 1;
    af_result_ok(res, calloc(1, n), n);
}

static const struct af_method t_methods[] = {
    {"Echo", m_echo}, {"Count", m_count}, {"Sleep", m_sleep},
    {"Fail", m_fail}, {"Big", m_big},     {NULL, NULL},
};

static const struct af_service t_service = {
    .name = "test",
    .methods = t_methods,
    .create = t_create,
    .clear = t_clear,
    .destroy = t_destroy,
};

/* A NULL entry, as the registry has for a service not built in. */
static const struct af_service *const t_services[] = {NULL, &t_service};

/* ---- fixture ------------------------------------------------------------- */

struct fx {
    struct af_api *api;
    char dir[64];
    char sock[96];
    int port;
};

/* The real memcache service, named strongly: the registry's references are
 * weak, and a weak reference does not pull a member out of an archive. */
extern const struct af_service af_service_memcache;
static const struct af_service *const mc_services[] = {&af_service_memcache};

static struct fx *fx_start(int default_deadline_ms, bool with_memcache)
{
    struct fx *f = calloc(1, sizeof(*f));
    snprintf(f->dir, sizeof(f->dir), "/tmp/af-apitest.XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    snprintf(f->sock, sizeof(f->sock), "%s/api.sock", f->dir);
    struct af_api_options o = {
        .host = "127.0.0.1",
        .port = 0,
        .socket_path = f->sock,
        .app_id = "unitapp",
        .module = "default",
        .version = "1",
        .storage_path = f->dir,
        .memcache_max_bytes = 1 << 20,
        .default_deadline_ms = default_deadline_ms,
    };
    char err[256] = "";
    int rc = with_memcache ? af_api_start_services(&o, mc_services, 1, &f->api, err, sizeof(err))
                           : af_api_start_services(&o, t_services, 2, &f->api, err, sizeof(err));
    if (rc != 0)
        fail_msg("af_api_start: %s", err);
    f->port = af_api_port(f->api);
    assert_true(f->port > 0);
    return f;
}

static void fx_stop(struct fx *f)
{
    af_api_stop(f->api);
    struct stat st;
    /* The socket is removed at stop. */
    assert_int_not_equal(stat(f->sock, &st), 0);
    rmdir(f->dir);
    free(f);
}

static int setup(void **state)
{
    atomic_store(&runs_count, 0);
    atomic_store(&runs_sleep, 0);
    atomic_store(&clears, 0);
    *state = fx_start(0, false);
    return 0;
}

static int teardown(void **state)
{
    fx_stop(*state);
    /* Every create() was matched by a destroy(). */
    assert_int_equal(atomic_load(&live_states), 0);
    return 0;
}

/* ---- socket helpers ----------------------------------------------------- */

static void set_timeout(int fd, int ms)
{
    struct timeval tv = {.tv_sec = ms / 1000, .tv_usec = (ms % 1000) * 1000};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
}

static int connect_unix(const struct fx *f)
{
    struct sockaddr_un sun = {.sun_family = AF_UNIX};
    snprintf(sun.sun_path, sizeof(sun.sun_path), "%s", f->sock);
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    assert_int_equal(connect(fd, (struct sockaddr *)&sun, sizeof(sun)), 0);
    set_timeout(fd, 5000);
    return fd;
}

static int connect_tcp(const struct fx *f)
{
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_port = htons((uint16_t)f->port)};
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_int_equal(connect(fd, (struct sockaddr *)&sin, sizeof(sin)), 0);
    set_timeout(fd, 5000);
    return fd;
}

static void write_all(int fd, const void *buf, size_t len)
{
    const uint8_t *p = buf;
    while (len > 0) {
        ssize_t n = send(fd, p, len, MSG_NOSIGNAL);
        assert_true(n > 0);
        p += n;
        len -= (size_t)n;
    }
}

/* Reads exactly len bytes; returns false on EOF or timeout. */
static bool read_all(int fd, void *buf, size_t len)
{
    uint8_t *p = buf;
    while (len > 0) {
        ssize_t n = recv(fd, p, len, 0);
        if (n <= 0)
            return false;
        p += n;
        len -= (size_t)n;
    }
    return true;
}

/* True when the server closed fd (EOF) within the socket timeout. */
static bool at_eof(int fd)
{
    char c;
    return recv(fd, &c, 1, 0) == 0;
}

/* An encoded Request (malloc'd). */
static uint8_t *make_request(const char *service, const char *method, const char *payload,
                             const char *request_id, size_t *len)
{
    Af__RemoteApi__Request r = AF__REMOTE_API__REQUEST__INIT;
    r.service_name = (char *)service;
    r.method = (char *)method;
    r.request.data = (uint8_t *)payload;
    r.request.len = payload ? strlen(payload) : 0;
    r.request_id = (char *)request_id;
    *len = af__remote_api__request__get_packed_size(&r);
    uint8_t *buf = malloc(*len + 1);
    af__remote_api__request__pack(&r, buf);
    return buf;
}

static void send_frame(int fd, const uint8_t *buf, size_t len)
{
    uint8_t hdr[4] = {(uint8_t)(len >> 24), (uint8_t)(len >> 16), (uint8_t)(len >> 8),
                      (uint8_t)len};
    write_all(fd, hdr, 4);
    if (len)
        write_all(fd, buf, len);
}

/* Reads one reply frame and decodes it; NULL on EOF. */
static Af__RemoteApi__Response *recv_frame(int fd)
{
    uint8_t hdr[4];
    if (!read_all(fd, hdr, 4))
        return NULL;
    uint32_t len = (uint32_t)hdr[0] << 24 | (uint32_t)hdr[1] << 16 | (uint32_t)hdr[2] << 8 | hdr[3];
    assert_true(len < (1u << 20));
    uint8_t *buf = malloc(len + 1);
    assert_true(read_all(fd, buf, len));
    Af__RemoteApi__Response *r = af__remote_api__response__unpack(NULL, len, buf);
    free(buf);
    assert_non_null(r);
    return r;
}

static Af__RemoteApi__Response *framed_call(int fd, const char *service, const char *method,
                                            const char *payload, const char *request_id)
{
    size_t len;
    uint8_t *req = make_request(service, method, payload, request_id, &len);
    send_frame(fd, req, len);
    free(req);
    return recv_frame(fd);
}

static void assert_ok_response(const Af__RemoteApi__Response *r, const char *want)
{
    assert_non_null(r);
    assert_null(r->rpc_error);
    assert_null(r->application_error);
    assert_true(r->has_response);
    assert_int_equal(r->response.len, strlen(want));
    assert_memory_equal(r->response.data, want, strlen(want));
}

static void assert_rpc_error(const Af__RemoteApi__Response *r, int code)
{
    assert_non_null(r);
    if (!r->rpc_error)
        fail_msg("want rpc_error %s, got none", af_rpc_error_name(code));
    if (r->rpc_error->code != code)
        fail_msg("want rpc_error %s, got %s (%s)", af_rpc_error_name(code),
                 af_rpc_error_name(r->rpc_error->code),
                 r->rpc_error->detail ? r->rpc_error->detail : "");
    assert_false(r->has_response);
}

/* A parsed HTTP response. */
struct http_resp {
    int status;
    char headers[2048];
    uint8_t *body;
    size_t body_len;
};

/* Reads one HTTP response from fd. Returns false on EOF before a status line. */
static bool http_read(int fd, struct http_resp *hr)
{
    memset(hr, 0, sizeof(*hr));
    size_t n = 0;
    /* Byte by byte up to the blank line: simple, and never reads into the
     * next response. */
    while (n < sizeof(hr->headers) - 1) {
        if (!read_all(fd, hr->headers + n, 1))
            return false;
        n++;
        if (n >= 4 && memcmp(hr->headers + n - 4, "\r\n\r\n", 4) == 0)
            break;
    }
    hr->headers[n] = '\0';
    assert_int_equal(sscanf(hr->headers, "HTTP/1.1 %d", &hr->status), 1);
    const char *cl = strcasestr(hr->headers, "\r\nContent-Length:");
    if (hr->status == 100)
        return true;
    assert_non_null(cl);
    hr->body_len = strtoul(cl + 17, NULL, 10);
    hr->body = malloc(hr->body_len + 1);
    assert_true(read_all(fd, hr->body, hr->body_len));
    hr->body[hr->body_len] = '\0';
    return true;
}

static void http_send(int fd, const char *method, const char *path, const char *extra,
                      const uint8_t *body, size_t len)
{
    char head[512];
    int n = snprintf(head, sizeof(head),
                     "%s %s HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/octet-stream"
                     "\r\nContent-Length: %zu\r\n%s\r\n",
                     method, path, len, extra ? extra : "");
    write_all(fd, head, (size_t)n);
    if (len)
        write_all(fd, body, len);
}

static Af__RemoteApi__Response *http_call(int fd, const char *service, const char *method,
                                          const char *payload, const char *extra)
{
    size_t len;
    uint8_t *req = make_request(service, method, payload, NULL, &len);
    http_send(fd, "POST", "/rpc_http", extra, req, len);
    free(req);
    struct http_resp hr;
    assert_true(http_read(fd, &hr));
    assert_int_equal(hr.status, 200);
    assert_non_null(strstr(hr.headers, "Content-Type: application/octet-stream"));
    Af__RemoteApi__Response *r = af__remote_api__response__unpack(NULL, hr.body_len, hr.body);
    free(hr.body);
    assert_non_null(r);
    return r;
}

static void sleep_ms(int ms)
{
    usleep((useconds_t)ms * 1000);
}

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

#define free_resp(r) af__remote_api__response__free_unpacked((r), NULL)

/* ---- framed transport ---------------------------------------------------- */

static void test_framed_roundtrip(void **state)
{
    struct fx *f = *state;
    int fd = connect_unix(f);
    Af__RemoteApi__Response *r = framed_call(fd, "test", "Echo", "hello", "ticket-1");
    assert_ok_response(r, "ticket-1|hello");
    free_resp(r);
    /* request_id absent: the service sees "". Same connection, second call. */
    r = framed_call(fd, "test", "Echo", "again", NULL);
    assert_ok_response(r, "|again");
    free_resp(r);
    /* State persists across calls and connections: one backend. */
    r = framed_call(fd, "test", "Count", "", NULL);
    assert_ok_response(r, "1");
    free_resp(r);
    close(fd);
    fd = connect_unix(f);
    r = framed_call(fd, "test", "Count", "", NULL);
    assert_ok_response(r, "2");
    free_resp(r);
    close(fd);
}

static void test_socket_mode(void **state)
{
    struct fx *f = *state;
    struct stat st;
    assert_int_equal(stat(f->sock, &st), 0);
    assert_true(S_ISSOCK(st.st_mode));
    assert_int_equal(st.st_mode & 0777, 0600);
}

static void test_framed_errors(void **state)
{
    struct fx *f = *state;
    int fd = connect_unix(f);

    /* Garbage: PARSE_ERROR, and the connection stays usable. */
    const uint8_t garbage[] = {0xff, 0xff, 0xff, 0x01, 0x02, 0x03};
    send_frame(fd, garbage, sizeof(garbage));
    Af__RemoteApi__Response *r = recv_frame(fd);
    assert_rpc_error(r, AF_RPC_PARSE_ERROR);
    free_resp(r);

    /* An empty frame lacks the required fields. */
    send_frame(fd, NULL, 0);
    r = recv_frame(fd);
    assert_rpc_error(r, AF_RPC_PARSE_ERROR);
    free_resp(r);

    r = framed_call(fd, "nosuchservice", "Get", "", NULL);
    assert_rpc_error(r, AF_RPC_CALL_NOT_FOUND);
    assert_non_null(strstr(r->rpc_error->detail, "nosuchservice"));
    free_resp(r);

    r = framed_call(fd, "test", "NoSuchMethod", "", NULL);
    assert_rpc_error(r, AF_RPC_CALL_NOT_FOUND);
    free_resp(r);

    /* A service's own failure is an application_error with its code. */
    r = framed_call(fd, "test", "Fail", "", NULL);
    assert_non_null(r->application_error);
    assert_int_equal(r->application_error->code, 7);
    assert_string_equal(r->application_error->detail, "failed on purpose");
    assert_null(r->rpc_error);
    free_resp(r);

    r = framed_call(fd, "test", "Big", "", NULL);
    assert_rpc_error(r, AF_RPC_RESPONSE_TOO_LARGE);
    free_resp(r);

    r = framed_call(fd, "test", "Echo", "still alive", NULL);
    assert_ok_response(r, "|still alive");
    free_resp(r);
    close(fd);
}

static void test_framed_too_large(void **state)
{
    struct fx *f = *state;
    int fd = connect_unix(f);
    /* Only the header: the server must answer without waiting for 32 MiB. */
    uint32_t len = AF_API_MAX_MESSAGE + 1;
    uint8_t hdr[4] = {(uint8_t)(len >> 24), (uint8_t)(len >> 16), (uint8_t)(len >> 8),
                      (uint8_t)len};
    write_all(fd, hdr, 4);
    Af__RemoteApi__Response *r = recv_frame(fd);
    assert_rpc_error(r, AF_RPC_REQUEST_TOO_LARGE);
    free_resp(r);
    assert_true(at_eof(fd));
    close(fd);

    /* Exactly at the limit is read (and is garbage here). */
    fd = connect_unix(f);
    len = AF_API_MAX_MESSAGE;
    uint8_t *big = calloc(1, len);
    send_frame(fd, big, len);
    free(big);
    r = recv_frame(fd);
    assert_rpc_error(r, AF_RPC_PARSE_ERROR);
    free_resp(r);
    close(fd);
}

static void test_framed_split_writes(void **state)
{
    struct fx *f = *state;
    int fd = connect_unix(f);
    size_t len;
    uint8_t *req = make_request("test", "Echo", "slowly", "id", &len);
    uint8_t hdr[4] = {0, 0, (uint8_t)(len >> 8), (uint8_t)len};
    /* Byte by byte across the header and body boundaries. */
    for (int i = 0; i < 4; i++) {
        write_all(fd, hdr + i, 1);
        sleep_ms(2);
    }
    for (size_t i = 0; i < len; i++)
        write_all(fd, req + i, 1);
    free(req);
    Af__RemoteApi__Response *r = recv_frame(fd);
    assert_ok_response(r, "id|slowly");
    free_resp(r);

    /* Two frames in one write: both answered, in order. */
    size_t l1, l2;
    uint8_t *a = make_request("test", "Echo", "one", NULL, &l1);
    uint8_t *b = make_request("test", "Echo", "two", NULL, &l2);
    uint8_t both[256];
    size_t n = 0;
    both[n++] = 0, both[n++] = 0, both[n++] = 0, both[n++] = (uint8_t)l1;
    memcpy(both + n, a, l1), n += l1;
    both[n++] = 0, both[n++] = 0, both[n++] = 0, both[n++] = (uint8_t)l2;
    memcpy(both + n, b, l2), n += l2;
    write_all(fd, both, n);
    free(a);
    free(b);
    r = recv_frame(fd);
    assert_ok_response(r, "|one");
    free_resp(r);
    r = recv_frame(fd);
    assert_ok_response(r, "|two");
    free_resp(r);
    close(fd);
}

static void test_disconnect_mid_call(void **state)
{
    struct fx *f = *state;
    /* A client that goes away while its call runs, and one that goes away
     * while its call waits in the queue behind it. */
    int a = connect_unix(f);
    size_t len;
    uint8_t *req = make_request("test", "Sleep", "150", NULL, &len);
    send_frame(a, req, len);
    free(req);
    int b = connect_tcp(f);
    req = make_request("test", "Count", "", NULL, &len);
    http_send(b, "POST", "/rpc_http", NULL, req, len);
    free(req);
    sleep_ms(30);
    close(a);
    close(b);

    /* Half a frame, then gone. */
    int c = connect_unix(f);
    write_all(c, "\0\0\1", 3);
    close(c);

    /* The server carries on; the dropped calls still ran. */
    int d = connect_unix(f);
    Af__RemoteApi__Response *r = framed_call(d, "test", "Count", "", NULL);
    assert_ok_response(r, "2");
    free_resp(r);
    close(d);
    assert_int_equal(atomic_load(&runs_sleep), 1);
}

static void test_stop_with_call_in_flight(void **state)
{
    struct fx *f = fx_start(0, false);
    int fd = connect_unix(f);
    size_t len;
    uint8_t *req = make_request("test", "Sleep", "200", NULL, &len);
    send_frame(fd, req, len);
    free(req);
    int idle = connect_tcp(f);
    sleep_ms(30);
    int64_t t0 = mono_ms();
    fx_stop(f);
    /* Stop waits for the running call, not for more. */
    assert_true(mono_ms() - t0 < 2000);
    assert_true(at_eof(fd));
    assert_true(at_eof(idle));
    close(fd);
    close(idle);
}

/* ---- deadlines ------------------------------------------------------------ */

static void test_deadline_header(void **state)
{
    struct fx *f = *state;
    int busy = connect_unix(f);
    size_t len;
    uint8_t *req = make_request("test", "Sleep", "300", NULL, &len);
    send_frame(busy, req, len);
    free(req);
    sleep_ms(50); /* the Sleep is running */

    int h = connect_tcp(f);
    Af__RemoteApi__Response *r =
        http_call(h, "test", "Count", "", "X-Google-RPC-Service-Deadline: 0.05\r\n");
    assert_rpc_error(r, AF_RPC_DEADLINE_EXCEEDED);
    free_resp(r);
    assert_int_equal(atomic_load(&runs_count), 0); /* not run */

    r = recv_frame(busy);
    assert_ok_response(r, "");
    free_resp(r);

    /* A generous deadline runs; so does a header that does not parse. */
    r = http_call(h, "test", "Count", "", "X-Google-RPC-Service-Deadline: 59.99\r\n");
    assert_ok_response(r, "1");
    free_resp(r);
    r = http_call(h, "test", "Count", "", "X-Google-RPC-Service-Deadline: soon\r\n");
    assert_ok_response(r, "2");
    free_resp(r);
    /* Zero or negative: already past. */
    r = http_call(h, "test", "Count", "", "X-Google-RPC-Service-Deadline: 0\r\n");
    assert_rpc_error(r, AF_RPC_DEADLINE_EXCEEDED);
    free_resp(r);
    r = http_call(h, "test", "Count", "", "x-google-rpc-service-deadline: -1\r\n");
    assert_rpc_error(r, AF_RPC_DEADLINE_EXCEEDED);
    free_resp(r);
    assert_int_equal(atomic_load(&runs_count), 2);
    close(h);
    close(busy);
}

static void test_default_deadline(void **state)
{
    struct fx *f = fx_start(100, false);
    int busy = connect_unix(f);
    size_t len;
    uint8_t *req = make_request("test", "Sleep", "300", NULL, &len);
    send_frame(busy, req, len);
    free(req);
    sleep_ms(30);
    int fd = connect_unix(f);
    int before = atomic_load(&runs_count);
    Af__RemoteApi__Response *r = framed_call(fd, "test", "Count", "", NULL);
    assert_rpc_error(r, AF_RPC_DEADLINE_EXCEEDED);
    free_resp(r);
    assert_int_equal(atomic_load(&runs_count), before);
    r = recv_frame(busy);
    assert_ok_response(r, "");
    free_resp(r);
    /* Nothing queued now: runs. */
    r = framed_call(fd, "test", "Count", "", NULL);
    assert_ok_response(r, "1");
    free_resp(r);
    close(fd);
    close(busy);
    fx_stop(f);
}

/* ---- HTTP transport -------------------------------------------------------- */

static void test_http_roundtrip_keepalive(void **state)
{
    struct fx *f = *state;
    int fd = connect_tcp(f);
    for (int i = 1; i <= 3; i++) {
        Af__RemoteApi__Response *r = http_call(fd, "test", "Count", "", NULL);
        char want[8];
        snprintf(want, sizeof(want), "%d", i);
        assert_ok_response(r, want);
        free_resp(r);
    }
    /* Python's client posts to /. */
    size_t len;
    uint8_t *req = make_request("test", "Echo", "py", "rid", &len);
    http_send(fd, "POST", "/", NULL, req, len);
    free(req);
    struct http_resp hr;
    assert_true(http_read(fd, &hr));
    assert_int_equal(hr.status, 200);
    Af__RemoteApi__Response *r = af__remote_api__response__unpack(NULL, hr.body_len, hr.body);
    assert_ok_response(r, "rid|py");
    free_resp(r);
    free(hr.body);
    close(fd);
}

static void test_http_pipelined(void **state)
{
    struct fx *f = *state;
    int fd = connect_tcp(f);
    size_t l1, l2;
    uint8_t *a = make_request("test", "Echo", "first", NULL, &l1);
    uint8_t *b = make_request("test", "Echo", "second", NULL, &l2);
    char buf[1024];
    int n =
        snprintf(buf, sizeof(buf), "POST /rpc_http HTTP/1.1\r\nContent-Length: %zu\r\n\r\n", l1);
    memcpy(buf + n, a, l1);
    n += (int)l1;
    n += snprintf(buf + n, sizeof(buf) - (size_t)n,
                  "POST /rpc_http HTTP/1.1\r\nContent-Length: %zu\r\n\r\n", l2);
    memcpy(buf + n, b, l2);
    n += (int)l2;
    write_all(fd, buf, (size_t)n);
    free(a);
    free(b);
    const char *want[] = {"|first", "|second"};
    for (int i = 0; i < 2; i++) {
        struct http_resp hr;
        assert_true(http_read(fd, &hr));
        assert_int_equal(hr.status, 200);
        Af__RemoteApi__Response *r = af__remote_api__response__unpack(NULL, hr.body_len, hr.body);
        assert_ok_response(r, want[i]);
        free_resp(r);
        free(hr.body);
    }
    close(fd);
}

static void test_http_chunked_and_continue(void **state)
{
    struct fx *f = *state;
    int fd = connect_tcp(f);
    size_t len;
    uint8_t *req = make_request("test", "Echo", "chunky", NULL, &len);
    char head[256];
    int n = snprintf(head, sizeof(head),
                     "POST /rpc_http HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n%zx\r\n", len);
    write_all(fd, head, (size_t)n);
    write_all(fd, req, len);
    write_all(fd, "\r\n0\r\n\r\n", 7);
    struct http_resp hr;
    assert_true(http_read(fd, &hr));
    assert_int_equal(hr.status, 200);
    Af__RemoteApi__Response *r = af__remote_api__response__unpack(NULL, hr.body_len, hr.body);
    assert_ok_response(r, "|chunky");
    free_resp(r);
    free(hr.body);

    /* Expect: 100-continue (curl sends it for larger bodies). */
    n = snprintf(head, sizeof(head),
                 "POST /rpc_http HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: %zu\r\n\r\n",
                 len);
    write_all(fd, head, (size_t)n);
    assert_true(http_read(fd, &hr));
    assert_int_equal(hr.status, 100);
    write_all(fd, req, len);
    assert_true(http_read(fd, &hr));
    assert_int_equal(hr.status, 200);
    free(hr.body);
    free(req);
    close(fd);
}

static void test_http_errors(void **state)
{
    struct fx *f = *state;
    int fd = connect_tcp(f);

    /* Undecodable envelope: 200 with PARSE_ERROR, as the Go library expects
     * RPC failures inside the envelope. */
    http_send(fd, "POST", "/rpc_http", NULL, (const uint8_t *)"\xff\xff\xff", 3);
    struct http_resp hr;
    assert_true(http_read(fd, &hr));
    assert_int_equal(hr.status, 200);
    Af__RemoteApi__Response *r = af__remote_api__response__unpack(NULL, hr.body_len, hr.body);
    assert_rpc_error(r, AF_RPC_PARSE_ERROR);
    free_resp(r);
    free(hr.body);

    r = http_call(fd, "nosuch", "Get", "", NULL);
    assert_rpc_error(r, AF_RPC_CALL_NOT_FOUND);
    free_resp(r);

    http_send(fd, "GET", "/nope", NULL, NULL, 0);
    assert_true(http_read(fd, &hr));
    assert_int_equal(hr.status, 404);
    free(hr.body);
    http_send(fd, "PUT", "/", NULL, NULL, 0);
    assert_true(http_read(fd, &hr));
    assert_int_equal(hr.status, 405);
    free(hr.body);
    close(fd);

    /* Declared body over the limit: answered at once, then closed. */
    fd = connect_tcp(f);
    const char *huge = "POST /rpc_http HTTP/1.1\r\nContent-Length: 40000000\r\n\r\n";
    write_all(fd, huge, strlen(huge));
    assert_true(http_read(fd, &hr));
    assert_int_equal(hr.status, 200);
    assert_non_null(strstr(hr.headers, "Connection: close"));
    r = af__remote_api__response__unpack(NULL, hr.body_len, hr.body);
    assert_rpc_error(r, AF_RPC_REQUEST_TOO_LARGE);
    free_resp(r);
    free(hr.body);
    assert_true(at_eof(fd));
    close(fd);

    /* Not HTTP at all. */
    fd = connect_tcp(f);
    write_all(fd, "\x16\x03\x01garbage\r\n\r\n", 14);
    assert_true(http_read(fd, &hr));
    assert_int_equal(hr.status, 400);
    free(hr.body);
    assert_true(at_eof(fd));
    close(fd);

    /* Still serving. */
    fd = connect_tcp(f);
    r = http_call(fd, "test", "Echo", "ok", NULL);
    assert_ok_response(r, "|ok");
    free_resp(r);
    close(fd);
}

static void test_http_info_and_clear(void **state)
{
    struct fx *f = *state;
    int fd = connect_tcp(f);
    struct http_resp hr;
    http_send(fd, "GET", "/", NULL, NULL, 0);
    assert_true(http_read(fd, &hr));
    assert_int_equal(hr.status, 200);
    assert_non_null(strstr(hr.headers, "application/json"));
    assert_non_null(strstr((char *)hr.body, "\"app_id\": \"unitapp\""));
    assert_non_null(strstr((char *)hr.body, "\"test\""));
    free(hr.body);

    Af__RemoteApi__Response *r = http_call(fd, "test", "Count", "", NULL);
    assert_ok_response(r, "1");
    free_resp(r);

    http_send(fd, "POST", "/clear?stub=test", NULL, NULL, 0);
    assert_true(http_read(fd, &hr));
    assert_int_equal(hr.status, 200);
    free(hr.body);
    assert_int_equal(atomic_load(&clears), 1);
    r = http_call(fd, "test", "Count", "", NULL);
    assert_ok_response(r, "1"); /* back to empty */
    free_resp(r);

    http_send(fd, "POST", "/clear?x=1&stub=nosuch", NULL, NULL, 0);
    assert_true(http_read(fd, &hr));
    assert_int_equal(hr.status, 404);
    free(hr.body);

    http_send(fd, "POST", "/clear", NULL, NULL, 0);
    assert_true(http_read(fd, &hr));
    assert_int_equal(hr.status, 200);
    free(hr.body);
    assert_int_equal(atomic_load(&clears), 2);
    close(fd);
}

/* ---- hand-off under load --------------------------------------------------- */

/* A framed reply of any size (recv_frame caps at 1 MiB); NULL on EOF. */
static Af__RemoteApi__Response *recv_big_frame(int fd)
{
    uint8_t hdr[4];
    if (!read_all(fd, hdr, 4))
        return NULL;
    uint32_t len = (uint32_t)hdr[0] << 24 | (uint32_t)hdr[1] << 16 | (uint32_t)hdr[2] << 8 | hdr[3];
    uint8_t *buf = malloc(len + 1);
    assert_true(read_all(fd, buf, len));
    Af__RemoteApi__Response *r = af__remote_api__response__unpack(NULL, len, buf);
    free(buf);
    assert_non_null(r);
    return r;
}

struct load_worker {
    const struct fx *f;
    int id;
    bool http;
    int calls;
    int failures; /* checked by the main thread: cmocka asserts are not thread-safe */
};

/* Echo calls with payloads of its own, each answer checked. */
static void *load_echo(void *arg)
{
    struct load_worker *w = arg;
    int fd = w->http ? connect_tcp(w->f) : connect_unix(w->f);
    for (int i = 0; i < w->calls; i++) {
        char payload[32], want[34];
        snprintf(payload, sizeof(payload), "w%d-%d", w->id, i);
        snprintf(want, sizeof(want), "|%s", payload);
        size_t len;
        uint8_t *req = make_request("test", "Echo", payload, NULL, &len);
        Af__RemoteApi__Response *r = NULL;
        if (w->http) {
            http_send(fd, "POST", "/rpc_http", NULL, req, len);
            struct http_resp hr;
            if (http_read(fd, &hr) && hr.status == 200)
                r = af__remote_api__response__unpack(NULL, hr.body_len, hr.body);
            free(hr.body);
        } else {
            send_frame(fd, req, len);
            r = recv_frame(fd);
        }
        free(req);
        if (!r || !r->has_response || r->response.len != strlen(want) ||
            memcmp(r->response.data, want, strlen(want)) != 0)
            w->failures++;
        if (r)
            free_resp(r);
    }
    close(fd);
    return NULL;
}

/* Slow calls that keep the backend busy while the others queue behind. */
static void *load_sleep(void *arg)
{
    struct load_worker *w = arg;
    int fd = connect_unix(w->f);
    for (int i = 0; i < w->calls; i++) {
        Af__RemoteApi__Response *r = framed_call(fd, "test", "Sleep", "5", NULL);
        if (!r || !r->has_response)
            w->failures++;
        if (r)
            free_resp(r);
    }
    close(fd);
    return NULL;
}

/* Many clients on both transports at once, while another keeps the backend
 * busy: calls pile up on the inbox while the backend runs (no wake-up
 * written), replies pile up on the outbox while the listener is busy, and
 * the backend goes to sleep and is woken again between bursts. Every call
 * must be answered, with its own answer. */
static void test_handoff_many_clients_busy_backend(void **state)
{
    struct fx *f = *state;
    enum { FRAMED = 12, HTTP = 6, CALLS = 150 };
    pthread_t t[FRAMED + HTTP + 1];
    struct load_worker w[FRAMED + HTTP + 1];
    for (int i = 0; i < FRAMED + HTTP; i++) {
        w[i] = (struct load_worker){.f = f, .id = i, .http = i >= FRAMED, .calls = CALLS};
        pthread_create(&t[i], NULL, load_echo, &w[i]);
    }
    w[FRAMED + HTTP] = (struct load_worker){.f = f, .calls = 40};
    pthread_create(&t[FRAMED + HTTP], NULL, load_sleep, &w[FRAMED + HTTP]);
    for (int i = 0; i < FRAMED + HTTP + 1; i++) {
        pthread_join(t[i], NULL);
        assert_int_equal(w[i].failures, 0);
    }
    assert_int_equal(atomic_load(&runs_sleep), 40);
}

/* Pipelined frames, undecodable ones among them: those are answered while
 * the connection is still parsing, the others after a trip through the
 * backend; the answers come back in order either way. */
static void test_framed_pipelined_mixed(void **state)
{
    struct fx *f = *state;
    int fd = connect_unix(f);
    enum { N = 60 };
    for (int i = 0; i < N; i++) {
        if (i % 3 == 1) {
            send_frame(fd, (const uint8_t *)"\xff\xff\xff", 3);
            continue;
        }
        char payload[16];
        snprintf(payload, sizeof(payload), "p%d", i);
        size_t len;
        uint8_t *req = make_request("test", "Echo", payload, NULL, &len);
        send_frame(fd, req, len);
        free(req);
    }
    for (int i = 0; i < N; i++) {
        Af__RemoteApi__Response *r = recv_frame(fd);
        assert_non_null(r);
        if (i % 3 == 1) {
            assert_rpc_error(r, AF_RPC_PARSE_ERROR);
        } else {
            char want[16];
            snprintf(want, sizeof(want), "|p%d", i);
            assert_ok_response(r, want);
        }
        free_resp(r);
    }
    close(fd);
}

/* A reply larger than the socket buffer, to a client that reads it late:
 * the server's first write is partial and libevent finishes it; the next
 * pipelined call is answered after it, on both transports. */
static void test_large_reply_read_late(void **state)
{
    struct fx *f = *state;
    size_t big = 4u << 20;
    char *payload = malloc(big + 1);
    memset(payload, 'x', big);
    payload[big] = '\0';
    size_t blen, slen;
    uint8_t *breq = make_request("test", "Echo", payload, NULL, &blen);
    uint8_t *sreq = make_request("test", "Echo", "after", NULL, &slen);

    int fd = connect_unix(f);
    set_timeout(fd, 10000);
    send_frame(fd, breq, blen);
    send_frame(fd, sreq, slen);
    sleep_ms(200); /* the reply fills the socket buffer meanwhile */
    Af__RemoteApi__Response *r = recv_big_frame(fd);
    assert_true(r->has_response);
    assert_int_equal(r->response.len, big + 1);
    assert_int_equal(r->response.data[0], '|');
    assert_int_equal(r->response.data[big], 'x');
    free_resp(r);
    r = recv_frame(fd);
    assert_ok_response(r, "|after");
    free_resp(r);
    close(fd);

    fd = connect_tcp(f);
    set_timeout(fd, 10000);
    http_send(fd, "POST", "/rpc_http", NULL, breq, blen);
    http_send(fd, "POST", "/rpc_http", NULL, sreq, slen);
    sleep_ms(200);
    struct http_resp hr;
    assert_true(http_read(fd, &hr));
    assert_int_equal(hr.status, 200);
    r = af__remote_api__response__unpack(NULL, hr.body_len, hr.body);
    assert_non_null(r);
    assert_int_equal(r->response.len, big + 1);
    free_resp(r);
    free(hr.body);
    assert_true(http_read(fd, &hr));
    r = af__remote_api__response__unpack(NULL, hr.body_len, hr.body);
    assert_ok_response(r, "|after");
    free_resp(r);
    free(hr.body);
    close(fd);
    free(breq);
    free(sreq);
    free(payload);
}

/* ---- the C client library ------------------------------------------------- */

struct worker {
    int calls;
    int failures;
};

static void *client_worker(void *arg)
{
    struct worker *w = arg;
    for (int i = 0; i < w->calls; i++) {
        uint8_t *resp;
        size_t len;
        struct af_client_error err;
        if (af_client_call("test", "Count", NULL, 0, &resp, &len, &err, 5000) != 0)
            w->failures++;
        else
            free(resp);
    }
    return NULL;
}

static void test_client_threads(void **state)
{
    struct fx *f = *state;
    af_client_set_socket_path(f->sock);
    enum { THREADS = 8, CALLS = 50 };
    pthread_t t[THREADS];
    struct worker w[THREADS];
    for (int i = 0; i < THREADS; i++) {
        w[i] = (struct worker){.calls = CALLS};
        pthread_create(&t[i], NULL, client_worker, &w[i]);
    }
    for (int i = 0; i < THREADS; i++) {
        pthread_join(t[i], NULL);
        assert_int_equal(w[i].failures, 0);
    }
    assert_int_equal(atomic_load(&runs_count), THREADS * CALLS);

    /* The request id of the calling thread travels with the call. */
    af_client_set_request_id("req-42");
    uint8_t *resp;
    size_t len;
    struct af_client_error err;
    assert_int_equal(af_client_call("test", "Echo", (const uint8_t *)"x", 1, &resp, &len, &err, 0),
                     0);
    assert_int_equal(len, 8);
    assert_memory_equal(resp, "req-42|x", 8);
    free(resp);
    af_client_set_request_id(NULL);
    af_client_close_all();
    af_client_set_socket_path(NULL);
}

static void test_client_errors(void **state)
{
    struct fx *f = *state;
    af_client_set_socket_path(f->sock);
    uint8_t *resp;
    size_t len;
    struct af_client_error err;

    assert_int_equal(af_client_call("test", "Fail", NULL, 0, &resp, &len, &err, 0), -1);
    assert_null(resp);
    assert_int_equal(err.status, AF_CLIENT_APP_ERROR);
    assert_int_equal(err.code, 7);
    assert_non_null(strstr(err.detail, "failed on purpose"));

    assert_int_equal(af_client_call("nosuch", "X", NULL, 0, &resp, &len, &err, 0), -1);
    assert_int_equal(err.status, AF_CLIENT_RPC_ERROR);
    assert_int_equal(err.code, AF_CLIENT_RPC_CALL_NOT_FOUND);

    /* The client's own deadline: gives up, closes that connection. */
    int64_t t0 = mono_ms();
    assert_int_equal(
        af_client_call("test", "Sleep", (const uint8_t *)"400", 3, &resp, &len, &err, 100), -1);
    int64_t took = mono_ms() - t0;
    assert_true(took >= 90 && took < 350);
    assert_int_equal(err.status, AF_CLIENT_RPC_ERROR);
    assert_int_equal(err.code, AF_CLIENT_RPC_DEADLINE_EXCEEDED);

    /* The late reply is not mistaken for the next call's. */
    assert_int_equal(af_client_call("test", "Echo", (const uint8_t *)"n", 1, &resp, &len, &err, 0),
                     0);
    assert_int_equal(len, 2);
    assert_memory_equal(resp, "|n", 2);
    free(resp);
    af_client_close_all();

    /* No server there. */
    af_client_set_socket_path("/nonexistent/api.sock");
    assert_int_equal(af_client_call("test", "Echo", NULL, 0, &resp, &len, &err, 0), -1);
    assert_int_equal(err.status, AF_CLIENT_TRANSPORT_ERROR);
    assert_int_equal(err.code, ENOENT);
    af_client_set_socket_path(NULL);
    unsetenv("APPFRONT_API_SOCKET");
    assert_int_equal(af_client_call("test", "Echo", NULL, 0, &resp, &len, &err, 0), -1);
    assert_non_null(strstr(err.detail, "APPFRONT_API_SOCKET"));
}

static void test_client_reconnects_after_restart(void **state)
{
    struct fx *f = fx_start(0, false);
    setenv("APPFRONT_API_SOCKET", f->sock, 1);
    uint8_t *resp;
    size_t len;
    struct af_client_error err;
    assert_int_equal(af_client_call("test", "Count", NULL, 0, &resp, &len, &err, 0), 0);
    free(resp);
    /* Restart the server at the same path: the pooled connection is dead. */
    char sock[96];
    snprintf(sock, sizeof(sock), "%s", f->sock);
    af_api_stop(f->api);
    struct af_api_options o = {.host = "127.0.0.1", .socket_path = sock, .app_id = "unitapp"};
    char errbuf[256];
    assert_int_equal(af_api_start_services(&o, t_services, 2, &f->api, errbuf, sizeof(errbuf)), 0);
    assert_int_equal(af_client_call("test", "Count", NULL, 0, &resp, &len, &err, 0), 0);
    assert_int_equal(len, 1);
    assert_memory_equal(resp, "1", 1); /* a fresh backend */
    free(resp);
    af_client_close_all();
    unsetenv("APPFRONT_API_SOCKET");
    fx_stop(f);
}

static void test_client_memcache(void **state)
{
    struct fx *f = fx_start(0, true);
    af_client_set_socket_path(f->sock);
    struct af_client_error err;
    uint8_t *v;
    size_t vlen;
    uint32_t flags = 0;

    assert_int_equal(af_memcache_get(NULL, "k", 1, &v, &vlen, &flags, &err), 0);
    assert_int_equal(af_memcache_set(NULL, "k", 1, "value", 5, 42, 0, &err), 0);
    assert_int_equal(af_memcache_get(NULL, "k", 1, &v, &vlen, &flags, &err), 1);
    assert_int_equal(vlen, 5);
    assert_memory_equal(v, "value", 5);
    assert_int_equal(flags, 42);
    free(v);
    /* Namespaces are separate. */
    assert_int_equal(af_memcache_get("ns", "k", 1, &v, &vlen, NULL, &err), 0);
    assert_int_equal(af_memcache_set("ns", "k", 1, "", 0, 0, 0, &err), 0);
    assert_int_equal(af_memcache_get("ns", "k", 1, &v, &vlen, NULL, &err), 1);
    assert_int_equal(vlen, 0);
    free(v);

    assert_int_equal(af_memcache_delete(NULL, "k", 1, &err), 1);
    assert_int_equal(af_memcache_delete(NULL, "k", 1, &err), 0);
    assert_int_equal(af_memcache_get(NULL, "k", 1, &v, &vlen, NULL, &err), 0);

    uint64_t nv = 0, init = 10;
    assert_int_equal(af_memcache_increment(NULL, "n", 1, 1, NULL, &nv, &err), 0);
    assert_int_equal(af_memcache_increment(NULL, "n", 1, 5, &init, &nv, &err), 1);
    assert_int_equal(nv, 15);
    assert_int_equal(af_memcache_increment(NULL, "n", 1, -20, NULL, &nv, &err), 1);
    assert_int_equal(nv, 0);
    assert_int_equal(af_memcache_set(NULL, "s", 1, "abc", 3, 0, 0, &err), 0);
    assert_int_equal(af_memcache_increment(NULL, "s", 1, 1, NULL, &nv, &err), -1);
    assert_int_equal(err.status, AF_CLIENT_APP_ERROR);

    af_client_close_all();
    af_client_set_socket_path(NULL);
    fx_stop(f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_framed_roundtrip, setup, teardown),
        cmocka_unit_test_setup_teardown(test_socket_mode, setup, teardown),
        cmocka_unit_test_setup_teardown(test_framed_errors, setup, teardown),
        cmocka_unit_test_setup_teardown(test_framed_too_large, setup, teardown),
        cmocka_unit_test_setup_teardown(test_framed_split_writes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_disconnect_mid_call, setup, teardown),
        cmocka_unit_test(test_stop_with_call_in_flight),
        cmocka_unit_test_setup_teardown(test_deadline_header, setup, teardown),
        cmocka_unit_test(test_default_deadline),
        cmocka_unit_test_setup_teardown(test_http_roundtrip_keepalive, setup, teardown),
        cmocka_unit_test_setup_teardown(test_http_pipelined, setup, teardown),
        cmocka_unit_test_setup_teardown(test_http_chunked_and_continue, setup, teardown),
        cmocka_unit_test_setup_teardown(test_http_errors, setup, teardown),
        cmocka_unit_test_setup_teardown(test_http_info_and_clear, setup, teardown),
        cmocka_unit_test_setup_teardown(test_handoff_many_clients_busy_backend, setup, teardown),
        cmocka_unit_test_setup_teardown(test_framed_pipelined_mixed, setup, teardown),
        cmocka_unit_test_setup_teardown(test_large_reply_read_late, setup, teardown),
        cmocka_unit_test_setup_teardown(test_client_threads, setup, teardown),
        cmocka_unit_test_setup_teardown(test_client_errors, setup, teardown),
        cmocka_unit_test(test_client_reconnects_after_restart),
        cmocka_unit_test(test_client_memcache),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
