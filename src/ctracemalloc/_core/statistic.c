/* Statistic, StatisticDiff and _format_size: the stdlib's results of
 * Snapshot.statistics() and compare_to() as C heap types.
 *
 * Both types are records of writable attributes, kept in one array in
 * constructor order so that hash, ==, __reduce__ and the GC walk them in
 * one loop:
 *
 *   Statistic      f[0] traceback, f[1] size, f[2] count
 *   StatisticDiff  f[0] traceback, f[1] size, f[2] size_diff, f[3] count,
 *                  f[4] count_diff
 *
 * Both share one struct and one size: the two unused fields of a
 * Statistic stay NULL, so that traverse, clear and dealloc are one set
 * of functions. A field is NULL before
 * __init__ runs or after del; reading it then raises AttributeError, like
 * an unset __slots__ member.
 *
 * Text comes from Python's own % operator (PyUnicode_Format) with the
 * stdlib's format strings, so %i of a float, %+i and the like are
 * Python's by construction. _format_size does its arithmetic in C doubles
 * for exact ints and floats, which is exactly what Python's float
 * arithmetic does, and formats with PyOS_double_to_string, the function
 * behind Python's "%.1f"; any other number goes through Python's
 * operators.
 *
 * ctm_statistic_new and ctm_statistic_diff_new are the constructors the
 * snapshot analysis calls per result row: they fill the fields directly.
 */
#include "types.h"

#include <math.h>

#include "structmember.h"

enum {
    ST_TRACEBACK = 0,
    ST_SIZE = 1,
    /* Statistic */
    ST_COUNT = 2,
    /* StatisticDiff */
    SD_SIZE_DIFF = 2,
    SD_COUNT = 3,
    SD_COUNT_DIFF = 4,
    ST_MAXFIELDS = 5,
};

typedef struct {
    PyObject_HEAD
    PyObject *f[ST_MAXFIELDS];
} StatObj;

/* What differs between the two types for the generic functions. */
typedef struct {
    PyTypeObject **type;        /* &ctm_state.Statistic or .StatisticDiff */
    int nfields;
    const char *parse_format;   /* for PyArg_ParseTupleAndKeywords */
    char **kwlist;              /* field names, constructor order */
} stat_kind;

static char *statistic_fields[] = {"traceback", "size", "count", NULL};
static char *statistic_diff_fields[] = {
    "traceback", "size", "size_diff", "count", "count_diff", NULL,
};

static const stat_kind statistic_kind = {
    &ctm_state.Statistic, 3, "OOO:Statistic", statistic_fields,
};
static const stat_kind statistic_diff_kind = {
    &ctm_state.StatisticDiff, 5, "OOOOO:StatisticDiff", statistic_diff_fields,
};

/* The stdlib's format strings, interned on first use and kept for the
 * life of the process, like the module state. */
enum { FMT_STATISTIC_STR, FMT_STATISTIC_REPR, FMT_DIFF_STR, FMT_DIFF_REPR,
       NFORMATS };
static const char *const format_texts[NFORMATS] = {
    "%s: size=%s, count=%i",
    "<Statistic traceback=%r size=%i count=%i>",
    "%s: size=%s (%s), count=%i (%+i)",
    "<StatisticDiff traceback=%r size=%i (%+i) count=%i (%+i)>",
};
static PyObject *formats[NFORMATS];

/* ---------------------------------------------------------------------
 * _format_size
 * ------------------------------------------------------------------- */

static const char *const size_units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
#define NUNITS ((int)(sizeof(size_units) / sizeof(size_units[0])))

/* "%.<prec>f <unit>", with "%+" when sign is nonzero. */
static PyObject *
format_double(double size, int prec, int unit, int sign)
{
    char *text = PyOS_double_to_string(size, 'f', prec,
                                       sign ? Py_DTSF_SIGN : 0, NULL);
    if (text == NULL) {
        return NULL;
    }
    PyObject *res = PyUnicode_FromFormat("%s %s", text, size_units[unit]);
    PyMem_Free(text);
    return res;
}

/* The stdlib's loop from unit on, for a size that is a float there:
 * abs, < and /= 1024 on Python floats are these double operations. */
static PyObject *
format_size_double(double size, int unit, int sign)
{
    for (;; unit++) {
        double mag = fabs(size);
        if (mag < 100.0 && unit != 0) {
            return format_double(size, 1, unit, sign);
        }
        if (mag < 10.0 * 1024.0 || unit == NUNITS - 1) {
            return format_double(size, 0, unit, sign);
        }
        size /= 1024.0;
    }
}

