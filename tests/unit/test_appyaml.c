/* Unit tests for proxy/appyaml.c: every field, every error path with its
 * PATH:LINE:COLUMN, warnings for unknown keys, and loading from disk. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "common/log.h"
#include "proxy/appyaml.h"

static char err[512];

/* ---- stderr capture: warnings go through af_log to fd 2 ---------------- */

static int saved_stderr = -1;
static FILE *capture_file;

static void capture_start(void)
{
    capture_file = tmpfile();
    assert_non_null(capture_file);
    saved_stderr = dup(STDERR_FILENO);
    assert_true(saved_stderr >= 0);
    assert_true(dup2(fileno(capture_file), STDERR_FILENO) >= 0);
}

/* Returns what was written to stderr since capture_start(); caller frees. */
static char *capture_stop(void)
{
    assert_true(dup2(saved_stderr, STDERR_FILENO) >= 0);
    close(saved_stderr);
    long len = ftell(capture_file);
    assert_true(len >= 0);
    char *buf = calloc(1, (size_t)len + 1);
    assert_non_null(buf);
    rewind(capture_file);
    size_t got = fread(buf, 1, (size_t)len, capture_file);
    assert_int_equal(got, (size_t)len);
    fclose(capture_file);
    return buf;
}

/* ---- helpers ------------------------------------------------------------ */

static struct af_app_yaml *load_ok(const char *text)
{
    struct af_app_yaml *app = NULL;
    err[0] = '\0';
    if (af_appyaml_parse("app.yaml", text, strlen(text), "/srv/app", &app, err, sizeof(err)) != 0)
        fail_msg("expected success, got: %s", err);
    assert_non_null(app);
    return app;
}

/* Loads text expecting success and returns what was logged meanwhile. */
static char *load_ok_warnings(const char *text, struct af_app_yaml **app)
{
    capture_start();
    int rc = af_appyaml_parse("app.yaml", text, strlen(text), NULL, app, err, sizeof(err));
    char *out = capture_stop();
    if (rc != 0)
        fail_msg("expected success, got: %s", err);
    return out;
}

static void expect_error_len(const char *text, size_t len, const char *want)
{
    struct af_app_yaml *app = (struct af_app_yaml *)0x1;
    err[0] = '\0';
    /* Warnings before the error are not what these tests check. */
    capture_start();
    int rc = af_appyaml_parse("app.yaml", text, len, NULL, &app, err, sizeof(err));
    free(capture_stop());
    if (rc != -1)
        fail_msg("expected an error containing \"%s\"", want);
    assert_null(app);
    if (!strstr(err, want))
        fail_msg("error \"%s\" does not contain \"%s\"", err, want);
    assert_null(strchr(err, '\n'));
}

static void expect_error(const char *text, const char *want)
{
    expect_error_len(text, strlen(text), want);
}

/* ---- tests -------------------------------------------------------------- */

static void test_minimal_defaults(void **state)
{
    struct af_app_yaml *app = load_ok("runtime: native\n");
    assert_string_equal(app->path, "app.yaml");
    assert_string_equal(app->dir, "/srv/app");
    assert_null(app->application);
    assert_string_equal(app->service, "default");
    assert_string_equal(app->version, "1");
    assert_string_equal(app->runtime, "native");
    assert_null(app->entrypoint);
    assert_true(app->threadsafe);
    assert_false(app->threadsafe_set);
    assert_null(app->default_expiration);
    assert_int_equal(app->n_handlers, 0);
    assert_int_equal(app->n_env_variables, 0);
    assert_int_equal(app->n_error_handlers, 0);
    assert_int_equal(app->scaling, AF_SCALING_AUTOMATIC);
    assert_int_equal(app->max_concurrent_requests, 10);
    assert_int_equal(app->max_instances, 0);
    assert_int_equal(app->min_instances, 0);
    /* dev_appserver's default skip_files. */
    assert_int_equal(app->n_skip_files, 5);
    assert_string_equal(app->skip_files[0], "^(.*/)?#.*#$");
    assert_string_equal(app->skip_files[1], "^(.*/)?.*~$");
    assert_string_equal(app->skip_files[2], "^(.*/)?.*\\.py[co]$");
    assert_string_equal(app->skip_files[3], "^(.*/)?.*/RCS/.*$");
    assert_string_equal(app->skip_files[4], "^(.*/)?\\..*$");
    af_appyaml_free(app);
}

static const char realistic[] = "# A guestbook, as it would be deployed.\n"
                                "application: guestbook\n"
                                "service: web\n"
                                "version: 7\n"
                                "runtime: native\n"
                                "entrypoint: ./guestbook --flag\n"
                                "threadsafe: yes\n"
                                "default_expiration: \"1d 2h\"\n"
                                "api_version: 1\n"
                                "instance_class: F2\n"
                                "inbound_services:\n"
                                "- warmup\n"
                                "libraries:\n"
                                "- name: jinja2\n"
                                "  version: latest\n"
                                "includes:\n"
                                "- other.yaml\n"
                                "\n"
                                "env_variables:\n"
                                "  GREETING: 'hello: world'\n"
                                "  RETRIES: 3\n"
                                "  EMPTY:\n"
                                "\n"
                                "automatic_scaling:\n"
                                "  max_concurrent_requests: 40\n"
                                "  max_instances: 5\n"
                                "  min_instances: 1\n"
                                "  target_cpu_utilization: 0.65\n"
                                "\n"
                                "handlers:\n"
                                "- url: /favicon\\.ico\n"
                                "  static_files: static/favicon.ico\n"
                                "  upload: static/favicon\\.ico\n"
                                "  mime_type: image/x-icon\n"
                                "  expiration: 30m\n"
                                "  require_matching_file: true\n"
                                "  application_readable: on\n"
                                "- url: /static\n"
                                "  static_dir: static\n"
                                "  http_headers:\n"
                                "    X-Frame-Options: DENY\n"
                                "    Cache-Control: public, max-age=60\n"
                                "- url: /admin/.*\n"
                                "  script: auto\n"
                                "  login: admin\n"
                                "  auth_fail_action: unauthorized\n"
                                "  secure: always\n"
                                "  redirect_http_response_code: 301\n"
                                "- url: /.*\n"
                                "  script: auto\n"
                                "  login: required\n"
                                "  secure: never\n"
                                "\n"
                                "skip_files:\n"
                                "- ^(.*/)?\\.git/.*$\n"
                                "- ^node_modules/.*$\n"
                                "\n"
                                "error_handlers:\n"
                                "- file: errors/default.html\n"
                                "- error_code: over_quota\n"
                                "  file: errors/quota.html\n"
                                "- error_code: timeout\n"
                                "  file: errors/timeout.html\n";

