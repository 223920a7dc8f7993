/*
 * cli — the dev_appserver-compatible command line.
 *
 * One table (flags[] below) describes every flag: its name, how its value is
 * checked, where it lands in struct af_config (an offsetof) and its help
 * text. The parser and the --help text are both driven by that table, so a
 * flag cannot be parsed without being documented or the other way round.
 *
 * Parsing is pure: it fills the struct and writes an error message, it never
 * prints, logs or exits. proxy/main.c decides what to do with the result.
 */
#include "proxy/cli.h"
#include "proxy/appyaml.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include "common/xalloc.h"

enum flag_type {
    FLAG_STRING,     /* any non-empty string */
    FLAG_REGEX,      /* a string that must compile with PCRE2 */
    FLAG_BOOL,       /* bare, or yes/no/true/false/1/0 */
    FLAG_NOOP_BOOL,  /* a boolean dev_appserver knows that appfront ignores */
    FLAG_PORT,       /* 0-65535 */
    FLAG_INT,        /* an int within [min, max] */
    FLAG_BYTES,      /* long long byte count, optional K/M/G suffix, within [min, max] */
    FLAG_SECONDS_MS, /* seconds (fractions allowed) stored as int milliseconds */
    FLAG_CHOICE,     /* one of choices[], stored lower-case */
    FLAG_ENV,        /* KEY=VALUE, appended to env_vars */
    FLAG_THREADSAFE, /* a boolean, or MODULE:BOOL,... */
    FLAG_HOST_LIST,  /* a host name or pattern, appended to addn_hosts */
    FLAG_APP_ID,     /* an application id as App Engine spells them */
    FLAG_IGNORED,    /* a value dev_appserver knows that appfront does not act on: warned */
    FLAG_IGNORED_BOOL, /* the same for a boolean */
    FLAG_HELP,
};

struct flag {
    const char *name; /* without the leading "--" */
    enum flag_type type;
    size_t offset; /* into struct af_config; unused for NOOP and HELP */
    const char *metavar;
    const char *help;
    long long min, max;         /* FLAG_INT, FLAG_BYTES */
    const char *const *choices; /* FLAG_CHOICE, NULL-terminated */
    bool appfront_only;         /* listed under "appfront's own flags" in --help */
    const char *why_ignored;    /* FLAG_IGNORED*: the startup warning's reason */
};

static const char *const consistency_policies[] = {"time", "random", "consistent", NULL};
static const char *const log_levels[] = {"debug", "info", "warning", "error", "critical", NULL};

#define OFF(field) offsetof(struct af_config, field)

/* Ranges for appfront's own limits: wide enough for any real use, narrow
 * enough that later arithmetic on them (sums, * 1000) cannot overflow. */
#define MAX_BYTES_FLAG (1LL << 40) /* 1 TiB */
#define MAX_SECONDS_FLAG 86400.0   /* one day */

