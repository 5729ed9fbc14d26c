/* The interceptors: the tracer's client for what the interpreter tells
 * only its own tracer. CPython wires these entry points to the stdlib's
 * tracer, and they do nothing unless it traces:
 *
 *  - PyTraceMalloc_Track / PyTraceMalloc_Untrack: memory an extension
 *    allocates itself and reports (numpy's array buffers, domain 389047;
 *    numpy 2.5 also untracks its PyMem_Raw buffers from domain 0);
 *  - _PyTraceMalloc_GetTraceback: the traceback of such a block (the
 *    interpreter's C-API tests read it);
 *  - _Py_NewReference and, on 3.12, _Py_NewReferenceNoTotal: an object
 *    made, also from a free list, where no allocator hook sees it; 3.13's
 *    reference tracer (reftracer.c) tells us instead.
 *
 * Extensions call them through their GOT slots, and so does the
 * interpreter's shared library for _Py_NewReference: while we trace, the
 * slots of every loaded object hold our replacements (elfgot.h), which
 * forward to the original (the stdlib's tracer gets its calls whether it
 * traces or not) and record in our tables. Objects loaded later are
 * patched when the interpreter looks up their module's PyInit_ function
 * with dlsym, before the module runs: the interpreter's own dlsym slot
 * holds a replacement that scans for new objects after each lookup.
 *
 * Each kind is probed at install: the probe makes the call happen and
 * checks that it arrives (a Track call from this object, whose slots are
 * patched like any other's; a float and a list made by the interpreter).
 * A kind whose probe fails (a static build that calls inside one object,
 * or pages that cannot be written) is put back, with one RuntimeWarning
 * per process that says what will not be traced.
 *
 * State: the sets and the originals are written with the GIL held, at
 * install and uninstall; the replacements may run in any thread and read
 * only the originals, which never change once found.
 */
#include "elfgot.h"
#include "intercept.h"
#include "tracer.h"
#include "tracerapi.h"          /* the track API (tracer.c) */

#include <dlfcn.h>
#include <string.h>

typedef int (*track_fn)(unsigned int, uintptr_t, size_t);
typedef int (*untrack_fn)(unsigned int, uintptr_t);
typedef PyObject *(*get_traceback_fn)(unsigned int, uintptr_t);
typedef void (*new_reference_fn)(PyObject *);
typedef void *(*dlsym_fn)(void *, const char *);

static track_fn orig_track;
static untrack_fn orig_untrack;
static get_traceback_fn orig_get_traceback;
static dlsym_fn orig_dlsym;
static ctm_traceback_source traceback_source;

/* The probes' block: a call for it is the probe's, never recorded. */
static char probe_block;
static _Atomic unsigned long probe_tracks;

void
ctm_intercept_set_traceback_source(ctm_traceback_source source)
{
    traceback_source = source;
}

/* ---- the replacements ---- */

static int
track(unsigned int domain, uintptr_t ptr, size_t size)
{
    if (ptr == (uintptr_t)&probe_block) {
        atomic_fetch_add(&probe_tracks, 1);
        return 0;
    }
    /* the stdlib's: 0, -1 out of memory, -2 not tracing */
    int theirs = orig_track(domain, ptr, size);
    /* ours: 0, -1 not tracing, -2 out of memory */
    int ours = ctm_tracer_track(domain, ptr, size);
    if (ours == -1) {
        return theirs;
    }
    return ours == 0 || theirs == 0 ? 0 : -1;
}

static int
untrack(unsigned int domain, uintptr_t ptr)
{
    if (ptr == (uintptr_t)&probe_block) {
        atomic_fetch_add(&probe_tracks, 1);
        return 0;
    }
    int theirs = orig_untrack(domain, ptr);
    return ctm_tracer_untrack(domain, ptr) == 0 ? 0 : theirs;
}

static PyObject *
get_traceback(unsigned int domain, uintptr_t ptr)
{
    if (ctm_tracer_tracing() && traceback_source != NULL) {
        return traceback_source(domain, ptr);
    }
    return orig_get_traceback(domain, ptr);
}

