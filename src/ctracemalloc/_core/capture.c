/* Capture of the current thread's Python frames.
 *
 * Called from the allocator hooks, possibly without the GIL, for the
 * calling thread only: its own frames cannot change under it while it is
 * inside an allocator, and the frames keep their code objects alive.
 * Nothing here takes a reference or allocates from PyMem.
 *
 * total_nframe counts the whole stack, capped at CTM_MAX_NFRAME, even
 * when fewer frames are stored: the stdlib reports it that way. So every
 * allocation visits every frame, and in a deep stack that walk is the
 * tracer's main cost: each step waits for the load of the frame's
 * `previous` pointer before it can start the next one.
 *
 * The chain memo takes that wait away. Each thread remembers the raw
 * chain (every frame, complete or not) of its last capture, bottom
 * first. A new capture walks down from the top only until it meets a
 * frame of the memo (a hashed lookup of its address), usually at once;
 * below that point it checks the memo instead of chasing pointers: frame
 * memo[i]'s `previous` must be memo[i - 1] (NULL for the bottom). The
 * addresses come from the memo, so the checks do not wait on each other
 * and the processor runs them side by side. Every link below is still
 * checked; the completeness of those frames is read once: the memo
 * keeps, for each frame counted, how many of the frames up to it are
 * complete. A frame is counted only below the frame met, suspended in a
 * call, where its completeness cannot change (a frame's prologue calls
 * no Python code; a shim frame is never complete). So the result is
 * exactly what a plain walk gives, and only frames already proven live
 * are read. When a check fails, the capture walks plainly and forgets
 * the memo.
 */
#include "capture.h"

#include <pthread.h>
#include <stdatomic.h>

#define MEMO_MIN 64
#define MEMO_MAX 8192           /* deeper stacks are walked plainly */
#define MAP_BITS 10

typedef struct chain_memo {
    PyThreadState *tstate;      /* the chain's thread state */
    uint32_t len;               /* chain[0] is the bottom frame */
    uint32_t cap;
    ctm_pyframe **chain;
    uint32_t *complete;         /* complete frames among chain[0..i], */
    uint32_t counted;           /* for i < counted */
    ctm_pyframe **scratch;      /* frames above the memo, top first */
    uint16_t map[1 << MAP_BITS];  /* address hash -> index; may be stale */
    struct chain_memo *prev, *next;   /* all_memos */
} chain_memo;

/* A thread's memo is freed when the thread exits, by the key's
 * destructor. Every memo is also on all_memos (under memos_lock, taken
 * only when a thread makes or frees its memo), for the child of a fork:
 * the other threads do not exist there, and their memos would be lost
 * without it. */
static CTM_TLS chain_memo *memo;
static chain_memo *all_memos;
static pthread_mutex_t memos_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_key_t memo_key;
static pthread_once_t memo_once = PTHREAD_ONCE_INIT;
static int memo_key_ok;
static atomic_size_t memo_bytes;

static size_t
memo_size(uint32_t cap)
{
    return sizeof(chain_memo)
           + (size_t)cap * (2 * sizeof(ctm_pyframe *) + sizeof(uint32_t));
}

static void
memo_link(chain_memo *m)
{
    pthread_mutex_lock(&memos_lock);
    m->prev = NULL;
    m->next = all_memos;
    if (all_memos != NULL) {
        all_memos->prev = m;
    }
    all_memos = m;
    pthread_mutex_unlock(&memos_lock);
}

static void
memo_unlink(chain_memo *m)
{
    pthread_mutex_lock(&memos_lock);
    if (m->prev != NULL) {
        m->prev->next = m->next;
    }
    else {
        all_memos = m->next;
    }
    if (m->next != NULL) {
        m->next->prev = m->prev;
    }
    pthread_mutex_unlock(&memos_lock);
}

static void
memo_release(chain_memo *m)
{
    atomic_fetch_sub(&memo_bytes, memo_size(m->cap));
    ctm_free(m->chain);
    ctm_free(m->complete);
    ctm_free(m->scratch);
    ctm_free(m);
}

/* The key's destructor, when a thread with a memo exits. */
static void
memo_exit(void *p)
{
    memo_unlink(p);
    memo_release(p);
}

static void
memo_key_create(void)
{
    memo_key_ok = pthread_key_create(&memo_key, memo_exit) == 0;
}

/* Give m room for cap frames; 0, or -1 (m unchanged). */
static int
memo_reserve(chain_memo *m, uint32_t cap)
{
    ctm_pyframe **chain = ctm_realloc(m->chain, cap * sizeof(*chain));
    if (chain == NULL) {
        return -1;
    }
    m->chain = chain;
    ctm_pyframe **scratch = ctm_realloc(m->scratch, cap * sizeof(*scratch));
    if (scratch == NULL) {
        return -1;
    }
    m->scratch = scratch;
    uint32_t *complete = ctm_realloc(m->complete, cap * sizeof(*complete));
    if (complete == NULL) {
        return -1;
    }
    m->complete = complete;
    atomic_fetch_add(&memo_bytes, memo_size(cap) - memo_size(m->cap));
    m->cap = cap;
    return 0;
}

/* The calling thread's memo, set for tstate; NULL if none can be had. */
static chain_memo *
memo_get(PyThreadState *tstate)
{
    chain_memo *m = memo;
    if (m == NULL) {
        pthread_once(&memo_once, memo_key_create);
        if (!memo_key_ok) {
            return NULL;
        }
        m = ctm_calloc(1, sizeof(*m));
        if (m == NULL) {
            return NULL;
        }
        atomic_fetch_add(&memo_bytes, memo_size(0));
        if (memo_reserve(m, MEMO_MIN) < 0
            || pthread_setspecific(memo_key, m) != 0) {
            memo_release(m);
            return NULL;
        }
        memo_link(m);
        memo = m;
    }
    if (m->tstate != tstate) {
        m->tstate = tstate;
        m->len = 0;
    }
    return m;
}

