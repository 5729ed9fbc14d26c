/* Sampled tracing (start(sample_interval=T)): the estimator, shared by
 * the tracer's tables (get_traced_memory, the peak) and by everything
 * that reads a snapshot; the sampler itself (sampling.c).
 *
 * Allocated bytes are sampled as a Poisson process of mean interval T
 * bytes: each thread counts down an exponentially distributed number of
 * bytes, and the allocation that takes the count to zero or below is
 * sampled (and a new count drawn). As the count is memoryless, a block
 * of s bytes is sampled with probability P(s) = 1 - exp(-s/T), whatever
 * the blocks around it. A sampled block is traced with its true size s,
 * and stands for 1/P(s) blocks of s bytes (Horvitz-Thompson): the
 * expected sum of its estimates over any set of blocks (a line, a file,
 * a traceback) is that set's true size and count. Tables and snapshots
 * keep the true size and the interval; the estimates are computed from
 * them where they are read, so that nothing else needs storing:
 *
 *   estimated size   ctm_sample_size(s, T) = round(s / P(s))
 *   estimated count  ctm_sample_count(s, T) = 1 / P(s)
 *
 * T == 0 is exact tracing: the size is s and the count 1. A block of 0
 * bytes is never sampled (P = 0); if one is met anyway (a loaded file),
 * it counts as one block of 0 bytes.
 */
#ifndef CTM_SAMPLING_H
#define CTM_SAMPLING_H

#include "util.h"                /* first: Python.h sets the features */

#include <math.h>
#include <stdint.h>

/* 1 / P(size): how many blocks of size bytes a sampled one stands for. */
static inline double
ctm_sample_count(uint64_t size, uint64_t interval)
{
    if (interval == 0 || size == 0) {
        return 1.0;
    }
    return -1.0 / expm1(-(double)size / (double)interval);
}

/* The estimated size of a sampled block of size bytes, to the nearest
 * byte: size itself when exact (interval 0), else at least the interval
 * (a small block stands for about T / s blocks of s bytes). */
static inline uint64_t
ctm_sample_size(uint64_t size, uint64_t interval)
{
    if (interval == 0 || size == 0) {
        return size;
    }
    double est = (double)size * ctm_sample_count(size, interval);
    if (est >= 18446744073709549568.0) {    /* the largest double < 2^64 */
        return UINT64_MAX;
    }
    return (uint64_t)(est + 0.5);
}

/* ---- the sampler (sampling.c) ---- */

/* Per thread: bytes left before the next sample. The hot path of an
 * allocation of s bytes while sampling is
 *
 *     if ((ctm_sample_countdown -= (int64_t)s) > 0) -> not sampled
 *     else ctm_sample_take(s) decides (and draws the next count)
 *
 * A thread's first countdown is 0, so its first allocation goes to
 * ctm_sample_take, which draws it. */
extern CTM_TLS int64_t ctm_sample_countdown;

/* The countdown went to zero or below on an allocation of size bytes
 * (already subtracted): 1 if the allocation is sampled (then the next
 * count is drawn), 0 if not. A thread's first allocation, and its first
 * to reach here since sampling restarted, draws a count at the current
 * interval and is counted against it afresh (a count left over from an
 * earlier interval only delays a thread's first sample after a restart:
 * the process stays a Poisson process from there on). interval > 0. */
int ctm_sample_take(uint64_t size, uint64_t interval);

/* Start sampling at a new interval: the threads' countdowns are drawn
 * again at their next allocation. seed 0: a seed from the clock and the
 * process id; otherwise the draws of each thread follow from seed (and
 * the thread's order of first allocation), for tests. With the GIL. */
void ctm_sample_restart(uint64_t seed);

/* Around a probe that must see its allocation traced (native.c): the
 * thread's next allocation that reaches ctm_tracer_sampled is sampled;
 * ctm_sample_resume(saved) puts the thread's countdown back as it was. */
int64_t ctm_sample_force_next(void);
void ctm_sample_resume(int64_t saved);

/* In a forked child (the tracer's atfork handler): new streams, so that
 * parent and child do not take the same samples. */
void ctm_sample_fork_child(void);

#endif /* CTM_SAMPLING_H */