/* The stdlib's loop with Python operators, for ints beyond long long and
 * any other number type (bool, Fraction, Decimal, subclasses). */
static PyObject *
format_size_generic(PyObject *size, int sign)
{
    PyObject *hundred = NULL, *limit = NULL, *divisor = NULL;
    PyObject *mag = NULL, *fmt = NULL, *unit_str = NULL, *args = NULL;
    PyObject *res = NULL;

    Py_INCREF(size);
    hundred = PyLong_FromLong(100);
    limit = PyLong_FromLong(10 * 1024);
    divisor = PyLong_FromLong(1024);
    if (hundred == NULL || limit == NULL || divisor == NULL) {
        goto done;
    }
    for (int unit = 0; unit < NUNITS; unit++) {
        const char *format = NULL;
        mag = PyNumber_Absolute(size);
        if (mag == NULL) {
            goto done;
        }
        int small = PyObject_RichCompareBool(mag, hundred, Py_LT);
        if (small < 0) {
            goto done;
        }
        if (small && unit != 0) {
            format = sign ? "%+.1f %s" : "%.1f %s";
        }
        else {
            int medium = PyObject_RichCompareBool(mag, limit, Py_LT);
            if (medium < 0) {
                goto done;
            }
            if (medium || unit == NUNITS - 1) {
                format = sign ? "%+.0f %s" : "%.0f %s";
            }
        }
        Py_CLEAR(mag);
        if (format != NULL) {
            fmt = PyUnicode_FromString(format);
            unit_str = PyUnicode_FromString(size_units[unit]);
            if (fmt == NULL || unit_str == NULL) {
                goto done;
            }
            args = PyTuple_Pack(2, size, unit_str);
            if (args == NULL) {
                goto done;
            }
            res = PyUnicode_Format(fmt, args);
            goto done;
        }
        Py_SETREF(size, PyNumber_InPlaceTrueDivide(size, divisor));
        if (size == NULL) {
            goto done;
        }
    }
    /* unreachable: the last unit always formats */
    PyErr_SetString(PyExc_SystemError, "_format_size: no unit");

done:
    Py_XDECREF(size);
    Py_XDECREF(hundred);
    Py_XDECREF(limit);
    Py_XDECREF(divisor);
    Py_XDECREF(mag);
    Py_XDECREF(fmt);
    Py_XDECREF(unit_str);
    Py_XDECREF(args);
    return res;
}

PyObject *
ctm_format_size(PyObject *size, int sign)
{
    if (PyFloat_CheckExact(size)) {
        return format_size_double(PyFloat_AS_DOUBLE(size), 0, sign);
    }
    if (PyLong_CheckExact(size)) {
        int overflow;
        long long v = PyLong_AsLongLongAndOverflow(size, &overflow);
        if (v == -1 && PyErr_Occurred()) {
            return NULL;
        }
        if (!overflow) {
            /* Bytes compare as an exact int, and a small int is exact
             * as a double for "%.0f". */
            if (v > -10 * 1024 && v < 10 * 1024) {
                return format_double((double)v, 0, 0, sign);
            }
            /* Python's int / 1024 is the correctly rounded quotient;
             * rounding v to a double and then dividing by a power of two
             * (exact, no underflow here) gives that same double. */
            return format_size_double((double)v / 1024.0, 1, sign);
        }
    }
    return format_size_generic(size, sign);
}

/* ---------------------------------------------------------------------
 * Helpers shared by the two types
 * ------------------------------------------------------------------- */

/* Field i of self, as a new reference (Python code that runs while the
 * caller uses it may delete the attribute), or NULL with AttributeError
 * when unset. */
static PyObject *
stat_field(PyObject *self, const stat_kind *kind, int i)
{
    PyObject *value = ((StatObj *)self)->f[i];
    if (value == NULL) {
        return ctm_no_attribute(self, kind->kwlist[i]);
    }
    return Py_NewRef(value);
}

