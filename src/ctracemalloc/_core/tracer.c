/* The tracer's state, recording and removing, and what keeps it whole
 * across fork and exit (tracer.h states the rules).
 *
 * Invariants, under the tables lock:
 *  - traces.traced is the sum of the live traces' sizes, never negative,
 *    and traces.peak >= traces.traced;
 *  - every live trace names a traceback of the interner;
 *  - while tracing, nframe >= 1 and frames holds nframe frames;
 *  - an entry of the capture cache of the current epoch names a
 *    traceback made of exactly its code frames, each of a live code
 *    object (a death or a clear starts a new epoch).
 *
 * fork: the lock (and the capture's memo lock) is taken around fork(),
 * so that the child inherits consistent tables, then reset in the child,
 * where the forking thread is the only one left.
 */
#include "tracer.h"
#include "tracerapi.h"

#include <pthread.h>
#include <string.h>

ctm_tracer_state ctm_tracer;
CTM_TLS int ctm_reentrant;
CTM_TLS uintptr_t ctm_last_block;

/* ---- fork ---- */

static void
fork_prepare(void)
{
    ctm_tables_lock();
    ctm_capture_fork_prepare();
}

static void
fork_parent(void)
{
    ctm_capture_fork_parent();
    ctm_tables_unlock();
}

static void
fork_child(void)
{
    /* Threads other than the forking one do not exist in the child; the
     * forking thread held the locks, so the tables are consistent. */
    ctm_capture_fork_child();
    ctm_sample_fork_child();
#ifdef CTM_DEBUG
    atomic_store(&ctm_tracer.owner, 0);
#endif
    atomic_store(&ctm_tracer.lock, 0);
}

static pthread_once_t atfork_once = PTHREAD_ONCE_INIT;

static void
register_atfork(void)
{
    pthread_atfork(fork_prepare, fork_parent, fork_child);
}

/* ---- the capture cache ---- */

void
ctm_tbcache_store_unlocked(const ctm_rawframe *frames, int n,
                           int total_nframe, uint32_t tb)
{
    CTM_ASSERT_LOCKED();
    CTM_ASSERT(n >= 1 && n <= CTM_TBCACHE_FRAMES);
    if (ctm_tracer.tbcache == NULL) {
        return;
    }
    /* Only a traceback of exactly these code frames: a resolved frame
     * (a code object met first where its death cannot be watched, or a
     * capture without the GIL) says nothing of the code object that will
     * be at that address next. */
    ctm_interner *in = ctm_tracer.interner;
    const ctm_ttb *t = ctm_interner_traceback_unlocked(in, tb);
    if (t->nframe != n || t->total_nframe != total_nframe) {
        return;
    }
    const uint32_t *ids = ctm_interner_frame_ids_unlocked(in) + t->first;
    for (int i = 0; i < n; i++) {
        const ctm_tframe *f = ctm_interner_frame_unlocked(in, ids[i]);
        if (f->code == NULL || f->code != frames[i].code
            || f->addr != frames[i].addr) {
            return;
        }
    }
    ctm_tbcache_entry *e = ctm_tbcache_entry_of(frames, total_nframe);
    for (int i = 0; i < n; i++) {
        e->code[i] = frames[i].code;
        e->addr[i] = frames[i].addr;
    }
    e->nframe = (uint16_t)n;
    e->total_nframe = (uint16_t)total_nframe;
    e->traceback = tb;
    e->epoch = ctm_tracer.tbcache_epoch;
}

/* A new, empty capture cache: each entry on a cache line of its own. */
static ctm_tbcache_entry *
tbcache_new(void)
{
    size_t bytes = sizeof(ctm_tbcache_entry) << CTM_TBCACHE_BITS;
    ctm_tbcache_entry *cache = aligned_alloc(64, bytes);
    if (cache != NULL) {
        memset(cache, 0, bytes);
    }
    return cache;
}

/* Make every entry of the capture cache stale: a code object whose
 * frames it may hold died, or the interner was cleared. */
