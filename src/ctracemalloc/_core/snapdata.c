/* Snapshot data and its builder.
 *
 * A snapshot is five flat arrays (strings, frames, tracebacks, frame
 * references, traces) whose invariants internal.h states. The builder
 * keeps them by interning: strings, frames and tracebacks each have an
 * open-addressing index (power-of-two capacity, linear probing, at most
 * half full) of uint32 slots holding item index + 1, 0 meaning empty.
 * Items are never removed, so the indexes need no tombstones.
 *
 * Strings are compared by value (PyUnicode equality), so two equal
 * filenames from different code objects become one string; that is what
 * lets the analysis group by index instead of by value.
 */
#include "snapdata.h"

#include <string.h>

struct ctm_builder {
    ctm_snapdata d;
    size_t cap_strings, cap_frames, cap_tracebacks, cap_refs, cap_traces;
    int hold_errors;            /* see ctm_builder_hold_errors */
    int nomem;                  /* memory ran out while holding them */
    Py_hash_t *string_hashes;
    ctm_index strings_ix, frames_ix, tracebacks_ix;
};

/* Out of memory in a builder method: MemoryError, or while errors are
 * held, a note that ctm_builder_release_errors turns into one. Returns
 * -1. */
static int
builder_nomem(ctm_builder *b)
{
    if (b->hold_errors) {
        b->nomem = 1;
    }
    else {
        PyErr_NoMemory();
    }
    return -1;
}

static uint32_t
string_hash(const void *owner, uint32_t i)
{
    const ctm_builder *b = owner;
    return ctm_mix32((uint64_t)b->string_hashes[i]);
}

static uint32_t
frame_hash(const void *owner, uint32_t i)
{
    const ctm_builder *b = owner;
    const ctm_snap_frame *f = &b->d.frames[i];
    return ctm_mix32(((uint64_t)f->filename << 32) ^ (uint32_t)f->lineno);
}

static uint32_t
traceback_hash(const void *owner, uint32_t i)
{
    const ctm_builder *b = owner;
    return b->d.tracebacks[i].hash;
}

ctm_builder *
ctm_builder_new(void)
{
    ctm_builder *b = ctm_calloc(1, sizeof(*b));
    if (b == NULL) {
        PyErr_NoMemory();
    }
    return b;
}

static void
builder_release_indexes(ctm_builder *b)
{
    ctm_free(b->string_hashes);
    ctm_index_free(&b->strings_ix);
    ctm_index_free(&b->frames_ix);
    ctm_index_free(&b->tracebacks_ix);
}

void
ctm_builder_free(ctm_builder *b)
{
    if (b == NULL) {
        return;
    }
    for (Py_ssize_t i = 0; i < b->d.nstrings; i++) {
        Py_DECREF(b->d.strings[i]);
    }
    ctm_free(b->d.strings);
    ctm_free(b->d.frames);
    ctm_free(b->d.tracebacks);
    ctm_free(b->d.refs);
    ctm_free(b->d.traces);
    builder_release_indexes(b);
    ctm_free(b);
}

int64_t
ctm_builder_string(ctm_builder *b, PyObject *str)
{
    Py_hash_t h = PyObject_Hash(str);
    if (h == -1) {
        return -1;
    }
    return ctm_builder_string_hashed(b, str, h);
}

int64_t
ctm_builder_string_hashed(ctm_builder *b, PyObject *str, Py_hash_t h)
{
    if (ctm_index_reserve(&b->strings_ix, (size_t)b->d.nstrings,
                          string_hash, b) < 0) {
        return builder_nomem(b);
    }
    uint32_t mask = b->strings_ix.mask;
    uint32_t j = ctm_mix32((uint64_t)h) & mask;
    uint32_t v;
    while ((v = b->strings_ix.slots[j]) != 0) {
        PyObject *other = b->d.strings[v - 1];
        if (b->string_hashes[v - 1] == h) {
            if (other == str) {
                return v - 1;
            }
            int eq = PyUnicode_Compare(other, str);
            if (eq == 0) {
                return v - 1;
            }
            /* only a str that is not one fails (never while holding
             * errors: the tracer's filenames are str) */
            if (eq == -1 && !b->hold_errors && PyErr_Occurred()) {
                return -1;
            }
        }
        j = (j + 1) & mask;
    }
    Py_ssize_t n = b->d.nstrings;
    size_t cap = b->cap_strings;
    if (ctm_grow((void **)&b->d.strings, &cap, (size_t)n + 1,
                 sizeof(PyObject *)) < 0) {
        return builder_nomem(b);
    }
    size_t hcap = b->cap_strings;
    if (ctm_grow((void **)&b->string_hashes, &hcap, (size_t)n + 1,
                 sizeof(Py_hash_t)) < 0) {
        return builder_nomem(b);
    }
    b->cap_strings = cap < hcap ? cap : hcap;
    Py_INCREF(str);
    b->d.strings[n] = str;
    b->string_hashes[n] = h;
    b->d.nstrings = n + 1;
    b->strings_ix.slots[j] = (uint32_t)n + 1;
    return n;
}

