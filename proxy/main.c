/*
 * appfront — a local App Engine development server for native app
 * instances. main() wires the parts together in the order DESIGN.md fixes:
 *
 *   1. command line, app.yaml (errors: one line, exit 2);
 *   2. the watchdog process, forked before any thread exists;
 *   3. the front-end listeners (their ports are known before anything
 *      starts, so the API server can report the app's hostname);
 *   4. the API server's two threads, and its startup line;
 *   5. the module and its instances (or the build before them, which runs
 *      in the background), the direct port, the admin server;
 *   6. the file watcher (--automatic_restart), once the lines are out;
 *   7. the main event loop until SIGINT, SIGTERM or GET /quit.
 */
#include <dirent.h>
#include <errno.h>
#include <stdarg.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <event2/event.h>

#include "apiserver/apiserver.h"
#include "apiserver/services/taskqueue_yaml.h"
#include "common/evmem.h"
#include "common/log.h"
#include "common/xalloc.h"
#include "proxy/admin.h"
#include "proxy/appyaml.h"
#include "proxy/cli.h"
#include "proxy/exchange.h"
#include "proxy/instance.h"
#include "proxy/module.h"
#include "proxy/router.h"
#include "proxy/server.h"
#include "proxy/stream.h"
#include "proxy/taskrunner.h"
#include "proxy/watchdog.h"

