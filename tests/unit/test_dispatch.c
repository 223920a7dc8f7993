/* Unit tests for proxy/dispatch.c: the file's shape and every error with its
 * FILE:LINE:COLUMN, production's URL rules, warnings, loading from disk, and
 * the matcher (hosts, ports, wildcards, queries, /_ah/, order). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "common/log.h"
#include "proxy/dispatch.h"

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

/* What was written to stderr since capture_start(); caller frees. */
static char *capture_stop(void)
{
    assert_true(dup2(saved_stderr, STDERR_FILENO) >= 0);
    close(saved_stderr);
    long len = ftell(capture_file);
    assert_true(len >= 0);
    char *buf = calloc(1, (size_t)len + 1);
    assert_non_null(buf);
    rewind(capture_file);
    assert_int_equal(fread(buf, 1, (size_t)len, capture_file), (size_t)len);
    fclose(capture_file);
    return buf;
}

/* ---- helpers ------------------------------------------------------------ */

static struct af_dispatch *parse_ok(const char *text)
{
    struct af_dispatch *d = NULL;
    err[0] = '\0';
    if (af_dispatch_parse("dispatch.yaml", text, strlen(text), &d, err, sizeof(err)) != 0)
        fail_msg("expected success, got: %s", err);
    assert_non_null(d);
    return d;
}

/* Parsing text fails with exactly the message want. */
static void expect_error(const char *text, const char *want)
{
    struct af_dispatch *d = (struct af_dispatch *)1;
    err[0] = '\0';
    assert_int_equal(af_dispatch_parse("dispatch.yaml", text, strlen(text), &d, err, sizeof(err)),
                     -1);
    assert_null(d);
    if (strcmp(err, want) != 0)
        fail_msg("for:\n%s\nwant: %s\ngot:  %s", text, want, err);
}

/* Parsing text fails with a message that starts with prefix. */
static void expect_error_prefix(const char *text, const char *prefix)
{
    struct af_dispatch *d = NULL;
    err[0] = '\0';
    assert_int_equal(af_dispatch_parse("dispatch.yaml", text, strlen(text), &d, err, sizeof(err)),
                     -1);
    if (strncmp(err, prefix, strlen(prefix)) != 0)
        fail_msg("for:\n%s\nwant a message starting: %s\ngot: %s", text, prefix, err);
}

/* A one-rule file for url, parsed: the error or NULL. */
static const char *url_error(const char *url)
{
    char text[512];
    snprintf(text, sizeof(text), "dispatch:\n- url: \"%s\"\n  service: api\n", url);
    struct af_dispatch *d = NULL;
    err[0] = '\0';
    if (af_dispatch_parse("dispatch.yaml", text, strlen(text), &d, err, sizeof(err)) == 0) {
        af_dispatch_free(d);
        return NULL;
    }
    return err;
}

/* ---- parsing ------------------------------------------------------------ */

static void test_realistic(void **state)
{
    struct af_dispatch *d = parse_ok("# production's example\n"
                                     "application: simple-sample\n"
                                     "dispatch:\n"
                                     "  - url: \"*/favicon.ico\"\n"
                                     "    service: default\n"
                                     "  - url: \"simple-sample.appspot.com/\"\n"
                                     "    module: default\n"
                                     "  - url: \"*/mobile/*\"\n"
                                     "    service: mobile-frontend\n"
                                     "  - url: \"*.example.com/work/*\"\n"
                                     "    service: static-backend\n");
    assert_string_equal(d->path, "dispatch.yaml");
    assert_int_equal(d->n_rules, 4);
    const struct af_dispatch_rule *r = d->rules;
    assert_string_equal(r[0].url, "*/favicon.ico");
    assert_false(r[0].host_exact);
    assert_string_equal(r[0].host, "");
    assert_int_equal(r[0].host_len, 0);
    assert_true(r[0].path_exact);
    assert_string_equal(r[0].path, "/favicon.ico");
    assert_string_equal(r[0].service, "default");
    assert_int_equal(r[0].line, 4);
    assert_int_equal(r[0].col, 5);

    assert_true(r[1].host_exact);
    assert_string_equal(r[1].host, "simple-sample.appspot.com");
    assert_string_equal(r[1].path, "/");
    assert_true(r[1].path_exact);
    assert_string_equal(r[1].service, "default");

    assert_false(r[2].path_exact);
    assert_string_equal(r[2].path, "/mobile/");
    assert_int_equal(r[2].path_len, 8);
    assert_string_equal(r[2].service, "mobile-frontend");

    assert_false(r[3].host_exact);
    assert_string_equal(r[3].host, ".example.com");
    assert_string_equal(r[3].path, "/work/");
    assert_int_equal(r[3].line, 10);
    af_dispatch_free(d);
}

