/* Unit tests for splitting heads and reading framing (proxy/h1.c), and for
 * decoding chunked bodies with the strict scanner (proxy/strict.c). */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <http_parser.h>
#include <stdio.h>
#include <string.h>

#include "proxy/h1.h"
#include "proxy/headers.h"
#include "proxy/strict.h"

/* What the front end does: the scanner checks the head and finds its end,
 * then h1 splits it. Returns the status (0 when read). */
static int read_request(const char *text, struct af_h1_request *rq, struct af_headers *h,
                        const char **why)
{
    struct af_strict s;
    af_strict_head(&s);
    ssize_t n = af_strict_scan(&s, text, strlen(text), why);
    if (n < 0 || s.mode != AF_STRICT_OFF)
        return -1;
    return af_h1_parse_request(text, (size_t)n, 256, rq, h, why);
}

static void test_request_line_and_fields(void **state)
{
    struct af_headers h;
    af_headers_init(&h);
    struct af_h1_request rq;
    const char *why = NULL;
    const char *text = "\r\nPOST /a/b?c=d HTTP/1.0\r\nHost: x\r\nX-Pad:  \t spaced\t value \t\r\n"
                       "X-Empty:\r\nX-Colon: a:b\r\n\r\nBODY";
    assert_int_equal(read_request(text, &rq, &h, &why), 0);
    assert_int_equal(rq.method, HTTP_POST);
    assert_int_equal(rq.target_len, strlen("/a/b?c=d"));
    assert_memory_equal(rq.target, "/a/b?c=d", rq.target_len);
    assert_int_equal(rq.major, 1);
    assert_int_equal(rq.minor, 0);
    assert_int_equal(h.n, 4);
    assert_string_equal(h.v[0].name, "Host");
    assert_string_equal(h.v[0].value, "x");
    assert_int_equal(h.v[0].id, AF_H_HOST);
    /* Leading and trailing whitespace is not part of a value; inner is. */
    assert_string_equal(h.v[1].value, "spaced\t value");
    assert_string_equal(h.v[2].value, "");
    assert_string_equal(h.v[3].value, "a:b");
    af_headers_release(&h);
}

static void test_every_known_method(void **state)
{
    static const unsigned ids[] = {HTTP_DELETE, HTTP_GET,   HTTP_HEAD,    HTTP_PUT,
                                   HTTP_OPTIONS, HTTP_PATCH, HTTP_MSEARCH, HTTP_SOURCE};
    for (size_t i = 0; i < sizeof(ids) / sizeof(ids[0]); i++) {
        char text[128];
        snprintf(text, sizeof(text), "%s / HTTP/1.1\r\nHost: x\r\n\r\n", http_method_str(ids[i]));
        struct af_headers h;
        af_headers_init(&h);
        struct af_h1_request rq;
        const char *why = NULL;
        assert_int_equal(read_request(text, &rq, &h, &why), 0);
        assert_int_equal(rq.method, ids[i]);
        af_headers_release(&h);
    }
}

static void test_bad_request_lines(void **state)
{
    static const struct {
        const char *text;
        int status;
    } cases[] = {
        {"FROB / HTTP/1.1\r\n\r\n", 501},    /* a token, but no known method */
        {"get / HTTP/1.1\r\n\r\n", 501},     /* methods are case-sensitive */
        {"G(T / HTTP/1.1\r\n\r\n", 400},     /* not a token */
        {" / HTTP/1.1\r\n\r\n", 400},        /* no method */
        {"GET  HTTP/1.1\r\n\r\n", 400},      /* no target */
        {"GET / HTTP/1.1 \r\n\r\n", 400},    /* a space after the version */
        {"GET /a b HTTP/1.1\r\n\r\n", 400},  /* a space in the target */
        {"GET / HTTP/1.10\r\n\r\n", 400},    /* two digits */
        {"GET / http/1.1\r\n\r\n", 400},     /* case of the protocol name */
        {"GET / HTTP1.1\r\n\r\n", 400},      /* no slash */
        {"GET /\r\n\r\n", 400},              /* HTTP/0.9 */
        {"GET / HTTP/2.0\r\n\r\n", 505},     /* another major version */
        {"PRI * HTTP/2.0\r\n\r\n", 505},     /* whatever the method */
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct af_headers h;
        af_headers_init(&h);
        struct af_h1_request rq;
        const char *why = NULL;
        int st = read_request(cases[i].text, &rq, &h, &why);
        if (st != cases[i].status)
            fail_msg("%s: got %d, want %d", cases[i].text, st, cases[i].status);
        assert_non_null(why);
        af_headers_release(&h);
    }
}

