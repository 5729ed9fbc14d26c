/* The live traces of the tracer (store.c).
 *
 * A trace store per domain, keyed by pointer, in two levels, so that
 * blocks close in memory are close in the store too: an allocator hands
 * out neighbouring blocks one after the other (pymalloc carves a pool
 * into blocks of one size class), and a flat hash table would scatter
 * them over the whole table, one cache miss per malloc and per free.
 *
 *  - A region is 2^CTM_REGION_BITS bytes of address space (16 KiB, a
 *    pymalloc pool on 64-bit builds). The region index maps the region
 *    number (ptr >> CTM_REGION_BITS) to the region's bucket; it has one
 *    slot per region with live traces, so it stays small and cached.
 *  - A bucket holds the traces of one region: 16-bit offsets in the
 *    region as keys, then their values, 10 bytes a trace. The home slot
 *    of an offset is its 16-byte granule, so neighbouring blocks sit in
 *    neighbouring slots.
 *
 * A value is the size (CTM_BIG_SIZE meaning "look in the big-size list":
 * blocks of 4 GiB or more are rare) and the interned traceback id.
 *
 * Young traces of domain 0 and of the native domain wait in a nursery
 * shared by both, in front of their stores (store.c): per domain, a
 * pointer's trace is in the nursery or in the store, never both.
 */
#ifndef CTM_STORE_H
#define CTM_STORE_H

/* the placing pass writes snapshot trace records (ctm_snap_trace) */
#include "snapdata.h"
#define CTM_REGION_BITS 14
#define CTM_BIG_SIZE UINT32_MAX

typedef struct {
    uint32_t size;              /* or CTM_BIG_SIZE */
    uint32_t traceback;         /* tracer traceback id */
} ctm_value;

typedef struct ctm_bucket ctm_bucket;

typedef struct {
    uintptr_t region;           /* ptr >> CTM_REGION_BITS */
    ctm_bucket *bucket;         /* NULL marks an empty slot */
} ctm_region_slot;

typedef struct {
    ctm_region_slot *slots;     /* the region index */
    size_t mask;                /* capacity - 1 (power of two) */
    unsigned shift;             /* 64 - log2(capacity) */
    size_t nregions;
    size_t bucket_bytes;        /* memory of all buckets */
} ctm_store;

typedef struct {
    uint32_t domain;
    ctm_store store;
} ctm_domain_store;

typedef struct {
    uint32_t domain;
    uintptr_t ptr;
    uint64_t size;
} ctm_big;

/* A young trace of domain 0 or of the native domain: see the nursery in
 * store.c. */
typedef struct {
    uintptr_t ptr;              /* the block's address, | 1 for the native
                                   domain; 0 marks an empty slot */
    ctm_value value;
} ctm_young;

typedef struct {
    ctm_young *nursery;         /* young traces (domain 0, native),
                                   or NULL */
    ctm_store main;             /* domain 0: the allocator hooks */
    ctm_domain_store *others;   /* other domains: the track API,
                                   native tracing */
    size_t nothers;
    ctm_big *bigs;              /* sizes >= CTM_BIG_SIZE */
    size_t nbigs, capbigs;
    size_t traced;              /* sum of the live sizes */
    size_t peak;
    size_t ntraces;
    uint64_t *live;             /* live traces per traceback id, so that a
                                   snapshot need not count them */
    size_t live_cap;            /* entries of live (ids above: none) */
} ctm_traces;

/* Add the trace of a block an allocator just returned, in domain 0 or
 * the native domain: its free removed any trace at its address, so the
 * trace goes to the nursery without a look in the store. When a free was
 * not seen (a caller that broke the allocator's rules, a native block
 * freed by code that is not patched), the old trace stays, counted,
 * until the young one moves to the store and replaces it. Return 0, or
 * -1 when memory for the tables ran out (nothing changed then). */
int ctm_traces_add_block_unlocked(ctm_traces *t, uint32_t domain,
                                  uintptr_t ptr, uint64_t size,
                                  uint32_t traceback);
/* Add or replace the trace of (domain, ptr). Return 0, or -1 when memory
 * for the tables ran out (nothing changed then). */
int ctm_traces_add_unlocked(ctm_traces *t, uint32_t domain, uintptr_t ptr,
                            uint64_t size, uint32_t traceback);
/* Remove the trace of (domain, ptr) if any; return 1 if there was one
 * (then *size and *traceback are set when not NULL), else 0. */
int ctm_traces_remove_unlocked(ctm_traces *t, uint32_t domain, uintptr_t ptr,
                               uint64_t *size, uint32_t *traceback);
/* The value of (domain, ptr), or NULL; valid until the traces change.
 * Its traceback changes only through ctm_traces_retrace_unlocked, which
 * keeps the counts per traceback. */
ctm_value *ctm_traces_get_unlocked(ctm_traces *t, uint32_t domain,
                                   uintptr_t ptr);
/* Give the trace whose value is v (from ctm_traces_get_unlocked) another
 * traceback. Return 0, or -1 when memory for the tables ran out (nothing
 * changed then). */
int ctm_traces_retrace_unlocked(ctm_traces *t, ctm_value *v,
                                uint32_t traceback);
/* Size of the value v of (domain, ptr). */
uint64_t ctm_traces_value_size_unlocked(const ctm_traces *t, uint32_t domain,
                                        uintptr_t ptr, const ctm_value *v);
/* Drop every trace and release the tables' memory. */
void ctm_traces_clear_unlocked(ctm_traces *t);
size_t ctm_traces_memory_unlocked(const ctm_traces *t);

/* The live traces grouped by traceback, for a snapshot, by a counting
 * sort whose counts the tables keep as traces come and go: one pass
 * places each trace after those of the tracebacks before its own. On
 * large tables a helper thread takes half of the store, and places its
 * traces from the end of each traceback's run backwards. The tables
 * must not change between the two calls. */
typedef struct {
    uint32_t ntb;               /* above every traceback id */
    uint64_t *counts;           /* traces per traceback */
} ctm_placement;

/* The counts, copied into g. Return 0, or -1 if memory ran out; either
 * way ctm_placement_free(g) after. */
int ctm_traces_counts_unlocked(ctm_traces *t, uint32_t ntb, ctm_placement *g);
/* The placing pass: out (room for every live trace) gets them grouped,
 * each named rename[traceback id]. It checks the counts as it goes; a
 * wrong one (a bug) stops a test build, and a release build counts the
 * traces, mends the tables' counts and places them again. Return 0, or
 * -1 if memory ran out. */
int ctm_traces_place_unlocked(ctm_traces *t, ctm_placement *g,
                              const uint32_t *rename, ctm_snap_trace *out);
void ctm_placement_free(ctm_placement *g);

/* For the interner's compaction: *counts (ntb entries, ctm_free after)
 * gets the live traces per traceback id, counted from the traces, and
 * room for ntb ids is made in the kept counts. 0, or -1 if memory ran
 * out. Then rename every trace's traceback id i to map[i] (counts and ntb
 * as given to the first call; a live trace's map is never UINT32_MAX). */
int ctm_traces_exact_counts_unlocked(ctm_traces *tr, uint32_t ntb,
                                     uint64_t **counts);
void ctm_traces_rename_unlocked(ctm_traces *tr, const uint32_t *map,
                                const uint64_t *counts, uint32_t ntb);

#endif /* CTM_STORE_H */
