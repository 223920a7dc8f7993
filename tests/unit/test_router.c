/* Unit tests for app.yaml routing: proxy/router.c (matching, path safety,
 * login and secure decisions), proxy/static.c (ranges, dates, validators,
 * content types, safe opening), proxy/login.c (cookie, user id) and
 * proxy/url.c. Files live in a temporary app directory made per test. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define PCRE2_CODE_UNIT_WIDTH 8
#include <http_parser.h>
#include <pcre2.h>

#include "proxy/appyaml.h"
#include "proxy/headers.h"
#include "proxy/login.h"
#include "proxy/router.h"
#include "proxy/static.h"
#include "proxy/url.h"

/* ---- url ------------------------------------------------------------------ */

static void test_url_decode(void **state)
{
    char *s = af_url_decode("/a%20b%2Fc+d", 12, false);
    assert_string_equal(s, "/a b/c+d");
    free(s);
    s = af_url_decode("a+b%2b", 6, true);
    assert_string_equal(s, "a b+");
    free(s);
    assert_null(af_url_decode("/a%00b", 6, false)); /* NUL */
    assert_null(af_url_decode("/a%zz", 5, false));  /* not hex */
    assert_null(af_url_decode("/a%2", 4, false));   /* cut short */
    assert_null(af_url_decode("/a%", 3, false));
    /* Only n bytes are read. */
    s = af_url_decode("/abc%41", 4, false);
    assert_string_equal(s, "/abc");
    free(s);
}

static void test_url_encode_and_query(void **state)
{
    char *s = af_url_encode("http://h:1/a b?c=d&e~_.-");
    assert_string_equal(s, "http%3A%2F%2Fh%3A1%2Fa%20b%3Fc%3Dd%26e~_.-");
    free(s);
    s = af_url_query_param("action=Login&email=a%40b.c&admin=True&x", "email");
    assert_string_equal(s, "a@b.c");
    free(s);
    s = af_url_query_param("action=Login&x", "x");
    assert_string_equal(s, "");
    free(s);
    assert_null(af_url_query_param("xemail=1&emailx=2", "email"));
    assert_null(af_url_query_param("email=%0", "email"));
    s = af_url_query_param("continue=a+b", "continue");
    assert_string_equal(s, "a b");
    free(s);
}

/* ---- paths ------------------------------------------------------------------ */

static void test_dot_segments(void **state)
{
    assert_true(af_router_has_dot_segment("/a/../b"));
    assert_true(af_router_has_dot_segment("/a/.."));
    assert_true(af_router_has_dot_segment("/./a"));
    assert_true(af_router_has_dot_segment("/a/."));
    assert_true(af_router_has_dot_segment(".."));
    assert_true(af_router_has_dot_segment("../x"));
    assert_false(af_router_has_dot_segment("/a/..b/c"));
    assert_false(af_router_has_dot_segment("/a/.hidden"));
    assert_false(af_router_has_dot_segment("/a.../b"));
    assert_false(af_router_has_dot_segment("/"));
}

static void test_expand(void **state)
{
    /* Groups 1 = "ab", 2 unmatched, 3 = "c" of "xabyc". */
    size_t ov[8] = {0, 5, 1, 3, PCRE2_UNSET, PCRE2_UNSET, 4, 5};
    char *s = af_router_expand("f/\\1/\\2/\\3\\1.\\\\x", "xabyc", ov, 4);
    assert_string_equal(s, "f/ab//cab.\\x");
    free(s);
    s = af_router_expand("\\9 out of range", "xabyc", ov, 4);
    assert_string_equal(s, " out of range");
    free(s);
}

/* ---- static ----------------------------------------------------------------- */

