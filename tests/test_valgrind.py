"""valgrind's memcheck on every part of ctracemalloc
(helpers/valgrind_workload.py), with PYTHONMALLOC=malloc so that every
block is valgrind's to check: no error, and no block definitely lost,
whose stack or origin is in ctracemalloc. (CPython itself has a few
reports of its own, about uninitialised digits of ints on some versions:
they are not ours, and the test reads each report to tell.)"""
import os
import shutil
import subprocess
import sys

import pytest

from tmhelpers import child_env, memcheck_reports, patience

pytestmark = pytest.mark.ctm_only

HELPERS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "helpers")
WORKLOAD = os.path.join(HELPERS, "valgrind_workload.py")
# memcheck's own false positives (scripts/valgrind reads them too)
SUPPRESSIONS = os.path.join(HELPERS, "valgrind.supp")


def memcheck(tmp_path, *args, timeout, options=()):
    """Run sys.executable with args under memcheck (and its options),
    PYTHONMALLOC=malloc, a log per process in tmp_path; returns the
    finished process."""
    if "asan" in os.environ.get("LD_PRELOAD", ""):
        pytest.skip("the sanitizer run: valgrind and ASan do not mix")
    valgrind = shutil.which("valgrind")
    if valgrind is None:
        pytest.skip("valgrind is not installed")
    env = child_env()
    env["PYTHONMALLOC"] = "malloc"
    return subprocess.run(
        [valgrind, "--tool=memcheck", "--track-origins=yes",
         "--leak-check=full", "--show-leak-kinds=definite",
         "--num-callers=40", "--fullpath-after=",
         "--suppressions=%s" % SUPPRESSIONS,
         "--log-file=%s" % (tmp_path / "valgrind.%p.log")]
        + list(options) + [sys.executable] + list(args),
        env=env, capture_output=True, text=True, timeout=patience(timeout))


def test_memcheck(tmp_path):
    proc = memcheck(tmp_path, WORKLOAD, str(tmp_path), timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout == "ok\n"
    logs = sorted(tmp_path.glob("valgrind.*.log"))
    assert len(logs) == 2            # the workload and its forked child
    for log in logs:
        text = log.read_text()
        assert "ERROR SUMMARY" in text
        _, ours = memcheck_reports(text)
        assert not ours, "%s:\n%s" % (log.name, "\n\n".join(ours[:3]))


# glibc's vectorised wmemcmp, on the CPUs that have AVX2, reads past the
# end of str that CPython compares (a sort of our statistics does it); the
# suppression hides that report and nothing else: a read one byte past a
# block still shows.
SORT_AND_OVERREAD = """\
import ctypes
names = ["\\U0001F600" + "x" * n + chr(65 + n % 3) for n in range(1, 40)]
sorted(names)
libc = ctypes.CDLL(None)
libc.malloc.restype = ctypes.c_void_p
block = libc.malloc(8)
ctypes.string_at(block + 8, 1)
"""


def test_memcheck_suppressions(tmp_path):
    # -v: the log lists the suppressions used
    proc = memcheck(tmp_path, "-c", SORT_AND_OVERREAD, timeout=300,
                    options=["-v"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    (log,) = tmp_path.glob("valgrind.*.log")
    text = log.read_text()
    found, _ = memcheck_reports(text)
    assert not [r for r in found if "wmemcmp" in r]
    assert [r for r in found if r.startswith("Invalid read of size 1")
            and "0 bytes after a block of size 8" in r]
    with open("/proc/cpuinfo") as f:
        avx2 = " avx2" in f.read()
    assert ("glibc-wmemcmp-vector-overread" in text) == avx2


# memcheck_reports tells ctracemalloc's reports from the others'. Reports
# as memcheck writes them (--fullpath-after=), abridged.
OUR_SOURCE = "/build/src/ctracemalloc/_core"
LOST = """\
==7== 9,312 (6,240 direct, 3,072 indirect) bytes in 3 blocks are \
definitely lost in loss record 15,376 of 15,708
==7==    at 0x48465EF: calloc (in /usr/libexec/valgrind/vgpreload_memcheck-\
amd64-linux.so)
==7==    by 0x95C002F: %s
==7==    by 0x95C9A81: ctm_tracer_record (%s/tracer.c:95)
==7==    by 0x95C9C5F: hook_alloc (%s/hooks.c:229)
==7==    by 0x49D80C0: _PyLong_New (Objects/longobject.c:161)
==7== 
"""


@pytest.mark.parametrize("caller, ours", [
    ("ctm_calloc (%s/util.h:59)" % OUR_SOURCE, True),
    ("??? (in /venv/ctracemalloc/_ctracemalloc.cpython-311-x86_64-linux-"
     "gnu.so)", True),
    # the program's block, which the hook passed on to the allocator
    ("hook_alloc (%s/hooks.c:223)" % OUR_SOURCE, False),
    # the stdlib's tracer, chained behind ours
    ("raw_malloc (Modules/_tracemalloc.c:260)", False),
])
def test_memcheck_reports_lost_blocks(caller, ours):
    log = LOST % ((caller,) + (OUR_SOURCE,) * 2)
    found, mine = memcheck_reports(log)
    assert len(found) == 1
    assert len(mine) == ours


ERROR = """\
==7== Invalid read of size 8
==7==    at 0x4A0B22A: %s
==7==    by 0x4ADEBEA: PyObject_Malloc (Objects/obmalloc.c:801)
==7==    by 0x61AA164: %s
==7==    by 0x4A0C607: _PyEval_EvalFrameDefault (Python/ceval.c:4769)
==7==  Address 0x5c3a048 is 8 bytes inside a block of size 16 free'd
==7==    at 0x484317B: free (in /usr/libexec/valgrind/vgpreload_memcheck-\
amd64-linux.so)
==7==    by 0x4ADED29: %s
==7==    by 0x4ADF0F0: PyTuple_New (Objects/tupleobject.c:75)
==7== 
"""
OURS_AT = "ctm_traces_get_unlocked (%s/store.c:401)" % OUR_SOURCE
HOOK_AT = "hook_malloc (%s/hooks.c:241)" % OUR_SOURCE
CPYTHON_AT = "tuple_alloc (Objects/tupleobject.c:43)"
HOOK_FREE = "hook_free (%s/hooks.c:304)" % OUR_SOURCE
OUR_FREE = "ctm_free (%s/util.h:65)" % OUR_SOURCE


@pytest.mark.parametrize("where, caller, freed_by, ours", [
    (OURS_AT, CPYTHON_AT, HOOK_FREE, True),       # the error is in our code
    (CPYTHON_AT, OURS_AT, HOOK_FREE, True),       # ... or below a call of ours
    (CPYTHON_AT, HOOK_AT, HOOK_FREE, False),      # the program's, passed on
    (CPYTHON_AT, CPYTHON_AT, OUR_FREE, True),     # a block we freed
])
def test_memcheck_reports_errors(where, caller, freed_by, ours):
    found, mine = memcheck_reports(ERROR % (where, caller, freed_by))
    assert len(found) == 1
    assert len(mine) == ours


def test_memcheck_reports_in_a_verbose_log():
    # with -v, valgrind's messages come right before a report, without
    # the blank line that ends the one before
    log = ("--7-- Reading syms from /usr/lib/libffi.so.8\n"
           "==7== WARNING: new redirection conflicts with existing\n"
           "==7== Preferring higher priority redirection:\n"
           + ERROR % (OURS_AT, CPYTHON_AT, HOOK_FREE))
    found, mine = memcheck_reports(log)
    assert [r.splitlines()[0] for r in found] == ["Invalid read of size 8"]
    assert len(mine) == 1
