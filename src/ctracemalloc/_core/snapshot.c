/* Snapshot and _Traces: the stdlib's Snapshot API over snapshot data.
 *
 * Ownership: a _Traces object owns one ctm_snapdata (immutable, freed
 * with it); a Snapshot holds a strong reference to its _Traces. Several
 * snapshots may share one _Traces (Snapshot(other.traces, limit)), and
 * nothing points back from _Traces to a Snapshot, so there is no cycle
 * and a snapshot's memory goes as soon as its last reference does. The
 * _Traces object is made with the snapshot rather than on first access:
 * it is one small object, and it is what owns the data.
 *
 * A Snapshot made by __new__ without __init__ has no traces (NULL), as a
 * Python instance would have no attribute: methods then raise.
 *
 * statistics, compare_to and _group_by run over the arrays, never over
 * Python objects, in four steps:
 *
 *  1. sum size and count per traceback index (one pass over the traces,
 *     the only per-trace work);
 *  2. fold tracebacks into groups: by frame index ('lineno'; frames are
 *     unique by value so index equality is value equality), by string
 *     index ('filename'), or by frame sequence ('traceback': two
 *     tracebacks may differ only in total_nframe, which the key
 *     ignores, so they are merged through a hash table of sequences);
 *     cumulative mode adds a traceback's sums once per frame occurrence;
 *  3. compare_to joins the old snapshot's groups to the new one's by
 *     value, translating old string and frame indexes through hash
 *     tables over the new snapshot's strings and frames;
 *  4. sort with the stdlib's key (size, count, traceback) or (|size
 *     diff|, size, |count diff|, count, traceback), descending. The
 *     traceback comparison is the stdlib's tuple comparison of frames
 *     oldest first by (filename, lineno): the strings used by the result
 *     are ranked once by str order (over both snapshots, so that equal
 *     strings rank equal), a frame becomes the 64-bit key (rank,
 *     lineno), and a traceback key is a rank among the result's frame
 *     sequences. Every sort key is then an integer; as no two rows have
 *     equal tracebacks, the order is total and equals the stdlib's.
 *
 * Python objects are made only for the result rows. Sums are uint64;
 * an overflow raises OverflowError rather than giving a wrong result.
 */
#include "internal.h"

#include <string.h>
#include <structmember.h>

typedef struct {
    PyObject_HEAD
    ctm_snapdata *data;         /* owned, never NULL */
} TracesObject;

typedef struct {
    PyObject_HEAD
    PyObject *dict;
    PyObject *weakreflist;
    TracesObject *traces;       /* NULL until __init__ */
    PyObject *limit;            /* traceback_limit, any object */
} SnapshotObject;

static PyTypeObject TracesType;
static PyTypeObject SnapshotType;

static PyObject *iterable_abc;          /* collections.abc.Iterable */
static PyObject *from_bytes_func;       /* _snapshot_from_bytes */

/* Frame references of a traceback; never NULL, even for an empty
 * traceback of data whose refs array is empty. */
static const uint32_t no_refs[1];

static inline const uint32_t *
tb_refs(const ctm_snapdata *d, const ctm_snap_tb *t)
{
    return t->nframe ? d->refs + t->first : no_refs;
}

static PyObject *
index_error(void)
{
    PyErr_SetString(PyExc_IndexError, "list index out of range");
    return NULL;
}

/* ------------------------------------------------------------------
 * _Traces
 * ---------------------------------------------------------------- */

/* A _Traces owning data (stolen, even on failure). */
static PyObject *
traces_wrap(ctm_snapdata *data)
{
    TracesObject *t = PyObject_New(TracesObject, &TracesType);
    if (t == NULL) {
        ctm_snapdata_free(data);
        return NULL;
    }
    t->data = data;
    return (PyObject *)t;
}

