"""The tracer's own memory is bounded by what live traces name (issue #16):
tracebacks that no live trace names, and the frames and filenames that
only they name, go when the interner is compacted, and what live traces
name stays as it was: same lines, same tracebacks, same statistics as
the stdlib's, through code objects that die before, between and after
compactions."""
import json
import subprocess
import sys

import pytest

from tmhelpers import child_env, patience

pytestmark = pytest.mark.ctm_only

# Runs many generated modules, each in its own file (both tracers
# imported, so that the free lists are the same when tracing starts). Every 400th keeps a
# block whose code object dies at once; every 900th keeps its function
# alive, which allocates again at the end (its frames interned anew after
# compactions); half of those functions die before the snapshot.
PROGRAM = r"""
import gc, json, sys
import ctracemalloc, tracemalloc    # the same imports before start()
tm = __import__(sys.argv[1])
nframe, nmodules = int(sys.argv[2]), int(sys.argv[3])
tm.start(nframe)
kept, funcs, memory = [], [], []

def run(i):
    src = ("def f(a):\n    return [a] * %d\nx = f(3)\n"
           "def g(n):\n    return bytearray(n)\n"
           "class C:\n    y = x\n" % (i % 7 + 1))
    ns = {}
    exec(compile(src, "<gen%d>" % i, "exec"), ns)
    if i % 400 == 0:
        kept.append(ns["g"](1000 + i))
    if i % 900 == 0:
        funcs.append(ns["g"])

for i in range(nmodules):
    run(i)
    if i % (nmodules // 50) == nmodules // 50 - 1:
        memory.append(tm.get_tracemalloc_memory())
late = [g(7000 + k) for k, g in enumerate(funcs)]
del funcs[::2]
gc.collect()
snapshot = tm.take_snapshot()
lines = sorted(
    (s.traceback[0].filename, s.traceback[0].lineno, s.size, s.count)
    for s in snapshot.statistics("lineno")
    if s.traceback[0].filename.startswith("<gen"))
tracebacks = [[(f.filename, f.lineno) for f in tm.get_object_traceback(b)]
              for b in kept + late]
stats = (tm._ctracemalloc._interner_stats()
         if sys.argv[1] == "ctracemalloc" else {})
print(json.dumps({"lines": lines, "tracebacks": tracebacks,
                  "memory": memory, "stats": stats}))
"""


def run(tmp_path, name, nframe, nmodules):
    script = tmp_path / "program.py"
    script.write_text(PROGRAM)
    proc = subprocess.run(
        [sys.executable, str(script), name, str(nframe), str(nmodules)],
        env=child_env(), capture_output=True, text=True,
        timeout=patience(300))
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout)


@pytest.mark.parametrize("nframe", [1, 25])
def test_live_traces_keep_their_tracebacks(tmp_path, nframe):
    """After several compactions the snapshot's lines in the generated
    files and every kept block's traceback are the stdlib's."""
    ours = run(tmp_path, "ctracemalloc", nframe, 12000)
    assert ours["stats"]["compactions"] >= 2, ours["stats"]
    theirs = run(tmp_path, "tracemalloc", nframe, 12000)
    assert ours["tracebacks"] == theirs["tracebacks"]
    assert ours["lines"] == theirs["lines"]
    # 30 kept blocks, 14 functions' blocks; their lines are among them
    assert len(ours["tracebacks"]) == 30 + 14
    sizes = {(f, line): size for f, line, size, count in ours["lines"]}
    assert sizes[("<gen800>", 5)] >= 1800


def test_tracer_memory_bounded_by_live_traces(tmp_path):
    """50,000 modules in distinct files: the tracer's memory stays what
    the live traces need (it grew to 22 MiB, 27 MiB with 25 frames,
    before compaction), and does not grow with the modules run."""
    ours = run(tmp_path, "ctracemalloc", 25, 50000)
    memory = ours["memory"]
    print(memory, ours["stats"])
    assert max(memory) < 3 * 2**20, memory
    # The memory is a sawtooth (it grows between compactions, about 35
    # here): compare the tops of the last fifth and of the first, not
    # single points, whose phase on the tooth is chance (a point before a
    # compaction is twice one after it).
    assert len(memory) == 50
    assert max(memory[-10:]) <= 1.5 * max(memory[:10]) + 2**18, memory
    # what is left: the tracebacks of live traces, not one per module
    assert ours["stats"]["tracebacks"] < 20000, ours["stats"]


def compacting_env():
    """A child environment in which test builds compact the interner
    whenever it has grown by 16 entries."""
    env = child_env()
    env["CTRACEMALLOC_TEST_COMPACT_MIN"] = "16"
    return env


def run_compacting(code):
    """The stdout of code, run in a child whose interner compacts all the
    time (compacting_env)."""
    proc = subprocess.run([sys.executable, "-c", code], env=compacting_env(),
                          capture_output=True, text=True,
                          timeout=patience(60))
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def test_compacting_all_the_time():
    """The knob works: a few hundred stacks make many compactions."""
    code = (
        "import ctracemalloc as tm\n"
        "tm.start(5)\n"
        "def deep(n):\n"
        "    return deep(n - 1) if n else bytearray(100)\n"
        "keep = [deep(i % 300) for i in range(3000)]\n"
        "print(tm._ctracemalloc._interner_stats()['compactions'])\n"
        "tbs = [tm.get_object_traceback(b) for b in keep]\n"
        "assert len(tbs[0]) < len(tbs[1]) < len(tbs[2]) <= len(tbs[3]) == 5\n"
        "assert all(t[-1].lineno == 4 for t in tbs)\n")
    assert int(run_compacting(code)) >= 3


@pytest.mark.parametrize("what", [
    ["tests/conformance.py"],
    ["-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_threads.py",
     "tests/test_fork.py", "tests/test_code_lifetime.py",
     "--deselect",
     "tests/test_code_lifetime.py::test_generated_modules_are_not_kept"],
], ids=["conformance", "threads-fork-code-lifetime"])
def test_suites_pass_while_compacting_all_the_time(what):
    """Compaction renames every id the tracer has; the tests that are
    hardest on ids (threads allocating while snapshots are taken, fork,
    code objects dying at every point) pass while it happens all the
    time."""
    root = __file__.rsplit("/tests/", 1)[0]
    proc = subprocess.run([sys.executable] + what, env=compacting_env(),
                          cwd=root, capture_output=True, text=True,
                          timeout=patience(600))
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
