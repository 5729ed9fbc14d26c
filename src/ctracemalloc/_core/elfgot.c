/* GOT slots of the loaded ELF objects (elfgot.h).
 *
 * A scan walks the loaded objects with dl_iterate_phdr. For each object
 * it reads the dynamic section (PT_DYNAMIC): the symbol and string tables
 * and the two relocation tables that fill GOT slots with addresses of
 * functions (DT_JMPREL: JUMP_SLOT entries; DT_RELA: GLOB_DAT entries).
 * A relocation whose symbol is one of the set's names gives the slot, at
 * the object's load address plus the relocation's offset.
 *
 * The loader relocates the dynamic section's addresses in place on most
 * systems and leaves them as offsets on others (a read-only dynamic
 * section): an address below the load address is an offset.
 *
 * Slots inside PT_GNU_RELRO are on pages the loader made read-only after
 * relocation (whole pages: the segment's start rounded down to its end
 * rounded down, as the loader computes it); a write there unprotects the
 * page, writes, and protects it again. Every write is one aligned
 * word-sized store, so a thread that calls through the slot meanwhile
 * sees the old or the new address, never a mix.
 *
 * An object is known by the address of its dynamic section: the same
 * object unloaded and loaded again at the same address has the same
 * slots and the same saved values, another one has another section.
 *
 * The loader counts the objects it has loaded and unloaded (dlpi_adds,
 * dlpi_subs), and dl_iterate_phdr hands both to the first callback. Equal
 * counts mean the same objects at the same addresses: then the slots a
 * scan would find are those it found last time, and a restored set's
 * kept records are replayed instead (a start and stop per test costs a
 * walk of the records, not of every relocation of every object).
 */
#include "elfgot.h"

#include <string.h>

#if defined(__linux__) && (defined(__x86_64__) || defined(__aarch64__)) \
    && defined(__LP64__)
#  define CTM_GOT 1
#  include <elf.h>
#  include <link.h>
#  include <pthread.h>
#  include <sys/mman.h>
#  include <unistd.h>
#  if defined(__x86_64__)
#    define CTM_R_JUMP_SLOT R_X86_64_JUMP_SLOT
#    define CTM_R_GLOB_DAT R_X86_64_GLOB_DAT
#    define CTM_R_ABS64 R_X86_64_64
#  else
#    define CTM_R_JUMP_SLOT R_AARCH64_JUMP_SLOT
#    define CTM_R_GLOB_DAT R_AARCH64_GLOB_DAT
#    define CTM_R_ABS64 R_AARCH64_ABS64
#  endif
#else
#  define CTM_GOT 0
#endif

#if CTM_GOT

int
ctm_got_supported(void)
{
    return 1;
}

/* The lock of every call (elfgot.h), held around fork. */
static pthread_mutex_t got_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_once_t atfork_once = PTHREAD_ONCE_INIT;

static void
got_fork_prepare(void)
{
    pthread_mutex_lock(&got_lock);
}

static void
got_fork_release(void)
{
    pthread_mutex_unlock(&got_lock);
}

static void
register_atfork(void)
{
    pthread_atfork(got_fork_prepare, got_fork_release, got_fork_release);
}

static void
got_lock_take(void)
{
    pthread_once(&atfork_once, register_atfork);
    pthread_mutex_lock(&got_lock);
}

/* What a scan needs of one object. */
typedef struct {
    uintptr_t base;             /* load address (bias) */
    uintptr_t dynamic;          /* its dynamic section: its identity */
    const ElfW(Sym) *symtab;
    const char *strtab;
    const ElfW(Rela) *jmprel;   /* JUMP_SLOT relocations */
    size_t njmprel;
    const ElfW(Rela) *rela;     /* other relocations, GLOB_DAT among them */
    size_t nrela;
    uintptr_t relro_start, relro_end;   /* read-only pages, page-aligned */
} object_info;

static uintptr_t
page_size(void)
{
    static uintptr_t size;
    if (size == 0) {
        long n = sysconf(_SC_PAGESIZE);
        size = n > 0 ? (uintptr_t)n : 4096;
    }
    return size;
}

static uintptr_t
dynamic_address(const struct dl_phdr_info *info, ElfW(Addr) value)
{
    return value < info->dlpi_addr ? info->dlpi_addr + value : value;
}

/* Whether the object is one never to patch: the loader or the vDSO. */
static int
never_patched(const struct dl_phdr_info *info)
{
    const char *name = info->dlpi_name ? info->dlpi_name : "";
    const char *base = strrchr(name, '/');
    base = base ? base + 1 : name;
    return strncmp(base, "ld-linux", 8) == 0 || strncmp(base, "ld.so", 5) == 0
           || strncmp(base, "ld-musl", 7) == 0
           || strncmp(base, "linux-vdso", 10) == 0
           || strncmp(base, "linux-gate", 10) == 0;
}

