/* Unit tests for proxy/cli.c: every flag form, defaults, and each error. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "proxy/cli.h"

#define MAX_ARGS 32

struct run {
    struct af_config cfg;
    enum af_cli_result rc;
    char err[512];
};

/* Parses a NULL-terminated list of arguments (without the program name). */
static void parse_list(struct run *r, const char *first, va_list ap)
{
    char *argv[MAX_ARGS];
    int argc = 0;
    argv[argc++] = "appfront";
    for (const char *a = first; a; a = va_arg(ap, const char *)) {
        assert_true(argc < MAX_ARGS);
        argv[argc++] = (char *)a;
    }
    af_config_init(&r->cfg);
    r->err[0] = '\0';
    r->rc = af_cli_parse(argc, argv, &r->cfg, r->err, sizeof(r->err));
}

static void parse(struct run *r, const char *first, ...)
{
    va_list ap;
    va_start(ap, first);
    parse_list(r, first, ap);
    va_end(ap);
}

static void expect_ok(struct run *r, const char *first, ...)
{
    va_list ap;
    va_start(ap, first);
    parse_list(r, first, ap);
    va_end(ap);
    if (r->rc != AF_CLI_OK)
        fail_msg("expected OK, got %d: %s", r->rc, r->err);
}

/* Expects AF_CLI_ERROR with `want` inside the message, and a one-line message. */
static void expect_error(const char *want, const char *first, ...)
{
    struct run r;
    va_list ap;
    va_start(ap, first);
    parse_list(&r, first, ap);
    va_end(ap);
    if (r.rc != AF_CLI_ERROR)
        fail_msg("expected an error containing \"%s\", got %d", want, r.rc);
    if (!strstr(r.err, want))
        fail_msg("error \"%s\" does not contain \"%s\"", r.err, want);
    assert_null(strchr(r.err, '\n'));
    af_config_release(&r.cfg);
}

static void test_defaults(void **state)
{
    struct run r;
    expect_ok(&r, "app", NULL);
    struct af_config *c = &r.cfg;
    assert_false(c->api_only);
    assert_string_equal(c->host, "localhost");
    assert_int_equal(c->port, 8080);
    assert_string_equal(c->admin_host, "localhost");
    assert_int_equal(c->admin_port, 8000);
    assert_string_equal(c->api_host, "localhost");
    assert_int_equal(c->api_port, 0);
    assert_int_equal(c->direct_port, -1);
    assert_null(c->storage_path);
    assert_null(c->datastore_path);
    assert_false(c->clear_datastore);
    assert_string_equal(c->datastore_consistency_policy, "time");
    assert_false(c->require_indexes);
    assert_true(c->automatic_restart);
    assert_false(c->allow_skipped_files);
    assert_null(c->watcher_ignore_re);
    assert_false(c->use_mtime_file_watcher);
    assert_int_equal(c->max_module_instances, 0);
    assert_null(c->threadsafe_override);
    assert_int_equal(c->n_env_vars, 0);
    assert_string_equal(c->log_level, "info");
    assert_string_equal(c->dev_appserver_log_level, "info");
    assert_true(c->enable_task_running);
    assert_int_equal(c->max_connections, 10000);
    assert_int_equal(c->max_body_bytes, 32LL << 20);
    assert_int_equal(c->request_deadline_ms, 60000);
    assert_int_equal(c->head_timeout_ms, 10000);
    assert_int_equal(c->instance_startup_ms, 30000);
    assert_int_equal(c->memcache_max_bytes, 64LL << 20);
    assert_null(c->build_command);
    assert_null(c->smtp_host);
    assert_int_equal(c->smtp_port, 25);
    assert_null(c->smtp_user);
    assert_null(c->smtp_password);
    assert_true(c->smtp_allow_tls);
    assert_false(c->show_mail_body);
    assert_false(c->enable_sendmail);
    assert_int_equal(c->n_app_paths, 1);
    assert_string_equal(c->app_paths[0], "app");
    af_config_release(&r.cfg);
}

