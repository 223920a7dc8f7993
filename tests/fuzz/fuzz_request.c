/*
 * fuzz_request — the front end's request path under libFuzzer: bytes from a
 * client → http-parser in proxy/conn.c → head validation → routing in the
 * module → the request rewritten toward an instance → the instance's answer
 * parsed in proxy/upstream.c and relayed back.
 *
 * Nothing of the path is replaced. The driver builds a minimal struct
 * af_server around a real module (proxy/module.c), hands one end of a
 * socketpair to af_conn_accept() exactly as the listener does, writes the
 * input into the other end and runs the event loop for a bounded number of
 * passes. The one stand-in is the instance process: a listener on a Unix
 * socket inside this process, registered as a READY instance, which parses
 * what appfront forwards with http-parser and answers each request.
 *
 * Input: byte 0 selects the setup (below); the rest is what the client
 * sends, optionally followed by INSTANCE_MARK and the bytes the instance
 * answers every request with (default: a small 200).
 *
 * Invariants checked (a violation aborts, which libFuzzer reports):
 *  - ASan/UBSan: no memory error, no undefined behaviour, no leak;
 *  - what the client receives is a sequence of well-formed HTTP/1.1
 *    responses, each starting with "HTTP/1.1 ", only the last one possibly
 *    cut short, and nothing after a response that said Connection: close;
 *  - what appfront forwards parses as HTTP/1.1 requests (a request the
 *    instance reads differently from appfront is request smuggling), each
 *    with one Host and, on the main port, exactly one request id of
 *    appfront's own (client X-AppEngine-* fields are removed);
 *  - once the client is gone, every connection, exchange, slot and queue
 *    place is given back.
 *
 * FUZZ_KNOWN_BUGS=1 skips the checks that bugs already reported and kept as
 * reproducers in tests/fuzz/regress/request/ violate (see
 * docs/reliability.md), so that a run can look past them for new ones. It
 * is for exploring only: CI runs without it.
 */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <http_parser.h>

#include "common/log.h"
#include "proxy/exchange.h"
#include "proxy/instance.h"
#include "proxy/module.h"
#include "proxy/server.h"
#include "proxy/stream.h"
#include "proxy/upstream.h"

/* Setup byte (input[0]). */
#define SETUP_MODE_MASK 0x03
#define MODE_INSTANCE 0    /* a READY instance answers */
#define MODE_DIRECT 1      /* the same, on the direct (back-door) port */
#define MODE_UNAVAILABLE 2 /* the module cannot run: 500 */
#define MODE_QUEUED 3      /* no ready instance: the request waits in the queue */
#define SETUP_SMALL_BODY 0x04  /* --max_request_body_bytes=64 */
#define SETUP_TRICKLE 0x08     /* the client writes in small pieces, loop between */
#define SETUP_CHUNKED_OUT 0x10 /* the default answer is chunked */
#define SETUP_INST_CLOSE 0x20  /* the instance closes after each answer */
#define SETUP_INST_TRICKLE 0x40 /* the instance answers in small pieces */

static const char INSTANCE_MARK[] = "\n#instance#\n";

/* Bounds of one run: loop passes, and passes without progress that count
 * as "quiet" (everything that can happen without a timer has happened). */
#define MAX_PASSES 4000
#define QUIET_PASSES 6
#define MAX_FORWARDED 4096

static struct event_base *base;
static struct af_config cfg;
static struct af_app_yaml app;
static struct af_server srv;
static struct af_instance *inst;
static struct evconnlistener *inst_listener;
static char inst_dir[64];
static char inst_sock[128];

/* ---- the stand-in instance --------------------------------------------- */

struct fake_conn {
    struct fake_conn *next;
    struct bufferevent *bev;
    http_parser parser;
    char field[64];
    size_t field_len;
    bool in_value;
    int n_host;
    int n_request_id;
    bool te_seen; /* a field named exactly Transfer-Encoding */
    bool closing;
};

static struct fake_conn *fake_conns;
static const uint8_t *inst_reply; /* what the instance answers each request with */
static size_t inst_reply_len;
static unsigned setup;
static unsigned progress; /* bumped whenever bytes move; quiescence detection */
static bool known_bugs;   /* FUZZ_KNOWN_BUGS=1 */

