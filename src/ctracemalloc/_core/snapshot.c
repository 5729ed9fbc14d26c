/* Snapshot: the stdlib's Snapshot API over snapshot data (snapshot.h).
 *
 * Ownership: a _Traces object (traces.c) owns one ctm_snapdata; a
 * Snapshot holds a strong reference to its _Traces. Several snapshots may
 * share one _Traces (Snapshot(other.traces, limit)), and nothing points
 * back from _Traces to a Snapshot, so there is no cycle and a snapshot's
 * memory goes as soon as its last reference does. The _Traces object is
 * made with the snapshot rather than on first access: it is one small
 * object, and it is what owns the data.
 *
 * A Snapshot made by __new__ without __init__ has no traces (NULL), as a
 * Python instance would have no attribute: methods then raise. A method
 * holds its own reference to the _Traces while it works, since Python
 * code it runs may set snapshot.traces.
 *
 * statistics, compare_to and _group_by group the traces with the
 * grouping engine (grouping.c), which returns C rows; this file makes
 * the Python objects of a result from the rows. Filtering, the
 * traceback tree and the file formats are in their own files too: this
 * one parses the arguments, holds the data, and makes the objects.
 *
 * Snapshot is a heap type, subclassable, with GC support (its __dict__
 * and traceback_limit may hold anything), a __dict__ and weak references.
 * Pickling goes through _snapshot_from_bytes and the ctracemalloc file
 * format, with the instance __dict__ and the class of a subclass.
 */
#include "formats.h"
#include "snapshot.h"
#include "types.h"

#include <string.h>
#include <structmember.h>

typedef struct {
    PyObject_HEAD
    PyObject *dict;
    PyObject *weakreflist;
    ctm_traces_object *traces;  /* NULL until __init__ */
    PyObject *limit;            /* traceback_limit, any object */
} SnapshotObject;

/* collections.abc.Iterable, which filter_traces checks its argument
 * against: found on first use and kept for the life of the process, as
 * the types are. Borrowed; NULL with an exception. */
static PyObject *
iterable_abc(void)
{
    static PyObject *iterable;
    if (iterable == NULL) {
        PyObject *abc = PyImport_ImportModule("collections.abc");
        if (abc == NULL) {
            return NULL;
        }
        iterable = PyObject_GetAttrString(abc, "Iterable");
        Py_DECREF(abc);
    }
    return iterable;
}

/* _snapshot_from_bytes (ctm_snapshot_from_bytes, one of module.c's
 * functions) as the module holds it, for pickles to name: found on first
 * use, as iterable_abc. */
static PyObject *
from_bytes_func(void)
{
    static PyObject *func;
    if (func == NULL) {
        func = PyObject_GetAttrString(ctm_state.module,
                                      "_snapshot_from_bytes");
    }
    return func;
}

/* ------------------------------------------------------------------
 * Results: the Python objects of the grouping engine's rows
 * ---------------------------------------------------------------- */

enum { OUT_STATS, OUT_DIFF, OUT_DICT };

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

/* The raw frames tuple of traceback tb of d. pairs (one slot per frame
 * of d, owned by the caller) shares the (filename, lineno) tuples
 * between the rows, as the tracer's raw traces share them. */
