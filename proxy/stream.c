#include "proxy/stream.h"

#include <errno.h>
#include <string.h>
#include <unistd.h>

#include <event2/buffer.h>

/*
 * Reading. A read goes into one scratch buffer shared by every stream
 * (the front end is one thread) and only the bytes that came are appended
 * to the stream's input: a 100-byte request costs its connection a 1 KiB
 * buffer chain, not the 16 KiB an empty reservation would take, so a burst
 * of many connections leaves little heap behind. When a read fills the
 * whole scratch buffer, a large body is flowing: the stream switches to
 * reading straight into reserved space (no copy) until a read comes back
 * short. BULK_CHUNK keeps such a chain, header included, within 16 KiB
 * (libevent rounds chain sizes up to a power of two).
 */
#define SCRATCH_SIZE 16384
#define BULK_CHUNK (16384 - 256)
static char scratch[SCRATCH_SIZE];

/*
 * Buffers of idle streams. A keep-alive connection between requests has
 * nothing buffered; af_stream_park() gives its two evbuffers back here and
 * the next read takes them again, so an idle connection holds none.
 */
#define SPARE_BUFFERS 64
static struct evbuffer *spare[SPARE_BUFFERS];
static int n_spare;

static struct evbuffer *buffer_get(void)
{
    if (n_spare > 0)
        return spare[--n_spare];
    struct evbuffer *b = evbuffer_new();
    /* Lets evbuffer_add_file() segments go out with sendfile(2) instead of
     * being mapped into memory (harmless on an input buffer). */
    if (b)
        evbuffer_set_flags(b, EVBUFFER_FLAG_DRAINS_TO_FD);
    return b;
}

static void buffer_put(struct evbuffer *b)
{
    if (!b)
        return;
    if (n_spare < SPARE_BUFFERS && evbuffer_get_length(b) == 0) {
        spare[n_spare++] = b;
        return;
    }
    evbuffer_free(b);
}

bool af_stream_unpark(struct af_stream *s)
{
    if (s->in)
        return true;
    s->in = buffer_get();
    s->out = buffer_get();
    if (s->in && s->out)
        return true;
    buffer_put(s->in);
    buffer_put(s->out);
    s->in = s->out = NULL;
    return false;
}

static void put_in(struct af_stream *s)
{
    if (s->stale_in && s->in)
        evbuffer_free(s->in);
    else
        buffer_put(s->in);
    s->stale_in = false;
    s->in = NULL;
}

void af_stream_park(struct af_stream *s)
{
    if (!s->in || s->fd < 0 || s->wr_added || s->failed || s->connecting ||
        evbuffer_get_length(s->in) > 0 || evbuffer_get_length(s->out) > 0)
        return;
    put_in(s);
    buffer_put(s->out);
    s->out = NULL;
}

static size_t in_length(const struct af_stream *s)
{
    return s->in ? evbuffer_get_length(s->in) : 0;
}

static void update_read(struct af_stream *s)
{
    bool want = s->reading && !s->failed && !s->connecting && in_length(s) < s->read_max;
    if (want && !s->rd_added) {
        event_add(&s->rd, NULL);
        s->rd_added = true;
    } else if (!want && s->rd_added) {
        event_del(&s->rd);
        s->rd_added = false;
    }
}

static void write_cb(evutil_socket_t fd, short what, void *arg);

static struct event *wr_event(struct af_stream *s)
{
    if (!s->wr)
        s->wr = event_new(event_get_base(&s->rd), s->fd, EV_WRITE | EV_PERSIST, write_cb, s);
    return s->wr;
}

static void want_write(struct af_stream *s, bool on)
{
    if (on && !s->wr_added) {
        event_add(wr_event(s), NULL);
        s->wr_added = true;
    } else if (!on && s->wr_added) {
        event_del(s->wr);
        s->wr_added = false;
    }
}

/* Queues a failure for on_event: reported from the loop, never inside the
 * owner's own call. */
static void fail_later(struct af_stream *s, int err)
{
    if (s->failed)
        return;
    s->failed = true;
    s->error = err;
    update_read(s);
    want_write(s, false);
    event_active(wr_event(s), EV_WRITE, 0);
}

