"""Native memory: start(native=True) traces what extension modules and the
libraries they load take from the C allocator and anonymous mmap, in
NATIVE_DOMAIN, with the Python traceback of the calling thread.

The calls come from ctracemalloc._nativeprobe, a shared object of its own
whose calls go through its GOT as any extension's do, and from real
libraries (SQLite, numpy). Each case runs in a fresh interpreter: native
tracing patches every loaded object, and some cases need an object loaded
before or after start()."""
import subprocess
import sys
import textwrap

import pytest

from tmhelpers import child_env, patience

pytestmark = pytest.mark.ctm_only

PRELUDE = """
import sys, threading
import ctracemalloc as tm
from ctracemalloc import _nativeprobe as probe

NATIVE = tm.NATIVE_DOMAIN

def native_traces():
    # the native traces: (size, (filename, lineno) of the newest frame)
    snap = tm.take_snapshot()
    return sorted((t.size, (t.traceback[0].filename, t.traceback[0].lineno))
                  for t in snap.traces if t.domain == NATIVE)

def native_total():
    return sum(size for size, _ in native_traces())

def line():
    return sys._getframe(1).f_lineno
"""


def run(code, env=None, check=True):
    environ = child_env()
    environ.update(env or {})
    proc = subprocess.run([sys.executable, "-c",
                           PRELUDE + textwrap.dedent(code)],
                          env=environ, capture_output=True, text=True,
                          timeout=patience(180))
    if check:
        assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


def test_each_call_is_traced_at_its_line_and_released():
    run("""
    tm.start(1, native=True)
    def check(expected):
        got = [(size, lineno) for size, (f, lineno) in native_traces()]
        assert sorted(got) == sorted(expected), (got, expected)

    p = probe.call("malloc", a=1000); l1 = line()
    check([(1000, l1)])
    q = probe.call("realloc", p, 5000); l2 = line()
    check([(5000, l2)])
    probe.call("free", q)
    check([])
    p = probe.call("calloc", a=10, b=30); l3 = line()
    check([(300, l3)])
    q = probe.call("reallocarray", p, 7, 100); l4 = line()
    check([(700, l4)])
    # a size of 0 frees the block (glibc)
    assert probe.call("realloc", q, 0) is None
    check([])
    import os
    kinds = [("posix_memalign", (64, 4000)), ("aligned_alloc", (64, 4096)),
             ("memalign", (128, 3000)), ("valloc", (5000, 0)),
             ("pvalloc", (6000, 0))]
    if "vgpreload" in os.environ.get("LD_PRELOAD", ""):
        kinds.pop()             # memcheck aborts the program on pvalloc
    for kind, args in kinds:
        p = probe.call(kind, None, *args); l5 = line()
        size = args[1] if kind in ("posix_memalign", "aligned_alloc",
                                   "memalign") else args[0]
        check([(size, l5)])
        probe.call("free", p)
        check([])
    page = 4096
    m = probe.call("mmap", a=10 * page); l6 = line()
    check([(10 * page, l6)])
    probe.call("munmap", m, 3 * page)
    check([(7 * page, l6)])
    snap = tm.take_snapshot()
    [t] = [t for t in snap.traces if t.domain == NATIVE]
    m2 = probe.call("mremap", m + 3 * page, 7 * page, 20 * page); l7 = line()
    check([(20 * page, l7)])
    probe.call("munmap", m2, 20 * page)
    check([])
    assert tm.get_traced_memory()[1] >= 20 * page
    """)


def test_threads_without_the_gil_or_a_thread_state():
    run("""
    tm.start(1, native=True)
    a = probe.call("malloc", a=555, nogil=True); l1 = line()
    b = probe.call("malloc", a=777, thread=True)
    got = native_traces()
    assert (555, ("<string>", l1)) in got, got
    # a thread with no Python frame: what the stdlib gives one
    assert (777, ("<unknown>", 0)) in got, got
    probe.call("free", b, thread=True)
    probe.call("free", a, nogil=True)
    assert native_traces() == []
    """)


