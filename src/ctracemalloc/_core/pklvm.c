/* The stdlib's snapshot pickle's machine (pklvm.h), the parts that do
 * not know the snapshot: its errors, the values of the data opcodes
 * (ints, str, bytes, tuples, GLOBAL's lines), the check of dict keys and
 * set items, and the memo's release. pklread.c runs the opcodes.
 *
 * Invariants: a length is checked against the bytes left before
 * anything is allocated for it; a str is UTF-8 with surrogatepass; no
 * value runs code from the file.
 */
#include "pklvm.h"

#include <string.h>

int
ctm_pkl_bad(ctm_pklvm *m, const char *what)
{
    PyErr_Format(PyExc_ValueError,
                 "corrupted snapshot pickle: %s (offset %zu)", what,
                 m->op_offset);
    return -1;
}

/* Replace the error being raised (not MemoryError) by a ValueError
 * that says the file is at fault, caused by it. */
void
ctm_pkl_blame_file(const char *what)
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

void
ctm_pkl_content_error(const char *what)
{
    PyErr_Format(PyExc_ValueError, "corrupted snapshot pickle: %s", what);
}

int
ctm_pkl_truncated(ctm_pklvm *m)
{
    PyErr_Format(PyExc_ValueError,
                 "truncated snapshot pickle: it ends inside the opcode at "
                 "offset %zu", m->op_offset);
    return -1;
}

/* A stack item that an operation mutates: an exact type, and not the
 * attribute dict of an instance. */
PyObject *
ctm_pkl_target(ctm_pklvm *m, size_t index, PyTypeObject *type,
               const char *what)
{
    if (index < floor_of(m) || index >= m->sp) {
        ctm_pkl_bad(m, "stack underflow");
        return NULL;
    }
    PyObject *obj = m->stack[index];
    if (Py_TYPE(obj) != type || is_instance(m, obj)) {
        ctm_pkl_bad(m, what);
        return NULL;
    }
    return obj;
}

PyObject *
ctm_pkl_tuple_of(ctm_pklvm *m, size_t base)
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
PyObject *
ctm_pkl_long(const uint8_t *q, size_t n)
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

/* A length-prefixed argument: the length in lenbytes, then the data. */
int
ctm_pkl_take_counted(ctm_pklvm *m, size_t lenbytes, const uint8_t **data,
                     size_t *n)
{
    const uint8_t *q;
    if (take(m, lenbytes, &q) < 0) {
        return -1;
    }
    uint64_t len = le(q, lenbytes);
    if (len > (uint64_t)(m->end - m->p)) {
        return ctm_pkl_truncated(m);
    }
    *n = (size_t)len;
    return take(m, *n, data);
}

int
ctm_pkl_push_str(ctm_pklvm *m, size_t lenbytes)
{
    const uint8_t *q;
    size_t n;
    if (ctm_pkl_take_counted(m, lenbytes, &q, &n) < 0) {
        return -1;
    }
    PyObject *s = PyUnicode_DecodeUTF8((const char *)q, (Py_ssize_t)n,
                                       "surrogatepass");
    if (s == NULL && PyErr_ExceptionMatches(PyExc_UnicodeDecodeError)) {
        PyErr_Clear();
        return ctm_pkl_bad(m, "a string is not valid UTF-8");
    }
    return push(m, s);
}

int
ctm_pkl_push_bytes(ctm_pklvm *m, size_t lenbytes)
{
    const uint8_t *q;
    size_t n;
    if (ctm_pkl_take_counted(m, lenbytes, &q, &n) < 0) {
        return -1;
    }
    return push(m, PyBytes_FromStringAndSize((const char *)q,
                                             (Py_ssize_t)n));
}

/* One line of a GLOBAL argument, without its newline. */
int
ctm_pkl_take_line(ctm_pklvm *m, const uint8_t **line, size_t *n)
{
    const uint8_t *nl = memchr(m->p, '\n', (size_t)(m->end - m->p));
    if (nl == NULL) {
        return ctm_pkl_truncated(m);
    }
    *line = m->p;
    *n = (size_t)(nl - m->p);
    m->p = nl + 1;
    return 0;
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

int
ctm_pkl_check_key(ctm_pklvm *m, PyObject *key)
{
    return shallow(key, 0) ? 0 : ctm_pkl_bad(m, "a dict key nests too deeply");
}

void
ctm_pkl_memo_free(ctm_pklmemo *mt)
{
    for (size_t i = 0; i < mt->n; i++) {
        Py_XDECREF(mt->obj[i]);
    }
    ctm_free(mt->obj);
    ctm_free(mt->trace);
}
