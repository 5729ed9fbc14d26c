/* The stdlib's snapshot pickle (pklops.h), read without unpickling:
 * ctm_stdpickle_load.
 *
 * Its machine (pklvm.h) runs the opcodes that carry data (None, bools,
 * ints, floats, str, bytes, tuples, lists, dicts, sets, the memo,
 * frames) and knows two classes, Snapshot and _Traces of the module tracemalloc,
 * whose instances it builds as plain attribute dicts, one of each at
 * most. Any other class or function a file names is refused, so loading
 * runs no code from the file, unlike pickle.load in the stdlib's
 * Snapshot.load. Every length is checked against the bytes left before
 * anything is allocated for it, and memo indexes must be given in order
 * (as every pickler gives them), so the memory a file can make the
 * machine allocate is linear in its size. Bytes after STOP are ignored,
 * as pickle.load ignores them. The raw traces then go through the
 * builder of Snapshot(raw_traces), which checks each one. Whatever is
 * wrong raises ValueError.
 */
#include "pklvm.h"
#include "pklops.h"

#include <stdio.h>
#include <string.h>

static int
name_is(const char *s, size_t n, const char *want)
{
    return n == strlen(want) && memcmp(s, want, n) == 0;
}

/* Push the stand-in of module.name, or refuse it. */
static int
push_global(ctm_pklvm *m, const char *module, size_t nmodule,
            const char *name, size_t nname)
{
    if (name_is(module, nmodule, "tracemalloc")) {
        if (name_is(name, nname, "Snapshot")) {
            return push(m, Py_NewRef(m->cls_snapshot));
        }
        if (name_is(name, nname, "_Traces")) {
            return push(m, Py_NewRef(m->cls_traces));
        }
    }
    PyErr_Format(PyExc_ValueError,
                 "not a tracemalloc snapshot pickle: it refers to "
                 "%.100s.%.100s (offset %zu), which a snapshot does not "
                 "contain; ctracemalloc does not run code from a file",
                 module, name, m->op_offset);
    return -1;
}

static int
op_global(ctm_pklvm *m)
{
    const uint8_t *mod, *name;
    size_t nmod, nname;
    if (ctm_pkl_take_line(m, &mod, &nmod) < 0
        || ctm_pkl_take_line(m, &name, &nname) < 0) {
        return -1;
    }
    /* %.100s needs NUL-terminated strings: copy the (short) names. */
    char smod[101], sname[101];
    if (nmod > 100) {
        nmod = 100;
    }
    if (nname > 100) {
        nname = 100;
    }
    memcpy(smod, mod, nmod);
    smod[nmod] = '\0';
    memcpy(sname, name, nname);
    sname[nname] = '\0';
    return push_global(m, smod, strlen(smod), sname, strlen(sname));
}

static int
op_stack_global(ctm_pklvm *m)
{
    PyObject *name = pop(m);
    if (name == NULL) {
        return -1;
    }
    PyObject *module = pop(m);
    int rc = -1;
    if (module == NULL) {
        goto done;
    }
    if (!PyUnicode_CheckExact(module) || !PyUnicode_CheckExact(name)) {
        ctm_pkl_bad(m, "STACK_GLOBAL needs two strings");
        goto done;
    }
    Py_ssize_t nmod, nname;
    const char *smod = PyUnicode_AsUTF8AndSize(module, &nmod);
    const char *sname = smod ? PyUnicode_AsUTF8AndSize(name, &nname) : NULL;
    if (sname == NULL) {
        if (PyErr_ExceptionMatches(PyExc_UnicodeEncodeError)) {
            PyErr_Clear();
            ctm_pkl_bad(m, "a global's name is not valid UTF-8");
        }
        goto done;
    }
    rc = push_global(m, smod, (size_t)nmod, sname, (size_t)nname);
done:
    Py_XDECREF(module);
    Py_DECREF(name);
    return rc;
}

/* NEWOBJ: cls.__new__(cls, *args) for one of the two classes, with no
 * arguments (as object's default reduce writes them). */