static void test_range(void **state)
{
    int64_t s = -1, n = -1;
    assert_int_equal(af_static_range("bytes=0-0", 10, &s, &n), AF_RANGE_OK);
    assert_int_equal(s, 0);
    assert_int_equal(n, 1);
    assert_int_equal(af_static_range("bytes=2-", 10, &s, &n), AF_RANGE_OK);
    assert_int_equal(s, 2);
    assert_int_equal(n, 8);
    assert_int_equal(af_static_range("bytes=5-100", 10, &s, &n), AF_RANGE_OK);
    assert_int_equal(s, 5);
    assert_int_equal(n, 5);
    assert_int_equal(af_static_range("bytes=-3", 10, &s, &n), AF_RANGE_OK);
    assert_int_equal(s, 7);
    assert_int_equal(n, 3);
    assert_int_equal(af_static_range("bytes=-30", 10, &s, &n), AF_RANGE_OK);
    assert_int_equal(s, 0);
    assert_int_equal(n, 10);
    assert_int_equal(af_static_range("BYTES=1-2", 10, &s, &n), AF_RANGE_OK);

    assert_int_equal(af_static_range("bytes=10-", 10, &s, &n), AF_RANGE_UNSATISFIABLE);
    assert_int_equal(af_static_range("bytes=10-20", 10, &s, &n), AF_RANGE_UNSATISFIABLE);
    assert_int_equal(af_static_range("bytes=-0", 10, &s, &n), AF_RANGE_UNSATISFIABLE);
    assert_int_equal(af_static_range("bytes=0-", 0, &s, &n), AF_RANGE_UNSATISFIABLE);
    assert_int_equal(af_static_range("bytes=-5", 0, &s, &n), AF_RANGE_UNSATISFIABLE);

    /* Ignored: the whole file. */
    assert_int_equal(af_static_range(NULL, 10, &s, &n), AF_RANGE_NONE);
    assert_int_equal(af_static_range("bytes=0-1,3-4", 10, &s, &n), AF_RANGE_NONE);
    assert_int_equal(af_static_range("items=0-1", 10, &s, &n), AF_RANGE_NONE);
    assert_int_equal(af_static_range("bytes=5-2", 10, &s, &n), AF_RANGE_NONE);
    assert_int_equal(af_static_range("bytes=a-b", 10, &s, &n), AF_RANGE_NONE);
    assert_int_equal(af_static_range("bytes=-", 10, &s, &n), AF_RANGE_NONE);
    assert_int_equal(af_static_range("bytes=1-2x", 10, &s, &n), AF_RANGE_NONE);
    assert_int_equal(af_static_range("bytes=99999999999999999999-", 10, &s, &n),
                     AF_RANGE_NONE);
}

static void test_dates(void **state)
{
    char buf[64];
    af_http_date_format(784111777, buf, sizeof(buf));
    assert_string_equal(buf, "Sun, 06 Nov 1994 08:49:37 GMT");
    /* RFC 9110 §5.6.7: the three forms name the same instant. */
    time_t t = 0;
    assert_int_equal(af_http_date_parse("Sun, 06 Nov 1994 08:49:37 GMT", &t), 0);
    assert_int_equal(t, 784111777);
    t = 0;
    assert_int_equal(af_http_date_parse("Sunday, 06-Nov-94 08:49:37 GMT", &t), 0);
    assert_int_equal(t, 784111777);
    t = 0;
    assert_int_equal(af_http_date_parse("Sun Nov  6 08:49:37 1994", &t), 0);
    assert_int_equal(t, 784111777);
    assert_int_equal(af_http_date_parse("yesterday", &t), -1);
    assert_int_equal(af_http_date_parse("Sun, 06 Nov 1994 08:49:37 GMT junk", &t), -1);
}

static void test_etag_listed(void **state)
{
    const char *e = "\"abc-1\"";
    assert_true(af_static_etag_listed("\"abc-1\"", e));
    assert_true(af_static_etag_listed("W/\"abc-1\"", e)); /* weak comparison */
    assert_true(af_static_etag_listed("\"x\", \"abc-1\"", e));
    assert_true(af_static_etag_listed("*", e));
    assert_false(af_static_etag_listed("\"abc-2\"", e));
    assert_false(af_static_etag_listed("abc-1", e));
    assert_false(af_static_etag_listed("\"abc-1", e));
    assert_false(af_static_etag_listed("", e));
}

static void test_mime_types(void **state)
{
    assert_string_equal(af_static_mime_type("a/b/style.css"), "text/css");
    assert_string_equal(af_static_mime_type("INDEX.HTML"), "text/html");
    assert_string_equal(af_static_mime_type("x.tar.gz"), "application/gzip");
    assert_string_equal(af_static_mime_type("app.js"), "text/javascript");
    assert_string_equal(af_static_mime_type("noext"), "application/octet-stream");
    assert_string_equal(af_static_mime_type("dir.css/noext"), "application/octet-stream");
    assert_string_equal(af_static_mime_type(".png"), "application/octet-stream");
    assert_string_equal(af_static_mime_type("x.unknownext"), "application/octet-stream");
}

