/*
 * instance — one app-instance process. See instance.h.
 *
 * Each instance runs in a process group of its own (so a stop reaches what
 * its entrypoint forked), dies with appfront through PR_SET_PDEATHSIG and
 * the watchdog (proxy/watchdog.c), and has its stdout and stderr read line
 * by line into appfront's log under its name. The last stderr lines are kept
 * for the 502 page of a crash.
 */
#include "proxy/instance.h"

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>

#include "common/log.h"
#include "common/xalloc.h"
#include "proxy/build.h"
#include "proxy/exchange.h"
#include "proxy/module.h"
#include "proxy/server.h"
#include "proxy/spawn.h"
#include "proxy/upstream.h"
#include "proxy/watchdog.h"

extern char **environ;

#define READY_POLL_MS 5
#define MAX_LINE 8192

/* Every instance whose process has not been reaped, to map pids on SIGCHLD. */
static LIST_HEAD(, af_live) live = LIST_HEAD_INITIALIZER(live);
struct af_live {
    LIST_ENTRY(af_live) link;
    struct af_instance *inst;
};

/* ---- environment ---------------------------------------------------------- */

struct envv {
    char **v;
    size_t n;
    size_t cap;
};

/* Sets KEY=VALUE, replacing an earlier KEY: later sources override earlier
 * ones (inherited, then appfront's, then env_variables, then --env_var). */
static void env_set(struct envv *e, const char *key, const char *value)
{
    size_t klen = strlen(key);
    char *kv = af_xasprintf("%s=%s", key, value);
    for (size_t i = 0; i < e->n; i++) {
        if (strncmp(e->v[i], key, klen) == 0 && e->v[i][klen] == '=') {
            free(e->v[i]);
            e->v[i] = kv;
            return;
        }
    }
    if (e->n + 2 > e->cap) {
        e->cap = e->cap ? e->cap * 2 : 64;
        e->v = af_xrealloc(e->v, e->cap * sizeof(char *));
    }
    e->v[e->n++] = kv;
    e->v[e->n] = NULL;
}

static void env_free(struct envv *e)
{
    for (size_t i = 0; i < e->n; i++)
        free(e->v[i]);
    free(e->v);
}

static void build_env(struct af_instance *inst, struct envv *e)
{
    struct af_module *mod = inst->mod;
    struct af_server *srv = mod->srv;
    const struct af_app_yaml *app = mod->app;
    char buf[64];
    for (char **p = environ; *p; p++) {
        char *eq = strchr(*p, '=');
        if (!eq)
            continue;
        char *key = af_xstrndup(*p, (size_t)(eq - *p));
        env_set(e, key, eq + 1);
        free(key);
    }
    if (inst->sock_path) {
        env_set(e, "APPFRONT_HTTP_SOCKET", inst->sock_path);
    } else {
        snprintf(buf, sizeof(buf), "%d", inst->tcp_port);
        env_set(e, "PORT", buf);
    }
    env_set(e, "APPFRONT_API_SOCKET", srv->api_socket);
    env_set(e, "API_HOST", srv->cfg->api_host);
    snprintf(buf, sizeof(buf), "%d", srv->api_port);
    env_set(e, "API_PORT", buf);
    env_set(e, "RUN_WITH_DEVAPPSERVER", "1");
    env_set(e, "GAE_ENV", "localdev");
    char *appid = af_xasprintf("dev~%s", srv->app_id);
    env_set(e, "GAE_APPLICATION", appid);
    free(appid);
    env_set(e, "GAE_SERVICE", mod->name);
    env_set(e, "GAE_VERSION", mod->version);
    env_set(e, "GAE_INSTANCE", inst->name);
    env_set(e, "GAE_RUNTIME", app->runtime);
    env_set(e, "GAE_MEMORY_MB", "256");
    env_set(e, "GOOGLE_CLOUD_PROJECT", srv->app_id);
    env_set(e, "SERVER_SOFTWARE", "Development/2.0");
    for (size_t i = 0; i < app->n_env_variables; i++)
        env_set(e, app->env_variables[i].name, app->env_variables[i].value);
    for (size_t i = 0; i < srv->cfg->n_env_vars; i++)
        env_set(e, srv->cfg->env_vars[i].key, srv->cfg->env_vars[i].value);
}

/* ---- output capture -------------------------------------------------------- */

