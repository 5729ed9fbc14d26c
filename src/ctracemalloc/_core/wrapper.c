/* The machinery that Frame, Traceback and Trace share: objects whose
 * fields are the stdlib classes' __slots__.
 *
 *  - A slot may be unset (NULL) before __init__ runs or after del;
 *    reading it raises the AttributeError of an unset __slots__ member
 *    (ctm_slot_value), so no reader assumes a value, let alone a tuple.
 *  - ctm_slot_richcompare compares one slot in __eq__ and __lt__ and
 *    derives the other comparisons as functools.total_ordering does.
 *  - A wrapper (ctm_wrapper_object: Frame, Trace) holds one raw tuple;
 *    the ctm_wrapper_ functions make, initialise, traverse and free one.
 *    The types are heap types and take part in the cyclic GC.
 */
#include "types.h"

/* A slot's value as a new reference, or NULL with the AttributeError that
 * reading an unset __slots__ member raises. New, not borrowed: Python code
 * that runs while the caller uses the value (a __hash__, an __eq__) may
 * assign or delete the slot. */
PyObject *
ctm_slot_value(PyObject *self, PyObject *value, const char *name)
{
    if (value == NULL) {
        return ctm_no_attribute(self, name);
    }
    return Py_NewRef(value);
}

/* seq[i] for a small constant i: the stdlib's self._frame[0] and the like,
 * with a fast path for the tuples that are nearly always there. */
PyObject *
ctm_item_at(PyObject *seq, Py_ssize_t i)
{
    if (PyTuple_CheckExact(seq) && i < PyTuple_GET_SIZE(seq)) {
        return Py_NewRef(PyTuple_GET_ITEM(seq, i));
    }
    PyObject *index = PyLong_FromSsize_t(i);
    if (index == NULL) {
        return NULL;
    }
    PyObject *item = PyObject_GetItem(seq, index);
    Py_DECREF(index);
    return item;
}

/* Bool of the negated truth of r, or NULL if r is NULL or its truth
 * fails. Consumes r. */
static PyObject *
not_of(PyObject *r)
{
    if (r == NULL) {
        return NULL;
    }
    int truth = PyObject_IsTrue(r);
    Py_DECREF(r);
    if (truth < 0) {
        return NULL;
    }
    return PyBool_FromLong(!truth);
}

/* The comparisons of a class with __slots__ that compares one slot (at
 * offset in the instance) in __eq__ and __lt__, returning NotImplemented
 * for instances that are not of base, and decorated with
 * functools.total_ordering when ordered is nonzero. != is the default
 * object.__ne__: the negation of type(self).__eq__. */
PyObject *
ctm_slot_richcompare(PyObject *self, PyObject *other, int op,
                     PyTypeObject *base, Py_ssize_t offset, const char *name,
                     int ordered)
{
    PyObject *a, *b, *r;
    int truth;

    switch (op) {
    case Py_EQ:
    case Py_LT:
        if (op == Py_LT && !ordered) {
            Py_RETURN_NOTIMPLEMENTED;
        }
        if (!PyObject_TypeCheck(other, base)) {
            Py_RETURN_NOTIMPLEMENTED;
        }
        a = ctm_slot_value(self, *(PyObject **)((char *)self + offset), name);
        if (a == NULL) {
            return NULL;
        }
        b = ctm_slot_value(other, *(PyObject **)((char *)other + offset),
                           name);
        if (b == NULL) {
            Py_DECREF(a);
            return NULL;
        }
        r = PyObject_RichCompare(a, b, op);
        Py_DECREF(a);
        Py_DECREF(b);
        return r;
    case Py_NE:
        r = Py_TYPE(self)->tp_richcompare(self, other, Py_EQ);
        if (r == Py_NotImplemented) {
            return r;
        }
        return not_of(r);
    default:
        break;
    }

    if (!ordered) {
        Py_RETURN_NOTIMPLEMENTED;
    }
    /* total_ordering derives >, <= and >= from type(self).__lt__, whose
     * slot is tp_richcompare whether or not a subclass overrides it. */
    r = Py_TYPE(self)->tp_richcompare(self, other, Py_LT);
    if (r == NULL || r == Py_NotImplemented) {
        return r;
    }
    truth = PyObject_IsTrue(r);
    if (truth < 0) {
        Py_DECREF(r);
        return NULL;
    }
    switch (op) {
    case Py_GT:
        /* not (self < other) and self != other */
        Py_DECREF(r);
        if (truth) {
            Py_RETURN_FALSE;
        }
        return PyObject_RichCompare(self, other, Py_NE);
    case Py_LE:
        /* (self < other) or self == other, which keeps the object */
        if (truth) {
            return r;
        }
        Py_DECREF(r);
        return PyObject_RichCompare(self, other, Py_EQ);
    default:
        /* Py_GE: not (self < other) */
        Py_DECREF(r);
        return PyBool_FromLong(!truth);
    }
}

/* A new wrapper of the exact type tp holding raw. */
PyObject *
ctm_wrapper_new(PyTypeObject *tp, PyObject *raw, PyObject *names)
{
    ctm_wrapper_object *self = (ctm_wrapper_object *)tp->tp_alloc(tp, 0);
    if (self == NULL) {
        return NULL;
    }
    self->raw = Py_NewRef(raw);
    if (names != NULL && names != Py_None) {
        self->names = Py_NewRef(names);
        /* a reference, so that no other raw can take its address */
        self->named = Py_NewRef(raw);
    }
    return (PyObject *)self;
}

PyObject *
ctm_wrapper_names(PyObject *op)
{
    ctm_wrapper_object *self = (ctm_wrapper_object *)op;
    return self->names != NULL && self->raw == self->named ? self->names
                                                           : NULL;
}

/* __init__(raw): fmt and kwlist name the argument as the stdlib does. */
int
ctm_wrapper_init(PyObject *op, PyObject *args, PyObject *kwds,
                 const char *fmt, char **kwlist)
{
    PyObject *raw;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, fmt, kwlist, &raw)) {
        return -1;
    }
    Py_XSETREF(((ctm_wrapper_object *)op)->raw, Py_NewRef(raw));
    return 0;
}

int
ctm_wrapper_traverse(PyObject *op, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(op));
    Py_VISIT(((ctm_wrapper_object *)op)->raw);
    /* Not names nor named: the snapshot data's, which hold only str,
     * int, None and tuples of them, so no cycle runs through them. */
    return 0;
}

int
ctm_wrapper_clear(PyObject *op)
{
    Py_CLEAR(((ctm_wrapper_object *)op)->raw);
    Py_CLEAR(((ctm_wrapper_object *)op)->names);
    Py_CLEAR(((ctm_wrapper_object *)op)->named);
    return 0;
}

void
ctm_wrapper_dealloc(PyObject *op)
{
    PyTypeObject *tp = Py_TYPE(op);
    PyObject_GC_UnTrack(op);
    ctm_wrapper_clear(op);
    tp->tp_free(op);
    Py_DECREF(tp);
}
