/* Interned frames and tracebacks of the tracer.
 *
 * Every trace names its traceback by a 32-bit id, so a traceback is
 * stored once however many blocks it allocated. Ids are dense indexes
 * into arrays that only grow until the next clear.
 *
 *  - frames[]: code frames (code object, byte offset) and resolved frames
 *    (filename id, lineno). Line numbers of code frames are resolved on
 *    first use (a snapshot), once per frame, not once per allocation:
 *    that is where the stdlib spends most of its time.
 *  - codes: a record per code object that code frames name (coderecs.h),
 *    with the ids of its frames and of the tracebacks that hold them
 *    (REC_TB). No reference is held: the code object's death notice
 *    (ctm_interner_code_died_unlocked) makes the record's frames resolved
 *    frames in place (same ids, so tracebacks are unchanged), drops its
 *    tracebacks from the stack cache and frees the record: the next code
 *    object at that address is a new key. Invariant: a code frame's code
 *    object is alive, and its record names it. With a code watcher
 *    (3.12+), a new record is complete at once. With co_extra tokens,
 *    its death notice is armed by the caller once the lock is released,
 *    from the OBJ domain's hook (see tracer.c): storing a token allocates
 *    (PyMem), which cannot happen under the tables lock, nor inside any
 *    allocation (one may be resizing that very co_extra); captures that
 *    cannot arm resolve new code objects at once instead.
 *  - tracebacks[]: runs of frame ids in the `ids` arena, most recent
 *    first, with total_nframe.
 *  - cstrings[]: filenames and function names copied out of str
 *    objects for resolved frames (by threads that may not hold the
 *    GIL), rebuilt into str at snapshot time. A code frame's function
 *    name is its code object's (compat.h); a resolved frame's is copied
 *    when the frame is made, from the code object it was resolved from,
 *    and never changes after: a frame met again from another code
 *    object on the same line keeps the first one's.
 *
 * Each array has an open-addressing index of uint32 slots holding
 * id + 1 (0 is empty), at most half full, never deleted from: clear()
 * drops everything at once.
 *
 * In front of them, the stack cache maps a hash of the raw capture (code
 * objects and offsets, as the walk found them) straight to the traceback
 * id, checked against the traceback's frames: a program allocates from
 * the same few stacks over and over, and a hit skips a lookup per frame
 * and the traceback's own lookup. Direct-mapped, overwritten on
 * collision. A traceback's entry can only sit at the slot of its own raw
 * frames, so the death of a code object finds the entries to drop from
 * its record's tracebacks.
 *
 * Nothing here allocates from PyMem or calls Python, except PyCode_Addr2Line
 * which only reads the code object's line table, and reading a co_extra
 * slot.
 */
#include "interning.h"
#include "coderecs.h"

#include <string.h>

#define STACK_CACHE_SIZE 1024   /* entries, a power of two: 32 KiB */

/* The most recent frame is kept in the entry: with one frame per
 * traceback, a hit is checked without reading the interner's arrays. */
typedef struct {
    uint64_t key;               /* hash of the capture; 0: empty */
    PyCodeObject *code;         /* frames[0] */
    int32_t addr;
    uint32_t traceback;
    uint16_t nframe;
    uint16_t total_nframe;
} stack_cache_entry;

/* A code record's items: its frames' ids, and the ids of the tracebacks
 * that hold them | REC_TB. */
#define REC_TB 0x80000000u

struct ctm_interner {
    ctm_tframe *frames;
    uint32_t nframes;
    size_t capframes;
    ctm_index frames_ix;

    ctm_ttb *tracebacks;
    uint32_t ntracebacks;
    size_t captracebacks;
    ctm_index tracebacks_ix;

    uint32_t *ids;              /* frame id arena for tracebacks */
    uint32_t nids;
    size_t capids;
    /* The same frames as (code, offset), beside ids: the stack cache
     * checks a hit against them without going through frames[]. */
    PyCodeObject **raw_codes;   /* NULL for a resolved frame */
    int32_t *raw_addrs;
    size_t cap_raw_codes, cap_raw_addrs;

    ctm_cstring *cstrings;
    uint32_t ncstrings;
    size_t capcstrings;
    ctm_index cstrings_ix;

    int64_t unknown;            /* id of the <unknown> traceback or -1 */
    int64_t unknown_cstring;    /* id of "<unknown>" or -1; there once a
                                   record is */

    ctm_coderecs codes;
    /* Compaction: the size (tracebacks and frames) after the last one,
     * and the size at which the next is due. */
    size_t compacted;
    size_t compact_at;
    /* Kept across clear(): */
    size_t compact_min;         /* COMPACT_MIN, or the test builds' */

    stack_cache_entry stack_cache[STACK_CACHE_SIZE];
};

/* What compaction is measured by (see there). */
static inline size_t
interner_size(const ctm_interner *in)
{
    return (size_t)in->ntracebacks + in->nframes;
}

/* ---- frames ---- */

