/* Our snapshot format's reader: ctm_ffread parses the layout of
 * ffspec.h from an input (fileio.c) into snapshot data, checking every
 * byte before it trusts it. This file frames the file (header, each
 * section's length and check, the sections' order and multiplicity) and
 * parses LIMIT and EXTRA; ffitems.c parses the sections of items.
 *
 * What load checks: magic, version, every check, section order and
 * multiplicity; the counts of COUNTS against the bytes actually left
 * before the arrays are allocated from them; every index in range
 * (frame filename < nstrings, frame references < nframes, trace
 * traceback < ntracebacks, function names' frames and strings); no
 * duplicate string, frame or traceback (a hash index of each, sized
 * from the counts and dropped once loaded);
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
 * returns, the duplicate indexes (8 to 16 bytes per string, 16 to 32 per
 * frame and traceback). A pipe, whose size cannot be known in advance,
 * is read whole first.
 *
 * Fuzzing: built with FUZZING_BUILD_MODE_UNSAFE_FOR_PRODUCTION, the
 * reader ignores check mismatches, so that a fuzzer reaches the parser,
 * and does not unpickle (a fuzzer must not run arbitrary pickles).
 */
#include "ffload.h"
#include "ffspec.h"

#include <string.h>

static int
truncated(const ctm_input *r, const char *where)
{
    PyErr_Format(PyExc_ValueError,
                 "truncated snapshot file: it ends inside the %s "
                 "(offset %llu)", where, (unsigned long long)r->offset);
    return -1;
}

/* Take the next n bytes: *out points to them until the next take. */
static int
rd_take(ctm_input *r, size_t n, const uint8_t **out, const char *where)
{
    int rc = ctm_input_fill(r, n);
    if (rc != 0) {
        return rc < 0 ? -1 : truncated(r, where);
    }
    *out = r->data + r->pos;
    r->pos += n;
    r->offset += n;
    return 0;
}


/* pickle.loads of a payload, or an error saying which part failed. */
static PyObject *
unpickle(ctm_ffloader *st, const uint8_t *p, size_t n)
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
parse_limit(ctm_ffloader *st, cursor *c)
{
    if (cur_left(c) < 1) {
        return ctm_ff_bad_payload(st);
    }
    uint8_t kind = *c->p++;
    if (kind == LIMIT_NONE) {
        st->limit = Py_NewRef(Py_None);
    }
    else if (kind == LIMIT_INT) {
        uint64_t z;
        if (get_varint(c, &z) < 0) {
            return ctm_ff_bad_payload(st);
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
        return ctm_ff_corrupted(st, "unknown kind of traceback limit");
    }
    return ctm_ff_section_end(st, c);
}

static int
parse_extra(ctm_ffloader *st, cursor *c)
{
    st->extra = unpickle(st, c->p, cur_left(c));
    if (st->extra == NULL) {
        return -1;
    }
    c->p = c->end;
    if (!PyDict_Check(st->extra)) {
        return ctm_ff_corrupted(st, "the snapshot attributes are not a dict");
    }
    return 0;
}

/* SAMPLING: the interval of a sampled snapshot, which 0 is not (an
 * exact snapshot has no such section). */
static int
parse_sampling(ctm_ffloader *st, cursor *c)
{
    uint64_t interval;
    if (get_varint(c, &interval) < 0) {
        return ctm_ff_bad_payload(st);
    }
    if (interval == 0) {
        return ctm_ff_corrupted(st, "sampling interval of 0");
    }
    st->d->sample_interval = interval;
    return ctm_ff_section_end(st, c);
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
    case TAG_FUNCTIONS: return "FUNCTIONS";
    case TAG_SAMPLING: return "SAMPLING";
    default: return "unknown";
    }
}

/* Position of each known tag in the section order: the tags of 2.0 in
 * the order of their numbers, END last, FUNCTIONS between FRAMES and
 * TRACEBACKS, SAMPLING right after COUNTS. */
#define RANK(tag) (2 * (int)(tag))

static int
tag_rank(unsigned tag)
{
    switch (tag) {
    case TAG_END: return RANK(TAG_KNOWN);
    case TAG_FUNCTIONS: return RANK(TAG_FRAMES) + 1;
    case TAG_SAMPLING: return RANK(TAG_COUNTS) + 1;
    default: return RANK(tag);
    }
}

/* Entering a section of rank `rank`: every repeatable group before it
 * must be complete, since the items of later groups refer to it. */
static int
check_complete(ctm_ffloader *st, int rank)
{
    const ctm_snapdata *d = st->d;
    if (rank > RANK(TAG_STRINGS)
        && (uint64_t)d->nstrings != st->nstrings) {
        return ctm_ff_corrupted(st, "fewer strings than declared");
    }
    if (rank > RANK(TAG_FRAMES) && (uint64_t)d->nframes != st->nframes) {
        return ctm_ff_corrupted(st, "fewer frames than declared");
    }
    if (rank > RANK(TAG_TRACEBACKS)
        && (uint64_t)d->ntracebacks != st->ntracebacks) {
        return ctm_ff_corrupted(st, "fewer tracebacks than declared");
    }
    if (rank > RANK(TAG_TRACEBACKS) && st->refs_done != st->nrefs) {
        return ctm_ff_corrupted(st, "fewer frame references than declared");
    }
    if (rank > RANK(TAG_TRACES) && (uint64_t)d->ntraces != st->ntraces) {
        return ctm_ff_corrupted(st, "fewer traces than declared");
    }
    if (rank > RANK(TAG_LIMIT) && st->limit == NULL) {
        return ctm_ff_corrupted(st, "no traceback limit section");
    }
    return 0;
}

