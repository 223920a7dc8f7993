/*
 * apibench — memcache Get round trips through the C client library
 * (build/libappfront.a) over appfront's framed API socket.
 *
 *   apibench SOCKET THREADS SECONDS
 *
 * Sets one key (3-byte value, like redis-benchmark's default -d 3), then
 * THREADS threads call af_memcache_get on it back to back for SECONDS
 * (after a 0.5 s warm-up). The library pools connections (up to 16), one
 * call in flight per connection, so THREADS threads use THREADS connections.
 * Prints one JSON object: calls (measured), all_calls (with the warm-up and
 * the initial Set), errors, seconds, rps, p50_us, p99_us.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "apiserver/client/appfront.h"

#define MAX_SAMPLES (8u << 20)

struct worker {
    pthread_t tid;
    unsigned *lat_us; /* owned; one per call made while measuring */
    size_t n;
    size_t errors;
    size_t all; /* every call, warm-up included */
};

static atomic_int phase; /* 0 warm-up, 1 measuring, 2 stop */
static const char key[] = "key:__rand_int__";

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void *run(void *arg)
{
    struct worker *w = arg;
    struct af_client_error err;
    for (;;) {
        int ph = atomic_load_explicit(&phase, memory_order_relaxed);
        if (ph == 2)
            break;
        double t0 = now_s();
        uint8_t *val = NULL;
        size_t len = 0;
        int rc = af_memcache_get(NULL, key, sizeof(key) - 1, &val, &len, NULL, &err);
        double t1 = now_s();
        free(val);
        w->all++;
        if (ph != 1)
            continue;
        if (rc != 1) {
            w->errors++;
            if (w->errors == 1 && rc < 0)
                fprintf(stderr, "apibench: %s\n", err.detail);
            continue;
        }
        if (w->n < MAX_SAMPLES)
            w->lat_us[w->n++] = (unsigned)((t1 - t0) * 1e6 + 0.5);
    }
    return NULL;
}

static int cmp_u(const void *a, const void *b)
{
    unsigned x = *(const unsigned *)a, y = *(const unsigned *)b;
    return x < y ? -1 : x > y;
}

int main(int argc, char **argv)
{
    if (argc != 4) {
        fprintf(stderr, "usage: apibench SOCKET THREADS SECONDS\n");
        return 2;
    }
    int threads = atoi(argv[2]);
    double secs = atof(argv[3]);
    if (threads < 1 || threads > 16 || secs <= 0 || secs > 60) {
        fprintf(stderr, "apibench: 1..16 threads, 0..60 seconds\n");
        return 2;
    }
    af_client_set_socket_path(argv[1]);
    struct af_client_error err;
    if (af_memcache_set(NULL, key, sizeof(key) - 1, "xxx", 3, 0, 0, &err) < 0) {
        fprintf(stderr, "apibench: set failed: %s\n", err.detail);
        return 1;
    }
    struct worker *w = calloc((size_t)threads, sizeof(*w));
    for (int i = 0; i < threads; i++) {
        w[i].lat_us = malloc(MAX_SAMPLES / (unsigned)threads * sizeof(unsigned));
        if (!w[i].lat_us)
            abort();
        pthread_create(&w[i].tid, NULL, run, &w[i]);
    }
    usleep(500000);
    atomic_store(&phase, 1);
    double t0 = now_s();
    usleep((useconds_t)(secs * 1e6));
    atomic_store(&phase, 2);
    double elapsed = now_s() - t0;
    size_t total = 0, errors = 0, n_all = 0;
    for (int i = 0; i < threads; i++) {
        pthread_join(w[i].tid, NULL);
        total += w[i].n;
        errors += w[i].errors;
        n_all += w[i].all;
    }
    unsigned *all = malloc((total ? total : 1) * sizeof(unsigned));
    size_t k = 0;
    for (int i = 0; i < threads; i++) {
        memcpy(all + k, w[i].lat_us, w[i].n * sizeof(unsigned));
        k += w[i].n;
    }
    qsort(all, total, sizeof(unsigned), cmp_u);
    unsigned p50 = total ? all[total / 2] : 0;
    unsigned p99 = total ? all[(size_t)(total * 0.99)] : 0;
    printf("{\"calls\": %zu, \"all_calls\": %zu, \"errors\": %zu, \"seconds\": %.3f, "
           "\"rps\": %.0f, \"p50_us\": %u, \"p99_us\": %u}\n",
           total, n_all + 1, errors, elapsed, total / elapsed, p50, p99);
    return errors && !total ? 1 : 0;
}