/* The fields as a tuple, in constructor order. */
static PyObject *
stat_fields_tuple(PyObject *self, const stat_kind *kind)
{
    PyObject *tuple = PyTuple_New(kind->nfields);
    if (tuple == NULL) {
        return NULL;
    }
    for (int i = 0; i < kind->nfields; i++) {
        PyObject *value = stat_field(self, kind, i);
        if (value == NULL) {
            Py_DECREF(tuple);
            return NULL;
        }
        PyTuple_SET_ITEM(tuple, i, value);
    }
    return tuple;
}

static int
stat_init(PyObject *op, PyObject *args, PyObject *kwds,
          const stat_kind *kind)
{
    StatObj *self = (StatObj *)op;
    PyObject *v[ST_MAXFIELDS] = {NULL};

    if (!PyArg_ParseTupleAndKeywords(args, kwds, kind->parse_format,
                                     kind->kwlist, &v[0], &v[1], &v[2],
                                     &v[3], &v[4]))
    {
        return -1;
    }
    for (int i = 0; i < kind->nfields; i++) {
        Py_XSETREF(self->f[i], Py_NewRef(v[i]));
    }
    return 0;
}

static int
stat_traverse(PyObject *op, visitproc visit, void *arg)
{
    StatObj *self = (StatObj *)op;
    Py_VISIT(Py_TYPE(op));
    for (int i = 0; i < ST_MAXFIELDS; i++) {
        Py_VISIT(self->f[i]);
    }
    return 0;
}

static int
stat_clear(PyObject *op)
{
    StatObj *self = (StatObj *)op;
    for (int i = 0; i < ST_MAXFIELDS; i++) {
        Py_CLEAR(self->f[i]);
    }
    return 0;
}

static void
stat_dealloc(PyObject *op)
{
    PyTypeObject *tp = Py_TYPE(op);
    PyObject_GC_UnTrack(op);
    stat_clear(op);
    tp->tp_free(op);
    Py_DECREF(tp);
}

/* hash(tuple of the fields) */
static Py_hash_t
stat_hash(PyObject *op, const stat_kind *kind)
{
    PyObject *tuple = stat_fields_tuple(op, kind);
    if (tuple == NULL) {
        return -1;
    }
    Py_hash_t h = PyObject_Hash(tuple);
    Py_DECREF(tuple);
    return h;
}

/* The stdlib's __eq__ is "a.f0 == b.f0 and a.f1 == b.f1 and ...": the
 * first false comparison result, or the last one, as it is; != is the
 * default negation of __eq__; no ordering. */
static PyObject *
stat_richcompare(PyObject *self, PyObject *other, int op,
                 const stat_kind *kind)
{
    PyObject *r = NULL;

    if (op == Py_NE) {
        r = Py_TYPE(self)->tp_richcompare(self, other, Py_EQ);
        if (r == NULL || r == Py_NotImplemented) {
            return r;
        }
        int truth = PyObject_IsTrue(r);
        Py_DECREF(r);
        if (truth < 0) {
            return NULL;
        }
        return PyBool_FromLong(!truth);
    }
    if (op != Py_EQ || !PyObject_TypeCheck(other, *kind->type)) {
        Py_RETURN_NOTIMPLEMENTED;
    }
    for (int i = 0; i < kind->nfields; i++) {
        PyObject *a = stat_field(self, kind, i);
        if (a == NULL) {
            goto error;
        }
        PyObject *b = stat_field(other, kind, i);
        if (b == NULL) {
            Py_DECREF(a);
            goto error;
        }
        Py_XSETREF(r, PyObject_RichCompare(a, b, Py_EQ));
        Py_DECREF(a);
        Py_DECREF(b);
        if (r == NULL) {
            goto error;
        }
        if (i == kind->nfields - 1) {
            break;
        }
        int truth = PyObject_IsTrue(r);
        if (truth < 0) {
            goto error;
        }
        if (!truth) {
            break;
        }
    }
    return r;

error:
    Py_XDECREF(r);
    return NULL;
}

/* (type(self), fields), plus the instance __dict__ of a subclass. */
static PyObject *
stat_reduce(PyObject *self, const stat_kind *kind)
{
    return ctm_reduce_to_constructor(self, *kind->type,
                                     stat_fields_tuple(self, kind));
}

/* text + ", average=<size / count>" when count is true, else text.
 * Steals text. */