int64_t
ctm_builder_frame(ctm_builder *b, uint32_t filename, int32_t lineno)
{
    if (ctm_index_reserve(&b->frames_ix, (size_t)b->d.nframes,
                          frame_hash, b) < 0) {
        return builder_nomem(b);
    }
    uint32_t mask = b->frames_ix.mask;
    uint32_t j = ctm_mix32(((uint64_t)filename << 32) ^ (uint32_t)lineno)
                 & mask;
    uint32_t v;
    while ((v = b->frames_ix.slots[j]) != 0) {
        const ctm_snap_frame *f = &b->d.frames[v - 1];
        if (f->filename == filename && f->lineno == lineno) {
            return v - 1;
        }
        j = (j + 1) & mask;
    }
    Py_ssize_t n = b->d.nframes;
    if (ctm_grow((void **)&b->d.frames, &b->cap_frames, n + 1,
             sizeof(ctm_snap_frame)) < 0) {
        return builder_nomem(b);
    }
    b->d.frames[n].filename = filename;
    b->d.frames[n].lineno = lineno;
    b->d.frames[n].function = CTM_NO_FUNCTION;
    b->d.nframes = n + 1;
    b->frames_ix.slots[j] = (uint32_t)n + 1;
    return n;
}

/* Whether str names a comprehension or a generator expression
 * ("<listcomp>", "f.<locals>.<genexpr>"), which on 3.9 to 3.11 has its
 * own frame on the line of the function around it. */
static int
comprehension(PyObject *str)
{
    /* Read in place: it runs under the tables lock, where allocating
     * would take it again. */
    static const char *const kinds[] = {"<listcomp>", "<dictcomp>",
                                        "<setcomp>", "<genexpr>"};
    Py_ssize_t n = PyUnicode_GET_LENGTH(str);
    for (size_t i = 0; i < sizeof(kinds) / sizeof(kinds[0]); i++) {
        Py_ssize_t k = (Py_ssize_t)strlen(kinds[i]);
        if (n < k || (n > k && PyUnicode_READ_CHAR(str, n - k - 1) != '.')) {
            continue;
        }
        Py_ssize_t j = 0;
        while (j < k && PyUnicode_READ_CHAR(str, n - k + j)
                            == (Py_UCS4)(unsigned char)kinds[i][j]) {
            j++;
        }
        if (j == k) {
            return 1;
        }
    }
    return 0;
}

void
ctm_builder_frame_function(ctm_builder *b, uint32_t frame, uint32_t function)
{
    CTM_ASSERT((Py_ssize_t)frame < b->d.nframes
               && (Py_ssize_t)function < b->d.nstrings);
    uint32_t *have = &b->d.frames[frame].function;
    if (*have == CTM_NO_FUNCTION
        || (*have != function && comprehension(b->d.strings[*have])
            && !comprehension(b->d.strings[function]))) {
        *have = function;
    }
}

int64_t
ctm_builder_traceback(ctm_builder *b, const uint32_t *frames,
                      uint32_t nframe, uint32_t total_nframe)
{
    if (ctm_index_reserve(&b->tracebacks_ix, (size_t)b->d.ntracebacks,
                          traceback_hash, b) < 0) {
        return builder_nomem(b);
    }
    uint32_t h = ctm_traceback_hash(frames, nframe, total_nframe);
    uint32_t mask = b->tracebacks_ix.mask;
    uint32_t j = h & mask;
    uint32_t v;
    while ((v = b->tracebacks_ix.slots[j]) != 0) {
        const ctm_snap_tb *t = &b->d.tracebacks[v - 1];
        if (t->hash == h && t->nframe == nframe
            && t->total_nframe == total_nframe
            && (nframe == 0
                || memcmp(&b->d.refs[t->first], frames,
                          nframe * sizeof(uint32_t)) == 0)) {
            return v - 1;
        }
        j = (j + 1) & mask;
    }
    Py_ssize_t n = b->d.ntracebacks;
    Py_ssize_t r = b->d.nrefs;
    if ((uint64_t)r + nframe > UINT32_MAX) {
        return builder_nomem(b);
    }
    if (ctm_grow((void **)&b->d.tracebacks, &b->cap_tracebacks, n + 1,
             sizeof(ctm_snap_tb)) < 0
        || ctm_grow((void **)&b->d.refs, &b->cap_refs, r + nframe + 1,
                sizeof(uint32_t)) < 0) {
        return builder_nomem(b);
    }
    if (nframe) {
        memcpy(&b->d.refs[r], frames, nframe * sizeof(uint32_t));
    }
    ctm_snap_tb *t = &b->d.tracebacks[n];
    t->first = (uint32_t)r;
    t->nframe = nframe;
    t->total_nframe = total_nframe;
    t->hash = h;
    b->d.nrefs = r + nframe;
    b->d.ntracebacks = n + 1;
    b->tracebacks_ix.slots[j] = (uint32_t)n + 1;
    return n;
}

