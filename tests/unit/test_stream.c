/* Unit tests for proxy/stream.c: immediate and deferred flushes over a real
 * socket pair and a real event base. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/event.h>

#include "proxy/stream.h"

static void on_read(struct af_stream *s, void *arg) {}
static void on_event(struct af_stream *s, enum af_stream_event what, void *arg) {}
static const struct af_stream_ops ops = {on_read, NULL, on_event};

struct pair {
    struct event_base *base;
    struct af_stream s;
    int peer; /* the other end, blocking reads with MSG_DONTWAIT */
};

static void pair_open(struct pair *p)
{
    int sv[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    if (!p->base)
        p->base = event_base_new();
    assert_non_null(p->base);
    assert_int_equal(af_stream_init(&p->s, p->base, sv[0], &ops, NULL), 0);
    p->peer = sv[1];
}

/* What the peer can read now, without waiting. */
static ssize_t peer_read(struct pair *p, char *buf, size_t n)
{
    ssize_t r = recv(p->peer, buf, n, MSG_DONTWAIT);
    if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
        return 0;
    return r;
}

static void test_flush_writes_at_once(void **state)
{
    struct pair p = {0};
    pair_open(&p);
    evbuffer_add(p.s.out, "hello", 5);
    assert_true(af_stream_flush(&p.s));
    char buf[16];
    assert_int_equal(peer_read(&p, buf, sizeof(buf)), 5);
    assert_memory_equal(buf, "hello", 5);
    af_stream_release(&p.s);
    close(p.peer);
    event_base_free(p.base);
}

static void test_deferred_waits_for_flush_all(void **state)
{
    struct pair p = {0};
    pair_open(&p);
    evbuffer_add(p.s.out, "one", 3);
    af_stream_flush_deferred(&p.s);
    evbuffer_add(p.s.out, "two", 3);
    af_stream_flush_deferred(&p.s); /* queued once */
    char buf[16];
    assert_int_equal(peer_read(&p, buf, sizeof(buf)), 0);
    af_stream_flush_all();
    assert_int_equal(peer_read(&p, buf, sizeof(buf)), 6);
    assert_memory_equal(buf, "onetwo", 6);
    /* The list is empty again: a later deferral works the same way. */
    evbuffer_add(p.s.out, "3", 1);
    af_stream_flush_deferred(&p.s);
    af_stream_flush_all();
    assert_int_equal(peer_read(&p, buf, sizeof(buf)), 1);
    af_stream_release(&p.s);
    close(p.peer);
    event_base_free(p.base);
}

static void test_released_stream_leaves_the_list(void **state)
{
    struct pair a = {0}, b = {0}, c = {0};
    pair_open(&a);
    b.base = a.base;
    c.base = a.base;
    pair_open(&b);
    pair_open(&c);
    evbuffer_add(a.s.out, "a", 1);
    evbuffer_add(b.s.out, "b", 1);
    evbuffer_add(c.s.out, "c", 1);
    af_stream_flush_deferred(&a.s);
    af_stream_flush_deferred(&b.s);
    af_stream_flush_deferred(&c.s);
    /* The middle one, then the head of the list, go before the turn ends;
     * flush_all must not touch them (ASan runs this test too). */
    af_stream_release(&b.s);
    af_stream_release(&c.s);
    af_stream_flush_all();
    char buf[4];
    assert_int_equal(peer_read(&a, buf, sizeof(buf)), 1);
    assert_int_equal(buf[0], 'a');
    assert_int_equal(peer_read(&b, buf, sizeof(buf)), 0); /* closed unwritten */
    af_stream_release(&a.s);
    close(a.peer);
    close(b.peer);
    close(c.peer);
    event_base_free(a.base);
}

static void break_cb(evutil_socket_t fd, short what, void *arg)
{
    struct pair *p = arg;
    evbuffer_add(p->s.out, "x", 1);
    af_stream_flush_deferred(&p->s);
    event_base_loopbreak(p->base);
}

/* af_stream_loop flushes after the turn in which the loop was broken. */
static void test_loop_flushes_each_turn(void **state)
{
    struct pair p = {0};
    pair_open(&p);
    struct event *ev = event_new(p.base, -1, 0, break_cb, &p);
    struct timeval tv = {0, 1000};
    event_add(ev, &tv);
    assert_int_equal(af_stream_loop(p.base), 0);
    char buf[4];
    assert_int_equal(peer_read(&p, buf, sizeof(buf)), 1);
    event_free(ev);
    af_stream_release(&p.s);
    close(p.peer);
    event_base_free(p.base);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_flush_writes_at_once),
        cmocka_unit_test(test_deferred_waits_for_flush_all),
        cmocka_unit_test(test_released_stream_leaves_the_list),
        cmocka_unit_test(test_loop_flushes_each_turn),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
