/* The tracer as the module sees it: start and stop (control.c), its
 * counters and the track API (tracer.c), snapshots and object
 * tracebacks (tracersnap.c). Everything here needs the GIL unless it
 * says otherwise.
 */
#ifndef CTM_TRACERAPI_H
#define CTM_TRACERAPI_H

#include "snapdata.h"
#include "timeline.h"

/* Start tracing with nframe frames per traceback, native allocations
 * too if native is set (native.h), the peak record and the timeline if
 * peak is, samples at sample_interval bytes if it is not 0
 * (sampling.h). Already tracing: only turn native and peak on if asked;
 * another sample_interval than the current one is a ValueError (0 asks
 * for nothing). Return 0 or -1. */
int ctm_tracer_start(int nframe, int native, int peak,
                     uint64_t sample_interval);
void ctm_tracer_stop(void);
void ctm_tracer_clear(void);
int ctm_tracer_is_tracing(void);
int ctm_tracer_nframe(void);
void ctm_tracer_traced_memory(size_t *current, size_t *peak);
void ctm_tracer_reset_peak(void);
size_t ctm_tracer_memory(void);
/* The interner's tracebacks and frames now, and its compactions so far
 * (for tests). */
void ctm_tracer_interner_stats(size_t *ntracebacks, size_t *nframes,
                               unsigned *compactions);
/* How the deaths of code objects are heard of (for tests): "watcher",
 * "co_extra", or "none" (frames resolved as captured, or never
 * started). */
const char *ctm_tracer_code_notice(void);
/* Snapshot data of the live traces, or of those of the peak record
 * (peak). Needs the GIL. */
ctm_snapdata *ctm_tracer_snapshot(int peak);
/* The peak record (store.c) and the timeline (timeline.h), kept while
 * tracing: start them (0, or -1 with MemoryError), stop them, whether
 * they are on. */
int ctm_tracer_peak_start(void);
void ctm_tracer_peak_stop(void);
int ctm_tracer_peak_on(void);
/* The timeline's points (*n of them, none when it is not kept; ctm_free
 * the array), or NULL with MemoryError if memory ran out. */
ctm_point *ctm_tracer_timeline(size_t *n);
/* Raw frames tuple of the block at (domain, ptr), or None. Needs the GIL. */
PyObject *ctm_tracer_traceback_of(uint32_t domain, uintptr_t ptr);
/* The same, and if functions is not NULL and the block is traced, the
 * function names of its frames in *functions (a new reference: a tuple
 * of str or None, most recent first, or None if no frame has one). */
PyObject *ctm_tracer_named_traceback_of(uint32_t domain, uintptr_t ptr,
                                        PyObject **functions);
/* Track or untrack a block in a domain, with the caller's traceback.
 * Return 0, -1 if not tracing, -2 on memory error. No exception set;
 * callable without the GIL. */
int ctm_tracer_track(uint32_t domain, uintptr_t ptr, size_t size);
int ctm_tracer_untrack(uint32_t domain, uintptr_t ptr);
/* After another tracer (the stdlib's) started (stopped == 0) or stopped
 * and restored the allocators it had saved (stopped == 1): put our hooks
 * back on top if they fell out of the chain, and our reference tracer
 * back in place. */
void ctm_tracer_after_other_tracer(int stopped);
/* Check that our hooks are still reached; if another tracer dropped them
 * without our seeing it, stop tracing (what was missed is unknown), and
 * remove pass-through hooks that are on top again. Needs the GIL. */
void ctm_tracer_reconcile(void);
/* The interpreter is exiting: stop reading the frames of threads that do
 * not hold the GIL. */
void ctm_tracer_at_exit(void);

#endif /* CTM_TRACERAPI_H */
