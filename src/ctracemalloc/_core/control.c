/* Start and stop: the tracer and its clients together, and keeping them
 * in line with another tracer (the stdlib's) that comes and goes.
 *
 * Invariants, with the GIL held (every function here needs it):
 *  - while tracing, every allocator domain reaches our hooks, or the next
 *    reconcile either puts them back (right after the other tracer's
 *    stop, when nothing can have been missed) or stops tracing (when what
 *    was missed cannot be known);
 *  - while not tracing, our hooks are in no chain where they are on top,
 *    and the reference tracer is not ours;
 *  - the spare large array is kept only while tracing.
 */
#include "hooks.h"
#include "intercept.h"
#include "native.h"
#include "reftracer.h"
#include "tracer.h"
#include "tracerapi.h"

static void
stop_tracing(void)
{
    ctm_tracer_end();
    ctm_native_uninstall();
    ctm_intercept_uninstall();
    ctm_hooks_uninstall();
    ctm_reftracer_uninstall();
    ctm_large_keep_spare(0);
    ctm_tracer_peak_stop();
    ctm_tracer_clear();
}

/* Bring the hooks in line with the tracing state: remove pass-through
 * hooks that are on top again; if tracing and our hooks fell out of the
 * chain, put them back (reinstall) or, when we cannot know what was
 * missed in between, stop tracing rather than report stale traces. */
static void
reconcile(int reinstall)
{
    if (!atomic_load(&ctm_tracer.tracing)) {
        ctm_hooks_uninstall();
        return;
    }
    if (!ctm_hooks_reached()) {
        if (reinstall) {
            ctm_hooks_install();
        }
        else {
            stop_tracing();
        }
    }
}

/* The sampler's seed: CTRACEMALLOC_SAMPLE_SEED (decimal, for tests:
 * the same seed takes the same samples of the same run), else 0 (a new
 * one). */
static uint64_t
sample_seed(void)
{
    const char *text = getenv("CTRACEMALLOC_SAMPLE_SEED");
    if (text == NULL || *text == '\0') {
        return 0;
    }
    char *end;
    unsigned long long seed = strtoull(text, &end, 10);
    return *end == '\0' ? (uint64_t)seed : 0;
}

int
ctm_tracer_start(int nframe, int native, int peak, uint64_t sample_interval)
{
    if (nframe < 1 || nframe > CTM_MAX_NFRAME) {
        PyErr_Format(PyExc_ValueError,
                     "the number of frames must be in range [1; %d]",
                     CTM_MAX_NFRAME);
        return -1;
    }
    /* Tracing with hooks another tracer dropped is stopped first. */
    reconcile(0);
    if (atomic_load(&ctm_tracer.tracing)) {
        uint64_t now = ctm_tracer_interval();
        if (sample_interval != 0 && sample_interval != now) {
            /* traces of two intervals (or exact and sampled) cannot
             * be summed */
            if (now == 0) {
                PyErr_Format(PyExc_ValueError,
                             "tracing has already started without "
                             "sampling: call stop() before starting with "
                             "sample_interval=%llu",
                             (unsigned long long)sample_interval);
            }
            else {
                PyErr_Format(PyExc_ValueError,
                             "tracing has already started with "
                             "sample_interval=%llu: call stop() before "
                             "starting with sample_interval=%llu",
                             (unsigned long long)now,
                             (unsigned long long)sample_interval);
            }
            return -1;
        }
        /* As the stdlib's start: nothing changes, but a mode asked for
         * is turned on. */
        if (peak && ctm_tracer_peak_start() < 0) {
            return -1;
        }
        return native ? ctm_native_install() : 0;
    }
    if (sample_interval != 0) {
        ctm_sample_restart(sample_seed());
    }
    if (ctm_tracer_begin(nframe, sample_interval) < 0) {
        return -1;
    }
    ctm_hooks_install();
    ctm_reftracer_install();
    ctm_large_keep_spare(1);
    if (ctm_intercept_install() < 0
        || (peak && ctm_tracer_peak_start() < 0)
        || (native && ctm_native_install() < 0)) {
        stop_tracing();         /* a warning turned into an error */
        return -1;
    }
    return 0;
}

void
ctm_tracer_stop(void)
{
    if (atomic_load(&ctm_tracer.tracing)) {
        stop_tracing();
    }
    else {
        reconcile(0);
    }
}

void
ctm_tracer_after_other_tracer(int stopped)
{
    if (stopped) {
        /* Right after the other tracer's stop nothing was missed. */
        reconcile(1);
    }
    if (atomic_load(&ctm_tracer.tracing)) {
        /* Its start replaced our reference tracer, its stop cleared it. */
        ctm_reftracer_install();
    }
}

void
ctm_tracer_reconcile(void)
{
    reconcile(0);
}
