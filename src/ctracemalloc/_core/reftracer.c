/* The reference tracer: the tracer's client for objects reused from a
 * free list, which no allocator hook sees. Where the interpreter lets a
 * tracer watch new references (PyRefTracer, 3.13+), an object created in
 * a block other than the one the thread's hooks traced last was taken
 * from a free list: its block's trace gets the current traceback, as the
 * stdlib does (ctm_tracer_new_object). Before 3.13 the interceptors
 * (intercept.c) hear of new objects through _Py_NewReference instead,
 * and this client does nothing.
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
        ctm_tracer_new_object(obj);
    }
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
