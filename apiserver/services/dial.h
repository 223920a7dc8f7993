/*
 * dial — outbound TCP connections for deferred work on the API I/O thread
 * (apiserver/service.h): urlfetch's fetches and proxies, mail's SMTP
 * sessions. One dial looks up a host (evdns on the loop, or the system's
 * blocking getaddrinfo when the I/O thread has no resolver: af_io_dns),
 * then tries its addresses in the order the lookup gave them, each with a
 * non-blocking connect, until one answers.
 *
 * The rule for callers: the callback never runs inside af_dial_start().
 * A literal address, a name in /etc/hosts or the blocking lookup resolve
 * before the start call returns, and a loopback connect may succeed or be
 * refused there too, but the outcome is always handed over from a
 * zero-delay event on the loop (in the same pass of the loop, so it costs
 * no wait). The handle af_dial_start() returned is so always stored before
 * anything can happen to it, and the caller may cancel it from any of its
 * own callbacks. It stays valid until the callback runs or
 * af_dial_cancel(), whichever comes first; after either it is gone.
 *
 * Internal to apiserver/services/; prefix af_dial_. Only the I/O thread
 * (or a test's own loop) touches a dial.
 */
#ifndef AF_DIAL_H
#define AF_DIAL_H

#include <stdbool.h>
#include <stddef.h>

/* Room for "[ipv6]:port", as in messages. */
#define AF_DIAL_ADDR_LEN 56

/* How a dial ended. */
enum af_dial_stage {
    AF_DIAL_CONNECTED, /* fd is connected */
    AF_DIAL_LOOKUP,    /* the host did not resolve: gai_error */
    AF_DIAL_SOCKET,    /* no socket could be made for addr: err (errno); the
                          addresses after it are not tried (out of descriptors,
                          another would fare no better) */
    AF_DIAL_CONNECT,   /* every address refused or failed; err and addr are the last one's */
};

struct af_dial_result {
    enum af_dial_stage stage;
    int fd;           /* CONNECTED: the socket (non-blocking, close-on-exec), owned by
                         the callback from now on; -1 otherwise */
    int gai_error;    /* LOOKUP: an EVUTIL_EAI_* code, for evutil_gai_strerror() */
    int err;          /* SOCKET, CONNECT: an errno (ECONNREFUSED when no address
                         was left to try) */
    const char *addr; /* the address reached or last tried, "1.2.3.4:80" or
                         "[::1]:80"; "" after LOOKUP. Valid during the callback. */
};

/* The one call a dial makes; r is valid only while it runs, and the dial
 * is already gone (its handle must not be cancelled). */
typedef void (*af_dial_cb)(const struct af_dial_result *r, void *arg);

/* Options. */
#define AF_DIAL_NODELAY 1u /* TCP_NODELAY on every socket tried */

struct event_base;
struct evdns_base;
struct af_dial;

/* Starts connecting to host (a name or a literal address, without []) at
 * port on base; dns may be NULL: the blocking lookup. cb gets exactly one
 * call later from base's loop, unless the dial is cancelled first. Returns
 * the dial (never NULL). */
struct af_dial *af_dial_start(struct event_base *base, struct evdns_base *dns, const char *host,
                              int port, unsigned flags, af_dial_cb cb, void *arg);

/* Stops d wherever it is (a lookup in flight, a connect pending, an
 * outcome not yet handed over) and frees it: cb is never called. A lookup
 * the resolver still answers later is dropped then. NULL is a no-op. */
void af_dial_cancel(struct af_dial *d);

/* Whether d is still looking up its host (else it is connecting, or done;
 * NULL: false), for messages such as a deadline's. */
bool af_dial_resolving(const struct af_dial *d);

/* "1.2.3.4:80" or "[::1]:80" (an address of another family: "?"). */
struct sockaddr;
void af_dial_format_addr(const struct sockaddr *sa, char *buf, size_t len);

/*
 * libevent's bufferevent constructors fail only when they cannot allocate
 * (or add an event). What they have freed by then differs: an openssl one
 * may have freed the SSL, closed the socket or freed the underlying
 * bufferevent, or not, depending on how far it got and on libevent's
 * version. Rather than guess, and as for any allocation failure
 * (common/xalloc.h), appfront stops: ownership passes to the new
 * bufferevent at the call, always. Returns bev; when it is NULL, prints
 * "out of memory making <what>" and aborts. what: e.g. "the TLS
 * connection of a fetch".
 */
struct bufferevent;
struct bufferevent *af_dial_bev_made(struct bufferevent *bev, const char *what);

#endif
