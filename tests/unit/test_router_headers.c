/* Unit tests of what router.c keeps of a handler's http_headers and
 * mime_type: a value with CR, LF or NUL, or a framing field, is never sent.
 * The loader refuses line breaks already; the router checks again because
 * an af_app_yaml may come from elsewhere. Includes router.c to reach the
 * compiled routes (the h2o habit). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "proxy/router.c"

static void test_http_headers_filtered(void **state)
{
    struct af_header_kv kv[] = {
        {.name = "X-Good", .value = "fine"},
        {.name = "X-Crlf", .value = "a\r\nSet-Cookie: evil=1"},
        {.name = "X-Lf", .value = "a\nb"},
        {.name = "Content-Length", .value = "0"},
        {.name = "transfer-encoding", .value = "chunked"},
        {.name = "Connection", .value = "close"},
        {.name = "Cache-Control", .value = "private"},
    };
    struct af_handler h = {
        .line = 3,
        .url = "/s",
        .kind = AF_HANDLER_STATIC_DIR,
        .static_dir = "s",
        .mime_type = "text/plain\r\nX-Injected: 1",
        .http_headers = kv,
        .n_http_headers = sizeof(kv) / sizeof(kv[0]),
    };
    char dir[] = "/tmp";
    struct af_app_yaml app = {.dir = dir, .handlers = &h, .n_handlers = 1};
    struct af_router *r = af_router_new(&app, false, 0);
    const struct route *rt = &r->routes[0];
    assert_int_equal(rt->n_extra, 2);
    assert_string_equal(rt->extra[0].name, "X-Good");
    assert_string_equal(rt->extra[1].name, "Cache-Control");
    assert_null(rt->content_type);
    for (size_t i = 0; i < rt->n_extra; i++)
        assert_true(af_header_value_is_safe(rt->extra[i].value, strlen(rt->extra[i].value)));
    /* The static_dir url became a prefix with the file as the last group. */
    assert_int_equal(rt->file_group, 1);
    af_router_free(r);
}

static void test_expiration_fallback(void **state)
{
    struct af_handler hs[] = {
        {.url = "/a", .kind = AF_HANDLER_STATIC_DIR, .static_dir = "a", .expiration = "1d 1s"},
        {.url = "/b", .kind = AF_HANDLER_STATIC_DIR, .static_dir = "b"},
        {.url = "/c", .kind = AF_HANDLER_SCRIPT, .script = "auto"},
    };
    char dir[] = "/tmp", def[] = "10m";
    struct af_app_yaml app = {.dir = dir, .handlers = hs, .n_handlers = 3,
                              .default_expiration = def};
    struct af_router *r = af_router_new(&app, false, 0);
    assert_int_equal(r->routes[0].max_age, 86401);
    assert_int_equal(r->routes[1].max_age, 600);
    af_router_free(r);
    app.default_expiration = NULL;
    r = af_router_new(&app, false, 0);
    assert_int_equal(r->routes[1].max_age, -1);
    af_router_free(r);
}

static void test_cache_headers(void **state)
{
    struct af_headers h;
    af_headers_init(&h);
    af_static_cache_headers(&h, 60, 784111777);
    assert_string_equal(af_headers_find(&h, "Cache-Control")->value, "public, max-age=60");
    assert_string_equal(af_headers_find(&h, "Expires")->value, "Sun, 06 Nov 1994 08:50:37 GMT");
    af_headers_clear(&h);
    af_static_cache_headers(&h, -1, 784111777);
    assert_string_equal(af_headers_find(&h, "Cache-Control")->value, "no-cache");
    assert_null(af_headers_find(&h, "Expires"));
    af_headers_release(&h);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_http_headers_filtered),
        cmocka_unit_test(test_expiration_fallback),
        cmocka_unit_test(test_cache_headers),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
