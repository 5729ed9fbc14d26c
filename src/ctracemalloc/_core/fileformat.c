/* Snapshot file format: Snapshot.dump, Snapshot.load and pickling.
 *
 * Goals: dump and load tens of times faster than the stdlib's pickle, a
 * file a fraction of the pickle's size, a loader that streams the file
 * and never allocates more than the bytes it has seen justify, and that
 * rejects any damaged or foreign file with a ValueError saying what is
 * wrong instead of crashing or building an invalid snapshot.
 *
 * Conventions. Little-endian. "varint": unsigned LEB128, 7 bits per
 * byte, least significant group first, the high bit set on every byte
 * but the last; at most 10 bytes and the value must fit in 64 bits.
 * "zigzag": a signed n is stored as the varint 2n if n >= 0, -2n - 1 if
 * n < 0.
 *
 * File = header, then sections, the last of which is END.
 *
 *   header (12 bytes)
 *     magic   8 bytes   89 43 54 4D 0D 0A 1A 0A  ("\x89CTM\r\n\x1a\n":
 *                       the high byte and the line ends catch text-mode
 *                       transfers, as PNG's magic does)
 *     major   u16 LE    2
 *     minor   u16 LE    0
 *
 *   section
 *     tag     u8
 *     length  varint    number of payload bytes
 *     payload
 *     check   u64 LE    XXH64 (seed 0) of every byte of the file before
 *                       this field: the header, the earlier sections with
 *                       their checks, this section's tag, length and
 *                       payload. Chaining over the whole prefix catches
 *                       spliced, reordered and truncated files as well as
 *                       flipped bits, and lets the reader verify a
 *                       section before it parses a byte of it.
 *
 * Sections of version 2.0, in this order (* may repeat):
 *
 *   1 COUNTS      once, first: varints nstrings, nframes, ntracebacks,
 *                 nrefs (the sum of the tracebacks' nframe), ntraces.
 *   2 STRINGS*    varint n, then n strings: varint byte length, then the
 *                 bytes, UTF-8 with surrogatepass so that any str
 *                 (lone surrogates included) round-trips.
 *   3 FRAMES*     varint n, then n frames: varint filename (index of a
 *                 string), zigzag lineno (fits int32).
 *   4 TRACEBACKS* varint n, u8 width (1, 2 or 4), then n tracebacks:
 *                 varint nframe; varint total (0 for a total_nframe of
 *                 None, else total_nframe + 1, at most 2**32 - 1);
 *                 nframe frame indexes (the frame references), most
 *                 recent first, little-endian, width bytes each. The
 *                 writer takes the smallest width that holds nframes - 1.
 *   5 TRACES*     varint n (traces in this section), varint nruns, then
 *                 nruns runs of consecutive traces with the same
 *                 traceback and domain: varint h, where h >> 2 is the
 *                 run length minus 1 (the lengths add up to n); if h & 1,
 *                 zigzag (traceback - previous traceback - 1), else the
 *                 traceback is the previous one + 1; if h & 2, varint
 *                 domain, else the previous domain (each TRACES section
 *                 starts from a previous traceback of -1 and domain 0).
 *                 Then the n sizes: (n + 3) / 4 control bytes, with the
 *                 2-bit length code of size i at bits 2 * (i % 4) of
 *                 byte i / 4 (unused bits 0), then the sizes one after
 *                 the other, little-endian, in 1, 2, 3 or 8 bytes for
 *                 codes 0, 1, 2, 3.
 *   6 LIMIT       once: u8 kind, then 0: None; 1: zigzag int (fits
 *                 int64; an exact int); 2: any other object, the rest of
 *                 the payload is its pickle.
 *   7 EXTRA       at most once: pickle of the Snapshot's instance dict
 *                 (attributes set by the user), written only when that
 *                 dict is not empty.
 *   0 END         empty; the file ends right after its check.
 *
 * Strings, frames, tracebacks and traces are stored in the order of the
 * snapshot's arrays, so that indexes are preserved; section n gives the
 * number of items in that section. The writer cuts the repeatable
 * sections into blocks (about 64 KiB, or 16384 traces), so a reader
 * needs one block in memory at a time; an item never spans two
 * sections. Pickles are written with protocol 4, which every supported
 * Python reads.
 *
 * Version 1.0 differs in one place: a TRACEBACKS section has no width,
 * and its frame references are varints. Fixed-width references take a
 * few percent more room (nframes is usually a few thousand: two bytes
 * where a varint takes one or two), and are read without a branch on
 * their length, which mixes one and two bytes at random and so
 * mispredicts often. They are most of a file of deep tracebacks (700
 * thousand traces with 25 frames: 555 thousand references, half the
 * file), whose load decoding varints took 45% of: it loads in 2.7 ms
 * instead of 4.3. This reader reads both versions.
 *
 * Why this encoding: the stdlib's pickle takes 11 to 15 bytes per
 * trace; here a trace costs its size (1 to 3 bytes for most sizes) and
 * a quarter byte of length code, as take_snapshot emits traces grouped
 * by traceback, so runs are long. Sizes are the bulk of the file and
 * their lengths mix unpredictably: with length codes apart from the
 * data (as in Stream VByte), both sides handle them without a branch on
 * the length, several times faster than LEB128 varints. Every item
 * takes at least one byte in the file and at most a few dozen bytes of
 * memory once loaded (strings: their length plus the str object), so
 * the memory a file can make the loader allocate is linear in its size.
 *
 * The stdlib's format: a file that starts with 0x80 (a pickle's PROTO
 * opcode; the magic above starts with 0x89) is the stdlib's pickle, which
 * stdpickle.c reads.
 *
 * Reading another version: a major version other than 1 and 2 is
 * refused ("unsupported snapshot format version 3.0"). A newer minor
 * version of the same major only adds: the reader skips (after checking them)
 * sections whose tag it does not know, and ignores bytes after the
 * fields it knows at the end of a known section. In a file of the
 * reader's own minor version or an older one, both are errors.
 *
 * What load checks: magic, version, every check, section order and
 * multiplicity; the counts of COUNTS against the bytes actually left
 * before the arrays are allocated from them; every index in range
 * (frame filename < nstrings, frame references < nframes, trace
 * traceback < ntracebacks); no duplicate string, frame or traceback (a
 * hash index of each, sized from the counts and dropped once loaded);
 * lineno in int32, domain in uint32, total_nframe below 2**32 - 1; that
 * the counts of COUNTS are met exactly, that every section is consumed
 * exactly, and that nothing follows END. A missing file raises OSError
 * as open() does; anything else wrong raises ValueError ("not a
 * ctracemalloc snapshot file", "truncated snapshot file: ...",
 * "corrupted snapshot file: ...").
 *
 * Memory: load builds the snapshot's arrays directly at their exact
 * sizes; besides them it holds one section of the file at a time (a
 * 256 KiB buffer, more only for a larger section) and, until it
 * returns, the duplicate indexes (8 to 16 bytes per string, frame and
 * traceback). A pipe, whose size cannot be known in advance, is read
 * whole first. Measured on 2 million traces: the peak memory of a load
 * exceeds the 30.5 MiB traces array by 2 MiB.
 *
 * Trust: LIMIT kind 2 and EXTRA are unpickled, and unpickling runs code
 * named by the file: as with the stdlib's pickle-based Snapshot.load,
 * load only files from a trusted source. A file without them (the usual
 * case: an int or None limit and no user attribute) never reaches
 * pickle.
 *
 * Fuzzing: built with FUZZING_BUILD_MODE_UNSAFE_FOR_PRODUCTION, the
 * reader ignores check mismatches, so that a fuzzer reaches the parser,
 * and does not unpickle (a fuzzer must not run arbitrary pickles).
 */
#include "internal.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#if defined(__SSE2__)
#  include <emmintrin.h>
#endif

/* Build switches, for measuring what they are worth: non-temporal
 * stores of the traces (store_trace) and prefaulting of the arrays
 * (prefault). */
#ifndef CTM_STREAM_STORES
#  define CTM_STREAM_STORES 1
#endif
#ifndef CTM_PREFAULT
#  define CTM_PREFAULT 1
#endif

#define FF_MAJOR 2
#define FF_MAJOR_OLDEST 1       /* the oldest this reader reads */
#define FF_MINOR 0
#define FF_HEADER_SIZE 12
#define FF_CHECK_SIZE 8
#define FF_PICKLE_PROTOCOL 4

static const uint8_t ff_magic[8] = {
    0x89, 'C', 'T', 'M', '\r', '\n', 0x1a, '\n'
};

enum {
    TAG_END = 0,
    TAG_COUNTS = 1,
    TAG_STRINGS = 2,
    TAG_FRAMES = 3,
    TAG_TRACEBACKS = 4,
    TAG_TRACES = 5,
    TAG_LIMIT = 6,
    TAG_EXTRA = 7,
    TAG_KNOWN = 8               /* first tag this version does not know */
};

enum {
    LIMIT_NONE = 0,
    LIMIT_INT = 1,
    LIMIT_PICKLE = 2
};

/* The writer flushes a repeatable section once its items reach this
 * size; the reader's buffer holds a few of them. */
