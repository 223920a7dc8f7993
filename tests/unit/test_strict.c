/* Unit tests for the RFC 9112 framing checks (proxy/strict.c). */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "proxy/strict.h"

/* Scans `text` as a head, one byte at a time when `bytewise` (the state
 * must carry across calls), returning the bytes accepted or -1. */
static ssize_t scan_head(const char *text, int bytewise, const char **why)
{
    struct af_strict s;
    af_strict_head(&s);
    size_t n = strlen(text);
    if (!bytewise)
        return af_strict_scan(&s, text, n, why);
    ssize_t total = 0;
    for (size_t i = 0; i < n && s.mode != AF_STRICT_OFF; i++) {
        ssize_t r = af_strict_scan(&s, text + i, 1, why);
        if (r < 0)
            return -1;
        total += r;
    }
    return total;
}

static ssize_t scan_chunked(const char *text, size_t n, const char **why, struct af_strict *s)
{
    af_strict_chunked(s);
    return af_strict_scan(s, text, n, why);
}

static void test_good_heads_end_at_the_empty_line(void **state)
{
    static const char *heads[] = {
        "GET / HTTP/1.1\r\nHost: a\r\n\r\n",
        "\r\nGET / HTTP/1.1\r\nHost: a\r\nX-Empty:\r\nX-Tab: a\tb\r\n\r\n",
        "POST /x?y=1 HTTP/1.0\r\nContent-Length: 3\r\nX-Obs: caf\xc3\xa9\r\n\r\n",
    };
    for (int bytewise = 0; bytewise < 2; bytewise++) {
        for (size_t i = 0; i < sizeof(heads) / sizeof(heads[0]); i++) {
            const char *why = NULL;
            char buf[256];
            snprintf(buf, sizeof(buf), "%sBODY", heads[i]);
            ssize_t r = scan_head(buf, bytewise, &why);
            assert_int_equal(r, (ssize_t)strlen(heads[i]));
        }
    }
}

static void test_bad_heads_are_refused(void **state)
{
    static const char *bad[] = {
        "GET / HTTP/1.1\nHost: a\r\n\r\n",                     /* bare LF, request line */
        "GET / HTTP/1.1\r\nHost: a\n\r\n",                     /* bare LF, field */
        "GET / HTTP/1.1\r\nHost: a\r\r\n\r\n",                 /* bare CR in a value */
        "GET / HTTP/1.1\r\nHost: a\r\n\r\r\n",                 /* bare CR ends the head */
        "GET / HTTP/1.1\r\nTransfer-Encoding : chunked\r\n\r\n", /* space before colon */
        "GET / HTTP/1.1\r\n Host: a\r\n\r\n",                  /* folding / leading space */
        "GET / HTTP/1.1\r\nHost: a\r\n continued\r\n\r\n",     /* obs-fold */
        "GET / HTTP/1.1\r\nX: a\x01b\r\n\r\n",                 /* control character */
        "GET / HTTP/1.1\r\nX: a\x7f\r\n\r\n",                  /* DEL */
        "GET /\x01 HTTP/1.1\r\n\r\n",                          /* control in the target */
        "GET / HTTP/1.1\r\n: empty-name\r\n\r\n",              /* empty field name */
        "GET / HTTP/1.1\r\nX(y): 1\r\n\r\n",                   /* not a tchar */
    };
    for (int bytewise = 0; bytewise < 2; bytewise++) {
        for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
            const char *why = NULL;
            if (scan_head(bad[i], bytewise, &why) != -1)
                fail_msg("accepted bad head #%zu (bytewise=%d)", i, bytewise);
            assert_non_null(why);
        }
    }
    /* NUL inside a value (strlen would stop at it). */
    static const char nul[] = "GET / HTTP/1.1\r\nX: a\0b\r\n\r\n";
    struct af_strict s;
    const char *why = NULL;
    af_strict_head(&s);
    assert_int_equal(af_strict_scan(&s, nul, sizeof(nul) - 1, &why), -1);
}