static inline uint32_t
frame_key_hash(const PyCodeObject *code, int32_t a, int32_t b)
{
    return ctm_mix32((uint64_t)(uintptr_t)code * 31
                     ^ ((uint64_t)(uint32_t)a << 32) ^ (uint32_t)b);
}

static uint32_t
frame_hash(const void *owner, uint32_t id)
{
    const ctm_interner *in = owner;
    const ctm_tframe *f = &in->frames[id];
    if (f->code != NULL) {
        return frame_key_hash(f->code, f->addr, 0);
    }
    return frame_key_hash(NULL, (int32_t)f->filename, f->lineno);
}

static int64_t intern_cstring(ctm_interner *in, PyObject *str);

/* ---- code records ---- */

/* A new record for code (coderecs.h). -1 on memory error. */
static int64_t
new_rec(ctm_interner *in, PyCodeObject *code)
{
    /* The filename is copied at death, not now: the copies of live code
     * objects' filenames would be made into str by every snapshot. The
     * death notice cannot fail, so "<unknown>" is kept ready. */
    if (in->unknown_cstring < 0) {
        in->unknown_cstring = intern_cstring(in, NULL);
    }
    if (in->unknown_cstring < 0) {
        return -1;
    }
    return ctm_coderecs_new(&in->codes, code);
}

/* Intern a resolved frame (a = filename id, b = lineno), or look up a
 * code frame (code != NULL, a = offset): then a missing one is added
 * only when rec >= 0 (the code's record). -1: memory error, or a missing
 * code frame with rec < 0. */
static int64_t
intern_frame(ctm_interner *in, PyCodeObject *code, int32_t a, int32_t b,
             int64_t rec)
{
    if (ctm_index_reserve(&in->frames_ix, in->nframes, frame_hash,
                          in) < 0) {
        return -1;
    }
    uint32_t h = code ? frame_key_hash(code, a, 0)
                      : frame_key_hash(NULL, a, b);
    uint32_t j = h & in->frames_ix.mask;
    uint32_t v;
    while ((v = in->frames_ix.slots[j]) != 0) {
        const ctm_tframe *f = &in->frames[v - 1];
        if (code != NULL ? (f->code == code && f->addr == a)
                         : (f->code == NULL && f->filename == (uint32_t)a
                            && f->lineno == b)) {
            return v - 1;
        }
        j = (j + 1) & in->frames_ix.mask;
    }
    if ((code != NULL && rec < 0)
        || ctm_grow((void **)&in->frames, &in->capframes,
                    (size_t)in->nframes + 1, sizeof(ctm_tframe)) < 0) {
        return -1;
    }
    uint32_t id = in->nframes;
    if (code != NULL && ctm_coderec_add(&in->codes.recs[rec], id) < 0) {
        return -1;
    }
    in->nframes++;
    ctm_tframe *f = &in->frames[id];
    f->code = code;
    if (code != NULL) {
        f->addr = a;
        f->lineno = 0;
        f->filename = (uint32_t)rec;
        f->flags = 0;
        f->function = 0;
    }
    else {
        f->addr = 0;
        f->filename = (uint32_t)a;
        f->lineno = b;
        f->flags = CTM_FRAME_LINE_KNOWN;
        f->function = 0;
    }
    in->frames_ix.slots[j] = id + 1;
    return id;
}

/* The function name of code as a string id + 1 (ctm_tframe.function),
 * or 0 if it has none or memory ran out: the name is only for reports,
 * its loss is no reason to fail a capture. */
static uint32_t
code_function_id(ctm_interner *in, const PyCodeObject *code)
{
    PyObject *name = ctm_code_function(code);
    if (name == NULL || !PyUnicode_Check(name)) {
        return 0;
    }
    int64_t s = intern_cstring(in, name);
    return s < 0 ? 0 : (uint32_t)s + 1;
}

/* The resolved frame of (code, addr), as the stdlib records it. A new
 * one takes the name of code's function; one that exists keeps its own
 * (first seen wins), so the name costs nothing once the frame is made. */
static int64_t
intern_resolved(ctm_interner *in, PyCodeObject *code, int addr)
{
    int line = PyCode_Addr2Line(code, addr);
    int64_t s = intern_cstring(in, code->co_filename);
    if (s < 0) {
        return -1;
    }
    uint32_t before = in->nframes;
    int64_t f = intern_frame(in, NULL, (int32_t)s, line < 0 ? 0 : line, -1);
    if (f >= 0 && (uint32_t)f >= before) {
        in->frames[f].function = code_function_id(in, code);
    }
    return f;
}

/* The frame of (code, addr) for a capture with the GIL: a code frame
 * when the code has a record or may get one (with a code watcher; with
 * co_extra tokens if arm, then *arm = 1), else a resolved frame (and
 * *resolved = 1). */
