/* The index of util.h: uint32 items in open-addressing slots.
 *
 * Invariants: the capacity (mask + 1) is 0 or a power of two of at least
 * 64 and at most 2^31; the owner's item count stays at most half the
 * capacity (ctm_index_reserve before each insertion), so every probe
 * meets an empty slot.
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
ctm_index_free(ctm_index *ix)
{
    ctm_free(ix->slots);
    ix->slots = NULL;
    ix->mask = 0;
}
