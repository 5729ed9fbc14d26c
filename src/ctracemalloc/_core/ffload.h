/* The state of a load of our format, shared by its reader's two files:
 * ffread.c (the file's framing: header, sections, their checks and
 * order, LIMIT and EXTRA) and ffitems.c below it (the sections of items,
 * into the snapshot's arrays). Nothing else includes this.
 */
#ifndef CTM_FFLOAD_H
#define CTM_FFLOAD_H

#include "formats.h"
#include "codec.h"

/* One run of a TRACES section, decoded. */
typedef struct {
    uint64_t count;
    uint64_t tbdom;             /* traceback | domain << 32 */
} ctm_ffrun;

/* The loader's state, which ffread.c owns (it frames the sections) and
 * ffitems.c fills (the item sections). The snapshot's arrays are
 * allocated once, at their exact sizes, from the counts of COUNTS
 * (checked against the bytes left first); each item is checked as it is
 * stored. */
typedef struct {
    ctm_input *r;
    ctm_xxh64_state hash;       /* of the file so far */
    unsigned major;             /* of the file */
    int strict;                 /* file minor <= ours (of its major) */
    int has_functions;          /* the file's version knows FUNCTIONS */
    int has_sampling;           /* ... and SAMPLING */
    uint64_t section_offset;
    const char *section_name;
    int rank;                   /* of the last known section */
    int have_counts;
    uint64_t nstrings, nframes, ntracebacks, nrefs, ntraces;  /* declared */
    uint64_t refs_done;
    int64_t named;              /* the last frame a FUNCTIONS entry named,
                                   or -1 */
    ctm_snapdata *d;            /* counts are those stored so far */
    /* Duplicate detection: open addressing, power-of-two capacity, at
     * most half full, 0 for an empty slot, each index sized once from
     * the counts (it never grows). The strings' is a ctm_index of their
     * indexes. A frame slot holds the frame itself (filename << 32 |
     * lineno, + 1); a traceback slot the high half of its key (see
     * parse_tracebacks) | (index + 1). The slots of frames and
     * tracebacks hold enough to tell most items apart without reading
     * the arrays, where each random read of hundreds of thousands of
     * items is a cache miss. */
    ctm_index strings_ix;
    /* Not ctm_index: 64-bit slots (keys, not bare indexes), prefetched. */
    uint64_t *frame_slots, *traceback_slots;
    size_t frame_mask, traceback_mask;
    ctm_ffrun *runs;                /* of one TRACES section */
    size_t runs_cap;
    uint64_t *keys;             /* of one TRACEBACKS section */
    size_t keys_cap;
    PyObject *limit;
    PyObject *extra;
} ctm_ffloader;

/* ffitems.c */

/* ValueError "corrupted snapshot file: what", naming the section and its
 * offset. Return -1. */
int ctm_ff_corrupted(const ctm_ffloader *st, const char *what);
/* The same for a payload too short or malformed to parse. */
int ctm_ff_bad_payload(const ctm_ffloader *st);
/* The end of a known section's fields: the rest must be empty, except
 * in a file of a newer minor version, which may add fields. Return 0 or
 * -1. */
int ctm_ff_section_end(const ctm_ffloader *st, const cursor *c);
/* Parse a verified payload of each section of items into st->d. Return
 * 0 or -1. */
int ctm_ff_parse_counts(ctm_ffloader *st, cursor *c);
int ctm_ff_parse_strings(ctm_ffloader *st, cursor *c);
int ctm_ff_parse_frames(ctm_ffloader *st, cursor *c);
int ctm_ff_parse_functions(ctm_ffloader *st, cursor *c);
int ctm_ff_parse_tracebacks(ctm_ffloader *st, cursor *c);
int ctm_ff_parse_traces(ctm_ffloader *st, cursor *c);
/* Release what st holds (its snapshot data, indexes, scratch arrays,
 * limit and extra); st may then be dropped. */
void ctm_ff_release(ctm_ffloader *st);

#endif /* CTM_FFLOAD_H */