static void
traces_dealloc(TracesObject *self)
{
    ctm_snapdata_free(self->data);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static Py_ssize_t
traces_len(TracesObject *self)
{
    return self->data->ntraces;
}

static PyObject *
make_trace(const ctm_snapdata *d, Py_ssize_t i)
{
    PyObject *raw = ctm_snapdata_trace_tuple(d, i, NULL);
    if (raw == NULL) {
        return NULL;
    }
    PyObject *trace = ctm_trace_new(raw);
    Py_DECREF(raw);
    return trace;
}

static PyObject *
traces_item(TracesObject *self, Py_ssize_t i)
{
    if (i < 0 || i >= self->data->ntraces) {
        return index_error();
    }
    return make_trace(self->data, i);
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
            PyObject *trace = make_trace(self->data, i);
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

/* Find the index of the string equal to s in d, or -1. */
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
        Py_ssize_t s = find_string(d, name, h);
        if (s < 0) {
            goto done;
        }
        Py_ssize_t f = 0;
        while (f < d->nframes && (d->frames[f].filename != (uint32_t)s
                                  || d->frames[f].lineno != lineno)) {
            f++;
        }
        if (f == d->nframes) {
            goto done;
        }
        ids[i] = (uint32_t)f;
    }
    for (Py_ssize_t k = 0; k < d->ntracebacks; k++) {
        const ctm_snap_tb *tb = &d->tracebacks[k];
        if (tb->nframe == (uint32_t)n && tb->total_nframe == tot
            && memcmp(tb_refs(d, tb), ids, (size_t)n * sizeof(uint32_t))
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

static inline int
target_is(const target_t *t, const ctm_snap_trace *tr)
{
    return tr->traceback == t->tb && tr->size == t->size
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
            rc = target_is(&t, &d->traces[i]);
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
            eq = target_is(&t, &d->traces[i]);
        }
        else {
            PyObject *v = make_trace(d, i);
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
    const uint32_t *rx = tb_refs(a, x), *ry = tb_refs(b, y);
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
    int eq = 1;
    for (Py_ssize_t i = 0; i < a->ntraces && eq; i++) {
        const ctm_snap_trace *x = &a->traces[i], *y = &b->traces[i];
        if (x->domain != y->domain || x->size != y->size) {
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
    if (!PyObject_TypeCheck(other, &TracesType)
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

static PySequenceMethods traces_as_sequence = {
    .sq_length = (lenfunc)traces_len,
    .sq_item = (ssizeargfunc)traces_item,
    .sq_contains = (objobjproc)traces_contains,
};

static PyMappingMethods traces_as_mapping = {
    .mp_length = (lenfunc)traces_len,
    .mp_subscript = (binaryfunc)traces_subscript,
};

static PyMethodDef traces_methods[] = {
    {"count", (PyCFunction)traces_count, METH_O,
     "Number of traces equal to value."},
    {"index", (PyCFunction)traces_index, METH_VARARGS,
     "First index of a trace equal to value; ValueError if none."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef traces_getset[] = {
    {"_traces", (getter)traces_get_raw, NULL,
     "A new list of the raw trace tuples.", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject TracesType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "ctracemalloc._Traces",
    .tp_basicsize = sizeof(TracesObject),
    .tp_dealloc = (destructor)traces_dealloc,
    .tp_repr = (reprfunc)traces_repr,
    .tp_as_sequence = &traces_as_sequence,
    .tp_as_mapping = &traces_as_mapping,
    .tp_hash = PyObject_HashNotImplemented,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Sequence of the Trace instances of a snapshot.",
    .tp_richcompare = traces_richcompare,
    .tp_methods = traces_methods,
    .tp_getset = traces_getset,
};

/* ------------------------------------------------------------------
 * Grouping (statistics, compare_to, _group_by)
 * ---------------------------------------------------------------- */

enum { KEY_TRACEBACK, KEY_FILENAME, KEY_LINENO };

#define NO_GROUP UINT32_MAX

typedef struct {
    uint64_t size;
    uint64_t count;
} sums_t;

typedef struct {
    sums_t sum;
    uint32_t key;               /* see grouping_t */
    uint32_t other;             /* compare_to: the equal group of the
                                 * other snapshot, or NO_GROUP */
} group_t;

/* The groups of one snapshot for one key type. A group's key is a
 * string index ('filename'), a frame index or nframes for the empty
 * traceback ('lineno'), or the index of its first traceback
 * ('traceback'). */
typedef struct {
    const ctm_snapdata *d;
    int kind;
    Py_ssize_t ngroups;
    group_t *groups;
    uint32_t *slot;             /* filename, lineno: key -> group */
    uint32_t *seq;              /* traceback: hash table, group + 1 */
    uint32_t seq_mask;
} grouping_t;

static void
grouping_free(grouping_t *g)
{
    ctm_free(g->groups);
    ctm_free(g->slot);
    ctm_free(g->seq);
    g->groups = NULL;
    g->slot = NULL;
    g->seq = NULL;
}

static void
size_overflow(void)
{
    PyErr_SetString(PyExc_OverflowError,
                    "sum of trace sizes does not fit in 64 bits");
}

/* acc += x; return 1 if the size overflowed. */
static inline int
sums_add(sums_t *acc, const sums_t *x)
{
    uint64_t s = acc->size + x->size;
    int overflow = s < acc->size;
    acc->size = s;
    acc->count += x->count;
    return overflow;
}

/* Step 1: size and count per traceback. */
static sums_t *
sum_tracebacks(const ctm_snapdata *d)
{
    sums_t *tbs = ctm_calloc((size_t)d->ntracebacks, sizeof(sums_t));
    if (tbs == NULL) {
        PyErr_NoMemory();
        return NULL;
    }
    const ctm_snap_trace *tr = d->traces;
    int overflow = 0;
    for (Py_ssize_t i = 0; i < d->ntraces; i++) {
        sums_t *s = &tbs[tr[i].traceback];
        uint64_t v = s->size + tr[i].size;
        overflow |= v < s->size;
        s->size = v;
        s->count++;
    }
    if (overflow) {
        ctm_free(tbs);
        size_overflow();
        return NULL;
    }
    return tbs;
}

static uint32_t
seq_hash(const uint32_t *f, uint32_t n)
{
    uint64_t h = 0x9e3779b97f4a7c15ULL ^ n;
    for (uint32_t i = 0; i < n; i++) {
        h = (h ^ f[i]) * 0x100000001b3ULL;
        h ^= h >> 31;
    }
    return ctm_mix32(h);
}

/* A zeroed open-addressing table for n items, at most half full. */
static uint32_t *
table_new(Py_ssize_t n, uint32_t *mask)
{
    size_t cap = 16;
    while (cap < (size_t)n * 2) {
        cap *= 2;
    }
    if (cap > ((size_t)1 << 32)) {
        PyErr_NoMemory();
        return NULL;
    }
    uint32_t *t = ctm_calloc(cap, sizeof(uint32_t));
    if (t == NULL) {
        PyErr_NoMemory();
        return NULL;
    }
    *mask = (uint32_t)(cap - 1);
    return t;
}

/* The group of g (kind 'traceback') whose frame sequence is
 * frames[0..n), or NO_GROUP; *slot receives the probe's end. */
static uint32_t
seq_find(const grouping_t *g, const uint32_t *frames, uint32_t n,
         uint32_t *slot)
{
    const ctm_snapdata *d = g->d;
    uint32_t j = seq_hash(frames, n) & g->seq_mask;
    uint32_t v;
    while ((v = g->seq[j]) != 0) {
        const ctm_snap_tb *r = &d->tracebacks[g->groups[v - 1].key];
        if (r->nframe == n
            && memcmp(tb_refs(d, r), frames, n * sizeof(uint32_t)) == 0) {
            break;
        }
        j = (j + 1) & g->seq_mask;
    }
    if (slot != NULL) {
        *slot = j;
    }
    return v ? v - 1 : NO_GROUP;
}

/* Step 2: the groups of d. */
static int
group_build(grouping_t *g, const ctm_snapdata *d, int kind, int cumulative)
{
    sums_t *acc = NULL;
    int rc = -1, overflow = 0;

    memset(g, 0, sizeof(*g));
    g->d = d;
    g->kind = kind;
    if ((uint64_t)d->nframes >= NO_GROUP
        || (uint64_t)d->ntracebacks >= NO_GROUP) {
        PyErr_NoMemory();
        return -1;
    }
    sums_t *tbs = sum_tracebacks(d);
    if (tbs == NULL) {
        return -1;
    }

    if (kind == KEY_TRACEBACK) {
        Py_ssize_t used = 0;
        for (Py_ssize_t k = 0; k < d->ntracebacks; k++) {
            used += tbs[k].count != 0;
        }
        g->seq = table_new(used, &g->seq_mask);
        g->groups = ctm_malloc((size_t)(used ? used : 1) * sizeof(group_t));
        if (g->seq == NULL || g->groups == NULL) {
            PyErr_NoMemory();
            goto done;
        }
        for (Py_ssize_t k = 0; k < d->ntracebacks; k++) {
            if (tbs[k].count == 0) {
                continue;
            }
            const ctm_snap_tb *t = &d->tracebacks[k];
            uint32_t j;
            uint32_t gi = seq_find(g, tb_refs(d, t), t->nframe, &j);
            if (gi == NO_GROUP) {
                gi = (uint32_t)g->ngroups++;
                g->groups[gi].sum.size = 0;
                g->groups[gi].sum.count = 0;
                g->groups[gi].key = (uint32_t)k;
                g->groups[gi].other = NO_GROUP;
                g->seq[j] = gi + 1;
            }
            overflow |= sums_add(&g->groups[gi].sum, &tbs[k]);
        }
    }
    else {
        int by_file = kind == KEY_FILENAME;
        Py_ssize_t nslots = by_file ? d->nstrings : d->nframes + 1;
        acc = ctm_calloc((size_t)nslots, sizeof(sums_t));
        if (acc == NULL) {
            PyErr_NoMemory();
            goto done;
        }
        for (Py_ssize_t k = 0; k < d->ntracebacks; k++) {
            if (tbs[k].count == 0) {
                continue;
            }
            const ctm_snap_tb *t = &d->tracebacks[k];
            const uint32_t *refs = tb_refs(d, t);
            uint32_t n = cumulative ? t->nframe : (t->nframe ? 1 : 0);
            for (uint32_t j = 0; j < n; j++) {
                uint32_t key = by_file ? d->frames[refs[j]].filename
                                       : refs[j];
                overflow |= sums_add(&acc[key], &tbs[k]);
            }
            if (!cumulative && t->nframe == 0) {
                if (by_file) {
                    /* the stdlib reads trace_traceback[0][0] */
                    PyErr_SetString(PyExc_IndexError,
                                    "tuple index out of range");
                    goto done;
                }
                overflow |= sums_add(&acc[d->nframes], &tbs[k]);
            }
        }
        Py_ssize_t n = 0;
        for (Py_ssize_t key = 0; key < nslots; key++) {
            n += acc[key].count != 0;
        }
        g->groups = ctm_malloc((size_t)(n ? n : 1) * sizeof(group_t));
        g->slot = ctm_malloc((size_t)(nslots ? nslots : 1)
                             * sizeof(uint32_t));
        if (g->groups == NULL || g->slot == NULL) {
            PyErr_NoMemory();
            goto done;
        }
        for (Py_ssize_t key = 0; key < nslots; key++) {
            if (acc[key].count == 0) {
                g->slot[key] = NO_GROUP;
                continue;
            }
            group_t *gr = &g->groups[g->ngroups];
            gr->sum = acc[key];
            gr->key = (uint32_t)key;
            gr->other = NO_GROUP;
            g->slot[key] = (uint32_t)g->ngroups++;
        }
    }
    if (overflow) {
        size_overflow();
        goto done;
    }
    rc = 0;
done:
    ctm_free(tbs);
    ctm_free(acc);
    if (rc < 0) {
        grouping_free(g);
    }
    return rc;
}

/* Step 3: translation of string and frame indexes of one snapshot
 * ("from") into another ("to"), by value, memoised. */
typedef struct {
    const ctm_snapdata *from, *to;
    int64_t *smap;              /* -2 unknown, -1 absent, else index */
    int64_t *fmap;
    Py_hash_t *shash;           /* hashes of to's strings */
    uint32_t *stab, smask;      /* to's strings by hash */
    uint32_t *ftab, fmask;      /* to's frames by (filename, lineno) */
} xlate_t;

static void
xlate_free(xlate_t *x)
{
    ctm_free(x->smap);
    ctm_free(x->fmap);
    ctm_free(x->shash);
    ctm_free(x->stab);
    ctm_free(x->ftab);
}

static int64_t *
memo_new(Py_ssize_t n)
{
    int64_t *m = ctm_malloc((size_t)(n ? n : 1) * sizeof(int64_t));
    if (m == NULL) {
        PyErr_NoMemory();
        return NULL;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        m[i] = -2;
    }
    return m;
}

static int
xlate_init(xlate_t *x, const ctm_snapdata *from, const ctm_snapdata *to)
{
    memset(x, 0, sizeof(*x));
    x->from = from;
    x->to = to;
    x->smap = memo_new(from->nstrings);
    x->fmap = memo_new(from->nframes);
    if (x->smap == NULL || x->fmap == NULL) {
        xlate_free(x);
        return -1;
    }
    return 0;
}

static inline uint32_t
frame_hash(uint32_t filename, int32_t lineno)
{
    return ctm_mix32(((uint64_t)filename << 32) ^ (uint32_t)lineno);
}

/* to's string index equal to from's string s, or -1; -2 on error. */
static int64_t
xlate_string(xlate_t *x, uint32_t s)
{
    if (x->smap[s] != -2) {
        return x->smap[s];
    }
    const ctm_snapdata *to = x->to;
    if (x->stab == NULL) {
        x->shash = ctm_malloc((size_t)(to->nstrings ? to->nstrings : 1)
                              * sizeof(Py_hash_t));
        x->stab = table_new(to->nstrings, &x->smask);
        if (x->shash == NULL || x->stab == NULL) {
            PyErr_NoMemory();
            return -2;
        }
        for (Py_ssize_t i = 0; i < to->nstrings; i++) {
            Py_hash_t h = PyObject_Hash(to->strings[i]);
            if (h == -1) {
                return -2;
            }
            x->shash[i] = h;
            uint32_t j = ctm_mix32((uint64_t)h) & x->smask;
            while (x->stab[j]) {
                j = (j + 1) & x->smask;
            }
            x->stab[j] = (uint32_t)i + 1;
        }
    }
    PyObject *str = x->from->strings[s];
    Py_hash_t h = PyObject_Hash(str);
    if (h == -1) {
        return -2;
    }
    int64_t res = -1;
    uint32_t j = ctm_mix32((uint64_t)h) & x->smask, v;
    while ((v = x->stab[j]) != 0) {
        PyObject *cand = to->strings[v - 1];
        if (cand == str) {
            res = v - 1;
            break;
        }
        if (x->shash[v - 1] == h) {
            int c = PyUnicode_Compare(cand, str);
            if (c == -1 && PyErr_Occurred()) {
                return -2;
            }
            if (c == 0) {
                res = v - 1;
                break;
            }
        }
        j = (j + 1) & x->smask;
    }
    x->smap[s] = res;
    return res;
}

/* to's frame index equal to from's frame f, or -1; -2 on error. */
static int64_t
xlate_frame(xlate_t *x, uint32_t f)
{
    if (x->fmap[f] != -2) {
        return x->fmap[f];
    }
    const ctm_snapdata *to = x->to;
    if (x->ftab == NULL) {
        x->ftab = table_new(to->nframes, &x->fmask);
        if (x->ftab == NULL) {
            return -2;
        }
        for (Py_ssize_t i = 0; i < to->nframes; i++) {
            const ctm_snap_frame *fr = &to->frames[i];
            uint32_t j = frame_hash(fr->filename, fr->lineno) & x->fmask;
            while (x->ftab[j]) {
                j = (j + 1) & x->fmask;
            }
            x->ftab[j] = (uint32_t)i + 1;
        }
    }
    const ctm_snap_frame *fr = &x->from->frames[f];
    int64_t s = xlate_string(x, fr->filename);
    if (s < 0) {
        if (s == -1) {
            x->fmap[f] = -1;
        }
        return s;
    }
    int64_t res = -1;
    uint32_t j = frame_hash((uint32_t)s, fr->lineno) & x->fmask, v;
    while ((v = x->ftab[j]) != 0) {
        const ctm_snap_frame *c = &to->frames[v - 1];
        if (c->filename == (uint32_t)s && c->lineno == fr->lineno) {
            res = v - 1;
            break;
        }
        j = (j + 1) & x->fmask;
    }
    x->fmap[f] = res;
    return res;
}

/* The group of gn equal to group gi of go, or NO_GROUP; *err is set to
 * 1 on failure. buf is scratch room for a translated frame sequence. */
static uint32_t
match_group(xlate_t *x, const grouping_t *gn, const grouping_t *go,
            uint32_t gi, uint32_t **buf, uint32_t *bufcap, int *err)
{
    const ctm_snapdata *od = go->d, *nd = gn->d;
    uint32_t key = go->groups[gi].key;
    int64_t r;

    *err = 0;
    switch (go->kind) {
    case KEY_FILENAME:
        r = xlate_string(x, key);
        break;
    case KEY_LINENO:
        if (key == (uint32_t)od->nframes) {
            return gn->slot[nd->nframes];
        }
        r = xlate_frame(x, key);
        break;
    default: {
        const ctm_snap_tb *t = &od->tracebacks[key];
        const uint32_t *refs = tb_refs(od, t);
        if (t->nframe > *bufcap) {
            uint32_t *p = ctm_realloc(*buf, t->nframe * sizeof(uint32_t));
            if (p == NULL) {
                PyErr_NoMemory();
                *err = 1;
                return NO_GROUP;
            }
            *buf = p;
            *bufcap = t->nframe;
        }
        for (uint32_t i = 0; i < t->nframe; i++) {
            r = xlate_frame(x, refs[i]);
            if (r < 0) {
                *err = r == -2;
                return NO_GROUP;
            }
            (*buf)[i] = (uint32_t)r;
        }
        return seq_find(gn, t->nframe ? *buf : no_refs, t->nframe, NULL);
    }
    }
    if (r < 0) {
        *err = r == -2;
        return NO_GROUP;
    }
    return gn->slot[r];
}

/* Step 4: result rows and their order. */
typedef struct {
    uint64_t k[5];              /* sort key, most significant first */
    uint32_t group;
    uint32_t side;              /* 0: new (or only) snapshot, 1: old */
    Py_ssize_t pos;             /* position before sorting */
} row_t;

static int
row_cmp(const void *a, const void *b)
{
    const row_t *x = a, *y = b;
    for (int i = 0; i < 5; i++) {
        if (x->k[i] != y->k[i]) {
            /* descending, as sort(reverse=True) */
            return x->k[i] > y->k[i] ? -1 : 1;
        }
    }
    return 0;
}

typedef struct {
    PyObject *str;
    uint32_t uid;
} strent_t;

static int
strent_cmp(const void *a, const void *b)
{
    /* exact str objects: PyUnicode_Compare cannot fail */
    return PyUnicode_Compare(((const strent_t *)a)->str,
                             ((const strent_t *)b)->str);
}

typedef struct {
    uint64_t head;              /* key of the oldest frame, or 0 */
    const uint32_t *refs;       /* most recent first */
    const uint64_t *fkey;       /* frame keys of the snapshot */
    uint32_t n;
    uint32_t row;
} seqent_t;

/* Traceback order: tuples of frames oldest first, then length. The
 * oldest frame's key is inline, which decides most comparisons without
 * reading the frame arrays. */
static int
seqent_cmp(const void *a, const void *b)
{
    const seqent_t *x = a, *y = b;
    if (x->n && y->n && x->head != y->head) {
        return x->head < y->head ? -1 : 1;
    }
    uint32_t n = x->n < y->n ? x->n : y->n;
    for (uint32_t i = 0; i < n; i++) {
        uint64_t fx = x->fkey[x->refs[x->n - 1 - i]];
        uint64_t fy = y->fkey[y->refs[y->n - 1 - i]];
        if (fx != fy) {
            return fx < fy ? -1 : 1;
        }
    }
    return x->n < y->n ? -1 : (x->n > y->n);
}

/* Unified string ids over both snapshots: a string of the new
 * snapshot is its index; a string of the old one is the index of the
 * equal new string, or nnew + its own index. */
typedef struct {
    const grouping_t *g[2];
    xlate_t *x;                 /* old -> new, NULL without old */
    Py_ssize_t nnew;
    uint32_t *rank;             /* per uid: rank, UINT32_MAX if unused */
    Py_ssize_t nuid;
} order_t;

#define UNRANKED UINT32_MAX

static int64_t
string_uid(order_t *o, int side, uint32_t s)
{
    if (side == 0) {
        return s;
    }
    int64_t r = xlate_string(o->x, s);
    if (r == -2) {
        return -1;
    }
    return r >= 0 ? r : o->nnew + s;
}

/* Mark the strings the key of a row uses. */
static int
mark_row(order_t *o, const row_t *row)
{
    const grouping_t *g = o->g[row->side];
    const ctm_snapdata *d = g->d;
    uint32_t key = g->groups[row->group].key;
    const uint32_t *refs;
    uint32_t n;
    uint32_t single;

    switch (g->kind) {
    case KEY_FILENAME: {
        int64_t u = string_uid(o, row->side, key);
        if (u < 0) {
            return -1;
        }
        o->rank[u] = 0;
        return 0;
    }
    case KEY_LINENO:
        if (key == (uint32_t)d->nframes) {
            return 0;
        }
        single = key;
        refs = &single;
        n = 1;
        break;
    default:
        refs = tb_refs(d, &d->tracebacks[key]);
        n = d->tracebacks[key].nframe;
        break;
    }
    for (uint32_t i = 0; i < n; i++) {
        int64_t u = string_uid(o, row->side, d->frames[refs[i]].filename);
        if (u < 0) {
            return -1;
        }
        o->rank[u] = 0;
    }
    return 0;
}

static inline uint64_t
frame_key(uint32_t rank, int32_t lineno)
{
    /* (filename, lineno) order; the bias keeps negative linenos below */
    return ((uint64_t)rank << 32) | ((uint32_t)lineno ^ 0x80000000u);
}

/* Fill k[4] of every row with its traceback's rank in the stdlib's
 * Traceback order. */
static int
order_rows(order_t *o, row_t *rows, Py_ssize_t nrows)
{
    strent_t *ents = NULL;
    uint64_t *fkey[2] = {NULL, NULL};
    seqent_t *seqs = NULL;
    int rc = -1;

    o->rank = ctm_malloc((size_t)(o->nuid ? o->nuid : 1)
                         * sizeof(uint32_t));
    if (o->rank == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    for (Py_ssize_t u = 0; u < o->nuid; u++) {
        o->rank[u] = UNRANKED;
    }
    for (Py_ssize_t r = 0; r < nrows; r++) {
        if (mark_row(o, &rows[r]) < 0) {
            goto done;
        }
    }
    Py_ssize_t nents = 0;
    for (Py_ssize_t u = 0; u < o->nuid; u++) {
        nents += o->rank[u] != UNRANKED;
    }
    ents = ctm_malloc((size_t)(nents ? nents : 1) * sizeof(strent_t));
    if (ents == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    nents = 0;
    for (Py_ssize_t u = 0; u < o->nuid; u++) {
        if (o->rank[u] == UNRANKED) {
            continue;
        }
        ents[nents].str = u < o->nnew ? o->g[0]->d->strings[u]
                                      : o->g[1]->d->strings[u - o->nnew];
        ents[nents].uid = (uint32_t)u;
        nents++;
    }
    qsort(ents, (size_t)nents, sizeof(strent_t), strent_cmp);
    for (Py_ssize_t i = 0; i < nents; i++) {
        o->rank[ents[i].uid] = (uint32_t)i;
    }

    int kind = o->g[0]->kind;
    if (kind != KEY_TRACEBACK) {
        for (Py_ssize_t r = 0; r < nrows; r++) {
            const grouping_t *g = o->g[rows[r].side];
            const ctm_snapdata *d = g->d;
            uint32_t key = g->groups[rows[r].group].key;
            int64_t u;
            if (kind == KEY_LINENO && key == (uint32_t)d->nframes) {
                rows[r].k[4] = 0;       /* () sorts first */
                continue;
            }
            const ctm_snap_frame *f = kind == KEY_LINENO ? &d->frames[key] : NULL;
            u = string_uid(o, rows[r].side, f ? f->filename : key);
            if (u < 0) {
                goto done;
            }
            if (f == NULL) {
                rows[r].k[4] = o->rank[u];
            }
            else {
                rows[r].k[4] = frame_key(o->rank[u] + 1, f->lineno);
            }
        }
        rc = 0;
        goto done;
    }

    /* 'traceback': rank the frame sequences */
    for (int side = 0; side < 2; side++) {
        const grouping_t *g = o->g[side];
        if (g == NULL) {
            continue;
        }
        fkey[side] = ctm_calloc((size_t)g->d->nframes, sizeof(uint64_t));
        if (fkey[side] == NULL) {
            PyErr_NoMemory();
            goto done;
        }
    }
    seqs = ctm_malloc((size_t)(nrows ? nrows : 1) * sizeof(seqent_t));
    if (seqs == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    for (Py_ssize_t r = 0; r < nrows; r++) {
        int side = (int)rows[r].side;
        const ctm_snapdata *d = o->g[side]->d;
        const ctm_snap_tb *t = &d->tracebacks[o->g[side]->groups[rows[r].group]
                                          .key];
        const uint32_t *refs = tb_refs(d, t);
        for (uint32_t i = 0; i < t->nframe; i++) {
            const ctm_snap_frame *f = &d->frames[refs[i]];
            int64_t u = string_uid(o, side, f->filename);
            if (u < 0) {
                goto done;
            }
            fkey[side][refs[i]] = frame_key(o->rank[u], f->lineno);
        }
        seqs[r].refs = refs;
        seqs[r].fkey = fkey[side];
        seqs[r].n = t->nframe;
        seqs[r].row = (uint32_t)r;
        seqs[r].head = t->nframe ? fkey[side][refs[t->nframe - 1]] : 0;
    }
    qsort(seqs, (size_t)nrows, sizeof(seqent_t), seqent_cmp);
    for (Py_ssize_t i = 0; i < nrows; i++) {
        rows[seqs[i].row].k[4] = (uint64_t)i;
    }
    rc = 0;
done:
    ctm_free(ents);
    ctm_free(fkey[0]);
    ctm_free(fkey[1]);
    ctm_free(seqs);
    return rc;
}

/* The tuples made for results hold only str and int objects (and such
 * tuples), so they can never be part of a cycle: they are untracked at
 * once, as the collector itself would untrack them, but only after
 * traversing them once per generation. */

/* (filename, lineno) */
static PyObject *
frame_pair(PyObject *filename, int32_t lineno)
{
    PyObject *ln = PyLong_FromLong(lineno);
    if (ln == NULL) {
        return NULL;
    }
    PyObject *pair = PyTuple_New(2);
    if (pair == NULL) {
        Py_DECREF(ln);
        return NULL;
    }
    PyTuple_SET_ITEM(pair, 0, Py_NewRef(filename));
    PyTuple_SET_ITEM(pair, 1, ln);
    PyObject_GC_UnTrack(pair);
    return pair;
}

/* The raw frames tuple of a 'traceback' group. pairs (one slot per
 * frame of d, owned by the caller) shares the (filename, lineno) tuples
 * between the rows, as the tracer's raw traces share them. */
static PyObject *
group_frames(const ctm_snapdata *d, uint32_t tb, PyObject **pairs)
{
    const ctm_snap_tb *t = &d->tracebacks[tb];
    const uint32_t *refs = tb_refs(d, t);
    PyObject *frames = PyTuple_New(t->nframe);
    if (frames == NULL) {
        return NULL;
    }
    for (uint32_t i = 0; i < t->nframe; i++) {
        uint32_t f = refs[i];
        if (pairs[f] == NULL) {
            const ctm_snap_frame *fr = &d->frames[f];
            pairs[f] = frame_pair(d->strings[fr->filename], fr->lineno);
            if (pairs[f] == NULL) {
                Py_DECREF(frames);
                return NULL;
            }
        }
        PyTuple_SET_ITEM(frames, i, Py_NewRef(pairs[f]));
    }
    PyObject_GC_UnTrack(frames);
    return frames;
}

/* The Traceback of a group: total_nframe None, like _group_by's. */
static PyObject *
group_traceback(const grouping_t *g, uint32_t gi, PyObject **pairs)
{
    const ctm_snapdata *d = g->d;
    uint32_t key = g->groups[gi].key;
    PyObject *frames, *pair;
    if (g->kind == KEY_TRACEBACK) {
        frames = group_frames(d, key, pairs);
    }
    else if (g->kind == KEY_LINENO && key == (uint32_t)d->nframes) {
        frames = PyTuple_New(0);
    }
    else {
        if (g->kind == KEY_FILENAME) {
            pair = frame_pair(d->strings[key], 0);
        }
        else {
            const ctm_snap_frame *f = &d->frames[key];
            pair = frame_pair(d->strings[f->filename], f->lineno);
        }
        if (pair == NULL) {
            return NULL;
        }
        frames = PyTuple_New(1);
        if (frames == NULL) {
            Py_DECREF(pair);
            return NULL;
        }
        PyTuple_SET_ITEM(frames, 0, pair);
        PyObject_GC_UnTrack(frames);
    }
    if (frames == NULL) {
        return NULL;
    }
    PyObject *tb = ctm_traceback_new(frames, NULL);
    Py_DECREF(frames);
    return tb;
}

/* |a - b| and its sign. */
static inline uint64_t
udiff(uint64_t a, uint64_t b, int *neg)
{
    *neg = a < b;
    return a < b ? b - a : a - b;
}

static int
to_int64(uint64_t mag, int neg, int64_t *out)
{
    if (mag > (uint64_t)INT64_MAX) {
        PyErr_SetString(PyExc_OverflowError,
                        "statistic difference does not fit in 64 bits");
        return -1;
    }
    *out = neg ? -(int64_t)mag : (int64_t)mag;
    return 0;
}

enum { OUT_STATS, OUT_DIFF, OUT_DICT };

/* The Statistic (or StatisticDiff) of a row; *tb is its Traceback,
 * borrowed from the result. */
static PyObject *
make_item(const row_t *row, const grouping_t *gn, const grouping_t *go,
          int out, PyObject **pairs[2], PyObject **tb)
{
    const grouping_t *g = row->side ? go : gn;
    const group_t *gr = &g->groups[row->group];
    PyObject *item;

    *tb = group_traceback(g, row->group, pairs[row->side]);
    if (*tb == NULL) {
        return NULL;
    }
    if (out != OUT_DIFF) {
        item = ctm_statistic_new(*tb, gr->sum.size, gr->sum.count);
    }
    else {
        /* new rows: (size, size - old size, count, count - old count),
         * with nothing old for a new group; old-only rows: (0, -size,
         * 0, -count) */
        sums_t cur = {0, 0}, old = {0, 0};
        int64_t sd, cd;
        int neg;
        if (row->side == 0) {
            cur = gr->sum;
            if (gr->other != NO_GROUP) {
                old = go->groups[gr->other].sum;
            }
        }
        else {
            old = gr->sum;
        }
        uint64_t m = udiff(cur.size, old.size, &neg);
        if (to_int64(m, neg, &sd) < 0) {
            Py_DECREF(*tb);
            return NULL;
        }
        m = udiff(cur.count, old.count, &neg);
        if (to_int64(m, neg, &cd) < 0) {
            Py_DECREF(*tb);
            return NULL;
        }
        item = ctm_statistic_diff_new(*tb, cur.size, sd, cur.count, cd);
    }
    /* the item holds the traceback: hand out a borrowed reference */
    Py_DECREF(*tb);
    return item;
}

/* Join (compare_to), order and make the result objects. go is NULL
 * except for OUT_DIFF. */
static PyObject *
build_result(grouping_t *gn, grouping_t *go, int out)
{
    xlate_t x;
    int have_x = 0;
    row_t *rows = NULL;
    uint32_t *buf = NULL, bufcap = 0;
    order_t o;
    PyObject *res = NULL;
    PyObject **pairs[2] = {NULL, NULL};
    PyObject **sorted = NULL;
    int paused = 0;
    Py_ssize_t nrows = gn->ngroups;

    memset(&o, 0, sizeof(o));
    if (go != NULL) {
        if (xlate_init(&x, go->d, gn->d) < 0) {
            return NULL;
        }
        have_x = 1;
        for (Py_ssize_t i = 0; i < go->ngroups; i++) {
            int err;
            uint32_t m = match_group(&x, gn, go, (uint32_t)i, &buf, &bufcap,
                                     &err);
            if (err) {
                goto done;
            }
            go->groups[i].other = m;
            if (m != NO_GROUP) {
                gn->groups[m].other = (uint32_t)i;
            }
            else {
                nrows++;
            }
        }
    }

    rows = ctm_malloc((size_t)(nrows ? nrows : 1) * sizeof(row_t));
    if (rows == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    Py_ssize_t r = 0;
    for (Py_ssize_t i = 0; i < gn->ngroups; i++, r++) {
        const group_t *g = &gn->groups[i];
        row_t *row = &rows[r];
        row->group = (uint32_t)i;
        row->side = 0;
        if (go == NULL) {
            row->k[0] = g->sum.size;
            row->k[1] = g->sum.count;
            row->k[2] = row->k[3] = 0;
        }
        else {
            sums_t old = {0, 0};
            int neg;
            if (g->other != NO_GROUP) {
                old = go->groups[g->other].sum;
            }
            row->k[0] = udiff(g->sum.size, old.size, &neg);
            row->k[1] = g->sum.size;
            row->k[2] = udiff(g->sum.count, old.count, &neg);
            row->k[3] = g->sum.count;
        }
        row->k[4] = 0;
    }
    for (Py_ssize_t i = 0; go != NULL && i < go->ngroups; i++) {
        const group_t *g = &go->groups[i];
        if (g->other != NO_GROUP) {
            continue;
        }
        row_t *row = &rows[r++];
        row->group = (uint32_t)i;
        row->side = 1;
        row->k[0] = g->sum.size;
        row->k[1] = 0;
        row->k[2] = g->sum.count;
        row->k[3] = 0;
        row->k[4] = 0;
    }

    if (out != OUT_DICT) {
        o.g[0] = gn;
        o.g[1] = go;
        o.x = have_x ? &x : NULL;
        o.nnew = gn->d->nstrings;
        o.nuid = o.nnew + (go ? go->d->nstrings : 0);
        if (order_rows(&o, rows, nrows) < 0) {
            goto done;
        }
    }
    for (r = 0; r < nrows; r++) {
        rows[r].pos = r;
    }
    if (gn->kind == KEY_TRACEBACK) {
        for (int side = 0; side < 2; side++) {
            const grouping_t *g = side ? go : gn;
            if (g == NULL) {
                continue;
            }
            pairs[side] = ctm_calloc((size_t)g->d->nframes,
                                     sizeof(PyObject *));
            if (pairs[side] == NULL) {
                PyErr_NoMemory();
                goto done;
            }
        }
    }
    paused = ctm_gc_pause();
    if (paused < 0) {
        goto done;
    }
    /* The items are made in group order, which reads the group, frame
     * and string arrays sequentially, then put in sorted order: making
     * them in sorted order costs cache misses on every read. */
    if (out == OUT_DICT) {
        res = PyDict_New();
        for (r = 0; res != NULL && r < nrows; r++) {
            PyObject *tb;
            PyObject *item = make_item(&rows[r], gn, go, out, pairs, &tb);
            int rc = item ? PyDict_SetItem(res, tb, item) : -1;
            Py_XDECREF(item);
            if (rc < 0) {
                Py_CLEAR(res);
            }
        }
        goto done;
    }
    res = PyList_New(nrows);
    if (res == NULL) {
        goto done;
    }
    /* the list's own array holds the items until they are sorted */
    PyObject **items = ((PyListObject *)res)->ob_item;
    for (r = 0; r < nrows; r++) {
        PyObject *tb;
        items[r] = make_item(&rows[r], gn, go, out, pairs, &tb);
        if (items[r] == NULL) {
            Py_CLEAR(res);
            goto done;
        }
    }
    if (nrows < 2) {
        goto done;      /* nothing to sort; an empty list has no array */
    }
    qsort(rows, (size_t)nrows, sizeof(row_t), row_cmp);
    sorted = ctm_malloc((size_t)nrows * sizeof(PyObject *));
    if (sorted == NULL) {
        PyErr_NoMemory();
        Py_CLEAR(res);
        goto done;
    }
    for (r = 0; r < nrows; r++) {
        sorted[r] = items[rows[r].pos];
    }
    memcpy(items, sorted, (size_t)nrows * sizeof(PyObject *));

done:
    ctm_gc_resume(paused);
    if (have_x) {
        xlate_free(&x);
    }
    for (int side = 0; side < 2; side++) {
        const grouping_t *g = side ? go : gn;
        if (pairs[side] == NULL) {
            continue;
        }
        for (Py_ssize_t f = 0; f < g->d->nframes; f++) {
            Py_XDECREF(pairs[side][f]);
        }
        ctm_free(pairs[side]);
    }
    ctm_free(o.rank);
    ctm_free(rows);
    ctm_free(buf);
    ctm_free(sorted);
    return res;
}

/* key_type and cumulative, validated in the stdlib's order. */
static int
parse_key(PyObject *key_type, PyObject *cumulative, int *kind, int *cum)
{
    *kind = -1;
    if (PyUnicode_Check(key_type)) {
        if (PyUnicode_CompareWithASCIIString(key_type, "traceback") == 0) {
            *kind = KEY_TRACEBACK;
        }
        else if (PyUnicode_CompareWithASCIIString(key_type,
                                                  "filename") == 0) {
            *kind = KEY_FILENAME;
        }
        else if (PyUnicode_CompareWithASCIIString(key_type,
                                                  "lineno") == 0) {
            *kind = KEY_LINENO;
        }
    }
    if (*kind < 0) {
        PyErr_Format(PyExc_ValueError, "unknown key_type: %R", key_type);
        return -1;
    }
    *cum = PyObject_IsTrue(cumulative);
    if (*cum < 0) {
        return -1;
    }
    if (*cum && *kind == KEY_TRACEBACK) {
        PyErr_Format(PyExc_ValueError,
                     "cumulative mode cannot by used with key type %R",
                     key_type);
        return -1;
    }
    return 0;
}

/* ------------------------------------------------------------------
 * Snapshot
 * ---------------------------------------------------------------- */

/* A strong reference to the snapshot's _Traces, which the methods hold
 * while they work: Python code they run on the way (a filter's _match,
 * an attribute of a foreign snapshot, pickling) may set
 * snapshot.traces, which must not free the data in use. */
static TracesObject *
snapshot_traces(SnapshotObject *self)
{
    if (self->traces == NULL) {
        PyErr_Format(PyExc_AttributeError,
                     "'%.100s' object has no attribute 'traces'",
                     Py_TYPE(self)->tp_name);
        return NULL;
    }
    return (TracesObject *)Py_NewRef((PyObject *)self->traces);
}

ctm_snapdata *
ctm_snapshot_data(PyObject *snapshot)
{
    if (!PyObject_TypeCheck(snapshot, &SnapshotType)) {
        PyErr_Format(PyExc_TypeError, "expected a Snapshot, not %.200s",
                     Py_TYPE(snapshot)->tp_name);
        return NULL;
    }
    SnapshotObject *s = (SnapshotObject *)snapshot;
    if (s->traces == NULL) {
        PyErr_SetString(PyExc_TypeError, "the Snapshot is not initialized");
        return NULL;
    }
    return s->traces->data;
}

static PyObject *
snapshot_of_traces(PyTypeObject *type, PyObject *traces, PyObject *limit)
{
    SnapshotObject *s = (SnapshotObject *)type->tp_alloc(type, 0);
    if (s == NULL) {
        Py_DECREF(traces);
        return NULL;
    }
    s->traces = (TracesObject *)traces;
    s->limit = Py_NewRef(limit ? limit : Py_None);
    return (PyObject *)s;
}

PyObject *
ctm_snapshot_new(ctm_snapdata *data, PyObject *traceback_limit)
{
    if (data == NULL) {
        return NULL;
    }
    PyObject *traces = traces_wrap(data);
    if (traces == NULL) {
        return NULL;
    }
    return snapshot_of_traces(&SnapshotType, traces, traceback_limit);
}

static int
snapshot_init(SnapshotObject *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"traces", "traceback_limit", NULL};
    PyObject *traces, *limit, *obj;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OO:Snapshot", kwlist,
                                     &traces, &limit)) {
        return -1;
    }
    if (PyObject_TypeCheck(traces, &TracesType)) {
        /* immutable: share it */
        obj = Py_NewRef(traces);
    }
    else {
        ctm_snapdata *data = ctm_snapdata_from_raw(traces);
        if (data == NULL) {
            return -1;
        }
        obj = traces_wrap(data);
        if (obj == NULL) {
            return -1;
        }
    }
    Py_XSETREF(self->traces, (TracesObject *)obj);
    Py_XSETREF(self->limit, Py_NewRef(limit));
    return 0;
}

static int
snapshot_traverse(SnapshotObject *self, visitproc visit, void *arg)
{
    Py_VISIT(self->dict);
    Py_VISIT(self->limit);
    return 0;
}

static int
snapshot_clear(SnapshotObject *self)
{
    Py_CLEAR(self->dict);
    Py_CLEAR(self->limit);
    Py_CLEAR(self->traces);
    return 0;
}

static void
snapshot_dealloc(SnapshotObject *self)
{
    PyObject_GC_UnTrack(self);
    if (self->weakreflist != NULL) {
        PyObject_ClearWeakRefs((PyObject *)self);
    }
    snapshot_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *
snapshot_get_traces(SnapshotObject *self, void *Py_UNUSED(closure))
{
    return (PyObject *)snapshot_traces(self);
}

static int
snapshot_set_traces(SnapshotObject *self, PyObject *value,
                    void *Py_UNUSED(closure))
{
    if (value == NULL || !PyObject_TypeCheck(value, &TracesType)) {
        PyErr_SetString(PyExc_TypeError,
                        "Snapshot.traces can only be set to the traces of "
                        "a snapshot");
        return -1;
    }
    Py_XSETREF(self->traces, (TracesObject *)Py_NewRef(value));
    return 0;
}

/* statistics and _group_by once the arguments are checked. */
static PyObject *
group_result(SnapshotObject *self, int kind, int cum, int out)
{
    grouping_t g;
    PyObject *res = NULL;
    TracesObject *t = snapshot_traces(self);
    if (t == NULL) {
        return NULL;
    }
    if (group_build(&g, t->data, kind, cum) == 0) {
        res = build_result(&g, NULL, out);
        grouping_free(&g);
    }
    Py_DECREF(t);
    return res;
}

static PyObject *
snapshot_statistics(SnapshotObject *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"key_type", "cumulative", NULL};
    PyObject *key_type, *cumulative = Py_False;
    int kind, cum;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O|O:statistics", kwlist,
                                     &key_type, &cumulative)
        || parse_key(key_type, cumulative, &kind, &cum) < 0) {
        return NULL;
    }
    return group_result(self, kind, cum, OUT_STATS);
}

static PyObject *
snapshot_group_by(SnapshotObject *self, PyObject *args)
{
    PyObject *key_type, *cumulative;
    int kind, cum;
    if (!PyArg_ParseTuple(args, "OO:_group_by", &key_type, &cumulative)
        || parse_key(key_type, cumulative, &kind, &cum) < 0) {
        return NULL;
    }
    return group_result(self, kind, cum, OUT_DICT);
}

/* _strip_root(frames, limit): a Snapshot without the runner's frames
 * (raw (filename, lineno) pairs, most recent first) below the program's,
 * with traceback_limit limit: see ctm_snapdata_strip_root. */
static PyObject *
snapshot_strip_root(SnapshotObject *self, PyObject *args)
{
    PyObject *frames, *res = NULL;
    unsigned int limit;
    if (!PyArg_ParseTuple(args, "O!I:_strip_root", &PyTuple_Type, &frames,
                          &limit)) {
        return NULL;
    }
    TracesObject *t = snapshot_traces(self);
    if (t == NULL) {
        return NULL;
    }
    const ctm_snapdata *d = t->data;
    Py_ssize_t k = PyTuple_GET_SIZE(frames);
    int64_t *chain = ctm_malloc((size_t)(k ? k : 1) * sizeof(int64_t));
    if (chain == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    for (Py_ssize_t j = 0; j < k; j++) {
        PyObject *fr = PyTuple_GET_ITEM(frames, j);
        PyObject *name;
        int lineno;
        if (!PyTuple_Check(fr)
            || !PyArg_ParseTuple(fr, "Ui", &name, &lineno)) {
            if (!PyErr_Occurred()) {
                PyErr_SetString(PyExc_TypeError,
                                "a frame must be (filename, lineno)");
            }
            goto done;
        }
        Py_hash_t h = PyObject_Hash(name);
        Py_ssize_t s = h == -1 ? -1 : find_string(d, name, h);
        if (PyErr_Occurred()) {
            goto done;
        }
        chain[j] = -1;
        for (Py_ssize_t f = 0; s >= 0 && f < d->nframes; f++) {
            if (d->frames[f].filename == (uint32_t)s
                && d->frames[f].lineno == lineno) {
                chain[j] = f;
                break;
            }
        }
    }
    ctm_snapdata *nd = ctm_snapdata_strip_root(d, chain, (uint32_t)k,
                                               limit);
    if (nd != NULL) {
        PyObject *lim = PyLong_FromUnsignedLong(limit);
        if (lim == NULL) {
            ctm_snapdata_free(nd);
        }
        else {
            res = ctm_snapshot_new(nd, lim);
            Py_DECREF(lim);
        }
    }
done:
    ctm_free(chain);
    Py_DECREF(t);
    return res;
}

/* _tree(): the traceback tree (tree.c), for flame graphs. */
static PyObject *
snapshot_tree(SnapshotObject *self, PyObject *Py_UNUSED(ignored))
{
    TracesObject *t = snapshot_traces(self);
    if (t == NULL) {
        return NULL;
    }
    PyObject *res = ctm_snapdata_tree(t->data);
    Py_DECREF(t);
    return res;
}

/* The traces of compare_to's old snapshot: its own, or, for an object
 * that is not a Snapshot of this module (the stdlib's Snapshot, say),
 * new ones built from its traces._traces. */
static TracesObject *
old_traces(PyObject *old)
{
    if (PyObject_TypeCheck(old, &SnapshotType)) {
        return snapshot_traces((SnapshotObject *)old);
    }
    /* the stdlib calls old_snapshot._group_by: same AttributeError */
    PyObject *attr = PyObject_GetAttrString(old, "_group_by");
    if (attr == NULL) {
        return NULL;
    }
    Py_DECREF(attr);
    PyObject *traces = PyObject_GetAttrString(old, "traces");
    if (traces == NULL) {
        return NULL;
    }
    PyObject *raw = PyObject_GetAttrString(traces, "_traces");
    Py_DECREF(traces);
    if (raw == NULL) {
        return NULL;
    }
    ctm_snapdata *data = ctm_snapdata_from_raw(raw);
    Py_DECREF(raw);
    return data ? (TracesObject *)traces_wrap(data) : NULL;
}

static PyObject *
snapshot_compare_to(SnapshotObject *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"old_snapshot", "key_type", "cumulative",
                             NULL};
    PyObject *old, *key_type, *cumulative = Py_False;
    PyObject *res = NULL;
    TracesObject *t, *ot = NULL;
    int kind, cum;
    grouping_t gn, go;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OO|O:compare_to", kwlist,
                                     &old, &key_type, &cumulative)
        || parse_key(key_type, cumulative, &kind, &cum) < 0) {
        return NULL;
    }
    /* the stdlib groups the new snapshot before looking at the old */
    t = snapshot_traces(self);
    if (t == NULL) {
        return NULL;
    }
    if (group_build(&gn, t->data, kind, cum) < 0) {
        Py_DECREF(t);
        return NULL;
    }
    ot = old_traces(old);
    if (ot != NULL && group_build(&go, ot->data, kind, cum) == 0) {
        res = build_result(&gn, &go, OUT_DIFF);
        grouping_free(&go);
    }
    grouping_free(&gn);
    Py_DECREF(t);
    Py_XDECREF(ot);
    return res;
}

static PyObject *
snapshot_filter_traces(SnapshotObject *self, PyObject *args,
                       PyObject *kwargs)
{
    static char *kwlist[] = {"filters", NULL};
    PyObject *filters;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O:filter_traces", kwlist,
                                     &filters)) {
        return NULL;
    }
    int r = PyObject_IsInstance(filters, iterable_abc);
    if (r < 0) {
        return NULL;
    }
    if (!r) {
        PyObject *name = PyObject_GetAttrString((PyObject *)Py_TYPE(filters),
                                                "__name__");
        if (name != NULL) {
            PyErr_Format(PyExc_TypeError,
                         "filters must be a list of filters, not %S", name);
            Py_DECREF(name);
        }
        return NULL;
    }
    TracesObject *t = snapshot_traces(self);
    if (t == NULL) {
        return NULL;
    }
    const ctm_snapdata *d = t->data;
    ctm_snapdata *nd = NULL;
    unsigned char *keep = NULL;
    int nonempty = PyObject_IsTrue(filters);
    if (nonempty < 0) {
        goto done;
    }
    keep = ctm_malloc((size_t)(d->ntraces ? d->ntraces : 1));
    if (keep == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    if (!nonempty) {
        memset(keep, 1, (size_t)d->ntraces);
    }
    else if (ctm_filter_keep(d, filters, keep) < 0) {
        goto done;
    }
    nd = ctm_snapdata_select(d, keep);
done:
    ctm_free(keep);
    Py_DECREF(t);
    if (nd == NULL) {
        return NULL;
    }
    if (self->limit == NULL) {
        ctm_snapdata_free(nd);
        PyErr_Format(PyExc_AttributeError,
                     "'%.100s' object has no attribute 'traceback_limit'",
                     Py_TYPE(self)->tp_name);
        return NULL;
    }
    /* owned: allocating the new snapshot may run a collection, and
     * finalisers may set self.traceback_limit */
    PyObject *limit = Py_NewRef(self->limit);
    PyObject *res = ctm_snapshot_new(nd, limit);
    Py_DECREF(limit);
    return res;
}

/* The instance attributes a dump carries: __dict__ without the
 * standard attributes (which are not stored there anyway). New
 * reference or NULL for none; *err set on failure. */
static PyObject *
dump_extra(SnapshotObject *self, int *err)
{
    *err = 0;
    if (self->dict == NULL || PyDict_GET_SIZE(self->dict) == 0) {
        return NULL;
    }
    PyObject *extra = PyDict_Copy(self->dict);
    if (extra == NULL) {
        *err = 1;
        return NULL;
    }
    static const char *const standard[] = {"traces", "traceback_limit"};
    for (size_t i = 0; i < 2; i++) {
        PyObject *v = PyDict_GetItemString(extra, standard[i]);
        if (v != NULL && PyDict_DelItemString(extra, standard[i]) < 0) {
            Py_DECREF(extra);
            *err = 1;
            return NULL;
        }
    }
    return extra;
}

/* dump(filename, format='ctracemalloc'): format 'pickle' writes the
 * stdlib's format, which tracemalloc.Snapshot.load reads. */
static PyObject *
snapshot_dump(SnapshotObject *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"filename", "format", NULL};
    PyObject *filename, *format = NULL;
    int err, rc = -1, as_pickle = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O|$U:dump", kwlist,
                                     &filename, &format)) {
        return NULL;
    }
    if (format != NULL) {
        if (PyUnicode_CompareWithASCIIString(format, "pickle") == 0) {
            as_pickle = 1;
        }
        else if (PyUnicode_CompareWithASCIIString(format,
                                                  "ctracemalloc") != 0) {
            PyErr_Format(PyExc_ValueError,
                         "format must be 'ctracemalloc' or 'pickle', not %R",
                         format);
            return NULL;
        }
    }
    TracesObject *t = snapshot_traces(self);
    if (t == NULL) {
        return NULL;
    }
    PyObject *limit = Py_NewRef(self->limit ? self->limit : Py_None);
    PyObject *extra = dump_extra(self, &err);
    if (!err && as_pickle) {
        PyObject *bytes = ctm_stdpickle_dumps(t->data, limit, extra);
        rc = bytes ? ctm_write_file(filename, bytes) : -1;
        Py_XDECREF(bytes);
    }
    else if (!err) {
        rc = ctm_dump(filename, t->data, limit, extra);
    }
    Py_XDECREF(extra);
    Py_DECREF(limit);
    Py_DECREF(t);
    if (rc < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

/* Give a new snapshot the attributes a dump carried. */
static int
restore_extra(PyObject *snapshot, PyObject *extra)
{
    SnapshotObject *s = (SnapshotObject *)snapshot;
    if (extra == NULL || extra == Py_None) {
        return 0;
    }
    if (s->dict == NULL) {
        s->dict = PyDict_New();
        if (s->dict == NULL) {
            return -1;
        }
    }
    return PyDict_Update(s->dict, extra);
}

static PyObject *
snapshot_load(PyObject *Py_UNUSED(cls), PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"filename", "progress", NULL};
    PyObject *filename, *progress = Py_None, *limit = NULL, *extra = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O|$O:load", kwlist,
                                     &filename, &progress)) {
        return NULL;
    }
    if (progress != Py_None && !PyCallable_Check(progress)) {
        PyErr_Format(PyExc_TypeError,
                     "progress must be callable or None, not %.200s",
                     Py_TYPE(progress)->tp_name);
        return NULL;
    }
    ctm_snapdata *d = ctm_load(filename, &limit, &extra,
                               progress == Py_None ? NULL : progress);
    if (d == NULL) {
        return NULL;
    }
    PyObject *res = ctm_snapshot_new(d, limit);
    if (res != NULL && restore_extra(res, extra) < 0) {
        Py_CLEAR(res);
    }
    Py_XDECREF(limit);
    Py_XDECREF(extra);
    return res;
}

/* Pickling: _snapshot_from_bytes(dump_bytes[, cls]); cls only for
 * subclasses, made through cls.__new__(cls) like a plain instance. */
static PyObject *
snapshot_reduce(SnapshotObject *self, PyObject *Py_UNUSED(ignored))
{
    int err;
    PyObject *bytes = NULL;
    TracesObject *t = snapshot_traces(self);
    if (t == NULL) {
        return NULL;
    }
    PyObject *limit = Py_NewRef(self->limit ? self->limit : Py_None);
    PyObject *extra = dump_extra(self, &err);
    if (!err) {
        bytes = ctm_dump_bytes(t->data, limit, extra);
    }
    Py_XDECREF(extra);
    Py_DECREF(limit);
    Py_DECREF(t);
    if (bytes == NULL) {
        return NULL;
    }
    PyObject *res;
    if (Py_TYPE(self) == &SnapshotType) {
        res = Py_BuildValue("O(N)", from_bytes_func, bytes);
    }
    else {
        res = Py_BuildValue("O(NO)", from_bytes_func, bytes,
                            (PyObject *)Py_TYPE(self));
    }
    return res;
}

static PyObject *
snapshot_from_bytes(PyObject *Py_UNUSED(module), PyObject *args)
{
    Py_buffer view;
    PyObject *cls = NULL, *limit = NULL, *extra = NULL, *res = NULL;
    if (!PyArg_ParseTuple(args, "y*|O:_snapshot_from_bytes", &view, &cls)) {
        return NULL;
    }
    ctm_snapdata *d = ctm_load_bytes(view.buf, view.len, &limit, &extra);
    PyBuffer_Release(&view);
    if (d == NULL) {
        return NULL;
    }
    PyObject *traces = traces_wrap(d);
    if (traces == NULL) {
        goto done;
    }
    if (cls == NULL || cls == (PyObject *)&SnapshotType) {
        res = snapshot_of_traces(&SnapshotType, traces, limit);
    }
    else {
        res = PyObject_CallMethod(cls, "__new__", "(O)", cls);
        if (res != NULL && !PyObject_TypeCheck(res, &SnapshotType)) {
            PyErr_SetString(PyExc_TypeError,
                            "_snapshot_from_bytes: not a Snapshot class");
            Py_CLEAR(res);
        }
        if (res == NULL) {
            Py_DECREF(traces);
            goto done;
        }
        SnapshotObject *s = (SnapshotObject *)res;
        Py_XSETREF(s->traces, (TracesObject *)traces);
        Py_XSETREF(s->limit, Py_NewRef(limit ? limit : Py_None));
    }
    if (res != NULL && restore_extra(res, extra) < 0) {
        Py_CLEAR(res);
    }
done:
    Py_XDECREF(limit);
    Py_XDECREF(extra);
    return res;
}

/* sys.getsizeof(snapshot): the object and the arrays it owns (not the
 * filename strs, which the interpreter's code objects share). */
static PyObject *
snapshot_sizeof(SnapshotObject *self, PyObject *unused)
{
    (void)unused;
    size_t n = (size_t)Py_TYPE(self)->tp_basicsize;
    if (self->traces != NULL) {
        n += sizeof(TracesObject) + ctm_snapdata_memory(self->traces->data);
    }
    return PyLong_FromSize_t(n);
}

static PyMethodDef snapshot_methods[] = {
    {"__sizeof__", (PyCFunction)snapshot_sizeof, METH_NOARGS,
     "__sizeof__()\n--\n\nSize of the snapshot in memory, in bytes: the "
     "object and\nthe arrays of traces, tracebacks and frames it holds."},
    {"statistics", (PyCFunction)(void (*)(void))snapshot_statistics,
     METH_VARARGS | METH_KEYWORDS,
     "statistics(key_type, cumulative=False)\n--\n\n"
     "Group statistics by key_type. Return a sorted list of Statistic\n"
     "instances."},
    {"compare_to", (PyCFunction)(void (*)(void))snapshot_compare_to,
     METH_VARARGS | METH_KEYWORDS,
     "compare_to(old_snapshot, key_type, cumulative=False)\n--\n\n"
     "Compute the differences with an old snapshot. Return a sorted list\n"
     "of StatisticDiff instances grouped by key_type."},
    {"filter_traces", (PyCFunction)(void (*)(void))snapshot_filter_traces,
     METH_VARARGS | METH_KEYWORDS,
     "filter_traces(filters)\n--\n\n"
     "Create a new Snapshot instance with the traces that pass filters,\n"
     "a list of Filter and DomainFilter instances."},
    {"dump", (PyCFunction)(void (*)(void))snapshot_dump,
     METH_VARARGS | METH_KEYWORDS,
     "dump($self, /, filename, *, format='ctracemalloc')\n--\n\n"
     "Write the snapshot into a file. format='pickle' writes the stdlib's\n"
     "format, which tracemalloc.Snapshot.load reads; load() reads both."},
    {"load", (PyCFunction)(void (*)(void))snapshot_load,
     METH_VARARGS | METH_KEYWORDS | METH_STATIC,
     "load(filename, *, progress=None)\n--\n\n"
     "Load a snapshot from a file written by dump(), in either format.\n"
     "progress(done, total), if given, is called as the file is read,\n"
     "every 1% (and MiB) of its bytes."},
    {"_group_by", (PyCFunction)snapshot_group_by, METH_VARARGS,
     "Dict of Traceback to Statistic, unsorted."},
    {"_strip_root", (PyCFunction)snapshot_strip_root, METH_VARARGS,
     "_strip_root(frames, limit): a copy without the runner's frames\n"
     "(raw pairs, most recent first) below the program's, whose\n"
     "tracebacks keep at most limit frames."},
    {"_tree", (PyCFunction)snapshot_tree, METH_NOARGS,
     "The traceback tree, oldest frames at the root's children, as lists\n"
     "(parents, filenames, linenos, sizes, counts, names): node 0 is the\n"
     "root, a node's filename indexes names, a parent precedes its\n"
     "children, and a node totals the traces below it."},
    {"__reduce__", (PyCFunction)snapshot_reduce, METH_NOARGS, NULL},
    {NULL, NULL, 0, NULL},
};

static PyMemberDef snapshot_members[] = {
    {"traceback_limit", T_OBJECT_EX, offsetof(SnapshotObject, limit), 0,
     "Maximum number of frames stored in the tracebacks of traces."},
    {NULL, 0, 0, 0, NULL},
};

static PyGetSetDef snapshot_getset[] = {
    {"traces", (getter)snapshot_get_traces, (setter)snapshot_set_traces,
     "Traces of all memory blocks allocated by Python: a sequence of\n"
     "Trace instances.", NULL},
    {"__dict__", PyObject_GenericGetDict, PyObject_GenericSetDict, NULL,
     NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject SnapshotType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "ctracemalloc.Snapshot",
    .tp_basicsize = sizeof(SnapshotObject),
    .tp_dealloc = (destructor)snapshot_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "Snapshot(traces, traceback_limit)\n\n"
              "Snapshot of traces of memory blocks allocated by Python.",
    .tp_traverse = (traverseproc)snapshot_traverse,
    .tp_clear = (inquiry)snapshot_clear,
    .tp_weaklistoffset = offsetof(SnapshotObject, weakreflist),
    .tp_methods = snapshot_methods,
    .tp_members = snapshot_members,
    .tp_getset = snapshot_getset,
    .tp_dictoffset = offsetof(SnapshotObject, dict),
    .tp_init = (initproc)snapshot_init,
    .tp_new = PyType_GenericNew,
};

static PyMethodDef module_functions[] = {
    {"_snapshot_from_bytes", snapshot_from_bytes, METH_VARARGS,
     "Rebuild a pickled Snapshot."},
    {NULL, NULL, 0, NULL},
};

int
ctm_snapshot_types_init(PyObject *module)
{
    if (PyType_Ready(&TracesType) < 0 || PyType_Ready(&SnapshotType) < 0
        || PyModule_AddType(module, &TracesType) < 0
        || PyModule_AddType(module, &SnapshotType) < 0
        || PyModule_AddFunctions(module, module_functions) < 0) {
        return -1;
    }
    from_bytes_func = PyObject_GetAttrString(module, "_snapshot_from_bytes");
    if (from_bytes_func == NULL) {
        return -1;
    }
    PyObject *abc = PyImport_ImportModule("collections.abc");
    if (abc == NULL) {
        return -1;
    }
    iterable_abc = PyObject_GetAttrString(abc, "Iterable");
    Py_DECREF(abc);
    if (iterable_abc == NULL) {
        return -1;
    }
    ctm_state.Traces = &TracesType;
    ctm_state.Snapshot = &SnapshotType;
    return 0;
}
