/*
 * Unit tests of outbound connections on the I/O thread (apiserver/services/
 * dial.c), on a loop of their own with real loopback sockets: a connection
 * made, a port that refuses, a name that does not resolve, a dial
 * cancelled while it connects or while its lookup is in flight, and a
 * host whose first address refuses and whose second accepts.
 *
 * Nothing here needs the network: names are looked up either by the system
 * resolver for "localhost" (/etc/hosts) or through evdns from a DNS server
 * on a loopback UDP port, run by the test on the same loop (libevent's
 * evdns server), which answers what the test says or never answers.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>

#include <cmocka.h>
#include <event2/dns.h>
#include <event2/dns_struct.h>
#include <event2/event.h>
#include <event2/util.h>

#include "apiserver/services/dial.h"

/* ---- helpers -------------------------------------------------------------- */

/* What the callback saw. */
struct seen {
    int calls;
    struct af_dial_result r;
    char addr[AF_DIAL_ADDR_LEN];
};

static void on_dialed(const struct af_dial_result *r, void *arg)
{
    struct seen *s = arg;
    s->calls++;
    s->r = *r;
    snprintf(s->addr, sizeof(s->addr), "%s", r->addr);
    s->r.addr = s->addr;
}

static void on_guard(evutil_socket_t fd, short what, void *arg)
{
    *(int *)arg = 1;
}

/* Runs base until s has its call or ms pass; whichever comes first. */
static void run(struct event_base *base, struct seen *s, int ms)
{
    int expired = 0;
    struct event *guard = evtimer_new(base, on_guard, &expired);
    struct timeval tv = {.tv_sec = ms / 1000, .tv_usec = (ms % 1000) * 1000};
    evtimer_add(guard, &tv);
    while (!(s && s->calls) && !expired)
        event_base_loop(base, EVLOOP_ONCE);
    event_free(guard);
}

/* A TCP socket bound to the loopback address of family (AF_INET or
 * AF_INET6) at port (0: any), listening or not; -1 when it cannot be. */
static int tcp_bound(int family, int port, bool listening, int backlog)
{
    int fd = socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    int rc;
    if (family == AF_INET) {
        struct sockaddr_in sin = {.sin_family = AF_INET,
                                  .sin_port = htons((uint16_t)port),
                                  .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
        rc = bind(fd, (struct sockaddr *)&sin, sizeof(sin));
    } else {
        int one = 1;
        setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
        struct sockaddr_in6 sin6 = {.sin6_family = AF_INET6,
                                    .sin6_port = htons((uint16_t)port),
                                    .sin6_addr = IN6ADDR_LOOPBACK_INIT};
        rc = bind(fd, (struct sockaddr *)&sin6, sizeof(sin6));
    }
    if (rc != 0 || (listening && listen(fd, backlog) != 0)) {
        close(fd);
        return -1;
    }
    return fd;
}

static int port_of(int fd)
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof(ss);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&ss, &len), 0);
    return ss.ss_family == AF_INET ? ntohs(((struct sockaddr_in *)&ss)->sin_port)
                                   : ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
}

/* How many descriptors this process has open. */
static int open_fds(void)
{
    DIR *d = opendir("/proc/self/fd");
    assert_non_null(d);
    int n = 0;
    while (readdir(d))
        n++;
    closedir(d);
    return n;
}

/* Checks a connection the dial made: what it says matches the socket, the
 * socket is non-blocking and close-on-exec, and the listener has it. */
static void check_connected(const struct seen *s, int listener, const char *addr)
{
    assert_int_equal(s->calls, 1);
    assert_int_equal(s->r.stage, AF_DIAL_CONNECTED);
    assert_true(s->r.fd >= 0);
    assert_string_equal(s->r.addr, addr);
    assert_true(fcntl(s->r.fd, F_GETFL) & O_NONBLOCK);
    assert_true(fcntl(s->r.fd, F_GETFD) & FD_CLOEXEC);
    struct sockaddr_storage peer;
    socklen_t len = sizeof(peer);
    assert_int_equal(getpeername(s->r.fd, (struct sockaddr *)&peer, &len), 0);
    char shown[AF_DIAL_ADDR_LEN];
    af_dial_format_addr((struct sockaddr *)&peer, shown, sizeof(shown));
    assert_string_equal(shown, addr);
    int conn = accept(listener, NULL, NULL);
    assert_true(conn >= 0);
    close(conn);
}

