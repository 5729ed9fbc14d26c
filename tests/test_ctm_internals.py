"""What only ctracemalloc promises: its own memory is never traced, and it
finds the block of an instance with a managed dict (3.12+)."""
import collections
import gc
import os
import sys

import pytest

from tmhelpers import child_env, heap_in_use, patience, raw_frames

pytestmark = pytest.mark.ctm_only


def here():
    return sys._getframe(1).f_lineno


def line_size(snapshot, line):
    """Total size and count of the traces allocated at line of this file."""
    traces = [t for t in snapshot.traces
              if raw_frames(t.traceback)[0] == (__file__, line)]
    return sum(t.size for t in traces), len(traces)


def package_traces(ctm, snapshot):
    """Traces allocated by ctracemalloc's own Python files."""
    package = os.path.dirname(ctm.__file__) + os.sep
    return [t for t in snapshot.traces
            if any(f.filename.startswith(package) for f in t.traceback)]


def test_trace_tables_not_traced(ctm):
    """200000 new traces make the tracer's tables grow by megabytes: none
    of that may show up as traced memory."""
    n = 200_000
    ctm.start()
    gc.collect()
    line = here() + 1
    objects = [object() for _ in range(n)]
    current = ctm.get_traced_memory()[0]
    snapshot = ctm.take_snapshot()
    size, count = line_size(snapshot, line)
    object_size = sys.getsizeof(object())
    # n objects, the list and its item array (over-allocated by 1/8 at most)
    assert count >= n
    assert n * object_size <= size <= n * object_size + n * 8 * 1.2 + 4096
    # the traced total holds nothing more than the traces
    assert abs(current - sum(t.size for t in snapshot.traces)) <= 4096
    assert ctm.get_tracemalloc_memory() > 0
    del objects


def test_snapshot_memory_not_traced(ctm):
    """A snapshot's arrays are the tracer's memory, not the program's."""
    ctm.start(5)
    objects = [object() for _ in range(100_000)]
    line = here() + 1
    big = ctm.take_snapshot()
    big.statistics("lineno")
    big.statistics("traceback")
    big.filter_traces([ctm.Filter(True, __file__)])
    assert len(big.traces) >= 100_000
    snapshot = ctm.take_snapshot()
    size, _ = line_size(snapshot, line)
    assert size < 64 * 1024
    assert package_traces(ctm, snapshot) == []
    del objects, big


def test_api_calls_leave_no_traces(ctm):
    ctm.start(10)
    obj = bytearray(1000)
    baseline = ctm.take_snapshot()
    for _ in range(200):
        ctm.get_object_traceback(obj)
        ctm.get_traced_memory()
        ctm.get_tracemalloc_memory()
        ctm.take_snapshot().statistics("filename")
    ctm.clear_traces()
    ctm.reset_peak()
    snapshot = ctm.take_snapshot()
    assert package_traces(ctm, snapshot) == []
    # nothing but the few objects of this frame is left after clear_traces
    assert ctm.get_traced_memory()[0] < 16 * 1024
    del baseline


class Plain:
    pass


class Attributes:
    def __init__(self):
        self.a, self.b, self.c = 1, 2, 3


class Sub(Plain):
    pass


class WithWeakref:
    __slots__ = ("x", "__weakref__")


class SlotsAndDict:
    __slots__ = ("x", "__dict__")


@pytest.mark.skipif(sys.version_info < (3, 11),
                    reason="managed dicts before the GC header: 3.11+")
@pytest.mark.parametrize("cls", [Plain, Attributes, Sub, WithWeakref,
                                 SlotsAndDict])
def test_managed_dict_instance(ctm, cls):
    ctm.start()
    line = here() + 1
    obj = cls()
    traceback = ctm.get_object_traceback(obj)
    assert traceback is not None
    assert raw_frames(traceback) == ((__file__, line),)


@pytest.mark.skipif(sys.version_info < (3, 11),
                    reason="managed dicts before the GC header: 3.11+")
def test_managed_dict_instance_with_materialized_dict(ctm):
    # obj.__dict__ turns the inline values into a real dict: the instance
    # keeps its block. (The dict itself may come from the dict free list,
    # a block allocated before tracing: no traceback is promised for it.)
    ctm.start()
    line = here() + 1
    obj = Plain()
    obj.x = 1
    d = obj.__dict__
    d["y"] = 2
    assert raw_frames(ctm.get_object_traceback(obj)) == ((__file__, line),)


