/* The tracer's tables read for Python: the snapshot data of the live
 * traces (take_snapshot) and the traceback of one block
 * (get_object_traceback). Both hold the GIL throughout, so the interner
 * is not cleared under them, and its code objects and filenames stay
 * alive; they are readers (tracer.h), so it is not compacted under them
 * either: its ids and filenames' data stay as they are. Threads without
 * the GIL may still add traces, frames, tracebacks and filenames until
 * they take the lock.
 *
 * A code frame's code object is alive while the lock is held (its death
 * resolves the frame under the lock), not after: what is needed of it is
 * taken under the lock (a reference to its filename).
 *
 * take_snapshot, under the lock, takes the count of live traces of each
 * tracer traceback (the tables keep them); turns each live one (frames
 * by instruction) into a snapshot traceback (frames by line,
 * deduplicated) in the builder, while a helper thread maps the pages of
 * the traces array; then places the traces grouped by tracer traceback,
 * each under its snapshot traceback.
 *
 * Nothing under the lock may allocate through PyMem (the hooks would
 * wait for the lock it holds) or set a Python error. The filename and
 * function name of a code frame are its code object's, hashed and
 * compared in C; the filenames of resolved frames, copied as C strings
 * by threads without the GIL, are made into str before the lock is
 * taken. A resolved frame whose filename arrived since then sends the
 * snapshot round again: filenames are interned, so that happens at most
 * once per new filename.
 * The function names of resolved frames are made into str after the
 * traces are copied (pending_names), not before: they would be traces
 * of the snapshot that holds them, where the stdlib's snapshot has none
 * of its own objects.
 */
#include "tracer.h"
#include "tracerapi.h"

#include <string.h>

/* What the snapshot of a traceback needs of one tracer frame, copied
 * under the lock. */
typedef struct {
    PyObject *filename;         /* a code frame's: a new reference */
    PyObject *function;         /* a code frame's function name: a new
                                   reference, or NULL */
    uint32_t cstring;
    int32_t lineno;
    int cfunction;              /* a resolved frame's function name is
                                   copied (beside its filename) */
} frame_copy;

typedef struct {
    frame_copy *frames;
    ctm_cstring *cstrings;      /* data pointers borrowed (owned by the
                                   interner until the next clear, which
                                   needs the GIL we hold) */
} frames_copy;

/* The filename of a code frame, a new reference taken under the lock
 * (no allocation). */
static PyObject *
code_filename(const PyCodeObject *code)
{
    PyObject *name = code->co_filename;
    if (name != NULL && PyUnicode_Check(name)) {
        return Py_NewRef(name);
    }
    return Py_NewRef(ctm_state.unknown_str);
}

/* A C string filename as a str (new reference): "<unknown>", which the
 * interner keeps once it has a code record, without allocating, so that
 * it does not show in the snapshot's own traces. */
static PyObject *
cstring_str(const ctm_cstring *c)
{
    static const char unknown[] = "<unknown>";
    if (c->kind == PyUnicode_1BYTE_KIND
        && c->length == (Py_ssize_t)sizeof(unknown) - 1
        && memcmp(c->data, unknown, sizeof(unknown) - 1) == 0) {
        return Py_NewRef(ctm_state.unknown_str);
    }
    return PyUnicode_FromKindAndData(c->kind, c->data, c->length);
}

/* Filename of a copied frame as a str (new reference). */
static PyObject *
frame_filename(const frames_copy *c, uint32_t i)
{
    const frame_copy *f = &c->frames[i];
    if (f->filename != NULL) {
        return Py_NewRef(f->filename);
    }
    return cstring_str(&c->cstrings[f->cstring]);
}


/* The interner's C string filenames as str, ids [0, n): NULL for the
 * ids that no resolved frame had as its filename when they were made
 * (function names, made into str after the traces are copied: see
 * pending_names). */
typedef struct {
    PyObject **strs;
    Py_hash_t *hashes;
    uint32_t n;
} cstring_strs;

