/* Unit tests for common/evmem.c: size classes, realloc across classes, the
 * caps, trimming and frees on another thread. The .c is included to reach
 * the lists and class_cap(). */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <malloc.h>
#include <pthread.h>
#include <string.h>

#include "common/evmem.c"

static int setup(void **state)
{
    af_evmem_trim();
    return 0;
}

static void fill(unsigned char *p, size_t n, unsigned char seed)
{
    for (size_t i = 0; i < n; i++)
        p[i] = (unsigned char)(seed + i);
}

static void assert_filled(const unsigned char *p, size_t n, unsigned char seed)
{
    for (size_t i = 0; i < n; i++)
        assert_int_equal(p[i], (unsigned char)(seed + i));
}

static void test_classes(void **state)
{
    assert_int_equal(class_of_request(128), -1);
    assert_int_equal(class_of_request(129), 0);
    assert_int_equal(class_of_request(256), 0);
    assert_int_equal(class_of_request(257), 1);
    assert_int_equal(class_of_request(1024), 2);
    assert_int_equal(class_of_request(16384), N_CLASSES - 1);
    assert_int_equal(class_of_request(16385), -1);
    assert_int_equal(class_of_block(255), -1);
    assert_int_equal(class_of_block(256), 0);
    assert_int_equal(class_of_block(1032), 2);
    assert_int_equal(class_of_block(2047), 2);
    assert_int_equal(class_of_block(32767), N_CLASSES - 1);
    assert_int_equal(class_of_block(32768), -1);
}

/* What libevent allocates (a 136-byte struct evbuffer, chains of 1 to
 * 16 KiB) comes back from the list it was freed to. */
static void test_round_trip(void **state)
{
    static const size_t sizes[] = {129, 136, 256, 500, 1024, 2048, 4096, 8192, 16384};
    for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
        size_t n = sizes[i];
        unsigned char *p = af_evmem_malloc(n);
        assert_non_null(p);
        assert_true(malloc_usable_size(p) >= n);
        assert_int_equal((uintptr_t)p % 16, 0);
        fill(p, n, (unsigned char)i);
        af_evmem_free(p);
        assert_int_equal(af_evmem_cached(), 1);
        unsigned char *q = af_evmem_malloc(n);
        assert_ptr_equal(q, p);
        assert_int_equal(af_evmem_cached(), 0);
        fill(q, n, (unsigned char)i); /* the whole request is usable */
        af_evmem_free(q);
        af_evmem_trim();
    }
}

/* Sizes outside the classes, and blocks that plain malloc made, go to and
 * from malloc; any malloc block may be freed here and vice versa. */
static void test_other_sizes_and_plain_malloc(void **state)
{
    void *small = af_evmem_malloc(64);
    void *big = af_evmem_malloc(100000);
    assert_non_null(small);
    assert_non_null(big);
    af_evmem_free(small);
    af_evmem_free(big);
    assert_int_equal(af_evmem_cached(), 0);

    void *m = malloc(3000); /* usable >= 2 KiB: joins the 2 KiB list */
    af_evmem_free(m);
    assert_int_equal(lists[class_of_request(2048)].n, 1);
    void *c = af_evmem_malloc(2048);
    assert_ptr_equal(c, m);
    free(c); /* an evmem block is a malloc block */
    af_evmem_free(NULL);
    assert_int_equal(af_evmem_cached(), 0);
}

