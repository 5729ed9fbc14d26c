/* Every difference between the supported Pythons (3.9 to 3.13) lives
 * here, so that the rest of the core reads as if there were one Python.
 *
 * Frames: the tracer walks the current thread's frames without calling
 * any API that allocates (PyThreadState_GetFrame and PyFrame_GetBack make
 * frame objects on 3.11+). A frame is seen as its code object and the
 * byte offset of its current instruction, the argument PyCode_Addr2Line
 * takes, so line numbers can be resolved later, once per distinct pair.
 *
 *   3.9, 3.10   tstate->frame, f_back, f_code, f_lasti (bytes in 3.9,
 *               code units in 3.10)
 *   3.11, 3.12  tstate->cframe->current_frame, previous, f_code,
 *               prev_instr; incomplete frames skipped
 *   3.13        tstate->current_frame, previous, f_executable, instr_ptr;
 *               incomplete and C-stack frames skipped
 */
#ifndef CTM_COMPAT_H
#define CTM_COMPAT_H

#include <Python.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#if PY_VERSION_HEX < 0x03090000 || PY_VERSION_HEX >= 0x030E0000
#  error "ctracemalloc supports CPython 3.9 to 3.13"
#endif

#ifdef Py_GIL_DISABLED
#  error "ctracemalloc does not support the free-threaded build yet"
#endif

#if PY_VERSION_HEX >= 0x030B0000
#  ifndef Py_BUILD_CORE
#    define Py_BUILD_CORE 1
#  endif
#  include "internal/pycore_frame.h"
#  undef Py_BUILD_CORE
#else
#  include <frameobject.h>
#endif

#if PY_VERSION_HEX < 0x030A0000
static inline PyObject *
Py_NewRef(PyObject *obj)
{
    Py_INCREF(obj);
    return obj;
}

static inline PyObject *
Py_XNewRef(PyObject *obj)
{
    Py_XINCREF(obj);
    return obj;
}
#endif

/* Heap types whose class attributes cannot be set, as static types'
 * cannot: the flag exists from 3.10; on 3.9 a heap type is mutable. */
#ifdef Py_TPFLAGS_IMMUTABLETYPE
#  define CTM_TPFLAGS_IMMUTABLETYPE Py_TPFLAGS_IMMUTABLETYPE
#else
#  define CTM_TPFLAGS_IMMUTABLETYPE 0
#endif

/* A type that Python code cannot instantiate: a flag from 3.10; on 3.9,
 * ctm_type_disallow_instantiation clears the tp_new a heap type
 * inherits from object, once the type is made. */
#ifdef Py_TPFLAGS_DISALLOW_INSTANTIATION
#  define CTM_TPFLAGS_DISALLOW_INSTANTIATION \
    Py_TPFLAGS_DISALLOW_INSTANTIATION
#else
#  define CTM_TPFLAGS_DISALLOW_INSTANTIATION 0
#endif

static inline void
ctm_type_disallow_instantiation(PyTypeObject *type)
{
#ifdef Py_TPFLAGS_DISALLOW_INSTANTIATION
    (void)type;
#else
    type->tp_new = NULL;
#endif
}

/* PyType_FromSpecWithBases, whose bases may be NULL, a tuple or (3.9
 * takes only a tuple) a single type. */
static inline PyObject *
ctm_type_from_spec(PyType_Spec *spec, PyObject *bases)
{
#if PY_VERSION_HEX < 0x030A0000
    if (bases != NULL && !PyTuple_Check(bases)) {
        PyObject *tuple = PyTuple_Pack(1, bases);
        if (tuple == NULL) {
            return NULL;
        }
        PyObject *type = PyType_FromSpecWithBases(spec, tuple);
        Py_DECREF(tuple);
        return type;
    }
#endif
    return PyType_FromSpecWithBases(spec, bases);
}

#if PY_VERSION_HEX < 0x030D0000
#  define CTM_HAVE_REFTRACER 0
#else
#  define CTM_HAVE_REFTRACER 1
#endif

/* ---- frames ----
 *
 * The raw chain: ctm_frame_top_raw() and ctm_frame_previous() visit every
 * frame, complete or not; ctm_frame_complete() says which ones a
 * traceback counts (the stdlib's PyFrame_GetBack skips the others).
 */

#if PY_VERSION_HEX >= 0x030B0000
typedef _PyInterpreterFrame ctm_pyframe;

static inline ctm_pyframe *
ctm_frame_top_raw(PyThreadState *tstate)
{
#  if PY_VERSION_HEX >= 0x030D0000
    return tstate->current_frame;
#  else
    return tstate->cframe->current_frame;
#  endif
}

static inline ctm_pyframe *
ctm_frame_previous(ctm_pyframe *f)
{
    return f->previous;
}

/* Not a frame still running its prologue, nor (3.12+) a C-stack entry
 * frame. */
static inline int
ctm_frame_complete(ctm_pyframe *f)
{
    return !_PyFrame_IsIncomplete(f);
}

