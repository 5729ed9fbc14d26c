"""The tracer keeps none of the program's code objects alive (issue #16):
a code object dies while its frames are traced, its traces keep the lines
they had, a new code object at the same address gets its own lines, and
snapshots show a traceback once however its frames were resolved. It
hears of the deaths from a code watcher from 3.12, and stores nothing in
the code objects then; from a co_extra slot before 3.12 or when no
watcher is free, without disturbing other users of co_extra slots. The
test build leaves the watcher out when CTRACEMALLOC_TEST_NO_CODE_WATCHER
is set: test_co_extra_where_watchers_exist runs this module so."""
import ctypes
import gc
import os
import random
import subprocess
import sys
import textwrap
import weakref

import pytest

from tmhelpers import child_env, patience, under_each_tracer

pytestmark = pytest.mark.ctm_only

NO_WATCHER = "CTRACEMALLOC_TEST_NO_CODE_WATCHER"
# How this process's tracer hears of code objects' deaths.
WATCHED = sys.version_info >= (3, 12) and not os.environ.get(NO_WATCHER)
needs_watcher = pytest.mark.skipif(
    not WATCHED, reason="co_extra slots: before 3.12, or the watcher is "
    "left out")


def make_function(src, filename, name="f"):
    """A function whose code object nothing else holds (not a constant of
    this module's code)."""
    ns = {}
    exec(compile(textwrap.dedent(src), filename, "exec"), ns)
    return ns[name]


def where(tm, block, i=0):
    """(filename, lineno) of frame i of block's traceback."""
    frame = tm.get_object_traceback(block)[i]
    return frame.filename, frame.lineno


# For children: n code objects, each compiled and run once, making a
# block at line 1, 2 or 3 of filename, then dropped; their blocks keep
# their lines and the code objects are freed. Returns the blocks.
DROPPED_CODE = """
import gc, weakref

def dropped_code_keeps_lines(tm, filename, n):
    kept, refs = [], []
    for i in range(n):
        line = 1 + i % 3
        code = compile("\\n" * (line - 1) + "x = bytearray(3000)",
                       filename, "exec")
        ns = {}
        exec(code, ns)
        kept.append((line, ns["x"]))
        refs.append(weakref.ref(code))
        del code, ns
    gc.collect()
    assert all(r() is None for r in refs)
    for line, b in kept:
        fr = tm.get_object_traceback(b)[0]
        assert (fr.filename, fr.lineno) == (filename, line)
    return kept
"""


def run_child(code, timeout=120, env=None, prelude=""):
    proc = subprocess.run([sys.executable, "-c",
                           prelude + textwrap.dedent(code)],
                          env=dict(child_env(), **(env or {})),
                          capture_output=True, text=True,
                          timeout=patience(timeout))
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def test_deaths_heard_of(ctm):
    ctm.start()
    stats = ctm._ctracemalloc._interner_stats()
    assert stats["code_deaths"] == ("watcher" if WATCHED else "co_extra")


def test_traced_code_object_is_freed(ctm):
    ctm.start()
    f = make_function("""
        def f():
            return [bytearray(100) for _ in range(3)]
        """, "<dies>")
    blocks = f()
    code = weakref.ref(f.__code__)
    del f
    gc.collect()
    assert code() is None
    # Its traces keep their line, resolved as the code object died.
    for b in blocks:
        assert where(ctm, b) == ("<dies>", 3)
    stats = ctm.take_snapshot().statistics("lineno")
    mine = [s for s in stats if s.traceback[0].filename == "<dies>"]
    assert len(mine) == 1 and mine[0].count >= 3


