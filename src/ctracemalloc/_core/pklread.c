/* The stdlib's snapshot pickle (pklops.h), read without unpickling:
 * ctm_stdpickle_load.
 *
 * The machine below runs the opcodes that carry data (None, bools, ints,
 * floats, str, bytes, tuples, lists, dicts, sets, the memo, frames) and
 * knows two classes, Snapshot and _Traces of the module tracemalloc,
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
#include "internal.h"
#include "pklops.h"

#include <stdio.h>
#include <string.h>

/* The memo: an object per index, or for a trace read into rt the
 * shared object `trace` and the trace's number in rt. */
typedef struct {
    size_t n, cap;              /* indexes given so far: 0 .. n - 1 */
    PyObject **obj;             /* strong references or NULL */
    uint32_t *trace;
} memo_t;

typedef struct {
    const uint8_t *start, *p, *end;
    size_t op_offset;           /* of the opcode being run */
    PyObject **stack;           /* strong references */
    size_t sp, scap;
    size_t *marks;              /* stack heights */
    size_t nmarks, mcap;
    memo_t memo;
    /* The two classes are these stand-ins (fresh objects that nothing
     * else in the file can be); their instances are attribute dicts. */
    PyObject *cls_snapshot, *cls_traces;
    PyObject *snapshot, *traces;        /* strong */
    /* The list that becomes _traces: the one EMPTY_LIST makes right
     * after the key '_traces' of the _Traces state. Its traces are not
     * made: TUPLE gives their items straight to rt, which builds the
     * snapshot as the file is read, and leaves the shared object
     * `trace` in their place; APPEND(S) to the sink drop it. For a
     * trace pickled once and referenced again, memo.trace says which
     * trace of rt a memo index holds. */
    PyObject *sink;                     /* strong */
    PyObject *trace;
    ctm_rawtraces *rt;
    uint32_t last_trace;                /* the trace `trace` last stood
                                         * for */
} machine;

static int
bad(machine *m, const char *what)
{
    PyErr_Format(PyExc_ValueError,
                 "corrupted snapshot pickle: %s (offset %zu)", what,
                 m->op_offset);
    return -1;
}

/* Replace the error being raised (not MemoryError) by a ValueError
 * that says the file is at fault, caused by it. */
static void
blame_file(const char *what)
{
    if (PyErr_ExceptionMatches(PyExc_MemoryError)) {
        return;
    }
    PyObject *type, *val, *tb;
    PyErr_Fetch(&type, &val, &tb);
    PyErr_NormalizeException(&type, &val, &tb);
    if (tb != NULL) {
        PyException_SetTraceback(val, tb);
    }
    PyErr_Format(PyExc_ValueError, "corrupted snapshot pickle: %s: %S",
                 what, val);
    PyObject *type2, *val2, *tb2;
    PyErr_Fetch(&type2, &val2, &tb2);
    PyErr_NormalizeException(&type2, &val2, &tb2);
    PyException_SetCause(val2, val);            /* steals val */
    PyErr_Restore(type2, val2, tb2);
    Py_XDECREF(type);
    Py_XDECREF(tb);
}

static void
content_error(const char *what)
{
    PyErr_Format(PyExc_ValueError, "corrupted snapshot pickle: %s", what);
}

static int
truncated(machine *m)
{
    PyErr_Format(PyExc_ValueError,
                 "truncated snapshot pickle: it ends inside the opcode at "
                 "offset %zu", m->op_offset);
    return -1;
}

/* The next n bytes of the opcode's argument. */
static int
take(machine *m, size_t n, const uint8_t **out)
{
    if ((size_t)(m->end - m->p) < n) {
        return truncated(m);
    }
    *out = m->p;
    m->p += n;
    return 0;
}

/* Push obj (a new reference, stolen; NULL: the error of making it). */
static int
push(machine *m, PyObject *obj)
{
    if (obj == NULL) {
        return -1;
    }
    if (ctm_grow((void **)&m->stack, &m->scap, m->sp + 1,
                 sizeof(PyObject *)) < 0) {
        Py_DECREF(obj);
        PyErr_NoMemory();
        return -1;
    }
    m->stack[m->sp++] = obj;
    return 0;
}

