/*
 * Unit tests of the multipart/form-data parser (proxy/multipart.c) and of
 * the upload's rewriting (proxy/blob.c, included to reach its static
 * functions): every body is fed whole, a byte at a time and split at every
 * position, and must give the same parts; malformed bodies fail with their
 * reason; the forwarded form, the creation time and Range parsing are
 * checked byte for byte.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "proxy/blob.c"

/* What the callbacks saw, as text: "[name|filename|type]data/" per part. */
struct seen {
    char out[8192];
    size_t len;
    int stop_at; /* part_begin returns 7 at this part (0: never) */
    int parts;
};

static void put(struct seen *s, const char *p, size_t n)
{
    assert_true(s->len + n < sizeof(s->out));
    memcpy(s->out + s->len, p, n);
    s->len += n;
    s->out[s->len] = '\0';
}

static int t_begin(void *arg, const struct af_mp_part *p)
{
    struct seen *s = arg;
    if (++s->parts == s->stop_at)
        return 7;
    char b[3000];
    snprintf(b, sizeof(b), "[%s|%s|%s]", p->name ? p->name : "-",
             p->filename ? p->filename : "-", p->content_type ? p->content_type : "-");
    put(s, b, strlen(b));
    return 0;
}

static int t_data(void *arg, const char *d, size_t n)
{
    put(arg, d, n);
    return 0;
}

static int t_end(void *arg)
{
    put(arg, "/", 1);
    return 0;
}

static const struct af_mp_ops t_ops = {.part_begin = t_begin, .part_data = t_data, .part_end = t_end};

/* Feeds body in pieces of `step` bytes (0: split once at `at`). Returns
 * af_mp_feed's last result; *done whether the close delimiter was read. */
static int run(const char *boundary, const char *body, size_t len, size_t step, size_t at,
               struct seen *s, bool *done, const char **why)
{
    struct af_mp m;
    af_mp_init(&m, boundary, strlen(boundary));
    int r = 0;
    if (step == 0) {
        r = af_mp_feed(&m, &t_ops, s, body, at);
        if (r == 0)
            r = af_mp_feed(&m, &t_ops, s, body + at, len - at);
    } else {
        for (size_t i = 0; i < len && r == 0; i += step)
            r = af_mp_feed(&m, &t_ops, s, body + i, len - i < step ? len - i : step);
    }
    *done = af_mp_done(&m);
    if (why)
        *why = m.why;
    af_mp_release(&m);
    return r;
}

/* The body must parse to `want` whatever way it is cut. */
static void expect_parts(const char *boundary, const char *body, size_t len, const char *want)
{
    for (size_t step = 1; step <= len; step = step < 8 ? step + 1 : step * 2) {
        struct seen s = {0};
        bool done;
        assert_int_equal(run(boundary, body, len, step, 0, &s, &done, NULL), 0);
        assert_true(done);
        assert_string_equal(s.out, want);
    }
    for (size_t at = 0; at <= len; at++) {
        struct seen s = {0};
        bool done;
        assert_int_equal(run(boundary, body, len, 0, at, &s, &done, NULL), 0);
        assert_true(done);
        assert_string_equal(s.out, want);
    }
}

#define BODY(lit) lit, sizeof(lit) - 1

static void test_parts_in_any_pieces(void **state)
{
    expect_parts("XyZ", BODY("--XyZ\r\n"
                             "Content-Disposition: form-data; name=\"title\"\r\n"
                             "\r\n"
                             "hello\r\n"
                             "--XyZ\r\n"
                             "Content-Disposition: form-data; name=\"f\"; filename=\"a b.txt\"\r\n"
                             "Content-Type: text/plain\r\n"
                             "\r\n"
                             "line1\r\n--XyY not the end\r\n-\r\r\n\r\n--Xy\r\n"
                             "--XyZ--\r\n"
                             "epilogue --XyZ ignored"),
                 "[title|-|-]hello/[f|a b.txt|text/plain]line1\r\n--XyY not the end\r\n-\r\r\n"
                 "\r\n--Xy/");
    /* A preamble, transport padding after a delimiter, no headers, an
     * empty part, and a filename with an escaped quote. */
    expect_parts("b", BODY("preamble\r\n--b  \r\n"
                           "\r\n"
                           "no headers\r\n"
                           "--b\r\n"
                           "content-disposition: form-data; name=e; filename=\"q\\\"x\"\r\n"
                           "\r\n"
                           "\r\n"
                           "--b--"),
                 "[-|-|-]no headers/[e|q\"x|-]/");
}

