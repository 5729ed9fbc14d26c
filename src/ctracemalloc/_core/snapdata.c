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
#include "internal.h"

#include <string.h>
#if defined(__linux__)
#  include <sys/mman.h>
#endif

#define HUGE_PAGE ((size_t)2 << 20)

void *
ctm_malloc_large(size_t n)
{
#if defined(__linux__) && defined(MADV_HUGEPAGE)
    if (n >= 2 * HUGE_PAGE) {
        void *p;
        if (posix_memalign(&p, HUGE_PAGE, n) != 0) {
            return NULL;
        }
        /* The tail after the last whole huge page keeps small pages:
         * rounding up could cost up to 2 MiB of memory per array. */
        (void)madvise(p, n & ~(HUGE_PAGE - 1), MADV_HUGEPAGE);
        return p;
    }
#endif
    return ctm_malloc(n);
}

typedef struct {
    uint32_t *slots;
    uint32_t mask;              /* capacity - 1; capacity 0 when slots NULL */
} ctm_index;

struct ctm_builder {
    ctm_snapdata d;
    Py_ssize_t cap_strings, cap_frames, cap_tracebacks, cap_refs, cap_traces;
    Py_hash_t *string_hashes;
    ctm_index strings_ix, frames_ix, tracebacks_ix;
};

