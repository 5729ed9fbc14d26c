/* The helper thread of util.h, for the passes over the trace store that
 * run in two halves (a snapshot's placing pass). It blocks every signal,
 * so that a signal meant for the program never lands on it; it never
 * calls Python. */
#include "util.h"

#include <signal.h>

static void *
helper_main(void *arg)
{
    ctm_helper *h = arg;
    h->fn(h->arg);
    return NULL;
}

void
ctm_helper_start(ctm_helper *h, void (*fn)(void *), void *arg)
{
    sigset_t all, old;
    h->fn = fn;
    h->arg = arg;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    h->made = pthread_create(&h->thread, NULL, helper_main, h) == 0;
    pthread_sigmask(SIG_SETMASK, &old, NULL);
}

void
ctm_helper_join(ctm_helper *h)
{
    if (h->made) {
        pthread_join(h->thread, NULL);
    }
    else {
        h->fn(h->arg);
    }
}
