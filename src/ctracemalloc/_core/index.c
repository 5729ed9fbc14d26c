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
ctm_index_reserve(ctm_index *ix, size_t count, ctm_index_hash_fn hash,
                  const void *owner)
{
    size_t cap = ctm_index_capacity(ix);
    if ((count + 1) * 2 <= cap) {
        return 0;
    }
    size_t ncap = cap ? cap * 2 : MIN_CAPACITY;
    while ((count + 1) * 2 > ncap) {
        ncap *= 2;
    }
    if (ncap > MAX_CAPACITY) {
        return -1;
    }
    uint32_t *slots = ctm_calloc(ncap, sizeof(uint32_t));
    if (slots == NULL) {
        return -1;
    }
    uint32_t mask = (uint32_t)(ncap - 1);
    for (size_t i = 0; i < cap; i++) {
        uint32_t v = ix->slots[i];
        if (v) {
            uint32_t j = hash(owner, v - 1) & mask;
            while (slots[j]) {
                j = (j + 1) & mask;
            }
            slots[j] = v;
        }
    }
    ctm_free(ix->slots);
    ix->slots = slots;
    ix->mask = mask;
    return 0;
}

void
ctm_index_free(ctm_index *ix)
{
    ctm_free(ix->slots);
    ix->slots = NULL;
    ix->mask = 0;
}
