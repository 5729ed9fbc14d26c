/* Placing the live traces into a snapshot, grouped by traceback (the
 * counting sort that store.h describes), and renaming their tracebacks
 * when the interner is compacted. Read-only on the tables but for the
 * renaming and the mended counts. */
#include "storeimpl.h"

#include <string.h>

/* Below this many live traces, placing them for a snapshot takes less
 * than a millisecond, and a second thread would cost more than it
 * saves. */
#define PLACE_PARALLEL_MIN (1u << 17)

/* How a share of the placing handles each trace: counted, or written
 * to its traceback's next place (forwards) or previous place
 * (backwards), under its snapshot traceback id. A place is taken from
 * next[] even when it falls outside out (only wrong counts make that
 * happen; the caller checks them from next[] afterwards). */
enum { COUNT, FORWARDS, BACKWARDS };

/* Which traces: the live ones, the peak record's, or both (those the
 * interner must keep). */
enum { LIVE = 1, PEAK = 2, BOTH = LIVE | PEAK };

typedef struct {
    const ctm_traces *tr;
    size_t from, to;            /* slots of the main store */
    int first, last;            /* + the nursery, + the other stores and
                                   the gone list */
    int which;
    int how;
    uint64_t *counts;           /* COUNT */
    uint64_t *next;             /* FORWARDS, BACKWARDS */
    const uint32_t *rename;
    ctm_snap_trace *out;
    uint64_t n;                 /* places in out */
} place_share;

static inline void
place_one(const place_share *g, uint32_t domain, uint64_t size, uint32_t tb)
{
    uint64_t p;
    if (g->how == COUNT) {
        g->counts[tb]++;
        return;
    }
    if (g->how == FORWARDS) {
        p = g->next[tb]++;
    }
    else {
        p = --g->next[tb];      /* wraps below 0: outside */
    }
    if (p < g->n) {
        ctm_snap_trace *o = &g->out[p];
        o->size = size;
        o->traceback = g->rename[tb];
        o->domain = domain;
    }
}

/* The traces of slots [from, to) of store s. */
static void
store_place(const place_share *g, uint32_t domain, const ctm_store *s,
            size_t from, size_t to)
{
    for (size_t i = from; i < to; i++) {
        const ctm_bucket *b = s->slots[i].bucket;
        if (b == NULL) {
            continue;
        }
        const ctm_value *vals = bucket_values(b);
        for (uint32_t j = 0; j <= b->mask; j++) {
            if (b->keys[j] == NO_KEY) {
                continue;
            }
            uint64_t size = vals[j].size;
            if (size == CTM_BIG_SIZE) {
                uintptr_t ptr = (s->slots[i].region << CTM_REGION_BITS)
                    | b->keys[j];
                size = ctm_traces_value_size_unlocked(g->tr, domain, ptr,
                                                      &vals[j]);
            }
            place_one(g, domain, size, vals[j].traceback);
        }
    }
}

/* A share of the placing. Read-only on the tables, which the caller
 * has locked. */
static void
place_share_run(void *arg)
{
    const place_share *g = arg;
    const ctm_traces *tr = g->tr;
    int live = g->which & LIVE;
    for (uint32_t i = 0; g->first && tr->nursery != NULL && i < NURSERY_SIZE;
         i++) {
        const ctm_young *y = &tr->nursery[i];
        if (y->ptr != 0 && (live || young_at_peak(tr, y))) {
            place_one(g, young_domain(y->ptr), y->value.size,
                      y->value.traceback);
        }
    }
    store_place(g, CTM_DEFAULT_DOMAIN, &tr->main, g->from, g->to);
    if (!g->last) {
        return;
    }
    for (size_t i = 0; i < tr->nothers; i++) {
        const ctm_store *s = &tr->others[i].store;
        store_place(g, tr->others[i].domain, s, 0, store_slots(s));
    }
    /* the traces stored since the peak */
    if (live) {
        store_place(g, CTM_DEFAULT_DOMAIN, &tr->recent, 0,
                    store_slots(&tr->recent));
        for (size_t i = 0; i < tr->nothers; i++) {
            const ctm_store *s = &tr->others[i].recent;
            store_place(g, tr->others[i].domain, s, 0, store_slots(s));
        }
    }
    /* the peak's traces gone since */
    for (size_t i = 0; (g->which & PEAK) && i < tr->ngone; i++) {
        place_one(g, tr->gone[i].domain, tr->gone[i].size,
                  tr->gone[i].traceback);
    }
}

/* Run shares a and b at once, b on a helper thread. */
static void
run_shares(place_share *a, place_share *b)
{
    ctm_helper h;
    ctm_helper_start(&h, place_share_run, b);
    place_share_run(a);
    ctm_helper_join(&h);
}

void
ctm_placement_free(ctm_placement *g)
{
    ctm_free(g->counts);
    g->counts = NULL;
}

/* Count the traces of which (how = COUNT) into counts. */
static void
count_all(const ctm_traces *tr, int which, uint64_t *counts)
{
    place_share c = {tr, 0, store_slots(&tr->main), 1, 1, which, COUNT,
                     counts, NULL, NULL, NULL, 0};
    place_share_run(&c);
}

int
ctm_traces_counts_unlocked(ctm_traces *tr, uint32_t ntb, int peak,
                           ctm_placement *g)
{
    g->ntb = ntb;
    g->peak = peak;
    g->n = tr->ntraces;
    g->counts = ctm_calloc(ntb ? ntb : 1, sizeof(uint64_t));
    if (g->counts == NULL) {
        return -1;
    }
    if (peak) {
        count_all(tr, PEAK, g->counts);
        g->n = 0;
        for (uint32_t i = 0; i < ntb; i++) {
            g->n += g->counts[i];
        }
        return 0;
    }
    size_t known = ntb < tr->live_cap ? ntb : tr->live_cap;
    if (known) {
        memcpy(g->counts, tr->live, known * sizeof(uint64_t));
    }
    return 0;
}