static int
op_newobj(ctm_pklvm *m)
{
    PyObject *args = pop(m);
    if (args == NULL) {
        return -1;
    }
    PyObject *cls = pop(m);
    int rc = -1;
    if (cls == NULL) {
        goto done;
    }
    if (!PyTuple_CheckExact(args) || PyTuple_GET_SIZE(args) != 0) {
        ctm_pkl_bad(m, "a snapshot class is made with arguments");
        goto done;
    }
    PyObject **slot;
    if (cls == m->cls_snapshot) {
        slot = &m->snapshot;
    }
    else if (cls == m->cls_traces) {
        slot = &m->traces;
    }
    else {
        ctm_pkl_bad(m, "NEWOBJ of something that is not a class");
        goto done;
    }
    if (*slot != NULL) {
        ctm_pkl_bad(m, "more than one instance of a snapshot class");
        goto done;
    }
    PyObject *inst = PyDict_New();
    if (inst == NULL) {
        goto done;
    }
    *slot = Py_NewRef(inst);
    rc = push(m, inst);
done:
    Py_XDECREF(cls);
    Py_DECREF(args);
    return rc;
}

/* Set the attributes of dict state (NULL or None: none) on inst. */
static int
set_attributes(ctm_pklvm *m, PyObject *inst, PyObject *state)
{
    if (state == NULL || state == Py_None) {
        return 0;
    }
    if (!PyDict_CheckExact(state) || is_instance(m, state)) {
        return ctm_pkl_bad(m, "an object's state is not a dict");
    }
    Py_ssize_t pos = 0;
    PyObject *k, *v;
    while (PyDict_Next(state, &pos, &k, &v)) {
        if (!PyUnicode_CheckExact(k)) {
            return ctm_pkl_bad(m, "an attribute name is not a string");
        }
        if (PyDict_SetItem(inst, k, v) < 0) {
            return -1;
        }
    }
    return 0;
}

/* BUILD: state is a dict, or (dict or None, dict of slots or None). */
static int
op_build(ctm_pklvm *m)
{
    PyObject *state = pop(m);
    if (state == NULL) {
        return -1;
    }
    PyObject *inst = top(m);
    int rc = -1;
    if (inst == NULL) {
        goto done;
    }
    if (!is_instance(m, inst)) {
        ctm_pkl_bad(m, "BUILD of something that is not a snapshot object");
        goto done;
    }
    if (PyTuple_CheckExact(state) && PyTuple_GET_SIZE(state) == 2) {
        rc = set_attributes(m, inst, PyTuple_GET_ITEM(state, 0));
        if (rc == 0) {
            rc = set_attributes(m, inst, PyTuple_GET_ITEM(state, 1));
        }
    }
    else {
        rc = set_attributes(m, inst, state);
    }
done:
    Py_DECREF(state);
    return rc;
}

static int
memo_put(ctm_pklvm *m, uint64_t idx)
{
    ctm_pklmemo *mt = &m->memo;
    PyObject *obj = top(m);
    if (obj == NULL) {
        return -1;
    }
    if (idx > mt->n) {
        return ctm_pkl_bad(m, "memo index out of order");
    }
    if (idx == mt->n) {
        /* the two arrays share one capacity: the smaller of theirs */
        size_t cap_obj = mt->cap, cap_trace = mt->cap;
        if (ctm_grow((void **)&mt->obj, &cap_obj, mt->n + 1,
                     sizeof(PyObject *)) < 0
            || ctm_grow((void **)&mt->trace, &cap_trace, mt->n + 1,
                        sizeof(uint32_t)) < 0) {
            PyErr_NoMemory();
            return -1;
        }
        mt->cap = cap_obj < cap_trace ? cap_obj : cap_trace;
        mt->obj[mt->n++] = NULL;
    }
    Py_XSETREF(mt->obj[idx], Py_NewRef(obj));
    mt->trace[idx] = m->last_trace;
    return 0;
}

static int
memo_get(ctm_pklvm *m, uint64_t idx)
{
    ctm_pklmemo *mt = &m->memo;
    if (idx >= mt->n || mt->obj[idx] == NULL) {
        return ctm_pkl_bad(m, "memo index not defined");
    }
    if (mt->obj[idx] == m->trace) {
        /* a trace again: the same one, once more */
        if (ctm_rawtraces_repeat(m->rt, mt->trace[idx]) < 0) {
            return -1;
        }
        m->last_trace = mt->trace[idx];
    }
    return push(m, Py_NewRef(mt->obj[idx]));
}