#if !CTM_HAVE_REFTRACER
static new_reference_fn orig_new_reference;
static new_reference_fn orig_new_reference_no_total;
/* per thread: objects announced, counted for the probe */
static CTM_TLS unsigned long new_references;

static inline void
new_object(PyObject *op)
{
    new_references++;
    if (ctm_tracer_tracing() && !ctm_reentrant) {
        ctm_tracer_new_object(op);
    }
}

static void
new_reference(PyObject *op)
{
    orig_new_reference(op);
    new_object(op);
}

static void
new_reference_no_total(PyObject *op)
{
    orig_new_reference_no_total(op);
    new_object(op);
}
#endif

static const ctm_got_symbol api_symbols[] = {
    {"PyTraceMalloc_Track", (void *)track},
    {"PyTraceMalloc_Untrack", (void *)untrack},
    {"_PyTraceMalloc_GetTraceback", (void *)get_traceback},
};
static ctm_got_set api_set = {.symbols = api_symbols};

#if !CTM_HAVE_REFTRACER
static ctm_got_symbol new_reference_symbols[2];
static ctm_got_set new_reference_set = {.symbols = new_reference_symbols};
#endif

static void *dlsym_hook(void *handle, const char *name);
static const ctm_got_symbol loader_symbols[] = {
    {"dlsym", (void *)dlsym_hook},
};
static ctm_got_set loader_set = {.symbols = loader_symbols,
                                  .nsymbols = 1};

/* ---- install, probes, uninstall ---- */

/* The originals, found once with dlsym, never through a slot we patch.
 * The track API is part of the C API: the interpreter defines it. */
static void
find_originals(void)
{
    static int found;
    if (found) {
        return;
    }
    found = 1;
    orig_dlsym = dlsym;
    orig_track = PyTraceMalloc_Track;
    orig_untrack = PyTraceMalloc_Untrack;
    orig_get_traceback = (get_traceback_fn)dlsym(
        RTLD_DEFAULT, "_PyTraceMalloc_GetTraceback");
    /* not exported: then nothing calls it */
    api_set.nsymbols = orig_get_traceback != NULL ? 3 : 2;
#if !CTM_HAVE_REFTRACER
    orig_new_reference = (new_reference_fn)dlsym(RTLD_DEFAULT,
                                                 "_Py_NewReference");
    orig_new_reference_no_total = (new_reference_fn)dlsym(
        RTLD_DEFAULT, "_Py_NewReferenceNoTotal");
    size_t n = 0;
    if (orig_new_reference != NULL) {
        new_reference_symbols[n++] = (ctm_got_symbol){
            "_Py_NewReference", (void *)new_reference};
    }
    if (orig_new_reference_no_total != NULL) {
        new_reference_symbols[n++] = (ctm_got_symbol){
            "_Py_NewReferenceNoTotal", (void *)new_reference_no_total};
    }
    /* none exported (cannot be, on these versions): the probe fails */
    new_reference_set.nsymbols = n;
#endif
    /* the interpreter's object: the one that defines its tracer */
    loader_set.only = (uintptr_t)orig_track;
}

/* The probe of the track API: a call from this object, through its own
 * slot, patched like every other object's. */
static int
api_probe(void)
{
    unsigned long before = atomic_load(&probe_tracks);
    (void)PyTraceMalloc_Track(0, (uintptr_t)&probe_block, 1);
    (void)PyTraceMalloc_Untrack(0, (uintptr_t)&probe_block);
    return atomic_load(&probe_tracks) == before + 2;
}

#if !CTM_HAVE_REFTRACER
/* The probe of new objects: a float and a list, which the interpreter
 * takes from its free lists when it can. */
static int
new_reference_probe(void)
{
    unsigned long before = new_references;
    PyObject *f = PyFloat_FromDouble(0.5);
    unsigned long after_float = new_references;
    PyObject *l = PyList_New(0);
    unsigned long after_list = new_references;
    Py_XDECREF(f);
    Py_XDECREF(l);
    if (f == NULL || l == NULL) {
        PyErr_Clear();
        return 0;
    }
    return after_float > before && after_list > after_float;
}
#endif