static inline PyCodeObject *
ctm_frame_code(ctm_pyframe *f)
{
#  if PY_VERSION_HEX >= 0x030D0000
    return _PyFrame_GetCode(f);
#  else
    return f->f_code;
#  endif
}

/* Byte offset of the frame's instruction, as PyCode_Addr2Line takes. */
static inline int
ctm_frame_addr(ctm_pyframe *f)
{
    return _PyInterpreterFrame_LASTI(f) * (int)sizeof(_Py_CODEUNIT);
}

#else /* 3.9, 3.10 */
typedef PyFrameObject ctm_pyframe;

static inline ctm_pyframe *
ctm_frame_top_raw(PyThreadState *tstate)
{
    return tstate->frame;
}

static inline ctm_pyframe *
ctm_frame_previous(ctm_pyframe *f)
{
    return f->f_back;
}

static inline int
ctm_frame_complete(ctm_pyframe *f)
{
    (void)f;
    return 1;
}

static inline PyCodeObject *
ctm_frame_code(ctm_pyframe *f)
{
    return f->f_code;
}

static inline int
ctm_frame_addr(ctm_pyframe *f)
{
#  if PY_VERSION_HEX >= 0x030A0000
    return f->f_lasti * (int)sizeof(_Py_CODEUNIT);
#  else
    return f->f_lasti;
#  endif
}
#endif

/* The function name a report shows for a code object's frames, borrowed
 * (a str, or something else if the object was made oddly: callers
 * check). 3.11 and later have the qualified name (Class.method,
 * outer.<locals>.inner); before, only the bare name. Read without the
 * GIL too: a code object's fields never change, and the caller knows it
 * is alive. */
static inline PyObject *
ctm_code_function(const PyCodeObject *code)
{
#if PY_VERSION_HEX >= 0x030B0000
    return code->co_qualname;
#else
    return code->co_name;
#endif
}

/* ---- the death of code objects ----
 *
 * The tracer holds no reference to the code objects of the frames it
 * interns: it learns of a code object's death, before its fields are
 * released, in one of two ways, chosen once per interpreter.
 *
 * A code watcher (3.12 and later; 8 per interpreter): code_dealloc calls
 * the watchers of the current interpreter first thing, with the object
 * whole, for every code object that dies in it, watched or not; they also
 * hear of every code object made. A callback runs with the GIL and
 * returns 0, or -1 with an exception set (reported as unraisable).
 * Nothing is allocated per code object. The interpreter forgets its
 * watchers at the end of its finalization.
 *
 *   3.12, 3.13    PyCode_AddWatcher, PY_CODE_EVENT_DESTROY
 *
 * A co_extra slot (every version; where watchers exist, when none is
 * left): code_dealloc calls the slot's free function first thing too.
 *
 *   3.9 to 3.11   _PyEval_RequestCodeExtraIndex, _PyCode_GetExtra,
 *                 _PyCode_SetExtra
 *   3.12, 3.13    PyUnstable_Eval_RequestCodeExtraIndex,
 *                 PyUnstable_Code_GetExtra, PyUnstable_Code_SetExtra
 *
 * The index is per interpreter, at most 255 of them. Setting an extra
 * may allocate from PyMem (and calls the free function on the value it
 * replaces); reading one never allocates.
 *
 * code_dealloc calls the free function of every index below the size of
 * a code object's co_extra, NULL values included, and CPython sizes a
 * new co_extra for every index handed out so far: other users would have
 * their free functions called for every code object the tracer met (for
 * Python callbacks through ctypes, even during the interpreter's final
 * collection, where CPython's test_code crashed). So a co_extra the
 * tracer creates ends at its own index: 3.9 to 3.13 lay it out as
 * (Py_ssize_t ce_size; void *ce_extras[ce_size]), in PyMem memory, and
 * CPython grows it when another index is set.
 */

/* What a code watcher hears of (ctm_code_event_is_death tells), and its
 * callback. */
#if PY_VERSION_HEX >= 0x030C0000
typedef PyCodeEvent ctm_code_event;
#else
typedef int ctm_code_event;
#endif
typedef int (*ctm_code_watcher_fn)(ctm_code_event event, PyCodeObject *code);

static inline int
ctm_code_event_is_death(ctm_code_event event)
{
#if PY_VERSION_HEX >= 0x030C0000
    return event == PY_CODE_EVENT_DESTROY;
#else
    (void)event;
    return 0;
#endif
}

/* Add a code watcher calling f to the current interpreter: its id, or -1
 * if this Python has none or none is left (no exception set). Needs the
 * GIL. */
static inline int
ctm_code_watcher_add(ctm_code_watcher_fn f)
{
#if PY_VERSION_HEX >= 0x030C0000
    int id = PyCode_AddWatcher(f);
    if (id < 0) {
        PyErr_Clear();
    }
    return id;
#else
    (void)f;
    return -1;
#endif
}

/* A co_extra index whose free function is f, or -1 if none is left (no
 * exception set). Needs the GIL. */