/* Methods of the requests the instance saw, in order: the client's response
 * validator needs them to know which responses have no body (HEAD). */
static unsigned char forwarded[MAX_FORWARDED];
static size_t n_forwarded;

static void fake_free(struct fake_conn *f)
{
    struct fake_conn **pp = &fake_conns;
    while (*pp && *pp != f)
        pp = &(*pp)->next;
    if (*pp)
        *pp = f->next;
    bufferevent_free(f->bev);
    free(f);
}

static void die(const char *what)
{
    fprintf(stderr, "fuzz_request: invariant violated: %s\n", what);
    abort();
}

static void fake_header_done(struct fake_conn *f)
{
    if (f->field_len >= sizeof(f->field))
        return;
    f->field[f->field_len] = '\0';
    if (strcasecmp(f->field, "Host") == 0)
        f->n_host++;
    if (strcasecmp(f->field, "X-AppEngine-Request-Log-Id") == 0)
        f->n_request_id++;
}

static int fake_on_begin(http_parser *p)
{
    struct fake_conn *f = p->data;
    f->field_len = 0;
    f->in_value = false;
    f->n_host = f->n_request_id = 0;
    f->te_seen = false;
    return 0;
}

static int fake_on_field(http_parser *p, const char *at, size_t n)
{
    struct fake_conn *f = p->data;
    if (f->in_value) {
        fake_header_done(f);
        f->field_len = 0;
        f->in_value = false;
    }
    /* Names longer than the buffer are none of the ones checked; they are
     * cut and stay unequal to them by their length. */
    size_t used = f->field_len < sizeof(f->field) - 1 ? f->field_len : sizeof(f->field) - 1;
    size_t room = sizeof(f->field) - 1 - used;
    memcpy(f->field + used, at, n < room ? n : room);
    f->field_len += n;
    return 0;
}

static int fake_on_value(http_parser *p, const char *at, size_t n)
{
    struct fake_conn *f = p->data;
    /* As in rc_on_value: only the name Transfer-Encoding, whole, frames. */
    if (f->field_len == 17 && strncasecmp(f->field, "Transfer-Encoding", 17) == 0)
        f->te_seen = true;
    else if (!f->te_seen)
        p->uses_transfer_encoding = 0;
    f->in_value = true;
    return 0;
}

static int fake_on_headers_complete(http_parser *p)
{
    struct fake_conn *f = p->data;
    if (f->in_value)
        fake_header_done(f);
    f->in_value = false;
    if (!f->te_seen)
        p->flags &= (unsigned)~F_CHUNKED; /* set by a name that only starts alike */
    if (f->n_host != 1 && !known_bugs) /* known: HTTP/1.0 with two Hosts */
        die("a forwarded request does not carry exactly one Host");
    if ((setup & SETUP_MODE_MASK) != MODE_DIRECT && f->n_request_id != 1)
        die("a request forwarded on the main port does not carry exactly one request id");
    if (n_forwarded < MAX_FORWARDED)
        forwarded[n_forwarded] = (unsigned char)p->method;
    n_forwarded++;
    return 0;
}

static int fake_on_complete(http_parser *p)
{
    struct fake_conn *f = p->data;
    if (f->closing)
        return 0;
    struct evbuffer *out = bufferevent_get_output(f->bev);
    if (setup & SETUP_INST_TRICKLE) {
        /* Several small writes still land in one buffer; what splits them
         * for appfront is that each is flushed before the next pass. */
        bufferevent_write(f->bev, inst_reply, inst_reply_len < 7 ? inst_reply_len : 7);
        if (inst_reply_len > 7)
            evbuffer_add(out, inst_reply + 7, inst_reply_len - 7);
    } else {
        evbuffer_add(out, inst_reply, inst_reply_len);
    }
    if (setup & SETUP_INST_CLOSE)
        f->closing = true;
    return 0;
}

static const http_parser_settings fake_settings = {
    .on_message_begin = fake_on_begin,
    .on_header_field = fake_on_field,
    .on_header_value = fake_on_value,
    .on_headers_complete = fake_on_headers_complete,
    .on_message_complete = fake_on_complete,
};

/* Whether a line of p starts with NAME followed by a colon (any case). */
static bool has_field(const unsigned char *p, size_t len, const char *name)
{
    size_t n = strlen(name);
    for (size_t i = 0; i + n + 2 <= len; i++)
        if (p[i] == '\n' && strncasecmp((const char *)p + i + 1, name, n) == 0 && p[i + 1 + n] == ':')
            return true;
    return false;
}

