/*
 * urlfetch_pool — connections urlfetch keeps open after a response, for the
 * next fetch to the same place (docs/services.md, "urlfetch", "Connection
 * reuse"). It lives on the API I/O thread (apiserver/service.h,
 * af_io_local) and only that thread touches it.
 *
 * A connection is parked under a key that says what it can serve: the
 * scheme, the host as written in the URL (lower case) and port, the
 * outbound proxy it goes through, and for https whether the server's
 * certificate was checked. A TLS connection checked against one host thus
 * never serves another host, nor a fetch that must check the certificate
 * when this one did not; an http connection serves any fetch to its origin.
 *
 * Bounds: at most UF_POOL_PER_KEY idle connections per key (the oldest of
 * the key makes room for a newer one), UF_POOL_MAX in all (the oldest
 * anywhere makes room), each closed after UF_POOL_IDLE_S idle seconds —
 * below the 5 s keep-alive timeout of Apache httpd, Node.js and uvicorn,
 * the shortest common ones, so that we usually close first — and at once
 * when the server closes it or sends anything while it is idle (the idle
 * connection is read all the time, so its end is seen). The number of
 * connections in use is not bounded here: a fetch never waits for another
 * to give its connection back.
 *
 * A fetch takes the connection parked last under its key (the freshest,
 * the least likely to have been closed meanwhile) after a check that the
 * socket has neither ended nor received anything (a MSG_PEEK that must find
 * nothing to read): a close the loop has not processed yet is caught there,
 * before the request is sent.
 */
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>

#include "apiserver/services/urlfetch.h"
#include "common/log.h"
#include "common/xalloc.h"

struct idle_conn {
    struct idle_conn *prev, *next; /* pool->conns, the newest first */
    struct uf_pool *pool;
    char *key;
    struct bufferevent *bev;
    int fd; /* bev's socket, for the liveness check */
    char addr[UF_ADDR_LEN];
};

struct uf_pool {
    struct idle_conn *head, *tail;
    size_t n;
};

/* ---- the decisions -------------------------------------------------------- */

char *uf_pool_key(const struct uf_url *u, const struct uf_proxy *proxy, bool validate)
{
    /* The host is lower case (names are case-insensitive) and bracketed
     * when it is an IPv6 address; a URL's host has no space, so the fields
     * cannot run into each other. */
    bool v6 = strchr(u->host, ':') != NULL;
    char *key = af_xasprintf("%s://%s%s%s:%d via %s%s", u->https ? "https" : "http", v6 ? "[" : "",
                             u->host, v6 ? "]" : "", u->port, proxy ? proxy->authority : "-",
                             !u->https  ? ""
                             : validate ? " verified"
                                        : " unverified");
    for (char *c = key; *c; c++)
        *c = (char)tolower((unsigned char)*c);
    return key;
}

/* Whether the comma-separated list value has token (case-insensitive). */
static bool list_has(const char *value, const char *token)
{
    size_t tl = strlen(token);
    for (const char *p = value; *p;) {
        p += strspn(p, ", \t");
        size_t n = strcspn(p, ",");
        size_t m = n;
        while (m > 0 && (p[m - 1] == ' ' || p[m - 1] == '\t'))
            m--;
        if (m == tl && strncasecmp(p, token, tl) == 0)
            return true;
        p += n;
    }
    return false;
}

bool uf_pool_reusable(const struct uf_reuse *r)
{
    /* The message must have ended by its own framing, read to its last
     * byte and no further, with the whole request written: anything else
     * leaves the connection in an unknown place of the stream. */
    if (!r->framed || r->cut || r->leftover || r->unsent)
        return false;
    /* 101 hands the connection to another protocol. */
    if (r->status == 101)
        return false;
    bool close = false, keep_alive = false;
    for (size_t i = 0; i < r->n_headers; i++) {
        if (strcasecmp(r->headers[i].key, "Connection") != 0)
            continue;
        close = close || list_has(r->headers[i].value, "close");
        keep_alive = keep_alive || list_has(r->headers[i].value, "keep-alive");
    }
    /* RFC 9112 section 9.3: HTTP/1.1 persists unless "close"; HTTP/1.0
     * only with "keep-alive" (and never with "close"). */
    if (close || r->http_major != 1)
        return false;
    return r->http_minor >= 1 || keep_alive;
}

