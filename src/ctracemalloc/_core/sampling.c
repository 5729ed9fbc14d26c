/* The sampler (sampling.h): each thread's countdown of bytes to its next
 * sample, and its random numbers.
 *
 * A thread draws its counts from its own generator (xoshiro256**, whose
 * state is the thread's alone: no lock, no atomic on the hot path),
 * seeded when the thread first takes a sample since the last restart:
 * from the process's seed and the thread's order of arrival, through
 * splitmix64, so that two threads never share a stream. A count is
 * exponential with mean T: -T * ln(U), U uniform in (0, 1].
 *
 * A restart (start() with an interval) bumps the generation; a thread
 * notices it only when its countdown next runs out (the hot path reads
 * nothing shared), then seeds again and draws a count at the new
 * interval. A fork gives the child the parent's streams: the child's
 * forking thread is seeded again (ctm_sample_fork_child), so parent and
 * child do not take the same samples.
 */
#include "sampling.h"

#include <stdatomic.h>
#include <time.h>
#include <unistd.h>

CTM_TLS int64_t ctm_sample_countdown;

typedef struct {
    uint64_t s[4];
    unsigned generation;        /* of the seed; 0: never seeded */
} sampler;

static CTM_TLS sampler me;
/* per thread: the next allocation is sampled (ctm_sample_force_next) */
static CTM_TLS int forced;

/* The process's seed and generation (restart), and the threads seeded
 * since (each takes the next number). */
static _Atomic uint64_t seed;
static atomic_uint generation = 1;
static _Atomic uint64_t arrivals;

static inline uint64_t
splitmix64(uint64_t *x)
{
    uint64_t z = (*x += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

static inline uint64_t
rotl(uint64_t x, int k)
{
    return (x << k) | (x >> (64 - k));
}

static uint64_t
next_random(sampler *g)
{
    uint64_t *s = g->s;
    uint64_t result = rotl(s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return result;
}

static void
seed_thread(sampler *g, unsigned gen)
{
    uint64_t x = atomic_load_explicit(&seed, memory_order_relaxed)
                 ^ (atomic_fetch_add_explicit(&arrivals, 1,
                                              memory_order_relaxed)
                    * 0xD1B54A32D192ED03ULL);
    for (int i = 0; i < 4; i++) {
        g->s[i] = splitmix64(&x);
    }
    g->generation = gen;
}

/* A count of bytes: exponential with mean interval, at least 1. */
static int64_t
draw(sampler *g, uint64_t interval)
{
    /* 53 random bits make U in (0, 1]: never 0, so the log is finite */
    double u = (double)((next_random(g) >> 11) + 1) * 0x1.0p-53;
    double n = -log(u) * (double)interval;
    if (n >= 9.0e18) {
        return INT64_MAX;
    }
    return n < 1.0 ? 1 : (int64_t)n;
}

int
ctm_sample_take(uint64_t size, uint64_t interval)
{
    sampler *g = &me;
    if (forced) {
        forced = 0;
        return 1;
    }
    unsigned gen = atomic_load_explicit(&generation, memory_order_relaxed);
    if (g->generation != gen) {
        /* first time here since the restart: start afresh */
        seed_thread(g, gen);
        ctm_sample_countdown = draw(g, interval) - (int64_t)size;
        if (ctm_sample_countdown > 0) {
            return 0;
        }
    }
    /* Sampled: the countdown is <= 0, -r bytes past the sample point;
     * the next point comes an exponential count after that one, which
     * may fall inside this same block again (nothing more to count). */
    do {
        ctm_sample_countdown += draw(g, interval);
    } while (ctm_sample_countdown <= 0);
    return 1;
}

void
ctm_sample_restart(uint64_t new_seed)
{
    if (new_seed == 0) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        uint64_t x = (uint64_t)ts.tv_sec * 1000000000ULL
                     + (uint64_t)ts.tv_nsec;
        x ^= (uint64_t)getpid() << 32;
        new_seed = splitmix64(&x);
    }
    atomic_store_explicit(&seed, new_seed, memory_order_relaxed);
    atomic_store_explicit(&arrivals, 0, memory_order_relaxed);
    unsigned gen = atomic_load_explicit(&generation, memory_order_relaxed);
    atomic_store_explicit(&generation, gen + 1 ? gen + 1 : 1,
                          memory_order_relaxed);
}

int64_t
ctm_sample_force_next(void)
{
    int64_t saved = ctm_sample_countdown;
    ctm_sample_countdown = 0;       /* any allocation reaches take */
    forced = 1;
    return saved;
}

void
ctm_sample_resume(int64_t saved)
{
    ctm_sample_countdown = saved;
    forced = 0;
}

void
ctm_sample_fork_child(void)
{
    /* The child's seed is the parent's mixed with the child's pid, and
     * its only thread, if seeded, gets a stream from it: parent and
     * child do not take the same samples. */
    uint64_t x = atomic_load_explicit(&seed, memory_order_relaxed)
                 ^ ((uint64_t)getpid() << 20);
    atomic_store_explicit(&seed, splitmix64(&x), memory_order_relaxed);
    if (me.generation != 0) {
        seed_thread(&me, me.generation);
    }
}
