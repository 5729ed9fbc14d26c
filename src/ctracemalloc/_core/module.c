/* The _ctracemalloc module: init, which makes every type of the module
 * in one place and in order, and the module-level functions of the
 * tracemalloc API.
 *
 * The tracer is process-wide, like the allocators it hooks, so there is
 * one module state (ctm_state, in pyutil.c), filled here once, and the
 * module refuses to load in a subinterpreter rather than share it
 * unsafely.
 *
 * Argument parsing uses the C API's own converters, so a wrong argument
 * raises exactly what the stdlib's _tracemalloc raises on the same
 * Python version.
 */
#include "formats.h"
#include "intercept.h"
#include "native.h"
#include "snapshot.h"
#include "tracerapi.h"
#include "types.h"
#include "ctracemalloc.h"

/* The module functions that take_snapshot calls through the package, so
 * that replacing them there (unittest.mock.patch) is honoured. */
static PyObject *orig_is_tracing;
static PyObject *orig_get_traceback_limit;
static PyObject *orig_get_traces;

static PyObject *
start(PyObject *self, PyObject *args, PyObject *kwargs)
{
    (void)self;
    static char *keywords[] = {"", "native", "peak", "sample_interval",
                               NULL};
    int nframe = 1, native = 0, peak = 0;
    Py_ssize_t interval = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "|i$ppn:start", keywords,
                                     &nframe, &native, &peak, &interval)) {
        return NULL;
    }
    if (interval < 0) {
        PyErr_SetString(PyExc_ValueError, "sample_interval must be >= 0");
        return NULL;
    }
    if (ctm_tracer_start(nframe, native, peak, (uint64_t)interval) < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *
stop(PyObject *self, PyObject *unused)
{
    (void)self;
    (void)unused;
    ctm_tracer_stop();
    Py_RETURN_NONE;
}

static PyObject *
is_tracing(PyObject *self, PyObject *unused)
{
    (void)self;
    (void)unused;
    ctm_tracer_reconcile();
    return PyBool_FromLong(ctm_tracer_is_tracing());
}

static PyObject *
clear_traces(PyObject *self, PyObject *unused)
{
    (void)self;
    (void)unused;
    ctm_tracer_clear();
    Py_RETURN_NONE;
}

static PyObject *
get_traceback_limit(PyObject *self, PyObject *unused)
{
    (void)self;
    (void)unused;
    return PyLong_FromLong(ctm_tracer_nframe());
}

static PyObject *
get_traced_memory(PyObject *self, PyObject *unused)
{
    (void)self;
    (void)unused;
    ctm_tracer_reconcile();
    size_t current, peak;
    ctm_tracer_traced_memory(&current, &peak);
    return Py_BuildValue("nn", (Py_ssize_t)current, (Py_ssize_t)peak);
}

static PyObject *
reset_peak(PyObject *self, PyObject *unused)
{
    (void)self;
    (void)unused;
    ctm_tracer_reset_peak();
    Py_RETURN_NONE;
}

static PyObject *
get_tracemalloc_memory(PyObject *self, PyObject *unused)
{
    (void)self;
    (void)unused;
    return PyLong_FromSize_t(ctm_tracer_memory());
}

static PyObject *
interner_stats(PyObject *self, PyObject *unused)
{
    (void)self;
    (void)unused;
    size_t ntb, nframes;
    unsigned compactions;
    ctm_tracer_interner_stats(&ntb, &nframes, &compactions);
    return Py_BuildValue("{s:n,s:n,s:I,s:s}", "tracebacks",
                         (Py_ssize_t)ntb, "frames", (Py_ssize_t)nframes,
                         "compactions", compactions, "code_deaths",
                         ctm_tracer_code_notice());
}

static PyObject *
not_tracing_error(void)
{
    PyErr_SetString(PyExc_RuntimeError,
                    "the tracemalloc module must be tracing memory "
                    "allocations to take a snapshot");
    return NULL;
}

/* take_snapshot() through functions replaced on the package: the slow,
 * generic path of the stdlib. */
static PyObject *
take_snapshot_generic(PyObject *is_tracing_fn, PyObject *limit_fn,
                      PyObject *traces_fn)
{
    PyObject *res = NULL, *traces = NULL, *limit = NULL;
    PyObject *on = PyObject_CallNoArgs(is_tracing_fn);
    if (on == NULL) {
        return NULL;
    }
    int truth = PyObject_IsTrue(on);
    Py_DECREF(on);
    if (truth < 0) {
        return NULL;
    }
    if (!truth) {
        return not_tracing_error();
    }
    traces = PyObject_CallNoArgs(traces_fn);
    if (traces == NULL) {
        goto done;
    }
    limit = PyObject_CallNoArgs(limit_fn);
    if (limit == NULL) {
        goto done;
    }
    res = PyObject_CallFunctionObjArgs((PyObject *)ctm_state.Snapshot, traces,
                                       limit, NULL);
done:
    Py_XDECREF(traces);
    Py_XDECREF(limit);
    return res;
}

static PyObject *
take_snapshot(PyObject *self, PyObject *unused)
{
    (void)unused;
    PyObject *pkg_name = PyUnicode_FromString("ctracemalloc");
    if (pkg_name == NULL) {
        return NULL;
    }
    PyObject *pkg = PyImport_GetModule(pkg_name);
    Py_DECREF(pkg_name);
    if (pkg == NULL) {
        if (PyErr_Occurred()) {
            return NULL;
        }
        pkg = Py_NewRef(self);
    }
    PyObject *res = NULL;
    PyObject *fn1 = PyObject_GetAttrString(pkg, "is_tracing");
    PyObject *fn2 = PyObject_GetAttrString(pkg, "get_traceback_limit");
    PyObject *fn3 = PyObject_GetAttrString(pkg, "_get_traces");
    Py_DECREF(pkg);
    if (fn1 == NULL || fn2 == NULL || fn3 == NULL) {
        goto done;
    }
    if (fn1 != orig_is_tracing || fn2 != orig_get_traceback_limit
        || fn3 != orig_get_traces) {
        res = take_snapshot_generic(fn1, fn2, fn3);
        goto done;
    }
    if (!ctm_tracer_is_tracing()) {
        not_tracing_error();
        goto done;
    }
    ctm_snapdata *data = ctm_tracer_snapshot(0);
    if (data == NULL) {
        goto done;
    }
    PyObject *limit = PyLong_FromLong(ctm_tracer_nframe());
    if (limit == NULL) {
        ctm_snapdata_free(data);
        goto done;
    }
    res = ctm_snapshot_new(data, limit);
    Py_DECREF(limit);
done:
    Py_XDECREF(fn1);
    Py_XDECREF(fn2);
    Py_XDECREF(fn3);
    return res;
}

static PyObject *
take_peak_snapshot(PyObject *self, PyObject *unused)
{
    (void)self;
    (void)unused;
    ctm_tracer_reconcile();
    if (!ctm_tracer_is_tracing()) {
        return not_tracing_error();
    }
    if (!ctm_tracer_peak_on()) {
        PyErr_SetString(PyExc_RuntimeError,
                        "the peak is recorded only when tracing was "
                        "started with start(peak=True)");
        return NULL;
    }
    PyObject *limit = PyLong_FromLong(ctm_tracer_nframe());
    if (limit == NULL) {
        return NULL;
    }
    PyObject *res = NULL;
    ctm_snapdata *data = ctm_tracer_snapshot(1);
    if (data != NULL) {
        res = ctm_snapshot_new(data, limit);
    }
    Py_DECREF(limit);
    return res;
}

static PyObject *
get_timeline(PyObject *self, PyObject *unused)
{
    (void)self;
    (void)unused;
    size_t n;
    ctm_point *points = ctm_tracer_timeline(&n);
    if (points == NULL) {
        return NULL;
    }
    PyObject *list = PyList_New((Py_ssize_t)n);
    for (size_t i = 0; list != NULL && i < n; i++) {
        PyObject *item = Py_BuildValue("dK", (double)points[i].ns / 1e9,
                                       (unsigned long long)points[i].bytes);
        if (item == NULL) {
            Py_CLEAR(list);
            break;
        }
        PyList_SET_ITEM(list, (Py_ssize_t)i, item);
    }
    ctm_free(points);
    return list;
}

static PyObject *
get_traces(PyObject *self, PyObject *unused)
{
    (void)self;
    (void)unused;
    if (!ctm_tracer_is_tracing()) {
        return PyList_New(0);
    }
    ctm_snapdata *data = ctm_tracer_snapshot(0);
    if (data == NULL) {
        return NULL;
    }
    PyObject **cache = NULL;
    PyObject *list = PyList_New(data->ntraces);
    if (list == NULL) {
        goto done;
    }
    cache = ctm_calloc((size_t)data->ntracebacks, sizeof(PyObject *));
    if (cache == NULL) {
        Py_CLEAR(list);
        PyErr_NoMemory();
        goto done;
    }
    for (Py_ssize_t i = 0; i < data->ntraces; i++) {
        PyObject *t = ctm_snapdata_trace_tuple(data, i, cache);
        if (t == NULL) {
            Py_CLEAR(list);
            goto done;
        }
        PyList_SET_ITEM(list, i, t);
    }
done:
    if (cache != NULL) {
        for (Py_ssize_t i = 0; i < data->ntracebacks; i++) {
            Py_XDECREF(cache[i]);
        }
        ctm_free(cache);
    }
    ctm_snapdata_free(data);
    return list;
}

static PyObject *
raw_object_traceback(PyObject *obj)
{
    return ctm_tracer_traceback_of(CTM_DEFAULT_DOMAIN,
                                   (uintptr_t)ctm_object_block(obj));
}

static PyObject *
get_object_traceback_raw(PyObject *self, PyObject *obj)
{
    (void)self;
    return raw_object_traceback(obj);
}

static PyObject *
get_object_traceback(PyObject *self, PyObject *args, PyObject *kwargs)
{
    (void)self;
    /* A Python function in the stdlib: obj may be passed by keyword. */
    static char *kwlist[] = {"obj", NULL};
    PyObject *obj;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O:get_object_traceback",
                                     kwlist, &obj)) {
        return NULL;
    }
    PyObject *functions = NULL;
    PyObject *frames = ctm_tracer_named_traceback_of(
        CTM_DEFAULT_DOMAIN, (uintptr_t)ctm_object_block(obj), &functions);
    if (frames == NULL || frames == Py_None) {
        return frames;
    }
    PyObject *tb = ctm_traceback_new(frames, NULL, functions);
    Py_DECREF(frames);
    Py_XDECREF(functions);
    return tb;
}

