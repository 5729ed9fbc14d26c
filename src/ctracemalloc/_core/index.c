/* The index of util.h: uint32 items in open-addressing slots.
 *
 * Invariants: the capacity (mask + 1) is 0 or a power of two of at least
 * 64 and at most 2^31; the owner's item count stays at most half the
 * capacity (ctm_index_reserve before each insertion), so every probe
 * meets an empty slot; every item sits in the probe run that starts at
 * its home slot (hash & mask), with no empty slot between them.
 */
#include "util.h"

#define MIN_CAPACITY 64
#define MAX_CAPACITY ((size_t)1 << 31)

int
ctm_index_grow(ctm_index *ix, size_t count, ctm_index_hash_fn hash,
               const void *owner)
{
    size_t cap = ctm_index_capacity(ix);
    size_t ncap = cap ? cap * 2 : MIN_CAPACITY;
    while ((count + 1) * 2 > ncap) {
        ncap *= 2;
    }
    if (ncap > MAX_CAPACITY) {
        return -1;
    }
    ctm_index grown = {ctm_calloc(ncap, sizeof(uint32_t)),
                       (uint32_t)(ncap - 1)};
    if (grown.slots == NULL) {
        return -1;
    }
    for (size_t i = 0; i < cap; i++) {
        uint32_t v = ix->slots[i];
        if (v) {
            ctm_index_put(&grown, hash(owner, v - 1), v - 1);
        }
    }
    ctm_free(ix->slots);
    *ix = grown;
    return 0;
}

void
ctm_index_remove(ctm_index *ix, uint32_t j, ctm_index_hash_fn hash,
                 const void *owner)
{
    /* Every item must stay reachable from its home slot with no empty
     * slot in between: an item after the hole whose home is not in
     * (hole, its slot] moves into the hole, which moves to its slot. */
    uint32_t mask = ix->mask;
    ix->slots[j] = 0;
    for (uint32_t k = (j + 1) & mask; ix->slots[k] != 0;
         k = (k + 1) & mask) {
        uint32_t home = hash(owner, ix->slots[k] - 1) & mask;
        if (((k - home) & mask) >= ((k - j) & mask)) {
            ix->slots[j] = ix->slots[k];
            ix->slots[k] = 0;
            j = k;
        }
    }
}

void
ctm_index_free(ctm_index *ix)
{
    ctm_free(ix->slots);
    ix->slots = NULL;
    ix->mask = 0;
}
