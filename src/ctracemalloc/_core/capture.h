/* Capture of the current thread's Python frames (capture.c). Nothing
 * here takes a reference or allocates from PyMem: the allocator hooks
 * call it, with or without the GIL. */
#ifndef CTM_CAPTURE_H
#define CTM_CAPTURE_H

#include "internal.h"

/* A frame as the walk finds it: its code object and the byte offset of
 * its instruction. */
typedef struct {
    PyCodeObject *code;
    int addr;
} ctm_rawframe;

/* Walk tstate's frames (NULL: no frame): store up to max frames, most
 * recent first, and count the whole stack up to CTM_MAX_NFRAME. */
void ctm_capture(PyThreadState *tstate, ctm_rawframe *out, int max,
                 int *nframe, int *total_nframe);
/* Memory of the capture's per-thread chain memos. */
size_t ctm_capture_memory(void);
/* Around fork(), from the tracer's fork handlers (with the tables lock
 * held): the child frees the memos of the threads it does not have. */
void ctm_capture_fork_prepare(void);
void ctm_capture_fork_parent(void);
void ctm_capture_fork_child(void);

#endif /* CTM_CAPTURE_H */