static void test_field_count_limit(void **state)
{
    char text[4096];
    size_t n = (size_t)snprintf(text, sizeof(text), "GET / HTTP/1.1\r\n");
    for (int i = 0; i < 4; i++)
        n += (size_t)snprintf(text + n, sizeof(text) - n, "X-%d: v\r\n", i);
    snprintf(text + n, sizeof(text) - n, "\r\n");
    struct af_headers h;
    af_headers_init(&h);
    struct af_h1_request rq;
    const char *why = NULL;
    assert_int_equal(af_h1_parse_request(text, strlen(text), 4, &rq, &h, &why), 0);
    af_headers_clear(&h);
    assert_int_equal(af_h1_parse_request(text, strlen(text), 3, &rq, &h, &why), 431);
    af_headers_release(&h);
}

static void test_status_lines(void **state)
{
    static const struct {
        const char *text;
        int status; /* 0: refused */
    } cases[] = {
        {"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", 200},
        {"HTTP/1.0 404 \r\n\r\n", 404},      /* empty reason */
        {"HTTP/1.1 204\r\n\r\n", 204},       /* no reason, no space */
        {"HTTP/1.1 599 Whatever it says\r\n\r\n", 599},
        {"HTTP/1.1 20 OK\r\n\r\n", 0},
        {"HTTP/1.1 2000 OK\r\n\r\n", 0},
        {"HTTP/1.1 099 OK\r\n\r\n", 0},
        {"HTTP/1.1 2x0 OK\r\n\r\n", 0},
        {"HTTP/1.1  200 OK\r\n\r\n", 0},
        {"HTTP/11 200 OK\r\n\r\n", 0},
        {"ICY 200 OK\r\n\r\n", 0},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct af_headers h;
        af_headers_init(&h);
        struct af_h1_response rs;
        const char *why = NULL;
        int r = af_h1_parse_response(cases[i].text, strlen(cases[i].text), 100, &rs, &h, &why);
        if (cases[i].status) {
            if (r != 0)
                fail_msg("%s: refused: %s", cases[i].text, why);
            assert_int_equal(rs.status, cases[i].status);
        } else if (r != -1) {
            fail_msg("%s: accepted", cases[i].text);
        }
        af_headers_release(&h);
    }
}

/* The framing of a head made of `fields` (CRLF-separated lines). */
static int framing(const char *fields, struct af_h1_framing *f, const char **why)
{
    char text[1024];
    snprintf(text, sizeof(text), "POST / HTTP/1.1\r\n%s\r\n", fields);
    struct af_headers h;
    af_headers_init(&h);
    struct af_h1_request rq;
    int st = read_request(text, &rq, &h, why);
    assert_int_equal(st, 0);
    st = af_h1_framing(&h, f, why);
    af_headers_release(&h);
    return st;
}

static void test_framing(void **state)
{
    static const struct {
        const char *fields;
        int status;
        int64_t length;
        bool chunked;
    } cases[] = {
        {"", 0, -1, false},
        {"Content-Length: 0\r\n", 0, 0, false},
        {"Content-Length: 12345\r\n", 0, 12345, false},
        {"content-length:   7  \r\n", 0, 7, false},
        {"Content-Length: 4611686018427387904\r\n", 0, INT64_C(4611686018427387904), false},
        {"Transfer-Encoding: chunked\r\n", 0, -1, true},
        {"Transfer-Encoding: CHUNKED\r\n", 0, -1, true},
        {"Transfer-Encoding: , chunked ,\r\n", 0, -1, true},
        {"Content-Length: 4611686018427387905\r\n", 400, 0, false},
        {"Content-Length: 18446744073709551621\r\n", 400, 0, false},
        {"Content-Length: 5, 5\r\n", 400, 0, false},
        {"Content-Length: -1\r\n", 400, 0, false},
        {"Content-Length: +5\r\n", 400, 0, false},
        {"Content-Length: 0x5\r\n", 400, 0, false},
        {"Content-Length:\r\n", 400, 0, false},
        {"Content-Length: 5\r\nContent-Length: 5\r\n", 400, 0, false},
        {"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n", 400, 0, false},
        {"Transfer-Encoding: chunked\r\nContent-Length: 5\r\n", 400, 0, false},
        {"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n", 400, 0, false},
        {"Transfer-Encoding: chunked, identity\r\n", 400, 0, false},
        {"Transfer-Encoding:\r\n", 400, 0, false},
        {"Transfer-Encoding: gzip, chunked\r\n", 501, 0, false},
        {"Transfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n", 501, 0, false},
        /* Names are compared whole: these frame nothing. */
        {"Transfer-Encodingx: chunked\r\nContent-Lengths: 5\r\n", 0, -1, false},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct af_h1_framing f;
        const char *why = NULL;
        int st = framing(cases[i].fields, &f, &why);
        if (st != cases[i].status)
            fail_msg("%s: got %d (%s), want %d", cases[i].fields, st, why ? why : "",
                     cases[i].status);
        if (st == 0) {
            assert_int_equal(f.length, cases[i].length);
            assert_int_equal(f.chunked, cases[i].chunked);
        } else {
            assert_non_null(why);
        }
    }
    /* The field to name in the 501, while the list is alive. */
    const char *text = "POST / HTTP/1.1\r\nX-A: b\r\nTransfer-Encoding: gzip\r\n"
                       "Transfer-Encoding: br, chunked\r\n\r\n";
    struct af_headers h;
    af_headers_init(&h);
    struct af_h1_request rq;
    struct af_h1_framing f;
    const char *why = NULL;
    assert_int_equal(read_request(text, &rq, &h, &why), 0);
    assert_int_equal(af_h1_framing(&h, &f, &why), 501);
    assert_non_null(f.unsupported);
    assert_string_equal(f.unsupported->value, "gzip");
    af_headers_release(&h);
}