static int64_t
intern_code_frame(ctm_interner *in, PyCodeObject *code, int addr,
                  int *arm, int *resolved)
{
    int64_t f = intern_frame(in, code, addr, 0, -1);
    ctm_notice notice = in->codes.notice;
    if (f >= 0 || notice == CTM_NOTICE_NONE) {
        if (f < 0) {
            *resolved = 1;
            return intern_resolved(in, code, addr);
        }
        return f;
    }
    int64_t rec = ctm_coderecs_find(&in->codes, code);
    if (rec < 0) {
        int extra = notice == CTM_NOTICE_CO_EXTRA;
        if (extra && arm == NULL) {
            *resolved = 1;
            return intern_resolved(in, code, addr);
        }
        rec = new_rec(in, code);
        if (rec < 0) {
            return -1;
        }
        if (extra) {
            *arm = 1;
        }
    }
    return intern_frame(in, code, addr, 0, rec);
}

int
ctm_tframe_lineno_unlocked(ctm_tframe *f)
{
    if (!(f->flags & CTM_FRAME_LINE_KNOWN)) {
        int line = PyCode_Addr2Line(f->code, f->addr);
        f->lineno = line < 0 ? 0 : line;
        f->flags |= CTM_FRAME_LINE_KNOWN;
    }
    return f->lineno;
}

/* ---- filenames copied without the GIL ---- */

static uint64_t
cstring_hash(int kind, Py_ssize_t length, const void *data)
{
    const unsigned char *p = data;
    size_t n = (size_t)length * (size_t)kind;
    uint64_t h = 0xcbf29ce484222325ULL ^ (uint64_t)kind;
    for (size_t i = 0; i < n; i++) {
        h = (h ^ p[i]) * 0x100000001b3ULL;
    }
    return h;
}

static uint32_t
cstring_ix_hash(const void *owner, uint32_t id)
{
    const ctm_interner *in = owner;
    return ctm_mix32(in->cstrings[id].hash);
}

/* Intern the characters (kind, length, data), whose cstring_hash is h:
 * a copy is made the first time. */
static int64_t
intern_chars(ctm_interner *in, int kind, Py_ssize_t length, const void *data,
             uint64_t h)
{
    if (ctm_index_reserve(&in->cstrings_ix, in->ncstrings, cstring_ix_hash,
                          in) < 0) {
        return -1;
    }
    uint32_t j = ctm_mix32(h) & in->cstrings_ix.mask;
    uint32_t v;
    size_t nbytes = (size_t)length * (size_t)kind;
    while ((v = in->cstrings_ix.slots[j]) != 0) {
        const ctm_cstring *c = &in->cstrings[v - 1];
        if (c->hash == h && c->kind == kind && c->length == length
            && memcmp(c->data, data, nbytes) == 0) {
            return v - 1;
        }
        j = (j + 1) & in->cstrings_ix.mask;
    }
    if (ctm_grow((void **)&in->cstrings, &in->capcstrings,
                 (size_t)in->ncstrings + 1, sizeof(ctm_cstring)) < 0) {
        return -1;
    }
    void *copy = ctm_malloc(nbytes ? nbytes : 1);
    if (copy == NULL) {
        return -1;
    }
    memcpy(copy, data, nbytes);
    uint32_t id = in->ncstrings++;
    ctm_cstring *c = &in->cstrings[id];
    c->kind = kind;
    c->length = length;
    c->data = copy;
    c->hash = h;
    in->cstrings_ix.slots[j] = id + 1;
    return id;
}

/* Intern the characters of str (read without the GIL: a str's data never
 * changes, and the frame that holds its code object keeps it alive);
 * NULL or a str not ready: "<unknown>". */
static int64_t
intern_cstring(ctm_interner *in, PyObject *str)
{
    static const char unknown[] = "<unknown>";
    if (str != NULL && PyUnicode_Check(str) && PyUnicode_IS_READY(str)) {
        int kind = PyUnicode_KIND(str);
        Py_ssize_t length = PyUnicode_GET_LENGTH(str);
        const void *data = PyUnicode_DATA(str);
        return intern_chars(in, kind, length, data,
                            cstring_hash(kind, length, data));
    }
    Py_ssize_t length = (Py_ssize_t)sizeof(unknown) - 1;
    return intern_chars(in, PyUnicode_1BYTE_KIND, length, unknown,
                        cstring_hash(PyUnicode_1BYTE_KIND, length, unknown));
}

const ctm_cstring *
ctm_interner_cstring_unlocked(const ctm_interner *in, uint32_t id)
{
    return &in->cstrings[id];
}

uint32_t
ctm_interner_ncstrings_unlocked(const ctm_interner *in)
{
    return in->ncstrings;
}

/* ---- tracebacks ---- */

static uint32_t
tb_ix_hash(const void *owner, uint32_t id)
{
    const ctm_interner *in = owner;
    return in->tracebacks[id].hash;
}

/* Intern the traceback of frame ids ids[0..n) and total. recs: the
 * records of its code frames name it (0 only while compacting, which
 * names them afterwards). */
