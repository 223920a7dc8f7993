/*
 * fuzz_api — the API server's input path under libFuzzer: bytes from an
 * instance or an HTTP client → framing (4-byte length) or http-parser in
 * apiserver/listener.c → envelope decoding (apiserver/envelope.c) → dispatch
 * in apiserver/backend.c → the real services (apiserver/services/) → the
 * encoded reply written back.
 *
 * The driver includes listener.c and backend.c to reach their static
 * functions (as the unit tests do) and runs both halves on one thread: it
 * builds a struct af_api_listener around its own event_base and the real
 * job queues, hands one end of a socketpair to accept_conn(), and after
 * every loop pass runs whatever reached the inbox with run_call() /
 * run_clear() against the real service table, then lets on_replies() write
 * the answers. Only the thread hop is left out.
 *
 * Input: byte 0 bit 0 chooses the transport (0 framed, 1 HTTP), bit 1
 * makes the client write in small pieces; the rest is what the client sends.
 *
 * Invariants: no memory error, leak or undefined behaviour; on the framed
 * transport the output is a sequence of complete frames, each a decodable
 * Response with exactly one of response, application_error and rpc_error
 * (docs/api.md); on HTTP, each answer starts with "HTTP/1.1 " and every 200
 * application/octet-stream body is such a Response; once the client is
 * gone, its connection is freed.
 */
#include "apiserver/backend.c"
#include "apiserver/listener.c"

#include <signal.h>
#include <stdio.h>

static struct af_api_listener *lis;
static struct af_backend be;
static struct af_api_jobq inbox, outbox;
static struct af_api_options opts;
static unsigned progress;
static unsigned setup;

static void die(const char *what)
{
    fprintf(stderr, "fuzz_api: invariant violated: %s\n", what);
    abort();
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    signal(SIGPIPE, SIG_IGN);
    af_log_set_level(getenv("FUZZ_VERBOSE") ? AF_LOG_DEBUG : AF_LOG_CRITICAL);
    if (af_api_jobq_init(&inbox, true) != 0 || af_api_jobq_init(&outbox, true) != 0)
        die("eventfd");
    opts = (struct af_api_options){.host = "localhost",
                                   .app_id = "fuzz",
                                   .module = "default",
                                   .version = "1",
                                   .module_instances = 1,
                                   .server_host = "localhost:8080",
                                   .storage_path = "/nonexistent",
                                   .memcache_max_bytes = 1 << 20,
                                   .default_deadline_ms = 60000};
    /* The backend as af_backend_start() builds it, minus the thread. */
    be.opts = &opts;
    be.services = af_services;
    be.n_services = af_n_services;
    be.inbox = &inbox;
    be.outbox = &outbox;
    be.states = calloc(af_n_services, sizeof(void *));
    for (size_t i = 0; i < af_n_services; i++)
        if (af_services[i] && af_services[i]->create)
            be.states[i] = af_services[i]->create(&opts);

    /* The listener as af_api_listener_start() builds it, minus the
     * listening sockets and the thread. */
    lis = calloc(1, sizeof(*lis));
    lis->inbox = &inbox;
    lis->outbox = &outbox;
    lis->default_deadline_ms = 60000;
    lis->info_json = "{\"server\":\"fuzz\"}";
    lis->stop_efd = -1;
    lis->base = event_base_new();
    lis->reply_ev = event_new(lis->base, outbox.efd, EV_READ | EV_PERSIST, on_replies, lis);
    event_add(lis->reply_ev, NULL);
    return 0;
}

/* The backend's loop body, run inline: every queued job, in order. */
static void run_backend(void)
{
    bool closed;
    struct af_api_job *list = af_api_jobq_take_all(&inbox, &closed);
    while (list) {
        struct af_api_job *job = list;
        list = job->next;
        if (job->kind == AF_API_JOB_CALL)
            run_call(&be, job);
        else
            run_clear(&be, job);
        af_api_jobq_push(&outbox, job);
        progress++;
    }
}

static struct evbuffer *client_in;