/* EMPTY_LIST: is this the list of traces? */
static int
is_traces_list(const ctm_pklvm *m)
{
    return m->sink == NULL && m->traces != NULL && m->sp >= 3
           && m->stack[m->sp - 3] == m->traces
           && PyDict_CheckExact(m->stack[m->sp - 2])
           && PyUnicode_CheckExact(m->stack[m->sp - 1])
           && PyUnicode_CompareWithASCIIString(m->stack[m->sp - 1],
                                               "_traces") == 0;
}

/* TUPLE of the items above base: is it a trace of the sink? */
static int
is_trace(const ctm_pklvm *m, size_t base)
{
    return m->sink != NULL && base >= 1
           && (m->stack[base - 1] == m->sink
               || m->stack[base - 1] == m->trace);
}

static int
read_trace(ctm_pklvm *m, size_t base)
{
    Py_ssize_t k = ctm_rawtraces_count(m->rt);
    if (k >= (Py_ssize_t)UINT32_MAX) {
        return ctm_pkl_bad(m, "too many traces");
    }
    if (ctm_rawtraces_add_items(m->rt, m->stack + base,
                                (Py_ssize_t)(m->sp - base)) < 0) {
        ctm_pkl_blame_file("invalid trace");
        return -1;
    }
    drop_from(m, base);
    m->last_trace = (uint32_t)k;
    return push(m, Py_NewRef(m->trace));
}

/* APPEND(S) of the items above base to the sink. */
static int
append_traces(ctm_pklvm *m, size_t base)
{
    int rc = 0;
    for (size_t i = base; i < m->sp && rc == 0; i++) {
        if (m->stack[i] != m->trace) {
            /* a trace that TUPLE did not make: (domain, size, frames)
             * of Python 3.8 and older, or anything else */
            rc = ctm_rawtraces_add(m->rt, m->stack[i]);
        }
    }
    drop_from(m, base);
    if (rc < 0) {
        ctm_pkl_blame_file("invalid trace");
    }
    return rc;
}

/* Items stack[base..) into the list, set or dict at stack[base - 1]. */
static int
add_items(ctm_pklvm *m, size_t base, int op)
{
    PyObject *c;
    int rc = 0;
    size_t n = m->sp - base;
    if (base == 0) {
        return ctm_pkl_bad(m, "stack underflow");
    }
    switch (op) {
    case OP_APPENDS:
        if (m->stack[base - 1] == m->sink) {
            return append_traces(m, base);
        }
        c = ctm_pkl_target(m, base - 1, &PyList_Type, "APPENDS to a non-list");
        if (c == NULL) {
            return -1;
        }
        for (size_t i = base; i < m->sp && rc == 0; i++) {
            rc = PyList_Append(c, m->stack[i]);
        }
        break;
    case OP_ADDITEMS:
        c = ctm_pkl_target(m, base - 1, &PySet_Type, "ADDITEMS to a non-set");
        if (c == NULL) {
            return -1;
        }
        for (size_t i = base; i < m->sp && rc == 0; i++) {
            rc = ctm_pkl_check_key(m, m->stack[i]);
            if (rc == 0) {
                rc = PySet_Add(c, m->stack[i]);
            }
        }
        break;
    default:                    /* OP_SETITEMS */
        c = ctm_pkl_target(m, base - 1, &PyDict_Type,
                           "SETITEMS to a non-dict");
        if (c == NULL) {
            return -1;
        }
        if (n % 2) {
            return ctm_pkl_bad(m, "SETITEMS with an odd number of items");
        }
        for (size_t i = base; i < m->sp && rc == 0; i += 2) {
            rc = ctm_pkl_check_key(m, m->stack[i]);
            if (rc == 0) {
                rc = PyDict_SetItem(c, m->stack[i], m->stack[i + 1]);
            }
        }
        break;
    }
    drop_from(m, base);
    return rc;
}

