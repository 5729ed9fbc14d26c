/* The core's layers, its conventions, and the constants every layer
 * shares. Each layer has its header; a file includes the headers of what
 * it uses, and calls only into its own layer and those below it (checked
 * by tests/test_layout.py, whose list of layers this follows; the
 * README's "Layout" gives each file's job).
 *
 *   utilities      util.h: memory, hashing, the index, the helper thread,
 *                  the module state and the Python helpers; elfgot.h: GOT
 *                  slots of loaded objects
 *   tracer tables  capture.h, coderecs.h, interning.h, store.h: the
 *                  frames of the current thread, the records of code
 *                  objects, interned tracebacks, live traces
 *   tracer         tracer.h: the state, the tables lock, recording
 *   clients        hooks.h, reftracer.h, intercept.h: what tells the
 *                  tracer of blocks
 *   control        tracerapi.h: start and stop, for the module
 *   snapshot data  snapdata.h: a snapshot's flat arrays, the builder;
 *                  tracersnap.c maps the tracer's tables into them
 *   analysis       types.h, snapshot.h: glob matching, filter selection,
 *                  grouping, the traceback tree
 *   file formats   formats.h: our file format and the stdlib's pickle
 *   types          types.h, snapshot.h: the Python types
 *   module         module.c: init, the module functions, the C API
 *
 * Conventions: functions shared between files start with ctm_ (and the
 * name of their file or object: ctm_traces_, ctm_builder_, ctm_index_),
 * private ones are static; a function that returns int returns 0 on
 * success and -1 with an exception set on failure unless its comment
 * says otherwise; a function that returns a PyObject * returns a new
 * reference, or NULL with an exception set. "_unlocked" in a name means
 * the caller holds the tables lock (tracer.h). Every version difference
 * of the supported Pythons lives in compat.h.
 */
#ifndef CTM_INTERNAL_H
#define CTM_INTERNAL_H

#include "util.h"

/* The stdlib's limit on the traceback length and on total_nframe. */
#define CTM_MAX_NFRAME 65535

/* Domain of the allocations that the allocator hooks trace. */
#define CTM_DEFAULT_DOMAIN 0u
/* What extension modules and their libraries take from the C allocator
 * and anonymous mmap (native.c): "natv", clear of the domains that
 * known extensions report to (numpy: 389047). */
#define CTM_NATIVE_DOMAIN 0x6E617476u

#endif /* CTM_INTERNAL_H */
