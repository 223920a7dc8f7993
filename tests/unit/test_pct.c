/* Unit tests for common/pct.c: hex digits and the decoder's three policies. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "common/pct.h"

static void test_hex_digit(void **state)
{
    for (int c = 0; c < 256; c++) {
        int want = -1;
        if (c >= '0' && c <= '9')
            want = c - '0';
        else if (c >= 'a' && c <= 'f')
            want = c - 'a' + 10;
        else if (c >= 'A' && c <= 'F')
            want = c - 'A' + 10;
        assert_int_equal(af_hex_digit(c), want);
    }
}

/* Decodes s with flags; returns the length (or -1) and leaves the bytes in out. */
static ssize_t dec(const char *s, unsigned flags, char *out)
{
    memset(out, '#', 64);
    return af_pct_decode(s, strlen(s), out, flags);
}

static void test_decode(void **state)
{
    char out[64];
    assert_int_equal(dec("/a%20b%2Fc+d", 0, out), 8);
    assert_memory_equal(out, "/a b/c+d", 8);
    assert_int_equal(dec("a+b%2b", AF_PCT_PLUS_SPACE, out), 4);
    assert_memory_equal(out, "a b+", 4);
    assert_int_equal(dec("%e2%82%AC", 0, out), 3); /* either case */
    assert_memory_equal(out, "\xe2\x82\xac", 3);
    assert_int_equal(dec("", 0, out), 0);
    assert_int_equal(out[0], '#'); /* nothing written, no terminator */
}

static void test_bad_escapes(void **state)
{
    char out[64];
    const char *bad[] = {"%", "a%", "a%2", "%zz", "%2z", "%z2", "%%41", "% 41"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        assert_int_equal(dec(bad[i], 0, out), -1);
        assert_int_equal(dec(bad[i], AF_PCT_PLUS_SPACE | AF_PCT_NO_NUL, out), -1);
        /* Kept as they are. */
        size_t n = strlen(bad[i]);
        ssize_t got = dec(bad[i], AF_PCT_KEEP_BAD, out);
        if (strcmp(bad[i], "%%41") == 0) {
            assert_int_equal(got, 2); /* the second '%' starts a good escape */
            assert_memory_equal(out, "%A", 2);
        } else {
            assert_int_equal(got, (ssize_t)n);
            assert_memory_equal(out, bad[i], n);
        }
    }
}

static void test_nul(void **state)
{
    char out[64];
    assert_int_equal(dec("a%00b", 0, out), 3);
    assert_memory_equal(out, "a\0b", 3);
    assert_int_equal(dec("a%00b", AF_PCT_NO_NUL, out), -1);
    assert_int_equal(af_pct_decode("a\0b", 3, out, AF_PCT_NO_NUL), -1);
    assert_int_equal(af_pct_decode("a\0b", 3, out, 0), 3);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hex_digit),
        cmocka_unit_test(test_decode),
        cmocka_unit_test(test_bad_escapes),
        cmocka_unit_test(test_nul),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