static void test_value_forms(void **state)
{
    struct run r;
    expect_ok(&r, "--port=9000", "--admin_port", "9001", "--host=0.0.0.0", "--api_host",
              "127.0.0.1", "--api_port=0", "--direct_port", "9002", "a", "b", NULL);
    assert_int_equal(r.cfg.port, 9000);
    assert_int_equal(r.cfg.admin_port, 9001);
    assert_string_equal(r.cfg.host, "0.0.0.0");
    assert_string_equal(r.cfg.api_host, "127.0.0.1");
    assert_int_equal(r.cfg.api_port, 0);
    assert_int_equal(r.cfg.direct_port, 9002);
    assert_int_equal(r.cfg.n_app_paths, 2);
    assert_string_equal(r.cfg.app_paths[1], "b");
    af_config_release(&r.cfg);

    /* Flags after positionals, and a repeated flag: the last one wins. */
    expect_ok(&r, "app", "--host=a", "--host", "b", "--storage_path=/tmp/s", "--datastore_path",
              "/tmp/d.db", "--build_command", "make all", NULL);
    assert_string_equal(r.cfg.host, "b");
    assert_string_equal(r.cfg.storage_path, "/tmp/s");
    assert_string_equal(r.cfg.datastore_path, "/tmp/d.db");
    assert_string_equal(r.cfg.build_command, "make all");
    af_config_release(&r.cfg);

    /* A value may contain '=' and may start with a single dash. */
    expect_ok(&r, "--build_command=make X=1", "--watcher_ignore_re", "-x", "app", NULL);
    assert_string_equal(r.cfg.build_command, "make X=1");
    assert_string_equal(r.cfg.watcher_ignore_re, "-x");
    af_config_release(&r.cfg);
}

static void test_ports(void **state)
{
    struct run r;
    expect_ok(&r, "--port=0", "--admin_port=65535", "--direct_port=0", "app", NULL);
    assert_int_equal(r.cfg.port, 0);
    assert_int_equal(r.cfg.admin_port, 65535);
    assert_int_equal(r.cfg.direct_port, 0);
    af_config_release(&r.cfg);

    expect_error("--port: 'abc' is not a port number (0-65535)", "--port=abc", "app", NULL);
    expect_error("--port: '65536' is not a port number", "--port", "65536", "app", NULL);
    expect_error("--admin_port: '-1' is not a port number", "--admin_port=-1", "app", NULL);
    expect_error("--api_port: '' is not a port number", "--api_port=", "app", NULL);
    expect_error("--direct_port: ' 80' is not a port number", "--direct_port= 80", "app", NULL);
    expect_error("--port: '+80' is not a port number", "--port=+80", "app", NULL);
    expect_error("--port: '80x' is not a port number", "--port=80x", "app", NULL);
    expect_error("--port: '99999999999999999999999' is not", "--port=99999999999999999999999",
                 "app", NULL);
}

static void test_booleans(void **state)
{
    struct run r;
    /* Bare means true; the next argument is consumed only if a boolean word. */
    expect_ok(&r, "--clear_datastore", "app", NULL);
    assert_true(r.cfg.clear_datastore);
    assert_int_equal(r.cfg.n_app_paths, 1);
    assert_string_equal(r.cfg.app_paths[0], "app");
    af_config_release(&r.cfg);

    expect_ok(&r, "--automatic_restart", "no", "app", NULL);
    assert_false(r.cfg.automatic_restart);
    assert_int_equal(r.cfg.n_app_paths, 1);
    af_config_release(&r.cfg);

    static const struct {
        const char *arg;
        bool value;
    } forms[] = {
        {"--use_mtime_file_watcher=yes", true},  {"--use_mtime_file_watcher=YES", true},
        {"--use_mtime_file_watcher=True", true}, {"--use_mtime_file_watcher=1", true},
        {"--use_mtime_file_watcher=no", false},  {"--use_mtime_file_watcher=FALSE", false},
        {"--use_mtime_file_watcher=0", false},   {"--use_mtime_file_watcher=No", false},
    };
    for (size_t i = 0; i < sizeof(forms) / sizeof(forms[0]); i++) {
        expect_ok(&r, forms[i].arg, "app", NULL);
        assert_int_equal(r.cfg.use_mtime_file_watcher, forms[i].value);
        af_config_release(&r.cfg);
    }

    /* Separate-argument form with every boolean word. */
    static const char *const words[] = {"yes", "true", "1", "TRUE", "no", "false", "0", "False"};
    for (size_t i = 0; i < sizeof(words) / sizeof(words[0]); i++) {
        expect_ok(&r, "--enable_task_running", words[i], "app", NULL);
        assert_int_equal(r.cfg.enable_task_running, i < 4);
        assert_int_equal(r.cfg.n_app_paths, 1);
        af_config_release(&r.cfg);
    }

    expect_ok(&r, "--allow_skipped_files", "--clear_datastore=true", "app", NULL);
    assert_true(r.cfg.allow_skipped_files);
    assert_true(r.cfg.clear_datastore);
    af_config_release(&r.cfg);

    /* A bare boolean at the end of argv. */
    expect_ok(&r, "app", "--clear_datastore", NULL);
    assert_true(r.cfg.clear_datastore);
    af_config_release(&r.cfg);

    /* --require_indexes, in dev_appserver's spellings. */
    expect_ok(&r, "--require_indexes", "app", NULL);
    assert_true(r.cfg.require_indexes);
    assert_int_equal(r.cfg.n_app_paths, 1);
    af_config_release(&r.cfg);
    expect_ok(&r, "--require_indexes=false", "app", NULL);
    assert_false(r.cfg.require_indexes);
    af_config_release(&r.cfg);
    expect_ok(&r, "--require_indexes", "yes", "app", NULL);
    assert_true(r.cfg.require_indexes);
    assert_int_equal(r.cfg.n_app_paths, 1);
    af_config_release(&r.cfg);
    expect_error("--require_indexes: 'always' is not a boolean", "--require_indexes=always", "app",
                 NULL);

    expect_error("--clear_datastore: 'maybe' is not a boolean (yes/no/true/false/1/0)",
                 "--clear_datastore=maybe", "app", NULL);
    expect_error("--automatic_restart: '' is not a boolean", "--automatic_restart=", "app", NULL);
    expect_error("--enable_task_running: '2' is not a boolean", "--enable_task_running=2", "app",
                 NULL);
}