static void test_empty_files(void **state)
{
    const char *texts[] = {
        "", "# nothing\n", "dispatch:\n", "dispatch: []\n", "dispatch: ~\n", "application: x\n"};
    for (size_t i = 0; i < sizeof(texts) / sizeof(texts[0]); i++) {
        struct af_dispatch *d = parse_ok(texts[i]);
        assert_int_equal(d->n_rules, 0);
        af_dispatch_free(d);
    }
}

static void test_shape_errors(void **state)
{
    expect_error("- url: \"*/a\"\n", "dispatch.yaml:1:1: top level: expected a mapping with "
                                     "'dispatch:', got a list");
    expect_error("dispatch: \"*/a\"\n", "dispatch.yaml:1:11: dispatch: expected a list of entries "
                                        "(- url: ..., service: ...), got '*/a'");
    expect_error("dispatch:\n  url: \"*/a\"\n  service: x\n",
                 "dispatch.yaml:2:3: dispatch: expected a list of entries (- url: ..., "
                 "service: ...), got a mapping");
    expect_error("dispatch:\n- \"*/a\"\n", "dispatch.yaml:2:3: dispatch entry: expected a mapping "
                                           "with url and service, got '*/a'");
    expect_error("dispatch:\n- service: api\n",
                 "dispatch.yaml:2:3: dispatch entry: url is required (for example url: "
                 "\"*/api/*\")");
    expect_error("dispatch:\n- url: \"*/api/*\"\n",
                 "dispatch.yaml:2:3: dispatch entry for '*/api/*': service is required");
    expect_error("dispatch:\n- url: \"*/a\\n\\nb\"\n",
                 "dispatch.yaml:2:3: dispatch entry for '*/a??b': service is required");
    expect_error("dispatch:\n- url: \"*/a\"\n  service: api\n  module: api\n",
                 "dispatch.yaml:4:3: dispatch entry: only one of service and module may be given "
                 "('service' at line 3)");
    expect_error("dispatch:\n- url: \"*/a\"\n  url: \"*/b\"\n  service: api\n",
                 "dispatch.yaml:3:3: duplicate key 'url' (first at line 2)");
    expect_error("dispatch: []\ndispatch: []\n",
                 "dispatch.yaml:2:1: duplicate key 'dispatch' (first at line 1)");
    expect_error("dispatch:\n- url:\n  service: api\n",
                 "dispatch.yaml:2:7: url: expected a string, got nothing");
    expect_error("dispatch:\n- url: [a]\n  service: api\n",
                 "dispatch.yaml:2:8: url: expected a string, got a list");
    expect_error("dispatch:\n- url: \"*/a\"\n  service: {a: b}\n",
                 "dispatch.yaml:3:12: service: expected a string, got a mapping");
    expect_error("dispatch:\n- url: \"*/a\\0b\"\n  service: api\n",
                 "dispatch.yaml:2:8: url: a NUL character is not allowed in a value");
    expect_error("dispatch: []\n---\ndispatch: []\n",
                 "dispatch.yaml:3:1: only one YAML document is allowed in dispatch.yaml");
    expect_error("dispatch:\n- [a]: b\n",
                 "dispatch.yaml:2:3: dispatch entry: a key must be a plain name");
}