static PyObject *
format_size(PyObject *self, PyObject *args, PyObject *kwargs)
{
    /* Python functions in the stdlib: arguments may be keywords */
    static char *kwlist[] = {"size", "sign", NULL};
    (void)self;
    PyObject *size;
    int sign;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "Op:_format_size", kwlist,
                                     &size, &sign)) {
        return NULL;
    }
    return ctm_format_size(size, sign);
}

static PyObject *
normalize_filename(PyObject *self, PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"filename", NULL};
    (void)self;
    PyObject *filename;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O:_normalize_filename",
                                     kwlist, &filename)) {
        return NULL;
    }
    return ctm_normalize_filename(filename);
}

/* Parse (domain, ptr) for track/untrack: unsigned int and address. */
static int
parse_block(PyObject *domain_obj, PyObject *ptr_obj, uint32_t *domain,
            uintptr_t *ptr)
{
    unsigned long d = PyLong_AsUnsignedLong(domain_obj);
    if (d == (unsigned long)-1 && PyErr_Occurred()) {
        return -1;
    }
    if (d > UINT32_MAX) {
        PyErr_SetString(PyExc_OverflowError,
                        "domain must be in range [0; 4294967295]");
        return -1;
    }
    void *p = PyLong_AsVoidPtr(ptr_obj);
    if (p == NULL && PyErr_Occurred()) {
        return -1;
    }
    *domain = (uint32_t)d;
    *ptr = (uintptr_t)p;
    return 0;
}