static void test_noop_flags(void **state)
{
    struct run r;
    expect_ok(&r, "--skip_sdk_update_check", "--clear_search_indexes=yes",
              "--support_datastore_emulator", "false", "app", NULL);
    assert_int_equal(r.cfg.n_app_paths, 1);
    af_config_release(&r.cfg);
    expect_ok(&r, "--skip_sdk_update_check=true", "app", NULL);
    af_config_release(&r.cfg);
    /* Accepted with no effect still means the value is checked. */
    expect_error("--skip_sdk_update_check: 'sure' is not a boolean", "--skip_sdk_update_check=sure",
                 "app", NULL);
}

static void test_application(void **state)
{
    struct run r;
    expect_ok(&r, "-A", "my-app", "app", NULL);
    assert_string_equal(r.cfg.application, "my-app");
    af_config_release(&r.cfg);
    expect_ok(&r, "-Amy-app2", "app", NULL);
    assert_string_equal(r.cfg.application, "my-app2");
    af_config_release(&r.cfg);
    expect_ok(&r, "--application=example.com:corp-app", "api", NULL);
    assert_string_equal(r.cfg.application, "example.com:corp-app");
    af_config_release(&r.cfg);
    expect_ok(&r, "--application", "a", "app", NULL);
    assert_string_equal(r.cfg.application, "a");
    af_config_release(&r.cfg);
    /* Not given: app.yaml's stands. */
    expect_ok(&r, "app", NULL);
    assert_null(r.cfg.application);
    af_config_release(&r.cfg);
    /* It names a directory: nothing but App Engine's spelling passes. */
    const char *bad[] = {"Bad_App", "-lead", "trail-", "dev~app", "../up", "a/b", "a b",
                         ":app", "example.com:", "\xc3\xa9t\xc3\xa9"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        char arg[64];
        snprintf(arg, sizeof(arg), "--application=%s", bad[i]);
        expect_error("is not an application id", arg, "app", NULL);
        expect_error("is not an application id", "-A", bad[i], "app", NULL);
    }
    char longid[102];
    memset(longid, 'a', 101);
    longid[101] = '\0';
    expect_error("is not an application id", "-A", longid, "app", NULL);
    longid[100] = '\0';
    expect_ok(&r, "-A", longid, "app", NULL);
    af_config_release(&r.cfg);
    expect_error("-A: missing value (APP_ID)", "app", "-A", NULL);
    expect_error("-A: missing value (APP_ID)", "-A", "--port=1", "app", NULL);
}

