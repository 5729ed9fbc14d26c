/* Traced memory over time: timeline.h says how points are taken and
 * thinned. */
#include "timeline.h"

#include <string.h>
#include <time.h>

static uint64_t
clock_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* Keep one point in two of the older half: the higher of each pair. */
static void
thin(ctm_timeline *tl)
{
    size_t half = tl->n / 2 & ~(size_t)1;
    size_t k = 0;
    for (size_t i = 0; i < half; i += 2) {
        const ctm_point *a = &tl->points[i], *b = &tl->points[i + 1];
        tl->points[k++] = b->bytes > a->bytes ? *b : *a;
    }
    memmove(&tl->points[k], &tl->points[half],
            (tl->n - half) * sizeof(ctm_point));
    tl->n -= half - k;
}

static void
add(ctm_timeline *tl, uint64_t ns, uint64_t bytes)
{
    if (tl->n == CTM_TIMELINE_POINTS) {
        thin(tl);
    }
    tl->points[tl->n].ns = ns;
    tl->points[tl->n].bytes = bytes;
    tl->n++;
}

ctm_timeline *
ctm_timeline_new(uint64_t traced)
{
    ctm_timeline *tl = ctm_malloc(sizeof(ctm_timeline));
    if (tl == NULL) {
        return NULL;
    }
    memset(tl, 0, offsetof(ctm_timeline, points));
    tl->start_ns = clock_ns();
    tl->interval_ns = CTM_TIMELINE_NS;
#ifdef CTM_SELF_CHECK
    /* so that the suite can fill a timeline in a moment */
    const char *v = getenv("CTRACEMALLOC_TEST_TIMELINE_NS");
    if (v != NULL && *v) {
        tl->interval_ns = strtoull(v, NULL, 10);
    }
#endif
    tl->high = traced;
    tl->countdown = CTM_TIMELINE_TICKS;
    add(tl, 0, traced);
    return tl;
}

void
ctm_timeline_read(ctm_timeline *tl, uint64_t traced)
{
    tl->countdown = CTM_TIMELINE_TICKS;
    tl->now_ns = clock_ns() - tl->start_ns;
    if (tl->now_ns - tl->last_ns < tl->interval_ns) {
        return;
    }
    if (tl->high > traced) {
        add(tl, tl->high_ns, tl->high);
    }
    add(tl, tl->now_ns, traced);
    tl->last_ns = tl->now_ns;
    tl->high = traced;
    tl->high_ns = tl->now_ns;
}

size_t
ctm_timeline_points(ctm_timeline *tl, uint64_t traced, ctm_point *out)
{
    uint64_t now = clock_ns() - tl->start_ns;
    memcpy(out, tl->points, tl->n * sizeof(ctm_point));
    size_t n = tl->n;
    if (tl->high > traced && tl->high_ns >= tl->last_ns) {
        out[n].ns = tl->high_ns;
        out[n++].bytes = tl->high;
    }
    out[n].ns = now;
    out[n++].bytes = traced;
    return n;
}