static void
cstring_strs_free(cstring_strs *cs)
{
    for (uint32_t i = 0; i < cs->n; i++) {
        Py_XDECREF(cs->strs[i]);
    }
    ctm_free(cs->strs);
    ctm_free(cs->hashes);
}

/* Copy, under the lock, the C strings that resolved frames have as
 * filename and that cs has not made yet: *ids and *copy (*ncopy of
 * them), from the n the interner has. 0, or -1 if memory ran out. */
static int
copy_filenames_unlocked(const cstring_strs *cs, uint32_t *n, uint32_t **ids,
                        ctm_cstring **copy, uint32_t *ncopy)
{
    ctm_interner *in = ctm_tracer.interner;
    *n = in ? ctm_interner_ncstrings_unlocked(in) : 0;
    *ncopy = 0;
    if (*n == 0) {
        return 0;
    }
    unsigned char *is_filename = ctm_calloc(*n, 1);
    if (is_filename == NULL) {
        return -1;
    }
    uint32_t nframes = ctm_interner_nframes_unlocked(in);
    for (uint32_t f = 0; f < nframes; f++) {
        const ctm_tframe *fr = ctm_interner_frame_unlocked(in, f);
        if (fr->code == NULL) {
            is_filename[fr->filename] = 1;
        }
    }
    uint32_t want = 0;
    for (uint32_t i = 0; i < *n; i++) {
        want += is_filename[i] && (i >= cs->n || cs->strs[i] == NULL);
    }
    *ids = ctm_malloc((want ? want : 1) * sizeof(uint32_t));
    *copy = ctm_malloc((want ? want : 1) * sizeof(ctm_cstring));
    if (*ids == NULL || *copy == NULL) {
        ctm_free(is_filename);
        return -1;
    }
    for (uint32_t i = 0; i < *n; i++) {
        if (is_filename[i] && (i >= cs->n || cs->strs[i] == NULL)) {
            (*ids)[*ncopy] = i;
            (*copy)[(*ncopy)++] = *ctm_interner_cstring_unlocked(in, i);
        }
    }
    ctm_free(is_filename);
    return 0;
}

/* Make str of the filenames that resolved frames have and cs has not.
 * 0 or -1. */
static int
cstring_strs_update(cstring_strs *cs)
{
    uint32_t n, ncopy, *ids = NULL;
    ctm_cstring *copy = NULL;
    ctm_tables_lock();
    int rc = copy_filenames_unlocked(cs, &n, &ids, &copy, &ncopy);
    ctm_tables_unlock();
    if (rc == 0 && n > cs->n) {
        PyObject **strs = ctm_realloc(cs->strs, n * sizeof(PyObject *));
        if (strs != NULL) {
            cs->strs = strs;
        }
        Py_hash_t *hashes = strs ? ctm_realloc(cs->hashes,
                                               n * sizeof(Py_hash_t))
                                 : NULL;
        if (hashes != NULL) {
            cs->hashes = hashes;
            memset(cs->strs + cs->n, 0, (n - cs->n) * sizeof(PyObject *));
            cs->n = n;
        }
        rc = hashes != NULL ? 0 : -1;
    }
    if (rc < 0) {
        ctm_free(ids);
        ctm_free(copy);
        PyErr_NoMemory();
        return -1;
    }
    for (uint32_t k = 0; k < ncopy; k++) {
        PyObject *str = cstring_str(&copy[k]);
        if (str == NULL) {
            rc = -1;
            break;
        }
        cs->strs[ids[k]] = str;
        cs->hashes[ids[k]] = PyObject_Hash(str);    /* a str's: no error */
    }
    ctm_free(ids);
    ctm_free(copy);
    return rc;
}

/* The function names of resolved frames, made into str after the traces
 * are copied, as the stdlib makes its snapshot's objects: made before,
 * they would be traces of the snapshot they are in. */
typedef struct {
    uint32_t frame;             /* snapshot frame */
    ctm_cstring name;           /* data borrowed from the interner, which
                                   neither clear (it needs the GIL) nor
                                   compaction (we are a reader) frees */
} pending_name;

