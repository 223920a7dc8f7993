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
#include <sys/stat.h>
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

static void write_file(const char *path, size_t n)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    for (size_t i = 0; i < n; i++)
        fputc('a', f);
    fclose(f);
}

static void test_config_in_dir(void **state)
{
    static const char *const names[] = {"x.yaml", "x.yml"};
    char dir[] = "/tmp/af-rf-XXXXXX", p[128], err[256];
    assert_non_null(mkdtemp(dir));
    char *path = (char *)1, *text = (char *)1;
    size_t len = 0;
    assert_int_equal(af_read_config_in(dir, names, 2, 1 << 20, &path, &text, &len, err,
                                       sizeof(err)),
                     0);
    assert_null(path);
    assert_null(text);

    /* The second name when the first is absent; the first when both are. */
    snprintf(p, sizeof(p), "%s/x.yml", dir);
    write_file(p, 3);
    assert_int_equal(af_read_config_in(dir, names, 2, 1 << 20, &path, &text, &len, err,
                                       sizeof(err)),
                     1);
    assert_string_equal(path, p);
    assert_string_equal(text, "aaa");
    assert_int_equal(len, 3);
    free(path);
    free(text);
    snprintf(p, sizeof(p), "%s/x.yaml", dir);
    write_file(p, (1 << 20) + 1);
    assert_int_equal(af_read_config_in(dir, names, 2, 1 << 20, &path, &text, &len, err,
                                       sizeof(err)),
                     -1);
    char want[256];
    snprintf(want, sizeof(want), "%s: larger than 1 MiB; is this really x.yaml?", p);
    assert_string_equal(err, want);
    unlink(p);

    /* A directory by that name is not a file. */
    assert_int_equal(mkdir(p, 0700), 0);
    assert_int_equal(af_read_config_in(dir, names, 2, 1 << 20, &path, &text, &len, err,
                                       sizeof(err)),
                     -1);
    assert_non_null(strstr(err, p));
    rmdir(p);
    snprintf(p, sizeof(p), "%s/x.yml", dir);
    unlink(p);
    rmdir(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_whole_file_under_the_bound),
        cmocka_unit_test(test_over_the_bound_stops_early),
        cmocka_unit_test(test_read_error),
        cmocka_unit_test(test_config_in_dir),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
