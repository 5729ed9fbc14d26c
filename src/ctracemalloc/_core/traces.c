/* _Traces: the sequence of the Trace instances of a snapshot, over its
 * data (snapshot.h).
 *
 * A _Traces owns one ctm_snapdata, immutable, and frees it with itself;
 * it is never NULL. Snapshots hold strong references to it and may share
 * it; it refers to no Python object but the data's strings, so it is not
 * a GC type and is never part of a cycle. It cannot be made from Python
 * (only the Snapshot makes one) nor subclassed.
 *
 * Items are made on access: the Trace of trace i, from its raw tuple,
 * with the function names of its traceback, made once per traceback and
 * kept (tuples of str and None: still no cycle).
 * Searches (in, count, index) and equality run over the arrays when the
 * value is of exact types, by resolving it once against the data's
 * strings, frames and tracebacks; anything else is compared as Python
 * objects, one item at a time, with the stdlib's semantics.
 */
#include "snapshot.h"
#include "types.h"

#include <string.h>

typedef ctm_traces_object TracesObject;

static PyObject *
index_error(void)
{
    PyErr_SetString(PyExc_IndexError, "list index out of range");
    return NULL;
}

PyObject *
ctm_traces_wrap(ctm_snapdata *data)
{
    TracesObject *t = PyObject_New(TracesObject, ctm_state.Traces);
    if (t == NULL) {
        ctm_snapdata_free(data);
        return NULL;
    }
    t->data = data;
    t->functions = NULL;
    return (PyObject *)t;
}

static void
traces_dealloc(TracesObject *self)
{
    /* a heap type: each instance holds a reference to it */
    PyTypeObject *tp = Py_TYPE(self);
    if (self->functions != NULL) {
        for (Py_ssize_t t = 0; t < self->data->ntracebacks; t++) {
            Py_XDECREF(self->functions[t]);
        }
        ctm_free(self->functions);
    }
    ctm_snapdata_free(self->data);
    tp->tp_free((PyObject *)self);
    Py_DECREF(tp);
}

static Py_ssize_t
traces_len(TracesObject *self)
{
    return self->data->ntraces;
}

/* The function names of traceback tb, borrowed, or NULL with an
 * exception set. */
static PyObject *
traceback_functions(TracesObject *self, uint32_t tb)
{
    const ctm_snapdata *d = self->data;
    if (self->functions == NULL) {
        self->functions = ctm_calloc((size_t)d->ntracebacks,
                                     sizeof(PyObject *));
        if (self->functions == NULL) {
            PyErr_NoMemory();
            return NULL;
        }
    }
    if (self->functions[tb] == NULL) {
        self->functions[tb] = ctm_snapdata_functions_tuple(d, tb);
    }
    return self->functions[tb];
}

static PyObject *
make_trace(TracesObject *self, Py_ssize_t i)
{
    const ctm_snapdata *d = self->data;
    PyObject *names = traceback_functions(self, d->traces[i].traceback);
    PyObject *raw = names ? ctm_snapdata_trace_tuple(d, i, NULL) : NULL;
    if (raw == NULL) {
        return NULL;
    }
    PyObject *trace = ctm_trace_new(raw, names);
    Py_DECREF(raw);
    return trace;
}

static PyObject *
traces_item(TracesObject *self, Py_ssize_t i)
{
    if (i < 0 || i >= self->data->ntraces) {
        return index_error();
    }
    return make_trace(self, i);
}

static PyObject *
traces_subscript(TracesObject *self, PyObject *key)
{
    Py_ssize_t n = self->data->ntraces;
    if (PyIndex_Check(key)) {
        Py_ssize_t i = PyNumber_AsSsize_t(key, PyExc_IndexError);
        if (i == -1 && PyErr_Occurred()) {
            return NULL;
        }
        if (i < 0) {
            i += n;
        }
        return traces_item(self, i);
    }
    if (PySlice_Check(key)) {
        Py_ssize_t start, stop, step;
        if (PySlice_Unpack(key, &start, &stop, &step) < 0) {
            return NULL;
        }
        Py_ssize_t len = PySlice_AdjustIndices(n, &start, &stop, step);
        PyObject *res = PyTuple_New(len);
        if (res == NULL) {
            return NULL;
        }
        for (Py_ssize_t k = 0, i = start; k < len; k++, i += step) {
            PyObject *trace = make_trace(self, i);
            if (trace == NULL) {
                Py_DECREF(res);
                return NULL;
            }
            PyTuple_SET_ITEM(res, k, trace);
        }
        return res;
    }
    PyErr_Format(PyExc_TypeError,
                 "list indices must be integers or slices, not %.200s",
                 Py_TYPE(key)->tp_name);
    return NULL;
}