static int64_t
intern_ids(ctm_interner *in, const uint32_t *ids, int n, int total, int recs)
{
    if (ctm_index_reserve(&in->tracebacks_ix, in->ntracebacks, tb_ix_hash,
                          in) < 0) {
        return -1;
    }
    uint32_t h = ctm_traceback_hash(ids, (uint32_t)n, (uint32_t)total);
    uint32_t j = h & in->tracebacks_ix.mask;
    uint32_t v;
    while ((v = in->tracebacks_ix.slots[j]) != 0) {
        const ctm_ttb *t = &in->tracebacks[v - 1];
        if (t->hash == h && t->nframe == n && t->total_nframe == total
            && memcmp(&in->ids[t->first], ids,
                      (size_t)n * sizeof(uint32_t)) == 0) {
            return v - 1;
        }
        j = (j + 1) & in->tracebacks_ix.mask;
    }
    /* ids are uint32 indexes into the arena */
    size_t nids = (size_t)in->nids + (size_t)n;
    if (nids >= UINT32_MAX
        || ctm_grow((void **)&in->tracebacks, &in->captracebacks,
                    (size_t)in->ntracebacks + 1, sizeof(ctm_ttb)) < 0
        || ctm_grow((void **)&in->ids, &in->capids, nids,
                    sizeof(uint32_t)) < 0
        || ctm_grow((void **)&in->raw_codes, &in->cap_raw_codes, nids,
                    sizeof(PyCodeObject *)) < 0
        || ctm_grow((void **)&in->raw_addrs, &in->cap_raw_addrs, nids,
                    sizeof(int32_t)) < 0) {
        return -1;
    }
    /* The records of its code frames name it, for the stack cache's
     * sake (once per run of the same code). On failure some may name an
     * id that another traceback gets: the most that costs is a cache
     * entry dropped for nothing. */
    uint32_t id = in->ntracebacks;
    for (int i = 0; recs && i < n; i++) {
        const ctm_tframe *f = &in->frames[ids[i]];
        if (f->code != NULL) {
            ctm_coderec *r = &in->codes.recs[f->filename];
            if ((r->n == 0 || r->items[r->n - 1] != (id | REC_TB))
                && ctm_coderec_add(r, id | REC_TB) < 0) {
                return -1;
            }
        }
    }
    in->ntracebacks++;
    ctm_ttb *t = &in->tracebacks[id];
    t->first = in->nids;
    t->nframe = (uint16_t)n;
    t->total_nframe = (uint16_t)total;
    t->hash = h;
    memcpy(&in->ids[in->nids], ids, (size_t)n * sizeof(uint32_t));
    for (int i = 0; i < n; i++) {
        const ctm_tframe *f = &in->frames[ids[i]];
        in->raw_codes[in->nids + (uint32_t)i] = f->code;
        in->raw_addrs[in->nids + (uint32_t)i] = f->addr;
    }
    in->nids += (uint32_t)n;
    in->tracebacks_ix.slots[j] = id + 1;
    return id;
}

int64_t
ctm_intern_unknown_unlocked(ctm_interner *in)
{
    if (in->unknown >= 0) {
        return in->unknown;
    }
    int64_t s = intern_cstring(in, NULL);
    if (s < 0) {
        return -1;
    }
    int64_t f = intern_frame(in, NULL, (int32_t)s, 0, -1);
    if (f < 0) {
        return -1;
    }
    uint32_t fid = (uint32_t)f;
    int64_t tb = intern_ids(in, &fid, 1, 1, 1);
    if (tb >= 0) {
        in->unknown = tb;
    }
    return tb;
}

/* ---- the stack cache ---- */

/* The key of a raw capture: a positional sum hash (util.h) of its
 * frames, never 0 (an empty entry). */
static inline uint64_t
stack_key_start(int nframe, int total_nframe)
{
    return 0x243F6A8885A308D3ULL ^ ((uint64_t)(uint32_t)total_nframe << 20)
           ^ (uint32_t)nframe;
}

static inline uint64_t
stack_key_term(const PyCodeObject *code, int32_t addr, int i)
{
    return ctm_hash_term((uint64_t)(uintptr_t)code
                         ^ ((uint64_t)(uint32_t)addr << 32) ^ (uint64_t)i);
}

static inline uint64_t
stack_key(const ctm_rawframe *frames, int nframe, int total_nframe)
{
    uint64_t h = stack_key_start(nframe, total_nframe);
    for (int i = 0; i < nframe; i++) {
        h += stack_key_term(frames[i].code, frames[i].addr, i);
    }
    return ctm_mix64(h) | 1;
}

static inline stack_cache_entry *
stack_entry(ctm_interner *in, uint64_t key)
{
    return &in->stack_cache[(key >> 7) & (STACK_CACHE_SIZE - 1)];
}

/* Drop the stack cache's entry of traceback tb, if it has one: the entry
 * of a capture sits at the slot of the capture's key, and the capture
 * is the traceback's raw frames. */
static void
stack_cache_drop(ctm_interner *in, uint32_t tb)
{
    const ctm_ttb *t = &in->tracebacks[tb];
    uint64_t h = stack_key_start(t->nframe, t->total_nframe);
    for (uint32_t i = 0; i < t->nframe; i++) {
        h += stack_key_term(in->raw_codes[t->first + i],
                            in->raw_addrs[t->first + i], (int)i);
    }
    uint64_t key = ctm_mix64(h) | 1;
    stack_cache_entry *e = stack_entry(in, key);
    if (e->key == key && e->traceback == tb) {
        e->key = 0;
    }
}

