/*
 * dial — outbound TCP connections on the API I/O thread (see dial.h).
 *
 *   LOOKUP --addresses--> CONNECT (one address after another) --> DONE
 *
 * DONE holds the outcome until done_ev hands it over: see the rule at the
 * top of dial.h.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/dns.h>
#include <event2/event.h>
#include <event2/util.h>

#include "apiserver/services/dial.h"
#include "common/xalloc.h"

/* A pending lookup. Separate from the dial because the resolver calls back
 * even after a cancel (evdns_getaddrinfo_cancel only asks; the answer,
 * EVUTIL_EAI_CANCEL, comes later from the loop): a cancelled wait
 * (d == NULL) just frees itself then. */
struct lookup_wait {
    struct af_dial *d;
    struct evdns_getaddrinfo_request *req;
};

enum dial_state { D_LOOKUP, D_CONNECT, D_DONE };

struct af_dial {
    enum dial_state state;
    struct event_base *base;
    unsigned flags;
    af_dial_cb cb;
    void *arg;
    struct lookup_wait *wait;                  /* LOOKUP with evdns, until it answers */
    struct evutil_addrinfo *addrs, *next_addr; /* CONNECT: what is left to try */
    int fd;                                    /* the socket being connected, or the result's */
    struct event *connect_ev;                  /* its EV_WRITE wait */
    int connect_errno;                         /* the last address's failure */
    struct event *done_ev;                     /* hands the outcome over */
    struct af_dial_result result;              /* DONE: the outcome (addr points at last_addr) */
    char last_addr[AF_DIAL_ADDR_LEN];
};

void af_dial_format_addr(const struct sockaddr *sa, char *buf, size_t len)
{
    char host[INET6_ADDRSTRLEN] = "?";
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)sa;
        inet_ntop(AF_INET, &in->sin_addr, host, sizeof(host));
        snprintf(buf, len, "%s:%d", host, ntohs(in->sin_port));
    } else if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;
        inet_ntop(AF_INET6, &in6->sin6_addr, host, sizeof(host));
        snprintf(buf, len, "[%s]:%d", host, ntohs(in6->sin6_port));
    } else {
        snprintf(buf, len, "?");
    }
}

struct bufferevent *af_dial_bev_made(struct bufferevent *bev, const char *what)
{
    if (!bev) {
        fprintf(stderr, "appfront: out of memory making %s\n", what);
        abort();
    }
    return bev;
}

/* Everything but the outcome's socket and the dial itself. */
static void dial_release(struct af_dial *d)
{
    if (d->wait) {
        struct lookup_wait *w = d->wait;
        d->wait = NULL;
        w->d = NULL;
        if (w->req)
            evdns_getaddrinfo_cancel(w->req);
    }
    if (d->addrs)
        evutil_freeaddrinfo(d->addrs);
    d->addrs = d->next_addr = NULL;
    if (d->connect_ev)
        event_free(d->connect_ev);
    d->connect_ev = NULL;
}

static void dial_free(struct af_dial *d)
{
    dial_release(d);
    if (d->fd >= 0)
        close(d->fd);
    if (d->done_ev)
        event_free(d->done_ev);
    free(d);
}

void af_dial_cancel(struct af_dial *d)
{
    if (d)
        dial_free(d);
}

bool af_dial_resolving(const struct af_dial *d)
{
    return d && d->state == D_LOOKUP;
}

static void on_done(evutil_socket_t fd, short what, void *arg)
{
    struct af_dial *d = arg;
    /* The dial is gone before the callback runs, which may then do
     * anything, the socket now being its own. */
    struct af_dial_result r = d->result;
    char addr[AF_DIAL_ADDR_LEN];
    memcpy(addr, d->last_addr, sizeof(addr));
    r.addr = addr;
    af_dial_cb cb = d->cb;
    void *cb_arg = d->arg;
    d->fd = -1;
    dial_free(d);
    cb(&r, cb_arg);
}

/* Enters DONE with stage (and fd when connected); the outcome leaves from
 * done_ev. */