int
ctm_builder_reserve_traces(ctm_builder *b, Py_ssize_t n)
{
    if (ctm_grow((void **)&b->d.traces, &b->cap_traces, b->d.ntraces + n,
             sizeof(ctm_snap_trace)) < 0) {
        return builder_nomem(b);
    }
    return 0;
}

int
ctm_builder_reserve_tables(ctm_builder *b, Py_ssize_t nframes,
                           Py_ssize_t ntracebacks, Py_ssize_t nrefs)
{
    /* the indexes stay at most half full while the count is below
     * the reserved one */
    if (ctm_grow((void **)&b->d.frames, &b->cap_frames, nframes,
             sizeof(ctm_snap_frame)) < 0
        || ctm_grow((void **)&b->d.tracebacks, &b->cap_tracebacks, ntracebacks,
                sizeof(ctm_snap_tb)) < 0
        || ctm_grow((void **)&b->d.refs, &b->cap_refs, nrefs + 1,
                sizeof(uint32_t)) < 0
        || ctm_index_reserve(&b->frames_ix, (size_t)nframes, frame_hash,
                             b) < 0
        || ctm_index_reserve(&b->tracebacks_ix, (size_t)ntracebacks,
                             traceback_hash, b) < 0) {
        return builder_nomem(b);
    }
    return 0;
}

void
ctm_builder_hold_errors(ctm_builder *b)
{
    b->hold_errors = 1;
}

int
ctm_builder_release_errors(ctm_builder *b)
{
    b->hold_errors = 0;
    if (b->nomem) {
        b->nomem = 0;
        PyErr_NoMemory();
        return -1;
    }
    return 0;
}

int
ctm_builder_trace(ctm_builder *b, uint32_t domain, uint64_t size,
                  uint32_t traceback)
{
    Py_ssize_t n = b->d.ntraces;
    if ((size_t)n >= b->cap_traces && ctm_builder_reserve_traces(b, 1) < 0) {
        return -1;
    }
    ctm_snap_trace *t = &b->d.traces[n];
    t->size = size;
    t->traceback = traceback;
    t->domain = domain;
    b->d.ntraces = n + 1;
    return 0;
}

Py_ssize_t
ctm_builder_ntraces(const ctm_builder *b)
{
    return b->d.ntraces;
}

int
ctm_builder_repeat_trace(ctm_builder *b, Py_ssize_t k)
{
    ctm_snap_trace t = b->d.traces[k];
    return ctm_builder_trace(b, t.domain, t.size, t.traceback);
}

void
ctm_builder_adopt_traces(ctm_builder *b, ctm_snap_trace *traces, Py_ssize_t n)
{
    ctm_free(b->d.traces);
    b->d.traces = traces;
    b->d.ntraces = n;
    b->cap_traces = (size_t)n;
}

ctm_snapdata *
ctm_builder_finish(ctm_builder *b)
{
    ctm_snapdata *d = ctm_malloc(sizeof(*d));
    if (d == NULL) {
        ctm_builder_free(b);
        PyErr_NoMemory();
        return NULL;
    }
    *d = b->d;
    builder_release_indexes(b);
    ctm_free(b);
    return d;
}

void
ctm_snapdata_free(ctm_snapdata *d)
{
    if (d == NULL) {
        return;
    }
    for (Py_ssize_t i = 0; i < d->nstrings; i++) {
        Py_DECREF(d->strings[i]);
    }
    ctm_free(d->strings);
    ctm_free(d->frames);
    ctm_free(d->tracebacks);
    ctm_free(d->refs);
    ctm_large_free(d->traces, d->traces_bytes);
    ctm_free(d);
}

size_t
ctm_snapdata_memory(const ctm_snapdata *d)
{
    return sizeof(*d)
           + (size_t)d->nstrings * sizeof(PyObject *)
           + (size_t)d->nframes * sizeof(ctm_snap_frame)
           + (size_t)d->ntracebacks * sizeof(ctm_snap_tb)
           + (size_t)d->nrefs * sizeof(uint32_t)
           + (size_t)d->ntraces * sizeof(ctm_snap_trace);
}