/* ---- a DNS server on the test's loop ---------------------------------------- */

/* Answers "two.test" with ::1 (AAAA) and 127.0.0.1 (A), anything else with
 * "no such name"; or, when silent, nothing at all. */
struct dns_server {
    int udp;
    struct evdns_server_port *port;
    char ns[64]; /* "127.0.0.1:port", for evdns_base_nameserver_ip_add */
    bool silent;
    int questions;
};

static void on_question(struct evdns_server_request *req, void *arg)
{
    struct dns_server *srv = arg;
    srv->questions++;
    if (srv->silent)
        return; /* never answered: the request stays with the server port */
    int err = DNS_ERR_NOTEXIST;
    for (int i = 0; i < req->nquestions; i++) {
        const struct evdns_server_question *q = req->questions[i];
        if (strcasecmp(q->name, "two.test") != 0)
            continue;
        err = 0;
        if (q->type == EVDNS_TYPE_A) {
            uint32_t a = htonl(INADDR_LOOPBACK);
            evdns_server_request_add_a_reply(req, q->name, 1, &a, 60);
        } else if (q->type == EVDNS_TYPE_AAAA) {
            struct in6_addr a6 = IN6ADDR_LOOPBACK_INIT;
            evdns_server_request_add_aaaa_reply(req, q->name, 1, &a6, 60);
        }
    }
    evdns_server_request_respond(req, err);
}

static void dns_server_start(struct event_base *base, struct dns_server *srv, bool silent)
{
    memset(srv, 0, sizeof(*srv));
    srv->silent = silent;
    srv->udp = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    assert_true(srv->udp >= 0);
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    assert_int_equal(bind(srv->udp, (struct sockaddr *)&sin, sizeof(sin)), 0);
    socklen_t len = sizeof(sin);
    getsockname(srv->udp, (struct sockaddr *)&sin, &len);
    snprintf(srv->ns, sizeof(srv->ns), "127.0.0.1:%d", ntohs(sin.sin_port));
    /* A silent server reads nothing, so no request is ever left open. */
    if (!silent) {
        srv->port = evdns_add_server_port_with_base(base, srv->udp, 0, on_question, srv);
        assert_non_null(srv->port);
    }
}

static void dns_server_stop(struct dns_server *srv)
{
    if (srv->port)
        evdns_close_server_port(srv->port);
    close(srv->udp);
}

/* A resolver that asks only srv (no resolv.conf, no /etc/hosts, no search
 * list), and gives up after a second, so no test can wait long. */
static struct evdns_base *resolver(struct event_base *base, const struct dns_server *srv)
{
    struct evdns_base *dns = evdns_base_new(base, 0);
    assert_non_null(dns);
    assert_int_equal(evdns_base_nameserver_ip_add(dns, srv->ns), 0);
    evdns_base_set_option(dns, "timeout:", "1");
    evdns_base_set_option(dns, "attempts:", "1");
    return dns;
}

/* ---- tests -------------------------------------------------------------------- */

static void test_format_addr(void **state)
{
    char buf[AF_DIAL_ADDR_LEN];
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_port = htons(80)};
    inet_pton(AF_INET, "1.2.3.4", &sin.sin_addr);
    af_dial_format_addr((struct sockaddr *)&sin, buf, sizeof(buf));
    assert_string_equal(buf, "1.2.3.4:80");
    struct sockaddr_in6 sin6 = {.sin6_family = AF_INET6, .sin6_port = htons(8080)};
    inet_pton(AF_INET6, "::1", &sin6.sin6_addr);
    af_dial_format_addr((struct sockaddr *)&sin6, buf, sizeof(buf));
    assert_string_equal(buf, "[::1]:8080");
    /* A long IPv6 address and the largest port fit. */
    inet_pton(AF_INET6, "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", &sin6.sin6_addr);
    sin6.sin6_port = htons(65535);
    af_dial_format_addr((struct sockaddr *)&sin6, buf, sizeof(buf));
    assert_string_equal(buf, "[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff]:65535");
    struct sockaddr other = {.sa_family = AF_UNIX};
    af_dial_format_addr(&other, buf, sizeof(buf));
    assert_string_equal(buf, "?");
}