/* Whether counts[] were right, from the places the shares took: every
 * trace of traceback i took one, next[i] - start forwards from the start
 * of its run and (when back is not NULL) end - back[i] backwards from its
 * end, which add up to counts[i] if and only if that is its number of
 * traces. */
static int
counts_right(const ctm_placement *g, const uint64_t *next,
             const uint64_t *back)
{
    uint64_t pos = 0;
    for (uint32_t i = 0; i < g->ntb; i++) {
        uint64_t end = pos + g->counts[i];
        uint64_t seen = (next[i] - pos) + (back ? end - back[i] : 0);
        if (seen != g->counts[i]) {
            return 0;
        }
        pos = end;
    }
    return 1;
}

/* Place every trace from counts[] (forwards, by one thread when back is
 * NULL). */
static void
place(const ctm_traces *tr, const ctm_placement *g, uint64_t *next,
      uint64_t *back, const uint32_t *rename, ctm_snap_trace *out)
{
    uint64_t pos = 0;
    for (uint32_t i = 0; i < g->ntb; i++) {
        next[i] = pos;
        pos += g->counts[i];
        if (back != NULL) {
            back[i] = pos;
        }
    }
    size_t nslots = store_slots(&tr->main);
    int which = g->peak ? PEAK : LIVE;
    place_share a = {tr, 0, nslots, 1, 1, which, FORWARDS, NULL, next,
                     rename, out, g->n};
    if (back == NULL) {
        place_share_run(&a);
        return;
    }
    /* the helper's share of a traceback's traces fill its run from the
     * end, the other share's from the start: together they fill it */
    a.to = nslots / 2;
    a.last = 0;
    place_share b = {tr, nslots / 2, nslots, 0, 1, which, BACKWARDS, NULL,
                     back, rename, out, g->n};
    run_shares(&a, &b);
}

int
ctm_traces_place_unlocked(ctm_traces *tr, ctm_placement *g,
                          const uint32_t *rename, ctm_snap_trace *out)
{
    uint32_t ntb = g->ntb;
    uint64_t *next = ctm_malloc((ntb ? ntb : 1) * sizeof(uint64_t));
    uint64_t *back = g->n < PLACE_PARALLEL_MIN ? NULL
                   : ctm_malloc((size_t)ntb * sizeof(uint64_t));
    if (next == NULL) {
        ctm_free(back);
        return -1;
    }
    place(tr, g, next, back, rename, out);
    if (!counts_right(g, next, back)) {
        /* The tables' counts went wrong: a bug, which test builds stop
         * at. Count the traces, mend the counts, and place again. */
#ifdef CTM_SELF_CHECK
        fprintf(stderr, "ctracemalloc: the live trace counts are wrong\n");
        abort();
#endif
        memset(g->counts, 0, (size_t)ntb * sizeof(uint64_t));
        count_all(tr, LIVE, g->counts);
        memset(tr->live, 0, tr->live_cap * sizeof(uint64_t));
        memcpy(tr->live, g->counts,
               (ntb < tr->live_cap ? ntb : tr->live_cap) * sizeof(uint64_t));
        place(tr, g, next, NULL, rename, out);
    }
    ctm_free(next);
    ctm_free(back);
    return 0;
}

/* ---- the interner's compaction ---- */

int
ctm_traces_exact_counts_unlocked(ctm_traces *tr, uint32_t ntb,
                                 uint64_t **counts)
{
    uint64_t *c = ctm_calloc(ntb ? ntb : 1, sizeof(uint64_t));
    if (c == NULL || (ntb && ctm_traces_live_reserve(tr, ntb - 1) < 0)) {
        ctm_free(c);
        return -1;
    }
    count_all(tr, BOTH, c);
    *counts = c;
    return 0;
}

static void
store_rename(ctm_store *s, const uint32_t *map)
{
    for (size_t i = 0; i < store_slots(s); i++) {
        ctm_bucket *b = s->slots[i].bucket;
        if (b == NULL) {
            continue;
        }
        ctm_value *vals = bucket_values(b);
        for (uint32_t j = 0; j <= b->mask; j++) {
            if (b->keys[j] != NO_KEY) {
                vals[j].traceback = map[vals[j].traceback];
            }
        }
    }
}

void
ctm_traces_rename_unlocked(ctm_traces *tr, const uint32_t *map,
                           const uint64_t *counts, uint32_t ntb)
{
    for (uint32_t i = 0; tr->nursery != NULL && i < NURSERY_SIZE; i++) {
        ctm_young *y = &tr->nursery[i];
        if (y->ptr != 0) {
            y->value.traceback = map[y->value.traceback];
        }
    }
    store_rename(&tr->main, map);
    store_rename(&tr->recent, map);
    for (size_t i = 0; i < tr->nothers; i++) {
        store_rename(&tr->others[i].store, map);
        store_rename(&tr->others[i].recent, map);
    }
    /* counts were taken with room for ntb ids reserved, and new ids are
     * below old ones; they count the gone traces too, which are not
     * live */
    memset(tr->live, 0, tr->live_cap * sizeof(uint64_t));
    for (uint32_t i = 0; i < ntb; i++) {
        if (counts[i]) {
            CTM_ASSERT(map[i] < tr->live_cap);
            tr->live[map[i]] += counts[i];
        }
    }
    for (size_t i = 0; i < tr->ngone; i++) {
        ctm_gone *g = &tr->gone[i];
        g->traceback = map[g->traceback];
        CTM_ASSERT(tr->live[g->traceback] > 0);
        tr->live[g->traceback]--;
    }
}
