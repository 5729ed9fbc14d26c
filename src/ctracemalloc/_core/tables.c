/* Live traces: one open-addressing table per domain.
 *
 * Invariants of a ctm_table:
 *  - capacity is a power of two, at least CTM_TABLE_MIN, and the table
 *    is at most three quarters full, so every probe sequence ends at an
 *    empty slot;
 *  - linear probing from the home slot (Fibonacci hashing of the
 *    pointer); deletion shifts the following entries back instead of
 *    leaving tombstones, so a table that sees billions of malloc/free
 *    pairs never degrades;
 *  - the key 0 (never a real block, but the track API accepts it) lives
 *    outside the slots, in `zero`.
 *
 * Entries hold the size in 32 bits; a block of 4 GiB or more keeps
 * CTM_BIG_SIZE there and its real size in the `bigs` list, searched
 * linearly: such blocks are a handful at most.
 *
 * Domain 0, where every allocator hook records, has its table inline;
 * other domains (the track API) get a table each, found by a linear scan
 * of a short array.
 *
 * Memory comes from libc (ctm_malloc), never from PyMem: see internal.h.
 */
#include "tables.h"

#include <string.h>

#define CTM_TABLE_MIN 1024

static int
table_resize(ctm_table *t, size_t capacity)
{
    ctm_entry *slots = ctm_calloc(capacity, sizeof(ctm_entry));
    if (slots == NULL) {
        return -1;
    }
    ctm_entry *old = t->slots;
    size_t oldcap = old ? t->mask + 1 : 0;
    t->slots = slots;
    t->mask = capacity - 1;
    t->shift = 64;
    for (size_t c = capacity; c > 1; c >>= 1) {
        t->shift--;
    }
    for (size_t i = 0; i < oldcap; i++) {
        if (old[i].ptr != 0) {
            size_t j = ctm_table_home(t, old[i].ptr);
            while (slots[j].ptr != 0) {
                j = (j + 1) & t->mask;
            }
            slots[j] = old[i];
        }
    }
    ctm_free(old);
    return 0;
}

static ctm_entry *
table_find(const ctm_table *t, uintptr_t ptr)
{
    if (ptr == 0) {
        return t->has_zero ? (ctm_entry *)&t->zero : NULL;
    }
    if (t->slots == NULL) {
        return NULL;
    }
    size_t i = ctm_table_home(t, ptr);
    for (;;) {
        ctm_entry *e = &t->slots[i];
        if (e->ptr == ptr) {
            return e;
        }
        if (e->ptr == 0) {
            return NULL;
        }
        i = (i + 1) & t->mask;
    }
}

/* Insert a key known to be absent; return its entry or NULL when the
 * table could not grow. */
static ctm_entry *
table_insert_new(ctm_table *t, uintptr_t ptr)
{
    if (ptr == 0) {
        t->has_zero = 1;
        t->zero.ptr = 0;
        return &t->zero;
    }
    size_t cap = t->slots ? t->mask + 1 : 0;
    if ((t->count + 1) * 4 > cap * 3) {
        if (table_resize(t, cap ? cap * 2 : CTM_TABLE_MIN) < 0) {
            return NULL;
        }
    }
    size_t i = ctm_table_home(t, ptr);
    while (t->slots[i].ptr != 0) {
        i = (i + 1) & t->mask;
    }
    t->count++;
    t->slots[i].ptr = ptr;
    return &t->slots[i];
}

static void
table_delete(ctm_table *t, ctm_entry *e)
{
    if (e == &t->zero) {
        t->has_zero = 0;
        return;
    }
    size_t hole = (size_t)(e - t->slots);
    size_t j = hole;
    for (;;) {
        j = (j + 1) & t->mask;
        ctm_entry *next = &t->slots[j];
        if (next->ptr == 0) {
            break;
        }
        size_t home = ctm_table_home(t, next->ptr);
        /* Move next into the hole unless its home lies cyclically in
         * (hole, j]: then the hole is not on its probe path. */
        int stays = (hole <= j) ? (hole < home && home <= j)
                                : (hole < home || home <= j);
        if (!stays) {
            t->slots[hole] = *next;
            hole = j;
        }
    }
    t->slots[hole].ptr = 0;
    t->count--;
}

static void
table_release(ctm_table *t)
{
    ctm_free(t->slots);
    memset(t, 0, sizeof(*t));
}

static ctm_table *
domain_table(ctm_traces *tr, uint32_t domain, int create)
{
    if (domain == CTM_DEFAULT_DOMAIN) {
        return &tr->main;
    }
    for (size_t i = 0; i < tr->nothers; i++) {
        if (tr->others[i].domain == domain) {
            return &tr->others[i].table;
        }
    }
    if (!create) {
        return NULL;
    }
    ctm_domain_table *o = ctm_realloc(tr->others,
                                      (tr->nothers + 1) * sizeof(*o));
    if (o == NULL) {
        return NULL;
    }
    tr->others = o;
    memset(&o[tr->nothers], 0, sizeof(*o));
    o[tr->nothers].domain = domain;
    return &o[tr->nothers++].table;
}

static ctm_big *
big_find(const ctm_traces *tr, uint32_t domain, uintptr_t ptr)
{
    for (size_t i = 0; i < tr->nbigs; i++) {
        if (tr->bigs[i].domain == domain && tr->bigs[i].ptr == ptr) {
            return &tr->bigs[i];
        }
    }
    return NULL;
}

uint64_t
ctm_traces_entry_size_unlocked(const ctm_traces *tr, uint32_t domain,
                               const ctm_entry *e)
{
    if (e->size != CTM_BIG_SIZE) {
        return e->size;
    }
    const ctm_big *b = big_find(tr, domain, e->ptr);
    return b ? b->size : CTM_BIG_SIZE;
}