static void test_service_identity_flags(void **state)
{
    struct run r;
    expect_ok(&r, "app", NULL);
    assert_string_equal(r.cfg.auth_domain, "gmail.com");
    assert_null(r.cfg.default_gcs_bucket_name);
    assert_true(r.cfg.enable_host_checking);
    af_config_release(&r.cfg);
    expect_ok(&r, "--auth_domain=example.com", "--default_gcs_bucket_name", "my-bucket",
              "--enable_host_checking=false", "--addn_host=a.example", "--addn_host", "*.b.example",
              "app", NULL);
    assert_string_equal(r.cfg.auth_domain, "example.com");
    assert_string_equal(r.cfg.default_gcs_bucket_name, "my-bucket");
    assert_false(r.cfg.enable_host_checking);
    assert_int_equal(r.cfg.n_addn_hosts, 2);
    assert_string_equal(r.cfg.addn_hosts[0], "a.example");
    assert_string_equal(r.cfg.addn_hosts[1], "*.b.example");
    assert_int_equal(r.cfg.n_ignored, 0);
    af_config_release(&r.cfg);
    expect_ok(&r, "--addn_host=**.dev.example", "app", NULL);
    assert_string_equal(r.cfg.addn_hosts[0], "**.dev.example");
    af_config_release(&r.cfg);
    expect_error("--auth_domain: empty value", "--auth_domain=", "app", NULL);
    const char *bad_hosts[] = {"", "*.", "**.", ".x", "a b", "a/b", "x:80", "*x.example", "a*.b"};
    for (size_t i = 0; i < sizeof(bad_hosts) / sizeof(bad_hosts[0]); i++) {
        char arg[64];
        snprintf(arg, sizeof(arg), "--addn_host=%s", bad_hosts[i]);
        expect_error("is not a host name, *.DOMAIN or **.DOMAIN", arg, "app", NULL);
    }
    expect_error("--enable_host_checking: 'maybe' is not a boolean", "--enable_host_checking=maybe",
                 "app", NULL);
}

static void test_ignored_flags(void **state)
{
    struct run r;
    expect_ok(&r, "--search_indexes_path=/tmp/search", "--enable_console", "app", NULL);
    assert_int_equal(r.cfg.n_app_paths, 1); /* a bare boolean does not eat the app path */
    assert_int_equal(r.cfg.n_ignored, 2);
    assert_string_equal(r.cfg.ignored[0], "--search_indexes_path has no effect in appfront: "
                                          "search indexes live in search.sqlite3 under "
                                          "--storage_path");
    assert_string_equal(r.cfg.ignored[1],
                        "--enable_console has no effect in appfront: there is no interactive "
                        "console");
    af_config_release(&r.cfg);
    /* Once per flag, however often it is given. */
    expect_ok(&r, "--ssl_port=8443", "--ssl_port", "9443", "--enable_console=no", "app", NULL);
    assert_int_equal(r.cfg.n_ignored, 2);
    af_config_release(&r.cfg);
    /* Ignored still means checked. */
    expect_error("--enable_console: 'sure' is not a boolean", "--enable_console=sure", "app",
                 NULL);
    expect_error("--blobstore_path: empty value", "--blobstore_path=", "app", NULL);
    expect_error("--search_indexes_path: missing value", "app", "--search_indexes_path", NULL);
}

/* --logs_path takes effect now (docs/cli.md): a file name, no warning;
 * unset means request logs in memory alone. */
static void test_logs_path(void **state)
{
    struct run r;
    expect_ok(&r, "app", NULL);
    assert_null(r.cfg.logs_path);
    af_config_release(&r.cfg);
    expect_ok(&r, "--logs_path", "/tmp/logs.db", "app", NULL);
    assert_string_equal(r.cfg.logs_path, "/tmp/logs.db");
    assert_int_equal(r.cfg.n_ignored, 0);
    af_config_release(&r.cfg);
    expect_error("--logs_path: empty value", "--logs_path=", "app", NULL);
}

static void test_env_var(void **state)
{
    struct run r;
    expect_ok(&r, "--env_var", "A=1", "--env_var=B=x=y", "--env_var", "C=", "app", NULL);
    assert_int_equal(r.cfg.n_env_vars, 3);
    assert_string_equal(r.cfg.env_vars[0].key, "A");
    assert_string_equal(r.cfg.env_vars[0].value, "1");
    assert_string_equal(r.cfg.env_vars[1].key, "B");
    assert_string_equal(r.cfg.env_vars[1].value, "x=y");
    assert_string_equal(r.cfg.env_vars[2].key, "C");
    assert_string_equal(r.cfg.env_vars[2].value, "");
    af_config_release(&r.cfg);

    expect_error("--env_var: 'NOVALUE' is not KEY=VALUE (no '=')", "--env_var", "NOVALUE", "app",
                 NULL);
    expect_error("--env_var: '=v' is not KEY=VALUE (empty KEY)", "--env_var==v", "app", NULL);
    expect_error("--env_var: missing value", "app", "--env_var", NULL);
}

