/* Native allocations: the tracer's client for what extension modules and
 * the shared libraries they load take from the C allocator (malloc and
 * its family) and from anonymous mmap, which no allocator hook of the
 * interpreter sees. Their blocks are traced in CTM_NATIVE_DOMAIN with the
 * Python traceback of the calling thread at that moment.
 *
 * Those objects call the allocator through their GOT slots: while native
 * tracing is on, the slots of every loaded object hold our replacements
 * (elfgot.h), which call the allocator and record or remove a trace.
 * Never patched: the interpreter's own object (what it takes from malloc
 * is PyMem_Raw* and pymalloc arenas, domain 0 already), the object that
 * defines the allocator, libc, the loader and ours (the tracer's own
 * memory). The originals are found once with dlsym, the definitions
 * that the slots were bound to, never through a patched slot.
 *
 * Objects loaded later are patched when they load: the dlopen slots of
 * the patched objects (ctypes.CDLL, a library's plugins) and the
 * interpreter's own (import of an extension, its libraries with it) hold
 * a replacement that scans for new objects once the load returns, before
 * the module's init runs. dlclose drops the records of what it unloaded.
 *
 * Each block is counted once: a free (or a realloc or munmap) removes
 * the trace before the block goes back to the allocator, so that a block
 * another thread gets at the same address at once is never mistaken for
 * it; what failed is put back. A block an extension also reports through
 * PyTraceMalloc_Track moves to the reported domain (tracer.c). Frees of
 * blocks allocated before tracing are lookups that find nothing.
 *
 * Threads: the replacements run in any thread, with or without the GIL
 * or a thread state; the tracer reads the thread's own frames (tracer.h).
 * A call made while the thread records (ctm_reentrant) is not traced.
 * The originals and the symbol table are written once, with the GIL,
 * before any slot holds a replacement.
 */
#include "elfgot.h"
#include "native.h"
#include "tracer.h"

#include <dlfcn.h>
#include <stdarg.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

/* ---- the originals ---- */

typedef void *(*malloc_fn)(size_t);
typedef void *(*calloc_fn)(size_t, size_t);
typedef void *(*realloc_fn)(void *, size_t);
typedef void *(*reallocarray_fn)(void *, size_t, size_t);
typedef void (*free_fn)(void *);
typedef int (*posix_memalign_fn)(void **, size_t, size_t);
typedef void *(*aligned_fn)(size_t, size_t);
typedef void *(*mmap_fn)(void *, size_t, int, int, int, off_t);
typedef int (*munmap_fn)(void *, size_t);
typedef void *(*mremap_fn)(void *, size_t, size_t, int, ...);
typedef void *(*dlopen_fn)(const char *, int);
typedef int (*dlclose_fn)(void *);

static struct {
    malloc_fn malloc;
    calloc_fn calloc;
    realloc_fn realloc;
    reallocarray_fn reallocarray;
    free_fn free;
    posix_memalign_fn posix_memalign;
    aligned_fn aligned_alloc;
    aligned_fn memalign;
    malloc_fn valloc;
    malloc_fn pvalloc;
    mmap_fn mmap;
    mmap_fn mmap64;
    munmap_fn munmap;
    mremap_fn mremap;
    dlopen_fn dlopen;
    dlclose_fn dlclose;
} orig;

/* ---- recording ---- */

static inline int
tracing_native(void)
{
    return atomic_load_explicit(&ctm_tracer.native, memory_order_relaxed)
           && !ctm_reentrant;
}

/* Trace a block (when sampling, if the sampler takes it): fresh, when
 * the C allocator just handed it out (its address had no trace, unless
 * its free was not seen; see ctm_traces_add_block_unlocked); else a
 * mapping, which may replace one at its address. */
static void
record(void *ptr, size_t size, int fresh)
{
    if (!ctm_tracer_sampled(size)) {
        return;                 /* sampling, and this one passed over */
    }
    ctm_reentrant = 1;
    (void)ctm_tracer_record(CTM_NATIVE_DOMAIN, (uintptr_t)ptr, size, 0,
                            fresh, 0);
    ctm_reentrant = 0;
}