/* ---- login -------------------------------------------------------------------- */

static void test_md5_vectors(void **state)
{
    /* RFC 1321 §A.5. */
    static const struct {
        const char *in, *hex;
    } v[] = {
        {"", "d41d8cd98f00b204e9800998ecf8427e"},
        {"abc", "900150983cd24fb0d6963f7d28e17f72"},
        {"message digest", "f96b697d7cb7938d525a2f31aaf161d0"},
        {"12345678901234567890123456789012345678901234567890123456789012345678901234567890",
         "57edf4a22be3c955ac49da2e2107b67a"},
    };
    for (size_t i = 0; i < sizeof(v) / sizeof(v[0]); i++) {
        unsigned char d[16];
        char hex[33];
        af_md5(v[i].in, strlen(v[i].in), d);
        for (int j = 0; j < 16; j++)
            snprintf(hex + 2 * j, 3, "%02x", d[j]);
        assert_string_equal(hex, v[i].hex);
    }
}

static void test_user_id(void **state)
{
    char id[22];
    /* dev_appserver: '1' + ''.join('%02d' % b for b in md5(email.lower()))[:20] */
    af_login_user_id("test@example.com", id);
    assert_string_equal(id, "185804764220139124118");
    af_login_user_id("Test@Example.COM", id);
    assert_string_equal(id, "185804764220139124118");
    af_login_user_id("a@b.c", id);
    assert_string_equal(id, "193962122261281022233");
}

static void cookie(struct af_headers *h, const char *v)
{
    af_headers_add(h, "Cookie", 6, v, strlen(v));
}

static void test_cookie_parse(void **state)
{
    struct af_headers h;
    struct af_user u;
    af_headers_init(&h);
    assert_false(af_login_from_headers(&h, &u));

    cookie(&h, "a=1; dev_appserver_login=\"x@y.z:True:42\"; b=2");
    assert_true(af_login_from_headers(&h, &u));
    assert_string_equal(u.email, "x@y.z");
    assert_string_equal(u.user_id, "42");
    assert_true(u.admin);

    af_headers_clear(&h);
    cookie(&h, "dev_appserver_login=x@y.z:False:42");
    assert_true(af_login_from_headers(&h, &u));
    assert_false(u.admin);

    af_headers_clear(&h);
    cookie(&h, "dev_appserver_login=x@y.z:true:42"); /* only "True" */
    assert_true(af_login_from_headers(&h, &u));
    assert_false(u.admin);

    af_headers_clear(&h);
    cookie(&h, "dev_appserver_login=x@y.z:False:"); /* empty id is dev_appserver's own */
    assert_true(af_login_from_headers(&h, &u));
    assert_string_equal(u.user_id, "");

    /* Like dev_appserver's split(':'), fields past the third are ignored. */
    af_headers_clear(&h);
    cookie(&h, "dev_appserver_login=x@y.z:True:7:extra");
    assert_true(af_login_from_headers(&h, &u));
    assert_string_equal(u.user_id, "7");

    /* Not logged in. */
    const char *bad[] = {
        "dev_appserver_login=nobody:True:1",          /* no '@' */
        "dev_appserver_login=:True:1",                /* empty */
        "dev_appserver_login=x@y.z",                  /* no fields */
        "xdev_appserver_login=x@y.z:True:1",          /* another cookie */
        "dev_appserver_login=\"x@y.z:True:1",         /* half quoted */
        "dev_appserver_login=x\ty@z:True:1",          /* control character */
        "dev_appserver_login=x@y.z:True:1\x01",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        af_headers_clear(&h);
        cookie(&h, bad[i]);
        assert_false(af_login_from_headers(&h, &u));
        assert_string_equal(u.email, "");
    }
    /* Over the length bound. */
    char long_cookie[400];
    snprintf(long_cookie, sizeof(long_cookie), "dev_appserver_login=%0300d@x:True:1", 0);
    af_headers_clear(&h);
    cookie(&h, long_cookie);
    assert_false(af_login_from_headers(&h, &u));

    /* A dropped field does not count; the first cookie decides. */
    af_headers_clear(&h);
    cookie(&h, "dev_appserver_login=a@b:True:1");
    h.v[0].drop = true;
    cookie(&h, "dev_appserver_login=c@d:False:2; dev_appserver_login=e@f:True:3");
    assert_true(af_login_from_headers(&h, &u));
    assert_string_equal(u.email, "c@d");
    af_headers_release(&h);
}

