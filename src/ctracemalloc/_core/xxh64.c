/* XXH64, streaming: Yann Collet's xxHash64 (its public specification),
 * seed 0, so that any xxhash implementation can verify our snapshot
 * files (ffspec.h: each section's check is the XXH64 of the file up to
 * it).
 *
 * Invariant: ctm_xxh64_digest of a state fed the bytes b (in any number
 * of ctm_xxh64_update calls) is XXH64(b, seed 0), and leaves the state
 * unchanged, so that the stream can go on. Nothing here touches Python.
 */
#include "formats.h"
#include "codec.h"

#define XXH_P1 0x9E3779B185EBCA87ULL
#define XXH_P2 0xC2B2AE3D27D4EB4FULL
#define XXH_P3 0x165667B19E3779F9ULL
#define XXH_P4 0x85EBCA77C2B2AE63ULL
#define XXH_P5 0x27D4EB2F165667C5ULL

static inline uint64_t
rotl64(uint64_t x, int r)
{
    return (x << r) | (x >> (64 - r));
}

static inline uint64_t
xxh_round(uint64_t acc, uint64_t input)
{
    acc += input * XXH_P2;
    acc = rotl64(acc, 31);
    return acc * XXH_P1;
}

static inline uint64_t
xxh_merge(uint64_t acc, uint64_t val)
{
    acc ^= xxh_round(0, val);
    return acc * XXH_P1 + XXH_P4;
}

void
ctm_xxh64_init(ctm_xxh64_state *s)
{
    memset(s, 0, sizeof(*s));
    s->v[0] = XXH_P1 + XXH_P2;
    s->v[1] = XXH_P2;
    s->v[2] = 0;
    s->v[3] = 0 - XXH_P1;
}

void
ctm_xxh64_update(ctm_xxh64_state *s, const uint8_t *p, size_t n)
{
    s->total += n;
    if (s->memsize + n < 32) {
        if (n) {
            memcpy(s->mem + s->memsize, p, n);
        }
        s->memsize += n;
        return;
    }
    uint64_t v0 = s->v[0], v1 = s->v[1], v2 = s->v[2], v3 = s->v[3];
    if (s->memsize) {
        size_t fill = 32 - s->memsize;
        memcpy(s->mem + s->memsize, p, fill);
        v0 = xxh_round(v0, load64le(s->mem));
        v1 = xxh_round(v1, load64le(s->mem + 8));
        v2 = xxh_round(v2, load64le(s->mem + 16));
        v3 = xxh_round(v3, load64le(s->mem + 24));
        p += fill;
        n -= fill;
        s->memsize = 0;
    }
    while (n >= 32) {
        v0 = xxh_round(v0, load64le(p));
        v1 = xxh_round(v1, load64le(p + 8));
        v2 = xxh_round(v2, load64le(p + 16));
        v3 = xxh_round(v3, load64le(p + 24));
        p += 32;
        n -= 32;
    }
    s->v[0] = v0;
    s->v[1] = v1;
    s->v[2] = v2;
    s->v[3] = v3;
    if (n) {
        memcpy(s->mem, p, n);
    }
    s->memsize = n;
}

/* The hash of everything so far; the state is unchanged, so the stream
 * can go on (each section's check is a digest of the prefix). */
uint64_t
ctm_xxh64_digest(const ctm_xxh64_state *s)
{
    uint64_t h;
    if (s->total >= 32) {
        h = rotl64(s->v[0], 1) + rotl64(s->v[1], 7) + rotl64(s->v[2], 12)
            + rotl64(s->v[3], 18);
        h = xxh_merge(h, s->v[0]);
        h = xxh_merge(h, s->v[1]);
        h = xxh_merge(h, s->v[2]);
        h = xxh_merge(h, s->v[3]);
    }
    else {
        h = XXH_P5;
    }
    h += s->total;
    const uint8_t *p = s->mem;
    size_t n = s->memsize;
    while (n >= 8) {
        h ^= xxh_round(0, load64le(p));
        h = rotl64(h, 27) * XXH_P1 + XXH_P4;
        p += 8;
        n -= 8;
    }
    if (n >= 4) {
        h ^= (uint64_t)load32le(p) * XXH_P1;
        h = rotl64(h, 23) * XXH_P2 + XXH_P3;
        p += 4;
        n -= 4;
    }
    while (n > 0) {
        h ^= (*p) * XXH_P5;
        h = rotl64(h, 11) * XXH_P1;
        p++;
        n--;
    }
    h ^= h >> 33;
    h *= XXH_P2;
    h ^= h >> 29;
    h *= XXH_P3;
    h ^= h >> 32;
    return h;
}
