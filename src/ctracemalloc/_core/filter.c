/* BaseFilter, Filter and DomainFilter: the stdlib's trace filters as C
 * heap types.
 *
 * Semantics are the stdlib's tracemalloc filters, observable detail for
 * detail: attributes are plain writable attributes (filename_pattern and
 * DomainFilter.domain excepted), instances have a __dict__, and the
 * _match_frame_impl / _match_frame / _match_traceback / _match methods
 * return the objects the stdlib's would (the inclusive object itself
 * where the stdlib returns self.inclusive, the result of == where it
 * returns a comparison). On a subclass, each method dispatches to the
 * others and reads the attributes through Python attribute lookup, so
 * that overriding one of them changes the others as in the stdlib; on
 * the exact types everything stays in C.
 *
 * Fields hold NULL until __init__ sets them (as a Python instance made
 * by __new__ has no attributes); reading a NULL field raises
 * AttributeError. The layout of the objects is in types.h, for
 * selection.c, which evaluates the exact types over snapshot data;
 * filename matching is glob.c's.
 */
#include "types.h"

#include <string.h>
#include <structmember.h>

/* ------------------------------------------------------------------
 * Helpers
 * ---------------------------------------------------------------- */

/* New reference to a field, or AttributeError when it is unset. */
static PyObject *
field_get(PyObject *self, PyObject *value, const char *name)
{
    if (value == NULL) {
        return ctm_no_attribute(self, name);
    }
    return Py_NewRef(value);
}

/* An attribute as the stdlib's methods read it: the field on the exact
 * type, attribute lookup on subclasses (which may override it). */
static PyObject *
attr_get(PyObject *self, PyTypeObject *exact, PyObject *value,
         const char *name)
{
    if (Py_TYPE(self) == exact) {
        return field_get(self, value, name);
    }
    return PyObject_GetAttrString(self, name);
}

/* Truth value of an attribute read like attr_get: 1, 0 or -1. */
static int
attr_truth(PyObject *self, PyTypeObject *exact, PyObject *value,
           const char *name)
{
    PyObject *v = attr_get(self, exact, value, name);
    if (v == NULL) {
        return -1;
    }
    int r = PyObject_IsTrue(v);
    Py_DECREF(v);
    return r;
}

/* "a, b, ... = seq" for n targets: out gets new references. */
static int
unpack(PyObject *seq, Py_ssize_t n, PyObject **out)
{
    if (PyTuple_CheckExact(seq)) {
        Py_ssize_t size = PyTuple_GET_SIZE(seq);
        if (size < n) {
            PyErr_Format(PyExc_ValueError,
                         "not enough values to unpack (expected %zd, "
                         "got %zd)", n, size);
            return -1;
        }
        if (size > n) {
            PyErr_Format(PyExc_ValueError,
                         "too many values to unpack (expected %zd)", n);
            return -1;
        }
        for (Py_ssize_t i = 0; i < n; i++) {
            out[i] = Py_NewRef(PyTuple_GET_ITEM(seq, i));
        }
        return 0;
    }
    PyObject *it = PyObject_GetIter(seq);
    if (it == NULL) {
        if (PyErr_ExceptionMatches(PyExc_TypeError)) {
            PyErr_Clear();
            PyErr_Format(PyExc_TypeError,
                         "cannot unpack non-iterable %.200s object",
                         Py_TYPE(seq)->tp_name);
        }
        return -1;
    }
    Py_ssize_t got = 0;
    for (; got < n; got++) {
        out[got] = PyIter_Next(it);
        if (out[got] == NULL) {
            if (!PyErr_Occurred()) {
                PyErr_Format(PyExc_ValueError,
                             "not enough values to unpack (expected %zd, "
                             "got %zd)", n, got);
            }
            goto error;
        }
    }
    PyObject *extra = PyIter_Next(it);
    if (extra != NULL) {
        Py_DECREF(extra);
        PyErr_Format(PyExc_ValueError,
                     "too many values to unpack (expected %zd)", n);
        goto error;
    }
    if (PyErr_Occurred()) {
        goto error;
    }
    Py_DECREF(it);
    return 0;

error:
    for (Py_ssize_t i = 0; i < got; i++) {
        Py_DECREF(out[i]);
    }
    Py_DECREF(it);
    return -1;
}