/* One read(2) into s->in, at most room bytes; returns what read returned. */
static ssize_t read_some(struct af_stream *s, size_t room)
{
    ssize_t n;
    if (!s->bulk) {
        if (room > SCRATCH_SIZE)
            room = SCRATCH_SIZE;
        n = read(s->fd, scratch, room);
        if (n > 0 && evbuffer_add(s->in, scratch, (size_t)n) < 0) {
            errno = ENOMEM;
            return -1;
        }
        s->bulk = (size_t)n == SCRATCH_SIZE;
        return n;
    }
    /* read(2) straight into reserved space: evbuffer_read() would first ask
     * the kernel how much is there (an ioctl per read). */
    if (room > BULK_CHUNK)
        room = BULK_CHUNK;
    struct evbuffer_iovec v;
    if (evbuffer_reserve_space(s->in, (ev_ssize_t)room, &v, 1) != 1) {
        errno = ENOMEM;
        return -1;
    }
    n = read(s->fd, v.iov_base, v.iov_len < room ? v.iov_len : room);
    v.iov_len = n > 0 ? (size_t)n : 0;
    evbuffer_commit_space(s->in, &v, 1);
    s->bulk = (size_t)n == room;
    /* Nothing read: an empty reserved chain may stay in the buffer, which
     * then must not go back to the spare list. */
    if (n <= 0)
        s->stale_in = true;
    return n;
}

static void read_cb(evutil_socket_t fd, short what, void *arg)
{
    struct af_stream *s = arg;
    if (!af_stream_unpark(s)) {
        errno = ENOMEM;
        s->failed = true;
        s->error = errno;
        update_read(s);
        s->ops->on_event(s, AF_STREAM_ERROR, s->arg);
        return;
    }
    ssize_t n = read_some(s, s->read_max - evbuffer_get_length(s->in));
    if (n < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
            return;
        s->failed = true;
        s->error = errno;
        update_read(s);
        s->ops->on_event(s, AF_STREAM_ERROR, s->arg);
        return;
    }
    if (n == 0) {
        /* Stop watching a socket that will stay readable forever. */
        s->reading = false;
        update_read(s);
        s->ops->on_event(s, AF_STREAM_EOF, s->arg);
        return;
    }
    update_read(s);
    s->ops->on_read(s, s->arg);
}

static int write_now(struct af_stream *s)
{
    while (s->out && evbuffer_get_length(s->out) > 0) {
        int n = evbuffer_write(s->out, s->fd);
        if (n < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                return 0;
            if (errno == EINTR)
                continue;
            return -1;
        }
        if (n == 0)
            return 0;
    }
    return 0;
}

static void write_cb(evutil_socket_t fd, short what, void *arg)
{
    struct af_stream *s = arg;
    if (s->failed) {
        /* A failure queued by fail_later, or reported now. */
        s->ops->on_event(s, AF_STREAM_ERROR, s->arg);
        return;
    }
    if (s->connecting) {
        int err = 0;
        socklen_t len = sizeof(err);
        if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
            err = errno;
        s->connecting = false;
        if (err) {
            s->failed = true;
            s->error = err;
            want_write(s, false);
            s->ops->on_event(s, AF_STREAM_ERROR, s->arg);
            return;
        }
        want_write(s, s->out && evbuffer_get_length(s->out) > 0);
        update_read(s);
        s->ops->on_event(s, AF_STREAM_CONNECTED, s->arg);
        return;
    }
    if (write_now(s) < 0) {
        s->failed = true;
        s->error = errno;
        want_write(s, false);
        update_read(s);
        s->ops->on_event(s, AF_STREAM_ERROR, s->arg);
        return;
    }
    size_t left = s->out ? evbuffer_get_length(s->out) : 0;
    want_write(s, left > 0);
    if (left <= s->low_water && s->ops->on_drain)
        s->ops->on_drain(s, s->arg);
}

