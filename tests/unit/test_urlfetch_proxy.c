/*
 * Unit tests of urlfetch's outbound proxy configuration (apiserver/services/
 * urlfetch_proxy.c): the variables and their precedence, proxy values with
 * and without scheme, port and credentials, unusable values, no_proxy's
 * entries, and loopback always reached directly. The network half (absolute
 * form, CONNECT) is tested end to end (tests/e2e/test_urlfetch_proxy.py).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "apiserver/services/urlfetch_proxy.c"
#include "common/log.h"

/* A fake environment: NULL-terminated name, value pairs. */
static const char *const *fake_env;

static char *fake_getenv(const char *name)
{
    for (const char *const *p = fake_env; p && *p; p += 2)
        if (strcmp(p[0], name) == 0)
            return (char *)p[1];
    return NULL;
}

static struct uf_proxy_config *config(const char *const *env)
{
    fake_env = env;
    return uf_proxy_config_new(fake_getenv);
}

/* The proxy for url under c: its host:port, "direct", or "error: ...". */
static const char *route(const struct uf_proxy_config *c, const char *url)
{
    static char out[300];
    struct uf_url u;
    char err[256];
    assert_int_equal(uf_url_parse(url, &u, err, sizeof(err)), 0);
    const struct uf_proxy *p = uf_proxy_for(c, &u);
    if (!p)
        snprintf(out, sizeof(out), "direct");
    else if (p->error)
        snprintf(out, sizeof(out), "error: %s", p->error);
    else
        snprintf(out, sizeof(out), "%s", p->authority);
    uf_url_release(&u);
    return out;
}

static void test_nothing_set(void **state)
{
    const char *none[] = {NULL};
    assert_null(config(none));
    const char *only_no_proxy[] = {"no_proxy", "example.com", NULL};
    assert_null(config(only_no_proxy));
    const char *empty[] = {"http_proxy", "", "HTTPS_PROXY", "  ", NULL};
    assert_null(config(empty));
    assert_null(uf_proxy_for(NULL, NULL));
}

static void test_values_and_precedence(void **state)
{
    const char *env[] = {
        "http_proxy",  "http://proxy.example:3128/", "HTTP_PROXY", "ignored.example:1",
        "HTTPS_PROXY", " tunnel.example ",           NULL};
    struct uf_proxy_config *c = config(env);
    assert_non_null(c);
    assert_string_equal(c->http.var, "http_proxy"); /* lower case wins */
    assert_string_equal(c->http.host, "proxy.example");
    assert_int_equal(c->http.port, 3128);
    assert_null(c->http.auth);
    assert_string_equal(c->https.var, "HTTPS_PROXY");
    assert_string_equal(c->https.host, "tunnel.example");
    assert_int_equal(c->https.port, 80); /* as for any http URL */
    assert_string_equal(route(c, "http://example.com/"), "proxy.example:3128");
    assert_string_equal(route(c, "https://example.com/"), "tunnel.example:80");
    uf_proxy_config_unref(c);

    /* An https proxy alone leaves http direct; IPv6 proxies keep []. */
    const char *v6[] = {"https_proxy", "http://[fd00::1]:8080", NULL};
    c = config(v6);
    assert_string_equal(route(c, "http://example.com/"), "direct");
    assert_string_equal(route(c, "https://example.com/"), "[fd00::1]:8080");
    assert_string_equal(c->https.host, "fd00::1");
    /* References: the last one frees (ASan checks). */
    assert_ptr_equal(uf_proxy_config_ref(c), c);
    uf_proxy_config_unref(c);
    uf_proxy_config_unref(c);
}

static void test_credentials(void **state)
{
    /* Percent-decoded, then Basic (RFC 7617): "us@er:p:ss". */
    const char *env[] = {"http_proxy", "http://us%40er:p%3Ass@p.example:8080", NULL};
    struct uf_proxy_config *c = config(env);
    assert_string_equal(c->http.auth, "Basic dXNAZXI6cDpzcw==");
    assert_string_equal(c->http.host, "p.example");
    assert_int_equal(c->http.port, 8080);
    uf_proxy_config_unref(c);
    /* A user without a password. */
    const char *user[] = {"http_proxy", "bob@p.example", NULL};
    c = config(user);
    assert_string_equal(c->http.auth, "Basic Ym9iOg==");
    uf_proxy_config_unref(c);
}

