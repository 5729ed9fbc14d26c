/* Redirecting the calls that loaded objects make to a function of
 * another object, through their GOT slots (elfgot.c, utilities layer:
 * no Python here).
 *
 * A call from one ELF object to a function that another one defines goes
 * through a slot of the caller's global offset table: the PLT stub jumps
 * through a JUMP_SLOT entry, or code built with -fno-plt calls through a
 * GLOB_DAT entry. Writing another address into those slots redirects that
 * object's calls, and only those: a pointer taken with dlsym, or a call
 * inside the defining object that never goes through its PLT, is not
 * redirected.
 *
 * A set names the symbols and their replacements and remembers every slot
 * it wrote and what the slot held, so that restoring puts back exactly
 * that, and only in slots that still hold the replacement (someone may
 * have written them since). Slots in an object's RELRO pages are made
 * writable for the write and read-only again. A set is not thread-safe:
 * its user serialises the calls (the tracer: the GIL).
 */
#ifndef CTM_ELFGOT_H
#define CTM_ELFGOT_H

#include "util.h"

typedef struct {
    const char *name;           /* the symbol, without a version */
    void *replacement;
} ctm_got_symbol;

typedef struct {
    uintptr_t *slot;
    uintptr_t saved;            /* what the slot held before */
    uintptr_t replacement;
} ctm_got_patch;

typedef struct {
    const ctm_got_symbol *symbols;
    size_t nsymbols;
    /* Patch only the object mapped at this address (0: every object);
     * the loader and the vDSO are never patched. */
    uintptr_t only;
    ctm_got_patch *patches;
    size_t npatches, cap;
    /* the loader's count of loaded objects at the last scan (0: none
     * yet): a scan with nothing loaded since costs one callback */
    unsigned long long adds;
    size_t failed;              /* slots that could not be written */
} ctm_got_set;

/* Whether this platform's GOT slots can be found (x86-64 and AArch64
 * ELF). Everything below does nothing where they cannot. */
int ctm_got_supported(void);
/* Write the replacements into the slots of the objects loaded since the
 * last scan (all of them the first time). Return the number of slots
 * written by this call, or -1 if memory ran out (the slots written so
 * far stay written and recorded). */
long ctm_got_apply(ctm_got_set *set);
/* Put back what every recorded slot held, where the slot still holds our
 * replacement and its object is still loaded; forget the records. */
void ctm_got_restore(ctm_got_set *set);

#endif /* CTM_ELFGOT_H */