static void tail_push(struct af_instance *inst, const char *line, size_t len)
{
    if (len > 1024)
        len = 1024;
    free(inst->tail[inst->tail_next]);
    inst->tail[inst->tail_next] = af_xstrndup(line, len);
    inst->tail_next = (inst->tail_next + 1) % AF_INSTANCE_TAIL_LINES;
}

char *af_instance_stderr_tail(const struct af_instance *inst)
{
    size_t total = 1;
    for (int i = 0; i < AF_INSTANCE_TAIL_LINES; i++)
        if (inst->tail[i])
            total += strlen(inst->tail[i]) + 1;
    char *s = af_xmalloc(total);
    size_t off = 0;
    for (int k = 0; k < AF_INSTANCE_TAIL_LINES; k++) {
        const char *l = inst->tail[(inst->tail_next + k) % AF_INSTANCE_TAIL_LINES];
        if (!l)
            continue;
        size_t n = strlen(l);
        memcpy(s + off, l, n);
        off += n;
        s[off++] = '\n';
    }
    s[off] = '\0';
    return s;
}

/* Logs complete lines; with `flush`, also a last line without newline. A
 * line longer than MAX_LINE is cut so a writer without newlines cannot grow
 * the buffer without bound. */
static void drain_lines(struct af_instance *inst, struct bufferevent *bev, bool is_err, bool flush)
{
    struct evbuffer *in = bufferevent_get_input(bev);
    for (;;) {
        size_t len = 0;
        char *line = evbuffer_readln(in, &len, EVBUFFER_EOL_LF);
        if (!line) {
            size_t left = evbuffer_get_length(in);
            if (left == 0 || (!flush && left < MAX_LINE))
                return;
            len = left < MAX_LINE ? left : MAX_LINE;
            line = af_xmalloc(len + 1);
            evbuffer_remove(in, line, len);
            line[len] = '\0';
        }
        if (len > 0 && line[len - 1] == '\r')
            line[--len] = '\0';
        af_log(AF_LOG_INFO, "[%s] %s", inst->name, line);
        if (is_err)
            tail_push(inst, line, len);
        free(line);
    }
}

static void out_read_cb(struct bufferevent *bev, void *arg)
{
    drain_lines(arg, bev, false, false);
}

static void err_read_cb(struct bufferevent *bev, void *arg)
{
    drain_lines(arg, bev, true, false);
}

static void pipe_event_cb(struct bufferevent *bev, short what, void *arg)
{
    struct af_instance *inst = arg;
    if (!(what & (BEV_EVENT_EOF | BEV_EVENT_ERROR)))
        return;
    bool is_err = bev == inst->err_bev;
    drain_lines(inst, bev, is_err, true);
    bufferevent_free(bev);
    if (is_err)
        inst->err_bev = NULL;
    else
        inst->out_bev = NULL;
}

/* Reads what the pipe holds right now, without waiting for the loop: used
 * at death so the 502 page has the crash message. */
static void pipe_slurp(struct af_instance *inst, struct bufferevent *bev, bool is_err)
{
    if (!bev)
        return;
    evutil_socket_t fd = bufferevent_getfd(bev);
    struct evbuffer *in = bufferevent_get_input(bev);
    for (int i = 0; i < 64; i++)
        if (evbuffer_read(in, fd, 65536) <= 0)
            break;
    drain_lines(inst, bev, is_err, true);
}

/* ---- readiness ------------------------------------------------------------- */

static bool instance_accepts(const struct af_instance *inst)
{
    int fd;
    int rc;
    if (inst->sock_path) {
        struct sockaddr_un sun = {.sun_family = AF_UNIX};
        snprintf(sun.sun_path, sizeof(sun.sun_path), "%s", inst->sock_path);
        fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0)
            return false;
        rc = connect(fd, (struct sockaddr *)&sun, sizeof(sun));
    } else {
        struct sockaddr_in sin = {.sin_family = AF_INET,
                                  .sin_port = htons((uint16_t)inst->tcp_port)};
        sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0)
            return false;
        /* On loopback a connect is answered at once, accepted or refused. */
        rc = connect(fd, (struct sockaddr *)&sin, sizeof(sin));
    }
    close(fd);
    return rc == 0;
}

static long ms_since(const struct timeval *t)
{
    struct timeval now;
    gettimeofday(&now, NULL);
    return (now.tv_sec - t->tv_sec) * 1000L + (now.tv_usec - t->tv_usec) / 1000;
}