static void test_realistic(void **state)
{
    struct af_app_yaml *app = NULL;
    char *log = load_ok_warnings(realistic, &app);
    /* Known-but-unsupported keys are ignored without a warning. */
    if (strstr(log, "WARNING"))
        fail_msg("unexpected warning: %s", log);
    free(log);

    assert_string_equal(app->application, "guestbook");
    assert_string_equal(app->service, "web");
    assert_string_equal(app->version, "7");
    assert_string_equal(app->runtime, "native");
    assert_string_equal(app->entrypoint, "./guestbook --flag");
    assert_true(app->threadsafe);
    assert_true(app->threadsafe_set);
    assert_string_equal(app->default_expiration, "1d 2h");

    assert_int_equal(app->n_env_variables, 3);
    assert_string_equal(app->env_variables[0].name, "GREETING");
    assert_string_equal(app->env_variables[0].value, "hello: world");
    assert_string_equal(app->env_variables[1].name, "RETRIES");
    assert_string_equal(app->env_variables[1].value, "3");
    assert_string_equal(app->env_variables[2].name, "EMPTY");
    assert_string_equal(app->env_variables[2].value, "");

    assert_int_equal(app->scaling, AF_SCALING_AUTOMATIC);
    assert_int_equal(app->max_concurrent_requests, 40);
    assert_int_equal(app->max_instances, 5);
    assert_int_equal(app->min_instances, 1);

    assert_int_equal(app->n_handlers, 4);
    const struct af_handler *h = &app->handlers[0];
    assert_int_equal(h->line, 31);
    assert_int_equal(h->kind, AF_HANDLER_STATIC_FILES);
    assert_string_equal(h->url, "/favicon\\.ico");
    assert_string_equal(h->static_files, "static/favicon.ico");
    assert_string_equal(h->upload, "static/favicon\\.ico");
    assert_string_equal(h->mime_type, "image/x-icon");
    assert_string_equal(h->expiration, "30m");
    assert_true(h->require_matching_file);
    assert_true(h->application_readable);
    assert_null(h->script);
    assert_int_equal(h->login, AF_LOGIN_OPTIONAL);
    assert_int_equal(h->auth_fail_action, AF_AUTH_FAIL_REDIRECT);
    assert_int_equal(h->secure, AF_SECURE_OPTIONAL);
    assert_int_equal(h->redirect_http_response_code, 0);

    h = &app->handlers[1];
    assert_int_equal(h->kind, AF_HANDLER_STATIC_DIR);
    assert_string_equal(h->static_dir, "static");
    assert_int_equal(h->n_http_headers, 2);
    assert_string_equal(h->http_headers[0].name, "X-Frame-Options");
    assert_string_equal(h->http_headers[0].value, "DENY");
    assert_string_equal(h->http_headers[1].value, "public, max-age=60");
    assert_false(h->require_matching_file);

    h = &app->handlers[2];
    assert_int_equal(h->kind, AF_HANDLER_SCRIPT);
    assert_string_equal(h->script, "auto");
    assert_int_equal(h->login, AF_LOGIN_ADMIN);
    assert_int_equal(h->auth_fail_action, AF_AUTH_FAIL_UNAUTHORIZED);
    assert_int_equal(h->secure, AF_SECURE_ALWAYS);
    assert_int_equal(h->redirect_http_response_code, 301);

    h = &app->handlers[3];
    assert_int_equal(h->login, AF_LOGIN_REQUIRED);
    assert_int_equal(h->secure, AF_SECURE_NEVER);

    assert_int_equal(app->n_skip_files, 2);
    assert_string_equal(app->skip_files[0], "^(.*/)?\\.git/.*$");
    assert_string_equal(app->skip_files[1], "^node_modules/.*$");

    assert_int_equal(app->n_error_handlers, 3);
    assert_null(app->error_handlers[0].error_code);
    assert_string_equal(app->error_handlers[0].file, "errors/default.html");
    assert_string_equal(app->error_handlers[1].error_code, "over_quota");
    assert_string_equal(app->error_handlers[2].error_code, "timeout");
    assert_string_equal(app->error_handlers[2].file, "errors/timeout.html");
    af_appyaml_free(app);
}

static void test_aliases_of_keys(void **state)
{
    struct af_app_yaml *app = load_ok("project: p\nmodule: m\nruntime: go121\nthreadsafe: False\n");
    assert_string_equal(app->application, "p");
    assert_string_equal(app->service, "m");
    assert_false(app->threadsafe);
    assert_true(app->threadsafe_set);
    af_appyaml_free(app);

    expect_error("application: a\nruntime: native\nproject: b\n",
                 "app.yaml:3:1: 'project' and 'application' (line 1) are the same setting");
    expect_error("module: a\nservice: b\nruntime: native\n",
                 "app.yaml:2:1: 'service' and 'module' (line 1) are the same setting");
    expect_error("runtime: native\nversion: 1\nruntime: go\n",
                 "app.yaml:3:1: duplicate key 'runtime' (first at line 1)");
}