static void
tbcache_forget_unlocked(void)
{
    CTM_ASSERT_LOCKED();
    if (++ctm_tracer.tbcache_epoch == 0) {
        /* Wrapped: entries of epoch 1 would look current again. */
        if (ctm_tracer.tbcache != NULL) {
            memset(ctm_tracer.tbcache, 0,
                   sizeof(ctm_tbcache_entry) << CTM_TBCACHE_BITS);
        }
        ctm_tracer.tbcache_epoch = 1;
    }
}

/* ---- recording ---- */

void
ctm_tracer_restore(uint32_t domain, uintptr_t ptr, uint64_t size,
                   uint32_t traceback, unsigned epoch, int gil_known)
{
    ctm_tables_lock();
    if (ctm_tracer_epoch() == epoch) {
        if (ctm_traces_add_unlocked(&ctm_tracer.traces, domain, ptr, size,
                                    traceback) < 0) {
            ctm_tracer.lost++;
        }
        else {
            ctm_sampled_count_unlocked(ptr, 1);
        }
        ctm_tables_unlock();
        return;
    }
    ctm_tables_unlock();
    ctm_tracer_record(domain, ptr, size, gil_known, 0, 0);
}

/* ---- retraces waiting (tracer.h) ---- */

void
ctm_tracer_apply_ring_unlocked(void)
{
    CTM_ASSERT_LOCKED();
    size_t tail = atomic_load_explicit(&ctm_tracer.ring_tail,
                                       memory_order_acquire);
    size_t head = atomic_load_explicit(&ctm_tracer.ring_head,
                                       memory_order_relaxed);
    CTM_ASSERT(tail - head <= CTM_RING_SIZE);
    /* Only a block's last retrace counts: the others are skipped, newest
     * first, as far as a small table of the blocks done remembers. */
    uintptr_t done[64] = {0};
    for (size_t i = tail; i != head;) {
        const ctm_retrace *r = &ctm_tracer.ring[--i & (CTM_RING_SIZE - 1)];
        uintptr_t *d = &done[(r->block >> 4) & 63];
        if (*d == r->block) {
            continue;
        }
        *d = r->block;
        ctm_value *v = ctm_traces_get_unlocked(&ctm_tracer.traces,
                                               CTM_DEFAULT_DOMAIN, r->block);
        if (v != NULL) {
            (void)ctm_traces_retrace_unlocked(&ctm_tracer.traces,
                                              CTM_DEFAULT_DOMAIN, r->block,
                                              v, r->traceback);
        }
        else {
            atomic_store_explicit(ctm_untraced_slot(r->block), r->block,
                                  memory_order_relaxed);
        }
    }
    atomic_store_explicit(&ctm_tracer.ring_head, tail, memory_order_release);
}

/* Push a retrace on the ring: 1, or 0 if it is full. With the traced
 * interpreter's GIL. */
static inline int
ring_push(uintptr_t block, uint32_t traceback)
{
    size_t tail = atomic_load_explicit(&ctm_tracer.ring_tail,
                                       memory_order_relaxed);
    if (tail - atomic_load_explicit(&ctm_tracer.ring_head,
                                    memory_order_acquire) >= CTM_RING_SIZE) {
        return 0;
    }
    ctm_retrace *r = &ctm_tracer.ring[tail & (CTM_RING_SIZE - 1)];
    r->block = block;
    r->traceback = traceback;
    atomic_store_explicit(&ctm_tracer.ring_tail, tail + 1,
                          memory_order_release);
    return 1;
}

#ifdef CTM_DEBUG
/* Test builds check one cache hit, and one block known to be untraced,
 * in 8 under the lock (which also applies the ring, so most do not). */
static CTM_TLS unsigned hits_seen, untraced_seen;
#endif

