/* Snapshot.filter_traces' selection (ctm_filter_keep): which traces of
 * snapshot data a sequence of filters keeps, with the stdlib's semantics
 * (inclusive filters first, any of them; then exclusive ones, all of
 * them; in the order given, with the same short-circuits and errors).
 *
 * It never matches per trace when it can match per distinct value: a
 * Filter is matched once against each distinct filename of the snapshot,
 * then once per distinct frame (the lineno test), then once per
 * traceback, giving a byte table indexed by traceback; each trace then
 * costs a table lookup and, for filters with a domain, an integer
 * comparison. Objects that are not exactly Filter or DomainFilter (user
 * subclasses of BaseFilter, Filter subclasses, filters whose domain is
 * not an int) fall back to calling filter._match(raw_trace) per trace,
 * exactly as the stdlib does.
 *
 * This file sits below the types: it reads the filter objects' fields
 * (their layout is in types.h) and recognises the exact types through
 * ctm_state, and calls no type file.
 */
#include "types.h"

#include <string.h>

enum { CF_FILTER, CF_DOMAIN, CF_GENERIC };

/* Traceback table value for a trace on which the stdlib's
 * _match_traceback raises (traceback[0] of an empty traceback). */
#define TB_INDEX_ERROR 2

/* Domain test of a compiled filter. */
enum { DOM_NONE, DOM_VALUE, DOM_NEVER };

typedef struct {
    PyObject *obj;              /* strong reference */
    int kind;
    int inclusive;              /* truth of obj.inclusive */
    unsigned char *tbr;         /* CF_FILTER: per traceback, 0, 1 or
                                 * TB_INDEX_ERROR */
    int dom_mode;               /* CF_FILTER, CF_DOMAIN */
    uint32_t domain;
    PyObject *match;            /* CF_GENERIC: bound _match, lazily */
} cfilter;

/* An exact int (or bool) as a trace domain: DOM_VALUE with *out, or
 * DOM_NEVER when out of the uint32 range (no trace can be equal). -1 if
 * obj is another kind of object. */
static int
domain_of(PyObject *obj, uint32_t *out)
{
    if (!PyLong_CheckExact(obj) && !PyBool_Check(obj)) {
        return -1;
    }
    int overflow;
    long long v = PyLong_AsLongLongAndOverflow(obj, &overflow);
    if (overflow || v < 0 || v > (long long)UINT32_MAX) {
        return DOM_NEVER;
    }
    *out = (uint32_t)v;
    return DOM_VALUE;
}

/* Per traceback table of an exact Filter: _match_traceback's truth for
 * every traceback of d, matching each string and each frame once. */