def test_code_objects_die_while_stopped_and_after_clear(ctm):
    fs = [make_function("""
        def f():
            return bytearray(1000)
        """, "<f%d>" % i) for i in range(20)]
    ctm.start()
    kept = [f() for f in fs]
    refs = [weakref.ref(f.__code__) for f in fs]
    del fs[:10]
    gc.collect()
    ctm.clear_traces()
    del fs[:5]                  # tokens of a cleared generation
    gc.collect()
    kept += [f() for f in fs]   # new records for the last five
    ctm.stop()
    del fs[:]                   # not tracing
    gc.collect()
    assert all(r() is None for r in refs)
    ctm.start()
    g = make_function("""
        def g():
            return bytearray(1000)
        """, "<g>", "g")
    b = g()
    assert where(ctm, b) == ("<g>", 3)
    del g
    gc.collect()
    assert where(ctm, b) == ("<g>", 3)
    del kept


@pytest.mark.parametrize("nframe", [1, 3])
def test_address_reused_by_another_code_object(ctm, nframe):
    """Code objects with lines 1 and 6 die at random until one is made at
    the address of one of the other kind: each trace keeps its line. With
    3 frames the dying code is below a long-lived helper's frame, so the
    stack cache entry to drop is not the one of its top frame."""
    def alloc():
        return bytearray(500)
    ctm.start(nframe)
    call = "bytearray(500)" if nframe == 1 else "alloc()"
    srcs = {1: "x = %s\n" % call, 6: "\n\n\n\n\nx = %s\n" % call}
    depth = 0 if nframe == 1 else 1   # the dead code's frame
    rng = random.Random(16)
    kept = []
    seen = {}
    reused = 0
    # Under ASan a freed address comes back only once it leaves the
    # quarantine: rarely, and how soon depends on what the process freed
    # before (a sanitizer run found 23 in 20,000 rounds once).
    for i in range(40000):
        line = rng.choice((1, 6))
        code = compile(srcs[line], "<reuse>", "exec")
        ns = {"alloc": alloc}
        exec(code, ns)
        kept.append((line, ns["x"]))
        address = id(code)
        del code, ns
        if seen.get(address, line) != line:
            reused += 1
            if reused == 50:
                break
        seen[address] = line
    assert reused >= 10, "too few addresses reused"
    for line, block in kept:
        assert where(ctm, block, depth) == ("<reuse>", line)
    stats = ctm.take_snapshot().statistics("traceback")
    counts = {}
    for s in stats:
        frame = s.traceback[depth] if len(s.traceback) > depth else None
        if frame is not None and frame.filename == "<reuse>":
            counts[frame.lineno] = counts.get(frame.lineno, 0) + s.count
    # the bytearray object and its buffer
    assert counts == {1: 2 * sum(1 for l, _ in kept if l == 1),
                      6: 2 * sum(1 for l, _ in kept if l == 6)}


def same_lines_scenario(tm):
    src = """
        def f(n):
            return [bytearray(n) for _ in range(2)]
        """
    tm.start(2)
    kept = []
    live = make_function(src, "<same>")
    for i in range(5):
        f = make_function(src, "<same>")
        kept += f(100)
        del f
        gc.collect()
        kept += live(100)
    snap = tm.take_snapshot()
    tm.stop()
    return snap.filter_traces([tm.Filter(True, "<same>")]), kept


def keys(stats):
    return sorted(tuple((f.filename, f.lineno) for f in s.traceback)
                  for s in stats)


@pytest.mark.usefixtures("ctm")
def test_no_duplicate_rows_after_resolution(stdlib, ctm):
    """Frames resolved at death equal frames still live and frames of
    other dead code objects: a snapshot groups them as one, as the
    stdlib's does."""
    ours, kept = same_lines_scenario(ctm)
    theirs, kept2 = same_lines_scenario(stdlib)
    # (Sizes and counts are not compared: on 3.11 ours traces one list
    # from the free list more than the stdlib, before #16 too.)
    for key in ("traceback", "lineno", "filename"):
        stats = ours.statistics(key)
        assert len({s.traceback for s in stats}) == len(stats), key
        assert keys(stats) == keys(theirs.statistics(key)), key
    diff = ours.compare_to(ours, "traceback")
    assert len({d.traceback for d in diff}) == len(diff)
    assert keys(diff) == keys(theirs.compare_to(theirs, "traceback"))
    (line3,) = [s for s in ours.statistics("lineno")
                if s.traceback[0].lineno == 3]
    assert line3.count >= 2 * len(kept)     # bytearrays and buffers


