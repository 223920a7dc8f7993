/* Unit tests for the batched log lines of common/log.c: stderr is a real
 * temporary file here. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/log.h"

static int saved_err = -1;
static FILE *capture;

static int setup(void **state)
{
    capture = tmpfile();
    saved_err = dup(STDERR_FILENO);
    dup2(fileno(capture), STDERR_FILENO);
    af_log_set_level(AF_LOG_INFO);
    return 0;
}

static int teardown(void **state)
{
    af_log_flush();
    dup2(saved_err, STDERR_FILENO);
    close(saved_err);
    fclose(capture);
    return 0;
}

/* Everything written to stderr so far. */
static char *captured(void)
{
    static char buf[262144];
    ssize_t n = pread(fileno(capture), buf, sizeof(buf) - 1, 0);
    buf[n < 0 ? 0 : n] = '\0';
    return buf;
}

static void batched(const char *msg)
{
    char *p = af_log_begin(AF_LOG_INFO, strlen(msg));
    assert_non_null(p);
    memcpy(p, msg, strlen(msg));
    af_log_commit(p + strlen(msg));
}

static void test_batch_waits_and_keeps_order(void **state)
{
    batched("first request");
    batched("second request");
    assert_string_equal(captured(), ""); /* not written yet */
    af_log(AF_LOG_WARNING, "a warning %d", 3);
    const char *out = captured();
    const char *a = strstr(out, "first request\n");
    const char *b = strstr(out, "second request\n");
    const char *w = strstr(out, "a warning 3\n");
    assert_non_null(a);
    assert_non_null(b);
    assert_non_null(w);
    assert_true(a < b && b < w);
    /* The prefix of a batched line is the same as af_log's. */
    assert_memory_equal(out, "INFO     ", 9);
    assert_int_equal(a - out, 22);
    assert_true(out[11] == ':' && out[14] == ':' && out[17] == '.');
    assert_memory_equal(w - 22, "WARNING  ", 9);
}

static void test_flush_and_limits(void **state)
{
    size_t before = strlen(captured());
    batched("third");
    af_log_flush();
    assert_non_null(strstr(captured() + before, "third\n"));
    /* A level that is off, or a message longer than a batch: NULL. */
    af_log_set_level(AF_LOG_WARNING);
    assert_null(af_log_begin(AF_LOG_INFO, 10));
    af_log_set_level(AF_LOG_INFO);
    assert_null(af_log_begin(AF_LOG_INFO, 1 << 20));
    /* Many lines: a full batch is written on its own, none is lost. */
    for (int i = 0; i < 2000; i++)
        batched("0123456789012345678901234567890123456789");
    af_log_flush();
    const char *out = captured();
    int n = 0;
    for (const char *p = out; (p = strstr(p, "0123456789012345678901234567890123456789\n")); p++)
        n++;
    assert_int_equal(n, 2000);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_batch_waits_and_keeps_order),
        cmocka_unit_test(test_flush_and_limits),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