static PyObject *
append_average(PyObject *text, PyObject *self, const stat_kind *kind,
               int size_field, int count_field)
{
    PyObject *size = NULL, *count = NULL, *average = NULL;
    PyObject *avg_str = NULL, *res = NULL;

    if (text == NULL) {
        return NULL;
    }
    count = stat_field(self, kind, count_field);
    if (count == NULL) {
        goto done;
    }
    int truth = PyObject_IsTrue(count);
    if (truth <= 0) {
        res = truth < 0 ? NULL : Py_NewRef(text);
        goto done;
    }
    size = stat_field(self, kind, size_field);
    if (size == NULL) {
        goto done;
    }
    average = PyNumber_TrueDivide(size, count);
    if (average == NULL) {
        goto done;
    }
    avg_str = ctm_format_size(average, 0);
    if (avg_str == NULL) {
        goto done;
    }
    res = PyUnicode_FromFormat("%U, average=%U", text, avg_str);

done:
    Py_DECREF(text);
    Py_XDECREF(size);
    Py_XDECREF(count);
    Py_XDECREF(average);
    Py_XDECREF(avg_str);
    return res;
}

/* formats[which] % args, with the fields of self at the given indexes,
 * each replaced by _format_size(field, sign) where sizes[k] is 0 (no
 * sign) or 1 (sign), and left as it is where sizes[k] is -1. */
static PyObject *
stat_format(PyObject *self, const stat_kind *kind, int which,
            const int *fields, const int *sizes, int n)
{
    if (ctm_intern_once(&formats[which], format_texts[which]) < 0) {
        return NULL;
    }
    PyObject *fmt = formats[which];
    PyObject *args = PyTuple_New(n);
    if (args == NULL) {
        return NULL;
    }
    for (int k = 0; k < n; k++) {
        PyObject *value = stat_field(self, kind, fields[k]);
        if (value == NULL) {
            goto error;
        }
        if (sizes[k] >= 0) {
            Py_SETREF(value, ctm_format_size(value, sizes[k]));
            if (value == NULL) {
                goto error;
            }
        }
        PyTuple_SET_ITEM(args, k, value);
    }
    PyObject *res = PyUnicode_Format(fmt, args);
    Py_DECREF(args);
    return res;

error:
    Py_DECREF(args);
    return NULL;
}

/* ---------------------------------------------------------------------
 * Statistic
 * ------------------------------------------------------------------- */

PyObject *
ctm_statistic_new(PyObject *traceback, uint64_t size, uint64_t count)
{
    PyTypeObject *tp = ctm_state.Statistic;
    StatObj *self = (StatObj *)tp->tp_alloc(tp, 0);
    if (self == NULL) {
        return NULL;
    }
    self->f[ST_TRACEBACK] = Py_NewRef(traceback);
    self->f[ST_SIZE] = PyLong_FromUnsignedLongLong(size);
    self->f[ST_COUNT] = PyLong_FromUnsignedLongLong(count);
    if (self->f[ST_SIZE] == NULL || self->f[ST_COUNT] == NULL) {
        Py_DECREF(self);
        return NULL;
    }
    return (PyObject *)self;
}

static int
statistic_init(PyObject *op, PyObject *args, PyObject *kwds)
{
    return stat_init(op, args, kwds, &statistic_kind);
}

static Py_hash_t
statistic_hash(PyObject *op)
{
    return stat_hash(op, &statistic_kind);
}

static PyObject *
statistic_richcompare(PyObject *self, PyObject *other, int op)
{
    return stat_richcompare(self, other, op, &statistic_kind);
}

static PyObject *
statistic_str(PyObject *op)
{
    static const int fields[] = {ST_TRACEBACK, ST_SIZE, ST_COUNT};
    static const int sizes[] = {-1, 0, -1};
    PyObject *text = stat_format(op, &statistic_kind, FMT_STATISTIC_STR,
                                 fields, sizes, 3);
    return append_average(text, op, &statistic_kind, ST_SIZE, ST_COUNT);
}

static PyObject *
statistic_repr(PyObject *op)
{
    static const int fields[] = {ST_TRACEBACK, ST_SIZE, ST_COUNT};
    static const int sizes[] = {-1, -1, -1};
    return stat_format(op, &statistic_kind, FMT_STATISTIC_REPR, fields,
                       sizes, 3);
}

/* (size, count, traceback) */
static PyObject *
statistic_sort_key(PyObject *op, PyObject *Py_UNUSED(ignored))
{
    PyObject *f = stat_fields_tuple(op, &statistic_kind);
    if (f == NULL) {
        return NULL;
    }
    PyObject *res = PyTuple_Pack(3, PyTuple_GET_ITEM(f, ST_SIZE),
                                 PyTuple_GET_ITEM(f, ST_COUNT),
                                 PyTuple_GET_ITEM(f, ST_TRACEBACK));
    Py_DECREF(f);
    return res;
}