static void test_safe_continue(void **state)
{
    static const struct {
        const char *in, *out;
    } v[] = {
        {NULL, "/"},
        {"", "/"},
        {"/a?b=c", "/a?b=c"},
        {"http://h:1/x", "http://h:1/x"},
        {"HTTPS://h/x", "HTTPS://h/x"},
        {"//evil.example/", "/"},
        {"/\\evil.example/", "/"},
        {"javascript:alert(1)", "/"},
        {"/a\r\nSet-Cookie: x=1", "/a%0D%0ASet-Cookie:%20x=1"},
        {"/\xc3\xa9", "/%C3%A9"},
    };
    for (size_t i = 0; i < sizeof(v) / sizeof(v[0]); i++) {
        char *s = af_login_safe_continue(v[i].in);
        assert_string_equal(s, v[i].out);
        free(s);
    }
    assert_true(af_login_email_is_valid("a@b.c"));
    assert_false(af_login_email_is_valid("a:b@c"));
    assert_false(af_login_email_is_valid("ab.c"));
    assert_false(af_login_email_is_valid("a b@c"));
    assert_false(af_login_email_is_valid(""));
}

/* ---- the router against a real directory ----------------------------------------- */

struct fixture {
    char root[PATH_MAX + 16];    /* the app directory (real path) */
    char outside[PATH_MAX + 16]; /* a directory next to it */
    struct af_app_yaml *app;
    struct af_router *r;
};

static void put(const char *dir, const char *rel, const char *text)
{
    char path[PATH_MAX * 2];
    snprintf(path, sizeof(path), "%s/%s", dir, rel);
    /* Make the parent directories. */
    for (char *p = path + strlen(dir) + 1; *p; p++) {
        if (*p == '/') {
            *p = '\0';
            mkdir(path, 0700);
            *p = '/';
        }
    }
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

static const char app_yaml[] =
    "runtime: native\n"
    "entrypoint: exec true\n"
    "default_expiration: 1h\n"
    "handlers:\n"
    "- url: /static\n"
    "  static_dir: public\n"
    "- url: /img/(.*)\\.(png|gif)\n"
    "  static_files: images/\\1.\\2\n"
    "  upload: images/.*\\.(png|gif)\n"
    "- url: /maybe/(.*)\n"
    "  static_files: maybe/\\1\n"
    "  upload: maybe/.*\n"
    "  require_matching_file: true\n"
    "- url: /maybe/.*\n"
    "  script: auto\n"
    "- url: /admin/.*\n"
    "  script: auto\n"
    "  login: admin\n"
    "- url: /account/.*\n"
    "  script: auto\n"
    "  login: required\n"
    "- url: /api/.*\n"
    "  script: auto\n"
    "  login: required\n"
    "  auth_fail_action: unauthorized\n"
    "- url: /secure\n"
    "  script: auto\n"
    "  secure: always\n"
    "  redirect_http_response_code: 301\n"
    "- url: /(a|b)\n"
    "  script: auto\n";

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof(*f));
    char tmpl[] = "/tmp/af-router-XXXXXX";
    assert_non_null(mkdtemp(tmpl));
    char base[PATH_MAX];
    assert_non_null(realpath(tmpl, base));
    snprintf(f->root, sizeof(f->root), "%s/app", base);
    snprintf(f->outside, sizeof(f->outside), "%s/outside", base);
    mkdir(f->root, 0700);
    mkdir(f->outside, 0700);
    put(f->root, "public/style.css", "body{}");
    put(f->root, "public/sub/a.txt", "a");
    put(f->root, "public/.hidden", "skipped");
    put(f->root, "images/cat.png", "png");
    put(f->root, "images/notes.txt", "txt");
    put(f->root, "maybe/here.txt", "here");
    put(f->root, "secret.txt", "secret");
    put(f->outside, "passwd", "outside");
    char link[PATH_MAX * 2], target[PATH_MAX * 2];
    snprintf(link, sizeof(link), "%s/public/out", f->root);
    snprintf(target, sizeof(target), "%s/passwd", f->outside);
    assert_int_equal(symlink(target, link), 0);
    snprintf(link, sizeof(link), "%s/public/up", f->root);
    assert_int_equal(symlink("../../outside", link), 0);
    snprintf(link, sizeof(link), "%s/public/in", f->root);
    assert_int_equal(symlink("../secret.txt", link), 0);
    snprintf(link, sizeof(link), "%s/public/dotlink", f->root);
    assert_int_equal(symlink(".hidden", link), 0);
    snprintf(link, sizeof(link), "%s/public/fifo", f->root);
    assert_int_equal(mkfifo(link, 0600), 0);

    char err[512];
    assert_int_equal(af_appyaml_parse("app.yaml", app_yaml, strlen(app_yaml), f->root, &f->app,
                                      err, sizeof(err)),
                     0);
    f->r = af_router_new(f->app, false, 0);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    af_router_free(f->r);
    af_appyaml_free(f->app);
    char cmd[PATH_MAX * 2];
    /* rm -rf of the mkdtemp directory, which holds app/ and outside/. */
    char base[sizeof(f->root)];
    snprintf(base, sizeof(base), "%s", f->root);
    *strrchr(base, '/') = '\0';
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", base);
    assert_int_equal(system(cmd), 0);
    free(f);
    return 0;
}

