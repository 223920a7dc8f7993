/*
 * build — builds a module's app before its instances start, without
 * blocking the event loop.
 *
 * A build is up to two steps, run one after the other in the app directory:
 *   1. --build_command, by /bin/sh -c;
 *   2. for runtime go1xx without an entrypoint, `go build -o BINARY .`,
 *      BINARY a new path under the private run directory each time (a
 *      running instance keeps its own binary until it is stopped).
 * Each step is a process group of its own, known to the watchdog (so it dies
 * with appfront), with stdin on /dev/null and stdout and stderr on one pipe
 * whose lines are logged as "[MODULE build] ..." and kept (the first 64 KiB)
 * for the 500 page of a failed build. The environment is appfront's own, so
 * the caller's GOPATH, GO111MODULE, GOFLAGS, GOCACHE... apply.
 *
 * Completion is learnt from SIGCHLD: instance.c's reaper hands every pid it
 * does not know to af_build_reaped().
 */
#ifndef AF_BUILD_H
#define AF_BUILD_H

#include <stdbool.h>
#include <sys/types.h>

struct event_base;
struct af_builder;

/* Everything is borrowed for the duration of the callback only. */
struct af_build_result {
    bool ok;
    const char *step;   /* which step failed, e.g. "--build_command 'make'" */
    const char *how;    /* "exited with status 2", "was killed by signal 9" */
    const char *output; /* that step's output (cut at 64 KiB), or "" */
    const char *binary; /* go build: the binary built; NULL without a go step */
    long elapsed_ms;    /* the whole build */
};

typedef void (*af_build_cb)(void *arg, const struct af_build_result *r);

struct af_builder_options {
    const char *name;          /* module name, for logs; copied */
    const char *dir;           /* app directory, where steps run; copied */
    const char *build_command; /* NULL: no such step; copied */
    const char *go_out_prefix; /* NULL: no go step; else binaries are PREFIX-N; copied */
    af_build_cb cb;            /* called from the event loop when a build ends */
    void *arg;
};

struct af_builder *af_builder_new(struct event_base *base, const struct af_builder_options *opts);

/* Starts a build from its first step. A build already running is killed
 * first and never reported: only the latest build's result is. */
void af_builder_start(struct af_builder *b);

/* Kills a running build, if any; its result is never reported. */
void af_builder_cancel(struct af_builder *b);

bool af_builder_running(const struct af_builder *b);

/* Kills a running build and frees. NULL is a no-op. */
void af_builder_free(struct af_builder *b);

/* Called by the SIGCHLD reaper for a pid that is not an instance. Returns
 * true when it was a build step's (consumed here). */
bool af_build_reaped(pid_t pid, int status);

#endif
