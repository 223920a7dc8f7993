/*
 * instance — one app-instance child process: spawn, readiness, output
 * capture, death. The module (proxy/module.c) decides when to start and stop
 * instances; this file only runs them.
 *
 * Lifecycle: STARTING (spawned, polling its socket) → READY (accepts
 * connections) → STOPPING (SIGTERM sent) → DEAD (reaped). An instance struct
 * outlives its process while exchanges or upstream connections still point
 * at it (refs); the last af_instance_unref() frees it.
 */
#ifndef AF_INSTANCE_H
#define AF_INSTANCE_H

#include <stdbool.h>
#include <sys/queue.h>
#include <sys/types.h>
#include <sys/time.h>

struct af_module;
struct af_upstream;
struct af_exchange;
struct bufferevent;
struct event;

enum af_instance_state {
    AF_INST_STARTING,
    AF_INST_READY,
    AF_INST_STOPPING,
    AF_INST_DEAD,
};

#define AF_INSTANCE_TAIL_LINES 20

struct af_instance {
    struct af_module *mod;
    TAILQ_ENTRY(af_instance) link; /* in the module's list while alive */
    int id;
    char name[64]; /* "default.3": the log prefix */
    pid_t pid;
    enum af_instance_state state;
    bool ever_ready; /* counted by the module as ready, not starting */
    int gen;         /* the module generation it was spawned into */
    bool retired;    /* a newer generation exists (module.h) */
    bool draining;   /* retired or scaled down: no new requests, stopped once idle */
    /* Scaling down (module.c): stopped for being idle, and out of the
     * module's counts; and when it last became idle, in monotonic ms. */
    bool scaled_down;
    long long idle_since_ms;
    int refs; /* the module's list + exchanges + upstream connections */

    char *sock_path; /* Unix socket the instance serves on, or NULL */
    int tcp_port;    /* loopback port for stock runtimes, or 0 */

    int active;        /* routed exchanges in flight (bounded by max_concurrent) */
    int active_direct; /* direct-port exchanges in flight (not bounded) */
    TAILQ_HEAD(, af_upstream) idle; /* idle keep-alive connections */
    int n_idle;
    LIST_HEAD(, af_exchange) held; /* exchanges assigned to this instance */

    struct bufferevent *out_bev; /* its stdout */
    struct bufferevent *err_bev; /* its stderr */
    char *tail[AF_INSTANCE_TAIL_LINES]; /* last stderr lines, ring */
    int tail_next;

    struct event *timer; /* readiness polling, then the SIGKILL deadline */
    struct timeval spawned;
    int exit_status; /* wait status once DEAD */
};

/* Spawns the process. Returns the instance (one ref, the module's), or NULL
 * with a message in err. */
struct af_instance *af_instance_spawn(struct af_module *mod, int id, char *err, size_t errlen);

/* SIGTERM now, SIGKILL after grace_ms. */
void af_instance_stop(struct af_instance *inst, int grace_ms);

void af_instance_ref(struct af_instance *inst);
void af_instance_unref(struct af_instance *inst);

/* The last stderr lines, joined with newlines; caller frees. */
char *af_instance_stderr_tail(const struct af_instance *inst);

/* Reaps exited children (call on SIGCHLD) and reports deaths to modules. */
void af_instances_reap(void);

/* Signals every live instance's process group; used at exit. */
void af_instances_kill_all(int sig);

#endif