/* A literal address, through the blocking lookup and through evdns (which
 * answers a literal at once): connected, and never inside the start call. */
static void test_connect_loopback(void **state)
{
    struct event_base *base = event_base_new();
    struct evdns_base *dns = evdns_base_new(base, 0);
    int l = tcp_bound(AF_INET, 0, true, 8);
    assert_true(l >= 0);
    char addr[AF_DIAL_ADDR_LEN];
    snprintf(addr, sizeof(addr), "127.0.0.1:%d", port_of(l));
    for (int with_dns = 0; with_dns < 2; with_dns++) {
        struct seen s = {0};
        struct af_dial *d = af_dial_start(base, with_dns ? dns : NULL, "127.0.0.1", port_of(l),
                                          AF_DIAL_NODELAY, on_dialed, &s);
        assert_non_null(d);
        assert_int_equal(s.calls, 0); /* the rule of dial.h */
        assert_false(af_dial_resolving(d));
        run(base, &s, 5000);
        check_connected(&s, l, addr);
        close(s.r.fd);
    }
    close(l);
    evdns_base_free(dns, 0);
    event_base_free(base);
}

/* "localhost" through the system resolver (/etc/hosts, no network). */
static void test_connect_localhost(void **state)
{
    struct event_base *base = event_base_new();
    int l = tcp_bound(AF_INET, 0, true, 8);
    assert_true(l >= 0);
    char addr[AF_DIAL_ADDR_LEN];
    snprintf(addr, sizeof(addr), "127.0.0.1:%d", port_of(l));
    struct seen s = {0};
    af_dial_start(base, NULL, "localhost", port_of(l), 0, on_dialed, &s);
    assert_int_equal(s.calls, 0);
    run(base, &s, 5000);
    check_connected(&s, l, addr);
    close(s.r.fd);
    close(l);
    event_base_free(base);
}

/* A port bound but not listening refuses: the error names the address and
 * ECONNREFUSED, and no socket is left open. */
static void test_refused(void **state)
{
    struct event_base *base = event_base_new();
    int b = tcp_bound(AF_INET, 0, false, 0); /* keeps the port from anyone else */
    assert_true(b >= 0);
    char addr[AF_DIAL_ADDR_LEN];
    snprintf(addr, sizeof(addr), "127.0.0.1:%d", port_of(b));
    int fds = open_fds();
    struct seen s = {0};
    af_dial_start(base, NULL, "127.0.0.1", port_of(b), 0, on_dialed, &s);
    assert_int_equal(s.calls, 0);
    run(base, &s, 5000);
    assert_int_equal(s.calls, 1);
    assert_int_equal(s.r.stage, AF_DIAL_CONNECT);
    assert_int_equal(s.r.err, ECONNREFUSED);
    assert_int_equal(s.r.fd, -1);
    assert_string_equal(s.r.addr, addr);
    assert_int_equal(open_fds(), fds);
    close(b);
    event_base_free(base);
}

/* A name the DNS server says does not exist: the lookup fails with a
 * getaddrinfo error, and no address is named. */
static void test_lookup_fails(void **state)
{
    struct event_base *base = event_base_new();
    struct dns_server srv;
    dns_server_start(base, &srv, false);
    struct evdns_base *dns = resolver(base, &srv);
    struct seen s = {0};
    struct af_dial *d = af_dial_start(base, dns, "no-such-host.invalid", 80, 0, on_dialed, &s);
    assert_true(af_dial_resolving(d));
    run(base, &s, 5000);
    assert_int_equal(s.calls, 1);
    assert_int_equal(s.r.stage, AF_DIAL_LOOKUP);
    assert_int_not_equal(s.r.gai_error, 0);
    assert_int_equal(s.r.gai_error, EVUTIL_EAI_NONAME);
    assert_true(strlen(evutil_gai_strerror(s.r.gai_error)) > 0);
    assert_int_equal(s.r.fd, -1);
    assert_string_equal(s.r.addr, "");
    assert_true(srv.questions > 0); /* it was asked, not the network */
    evdns_base_free(dns, 0);
    dns_server_stop(&srv);
    event_base_free(base);
}

