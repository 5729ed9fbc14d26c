/* Frame and Traceback: the stdlib's Python classes as C heap types.
 *
 * Each type wraps the raw tuples the snapshot data produces and builds the
 * richer objects only when asked: a Frame holds a (filename, lineno)
 * tuple, a Traceback a tuple of those (oldest first, the reverse of the
 * raw order) and a total_nframe. Frames are made on each indexing, as the
 * stdlib does.
 *
 * Invariants and behaviour kept from the stdlib classes:
 *
 *  - The slots (_frame, _frames, _total_nframe) are writable and may be
 *    any object, or unset (NULL) before __init__ runs: reading an unset
 *    slot raises AttributeError, like an unset __slots__ member. So every
 *    reader goes through ctm_slot_value() and never assumes a tuple;
 *    tuples only get fast paths.
 *  - __new__ takes any arguments and __init__ parses them, so __init__
 *    can be called again and subclasses may have their own __new__.
 *  - Frame and Traceback order like functools.total_ordering over __eq__
 *    and __lt__: the derived comparisons go through type(self).__lt__, so
 *    a subclass that overrides __lt__ changes all of them, and they return
 *    the same objects (not just the same truth values) as the decorator.
 *  - The objects may hold arbitrary objects, so the types take part in the
 *    cyclic GC, like instances of Python classes with __slots__.
 *  - Pickling and copying go through __reduce__ to the constructor (the
 *    instance __dict__ of a subclass, if any, travels as the state).
 *  - str() and repr() read and convert each field before reading the
 *    next: Python 3.11+ compiles the stdlib's "%s: %s" % (...) into an
 *    f-string, which does that. 3.9 and 3.10 read all fields first; the
 *    two orders differ only in which error wins when two fields are
 *    broken, and the newer one is kept.
 *
 * ctm_traceback_new is the constructor the snapshot analysis calls per
 * result: for the tuple it passes, it fills the slots directly, without
 * calling any Python code. The machinery shared with Trace is
 * wrapper.c's.
 *
 * Function names (Frame.function) are ctracemalloc's own: the snapshot
 * data knows them, the raw tuples have no room for them. A Traceback the
 * analysis makes holds them beside its frames, and each Frame it gives
 * holds its own, for as long as the slot holds the tuple they came with;
 * a Frame or Traceback made from Python, or unpickled, has none. So
 * equality, hashing, repr and pickling stay the stdlib's.
 */
#include "types.h"

#include "structmember.h"

typedef ctm_wrapper_object FrameObj;

typedef struct {
    PyObject_HEAD
    PyObject *frames;           /* _frames: frame tuples, oldest first */
    PyObject *total_nframe;     /* _total_nframe: int or None */
    PyObject *functions;        /* NULL, or the function names of named's
                                   frames (str or None), most recent
                                   first: as given, not reversed */
    PyObject *named;            /* the frames tuple that functions names,
                                   held so that no other takes its
                                   address */
} TracebackObj;

/* Interned names and constants, made on first use and kept for the life
 * of the process, like the module state. */
static PyObject *str_frame_attr;        /* "_frame" */
static PyObject *str_filename;          /* "filename" */
static PyObject *str_lineno;            /* "lineno" */
static PyObject *str_getline;           /* "getline" */
static PyObject *str_strip;             /* "strip" */
static PyObject *str_empty;             /* "" */

/* ---------------------------------------------------------------------
 * Frame
 * ------------------------------------------------------------------- */

/* A new Frame (the exact type) holding raw, whose function is named
 * function (NULL or None: unknown). */
static PyObject *
frame_wrap(PyObject *raw, PyObject *function)
{
    return ctm_wrapper_new(ctm_state.Frame, raw, function);
}

static int
frame_init(PyObject *op, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"frame", NULL};
    return ctm_wrapper_init(op, args, kwds, "O:Frame", kwlist);
}

static PyObject *
frame_get_item(PyObject *op, Py_ssize_t i)
{
    PyObject *raw = ctm_slot_value(op, ((FrameObj *)op)->raw, "_frame");
    if (raw == NULL) {
        return NULL;
    }
    PyObject *item = ctm_item_at(raw, i);
    Py_DECREF(raw);
    return item;
}