static void test_persistence(void **state)
{
    struct af_h1_framing f;
    const char *why = NULL;
    assert_int_equal(framing("", &f, &why), 0);
    assert_true(af_h1_persists(1, 1, &f));
    assert_false(af_h1_persists(1, 0, &f));
    assert_int_equal(framing("Connection: Keep-Alive\r\n", &f, &why), 0);
    assert_true(af_h1_persists(1, 0, &f));
    assert_int_equal(framing("Connection: foo, close\r\n", &f, &why), 0);
    assert_false(af_h1_persists(1, 1, &f));
    assert_int_equal(framing("Connection: closed\r\n", &f, &why), 0);
    assert_true(af_h1_persists(1, 1, &f));
}

/* Decodes a chunked body fed n bytes at a time, as conn.c and upstream.c
 * do: the data, and whether the body ended (-1: refused). */
static int decode(const char *body, size_t len, size_t step, char *out, size_t *out_len)
{
    struct af_strict s;
    af_strict_chunked_decode(&s);
    *out_len = 0;
    size_t pos = 0;
    while (pos < len && s.mode != AF_STRICT_OFF) {
        size_t avail = len - pos < step ? len - pos : step;
        uint64_t left = af_strict_data_left(&s);
        if (left) {
            size_t take = avail < left ? avail : (size_t)left;
            memcpy(out + *out_len, body + pos, take);
            *out_len += take;
            af_strict_data_taken(&s, take);
            pos += take;
            continue;
        }
        const char *why = NULL;
        ssize_t r = af_strict_scan(&s, body + pos, avail, &why);
        if (r < 0)
            return -1;
        pos += (size_t)r;
    }
    return s.mode == AF_STRICT_OFF && pos == len;
}

static void test_chunked_decoding(void **state)
{
    static const char body[] = "5;ext=\"a;b\"\r\nhello\r\n6 \r\n world\r\n"
                               "0\r\nX-Trailer: dropped\r\n\r\n";
    for (size_t step = 1; step <= sizeof(body); step++) {
        char out[64];
        size_t n;
        assert_int_equal(decode(body, sizeof(body) - 1, step, out, &n), 1);
        assert_int_equal(n, 11);
        assert_memory_equal(out, "hello world", 11);
    }
    static const char *bad[] = {
        "5\r\nhelloXX0\r\n\r\n", "3\r\nhello\r\n0\r\n\r\n", "-5\r\nhello\r\n0\r\n\r\n",
        "5;a\nhello\r\n0\r\n\r\n", "10000000000000005\r\nhello\r\n0\r\n\r\n",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        char out[64];
        size_t n;
        if (decode(bad[i], strlen(bad[i]), 3, out, &n) != -1)
            fail_msg("accepted: %s", bad[i]);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_request_line_and_fields),
        cmocka_unit_test(test_every_known_method),
        cmocka_unit_test(test_bad_request_lines),
        cmocka_unit_test(test_field_count_limit),
        cmocka_unit_test(test_status_lines),
        cmocka_unit_test(test_framing),
        cmocka_unit_test(test_persistence),
        cmocka_unit_test(test_chunked_decoding),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
