/* Interned frames and tracebacks of the tracer (interning.c).
 *
 * A frame is either a code frame, (code object, byte offset), whose line
 * is resolved lazily, or a resolved frame, (filename, lineno). A code
 * frame holds no reference to its code object: the object's death notice
 * (from a code watcher or a co_extra free function, see compat.h) turns
 * the frames of that code into resolved frames while the object is
 * still whole. Frames captured by a thread without the GIL, or of a code
 * object whose death cannot be watched, are resolved at once.
 * A frame also keeps the name of its function (compat.h,
 * ctm_code_function), only for reports: it is not part of the frame's
 * identity, so two functions that share a line (a comprehension on its
 * function's line, before 3.12) share one resolved frame, which keeps
 * the name of the first one interned.
 * A traceback is a run of frame ids, most recent first, with its
 * total_nframe. Two ids may come to have equal contents (a frame resolved
 * at death); snapshots compare them by content.
 */
#ifndef CTM_INTERNING_H
#define CTM_INTERNING_H

#include "capture.h"
#include "coderecs.h"

typedef struct {
    PyCodeObject *code;         /* borrowed, alive while the frame names
                                   it; NULL: resolved frame */
    int32_t addr;               /* code frame: byte offset */
    int32_t lineno;             /* resolved frame, or the cached line */
    uint32_t filename;          /* resolved frame: string id; code frame:
                                   its code's record */
    uint32_t flags;             /* CTM_FRAME_LINE_KNOWN */
    uint32_t function;          /* resolved frame: its function's name,
                                   string id + 1, 0: none (a frame of no
                                   code object: "<unknown>"); code frame:
                                   0, its code object tells */
} ctm_tframe;

#define CTM_FRAME_LINE_KNOWN 1u

typedef struct {
    uint32_t first;             /* index into the frame id arena */
    uint16_t nframe;
    uint16_t total_nframe;
    uint32_t hash;
} ctm_ttb;

/* A filename or a function name copied out of a str object without
 * the GIL: its PEP 393 kind and raw data, enough to rebuild the str
 * later. */
typedef struct {
    int kind;
    Py_ssize_t length;
    void *data;
    uint64_t hash;
} ctm_cstring;

typedef struct ctm_interner ctm_interner;

/* Intern the traceback made of frames[0..nframe) (most recent first).
 * gil says whether the caller holds the GIL: if not, frames are resolved
 * now. With the GIL, a code object met for the first time gets a record,
 * whose death notice comes from the code watcher (CTM_NOTICE_WATCHER)
 * or, with co_extra tokens, must be armed by the caller once the lock is
 * released (ctm_interner_unarmed_unlocked), and then *arm is set to 1;
 * with co_extra tokens and arm NULL, or no notice at all, it is resolved
 * now instead. *arm is also set when compaction may be due
 * (ctm_interner_compaction_due_unlocked). Return the id, or -1 on memory
 * error. */
int64_t ctm_intern_traceback_unlocked(ctm_interner *in,
                                      const ctm_rawframe *frames,
                                      int nframe, int total_nframe, int gil,
                                      int *arm);
/* The id of the "<unknown>" traceback: no Python frame. -1 on memory
 * error. */
int64_t ctm_intern_unknown_unlocked(ctm_interner *in);

ctm_interner *ctm_interner_new(void);
/* How the deaths of code objects are heard of, and the co_extra index
 * that holds the interner's tokens with CTM_NOTICE_CO_EXTRA (coderecs.h;
 * CTM_NOTICE_NONE: every frame is resolved at once). Set before the
 * first capture, and again only after a clear. */
void ctm_interner_set_notice(ctm_interner *in, ctm_notice notice,
                             Py_ssize_t extra_index);
/* A code object waiting for its token to be stored in its co_extra slot:
 * 1 and *code, *token set (taken off the list), or 0 if none is left. */
int ctm_interner_unarmed_unlocked(ctm_interner *in, PyCodeObject **code,
                                  void **token);
/* The death notice of the code object that holds token in its co_extra
 * slot (a token of a past generation, or of a code object already
 * resolved, is ignored): resolve its frames, forget it in every cache.
 * Also called for a code object whose token could not be stored. Work
 * proportional to that code's frames and tracebacks. */
void ctm_interner_code_died_unlocked(ctm_interner *in, void *token);
/* The same, from a code watcher: code is dying, still whole. Any code
 * object of the interpreter may come: one without a record costs a
 * lookup in an index. 1 if code had a record (frames of it may be
 * cached by the caller), else 0. */
int ctm_interner_code_object_died_unlocked(ctm_interner *in,
                                           PyCodeObject *code);
/* Compaction (interning.c says what it does and when it is due).
 * ntraces: the live traces, which the caller walks to compact; if they
 * are what keeps it from being due, it is not asked again before it
 * would be. */
int ctm_interner_compaction_due_unlocked(ctm_interner *in, size_t ntraces);
/* Drop the tracebacks whose counts[id] (live traces, exact, for every id
 * below ctm_interner_ntracebacks_unlocked) is 0, and what only they
 * name. map[id] gets each old id's new one (UINT32_MAX: dropped); the
 * caller renames its traces with it. Return the new number of
 * tracebacks, or -1 if memory ran out (nothing changed then). Only with
 * the GIL held and no reader between two lock holds of the tables
 * (tracer.h): filenames' data and ids change. */
int64_t ctm_interner_compact_unlocked(ctm_interner *in,
                                      const uint64_t *counts, uint32_t *map);
/* Forget every frame and traceback; the tokens handed out so far become
 * stale. */
void ctm_interner_clear_unlocked(ctm_interner *in);
size_t ctm_interner_memory_unlocked(const ctm_interner *in);

/* Reading for snapshots. */
size_t ctm_interner_ntracebacks_unlocked(const ctm_interner *in);
const ctm_ttb *ctm_interner_traceback_unlocked(const ctm_interner *in,
                                               uint32_t id);
const uint32_t *ctm_interner_frame_ids_unlocked(const ctm_interner *in);
uint32_t ctm_interner_nframes_unlocked(const ctm_interner *in);
ctm_tframe *ctm_interner_frame_unlocked(ctm_interner *in, uint32_t id);
const ctm_cstring *ctm_interner_cstring_unlocked(const ctm_interner *in,
                                                 uint32_t id);
uint32_t ctm_interner_ncstrings_unlocked(const ctm_interner *in);
/* Line number of a frame (resolved and cached on first use). */
int ctm_tframe_lineno_unlocked(ctm_tframe *f);

#endif /* CTM_INTERNING_H */