/* Whether entry e names exactly these code frames. */
static inline int
stack_matches(const ctm_interner *in, const stack_cache_entry *e,
              uint64_t key, const ctm_rawframe *frames, int nframe,
              int total_nframe)
{
    if (e->key != key || e->code != frames[0].code
        || e->addr != frames[0].addr || e->nframe != nframe
        || e->total_nframe != total_nframe) {
        return 0;
    }
    uint32_t first = in->tracebacks[e->traceback].first;
    PyCodeObject *const *codes = &in->raw_codes[first];
    const int32_t *addrs = &in->raw_addrs[first];
    int same = 1;
    for (int i = 1; i < nframe; i++) {
        same &= (codes[i] == frames[i].code) & (addrs[i] == frames[i].addr);
    }
    return same;
}

static int64_t intern_capture(ctm_interner *in, const ctm_rawframe *frames,
                              int nframe, int total_nframe, int gil,
                              int *arm, int *resolved);

int64_t
ctm_intern_traceback_unlocked(ctm_interner *in, const ctm_rawframe *frames,
                              int nframe, int total_nframe, int gil,
                              int *arm)
{
    if (nframe == 0) {
        return ctm_intern_unknown_unlocked(in);
    }
    int resolved = 0;
    if (!gil) {
        arm = NULL;             /* see intern_capture */
    }
    uint64_t key = stack_key(frames, nframe, total_nframe);
    stack_cache_entry *e = stack_entry(in, key);
    if (stack_matches(in, e, key, frames, nframe, total_nframe)) {
        return e->traceback;
    }
    int64_t id = intern_capture(in, frames, nframe, total_nframe, gil, arm,
                                &resolved);
    if (arm != NULL && interner_size(in) >= in->compact_at) {
        *arm = 1;               /* the caller's after-work compacts */
    }
    if (id >= 0 && !resolved) {
        /* (A traceback with resolved frames could never match.) */
        e->key = key;
        e->code = frames[0].code;
        e->addr = frames[0].addr;
        e->traceback = (uint32_t)id;
        e->nframe = (uint16_t)nframe;
        e->total_nframe = (uint16_t)total_nframe;
    }
    return id;
}

static int64_t
intern_capture(ctm_interner *in, const ctm_rawframe *frames, int nframe,
               int total_nframe, int gil, int *arm, int *resolved)
{
    uint32_t stack_ids[128];
    uint32_t *ids = stack_ids;
    int64_t result = -1;
    if (nframe > 128) {
        ids = ctm_malloc((size_t)nframe * sizeof(uint32_t));
        if (ids == NULL) {
            return -1;
        }
    }
    for (int i = 0; i < nframe; i++) {
        /* Without the GIL, a code object that has no record gets one
         * only from a code watcher: a co_extra token could not be stored,
         * and the frame is resolved at once. One that has a record (met
         * with the GIL before) gives its code frame: the code objects of
         * the capture are alive, on the thread's stack, and a record's
         * frames are resolved at its death. */
        int64_t f = intern_code_frame(in, frames[i].code, frames[i].addr,
                                      gil ? arm : NULL, resolved);
        if (f < 0) {
            goto done;
        }
        ids[i] = (uint32_t)f;
    }
    result = intern_ids(in, ids, nframe, total_nframe, 1);
done:
    if (ids != stack_ids) {
        ctm_free(ids);
    }
    return result;
}

/* ---- the death of code objects ---- */

int
ctm_interner_unarmed_unlocked(ctm_interner *in, PyCodeObject **code,
                              void **token)
{
    return ctm_coderecs_unarmed(&in->codes, code, token);
}

/* The death of the code object of record rec. */
static void
code_died(ctm_interner *in, uint32_t rec)
{
    ctm_coderec *r = &in->codes.recs[rec];
    int64_t filename = -1;
    uint32_t function = 0;
    for (uint32_t i = 0; i < r->n; i++) {
        uint32_t item = r->items[i];
        if (item & REC_TB) {
            if ((item & ~REC_TB) < in->ntracebacks) {
                stack_cache_drop(in, item & ~REC_TB);
            }
            continue;
        }
        /* The same id, now (filename, lineno): the tracebacks that name
         * it keep their meaning. It leaves the index, where its key will
         * be another code object's (at the same address), and does not
         * go back under its new one: interning never returns it again,
         * and the many frames resolved from code objects with the same
         * filename and line would crowd one probe run. */
        ctm_tframe *f = &in->frames[item];
        CTM_ASSERT(f->code == r->code && f->filename == rec);
        uint32_t j = frame_key_hash(f->code, f->addr, 0)
                     & in->frames_ix.mask;
        while (in->frames_ix.slots[j] != item + 1) {
            CTM_ASSERT(in->frames_ix.slots[j] != 0);
            j = (j + 1) & in->frames_ix.mask;
        }
        ctm_index_remove(&in->frames_ix, j, frame_hash, in);
        if (filename < 0) {
            filename = intern_cstring(in, r->code->co_filename);
            if (filename < 0) {
                filename = in->unknown_cstring;     /* out of memory */
            }
            function = code_function_id(in, r->code);
        }
        ctm_tframe_lineno_unlocked(f);
        f->code = NULL;
        f->addr = 0;
        f->filename = (uint32_t)filename;
        f->function = function;
    }
    ctm_coderecs_free(&in->codes, rec);
}

