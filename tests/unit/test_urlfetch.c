/*
 * Unit tests of the urlfetch service's pure parts: the hand-written codec of
 * URLFetchRequest / URLFetchResponse (checked against the bytes the official
 * Go library produces), URLs and redirect targets, and the checks Fetch makes
 * on the backend thread before it defers (docs/services.md, "urlfetch").
 * The network half is tested end to end (tests/e2e/test_urlfetch.py).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "apiserver/services/urlfetch.c"
#include "apiserver/services/urlfetch_http.c"
#include "tests/unit/svc_call.h"

/* Bytes the official Go library (google.golang.org/appengine/internal/
 * urlfetch, proto.Marshal) makes of:
 *   URLFetchRequest{Method: POST, Url: "http://h:8/p?q",
 *     Header: [{A, b}, {C, ""}], Payload: "xy", FollowRedirects: false,
 *     Deadline: 2.5, MustValidateServerCertificate: false}
 */
static const char go_request_hex[] = "0802120e687474703a2f2f683a382f703f711b2201412a01621c1b220143"
                                     "2a001c3202787938004100000000000004404800";
/*   URLFetchResponse{Content: "hi", StatusCode: 404, Header: [{K, v}],
 *     ContentWasTruncated: true, ExternalBytesSent: 10,
 *     ExternalBytesReceived: 300, FinalUrl: "http://x/"} */
static const char go_response_hex[] = "0a0268691094031b22014b2a01761c3001380a40ac024a09687474703a2f"
                                      "2f782f";

static size_t from_hex(const char *hex, uint8_t *out)
{
    size_t n = strlen(hex) / 2;
    for (size_t i = 0; i < n; i++) {
        unsigned v;
        sscanf(hex + 2 * i, "%2x", &v);
        out[i] = (uint8_t)v;
    }
    return n;
}

static void test_decode_go_request(void **state)
{
    uint8_t buf[128];
    size_t n = from_hex(go_request_hex, buf);
    struct uf_request r;
    char err[128];
    assert_int_equal(uf_request_decode(buf, n, &r, err, sizeof(err)), 0);
    assert_int_equal(r.method, UF_POST);
    assert_string_equal(r.url, "http://h:8/p?q");
    assert_int_equal(r.n_headers, 2);
    assert_string_equal(r.headers[0].key, "A");
    assert_string_equal(r.headers[0].value, "b");
    assert_string_equal(r.headers[1].key, "C");
    assert_string_equal(r.headers[1].value, "");
    assert_int_equal(r.payload_len, 2);
    assert_memory_equal(r.payload, "xy", 2);
    assert_false(r.follow_redirects);
    assert_true(r.has_deadline);
    assert_true(r.deadline_s == 2.5);
    assert_false(r.validate_certificate);
    uf_request_release(&r);

    /* Defaults when the optional fields are absent: Method GET, Url "u". */
    const uint8_t minimal[] = {0x08, 0x01, 0x12, 0x01, 'u'};
    assert_int_equal(uf_request_decode(minimal, sizeof(minimal), &r, err, sizeof(err)), 0);
    assert_true(r.follow_redirects);
    assert_true(r.validate_certificate);
    assert_false(r.has_deadline);
    assert_null(r.payload);
    uf_request_release(&r);
}

/* A byte string literal and its length, without the terminating NUL. */
#define B(s) (const uint8_t *)(s), sizeof(s) - 1