static const struct flag flags[] = {
    {.name = "host",
     .type = FLAG_STRING,
     .offset = OFF(host),
     .metavar = "HOST",
     .help = "interface the app's module listens on"},
    {.name = "port",
     .type = FLAG_PORT,
     .offset = OFF(port),
     .metavar = "PORT",
     .help = "port of the app's module (0: pick a free one)"},
    {.name = "admin_host",
     .type = FLAG_STRING,
     .offset = OFF(admin_host),
     .metavar = "HOST",
     .help = "interface of the admin server"},
    {.name = "admin_port",
     .type = FLAG_PORT,
     .offset = OFF(admin_port),
     .metavar = "PORT",
     .help = "port of the admin server (0: pick a free one)"},
    {.name = "api_host",
     .type = FLAG_STRING,
     .offset = OFF(api_host),
     .metavar = "HOST",
     .help = "interface of the API server's HTTP listener"},
    {.name = "api_port",
     .type = FLAG_PORT,
     .offset = OFF(api_port),
     .metavar = "PORT",
     .help = "port of the API server's HTTP listener (0: pick a free one)"},
    {.name = "direct_port",
     .type = FLAG_PORT,
     .offset = OFF(direct_port),
     .metavar = "PORT",
     .help = "back-door port straight to the instances, without routing or login "
             "(0: pick a free one)"},
    {.name = "storage_path",
     .type = FLAG_STRING,
     .offset = OFF(storage_path),
     .metavar = "DIR",
     .help = "directory for service state (unset: a private directory per app and user)"},
    {.name = "datastore_path",
     .type = FLAG_STRING,
     .offset = OFF(datastore_path),
     .metavar = "FILE",
     .help = "SQLite file of the datastore (unset: under --storage_path)"},
    {.name = "logs_path",
     .type = FLAG_STRING,
     .offset = OFF(logs_path),
     .metavar = "FILE",
     .help = "also keep request logs and app log lines in this SQLite file, across restarts "
             "(unset: in memory only)"},
    {.name = "blobstore_path",
     .type = FLAG_STRING,
     .offset = OFF(blobstore_path),
     .metavar = "DIR",
     .help = "directory of the blobstore's files (unset: blobs/ under --storage_path)"},
    {.name = "clear_datastore",
     .type = FLAG_BOOL,
     .offset = OFF(clear_datastore),
     .metavar = "BOOL",
     .help = "empty the datastore at start"},
    {.name = "clear_search_indexes",
     .type = FLAG_BOOL,
     .offset = OFF(clear_search_indexes),
     .metavar = "BOOL",
     .help = "remove every search index and document at start"},
    {.name = "datastore_consistency_policy",
     .type = FLAG_CHOICE,
     .offset = OFF(datastore_consistency_policy),
     .metavar = "POLICY",
     .help = "how eventually consistent queries behave: time, random or consistent",
     .choices = consistency_policies},
    {.name = "require_indexes",
     .type = FLAG_BOOL,
     .offset = OFF(require_indexes),
     .metavar = "BOOL",
     .help = "fail queries that need a composite index index.yaml does not define, instead "
             "of adding it there"},
    {.name = "automatic_restart",
     .type = FLAG_BOOL,
     .offset = OFF(automatic_restart),
     .metavar = "BOOL",
     .help = "restart instances when app files change"},
    {.name = "allow_skipped_files",
     .type = FLAG_BOOL,
     .offset = OFF(allow_skipped_files),
     .metavar = "BOOL",
     .help = "let the app read files matched by skip_files"},
    {.name = "watcher_ignore_re",
     .type = FLAG_REGEX,
     .offset = OFF(watcher_ignore_re),
     .metavar = "REGEX",
     .help = "changes to paths matching this regular expression do not restart instances"},
    {.name = "use_mtime_file_watcher",
     .type = FLAG_BOOL,
     .offset = OFF(use_mtime_file_watcher),
     .metavar = "BOOL",
     .help = "poll modification times instead of using inotify"},
    {.name = "max_module_instances",
     .type = FLAG_INT,
     .offset = OFF(max_module_instances),
     .metavar = "N",
     .help = "most instances per module (0: no limit)",
     .min = 0,
     .max = INT_MAX},
    {.name = "threadsafe_override",
     .type = FLAG_THREADSAFE,
     .offset = OFF(threadsafe_override),
     .metavar = "BOOL|MODULE:BOOL,...",
     .help = "override app.yaml's threadsafe for every module, or per module"},
    {.name = "env_var",
     .type = FLAG_ENV,
     .metavar = "KEY=VALUE",
     .help = "extra environment variable for instances (repeatable)"},
    {.name = "log_level",
     .type = FLAG_CHOICE,
     .offset = OFF(log_level),
     .metavar = "LEVEL",
     .help = "lowest level of app log lines shown: debug, info, warning, error, critical",
     .choices = log_levels},
    {.name = "dev_appserver_log_level",
     .type = FLAG_CHOICE,
     .offset = OFF(dev_appserver_log_level),
     .metavar = "LEVEL",
     .help = "lowest level of appfront's own log lines: debug, info, warning, error, critical",
     .choices = log_levels},
    {.name = "enable_task_running",
     .type = FLAG_BOOL,
     .offset = OFF(enable_task_running),
     .metavar = "BOOL",
     .help = "run push-queue tasks automatically"},
    {.name = "smtp_host",
     .type = FLAG_STRING,
     .offset = OFF(smtp_host),
     .metavar = "HOST",
     .help = "deliver mail through this SMTP server (unset: mail is logged, not sent)"},
    {.name = "smtp_port",
     .type = FLAG_INT,
     .offset = OFF(smtp_port),
     .metavar = "PORT",
     .help = "port of the SMTP server",
     .min = 1,
     .max = 65535},
    {.name = "smtp_user",
     .type = FLAG_STRING,
     .offset = OFF(smtp_user),
     .metavar = "USER",
     .help = "log in to the SMTP server as this user (AUTH PLAIN or LOGIN)"},
    {.name = "smtp_password",
     .type = FLAG_STRING,
     .offset = OFF(smtp_password),
     .metavar = "PASSWORD",
     .help = "password for --smtp_user"},
    {.name = "smtp_allow_tls",
     .type = FLAG_BOOL,
     .offset = OFF(smtp_allow_tls),
     .metavar = "BOOL",
     .help = "use STARTTLS when the SMTP server offers it"},
    {.name = "show_mail_body",
     .type = FLAG_BOOL,
     .offset = OFF(show_mail_body),
     .metavar = "BOOL",
     .help = "log the body of every mail the app sends"},
    {.name = "enable_sendmail",
     .type = FLAG_BOOL,
     .offset = OFF(enable_sendmail),
     .metavar = "BOOL",
     .help = "accepted; no effect (a warning when true: use --smtp_host=localhost)"},
    {.name = "skip_sdk_update_check",
     .type = FLAG_NOOP_BOOL,
     .metavar = "BOOL",
     .help = "accepted for compatibility; no effect"},
    {.name = "support_datastore_emulator",
     .type = FLAG_NOOP_BOOL,
     .metavar = "BOOL",
     .help = "accepted for compatibility; no effect"},
    {.name = "application",
     .type = FLAG_APP_ID,
     .offset = OFF(application),
     .metavar = "APP_ID",
     .help = "the application id, overriding app.yaml's application (also -A APP_ID)"},
    {.name = "auth_domain",
     .type = FLAG_STRING,
     .offset = OFF(auth_domain),
     .metavar = "DOMAIN",
     .help = "auth domain of signed-in users (X-AppEngine-Auth-Domain, the OAuth user)"},
    {.name = "default_gcs_bucket_name",
     .type = FLAG_STRING,
     .offset = OFF(default_gcs_bucket_name),
     .metavar = "NAME",
     .help = "what app_identity's GetDefaultGcsBucketName answers (unset: APP_ID.appspot.com)"},
    {.name = "enable_host_checking",
     .type = FLAG_BOOL,
     .offset = OFF(enable_host_checking),
     .metavar = "BOOL",
     .help = "the admin server and the API server's HTTP port answer only this machine's host "
             "names and IP addresses (against DNS rebinding)"},
    {.name = "addn_host",
     .type = FLAG_HOST_LIST,
     .metavar = "HOST",
     .help = "one more host name they answer: NAME, *.DOMAIN (one label) or **.DOMAIN (any "
             "depth); repeatable"},
    /* dev_appserver flags for features appfront does not have, or for
     * other runtimes' tooling: scripts that pass them still run, and the
     * startup warning says what the flag would have done. */
    {.name = "search_indexes_path",
     .type = FLAG_IGNORED,
     .metavar = "FILE",
     .help = "accepted; no effect (search indexes live in STORAGE/search.sqlite3)",
     .why_ignored = "search indexes live in search.sqlite3 under --storage_path"},
    {.name = "enable_console",
     .type = FLAG_IGNORED_BOOL,
     .metavar = "BOOL",
     .help = "accepted; no effect (there is no interactive console)",
     .why_ignored = "there is no interactive console"},
    {.name = "appidentity_email_address",
     .type = FLAG_IGNORED,
     .metavar = "EMAIL",
     .help = "accepted; no effect (app_identity signs with a development key)",
     .why_ignored = "app_identity answers with its development account and key"},
    {.name = "appidentity_private_key_path",
     .type = FLAG_IGNORED,
     .metavar = "FILE",
     .help = "accepted; no effect (app_identity signs with a development key)",
     .why_ignored = "app_identity answers with its development account and key"},
    {.name = "ssl_certificate_path",
     .type = FLAG_IGNORED,
     .metavar = "FILE",
     .help = "accepted; no effect (there is no https port)",
     .why_ignored = "there is no https port"},
    {.name = "ssl_certificate_key_path",
     .type = FLAG_IGNORED,
     .metavar = "FILE",
     .help = "accepted; no effect (there is no https port)",
     .why_ignored = "there is no https port"},
    {.name = "ssl_port",
     .type = FLAG_IGNORED,
     .metavar = "PORT",
     .help = "accepted; no effect (there is no https port)",
     .why_ignored = "there is no https port"},
    {.name = "datastore_emulator_cmd",
     .type = FLAG_IGNORED,
     .metavar = "COMMAND",
     .help = "accepted; no effect (the datastore is appfront's own, in SQLite)",
     .why_ignored = "the datastore is appfront's own, in SQLite"},
    {.name = "datastore_emulator_port",
     .type = FLAG_IGNORED,
     .metavar = "PORT",
     .help = "accepted; no effect (the datastore is appfront's own, in SQLite)",
     .why_ignored = "the datastore is appfront's own, in SQLite"},
    {.name = "python_virtualenv_path",
     .type = FLAG_IGNORED,
     .metavar = "DIR",
     .help = "accepted; no effect (instances run their app.yaml entrypoint)",
     .why_ignored = "instances run their app.yaml entrypoint"},
    {.name = "runtime_python_path",
     .type = FLAG_IGNORED,
     .metavar = "FILE",
     .help = "accepted; no effect (instances run their app.yaml entrypoint)",
     .why_ignored = "instances run their app.yaml entrypoint"},
    {.name = "php_executable_path",
     .type = FLAG_IGNORED,
     .metavar = "FILE",
     .help = "accepted; no effect (instances run their app.yaml entrypoint)",
     .why_ignored = "instances run their app.yaml entrypoint"},
    {.name = "help", .type = FLAG_HELP, .help = "print this text and exit (also -h)"},

    {.name = "max_connections",
     .type = FLAG_INT,
     .offset = OFF(max_connections),
     .metavar = "N",
     .help = "most client connections open at once",
     .min = 1,
     .max = 1000000,
     .appfront_only = true},
    {.name = "max_request_body_bytes",
     .type = FLAG_BYTES,
     .offset = OFF(max_body_bytes),
     .metavar = "BYTES",
     .help = "largest request body accepted (K, M, G suffixes allowed)",
     .min = 0,
     .max = MAX_BYTES_FLAG,
     .appfront_only = true},
    {.name = "request_deadline",
     .type = FLAG_SECONDS_MS,
     .offset = OFF(request_deadline_ms),
     .metavar = "SECONDS",
     .help = "time an app has to answer a request",
     .appfront_only = true},
    {.name = "request_head_timeout",
     .type = FLAG_SECONDS_MS,
     .offset = OFF(head_timeout_ms),
     .metavar = "SECONDS",
     .help = "time a client has to send a request's headers",
     .appfront_only = true},
    {.name = "instance_startup_timeout",
     .type = FLAG_SECONDS_MS,
     .offset = OFF(instance_startup_ms),
     .metavar = "SECONDS",
     .help = "time an instance has to start accepting connections",
     .appfront_only = true},
    {.name = "max_pending_requests",
     .type = FLAG_INT,
     .offset = OFF(max_pending_requests),
     .metavar = "N",
     .help = "requests that may wait for an instance per module; more get 503",
     .min = 0,
     .max = 1000000,
     .appfront_only = true},
    {.name = "max_pending_latency",
     .type = FLAG_SECONDS_MS,
     .offset = OFF(max_pending_ms),
     .metavar = "SECONDS",
     .help = "time a request may wait for an instance before a 503",
     .appfront_only = true},
    {.name = "memcache_max_bytes",
     .type = FLAG_BYTES,
     .offset = OFF(memcache_max_bytes),
     .metavar = "BYTES",
     .help = "memory the memcache service may hold (K, M, G suffixes allowed)",
     .min = 1,
     .max = MAX_BYTES_FLAG,
     .appfront_only = true},
    {.name = "build_command",
     .type = FLAG_STRING,
     .offset = OFF(build_command),
     .metavar = "COMMAND",
     .help = "shell command that builds the app before instances start",
     .appfront_only = true},
};