/* Grow *array (of elsize items) to hold at least need items. */
static int
grow(void **array, Py_ssize_t *cap, Py_ssize_t need, size_t elsize)
{
    if (need <= *cap) {
        return 0;
    }
    Py_ssize_t ncap = *cap ? *cap : 16;
    while (ncap < need) {
        ncap *= 2;
    }
    if ((size_t)ncap > PY_SSIZE_T_MAX / elsize) {
        PyErr_NoMemory();
        return -1;
    }
    void *p = ctm_realloc(*array, (size_t)ncap * elsize);
    if (p == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    *array = p;
    *cap = ncap;
    return 0;
}

/* Make room in ix for count + 1 items; rehash with hash_of(item). */
typedef uint32_t (*hash_fn)(const ctm_builder *b, uint32_t item);

static int
index_reserve(ctm_builder *b, ctm_index *ix, Py_ssize_t count, hash_fn hash)
{
    size_t cap = ix->slots ? (size_t)ix->mask + 1 : 0;
    if ((size_t)(count + 1) * 2 <= cap) {
        return 0;
    }
    size_t ncap = cap ? cap * 2 : 64;
    while ((size_t)(count + 1) * 2 > ncap) {
        ncap *= 2;
    }
    if (ncap > UINT32_MAX) {
        PyErr_NoMemory();
        return -1;
    }
    uint32_t *slots = ctm_calloc(ncap, sizeof(uint32_t));
    if (slots == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    uint32_t mask = (uint32_t)(ncap - 1);
    for (size_t i = 0; i < cap; i++) {
        uint32_t v = ix->slots[i];
        if (v) {
            uint32_t j = hash(b, v - 1) & mask;
            while (slots[j]) {
                j = (j + 1) & mask;
            }
            slots[j] = v;
        }
    }
    ctm_free(ix->slots);
    ix->slots = slots;
    ix->mask = mask;
    return 0;
}

static uint32_t
string_hash(const ctm_builder *b, uint32_t i)
{
    return ctm_mix32((uint64_t)b->string_hashes[i]);
}

static uint32_t
frame_hash(const ctm_builder *b, uint32_t i)
{
    const ctm_sframe *f = &b->d.frames[i];
    return ctm_mix32(((uint64_t)f->filename << 32) ^ (uint32_t)f->lineno);
}

static uint32_t
traceback_hash(const ctm_builder *b, uint32_t i)
{
    return b->d.tracebacks[i].hash;
}

uint64_t
ctm_traceback_hash_state(const uint32_t *frames, uint32_t nframe,
                         uint32_t total)
{
    /* A sum of one term per frame, each a bijective mix of (position,
     * frame): the terms do not wait on each other, so the processor
     * computes several at once, where a chained hash (h = mix(h, frame))
     * waits a multiplication per frame. total is multiplied in, not
     * xored with the first frame: otherwise (frame 5, total 1) and
     * (frame 4, total 0) would collide. */
    uint64_t h = (0x9e3779b97f4a7c15ULL ^ nframe)
                 + (uint64_t)total * 0xff51afd7ed558ccdULL;
    for (uint32_t i = 0; i < nframe; i++) {
        uint64_t x = ((uint64_t)i << 32 | frames[i]) * 0xc4ceb9fe1a85ec53ULL;
        h += x ^ (x >> 29);
    }
    return h;
}

uint32_t
ctm_traceback_hash(const uint32_t *frames, uint32_t nframe, uint32_t total)
{
    return ctm_mix32(ctm_traceback_hash_state(frames, nframe, total));
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
    ctm_free(b->strings_ix.slots);
    ctm_free(b->frames_ix.slots);
    ctm_free(b->tracebacks_ix.slots);
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
    if (index_reserve(b, &b->strings_ix, b->d.nstrings, string_hash) < 0) {
        return -1;
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
            if (eq == -1 && PyErr_Occurred()) {
                return -1;
            }
            if (eq == 0) {
                return v - 1;
            }
        }
        j = (j + 1) & mask;
    }
    Py_ssize_t n = b->d.nstrings;
    Py_ssize_t cap = b->cap_strings;
    if (grow((void **)&b->d.strings, &cap, n + 1, sizeof(PyObject *)) < 0) {
        return -1;
    }
    Py_ssize_t hcap = b->cap_strings;
    if (grow((void **)&b->string_hashes, &hcap, n + 1,
             sizeof(Py_hash_t)) < 0) {
        return -1;
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
    if (index_reserve(b, &b->frames_ix, b->d.nframes, frame_hash) < 0) {
        return -1;
    }
    uint32_t mask = b->frames_ix.mask;
    uint32_t j = ctm_mix32(((uint64_t)filename << 32) ^ (uint32_t)lineno)
                 & mask;
    uint32_t v;
    while ((v = b->frames_ix.slots[j]) != 0) {
        const ctm_sframe *f = &b->d.frames[v - 1];
        if (f->filename == filename && f->lineno == lineno) {
            return v - 1;
        }
        j = (j + 1) & mask;
    }
    Py_ssize_t n = b->d.nframes;
    if (grow((void **)&b->d.frames, &b->cap_frames, n + 1,
             sizeof(ctm_sframe)) < 0) {
        return -1;
    }
    b->d.frames[n].filename = filename;
    b->d.frames[n].lineno = lineno;
    b->d.nframes = n + 1;
    b->frames_ix.slots[j] = (uint32_t)n + 1;
    return n;
}

int64_t
ctm_builder_traceback(ctm_builder *b, const uint32_t *frames,
                      uint32_t nframe, uint32_t total_nframe)
{
    if (index_reserve(b, &b->tracebacks_ix, b->d.ntracebacks,
                      traceback_hash) < 0) {
        return -1;
    }
    uint32_t h = ctm_traceback_hash(frames, nframe, total_nframe);
    uint32_t mask = b->tracebacks_ix.mask;
    uint32_t j = h & mask;
    uint32_t v;
    while ((v = b->tracebacks_ix.slots[j]) != 0) {
        const ctm_stb *t = &b->d.tracebacks[v - 1];
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
        PyErr_NoMemory();
        return -1;
    }
    if (grow((void **)&b->d.tracebacks, &b->cap_tracebacks, n + 1,
             sizeof(ctm_stb)) < 0
        || grow((void **)&b->d.refs, &b->cap_refs, r + nframe + 1,
                sizeof(uint32_t)) < 0) {
        return -1;
    }
    if (nframe) {
        memcpy(&b->d.refs[r], frames, nframe * sizeof(uint32_t));
    }
    ctm_stb *t = &b->d.tracebacks[n];
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
    return grow((void **)&b->d.traces, &b->cap_traces, b->d.ntraces + n,
                sizeof(ctm_strace));
}

int
ctm_builder_trace(ctm_builder *b, uint32_t domain, uint64_t size,
                  uint32_t traceback)
{
    Py_ssize_t n = b->d.ntraces;
    if (n >= b->cap_traces && ctm_builder_reserve_traces(b, 1) < 0) {
        return -1;
    }
    ctm_strace *t = &b->d.traces[n];
    t->size = size;
    t->traceback = traceback;
    t->domain = domain;
    b->d.ntraces = n + 1;
    return 0;
}

void
ctm_builder_adopt_traces(ctm_builder *b, ctm_strace *traces, Py_ssize_t n)
{
    ctm_free(b->d.traces);
    b->d.traces = traces;
    b->d.ntraces = n;
    b->cap_traces = n;
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
    ctm_free(d->traces);
    ctm_free(d);
}

size_t
ctm_snapdata_memory(const ctm_snapdata *d)
{
    return sizeof(*d)
           + (size_t)d->nstrings * sizeof(PyObject *)
           + (size_t)d->nframes * sizeof(ctm_sframe)
           + (size_t)d->ntracebacks * sizeof(ctm_stb)
           + (size_t)d->nrefs * sizeof(uint32_t)
           + (size_t)d->ntraces * sizeof(ctm_strace);
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
    d->frames = dup_array(src->frames, src->nframes, sizeof(ctm_sframe));
    d->tracebacks = dup_array(src->tracebacks, src->ntracebacks,
                              sizeof(ctm_stb));
    d->refs = dup_array(src->refs, src->nrefs, sizeof(uint32_t));
    d->traces = ctm_malloc(kept ? (size_t)kept * sizeof(ctm_strace) : 1);
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
    return d;
}

PyObject *
ctm_snapdata_frames_tuple(const ctm_snapdata *d, uint32_t tb,
                          PyObject **cache)
{
    if (cache != NULL && cache[tb] != NULL) {
        return Py_NewRef(cache[tb]);
    }
    const ctm_stb *t = &d->tracebacks[tb];
    PyObject *frames = PyTuple_New(t->nframe);
    if (frames == NULL) {
        return NULL;
    }
    for (uint32_t i = 0; i < t->nframe; i++) {
        const ctm_sframe *f = &d->frames[d->refs[t->first + i]];
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
ctm_snapdata_trace_tuple(const ctm_snapdata *d, Py_ssize_t i,
                         PyObject **cache)
{
    const ctm_strace *tr = &d->traces[i];
    PyObject *frames = ctm_snapdata_frames_tuple(d, tr->traceback, cache);
    if (frames == NULL) {
        return NULL;
    }
    uint32_t total = d->tracebacks[tr->traceback].total_nframe;
    PyObject *res;
    if (total == CTM_TOTAL_NONE) {
        res = Py_BuildValue("(kKNO)", (unsigned long)tr->domain,
                            (unsigned long long)tr->size, frames, Py_None);
    }
    else {
        res = Py_BuildValue("(kKNk)", (unsigned long)tr->domain,
                            (unsigned long long)tr->size, frames,
                            (unsigned long)total);
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
