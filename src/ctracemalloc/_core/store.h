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
    ctm_store recent;           /* peak record: stored since the peak */
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

/* A trace that was live at the peak and has gone since: see the peak
 * record in store.c. */
typedef struct {
    uint64_t size;
    uint32_t domain;
    uint32_t traceback;
} ctm_gone;

typedef struct ctm_timeline ctm_timeline;

typedef struct {
    ctm_young *nursery;         /* young traces (domain 0, native),
                                   or NULL */
    ctm_store main;             /* domain 0: the allocator hooks */
    ctm_domain_store *others;   /* other domains: the track API,
                                   native tracing */
    size_t nothers;
    ctm_big *bigs;              /* sizes >= CTM_BIG_SIZE */
    size_t nbigs, capbigs;
    uint64_t sample_interval;   /* 0: exact; else the traces are samples
                                   (sampling.h), and traced and peak sum
                                   their estimated sizes. Set while the
                                   tables are empty */
    size_t traced;              /* sum of the live sizes */
    size_t peak;
    size_t ntraces;
    uint64_t *live;             /* live traces per traceback id, so that a
                                   snapshot need not count them */
    size_t live_cap;            /* entries of live (ids above: none) */
    /* The peak record (store.c), kept while peak_on: */
    int peak_on;
    int peak_due;               /* a new peak, to settle (store.c) */
    int peak_lost;              /* memory ran out: the record is wrong */
    uint32_t gen;               /* peaks so far */
    uint16_t *young_gen;        /* per nursery slot: gen at its add */
    ctm_store recent;           /* domain 0: stored since the peak */
    ctm_gone *gone;             /* live at the peak, gone since */
    size_t ngone, capgone;
    ctm_timeline *timeline;     /* traced memory over time, or NULL; its
                                   owner's, kept by clear */
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
/* Give the trace of (domain, ptr), whose value is v (from
 * ctm_traces_get_unlocked), another traceback. Return 0, or -1 when
 * memory for the tables ran out (nothing changed then, unless the peak
 * record is kept: then the trace may be lost). */
int ctm_traces_retrace_unlocked(ctm_traces *t, uint32_t domain,
                                uintptr_t ptr, ctm_value *v,
                                uint32_t traceback);
/* Size of the value v of (domain, ptr). */
uint64_t ctm_traces_value_size_unlocked(const ctm_traces *t, uint32_t domain,
                                        uintptr_t ptr, const ctm_value *v);
/* The peak record (store.c): start keeping it (the peak is reset to the
 * traced memory), 0 or -1 if memory ran out; reset the peak (a new
 * record when it is kept). The record stops with clear's caller
 * zeroing peak_on. */
int ctm_traces_peak_start_unlocked(ctm_traces *t);
void ctm_traces_reset_peak_unlocked(ctm_traces *t);
/* Drop every trace and release the tables' memory (the peak record and
 * the timeline stay on if they were). */
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
    uint64_t n;                 /* traces in all */
    int peak;                   /* the peak record's traces, not the live
                                   ones */
} ctm_placement;

/* The counts, copied into g (of the peak record's traces when peak: then
 * counted). Return 0, or -1 if memory ran out; either way
 * ctm_placement_free(g) after. */
int ctm_traces_counts_unlocked(ctm_traces *t, uint32_t ntb, int peak,
                               ctm_placement *g);
/* The placing pass: out (room for g->n traces) gets them grouped,
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
