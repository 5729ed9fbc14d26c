/* The tracer: its state, the tables lock, and the recording and removing
 * of traces (tracer.c). Its clients, above it, tell it what happened:
 * the allocator hooks (hooks.c), the reference tracer (reftracer.c);
 * control.c starts and stops it with them; tracersnap.c reads its tables
 * for snapshots.
 *
 * Locking: one spinlock, the tables lock, protects the traces and the
 * interner. Hooks on the MEM and OBJ domains run with the GIL held, but
 * RAW hooks and every free may run on any thread, with or without the
 * GIL, so the GIL alone cannot protect the tables. The lock is never held
 * while calling an allocator or any Python API that could allocate or
 * free, so it cannot deadlock against the hooks. A function whose name
 * ends in _unlocked expects the caller to hold it (debug builds check).
 *
 * The traced interpreter's GIL: what only the thread that holds it
 * touches needs no lock. Objects made from a free list are announced
 * with it held (ctm_tracer_new_object), and so is every allocation of
 * the MEM and OBJ domains; the GIL orders each of its holders after the
 * last. Two structures rely on it, beside the lock:
 *
 *  - The capture cache: a capture made with the GIL is looked up first
 *    in a small direct-mapped cache of recent captures (up to
 *    CTM_TBCACHE_FRAMES frames, compared frame by frame) and their
 *    traceback ids, in front of the interner and its stack cache: reused
 *    objects, and most allocations, come from a few hot lines. It holds
 *    only tracebacks made of code frames (code object, offset), checked
 *    against the interner when an entry is stored. Such a traceback keeps
 *    its meaning until one of its code objects dies (its frames are
 *    resolved; a new code object may come at the same address) or the
 *    interner is cleared: both happen with the GIL, and bump the cache's
 *    epoch, which makes every entry stale. Without the GIL the interner
 *    resolves frames at once: those captures bypass the cache.
 *  - Retraces waiting: an object reused from a free list whose capture
 *    hits the cache is not retraced at once, under the lock, but pushed
 *    (block, traceback) on a ring, with no lock taken. Whoever takes the
 *    tables lock next, any thread, applies the ring first, in order
 *    (ctm_tables_lock): so nothing ever reads or changes the traces with
 *    a retrace pending that was pushed before it took the lock. A block
 *    with a pending retrace is a live object's: it is freed (its trace
 *    removed) only after its object dies, and both happen with the GIL,
 *    after the push; the removal takes the lock, which applies the push
 *    first. A full ring is applied by its pusher, under the lock. The
 *    ring has one producer at a time (the GIL holder; the GIL orders
 *    them) and one consumer at a time (the lock holder), so a head and a
 *    tail with acquire and release are all it needs; a fork copies it
 *    whole, as a push publishes its entry with one store.
 *
 * Blocks known to be untraced: many objects reused from free lists were
 * allocated before tracing started, and their blocks have no trace to
 * give a traceback. A small direct-mapped set of such blocks, found
 * untraced under the lock, lets their reuse return at once, without a
 * capture or the lock. A block becomes traced only when it is recorded,
 * and every record of a domain-0 block drops it from the set, under the
 * lock; a block being reused is a live object's, recorded (allocated)
 * before it came to the free list, so the reuse sees the drop. The set's
 * words are relaxed atomics: any thread may drop a block, and a stale
 * word could only cost a traceback, never memory.
 *
 * Reentrancy: a thread-local flag is set while a client records, so that
 * an allocator that calls another (pymalloc falling back on the RAW
 * allocator) is traced once, at the outermost level. The tracer's own
 * memory comes from libc and never enters the hooks.
 *
 * Threads without the GIL: the thread's own frames are read (they cannot
 * change while it is inside an allocator, and their code objects are
 * alive); a code object met for the first time has its lines resolved at
 * once unless a code watcher tells of its death (a co_extra slot, which
 * tells of it otherwise, needs the GIL and PyMem). Once the
 * interpreter is exiting, such threads get the "<unknown>" traceback:
 * their thread states may be freed under them.
 *
 * Subinterpreters: only the interpreter that started tracing is traced.
 * A subinterpreter's objects, code objects included, belong to it (from
 * 3.12, its memory too) and go when it is destroyed: the tracer must hold
 * no reference into it, and its blocks are not ours to explain. Code
 * watchers and co_extra indexes are per interpreter: the traced one's
 * tell of the deaths of the only code objects the interner records.
 */
