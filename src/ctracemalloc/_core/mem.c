/* The tracer's own memory: one growable array, and large arrays.
 *
 * A large array is a snapshot's traces array (16 bytes a trace): tens of
 * megabytes filled in one pass. Two things make that pass cheaper:
 * huge pages (fewer page faults and TLB misses), and the spare, the last
 * large array freed while spares are kept (while tracing), handed to the
 * next request of about its size. A program that hunts a leak takes
 * snapshot after snapshot of about the same size and drops the old
 * ones; without the spare each new array would come fresh from the
 * kernel, which zeroes and maps every page on first touch. The tracer
 * counts the spare in its memory and releases it when tracing stops or
 * its traces are cleared.
 *
 * Invariants: spare != NULL iff spare_bytes != 0; spare_bytes >=
 * SPARE_MIN; no spare while keep_spare is 0. The GIL protects all three.
 */
#include "util.h"

#include <stdio.h>
#include <string.h>
#if defined(__linux__)
#  include <sys/mman.h>
#endif

#define HUGE_PAGE ((size_t)2 << 20)
#define SPARE_MIN ((size_t)4 << 20)

static void *spare;
static size_t spare_bytes;
static int keep_spare;

#ifdef CTM_DEBUG
void
ctm_assert_failed(const char *expr, const char *file, int line)
{
    fprintf(stderr, "ctracemalloc: %s:%d: assertion failed: %s\n",
            file, line, expr);
    fflush(stderr);
    abort();
}
#endif

int
ctm_grow_slow(void **array, size_t *cap, size_t need, size_t elsize)
{
    size_t ncap = *cap ? *cap : 16;
    while (ncap < need) {
        if (ncap > SIZE_MAX / 2) {
            return -1;
        }
        ncap *= 2;
    }
    if (ncap > PY_SSIZE_T_MAX / elsize) {
        return -1;
    }
    void *p = ctm_realloc(*array, ncap * elsize);
    if (p == NULL) {
        return -1;
    }
    *array = p;
    *cap = ncap;
    return 0;
}

static void *
malloc_huge(size_t n)
{
#if defined(__linux__) && defined(MADV_HUGEPAGE)
    if (n >= 2 * HUGE_PAGE) {
        void *p;
        if (posix_memalign(&p, HUGE_PAGE, n) != 0) {
            return NULL;
        }
        /* The tail after the last whole huge page keeps small pages:
         * rounding up could cost up to 2 MiB of memory per array. */
        (void)madvise(p, n & ~(HUGE_PAGE - 1), MADV_HUGEPAGE);
        return p;
    }
#endif
    return ctm_malloc(n);
}

void *
ctm_large_new(size_t n, size_t *size)
{
    /* about the same size: a spare much larger would keep its pages */
    if (spare != NULL && spare_bytes >= n && spare_bytes - n <= n / 16) {
        void *p = spare;
        *size = spare_bytes;
        spare = NULL;
        spare_bytes = 0;
        return p;
    }
    ctm_large_release_spare();
    /* room for a little more than asked, so that the next array of a
     * program that grows a little still fits in this one; pages past
     * what is written are never touched, and cost nothing */
    *size = n + n / 64;
    return malloc_huge(*size);
}

void
ctm_large_free(void *p, size_t size)
{
    if (p != NULL && size >= SPARE_MIN && keep_spare) {
        ctm_free(spare);
        spare = p;
        spare_bytes = size;
    }
    else {
        ctm_free(p);
    }
    CTM_ASSERT((spare == NULL) == (spare_bytes == 0));
}

void
ctm_large_release_spare(void)
{
    ctm_free(spare);
    spare = NULL;
    spare_bytes = 0;
}

void
ctm_large_keep_spare(int keep)
{
    keep_spare = keep;
    if (!keep) {
        ctm_large_release_spare();
    }
}

size_t
ctm_large_spare_bytes(void)
{
    return spare_bytes;
}

void
ctm_touch_pages(void *p, size_t n)
{
    volatile char *c = p;
    for (size_t i = 0; i < n; i += 4096) {
        c[i] = 0;
    }
}