#define N_FLAGS (sizeof(flags) / sizeof(flags[0]))

void af_config_init(struct af_config *cfg)
{
    memset(cfg, 0, sizeof(*cfg));
    cfg->host = af_xstrdup("localhost");
    cfg->port = 8080;
    cfg->admin_host = af_xstrdup("localhost");
    cfg->admin_port = 8000;
    cfg->api_host = af_xstrdup("localhost");
    cfg->api_port = 0;
    cfg->direct_port = -1;
    cfg->datastore_consistency_policy = af_xstrdup("time");
    cfg->automatic_restart = true;
    cfg->log_level = af_xstrdup("info");
    cfg->dev_appserver_log_level = af_xstrdup("info");
    cfg->enable_task_running = true;
    cfg->auth_domain = af_xstrdup("gmail.com");
    cfg->enable_host_checking = true;
    cfg->smtp_port = 25;
    cfg->smtp_allow_tls = true;
    cfg->max_connections = 10000;
    cfg->max_body_bytes = 32LL << 20;
    cfg->request_deadline_ms = 60000;
    cfg->head_timeout_ms = 10000;
    cfg->instance_startup_ms = 30000;
    cfg->max_pending_requests = 1000;
    cfg->max_pending_ms = 10000;
    cfg->memcache_max_bytes = 64LL << 20;
}