/* Copy n items of elsize from src, or NULL with MemoryError. */
static void *
dup_array(const void *src, Py_ssize_t n, size_t elsize)
{
    void *p = ctm_malloc(n ? (size_t)n * elsize : 1);
    if (p == NULL) {
        PyErr_NoMemory();
        return NULL;
    }
    if (n) {
        memcpy(p, src, (size_t)n * elsize);
    }
    return p;
}

ctm_snapdata *
ctm_snapdata_select(const ctm_snapdata *src, const unsigned char *keep)
{
    ctm_snapdata *d = ctm_calloc(1, sizeof(*d));
    if (d == NULL) {
        PyErr_NoMemory();
        return NULL;
    }
    Py_ssize_t kept = 0;
    for (Py_ssize_t i = 0; i < src->ntraces; i++) {
        kept += keep[i] != 0;
    }
    d->strings = dup_array(src->strings, src->nstrings, sizeof(PyObject *));
    d->frames = dup_array(src->frames, src->nframes, sizeof(ctm_snap_frame));
    d->tracebacks = dup_array(src->tracebacks, src->ntracebacks,
                              sizeof(ctm_snap_tb));
    d->refs = dup_array(src->refs, src->nrefs, sizeof(uint32_t));
    d->traces = ctm_malloc(kept ? (size_t)kept * sizeof(ctm_snap_trace) : 1);
    if (!d->strings || !d->frames || !d->tracebacks || !d->refs
        || !d->traces) {
        ctm_free(d->strings);
        d->strings = NULL;
        ctm_snapdata_free(d);
        PyErr_NoMemory();
        return NULL;
    }
    d->nstrings = src->nstrings;
    for (Py_ssize_t i = 0; i < d->nstrings; i++) {
        Py_INCREF(d->strings[i]);
    }
    d->nframes = src->nframes;
    d->ntracebacks = src->ntracebacks;
    d->nrefs = src->nrefs;
    Py_ssize_t j = 0;
    for (Py_ssize_t i = 0; i < src->ntraces; i++) {
        if (keep[i]) {
            d->traces[j++] = src->traces[i];
        }
    }
    d->ntraces = kept;
    d->sample_interval = src->sample_interval;
    return d;
}

PyObject *
ctm_snapdata_frames_tuple(const ctm_snapdata *d, uint32_t tb,
                          PyObject **cache)
{
    if (cache != NULL && cache[tb] != NULL) {
        return Py_NewRef(cache[tb]);
    }
    const ctm_snap_tb *t = &d->tracebacks[tb];
    PyObject *frames = PyTuple_New(t->nframe);
    if (frames == NULL) {
        return NULL;
    }
    for (uint32_t i = 0; i < t->nframe; i++) {
        const ctm_snap_frame *f = &d->frames[d->refs[t->first + i]];
        PyObject *lineno = PyLong_FromLong(f->lineno);
        if (lineno == NULL) {
            Py_DECREF(frames);
            return NULL;
        }
        PyObject *pair = PyTuple_Pack(2, d->strings[f->filename], lineno);
        Py_DECREF(lineno);
        if (pair == NULL) {
            Py_DECREF(frames);
            return NULL;
        }
        PyTuple_SET_ITEM(frames, i, pair);
    }
    if (cache != NULL) {
        cache[tb] = Py_NewRef(frames);
    }
    return frames;
}

PyObject *
ctm_snapdata_functions_tuple(const ctm_snapdata *d, uint32_t tb)
{
    const ctm_snap_tb *t = &d->tracebacks[tb];
    const uint32_t *refs = d->refs + t->first;
    uint32_t i = 0;
    while (i < t->nframe
           && d->frames[refs[i]].function == CTM_NO_FUNCTION) {
        i++;
    }
    if (i == t->nframe) {
        Py_RETURN_NONE;
    }
    PyObject *names = PyTuple_New(t->nframe);
    if (names == NULL) {
        return NULL;
    }
    for (i = 0; i < t->nframe; i++) {
        uint32_t s = d->frames[refs[i]].function;
        PyTuple_SET_ITEM(names, i, Py_NewRef(s == CTM_NO_FUNCTION
                                             ? Py_None : d->strings[s]));
    }
    /* str and None: no cycle, nothing for the collector to visit */
    PyObject_GC_UnTrack(names);
    return names;
}

PyObject *
ctm_snapdata_trace_tuple(const ctm_snapdata *d, Py_ssize_t i,
                         PyObject **cache)
{
    const ctm_snap_trace *tr = &d->traces[i];
    PyObject *frames = ctm_snapdata_frames_tuple(d, tr->traceback, cache);
    if (frames == NULL) {
        return NULL;
    }
    uint32_t total = d->tracebacks[tr->traceback].total_nframe;
    /* the estimate: what Trace.size and _traces show of a sample */
    unsigned long long size = ctm_snap_size(d, tr);
    PyObject *res;
    if (total == CTM_TOTAL_NONE) {
        res = Py_BuildValue("(kKNO)", (unsigned long)tr->domain, size,
                            frames, Py_None);
    }
    else {
        res = Py_BuildValue("(kKNk)", (unsigned long)tr->domain, size,
                            frames, (unsigned long)total);
    }
    return res;
}

