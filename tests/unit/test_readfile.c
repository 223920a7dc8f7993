/* Unit tests for reading a configuration file with a bound (common/readfile.c). */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/readfile.h"

/* A temporary file holding n bytes of 'a' + i % 26, open for reading. */
static int file_of(size_t n)
{
    char path[] = "/tmp/af-readfile-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    unlink(path);
    for (size_t i = 0; i < n; i++) {
        char c = (char)('a' + i % 26);
        assert_int_equal(write(fd, &c, 1), 1);
    }
    assert_int_equal(lseek(fd, 0, SEEK_SET), 0);
    return fd;
}

static void test_whole_file_under_the_bound(void **state)
{
    int fd = file_of(10000);
    size_t len = 0;
    char *text = af_read_bounded(fd, 10000, &len);
    close(fd);
    assert_non_null(text);
    assert_int_equal(len, 10000);
    assert_int_equal(text[len], '\0');
    for (size_t i = 0; i < len; i++)
        assert_int_equal(text[i], 'a' + i % 26);
    free(text);
}

static void test_over_the_bound_stops_early(void **state)
{
    int fd = file_of(100000);
    size_t len = 0;
    char *text = af_read_bounded(fd, 5000, &len);
    close(fd);
    assert_non_null(text);
    assert_true(len > 5000);
    assert_true(len <= 10000);
    free(text);
}

static void test_read_error(void **state)
{
    size_t len = 0;
    errno = 0;
    assert_null(af_read_bounded(-1, 100, &len));
    assert_int_equal(errno, EBADF);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_whole_file_under_the_bound),
        cmocka_unit_test(test_over_the_bound_stops_early),
        cmocka_unit_test(test_read_error),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