static void expect_error(const char *boundary, const char *body, size_t len, const char *why_has)
{
    struct seen s = {0};
    bool done;
    const char *why = NULL;
    assert_int_equal(run(boundary, body, len, 1, 0, &s, &done, &why), -1);
    assert_false(done);
    assert_non_null(why);
    assert_non_null(strstr(why, why_has));
}

static void test_malformed(void **state)
{
    expect_error("b", BODY("--b\r\nA: 1\r\n\r\nx\r\n--bzz"), "something other");
    expect_error("b", BODY("--b\r\nA: 1\r\n\r\nx\r\n--b-x"), "single -");
    expect_error("b", BODY("--b\rx"), "CR without LF");
    expect_error("b", BODY("--b--"), "no parts");
    expect_error("b", BODY("--b\r\nA: 1\r\n folded\r\n\r\n"), "folded");
    expect_error("b", BODY("--b\r\nno colon\r\n\r\n"), "no field name");
    expect_error("b", BODY("--b\r\nA: 1\nB: 2\r\n\r\n"), "CRLF");
    expect_error("b", BODY("--b\r\nContent-Disposition: form-data; name=\"x\r\n\r\n"),
                 "name parameter");
    char big[AF_MP_MAX_HEADERS + 64] = "--b\r\nA: ";
    size_t n = strlen(big);
    memset(big + n, 'v', sizeof(big) - n);
    expect_error("b", big, sizeof(big), "8 KiB");

    /* A body that stops early is not an error, just not done. */
    struct seen s = {0};
    bool done = true;
    assert_int_equal(run("b", BODY("--b\r\n\r\ndata\r\n--"), 1, 0, &s, &done, NULL), 0);
    assert_false(done);

    /* A callback's refusal stops the parser with its value. */
    struct seen s2 = {.stop_at = 2};
    assert_int_equal(run("b", BODY("--b\r\n\r\none\r\n--b\r\n\r\ntwo\r\n--b--"), 3, 0, &s2, &done,
                         NULL),
                     7);
}

static void test_params_and_boundary(void **state)
{
    char out[64];
    assert_int_equal(af_mp_param("form-data; name=\"a;b\"; filename=x.txt", "filename", out,
                                 sizeof(out)),
                     1);
    assert_string_equal(out, "x.txt");
    assert_int_equal(af_mp_param("form-data; NAME=\"a;b\"", "name", out, sizeof(out)), 1);
    assert_string_equal(out, "a;b");
    assert_int_equal(af_mp_param("form-data; name=\"a\"", "filename", out, sizeof(out)), 0);
    assert_int_equal(af_mp_param("form-data; filename=\"", "filename", out, sizeof(out)), -1);
    assert_int_equal(af_mp_param("form-data; filename=\"\"", "filename", out, sizeof(out)), 1);
    assert_string_equal(out, "");
    assert_int_equal(af_mp_param("x; a=0123456789", "a", out, 5), -1);

    char b[AF_MP_MAX_BOUNDARY + 1];
    const char *why = NULL;
    assert_int_equal(af_mp_boundary("multipart/form-data; boundary=----WebKitX", b, &why), 11);
    assert_string_equal(b, "----WebKitX");
    assert_int_equal(af_mp_boundary("Multipart/Form-Data;boundary=\"a b:c\"", b, &why), 5);
    assert_int_equal(af_mp_boundary("multipart/mixed; boundary=x", b, &why), -1);
    assert_non_null(strstr(why, "not multipart/form-data"));
    assert_int_equal(af_mp_boundary("multipart/form-data", b, &why), -1);
    assert_non_null(strstr(why, "no boundary"));
    assert_int_equal(af_mp_boundary("multipart/form-data; boundary=\"a<b\"", b, &why), -1);
    assert_int_equal(af_mp_boundary("multipart/form-data; boundary=\"ab \"", b, &why), -1);
    assert_int_equal(af_mp_boundary("application/x-www-form-urlencoded", b, &why), -1);
}