static void test_service_names(void **state)
{
    const char *bad[] = {"Api", "-api", "api-", "a_b", "a.b"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        char text[256], want[512];
        snprintf(text, sizeof(text), "dispatch:\n- url: \"*/a\"\n  service: %s\n", bad[i]);
        snprintf(want, sizeof(want),
                 "dispatch.yaml:3:12: service: '%s' is not a service name (1 to 63 lower-case "
                 "letters, digits and '-', not starting or ending with '-')",
                 bad[i]);
        expect_error(text, want);
    }
    /* 64 characters: one too many (the message quotes 60 of them). */
    expect_error_prefix("dispatch:\n- url: \"*/a\"\n  service: "
                        "a234567890123456789012345678901234567890123456789012345678901234\n",
                        "dispatch.yaml:3:12: service: 'a2345678901234567890123456789012345678901"
                        "2345678901234567890...' is not a service name");
    struct af_dispatch *d =
        parse_ok("dispatch:\n- url: \"*/a\"\n  module: 0-x9\n"
                 "- url: \"*/b\"\n  module: "
                 "a23456789012345678901234567890123456789012345678901234567890123"
                 "\n");
    assert_string_equal(d->rules[0].service, "0-x9");
    af_dispatch_free(d);
}

static void test_url_rules(void **state)
{
    /* Production's examples and forms that are fine. */
    const char *good[] = {"*/",
                          "*/*",
                          "*/a/b",
                          "*/a/*",
                          "example.com/",
                          "a-b.example.com/x*",
                          "*.example.com/*",
                          "*-dev.example.com/",
                          "*example.com/",
                          "*-a/",
                          "localhost/api/*",
                          "*/%7Euser/*",
                          "1.2.3/x",
                          "300.1.1.1/x"};
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++)
        if (url_error(good[i]))
            fail_msg("%s: %s", good[i], err);

    struct {
        const char *url;
        const char *msg;
    } bad[] = {
        {"/api/*", "url: '/api/*' is not HOST/PATH (for example \"*/api/*\")"},
        {"api", "url: 'api' is not HOST/PATH (for example \"*/api/*\")"},
        {"*/a*b", "url: path '/a*b': '*' may only end the path"},
        {"*/a**", "url: path '/a**': '*' may only end the path"},
        {"*/a?x=1", "url: path '/a?x=1': a query or fragment is never matched: give the path "
                    "alone"},
        {"*/a b", "url: path '/a b': the path holds printable ASCII only: percent-encode other "
                  "bytes"},
        {"a*.com/", "url: host 'a*.com': '*' may only start the host"},
        {"**/", "url: host '**': '*' may only start the host"},
        {"Example.com/", "url: host 'Example.com': a host holds lower-case letters, digits, '-' "
                         "and '.'"},
        {"ex_ample.com/", "url: host 'ex_ample.com': a host holds lower-case letters, digits, "
                          "'-' and '.'"},
        {"example..com/", "url: host 'example..com': each part of a host between dots starts "
                          "and ends with a letter or digit"},
        {"-a.com/", "url: host '-a.com': each part of a host between dots starts and ends with "
                    "a letter or digit"},
        {"a-.com/", "url: host 'a-.com': each part of a host between dots starts and ends with "
                    "a letter or digit"},
        {"example.com./", "url: host 'example.com.': each part of a host between dots starts "
                          "and ends with a letter or digit"},
        {"*./", "url: host '*.': each part of a host between dots starts and ends with a letter "
                "or digit"},
        {"*-/", "url: host '*-': each part of a host between dots starts and ends with a letter "
                "or digit"},
        {"127.0.0.1/", "url: host '127.0.0.1': the host may not be an IPv4 address"},
        {"[::1]/", "url: host '[::1]': a host holds lower-case letters, digits, '-' and '.'"},
        /* Control characters never reach a message: it stays one line. */
        {"*/a\\nb", "url: path '/a?b': the path holds printable ASCII only: percent-encode "
                    "other bytes"},
        {"a\\tb/", "url: host 'a?b': a host holds lower-case letters, digits, '-' and '.'"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        const char *got = url_error(bad[i].url);
        if (!got)
            fail_msg("%s: accepted", bad[i].url);
        char want[512];
        snprintf(want, sizeof(want), "dispatch.yaml:2:8: %s", bad[i].msg);
        if (strcmp(got, want) != 0)
            fail_msg("%s:\nwant: %s\ngot:  %s", bad[i].url, want, got);
    }
}