/* A trace taken out before a call that may give the block back. */
typedef struct {
    int had;
    uint64_t size;
    uint32_t traceback;
    unsigned epoch;
} taken;

static taken
take(void *ptr)
{
    taken t = {0, 0, 0, ctm_tracer_epoch()};
    if (ptr != NULL) {
        t.had = ctm_tracer_remove(CTM_NATIVE_DOMAIN, (uintptr_t)ptr, &t.size,
                                  &t.traceback);
    }
    return t;
}

/* Put back (part of) a trace taken: size bytes at ptr. */
static void
put_back(const taken *t, void *ptr, uint64_t size)
{
    ctm_reentrant = 1;
    ctm_tracer_restore(CTM_NATIVE_DOMAIN, (uintptr_t)ptr, size, t->traceback,
                       t->epoch, 0);
    ctm_reentrant = 0;
}

/* ---- the replacements ---- */

/* The functions that return a new block of `bytes` bytes, or NULL. */
#define ALLOCATOR_REPLACEMENT(name, params, args, bytes)                   \
    static void *native_##name params                                     \
    {                                                                     \
        void *ptr = orig.name args;                                       \
        if (ptr != NULL && tracing_native()) {                            \
            record(ptr, bytes, 1);                                        \
        }                                                                 \
        return ptr;                                                       \
    }
ALLOCATOR_REPLACEMENT(malloc, (size_t size), (size), size)
/* (no overflow in n * size: the allocator checked) */
ALLOCATOR_REPLACEMENT(calloc, (size_t n, size_t size), (n, size), n * size)
ALLOCATOR_REPLACEMENT(aligned_alloc, (size_t alignment, size_t size),
                      (alignment, size), size)
ALLOCATOR_REPLACEMENT(memalign, (size_t alignment, size_t size),
                      (alignment, size), size)
ALLOCATOR_REPLACEMENT(valloc, (size_t size), (size), size)
ALLOCATOR_REPLACEMENT(pvalloc, (size_t size), (size), size)

/* realloc and reallocarray: the new block gets the caller's traceback,
 * as a realloc of domain 0 does. A size of 0 frees the block (glibc):
 * then NULL is no failure. */
static void *
resized(const taken *t, void *ptr, void *result, size_t n, size_t size)
{
    if (result != NULL) {
        record(result, n * size, 1);
    }
    else if (t->had && n != 0 && size != 0) {
        put_back(t, ptr, t->size);
    }
    return result;
}

static void *
native_realloc(void *ptr, size_t size)
{
    if (!tracing_native()) {
        return orig.realloc(ptr, size);
    }
    taken t = take(ptr);
    return resized(&t, ptr, orig.realloc(ptr, size), 1, size);
}

static void *
native_reallocarray(void *ptr, size_t n, size_t size)
{
    if (!tracing_native()) {
        return orig.reallocarray(ptr, n, size);
    }
    taken t = take(ptr);
    return resized(&t, ptr, orig.reallocarray(ptr, n, size), n, size);
}

static void
native_free(void *ptr)
{
    if (ptr != NULL && tracing_native()) {
        (void)take(ptr);
    }
    orig.free(ptr);
}

static int
native_posix_memalign(void **out, size_t alignment, size_t size)
{
    int rc = orig.posix_memalign(out, alignment, size);
    if (rc == 0 && tracing_native()) {
        record(*out, size, 1);
    }
    return rc;
}

/* Anonymous mappings only: a file's pages are the file's. */
#define MMAP_REPLACEMENT(name)                                            \
    static void *native_##name(void *addr, size_t length, int prot,       \
                               int flags, int fd, off_t offset)          \
    {                                                                     \
        void *ptr = orig.name(addr, length, prot, flags, fd, offset);     \
        if (ptr != MAP_FAILED && (flags & MAP_ANONYMOUS)                  \
            && tracing_native()) {                                        \
            record(ptr, length, 0);                                       \
        }                                                                 \
        return ptr;                                                       \
    }
MMAP_REPLACEMENT(mmap)
MMAP_REPLACEMENT(mmap64)

static uint64_t
pages(size_t length)
{
    uint64_t page = (uint64_t)sysconf(_SC_PAGESIZE);
    return ((uint64_t)length + page - 1) / page * page;
}

