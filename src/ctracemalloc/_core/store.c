/* Live traces: a two-level store per domain (store.h says why).
 *
 * Region index (one per store):
 *  - open addressing, capacity a power of two, at least INDEX_MIN, at
 *    most half full; linear probing from the home slot, Fibonacci hashing
 *    of the region number (top bits of the product);
 *  - deletion shifts the following slots back instead of leaving
 *    tombstones, so that billions of malloc/free pairs never degrade it.
 *
 * Bucket (one per region with live traces):
 *  - capacity a power of two, at least BUCKET_MIN; keys are offsets in
 *    the region (0 to 2^CTM_REGION_BITS - 1), NO_KEY marks an empty slot;
 *  - the home slot of an offset is its 16-byte granule modulo the
 *    capacity: blocks of one pool are spread evenly by their stride, and
 *    neighbours share cache lines;
 *  - linear probing in Robin Hood order (along a run, keys sit ever
 *    farther from their home), so that lookups and deletions stop early
 *    even in the long runs that a pool of small blocks makes (identity
 *    hashing of dense offsets); a lookup stops after a full turn at
 *    most (small buckets may be full);
 *  - it doubles past 7/8 full, shrinks to a quarter below 1/32 full
 *    (from 64 slots up), and is freed (with its index slot) when its last
 *    trace goes.
 *
 * Nursery (domain 0 and the native domain): most blocks a program
 * allocates are freed soon after, and a trace that comes and goes without
 * touching the store saves both of its updates. The nursery is a
 * direct-mapped table of NURSERY_SIZE young traces in front of the stores
 * of both domains: a block from the allocator (or from the C allocator,
 * for native tracing) takes its slot, and the trace that held the slot
 * moves to its own domain's store. The slot is the block's 16-byte
 * granule modulo the size, so a pool filling up pushes out the traces of
 * an older pool in address order, and they reach the store in runs,
 * while the bucket they go to is in cache. A young trace's key is its
 * pointer for domain 0, and its pointer with bit 0 set for the native
 * domain (allocators return blocks aligned to 8 bytes at least): every
 * pass over the nursery takes the domain and the real pointer from the
 * key. Lookups try the nursery's one slot first. Sizes of 4 GiB and
 * more, odd pointers (possible through the track API), the other domains
 * and domain 0's traces added by the track API go to the store directly.
 * A block just allocated goes to the nursery without a look in the
 * store, since its free removed its old trace; if that free was not seen
 * (a caller that broke the allocator's rules, a native block freed by
 * code that is not patched), the old trace stays in the store until the
 * young one moves there and replaces it. Other native traces (mappings)
 * replace one in the store. So, per domain, a pointer is in the nursery
 * or in the store, both only after a free that was not seen.
 *
 * Memory comes from libc (ctm_malloc), never from PyMem: see util.h.
 */
#include "storeimpl.h"

#include <signal.h>
#include <string.h>

#define INDEX_MIN 64
#define BUCKET_MIN 2

static inline size_t
bucket_bytes(uint32_t capacity)
{
    return sizeof(ctm_bucket)
        + capacity * (sizeof(uint16_t) + sizeof(ctm_value));
}

static inline uint32_t
bucket_home(const ctm_bucket *b, uint32_t key)
{
    return (key >> 4) & b->mask;
}

/* How far slot i is from the home of the key it holds. */
static inline uint32_t
bucket_distance(const ctm_bucket *b, uint32_t key, uint32_t i)
{
    return (i - bucket_home(b, key)) & b->mask;
}

/* Slot of key in b, or -1. Robin Hood order: the keys met on the way sit
 * at least as far from their home as key would; one nearer ends the
 * search. */
static inline int64_t
bucket_find(const ctm_bucket *b, uint32_t key)
{
    uint32_t i = bucket_home(b, key);
    for (uint32_t d = 0; d <= b->mask; d++) {
        uint32_t k = b->keys[i];
        if (k == key) {
            return i;
        }
        if (k == NO_KEY || bucket_distance(b, k, i) < d) {
            return -1;
        }
        i = (i + 1) & b->mask;
    }
    return -1;
}

/* Put key, absent from b, with value v, starting at slot i where it would
 * sit at distance d (b has a free slot); return the slot where it went.
 * Robin Hood: a key takes the slot of one nearer to its home, which moves
 * on. */
static uint32_t
bucket_put_at(ctm_bucket *b, uint32_t i, uint32_t d, uint32_t key,
              ctm_value v)
{
    ctm_value *vals = bucket_values(b);
    int64_t placed = -1;
    for (;;) {
        uint32_t k = b->keys[i];
        if (k == NO_KEY) {
            b->keys[i] = (uint16_t)key;
            vals[i] = v;
            b->count++;
            return placed < 0 ? i : (uint32_t)placed;
        }
        uint32_t dk = bucket_distance(b, k, i);
        if (dk < d) {
            ctm_value vk = vals[i];
            b->keys[i] = (uint16_t)key;
            vals[i] = v;
            if (placed < 0) {
                placed = i;
            }
            key = k;
            v = vk;
            d = dk;
        }
        i = (i + 1) & b->mask;
        d++;
    }
}

