/* Redirecting the calls that loaded objects make to a function of
 * another object, through their GOT slots (elfgot.c, utilities layer:
 * no Python here).
 *
 * A call from one ELF object to a function that another one defines goes
 * through a slot of the caller's global offset table: the PLT stub jumps
 * through a JUMP_SLOT entry, or code built with -fno-plt calls through a
 * GLOB_DAT entry; a function pointer the object stores in its data
 * (an absolute relocation) is filled by the loader the same way. Writing
 * another address into those slots redirects that object's calls, and
 * only those: a pointer taken with dlsym, or a call inside the defining
 * object that never goes through its PLT, is not redirected.
 *
 * A set names the symbols and their replacements and remembers every slot
 * it wrote and what the slot held, so that restoring puts back exactly
 * that, and only in slots that still hold the replacement (someone may
 * have written them since) of the object it wrote them in (another
 * object loaded at the same address after a dlclose is not touched).
 * Slots in an object's RELRO pages are made writable for the write and
 * read-only again. Every call below may come from any thread: one
 * process-wide lock serialises them all, every set's (two sets writing
 * slots on the same RELRO page at once could each leave it read-only
 * under the other's write), and is taken around fork so that a child
 * finds it free.
 *
 * A restored set keeps its records: if nothing was loaded or unloaded
 * since (the loader's counters say so), the next apply writes the same
 * slots again without reading a relocation, as a scan would have, and a
 * restore with nothing unloaded since the apply writes the slots back
 * without visiting the objects. A set's symbols, only and skip must not
 * change once it has been applied.
 */
#ifndef CTM_ELFGOT_H
#define CTM_ELFGOT_H

#include "util.h"

typedef struct {
    const char *name;           /* the symbol, without a version */
    void *replacement;
    /* What the symbol resolves to, or NULL. If set, data words that the
     * loader filled with its address (R_*_64 relocations: a library's
     * own function pointer, libxml2's xmlMalloc = malloc) are redirected
     * too, where they still hold it. */
    void *original;
} ctm_got_symbol;

typedef struct {
    uintptr_t *slot;
    uintptr_t saved;            /* what the slot held before */
    uintptr_t replacement;
    uintptr_t object;           /* the object's dynamic section: which
                                   object wrote it, among those loaded at
                                   one address in turn */
    unsigned char relro;        /* on a page the loader made read-only */
    unsigned char data;         /* a data word: written only where it
                                   holds saved, the symbol's original */
} ctm_got_patch;

#define CTM_GOT_MAX_SKIP 6

typedef struct {
    const ctm_got_symbol *symbols;
    size_t nsymbols;
    /* Patch only the object mapped at this address (0: every object);
     * the loader and the vDSO are never patched. */
    uintptr_t only;
    /* Nor the objects mapped at these addresses (0: none). */
    uintptr_t skip[CTM_GOT_MAX_SKIP];
    /* the slots written while active; after a restore, those to write
     * again if the loaded objects are the same (kept) */
    ctm_got_patch *patches;
    size_t npatches, cap;
    /* the loader's count of loaded objects at the last scan (0: none
     * yet): a scan with nothing loaded since costs one callback */
    unsigned long long adds;
    /* its count of unloaded objects when every record's object was
     * known to be loaded: no unload since, no object to look for */
    unsigned long long subs;
    size_t failed;              /* slots that could not be written */
    size_t passed;              /* data words found holding another
                                   function: a later scan may find more */
    int active;                 /* applied and not restored since */
    int kept;                   /* restored, the records kept for the
                                   next apply */
    unsigned long scans, replays;       /* applies of each way: for tests */
} ctm_got_set;

/* Whether this platform's GOT slots can be found (x86-64 and AArch64
 * ELF). Everything below does nothing where they cannot. */
int ctm_got_supported(void);
/* Write the replacements into the slots of the objects loaded since the
 * last scan (all of them the first time after a restore, or, if nothing
 * was loaded or unloaded since, the slots of the kept records). Return
 * the number of slots written by this call, or -1 if memory ran out (the
 * slots written so far stay written and recorded). */
long ctm_got_apply(ctm_got_set *set);
/* The same, only if the set is active: for a loader's call, which may
 * come in any thread, even while another restores the set. */
long ctm_got_rescan(ctm_got_set *set);
/* Put back what every recorded slot held, where the slot still holds our
 * replacement and its object is still loaded. The records are kept for
 * the next apply while they are complete (every slot written, no data
 * word passed over) and no object was unloaded; otherwise forgotten. */
void ctm_got_restore(ctm_got_set *set);
/* The number of slots the set holds written (0 if it is not active). */
size_t ctm_got_written(const ctm_got_set *set);
/* Forget the records of slots whose object is no longer loaded (after a
 * dlclose), so that the records do not grow with every load and unload. */
void ctm_got_forget_unloaded(ctm_got_set *set);

#endif /* CTM_ELFGOT_H */