/* Cancelled right after the start call, before the outcome is handed
 * over, and cancelled while the connect is really pending (the listener's
 * queue is full, so the handshake gets no answer): no callback, no socket
 * left open, nothing leaked (ASan). */
static void test_cancel_connect(void **state)
{
    struct event_base *base = event_base_new();
    int l = tcp_bound(AF_INET, 0, true, 0);
    assert_true(l >= 0);
    fcntl(l, F_SETFL, fcntl(l, F_GETFL) | O_NONBLOCK); /* for the accepts below */
    int port = port_of(l);
    int fds = open_fds();

    struct seen s = {0};
    struct af_dial *d = af_dial_start(base, NULL, "127.0.0.1", port, 0, on_dialed, &s);
    af_dial_cancel(d);
    run(base, NULL, 50);
    assert_int_equal(s.calls, 0);
    assert_int_equal(open_fds(), fds);
    /* Whatever the kernel queued for it goes away. */
    int c;
    while ((c = accept4(l, NULL, NULL, SOCK_NONBLOCK)) >= 0)
        close(c);

    /* Fill the accept queue: connects that complete, until one stays
     * pending. */
    int fillers[16], n = 0;
    bool full = false;
    while (!full && n < 16) {
        int f = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        struct sockaddr_in sin = {.sin_family = AF_INET,
                                  .sin_port = htons((uint16_t)port),
                                  .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
        connect(f, (struct sockaddr *)&sin, sizeof(sin));
        fillers[n++] = f;
        struct pollfd p = {.fd = f, .events = POLLOUT};
        full = poll(&p, 1, 200) == 0;
    }
    if (!full) {
        for (int i = 0; i < n; i++)
            close(fillers[i]);
        close(l);
        event_base_free(base);
        skip(); /* this kernel answers every handshake */
    }
    fds = open_fds();
    d = af_dial_start(base, NULL, "127.0.0.1", port, 0, on_dialed, &s);
    run(base, NULL, 200);
    assert_int_equal(s.calls, 0); /* still connecting */
    assert_false(af_dial_resolving(d));
    af_dial_cancel(d);
    run(base, NULL, 50);
    assert_int_equal(s.calls, 0);
    assert_int_equal(open_fds(), fds);
    for (int i = 0; i < n; i++)
        close(fillers[i]);
    close(l);
    event_base_free(base);
}

/* Cancelled while the lookup is in flight (the nameserver never answers):
 * no callback; the resolver's late answer to the cancel finds the wait
 * alone and frees it (ASan: nothing leaks). */
static void test_cancel_lookup(void **state)
{
    struct event_base *base = event_base_new();
    struct dns_server srv;
    dns_server_start(base, &srv, true);
    struct evdns_base *dns = resolver(base, &srv);
    struct seen s = {0};
    struct af_dial *d = af_dial_start(base, dns, "pending.test", 80, 0, on_dialed, &s);
    run(base, NULL, 100);
    assert_int_equal(s.calls, 0);
    assert_true(af_dial_resolving(d));
    af_dial_cancel(d);
    run(base, NULL, 100);
    assert_int_equal(s.calls, 0);
    evdns_base_free(dns, 0);
    dns_server_stop(&srv);
    event_base_free(base);
}

/* The families of what a lookup of name gives, in its order. */
struct families {
    bool done;
    int n, fam[4];
};

static void on_families(int result, struct evutil_addrinfo *res, void *arg)
{
    struct families *f = arg;
    f->done = true;
    for (struct evutil_addrinfo *ai = res; ai && f->n < 4; ai = ai->ai_next)
        f->fam[f->n++] = ai->ai_family;
    if (res)
        evutil_freeaddrinfo(res);
}

/* "two.test" is ::1 and 127.0.0.1; only one of them listens, on a port the
 * other refuses. Both ways round the dial reaches the listener: in one of
 * the runs the first address refuses and the second accepts. */
static void test_second_address(void **state)
{
    int probe = tcp_bound(AF_INET6, 0, false, 0);
    if (probe < 0)
        skip(); /* no IPv6 loopback here */
    close(probe);
    struct event_base *base = event_base_new();
    struct dns_server srv;
    dns_server_start(base, &srv, false);
    struct evdns_base *dns = resolver(base, &srv);
    /* Both addresses come back, one of each family (the order is the
     * resolver's). */
    struct families got = {0};
    struct evutil_addrinfo hints = {
        .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_protocol = IPPROTO_TCP};
    evdns_getaddrinfo(dns, "two.test", "80", &hints, on_families, &got);
    for (int i = 0; i < 100 && !got.done; i++)
        event_base_loop(base, EVLOOP_ONCE);
    assert_int_equal(got.n, 2);
    assert_int_not_equal(got.fam[0], got.fam[1]);
    const int families[2] = {AF_INET6, AF_INET};
    for (int i = 0; i < 2; i++) {
        int fam = families[i], other = families[1 - i];
        /* A listener on fam whose port is bound, not listening, on other. */
        int l = -1, b = -1;
        for (int tries = 0; tries < 20 && b < 0; tries++) {
            if (l >= 0)
                close(l);
            l = tcp_bound(fam, 0, true, 8);
            assert_true(l >= 0);
            b = tcp_bound(other, port_of(l), false, 0);
        }
        assert_true(b >= 0);
        char addr[AF_DIAL_ADDR_LEN];
        snprintf(addr, sizeof(addr), fam == AF_INET6 ? "[::1]:%d" : "127.0.0.1:%d", port_of(l));
        struct seen s = {0};
        af_dial_start(base, dns, "two.test", port_of(l), 0, on_dialed, &s);
        run(base, &s, 5000);
        check_connected(&s, l, addr);
        close(s.r.fd);
        close(l);
        close(b);
    }
    evdns_base_free(dns, 0);
    dns_server_stop(&srv);
    event_base_free(base);
}

/* Nothing listens on either address: the error is the last address's. */
static void test_all_refuse(void **state)
{
    int probe = tcp_bound(AF_INET6, 0, false, 0);
    if (probe < 0)
        skip();
    struct event_base *base = event_base_new();
    struct dns_server srv;
    dns_server_start(base, &srv, false);
    struct evdns_base *dns = resolver(base, &srv);
    int b = tcp_bound(AF_INET, port_of(probe), false, 0);
    if (b < 0) {
        close(probe);
        evdns_base_free(dns, 0);
        dns_server_stop(&srv);
        event_base_free(base);
        skip(); /* the port is taken on IPv4; rare */
    }
    struct seen s = {0};
    af_dial_start(base, dns, "two.test", port_of(probe), 0, on_dialed, &s);
    run(base, &s, 5000);
    assert_int_equal(s.calls, 1);
    assert_int_equal(s.r.stage, AF_DIAL_CONNECT);
    assert_int_equal(s.r.err, ECONNREFUSED);
    char v4[AF_DIAL_ADDR_LEN], v6[AF_DIAL_ADDR_LEN];
    snprintf(v4, sizeof(v4), "127.0.0.1:%d", port_of(probe));
    snprintf(v6, sizeof(v6), "[::1]:%d", port_of(probe));
    if (strcmp(s.r.addr, v4) != 0 && strcmp(s.r.addr, v6) != 0)
        fail_msg("the error names %s, neither of the addresses", s.r.addr);
    close(b);
    close(probe);
    evdns_base_free(dns, 0);
    dns_server_stop(&srv);
    event_base_free(base);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_format_addr),       cmocka_unit_test(test_connect_loopback),
        cmocka_unit_test(test_connect_localhost), cmocka_unit_test(test_refused),
        cmocka_unit_test(test_lookup_fails),      cmocka_unit_test(test_cancel_connect),
        cmocka_unit_test(test_cancel_lookup),     cmocka_unit_test(test_second_address),
        cmocka_unit_test(test_all_refuse),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