/* Whether the test build is told to fail the probe of this kind
 * (CTRACEMALLOC_TEST_FAIL_PROBE names kinds: "track", "newref"), to test
 * the fallback. */
static int
probe_failed_on_purpose(const char *kind)
{
#ifdef CTM_SELF_CHECK
    const char *fail = getenv("CTRACEMALLOC_TEST_FAIL_PROBE");
    return fail != NULL && strstr(fail, kind) != NULL;
#else
    (void)kind;
    return 0;
#endif
}

/* A kind of call, redirected as a whole: its slots, the probe that
 * shows its calls arrive, and what is not traced when they cannot. */
typedef struct {
    ctm_got_set *set;
    int (*probe)(void);
    const char *name;           /* in CTRACEMALLOC_TEST_FAIL_PROBE */
    const char *missed;         /* what the warning says is not traced */
    int warned;                 /* said once per process */
    int on;                     /* the slots hold our replacements */
} call_kind;

static call_kind kinds[] = {
    {&api_set, api_probe, "track",
     "the memory that extension modules report (PyTraceMalloc_Track)", 0, 0},
#if !CTM_HAVE_REFTRACER
    {&new_reference_set, new_reference_probe, "newref",
     "objects reused from free lists (they keep the traceback of their "
     "first allocation)", 0, 0},
#endif
};
#define NKINDS (sizeof(kinds) / sizeof(kinds[0]))

/* Patch the objects loaded since the last scan. With the GIL. */
static void
scan_new_objects(void)
{
    for (size_t i = 0; i < NKINDS; i++) {
        if (kinds[i].on) {
            (void)ctm_got_apply(kinds[i].set);
        }
    }
}

static void *
dlsym_hook(void *handle, const char *name)
{
    void *found = orig_dlsym(handle, name);
    if (found != NULL && ctm_tracer_tracing() && PyGILState_Check()) {
        scan_new_objects();
    }
    return found;
}

/* Redirect the kind's calls and probe them; if the probe fails, put them
 * back and warn (once). 0, or -1 if the warning is an error. */
static int
install_kind(call_kind *k)
{
    long n = ctm_got_apply(k->set);
    k->on = 1;
    if (n >= 0 && !k->set->failed && k->probe()
        && !probe_failed_on_purpose(k->name)) {
        return 0;
    }
    ctm_got_restore(k->set);
    k->on = 0;
    if (k->warned) {
        return 0;
    }
    k->warned = 1;
    return PyErr_WarnFormat(PyExc_RuntimeWarning, 1,
                            "ctracemalloc cannot trace %s on this Python build",
                            k->missed);
}

int
ctm_intercept_install(void)
{
    int any = 0;
    for (size_t i = 0; i < NKINDS; i++) {
        any |= kinds[i].on;
    }
    if (any) {
        return 0;
    }
    find_originals();
    int rc = 0;
    for (size_t i = 0; i < NKINDS && rc == 0; i++) {
        rc = install_kind(&kinds[i]);
        any |= kinds[i].on;
    }
    if (rc == 0 && any && ctm_got_apply(&loader_set) <= 0) {
        /* no slot for dlsym: modules loaded from now on are patched at
         * the next start only */
        ctm_got_restore(&loader_set);
    }
    if (rc < 0) {
        ctm_intercept_uninstall();
    }
    return rc;
}

void
ctm_intercept_got_counts(unsigned long counts[2])
{
    counts[0] += loader_set.scans;
    counts[1] += loader_set.replays;
    for (size_t i = 0; i < NKINDS; i++) {
        counts[0] += kinds[i].set->scans;
        counts[1] += kinds[i].set->replays;
    }
}

void
ctm_intercept_uninstall(void)
{
    ctm_got_restore(&loader_set);
    for (size_t i = NKINDS; i-- > 0;) {
        ctm_got_restore(kinds[i].set);
        kinds[i].on = 0;
    }
}
