/* Our format's sections of items (ffspec.h): COUNTS, then STRINGS,
 * FRAMES, TRACEBACKS and TRACES, parsed from a verified payload straight
 * into the snapshot's arrays, for ffread.c, which frames the sections.
 *
 * Invariants: the arrays are allocated once, from the counts of COUNTS,
 * after those counts are checked against the bytes left in the file;
 * the counts of st->d cover only items already stored and never exceed
 * the declared ones, so that an error at any point leaves snapshot data
 * that ctm_snapdata_free releases; the load fails at the first item that
 * does not check (an index out of range, a value out of its type's
 * range, a duplicate). The duplicate indexes are sized once from the
 * counts and never grow.
 */
#include "ffload.h"
#include "ffspec.h"

#include <string.h>
#include <sys/mman.h>
#if defined(__SSE2__)
#  include <emmintrin.h>
#endif

/* Build switches (1: on), to compare builds with and without them:
 * non-temporal stores of the traces (store_trace) and prefaulting of the
 * arrays (prefault). */
#ifndef CTM_STREAM_STORES
#  define CTM_STREAM_STORES 1
#endif
#ifndef CTM_PREFAULT
#  define CTM_PREFAULT 1
#endif

int
ctm_ff_corrupted(const ctm_ffloader *st, const char *what)
{
    PyErr_Format(PyExc_ValueError,
                 "corrupted snapshot file: %s (%s section at offset %llu)",
                 what, st->section_name,
                 (unsigned long long)st->section_offset);
    return -1;
}

int
ctm_ff_bad_payload(const ctm_ffloader *st)
{
    return ctm_ff_corrupted(st, "malformed or short section payload");
}

int
ctm_ff_section_end(const ctm_ffloader *st, const cursor *c)
{
    if (cur_left(c) != 0 && st->strict) {
        return ctm_ff_corrupted(st, "unexpected bytes at the end of the "
                                "section");
    }
    return 0;
}


/* Map a large array about to be filled, if the kernel has not mapped it
 * yet (a fresh mmap; memory reused from the heap is mapped already):
 * first touching tens of megabytes would take a page fault per page,
 * where one madvise call maps them all. A hint: failure (an older
 * kernel) is ignored. */
static void
prefault(void *p, size_t n)
{
#if defined(MADV_POPULATE_WRITE) && CTM_PREFAULT
    const uintptr_t page = 4096;
    if (p == NULL || n < 64 * page) {
        return;
    }
    uintptr_t start = ((uintptr_t)p + page - 1) & ~(page - 1);
    uintptr_t end = ((uintptr_t)p + n) & ~(page - 1);
    /* A sample of pages: a block may start in mapped heap memory and
     * go on into fresh memory. */
    uintptr_t sample[3] = {
        start, start + ((end - start) / 2 & ~(page - 1)), end - page
    };
    for (int i = 0; i < 3; i++) {
        unsigned char resident;
        if (mincore((void *)sample[i], page, &resident) == 0
            && !(resident & 1)) {
            (void)madvise((void *)start, end - start, MADV_POPULATE_WRITE);
            break;
        }
    }
#else
    (void)p;
    (void)n;
#endif
}

/* Zeroed slots of size elsize for n items, *mask their number - 1; NULL
 * with MemoryError. */
static void *
slots_new(uint64_t n, size_t elsize, size_t *mask)
{
    size_t cap = 16;
    while (cap < 2 * n) {
        cap *= 2;
    }
    void *slots = ctm_calloc(cap, elsize);
    if (slots == NULL) {
        PyErr_NoMemory();
        return NULL;
    }
    prefault(slots, cap * elsize);
    *mask = cap - 1;
    return slots;
}

/* Items are inserted this far behind the one whose slot is prefetched. */
#define PREFETCH_AHEAD 32

/* The hash of string item in strings_ix, as parse_strings probes it. */
static uint32_t
string_hash(const void *owner, uint32_t item)
{
    const ctm_ffloader *st = owner;
    return ctm_mix32((uint64_t)PyObject_Hash(st->d->strings[item]));
}

