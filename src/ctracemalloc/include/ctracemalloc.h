/* ctracemalloc's C API: let a C extension report its own memory blocks to
 * ctracemalloc, as PyTraceMalloc_Track does for the stdlib tracer.
 *
 * Usage, in the extension (the include folder is ctracemalloc.get_include()):
 *
 *     #include "ctracemalloc.h"
 *
 *     const CTraceMalloc_CAPI *api = CTraceMalloc_Import();  // GIL held
 *     if (api == NULL) { PyErr_Clear(); }   // ctracemalloc not installed
 *     ...
 *     void *buf = malloc(n);
 *     if (api) api->track(MY_DOMAIN, (uintptr_t)buf, n);
 *     ...
 *     if (api) api->untrack(MY_DOMAIN, (uintptr_t)buf);
 *     free(buf);
 *
 * track() records the block with the calling thread's Python traceback;
 * tracking an address again replaces its trace. Both functions may be
 * called with or without the GIL, from any thread. They return 0 on
 * success, -1 when ctracemalloc is not tracing, -2 when the tracer ran
 * out of memory (the block is then not traced); they never set a Python
 * exception. Blocks appear in snapshots with their domain: use
 * DomainFilter to select them. Domain 0 is the one of Python's own
 * allocators.
 */
#ifndef CTRACEMALLOC_H
#define CTRACEMALLOC_H

#include <Python.h>
#include <stdint.h>
#include <stddef.h>

#define CTRACEMALLOC_CAPSULE_NAME "ctracemalloc._ctracemalloc._C_API"
#define CTRACEMALLOC_CAPI_VERSION 1

typedef struct {
    /* CTRACEMALLOC_CAPI_VERSION of the module that made it; later
     * versions only add fields at the end. */
    int version;
    int (*track)(unsigned int domain, uintptr_t ptr, size_t size);
    int (*untrack)(unsigned int domain, uintptr_t ptr);
} CTraceMalloc_CAPI;

/* Import ctracemalloc and return its API, or NULL with an exception set
 * (ImportError when ctracemalloc is not installed). Needs the GIL. */
static inline const CTraceMalloc_CAPI *
CTraceMalloc_Import(void)
{
    return (const CTraceMalloc_CAPI *)PyCapsule_Import(
        CTRACEMALLOC_CAPSULE_NAME, 0);
}

#endif /* CTRACEMALLOC_H */