#define BLOCK_TARGET (64 * 1024)
/* Room before a block's items for its tag, length and count. */
#define BLOCK_HEAD 24
/* Traces per TRACES section (a multiple of 4). */
#define TRACES_PER_SECTION 16384
/* File I/O buffer of the writer, first size of the reader's. */
#define IO_BUFSIZE (256 * 1024)

/* ---------------------------------------------------------------------
 * Little-endian integers and varints
 * ------------------------------------------------------------------- */

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

/* Trace sizes: the byte lengths of the four 2-bit length codes. */
static const uint8_t size_len[4] = {1, 2, 3, 8};
static const uint64_t size_mask[4] = {
    0xffULL, 0xffffULL, 0xffffffULL, 0xffffffffffffffffULL
};

static inline unsigned
size_code(uint64_t v)
{
    return (unsigned)(v > 0xff) + (unsigned)(v > 0xffff)
           + (unsigned)(v > 0xffffff);
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

static int
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

/* ---------------------------------------------------------------------
 * XXH64, streaming: Yann Collet's xxHash64 (public specification), so
 * that any xxhash implementation can verify a file. About 10 GB/s: the
 * check costs well under a millisecond for millions of traces.
 * ------------------------------------------------------------------- */

#define XXH_P1 0x9E3779B185EBCA87ULL
#define XXH_P2 0xC2B2AE3D27D4EB4FULL
#define XXH_P3 0x165667B19E3779F9ULL
#define XXH_P4 0x85EBCA77C2B2AE63ULL
#define XXH_P5 0x27D4EB2F165667C5ULL

typedef struct {
    uint64_t v[4];
    uint64_t total;
    uint8_t mem[32];
    size_t memsize;
} xxh64_state;

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

static void
xxh64_init(xxh64_state *s)
{
    memset(s, 0, sizeof(*s));
    s->v[0] = XXH_P1 + XXH_P2;
    s->v[1] = XXH_P2;
    s->v[2] = 0;
    s->v[3] = 0 - XXH_P1;
}

static void
xxh64_update(xxh64_state *s, const uint8_t *p, size_t n)
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
static uint64_t
xxh64_digest(const xxh64_state *s)
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

/* ---------------------------------------------------------------------
 * Shared helpers
 * ------------------------------------------------------------------- */

/* pickle.dumps(obj, protocol): a bytes object. */
static PyObject *
pickle_dumps(PyObject *obj)
{
    PyObject *pickle = PyImport_ImportModule("pickle");
    if (pickle == NULL) {
        return NULL;
    }
    PyObject *res = PyObject_CallMethod(pickle, "dumps", "Oi", obj,
                                        FF_PICKLE_PROTOCOL);
    Py_DECREF(pickle);
    if (res != NULL && !PyBytes_Check(res)) {
        PyErr_SetString(PyExc_TypeError, "pickle.dumps did not return bytes");
        Py_CLEAR(res);
    }
    return res;
}

/* ---------------------------------------------------------------------
 * Writer
 * ------------------------------------------------------------------- */

typedef struct {
    int fd;                     /* -1: the output is the bytes object */
    PyObject *path;             /* for OSError; borrowed */
    PyObject *bytes;            /* output when fd == -1 */
    size_t cap;                 /* capacity of bytes */
    size_t used;                /* bytes in bytes, or in obuf */
    uint8_t *obuf;              /* file output buffer */
    xxh64_state hash;
    /* The repeatable section being built: items from BLOCK_HEAD to bpos;
     * tag, length and count are written before them when it is full. */
    uint8_t *blk;
    size_t bcap;
    size_t bpos;
    uint64_t bcount;
} writer;

/* Append n bytes to the output, without hashing them. */
static int
out_raw(writer *w, const uint8_t *p, size_t n)
{
    if (w->fd >= 0) {
        /* Large blocks go straight to the file, without a copy, after
         * what the buffer holds. */
        int direct = n >= IO_BUFSIZE / 2;
        if (direct || w->used + n > IO_BUFSIZE) {
            if (ctm_write_all(w->fd, w->path, w->obuf, w->used) < 0) {
                return -1;
            }
            w->used = 0;
        }
        if (direct) {
            return ctm_write_all(w->fd, w->path, p, n);
        }
        memcpy(w->obuf + w->used, p, n);
        w->used += n;
        return 0;
    }
    if (w->cap - w->used < n) {
        size_t ncap = w->cap * 2;
        if (ncap < w->used + n) {
            ncap = w->used + n;
        }
        if (ncap > PY_SSIZE_T_MAX) {
            PyErr_NoMemory();
            return -1;
        }
        if (_PyBytes_Resize(&w->bytes, (Py_ssize_t)ncap) < 0) {
            return -1;
        }
        w->cap = ncap;
    }
    memcpy(PyBytes_AS_STRING(w->bytes) + w->used, p, n);
    w->used += n;
    return 0;
}

static int
out_write(writer *w, const uint8_t *p, size_t n)
{
    xxh64_update(&w->hash, p, n);
    return out_raw(w, p, n);
}

/* Write the check of everything written so far. */
static int
out_check(writer *w)
{
    uint8_t check[FF_CHECK_SIZE];
    store64le(check, xxh64_digest(&w->hash));
    return out_write(w, check, sizeof(check));
}

/* Write a whole section whose payload is known. */
static int
out_section(writer *w, uint8_t tag, const uint8_t *payload, size_t n)
{
    uint8_t head[1 + 10];
    head[0] = tag;
    uint8_t *end = put_varint(head + 1, n);
    if (out_write(w, head, (size_t)(end - head)) < 0
        || (n && out_write(w, payload, n) < 0)) {
        return -1;
    }
    return out_check(w);
}

/* Room for n more bytes of items in the current block. */
static int
blk_reserve(writer *w, size_t n)
{
    if (w->bcap - w->bpos >= n) {
        return 0;
    }
    size_t ncap = w->bcap * 2;
    if (ncap < w->bpos + n) {
        ncap = w->bpos + n;
    }
    uint8_t *p = ctm_realloc(w->blk, ncap);
    if (p == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    w->blk = p;
    w->bcap = ncap;
    return 0;
}

/* Emit the current block, if it holds any item, as a section. */
static int
blk_flush(writer *w, uint8_t tag)
{
    if (w->bcount == 0) {
        return 0;
    }
    size_t items = w->bpos - BLOCK_HEAD;
    size_t clen = varint_len(w->bcount);
    size_t plen = clen + items;
    size_t llen = varint_len(plen);
    uint8_t *start = w->blk + BLOCK_HEAD - clen - llen - 1;
    start[0] = tag;
    put_varint(start + 1, plen);
    put_varint(start + 1 + llen, w->bcount);
    if (out_write(w, start, (size_t)(w->blk + w->bpos - start)) < 0
        || out_check(w) < 0) {
        return -1;
    }
    w->bpos = BLOCK_HEAD;
    w->bcount = 0;
    return 0;
}

/* Before an item of at most maxlen bytes: flush a full block, and make
 * room for the item (a huge string gets a block of its own). */
static int
blk_item(writer *w, uint8_t tag, size_t maxlen)
{
    if (w->bcount > 0 && w->bpos - BLOCK_HEAD + maxlen > BLOCK_TARGET
        && blk_flush(w, tag) < 0) {
        return -1;
    }
    return blk_reserve(w, maxlen);
}

static int
write_strings(writer *w, const ctm_snapdata *d)
{
    for (Py_ssize_t i = 0; i < d->nstrings; i++) {
        const char *s;
        Py_ssize_t n;
        PyObject *tmp;
        if (ctm_str_utf8(d->strings[i], &s, &n, &tmp) < 0) {
            return -1;
        }
        int rc = blk_item(w, TAG_STRINGS, 10 + (size_t)n);
        if (rc == 0) {
            uint8_t *p = put_varint(w->blk + w->bpos, (uint64_t)n);
            memcpy(p, s, (size_t)n);
            w->bpos = (size_t)(p - w->blk) + (size_t)n;
            w->bcount++;
        }
        Py_XDECREF(tmp);
        if (rc < 0) {
            return -1;
        }
    }
    return blk_flush(w, TAG_STRINGS);
}

static int
write_frames(writer *w, const ctm_snapdata *d)
{
    for (Py_ssize_t i = 0; i < d->nframes; i++) {
        if (blk_item(w, TAG_FRAMES, 15) < 0) {
            return -1;
        }
        uint8_t *p = w->blk + w->bpos;
        p = put_varint(p, d->frames[i].filename);
        p = put_varint(p, zigzag(d->frames[i].lineno));
        w->bpos = (size_t)(p - w->blk);
        w->bcount++;
    }
    return blk_flush(w, TAG_FRAMES);
}

static int
write_tracebacks(writer *w, const ctm_snapdata *d)
{
    const unsigned width = d->nframes <= 0x100 ? 1
                           : d->nframes <= 0x10000 ? 2 : 4;
    for (Py_ssize_t i = 0; i < d->ntracebacks; i++) {
        const ctm_snap_tb *t = &d->tracebacks[i];
        if (blk_item(w, TAG_TRACEBACKS, 21 + width * (size_t)t->nframe)
            < 0) {
            return -1;
        }
        uint8_t *p = w->blk + w->bpos;
        if (w->bcount == 0) {
            /* first of the section's items; blk_flush puts the count
             * before it */
            *p++ = (uint8_t)width;
        }
        p = put_varint(p, t->nframe);
        /* None (UINT32_MAX) wraps to 0. */
        p = put_varint(p, (uint32_t)(t->total_nframe + 1));
        const uint32_t *refs = d->refs + t->first;
        for (uint32_t k = 0; k < t->nframe; k++) {
            uint32_t f = refs[k];
            for (unsigned b = 0; b < width; b++) {
                p[b] = (uint8_t)(f >> (8 * b));
            }
            p += width;
        }
        w->bpos = (size_t)(p - w->blk);
        w->bcount++;
    }
    return blk_flush(w, TAG_TRACEBACKS);
}

/* How many traces ahead write_traces_section prefetches. */
#define TRACES_PREFETCH 128

/* Largest run header: h, traceback delta, domain. */
#define RUN_HEAD_MAX 25

/* Run headers of write_traces_section. */
typedef struct {
    uint8_t *p;                 /* next header */
    uint64_t nruns;
    int64_t prev_tb;
    uint32_t prev_dom;
} runs_out;

static inline void
put_run(runs_out *r, uint64_t count, uint32_t tb, uint32_t dom)
{
    int explicit_tb = (int64_t)tb != r->prev_tb + 1;
    int explicit_dom = dom != r->prev_dom;
    uint64_t h = ((count - 1) << 2) | (uint64_t)explicit_tb
                 | ((uint64_t)explicit_dom << 1);
    r->p = put_varint(r->p, h);
    if (explicit_tb) {
        r->p = put_varint(r->p, zigzag((int64_t)tb - r->prev_tb - 1));
    }
    if (explicit_dom) {
        r->p = put_varint(r->p, dom);
    }
    r->nruns++;
    r->prev_tb = tb;
    r->prev_dom = dom;
}

/* Emit one TRACES section: the traces tr[0 .. n), n at most
 * TRACES_PER_SECTION; runs, ctrl and data are scratch buffers of the
 * sizes write_traces allocates. One pass over the traces, which are
 * read from memory once: runs are closed as they end, and sizes are
 * coded four at a time, without a branch on their lengths (sizes of
 * mixed lengths would make such branches mispredict). */
static int
write_traces_section(writer *w, const ctm_snap_trace *tr, size_t n,
                     uint8_t *runs, uint8_t *ctrl, uint8_t *data)
{
    runs_out ro = {runs, 0, -1, 0};
    uint32_t tb = tr[0].traceback;
    uint32_t dom = tr[0].domain;
    size_t run_start = 0;
    uint8_t *dp = data;
#define RUN_CHECK(I)                                                    \
    do {                                                                \
        if (tr[I].traceback != tb || tr[I].domain != dom) {             \
            put_run(&ro, (I) - run_start, tb, dom);                     \
            run_start = (I);                                            \
            tb = tr[I].traceback;                                       \
            dom = tr[I].domain;                                         \
        }                                                               \
    } while (0)
    size_t i = 0;
    for (; i + 4 <= n; i += 4) {
        /* Four traces are a cache line: ask for one well ahead, as this
         * loop is bound by reading the traces from memory (and the
         * hardware prefetcher was seen to fall far short, twice slower
         * without this). */
        if (i + TRACES_PREFETCH < n) {
            __builtin_prefetch(&tr[i + TRACES_PREFETCH], 0, 0);
        }
        RUN_CHECK(i);
        RUN_CHECK(i + 1);
        RUN_CHECK(i + 2);
        RUN_CHECK(i + 3);
        uint64_t s0 = tr[i].size, s1 = tr[i + 1].size;
        uint64_t s2 = tr[i + 2].size, s3 = tr[i + 3].size;
        unsigned c0 = size_code(s0), c1 = size_code(s1);
        unsigned c2 = size_code(s2), c3 = size_code(s3);
        /* 8 bytes stored per size: data has room. */
        store64le(dp, s0);
        dp += size_len[c0];
        store64le(dp, s1);
        dp += size_len[c1];
        store64le(dp, s2);
        dp += size_len[c2];
        store64le(dp, s3);
        dp += size_len[c3];
        ctrl[i >> 2] = (uint8_t)(c0 | c1 << 2 | c2 << 4 | c3 << 6);
    }
    if (i < n) {
        ctrl[i >> 2] = 0;
    }
    for (; i < n; i++) {
        RUN_CHECK(i);
        uint64_t s = tr[i].size;
        unsigned code = size_code(s);
        store64le(dp, s);
        dp += size_len[code];
        ctrl[i >> 2] |= (uint8_t)(code << (2 * (i & 3)));
    }
#undef RUN_CHECK
    put_run(&ro, n - run_start, tb, dom);

    size_t nctrl = (n + 3) / 4;
    size_t rlen = (size_t)(ro.p - runs);
    size_t dlen = (size_t)(dp - data);
    size_t plen = varint_len(n) + varint_len(ro.nruns) + rlen + nctrl
                  + dlen;
    uint8_t head[1 + 3 * 10];
    head[0] = TAG_TRACES;
    uint8_t *hp = put_varint(head + 1, plen);
    hp = put_varint(hp, n);
    hp = put_varint(hp, ro.nruns);
    if (out_write(w, head, (size_t)(hp - head)) < 0
        || out_write(w, runs, rlen) < 0
        || out_write(w, ctrl, nctrl) < 0
        || out_write(w, data, dlen) < 0) {
        return -1;
    }
    return out_check(w);
}

static int
write_traces(writer *w, const ctm_snapdata *d)
{
    int rc = -1;
    uint8_t *runs = ctm_malloc(TRACES_PER_SECTION * RUN_HEAD_MAX);
    uint8_t *ctrl = ctm_malloc(TRACES_PER_SECTION / 4);
    uint8_t *data = ctm_malloc(TRACES_PER_SECTION * 8 + 8);
    if (runs == NULL || ctrl == NULL || data == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    size_t ntraces = (size_t)d->ntraces;
    for (size_t start = 0; start < ntraces; start += TRACES_PER_SECTION) {
        size_t n = ntraces - start;
        if (n > TRACES_PER_SECTION) {
            n = TRACES_PER_SECTION;
        }
        if (write_traces_section(w, d->traces + start, n, runs, ctrl,
                                 data) < 0) {
            goto done;
        }
    }
    rc = 0;

done:
    ctm_free(runs);
    ctm_free(ctrl);
    ctm_free(data);
    return rc;
}

/* The LIMIT and EXTRA payloads, made before the file is opened so that
 * an unpicklable attribute does not leave a truncated file behind.
 * *limit_payload is a bytes object; *extra_payload a bytes object or
 * NULL when there are no attributes. */
static int
make_payloads(PyObject *limit, PyObject *extra, PyObject **limit_payload,
              PyObject **extra_payload)
{
    PyObject *pickled = NULL;
    *limit_payload = NULL;
    *extra_payload = NULL;

    uint8_t buf[1 + 10];
    size_t n = 1;
    buf[0] = LIMIT_NONE;
    if (limit != NULL && limit != Py_None) {
        int overflow = 1;
        long long v = 0;
        /* Only an exact int: True must come back as True. */
        if (PyLong_CheckExact(limit)) {
            v = PyLong_AsLongLongAndOverflow(limit, &overflow);
            if (v == -1 && PyErr_Occurred()) {
                goto error;
            }
        }
        if (!overflow) {
            buf[0] = LIMIT_INT;
            n = (size_t)(put_varint(buf + 1, zigzag(v)) - buf);
        }
        else {
            pickled = pickle_dumps(limit);
            if (pickled == NULL) {
                goto error;
            }
            Py_ssize_t len = PyBytes_GET_SIZE(pickled);
            *limit_payload = PyBytes_FromStringAndSize(NULL, len + 1);
            if (*limit_payload == NULL) {
                goto error;
            }
            char *s = PyBytes_AS_STRING(*limit_payload);
            s[0] = LIMIT_PICKLE;
            memcpy(s + 1, PyBytes_AS_STRING(pickled), (size_t)len);
        }
    }
    if (*limit_payload == NULL) {
        *limit_payload = PyBytes_FromStringAndSize((const char *)buf,
                                                   (Py_ssize_t)n);
        if (*limit_payload == NULL) {
            goto error;
        }
    }

    if (extra != NULL && extra != Py_None) {
        if (!PyDict_Check(extra)) {
            PyErr_Format(PyExc_TypeError,
                         "snapshot attributes must be a dict, not %.200s",
                         Py_TYPE(extra)->tp_name);
            goto error;
        }
        if (PyDict_GET_SIZE(extra) > 0) {
            *extra_payload = pickle_dumps(extra);
            if (*extra_payload == NULL) {
                goto error;
            }
        }
    }
    Py_XDECREF(pickled);
    return 0;

error:
    Py_XDECREF(pickled);
    Py_CLEAR(*limit_payload);
    Py_CLEAR(*extra_payload);
    return -1;
}

/* Write the whole file into w (whose output is set up). */
static int
write_snapshot(writer *w, const ctm_snapdata *d, PyObject *limit_payload,
               PyObject *extra_payload)
{
    uint8_t header[FF_HEADER_SIZE];
    memcpy(header, ff_magic, 8);
    header[8] = FF_MAJOR & 0xff;
    header[9] = FF_MAJOR >> 8;
    header[10] = FF_MINOR & 0xff;
    header[11] = FF_MINOR >> 8;
    if (out_write(w, header, sizeof(header)) < 0) {
        return -1;
    }

    uint8_t counts[5 * 10];
    uint8_t *p = counts;
    p = put_varint(p, (uint64_t)d->nstrings);
    p = put_varint(p, (uint64_t)d->nframes);
    p = put_varint(p, (uint64_t)d->ntracebacks);
    p = put_varint(p, (uint64_t)d->nrefs);
    p = put_varint(p, (uint64_t)d->ntraces);
    if (out_section(w, TAG_COUNTS, counts, (size_t)(p - counts)) < 0) {
        return -1;
    }

    w->bcap = BLOCK_HEAD + BLOCK_TARGET + 256;
    w->blk = ctm_malloc(w->bcap);
    if (w->blk == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    w->bpos = BLOCK_HEAD;
    w->bcount = 0;
    if (write_strings(w, d) < 0
        || write_frames(w, d) < 0
        || write_tracebacks(w, d) < 0
        || write_traces(w, d) < 0) {
        return -1;
    }

    if (out_section(w, TAG_LIMIT,
                    (const uint8_t *)PyBytes_AS_STRING(limit_payload),
                    (size_t)PyBytes_GET_SIZE(limit_payload)) < 0) {
        return -1;
    }
    if (extra_payload != NULL
        && out_section(w, TAG_EXTRA,
                       (const uint8_t *)PyBytes_AS_STRING(extra_payload),
                       (size_t)PyBytes_GET_SIZE(extra_payload)) < 0) {
        return -1;
    }
    if (out_section(w, TAG_END, NULL, 0) < 0) {
        return -1;
    }
    if (w->fd >= 0 && w->used > 0) {
        if (ctm_write_all(w->fd, w->path, w->obuf, w->used) < 0) {
            return -1;
        }
        w->used = 0;
    }
    return 0;
}

int
ctm_dump(PyObject *path, const ctm_snapdata *data, PyObject *limit,
         PyObject *extra)
{
    int rc = -1;
    int fd = -1;
    PyObject *fspath = NULL;
    PyObject *limit_payload = NULL, *extra_payload = NULL;
    writer w;
    memset(&w, 0, sizeof(w));
    w.fd = -1;
    xxh64_init(&w.hash);

    if (make_payloads(limit, extra, &limit_payload, &extra_payload) < 0) {
        goto done;
    }
    w.obuf = ctm_malloc(IO_BUFSIZE);
    if (w.obuf == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    fd = ctm_open_path(path, O_WRONLY | O_CREAT | O_TRUNC, &fspath);
    if (fd < 0) {
        goto done;
    }
    w.fd = fd;
    w.path = fspath;
    if (write_snapshot(&w, data, limit_payload, extra_payload) < 0) {
        goto done;
    }
    fd = -1;
    if (ctm_close_fd(w.fd, fspath) < 0) {
        goto done;
    }
    rc = 0;

done:
    if (fd >= 0) {
        /* Already failing: the close error, if any, matters less. */
        close(fd);
    }
    ctm_free(w.obuf);
    ctm_free(w.blk);
    Py_XDECREF(fspath);
    Py_XDECREF(limit_payload);
    Py_XDECREF(extra_payload);
    return rc;
}

PyObject *
ctm_dump_bytes(const ctm_snapdata *data, PyObject *limit, PyObject *extra)
{
    PyObject *res = NULL;
    PyObject *limit_payload = NULL, *extra_payload = NULL;
    writer w;
    memset(&w, 0, sizeof(w));
    w.fd = -1;
    xxh64_init(&w.hash);

    if (make_payloads(limit, extra, &limit_payload, &extra_payload) < 0) {
        goto done;
    }
    /* A first guess of the size: about two bytes per trace. */
    w.cap = 256 + 2 * (size_t)data->ntraces + 4 * (size_t)data->nrefs;
    w.bytes = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)w.cap);
    if (w.bytes == NULL) {
        goto done;
    }
    if (write_snapshot(&w, data, limit_payload, extra_payload) < 0) {
        goto done;
    }
    if (_PyBytes_Resize(&w.bytes, (Py_ssize_t)w.used) < 0) {
        goto done;
    }
    res = w.bytes;
    w.bytes = NULL;

done:
    Py_XDECREF(w.bytes);
    ctm_free(w.blk);
    Py_XDECREF(limit_payload);
    Py_XDECREF(extra_payload);
    return res;
}

/* ---------------------------------------------------------------------
 * Reader
 * ------------------------------------------------------------------- */

/* The file is read in chunks into a buffer that holds one section at a
 * time (or is the whole input, for bytes and pipes). The size of the
 * input is always known (fstat, or the pipe read to its end), so that
 * counts and lengths are checked against the bytes actually left
 * before anything is allocated for them. */
typedef struct {
    int fd;                     /* -1: reading from memory */
    PyObject *path;             /* for OSError; borrowed */
    const uint8_t *data;        /* the memory, or buf */
    size_t pos, len;            /* unread bytes: data[pos .. len) */
    uint8_t *buf;               /* file buffer */
    size_t cap;
    int eof;
    uint64_t offset;            /* input offset of data[pos] */
    uint64_t size;              /* input size */
    xxh64_state hash;
    ctm_progress progress;
} reader;

/* Make n bytes available at data[pos], if the file has them. Return 0,
 * 1 if the file ends first, -1 on error (OSError, MemoryError). The
 * buffer grows only as bytes arrive: twice the bytes read at most,
 * whatever n a damaged file asks for. */
static int
rd_fill(reader *r, size_t n)
{
    if (r->len - r->pos >= n) {
        return 0;
    }
    if (r->fd < 0 || r->eof) {
        return 1;
    }
    if (r->pos > 0) {
        memmove(r->buf, r->buf + r->pos, r->len - r->pos);
        r->len -= r->pos;
        r->pos = 0;
    }
    while (r->len < n) {
        if (r->len == r->cap) {
            /* Full: at most double what was read, and no more than the
             * take needs once past the first size. */
            size_t ncap = IO_BUFSIZE;
            if (r->cap) {
                ncap = r->cap * 2 < n ? r->cap * 2 : n;
            }
            uint8_t *p = ctm_realloc(r->buf, ncap);
            if (p == NULL) {
                PyErr_NoMemory();
                return -1;
            }
            r->buf = p;
            r->data = p;
            r->cap = ncap;
        }
        ssize_t got;
        int err;
        size_t want = r->cap - r->len;
        if (want > ((size_t)1 << 30)) {
            want = (size_t)1 << 30;
        }
        Py_BEGIN_ALLOW_THREADS
        got = read(r->fd, r->buf + r->len, want);
        err = errno;
        Py_END_ALLOW_THREADS
        if (got < 0) {
            if (err == EINTR) {
                if (PyErr_CheckSignals() < 0) {
                    return -1;
                }
                continue;
            }
            errno = err;
            PyErr_SetFromErrnoWithFilenameObject(PyExc_OSError, r->path);
            return -1;
        }
        if (got == 0) {
            r->eof = 1;
            return 1;
        }
        r->len += (size_t)got;
        if (ctm_progress_report(&r->progress,
                                r->offset + (r->len - r->pos)) < 0) {
            return -1;
        }
    }
    return 0;
}

static int
truncated(const reader *r, const char *where)
{
    PyErr_Format(PyExc_ValueError,
                 "truncated snapshot file: it ends inside the %s "
                 "(offset %llu)", where, (unsigned long long)r->offset);
    return -1;
}

/* Take the next n bytes: *out points to them until the next take. */
static int
rd_take(reader *r, size_t n, const uint8_t **out, const char *where)
{
    int rc = rd_fill(r, n);
    if (rc != 0) {
        return rc < 0 ? -1 : truncated(r, where);
    }
    *out = r->data + r->pos;
    r->pos += n;
    r->offset += n;
    return 0;
}

/* One run of a TRACES section, decoded. */
typedef struct {
    uint64_t count;
    uint64_t tbdom;             /* traceback | domain << 32 */
} run_t;

/* The loader's state. The snapshot's arrays are allocated once, at
 * their exact sizes, from the counts of COUNTS (checked against the
 * bytes left first); each item is checked as it is stored. */
typedef struct {
    reader *r;
    unsigned major;             /* of the file */
    int strict;                 /* file minor <= ours */
    uint64_t section_offset;
    const char *section_name;
    int rank;                   /* of the last known section */
    int have_counts;
    uint64_t nstrings, nframes, ntracebacks, nrefs, ntraces;  /* declared */
    uint64_t refs_done;
    ctm_snapdata *d;            /* counts are those stored so far */
    /* Duplicate detection: open addressing, power-of-two capacity, at
     * most half full, 0 for an empty slot. A string slot holds the
     * string's index + 1; a frame slot the frame itself (filename << 32
     * | lineno, + 1); a traceback slot the high half of its index hash
     * (see traceback_hash) | (index + 1). The slots of frames and
     * tracebacks hold enough to tell most items apart without reading
     * the arrays: with hundreds of thousands of them, each random read
     * is a cache miss. */
    uint32_t *string_slots;
    uint64_t *frame_slots, *traceback_slots;
    size_t string_mask, frame_mask, traceback_mask;
    run_t *runs;                /* of one TRACES section */
    uint64_t runs_cap;
    uint64_t *keys;             /* of one TRACEBACKS section */
    uint64_t keys_cap;
    PyObject *limit;
    PyObject *extra;
} loader;

static int
corrupted(const loader *st, const char *what)
{
    PyErr_Format(PyExc_ValueError,
                 "corrupted snapshot file: %s (%s section at offset %llu)",
                 what, st->section_name,
                 (unsigned long long)st->section_offset);
    return -1;
}

static int
bad_payload(const loader *st)
{
    return corrupted(st, "malformed or short section payload");
}

/* The end of a known section's fields: the rest must be empty, except
 * in a file of a newer minor version, which may add fields. */
static int
section_end(const loader *st, const cursor *c)
{
    if (cur_left(c) != 0 && st->strict) {
        return corrupted(st, "unexpected bytes at the end of the section");
    }
    return 0;
}

/* Map a large array about to be filled, if the kernel has not mapped it
 * yet (a fresh mmap; memory reused from the heap is mapped already).
 * Taking thousands of page faults one by one, as first touching tens of
 * megabytes does, costs more than the whole parse on a fresh process,
 * and more still in a VM; one madvise call does the same work for a
 * fraction. A hint: failure (an older kernel) is ignored. */
static void
prefault(void *p, size_t n)
{
#if defined(MADV_POPULATE_WRITE) && CTM_PREFAULT
    const uintptr_t page = 4096;
    if (p == NULL || n < 64 * page) {
        return;
    }
    uintptr_t start = ((uintptr_t)p + page - 1) & ~(page - 1);
    uintptr_t end = ((uintptr_t)p + n) & ~(page - 1);
    /* A sample of pages: a block may start in mapped heap memory and
     * go on into fresh memory. */
    uintptr_t sample[3] = {
        start, start + ((end - start) / 2 & ~(page - 1)), end - page
    };
    for (int i = 0; i < 3; i++) {
        unsigned char resident;
        if (mincore((void *)sample[i], page, &resident) == 0
            && !(resident & 1)) {
            (void)madvise((void *)start, end - start, MADV_POPULATE_WRITE);
            break;
        }
    }
#else
    (void)p;
    (void)n;
#endif
}

/* Zeroed slots of size elsize for n items, *mask their number - 1; NULL
 * with MemoryError. */
static void *
slots_new(uint64_t n, size_t elsize, size_t *mask)
{
    size_t cap = 16;
    while (cap < 2 * n) {
        cap *= 2;
    }
    void *slots = ctm_calloc(cap, elsize);
    if (slots == NULL) {
        PyErr_NoMemory();
        return NULL;
    }
    prefault(slots, cap * elsize);
    *mask = cap - 1;
    return slots;
}

/* Items are inserted this far behind the one whose slot is prefetched. */
#define PREFETCH_AHEAD 32

static inline size_t
mix64(uint64_t x)
{
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdULL;
    x ^= x >> 33;
    return (size_t)x;
}

static int
parse_counts(loader *st, cursor *c)
{
    uint64_t v[5];
    for (int i = 0; i < 5; i++) {
        if (get_varint(c, &v[i]) < 0) {
            return bad_payload(st);
        }
    }
    /* Indexes are uint32; the traces array is sized in bytes. */
    if (v[0] > UINT32_MAX || v[1] > UINT32_MAX || v[2] > UINT32_MAX
        || v[3] > UINT32_MAX
        || v[4] > (uint64_t)PY_SSIZE_T_MAX / sizeof(ctm_snap_trace)) {
        return corrupted(st, "impossible item counts");
    }
    /* Each item takes at least one byte of the file (frames and
     * tracebacks two), so the counts must fit in what is left of it:
     * that bounds what a damaged or hostile count can make us allocate
     * to a few times the file's size. */
    const reader *r = st->r;
    uint64_t left = r->size > r->offset ? r->size - r->offset : 0;
    uint64_t need = v[0] + 2 * v[1] + 2 * v[2] + v[3] + v[4];
    if (need > left) {
        /* The check matched: the counts are as written, the rest of the
         * file is missing. */
        PyErr_Format(PyExc_ValueError,
                     "truncated snapshot file: its counts need at least "
                     "%llu more bytes, the file has %llu",
                     (unsigned long long)need, (unsigned long long)left);
        return -1;
    }
    st->nstrings = v[0];
    st->nframes = v[1];
    st->ntracebacks = v[2];
    st->nrefs = v[3];
    st->ntraces = v[4];
    ctm_snapdata *d = ctm_calloc(1, sizeof(*d));
    if (d == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    st->d = d;
    d->strings = ctm_malloc((size_t)v[0] * sizeof(PyObject *));
    d->frames = ctm_malloc((size_t)v[1] * sizeof(ctm_snap_frame));
    d->tracebacks = ctm_malloc((size_t)v[2] * sizeof(ctm_snap_tb));
    d->refs = ctm_malloc((size_t)v[3] * sizeof(uint32_t));
    d->traces = ctm_malloc((size_t)v[4] * sizeof(ctm_snap_trace));
    if (d->strings == NULL || d->frames == NULL || d->tracebacks == NULL
        || d->refs == NULL || d->traces == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    prefault(d->frames, (size_t)v[1] * sizeof(ctm_snap_frame));
    prefault(d->tracebacks, (size_t)v[2] * sizeof(ctm_snap_tb));
    prefault(d->refs, (size_t)v[3] * sizeof(uint32_t));
    prefault(d->traces, (size_t)v[4] * sizeof(ctm_snap_trace));
    st->string_slots = slots_new(v[0], sizeof(uint32_t), &st->string_mask);
    st->frame_slots = slots_new(v[1], sizeof(uint64_t), &st->frame_mask);
    st->traceback_slots = slots_new(v[2], sizeof(uint64_t),
                                    &st->traceback_mask);
    if (st->string_slots == NULL || st->frame_slots == NULL
        || st->traceback_slots == NULL) {
        return -1;
    }
    st->have_counts = 1;
    return section_end(st, c);
}

static int
parse_strings(loader *st, cursor *c)
{
    ctm_snapdata *d = st->d;
    uint64_t n;
    if (get_varint(c, &n) < 0 || n > cur_left(c)) {
        return bad_payload(st);
    }
    if (n > st->nstrings - (uint64_t)d->nstrings) {
        return corrupted(st, "more strings than declared");
    }
    for (uint64_t i = 0; i < n; i++) {
        uint64_t len;
        if (get_varint(c, &len) < 0 || len > cur_left(c)) {
            return bad_payload(st);
        }
        PyObject *s = PyUnicode_DecodeUTF8((const char *)c->p,
                                           (Py_ssize_t)len, "surrogatepass");
        if (s == NULL) {
            if (PyErr_ExceptionMatches(PyExc_UnicodeDecodeError)) {
                PyErr_Clear();
                return corrupted(st, "a string is not valid UTF-8");
            }
            return -1;
        }
        c->p += len;
        Py_ssize_t idx = d->nstrings;
        /* Stored first, so that an error releases it with the rest. */
        d->strings[idx] = s;
        d->nstrings = idx + 1;
        Py_hash_t h = PyObject_Hash(s);
        if (h == -1) {
            return -1;
        }
        size_t j = mix64((uint64_t)h) & st->string_mask;
        uint32_t v;
        while ((v = st->string_slots[j]) != 0) {
            PyObject *other = d->strings[v - 1];
            if (PyObject_Hash(other) == h) {
                int cmp = PyUnicode_Compare(other, s);
                if (cmp == -1 && PyErr_Occurred()) {
                    return -1;
                }
                if (cmp == 0) {
                    return corrupted(st, "duplicate string");
                }
            }
            j = (j + 1) & st->string_mask;
        }
        st->string_slots[j] = (uint32_t)idx + 1;
    }
    return section_end(st, c);
}

static inline uint64_t
frame_key(const ctm_snap_frame *f)
{
    return (((uint64_t)f->filename << 32) | (uint32_t)f->lineno) + 1;
}

static int
parse_frames(loader *st, cursor *c)
{
    ctm_snapdata *d = st->d;
    uint64_t n;
    if (get_varint(c, &n) < 0 || n > cur_left(c) / 2) {
        return bad_payload(st);
    }
    if (n > st->nframes - (uint64_t)d->nframes) {
        return corrupted(st, "more frames than declared");
    }
    /* Decode and check the section's frames, then look them up, with
     * the slots of later frames prefetched. */
    const uint64_t nstrings = (uint64_t)d->nstrings;
    ctm_snap_frame *frames = d->frames + d->nframes;
    for (uint64_t i = 0; i < n; i++) {
        uint64_t filename, z;
        if (get_varint(c, &filename) < 0 || get_varint(c, &z) < 0) {
            return bad_payload(st);
        }
        int64_t lineno = unzigzag(z);
        if (filename >= nstrings) {
            return corrupted(st, "frame filename index out of range");
        }
        if (lineno < INT32_MIN || lineno > INT32_MAX) {
            return corrupted(st, "frame line number out of range");
        }
        frames[i].filename = (uint32_t)filename;
        frames[i].lineno = (int32_t)lineno;
    }
    uint64_t *slots = st->frame_slots;
    const size_t mask = st->frame_mask;
    for (uint64_t i = 0; i < n; i++) {
        if (i + PREFETCH_AHEAD < n) {
            __builtin_prefetch(
                &slots[mix64(frame_key(&frames[i + PREFETCH_AHEAD]))
                       & mask], 1);
        }
        uint64_t key = frame_key(&frames[i]);
        size_t j = mix64(key) & mask;
        uint64_t v;
        while ((v = slots[j]) != 0) {
            if (v == key) {
                return corrupted(st, "duplicate frame");
            }
            j = (j + 1) & mask;
        }
        slots[j] = key;
    }
    d->nframes += (Py_ssize_t)n;
    return section_end(st, c);
}

/* Copy n > 0 frame references of width 1, 2 or 4 bytes from p to refs
 * (the caller checks that the bytes are there); their largest, which
 * the caller checks against nframes, once for the traceback. */
static inline uint32_t
get_refs(const uint8_t *p, unsigned width, uint32_t *refs, uint64_t n)
{
    uint32_t max = 0;
    if (width == 1) {
        for (uint64_t k = 0; k < n; k++) {
            uint32_t f = p[k];
            refs[k] = f;
            max = f > max ? f : max;
        }
    }
    else if (width == 2) {
        for (uint64_t k = 0; k < n; k++) {
            uint32_t f = p[2 * k] | (uint32_t)p[2 * k + 1] << 8;
            refs[k] = f;
            max = f > max ? f : max;
        }
    }
    else {
        for (uint64_t k = 0; k < n; k++) {
            uint32_t f = load32le(p + 4 * k);
            refs[k] = f;
            max = f > max ? f : max;
        }
    }
    return max;
}

static int
parse_tracebacks(loader *st, cursor *c)
{
    ctm_snapdata *d = st->d;
    uint64_t n;
    if (get_varint(c, &n) < 0 || n > cur_left(c) / 2) {
        return bad_payload(st);
    }
    if (n > st->ntracebacks - (uint64_t)d->ntracebacks) {
        return corrupted(st, "more tracebacks than declared");
    }
    unsigned width = 0;         /* version 1: varints */
    if (st->major >= 2) {
        if (cur_left(c) < 1) {
            return bad_payload(st);
        }
        width = *c->p++;
        if (width != 1 && width != 2 && width != 4) {
            return corrupted(st, "bad frame reference width");
        }
    }
    /* Decode and check the section's tracebacks, then look them up,
     * with the slots of later tracebacks prefetched. keys: their index
     * hashes (n <= the section's bytes / 2). */
    if (n > st->keys_cap) {
        uint64_t *p = ctm_realloc(st->keys, (size_t)n * sizeof(uint64_t));
        if (p == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        st->keys = p;
        st->keys_cap = n;
    }
    uint64_t *keys = st->keys;
    const uint64_t nframes = (uint64_t)d->nframes;
    ctm_snap_tb *tbs = d->tracebacks + d->ntracebacks;
    for (uint64_t i = 0; i < n; i++) {
        uint64_t nframe, total;
        if (get_varint(c, &nframe) < 0 || get_varint(c, &total) < 0) {
            return bad_payload(st);
        }
        if (total > UINT32_MAX) {
            return corrupted(st, "traceback total_nframe out of range");
        }
        if (nframe > st->nrefs - st->refs_done) {
            return corrupted(st, "more frame references than declared");
        }
        uint32_t *refs = d->refs + st->refs_done;
        if (width) {
            if (nframe > cur_left(c) / width) {
                return bad_payload(st);
            }
            if (nframe && get_refs(c->p, width, refs, nframe) >= nframes) {
                return corrupted(st, "frame reference out of range");
            }
            c->p += width * nframe;
        }
        else {
            for (uint64_t k = 0; k < nframe; k++) {
                uint64_t f;
                if (get_varint(c, &f) < 0) {
                    return bad_payload(st);
                }
                if (f >= nframes) {
                    return corrupted(st, "frame reference out of range");
                }
                refs[k] = (uint32_t)f;
            }
        }
        ctm_snap_tb *t = &tbs[i];
        t->first = (uint32_t)st->refs_done;
        t->nframe = (uint32_t)nframe;
        /* 0 is None (wraps to UINT32_MAX); else total_nframe + 1 */
        t->total_nframe = (uint32_t)total - 1;
        /* One pass over the frames for both hashes: ctm_snap_tb.hash (32
         * bits) and the key of the duplicate index (its low bits pick
         * the slot, its high half tags it). */
        uint64_t state = ctm_traceback_hash_state(refs, t->nframe,
                                                  t->total_nframe);
        t->hash = ctm_mix32(state);
        keys[i] = mix64(state);
        st->refs_done += nframe;
        d->nrefs = (Py_ssize_t)st->refs_done;
    }
    uint64_t *slots = st->traceback_slots;
    const size_t mask = st->traceback_mask;
    const Py_ssize_t base = d->ntracebacks;
    for (uint64_t i = 0; i < n; i++) {
        if (i + PREFETCH_AHEAD < n) {
            __builtin_prefetch(&slots[keys[i + PREFETCH_AHEAD] & mask], 1);
        }
        const ctm_snap_tb *t = &tbs[i];
        uint64_t hi = keys[i] & ~(uint64_t)UINT32_MAX;
        size_t j = keys[i] & mask;
        uint64_t v;
        while ((v = slots[j]) != 0) {
            const ctm_snap_tb *o = &d->tracebacks[(v & UINT32_MAX) - 1];
            if ((v & ~(uint64_t)UINT32_MAX) == hi
                && o->nframe == t->nframe
                && o->total_nframe == t->total_nframe
                && (t->nframe == 0
                    || memcmp(d->refs + o->first, d->refs + t->first,
                              (size_t)t->nframe * sizeof(uint32_t)) == 0)) {
                return corrupted(st, "duplicate traceback");
            }
            j = (j + 1) & mask;
        }
        slots[j] = hi | (uint64_t)(base + (Py_ssize_t)i + 1);
    }
    d->ntracebacks += (Py_ssize_t)n;
    return section_end(st, c);
}

/* Store a trace. The traces array is written once, and is usually far
 * larger than the caches: on x86-64, non-temporal stores write it
 * without first reading each line from memory, which halves the memory
 * traffic of the load's largest cost (measured: 2.5 ms instead of 6 for
 * 2 million traces). stream: out is 16-byte aligned, as they need. */
static inline void
store_trace(ctm_snap_trace *out, uint64_t size, uint64_t tbdom, int stream)
{
#if defined(__SSE2__) && CTM_STREAM_STORES
    if (stream) {
        _mm_stream_si128((__m128i *)out,
                         _mm_set_epi64x((long long)tbdom, (long long)size));
        return;
    }
#else
    (void)stream;
#endif
    out->size = size;
    out->traceback = (uint32_t)tbdom;
    out->domain = (uint32_t)(tbdom >> 32);
}

static int
parse_traces(loader *st, cursor *c)
{
    ctm_snapdata *d = st->d;
    uint64_t n, nruns;
    if (get_varint(c, &n) < 0 || get_varint(c, &nruns) < 0
        || n > cur_left(c) || nruns > n) {
        return bad_payload(st);
    }
    if (n > st->ntraces - (uint64_t)d->ntraces) {
        return corrupted(st, "more traces than declared");
    }
    if (n == 0) {
        return section_end(st, c);
    }

    /* The runs, checked; nruns <= the bytes of this section. */
    if (nruns > st->runs_cap) {
        run_t *p = ctm_realloc(st->runs, (size_t)nruns * sizeof(run_t));
        if (p == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        st->runs = p;
        st->runs_cap = nruns;
    }
    run_t *runs = st->runs;
    const uint64_t ntb = (uint64_t)d->ntracebacks;
    uint64_t filled = 0;
    int64_t prev_tb = -1;
    uint32_t dom = 0;
    for (uint64_t r = 0; r < nruns; r++) {
        uint64_t h;
        if (get_varint(c, &h) < 0) {
            return bad_payload(st);
        }
        if ((h >> 2) >= n - filled) {
            return corrupted(st, "trace runs longer than the section");
        }
        int64_t tb = prev_tb + 1;
        if (h & 1) {
            uint64_t z;
            if (get_varint(c, &z) < 0) {
                return bad_payload(st);
            }
            int64_t delta = unzigzag(z);
            /* Indexes are below 2**32: a larger delta is out of range,
             * and checking it first keeps the sum from overflowing. */
            if (delta > ((int64_t)1 << 33) || delta < -((int64_t)1 << 33)) {
                return corrupted(st, "trace traceback index out of range");
            }
            tb += delta;
        }
        if (tb < 0 || (uint64_t)tb >= ntb) {
            return corrupted(st, "trace traceback index out of range");
        }
        if (h & 2) {
            uint64_t v;
            if (get_varint(c, &v) < 0) {
                return bad_payload(st);
            }
            if (v > UINT32_MAX) {
                return corrupted(st, "trace domain out of range");
            }
            dom = (uint32_t)v;
        }
        runs[r].count = (h >> 2) + 1;
        runs[r].tbdom = (uint64_t)tb | ((uint64_t)dom << 32);
        filled += runs[r].count;
        prev_tb = tb;
    }
    if (filled != n) {
        return corrupted(st, "trace runs shorter than the section");
    }

    /* The sizes: control bytes, then data, each size stored with its
     * run's traceback and domain. */
    size_t nctrl = (size_t)(n + 3) / 4;
    if (nctrl > cur_left(c)) {
        return bad_payload(st);
    }
    const uint8_t *ctrl = c->p;
    const uint8_t *p = ctrl + nctrl;
    const uint8_t *end = c->end;
    if ((n & 3) && (ctrl[nctrl - 1] >> (2 * (n & 3))) != 0) {
        return corrupted(st, "bad size codes");
    }
    ctm_snap_trace *out = d->traces + d->ntraces;
    const int stream = ((uintptr_t)out & 15) == 0;
    const run_t *run = runs;
    uint64_t run_left = run->count;
    uint64_t tbdom = run->tbdom;
#define NEXT_TRACE(SIZE)                                                \
    do {                                                                \
        if (run_left == 0) {                                            \
            run++;                                                      \
            run_left = run->count;                                      \
            tbdom = run->tbdom;                                         \
        }                                                               \
        store_trace(out++, (SIZE), tbdom, stream);                      \
        run_left--;                                                     \
    } while (0)
    uint64_t i = 0;
    /* Four sizes per control byte, without a branch on their lengths
     * (which mix unpredictably), while a group of at most 32 bytes and
     * its 8-byte loads stay inside the payload. */
    for (size_t g = 0; g < (size_t)(n / 4) && end - p >= 32; g++) {
        unsigned cb = ctrl[g];
        unsigned c0 = cb & 3, c1 = (cb >> 2) & 3;
        unsigned c2 = (cb >> 4) & 3, c3 = cb >> 6;
        uint64_t s0 = load64le(p) & size_mask[c0];
        p += size_len[c0];
        uint64_t s1 = load64le(p) & size_mask[c1];
        p += size_len[c1];
        uint64_t s2 = load64le(p) & size_mask[c2];
        p += size_len[c2];
        uint64_t s3 = load64le(p) & size_mask[c3];
        p += size_len[c3];
        NEXT_TRACE(s0);
        NEXT_TRACE(s1);
        NEXT_TRACE(s2);
        NEXT_TRACE(s3);
        i += 4;
    }
    int rc = 0;
    for (; i < n; i++) {
        unsigned code = (ctrl[i >> 2] >> (2 * (i & 3))) & 3;
        size_t len = size_len[code];
        if ((size_t)(end - p) < len) {
            rc = -1;
            break;
        }
        uint64_t v = 0;
        for (size_t b = 0; b < len; b++) {
            v |= (uint64_t)p[b] << (8 * b);
        }
        p += len;
        NEXT_TRACE(v);
    }
#undef NEXT_TRACE
#if defined(__SSE2__) && CTM_STREAM_STORES
    _mm_sfence();
#endif
    if (rc < 0) {
        return bad_payload(st);
    }
    c->p = p;
    d->ntraces += (Py_ssize_t)n;
    return section_end(st, c);
}

/* pickle.loads of a payload, or an error saying which part failed. */
static PyObject *
unpickle(loader *st, const uint8_t *p, size_t n)
{
#ifdef FUZZING_BUILD_MODE_UNSAFE_FOR_PRODUCTION
    (void)st;
    (void)p;
    (void)n;
    return PyDict_New();
#else
    PyObject *bytes = PyBytes_FromStringAndSize((const char *)p,
                                                (Py_ssize_t)n);
    if (bytes == NULL) {
        return NULL;
    }
    PyObject *pickle = PyImport_ImportModule("pickle");
    PyObject *obj = NULL;
    if (pickle != NULL) {
        obj = PyObject_CallMethod(pickle, "loads", "O", bytes);
        Py_DECREF(pickle);
    }
    Py_DECREF(bytes);
    if (obj == NULL && !PyErr_ExceptionMatches(PyExc_MemoryError)
        && PyErr_ExceptionMatches(PyExc_Exception)) {
        /* The check matched, so the pickle is what was written: it may
         * name a class this process cannot import. Say which part of
         * the file failed, with pickle's error as the cause. */
        PyObject *type, *value, *tb;
        PyErr_Fetch(&type, &value, &tb);
        PyErr_NormalizeException(&type, &value, &tb);
        if (tb != NULL && value != NULL) {
            PyException_SetTraceback(value, tb);
        }
        PyErr_Format(PyExc_ValueError,
                     "snapshot file: cannot unpickle the %s section "
                     "(offset %llu)", st->section_name,
                     (unsigned long long)st->section_offset);
        PyObject *type2, *value2, *tb2;
        PyErr_Fetch(&type2, &value2, &tb2);
        PyErr_NormalizeException(&type2, &value2, &tb2);
        if (value2 != NULL && value != NULL) {
            Py_INCREF(value);
            PyException_SetCause(value2, value);
            Py_INCREF(value);
            PyException_SetContext(value2, value);
        }
        Py_XDECREF(type);
        Py_XDECREF(value);
        Py_XDECREF(tb);
        PyErr_Restore(type2, value2, tb2);
    }
    return obj;
#endif
}

static int
parse_limit(loader *st, cursor *c)
{
    if (cur_left(c) < 1) {
        return bad_payload(st);
    }
    uint8_t kind = *c->p++;
    if (kind == LIMIT_NONE) {
        st->limit = Py_NewRef(Py_None);
    }
    else if (kind == LIMIT_INT) {
        uint64_t z;
        if (get_varint(c, &z) < 0) {
            return bad_payload(st);
        }
        st->limit = PyLong_FromLongLong(unzigzag(z));
        if (st->limit == NULL) {
            return -1;
        }
    }
    else if (kind == LIMIT_PICKLE) {
        st->limit = unpickle(st, c->p, cur_left(c));
        if (st->limit == NULL) {
            return -1;
        }
        c->p = c->end;
    }
    else {
        return corrupted(st, "unknown kind of traceback limit");
    }
    return section_end(st, c);
}

static int
parse_extra(loader *st, cursor *c)
{
    st->extra = unpickle(st, c->p, cur_left(c));
    if (st->extra == NULL) {
        return -1;
    }
    c->p = c->end;
    if (!PyDict_Check(st->extra)) {
        return corrupted(st, "the snapshot attributes are not a dict");
    }
    return 0;
}

static const char *
section_name(unsigned tag)
{
    switch (tag) {
    case TAG_END: return "END";
    case TAG_COUNTS: return "COUNTS";
    case TAG_STRINGS: return "STRINGS";
    case TAG_FRAMES: return "FRAMES";
    case TAG_TRACEBACKS: return "TRACEBACKS";
    case TAG_TRACES: return "TRACES";
    case TAG_LIMIT: return "LIMIT";
    case TAG_EXTRA: return "EXTRA";
    default: return "unknown";
    }
}

/* Position of each known tag in the section order. */
static int
tag_rank(unsigned tag)
{
    return tag == TAG_END ? TAG_KNOWN : (int)tag;
}

/* Entering a section of rank `rank`: every repeatable group before it
 * must be complete, since the items of later groups refer to it. */
static int
check_complete(loader *st, int rank)
{
    const ctm_snapdata *d = st->d;
    if (rank > TAG_STRINGS && (uint64_t)d->nstrings != st->nstrings) {
        return corrupted(st, "fewer strings than declared");
    }
    if (rank > TAG_FRAMES && (uint64_t)d->nframes != st->nframes) {
        return corrupted(st, "fewer frames than declared");
    }
    if (rank > TAG_TRACEBACKS
        && (uint64_t)d->ntracebacks != st->ntracebacks) {
        return corrupted(st, "fewer tracebacks than declared");
    }
    if (rank > TAG_TRACEBACKS && st->refs_done != st->nrefs) {
        return corrupted(st, "fewer frame references than declared");
    }
    if (rank > TAG_TRACES && (uint64_t)d->ntraces != st->ntraces) {
        return corrupted(st, "fewer traces than declared");
    }
    if (rank > TAG_LIMIT && st->limit == NULL) {
        return corrupted(st, "no traceback limit section");
    }
    return 0;
}

/* Check order and multiplicity of a known section. */
static int
check_order(loader *st, unsigned tag)
{
    int rank = tag_rank(tag);
    if (!st->have_counts) {
        if (tag != TAG_COUNTS) {
            return corrupted(st, "the COUNTS section must come first");
        }
        st->rank = rank;
        return 0;
    }
    if (rank < st->rank) {
        return corrupted(st, "section out of order");
    }
    int repeatable = tag >= TAG_STRINGS && tag <= TAG_TRACES;
    if (rank == st->rank && !repeatable) {
        return corrupted(st, "section repeated");
    }
    if (rank > st->rank && check_complete(st, rank) < 0) {
        return -1;
    }
    st->rank = rank;
    return 0;
}

static int
read_header(loader *st)
{
    reader *r = st->r;
    int rc = rd_fill(r, FF_HEADER_SIZE);
    if (rc < 0) {
        return -1;
    }
    size_t have = r->len - r->pos;
    if (have > FF_HEADER_SIZE) {
        have = FF_HEADER_SIZE;
    }
    const uint8_t *h = r->data + r->pos;
    size_t cmp = have < 8 ? have : 8;
    if (have == 0) {
        PyErr_SetString(PyExc_ValueError,
                        "not a ctracemalloc snapshot file: the file is "
                        "empty");
        return -1;
    }
    if (memcmp(h, ff_magic, cmp) != 0) {
        PyErr_SetString(PyExc_ValueError,
                        "not a ctracemalloc snapshot file");
        return -1;
    }
    if (have < FF_HEADER_SIZE) {
        return truncated(r, "header");
    }
    unsigned major = h[8] | (unsigned)h[9] << 8;
    unsigned minor = h[10] | (unsigned)h[11] << 8;
    if (major < FF_MAJOR_OLDEST || major > FF_MAJOR) {
        PyErr_Format(PyExc_ValueError,
                     "unsupported snapshot format version %u.%u (this "
                     "ctracemalloc reads versions %d.x to %d.x%s)",
                     major, minor, FF_MAJOR_OLDEST, FF_MAJOR,
                     major > FF_MAJOR ? ": it needs a newer ctracemalloc"
                                      : "");
        return -1;
    }
    st->major = major;
    st->strict = minor <= FF_MINOR;
    xxh64_update(&r->hash, h, FF_HEADER_SIZE);
    r->pos += FF_HEADER_SIZE;
    r->offset += FF_HEADER_SIZE;
    return 0;
}

/* Read one section, verify its check and parse it. *tag receives its
 * tag. */
static int
read_section(loader *st, unsigned *tag)
{
    reader *r = st->r;
    const uint8_t *p;
    st->section_offset = r->offset;
    st->section_name = "section";
    if (rd_take(r, 1, &p, "section header") < 0) {
        return -1;
    }
    *tag = p[0];
    xxh64_update(&r->hash, p, 1);
    st->section_name = section_name(*tag);

    uint64_t plen = 0;
    for (int shift = 0;; shift += 7) {
        if (rd_take(r, 1, &p, "section header") < 0) {
            return -1;
        }
        xxh64_update(&r->hash, p, 1);
        if (shift == 63 && p[0] > 1) {
            return corrupted(st, "bad section length");
        }
        plen |= (uint64_t)(p[0] & 0x7f) << shift;
        if (!(p[0] & 0x80)) {
            break;
        }
    }
    /* A length beyond the end of the file is refused before anything is
     * read or allocated for it. */
    if (r->offset > r->size || r->size - r->offset < FF_CHECK_SIZE
        || plen > r->size - r->offset - FF_CHECK_SIZE) {
        uint64_t left = r->offset < r->size ? r->size - r->offset : 0;
        PyErr_Format(PyExc_ValueError,
                     "truncated snapshot file: the %s section at offset "
                     "%llu needs %llu more bytes, the file has %llu",
                     st->section_name,
                     (unsigned long long)st->section_offset,
                     (unsigned long long)plen + FF_CHECK_SIZE,
                     (unsigned long long)left);
        return -1;
    }
    /* Payload and check in one take: the payload pointer stays valid. */
    if (rd_take(r, (size_t)plen + FF_CHECK_SIZE, &p, "section") < 0) {
        return -1;
    }
    xxh64_update(&r->hash, p, (size_t)plen);
    uint64_t expected = xxh64_digest(&r->hash);
    uint64_t found = load64le(p + plen);
#ifndef FUZZING_BUILD_MODE_UNSAFE_FOR_PRODUCTION
    if (expected != found) {
        return corrupted(st, "checksum mismatch");
    }
#else
    (void)expected;
    (void)found;
#endif
    xxh64_update(&r->hash, p + plen, FF_CHECK_SIZE);

    cursor c = {p, p + plen};
    if (*tag >= TAG_KNOWN) {
        if (st->strict) {
            return corrupted(st, "unknown section");
        }
        /* A section of a newer minor version: checked, then skipped. */
        return 0;
    }
    if (check_order(st, *tag) < 0) {
        return -1;
    }
    switch (*tag) {
    case TAG_COUNTS:
        return parse_counts(st, &c);
    case TAG_STRINGS:
        return parse_strings(st, &c);
    case TAG_FRAMES:
        return parse_frames(st, &c);
    case TAG_TRACEBACKS:
        return parse_tracebacks(st, &c);
    case TAG_TRACES:
        return parse_traces(st, &c);
    case TAG_LIMIT:
        return parse_limit(st, &c);
    case TAG_EXTRA:
        return parse_extra(st, &c);
    default:                    /* TAG_END */
        return section_end(st, &c);
    }
}

/* The stdlib's pickle, read whole. (Not mapped: a file that another
 * process truncates while it is read would kill this one with SIGBUS.) */
static ctm_snapdata *
load_pickle(reader *r, PyObject **limit, PyObject **extra,
            ctm_progress *progress)
{
    if (rd_fill(r, SIZE_MAX) < 0) {
        return NULL;
    }
    return ctm_stdpickle_load(r->data + r->pos, r->len - r->pos, limit,
                              extra, progress);
}

static ctm_snapdata *
load(reader *r, PyObject **limit, PyObject **extra)
{
    ctm_snapdata *d = NULL;
    int rc;
    loader st;
    memset(&st, 0, sizeof(st));
    st.r = r;
    st.section_name = "header";
    xxh64_init(&r->hash);
    *limit = NULL;
    *extra = NULL;

    /* A pickle (its PROTO opcode, where our magic has 0x89): the
     * stdlib's format, read whole. */
    rc = rd_fill(r, 1);
    if (rc < 0) {
        goto error;
    }
    if (rc == 0 && r->data[r->pos] == 0x80) {
        /* the parse takes longer than the read: report the parse */
        ctm_progress progress = r->progress;
        r->progress.callable = NULL;
        d = load_pickle(r, limit, extra, &progress);
        goto done;
    }
    if (read_header(&st) < 0) {
        goto error;
    }
    for (;;) {
        unsigned tag;
        if (read_section(&st, &tag) < 0) {
            goto error;
        }
        if (tag == TAG_END) {
            break;
        }
    }
    rc = rd_fill(r, 1);
    if (rc < 0) {
        goto error;
    }
    if (rc == 0) {
        PyErr_Format(PyExc_ValueError,
                     "corrupted snapshot file: unexpected data after the "
                     "end (offset %llu)", (unsigned long long)r->offset);
        goto error;
    }
    d = st.d;
    st.d = NULL;
    *limit = st.limit;
    *extra = st.extra;
    st.limit = NULL;
    st.extra = NULL;
    goto done;

error:
    d = NULL;
done:
    ctm_snapdata_free(st.d);
    ctm_free(st.string_slots);
    ctm_free(st.frame_slots);
    ctm_free(st.traceback_slots);
    ctm_free(st.runs);
    ctm_free(st.keys);
    Py_XDECREF(st.limit);
    Py_XDECREF(st.extra);
    return d;
}

ctm_snapdata *
ctm_load_bytes(const char *buf, Py_ssize_t len, PyObject **limit,
               PyObject **extra)
{
    reader r;
    memset(&r, 0, sizeof(r));
    r.fd = -1;
    r.data = (const uint8_t *)buf;
    r.len = len > 0 ? (size_t)len : 0;
    r.size = r.len;
    return load(&r, limit, extra);
}

ctm_snapdata *
ctm_load(PyObject *path, PyObject **limit, PyObject **extra,
         PyObject *progress)
{
    ctm_snapdata *d = NULL;
    PyObject *fspath = NULL;
    reader r;
    memset(&r, 0, sizeof(r));
    *limit = NULL;
    *extra = NULL;

    int fd = ctm_open_path(path, O_RDONLY, &fspath);
    if (fd < 0) {
        return NULL;
    }
    r.fd = fd;
    r.path = fspath;
    struct stat stbuf;
    int ok;
    Py_BEGIN_ALLOW_THREADS
    ok = fstat(fd, &stbuf) == 0;
    Py_END_ALLOW_THREADS
    if (ok && S_ISREG(stbuf.st_mode) && stbuf.st_size >= 0) {
        r.size = (uint64_t)stbuf.st_size;
        r.progress.callable = progress;
        r.progress.total = r.size;
    }
    else {
        /* A pipe or a device has no size to check counts against: read
         * it whole (the buffer grows only with the bytes that arrive),
         * then parse it from memory. */
        int rc = rd_fill(&r, SIZE_MAX);
        if (rc < 0) {
            close(fd);
            goto done;
        }
        r.size = r.len;
    }
    d = load(&r, limit, extra);
    if (d == NULL) {
        /* Already failing: keep that error. */
        close(fd);
    }
    else if (ctm_close_fd(fd, fspath) < 0) {
        ctm_snapdata_free(d);
        Py_CLEAR(*limit);
        Py_CLEAR(*extra);
        d = NULL;
    }

done:
    ctm_free(r.buf);
    Py_DECREF(fspath);
    return d;
}