static PyObject *
track_result(int rc)
{
    if (rc == -1) {
        PyErr_SetString(PyExc_RuntimeError,
                        "ctracemalloc is not tracing memory allocations");
        return NULL;
    }
    if (rc == -2) {
        return PyErr_NoMemory();
    }
    Py_RETURN_NONE;
}

static PyObject *
track(PyObject *self, PyObject *args)
{
    (void)self;
    PyObject *domain_obj, *ptr_obj;
    Py_ssize_t size;
    uint32_t domain;
    uintptr_t ptr;
    if (!PyArg_ParseTuple(args, "OOn:track", &domain_obj, &ptr_obj, &size)
        || parse_block(domain_obj, ptr_obj, &domain, &ptr) < 0) {
        return NULL;
    }
    if (size < 0) {
        PyErr_SetString(PyExc_ValueError, "size must not be negative");
        return NULL;
    }
    return track_result(ctm_tracer_track(domain, ptr, (size_t)size));
}

static PyObject *
untrack(PyObject *self, PyObject *args)
{
    (void)self;
    PyObject *domain_obj, *ptr_obj;
    uint32_t domain;
    uintptr_t ptr;
    if (!PyArg_ParseTuple(args, "OO:untrack", &domain_obj, &ptr_obj)
        || parse_block(domain_obj, ptr_obj, &domain, &ptr) < 0) {
        return NULL;
    }
    return track_result(ctm_tracer_untrack(domain, ptr));
}

