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
    assert_int_equal(af_stream_loop(p.base, NULL), 0);
    char buf[4];
    assert_int_equal(peer_read(&p, buf, sizeof(buf)), 1);
    event_free(ev);
    af_stream_release(&p.s);
    close(p.peer);
    event_base_free(p.base);
}

struct got {
    int reads;
    size_t bytes;
};

static void count_read(struct af_stream *s, void *arg)
{
    struct got *g = arg;
    g->reads++;
    g->bytes = evbuffer_get_length(s->in);
    event_base_loopbreak(event_get_base(&s->rd));
}
static const struct af_stream_ops count_ops = {count_read, NULL, on_event};

/* A parked stream holds no buffers; the next read takes them again. */
static void test_park_and_read_again(void **state)
{
    int sv[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    struct event_base *base = event_base_new();
    struct af_stream s;
    struct got g = {0};
    assert_int_equal(af_stream_init(&s, base, sv[0], &count_ops, &g), 0);
    af_stream_read(&s, true);

    /* Not while something is buffered. */
    evbuffer_add(s.out, "x", 1);
    af_stream_park(&s);
    assert_non_null(s.in);
    assert_true(af_stream_flush(&s));
    af_stream_park(&s);
    assert_null(s.in);
    assert_null(s.out);
    assert_true(af_stream_flush(&s)); /* nothing to write is not an error */

    assert_int_equal(write(sv[1], "hello", 5), 5);
    event_base_dispatch(base);
    assert_int_equal(g.reads, 1);
    assert_int_equal(g.bytes, 5);
    assert_non_null(s.out);

    /* Writing after a park: unpark first. */
    evbuffer_drain(s.in, 5);
    af_stream_park(&s);
    assert_true(af_stream_unpark(&s));
    evbuffer_add(s.out, "ok", 2);
    assert_true(af_stream_flush(&s));
    char buf[8];
    assert_int_equal(read(sv[1], buf, sizeof(buf)), 3); /* "x" and "ok" */
    af_stream_release(&s);
    close(sv[1]);
    event_base_free(base);
}

/* A read larger than the scratch buffer arrives whole, over several reads
 * (the bulk path), and nothing is lost at the switch. */
static void test_large_input_arrives_whole(void **state)
{
    int sv[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    int big = 1 << 20;
    setsockopt(sv[1], SOL_SOCKET, SO_SNDBUF, &big, sizeof(big));
    struct event_base *base = event_base_new();
    struct af_stream s;
    struct got g = {0};
    assert_int_equal(af_stream_init(&s, base, sv[0], &count_ops, &g), 0);
    s.read_max = 1 << 20;
    af_stream_read(&s, true);
    static char data[100000];
    for (size_t i = 0; i < sizeof(data); i++)
        data[i] = (char)(i * 7);
    size_t sent = 0;
    size_t got = 0;
    char *copy = test_malloc(sizeof(data));
    while (got < sizeof(data)) {
        if (sent < sizeof(data)) {
            ssize_t n = send(sv[1], data + sent, sizeof(data) - sent, MSG_DONTWAIT);
            if (n > 0)
                sent += (size_t)n;
        }
        event_base_loop(base, EVLOOP_ONCE);
        size_t n = evbuffer_get_length(s.in);
        evbuffer_remove(s.in, copy + got, n);
        got += n;
        af_stream_consumed(&s);
    }
    assert_memory_equal(copy, data, sizeof(data));
    test_free(copy);
    af_stream_release(&s);
    close(sv[1]);
    event_base_free(base);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_flush_writes_at_once),
        cmocka_unit_test(test_deferred_waits_for_flush_all),
        cmocka_unit_test(test_released_stream_leaves_the_list),
        cmocka_unit_test(test_loop_flushes_each_turn),
        cmocka_unit_test(test_park_and_read_again),
        cmocka_unit_test(test_large_input_arrives_whole),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
