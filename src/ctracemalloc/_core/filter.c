/* BaseFilter, Filter and DomainFilter, filename glob matching, and the
 * evaluation of filters over snapshot data for Snapshot.filter_traces.
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
 * AttributeError.
 *
 * Glob matching is Python's fnmatch on POSIX: os.path.normcase is the
 * identity, '*' matches any run of characters (newlines and '/'
 * included), '?' any one character, every other character itself,
 * anchored at both ends. '*' and '?' are matched here in C, on code
 * points; a pattern containing '[' (character classes, whose rules are
 * subtle) is handed to fnmatch.fnmatchcase.
 *
 * filter_traces (ctm_filter_keep) never matches per trace when it can
 * match per distinct value: a Filter is matched once against each
 * distinct filename of the snapshot, then once per distinct frame (the
 * lineno test), then once per traceback, giving a byte table indexed by
 * traceback; each trace then costs a table lookup and, for filters with
 * a domain, an integer comparison. Objects that are not exactly Filter
 * or DomainFilter (user subclasses of BaseFilter, Filter subclasses,
 * filters whose domain is not an int) fall back to calling
 * filter._match(raw_trace) per trace, exactly as the stdlib does.
 */
#include "internal.h"

#include <string.h>
#include <structmember.h>

typedef struct {
    PyObject_HEAD
    PyObject *dict;
    PyObject *weakreflist;
    PyObject *inclusive;
} BaseFilterObject;

typedef struct {
    BaseFilterObject base;
    PyObject *pattern;          /* normalised str, or NULL */
    PyObject *lineno;
    PyObject *all_frames;
    PyObject *domain;
    int bracket;                /* pattern contains '[': use fnmatch */
} FilterObject;

typedef struct {
    BaseFilterObject base;
    PyObject *domain;
} DomainFilterObject;

/* fnmatch.fnmatchcase, imported on first use of a '[' pattern. */
static PyObject *fnmatchcase_func;

/* ------------------------------------------------------------------
 * Glob matching
 * ---------------------------------------------------------------- */

static int
ends_with_pyc(PyObject *s)
{
    Py_ssize_t n = PyUnicode_GET_LENGTH(s);
    if (n < 4) {
        return 0;
    }
    int kind = PyUnicode_KIND(s);
    const void *data = PyUnicode_DATA(s);
    return (PyUnicode_READ(kind, data, n - 4) == '.'
            && PyUnicode_READ(kind, data, n - 3) == 'p'
            && PyUnicode_READ(kind, data, n - 2) == 'y'
            && PyUnicode_READ(kind, data, n - 1) == 'c');
}

/* Match the first nlen code points of name against a pattern made of
 * '*', '?' and literals. Greedy with backtracking to the last '*': a
 * later '*' can absorb anything an earlier one could, so only the last
 * one ever needs to be retried, and the match is linear in practice. */
static int
glob_match(PyObject *name, Py_ssize_t nlen, PyObject *pat)
{
    int nkind = PyUnicode_KIND(name);
    const void *ndata = PyUnicode_DATA(name);
    int pkind = PyUnicode_KIND(pat);
    const void *pdata = PyUnicode_DATA(pat);
    Py_ssize_t plen = PyUnicode_GET_LENGTH(pat);
    Py_ssize_t n = 0, p = 0, star = -1, mark = 0;

    while (n < nlen) {
        if (p < plen) {
            Py_UCS4 c = PyUnicode_READ(pkind, pdata, p);
            if (c == '*') {
                star = ++p;
                mark = n;
                continue;
            }
            if (c == '?' || c == PyUnicode_READ(nkind, ndata, n)) {
                p++;
                n++;
                continue;
            }
        }
        if (star < 0) {
            return 0;
        }
        p = star;
        n = ++mark;
    }
    while (p < plen && PyUnicode_READ(pkind, pdata, p) == '*') {
        p++;
    }
    return p == plen;
}

static int
has_bracket(PyObject *pat)
{
    return PyUnicode_FindChar(pat, '[', 0, PyUnicode_GET_LENGTH(pat),
                              1) >= 0;
}