static PyObject *
after_other_tracer(PyObject *self, PyObject *stopped)
{
    (void)self;
    int truth = PyObject_IsTrue(stopped);
    if (truth < 0) {
        return NULL;
    }
    ctm_tracer_after_other_tracer(truth);
    Py_RETURN_NONE;
}

static PyObject *
at_exit(PyObject *self, PyObject *unused)
{
    (void)self;
    (void)unused;
    ctm_tracer_at_exit();
    Py_RETURN_NONE;
}

/* The GOT slots native tracing holds now (for tests). */
static PyObject *
native_slots(PyObject *self, PyObject *unused)
{
    (void)self;
    (void)unused;
    return PyLong_FromSize_t(ctm_native_slots());
}

/* How often starting scanned the loaded objects for GOT slots, and how
 * often it wrote again those of the last scan (for tests). */
static PyObject *
got_counts(PyObject *self, PyObject *unused)
{
    (void)self;
    (void)unused;
    unsigned long counts[2] = {0, 0};
    ctm_intercept_got_counts(counts);
    ctm_native_got_counts(counts);
    return Py_BuildValue("{sksk}", "scans", counts[0], "replays", counts[1]);
}

PyDoc_STRVAR(start_doc,
"start($module, nframe=1, /, *, native=False, peak=False,\n"
"      sample_interval=0)\n--\n\n"
"Start tracing Python memory allocations, storing up to nframe frames\n"
"per traceback. With native=True, also trace what extension modules and\n"
"the libraries they load take from the C allocator and anonymous mmap,\n"
"in the domain NATIVE_DOMAIN. With peak=True, also record the traces\n"
"live at the peak (take_peak_snapshot()) and the traced memory over\n"
"time (get_timeline()). With sample_interval=N (bytes), trace a\n"
"sample of the blocks, about one every N bytes allocated, each sampled\n"
"block counting for its estimated size and count (unbiased estimates).\n"
"While tracing, only turns native and peak on if asked (peak=True then\n"
"starts a new peak, as reset_peak() does).");
PyDoc_STRVAR(take_snapshot_doc,
"take_snapshot()\n--\n\n"
"Take a snapshot of the traces of memory blocks allocated by Python.");
PyDoc_STRVAR(track_doc,
"track(domain, ptr, size)\n--\n\n"
"Trace a memory block of size bytes at address ptr in domain, with the\n"
"caller's traceback, as PyTraceMalloc_Track does for the stdlib.");
PyDoc_STRVAR(untrack_doc,
"untrack(domain, ptr)\n--\n\n"
"Stop tracing the memory block at address ptr in domain.");

