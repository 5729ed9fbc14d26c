"""The peak record (start(peak=True), take_peak_snapshot()) and the
timeline (get_timeline()): what held the memory at its high-water mark,
and traced memory over time. Each test runs in a fresh interpreter: the
record is the tracer's, one per process."""
import textwrap

import pytest

from tmhelpers import run_python

pytestmark = pytest.mark.ctm_only

PRELUDE = """
import random, sys
import ctracemalloc as tm

def line():
    return sys._getframe(1).f_lineno

def total(snapshot, domain=None):
    return sum(t.size for t in snapshot.traces
               if domain is None or t.domain == domain)

def peak_snapshot_checked():
    # the record's total is the peak: the peak before the call is at most
    # it, and the call (which allocates) may only raise the peak after
    before = tm.get_traced_memory()[1]
    snap = tm.take_peak_snapshot()
    after = tm.get_traced_memory()[1]
    assert before <= total(snap) <= after, (before, total(snap), after)
    return snap
"""


def run(code, env=None):
    return run_python(PRELUDE + textwrap.dedent(code), env, 300).stdout


def test_the_temporary_that_made_the_peak():
    # The goal: a 60 MB temporary built and freed, then 2 MB kept.
    run("""
    tm.start(5, peak=True)
    def temporary():
        big = [bytes(1000) for _ in range(60_000)]; at = line()
        return at
    def kept():
        return [bytes(1000) for _ in range(2_000)], line()
    at = temporary()
    keep, kept_at = kept()
    snap = peak_snapshot_checked()
    top = snap.statistics("lineno")[0]
    assert top.traceback[0].lineno == at, top
    assert top.size >= 57_000_000, top
    end = tm.take_snapshot()
    assert all(s.traceback[0].lineno != at
               for s in end.statistics("lineno")), end.statistics("lineno")
    assert end.statistics("lineno")[0].traceback[0].lineno == kept_at
    # reset_peak() starts a new high-water mark: a smaller temporary
    tm.reset_peak()
    def smaller():
        mid = [bytes(1000) for _ in range(10_000)]; at = line()
        return at
    at2 = smaller()
    snap = peak_snapshot_checked()
    stats = {s.traceback[0].lineno: s.size for s in snap.statistics("lineno")}
    assert at not in stats
    assert stats[at2] >= 10_000_000
    assert stats[kept_at] >= 2_000_000
    """)


def test_the_record_is_the_live_set_at_the_peak():
    # Blocks tracked in a domain of their own, big enough (GiBs) that the
    # interpreter's own allocations (KiBs) cannot decide which moment is
    # the peak: the record holds the blocks of a moment whose tracked
    # total is the highest, to within what the interpreter allocated.
    # Adds, frees, replacements (track() again) and retraces at random,
    # with peaks now and then; young and old blocks (the nursery is
    # domain 0's and the native domain's, so the track API's blocks of
    # domain 0 and NATIVE_DOMAIN are there too).
    run("""
    tm.start(3, peak=True)
    rng = random.Random(18)
    def add(domain, ptr, size):
        tm.track(domain, ptr, size)
    def again(domain, ptr, size):
        tm.track(domain, ptr, size)
    live = {}                   # (domain, ptr) -> size
    moments = []                # (tracked total, sorted sizes)
    domains = [7, 0, tm.NATIVE_DOMAIN]
    base = 0x7E0000000000
    for i in range(4000):
        r = rng.random()
        if r < 0.45 or not live:
            key = (rng.choice(domains), base + 16 * rng.randrange(50_000))
            size = rng.randrange(1 << 30, 1 << 31) | 1
            (again if key in live else add)(key[0], key[1], size)
            live[key] = size
        else:
            key = rng.choice(list(live))
            tm.untrack(*key)
            del live[key]
        moments.append((sum(live.values()), sorted(live.values())))
    best = max(m[0] for m in moments)
    candidates = [sizes for tracked, sizes in moments
                  if tracked >= best - (1 << 24)]
    snap = peak_snapshot_checked()
    got = sorted(t.size for t in snap.traces if t.size >= 1 << 30)
    assert got in candidates, (len(got), [len(c) for c in candidates])
    for key in list(live):
        tm.untrack(*key)
    """)