/* Convert a Python int to a C integer in [lo, hi]; -1 with an exception
 * (TypeError for a non-int, OverflowError out of range). */
static int
int_in_range(PyObject *obj, long long lo, long long hi, const char *what,
             long long *out)
{
    if (!PyLong_Check(obj)) {
        PyErr_Format(PyExc_TypeError, "%s must be an int, not %.200s",
                     what, Py_TYPE(obj)->tp_name);
        return -1;
    }
    int overflow;
    long long v = PyLong_AsLongLongAndOverflow(obj, &overflow);
    if (v == -1 && PyErr_Occurred()) {
        return -1;
    }
    if (overflow || v < lo || v > hi) {
        PyErr_Format(PyExc_OverflowError, "%s out of range: %R", what, obj);
        return -1;
    }
    *out = v;
    return 0;
}

static int
uint64_in_range(PyObject *obj, const char *what, uint64_t *out)
{
    if (!PyLong_Check(obj)) {
        PyErr_Format(PyExc_TypeError, "%s must be an int, not %.200s",
                     what, Py_TYPE(obj)->tp_name);
        return -1;
    }
    unsigned long long v = PyLong_AsUnsignedLongLong(obj);
    if (v == (unsigned long long)-1 && PyErr_Occurred()) {
        PyErr_Clear();
        PyErr_Format(PyExc_OverflowError, "%s out of range: %R", what, obj);
        return -1;
    }
    *out = v;
    return 0;
}

int
ctm_builder_add_raw_trace(ctm_builder *b, PyObject *raw)
{
    if (!PyTuple_Check(raw)
        || (PyTuple_GET_SIZE(raw) != 3 && PyTuple_GET_SIZE(raw) != 4)) {
        PyErr_Format(PyExc_TypeError,
                     "a trace must be a tuple (domain, size, frames, "
                     "total_nframe), not %R", raw);
        return -1;
    }
    long long domain;
    uint64_t size;
    if (int_in_range(PyTuple_GET_ITEM(raw, 0), 0, UINT32_MAX,
                     "trace domain", &domain) < 0
        || uint64_in_range(PyTuple_GET_ITEM(raw, 1), "trace size",
                           &size) < 0) {
        return -1;
    }
    uint32_t total = CTM_TOTAL_NONE;
    if (PyTuple_GET_SIZE(raw) == 4 && PyTuple_GET_ITEM(raw, 3) != Py_None) {
        long long t;
        if (int_in_range(PyTuple_GET_ITEM(raw, 3), 0, UINT32_MAX - 1,
                         "total_nframe", &t) < 0) {
            return -1;
        }
        total = (uint32_t)t;
    }
    PyObject *frames = PySequence_Fast(PyTuple_GET_ITEM(raw, 2),
                                       "trace frames must be a sequence");
    if (frames == NULL) {
        return -1;
    }
    Py_ssize_t n = PySequence_Fast_GET_SIZE(frames);
    uint32_t stack_ids[64];
    uint32_t *ids = stack_ids;
    int rc = -1;
    if (n > 64) {
        ids = ctm_malloc((size_t)n * sizeof(uint32_t));
        if (ids == NULL) {
            PyErr_NoMemory();
            goto done;
        }
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *frame = PySequence_Fast_GET_ITEM(frames, i);
        if (!PyTuple_Check(frame) || PyTuple_GET_SIZE(frame) != 2) {
            PyErr_Format(PyExc_TypeError,
                         "a frame must be a tuple (filename, lineno), not %R",
                         frame);
            goto done;
        }
        PyObject *filename = PyTuple_GET_ITEM(frame, 0);
        if (!PyUnicode_CheckExact(filename)) {
            PyErr_Format(PyExc_TypeError,
                         "frame filename must be a str, not %.200s",
                         Py_TYPE(filename)->tp_name);
            goto done;
        }
        long long lineno;
        if (int_in_range(PyTuple_GET_ITEM(frame, 1), INT32_MIN, INT32_MAX,
                         "frame lineno", &lineno) < 0) {
            goto done;
        }
        int64_t s = ctm_builder_string(b, filename);
        if (s < 0) {
            goto done;
        }
        int64_t f = ctm_builder_frame(b, (uint32_t)s, (int32_t)lineno);
        if (f < 0) {
            goto done;
        }
        ids[i] = (uint32_t)f;
    }
    int64_t tb = ctm_builder_traceback(b, ids, (uint32_t)n, total);
    if (tb < 0) {
        goto done;
    }
    rc = ctm_builder_trace(b, (uint32_t)domain, size, (uint32_t)tb);
done:
    if (ids != stack_ids) {
        ctm_free(ids);
    }
    Py_DECREF(frames);
    return rc;
}

