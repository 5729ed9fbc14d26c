/* The traceback tree of a snapshot, which a flame graph draws.
 *
 * A node is a frame reached by a path of frames from the root: the
 * root's children are the oldest frames of the tracebacks, their
 * children the frames those called, down to the most recent frames,
 * where the memory was allocated. Each node totals the size and the
 * number of the traces whose traceback passes through it, so a parent
 * holds at least the sum of its children (the rest was allocated in the
 * parent itself).
 *
 * Built in one pass over the distinct tracebacks, after summing the
 * traces of each as statistics() does (ctm_sum_tracebacks: the
 * estimates, in a sampled snapshot): a child is found by (parent, frame)
 * in a hash table, and nodes are numbered in order of creation, so a
 * parent always comes before its children. There are at most as many nodes as frame
 * references in the snapshot, plus the root.
 */
#include "snapshot.h"
#include "types.h"

#include <string.h>

typedef struct {
    uint32_t parent;
    uint32_t frame;
    uint64_t size;
    uint64_t count;
} node_t;

/* The children's table is the tree's own, not a ctm_index: its keys live
 * in the table, so probing and rehashing read no node (a ctm_index reads
 * a node at each step, which is slower on large trees). */
typedef struct {
    node_t *nodes;
    size_t n, cap;
    uint64_t *keys;             /* (parent << 32 | frame) + 1; 0: empty */
    uint32_t *vals;             /* node index */
    size_t mask;
} tree_t;

static uint64_t
slot_of(const tree_t *t, uint64_t key)
{
    return ctm_mix32(key) & t->mask;
}

/* Room for one more node, in the array and in the table. */
static int
reserve(tree_t *t)
{
    if (ctm_grow((void **)&t->nodes, &t->cap, t->n + 1, sizeof(node_t)) < 0) {
        return -1;
    }
    size_t slots = t->keys ? t->mask + 1 : 0;
    if ((t->n + 1) * 2 <= slots) {
        return 0;
    }
    size_t nslots = slots ? slots * 2 : 2048;
    uint64_t *keys = ctm_calloc(nslots, sizeof(uint64_t));
    uint32_t *vals = ctm_malloc(nslots * sizeof(uint32_t));
    if (keys == NULL || vals == NULL) {
        ctm_free(keys);
        ctm_free(vals);
        return -1;
    }
    uint64_t *okeys = t->keys;
    uint32_t *ovals = t->vals;
    t->keys = keys;
    t->vals = vals;
    t->mask = nslots - 1;
    for (size_t i = 0; i < slots; i++) {
        if (okeys[i]) {
            size_t j = slot_of(t, okeys[i]);
            while (keys[j]) {
                j = (j + 1) & t->mask;
            }
            keys[j] = okeys[i];
            vals[j] = ovals[i];
        }
    }
    ctm_free(okeys);
    ctm_free(ovals);
    return 0;
}

/* The child of parent for frame, made if new; -1 if memory ran out. */
static int64_t
child(tree_t *t, uint32_t parent, uint32_t frame)
{
    if (reserve(t) < 0) {
        return -1;
    }
    uint64_t key = (((uint64_t)parent << 32) | frame) + 1;
    size_t j = slot_of(t, key);
    while (t->keys[j]) {
        if (t->keys[j] == key) {
            return t->vals[j];
        }
        j = (j + 1) & t->mask;
    }
    uint32_t id = (uint32_t)t->n++;
    t->keys[j] = key;
    t->vals[j] = id;
    node_t *nd = &t->nodes[id];
    nd->parent = parent;
    nd->frame = frame;
    nd->size = 0;
    nd->count = 0;
    return id;
}

static int
add(node_t *nd, uint64_t size, uint64_t count)
{
    if (__builtin_add_overflow(nd->size, size, &nd->size)) {
        PyErr_SetString(PyExc_OverflowError,
                        "sum of trace sizes does not fit in 64 bits");
        return -1;
    }
    nd->count += count;
    return 0;
}

/* The tree as lists: parent, filename (an index into the strings),
 * lineno, size, count and function name (an index into the strings, -1:
 * unknown) of each node; node 0 is the root, with parent -1, no frame
 * (filename -1, lineno 0, function -1) and the snapshot's totals. */
static PyObject *
as_lists(const ctm_snapdata *d, const tree_t *t)
{
    PyObject *lists[6] = {NULL};
    PyObject *names = NULL, *res = NULL;
    for (int k = 0; k < 6; k++) {
        lists[k] = PyList_New((Py_ssize_t)t->n);
        if (lists[k] == NULL) {
            goto done;
        }
    }
    for (size_t i = 0; i < t->n; i++) {
        const node_t *nd = &t->nodes[i];
        const ctm_snap_frame *f = i ? &d->frames[nd->frame] : NULL;
        PyObject *v[6] = {
            PyLong_FromLong(i ? (long)nd->parent : -1),
            PyLong_FromLong(i ? (long)f->filename : -1),
            PyLong_FromLong(i ? f->lineno : 0),
            PyLong_FromUnsignedLongLong(nd->size),
            PyLong_FromUnsignedLongLong(nd->count),
            PyLong_FromLong(i && f->function != CTM_NO_FUNCTION
                            ? (long)f->function : -1),
        };
        for (int k = 0; k < 6; k++) {
            if (v[k] == NULL) {
                for (int j = k + 1; j < 6; j++) {
                    Py_XDECREF(v[j]);
                }
                goto done;
            }
            PyList_SET_ITEM(lists[k], (Py_ssize_t)i, v[k]);
        }
    }
    names = PyList_New(d->nstrings);
    if (names == NULL) {
        goto done;
    }
    for (Py_ssize_t i = 0; i < d->nstrings; i++) {
        PyList_SET_ITEM(names, i, Py_NewRef(d->strings[i]));
    }
    res = Py_BuildValue("(OOOOOOO)", lists[0], lists[1], lists[2], lists[3],
                        lists[4], names, lists[5]);
done:
    for (int k = 0; k < 6; k++) {
        Py_XDECREF(lists[k]);
    }
    Py_XDECREF(names);
    return res;
}

PyObject *
ctm_snapdata_tree(const ctm_snapdata *d)
{
    tree_t t;
    memset(&t, 0, sizeof(t));
    PyObject *res = NULL;
    ctm_tb_sums *tbs = ctm_sum_tracebacks(d);
    if (tbs == NULL) {
        goto done;
    }
    if (reserve(&t) < 0) {
        PyErr_NoMemory();
        goto done;
    }
    /* the root */
    memset(&t.nodes[0], 0, sizeof(node_t));
    t.n = 1;
    for (Py_ssize_t tb = 0; tb < d->ntracebacks; tb++) {
        if (tbs[tb].count == 0) {
            continue;
        }
        if (add(&t.nodes[0], tbs[tb].size, tbs[tb].count) < 0) {
            goto done;
        }
        const ctm_snap_tb *s = &d->tracebacks[tb];
        uint32_t node = 0;
        /* oldest frame first: refs hold the most recent first */
        for (uint32_t k = s->nframe; k-- > 0;) {
            int64_t c = child(&t, node, d->refs[s->first + k]);
            if (c < 0) {
                PyErr_NoMemory();
                goto done;
            }
            node = (uint32_t)c;
            if (add(&t.nodes[node], tbs[tb].size, tbs[tb].count) < 0) {
                goto done;
            }
        }
    }
    res = as_lists(d, &t);
done:
    ctm_free(tbs);
    ctm_free(t.nodes);
    ctm_free(t.keys);
    ctm_free(t.vals);
    return res;
}
