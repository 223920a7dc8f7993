/*
 * build — see build.h.
 */
#include "proxy/build.h"
#include "proxy/spawn.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>

#include "common/log.h"
#include "common/xalloc.h"
#include "proxy/watchdog.h"


/* The 500 page shows this much of a step's output: compilers put the first
 * error first, and a page of 64 KiB is already more than anyone reads. */
#define OUTPUT_MAX (64 * 1024)
#define LINE_MAX_LOG 8192

enum step { STEP_COMMAND, STEP_GO, STEP_DONE };

/* A running step's process. It outlives its builder when the build is
 * cancelled: the reaper still has to find it. */
struct bproc {
    LIST_ENTRY(bproc) link;
    pid_t pid;
    struct af_builder *b; /* NULL once cancelled */
};

static LIST_HEAD(, bproc) procs = LIST_HEAD_INITIALIZER(procs);

struct af_builder {
    struct event_base *base;
    char *name;
    char *dir;
    char *build_command;
    char *go_out_prefix;
    af_build_cb cb;
    void *arg;

    enum step step;
    struct bproc *proc;          /* the running step, or NULL */
    struct bufferevent *out_bev; /* its output */
    char *out;                   /* kept output, NUL-terminated */
    size_t out_len;
    bool out_cut;
    unsigned seq;   /* go binaries built so far: names PREFIX-seq */
    char *binary;   /* this build's go binary */
    char *step_desc;
    int status;     /* wait status of the step that ended */
    bool ended;     /* done_ev reports the end of the whole build... */
    bool ended_ok;  /* ...with this outcome */
    const char *ended_how;
    struct timeval started;
    struct event *done_ev; /* the step's end, handled outside the reaper */
};

/* ---- output ---------------------------------------------------------------- */

static void keep_line(struct af_builder *b, const char *line, size_t len)
{
    af_log(AF_LOG_INFO, "[%s build] %.*s", b->name, (int)len, line);
    if (b->out_len + len + 1 > OUTPUT_MAX) {
        b->out_cut = true;
        return;
    }
    b->out = af_xrealloc(b->out, b->out_len + len + 2);
    memcpy(b->out + b->out_len, line, len);
    b->out_len += len;
    b->out[b->out_len++] = '\n';
    b->out[b->out_len] = '\0';
}

static void drain(struct af_builder *b, bool flush)
{
    struct evbuffer *in = bufferevent_get_input(b->out_bev);
    for (;;) {
        size_t len = 0;
        char *line = evbuffer_readln(in, &len, EVBUFFER_EOL_LF);
        if (!line) {
            size_t left = evbuffer_get_length(in);
            if (left == 0 || (!flush && left < LINE_MAX_LOG))
                return;
            len = left < LINE_MAX_LOG ? left : LINE_MAX_LOG;
            line = af_xmalloc(len + 1);
            evbuffer_remove(in, line, len);
            line[len] = '\0';
        }
        if (len > 0 && line[len - 1] == '\r')
            len--;
        keep_line(b, line, len);
        free(line);
    }
}

static void out_read_cb(struct bufferevent *bev, void *arg)
{
    drain(arg, false);
}

static void out_event_cb(struct bufferevent *bev, short what, void *arg)
{
    /* EOF: the step and everything it forked closed the pipe. The end of
     * the step itself comes from the reaper. */
    struct af_builder *b = arg;
    if (what & (BEV_EVENT_EOF | BEV_EVENT_ERROR)) {
        drain(b, true);
        bufferevent_disable(bev, EV_READ);
    }
}

static void close_output(struct af_builder *b)
{
    if (!b->out_bev)
        return;
    bufferevent_free(b->out_bev);
    b->out_bev = NULL;
}

/* ---- steps ------------------------------------------------------------------ */

static long ms_since(const struct timeval *t)
{
    struct timeval now;
    gettimeofday(&now, NULL);
    return (now.tv_sec - t->tv_sec) * 1000L + (now.tv_usec - t->tv_usec) / 1000;
}

/* Ends the build from the event loop, never inside the caller's call: the
 * callback may start another build or spawn instances. */
static void end_soon(struct af_builder *b, bool ok, const char *how)
{
    b->ended = true;
    b->ended_ok = ok;
    b->ended_how = how;
    event_active(b->done_ev, EV_TIMEOUT, 0);
}

/* Starts b->step, or the next one that applies. */
static void run_step(struct af_builder *b)
{
    if (b->step == STEP_COMMAND && !b->build_command)
        b->step = STEP_GO;
    if (b->step == STEP_GO && !b->go_out_prefix)
        b->step = STEP_DONE;
    if (b->step == STEP_DONE) {
        end_soon(b, true, NULL);
        return;
    }
    free(b->step_desc);
    const char *command, *arg0 = NULL;
    if (b->step == STEP_COMMAND) {
        b->step_desc = af_xasprintf("--build_command '%s'", b->build_command);
        command = b->build_command;
    } else {
        free(b->binary);
        b->binary = af_xasprintf("%s-%u", b->go_out_prefix, ++b->seq);
        b->step_desc = af_xstrdup("go build");
        /* The binary's path is the shell's $0, so it needs no quoting. */
        command = "exec go build -o \"$0\" .";
        arg0 = b->binary;
    }
    free(b->out);
    b->out = af_xstrdup("");
    b->out_len = 0;
    b->out_cut = false;
    af_log(AF_LOG_INFO, "Building module \"%s\": %s", b->name, b->step_desc);

    int p[2];
    if (pipe2(p, O_CLOEXEC) < 0) {
        keep_line(b, strerror(errno), strlen(strerror(errno)));
        end_soon(b, false, "could not start (pipe)");
        return;
    }
    pid_t pid = af_spawn_shell(b->dir, command, arg0, NULL, p[1], p[1]);
    close(p[1]);
    if (pid < 0) {
        close(p[0]);
        const char *m = strerror((int)-pid);
        keep_line(b, m, strlen(m));
        end_soon(b, false, "could not start (fork)");
        return;
    }
    struct bproc *bp = af_xcalloc(1, sizeof(*bp));
    bp->pid = pid;
    bp->b = b;
    LIST_INSERT_HEAD(&procs, bp, link);
    b->proc = bp;
    evutil_make_socket_nonblocking(p[0]);
    b->out_bev = bufferevent_socket_new(b->base, p[0], BEV_OPT_CLOSE_ON_FREE);
    bufferevent_setcb(b->out_bev, out_read_cb, NULL, out_event_cb, b);
    bufferevent_enable(b->out_bev, EV_READ);
}