static void test_yaml_errors(void **state)
{
    expect_error_prefix("dispatch:\n- url: \"*/a\n", "dispatch.yaml:3:1: found unexpected end of "
                                                     "stream (while scanning a quoted scalar at "
                                                     "2:8)");
    expect_error_prefix("dispatch:\n  - url: a\n - url: b\n", "dispatch.yaml:3:2: ");
    expect_error_prefix("dispatch:\n- url: \"*/\xff\"\n", "dispatch.yaml:2:11: invalid leading "
                                                          "UTF-8 octet (byte 0xFF)");
}

static void test_warnings(void **state)
{
    capture_start();
    struct af_dispatch *d = parse_ok("dispatch:\n- url: \"*/a\"\n  service: api\n  when: now\n"
                                     "colour: blue\n");
    char *out = capture_stop();
    assert_int_equal(d->n_rules, 1);
    af_dispatch_free(d);
    assert_non_null(strstr(out, "dispatch.yaml:4:3: unknown key 'when' in a dispatch entry is "
                                "ignored"));
    assert_non_null(strstr(out, "dispatch.yaml:5:1: unknown key 'colour' is ignored"));
    free(out);

    /* Production's limits: 20 rules, 100 characters of host or path. */
    char text[8192];
    size_t off = (size_t)snprintf(text, sizeof(text), "dispatch:\n");
    for (int i = 0; i < 21; i++)
        off +=
            (size_t)snprintf(text + off, sizeof(text) - off, "- url: \"*/r%d\"\n  service: a\n", i);
    capture_start();
    d = parse_ok(text);
    out = capture_stop();
    assert_int_equal(d->n_rules, 21);
    af_dispatch_free(d);
    assert_non_null(strstr(out, "dispatch.yaml:2:1: dispatch: 21 entries; App Engine refuses "
                                "more than 20 on deploy"));
    free(out);

    char path[200];
    memset(path, 'p', sizeof(path));
    path[101] = '\0';
    snprintf(text, sizeof(text), "dispatch:\n- url: \"*/%s\"\n  service: a\n", path);
    capture_start();
    d = parse_ok(text);
    out = capture_stop();
    af_dispatch_free(d);
    assert_non_null(strstr(out, "dispatch.yaml:2:8: url: App Engine refuses a host or path "
                                "longer than 100 characters on deploy"));
    free(out);
}

static void test_rule_limit(void **state)
{
    size_t cap = (AF_DISPATCH_MAX_RULES + 1) * 40 + 64, off = 0;
    char *text = malloc(cap);
    assert_non_null(text);
    off += (size_t)snprintf(text, cap, "dispatch:\n");
    for (int i = 0; i <= AF_DISPATCH_MAX_RULES; i++)
        off += (size_t)snprintf(text + off, cap - off, "- {url: \"*/r%d\", service: a}\n", i);
    expect_error(text, "dispatch.yaml:2:1: dispatch: 1001 entries is more than the 1000 appfront "
                       "takes (App Engine takes 20)");
    free(text);
}

/* ---- loading ------------------------------------------------------------ */

static char tmpdir[64];

static int make_tmpdir(void **state)
{
    snprintf(tmpdir, sizeof(tmpdir), "/tmp/af-dispatch-XXXXXX");
    assert_non_null(mkdtemp(tmpdir));
    return 0;
}

static int remove_tmpdir(void **state)
{
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmpdir);
    return system(cmd) == 0 ? 0 : -1;
}