def test_python_objects_exactly():
    # Python objects of every size, kept or freed in random order from
    # several lines and depths: the record's total is the peak, and its
    # lines are those that held memory then.
    run("""
    tm.start(10, peak=True)
    rng = random.Random(7)
    keep = []
    def make(n):
        return bytes(n) if n % 3 else [None] * (n // 8)
    def deep(d, n):
        return deep(d - 1, n) if d else make(n)
    for round in range(30):
        for i in range(rng.randrange(100, 3000)):
            keep.append(deep(rng.randrange(5), rng.randrange(1, 5000)))
        rng.shuffle(keep)
        del keep[:rng.randrange(len(keep) + 1)]
        if round % 7 == 3:
            peak_snapshot_checked()
    peak_snapshot_checked()
    snap = tm.take_peak_snapshot()
    assert len(snap.traces) > 1000
    assert snap.traceback_limit == 10
    # more than 2**16 peaks in a row (young traces' stamps keep gen's low
    # 16 bits, and are renewed every 2**15 peaks), then frees
    tm.clear_traces()
    grow = [bytes(8) for _ in range(150_000)]
    del grow[::3]
    peak_snapshot_checked()
    tm.reset_peak()
    grow.extend(bytes(8) for _ in range(70_000))
    del grow[:100_000]
    peak_snapshot_checked()
    """)


def test_compactions_keep_the_tracebacks_of_the_record():
    # The interner is compacted all the time (test builds' knob): the
    # tracebacks of the peak's traces, gone since, must survive, and
    # those of live traces too.
    out = run("""
    tm.start(5, peak=True)
    def make(k):
        ns = {}
        exec("def f{0}():\\n    return bytearray(50_000)\\n".format(k), ns)
        return ns["f%d" % k]()
    big = [make(k) for k in range(300)]
    snap = peak_snapshot_checked()
    del big
    # new tracebacks, many: compactions happen while the record names the
    # old ones
    def deep(n):
        return deep(n - 1) if n else bytearray(10)
    more = [deep(i % 200) for i in range(5000)]
    assert tm._ctracemalloc._interner_stats()["compactions"] >= 2
    snap = tm.take_peak_snapshot()
    stats = snap.statistics("lineno")
    assert stats[0].size >= 300 * 50_000, stats[0]
    assert stats[0].traceback[0].filename == "<string>"
    assert stats[0].traceback[0].lineno == 2
    print(tm._ctracemalloc._interner_stats()["compactions"])
    """, env={"CTRACEMALLOC_TEST_COMPACT_MIN": "16"})
    assert int(out) >= 2


def test_how_it_is_turned_on_and_off():
    run("""
    def raises(f, text):
        try:
            f()
        except RuntimeError as e:
            assert text in str(e), e
        else:
            raise AssertionError("no error")
    # not tracing: as the stdlib's take_snapshot
    raises(tm.take_peak_snapshot, "must be tracing memory allocations")
    assert tm.get_timeline() == []
    # tracing without it: a message that says how
    tm.start()
    raises(tm.take_peak_snapshot, "start(peak=True)")
    assert tm.get_timeline() == []
    # turned on while tracing: the peak starts from now
    temp = bytes(5_000_000); del temp
    tm.start(peak=True)
    assert tm.get_traced_memory()[1] < 4_000_000
    snap = peak_snapshot_checked()
    assert total(snap) < 4_000_000
    # clear_traces(): the record starts again, still on
    held = bytes(3_000_000)
    tm.clear_traces()
    assert total(peak_snapshot_checked()) < 100_000
    # stop() turns it off, start() without it keeps it off
    tm.stop()
    tm.start()
    raises(tm.take_peak_snapshot, "start(peak=True)")
    tm.stop()
    # start(peak=True) with the other modes
    tm.start(2, peak=True, native=True)
    assert tm.is_tracing()
    tm.stop()
    try:
        tm.start(peak=1, nonsense=2)
    except TypeError:
        pass
    else:
        raise AssertionError("no TypeError")
    """)