/* Run one opcode; 1 at STOP. */
static int
step(ctm_pklvm *m)
{
    const uint8_t *q;
    size_t base = 0;            /* set by pop_mark */
    PyObject *a, *b, *c;
    int rc;
    m->op_offset = (size_t)(m->p - m->start);
    if (take(m, 1, &q) < 0) {
        return -1;
    }
    int op = q[0];
    switch (op) {
    case OP_PROTO:
        if (take(m, 1, &q) < 0) {
            return -1;
        }
        if (q[0] < 2 || q[0] > 5) {
            return ctm_pkl_bad(m, "unsupported pickle protocol");
        }
        return 0;
    case OP_FRAME:
        if (take(m, 8, &q) < 0) {
            return -1;
        }
        if (le(q, 8) > (uint64_t)(m->end - m->p)) {
            return ctm_pkl_truncated(m);
        }
        return 0;
    case OP_STOP:
        return 1;
    case OP_MARK:
        if (ctm_grow((void **)&m->marks, &m->mcap, m->nmarks + 1,
                     sizeof(size_t)) < 0) {
            PyErr_NoMemory();
            return -1;
        }
        m->marks[m->nmarks++] = m->sp;
        return 0;
    case OP_POP:
        if (m->sp > floor_of(m)) {
            Py_DECREF(m->stack[--m->sp]);
            return 0;
        }
        /* pickle pops the mark itself when nothing is above it */
        if (pop_mark(m, &base) < 0) {
            return -1;
        }
        drop_from(m, base);
        return 0;
    case OP_POP_MARK:
        if (pop_mark(m, &base) < 0) {
            return -1;
        }
        drop_from(m, base);
        return 0;
    case OP_DUP:
        a = top(m);
        return a == NULL ? -1 : push(m, Py_NewRef(a));
    case OP_NONE:
        return push(m, Py_NewRef(Py_None));
    case OP_NEWTRUE:
        return push(m, Py_NewRef(Py_True));
    case OP_NEWFALSE:
        return push(m, Py_NewRef(Py_False));
    case OP_BININT:
        if (take(m, 4, &q) < 0) {
            return -1;
        }
        return push(m, PyLong_FromLong((long)(int32_t)(uint32_t)le(q, 4)));
    case OP_BININT1:
        if (take(m, 1, &q) < 0) {
            return -1;
        }
        return push(m, PyLong_FromLong(q[0]));
    case OP_BININT2:
        if (take(m, 2, &q) < 0) {
            return -1;
        }
        return push(m, PyLong_FromLong((long)le(q, 2)));
    case OP_LONG1:
    case OP_LONG4: {
        size_t n;
        if (op == OP_LONG4 && m->end - m->p >= 4 && (m->p[3] & 0x80)) {
            return ctm_pkl_bad(m, "negative LONG4 length");
        }
        if (ctm_pkl_take_counted(m, op == OP_LONG1 ? 1 : 4, &q, &n) < 0) {
            return -1;
        }
        return push(m, ctm_pkl_long(q, n));
    }
    case OP_BINFLOAT: {
        if (take(m, 8, &q) < 0) {
            return -1;
        }
        uint64_t bits = 0;
        for (int i = 0; i < 8; i++) {
            bits = bits << 8 | q[i];            /* big-endian */
        }
        double d;
        memcpy(&d, &bits, sizeof(d));
        return push(m, PyFloat_FromDouble(d));
    }
    case OP_SHORT_BINUNICODE:
        return ctm_pkl_push_str(m, 1);
    case OP_BINUNICODE:
        return ctm_pkl_push_str(m, 4);
    case OP_BINUNICODE8:
        return ctm_pkl_push_str(m, 8);
    case OP_SHORT_BINBYTES:
        return ctm_pkl_push_bytes(m, 1);
    case OP_BINBYTES:
        return ctm_pkl_push_bytes(m, 4);
    case OP_BINBYTES8:
        return ctm_pkl_push_bytes(m, 8);
    case OP_EMPTY_TUPLE:
        return push(m, PyTuple_New(0));
    case OP_TUPLE1:
    case OP_TUPLE2:
    case OP_TUPLE3: {
        size_t n = (size_t)(op - OP_TUPLE1 + 1);
        if (m->sp < floor_of(m) + n) {
            return ctm_pkl_bad(m, "stack underflow");
        }
        return push(m, ctm_pkl_tuple_of(m, m->sp - n));
    }
    case OP_TUPLE:
        if (pop_mark(m, &base) < 0) {
            return -1;
        }
        if (is_trace(m, base)) {
            return read_trace(m, base);
        }
        return push(m, ctm_pkl_tuple_of(m, base));
    case OP_EMPTY_LIST:
        if (is_traces_list(m)) {
            /* no hint: the array grows by doubling, in place (mremap) */
            m->rt = ctm_rawtraces_new(0);
            a = m->rt ? PyList_New(0) : NULL;
            if (a == NULL) {
                return -1;
            }
            m->sink = Py_NewRef(a);
            return push(m, a);
        }
        return push(m, PyList_New(0));
    case OP_LIST:
        if (pop_mark(m, &base) < 0) {
            return -1;
        }
        a = ctm_pkl_tuple_of(m, base);
        b = a ? PySequence_List(a) : NULL;
        Py_XDECREF(a);
        return push(m, b);
    case OP_APPEND:
        if (m->sp >= 2 && m->sp - 1 > floor_of(m)
            && m->stack[m->sp - 2] == m->sink) {
            return append_traces(m, m->sp - 1);
        }
        a = pop(m);
        if (a == NULL) {
            return -1;
        }
        c = ctm_pkl_target(m, m->sp - 1, &PyList_Type, "APPEND to a non-list");
        b = c ? Py_NewRef(c) : NULL;
        rc = b ? PyList_Append(b, a) : -1;
        Py_XDECREF(b);
        Py_DECREF(a);
        return rc;
    case OP_APPENDS:
    case OP_SETITEMS:
    case OP_ADDITEMS:
        if (pop_mark(m, &base) < 0) {
            return -1;
        }
        return add_items(m, base, op);
    case OP_EMPTY_DICT:
        return push(m, PyDict_New());
    case OP_DICT:
        /* As "{ (items SETITEMS": a new dict below the items. */
        if (pop_mark(m, &base) < 0) {
            return -1;
        }
        a = PyDict_New();
        if (a == NULL || push(m, a) < 0) {
            return -1;
        }
        memmove(m->stack + base + 1, m->stack + base,
                (m->sp - 1 - base) * sizeof(PyObject *));
        m->stack[base] = a;
        return add_items(m, base + 1, OP_SETITEMS);
    case OP_SETITEM:
        b = pop(m);
        if (b == NULL) {
            return -1;
        }
        a = pop(m);
        if (a == NULL) {
            Py_DECREF(b);
            return -1;
        }
        c = ctm_pkl_target(m, m->sp - 1, &PyDict_Type,
                           "SETITEM to a non-dict");
        rc = c ? ctm_pkl_check_key(m, a) : -1;
        if (rc == 0) {
            rc = PyDict_SetItem(c, a, b);
        }
        Py_DECREF(a);
        Py_DECREF(b);
        return rc;
    case OP_EMPTY_SET:
        return push(m, PySet_New(NULL));
    case OP_FROZENSET:
        if (pop_mark(m, &base) < 0) {
            return -1;
        }
        for (size_t i = base; i < m->sp; i++) {
            if (ctm_pkl_check_key(m, m->stack[i]) < 0) {
                return -1;
            }
        }
        a = ctm_pkl_tuple_of(m, base);
        b = a ? PyFrozenSet_New(a) : NULL;
        Py_XDECREF(a);
        return push(m, b);
    case OP_GLOBAL:
        return op_global(m);
    case OP_STACK_GLOBAL:
        return op_stack_global(m);
    case OP_NEWOBJ:
        return op_newobj(m);
    case OP_BUILD:
        return op_build(m);
    case OP_BINPUT:
        if (take(m, 1, &q) < 0) {
            return -1;
        }
        return memo_put(m, q[0]);
    case OP_LONG_BINPUT:
        if (take(m, 4, &q) < 0) {
            return -1;
        }
        return memo_put(m, le(q, 4));
    case OP_MEMOIZE:
        return memo_put(m, m->memo.n);
    case OP_BINGET:
        if (take(m, 1, &q) < 0) {
            return -1;
        }
        return memo_get(m, q[0]);
    case OP_LONG_BINGET:
        if (take(m, 4, &q) < 0) {
            return -1;
        }
        return memo_get(m, le(q, 4));
    default: {
        char what[64];
        snprintf(what, sizeof(what), "unsupported pickle opcode 0x%02x",
                 op);
        return ctm_pkl_bad(m, what);
    }
    }
}

