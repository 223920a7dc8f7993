/*
 * appfront — a local App Engine development server for native app
 * instances. main() wires the parts together in the order DESIGN.md fixes:
 *
 *   1. command line, every module's app.yaml, dispatch.yaml (errors: one
 *      line, exit 2);
 *   2. the watchdog process, forked before any thread exists;
 *   3. the front-end listeners, a main port (and direct port) per module
 *      (their ports are known before anything starts, so the API server can
 *      report each module's hostname);
 *   4. the API server's two threads, and its startup line;
 *   5. the modules and their instances (or the builds before them, which run
 *      in the background), their startup lines, the admin server;
 *   6. the file watchers (--automatic_restart), once the lines are out;
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
#include "apiserver/services/logservice_store.h"
#include "apiserver/services/datastore_index_yaml.h"
#include "apiserver/services/taskqueue_yaml.h"
#include "common/evmem.h"
#include "common/log.h"
#include "common/xalloc.h"
#include "proxy/admin.h"
#include "proxy/blob.h"
#include "proxy/appyaml.h"
#include "proxy/background.h"
#include "proxy/cli.h"
#include "proxy/dispatch.h"
#include "proxy/exchange.h"
#include "proxy/instance.h"
#include "proxy/module.h"
#include "proxy/reqlog.h"
#include "proxy/router.h"
#include "proxy/server.h"
#include "proxy/stream.h"
#include "proxy/taskrunner.h"
#include "proxy/watchdog.h"

/* After every loop turn: the turn's request lines in one write, and its
 * request records to the logservice in one job. */
static void after_turn(void)
{
    af_log_flush();
    af_reqlog_flush();
}

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
    /* The id names a directory below base. -A's and app.yaml's parsers
     * (af_app_id_ok) let through no '/' and no leading '.', so it cannot
     * leave base or hide. */
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

/* ---- the modules (docs/modules.md) ------------------------------------- */

/* What the command line names: the modules' app.yaml files, in order, and
 * dispatch.yaml when one is among the arguments. */
struct modules_given {
    struct af_app_yaml **apps;
    size_t n;
    size_t dflt;              /* the default module */
    const char *dispatch_arg; /* a dispatch.yaml argument, or NULL */
};

/*
 * Loads every app.yaml of the command line; an argument whose file name is
 * dispatch.yaml (or .yml) is that file, as dev_appserver takes it. Two
 * modules with one name, or two application ids, stop us. The default
 * module is the one called "default", else the first one given, as
 * dev_appserver falls back to any module when none is called "default".
 */
static void load_modules(const struct af_config *cfg, struct modules_given *m)
{
    char err[1024];
    for (size_t i = 0; i < cfg->n_app_paths; i++) {
        const char *path = cfg->app_paths[i];
        struct stat st;
        if (af_dispatch_is_file_name(path) && !(stat(path, &st) == 0 && S_ISDIR(st.st_mode))) {
            if (m->dispatch_arg)
                fatal("more than one dispatch.yaml given: %s and %s (an app has one)",
                      m->dispatch_arg, path);
            m->dispatch_arg = path;
            continue;
        }
        struct af_app_yaml *app = NULL;
        if (af_appyaml_load(path, &app, err, sizeof(err)) < 0)
            fatal("%s", err);
        for (size_t k = 0; k < m->n; k++) {
            if (strcmp(m->apps[k]->service, app->service) == 0)
                fatal("two modules are called \"%s\": %s and %s; give each app.yaml its own "
                      "service: name",
                      app->service, m->apps[k]->path, app->path);
            const char *a = m->apps[k]->application, *b = app->application;
            if (a && b && strcmp(a, b) != 0 && !cfg->application) /* -A overrides both */
                fatal("the modules belong to different applications: \"%s\" (%s) and \"%s\" "
                      "(%s); one appfront serves one application",
                      a, m->apps[k]->path, b, app->path);
        }
        m->apps = af_xrealloc(m->apps, (m->n + 1) * sizeof(*m->apps));
        m->apps[m->n++] = app;
    }
    if (m->n == 0)
        fatal("%s is not an app: give the modules' app.yaml files or directories too",
              m->dispatch_arg);
    m->dflt = 0;
    for (size_t i = 0; i < m->n; i++)
        if (strcmp(m->apps[i]->service, "default") == 0)
            m->dflt = i;
    if (m->n > 1 && strcmp(m->apps[m->dflt]->service, "default") != 0)
        af_log(AF_LOG_INFO,
               "No module is called \"default\": module \"%s\", the first one given, "
               "serves as the default module",
               m->apps[m->dflt]->service);
}

/* "\"default\", \"worker\"": the modules' names, for messages. */
static char *module_names(const struct modules_given *m)
{
    char *out = af_xstrdup("");
    for (size_t i = 0; i < m->n; i++) {
        char *next = af_xasprintf("%s%s\"%s\"", out, i ? ", " : "", m->apps[i]->service);
        free(out);
        out = next;
    }
    return out;
}