/* Check order and multiplicity of a known section. */
static int
check_order(ctm_ffloader *st, unsigned tag)
{
    int rank = tag_rank(tag);
    if (!st->have_counts) {
        if (tag != TAG_COUNTS) {
            return ctm_ff_corrupted(st, "the COUNTS section must come first");
        }
        st->rank = rank;
        return 0;
    }
    if (rank < st->rank) {
        return ctm_ff_corrupted(st, "section out of order");
    }
    int repeatable = (tag >= TAG_STRINGS && tag <= TAG_TRACES)
                     || tag == TAG_FUNCTIONS;
    if (rank == st->rank && !repeatable) {
        return ctm_ff_corrupted(st, "section repeated");
    }
    if (rank > st->rank && check_complete(st, rank) < 0) {
        return -1;
    }
    st->rank = rank;
    return 0;
}

static int
read_header(ctm_ffloader *st)
{
    ctm_input *r = st->r;
    int rc = ctm_input_fill(r, FF_HEADER_SIZE);
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
    st->strict = minor <= (major == FF_MAJOR ? FF_MINOR : FF_EXACT_MINOR);
    st->has_functions = major > 2 || (major == 2 && minor >= 1);
    st->has_sampling = major >= 3;
    ctm_xxh64_update(&st->hash, h, FF_HEADER_SIZE);
    r->pos += FF_HEADER_SIZE;
    r->offset += FF_HEADER_SIZE;
    return 0;
}

/* Read one section, verify its check and parse it. *tag receives its
 * tag. */
static int
read_section(ctm_ffloader *st, unsigned *tag)
{
    ctm_input *r = st->r;
    const uint8_t *p;
    st->section_offset = r->offset;
    st->section_name = "section";
    if (rd_take(r, 1, &p, "section header") < 0) {
        return -1;
    }
    *tag = p[0];
    ctm_xxh64_update(&st->hash, p, 1);
    st->section_name = section_name(*tag);

    uint64_t plen = 0;
    for (int shift = 0;; shift += 7) {
        if (rd_take(r, 1, &p, "section header") < 0) {
            return -1;
        }
        ctm_xxh64_update(&st->hash, p, 1);
        if (shift == 63 && p[0] > 1) {
            return ctm_ff_corrupted(st, "bad section length");
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
    ctm_xxh64_update(&st->hash, p, (size_t)plen);
    uint64_t expected = ctm_xxh64_digest(&st->hash);
    uint64_t found = load64le(p + plen);
#ifndef FUZZING_BUILD_MODE_UNSAFE_FOR_PRODUCTION
    if (expected != found) {
        return ctm_ff_corrupted(st, "checksum mismatch");
    }
#else
    (void)expected;
    (void)found;
#endif
    ctm_xxh64_update(&st->hash, p + plen, FF_CHECK_SIZE);

    cursor c = {p, p + plen};
    if (*tag >= TAG_KNOWN
        || (*tag == TAG_FUNCTIONS && !st->has_functions)
        || (*tag == TAG_SAMPLING && !st->has_sampling)) {
        if (st->strict) {
            return ctm_ff_corrupted(st, "unknown section");
        }
        /* A section of a newer minor version: checked, then skipped. */
        return 0;
    }
    if (check_order(st, *tag) < 0) {
        return -1;
    }
    switch (*tag) {
    case TAG_COUNTS:
        return ctm_ff_parse_counts(st, &c);
    case TAG_STRINGS:
        return ctm_ff_parse_strings(st, &c);
    case TAG_FRAMES:
        return ctm_ff_parse_frames(st, &c);
    case TAG_FUNCTIONS:
        return ctm_ff_parse_functions(st, &c);
    case TAG_SAMPLING:
        return parse_sampling(st, &c);
    case TAG_TRACEBACKS:
        return ctm_ff_parse_tracebacks(st, &c);
    case TAG_TRACES:
        return ctm_ff_parse_traces(st, &c);
    case TAG_LIMIT:
        return parse_limit(st, &c);
    case TAG_EXTRA:
        return parse_extra(st, &c);
    default:                    /* TAG_END */
        return ctm_ff_section_end(st, &c);
    }
}

ctm_snapdata *
ctm_ffread(ctm_input *r, PyObject **limit, PyObject **extra)
{
    ctm_snapdata *d = NULL;
    int rc;
    ctm_ffloader st;
    memset(&st, 0, sizeof(st));
    st.r = r;
    st.named = -1;
    st.section_name = "header";
    ctm_xxh64_init(&st.hash);
    *limit = NULL;
    *extra = NULL;

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
    rc = ctm_input_fill(r, 1);
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
    ctm_ff_release(&st);
    return d;
}
