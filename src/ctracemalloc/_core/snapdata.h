/* Snapshot data (snapdata.c): the layer between the tracer and
 * everything that reads snapshots.
 *
 * The whole content of a snapshot as flat arrays, immutable once built.
 * Invariants, which every producer (take_snapshot, the Snapshot
 * constructor, filter_traces, load) keeps and every consumer may rely on:
 *
 *  - strings[i] is an exact str, and no two strings are equal;
 *  - no two frames are equal (same filename index and lineno): a frame's
 *    function name is not part of its identity, as Frame's equality
 *    has only filename and lineno; where frames of two functions meet
 *    on one line, the frame keeps the first name it was given;
 *  - no two tracebacks are equal (same frame sequence and total_nframe);
 *    two tracebacks may have the same frame sequence and differ only in
 *    total_nframe;
 *  - every index is in range: frame.filename < nstrings, frame.function
 *    < nstrings or CTM_NO_FUNCTION,
 *    refs[tb.first .. tb.first + tb.nframe) < nframes,
 *    trace.traceback < ntracebacks;
 *  - a traceback's frames are stored most recent first, as the raw
 *    tuples of the stdlib's _get_traces() hold them (Traceback reverses
 *    them to oldest first).
 *
 * Strings, frames and tracebacks not referenced by any trace may exist
 * (filter_traces keeps the tables of its source).
 *
 * Every producer sets sample_interval: the tracer's (its tables'),
 * filter_traces and _strip_root (their source's), a loaded file (its
 * own), Snapshot(traces, limit, sample_interval=T) (T, 0 by default).
 * The builder makes exact data (0): a producer of sampled data sets the
 * field of what ctm_builder_finish returns.
 */
#ifndef CTM_SNAPDATA_H
#define CTM_SNAPDATA_H

#include "internal.h"
#include "sampling.h"

typedef struct {
    uint32_t filename;          /* index into strings */
    int32_t lineno;
    uint32_t function;          /* index into strings of the qualified
                                   name (compat.h), or CTM_NO_FUNCTION */
} ctm_snap_frame;

/* The function of a frame whose function is not known: frames of no
 * code object, made from raw tuples, loaded from the stdlib's pickle or
 * from a file without names. */
#define CTM_NO_FUNCTION UINT32_MAX

/* total_nframe of a traceback whose total is None (Traceback(frames)). */
#define CTM_TOTAL_NONE UINT32_MAX

typedef struct {
    uint32_t first;             /* index into refs of the most recent frame */
    uint32_t nframe;            /* number of frames (0 is allowed) */
    uint32_t total_nframe;      /* or CTM_TOTAL_NONE */
    uint32_t hash;              /* of frames and total, for the builder */
} ctm_snap_tb;

typedef struct {
    uint64_t size;
    uint32_t traceback;         /* index into tracebacks */
    uint32_t domain;
} ctm_snap_trace;

typedef struct {
    Py_ssize_t nstrings;
    PyObject **strings;         /* strong references */
    Py_ssize_t nframes;
    ctm_snap_frame *frames;
    Py_ssize_t ntracebacks;
    ctm_snap_tb *tracebacks;
    Py_ssize_t nrefs;
    uint32_t *refs;             /* frame indexes, see ctm_snap_tb.first */
    Py_ssize_t ntraces;
    ctm_snap_trace *traces;
    size_t traces_bytes;        /* of traces, if ctm_large_new made it (it
                                   may become the spare), else 0 */
    uint64_t sample_interval;   /* 0: exact; else the traces are samples
                                   at this mean interval (sampling.h):
                                   their sizes are the blocks' true sizes,
                                   read through ctm_snap_size and
                                   ctm_snap_count */
} ctm_snapdata;

/* What a trace of data stands for: its estimated size and count
 * (sampling.h); its size and 1 in an exact snapshot. */
static inline uint64_t
ctm_snap_size(const ctm_snapdata *data, const ctm_snap_trace *tr)
{
    return ctm_sample_size(tr->size, data->sample_interval);
}

static inline double
ctm_snap_count(const ctm_snapdata *data, const ctm_snap_trace *tr)
{
    return ctm_sample_count(tr->size, data->sample_interval);
}

/* Release everything data owns (strings, arrays) and the struct itself.
 * NULL is allowed. Needs the GIL. */
void ctm_snapdata_free(ctm_snapdata *data);

/* Bytes of memory data holds, for get_tracemalloc_memory-like reports. */
size_t ctm_snapdata_memory(const ctm_snapdata *data);

/* The builder makes snapdata while keeping its invariants: every add
 * returns the index of an existing equal item, or appends a new one.
 * Each add returns the index, or -1 with MemoryError (or the error of a
 * failed str comparison) set. */
typedef struct ctm_builder ctm_builder;

ctm_builder *ctm_builder_new(void);
/* Free a builder that was not finished. NULL is allowed. */
void ctm_builder_free(ctm_builder *b);
/* str must be an exact str (the caller checks: raise TypeError). */
int64_t ctm_builder_string(ctm_builder *b, PyObject *str);
/* The same for a str whose hash is given: no Python code runs (but
 * PyUnicode_Compare). */
int64_t ctm_builder_string_hashed(ctm_builder *b, PyObject *str,
                                  Py_hash_t hash);
/* A new frame has no function name. */
int64_t ctm_builder_frame(ctm_builder *b, uint32_t filename, int32_t lineno);
/* Name frame's function (string index), unless it has a name: the first
 * one given wins, but for a comprehension's or generator expression's,
 * which gives way to the function around it on the same line. Needs the
 * GIL. */