/* Does the (ready) str filename, whose ".pyc" is not yet normalised,
 * match the filter's pattern? 1, 0, or -1 with an exception. */
static int
pattern_match(FilterObject *f, PyObject *filename)
{
    Py_ssize_t len = PyUnicode_GET_LENGTH(filename);
    if (ends_with_pyc(filename)) {
        len--;
    }
    if (!f->bracket) {
        return glob_match(filename, len, f->pattern);
    }
    /* fnmatch is Python code, which may replace the pattern
     * (__setstate__): hold the one in use */
    PyObject *pattern = Py_NewRef(f->pattern);
    PyObject *name = NULL, *res = NULL;
    int r = -1;
    if (fnmatchcase_func == NULL) {
        PyObject *mod = PyImport_ImportModule("fnmatch");
        if (mod == NULL) {
            goto done;
        }
        fnmatchcase_func = PyObject_GetAttrString(mod, "fnmatchcase");
        Py_DECREF(mod);
        if (fnmatchcase_func == NULL) {
            goto done;
        }
    }
    if (len == PyUnicode_GET_LENGTH(filename)) {
        name = Py_NewRef(filename);
    }
    else {
        name = PyUnicode_Substring(filename, 0, len);
        if (name == NULL) {
            goto done;
        }
    }
    res = PyObject_CallFunctionObjArgs(fnmatchcase_func, name, pattern,
                                       NULL);
    if (res != NULL) {
        r = PyObject_IsTrue(res);
    }
done:
    Py_XDECREF(res);
    Py_XDECREF(name);
    Py_DECREF(pattern);
    return r;
}

PyObject *
ctm_normalize_filename(PyObject *filename)
{
    /* os.path.normcase is os.fspath on POSIX: same errors, same
     * message. */
    PyObject *path = PyOS_FSPath(filename);
    if (path == NULL) {
        return NULL;
    }
    if (!PyUnicode_Check(path)) {
        /* bytes: the stdlib fails on bytes.endswith('.pyc') */
        Py_DECREF(path);
        PyErr_SetString(PyExc_TypeError,
                        "endswith first arg must be bytes or a tuple of "
                        "bytes, not str");
        return NULL;
    }
    if (PyUnicode_READY(path) < 0) {
        Py_DECREF(path);
        return NULL;
    }
    if (!ends_with_pyc(path)) {
        return path;
    }
    PyObject *res = PyUnicode_Substring(path, 0,
                                        PyUnicode_GET_LENGTH(path) - 1);
    Py_DECREF(path);
    return res;
}

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
    BaseFilterObject *self = (BaseFilterObject *)op;
    Py_VISIT(Py_TYPE(op));
    Py_VISIT(self->dict);
    Py_VISIT(self->inclusive);
    return 0;
}