static void fake_read_cb(struct bufferevent *bev, void *arg)
{
    struct fake_conn *f = arg;
    struct evbuffer *in = bufferevent_get_input(bev);
    size_t len = evbuffer_get_length(in);
    if (!len)
        return;
    progress++;
    unsigned char *data = evbuffer_pullup(in, -1);
    if (!f->closing) {
        size_t n = http_parser_execute(&f->parser, &fake_settings, (const char *)data, len);
        enum http_errno e = HTTP_PARSER_ERRNO(&f->parser);
        /* http-parser 2.9 flags any field *starting* with
         * "Transfer-Encoding" (say "Transfer-Encodingx") as one: its own
         * false positive, not a forwarding fault, unless the real field is
         * there. */
        if (e == HPE_INVALID_TRANSFER_ENCODING && !has_field(data, len, "transfer-encoding"))
            e = HPE_OK, n = len;
        if (known_bugs && (e == HPE_INVALID_TRANSFER_ENCODING || e == HPE_UNEXPECTED_CONTENT_LENGTH))
            e = HPE_OK, n = len; /* known: a framing name with whitespace is forwarded */
        if (e != HPE_OK || n != len) {
            fprintf(stderr, "forwarded bytes the instance cannot parse (%s): %.*s\n",
                    http_errno_name(HTTP_PARSER_ERRNO(&f->parser)), (int)(len < 2000 ? len : 2000),
                    data);
            die("appfront forwarded bytes that are not HTTP/1.1 requests");
        }
    }
    evbuffer_drain(in, len);
}

static void fake_write_cb(struct bufferevent *bev, void *arg)
{
    struct fake_conn *f = arg;
    progress++;
    if (f->closing && evbuffer_get_length(bufferevent_get_output(bev)) == 0)
        fake_free(f);
}

static void fake_event_cb(struct bufferevent *bev, short what, void *arg)
{
    if (what & (BEV_EVENT_EOF | BEV_EVENT_ERROR)) {
        progress++;
        fake_free(arg);
    }
}

static void fake_accept_cb(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa,
                           int len, void *arg)
{
    struct fake_conn *f = calloc(1, sizeof(*f));
    f->bev = bufferevent_socket_new(base, fd, BEV_OPT_CLOSE_ON_FREE);
    http_parser_init(&f->parser, HTTP_REQUEST);
    f->parser.data = f;
    f->next = fake_conns;
    fake_conns = f;
    bufferevent_setcb(f->bev, fake_read_cb, fake_write_cb, fake_event_cb, f);
    bufferevent_enable(f->bev, EV_READ | EV_WRITE);
    progress++;
}

/* ---- setup ------------------------------------------------------------- */

