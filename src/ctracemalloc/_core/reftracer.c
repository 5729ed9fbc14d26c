/* The reference tracer: the tracer's client for objects reused from a
 * free list, which no allocator hook sees. Where the interpreter lets a
 * tracer watch new references (PyRefTracer, 3.13+), an object created in
 * a block other than the one the thread's hooks traced last was taken
 * from a free list: its block's trace gets the current traceback, as the
 * stdlib does. Elsewhere (3.9 to 3.12) this client does nothing yet, and
 * such an object keeps the traceback of its block's first allocation.
 *
 * The interpreter has one reference tracer slot: ours chains to the one
 * it replaced, and uninstalling restores that one only if ours is still
 * in the slot. The stdlib's start() overwrites the slot; control.c puts
 * ours back (ctm_tracer_after_other_tracer). State: written with the GIL
 * held.
 */
#include "reftracer.h"
#include "tracer.h"

#if CTM_HAVE_REFTRACER
static PyRefTracer prev_reftracer;
static void *prev_reftracer_data;
static int reftracer_installed;

static int
reftracer(PyObject *obj, PyRefTracerEvent event, void *data)
{
    (void)data;
    if (event == PyRefTracer_CREATE
        && ctm_tracer_tracing() && !ctm_reentrant) {
        uintptr_t block = (uintptr_t)ctm_object_block(obj);
        if (block == ctm_last_block) {
            /* Just allocated and traced with the current traceback. One
             * allocation makes one object: forget the block, so that the
             * same memory reused later from a free list is seen. */
            ctm_last_block = 0;
        }
        else {
            /* An object made from a free list: its block was traced when
             * it was first allocated; give it the current traceback. */
            int gil;
            PyThreadState *ts = ctm_tracer_tstate(1, &gil);
            if (ts != NULL && ts->interp != ctm_tracer.interp) {
                goto chain;
            }
            ctm_reentrant = 1;
            ctm_tables_lock();
            ctm_value *v = ctm_traces_get_unlocked(
                &ctm_tracer.traces, CTM_DEFAULT_DOMAIN, block);
            if (v != NULL) {
                /* interning touches the interner, not the traces: v
                 * stays valid */
                int64_t tb = ctm_tracer_traceback_unlocked(ts, gil, NULL);
                if (tb >= 0) {
                    (void)ctm_traces_retrace_unlocked(&ctm_tracer.traces, v,
                                                      (uint32_t)tb);
                }
            }
            ctm_tables_unlock();
            ctm_reentrant = 0;
        }
    }
chain:
    if (prev_reftracer != NULL) {
        return prev_reftracer(obj, event, prev_reftracer_data);
    }
    return 0;
}

void
ctm_reftracer_install(void)
{
    void *data;
    PyRefTracer cur = PyRefTracer_GetTracer(&data);
    if (cur == reftracer) {
        return;
    }
    prev_reftracer = cur;
    prev_reftracer_data = data;
    PyRefTracer_SetTracer(reftracer, NULL);
    reftracer_installed = 1;
}

void
ctm_reftracer_uninstall(void)
{
    void *data;
    if (reftracer_installed && PyRefTracer_GetTracer(&data) == reftracer) {
        PyRefTracer_SetTracer(prev_reftracer, prev_reftracer_data);
    }
    reftracer_installed = 0;
    prev_reftracer = NULL;
    prev_reftracer_data = NULL;
}
#else
void ctm_reftracer_install(void) {}
void ctm_reftracer_uninstall(void) {}
#endif