typedef struct {
    pending_name *items;
    size_t n, cap;
} pending_names;

/* Give the builder's frames the pending names (first name wins).
 * 0, or -1 with an exception set. */
static int
pending_names_apply(const pending_names *pn, ctm_builder *b)
{
    for (size_t i = 0; i < pn->n; i++) {
        PyObject *str = cstring_str(&pn->items[i].name);
        int64_t s = str ? ctm_builder_string(b, str) : -1;
        Py_XDECREF(str);
        if (s < 0) {
            return -1;
        }
        ctm_builder_frame_function(b, pn->items[i].frame, (uint32_t)s);
    }
    return 0;
}

/* Tracer ids to snapshot indexes, filled under the lock. */
typedef struct {
    ctm_builder *b;
    ctm_interner *in;
    const cstring_strs *cs;
    uint32_t ncs;               /* filenames of cs usable this round */
    pending_names *pending;     /* resolved frames' function names */
    int64_t *frame_map;         /* tracer frame -> snapshot frame, or -1 */
    uint32_t *tb_map;           /* live tracer traceback -> snapshot's */
    int retry;                  /* a filename is not in cs yet */
} snap_maps;

static int64_t
map_frame(snap_maps *m, uint32_t id)
{
    if (m->frame_map[id] >= 0) {
        return m->frame_map[id];
    }
    ctm_tframe *f = ctm_interner_frame_unlocked(m->in, id);
    PyObject *name;
    Py_hash_t hash;
    if (f->code != NULL) {
        name = f->code->co_filename;
        if (name == NULL || !PyUnicode_Check(name)) {
            name = ctm_state.unknown_str;
        }
        /* str's own hash, in C even for a subclass */
        hash = PyUnicode_Type.tp_hash(name);
    }
    else if (f->filename < m->ncs && m->cs->strs[f->filename] != NULL) {
        name = m->cs->strs[f->filename];
        hash = m->cs->hashes[f->filename];
    }
    else {
        m->retry = 1;
        return -1;
    }
    int64_t s = ctm_builder_string_hashed(m->b, name, hash);
    if (s < 0) {
        return -1;
    }
    int64_t r = ctm_builder_frame(m->b, (uint32_t)s,
                                  ctm_tframe_lineno_unlocked(f));
    if (r < 0) {
        return -1;
    }
    /* Two tracer frames on one line make one snapshot frame, which
     * keeps the first name it is given (interning.h): a code frame's
     * now, a resolved frame's once the traces are copied. */
    if (f->code != NULL) {
        name = ctm_code_function(f->code);
        if (name == NULL || !PyUnicode_Check(name)) {
            name = NULL;
        }
        else {
            hash = PyUnicode_Type.tp_hash(name);
        }
    }
    else {
        name = NULL;
        pending_names *pn = m->pending;
        if (f->function != 0) {
            if (ctm_grow((void **)&pn->items, &pn->cap, pn->n + 1,
                         sizeof(pending_name)) < 0) {
                return -1;
            }
            pn->items[pn->n].frame = (uint32_t)r;
            pn->items[pn->n++].name = *ctm_interner_cstring_unlocked(
                m->in, f->function - 1);
        }
    }
    if (name != NULL) {
        s = ctm_builder_string_hashed(m->b, name, hash);
        if (s < 0) {
            return -1;
        }
        ctm_builder_frame_function(m->b, (uint32_t)r, (uint32_t)s);
    }
    m->frame_map[id] = r;
    return r;
}

static int64_t
map_traceback(snap_maps *m, uint32_t id)
{
    const ctm_ttb *t = ctm_interner_traceback_unlocked(m->in, id);
    const uint32_t *tids = ctm_interner_frame_ids_unlocked(m->in) + t->first;
    uint32_t buf[128];
    uint32_t *ids = t->nframe <= 128 ? buf
        : ctm_malloc((size_t)t->nframe * sizeof(uint32_t));
    if (ids == NULL) {
        return -1;
    }
    int64_t r = -1;
    for (uint32_t i = 0; i < t->nframe; i++) {
        int64_t f = map_frame(m, tids[i]);
        if (f < 0) {
            goto done;
        }
        ids[i] = (uint32_t)f;
    }
    r = ctm_builder_traceback(m->b, ids, t->nframe, t->total_nframe);
done:
    if (ids != buf) {
        ctm_free(ids);
    }
    return r;
}

