/*
 * Unit tests of urlfetch's streaming gzip decoder (apiserver/services/
 * urlfetch_gzip.c): one member and several, fed whole and a byte at a time;
 * every way the content can be damaged or cut short; a "gzip bomb" that
 * must stop at the limit in memory and in time; and which responses the
 * service decodes at all (urlfetch_http.c, gzip_to_undo) and how the
 * Content-Length it then shows is cut to fit the reply.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>
#include <zlib.h>

#include "apiserver/services/urlfetch.c"
#include "apiserver/services/urlfetch_http.c"

/* Compresses n bytes into one gzip member (malloc'd, *out_len long). */
static uint8_t *gzip_member(const void *data, size_t n, size_t *out_len)
{
    z_stream z = {0};
    assert_int_equal(deflateInit2(&z, 9, Z_DEFLATED, 16 + MAX_WBITS, 9, Z_DEFAULT_STRATEGY), Z_OK);
    size_t cap = deflateBound(&z, n) + 64;
    uint8_t *out = malloc(cap);
    z.next_in = (Bytef *)data;
    z.avail_in = (uInt)n;
    z.next_out = out;
    z.avail_out = (uInt)cap;
    assert_int_equal(deflate(&z, Z_FINISH), Z_STREAM_END);
    *out_len = z.total_out;
    deflateEnd(&z);
    return out;
}

/* The decoder's output and status over a whole input, fed in pieces of
 * `piece` bytes (0: all at once). */
struct decoded {
    enum uf_gunzip_status st;
    int end; /* uf_gunzip_end, when st was MORE */
    uint8_t *buf;
    size_t len, cap;
    char error[256];
};

static struct decoded decode(const uint8_t *in, size_t n, size_t piece, size_t max)
{
    struct decoded d = {.st = UF_GUNZIP_MORE};
    struct uf_gunzip *g = uf_gunzip_new();
    size_t step = piece ? piece : (n ? n : 1);
    for (size_t off = 0; off < n && d.st == UF_GUNZIP_MORE; off += step) {
        size_t k = n - off < step ? n - off : step;
        d.st = uf_gunzip_feed(g, in + off, k, &d.buf, &d.len, &d.cap, max);
    }
    d.end = d.st == UF_GUNZIP_MORE ? uf_gunzip_end(g) : -1;
    if (uf_gunzip_error(g))
        snprintf(d.error, sizeof(d.error), "%s", uf_gunzip_error(g));
    uf_gunzip_free(g);
    return d;
}

static const char text[] = "Hello from a gzip member. Hello from a gzip member. 0123456789";

static void test_one_member(void **state)
{
    size_t zn;
    uint8_t *z = gzip_member(text, sizeof(text) - 1, &zn);
    for (size_t piece = 0; piece <= 3; piece++) {
        struct decoded d = decode(z, zn, piece, UF_MAX_CONTENT);
        assert_int_equal(d.st, UF_GUNZIP_MORE);
        assert_int_equal(d.end, 0);
        assert_int_equal(d.len, sizeof(text) - 1);
        assert_memory_equal(d.buf, text, d.len);
        assert_null(d.error[0] ? d.error : NULL);
        free(d.buf);
    }
    free(z);

    /* No content at all (a 204, an empty body): nothing, and no error. */
    struct decoded d = decode(NULL, 0, 0, UF_MAX_CONTENT);
    assert_int_equal(d.end, 0);
    assert_int_equal(d.len, 0);
    free(d.buf);
}

static void test_multi_member_and_padding(void **state)
{
    size_t an, bn, en;
    uint8_t *a = gzip_member("first,", 6, &an);
    uint8_t *b = gzip_member("second", 6, &bn);
    uint8_t *e = gzip_member("", 0, &en); /* an empty member adds nothing */
    size_t n = an + 3 + en + bn + 5;
    uint8_t *all = calloc(1, n); /* the zero bytes are padding */
    memcpy(all, a, an);
    memcpy(all + an + 3, e, en);
    memcpy(all + an + 3 + en, b, bn);
    for (size_t piece = 0; piece <= 2; piece++) {
        struct decoded d = decode(all, n, piece, UF_MAX_CONTENT);
        assert_int_equal(d.st, UF_GUNZIP_MORE);
        assert_int_equal(d.end, 0);
        assert_int_equal(d.len, 12);
        assert_memory_equal(d.buf, "first,second", 12);
        free(d.buf);
    }

    /* A non-zero byte after a member must start another: junk is an error. */
    memcpy(all + an, "junk", 3);
    struct decoded d = decode(all, an + 3, 0, UF_MAX_CONTENT);
    assert_int_equal(d.st, UF_GUNZIP_BAD);
    assert_non_null(strstr(d.error, "after the first gzip member"));
    assert_int_equal(d.len, 6); /* what came before stays */
    free(d.buf);
    free(all);
    free(a);
    free(b);
    free(e);
}

