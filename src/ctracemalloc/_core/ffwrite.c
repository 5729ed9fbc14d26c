/* Our snapshot format's writer: ctm_dump (to a file) and ctm_dump_bytes
 * (to a bytes object, for pickling), in the layout of ffspec.h.
 *
 * Invariants: the output is the header, then COUNTS, STRINGS, FRAMES,
 * FUNCTIONS (if a frame has a name), TRACEBACKS and TRACES sections in
 * that order (the repeatable ones cut
 * into blocks of about BLOCK_TARGET bytes or TRACES_PER_SECTION traces,
 * never splitting an item), LIMIT, EXTRA if the snapshot has attributes,
 * and END; every byte written goes through the running XXH64, whose
 * digest follows each section. The LIMIT and EXTRA payloads are made
 * before the file is opened, so that an unpicklable attribute leaves no
 * truncated file behind. Items are written in the order of the
 * snapshot's arrays, so that the reader finds the same indexes.
 */
#include "formats.h"
#include "codec.h"
#include "ffspec.h"

#include <fcntl.h>
#include <string.h>
#include <unistd.h>

/* Room before a block's items for its tag, length and count. */
#define BLOCK_HEAD 24

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

typedef struct {
    int fd;                     /* -1: the output is the bytes object */
    PyObject *path;             /* for OSError; borrowed */
    PyObject *bytes;            /* output when fd == -1 */
    size_t cap;                 /* capacity of bytes */
    size_t used;                /* bytes in bytes, or in obuf */
    uint8_t *obuf;              /* file output buffer */
    ctm_xxh64_state hash;
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
        int direct = n >= CTM_IO_BUFSIZE / 2;
        if (direct || w->used + n > CTM_IO_BUFSIZE) {
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
    ctm_xxh64_update(&w->hash, p, n);
    return out_raw(w, p, n);
}

/* Write the check of everything written so far. */
static int
out_check(writer *w)
{
    uint8_t check[FF_CHECK_SIZE];
    store64le(check, ctm_xxh64_digest(&w->hash));
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
    if (ctm_grow((void **)&w->blk, &w->bcap, w->bpos + n, 1) < 0) {
        PyErr_NoMemory();
        return -1;
    }
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
write_functions(writer *w, const ctm_snapdata *d)
{
    int64_t previous = -1;
    for (Py_ssize_t i = 0; i < d->nframes; i++) {
        if (d->frames[i].function == CTM_NO_FUNCTION) {
            continue;
        }
        if (blk_item(w, TAG_FUNCTIONS, 20) < 0) {
            return -1;
        }
        uint8_t *p = w->blk + w->bpos;
        p = put_varint(p, (uint64_t)(i - previous - 1));
        p = put_varint(p, d->frames[i].function);
        previous = i;
        w->bpos = (size_t)(p - w->blk);
        w->bcount++;
    }
    return blk_flush(w, TAG_FUNCTIONS);
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
        /* Four traces are a cache line: this loop is bound by reading
         * the traces from memory, so it asks for a line well ahead
         * instead of leaving it to the hardware prefetcher. */
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
    /* an exact snapshot is written as 2.1 was, a sampled one needs the
     * version of SAMPLING (ffspec.h) */
    int sampled = d->sample_interval != 0;
    unsigned major = sampled ? FF_MAJOR : FF_EXACT_MAJOR;
    unsigned minor = sampled ? FF_MINOR : FF_EXACT_MINOR;
    uint8_t header[FF_HEADER_SIZE];
    memcpy(header, ff_magic, 8);
    header[8] = major & 0xff;
    header[9] = (uint8_t)(major >> 8);
    header[10] = minor & 0xff;
    header[11] = (uint8_t)(minor >> 8);
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
    if (sampled) {
        uint8_t interval[10];
        p = put_varint(interval, d->sample_interval);
        if (out_section(w, TAG_SAMPLING, interval,
                        (size_t)(p - interval)) < 0) {
            return -1;
        }
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
        || write_functions(w, d) < 0
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
    ctm_xxh64_init(&w.hash);

    if (make_payloads(limit, extra, &limit_payload, &extra_payload) < 0) {
        goto done;
    }
    w.obuf = ctm_malloc(CTM_IO_BUFSIZE);
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
    ctm_xxh64_init(&w.hash);

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