def test_off_by_default_and_undone_by_stop():
    run("""
    tm.start(1)
    assert tm._ctracemalloc._native_slots() == 0
    p = probe.call("malloc", a=1234)
    assert native_traces() == []
    # asked for while tracing: turned on
    tm.start(1, native=True)
    assert tm._ctracemalloc._native_slots() > 0
    q = probe.call("malloc", a=4321)
    assert [s for s, _ in native_traces()] == [4321]
    tm.stop()
    assert tm._ctracemalloc._native_slots() == 0
    tm.start(1)
    r = probe.call("malloc", a=999)
    assert native_traces() == []
    for x in (p, q, r):
        probe.call("free", x)
    # keyword-only, as the stdlib's nframe is positional-only
    for bad in ("tm.start(1, True)", "tm.start(nframe=1)"):
        try:
            eval(bad)
        except TypeError:
            pass
        else:
            raise AssertionError(bad)
    """)


def test_blocks_from_before_start_are_ignored():
    run("""
    p = probe.call("malloc", a=100000)
    m = probe.call("mmap", a=1 << 20)
    tm.start(1, native=True)
    q = probe.call("malloc", a=100)
    before = tm.get_traced_memory()[0]
    probe.call("free", p)
    probe.call("munmap", m, 1 << 20)
    assert tm.get_traced_memory()[0] == before
    assert [s for s, _ in native_traces()] == [100]
    # a realloc of such a block is traced from then on, as in domain 0
    r = probe.call("malloc", a=50)
    tm.stop(); tm.start(1, native=True)
    r2 = probe.call("realloc", r, 5000)
    assert [s for s, _ in native_traces()] == [5000]
    probe.call("free", r2)
    probe.call("free", q)
    """)


def test_a_block_reported_by_its_extension_is_counted_once():
    run("""
    tm.start(1, native=True)
    p = probe.call("malloc", a=8000)
    assert [s for s, _ in native_traces()] == [8000]
    tm.track(389047, p, 8000); l1 = line()
    snap = tm.take_snapshot()
    [t] = [t for t in snap.traces if t.domain in (NATIVE, 389047)]
    assert (t.domain, t.size, t.traceback[0].lineno) == (389047, 8000, l1)
    tm.untrack(389047, p)
    probe.call("free", p)
    snap = tm.take_snapshot()
    assert [t for t in snap.traces if t.domain in (NATIVE, 389047)] == []
    """)


def test_young_and_old_native_traces_among_pythons():
    # Native traces share the nursery with domain 0's: most die young in
    # it, the others are pushed out into their own domain's store. Each
    # kind of block is made at its own line.
    run("""
    import random
    # On 3.9 one extra domain-0 trace of 1536 bytes came at the bytes'
    # line in half the runs (main's build too, never with the stdlib):
    # pymalloc's table of arenas doubling to 32 entries of 48 bytes when
    # a 17th arena is needed, it seems. Grown here first, it never came.
    junk = [bytes(100) for _ in range(400_000)]
    del junk
    tm.start(1, native=True)
    def short(size):
        return probe.call("malloc", a=size)
    def long(size):
        return probe.call("malloc", a=size)
    def grow(p, size):
        return probe.call("realloc", p, size)
    def reported(size):
        return probe.call("malloc", a=size)
    def obj(size):
        return bytes(size)
    at = lambda f: f.__code__.co_firstlineno + 1
    rng = random.Random(17)
    n = 30_000
    native = {}                 # ptr -> (size, line)
    olds = []
    objs = [None] * n           # domain 0, made at obj's line
    tracked = {}                # ptr -> size, in domain 389047
    for i in range(n):
        size = rng.randrange(1, 3000)
        p = short(size)
        objs[i] = obj(rng.randrange(100, 2000))
        if rng.random() < 0.3:
            objs[rng.randrange(i + 1)] = None
        if rng.random() < 0.9:
            probe.call("free", p)
        else:
            native[p] = (size, at(short))
            olds.append(p)
        if rng.random() < 0.05:
            q = long(size + 1)
            native[q] = (size + 1, at(long))
            olds.append(q)
        if olds and rng.random() < 0.05:
            k = rng.randrange(len(olds))
            q = olds[k]
            olds[k] = olds[-1]
            olds.pop()
            del native[q]
            if rng.random() < 0.5:
                probe.call("free", q)
            else:
                q = grow(q, 5000 + i)
                native[q] = (5000 + i, at(grow))
                olds.append(q)
        if rng.random() < 0.01:
            # reported by its extension while young (or, for one in ten,
            # once pushed out): it leaves the native domain
            q = reported(700 + i)
            if rng.random() < 0.1:
                for _ in range(3000):
                    probe.call("free", short(16))
            tm.track(389047, q, 700 + i)
            tracked[q] = 700 + i
    snap = tm.take_snapshot()
    got = sorted((t.size, t.traceback[0].lineno)
                 for t in snap.traces if t.domain == NATIVE)
    assert got == sorted(native.values())
    got = sorted(t.size for t in snap.traces if t.domain == 0
                 and t.traceback[0].lineno == at(obj))
    assert got == sorted(sys.getsizeof(o) for o in objs if o is not None)
    got = sorted(t.size for t in snap.traces if t.domain == 389047)
    assert got == sorted(tracked.values())
    for q in tracked:
        tm.untrack(389047, q)
        probe.call("free", q)
    for q in olds:
        probe.call("free", q)
    snap = tm.take_snapshot()
    assert [t for t in snap.traces if t.domain in (NATIVE, 389047)] == []
    """)