/* The snapshot held by the Snapshot instance's attributes. */
static ctm_snapdata *
snapshot_of(ctm_pklvm *m, PyObject *result, PyObject **limit,
            PyObject **extra)
{
    if (result != m->snapshot) {
        ctm_pkl_content_error("the pickle does not hold a "
                              "tracemalloc.Snapshot");
        return NULL;
    }
    PyObject *attrs = m->snapshot;
    PyObject *traces = PyDict_GetItemString(attrs, "traces");
    if (traces == NULL || traces != m->traces) {
        ctm_pkl_content_error("the Snapshot has no traces");
        return NULL;
    }
    PyObject *raw = PyDict_GetItemString(traces, "_traces");
    if (raw == NULL || PyDict_GET_SIZE(traces) != 1
        || !(PyList_CheckExact(raw) || PyTuple_CheckExact(raw))) {
        ctm_pkl_content_error("the Snapshot's traces hold no list of traces");
        return NULL;
    }
    if (m->sink != NULL && raw != m->sink) {
        ctm_pkl_content_error("traces outside the Snapshot's list of traces");
        return NULL;
    }
    PyObject *lim = PyDict_GetItemString(attrs, "traceback_limit");
    if (lim == NULL) {
        ctm_pkl_content_error("the Snapshot has no traceback_limit");
        return NULL;
    }
    PyObject *rest = PyDict_Copy(attrs);
    if (rest == NULL || PyDict_DelItemString(rest, "traces") < 0
        || PyDict_DelItemString(rest, "traceback_limit") < 0) {
        Py_XDECREF(rest);
        return NULL;
    }
    Py_ssize_t pos = 0;
    PyObject *k, *v;
    while (PyDict_Next(rest, &pos, &k, &v)) {
        if (is_instance(m, v)) {
            Py_DECREF(rest);
            ctm_pkl_content_error("a Snapshot attribute holds a snapshot "
                                  "object");
            return NULL;
        }
    }
    ctm_snapdata *d;
    if (m->rt != NULL) {
        d = ctm_rawtraces_finish(m->rt);
        m->rt = NULL;
    }
    else {
        d = ctm_snapdata_from_raw(raw);
    }
    if (d == NULL) {
        Py_DECREF(rest);
        ctm_pkl_blame_file("invalid trace");
        return NULL;
    }
    *limit = Py_NewRef(lim);
    if (PyDict_GET_SIZE(rest) == 0) {
        Py_CLEAR(rest);
    }
    *extra = rest;
    return d;
}

