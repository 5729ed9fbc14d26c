"""ctracemalloc's C API: a C extension, built here against the installed
header (ctracemalloc.get_include()), reports its own blocks with and
without the GIL, as extensions do with CPython's PyTraceMalloc_Track."""
import os
import subprocess
import sys
import sysconfig

import pytest

from tmhelpers import get_frames, raw_frames

pytestmark = pytest.mark.ctm_only

DOMAIN = 4242

SOURCE = r"""
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include "ctracemalloc.h"

static const CTraceMalloc_CAPI *api;

/* track(ptr, size, release_gil) -> the C API's return code */
static PyObject *
track(PyObject *self, PyObject *args)
{
    unsigned long long ptr;
    Py_ssize_t size;
    int release_gil, rc;
    if (!PyArg_ParseTuple(args, "Knp", &ptr, &size, &release_gil)) {
        return NULL;
    }
    if (release_gil) {
        Py_BEGIN_ALLOW_THREADS
        rc = api->track(DOMAIN, (uintptr_t)ptr, (size_t)size);
        Py_END_ALLOW_THREADS
    }
    else {
        rc = api->track(DOMAIN, (uintptr_t)ptr, (size_t)size);
    }
    return PyLong_FromLong(rc);
}

static PyObject *
untrack(PyObject *self, PyObject *args)
{
    unsigned long long ptr;
    int release_gil, rc;
    if (!PyArg_ParseTuple(args, "Kp", &ptr, &release_gil)) {
        return NULL;
    }
    if (release_gil) {
        Py_BEGIN_ALLOW_THREADS
        rc = api->untrack(DOMAIN, (uintptr_t)ptr);
        Py_END_ALLOW_THREADS
    }
    else {
        rc = api->untrack(DOMAIN, (uintptr_t)ptr);
    }
    return PyLong_FromLong(rc);
}

static PyObject *
version(PyObject *self, PyObject *unused)
{
    return PyLong_FromLong(api->version);
}

static PyMethodDef methods[] = {
    {"track", track, METH_VARARGS, NULL},
    {"untrack", untrack, METH_VARARGS, NULL},
    {"version", version, METH_NOARGS, NULL},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef def = {
    PyModuleDef_HEAD_INIT, "capi_user", NULL, -1, methods,
};

PyMODINIT_FUNC
PyInit_capi_user(void)
{
    api = CTraceMalloc_Import();
    if (api == NULL) {
        return NULL;
    }
    return PyModule_Create(&def);
}
"""


@pytest.fixture(scope="module")
def capi_user(tmp_path_factory):
    import ctracemalloc

    folder = tmp_path_factory.mktemp("capi")
    source = folder / "capi_user.c"
    source.write_text(SOURCE.replace("DOMAIN", str(DOMAIN)))
    target = folder / ("capi_user" + sysconfig.get_config_var("EXT_SUFFIX"))
    cc = os.environ.get("CC", "gcc")
    cmd = [cc, "-shared", "-fPIC", "-Wall", "-Wextra", "-Werror",
           "-Wno-unused-parameter", "-Wno-missing-field-initializers",
           "-I", sysconfig.get_paths()["include"],
           "-I", ctracemalloc.get_include(),
           str(source), "-o", str(target)]
    subprocess.run(cmd, check=True, capture_output=True)
    sys.path.insert(0, str(folder))
    try:
        import capi_user
    finally:
        sys.path.remove(str(folder))
    return capi_user


def domain_traces(ctm):
    snapshot = ctm.take_snapshot()
    return snapshot.filter_traces([ctm.DomainFilter(True, DOMAIN)]).traces


def test_header_is_installed(ctm):
    assert os.path.isfile(os.path.join(ctm.get_include(), "ctracemalloc.h"))


def test_capi_version(ctm, capi_user):
    assert capi_user.version() == 1


@pytest.mark.parametrize("release_gil", [False, True],
                         ids=["gil", "no-gil"])
def test_capi_track_and_untrack(ctm, capi_user, release_gil):
    ctm.start(5)
    frames = get_frames(5, 1)
    assert capi_user.track(0x10000, 777, release_gil) == 0
    traces = domain_traces(ctm)
    assert [(t.domain, t.size) for t in traces] == [(DOMAIN, 777)]
    # the traceback of the Python code that called into the extension,
    # with or without the GIL
    assert raw_frames(traces[0].traceback) == frames

    assert capi_user.untrack(0x10000, release_gil) == 0
    assert len(domain_traces(ctm)) == 0
    # untracking again is harmless
    assert capi_user.untrack(0x10000, release_gil) == 0


def test_capi_track_again_replaces(ctm, capi_user):
    ctm.start(1)
    capi_user.track(0x20000, 10, False)
    capi_user.track(0x20000, 30, True)
    traces = domain_traces(ctm)
    assert [t.size for t in traces] == [30]


def test_capi_not_tracing(ctm, capi_user):
    assert capi_user.track(0x30000, 10, False) == -1
    assert capi_user.untrack(0x30000, True) == -1
    ctm.start()
    ctm.stop()
    assert capi_user.track(0x30000, 10, True) == -1
