/* The utility layer: what every other layer of the core may use, and
 * which uses nothing of theirs.
 *
 *   mem.c      the tracer's own memory (never traced), large arrays on
 *              huge pages with one spare, one growable array
 *   index.c    one open-addressing index of uint32 items
 *   thread.c   a helper thread for the passes that split in two
 *   pyutil.c   the module state and the helpers of the Python types
 *   elfgot.c   GOT slots of the loaded objects (its own header, elfgot.h)
 *
 * Hashing and assertions are inline, here.
 */
#ifndef CTM_UTIL_H
#define CTM_UTIL_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <stddef.h>
#include <stdlib.h>
#include <pthread.h>

#include "compat.h"

/* ---------------------------------------------------------------------
 * Assertions
 *
 * CTM_ASSERT(cond) checks an invariant in the builds that define
 * CTM_DEBUG (the test, sanitizer and debug builds: setup.py): a false one
 * prints where and aborts. In release builds it compiles to nothing, so
 * it may name fields that only exist for it.
 * ------------------------------------------------------------------- */
#ifdef CTM_DEBUG
void ctm_assert_failed(const char *expr, const char *file, int line);
#  define CTM_ASSERT(cond) \
    ((cond) ? (void)0 : ctm_assert_failed(#cond, __FILE__, __LINE__))
#else
#  define CTM_ASSERT(cond) ((void)0)
#endif

/* Thread-local storage that the hooks can use without allocating. */
#if defined(__GNUC__)
#  define CTM_TLS __thread __attribute__((tls_model("initial-exec")))
#else
#  define CTM_TLS _Thread_local
#endif

/* ---------------------------------------------------------------------
 * Memory (mem.c)
 *
 * The tracer's own memory comes from libc, never from the PyMem
 * allocators that the hooks trace: it must never be traced, and the
 * hooks may need it while holding the tables lock.
 * ------------------------------------------------------------------- */
static inline void *ctm_malloc(size_t n) { return malloc(n ? n : 1); }
static inline void *ctm_calloc(size_t n, size_t sz)
{
    return calloc(n ? n : 1, sz ? sz : 1);
}
static inline void *ctm_realloc(void *p, size_t n)
{
    return realloc(p, n ? n : 1);
}
static inline void ctm_free(void *p) { free(p); }

/* Grow *array, of *cap items of elsize bytes, to hold at least need
 * items (doubling, from 16). Return 0, or -1 without an exception set
 * if memory ran out or the size overflows; *array and *cap are
 * unchanged then. */
int ctm_grow_slow(void **array, size_t *cap, size_t need, size_t elsize);
static inline int
ctm_grow(void **array, size_t *cap, size_t need, size_t elsize)
{
    return need <= *cap ? 0 : ctm_grow_slow(array, cap, need, elsize);
}

/* A large array (megabytes, about to be filled): n bytes at least,
 * *size of them. It is the spare if one is kept that fits (about the
 * same size), else fresh memory whose whole 2 MiB pages are backed by
 * huge pages where the system allows (a few page faults to fill it
 * instead of one per 4 KiB), with some room past n for an array that
 * grows a little. NULL if memory ran out. */
void *ctm_large_new(size_t n, size_t *size);
/* Free a large array of size bytes (NULL allowed): it becomes the spare
 * while spares are kept and it is big enough, else goes back to libc. */
void ctm_large_free(void *p, size_t size);
/* Keep freed large arrays as the spare (1) or not (0: the spare is
 * released). The GIL protects the spare. */
void ctm_large_keep_spare(int keep);
/* Free the spare, if any (spares are still kept after). */
void ctm_large_release_spare(void);
size_t ctm_large_spare_bytes(void);
/* Write to each page of [p, p + n), so that the kernel maps them now: a
 * pass that then writes all over the array does not stop at each page
 * it touches first. */
void ctm_touch_pages(void *p, size_t n);

/* ---------------------------------------------------------------------
 * Hashing
 *
 * One mixer for every hash table of the core: a bijective 64-bit
 * finaliser (MurmurHash3's fmix64), whose every output bit depends on
 * every input bit, so that keys which differ in a few bits (pointers,
 * small indexes) spread over the table.
 * ------------------------------------------------------------------- */
static inline uint64_t
ctm_mix64(uint64_t x)
{
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdULL;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ULL;
    x ^= x >> 33;
    return x;
}

static inline uint32_t
ctm_mix32(uint64_t x)
{
    return (uint32_t)ctm_mix64(x);
}

/* A sequence is hashed as a sum of one term per item, each a bijective
 * mix of (position, item): the terms do not wait on each other, so the
 * processor computes several at once, where a chained hash
 * (h = mix(h, item)) waits a multiplication per item. */
static inline uint64_t
ctm_hash_term(uint64_t x)
{
    x *= 0xc4ceb9fe1a85ec53ULL;
    return x ^ (x >> 29);
}

/* The hash of a traceback, nframe frame ids with total_nframe total,
 * before its final mix: the file loader takes 64 bits of it for its own
 * index, the interner and the snapshot builder 32 (ctm_traceback_hash).
 * total is multiplied in, not xored with the first frame: otherwise
 * (frame 5, total 1) and (frame 4, total 0) would collide. */
static inline uint64_t
ctm_traceback_hash_state(const uint32_t *frames, uint32_t nframe,
                         uint32_t total)
{
    uint64_t h = (0x9e3779b97f4a7c15ULL ^ nframe)
                 + (uint64_t)total * 0xff51afd7ed558ccdULL;
    for (uint32_t i = 0; i < nframe; i++) {
        h += ctm_hash_term((uint64_t)i << 32 | frames[i]);
    }
    return h;
}

/* The hash the builder keeps in ctm_snap_tb.hash: a loader that makes the
 * arrays itself fills it with this, so they equal the builder's. */
static inline uint32_t
ctm_traceback_hash(const uint32_t *frames, uint32_t nframe, uint32_t total)
{
    return ctm_mix32(ctm_traceback_hash_state(frames, nframe, total));
}

/* ---------------------------------------------------------------------
 * Index (index.c)
 *
 * An open-addressing set of uint32 items (indexes into an array that
 * the owner keeps), by linear probing: a slot holds item + 1, 0 is
 * empty. The capacity is a power of two and the index at most half
 * full, so a probe ends. An item is removed by shifting the items of
 * its probe run back (ctm_index_remove), so no tombstones. The owner
 * probes itself, since only it knows how to compare an item with a key:
 *
 *     for (j = hash & ix.mask; (v = ix.slots[j]) != 0;
 *          j = (j + 1) & ix.mask) { if (equal(v - 1, key)) ... }
 *     then ix.slots[j] = item + 1 (after ctm_index_reserve).
 *
 * An item known to be absent goes in with ctm_index_put.
 * ------------------------------------------------------------------- */
typedef struct {
    uint32_t *slots;            /* NULL: capacity 0 */
    uint32_t mask;              /* capacity - 1 */
} ctm_index;

/* The hash of an item, as the owner probed for it. */
typedef uint32_t (*ctm_index_hash_fn)(const void *owner, uint32_t item);

static inline size_t
ctm_index_capacity(const ctm_index *ix)
{
    return ix->slots ? (size_t)ix->mask + 1 : 0;
}

/* Make room for count + 1 items (count: the items in ix now), rehashing
 * them with hash(owner, item) if the index grows. Return 0, or -1
 * without an exception set if memory ran out (ix unchanged).
 * ctm_index_grow is its slow path, for an index without that room. */
int ctm_index_grow(ctm_index *ix, size_t count, ctm_index_hash_fn hash,
                   const void *owner);
static inline int
ctm_index_reserve(ctm_index *ix, size_t count, ctm_index_hash_fn hash,
                  const void *owner)
{
    return (count + 1) * 2 <= ctm_index_capacity(ix)
           ? 0 : ctm_index_grow(ix, count, hash, owner);
}

/* Put item, which ix does not hold, in the first empty slot of its
 * probe sequence (room reserved by the caller). */
static inline void
ctm_index_put(ctm_index *ix, uint32_t hash, uint32_t item)
{
    uint32_t j = hash & ix->mask;
    while (ix->slots[j]) {
        j = (j + 1) & ix->mask;
    }
    ix->slots[j] = item + 1;
}
/* Empty slot j (found by the owner's probe), moving back the items after
 * it that their probe would no longer reach; hash as for
 * ctm_index_grow. */
void ctm_index_remove(ctm_index *ix, uint32_t j, ctm_index_hash_fn hash,
                      const void *owner);
void ctm_index_free(ctm_index *ix);

/* ---------------------------------------------------------------------
 * Helper thread (thread.c)
 *
 * fn(arg) on a helper thread that blocks every signal (they are for the
 * program's threads), from start to join; if no thread can be made,
 * join runs it on the caller's.
 * ------------------------------------------------------------------- */
typedef struct {
    pthread_t thread;
    int made;
    void (*fn)(void *);
    void *arg;
} ctm_helper;

void ctm_helper_start(ctm_helper *h, void (*fn)(void *), void *arg);
void ctm_helper_join(ctm_helper *h);

/* ---------------------------------------------------------------------
 * Module state and Python helpers (pyutil.c)
 * ------------------------------------------------------------------- */

/* The module's types and cached objects. One instance: the tracer is
 * process-wide, like the allocator it hooks. Set once by the module's
 * init, read by the type files. Protected by the GIL. */
typedef struct {
    PyTypeObject *Frame;
    PyTypeObject *Traceback;
    PyTypeObject *Trace;
    PyTypeObject *Traces;
    PyTypeObject *Statistic;
    PyTypeObject *StatisticDiff;
    PyTypeObject *BaseFilter;
    PyTypeObject *Filter;
    PyTypeObject *DomainFilter;
    PyTypeObject *Snapshot;
    PyObject *unknown_str;      /* '<unknown>' */
    PyObject *module;           /* borrowed: the extension module */
} ctm_module_state;

extern ctm_module_state ctm_state;

/* Make a heap type from spec (bases: NULL, or a type or tuple of them),
 * keep it in *slot (a strong reference owned by ctm_state) and add it
 * to module. Return 0 or -1. */
int ctm_add_type(PyObject *module, PyType_Spec *spec, PyObject *bases,
                 PyTypeObject **slot);
/* Intern text into *slot once (a process-lifetime reference). */
int ctm_intern_once(PyObject **slot, const char *text);
/* AttributeError for reading the attribute name of self, which is not
 * set (an instance made by __new__ without __init__). Returns NULL. */
PyObject *ctm_no_attribute(PyObject *self, const char *name);
/* __reduce__ of a type whose constructor takes args: (type(self), args),
 * plus the instance __dict__ as the state when self is a subclass
 * instance with a non-empty one. Steals args (NULL allowed: returns
 * NULL). */
PyObject *ctm_reduce_to_constructor(PyObject *self, PyTypeObject *base,
                                    PyObject *args);
/* Sequence.index's start and stop for a sequence of length n: NULL means
 * absent (start 0, stop end), a stop of None too; negative values count
 * from the end. The caller scans i in [start, min(stop, n)). */
int ctm_sequence_bounds(PyObject *start_obj, PyObject *stop_obj,
                        Py_ssize_t n, Py_ssize_t *start, Py_ssize_t *stop);
/* Pause the cyclic GC while many objects that hold no cycles are made:
 * 1 if paused, 0 if it was off, -1 on error. ctm_gc_resume(that)
 * undoes it, keeping any pending exception. */
int ctm_gc_pause(void);
void ctm_gc_resume(int paused);

#endif /* CTM_UTIL_H */