void
ctm_interner_code_died_unlocked(ctm_interner *in, void *token)
{
    int64_t rec = ctm_coderecs_of_token(&in->codes, token);
    if (rec >= 0) {
        code_died(in, (uint32_t)rec);
    }
}

int
ctm_interner_code_object_died_unlocked(ctm_interner *in, PyCodeObject *code)
{
    int64_t rec = ctm_coderecs_find(&in->codes, code);
    if (rec < 0) {
        return 0;
    }
    code_died(in, (uint32_t)rec);
    return 1;
}

/* ---- compaction ----
 *
 * Frames, tracebacks and filenames are not freed one by one. A traceback
 * that no live trace names, the frames that only such tracebacks name
 * and the filenames that only such frames name go when the interner is
 * compacted: the tracebacks that live traces name are interned again
 * into a fresh interner, in their old order, which then gives its tables
 * to this one. Interning again makes the resolved frames of dead code
 * objects that have the same filename and line one frame, and the
 * tracebacks made of them one traceback. Traceback ids change, and the
 * caller renames the traces with the map; records keep their ids (their
 * tokens are in co_extra slots, or the watcher's index names them) and
 * get their items again; the stack cache starts empty.
 *
 * It is due when the interner has doubled (and grown by COMPACT_MIN)
 * since the last compaction, and by an eighth of the live traces, which
 * the caller walks twice: the interning done since pays for it. */
#define COMPACT_MIN 16384

/* The COMPACT_MIN of a new interner. Test builds take it from
 * CTRACEMALLOC_TEST_COMPACT_MIN, so that the suite can compact all the
 * time. */
static size_t
compact_min(void)
{
#ifdef CTM_SELF_CHECK
    const char *v = getenv("CTRACEMALLOC_TEST_COMPACT_MIN");
    if (v != NULL && *v) {
        return (size_t)strtoul(v, NULL, 10);
    }
#endif
    return COMPACT_MIN;
}

int
ctm_interner_compaction_due_unlocked(ctm_interner *in, size_t ntraces)
{
    size_t size = interner_size(in);
    if (size < in->compact_at) {
        return 0;
    }
    if (size - in->compacted < ntraces / 8) {
        /* not before the walk is paid for (stack-cache misses would ask
         * at every one until then) */
        in->compact_at = in->compacted + ntraces / 8;
        return 0;
    }
    return 1;
}

/* Free the tables that compaction replaces: frames, tracebacks,
 * filenames and their indexes. */
static void
free_tables(ctm_interner *in)
{
    for (uint32_t i = 0; i < in->ncstrings; i++) {
        ctm_free(in->cstrings[i].data);
    }
    ctm_free(in->frames);
    ctm_index_free(&in->frames_ix);
    ctm_free(in->tracebacks);
    ctm_index_free(&in->tracebacks_ix);
    ctm_free(in->ids);
    ctm_free(in->raw_codes);
    ctm_free(in->raw_addrs);
    ctm_free(in->cstrings);
    ctm_index_free(&in->cstrings_ix);
}

/* Give the tables of from to to, whose own are freed. */
static void
move_tables(ctm_interner *to, const ctm_interner *from)
{
    free_tables(to);
    to->frames = from->frames;
    to->nframes = from->nframes;
    to->capframes = from->capframes;
    to->frames_ix = from->frames_ix;
    to->tracebacks = from->tracebacks;
    to->ntracebacks = from->ntracebacks;
    to->captracebacks = from->captracebacks;
    to->tracebacks_ix = from->tracebacks_ix;
    to->ids = from->ids;
    to->nids = from->nids;
    to->capids = from->capids;
    to->raw_codes = from->raw_codes;
    to->raw_addrs = from->raw_addrs;
    to->cap_raw_codes = from->cap_raw_codes;
    to->cap_raw_addrs = from->cap_raw_addrs;
    to->cstrings = from->cstrings;
    to->ncstrings = from->ncstrings;
    to->capcstrings = from->capcstrings;
    to->cstrings_ix = from->cstrings_ix;
    to->unknown = from->unknown;
    to->unknown_cstring = from->unknown_cstring;
}

/* Intern frame old of in into nw: a code frame as it is (it has no equal
 * there), a resolved frame by its contents. */