#ifndef CTM_TRACER_H
#define CTM_TRACER_H

#include "interning.h"
#include "sampling.h"
#include "store.h"

#include <sched.h>
#include <stdatomic.h>

/* The capture cache (see the top): 2^CTM_TBCACHE_BITS entries of 64
 * bytes, for captures of at most CTM_TBCACHE_FRAMES frames. */
#define CTM_TBCACHE_BITS 9
#define CTM_TBCACHE_FRAMES 4

typedef struct {
    PyCodeObject *code[CTM_TBCACHE_FRAMES];   /* the capture's frames */
    int32_t addr[CTM_TBCACHE_FRAMES];
    uint32_t epoch;             /* the cache's epoch when stored; 0: empty */
    uint32_t traceback;
    uint16_t nframe;
    uint16_t total_nframe;
} ctm_tbcache_entry;
_Static_assert(sizeof(ctm_tbcache_entry) <= 64,
               "a capture cache entry fits a cache line");

/* The set of blocks known to be untraced (see the top). */
#define CTM_UNTRACED_SIZE 256   /* a power of two */

/* The filter of sampled addresses (see sampled below): counters. */
#define CTM_SAMPLED_BITS 12

/* A retrace waiting on the ring (see the top). */
#define CTM_RING_SIZE 256       /* a power of two */

typedef struct {
    uintptr_t block;
    uint32_t traceback;
} ctm_retrace;

/* All of the tracer's state. What protects each field is said beside
 * it. */
typedef struct {
    /* Nonzero while tracing. Written under the tables lock and the GIL;
     * read by the clients without the lock first (a cheap early exit),
     * then again under the lock before touching the tables. */
    atomic_int tracing;
    /* Sampling (sampling.h): the mean interval in bytes, 0 when exact.
     * Written with the GIL and the lock while the tables are empty (as
     * traces.sample_interval, its copy that the tables read); read by the
     * clients without the lock. */
    _Atomic uint64_t sample_interval;
    /* Nonzero while native allocations are traced (native.c): a block
     * tracked in another domain then stops being native. Written with
     * the GIL; read without the lock. */
    atomic_int native;
    /* Set when the interpreter starts exiting (atexit), never cleared.
     * Read without the lock, then again under it. */
    atomic_int exiting;
    /* The tables lock. */
    atomic_int lock;
#ifdef CTM_DEBUG
    /* The thread that holds the lock (0: none), for the assertions. */
    atomic_uintptr_t owner;
#endif
    /* The interpreter traced, the one that called start(). Written by
     * start with the GIL and the lock held. */
    PyInterpreterState *interp;

    /* Protected by the tables lock: */
    int nframe;                 /* frames kept per traceback; 0 until the
                                   first start. Written with the GIL too */
    ctm_rawframe *frames;       /* the capture buffer, nframe frames */
    ctm_traces traces;          /* the live traces */
    ctm_interner *interner;     /* their tracebacks; NULL until the first
                                   start, then kept */
    size_t lost;                /* traces that could not be recorded */
    /* Readers of the interner's ids and filenames across several lock
     * holds (tracersnap.c) in progress: the interner is not compacted
     * while there is one. Changed under the lock, by threads holding the
     * GIL. */
    int readers;
    /* Compactions of the interner so far: a traceback id taken before
     * (a realloc's old trace) is only good if this has not moved.
     * Written under the lock. */
    atomic_uint compactions;

    /* Protected by the traced interpreter's GIL (see the top); written
     * under the lock as well, except the ring's tail: */
    ctm_rawframe *gil_frames;   /* the GIL holder's capture buffer, nframe
                                   frames */
    ctm_tbcache_entry *tbcache; /* the capture cache; NULL until the first
                                   start, then kept */
    uint32_t tbcache_epoch;     /* entries of another epoch are stale;
                                   never 0 */

    /* The ring of retraces waiting: the GIL holder pushes at the tail,
     * the lock holder applies from the head. Free-running counts. */
    atomic_size_t ring_head;
    atomic_size_t ring_tail;
    ctm_retrace ring[CTM_RING_SIZE];

    /* Blocks known to be untraced, by address (0: none); added and
     * dropped under the lock, read by the GIL holder without it. */
    atomic_uintptr_t untraced[CTM_UNTRACED_SIZE];

    /* While sampling, a counting filter of the addresses that have a
     * trace: a free of a block that was never sampled (nearly every
     * free) reads one counter, in 8 KiB that stay in cache, instead of
     * taking the lock and probing the tables. A counter goes up under the
     * lock when a trace is added at an address of its slot, down when
     * one is removed, and sticks at its maximum: it can say "maybe" of a
     * block without a trace (then the tables are probed), never "no" of
     * one with a trace. Read without the lock: a block's free comes after
     * its allocation (and its trace) in the program's own order. Zeroed
     * when the traces are cleared. */
    _Atomic uint16_t sampled[1 << CTM_SAMPLED_BITS];
} ctm_tracer_state;