def test_numpy_buffers_stay_in_numpys_domain():
    run("""
    import numpy as np
    tm.start(10, native=True)
    a = np.ones(1_000_000); l1 = line()
    snap = tm.take_snapshot()
    # np.ones is Python code: the line is an older frame
    at = lambda d: sum(t.size for t in snap.traces if t.domain == d
                       and ("<string>", l1) in [(f.filename, f.lineno)
                                                for f in t.traceback])
    assert at(389047) >= 8_000_000, at(389047)
    assert at(NATIVE) < 100_000, at(NATIVE)
    """)


def test_the_interpreters_own_memory_is_not_native():
    # Pure Python with extension modules that allocate through PyMem
    # (json, re, io): nothing native. The interpreter's object is never
    # patched: its malloc is domain 0's.
    run("""
    import json, re, tempfile, os
    tm.start(5, native=True)
    data = [dict(a=i, b=str(i) * 3, c=[i] * 5) for i in range(20000)]
    s = json.dumps(data)
    back = json.loads(s)
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "x")
        with open(path, "w") as f:
            f.write(s)
        with open(path) as f:
            lines = f.readlines()
    found = re.findall(r"[0-9]+", s[:100000])
    assert native_traces() == []
    assert tm.get_traced_memory()[0] > len(s)
    """)


def test_sqlite_memory_is_native_at_the_line_that_made_it():
    run("""
    import gc, sqlite3
    tm.start(1, native=True)
    con = sqlite3.connect(":memory:")
    con.execute("create table t (a integer, b text)")
    con.executemany("insert into t values (?, ?)",
                    ((i, "row %d" % i) for i in range(100000))); l1 = line()
    snap = tm.take_snapshot().filter_traces([tm.DomainFilter(True, NATIVE)])
    top = snap.statistics("lineno")[0]
    assert top.traceback[0].lineno == l1 - 1, top
    assert top.size > 2 * 2**20, top
    con.close()
    del con
    gc.collect()
    # what the program freed is no longer traced
    assert native_total() < 200_000, native_total()
    """)


def test_objects_loaded_after_start_are_traced():
    run("""
    import ctypes, importlib.machinery, importlib.util, os, shutil, tempfile
    tm.start(1, native=True)
    d = tempfile.mkdtemp()
    src = probe.__file__
    # imported as an extension after start: the interpreter's dlopen
    copy = os.path.join(d, os.path.basename(src))
    shutil.copy(src, copy)
    loader = importlib.machinery.ExtensionFileLoader("_nativeprobe", copy)
    spec = importlib.util.spec_from_loader("_nativeprobe", loader)
    second = importlib.util.module_from_spec(spec)
    assert second.call is not probe.call
    p = second.call("malloc", a=3333); l1 = line()
    assert (3333, ("<string>", l1)) in native_traces()
    # loaded with ctypes: dlopen from _ctypes, a patched object
    copy2 = os.path.join(d, "copy2.so")
    shutil.copy(src, copy2)
    lib = ctypes.CDLL(copy2)
    lib.ctracemalloc_probe_malloc.restype = ctypes.c_void_p
    q = lib.ctracemalloc_probe_malloc(4444); l2 = line()
    assert (4444, ("<string>", l2)) in native_traces()
    probe.call("free", p)
    probe.call("free", q)
    assert native_traces() == []
    shutil.rmtree(d)
    """)