/* The lowest stack index above the innermost mark. */
static size_t
floor_of(const machine *m)
{
    return m->nmarks ? m->marks[m->nmarks - 1] : 0;
}

/* Pop the top (a new reference), which must be above the mark. */
static PyObject *
pop(machine *m)
{
    if (m->sp <= floor_of(m)) {
        bad(m, "stack underflow");
        return NULL;
    }
    return m->stack[--m->sp];
}

/* The top, borrowed, which must be above the mark. */
static PyObject *
top(machine *m)
{
    if (m->sp <= floor_of(m)) {
        bad(m, "stack underflow");
        return NULL;
    }
    return m->stack[m->sp - 1];
}

/* Remove the innermost mark: the items above it are stack[*base ..
 * m->sp), still owned by the stack. */
static int
pop_mark(machine *m, size_t *base)
{
    if (m->nmarks == 0) {
        return bad(m, "no mark on the stack");
    }
    *base = m->marks[--m->nmarks];
    return 0;
}

static void
drop_from(machine *m, size_t base)
{
    while (m->sp > base) {
        Py_DECREF(m->stack[--m->sp]);
    }
}

static int
is_instance(const machine *m, PyObject *obj)
{
    return obj != NULL && (obj == m->snapshot || obj == m->traces);
}

/* A stack item that an operation mutates: an exact type, and not the
 * attribute dict of an instance. */
static PyObject *
target(machine *m, size_t index, PyTypeObject *type, const char *what)
{
    if (index < floor_of(m) || index >= m->sp) {
        bad(m, "stack underflow");
        return NULL;
    }
    PyObject *obj = m->stack[index];
    if (Py_TYPE(obj) != type || is_instance(m, obj)) {
        bad(m, what);
        return NULL;
    }
    return obj;
}

static PyObject *
tuple_of(machine *m, size_t base)
{
    size_t n = m->sp - base;
    PyObject *t = PyTuple_New((Py_ssize_t)n);
    if (t == NULL) {
        return NULL;
    }
    for (size_t i = 0; i < n; i++) {
        PyTuple_SET_ITEM(t, (Py_ssize_t)i, m->stack[base + i]);
    }
    m->sp = base;
    return t;
}

/* Little-endian two's complement int of n bytes. */
static PyObject *
long_from_bytes(const uint8_t *q, size_t n)
{
    if (n == 0) {
        return PyLong_FromLong(0);
    }
    if (n <= 8) {
        uint64_t u = 0;
        for (size_t i = 0; i < n; i++) {
            u |= (uint64_t)q[i] << (8 * i);
        }
        if (n < 8 && (q[n - 1] & 0x80)) {
            u |= ~(uint64_t)0 << (8 * n);       /* sign extension */
        }
        return PyLong_FromLongLong((long long)u);
    }
    if (n == 9 && q[8] == 0) {
        uint64_t u = 0;
        for (size_t i = 0; i < 8; i++) {
            u |= (uint64_t)q[i] << (8 * i);
        }
        return PyLong_FromUnsignedLongLong(u);
    }
    /* Larger: no snapshot field is, but a user attribute may be. */
    PyObject *bytes = PyBytes_FromStringAndSize((const char *)q,
                                                (Py_ssize_t)n);
    if (bytes == NULL) {
        return NULL;
    }
    PyObject *args = Py_BuildValue("(Ns)", bytes, "little");
    PyObject *kwargs = args ? Py_BuildValue("{sO}", "signed", Py_True)
                            : NULL;
    PyObject *from_bytes = kwargs ? PyObject_GetAttrString(
                                        (PyObject *)&PyLong_Type,
                                        "from_bytes")
                                  : NULL;
    PyObject *res = from_bytes ? PyObject_Call(from_bytes, args, kwargs)
                               : NULL;
    Py_XDECREF(from_bytes);
    Py_XDECREF(kwargs);
    Py_XDECREF(args);
    return res;
}