static PyMethodDef module_methods[] = {
    {"start", (PyCFunction)(void (*)(void))start,
     METH_VARARGS | METH_KEYWORDS, start_doc},
    {"stop", stop, METH_NOARGS,
     "stop()\n--\n\nStop tracing and clear the traces."},
    {"is_tracing", is_tracing, METH_NOARGS,
     "is_tracing()\n--\n\nTrue if memory allocations are being traced."},
    {"clear_traces", clear_traces, METH_NOARGS,
     "clear_traces()\n--\n\nClear the traces of memory blocks."},
    {"get_traceback_limit", get_traceback_limit, METH_NOARGS,
     "get_traceback_limit()\n--\n\n"
     "The maximum number of frames stored in a traceback."},
    {"get_traced_memory", get_traced_memory, METH_NOARGS,
     "get_traced_memory()\n--\n\n"
     "(current, peak) size in bytes of the traced memory blocks."},
    {"reset_peak", reset_peak, METH_NOARGS,
     "reset_peak()\n--\n\nSet the peak size to the current size."},
    {"take_peak_snapshot", take_peak_snapshot, METH_NOARGS,
     "take_peak_snapshot()\n--\n\n"
     "Snapshot of the traces that were live when traced memory reached its\n"
     "peak (since start(), clear_traces() or reset_peak()); needs\n"
     "start(peak=True)."},
    {"get_timeline", get_timeline, METH_NOARGS,
     "get_timeline()\n--\n\n"
     "Traced memory over time, as a list of (seconds since start(), bytes),\n"
     "with a point at least every 10 ms while memory changes and one for\n"
     "now at the end; [] unless tracing with start(peak=True)."},
    {"get_tracemalloc_memory", get_tracemalloc_memory, METH_NOARGS,
     "get_tracemalloc_memory()\n--\n\n"
     "Memory in bytes used by the tracer to store traces."},
    {"take_snapshot", take_snapshot, METH_NOARGS, take_snapshot_doc},
    {"get_object_traceback", (PyCFunction)(void (*)(void))get_object_traceback,
     METH_VARARGS | METH_KEYWORDS,
     "get_object_traceback(obj)\n--\n\n"
     "The Traceback where obj was allocated, or None."},
    {"_get_object_traceback", get_object_traceback_raw, METH_O,
     "_get_object_traceback(obj)\n--\n\n"
     "The raw frames where obj was allocated, or None."},
    {"_interner_stats", interner_stats, METH_NOARGS,
     "_interner_stats()\n--\n\n"
     "The tracer's interned tracebacks and frames, its compactions, and\n"
     "how it hears of code objects' deaths."},
    {"_get_traces", get_traces, METH_NOARGS,
     "_get_traces()\n--\n\n"
     "The live traces as a list of (domain, size, frames, total_nframe)."},
    {"_format_size", (PyCFunction)(void (*)(void))format_size,
     METH_VARARGS | METH_KEYWORDS, NULL},
    {"_normalize_filename", (PyCFunction)(void (*)(void))normalize_filename,
     METH_VARARGS | METH_KEYWORDS, NULL},
    {"track", track, METH_VARARGS, track_doc},
    {"untrack", untrack, METH_VARARGS, untrack_doc},
    {"_after_other_tracer", after_other_tracer, METH_O, NULL},
    {"_at_exit", at_exit, METH_NOARGS, NULL},
    {"_native_slots", native_slots, METH_NOARGS, NULL},
    {"_got_counts", got_counts, METH_NOARGS, NULL},
    {"_snapshot_from_bytes", ctm_snapshot_from_bytes, METH_VARARGS,
     "Rebuild a pickled Snapshot."},
    {NULL, NULL, 0, NULL},
};

/* ---- the C API ---- */

static int
capi_track(unsigned int domain, uintptr_t ptr, size_t size)
{
    return ctm_tracer_track(domain, ptr, size);
}