static int64_t
copy_frame(ctm_interner *nw, const ctm_interner *in, uint32_t old)
{
    const ctm_tframe *f = &in->frames[old];
    if (f->code == NULL) {
        const ctm_cstring *c = &in->cstrings[f->filename];
        int64_t s = intern_chars(nw, c->kind, c->length, c->data, c->hash);
        if (s < 0) {
            return -1;
        }
        uint32_t before = nw->nframes;
        int64_t id = intern_frame(nw, NULL, (int32_t)s, f->lineno, -1);
        if (id >= 0 && (uint32_t)id >= before && f->function) {
            /* the first of the frames that become one keeps its name */
            c = &in->cstrings[f->function - 1];
            s = intern_chars(nw, c->kind, c->length, c->data, c->hash);
            if (s < 0) {
                return -1;
            }
            nw->frames[id].function = (uint32_t)s + 1;
        }
        return id;
    }
    if (ctm_index_reserve(&nw->frames_ix, nw->nframes, frame_hash, nw) < 0
        || ctm_grow((void **)&nw->frames, &nw->capframes,
                    (size_t)nw->nframes + 1, sizeof(ctm_tframe)) < 0) {
        return -1;
    }
    uint32_t id = nw->nframes++;
    nw->frames[id] = *f;
    ctm_index_put(&nw->frames_ix, frame_key_hash(f->code, f->addr, 0), id);
    return id;
}

/* Calls fn(in, rec, item) for the items the records get from the tables
 * of t: each code frame, then each traceback once per record it names
 * (seen: a scratch array of in->codes.nrecs). */
static void
rec_items(const ctm_interner *t, uint32_t *seen,
          void (*fn)(ctm_interner *, uint32_t, uint32_t), ctm_interner *in)
{
    for (uint32_t id = 0; id < t->nframes; id++) {
        if (t->frames[id].code != NULL) {
            fn(in, t->frames[id].filename, id);
        }
    }
    memset(seen, 0, (size_t)in->codes.nrecs * sizeof(uint32_t));
    for (uint32_t tb = 0; tb < t->ntracebacks; tb++) {
        const ctm_ttb *b = &t->tracebacks[tb];
        for (uint32_t i = 0; i < b->nframe; i++) {
            const ctm_tframe *f = &t->frames[t->ids[b->first + i]];
            if (f->code != NULL && seen[f->filename] != tb + 1) {
                seen[f->filename] = tb + 1;
                fn(in, f->filename, tb | REC_TB);
            }
        }
    }
}

static void
count_item(ctm_interner *in, uint32_t rec, uint32_t item)
{
    (void)item;
    CTM_ASSERT(in->codes.recs[rec].code != NULL);
    in->codes.recs[rec].n++;
}

static void
put_item(ctm_interner *in, uint32_t rec, uint32_t item)
{
    ctm_coderec *r = &in->codes.recs[rec];
    CTM_ASSERT(r->code != NULL && r->n < r->cap);
    r->items[r->n++] = item;
}

/* Give the records their items from the tables of nw, which then become
 * in's. 0, or -1 if memory ran out (then in is unchanged, but for more
 * room in some records). A free record's n is its free-list link: only
 * records in use are counted and filled. */
static int
refill_recs(ctm_interner *in, const ctm_interner *nw)
{
    ctm_coderecs *cr = &in->codes;
    size_t nrecs = cr->nrecs ? cr->nrecs : 1;
    uint32_t *seen = ctm_malloc(nrecs * sizeof(uint32_t));
    uint32_t *had = ctm_malloc(nrecs * sizeof(uint32_t));
    if (seen == NULL || had == NULL) {
        ctm_free(seen);
        ctm_free(had);
        return -1;
    }
    for (uint32_t i = 0; i < cr->nrecs; i++) {
        if (cr->recs[i].code != NULL) {
            had[i] = cr->recs[i].n;
            cr->recs[i].n = 0;
        }
    }
    rec_items(nw, seen, count_item, in);
    int ok = 1;
    for (uint32_t i = 0; i < cr->nrecs; i++) {
        ctm_coderec *r = &cr->recs[i];
        if (r->code != NULL && r->n > r->cap) {
            uint32_t *items = ctm_realloc(r->items,
                                          (size_t)r->n * sizeof(uint32_t));
            if (items == NULL) {
                ok = 0;
                continue;
            }
            r->items = items;
            r->cap = r->n;
        }
    }
    for (uint32_t i = 0; i < cr->nrecs; i++) {
        if (cr->recs[i].code != NULL) {
            cr->recs[i].n = ok ? 0 : had[i];
        }
    }
    if (ok) {
        rec_items(nw, seen, put_item, in);
    }
    ctm_free(seen);
    ctm_free(had);
    return ok ? 0 : -1;
}