def test_with_native_memory():
    run("""
    import ctracemalloc._nativeprobe as probe
    tm.start(1, native=True, peak=True)
    ptrs = [probe.call("malloc", a=100_000) for _ in range(100)]; at = line()
    for p in ptrs:
        probe.call("free", p)
    snap = peak_snapshot_checked()
    native = [t for t in snap.traces if t.domain == tm.NATIVE_DOMAIN]
    assert sum(t.size for t in native) == 100 * 100_000
    assert {t.traceback[0].lineno for t in native} == {at}
    assert [t for t in tm.take_snapshot().traces
            if t.domain == tm.NATIVE_DOMAIN] == []
    """)


def test_timeline():
    run("""
    import time
    tm.start(1, peak=True)
    keep = []
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < 0.3:
        keep.append(bytes(100))
        if len(keep) > 20_000:
            del keep[:]
    now, peak = tm.get_traced_memory()
    points = tm.get_timeline()
    after = tm.get_traced_memory()[1]
    times = [t for t, _ in points]
    assert times == sorted(times) and times[0] == 0.0
    gaps = [b - a for a, b in zip(times, times[1:])]
    # a point at least every 10 ms while memory changes (the clock is
    # read every 64 changes; the machine may pause us)
    assert len(points) >= 20, len(points)
    assert sorted(gaps)[len(gaps) // 2] < 0.015, gaps
    # the peak has its point (read around get_timeline: the lists made
    # since, or the timeline's own, may make a new peak)
    assert peak <= max(b for _, b in points) <= after, (peak, after)
    # the last point is now
    assert abs(points[-1][1] - now) < 100_000, (points[-1], now)
    assert points[-1][0] >= time.perf_counter() - t0 - 0.05
    """)


def test_timeline_is_bounded_and_keeps_the_peak():
    # With points every microsecond (test builds' knob) a run fills the
    # timeline many times over: it stays bounded, sorted, with the peak.
    run("""
    tm.start(1, peak=True)
    keep = []
    for i in range(400):
        keep.extend(bytes(64) for _ in range(2_000))
        if i == 150:
            spike = bytes(50_000_000); del spike
        del keep[:1_500]
    points = tm.get_timeline()
    assert 4096 <= len(points) <= 8192 + 2, len(points)
    times = [t for t, _ in points]
    assert times == sorted(times)
    assert max(b for _, b in points) == tm.get_traced_memory()[1]
    """, env={"CTRACEMALLOC_TEST_TIMELINE_NS": "1000"})


def test_threads_and_native_threads():
    # Threads that allocate Python objects, and native blocks without the
    # GIL, while the main thread takes peak snapshots: each one's total
    # is the peak of its moment.
    run("""
    import threading
    import ctracemalloc._nativeprobe as probe
    tm.start(3, peak=True, native=True)
    stop = threading.Event()
    def python_worker(seed):
        rng = random.Random(seed)
        keep = []
        while not stop.is_set():
            keep.append(bytes(rng.randrange(1, 4000)))
            if len(keep) > 3000:
                del keep[:rng.randrange(3000)]
    def native_worker(seed):
        rng = random.Random(seed)
        held = []
        while not stop.is_set():
            held.append(probe.call("malloc", a=rng.randrange(1, 9000),
                                   nogil=True))
            if len(held) > 500:
                for p in held[:250]:
                    probe.call("free", p, nogil=True)
                del held[:250]
        for p in held:
            probe.call("free", p)
    threads = [threading.Thread(target=python_worker, args=(i,))
               for i in range(2)]
    threads += [threading.Thread(target=native_worker, args=(10 + i,))
                for i in range(2)]
    for t in threads:
        t.start()
    for i in range(40):
        peak_snapshot_checked()
        if i % 10 == 9:
            tm.reset_peak()
    stop.set()
    for t in threads:
        t.join()
    peak_snapshot_checked()
    """)