static inline uint32_t
bucket_put(ctm_bucket *b, uint32_t key, ctm_value v)
{
    return bucket_put_at(b, bucket_home(b, key), 0, key, v);
}

/* The slot of key in b, which has a free slot, inserting key (with a
 * zero value, *fresh set) when absent: one scan for both. */
static inline uint32_t
bucket_upsert(ctm_bucket *b, uint32_t key, int *fresh)
{
    uint32_t i = bucket_home(b, key);
    uint32_t d = 0;
    for (;;) {
        uint32_t k = b->keys[i];
        if (k == key) {
            *fresh = 0;
            return i;
        }
        if (k == NO_KEY || bucket_distance(b, k, i) < d) {
            break;
        }
        i = (i + 1) & b->mask;
        d++;
    }
    *fresh = 1;
    ctm_value zero = {0, 0};
    return bucket_put_at(b, i, d, key, zero);
}

/* Empty slot i of b: the keys after it move back one slot, up to the
 * first empty slot or key in its home slot (Robin Hood order keeps). */
static void
bucket_delete(ctm_bucket *b, uint32_t i)
{
    ctm_value *vals = bucket_values(b);
    b->count--;
    for (uint32_t n = 0; n < b->mask; n++) {
        uint32_t j = (i + 1) & b->mask;
        uint32_t k = b->keys[j];
        if (k == NO_KEY || bucket_distance(b, k, j) == 0) {
            break;
        }
        b->keys[i] = (uint16_t)k;
        vals[i] = vals[j];
        i = j;
    }
    b->keys[i] = NO_KEY;
}

static ctm_bucket *
bucket_new(uint32_t capacity)
{
    ctm_bucket *b = ctm_malloc(bucket_bytes(capacity));
    if (b != NULL) {
        b->mask = capacity - 1;
        b->count = 0;
        memset(b->keys, 0xFF, capacity * sizeof(uint16_t));
    }
    return b;
}

/* A copy of b with the given capacity (b is freed), or NULL (b kept). */
static ctm_bucket *
bucket_resize(ctm_store *s, ctm_bucket *b, uint32_t capacity)
{
    ctm_bucket *nb = bucket_new(capacity);
    if (nb == NULL) {
        return NULL;
    }
    const ctm_value *vals = bucket_values(b);
    for (uint32_t i = 0; i <= b->mask; i++) {
        if (b->keys[i] != NO_KEY) {
            bucket_put(nb, b->keys[i], vals[i]);
        }
    }
    s->bucket_bytes += bucket_bytes(capacity);
    s->bucket_bytes -= bucket_bytes(b->mask + 1);
    ctm_free(b);
    return nb;
}

/* ---- the region index ---- */

static inline size_t
index_home(const ctm_store *s, uintptr_t region)
{
    return (size_t)(((uint64_t)region * 0x9E3779B97F4A7C15ULL) >> s->shift);
}

static ctm_region_slot *
index_find(const ctm_store *s, uintptr_t region)
{
    if (s->slots == NULL) {
        return NULL;
    }
    size_t i = index_home(s, region);
    for (;;) {
        ctm_region_slot *r = &s->slots[i];
        if (r->bucket == NULL) {
            return NULL;
        }
        if (r->region == region) {
            return r;
        }
        i = (i + 1) & s->mask;
    }
}

static int
index_resize(ctm_store *s, size_t capacity)
{
    ctm_region_slot *slots = ctm_calloc(capacity, sizeof(ctm_region_slot));
    if (slots == NULL) {
        return -1;
    }
    ctm_region_slot *old = s->slots;
    size_t oldcap = old ? s->mask + 1 : 0;
    s->slots = slots;
    s->mask = capacity - 1;
    s->shift = 64;
    for (size_t c = capacity; c > 1; c >>= 1) {
        s->shift--;
    }
    for (size_t i = 0; i < oldcap; i++) {
        if (old[i].bucket != NULL) {
            size_t j = index_home(s, old[i].region);
            while (slots[j].bucket != NULL) {
                j = (j + 1) & s->mask;
            }
            slots[j] = old[i];
        }
    }
    ctm_free(old);
    return 0;
}

/* A slot for a region known to be absent (its bucket still NULL), or
 * NULL when the index could not grow. */
static ctm_region_slot *
index_insert(ctm_store *s, uintptr_t region)
{
    size_t cap = s->slots ? s->mask + 1 : 0;
    if ((s->nregions + 1) * 2 > cap) {
        if (index_resize(s, cap ? cap * 2 : INDEX_MIN) < 0) {
            return NULL;
        }
    }
    size_t i = index_home(s, region);
    while (s->slots[i].bucket != NULL) {
        i = (i + 1) & s->mask;
    }
    s->slots[i].region = region;
    return &s->slots[i];
}

