/* Trace: the stdlib's Python class as a C heap type.
 *
 * A Trace wraps a raw (domain, size, frames[, total_nframe]) tuple, as
 * the snapshot data produces it, and makes a new Traceback on each
 * access to .traceback, as the stdlib does. Like Frame (see
 * traceback.c), its _trace slot is writable, may be any object or unset,
 * and is read through ctm_slot_value(); __init__ parses the arguments;
 * the type takes part in the cyclic GC; pickling goes through __reduce__
 * to the constructor; str() and repr() read and convert each field
 * before reading the next, as the 3.11+ stdlib does. Trace only has
 * __eq__ (no ordering).
 *
 * ctm_trace_new is the constructor Snapshot calls per trace: it fills
 * the slot directly, without calling any Python code, and keeps the
 * function names of the frames beside it for .traceback (traceback.c
 * says why they are apart).
 */
#include "types.h"

#include "structmember.h"

typedef ctm_wrapper_object TraceObj;

PyObject *
ctm_trace_new(PyObject *raw, PyObject *functions)
{
    return ctm_wrapper_new(ctm_state.Trace, raw, functions);
}

static int
trace_init(PyObject *op, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"trace", NULL};
    return ctm_wrapper_init(op, args, kwds, "O:Trace", kwlist);
}

/* _trace, a new reference. */
static PyObject *
trace_raw(PyObject *op)
{
    return ctm_slot_value(op, ((TraceObj *)op)->raw, "_trace");
}

static PyObject *
trace_get_domain(PyObject *op, void *Py_UNUSED(closure))
{
    PyObject *raw = trace_raw(op);
    if (raw == NULL) {
        return NULL;
    }
    PyObject *item = ctm_item_at(raw, 0);
    Py_DECREF(raw);
    return item;
}

static PyObject *
trace_get_size(PyObject *op, void *Py_UNUSED(closure))
{
    PyObject *raw = trace_raw(op);
    if (raw == NULL) {
        return NULL;
    }
    PyObject *item = ctm_item_at(raw, 1);
    Py_DECREF(raw);
    return item;
}

/* Traceback(*self._trace[2:]): the fast constructor for the 3- and
 * 4-tuples that raw traces are, a real call for anything else so that
 * the errors are the constructor's. */
static PyObject *
trace_get_traceback(PyObject *op, void *Py_UNUSED(closure))
{
    PyObject *raw, *two = NULL, *slice = NULL, *rest = NULL, *args = NULL;
    PyObject *res = NULL;

    raw = trace_raw(op);
    if (raw == NULL) {
        return NULL;
    }
    if (PyTuple_CheckExact(raw) && (PyTuple_GET_SIZE(raw) == 3
                                    || PyTuple_GET_SIZE(raw) == 4))
    {
        PyObject *total = NULL;
        if (PyTuple_GET_SIZE(raw) == 4) {
            total = PyTuple_GET_ITEM(raw, 3);
        }
        /* the frames' function names, while _trace is the tuple they
         * were given with */
        PyObject *functions = ctm_wrapper_names(op);
        PyObject *frames = PyTuple_GET_ITEM(raw, 2);
        if (functions != NULL && !PyTuple_CheckExact(frames)) {
            functions = NULL;
        }
        res = ctm_traceback_new(frames, total, functions);
        goto done;
    }
    two = PyLong_FromLong(2);
    if (two == NULL) {
        goto done;
    }
    slice = PySlice_New(two, NULL, NULL);
    if (slice == NULL) {
        goto done;
    }
    rest = PyObject_GetItem(raw, slice);
    if (rest == NULL) {
        goto done;
    }
    args = PySequence_Tuple(rest);
    if (args == NULL) {
        goto done;
    }
    res = PyObject_Call((PyObject *)ctm_state.Traceback, args, NULL);

done:
    Py_DECREF(raw);
    Py_XDECREF(two);
    Py_XDECREF(slice);
    Py_XDECREF(rest);
    Py_XDECREF(args);
    return res;
}

static PyObject *
trace_richcompare(PyObject *self, PyObject *other, int op)
{
    return ctm_slot_richcompare(self, other, op, ctm_state.Trace,
                                offsetof(TraceObj, raw), "_trace", 0);
}

static Py_hash_t
trace_hash(PyObject *op)
{
    PyObject *raw = trace_raw(op);
    if (raw == NULL) {
        return -1;
    }
    Py_hash_t h = PyObject_Hash(raw);
    Py_DECREF(raw);
    return h;
}