/* ------------------------------------------------------------------
 * BaseFilter
 * ---------------------------------------------------------------- */

/* The three types' traverse: the type (they are heap types) and the
 * fields of BaseFilter; Filter and DomainFilter visit theirs first. */
static int
basefilter_traverse(PyObject *op, visitproc visit, void *arg)
{
    ctm_basefilter_object *self = (ctm_basefilter_object *)op;
    Py_VISIT(Py_TYPE(op));
    Py_VISIT(self->dict);
    Py_VISIT(self->inclusive);
    return 0;
}

static int
basefilter_clear(PyObject *op)
{
    ctm_basefilter_object *self = (ctm_basefilter_object *)op;
    Py_CLEAR(self->dict);
    Py_CLEAR(self->inclusive);
    return 0;
}

static int filter_clear(PyObject *self);
static int domainfilter_clear(PyObject *self);

/* One dealloc for the three types (and their Python subclasses, whose
 * own slots subtype_dealloc has already cleared). The type is a heap
 * type, which each instance holds a reference to. */
static void
basefilter_dealloc(PyObject *obj)
{
    PyTypeObject *tp = Py_TYPE(obj);
    PyObject_GC_UnTrack(obj);
    if (((ctm_basefilter_object *)obj)->weakreflist != NULL) {
        PyObject_ClearWeakRefs(obj);
    }
    if (PyObject_TypeCheck(obj, ctm_state.Filter)) {
        filter_clear(obj);
    }
    else if (PyObject_TypeCheck(obj, ctm_state.DomainFilter)) {
        domainfilter_clear(obj);
    }
    else {
        basefilter_clear(obj);
    }
    tp->tp_free(obj);
    Py_DECREF(tp);
}

static void
set_field(PyObject **slot, PyObject *value)
{
    PyObject *old = *slot;
    *slot = Py_XNewRef(value);
    Py_XDECREF(old);
}

static int
basefilter_init(PyObject *op, PyObject *args, PyObject *kwds)
{
    ctm_basefilter_object *self = (ctm_basefilter_object *)op;
    static char *kwlist[] = {"inclusive", NULL};
    PyObject *inclusive;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O:BaseFilter", kwlist,
                                     &inclusive)) {
        return -1;
    }
    set_field(&self->inclusive, inclusive);
    return 0;
}

static PyObject *
basefilter_match(PyObject *self, PyObject *trace)
{
    (void)self;
    (void)trace;
    PyErr_SetNone(PyExc_NotImplementedError);
    return NULL;
}

/* Pickling and copying. The state is the dict a stdlib instance would
 * have ('inclusive', '_filename_pattern', ... plus the user's
 * attributes), restored by __setstate__; the object is made by
 * cls.__new__(cls) like any plain class instance, so subclasses with
 * other __init__ signatures pickle too. */

typedef struct {
    const char *key;
    Py_ssize_t offset;
} state_field;

static const state_field basefilter_fields[] = {
    {"inclusive", offsetof(ctm_basefilter_object, inclusive)},
    {NULL, 0},
};

static const state_field filter_fields[] = {
    {"inclusive", offsetof(ctm_basefilter_object, inclusive)},
    {"_filename_pattern", offsetof(ctm_filter_object, pattern)},
    {"lineno", offsetof(ctm_filter_object, lineno)},
    {"all_frames", offsetof(ctm_filter_object, all_frames)},
    {"domain", offsetof(ctm_filter_object, domain)},
    {NULL, 0},
};

static const state_field domainfilter_fields[] = {
    {"inclusive", offsetof(ctm_basefilter_object, inclusive)},
    {"_domain", offsetof(ctm_domainfilter_object, domain)},
    {NULL, 0},
};