/* A raw trace tuple resolved against d, so that finding equal traces
 * is integer comparisons. */
typedef struct {
    uint32_t domain;
    uint64_t size;
    uint32_t tb;
} target_t;

#define TARGET_NONE 0           /* no trace of d can be equal */
#define TARGET_FOUND 1          /* *t holds the trace to look for */
#define TARGET_GENERIC 2        /* not exact types: compare with == */

/* An exact int as an integer in [lo, hi]: 1 with *out, 0 out of range
 * (so never equal to a value of d), -1 if obj is not an exact int. */
static int
exact_int(PyObject *obj, long long lo, unsigned long long hi,
          unsigned long long *out)
{
    if (!PyLong_CheckExact(obj) && !PyBool_Check(obj)) {
        return -1;
    }
    int overflow;
    long long v = PyLong_AsLongLongAndOverflow(obj, &overflow);
    if (overflow == 1 && hi > (unsigned long long)LLONG_MAX) {
        unsigned long long u = PyLong_AsUnsignedLongLong(obj);
        if (u == (unsigned long long)-1 && PyErr_Occurred()) {
            PyErr_Clear();
            return 0;
        }
        *out = u;
        return u <= hi;
    }
    if (overflow || v < lo || (v >= 0 && (unsigned long long)v > hi)) {
        return 0;
    }
    *out = (unsigned long long)v;
    return 1;
}

/* The index of the string of d equal to s (a str whose hash is h), or
 * -1. */
static Py_ssize_t
find_string(const ctm_snapdata *d, PyObject *s, Py_hash_t h)
{
    for (Py_ssize_t i = 0; i < d->nstrings; i++) {
        PyObject *c = d->strings[i];
        if (c == s) {
            return i;
        }
        if (PyObject_Hash(c) == h && PyUnicode_Compare(c, s) == 0) {
            return i;
        }
    }
    return -1;
}

Py_ssize_t
ctm_snapdata_find_frame(const ctm_snapdata *d, PyObject *filename,
                        Py_hash_t h, int32_t lineno)
{
    Py_ssize_t s = find_string(d, filename, h);
    if (s < 0) {
        return -1;
    }
    for (Py_ssize_t f = 0; f < d->nframes; f++) {
        if (d->frames[f].filename == (uint32_t)s
            && d->frames[f].lineno == lineno) {
            return f;
        }
    }
    return -1;
}

