/* The stdlib's snapshot pickle (pklops.h), written: ctm_stdpickle_dumps,
 * a pickle that the stdlib's Snapshot.load reads.
 *
 * Writing emits that structure directly with protocol 2 to 4 opcodes
 * under a protocol 4 header (every Python 3.4+ reads it), each string,
 * frame and traceback once, memoised with explicit indexes. The rest of
 * the Snapshot's state (traceback_limit and the user's attributes, which
 * may be any picklable objects) is a dict pickled by the pickle module
 * with protocol 3 and applied by a second BUILD; its memo indexes
 * restart from 0 and overwrite entries the writer no longer needs.
 *
 * A sampled snapshot: the stdlib's format has no sampling interval, so
 * each trace is written with its estimated size (Trace.size), and the
 * file is an exact snapshot of the samples. Its sizes are the sampled
 * snapshot's, but its counts are the numbers of samples, not the
 * estimated numbers of blocks; loading it back (with either module)
 * makes an exact snapshot (sample_interval 0). True sizes with no
 * interval would be worse: every size far too small.
 */
#include "formats.h"
#include "pklops.h"

#include <string.h>

typedef struct {
    PyObject *bytes;
    size_t used, cap;
    uint32_t nmemo;
    /* memo index + 1 of each string, frame and traceback, 0: not yet */
    uint32_t *string_memo, *frame_memo, *tb_memo;
} pwriter;

/* Room for n more bytes: the next byte to write. */
static uint8_t *
room(pwriter *w, size_t n)
{
    if (w->cap - w->used < n) {
        size_t ncap = w->cap * 2 > w->used + n ? w->cap * 2 : w->used + n;
        if (ncap > PY_SSIZE_T_MAX) {
            PyErr_NoMemory();
            return NULL;
        }
        if (_PyBytes_Resize(&w->bytes, (Py_ssize_t)ncap) < 0) {
            return NULL;
        }
        w->cap = ncap;
    }
    return (uint8_t *)PyBytes_AS_STRING(w->bytes) + w->used;
}

static void
done_at(pwriter *w, const uint8_t *q)
{
    w->used = (size_t)(q - (const uint8_t *)PyBytes_AS_STRING(w->bytes));
}

static uint8_t *
put_le(uint8_t *q, uint64_t v, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        *q++ = (uint8_t)(v >> (8 * i));
    }
    return q;
}

/* An int as pickle writes it: at most 11 bytes. */
static uint8_t *
put_int(uint8_t *q, int64_t v, int is_unsigned)
{
    uint64_t u = (uint64_t)v;
    if (is_unsigned || v >= 0) {
        if (u < 0x100) {
            *q++ = OP_BININT1;
            return put_le(q, u, 1);
        }
        if (u < 0x10000) {
            *q++ = OP_BININT2;
            return put_le(q, u, 2);
        }
        if (u <= INT32_MAX) {
            *q++ = OP_BININT;
            return put_le(q, u, 4);
        }
        /* LONG1: the fewest bytes whose top bit is clear */
        size_t n = 1;
        while (n < 8 && (u >> (8 * n - 1)) != 0) {
            n++;
        }
        if (n == 8 && (u >> 63) != 0) {
            n = 9;
        }
        *q++ = OP_LONG1;
        *q++ = (uint8_t)n;
        q = put_le(q, u, n < 8 ? n : 8);
        if (n == 9) {
            *q++ = 0;
        }
        return q;
    }
    if (v >= INT32_MIN) {
        *q++ = OP_BININT;
        return put_le(q, u, 4);
    }
    *q++ = OP_LONG1;
    *q++ = 8;
    return put_le(q, u, 8);
}

/* Memoise the top of the stack under the next index: *slot gets it + 1. */
static uint8_t *
put_memo(pwriter *w, uint8_t *q, uint32_t *slot)
{
    uint32_t idx = w->nmemo++;
    *slot = idx + 1;
    if (idx < 0x100) {
        *q++ = OP_BINPUT;
        return put_le(q, idx, 1);
    }
    *q++ = OP_LONG_BINPUT;
    return put_le(q, idx, 4);
}

static uint8_t *
get_memo(uint8_t *q, uint32_t slot)
{
    uint32_t idx = slot - 1;
    if (idx < 0x100) {
        *q++ = OP_BINGET;
        return put_le(q, idx, 1);
    }
    *q++ = OP_LONG_BINGET;
    return put_le(q, idx, 4);
}