static void test_truncated(void **state)
{
    size_t zn;
    uint8_t *z = gzip_member(text, sizeof(text) - 1, &zn);
    /* Every strict prefix is cut short: never success, never a crash. */
    for (size_t cut = 1; cut < zn; cut++) {
        struct decoded d = decode(z, cut, 0, UF_MAX_CONTENT);
        assert_int_equal(d.st, UF_GUNZIP_MORE);
        assert_int_equal(d.end, -1);
        assert_non_null(strstr(d.error, "cut short"));
        assert_true(d.len <= sizeof(text) - 1);
        free(d.buf);
    }
    free(z);
}

static void test_corrupt(void **state)
{
    size_t zn;
    uint8_t *z = gzip_member(text, sizeof(text) - 1, &zn);

    /* Not gzip at all. */
    struct decoded d = decode((const uint8_t *)"plain text, not gzip", 20, 0, UF_MAX_CONTENT);
    assert_int_equal(d.st, UF_GUNZIP_BAD);
    assert_non_null(strstr(d.error, "header"));
    free(d.buf);

    /* The CRC-32 of the trailer (RFC 1952 section 2.3.1) does not match. */
    z[zn - 8] ^= 0x55;
    d = decode(z, zn, 0, UF_MAX_CONTENT);
    assert_int_equal(d.st, UF_GUNZIP_BAD);
    assert_non_null(strstr(d.error, "check"));
    free(d.buf);
    z[zn - 8] ^= 0x55;

    /* Every single damaged byte: an error or (a byte zlib does not read,
     * such as the OS field) the right content; never anything else. */
    for (size_t i = 0; i < zn; i++) {
        for (int bit = 0; bit < 8; bit += 3) {
            z[i] ^= (uint8_t)(1 << bit);
            d = decode(z, zn, 7, UF_MAX_CONTENT);
            if (d.st == UF_GUNZIP_MORE && d.end == 0) {
                assert_int_equal(d.len, sizeof(text) - 1);
                assert_memory_equal(d.buf, text, d.len);
            } else {
                assert_true(d.error[0] != '\0');
            }
            free(d.buf);
            z[i] ^= (uint8_t)(1 << bit);
        }
    }

    /* Once failed, it stays failed. */
    struct uf_gunzip *g = uf_gunzip_new();
    uint8_t *buf = NULL;
    size_t len = 0, cap = 0;
    assert_int_equal(uf_gunzip_feed(g, "xx", 2, &buf, &len, &cap, 100), UF_GUNZIP_BAD);
    assert_int_equal(uf_gunzip_feed(g, z, zn, &buf, &len, &cap, 100), UF_GUNZIP_BAD);
    assert_int_equal(uf_gunzip_end(g), -1);
    uf_gunzip_free(g);
    free(buf);
    free(z);
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void test_bomb(void **state)
{
    /* 256 MiB of zeros: about 256 KiB compressed, eight times the limit
     * decoded. The decoder stops at the limit: the buffer never grows past
     * it, and the rest is not decoded. */
    size_t big = 256u << 20;
    z_stream zs = {0};
    assert_int_equal(deflateInit2(&zs, 9, Z_DEFLATED, 16 + MAX_WBITS, 9, Z_DEFAULT_STRATEGY), Z_OK);
    static uint8_t zeros[1 << 20];
    size_t cap_z = 1 << 20, zn = 0;
    uint8_t *z = malloc(cap_z);
    for (size_t done = 0; done < big; done += sizeof(zeros)) {
        zs.next_in = zeros;
        zs.avail_in = sizeof(zeros);
        int flush = done + sizeof(zeros) >= big ? Z_FINISH : Z_NO_FLUSH;
        do {
            zs.next_out = z + zn;
            zs.avail_out = (uInt)(cap_z - zn);
            deflate(&zs, flush);
            zn = cap_z - zs.avail_out;
        } while (zs.avail_in > 0);
    }
    deflateEnd(&zs);
    assert_true(zn < 1 << 20);

    double t0 = now_s();
    struct decoded d = decode(z, zn, 16384, UF_MAX_CONTENT);
    double took = now_s() - t0;
    assert_int_equal(d.st, UF_GUNZIP_FULL);
    assert_int_equal(d.len, UF_MAX_CONTENT);
    assert_int_equal(d.cap, UF_MAX_CONTENT);
    assert_true(took < 10.0); /* about 0.1 s; far more under the sanitizers */
    free(d.buf);

    /* Once full, it stays full. */
    struct uf_gunzip *g = uf_gunzip_new();
    uint8_t *buf = NULL;
    size_t len = 0, cap = 0;
    assert_int_equal(uf_gunzip_feed(g, z, zn, &buf, &len, &cap, 4096), UF_GUNZIP_FULL);
    assert_int_equal(len, 4096);
    assert_int_equal(uf_gunzip_feed(g, z, 10, &buf, &len, &cap, 4096), UF_GUNZIP_FULL);
    uf_gunzip_free(g);
    free(buf);
    free(z);
}

static void test_limit_is_exact(void **state)
{
    /* Content exactly as long as the limit is whole; one byte more is cut. */
    static uint8_t data[20001];
    for (size_t i = 0; i < sizeof(data); i++)
        data[i] = (uint8_t)(i * 7 + i / 100);
    size_t zn;
    uint8_t *z = gzip_member(data, 20000, &zn);
    struct decoded d = decode(z, zn, 0, 20000);
    assert_int_equal(d.st, UF_GUNZIP_MORE);
    assert_int_equal(d.end, 0);
    assert_int_equal(d.len, 20000);
    assert_memory_equal(d.buf, data, 20000);
    free(d.buf);
    free(z);

    z = gzip_member(data, 20001, &zn);
    for (size_t piece = 0; piece <= 1; piece++) {
        d = decode(z, zn, piece, 20000);
        assert_int_equal(d.st, UF_GUNZIP_FULL);
        assert_int_equal(d.len, 20000);
        assert_memory_equal(d.buf, data, 20000);
        free(d.buf);
    }
    free(z);
}

/* ---- which responses are decoded (urlfetch_http.c) --------------------------- */

static bool undo(bool ask, int status, const char *const *fields)
{
    struct uf_fetch f = {.ask_gzip = ask, .status = status};
    struct uf_header h[4];
    for (; fields[2 * f.n_hdrs]; f.n_hdrs++)
        h[f.n_hdrs] =
            (struct uf_header){(char *)fields[2 * f.n_hdrs], (char *)fields[2 * f.n_hdrs + 1]};
    f.hdrs = h;
    f.req.follow_redirects = true;
    return gzip_to_undo(&f);
}

static void test_which_responses(void **state)
{
    const char *gzip[] = {"Content-Encoding", "gzip", NULL};
    const char *upper[] = {"content-encoding", " GZIP ", NULL};
    const char *xgzip[] = {"Content-Encoding", "x-gzip", NULL};
    const char *br[] = {"Content-Encoding", "br", NULL};
    const char *deflate[] = {"Content-Encoding", "deflate", NULL};
    const char *layered[] = {"Content-Encoding", "gzip, br", NULL};
    const char *twice[] = {"Content-Encoding", "gzip", "Content-Encoding", "gzip", NULL};
    const char *none[] = {"Content-Type", "text/plain", NULL};
    const char *moved[] = {"Content-Encoding", "gzip", "Location", "/x", NULL};
    assert_true(undo(true, 200, gzip));
    assert_true(undo(true, 404, upper));
    assert_true(undo(true, 200, xgzip));
    assert_false(undo(false, 200, gzip)); /* the app chose its Accept-Encoding */
    assert_false(undo(true, 200, br));
    assert_false(undo(true, 200, deflate));
    assert_false(undo(true, 200, layered));
    assert_false(undo(true, 200, twice));
    assert_false(undo(true, 200, none));
    assert_false(undo(true, 100, gzip));  /* an interim answer */
    assert_false(undo(true, 302, moved)); /* followed: its body is dropped */
    assert_true(undo(true, 302, gzip));   /* no Location: the app gets it */
}

static void test_content_fit(void **state)
{
    static uint8_t content[5000];
    struct uf_header h = {"Content-Length", "5000"};
    struct uf_response r = {.status = 200,
                            .headers = &h,
                            .n_headers = 1,
                            .content = content,
                            .content_len = sizeof(content)};
    assert_int_equal(uf_response_content_fit(&r, 1 << 20), sizeof(content));
    size_t fit = uf_response_content_fit(&r, 1000);
    assert_true(fit > 900 && fit < 1000);
    uint8_t *got;
    size_t len = uf_response_encode(&r, 1000, &got);
    assert_true(len <= 1000);
    size_t kept = (got[1] & 0x7f) | (size_t)got[2] << 7;
    assert_int_equal(kept, fit);
    free(got);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_one_member),
        cmocka_unit_test(test_multi_member_and_padding),
        cmocka_unit_test(test_truncated),
        cmocka_unit_test(test_corrupt),
        cmocka_unit_test(test_bomb),
        cmocka_unit_test(test_limit_is_exact),
        cmocka_unit_test(test_which_responses),
        cmocka_unit_test(test_content_fit),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
