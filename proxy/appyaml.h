/*
 * appyaml — app.yaml loaded with libyaml into a plain struct.
 *
 * The loader checks types and values and reports the first error as
 * "PATH:LINE:COLUMN: what is wrong" (line and column 1-based). An unknown
 * key is not an error: it is logged as a warning naming PATH:LINE:COLUMN and
 * the key. docs/app-yaml.md is the field-by-field support table.
 */
#ifndef AF_APPYAML_H
#define AF_APPYAML_H

#include <stdbool.h>
#include <stddef.h>

enum af_handler_kind {
    AF_HANDLER_SCRIPT,       /* script: (auto, _go_app, a module path) */
    AF_HANDLER_STATIC_DIR,   /* static_dir: */
    AF_HANDLER_STATIC_FILES, /* static_files: + upload: */
};

enum af_login { AF_LOGIN_OPTIONAL, AF_LOGIN_REQUIRED, AF_LOGIN_ADMIN };
enum af_auth_fail { AF_AUTH_FAIL_REDIRECT, AF_AUTH_FAIL_UNAUTHORIZED };
enum af_secure { AF_SECURE_OPTIONAL, AF_SECURE_NEVER, AF_SECURE_ALWAYS };

struct af_header_kv {
    char *name;
    char *value;
};

/* One entry of "handlers:". Strings are NULL when absent. */
struct af_handler {
    int line; /* where the entry starts in app.yaml, for messages */
    char *url; /* the regular expression source as written */
    enum af_handler_kind kind;
    char *script;
    char *static_dir;
    char *static_files;
    char *upload;
    char *mime_type;
    char *expiration;
    bool require_matching_file;
    bool application_readable;
    enum af_login login;
    enum af_auth_fail auth_fail_action;
    enum af_secure secure;
    int redirect_http_response_code; /* 0 when absent; else 301/302/303/307 */
    struct af_header_kv *http_headers;
    size_t n_http_headers;
};

enum af_scaling { AF_SCALING_AUTOMATIC, AF_SCALING_MANUAL, AF_SCALING_BASIC };

/* One entry of "error_handlers:". */
struct af_error_handler {
    char *error_code; /* NULL for the default handler; "over_quota", "timeout", ... */
    char *file;
};

/* The whole file. Every pointer is owned by the struct; af_appyaml_free(). */
struct af_app_yaml {
    char *path; /* absolute path of the app.yaml */
    char *dir;  /* absolute path of the app directory */

    char *application; /* "application:" or "project:"; NULL if absent */
    char *service;     /* "service:" or "module:"; "default" if absent */
    char *version;     /* "version:"; "1" if absent */
    char *runtime;     /* required */
    char *entrypoint;  /* NULL if absent */
    bool threadsafe;   /* default true */
    bool threadsafe_set;
    char *default_expiration;

    struct af_handler *handlers;
    size_t n_handlers;
    struct af_header_kv *env_variables; /* name = variable, value = its value */
    size_t n_env_variables;
    char **skip_files; /* regular expressions, as written */
    size_t n_skip_files;
    struct af_error_handler *error_handlers;
    size_t n_error_handlers;
    /* inbound_services: the ones appfront acts on (the others are
     * production's XMPP, channel and bounce services, accepted). */
    bool inbound_mail;   /* mail: the console's inbound mail page sends */

    enum af_scaling scaling;
    int max_concurrent_requests; /* automatic_scaling; default 10 */
    int max_instances;           /* automatic_scaling; 0 = unlimited */
    int min_instances;           /* automatic_scaling; default 0 */
    int min_idle_instances;      /* automatic_scaling; -1 when absent or "automatic" */
    int max_idle_instances;      /* automatic_scaling; -1 when absent or "automatic" */
    int manual_instances;        /* manual_scaling.instances */
    int basic_max_instances;     /* basic_scaling.max_instances */
    int basic_idle_timeout_s;    /* basic_scaling.idle_timeout in seconds; 0 when absent */
};

/*
 * Loads `path`, which is an app.yaml file or a directory holding app.yaml
 * (or app.yml). On success returns 0 and sets *out (caller frees with
 * af_appyaml_free). On failure returns -1 and writes a one-line message into
 * err, "PATH:LINE:COLUMN: ..." whenever the problem has a position.
 */
int af_appyaml_load(const char *path, struct af_app_yaml **out, char *err, size_t errlen);

/* Same, from a string in memory; `name` is used in messages and dir is left
 * NULL unless base_dir is given. For tests and the fuzzer. */
int af_appyaml_parse(const char *name, const char *text, size_t len, const char *base_dir,
                     struct af_app_yaml **out, char *err, size_t errlen);

void af_appyaml_free(struct af_app_yaml *app);

/* The PCRE2 compile options the loader checks url, upload and skip_files
 * with; code that compiles them again for matching uses the same options so
 * that what loaded also compiles there. Needs <pcre2.h> where it is used. */
#define AF_APPYAML_PCRE2_OPTIONS PCRE2_UTF

/* Parses an expiration ("4d 5h 30m 15s": groups of digits and a d/h/m/s unit,
 * spaces optional) into seconds. Returns 0, or -1 for a malformed or
 * absurdly long (over a century) duration. */
int af_expiration_parse(const char *s, long long *seconds);

/* The longest basic_scaling idle_timeout accepted: a year, far beyond any
 * development session, and small enough for milliseconds in an int64. */
#define AF_IDLE_TIMEOUT_MAX_S (366 * 86400)

/* Parses a basic_scaling idle_timeout: digits then one unit, s, m or h
 * ("10s", "5m", "1h"), no spaces, from 1 s to AF_IDLE_TIMEOUT_MAX_S. Returns
 * 0 with *seconds set, or -1 for anything else ("0s", "1m30s", "1.5m"). */
int af_idle_timeout_parse(const char *s, int *seconds);

/* An application id as App Engine spells one: an optional domain
 * ("example.com:"), then 1-100 lower-case letters, digits and hyphens,
 * neither first nor last a hyphen. The id also names a directory (the
 * default --storage_path), so nothing else passes. The partition ("dev~") is
 * appfront's to add; app.yaml's loader drops one it finds. */
bool af_app_id_ok(const char *s);

/* True for runtimes that only know $PORT (go1xx, python3x, nodejsxx, java,
 * php, ruby): appfront passes PORT. Others ("native", custom) get a Unix
 * socket in APPFRONT_HTTP_SOCKET. */
bool af_runtime_is_stock(const char *runtime);

#endif