static PyObject *
frame_get_filename(PyObject *op, void *Py_UNUSED(closure))
{
    return frame_get_item(op, 0);
}

static PyObject *
frame_get_lineno(PyObject *op, void *Py_UNUSED(closure))
{
    return frame_get_item(op, 1);
}

/* Frame.function: not the stdlib's, read-only. */
static PyObject *
frame_get_function(PyObject *op, void *Py_UNUSED(closure))
{
    PyObject *name = ctm_wrapper_names(op);
    return Py_NewRef(name != NULL ? name : Py_None);
}

static PyObject *
frame_richcompare(PyObject *self, PyObject *other, int op)
{
    return ctm_slot_richcompare(self, other, op, ctm_state.Frame,
                                offsetof(FrameObj, raw), "_frame", 1);
}

static Py_hash_t
frame_hash(PyObject *op)
{
    PyObject *raw = ctm_slot_value(op, ((FrameObj *)op)->raw, "_frame");
    if (raw == NULL) {
        return -1;
    }
    Py_hash_t h = PyObject_Hash(raw);
    Py_DECREF(raw);
    return h;
}

/* str() or repr() of one of the frame's fields. */
static PyObject *
frame_field_text(PyObject *op, Py_ssize_t i, int use_repr)
{
    PyObject *value = frame_get_item(op, i);
    if (value == NULL) {
        return NULL;
    }
    PyObject *text = use_repr ? PyObject_Repr(value) : PyObject_Str(value);
    Py_DECREF(value);
    return text;
}

/* fmt (two %U) with the texts of filename and lineno. Each field is read
 * and converted before the next one is read: Python 3.11+ compiles the
 * stdlib's "%s:%s" % (...) into an f-string, which does that, and it
 * decides which error wins when both fields are broken. */
static PyObject *
frame_format_fields(PyObject *op, const char *fmt, int use_repr)
{
    PyObject *filename = NULL, *lineno = NULL, *res = NULL;

    filename = frame_field_text(op, 0, use_repr);
    if (filename == NULL) {
        goto done;
    }
    lineno = frame_field_text(op, 1, use_repr);
    if (lineno == NULL) {
        goto done;
    }
    res = PyUnicode_FromFormat(fmt, filename, lineno);

done:
    Py_XDECREF(filename);
    Py_XDECREF(lineno);
    return res;
}

static PyObject *
frame_str(PyObject *op)
{
    return frame_format_fields(op, "%U:%U", 0);
}

static PyObject *
frame_repr(PyObject *op)
{
    return frame_format_fields(op, "<Frame filename=%U lineno=%U>", 1);
}

static PyObject *
frame_reduce(PyObject *op, PyObject *Py_UNUSED(ignored))
{
    PyObject *raw = ctm_slot_value(op, ((FrameObj *)op)->raw, "_frame");
    if (raw == NULL) {
        return NULL;
    }
    PyObject *args = PyTuple_Pack(1, raw);
    Py_DECREF(raw);
    return ctm_reduce_to_constructor(op, ctm_state.Frame, args);
}

static PyMethodDef frame_methods[] = {
    {"__reduce__", frame_reduce, METH_NOARGS,
     "Return the constructor call that recreates this frame."},
    {NULL, NULL, 0, NULL},
};

static PyMemberDef frame_members[] = {
    {"_frame", T_OBJECT_EX, offsetof(FrameObj, raw), 0,
     "The (filename, lineno) tuple."},
    {NULL, 0, 0, 0, NULL},
};