static PyObject *
statistic_reduce(PyObject *op, PyObject *Py_UNUSED(ignored))
{
    return stat_reduce(op, &statistic_kind);
}

static PyMethodDef statistic_methods[] = {
    {"_sort_key", statistic_sort_key, METH_NOARGS,
     "Return the key that sorts statistics: (size, count, traceback)."},
    {"__reduce__", statistic_reduce, METH_NOARGS,
     "Return the constructor call that recreates this statistic."},
    {NULL, NULL, 0, NULL},
};

static PyMemberDef statistic_members[] = {
    {"traceback", T_OBJECT_EX, offsetof(StatObj, f[ST_TRACEBACK]), 0,
     "Traceback where the memory blocks were allocated."},
    {"size", T_OBJECT_EX, offsetof(StatObj, f[ST_SIZE]), 0,
     "Total size of the memory blocks in bytes."},
    {"count", T_OBJECT_EX, offsetof(StatObj, f[ST_COUNT]), 0,
     "Number of memory blocks."},
    {NULL, 0, 0, 0, NULL},
};

static PyType_Slot statistic_slots[] = {
    {Py_tp_doc, "Statistic(traceback, size, count)\n--\n\n"
                "Statistic on the memory allocated at one place."},
    {Py_tp_new, PyType_GenericNew},
    {Py_tp_init, statistic_init},
    {Py_tp_dealloc, stat_dealloc},
    {Py_tp_traverse, stat_traverse},
    {Py_tp_clear, stat_clear},
    {Py_tp_richcompare, statistic_richcompare},
    {Py_tp_hash, statistic_hash},
    {Py_tp_str, statistic_str},
    {Py_tp_repr, statistic_repr},
    {Py_tp_methods, statistic_methods},
    {Py_tp_members, statistic_members},
    {0, NULL},
};

PyType_Spec ctm_statistic_spec = {
    .name = "ctracemalloc.Statistic",
    .basicsize = sizeof(StatObj),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .slots = statistic_slots,
};

/* ---------------------------------------------------------------------
 * StatisticDiff
 * ------------------------------------------------------------------- */

PyObject *
ctm_statistic_diff_new(PyObject *traceback, uint64_t size,
                       int64_t size_diff, uint64_t count, int64_t count_diff)
{
    PyTypeObject *tp = ctm_state.StatisticDiff;
    StatObj *self = (StatObj *)tp->tp_alloc(tp, 0);
    if (self == NULL) {
        return NULL;
    }
    self->f[ST_TRACEBACK] = Py_NewRef(traceback);
    self->f[ST_SIZE] = PyLong_FromUnsignedLongLong(size);
    self->f[SD_SIZE_DIFF] = PyLong_FromLongLong(size_diff);
    self->f[SD_COUNT] = PyLong_FromUnsignedLongLong(count);
    self->f[SD_COUNT_DIFF] = PyLong_FromLongLong(count_diff);
    for (int i = 1; i < ST_MAXFIELDS; i++) {
        if (self->f[i] == NULL) {
            Py_DECREF(self);
            return NULL;
        }
    }
    return (PyObject *)self;
}

static int
statistic_diff_init(PyObject *op, PyObject *args, PyObject *kwds)
{
    return stat_init(op, args, kwds, &statistic_diff_kind);
}

static Py_hash_t
statistic_diff_hash(PyObject *op)
{
    return stat_hash(op, &statistic_diff_kind);
}

static PyObject *
statistic_diff_richcompare(PyObject *self, PyObject *other, int op)
{
    return stat_richcompare(self, other, op, &statistic_diff_kind);
}

static PyObject *
statistic_diff_str(PyObject *op)
{
    static const int fields[] = {
        ST_TRACEBACK, ST_SIZE, SD_SIZE_DIFF, SD_COUNT, SD_COUNT_DIFF,
    };
    static const int sizes[] = {-1, 0, 1, -1, -1};
    PyObject *text = stat_format(op, &statistic_diff_kind, FMT_DIFF_STR,
                                 fields, sizes, 5);
    return append_average(text, op, &statistic_diff_kind, ST_SIZE,
                          SD_COUNT);
}

