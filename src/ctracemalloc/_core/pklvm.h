/* The machine that reads the stdlib's snapshot pickle (pklops.h),
 * shared by pklread.c (the opcodes and the snapshot they build) and
 * pklvm.c below it (errors, the stack's slow paths, the values of the
 * data opcodes). Nothing else includes this.
 *
 * Invariants: stack[0 .. sp) are strong references; marks hold stack
 * heights in increasing order, and nothing pops below the innermost
 * mark (floor_of); p never passes end; every error is a ValueError that
 * names the opcode's offset, or MemoryError.
 */
#ifndef CTM_PKLVM_H
#define CTM_PKLVM_H

#include "formats.h"

/* The memo: an object per index, or for a trace read into rt the
 * shared object `trace` and the trace's number in rt. */
typedef struct {
    size_t n, cap;              /* indexes given so far: 0 .. n - 1 */
    PyObject **obj;             /* strong references or NULL */
    uint32_t *trace;
} ctm_pklmemo;

typedef struct {
    const uint8_t *start, *p, *end;
    size_t op_offset;           /* of the opcode being run */
    PyObject **stack;           /* strong references */
    size_t sp, scap;
    size_t *marks;              /* stack heights */
    size_t nmarks, mcap;
    ctm_pklmemo memo;
    /* The two classes are these stand-ins (fresh objects that nothing
     * else in the file can be); their instances are attribute dicts. */
    PyObject *cls_snapshot, *cls_traces;
    PyObject *snapshot, *traces;        /* strong */
    /* The list that becomes _traces: the one EMPTY_LIST makes right
     * after the key '_traces' of the _Traces state. Its traces are not
     * made: TUPLE gives their items straight to rt, which builds the
     * snapshot as the file is read, and leaves the shared object
     * `trace` in their place; APPEND(S) to the sink drop it. For a
     * trace pickled once and referenced again, memo.trace says which
     * trace of rt a memo index holds. */
    PyObject *sink;                     /* strong */
    PyObject *trace;
    ctm_rawtraces *rt;
    uint32_t last_trace;                /* the trace `trace` last stood
                                         * for */
} ctm_pklvm;

/* pklvm.c */

/* ValueError "corrupted snapshot pickle: what (offset ...)". Return -1. */
int ctm_pkl_bad(ctm_pklvm *m, const char *what);
/* Replace the error being raised (not MemoryError) by a ValueError
 * that says the file is at fault, caused by it. */
void ctm_pkl_blame_file(const char *what);
/* ValueError "corrupted snapshot pickle: what", about the content. */
void ctm_pkl_content_error(const char *what);
/* ValueError: the pickle ends inside the current opcode. Return -1. */
int ctm_pkl_truncated(ctm_pklvm *m);
/* The stack item at index (above the innermost mark) that an operation
 * mutates: an exact type, and not the attribute dict of an instance;
 * else NULL with ValueError what. Borrowed. */
PyObject *ctm_pkl_target(ctm_pklvm *m, size_t index, PyTypeObject *type,
                         const char *what);
/* A tuple of the stack items from base up, which it takes off the
 * stack. */
PyObject *ctm_pkl_tuple_of(ctm_pklvm *m, size_t base);
/* The int of n bytes of little-endian two's complement. */
PyObject *ctm_pkl_long(const uint8_t *q, size_t n);
/* A length-prefixed argument: the length in lenbytes, then the data. */
int ctm_pkl_take_counted(ctm_pklvm *m, size_t lenbytes,
                         const uint8_t **data, size_t *n);
/* Push the str or bytes of a length-prefixed argument. */
int ctm_pkl_push_str(ctm_pklvm *m, size_t lenbytes);
int ctm_pkl_push_bytes(ctm_pklvm *m, size_t lenbytes);
/* One line of a GLOBAL argument, without its newline. */
int ctm_pkl_take_line(ctm_pklvm *m, const uint8_t **line, size_t *n);
/* 0 if key may be hashed (a dict key or set item that does not nest
 * tuples too deeply), else -1 with ValueError. */
int ctm_pkl_check_key(ctm_pklvm *m, PyObject *key);
void ctm_pkl_memo_free(ctm_pklmemo *mt);

/* The stack, inline: each opcode runs some of these. */

/* The next n bytes of the opcode's argument. */
static inline int
take(ctm_pklvm *m, size_t n, const uint8_t **out)
{
    if ((size_t)(m->end - m->p) < n) {
        return ctm_pkl_truncated(m);
    }
    *out = m->p;
    m->p += n;
    return 0;
}

/* Push obj (a new reference, stolen; NULL: the error of making it). */
static inline int
push(ctm_pklvm *m, PyObject *obj)
{
    if (obj == NULL) {
        return -1;
    }
    if (ctm_grow((void **)&m->stack, &m->scap, m->sp + 1,
                 sizeof(PyObject *)) < 0) {
        Py_DECREF(obj);
        PyErr_NoMemory();
        return -1;
    }
    m->stack[m->sp++] = obj;
    return 0;
}

/* The lowest stack index above the innermost mark. */
static inline size_t
floor_of(const ctm_pklvm *m)
{
    return m->nmarks ? m->marks[m->nmarks - 1] : 0;
}

/* Pop the top (a new reference), which must be above the mark. */
static inline PyObject *
pop(ctm_pklvm *m)
{
    if (m->sp <= floor_of(m)) {
        ctm_pkl_bad(m, "stack underflow");
        return NULL;
    }
    return m->stack[--m->sp];
}

/* The top, borrowed, which must be above the mark. */
static inline PyObject *
top(ctm_pklvm *m)
{
    if (m->sp <= floor_of(m)) {
        ctm_pkl_bad(m, "stack underflow");
        return NULL;
    }
    return m->stack[m->sp - 1];
}

/* Remove the innermost mark: the items above it are stack[*base ..
 * m->sp), still owned by the stack. */
static inline int
pop_mark(ctm_pklvm *m, size_t *base)
{
    if (m->nmarks == 0) {
        return ctm_pkl_bad(m, "no mark on the stack");
    }
    *base = m->marks[--m->nmarks];
    return 0;
}

static inline void
drop_from(ctm_pklvm *m, size_t base)
{
    while (m->sp > base) {
        Py_DECREF(m->stack[--m->sp]);
    }
}

static inline int
is_instance(const ctm_pklvm *m, PyObject *obj)
{
    return obj != NULL && (obj == m->snapshot || obj == m->traces);
}

static inline uint64_t
le(const uint8_t *q, size_t n)
{
    uint64_t v = 0;
    for (size_t i = 0; i < n; i++) {
        v |= (uint64_t)q[i] << (8 * i);
    }
    return v;
}

#endif /* CTM_PKLVM_H */