void ctm_builder_frame_function(ctm_builder *b, uint32_t frame,
                                uint32_t function);
/* frames: nframe frame indexes, most recent first. */
int64_t ctm_builder_traceback(ctm_builder *b, const uint32_t *frames,
                              uint32_t nframe, uint32_t total_nframe);
/* Append one trace (traces are not deduplicated). Return 0 or -1. */
int ctm_builder_trace(ctm_builder *b, uint32_t domain, uint64_t size,
                      uint32_t traceback);
/* The number of traces so far; append a copy of trace k (< that). */
Py_ssize_t ctm_builder_ntraces(const ctm_builder *b);
int ctm_builder_repeat_trace(ctm_builder *b, Py_ssize_t k);
/* Reserve room for n more traces. Return 0 or -1. */
int ctm_builder_reserve_traces(ctm_builder *b, Py_ssize_t n);
/* Reserve room for at least this many frames, tracebacks and frame
 * references in all, so that adding them neither grows an array nor
 * rehashes an index. Return 0 or -1. */
int ctm_builder_reserve_tables(ctm_builder *b, Py_ssize_t nframes,
                               Py_ssize_t ntracebacks, Py_ssize_t nrefs);
/* Make traces (n of them, from ctm_malloc or ctm_large_new, each
 * naming a traceback of the builder) the builder's traces, replacing any
 * it had; the builder owns them from now on and frees them with
 * ctm_free. */
void ctm_builder_adopt_traces(ctm_builder *b, ctm_snap_trace *traces,
                              Py_ssize_t n);
/* Between these two, the adds set no Python error: while the tracer's
 * tables are locked, making an exception could allocate through the
 * hooks. A failed add returns -1 and is remembered; release returns -1
 * with MemoryError set if one failed, else 0. */
void ctm_builder_hold_errors(ctm_builder *b);
int ctm_builder_release_errors(ctm_builder *b);
/* Turn the builder into snapshot data; the builder is consumed even on
 * failure. */
ctm_snapdata *ctm_builder_finish(ctm_builder *b);

/* Copy of data that keeps all strings, frames and tracebacks and only the
 * traces for which keep[i] is nonzero, in order. NULL on MemoryError. */
ctm_snapdata *ctm_snapdata_select(const ctm_snapdata *data,
                                  const unsigned char *keep);

/* A copy of data without the frames of a runner (ctracemalloc run) below
 * the program: chain holds the k frame ids of the runner's stack, most
 * recent first (-1 for a frame data lacks). A traceback whose k oldest
 * frames are the chain loses them (and becomes the tracer's <unknown>
 * traceback if nothing is left); one cut short before them keeps its
 * frames; both lose k from total_nframe; then a traceback keeps its
 * limit most recent frames. */
ctm_snapdata *ctm_snapdata_strip_root(const ctm_snapdata *data,
                                      const int64_t *chain, uint32_t k,
                                      uint32_t limit);

/* Raw tuple of a traceback's frames, most recent first:
 * ((filename, lineno), ...). cache, when not NULL, is an array of
 * ntracebacks borrowed-or-NULL slots owned by the caller that memoises
 * the tuples (the caller releases them). */
PyObject *ctm_snapdata_frames_tuple(const ctm_snapdata *data, uint32_t tb,
                                    PyObject **cache);

/* The function names of a traceback's frames, most recent first, beside
 * its raw frames tuple: a tuple of str or None, or None if no frame has
 * a name. A new reference, or NULL with an exception set. */
PyObject *ctm_snapdata_functions_tuple(const ctm_snapdata *data,
                                       uint32_t tb);

/* Raw trace tuple (domain, size, frames, total_nframe), as _get_traces()
 * returns; total_nframe is None for CTM_TOTAL_NONE. size is what the
 * trace stands for (ctm_snap_size): the true size in an exact snapshot,
 * the estimate in a sampled one, as Trace.size shows it. */
PyObject *ctm_snapdata_trace_tuple(const ctm_snapdata *data, Py_ssize_t i,
                                   PyObject **cache);

/* Parse one raw trace tuple (domain, size, frames[, total_nframe]) into
 * the builder: the reverse of ctm_snapdata_trace_tuple. */
int ctm_builder_add_raw_trace(ctm_builder *b, PyObject *raw);

/* Snapshot data from an iterable of raw trace tuples, checked as
 * Snapshot(raw_traces) checks them. */
ctm_snapdata *ctm_snapdata_from_raw(PyObject *traces);
/* The same one trace at a time: a raw trace tuple, or its n items
 * (without making the tuple). hint: the expected number of traces. */
typedef struct ctm_rawtraces ctm_rawtraces;
ctm_rawtraces *ctm_rawtraces_new(Py_ssize_t hint);
int ctm_rawtraces_add(ctm_rawtraces *r, PyObject *raw);
int ctm_rawtraces_add_items(ctm_rawtraces *r, PyObject *const *items,
                            Py_ssize_t n);
/* The number of traces added so far; add a copy of trace k (< that). */
Py_ssize_t ctm_rawtraces_count(const ctm_rawtraces *r);
int ctm_rawtraces_repeat(ctm_rawtraces *r, Py_ssize_t k);
/* Consumes r, even on failure. */
ctm_snapdata *ctm_rawtraces_finish(ctm_rawtraces *r);
void ctm_rawtraces_free(ctm_rawtraces *r);

#endif /* CTM_SNAPDATA_H */