void af_config_release(struct af_config *cfg)
{
    free(cfg->host);
    free(cfg->admin_host);
    free(cfg->api_host);
    free(cfg->storage_path);
    free(cfg->datastore_path);
    free(cfg->logs_path);
    free(cfg->blobstore_path);
    free(cfg->datastore_consistency_policy);
    free(cfg->watcher_ignore_re);
    free(cfg->threadsafe_override);
    for (size_t i = 0; i < cfg->n_env_vars; i++) {
        free(cfg->env_vars[i].key);
        free(cfg->env_vars[i].value);
    }
    free(cfg->env_vars);
    free(cfg->log_level);
    free(cfg->dev_appserver_log_level);
    free(cfg->build_command);
    free(cfg->application);
    free(cfg->auth_domain);
    free(cfg->default_gcs_bucket_name);
    for (size_t i = 0; i < cfg->n_ignored; i++)
        free(cfg->ignored[i]);
    for (size_t i = 0; i < cfg->n_addn_hosts; i++)
        free(cfg->addn_hosts[i]);
    free(cfg->addn_hosts);
    free(cfg->ignored);
    free(cfg->smtp_host);
    free(cfg->smtp_user);
    free(cfg->smtp_password);
    for (size_t i = 0; i < cfg->n_app_paths; i++)
        free(cfg->app_paths[i]);
    free(cfg->app_paths);
    /* Leave a struct that can be released again or re-initialized safely. */
    memset(cfg, 0, sizeof(*cfg));
}

/* ---- values ---------------------------------------------------------- */