static PyGetSetDef frame_getset[] = {
    {"filename", frame_get_filename, NULL, "Filename (str).", NULL},
    {"lineno", frame_get_lineno, NULL, "Line number (int).", NULL},
    {"function", frame_get_function, NULL,
     "Qualified name of the frame's function (str; the bare name before "
     "Python 3.11), or None when it is not known (ctracemalloc only).",
     NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyType_Slot frame_slots[] = {
    {Py_tp_doc, "Frame(frame)\n--\n\n"
                "One frame of a traceback, from a (filename, lineno) "
                "tuple."},
    {Py_tp_new, PyType_GenericNew},
    {Py_tp_init, frame_init},
    {Py_tp_dealloc, ctm_wrapper_dealloc},
    {Py_tp_traverse, ctm_wrapper_traverse},
    {Py_tp_clear, ctm_wrapper_clear},
    {Py_tp_richcompare, frame_richcompare},
    {Py_tp_hash, frame_hash},
    {Py_tp_str, frame_str},
    {Py_tp_repr, frame_repr},
    {Py_tp_methods, frame_methods},
    {Py_tp_members, frame_members},
    {Py_tp_getset, frame_getset},
    {0, NULL},
};

PyType_Spec ctm_frame_spec = {
    .name = "ctracemalloc.Frame",
    .basicsize = sizeof(FrameObj),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .slots = frame_slots,
};

/* ---------------------------------------------------------------------
 * Traceback
 * ------------------------------------------------------------------- */

/* tuple(reversed(seq)): tuples and lists are reversed in place of the
 * call, anything else goes through the reversed builtin so that every
 * error ("'int' object is not reversible") is the stdlib's. */
static PyObject *
reversed_tuple(PyObject *seq)
{
    if (PyTuple_CheckExact(seq) || PyList_CheckExact(seq)) {
        PyObject **items;
        Py_ssize_t n;
        if (PyTuple_CheckExact(seq)) {
            n = PyTuple_GET_SIZE(seq);
            items = &PyTuple_GET_ITEM(seq, 0);
        }
        else {
            n = PyList_GET_SIZE(seq);
            items = &PyList_GET_ITEM(seq, 0);
        }
        PyObject *res = PyTuple_New(n);
        if (res == NULL) {
            return NULL;
        }
        /* No Python code runs in this loop, so a list cannot change. */
        for (Py_ssize_t i = 0; i < n; i++) {
            PyTuple_SET_ITEM(res, i, Py_NewRef(items[n - 1 - i]));
        }
        return res;
    }
    PyObject *it = PyObject_CallOneArg((PyObject *)&PyReversed_Type, seq);
    if (it == NULL) {
        return NULL;
    }
    PyObject *res = PySequence_Tuple(it);
    Py_DECREF(it);
    return res;
}

/* A tuple of Frames, one per item of seq, in order (or reversed);
 * functions: NULL, or the names of the Frames made (in their order). */
static PyObject *
wrap_frames(PyObject *seq, int reverse, PyObject *functions)
{
    PyObject *items = NULL, *res = NULL;

    items = PySequence_Tuple(seq);
    if (items == NULL) {
        return NULL;
    }
    Py_ssize_t n = PyTuple_GET_SIZE(items);
    if (functions != NULL && (!PyTuple_CheckExact(functions)
                              || PyTuple_GET_SIZE(functions) != n)) {
        functions = NULL;
    }
    res = PyTuple_New(n);
    if (res == NULL) {
        goto done;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *raw = PyTuple_GET_ITEM(items, reverse ? n - 1 - i : i);
        PyObject *frame = frame_wrap(
            raw, functions ? PyTuple_GET_ITEM(functions, i) : NULL);
        if (frame == NULL) {
            Py_CLEAR(res);
            goto done;
        }
        PyTuple_SET_ITEM(res, i, frame);
    }

done:
    Py_DECREF(items);
    return res;
}

PyObject *
ctm_traceback_new(PyObject *frames, PyObject *total_nframe,
                  PyObject *functions)
{
    PyTypeObject *tp = ctm_state.Traceback;
    PyObject *rev = reversed_tuple(frames);
    if (rev == NULL) {
        return NULL;
    }
    TracebackObj *self = (TracebackObj *)tp->tp_alloc(tp, 0);
    if (self == NULL) {
        Py_DECREF(rev);
        return NULL;
    }
    self->frames = rev;
    self->total_nframe = Py_NewRef(total_nframe ? total_nframe : Py_None);
    if (functions != NULL && functions != Py_None
        && PyTuple_GET_SIZE(functions) == PyTuple_GET_SIZE(rev)) {
        self->functions = Py_NewRef(functions);
        self->named = Py_NewRef(rev);
    }
    return (PyObject *)self;
}

/* The function names of the frames in _frames (most recent first, the
 * reverse of _frames), borrowed, or NULL: only while _frames holds the
 * tuple they were given with. */
static PyObject *
traceback_functions(PyObject *op)
{
    TracebackObj *self = (TracebackObj *)op;
    return self->functions != NULL && self->frames == self->named
           ? self->functions : NULL;
}

static int
traceback_init(PyObject *op, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"frames", "total_nframe", NULL};
    TracebackObj *self = (TracebackObj *)op;
    PyObject *frames, *total_nframe = Py_None;

    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O|O:Traceback", kwlist,
                                     &frames, &total_nframe))
    {
        return -1;
    }
    PyObject *rev = reversed_tuple(frames);
    if (rev == NULL) {
        return -1;
    }
    Py_XSETREF(self->frames, rev);
    Py_XSETREF(self->total_nframe, Py_NewRef(total_nframe));
    return 0;
}