/* The pages of an array, touched 2 MiB at a time (a huge page) by
 * whichever thread takes the next chunk: the helper from the start, the
 * snapshot's own thread once its mapping is done. */
typedef struct {
    char *p;
    size_t n;
    atomic_size_t next;         /* offset of the next chunk */
} page_range;

#define TOUCH_CHUNK ((size_t)2 << 20)

static void
touch_range(void *arg)
{
    page_range *r = arg;
    size_t at;
    while ((at = atomic_fetch_add(&r->next, TOUCH_CHUNK)) < r->n) {
        ctm_touch_pages(r->p + at, r->n - at < TOUCH_CHUNK ? r->n - at
                                                           : TOUCH_CHUNK);
    }
}

/* Below this many bytes of traces, mapping their pages as the placing
 * pass goes is cheaper than a helper thread. */
#define TOUCH_HELPER_MIN ((size_t)4 << 20)

/* The lock held, b holding its errors: the live traces, grouped, in
 * *traces (*ntraces of them), and their tracebacks in b, with the first
 * ncs filenames of cs. 0; 1 to go round again (a filename was not
 * there); -1 if memory ran out. */
static int
snapshot_unlocked(const cstring_strs *cs, uint32_t ncs, int peak,
                  ctm_builder *b, pending_names *pending,
                  ctm_snap_trace **traces,
                  Py_ssize_t *ntraces, size_t *bytes)
{
    CTM_ASSERT_LOCKED();
    ctm_interner *in = ctm_tracer.interner;
    uint32_t ntb = in ? (uint32_t)ctm_interner_ntracebacks_unlocked(in) : 0;
    *traces = NULL;
    *ntraces = 0;
    if (ntb == 0) {
        return 0;
    }
    snap_maps m = {b, in, cs, ncs, pending, NULL, NULL, 0};
    ctm_placement g;
    ctm_snap_trace *out = NULL;
    int rc = -1;
    if (ctm_traces_counts_unlocked(&ctm_tracer.traces, ntb, peak, &g) < 0) {
        goto done;
    }
    size_t n = g.n;
    uint32_t nframes = ctm_interner_nframes_unlocked(in);
    out = ctm_large_new(n * sizeof(ctm_snap_trace), bytes);
    m.frame_map = ctm_malloc((size_t)nframes * sizeof(int64_t));
    m.tb_map = ctm_malloc((size_t)ntb * sizeof(uint32_t));
    if (out == NULL || m.frame_map == NULL || m.tb_map == NULL) {
        goto done;
    }
    memset(m.frame_map, 0xff, (size_t)nframes * sizeof(int64_t));
    /* the snapshot's tables hold at most what the live tracer tracebacks
     * name: room for that at once */
    size_t live = 0, refs = 0;
    for (uint32_t i = 0; i < ntb; i++) {
        if (g.counts[i]) {
            live++;
            refs += ctm_interner_traceback_unlocked(in, i)->nframe;
        }
    }
    if (ctm_builder_reserve_tables(b, (Py_ssize_t)(refs < nframes ? refs
                                                                  : nframes),
                                   (Py_ssize_t)live, (Py_ssize_t)refs) < 0) {
        goto done;
    }
    ctm_helper helper;
    page_range pages = {(char *)out, n * sizeof(ctm_snap_trace), 0};
    int helped = pages.n >= TOUCH_HELPER_MIN;
    if (helped) {
        ctm_helper_start(&helper, touch_range, &pages);
    }
    int mapped = 1;
    for (uint32_t i = 0; i < ntb && mapped; i++) {
        if (g.counts[i]) {
            int64_t t = map_traceback(&m, i);
            mapped = t >= 0;
            m.tb_map[i] = (uint32_t)t;
        }
    }
    if (helped) {
        touch_range(&pages);
        ctm_helper_join(&helper);
    }
    if (!mapped) {
        rc = m.retry ? 1 : -1;
        goto done;
    }
    if (ctm_traces_place_unlocked(&ctm_tracer.traces, &g, m.tb_map,
                                  out) < 0) {
        goto done;
    }
    *traces = out;
    *ntraces = (Py_ssize_t)n;
    out = NULL;
    rc = 0;
done:
    ctm_placement_free(&g);
    ctm_free(out);
    ctm_free(m.frame_map);
    ctm_free(m.tb_map);
    return rc;
}