/* ---------------------------------------------------------------------
 * The runner's frames out
 * ------------------------------------------------------------------- */

static const uint32_t chain_none[1];

/* The frame ("<unknown>", 0) in b. */
static int64_t
unknown_frame(ctm_builder *b)
{
    PyObject *name = PyUnicode_FromString("<unknown>");
    if (name == NULL) {
        return -1;
    }
    int64_t s = ctm_builder_string(b, name);
    Py_DECREF(name);
    return s < 0 ? -1 : ctm_builder_frame(b, (uint32_t)s, 0);
}

ctm_snapdata *
ctm_snapdata_strip_root(const ctm_snapdata *d, const int64_t *chain,
                        uint32_t k, uint32_t limit)
{
    ctm_builder *b = ctm_builder_new();
    int64_t *tb_map = ctm_malloc((size_t)d->ntracebacks * sizeof(int64_t));
    int64_t unknown = -1;
    if (b == NULL || tb_map == NULL) {
        PyErr_NoMemory();
        goto error;
    }
    /* strings and frames keep their indexes: they are distinct */
    for (Py_ssize_t i = 0; i < d->nstrings; i++) {
        if (ctm_builder_string(b, d->strings[i]) < 0) {
            goto error;
        }
    }
    for (Py_ssize_t i = 0; i < d->nframes; i++) {
        if (ctm_builder_frame(b, d->frames[i].filename,
                              d->frames[i].lineno) < 0) {
            goto error;
        }
        if (d->frames[i].function != CTM_NO_FUNCTION) {
            ctm_builder_frame_function(b, (uint32_t)i,
                                       d->frames[i].function);
        }
    }
    for (Py_ssize_t i = 0; i < d->ntracebacks; i++) {
        const ctm_snap_tb *t = &d->tracebacks[i];
        const uint32_t *ids = d->refs + t->first;
        uint32_t n = t->nframe, total = t->total_nframe;
        int under = 0;
        if (k > 0 && n >= k) {
            under = 1;
            for (uint32_t j = 0; j < k && under; j++) {
                under = chain[j] == (int64_t)ids[n - k + j];
            }
        }
        if (under) {
            n -= k;
            if (n == 0) {
                /* allocated below the program's first frame: what the
                 * tracer records for a stack without Python frames */
                if (unknown < 0 && (unknown = unknown_frame(b)) < 0) {
                    goto error;
                }
                uint32_t u = (uint32_t)unknown;
                tb_map[i] = ctm_builder_traceback(b, &u, 1, 1);
                if (tb_map[i] < 0) {
                    goto error;
                }
                continue;
            }
        }
        else {
            /* truncated before the runner's frames: below them too */
            under = total != CTM_TOTAL_NONE && n < total && total > k;
        }
        if (under && total != CTM_TOTAL_NONE) {
            total -= k;
        }
        if (n > limit) {
            n = limit;          /* the most recent frames */
        }
        tb_map[i] = ctm_builder_traceback(b, n ? ids : chain_none, n, total);
        if (tb_map[i] < 0) {
            goto error;
        }
    }
    if (ctm_builder_reserve_traces(b, d->ntraces) < 0) {
        goto error;
    }
    for (Py_ssize_t i = 0; i < d->ntraces; i++) {
        const ctm_snap_trace *tr = &d->traces[i];
        if (ctm_builder_trace(b, tr->domain, tr->size,
                              (uint32_t)tb_map[tr->traceback]) < 0) {
            goto error;
        }
    }
    ctm_free(tb_map);
    ctm_snapdata *nd = ctm_builder_finish(b);
    if (nd != NULL) {
        nd->sample_interval = d->sample_interval;
    }
    return nd;

error:
    ctm_free(tb_map);
    ctm_builder_free(b);
    return NULL;
}

/* ---------------------------------------------------------------------
 * Raw traces in
 * ------------------------------------------------------------------- */

static const uint32_t no_refs[1];

/* Snapshot(raw_traces): the builder resolves every frame of every
 * trace, but raw trace lists share one frames tuple per traceback (the
 * tracer's, and the stdlib's, do), so the frame indexes of each frames
 * tuple are memoised by identity, with a strong reference so that no
 * other object can take its address while the snapshot is built.
 * Only plain input takes this path (exact tuples and ints in range);
 * anything else goes through ctm_builder_add_raw_trace, which is the
 * reference for validation and error messages. */
