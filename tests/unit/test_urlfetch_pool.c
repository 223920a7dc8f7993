/*
 * Unit tests of urlfetch's connection reuse decisions (apiserver/services/
 * urlfetch_pool.c): the key that says which fetches may share a connection,
 * and whether a response leaves its connection fit for another request.
 * The pool itself (parking, taking, bounds, idle timeout, stale retry) is
 * tested end to end (tests/e2e/test_urlfetch_pool.py).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "apiserver/services/urlfetch_pool.c"

/* The key of url fetched through proxy (NULL: direct) with validate. */
static char *key(const char *url, const struct uf_proxy *proxy, bool validate)
{
    struct uf_url u;
    char err[256];
    if (uf_url_parse(url, &u, err, sizeof(err)) != 0)
        fail_msg("%s: %s", url, err);
    char *k = uf_pool_key(&u, proxy, validate);
    uf_url_release(&u);
    return k;
}

static void assert_same_key(const char *a, bool va, const char *b, bool vb)
{
    char *ka = key(a, NULL, va), *kb = key(b, NULL, vb);
    if (strcmp(ka, kb) != 0)
        fail_msg("%s and %s should share: %s vs %s", a, b, ka, kb);
    free(ka);
    free(kb);
}

static void assert_other_key(const char *a, bool va, const char *b, bool vb)
{
    char *ka = key(a, NULL, va), *kb = key(b, NULL, vb);
    if (strcmp(ka, kb) == 0)
        fail_msg("%s and %s must not share: %s", a, b, ka);
    free(ka);
    free(kb);
}

static void test_key_same_origin(void **state)
{
    char *k = key("https://Example.COM/a?b", NULL, true);
    assert_string_equal(k, "https://example.com:443 via - verified");
    free(k);
    k = key("http://[::1]:8080/", NULL, true);
    assert_string_equal(k, "http://[::1]:8080 via -");
    free(k);
    /* Path, query, case of the name and an explicit default port do not
     * matter. */
    assert_same_key("http://example.com/a", true, "http://EXAMPLE.com:80/b?c", true);
    assert_same_key("https://example.com/", true, "https://example.com:443/x", true);
    /* Certificate checking means nothing for http. */
    assert_same_key("http://example.com/", true, "http://example.com/", false);
}

static void test_key_different_origins(void **state)
{
    assert_other_key("http://example.com/", true, "https://example.com/", true);
    assert_other_key("http://example.com:80/", true, "http://example.com:81/", true);
    assert_other_key("http://example.com/", true, "http://example.org/", true);
    assert_other_key("http://127.0.0.1/", true, "http://localhost/", true);
    assert_other_key("http://a.example.com/", true, "http://example.com/", true);
    /* A connection whose certificate was checked (or not) serves only
     * fetches that want the same. */
    assert_other_key("https://example.com/", true, "https://example.com/", false);
}

static void test_key_proxy(void **state)
{
    struct uf_proxy p1 = {
        .var = "http_proxy", .host = "proxy", .port = 3128, .authority = "proxy:3128"};
    struct uf_proxy p2 = {
        .var = "http_proxy", .host = "proxy", .port = 3129, .authority = "proxy:3129"};
    char *direct = key("http://example.com/", NULL, true);
    char *via1 = key("http://example.com/", &p1, true);
    char *via1b = key("http://example.com/other", &p1, true);
    char *via2 = key("http://example.com/", &p2, true);
    assert_string_equal(via1, "http://example.com:80 via proxy:3128");
    assert_string_not_equal(direct, via1);
    assert_string_not_equal(via1, via2);
    assert_string_equal(via1, via1b);
    free(direct);
    free(via1);
    free(via1b);
    free(via2);
}

/* A response that leaves its connection reusable, to vary. */
static struct uf_reuse good(const struct uf_header *h, size_t n)
{
    return (struct uf_reuse){.http_major = 1,
                             .http_minor = 1,
                             .status = 200,
                             .headers = h,
                             .n_headers = n,
                             .framed = true};
}

static void test_reusable_http11(void **state)
{
    struct uf_header none[] = {{"Content-Length", "2"}};
    struct uf_reuse r = good(none, 1);
    assert_true(uf_pool_reusable(&r));
    struct uf_header ka[] = {{"Connection", "keep-alive"}};
    r = good(ka, 1);
    assert_true(uf_pool_reusable(&r));
    /* close, in any case, alone or in a list, in any of several fields. */
    const char *closes[] = {"close", "Close", "keep-alive, close", " CLOSE ", "x,close,y"};
    for (size_t i = 0; i < sizeof(closes) / sizeof(closes[0]); i++) {
        struct uf_header h[] = {{"Content-Length", "2"}, {"connection", (char *)closes[i]}};
        r = good(h, 2);
        if (uf_pool_reusable(&r))
            fail_msg("Connection: %s was reused", closes[i]);
    }
    struct uf_header two[] = {{"Connection", "keep-alive"}, {"Connection", "close"}};
    r = good(two, 2);
    assert_false(uf_pool_reusable(&r));
    /* Not a token "close": "closed", "close-ish". */
    struct uf_header notclose[] = {{"Connection", "closed, close-ish"}};
    r = good(notclose, 1);
    assert_true(uf_pool_reusable(&r));
    /* Other fields that say close do not count. */
    struct uf_header other[] = {{"Proxy-Connection", "close"}, {"X-Connection", "close"}};
    r = good(other, 2);
    assert_true(uf_pool_reusable(&r));
}

static void test_reusable_http10(void **state)
{
    struct uf_reuse r = good(NULL, 0);
    r.http_minor = 0;
    assert_false(uf_pool_reusable(&r));
    struct uf_header ka[] = {{"Connection", "Keep-Alive"}};
    r = good(ka, 1);
    r.http_minor = 0;
    assert_true(uf_pool_reusable(&r));
    struct uf_header both[] = {{"Connection", "keep-alive, close"}};
    r = good(both, 1);
    r.http_minor = 0;
    assert_false(uf_pool_reusable(&r));
    /* Only HTTP/1.x is spoken here. */
    r = good(ka, 1);
    r.http_major = 0;
    r.http_minor = 9;
    assert_false(uf_pool_reusable(&r));
}

static void test_reusable_framing(void **state)
{
    struct uf_reuse r = good(NULL, 0);
    r.framed = false; /* read to the close */
    assert_false(uf_pool_reusable(&r));
    r = good(NULL, 0);
    r.cut = true; /* over 32 MiB, the rest unread */
    assert_false(uf_pool_reusable(&r));
    r = good(NULL, 0);
    r.leftover = true;
    assert_false(uf_pool_reusable(&r));
    r = good(NULL, 0);
    r.unsent = true; /* answered before the body was all sent */
    assert_false(uf_pool_reusable(&r));
    r = good(NULL, 0);
    r.status = 101;
    assert_false(uf_pool_reusable(&r));
    /* Any other status, redirects and errors included, leaves it usable. */
    const int statuses[] = {204, 302, 304, 404, 500};
    for (size_t i = 0; i < sizeof(statuses) / sizeof(statuses[0]); i++) {
        r = good(NULL, 0);
        r.status = statuses[i];
        assert_true(uf_pool_reusable(&r));
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_key_same_origin), cmocka_unit_test(test_key_different_origins),
        cmocka_unit_test(test_key_proxy),       cmocka_unit_test(test_reusable_http11),
        cmocka_unit_test(test_reusable_http10), cmocka_unit_test(test_reusable_framing),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