static int
write_raw(pwriter *w, const void *p, size_t n)
{
    uint8_t *q = room(w, n);
    if (q == NULL) {
        return -1;
    }
    memcpy(q, p, n);
    w->used += n;
    return 0;
}

static int
write_string(pwriter *w, const ctm_snapdata *d, uint32_t s)
{
    uint8_t *q;
    if (w->string_memo[s]) {
        if ((q = room(w, 5)) == NULL) {
            return -1;
        }
        done_at(w, get_memo(q, w->string_memo[s]));
        return 0;
    }
    const char *p;
    Py_ssize_t n;
    PyObject *tmp;
    if (ctm_str_utf8(d->strings[s], &p, &n, &tmp) < 0) {
        return -1;
    }
    q = room(w, (size_t)n + 9 + 5);
    if (q != NULL) {
        if (n < 0x100) {
            *q++ = OP_SHORT_BINUNICODE;
            q = put_le(q, (uint64_t)n, 1);
        }
        else if ((uint64_t)n <= UINT32_MAX) {
            *q++ = OP_BINUNICODE;
            q = put_le(q, (uint64_t)n, 4);
        }
        else {
            *q++ = OP_BINUNICODE8;
            q = put_le(q, (uint64_t)n, 8);
        }
        memcpy(q, p, (size_t)n);
        q = put_memo(w, q + n, &w->string_memo[s]);
        done_at(w, q);
    }
    Py_XDECREF(tmp);
    return q == NULL ? -1 : 0;
}

/* Push the raw frames tuple of traceback tb. */
static int
write_frames(pwriter *w, const ctm_snapdata *d, uint32_t tb)
{
    uint8_t *q;
    if (w->tb_memo[tb]) {
        if ((q = room(w, 5)) == NULL) {
            return -1;
        }
        done_at(w, get_memo(q, w->tb_memo[tb]));
        return 0;
    }
    const ctm_snap_tb *t = &d->tracebacks[tb];
    if (t->nframe > 3 && write_raw(w, "(", 1) < 0) {
        return -1;
    }
    for (uint32_t i = 0; i < t->nframe; i++) {
        uint32_t f = d->refs[t->first + i];
        if (w->frame_memo[f]) {
            if ((q = room(w, 5)) == NULL) {
                return -1;
            }
            done_at(w, get_memo(q, w->frame_memo[f]));
            continue;
        }
        if (write_string(w, d, d->frames[f].filename) < 0
            || (q = room(w, 11 + 1 + 5)) == NULL) {
            return -1;
        }
        q = put_int(q, d->frames[f].lineno, 0);
        *q++ = OP_TUPLE2;
        done_at(w, put_memo(w, q, &w->frame_memo[f]));
    }
    if ((q = room(w, 1 + 5)) == NULL) {
        return -1;
    }
    static const uint8_t ops[4] = {OP_EMPTY_TUPLE, OP_TUPLE1, OP_TUPLE2,
                                   OP_TUPLE3};
    *q++ = t->nframe <= 3 ? ops[t->nframe] : OP_TUPLE;
    done_at(w, put_memo(w, q, &w->tb_memo[tb]));
    return 0;
}

/* Traces in batches of 1000 (pickle's batch): "(" traces "e". */
#define BATCH 1000

static int
write_traces(pwriter *w, const ctm_snapdata *d)
{
    for (Py_ssize_t i = 0; i < d->ntraces; i++) {
        const ctm_snap_trace *tr = &d->traces[i];
        uint8_t *q;
        if (i % BATCH == 0 && write_raw(w, "(", 1) < 0) {
            return -1;
        }
        if ((q = room(w, 1 + 11 + 11)) == NULL) {
            return -1;
        }
        *q++ = OP_MARK;
        q = put_int(q, tr->domain, 1);
        q = put_int(q, (int64_t)ctm_snap_size(d, tr), 1);
        done_at(w, q);
        if (write_frames(w, d, tr->traceback) < 0
            || (q = room(w, 11 + 2)) == NULL) {
            return -1;
        }
        uint32_t total = d->tracebacks[tr->traceback].total_nframe;
        if (total == CTM_TOTAL_NONE) {
            *q++ = OP_NONE;
        }
        else {
            q = put_int(q, total, 1);
        }
        *q++ = OP_TUPLE;
        if (i % BATCH == BATCH - 1 || i == d->ntraces - 1) {
            *q++ = OP_APPENDS;
        }
        done_at(w, q);
    }
    return 0;
}