void
ctm_tracer_reused_block(uintptr_t block)
{
    if (atomic_load_explicit(ctm_untraced_slot(block), memory_order_relaxed)
        == block) {
        /* allocated before tracing started: nothing to retrace */
#ifdef CTM_DEBUG
        if ((++untraced_seen & 7) == 0) {
            ctm_tables_lock();
            CTM_ASSERT(ctm_traces_get_unlocked(&ctm_tracer.traces,
                                               CTM_DEFAULT_DOMAIN, block)
                       == NULL);
            ctm_tables_unlock();
        }
#endif
        return;
    }
    /* An object made from a free list: its block was traced when it was
     * first allocated; give it the current traceback. */
    int gil;
    PyThreadState *ts = ctm_tracer_tstate(1, &gil);
    if (ts != NULL && ts->interp != ctm_tracer.interp) {
        return;
    }
    ctm_reentrant = 1;
    /* We hold the traced interpreter's GIL: the capture cache and the
     * ring need no lock (tracer.h). */
    ctm_rawframe *frames = ctm_tracer.gil_frames;
    int n, total;
    ctm_capture(ts, frames, ctm_tracer.nframe, &n, &total);
    int64_t tb = n > 0 ? ctm_tbcache_lookup(frames, n, total) : -1;
#ifdef CTM_DEBUG
    if (tb >= 0 && (++hits_seen & 7) == 0) {
        ctm_tables_lock();
        CTM_ASSERT(ctm_intern_traceback_unlocked(ctm_tracer.interner, frames,
                                                 n, total, 1, NULL) == tb);
        ctm_tables_unlock();
    }
#endif
    if (tb >= 0 && ring_push(block, (uint32_t)tb)) {
        ctm_reentrant = 0;
        return;
    }
    int unarmed = 0;
    ctm_tables_lock();
    ctm_value *v = ctm_traces_get_unlocked(&ctm_tracer.traces,
                                           CTM_DEFAULT_DOMAIN, block);
    if (v != NULL) {
        if (tb < 0) {
            /* interning touches the interner, not the traces: v stays
             * valid. A code object met here for the first time gets its
             * death notice armed, as one met by the hooks does: else its
             * frames would be resolved at every capture, which the
             * capture cache cannot keep (a suite's floats, all from the
             * free list, cost 5x). The interpreter makes objects outside
             * any PyMem call: a co_extra slot may be stored. */
            tb = ctm_intern_traceback_unlocked(ctm_tracer.interner, frames,
                                               n, total, 1, &unarmed);
            if (tb >= 0 && n > 0 && n <= CTM_TBCACHE_FRAMES) {
                ctm_tbcache_store_unlocked(frames, n, total, (uint32_t)tb);
            }
        }
        if (tb >= 0) {
            (void)ctm_traces_retrace_unlocked(&ctm_tracer.traces,
                                              CTM_DEFAULT_DOMAIN, block, v,
                                              (uint32_t)tb);
        }
    }
    else {
        atomic_store_explicit(ctm_untraced_slot(block), block,
                              memory_order_relaxed);
    }
    ctm_tables_unlock();
    ctm_reentrant = 0;
    if (unarmed) {
        /* and compact when due, as after the hooks' arming: the check
         * comes with each code object met first, and these would
         * otherwise never make it (the tracer's memory grew with them) */
        ctm_tracer_maintain();
    }
}

/* ---- the death of code objects ----
 *
 * How the interner hears of them is chosen at the first begin in an
 * interpreter and kept (only one is ever traced, the main one: see
 * tracer.h): a code watcher where this Python has them and one is free,
 * else a co_extra index, else nothing (frames resolved as they are
 * captured). Neither is given back: CPython has no call that gives back
 * an index, and the watcher, kept, costs a call per code object made or
 * dying.
 *
 * Both callbacks are called, with the GIL, for code objects that die
 * whether tracing or not, through the interpreter's finalization, after
 * this module is gone: they read nothing but the tracer's state, which
 * lives as long as the process, and a code object without a record
 * costs a lookup. */

/* Written by begin, with the GIL. */
static PyInterpreterState *notice_interp;
static ctm_notice notice = CTM_NOTICE_NONE;
static Py_ssize_t extra_index = -1;

static void
code_extra_free(void *token)
{
    ctm_tables_lock();
    if (ctm_tracer.interner != NULL) {
        ctm_interner_code_died_unlocked(ctm_tracer.interner, token);
        tbcache_forget_unlocked();
    }
    ctm_tables_unlock();
}

/* Told of every code object made or dying in the interpreter; never
 * fails. */
static int
code_watcher(ctm_code_event event, PyCodeObject *code)
{
    if (ctm_code_event_is_death(event)) {
        ctm_tables_lock();
        if (ctm_tracer.interner != NULL
            && ctm_interner_code_object_died_unlocked(ctm_tracer.interner,
                                                      code)) {
            tbcache_forget_unlocked();
        }
        ctm_tables_unlock();
    }
    return 0;
}

