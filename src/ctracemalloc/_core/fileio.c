/* File I/O and the helpers that both snapshot formats share: below our
 * format's reader and writer and the stdlib's pickle's, and calling none
 * of them.
 *
 *   - opening a path (str, bytes or PathLike), writing all of a buffer,
 *     closing with the error of a delayed write, and ctm_write_file;
 *   - the input of a load (ctm_input): bytes in memory, or a file read
 *     in chunks as the reader asks for them, a pipe read whole;
 *   - the progress reporter of a long load (ctm_progress);
 *   - the UTF-8 of a str with surrogatepass, which both formats write
 *     so that any str round-trips.
 *
 * Invariants: the GIL is released around each system call, EINTR is
 * retried after the signal handlers ran, and every failure of one is an
 * OSError naming the path; the input's buffer grows only with the bytes
 * that arrived (to at most twice them), whatever a damaged file asks for;
 * files are read, never mapped (a file truncated by another process
 * while mapped would kill this one with SIGBUS).
 */
#include "formats.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* Write all of p to fd, the GIL released; OSError naming path. */
int
ctm_write_all(int fd, PyObject *path, const uint8_t *p, size_t n)
{
    while (n > 0) {
        ssize_t r;
        int err;
        size_t chunk = n < ((size_t)1 << 30) ? n : ((size_t)1 << 30);
        Py_BEGIN_ALLOW_THREADS
        r = write(fd, p, chunk);
        err = errno;
        Py_END_ALLOW_THREADS
        if (r < 0) {
            if (err == EINTR) {
                if (PyErr_CheckSignals() < 0) {
                    return -1;
                }
                continue;
            }
            errno = err;
            PyErr_SetFromErrnoWithFilenameObject(PyExc_OSError, path);
            return -1;
        }
        p += r;
        n -= (size_t)r;
    }
    return 0;
}

/* close(), with OSError on failure (a write error may surface here). */
int
ctm_close_fd(int fd, PyObject *path)
{
    int r, err;
    Py_BEGIN_ALLOW_THREADS
    r = close(fd);
    err = errno;
    Py_END_ALLOW_THREADS
    if (r < 0 && err != EINTR) {
        errno = err;
        PyErr_SetFromErrnoWithFilenameObject(PyExc_OSError, path);
        return -1;
    }
    return 0;
}

/* Open path (str, bytes or PathLike) as open(2) would with flags; on
 * success *fspath is the str or bytes path for error messages. */
int
ctm_open_path(PyObject *path, int flags, PyObject **fspath)
{
    PyObject *bytes = NULL;
    int fd = -1;
    *fspath = PyOS_FSPath(path);
    if (*fspath == NULL || !PyUnicode_FSConverter(*fspath, &bytes)) {
        goto error;
    }
    const char *cpath = PyBytes_AS_STRING(bytes);
    for (;;) {
        int err;
        Py_BEGIN_ALLOW_THREADS
        fd = open(cpath, flags | O_CLOEXEC, 0666);
        err = errno;
        Py_END_ALLOW_THREADS
        if (fd >= 0) {
            goto done;
        }
        if (err != EINTR) {
            errno = err;
            PyErr_SetFromErrnoWithFilenameObject(PyExc_OSError, *fspath);
            goto error;
        }
        if (PyErr_CheckSignals() < 0) {
            goto error;
        }
    }

error:
    Py_CLEAR(*fspath);
done:
    Py_XDECREF(bytes);
    return fd;
}

int
ctm_write_file(PyObject *path, PyObject *bytes)
{
    PyObject *fspath;
    int fd = ctm_open_path(path, O_WRONLY | O_CREAT | O_TRUNC, &fspath);
    if (fd < 0) {
        return -1;
    }
    int rc = ctm_write_all(fd, fspath,
                           (const uint8_t *)PyBytes_AS_STRING(bytes),
                           (size_t)PyBytes_GET_SIZE(bytes));
    if (rc < 0) {
        close(fd);
    }
    else {
        rc = ctm_close_fd(fd, fspath);
    }
    Py_DECREF(fspath);
    return rc;
}

int
ctm_progress_report(ctm_progress *p, uint64_t done)
{
    if (p == NULL || p->callable == NULL || done < p->next) {
        return 0;
    }
    uint64_t step = p->total / 100;
    if (step < ((uint64_t)1 << 20)) {
        step = (uint64_t)1 << 20;
    }
    p->next = done + step;
    PyObject *r = PyObject_CallFunction(p->callable, "KK",
                                        (unsigned long long)done,
                                        (unsigned long long)p->total);
    Py_XDECREF(r);
    return r == NULL ? -1 : 0;
}