static const state_field *
fields_of(PyObject *self)
{
    if (PyObject_TypeCheck(self, ctm_state.Filter)) {
        return filter_fields;
    }
    if (PyObject_TypeCheck(self, ctm_state.DomainFilter)) {
        return domainfilter_fields;
    }
    return basefilter_fields;
}

static PyObject *
basefilter_reduce(PyObject *self, PyObject *Py_UNUSED(ignored))
{
    ctm_basefilter_object *bf = (ctm_basefilter_object *)self;
    PyObject *state = NULL, *copyreg = NULL, *newobj = NULL;
    PyObject *res = NULL;

    state = bf->dict ? PyDict_Copy(bf->dict) : PyDict_New();
    if (state == NULL) {
        goto done;
    }
    for (const state_field *sf = fields_of(self); sf->key; sf++) {
        PyObject *v = *(PyObject **)((char *)self + sf->offset);
        if (v != NULL && PyDict_SetItemString(state, sf->key, v) < 0) {
            goto done;
        }
    }
    copyreg = PyImport_ImportModule("copyreg");
    if (copyreg == NULL) {
        goto done;
    }
    newobj = PyObject_GetAttrString(copyreg, "__newobj__");
    if (newobj == NULL) {
        goto done;
    }
    res = Py_BuildValue("O(O)O", newobj, (PyObject *)Py_TYPE(self), state);
done:
    Py_XDECREF(state);
    Py_XDECREF(copyreg);
    Py_XDECREF(newobj);
    return res;
}

static PyObject *
basefilter_setstate(PyObject *self, PyObject *state)
{
    ctm_basefilter_object *bf = (ctm_basefilter_object *)self;
    if (!PyDict_Check(state)) {
        PyErr_SetString(PyExc_TypeError, "filter state must be a dict");
        return NULL;
    }
    PyObject *rest = PyDict_Copy(state);
    if (rest == NULL) {
        return NULL;
    }
    for (const state_field *sf = fields_of(self); sf->key; sf++) {
        PyObject *v = PyDict_GetItemString(rest, sf->key);
        if (v == NULL) {
            continue;
        }
        if (strcmp(sf->key, "_filename_pattern") == 0) {
            if (!PyUnicode_Check(v) || PyUnicode_READY(v) < 0) {
                PyErr_SetString(PyExc_TypeError,
                                "filter pattern must be a str");
                goto error;
            }
            ((ctm_filter_object *)self)->bracket = ctm_glob_has_bracket(v);
        }
        set_field((PyObject **)((char *)self + sf->offset), v);
        if (PyDict_DelItemString(rest, sf->key) < 0) {
            goto error;
        }
    }
    if (PyDict_GET_SIZE(rest) > 0) {
        if (bf->dict == NULL) {
            bf->dict = PyDict_New();
            if (bf->dict == NULL) {
                goto error;
            }
        }
        if (PyDict_Update(bf->dict, rest) < 0) {
            goto error;
        }
    }
    Py_DECREF(rest);
    Py_RETURN_NONE;

error:
    Py_DECREF(rest);
    return NULL;
}

static PyMethodDef basefilter_methods[] = {
    {"_match", basefilter_match, METH_O,
     "Return whether the raw trace matches the filter."},
    {"__reduce__", basefilter_reduce, METH_NOARGS, NULL},
    {"__setstate__", basefilter_setstate, METH_O, NULL},
    {NULL, NULL, 0, NULL},
};

/* The instance __dict__ and weak references: PyType_FromSpec takes
 * their offsets from these two members, and the subclasses inherit
 * them. */
#define DICT_AND_WEAKREF_OFFSETS \
    {"__dictoffset__", T_PYSSIZET, offsetof(ctm_basefilter_object, dict), \
     READONLY, NULL}, \
    {"__weaklistoffset__", T_PYSSIZET, \
     offsetof(ctm_basefilter_object, weakreflist), READONLY, NULL}