static void timer_cb(evutil_socket_t fd, short what, void *arg)
{
    struct af_instance *inst = arg;
    if (inst->state == AF_INST_STOPPING) {
        /* The grace period is over. */
        kill(-inst->pid, SIGKILL);
        return;
    }
    if (inst->state != AF_INST_STARTING)
        return;
    if (instance_accepts(inst)) {
        inst->state = AF_INST_READY;
        inst->ever_ready = true;
        af_log(AF_LOG_INFO, "Instance %s ready in %ld ms (pid %d)", inst->name,
               ms_since(&inst->spawned), (int)inst->pid);
        af_module_instance_ready(inst->mod, inst);
        return;
    }
    int limit = inst->mod->srv->cfg->instance_startup_ms;
    if (ms_since(&inst->spawned) > limit) {
        char *tail = af_instance_stderr_tail(inst);
        af_log(AF_LOG_ERROR,
               "Instance %s did not accept connections within %d ms; stopping it. Last "
               "lines of its stderr:\n%s",
               inst->name, limit, tail);
        free(tail);
        af_instance_stop(inst, 0);
        return;
    }
    struct timeval tv = {0, READY_POLL_MS * 1000};
    event_add(inst->timer, &tv);
}

/* ---- spawn ------------------------------------------------------------------ */

static int pick_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in sin = {.sin_family = AF_INET};
    socklen_t len = sizeof(sin);
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int port = -1;
    if (fd >= 0 && bind(fd, (struct sockaddr *)&sin, sizeof(sin)) == 0 &&
        getsockname(fd, (struct sockaddr *)&sin, &len) == 0)
        port = ntohs(sin.sin_port);
    if (fd >= 0)
        close(fd);
    return port;
}

struct af_instance *af_instance_spawn(struct af_module *mod, int id, char *err, size_t errlen)
{
    struct af_server *srv = mod->srv;
    const struct af_app_yaml *app = mod->app;
    struct af_instance *inst = af_xcalloc(1, sizeof(*inst));
    inst->mod = mod;
    inst->id = id;
    inst->refs = 1;
    inst->state = AF_INST_STARTING;
    inst->gen = mod->gen;
    TAILQ_INIT(&inst->idle);
    LIST_INIT(&inst->held);
    snprintf(inst->name, sizeof(inst->name), "%s.%d", mod->name, id);

    if (mod->stock_runtime) {
        inst->tcp_port = pick_port();
        if (inst->tcp_port < 0) {
            snprintf(err, errlen, "no free loopback port for instance %s", inst->name);
            free(inst);
            return NULL;
        }
    } else {
        inst->sock_path = af_xasprintf("%s/%s-%d.sock", srv->run_dir, mod->name, id);
        if (strlen(inst->sock_path) >= sizeof(((struct sockaddr_un *)0)->sun_path)) {
            snprintf(err, errlen, "socket path %s is too long for a Unix socket", inst->sock_path);
            free(inst->sock_path);
            free(inst);
            return NULL;
        }
        unlink(inst->sock_path);
    }

    int outp[2], errp[2];
    if (pipe2(outp, O_CLOEXEC) < 0) {
        snprintf(err, errlen, "pipe: %s", strerror(errno));
        free(inst->sock_path);
        free(inst);
        return NULL;
    }
    if (pipe2(errp, O_CLOEXEC) < 0) {
        snprintf(err, errlen, "pipe: %s", strerror(errno));
        close(outp[0]);
        close(outp[1]);
        free(inst->sock_path);
        free(inst);
        return NULL;
    }
    struct envv env = {0};
    build_env(inst, &env);
    /* The module's entrypoint: app.yaml's, or the binary it built. */
    gettimeofday(&inst->spawned, NULL);
    pid_t pid = af_spawn_shell(app->dir, mod->entrypoint, NULL, env.v, outp[1], errp[1]);
    env_free(&env);
    close(outp[1]);
    close(errp[1]);
    if (pid < 0) {
        close(outp[0]);
        close(errp[0]);
        snprintf(err, errlen, "fork: %s", strerror((int)-pid));
        free(inst->sock_path);
        free(inst);
        return NULL;
    }
    inst->pid = pid;

    evutil_make_socket_nonblocking(outp[0]);
    evutil_make_socket_nonblocking(errp[0]);
    inst->out_bev = bufferevent_socket_new(srv->base, outp[0], BEV_OPT_CLOSE_ON_FREE);
    inst->err_bev = bufferevent_socket_new(srv->base, errp[0], BEV_OPT_CLOSE_ON_FREE);
    bufferevent_setcb(inst->out_bev, out_read_cb, NULL, pipe_event_cb, inst);
    bufferevent_setcb(inst->err_bev, err_read_cb, NULL, pipe_event_cb, inst);
    bufferevent_enable(inst->out_bev, EV_READ);
    bufferevent_enable(inst->err_bev, EV_READ);