static int
traceback_traverse(PyObject *op, visitproc visit, void *arg)
{
    TracebackObj *self = (TracebackObj *)op;
    Py_VISIT(Py_TYPE(op));
    Py_VISIT(self->frames);
    Py_VISIT(self->total_nframe);
    /* Not functions nor named: the snapshot data's, which hold only
     * str, int, None and tuples of them, so no cycle runs through them,
     * and a traversal of every kept Traceback would pay for them. */
    return 0;
}

static int
traceback_clear(PyObject *op)
{
    TracebackObj *self = (TracebackObj *)op;
    Py_CLEAR(self->frames);
    Py_CLEAR(self->total_nframe);
    Py_CLEAR(self->functions);
    Py_CLEAR(self->named);
    return 0;
}

static void
traceback_dealloc(PyObject *op)
{
    PyTypeObject *tp = Py_TYPE(op);
    PyObject_GC_UnTrack(op);
    traceback_clear(op);
    tp->tp_free(op);
    Py_DECREF(tp);
}

/* _frames, a new reference. */
static PyObject *
traceback_frames(PyObject *op)
{
    return ctm_slot_value(op, ((TracebackObj *)op)->frames, "_frames");
}

static PyObject *
traceback_get_total_nframe(PyObject *op, void *Py_UNUSED(closure))
{
    return ctm_slot_value(op, ((TracebackObj *)op)->total_nframe,
                          "_total_nframe");
}

static Py_ssize_t
traceback_length(PyObject *op)
{
    PyObject *frames = traceback_frames(op);
    if (frames == NULL) {
        return -1;
    }
    Py_ssize_t n = PyObject_Size(frames);
    Py_DECREF(frames);
    return n;
}

/* self[index]: a Frame, or a tuple of Frames for a slice. */
static PyObject *
traceback_subscript(PyObject *op, PyObject *index)
{
    PyObject *frames = traceback_frames(op);
    if (frames == NULL) {
        return NULL;
    }
    PyObject *item = PyObject_GetItem(frames, index);
    Py_DECREF(frames);
    if (item == NULL) {
        return NULL;
    }
    /* the same index of the names, which are in the reverse order:
     * the index was good for the frames, a tuple as long */
    PyObject *functions = traceback_functions(op);
    PyObject *names = NULL;
    if (functions != NULL && PySlice_Check(index)) {
        PyObject *oldest_first = reversed_tuple(functions);
        names = oldest_first ? PyObject_GetItem(oldest_first, index) : NULL;
        Py_XDECREF(oldest_first);
    }
    else if (functions != NULL) {
        Py_ssize_t n = PyTuple_GET_SIZE(functions);
        Py_ssize_t i = PyNumber_AsSsize_t(index, PyExc_IndexError);
        if (i == -1 && PyErr_Occurred()) {
            Py_DECREF(item);
            return NULL;
        }
        i += i < 0 ? n : 0;
        /* (an __index__ may answer differently the second time) */
        names = Py_NewRef(i >= 0 && i < n
                          ? PyTuple_GET_ITEM(functions, n - 1 - i) : Py_None);
    }
    if (functions != NULL && names == NULL) {
        Py_DECREF(item);
        return NULL;
    }
    PyObject *res;
    if (PySlice_Check(index)) {
        res = wrap_frames(item, 0, names);
    }
    else {
        res = frame_wrap(item, names);
    }
    Py_DECREF(item);
    Py_XDECREF(names);
    return res;
}