ctm_snapdata *
ctm_stdpickle_load(const uint8_t *data, size_t n, PyObject **limit,
                   PyObject **extra, ctm_progress *progress)
{
    ctm_pklvm m;
    memset(&m, 0, sizeof(m));
    m.start = m.p = data;
    m.end = data + n;
    ctm_snapdata *d = NULL;
    PyObject *result = NULL;
    *limit = NULL;
    *extra = NULL;

    /* Millions of objects may be made, none of them in a cycle. */
    int paused = ctm_gc_pause();
    if (paused < 0) {
        return NULL;
    }
    m.cls_snapshot = PyObject_CallNoArgs((PyObject *)&PyBaseObject_Type);
    m.cls_traces = PyObject_CallNoArgs((PyObject *)&PyBaseObject_Type);
    m.trace = PyObject_CallNoArgs((PyObject *)&PyBaseObject_Type);
    if (m.cls_snapshot == NULL || m.cls_traces == NULL || m.trace == NULL) {
        goto done;
    }
    if (progress != NULL) {
        progress->total = n;
    }
    for (;;) {
        uint64_t parsed = (uint64_t)(m.p - m.start);
        if (progress != NULL && progress->callable != NULL
            && parsed >= progress->next
            && ctm_progress_report(progress, parsed) < 0) {
            goto done;
        }
        int rc = step(&m);
        if (rc < 0) {
            if (!PyErr_ExceptionMatches(PyExc_ValueError)) {
                ctm_pkl_blame_file("invalid content");
            }
            goto done;
        }
        if (rc == 1) {
            break;
        }
    }
    result = pop(&m);
    if (result != NULL) {
        d = snapshot_of(&m, result, limit, extra);
    }

done:
    Py_XDECREF(result);
    drop_from(&m, 0);
    ctm_pkl_memo_free(&m.memo);
    ctm_free(m.stack);
    ctm_free(m.marks);
    ctm_rawtraces_free(m.rt);
    Py_XDECREF(m.sink);
    Py_XDECREF(m.snapshot);
    Py_XDECREF(m.traces);
    Py_XDECREF(m.cls_snapshot);
    Py_XDECREF(m.cls_traces);
    Py_XDECREF(m.trace);
    ctm_gc_resume(paused);
    return d;
}