/* Test builds: CTRACEMALLOC_TEST_NO_CODE_WATCHER (set, not empty) leaves
 * the watcher out, so that the co_extra index is what is tested where
 * watchers exist. */
static int
watcher_refused(void)
{
#ifdef CTM_SELF_CHECK
    const char *v = getenv("CTRACEMALLOC_TEST_NO_CODE_WATCHER");
    return v != NULL && *v;
#else
    return 0;
#endif
}

/* Choose how the deaths of interp's code objects are heard of, once. */
static void
choose_notice(PyInterpreterState *interp)
{
    if (interp == notice_interp) {
        return;
    }
    notice_interp = interp;
    extra_index = -1;
    if (!watcher_refused() && ctm_code_watcher_add(code_watcher) >= 0) {
        notice = CTM_NOTICE_WATCHER;
    }
    else if ((extra_index = ctm_code_extra_index(code_extra_free)) >= 0) {
        notice = CTM_NOTICE_CO_EXTRA;
    }
    else {
        notice = CTM_NOTICE_NONE;
    }
}

const char *
ctm_tracer_code_notice(void)
{
    switch (notice) {
    case CTM_NOTICE_WATCHER:
        return "watcher";
    case CTM_NOTICE_CO_EXTRA:
        return "co_extra";
    default:
        return "none";
    }
}

/* ---- compaction of the interner ---- */

void
ctm_tracer_reader_begin(void)
{
    ctm_tables_lock();
    ctm_tracer.readers++;
    ctm_tables_unlock();
}

void
ctm_tracer_reader_end(void)
{
    ctm_tables_lock();
    ctm_tracer.readers--;
    ctm_tables_unlock();
}

/* Compact the interner if it is due and nobody reads it (the GIL
 * held). */
static void
compact(void)
{
    uint64_t *counts = NULL;
    uint32_t *map = NULL;
    ctm_tables_lock();
    ctm_interner *in = ctm_tracer.interner;
    ctm_traces *t = &ctm_tracer.traces;
    if (in != NULL && ctm_tracer.readers == 0
        && ctm_interner_compaction_due_unlocked(in, t->ntraces)) {
        uint32_t ntb = (uint32_t)ctm_interner_ntracebacks_unlocked(in);
        map = ctm_malloc((ntb ? ntb : 1) * sizeof(uint32_t));
        if (map != NULL
            && ctm_traces_exact_counts_unlocked(t, ntb, &counts) == 0
            && ctm_interner_compact_unlocked(in, counts, map) >= 0) {
            ctm_traces_rename_unlocked(t, map, counts, ntb);
            tbcache_forget_unlocked();    /* its ids are the old ones */
            atomic_fetch_add_explicit(&ctm_tracer.compactions, 1,
                                      memory_order_relaxed);
        }
    }
    ctm_tables_unlock();
    ctm_free(counts);
    ctm_free(map);
}

void
ctm_tracer_maintain(void)
{
    int was = ctm_reentrant;
    /* Storing a token (co_extra notices only) may allocate: not traced
     * (the stdlib has no such block), and not a place to record from. */
    ctm_reentrant = 1;
    for (;;) {
        PyCodeObject *code;
        void *token;
        ctm_tables_lock();
        int more = ctm_tracer.interner != NULL
            && ctm_interner_unarmed_unlocked(ctm_tracer.interner, &code,
                                             &token);
        ctm_tables_unlock();
        if (!more) {
            break;
        }
        /* The code object is on this thread's stack: alive. */
        if (ctm_code_set_extra(code, extra_index, token) < 0) {
            /* Its death would go unnoticed: resolve its frames now. */
            ctm_tables_lock();
            ctm_interner_code_died_unlocked(ctm_tracer.interner, token);
            tbcache_forget_unlocked();
            ctm_tables_unlock();
        }
    }
    compact();
    ctm_reentrant = was;
}

/* ---- lifetime ---- */