static void test_application_id(void **state)
{
    static const struct {
        const char *given, *kept;
    } good[] = {
        {"guestbook", "guestbook"},       {"a", "a"},
        {"my-app-2", "my-app-2"},         {"example.com:my-app", "example.com:my-app"},
        {"s~my-app", "my-app"},           {"dev~x", "x"},
        {"e~example.com:y", "example.com:y"},
    };
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
        char text[128];
        snprintf(text, sizeof(text), "application: %s\nruntime: native\n", good[i].given);
        struct af_app_yaml *app = load_ok(text);
        assert_string_equal(app->application, good[i].kept);
        af_appyaml_free(app);
    }
    static const char *const bad[] = {"../../escaped", ".hidden", "My-App", "a_b", "-a", "a-",
                                      "a/b", "~a", "s~", "x:", ":x", "a b", ""};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        char text[128], want[256];
        snprintf(text, sizeof(text), "application: '%s'\nruntime: native\n", bad[i]);
        struct af_app_yaml *app = NULL;
        char msg[512];
        assert_int_equal(af_appyaml_parse("app.yaml", text, strlen(text), NULL, &app, msg,
                                          sizeof(msg)),
                         -1);
        snprintf(want, sizeof(want), "app.yaml:1:14: application: ");
        if (strncmp(msg, want, strlen(want)) != 0 || !strstr(msg, "is not an application id"))
            fail_msg("%s: %s", bad[i], msg);
    }
    expect_error("project: Big\nruntime: native\n",
                 "app.yaml:1:10: project: 'Big' is not an application id (1-100 lower-case "
                 "letters, digits and hyphens, neither first nor last a hyphen, optionally after "
                 "DOMAIN: and a PARTITION~)");
}

static void test_inbound_services(void **state)
{
    struct af_app_yaml *app = load_ok("runtime: native\n");
    assert_false(app->inbound_mail);
    af_appyaml_free(app);
    app = load_ok("runtime: native\ninbound_services:\n- warmup\n- mail\n- xmpp_message\n");
    assert_true(app->inbound_mail);
    af_appyaml_free(app);
    app = load_ok("runtime: native\ninbound_services: [warmup, mail_bounce]\n");
    assert_false(app->inbound_mail);
    af_appyaml_free(app);
    expect_error("runtime: native\ninbound_services:\n- email\n",
                 "app.yaml:3:3: inbound_services: 'email' is not an inbound service (mail, "
                 "mail_bounce, warmup, xmpp_message, xmpp_presence, xmpp_subscribe, xmpp_error, "
                 "channel_presence)");
    expect_error("runtime: native\ninbound_services: mail\n",
                 "app.yaml:2:19: inbound_services: expected a list of services (- mail, - "
                 "warmup, ...), got 'mail'");
}

static void test_scaling(void **state)
{
    struct af_app_yaml *app = load_ok("runtime: native\nmanual_scaling:\n  instances: 3\n");
    assert_int_equal(app->scaling, AF_SCALING_MANUAL);
    assert_int_equal(app->manual_instances, 3);
    af_appyaml_free(app);

    app = load_ok("runtime: native\nbasic_scaling:\n  max_instances: 2\n  idle_timeout: 10m\n");
    assert_int_equal(app->scaling, AF_SCALING_BASIC);
    assert_int_equal(app->basic_max_instances, 2);
    assert_int_equal(app->basic_idle_timeout_s, 600);
    af_appyaml_free(app);
    app = load_ok("runtime: native\nbasic_scaling:\n  max_instances: 2\n");
    assert_int_equal(app->basic_idle_timeout_s, 0); /* absent: the module's default */
    assert_int_equal(app->min_idle_instances, -1);
    assert_int_equal(app->max_idle_instances, -1);
    af_appyaml_free(app);

    /* Bounds of max_concurrent_requests. */
    app = load_ok("runtime: native\nautomatic_scaling:\n  max_concurrent_requests: 1\n");
    assert_int_equal(app->max_concurrent_requests, 1);
    af_appyaml_free(app);
    app = load_ok("runtime: native\nautomatic_scaling:\n  max_concurrent_requests: 80\n");
    assert_int_equal(app->max_concurrent_requests, 80);
    af_appyaml_free(app);

    expect_error("runtime: native\nautomatic_scaling:\n  max_concurrent_requests: abc\n",
                 "app.yaml:3:28: max_concurrent_requests: expected an integer from 1 to 80, got "
                 "'abc'");
    expect_error(
        "runtime: native\nautomatic_scaling:\n  max_concurrent_requests: 81\n",
        "app.yaml:3:28: max_concurrent_requests: expected an integer from 1 to 80, got '81'");
    expect_error("runtime: native\nautomatic_scaling:\n  max_concurrent_requests: 0\n", "got '0'");
    expect_error("runtime: native\nautomatic_scaling:\n  max_concurrent_requests: 1.5\n",
                 "got '1.5'");
    expect_error("runtime: native\nautomatic_scaling:\n  max_instances: -2\n",
                 "app.yaml:3:18: max_instances: expected an integer >= 0, got '-2'");
    expect_error("runtime: native\nautomatic_scaling:\n  max_instances: 2\n  min_instances: 3\n",
                 "app.yaml:3:3: automatic_scaling: min_instances (3) is above max_instances (2)");
    expect_error("runtime: native\nmanual_scaling:\n  instances: -1\n",
                 "app.yaml:3:14: instances: expected an integer >= 1, got '-1'");
    expect_error("runtime: native\nmanual_scaling:\n  instances: 0\n",
                 "instances: expected an integer >= 1, got '0'");
    expect_error("runtime: native\nmanual_scaling:\n  instances: 99999999999999999999\n",
                 "instances: expected an integer >= 1, got '99999999999999999999'");
    expect_error("runtime: native\nbasic_scaling:\n  max_instances: 0\n",
                 "app.yaml:3:18: max_instances: expected an integer >= 1, got '0'");
    expect_error("runtime: native\nmanual_scaling:\n  idle_timeout: 1\n",
                 "app.yaml:3:3: manual_scaling: instances is required");
    expect_error("runtime: native\nbasic_scaling:\n  idle_timeout: 1m\n",
                 "basic_scaling: max_instances is required");
    expect_error("runtime: native\nmanual_scaling: 3\n",
                 "app.yaml:2:17: manual_scaling: expected a mapping, got '3'");
    expect_error("runtime: native\nautomatic_scaling:\n  max_instances: 1\n"
                 "manual_scaling:\n  instances: 1\n",
                 "app.yaml:4:1: manual_scaling: only one of automatic_scaling, manual_scaling, "
                 "basic_scaling may be given ('automatic_scaling' at line 2)");
    expect_error("runtime: native\nbasic_scaling:\n  max_instances: 1\n"
                 "automatic_scaling: {}\n",
                 "app.yaml:4:1: automatic_scaling: only one of");
}