static void test_choices(void **state)
{
    struct run r;
    static const char *const policies[] = {"time", "random", "consistent"};
    for (size_t i = 0; i < 3; i++) {
        char arg[64];
        snprintf(arg, sizeof(arg), "--datastore_consistency_policy=%s", policies[i]);
        expect_ok(&r, arg, "app", NULL);
        assert_string_equal(r.cfg.datastore_consistency_policy, policies[i]);
        af_config_release(&r.cfg);
    }
    expect_error(
        "--datastore_consistency_policy: 'eventual' is not one of time, random, consistent",
        "--datastore_consistency_policy", "eventual", "app", NULL);

    static const char *const levels[] = {"debug", "info", "warning", "error", "critical"};
    for (size_t i = 0; i < 5; i++) {
        expect_ok(&r, "--log_level", levels[i], "--dev_appserver_log_level", levels[i], "app",
                  NULL);
        assert_string_equal(r.cfg.log_level, levels[i]);
        assert_string_equal(r.cfg.dev_appserver_log_level, levels[i]);
        af_config_release(&r.cfg);
    }
    /* Any case is accepted and stored lower-case. */
    expect_ok(&r, "--log_level=WARNING", "app", NULL);
    assert_string_equal(r.cfg.log_level, "warning");
    af_config_release(&r.cfg);
    expect_error("--log_level: 'verbose' is not one of debug, info, warning, error, critical",
                 "--log_level=verbose", "app", NULL);
    expect_error("--dev_appserver_log_level: 'warn' is not one of debug",
                 "--dev_appserver_log_level=warn", "app", NULL);
}

static void test_numbers(void **state)
{
    struct run r;
    expect_ok(&r, "--max_module_instances=3", "--max_connections", "50",
              "--max_request_body_bytes=64M", "--memcache_max_bytes", "1g",
              "--request_deadline=1.5", "--request_head_timeout", "2",
              "--instance_startup_timeout=0.0001", "app", NULL);
    assert_int_equal(r.cfg.max_module_instances, 3);
    assert_int_equal(r.cfg.max_connections, 50);
    assert_int_equal(r.cfg.max_body_bytes, 64LL << 20);
    assert_int_equal(r.cfg.memcache_max_bytes, 1LL << 30);
    assert_int_equal(r.cfg.request_deadline_ms, 1500);
    assert_int_equal(r.cfg.head_timeout_ms, 2000);
    assert_int_equal(r.cfg.instance_startup_ms, 1); /* rounded up, never 0 */
    af_config_release(&r.cfg);

    expect_ok(&r, "--max_request_body_bytes=0", "--memcache_max_bytes=512KiB", "app", NULL);
    assert_int_equal(r.cfg.max_body_bytes, 0);
    assert_int_equal(r.cfg.memcache_max_bytes, 512LL << 10);
    af_config_release(&r.cfg);

    expect_error("--max_module_instances: '-1' is not an integer from 0 to",
                 "--max_module_instances=-1", "app", NULL);
    expect_error("--max_connections: '0' is not an integer from 1 to 1000000",
                 "--max_connections=0", "app", NULL);
    expect_error("--max_connections: '1000001' is not an integer", "--max_connections=1000001",
                 "app", NULL);
    expect_error("--max_request_body_bytes: '12X' is not a byte count",
                 "--max_request_body_bytes=12X", "app", NULL);
    expect_error("--max_request_body_bytes: '2048G' is not a byte count",
                 "--max_request_body_bytes=2048G", "app", NULL);
    expect_error("--memcache_max_bytes: '0' is not a byte count from 1", "--memcache_max_bytes=0",
                 "app", NULL);
    expect_error("--memcache_max_bytes: '5MX' is not a byte count", "--memcache_max_bytes=5MX",
                 "app", NULL);
    expect_error("--request_deadline: '0' is not a number of seconds above 0",
                 "--request_deadline=0", "app", NULL);
    expect_error("--request_deadline: 'inf' is not a number of seconds", "--request_deadline=inf",
                 "app", NULL);
    expect_error("--request_deadline: '-5' is not a number of seconds", "--request_deadline=-5",
                 "app", NULL);
    expect_error("--request_head_timeout: '1e3' is not", "--request_head_timeout=1e3", "app", NULL);
    expect_error("--instance_startup_timeout: '86401' is not", "--instance_startup_timeout=86401",
                 "app", NULL);
}

