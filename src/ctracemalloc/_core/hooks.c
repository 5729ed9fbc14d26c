/* Allocator hooks, the tables lock, and the tracer's lifetime.
 *
 * The hooks wrap the RAW, MEM and OBJ allocators and record every block
 * in trace domain 0. Rules they keep:
 *
 *  - Reentrancy: a thread-local flag is set while a hook runs, so that
 *    an allocator that calls another (pymalloc falling back on the RAW
 *    allocator) is traced once, at the outermost level. The tracer's own
 *    memory comes from libc and never enters the hooks.
 *  - Locking: one spinlock (tables_lock) protects the traces and the
 *    interner. Hooks on the MEM and OBJ domains run with the GIL held,
 *    but RAW hooks and every free may run on any thread with or without
 *    the GIL, so the GIL alone cannot protect the tables. The lock is
 *    never held while calling an allocator or any Python API that could
 *    allocate or free, so it cannot deadlock against the hooks.
 *  - free never takes the GIL. A trace is removed before its block is
 *    released, and a realloc drops the old trace before the block moves,
 *    so another thread that is handed the same address cannot have its
 *    new trace removed.
 *  - Threads without the GIL: the thread's own frames are read (they
 *    cannot change while it is inside an allocator) but, unable to take
 *    references, the tracer resolves their lines at once. Once the
 *    interpreter is exiting, such threads get the "<unknown>" traceback:
 *    their thread states may be freed under them.
 *  - Chaining: the allocator found at start is called underneath. Stop
 *    restores it only when ours is still on top; otherwise (another
 *    tracer installed itself over ours) our hooks stay in the chain and
 *    pass through until they are on top again, then they are removed.
 *    Whether ours is in the chain is never guessed: a probe calls the
 *    allocator on top once and sees whether our hook is reached. Ours is
 *    installed only when it is not, so two copies can never call each
 *    other in a loop, whatever other tracer is around.
 *  - fork: the lock is taken around fork() so the child inherits
 *    consistent tables, then reset in the child.
 *  - Subinterpreters: only the interpreter that started tracing is
 *    traced. A subinterpreter's objects, code objects included, belong to
 *    it (from 3.12, its memory too) and go when it is destroyed: the
 *    tracer must hold no reference into it, and its blocks are not ours
 *    to explain.
 */
#include "tables.h"

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <string.h>

/* ---- state ---- */

typedef struct {
    PyMemAllocatorDomain domain;
    PyMemAllocatorEx inner;     /* the allocator underneath ours */
    int installed;              /* ours is in the chain */
} hook_ctx;

static hook_ctx hooks[3] = {
    {PYMEM_DOMAIN_RAW, {0}, 0},
    {PYMEM_DOMAIN_MEM, {0}, 0},
    {PYMEM_DOMAIN_OBJ, {0}, 0},
};

/* Nonzero while tracing. Written under the lock and the GIL, read by the
 * hooks without the lock first (a cheap early exit), then again under
 * the lock before touching the tables. */
static atomic_int tracing;

/* Set when the interpreter starts exiting (atexit). */
static atomic_int exiting;

/* The interpreter traced: the one that called start(). */
static PyInterpreterState *traced_interp;

/* Protected by the tables lock. */
static struct {
    int nframe;                 /* frames kept per traceback */
    ctm_rawframe *frames;       /* capture buffer of nframe frames */
    ctm_traces traces;
    ctm_interner *interner;
    size_t lost;                /* traces that could not be recorded */
} T;

static atomic_int lock_word;

static CTM_TLS int reentrant;
/* Set while probing whether a domain's allocator reaches our hook; the
 * hooks set bit (1 << index) of probe_seen when they are reached. */
static CTM_TLS int probing;
static CTM_TLS int probe_seen;
/* The block the calling thread's hooks recorded last: the reference
 * tracer (3.13+) skips objects just traced with the current traceback. */
static CTM_TLS uintptr_t last_block;

static inline void
tables_lock(void)
{
    unsigned spins = 0;
    while (atomic_exchange_explicit(&lock_word, 1, memory_order_acquire)) {
        while (atomic_load_explicit(&lock_word, memory_order_relaxed)) {
            if (++spins > 64) {
                sched_yield();
            }
        }
    }
}

static inline void
tables_unlock(void)
{
    atomic_store_explicit(&lock_word, 0, memory_order_release);
}

static void
fork_prepare(void)
{
    tables_lock();
    ctm_capture_fork_prepare();
}