/* Routes a GET (or `method`) with `cookie_value` (may be NULL). */
static void route(struct af_router *r, unsigned method, const char *target,
                  const char *cookie_value, struct af_route_result *res)
{
    struct af_headers h;
    af_headers_init(&h);
    if (cookie_value)
        cookie(&h, cookie_value);
    af_router_route(r, method, target, &h, "localhost:8080", res);
    af_headers_release(&h);
}

static void expect_file(struct af_router *r, const char *target, const char *rel)
{
    struct af_route_result res;
    route(r, HTTP_GET, target, NULL, &res);
    if (res.kind != AF_ROUTE_FILE)
        fail_msg("%s: expected a file, got kind %d status %d", target, res.kind, res.status);
    assert_true(res.fd >= 0);
    assert_string_equal(res.rel, rel);
    af_route_result_release(&res);
}

static void expect_status(struct af_router *r, const char *target, int status)
{
    struct af_route_result res;
    route(r, HTTP_GET, target, NULL, &res);
    if (res.kind != AF_ROUTE_ERROR || res.status != status)
        fail_msg("%s: expected %d, got kind %d status %d", target, status, res.kind, res.status);
    assert_int_equal(res.fd, -1);
    af_route_result_release(&res);
}

static void expect_forward(struct af_router *r, const char *target, int handler)
{
    struct af_route_result res;
    route(r, HTTP_GET, target, NULL, &res);
    if (res.kind != AF_ROUTE_FORWARD)
        fail_msg("%s: expected forward, got kind %d status %d", target, res.kind, res.status);
    assert_int_equal(res.handler, handler);
    af_route_result_release(&res);
}

static void test_route_static(void **state)
{
    struct fixture *f = *state;
    expect_file(f->r, "/static/style.css", "public/style.css");
    expect_file(f->r, "/static/sub/a.txt?x=1", "public/sub/a.txt");
    expect_file(f->r, "/static/sub//a.txt", "public/sub/a.txt");
    expect_file(f->r, "/static/%73ub/a.txt", "public/sub/a.txt"); /* %73 is 's' */
    expect_file(f->r, "/img/cat.png", "images/cat.png");
    /* A symlink that stays inside the app is served. */
    expect_file(f->r, "/static/in", "public/in");

    expect_status(f->r, "/static/nope.css", 404);
    expect_status(f->r, "/static/", 404);     /* a directory */
    expect_status(f->r, "/static/sub", 404);  /* a directory */
    expect_status(f->r, "/static/fifo", 404); /* not a regular file */
    expect_status(f->r, "/static", 404);      /* no handler: "/static/(.*)" */
    expect_status(f->r, "/img/cat.jpg", 404); /* no handler */
    expect_status(f->r, "/nothing", 404);
}