static PyMemberDef basefilter_members[] = {
    {"inclusive", T_OBJECT_EX, offsetof(ctm_basefilter_object, inclusive), 0,
     "True to include the matching traces, False to exclude them."},
    DICT_AND_WEAKREF_OFFSETS,
    {NULL, 0, 0, 0, NULL},
};

static PyGetSetDef basefilter_getset[] = {
    {"__dict__", PyObject_GenericGetDict, PyObject_GenericSetDict, NULL,
     NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

/* The three filter types were static types, whose classes are
 * immutable: CTM_TPFLAGS_IMMUTABLETYPE keeps them so. */
#define FILTER_FLAGS (Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE \
                      | Py_TPFLAGS_HAVE_GC | CTM_TPFLAGS_IMMUTABLETYPE)

static PyType_Slot basefilter_slots[] = {
    {Py_tp_doc, "BaseFilter(inclusive)\n\nBase class of the trace filters."},
    {Py_tp_new, PyType_GenericNew},
    {Py_tp_init, basefilter_init},
    {Py_tp_dealloc, basefilter_dealloc},
    {Py_tp_traverse, basefilter_traverse},
    {Py_tp_clear, basefilter_clear},
    {Py_tp_methods, basefilter_methods},
    {Py_tp_members, basefilter_members},
    {Py_tp_getset, basefilter_getset},
    {0, NULL},
};

PyType_Spec ctm_basefilter_spec = {
    .name = "ctracemalloc.BaseFilter",
    .basicsize = sizeof(ctm_basefilter_object),
    .flags = FILTER_FLAGS,
    .slots = basefilter_slots,
};

/* ------------------------------------------------------------------
 * Filter
 * ---------------------------------------------------------------- */

static int
filter_traverse(PyObject *op, visitproc visit, void *arg)
{
    ctm_filter_object *self = (ctm_filter_object *)op;
    Py_VISIT(self->pattern);
    Py_VISIT(self->lineno);
    Py_VISIT(self->all_frames);
    Py_VISIT(self->domain);
    return basefilter_traverse(op, visit, arg);
}

static int
filter_clear(PyObject *obj)
{
    ctm_filter_object *self = (ctm_filter_object *)obj;
    Py_CLEAR(self->pattern);
    Py_CLEAR(self->lineno);
    Py_CLEAR(self->all_frames);
    Py_CLEAR(self->domain);
    return basefilter_clear(obj);
}

static int
filter_init(PyObject *op, PyObject *args, PyObject *kwds)
{
    ctm_filter_object *self = (ctm_filter_object *)op;
    static char *kwlist[] = {"inclusive", "filename_pattern", "lineno",
                             "all_frames", "domain", NULL};
    PyObject *inclusive, *pattern;
    PyObject *lineno = Py_None, *domain = Py_None;
    PyObject *all_frames = Py_False;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OO|OOO:Filter", kwlist,
                                     &inclusive, &pattern, &lineno,
                                     &all_frames, &domain)) {
        return -1;
    }
    /* The stdlib sets inclusive before normalising the pattern, so a bad
     * pattern leaves an instance with only inclusive set. */
    set_field(&self->base.inclusive, inclusive);
    PyObject *norm = ctm_normalize_filename(pattern);
    if (norm == NULL) {
        return -1;
    }
    set_field(&self->pattern, norm);
    Py_DECREF(norm);
    self->bracket = ctm_glob_has_bracket(self->pattern);
    set_field(&self->lineno, lineno);
    set_field(&self->all_frames, all_frames);
    set_field(&self->domain, domain);
    return 0;
}

static PyObject *
filter_get_pattern(PyObject *op, void *Py_UNUSED(closure))
{
    return field_get(op, ((ctm_filter_object *)op)->pattern, "filename_pattern");
}