static void setup_once(void)
{
    signal(SIGPIPE, SIG_IGN);
    known_bugs = getenv("FUZZ_KNOWN_BUGS") && strcmp(getenv("FUZZ_KNOWN_BUGS"), "1") == 0;
    af_log_set_level(getenv("FUZZ_VERBOSE") ? AF_LOG_DEBUG : AF_LOG_CRITICAL);
    base = event_base_new();

    af_config_init(&cfg);
    app.runtime = strdup("native");
    app.service = strdup("default");
    app.version = strdup("1");
    app.threadsafe = true;
    app.scaling = AF_SCALING_AUTOMATIC;
    /* No entrypoint: af_module_new() spawns nothing (it marks the module
     * unavailable, which MODE_UNAVAILABLE keeps and the other modes undo). */
    app.entrypoint = NULL;

    srv.base = base;
    srv.cfg = &cfg;
    srv.app = &app;
    srv.spare_fd = -1;
    srv.app_id = strdup("fuzz");
    LIST_INIT(&srv.conns);
    if (af_conns_init(&srv) < 0)
        abort();
    srv.main_port = (struct af_listener){.srv = &srv, .direct = false, .port = 8080};
    srv.direct_port = (struct af_listener){.srv = &srv, .direct = true, .port = 8081};
    srv.module = af_module_new(&srv, &app);
    /* Each listener carries its module (server.h). */
    srv.main_port.module = srv.direct_port.module = srv.module;

    snprintf(inst_dir, sizeof(inst_dir), "/tmp/af-fuzz-XXXXXX");
    if (!mkdtemp(inst_dir))
        die("mkdtemp");
    snprintf(inst_sock, sizeof(inst_sock), "%s/inst.sock", inst_dir);
    struct sockaddr_un sun = {.sun_family = AF_UNIX};
    snprintf(sun.sun_path, sizeof(sun.sun_path), "%s", inst_sock);
    inst_listener = evconnlistener_new_bind(base, fake_accept_cb, NULL,
                                            LEV_OPT_CLOSE_ON_FREE | LEV_OPT_CLOSE_ON_EXEC, 128,
                                            (struct sockaddr *)&sun, sizeof(sun));
    if (!inst_listener)
        die("cannot listen on the stand-in instance's socket");

    /* A READY instance as instance.c would leave it after its socket
     * accepted, without a process behind it. The module's list holds the
     * one reference that is never dropped. */
    inst = calloc(1, sizeof(*inst));
    inst->mod = srv.module;
    inst->id = 0;
    snprintf(inst->name, sizeof(inst->name), "default.0");
    inst->state = AF_INST_READY;
    inst->ever_ready = true;
    inst->refs = 1;
    inst->sock_path = strdup(inst_sock);
    TAILQ_INIT(&inst->idle);
    LIST_INIT(&inst->held);
    TAILQ_INSERT_TAIL(&srv.module->instances, inst, link);
    srv.module->n_ready = 1;
}

static void cleanup_at_exit(void)
{
    unlink(inst_sock);
    rmdir(inst_dir);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    setup_once();
    atexit(cleanup_at_exit);
    return 0;
}

/* ---- the client's side --------------------------------------------------- */

static struct evbuffer *client_in; /* everything appfront sent the client */

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

/* Runs loop passes until nothing moves for QUIET_PASSES passes. */
static void pump(int client_fd)
{
    int quiet = 0;
    for (int i = 0; i < MAX_PASSES && quiet < QUIET_PASSES; i++) {
        unsigned before = progress;
        size_t out_before = evbuffer_get_length(client_in);
        event_base_loop(base, EVLOOP_NONBLOCK);
        af_stream_flush_all(); /* the end of a turn, as af_stream_loop does */
        af_log_flush();
        if (client_fd >= 0)
            client_read(client_fd);
        if (progress == before && evbuffer_get_length(client_in) == out_before)
            quiet++;
        else
            quiet = 0;
    }
}

/* Writes what the client sends, pumping the loop whenever the socket is
 * full (or after every piece when trickling). */
static void client_send(int fd, const uint8_t *p, size_t len)
{
    size_t piece = setup & SETUP_TRICKLE ? 1 : len;
    while (len > 0) {
        size_t want = len < piece ? len : piece;
        if (setup & SETUP_TRICKLE)
            piece = piece * 2 + 1 > 64 ? 1 : piece * 2 + 1; /* 1, 3, 7, ... 63, 1, ... */
        ssize_t n = send(fd, p, want, MSG_DONTWAIT | MSG_NOSIGNAL);
        if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK)
            return; /* appfront closed: the rest is never read */
        if (n > 0) {
            p += n;
            len -= (size_t)n;
            progress++;
        }
        if ((setup & SETUP_TRICKLE) || n <= 0)
            pump(fd);
    }
}

/* ---- what the client received ------------------------------------------- */

struct resp_check {
    size_t index;      /* final responses seen so far */
    bool head_only;    /* this response answers a HEAD (no body) */
    bool interim;
    bool close;        /* Connection: close */
    bool done;
    char field[32];
    size_t field_len;
    bool in_value;
    bool field_is_connection;
    bool field_is_te;  /* the name is exactly Transfer-Encoding */
    bool te_seen;      /* a field named exactly Transfer-Encoding was seen */
    char value[32];
    size_t value_len;
};

static void rc_header_done(struct resp_check *r)
{
    if (r->field_is_connection) {
        r->value[r->value_len < sizeof(r->value) ? r->value_len : sizeof(r->value) - 1] = '\0';
        if (strcasecmp(r->value, "close") == 0)
            r->close = true;
    }
}