def test_dlclose_then_stop_and_start_again():
    run("""
    import os, shutil, tempfile
    d = tempfile.mkdtemp()
    for round in range(5):
        tm.start(1, native=True)
        copy = os.path.join(d, "round%d.so" % round)
        shutil.copy(probe.__file__, copy)
        h = probe.dlopen(copy)
        slots = tm._ctracemalloc._native_slots()
        probe.dlclose(h)
        assert tm._ctracemalloc._native_slots() < slots
        if round % 2:
            tm.stop()
            assert tm._ctracemalloc._native_slots() == 0
    tm.stop()
    tm.start(1, native=True)
    p = probe.call("malloc", a=2222)
    assert [s for s, _ in native_traces()] == [2222]
    probe.call("free", p)
    shutil.rmtree(d)
    """)


def test_fork_child_keeps_tracing_native():
    run("""
    import os
    tm.start(1, native=True)
    p = probe.call("malloc", a=1111)
    pid = os.fork()
    if pid == 0:
        q = probe.call("malloc", a=2222, nogil=True)
        ok = sorted(s for s, _ in native_traces()) == [1111, 2222]
        probe.call("free", q)
        ok = ok and [s for s, _ in native_traces()] == [1111]
        probe.call("free", p)
        os._exit(0 if ok else 1)
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, status
    assert [s for s, _ in native_traces()] == [1111]
    probe.call("free", p)
    """)


def test_start_and_stop_while_threads_allocate():
    # No crash, no hang; once tracing stays on and every block is freed,
    # no native trace is left (nothing lost, nothing phantom).
    run("""
    import threading, time
    stop = threading.Event()
    rounds = [0] * 4
    def worker(nogil, thread):
        while not stop.is_set():
            rounds[nogil + 2 * thread] += 1
            blocks = [probe.call("malloc", a=64 + i, nogil=nogil)
                      for i in range(20)]
            blocks = [probe.call("realloc", b, 200, nogil=nogil)
                      for b in blocks]
            m = probe.call("mmap", a=8192, nogil=nogil)
            probe.call("munmap", m, 8192, nogil=nogil)
            for b in blocks:
                probe.call("free", b, nogil=nogil)
            if thread:
                b = probe.call("malloc", a=10, thread=True)
                probe.call("free", b, thread=True)
    threads = [threading.Thread(target=worker, args=(i % 2 == 0, i == 3))
               for i in range(4)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 1.5
    i = 0
    while time.monotonic() < deadline or min(rounds[:2]) < 20:
        i += 1
        tm.start(1, native=bool(i % 3))
        if i % 4 == 0:
            tm.take_snapshot()
        if i % 5 == 0:
            tm.clear_traces()
        tm.stop()
    tm.start(1, native=True)
    stop.set()
    for t in threads:
        t.join()
    assert i >= 10, i
    assert native_traces() == [], native_traces()[:5]
    """)


def test_exit_while_threads_allocate():
    proc = run("""
    import threading, time
    def worker():
        while True:
            b = probe.call("malloc", a=100, nogil=True)
            probe.call("free", b, nogil=True)
            b = probe.call("malloc", a=100, thread=True)
            probe.call("free", b)
    tm.start(5, native=True)
    for _ in range(3):
        threading.Thread(target=worker, daemon=True).start()
    time.sleep(0.3)
    print("exiting")
    """)
    assert proc.stdout.strip() == "exiting"


def test_a_failed_probe_warns_once_and_leaves_everything_as_it_was():
    proc = run("""
    import warnings
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        tm.start(1, native=True)
        assert tm.is_tracing()
        assert tm._ctracemalloc._native_slots() == 0
        p = probe.call("malloc", a=1000)
        assert native_traces() == []
        tm.stop()
        tm.start(1, native=True)
    msgs = [str(w.message) for w in caught
            if issubclass(w.category, RuntimeWarning)]
    assert len(msgs) == 1 and "native memory" in msgs[0], msgs
    print("ok")
    """, env={"CTRACEMALLOC_TEST_FAIL_PROBE": "native"}, check=False)
    if "probe" in proc.stderr and "TEST_FAIL_PROBE" in proc.stderr:
        pytest.fail(proc.stderr)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", \
        proc.stdout + proc.stderr