/* basic_scaling's idle_timeout and automatic_scaling's idle instances, as
 * app.yaml gives them, with their errors at the value's position. */
static void test_idle_scaling_keys(void **state)
{
    struct af_app_yaml *app =
        load_ok("runtime: native\nbasic_scaling:\n  max_instances: 1\n  idle_timeout: 1s\n");
    assert_int_equal(app->basic_idle_timeout_s, 1);
    af_appyaml_free(app);

    expect_error("runtime: native\nbasic_scaling:\n  max_instances: 1\n  idle_timeout: 5\n",
                 "app.yaml:4:17: idle_timeout: expected a duration of digits and one unit, s, m "
                 "or h, such as '10s' or '5m' (at least 1s, at most a year), got '5'");
    expect_error("runtime: native\nbasic_scaling:\n  max_instances: 1\n  idle_timeout: 0s\n",
                 "app.yaml:4:17: idle_timeout: expected a duration");
    expect_error("runtime: native\nbasic_scaling:\n  max_instances: 1\n  idle_timeout: 1m30s\n",
                 "got '1m30s'");
    expect_error("runtime: native\nbasic_scaling:\n  max_instances: 1\n  idle_timeout: [1m]\n",
                 "app.yaml:4:17: idle_timeout: expected a duration");

    /* The hour loads, with a warning that deployment wants minutes. */
    char *log = load_ok_warnings(
        "runtime: native\nbasic_scaling:\n  max_instances: 1\n  idle_timeout: 2h\n", &app);
    assert_int_equal(app->basic_idle_timeout_s, 7200);
    assert_non_null(strstr(log, "app.yaml:4:17: idle_timeout: App Engine's deployment accepts "
                                "only seconds and minutes: write '120m'"));
    free(log);
    af_appyaml_free(app);

    app = load_ok("runtime: native\nautomatic_scaling:\n  min_idle_instances: 1\n"
                  "  max_idle_instances: 3\n");
    assert_int_equal(app->min_idle_instances, 1);
    assert_int_equal(app->max_idle_instances, 3);
    af_appyaml_free(app);
    app = load_ok("runtime: native\nautomatic_scaling:\n  min_idle_instances: automatic\n"
                  "  max_idle_instances: 0\n");
    assert_int_equal(app->min_idle_instances, -1);
    assert_int_equal(app->max_idle_instances, 0);
    af_appyaml_free(app);
    expect_error("runtime: native\nautomatic_scaling:\n  max_idle_instances: -1\n",
                 "app.yaml:3:23: max_idle_instances: expected an integer >= 0 or 'automatic', "
                 "got '-1'");
    expect_error("runtime: native\nautomatic_scaling:\n  min_idle_instances: auto\n",
                 "app.yaml:3:23: min_idle_instances: expected an integer >= 0 or 'automatic', "
                 "got 'auto'");
    expect_error("runtime: native\nautomatic_scaling:\n  min_idle_instances: 4\n"
                 "  max_idle_instances: 2\n",
                 "app.yaml:3:3: automatic_scaling: min_idle_instances (4) is above "
                 "max_idle_instances (2)");
}

static void test_unknown_scaling_key_warns(void **state)
{
    struct af_app_yaml *app = NULL;
    char *log = load_ok_warnings(
        "runtime: native\nautomatic_scaling:\n  min_idle_instances: 1\n  bogus: 2\n", &app);
    assert_non_null(strstr(log, "app.yaml:4:3: unknown key 'bogus' ignored"));
    assert_null(strstr(log, "min_idle_instances"));
    free(log);
    af_appyaml_free(app);
}