static void
index_delete(ctm_store *s, ctm_region_slot *r)
{
    size_t hole = (size_t)(r - s->slots);
    size_t j = hole;
    s->slots[hole].bucket = NULL;
    s->nregions--;
    for (;;) {
        j = (j + 1) & s->mask;
        ctm_region_slot *next = &s->slots[j];
        if (next->bucket == NULL) {
            return;
        }
        size_t home = index_home(s, next->region);
        int stays = (hole <= j) ? (hole < home && home <= j)
                                : (hole < home || home <= j);
        if (!stays) {
            s->slots[hole] = *next;
            next->bucket = NULL;
            hole = j;
        }
    }
}

/* ---- a store: (ptr) -> value ---- */

static ctm_value *
store_get(const ctm_store *s, uintptr_t ptr)
{
    ctm_region_slot *r = index_find(s, ptr >> CTM_REGION_BITS);
    if (r == NULL) {
        return NULL;
    }
    int64_t i = bucket_find(r->bucket, (uint32_t)(ptr & OFFSET_MASK));
    return i < 0 ? NULL : &bucket_values(r->bucket)[i];
}

/* Capacity of a new region's bucket, from the size of its first block:
 * pymalloc carves a pool into blocks of one size (up to 512 bytes), and
 * a pool fills up before the next is used, so the bucket starts at a
 * quarter of the pool's blocks (at most 64 slots) rather than grow from
 * two slots through every doubling. */
static uint32_t
first_capacity(uint64_t size)
{
    if (size == 0 || size > 512) {
        return BUCKET_MIN;
    }
    uint64_t blocks = ((uint64_t)1 << CTM_REGION_BITS) / ((size + 15) & ~15u);
    uint32_t cap = BUCKET_MIN;
    while (cap < 64 && cap * 4 <= blocks) {
        cap *= 2;
    }
    return cap;
}

/* The value slot of ptr, inserted with a zero value (*fresh set) when
 * absent; NULL when memory ran out (nothing changed then). size sizes a
 * new bucket. */
static ctm_value *
store_upsert(ctm_store *s, uintptr_t ptr, uint64_t size, int *fresh)
{
    uintptr_t region = ptr >> CTM_REGION_BITS;
    ctm_region_slot *r = index_find(s, region);
    if (r == NULL) {
        uint32_t cap = first_capacity(size);
        ctm_bucket *b = bucket_new(cap);
        if (b == NULL) {
            return NULL;
        }
        r = index_insert(s, region);
        if (r == NULL) {
            ctm_free(b);
            return NULL;
        }
        r->bucket = b;
        s->nregions++;
        s->bucket_bytes += bucket_bytes(cap);
    }
    ctm_bucket *b = r->bucket;
    uint32_t cap = b->mask + 1;
    if (b->count + 1 > cap - cap / 8) {
        b = bucket_resize(s, b, cap * 2);
        if (b == NULL) {
            return NULL;
        }
        r->bucket = b;
    }
    uint32_t i = bucket_upsert(b, (uint32_t)(ptr & OFFSET_MASK), fresh);
    return &bucket_values(b)[i];
}

/* Remove ptr; return whether it was there, with its value in *v. */
static int
store_remove(ctm_store *s, uintptr_t ptr, ctm_value *v)
{
    ctm_region_slot *r = index_find(s, ptr >> CTM_REGION_BITS);
    if (r == NULL) {
        return 0;
    }
    ctm_bucket *b = r->bucket;
    int64_t i = bucket_find(b, (uint32_t)(ptr & OFFSET_MASK));
    if (i < 0) {
        return 0;
    }
    *v = bucket_values(b)[i];
    bucket_delete(b, (uint32_t)i);
    uint32_t cap = b->mask + 1;
    if (b->count == 0) {
        s->bucket_bytes -= bucket_bytes(cap);
        ctm_free(b);
        index_delete(s, r);
    }
    else if (cap >= 64 && b->count * 32 < cap) {
        /* A quarter of the size: a bucket going up and down around a
         * threshold must not be rehashed each time. Shrinking is an
         * optimisation: on failure keep the bucket. */
        ctm_bucket *nb = bucket_resize(s, b, cap / 4);
        if (nb != NULL) {
            r->bucket = nb;
        }
    }
    return 1;
}

static void
store_release(ctm_store *s)
{
    for (size_t i = 0; s->slots != NULL && i <= s->mask; i++) {
        ctm_free(s->slots[i].bucket);
    }
    ctm_free(s->slots);
    memset(s, 0, sizeof(*s));
}

/* Drop every trace of s but keep its index, for the traces to come (the
 * recent stores, emptied at each new peak). */
static void
store_empty(ctm_store *s)
{
    for (size_t i = 0; s->nregions > 0 && i <= s->mask; i++) {
        if (s->slots[i].bucket != NULL) {
            ctm_free(s->slots[i].bucket);
            s->slots[i].bucket = NULL;
            s->nregions--;
        }
    }
    s->bucket_bytes = 0;
}

