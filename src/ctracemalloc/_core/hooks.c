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
                int64_t tb = traceback_unlocked(ts, gil);
                if (tb >= 0) {
                    v->traceback = (uint32_t)tb;
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
}

static void
stop_tracing(void)
{
    tables_lock();
    atomic_store(&tracing, 0);
    tables_unlock();
    uninstall_hooks();
    reftracer_uninstall();
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
    n += ctm_capture_memory();
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

/* What a snapshot needs of one tracer frame, copied under the lock. */
typedef struct {
    PyCodeObject *code;         /* borrowed: the interner owns it */
    uint32_t cstring;
    int32_t lineno;
} frame_copy;

typedef struct {
    uint32_t ntb;
    uint32_t nframes;
    ctm_ttb *tbs;
    uint32_t *ids;
    frame_copy *frames;
    ctm_cstring *cstrings;      /* data pointers borrowed (owned by the
                                   interner until the next clear, which
                                   needs the GIL we hold) */
    uint32_t ncstrings;
} tables_copy;

static void
tables_copy_free(tables_copy *c)
{
    ctm_free(c->tbs);
    ctm_free(c->ids);
    ctm_free(c->frames);
    ctm_free(c->cstrings);
}

/* Copy what a snapshot needs of the interner: the tracebacks (those
 * with counts[i] == 0 keep no frame ids: no trace names them) and the
 * frames. Lock held. 0 or -1. */
static int
copy_interner_unlocked(tables_copy *c, const uint64_t *counts)
{
    ctm_interner *in = T.interner;
    memset(c, 0, sizeof(*c));
    if (in == NULL) {
        return 0;
    }
    c->ntb = (uint32_t)ctm_interner_ntracebacks_unlocked(in);
    size_t nids = 0;
    for (uint32_t i = 0; i < c->ntb; i++) {
        if (counts[i]) {
            nids += ctm_interner_traceback_unlocked(in, i)->nframe;
        }
    }
    uint32_t nframes = ctm_interner_nframes_unlocked(in);
    c->nframes = nframes;
    c->tbs = ctm_malloc((size_t)c->ntb * sizeof(ctm_ttb));
    c->ids = ctm_malloc(nids * sizeof(uint32_t));
    c->frames = ctm_malloc((size_t)nframes * sizeof(frame_copy));
    if (!c->tbs || !c->ids || !c->frames) {
        return -1;
    }
    const uint32_t *ids = ctm_interner_frame_ids_unlocked(in);
    uint32_t pos = 0;
    for (uint32_t i = 0; i < c->ntb; i++) {
        ctm_ttb t = *ctm_interner_traceback_unlocked(in, i);
        if (counts[i]) {
            memcpy(&c->ids[pos], &ids[t.first], t.nframe * sizeof(uint32_t));
            t.first = pos;
            pos += t.nframe;
        }
        else {
            t.nframe = 0;
            t.first = 0;
        }
        c->tbs[i] = t;
    }
    uint32_t ncstrings = 0;
    for (uint32_t i = 0; i < nframes; i++) {
        ctm_tframe *f = ctm_interner_frame_unlocked(in, i);
        c->frames[i].code = f->code;
        c->frames[i].cstring = f->filename;
        c->frames[i].lineno = ctm_tframe_lineno_unlocked(f);
        if (f->code == NULL && f->filename + 1 > ncstrings) {
            ncstrings = f->filename + 1;
        }
    }
    c->ncstrings = ncstrings;
    c->cstrings = ctm_malloc((size_t)ncstrings * sizeof(ctm_cstring));
    if (c->cstrings == NULL) {
        return -1;
    }
    for (uint32_t i = 0; i < ncstrings; i++) {
        c->cstrings[i] = *ctm_interner_cstring_unlocked(in, i);
    }
    return 0;
}

/* Filename of a copied frame as a str (new reference). */
static PyObject *
frame_filename(const tables_copy *c, uint32_t id)
{
    const frame_copy *f = &c->frames[id];
    if (f->code != NULL) {
        PyObject *name = f->code->co_filename;
        if (name != NULL && PyUnicode_Check(name)) {
            return Py_NewRef(name);
        }
        return Py_NewRef(ctm_st.unknown_str);
    }
    const ctm_cstring *s = &c->cstrings[f->cstring];
    return PyUnicode_FromKindAndData(s->kind, s->data, s->length);
}

/* Maps from tracer ids to snapshot indexes, filled on demand. */
typedef struct {
    ctm_builder *b;
    const tables_copy *c;
    int64_t *frame_map;         /* tracer frame -> snapshot frame */
    int64_t *tb_map;            /* tracer traceback -> snapshot traceback */
} snap_maps;

static int64_t
map_frame(snap_maps *m, uint32_t id)
{
    if (m->frame_map[id] >= 0) {
        return m->frame_map[id];
    }
    PyObject *name = frame_filename(m->c, id);
    if (name == NULL) {
        return -1;
    }
    int64_t s = ctm_builder_string(m->b, name);
    Py_DECREF(name);
    if (s < 0) {
        return -1;
    }
    int64_t f = ctm_builder_frame(m->b, (uint32_t)s, m->c->frames[id].lineno);
    m->frame_map[id] = f;
    return f;
}

static int64_t
map_traceback(snap_maps *m, uint32_t id)
{
    if (m->tb_map[id] >= 0) {
        return m->tb_map[id];
    }
    const ctm_ttb *t = &m->c->tbs[id];
    uint32_t buf[128];
    uint32_t *ids = t->nframe <= 128 ? buf
        : ctm_malloc((size_t)t->nframe * sizeof(uint32_t));
    if (ids == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    int64_t r = -1;
    for (uint32_t i = 0; i < t->nframe; i++) {
        int64_t f = map_frame(m, m->c->ids[t->first + i]);
        if (f < 0) {
            goto done;
        }
        ids[i] = (uint32_t)f;
    }
    r = ctm_builder_traceback(m->b, ids, t->nframe, t->total_nframe);
    m->tb_map[id] = r;
done:
    if (ids != buf) {
        ctm_free(ids);
    }
    return r;
}

ctm_snapdata *
ctm_tracer_snapshot(void)
{
    tables_copy c = {0};
    ctm_snapdata *result = NULL;
    snap_maps m = {0};
    uint64_t *counts = NULL;
    ctm_strace *traces = NULL;
    Py_ssize_t ntraces = 0;

    /* Under the lock: copy the live traces grouped by traceback (a
     * counting sort, so the analysis and the file format see runs), and
     * the tracebacks and frames they name. No Python call: the lock must
     * not be held while anything allocates through the hooks. */
    tables_lock();
    int rc = 0;
    size_t ntb = T.interner ? ctm_interner_ntracebacks_unlocked(T.interner)
                            : 0;
    if (ntb) {
        counts = ctm_calloc(ntb, sizeof(uint64_t));
        ntraces = (Py_ssize_t)T.traces.ntraces;
        traces = ctm_malloc_large((size_t)ntraces * sizeof(ctm_strace));
        rc = counts && traces ? ctm_traces_group_unlocked(
                                    &T.traces, (uint32_t)ntb, counts, traces)
                              : -1;
        if (rc == 0) {
            rc = copy_interner_unlocked(&c, counts);
        }
    }
    tables_unlock();
    if (rc < 0) {
        PyErr_NoMemory();
        goto done;
    }

    /* With the GIL only: turn tracer ids into deduplicated values. The
     * traces of tracer traceback i are the counts[i] after those of
     * tracebacks 0 to i - 1; they are renamed in place, and become the
     * snapshot's. */
    m.b = ctm_builder_new();
    if (m.b == NULL) {
        goto done;
    }
    m.c = &c;
    m.frame_map = ctm_malloc((size_t)c.nframes * sizeof(int64_t));
    m.tb_map = ctm_malloc((size_t)c.ntb * sizeof(int64_t));
    if (m.frame_map == NULL || m.tb_map == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    memset(m.frame_map, 0xff, (size_t)c.nframes * sizeof(int64_t));
    memset(m.tb_map, 0xff, (size_t)c.ntb * sizeof(int64_t));
    uint64_t pos = 0;
    for (uint32_t i = 0; i < c.ntb; i++) {
        if (counts[i] == 0) {
            continue;
        }
        int64_t tb = map_traceback(&m, i);
        if (tb < 0) {
            goto done;
        }
        for (uint64_t end = pos + counts[i]; pos < end; pos++) {
            traces[pos].traceback = (uint32_t)tb;
        }
    }
    if (traces != NULL) {
        ctm_builder_adopt_traces(m.b, traces, ntraces);
        traces = NULL;
    }
    result = ctm_builder_finish(m.b);
    m.b = NULL;
done:
    ctm_builder_free(m.b);
    ctm_free(m.frame_map);
    ctm_free(m.tb_map);
    ctm_free(counts);
    ctm_free(traces);
    tables_copy_free(&c);
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
    ctm_value *v = atomic_load(&tracing)
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
    tables_copy c = {0};
    c.frames = frames;
    c.cstrings = cnames;
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