/* _match_frame_impl on the exact type: normalise, glob, then lineno. */
static PyObject *
frame_impl(ctm_filter_object *self, PyObject *filename, PyObject *lineno)
{
    if (self->pattern == NULL) {
        return field_get((PyObject *)self, NULL, "_filename_pattern");
    }
    PyObject *norm = ctm_normalize_filename(filename);
    if (norm == NULL) {
        return NULL;
    }
    int m = ctm_glob_match(norm, self->pattern, self->bracket);
    Py_DECREF(norm);
    if (m < 0) {
        return NULL;
    }
    if (!m) {
        Py_RETURN_FALSE;
    }
    if (self->lineno == NULL) {
        return field_get((PyObject *)self, NULL, "lineno");
    }
    if (self->lineno == Py_None) {
        Py_RETURN_TRUE;
    }
    PyObject *want = Py_NewRef(self->lineno);
    PyObject *res = PyObject_RichCompare(lineno, want, Py_EQ);
    Py_DECREF(want);
    return res;
}

static PyObject *
call_frame_impl(PyObject *self, PyObject *filename, PyObject *lineno)
{
    if (Py_TYPE(self) == ctm_state.Filter) {
        return frame_impl((ctm_filter_object *)self, filename, lineno);
    }
    return PyObject_CallMethod(self, "_match_frame_impl", "OO", filename,
                               lineno);
}

/* impl ^ (not self.inclusive) */
static PyObject *
match_frame(PyObject *self, PyObject *filename, PyObject *lineno)
{
    PyObject *impl = call_frame_impl(self, filename, lineno);
    if (impl == NULL) {
        return NULL;
    }
    int inc = attr_truth(self, ctm_state.Filter,
                         ((ctm_basefilter_object *)self)->inclusive, "inclusive");
    if (inc < 0) {
        Py_DECREF(impl);
        return NULL;
    }
    PyObject *res = PyNumber_Xor(impl, inc ? Py_False : Py_True);
    Py_DECREF(impl);
    return res;
}

static PyObject *
call_match_frame(PyObject *self, PyObject *filename, PyObject *lineno)
{
    if (Py_TYPE(self) == ctm_state.Filter) {
        return match_frame(self, filename, lineno);
    }
    return PyObject_CallMethod(self, "_match_frame", "OO", filename, lineno);
}

static PyObject *
match_traceback(PyObject *self, PyObject *traceback)
{
    ctm_filter_object *f = (ctm_filter_object *)self;
    PyObject *pair[2];
    int all = attr_truth(self, ctm_state.Filter, f->all_frames, "all_frames");
    if (all < 0) {
        return NULL;
    }
    if (!all) {
        PyObject *first = PySequence_GetItem(traceback, 0);
        if (first == NULL) {
            return NULL;
        }
        int rc = unpack(first, 2, pair);
        Py_DECREF(first);
        if (rc < 0) {
            return NULL;
        }
        PyObject *res = call_match_frame(self, pair[0], pair[1]);
        Py_DECREF(pair[0]);
        Py_DECREF(pair[1]);
        return res;
    }

    PyObject *it = PyObject_GetIter(traceback);
    if (it == NULL) {
        return NULL;
    }
    int found = 0;
    PyObject *item;
    while (!found && (item = PyIter_Next(it)) != NULL) {
        int rc = unpack(item, 2, pair);
        Py_DECREF(item);
        if (rc < 0) {
            Py_DECREF(it);
            return NULL;
        }
        PyObject *r = call_frame_impl(self, pair[0], pair[1]);
        Py_DECREF(pair[0]);
        Py_DECREF(pair[1]);
        found = r ? PyObject_IsTrue(r) : -1;
        Py_XDECREF(r);
        if (found < 0) {
            Py_DECREF(it);
            return NULL;
        }
    }
    Py_DECREF(it);
    if (PyErr_Occurred()) {
        return NULL;
    }
    PyObject *inclusive = attr_get(self, ctm_state.Filter, f->base.inclusive,
                                   "inclusive");
    if (inclusive == NULL || found) {
        return inclusive;
    }
    int inc = PyObject_IsTrue(inclusive);
    Py_DECREF(inclusive);
    if (inc < 0) {
        return NULL;
    }
    return PyBool_FromLong(!inc);
}

