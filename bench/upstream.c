/*
 * upstream — the app behind every proxy in the benchmark (bench/run.sh).
 *
 * One thread, plain epoll, HTTP/1.1 keep-alive, so that the upstream costs
 * the same whichever proxy is in front of it and as little as possible:
 *
 *   GET /            200, the 13-byte body "Hello, world\n"
 *   GET /sleep?ms=N  200 after N ms (at most 60 s), without blocking: the
 *                    connection waits on a timer heap, others keep going
 *   anything else    404
 *
 * Listens on $APPFRONT_HTTP_SOCKET (how appfront starts it), and/or on the
 * Unix socket given by --unix PATH and the loopback TCP port --tcp PORT
 * (how the benchmark starts it behind nginx and haproxy, and alone).
 *
 * The request parser is the least that is correct for what the proxies
 * send: a head up to 8 KiB ended by CRLFCRLF, a Content-Length body skipped,
 * "Connection: close" and HTTP/1.0 honoured. Chunked request bodies are not
 * supported (answered 501 and closed); no proxy sends one for a GET.
 */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define IN_MAX 8192
#define OUT_MAX 65536
#define MAX_SLEEP_MS 60000

static const char hello_resp[] = "HTTP/1.1 200 OK\r\n"
                                 "Content-Type: text/plain\r\n"
                                 "Content-Length: 13\r\n"
                                 "\r\n"
                                 "Hello, world\n";
static const char hello_close_resp[] = "HTTP/1.1 200 OK\r\n"
                                       "Content-Type: text/plain\r\n"
                                       "Content-Length: 13\r\n"
                                       "Connection: close\r\n"
                                       "\r\n"
                                       "Hello, world\n";
static const char slept_resp[] = "HTTP/1.1 200 OK\r\n"
                                 "Content-Type: text/plain\r\n"
                                 "Content-Length: 6\r\n"
                                 "\r\n"
                                 "slept\n";
static const char notfound_resp[] = "HTTP/1.1 404 Not Found\r\n"
                                    "Content-Type: text/plain\r\n"
                                    "Content-Length: 10\r\n"
                                    "\r\n"
                                    "not found\n";
static const char bad_resp[] = "HTTP/1.1 501 Not Implemented\r\n"
                               "Content-Length: 0\r\n"
                               "Connection: close\r\n"
                               "\r\n";

enum { KIND_LISTEN, KIND_CONN };

struct conn {
    int kind; /* must stay first: epoll data points at a conn or a listener */
    int fd;
    unsigned gen;        /* bumped on close, so a stale timer is ignored */
    bool sleeping;       /* a /sleep is pending: parse nothing more */
    bool close_after;    /* close once the output is flushed */
    bool want_out;       /* EPOLLOUT registered */
    size_t in_len;
    size_t skip_body;    /* request body bytes still to discard */
    size_t out_len, out_off;
    char in[IN_MAX];
    char out[OUT_MAX];
};

struct listener {
    int kind;
    int fd;
};

struct timer {
    uint64_t due_ms;
    struct conn *c;
    unsigned gen;
};

static int ep;
static struct timer *heap;
static size_t heap_n, heap_cap;
static volatile sig_atomic_t stopping;

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static void *xrealloc(void *p, size_t n)
{
    p = realloc(p, n);
    if (!p) {
        perror("upstream: realloc");
        abort();
    }
    return p;
}

/* ---- the timer heap (min-heap on due_ms) ---- */

static void heap_push(struct timer t)
{
    if (heap_n == heap_cap) {
        heap_cap = heap_cap ? heap_cap * 2 : 256;
        heap = xrealloc(heap, heap_cap * sizeof(*heap));
    }
    size_t i = heap_n++;
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (heap[parent].due_ms <= t.due_ms)
            break;
        heap[i] = heap[parent];
        i = parent;
    }
    heap[i] = t;
}

static struct timer heap_pop(void)
{
    struct timer top = heap[0];
    struct timer last = heap[--heap_n];
    size_t i = 0;
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, m = i;
        uint64_t mv = last.due_ms;
        if (l < heap_n && heap[l].due_ms < mv) {
            m = l;
            mv = heap[l].due_ms;
        }
        if (r < heap_n && heap[r].due_ms < mv)
            m = r;
        if (m == i)
            break;
        heap[i] = heap[m];
        i = m;
    }
    if (heap_n)
        heap[i] = last;
    return top;
}

/* ---- connections ---- */

static void conn_close(struct conn *c)
{
    close(c->fd);
    c->fd = -1;
    c->gen++;
    /* A pending timer still points here: keep the struct until it fires. */
    if (!c->sleeping)
        free(c);
}

