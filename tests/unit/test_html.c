/* Unit tests for the admin console's text pieces: HTML escaping, query
 * encoding and form values (proxy/html.c), UTF-8 checks and cuts
 * (common/utf8.c), URL-safe base64 (common/b64url.c). */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>

#include "common/b64url.h"
#include "common/utf8.h"
#include "proxy/html.h"

/* What f wrote for (s, n), as a string the caller frees. */
static char *written(void (*f)(struct evbuffer *, const char *, size_t), const char *s, size_t n)
{
    struct evbuffer *b = evbuffer_new();
    f(b, s, n);
    size_t len = evbuffer_get_length(b);
    char *out = malloc(len + 1);
    evbuffer_remove(b, out, len);
    out[len] = '\0';
    evbuffer_free(b);
    return out;
}

static void check_escape(const char *in, const char *want)
{
    char *got = written(af_html_escape, in, strlen(in));
    assert_string_equal(got, want);
    free(got);
}

static void test_escape_the_five_characters(void **state)
{
    check_escape("<script>alert(1)</script>", "&lt;script&gt;alert(1)&lt;/script&gt;");
    check_escape("a\"b'c&d", "a&quot;b&#39;c&amp;d");
    check_escape("\"><img src=x>", "&quot;&gt;&lt;img src=x&gt;");
    /* Already escaped text is escaped again: it is data, not markup. */
    check_escape("&amp;", "&amp;amp;");
    check_escape("", "");
    check_escape("plain text, é ü", "plain text, é ü");
    check_escape("<<>>", "&lt;&lt;&gt;&gt;");
}

static void test_escape_takes_a_length(void **state)
{
    /* n bytes exactly: the cut falls before the '<'. */
    char *got = written(af_html_escape, "ab<cd", 2);
    assert_string_equal(got, "ab");
    free(got);
    struct evbuffer *b = evbuffer_new();
    af_html_text(b, NULL);
    assert_int_equal(evbuffer_get_length(b), 0);
    af_html_text(b, "'");
    assert_int_equal(evbuffer_get_length(b), 5);
    evbuffer_free(b);
}

static void check_query(const char *in, size_t n, const char *want)
{
    char *got = written(af_html_query, in, n);
    assert_string_equal(got, want);
    free(got);
}

static void test_query_encoding(void **state)
{
    check_query("abc-._~XYZ09", 12, "abc-._~XYZ09");
    check_query("a b&c=d", 7, "a%20b%26c%3Dd");
    check_query("\"<'>", 4, "%22%3C%27%3E");
    check_query("a\0b", 3, "a%00b");
    check_query("\xc3\xa9", 2, "%C3%A9");
}

static void test_form_values(void **state)
{
    char *v;
    size_t n;
    assert_int_equal(af_form_value("a=1&key=x%20y+z&b=2", "key", &v, &n), 1);
    assert_string_equal(v, "x y z");
    assert_int_equal(n, 5);
    free(v);
    /* The first of two wins; a longer name is another parameter. */
    assert_int_equal(af_form_value("keyx=1&key=first&key=second", "key", &v, NULL), 1);
    assert_string_equal(v, "first");
    free(v);
    assert_int_equal(af_form_value("key", "key", &v, &n), 1);
    assert_string_equal(v, "");
    free(v);
    assert_int_equal(af_form_value("key=&x=1", "key", &v, &n), 1);
    assert_int_equal(n, 0);
    free(v);
    /* A NUL byte is counted in the length. */
    assert_int_equal(af_form_value("key=a%00b", "key", &v, &n), 1);
    assert_int_equal(n, 3);
    assert_memory_equal(v, "a\0b", 3);
    free(v);
    assert_int_equal(af_form_value("a=1&b=2", "key", &v, NULL), 0);
    assert_null(v);
    assert_int_equal(af_form_value(NULL, "key", &v, NULL), 0);
    assert_int_equal(af_form_value("", "key", &v, NULL), 0);
    assert_int_equal(af_form_value("&&key=1&", "key", &v, NULL), 1);
    assert_string_equal(v, "1");
    free(v);
}