static void dial_done(struct af_dial *d, enum af_dial_stage stage, int gai_error, int err)
{
    d->state = D_DONE;
    dial_release(d);
    d->result = (struct af_dial_result){
        .stage = stage, .fd = d->fd, .gai_error = gai_error, .err = err, .addr = d->last_addr};
    event_active(d->done_ev, EV_TIMEOUT, 1);
}

static void try_connect(struct af_dial *d);

static void on_connect(evutil_socket_t fd, short what, void *arg)
{
    struct af_dial *d = arg;
    int err = 0;
    socklen_t len = sizeof(err);
    if (getsockopt(d->fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0)
        err = errno;
    event_free(d->connect_ev);
    d->connect_ev = NULL;
    if (err) {
        close(d->fd);
        d->fd = -1;
        d->connect_errno = err;
        try_connect(d);
        return;
    }
    dial_done(d, AF_DIAL_CONNECTED, 0, 0);
}

/* Tries the next address of the lookup; when none is left, fails with the
 * last one's error. */
static void try_connect(struct af_dial *d)
{
    while (d->next_addr) {
        struct evutil_addrinfo *ai = d->next_addr;
        d->next_addr = ai->ai_next;
        af_dial_format_addr(ai->ai_addr, d->last_addr, sizeof(d->last_addr));
        int fd = socket(ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (fd < 0) {
            /* Out of descriptors or the like: another address would not
             * fare better. */
            dial_done(d, AF_DIAL_SOCKET, 0, errno);
            return;
        }
        if (d->flags & AF_DIAL_NODELAY) {
            int one = 1;
            setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        }
        if (connect(fd, ai->ai_addr, ai->ai_addrlen) == 0) {
            d->fd = fd;
            dial_done(d, AF_DIAL_CONNECTED, 0, 0);
            return;
        }
        if (errno == EINPROGRESS) {
            d->fd = fd;
            d->connect_ev = event_new(d->base, fd, EV_WRITE, on_connect, d);
            event_add(d->connect_ev, NULL);
            return;
        }
        d->connect_errno = errno;
        close(fd);
    }
    dial_done(d, AF_DIAL_CONNECT, 0, d->connect_errno ? d->connect_errno : ECONNREFUSED);
}

static void on_resolved(int result, struct evutil_addrinfo *res, void *arg)
{
    struct lookup_wait *w = arg;
    struct af_dial *d = w->d;
    free(w);
    if (!d) { /* cancelled */
        if (res)
            evutil_freeaddrinfo(res);
        return;
    }
    d->wait = NULL;
    if (result != 0 || !res) {
        if (res)
            evutil_freeaddrinfo(res);
        dial_done(d, AF_DIAL_LOOKUP, result, 0);
        return;
    }
    d->addrs = d->next_addr = res;
    d->state = D_CONNECT;
    try_connect(d);
}

struct af_dial *af_dial_start(struct event_base *base, struct evdns_base *dns, const char *host,
                              int port, unsigned flags, af_dial_cb cb, void *arg)
{
    struct af_dial *d = af_xcalloc(1, sizeof(*d));
    d->state = D_LOOKUP;
    d->base = base;
    d->flags = flags;
    d->cb = cb;
    d->arg = arg;
    d->fd = -1;
    d->done_ev = evtimer_new(base, on_done, d);
    struct evutil_addrinfo hints = {
        .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_protocol = IPPROTO_TCP};
    char portstr[8];
    snprintf(portstr, sizeof(portstr), "%d", port);
    struct lookup_wait *w = af_xcalloc(1, sizeof(*w));
    w->d = d;
    if (!dns) {
        struct evutil_addrinfo *res = NULL;
        int rc = evutil_getaddrinfo(host, portstr, &hints, &res);
        on_resolved(rc, res, w);
        return d;
    }
    d->wait = w;
    /* May call on_resolved before it returns (a literal address, a name in
     * /etc/hosts); w is then freed and d->wait cleared. */
    struct evdns_getaddrinfo_request *req =
        evdns_getaddrinfo(dns, host, portstr, &hints, on_resolved, w);
    if (d->wait == w)
        w->req = req;
    return d;
}