    struct af_live *l = af_xcalloc(1, sizeof(*l));
    l->inst = inst;
    LIST_INSERT_HEAD(&live, l, link);
    inst->refs++; /* the live list's */

    inst->timer = evtimer_new(srv->base, timer_cb, inst);
    struct timeval tv = {0, READY_POLL_MS * 1000};
    event_add(inst->timer, &tv);
    af_log(AF_LOG_DEBUG, "Instance %s started: pid %d, %s%s", inst->name, (int)pid,
           inst->sock_path ? "socket " : "port ", inst->sock_path ? inst->sock_path : "");
    return inst;
}

void af_instance_stop(struct af_instance *inst, int grace_ms)
{
    if (inst->state == AF_INST_DEAD)
        return;
    if (inst->state != AF_INST_STOPPING) {
        inst->state = AF_INST_STOPPING;
        af_upstream_drain_pool(inst);
        kill(-inst->pid, grace_ms > 0 ? SIGTERM : SIGKILL);
    }
    struct timeval tv = {grace_ms / 1000, (grace_ms % 1000) * 1000};
    event_add(inst->timer, &tv);
}

void af_instance_ref(struct af_instance *inst)
{
    inst->refs++;
}

void af_instance_unref(struct af_instance *inst)
{
    if (--inst->refs > 0)
        return;
    for (int i = 0; i < AF_INSTANCE_TAIL_LINES; i++)
        free(inst->tail[i]);
    if (inst->out_bev)
        bufferevent_free(inst->out_bev);
    if (inst->err_bev)
        bufferevent_free(inst->err_bev);
    if (inst->timer)
        event_free(inst->timer);
    free(inst->sock_path);
    free(inst);
}

static void instance_reaped(struct af_instance *inst, int status)
{
    bool expected = inst->state == AF_INST_STOPPING;
    inst->exit_status = status;
    pipe_slurp(inst, inst->err_bev, true);
    pipe_slurp(inst, inst->out_bev, false);
    inst->state = AF_INST_DEAD;
    event_del(inst->timer);
    af_watchdog_remove(inst->pid);
    /* The group may still hold what the entrypoint forked. */
    kill(-inst->pid, SIGKILL);
    if (inst->sock_path)
        unlink(inst->sock_path);
    char how[64];
    if (WIFEXITED(status))
        snprintf(how, sizeof(how), "exited with status %d", WEXITSTATUS(status));
    else if (WIFSIGNALED(status))
        snprintf(how, sizeof(how), "was killed by signal %d", WTERMSIG(status));
    else
        snprintf(how, sizeof(how), "ended");
    af_log(expected ? AF_LOG_INFO : AF_LOG_WARNING, "Instance %s (pid %d) %s", inst->name,
           (int)inst->pid, how);
    af_upstream_drain_pool(inst);
    af_instance_ref(inst);
    struct af_exchange *ex = LIST_FIRST(&inst->held), *next;
    for (; ex; ex = next) {
        next = LIST_NEXT(ex, held_link);
        struct af_conn *c = ex->conn;
        af_conn_enter(c);
        af_ex_instance_died(ex);
        af_conn_leave(c);
    }
    af_module_instance_died(inst->mod, inst);
    af_instance_unref(inst);
}

void af_instances_reap(void)
{
    for (;;) {
        int status;
        pid_t pid = waitpid(-1, &status, WNOHANG);
        if (pid <= 0)
            return;
        struct af_live *l;
        LIST_FOREACH(l, &live, link)
        {
            if (l->inst->pid == pid)
                break;
        }
        if (!l) {
            if (af_build_reaped(pid, status))
                continue;
            if (pid == af_watchdog_pid())
                af_warn("The watchdog process exited; instances may outlive appfront");
            continue;
        }
        struct af_instance *inst = l->inst;
        LIST_REMOVE(l, link);
        free(l);
        instance_reaped(inst, status);
        af_instance_unref(inst); /* the live list's */
    }
}

void af_instances_kill_all(int sig)
{
    struct af_live *l;
    LIST_FOREACH(l, &live, link)
    kill(-l->inst->pid, sig);
}