static void test_form_bad_escapes(void **state)
{
    char *v;
    assert_int_equal(af_form_value("key=%zz", "key", &v, NULL), -1);
    assert_null(v);
    assert_int_equal(af_form_value("key=ab%", "key", &v, NULL), -1);
    assert_int_equal(af_form_value("key=ab%4", "key", &v, NULL), -1);
    assert_int_equal(af_form_value("key=%4&x=1", "key", &v, NULL), -1);
    /* A bad escape elsewhere is not this parameter's problem. */
    assert_int_equal(af_form_value("x=%zz&key=ok", "key", &v, NULL), 1);
    assert_string_equal(v, "ok");
    free(v);
}

static void test_utf8(void **state)
{
    assert_true(af_utf8_valid("", 0));
    assert_true(af_utf8_valid("plain", 5));
    assert_true(af_utf8_valid("\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80", 9));
    assert_false(af_utf8_valid("\xff", 1));
    assert_false(af_utf8_valid("\xc3", 1));             /* cut short */
    assert_false(af_utf8_valid("\xc0\xaf", 2));         /* overlong '/' */
    assert_false(af_utf8_valid("\xed\xa0\x80", 3));     /* a surrogate */
    assert_false(af_utf8_valid("\xf4\x90\x80\x80", 4)); /* past U+10FFFF */
    assert_false(af_utf8_valid("a\x80", 2));
    /* Cuts: never inside a character. */
    assert_int_equal(af_utf8_prefix("abcdef", 6, 10), 6);
    assert_int_equal(af_utf8_prefix("abcdef", 6, 3), 3);
    assert_int_equal(af_utf8_prefix("a\xc3\xa9z", 4, 2), 1);
    assert_int_equal(af_utf8_prefix("a\xc3\xa9z", 4, 3), 3);
    assert_int_equal(af_utf8_prefix("\xf0\x9f\x98\x80x", 5, 3), 0);
    assert_int_equal(af_utf8_prefix("\xf0\x9f\x98\x80x", 5, 4), 4);
}

static void check_b64(const char *raw, size_t n, const char *want)
{
    char *enc = af_b64url_encode((const uint8_t *)raw, n);
    assert_string_equal(enc, want);
    uint8_t *dec;
    size_t m;
    assert_int_equal(af_b64url_decode(enc, &dec, &m), 0);
    assert_int_equal(m, n);
    assert_memory_equal(dec, raw, n);
    free(dec);
    free(enc);
}

static void test_b64url(void **state)
{
    /* RFC 4648, section 10, without padding, and the two URL-safe
     * characters. */
    check_b64("", 0, "");
    check_b64("f", 1, "Zg");
    check_b64("fo", 2, "Zm8");
    check_b64("foo", 3, "Zm9v");
    check_b64("foobar", 6, "Zm9vYmFy");
    check_b64("\xfb\xff", 2, "-_8");
    uint8_t *dec;
    size_t m;
    assert_int_equal(af_b64url_decode("Zg==", &dec, &m), 0); /* padding accepted */
    assert_int_equal(m, 1);
    free(dec);
    assert_int_equal(af_b64url_decode("Zm9v+", &dec, &m), -1); /* not URL-safe */
    assert_int_equal(af_b64url_decode("Zm/v", &dec, &m), -1);
    assert_int_equal(af_b64url_decode("Z", &dec, &m), -1); /* no length 1 */
    assert_int_equal(af_b64url_decode("Zm9v!", &dec, &m), -1);
    assert_int_equal(af_b64url_decode("<script>", &dec, &m), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_escape_the_five_characters),
        cmocka_unit_test(test_escape_takes_a_length),
        cmocka_unit_test(test_query_encoding),
        cmocka_unit_test(test_form_values),
        cmocka_unit_test(test_form_bad_escapes),
        cmocka_unit_test(test_utf8),
        cmocka_unit_test(test_b64url),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
