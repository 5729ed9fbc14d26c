/* Code records (coderecs.h says what they are for).
 *
 * Invariants:
 *  - a record is in use (code != NULL) from new() to free() or clear(),
 *    and then its code object is alive: its death frees the record
 *    first (through the owner);
 *  - no two records in use name the same code object;
 *  - CTM_NOTICE_WATCHER: by_code holds exactly the records in use, each
 *    in the probe run of its code's address;
 *  - CTM_NOTICE_CO_EXTRA: the unarmed list holds records in use, each at
 *    most once; a record in use that is not on it has its token in its
 *    code object's co_extra slot at extra_index;
 *  - free records form a list through n, from free_rec.
 */
#include "coderecs.h"

#include <string.h>

/* ---- tokens (CTM_NOTICE_CO_EXTRA) ---- */

/* A token: (generation << 32) | (record + 1), never NULL. Where a pointer
 * has 32 bits the generation is lost, and a token of a past generation
 * may name a record of another code object, still alive: resolving that
 * record early is harmless (its frames get their lines from the live
 * object; its next frames get a new record). */
static inline void *
rec_token(const ctm_coderecs *cr, uint32_t rec)
{
    return (void *)(uintptr_t)(((uint64_t)cr->gen << 32)
                               | ((uint64_t)rec + 1));
}

int64_t
ctm_coderecs_of_token(const ctm_coderecs *cr, void *token)
{
    uint64_t t = (uint64_t)(uintptr_t)token;
    uint32_t rec = (uint32_t)t - 1;
    if ((sizeof(uintptr_t) >= 8 && (uint32_t)(t >> 32) != cr->gen)
        || rec >= cr->nrecs || cr->recs[rec].code == NULL) {
        return -1;
    }
    return rec;
}

/* ---- addresses (CTM_NOTICE_WATCHER) ---- */

static inline uint32_t
code_hash(const PyCodeObject *code)
{
    return ctm_mix32((uint64_t)(uintptr_t)code);
}

static uint32_t
rec_hash(const void *owner, uint32_t rec)
{
    const ctm_coderecs *cr = owner;
    return code_hash(cr->recs[rec].code);
}

/* The slot of by_code that holds the record of code, or -1. */
static int64_t
by_code_slot(const ctm_coderecs *cr, const PyCodeObject *code)
{
    const ctm_index *ix = &cr->by_code;
    if (ix->slots == NULL) {
        return -1;
    }
    uint32_t j = code_hash(code) & ix->mask;
    uint32_t v;
    while ((v = ix->slots[j]) != 0) {
        if (cr->recs[v - 1].code == code) {
            return j;
        }
        j = (j + 1) & ix->mask;
    }
    return -1;
}

/* ---- records ---- */

int64_t
ctm_coderecs_find(const ctm_coderecs *cr, PyCodeObject *code)
{
    if (cr->notice == CTM_NOTICE_WATCHER) {
        int64_t j = by_code_slot(cr, code);
        return j < 0 ? -1 : (int64_t)cr->by_code.slots[j] - 1;
    }
    if (cr->notice != CTM_NOTICE_CO_EXTRA) {
        return -1;
    }
    int64_t r = ctm_coderecs_of_token(
        cr, ctm_code_get_extra(code, cr->extra_index));
    if (r >= 0 && cr->recs[r].code == code) {
        return r;
    }
    /* Made since the last arming, token not stored yet. */
    for (uint32_t i = 0; i < cr->nunarmed; i++) {
        if (cr->recs[cr->unarmed[i]].code == code) {
            return cr->unarmed[i];
        }
    }
    return -1;
}