extern ctm_tracer_state ctm_tracer;

/* Per thread: set while one of the thread's clients records (see
 * reentrancy above). */
extern CTM_TLS int ctm_reentrant;
/* Per thread: the block the thread's hooks recorded last. The reference
 * tracer skips an object made in it: it was just traced with the current
 * traceback. */
extern CTM_TLS uintptr_t ctm_last_block;

/* ---- the tables lock ---- */

#ifdef CTM_DEBUG
static inline uintptr_t
ctm_tracer_self(void)
{
    return (uintptr_t)pthread_self();
}
#endif

/* Apply the retraces waiting on the ring (tracer.c). */
void ctm_tracer_apply_ring_unlocked(void);

/* Take the tables lock, and apply the retraces waiting (see the top):
 * every push that happened before is applied before the caller reads or
 * changes the traces. */
static inline void
ctm_tables_lock(void)
{
    unsigned spins = 0;
    while (atomic_exchange_explicit(&ctm_tracer.lock, 1,
                                    memory_order_acquire)) {
        while (atomic_load_explicit(&ctm_tracer.lock,
                                    memory_order_relaxed)) {
            if (++spins > 64) {
                sched_yield();
            }
        }
    }
#ifdef CTM_DEBUG
    atomic_store_explicit(&ctm_tracer.owner, ctm_tracer_self(),
                          memory_order_relaxed);
#endif
    if (atomic_load_explicit(&ctm_tracer.ring_tail, memory_order_relaxed)
        != atomic_load_explicit(&ctm_tracer.ring_head,
                                memory_order_relaxed)) {
        ctm_tracer_apply_ring_unlocked();
    }
}

static inline void
ctm_tables_unlock(void)
{
#ifdef CTM_DEBUG
    CTM_ASSERT(atomic_load_explicit(&ctm_tracer.owner, memory_order_relaxed)
               == ctm_tracer_self());
    atomic_store_explicit(&ctm_tracer.owner, 0, memory_order_relaxed);
#endif
    atomic_store_explicit(&ctm_tracer.lock, 0, memory_order_release);
}

/* The slot of block in the set of blocks known to be untraced. */
static inline atomic_uintptr_t *
ctm_untraced_slot(uintptr_t block)
{
    return &ctm_tracer.untraced[(block >> 4) & (CTM_UNTRACED_SIZE - 1)];
}

/* CTM_ASSERT_LOCKED(): in debug builds, check that the calling thread
 * holds the tables lock. */
#ifdef CTM_DEBUG
#  define CTM_ASSERT_LOCKED() \
    CTM_ASSERT(atomic_load_explicit(&ctm_tracer.owner, \
                                    memory_order_relaxed) \
               == ctm_tracer_self())
#else
#  define CTM_ASSERT_LOCKED() ((void)0)
#endif

static inline int
ctm_tracer_tracing(void)
{
    return atomic_load_explicit(&ctm_tracer.tracing, memory_order_relaxed);
}

/* ---- sampling (sampling.h) ---- */

static inline uint64_t
ctm_tracer_interval(void)
{
    return atomic_load_explicit(&ctm_tracer.sample_interval,
                                memory_order_relaxed);
}

/* Whether a new block of size bytes gets a trace: always when exact;
 * when sampling, the sampler says (the hot path: a subtraction and a
 * branch). */