static void finish(struct af_builder *b, bool ok, const char *how)
{
    b->step = STEP_DONE;
    struct af_build_result r = {
        .ok = ok,
        .step = b->step_desc ? b->step_desc : "",
        .how = how ? how : "",
        .output = b->out ? b->out : "",
        .binary = b->go_out_prefix ? b->binary : NULL,
        .elapsed_ms = ms_since(&b->started),
    };
    if (ok)
        af_log(AF_LOG_INFO, "Built module \"%s\" in %ld ms", b->name, r.elapsed_ms);
    else
        af_log(AF_LOG_ERROR, "Build of module \"%s\" failed: %s %s", b->name, r.step, r.how);
    if (b->out_cut) {
        char *o = af_xasprintf("%s... (output cut at %d KiB)\n", b->out, OUTPUT_MAX / 1024);
        free(b->out);
        b->out = o;
        r.output = o;
    }
    b->cb(b->arg, &r);
}

/* The running step ended (deferred from the reaper). */
static void done_cb(evutil_socket_t fd, short what, void *arg)
{
    struct af_builder *b = arg;
    if (b->ended) {
        b->ended = false;
        finish(b, b->ended_ok, b->ended_how);
        return;
    }
    int st = b->status;
    if (WIFEXITED(st) && WEXITSTATUS(st) == 0) {
        b->step++;
        run_step(b);
        return;
    }
    char how[64];
    if (WIFEXITED(st))
        snprintf(how, sizeof(how), "exited with status %d", WEXITSTATUS(st));
    else if (WIFSIGNALED(st))
        snprintf(how, sizeof(how), "was killed by signal %d", WTERMSIG(st));
    else
        snprintf(how, sizeof(how), "ended");
    finish(b, false, how);
}

bool af_build_reaped(pid_t pid, int status)
{
    struct bproc *bp;
    LIST_FOREACH(bp, &procs, link)
    {
        if (bp->pid == pid)
            break;
    }
    if (!bp)
        return false;
    LIST_REMOVE(bp, link);
    af_watchdog_remove(pid);
    /* Whatever the step left running in its group goes with it. */
    kill(-pid, SIGKILL);
    struct af_builder *b = bp->b;
    free(bp);
    if (!b)
        return true; /* cancelled */
    b->proc = NULL;
    /* What the step wrote before exiting is in the pipe now; a grandchild
     * that still holds the pipe open is not waited for. */
    if (b->out_bev) {
        evutil_socket_t fd = bufferevent_getfd(b->out_bev);
        struct evbuffer *in = bufferevent_get_input(b->out_bev);
        for (int i = 0; i < 64; i++)
            if (evbuffer_read(in, fd, 65536) <= 0)
                break;
        drain(b, true);
        close_output(b);
    }
    b->status = status;
    event_active(b->done_ev, EV_TIMEOUT, 0);
    return true;
}

/* ---- lifecycle ------------------------------------------------------------------ */

struct af_builder *af_builder_new(struct event_base *base, const struct af_builder_options *opts)
{
    struct af_builder *b = af_xcalloc(1, sizeof(*b));
    b->base = base;
    b->name = af_xstrdup(opts->name);
    b->dir = af_xstrdup(opts->dir);
    b->build_command = opts->build_command ? af_xstrdup(opts->build_command) : NULL;
    b->go_out_prefix = opts->go_out_prefix ? af_xstrdup(opts->go_out_prefix) : NULL;
    b->cb = opts->cb;
    b->arg = opts->arg;
    b->step = STEP_DONE;
    b->done_ev = event_new(base, -1, 0, done_cb, b);
    return b;
}

void af_builder_cancel(struct af_builder *b)
{
    if (b->proc) {
        kill(-b->proc->pid, SIGKILL);
        b->proc->b = NULL; /* reaped later, reported never */
        b->proc = NULL;
    }
    close_output(b);
    event_del(b->done_ev); /* an end already reaped but not yet handled */
    b->ended = false;
    b->step = STEP_DONE;
}

void af_builder_start(struct af_builder *b)
{
    bool was_running = af_builder_running(b);
    af_builder_cancel(b);
    if (was_running)
        af_log(AF_LOG_INFO, "Files changed during the build of module \"%s\": building again",
               b->name);
    gettimeofday(&b->started, NULL);
    b->step = STEP_COMMAND;
    run_step(b);
}

bool af_builder_running(const struct af_builder *b)
{
    return b->step != STEP_DONE;
}

void af_builder_free(struct af_builder *b)
{
    if (!b)
        return;
    af_builder_cancel(b);
    event_free(b->done_ev);
    free(b->name);
    free(b->dir);
    free(b->build_command);
    free(b->go_out_prefix);
    free(b->out);
    free(b->binary);
    free(b->step_desc);
    free(b);
}