ctm_snapdata *
ctm_tracer_snapshot(int peak)
{
    cstring_strs cs = {0};
    ctm_snapdata *result = NULL;
    int rc = 1;
#ifdef CTM_LATE_FILENAMES
    /* Test builds: the first round leaves out the newest filename, as if
     * it had arrived after cs was made, so that the suite takes the
     * second round whenever a snapshot has resolved frames. */
    uint32_t late = 1;
#else
    uint32_t late = 0;
#endif
    ctm_tracer_reader_begin();
    while (rc > 0) {
        ctm_builder *b = NULL;
        if (cstring_strs_update(&cs) < 0 || (b = ctm_builder_new()) == NULL) {
            break;
        }
        ctm_snap_trace *traces;
        Py_ssize_t ntraces;
        size_t bytes = 0;
        uint64_t interval = 0;
        pending_names pending = {NULL, 0, 0};
        ctm_builder_hold_errors(b);
        ctm_tables_lock();
        if (peak && ctm_tracer.traces.peak_lost) {
            rc = -1;            /* the record is wrong */
            ctm_tables_unlock();
            ctm_builder_free(b);
            PyErr_SetString(PyExc_MemoryError,
                            "the peak record ran out of memory: "
                            "call reset_peak() to start a new one");
            break;
        }
        rc = snapshot_unlocked(&cs, cs.n - (late < cs.n ? late : cs.n), peak,
                               b, &pending, &traces, &ntraces, &bytes);
        /* read with the traces it describes: start() sets it while the
         * tables are empty, under this lock */
        interval = ctm_tracer.traces.sample_interval;
        late = 0;
        ctm_tables_unlock();
        if (ctm_builder_release_errors(b) < 0 || rc < 0
            || (rc == 0 && pending_names_apply(&pending, b) < 0)) {
            ctm_free(pending.items);
            ctm_free(traces);
            if (!PyErr_Occurred()) {
                PyErr_NoMemory();
            }
            ctm_builder_free(b);
            break;
        }
        ctm_free(pending.items);
        if (rc == 0) {
            if (traces != NULL) {
                ctm_builder_adopt_traces(b, traces, ntraces);
            }
            result = ctm_builder_finish(b);
            if (result != NULL) {
                result->sample_interval = interval;
                if (result->traces != NULL) {
                    result->traces_bytes = bytes;
                }
            }
        }
        else {
            ctm_builder_free(b);
        }
    }
    cstring_strs_free(&cs);
    ctm_tracer_reader_end();
    return result;
}

/* The function names of the copied frames, most recent first, or None
 * if none has one (a new reference, NULL on error). */
static PyObject *
copied_functions(const frame_copy *frames, const ctm_cstring *cfuncs,
                 uint32_t n)
{
    uint32_t named = 0;
    for (uint32_t i = 0; i < n; i++) {
        named += frames[i].function != NULL || frames[i].cfunction;
    }
    if (named == 0) {
        Py_RETURN_NONE;
    }
    PyObject *res = PyTuple_New(n);
    for (uint32_t i = 0; res != NULL && i < n; i++) {
        PyObject *name = frames[i].function != NULL
            ? Py_NewRef(frames[i].function)
            : frames[i].cfunction ? cstring_str(&cfuncs[i])
                                  : Py_NewRef(Py_None);
        if (name == NULL) {
            Py_CLEAR(res);
            break;
        }
        PyTuple_SET_ITEM(res, i, name);
    }
    return res;
}