static int
capi_untrack(unsigned int domain, uintptr_t ptr)
{
    return ctm_tracer_untrack(domain, ptr);
}

static const CTraceMalloc_CAPI capi = {
    CTRACEMALLOC_CAPI_VERSION,
    capi_track,
    capi_untrack,
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT,
    "ctracemalloc._ctracemalloc",
    "The C core of ctracemalloc.",
    -1,
    module_methods,
    NULL, NULL, NULL, NULL,
};

/* Every type of the module, made from its spec in one place, in order: a
 * base before its subclasses, and the types the Snapshot types use
 * before them. */
static int
add_types(PyObject *m)
{
    PyObject *base;

    if (ctm_add_type(m, &ctm_frame_spec, NULL, &ctm_state.Frame) < 0
        || ctm_add_type(m, &ctm_traceback_spec, NULL,
                        &ctm_state.Traceback) < 0
        || ctm_add_type(m, &ctm_trace_spec, NULL, &ctm_state.Trace) < 0
        || ctm_add_type(m, &ctm_statistic_spec, NULL,
                        &ctm_state.Statistic) < 0
        || ctm_add_type(m, &ctm_statistic_diff_spec, NULL,
                        &ctm_state.StatisticDiff) < 0
        || ctm_add_type(m, &ctm_basefilter_spec, NULL,
                        &ctm_state.BaseFilter) < 0)
    {
        return -1;
    }
    base = (PyObject *)ctm_state.BaseFilter;
    if (ctm_add_type(m, &ctm_filter_spec, base, &ctm_state.Filter) < 0
        || ctm_add_type(m, &ctm_domainfilter_spec, base,
                        &ctm_state.DomainFilter) < 0)
    {
        return -1;
    }
    if (ctm_add_type(m, &ctm_traces_spec, NULL, &ctm_state.Traces) < 0) {
        return -1;
    }
    ctm_type_disallow_instantiation(ctm_state.Traces);
    return ctm_add_type(m, &ctm_snapshot_spec, NULL, &ctm_state.Snapshot);
}

PyMODINIT_FUNC
PyInit__ctracemalloc(void)
{
    if (PyInterpreterState_Get() != PyInterpreterState_Main()) {
        PyErr_SetString(PyExc_ImportError,
                        "ctracemalloc cannot be used in a subinterpreter: "
                        "the tracer is process-wide");
        return NULL;
    }
    if (ctm_state.module != NULL) {
        /* Imported again after its entry was removed from sys.modules:
         * the tracer and its types are process-wide, reuse them. */
        return Py_NewRef(ctm_state.module);
    }
    PyObject *m = PyModule_Create(&module_def);
    if (m == NULL) {
        return NULL;
    }
    ctm_state.module = m;
    ctm_intercept_set_traceback_source(ctm_tracer_traceback_of);
    ctm_state.unknown_str = PyUnicode_InternFromString("<unknown>");
    if (ctm_state.unknown_str == NULL || add_types(m) < 0) {
        goto error;
    }
    orig_is_tracing = PyObject_GetAttrString(m, "is_tracing");
    orig_get_traceback_limit = PyObject_GetAttrString(m,
                                                      "get_traceback_limit");
    orig_get_traces = PyObject_GetAttrString(m, "_get_traces");
    if (!orig_is_tracing || !orig_get_traceback_limit || !orig_get_traces) {
        goto error;
    }
    PyObject *caps = PyCapsule_New((void *)&capi, CTRACEMALLOC_CAPSULE_NAME,
                                   NULL);
    if (caps == NULL || PyModule_AddObject(m, "_C_API", caps) < 0) {
        Py_XDECREF(caps);
        goto error;
    }
    if (PyModule_AddIntConstant(m, "NATIVE_DOMAIN", CTM_NATIVE_DOMAIN) < 0) {
        goto error;
    }
    /* Kept for the life of the process: the tracer outlives modules. */
    Py_INCREF(m);
    return m;
error:
    ctm_state.module = NULL;
    Py_DECREF(m);
    return NULL;
}