static void test_route_traversal(void **state)
{
    struct fixture *f = *state;
    static const char *const vectors[] = {
        "/static/../secret.txt",
        "/static/./style.css",
        "/static/%2e%2e/secret.txt",
        "/static/%2E%2E/secret.txt",
        "/static/.%2e/secret.txt",
        "/static/..%2fsecret.txt",
        "/static/..%2Fsecret.txt",
        "/static/sub%2fa.txt",     /* an encoded slash, even harmless */
        "/static/..%5csecret.txt",
        "/static/..\\secret.txt",
        "/static/style.css%00.png",
        "/static/out",             /* symlink to a file outside */
        "/static/up/passwd",       /* symlink to a directory outside */
        "/static/.hidden",         /* skip_files */
        "/static/dotlink",         /* a symlink to a skipped file */
        "/img/..%2fsecret.txt",
        "/img/notes.txt",          /* outside upload */
    };
    for (size_t i = 0; i < sizeof(vectors) / sizeof(vectors[0]); i++)
        expect_status(f->r, vectors[i], 404);
    expect_status(f->r, "/static/%zz", 400);
}

static void test_route_allow_skipped(void **state)
{
    struct fixture *f = *state;
    struct af_router *r = af_router_new(f->app, true, 0);
    expect_file(r, "/static/.hidden", "public/.hidden");
    expect_status(r, "/static/out", 404); /* outside stays outside */
    af_router_free(r);
}

static void test_route_require_matching_file(void **state)
{
    struct fixture *f = *state;
    expect_file(f->r, "/maybe/here.txt", "maybe/here.txt");
    /* Missing: the static handler does not match, the script one does. */
    expect_forward(f->r, "/maybe/gone.txt", 3);
}

static void test_route_order_and_anchoring(void **state)
{
    struct fixture *f = *state;
    expect_forward(f->r, "/a", 8);
    expect_forward(f->r, "/b?q=1", 8);
    expect_status(f->r, "/ab", 404);  /* anchored at the end */
    expect_status(f->r, "/x/a", 404); /* and at the start */
}

static void test_route_login(void **state)
{
    struct fixture *f = *state;
    struct af_route_result res;

    route(f->r, HTTP_GET, "/account/me?x=1&y=2", NULL, &res);
    assert_int_equal(res.kind, AF_ROUTE_REDIRECT);
    assert_int_equal(res.status, 302);
    assert_string_equal(res.location,
                        "/_ah/login?continue=http%3A%2F%2Flocalhost%3A8080%2Faccount%2Fme%3Fx%3D1%26y%3D2");
    af_route_result_release(&res);

    /* An encoded slash still meets the login handler. */
    route(f->r, HTTP_GET, "/account%2Fme", NULL, &res);
    assert_int_equal(res.kind, AF_ROUTE_REDIRECT);
    af_route_result_release(&res);

    route(f->r, HTTP_GET, "/api/x", NULL, &res);
    assert_int_equal(res.kind, AF_ROUTE_ERROR);
    assert_int_equal(res.status, 401);
    af_route_result_release(&res);

    route(f->r, HTTP_GET, "/account/me", "dev_appserver_login=\"u@x.y:False:1\"", &res);
    assert_int_equal(res.kind, AF_ROUTE_FORWARD);
    af_route_result_release(&res);

    route(f->r, HTTP_GET, "/admin/x", "dev_appserver_login=\"u@x.y:False:1\"", &res);
    assert_int_equal(res.kind, AF_ROUTE_ERROR);
    assert_int_equal(res.status, 401);
    af_route_result_release(&res);

    route(f->r, HTTP_GET, "/admin/x", NULL, &res);
    assert_int_equal(res.kind, AF_ROUTE_REDIRECT);
    af_route_result_release(&res);

    route(f->r, HTTP_GET, "/admin/x", "dev_appserver_login=\"u@x.y:True:1\"", &res);
    assert_int_equal(res.kind, AF_ROUTE_FORWARD);
    af_route_result_release(&res);

    /* A cookie without '@' is nobody. */
    route(f->r, HTTP_GET, "/api/x", "dev_appserver_login=root:True:1", &res);
    assert_int_equal(res.status, 401);
    af_route_result_release(&res);

    route(f->r, HTTP_GET, "/_ah/login?continue=%2F", NULL, &res);
    assert_int_equal(res.kind, AF_ROUTE_LOGIN);
    assert_string_equal(res.query, "continue=%2F");
    af_route_result_release(&res);
    route(f->r, HTTP_GET, "/_ah/logout", NULL, &res);
    assert_int_equal(res.kind, AF_ROUTE_LOGOUT);
    assert_null(res.query);
    af_route_result_release(&res);
}

