/*
 * evmem — per-thread free lists for libevent's allocations of common sizes.
 *
 * libevent allocates a buffer chain (1, 2, 4 ... KiB, header included) for
 * almost every read and write, and frees it as soon as it is drained. With
 * hundreds of exchanges in flight the chains are freed in bursts larger than
 * glibc's per-thread cache (7 blocks per size, nothing above 1 KiB), so most
 * of them went through _int_malloc/_int_free: about 11% of the proxy's
 * user-space instructions at 256 connections (bench/notes.md, item 5).
 * af_evmem_install() makes libevent allocate through the functions below,
 * which keep freed blocks of a few size classes on bounded per-thread lists.
 *
 * Every block is an ordinary malloc() block: it is classified on free by
 * malloc_usable_size(), not by a header. So memory libevent hands out (the
 * line evbuffer_readln() returns) may still be released with free(), and
 * free() blocks may reach af_evmem_free(); a block may be freed on any
 * thread (it joins that thread's list, or goes back to malloc).
 */
#ifndef AF_EVMEM_H
#define AF_EVMEM_H

#include <stddef.h>

/* Registers the functions below with event_set_mem_functions(). Must be
 * called before libevent's first allocation: first thing in main(). Does
 * nothing in AddressSanitizer builds, so that ASan's own allocator and
 * quarantine still catch a use of a freed chain. */
void af_evmem_install(void);

/* malloc/realloc/free with libevent's contract (realloc(p, 0) frees p and
 * returns NULL). Returned blocks belong to the caller and may be released
 * with af_evmem_free() or free(). NULL on failure, like malloc. */
void *af_evmem_malloc(size_t n);
void *af_evmem_realloc(void *p, size_t n);
void af_evmem_free(void *p);

/* Frees every block the calling thread keeps cached (call before
 * malloc_trim after a burst, so an idle server gives the memory back). A
 * thread's lists are also freed when the thread exits. */
void af_evmem_trim(void);

/* Blocks the calling thread keeps cached, all classes together. */
size_t af_evmem_cached(void);

#endif
