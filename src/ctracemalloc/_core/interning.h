/* Interned frames and tracebacks of the tracer (interning.c).
 *
 * A frame is either a code frame, (code object, byte offset), whose line
 * is resolved lazily, or a resolved frame, (filename, lineno), captured by
 * a thread that did not hold the GIL and so could not take a reference
 * to the code object. A traceback is a run of frame ids, most recent
 * first, with its total_nframe.
 */
#ifndef CTM_INTERNING_H
#define CTM_INTERNING_H

#include "capture.h"

typedef struct {
    PyCodeObject *code;         /* strong reference; NULL: resolved frame */
    int32_t addr;               /* code frame: byte offset */
    int32_t lineno;             /* resolved frame, or the cached line */
    uint32_t filename;          /* resolved frame: string id */
    uint32_t flags;             /* CTM_FRAME_LINE_KNOWN */
} ctm_tframe;

#define CTM_FRAME_LINE_KNOWN 1u

typedef struct {
    uint32_t first;             /* index into the frame id arena */
    uint16_t nframe;
    uint16_t total_nframe;
    uint32_t hash;
} ctm_ttb;

/* A filename copied out of a str object without the GIL: its PEP 393
 * kind and raw data, enough to rebuild the str later. */
typedef struct {
    int kind;
    Py_ssize_t length;
    void *data;
    uint64_t hash;
} ctm_cstring;

typedef struct ctm_interner ctm_interner;

/* Intern the traceback made of frames[0..nframe) (most recent first).
 * gil says whether the caller holds the GIL: if not, frames are resolved
 * now and no reference is taken. Return the id, or -1 on memory error. */
int64_t ctm_intern_traceback_unlocked(ctm_interner *in,
                                      const ctm_rawframe *frames,
                                      int nframe, int total_nframe, int gil);
/* The id of the "<unknown>" traceback: no Python frame. -1 on memory
 * error. */
int64_t ctm_intern_unknown_unlocked(ctm_interner *in);

ctm_interner *ctm_interner_new(void);
/* Forget every frame and traceback; the code objects whose references
 * the interner held are appended to *codes (an array the caller frees
 * after releasing them outside the lock). Return 0, -1 on memory error
 * (then the references are leaked, never freed twice). */
int ctm_interner_clear_unlocked(ctm_interner *in, PyCodeObject ***codes,
                                size_t *ncodes);
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