static PyObject *
trace_str(PyObject *op)
{
    PyObject *tb = NULL, *tb_str = NULL, *size = NULL, *size_str = NULL;
    PyObject *res = NULL;

    /* each field converted before the next is read, as in the 3.11+
     * stdlib */
    tb = trace_get_traceback(op, NULL);
    if (tb == NULL) {
        goto done;
    }
    tb_str = PyObject_Str(tb);
    if (tb_str == NULL) {
        goto done;
    }
    size = trace_get_size(op, NULL);
    if (size == NULL) {
        goto done;
    }
    size_str = ctm_format_size(size, 0);
    if (size_str == NULL) {
        goto done;
    }
    res = PyUnicode_FromFormat("%U: %U", tb_str, size_str);

done:
    Py_XDECREF(tb);
    Py_XDECREF(tb_str);
    Py_XDECREF(size);
    Py_XDECREF(size_str);
    return res;
}

static PyObject *
trace_repr(PyObject *op)
{
    PyObject *domain = NULL, *domain_str = NULL, *size = NULL;
    PyObject *size_str = NULL, *tb = NULL, *res = NULL;

    /* each field converted before the next is read, as in the 3.11+
     * stdlib */
    domain = trace_get_domain(op, NULL);
    if (domain == NULL) {
        goto done;
    }
    domain_str = PyObject_Str(domain);
    if (domain_str == NULL) {
        goto done;
    }
    size = trace_get_size(op, NULL);
    if (size == NULL) {
        goto done;
    }
    size_str = ctm_format_size(size, 0);
    if (size_str == NULL) {
        goto done;
    }
    tb = trace_get_traceback(op, NULL);
    if (tb == NULL) {
        goto done;
    }
    res = PyUnicode_FromFormat("<Trace domain=%U size=%U, traceback=%R>",
                               domain_str, size_str, tb);

done:
    Py_XDECREF(domain);
    Py_XDECREF(domain_str);
    Py_XDECREF(size);
    Py_XDECREF(size_str);
    Py_XDECREF(tb);
    return res;
}

static PyObject *
trace_reduce(PyObject *op, PyObject *Py_UNUSED(ignored))
{
    PyObject *raw = trace_raw(op);
    if (raw == NULL) {
        return NULL;
    }
    PyObject *args = PyTuple_Pack(1, raw);
    Py_DECREF(raw);
    return ctm_reduce_to_constructor(op, ctm_state.Trace, args);
}

static PyMethodDef trace_methods[] = {
    {"__reduce__", trace_reduce, METH_NOARGS,
     "Return the constructor call that recreates this trace."},
    {NULL, NULL, 0, NULL},
};

static PyMemberDef trace_members[] = {
    {"_trace", T_OBJECT_EX, offsetof(TraceObj, raw), 0,
     "The (domain, size, frames, total_nframe) tuple."},
    {NULL, 0, 0, 0, NULL},
};

static PyGetSetDef trace_getset[] = {
    {"domain", trace_get_domain, NULL,
     "Address space of the memory block (int).", NULL},
    {"size", trace_get_size, NULL,
     "Size of the memory block in bytes (int).", NULL},
    {"traceback", trace_get_traceback, NULL,
     "Traceback where the memory block was allocated (a new Traceback "
     "on each access).", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyType_Slot trace_slots[] = {
    {Py_tp_doc, "Trace(trace)\n--\n\n"
                "Trace of one memory block, from a (domain, size, frames, "
                "total_nframe)\ntuple."},
    {Py_tp_new, PyType_GenericNew},
    {Py_tp_init, trace_init},
    {Py_tp_dealloc, ctm_wrapper_dealloc},
    {Py_tp_traverse, ctm_wrapper_traverse},
    {Py_tp_clear, ctm_wrapper_clear},
    {Py_tp_richcompare, trace_richcompare},
    {Py_tp_hash, trace_hash},
    {Py_tp_str, trace_str},
    {Py_tp_repr, trace_repr},
    {Py_tp_methods, trace_methods},
    {Py_tp_members, trace_members},
    {Py_tp_getset, trace_getset},
    {0, NULL},
};

PyType_Spec ctm_trace_spec = {
    .name = "ctracemalloc.Trace",
    .basicsize = sizeof(TraceObj),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .slots = trace_slots,
};