static void test_chunked_bodies(void **state)
{
    struct af_strict s;
    const char *why = NULL;
    static const char good[] = "5\r\nhello\r\n3;ext=1\r\nabc\r\nA \r\n0123456789\r\n0\r\n"
                               "Trailer-Field: x\r\n\r\nGET /next";
    ssize_t r = scan_chunked(good, sizeof(good) - 1, &why, &s);
    assert_int_equal(r, (ssize_t)(sizeof(good) - 1 - strlen("GET /next")));
    assert_int_equal(s.mode, AF_STRICT_OFF);

    /* Byte by byte, the data count carries over. */
    af_strict_chunked(&s);
    ssize_t total = 0;
    for (size_t i = 0; i < sizeof(good) - 1 && s.mode != AF_STRICT_OFF; i++)
        total += af_strict_scan(&s, good + i, 1, &why);
    assert_int_equal(total, r);

    static const char *bad[] = {
        "5\r\nhelloXX0\r\n\r\n",          /* data not followed by CRLF */
        "5;a\nhello\r\n0\r\n\r\n",        /* bare LF after an extension */
        "5\nhello\r\n0\r\n\r\n",          /* bare LF after a size */
        "-5\r\nhello\r\n0\r\n\r\n",       /* negative size */
        "\r\n",                            /* no size */
        "fffffffffffffffff\r\n",          /* overflowing size */
        "0x5\r\nhello\r\n0\r\n\r\n",      /* not hex */
        "0\r\nBad Trailer: x\r\n\r\n",    /* space in a trailer name */
        "0\r\n\r\r\n",                    /* bare CR at the end */
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        why = NULL;
        if (scan_chunked(bad[i], strlen(bad[i]), &why, &s) != -1)
            fail_msg("accepted bad chunked body #%zu", i);
        assert_non_null(why);
    }
}

static void test_off_passes_everything(void **state)
{
    struct af_strict s = {.mode = AF_STRICT_OFF};
    const char *why = NULL;
    assert_int_equal(af_strict_scan(&s, "\n\r\x01", 3, &why), 0);
}

/* Every byte value at every position of a field value, across the
 * eight-byte words the value scan takes at once, whole and byte by byte. */
static void test_value_bytes_at_every_offset(void **state)
{
    for (int c = 0; c < 256; c++) {
        bool ok = c == '\t' || (c >= 0x20 && c != 0x7f);
        for (int off = 0; off < 20; off++) {
            char head[128];
            char value[24];
            memset(value, 'v', sizeof(value) - 1);
            value[sizeof(value) - 1] = '\0';
            int len = snprintf(head, sizeof(head), "GET / HTTP/1.1\r\nHost: a\r\nX-V: %s\r\n\r\n", value);
            /* The value starts after "X-V: "; put the byte there. */
            char *v = strstr(head, "X-V: ") + 5;
            v[off] = (char)c;
            if (c == '\r' && off < 22)
                continue; /* a CR there is a line end, checked elsewhere */
            for (int bytewise = 0; bytewise < 2; bytewise++) {
                struct af_strict s;
                af_strict_head(&s);
                const char *why = NULL;
                ssize_t r;
                if (!bytewise) {
                    r = af_strict_scan(&s, head, (size_t)len, &why);
                } else {
                    r = 0;
                    for (int i = 0; i < len && s.mode != AF_STRICT_OFF; i++) {
                        ssize_t k = af_strict_scan(&s, head + i, 1, &why);
                        if (k < 0) {
                            r = -1;
                            break;
                        }
                        r += k;
                    }
                }
                if (ok && r != len)
                    fail_msg("byte 0x%02x at %d refused (bytewise %d): %s", c, off, bytewise,
                             why ? why : "");
                if (!ok && r != -1)
                    fail_msg("byte 0x%02x at %d accepted (bytewise %d)", c, off, bytewise);
            }
        }
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_good_heads_end_at_the_empty_line),
        cmocka_unit_test(test_bad_heads_are_refused),
        cmocka_unit_test(test_chunked_bodies),
        cmocka_unit_test(test_off_passes_everything),
        cmocka_unit_test(test_value_bytes_at_every_offset),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
