/* ctracemalloc._nativeprobe: a shared object of its own whose calls to
 * the C allocator go through its GOT, as an extension module's do.
 *
 * The native tracer (_core/native.c) imports it at start(native=True)
 * and calls the malloc and free of its capsule to check that such calls
 * arrive. The module functions make each kind of native call on demand,
 * for the test suite: in the calling thread (which may release the GIL),
 * or in a thread of their own that has no Python thread state.
 *
 * Addresses are passed to and from Python as ints.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <dlfcn.h>
#include <malloc.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/mman.h>

#include "_core/native.h"

static void *
probe_malloc(size_t size)
{
    return malloc(size);
}

static void
probe_free(void *ptr)
{
    free(ptr);
}

static const ctm_native_probe probe = {probe_malloc, probe_free};

static PyObject *
address(void *ptr)
{
    if (ptr == NULL || ptr == MAP_FAILED) {
        return PyErr_NoMemory();
    }
    return PyLong_FromVoidPtr(ptr);
}

/* One allocator call, by name, with up to three size arguments and an
 * address: the test suite's whole interface. */
typedef enum {
    K_MALLOC, K_CALLOC, K_REALLOC, K_REALLOCARRAY, K_FREE, K_POSIX_MEMALIGN,
    K_ALIGNED_ALLOC, K_MEMALIGN, K_VALLOC, K_PVALLOC, K_MMAP, K_MUNMAP,
    K_MREMAP, K_NKINDS
} call_kind;

static const char *const kind_names[K_NKINDS] = {
    "malloc", "calloc", "realloc", "reallocarray", "free", "posix_memalign",
    "aligned_alloc", "memalign", "valloc", "pvalloc", "mmap", "munmap",
    "mremap",
};

typedef struct {
    call_kind kind;
    void *ptr;
    size_t a, b;
    void *result;
    int rc;
} call;

static void *
do_call(void *arg)
{
    call *c = arg;
    switch (c->kind) {
    case K_MALLOC: c->result = malloc(c->a); break;
    case K_CALLOC: c->result = calloc(c->a, c->b); break;
    case K_REALLOC: c->result = realloc(c->ptr, c->a); break;
    case K_REALLOCARRAY: c->result = reallocarray(c->ptr, c->a, c->b); break;
    case K_FREE: free(c->ptr); break;
    case K_POSIX_MEMALIGN: c->rc = posix_memalign(&c->result, c->a, c->b);
        break;
    case K_ALIGNED_ALLOC: c->result = aligned_alloc(c->a, c->b); break;
    case K_MEMALIGN: c->result = memalign(c->a, c->b); break;
    case K_VALLOC: c->result = valloc(c->a); break;
    case K_PVALLOC: c->result = pvalloc(c->a); break;
    case K_MMAP:
        c->result = mmap(NULL, c->a, PROT_READ | PROT_WRITE,
                         MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        break;
    case K_MUNMAP: c->rc = munmap(c->ptr, c->a); break;
    case K_MREMAP: c->result = mremap(c->ptr, c->a, c->b, MREMAP_MAYMOVE);
        break;
    default: break;
    }
    return NULL;
}

/* call(kind, ptr=0, a=0, b=0, *, thread=False, nogil=False): the result's
 * address (or None for free and munmap). thread: in a new thread
 * without a Python thread state; nogil: with the GIL released. */
static PyObject *
probe_call(PyObject *self, PyObject *args, PyObject *kwargs)
{
    (void)self;
    static char *keywords[] = {"kind", "ptr", "a", "b", "thread", "nogil",
                               NULL};
    const char *name;
    PyObject *ptr_obj = NULL;
    Py_ssize_t a = 0, b = 0;
    int thread = 0, nogil = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "s|Onn$pp:call", keywords,
                                     &name, &ptr_obj, &a, &b, &thread,
                                     &nogil)) {
        return NULL;
    }
    call c = {K_NKINDS, NULL, (size_t)a, (size_t)b, NULL, 0};
    for (int k = 0; k < K_NKINDS; k++) {
        if (strcmp(name, kind_names[k]) == 0) {
            c.kind = (call_kind)k;
        }
    }
    if (c.kind == K_NKINDS) {
        return PyErr_Format(PyExc_ValueError, "unknown call %s", name);
    }
    if (ptr_obj != NULL && ptr_obj != Py_None) {
        c.ptr = PyLong_AsVoidPtr(ptr_obj);
        if (c.ptr == NULL && PyErr_Occurred()) {
            return NULL;
        }
    }
    if (thread) {
        pthread_t t;
        int rc;
        Py_BEGIN_ALLOW_THREADS
        rc = pthread_create(&t, NULL, do_call, &c);
        if (rc == 0) {
            pthread_join(t, NULL);
        }
        Py_END_ALLOW_THREADS
        if (rc != 0) {
            return PyErr_Format(PyExc_OSError, "pthread_create: %d", rc);
        }
    }
    else if (nogil) {
        Py_BEGIN_ALLOW_THREADS
        do_call(&c);
        Py_END_ALLOW_THREADS
    }
    else {
        do_call(&c);
    }
    if (c.kind == K_FREE) {
        Py_RETURN_NONE;
    }
    if (c.kind == K_MUNMAP) {
        if (c.rc != 0) {
            return PyErr_SetFromErrno(PyExc_OSError);
        }
        Py_RETURN_NONE;
    }
    if (c.kind == K_POSIX_MEMALIGN && c.rc != 0) {
        return PyErr_NoMemory();
    }
    return address(c.result);
}

/* dlopen(path) -> handle, dlclose(handle): loads made from this object. */
static PyObject *
probe_dlopen(PyObject *self, PyObject *arg)
{
    (void)self;
    const char *path = PyUnicode_AsUTF8(arg);
    if (path == NULL) {
        return NULL;
    }
    void *handle = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (handle == NULL) {
        return PyErr_Format(PyExc_OSError, "dlopen: %s", dlerror());
    }
    return PyLong_FromVoidPtr(handle);
}

static PyObject *
probe_dlclose(PyObject *self, PyObject *arg)
{
    (void)self;
    void *handle = PyLong_AsVoidPtr(arg);
    if (handle == NULL && PyErr_Occurred()) {
        return NULL;
    }
    if (dlclose(handle) != 0) {
        return PyErr_Format(PyExc_OSError, "dlclose: %s", dlerror());
    }
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"call", (PyCFunction)(void (*)(void))probe_call,
     METH_VARARGS | METH_KEYWORDS, NULL},
    {"dlopen", probe_dlopen, METH_O, NULL},
    {"dlclose", probe_dlclose, METH_O, NULL},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT, "ctracemalloc._nativeprobe",
    "Native allocator calls from a shared object of its own (the native "
    "tracer's probe, and the test suite's).", -1, methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC
PyInit__nativeprobe(void)
{
    PyObject *m = PyModule_Create(&module_def);
    if (m == NULL) {
        return NULL;
    }
    PyObject *caps = PyCapsule_New((void *)&probe, CTM_NATIVE_PROBE_CAPSULE,
                                   NULL);
    if (caps == NULL || PyModule_AddObject(m, "probe", caps) < 0) {
        Py_XDECREF(caps);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