/* The trace of a mapping starts at its address: unmapping its first
 * pages leaves the rest traced from the first page left; unmapping from
 * inside a mapping is not seen (its trace keeps its size). */
static int
native_munmap(void *addr, size_t length)
{
    if (!tracing_native()) {
        return orig.munmap(addr, length);
    }
    taken t = take(addr);
    int rc = orig.munmap(addr, length);
    uint64_t gone = pages(length);
    if (t.had && rc != 0) {
        put_back(&t, addr, t.size);
    }
    else if (t.had && t.size > gone) {
        put_back(&t, (char *)addr + gone, t.size - gone);
    }
    return rc;
}

/* A traced mapping moved or resized is traced again, with the caller's
 * traceback; an untraced one (a file's) stays untraced. */
static void *
native_mremap(void *addr, size_t old_length, size_t length, int flags, ...)
{
    void *new_address = NULL;
    if (flags & MREMAP_FIXED) {
        va_list ap;
        va_start(ap, flags);
        new_address = va_arg(ap, void *);
        va_end(ap);
    }
    if (!tracing_native()) {
        return orig.mremap(addr, old_length, length, flags, new_address);
    }
    taken t = take(addr);
    void *ptr = orig.mremap(addr, old_length, length, flags, new_address);
    if (t.had && ptr != MAP_FAILED) {
        record(ptr, length, 0);
    }
    else if (t.had) {
        put_back(&t, addr, t.size);
    }
    return ptr;
}

static ctm_got_set native_set;
static ctm_got_set interpreter_loads;

static void *
native_dlopen(const char *file, int mode)
{
    void *handle = orig.dlopen(file, mode);
    if (handle != NULL) {
        /* only while the sets are applied: see ctm_got_rescan */
        (void)ctm_got_rescan(&native_set);
    }
    return handle;
}

static int
native_dlclose(void *handle)
{
    int rc = orig.dlclose(handle);
    ctm_got_forget_unloaded(&native_set);
    return rc;
}

/* ---- the table of intercepted functions ---- */

/* Each function once: its name, where its original goes, and its
 * replacement. */
#define NATIVE_FUNCTIONS(X)                                               \
    X(malloc) X(calloc) X(realloc) X(reallocarray) X(free)                \
    X(posix_memalign) X(aligned_alloc) X(memalign) X(valloc) X(pvalloc)   \
    X(mmap) X(mmap64) X(munmap) X(mremap) X(dlopen) X(dlclose)

typedef struct {
    const char *name;
    void **original;
    void *replacement;
} native_function;

#define NATIVE_ENTRY(f) {#f, (void **)&orig.f, (void *)native_##f},
static const native_function functions[] = {NATIVE_FUNCTIONS(NATIVE_ENTRY)};
#define NFUNCTIONS (sizeof(functions) / sizeof(functions[0]))

/* The symbols patched: those whose original exists here. */
static ctm_got_symbol symbols[NFUNCTIONS];
static const ctm_got_symbol dlopen_symbol[] = {
    {"dlopen", (void *)native_dlopen},
};

/* The originals and the sets, found once: 0, or -1 if an allocator
 * function every program has is missing. */