static int
basefilter_clear(PyObject *op)
{
    BaseFilterObject *self = (BaseFilterObject *)op;
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
    if (((BaseFilterObject *)obj)->weakreflist != NULL) {
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
    BaseFilterObject *self = (BaseFilterObject *)op;
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
    {"inclusive", offsetof(BaseFilterObject, inclusive)},
    {NULL, 0},
};

static const state_field filter_fields[] = {
    {"inclusive", offsetof(BaseFilterObject, inclusive)},
    {"_filename_pattern", offsetof(FilterObject, pattern)},
    {"lineno", offsetof(FilterObject, lineno)},
    {"all_frames", offsetof(FilterObject, all_frames)},
    {"domain", offsetof(FilterObject, domain)},
    {NULL, 0},
};

static const state_field domainfilter_fields[] = {
    {"inclusive", offsetof(BaseFilterObject, inclusive)},
    {"_domain", offsetof(DomainFilterObject, domain)},
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
    BaseFilterObject *bf = (BaseFilterObject *)self;
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
    BaseFilterObject *bf = (BaseFilterObject *)self;
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
            ((FilterObject *)self)->bracket = has_bracket(v);
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
    {"__dictoffset__", T_PYSSIZET, offsetof(BaseFilterObject, dict), \
     READONLY, NULL}, \
    {"__weaklistoffset__", T_PYSSIZET, \
     offsetof(BaseFilterObject, weakreflist), READONLY, NULL}

static PyMemberDef basefilter_members[] = {
    {"inclusive", T_OBJECT_EX, offsetof(BaseFilterObject, inclusive), 0,
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
    .basicsize = sizeof(BaseFilterObject),
    .flags = FILTER_FLAGS,
    .slots = basefilter_slots,
};

/* ------------------------------------------------------------------
 * Filter
 * ---------------------------------------------------------------- */

static int
filter_traverse(PyObject *op, visitproc visit, void *arg)
{
    FilterObject *self = (FilterObject *)op;
    Py_VISIT(self->pattern);
    Py_VISIT(self->lineno);
    Py_VISIT(self->all_frames);
    Py_VISIT(self->domain);
    return basefilter_traverse(op, visit, arg);
}

static int
filter_clear(PyObject *obj)
{
    FilterObject *self = (FilterObject *)obj;
    Py_CLEAR(self->pattern);
    Py_CLEAR(self->lineno);
    Py_CLEAR(self->all_frames);
    Py_CLEAR(self->domain);
    return basefilter_clear(obj);
}

static int
filter_init(PyObject *op, PyObject *args, PyObject *kwds)
{
    FilterObject *self = (FilterObject *)op;
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
    self->bracket = has_bracket(self->pattern);
    set_field(&self->lineno, lineno);
    set_field(&self->all_frames, all_frames);
    set_field(&self->domain, domain);
    return 0;
}

static PyObject *
filter_get_pattern(PyObject *op, void *Py_UNUSED(closure))
{
    return field_get(op, ((FilterObject *)op)->pattern, "filename_pattern");
}

/* _match_frame_impl on the exact type: normalise, glob, then lineno. */
static PyObject *
frame_impl(FilterObject *self, PyObject *filename, PyObject *lineno)
{
    if (self->pattern == NULL) {
        return field_get((PyObject *)self, NULL, "_filename_pattern");
    }
    PyObject *norm = ctm_normalize_filename(filename);
    if (norm == NULL) {
        return NULL;
    }
    int m = pattern_match(self, norm);
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
        return frame_impl((FilterObject *)self, filename, lineno);
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
                         ((BaseFilterObject *)self)->inclusive, "inclusive");
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
    FilterObject *f = (FilterObject *)self;
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
    FilterObject *f = (FilterObject *)self;
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
    return frame_impl((FilterObject *)self, filename, lineno);
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
    {"lineno", T_OBJECT_EX, offsetof(FilterObject, lineno), 0,
     "Line number to match, or None for any line."},
    {"all_frames", T_OBJECT_EX, offsetof(FilterObject, all_frames), 0,
     "True to check every frame, False for the most recent one only."},
    {"domain", T_OBJECT_EX, offsetof(FilterObject, domain), 0,
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
    .basicsize = sizeof(FilterObject),
    .flags = FILTER_FLAGS,
    .slots = filter_slots,
};

/* ------------------------------------------------------------------
 * DomainFilter
 * ---------------------------------------------------------------- */

static int
domainfilter_traverse(PyObject *op, visitproc visit, void *arg)
{
    Py_VISIT(((DomainFilterObject *)op)->domain);
    return basefilter_traverse(op, visit, arg);
}

static int
domainfilter_clear(PyObject *obj)
{
    DomainFilterObject *self = (DomainFilterObject *)obj;
    Py_CLEAR(self->domain);
    return basefilter_clear(obj);
}

static int
domainfilter_init(PyObject *op, PyObject *args, PyObject *kwds)
{
    DomainFilterObject *self = (DomainFilterObject *)op;
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
    DomainFilterObject *f = (DomainFilterObject *)self;
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
    {"domain", T_OBJECT_EX, offsetof(DomainFilterObject, domain), READONLY,
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
    .basicsize = sizeof(DomainFilterObject),
    .flags = FILTER_FLAGS,
    .slots = domainfilter_slots,
};

/* ------------------------------------------------------------------
 * Filters over snapshot data (Snapshot.filter_traces)
 * ---------------------------------------------------------------- */

enum { CF_FILTER, CF_DOMAIN, CF_GENERIC };

/* Traceback table value for a trace on which the stdlib's
 * _match_traceback raises (traceback[0] of an empty traceback). */
#define TB_INDEX_ERROR 2

/* Domain test of a compiled filter. */
enum { DOM_NONE, DOM_VALUE, DOM_NEVER };

typedef struct {
    PyObject *obj;              /* strong reference */
    int kind;
    int inclusive;              /* truth of obj.inclusive */
    unsigned char *tbr;         /* CF_FILTER: per traceback, 0, 1 or
                                 * TB_INDEX_ERROR */
    int dom_mode;               /* CF_FILTER, CF_DOMAIN */
    uint32_t domain;
    PyObject *match;            /* CF_GENERIC: bound _match, lazily */
} cfilter;

/* An exact int (or bool) as a trace domain: DOM_VALUE with *out, or
 * DOM_NEVER when out of the uint32 range (no trace can be equal). -1 if
 * obj is another kind of object. */
static int
domain_of(PyObject *obj, uint32_t *out)
{
    if (!PyLong_CheckExact(obj) && !PyBool_Check(obj)) {
        return -1;
    }
    int overflow;
    long long v = PyLong_AsLongLongAndOverflow(obj, &overflow);
    if (overflow || v < 0 || v > (long long)UINT32_MAX) {
        return DOM_NEVER;
    }
    *out = (uint32_t)v;
    return DOM_VALUE;
}

/* Per traceback table of an exact Filter: _match_traceback's truth for
 * every traceback of d, matching each string and each frame once. */
static int
compile_filter(cfilter *cf, const ctm_snapdata *d)
{
    FilterObject *f = (FilterObject *)cf->obj;
    unsigned char *smatch = NULL, *fmatch = NULL;
    PyObject *pylineno = NULL;
    /* owned: == on a user object and fnmatch run Python code, which may
     * set or delete the filter's attributes */
    PyObject *lineno = Py_NewRef(f->lineno);
    int rc = -1;

    int all = PyObject_IsTrue(f->all_frames);
    if (all < 0) {
        Py_DECREF(lineno);
        return -1;
    }
    /* lineno test: none, an exact int compared in C, or == per frame */
    int lmode = 0;
    long long lval = 0;
    if (lineno != Py_None) {
        if (PyLong_CheckExact(lineno) || PyBool_Check(lineno)) {
            int overflow;
            lval = PyLong_AsLongLongAndOverflow(lineno, &overflow);
            lmode = overflow ? 3 : 1;
        }
        else {
            lmode = 2;
        }
    }

    smatch = ctm_malloc((size_t)d->nstrings);
    fmatch = ctm_malloc((size_t)d->nframes);
    cf->tbr = ctm_malloc((size_t)d->ntracebacks);
    if (smatch == NULL || fmatch == NULL || cf->tbr == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    for (Py_ssize_t i = 0; i < d->nstrings; i++) {
        PyObject *s = d->strings[i];
        int m = PyUnicode_READY(s) < 0 ? -1 : pattern_match(f, s);
        if (m < 0) {
            goto done;
        }
        smatch[i] = (unsigned char)m;
    }
    for (Py_ssize_t i = 0; i < d->nframes; i++) {
        const ctm_snap_frame *fr = &d->frames[i];
        int m = smatch[fr->filename];
        if (m && lmode == 1) {
            m = fr->lineno == lval;
        }
        else if (m && lmode == 3) {
            m = 0;
        }
        else if (m && lmode == 2) {
            pylineno = PyLong_FromLong(fr->lineno);
            if (pylineno == NULL) {
                goto done;
            }
            PyObject *eq = PyObject_RichCompare(pylineno, lineno, Py_EQ);
            Py_CLEAR(pylineno);
            m = eq ? PyObject_IsTrue(eq) : -1;
            Py_XDECREF(eq);
            if (m < 0) {
                goto done;
            }
        }
        fmatch[i] = (unsigned char)m;
    }
    for (Py_ssize_t i = 0; i < d->ntracebacks; i++) {
        const ctm_snap_tb *tb = &d->tracebacks[i];
        const uint32_t *refs = d->refs + tb->first;
        if (all) {
            int found = 0;
            for (uint32_t j = 0; j < tb->nframe && !found; j++) {
                found = fmatch[refs[j]];
            }
            cf->tbr[i] = found == cf->inclusive;
        }
        else if (tb->nframe == 0) {
            cf->tbr[i] = TB_INDEX_ERROR;
        }
        else {
            cf->tbr[i] = fmatch[refs[0]] ^ !cf->inclusive;
        }
    }
    rc = 0;
done:
    Py_DECREF(lineno);
    ctm_free(smatch);
    ctm_free(fmatch);
    return rc;
}

/* Choose how to evaluate obj, whose inclusive truth is known. */
static int
classify(cfilter *cf, const ctm_snapdata *d)
{
    cf->kind = CF_GENERIC;
    if (Py_TYPE(cf->obj) == ctm_state.Filter) {
        FilterObject *f = (FilterObject *)cf->obj;
        if (f->pattern == NULL || f->lineno == NULL
            || f->all_frames == NULL || f->domain == NULL) {
            return 0;
        }
        if (f->domain == Py_None) {
            cf->dom_mode = DOM_NONE;
        }
        else {
            int m = domain_of(f->domain, &cf->domain);
            if (m < 0) {
                return 0;
            }
            cf->dom_mode = m;
        }
        cf->kind = CF_FILTER;
        return compile_filter(cf, d);
    }
    if (Py_TYPE(cf->obj) == ctm_state.DomainFilter) {
        DomainFilterObject *f = (DomainFilterObject *)cf->obj;
        if (f->domain == NULL) {
            return 0;
        }
        int m = domain_of(f->domain, &cf->domain);
        if (m < 0) {
            return 0;
        }
        cf->dom_mode = m;
        cf->kind = CF_DOMAIN;
    }
    return 0;
}

/* _match of a filter evaluated in C, for a trace with traceback tb and
 * domain: 1, 0, or TB_INDEX_ERROR. */
static inline int
fast_eval(const cfilter *cf, uint32_t tb, uint32_t domain)
{
    int eq = cf->dom_mode == DOM_VALUE && domain == cf->domain;
    if (cf->kind == CF_DOMAIN) {
        return eq ^ !cf->inclusive;
    }
    int r = cf->tbr[tb];
    if (r == TB_INDEX_ERROR || cf->dom_mode == DOM_NONE) {
        return r;
    }
    return cf->inclusive ? (r && eq) : (r || !eq);
}

/* _filter_trace for filters all evaluated in C: the inclusive ones
 * (order[0..ninc)) then the exclusive ones, with the stdlib's
 * short-circuits. 1 keep, 0 drop, or TB_INDEX_ERROR. */
static int
fast_decide(cfilter *const *order, Py_ssize_t ninc, Py_ssize_t n,
            uint32_t tb, uint32_t domain)
{
    if (ninc) {
        int any = 0;
        for (Py_ssize_t j = 0; j < ninc && !any; j++) {
            any = fast_eval(order[j], tb, domain);
            if (any == TB_INDEX_ERROR) {
                return any;
            }
        }
        if (!any) {
            return 0;
        }
    }
    for (Py_ssize_t j = ninc; j < n; j++) {
        int r = fast_eval(order[j], tb, domain);
        if (r != 1) {
            return r;
        }
    }
    return 1;
}

static int
index_error(void)
{
    PyErr_SetString(PyExc_IndexError, "tuple index out of range");
    return -1;
}

/* All filters in C. A trace's fate depends only on its traceback and on
 * which of the filters' domains (if any) it has, so it is decided once
 * per (domain class, traceback) in a table, and each trace costs one
 * lookup whatever the number of filters. Return 0, or -1 with an
 * exception; 1 if the table would be too big (the caller decides per
 * trace). */
static int
keep_by_table(const ctm_snapdata *d, cfilter *const *order, Py_ssize_t ninc,
              Py_ssize_t n, unsigned char *keep)
{
    uint32_t *doms = ctm_malloc((size_t)(n ? n : 1) * sizeof(uint32_t));
    unsigned char *table = NULL;
    Py_ssize_t m = 0;
    int rc = -1;
    if (doms == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    for (Py_ssize_t k = 0; k < n; k++) {
        if (order[k]->dom_mode != DOM_VALUE) {
            continue;
        }
        Py_ssize_t j = 0;
        while (j < m && doms[j] != order[k]->domain) {
            j++;
        }
        if (j == m) {
            doms[m++] = order[k]->domain;
        }
    }
    Py_ssize_t ntb = d->ntracebacks;
    if ((m + 1) * ntb > 4 * d->ntraces + 4096) {
        rc = 1;
        goto done;
    }
    /* class m: a domain equal to none of them */
    uint32_t other = 0;
    for (Py_ssize_t j = 0; j < m; j++) {
        if (doms[j] == other) {
            other++;
            j = -1;
        }
    }
    size_t tsize = (size_t)((m + 1) * ntb);
    table = ctm_malloc(tsize ? tsize : 1);
    if (table == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    for (Py_ssize_t c = 0; c <= m; c++) {
        uint32_t dv = c < m ? doms[c] : other;
        unsigned char *row = table + c * ntb;
        for (Py_ssize_t tb = 0; tb < ntb; tb++) {
            row[tb] = (unsigned char)fast_decide(order, ninc, n,
                                                 (uint32_t)tb, dv);
        }
    }
    for (Py_ssize_t i = 0; i < d->ntraces; i++) {
        const ctm_snap_trace *tr = &d->traces[i];
        Py_ssize_t c = 0;
        while (c < m && doms[c] != tr->domain) {
            c++;
        }
        unsigned char v = table[c * ntb + tr->traceback];
        if (v == TB_INDEX_ERROR) {
            index_error();
            goto done;
        }
        keep[i] = v;
    }
    rc = 0;
done:
    ctm_free(doms);
    ctm_free(table);
    return rc;
}

typedef struct {
    const ctm_snapdata *d;
    PyObject **cache;           /* frames tuples for raw traces, lazily */
} rawctx;

/* Truth of cf._match(trace i): 1, 0 or -1. *raw is the raw trace tuple,
 * made on first need and shared by the filters evaluated on the same
 * trace, as the stdlib passes them the same tuple. */
static int
cfilter_eval(cfilter *cf, rawctx *ctx, Py_ssize_t i, PyObject **raw)
{
    const ctm_snap_trace *tr = &ctx->d->traces[i];
    if (cf->kind != CF_GENERIC) {
        int r = fast_eval(cf, tr->traceback, tr->domain);
        return r == TB_INDEX_ERROR ? index_error() : r;
    }
    if (cf->match == NULL) {
        cf->match = PyObject_GetAttrString(cf->obj, "_match");
        if (cf->match == NULL) {
            return -1;
        }
    }
    if (*raw == NULL) {
        if (ctx->cache == NULL) {
            ctx->cache = ctm_calloc((size_t)ctx->d->ntracebacks,
                                    sizeof(PyObject *));
            if (ctx->cache == NULL) {
                PyErr_NoMemory();
                return -1;
            }
        }
        *raw = ctm_snapdata_trace_tuple(ctx->d, i, ctx->cache);
        if (*raw == NULL) {
            return -1;
        }
    }
    PyObject *res = PyObject_CallOneArg(cf->match, *raw);
    if (res == NULL) {
        return -1;
    }
    int r = PyObject_IsTrue(res);
    Py_DECREF(res);
    return r;
}

int
ctm_filter_keep(const ctm_snapdata *d, PyObject *filters,
                unsigned char *keep)
{
    cfilter *cfs = NULL;
    Py_ssize_t n = 0, cap = 0, ninc = 0;
    rawctx ctx = {d, NULL};
    PyObject *it = NULL, *item;
    cfilter **order = NULL;
    int rc = -1;

    /* Split into inclusive and exclusive filters, as the stdlib does
     * before looking at any trace. */
    it = PyObject_GetIter(filters);
    if (it == NULL) {
        goto done;
    }
    while ((item = PyIter_Next(it)) != NULL) {
        PyObject *inc = PyObject_GetAttrString(item, "inclusive");
        int t = inc ? PyObject_IsTrue(inc) : -1;
        Py_XDECREF(inc);
        if (t < 0) {
            Py_DECREF(item);
            goto done;
        }
        if (n == cap) {
            Py_ssize_t ncap = cap ? cap * 2 : 8;
            cfilter *p = ctm_realloc(cfs, (size_t)ncap * sizeof(cfilter));
            if (p == NULL) {
                Py_DECREF(item);
                PyErr_NoMemory();
                goto done;
            }
            cfs = p;
            cap = ncap;
        }
        memset(&cfs[n], 0, sizeof(cfilter));
        cfs[n].obj = item;
        cfs[n].inclusive = t;
        n++;
        ninc += t;
    }
    if (PyErr_Occurred()) {
        goto done;
    }
    if (d->ntraces == 0) {
        /* the stdlib evaluates nothing more without a trace */
        rc = 0;
        goto done;
    }
    for (Py_ssize_t k = 0; k < n; k++) {
        if (classify(&cfs[k], d) < 0) {
            goto done;
        }
    }

    /* Inclusive filters first, then exclusive ones, each group in the
     * order given, with the stdlib's short-circuits (any / any not). */
    order = ctm_malloc((size_t)(n ? n : 1) * sizeof(cfilter *));
    if (order == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    Py_ssize_t o = 0;
    for (int pass = 1; pass >= 0; pass--) {
        for (Py_ssize_t k = 0; k < n; k++) {
            if (cfs[k].inclusive == pass) {
                order[o++] = &cfs[k];
            }
        }
    }
    int all_fast = 1;
    for (Py_ssize_t k = 0; k < n; k++) {
        all_fast &= cfs[k].kind != CF_GENERIC;
    }
    if (all_fast) {
        rc = keep_by_table(d, order, ninc, n, keep);
        if (rc <= 0) {
            goto done;
        }
        rc = -1;
    }
    cfilter **exc = order + ninc;
    Py_ssize_t nexc = n - ninc;
    for (Py_ssize_t i = 0; i < d->ntraces; i++) {
        PyObject *raw = NULL;
        int k = 1, r = 0;
        if (ninc) {
            k = 0;
            for (Py_ssize_t j = 0; j < ninc && !k; j++) {
                r = cfilter_eval(order[j], &ctx, i, &raw);
                if (r < 0) {
                    break;
                }
                k = r;
            }
        }
        if (r >= 0 && k) {
            for (Py_ssize_t j = 0; j < nexc && k; j++) {
                r = cfilter_eval(exc[j], &ctx, i, &raw);
                if (r < 0) {
                    break;
                }
                k = r;
            }
        }
        Py_XDECREF(raw);
        if (r < 0) {
            goto done;
        }
        keep[i] = (unsigned char)k;
    }
    rc = 0;

done:
    Py_XDECREF(it);
    ctm_free(order);
    for (Py_ssize_t k = 0; k < n; k++) {
        Py_DECREF(cfs[k].obj);
        Py_XDECREF(cfs[k].match);
        ctm_free(cfs[k].tbr);
    }
    ctm_free(cfs);
    if (ctx.cache != NULL) {
        for (Py_ssize_t t = 0; t < d->ntracebacks; t++) {
            Py_XDECREF(ctx.cache[t]);
        }
        ctm_free(ctx.cache);
    }
    return rc;
}
