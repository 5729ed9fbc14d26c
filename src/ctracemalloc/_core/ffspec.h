/* Our snapshot file format, defined: the file that Snapshot.dump writes
 * and Snapshot.load reads (and pickling a Snapshot holds), its constants
 * and the rules of its versions. ffwrite.c writes it, ffread.c and
 * ffitems.c read it; the layout below is the contract between them and
 * with any other reader.
 *
 * Goals: dump and load much faster than the stdlib's pickle, a file a
 * fraction of the pickle's size, a loader that streams the file and
 * never allocates more than the bytes it has seen justify, and that
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
 *     major   u16 LE    2 (3 for a sampled snapshot, see below)
 *     minor   u16 LE    1 (0 for a sampled snapshot)
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
 * Sections of version 2.1, in this order (* may repeat):
 *
 *   1 COUNTS      once, first: varints nstrings, nframes, ntracebacks,
 *                 nrefs (the sum of the tracebacks' nframe), ntraces.
 *   9 SAMPLING    (3.0) at most once, right after COUNTS, only in a
 *                 sampled snapshot's file: varint interval, the mean
 *                 sampling interval in bytes (start(sample_interval=)),
 *                 not 0. The traces' sizes are still the blocks' true
 *                 sizes; the reader computes the estimates from them
 *                 and the interval, as the snapshot does (sampling.h).
 *                 Without it, a snapshot is exact.
 *   2 STRINGS*    varint n, then n strings: varint byte length, then the
 *                 bytes, UTF-8 with surrogatepass so that any str
 *                 (lone surrogates included) round-trips.
 *   3 FRAMES*     varint n, then n frames: varint filename (index of a
 *                 string), zigzag lineno (fits int32).
 *   8 FUNCTIONS*  (2.1) after the FRAMES, none if no frame has a name:
 *                 the function names of frames. varint n, then n
 *                 entries: varint gap, varint name (index of a string).
 *                 The entry names frame previous + 1 + gap, where
 *                 previous is the frame of the entry before it, in this
 *                 section or an earlier one (-1 for the first of the
 *                 file): frames are named in increasing order, each at
 *                 most once, and a frame without an entry has no name
 *                 (Frame.function None).
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
 * Version 3.0 is 2.1 with the SAMPLING section; the writer writes it
 * for sampled snapshots only, and writes an exact snapshot as 2.1, so
 * that the files of exact snapshots stay what 2.1 writers made, byte
 * for byte. A new major version rather than 2.2, because a reader of
 * 2.x would skip an unknown section of a newer minor version and take
 * the samples for every block (sizes and counts far too small): a
 * reader that knows no SAMPLING must refuse the file, and one of 2.x
 * says it needs a newer ctracemalloc.
 *
 * Version 2.0 has no FUNCTIONS section (tag 8 is unknown to it): its
 * frames have no name.
 *
 * Version 1.0 differs from 2.0 in one place: a TRACEBACKS section has
 * no width, and its frame references are varints. Fixed-width
 * references take a little more room (two bytes where a varint of a
 * reference below a few thousand takes one or two), and are read
 * without a branch on their length, which would mix one and two bytes
 * at random and so mispredict; they are most of the bytes of a file of
 * deep tracebacks. The reader reads all three versions.
 *
 * Why this encoding: a trace costs its size (1 to 3 bytes for most
 * sizes) and a quarter byte of length code, as take_snapshot emits
 * traces grouped by traceback, so runs are long; the stdlib's pickle
 * spends a tuple of opcodes on each trace. Sizes are the bulk of the
 * file and their lengths mix unpredictably: with length codes apart from
 * the data (as in Stream VByte), both sides handle them without a branch
 * on the length, which LEB128 varints would need for each. Every item
 * takes at least one byte in the file and at most a few dozen bytes of
 * memory once loaded (strings: their length plus the str object), so
 * the memory a file can make the loader allocate is linear in its size.
 *
 * The stdlib's format: a file that starts with 0x80 (a pickle's PROTO
 * opcode; the magic above starts with 0x89) is the stdlib's pickle,
 * which pklread.c reads (load.c tells the two apart).
 *
 * Reading another version: a major version other than 1 and 2 is
 * refused ("unsupported snapshot format version 3.0"). A newer minor
 * version of the same major only adds: the reader skips (after checking
 * them) sections whose tag it does not know, and ignores bytes after the
 * fields it knows at the end of a known section. In a file of the
 * reader's own minor version or an older one (2.1 for 2.x, 3.0 for
 * 3.x), both are errors.
 *
 * Trust: LIMIT kind 2 and EXTRA are unpickled, and unpickling runs code
 * named by the file: as with the stdlib's pickle-based Snapshot.load,
 * load only files from a trusted source. A file without them (the usual
 * case: an int or None limit and no user attribute) never reaches
 * pickle.
 */
#ifndef CTM_FFSPEC_H
#define CTM_FFSPEC_H

#include <stdint.h>

#define FF_MAJOR 3               /* the newest this reader reads */
#define FF_MINOR 0
#define FF_MAJOR_OLDEST 1       /* the oldest this reader reads */
#define FF_EXACT_MAJOR 2        /* the version of exact snapshots' files */
#define FF_EXACT_MINOR 1
#define FF_HEADER_SIZE 12
#define FF_CHECK_SIZE 8
#define FF_PICKLE_PROTOCOL 4     /* of LIMIT kind 2 and EXTRA */

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
    TAG_FUNCTIONS = 8,          /* from 2.1; between FRAMES and TRACEBACKS */
    TAG_SAMPLING = 9,           /* from 3.0; right after COUNTS */
    TAG_KNOWN = 10              /* first tag this version does not know */
};

enum {
    LIMIT_NONE = 0,
    LIMIT_INT = 1,
    LIMIT_PICKLE = 2
};

/* The writer flushes a repeatable section once its items reach this
 * size; the reader's buffer holds a few of them. */
#define BLOCK_TARGET (64 * 1024)
/* Traces per TRACES section (a multiple of 4). */
#define TRACES_PER_SECTION 16384

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

#endif /* CTM_FFSPEC_H */