/*
 * dispatch.yaml: the one given on the command line, else the one next to
 * the app.yaml of the module called "default" (production reads it from the
 * default service's directory or the project's root). A rule naming a module
 * that is not being served stops us when the file was given (as in
 * dev_appserver), and is dropped with a warning when it was found: one can
 * run some of an app's modules without editing the file. NULL when there
 * are no rules.
 */
static struct af_dispatch *load_dispatch(const struct modules_given *m)
{
    char err[1024];
    struct af_dispatch *d = NULL;
    const struct af_app_yaml *dflt = m->apps[m->dflt];
    bool given = m->dispatch_arg != NULL;
    if (given) {
        if (af_dispatch_load(m->dispatch_arg, &d, err, sizeof(err)) < 0)
            fatal("%s", err);
    } else if (strcmp(dflt->service, "default") == 0 && dflt->dir) {
        if (af_dispatch_load_dir(dflt->dir, &d, err, sizeof(err)) < 0)
            fatal("%s", err);
    }
    if (!d)
        return NULL;
    if (given && d->n_rules > 0 && strcmp(dflt->service, "default") != 0)
        fatal("%s: dispatch.yaml needs a module called \"default\" among the modules given: it "
              "serves every request no rule matches",
              d->path);
    char *names = module_names(m);
    for (size_t i = 0; i < d->n_rules;) {
        const struct af_dispatch_rule *r = &d->rules[i];
        bool known = false;
        for (size_t k = 0; k < m->n && !known; k++)
            known = strcmp(m->apps[k]->service, r->service) == 0;
        if (known) {
            i++;
            continue;
        }
        if (given)
            fatal("%s:%d:%d: service \"%s\" is not one of the modules given (%s)", d->path, r->line,
                  r->col, r->service, names);
        af_warn("%s:%d:%d: service \"%s\" is not one of the modules given (%s); the rule for "
                "'%s' is ignored",
                d->path, r->line, r->col, r->service, names, r->url);
        af_dispatch_drop_rule(d, i);
    }
    free(names);
    if (d->n_rules == 0) {
        af_dispatch_free(d);
        return NULL;
    }
    af_log(AF_LOG_INFO, "Dispatching requests on module \"%s\"'s port by %s (%zu rule%s)",
           dflt->service, d->path, d->n_rules, d->n_rules == 1 ? "" : "s");
    return d;
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
    for (size_t i = 0; i < cfg.n_ignored; i++)
        af_warn("%s", cfg.ignored[i]);

    struct modules_given given = {0};
    struct af_app_yaml *app = NULL; /* the default module's */
    struct af_dispatch *dispatch = NULL;
    if (!cfg.api_only) {
        load_modules(&cfg, &given);
        app = given.apps[given.dflt];
        dispatch = load_dispatch(&given);
    }
    /* queue.yaml next to the default module's app.yaml; a bad one stops us
     * like a bad app.yaml. */
    struct af_queue_yaml *queues = NULL;
    if (app && app->dir && af_queue_yaml_load_dir(app->dir, &queues, err, sizeof(err)) < 0)
        fatal("%s", err);
    /* index.yaml likewise: its indexes, and where the datastore writes the
     * ones queries need (docs/datastore.md, "Indexes"). */
    struct af_index_yaml *indexes = NULL;
    if (app && app->dir && af_index_yaml_load_dir(app->dir, &indexes, err, sizeof(err)) < 0)
        fatal("%s", err);

    /* A write to a closed peer is an error return, never a process kill. */
    signal(SIGPIPE, SIG_IGN);
    if (af_watchdog_start() < 0)
        af_warn("Could not start the watchdog: instances may outlive a killed appfront");