@pytest.mark.skipif(sys.version_info < (3, 11),
                    reason="managed dicts before the GC header: 3.11+")
def test_many_managed_dict_instances(ctm):
    ctm.start()
    line = here() + 1
    objects = [Attributes() for _ in range(1000)]
    lines = {raw_frames(ctm.get_object_traceback(o))[0][1] for o in objects}
    assert lines == {line}


def test_start_stop_cycles_do_not_leak(ctm):
    """The tracer's tables, tracebacks and snapshots are freed: ten cycles
    of 100000 traces each leave the C heap where it was."""
    def cycle():
        ctm.start(5)
        objects = [object() for _ in range(100_000)]
        snapshot = ctm.take_snapshot()
        snapshot.statistics("traceback")
        snapshot.filter_traces([ctm.Filter(True, __file__)])
        del snapshot, objects
        ctm.stop()

    cycle()
    cycle()
    gc.collect()
    before = heap_in_use()
    tracer_before = ctm.get_tracemalloc_memory()
    for _ in range(10):
        cycle()
    gc.collect()
    growth = heap_in_use() - before
    assert growth < 1024 * 1024, "C heap grew by %d bytes" % growth
    assert ctm.get_tracemalloc_memory() <= tracer_before


def test_soak_returns_to_baseline(ctm):
    """A long soak, in a child process of its own (other tests' threads
    would add their chain memos): 40 start/stop cycles with 1 to 25
    frames, each with threads compressing without the GIL and 250
    thousand objects made and dropped in waves, a snapshot and a clear:
    some twenty million traced allocations (helpers/soak.py). After every
    stop(), the tracer's memory is back at what stop() keeps for that
    depth, and the C heap does not grow."""
    import json
    import subprocess
    helper = os.path.join(os.path.dirname(__file__), "helpers", "soak.py")
    proc = subprocess.run([sys.executable, helper], env=child_env(),
                          capture_output=True, text=True,
                          timeout=patience(600))
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout)
    memory = result["tracer_memory"]
    baseline = {i % 3: memory[i] for i in range(3)}
    for i in range(3, len(memory)):
        assert memory[i] <= baseline[i % 3], (i, memory)
    assert result["heap_growth"] < 2 * 1024 * 1024, result
    assert result["allocations"] > 5_000_000


def test_snapshot_sizeof(ctm):
    """sys.getsizeof(snapshot) counts its arrays: 16 bytes a trace, plus
    the tables of tracebacks and frames, which a copy without traces
    keeps whole."""
    ctm.start(5)
    objects = [str(i) for i in range(50_000)]
    snapshot = ctm.take_snapshot()
    ctm.stop()
    ntraces = len(snapshot.traces)
    assert ntraces >= 50_000
    empty = snapshot.filter_traces([ctm.DomainFilter(True, 12345)])
    assert len(empty.traces) == 0
    assert sys.getsizeof(snapshot) - sys.getsizeof(empty) == 16 * ntraces
    # the tables: each distinct traceback takes at least its frames
    tracebacks = {(t.traceback, t.traceback.total_nframe)
                  for t in snapshot.traces}
    frames = sum(len(tb) for tb, _ in tracebacks)
    assert sys.getsizeof(empty) >= 4 * frames + 8 * len(tracebacks)
    del objects


def test_take_snapshot_groups_traces_by_traceback(ctm):
    """take_snapshot emits traces grouped by traceback (the file format
    and the analysis gain from runs) and loses none. Tracebacks are
    grouped as the tracer sees them, by instruction, so one line's
    traces may form a few runs, never one per trace."""
    ctm.start(3)

    def make(n):
        return [bytes(100 + i % 7) for i in range(n)]  # the bytes line

    line = make.__code__.co_firstlineno + 1
    keep = [make(1000), [bytearray(50) for _ in range(500)], make(2000)]
    keep += [make(10)]
    snapshot = ctm.take_snapshot()
    ctm.stop()
    runs = {}
    previous = None
    for trace in snapshot.traces:
        key = (trace.domain, trace.traceback, trace.traceback.total_nframe)
        if key != previous:
            runs[key] = runs.get(key, 0) + 1
            previous = key
    assert max(runs.values()) <= 4
    assert len(snapshot.traces) > 10 * sum(runs.values())
    made = [t for t in snapshot.traces
            if t.traceback[-1].filename == __file__
            and t.traceback[-1].lineno == line
            and 100 + 33 <= t.size <= 106 + 33 + 8]
    assert len(made) == 3010
    del keep