PyObject *
ctm_tracer_traceback_of(uint32_t domain, uintptr_t ptr)
{
    return ctm_tracer_named_traceback_of(domain, ptr, NULL);
}

PyObject *
ctm_tracer_named_traceback_of(uint32_t domain, uintptr_t ptr,
                              PyObject **functions)
{
    /* Copy the block's frames under the lock; build the tuple after. */
    frame_copy buf[64];
    frame_copy *frames = buf;
    ctm_cstring names[64], funcs[64];
    ctm_cstring *cnames = names, *cfuncs = funcs;
    uint32_t n = 0, ncopied = 0;
    int found = 0, nomem = 0;
    PyObject *res = NULL;

    ctm_tracer_reader_begin();
    ctm_tables_lock();
    const ctm_value *v = atomic_load(&ctm_tracer.tracing)
        ? ctm_traces_get_unlocked(&ctm_tracer.traces, domain, ptr) : NULL;
    if (v != NULL) {
        ctm_interner *in = ctm_tracer.interner;
        const ctm_ttb *t = ctm_interner_traceback_unlocked(in, v->traceback);
        const uint32_t *ids = ctm_interner_frame_ids_unlocked(in);
        found = 1;
        n = t->nframe;
        if (n > 64) {
            frames = ctm_malloc(n * sizeof(frame_copy));
            cnames = ctm_malloc(n * sizeof(ctm_cstring));
            cfuncs = ctm_malloc(n * sizeof(ctm_cstring));
            nomem = frames == NULL || cnames == NULL || cfuncs == NULL;
        }
        for (uint32_t i = 0; !nomem && i < n; i++) {
            ctm_tframe *f = ctm_interner_frame_unlocked(in,
                                                        ids[t->first + i]);
            frame_copy *fc = &frames[i];
            fc->filename = f->code ? code_filename(f->code) : NULL;
            fc->function = NULL;
            fc->cstring = i;
            fc->lineno = ctm_tframe_lineno_unlocked(f);
            fc->cfunction = 0;
            if (f->code != NULL) {
                PyObject *name = ctm_code_function(f->code);
                if (name != NULL && PyUnicode_Check(name)) {
                    fc->function = Py_NewRef(name);
                }
            }
            else {
                cnames[i] = *ctm_interner_cstring_unlocked(in, f->filename);
                if (f->function) {
                    cfuncs[i] = *ctm_interner_cstring_unlocked(
                        in, f->function - 1);
                    fc->cfunction = 1;
                }
            }
            ncopied = i + 1;
        }
    }
    ctm_tables_unlock();
    if (!found) {
        ctm_tracer_reader_end();
        Py_RETURN_NONE;
    }
    if (nomem) {
        PyErr_NoMemory();
        goto done;
    }
    frames_copy c = {frames, cnames};
    res = PyTuple_New(n);
    if (res == NULL) {
        goto done;
    }
    for (uint32_t i = 0; i < n; i++) {
        PyObject *name = frame_filename(&c, i);
        if (name == NULL) {
            Py_CLEAR(res);
            goto done;
        }
        PyObject *pair = Py_BuildValue("(Ni)", name, frames[i].lineno);
        if (pair == NULL) {
            Py_CLEAR(res);
            goto done;
        }
        PyTuple_SET_ITEM(res, i, pair);
    }
    if (functions != NULL) {
        *functions = copied_functions(frames, cfuncs, n);
        if (*functions == NULL) {
            Py_CLEAR(res);
        }
    }
done:
    for (uint32_t i = 0; i < ncopied; i++) {
        Py_XDECREF(frames[i].filename);
        Py_XDECREF(frames[i].function);
    }
    if (frames != buf) {
        ctm_free(frames);
    }
    if (cnames != names) {
        ctm_free(cnames);
    }
    if (cfuncs != funcs) {
        ctm_free(cfuncs);
    }
    ctm_tracer_reader_end();
    return res;
}