static PyObject *
call_match_traceback(PyObject *self, PyObject *traceback)
{
    if (Py_TYPE(self) == ctm_state.Filter) {
        return match_traceback(self, traceback);
    }
    return PyObject_CallMethod(self, "_match_traceback", "(O)",
                               traceback);
}

static PyObject *
filter_match(PyObject *self, PyObject *trace)
{
    ctm_filter_object *f = (ctm_filter_object *)self;
    PyObject *t[4];
    PyObject *res = NULL, *domain = NULL;
    if (unpack(trace, 4, t) < 0) {
        return NULL;
    }
    res = call_match_traceback(self, t[2]);
    if (res == NULL) {
        goto done;
    }
    domain = attr_get(self, ctm_state.Filter, f->domain, "domain");
    if (domain == NULL) {
        Py_CLEAR(res);
        goto done;
    }
    if (domain != Py_None) {
        int inc = attr_truth(self, ctm_state.Filter, f->base.inclusive,
                             "inclusive");
        int r = inc < 0 ? -1 : PyObject_IsTrue(res);
        if (r < 0) {
            Py_CLEAR(res);
            goto done;
        }
        /* inclusive: res and domain == self.domain;
         * exclusive: res or domain != self.domain */
        if (inc ? r : !r) {
            Py_SETREF(res, PyObject_RichCompare(t[0], domain,
                                                inc ? Py_EQ : Py_NE));
        }
    }
done:
    Py_XDECREF(domain);
    for (int i = 0; i < 4; i++) {
        Py_DECREF(t[i]);
    }
    return res;
}

static PyObject *
filter_match_frame_impl_meth(PyObject *self, PyObject *args)
{
    PyObject *filename, *lineno;
    if (!PyArg_ParseTuple(args, "OO:_match_frame_impl", &filename,
                          &lineno)) {
        return NULL;
    }
    /* reached on subclasses too: this is the base implementation */
    return frame_impl((ctm_filter_object *)self, filename, lineno);
}

static PyObject *
filter_match_frame_meth(PyObject *self, PyObject *args)
{
    PyObject *filename, *lineno;
    if (!PyArg_ParseTuple(args, "OO:_match_frame", &filename, &lineno)) {
        return NULL;
    }
    return match_frame(self, filename, lineno);
}

static PyMethodDef filter_methods[] = {
    {"_match_frame_impl", filter_match_frame_impl_meth, METH_VARARGS, NULL},
    {"_match_frame", filter_match_frame_meth, METH_VARARGS,
     "Return whether the frame (filename, lineno) passes the filter."},
    {"_match_traceback", match_traceback, METH_O,
     "Return whether the raw frames (most recent first) pass the filter."},
    {"_match", filter_match, METH_O,
     "Return whether the raw trace passes the filter."},
    {NULL, NULL, 0, NULL},
};

static PyMemberDef filter_members[] = {
    {"lineno", T_OBJECT_EX, offsetof(ctm_filter_object, lineno), 0,
     "Line number to match, or None for any line."},
    {"all_frames", T_OBJECT_EX, offsetof(ctm_filter_object, all_frames), 0,
     "True to check every frame, False for the most recent one only."},
    {"domain", T_OBJECT_EX, offsetof(ctm_filter_object, domain), 0,
     "Address space to match, or None for any."},
    {NULL, 0, 0, 0, NULL},
};