static uint64_t
le(const uint8_t *q, size_t n)
{
    uint64_t v = 0;
    for (size_t i = 0; i < n; i++) {
        v |= (uint64_t)q[i] << (8 * i);
    }
    return v;
}

/* A length-prefixed argument: the length in lenbytes, then the data. */
static int
take_counted(machine *m, size_t lenbytes, const uint8_t **data, size_t *n)
{
    const uint8_t *q;
    if (take(m, lenbytes, &q) < 0) {
        return -1;
    }
    uint64_t len = le(q, lenbytes);
    if (len > (uint64_t)(m->end - m->p)) {
        return truncated(m);
    }
    *n = (size_t)len;
    return take(m, *n, data);
}

static int
push_str(machine *m, size_t lenbytes)
{
    const uint8_t *q;
    size_t n;
    if (take_counted(m, lenbytes, &q, &n) < 0) {
        return -1;
    }
    PyObject *s = PyUnicode_DecodeUTF8((const char *)q, (Py_ssize_t)n,
                                       "surrogatepass");
    if (s == NULL && PyErr_ExceptionMatches(PyExc_UnicodeDecodeError)) {
        PyErr_Clear();
        return bad(m, "a string is not valid UTF-8");
    }
    return push(m, s);
}

static int
push_bytes(machine *m, size_t lenbytes)
{
    const uint8_t *q;
    size_t n;
    if (take_counted(m, lenbytes, &q, &n) < 0) {
        return -1;
    }
    return push(m, PyBytes_FromStringAndSize((const char *)q,
                                             (Py_ssize_t)n));
}

/* One line of a GLOBAL argument, without its newline. */
static int
take_line(machine *m, const uint8_t **line, size_t *n)
{
    const uint8_t *nl = memchr(m->p, '\n', (size_t)(m->end - m->p));
    if (nl == NULL) {
        return truncated(m);
    }
    *line = m->p;
    *n = (size_t)(nl - m->p);
    m->p = nl + 1;
    return 0;
}

static int
name_is(const char *s, size_t n, const char *want)
{
    return n == strlen(want) && memcmp(s, want, n) == 0;
}