static int rc_on_field(http_parser *p, const char *at, size_t n)
{
    struct resp_check *r = p->data;
    if (r->in_value) {
        rc_header_done(r);
        r->in_value = false;
        r->field_len = r->value_len = 0;
    }
    if (r->field_len + n < sizeof(r->field)) {
        memcpy(r->field + r->field_len, at, n);
        r->field_len += n;
        r->field[r->field_len] = '\0';
    } else {
        r->field_len = sizeof(r->field); /* too long to be Connection */
    }
    r->field_is_connection = r->field_len < sizeof(r->field) &&
                             strcasecmp(r->field, "Connection") == 0;
    r->field_is_te = r->field_len < sizeof(r->field) &&
                     strcasecmp(r->field, "Transfer-Encoding") == 0;
    return 0;
}

static int rc_on_value(http_parser *p, const char *at, size_t n)
{
    struct resp_check *r = p->data;
    /* http-parser 2.9 takes any name starting with "Transfer-Encoding" for
     * it; names are compared whole (RFC 9110 §5.1), as appfront does, so
     * such a field frames nothing here either. */
    if (r->field_is_te)
        r->te_seen = true;
    else if (!r->te_seen)
        p->uses_transfer_encoding = 0;
    r->in_value = true;
    size_t room = sizeof(r->value) - 1 > r->value_len ? sizeof(r->value) - 1 - r->value_len : 0;
    memcpy(r->value + r->value_len, at, n < room ? n : room);
    r->value_len += n < room ? n : room;
    return 0;
}

static int rc_on_headers_complete(http_parser *p)
{
    struct resp_check *r = p->data;
    if (r->in_value)
        rc_header_done(r);
    r->in_value = false;
    if (!r->te_seen)
        p->flags &= (unsigned)~F_CHUNKED; /* set by a name that only starts alike */
    r->interim = p->status_code >= 100 && p->status_code < 200;
    if (r->interim)
        return 0;
    r->head_only = r->index < n_forwarded && r->index < MAX_FORWARDED &&
                   forwarded[r->index] == HTTP_HEAD;
    /* 1: no body, whatever the headers say (RFC 9112 §6.3 rule 1). */
    return r->head_only ? 1 : 0;
}

static int rc_on_complete(http_parser *p)
{
    struct resp_check *r = p->data;
    r->done = true;
    http_parser_pause(p, 1);
    return 0;
}

static const http_parser_settings rc_settings = {
    .on_header_field = rc_on_field,
    .on_header_value = rc_on_value,
    .on_headers_complete = rc_on_headers_complete,
    .on_message_complete = rc_on_complete,
};

static void check_client_stream(void)
{
    size_t len = evbuffer_get_length(client_in);
    const char *data = (const char *)evbuffer_pullup(client_in, -1);
    size_t pos = 0, index = 0;
    if (getenv("FUZZ_DUMP"))
        fprintf(stderr, "--- %zu request(s) forwarded; the client received:\n%.*s\n---\n",
                n_forwarded, (int)len, data);
    while (pos < len) {
        if (len - pos < 9 ? memcmp(data + pos, "HTTP/1.1 ", len - pos) != 0
                          : memcmp(data + pos, "HTTP/1.1 ", 9) != 0) {
            fprintf(stderr, "at byte %zu: %.*s\n", pos, (int)(len - pos < 300 ? len - pos : 300),
                    data + pos);
            die("a response does not start with \"HTTP/1.1 \"");
        }
        struct resp_check r = {.index = index};
        http_parser p;
        http_parser_init(&p, HTTP_RESPONSE);
        p.data = &r;
        size_t n = http_parser_execute(&p, &rc_settings, data + pos, len - pos);
        enum http_errno e = HTTP_PARSER_ERRNO(&p);
        if (e != HPE_OK && e != HPE_PAUSED) {
            fprintf(stderr, "response %zu at byte %zu (%s): %.*s\n", index, pos,
                    http_errno_name(e), (int)(len - pos < 600 ? len - pos : 600), data + pos);
            die("the client received a malformed response");
        }
        if (!r.done) {
            /* Cut short: only the last response may be, when appfront cut
             * the connection (or the driver closed it) mid-response. */
            http_parser_execute(&p, &rc_settings, NULL, 0); /* EOF: close-delimited end */
            return;
        }
        pos += n;
        if (!r.interim)
            index++;
        if (r.close && pos < len && known_bugs)
            return; /* known: error answers to HEAD carry a body */
        if (r.close && pos < len) {
            fprintf(stderr, "%zu bytes after a Connection: close response: %.*s\n", len - pos,
                    (int)(len - pos < 300 ? len - pos : 300), data + pos);
            die("bytes follow a response that closed the connection");
        }
    }
}