typedef struct {
    PyObject *frames;           /* strong; NULL for an empty slot */
    uint32_t first;             /* into ids */
    uint32_t n;
    uint32_t total;             /* of tb */
    uint32_t tb;                /* valid if has_tb */
    int has_tb;
} fcache_ent;

typedef struct {
    fcache_ent *slots;
    size_t mask;
    size_t count;
    uint32_t *ids;
    size_t nids;
    size_t capids;
} fcache_t;

static void
fcache_free(fcache_t *c)
{
    if (c->slots != NULL) {
        for (size_t i = 0; i <= c->mask; i++) {
            Py_XDECREF(c->slots[i].frames);
        }
    }
    ctm_free(c->slots);
    ctm_free(c->ids);
}

static inline size_t
ptr_slot(const fcache_t *c, PyObject *p)
{
    return ctm_mix32((uint64_t)(uintptr_t)p) & c->mask;
}

/* Make room for one more entry. */
static int
fcache_reserve(fcache_t *c)
{
    size_t cap = c->slots ? c->mask + 1 : 0;
    if ((c->count + 1) * 2 <= cap) {
        return 0;
    }
    size_t ncap = cap ? cap * 2 : 1024;
    fcache_ent *slots = ctm_calloc(ncap, sizeof(fcache_ent));
    if (slots == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    fcache_ent *old = c->slots;
    c->slots = slots;
    c->mask = ncap - 1;
    for (size_t i = 0; i < cap; i++) {
        if (old[i].frames != NULL) {
            size_t j = ptr_slot(c, old[i].frames);
            while (slots[j].frames != NULL) {
                j = (j + 1) & c->mask;
            }
            slots[j] = old[i];
        }
    }
    ctm_free(old);
    return 0;
}

/* An exact int in [0, max]: 1 with *out, else 0 (no exception). */
static int
plain_uint(PyObject *obj, uint64_t max, uint64_t *out)
{
    if (!PyLong_CheckExact(obj)) {
        return 0;
    }
    unsigned long long v = PyLong_AsUnsignedLongLong(obj);
    if (v == (unsigned long long)-1 && PyErr_Occurred()) {
        PyErr_Clear();
        return 0;
    }
    *out = v;
    return v <= max;
}

/* The cache entry of a plain frames tuple, adding its frames to the
 * builder on first sight; NULL without exception if frames is not
 * plain; NULL with an exception on error (*err set). */
static fcache_ent *
fcache_get(fcache_t *c, ctm_builder *b, PyObject *frames, int *err)
{
    *err = 0;
    if (fcache_reserve(c) < 0) {
        *err = 1;
        return NULL;
    }
    size_t j = ptr_slot(c, frames);
    while (c->slots[j].frames != NULL) {
        if (c->slots[j].frames == frames) {
            return &c->slots[j];
        }
        j = (j + 1) & c->mask;
    }
    Py_ssize_t n = PyTuple_GET_SIZE(frames);
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *fr = PyTuple_GET_ITEM(frames, i);
        if (!PyTuple_CheckExact(fr) || PyTuple_GET_SIZE(fr) != 2
            || !PyUnicode_CheckExact(PyTuple_GET_ITEM(fr, 0))
            || !PyLong_CheckExact(PyTuple_GET_ITEM(fr, 1))) {
            return NULL;
        }
    }
    if ((uint64_t)c->nids + (uint64_t)n > UINT32_MAX) {
        return NULL;
    }
    if (ctm_grow((void **)&c->ids, &c->capids, c->nids + (size_t)n,
                 sizeof(uint32_t)) < 0) {
        PyErr_NoMemory();
        *err = 1;
        return NULL;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *fr = PyTuple_GET_ITEM(frames, i);
        int overflow;
        long v = PyLong_AsLongAndOverflow(PyTuple_GET_ITEM(fr, 1),
                                          &overflow);
        if (overflow || v < INT32_MIN || v > INT32_MAX) {
            return NULL;
        }
        int64_t sidx = ctm_builder_string(b, PyTuple_GET_ITEM(fr, 0));
        int64_t fidx = sidx < 0 ? -1
                                : ctm_builder_frame(b, (uint32_t)sidx,
                                                    (int32_t)v);
        if (fidx < 0) {
            *err = 1;
            return NULL;
        }
        c->ids[c->nids + (size_t)i] = (uint32_t)fidx;
    }
    fcache_ent *e = &c->slots[j];
    e->frames = Py_NewRef(frames);
    e->first = (uint32_t)c->nids;
    e->n = (uint32_t)n;
    e->has_tb = 0;
    c->nids += (size_t)n;
    c->count++;
    return e;
}

/* Add one raw trace, given as its items, through the cache: 1 if
 * added, 0 if the trace is not plain (the caller uses
 * ctm_builder_add_raw_trace), -1 on error. */
