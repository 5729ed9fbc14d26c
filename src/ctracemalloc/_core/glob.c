/* Filename glob matching, for the filters: the stdlib's
 * _normalize_filename and fnmatch over normalised filenames.
 *
 * Matching is Python's fnmatch on POSIX: os.path.normcase is the
 * identity, '*' matches any run of characters (newlines and '/'
 * included), '?' any one character, every other character itself,
 * anchored at both ends. '*' and '?' are matched here in C, on code
 * points; a pattern containing '[' (character classes, whose rules are
 * subtle) is handed to fnmatch.fnmatchcase.
 *
 * A filename is matched as normalised ("x.pyc" as "x.py") without
 * making the normalised str.
 */
#include "types.h"

/* fnmatch.fnmatchcase, imported on first use of a '[' pattern. */
static PyObject *fnmatchcase_func;

static int
ends_with_pyc(PyObject *s)
{
    Py_ssize_t n = PyUnicode_GET_LENGTH(s);
    if (n < 4) {
        return 0;
    }
    int kind = PyUnicode_KIND(s);
    const void *data = PyUnicode_DATA(s);
    return (PyUnicode_READ(kind, data, n - 4) == '.'
            && PyUnicode_READ(kind, data, n - 3) == 'p'
            && PyUnicode_READ(kind, data, n - 2) == 'y'
            && PyUnicode_READ(kind, data, n - 1) == 'c');
}

/* Match the first nlen code points of name against a pattern made of
 * '*', '?' and literals. Greedy with backtracking to the last '*': a
 * later '*' can absorb anything an earlier one could, so only the last
 * one ever needs to be retried, and the match is linear in practice. */
static int
glob_match(PyObject *name, Py_ssize_t nlen, PyObject *pat)
{
    int nkind = PyUnicode_KIND(name);
    const void *ndata = PyUnicode_DATA(name);
    int pkind = PyUnicode_KIND(pat);
    const void *pdata = PyUnicode_DATA(pat);
    Py_ssize_t plen = PyUnicode_GET_LENGTH(pat);
    Py_ssize_t n = 0, p = 0, star = -1, mark = 0;

    while (n < nlen) {
        if (p < plen) {
            Py_UCS4 c = PyUnicode_READ(pkind, pdata, p);
            if (c == '*') {
                star = ++p;
                mark = n;
                continue;
            }
            if (c == '?' || c == PyUnicode_READ(nkind, ndata, n)) {
                p++;
                n++;
                continue;
            }
        }
        if (star < 0) {
            return 0;
        }
        p = star;
        n = ++mark;
    }
    while (p < plen && PyUnicode_READ(pkind, pdata, p) == '*') {
        p++;
    }
    return p == plen;
}

int
ctm_glob_has_bracket(PyObject *pat)
{
    return PyUnicode_FindChar(pat, '[', 0, PyUnicode_GET_LENGTH(pat),
                              1) >= 0;
}

int
ctm_glob_match(PyObject *filename, PyObject *pattern, int bracket)
{
    Py_ssize_t len = PyUnicode_GET_LENGTH(filename);
    if (ends_with_pyc(filename)) {
        len--;
    }
    if (!bracket) {
        return glob_match(filename, len, pattern);
    }
    /* fnmatch is Python code, which may replace the filter's pattern
     * (__setstate__): hold the one in use */
    Py_INCREF(pattern);
    PyObject *name = NULL, *res = NULL;
    int r = -1;
    if (fnmatchcase_func == NULL) {
        PyObject *mod = PyImport_ImportModule("fnmatch");
        if (mod == NULL) {
            goto done;
        }
        fnmatchcase_func = PyObject_GetAttrString(mod, "fnmatchcase");
        Py_DECREF(mod);
        if (fnmatchcase_func == NULL) {
            goto done;
        }
    }
    if (len == PyUnicode_GET_LENGTH(filename)) {
        name = Py_NewRef(filename);
    }
    else {
        name = PyUnicode_Substring(filename, 0, len);
        if (name == NULL) {
            goto done;
        }
    }
    res = PyObject_CallFunctionObjArgs(fnmatchcase_func, name, pattern,
                                       NULL);
    if (res != NULL) {
        r = PyObject_IsTrue(res);
    }
done:
    Py_XDECREF(res);
    Py_XDECREF(name);
    Py_DECREF(pattern);
    return r;
}

PyObject *
ctm_normalize_filename(PyObject *filename)
{
    /* os.path.normcase is os.fspath on POSIX: same errors, same
     * message. */
    PyObject *path = PyOS_FSPath(filename);
    if (path == NULL) {
        return NULL;
    }
    if (!PyUnicode_Check(path)) {
        /* bytes: the stdlib fails on bytes.endswith('.pyc') */
        Py_DECREF(path);
        PyErr_SetString(PyExc_TypeError,
                        "endswith first arg must be bytes or a tuple of "
                        "bytes, not str");
        return NULL;
    }
    if (PyUnicode_READY(path) < 0) {
        Py_DECREF(path);
        return NULL;
    }
    if (!ends_with_pyc(path)) {
        return path;
    }
    PyObject *res = PyUnicode_Substring(path, 0,
                                        PyUnicode_GET_LENGTH(path) - 1);
    Py_DECREF(path);
    return res;
}
