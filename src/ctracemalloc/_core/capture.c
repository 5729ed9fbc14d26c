/* Capture of the current thread's Python frames.
 *
 * Called from the allocator hooks, possibly without the GIL, for the
 * calling thread only: its own frames cannot change under it while it is
 * inside an allocator, and the frames keep their code objects alive.
 * Nothing here allocates or takes a reference.
 *
 * total_nframe counts the whole stack, capped at CTM_MAX_NFRAME, even
 * when fewer frames are stored: the stdlib reports it that way.
 */
#include "tables.h"

void
ctm_capture(PyThreadState *tstate, ctm_rawframe *out, int max, int *nframe,
            int *total_nframe)
{
    int n = 0;
    int total = 0;
    ctm_pyframe *f = tstate ? ctm_frame_top(tstate) : NULL;
    for (; f != NULL; f = ctm_frame_back(f)) {
        if (n < max) {
            out[n].code = ctm_frame_code(f);
            out[n].addr = ctm_frame_addr(f);
            n++;
        }
        if (++total >= CTM_MAX_NFRAME) {
            break;
        }
    }
    *nframe = n;
    *total_nframe = total;
}