/* The sequence protocol's item, used by iteration (which, like the
 * Sequence mixin's __iter__, stops at IndexError). PySequence_GetItem has
 * already added the length to a negative index, so one that is still
 * negative is out of range. */
static PyObject *
traceback_item(PyObject *op, Py_ssize_t i)
{
    PyObject *frames = NULL, *raw = NULL, *res = NULL, *functions;

    if (i < 0) {
        PyErr_SetString(PyExc_IndexError, "Traceback index out of range");
        return NULL;
    }
    frames = traceback_frames(op);
    if (frames == NULL) {
        goto done;
    }
    if (PyTuple_CheckExact(frames) && i >= PyTuple_GET_SIZE(frames)) {
        PyErr_SetString(PyExc_IndexError, "tuple index out of range");
        goto done;
    }
    raw = ctm_item_at(frames, i);
    if (raw == NULL) {
        goto done;
    }
    functions = traceback_functions(op);
    res = frame_wrap(raw, functions != NULL
                              && i < PyTuple_GET_SIZE(functions)
                          ? PyTuple_GET_ITEM(functions,
                                             PyTuple_GET_SIZE(functions)
                                             - 1 - i)
                          : NULL);

done:
    Py_XDECREF(frames);
    Py_XDECREF(raw);
    return res;
}

static int
traceback_contains(PyObject *op, PyObject *frame)
{
    if (ctm_intern_once(&str_frame_attr, "_frame") < 0) {
        return -1;
    }
    PyObject *raw = PyObject_GetAttr(frame, str_frame_attr);
    if (raw == NULL) {
        return -1;
    }
    PyObject *frames = traceback_frames(op);
    int res = frames ? PySequence_Contains(frames, raw) : -1;
    Py_XDECREF(frames);
    Py_DECREF(raw);
    return res;
}

static Py_hash_t
traceback_hash(PyObject *op)
{
    PyObject *frames = traceback_frames(op);
    if (frames == NULL) {
        return -1;
    }
    Py_hash_t h = PyObject_Hash(frames);
    Py_DECREF(frames);
    return h;
}

static PyObject *
traceback_richcompare(PyObject *self, PyObject *other, int op)
{
    return ctm_slot_richcompare(self, other, op, ctm_state.Traceback,
                                offsetof(TracebackObj, frames), "_frames", 1);
}

/* str(self[0]): the first frame, which is the oldest one. */
static PyObject *
traceback_str(PyObject *op)
{
    PyObject *zero = PyLong_FromLong(0);
    if (zero == NULL) {
        return NULL;
    }
    PyObject *first = PyObject_GetItem(op, zero);
    Py_DECREF(zero);
    if (first == NULL) {
        return NULL;
    }
    PyObject *res = PyObject_Str(first);
    Py_DECREF(first);
    return res;
}

static PyObject *
traceback_repr(PyObject *op)
{
    PyObject *frames = NULL, *total = NULL, *total_str = NULL;
    PyObject *res = NULL;

    /* tuple(self): the Frames, through iteration like the stdlib */
    frames = PySequence_Tuple(op);
    if (frames == NULL) {
        goto done;
    }
    total = ctm_slot_value(op, ((TracebackObj *)op)->total_nframe,
                           "_total_nframe");
    if (total == NULL) {
        goto done;
    }
    if (total == Py_None) {
        res = PyUnicode_FromFormat("<Traceback %S>", frames);
        goto done;
    }
    /* an f-string field: format(total, "") */
    if (ctm_intern_once(&str_empty, "") < 0) {
        goto done;
    }
    total_str = PyObject_Format(total, str_empty);
    if (total_str == NULL) {
        goto done;
    }
    res = PyUnicode_FromFormat("<Traceback %S total_nframe=%S>", frames,
                               total_str);

done:
    Py_XDECREF(frames);
    Py_XDECREF(total);
    Py_XDECREF(total_str);
    return res;
}