/* The body of a protocol 3 pickle of {'traceback_limit': limit,
 * **extra}: without its PROTO and STOP. */
static PyObject *
state_pickle(PyObject *limit, PyObject *extra)
{
    PyObject *state = PyDict_New();
    PyObject *res = NULL;
    if (state == NULL
        || PyDict_SetItemString(state, "traceback_limit", limit) < 0
        || (extra != NULL && PyDict_Update(state, extra) < 0)) {
        goto done;
    }
    PyObject *pickle = PyImport_ImportModule("pickle");
    if (pickle == NULL) {
        goto done;
    }
    res = PyObject_CallMethod(pickle, "dumps", "Oi", state, 3);
    Py_DECREF(pickle);
    if (res == NULL) {
        goto done;
    }
    const char *p = PyBytes_Check(res) ? PyBytes_AS_STRING(res) : NULL;
    Py_ssize_t n = p ? PyBytes_GET_SIZE(res) : 0;
    if (n < 3 || (uint8_t)p[0] != OP_PROTO || p[1] != 3
        || p[n - 1] != OP_STOP) {
        PyErr_SetString(PyExc_RuntimeError,
                        "pickle.dumps did not return a protocol 3 pickle");
        Py_CLEAR(res);
        goto done;
    }
    Py_SETREF(res, PyBytes_FromStringAndSize(p + 2, n - 3));
done:
    Py_XDECREF(state);
    return res;
}

PyObject *
ctm_stdpickle_dumps(const ctm_snapdata *d, PyObject *limit, PyObject *extra)
{
    pwriter w;
    memset(&w, 0, sizeof(w));
    PyObject *state = NULL;
    PyObject *res = NULL;

    if ((uint64_t)d->nstrings + (uint64_t)d->nframes
        + (uint64_t)d->ntracebacks >= UINT32_MAX) {
        PyErr_SetString(PyExc_OverflowError,
                        "too many tracebacks for a pickle's memo");
        return NULL;
    }
    state = state_pickle(limit, extra);
    w.string_memo = ctm_calloc((size_t)d->nstrings, sizeof(uint32_t));
    w.frame_memo = ctm_calloc((size_t)d->nframes, sizeof(uint32_t));
    w.tb_memo = ctm_calloc((size_t)d->ntracebacks, sizeof(uint32_t));
    if (state == NULL) {
        goto done;
    }
    if (w.string_memo == NULL || w.frame_memo == NULL || w.tb_memo == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    /* A first guess: about 12 bytes per trace, as the stdlib's. */
    w.cap = 4096 + 12 * (size_t)d->ntraces + 8 * (size_t)d->nrefs;
    w.bytes = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)w.cap);
    if (w.bytes == NULL) {
        goto done;
    }
    static const char head[] =
        "\x80\x04"                      /* PROTO 4 */
        "c" "tracemalloc\nSnapshot\n"    /* GLOBAL */
        ")\x81"                         /* EMPTY_TUPLE NEWOBJ */
        "}\x8c\x06traces"               /* EMPTY_DICT 'traces' */
        "c" "tracemalloc\n_Traces\n)\x81" /* a _Traces */
        "}\x8c\x07_traces]";            /* EMPTY_DICT '_traces' [] */
    static const char tail[] = "sbsb";  /* SETITEM BUILD SETITEM BUILD */
    if (write_raw(&w, head, sizeof(head) - 1) < 0
        || write_traces(&w, d) < 0
        || write_raw(&w, tail, sizeof(tail) - 1) < 0
        || write_raw(&w, PyBytes_AS_STRING(state),
                     (size_t)PyBytes_GET_SIZE(state)) < 0
        || write_raw(&w, "b.", 2) < 0) {        /* BUILD STOP */
        goto done;
    }
    if (_PyBytes_Resize(&w.bytes, (Py_ssize_t)w.used) < 0) {
        goto done;
    }
    res = w.bytes;
    w.bytes = NULL;
done:
    Py_XDECREF(w.bytes);
    Py_XDECREF(state);
    ctm_free(w.string_memo);
    ctm_free(w.frame_memo);
    ctm_free(w.tb_memo);
    return res;
}
