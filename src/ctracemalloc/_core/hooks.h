/* The allocator hooks (hooks.c), installed and removed by control.c.
 * All three need the GIL. */
#ifndef CTM_HOOKS_H
#define CTM_HOOKS_H

/* Install our hooks on each domain whose allocator does not reach them
 * (probed). */
void ctm_hooks_install(void);
/* Take our hooks out of each domain where they are on top; elsewhere
 * (another allocator on top calls them) they stay, passing through. */
void ctm_hooks_uninstall(void);
/* Whether a call to every domain's allocator reaches our hooks (a probe:
 * a domain found without them is marked not installed). */
int ctm_hooks_reached(void);

#endif /* CTM_HOOKS_H */