static void test_threadsafe_override(void **state)
{
    struct run r;
    bool ts = false;

    expect_ok(&r, "app", NULL);
    assert_false(af_config_threadsafe_override(&r.cfg, "default", &ts));
    af_config_release(&r.cfg);

    expect_ok(&r, "--threadsafe_override=false", "app", NULL);
    ts = true;
    assert_true(af_config_threadsafe_override(&r.cfg, "default", &ts));
    assert_false(ts);
    assert_true(af_config_threadsafe_override(&r.cfg, "other", &ts));
    af_config_release(&r.cfg);

    expect_ok(&r, "--threadsafe_override", "default:false,worker:yes,default:TRUE", "app", NULL);
    assert_string_equal(r.cfg.threadsafe_override, "default:false,worker:yes,default:TRUE");
    ts = false;
    assert_true(af_config_threadsafe_override(&r.cfg, "default", &ts));
    assert_true(ts); /* the last item for a module wins */
    ts = false;
    assert_true(af_config_threadsafe_override(&r.cfg, "worker", &ts));
    assert_true(ts);
    assert_false(af_config_threadsafe_override(&r.cfg, "work", &ts));
    assert_false(af_config_threadsafe_override(&r.cfg, "other", &ts));
    af_config_release(&r.cfg);

    expect_error("--threadsafe_override: 'maybe' is not a boolean or MODULE:BOOL",
                 "--threadsafe_override=maybe", "app", NULL);
    expect_error("--threadsafe_override: 'a:1,b' is not", "--threadsafe_override=a:1,b", "app",
                 NULL);
    expect_error("--threadsafe_override: ':true' is not", "--threadsafe_override=:true", "app",
                 NULL);
    expect_error("--threadsafe_override: 'a:' is not", "--threadsafe_override=a:", "app", NULL);
    expect_error("--threadsafe_override: 'a:1,' is not", "--threadsafe_override=a:1,", "app", NULL);
    expect_error("--threadsafe_override: 'a:true_ish' is not", "--threadsafe_override=a:true_ish",
                 "app", NULL);
}

static void test_regex_flag(void **state)
{
    struct run r;
    expect_ok(&r, "--watcher_ignore_re=.*\\.log$", "app", NULL);
    assert_string_equal(r.cfg.watcher_ignore_re, ".*\\.log$");
    af_config_release(&r.cfg);
    expect_error("--watcher_ignore_re: bad regular expression '(': missing closing parenthesis at "
                 "offset 1",
                 "--watcher_ignore_re=(", "app", NULL);
}

static void test_string_errors(void **state)
{
    expect_error("--host: empty value", "--host=", "app", NULL);
    expect_error("--storage_path: missing value (DIR)", "app", "--storage_path", NULL);
    /* "--flag --other" is a missing value, not a value "--other". */
    expect_error("--host: missing value (HOST)", "--host", "--port=1", "app", NULL);
}

static void test_unknown_and_dashes(void **state)
{
    expect_error("unknown flag '--nope' (see --help)", "--nope", "app", NULL);
    expect_error("unknown flag '--nope' (see --help)", "--nope=1", "app", NULL);
    /* Prefixes of flags are not accepted: adding a flag must not break them. */
    expect_error("unknown flag '--por'", "--por=1", "app", NULL);
    expect_error("unknown flag '-port': flags take two dashes, as in '--port'", "-port", "80",
                 "app", NULL);
    expect_error("unknown flag '-port=80': flags take two dashes, as in '--port=80'", "-port=80",
                 "app", NULL);
    expect_error("unknown flag '-x' (see --help)", "-x", "app", NULL);
}

static void test_help(void **state)
{
    struct run r;
    parse(&r, "--help", NULL);
    assert_int_equal(r.rc, AF_CLI_HELP);
    af_config_release(&r.cfg);
    parse(&r, "app", "-h", NULL);
    assert_int_equal(r.rc, AF_CLI_HELP);
    af_config_release(&r.cfg);
    /* Help wins over a missing app path. */
    parse(&r, "--port=1", "--help", NULL);
    assert_int_equal(r.rc, AF_CLI_HELP);
    af_config_release(&r.cfg);
    expect_error("--help: takes no value, got 'x'", "--help=x", NULL);
}