static void set_err(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void set_err(char *err, size_t errlen, const char *fmt, ...)
{
    if (!err || errlen == 0)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

/* The boolean words dev_appserver accepts, in any case. */
static const struct {
    const char *word;
    bool value;
} bool_words[] = {
    {"yes", true}, {"true", true}, {"1", true}, {"no", false}, {"false", false}, {"0", false},
};

static bool parse_bool_word(const char *s, bool *out)
{
    for (size_t i = 0; i < sizeof(bool_words) / sizeof(bool_words[0]); i++) {
        if (strcasecmp(s, bool_words[i].word) == 0) {
            *out = bool_words[i].value;
            return true;
        }
    }
    return false;
}

/* Decimal digits only: strtoll alone would take " 12", "+12" and "0x1f",
 * none of which a person means as a port or a count. */
static bool parse_decimal(const char *s, long long *out, const char **end)
{
    if (!(*s >= '0' && *s <= '9'))
        return false;
    long long v = 0;
    for (; *s >= '0' && *s <= '9'; s++) {
        int d = *s - '0';
        if (v > (LLONG_MAX - d) / 10)
            return false;
        v = v * 10 + d;
    }
    *out = v;
    *end = s;
    return true;
}

static void *field_at(struct af_config *cfg, const struct flag *f)
{
    return (char *)cfg + f->offset;
}

typedef int (*setter_fn)(const struct flag *f, const char *value, struct af_config *cfg, char *err,
                         size_t errlen);

static int set_string(const struct flag *f, const char *value, struct af_config *cfg, char *err,
                      size_t errlen)
{
    if (*value == '\0') {
        set_err(err, errlen, "--%s: empty value", f->name);
        return -1;
    }
    char **slot = field_at(cfg, f);
    free(*slot);
    *slot = af_xstrdup(value);
    return 0;
}

static int set_regex(const struct flag *f, const char *value, struct af_config *cfg, char *err,
                     size_t errlen)
{
    int code;
    PCRE2_SIZE offset;
    pcre2_code *re =
        pcre2_compile((PCRE2_SPTR)value, PCRE2_ZERO_TERMINATED, PCRE2_UTF, &code, &offset, NULL);
    if (!re) {
        PCRE2_UCHAR msg[256];
        pcre2_get_error_message(code, msg, sizeof(msg));
        set_err(err, errlen, "--%s: bad regular expression '%s': %s at offset %zu", f->name, value,
                (const char *)msg, (size_t)offset);
        return -1;
    }
    pcre2_code_free(re);
    return set_string(f, value, cfg, err, errlen);
}

static int set_bool(const struct flag *f, const char *value, struct af_config *cfg, char *err,
                    size_t errlen)
{
    bool b;
    if (!parse_bool_word(value, &b)) {
        set_err(err, errlen, "--%s: '%s' is not a boolean (yes/no/true/false/1/0)", f->name, value);
        return -1;
    }
    if (f->type == FLAG_BOOL)
        *(bool *)field_at(cfg, f) = b;
    return 0;
}

static int set_port(const struct flag *f, const char *value, struct af_config *cfg, char *err,
                    size_t errlen)
{
    long long v;
    const char *end;
    if (!parse_decimal(value, &v, &end) || *end != '\0' || v > 65535) {
        set_err(err, errlen, "--%s: '%s' is not a port number (0-65535)", f->name, value);
        return -1;
    }
    *(int *)field_at(cfg, f) = (int)v;
    return 0;
}

static int set_int(const struct flag *f, const char *value, struct af_config *cfg, char *err,
                   size_t errlen)
{
    long long v;
    const char *end;
    if (!parse_decimal(value, &v, &end) || *end != '\0' || v < f->min || v > f->max) {
        set_err(err, errlen, "--%s: '%s' is not an integer from %lld to %lld", f->name, value,
                f->min, f->max);
        return -1;
    }
    *(int *)field_at(cfg, f) = (int)v;
    return 0;
}

/* Binary multiples, as memory sizes are usually meant. */
static const struct {
    char suffix;
    int shift;
} byte_suffixes[] = {{'k', 10}, {'m', 20}, {'g', 30}};

static int set_bytes(const struct flag *f, const char *value, struct af_config *cfg, char *err,
                     size_t errlen)
{
    long long v;
    const char *end;
    bool ok = parse_decimal(value, &v, &end);
    if (ok && *end != '\0') {
        int shift = -1;
        for (size_t i = 0; i < sizeof(byte_suffixes) / sizeof(byte_suffixes[0]); i++) {
            if ((end[0] | 0x20) == byte_suffixes[i].suffix)
                shift = byte_suffixes[i].shift;
        }
        /* Accept "64M" and "64MiB"/"64MB" alike. */
        const char *rest = end + 1;
        ok = shift >= 0 &&
             (*rest == '\0' || strcasecmp(rest, "b") == 0 || strcasecmp(rest, "ib") == 0);
        if (ok && v > (f->max >> shift))
            ok = false;
        if (ok)
            v <<= shift;
    }
    if (!ok || v < f->min || v > f->max) {
        set_err(err, errlen,
                "--%s: '%s' is not a byte count from %lld to %lld (K, M, G suffixes allowed)",
                f->name, value, f->min, f->max);
        return -1;
    }
    *(long long *)field_at(cfg, f) = v;
    return 0;
}

static int set_seconds_ms(const struct flag *f, const char *value, struct af_config *cfg, char *err,
                          size_t errlen)
{
    char *end;
    errno = 0;
    double secs = strtod(value, &end);
    /* strtod also reads "inf", "nan" and hex floats; only plain decimals are meant. */
    bool plain = strspn(value, "0123456789.") == strlen(value);
    if (!plain || end == value || *end != '\0' || errno != 0 || !(secs > 0) ||
        secs > MAX_SECONDS_FLAG) {
        set_err(err, errlen, "--%s: '%s' is not a number of seconds above 0 and at most %.0f",
                f->name, value, MAX_SECONDS_FLAG);
        return -1;
    }
    long ms = lround(secs * 1000.0);
    *(int *)field_at(cfg, f) = ms < 1 ? 1 : (int)ms;
    return 0;
}

static int set_choice(const struct flag *f, const char *value, struct af_config *cfg, char *err,
                      size_t errlen)
{
    for (const char *const *c = f->choices; *c; c++) {
        if (strcasecmp(value, *c) == 0) {
            char **slot = field_at(cfg, f);
            free(*slot);
            *slot = af_xstrdup(*c);
            return 0;
        }
    }
    char list[256] = "";
    size_t off = 0;
    for (const char *const *c = f->choices; *c && off < sizeof(list); c++)
        off += (size_t)snprintf(list + off, sizeof(list) - off, "%s%s", c == f->choices ? "" : ", ",
                                *c);
    set_err(err, errlen, "--%s: '%s' is not one of %s", f->name, value, list);
    return -1;
}

static int set_env(const struct flag *f, const char *value, struct af_config *cfg, char *err,
                   size_t errlen)
{
    const char *eq = strchr(value, '=');
    if (!eq) {
        set_err(err, errlen, "--%s: '%s' is not KEY=VALUE (no '=')", f->name, value);
        return -1;
    }
    if (eq == value) {
        set_err(err, errlen, "--%s: '%s' is not KEY=VALUE (empty KEY)", f->name, value);
        return -1;
    }
    cfg->env_vars = af_xrealloc(cfg->env_vars, (cfg->n_env_vars + 1) * sizeof(cfg->env_vars[0]));
    struct af_env_kv *kv = &cfg->env_vars[cfg->n_env_vars++];
    kv->key = af_xstrndup(value, (size_t)(eq - value));
    kv->value = af_xstrdup(eq + 1);
    return 0;
}

/* Checks one "MODULE:BOOL" item of --threadsafe_override, len bytes at s. */
static bool threadsafe_item_ok(const char *s, size_t len)
{
    const char *colon = memchr(s, ':', len);
    if (!colon || colon == s)
        return false;
    char word[8];
    size_t wlen = len - (size_t)(colon + 1 - s);
    if (wlen == 0 || wlen >= sizeof(word))
        return false;
    memcpy(word, colon + 1, wlen);
    word[wlen] = '\0';
    bool b;
    return parse_bool_word(word, &b);
}

static int set_threadsafe(const struct flag *f, const char *value, struct af_config *cfg, char *err,
                          size_t errlen)
{
    bool b;
    bool ok = parse_bool_word(value, &b);
    if (!ok && *value != '\0') {
        ok = true;
        for (const char *p = value; ok;) {
            size_t len = strcspn(p, ",");
            ok = threadsafe_item_ok(p, len);
            if (p[len] == '\0')
                break;
            p += len + 1;
        }
    }
    if (!ok) {
        set_err(err, errlen, "--%s: '%s' is not a boolean or MODULE:BOOL,MODULE:BOOL,...", f->name,
                value);
        return -1;
    }
    return set_string(f, value, cfg, err, errlen);
}

static int set_app_id(const struct flag *f, const char *value, struct af_config *cfg, char *err,
                      size_t errlen)
{
    if (!af_app_id_ok(value)) {
        set_err(err, errlen,
                "--%s: '%s' is not an application id (1-100 lower-case letters, digits and "
                "hyphens, optionally after DOMAIN:)",
                f->name, value);
        return -1;
    }
    return set_string(f, value, cfg, err, errlen);
}

/* A host name, "*.domain" or "**.domain": letters, digits, '-', '.', '_'. */
static int set_host_list(const struct flag *f, const char *value, struct af_config *cfg,
                         char *err, size_t errlen)
{
    const char *name = value;
    if (strncmp(name, "**.", 3) == 0)
        name += 3;
    else if (strncmp(name, "*.", 2) == 0)
        name += 2;
    size_t n = strlen(name);
    if (n == 0 || n > 253 || name[0] == '.' ||
        strspn(name, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._") != n) {
        set_err(err, errlen, "--%s: '%s' is not a host name, *.DOMAIN or **.DOMAIN", f->name,
                value);
        return -1;
    }
    cfg->addn_hosts =
        af_xrealloc(cfg->addn_hosts, (cfg->n_addn_hosts + 1) * sizeof(cfg->addn_hosts[0]));
    cfg->addn_hosts[cfg->n_addn_hosts++] = af_xstrdup(value);
    return 0;
}

/* Records the startup warning of an ignored flag, once however often the
 * flag is given. */
static void add_ignored(struct af_config *cfg, const char *name, const char *why)
{
    char *line = af_xasprintf("--%s has no effect in appfront: %s", name, why);
    for (size_t i = 0; i < cfg->n_ignored; i++) {
        if (strcmp(cfg->ignored[i], line) == 0) {
            free(line);
            return;
        }
    }
    cfg->ignored = af_xrealloc(cfg->ignored, (cfg->n_ignored + 1) * sizeof(cfg->ignored[0]));
    cfg->ignored[cfg->n_ignored++] = line;
}

/* Checks the value of an ignored flag (a boolean, or any non-empty
 * string) and records its startup warning. */
static int set_ignored(const struct flag *f, const char *value, struct af_config *cfg, char *err,
                       size_t errlen)
{
    if (f->type == FLAG_IGNORED_BOOL) {
        if (set_bool(f, value, cfg, err, errlen) < 0)
            return -1;
    } else if (*value == '\0') {
        set_err(err, errlen, "--%s: empty value", f->name);
        return -1;
    }
    add_ignored(cfg, f->name, f->why_ignored);
    return 0;
}

static const setter_fn setters[] = {
    [FLAG_STRING] = set_string,
    [FLAG_REGEX] = set_regex,
    [FLAG_BOOL] = set_bool,
    [FLAG_NOOP_BOOL] = set_bool,
    [FLAG_PORT] = set_port,
    [FLAG_INT] = set_int,
    [FLAG_BYTES] = set_bytes,
    [FLAG_SECONDS_MS] = set_seconds_ms,
    [FLAG_CHOICE] = set_choice,
    [FLAG_ENV] = set_env,
    [FLAG_THREADSAFE] = set_threadsafe,
    [FLAG_HOST_LIST] = set_host_list,
    [FLAG_APP_ID] = set_app_id,
    [FLAG_IGNORED] = set_ignored,
    [FLAG_IGNORED_BOOL] = set_ignored,
    [FLAG_HELP] = NULL,
};

bool af_config_threadsafe_override(const struct af_config *cfg, const char *service,
                                   bool *threadsafe)
{
    const char *v = cfg->threadsafe_override;
    if (!v)
        return false;
    if (parse_bool_word(v, threadsafe))
        return true;
    size_t slen = strlen(service);
    bool found = false;
    /* The format was checked by the parser; a later item for the same
     * module wins, as with repeated flags. */
    for (const char *p = v; *p;) {
        size_t len = strcspn(p, ",");
        const char *colon = memchr(p, ':', len);
        if (colon && (size_t)(colon - p) == slen && memcmp(p, service, slen) == 0) {
            char word[8];
            size_t wlen = len - (size_t)(colon + 1 - p);
            if (wlen < sizeof(word)) {
                memcpy(word, colon + 1, wlen);
                word[wlen] = '\0';
                found = parse_bool_word(word, threadsafe) || found;
            }
        }
        p += len;
        if (*p == ',')
            p++;
    }
    return found;
}

/* ---- argv ------------------------------------------------------------ */

static const struct flag *find_flag(const char *name, size_t len)
{
    for (size_t i = 0; i < N_FLAGS; i++) {
        if (strlen(flags[i].name) == len && memcmp(flags[i].name, name, len) == 0)
            return &flags[i];
    }
    return NULL;
}

static bool takes_bool(const struct flag *f)
{
    return f->type == FLAG_BOOL || f->type == FLAG_NOOP_BOOL || f->type == FLAG_IGNORED_BOOL;
}

static void add_app_path(struct af_config *cfg, const char *path)
{
    cfg->app_paths =
        af_xrealloc(cfg->app_paths, (cfg->n_app_paths + 1) * sizeof(cfg->app_paths[0]));
    cfg->app_paths[cfg->n_app_paths++] = af_xstrdup(path);
}

/* A host name or an address as getaddrinfo takes it: letters, digits and
 * ".-_:" (IPv6 without brackets; "[::1]" is taken and unbracketed here). */
static bool host_ok(char *host)
{
    size_t n = strlen(host);
    if (n >= 2 && host[0] == '[' && host[n - 1] == ']') {
        memmove(host, host + 1, n - 2);
        host[n - 2] = '\0';
        n -= 2;
    }
    if (n == 0 || n > 253)
        return false;
    for (const char *p = host; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
              strchr(".-_:", *p)))
            return false;
    return true;
}

/* What the mail flags mean together, checked once every flag is read. */
static int check_mail_flags(struct af_config *cfg, char *err, size_t errlen)
{
    /* Like the flags of features appfront lacks (FLAG_IGNORED), a warning;
     * but only when it asks for sendmail: "false" is what appfront does. */
    if (cfg->enable_sendmail)
        add_ignored(cfg, "enable_sendmail",
                    "appfront runs no sendmail program; give --smtp_host=localhost to deliver "
                    "through the local mail server");
    if (cfg->smtp_host && !host_ok(cfg->smtp_host)) {
        set_err(err, errlen, "--smtp_host: '%s' is not a host name or address", cfg->smtp_host);
        return -1;
    }
    if (!cfg->smtp_host && (cfg->smtp_user || cfg->smtp_password)) {
        set_err(err, errlen, "--%s: has no effect without --smtp_host",
                cfg->smtp_user ? "smtp_user" : "smtp_password");
        return -1;
    }
    if (cfg->smtp_password && !cfg->smtp_user) {
        set_err(err, errlen, "--smtp_password: needs --smtp_user (the user to log in as)");
        return -1;
    }
    return 0;
}

/* "-port" is almost always a mistyped "--port": say so instead of only
 * "unknown". dev_appserver's argparse has no single-dash long flags either. */
static void single_dash_error(const char *arg, char *err, size_t errlen)
{
    const char *name = arg + 1;
    size_t len = strcspn(name, "=");
    if (find_flag(name, len))
        set_err(err, errlen, "unknown flag '%s': flags take two dashes, as in '-%s'", arg, arg);
    else
        set_err(err, errlen, "unknown flag '%s' (see --help)", arg);
}

enum af_cli_result af_cli_parse(int argc, char **argv, struct af_config *cfg, char *err,
                                size_t errlen)
{
    bool flags_done = false; /* after "--" every argument is an app path */
    bool seen_positional = false;

    for (int i = 1; i < argc; i++) {
        const char *arg = argv[i];

        if (!flags_done && strcmp(arg, "--") == 0) {
            flags_done = true;
            continue;
        }
        if (flags_done || arg[0] != '-' || arg[1] == '\0') {
            /* The API-only mode is named by the first positional argument; an
             * app directory called "api" can still be given as "./api" or
             * after "--". */
            if (!seen_positional && !flags_done && strcmp(arg, "api") == 0)
                cfg->api_only = true;
            else
                add_app_path(cfg, arg);
            seen_positional = true;
            continue;
        }
        if (arg[1] != '-') {
            if (strcmp(arg, "-h") == 0)
                return AF_CLI_HELP;
            if (arg[1] == 'A') { /* dev_appserver's one short flag besides -h: -A APP_ID, -AAPP_ID */
                const char *value = arg[2]                                            ? arg + 2
                                    : i + 1 < argc && strncmp(argv[i + 1], "--", 2) != 0 ? argv[++i]
                                                                                          : NULL;
                if (!value) {
                    set_err(err, errlen, "-A: missing value (APP_ID)");
                    return AF_CLI_ERROR;
                }
                if (set_app_id(find_flag("application", 11), value, cfg, err, errlen) != 0)
                    return AF_CLI_ERROR;
                continue;
            }
            single_dash_error(arg, err, errlen);
            return AF_CLI_ERROR;
        }

        const char *name = arg + 2;
        const char *eq = strchr(name, '=');
        size_t name_len = eq ? (size_t)(eq - name) : strlen(name);
        const struct flag *f = find_flag(name, name_len);
        if (!f) {
            set_err(err, errlen, "unknown flag '--%.*s' (see --help)", (int)name_len, name);
            return AF_CLI_ERROR;
        }
        if (f->type == FLAG_HELP) {
            if (eq) {
                set_err(err, errlen, "--help: takes no value, got '%s'", eq + 1);
                return AF_CLI_ERROR;
            }
            return AF_CLI_HELP;
        }

        const char *value;
        bool b;
        if (eq) {
            value = eq + 1;
        } else if (takes_bool(f)) {
            /* A bare boolean flag means true; the next argument is its value
             * only when it is a boolean word, so "--clear_datastore app/"
             * keeps app/ as the app path. */
            if (i + 1 < argc && parse_bool_word(argv[i + 1], &b))
                value = argv[++i];
            else
                value = "true";
        } else if (i + 1 < argc && strncmp(argv[i + 1], "--", 2) != 0) {
            value = argv[++i];
        } else {
            set_err(err, errlen, "--%s: missing value (%s)", f->name, f->metavar);
            return AF_CLI_ERROR;
        }
        if (setters[f->type](f, value, cfg, err, errlen) != 0)
            return AF_CLI_ERROR;
    }

    if (check_mail_flags(cfg, err, errlen) != 0)
        return AF_CLI_ERROR;
    if (cfg->api_only && cfg->n_app_paths > 0) {
        set_err(err, errlen, "'appfront api' runs the API server alone and takes no app, got '%s'",
                cfg->app_paths[0]);
        return AF_CLI_ERROR;
    }
    if (!cfg->api_only && cfg->n_app_paths == 0) {
        set_err(err, errlen,
                "no app given: appfront [flags] APP_DIR_OR_APP_YAML... or appfront api [flags]");
        return AF_CLI_ERROR;
    }
    return AF_CLI_OK;
}

/* ---- usage ----------------------------------------------------------- */

/* Writes the default of f, read from a freshly initialized config, so the
 * help text cannot drift from af_config_init(). */
static void format_default(const struct flag *f, struct af_config *def, char *buf, size_t len)
{
    const void *p = field_at(def, f);
    buf[0] = '\0';
    switch (f->type) {
    case FLAG_STRING:
    case FLAG_REGEX:
    case FLAG_CHOICE:
    case FLAG_THREADSAFE:
    case FLAG_APP_ID:
        if (*(char *const *)p)
            snprintf(buf, len, "%s", *(char *const *)p);
        break;
    case FLAG_BOOL:
        snprintf(buf, len, "%s", *(const bool *)p ? "true" : "false");
        break;
    case FLAG_PORT:
        if (*(const int *)p >= 0)
            snprintf(buf, len, "%d", *(const int *)p);
        else
            snprintf(buf, len, "off");
        break;
    case FLAG_INT:
        snprintf(buf, len, "%d", *(const int *)p);
        break;
    case FLAG_BYTES:
        snprintf(buf, len, "%lld", *(const long long *)p);
        break;
    case FLAG_SECONDS_MS:
        snprintf(buf, len, "%g", *(const int *)p / 1000.0);
        break;
    case FLAG_NOOP_BOOL:
    case FLAG_HOST_LIST:
    case FLAG_IGNORED:
    case FLAG_IGNORED_BOOL:
    case FLAG_ENV:
    case FLAG_HELP:
        break;
    }
}

static void usage_section(FILE *out, bool appfront_only, struct af_config *def)
{
    for (size_t i = 0; i < N_FLAGS; i++) {
        const struct flag *f = &flags[i];
        if (f->appfront_only != appfront_only)
            continue;
        char left[96];
        if (f->metavar)
            snprintf(left, sizeof(left), "--%s=%s", f->name, f->metavar);
        else
            snprintf(left, sizeof(left), "--%s", f->name);
        char def_text[64];
        format_default(f, def, def_text, sizeof(def_text));
        fprintf(out, "  %s\n      %s", left, f->help);
        if (def_text[0])
            fprintf(out, " (default: %s)", def_text);
        fputc('\n', out);
    }
}

void af_cli_usage(FILE *out)
{
    struct af_config def;
    af_config_init(&def);
    fputs("usage: appfront [flags] APP_DIR_OR_APP_YAML...\n"
          "       appfront api [flags]\n"
          "\n"
          "A local App Engine development server for native app instances.\n"
          "Flags take --flag=value or --flag value; boolean flags may be given bare\n"
          "(--flag) or with yes/no/true/false/1/0. Port 0 picks a free port.\n"
          "\n"
          "dev_appserver flags:\n",
          out);
    usage_section(out, false, &def);
    fputs("\nappfront's own flags:\n", out);
    usage_section(out, true, &def);
    af_config_release(&def);
}