static void test_handler_errors(void **state)
{
    expect_error("runtime: native\nhandlers:\n- url: /x\n",
                 "app.yaml:3:3: handler for '/x': needs one of script, static_dir, static_files");
    expect_error("runtime: native\nhandlers:\n- url: /x\n  script: auto\n  static_dir: s\n",
                 "app.yaml:3:3: handler for '/x': only one of script, static_dir, static_files may "
                 "be given");
    expect_error("runtime: native\nhandlers:\n- url: /x\n  static_files: a\n  static_dir: s\n",
                 "only one of script, static_dir, static_files");
    expect_error("runtime: native\nhandlers:\n- url: /x\n  static_files: a\n",
                 "app.yaml:3:3: handler for '/x': static_files needs upload");
    expect_error("runtime: native\nhandlers:\n- url: /x\n  static_dir: a\n  upload: b\n",
                 "app.yaml:5:3: upload: only valid with static_files");
    expect_error("runtime: native\nhandlers:\n- script: auto\n",
                 "app.yaml:3:3: handler: url is required");
    expect_error("runtime: native\nhandlers:\n- url: /x\n  url: /y\n",
                 "app.yaml:4:3: duplicate key 'url' (first at line 3)");
    expect_error("runtime: native\nhandlers:\n- url: ''\n  script: auto\n",
                 "app.yaml:3:8: url: expected a non-empty string, got ''");
    expect_error("runtime: native\nhandlers: /x\n",
                 "app.yaml:2:11: handlers: expected a list of handlers, got '/x'");
    expect_error("runtime: native\nhandlers:\n- /x\n",
                 "app.yaml:3:3: handler: expected a mapping, got '/x'");
    expect_error("runtime: native\nhandlers:\n- url: /x\n  script: [a]\n",
                 "app.yaml:4:11: script: expected a string, got a list");
    expect_error(
        "runtime: native\nhandlers:\n- url: /x\n  script: auto\n  login: sometimes\n",
        "app.yaml:5:10: login: expected one of optional, required, admin, got 'sometimes'");
    expect_error("runtime: native\nhandlers:\n- url: /x\n  script: auto\n  secure: maybe\n",
                 "app.yaml:5:11: secure: expected one of optional, never, always, got 'maybe'");
    expect_error(
        "runtime: native\nhandlers:\n- url: /x\n  script: auto\n  auth_fail_action: 404\n",
        "app.yaml:5:21: auth_fail_action: expected one of redirect, unauthorized, got '404'");
    expect_error("runtime: native\nhandlers:\n- url: /x\n  script: auto\n"
                 "  redirect_http_response_code: 304\n",
                 "app.yaml:5:32: redirect_http_response_code: expected one of 301, 302, 303, 307, "
                 "got '304'");
    expect_error("runtime: native\nhandlers:\n- url: /x\n  static_dir: s\n"
                 "  require_matching_file: perhaps\n",
                 "app.yaml:5:26: require_matching_file: expected true or false, got 'perhaps'");
    expect_error("runtime: native\nhandlers:\n- url: /x\n  static_dir: s\n  expiration: 5 days\n",
                 "app.yaml:5:15: expiration: expected a duration such as '4d 5h 30m 15s', got '5 "
                 "days'");
    expect_error("runtime: native\nhandlers:\n- url: /x\n  static_dir: s\n  http_headers: [a]\n",
                 "app.yaml:5:17: http_headers: expected a mapping, got a list");
    expect_error("runtime: native\nhandlers:\n- url: /x\n  static_dir: s\n  http_headers:\n"
                 "    Bad Name: v\n",
                 "app.yaml:6:5: http_headers: expected an HTTP header name, got 'Bad Name'");
    expect_error("runtime: native\nhandlers:\n- url: /x\n  static_dir: s\n  http_headers:\n"
                 "    X-A: \"a\\r\\nSet-Cookie: x\"\n",
                 "app.yaml:6:10: X-A: expected a header value on one line, got 'a??Set-Cookie: x'");
    expect_error("runtime: native\nhandlers:\n- url: /x\n  static_dir: s\n  http_headers:\n"
                 "    X-A: 1\n    x-a: 2\n",
                 "app.yaml:7:5: http_headers: 'x-a' given twice");
    expect_error("runtime: native\nhandlers:\n- url: /x\n  static_dir: s\n  http_headers:\n"
                 "    X-A: {b: c}\n",
                 "app.yaml:6:10: X-A: expected a string, got a mapping");
}

/* A value quoted in a message may hold newlines (a plain scalar folds blank
 * lines into them, a quoted one spells them out): the message stays one
 * line, each control character shown as '?'. */
static void test_error_quoting_a_multiline_value_is_one_line(void **state)
{
    (void)state;
    expect_error("runtime: native\nhandlers:\n- url: /a\n\n\n    b\n",
                 "app.yaml:3:3: handler for '/a??b': needs one of script, static_dir, "
                 "static_files");
    expect_error("runtime: native\nhandlers:\n- url: \"/a\\tb\\r\\nc\"\n",
                 "app.yaml:3:3: handler for '/a?b??c': needs one of script, static_dir, "
                 "static_files");
    struct af_app_yaml *app = NULL;
    char *log = load_ok_warnings("runtime: native\n\"a\\nb\\u007fc\": 1\n", &app);
    assert_non_null(strstr(log, "app.yaml:2:1: unknown key 'a?b?c' ignored\n"));
    assert_int_equal(strchr(log, '\n') - log + 1, (long)strlen(log));
    free(log);
    af_appyaml_free(app);
}

static void test_bad_regexes(void **state)
{
    expect_error("runtime: native\nhandlers:\n- url: /(x\n  script: auto\n",
                 "app.yaml:3:8: bad regular expression '/(x': missing closing parenthesis at "
                 "offset 3");
    expect_error("runtime: native\nhandlers:\n- url: /x\n  static_files: a\n  upload: '[a'\n",
                 "app.yaml:5:11: bad regular expression '[a': missing terminating ] for character "
                 "class at offset 2");
    expect_error("runtime: native\nskip_files: '*.bak'\n",
                 "app.yaml:2:13: bad regular expression '*.bak': quantifier does not follow a "
                 "repeatable item at offset 0");
    expect_error("runtime: native\nskip_files:\n- ok\n- a)\n",
                 "app.yaml:4:3: bad regular expression 'a)': unmatched closing parenthesis at "
                 "offset 1");
    expect_error("runtime: native\nskip_files:\n- [a]\n",
                 "app.yaml:3:3: skip_files: expected a regular expression, got a list");
    expect_error(
        "runtime: native\nskip_files: {a: b}\n",
        "app.yaml:2:13: skip_files: expected a regular expression or a list of them, got a "
        "mapping");
}