static int setup(struct af_stream *s, struct event_base *base, evutil_socket_t fd,
                 const struct af_stream_ops *ops, void *arg)
{
    memset(s, 0, sizeof(*s));
    s->fd = fd;
    s->ops = ops;
    s->arg = arg;
    s->read_max = 256 * 1024;
    if (!af_stream_unpark(s))
        return -1;
    event_assign(&s->rd, base, fd, EV_READ | EV_PERSIST, read_cb, s);
    return 0;
}

int af_stream_init(struct af_stream *s, struct event_base *base, evutil_socket_t fd,
                   const struct af_stream_ops *ops, void *arg)
{
    evutil_make_socket_nonblocking(fd);
    if (setup(s, base, fd, ops, arg) < 0) {
        s->fd = -1;
        return -1;
    }
    return 0;
}

int af_stream_connect(struct af_stream *s, struct event_base *base, const struct sockaddr *addr,
                      socklen_t len, const struct af_stream_ops *ops, void *arg)
{
    evutil_socket_t fd = socket(addr->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    if (setup(s, base, fd, ops, arg) < 0) {
        close(fd);
        s->fd = -1;
        errno = ENOMEM;
        return -1;
    }
    if (connect(fd, addr, len) == 0)
        return 1;
    if (errno == EINPROGRESS) {
        s->connecting = true;
        want_write(s, true);
        return 0;
    }
    int e = errno;
    af_stream_release(s);
    errno = e;
    return -1;
}

/* Streams with a deferred flush, oldest first: the front end runs on one
 * thread. In the order their requests were read, so that the request that
 * has waited longest reaches its instance first (a stack served it last and
 * widened the spread of latencies). */
static struct af_stream *deferred_head;
static struct af_stream **deferred_tail = &deferred_head;

static void undefer(struct af_stream *s)
{
    if (!s->deferred)
        return;
    if (s->next_deferred)
        s->next_deferred->prev_deferred = s->prev_deferred;
    else
        deferred_tail = s->prev_deferred;
    *s->prev_deferred = s->next_deferred;
    s->deferred = false;
    s->next_deferred = NULL;
    s->prev_deferred = NULL;
}

void af_stream_flush_deferred(struct af_stream *s)
{
    if (s->deferred || s->fd < 0)
        return;
    s->deferred = true;
    s->next_deferred = NULL;
    s->prev_deferred = deferred_tail;
    *deferred_tail = s;
    deferred_tail = &s->next_deferred;
}

void af_stream_flush_all(void)
{
    while (deferred_head) {
        struct af_stream *s = deferred_head;
        undefer(s);
        af_stream_flush(s);
    }
}

int af_stream_loop(struct event_base *base, void (*after_turn)(void))
{
    for (;;) {
        int r = event_base_loop(base, EVLOOP_ONCE);
        af_stream_flush_all();
        if (after_turn)
            after_turn();
        if (r != 0 || event_base_got_break(base) || event_base_got_exit(base))
            return r < 0 ? -1 : 0;
    }
}

void af_stream_release(struct af_stream *s)
{
    if (s->fd < 0)
        return;
    undefer(s);
    event_del(&s->rd);
    if (s->wr)
        event_free(s->wr);
    s->wr = NULL;
    put_in(s);
    buffer_put(s->out);
    close(s->fd);
    s->fd = -1;
    s->in = s->out = NULL;
}

void af_stream_stop(struct af_stream *s)
{
    s->reading = false;
    s->failed = true; /* nothing more is reported */
    event_del(&s->rd);
    if (s->wr)
        event_del(s->wr);
    s->rd_added = s->wr_added = false;
}

void af_stream_read(struct af_stream *s, bool on)
{
    s->reading = on;
    update_read(s);
}

void af_stream_consumed(struct af_stream *s)
{
    if (s->reading && !s->rd_added)
        update_read(s);
}

bool af_stream_flush(struct af_stream *s)
{
    if (s->failed || s->connecting)
        return false;
    if (s->wr_added)
        return false; /* the socket was full: the write event takes it on */
    if (write_now(s) < 0) {
        fail_later(s, errno);
        return false;
    }
    bool empty = !s->out || evbuffer_get_length(s->out) == 0;
    want_write(s, !empty);
    return empty;
}