/* ---- the pool ------------------------------------------------------------- */

static void conn_unlink(struct idle_conn *c)
{
    struct uf_pool *p = c->pool;
    if (c->prev)
        c->prev->next = c->next;
    else
        p->head = c->next;
    if (c->next)
        c->next->prev = c->prev;
    else
        p->tail = c->prev;
    p->n--;
}

static void conn_close(struct idle_conn *c)
{
    conn_unlink(c);
    bufferevent_free(c->bev); /* closes the socket, frees the TLS session */
    free(c->key);
    free(c);
}

/* Anything from the server while idle (data, its close, an error, the idle
 * timeout): the connection can serve no further request. */
static void on_idle_read(struct bufferevent *bev, void *arg)
{
    struct idle_conn *c = arg;
    af_debug("urlfetch: the idle connection to %s (%s) sent data; closed", c->key, c->addr);
    conn_close(c);
}

static void on_idle_event(struct bufferevent *bev, short what, void *arg)
{
    struct idle_conn *c = arg;
    af_debug("urlfetch: the idle connection to %s (%s) %s; closed", c->key, c->addr,
             what & BEV_EVENT_TIMEOUT ? "timed out" : "was closed by the server");
    conn_close(c);
}

static void *pool_create(struct event_base *base)
{
    return af_xcalloc(1, sizeof(struct uf_pool));
}

static void pool_destroy(void *state)
{
    struct uf_pool *p = state;
    while (p->head)
        conn_close(p->head);
    free(p);
}

const struct af_io_local_ops uf_pool_local = {
    .create = pool_create,
    .destroy = pool_destroy,
};

void uf_pool_put(struct uf_pool *p, const char *key, struct bufferevent *bev, int fd,
                 const char *addr)
{
    /* The oldest of this key, then the oldest of all, make room. */
    size_t same = 0;
    struct idle_conn *oldest_same = NULL;
    for (struct idle_conn *c = p->head; c; c = c->next)
        if (strcmp(c->key, key) == 0) {
            same++;
            oldest_same = c;
        }
    if (same >= UF_POOL_PER_KEY)
        conn_close(oldest_same);
    else if (p->n >= UF_POOL_MAX)
        conn_close(p->tail);

    struct idle_conn *c = af_xcalloc(1, sizeof(*c));
    c->pool = p;
    c->key = af_xstrdup(key);
    c->bev = bev;
    c->fd = fd;
    snprintf(c->addr, sizeof(c->addr), "%s", addr);
    c->next = p->head;
    if (p->head)
        p->head->prev = c;
    else
        p->tail = c;
    p->head = c;
    p->n++;

    struct timeval idle = {.tv_sec = UF_POOL_IDLE_S};
    bufferevent_setcb(bev, on_idle_read, NULL, on_idle_event, c);
    bufferevent_set_timeouts(bev, &idle, NULL);
    bufferevent_disable(bev, EV_WRITE);
    bufferevent_enable(bev, EV_READ);
}

/* Whether the socket is still open with nothing to read: a MSG_PEEK that
 * would block. 0 is the server's close; data or an error end it too. */
static bool socket_quiet(int fd)
{
    char b;
    ssize_t n = recv(fd, &b, 1, MSG_PEEK | MSG_DONTWAIT);
    return n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK);
}

struct bufferevent *uf_pool_take(struct uf_pool *p, const char *key, int *fd, char *addr,
                                 size_t addrlen)
{
    struct idle_conn *c = p->head;
    while (c) {
        struct idle_conn *next = c->next;
        if (strcmp(c->key, key) != 0) {
            c = next;
            continue;
        }
        if (!socket_quiet(c->fd) || evbuffer_get_length(bufferevent_get_input(c->bev)) > 0) {
            af_debug("urlfetch: the idle connection to %s (%s) was closed by the server; "
                     "not used",
                     c->key, c->addr);
            conn_close(c);
            c = next;
            continue;
        }
        struct bufferevent *bev = c->bev;
        *fd = c->fd;
        snprintf(addr, addrlen, "%s", c->addr);
        bufferevent_disable(bev, EV_READ);
        bufferevent_set_timeouts(bev, NULL, NULL);
        bufferevent_setcb(bev, NULL, NULL, NULL, NULL);
        conn_unlink(c);
        free(c->key);
        free(c);
        return bev;
    }
    return NULL;
}
