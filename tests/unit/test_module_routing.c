/*
 * Routing to modules by name (docs/modules.md, docs/taskqueue.md): the
 * reading of "[VERSION.]MODULE.localhost" host names the front end and the
 * task runner share (af_dispatch_module_host), and a queue's target: in
 * queue.yaml (af_queue_target_is_valid, one-line errors at load).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "apiserver/services/taskqueue_yaml.h"
#include "common/log.h"
#include "proxy/dispatch.h"

/* The form of host, and the module label when there is one. */
static enum af_module_host host_form(const char *host, char *label, size_t label_size)
{
    const char *m = NULL;
    size_t n = 0;
    enum af_module_host f = af_dispatch_module_host(host, strlen(host), &m, &n);
    label[0] = '\0';
    if (f != AF_HOST_PLAIN) {
        assert_non_null(m);
        assert_true(m >= host && m + n <= host + strlen(host));
        assert_true(n < label_size);
        memcpy(label, m, n);
        label[n] = '\0';
    }
    return f;
}

static void test_module_hosts(void **unused)
{
    char l[64];
    /* Module names, with and without a port, in any case. */
    assert_int_equal(host_form("worker.localhost:8080", l, sizeof(l)), AF_HOST_MODULE);
    assert_string_equal(l, "worker");
    assert_int_equal(host_form("worker.localhost", l, sizeof(l)), AF_HOST_MODULE);
    assert_string_equal(l, "worker");
    assert_int_equal(host_form("Worker.LocalHost:1", l, sizeof(l)), AF_HOST_MODULE);
    assert_string_equal(l, "Worker");
    assert_int_equal(host_form("worker.localhost:", l, sizeof(l)), AF_HOST_MODULE);
    assert_string_equal(l, "worker");
    assert_int_equal(host_form("9.localhost:65535", l, sizeof(l)), AF_HOST_MODULE);
    assert_string_equal(l, "9");
    assert_int_equal(host_form("a.localhost", l, sizeof(l)), AF_HOST_MODULE);
    assert_string_equal(l, "a");
    /* What follows the first ':' is not looked at. */
    assert_int_equal(host_form("worker.localhost:80:x", l, sizeof(l)), AF_HOST_MODULE);
    assert_string_equal(l, "worker");
    /* A version (and an instance) before the module: the last label. */
    assert_int_equal(host_form("v1.worker.localhost:8080", l, sizeof(l)), AF_HOST_VERSIONED);
    assert_string_equal(l, "worker");
    assert_int_equal(host_form("0.v1.worker.localhost", l, sizeof(l)), AF_HOST_VERSIONED);
    assert_string_equal(l, "worker");

    /* Not a module's host name. */
    const char *plain[] = {
        "localhost",         "localhost:8080",      "127.0.0.1",        "127.0.0.1:8080",
        "[::1]:8080",        "[::1]",               "example.com",      "worker.example.com",
        ".localhost",        ".localhost:80",       "a..localhost",     ".a.localhost",
        "worker.localhostx", "worker.localhost.com", "workerlocalhost", "worker-localhost:80",
        "x.localhos",        "",                    "worker.local:8080", "worker.localhost8080",
        "1234567890.localhost1", "localhost:worker.localhost",
    };
    for (size_t i = 0; i < sizeof(plain) / sizeof(plain[0]); i++)
        if (host_form(plain[i], l, sizeof(l)) != AF_HOST_PLAIN)
            fail_msg("\"%s\" read as a module host", plain[i]);
    /* Only the bytes given are read: a value that is not NUL-terminated. */
    const char buf[] = "worker.localhost:8080XXXX";
    const char *m;
    size_t n;
    assert_int_equal(af_dispatch_module_host(buf, 16, &m, &n), AF_HOST_MODULE);
    assert_int_equal(n, 6);
    assert_int_equal(af_dispatch_module_host(buf, 15, &m, &n), AF_HOST_PLAIN);
}

static void test_target_names(void **unused)
{
    const char *good[] = {"worker", "default", "v1.worker", "a", "a-b.c-d", "9", "v2"};
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++)
        if (!af_queue_target_is_valid(good[i]))
            fail_msg("target \"%s\" refused", good[i]);
    const char *bad[] = {
        "",      "Worker", "-w",      "w-",     "a.b.c", ".w",   "w.",  "a..b",
        "w_1",   "w x",    "w:8080",  "w/x",    "v1.-w", "é",    "w\n",
        "0123456789012345678901234567890123456789012345678901234567890123",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        if (af_queue_target_is_valid(bad[i]))
            fail_msg("target \"%s\" accepted", bad[i]);
    /* 63 bytes is the most a name has. */
    assert_true(af_queue_target_is_valid(
        "012345678901234567890123456789012345678901234567890123456789012"));
}

static void yaml_error(const char *text, const char *want)
{
    struct af_queue_yaml *q = NULL;
    char err[512];
    assert_int_equal(af_queue_yaml_parse("queue.yaml", text, strlen(text), &q, err, sizeof(err)),
                     -1);
    assert_null(q);
    if (!strstr(err, want))
        fail_msg("error \"%s\" does not contain \"%s\"", err, want);
    assert_null(strchr(err, '\n'));
}

static void test_queue_yaml_target(void **unused)
{
    const char *text = "queue:\n"
                       "- name: a\n  rate: 1/s\n  target: worker\n"
                       "- name: b\n  rate: 1/s\n  target: v2.worker\n"
                       "- name: c\n  rate: 1/s\n  target: ''\n"
                       "- name: d\n  rate: 1/s\n";
    struct af_queue_yaml *q;
    char err[256];
    assert_int_equal(af_queue_yaml_parse("queue.yaml", text, strlen(text), &q, err, sizeof(err)),
                     0);
    assert_string_equal(af_queue_yaml_find(q, "a")->target, "worker");
    assert_string_equal(af_queue_yaml_find(q, "b")->target, "v2.worker");
    assert_null(af_queue_yaml_find(q, "c")->target);
    assert_null(af_queue_yaml_find(q, "d")->target);
    af_queue_yaml_free(q);

    yaml_error("queue:\n- name: a\n  rate: 1/s\n  target: Worker\n",
               "queue.yaml:4:11: target: 'Worker' is not MODULE or VERSION.MODULE");
    yaml_error("queue:\n- name: a\n  rate: 1/s\n  target: a.b.c\n", "queue.yaml:4:11: target");
    yaml_error("queue:\n- name: a\n  rate: 1/s\n  target: worker.localhost:8080\n",
               "queue.yaml:4:11: target");
    /* A value that spells out a newline stays on one line. */
    yaml_error("queue:\n- name: a\n  rate: 1/s\n  target: \"w\\nx\"\n", "target: 'w?x'");
    yaml_error("queue:\n- name: a\n  rate: 1/s\n  target: [worker]\n",
               "target: expected a single value");
}

int main(void)
{
    af_log_set_level(AF_LOG_INFO);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_module_hosts),
        cmocka_unit_test(test_target_names),
        cmocka_unit_test(test_queue_yaml_target),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