static void test_realloc_across_classes(void **state)
{
    unsigned char *p = af_evmem_realloc(NULL, 200);
    assert_non_null(p);
    fill(p, 200, 7);
    /* Grows into the 4 KiB class; the 256-byte block is cached. */
    unsigned char *q = af_evmem_realloc(p, 3000);
    assert_non_null(q);
    assert_filled(q, 200, 7);
    assert_int_equal(lists[0].n, 1);
    fill(q, 3000, 9);
    /* Still fits without wasting half: the same block. */
    assert_ptr_equal(af_evmem_realloc(q, 2500), q);
    /* Shrinks into the 512-byte class, keeping the first 400 bytes. */
    unsigned char *r = af_evmem_realloc(q, 400);
    assert_non_null(r);
    assert_ptr_not_equal(r, q);
    assert_filled(r, 400, 9);
    assert_int_equal(lists[class_of_request(4096)].n, 1);
    /* Grows past the classes: plain realloc. */
    unsigned char *s = af_evmem_realloc(r, 100000);
    assert_non_null(s);
    assert_filled(s, 400, 9);
    /* realloc(p, 0) frees. */
    assert_null(af_evmem_realloc(s, 0));
    af_evmem_trim();
    assert_int_equal(af_evmem_cached(), 0);
}

static void test_cap_and_trim(void **state)
{
    int c = class_of_request(1024);
    unsigned cap = class_cap(c);
    assert_true(cap >= 16);
    size_t n = cap + 10;
    void **blocks = calloc(n, sizeof(*blocks));
    assert_non_null(blocks);
    for (size_t i = 0; i < n; i++)
        blocks[i] = af_evmem_malloc(1024);
    for (size_t i = 0; i < n; i++)
        af_evmem_free(blocks[i]);
    assert_int_equal(lists[c].n, cap);
    assert_int_equal(af_evmem_cached(), cap);
    free(blocks);
    af_evmem_trim();
    assert_int_equal(af_evmem_cached(), 0);
    assert_null(lists[c].head);
}

#define CROSS_BLOCKS 8

struct cross {
    void *from_main[CROSS_BLOCKS];
    void *from_thread;
    size_t cached_in_thread;
};

static void *cross_thread(void *arg)
{
    struct cross *x = arg;
    for (int i = 0; i < CROSS_BLOCKS; i++)
        af_evmem_free(x->from_main[i]);
    x->cached_in_thread = af_evmem_cached();
    x->from_thread = af_evmem_malloc(2048);
    return NULL; /* the key destructor frees this thread's lists */
}

/* A block freed on another thread joins that thread's lists, which are
 * freed when it exits; a block allocated there may be freed here. */
static void test_cross_thread(void **state)
{
    struct cross x = {0};
    pthread_t t;
    /* Once first, so that what a first thread costs the main arena
     * (thread descriptor, arena setup) is not counted below. */
    assert_int_equal(pthread_create(&t, NULL, cross_thread, &x), 0);
    assert_int_equal(pthread_join(t, NULL), 0);
    af_evmem_free(x.from_thread);
    af_evmem_trim();
    for (int i = 0; i < CROSS_BLOCKS; i++)
        x.from_main[i] = af_evmem_malloc(4096);
    struct mallinfo2 before = mallinfo2();
    assert_int_equal(pthread_create(&t, NULL, cross_thread, &x), 0);
    assert_int_equal(pthread_join(t, NULL), 0);
    assert_int_equal(x.cached_in_thread, CROSS_BLOCKS);
    assert_int_equal(af_evmem_cached(), 0);
    af_evmem_free(x.from_thread);
    assert_int_equal(af_evmem_cached(), 1);
    af_evmem_trim();
#ifndef EVMEM_ASAN
    /* The blocks came from the main arena and went back to it when the
     * thread exited (ASan's allocator does not report through mallinfo2;
     * LeakSanitizer checks the same there). */
    struct mallinfo2 after = mallinfo2();
    assert_true(before.uordblks - after.uordblks >= CROSS_BLOCKS * 4096);
#else
    (void)before;
#endif
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_classes),
        cmocka_unit_test_setup(test_round_trip, setup),
        cmocka_unit_test_setup(test_other_sizes_and_plain_malloc, setup),
        cmocka_unit_test_setup(test_realloc_across_classes, setup),
        cmocka_unit_test_setup(test_cap_and_trim, setup),
        cmocka_unit_test_setup(test_cross_thread, setup),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