static inline Py_ssize_t
ctm_code_extra_index(freefunc f)
{
#if PY_VERSION_HEX >= 0x030C0000
    Py_ssize_t i = PyUnstable_Eval_RequestCodeExtraIndex(f);
#else
    Py_ssize_t i = _PyEval_RequestCodeExtraIndex(f);
#endif
    if (i < 0) {
        PyErr_Clear();
    }
    return i;
}

/* The extra of code at index (NULL: none). Never allocates. */
static inline void *
ctm_code_get_extra(PyCodeObject *code, Py_ssize_t index)
{
    void *extra = NULL;
#if PY_VERSION_HEX >= 0x030C0000
    (void)PyUnstable_Code_GetExtra((PyObject *)code, index, &extra);
#else
    (void)_PyCode_GetExtra((PyObject *)code, index, &extra);
#endif
    return extra;
}

/* Set the extra of code at index. 0, or -1 if memory ran out (no
 * exception set: the index is valid). */
static inline int
ctm_code_set_extra(PyCodeObject *code, Py_ssize_t index, void *extra)
{
    if (code->co_extra == NULL) {
        /* _PyCodeObjectExtra, internal; see above. */
        typedef struct {
            Py_ssize_t ce_size;
            void *ce_extras[1];
        } code_extra;
        size_t size = offsetof(code_extra, ce_extras)
                      + (size_t)(index + 1) * sizeof(void *);
        code_extra *e = PyMem_Malloc(size);
        if (e == NULL) {
            return -1;
        }
        memset(e, 0, size);
        e->ce_size = index + 1;
        e->ce_extras[index] = extra;
        code->co_extra = e;
        return 0;
    }
#if PY_VERSION_HEX >= 0x030C0000
    return PyUnstable_Code_SetExtra((PyObject *)code, index, extra);
#else
    return _PyCode_SetExtra((PyObject *)code, index, extra);
#endif
}

/* ---- threads ---- */

/* The thread state of the calling thread if it holds the GIL, else NULL.
 * Safe to call from any thread, with or without the GIL; never
 * allocates. */
static inline PyThreadState *
ctm_tstate_if_gil_held(void)
{
#if PY_VERSION_HEX >= 0x030C0000
    /* 3.12+: the attached thread state is thread-local, NULL while the
     * thread has released the GIL. */
    return _PyThreadState_UncheckedGet();
#else
    /* 3.9 to 3.11: the global current thread state is the GIL holder's. */
    PyThreadState *mine = PyGILState_GetThisThreadState();
    if (mine != NULL && mine == _PyThreadState_UncheckedGet()) {
        return mine;
    }
    return NULL;
#endif
}

/* ---- objects ---- */

/* Start of the memory block that holds obj: the GC header and, on 3.11+,
 * the managed dict and weakref pointers come before the object. */
static inline void *
ctm_object_block(PyObject *obj)
{
    PyTypeObject *type = Py_TYPE(obj);
    /* PyGC_Head is two words on every supported version; it is internal,
     * and so is _PyType_PreHeaderSize, whose rule this repeats. */
    size_t pre = PyType_IS_GC(type) ? 2 * sizeof(uintptr_t) : 0;
#if PY_VERSION_HEX >= 0x030C0000
    if (PyType_HasFeature(type, Py_TPFLAGS_PREHEADER)) {
        pre += 2 * sizeof(PyObject *);
    }
#elif PY_VERSION_HEX >= 0x030B0000
    if (PyType_HasFeature(type, Py_TPFLAGS_MANAGED_DICT)) {
        pre += 2 * sizeof(PyObject *);
    }
#endif
    return (char *)obj - pre;
}

/* ---- the cyclic garbage collector ---- */

/* Disable the cyclic GC: 1 if it was enabled, 0 if not, -1 on error. */
static inline int
ctm_gc_disable(void)
{
#if PY_VERSION_HEX >= 0x030A0000
    return PyGC_Disable();
#else
    PyObject *gc = PyImport_ImportModule("gc");
    if (gc == NULL) {
        return -1;
    }
    PyObject *r = PyObject_CallMethod(gc, "isenabled", NULL);
    int on = r == NULL ? -1 : PyObject_IsTrue(r);
    Py_XDECREF(r);
    if (on == 1) {
        r = PyObject_CallMethod(gc, "disable", NULL);
        on = r == NULL ? -1 : 1;
        Py_XDECREF(r);
    }
    Py_DECREF(gc);
    return on;
#endif
}

/* Enable the cyclic GC. Return 0, or -1 with an exception set. */
static inline int
ctm_gc_enable(void)
{
#if PY_VERSION_HEX >= 0x030A0000
    PyGC_Enable();
    return 0;
#else
    PyObject *gc = PyImport_ImportModule("gc");
    PyObject *r = gc ? PyObject_CallMethod(gc, "enable", NULL) : NULL;
    Py_XDECREF(gc);
    if (r == NULL) {
        return -1;
    }
    Py_DECREF(r);
    return 0;
#endif
}

#endif /* CTM_COMPAT_H */
