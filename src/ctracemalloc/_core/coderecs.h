/* Code records (coderecs.c): the interner's record of each code object
 * that its code frames name, found again from the code object without a
 * reference to it.
 *
 * A record holds the code object's address and a list of uint32 items
 * that belong to its owner (interning.c keeps the ids of the code's
 * frames and of the tracebacks that hold them). Record ids are dense
 * indexes that stay the same while the record is in use; a freed record
 * is reused by the next new one.
 *
 * The code object's death must reach the owner before its fields are
 * released, so that the frames can be resolved (compat.h), in one of two
 * ways (ctm_notice):
 *
 *  - a code watcher tells the dying code object's address: records in
 *    use are found by address in an index. Nothing is stored in the code
 *    object, so a record is complete when it is made.
 *  - the code object's co_extra slot holds a token, (generation,
 *    record), and the slot's free function brings the token back.
 *    Storing a token allocates from PyMem, so a new record waits on the
 *    unarmed list until its owner's caller can store the token (arming).
 *    clear() bumps the generation, so that a token met later is stale.
 *
 * Nothing here allocates from PyMem or calls Python, except reading a
 * co_extra slot. The owner serializes every call (the tables lock).
 */
#ifndef CTM_CODERECS_H
#define CTM_CODERECS_H

#include "internal.h"

typedef struct {
    PyCodeObject *code;         /* borrowed, alive while the record is in
                                   use; NULL: free */
    uint32_t n;                 /* items; a free record: the next free
                                   record + 1 (0: none) */
    uint32_t cap;
    uint32_t *items;
} ctm_coderec;

/* How the death of a code object that has a record is heard of. */
typedef enum {
    CTM_NOTICE_NONE,            /* it is not: no code object gets one */
    CTM_NOTICE_WATCHER,         /* a code watcher, with its address */
    CTM_NOTICE_CO_EXTRA,        /* a token in its co_extra slot */
} ctm_notice;

typedef struct {
    ctm_coderec *recs;
    uint32_t nrecs;
    size_t caprecs;
    uint32_t free_rec;          /* first free record + 1, 0: none */
    ctm_index by_code;          /* CTM_NOTICE_WATCHER: the records in
                                   use, by code address */
    uint32_t *unarmed;          /* CTM_NOTICE_CO_EXTRA: records whose
                                   token is not stored */
    uint32_t nunarmed;
    size_t capunarmed;
    /* Kept across clear(): */
    ctm_notice notice;
    Py_ssize_t extra_index;     /* CTM_NOTICE_CO_EXTRA: the index */
    uint32_t gen;               /* generation of the tokens, never 0 */
} ctm_coderecs;

/* Empty, with CTM_NOTICE_NONE. */
void ctm_coderecs_init(ctm_coderecs *cr);
/* How deaths are heard of, and the co_extra index that holds the tokens
 * with CTM_NOTICE_CO_EXTRA. Set while there is no record. */
void ctm_coderecs_set_notice(ctm_coderecs *cr, ctm_notice notice,
                             Py_ssize_t extra_index);
/* The record of code (alive, or dying with CTM_NOTICE_WATCHER), or -1
 * if it has none. */
int64_t ctm_coderecs_find(const ctm_coderecs *cr, PyCodeObject *code);
/* A new record for code (alive, without a record), with no items; with
 * CTM_NOTICE_CO_EXTRA, on the unarmed list. Not with CTM_NOTICE_NONE.
 * -1 if memory ran out. */
int64_t ctm_coderecs_new(ctm_coderecs *cr, PyCodeObject *code);
/* A record waiting for its token: 1 and *code, *token set (taken off
 * the unarmed list), or 0 if none is left (none ever is but with
 * CTM_NOTICE_CO_EXTRA). */
int ctm_coderecs_unarmed(ctm_coderecs *cr, PyCodeObject **code,
                         void **token);
/* The record that token names, if it is current and in use, else -1. */
int64_t ctm_coderecs_of_token(const ctm_coderecs *cr, void *token);
/* Free record rec (in use) and its items. */
void ctm_coderecs_free(ctm_coderecs *cr, uint32_t rec);
/* Free every record; the tokens handed out so far become stale. */
void ctm_coderecs_clear(ctm_coderecs *cr);
size_t ctm_coderecs_memory(const ctm_coderecs *cr);

/* Append item to r's items. 0, or -1 if memory ran out (r unchanged). */
static inline int
ctm_coderec_add(ctm_coderec *r, uint32_t item)
{
    if (r->n == r->cap) {
        uint32_t cap = r->cap ? r->cap * 2 : 4;
        uint32_t *items = ctm_realloc(r->items, cap * sizeof(uint32_t));
        if (items == NULL) {
            return -1;
        }
        r->items = items;
        r->cap = cap;
    }
    r->items[r->n++] = item;
    return 0;
}

#endif /* CTM_CODERECS_H */
