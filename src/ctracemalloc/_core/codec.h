/* The byte codecs of our snapshot format (ffspec.h), as static inline
 * functions for its reader and writer: little-endian integers, varints
 * and zigzag, and the cursor over a verified section payload.
 *
 * Invariants: a varint is unsigned LEB128 of at most 10 bytes whose
 * value fits in 64 bits (the tenth byte holds bit 63 only); get_varint
 * never reads past its cursor's end (its unchecked fast path runs only
 * when four bytes are left) and leaves the cursor unchanged on failure.
 * No function here sets a Python exception.
 */
#ifndef CTM_CODEC_H
#define CTM_CODEC_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

static inline uint64_t
load64le(const uint8_t *p)
{
    uint64_t v;
    memcpy(&v, p, 8);
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    v = __builtin_bswap64(v);
#endif
    return v;
}

static inline uint32_t
load32le(const uint8_t *p)
{
    uint32_t v;
    memcpy(&v, p, 4);
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    v = __builtin_bswap32(v);
#endif
    return v;
}

static inline void
store64le(uint8_t *p, uint64_t v)
{
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    v = __builtin_bswap64(v);
#endif
    memcpy(p, &v, 8);
}


/* Number of bytes of the varint of v. */
static inline size_t
varint_len(uint64_t v)
{
    int bits = 64 - __builtin_clzll(v | 1);
    return (size_t)(bits + 6) / 7;
}

static inline uint8_t *
put_varint(uint8_t *p, uint64_t v)
{
    while (v >= 0x80) {
        *p++ = (uint8_t)(v | 0x80);
        v >>= 7;
    }
    *p++ = (uint8_t)v;
    return p;
}

static inline uint64_t
zigzag(int64_t n)
{
    return n < 0 ? ~((uint64_t)n << 1) : (uint64_t)n << 1;
}

static inline int64_t
unzigzag(uint64_t u)
{
    return (u & 1) ? -(int64_t)(u >> 1) - 1 : (int64_t)(u >> 1);
}

/* The parser's view of a verified section payload. */
typedef struct {
    const uint8_t *p;
    const uint8_t *end;
} cursor;

static inline size_t
cur_left(const cursor *c)
{
    return (size_t)(c->end - c->p);
}

static inline int
get_varint_slow(cursor *c, uint64_t *out)
{
    const uint8_t *p = c->p;
    uint64_t v = 0;
    for (int shift = 0; shift < 64; shift += 7) {
        if (p == c->end) {
            return -1;
        }
        uint8_t byte = *p++;
        /* The tenth byte holds bit 63 only, and ends the varint. */
        if (shift == 63 && byte > 1) {
            return -1;
        }
        v |= (uint64_t)(byte & 0x7f) << shift;
        if (!(byte & 0x80)) {
            c->p = p;
            *out = v;
            return 0;
        }
    }
    return -1;
}

/* Read a varint: 0, or -1 if malformed or past the end (no exception).
 * Inline, without bounds checks, for varints of up to four bytes (every
 * count, index and line number below 2**28) when that many are left. */
static inline int
get_varint(cursor *c, uint64_t *out)
{
    const uint8_t *p = c->p;
    if (c->end - p >= 4) {
        uint64_t v = p[0];
        if (v < 0x80) {
            c->p = p + 1;
            *out = v;
            return 0;
        }
        v = (v & 0x7f) | ((uint64_t)p[1] << 7);
        if (p[1] < 0x80) {
            c->p = p + 2;
            *out = v;
            return 0;
        }
        v = (v & 0x3fff) | ((uint64_t)p[2] << 14);
        if (p[2] < 0x80) {
            c->p = p + 3;
            *out = v;
            return 0;
        }
        v = (v & 0x1fffff) | ((uint64_t)p[3] << 21);
        if (p[3] < 0x80) {
            c->p = p + 4;
            *out = v;
            return 0;
        }
    }
    return get_varint_slow(c, out);
}

#endif /* CTM_CODEC_H */
