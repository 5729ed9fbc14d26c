/* The Python types of the core (but Snapshot and _Traces: snapshot.h),
 * and the analysis of snapshot data that they and the Snapshot type
 * call.
 *
 * Each type file exports only its PyType_Spec (and the constructors the
 * snapshot analysis calls per result); the module's init makes every
 * type from its spec, in one place and in order, and keeps it in
 * ctm_state, through which the files reach each other's types.
 */
#ifndef CTM_TYPES_H
#define CTM_TYPES_H

#include "snapdata.h"

/* ---------------------------------------------------------------------
 * Analysis (glob.c, selection.c, tree.c): below the types, which call
 * it; it reaches the types only through ctm_state
 * ------------------------------------------------------------------- */

/* The filter objects (filter.c makes the types, selection.c reads the
 * fields of the exact types). A field is NULL until __init__ sets it. */
typedef struct {
    PyObject_HEAD
    PyObject *dict;
    PyObject *weakreflist;
    PyObject *inclusive;
} ctm_basefilter_object;

typedef struct {
    ctm_basefilter_object base;
    PyObject *pattern;          /* normalised str, or NULL */
    PyObject *lineno;
    PyObject *all_frames;
    PyObject *domain;
    int bracket;                /* pattern contains '[': use fnmatch */
} ctm_filter_object;

typedef struct {
    ctm_basefilter_object base;
    PyObject *domain;
} ctm_domainfilter_object;

/* glob.c */
/* The stdlib's _normalize_filename: os.path.normcase, then a trailing
 * ".pyc" becomes ".py". */
PyObject *ctm_normalize_filename(PyObject *filename);
/* Does pattern (a ready str) contain '[' (matched by fnmatch)? 1 or 0. */
int ctm_glob_has_bracket(PyObject *pattern);
/* Does the ready str filename, normalised (".pyc" as ".py"), match
 * pattern, fnmatch-style? bracket: ctm_glob_has_bracket(pattern).
 * 1, 0, or -1 with an exception set. */
int ctm_glob_match(PyObject *filename, PyObject *pattern, int bracket);

/* selection.c */
/* Snapshot.filter_traces' selection: evaluate the filters (an iterable)
 * over the traces of data with the stdlib's semantics, setting keep[i]
 * to 1 for each trace kept and 0 otherwise. Return 0 or -1. */
int ctm_filter_keep(const ctm_snapdata *data, PyObject *filters,
                    unsigned char *keep);

/* tree.c */
/* The traceback tree of data, as Snapshot._tree() returns it. */
PyObject *ctm_snapdata_tree(const ctm_snapdata *data);

/* ---------------------------------------------------------------------
 * Types, bottom first (wrapper.c, statistic.c, traceback.c, trace.c,
 * filter.c): a file calls only the ones before it
 * ------------------------------------------------------------------- */

/* statistic.c */
extern PyType_Spec ctm_statistic_spec;
extern PyType_Spec ctm_statistic_diff_spec;
PyObject *ctm_statistic_new(PyObject *traceback, uint64_t size,
                            uint64_t count);
PyObject *ctm_statistic_diff_new(PyObject *traceback, uint64_t size,
                                 int64_t size_diff, uint64_t count,
                                 int64_t count_diff);
/* The stdlib's _format_size(size, sign) for a Python int or float. */
PyObject *ctm_format_size(PyObject *size, int sign);

/* wrapper.c: what Frame, Traceback and Trace share */
/* A Frame or Trace: one raw tuple, and what the snapshot data knows of
 * its function names, which the raw tuple (the stdlib's layout, which
 * equality, hashing and pickling see) has no room for. */
typedef struct {
    PyObject_HEAD
    PyObject *raw;              /* Frame._frame: (filename, lineno);
                                   Trace._trace: (domain, size, frames[,
                                   total_nframe]) */
    PyObject *names;            /* NULL, or Frame: its function's name
                                   (str); Trace: a tuple of its frames'
                                   (str or None), most recent first */
    PyObject *named;            /* the raw object names belongs to: a
                                   raw set since (by __init__ or to the
                                   slot) has none */
} ctm_wrapper_object;
/* A slot's value (a field of self) as a new reference, or NULL with the
 * AttributeError that reading an unset __slots__ member raises. */
PyObject *ctm_slot_value(PyObject *self, PyObject *value, const char *name);
/* seq[i], with a fast path for tuples. */
PyObject *ctm_item_at(PyObject *seq, Py_ssize_t i);
/* The comparisons of a class with __slots__ that compares the slot at
 * offset in __eq__ and __lt__ (NotImplemented for an other that is not a
 * base), with functools.total_ordering when ordered is nonzero. */
PyObject *ctm_slot_richcompare(PyObject *self, PyObject *other, int op,
                               PyTypeObject *base, Py_ssize_t offset,
                               const char *name, int ordered);
/* A new wrapper of the exact type tp holding raw, and names (NULL or
 * None: none). */
PyObject *ctm_wrapper_new(PyTypeObject *tp, PyObject *raw, PyObject *names);
/* The names of a wrapper, borrowed, if its raw is still the one they
 * were given with, else NULL. */
PyObject *ctm_wrapper_names(PyObject *op);
/* __init__(raw): fmt and kwlist name the argument as the stdlib does. */
int ctm_wrapper_init(PyObject *op, PyObject *args, PyObject *kwds,
                     const char *fmt, char **kwlist);
int ctm_wrapper_traverse(PyObject *op, visitproc visit, void *arg);
int ctm_wrapper_clear(PyObject *op);
void ctm_wrapper_dealloc(PyObject *op);

/* traceback.c */
extern PyType_Spec ctm_frame_spec;
extern PyType_Spec ctm_traceback_spec;
/* Traceback from a raw frames tuple (most recent first), as the stdlib's
 * Traceback(frames, total_nframe); total_nframe may be NULL for None.
 * functions: NULL or None, or a tuple as long as frames, the function
 * names (str or None) of its frames, which the Frames it gives carry. */
PyObject *ctm_traceback_new(PyObject *frames, PyObject *total_nframe,
                            PyObject *functions);

/* trace.c */
extern PyType_Spec ctm_trace_spec;
/* Trace from a raw trace tuple (domain, size, frames, total_nframe);
 * functions as ctm_traceback_new's, for its traceback. */
PyObject *ctm_trace_new(PyObject *raw, PyObject *functions);

/* filter.c */
/* BaseFilter, then Filter and DomainFilter, made with BaseFilter as
 * their base. */
extern PyType_Spec ctm_basefilter_spec;
extern PyType_Spec ctm_filter_spec;
extern PyType_Spec ctm_domainfilter_spec;


#endif /* CTM_TYPES_H */