def co_extra_api():
    api = ctypes.pythonapi
    if hasattr(api, "PyUnstable_Eval_RequestCodeExtraIndex"):
        return (api.PyUnstable_Eval_RequestCodeExtraIndex,
                api.PyUnstable_Code_SetExtra, api.PyUnstable_Code_GetExtra)
    return (api._PyEval_RequestCodeExtraIndex, api._PyCode_SetExtra,
            api._PyCode_GetExtra)


FREEFUNC = ctypes.CFUNCTYPE(None, ctypes.c_voidp)
# The interpreter keeps a free function for its lifetime: so must we.
FREED = []
FREE = FREEFUNC(FREED.append)


def test_other_co_extra_users_unaffected(ctm):
    request, set_extra, get_extra = co_extra_api()
    request.argtypes = [FREEFUNC]
    request.restype = ctypes.c_ssize_t
    set_extra.argtypes = [ctypes.py_object, ctypes.c_ssize_t,
                          ctypes.c_voidp]
    set_extra.restype = ctypes.c_int
    get_extra.argtypes = [ctypes.py_object, ctypes.c_ssize_t,
                          ctypes.POINTER(ctypes.c_voidp)]
    get_extra.restype = ctypes.c_int
    freed = FREED
    del freed[:]
    ctm.start()
    index = request(FREE)
    f = make_function("""
        def f():
            return bytearray(10)
        """, "<other>")
    set_extra(f.__code__, index, ctypes.c_voidp(100))
    block = f()                 # our token goes in our slot
    extra = ctypes.c_voidp()
    assert get_extra(f.__code__, index, extra) == 0
    assert extra.value == 100
    set_extra(f.__code__, index, ctypes.c_voidp(200))
    # CPython calls a free function for every index below the size of a
    # dying code object's co_extra, NULL or not: the tracer's co_extra
    # ends at its own index (requested first here), so the code objects it
    # met do not call this one. (With a watcher it makes none.)
    assert freed == [100]
    del f
    gc.collect()
    assert freed == [100, 200]
    assert where(ctm, block) == ("<other>", 3)


def test_no_free_slot_resolves_at_once():
    """With every co_extra index taken (and the watcher left out), frames
    are resolved as they are captured: still right, code objects still
    freed."""
    out = run_child("""
        import ctypes, gc, weakref
        api = ctypes.pythonapi
        request = getattr(api, "PyUnstable_Eval_RequestCodeExtraIndex",
                          None) or api._PyEval_RequestCodeExtraIndex
        request.argtypes = [ctypes.c_voidp]
        request.restype = ctypes.c_ssize_t
        while request(None) >= 0:
            pass
        import ctracemalloc
        ctracemalloc.start()
        stats = ctracemalloc._ctracemalloc._interner_stats()
        assert stats["code_deaths"] == "none", stats
        kept = dropped_code_keeps_lines(ctracemalloc, "<eager>", 200)
        stats = ctracemalloc.take_snapshot().statistics("lineno")
        n = {s.traceback[0].lineno: s.count for s in stats
             if s.traceback[0].filename == "<eager>"}
        # the bytearray objects and their buffers
        assert n == {1: 134, 2: 134, 3: 132}, n
        print("ok")
        """, env={NO_WATCHER: "1"}, prelude=DROPPED_CODE)
    assert out.strip() == "ok"


def require_testcapi_watchers():
    """_testcapi, which takes code watchers, or skip."""
    try:
        import _testcapi
    except ImportError:
        _testcapi = None
    if not hasattr(_testcapi, "add_code_watcher"):
        pytest.skip("no _testcapi.add_code_watcher")


