/* A load: ctm_load (a file) and ctm_load_bytes (memory) tell the two
 * snapshot formats apart by their first byte and read either.
 *
 * Invariants: a file that starts with 0x80 (a pickle's PROTO opcode,
 * where our magic has 0x89) is the stdlib's pickle, read whole and
 * parsed from memory by pklread.c; anything else goes to our format's
 * reader (ffread.c), which rejects what is not ours. On success *limit
 * and *extra are new references (extra NULL if none); on failure both
 * are NULL and nothing is left open.
 */
#include "formats.h"

#include <stdint.h>

/* The stdlib's pickle, read whole. (Not mapped: a file that another
 * process truncates while it is read would kill this one with SIGBUS.)
 * The parse takes longer than the read: the progress reports the
 * parse. */
static ctm_snapdata *
load_pickle(ctm_input *in, PyObject **limit, PyObject **extra)
{
    ctm_progress progress = in->progress;
    in->progress.callable = NULL;
    if (ctm_input_fill(in, SIZE_MAX) < 0) {
        return NULL;
    }
    return ctm_stdpickle_load(in->data + in->pos, in->len - in->pos, limit,
                              extra, &progress);
}

static ctm_snapdata *
load(ctm_input *in, PyObject **limit, PyObject **extra)
{
    *limit = NULL;
    *extra = NULL;
    int rc = ctm_input_fill(in, 1);
    if (rc < 0) {
        return NULL;
    }
    if (rc == 0 && in->data[in->pos] == 0x80) {
        return load_pickle(in, limit, extra);
    }
    return ctm_ffread(in, limit, extra);
}

ctm_snapdata *
ctm_load_bytes(const char *buf, Py_ssize_t len, PyObject **limit,
               PyObject **extra)
{
    ctm_input in;
    ctm_input_from_memory(&in, buf, len);
    return load(&in, limit, extra);
}

ctm_snapdata *
ctm_load(PyObject *path, PyObject **limit, PyObject **extra,
         PyObject *progress)
{
    ctm_input in;
    *limit = NULL;
    *extra = NULL;
    if (ctm_input_open(&in, path, progress) < 0) {
        return NULL;
    }
    ctm_snapdata *d = load(&in, limit, extra);
    if (ctm_input_close(&in, d == NULL) < 0) {
        ctm_snapdata_free(d);
        Py_CLEAR(*limit);
        Py_CLEAR(*extra);
        d = NULL;
    }
    return d;
}
