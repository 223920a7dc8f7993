/*
 * evmem — see evmem.h for why it exists.
 *
 * Size classes are powers of two from 256 B to 16 KiB, chosen from what
 * libevent allocates on the proxy's hot path (counted at 256 connections):
 * per request three 1 KiB and one 2 KiB buffer chain (libevent rounds every
 * chain, its header included, up to a power of two from 1 KiB) and about one
 * 136-byte struct evbuffer (class 256). Larger bodies use 4 to 16 KiB
 * chains. Anything else goes straight to malloc.
 *
 * A request of n bytes, 128 < n <= 16 KiB, takes a block of its class
 * 2^k >= n, or mallocs 2^k bytes when the list is empty. A freed block of
 * usable size u joins the list of the largest class 2^k <= u: any block on
 * a list holds at least its class's size, whoever allocated it.
 *
 * Each thread has its own lists (no locks). A list holds at most
 * CLASS_CAP_BYTES of blocks; beyond that free() takes them. A thread's
 * lists are freed by af_evmem_trim() and when the thread exits (a pthread
 * key destructor), so nothing is left for LeakSanitizer to report.
 */
#include "common/evmem.h"

#include <malloc.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>

#define MIN_SHIFT 8  /* 256 B */
#define MAX_SHIFT 14 /* 16 KiB */
#define N_CLASSES (MAX_SHIFT - MIN_SHIFT + 1)
/* A list's bound: 1024 blocks of 256 B, 256 of 1 KiB ... 16 of 16 KiB, so
 * at most 1.75 MiB for a thread's seven lists. At 256 connections the
 * proxy's lists peaked at 448 blocks of 256 B, 178 of 1 KiB and 81 of
 * 2 KiB. */
#define CLASS_CAP_BYTES (256 * 1024)

#if defined(__SANITIZE_ADDRESS__)
#define EVMEM_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define EVMEM_ASAN 1
#endif
#endif

struct block {
    struct block *next;
};

struct list {
    struct block *head;
    unsigned n;
};

enum thread_state { THREAD_NEW, THREAD_CACHING, THREAD_EXITED };

static __thread struct list lists[N_CLASSES];
static __thread enum thread_state this_thread;

static pthread_key_t exit_key;
static pthread_once_t exit_once = PTHREAD_ONCE_INIT;

static unsigned class_cap(int c)
{
    return CLASS_CAP_BYTES >> (c + MIN_SHIFT);
}

/* The class that serves a request of n bytes, or -1. */
static int class_of_request(size_t n)
{
    if (n <= (1u << (MIN_SHIFT - 1)) || n > (1u << MAX_SHIFT))
        return -1;
    int shift = 64 - __builtin_clzll((unsigned long long)n - 1); /* ceil(log2 n) */
    return shift - MIN_SHIFT;
}

/* The class a block of usable size u can serve, or -1. */
static int class_of_block(size_t u)
{
    if (u < (1u << MIN_SHIFT) || u >= (2u << MAX_SHIFT))
        return -1;
    int shift = 63 - __builtin_clzll((unsigned long long)u); /* floor(log2 u) */
    return shift - MIN_SHIFT;
}

static void thread_exit(void *arg)
{
    af_evmem_trim();
    /* A free from a later destructor goes to malloc, not to a list nobody
     * will free. */
    this_thread = THREAD_EXITED;
}

static void exit_key_create(void)
{
    pthread_key_create(&exit_key, thread_exit);
}

/* The first block a thread caches registers the thread for thread_exit. */
static bool thread_may_cache(void)
{
    if (this_thread == THREAD_CACHING)
        return true;
    if (this_thread == THREAD_EXITED)
        return false;
    pthread_once(&exit_once, exit_key_create);
    if (pthread_setspecific(exit_key, lists) != 0)
        return false;
    this_thread = THREAD_CACHING;
    return true;
}

void *af_evmem_malloc(size_t n)
{
    int c = class_of_request(n);
    if (c < 0)
        return malloc(n);
    struct list *l = &lists[c];
    struct block *b = l->head;
    if (!b)
        return malloc((size_t)1 << (c + MIN_SHIFT));
    l->head = b->next;
    l->n--;
    return b;
}

void af_evmem_free(void *p)
{
    if (!p)
        return;
    int c = class_of_block(malloc_usable_size(p));
    if (c < 0 || lists[c].n >= class_cap(c) || !thread_may_cache()) {
        free(p);
        return;
    }
    struct block *b = p;
    b->next = lists[c].head;
    lists[c].head = b;
    lists[c].n++;
}

void *af_evmem_realloc(void *p, size_t n)
{
    if (!p)
        return af_evmem_malloc(n);
    if (n == 0) {
        af_evmem_free(p);
        return NULL;
    }
    size_t have = malloc_usable_size(p);
    /* Still fits without wasting half of it: keep the block. */
    if (n <= have && n > have / 2)
        return p;
    if (class_of_request(n) < 0)
        return realloc(p, n);
    void *q = af_evmem_malloc(n);
    if (!q)
        return NULL;
    memcpy(q, p, n < have ? n : have);
    af_evmem_free(p);
    return q;
}

void af_evmem_trim(void)
{
    for (int c = 0; c < N_CLASSES; c++) {
        struct block *b = lists[c].head;
        while (b) {
            struct block *next = b->next;
            free(b);
            b = next;
        }
        lists[c].head = NULL;
        lists[c].n = 0;
    }
}

size_t af_evmem_cached(void)
{
    size_t n = 0;
    for (int c = 0; c < N_CLASSES; c++)
        n += lists[c].n;
    return n;
}

void af_evmem_install(void)
{
#ifndef EVMEM_ASAN
    event_set_mem_functions(af_evmem_malloc, af_evmem_realloc, af_evmem_free);
#endif
}