int
ctm_ff_parse_counts(ctm_ffloader *st, cursor *c)
{
    uint64_t v[5];
    for (int i = 0; i < 5; i++) {
        if (get_varint(c, &v[i]) < 0) {
            return ctm_ff_bad_payload(st);
        }
    }
    /* Indexes are uint32; the traces array is sized in bytes. */
    if (v[0] > UINT32_MAX || v[1] > UINT32_MAX || v[2] > UINT32_MAX
        || v[3] > UINT32_MAX
        || v[4] > (uint64_t)PY_SSIZE_T_MAX / sizeof(ctm_snap_trace)) {
        return ctm_ff_corrupted(st, "impossible item counts");
    }
    /* Each item takes at least one byte of the file (frames and
     * tracebacks two), so the counts must fit in what is left of it:
     * that bounds what a damaged or hostile count can make us allocate
     * to a few times the file's size. */
    const ctm_input *r = st->r;
    uint64_t left = r->size > r->offset ? r->size - r->offset : 0;
    uint64_t need = v[0] + 2 * v[1] + 2 * v[2] + v[3] + v[4];
    if (need > left) {
        /* The check matched: the counts are as written, the rest of the
         * file is missing. */
        PyErr_Format(PyExc_ValueError,
                     "truncated snapshot file: its counts need at least "
                     "%llu more bytes, the file has %llu",
                     (unsigned long long)need, (unsigned long long)left);
        return -1;
    }
    st->nstrings = v[0];
    st->nframes = v[1];
    st->ntracebacks = v[2];
    st->nrefs = v[3];
    st->ntraces = v[4];
    ctm_snapdata *d = ctm_calloc(1, sizeof(*d));
    if (d == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    st->d = d;
    d->strings = ctm_malloc((size_t)v[0] * sizeof(PyObject *));
    d->frames = ctm_malloc((size_t)v[1] * sizeof(ctm_snap_frame));
    d->tracebacks = ctm_malloc((size_t)v[2] * sizeof(ctm_snap_tb));
    d->refs = ctm_malloc((size_t)v[3] * sizeof(uint32_t));
    d->traces = ctm_malloc((size_t)v[4] * sizeof(ctm_snap_trace));
    if (d->strings == NULL || d->frames == NULL || d->tracebacks == NULL
        || d->refs == NULL || d->traces == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    prefault(d->frames, (size_t)v[1] * sizeof(ctm_snap_frame));
    prefault(d->tracebacks, (size_t)v[2] * sizeof(ctm_snap_tb));
    prefault(d->refs, (size_t)v[3] * sizeof(uint32_t));
    prefault(d->traces, (size_t)v[4] * sizeof(ctm_snap_trace));
    /* Room for every declared string: the index never grows. */
    if (ctm_index_reserve(&st->strings_ix, v[0] ? (size_t)v[0] - 1 : 0,
                          string_hash, st) < 0) {
        PyErr_NoMemory();
        return -1;
    }
    prefault(st->strings_ix.slots,
             ctm_index_capacity(&st->strings_ix) * sizeof(uint32_t));
    st->frame_slots = slots_new(v[1], sizeof(uint64_t), &st->frame_mask);
    st->traceback_slots = slots_new(v[2], sizeof(uint64_t),
                                    &st->traceback_mask);
    if (st->frame_slots == NULL || st->traceback_slots == NULL) {
        return -1;
    }
    st->have_counts = 1;
    return ctm_ff_section_end(st, c);
}

/* The count that opens a section of items of at least min_bytes bytes
 * each, in *n, checked against the bytes left. 0, or -1 with the
 * error set. */
static int
items_count(const ctm_ffloader *st, cursor *c, uint64_t min_bytes,
            uint64_t *n)
{
    if (get_varint(c, n) < 0 || *n > cur_left(c) / min_bytes) {
        return ctm_ff_bad_payload(st);
    }
    return 0;
}

/* Two varints, a and b. 0, or -1 (no error set) if malformed. */
static inline int
get_varint_pair(cursor *c, uint64_t *a, uint64_t *b)
{
    return get_varint(c, a) < 0 || get_varint(c, b) < 0 ? -1 : 0;
}

int
ctm_ff_parse_strings(ctm_ffloader *st, cursor *c)
{
    ctm_snapdata *d = st->d;
    uint64_t n;
    if (items_count(st, c, 1, &n) < 0) {
        return -1;
    }
    if (n > st->nstrings - (uint64_t)d->nstrings) {
        return ctm_ff_corrupted(st, "more strings than declared");
    }
    for (uint64_t i = 0; i < n; i++) {
        uint64_t len;
        if (get_varint(c, &len) < 0 || len > cur_left(c)) {
            return ctm_ff_bad_payload(st);
        }
        PyObject *s = PyUnicode_DecodeUTF8((const char *)c->p,
                                           (Py_ssize_t)len, "surrogatepass");
        if (s == NULL) {
            if (PyErr_ExceptionMatches(PyExc_UnicodeDecodeError)) {
                PyErr_Clear();
                return ctm_ff_corrupted(st, "a string is not valid UTF-8");
            }
            return -1;
        }
        c->p += len;
        Py_ssize_t idx = d->nstrings;
        /* Stored first, so that an error releases it with the rest. */
        d->strings[idx] = s;
        d->nstrings = idx + 1;
        Py_hash_t h = PyObject_Hash(s);
        if (h == -1) {
            return -1;
        }
        const ctm_index *ix = &st->strings_ix;
        uint32_t j = ctm_mix32((uint64_t)h) & ix->mask;
        uint32_t v;
        while ((v = ix->slots[j]) != 0) {
            PyObject *other = d->strings[v - 1];
            if (PyObject_Hash(other) == h) {
                int cmp = PyUnicode_Compare(other, s);
                if (cmp == -1 && PyErr_Occurred()) {
                    return -1;
                }
                if (cmp == 0) {
                    return ctm_ff_corrupted(st, "duplicate string");
                }
            }
            j = (j + 1) & ix->mask;
        }
        ix->slots[j] = (uint32_t)idx + 1;
    }
    return ctm_ff_section_end(st, c);
}

static inline uint64_t
frame_key(const ctm_snap_frame *f)
{
    return (((uint64_t)f->filename << 32) | (uint32_t)f->lineno) + 1;
}

int
ctm_ff_parse_frames(ctm_ffloader *st, cursor *c)
{
    ctm_snapdata *d = st->d;
    uint64_t n;
    if (items_count(st, c, 2, &n) < 0) {
        return -1;
    }
    if (n > st->nframes - (uint64_t)d->nframes) {
        return ctm_ff_corrupted(st, "more frames than declared");
    }
    /* Decode and check the section's frames, then look them up, with
     * the slots of later frames prefetched. */
    const uint64_t nstrings = (uint64_t)d->nstrings;
    ctm_snap_frame *frames = d->frames + d->nframes;
    for (uint64_t i = 0; i < n; i++) {
        uint64_t filename, z;
        if (get_varint_pair(c, &filename, &z) < 0) {
            return ctm_ff_bad_payload(st);
        }
        int64_t lineno = unzigzag(z);
        if (filename >= nstrings) {
            return ctm_ff_corrupted(st, "frame filename index out of range");
        }
        if (lineno < INT32_MIN || lineno > INT32_MAX) {
            return ctm_ff_corrupted(st, "frame line number out of range");
        }
        frames[i].filename = (uint32_t)filename;
        frames[i].lineno = (int32_t)lineno;
        frames[i].function = CTM_NO_FUNCTION;
    }
    uint64_t *slots = st->frame_slots;
    const size_t mask = st->frame_mask;
    for (uint64_t i = 0; i < n; i++) {
        if (i + PREFETCH_AHEAD < n) {
            __builtin_prefetch(
                &slots[ctm_mix64(frame_key(&frames[i + PREFETCH_AHEAD]))
                       & mask], 1);
        }
        uint64_t key = frame_key(&frames[i]);
        size_t j = ctm_mix64(key) & mask;
        uint64_t v;
        while ((v = slots[j]) != 0) {
            if (v == key) {
                return ctm_ff_corrupted(st, "duplicate frame");
            }
            j = (j + 1) & mask;
        }
        slots[j] = key;
    }
    d->nframes += (Py_ssize_t)n;
    return ctm_ff_section_end(st, c);
}

int
ctm_ff_parse_functions(ctm_ffloader *st, cursor *c)
{
    ctm_snapdata *d = st->d;
    uint64_t n;
    if (items_count(st, c, 2, &n) < 0) {
        return -1;
    }
    /* Every frame is there (the reader checked their count): a gap that
     * passes the last one is caught before it can wrap. */
    const uint64_t nframes = (uint64_t)d->nframes;
    const uint64_t nstrings = (uint64_t)d->nstrings;
    for (uint64_t i = 0; i < n; i++) {
        uint64_t gap, name;
        if (get_varint_pair(c, &gap, &name) < 0) {
            return ctm_ff_bad_payload(st);
        }
        uint64_t next = (uint64_t)(st->named + 1);
        if (gap >= nframes - next) {
            return ctm_ff_corrupted(st, "function frame index out of "
                                        "range");
        }
        if (name >= nstrings) {
            return ctm_ff_corrupted(st, "function name index out of "
                                        "range");
        }
        st->named = (int64_t)(next + gap);
        d->frames[st->named].function = (uint32_t)name;
    }
    return ctm_ff_section_end(st, c);
}

/* Copy n > 0 frame references of width 1, 2 or 4 bytes from p to refs
 * (the caller checks that the bytes are there); their largest, which
 * the caller checks against nframes, once for the traceback. */
static inline uint32_t
get_refs(const uint8_t *p, unsigned width, uint32_t *refs, uint64_t n)
{
    uint32_t max = 0;
    if (width == 1) {
        for (uint64_t k = 0; k < n; k++) {
            uint32_t f = p[k];
            refs[k] = f;
            max = f > max ? f : max;
        }
    }
    else if (width == 2) {
        for (uint64_t k = 0; k < n; k++) {
            uint32_t f = p[2 * k] | (uint32_t)p[2 * k + 1] << 8;
            refs[k] = f;
            max = f > max ? f : max;
        }
    }
    else {
        for (uint64_t k = 0; k < n; k++) {
            uint32_t f = load32le(p + 4 * k);
            refs[k] = f;
            max = f > max ? f : max;
        }
    }
    return max;
}

int
ctm_ff_parse_tracebacks(ctm_ffloader *st, cursor *c)
{
    ctm_snapdata *d = st->d;
    uint64_t n;
    if (items_count(st, c, 2, &n) < 0) {
        return -1;
    }
    if (n > st->ntracebacks - (uint64_t)d->ntracebacks) {
        return ctm_ff_corrupted(st, "more tracebacks than declared");
    }
    unsigned width = 0;         /* version 1: varints */
    if (st->major >= 2) {
        if (cur_left(c) < 1) {
            return ctm_ff_bad_payload(st);
        }
        width = *c->p++;
        if (width != 1 && width != 2 && width != 4) {
            return ctm_ff_corrupted(st, "bad frame reference width");
        }
    }
    /* Decode and check the section's tracebacks, then look them up,
     * with the slots of later tracebacks prefetched. keys: their index
     * hashes (n <= the section's bytes / 2). */
    if (ctm_grow((void **)&st->keys, &st->keys_cap, (size_t)n,
                 sizeof(uint64_t)) < 0) {
        PyErr_NoMemory();
        return -1;
    }
    uint64_t *keys = st->keys;
    const uint64_t nframes = (uint64_t)d->nframes;
    ctm_snap_tb *tbs = d->tracebacks + d->ntracebacks;
    for (uint64_t i = 0; i < n; i++) {
        uint64_t nframe, total;
        if (get_varint(c, &nframe) < 0 || get_varint(c, &total) < 0) {
            return ctm_ff_bad_payload(st);
        }
        if (total > UINT32_MAX) {
            return ctm_ff_corrupted(st, "traceback total_nframe out of range");
        }
        if (nframe > st->nrefs - st->refs_done) {
            return ctm_ff_corrupted(st, "more frame references than declared");
        }
        uint32_t *refs = d->refs + st->refs_done;
        if (width) {
            if (nframe > cur_left(c) / width) {
                return ctm_ff_bad_payload(st);
            }
            if (nframe && get_refs(c->p, width, refs, nframe) >= nframes) {
                return ctm_ff_corrupted(st, "frame reference out of range");
            }
            c->p += width * nframe;
        }
        else {
            for (uint64_t k = 0; k < nframe; k++) {
                uint64_t f;
                if (get_varint(c, &f) < 0) {
                    return ctm_ff_bad_payload(st);
                }
                if (f >= nframes) {
                    return ctm_ff_corrupted(st,
                                            "frame reference out of range");
                }
                refs[k] = (uint32_t)f;
            }
        }
        ctm_snap_tb *t = &tbs[i];
        t->first = (uint32_t)st->refs_done;
        t->nframe = (uint32_t)nframe;
        /* 0 is None (wraps to UINT32_MAX); else total_nframe + 1 */
        t->total_nframe = (uint32_t)total - 1;
        /* One pass over the frames for both hashes: the key of the
         * duplicate index (its low bits pick the slot, its high half
         * tags it) and ctm_snap_tb.hash, the key's low 32 bits
         * (ctm_mix32 of the same state, as the builder's). */
        uint64_t key = ctm_mix64(ctm_traceback_hash_state(refs, t->nframe,
                                                          t->total_nframe));
        t->hash = (uint32_t)key;
        keys[i] = key;
        st->refs_done += nframe;
        d->nrefs = (Py_ssize_t)st->refs_done;
    }
    uint64_t *slots = st->traceback_slots;
    const size_t mask = st->traceback_mask;
    const Py_ssize_t base = d->ntracebacks;
    for (uint64_t i = 0; i < n; i++) {
        if (i + PREFETCH_AHEAD < n) {
            __builtin_prefetch(&slots[keys[i + PREFETCH_AHEAD] & mask], 1);
        }
        const ctm_snap_tb *t = &tbs[i];
        uint64_t hi = keys[i] & ~(uint64_t)UINT32_MAX;
        size_t j = keys[i] & mask;
        uint64_t v;
        while ((v = slots[j]) != 0) {
            const ctm_snap_tb *o = &d->tracebacks[(v & UINT32_MAX) - 1];
            if ((v & ~(uint64_t)UINT32_MAX) == hi
                && o->nframe == t->nframe
                && o->total_nframe == t->total_nframe
                && (t->nframe == 0
                    || memcmp(d->refs + o->first, d->refs + t->first,
                              (size_t)t->nframe * sizeof(uint32_t)) == 0)) {
                return ctm_ff_corrupted(st, "duplicate traceback");
            }
            j = (j + 1) & mask;
        }
        slots[j] = hi | (uint64_t)(base + (Py_ssize_t)i + 1);
    }
    d->ntracebacks += (Py_ssize_t)n;
    return ctm_ff_section_end(st, c);
}

/* Store a trace. The traces array is written once, and is usually far
 * larger than the caches: on x86-64, non-temporal stores write it
 * without first reading each line from memory, which halves the memory
 * traffic of the load's largest cost. stream: out is 16-byte aligned,
 * as they need. */
static inline void
store_trace(ctm_snap_trace *out, uint64_t size, uint64_t tbdom, int stream)
{
#if defined(__SSE2__) && CTM_STREAM_STORES
    if (stream) {
        _mm_stream_si128((__m128i *)out,
                         _mm_set_epi64x((long long)tbdom, (long long)size));
        return;
    }
#else
    (void)stream;
#endif
    out->size = size;
    out->traceback = (uint32_t)tbdom;
    out->domain = (uint32_t)(tbdom >> 32);
}

int
ctm_ff_parse_traces(ctm_ffloader *st, cursor *c)
{
    ctm_snapdata *d = st->d;
    uint64_t n, nruns;
    if (get_varint(c, &n) < 0 || get_varint(c, &nruns) < 0
        || n > cur_left(c) || nruns > n) {
        return ctm_ff_bad_payload(st);
    }
    if (n > st->ntraces - (uint64_t)d->ntraces) {
        return ctm_ff_corrupted(st, "more traces than declared");
    }
    if (n == 0) {
        return ctm_ff_section_end(st, c);
    }

    /* The runs, checked; nruns <= the bytes of this section. */
    if (ctm_grow((void **)&st->runs, &st->runs_cap, (size_t)nruns,
                 sizeof(ctm_ffrun)) < 0) {
        PyErr_NoMemory();
        return -1;
    }
    ctm_ffrun *runs = st->runs;
    const uint64_t ntb = (uint64_t)d->ntracebacks;
    uint64_t filled = 0;
    int64_t prev_tb = -1;
    uint32_t dom = 0;
    for (uint64_t r = 0; r < nruns; r++) {
        uint64_t h;
        if (get_varint(c, &h) < 0) {
            return ctm_ff_bad_payload(st);
        }
        if ((h >> 2) >= n - filled) {
            return ctm_ff_corrupted(st, "trace runs longer than the section");
        }
        int64_t tb = prev_tb + 1;
        if (h & 1) {
            uint64_t z;
            if (get_varint(c, &z) < 0) {
                return ctm_ff_bad_payload(st);
            }
            int64_t delta = unzigzag(z);
            /* Indexes are below 2**32: a larger delta is out of range,
             * and checking it first keeps the sum from overflowing. */
            if (delta > ((int64_t)1 << 33) || delta < -((int64_t)1 << 33)) {
                return ctm_ff_corrupted(st, "trace traceback index out of "
                                        "range");
            }
            tb += delta;
        }
        if (tb < 0 || (uint64_t)tb >= ntb) {
            return ctm_ff_corrupted(st, "trace traceback index out of range");
        }
        if (h & 2) {
            uint64_t v;
            if (get_varint(c, &v) < 0) {
                return ctm_ff_bad_payload(st);
            }
            if (v > UINT32_MAX) {
                return ctm_ff_corrupted(st, "trace domain out of range");
            }
            dom = (uint32_t)v;
        }
        runs[r].count = (h >> 2) + 1;
        runs[r].tbdom = (uint64_t)tb | ((uint64_t)dom << 32);
        filled += runs[r].count;
        prev_tb = tb;
    }
    if (filled != n) {
        return ctm_ff_corrupted(st, "trace runs shorter than the section");
    }

    /* The sizes: control bytes, then data, each size stored with its
     * run's traceback and domain. */
    size_t nctrl = (size_t)(n + 3) / 4;
    if (nctrl > cur_left(c)) {
        return ctm_ff_bad_payload(st);
    }
    const uint8_t *ctrl = c->p;
    const uint8_t *p = ctrl + nctrl;
    const uint8_t *end = c->end;
    if ((n & 3) && (ctrl[nctrl - 1] >> (2 * (n & 3))) != 0) {
        return ctm_ff_corrupted(st, "bad size codes");
    }
    ctm_snap_trace *out = d->traces + d->ntraces;
    const int stream = ((uintptr_t)out & 15) == 0;
    const ctm_ffrun *run = runs;
    uint64_t run_left = run->count;
    uint64_t tbdom = run->tbdom;
#define NEXT_TRACE(SIZE)                                                \
    do {                                                                \
        if (run_left == 0) {                                            \
            run++;                                                      \
            run_left = run->count;                                      \
            tbdom = run->tbdom;                                         \
        }                                                               \
        store_trace(out++, (SIZE), tbdom, stream);                      \
        run_left--;                                                     \
    } while (0)
    uint64_t i = 0;
    /* Four sizes per control byte, without a branch on their lengths
     * (which mix unpredictably), while a group of at most 32 bytes and
     * its 8-byte loads stay inside the payload. */
    for (size_t g = 0; g < (size_t)(n / 4) && end - p >= 32; g++) {
        unsigned cb = ctrl[g];
        unsigned c0 = cb & 3, c1 = (cb >> 2) & 3;
        unsigned c2 = (cb >> 4) & 3, c3 = cb >> 6;
        uint64_t s0 = load64le(p) & size_mask[c0];
        p += size_len[c0];
        uint64_t s1 = load64le(p) & size_mask[c1];
        p += size_len[c1];
        uint64_t s2 = load64le(p) & size_mask[c2];
        p += size_len[c2];
        uint64_t s3 = load64le(p) & size_mask[c3];
        p += size_len[c3];
        NEXT_TRACE(s0);
        NEXT_TRACE(s1);
        NEXT_TRACE(s2);
        NEXT_TRACE(s3);
        i += 4;
    }
    int rc = 0;
    for (; i < n; i++) {
        unsigned code = (ctrl[i >> 2] >> (2 * (i & 3))) & 3;
        size_t len = size_len[code];
        if ((size_t)(end - p) < len) {
            rc = -1;
            break;
        }
        uint64_t v = 0;
        for (size_t b = 0; b < len; b++) {
            v |= (uint64_t)p[b] << (8 * b);
        }
        p += len;
        NEXT_TRACE(v);
    }
#undef NEXT_TRACE
#if defined(__SSE2__) && CTM_STREAM_STORES
    _mm_sfence();
#endif
    if (rc < 0) {
        return ctm_ff_bad_payload(st);
    }
    c->p = p;
    d->ntraces += (Py_ssize_t)n;
    return ctm_ff_section_end(st, c);
}

void
ctm_ff_release(ctm_ffloader *st)
{
    ctm_snapdata_free(st->d);
    st->d = NULL;
    ctm_index_free(&st->strings_ix);
    ctm_free(st->frame_slots);
    ctm_free(st->traceback_slots);
    ctm_free(st->runs);
    ctm_free(st->keys);
    st->frame_slots = st->traceback_slots = NULL;
    st->runs = NULL;
    st->keys = NULL;
    Py_CLEAR(st->limit);
    Py_CLEAR(st->extra);
}
