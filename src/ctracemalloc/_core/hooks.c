/* The allocator hooks: the tracer's client on the RAW, MEM and OBJ
 * allocators. Every block they see is recorded in trace domain 0.
 *
 *  - Sampling (sampling.h): a block that the sampler passes over gets no
 *    trace, and its free finds none in the tracer's filter, without the
 *    lock.
 *  - free never takes the GIL. A trace is removed before its block is
 *    released, and a realloc drops the old trace before the block moves,
 *    so another thread that is handed the same address cannot have its
 *    new trace removed.
 *  - Chaining: the allocator found at install is called underneath.
 *    Uninstalling restores it only when ours is still on top; otherwise
 *    (another tracer installed itself over ours) our hooks stay in the
 *    chain and pass through until they are on top again, then they are
 *    removed. Whether ours is in the chain is never guessed: a probe
 *    calls the allocator on top once and sees whether our hook is
 *    reached. Ours is installed only when it is not, so two copies can
 *    never call each other in a loop, whatever other tracer is around.
 *
 * State: hooks[] and the probe's flags are written with the GIL held
 * (install, uninstall, probe); the hooks only read hooks[i].inner, which
 * does not change while they are installed.
 */
#include "hooks.h"
#include "tracer.h"

typedef struct {
    PyMemAllocatorDomain domain;
    PyMemAllocatorEx inner;     /* the allocator underneath ours */
    int installed;              /* ours is in the chain */
} hook_ctx;

static hook_ctx hooks[3] = {
    {PYMEM_DOMAIN_RAW, {0}, 0},
    {PYMEM_DOMAIN_MEM, {0}, 0},
    {PYMEM_DOMAIN_OBJ, {0}, 0},
};

/* Set while probing whether a domain's allocator reaches our hook; the
 * hooks set bit (1 << index) of probe_seen when they are reached. */
static CTM_TLS int probing;
static CTM_TLS int probe_seen;

/* (named hook_*: memcheck_ours in the tests counts such frames as
 * passing the program's requests through) */
static inline void *
hook_inner_alloc(PyMemAllocatorEx *a, int use_calloc, size_t nelem,
                 size_t elsize)
{
    return use_calloc ? a->calloc(a->ctx, nelem, elsize)
                      : a->malloc(a->ctx, nelem * elsize);
}

/* The allocation of a block that gets a trace. */
static __attribute__((noinline)) void *
hook_alloc_traced(hook_ctx *h, int use_calloc, size_t nelem, size_t elsize)
{
    PyMemAllocatorEx *a = &h->inner;
    /* What the allocator underneath allocates itself (pymalloc's arena
     * table, its large blocks from the RAW allocator) is not traced: the
     * outer block is, once, as the stdlib does. */
    ctm_reentrant = 1;
    void *ptr = hook_inner_alloc(a, use_calloc, nelem, elsize);
    if (ptr == NULL) {
        ctm_reentrant = 0;
        return NULL;
    }
    /* Only PyMem resizes co_extra slots: an object allocation is a safe
     * place to arm code objects' death notices. */
    if (ctm_tracer_record(CTM_DEFAULT_DOMAIN, (uintptr_t)ptr,
                          nelem * elsize, h->domain != PYMEM_DOMAIN_RAW, 1,
                          h->domain == PYMEM_DOMAIN_OBJ) < 0) {
        /* No room to trace it: fail the allocation, as the stdlib does,
         * rather than hand out an untraced block. */
        a->free(a->ctx, ptr);
        ptr = NULL;
    }
    ctm_reentrant = 0;
    return ptr;
}

/* The allocation of a block that the sampler passed over: not traced,
 * and neither is what the allocator underneath allocates for it (the
 * sampler has counted its bytes once). */
static __attribute__((noinline)) void *
hook_alloc_untraced(hook_ctx *h, int use_calloc, size_t nelem, size_t elsize)
{
    ctm_reentrant = 1;
    void *ptr = hook_inner_alloc(&h->inner, use_calloc, nelem, elsize);
    ctm_reentrant = 0;
    return ptr;
}

/* Sampling, and the thread's countdown ran out in this block: the
 * sampler decides. */
static __attribute__((noinline)) void *
hook_alloc_sampling(hook_ctx *h, int use_calloc, size_t nelem,
                    size_t elsize)
{
    if (ctm_sample_take(nelem * elsize, ctm_tracer_interval())) {
        return hook_alloc_traced(h, use_calloc, nelem, elsize);
    }
    return hook_alloc_untraced(h, use_calloc, nelem, elsize);
}

/* Only tail calls here, so that the paths that do not trace save no
 * registers: the work is in the functions above. */
static inline void *
hook_alloc(hook_ctx *h, int use_calloc, size_t nelem, size_t elsize)
{
    PyMemAllocatorEx *a = &h->inner;
    if (probing) {
        probe_seen |= 1 << (int)(h - hooks);
        return a->malloc(a->ctx, nelem * elsize);
    }
    if (ctm_reentrant || !ctm_tracer_tracing()) {
        return hook_inner_alloc(a, use_calloc, nelem, elsize);
    }
    if (ctm_tracer_interval() == 0) {
        return hook_alloc_traced(h, use_calloc, nelem, elsize);
    }
    if (!ctm_sample_runs_out(nelem * elsize)) {
        /* Passed over. The C allocator under the RAW domain calls no
         * hook: it is called as the hook's tail, with no flag to set and
         * clear around it. pymalloc may call the RAW domain even for a
         * small request (its arena table, its arena map's nodes): not
         * traced, and not counted by the sampler (its count would then
         * depend on where the arenas are mapped). */
        if (h->domain == PYMEM_DOMAIN_RAW) {
            return hook_inner_alloc(a, use_calloc, nelem, elsize);
        }
        return hook_alloc_untraced(h, use_calloc, nelem, elsize);
    }
    return hook_alloc_sampling(h, use_calloc, nelem, elsize);
}