static inline uint32_t
map_slot(const ctm_pyframe *f)
{
    return (uint32_t)(((uint64_t)(uintptr_t)f * 0x9E3779B97F4A7C15ULL)
                      >> (64 - MAP_BITS));
}

/* Count f, and store it while fewer than max frames are stored. */
static inline void
visit(ctm_pyframe *f, ctm_rawframe *out, int max, int *n, int *total)
{
    if (ctm_frame_complete(f)) {
        if (*n < max) {
            out[*n].code = ctm_frame_code(f);
            out[*n].addr = ctm_frame_addr(f);
            (*n)++;
        }
        (*total)++;
    }
}

static void
plain_walk(ctm_pyframe *f, ctm_rawframe *out, int max, int *nframe,
           int *total_nframe)
{
    int n = 0, total = 0;
    for (; f != NULL && total < CTM_MAX_NFRAME; f = ctm_frame_previous(f)) {
        visit(f, out, max, &n, &total);
    }
    *nframe = n;
    *total_nframe = total;
}

void
ctm_capture(PyThreadState *tstate, ctm_rawframe *out, int max, int *nframe,
            int *total_nframe)
{
    ctm_pyframe *top = tstate ? ctm_frame_top_raw(tstate) : NULL;
    chain_memo *m = top ? memo_get(tstate) : NULL;
    if (m == NULL) {
        plain_walk(top, out, max, nframe, total_nframe);
        return;
    }

    /* Down from the top to the first frame in the memo (j), if any. */
    uint32_t p = 0;
    int64_t j = -1;
    for (ctm_pyframe *f = top; f != NULL; f = ctm_frame_previous(f)) {
        uint32_t k = m->map[map_slot(f)];
        if (k < m->len && m->chain[k] == f) {
            j = k;
            break;
        }
        if (p == m->cap
            && (m->cap == MEMO_MAX || memo_reserve(m, m->cap * 2) < 0)) {
            m->len = 0;
            plain_walk(top, out, max, nframe, total_nframe);
            return;
        }
        m->scratch[p++] = f;
    }

    int n = 0, total = 0;
    for (uint32_t s = 0; s < p; s++) {
        visit(m->scratch[s], out, max, &n, &total);
    }
    /* Below: the memo, checked link by link; the frame met (j) and,
     * while fewer than max frames are stored, those under it are
     * visited. Once max frames are stored the loop only checks the
     * links: the frames left are under the frame met, suspended in
     * calls, and the memo's counts give how many are complete. */
    ctm_pyframe **chain = m->chain;
    int64_t i = j;
    for (; i >= 0 && (n < max || i == j); i--) {
        ctm_pyframe *g = chain[i];
        if (ctm_frame_previous(g) != (i ? chain[i - 1] : NULL)) {
            goto mismatch;
        }
        visit(g, out, max, &n, &total);
    }
    int64_t below = i;
    for (; i > 0; i--) {
        if (ctm_frame_previous(chain[i]) != chain[i - 1]) {
            goto mismatch;
        }
    }
    if (i == 0 && ctm_frame_previous(chain[0]) != NULL) {
        goto mismatch;
    }
    if (below >= 0) {
        /* count the frames not counted yet, once */
        uint32_t k = m->counted;
        uint32_t count = k ? m->complete[k - 1] : 0;
        for (; k <= (uint32_t)below; k++) {
            count += (uint32_t)ctm_frame_complete(chain[k]);
            m->complete[k] = count;
        }
        if (m->counted < k) {
            m->counted = k;
        }
        total += (int)m->complete[below];
    }
    *nframe = n;
    *total_nframe = total < CTM_MAX_NFRAME ? total : CTM_MAX_NFRAME;

    /* The new chain: the checked part of the memo, then the frames
     * above it; the counts hold under the frame met. */
    uint32_t len = (uint32_t)(j + 1) + p;
    if ((int64_t)m->counted > j) {
        m->counted = (uint32_t)(j >= 0 ? j : 0);
    }
    if (len > m->cap
        && (len > MEMO_MAX || memo_reserve(m, m->cap * 2) < 0)) {
        m->len = 0;
        return;
    }
    for (uint32_t s = 0; s < p; s++) {
        uint32_t k = len - 1 - s;
        m->chain[k] = m->scratch[s];
        m->map[map_slot(m->scratch[s])] = (uint16_t)k;
    }
    m->len = len;
    return;

mismatch:
    m->len = 0;
    plain_walk(top, out, max, nframe, total_nframe);
}

void
ctm_capture_fork_prepare(void)
{
    pthread_mutex_lock(&memos_lock);
}

void
ctm_capture_fork_parent(void)
{
    pthread_mutex_unlock(&memos_lock);
}

void
ctm_capture_fork_child(void)
{
    pthread_mutex_init(&memos_lock, NULL);
    for (chain_memo *m = all_memos, *next; m != NULL; m = next) {
        next = m->next;
        if (m != memo) {
            memo_release(m);
        }
    }
    /* The calling thread's memo, if it has one, is the list's only one
     * (memo is set once its memo is on the list). */
    all_memos = memo;
    if (memo != NULL) {
        memo->prev = memo->next = NULL;
    }
}

size_t
ctm_capture_memory(void)
{
    return atomic_load(&memo_bytes);
}