static int
compile_filter(cfilter *cf, const ctm_snapdata *d)
{
    ctm_filter_object *f = (ctm_filter_object *)cf->obj;
    unsigned char *smatch = NULL, *fmatch = NULL;
    PyObject *pylineno = NULL;
    /* owned: == on a user object and fnmatch run Python code, which may
     * set or delete the filter's attributes */
    PyObject *lineno = Py_NewRef(f->lineno);
    int rc = -1;

    int all = PyObject_IsTrue(f->all_frames);
    if (all < 0) {
        Py_DECREF(lineno);
        return -1;
    }
    /* lineno test: none, an exact int compared in C, or == per frame */
    int lmode = 0;
    long long lval = 0;
    if (lineno != Py_None) {
        if (PyLong_CheckExact(lineno) || PyBool_Check(lineno)) {
            int overflow;
            lval = PyLong_AsLongLongAndOverflow(lineno, &overflow);
            lmode = overflow ? 3 : 1;
        }
        else {
            lmode = 2;
        }
    }

    smatch = ctm_malloc((size_t)d->nstrings);
    fmatch = ctm_malloc((size_t)d->nframes);
    cf->tbr = ctm_malloc((size_t)d->ntracebacks);
    if (smatch == NULL || fmatch == NULL || cf->tbr == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    for (Py_ssize_t i = 0; i < d->nstrings; i++) {
        PyObject *s = d->strings[i];
        int m = PyUnicode_READY(s) < 0
                ? -1 : ctm_glob_match(s, f->pattern, f->bracket);
        if (m < 0) {
            goto done;
        }
        smatch[i] = (unsigned char)m;
    }
    for (Py_ssize_t i = 0; i < d->nframes; i++) {
        const ctm_snap_frame *fr = &d->frames[i];
        int m = smatch[fr->filename];
        if (m && lmode == 1) {
            m = fr->lineno == lval;
        }
        else if (m && lmode == 3) {
            m = 0;
        }
        else if (m && lmode == 2) {
            pylineno = PyLong_FromLong(fr->lineno);
            if (pylineno == NULL) {
                goto done;
            }
            PyObject *eq = PyObject_RichCompare(pylineno, lineno, Py_EQ);
            Py_CLEAR(pylineno);
            m = eq ? PyObject_IsTrue(eq) : -1;
            Py_XDECREF(eq);
            if (m < 0) {
                goto done;
            }
        }
        fmatch[i] = (unsigned char)m;
    }
    for (Py_ssize_t i = 0; i < d->ntracebacks; i++) {
        const ctm_snap_tb *tb = &d->tracebacks[i];
        const uint32_t *refs = d->refs + tb->first;
        if (all) {
            int found = 0;
            for (uint32_t j = 0; j < tb->nframe && !found; j++) {
                found = fmatch[refs[j]];
            }
            cf->tbr[i] = found == cf->inclusive;
        }
        else if (tb->nframe == 0) {
            cf->tbr[i] = TB_INDEX_ERROR;
        }
        else {
            cf->tbr[i] = fmatch[refs[0]] ^ !cf->inclusive;
        }
    }
    rc = 0;
done:
    Py_DECREF(lineno);
    ctm_free(smatch);
    ctm_free(fmatch);
    return rc;
}

/* Choose how to evaluate obj, whose inclusive truth is known. */
static int
classify(cfilter *cf, const ctm_snapdata *d)
{
    cf->kind = CF_GENERIC;
    if (Py_TYPE(cf->obj) == ctm_state.Filter) {
        ctm_filter_object *f = (ctm_filter_object *)cf->obj;
        if (f->pattern == NULL || f->lineno == NULL
            || f->all_frames == NULL || f->domain == NULL) {
            return 0;
        }
        if (f->domain == Py_None) {
            cf->dom_mode = DOM_NONE;
        }
        else {
            int m = domain_of(f->domain, &cf->domain);
            if (m < 0) {
                return 0;
            }
            cf->dom_mode = m;
        }
        cf->kind = CF_FILTER;
        return compile_filter(cf, d);
    }
    if (Py_TYPE(cf->obj) == ctm_state.DomainFilter) {
        ctm_domainfilter_object *f = (ctm_domainfilter_object *)cf->obj;
        if (f->domain == NULL) {
            return 0;
        }
        int m = domain_of(f->domain, &cf->domain);
        if (m < 0) {
            return 0;
        }
        cf->dom_mode = m;
        cf->kind = CF_DOMAIN;
    }
    return 0;
}

/* _match of a filter evaluated in C, for a trace with traceback tb and
 * domain: 1, 0, or TB_INDEX_ERROR. */
static inline int
fast_eval(const cfilter *cf, uint32_t tb, uint32_t domain)
{
    int eq = cf->dom_mode == DOM_VALUE && domain == cf->domain;
    if (cf->kind == CF_DOMAIN) {
        return eq ^ !cf->inclusive;
    }
    int r = cf->tbr[tb];
    if (r == TB_INDEX_ERROR || cf->dom_mode == DOM_NONE) {
        return r;
    }
    return cf->inclusive ? (r && eq) : (r || !eq);
}

/* _filter_trace for filters all evaluated in C: the inclusive ones
 * (order[0..ninc)) then the exclusive ones, with the stdlib's
 * short-circuits. 1 keep, 0 drop, or TB_INDEX_ERROR. */
static int
fast_decide(cfilter *const *order, Py_ssize_t ninc, Py_ssize_t n,
            uint32_t tb, uint32_t domain)
{
    if (ninc) {
        int any = 0;
        for (Py_ssize_t j = 0; j < ninc && !any; j++) {
            any = fast_eval(order[j], tb, domain);
            if (any == TB_INDEX_ERROR) {
                return any;
            }
        }
        if (!any) {
            return 0;
        }
    }
    for (Py_ssize_t j = ninc; j < n; j++) {
        int r = fast_eval(order[j], tb, domain);
        if (r != 1) {
            return r;
        }
    }
    return 1;
}

static int
index_error(void)
{
    PyErr_SetString(PyExc_IndexError, "tuple index out of range");
    return -1;
}

/* All filters in C. A trace's fate depends only on its traceback and on
 * which of the filters' domains (if any) it has, so it is decided once
 * per (domain class, traceback) in a table, and each trace costs one
 * lookup whatever the number of filters. Return 0, or -1 with an
 * exception; 1 if the table would be too big (the caller decides per
 * trace). */
static int
keep_by_table(const ctm_snapdata *d, cfilter *const *order, Py_ssize_t ninc,
              Py_ssize_t n, unsigned char *keep)
{
    uint32_t *doms = ctm_malloc((size_t)(n ? n : 1) * sizeof(uint32_t));
    unsigned char *table = NULL;
    Py_ssize_t m = 0;
    int rc = -1;
    if (doms == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    for (Py_ssize_t k = 0; k < n; k++) {
        if (order[k]->dom_mode != DOM_VALUE) {
            continue;
        }
        Py_ssize_t j = 0;
        while (j < m && doms[j] != order[k]->domain) {
            j++;
        }
        if (j == m) {
            doms[m++] = order[k]->domain;
        }
    }
    Py_ssize_t ntb = d->ntracebacks;
    if ((m + 1) * ntb > 4 * d->ntraces + 4096) {
        rc = 1;
        goto done;
    }
    /* class m: a domain equal to none of them */
    uint32_t other = 0;
    for (Py_ssize_t j = 0; j < m; j++) {
        if (doms[j] == other) {
            other++;
            j = -1;
        }
    }
    size_t tsize = (size_t)((m + 1) * ntb);
    table = ctm_malloc(tsize ? tsize : 1);
    if (table == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    for (Py_ssize_t c = 0; c <= m; c++) {
        uint32_t dv = c < m ? doms[c] : other;
        unsigned char *row = table + c * ntb;
        for (Py_ssize_t tb = 0; tb < ntb; tb++) {
            row[tb] = (unsigned char)fast_decide(order, ninc, n,
                                                 (uint32_t)tb, dv);
        }
    }
    for (Py_ssize_t i = 0; i < d->ntraces; i++) {
        const ctm_snap_trace *tr = &d->traces[i];
        Py_ssize_t c = 0;
        while (c < m && doms[c] != tr->domain) {
            c++;
        }
        unsigned char v = table[c * ntb + tr->traceback];
        if (v == TB_INDEX_ERROR) {
            index_error();
            goto done;
        }
        keep[i] = v;
    }
    rc = 0;
done:
    ctm_free(doms);
    ctm_free(table);
    return rc;
}

typedef struct {
    const ctm_snapdata *d;
    PyObject **cache;           /* frames tuples for raw traces, lazily */
} rawctx;

/* Truth of cf._match(trace i): 1, 0 or -1. *raw is the raw trace tuple,
 * made on first need and shared by the filters evaluated on the same
 * trace, as the stdlib passes them the same tuple. */
static int
cfilter_eval(cfilter *cf, rawctx *ctx, Py_ssize_t i, PyObject **raw)
{
    const ctm_snap_trace *tr = &ctx->d->traces[i];
    if (cf->kind != CF_GENERIC) {
        int r = fast_eval(cf, tr->traceback, tr->domain);
        return r == TB_INDEX_ERROR ? index_error() : r;
    }
    if (cf->match == NULL) {
        cf->match = PyObject_GetAttrString(cf->obj, "_match");
        if (cf->match == NULL) {
            return -1;
        }
    }
    if (*raw == NULL) {
        if (ctx->cache == NULL) {
            ctx->cache = ctm_calloc((size_t)ctx->d->ntracebacks,
                                    sizeof(PyObject *));
            if (ctx->cache == NULL) {
                PyErr_NoMemory();
                return -1;
            }
        }
        *raw = ctm_snapdata_trace_tuple(ctx->d, i, ctx->cache);
        if (*raw == NULL) {
            return -1;
        }
    }
    PyObject *res = PyObject_CallOneArg(cf->match, *raw);
    if (res == NULL) {
        return -1;
    }
    int r = PyObject_IsTrue(res);
    Py_DECREF(res);
    return r;
}

int
ctm_filter_keep(const ctm_snapdata *d, PyObject *filters,
                unsigned char *keep)
{
    cfilter *cfs = NULL;
    Py_ssize_t n = 0, ninc = 0;
    size_t cap = 0;
    rawctx ctx = {d, NULL};
    PyObject *it = NULL, *item;
    cfilter **order = NULL;
    int rc = -1;

    /* Split into inclusive and exclusive filters, as the stdlib does
     * before looking at any trace. */
    it = PyObject_GetIter(filters);
    if (it == NULL) {
        goto done;
    }
    while ((item = PyIter_Next(it)) != NULL) {
        PyObject *inc = PyObject_GetAttrString(item, "inclusive");
        int t = inc ? PyObject_IsTrue(inc) : -1;
        Py_XDECREF(inc);
        if (t < 0) {
            Py_DECREF(item);
            goto done;
        }
        if (ctm_grow((void **)&cfs, &cap, (size_t)n + 1,
                     sizeof(cfilter)) < 0) {
            Py_DECREF(item);
            PyErr_NoMemory();
            goto done;
        }
        memset(&cfs[n], 0, sizeof(cfilter));
        cfs[n].obj = item;
        cfs[n].inclusive = t;
        n++;
        ninc += t;
    }
    if (PyErr_Occurred()) {
        goto done;
    }
    if (d->ntraces == 0) {
        /* the stdlib evaluates nothing more without a trace */
        rc = 0;
        goto done;
    }
    for (Py_ssize_t k = 0; k < n; k++) {
        if (classify(&cfs[k], d) < 0) {
            goto done;
        }
    }

    /* Inclusive filters first, then exclusive ones, each group in the
     * order given, with the stdlib's short-circuits (any / any not). */
    order = ctm_malloc((size_t)(n ? n : 1) * sizeof(cfilter *));
    if (order == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    Py_ssize_t o = 0;
    for (int pass = 1; pass >= 0; pass--) {
        for (Py_ssize_t k = 0; k < n; k++) {
            if (cfs[k].inclusive == pass) {
                order[o++] = &cfs[k];
            }
        }
    }
    int all_fast = 1;
    for (Py_ssize_t k = 0; k < n; k++) {
        all_fast &= cfs[k].kind != CF_GENERIC;
    }
    if (all_fast) {
        rc = keep_by_table(d, order, ninc, n, keep);
        if (rc <= 0) {
            goto done;
        }
        rc = -1;
    }
    cfilter **exc = order + ninc;
    Py_ssize_t nexc = n - ninc;
    for (Py_ssize_t i = 0; i < d->ntraces; i++) {
        PyObject *raw = NULL;
        int k = 1, r = 0;
        if (ninc) {
            k = 0;
            for (Py_ssize_t j = 0; j < ninc && !k; j++) {
                r = cfilter_eval(order[j], &ctx, i, &raw);
                if (r < 0) {
                    break;
                }
                k = r;
            }
        }
        if (r >= 0 && k) {
            for (Py_ssize_t j = 0; j < nexc && k; j++) {
                r = cfilter_eval(exc[j], &ctx, i, &raw);
                if (r < 0) {
                    break;
                }
                k = r;
            }
        }
        Py_XDECREF(raw);
        if (r < 0) {
            goto done;
        }
        keep[i] = (unsigned char)k;
    }
    rc = 0;

done:
    Py_XDECREF(it);
    ctm_free(order);
    for (Py_ssize_t k = 0; k < n; k++) {
        Py_DECREF(cfs[k].obj);
        Py_XDECREF(cfs[k].match);
        ctm_free(cfs[k].tbr);
    }
    ctm_free(cfs);
    if (ctx.cache != NULL) {
        for (Py_ssize_t t = 0; t < d->ntracebacks; t++) {
            Py_XDECREF(ctx.cache[t]);
        }
        ctm_free(ctx.cache);
    }
    return rc;
}