static void test_skip_files_single(void **state)
{
    struct af_app_yaml *app = load_ok("runtime: native\nskip_files: ^tmp/.*$\n");
    assert_int_equal(app->n_skip_files, 1);
    assert_string_equal(app->skip_files[0], "^tmp/.*$");
    af_appyaml_free(app);

    /* An empty list skips nothing; a null value keeps the default. */
    app = load_ok("runtime: native\nskip_files: []\n");
    assert_int_equal(app->n_skip_files, 0);
    af_appyaml_free(app);
    app = load_ok("runtime: native\nskip_files:\n");
    assert_int_equal(app->n_skip_files, 5);
    af_appyaml_free(app);
}

static void test_top_level_types(void **state)
{
    expect_error("runtime: {a: b}\n", "app.yaml:1:10: runtime: expected a string, got a mapping");
    expect_error("runtime: native\nthreadsafe: maybe\n",
                 "app.yaml:2:13: threadsafe: expected true or false, got 'maybe'");
    expect_error("runtime: native\nthreadsafe: [true]\n",
                 "app.yaml:2:13: threadsafe: expected true or false, got a list");
    expect_error("runtime: native\nversion: ''\n",
                 "app.yaml:2:10: version: expected a non-empty string, got ''");
    expect_error("runtime: native\ndefault_expiration: 10x\n",
                 "app.yaml:2:21: default_expiration: expected a duration");
    expect_error("runtime: native\nenv_variables: FOO\n",
                 "app.yaml:2:16: env_variables: expected a mapping, got 'FOO'");
    expect_error("runtime: native\nenv_variables:\n  A: [1]\n",
                 "app.yaml:3:6: A: expected a string, got a list");
    expect_error("runtime: native\nenv_variables:\n  A=B: 1\n",
                 "app.yaml:3:3: env_variables: expected a variable name without '=', got 'A=B'");
    expect_error("runtime: native\nenv_variables:\n  A: 1\n  A: 2\n",
                 "app.yaml:4:3: env_variables: 'A' given twice");
    expect_error("runtime: native\n? [a]\n: b\n",
                 "app.yaml:2:3: top level: expected a key name, got a list");
    /* Long values are shortened in messages. */
    expect_error(
        "runtime: native\nthreadsafe: "
        "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\n",
        "got 'aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa...'");
}

static void test_runtime_required(void **state)
{
    expect_error("service: x\n", "app.yaml:1:1: runtime: required");
    expect_error("service: x\nruntime:\n", "app.yaml:2:1: runtime: required");
    expect_error("runtime: ''\n", "app.yaml:1:10: runtime: expected a non-empty string, got ''");
}

static void test_document_shape(void **state)
{
    expect_error("", "app.yaml: empty file");
    expect_error("# only a comment\n", "app.yaml: empty file");
    expect_error("- runtime: native\n", "app.yaml:1:1: top level: expected a mapping, got a list");
    expect_error("just a string\n",
                 "app.yaml:1:1: top level: expected a mapping, got 'just a string'");
    expect_error("runtime: native\n---\nruntime: go\n",
                 "app.yaml:2:1: only one YAML document is allowed in app.yaml");
    expect_error("base: &b native\nruntime: *b\n",
                 "app.yaml:2:10: YAML aliases (*b) are not supported in app.yaml");
}

static void test_yaml_syntax_errors(void **state)
{
    expect_error("runtime: native\nhandlers:\n- url: /x\n  script: auto\n bad: indent\n",
                 "app.yaml:5:2: did not find expected key (while parsing a block mapping at 1:1)");
    expect_error("runtime: native\nservice: [a, b\n",
                 "app.yaml:3:1: did not find expected ',' or ']' (while parsing a flow sequence at "
                 "2:10)");
    expect_error("runtime: \"native\n", "app.yaml:2:1: found unexpected end of stream (while "
                                        "scanning a quoted scalar at 1:10)");
    expect_error("runtime: native\n\tservice: x\n",
                 "app.yaml:2:1: found a tab character that violates indentation");
    /* Reader errors come with a byte offset, turned into a position. */
    expect_error("runtime: native\nservice: \xff\n",
                 "app.yaml:2:10: invalid leading UTF-8 octet (byte 0xFF)");
    /* A NUL inside a value. */
    expect_error("runtime: \"nat\\0ive\"\n", "app.yaml:1:10: a NUL character is not allowed");
}

static void test_depth_limit(void **state)
{
    char text[256] = "runtime: native\nx: ";
    size_t off = strlen(text);
    for (int i = 0; i < 40; i++)
        text[off++] = '[';
    for (int i = 0; i < 40; i++)
        text[off++] = ']';
    text[off++] = '\n';
    text[off] = '\0';
    expect_error(text, "app.yaml:2:");
    expect_error(text, "nested deeper than 32 levels");
}

static void test_size_limit(void **state)
{
    size_t len = 1024 * 1024 + 1;
    char *big = malloc(len + 1);
    assert_non_null(big);
    memset(big, '#', len);
    big[0] = 'r';
    memcpy(big, "runtime: native\n", 16);
    big[len] = '\0';
    expect_error_len(big, len, "app.yaml: 1048577 bytes is more than the 1048576 byte limit");
    free(big);
}

static void test_unknown_keys_warn(void **state)
{
    struct af_app_yaml *app = NULL;
    char *log = load_ok_warnings("runtime: native\nfrobnicate: 1\nhandlers:\n- url: /.*\n"
                                 "  script: auto\n  colour: red\n"
                                 "error_handlers:\n- file: e.html\n  extra: 1\n",
                                 &app);
    assert_non_null(strstr(log, "WARNING"));
    assert_non_null(strstr(log, "app.yaml:2:1: unknown key 'frobnicate' ignored"));
    assert_non_null(strstr(log, "app.yaml:6:3: unknown key 'colour' ignored"));
    assert_non_null(strstr(log, "app.yaml:9:3: unknown key 'extra' ignored"));
    free(log);
    assert_int_equal(app->n_handlers, 1);
    af_appyaml_free(app);
}