static PyGetSetDef filter_getset[] = {
    {"filename_pattern", filter_get_pattern, NULL,
     "Filename pattern (fnmatch syntax), normalised. Read-only.", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyType_Slot filter_slots[] = {
    {Py_tp_doc, "Filter(inclusive, filename_pattern, lineno=None, "
                "all_frames=False, domain=None)\n\n"
                "Filter traces by filename pattern, line number and "
                "domain."},
    {Py_tp_new, PyType_GenericNew},
    {Py_tp_init, filter_init},
    {Py_tp_dealloc, basefilter_dealloc},
    {Py_tp_traverse, filter_traverse},
    {Py_tp_clear, filter_clear},
    {Py_tp_methods, filter_methods},
    {Py_tp_members, filter_members},
    {Py_tp_getset, filter_getset},
    {0, NULL},
};

/* Made with BaseFilter as its base. */
PyType_Spec ctm_filter_spec = {
    .name = "ctracemalloc.Filter",
    .basicsize = sizeof(ctm_filter_object),
    .flags = FILTER_FLAGS,
    .slots = filter_slots,
};

/* ------------------------------------------------------------------
 * DomainFilter
 * ---------------------------------------------------------------- */

static int
domainfilter_traverse(PyObject *op, visitproc visit, void *arg)
{
    Py_VISIT(((ctm_domainfilter_object *)op)->domain);
    return basefilter_traverse(op, visit, arg);
}

static int
domainfilter_clear(PyObject *obj)
{
    ctm_domainfilter_object *self = (ctm_domainfilter_object *)obj;
    Py_CLEAR(self->domain);
    return basefilter_clear(obj);
}

static int
domainfilter_init(PyObject *op, PyObject *args, PyObject *kwds)
{
    ctm_domainfilter_object *self = (ctm_domainfilter_object *)op;
    static char *kwlist[] = {"inclusive", "domain", NULL};
    PyObject *inclusive, *domain;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OO:DomainFilter", kwlist,
                                     &inclusive, &domain)) {
        return -1;
    }
    set_field(&self->base.inclusive, inclusive);
    set_field(&self->domain, domain);
    return 0;
}

/* (domain == self.domain) ^ (not self.inclusive) */
static PyObject *
domainfilter_match(PyObject *self, PyObject *trace)
{
    ctm_domainfilter_object *f = (ctm_domainfilter_object *)self;
    PyObject *t[4];
    PyObject *res = NULL, *eq = NULL;
    if (unpack(trace, 4, t) < 0) {
        return NULL;
    }
    PyObject *domain = attr_get(self, ctm_state.DomainFilter, f->domain,
                                "domain");
    if (domain == NULL) {
        goto done;
    }
    eq = PyObject_RichCompare(t[0], domain, Py_EQ);
    Py_DECREF(domain);
    if (eq == NULL) {
        goto done;
    }
    int inc = attr_truth(self, ctm_state.DomainFilter, f->base.inclusive,
                         "inclusive");
    if (inc < 0) {
        goto done;
    }
    res = PyNumber_Xor(eq, inc ? Py_False : Py_True);
done:
    Py_XDECREF(eq);
    for (int i = 0; i < 4; i++) {
        Py_DECREF(t[i]);
    }
    return res;
}

static PyMethodDef domainfilter_methods[] = {
    {"_match", domainfilter_match, METH_O,
     "Return whether the raw trace passes the filter."},
    {NULL, NULL, 0, NULL},
};

static PyMemberDef domainfilter_members[] = {
    {"domain", T_OBJECT_EX, offsetof(ctm_domainfilter_object, domain), READONLY,
     "Address space to match. Read-only."},
    {NULL, 0, 0, 0, NULL},
};

static PyType_Slot domainfilter_slots[] = {
    {Py_tp_doc, "DomainFilter(inclusive, domain)\n\n"
                "Filter traces by address space (domain)."},
    {Py_tp_new, PyType_GenericNew},
    {Py_tp_init, domainfilter_init},
    {Py_tp_dealloc, basefilter_dealloc},
    {Py_tp_traverse, domainfilter_traverse},
    {Py_tp_clear, domainfilter_clear},
    {Py_tp_methods, domainfilter_methods},
    {Py_tp_members, domainfilter_members},
    {0, NULL},
};

/* Made with BaseFilter as its base. */
PyType_Spec ctm_domainfilter_spec = {
    .name = "ctracemalloc.DomainFilter",
    .basicsize = sizeof(ctm_domainfilter_object),
    .flags = FILTER_FLAGS,
    .slots = domainfilter_slots,
};