static void set_out_interest(struct conn *c, bool on)
{
    if (c->want_out == on)
        return;
    struct epoll_event ev = {.events = EPOLLIN | (on ? EPOLLOUT : 0), .data.ptr = c};
    epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
    c->want_out = on;
}

/* Writes what is buffered. Returns -1 when the connection was closed. */
static int conn_flush(struct conn *c)
{
    while (c->out_off < c->out_len) {
        ssize_t n = write(c->fd, c->out + c->out_off, c->out_len - c->out_off);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN) {
                set_out_interest(c, true);
                return 0;
            }
            conn_close(c);
            return -1;
        }
        c->out_off += (size_t)n;
    }
    c->out_len = c->out_off = 0;
    set_out_interest(c, false);
    if (c->close_after) {
        conn_close(c);
        return -1;
    }
    return 0;
}

static void queue_out(struct conn *c, const char *p, size_t n)
{
    if (c->out_len + n > OUT_MAX) {
        /* Only a deep pipeline gets here; the caller stops parsing first. */
        return;
    }
    memcpy(c->out + c->out_len, p, n);
    c->out_len += n;
}

/* Finds header name (lower case, with the colon) in head[0..len); returns
 * its value or NULL. */
static const char *find_header(const char *head, size_t len, const char *name, size_t *vlen)
{
    size_t nl = strlen(name);
    const char *p = memchr(head, '\n', len);
    const char *end = head + len;
    while (p && p + 1 < end) {
        p++;
        if ((size_t)(end - p) > nl && strncasecmp(p, name, nl) == 0) {
            const char *v = p + nl;
            while (v < end && (*v == ' ' || *v == '\t'))
                v++;
            const char *e = memchr(v, '\r', (size_t)(end - v));
            *vlen = e ? (size_t)(e - v) : 0;
            return v;
        }
        p = memchr(p, '\n', (size_t)(end - p));
    }
    return NULL;
}

/* Handles the complete requests in c->in. Returns -1 if c was closed. */
static int conn_process(struct conn *c)
{
    size_t off = 0;
    while (!c->sleeping && !c->close_after) {
        if (c->skip_body) {
            size_t n = c->in_len - off < c->skip_body ? c->in_len - off : c->skip_body;
            off += n;
            c->skip_body -= n;
            if (c->skip_body)
                break;
        }
        if (c->out_len + sizeof(notfound_resp) + 64 > OUT_MAX)
            break; /* let the output drain first */
        char *head = c->in + off;
        size_t avail = c->in_len - off;
        char *eoh = memmem(head, avail, "\r\n\r\n", 4);
        if (!eoh) {
            if (avail >= IN_MAX) {
                queue_out(c, bad_resp, sizeof(bad_resp) - 1);
                c->close_after = true;
                off = c->in_len;
            }
            break;
        }
        size_t hlen = (size_t)(eoh - head) + 4;
        off += hlen;

        bool http10 = memmem(head, hlen < 200 ? hlen : 200, "HTTP/1.0\r\n", 10) != NULL;
        size_t vlen;
        const char *v = find_header(head, hlen, "connection:", &vlen);
        bool keep = !http10;
        if (v && vlen >= 5 && strncasecmp(v, "close", 5) == 0)
            keep = false;
        if (v && vlen >= 10 && strncasecmp(v, "keep-alive", 10) == 0)
            keep = true;
        if (find_header(head, hlen, "transfer-encoding:", &vlen)) {
            queue_out(c, bad_resp, sizeof(bad_resp) - 1);
            c->close_after = true;
            break;
        }
        v = find_header(head, hlen, "content-length:", &vlen);
        if (v)
            c->skip_body = strtoul(v, NULL, 10);

        if (strncmp(head, "GET / ", 6) == 0) {
            if (keep)
                queue_out(c, hello_resp, sizeof(hello_resp) - 1);
            else
                queue_out(c, hello_close_resp, sizeof(hello_close_resp) - 1);
        } else if (strncmp(head, "GET /sleep?ms=", 14) == 0) {
            unsigned long ms = strtoul(head + 14, NULL, 10);
            if (ms > MAX_SLEEP_MS)
                ms = MAX_SLEEP_MS;
            c->sleeping = true;
            heap_push((struct timer){.due_ms = now_ms() + ms, .c = c, .gen = c->gen});
        } else {
            queue_out(c, notfound_resp, sizeof(notfound_resp) - 1);
        }
        if (!keep)
            c->close_after = true;
    }
    memmove(c->in, c->in + off, c->in_len - off);
    c->in_len -= off;
    if (c->out_len && !c->want_out)
        return conn_flush(c);
    return 0;
}

