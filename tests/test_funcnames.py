"""Function names: Frame.function (ctracemalloc only).

The tracer keeps the function of each frame it interns (its code
object's qualified name, co_qualname, from 3.11; co_name before), and
snapshots carry it: Frame.function, through statistics, compare_to,
filter_traces, traces, dump and load and the flame graph. It is not part
of the frame: equality, hashing, repr and pickling stay the stdlib's.
"""
import gc
import pickle
import re
import sys
import tracemalloc as stdlib_tracemalloc

import pytest

from test_cli import cli, flame_data, selftest
from test_compaction import run_compacting
from tmhelpers import plain_traces

pytestmark = pytest.mark.ctm_only

QUALNAMES = sys.version_info >= (3, 11)

# Each allocation on a line of its own, marked, so that no two functions
# share the line (where they do, the first one seen names it).
PROGRAM = """\
class Holder:
    def method(self):
        return bytearray(11111)  # @method

def outer():
    def inner():
        return bytearray(22222)  # @inner
    return inner()  # @call-inner

def function():
    return bytearray(33333)  # @function

make = (lambda:
        bytearray(44444))  # @lambda

module_block = bytearray(55555)  # @module
kept = [Holder().method(), outer(), function(), make()]  # @calls
"""

EXPECTED = {
    "method": "Holder.method" if QUALNAMES else "method",
    "inner": "outer.<locals>.inner" if QUALNAMES else "inner",
    "call-inner": "outer",
    "function": "function",
    "lambda": "<lambda>",
    "module": "<module>",
    "calls": "<module>",
}


def marks():
    return {m.group(1): i + 1 for i, text in
            enumerate(PROGRAM.splitlines())
            for m in [re.search(r"# @(\S+)", text)] if m}


def run_program(tm, path, nframe=5, before_snapshot=None):
    """A snapshot of PROGRAM run from path under tm (the module)."""
    path.write_text(PROGRAM)
    tm.start(nframe)
    try:
        ns = {"__name__": "prog"}
        exec(compile(PROGRAM, str(path), "exec"), ns)
        if before_snapshot is not None:
            before_snapshot(ns)
        return tm.take_snapshot()
    finally:
        tm.stop()


def names_by_line(frames, filename):
    """{lineno: {function, ...}} of the frames of filename."""
    out = {}
    for frame in frames:
        if frame.filename == filename:
            out.setdefault(frame.lineno, set()).add(frame.function)
    return out


def all_frames(snapshot):
    return [f for t in snapshot.traces for f in t.traceback]


def check_names(frames, filename):
    lines = marks()
    found = names_by_line(frames, filename)
    for mark, name in EXPECTED.items():
        assert found.get(lines[mark]) == {name}, (mark, found)


def test_names_of_functions(ctm, tmp_path):
    """Functions, methods, nested functions, lambdas and module level,
    seen through each way a snapshot gives frames."""
    path = tmp_path / "prog.py"
    snapshot = run_program(ctm, path)
    filename = str(path)
    check_names(all_frames(snapshot), filename)
    check_names([f for s in snapshot.statistics("traceback")
                 for f in s.traceback], filename)
    # by line: the lines that allocated
    found = names_by_line([s.traceback[0]
                           for s in snapshot.statistics("lineno")], filename)
    for mark in ("method", "inner", "function", "lambda", "module"):
        assert found[marks()[mark]] == {EXPECTED[mark]}, mark
    # the frames of one traceback, oldest first: the module's call, then
    # the method
    stat = next(s for s in snapshot.statistics("traceback")
                if s.traceback[-1].lineno == marks()["method"]
                and s.traceback[-1].filename == filename)
    assert [f.function for f in stat.traceback[-2:]] == [
        "<module>", EXPECTED["method"]]
    assert [f.function for f in reversed(stat.traceback)][:2] == [
        EXPECTED["method"], "<module>"]
    assert [f.function for f in stat.traceback[-2:][::-1]] == [
        EXPECTED["method"], "<module>"]
    assert stat.traceback[-1].function == EXPECTED["method"]
    # filtering, cumulative statistics and compare_to keep them
    kept = snapshot.filter_traces([ctm.Filter(True, filename)])
    check_names(all_frames(kept), filename)
    cumulative = kept.statistics("lineno", cumulative=True)
    found = names_by_line([s.traceback[0] for s in cumulative], filename)
    assert found[marks()["calls"]] == {"<module>"}
    assert found[marks()["call-inner"]] == {"outer"}
    empty = ctm.Snapshot([], 5)
    for key in ("lineno", "traceback"):
        diffs = kept.compare_to(empty, key)
        found = names_by_line([f for d in diffs for f in d.traceback],
                              filename)
        assert found[marks()["inner"]] == {EXPECTED["inner"]}
    # grouped by file, a frame is (filename, 0): no function
    assert {s.traceback[0].function
            for s in snapshot.statistics("filename")} == {None}