static int
compile_target(const ctm_snapdata *d, PyObject *raw, target_t *t)
{
    unsigned long long v;
    uint32_t *ids = NULL;
    int rc;

    if (!PyTuple_CheckExact(raw)) {
        return TARGET_GENERIC;
    }
    if (PyTuple_GET_SIZE(raw) != 4) {
        return TARGET_NONE;
    }
    PyObject *frames = PyTuple_GET_ITEM(raw, 2);
    PyObject *total = PyTuple_GET_ITEM(raw, 3);
    uint32_t tot = CTM_TOTAL_NONE;
    if ((rc = exact_int(PyTuple_GET_ITEM(raw, 0), 0, UINT32_MAX, &v)) < 1) {
        return rc < 0 ? TARGET_GENERIC : TARGET_NONE;
    }
    t->domain = (uint32_t)v;
    if ((rc = exact_int(PyTuple_GET_ITEM(raw, 1), 0, UINT64_MAX, &v)) < 1) {
        return rc < 0 ? TARGET_GENERIC : TARGET_NONE;
    }
    t->size = v;
    if (total != Py_None) {
        rc = exact_int(total, 0, UINT32_MAX - 1, &v);
        if (rc < 1) {
            return rc < 0 ? TARGET_GENERIC : TARGET_NONE;
        }
        tot = (uint32_t)v;
    }
    if (PyList_CheckExact(frames)) {
        return TARGET_NONE;
    }
    if (!PyTuple_CheckExact(frames)) {
        return TARGET_GENERIC;
    }
    Py_ssize_t n = PyTuple_GET_SIZE(frames);
    /* check the types first: a generic compare must not depend on the
     * order in which frames are looked up */
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *fr = PyTuple_GET_ITEM(frames, i);
        if (!PyTuple_CheckExact(fr)) {
            return TARGET_GENERIC;
        }
        if (PyTuple_GET_SIZE(fr) != 2) {
            continue;
        }
        if (!PyUnicode_CheckExact(PyTuple_GET_ITEM(fr, 0))
            || exact_int(PyTuple_GET_ITEM(fr, 1), 0, 0, &v) < 0) {
            return TARGET_GENERIC;
        }
    }
    if (n > UINT32_MAX) {
        return TARGET_NONE;
    }
    ids = ctm_malloc((size_t)(n ? n : 1) * sizeof(uint32_t));
    if (ids == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    rc = TARGET_NONE;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *fr = PyTuple_GET_ITEM(frames, i);
        if (PyTuple_GET_SIZE(fr) != 2) {
            goto done;
        }
        PyObject *name = PyTuple_GET_ITEM(fr, 0);
        if (exact_int(PyTuple_GET_ITEM(fr, 1), INT32_MIN, INT32_MAX,
                      &v) < 1) {
            goto done;
        }
        int32_t lineno = (int32_t)(long long)v;
        Py_hash_t h = PyObject_Hash(name);
        if (h == -1) {
            rc = -1;
            goto done;
        }
        Py_ssize_t f = ctm_snapdata_find_frame(d, name, h, lineno);
        if (f < 0) {
            goto done;
        }
        ids[i] = (uint32_t)f;
    }
    for (Py_ssize_t k = 0; k < d->ntracebacks; k++) {
        const ctm_snap_tb *tb = &d->tracebacks[k];
        if (tb->nframe == (uint32_t)n && tb->total_nframe == tot
            && memcmp(ctm_tb_refs(d, tb), ids, (size_t)n * sizeof(uint32_t))
               == 0) {
            t->tb = (uint32_t)k;
            rc = TARGET_FOUND;
            break;
        }
    }
done:
    ctm_free(ids);
    return rc;
}

/* The raw tuple's size is the estimate (ctm_snapdata_trace_tuple): t
 * is compared with that, which is tr->size itself in exact data. */
static inline int
target_is(const ctm_snapdata *d, const target_t *t,
          const ctm_snap_trace *tr)
{
    return tr->traceback == t->tb && ctm_snap_size(d, tr) == t->size
           && tr->domain == t->domain;
}

/* x in self: self._traces contains value._trace */
static int
traces_contains(TracesObject *self, PyObject *value)
{
    const ctm_snapdata *d = self->data;
    target_t t;
    PyObject *raw = PyObject_GetAttrString(value, "_trace");
    if (raw == NULL) {
        return -1;
    }
    int rc = compile_target(d, raw, &t);
    if (rc == TARGET_FOUND) {
        rc = 0;
        for (Py_ssize_t i = 0; i < d->ntraces && !rc; i++) {
            rc = target_is(d, &t, &d->traces[i]);
        }
    }
    else if (rc == TARGET_GENERIC) {
        rc = 0;
        for (Py_ssize_t i = 0; i < d->ntraces && rc == 0; i++) {
            PyObject *item = ctm_snapdata_trace_tuple(d, i, NULL);
            if (item == NULL) {
                rc = -1;
                break;
            }
            rc = PyObject_RichCompareBool(item, raw, Py_EQ);
            Py_DECREF(item);
        }
    }
    Py_DECREF(raw);
    return rc;
}

/* Sequence.index and Sequence.count: "v is value or v == value" over
 * the Trace items. For an exact Trace, v == value compares the _trace
 * tuples, so the search runs on the arrays; anything else compares
 * Trace objects one by one. Return the first index in [start, stop)
 * (count_all: the number of matches), -1 if none, -2 on error. */