static void conn_readable(struct conn *c)
{
    for (;;) {
        if (c->in_len == IN_MAX)
            break;
        ssize_t n = read(c->fd, c->in + c->in_len, IN_MAX - c->in_len);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN)
                break;
            conn_close(c);
            return;
        }
        if (n == 0) {
            conn_close(c);
            return;
        }
        c->in_len += (size_t)n;
        if ((size_t)n < 4096)
            break; /* most likely drained: spare a read that returns EAGAIN */
    }
    conn_process(c);
}

static void fire_timers(void)
{
    uint64_t now = now_ms();
    while (heap_n && heap[0].due_ms <= now) {
        struct timer t = heap_pop();
        struct conn *c = t.c;
        c->sleeping = false;
        if (c->fd < 0 || c->gen != t.gen) {
            free(c);
            continue;
        }
        queue_out(c, slept_resp, sizeof(slept_resp) - 1);
        if (c->want_out)
            continue;
        if (conn_flush(c) < 0)
            continue;
        conn_process(c);
    }
}

static void accept_all(struct listener *l)
{
    for (;;) {
        int fd = accept4(l->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED)
                continue;
            if (errno != EAGAIN)
                perror("upstream: accept");
            return;
        }
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)); /* fails on Unix: fine */
        struct conn *c = calloc(1, sizeof(*c));
        if (!c) {
            close(fd);
            continue;
        }
        c->kind = KIND_CONN;
        c->fd = fd;
        struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
        epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
    }
}

static void add_listener(int fd)
{
    struct listener *l = calloc(1, sizeof(*l));
    l->kind = KIND_LISTEN;
    l->fd = fd;
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = l};
    epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
}

static int listen_unix(const char *path)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    if (strlen(path) >= sizeof(sa.sun_path)) {
        fprintf(stderr, "upstream: socket path too long: %s\n", path);
        exit(2);
    }
    strcpy(sa.sun_path, path);
    unlink(path);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(fd, 4096) < 0) {
        fprintf(stderr, "upstream: cannot listen on %s: %s\n", path, strerror(errno));
        exit(1);
    }
    return fd;
}

static int listen_tcp(int port)
{
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(fd, 4096) < 0) {
        fprintf(stderr, "upstream: cannot listen on 127.0.0.1:%d: %s\n", port, strerror(errno));
        exit(1);
    }
    return fd;
}

static void on_term(int sig)
{
    (void)sig;
    stopping = 1;
}

int main(int argc, char **argv)
{
    const char *unix_path = getenv("APPFRONT_HTTP_SOCKET");
    int tcp_port = -1;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--unix") == 0 && i + 1 < argc)
            unix_path = argv[++i];
        else if (strcmp(argv[i], "--tcp") == 0 && i + 1 < argc)
            tcp_port = atoi(argv[++i]);
        else {
            fprintf(stderr, "usage: upstream [--unix PATH] [--tcp PORT]\n");
            return 2;
        }
    }
    if (!unix_path && tcp_port < 0) {
        fprintf(stderr, "upstream: no APPFRONT_HTTP_SOCKET, --unix or --tcp\n");
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    struct sigaction sa = {.sa_handler = on_term};
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);

    ep = epoll_create1(EPOLL_CLOEXEC);
    if (unix_path)
        add_listener(listen_unix(unix_path));
    if (tcp_port >= 0)
        add_listener(listen_tcp(tcp_port));

    struct epoll_event evs[256];
    while (!stopping) {
        int timeout = -1;
        if (heap_n) {
            uint64_t now = now_ms();
            timeout = heap[0].due_ms > now ? (int)(heap[0].due_ms - now) : 0;
        }
        int n = epoll_wait(ep, evs, 256, timeout);
        if (n < 0 && errno != EINTR) {
            perror("upstream: epoll_wait");
            return 1;
        }
        for (int i = 0; i < n; i++) {
            int kind = *(int *)evs[i].data.ptr;
            if (kind == KIND_LISTEN) {
                accept_all(evs[i].data.ptr);
                continue;
            }
            struct conn *c = evs[i].data.ptr;
            if (c->fd < 0)
                continue;
            if ((evs[i].events & EPOLLOUT) && conn_flush(c) < 0)
                continue;
            if (evs[i].events & (EPOLLOUT)) {
                if (conn_process(c) < 0)
                    continue;
            }
            if (evs[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR))
                conn_readable(c);
        }
        if (heap_n)
            fire_timers();
    }
    if (unix_path)
        unlink(unix_path);
    return 0;
}