def test_names_outlive_code_objects(ctm, tmp_path):
    """Names stay when the code objects die before the snapshot (their
    frames are resolved at death)."""
    kept = []

    def drop(ns):
        kept.extend(ns["kept"] + [ns["module_block"]])
        ns.clear()
        gc.collect()

    path = tmp_path / "prog.py"
    snapshot = run_program(ctm, path, before_snapshot=drop)
    check_names(all_frames(snapshot), str(path))


@pytest.mark.parametrize("dead", [False, True], ids=["alive", "dead"])
def test_object_traceback_names(ctm, tmp_path, dead):
    """get_object_traceback's frames, of code objects alive or dead."""
    tracebacks = []

    def look(ns):
        objects = list(ns["kept"])
        if dead:
            ns.clear()
            gc.collect()
        tracebacks.extend(ctm.get_object_traceback(o) for o in objects)

    run_program(ctm, tmp_path / "prog.py", before_snapshot=look)
    method, inner, function, lam = tracebacks
    # the program's frames, below those of the test that runs it
    assert [f.function for f in method[-2:]] == [
        "<module>", EXPECTED["method"]]
    assert [f.function for f in inner[-3:]] == [
        "<module>", "outer", EXPECTED["inner"]]
    assert function[-1].function == "function"
    assert lam[-1].function == "<lambda>"
    assert [f.lineno for f in lam[-2:]] == [
        marks()["calls"], marks()["lambda"]]


def test_frame_is_the_stdlibs(ctm, stdlib, tmp_path):
    """The same program under both tracers: the frames compare, hash and
    print the same; the name changes none of that, nor pickling."""
    path = tmp_path / "prog.py"
    ours = run_program(ctm, path)
    theirs = run_program(stdlib, path)
    lines = set(marks().values())

    def frames(snapshot):
        return {(f.filename, f.lineno): f for f in all_frames(snapshot)
                if f.filename == str(path) and f.lineno in lines}

    ours_f, theirs_f = frames(ours), frames(theirs)
    assert set(ours_f) == set(theirs_f) == {
        (str(path), n) for n in lines}
    for key, frame in ours_f.items():
        other = theirs_f[key]
        assert frame.function is not None
        assert repr(frame) == repr(other)
        assert str(frame) == str(other)
        assert hash(frame) == hash(other)
        assert frame._frame == other._frame
        bare = ctm.Frame(key)
        assert bare.function is None
        assert frame == bare and hash(frame) == hash(bare)
        assert not frame < bare and not bare < frame
        assert {frame: 1}[bare] == 1
        assert pickle.dumps(frame) == pickle.dumps(bare)
        again = pickle.loads(pickle.dumps(frame))
        assert again == frame and again.function is None
    # a traceback, too
    stat = ours.statistics("traceback")[0]
    tb = stat.traceback
    bare = ctm.Traceback(tuple(reversed(tb._frames)), tb.total_nframe)
    assert tb == bare and hash(tb) == hash(bare) and repr(tb) == repr(bare)
    assert pickle.dumps(tb) == pickle.dumps(bare)
    # the stdlib's pickle of the snapshot holds no name: the same bytes as
    # that of a snapshot of the same traces without names, and the stdlib
    # loads it
    plain = ctm.Snapshot(ours.traces._traces, ours.traceback_limit)
    ours.dump(tmp_path / "a.pickle", format="pickle")
    plain.dump(tmp_path / "b.pickle", format="pickle")
    assert (tmp_path / "a.pickle").read_bytes() == \
        (tmp_path / "b.pickle").read_bytes()
    loaded = stdlib.Snapshot.load(tmp_path / "a.pickle")
    assert sorted(map(repr, loaded.statistics("traceback"))) == sorted(
        map(repr, ours.statistics("traceback")))