static inline int
ctm_tracer_sampled(size_t size)
{
    uint64_t interval = ctm_tracer_interval();
    if (interval == 0) {
        return 1;
    }
    return ctm_sample_runs_out(size) && ctm_sample_take(size, interval);
}

static inline _Atomic uint16_t *
ctm_sampled_slot(uintptr_t ptr)
{
    uint64_t h = (uint64_t)(ptr >> 4) * 0x9E3779B97F4A7C15ULL;
    return &ctm_tracer.sampled[h >> (64 - CTM_SAMPLED_BITS)];
}

/* Whether ptr may have a trace: when sampling, 0 means certainly not
 * (see sampled); always 1 when exact. */
static inline int
ctm_tracer_may_have_trace(uintptr_t ptr)
{
    return ctm_tracer_interval() == 0
           || atomic_load_explicit(ctm_sampled_slot(ptr),
                                   memory_order_relaxed) != 0;
}

/* A trace was added at ptr (+1) or removed (-1): counted in the filter
 * while sampling. */
static inline void
ctm_sampled_count_unlocked(uintptr_t ptr, int delta)
{
    CTM_ASSERT_LOCKED();
    if (ctm_tracer.traces.sample_interval == 0) {
        return;
    }
    _Atomic uint16_t *c = ctm_sampled_slot(ptr);
    uint16_t v = atomic_load_explicit(c, memory_order_relaxed);
    if (v != UINT16_MAX && (delta > 0 || v > 0)) {
        atomic_store_explicit(c, (uint16_t)(v + delta),
                              memory_order_relaxed);
    }
}

/* ---- recording ----
 *
 * Inline: every traced allocation and free runs through these, and the
 * hooks that call them are the tracer's hot path. */

/* The thread state whose frames to record, and in *gil whether the
 * caller holds the GIL (gil_known: it is known to). Safe from any thread;
 * never allocates. */
static inline PyThreadState *
ctm_tracer_tstate(int gil_known, int *gil)
{
    if (gil_known) {
        *gil = 1;
        return _PyThreadState_UncheckedGet();
    }
    PyThreadState *ts = NULL;
    if (!atomic_load_explicit(&ctm_tracer.exiting, memory_order_relaxed)) {
        ts = ctm_tstate_if_gil_held();
        if (ts != NULL) {
            *gil = 1;
            return ts;
        }
        ts = PyGILState_GetThisThreadState();
    }
    *gil = 0;
    return ts;
}

/* The capture cache's entry for a capture of n frames (1 to
 * CTM_TBCACHE_FRAMES) and total_nframe: its slot is the most recent
 * frame's and total's. */
static inline ctm_tbcache_entry *
ctm_tbcache_entry_of(const ctm_rawframe *frames, int total_nframe)
{
    uint64_t h = ((uint64_t)(uintptr_t)frames[0].code
                  ^ ((uint64_t)(uint32_t)frames[0].addr << 32)
                  ^ (uint32_t)total_nframe) * 0x9E3779B97F4A7C15ULL;
    return &ctm_tracer.tbcache[h >> (64 - CTM_TBCACHE_BITS)];
}

/* The traceback id that the capture cache holds for frames[0..n) and
 * total_nframe, or -1. With the traced interpreter's GIL. */
static inline int64_t
ctm_tbcache_lookup(const ctm_rawframe *frames, int n, int total_nframe)
{
    if (n > CTM_TBCACHE_FRAMES || ctm_tracer.tbcache == NULL) {
        return -1;
    }
    const ctm_tbcache_entry *e = ctm_tbcache_entry_of(frames, total_nframe);
    if (e->epoch != ctm_tracer.tbcache_epoch || e->nframe != n
        || e->total_nframe != total_nframe) {
        return -1;
    }
    int same = 1;
    for (int i = 0; i < n; i++) {
        same &= (e->code[i] == frames[i].code)
                & (e->addr[i] == frames[i].addr);
    }
    return same ? (int64_t)e->traceback : -1;
}

/* Remember traceback tb, just interned from frames[0..n) and
 * total_nframe, if it can be (tracer.c). With the traced interpreter's
 * GIL and the lock. */
void ctm_tbcache_store_unlocked(const ctm_rawframe *frames, int n,
                                int total_nframe, uint32_t tb);