/* One frame's lines of format(): the File line, and the stripped source
 * line from linecache.getline (looked up per frame, on the module, so
 * that patching linecache.getline works) when it is not empty. */
static int
format_frame(PyObject *lines, PyObject *frame, PyObject *linecache)
{
    PyObject *filename = NULL, *lineno = NULL, *text = NULL;
    PyObject *filename_str = NULL, *lineno_str = NULL;
    PyObject *getline = NULL, *line = NULL, *stripped = NULL;
    int res = -1;

    if (ctm_intern_once(&str_filename, "filename") < 0
        || ctm_intern_once(&str_lineno, "lineno") < 0
        || ctm_intern_once(&str_getline, "getline") < 0
        || ctm_intern_once(&str_strip, "strip") < 0)
    {
        return -1;
    }

    /* read and convert one field after the other, as the f-string that
     * Python 3.11+ makes of the stdlib's % expression does */
    filename = PyObject_GetAttr(frame, str_filename);
    if (filename == NULL) {
        goto done;
    }
    filename_str = PyObject_Str(filename);
    if (filename_str == NULL) {
        goto done;
    }
    lineno = PyObject_GetAttr(frame, str_lineno);
    if (lineno == NULL) {
        goto done;
    }
    lineno_str = PyObject_Str(lineno);
    if (lineno_str == NULL) {
        goto done;
    }
    text = PyUnicode_FromFormat("  File \"%U\", line %U", filename_str,
                                lineno_str);
    if (text == NULL || PyList_Append(lines, text) < 0) {
        goto done;
    }
    Py_CLEAR(text);

    getline = PyObject_GetAttr(linecache, str_getline);
    if (getline == NULL) {
        goto done;
    }
    line = PyObject_CallFunctionObjArgs(getline, filename, lineno, NULL);
    if (line == NULL) {
        goto done;
    }
    stripped = PyObject_CallMethodNoArgs(line, str_strip);
    if (stripped == NULL) {
        goto done;
    }
    int truth = PyObject_IsTrue(stripped);
    if (truth < 0) {
        goto done;
    }
    if (truth) {
        text = PyUnicode_FromFormat("    %S", stripped);
        if (text == NULL || PyList_Append(lines, text) < 0) {
            goto done;
        }
    }
    res = 0;

done:
    Py_XDECREF(filename);
    Py_XDECREF(lineno);
    Py_XDECREF(filename_str);
    Py_XDECREF(lineno_str);
    Py_XDECREF(text);
    Py_XDECREF(getline);
    Py_XDECREF(line);
    Py_XDECREF(stripped);
    return res;
}

