/* The snapshot part of the core: the grouping engine (grouping.c, in the
 * analysis layer) and the _Traces and Snapshot types (traces.c and
 * snapshot.c, in the types layer).
 *
 * The engine knows snapshot data only: it groups the traces of one or two
 * snapshots and orders the groups, as C rows. The Snapshot type makes the
 * Python objects of a result (Traceback, Statistic, StatisticDiff) from
 * those rows.
 */
#ifndef CTM_SNAPSHOT_H
#define CTM_SNAPSHOT_H

#include "snapdata.h"

/* The frame references of traceback t of d, most recent first; never
 * NULL, even for an empty traceback of data whose refs array is empty,
 * so that memcmp and the like may read it. */
static inline const uint32_t *
ctm_tb_refs(const ctm_snapdata *d, const ctm_snap_tb *t)
{
    static const uint32_t none[1];
    return t->nframe ? d->refs + t->first : none;
}

/* ---------------------------------------------------------------------
 * The grouping engine (grouping.c)
 * ------------------------------------------------------------------- */

/* What the traces are grouped by: the stdlib's key_type. */
enum {
    CTM_KEY_TRACEBACK,
    CTM_KEY_FILENAME,
    CTM_KEY_LINENO,
};

/* The size and count of the traces of one traceback: what they stand
 * for (ctm_snap_size, ctm_snap_count), the count rounded to the nearest
 * but at least 1 when there are traces; 0 and 0 when there are none. */
typedef struct {
    uint64_t size;
    uint64_t count;
} ctm_tb_sums;

/* The sums of each traceback of d (ntracebacks entries, ctm_free them),
 * or NULL with MemoryError, or OverflowError for sums over 64 bits. */
ctm_tb_sums *ctm_sum_tracebacks(const ctm_snapdata *d);

/* The groups of the traces of one snapshot by one key type, with the size
 * and count of each. The snapshot data must outlive it. */
typedef struct ctm_groups ctm_groups;

/* The groups of d by key_type (a CTM_KEY_*); cumulative counts a traceback
 * once per frame (not with CTM_KEY_TRACEBACK, which the caller rejects).
 * NULL with an exception set: MemoryError, OverflowError for sums over 64
 * bits, IndexError for an empty traceback by filename (as the stdlib's
 * trace_traceback[0]). */
ctm_groups *ctm_groups_new(const ctm_snapdata *d, int key_type,
                           int cumulative);
/* NULL is allowed. */
void ctm_groups_free(ctm_groups *g);

/* One row of a result: a group of the new (or only) snapshot, or, in a
 * comparison, a group that only the old snapshot has. */
typedef struct {
    uint64_t size;              /* of the group in the new (or only)
                                   snapshot; 0 in an old-only row */
    uint64_t count;
    int64_t size_diff;          /* comparison: size minus the old size */
    int64_t count_diff;         /* comparison: count minus the old count */
    uint32_t key;               /* in the tables of data[side]: a string
                                   index (filename), a frame index or
                                   nframes for the empty traceback
                                   (lineno), a traceback index whose
                                   frames are the group's (traceback) */
    uint32_t side;              /* 0: new (or only) snapshot, 1: old */
} ctm_group_row;

typedef struct {
    int key_type;
    const ctm_snapdata *data[2];    /* new (or only), old or NULL */
    Py_ssize_t nrows;
    ctm_group_row *rows;        /* the new snapshot's groups in their
                                   order, then the old-only groups */
    Py_ssize_t *order;          /* if sorted: the rows in the stdlib's
                                   result order (descending by its sort
                                   key); else NULL */
} ctm_group_result;

/* The rows of groups g (statistics, _group_by) or of the comparison of g
 * with old (compare_to: old is not NULL, of the same key type), ordered
 * if sorted. g and old are joined in place: each takes part in one
 * result. Return 0, or -1 with an exception set (then *res holds
 * nothing to free). */
int ctm_groups_result(ctm_groups *g, ctm_groups *old, int sorted,
                      ctm_group_result *res);
void ctm_group_result_free(ctm_group_result *res);

/* ---------------------------------------------------------------------
 * _Traces (traces.c)
 * ------------------------------------------------------------------- */

extern PyType_Spec ctm_traces_spec;

/* A _Traces instance: the owner of one snapshot's data. */
typedef struct {
    PyObject_HEAD
    ctm_snapdata *data;         /* owned, immutable, never NULL */
    PyObject **functions;       /* per traceback: the function names
                                   of its frames, made on first use (see
                                   ctm_snapdata_functions_tuple); NULL
                                   until one is */
} ctm_traces_object;

/* A _Traces owning data (stolen, even on failure). */
PyObject *ctm_traces_wrap(ctm_snapdata *data);

/* The index of the frame of d equal to (filename, lineno), or -1:
 * filename is a str whose hash is h. A linear search, for a few frames
 * (a search's value, the runner's frames). */
Py_ssize_t ctm_snapdata_find_frame(const ctm_snapdata *d, PyObject *filename,
                                   Py_hash_t h, int32_t lineno);

/* ---------------------------------------------------------------------
 * Snapshot (snapshot.c)
 * ------------------------------------------------------------------- */

extern PyType_Spec ctm_snapshot_spec;

/* A Snapshot that owns data (stolen, even on failure). */
PyObject *ctm_snapshot_new(ctm_snapdata *data, PyObject *traceback_limit);
/* The data of a Snapshot instance, or NULL with TypeError. Borrowed. */
ctm_snapdata *ctm_snapshot_data(PyObject *snapshot);
/* The module function _snapshot_from_bytes(dump_bytes[, cls]), which
 * Snapshot.__reduce__ names: a pickled Snapshot rebuilt. */
PyObject *ctm_snapshot_from_bytes(PyObject *module, PyObject *args);

#endif /* CTM_SNAPSHOT_H */