static void test_modes(void **state)
{
    struct run r;
    expect_ok(&r, "api", "--api_port=9999", NULL);
    assert_true(r.cfg.api_only);
    assert_int_equal(r.cfg.n_app_paths, 0);
    assert_int_equal(r.cfg.api_port, 9999);
    af_config_release(&r.cfg);

    expect_ok(&r, "--api_port", "1", "api", NULL);
    assert_true(r.cfg.api_only);
    af_config_release(&r.cfg);

    /* A directory called "api": ./api or after "--". */
    expect_ok(&r, "./api", NULL);
    assert_false(r.cfg.api_only);
    assert_string_equal(r.cfg.app_paths[0], "./api");
    af_config_release(&r.cfg);
    expect_ok(&r, "--", "api", "--port=1", NULL);
    assert_false(r.cfg.api_only);
    assert_int_equal(r.cfg.n_app_paths, 2);
    assert_string_equal(r.cfg.app_paths[0], "api");
    assert_string_equal(r.cfg.app_paths[1], "--port=1");
    assert_int_equal(r.cfg.port, 8080);
    af_config_release(&r.cfg);
    /* "api" after another app path is an app path. */
    expect_ok(&r, "app", "api", NULL);
    assert_false(r.cfg.api_only);
    assert_int_equal(r.cfg.n_app_paths, 2);
    af_config_release(&r.cfg);
    /* A lone "-" is a path, not a flag. */
    expect_ok(&r, "-", NULL);
    assert_string_equal(r.cfg.app_paths[0], "-");
    af_config_release(&r.cfg);

    expect_error("'appfront api' runs the API server alone and takes no app, got 'myapp'", "api",
                 "myapp", NULL);
    expect_error("no app given", NULL);
    expect_error("no app given", "--port=1", NULL);
}

/* Every flag in the usage text, with the defaults read from af_config_init. */
static void test_usage(void **state)
{
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    assert_non_null(f);
    af_cli_usage(f);
    fclose(f);
    static const char *const wanted[] = {
        "usage: appfront [flags] APP_DIR_OR_APP_YAML...",
        "appfront api [flags]",
        "--host=HOST",
        "--port=PORT",
        "--admin_host=HOST",
        "--admin_port=PORT",
        "--api_host=HOST",
        "--api_port=PORT",
        "--direct_port=PORT",
        "--storage_path=DIR",
        "--datastore_path=FILE",
        "--clear_datastore=BOOL",
        "--datastore_consistency_policy=POLICY",
        "--require_indexes=BOOL",
        "--automatic_restart=BOOL",
        "--allow_skipped_files=BOOL",
        "--watcher_ignore_re=REGEX",
        "--use_mtime_file_watcher=BOOL",
        "--max_module_instances=N",
        "--threadsafe_override=BOOL|MODULE:BOOL,...",
        "--env_var=KEY=VALUE",
        "--log_level=LEVEL",
        "--dev_appserver_log_level=LEVEL",
        "--enable_task_running=BOOL",
        "--skip_sdk_update_check=BOOL",
        "--clear_search_indexes=BOOL",
        "--support_datastore_emulator=BOOL",
        "--help",
        "--max_connections=N",
        "--max_request_body_bytes=BYTES",
        "--request_deadline=SECONDS",
        "--request_head_timeout=SECONDS",
        "--instance_startup_timeout=SECONDS",
        "--memcache_max_bytes=BYTES",
        "--build_command=COMMAND",
        "--smtp_host=HOST",
        "--smtp_port=PORT",
        "--smtp_user=USER",
        "--smtp_password=PASSWORD",
        "--smtp_allow_tls=BOOL",
        "--show_mail_body=BOOL",
        "--enable_sendmail=BOOL",
        "(default: 25)",
        "(default: 8080)",
        "(default: 8000)",
        "(default: localhost)",
        "(default: off)",
        "(default: time)",
        "(default: 60)",
        "(default: 33554432)",
        "appfront's own flags:",
    };
    for (size_t i = 0; i < sizeof(wanted) / sizeof(wanted[0]); i++) {
        if (!strstr(text, wanted[i]))
            fail_msg("usage lacks \"%s\"", wanted[i]);
    }
    free(text);
}