int64_t
ctm_interner_compact_unlocked(ctm_interner *in, const uint64_t *counts,
                              uint32_t *map)
{
    uint32_t ntb = in->ntracebacks;
    uint32_t maxn = 1;
    for (uint32_t tb = 0; tb < ntb; tb++) {
        if (counts[tb] && in->tracebacks[tb].nframe > maxn) {
            maxn = in->tracebacks[tb].nframe;
        }
    }
    ctm_interner *nw = ctm_interner_new();
    uint32_t *fmap = ctm_malloc((in->nframes ? in->nframes : 1)
                                * sizeof(uint32_t));
    uint32_t *ids = ctm_malloc(maxn * sizeof(uint32_t));
    if (nw == NULL || fmap == NULL || ids == NULL) {
        goto fail;
    }
    memset(fmap, 0xff, (size_t)in->nframes * sizeof(uint32_t));
    for (uint32_t tb = 0; tb < ntb; tb++) {
        map[tb] = UINT32_MAX;
        if (!counts[tb]) {
            continue;
        }
        const ctm_ttb *t = &in->tracebacks[tb];
        for (uint32_t i = 0; i < t->nframe; i++) {
            uint32_t old = in->ids[t->first + i];
            if (fmap[old] == UINT32_MAX) {
                int64_t f = copy_frame(nw, in, old);
                if (f < 0) {
                    goto fail;
                }
                fmap[old] = (uint32_t)f;
            }
            ids[i] = fmap[old];
        }
        int64_t id = intern_ids(nw, ids, t->nframe, t->total_nframe, 0);
        if (id < 0) {
            goto fail;
        }
        map[tb] = (uint32_t)id;
    }
    if (in->unknown_cstring >= 0) {
        const ctm_cstring *c = &in->cstrings[in->unknown_cstring];
        nw->unknown_cstring = intern_chars(nw, c->kind, c->length, c->data,
                                           c->hash);
        if (nw->unknown_cstring < 0) {
            goto fail;
        }
    }
    if (in->unknown >= 0 && map[in->unknown] != UINT32_MAX) {
        nw->unknown = map[in->unknown];
    }
    if (refill_recs(in, nw) < 0) {
        goto fail;
    }
    move_tables(in, nw);
    memset(in->stack_cache, 0, sizeof(in->stack_cache));
    in->compacted = interner_size(in);
    in->compact_at = 2 * in->compacted + in->compact_min;
    ctm_free(nw);
    ctm_free(fmap);
    ctm_free(ids);
    return in->ntracebacks;
fail:
    if (nw != NULL) {
        free_tables(nw);
        ctm_free(nw);
    }
    ctm_free(fmap);
    ctm_free(ids);
    /* Not again before the interner has grown by half. */
    in->compact_at = interner_size(in) + interner_size(in) / 2
                     + in->compact_min;
    return -1;
}

/* ---- lifetime and reading ---- */

ctm_interner *
ctm_interner_new(void)
{
    ctm_interner *in = ctm_calloc(1, sizeof(*in));
    if (in != NULL) {
        in->unknown = -1;
        in->unknown_cstring = -1;
        in->compact_min = compact_min();
        in->compact_at = in->compact_min;
        ctm_coderecs_init(&in->codes);
    }
    return in;
}

void
ctm_interner_set_notice(ctm_interner *in, ctm_notice notice,
                        Py_ssize_t extra_index)
{
    ctm_coderecs_set_notice(&in->codes, notice, extra_index);
}

void
ctm_interner_clear_unlocked(ctm_interner *in)
{
    free_tables(in);
    ctm_coderecs_clear(&in->codes);
    ctm_coderecs codes = in->codes;
    size_t compact_min = in->compact_min;
    memset(in, 0, sizeof(*in));
    in->unknown = -1;
    in->unknown_cstring = -1;
    in->compact_min = compact_min;
    in->compact_at = compact_min;
    in->codes = codes;
}

size_t
ctm_interner_memory_unlocked(const ctm_interner *in)
{
    size_t n = sizeof(*in);
    n += (size_t)in->capframes * sizeof(ctm_tframe);
    n += (size_t)in->captracebacks * sizeof(ctm_ttb);
    n += (size_t)in->capids * sizeof(uint32_t);
    n += (size_t)in->cap_raw_codes * sizeof(PyCodeObject *);
    n += (size_t)in->cap_raw_addrs * sizeof(int32_t);
    n += (size_t)in->capcstrings * sizeof(ctm_cstring);
    n += ctm_coderecs_memory(&in->codes);
    for (uint32_t i = 0; i < in->ncstrings; i++) {
        n += (size_t)in->cstrings[i].length * (size_t)in->cstrings[i].kind;
    }
    n += (ctm_index_capacity(&in->frames_ix)
          + ctm_index_capacity(&in->tracebacks_ix)
          + ctm_index_capacity(&in->cstrings_ix)) * sizeof(uint32_t);
    return n;
}

size_t
ctm_interner_ntracebacks_unlocked(const ctm_interner *in)
{
    return in->ntracebacks;
}

const ctm_ttb *
ctm_interner_traceback_unlocked(const ctm_interner *in, uint32_t id)
{
    return &in->tracebacks[id];
}

const uint32_t *
ctm_interner_frame_ids_unlocked(const ctm_interner *in)
{
    return in->ids;
}

uint32_t
ctm_interner_nframes_unlocked(const ctm_interner *in)
{
    return in->nframes;
}

ctm_tframe *
ctm_interner_frame_unlocked(ctm_interner *in, uint32_t id)
{
    return &in->frames[id];
}