static PyObject *
traceback_format(PyObject *op, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"limit", "most_recent_first", NULL};
    PyObject *limit = Py_None, *most_recent_first = Py_False;
    PyObject *lines = NULL, *frame_slice = NULL, *iter = NULL;
    PyObject *linecache = NULL, *frame = NULL;

    if (!PyArg_ParseTupleAndKeywords(args, kwds, "|OO:format", kwlist,
                                     &limit, &most_recent_first))
    {
        return NULL;
    }
    lines = PyList_New(0);
    if (lines == NULL) {
        goto error;
    }

    /* self[-limit:] for limit > 0, the limit most recent frames, else
     * self[:limit], all but the -limit most recent ones (none for 0);
     * both through self[...] as in the stdlib. */
    if (limit != Py_None) {
        PyObject *zero = PyLong_FromLong(0);
        if (zero == NULL) {
            goto error;
        }
        int positive = PyObject_RichCompareBool(limit, zero, Py_GT);
        Py_DECREF(zero);
        if (positive < 0) {
            goto error;
        }
        PyObject *slice;
        if (positive) {
            PyObject *neg = PyNumber_Negative(limit);
            if (neg == NULL) {
                goto error;
            }
            slice = PySlice_New(neg, NULL, NULL);
            Py_DECREF(neg);
        }
        else {
            slice = PySlice_New(NULL, limit, NULL);
        }
        if (slice == NULL) {
            goto error;
        }
        frame_slice = PyObject_GetItem(op, slice);
        Py_DECREF(slice);
        if (frame_slice == NULL) {
            goto error;
        }
    }
    else {
        frame_slice = Py_NewRef(op);
    }

    int reverse = PyObject_IsTrue(most_recent_first);
    if (reverse < 0) {
        goto error;
    }
    if (reverse) {
        iter = PyObject_CallOneArg((PyObject *)&PyReversed_Type,
                                   frame_slice);
    }
    else {
        iter = PyObject_GetIter(frame_slice);
    }
    if (iter == NULL) {
        goto error;
    }

    linecache = PyImport_ImportModule("linecache");
    if (linecache == NULL) {
        goto error;
    }
    while ((frame = PyIter_Next(iter)) != NULL) {
        if (format_frame(lines, frame, linecache) < 0) {
            goto error;
        }
        Py_CLEAR(frame);
    }
    if (PyErr_Occurred()) {
        goto error;
    }
    goto done;

error:
    Py_CLEAR(lines);
done:
    Py_XDECREF(frame_slice);
    Py_XDECREF(iter);
    Py_XDECREF(linecache);
    Py_XDECREF(frame);
    return lines;
}

/* reversed(self): the Sequence mixin's __reversed__, most recent frame
 * first. */
static PyObject *
traceback_reversed(PyObject *op, PyObject *Py_UNUSED(ignored))
{
    PyObject *frames = traceback_frames(op);
    if (frames == NULL) {
        return NULL;
    }
    PyObject *tuple = wrap_frames(frames, 1, traceback_functions(op));
    Py_DECREF(frames);
    if (tuple == NULL) {
        return NULL;
    }
    PyObject *res = PyObject_GetIter(tuple);
    Py_DECREF(tuple);
    return res;
}

/* Sequence.index(value, start=0, stop=None): first i in [start, stop)
 * with self[i] is value or == value, else ValueError. */
static PyObject *
traceback_index(PyObject *op, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"value", "start", "stop", NULL};
    PyObject *value, *start_obj = NULL, *stop_obj = NULL;
    Py_ssize_t start, stop;

    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O|OO:index", kwlist,
                                     &value, &start_obj, &stop_obj))
    {
        return NULL;
    }
    Py_ssize_t n = traceback_length(op);
    if (n < 0 || ctm_sequence_bounds(start_obj, stop_obj, n, &start,
                                     &stop) < 0) {
        return NULL;
    }
    for (Py_ssize_t i = start; i < stop && i < n; i++) {
        PyObject *frame = traceback_item(op, i);
        if (frame == NULL) {
            return NULL;
        }
        int eq = PyObject_RichCompareBool(frame, value, Py_EQ);
        Py_DECREF(frame);
        if (eq < 0) {
            return NULL;
        }
        if (eq) {
            return PyLong_FromSsize_t(i);
        }
    }
    PyErr_SetNone(PyExc_ValueError);
    return NULL;
}

/* Sequence.count(value): how many self[i] are value or == value. */
static PyObject *
traceback_count(PyObject *op, PyObject *value)
{
    Py_ssize_t n = traceback_length(op);
    Py_ssize_t count = 0;

    if (n < 0) {
        return NULL;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *frame = traceback_item(op, i);
        if (frame == NULL) {
            return NULL;
        }
        int eq = PyObject_RichCompareBool(frame, value, Py_EQ);
        Py_DECREF(frame);
        if (eq < 0) {
            return NULL;
        }
        count += eq;
    }
    return PyLong_FromSsize_t(count);
}