@needs_watcher
def test_no_free_watcher_falls_back_to_co_extra():
    """With the 8 code watchers taken before the first start(), the
    deaths come through a co_extra slot: lines right, code objects
    freed."""
    require_testcapi_watchers()
    out = run_child("""
        import _testcapi, gc, weakref
        taken = 0
        try:
            while True:
                _testcapi.add_code_watcher(0)
                taken += 1
        except RuntimeError:
            pass
        import ctracemalloc
        ctracemalloc.start()
        stats = ctracemalloc._ctracemalloc._interner_stats()
        print(taken, stats["code_deaths"])
        dropped_code_keeps_lines(ctracemalloc, "<taken>", 300)
        print("ok")
        """, prelude=DROPPED_CODE)
    assert out.split() == ["8", "co_extra", "ok"]


@needs_watcher
def test_co_extra_where_watchers_exist():
    """This module's tests pass with the deaths heard of through co_extra
    slots where code watchers exist (the test build leaves the watcher
    out)."""
    root = __file__.rsplit("/tests/", 1)[0]
    env = dict(child_env(), **{NO_WATCHER: "1"})
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
         __file__], env=env, cwd=root, capture_output=True, text=True,
        timeout=patience(600))
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]


BLOCKS = """
import gc, sys
import ctracemalloc, tracemalloc    # the same imports under both tracers
tm = __import__(sys.argv[1])
src = "def f(a):\\n    return [a] * 3\\n"

def make():
    ns = {}
    exec(compile(src, "<blocks>", "exec"), ns)
    return ns["f"]

tm.start()
make()(0)
gc.collect()
before = sys.getallocatedblocks()
funcs = [make() for _ in range(3000)]
results = [f(1) for f in funcs]
del results
gc.collect()
print(sys.getallocatedblocks() - before)
"""


@needs_watcher
def test_no_block_per_code_object():
    """Nothing is stored in the code objects the tracer meets: 3,000
    functions compiled, run and kept grow the interpreter's blocks as
    much as under the stdlib (a co_extra slot would be a block each)."""
    grown = {name: int(out) for name, out in under_each_tracer(BLOCKS).items()}
    print(grown)
    assert grown["ctracemalloc"] <= grown["tracemalloc"] + 30, grown


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_code_objects_die_in_forked_child(ctm):
    f = make_function("""
        def f():
            return bytearray(2000)
        """, "<forked>")
    ctm.start()
    b = f()
    pid = os.fork()
    if pid == 0:
        status = 1
        try:
            global_f = f
            del global_f
            g = make_function("""
                def g():
                    return bytearray(2000)
                """, "<child>", "g")
            c = g()
            del g
            gc.collect()
            ok = (where(ctm, b) == ("<forked>", 3)
                  and where(ctm, c) == ("<child>", 3))
            status = 0 if ok else 2
        finally:
            os._exit(status)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    del f
    gc.collect()
    assert where(ctm, b) == ("<forked>", 3)


GENERATED = """
import gc, sys
tm = __import__(sys.argv[1])
tm.start()
for i in range(50000):
    src = ("def f(a):\\n    return [a] * %d\\nx = f(3)\\n"
           "class C:\\n    y = x\\n" % (i % 7 + 1))
    code = compile(src, "<gen>", "exec")
    ns = {}
    exec(code, ns)
    del code, ns
gc.collect()
print(tm.get_traced_memory()[0])
"""


def test_generated_modules_are_not_kept():
    """50,000 modules compiled, run and dropped: ctracemalloc traces
    about what the stdlib traces, not the code objects. (One filename for
    all: the stdlib keeps every traced filename str alive, which is its
    own observer effect, about 60 bytes a module.)"""
    traced = {name: int(out)
              for name, out in under_each_tracer(GENERATED, 300).items()}
    print(traced)
    assert traced["ctracemalloc"] <= 1.2 * traced["tracemalloc"] + 65536, \
        traced
