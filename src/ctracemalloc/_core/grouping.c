/* The grouping engine: statistics, compare_to and _group_by over snapshot
 * data, as C rows (snapshot.h); the Snapshot type makes the Python
 * objects of the result from them.
 *
 * It runs over the arrays, never over Python objects (but the snapshots'
 * strings, which it hashes and compares), in four steps:
 *
 *  1. sum size and count per traceback index (one pass over the traces,
 *     the only per-trace work);
 *  2. fold tracebacks into groups: by frame index ('lineno'; frames are
 *     unique by value so index equality is value equality), by string
 *     index ('filename'), or by frame sequence ('traceback': two
 *     tracebacks may differ only in total_nframe, which the key
 *     ignores, so they are merged through an index of sequences);
 *     cumulative mode adds a traceback's sums once per frame occurrence;
 *  3. compare_to joins the old snapshot's groups to the new one's by
 *     value, translating old string and frame indexes into new ones
 *     through indexes over the new snapshot's strings and frames;
 *  4. sort with the stdlib's key (size, count, traceback) or (|size
 *     diff|, size, |count diff|, count, traceback), descending. The
 *     traceback comparison is the stdlib's tuple comparison of frames
 *     oldest first by (filename, lineno): the strings used by the result
 *     are ranked once by str order (over both snapshots, so that equal
 *     strings rank equal), a frame becomes the 64-bit key (rank,
 *     lineno), and a traceback key is a rank among the result's frame
 *     sequences. Every sort key is then an integer; as no two rows have
 *     equal tracebacks, the order is total and equals the stdlib's.
 *
 * Words: a group is the set of tracebacks with one key; the groups of a
 * snapshot are a ctm_groups; the translation maps one snapshot's string
 * and frame indexes to another's, each entry found on first use.
 *
 * Sums are uint64 and differences int64; an overflow raises OverflowError
 * rather than giving a wrong result.
 */
#include "snapshot.h"

#include <string.h>

#define NO_GROUP UINT32_MAX

typedef ctm_tb_sums sums_t;

typedef struct {
    sums_t sum;
    uint32_t key;               /* see ctm_group_row.key */
    uint32_t other;             /* compare_to: the equal group of the
                                 * other snapshot, or NO_GROUP */
} group_t;

struct ctm_groups {
    const ctm_snapdata *d;
    int key_type;
    Py_ssize_t ngroups;
    group_t *groups;
    uint32_t *group_of;         /* filename, lineno: key -> group, or
                                   NO_GROUP */
    ctm_index by_frames;        /* traceback: the groups by frame
                                   sequence */
};

void
ctm_groups_free(ctm_groups *g)
{
    if (g == NULL) {
        return;
    }
    ctm_free(g->groups);
    ctm_free(g->group_of);
    ctm_index_free(&g->by_frames);
    ctm_free(g);
}

static void
size_overflow(void)
{
    PyErr_SetString(PyExc_OverflowError,
                    "sum of trace sizes does not fit in 64 bits");
}

/* acc += x; return 1 if the size overflowed. */
static inline int
sums_add(sums_t *acc, const sums_t *x)
{
    uint64_t s = acc->size + x->size;
    int overflow = s < acc->size;
    acc->size = s;
    acc->count += x->count;
    return overflow;
}

/* Step 1 for a sampled snapshot: each trace stands for its estimates
 * (sampling.h). The sizes are summed as integers, so that a group's size
 * is the sum of its traces' Trace.size; the counts as doubles, rounded
 * once per traceback (to the nearest: rounding each trace's would add up
 * the rounding errors). A traceback with traces counts at least one
 * block (each sample counts 1 or more, so the sum cannot round to 0; the
 * floor of 1 is what the rest of the engine relies on, where a count of
 * 0 means no traces). Kept apart from the exact loop, whose speed it
 * would cost. tbs: zeroed, one entry per traceback. */
