/* The reference tracer (reftracer.c), installed and removed by
 * control.c, with the GIL held. Without PyRefTracer (before 3.13) both do
 * nothing. */
#ifndef CTM_REFTRACER_H
#define CTM_REFTRACER_H

/* Put ours in the interpreter's reference tracer slot, chaining to the
 * one there, unless ours is there already. */
void ctm_reftracer_install(void);
/* Give the slot back to the tracer ours replaced, if ours is still in
 * it. */
void ctm_reftracer_uninstall(void);

#endif /* CTM_REFTRACER_H */