static void
fork_parent(void)
{
    ctm_capture_fork_parent();
    tables_unlock();
}

static void
fork_child(void)
{
    /* Threads other than the forking one do not exist in the child; the
     * forking thread held the locks, so the tables are consistent. */
    ctm_capture_fork_child();
    atomic_store(&lock_word, 0);
}

/* ---- recording ---- */

/* The thread state whose frames to record, and whether the caller holds
 * the GIL. */
static inline PyThreadState *
current_tstate(int gil_known, int *gil)
{
    if (gil_known) {
        *gil = 1;
        return _PyThreadState_UncheckedGet();
    }
    PyThreadState *ts = NULL;
    if (!atomic_load_explicit(&exiting, memory_order_relaxed)) {
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

/* Capture the caller's traceback and intern it. Lock held. */
static int64_t
traceback_unlocked(PyThreadState *ts, int gil)
{
    int n, total;
    ctm_capture(ts, T.frames, T.nframe, &n, &total);
    return ctm_intern_traceback_unlocked(T.interner, T.frames, n, total, gil);
}

/* Record a trace for (domain, ptr): a block the allocator just returned
 * (block: domain 0, untraced so far), or any pointer (the track API).
 * Return 0, or -1 when the tables are out of memory (then nothing was
 * recorded). */
static int
add_trace(uint32_t domain, uintptr_t ptr, size_t size, int gil_known,
          int block)
{
    int gil;
    PyThreadState *ts = current_tstate(gil_known, &gil);
    int rc = 0;
    tables_lock();
    if (!gil && ts != NULL
        && atomic_load_explicit(&exiting, memory_order_relaxed)) {
        /* Checked again under the lock: the interpreter began exiting
         * after current_tstate looked, and it frees the thread states
         * of threads like this one (see ctm_tracer_at_exit). */
        ts = NULL;
    }
    if (ts != NULL && ts->interp != traced_interp) {
        tables_unlock();
        return 0;               /* a subinterpreter's: see the top */
    }
    if (atomic_load_explicit(&tracing, memory_order_relaxed)) {
        int64_t tb = traceback_unlocked(ts, gil);
        if (tb < 0
            || (block ? ctm_traces_add_block_unlocked(&T.traces, ptr, size,
                                                      (uint32_t)tb)
                      : ctm_traces_add_unlocked(&T.traces, domain, ptr,
                                                size, (uint32_t)tb)) < 0) {
            T.lost++;
            rc = -1;
        }
    }
    tables_unlock();
    last_block = ptr;
    return rc;
}

static void
remove_trace(uint32_t domain, uintptr_t ptr)
{
    tables_lock();
    ctm_traces_remove_unlocked(&T.traces, domain, ptr, NULL, NULL);
    tables_unlock();
}

/* ---- hooks ---- */

static void *
hook_alloc(hook_ctx *h, int use_calloc, size_t nelem, size_t elsize)
{
    PyMemAllocatorEx *a = &h->inner;
    if (probing) {
        probe_seen |= 1 << (int)(h - hooks);
        return a->malloc(a->ctx, nelem * elsize);
    }
    void *ptr = use_calloc ? a->calloc(a->ctx, nelem, elsize)
                           : a->malloc(a->ctx, nelem * elsize);
    if (ptr == NULL || reentrant
        || !atomic_load_explicit(&tracing, memory_order_relaxed)) {
        return ptr;
    }
    reentrant = 1;
    if (add_trace(CTM_DEFAULT_DOMAIN, (uintptr_t)ptr, nelem * elsize,
                  h->domain != PYMEM_DOMAIN_RAW, 1) < 0) {
        /* No room to trace it: fail the allocation, as the stdlib does,
         * rather than hand out an untraced block. */
        a->free(a->ctx, ptr);
        ptr = NULL;
    }
    reentrant = 0;
    return ptr;
}

static void *
hook_malloc(void *ctx, size_t size)
{
    /* pymalloc must see the real call: the inner malloc is called from
     * hook_alloc with nelem=1 so that the product is exact. */
    return hook_alloc((hook_ctx *)ctx, 0, 1, size);
}

static void *
hook_calloc(void *ctx, size_t nelem, size_t elsize)
{
    return hook_alloc((hook_ctx *)ctx, 1, nelem, elsize);
}

static void *
hook_realloc(void *ctx, void *ptr, size_t size)
{
    hook_ctx *h = ctx;
    PyMemAllocatorEx *a = &h->inner;
    if (ptr == NULL) {
        return hook_alloc(h, 0, 1, size);
    }
    if (!atomic_load_explicit(&tracing, memory_order_relaxed)) {
        return a->realloc(a->ctx, ptr, size);
    }
    /* Take the old trace out before the block may move: once realloc
     * returns, another thread may be handed the old address. */
    uint64_t old_size = 0;
    uint32_t old_tb = 0;
    tables_lock();
    int had = ctm_traces_remove_unlocked(&T.traces, CTM_DEFAULT_DOMAIN,
                                         (uintptr_t)ptr, &old_size,
                                         &old_tb);
    tables_unlock();

    void *ptr2 = a->realloc(a->ctx, ptr, size);
    if (ptr2 == NULL) {
        if (had) {
            /* The block is unchanged: give it its trace back. */
            tables_lock();
            if (ctm_traces_add_unlocked(&T.traces, CTM_DEFAULT_DOMAIN,
                                        (uintptr_t)ptr, old_size,
                                        old_tb) < 0) {
                T.lost++;
            }
            tables_unlock();
        }
        return NULL;
    }
    if (reentrant) {
        /* An allocator inside a hook resized a block: its outer hook
         * records the result. */
        return ptr2;
    }
    reentrant = 1;
    /* Like the stdlib, a resized block gets the resizer's traceback. A
     * failure cannot be reported: the block has already changed. */
    add_trace(CTM_DEFAULT_DOMAIN, (uintptr_t)ptr2, size,
              h->domain != PYMEM_DOMAIN_RAW, 1);
    reentrant = 0;
    return ptr2;
}

static void
hook_free(void *ctx, void *ptr)
{
    hook_ctx *h = ctx;
    if (ptr != NULL && atomic_load_explicit(&tracing, memory_order_relaxed)) {
        remove_trace(CTM_DEFAULT_DOMAIN, (uintptr_t)ptr);
    }
    h->inner.free(h->inner.ctx, ptr);
}

static int
is_ours(const PyMemAllocatorEx *a)
{
    return a->malloc == hook_malloc;
}

/* ---- reference tracer (3.13+): objects reused from free lists ---- */

#if CTM_HAVE_REFTRACER
static PyRefTracer prev_reftracer;
static void *prev_reftracer_data;
static int reftracer_installed;

static int
reftracer(PyObject *obj, PyRefTracerEvent event, void *data)
{
    (void)data;
    if (event == PyRefTracer_CREATE
        && atomic_load_explicit(&tracing, memory_order_relaxed)
        && !reentrant) {
        uintptr_t block = (uintptr_t)ctm_object_block(obj);
        if (block == last_block) {
            /* Just allocated and traced with the current traceback. One
             * allocation makes one object: forget the block, so that the
             * same memory reused later from a free list is seen. */
            last_block = 0;
        }
        else {
            /* An object made from a free list: its block was traced when
             * it was first allocated; give it the current traceback. */
            int gil;
            PyThreadState *ts = current_tstate(1, &gil);
            if (ts != NULL && ts->interp != traced_interp) {
                goto chain;
            }
            reentrant = 1;
            tables_lock();
            ctm_value *v = ctm_traces_get_unlocked(
                &T.traces, CTM_DEFAULT_DOMAIN, block);
            if (v != NULL) {
                /* interning touches the interner, not the traces: v
                 * stays valid */
                int64_t tb = traceback_unlocked(ts, gil);
                if (tb >= 0) {
                    (void)ctm_traces_retrace_unlocked(&T.traces, v,
                                                      (uint32_t)tb);
                }
            }
            tables_unlock();
            reentrant = 0;
        }
    }
chain:
    if (prev_reftracer != NULL) {
        return prev_reftracer(obj, event, prev_reftracer_data);
    }
    return 0;
}

static void
reftracer_install(void)
{
    void *data;
    PyRefTracer cur = PyRefTracer_GetTracer(&data);
    if (cur == reftracer) {
        return;
    }
    prev_reftracer = cur;
    prev_reftracer_data = data;
    PyRefTracer_SetTracer(reftracer, NULL);
    reftracer_installed = 1;
}

static void
reftracer_uninstall(void)
{
    void *data;
    if (reftracer_installed && PyRefTracer_GetTracer(&data) == reftracer) {
        PyRefTracer_SetTracer(prev_reftracer, prev_reftracer_data);
    }
    reftracer_installed = 0;
    prev_reftracer = NULL;
    prev_reftracer_data = NULL;
}
#else
static void reftracer_install(void) {}
static void reftracer_uninstall(void) {}
#endif

/* ---- lifetime (GIL held for all of these) ---- */

/* Whether a call to domain i's allocator reaches our hook (needs the
 * GIL: the probe allocates through the MEM and OBJ allocators). */
static int
reaches_ours(int i)
{
    PyMemAllocatorEx cur;
    PyMem_GetAllocator(hooks[i].domain, &cur);
    if (is_ours(&cur)) {
        return 1;
    }
    if (!hooks[i].installed) {
        /* Only we install our hooks: never installed, never reached. */
        return 0;
    }
    probing = 1;
    probe_seen = 0;
    void *p = cur.malloc(cur.ctx, 1);
    probing = 0;
    if (p != NULL) {
        cur.free(cur.ctx, p);
    }
    if (!(probe_seen & (1 << i))) {
        /* Another tracer restored allocators saved before ours. */
        hooks[i].installed = 0;
    }
    return hooks[i].installed;
}

static void
install_hooks(void)
{
    for (int i = 0; i < 3; i++) {
        if (reaches_ours(i)) {
            continue;
        }
        PyMem_GetAllocator(hooks[i].domain, &hooks[i].inner);
        PyMemAllocatorEx mine = {&hooks[i], hook_malloc, hook_calloc,
                                 hook_realloc, hook_free};
        PyMem_SetAllocator(hooks[i].domain, &mine);
        hooks[i].installed = 1;
    }
}

/* Take our hooks out of each domain where they are on top; elsewhere
 * (another allocator on top calls them) they stay, passing through. */
static void
uninstall_hooks(void)
{
    for (int i = 0; i < 3; i++) {
        PyMemAllocatorEx cur;
        PyMem_GetAllocator(hooks[i].domain, &cur);
        if (is_ours(&cur)) {
            PyMem_SetAllocator(hooks[i].domain, &hooks[i].inner);
            hooks[i].installed = 0;
        }
    }
}

static void stop_tracing(void);

/* Bring the hooks in line with the tracing state: remove pass-through
 * hooks that are on top again; if tracing and our hooks fell out of the
 * chain, put them back (reinstall) or, when we cannot know what was
 * missed in between, stop tracing rather than report stale traces. */
static void
reconcile(int reinstall)
{
    if (!atomic_load(&tracing)) {
        uninstall_hooks();
        return;
    }
    for (int i = 0; i < 3; i++) {
        if (!reaches_ours(i)) {
            if (reinstall) {
                install_hooks();
            }
            else {
                stop_tracing();
            }
            return;
        }
    }
}

void
ctm_tracer_after_other_tracer(int stopped)
{
    if (stopped) {
        /* Right after the other tracer's stop nothing was missed. */
        reconcile(1);
    }
    if (atomic_load(&tracing)) {
        /* Its start replaced our reference tracer, its stop cleared it. */
        reftracer_install();
    }
}

void
ctm_tracer_reconcile(void)
{
    reconcile(0);
}

static pthread_once_t atfork_once = PTHREAD_ONCE_INIT;

static void
register_atfork(void)
{
    pthread_atfork(fork_prepare, fork_parent, fork_child);
}

int
ctm_tracer_start(int nframe)
{
    if (nframe < 1 || nframe > CTM_MAX_NFRAME) {
        PyErr_Format(PyExc_ValueError,
                     "the number of frames must be in range [1; %d]",
                     CTM_MAX_NFRAME);
        return -1;
    }
    /* Tracing with hooks another tracer dropped is stopped first. */
    reconcile(0);
    if (atomic_load(&tracing)) {
        return 0;
    }
    pthread_once(&atfork_once, register_atfork);
    ctm_rawframe *frames = ctm_malloc((size_t)nframe * sizeof(ctm_rawframe));
    ctm_interner *in = T.interner ? NULL : ctm_interner_new();
    if (frames == NULL || (T.interner == NULL && in == NULL)) {
        ctm_free(frames);
        ctm_free(in);
        PyErr_NoMemory();
        return -1;
    }
    tables_lock();
    traced_interp = PyInterpreterState_Get();
    ctm_free(T.frames);
    T.frames = frames;
    T.nframe = nframe;
    if (in != NULL) {
        T.interner = in;
    }
    atomic_store(&tracing, 1);
    tables_unlock();
    install_hooks();
    reftracer_install();
    ctm_large_keep_spare(1);
    return 0;
}

void
ctm_tracer_clear(void)
{
    PyCodeObject **codes = NULL;
    size_t ncodes = 0;
    tables_lock();
    ctm_traces_clear_unlocked(&T.traces);
    if (T.interner != NULL) {
        ctm_interner_clear_unlocked(T.interner, &codes, &ncodes);
    }
    tables_unlock();
    /* Release the code objects outside the lock: their deallocation
     * frees memory through the hooks. */
    for (size_t i = 0; i < ncodes; i++) {
        Py_DECREF(codes[i]);
    }
    ctm_free(codes);
    ctm_large_release_spare();
}

static void
stop_tracing(void)
{
    tables_lock();
    atomic_store(&tracing, 0);
    tables_unlock();
    uninstall_hooks();
    reftracer_uninstall();
    ctm_large_keep_spare(0);
    ctm_tracer_clear();
}

void
ctm_tracer_stop(void)
{
    if (atomic_load(&tracing)) {
        stop_tracing();
    }
    else {
        reconcile(0);
    }
}

int
ctm_tracer_is_tracing(void)
{
    return atomic_load(&tracing);
}

int
ctm_tracer_nframe(void)
{
    /* The stdlib reports the last limit even when stopped. */
    return T.nframe ? T.nframe : 1;
}

void
ctm_tracer_traced_memory(size_t *current, size_t *peak)
{
    tables_lock();
    *current = T.traces.traced;
    *peak = T.traces.peak;
    tables_unlock();
}

void
ctm_tracer_reset_peak(void)
{
    tables_lock();
    T.traces.peak = T.traces.traced;
    tables_unlock();
}

size_t
ctm_tracer_memory(void)
{
    tables_lock();
    size_t n = ctm_traces_memory_unlocked(&T.traces);
    if (T.interner != NULL) {
        n += ctm_interner_memory_unlocked(T.interner);
    }
    n += (size_t)T.nframe * sizeof(ctm_rawframe);
    tables_unlock();
    n += ctm_capture_memory() + ctm_large_spare_bytes();
    return n;
}

void
ctm_tracer_at_exit(void)
{
    atomic_store(&exiting, 1);
    /* A barrier: a hook of a thread without the GIL that looked before
     * the store captures under the lock, and sees the flag once it has
     * the lock (add_trace). After this returns, no hook reads a thread
     * state that the interpreter's finalization is about to free. */
    tables_lock();
    tables_unlock();
}

int
ctm_tracer_track(uint32_t domain, uintptr_t ptr, size_t size)
{
    if (!atomic_load(&tracing)) {
        return -1;
    }
    int was = reentrant;
    reentrant = 1;
    int rc = add_trace(domain, ptr, size, 0, 0) < 0 ? -2 : 0;
    reentrant = was;
    return rc;
}

int
ctm_tracer_untrack(uint32_t domain, uintptr_t ptr)
{
    if (!atomic_load(&tracing)) {
        return -1;
    }
    remove_trace(domain, ptr);
    return 0;
}

/* ---- reading the tables (GIL held) ---- */

/* What the snapshot of a traceback needs of one tracer frame, copied
 * under the lock. */
typedef struct {
    PyCodeObject *code;         /* borrowed: the interner owns it */
    uint32_t cstring;
    int32_t lineno;
} frame_copy;

typedef struct {
    frame_copy *frames;
    ctm_cstring *cstrings;      /* data pointers borrowed (owned by the
                                   interner until the next clear, which
                                   needs the GIL we hold) */
} frames_copy;

/* Filename of a copied frame as a str (new reference). */
static PyObject *
frame_filename(const frames_copy *c, uint32_t i)
{
    const frame_copy *f = &c->frames[i];
    if (f->code != NULL) {
        PyObject *name = f->code->co_filename;
        if (name != NULL && PyUnicode_Check(name)) {
            return Py_NewRef(name);
        }
        return Py_NewRef(ctm_state.unknown_str);
    }
    const ctm_cstring *s = &c->cstrings[f->cstring];
    return PyUnicode_FromKindAndData(s->kind, s->data, s->length);
}

/* ---- snapshots ----
 *
 * take_snapshot holds the GIL throughout, so the interner is not cleared
 * under it, and its code objects and filenames stay alive; threads
 * without the GIL may still add traces, frames, tracebacks and filenames
 * until it takes the lock. Under the lock, it takes the count of live
 * traces of each tracer traceback (the tables keep them); turns each
 * live one (frames by instruction)
 * into a snapshot traceback (frames by line, deduplicated) in the
 * builder, while a helper thread maps the pages of the traces array;
 * then places the traces grouped by tracer traceback, each under its
 * snapshot traceback.
 *
 * Nothing under the lock may allocate through PyMem (the hooks would
 * wait for the lock it holds) or set a Python error. The filename of a
 * code frame is its code object's co_filename, hashed and compared in C;
 * those of resolved frames, copied as C strings by threads without the
 * GIL, are made into str before the lock is taken. A resolved frame
 * whose filename arrived since then sends the snapshot round again:
 * filenames are interned, so that happens at most once per new filename.
 */

/* The interner's C string filenames as str, ids [0, n). */
typedef struct {
    PyObject **strs;
    Py_hash_t *hashes;
    uint32_t n;
} cstring_strs;

static void
cstring_strs_free(cstring_strs *cs)
{
    for (uint32_t i = 0; i < cs->n; i++) {
        Py_DECREF(cs->strs[i]);
    }
    ctm_free(cs->strs);
    ctm_free(cs->hashes);
}

/* Make str of the filenames added since the last call. 0 or -1. */
static int
cstring_strs_update(cstring_strs *cs)
{
    tables_lock();
    uint32_t n = T.interner ? ctm_interner_ncstrings_unlocked(T.interner)
                            : 0;
    ctm_cstring *copy = NULL;
    if (n > cs->n) {
        copy = ctm_malloc((size_t)(n - cs->n) * sizeof(ctm_cstring));
        for (uint32_t i = cs->n; copy != NULL && i < n; i++) {
            copy[i - cs->n] = *ctm_interner_cstring_unlocked(T.interner, i);
        }
    }
    tables_unlock();
    if (n <= cs->n) {
        return 0;
    }
    PyObject **strs = copy ? ctm_realloc(cs->strs, n * sizeof(PyObject *))
                           : NULL;
    if (strs != NULL) {
        cs->strs = strs;
    }
    Py_hash_t *hashes = strs ? ctm_realloc(cs->hashes, n * sizeof(Py_hash_t))
                             : NULL;
    if (hashes == NULL) {
        ctm_free(copy);
        PyErr_NoMemory();
        return -1;
    }
    cs->hashes = hashes;
    for (uint32_t i = cs->n, first = cs->n; i < n; i++) {
        const ctm_cstring *c = &copy[i - first];
        PyObject *str = PyUnicode_FromKindAndData(c->kind, c->data,
                                                  c->length);
        if (str == NULL) {
            ctm_free(copy);
            return -1;
        }
        cs->strs[i] = str;
        cs->hashes[i] = PyObject_Hash(str);     /* a str's: cannot fail */
        cs->n = i + 1;
    }
    ctm_free(copy);
    return 0;
}

/* Tracer ids to snapshot indexes, filled under the lock. */
typedef struct {
    ctm_builder *b;
    ctm_interner *in;
    const cstring_strs *cs;
    uint32_t ncs;               /* filenames of cs usable this round */
    int64_t *frame_map;         /* tracer frame -> snapshot frame, or -1 */
    uint32_t *tb_map;           /* live tracer traceback -> snapshot's */
    int retry;                  /* a filename is not in cs yet */
} snap_maps;

static int64_t
map_frame(snap_maps *m, uint32_t id)
{
    if (m->frame_map[id] >= 0) {
        return m->frame_map[id];
    }
    ctm_tframe *f = ctm_interner_frame_unlocked(m->in, id);
    PyObject *name;
    Py_hash_t hash;
    if (f->code != NULL) {
        name = f->code->co_filename;
        if (name == NULL || !PyUnicode_Check(name)) {
            name = ctm_state.unknown_str;
        }
        /* str's own hash, in C even for a subclass */
        hash = PyUnicode_Type.tp_hash(name);
    }
    else if (f->filename < m->ncs) {
        name = m->cs->strs[f->filename];
        hash = m->cs->hashes[f->filename];
    }
    else {
        m->retry = 1;
        return -1;
    }
    int64_t s = ctm_builder_string_hashed(m->b, name, hash);
    if (s < 0) {
        return -1;
    }
    int64_t r = ctm_builder_frame(m->b, (uint32_t)s,
                                  ctm_tframe_lineno_unlocked(f));
    m->frame_map[id] = r;
    return r;
}

static int64_t
map_traceback(snap_maps *m, uint32_t id)
{
    const ctm_ttb *t = ctm_interner_traceback_unlocked(m->in, id);
    const uint32_t *tids = ctm_interner_frame_ids_unlocked(m->in) + t->first;
    uint32_t buf[128];
    uint32_t *ids = t->nframe <= 128 ? buf
        : ctm_malloc((size_t)t->nframe * sizeof(uint32_t));
    if (ids == NULL) {
        return -1;
    }
    int64_t r = -1;
    for (uint32_t i = 0; i < t->nframe; i++) {
        int64_t f = map_frame(m, tids[i]);
        if (f < 0) {
            goto done;
        }
        ids[i] = (uint32_t)f;
    }
    r = ctm_builder_traceback(m->b, ids, t->nframe, t->total_nframe);
done:
    if (ids != buf) {
        ctm_free(ids);
    }
    return r;
}

/* The pages of an array, touched 2 MiB at a time (a huge page) by
 * whichever thread takes the next chunk: the helper from the start, the
 * snapshot's own thread once its mapping is done. */
typedef struct {
    char *p;
    size_t n;
    atomic_size_t next;         /* offset of the next chunk */
} page_range;

#define TOUCH_CHUNK ((size_t)2 << 20)

static void
touch_range(void *arg)
{
    page_range *r = arg;
    size_t at;
    while ((at = atomic_fetch_add(&r->next, TOUCH_CHUNK)) < r->n) {
        ctm_touch_pages(r->p + at, r->n - at < TOUCH_CHUNK ? r->n - at
                                                           : TOUCH_CHUNK);
    }
}

/* Below this many bytes of traces, mapping their pages as the placing
 * pass goes is cheaper than a helper thread. */
#define TOUCH_HELPER_MIN ((size_t)4 << 20)

/* The lock held, b holding its errors: the live traces, grouped, in
 * *traces (*ntraces of them), and their tracebacks in b, with the first
 * ncs filenames of cs. 0; 1 to go round again (a filename was not
 * there); -1 if memory ran out. */
static int
snapshot_locked(const cstring_strs *cs, uint32_t ncs, ctm_builder *b,
                ctm_snap_trace **traces, Py_ssize_t *ntraces, size_t *bytes)
{
    ctm_interner *in = T.interner;
    uint32_t ntb = in ? (uint32_t)ctm_interner_ntracebacks_unlocked(in) : 0;
    *traces = NULL;
    *ntraces = 0;
    if (ntb == 0) {
        return 0;
    }
    snap_maps m = {b, in, cs, ncs, NULL, NULL, 0};
    ctm_grouping g;
    ctm_snap_trace *out = NULL;
    int rc = -1;
    if (ctm_traces_counts_unlocked(&T.traces, ntb, &g) < 0) {
        goto done;
    }
    size_t n = T.traces.ntraces;
    uint32_t nframes = ctm_interner_nframes_unlocked(in);
    out = ctm_large_new(n * sizeof(ctm_snap_trace), bytes);
    m.frame_map = ctm_malloc((size_t)nframes * sizeof(int64_t));
    m.tb_map = ctm_malloc((size_t)ntb * sizeof(uint32_t));
    if (out == NULL || m.frame_map == NULL || m.tb_map == NULL) {
        goto done;
    }
    memset(m.frame_map, 0xff, (size_t)nframes * sizeof(int64_t));
    /* the snapshot's tables hold at most what the live tracer tracebacks
     * name: room for that at once */
    size_t live = 0, refs = 0;
    for (uint32_t i = 0; i < ntb; i++) {
        if (g.counts[i]) {
            live++;
            refs += ctm_interner_traceback_unlocked(in, i)->nframe;
        }
    }
    if (ctm_builder_reserve_tables(b, (Py_ssize_t)(refs < nframes ? refs
                                                                  : nframes),
                                   (Py_ssize_t)live, (Py_ssize_t)refs) < 0) {
        goto done;
    }
    ctm_helper helper;
    page_range pages = {(char *)out, n * sizeof(ctm_snap_trace), 0};
    int helped = pages.n >= TOUCH_HELPER_MIN;
    if (helped) {
        ctm_helper_start(&helper, touch_range, &pages);
    }
    int mapped = 1;
    for (uint32_t i = 0; i < ntb && mapped; i++) {
        if (g.counts[i]) {
            int64_t t = map_traceback(&m, i);
            mapped = t >= 0;
            m.tb_map[i] = (uint32_t)t;
        }
    }
    if (helped) {
        touch_range(&pages);
        ctm_helper_join(&helper);
    }
    if (!mapped) {
        rc = m.retry ? 1 : -1;
        goto done;
    }
    if (ctm_traces_place_unlocked(&T.traces, &g, m.tb_map, out) < 0) {
        goto done;
    }
    *traces = out;
    *ntraces = (Py_ssize_t)n;
    out = NULL;
    rc = 0;
done:
    ctm_grouping_free(&g);
    ctm_free(out);
    ctm_free(m.frame_map);
    ctm_free(m.tb_map);
    return rc;
}

ctm_snapdata *
ctm_tracer_snapshot(void)
{
    cstring_strs cs = {0};
    ctm_snapdata *result = NULL;
    int rc = 1;
#ifdef CTM_LATE_FILENAMES
    /* Test builds: the first round leaves out the newest filename, as if
     * it had arrived after cs was made, so that the suite takes the
     * second round whenever a snapshot has resolved frames. */
    uint32_t late = 1;
#else
    uint32_t late = 0;
#endif
    while (rc > 0) {
        ctm_builder *b = NULL;
        if (cstring_strs_update(&cs) < 0 || (b = ctm_builder_new()) == NULL) {
            break;
        }
        ctm_snap_trace *traces;
        Py_ssize_t ntraces;
        size_t bytes = 0;
        ctm_builder_hold_errors(b);
        tables_lock();
        rc = snapshot_locked(&cs, cs.n - (late < cs.n ? late : cs.n), b,
                             &traces, &ntraces, &bytes);
        late = 0;
        tables_unlock();
        if (ctm_builder_release_errors(b) < 0 || rc < 0) {
            if (!PyErr_Occurred()) {
                PyErr_NoMemory();
            }
            ctm_builder_free(b);
            break;
        }
        if (rc == 0) {
            if (traces != NULL) {
                ctm_builder_adopt_traces(b, traces, ntraces);
            }
            result = ctm_builder_finish(b);
            if (result != NULL && result->traces != NULL) {
                result->traces_bytes = bytes;
            }
        }
        else {
            ctm_builder_free(b);
        }
    }
    cstring_strs_free(&cs);
    return result;
}

PyObject *
ctm_tracer_traceback_of(uint32_t domain, uintptr_t ptr)
{
    /* Copy the block's frames under the lock; build the tuple after. */
    frame_copy buf[64];
    frame_copy *frames = buf;
    ctm_cstring names[64];
    ctm_cstring *cnames = names;
    uint32_t n = 0;
    int found = 0, nomem = 0;
    PyObject *res = NULL;

    tables_lock();
    const ctm_value *v = atomic_load(&tracing)
        ? ctm_traces_get_unlocked(&T.traces, domain, ptr) : NULL;
    if (v != NULL) {
        ctm_interner *in = T.interner;
        const ctm_ttb *t = ctm_interner_traceback_unlocked(in, v->traceback);
        const uint32_t *ids = ctm_interner_frame_ids_unlocked(in);
        found = 1;
        n = t->nframe;
        if (n > 64) {
            frames = ctm_malloc(n * sizeof(frame_copy));
            cnames = ctm_malloc(n * sizeof(ctm_cstring));
            nomem = frames == NULL || cnames == NULL;
        }
        for (uint32_t i = 0; !nomem && i < n; i++) {
            ctm_tframe *f = ctm_interner_frame_unlocked(in,
                                                        ids[t->first + i]);
            frames[i].code = f->code;
            frames[i].cstring = i;
            frames[i].lineno = ctm_tframe_lineno_unlocked(f);
            if (f->code == NULL) {
                cnames[i] = *ctm_interner_cstring_unlocked(in, f->filename);
            }
        }
    }
    tables_unlock();
    if (!found) {
        Py_RETURN_NONE;
    }
    if (nomem) {
        PyErr_NoMemory();
        goto done;
    }
    frames_copy c = {frames, cnames};
    res = PyTuple_New(n);
    if (res == NULL) {
        goto done;
    }
    for (uint32_t i = 0; i < n; i++) {
        PyObject *name = frame_filename(&c, i);
        if (name == NULL) {
            Py_CLEAR(res);
            goto done;
        }
        PyObject *pair = Py_BuildValue("(Ni)", name, frames[i].lineno);
        if (pair == NULL) {
            Py_CLEAR(res);
            goto done;
        }
        PyTuple_SET_ITEM(res, i, pair);
    }
done:
    if (frames != buf) {
        ctm_free(frames);
    }
    if (cnames != names) {
        ctm_free(cnames);
    }
    return res;
}
