/* The file-format layer: a snapshot to and from a file or bytes, in our
 * format or the stdlib's pickle.
 *
 * Files, bottom first (a file calls only into the files above it here,
 * and into the layers below: snapshot data and the utilities):
 *
 *   fileio.c     file I/O, the progress reporter, the UTF-8 of a str
 *
 * Other layers call only the functions of the first section; the second
 * is shared between the files of this layer.
 */
#ifndef CTM_FORMATS_H
#define CTM_FORMATS_H

#include "internal.h"

/* ---------------------------------------------------------------------
 * For the other layers
 * ------------------------------------------------------------------- */

/* Write data, traceback_limit and the instance dict extra (NULL or an
 * empty dict for none) to the file at path (str, bytes or PathLike).
 * Return 0 or -1. */
int ctm_dump(PyObject *path, const ctm_snapdata *data,
             PyObject *traceback_limit, PyObject *extra);
/* Read a file written by ctm_dump, or the stdlib's pickle. On success,
 * *limit and *extra (NULL if none) are new references. Raises on any
 * damage; never crashes and never allocates more than the file's
 * content justifies. progress: a callable or NULL (see ctm_progress). */
ctm_snapdata *ctm_load(PyObject *path, PyObject **limit, PyObject **extra,
                       PyObject *progress);
/* The same format in memory, for pickling: a bytes object, and its
 * reader. */
PyObject *ctm_dump_bytes(const ctm_snapdata *data, PyObject *traceback_limit,
                         PyObject *extra);
ctm_snapdata *ctm_load_bytes(const char *buf, Py_ssize_t len,
                             PyObject **limit, PyObject **extra);
/* Write bytes (a bytes object) to the file at path. Return 0 or -1. */
int ctm_write_file(PyObject *path, PyObject *bytes);
/* A pickle of the snapshot that the stdlib's Snapshot.load reads. */
PyObject *ctm_stdpickle_dumps(const ctm_snapdata *data,
                              PyObject *traceback_limit, PyObject *extra);

/* ---------------------------------------------------------------------
 * Within the layer
 * ------------------------------------------------------------------- */

/* fileio.c */

/* Open path (str, bytes or PathLike) as open(2) would with flags (plus
 * O_CLOEXEC): the file descriptor, or -1 with OSError set. On success
 * *fspath is a new reference to the str or bytes path, for the error
 * messages of the calls below. */
int ctm_open_path(PyObject *path, int flags, PyObject **fspath);
/* Write all n bytes at p to fd, the GIL released. Return 0 or -1
 * (OSError naming path). */
int ctm_write_all(int fd, PyObject *path, const uint8_t *p, size_t n);
/* close(fd), with OSError naming path if it fails (a delayed write
 * error may surface there). Return 0 or -1. */
int ctm_close_fd(int fd, PyObject *path);

/* Progress of a long load: callable(done, total), in bytes, every 1% of
 * total (and at least 1 MiB) as the bytes are read; a NULL callable
 * reports nothing. */
typedef struct {
    PyObject *callable;         /* borrowed, or NULL */
    uint64_t total, next;
} ctm_progress;
/* Report done bytes if a report is due (p may be NULL). Return 0, or -1
 * if the callable raised. */
int ctm_progress_report(ctm_progress *p, uint64_t done);

/* UTF-8 of str with surrogatepass, so that any str round-trips: *p and *n
 * stay valid while str (and *tmp, an owned bytes object or NULL, which
 * the caller releases) live. */
int ctm_str_utf8(PyObject *str, const char **p, Py_ssize_t *n,
                 PyObject **tmp);

/* stdpickle.c */

/* The snapshot in a pickle written by the stdlib's Snapshot.dump (n bytes
 * at data), read without unpickling; *limit and *extra as ctm_load;
 * progress (or NULL) reports the bytes parsed. */
ctm_snapdata *ctm_stdpickle_load(const uint8_t *data, size_t n,
                                 PyObject **limit, PyObject **extra,
                                 ctm_progress *progress);

#endif /* CTM_FORMATS_H */