static void *
hook_malloc(void *ctx, size_t size)
{
    /* pymalloc must see the real call: the inner malloc is called from
     * hook_alloc with nelem=1 so that the product is exact. */
    return hook_alloc((hook_ctx *)ctx, 0, 1, size);
}

static void *
hook_calloc(void *ctx, size_t nelem, size_t elsize)
{
    return hook_alloc((hook_ctx *)ctx, 1, nelem, elsize);
}

static void *
hook_realloc(void *ctx, void *ptr, size_t size)
{
    hook_ctx *h = ctx;
    PyMemAllocatorEx *a = &h->inner;
    if (ptr == NULL) {
        return hook_alloc(h, 0, 1, size);
    }
    if (!ctm_tracer_tracing()) {
        return a->realloc(a->ctx, ptr, size);
    }
    /* Take the old trace out before the block may move: once realloc
     * returns, another thread may be handed the old address. Inside a
     * hook too (an allocator resizing a block of its own): the new block
     * is not traced then, but the old one's trace must not outlive it,
     * as in the stdlib. */
    uint64_t old_size = 0;
    uint32_t old_tb = 0;
    unsigned epoch = ctm_tracer_epoch();
    int had = ctm_tracer_remove(CTM_DEFAULT_DOMAIN, (uintptr_t)ptr,
                                &old_size, &old_tb);

    int was = ctm_reentrant;
    ctm_reentrant = 1;
    void *ptr2 = a->realloc(a->ctx, ptr, size);
    if (ptr2 == NULL) {
        if (had) {
            /* The block is unchanged: give it its trace back. */
            ctm_tracer_restore(CTM_DEFAULT_DOMAIN, (uintptr_t)ptr, old_size,
                               old_tb, epoch, h->domain != PYMEM_DOMAIN_RAW);
        }
        ctm_reentrant = was;
        return NULL;
    }
    if (was) {
        return ptr2;            /* the outer hook traces its own block */
    }
    /* Like the stdlib, a resized block gets the resizer's traceback
     * (when sampling, it is a new block to the sampler). A failure cannot
     * be reported: the block has already changed. */
    if (ctm_tracer_sampled(size)) {
        ctm_tracer_record(CTM_DEFAULT_DOMAIN, (uintptr_t)ptr2, size,
                          h->domain != PYMEM_DOMAIN_RAW, 1,
                          h->domain == PYMEM_DOMAIN_OBJ);
    }
    ctm_reentrant = 0;
    return ptr2;
}

static __attribute__((noinline)) void
hook_free_traced(hook_ctx *h, void *ptr)
{
    ctm_tracer_remove_unfiltered(CTM_DEFAULT_DOMAIN, (uintptr_t)ptr, NULL,
                                 NULL);
    h->inner.free(h->inner.ctx, ptr);
}

/* As hook_alloc: the free of a block that cannot have a trace saves no
 * registers. */
static void
hook_free(void *ctx, void *ptr)
{
    hook_ctx *h = ctx;
    if (ptr != NULL && ctm_tracer_tracing()
        && ctm_tracer_may_have_trace((uintptr_t)ptr)) {
        hook_free_traced(h, ptr);
        return;
    }
    h->inner.free(h->inner.ctx, ptr);
}

static int
is_ours(const PyMemAllocatorEx *a)
{
    return a->malloc == hook_malloc;
}

/* Whether a call to domain i's allocator reaches our hook (needs the
 * GIL: the probe allocates through the MEM and OBJ allocators). */
static int
reaches_ours(int i)
{
    PyMemAllocatorEx cur;
    PyMem_GetAllocator(hooks[i].domain, &cur);
    if (is_ours(&cur)) {
        return 1;
    }
    if (!hooks[i].installed) {
        /* Only we install our hooks: never installed, never reached. */
        return 0;
    }
    probing = 1;
    probe_seen = 0;
    void *p = cur.malloc(cur.ctx, 1);
    probing = 0;
    if (p != NULL) {
        cur.free(cur.ctx, p);
    }
    if (!(probe_seen & (1 << i))) {
        /* Another tracer restored allocators saved before ours. */
        hooks[i].installed = 0;
    }
    return hooks[i].installed;
}

void
ctm_hooks_install(void)
{
    for (int i = 0; i < 3; i++) {
        if (reaches_ours(i)) {
            continue;
        }
        PyMem_GetAllocator(hooks[i].domain, &hooks[i].inner);
        PyMemAllocatorEx mine = {&hooks[i], hook_malloc, hook_calloc,
                                 hook_realloc, hook_free};
        PyMem_SetAllocator(hooks[i].domain, &mine);
        hooks[i].installed = 1;
    }
}

/* Take our hooks out of each domain where they are on top; elsewhere
 * (another allocator on top calls them) they stay, passing through. */
void
ctm_hooks_uninstall(void)
{
    for (int i = 0; i < 3; i++) {
        PyMemAllocatorEx cur;
        PyMem_GetAllocator(hooks[i].domain, &cur);
        if (is_ours(&cur)) {
            PyMem_SetAllocator(hooks[i].domain, &hooks[i].inner);
            hooks[i].installed = 0;
        }
    }
}

int
ctm_hooks_reached(void)
{
    for (int i = 0; i < 3; i++) {
        if (!reaches_ours(i)) {
            return 0;
        }
    }
    return 1;
}
