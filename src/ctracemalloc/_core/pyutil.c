/* The module state, and the helpers that the Python types share.
 *
 * The state lives here, below the type files, so that every type file
 * can reach the others' types through it without calling up into the
 * module: the module's init fills it, in order, and nothing else
 * writes it.
 */
#include "util.h"

ctm_module_state ctm_state;

int
ctm_add_type(PyObject *module, PyType_Spec *spec, PyObject *bases,
             PyTypeObject **slot)
{
    PyObject *type = ctm_type_from_spec(spec, bases);
    if (type == NULL) {
        return -1;
    }
    Py_XSETREF(*slot, (PyTypeObject *)type);
    return PyModule_AddType(module, (PyTypeObject *)type);
}

int
ctm_intern_once(PyObject **slot, const char *text)
{
    if (*slot == NULL) {
        *slot = PyUnicode_InternFromString(text);
    }
    return *slot ? 0 : -1;
}

PyObject *
ctm_no_attribute(PyObject *self, const char *name)
{
    /* the short name, as Python's message for an unset slot of the
     * stdlib's classes has it */
    PyErr_Format(PyExc_AttributeError, "'%s' object has no attribute '%s'",
                 _PyType_Name(Py_TYPE(self)), name);
    return NULL;
}

PyObject *
ctm_reduce_to_constructor(PyObject *self, PyTypeObject *base,
                          PyObject *args)
{
    static PyObject *str_dict;
    PyObject *dict = NULL;
    PyObject *res = NULL;

    if (args == NULL) {
        return NULL;
    }
    if (ctm_intern_once(&str_dict, "__dict__") < 0) {
        Py_DECREF(args);
        return NULL;
    }
    if (Py_TYPE(self) != base) {
        dict = PyObject_GetAttr(self, str_dict);
        if (dict == NULL) {
            if (!PyErr_ExceptionMatches(PyExc_AttributeError)) {
                goto done;
            }
            PyErr_Clear();
        }
        else if (PyDict_Check(dict) && PyDict_GET_SIZE(dict) == 0) {
            Py_CLEAR(dict);
        }
    }
    if (dict != NULL) {
        res = PyTuple_Pack(3, (PyObject *)Py_TYPE(self), args, dict);
    }
    else {
        res = PyTuple_Pack(2, (PyObject *)Py_TYPE(self), args);
    }

done:
    Py_XDECREF(dict);
    Py_DECREF(args);
    return res;
}

int
ctm_sequence_bounds(PyObject *start_obj, PyObject *stop_obj, Py_ssize_t n,
                    Py_ssize_t *start, Py_ssize_t *stop)
{
    *start = 0;
    *stop = PY_SSIZE_T_MAX;
    if (start_obj != NULL) {
        *start = PyNumber_AsSsize_t(start_obj, PyExc_OverflowError);
        if (*start == -1 && PyErr_Occurred()) {
            return -1;
        }
        if (*start < 0) {
            *start = *start + n > 0 ? *start + n : 0;
        }
    }
    if (stop_obj != NULL && stop_obj != Py_None) {
        *stop = PyNumber_AsSsize_t(stop_obj, PyExc_OverflowError);
        if (*stop == -1 && PyErr_Occurred()) {
            return -1;
        }
        if (*stop < 0) {
            *stop += n;
        }
    }
    return 0;
}

int
ctm_gc_pause(void)
{
    return ctm_gc_disable();
}

void
ctm_gc_resume(int paused)
{
    if (paused != 1) {
        return;
    }
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    if (ctm_gc_enable() < 0) {
        PyErr_WriteUnraisable(NULL);
    }
    PyErr_Restore(type, value, tb);
}