/* Whether addr lies in one of the object's loaded segments. */
static int
object_contains(const struct dl_phdr_info *info, uintptr_t addr)
{
    for (ElfW(Half) i = 0; i < info->dlpi_phnum; i++) {
        const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
        uintptr_t start = info->dlpi_addr + ph->p_vaddr;
        if (ph->p_type == PT_LOAD && addr >= start
            && addr - start < ph->p_memsz) {
            return 1;
        }
    }
    return 0;
}

/* Fill *o from the object's program headers and dynamic section: 0, or
 * -1 if it has nothing a scan can use. */
static int
read_object(const struct dl_phdr_info *info, object_info *o)
{
    memset(o, 0, sizeof(*o));
    o->base = info->dlpi_addr;
    const ElfW(Dyn) *dyn = NULL;
    for (ElfW(Half) i = 0; i < info->dlpi_phnum; i++) {
        const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
        if (ph->p_type == PT_DYNAMIC) {
            dyn = (const ElfW(Dyn) *)(info->dlpi_addr + ph->p_vaddr);
        }
        else if (ph->p_type == PT_GNU_RELRO) {
            uintptr_t mask = ~(page_size() - 1);
            uintptr_t start = info->dlpi_addr + ph->p_vaddr;
            o->relro_start = start & mask;
            o->relro_end = (start + ph->p_memsz) & mask;
        }
    }
    if (dyn == NULL) {
        return -1;
    }
    o->dynamic = (uintptr_t)dyn;
    size_t jmprel_bytes = 0, rela_bytes = 0;
    ElfW(Sxword) pltrel = DT_RELA;
    for (; dyn->d_tag != DT_NULL; dyn++) {
        switch (dyn->d_tag) {
        case DT_SYMTAB:
            o->symtab = (const ElfW(Sym) *)dynamic_address(info,
                                                           dyn->d_un.d_ptr);
            break;
        case DT_STRTAB:
            o->strtab = (const char *)dynamic_address(info, dyn->d_un.d_ptr);
            break;
        case DT_JMPREL:
            o->jmprel = (const ElfW(Rela) *)dynamic_address(info,
                                                            dyn->d_un.d_ptr);
            break;
        case DT_PLTRELSZ:
            jmprel_bytes = dyn->d_un.d_val;
            break;
        case DT_PLTREL:
            pltrel = (ElfW(Sxword))dyn->d_un.d_val;
            break;
        case DT_RELA:
            o->rela = (const ElfW(Rela) *)dynamic_address(info,
                                                          dyn->d_un.d_ptr);
            break;
        case DT_RELASZ:
            rela_bytes = dyn->d_un.d_val;
            break;
        default:
            break;
        }
    }
    if (o->symtab == NULL || o->strtab == NULL || pltrel != DT_RELA) {
        return -1;              /* no symbols, or REL entries: not ours */
    }
    o->njmprel = o->jmprel ? jmprel_bytes / sizeof(ElfW(Rela)) : 0;
    o->nrela = o->rela ? rela_bytes / sizeof(ElfW(Rela)) : 0;
    return 0;
}

/* Store value in slot, unprotecting its page for the time of the write
 * if it is in RELRO. 0, or -1 if the page could not be made writable. */
static int
write_slot(uintptr_t *slot, uintptr_t value, int relro)
{
    void *page = (void *)((uintptr_t)slot & ~(page_size() - 1));
    if (relro && mprotect(page, page_size(), PROT_READ | PROT_WRITE) != 0) {
        return -1;
    }
    __atomic_store_n(slot, value, __ATOMIC_RELEASE);
    if (relro) {
        (void)mprotect(page, page_size(), PROT_READ);
    }
    return 0;
}

static const ctm_got_symbol *
find_symbol(const ctm_got_set *set, const char *name)
{
    for (size_t i = 0; i < set->nsymbols; i++) {
        const char *s = set->symbols[i].name;
        if (s[0] == name[0] && strcmp(s, name) == 0) {
            return &set->symbols[i];
        }
    }
    return NULL;
}

/* The loader's counters, as dl_iterate_phdr gives them to a callback:
 * 0 if this C library's dl_phdr_info has none. */
typedef struct {
    unsigned long long adds, subs;
} load_counts;

static load_counts
counts_of(const struct dl_phdr_info *info, size_t size)
{
    if (size < offsetof(struct dl_phdr_info, dlpi_subs)
               + sizeof(info->dlpi_subs)) {
        return (load_counts){0, 0};
    }
    return (load_counts){info->dlpi_adds, info->dlpi_subs};
}

typedef struct {
    ctm_got_set *set;
    long written;
    int error;
    int first;                  /* the next callback is the first */
    int starting;               /* the set was not active */
} scan_state;