/* The mail flags, alone and together, in both modes. */
static void test_mail_flags(void **state)
{
    struct run r;
    expect_ok(&r, "--smtp_host=mail.example.com", "--smtp_port", "587", "--smtp_user=me",
              "--smtp_password", "p=ss w0rd", "--smtp_allow_tls=no", "--show_mail_body", "app",
              NULL);
    assert_string_equal(r.cfg.smtp_host, "mail.example.com");
    assert_int_equal(r.cfg.smtp_port, 587);
    assert_string_equal(r.cfg.smtp_user, "me");
    assert_string_equal(r.cfg.smtp_password, "p=ss w0rd");
    assert_false(r.cfg.smtp_allow_tls);
    assert_true(r.cfg.show_mail_body);
    af_config_release(&r.cfg);

    /* appfront api takes them too; an IPv6 address loses its brackets. */
    expect_ok(&r, "api", "--smtp_host=[::1]", "--enable_sendmail=false", NULL);
    assert_true(r.cfg.api_only);
    assert_string_equal(r.cfg.smtp_host, "::1");
    assert_int_equal(r.cfg.n_ignored, 0); /* false is what appfront does: no warning */
    af_config_release(&r.cfg);
    /* Asking for sendmail is a startup warning (once) that names the way. */
    expect_ok(&r, "--enable_sendmail", "--enable_sendmail=yes", "app", NULL);
    assert_int_equal(r.cfg.n_ignored, 1);
    assert_non_null(strstr(r.cfg.ignored[0], "--enable_sendmail has no effect in appfront"));
    assert_non_null(strstr(r.cfg.ignored[0], "--smtp_host=localhost"));
    af_config_release(&r.cfg);
    expect_ok(&r, "--smtp_host", "127.0.0.1", "--smtp_user=u", "app", NULL);
    assert_null(r.cfg.smtp_password);
    af_config_release(&r.cfg);

    expect_error("--smtp_port: '0' is not an integer from 1 to 65535", "--smtp_port=0", "app",
                 NULL);
    expect_error("--smtp_port: '65536' is not an integer", "--smtp_port=65536", "app", NULL);
    expect_error("--smtp_port: 'smtp' is not an integer", "--smtp_port=smtp", "app", NULL);
    expect_error("--smtp_host: empty value", "--smtp_host=", "app", NULL);
    expect_error("--smtp_host: 'mail example.com' is not a host name or address",
                 "--smtp_host=mail example.com", "app", NULL);
    expect_error("--smtp_host: 'smtp://x' is not a host name", "--smtp_host=smtp://x", "app",
                 NULL);
    expect_error("--smtp_host: missing value", "--smtp_host", "--port=1", "app", NULL);
    expect_error("--smtp_allow_tls: 'sometimes' is not a boolean", "--smtp_allow_tls=sometimes",
                 "app", NULL);
    expect_error("--show_mail_body: 'loud' is not a boolean", "--show_mail_body=loud", "app",
                 NULL);
    expect_error("--smtp_user: has no effect without --smtp_host", "--smtp_user=me", "app", NULL);
    expect_error("--smtp_password: has no effect without --smtp_host", "--smtp_password=pw",
                 "app", NULL);
    expect_error("--smtp_password: needs --smtp_user", "--smtp_host=h", "--smtp_password=pw",
                 "app", NULL);
    expect_error("--enable_sendmail: 'sometimes' is not a boolean", "--enable_sendmail=sometimes",
                 "app", NULL);
}

/* Releasing twice is harmless: release leaves a zeroed struct. */
static void test_release_twice(void **state)
{
    struct run r;
    expect_ok(&r, "--env_var=A=1", "app", NULL);
    af_config_release(&r.cfg);
    af_config_release(&r.cfg);
    assert_null(r.cfg.host);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_value_forms),
        cmocka_unit_test(test_ports),
        cmocka_unit_test(test_booleans),
        cmocka_unit_test(test_noop_flags),
        cmocka_unit_test(test_application),
        cmocka_unit_test(test_service_identity_flags),
        cmocka_unit_test(test_ignored_flags),
        cmocka_unit_test(test_logs_path),
        cmocka_unit_test(test_env_var),
        cmocka_unit_test(test_choices),
        cmocka_unit_test(test_numbers),
        cmocka_unit_test(test_threadsafe_override),
        cmocka_unit_test(test_regex_flag),
        cmocka_unit_test(test_string_errors),
        cmocka_unit_test(test_unknown_and_dashes),
        cmocka_unit_test(test_help),
        cmocka_unit_test(test_modes),
        cmocka_unit_test(test_usage),
        cmocka_unit_test(test_mail_flags),
        cmocka_unit_test(test_release_twice),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
