/* libFuzzer target for the snapshot file loader (load.c, ffread.c).
 *
 * Built with FUZZING_BUILD_MODE_UNSAFE_FOR_PRODUCTION, the loader skips
 * its checksums (so that mutations reach the parser) and never unpickles.
 * Each input is loaded twice, from memory (ctm_load_bytes) and from a
 * file (ctm_load: the streaming reader), and both must agree. An input
 * must either raise ValueError or give snapshot data that keeps every
 * invariant of snapdata.h, which the oracle below checks independently
 * (the builder of snapdata.c must find no duplicate), and that dumps and
 * loads back to the same arrays. Anything else aborts.
 *
 * See README.md beside this file for how to build and run it.
 */
#include "formats.h"

#include <stdio.h>
#include <string.h>
#include <unistd.h>

static PyObject *tmp_path;

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    Py_InitializeEx(0);
    char name[64];
    snprintf(name, sizeof(name), "/dev/shm/ctm-fuzz-%ld.bin",
             (long)getpid());
    tmp_path = PyUnicode_FromString(name);
    if (tmp_path == NULL) {
        abort();
    }
    return 0;
}

/* memcmp, but empty arrays may be NULL. */
static int
memeq(const void *a, const void *b, size_t n)
{
    return n == 0 || memcmp(a, b, n) == 0;
}

static void
fail(const char *what)
{
    fprintf(stderr, "fuzz_load: %s\n", what);
    if (PyErr_Occurred()) {
        PyErr_Print();
    }
    abort();
}

/* The invariants of snapdata.h, checked without trusting the loader. */
static void
check_invariants(const ctm_snapdata *d)
{
    ctm_builder *b = ctm_builder_new();
    if (b == NULL) {
        fail("builder");
    }
    for (Py_ssize_t i = 0; i < d->nstrings; i++) {
        if (!PyUnicode_CheckExact(d->strings[i])) {
            fail("a string is not an exact str");
        }
        if (ctm_builder_string(b, d->strings[i]) != i) {
            fail("duplicate string accepted");
        }
    }
    for (Py_ssize_t i = 0; i < d->nframes; i++) {
        const ctm_snap_frame *f = &d->frames[i];
        if ((Py_ssize_t)f->filename >= d->nstrings) {
            fail("frame filename out of range");
        }
        if (ctm_builder_frame(b, f->filename, f->lineno) != i) {
            fail("duplicate frame accepted");
        }
        if (f->function != CTM_NO_FUNCTION) {
            if ((Py_ssize_t)f->function >= d->nstrings) {
                fail("frame function out of range");
            }
            ctm_builder_frame_function(b, (uint32_t)i, f->function);
        }
    }
    for (Py_ssize_t i = 0; i < d->ntracebacks; i++) {
        const ctm_snap_tb *t = &d->tracebacks[i];
        if ((uint64_t)t->first + t->nframe > (uint64_t)d->nrefs) {
            fail("traceback refs out of range");
        }
        for (uint32_t k = 0; k < t->nframe; k++) {
            if ((Py_ssize_t)d->refs[t->first + k] >= d->nframes) {
                fail("frame reference out of range");
            }
        }
        if (ctm_builder_traceback(b, d->refs + t->first, t->nframe,
                                  t->total_nframe) != i) {
            fail("duplicate traceback accepted");
        }
    }
    for (Py_ssize_t i = 0; i < d->ntraces; i++) {
        if ((Py_ssize_t)d->traces[i].traceback >= d->ntracebacks) {
            fail("trace traceback out of range");
        }
    }
    /* The builder's arrays must equal the loaded ones, hashes included. */
    ctm_snapdata *e = ctm_builder_finish(b);
    if (e == NULL) {
        fail("builder finish");
    }
    if (e->nrefs != d->nrefs
        || !memeq(e->frames, d->frames,
                  (size_t)d->nframes * sizeof(ctm_snap_frame))
        || !memeq(e->tracebacks, d->tracebacks,
                  (size_t)d->ntracebacks * sizeof(ctm_snap_tb))
        || !memeq(e->refs, d->refs, (size_t)d->nrefs * sizeof(uint32_t))) {
        fail("loaded arrays differ from the builder's");
    }
    ctm_snapdata_free(e);
}

static int
same_data(const ctm_snapdata *a, const ctm_snapdata *b)
{
    if (a->nstrings != b->nstrings || a->nframes != b->nframes
        || a->ntracebacks != b->ntracebacks || a->nrefs != b->nrefs
        || a->ntraces != b->ntraces) {
        return 0;
    }
    for (Py_ssize_t i = 0; i < a->nstrings; i++) {
        int eq = PyUnicode_Compare(a->strings[i], b->strings[i]);
        if (eq != 0) {
            return 0;
        }
    }
    return memeq(a->frames, b->frames,
                 (size_t)a->nframes * sizeof(ctm_snap_frame))
           && memeq(a->tracebacks, b->tracebacks,
                    (size_t)a->ntracebacks * sizeof(ctm_snap_tb))
           && memeq(a->refs, b->refs, (size_t)a->nrefs * sizeof(uint32_t))
           && memeq(a->traces, b->traces,
                    (size_t)a->ntraces * sizeof(ctm_snap_trace));
}

static void
expect_value_error(void)
{
    if (!PyErr_ExceptionMatches(PyExc_ValueError)) {
        fail("an error that is not a ValueError");
    }
    PyErr_Clear();
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    PyObject *limit, *extra, *limit2, *extra2;
    ctm_snapdata *d = ctm_load_bytes((const char *)data, (Py_ssize_t)size,
                                     &limit, &extra);
    if (d == NULL) {
        expect_value_error();
    }

    /* The streaming reader must agree. */
    FILE *f = fopen(PyUnicode_AsUTF8(tmp_path), "wb");
    if (f == NULL || fwrite(data, 1, size, f) != size || fclose(f) != 0) {
        fail("cannot write the temporary file");
    }
    ctm_snapdata *fd = ctm_load(tmp_path, &limit2, &extra2, NULL);
    if (fd == NULL) {
        expect_value_error();
    }
    if ((d == NULL) != (fd == NULL)) {
        fail("memory and file loaders disagree");
    }
    if (d == NULL) {
        return 0;
    }
    if (!same_data(d, fd)) {
        fail("memory and file loaders give different data");
    }
    ctm_snapdata_free(fd);
    Py_XDECREF(limit2);
    Py_XDECREF(extra2);

    check_invariants(d);

    /* Accepted data dumps and loads back to the same arrays. */
    PyObject *bytes = ctm_dump_bytes(d, limit, extra);
    if (bytes == NULL) {
        fail("dump of loaded data");
    }
    ctm_snapdata *again = ctm_load_bytes(PyBytes_AS_STRING(bytes),
                                         PyBytes_GET_SIZE(bytes),
                                         &limit2, &extra2);
    if (again == NULL) {
        fail("reload of dumped data");
    }
    if (!same_data(d, again)) {
        fail("round trip changed the data");
    }
    ctm_snapdata_free(again);
    Py_XDECREF(limit2);
    Py_XDECREF(extra2);
    Py_DECREF(bytes);
    ctm_snapdata_free(d);
    Py_XDECREF(limit);
    Py_XDECREF(extra);
    return 0;
}