static PyObject *
statistic_diff_repr(PyObject *op)
{
    static const int fields[] = {
        ST_TRACEBACK, ST_SIZE, SD_SIZE_DIFF, SD_COUNT, SD_COUNT_DIFF,
    };
    static const int sizes[] = {-1, -1, -1, -1, -1};
    return stat_format(op, &statistic_diff_kind, FMT_DIFF_REPR, fields,
                       sizes, 5);
}

/* (abs(size_diff), size, abs(count_diff), count, traceback) */
static PyObject *
statistic_diff_sort_key(PyObject *op, PyObject *Py_UNUSED(ignored))
{
    PyObject *f, *abs_size_diff = NULL, *abs_count_diff = NULL;
    PyObject *res = NULL;

    f = stat_fields_tuple(op, &statistic_diff_kind);
    if (f == NULL) {
        return NULL;
    }
    abs_size_diff = PyNumber_Absolute(PyTuple_GET_ITEM(f, SD_SIZE_DIFF));
    if (abs_size_diff == NULL) {
        goto done;
    }
    abs_count_diff = PyNumber_Absolute(PyTuple_GET_ITEM(f, SD_COUNT_DIFF));
    if (abs_count_diff == NULL) {
        goto done;
    }
    res = PyTuple_Pack(5, abs_size_diff, PyTuple_GET_ITEM(f, ST_SIZE),
                       abs_count_diff, PyTuple_GET_ITEM(f, SD_COUNT),
                       PyTuple_GET_ITEM(f, ST_TRACEBACK));

done:
    Py_DECREF(f);
    Py_XDECREF(abs_size_diff);
    Py_XDECREF(abs_count_diff);
    return res;
}

static PyObject *
statistic_diff_reduce(PyObject *op, PyObject *Py_UNUSED(ignored))
{
    return stat_reduce(op, &statistic_diff_kind);
}

static PyMethodDef statistic_diff_methods[] = {
    {"_sort_key", statistic_diff_sort_key, METH_NOARGS,
     "Return the key that sorts differences: (abs(size_diff), size, "
     "abs(count_diff), count, traceback)."},
    {"__reduce__", statistic_diff_reduce, METH_NOARGS,
     "Return the constructor call that recreates this difference."},
    {NULL, NULL, 0, NULL},
};

static PyMemberDef statistic_diff_members[] = {
    {"traceback", T_OBJECT_EX, offsetof(StatObj, f[ST_TRACEBACK]), 0,
     "Traceback where the memory blocks were allocated."},
    {"size", T_OBJECT_EX, offsetof(StatObj, f[ST_SIZE]), 0,
     "Total size of the memory blocks in bytes in the new snapshot."},
    {"size_diff", T_OBJECT_EX, offsetof(StatObj, f[SD_SIZE_DIFF]), 0,
     "Difference of total size between the old and the new snapshot."},
    {"count", T_OBJECT_EX, offsetof(StatObj, f[SD_COUNT]), 0,
     "Number of memory blocks in the new snapshot."},
    {"count_diff", T_OBJECT_EX, offsetof(StatObj, f[SD_COUNT_DIFF]), 0,
     "Difference of number of memory blocks between the old and the new "
     "snapshot."},
    {NULL, 0, 0, 0, NULL},
};

static PyType_Slot statistic_diff_slots[] = {
    {Py_tp_doc, "StatisticDiff(traceback, size, size_diff, count, "
                "count_diff)\n--\n\n"
                "Difference of the memory allocated at one place between "
                "an old and\na new snapshot."},
    {Py_tp_new, PyType_GenericNew},
    {Py_tp_init, statistic_diff_init},
    {Py_tp_dealloc, stat_dealloc},
    {Py_tp_traverse, stat_traverse},
    {Py_tp_clear, stat_clear},
    {Py_tp_richcompare, statistic_diff_richcompare},
    {Py_tp_hash, statistic_diff_hash},
    {Py_tp_str, statistic_diff_str},
    {Py_tp_repr, statistic_diff_repr},
    {Py_tp_methods, statistic_diff_methods},
    {Py_tp_members, statistic_diff_members},
    {0, NULL},
};

PyType_Spec ctm_statistic_diff_spec = {
    .name = "ctracemalloc.StatisticDiff",
    .basicsize = sizeof(StatObj),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .slots = statistic_diff_slots,
};