def test_native_traces_in_every_part_of_the_api(tmp_path):
    run("""
    import pickle
    tm.start(3, native=True)
    p = probe.call("malloc", a=100000); l1 = line()
    snap = tm.take_snapshot()
    only = snap.filter_traces([tm.DomainFilter(True, NATIVE)])
    assert [(s.size, s.count) for s in only.statistics("lineno")] \\
        == [(100000, 1)]
    none = snap.filter_traces([tm.DomainFilter(False, NATIVE)])
    assert all(t.domain != NATIVE for t in none.traces)
    path = %r
    snap.dump(path)
    back = tm.Snapshot.load(path)
    assert [t.size for t in back.traces if t.domain == NATIVE] == [100000]
    assert [t.size for t in pickle.loads(pickle.dumps(snap)).traces
            if t.domain == NATIVE] == [100000]
    probe.call("free", p)
    diff = tm.take_snapshot().compare_to(snap, "lineno")
    assert [d.size_diff for d in diff
            if d.traceback[0].lineno == l1] == [-100000]
    q = probe.call("malloc", a=5000)
    tm.clear_traces()
    assert native_traces() == []
    probe.call("free", q)
    """ % str(tmp_path / "snap.ctm"))


# ---- what cannot be seen (README, "Native memory") ----

LIMITS_LIBRARY = r"""
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

/* An allocator linked into the library: its memory comes from the kernel
 * without a call through the GOT (as jemalloc or a static malloc built
 * into a library would). */
static void *
own_allocator(size_t size)
{
    return (void *)syscall(SYS_mmap, NULL, size, PROT_READ | PROT_WRITE,
                           MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
}

void *limits_own_allocator(size_t size) { return own_allocator(size); }

/* The same library calling the C library's malloc: seen. */
void *limits_malloc(size_t size) { return malloc(size); }

/* The C library's malloc kept in a function pointer, as libxml2 keeps
 * xmlMalloc: the loader fills the pointer, seen. */
void *(*limits_pointer)(size_t) = malloc;
void *limits_through_pointer(size_t size) { return limits_pointer(size); }

/* A pointer the program set to its own allocator: left alone. */
static void *
program_allocator(size_t size)
{
    return malloc(size);
}
void *(*limits_replaced)(size_t) = malloc;
void limits_replace(void) { limits_replaced = program_allocator; }
void limits_unreplace(void) { limits_replaced = malloc; }
void *limits_through_replaced(size_t size) { return limits_replaced(size); }
int limits_replaced_is_ours(void)
{
    return limits_replaced == program_allocator;
}

/* Allocated by a constructor while the library loads, before the scan
 * that patches it. */
void *limits_at_load;
__attribute__((constructor)) static void
at_load(void)
{
    limits_at_load = malloc(7777);
}
"""


def build_limits_library(tmp_path):
    import shutil
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        pytest.skip("no C compiler to build the test library")
    src = tmp_path / "limits.c"
    src.write_text(LIMITS_LIBRARY)
    lib = tmp_path / "liblimits.so"
    subprocess.run([cc, "-shared", "-fPIC", "-O1", "-o", str(lib), str(src)],
                   check=True, capture_output=True, timeout=patience(120))
    return str(lib)