def test_frames_without_a_name(ctm, tmp_path):
    """No code object, no name: frames made from Python, snapshots of raw
    traces, the stdlib's pickle, the "<unknown>" frame."""
    frame = ctm.Frame(("a.py", 1))
    assert frame.function is None
    with pytest.raises(AttributeError):
        frame.function = "f"
    tb = ctm.Traceback((("a.py", 1), ("b.py", 2)))
    assert [f.function for f in tb] == [None, None]
    raw = [(0, 10, (("a.py", 1),), 1), (0, 10, (("<unknown>", 0),), 1)]
    snapshot = ctm.Snapshot(raw, 1)
    assert {f.function for f in all_frames(snapshot)} == {None}
    path = tmp_path / "s.pickle"
    stdlib_tracemalloc.Snapshot(raw, 1).dump(path)
    assert {f.function for f in all_frames(ctm.Snapshot.load(path))} == \
        {None}
    # a frame given a new value loses its name
    named = run_program(ctm, tmp_path / "prog.py")
    frame = next(f for f in all_frames(named) if f.function)
    frame._frame = ("x.py", 3)
    assert frame.function is None
    stat = named.statistics("traceback")[0]
    tb = stat.traceback
    assert tb[0].function is not None
    tb._frames = tb._frames
    assert tb[0].function is not None       # the same tuple
    tb._frames = tuple(list(tb._frames))    # equal, not the same
    assert [f.function for f in tb] == [None] * len(tb)
    tb = named.statistics("traceback")[0].traceback
    tb.__init__(tuple(reversed(tb._frames)))
    assert [f.function for f in tb] == [None] * len(tb)


def test_dump_and_load_keep_names(ctm, tmp_path):
    path = tmp_path / "prog.py"
    snapshot = run_program(ctm, path)
    snapshot.dump(tmp_path / "s.ctm")
    loaded = ctm.Snapshot.load(tmp_path / "s.ctm")
    assert plain_traces(loaded) == plain_traces(snapshot)

    def named(s):
        return sorted({(f.filename, f.lineno, f.function)
                       for f in all_frames(s)}, key=repr)

    assert named(loaded) == named(snapshot)
    check_names(all_frames(loaded), str(path))
    # pickling a snapshot writes our format
    again = pickle.loads(pickle.dumps(snapshot))
    assert named(again) == named(snapshot)


def test_first_name_wins_on_a_shared_line(ctm, tmp_path):
    """A comprehension on its function's line (its own code object before
    3.12) shares the frame: every frame of that line has the same name,
    one of the two."""
    code = ("def build():\n"
            "    return [bytearray(1000 + i) for i in range(5)]\n"
            "kept = build()\n")
    path = tmp_path / "comp.py"
    path.write_text(code)
    ctm.start(5)
    try:
        ns = {}
        exec(compile(code, str(path), "exec"), ns)
        snapshot = ctm.take_snapshot()
    finally:
        ctm.stop()
    found = names_by_line(all_frames(snapshot), str(path))
    comprehension = "build.<locals>.<listcomp>" if QUALNAMES else "<listcomp>"
    assert len(found[2]) == 1
    assert found[2] <= {"build", comprehension}
    assert found[3] == {"<module>"}


def test_names_survive_compaction():
    """Test builds compacting all the time (test_compaction): frames
    resolved at their code object's death are interned again, with their
    names."""
    code = (
        "import ctracemalloc as tm, gc\n"
        "tm.start(5)\n"
        "keep = []\n"
        "for i in range(300):\n"
        "    ns = {}\n"
        "    exec(compile('def f%d():\\n    return bytearray(%d)\\n'\n"
        "                 'keep.append(f%d())\\n' % (i, 100 + i, i),\n"
        "                 '<gen%d>' % (i % 7), 'exec'), {'keep': keep})\n"
        "gc.collect()\n"
        "print(tm._ctracemalloc._interner_stats()['compactions'])\n"
        "s = tm.take_snapshot()\n"
        "names = {}\n"
        "for t in s.traces:\n"
        "    f = t.traceback[-1]\n"
        "    if f.filename.startswith('<gen'):\n"
        "        names.setdefault((f.filename, f.lineno), set()).add(\n"
        "            f.function)\n"
        "print(sorted((k, sorted(v)) for k, v in names.items()))\n")
    compactions, names = run_compacting(code).splitlines()
    assert int(compactions) >= 3
    names = dict((tuple(k), v) for k, v in eval(names))
    # line 2 of each generated file: one frame, named by the first of the
    # functions f0..f299 that allocated there
    for g in range(7):
        assert names[("<gen%d>" % g, 2)] == ["f%d" % g], names