static PyObject *
traceback_reduce(PyObject *op, PyObject *Py_UNUSED(ignored))
{
    TracebackObj *self = (TracebackObj *)op;
    PyObject *frames = NULL, *total = NULL, *raw = NULL, *args = NULL;

    frames = traceback_frames(op);
    if (frames == NULL) {
        goto done;
    }
    total = ctm_slot_value(op, self->total_nframe, "_total_nframe");
    if (total == NULL) {
        goto done;
    }
    /* The constructor takes the frames most recent first. */
    raw = reversed_tuple(frames);
    if (raw == NULL) {
        goto done;
    }
    args = PyTuple_Pack(2, raw, total);

done:
    Py_XDECREF(frames);
    Py_XDECREF(total);
    Py_XDECREF(raw);
    /* NULL args (an error) passes through */
    return ctm_reduce_to_constructor(op, ctm_state.Traceback, args);
}

static PyMethodDef traceback_methods[] = {
    {"format", (PyCFunction)(void (*)(void))traceback_format,
     METH_VARARGS | METH_KEYWORDS,
     "format($self, /, limit=None, most_recent_first=False)\n--\n\n"
     "Format the traceback as a list of lines, oldest frame first\n"
     "unless most_recent_first is true. limit > 0 keeps the limit\n"
     "most recent frames, limit <= 0 keeps self[:limit]."},
    {"index", (PyCFunction)(void (*)(void))traceback_index,
     METH_VARARGS | METH_KEYWORDS,
     "index($self, /, value, start=0, stop=None)\n--\n\n"
     "Return the first index of value; raise ValueError if absent."},
    {"count", traceback_count, METH_O,
     "count($self, value, /)\n--\n\n"
     "Return the number of occurrences of value."},
    {"__reversed__", traceback_reversed, METH_NOARGS,
     "Iterate over the frames, most recent first."},
    {"__reduce__", traceback_reduce, METH_NOARGS,
     "Return the constructor call that recreates this traceback."},
    {"__class_getitem__", Py_GenericAlias, METH_O | METH_CLASS,
     "See PEP 585."},
    {NULL, NULL, 0, NULL},
};

static PyMemberDef traceback_members[] = {
    {"_frames", T_OBJECT_EX, offsetof(TracebackObj, frames), 0,
     "The frame tuples, oldest first."},
    {"_total_nframe", T_OBJECT_EX, offsetof(TracebackObj, total_nframe), 0,
     "Total number of frames before truncation, or None."},
    {NULL, 0, 0, 0, NULL},
};

static PyGetSetDef traceback_getset[] = {
    {"total_nframe", traceback_get_total_nframe, NULL,
     "Total number of frames of the traceback before it was truncated, "
     "or None.", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyType_Slot traceback_slots[] = {
    {Py_tp_doc, "Traceback(frames, total_nframe=None)\n--\n\n"
                "Sequence of Frame instances, oldest frame first. frames "
                "is given\nmost recent first, as (filename, lineno) "
                "tuples."},
    {Py_tp_new, PyType_GenericNew},
    {Py_tp_init, traceback_init},
    {Py_tp_dealloc, traceback_dealloc},
    {Py_tp_traverse, traceback_traverse},
    {Py_tp_clear, traceback_clear},
    {Py_tp_richcompare, traceback_richcompare},
    {Py_tp_hash, traceback_hash},
    {Py_tp_str, traceback_str},
    {Py_tp_repr, traceback_repr},
    {Py_tp_methods, traceback_methods},
    {Py_tp_members, traceback_members},
    {Py_tp_getset, traceback_getset},
    {Py_mp_length, traceback_length},
    {Py_mp_subscript, traceback_subscript},
    {Py_sq_length, traceback_length},
    {Py_sq_item, traceback_item},
    {Py_sq_contains, traceback_contains},
    {0, NULL},
};

PyType_Spec ctm_traceback_spec = {
    .name = "ctracemalloc.Traceback",
    .basicsize = sizeof(TracebackObj),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .slots = traceback_slots,
};