def test_what_cannot_be_seen(tmp_path):
    lib = build_limits_library(tmp_path)
    run("""
    import ctypes
    tm.start(1, native=True)
    lib = ctypes.CDLL(%r)
    for f in (lib.limits_own_allocator, lib.limits_malloc):
        f.restype = ctypes.c_void_p
    # the library's constructor ran before its slots were patched
    assert native_traces() == []
    # an allocator linked into the library: not seen
    lib.limits_own_allocator(1 << 20)
    assert native_traces() == []
    # the same library's malloc: seen, at the caller's line
    p = lib.limits_malloc(3000); l1 = line()
    assert native_traces() == [(3000, ("<string>", l1))]
    # malloc called through a pointer from dlsym (ctypes on libc): not seen
    libc = ctypes.CDLL(None)
    libc.malloc.restype = ctypes.c_void_p
    libc.free.argtypes = [ctypes.c_void_p]
    q = libc.malloc(5000)
    assert native_traces() == [(3000, ("<string>", l1))]
    libc.free(q)
    probe.call("free", p)
    # unmapping from inside a traced mapping: the trace keeps its size
    page = 4096
    m = probe.call("mmap", a=8 * page)
    probe.call("munmap", m + 4 * page, 4 * page)
    assert (8 * page) in [s for s, _ in native_traces()]
    """ % lib)



def test_a_block_freed_unseen_is_replaced_when_its_address_returns():
    # A traced block freed through a dlsym pointer keeps its trace; when
    # its address comes back from malloc the new trace replaces it: at
    # once if the old one is still in the nursery, else when the new one
    # leaves the nursery for the store (both are counted until then). The
    # case takes the second way: the old trace is pushed to the store first.
    # glibc's per-thread cache hands out the block of a size freed last;
    # the allocators of memory checkers (ASan, valgrind: the suite runs
    # them with PYTHONMALLOC=malloc) hold freed blocks back instead, and
    # then there is nothing to replace: the old trace stays.
    run("""
    import ctypes, os
    tm.start(1, native=True)
    libc = ctypes.CDLL(None)
    libc.free.argtypes = [ctypes.c_void_p]
    reuses = os.environ.get("PYTHONMALLOC") != "malloc"
    def push_out(p):
        # Allocate until a block takes the nursery slot of p: the slot is
        # the 16-byte granule modulo the nursery's 2048 slots (storeimpl.h,
        # NURSERY_BITS). A fixed count can miss it: 6,000 blocks of 24
        # bytes covered about 1,970 slots, and CI once failed on that. A
        # search takes some hundreds of blocks.
        more = []
        while len(more) < 300000:
            b = probe.call("malloc", a=40)
            more.append(b)
            if (b ^ p) & 0x7FF0 == 0:
                break
        else:
            raise AssertionError("no block took the nursery slot")
        for b in more:
            probe.call("free", b)
    r = probe.call("malloc", a=1000); l2 = line()
    libc.free(r)
    assert native_traces() == [(1000, ("<string>", l2))]
    s = probe.call("malloc", a=1000); l3 = line()
    if s != r:
        assert not reuses, "glibc did not give back the block freed last"
        assert native_traces() == [(1000, ("<string>", l2)),
                                   (1000, ("<string>", l3))]
        raise SystemExit(0)
    assert native_traces() == [(1000, ("<string>", l3))]
    libc.free(s)
    push_out(s)
    t = probe.call("malloc", a=1000); l4 = line()
    assert t == s
    assert native_traces() == [(1000, ("<string>", l3)),
                               (1000, ("<string>", l4))]
    push_out(t)
    assert native_traces() == [(1000, ("<string>", l4))]
    probe.call("free", t)
    assert native_traces() == []
    """)

def test_lines_of_code_that_died_after_a_capture_without_the_gil():
    # A capture without the GIL names code objects that later die: with a
    # record (met with the GIL first, or from a code watcher) the frame's
    # line is read at the code's death; without, at once. Either way the
    # trace keeps the line it was allocated at.
    run("""
    import gc
    tm.start(3, native=True)
    blocks = []
    for i, warm in enumerate((True, False) * 20):
        src = ("def f(n):\\n"
               "    x = [0] * n if %s else None\\n"
               "    return probe.call('malloc', a=n, nogil=True)\\n") % warm
        ns = {"probe": probe}
        exec(compile(src, "gen%d.py" % i, "exec"), ns)
        blocks.append(ns["f"](1000 + i))
        del ns
    gc.collect()
    # other code objects, likely at the dead ones' addresses
    keep = [compile("def g%d(): pass" % i, "other.py", "exec")
            for i in range(200)]
    snap = tm.take_snapshot()
    got = sorted((t.size, t.traceback[-1].filename, t.traceback[-1].lineno)
                 for t in snap.traces if t.domain == NATIVE)
    assert got == [(1000 + i, "gen%d.py" % i, 3) for i in range(40)], got
    """)