int64_t
ctm_coderecs_new(ctm_coderecs *cr, PyCodeObject *code)
{
    CTM_ASSERT(cr->notice != CTM_NOTICE_NONE);
    /* by_code gets room for nrecs + 1 records, the most it can hold
     * after this one */
    if (cr->notice == CTM_NOTICE_CO_EXTRA
        ? ctm_grow((void **)&cr->unarmed, &cr->capunarmed,
                   (size_t)cr->nunarmed + 1, sizeof(uint32_t)) < 0
        : ctm_index_reserve(&cr->by_code, cr->nrecs, rec_hash, cr) < 0) {
        return -1;
    }
    uint32_t rec;
    if (cr->free_rec) {
        rec = cr->free_rec - 1;
        cr->free_rec = cr->recs[rec].n;
    }
    else {
        if (cr->nrecs >= 0x7fffffffu
            || ctm_grow((void **)&cr->recs, &cr->caprecs,
                        (size_t)cr->nrecs + 1, sizeof(ctm_coderec)) < 0) {
            return -1;
        }
        rec = cr->nrecs++;
    }
    ctm_coderec *r = &cr->recs[rec];
    r->code = code;
    r->n = r->cap = 0;
    r->items = NULL;
    if (cr->notice == CTM_NOTICE_CO_EXTRA) {
        cr->unarmed[cr->nunarmed++] = rec;
    }
    else {
        ctm_index_put(&cr->by_code, code_hash(code), rec);
    }
    return rec;
}

int
ctm_coderecs_unarmed(ctm_coderecs *cr, PyCodeObject **code, void **token)
{
    if (cr->nunarmed == 0) {
        return 0;
    }
    uint32_t rec = cr->unarmed[--cr->nunarmed];
    *code = cr->recs[rec].code;
    *token = rec_token(cr, rec);
    return 1;
}

void
ctm_coderecs_free(ctm_coderecs *cr, uint32_t rec)
{
    ctm_coderec *r = &cr->recs[rec];
    CTM_ASSERT(r->code != NULL);
    if (cr->notice == CTM_NOTICE_WATCHER) {
        /* Before its code goes: the index rehashes the records after
         * it in the run, never this one. */
        int64_t j = by_code_slot(cr, r->code);
        CTM_ASSERT(j >= 0 && cr->by_code.slots[j] == rec + 1);
        ctm_index_remove(&cr->by_code, (uint32_t)j, rec_hash, cr);
    }
    ctm_free(r->items);
    r->items = NULL;
    r->code = NULL;
    r->cap = 0;
    r->n = cr->free_rec;
    cr->free_rec = rec + 1;
}

void
ctm_coderecs_init(ctm_coderecs *cr)
{
    memset(cr, 0, sizeof(*cr));
    cr->notice = CTM_NOTICE_NONE;
    cr->extra_index = -1;
    cr->gen = 1;
}

void
ctm_coderecs_set_notice(ctm_coderecs *cr, ctm_notice notice,
                        Py_ssize_t extra_index)
{
    CTM_ASSERT(notice != CTM_NOTICE_CO_EXTRA || extra_index >= 0);
    CTM_ASSERT(cr->nrecs == 0 || (cr->notice == notice
                                  && cr->extra_index == extra_index));
    cr->notice = notice;
    cr->extra_index = extra_index;
}

void
ctm_coderecs_clear(ctm_coderecs *cr)
{
    for (uint32_t i = 0; i < cr->nrecs; i++) {
        if (cr->recs[i].code != NULL) {
            ctm_free(cr->recs[i].items);
        }
    }
    ctm_free(cr->recs);
    ctm_index_free(&cr->by_code);
    ctm_free(cr->unarmed);
    uint32_t gen = cr->gen + 1;
    ctm_notice notice = cr->notice;
    Py_ssize_t extra_index = cr->extra_index;
    memset(cr, 0, sizeof(*cr));
    cr->notice = notice;
    cr->extra_index = extra_index;
    /* The tokens still in co_extra slots are stale from now on. */
    cr->gen = gen ? gen : 1;
}

size_t
ctm_coderecs_memory(const ctm_coderecs *cr)
{
    size_t n = cr->caprecs * sizeof(ctm_coderec)
               + ctm_index_capacity(&cr->by_code) * sizeof(uint32_t)
               + cr->capunarmed * sizeof(uint32_t);
    for (uint32_t i = 0; i < cr->nrecs; i++) {
        if (cr->recs[i].code != NULL) {
            n += (size_t)cr->recs[i].cap * sizeof(uint32_t);
        }
    }
    return n;
}