static void write_file(const char *path, const char *text, size_t len)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    assert_int_equal(fwrite(text, 1, len, f), len);
    fclose(f);
}

static void test_load(void **state)
{
    char path[256];
    struct af_dispatch *d = (struct af_dispatch *)1;
    /* No file: not an error. */
    assert_int_equal(af_dispatch_load_dir(tmpdir, &d, err, sizeof(err)), 0);
    assert_null(d);

    snprintf(path, sizeof(path), "%s/dispatch.yml", tmpdir);
    const char *yml = "dispatch:\n- url: \"*/yml\"\n  service: a\n";
    write_file(path, yml, strlen(yml));
    assert_int_equal(af_dispatch_load_dir(tmpdir, &d, err, sizeof(err)), 0);
    assert_non_null(d);
    assert_string_equal(d->rules[0].path, "/yml");
    assert_string_equal(d->path, path);
    af_dispatch_free(d);

    /* dispatch.yaml wins over dispatch.yml; messages name the file. */
    snprintf(path, sizeof(path), "%s/dispatch.yaml", tmpdir);
    const char *bad = "dispatch:\n- url: \"*/a\"\n  service: Bad\n";
    write_file(path, bad, strlen(bad));
    assert_int_equal(af_dispatch_load_dir(tmpdir, &d, err, sizeof(err)), -1);
    char want[512];
    snprintf(want, sizeof(want), "%s:3:12: service: 'Bad' is not a service name", path);
    assert_memory_equal(err, want, strlen(want));

    /* A directory named dispatch.yaml, a missing file, a huge file. */
    assert_int_equal(af_dispatch_load(tmpdir, &d, err, sizeof(err)), -1);
    snprintf(want, sizeof(want), "%s: not a regular file", tmpdir);
    assert_string_equal(err, want);
    snprintf(path, sizeof(path), "%s/none.yaml", tmpdir);
    assert_int_equal(af_dispatch_load(path, &d, err, sizeof(err)), -1);
    snprintf(want, sizeof(want), "%s: No such file or directory", path);
    assert_string_equal(err, want);
    snprintf(path, sizeof(path), "%s/big.yaml", tmpdir);
    size_t len = 2 * 1024 * 1024;
    char *big = malloc(len);
    assert_non_null(big);
    memset(big, '#', len);
    write_file(path, big, len);
    free(big);
    assert_int_equal(af_dispatch_load(path, &d, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "bytes is more than the 1048576 byte limit for dispatch.yaml"));
}

static void test_file_name(void **state)
{
    assert_true(af_dispatch_is_file_name("dispatch.yaml"));
    assert_true(af_dispatch_is_file_name("a/b/dispatch.yml"));
    assert_false(af_dispatch_is_file_name("a/dispatch.yaml/"));
    assert_false(af_dispatch_is_file_name("my-dispatch.yaml"));
    assert_false(af_dispatch_is_file_name("app.yaml"));
}

/* ---- matching ----------------------------------------------------------- */

static int match(const struct af_dispatch *d, const char *host, const char *target)
{
    return af_dispatch_match(d, host, host ? strlen(host) : 0, target);
}