def test_function_pointers_in_a_librarys_data(tmp_path):
    # libxml2 (inside lxml) calls malloc through xmlMalloc, a pointer the
    # loader fills: redirected too, but only where it still holds malloc.
    lib = build_limits_library(tmp_path)
    run("""
    import ctypes
    lib = ctypes.CDLL(%r)
    for f in (lib.limits_through_pointer, lib.limits_through_replaced):
        f.restype = ctypes.c_void_p
    lib.limits_replace()
    tm.start(1, native=True)
    p = lib.limits_through_pointer(1111); l1 = line()
    assert native_traces() == [(1111, ("<string>", l1))], native_traces()
    probe.call("free", p)
    # the program's own allocator stays: its malloc is the library's
    # call through the PLT, seen inside program_allocator
    assert lib.limits_replaced_is_ours() == 1
    tm.stop()
    # put back: the pointer is malloc again, nothing traced
    tm.start(1)
    q = lib.limits_through_pointer(2222)
    assert native_traces() == []
    probe.call("free", q)
    """ % lib)


def test_starting_again_honours_what_changed_while_stopped(tmp_path):
    """A start after a stop writes again the slots of the last scan
    (nothing loaded since), but a pointer the program changed meanwhile
    is left as the program set it, and one it set back to malloc is
    redirected again."""
    lib = build_limits_library(tmp_path)
    run("""
    import ctypes
    lib = ctypes.CDLL(%r)
    lib.limits_through_replaced.restype = ctypes.c_void_p
    slots = []
    for _ in range(3):
        tm.start(1, native=True)
        slots.append(tm._ctracemalloc._native_slots())
        tm.stop()
    assert slots[0] > 0 and slots == [slots[0]] * 3, slots
    counts = tm._ctracemalloc._got_counts()
    assert counts["replays"] >= 2, counts

    lib.limits_replace()            # while stopped
    tm.start(1, native=True)
    assert lib.limits_replaced_is_ours() == 1
    assert tm._ctracemalloc._native_slots() == slots[0] - 1
    tm.stop()
    lib.limits_unreplace()          # back to malloc, while stopped
    tm.start(1, native=True)
    p = lib.limits_through_replaced(1234); l1 = line()
    assert native_traces() == [(1234, ("<string>", l1))], native_traces()
    assert tm._ctracemalloc._native_slots() == slots[0]
    probe.call("free", p)
    tm.stop()
    q = lib.limits_through_replaced(4321)
    tm.start(1, native=True)
    assert native_traces() == []
    probe.call("free", q)
    """ % lib)


def test_sqlite_in_worker_threads():
    # SQLite releases the GIL around its work: four threads fill their own
    # databases while the main thread takes snapshots; each thread's
    # memory is at its own line, and all of it goes when they close.
    run("""
    import gc, sqlite3, threading
    tm.start(5, native=True)
    lines = {}
    def fill(k):
        con = sqlite3.connect(":memory:")
        con.execute("create table t (a integer, b text)")
        con.executemany("insert into t values (?, ?)",
                        ((i, "row %d" % i) for i in range(30000))); lines[k] = line()
        barrier.wait()
        barrier.wait()
        con.close()
    barrier = threading.Barrier(5, timeout=120)
    threads = [threading.Thread(target=fill, args=(k,), daemon=True)
               for k in range(4)]
    for t in threads:
        t.start()
    while any(t.is_alive() for t in threads) and barrier.n_waiting < 4:
        tm.take_snapshot()
    barrier.wait()
    snap = tm.take_snapshot().filter_traces([tm.DomainFilter(True, NATIVE)])
    by_line = {}
    for t in snap.traces:
        for f in t.traceback:
            if f.filename == "<string>" and f.lineno == lines[0] - 1:
                by_line[f.lineno] = by_line.get(f.lineno, 0) + t.size
    # 30,000 rows take some 600 KB in each thread
    assert by_line.get(lines[0] - 1, 0) > 4 * 400_000, by_line
    barrier.wait()
    for t in threads:
        t.join()
    gc.collect()
    assert native_total() < 200_000, native_total()
    """)