static void
big_remove(ctm_traces *tr, uint32_t domain, uintptr_t ptr)
{
    ctm_big *b = big_find(tr, domain, ptr);
    if (b != NULL) {
        *b = tr->bigs[--tr->nbigs];
    }
}

/* Record size for an entry: inline, or in the big list. */
static int
set_size(ctm_traces *tr, uint32_t domain, ctm_entry *e, uint64_t size)
{
    if (size < CTM_BIG_SIZE) {
        e->size = (uint32_t)size;
        return 0;
    }
    ctm_big *b = big_find(tr, domain, e->ptr);
    if (b == NULL) {
        if (tr->nbigs == tr->capbigs) {
            size_t ncap = tr->capbigs ? tr->capbigs * 2 : 8;
            ctm_big *nb = ctm_realloc(tr->bigs, ncap * sizeof(ctm_big));
            if (nb == NULL) {
                return -1;
            }
            tr->bigs = nb;
            tr->capbigs = ncap;
        }
        b = &tr->bigs[tr->nbigs++];
        b->domain = domain;
        b->ptr = e->ptr;
    }
    b->size = size;
    e->size = CTM_BIG_SIZE;
    return 0;
}

int
ctm_traces_add_unlocked(ctm_traces *tr, uint32_t domain, uintptr_t ptr,
                        uint64_t size, uint32_t traceback)
{
    ctm_table *t = domain_table(tr, domain, 1);
    if (t == NULL) {
        return -1;
    }
    ctm_entry *e = table_find(t, ptr);
    if (e != NULL) {
        /* A block traced twice (track() again, or realloc in place):
         * the new trace replaces the old one. */
        uint64_t old = ctm_traces_entry_size_unlocked(tr, domain, e);
        if (e->size == CTM_BIG_SIZE && size < CTM_BIG_SIZE) {
            big_remove(tr, domain, ptr);
        }
        if (set_size(tr, domain, e, size) < 0) {
            return -1;
        }
        tr->traced -= old;
    }
    else {
        e = table_insert_new(t, ptr);
        if (e == NULL) {
            return -1;
        }
        if (set_size(tr, domain, e, size) < 0) {
            table_delete(t, e);
            return -1;
        }
        tr->ntraces++;
    }
    e->traceback = traceback;
    tr->traced += size;
    if (tr->traced > tr->peak) {
        tr->peak = tr->traced;
    }
    return 0;
}

int
ctm_traces_remove_unlocked(ctm_traces *tr, uint32_t domain, uintptr_t ptr,
                           uint64_t *size, uint32_t *traceback)
{
    ctm_table *t = domain_table(tr, domain, 0);
    if (t == NULL) {
        return 0;
    }
    ctm_entry *e = table_find(t, ptr);
    if (e == NULL) {
        return 0;
    }
    uint64_t sz = ctm_traces_entry_size_unlocked(tr, domain, e);
    if (e->size == CTM_BIG_SIZE) {
        big_remove(tr, domain, ptr);
    }
    if (size != NULL) {
        *size = sz;
    }
    if (traceback != NULL) {
        *traceback = e->traceback;
    }
    tr->traced -= sz;
    tr->ntraces--;
    table_delete(t, e);
    return 1;
}

ctm_entry *
ctm_traces_get_unlocked(ctm_traces *tr, uint32_t domain, uintptr_t ptr)
{
    ctm_table *t = domain_table(tr, domain, 0);
    return t ? table_find(t, ptr) : NULL;
}

void
ctm_traces_clear_unlocked(ctm_traces *tr)
{
    table_release(&tr->main);
    for (size_t i = 0; i < tr->nothers; i++) {
        table_release(&tr->others[i].table);
    }
    ctm_free(tr->others);
    ctm_free(tr->bigs);
    memset(tr, 0, sizeof(*tr));
}

static size_t
table_memory(const ctm_table *t)
{
    return t->slots ? (t->mask + 1) * sizeof(ctm_entry) : 0;
}

size_t
ctm_traces_memory_unlocked(const ctm_traces *tr)
{
    size_t n = table_memory(&tr->main);
    for (size_t i = 0; i < tr->nothers; i++) {
        n += sizeof(ctm_domain_table) + table_memory(&tr->others[i].table);
    }
    return n + tr->capbigs * sizeof(ctm_big);
}

static int
table_foreach(const ctm_traces *tr, uint32_t domain, const ctm_table *t,
              ctm_trace_visitor fn, void *arg)
{
    if (t->has_zero) {
        int rc = fn(domain, ctm_traces_entry_size_unlocked(tr, domain,
                                                           &t->zero),
                    t->zero.traceback, arg);
        if (rc) {
            return rc;
        }
    }
    if (t->slots == NULL) {
        return 0;
    }
    for (size_t i = 0; i <= t->mask; i++) {
        const ctm_entry *e = &t->slots[i];
        if (e->ptr != 0) {
            uint64_t size = e->size != CTM_BIG_SIZE
                ? e->size : ctm_traces_entry_size_unlocked(tr, domain, e);
            int rc = fn(domain, size, e->traceback, arg);
            if (rc) {
                return rc;
            }
        }
    }
    return 0;
}

int
ctm_traces_foreach_unlocked(const ctm_traces *tr, ctm_trace_visitor fn,
                            void *arg)
{
    int rc = table_foreach(tr, CTM_DEFAULT_DOMAIN, &tr->main, fn, arg);
    for (size_t i = 0; rc == 0 && i < tr->nothers; i++) {
        rc = table_foreach(tr, tr->others[i].domain, &tr->others[i].table,
                           fn, arg);
    }
    return rc;
}