static void test_unusable_values(void **state)
{
    const char *socks[] = {"https_proxy", "socks5://user:secret@127.0.0.1:1080", NULL};
    struct uf_proxy_config *c = config(socks);
    assert_non_null(c);
    const char *r = route(c, "https://example.com/");
    assert_non_null(strstr(r, "https_proxy"));
    assert_non_null(strstr(r, "socks5"));
    assert_null(strstr(r, "secret")); /* never the password */
    assert_string_equal(route(c, "http://example.com/"), "direct");
    /* Loopback stays direct even when the proxy is unusable. */
    assert_string_equal(route(c, "https://127.0.0.1/"), "direct");
    uf_proxy_config_unref(c);

    const char *bad[] = {"HTTP_PROXY", "http://:99", "https_proxy", "http://p:0", NULL};
    c = config(bad);
    assert_non_null(strstr(route(c, "http://example.com/"), "no host"));
    assert_non_null(strstr(route(c, "https://example.com/"), "port"));
    uf_proxy_config_unref(c);
}

static void test_no_proxy(void **state)
{
    const char *env[] = {"http_proxy",
                         "p:1",
                         "https_proxy",
                         "p:2",
                         "no_proxy",
                         "example.com, .internal.test,*.wild.test  10.0.0.1,host.port:8443,"
                         "[::5]:99,2001:db8::1,,bad:port:x:,Trailing.Dot.",
                         NULL};
    struct uf_proxy_config *c = config(env);
    static const struct {
        const char *url, *want;
    } cases[] = {
        {"http://example.com/", "direct"},       {"http://EXAMPLE.com./", "direct"},
        {"http://www.example.com/", "direct"}, /* a name under it */
        {"http://notexample.com/", "p:1"},     /* not a name under it */
        {"http://example.com.evil/", "p:1"},     {"http://internal.test/", "direct"},
        {"http://a.b.internal.test/", "direct"}, {"https://x.wild.test/", "direct"},
        {"http://10.0.0.1:8080/", "direct"},     {"http://10.0.0.2/", "p:1"},
        {"https://host.port:8443/", "direct"},   {"https://host.port/", "p:2"}, /* another port */
        {"http://[::5]:99/", "direct"},          {"http://[::5]:98/", "p:1"},
        {"http://[2001:db8::1]/", "direct"},     {"http://trailing.dot/", "direct"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const char *got = route(c, cases[i].url);
        if (strcmp(got, cases[i].want) != 0)
            fail_msg("%s: got %s, want %s", cases[i].url, got, cases[i].want);
    }
    uf_proxy_config_unref(c);

    const char *all[] = {"HTTP_PROXY", "p:1", "NO_PROXY", "x.test, *", NULL};
    c = config(all);
    assert_string_equal(route(c, "http://example.com/"), "direct");
    uf_proxy_config_unref(c);
}

static void test_loopback_always_direct(void **state)
{
    const char *env[] = {"http_proxy", "p:1", NULL};
    struct uf_proxy_config *c = config(env);
    const char *direct[] = {"http://localhost/",         "http://LocalHost:8080/",
                            "http://app.localhost/",     "http://127.0.0.1:9/",
                            "http://127.1.2.3/",         "http://[::1]:80/",
                            "http://[::ffff:127.0.0.1]/"};
    for (size_t i = 0; i < sizeof(direct) / sizeof(direct[0]); i++)
        if (strcmp(route(c, direct[i]), "direct") != 0)
            fail_msg("%s went through the proxy", direct[i]);
    const char *proxied[] = {"http://128.0.0.1/", "http://localhost.example/",
                             "http://mylocalhost/", "http://[::2]/"};
    for (size_t i = 0; i < sizeof(proxied) / sizeof(proxied[0]); i++)
        if (strcmp(route(c, proxied[i]), "p:1") != 0)
            fail_msg("%s went direct", proxied[i]);
    uf_proxy_config_unref(c);
}

int main(void)
{
    af_log_set_level(AF_LOG_CRITICAL); /* the warnings about bad values */
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_nothing_set), cmocka_unit_test(test_values_and_precedence),
        cmocka_unit_test(test_credentials), cmocka_unit_test(test_unusable_values),
        cmocka_unit_test(test_no_proxy),    cmocka_unit_test(test_loopback_always_direct),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