def test_take_snapshot_large_tables(ctm):
    """Past 2**17 live traces two threads group them (store.c): every
    trace is there once, in its domain, grouped by traceback."""
    ctm.start(2)
    keep = [bytes(20 + i % 50) for i in range(300_000)]
    for i in range(3000):
        ctm.track(7, 0x7000_0000 + 64 * i, 100 + i)
    snapshot = ctm.take_snapshot()
    expected = collections.Counter(
        (sys.getsizeof(obj), ctm.get_object_traceback(obj)) for obj in keep)
    ctm.stop()
    wanted = {tb for _, tb in expected}
    sizes = range(sys.getsizeof(bytes(20)), sys.getsizeof(bytes(69)) + 1)
    found = collections.Counter((t.size, t.traceback) for t in snapshot.traces
                                if t.domain == 0 and t.traceback in wanted
                                and t.size in sizes)  # not the list's
    assert found == expected
    assert sorted(t.size for t in snapshot.traces if t.domain == 7) == \
        list(range(100, 3100))
    runs = collections.Counter()
    previous = None
    for trace in snapshot.traces:
        key = (trace.domain, trace.traceback, trace.traceback.total_nframe)
        if key != previous:
            runs[key] += 1
            previous = key
    assert max(runs.values()) <= 4
    assert len(snapshot.traces) > 10 * sum(runs.values())


def expected_traces(ctm, objects):
    """Counter of (size, traceback) over objects, as the tracer sees them."""
    return collections.Counter(
        (sys.getsizeof(obj), ctm.get_object_traceback(obj))
        for obj in objects)


def traces_of(snapshot, expected):
    """Counter of (size, traceback) of the snapshot's traces that could be
    one of the expected ones (same traceback and a size among theirs)."""
    tracebacks = {tb for _, tb in expected}
    sizes = {size for size, _ in expected}
    return collections.Counter(
        (t.size, t.traceback) for t in snapshot.traces
        if t.domain == 0 and t.traceback in tracebacks and t.size in sizes)


def test_snapshot_reuses_a_freed_snapshots_array(ctm):
    """While tracing, the traces array of a large snapshot that is freed is
    kept (counted in get_tracemalloc_memory) for the next take_snapshot,
    which overwrites all of it: the next snapshot is right, with a live set
    that changed in between. clear_traces() and stop() give it back."""
    def fresh(n, size):
        return [bytes(size + i % 7) for i in range(n)]

    ctm.start(1)
    first = fresh(300_000, 40)          # 16 B per trace: 4.8 MB and more
    snapshot = ctm.take_snapshot()
    assert traces_of(snapshot, expected_traces(ctm, first)) == \
        expected_traces(ctm, first)
    size = 16 * len(snapshot.traces)
    before = ctm.get_tracemalloc_memory()
    del snapshot
    kept = ctm.get_tracemalloc_memory() - before
    assert size <= kept <= size * 1.1, (size, kept)

    # a live set of about the same size, changed: a third freed, as many
    # others of other sizes from another line (stale traces left in the
    # array would show as traces of the freed objects)
    del first[::3]
    second = fresh(100_000, 200)
    # the spare is no longer the tracer's once the snapshot is taken (its
    # tables may have grown meanwhile: under ASan's quarantine the new
    # objects come from new regions of the address space)
    spare = ctm.get_tracemalloc_memory()
    snapshot = ctm.take_snapshot()
    assert ctm.get_tracemalloc_memory() < spare - size // 2
    for objects in (first, second):
        expected = expected_traces(ctm, objects)
        assert traces_of(snapshot, expected) == expected

    del snapshot
    spared = ctm.get_tracemalloc_memory()
    ctm.clear_traces()
    cleared = ctm.get_tracemalloc_memory()
    assert spared - cleared >= 16 * (len(first) + len(second))
    snapshot = ctm.take_snapshot()       # nothing to keep: all cleared
    del snapshot
    ctm.stop()
    assert ctm.get_tracemalloc_memory() <= cleared
