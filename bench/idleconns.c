/*
 * idleconns — holds many idle keep-alive HTTP connections open against a
 * server, for the per-connection memory benchmark (bench/run.sh).
 *
 *   idleconns HOST PORT
 *
 * Reads commands on stdin, one per line:
 *   open N   opens N more connections; on each sends one "GET /" and reads
 *            the whole response, then leaves it idle (keep-alive). At most
 *            64 are being opened at a time, so the server's wait queue is
 *            never the limit. Answers "opened OPEN FAILED" when done.
 *   check    answers "open N": connections still open (the server closing
 *            an idle one would make the memory figure meaningless).
 *   EOF      closes everything and exits.
 *
 * The caller raises RLIMIT_NOFILE; every phase is bounded by 120 s.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define INFLIGHT 64
#define PHASE_LIMIT_S 120

enum cstate { C_CONNECTING, C_READING, C_IDLE, C_DEAD };

struct conn {
    int fd;
    enum cstate st;
    size_t got;
    char buf[512];
};

static struct sockaddr_in addr;
static int ep;
static struct conn **conns;
static size_t n_conns, cap_conns;
static const char req[] = "GET / HTTP/1.1\r\nHost: bench\r\n\r\n";

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void kill_conn(struct conn *c)
{
    if (c->fd >= 0)
        close(c->fd);
    c->fd = -1;
    c->st = C_DEAD;
}

static int start_conn(void)
{
    struct conn *c = calloc(1, sizeof(*c));
    if (!c)
        abort();
    if (n_conns == cap_conns) {
        cap_conns = cap_conns ? cap_conns * 2 : 1024;
        conns = realloc(conns, cap_conns * sizeof(*conns));
        if (!conns)
            abort();
    }
    conns[n_conns++] = c;
    c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (c->fd < 0) {
        c->st = C_DEAD;
        return -1;
    }
    int one = 1;
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    c->st = C_CONNECTING;
    if (connect(c->fd, (struct sockaddr *)&addr, sizeof(addr)) < 0 && errno != EINPROGRESS) {
        kill_conn(c);
        return -1;
    }
    struct epoll_event ev = {.events = EPOLLOUT | EPOLLIN, .data.ptr = c};
    epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &ev);
    return 0;
}

/* True when buf holds a complete response (head + Content-Length body). */
static bool response_done(const char *buf, size_t n)
{
    const char *eoh = memmem(buf, n, "\r\n\r\n", 4);
    if (!eoh)
        return false;
    size_t hlen = (size_t)(eoh - buf) + 4;
    const char *cl = strcasestr(buf, "\r\ncontent-length:");
    size_t blen = 0;
    if (cl && cl < eoh)
        blen = strtoul(cl + 17, NULL, 10);
    return n >= hlen + blen;
}

/* Advances c on an event. Returns true when c left the opening phase. */
static bool on_event(struct conn *c, unsigned events)
{
    if (c->st == C_CONNECTING) {
        int err = 0;
        socklen_t len = sizeof(err);
        getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len);
        if (err || (events & (EPOLLERR | EPOLLHUP))) {
            kill_conn(c);
            return true;
        }
        if (write(c->fd, req, sizeof(req) - 1) != (ssize_t)sizeof(req) - 1) {
            kill_conn(c);
            return true;
        }
        c->st = C_READING;
        struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
        epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
        return false;
    }
    if (c->st == C_READING) {
        ssize_t n = read(c->fd, c->buf + c->got, sizeof(c->buf) - 1 - c->got);
        if (n < 0 && errno == EAGAIN)
            return false;
        if (n <= 0) {
            kill_conn(c);
            return true;
        }
        c->got += (size_t)n;
        c->buf[c->got] = '\0';
        if (!response_done(c->buf, c->got)) {
            if (c->got == sizeof(c->buf) - 1) {
                kill_conn(c);
                return true;
            }
            return false;
        }
        if (strncmp(c->buf, "HTTP/1.1 200", 12) != 0) {
            kill_conn(c);
            return true;
        }
        /* Idle: stay registered for EPOLLRDHUP only, to see a server close. */
        c->st = C_IDLE;
        struct epoll_event ev = {.events = EPOLLRDHUP, .data.ptr = c};
        epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
        return true;
    }
    if (c->st == C_IDLE && (events & (EPOLLRDHUP | EPOLLHUP | EPOLLERR)))
        kill_conn(c);
    return false;
}

static void open_more(size_t n)
{
    size_t started = 0, finished = 0, failed = 0, pending = 0;
    size_t first = n_conns;
    double deadline = now_s() + PHASE_LIMIT_S;
    struct epoll_event evs[256];
    while (finished < n && now_s() < deadline) {
        while (pending < INFLIGHT && started < n) {
            started++;
            if (start_conn() < 0) {
                finished++;
                failed++;
            } else {
                pending++;
            }
        }
        int k = epoll_wait(ep, evs, 256, 100);
        for (int i = 0; i < k; i++) {
            struct conn *c = evs[i].data.ptr;
            enum cstate before = c->st;
            if (on_event(c, evs[i].events) && before != C_IDLE) {
                pending--;
                finished++;
                if (c->st == C_DEAD)
                    failed++;
            }
        }
    }
    size_t open = 0;
    for (size_t i = first; i < n_conns; i++)
        open += conns[i]->st == C_IDLE;
    printf("opened %zu %zu\n", open, n - open);
    fflush(stdout);
}

static size_t count_open(void)
{
    struct epoll_event evs[256];
    int k;
    while ((k = epoll_wait(ep, evs, 256, 0)) > 0)
        for (int i = 0; i < k; i++)
            on_event(evs[i].data.ptr, evs[i].events);
    size_t open = 0;
    for (size_t i = 0; i < n_conns; i++)
        open += conns[i]->st == C_IDLE;
    return open;
}

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: idleconns HOST PORT\n");
        return 2;
    }
    addr.sin_family = AF_INET;
    addr.sin_port = htons((unsigned short)atoi(argv[2]));
    if (inet_pton(AF_INET, strcmp(argv[1], "localhost") == 0 ? "127.0.0.1" : argv[1],
                  &addr.sin_addr) != 1) {
        fprintf(stderr, "idleconns: bad address %s\n", argv[1]);
        return 2;
    }
    ep = epoll_create1(EPOLL_CLOEXEC);
    char line[128];
    while (fgets(line, sizeof(line), stdin)) {
        unsigned long n;
        if (sscanf(line, "open %lu", &n) == 1)
            open_more(n);
        else if (strncmp(line, "check", 5) == 0) {
            printf("open %zu\n", count_open());
            fflush(stdout);
        }
    }
    return 0;
}