static Py_ssize_t
traces_search(TracesObject *self, PyObject *value, Py_ssize_t start,
              Py_ssize_t stop, int count_all)
{
    const ctm_snapdata *d = self->data;
    Py_ssize_t found = 0;
    target_t t;
    int mode = TARGET_GENERIC;

    if (stop > d->ntraces) {
        stop = d->ntraces;
    }
    if (ctm_state.Trace != NULL && Py_TYPE(value) == ctm_state.Trace) {
        PyObject *raw = PyObject_GetAttrString(value, "_trace");
        if (raw == NULL) {
            return -2;
        }
        mode = compile_target(d, raw, &t);
        Py_DECREF(raw);
        if (mode < 0) {
            return -2;
        }
        if (mode == TARGET_NONE) {
            return count_all ? 0 : -1;
        }
    }
    for (Py_ssize_t i = start; i < stop; i++) {
        int eq;
        if (mode == TARGET_FOUND) {
            eq = target_is(d, &t, &d->traces[i]);
        }
        else {
            PyObject *v = make_trace(self, i);
            if (v == NULL) {
                return -2;
            }
            eq = v == value ? 1 : PyObject_RichCompareBool(v, value, Py_EQ);
            Py_DECREF(v);
            if (eq < 0) {
                return -2;
            }
        }
        if (eq) {
            if (!count_all) {
                return i;
            }
            found++;
        }
    }
    return count_all ? found : -1;
}

static PyObject *
traces_count(TracesObject *self, PyObject *value)
{
    Py_ssize_t n = traces_search(self, value, 0, PY_SSIZE_T_MAX, 1);
    return n == -2 ? NULL : PyLong_FromSsize_t(n);
}

static PyObject *
traces_index(TracesObject *self, PyObject *args)
{
    PyObject *value, *start_obj = Py_None, *stop_obj = Py_None;
    Py_ssize_t start, stop;
    if (!PyArg_ParseTuple(args, "O|OO:index", &value, &start_obj,
                          &stop_obj)) {
        return NULL;
    }
    if (ctm_sequence_bounds(start_obj == Py_None ? NULL : start_obj,
                            stop_obj, self->data->ntraces, &start,
                            &stop) < 0) {
        return NULL;
    }
    Py_ssize_t i = traces_search(self, value, start, stop, 0);
    if (i == -2) {
        return NULL;
    }
    if (i == -1) {
        PyErr_SetNone(PyExc_ValueError);
        return NULL;
    }
    return PyLong_FromSsize_t(i);
}

/* Are traceback ta of a and tb of b equal as raw tuples? */
static int
tb_equal(const ctm_snapdata *a, uint32_t ta, const ctm_snapdata *b,
         uint32_t tb)
{
    const ctm_snap_tb *x = &a->tracebacks[ta], *y = &b->tracebacks[tb];
    if (x->nframe != y->nframe || x->total_nframe != y->total_nframe) {
        return 0;
    }
    const uint32_t *rx = ctm_tb_refs(a, x), *ry = ctm_tb_refs(b, y);
    for (uint32_t i = 0; i < x->nframe; i++) {
        const ctm_snap_frame *fx = &a->frames[rx[i]], *fy = &b->frames[ry[i]];
        if (fx->lineno != fy->lineno) {
            return 0;
        }
        PyObject *sx = a->strings[fx->filename];
        PyObject *sy = b->strings[fy->filename];
        if (sx != sy && PyUnicode_Compare(sx, sy) != 0) {
            return 0;
        }
    }
    return 1;
}