int
ctm_tracer_begin(int nframe, uint64_t sample_interval)
{
    CTM_ASSERT(nframe >= 1 && nframe <= CTM_MAX_NFRAME);
    pthread_once(&atfork_once, register_atfork);
    ctm_rawframe *frames = ctm_malloc((size_t)nframe * sizeof(ctm_rawframe));
    ctm_rawframe *gil_frames = ctm_malloc((size_t)nframe
                                          * sizeof(ctm_rawframe));
    ctm_interner *in = ctm_tracer.interner ? NULL : ctm_interner_new();
    ctm_tbcache_entry *cache = ctm_tracer.tbcache ? NULL
        : tbcache_new();
    if (frames == NULL || gil_frames == NULL
        || (ctm_tracer.interner == NULL && in == NULL)
        || (ctm_tracer.tbcache == NULL && cache == NULL)) {
        ctm_free(frames);
        ctm_free(gil_frames);
        ctm_free(in);
        ctm_free(cache);
        PyErr_NoMemory();
        return -1;
    }
    PyInterpreterState *interp = PyInterpreterState_Get();
    choose_notice(interp);
    ctm_tables_lock();
    ctm_tracer.interp = interp;
    ctm_free(ctm_tracer.frames);
    ctm_tracer.frames = frames;
    ctm_free(ctm_tracer.gil_frames);
    ctm_tracer.gil_frames = gil_frames;
    ctm_tracer.nframe = nframe;
    if (in != NULL) {
        ctm_tracer.interner = in;
    }
    if (cache != NULL) {
        ctm_tracer.tbcache = cache;
    }
    tbcache_forget_unlocked();
    ctm_interner_set_notice(ctm_tracer.interner, notice, extra_index);
    /* the tables are empty: stop cleared them */
    CTM_ASSERT(ctm_tracer.traces.ntraces == 0);
    ctm_tracer.traces.sample_interval = sample_interval;
    atomic_store(&ctm_tracer.sample_interval, sample_interval);
    atomic_store(&ctm_tracer.tracing, 1);
    ctm_tables_unlock();
    return 0;
}

void
ctm_tracer_end(void)
{
    ctm_tables_lock();
    atomic_store(&ctm_tracer.tracing, 0);
    ctm_tables_unlock();
}

void
ctm_tracer_clear(void)
{
    ctm_tables_lock();
    ctm_traces_clear_unlocked(&ctm_tracer.traces);
    CTM_ASSERT(ctm_tracer.traces.traced == 0
               && ctm_tracer.traces.ntraces == 0);
    for (size_t i = 0; i < (size_t)1 << CTM_SAMPLED_BITS; i++) {
        atomic_store_explicit(&ctm_tracer.sampled[i], 0,
                              memory_order_relaxed);
    }
    if (ctm_tracer.interner != NULL) {
        ctm_interner_clear_unlocked(ctm_tracer.interner);
    }
    tbcache_forget_unlocked();
    ctm_tables_unlock();
    ctm_large_release_spare();
}

int
ctm_tracer_is_tracing(void)
{
    return atomic_load(&ctm_tracer.tracing);
}

int
ctm_tracer_nframe(void)
{
    /* The stdlib reports the last limit even when stopped. */
    return ctm_tracer.nframe ? ctm_tracer.nframe : 1;
}

void
ctm_tracer_traced_memory(size_t *current, size_t *peak)
{
    ctm_tables_lock();
    *current = ctm_tracer.traces.traced;
    *peak = ctm_tracer.traces.peak;
    ctm_tables_unlock();
}

void
ctm_tracer_reset_peak(void)
{
    ctm_tables_lock();
    ctm_traces_reset_peak_unlocked(&ctm_tracer.traces);
    ctm_tables_unlock();
}

/* ---- the peak record and the timeline ---- */

int
ctm_tracer_peak_start(void)
{
    ctm_tables_lock();
    ctm_traces *t = &ctm_tracer.traces;
    int rc = 0;
    if (!t->peak_on) {
        ctm_timeline *tl = ctm_timeline_new(t->traced);
        rc = tl != NULL && ctm_traces_peak_start_unlocked(t) == 0 ? 0 : -1;
        if (rc == 0) {
            t->timeline = tl;
        }
        else {
            ctm_free(tl);
        }
    }
    ctm_tables_unlock();
    if (rc < 0) {
        PyErr_NoMemory();
    }
    return rc;
}