static int
patch_relocations(scan_state *st, const object_info *o,
                  const ElfW(Rela) *rel, size_t n)
{
    ctm_got_set *set = st->set;
    for (size_t i = 0; i < n; i++) {
        unsigned long type = ELF64_R_TYPE(rel[i].r_info);
        unsigned long sym = ELF64_R_SYM(rel[i].r_info);
        int data = type == CTM_R_ABS64;
        if ((type != CTM_R_JUMP_SLOT && type != CTM_R_GLOB_DAT && !data)
            || sym == 0 || (data && rel[i].r_addend != 0)) {
            continue;
        }
        const ctm_got_symbol *s = find_symbol(
            set, o->strtab + o->symtab[sym].st_name);
        if (s == NULL || (data && s->original == NULL)) {
            continue;
        }
        uintptr_t *slot = (uintptr_t *)(o->base + rel[i].r_offset);
        uintptr_t old = __atomic_load_n(slot, __ATOMIC_ACQUIRE);
        if (old == (uintptr_t)s->replacement) {
            continue;           /* written by an earlier scan */
        }
        if (data && old != (uintptr_t)s->original) {
            set->passed++;      /* the program stored another function */
            continue;
        }
        if (ctm_grow((void **)&set->patches, &set->cap, set->npatches + 1,
                     sizeof(ctm_got_patch)) < 0) {
            return -1;
        }
        int relro = (uintptr_t)slot >= o->relro_start
                    && (uintptr_t)slot < o->relro_end;
        if (write_slot(slot, (uintptr_t)s->replacement, relro) < 0) {
            set->failed++;
            continue;
        }
        set->patches[set->npatches++] = (ctm_got_patch){
            slot, old, (uintptr_t)s->replacement, o->dynamic,
            (unsigned char)relro, (unsigned char)data};
        st->written++;
    }
    return 0;
}

/* Write the kept records' slots again, as a scan of the same objects
 * would: a slot the program since made another function's (a data word
 * no longer holding the original) is passed over, and its record
 * dropped. */
static void
replay(scan_state *st)
{
    ctm_got_set *set = st->set;
    size_t kept = 0;
    for (size_t i = 0; i < set->npatches; i++) {
        ctm_got_patch p = set->patches[i];
        uintptr_t old = __atomic_load_n(p.slot, __ATOMIC_ACQUIRE);
        if (old != p.replacement) {
            if (p.data && old != p.saved) {
                set->passed++;
                continue;
            }
            if (write_slot(p.slot, p.replacement, p.relro) < 0) {
                set->failed++;
                continue;
            }
            p.saved = old;
            st->written++;
        }
        set->patches[kept++] = p;
    }
    set->npatches = kept;
}

static int
scan_object(struct dl_phdr_info *info, size_t size, void *arg)
{
    scan_state *st = arg;
    ctm_got_set *set = st->set;
    if (st->first) {
        st->first = 0;
        load_counts now = counts_of(info, size);
        if (st->starting) {
            int same = set->kept && now.adds != 0 && now.adds == set->adds
                       && now.subs == set->subs;
            set->kept = 0;
            if (same) {
                set->replays++;
                replay(st);
                return 1;       /* the same objects as the last scan */
            }
            /* a scan of every object, from no records */
            set->npatches = 0;
            set->subs = now.subs;
            set->scans++;
        }
        else if (now.adds != 0 && now.adds == set->adds) {
            return 1;           /* nothing loaded since the last scan */
        }
        set->adds = now.adds;
    }
    if (never_patched(info)
        || (set->only != 0 && !object_contains(info, set->only))) {
        return 0;
    }
    for (size_t i = 0; i < CTM_GOT_MAX_SKIP; i++) {
        if (set->skip[i] != 0 && object_contains(info, set->skip[i])) {
            return 0;
        }
    }
    object_info o;
    if (read_object(info, &o) < 0) {
        return 0;
    }
    if (patch_relocations(st, &o, o.jmprel, o.njmprel) < 0
        || patch_relocations(st, &o, o.rela, o.nrela) < 0) {
        st->error = 1;
        set->adds = 0;          /* the next scan looks at everything */
        return 1;
    }
    return 0;
}

/* Scan the set if it is active or activate is set. */
static long
scan(ctm_got_set *set, int activate)
{
    long written = 0;
    got_lock_take();
    if (set->active || activate) {
        scan_state st = {set, 0, 0, 1, !set->active};
        set->active = 1;
        dl_iterate_phdr(scan_object, &st);
        written = st.error ? -1 : st.written;
    }
    pthread_mutex_unlock(&got_lock);
    return written;
}

long
ctm_got_apply(ctm_got_set *set)
{
    return scan(set, 1);
}