/* self._traces == other._traces, element by element. */
static int
traces_equal(const ctm_snapdata *a, const ctm_snapdata *b)
{
    if (a == b) {
        return 1;
    }
    if (a->ntraces != b->ntraces) {
        return 0;
    }
    /* known[ta] = tb + 1 once ta of a was found equal to tb of b */
    uint32_t *known = ctm_calloc((size_t)a->ntracebacks, sizeof(uint32_t));
    if (known == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    /* the raw tuples hold the estimates, which are the true sizes in
     * exact data; two true sizes may round to one estimate */
    int same_sizes = a->sample_interval == 0 && b->sample_interval == 0;
    int eq = 1;
    for (Py_ssize_t i = 0; i < a->ntraces && eq; i++) {
        const ctm_snap_trace *x = &a->traces[i], *y = &b->traces[i];
        if (x->domain != y->domain
            || (same_sizes ? x->size != y->size
                           : ctm_snap_size(a, x) != ctm_snap_size(b, y))) {
            eq = 0;
        }
        else if (known[x->traceback] != y->traceback + 1) {
            eq = tb_equal(a, x->traceback, b, y->traceback);
            if (eq) {
                known[x->traceback] = y->traceback + 1;
            }
        }
    }
    ctm_free(known);
    return eq;
}

static PyObject *
traces_richcompare(PyObject *self, PyObject *other, int op)
{
    if (!PyObject_TypeCheck(other, ctm_state.Traces)
        || (op != Py_EQ && op != Py_NE)) {
        Py_RETURN_NOTIMPLEMENTED;
    }
    int eq = traces_equal(((TracesObject *)self)->data,
                          ((TracesObject *)other)->data);
    if (eq < 0) {
        return NULL;
    }
    return PyBool_FromLong(op == Py_EQ ? eq : !eq);
}

static PyObject *
traces_repr(TracesObject *self)
{
    return PyUnicode_FromFormat("<Traces len=%zd>", self->data->ntraces);
}

/* _traces: a new list of the raw trace tuples; equal tracebacks share
 * one frames tuple, as in the lists _get_traces() returns. */
static PyObject *
traces_get_raw(TracesObject *self, void *Py_UNUSED(closure))
{
    const ctm_snapdata *d = self->data;
    PyObject **cache = ctm_calloc((size_t)d->ntracebacks,
                                  sizeof(PyObject *));
    if (cache == NULL) {
        return PyErr_NoMemory();
    }
    PyObject *list = NULL;
    int paused = ctm_gc_pause();
    if (paused < 0) {
        goto done;
    }
    list = PyList_New(d->ntraces);
    if (list == NULL) {
        goto done;
    }
    for (Py_ssize_t i = 0; i < d->ntraces; i++) {
        PyObject *raw = ctm_snapdata_trace_tuple(d, i, cache);
        if (raw == NULL) {
            Py_CLEAR(list);
            goto done;
        }
        PyList_SET_ITEM(list, i, raw);
    }
done:
    ctm_gc_resume(paused);
    for (Py_ssize_t t = 0; t < d->ntracebacks; t++) {
        Py_XDECREF(cache[t]);
    }
    ctm_free(cache);
    return list;
}

/* A _Traces cannot be pickled. Protocols 2 and up refuse it as it has no
 * tp_new; 0 and 1 go through copyreg, which refuses a static type but
 * would pickle a heap type's instance as an empty object: this raises
 * its message instead. */
static PyObject *
traces_getstate(PyObject *self, PyObject *Py_UNUSED(ignored))
{
    PyErr_Format(PyExc_TypeError, "cannot pickle '%s' object",
                 _PyType_Name(Py_TYPE(self)));
    return NULL;
}

static PyMethodDef traces_methods[] = {
    {"count", (PyCFunction)traces_count, METH_O,
     "Number of traces equal to value."},
    {"index", (PyCFunction)traces_index, METH_VARARGS,
     "First index of a trace equal to value; ValueError if none."},
    {"__getstate__", traces_getstate, METH_NOARGS, NULL},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef traces_getset[] = {
    {"_traces", (getter)traces_get_raw, NULL,
     "A new list of the raw trace tuples.", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyType_Slot traces_slots[] = {
    {Py_tp_doc, "Sequence of the Trace instances of a snapshot."},
    {Py_tp_dealloc, traces_dealloc},
    {Py_tp_repr, traces_repr},
    {Py_sq_length, traces_len},
    {Py_sq_item, traces_item},
    {Py_sq_contains, traces_contains},
    {Py_mp_length, traces_len},
    {Py_mp_subscript, traces_subscript},
    {Py_tp_hash, PyObject_HashNotImplemented},
    {Py_tp_richcompare, traces_richcompare},
    {Py_tp_methods, traces_methods},
    {Py_tp_getset, traces_getset},
    {0, NULL},
};

/* Immutable, not subclassable and not callable, as the static type it
 * was: Python 3.9 has no flags for the first and last, and
 * ctm_snapshot_types_init clears tp_new there. */
PyType_Spec ctm_traces_spec = {
    .name = "ctracemalloc._Traces",
    .basicsize = sizeof(TracesObject),
    .flags = Py_TPFLAGS_DEFAULT | CTM_TPFLAGS_IMMUTABLETYPE
             | CTM_TPFLAGS_DISALLOW_INSTANTIATION,
    .slots = traces_slots,
};
