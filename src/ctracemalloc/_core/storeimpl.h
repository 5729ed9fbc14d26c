/* What store.c and placing.c share of the live traces' tables: the
 * layout of a bucket and of a young trace's key (store.c explains
 * both). Not for other files: they use store.h. */
#ifndef CTM_STOREIMPL_H
#define CTM_STOREIMPL_H

#include "store.h"
#include "timeline.h"

#define NURSERY_BITS 11
#define NURSERY_SIZE (1u << NURSERY_BITS)     /* 2048 slots, 32 KiB */
#define NO_KEY 0xFFFFu
#define OFFSET_MASK (((uintptr_t)1 << CTM_REGION_BITS) - 1)

struct ctm_bucket {
    uint32_t mask;              /* capacity - 1 */
    uint32_t count;
    uint16_t keys[];            /* capacity keys, then capacity values */
};

/* Capacities are at least 2, so the values that follow the keys are
 * 4-byte aligned after the 8-byte header. */
static inline ctm_value *
bucket_values(const ctm_bucket *b)
{
    return (ctm_value *)(void *)((char *)b + sizeof(ctm_bucket)
                                 + (b->mask + 1) * sizeof(uint16_t));
}

static inline size_t
store_slots(const ctm_store *s)
{
    return s->slots != NULL ? s->mask + 1 : 0;
}

/* The domain and the pointer of a young trace's key. */
static inline uint32_t
young_domain(uintptr_t key)
{
    return (key & 1) ? CTM_NATIVE_DOMAIN : CTM_DEFAULT_DOMAIN;
}

static inline uintptr_t
young_ptr(uintptr_t key)
{
    return key & ~(uintptr_t)1;
}

/* Whether young trace y was live at the peak (the peak record: see
 * store.c). */
static inline int
young_at_peak(const ctm_traces *tr, const ctm_young *y)
{
    return tr->young_gen[y - tr->nursery] != (uint16_t)tr->gen;
}

/* Make room in tr->live for traceback id tb. 0, or -1 if memory ran
 * out. */
int ctm_traces_live_reserve(ctm_traces *tr, uint32_t tb);

#endif /* CTM_STOREIMPL_H */