static void test_static_only_on_script_warns(void **state)
{
    struct af_app_yaml *app = NULL;
    char *log = load_ok_warnings("runtime: native\nhandlers:\n- url: /.*\n  script: auto\n"
                                 "  mime_type: text/plain\n  expiration: 1d\n",
                                 &app);
    assert_non_null(strstr(log, "app.yaml:5:3: mime_type has no effect on a script handler"));
    assert_non_null(strstr(log, "app.yaml:6:3: expiration has no effect on a script handler"));
    free(log);
    /* Still stored: the message is advice, not a change of meaning. */
    assert_string_equal(app->handlers[0].mime_type, "text/plain");
    af_appyaml_free(app);
}

static void test_error_handlers(void **state)
{
    struct af_app_yaml *app =
        load_ok("runtime: native\nerror_handlers:\n- error_code: default\n  file: d.html\n"
                "- error_code: dos_api_denial\n  file: dos.html\n");
    assert_int_equal(app->n_error_handlers, 2);
    assert_null(app->error_handlers[0].error_code);
    assert_string_equal(app->error_handlers[1].error_code, "dos_api_denial");
    af_appyaml_free(app);

    expect_error("runtime: native\nerror_handlers:\n- error_code: timeout\n",
                 "app.yaml:3:3: error handler: file is required");
    expect_error("runtime: native\nerror_handlers:\n- error_code: 500\n  file: x\n",
                 "app.yaml:3:15: error_code: expected one of default, over_quota, dos_api_denial, "
                 "timeout, got '500'");
    expect_error("runtime: native\nerror_handlers:\n- file: a\n- file: b\n",
                 "app.yaml:4:3: error handler: error_code 'default' given twice");
    expect_error("runtime: native\nerror_handlers: x\n",
                 "app.yaml:2:17: error_handlers: expected a list of error handlers, got 'x'");
}

static void test_null_values_are_absent(void **state)
{
    struct af_app_yaml *app =
        load_ok("runtime: native\nservice: ~\nentrypoint:\nhandlers: null\nthreadsafe:\n");
    assert_string_equal(app->service, "default");
    assert_null(app->entrypoint);
    assert_int_equal(app->n_handlers, 0);
    assert_false(app->threadsafe_set);
    af_appyaml_free(app);
    /* Quoted "null" is a string, not null. */
    app = load_ok("runtime: native\nentrypoint: 'null'\n");
    assert_string_equal(app->entrypoint, "null");
    af_appyaml_free(app);
}

static void test_runtime_is_stock(void **state)
{
    static const struct {
        const char *runtime;
        bool stock;
    } cases[] = {
        {"go121", true},    {"go", true},      {"python312", true}, {"python3", true},
        {"nodejs20", true}, {"java17", true},  {"php83", true},     {"ruby32", true},
        {"native", false},  {"custom", false}, {"golang", false},   {"go1.21", false},
        {"pythonx", false}, {"", false},       {NULL, false},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        if (af_runtime_is_stock(cases[i].runtime) != cases[i].stock)
            fail_msg("af_runtime_is_stock(%s) != %d", cases[i].runtime ? cases[i].runtime : "NULL",
                     cases[i].stock);
    }
}

static void test_idle_timeout_parse(void **state)
{
    static const struct {
        const char *text;
        int seconds; /* -1: refused */
    } cases[] = {
        {"1s", 1},        {"10s", 10},       {"5m", 300},     {"1h", 3600},
        {"90m", 5400},    {"007s", 7},       {"8784h", 366 * 86400},
        {"527040m", 366 * 86400},            {"31622400s", 366 * 86400},
        {"0s", -1},       {"0m", -1},        {"", -1},        {"s", -1},
        {"10", -1},       {"10d", -1},       {"10S", -1},     {"10 s", -1},
        {" 10s", -1},     {"10s ", -1},      {"1m30s", -1},   {"1.5m", -1},
        {"-1s", -1},      {"+1s", -1},       {"8785h", -1},   {"31622401s", -1},
        {"99999999999999999999s", -1},       {"10ms", -1},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        int secs = -2;
        int rc = af_idle_timeout_parse(cases[i].text, &secs);
        if (cases[i].seconds < 0) {
            if (rc != -1)
                fail_msg("af_idle_timeout_parse('%s') accepted it as %d", cases[i].text, secs);
            assert_int_equal(secs, -2); /* untouched on failure */
        } else if (rc != 0 || secs != cases[i].seconds) {
            fail_msg("af_idle_timeout_parse('%s'): rc %d, %d s; expected %d s", cases[i].text, rc,
                     secs, cases[i].seconds);
        }
    }
}

static void test_expiration_parse(void **state)
{
    long long s = -1;
    assert_int_equal(af_expiration_parse("4d 5h 30m 15s", &s), 0);
    assert_int_equal(s, 4 * 86400 + 5 * 3600 + 30 * 60 + 15);
    assert_int_equal(af_expiration_parse("10m", &s), 0);
    assert_int_equal(s, 600);
    assert_int_equal(af_expiration_parse(" 1d2h ", &s), 0);
    assert_int_equal(s, 86400 + 7200);
    assert_int_equal(af_expiration_parse("0s", &s), 0);
    assert_int_equal(s, 0);
    assert_int_equal(af_expiration_parse("", &s), -1);
    assert_int_equal(af_expiration_parse("   ", &s), -1);
    assert_int_equal(af_expiration_parse("10", &s), -1);
    assert_int_equal(af_expiration_parse("d", &s), -1);
    assert_int_equal(af_expiration_parse("10w", &s), -1);
    assert_int_equal(af_expiration_parse("-1d", &s), -1);
    assert_int_equal(af_expiration_parse("99999999999999999999d", &s), -1);
    /* The cap is a century. */
    assert_int_equal(af_expiration_parse("36000d", &s), 0);
    assert_int_equal(s, 36000LL * 86400);
    assert_int_equal(af_expiration_parse("40000d", &s), -1);
    assert_int_equal(af_expiration_parse("20000d 20000d", &s), -1);
}