void
ctm_tracer_peak_stop(void)
{
    ctm_tables_lock();
    ctm_traces *t = &ctm_tracer.traces;
    t->peak_on = 0;
    ctm_free(t->timeline);
    t->timeline = NULL;
    ctm_tables_unlock();
}

int
ctm_tracer_peak_on(void)
{
    ctm_tables_lock();
    int on = ctm_tracer.traces.peak_on;
    ctm_tables_unlock();
    return on;
}

ctm_point *
ctm_tracer_timeline(size_t *n)
{
    ctm_point *out = ctm_malloc((CTM_TIMELINE_POINTS + 2)
                                * sizeof(ctm_point));
    if (out == NULL) {
        PyErr_NoMemory();
        return NULL;
    }
    ctm_tables_lock();
    ctm_traces *t = &ctm_tracer.traces;
    *n = t->timeline ? ctm_timeline_points(t->timeline, t->traced, out) : 0;
    ctm_tables_unlock();
    return out;
}

size_t
ctm_tracer_memory(void)
{
    ctm_tables_lock();
    size_t n = ctm_traces_memory_unlocked(&ctm_tracer.traces);
    if (ctm_tracer.interner != NULL) {
        n += ctm_interner_memory_unlocked(ctm_tracer.interner);
    }
    n += 2 * (size_t)ctm_tracer.nframe * sizeof(ctm_rawframe);
    if (ctm_tracer.tbcache != NULL) {
        n += sizeof(ctm_tbcache_entry) << CTM_TBCACHE_BITS;
    }
    n += sizeof(ctm_tracer.ring) + sizeof(ctm_tracer.untraced);
    ctm_tables_unlock();
    n += ctm_capture_memory() + ctm_large_spare_bytes();
    return n;
}

void
ctm_tracer_interner_stats(size_t *ntracebacks, size_t *nframes,
                          unsigned *compactions)
{
    ctm_tables_lock();
    ctm_interner *in = ctm_tracer.interner;
    *ntracebacks = in ? ctm_interner_ntracebacks_unlocked(in) : 0;
    *nframes = in ? ctm_interner_nframes_unlocked(in) : 0;
    *compactions = ctm_tracer_epoch();
    ctm_tables_unlock();
}

void
ctm_tracer_at_exit(void)
{
    atomic_store(&ctm_tracer.exiting, 1);
    /* A barrier: a hook of a thread without the GIL that looked before
     * the store captures under the lock, and sees the flag once it has
     * the lock (ctm_tracer_record). After this returns, no hook reads a
     * thread state that the interpreter's finalization is about to
     * free. */
    ctm_tables_lock();
    ctm_tables_unlock();
}

/* ---- the track API ---- */

int
ctm_tracer_track(uint32_t domain, uintptr_t ptr, size_t size)
{
    if (!atomic_load(&ctm_tracer.tracing)) {
        return -1;
    }
    int was = ctm_reentrant;
    ctm_reentrant = 1;
    if (domain != CTM_NATIVE_DOMAIN
        && atomic_load_explicit(&ctm_tracer.native, memory_order_relaxed)) {
        /* An extension reports a block it took from the C allocator
         * (numpy's buffers): it is counted once, in the reported domain.
         * Removed first, so that no snapshot sees it twice. */
        (void)ctm_tracer_remove(CTM_NATIVE_DOMAIN, ptr, NULL, NULL);
    }
    int rc = 0;
    if (!ctm_tracer_sampled(size)) {
        /* Not sampled: as a new trace would, it replaces any the pointer
         * had. */
        (void)ctm_tracer_remove(domain, ptr, NULL, NULL);
    }
    else if (ctm_tracer_record(domain, ptr, size, 0, 0, 0) < 0) {
        rc = -2;
    }
    ctm_reentrant = was;
    return rc;
}

int
ctm_tracer_untrack(uint32_t domain, uintptr_t ptr)
{
    if (!atomic_load(&ctm_tracer.tracing)) {
        return -1;
    }
    ctm_tracer_remove(domain, ptr, NULL, NULL);
    return 0;
}