static int
sum_tracebacks_sampled(const ctm_snapdata *d, sums_t *tbs)
{
    double *counts = ctm_calloc((size_t)(d->ntracebacks ? d->ntracebacks
                                                         : 1),
                                sizeof(double));
    if (counts == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    uint64_t interval = d->sample_interval;
    int overflow = 0;
    for (Py_ssize_t i = 0; i < d->ntraces; i++) {
        const ctm_snap_trace *tr = &d->traces[i];
        uint64_t est = ctm_sample_size(tr->size, interval);
        uint64_t v = tbs[tr->traceback].size + est;
        overflow |= v < est;
        tbs[tr->traceback].size = v;
        counts[tr->traceback] += ctm_sample_count(tr->size, interval);
    }
    for (Py_ssize_t k = 0; k < d->ntracebacks; k++) {
        double c = counts[k];
        if (c == 0.0) {
            continue;           /* no traces: stays out of the groups */
        }
        if (!(c < 18446744073709549568.0)) {
            overflow = 1;       /* not a uint64 (the largest double under
                                   2^64 as in sampling.h) */
            break;
        }
        uint64_t n = (uint64_t)(c + 0.5);
        tbs[k].count = n ? n : 1;
    }
    ctm_free(counts);
    if (overflow) {
        size_overflow();
        return -1;
    }
    return 0;
}

/* Step 1: size and count per traceback. */
sums_t *
ctm_sum_tracebacks(const ctm_snapdata *d)
{
    sums_t *tbs = ctm_calloc((size_t)d->ntracebacks, sizeof(sums_t));
    if (tbs == NULL) {
        PyErr_NoMemory();
        return NULL;
    }
    if (d->sample_interval != 0) {
        if (sum_tracebacks_sampled(d, tbs) < 0) {
            ctm_free(tbs);
            return NULL;
        }
        return tbs;
    }
    /* A run of traces of one traceback (a snapshot taken by the tracer
     * holds each traceback's traces together) is summed in registers and
     * added to its entry once: no dependency through memory from one
     * trace to the next. */
    const ctm_snap_trace *tr = d->traces;
    const ctm_snap_trace *end = tr + d->ntraces;
    int overflow = 0;
    while (tr < end) {
        uint32_t tb = tr->traceback;
        uint64_t size = 0, count = 0;
        do {
            uint64_t v = size + tr->size;
            overflow |= v < size;
            size = v;
            count++;
            tr++;
        } while (tr < end && tr->traceback == tb);
        sums_t run = {size, count};
        overflow |= sums_add(&tbs[tb], &run);
    }
    if (overflow) {
        ctm_free(tbs);
        size_overflow();
        return NULL;
    }
    return tbs;
}

/* The hash of a frame sequence (without total_nframe, which the
 * 'traceback' key ignores: not ctm_traceback_hash). */
static uint32_t
seq_hash(const uint32_t *f, uint32_t n)
{
    uint64_t h = 0x9e3779b97f4a7c15ULL ^ n;
    for (uint32_t i = 0; i < n; i++) {
        h = (h ^ f[i]) * 0x100000001b3ULL;
        h ^= h >> 31;
    }
    return ctm_mix32(h);
}

static uint32_t
group_seq_hash(const void *owner, uint32_t group)
{
    const ctm_groups *g = owner;
    const ctm_snap_tb *t = &g->d->tracebacks[g->groups[group].key];
    return seq_hash(ctm_tb_refs(g->d, t), t->nframe);
}

/* The group of g (key type 'traceback') whose frame sequence is
 * frames[0..n), or NO_GROUP; *slot receives the probe's end. */
static uint32_t
seq_find(const ctm_groups *g, const uint32_t *frames, uint32_t n,
         uint32_t *slot)
{
    const ctm_snapdata *d = g->d;
    const uint32_t *slots = g->by_frames.slots;
    uint32_t mask = g->by_frames.mask;
    uint32_t j = seq_hash(frames, n) & mask;
    uint32_t v;
    while ((v = slots[j]) != 0) {
        const ctm_snap_tb *r = &d->tracebacks[g->groups[v - 1].key];
        if (r->nframe == n
            && memcmp(ctm_tb_refs(d, r), frames,
                      n * sizeof(uint32_t)) == 0) {
            break;
        }
        j = (j + 1) & mask;
    }
    if (slot != NULL) {
        *slot = j;
    }
    return v ? v - 1 : NO_GROUP;
}

/* Step 2, 'traceback': one group per frame sequence. */
static int
group_by_traceback(ctm_groups *g, const sums_t *tbs, int *overflow)
{
    const ctm_snapdata *d = g->d;
    Py_ssize_t used = 0;
    for (Py_ssize_t k = 0; k < d->ntracebacks; k++) {
        used += tbs[k].count != 0;
    }
    /* sized once: no insertion below grows it */
    g->groups = ctm_malloc((size_t)(used ? used : 1) * sizeof(group_t));
    if (g->groups == NULL
        || ctm_index_reserve(&g->by_frames, (size_t)used, group_seq_hash,
                             g) < 0) {
        PyErr_NoMemory();
        return -1;
    }
    for (Py_ssize_t k = 0; k < d->ntracebacks; k++) {
        if (tbs[k].count == 0) {
            continue;
        }
        const ctm_snap_tb *t = &d->tracebacks[k];
        uint32_t j;
        uint32_t gi = seq_find(g, ctm_tb_refs(d, t), t->nframe, &j);
        if (gi == NO_GROUP) {
            gi = (uint32_t)g->ngroups++;
            g->groups[gi].sum.size = 0;
            g->groups[gi].sum.count = 0;
            g->groups[gi].key = (uint32_t)k;
            g->groups[gi].other = NO_GROUP;
            g->by_frames.slots[j] = gi + 1;
        }
        *overflow |= sums_add(&g->groups[gi].sum, &tbs[k]);
    }
    return 0;
}

/* Step 2, 'filename' and 'lineno': one group per string or frame index
 * (and one for the empty traceback by lineno). */
static int
group_by_index(ctm_groups *g, const sums_t *tbs, int cumulative,
               int *overflow)
{
    const ctm_snapdata *d = g->d;
    int by_file = g->key_type == CTM_KEY_FILENAME;
    Py_ssize_t nkeys = by_file ? d->nstrings : d->nframes + 1;
    int rc = -1;
    sums_t *acc = ctm_calloc((size_t)nkeys, sizeof(sums_t));
    if (acc == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    for (Py_ssize_t k = 0; k < d->ntracebacks; k++) {
        if (tbs[k].count == 0) {
            continue;
        }
        const ctm_snap_tb *t = &d->tracebacks[k];
        const uint32_t *refs = ctm_tb_refs(d, t);
        uint32_t n = cumulative ? t->nframe : (t->nframe ? 1 : 0);
        for (uint32_t j = 0; j < n; j++) {
            uint32_t key = by_file ? d->frames[refs[j]].filename : refs[j];
            *overflow |= sums_add(&acc[key], &tbs[k]);
        }
        if (!cumulative && t->nframe == 0) {
            if (by_file) {
                /* the stdlib reads trace_traceback[0][0] */
                PyErr_SetString(PyExc_IndexError,
                                "tuple index out of range");
                goto done;
            }
            *overflow |= sums_add(&acc[d->nframes], &tbs[k]);
        }
    }
    Py_ssize_t n = 0;
    for (Py_ssize_t key = 0; key < nkeys; key++) {
        n += acc[key].count != 0;
    }
    g->groups = ctm_malloc((size_t)(n ? n : 1) * sizeof(group_t));
    g->group_of = ctm_malloc((size_t)(nkeys ? nkeys : 1)
                             * sizeof(uint32_t));
    if (g->groups == NULL || g->group_of == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    for (Py_ssize_t key = 0; key < nkeys; key++) {
        if (acc[key].count == 0) {
            g->group_of[key] = NO_GROUP;
            continue;
        }
        group_t *gr = &g->groups[g->ngroups];
        gr->sum = acc[key];
        gr->key = (uint32_t)key;
        gr->other = NO_GROUP;
        g->group_of[key] = (uint32_t)g->ngroups++;
    }
    rc = 0;
done:
    ctm_free(acc);
    return rc;
}

ctm_groups *
ctm_groups_new(const ctm_snapdata *d, int key_type, int cumulative)
{
    int rc, overflow = 0;

    if ((uint64_t)d->nframes >= NO_GROUP
        || (uint64_t)d->ntracebacks >= NO_GROUP) {
        PyErr_NoMemory();
        return NULL;
    }
    ctm_groups *g = ctm_calloc(1, sizeof(ctm_groups));
    if (g == NULL) {
        PyErr_NoMemory();
        return NULL;
    }
    g->d = d;
    g->key_type = key_type;
    sums_t *tbs = ctm_sum_tracebacks(d);
    if (tbs == NULL) {
        ctm_groups_free(g);
        return NULL;
    }
    if (key_type == CTM_KEY_TRACEBACK) {
        rc = group_by_traceback(g, tbs, &overflow);
    }
    else {
        rc = group_by_index(g, tbs, cumulative, &overflow);
    }
    ctm_free(tbs);
    if (rc == 0 && overflow) {
        size_overflow();
        rc = -1;
    }
    if (rc < 0) {
        ctm_groups_free(g);
        return NULL;
    }
    return g;
}

/* ------------------------------------------------------------------
 * Step 3: the translation of one snapshot's ("from") string and frame
 * indexes into another's ("to"), by value.
 * ---------------------------------------------------------------- */

#define NOT_YET (-2)            /* in a map: not translated yet */

typedef struct {
    const ctm_snapdata *from, *to;
    int64_t *string_map;        /* NOT_YET, -1 absent, else to's index */
    int64_t *frame_map;
    Py_hash_t *to_hash;         /* hashes of to's strings */
    ctm_index to_strings;       /* to's strings by hash, made on first
                                   use */
    ctm_index to_frames;        /* to's frames by (filename, lineno) */
} translation_t;

static void
translation_free(translation_t *x)
{
    ctm_free(x->string_map);
    ctm_free(x->frame_map);
    ctm_free(x->to_hash);
    ctm_index_free(&x->to_strings);
    ctm_index_free(&x->to_frames);
}

/* A map of n indexes, none translated yet. */
static int64_t *
map_new(Py_ssize_t n)
{
    int64_t *m = ctm_malloc((size_t)(n ? n : 1) * sizeof(int64_t));
    if (m == NULL) {
        PyErr_NoMemory();
        return NULL;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        m[i] = NOT_YET;
    }
    return m;
}

static int
translation_init(translation_t *x, const ctm_snapdata *from,
                 const ctm_snapdata *to)
{
    memset(x, 0, sizeof(*x));
    x->from = from;
    x->to = to;
    x->string_map = map_new(from->nstrings);
    x->frame_map = map_new(from->nframes);
    if (x->string_map == NULL || x->frame_map == NULL) {
        translation_free(x);
        return -1;
    }
    return 0;
}

static inline uint32_t
frame_hash(uint32_t filename, int32_t lineno)
{
    return ctm_mix32(((uint64_t)filename << 32) ^ (uint32_t)lineno);
}

static uint32_t
to_string_hash(const void *owner, uint32_t i)
{
    const translation_t *x = owner;
    return ctm_mix32((uint64_t)x->to_hash[i]);
}

static uint32_t
to_frame_hash(const void *owner, uint32_t i)
{
    const ctm_snap_frame *fr = &((const translation_t *)owner)->to->frames[i];
    return frame_hash(fr->filename, fr->lineno);
}

/* to's string index equal to from's string s, or -1; -2 on error. */
static int64_t
translate_string(translation_t *x, uint32_t s)
{
    if (x->string_map[s] != NOT_YET) {
        return x->string_map[s];
    }
    const ctm_snapdata *to = x->to;
    ctm_index *ix = &x->to_strings;
    if (ix->slots == NULL) {
        x->to_hash = ctm_malloc((size_t)(to->nstrings ? to->nstrings : 1)
                                * sizeof(Py_hash_t));
        if (x->to_hash == NULL
            || ctm_index_reserve(ix, (size_t)to->nstrings, to_string_hash,
                                 x) < 0) {
            PyErr_NoMemory();
            return -2;
        }
        for (Py_ssize_t i = 0; i < to->nstrings; i++) {
            Py_hash_t h = PyObject_Hash(to->strings[i]);
            if (h == -1) {
                return -2;
            }
            x->to_hash[i] = h;
            ctm_index_put(ix, ctm_mix32((uint64_t)h), (uint32_t)i);
        }
    }
    PyObject *str = x->from->strings[s];
    Py_hash_t h = PyObject_Hash(str);
    if (h == -1) {
        return -2;
    }
    int64_t res = -1;
    uint32_t j = ctm_mix32((uint64_t)h) & ix->mask, v;
    while ((v = ix->slots[j]) != 0) {
        PyObject *cand = to->strings[v - 1];
        if (cand == str) {
            res = v - 1;
            break;
        }
        if (x->to_hash[v - 1] == h) {
            int c = PyUnicode_Compare(cand, str);
            if (c == -1 && PyErr_Occurred()) {
                return -2;
            }
            if (c == 0) {
                res = v - 1;
                break;
            }
        }
        j = (j + 1) & ix->mask;
    }
    x->string_map[s] = res;
    return res;
}

/* to's frame index equal to from's frame f, or -1; -2 on error. */
static int64_t
translate_frame(translation_t *x, uint32_t f)
{
    if (x->frame_map[f] != NOT_YET) {
        return x->frame_map[f];
    }
    const ctm_snapdata *to = x->to;
    ctm_index *ix = &x->to_frames;
    if (ix->slots == NULL) {
        if (ctm_index_reserve(ix, (size_t)to->nframes, to_frame_hash,
                              x) < 0) {
            PyErr_NoMemory();
            return -2;
        }
        for (Py_ssize_t i = 0; i < to->nframes; i++) {
            const ctm_snap_frame *fr = &to->frames[i];
            ctm_index_put(ix, frame_hash(fr->filename, fr->lineno),
                          (uint32_t)i);
        }
    }
    const ctm_snap_frame *fr = &x->from->frames[f];
    int64_t s = translate_string(x, fr->filename);
    if (s < 0) {
        if (s == -1) {
            x->frame_map[f] = -1;
        }
        return s;
    }
    int64_t res = -1;
    uint32_t j = frame_hash((uint32_t)s, fr->lineno) & ix->mask, v;
    while ((v = ix->slots[j]) != 0) {
        const ctm_snap_frame *c = &to->frames[v - 1];
        if (c->filename == (uint32_t)s && c->lineno == fr->lineno) {
            res = v - 1;
            break;
        }
        j = (j + 1) & ix->mask;
    }
    x->frame_map[f] = res;
    return res;
}

/* The group of gn equal to group gi of go, or NO_GROUP; *err is set to
 * 1 on failure. *buf (of *bufcap items) is scratch room for a
 * translated frame sequence. */
static uint32_t
match_group(translation_t *x, const ctm_groups *gn, const ctm_groups *go,
            uint32_t gi, uint32_t **buf, size_t *bufcap, int *err)
{
    const ctm_snapdata *od = go->d, *nd = gn->d;
    uint32_t key = go->groups[gi].key;
    int64_t r;

    *err = 0;
    switch (go->key_type) {
    case CTM_KEY_FILENAME:
        r = translate_string(x, key);
        break;
    case CTM_KEY_LINENO:
        if (key == (uint32_t)od->nframes) {
            return gn->group_of[nd->nframes];
        }
        r = translate_frame(x, key);
        break;
    default: {
        const ctm_snap_tb *t = &od->tracebacks[key];
        const uint32_t *refs = ctm_tb_refs(od, t);
        if (ctm_grow((void **)buf, bufcap, t->nframe,
                     sizeof(uint32_t)) < 0) {
            PyErr_NoMemory();
            *err = 1;
            return NO_GROUP;
        }
        for (uint32_t i = 0; i < t->nframe; i++) {
            r = translate_frame(x, refs[i]);
            if (r < 0) {
                *err = r == -2;
                return NO_GROUP;
            }
            (*buf)[i] = (uint32_t)r;
        }
        /* refs: a pointer for the empty sequence, whose *buf may be
         * NULL */
        return seq_find(gn, t->nframe ? *buf : refs, t->nframe, NULL);
    }
    }
    if (r < 0) {
        *err = r == -2;
        return NO_GROUP;
    }
    return gn->group_of[r];
}

/* ------------------------------------------------------------------
 * Step 4: the rows' order.
 * ---------------------------------------------------------------- */

/* A row's sort key, most significant first. */
typedef struct {
    uint64_t k[5];
    Py_ssize_t row;
} sortkey_t;

static int
sortkey_cmp(const void *a, const void *b)
{
    const sortkey_t *x = a, *y = b;
    for (int i = 0; i < 5; i++) {
        if (x->k[i] != y->k[i]) {
            /* descending, as sort(reverse=True) */
            return x->k[i] > y->k[i] ? -1 : 1;
        }
    }
    return 0;
}

typedef struct {
    PyObject *str;
    uint32_t uid;
} strent_t;

static int
strent_cmp(const void *a, const void *b)
{
    /* exact str objects: PyUnicode_Compare cannot fail */
    return PyUnicode_Compare(((const strent_t *)a)->str,
                             ((const strent_t *)b)->str);
}

typedef struct {
    uint64_t head;              /* key of the oldest frame, or 0 */
    const uint32_t *refs;       /* most recent first */
    const uint64_t *fkey;       /* frame keys of the snapshot */
    uint32_t n;
    uint32_t key;               /* index of the sort key */
} seqent_t;

/* Traceback order: tuples of frames oldest first, then length. The
 * oldest frame's key is inline, which decides most comparisons without
 * reading the frame arrays. */
static int
seqent_cmp(const void *a, const void *b)
{
    const seqent_t *x = a, *y = b;
    if (x->n && y->n && x->head != y->head) {
        return x->head < y->head ? -1 : 1;
    }
    uint32_t n = x->n < y->n ? x->n : y->n;
    for (uint32_t i = 0; i < n; i++) {
        uint64_t fx = x->fkey[x->refs[x->n - 1 - i]];
        uint64_t fy = y->fkey[y->refs[y->n - 1 - i]];
        if (fx != fy) {
            return fx < fy ? -1 : 1;
        }
    }
    return x->n < y->n ? -1 : (x->n > y->n);
}

/* Unified string ids over both snapshots: a string of the new
 * snapshot is its index; a string of the old one is the index of the
 * equal new string, or nnew + its own index. */
typedef struct {
    const ctm_group_result *res;
    translation_t *x;           /* old -> new, NULL without old */
    Py_ssize_t nnew;
    uint32_t *rank;             /* per uid: rank, UNRANKED if unused */
    Py_ssize_t nuid;
} order_t;

#define UNRANKED UINT32_MAX

static int64_t
string_uid(order_t *o, uint32_t side, uint32_t s)
{
    if (side == 0) {
        return s;
    }
    int64_t r = translate_string(o->x, s);
    if (r == -2) {
        return -1;
    }
    return r >= 0 ? r : o->nnew + s;
}

/* Mark the strings the key of a row uses. */
static int
mark_row(order_t *o, const ctm_group_row *row)
{
    const ctm_snapdata *d = o->res->data[row->side];
    uint32_t key = row->key;
    const uint32_t *refs;
    uint32_t n;
    uint32_t single;

    switch (o->res->key_type) {
    case CTM_KEY_FILENAME: {
        int64_t u = string_uid(o, row->side, key);
        if (u < 0) {
            return -1;
        }
        o->rank[u] = 0;
        return 0;
    }
    case CTM_KEY_LINENO:
        if (key == (uint32_t)d->nframes) {
            return 0;
        }
        single = key;
        refs = &single;
        n = 1;
        break;
    default:
        refs = ctm_tb_refs(d, &d->tracebacks[key]);
        n = d->tracebacks[key].nframe;
        break;
    }
    for (uint32_t i = 0; i < n; i++) {
        int64_t u = string_uid(o, row->side, d->frames[refs[i]].filename);
        if (u < 0) {
            return -1;
        }
        o->rank[u] = 0;
    }
    return 0;
}

static inline uint64_t
frame_key(uint32_t rank, int32_t lineno)
{
    /* (filename, lineno) order; the bias keeps negative linenos below */
    return ((uint64_t)rank << 32) | ((uint32_t)lineno ^ 0x80000000u);
}

/* Fill k[4] of every sort key with its row's traceback's rank in the
 * stdlib's Traceback order. */
static int
order_rows(order_t *o, sortkey_t *keys)
{
    const ctm_group_result *res = o->res;
    const ctm_group_row *rows = res->rows;
    Py_ssize_t nrows = res->nrows;
    strent_t *ents = NULL;
    uint64_t *fkey[2] = {NULL, NULL};
    seqent_t *seqs = NULL;
    int rc = -1;

    o->rank = ctm_malloc((size_t)(o->nuid ? o->nuid : 1)
                         * sizeof(uint32_t));
    if (o->rank == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    for (Py_ssize_t u = 0; u < o->nuid; u++) {
        o->rank[u] = UNRANKED;
    }
    for (Py_ssize_t r = 0; r < nrows; r++) {
        if (mark_row(o, &rows[r]) < 0) {
            goto done;
        }
    }
    Py_ssize_t nents = 0;
    for (Py_ssize_t u = 0; u < o->nuid; u++) {
        nents += o->rank[u] != UNRANKED;
    }
    ents = ctm_malloc((size_t)(nents ? nents : 1) * sizeof(strent_t));
    if (ents == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    nents = 0;
    for (Py_ssize_t u = 0; u < o->nuid; u++) {
        if (o->rank[u] == UNRANKED) {
            continue;
        }
        ents[nents].str = u < o->nnew ? res->data[0]->strings[u]
                                      : res->data[1]->strings[u - o->nnew];
        ents[nents].uid = (uint32_t)u;
        nents++;
    }
    qsort(ents, (size_t)nents, sizeof(strent_t), strent_cmp);
    for (Py_ssize_t i = 0; i < nents; i++) {
        o->rank[ents[i].uid] = (uint32_t)i;
    }

    int key_type = res->key_type;
    if (key_type != CTM_KEY_TRACEBACK) {
        for (Py_ssize_t r = 0; r < nrows; r++) {
            const ctm_snapdata *d = res->data[rows[r].side];
            uint32_t key = rows[r].key;
            int64_t u;
            if (key_type == CTM_KEY_LINENO && key == (uint32_t)d->nframes) {
                keys[r].k[4] = 0;       /* () sorts first */
                continue;
            }
            const ctm_snap_frame *f =
                key_type == CTM_KEY_LINENO ? &d->frames[key] : NULL;
            u = string_uid(o, rows[r].side, f ? f->filename : key);
            if (u < 0) {
                goto done;
            }
            if (f == NULL) {
                keys[r].k[4] = o->rank[u];
            }
            else {
                keys[r].k[4] = frame_key(o->rank[u] + 1, f->lineno);
            }
        }
        rc = 0;
        goto done;
    }

    /* 'traceback': rank the frame sequences */
    for (int side = 0; side < 2; side++) {
        const ctm_snapdata *d = res->data[side];
        if (d == NULL) {
            continue;
        }
        fkey[side] = ctm_calloc((size_t)d->nframes, sizeof(uint64_t));
        if (fkey[side] == NULL) {
            PyErr_NoMemory();
            goto done;
        }
    }
    seqs = ctm_malloc((size_t)(nrows ? nrows : 1) * sizeof(seqent_t));
    if (seqs == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    for (Py_ssize_t r = 0; r < nrows; r++) {
        uint32_t side = rows[r].side;
        const ctm_snapdata *d = res->data[side];
        const ctm_snap_tb *t = &d->tracebacks[rows[r].key];
        const uint32_t *refs = ctm_tb_refs(d, t);
        for (uint32_t i = 0; i < t->nframe; i++) {
            const ctm_snap_frame *f = &d->frames[refs[i]];
            int64_t u = string_uid(o, side, f->filename);
            if (u < 0) {
                goto done;
            }
            fkey[side][refs[i]] = frame_key(o->rank[u], f->lineno);
        }
        seqs[r].refs = refs;
        seqs[r].fkey = fkey[side];
        seqs[r].n = t->nframe;
        seqs[r].key = (uint32_t)r;
        seqs[r].head = t->nframe ? fkey[side][refs[t->nframe - 1]] : 0;
    }
    qsort(seqs, (size_t)nrows, sizeof(seqent_t), seqent_cmp);
    for (Py_ssize_t i = 0; i < nrows; i++) {
        keys[seqs[i].key].k[4] = (uint64_t)i;
    }
    rc = 0;
done:
    ctm_free(ents);
    ctm_free(fkey[0]);
    ctm_free(fkey[1]);
    ctm_free(seqs);
    return rc;
}

/* ------------------------------------------------------------------
 * The result
 * ---------------------------------------------------------------- */

/* |a - b| and its sign. */
static inline uint64_t
udiff(uint64_t a, uint64_t b, int *neg)
{
    *neg = a < b;
    return a < b ? b - a : a - b;
}

static int
to_int64(uint64_t mag, int neg, int64_t *out)
{
    if (mag > (uint64_t)INT64_MAX) {
        PyErr_SetString(PyExc_OverflowError,
                        "statistic difference does not fit in 64 bits");
        return -1;
    }
    *out = neg ? -(int64_t)mag : (int64_t)mag;
    return 0;
}

/* Join go's groups to gn's (compare_to); return the number of rows. */
static Py_ssize_t
join_groups(translation_t *x, ctm_groups *gn, ctm_groups *go)
{
    Py_ssize_t nrows = gn->ngroups;
    uint32_t *buf = NULL;
    size_t bufcap = 0;

    for (Py_ssize_t i = 0; i < go->ngroups; i++) {
        int err;
        uint32_t m = match_group(x, gn, go, (uint32_t)i, &buf, &bufcap,
                                 &err);
        if (err) {
            nrows = -1;
            break;
        }
        go->groups[i].other = m;
        if (m != NO_GROUP) {
            gn->groups[m].other = (uint32_t)i;
        }
        else {
            nrows++;
        }
    }
    ctm_free(buf);
    return nrows;
}

/* The row of group g of one side, and its sort key. The stdlib's keys:
 * statistics (size, count), compare_to (|size_diff|, size, |count_diff|,
 * count); new rows: (size, size - old size, count, count - old count),
 * with nothing old for a new group; old-only rows: (0, -size, 0,
 * -count). */
static int
fill_row(const group_t *g, const ctm_groups *go, uint32_t side,
         ctm_group_row *row, sortkey_t *key)
{
    sums_t cur = {0, 0}, old = {0, 0};
    int neg;

    row->key = g->key;
    row->side = side;
    row->size_diff = row->count_diff = 0;
    if (side == 0) {
        cur = g->sum;
        if (go != NULL && g->other != NO_GROUP) {
            old = go->groups[g->other].sum;
        }
    }
    else {
        old = g->sum;
    }
    row->size = cur.size;
    row->count = cur.count;
    if (go == NULL) {
        key->k[0] = cur.size;
        key->k[1] = cur.count;
        key->k[2] = key->k[3] = 0;
    }
    else {
        key->k[0] = udiff(cur.size, old.size, &neg);
        if (to_int64(key->k[0], neg, &row->size_diff) < 0) {
            return -1;
        }
        key->k[1] = cur.size;
        key->k[2] = udiff(cur.count, old.count, &neg);
        if (to_int64(key->k[2], neg, &row->count_diff) < 0) {
            return -1;
        }
        key->k[3] = cur.count;
    }
    key->k[4] = 0;
    return 0;
}

int
ctm_groups_result(ctm_groups *gn, ctm_groups *go, int sorted,
                  ctm_group_result *res)
{
    translation_t x;
    int have_x = 0, rc = -1;
    sortkey_t *keys = NULL;
    order_t o;
    Py_ssize_t nrows = gn->ngroups;

    memset(res, 0, sizeof(*res));
    memset(&o, 0, sizeof(o));
    res->key_type = gn->key_type;
    res->data[0] = gn->d;
    res->data[1] = go ? go->d : NULL;
    if (go != NULL) {
        if (translation_init(&x, go->d, gn->d) < 0) {
            return -1;
        }
        have_x = 1;
        nrows = join_groups(&x, gn, go);
        if (nrows < 0) {
            goto done;
        }
    }

    res->rows = ctm_malloc((size_t)(nrows ? nrows : 1)
                           * sizeof(ctm_group_row));
    keys = ctm_malloc((size_t)(nrows ? nrows : 1) * sizeof(sortkey_t));
    if (res->rows == NULL || keys == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    Py_ssize_t r = 0;
    for (Py_ssize_t i = 0; i < gn->ngroups; i++, r++) {
        if (fill_row(&gn->groups[i], go, 0, &res->rows[r], &keys[r]) < 0) {
            goto done;
        }
    }
    for (Py_ssize_t i = 0; go != NULL && i < go->ngroups; i++) {
        if (go->groups[i].other != NO_GROUP) {
            continue;
        }
        if (fill_row(&go->groups[i], go, 1, &res->rows[r], &keys[r]) < 0) {
            goto done;
        }
        r++;
    }
    res->nrows = nrows;
    if (!sorted) {
        rc = 0;
        goto done;
    }

    o.res = res;
    o.x = have_x ? &x : NULL;
    o.nnew = gn->d->nstrings;
    o.nuid = o.nnew + (go ? go->d->nstrings : 0);
    if (order_rows(&o, keys) < 0) {
        goto done;
    }
    for (r = 0; r < nrows; r++) {
        keys[r].row = r;
    }
    qsort(keys, (size_t)nrows, sizeof(sortkey_t), sortkey_cmp);
    res->order = ctm_malloc((size_t)(nrows ? nrows : 1)
                            * sizeof(Py_ssize_t));
    if (res->order == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    for (r = 0; r < nrows; r++) {
        res->order[r] = keys[r].row;
    }
    rc = 0;
done:
    if (have_x) {
        translation_free(&x);
    }
    ctm_free(o.rank);
    ctm_free(keys);
    if (rc < 0) {
        ctm_group_result_free(res);
    }
    return rc;
}

void
ctm_group_result_free(ctm_group_result *res)
{
    ctm_free(res->rows);
    ctm_free(res->order);
    res->rows = NULL;
    res->order = NULL;
    res->nrows = 0;
}