/* Whether the instance's answer holds a status line of a 1xx, 204 or 304,
 * whose body appfront is known to relay (FUZZ_KNOWN_BUGS). */
static bool has_no_body_status(const uint8_t *p, size_t len)
{
    const uint8_t *end = p + len, *h;
    while ((h = memmem(p, (size_t)(end - p), "HTTP/", 5)) != NULL) {
        const uint8_t *sp = memchr(h, ' ', (size_t)(end - h));
        if (!sp)
            return false;
        while (sp < end && (*sp == ' ' || *sp == '0')) /* http-parser reads "0204" as 204 */
            sp++;
        if (end - sp >= 3 &&
            (sp[0] == '1' || memcmp(sp, "204", 3) == 0 || memcmp(sp, "304", 3) == 0))
            return true;
        p = h + 5;
    }
    return false;
}

/* ---- one input ----------------------------------------------------------- */

static const char DEFAULT_REPLY[] = "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-From: fuzz\r\n\r\nhello";
static const char CHUNKED_REPLY[] =
    "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n";

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    setup = data[0];
    data++;
    size--;

    size_t client_len = size;
    const uint8_t *mark = memmem(data, size, INSTANCE_MARK, sizeof(INSTANCE_MARK) - 1);
    if (mark) {
        client_len = (size_t)(mark - data);
        inst_reply = mark + sizeof(INSTANCE_MARK) - 1;
        inst_reply_len = size - client_len - (sizeof(INSTANCE_MARK) - 1);
    } else if (setup & SETUP_CHUNKED_OUT) {
        inst_reply = (const uint8_t *)CHUNKED_REPLY;
        inst_reply_len = sizeof(CHUNKED_REPLY) - 1;
    } else {
        inst_reply = (const uint8_t *)DEFAULT_REPLY;
        inst_reply_len = sizeof(DEFAULT_REPLY) - 1;
    }

    struct af_module *mod = srv.module;
    int mode = setup & SETUP_MODE_MASK;
    char *unavailable = mod->unavailable;
    if (mode != MODE_UNAVAILABLE)
        mod->unavailable = NULL;
    if (mode == MODE_QUEUED) {
        /* No ready instance and no scaling: the request waits, as it
         * would behind a starting instance. */
        inst->state = AF_INST_STARTING;
        mod->fixed = true;
    }
    cfg.max_body_bytes = setup & SETUP_SMALL_BODY ? 64 : 32LL << 20;
    n_forwarded = 0;
    client_in = evbuffer_new();

    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) != 0)
        die("socketpair");
    struct sockaddr_in peer = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(0x7f000001)};
    af_conn_accept(mode == MODE_DIRECT ? &srv.direct_port : &srv.main_port, sv[0],
                   (struct sockaddr *)&peer, sizeof(peer));

    client_send(sv[1], data, client_len);
    pump(sv[1]);
    /* The client goes away; whatever was in flight is abandoned. */
    shutdown(sv[1], SHUT_WR);
    pump(sv[1]);
    close(sv[1]);
    pump(-1);

    if (srv.n_conns != 0 || !LIST_EMPTY(&srv.conns))
        die("a client connection outlived its client");
    if (inst->active != 0 || inst->active_direct != 0 || !LIST_EMPTY(&inst->held))
        die("an instance slot was not given back");
    if (mod->queue_len != 0 || !TAILQ_EMPTY(&mod->queue))
        die("a queue place was not given back");

    /* Back to the same state for the next input: no pooled connections,
     * no stand-in connections, the module as set up. */
    af_upstream_drain_pool(inst);
    if (inst->refs != 1)
        die("an instance reference leaked");
    pump(-1);
    while (fake_conns)
        fake_free(fake_conns);

    if (!(known_bugs && has_no_body_status(inst_reply, inst_reply_len)))
        check_client_stream();
    evbuffer_free(client_in);
    client_in = NULL;

    mod->unavailable = unavailable;
    inst->state = AF_INST_READY;
    mod->fixed = false;
    return 0;
}