static size_t
store_memory(const ctm_store *s)
{
    size_t index = s->slots ? (s->mask + 1) * sizeof(ctm_region_slot) : 0;
    return index + s->bucket_bytes;
}

/* ---- domains and big sizes ---- */

/* The store of domain's traces (recent: those stored since the peak, see
 * the peak record), or NULL when it does not exist and create is 0 or
 * memory ran out. */
static ctm_store *
domain_store(ctm_traces *tr, uint32_t domain, int recent, int create)
{
    if (domain == CTM_DEFAULT_DOMAIN) {
        return recent ? &tr->recent : &tr->main;
    }
    for (size_t i = 0; i < tr->nothers; i++) {
        if (tr->others[i].domain == domain) {
            return recent ? &tr->others[i].recent : &tr->others[i].store;
        }
    }
    if (!create) {
        return NULL;
    }
    ctm_domain_store *o = ctm_realloc(tr->others,
                                      (tr->nothers + 1) * sizeof(*o));
    if (o == NULL) {
        return NULL;
    }
    tr->others = o;
    memset(&o[tr->nothers], 0, sizeof(*o));
    o[tr->nothers].domain = domain;
    ctm_domain_store *d = &o[tr->nothers++];
    return recent ? &d->recent : &d->store;
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
ctm_traces_value_size_unlocked(const ctm_traces *tr, uint32_t domain,
                               uintptr_t ptr, const ctm_value *v)
{
    if (v->size != CTM_BIG_SIZE) {
        return v->size;
    }
    const ctm_big *b = big_find(tr, domain, ptr);
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

/* Make room for one more big size. */
static int
big_reserve(ctm_traces *tr)
{
    return ctm_grow((void **)&tr->bigs, &tr->capbigs, tr->nbigs + 1,
                    sizeof(ctm_big));
}

/* Set the size of (domain, ptr), whose value is v: inline, or in the big
 * list (room reserved by the caller). */
static void
set_size(ctm_traces *tr, uint32_t domain, uintptr_t ptr, ctm_value *v,
         uint64_t size)
{
    ctm_big *b = v->size == CTM_BIG_SIZE ? big_find(tr, domain, ptr) : NULL;
    if (size < CTM_BIG_SIZE) {
        if (b != NULL) {
            *b = tr->bigs[--tr->nbigs];
        }
        v->size = (uint32_t)size;
        return;
    }
    if (b == NULL) {
        b = &tr->bigs[tr->nbigs++];
        b->domain = domain;
        b->ptr = ptr;
    }
    b->size = size;
    v->size = CTM_BIG_SIZE;
}


/* ---- the nursery ---- */

/* The key of (domain, ptr) in the nursery: ptr for domain 0, ptr | 1 for
 * the native domain; 0 when it never goes there (other domains, address
 * 0, odd addresses). */
static inline uintptr_t
young_key(uint32_t domain, uintptr_t ptr)
{
    if (ptr == 0 || (ptr & 1) != 0) {
        return 0;
    }
    if (domain == CTM_DEFAULT_DOMAIN) {
        return ptr;
    }
    return domain == CTM_NATIVE_DOMAIN ? ptr | 1 : 0;
}

static inline ctm_young *
nursery_slot(const ctm_traces *tr, uintptr_t ptr)
{
    return &tr->nursery[(ptr >> 4) & (NURSERY_SIZE - 1)];
}

/* The young trace of (domain, ptr), or NULL. */
static inline ctm_young *
nursery_find(const ctm_traces *tr, uint32_t domain, uintptr_t ptr)
{
    uintptr_t key = young_key(domain, ptr);
    if (tr->nursery == NULL || key == 0) {
        return NULL;
    }
    ctm_young *y = nursery_slot(tr, ptr);
    return y->ptr == key ? y : NULL;
}

int
ctm_traces_live_reserve(ctm_traces *tr, uint32_t tb)
{
    if (tb < tr->live_cap) {
        return 0;
    }
    size_t cap = tr->live_cap ? tr->live_cap : 1024;
    while (cap <= tb) {
        cap *= 2;
    }
    uint64_t *live = ctm_realloc(tr->live, cap * sizeof(uint64_t));
    if (live == NULL) {
        return -1;
    }
    memset(live + tr->live_cap, 0, (cap - tr->live_cap) * sizeof(uint64_t));
    tr->live = live;
    tr->live_cap = cap;
    return 0;
}

/* ---- the counters and the peak record ----
 *
 * The peak record (start(peak=True)) keeps the traces that were live when
 * traced memory last reached its peak, as a difference from the live
 * traces, so that a new peak costs a counter and not a copy:
 *  - a trace added since the peak is marked as such: a young trace by the
 *    number of peaks (gen) when it was added, in young_gen; a trace in a
 *    store by being in its domain's recent store, not its main one;
 *  - a trace of the peak that goes (freed, replaced or retraced) is
 *    copied to the gone list;
 *  - at a new peak (or reset_peak()), gen moves on, the recent stores
 *    are merged into the main ones and the gone list is emptied: every
 *    live trace is the peak's.
 * The peak's traces are then the young ones of an older gen, those of the
 * main stores and the gone ones (placing.c places them). young_gen keeps
 * gen's low 16 bits: every 2^15 peaks, every young trace is stamped with
 * the peak before, so that no stamp comes round to the current gen. The
 * gone list holds at most the peak's traces and the recent stores hold
 * live ones, so the record costs at most a snapshot's worth of memory;
 * the tracebacks it names stay interned (placing.c counts them for the
 * compaction). A new peak is settled at the end of the operation that
 * made it, when no caller holds a value of the stores.
 *
 * A free that was not seen (see ctm_traces_add_block_unlocked) leaves a
 * trace in a main store that a young trace of its address replaces only
 * if it moves to the same store: one added since the peak goes to the
 * recent store, and both are counted until the next peak. */

static void
count_added(ctm_traces *tr, uint64_t size, uint32_t tb)
{
    CTM_ASSERT(tb < tr->live_cap);
    tr->ntraces++;
    tr->live[tb]++;
    tr->traced += ctm_sample_size(size, tr->sample_interval);
    if (tr->traced > tr->peak) {
        tr->peak = tr->traced;
        tr->peak_due = tr->peak_on;
    }
    if (tr->timeline != NULL) {
        ctm_timeline_tick(tr->timeline, tr->traced);
    }
}

/* A trace goes: the counters, and the gone list when it was the peak's
 * (at_peak). traced counts each trace at its estimated size when
 * sampling (sampling.h); the gone list keeps the true one, as the stores
 * do. */
static void
count_removed(ctm_traces *tr, uint32_t domain, uint64_t size, uint32_t tb,
              int at_peak)
{
    CTM_ASSERT(tr->ntraces > 0);
    CTM_ASSERT(tb < tr->live_cap && tr->live[tb] > 0);
    uint64_t charge = ctm_sample_size(size, tr->sample_interval);
    CTM_ASSERT(tr->traced >= charge);
    if (at_peak && tr->peak_on) {
        if (ctm_grow((void **)&tr->gone, &tr->capgone, tr->ngone + 1,
                     sizeof(ctm_gone)) < 0) {
            tr->peak_lost = 1;
        }
        else {
            ctm_gone *g = &tr->gone[tr->ngone++];
            g->size = size;
            g->domain = domain;
            g->traceback = tb;
        }
    }
    tr->ntraces--;
    tr->live[tb]--;
    tr->traced -= charge;
    if (tr->timeline != NULL) {
        ctm_timeline_tick(tr->timeline, tr->traced);
    }
}

/* Room in s for extra more traces in region without growing anything,
 * so that they go in without a failure. 0, or -1 if memory ran out. */
static int
store_reserve(ctm_store *s, uintptr_t region, uint32_t extra)
{
    ctm_region_slot *r = index_find(s, region);
    uint32_t count = r ? r->bucket->count : 0;
    uint32_t cap = r ? r->bucket->mask + 1 : BUCKET_MIN;
    while (count + extra > cap - cap / 8) {
        cap *= 2;
    }
    if (r == NULL) {
        ctm_bucket *b = bucket_new(cap);
        if (b == NULL || (r = index_insert(s, region)) == NULL) {
            ctm_free(b);
            return -1;
        }
        r->bucket = b;
        s->nregions++;
        s->bucket_bytes += bucket_bytes(cap);
    }
    else if (cap != r->bucket->mask + 1) {
        ctm_bucket *b = bucket_resize(s, r->bucket, cap);
        if (b == NULL) {
            return -1;
        }
        r->bucket = b;
    }
    return 0;
}

/* The traces of recent (domain's) move into its main store. 0, or -1 if
 * memory ran out (then none moved). */
static int
merge_recent(ctm_traces *tr, uint32_t domain, ctm_store *main,
             ctm_store *recent)
{
    if (recent->nregions == 0) {
        return 0;               /* (most new peaks: nothing stored since) */
    }
    for (size_t i = 0; i < store_slots(recent); i++) {
        const ctm_region_slot *r = &recent->slots[i];
        if (r->bucket != NULL
            && store_reserve(main, r->region, r->bucket->count) < 0) {
            return -1;
        }
    }
    for (size_t i = 0; i < store_slots(recent); i++) {
        const ctm_bucket *b = recent->slots[i].bucket;
        if (b == NULL) {
            continue;
        }
        uintptr_t base = recent->slots[i].region << CTM_REGION_BITS;
        const ctm_value *vals = bucket_values(b);
        for (uint32_t j = 0; j <= b->mask; j++) {
            if (b->keys[j] == NO_KEY) {
                continue;
            }
            int fresh;
            ctm_value *v = store_upsert(main, base | b->keys[j], 0, &fresh);
            CTM_ASSERT(v != NULL);
            if (!fresh) {
                /* a trace whose free was not seen: replaced, and the
                 * peak's (it was counted in it) */
                count_removed(tr, domain,
                              ctm_traces_value_size_unlocked(
                                  tr, domain, base | b->keys[j], v),
                              v->traceback, 1);
            }
            *v = vals[j];
        }
    }
    store_empty(recent);
    return 0;
}

/* Every live trace is the peak's now. */
static void
peak_settle(ctm_traces *tr)
{
    tr->peak_due = 0;
    tr->ngone = 0;
    tr->gen++;
    if ((tr->gen & 0x7FFF) == 0 && tr->young_gen != NULL) {
        for (uint32_t i = 0; i < NURSERY_SIZE; i++) {
            tr->young_gen[i] = (uint16_t)(tr->gen - 1);
        }
    }
#ifdef CTM_SELF_CHECK
    /* every young trace is the peak's now: none has the current stamp */
    for (uint32_t i = 0; tr->young_gen != NULL && i < NURSERY_SIZE; i++) {
        CTM_ASSERT(tr->nursery[i].ptr == 0
                   || tr->young_gen[i] != (uint16_t)tr->gen);
    }
#endif
    if (merge_recent(tr, CTM_DEFAULT_DOMAIN, &tr->main, &tr->recent) < 0) {
        tr->peak_lost = 1;
    }
    for (size_t i = 0; i < tr->nothers; i++) {
        ctm_domain_store *d = &tr->others[i];
        if (merge_recent(tr, d->domain, &d->store, &d->recent) < 0) {
            tr->peak_lost = 1;
        }
    }
}

/* The end of an operation that added a trace. */
static inline void
settle(ctm_traces *tr)
{
    if (tr->peak_due) {
        peak_settle(tr);
    }
}

int
ctm_traces_peak_start_unlocked(ctm_traces *tr)
{
    if (tr->nursery != NULL && tr->young_gen == NULL) {
        tr->young_gen = ctm_malloc(NURSERY_SIZE * sizeof(uint16_t));
        if (tr->young_gen == NULL) {
            return -1;
        }
        /* the young traces are the peak's once gen moves on */
        for (uint32_t i = 0; i < NURSERY_SIZE; i++) {
            tr->young_gen[i] = (uint16_t)tr->gen;
        }
    }
    tr->peak_on = 1;
    ctm_traces_reset_peak_unlocked(tr);
    return 0;
}

void
ctm_traces_reset_peak_unlocked(ctm_traces *tr)
{
    tr->peak = tr->traced;
    if (tr->peak_on) {
        tr->peak_lost = 0;
        peak_settle(tr);
    }
}

/* ---- adding and removing ---- */

/* The young trace y grows up into its domain's store, and its slot is
 * emptied. 0, or -1 if memory ran out (nothing changed then). */
static int
nursery_evict(ctm_traces *tr, ctm_young *y)
{
    uint32_t domain = young_domain(y->ptr);
    uintptr_t ptr = young_ptr(y->ptr);
    int recent = tr->peak_on && !young_at_peak(tr, y);
    ctm_store *s = domain_store(tr, domain, recent, 1);
    if (s == NULL) {
        return -1;
    }
    int fresh;
    ctm_value *v = store_upsert(s, ptr, y->value.size, &fresh);
    if (v == NULL) {
        return -1;
    }
    if (!fresh) {
        /* In the store too: only when the block's free was not seen
         * (see ctm_traces_add_block_unlocked). */
        count_removed(tr, domain,
                      ctm_traces_value_size_unlocked(tr, domain, ptr, v),
                      v->traceback, !recent);
        if (v->size == CTM_BIG_SIZE) {
            big_remove(tr, domain, ptr);
        }
    }
    *v = y->value;
    y->ptr = 0;
    return 0;
}

/* Put the trace of key (young_key, not 0) in the nursery, pushing the
 * slot's trace into its store; the caller reserved the traceback's live
 * count. 0, or -1 if memory ran out (nothing changed then). */
static int
nursery_put(ctm_traces *tr, uintptr_t key, uint64_t size, uint32_t traceback)
{
    if (tr->nursery == NULL) {
        tr->nursery = ctm_calloc(NURSERY_SIZE, sizeof(ctm_young));
        if (tr->nursery == NULL) {
            return -1;
        }
    }
    if (tr->peak_on && tr->young_gen == NULL) {
        tr->young_gen = ctm_calloc(NURSERY_SIZE, sizeof(uint16_t));
        if (tr->young_gen == NULL) {
            return -1;
        }
    }
    ctm_young *y = nursery_slot(tr, key);
    if (y->ptr == key) {
        /* Traced already (its free was not seen): the new trace
         * replaces the old one. */
        count_removed(tr, young_domain(key), y->value.size,
                      y->value.traceback,
                      tr->peak_on && young_at_peak(tr, y));
    }
    else if (y->ptr != 0 && nursery_evict(tr, y) < 0) {
        return -1;
    }
    y->ptr = key;
    y->value.size = (uint32_t)size;
    y->value.traceback = traceback;
    if (tr->young_gen != NULL) {
        tr->young_gen[y - tr->nursery] = (uint16_t)tr->gen;
    }
    count_added(tr, size, traceback);
    return 0;
}

/* Add the trace of (domain, ptr) to a store: its recent one while the
 * peak record is kept, unless this trace makes a new peak. The caller
 * made sure no young trace has ptr. 0, or -1 if memory ran out (nothing
 * changed then). */
static int
store_add(ctm_traces *tr, uint32_t domain, uintptr_t ptr, uint64_t size,
          uint32_t traceback)
{
    int recent = tr->peak_on
                 && tr->traced + ctm_sample_size(size, tr->sample_interval)
                    <= tr->peak;
    ctm_store *s = domain_store(tr, domain, recent, 1);
    if (s == NULL || (size >= CTM_BIG_SIZE && big_reserve(tr) < 0)) {
        return -1;
    }
    int fresh;
    ctm_value *v = store_upsert(s, ptr, size, &fresh);
    if (v == NULL) {
        return -1;
    }
    if (!fresh) {
        /* A block traced twice (track() again, or realloc in place):
         * the new trace replaces the old one. */
        count_removed(tr, domain,
                      ctm_traces_value_size_unlocked(tr, domain, ptr, v),
                      v->traceback, !recent);
    }
    if (size < CTM_BIG_SIZE && v->size != CTM_BIG_SIZE) {
        v->size = (uint32_t)size;
    }
    else {
        set_size(tr, domain, ptr, v, size);
    }
    v->traceback = traceback;
    count_added(tr, size, traceback);
    return 0;
}

/* Remove the trace of (domain, ptr): 1 if there was one (its size and
 * traceback given back when not NULL), else 0. */
static int
remove_trace(ctm_traces *tr, uint32_t domain, uintptr_t ptr, uint64_t *size,
             uint32_t *traceback)
{
    ctm_value v;
    int at_peak = 1;
    ctm_young *y = nursery_find(tr, domain, ptr);
    if (y != NULL) {
        v = y->value;
        at_peak = tr->peak_on && young_at_peak(tr, y);
        y->ptr = 0;
    }
    else {
        ctm_store *s = tr->peak_on ? domain_store(tr, domain, 1, 0) : NULL;
        if (s != NULL && s->nregions != 0 && store_remove(s, ptr, &v)) {
            at_peak = 0;
        }
        else {
            s = domain_store(tr, domain, 0, 0);
            if (s == NULL || !store_remove(s, ptr, &v)) {
                return 0;
            }
        }
    }
    uint64_t sz = ctm_traces_value_size_unlocked(tr, domain, ptr, &v);
    if (v.size == CTM_BIG_SIZE) {
        big_remove(tr, domain, ptr);
    }
    if (size != NULL) {
        *size = sz;
    }
    if (traceback != NULL) {
        *traceback = v.traceback;
    }
    count_removed(tr, domain, sz, v.traceback, at_peak);
    return 1;
}

int
ctm_traces_add_block_unlocked(ctm_traces *tr, uint32_t domain, uintptr_t ptr,
                              uint64_t size, uint32_t traceback)
{
    uintptr_t key = young_key(domain, ptr);
    if (size >= CTM_BIG_SIZE || key == 0) {
        return ctm_traces_add_unlocked(tr, domain, ptr, size, traceback);
    }
    if (ctm_traces_live_reserve(tr, traceback) < 0) {
        return -1;
    }
    int rc = nursery_put(tr, key, size, traceback);
    settle(tr);
    return rc;
}

/* Add or replace the trace of (domain, ptr), without the peak record. */
static int
add_or_replace(ctm_traces *tr, uint32_t domain, uintptr_t ptr, uint64_t size,
               uint32_t traceback)
{
    ctm_young *y = nursery_find(tr, domain, ptr);
    if (y != NULL) {
        /* Replace the young trace: in place, or by one in the store when
         * the size needs the big list. */
        count_removed(tr, domain, y->value.size, y->value.traceback, 0);
        if (size < CTM_BIG_SIZE) {
            y->value.size = (uint32_t)size;
            y->value.traceback = traceback;
            count_added(tr, size, traceback);
            return 0;
        }
        ctm_young old = *y;
        y->ptr = 0;
        if (store_add(tr, domain, ptr, size, traceback) < 0) {
            *y = old;
            count_added(tr, old.value.size, old.value.traceback);
            return -1;
        }
        return 0;
    }
    uintptr_t key = domain == CTM_NATIVE_DOMAIN ? young_key(domain, ptr) : 0;
    if (key != 0 && size < CTM_BIG_SIZE) {
        /* A native block: young, unless its trace is in the store (a
         * block traced again), where it is replaced. */
        ctm_store *ns = domain_store(tr, domain, 0, 0);
        if (ns == NULL || store_get(ns, ptr) == NULL) {
            return nursery_put(tr, key, size, traceback);
        }
    }
    return store_add(tr, domain, ptr, size, traceback);
}

/* Add the trace of (domain, ptr), which has none: young when it can be. */
static int
add_new(ctm_traces *tr, uint32_t domain, uintptr_t ptr, uint64_t size,
        uint32_t traceback)
{
    uintptr_t key = young_key(domain, ptr);
    if (key != 0 && size < CTM_BIG_SIZE) {
        return nursery_put(tr, key, size, traceback);
    }
    return store_add(tr, domain, ptr, size, traceback);
}

int
ctm_traces_add_unlocked(ctm_traces *tr, uint32_t domain, uintptr_t ptr,
                        uint64_t size, uint32_t traceback)
{
    if (ctm_traces_live_reserve(tr, traceback) < 0) {
        return -1;
    }
    int rc;
    if (tr->peak_on) {
        /* The old trace may be the peak's: it goes as a free takes it
         * (and stays gone if the new one cannot be added). */
        (void)remove_trace(tr, domain, ptr, NULL, NULL);
        rc = add_new(tr, domain, ptr, size, traceback);
    }
    else {
        rc = add_or_replace(tr, domain, ptr, size, traceback);
    }
    settle(tr);
    return rc;
}

int
ctm_traces_remove_unlocked(ctm_traces *tr, uint32_t domain, uintptr_t ptr,
                           uint64_t *size, uint32_t *traceback)
{
    return remove_trace(tr, domain, ptr, size, traceback);
}

ctm_value *
ctm_traces_get_unlocked(ctm_traces *tr, uint32_t domain, uintptr_t ptr)
{
    ctm_young *y = nursery_find(tr, domain, ptr);
    if (y != NULL) {
        return &y->value;
    }
    ctm_value *v = NULL;
    ctm_store *s = tr->peak_on ? domain_store(tr, domain, 1, 0) : NULL;
    if (s != NULL) {
        v = store_get(s, ptr);
    }
    if (v == NULL && (s = domain_store(tr, domain, 0, 0)) != NULL) {
        v = store_get(s, ptr);
    }
    return v;
}

/* Whether the trace whose value is v (of domain, ptr) is the peak's. */
static int
value_at_peak(ctm_traces *tr, uint32_t domain, uintptr_t ptr,
              const ctm_value *v)
{
    ctm_young *y = nursery_find(tr, domain, ptr);
    if (y != NULL && &y->value == v) {
        return young_at_peak(tr, y);
    }
    ctm_store *s = domain_store(tr, domain, 1, 0);
    return s == NULL || store_get(s, ptr) != v;
}

int
ctm_traces_retrace_unlocked(ctm_traces *tr, uint32_t domain, uintptr_t ptr,
                            ctm_value *v, uint32_t traceback)
{
    if (ctm_traces_live_reserve(tr, traceback) < 0) {
        return -1;
    }
    if (tr->peak_on && value_at_peak(tr, domain, ptr, v)) {
        /* The peak's trace keeps its traceback: it goes, and the block
         * comes back with the new one. */
        uint64_t size;
        (void)remove_trace(tr, domain, ptr, &size, NULL);
        int rc = add_new(tr, domain, ptr, size, traceback);
        settle(tr);
        return rc;
    }
    tr->live[v->traceback]--;
    tr->live[traceback]++;
    v->traceback = traceback;
    return 0;
}

void
ctm_traces_clear_unlocked(ctm_traces *tr)
{
    ctm_free(tr->nursery);
    ctm_free(tr->young_gen);
    store_release(&tr->main);
    store_release(&tr->recent);
    for (size_t i = 0; i < tr->nothers; i++) {
        store_release(&tr->others[i].store);
        store_release(&tr->others[i].recent);
    }
    ctm_free(tr->others);
    ctm_free(tr->bigs);
    ctm_free(tr->live);
    ctm_free(tr->gone);
    int peak_on = tr->peak_on;
    ctm_timeline *timeline = tr->timeline;
    uint64_t interval = tr->sample_interval;
    memset(tr, 0, sizeof(*tr));
    tr->peak_on = peak_on;
    tr->timeline = timeline;
    tr->sample_interval = interval;
}

size_t
ctm_traces_memory_unlocked(const ctm_traces *tr)
{
    size_t n = store_memory(&tr->main) + store_memory(&tr->recent);
    if (tr->nursery != NULL) {
        n += NURSERY_SIZE * sizeof(ctm_young);
    }
    if (tr->young_gen != NULL) {
        n += NURSERY_SIZE * sizeof(uint16_t);
    }
    for (size_t i = 0; i < tr->nothers; i++) {
        n += sizeof(ctm_domain_store) + store_memory(&tr->others[i].store)
            + store_memory(&tr->others[i].recent);
    }
    return n + tr->capbigs * sizeof(ctm_big)
        + tr->live_cap * sizeof(uint64_t) + tr->capgone * sizeof(ctm_gone);
}