static void test_decode_refuses(void **state)
{
    struct uf_request r;
    char err[128];
    uint8_t buf[128];
    size_t n = from_hex(go_request_hex, buf);
    /* Every strict prefix is truncated somewhere (or lacks a field). */
    for (size_t cut = 0; cut < n; cut++) {
        int rc = uf_request_decode(buf, cut, &r, err, sizeof(err));
        if (rc == 0)
            uf_request_release(&r);
        /* Prefixes that end between fields and hold Method and Url decode;
         * the others must fail cleanly (ASan checks there is no overread). */
    }
    const struct {
        const char *what;
        const uint8_t *bytes;
        size_t len;
        const char *words;
    } bad[] = {
        {"no Url", B("\x08\x01"), "Url"},
        {"no Method", B("\x12\x01u"), "Method"},
        {"NUL in Url", B("\x08\x01\x12\x02u\0"), "NUL"},
        {"group not closed",
         B("\x08\x01\x12\x01u\x1b\x22\x01"
           "A"),
         "closed"},
        {"header without Value",
         B("\x08\x01\x12\x01u\x1b\x22\x01"
           "A\x1c"),
         "Value"},
        {"wrong end tag",
         B("\x08\x01\x12\x01u\x1b\x22\x01"
           "A\x2a\x00\x24"),
         "end tag"},
        {"Url as varint", B("\x08\x01\x10\x01"), "wire type"},
        {"field 0", B("\x00\x01"), "tag"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        err[0] = '\0';
        if (uf_request_decode(bad[i].bytes, bad[i].len, &r, err, sizeof(err)) == 0)
            fail_msg("%s: decoded", bad[i].what);
        if (!strstr(err, bad[i].words))
            fail_msg("%s: \"%s\" lacks \"%s\"", bad[i].what, err, bad[i].words);
    }

    /* Unknown fields are skipped, nested groups included; deep nesting is
     * refused rather than recursed into. */
    const uint8_t unknown[] = {0x08, 0x01, 0x12, 0x01, 'u', 0x5b, 0x63, 0x08, 0x01, 0x64, 0x5c};
    assert_int_equal(uf_request_decode(unknown, sizeof(unknown), &r, err, sizeof(err)), 0);
    uf_request_release(&r);
    uint8_t deep[64];
    size_t d = 0;
    deep[d++] = 0x08, deep[d++] = 0x01, deep[d++] = 0x12, deep[d++] = 0x01, deep[d++] = 'u';
    for (int i = 0; i < 20; i++)
        deep[d++] = 0x5b; /* field 11, start group */
    for (int i = 0; i < 20; i++)
        deep[d++] = 0x5c;
    assert_int_equal(uf_request_decode(deep, d, &r, err, sizeof(err)), -1);
}

static void test_encode_matches_go(void **state)
{
    struct uf_header h = {"K", "v"};
    struct uf_response r = {
        .status = 404,
        .headers = &h,
        .n_headers = 1,
        .content = (const uint8_t *)"hi",
        .content_len = 2,
        .truncated = true,
        .bytes_sent = 10,
        .bytes_received = 300,
        .final_url = "http://x/",
    };
    uint8_t want[128];
    size_t want_len = from_hex(go_response_hex, want);
    uint8_t *got;
    size_t len = uf_response_encode(&r, 1 << 20, &got);
    assert_int_equal(len, want_len);
    assert_memory_equal(got, want, len);
    free(got);
}

static void test_encode_cuts_to_fit(void **state)
{
    static uint8_t content[5000];
    memset(content, 'c', sizeof(content));
    struct uf_header h = {"Key", "Value"};
    struct uf_response r = {.status = 200,
                            .headers = &h,
                            .n_headers = 1,
                            .content = content,
                            .content_len = sizeof(content)};
    uint8_t *got;
    size_t len = uf_response_encode(&r, 1000, &got);
    assert_true(len <= 1000);
    assert_true(len > 950);
    /* Content first: tag, 2-byte length, then the bytes kept. */
    assert_int_equal(got[0], 0x0a);
    size_t kept = (got[1] & 0x7f) | (size_t)got[2] << 7;
    assert_true(kept < sizeof(content) && kept > 900);
    /* The truncated flag (field 6 = 1) is in there. */
    bool flag = false;
    for (size_t i = 3 + kept; i + 1 < len; i++)
        if (got[i] == 0x30 && got[i + 1] == 0x01)
            flag = true;
    assert_true(flag);
    free(got);
}

/* ---- URLs ------------------------------------------------------------------- */

static void test_url_parse(void **state)
{
    struct uf_url u;
    char err[256];
    assert_int_equal(uf_url_parse("HTTP://Example.com:8080/a/b?x=1#frag", &u, err, sizeof(err)), 0);
    assert_false(u.https);
    assert_string_equal(u.host, "Example.com");
    assert_int_equal(u.port, 8080);
    assert_string_equal(u.authority, "Example.com:8080");
    assert_string_equal(u.target, "/a/b?x=1");
    uf_url_release(&u);

    assert_int_equal(uf_url_parse("https://[::1]:443?q", &u, err, sizeof(err)), 0);
    assert_true(u.https);
    assert_string_equal(u.host, "::1");
    assert_int_equal(u.port, 443);
    assert_string_equal(u.authority, "[::1]"); /* the default port is left out */
    assert_string_equal(u.target, "/?q");
    uf_url_release(&u);

    assert_int_equal(uf_url_parse("http://h:/\xc3\xa9", &u, err, sizeof(err)), 0);
    assert_int_equal(u.port, 80);
    assert_string_equal(u.authority, "h");
    assert_string_equal(u.target, "/%C3%A9");
    char *s = uf_url_string(&u);
    assert_string_equal(s, "http://h/%C3%A9");
    free(s);
    uf_url_release(&u);

    const struct {
        const char *url, *words;
    } bad[] = {
        {"", "empty"},
        {"mailto:x@y", "not an absolute"},
        {"gopher://h/", "scheme \"gopher\""},
        {"http:///path", "no host"},
        {"http://u@h/", "credentials"},
        {"http://h:0/", "port"},
        {"http://h:65536/", "port"},
        {"http://h:8x/", "port"},
        {"http://[::1/", "closing"},
        {"http://[zz]/", "IPv6"},
        {"http://h\tx/", "control"},
        {"http://h/a b", "space"},
        {"http://h%41/", "invalid character"},
        {"http://[::1]x/", "after the host"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        err[0] = '\0';
        if (uf_url_parse(bad[i].url, &u, err, sizeof(err)) == 0)
            fail_msg("\"%s\" parsed", bad[i].url);
        if (!strstr(err, bad[i].words))
            fail_msg("\"%s\": \"%s\" lacks \"%s\"", bad[i].url, err, bad[i].words);
    }
    char longurl[3000] = "http://h/";
    memset(longurl + 9, 'a', 2100);
    assert_int_equal(uf_url_parse(longurl, &u, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "2048"));
}

static void test_url_resolve(void **state)
{
    struct uf_url base;
    char err[128];
    assert_int_equal(uf_url_parse("https://h:8443/dir/page?x=1", &base, err, sizeof(err)), 0);
    const struct {
        const char *loc, *want;
    } cases[] = {
        {"http://other/x", "http://other/x"},
        {"//other:81/y", "https://other:81/y"},
        {"/abs?q", "https://h:8443/abs?q"},
        {"rel", "https://h:8443/dir/rel"},
        {"  sub/page2 ", "https://h:8443/dir/sub/page2"},
        {"?only=query", "https://h:8443/dir/page?only=query"},
        {"#frag", "https://h:8443/dir/page?x=1"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char *got = uf_url_resolve(&base, cases[i].loc);
        assert_non_null(got);
        if (strcmp(got, cases[i].want) != 0)
            fail_msg("\"%s\" resolved to \"%s\", not \"%s\"", cases[i].loc, got, cases[i].want);
        free(got);
    }
    assert_null(uf_url_resolve(&base, ""));
    assert_null(uf_url_resolve(&base, "/a\r\nb"));
    uf_url_release(&base);
}

static void test_dropped_headers(void **state)
{
    assert_true(uf_header_is_dropped("host"));
    assert_true(uf_header_is_dropped("Content-Length"));
    assert_true(uf_header_is_dropped("TRANSFER-ENCODING"));
    assert_true(uf_header_is_dropped("X-Forwarded-For"));
    assert_false(uf_header_is_dropped("X-Custom"));
    assert_false(uf_header_is_dropped("User-Agent"));
    assert_false(uf_header_is_dropped("Authorization"));
}

/* ---- Fetch's checks ----------------------------------------------------------- */

struct req_builder {
    uint8_t buf[1024];
    size_t len;
};

static void rb_varint(struct req_builder *b, uint64_t v)
{
    while (v >= 0x80) {
        b->buf[b->len++] = (uint8_t)(v | 0x80);
        v >>= 7;
    }
    b->buf[b->len++] = (uint8_t)v;
}

static void rb_string(struct req_builder *b, unsigned field, const char *s)
{
    rb_varint(b, field << 3 | 2);
    rb_varint(b, strlen(s));
    memcpy(b->buf + b->len, s, strlen(s));
    b->len += strlen(s);
}

static struct req_builder make_req(int method, const char *url)
{
    struct req_builder b = {.len = 0};
    rb_varint(&b, 1 << 3);
    rb_varint(&b, (uint64_t)(int64_t)method);
    rb_string(&b, 2, url);
    return b;
}

static void rb_header(struct req_builder *b, const char *k, const char *v)
{
    rb_varint(b, 3 << 3 | 3);
    rb_string(b, 4, k);
    rb_string(b, 5, v);
    rb_varint(b, 3 << 3 | 4);
}

static void rb_deadline(struct req_builder *b, double d)
{
    rb_varint(b, 8 << 3 | 1);
    memcpy(b->buf + b->len, &d, 8); /* little-endian host */
    b->len += 8;
}

static struct af_result fetch(void *st, const struct req_builder *b)
{
    return svc_call_raw(&af_service_urlfetch, st, "Fetch", "req-1", b->buf, b->len);
}

static void expect_app_error(void *st, const struct req_builder *b, int code, const char *words)
{
    struct af_result res = fetch(st, b);
    if (res.kind != AF_RESULT_APP_ERROR || res.code != code)
        fail_msg("kind %d code %d (%s), wanted application error %d", res.kind, res.code,
                 res.detail ? res.detail : "", code);
    if (!strstr(res.detail, words))
        fail_msg("\"%s\" lacks \"%s\"", res.detail, words);
    svc_result_free(&res);
}

/* A deferred result: the fetch is built and not run (cancel frees it). */
static struct uf_fetch *expect_deferred(void *st, const struct req_builder *b)
{
    struct af_result res = fetch(st, b);
    if (res.kind != AF_RESULT_DEFER)
        fail_msg("kind %d code %d: %s", res.kind, res.code, res.detail ? res.detail : "");
    assert_ptr_equal(res.defer_ops, &uf_fetch_ops);
    return res.defer_arg;
}

static int setup(void **state)
{
    *state = af_service_urlfetch.create(NULL);
    return 0;
}

static int teardown(void **state)
{
    af_service_urlfetch.destroy(*state);
    return 0;
}

static void test_fetch_checks(void **state)
{
    void *st = *state;
    struct req_builder b;

    b = make_req(7, "http://h/");
    expect_app_error(st, &b, UFERR(UNSPECIFIED_ERROR), "method 7");
    b = make_req(-1, "http://h/");
    expect_app_error(st, &b, UFERR(UNSPECIFIED_ERROR), "method -1");
    b = make_req(UF_GET, "file:///etc/passwd");
    expect_app_error(st, &b, UFERR(INVALID_URL), "scheme \"file\"");

    b = make_req(UF_GET, "http://h/");
    rb_header(&b, "X-Split", "a\nb");
    expect_app_error(st, &b, UFERR(FETCH_ERROR), "X-Split");
    b = make_req(UF_GET, "http://h/");
    rb_header(&b, "Bad:Name", "v");
    expect_app_error(st, &b, UFERR(FETCH_ERROR), "field name");
    b = make_req(UF_GET, "http://h/");
    rb_header(&b, "", "v");
    expect_app_error(st, &b, UFERR(FETCH_ERROR), "field name");

    b = make_req(UF_GET, "http://h/");
    rb_deadline(&b, 0);
    expect_app_error(st, &b, UFERR(DEADLINE_EXCEEDED), "passed");

    /* Garbage is a BAD_REQUEST rpc_error: the service has no code for it. */
    struct af_result res =
        svc_call_raw(&af_service_urlfetch, st, "Fetch", "r", (const uint8_t *)"\xff", 1);
    assert_int_equal(res.kind, AF_RESULT_RPC_ERROR);
    assert_int_equal(res.code, AF_RPC_BAD_REQUEST);
    svc_result_free(&res);
}

static void test_payload_limit(void **state)
{
    void *st = *state;
    size_t big = UF_MAX_PAYLOAD + 1;
    struct req_builder head = make_req(UF_POST, "http://h/");
    size_t len = head.len + 1 + 5 + big;
    uint8_t *buf = malloc(len);
    memcpy(buf, head.buf, head.len);
    size_t n = head.len;
    buf[n++] = 6 << 3 | 2;
    uint64_t v = big;
    for (; v >= 0x80; v >>= 7)
        buf[n++] = (uint8_t)(v | 0x80);
    buf[n++] = (uint8_t)v;
    memset(buf + n, 'p', big);
    n += big;
    struct af_result res = svc_call_raw(&af_service_urlfetch, st, "Fetch", "r", buf, n);
    assert_int_equal(res.kind, AF_RESULT_APP_ERROR);
    assert_int_equal(res.code, UFERR(PAYLOAD_TOO_LARGE));
    assert_non_null(strstr(res.detail, "10 MiB"));
    svc_result_free(&res);
    free(buf);
}

static void test_deadlines_and_defer(void **state)
{
    void *st = *state;
    struct req_builder b = make_req(UF_GET, "http://h:81/x");
    struct uf_fetch *f = expect_deferred(st, &b);
    assert_true(f->deadline_s == UF_DEFAULT_DEADLINE_S); /* 5 s unless the call says */
    assert_string_equal(f->original_url, "http://h:81/x");
    assert_null(f->ssl_ctx);
    uf_fetch_ops.cancel(f);

    b = make_req(UF_GET, "http://h/");
    rb_deadline(&b, 600);
    f = expect_deferred(st, &b);
    assert_true(f->deadline_s == UF_MAX_DEADLINE_S); /* capped at 60 s */
    uf_fetch_ops.cancel(f);

    b = make_req(UF_GET, "http://h/");
    rb_deadline(&b, 0.25);
    f = expect_deferred(st, &b);
    assert_true(f->deadline_s == 0.25);
    uf_fetch_ops.cancel(f);

    /* https takes a reference to the shared TLS context. */
    b = make_req(UF_GET, "https://h/");
    f = expect_deferred(st, &b);
    assert_non_null(f->ssl_ctx);
    uf_fetch_ops.cancel(f);
}

static void test_header_count_limit(void **state)
{
    void *st = *state;
    /* Exactly 256 headers pass; 257 do not. Built by hand: the small
     * builder holds 1 KiB. */
    size_t cap = 16 + 257 * 12;
    uint8_t *buf = malloc(cap);
    struct req_builder head = make_req(UF_GET, "http://h/");
    memcpy(buf, head.buf, head.len);
    size_t n = head.len;
    for (int i = 0; i < 257; i++) {
        const uint8_t one[] = {0x1b, 0x22, 0x01, 'A', 0x2a, 0x01, 'b', 0x1c};
        memcpy(buf + n, one, sizeof(one));
        n += sizeof(one);
    }
    struct af_result res = svc_call_raw(&af_service_urlfetch, st, "Fetch", "r", buf, n);
    assert_int_equal(res.kind, AF_RESULT_APP_ERROR);
    assert_int_equal(res.code, UFERR(FETCH_ERROR));
    assert_non_null(strstr(res.detail, "257"));
    svc_result_free(&res);

    res = svc_call_raw(&af_service_urlfetch, st, "Fetch", "r", buf, n - 8);
    assert_int_equal(res.kind, AF_RESULT_DEFER);
    uf_fetch_ops.cancel(res.defer_arg);
    free(buf);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_decode_go_request),
        cmocka_unit_test(test_decode_refuses),
        cmocka_unit_test(test_encode_matches_go),
        cmocka_unit_test(test_encode_cuts_to_fit),
        cmocka_unit_test(test_url_parse),
        cmocka_unit_test(test_url_resolve),
        cmocka_unit_test(test_dropped_headers),
        cmocka_unit_test_setup_teardown(test_fetch_checks, setup, teardown),
        cmocka_unit_test_setup_teardown(test_payload_limit, setup, teardown),
        cmocka_unit_test_setup_teardown(test_deadlines_and_defer, setup, teardown),
        cmocka_unit_test_setup_teardown(test_header_count_limit, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
