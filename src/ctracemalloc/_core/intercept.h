/* The interceptors (intercept.c): calls into the interpreter's own tracer
 * that only the stdlib would hear of, redirected to ours while we trace.
 * Installed and removed by control.c, with the GIL held.
 */
#ifndef CTM_INTERCEPT_H
#define CTM_INTERCEPT_H

#include "internal.h"

/* Where _PyTraceMalloc_GetTraceback's answer comes from while we trace
 * (the module gives tracersnap.c's ctm_tracer_traceback_of, a layer
 * above this one): the raw frames of a block, None, or NULL with an
 * exception. */
typedef PyObject *(*ctm_traceback_source)(uint32_t domain, uintptr_t ptr);
void ctm_intercept_set_traceback_source(ctm_traceback_source source);

/* Redirect the calls of every loaded object (and of those loaded later)
 * to the interpreter's tracer entry points, and check with a probe that
 * each kind arrives; a kind whose probe fails is put back as it was,
 * with a RuntimeWarning, once per process, naming what will not be
 * traced. Needs tracing to have begun. Return 0, or -1 with an exception
 * set (a warning turned into an error; nothing stays redirected then). */
int ctm_intercept_install(void);
/* Put back every redirected call. */
void ctm_intercept_uninstall(void);
/* Add to counts[0] the installs that scanned the loaded objects, to
 * counts[1] those that replayed the slots of the last one (for tests). */
void ctm_intercept_got_counts(unsigned long counts[2]);

#endif /* CTM_INTERCEPT_H */