/* UTF-8 of str with surrogatepass. An ASCII str is its own UTF-8; other
 * strings keep their UTF-8 cached (filenames are few, and the next dump
 * is faster). *tmp receives an owned bytes object for a string that has
 * no UTF-8 of its own (lone surrogates). */
int
ctm_str_utf8(PyObject *str, const char **p, Py_ssize_t *n, PyObject **tmp)
{
    *tmp = NULL;
    *p = PyUnicode_AsUTF8AndSize(str, n);
    if (*p != NULL) {
        return 0;
    }
    if (!PyErr_ExceptionMatches(PyExc_UnicodeEncodeError)) {
        return -1;
    }
    PyErr_Clear();
    *tmp = PyUnicode_AsEncodedString(str, "utf-8", "surrogatepass");
    if (*tmp == NULL) {
        return -1;
    }
    *p = PyBytes_AS_STRING(*tmp);
    *n = PyBytes_GET_SIZE(*tmp);
    return 0;
}

/* ---------------------------------------------------------------------
 * Input
 * ------------------------------------------------------------------- */

void
ctm_input_from_memory(ctm_input *r, const char *buf, Py_ssize_t len)
{
    memset(r, 0, sizeof(*r));
    r->fd = -1;
    r->data = (const uint8_t *)buf;
    r->len = len > 0 ? (size_t)len : 0;
    r->size = r->len;
}

int
ctm_input_fill(ctm_input *r, size_t n)
{
    if (r->len - r->pos >= n) {
        return 0;
    }
    if (r->fd < 0 || r->eof) {
        return 1;
    }
    if (r->pos > 0) {
        memmove(r->buf, r->buf + r->pos, r->len - r->pos);
        r->len -= r->pos;
        r->pos = 0;
    }
    while (r->len < n) {
        if (r->len == r->cap) {
            /* Full: at most double what was read, and no more than the
             * take needs once past the first size. */
            size_t ncap = CTM_IO_BUFSIZE;
            if (r->cap) {
                ncap = r->cap * 2 < n ? r->cap * 2 : n;
            }
            uint8_t *p = ctm_realloc(r->buf, ncap);
            if (p == NULL) {
                PyErr_NoMemory();
                return -1;
            }
            r->buf = p;
            r->data = p;
            r->cap = ncap;
        }
        ssize_t got;
        int err;
        size_t want = r->cap - r->len;
        if (want > ((size_t)1 << 30)) {
            want = (size_t)1 << 30;
        }
        Py_BEGIN_ALLOW_THREADS
        got = read(r->fd, r->buf + r->len, want);
        err = errno;
        Py_END_ALLOW_THREADS
        if (got < 0) {
            if (err == EINTR) {
                if (PyErr_CheckSignals() < 0) {
                    return -1;
                }
                continue;
            }
            errno = err;
            PyErr_SetFromErrnoWithFilenameObject(PyExc_OSError, r->path);
            return -1;
        }
        if (got == 0) {
            r->eof = 1;
            return 1;
        }
        r->len += (size_t)got;
        if (ctm_progress_report(&r->progress,
                                r->offset + (r->len - r->pos)) < 0) {
            return -1;
        }
    }
    return 0;
}


int
ctm_input_open(ctm_input *r, PyObject *path, PyObject *progress)
{
    PyObject *fspath = NULL;
    memset(r, 0, sizeof(*r));
    r->fd = -1;
    int fd = ctm_open_path(path, O_RDONLY, &fspath);
    if (fd < 0) {
        return -1;
    }
    r->fd = fd;
    r->path = fspath;
    struct stat stbuf;
    int ok;
    Py_BEGIN_ALLOW_THREADS
    ok = fstat(fd, &stbuf) == 0;
    Py_END_ALLOW_THREADS
    if (ok && S_ISREG(stbuf.st_mode) && stbuf.st_size >= 0) {
        r->size = (uint64_t)stbuf.st_size;
        r->progress.callable = progress;
        r->progress.total = r->size;
    }
    else {
        /* A pipe or a device has no size to check counts against: read
         * it whole (the buffer grows only with the bytes that arrive),
         * then parse it from memory. */
        if (ctm_input_fill(r, SIZE_MAX) < 0) {
            (void)ctm_input_close(r, 1);
            return -1;
        }
        r->size = r->len;
    }
    return 0;
}

int
ctm_input_close(ctm_input *r, int failing)
{
    int rc = 0;
    if (r->fd >= 0) {
        if (failing) {
            /* Already failing: keep that error. */
            close(r->fd);
        }
        else {
            rc = ctm_close_fd(r->fd, r->path);
        }
        r->fd = -1;
    }
    ctm_free(r->buf);
    r->buf = NULL;
    Py_CLEAR(r->path);
    return rc;
}