long
ctm_got_rescan(ctm_got_set *set)
{
    return scan(set, 0);
}

/* Put back what p's slot held, if it still holds our replacement. */
static void
put_back(const ctm_got_patch *p)
{
    if (__atomic_load_n(p->slot, __ATOMIC_ACQUIRE) == p->replacement) {
        (void)write_slot(p->slot, p->saved, p->relro);
    }
}

/* Visit the records of set that this loaded object wrote: restore puts
 * their slots back, and either way they are marked found (slot NULL). */
typedef struct {
    ctm_got_set *set;
    int restore;
    int first;
    load_counts counts;         /* the loader's, at the visit */
} visit_state;

static int
visit_object(struct dl_phdr_info *info, size_t size, void *arg)
{
    visit_state *st = arg;
    ctm_got_set *set = st->set;
    if (st->first) {
        st->first = 0;
        st->counts = counts_of(info, size);
    }
    object_info o;
    if (read_object(info, &o) < 0) {
        return 0;
    }
    for (size_t i = 0; i < set->npatches; i++) {
        ctm_got_patch *p = &set->patches[i];
        if (p->slot != NULL && p->object == o.dynamic
            && object_contains(info, (uintptr_t)p->slot)) {
            if (st->restore) {
                put_back(p);
            }
            p->slot = NULL;
        }
    }
    return 0;
}

typedef struct {
    ctm_got_set *set;
    int same;                   /* nothing unloaded since the records */
} restore_state;

/* If nothing was unloaded since the records were made (every record's
 * object is loaded, at its address), put back their slots, and say so.
 * In a callback of dl_iterate_phdr, which holds the loader's lock that
 * an unload holds to unmap: no object goes between the look at the
 * count and the writes. */
static int
restore_if_same(struct dl_phdr_info *info, size_t size, void *arg)
{
    restore_state *st = arg;
    ctm_got_set *set = st->set;
    load_counts now = counts_of(info, size);
    st->same = set->adds != 0 && now.adds != 0 && now.subs == set->subs;
    for (size_t i = 0; st->same && i < set->npatches; i++) {
        put_back(&set->patches[i]);
    }
    return 1;
}

void
ctm_got_restore(ctm_got_set *set)
{
    got_lock_take();
    if (!set->active) {
        pthread_mutex_unlock(&got_lock);
        return;                 /* restored already: its records kept */
    }
    restore_state rs = {set, 0};
    dl_iterate_phdr(restore_if_same, &rs);
    if (!rs.same && set->npatches > 0) {
        /* by object: a record whose object was unloaded is dropped */
        visit_state st = {set, 1, 1, {0, 0}};
        dl_iterate_phdr(visit_object, &st);
    }
    set->kept = rs.same && set->failed == 0 && set->passed == 0;
    if (!set->kept) {
        ctm_free(set->patches);
        set->patches = NULL;
        set->npatches = set->cap = 0;
        set->adds = 0;
    }
    set->failed = set->passed = 0;
    set->active = 0;
    pthread_mutex_unlock(&got_lock);
}

size_t
ctm_got_written(const ctm_got_set *set)
{
    got_lock_take();
    size_t n = set->active ? set->npatches : 0;
    pthread_mutex_unlock(&got_lock);
    return n;
}

void
ctm_got_forget_unloaded(ctm_got_set *set)
{
    got_lock_take();
    /* In a copy of the records, visiting the loaded objects marks those
     * it finds (slot NULL): the set keeps those, and forgets the rest. */
    size_t n = set->npatches;
    ctm_got_patch *marked = n ? ctm_malloc(n * sizeof(ctm_got_patch)) : NULL;
    if (marked != NULL) {
        memcpy(marked, set->patches, n * sizeof(ctm_got_patch));
        visit_state st = {&(ctm_got_set){.patches = marked, .npatches = n},
                          0, 1, {0, 0}};
        dl_iterate_phdr(visit_object, &st);
        size_t kept = 0;
        for (size_t i = 0; i < n; i++) {
            if (marked[i].slot == NULL) {
                set->patches[kept++] = set->patches[i];
            }
        }
        set->npatches = kept;
        /* every record left is of a loaded object */
        set->subs = st.counts.subs;
        ctm_free(marked);
    }
    pthread_mutex_unlock(&got_lock);
}

#else /* no GOT slots to find on this platform */

int ctm_got_supported(void) { return 0; }
long ctm_got_apply(ctm_got_set *set) { (void)set; return 0; }
long ctm_got_rescan(ctm_got_set *set) { (void)set; return 0; }
void ctm_got_restore(ctm_got_set *set) { (void)set; }
size_t ctm_got_written(const ctm_got_set *set) { (void)set; return 0; }
void ctm_got_forget_unloaded(ctm_got_set *set) { (void)set; }

#endif