static void test_match(void **state)
{
    struct af_dispatch *d = parse_ok("dispatch:\n"
                                     "- {url: \"*/favicon.ico\", service: default}\n" /* 0 */
                                     "- {url: \"*/api/*\", service: api}\n"           /* 1 */
                                     "- {url: \"*/api\", service: api}\n"             /* 2 */
                                     "- {url: \"admin.example.com/*\", service: admin}\n"
                                     "- {url: \"*.example.com/work/*\", service: work}\n"
                                     "- {url: \"*-dev.test/*\", service: dev}\n" /* 5 */
                                     "- {url: \"*/_ah/queue/deferred\", service: work}\n"
                                     "- {url: \"*/_ah/*\", service: work}\n" /* 7 */
                                     "- {url: \"*/\", service: root}\n");
    assert_int_equal(match(d, "localhost:8080", "/favicon.ico"), 0);
    assert_int_equal(match(d, "localhost:8080", "/favicon.ico?v=2"), 0);
    assert_int_equal(match(d, "localhost:8080", "/favicon.icon"), -1);
    assert_int_equal(match(d, "localhost:8080", "/favicon.ic"), -1);
    assert_int_equal(match(d, "localhost:8080", "/api/"), 1);
    assert_int_equal(match(d, "localhost:8080", "/api/v1/x?q=/y"), 1);
    assert_int_equal(match(d, "localhost:8080", "/api"), 2);
    assert_int_equal(match(d, "localhost:8080", "/api?x"), 2);
    assert_int_equal(match(d, "localhost:8080", "/apix"), -1);
    assert_int_equal(match(d, "localhost:8080", "/ap"), -1);
    /* The query is not part of the path. */
    assert_int_equal(match(d, "localhost", "/x?/api/"), -1);
    /* Hosts: exact, any case, with a port, IPv6 literal; suffixes. */
    assert_int_equal(match(d, "admin.example.com", "/anything"), 3);
    assert_int_equal(match(d, "ADMIN.Example.COM:8080", "/anything"), 3);
    assert_int_equal(match(d, "xadmin.example.com", "/anything"), -1);
    assert_int_equal(match(d, "admin.example.com", "/work/1"), 3); /* first match wins */
    assert_int_equal(match(d, "a.b.example.com", "/work/1"), 4);
    assert_int_equal(match(d, "example.com", "/work/1"), -1);
    assert_int_equal(match(d, "x-dev.test:1", "/"), 5);
    assert_int_equal(match(d, "-dev.test", "/"), 5);
    assert_int_equal(match(d, "dev.test", "/"), 8);
    assert_int_equal(match(d, "[::1]:8080", "/"), 8);
    assert_int_equal(match(d, "[::1]:8080", "/api"), 2);
    /* No Host (HTTP/1.0): only "*" hosts match. */
    assert_int_equal(match(d, NULL, "/api/x"), 1);
    assert_int_equal(match(d, "", "/api/x"), 1);
    /* /_ah/ is never dispatched, but for the deferred handler. */
    assert_int_equal(match(d, "localhost", "/_ah/login"), -1);
    assert_int_equal(match(d, "localhost", "/_ah/queue/x"), -1);
    assert_int_equal(match(d, "localhost", "/_ah/queue/deferred"), 6);
    assert_int_equal(match(d, "localhost", "/_ah/queue/deferred?x=1"), 6);
    assert_int_equal(match(d, "localhost", "/_ah"), -1);
    /* OPTIONS *. */
    assert_int_equal(match(d, "localhost", "*"), -1);
    af_dispatch_free(d);

    /* No rules: nothing matches. */
    d = parse_ok("dispatch: []\n");
    assert_int_equal(match(d, "localhost", "/"), -1);
    af_dispatch_free(d);

    /* Any host and any path: everything outside /_ah/. */
    d = parse_ok("dispatch:\n- {url: \"*/*\", service: all}\n");
    assert_int_equal(match(d, "anything:1", "/"), 0);
    assert_int_equal(match(d, NULL, "/deep/path"), 0);
    assert_int_equal(match(d, "localhost", "/_ah/warmup"), -1);
    af_dispatch_free(d);
}

int main(void)
{
    af_log_set_level(AF_LOG_INFO);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_realistic),
        cmocka_unit_test(test_empty_files),
        cmocka_unit_test(test_shape_errors),
        cmocka_unit_test(test_service_names),
        cmocka_unit_test(test_url_rules),
        cmocka_unit_test(test_yaml_errors),
        cmocka_unit_test(test_warnings),
        cmocka_unit_test(test_rule_limit),
        cmocka_unit_test_setup_teardown(test_load, make_tmpdir, remove_tmpdir),
        cmocka_unit_test(test_file_name),
        cmocka_unit_test(test_match),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
