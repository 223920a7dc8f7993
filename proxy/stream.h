/*
 * stream — a non-blocking socket with an input and an output buffer, for
 * the front end's hot path (client connections and instance connections).
 *
 * It replaces libevent's bufferevent there for two reasons measured in
 * docs/benchmarks.md. A bufferevent registers its write event whenever data
 * is queued and removes it once written: two epoll_ctl calls and one extra
 * loop turn per response, in each direction. A stream writes at once
 * (af_stream_flush) and only waits for writability when the socket's buffer
 * is full. And its events are embedded, not allocated, which keeps an idle
 * keep-alive connection small.
 *
 * Callbacks run from the event loop only, never from inside a call the
 * owner made (af_stream_flush reports a failure through the loop).
 *
 * Main thread only: the read scratch buffer, the spare buffers and the list
 * of deferred flushes are shared by every stream of the process.
 */
#ifndef AF_STREAM_H
#define AF_STREAM_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/socket.h>

#include <event2/event.h>
#include <event2/event_struct.h>

struct evbuffer;
struct af_stream;

enum af_stream_event {
    AF_STREAM_EOF,       /* the peer closed its side */
    AF_STREAM_ERROR,     /* a read, write or connect failed (errno saved) */
    AF_STREAM_CONNECTED, /* a connect in progress completed */
};

struct af_stream_ops {
    /* New bytes are in s->in. */
    void (*on_read)(struct af_stream *s, void *arg);
    /* The output fell to low_water or below after waiting for the socket. */
    void (*on_drain)(struct af_stream *s, void *arg);
    /* EOF, an error, or a completed connect. */
    void (*on_event)(struct af_stream *s, enum af_stream_event what, void *arg);
};

struct af_stream {
    evutil_socket_t fd;
    struct evbuffer *in;  /* NULL while parked (af_stream_park) */
    struct evbuffer *out; /* NULL while parked */
    struct event rd;  /* persistent while reading */
    struct event *wr; /* made on first need (a full socket, a connect in
                         progress, a failure to report): most connections
                         never need it, and an idle one is smaller without */
    const struct af_stream_ops *ops;
    void *arg;
    size_t read_max;  /* reading pauses while `in` holds this much */
    size_t low_water; /* on_drain threshold */
    int error;        /* errno of the failure being reported */
    bool reading;     /* the owner wants input */
    bool rd_added;
    bool wr_added;
    bool connecting;
    bool failed; /* a failure is queued for on_event */
    bool bulk;     /* the last read filled its buffer: read into reserved space */
    bool stale_in; /* `in` may hold an empty reserved chain: not for reuse */
    bool deferred; /* on the list af_stream_flush_deferred() keeps */
    struct af_stream *next_deferred;
    struct af_stream **prev_deferred;
};

/*
 * Takes ownership of fd (made non-blocking; closed by af_stream_release).
 * Reading starts with af_stream_read(s, true). Returns 0, or -1 if the
 * buffers cannot be made.
 */
int af_stream_init(struct af_stream *s, struct event_base *base, evutil_socket_t fd,
                   const struct af_stream_ops *ops, void *arg);

/*
 * Opens a non-blocking connection to addr. Returns 1 when it is connected
 * already (Unix sockets usually are), 0 when it is in progress (on_event
 * AF_STREAM_CONNECTED or AF_STREAM_ERROR follows), -1 with errno on failure.
 */
int af_stream_connect(struct af_stream *s, struct event_base *base, const struct sockaddr *addr,
                      socklen_t len, const struct af_stream_ops *ops, void *arg);

/* Closes the socket, frees the buffers, removes the events. Idempotent. */
void af_stream_release(struct af_stream *s);

/*
 * Gives the buffers back while nothing is buffered either way (a keep-alive
 * connection between requests): in and out become NULL until the next read
 * or af_stream_unpark(). Does nothing when something is buffered.
 */
void af_stream_park(struct af_stream *s);

/* Makes sure in and out exist (after af_stream_park): call before writing
 * to out outside a read callback. Returns false when they cannot be made. */
bool af_stream_unpark(struct af_stream *s);

/* Stops every callback (closing: the buffers stay until release). */
void af_stream_stop(struct af_stream *s);

/* Starts or stops reading (input is still bounded by read_max). */
void af_stream_read(struct af_stream *s, bool on);

/* Call after taking bytes out of s->in: reading resumes below read_max. */
void af_stream_consumed(struct af_stream *s);

/*
 * Writes what the output holds as far as the socket takes it now; the rest
 * goes when the socket is writable. Returns true when the output is empty.
 */
bool af_stream_flush(struct af_stream *s);

/*
 * Like af_stream_flush, but at the end of the current event-loop turn
 * (af_stream_flush_all), so that the writes toward an instance that one
 * turn produced go out together after every ready socket was read. An
 * instance on the same core then finds several requests at once instead
 * of being woken, and preempting the front end, once per request.
 */
void af_stream_flush_deferred(struct af_stream *s);

/* Flushes every stream deferred so far; the event loop's turn is over. */
void af_stream_flush_all(void);

/* Runs base's loop until it is broken or has nothing left to wait for,
 * calling af_stream_flush_all() and then after_turn (if not NULL) after
 * every turn. */
int af_stream_loop(struct event_base *base, void (*after_turn)(void));

#endif