static void fatal(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
static void fatal(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "appfront: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
    exit(2);
}

static void on_stop_signal(evutil_socket_t sig, short what, void *arg)
{
    struct af_server *srv = arg;
    if (srv->stopping) {
        af_warn("Second signal %d: exiting now", (int)sig);
        event_base_loopbreak(srv->base);
        return;
    }
    af_server_shutdown(srv);
}

static void on_sigchld(evutil_socket_t sig, short what, void *arg)
{
    af_instances_reap();
}

/* mkdir -p with mode 0700 for what it creates. */
static int mkdirs(const char *path)
{
    char *p = af_xstrdup(path);
    for (char *s = p + 1; *s; s++) {
        if (*s != '/')
            continue;
        *s = '\0';
        if (mkdir(p, 0700) < 0 && errno != EEXIST) {
            free(p);
            return -1;
        }
        *s = '/';
    }
    int rc = mkdir(p, 0700) < 0 && errno != EEXIST ? -1 : 0;
    free(p);
    return rc;
}

/* The default storage directory: private to the user and the app. A
 * directory someone else owns, or that others may write, is refused: the
 * datastore and memcache state live there. */
static char *default_storage(const char *app_id)
{
    const char *tmp = getenv("TMPDIR");
    char *base = af_xasprintf("%s/appfront-%u", tmp && *tmp ? tmp : "/tmp", (unsigned)getuid());
    if (mkdirs(base) < 0)
        fatal("cannot create %s: %s", base, strerror(errno));
    struct stat st;
    if (lstat(base, &st) < 0 || !S_ISDIR(st.st_mode) || st.st_uid != getuid() ||
        (st.st_mode & 077))
        fatal("%s must be a directory owned by you with mode 0700; remove it or pass "
              "--storage_path",
              base);
    char *dir = af_xasprintf("%s/%s", base, app_id);
    free(base);
    if (mkdirs(dir) < 0)
        fatal("cannot create %s: %s", dir, strerror(errno));
    return dir;
}

/* Removes the private run directory: the API socket and whatever socket a
 * crashed instance left behind. */
static void remove_run_dir(const char *dir)
{
    DIR *d = opendir(dir);
    if (d) {
        struct dirent *e;
        while ((e = readdir(d)) != NULL) {
            if (e->d_name[0] == '.')
                continue;
            char *p = af_xasprintf("%s/%s", dir, e->d_name);
            unlink(p);
            free(p);
        }
        closedir(d);
    }
    rmdir(dir);
}

int main(int argc, char **argv)
{
    /* Before libevent's first allocation (event_set_mem_functions). */
    af_evmem_install();
    struct af_config cfg;
    char err[1024];
    af_config_init(&cfg);
    switch (af_cli_parse(argc, argv, &cfg, err, sizeof(err))) {
    case AF_CLI_HELP:
        af_cli_usage(stdout);
        af_config_release(&cfg);
        return 0;
    case AF_CLI_ERROR:
        fprintf(stderr, "appfront: %s\n", err);
        af_config_release(&cfg);
        return 2;
    case AF_CLI_OK:
        break;
    }
    enum af_log_level level;
    if (af_log_parse_level(cfg.dev_appserver_log_level, &level) == 0)
        af_log_set_level(level);

    struct af_app_yaml *app = NULL;
    if (!cfg.api_only) {
        if (af_appyaml_load(cfg.app_paths[0], &app, err, sizeof(err)) < 0)
            fatal("%s", err);
        for (size_t i = 1; i < cfg.n_app_paths; i++)
            af_warn("Only the first module is served for now; ignoring %s", cfg.app_paths[i]);
    }
    /* queue.yaml next to app.yaml; a bad one stops us like a bad app.yaml. */
    struct af_queue_yaml *queues = NULL;
    if (app && app->dir && af_queue_yaml_load_dir(app->dir, &queues, err, sizeof(err)) < 0)
        fatal("%s", err);

    /* A write to a closed peer is an error return, never a process kill. */
    signal(SIGPIPE, SIG_IGN);
    if (af_watchdog_start() < 0)
        af_warn("Could not start the watchdog: instances may outlive a killed appfront");

    struct af_server srv = {0};
    srv.cfg = &cfg;
    srv.app = app;
    srv.spare_fd = -1;
    srv.app_id = af_xstrdup(app && app->application ? app->application : "app");
    srv.base = event_base_new();
    if (!srv.base)
        fatal("cannot create the event loop");

    const char *tmpdir = getenv("TMPDIR");
    char *run_tmpl = af_xasprintf("%s/appfront-run-XXXXXX", tmpdir && *tmpdir ? tmpdir : "/tmp");
    /* Unix socket paths must fit in 108 bytes: fall back to /tmp. */
    if (strlen(run_tmpl) > 60) {
        free(run_tmpl);
        run_tmpl = af_xstrdup("/tmp/appfront-run-XXXXXX");
    }
    if (!mkdtemp(run_tmpl))
        fatal("cannot create a private directory %s: %s", run_tmpl, strerror(errno));
    srv.run_dir = run_tmpl;
    srv.api_socket = af_xasprintf("%s/api.sock", srv.run_dir);

    char *storage = cfg.storage_path ? af_xstrdup(cfg.storage_path) : default_storage(srv.app_id);
    if (cfg.storage_path && mkdirs(storage) < 0)
        fatal("--storage_path %s: %s", storage, strerror(errno));
    char *datastore = cfg.datastore_path ? af_xstrdup(cfg.datastore_path)
                                         : af_xasprintf("%s/datastore.sqlite3", storage);

    if (!cfg.api_only && af_server_listen(&srv, err, sizeof(err)) < 0)
        fatal("%s", err);

    /* Before any instance exists: a child that exits at once must not be
     * missed. */
    struct event *sigint = evsignal_new(srv.base, SIGINT, on_stop_signal, &srv);
    struct event *sigterm = evsignal_new(srv.base, SIGTERM, on_stop_signal, &srv);
    struct event *sigchld = evsignal_new(srv.base, SIGCHLD, on_sigchld, NULL);
    event_add(sigint, NULL);
    event_add(sigterm, NULL);
    event_add(sigchld, NULL);

    char *server_host = af_xasprintf("%s:%d", cfg.host, srv.main_port.port);
    struct af_api_options api_opts = {
        .host = cfg.api_host,
        .port = cfg.api_port,
        .socket_path = srv.api_socket,
        .app_id = srv.app_id,
        .module = app && app->service ? app->service : "default",
        .version = app && app->version ? app->version : "1",
        .module_instances = 1,
        .server_host = server_host,
        .storage_path = storage,
        .datastore_path = datastore,
        .clear_datastore = cfg.clear_datastore,
        .memcache_max_bytes = cfg.memcache_max_bytes,
        .default_deadline_ms = 60000,
        .queues = queues,
    };
    struct af_api *api = NULL;
    if (af_api_start(&api_opts, &api, err, sizeof(err)) < 0)
        fatal("API server: %s", err);
    srv.api_port = af_api_port(api);
    af_log_raw("Starting API server at: http://%s:%d", cfg.api_host, srv.api_port);

    if (!cfg.api_only) {
        srv.module = af_module_new(&srv, app);
        af_router_init(&srv); /* compile app.yaml's handlers once; warnings now */
        af_log_raw("Starting module \"%s\" running at: http://%s:%d", srv.module->name, cfg.host,
                   srv.main_port.port);
        if (srv.direct_port.l)
            af_log_raw("Starting direct port for module \"%s\" at: http://%s:%d",
                       srv.module->name, cfg.host, srv.direct_port.port);
    }
    struct af_admin *admin = af_admin_start(&srv, cfg.admin_host, cfg.admin_port, err, sizeof(err));
    if (!admin)
        fatal("%s", err);
    af_log_raw("Starting admin server at: http://%s:%d", cfg.admin_host, af_admin_port(admin));
    /* After the startup lines: harnesses wait for them, and walking a big
     * app tree takes a while. */
    if (srv.module)
        af_module_watch(srv.module);
    struct af_taskrunner *tasks =
        srv.module && cfg.enable_task_running ? af_taskrunner_start(&srv, api) : NULL;

    af_stream_loop(srv.base, af_log_flush); /* a turn's request lines in one write */

    /* Whatever is left of the instances goes with us. */
    af_instances_kill_all(SIGKILL);
    af_taskrunner_free(tasks);
    af_api_stop(api);
    af_admin_free(admin);
    event_free(sigint);
    event_free(sigterm);
    event_free(sigchld);
    remove_run_dir(srv.run_dir);
    af_module_free(srv.module);
    af_exchanges_release(&srv);
    af_router_release();
    if (srv.accept_resume)
        event_free(srv.accept_resume);
    if (srv.stop_timer)
        event_free(srv.stop_timer);
    if (srv.spare_fd >= 0)
        close(srv.spare_fd);
    event_base_free(srv.base);
    af_log(AF_LOG_INFO, "appfront stopped");
    int code = srv.exit_code;
    free(srv.run_dir);
    free(srv.api_socket);
    free(srv.app_id);
    free(server_host);
    free(storage);
    free(datastore);
    af_appyaml_free(app);
    af_queue_yaml_free(queues);
    af_config_release(&cfg);
    return code;
}
