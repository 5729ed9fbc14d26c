/* Traced memory over time (timeline.c), kept with the peak record.
 *
 * The traces' counters tick it at every change. Every CTM_TIMELINE_TICKS
 * ticks it reads the clock, and at most every CTM_TIMELINE_NS it adds a
 * point: the highest traced memory since the point before (with the time
 * of the clock reading before it), when higher than the memory now, then
 * the memory now. So each new peak has its point, to the resolution of
 * the interval. Points are kept in a bounded array: when it fills up,
 * the older half is thinned to one point in two (the higher of each
 * pair), so that old points get sparser and new ones stay fine.
 */
#ifndef CTM_TIMELINE_H
#define CTM_TIMELINE_H

#include "util.h"

#define CTM_TIMELINE_TICKS 64
#define CTM_TIMELINE_NS 10000000u       /* 10 ms */
#define CTM_TIMELINE_POINTS 8192

typedef struct {
    uint64_t ns;                /* since the timeline began */
    uint64_t bytes;
} ctm_point;

struct ctm_timeline {
    uint64_t start_ns;          /* the clock when it began */
    uint64_t now_ns;            /* the last reading, since start_ns */
    uint64_t last_ns;           /* the newest point's time */
    uint64_t high;              /* the highest memory since that point */
    uint64_t high_ns;           /* the reading before it */
    uint64_t interval_ns;       /* CTM_TIMELINE_NS (test builds: may be
                                   set by CTRACEMALLOC_TEST_TIMELINE_NS) */
    uint32_t countdown;         /* ticks to the next reading */
    size_t n;
    ctm_point points[CTM_TIMELINE_POINTS];
};

typedef struct ctm_timeline ctm_timeline;

/* A new timeline, which begins at traced bytes, or NULL if memory ran
 * out; ctm_free it. */
ctm_timeline *ctm_timeline_new(uint64_t traced);
/* Read the clock, and add points if it is time. */
void ctm_timeline_read(ctm_timeline *tl, uint64_t traced);
/* The points, then the highest since the last one (if higher) and one
 * for now (traced bytes), in out (room for CTM_TIMELINE_POINTS + 2).
 * Their number. */
size_t ctm_timeline_points(ctm_timeline *tl, uint64_t traced,
                           ctm_point *out);

/* Traced memory changed: it is now traced bytes. */
static inline void
ctm_timeline_tick(ctm_timeline *tl, uint64_t traced)
{
    if (traced > tl->high) {
        tl->high = traced;
        tl->high_ns = tl->now_ns;
    }
    if (--tl->countdown == 0) {
        ctm_timeline_read(tl, traced);
    }
}

#endif /* CTM_TIMELINE_H */
