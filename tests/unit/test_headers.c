/* Unit tests for the header list and the forwarding policy (proxy/headers.c). */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include <event2/buffer.h>

#include "proxy/headers.h"

static void add(struct af_headers *h, const char *n, const char *v)
{
    af_headers_add(h, n, strlen(n), v, strlen(v));
}

/* The wire form of what is left after the policy. */
static char *written(const struct af_headers *h)
{
    struct evbuffer *b = evbuffer_new();
    af_headers_write(h, b);
    size_t len = evbuffer_get_length(b);
    char *s = test_malloc(len + 1);
    evbuffer_remove(b, s, len);
    s[len] = '\0';
    evbuffer_free(b);
    return s;
}

static void test_hop_by_hop_and_connection_named(void **state)
{
    struct af_headers h;
    af_headers_init(&h);
    add(&h, "Host", "a");
    add(&h, "Connection", "keep-alive, X-Secret-Hop");
    add(&h, "x-secret-hop", "1");
    add(&h, "Keep-Alive", "timeout=5");
    add(&h, "TE", "trailers");
    add(&h, "Transfer-Encoding", "chunked");
    add(&h, "Content-Length", "3");
    add(&h, "Upgrade", "websocket");
    add(&h, "Proxy-Connection", "keep-alive");
    add(&h, "Proxy-Authorization", "Basic x");
    add(&h, "Trailer", "X");
    add(&h, "Accept", "*/*");
    af_headers_drop_hop_by_hop(&h);
    char *s = written(&h);
    assert_string_equal(s, "Host: a\r\nAccept: */*\r\n");
    test_free(s);
    af_headers_release(&h);
}

/* Connection cannot take Host away: the instance would get none. */
static void test_connection_cannot_name_host(void **state)
{
    struct af_headers h;
    af_headers_init(&h);
    add(&h, "Host", "a");
    add(&h, "Connection", "close, host, X-F");
    add(&h, "X-F", "1");
    af_headers_drop_hop_by_hop(&h);
    char *s = written(&h);
    assert_string_equal(s, "Host: a\r\n");
    test_free(s);
    af_headers_release(&h);
}

static void test_appengine_headers_dropped_case_insensitively(void **state)
{
    struct af_headers h;
    af_headers_init(&h);
    add(&h, "X-AppEngine-User-Email", "evil@example.com");
    add(&h, "x-appengine-user-is-admin", "1");
    add(&h, "X-APPENGINE-COUNTRY", "US");
    add(&h, "X-AppEngineX", "kept: not the prefix with its dash");
    add(&h, "Cookie", "a=b");
    af_headers_drop_appengine(&h);
    assert_null(af_headers_find(&h, "X-AppEngine-User-Email"));
    assert_null(af_headers_find(&h, "X-AppEngine-Country"));
    assert_non_null(af_headers_find(&h, "X-AppEngineX"));
    assert_int_equal(af_headers_count(&h, "cookie"), 1);
    af_headers_release(&h);
}

static void test_tokens(void **state)
{
    assert_true(af_header_has_token("keep-alive, Upgrade", "upgrade"));
    assert_true(af_header_has_token("  close ", "close"));
    assert_false(af_header_has_token("closed", "close"));
    assert_false(af_header_has_token("", "close"));
    assert_true(af_header_has_token(",,close,,", "close"));
}

static void test_value_safety(void **state)
{
    assert_true(af_header_value_is_safe("abc def", 7));
    assert_false(af_header_value_is_safe("a\r\nX-Injected: 1", 16));
    assert_false(af_header_value_is_safe("a\nb", 3));
    assert_false(af_header_value_is_safe("a\0b", 3));
}

static void test_find_skips_dropped_and_count(void **state)
{
    struct af_headers h;
    af_headers_init(&h);
    add(&h, "Content-Length", "1");
    add(&h, "content-length", "2");
    assert_int_equal(af_headers_count(&h, "Content-Length"), 2);
    af_headers_drop(&h, "CONTENT-LENGTH");
    assert_int_equal(af_headers_count(&h, "Content-Length"), 0);
    assert_null(af_headers_find(&h, "Content-Length"));
    /* Many fields force the array to grow. */
    for (int i = 0; i < 100; i++)
        add(&h, "X-N", "v");
    assert_int_equal(af_headers_count(&h, "x-n"), 100);
    af_headers_release(&h);
}

static void test_fields_are_recognized_in_any_case(void **state)
{
    static const struct {
        const char *name;
        enum af_header_id id;
    } cases[] = {
        {"te", AF_H_TE},
        {"HOST", AF_H_HOST},
        {"cookie", AF_H_COOKIE},
        {"Expect", AF_H_EXPECT},
        {"trailer", AF_H_TRAILER},
        {"upgrade", AF_H_UPGRADE},
        {"keep-alive", AF_H_KEEP_ALIVE},
        {"CONNECTION", AF_H_CONNECTION},
        {"content-length", AF_H_CONTENT_LENGTH},
        {"x-forwarded-for", AF_H_X_FORWARDED_FOR},
        {"proxy-connection", AF_H_PROXY_CONNECTION},
        {"transfer-encoding", AF_H_TRANSFER_ENCODING},
        {"x-forwarded-proto", AF_H_X_FORWARDED_PROTO},
        {"proxy-authenticate", AF_H_PROXY_AUTHENTICATE},
        {"proxy-authorization", AF_H_PROXY_AUTHORIZATION},
        {"x-appengine-user-email", AF_H_X_APPENGINE},
        {"X-AppEngine-", AF_H_X_APPENGINE},
        {"X-AppEngine", AF_H_OTHER},
        {"Hos", AF_H_OTHER},
        {"Content-Lengths", AF_H_OTHER},
        {"Accept", AF_H_OTHER},
        /* The same length as a known name, one letter off. */
        {"Transfer-Encodinx", AF_H_OTHER},
        {"X-Forwarded-Protp", AF_H_OTHER},
        {"Keep-Alivf", AF_H_OTHER},
        {"Cookif", AF_H_OTHER},
        {"T_", AF_H_OTHER},
    };
    struct af_headers h;
    af_headers_init(&h);
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        add(&h, cases[i].name, "v");
        if (h.v[i].id != cases[i].id)
            fail_msg("%s: id %d, want %d", cases[i].name, h.v[i].id, cases[i].id);
    }
    assert_ptr_equal(af_headers_find_id(&h, AF_H_HOST), &h.v[1]);
    af_headers_release(&h);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hop_by_hop_and_connection_named),
        cmocka_unit_test(test_connection_cannot_name_host),
        cmocka_unit_test(test_appengine_headers_dropped_case_insensitively),
        cmocka_unit_test(test_tokens),
        cmocka_unit_test(test_value_safety),
        cmocka_unit_test(test_find_skips_dropped_and_count),
        cmocka_unit_test(test_fields_are_recognized_in_any_case),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