/* Capture the traceback of ts (NULL: no Python frame) and intern it: its
 * id, or -1 if memory ran out. arm: see ctm_intern_traceback_unlocked
 * (then call ctm_tracer_maintain once the lock is released). */
static inline int64_t
ctm_tracer_traceback_unlocked(PyThreadState *ts, int gil, int *arm)
{
    CTM_ASSERT_LOCKED();
    int n, total;
    ctm_rawframe *frames = ctm_tracer.frames;
    ctm_capture(ts, frames, ctm_tracer.nframe, &n, &total);
    if (!gil || n == 0) {
        return ctm_intern_traceback_unlocked(ctm_tracer.interner, frames, n,
                                             total, gil, arm);
    }
    int64_t tb = ctm_tbcache_lookup(frames, n, total);
    if (tb >= 0) {
        /* The interner gives the same id: its code frames are unique. */
        CTM_ASSERT(ctm_intern_traceback_unlocked(ctm_tracer.interner,
                                                 frames, n, total, gil, arm)
                   == tb);
        return tb;
    }
    tb = ctm_intern_traceback_unlocked(ctm_tracer.interner, frames, n,
                                       total, gil, arm);
    if (tb >= 0 && n <= CTM_TBCACHE_FRAMES) {
        ctm_tbcache_store_unlocked(frames, n, total, (uint32_t)tb);
    }
    return tb;
}

/* The work that a capture leaves for after the lock: with co_extra
 * notices, store the tokens of the code objects that the interner met
 * for the first time in their co_extra slots, so that their deaths are
 * noticed; compact the interner when it is due (interning.c). The GIL
 * held, the lock not; never from inside an allocation that may be
 * resizing a co_extra slot (the OBJ domain's hook is safe: only PyMem
 * resizes them; so is the making of an object from a free list). */
void ctm_tracer_maintain(void);

/* Around a read of the interner's ids and filenames that spans several
 * lock holds (see readers). The GIL held, the lock not. */
void ctm_tracer_reader_begin(void);
void ctm_tracer_reader_end(void);

/* Record a trace for (domain, ptr), with the caller's traceback: a block
 * an allocator just returned (block: domain 0 or the native domain, see
 * ctm_traces_add_block_unlocked), or any pointer (the track API, which
 * may replace a trace). gil_known: the
 * caller holds the GIL. arm: the caller may arm code objects' death
 * notices once the lock is released (see ctm_tracer_maintain); if not,
 * with co_extra notices, code objects met for the first time are
 * resolved at once (a code watcher needs no arming). Nothing is
 * recorded for a thread of another interpreter. Return 0, or -1 when the
 * tables are out of memory (then nothing was recorded, and it is counted
 * as lost). */
static inline int
ctm_tracer_record(uint32_t domain, uintptr_t ptr, size_t size,
                  int gil_known, int block, int arm)
{
    int gil;
    PyThreadState *ts = ctm_tracer_tstate(gil_known, &gil);
    int rc = 0;
    int unarmed = 0;
    ctm_tables_lock();
    if (!gil && ts != NULL
        && atomic_load_explicit(&ctm_tracer.exiting, memory_order_relaxed)) {
        /* Checked again under the lock: the interpreter began exiting
         * after ctm_tracer_tstate looked, and it frees the thread states
         * of threads like this one (see ctm_tracer_at_exit). */
        ts = NULL;
    }
    if (ts != NULL && ts->interp != ctm_tracer.interp) {
        ctm_tables_unlock();
        return 0;               /* a subinterpreter's: see the top */
    }
    if (ctm_tracer_tracing()) {
        ctm_traces *t = &ctm_tracer.traces;
        if (domain == CTM_DEFAULT_DOMAIN) {
            /* about to be traced (see the top) */
            atomic_uintptr_t *u = ctm_untraced_slot(ptr);
            if (atomic_load_explicit(u, memory_order_relaxed) == ptr) {
                atomic_store_explicit(u, 0, memory_order_relaxed);
            }
        }
        int64_t tb = ctm_tracer_traceback_unlocked(ts, gil,
                                                   arm ? &unarmed : NULL);
        if (tb < 0
            || (block ? ctm_traces_add_block_unlocked(t, domain, ptr,
                                                      size, (uint32_t)tb)
                      : ctm_traces_add_unlocked(t, domain, ptr, size,
                                                (uint32_t)tb)) < 0) {
            ctm_tracer.lost++;
            rc = -1;
        }
        else {
            ctm_sampled_count_unlocked(ptr, 1);
        }
        CTM_ASSERT(t->peak >= t->traced);
    }
    ctm_tables_unlock();
    if (unarmed) {
        ctm_tracer_maintain();
    }
    ctm_last_block = ptr;
    return rc;
}