    struct af_server srv = {0};
    srv.cfg = &cfg;
    srv.app = app;
    srv.spare_fd = -1;
    /* -A names the app; else the modules' application ids agree
     * (load_modules) and any one that is given names it. */
    const char *app_id = cfg.application;
    if (!app_id && app && app->application)
        app_id = app->application;
    for (size_t i = 0; !app_id && i < given.n; i++)
        app_id = given.apps[i]->application;
    srv.app_id = af_xstrdup(app_id ? app_id : "app");
    srv.apps = af_xcalloc(given.n ? given.n : 1, sizeof(*srv.apps));
    for (size_t i = 0; i < given.n; i++)
        srv.apps[i] = given.apps[i];
    srv.n_modules = given.n;
    srv.default_index = given.dflt;
    srv.dispatch = dispatch;
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
    /* Opened here, before anything listens, so a file that cannot be used
     * stops the start with one line. Only when given: dev_appserver's
     * default file under the storage path would put an SQLite insert
     * behind every request of every user (docs/services.md). */
    struct af_logstore *logstore = NULL;
    if (cfg.logs_path && cfg.logs_path[0] &&
        !(logstore = af_logstore_open(cfg.logs_path, err, sizeof(err))))
        fatal("--logs_path: %s", err);
    /* The blobstore service creates it; the front end writes uploads into
     * its tmp/ (proxy/blob.c). */
    srv.blob_dir = cfg.blobstore_path ? af_xstrdup(cfg.blobstore_path)
                                      : af_xasprintf("%s/blobs", storage);

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
    /* The modules service answers for every module: name, version, and the
     * host:port of its own port (as dev_appserver's GetHostname does). */
    struct af_api_module *api_mods = af_xcalloc(given.n ? given.n : 1, sizeof(*api_mods));
    char **hostnames = af_xcalloc(given.n ? given.n : 1, sizeof(*hostnames));
    for (size_t i = 0; i < given.n; i++) {
        const struct af_app_yaml *a = given.apps[i];
        hostnames[i] = af_xasprintf("%s:%d", cfg.host, srv.main_ports[i]->port);
        api_mods[i] = (struct af_api_module){
            .name = a->service,
            .version = a->version,
            .hostname = hostnames[i],
            .instances = a->scaling == AF_SCALING_MANUAL && a->manual_instances > 0
                             ? a->manual_instances
                             : 1,
            .background = a->scaling != AF_SCALING_AUTOMATIC,
        };
    }
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
        .blobstore_path = srv.blob_dir,
        .clear_datastore = cfg.clear_datastore,
        .clear_search_indexes = cfg.clear_search_indexes,
        .memcache_max_bytes = cfg.memcache_max_bytes,
        .default_deadline_ms = 60000,
        .queues = queues,
        .indexes = indexes,
        .require_indexes = cfg.require_indexes,
        .datastore_consistency_policy = cfg.datastore_consistency_policy,
        .auth_domain = cfg.auth_domain,
        .default_gcs_bucket_name = cfg.default_gcs_bucket_name,
        .enable_host_checking = cfg.enable_host_checking,
        .addn_hosts = cfg.addn_hosts,
        .n_addn_hosts = cfg.n_addn_hosts,
        .smtp_host = cfg.smtp_host,
        .smtp_port = cfg.smtp_port,
        .smtp_user = cfg.smtp_user,
        .smtp_password = cfg.smtp_password,
        .smtp_allow_tls = cfg.smtp_allow_tls,
        .show_mail_body = cfg.show_mail_body,
        .logstore = logstore, /* the API server's from here on */
        .modules = given.n ? api_mods : NULL,
        .n_modules = given.n,
    };
    struct af_api *api = NULL;
    if (af_api_start(&api_opts, &api, err, sizeof(err)) < 0)
        fatal("API server: %s", err);
    srv.api_port = af_api_port(api);
    af_reqlog_start(api); /* the logservice's request log (proxy/reqlog.h) */
    af_blob_init(&srv, api); /* uploads and blob serving (proxy/blob.h) */
    af_log_raw("Starting API server at: http://%s:%d", cfg.api_host, srv.api_port);

    for (size_t i = 0; i < given.n; i++)
        free(hostnames[i]);
    free(hostnames);
    free(api_mods);

    if (!cfg.api_only) {
        for (size_t i = 0; i < srv.n_modules; i++)
            srv.modules[i] = af_module_new(&srv, srv.apps[i]);
        af_server_attach_modules(&srv);
        af_router_init(&srv); /* compile app.yaml's handlers once; warnings now */
        for (size_t i = 0; i < srv.n_modules; i++) {
            af_log_raw("Starting module \"%s\" running at: http://%s:%d", srv.modules[i]->name,
                       cfg.host, srv.main_ports[i]->port);
            if (srv.direct_ports[i])
                af_log_raw("Starting direct port for module \"%s\" at: http://%s:%d",
                           srv.modules[i]->name, cfg.host, srv.direct_ports[i]->port);
        }
    }
    struct af_admin *admin = af_admin_start(&srv, api, cfg.admin_host, cfg.admin_port, err, sizeof(err));
    if (!admin)
        fatal("%s", err);
    af_log_raw("Starting admin server at: http://%s:%d", cfg.admin_host, af_admin_port(admin));
    /* After the startup lines: harnesses wait for them, and walking a big
     * app tree takes a while. */
    for (size_t i = 0; i < srv.n_modules; i++)
        af_module_watch(srv.modules[i]);
    struct af_taskrunner *tasks =
        srv.module && cfg.enable_task_running ? af_taskrunner_start(&srv, api) : NULL;
    if (srv.module)
        af_background_start(&srv, api); /* runtime.RunInBackground (proxy/background.h) */

    af_stream_loop(srv.base, after_turn);

    /* Whatever is left of the instances goes with us. */
    af_instances_kill_all(SIGKILL);
    af_taskrunner_free(tasks);
    af_background_stop();
    af_admin_free(admin); /* its console calls the API server */
    af_reqlog_stop();
    af_blob_stop();
    af_api_stop(api);
    event_free(sigint);
    event_free(sigterm);
    event_free(sigchld);
    remove_run_dir(srv.run_dir);
    af_server_release(&srv);
    af_exchanges_release(&srv);
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
    free(srv.blob_dir);
    for (size_t i = 0; i < given.n; i++)
        af_appyaml_free(given.apps[i]);
    free(given.apps);
    af_dispatch_free(dispatch);
    af_queue_yaml_free(queues);
    af_index_yaml_free(indexes);
    af_config_release(&cfg);
    return code;
}
