/* The file-format layer: a snapshot to and from a file or bytes, in our
 * format or the stdlib's pickle.
 *
 * Files, bottom first (a file calls only into the files above it here,
 * and into the layers below: snapshot data and the utilities):
 *
 *   fileio.c     file I/O and the input of a load, the progress
 *                reporter, the UTF-8 of a str
 *   xxh64.c      the checksum of our format
 *   ffwrite.c    our format's writer (ffspec.h defines the format,
 *                codec.h its byte codecs)
 *   ffitems.c    our format's sections of items, parsed (ffload.h: the
 *                state of a load, shared with ffread.c)
 *   ffread.c     our format's reader: the file's framing, LIMIT, EXTRA
 *   pklvm.c      the machine that reads the stdlib's snapshot pickle:
 *                errors, values (pklvm.h: its state; pklops.h: the
 *                pickle's content and opcodes)
 *   pklread.c    the stdlib's snapshot pickle, read without unpickling
 *   pklwrite.c   the stdlib's snapshot pickle, written
 *   load.c       a load: tells the two formats apart and reads either
 *
 * Other layers call only the functions of the first section; the second
 * is shared between the files of this layer.
 */
#ifndef CTM_FORMATS_H
#define CTM_FORMATS_H

#include "snapdata.h"

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
/* A pickle of the snapshot that the stdlib's Snapshot.load reads
 * (pklwrite.c). */
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

/* File I/O buffer of the writer, first size of the input's. */
#define CTM_IO_BUFSIZE (256 * 1024)

/* The input of a load: bytes in memory, or a file read in chunks into a
 * buffer that holds what the reader asks for at a time (or the whole
 * input, for a pipe). The size of the input is always known (fstat, or
 * the pipe read to its end), so that a reader can check counts and
 * lengths against the bytes actually left before it allocates anything
 * for them. */
typedef struct {
    int fd;                     /* -1: reading from memory */
    PyObject *path;             /* for OSError; owned */
    const uint8_t *data;        /* the memory, or buf */
    size_t pos, len;            /* unread bytes: data[pos .. len) */
    uint8_t *buf;               /* file buffer */
    size_t cap;
    int eof;
    uint64_t offset;            /* input offset of data[pos]; the reader
                                   advances it with pos */
    uint64_t size;              /* input size */
    ctm_progress progress;      /* reported as bytes are read */
} ctm_input;

/* An input of len bytes at buf, which must stay valid while it is read.
 * Nothing to release. */
void ctm_input_from_memory(ctm_input *in, const char *buf, Py_ssize_t len);
/* Open the file at path (a pipe or device is read whole now); progress:
 * a callable or NULL, for a regular file. Return 0, or -1 with nothing
 * left to release. */
int ctm_input_open(ctm_input *in, PyObject *path, PyObject *progress);
/* Make n bytes available at data[pos], if the input has them. Return 0,
 * 1 if the input ends first, -1 on error (OSError, MemoryError). The
 * buffer grows only as bytes arrive: twice the bytes read at most,
 * whatever n a damaged file asks for. */
int ctm_input_fill(ctm_input *in, size_t n);
/* Close the file and release the buffer. failing: an error is already
 * set, keep it (a close error is ignored). Return 0, or -1 if close
 * failed (not failing). */
int ctm_input_close(ctm_input *in, int failing);

/* xxh64.c: streaming XXH64, seed 0 */

typedef struct {
    uint64_t v[4];
    uint64_t total;
    uint8_t mem[32];
    size_t memsize;
} ctm_xxh64_state;

void ctm_xxh64_init(ctm_xxh64_state *s);
void ctm_xxh64_update(ctm_xxh64_state *s, const uint8_t *p, size_t n);
/* The hash of everything so far; the state is unchanged. */
uint64_t ctm_xxh64_digest(const ctm_xxh64_state *s);

/* ffread.c */

/* Our format (ffspec.h) from in, at its start; *limit and *extra as
 * ctm_load. */
ctm_snapdata *ctm_ffread(ctm_input *in, PyObject **limit, PyObject **extra);

/* pklread.c */

/* The snapshot in a pickle written by the stdlib's Snapshot.dump (n bytes
 * at data), read without unpickling; *limit and *extra as ctm_load;
 * progress (or NULL) reports the bytes parsed. */
ctm_snapdata *ctm_stdpickle_load(const uint8_t *data, size_t n,
                                 PyObject **limit, PyObject **extra,
                                 ctm_progress *progress);

#endif /* CTM_FORMATS_H */