static int
add_plain_trace(fcache_t *c, ctm_builder *b, PyObject *const *items,
                Py_ssize_t n)
{
    uint64_t domain, size, total = CTM_TOTAL_NONE;
    if (n != 4
        || !plain_uint(items[0], UINT32_MAX, &domain)
        || !plain_uint(items[1], UINT64_MAX, &size)
        || !PyTuple_CheckExact(items[2])) {
        return 0;
    }
    if (items[3] != Py_None && !plain_uint(items[3], UINT32_MAX - 1, &total)) {
        return 0;
    }
    int err;
    fcache_ent *e = fcache_get(c, b, items[2], &err);
    if (e == NULL) {
        return err ? -1 : 0;
    }
    if (!e->has_tb || e->total != (uint32_t)total) {
        const uint32_t *ids = e->n ? c->ids + e->first : no_refs;
        int64_t tb = ctm_builder_traceback(b, ids, e->n, (uint32_t)total);
        if (tb < 0) {
            return -1;
        }
        e->tb = (uint32_t)tb;
        e->total = (uint32_t)total;
        e->has_tb = 1;
    }
    if (ctm_builder_trace(b, (uint32_t)domain, size, e->tb) < 0) {
        return -1;
    }
    return 1;
}

struct ctm_rawtraces {
    fcache_t cache;
    ctm_builder *b;
};

ctm_rawtraces *
ctm_rawtraces_new(Py_ssize_t hint)
{
    ctm_rawtraces *r = ctm_calloc(1, sizeof(*r));
    if (r == NULL) {
        PyErr_NoMemory();
        return NULL;
    }
    r->b = ctm_builder_new();
    /* a hint is only a hint: do not trust a huge one with memory */
    if (hint > ((Py_ssize_t)1 << 24)) {
        hint = (Py_ssize_t)1 << 24;
    }
    if (r->b == NULL || ctm_builder_reserve_traces(r->b, hint) < 0) {
        ctm_rawtraces_free(r);
        return NULL;
    }
    return r;
}

void
ctm_rawtraces_free(ctm_rawtraces *r)
{
    if (r != NULL) {
        fcache_free(&r->cache);
        ctm_builder_free(r->b);
        ctm_free(r);
    }
}

int
ctm_rawtraces_add_items(ctm_rawtraces *r, PyObject *const *items,
                        Py_ssize_t n)
{
    int rc = add_plain_trace(&r->cache, r->b, items, n);
    if (rc != 0) {
        return rc < 0 ? -1 : 0;
    }
    PyObject *raw = PyTuple_New(n);
    if (raw == NULL) {
        return -1;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        PyTuple_SET_ITEM(raw, i, Py_NewRef(items[i]));
    }
    rc = ctm_builder_add_raw_trace(r->b, raw);
    Py_DECREF(raw);
    return rc;
}

int
ctm_rawtraces_add(ctm_rawtraces *r, PyObject *raw)
{
    if (PyTuple_CheckExact(raw)) {
        int rc = add_plain_trace(&r->cache, r->b,
                                 &PyTuple_GET_ITEM(raw, 0),
                                 PyTuple_GET_SIZE(raw));
        if (rc != 0) {
            return rc < 0 ? -1 : 0;
        }
    }
    return ctm_builder_add_raw_trace(r->b, raw);
}

Py_ssize_t
ctm_rawtraces_count(const ctm_rawtraces *r)
{
    return ctm_builder_ntraces(r->b);
}

int
ctm_rawtraces_repeat(ctm_rawtraces *r, Py_ssize_t k)
{
    return ctm_builder_repeat_trace(r->b, k);
}

ctm_snapdata *
ctm_rawtraces_finish(ctm_rawtraces *r)
{
    ctm_builder *b = r->b;
    r->b = NULL;
    ctm_rawtraces_free(r);
    return ctm_builder_finish(b);
}

ctm_snapdata *
ctm_snapdata_from_raw(PyObject *traces)
{
    Py_ssize_t hint = PyObject_LengthHint(traces, 0);
    if (hint < 0) {
        return NULL;
    }
    PyObject *it = PyObject_GetIter(traces);
    if (it == NULL) {
        return NULL;
    }
    ctm_rawtraces *r = ctm_rawtraces_new(hint);
    if (r == NULL) {
        Py_DECREF(it);
        return NULL;
    }
    PyObject *item;
    while ((item = PyIter_Next(it)) != NULL) {
        int rc = ctm_rawtraces_add(r, item);
        Py_DECREF(item);
        if (rc < 0) {
            break;
        }
    }
    Py_DECREF(it);
    if (PyErr_Occurred()) {
        ctm_rawtraces_free(r);
        return NULL;
    }
    return ctm_rawtraces_finish(r);
}