/* ---- from disk ---------------------------------------------------------- */

static char tmpdir[64];

static int make_tmpdir(void **state)
{
    strcpy(tmpdir, "/tmp/af_appyaml_XXXXXX");
    return mkdtemp(tmpdir) ? 0 : -1;
}

static int remove_tmpdir(void **state)
{
    char *cmd = NULL;
    if (asprintf(&cmd, "rm -rf '%s'", tmpdir) < 0)
        return -1;
    int rc = system(cmd);
    free(cmd);
    return rc == 0 ? 0 : -1;
}

static void write_file(const char *path, const char *text, size_t len)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    assert_int_equal(fwrite(text, 1, len, f), len);
    fclose(f);
}

static void test_load_from_disk(void **state)
{
    char path[256], real[PATH_MAX];
    struct af_app_yaml *app = NULL;
    assert_non_null(realpath(tmpdir, real));

    /* A directory with app.yml only. */
    snprintf(path, sizeof(path), "%s/d1", tmpdir);
    assert_int_equal(mkdir(path, 0700), 0);
    snprintf(path, sizeof(path), "%s/d1/app.yml", tmpdir);
    write_file(path, "runtime: native\n", 16);
    snprintf(path, sizeof(path), "%s/d1", tmpdir);
    if (af_appyaml_load(path, &app, err, sizeof(err)) != 0)
        fail_msg("load: %s", err);
    char want[PATH_MAX + 32];
    snprintf(want, sizeof(want), "%s/d1/app.yml", real);
    assert_string_equal(app->path, want);
    snprintf(want, sizeof(want), "%s/d1", real);
    assert_string_equal(app->dir, want);
    af_appyaml_free(app);

    /* app.yaml is preferred over app.yml, and a file path works too. */
    snprintf(path, sizeof(path), "%s/d1/app.yaml", tmpdir);
    write_file(path, "runtime: go121\n", 15);
    snprintf(path, sizeof(path), "%s/d1", tmpdir);
    assert_int_equal(af_appyaml_load(path, &app, err, sizeof(err)), 0);
    assert_string_equal(app->runtime, "go121");
    af_appyaml_free(app);
    snprintf(path, sizeof(path), "%s/d1/app.yml", tmpdir);
    assert_int_equal(af_appyaml_load(path, &app, err, sizeof(err)), 0);
    assert_string_equal(app->runtime, "native");
    af_appyaml_free(app);

    /* Messages name the file as given, with line and column. */
    snprintf(path, sizeof(path), "%s/bad.yaml", tmpdir);
    write_file(path, "runtime: native\nthreadsafe: maybe\n", 34);
    assert_int_equal(af_appyaml_load(path, &app, err, sizeof(err)), -1);
    assert_null(app);
    snprintf(want, sizeof(want), "%s:2:13: threadsafe: expected true or false", path);
    assert_non_null(strstr(err, want));

    /* An empty directory. */
    snprintf(path, sizeof(path), "%s/d2", tmpdir);
    assert_int_equal(mkdir(path, 0700), 0);
    assert_int_equal(af_appyaml_load(path, &app, err, sizeof(err)), -1);
    snprintf(want, sizeof(want), "%s: no app.yaml or app.yml in this directory", path);
    assert_string_equal(err, want);

    /* A missing path. */
    snprintf(path, sizeof(path), "%s/nope", tmpdir);
    assert_int_equal(af_appyaml_load(path, &app, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "No such file or directory"));

    /* Too large: refused before reading. */
    snprintf(path, sizeof(path), "%s/big.yaml", tmpdir);
    size_t len = 2 * 1024 * 1024;
    char *big = calloc(1, len);
    assert_non_null(big);
    memset(big, '#', len);
    write_file(path, big, len);
    free(big);
    assert_int_equal(af_appyaml_load(path, &app, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "2097152 bytes is more than the 1048576 byte limit"));
}

int main(void)
{
    /* Warnings are what some tests look for; debug lines would only add noise. */
    af_log_set_level(AF_LOG_INFO);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_minimal_defaults),
        cmocka_unit_test(test_realistic),
        cmocka_unit_test(test_aliases_of_keys),
        cmocka_unit_test(test_application_id),
        cmocka_unit_test(test_inbound_services),
        cmocka_unit_test(test_scaling),
        cmocka_unit_test(test_unknown_scaling_key_warns),
        cmocka_unit_test(test_handler_errors),
        cmocka_unit_test(test_bad_regexes),
        cmocka_unit_test(test_skip_files_single),
        cmocka_unit_test(test_top_level_types),
        cmocka_unit_test(test_runtime_required),
        cmocka_unit_test(test_document_shape),
        cmocka_unit_test(test_yaml_syntax_errors),
        cmocka_unit_test(test_depth_limit),
        cmocka_unit_test(test_size_limit),
        cmocka_unit_test(test_unknown_keys_warn),
        cmocka_unit_test(test_static_only_on_script_warns),
        cmocka_unit_test(test_error_handlers),
        cmocka_unit_test(test_error_quoting_a_multiline_value_is_one_line),
        cmocka_unit_test(test_null_values_are_absent),
        cmocka_unit_test(test_runtime_is_stock),
        cmocka_unit_test(test_expiration_parse),
        cmocka_unit_test(test_idle_timeout_parse),
        cmocka_unit_test(test_idle_scaling_keys),
        cmocka_unit_test_setup_teardown(test_load_from_disk, make_tmpdir, remove_tmpdir),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