static PyObject *
group_frames(const ctm_snapdata *d, uint32_t tb, PyObject **pairs)
{
    const ctm_snap_tb *t = &d->tracebacks[tb];
    const uint32_t *refs = ctm_tb_refs(d, t);
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

/* The Traceback of a row: total_nframe None, like _group_by's. */
static PyObject *
row_traceback(const ctm_group_result *res, const ctm_group_row *row,
              PyObject **pairs)
{
    const ctm_snapdata *d = res->data[row->side];
    uint32_t key = row->key;
    PyObject *frames, *pair, *functions = NULL;
    if (res->key_type == CTM_KEY_TRACEBACK) {
        frames = group_frames(d, key, pairs);
        functions = frames ? ctm_snapdata_functions_tuple(d, key) : NULL;
        if (functions == NULL) {
            Py_XDECREF(frames);
            return NULL;
        }
    }
    else if (res->key_type == CTM_KEY_LINENO
             && key == (uint32_t)d->nframes) {
        frames = PyTuple_New(0);
    }
    else {
        if (res->key_type == CTM_KEY_FILENAME) {
            pair = frame_pair(d->strings[key], 0);
        }
        else {
            const ctm_snap_frame *f = &d->frames[key];
            pair = frame_pair(d->strings[f->filename], f->lineno);
            if (f->function != CTM_NO_FUNCTION) {
                functions = PyTuple_Pack(1, d->strings[f->function]);
                if (functions == NULL) {
                    Py_XDECREF(pair);
                    return NULL;
                }
            }
        }
        if (pair == NULL) {
            Py_XDECREF(functions);
            return NULL;
        }
        frames = PyTuple_New(1);
        if (frames == NULL) {
            Py_DECREF(pair);
            Py_XDECREF(functions);
            return NULL;
        }
        PyTuple_SET_ITEM(frames, 0, pair);
        PyObject_GC_UnTrack(frames);
    }
    if (frames == NULL) {
        return NULL;
    }
    PyObject *tb = ctm_traceback_new(frames, NULL, functions);
    Py_DECREF(frames);
    Py_XDECREF(functions);
    return tb;
}

/* The Statistic (or StatisticDiff) of a row; *tb is its Traceback,
 * borrowed from the result. */
static PyObject *
make_item(const ctm_group_result *res, const ctm_group_row *row, int out,
          PyObject **pairs[2], PyObject **tb)
{
    PyObject *item;

    *tb = row_traceback(res, row, pairs[row->side]);
    if (*tb == NULL) {
        return NULL;
    }
    if (out != OUT_DIFF) {
        item = ctm_statistic_new(*tb, row->size, row->count);
    }
    else {
        item = ctm_statistic_diff_new(*tb, row->size, row->size_diff,
                                      row->count, row->count_diff);
    }
    /* the item holds the traceback: hand out a borrowed reference */
    Py_DECREF(*tb);
    return item;
}

/* The result objects of the rows: a list in res->order (OUT_STATS,
 * OUT_DIFF) or a dict (OUT_DICT). */
static PyObject *
result_objects(const ctm_group_result *res, int out)
{
    PyObject *list = NULL;
    PyObject **pairs[2] = {NULL, NULL};
    PyObject **sorted = NULL;
    int paused = 0;
    Py_ssize_t r, nrows = res->nrows;

    if (res->key_type == CTM_KEY_TRACEBACK) {
        for (int side = 0; side < 2; side++) {
            const ctm_snapdata *d = res->data[side];
            if (d == NULL) {
                continue;
            }
            pairs[side] = ctm_calloc((size_t)d->nframes, sizeof(PyObject *));
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
    /* The items are made in row order, which reads the frame and string
     * arrays sequentially, then put in sorted order: making them in
     * sorted order costs cache misses on every read. */
    if (out == OUT_DICT) {
        list = PyDict_New();        /* a dict, in this case */
        for (r = 0; list != NULL && r < nrows; r++) {
            PyObject *tb;
            PyObject *item = make_item(res, &res->rows[r], out, pairs, &tb);
            int rc = item ? PyDict_SetItem(list, tb, item) : -1;
            Py_XDECREF(item);
            if (rc < 0) {
                Py_CLEAR(list);
            }
        }
        goto done;
    }
    list = PyList_New(nrows);
    if (list == NULL) {
        goto done;
    }
    /* the list's own array holds the items until they are sorted */
    PyObject **items = ((PyListObject *)list)->ob_item;
    for (r = 0; r < nrows; r++) {
        PyObject *tb;
        items[r] = make_item(res, &res->rows[r], out, pairs, &tb);
        if (items[r] == NULL) {
            Py_CLEAR(list);
            goto done;
        }
    }
    if (nrows < 2) {
        goto done;      /* nothing to sort; an empty list has no array */
    }
    sorted = ctm_malloc((size_t)nrows * sizeof(PyObject *));
    if (sorted == NULL) {
        PyErr_NoMemory();
        Py_CLEAR(list);
        goto done;
    }
    for (r = 0; r < nrows; r++) {
        sorted[r] = items[res->order[r]];
    }
    memcpy(items, sorted, (size_t)nrows * sizeof(PyObject *));

done:
    ctm_gc_resume(paused);
    for (int side = 0; side < 2; side++) {
        if (pairs[side] == NULL) {
            continue;
        }
        for (Py_ssize_t f = 0; f < res->data[side]->nframes; f++) {
            Py_XDECREF(pairs[side][f]);
        }
        ctm_free(pairs[side]);
    }
    ctm_free(sorted);
    return list;
}

/* The result of g (statistics, _group_by) or of g compared with old
 * (compare_to). */
static PyObject *
groups_result(ctm_groups *g, ctm_groups *old, int out)
{
    ctm_group_result res;
    if (ctm_groups_result(g, old, out != OUT_DICT, &res) < 0) {
        return NULL;
    }
    PyObject *obj = result_objects(&res, out);
    ctm_group_result_free(&res);
    return obj;
}

/* key_type and cumulative, validated in the stdlib's order. */
static int
parse_key(PyObject *key_type, PyObject *cumulative, int *kind, int *cum)
{
    *kind = -1;
    if (PyUnicode_Check(key_type)) {
        if (PyUnicode_CompareWithASCIIString(key_type, "traceback") == 0) {
            *kind = CTM_KEY_TRACEBACK;
        }
        else if (PyUnicode_CompareWithASCIIString(key_type,
                                                  "filename") == 0) {
            *kind = CTM_KEY_FILENAME;
        }
        else if (PyUnicode_CompareWithASCIIString(key_type,
                                                  "lineno") == 0) {
            *kind = CTM_KEY_LINENO;
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
    if (*cum && *kind == CTM_KEY_TRACEBACK) {
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
static ctm_traces_object *
snapshot_traces(SnapshotObject *self)
{
    if (self->traces == NULL) {
        ctm_no_attribute((PyObject *)self, "traces");
        return NULL;
    }
    return (ctm_traces_object *)Py_NewRef((PyObject *)self->traces);
}

ctm_snapdata *
ctm_snapshot_data(PyObject *snapshot)
{
    if (!PyObject_TypeCheck(snapshot, ctm_state.Snapshot)) {
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
    s->traces = (ctm_traces_object *)traces;
    s->limit = Py_NewRef(limit ? limit : Py_None);
    return (PyObject *)s;
}

PyObject *
ctm_snapshot_new(ctm_snapdata *data, PyObject *traceback_limit)
{
    if (data == NULL) {
        return NULL;
    }
    PyObject *traces = ctm_traces_wrap(data);
    if (traces == NULL) {
        return NULL;
    }
    return snapshot_of_traces(ctm_state.Snapshot, traces, traceback_limit);
}

/* The sample_interval argument of Snapshot(): an int >= 0, as an int
 * argument of the stdlib's (TypeError for a non-int, ValueError for a
 * negative one). 0 or -1 with an exception. */
static int
parse_interval(PyObject *obj, uint64_t *out)
{
    PyObject *v = PyNumber_Index(obj);
    if (v == NULL) {
        return -1;
    }
    int overflow;
    long long small = PyLong_AsLongLongAndOverflow(v, &overflow);
    if (overflow < 0 || (overflow == 0 && small < 0)) {
        if (!PyErr_Occurred()) {
            PyErr_SetString(PyExc_ValueError,
                            "sample_interval must not be negative");
        }
        Py_DECREF(v);
        return -1;
    }
    unsigned long long u = PyLong_AsUnsignedLongLong(v);
    Py_DECREF(v);
    if (u == (unsigned long long)-1 && PyErr_Occurred()) {
        return -1;
    }
    *out = u;
    return 0;
}

/* New data of traces: raw traces (checked), or a copy of a _Traces'
 * data, which Snapshot() gives a new interval. */
static ctm_snapdata *
fresh_data(PyObject *traces)
{
    if (!PyObject_TypeCheck(traces, ctm_state.Traces)) {
        return ctm_snapdata_from_raw(traces);
    }
    const ctm_snapdata *d = ((ctm_traces_object *)traces)->data;
    unsigned char *keep = ctm_malloc((size_t)(d->ntraces ? d->ntraces : 1));
    if (keep == NULL) {
        PyErr_NoMemory();
        return NULL;
    }
    memset(keep, 1, (size_t)d->ntraces);
    ctm_snapdata *data = ctm_snapdata_select(d, keep);
    ctm_free(keep);
    return data;
}

/* Snapshot(traces, traceback_limit, *, sample_interval=0): raw traces
 * (the stdlib's) whose sizes are true sizes, of samples at the interval
 * if it is not 0; or the traces of a snapshot, shared, which keep their
 * interval unless one is given (then they are copied with it). */
static int
snapshot_init(SnapshotObject *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"traces", "traceback_limit", "sample_interval",
                             NULL};
    PyObject *traces, *limit, *obj, *interval_obj = NULL;
    uint64_t interval = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OO|$O:Snapshot", kwlist,
                                     &traces, &limit, &interval_obj)) {
        return -1;
    }
    if (interval_obj != NULL && parse_interval(interval_obj, &interval) < 0) {
        return -1;
    }
    if (PyObject_TypeCheck(traces, ctm_state.Traces)
        && (interval_obj == NULL
            || interval == ((ctm_traces_object *)traces)->data
                                   ->sample_interval)) {
        /* immutable: share it */
        obj = Py_NewRef(traces);
    }
    else {
        ctm_snapdata *data = fresh_data(traces);
        if (data == NULL) {
            return -1;
        }
        data->sample_interval = interval;
        obj = ctm_traces_wrap(data);
        if (obj == NULL) {
            return -1;
        }
    }
    Py_XSETREF(self->traces, (ctm_traces_object *)obj);
    Py_XSETREF(self->limit, Py_NewRef(limit));
    return 0;
}

static int
snapshot_traverse(SnapshotObject *self, visitproc visit, void *arg)
{
    /* a heap type: each instance holds a reference to it */
    Py_VISIT(Py_TYPE(self));
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
    PyTypeObject *tp = Py_TYPE(self);
    snapshot_clear(self);
    tp->tp_free((PyObject *)self);
    Py_DECREF(tp);
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
    if (value == NULL || !PyObject_TypeCheck(value, ctm_state.Traces)) {
        PyErr_SetString(PyExc_TypeError,
                        "Snapshot.traces can only be set to the traces of "
                        "a snapshot");
        return -1;
    }
    Py_XSETREF(self->traces, (ctm_traces_object *)Py_NewRef(value));
    return 0;
}

/* statistics and _group_by once the arguments are checked. */
static PyObject *
group_result(SnapshotObject *self, int kind, int cum, int out)
{
    PyObject *res = NULL;
    ctm_traces_object *t = snapshot_traces(self);
    if (t == NULL) {
        return NULL;
    }
    ctm_groups *g = ctm_groups_new(t->data, kind, cum);
    if (g != NULL) {
        res = groups_result(g, NULL, out);
        ctm_groups_free(g);
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
    ctm_traces_object *t = snapshot_traces(self);
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
        Py_ssize_t f = h == -1 ? -1
                               : ctm_snapdata_find_frame(d, name, h, lineno);
        if (PyErr_Occurred()) {
            goto done;
        }
        chain[j] = f;
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
    ctm_traces_object *t = snapshot_traces(self);
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
static ctm_traces_object *
old_traces(PyObject *old)
{
    if (PyObject_TypeCheck(old, ctm_state.Snapshot)) {
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
    return data ? (ctm_traces_object *)ctm_traces_wrap(data) : NULL;
}

static PyObject *
snapshot_compare_to(SnapshotObject *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"old_snapshot", "key_type", "cumulative",
                             NULL};
    PyObject *old, *key_type, *cumulative = Py_False;
    PyObject *res = NULL;
    ctm_traces_object *t, *ot = NULL;
    int kind, cum;
    ctm_groups *gn, *go;
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
    gn = ctm_groups_new(t->data, kind, cum);
    if (gn == NULL) {
        Py_DECREF(t);
        return NULL;
    }
    ot = old_traces(old);
    if (ot != NULL && (go = ctm_groups_new(ot->data, kind, cum)) != NULL) {
        res = groups_result(gn, go, OUT_DIFF);
        ctm_groups_free(go);
    }
    ctm_groups_free(gn);
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
    PyObject *iterable = iterable_abc();
    if (iterable == NULL) {
        return NULL;
    }
    int r = PyObject_IsInstance(filters, iterable);
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
    ctm_traces_object *t = snapshot_traces(self);
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
        return ctm_no_attribute((PyObject *)self, "traceback_limit");
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
    ctm_traces_object *t = snapshot_traces(self);
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
    ctm_traces_object *t = snapshot_traces(self);
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
    PyObject *res, *func = from_bytes_func();
    if (func == NULL) {
        Py_DECREF(bytes);
        return NULL;
    }
    if (Py_TYPE(self) == ctm_state.Snapshot) {
        res = Py_BuildValue("O(N)", func, bytes);
    }
    else {
        res = Py_BuildValue("O(NO)", func, bytes,
                            (PyObject *)Py_TYPE(self));
    }
    return res;
}

PyObject *
ctm_snapshot_from_bytes(PyObject *Py_UNUSED(module), PyObject *args)
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
    PyObject *traces = ctm_traces_wrap(d);
    if (traces == NULL) {
        goto done;
    }
    if (cls == NULL || cls == (PyObject *)ctm_state.Snapshot) {
        res = snapshot_of_traces(ctm_state.Snapshot, traces, limit);
    }
    else {
        res = PyObject_CallMethod(cls, "__new__", "(O)", cls);
        if (res != NULL && !PyObject_TypeCheck(res, ctm_state.Snapshot)) {
            PyErr_SetString(PyExc_TypeError,
                            "_snapshot_from_bytes: not a Snapshot class");
            Py_CLEAR(res);
        }
        if (res == NULL) {
            Py_DECREF(traces);
            goto done;
        }
        SnapshotObject *s = (SnapshotObject *)res;
        Py_XSETREF(s->traces, (ctm_traces_object *)traces);
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
        n += sizeof(ctm_traces_object)
             + ctm_snapdata_memory(self->traces->data);
    }
    return PyLong_FromSize_t(n);
}

static PyObject *
snapshot_get_interval(SnapshotObject *self, void *Py_UNUSED(closure))
{
    if (self->traces == NULL) {
        return ctm_no_attribute((PyObject *)self, "sample_interval");
    }
    return PyLong_FromUnsignedLongLong(self->traces->data->sample_interval);
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
    /* how a heap type is given these offsets */
    {"__weaklistoffset__", T_PYSSIZET, offsetof(SnapshotObject, weakreflist),
     READONLY, NULL},
    {"__dictoffset__", T_PYSSIZET, offsetof(SnapshotObject, dict), READONLY,
     NULL},
    {NULL, 0, 0, 0, NULL},
};

static PyGetSetDef snapshot_getset[] = {
    {"traces", (getter)snapshot_get_traces, (setter)snapshot_set_traces,
     "Traces of all memory blocks allocated by Python: a sequence of\n"
     "Trace instances.", NULL},
    {"sample_interval", (getter)snapshot_get_interval, NULL,
     "The mean interval in bytes at which the traces were sampled\n"
     "(start(sample_interval=...)), or 0 if every block was traced: the\n"
     "sizes and counts of a sampled snapshot are estimates.", NULL},
    {"__dict__", PyObject_GenericGetDict, PyObject_GenericSetDict, NULL,
     NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyType_Slot snapshot_slots[] = {
    {Py_tp_doc, "Snapshot(traces, traceback_limit, *, sample_interval=0)"
                "\n\n"
                "Snapshot of traces of memory blocks allocated by Python."},
    {Py_tp_new, PyType_GenericNew},
    {Py_tp_init, snapshot_init},
    {Py_tp_dealloc, snapshot_dealloc},
    {Py_tp_traverse, snapshot_traverse},
    {Py_tp_clear, snapshot_clear},
    {Py_tp_methods, snapshot_methods},
    {Py_tp_members, snapshot_members},
    {Py_tp_getset, snapshot_getset},
    {0, NULL},
};

/* Immutable (from 3.10, which has the flag), as the static type was. */
PyType_Spec ctm_snapshot_spec = {
    .name = "ctracemalloc.Snapshot",
    .basicsize = sizeof(SnapshotObject),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC
             | CTM_TPFLAGS_IMMUTABLETYPE,
    .slots = snapshot_slots,
};