def test_flamegraph_boxes_name_functions(ctm, tmp_path):
    from ctracemalloc import _flamegraph
    path = tmp_path / "prog.py"
    snapshot = run_program(ctm, path)
    page = _flamegraph.render(snapshot)
    data = flame_data(page)
    lines = marks()
    nodes = {(data["names"][f], n): data["func"][i]
             for i, (f, n) in enumerate(zip(data["file"], data["line"]))
             if f >= 0}
    for mark in ("method", "inner", "function", "module"):
        fn = nodes[(str(path), lines[mark])]
        assert data["funcs"][fn] == EXPECTED[mark]
    # a snapshot without names: no function anywhere
    bare = flame_data(_flamegraph.render(ctm.Snapshot(
        snapshot.traces._traces, 5)))
    assert set(bare["func"]) == {-1}
    out = tmp_path / "f.html"
    out.write_text(page)
    title, dom = selftest(out)
    assert title.startswith("selftest: ok"), title
    # the boxes the page drew: "func (file:line)"
    assert "function (prog.py:%d)" % lines["function"] in dom
    assert "%s (prog.py:%d)" % (EXPECTED["inner"].replace("<", "&lt;")
                                .replace(">", "&gt;"),
                                lines["inner"]) in dom
    out.write_text(_flamegraph.render(ctm.Snapshot(
        snapshot.traces._traces, 5)))
    title, dom = selftest(out)
    assert "prog.py:%d" % lines["function"] in dom
    assert "(prog.py:" not in dom


def test_snapshot_holds_none_of_its_names(ctm):
    """The names of dead code objects' frames are made into str for a
    snapshot after its traces are copied: none of them is a trace of the
    snapshot that holds it (the stdlib's snapshot has none of its own
    objects). The filename they share is made before (the frames'
    filenames must be there under the lock): a few blocks, not one per
    name (205 when the names were made with the filenames)."""
    keep = []
    ctm.start(1)
    try:
        for i in range(200):
            exec(compile("def f%d():\n    return bytearray(%d)\n"
                         "keep.append(f%d())\n" % (i, 1000 + i, i),
                         "<gen>", "exec"), {"keep": keep})
        gc.collect()
        snapshot = ctm.take_snapshot(); line = sys._getframe().f_lineno  # noqa
    finally:
        ctm.stop()
    names = {f.function for t in snapshot.traces for f in t.traceback
             if f.filename == "<gen>" and f.lineno == 2}
    assert names == {"f0"}
    here = [s for s in snapshot.statistics("lineno")
            if s.traceback[0].filename == __file__
            and s.traceback[0].lineno == line]
    assert sum(s.count for s in here) < 10, here


def test_run_keeps_names(ctm, tmp_path):
    """ctracemalloc run: the snapshot it writes, cut below the program's
    frames, names them."""
    path = tmp_path / "prog.py"
    path.write_text(PROGRAM)
    out = tmp_path / "prog.snapshot"
    proc = cli("run", "-n", 5, "-o", out, path)
    assert proc.returncode == 0, proc.stderr
    snapshot = ctm.Snapshot.load(out)
    check_names(all_frames(snapshot), str(path))
    # the runner's own frames are cut: the oldest frame is the program's
    stat = next(s for s in snapshot.statistics("traceback")
                if s.traceback[-1].lineno == marks()["inner"]
                and s.traceback[-1].filename == str(path))
    assert [f.function for f in stat.traceback] == [
        "<module>", "outer", EXPECTED["inner"]]