/* Push the stand-in of module.name, or refuse it. */
static int
push_global(machine *m, const char *module, size_t nmodule,
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
op_global(machine *m)
{
    const uint8_t *mod, *name;
    size_t nmod, nname;
    if (take_line(m, &mod, &nmod) < 0 || take_line(m, &name, &nname) < 0) {
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
op_stack_global(machine *m)
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
        bad(m, "STACK_GLOBAL needs two strings");
        goto done;
    }
    Py_ssize_t nmod, nname;
    const char *smod = PyUnicode_AsUTF8AndSize(module, &nmod);
    const char *sname = smod ? PyUnicode_AsUTF8AndSize(name, &nname) : NULL;
    if (sname == NULL) {
        if (PyErr_ExceptionMatches(PyExc_UnicodeEncodeError)) {
            PyErr_Clear();
            bad(m, "a global's name is not valid UTF-8");
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
op_newobj(machine *m)
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
        bad(m, "a snapshot class is made with arguments");
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
        bad(m, "NEWOBJ of something that is not a class");
        goto done;
    }
    if (*slot != NULL) {
        bad(m, "more than one instance of a snapshot class");
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
set_attributes(machine *m, PyObject *inst, PyObject *state)
{
    if (state == NULL || state == Py_None) {
        return 0;
    }
    if (!PyDict_CheckExact(state) || is_instance(m, state)) {
        return bad(m, "an object's state is not a dict");
    }
    Py_ssize_t pos = 0;
    PyObject *k, *v;
    while (PyDict_Next(state, &pos, &k, &v)) {
        if (!PyUnicode_CheckExact(k)) {
            return bad(m, "an attribute name is not a string");
        }
        if (PyDict_SetItem(inst, k, v) < 0) {
            return -1;
        }
    }
    return 0;
}

/* BUILD: state is a dict, or (dict or None, dict of slots or None). */
static int
op_build(machine *m)
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
        bad(m, "BUILD of something that is not a snapshot object");
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

static void
memo_free(memo_t *mt)
{
    for (size_t i = 0; i < mt->n; i++) {
        Py_XDECREF(mt->obj[i]);
    }
    ctm_free(mt->obj);
    ctm_free(mt->trace);
}

static int
memo_put(machine *m, uint64_t idx)
{
    memo_t *mt = &m->memo;
    PyObject *obj = top(m);
    if (obj == NULL) {
        return -1;
    }
    if (idx > mt->n) {
        return bad(m, "memo index out of order");
    }
    if (idx == mt->n) {
        if (mt->n == mt->cap) {
            size_t ncap = mt->cap ? mt->cap * 2 : 1024;
            PyObject **objs = ctm_realloc(mt->obj, ncap * sizeof(PyObject *));
            if (objs == NULL) {
                PyErr_NoMemory();
                return -1;
            }
            mt->obj = objs;
            uint32_t *trace = ctm_realloc(mt->trace, ncap * sizeof(uint32_t));
            if (trace == NULL) {
                PyErr_NoMemory();
                return -1;
            }
            mt->trace = trace;
            mt->cap = ncap;
        }
        mt->obj[mt->n++] = NULL;
    }
    Py_XSETREF(mt->obj[idx], Py_NewRef(obj));
    mt->trace[idx] = m->last_trace;
    return 0;
}

static int
memo_get(machine *m, uint64_t idx)
{
    memo_t *mt = &m->memo;
    if (idx >= mt->n || mt->obj[idx] == NULL) {
        return bad(m, "memo index not defined");
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
is_traces_list(const machine *m)
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
is_trace(const machine *m, size_t base)
{
    return m->sink != NULL && base >= 1
           && (m->stack[base - 1] == m->sink
               || m->stack[base - 1] == m->trace);
}

static int
read_trace(machine *m, size_t base)
{
    Py_ssize_t k = ctm_rawtraces_count(m->rt);
    if (k >= (Py_ssize_t)UINT32_MAX) {
        return bad(m, "too many traces");
    }
    if (ctm_rawtraces_add_items(m->rt, m->stack + base,
                                (Py_ssize_t)(m->sp - base)) < 0) {
        blame_file("invalid trace");
        return -1;
    }
    drop_from(m, base);
    m->last_trace = (uint32_t)k;
    return push(m, Py_NewRef(m->trace));
}

/* APPEND(S) of the items above base to the sink. */
static int
append_traces(machine *m, size_t base)
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
        blame_file("invalid trace");
    }
    return rc;
}

/* A dict key or set item must not nest tuples deeply: hashing a tuple
 * recurses into its items without a depth limit, and a file can nest a
 * million tuples in a million bytes. (A frozenset's hash does not
 * recurse: its items were checked when it was made.) */
#define MAX_KEY_DEPTH 64

static int
shallow(PyObject *key, int depth)
{
    if (!PyTuple_CheckExact(key)) {
        return 1;
    }
    if (depth >= MAX_KEY_DEPTH) {
        return 0;
    }
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(key); i++) {
        if (!shallow(PyTuple_GET_ITEM(key, i), depth + 1)) {
            return 0;
        }
    }
    return 1;
}

static int
check_key(machine *m, PyObject *key)
{
    return shallow(key, 0) ? 0 : bad(m, "a dict key nests too deeply");
}

/* Items stack[base..) into the list, set or dict at stack[base - 1]. */
static int
add_items(machine *m, size_t base, int op)
{
    PyObject *c;
    int rc = 0;
    size_t n = m->sp - base;
    if (base == 0) {
        return bad(m, "stack underflow");
    }
    switch (op) {
    case OP_APPENDS:
        if (m->stack[base - 1] == m->sink) {
            return append_traces(m, base);
        }
        c = target(m, base - 1, &PyList_Type, "APPENDS to a non-list");
        if (c == NULL) {
            return -1;
        }
        for (size_t i = base; i < m->sp && rc == 0; i++) {
            rc = PyList_Append(c, m->stack[i]);
        }
        break;
    case OP_ADDITEMS:
        c = target(m, base - 1, &PySet_Type, "ADDITEMS to a non-set");
        if (c == NULL) {
            return -1;
        }
        for (size_t i = base; i < m->sp && rc == 0; i++) {
            rc = check_key(m, m->stack[i]);
            if (rc == 0) {
                rc = PySet_Add(c, m->stack[i]);
            }
        }
        break;
    default:                    /* OP_SETITEMS */
        c = target(m, base - 1, &PyDict_Type, "SETITEMS to a non-dict");
        if (c == NULL) {
            return -1;
        }
        if (n % 2) {
            return bad(m, "SETITEMS with an odd number of items");
        }
        for (size_t i = base; i < m->sp && rc == 0; i += 2) {
            rc = check_key(m, m->stack[i]);
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
step(machine *m)
{
    const uint8_t *q;
    size_t base;
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
            return bad(m, "unsupported pickle protocol");
        }
        return 0;
    case OP_FRAME:
        if (take(m, 8, &q) < 0) {
            return -1;
        }
        if (le(q, 8) > (uint64_t)(m->end - m->p)) {
            return truncated(m);
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
            return bad(m, "negative LONG4 length");
        }
        if (take_counted(m, op == OP_LONG1 ? 1 : 4, &q, &n) < 0) {
            return -1;
        }
        return push(m, long_from_bytes(q, n));
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
        return push_str(m, 1);
    case OP_BINUNICODE:
        return push_str(m, 4);
    case OP_BINUNICODE8:
        return push_str(m, 8);
    case OP_SHORT_BINBYTES:
        return push_bytes(m, 1);
    case OP_BINBYTES:
        return push_bytes(m, 4);
    case OP_BINBYTES8:
        return push_bytes(m, 8);
    case OP_EMPTY_TUPLE:
        return push(m, PyTuple_New(0));
    case OP_TUPLE1:
    case OP_TUPLE2:
    case OP_TUPLE3: {
        size_t n = (size_t)(op - OP_TUPLE1 + 1);
        if (m->sp < floor_of(m) + n) {
            return bad(m, "stack underflow");
        }
        return push(m, tuple_of(m, m->sp - n));
    }
    case OP_TUPLE:
        if (pop_mark(m, &base) < 0) {
            return -1;
        }
        if (is_trace(m, base)) {
            return read_trace(m, base);
        }
        return push(m, tuple_of(m, base));
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
        a = tuple_of(m, base);
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
        c = target(m, m->sp - 1, &PyList_Type, "APPEND to a non-list");
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
        c = target(m, m->sp - 1, &PyDict_Type, "SETITEM to a non-dict");
        rc = c ? check_key(m, a) : -1;
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
            if (check_key(m, m->stack[i]) < 0) {
                return -1;
            }
        }
        a = tuple_of(m, base);
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
        return bad(m, what);
    }
    }
}

/* The snapshot held by the Snapshot instance's attributes. */
static ctm_snapdata *
snapshot_of(machine *m, PyObject *result, PyObject **limit,
            PyObject **extra)
{
    if (result != m->snapshot) {
        content_error("the pickle does not hold a tracemalloc.Snapshot");
        return NULL;
    }
    PyObject *attrs = m->snapshot;
    PyObject *traces = PyDict_GetItemString(attrs, "traces");
    if (traces == NULL || traces != m->traces) {
        content_error("the Snapshot has no traces");
        return NULL;
    }
    PyObject *raw = PyDict_GetItemString(traces, "_traces");
    if (raw == NULL || PyDict_GET_SIZE(traces) != 1
        || !(PyList_CheckExact(raw) || PyTuple_CheckExact(raw))) {
        content_error("the Snapshot's traces hold no list of traces");
        return NULL;
    }
    if (m->sink != NULL && raw != m->sink) {
        content_error("traces outside the Snapshot's list of traces");
        return NULL;
    }
    PyObject *lim = PyDict_GetItemString(attrs, "traceback_limit");
    if (lim == NULL) {
        content_error("the Snapshot has no traceback_limit");
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
            content_error("a Snapshot attribute holds a snapshot object");
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
        blame_file("invalid trace");
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
    machine m;
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
                blame_file("invalid content");
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
    memo_free(&m.memo);
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
