/*
 * cli — the dev_appserver-compatible command line (shared/DESIGN.md).
 *
 *   appfront [flags] APP_DIR_OR_APP_YAML...
 *   appfront api [flags]
 *
 * Flags take "--flag=value" or "--flag value"; booleans also bare "--flag"
 * and yes/no/true/false/1/0 (any case). Port 0 means "pick a free one".
 */
#ifndef AF_CLI_H
#define AF_CLI_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

/* One "--env_var K=V". */
struct af_env_kv {
    char *key;
    char *value;
};

/*
 * The parsed command line. Every string is owned by the struct and released
 * by af_config_release(). Defaults are set by af_config_init().
 */
struct af_config {
    bool api_only; /* "appfront api": the API server alone, no app */

    char *host;       /* "localhost" */
    int port;         /* 8080 */
    char *admin_host; /* "localhost" */
    int admin_port;   /* 8000 */
    char *api_host;   /* "localhost" */
    int api_port;     /* 0 */
    int direct_port;  /* -1: off unless given */

    char *storage_path;   /* NULL: a private 0700 dir per app and user */
    char *datastore_path; /* NULL: under storage_path */
    char *logs_path;      /* NULL: request logs in memory only */
    char *blobstore_path; /* NULL: blobs/ under storage_path */
    bool clear_datastore;
    bool clear_search_indexes;
    char *datastore_consistency_policy; /* "time" | "random" | "consistent" */
    bool require_indexes;               /* a query index.yaml does not cover fails (NEED_INDEX) */

    bool automatic_restart; /* true */
    bool allow_skipped_files;
    char *watcher_ignore_re; /* NULL if not given */
    bool use_mtime_file_watcher;
    int max_module_instances; /* 0: no limit from the command line */
    /* "--threadsafe_override": "true"/"false" or "module:true,...". NULL if not given. */
    char *threadsafe_override;

    struct af_env_kv *env_vars; /* --env_var K=V, in order given */
    size_t n_env_vars;

    char *application;             /* -A/--application: overrides app.yaml's; NULL if not given */
    char *auth_domain;             /* "gmail.com": the signed-in users' auth domain */
    char *default_gcs_bucket_name; /* NULL: app_identity's "APP_ID.appspot.com" */
    bool enable_host_checking;     /* true: the admin and API HTTP ports check Host */
    char **addn_hosts;             /* --addn_host, repeatable: more names they answer */
    size_t n_addn_hosts;
    /* Flags dev_appserver knows that appfront accepts but does not act on,
     * each a one-line warning to print at startup ("--logs_path has no
     * effect in appfront: ..."), in the order given. */
    char **ignored;
    size_t n_ignored;

    char *log_level;               /* "info"; app log level */
    char *dev_appserver_log_level; /* "info"; appfront's own log level */
    bool enable_task_running;      /* true */

    /* Mail delivery (docs/services.md, "mail"). */
    char *smtp_host;     /* --smtp_host; NULL: mail is logged and kept, not delivered */
    int smtp_port;       /* --smtp_port, 25 */
    char *smtp_user;     /* --smtp_user; NULL: no AUTH */
    char *smtp_password; /* --smtp_password; NULL: empty */
    bool smtp_allow_tls; /* --smtp_allow_tls, true: STARTTLS when the server offers it */
    bool show_mail_body; /* --show_mail_body: log the body of every message */
    bool enable_sendmail; /* --enable_sendmail: when true, a startup warning (no sendmail is run) */

    /* appfront's own flags (not in dev_appserver). */
    int max_connections;       /* --max_connections, 10000 */
    long long max_body_bytes;  /* --max_request_body_bytes, 32 MiB */
    int request_deadline_ms;   /* --request_deadline (seconds, float ok), 60 s */
    int head_timeout_ms;       /* --request_head_timeout (seconds), 10 s */
    int instance_startup_ms;   /* --instance_startup_timeout (seconds), 30 s */
    int max_pending_requests;  /* --max_pending_requests, 1000 per module */
    int max_pending_ms;        /* --max_pending_latency (seconds), 10 s */
    long long memcache_max_bytes; /* --memcache_max_bytes, 64 MiB */
    char *build_command;       /* --build_command, NULL */

    char **app_paths; /* positional APP_DIR_OR_APP_YAML arguments */
    size_t n_app_paths;
};

/* Sets every default listed above. */
void af_config_init(struct af_config *cfg);
/* Frees every string the struct owns; the struct itself is the caller's. */
void af_config_release(struct af_config *cfg);

enum af_cli_result {
    AF_CLI_OK = 0,    /* run */
    AF_CLI_HELP = 1,  /* --help was given: usage printed to stdout, exit 0 */
    AF_CLI_ERROR = 2, /* err holds a one-line message: print it, exit 2 */
};

/*
 * Parses argv (argv[0] is the program name) into cfg, which must have been
 * af_config_init()ed. On AF_CLI_ERROR, err (errlen bytes) holds a one-line
 * message naming the flag and what is wrong, e.g.
 *   "--port: 'abc' is not a port number (0-65535)".
 * No app path in normal mode is an error; app paths in api mode are an error.
 * Whatever the result, cfg may hold strings parsed so far: the caller still
 * calls af_config_release(). argv is only read; cfg keeps copies.
 */
enum af_cli_result af_cli_parse(int argc, char **argv, struct af_config *cfg, char *err,
                                size_t errlen);

/* The usage text printed by --help. */
void af_cli_usage(FILE *out);

/*
 * Applies --threadsafe_override to one module. Returns true and sets
 * *threadsafe when the override covers `service` (a bare boolean covers every
 * module; "MODULE:BOOL,..." covers the modules it names, the last item for a
 * module winning). Returns false when app.yaml's threadsafe stands.
 */
bool af_config_threadsafe_override(const struct af_config *cfg, const char *service,
                                   bool *threadsafe);

#endif
