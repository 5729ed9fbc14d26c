/* Native allocations (native.c): what extension modules and the shared
 * libraries they load take from the C allocator and from anonymous mmap,
 * traced in CTM_NATIVE_DOMAIN with the calling thread's Python
 * traceback. Installed and removed by control.c, with the GIL held.
 */
#ifndef CTM_NATIVE_H
#define CTM_NATIVE_H

#include "internal.h"

/* The probe object's functions (the module ctracemalloc._nativeprobe,
 * whose capsule "ctracemalloc._nativeprobe.probe" holds this): plain
 * calls to malloc and free from a shared object of their own, which go
 * through its GOT like an extension's. */
typedef struct {
    void *(*malloc)(size_t size);
    void (*free)(void *ptr);
} ctm_native_probe;

#define CTM_NATIVE_PROBE_CAPSULE "ctracemalloc._nativeprobe.probe"

/* Redirect the allocator calls of every loaded object but the
 * interpreter's, the allocator's and ours (and of the objects loaded
 * later) to the native tracer, and check with the probe that they
 * arrive; if they do not, everything is put back as it was, with a
 * RuntimeWarning, once per process. Needs tracing to have begun.
 * Return 0, or -1 with an exception set (an import error of the probe
 * object, or the warning turned into an error; nothing stays redirected
 * then). */
int ctm_native_install(void);
/* Put back every redirected call; native traces are no longer made or
 * removed (the caller clears them). */
void ctm_native_uninstall(void);
/* Whether native allocations are traced now. */
int ctm_native_active(void);
/* The GOT slots that hold our replacements now (for tests). */
size_t ctm_native_slots(void);
/* As ctm_intercept_got_counts, for native tracing's slots. */
void ctm_native_got_counts(unsigned long counts[2]);

#endif /* CTM_NATIVE_H */