static void client_read(int fd)
{
    for (;;) {
        char buf[16384];
        ssize_t n = recv(fd, buf, sizeof(buf), MSG_DONTWAIT);
        if (n <= 0)
            return;
        evbuffer_add(client_in, buf, (size_t)n);
        progress++;
    }
}

static void pump(int fd)
{
    int quiet = 0;
    for (int i = 0; i < 4000 && quiet < 6; i++) {
        unsigned before = progress;
        event_base_loop(lis->base, EVLOOP_NONBLOCK);
        run_backend();
        if (fd >= 0)
            client_read(fd);
        quiet = progress == before ? quiet + 1 : 0;
    }
}

static void client_send(int fd, const uint8_t *p, size_t len)
{
    size_t piece = setup & 2 ? 1 : len;
    while (len > 0) {
        size_t want = len < piece ? len : piece;
        if (setup & 2)
            piece = piece * 2 + 1 > 64 ? 1 : piece * 2 + 1;
        ssize_t n = send(fd, p, want, MSG_DONTWAIT | MSG_NOSIGNAL);
        if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK)
            return;
        if (n > 0) {
            p += n;
            len -= (size_t)n;
            progress++;
        }
        if ((setup & 2) || n <= 0)
            pump(fd);
    }
}

static void check_response(const uint8_t *p, size_t len)
{
    Af__RemoteApi__Response *r = af__remote_api__response__unpack(NULL, len, p);
    if (!r)
        die("a reply is not a decodable Response");
    int set = r->has_response + (r->application_error != NULL) + (r->rpc_error != NULL);
    if (set != 1)
        die("a Response does not carry exactly one of response, application_error, rpc_error");
    af__remote_api__response__free_unpacked(r, NULL);
}

static void check_framed(const uint8_t *p, size_t len)
{
    while (len >= 4) {
        uint32_t n = (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
        if (len - 4 < n)
            return; /* cut short by the close: only the last may be */
        check_response(p + 4, n);
        p += 4 + n;
        len -= 4 + n;
    }
    if (len)
        die("trailing bytes that are not a frame");
}

/* Only what this server writes: status line, Content-Type, Content-Length,
 * maybe Connection and Allow, then the body; interim 100 Continue. */
static void check_http(const uint8_t *p, size_t len)
{
    while (len > 0) {
        if (len < 9 || memcmp(p, "HTTP/1.1 ", 9) != 0)
            die("an HTTP answer does not start with \"HTTP/1.1 \"");
        const uint8_t *end = memmem(p, len, "\r\n\r\n", 4);
        if (!end)
            return; /* cut short */
        size_t head = (size_t)(end - p) + 4;
        int status = atoi((const char *)p + 9);
        if (status == 100) {
            p += head;
            len -= head;
            continue;
        }
        const uint8_t *cl = memmem(p, head, "\r\nContent-Length: ", 18);
        if (!cl)
            die("an HTTP answer without Content-Length");
        size_t body = strtoul((const char *)cl + 18, NULL, 10);
        if (len - head < body)
            return;
        if (status == 200 && memmem(p, head, "application/octet-stream", 24))
            check_response(p + head, body);
        p += head + body;
        len -= head + body;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    setup = data[0];
    data++;
    size--;
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) != 0)
        die("socketpair");
    client_in = evbuffer_new();
    accept_conn(lis, sv[0], setup & 1 ? CONN_HTTP : CONN_FRAMED);
    client_send(sv[1], data, size);
    pump(sv[1]);
    shutdown(sv[1], SHUT_WR);
    pump(sv[1]);
    close(sv[1]);
    pump(-1);
    if (lis->conns)
        die("a connection outlived its client");

    size_t len = evbuffer_get_length(client_in);
    const uint8_t *out = evbuffer_pullup(client_in, -1);
    if (setup & 1)
        check_http(out, len);
    else
        check_framed(out, len);
    evbuffer_free(client_in);

    /* Service state back to empty so inputs stay independent. */
    for (size_t i = 0; i < af_n_services; i++)
        if (af_services[i] && af_services[i]->clear)
            af_services[i]->clear(be.states[i]);
    return 0;
}