static int
find_originals(void)
{
    static int found;
    if (found) {
        return found > 0 ? 0 : -1;
    }
    found = 1;
    size_t n = 0;
    for (size_t i = 0; i < NFUNCTIONS; i++) {
        *functions[i].original = dlsym(RTLD_DEFAULT, functions[i].name);
        if (*functions[i].original != NULL) {
            symbols[n++] = (ctm_got_symbol){functions[i].name,
                                            functions[i].replacement,
                                            *functions[i].original};
        }
    }
    if (orig.malloc == NULL || orig.calloc == NULL || orig.realloc == NULL
        || orig.free == NULL || orig.mmap == NULL || orig.munmap == NULL
        || orig.dlopen == NULL || orig.dlclose == NULL
        || dlsym(RTLD_DEFAULT, "PyTraceMalloc_Track") == NULL) {
        found = -1;
        return -1;
    }
    native_set.symbols = symbols;
    native_set.nsymbols = n;
    /* Never patched: the interpreter, ourselves, the allocator, libc
     * (and libpthread where it is apart): glibc calls malloc through its
     * own PLT, from functions the tracer calls with its lock held. The
     * interpreter is the object that defines the track API, found with
     * dlsym: our own slot for it may hold our replacement. libc is the
     * object of a function no sanitizer intercepts, malloc's and mmap's
     * being the sanitizer's then. */
    uintptr_t interpreter = (uintptr_t)dlsym(RTLD_DEFAULT,
                                             "PyTraceMalloc_Track");
    uintptr_t skip[CTM_GOT_MAX_SKIP] = {
        interpreter,
        (uintptr_t)ctm_native_install,
        (uintptr_t)orig.malloc,
        (uintptr_t)orig.mmap,
        (uintptr_t)dlsym(RTLD_DEFAULT, "gnu_get_libc_version"),
        (uintptr_t)dlsym(RTLD_DEFAULT, "pthread_create"),
    };
    memcpy(native_set.skip, skip, sizeof(skip));
    /* the interpreter's dlopen: imports of extensions */
    interpreter_loads.symbols = dlopen_symbol;
    interpreter_loads.nsymbols = 1;
    interpreter_loads.only = interpreter;
    return 0;
}

/* ---- install, probe, uninstall ---- */

static int warned;

/* Whether the probe object's malloc and free arrive, and only once
 * each. */
static int
probe(const ctm_native_probe *p)
{
    const size_t size = 4093;
    int64_t saved = ctm_sample_force_next();    /* traced if sampling */
    void *block = p->malloc(size);
    ctm_sample_resume(saved);
    if (block == NULL) {
        return 0;
    }
    int seen = ctm_tracer_trace_size(CTM_NATIVE_DOMAIN, (uintptr_t)block)
               == (int64_t)size;
    p->free(block);
    return seen
           && ctm_tracer_trace_size(CTM_NATIVE_DOMAIN, (uintptr_t)block) < 0;
}

static int
probe_failed_on_purpose(void)
{
#ifdef CTM_SELF_CHECK
    const char *fail = getenv("CTRACEMALLOC_TEST_FAIL_PROBE");
    return fail != NULL && strstr(fail, "native") != NULL;
#else
    return 0;
#endif
}

/* The probe object's functions: NULL with an exception set if it cannot
 * be imported. */
static const ctm_native_probe *
probe_functions(void)
{
    static const ctm_native_probe *functions;
    if (functions == NULL) {
        PyObject *module = PyImport_ImportModule("ctracemalloc._nativeprobe");
        if (module == NULL) {
            return NULL;
        }
        Py_DECREF(module);  /* extension modules stay loaded */
        functions = PyCapsule_Import(CTM_NATIVE_PROBE_CAPSULE, 0);
    }
    return functions;
}

int
ctm_native_active(void)
{
    return atomic_load(&ctm_tracer.native);
}

size_t
ctm_native_slots(void)
{
    return ctm_got_written(&native_set) + ctm_got_written(&interpreter_loads);
}

void
ctm_native_got_counts(unsigned long counts[2])
{
    counts[0] += native_set.scans + interpreter_loads.scans;
    counts[1] += native_set.replays + interpreter_loads.replays;
}

int
ctm_native_install(void)
{
    if (ctm_native_active()) {
        return 0;
    }
    const ctm_native_probe *p = probe_functions();
    if (p == NULL) {
        return -1;
    }
    int ok = ctm_got_supported() && find_originals() == 0;
    if (ok) {
        atomic_store(&ctm_tracer.native, 1);
        ok = ctm_got_apply(&native_set) >= 0 && !native_set.failed
             && ctm_got_apply(&interpreter_loads) >= 0 && probe(p)
             && !probe_failed_on_purpose();
    }
    if (ok) {
        return 0;
    }
    ctm_native_uninstall();
    if (warned) {
        return 0;
    }
    warned = 1;
    return PyErr_WarnEx(PyExc_RuntimeWarning,
                        "ctracemalloc cannot trace native memory (C "
                        "allocations of extension modules) on this Python "
                        "build", 1);
}

void
ctm_native_uninstall(void)
{
    atomic_store(&ctm_tracer.native, 0);
    ctm_got_restore(&interpreter_loads);
    ctm_got_restore(&native_set);
}