static void test_route_secure_and_methods(void **state)
{
    struct fixture *f = *state;
    struct af_route_result res;
    /* No https port: served over http (a warning was logged at build). */
    expect_forward(f->r, "/secure", 7);

    struct af_router *r = af_router_new(f->app, false, 8443);
    route(r, HTTP_GET, "/secure?a=1", NULL, &res);
    assert_int_equal(res.kind, AF_ROUTE_REDIRECT);
    assert_int_equal(res.status, 301); /* redirect_http_response_code */
    assert_string_equal(res.location, "https://localhost:8443/secure?a=1");
    af_route_result_release(&res);
    af_router_free(r);

    route(f->r, HTTP_POST, "/static/style.css", NULL, &res);
    assert_int_equal(res.kind, AF_ROUTE_ERROR);
    assert_int_equal(res.status, 405);
    assert_string_equal(res.allow, "GET, HEAD");
    assert_int_equal(res.fd, -1);
    af_route_result_release(&res);
    route(f->r, HTTP_HEAD, "/static/style.css", NULL, &res);
    assert_int_equal(res.kind, AF_ROUTE_FILE);
    af_route_result_release(&res);
}

static void test_route_no_handlers(void **state)
{
    static const char text[] = "runtime: native\n";
    struct af_app_yaml *app;
    char err[256];
    assert_int_equal(af_appyaml_parse("app.yaml", text, strlen(text), "/tmp", &app, err,
                                      sizeof(err)),
                     0);
    struct af_router *r = af_router_new(app, false, 0);
    expect_forward(r, "/anything/../at/all", -1);
    struct af_route_result res;
    route(r, HTTP_GET, "/_ah/login", NULL, &res);
    assert_int_equal(res.kind, AF_ROUTE_LOGIN);
    af_route_result_release(&res);
    af_router_free(r);
    af_appyaml_free(app);
}

static void test_static_open(void **state)
{
    struct fixture *f = *state;
    struct stat st;
    char *resolved = NULL;
    int fd = af_static_open(f->root, "public/style.css", &st, &resolved);
    assert_true(fd >= 0);
    assert_int_equal(st.st_size, 6);
    assert_non_null(strstr(resolved, "/app/public/style.css"));
    free(resolved);
    close(fd);
    assert_int_equal(af_static_open(f->root, "../outside/passwd", &st, NULL), -1);
    assert_int_equal(af_static_open(f->root, "public/out", &st, NULL), -1);
    assert_int_equal(af_static_open(f->root, "public", &st, NULL), -1);
    assert_int_equal(af_static_open(f->root, "", &st, NULL), -1);
    assert_int_equal(af_static_open(f->root, "public/fifo", &st, NULL), -1);
    fd = af_static_open(f->root, "/public//style.css", &st, NULL);
    assert_true(fd >= 0);
    close(fd);
    /* A root that is a prefix of a sibling's name is not that sibling. */
    char sibling[sizeof(f->root) + 8];
    snprintf(sibling, sizeof(sibling), "%s2", f->root);
    mkdir(sibling, 0700);
    put(sibling, "x", "x");
    assert_int_equal(af_static_open(f->root, "../app2/x", &st, NULL), -1);
    char cmd[sizeof(sibling) + 32];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", sibling);
    assert_int_equal(system(cmd), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_url_decode),
        cmocka_unit_test(test_url_encode_and_query),
        cmocka_unit_test(test_dot_segments),
        cmocka_unit_test(test_expand),
        cmocka_unit_test(test_range),
        cmocka_unit_test(test_dates),
        cmocka_unit_test(test_etag_listed),
        cmocka_unit_test(test_mime_types),
        cmocka_unit_test(test_md5_vectors),
        cmocka_unit_test(test_user_id),
        cmocka_unit_test(test_cookie_parse),
        cmocka_unit_test(test_safe_continue),
        cmocka_unit_test_setup_teardown(test_route_static, setup, teardown),
        cmocka_unit_test_setup_teardown(test_route_traversal, setup, teardown),
        cmocka_unit_test_setup_teardown(test_route_allow_skipped, setup, teardown),
        cmocka_unit_test_setup_teardown(test_route_require_matching_file, setup, teardown),
        cmocka_unit_test_setup_teardown(test_route_order_and_anchoring, setup, teardown),
        cmocka_unit_test_setup_teardown(test_route_login, setup, teardown),
        cmocka_unit_test_setup_teardown(test_route_secure_and_methods, setup, teardown),
        cmocka_unit_test(test_route_no_handlers),
        cmocka_unit_test_setup_teardown(test_static_open, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