/* The forwarded form: a field as it came, a file as message/external-body
 * with the headers blobstore.ParseUpload reads. */
static void test_forward_body(void **state)
{
    struct af_blob_op op = {0};
    snprintf(op.boundary, sizeof(op.boundary), "BB");
    struct up_part parts[2] = {0};
    parts[0].raw = evbuffer_new();
    evbuffer_add_printf(parts[0].raw, "Content-Type: text/plain\r\n"
                                      "Content-Disposition: form-data; name=\"t\"\r\n\r\nhi\r\n");
    parts[1].file = true;
    parts[1].size = 11;
    snprintf(parts[1].md5_hex, sizeof(parts[1].md5_hex), "5eb63bbbe01eeed093cb22bb8f5acdc3");
    parts[1].disposition = "form-data; name=\"f\"; filename=\"h.txt\"";
    parts[1].content_type = "text/plain";
    op.parts = parts;
    op.n_parts = 2;
    char *keys[1] = {"KEY1"};
    /* 2011-03-15 21:38:34.712136 UTC */
    struct evbuffer *b = forward_body(&op, keys, 1, INT64_C(1300225114712136));
    size_t n = evbuffer_get_length(b);
    char *got = strndup((const char *)evbuffer_pullup(b, (ev_ssize_t)n), n);
    assert_string_equal(got,
                        "--BB\r\n"
                        "Content-Type: text/plain\r\n"
                        "Content-Disposition: form-data; name=\"t\"\r\n\r\nhi\r\n"
                        "--BB\r\n"
                        "Content-Type: message/external-body; blob-key=\"KEY1\"; "
                        "access-type=\"X-AppEngine-BlobKey\"\r\n"
                        "Content-Disposition: form-data; name=\"f\"; filename=\"h.txt\"\r\n\r\n"
                        "Content-Type: text/plain\r\n"
                        "Content-Length: 11\r\n"
                        "Content-MD5: NWViNjNiYmJlMDFlZWVkMDkzY2IyMmJiOGY1YWNkYzM=\r\n"
                        "X-AppEngine-Upload-Creation: 2011-03-15 21:38:34.712136\r\n"
                        "Content-Disposition: form-data; name=\"f\"; filename=\"h.txt\"\r\n\r\n\r\n"
                        "--BB--\r\n");
    free(got);
    evbuffer_free(b);
    evbuffer_free(parts[0].raw);
}

static void test_ranges(void **state)
{
    int64_t s, e;
    assert_int_equal(parse_range("bytes=0-9", 100, &s, &e), 1);
    assert_true(s == 0 && e == 10);
    assert_int_equal(parse_range("bytes=90-200", 100, &s, &e), 1);
    assert_true(s == 90 && e == 100);
    assert_int_equal(parse_range("bytes=95-", 100, &s, &e), 1);
    assert_true(s == 95 && e == 100);
    assert_int_equal(parse_range("bytes=-10", 100, &s, &e), 1);
    assert_true(s == 90 && e == 100);
    assert_int_equal(parse_range("bytes=-1000", 100, &s, &e), 1);
    assert_true(s == 0 && e == 100);
    assert_int_equal(parse_range("bytes=100-", 100, &s, &e), 0);
    assert_int_equal(parse_range("bytes=5-4", 100, &s, &e), 0);
    assert_int_equal(parse_range("bytes=0-1,5-6", 100, &s, &e), 0);
    assert_int_equal(parse_range("items=0-1", 100, &s, &e), 0);
    assert_int_equal(parse_range("bytes=-0", 100, &s, &e), 0);
    assert_int_equal(parse_range("bytes=x-1", 100, &s, &e), 0);
    assert_int_equal(parse_range("bytes=0-", 0, &s, &e), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parts_in_any_pieces),
        cmocka_unit_test(test_malformed),
        cmocka_unit_test(test_params_and_boundary),
        cmocka_unit_test(test_forward_body),
        cmocka_unit_test(test_ranges),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