/* Remove the trace of (domain, ptr), if any. 1 if there was one (then
 * *size and *traceback are set when not NULL), else 0. _unfiltered: the
 * caller checked ctm_tracer_may_have_trace. */
static inline int
ctm_tracer_remove_unfiltered(uint32_t domain, uintptr_t ptr, uint64_t *size,
                             uint32_t *traceback)
{
    ctm_tables_lock();
    int had = ctm_traces_remove_unlocked(&ctm_tracer.traces, domain, ptr,
                                         size, traceback);
    if (had) {
        ctm_sampled_count_unlocked(ptr, -1);
    }
    ctm_tables_unlock();
    return had;
}

static inline int
ctm_tracer_remove(uint32_t domain, uintptr_t ptr, uint64_t *size,
                  uint32_t *traceback)
{
    if (!ctm_tracer_may_have_trace(ptr)) {
        return 0;
    }
    return ctm_tracer_remove_unfiltered(domain, ptr, size, traceback);
}

/* The size of the trace of (domain, ptr), or -1 if it has none; a size
 * of 4 GiB or more reads as 0xFFFFFFFF (enough for the probes). */
static inline int64_t
ctm_tracer_trace_size(uint32_t domain, uintptr_t ptr)
{
    ctm_tables_lock();
    const ctm_value *v = ctm_traces_get_unlocked(&ctm_tracer.traces, domain,
                                                 ptr);
    int64_t size = v != NULL ? (int64_t)v->size : -1;
    ctm_tables_unlock();
    return size;
}

/* An object was made in block, from a free list: its trace, if any,
 * gets the current traceback (tracer.c). */
void ctm_tracer_reused_block(uintptr_t block);

/* The interpreter made the object obj (the reference tracer, or its
 * _Py_NewReference before 3.13): if its block is not the one the
 * thread's hooks just traced, it came from a free list, and its block's
 * trace gets the current traceback, as the stdlib does. Call with the
 * GIL, while tracing, not from inside a client (ctm_reentrant clear).
 * Inline: every object made runs through it, and when sampling nearly
 * all end at the filter. */
static inline void
ctm_tracer_new_object(PyObject *obj)
{
    uintptr_t block = (uintptr_t)ctm_object_block(obj);
    if (block == ctm_last_block) {
        /* Just allocated and traced with the current traceback. One
         * allocation makes one object: forget the block, so that the same
         * memory reused later from a free list is seen. */
        ctm_last_block = 0;
        return;
    }
    if (ctm_tracer_may_have_trace(block)) {
        ctm_tracer_reused_block(block);
    }
}

/* The compactions so far: read before ctm_tracer_remove, for
 * ctm_tracer_restore. */
static inline unsigned
ctm_tracer_epoch(void)
{
    return atomic_load_explicit(&ctm_tracer.compactions,
                                memory_order_relaxed);
}

/* Put back a trace that ctm_tracer_remove took out (a realloc that
 * failed), epoch being ctm_tracer_epoch() from before the removal; if
 * the interner was compacted since, its traceback id means nothing now
 * and the trace gets the current traceback (gil_known as for
 * ctm_tracer_record). */
void ctm_tracer_restore(uint32_t domain, uintptr_t ptr, uint64_t size,
                        uint32_t traceback, unsigned epoch, int gil_known);

/* ---- lifetime (tracer.c; the GIL held) ---- */

/* Make the state ready to trace with nframe frames (checked by the
 * caller), every block or samples at sample_interval (0: every block),
 * and set the tracing flag. The traces must be empty (cleared by the
 * last stop). Return 0 or -1. */
int ctm_tracer_begin(int nframe, uint64_t sample_interval);
/* Clear the tracing flag: from now on nothing new is recorded. */
void ctm_tracer_end(void);

#endif /* CTM_TRACER_H */
