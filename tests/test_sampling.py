"""Sampled tracing (start(sample_interval=N)): the sampler takes blocks as
a Poisson process over bytes, and a sampled block counts for its
estimated size and count. These tests hold the estimates to their
promise (close with one seed, unbiased over many), and check that the
sampler misses nothing it must see: frees of sampled blocks, threads,
fork, the peak record, native memory. Each runs in a fresh interpreter:
the sampler's streams are per process."""
import textwrap

import pytest

from tmhelpers import run_python

pytestmark = pytest.mark.ctm_only

PRELUDE = """
import math, os, random, sys
import ctracemalloc as tm

KiB = 1024

def by_line(snapshot):
    return {s.traceback[0].lineno: s for s in snapshot.statistics("lineno")}

def sizes(seed, n, low, high):
    rnd = random.Random(seed)
    return [rnd.randint(low, high) for _ in range(n)]

# Three lines of known amounts in mixed block sizes: small objects,
# medium ones, and a mix of small and large.
SMALL = sizes(1, 60_000, 16, 512)
MEDIUM = sizes(2, 2_000, 1_000, 20_000)
MIXED = sizes(3, 400, 100, 200_000)

def workload():
    a = [bytes(n) for n in SMALL]
    b = [bytes(n) for n in MEDIUM]
    c = [bytes(n) for n in MIXED]
    return a, b, c

LINES = [workload.__code__.co_firstlineno + i for i in (1, 2, 3)]

def measure(**start):
    # size and count per line of the workload, its result alive
    tm.start(1, **start)
    kept = workload()
    stats = by_line(tm.take_snapshot())
    tm.stop()
    del kept
    return [(stats[l].size, stats[l].count) if l in stats else (0, 0)
            for l in LINES]
"""


def run(code, env=None, timeout=300):
    return run_python(PRELUDE + textwrap.dedent(code), env, timeout).stdout


def test_arguments():
    run("""
    for bad, exc in (("x", TypeError), (1.5, TypeError), (-1, ValueError)):
        try:
            tm.start(1, sample_interval=bad)
        except exc:
            pass
        else:
            raise AssertionError(bad)
        assert not tm.is_tracing()
    try:
        tm.start(1, 4096)          # keyword-only, as native and peak
    except TypeError:
        pass
    else:
        raise AssertionError("positional sample_interval")
    tm.start(1, sample_interval=4096)
    snap = tm.take_snapshot()
    # while sampling: the same interval, or none asked, changes nothing
    tm.start(1, sample_interval=4096)
    tm.start(3)
    assert tm.is_tracing() and tm.get_traceback_limit() == 1
    for other in (1, 8192):
        try:
            tm.start(1, sample_interval=other)
        except ValueError as e:
            assert "already started with sample_interval=4096" in str(e), e
        else:
            raise AssertionError(other)
    tm.stop()
    tm.start(1)
    try:
        tm.start(1, sample_interval=4096)
    except ValueError as e:
        assert "already started without sampling" in str(e), e
    else:
        raise AssertionError("exact, then sampled")
    tm.stop()
    """)


def test_each_line_within_ten_percent_with_a_seed():
    # The goal: three lines allocating known amounts in mixed
    # block sizes, each estimated within 10% at a 16 KiB interval. About
    # 1,000 samples a line make the error's standard deviation about 3%.
    out = run("""
    exact = measure()
    sampled = measure(sample_interval=16 * KiB)
    for (size, count), (esize, ecount) in zip(exact, sampled):
        assert abs(esize - size) <= 0.10 * size, (size, esize)
        print(size, esize, count, ecount)
    """, env={"CTRACEMALLOC_SAMPLE_SEED": "12345"})
    rows = [list(map(int, line.split())) for line in out.splitlines()]
    assert len(rows) == 3
    # the estimates are estimates: not the exact sizes (nor counts) that
    # tracing every block gives
    assert all(esize != size for size, esize, _, _ in rows)
    # the small blocks' count: tens of thousands, estimated from about a
    # thousand samples
    size, esize, count, ecount = rows[0]
    assert abs(ecount - count) <= 0.15 * count, rows[0]


def test_the_same_seed_takes_the_same_samples():
    code = """
    tm.start(1, sample_interval=16 * KiB)
    kept = workload()
    print(sorted((t.size, t.traceback[0].lineno)
                 for t in tm.take_snapshot().traces))
    """
    # (the same run: its string hashes too, which size its dicts)
    env = {"CTRACEMALLOC_SAMPLE_SEED": "7", "PYTHONHASHSEED": "0"}
    one = run(code, env=env)
    assert one == run(code, env=env)
    assert one != run(code, env=dict(env, CTRACEMALLOC_SAMPLE_SEED="8"))


def test_unbiased_over_many_seeds():
    # The mean estimate over N independent seeds converges to the truth:
    # each line's mean error, in standard errors (the spread measured
    # over the runs), is below Z. If the estimates are unbiased, the
    # mean of N = 200 runs (each a sum over hundreds of samples) is
    # normal to a good approximation and the statistic follows Student's
    # t with 199 degrees of freedom: P(|t| > 5.5) is about 1.1e-7, so a
    # false failure of any of the 6 checks (size and count of 3 lines)
    # has a probability below 1e-6.
    run("""
    N, Z = 200, 5.5
    exact = measure()
    runs = []
    for seed in range(1, N + 1):
        os.environ["CTRACEMALLOC_SAMPLE_SEED"] = str(seed)
        runs.append(measure(sample_interval=64 * KiB))
    for i, (size, count) in enumerate(exact):
        for k, truth in ((0, size), (1, count)):
            xs = [r[i][k] for r in runs]
            mean = sum(xs) / N
            sd = math.sqrt(sum((x - mean) ** 2 for x in xs) / (N - 1))
            assert sd > 0, xs           # estimates, not the truth
            t = (mean - truth) / (sd / math.sqrt(N))
            assert abs(t) < Z, (i, k, truth, mean, sd, t)
    """, timeout=600)


def test_traced_memory_is_the_estimate_and_frees_are_seen():
    run("""
    tm.start(1, sample_interval=32 * KiB)
    base = tm.get_traced_memory()[0]
    base_traces = len(tm.take_snapshot().traces)
    kept = workload()
    snap = tm.take_snapshot()
    current, peak = tm.get_traced_memory()
    # get_traced_memory() is the estimate: the sum of the traces' sizes
    total = sum(t.size for t in snap.traces)
    assert current == total, (current, total)
    assert peak >= current
    truth = sum(map(sys.getsizeof, (bytes(n) for n in SMALL + MEDIUM
                                    + MIXED)))
    assert abs(current - base - truth) < 0.1 * truth, (current, truth)
    # every sampled block's free is seen: all gone, back to the start
    del kept
    assert len(tm.take_snapshot().traces) <= base_traces + 5
    assert tm.get_traced_memory()[0] - base < 256 * KiB
    tm.stop()
    """)


def test_object_traceback_only_for_sampled_objects():
    run("""
    tm.start(1, sample_interval=256 * KiB)
    big = bytes(4 * 1024 * 1024)    # sampled: P = 1 - exp(-16)
    tb = tm.get_object_traceback(big)
    assert tb is not None and tb[0].lineno == sys._getframe().f_lineno - 2
    small = [object() for _ in range(10_000)]
    found = sum(tm.get_object_traceback(o) is not None for o in small)
    # 160 KB of objects at a 256 KiB interval: a sample or two at most
    assert found < 50, found
    tm.stop()
    """)


def test_threads_fork_and_the_peak():
    run("""
    import threading
    tm.start(1, sample_interval=16 * KiB, peak=True)
    base = tm.get_traced_memory()[0]

    def work():
        for _ in range(5):
            kept = workload()
            del kept

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # everything the threads allocated is gone
    assert tm.get_traced_memory()[0] - base < 256 * KiB
    # the peak: 4 threads' workloads at once at most, and the peak
    # snapshot's total is the peak
    peak = tm.get_traced_memory()[1]
    snap = tm.take_peak_snapshot()
    assert sum(t.size for t in snap.traces) == peak
    pid = os.fork()
    if pid == 0:
        kept = workload()
        ok = tm.get_traced_memory()[0] > base + 1_000_000
        os._exit(0 if ok else 1)
    _, status = os.waitpid(pid, 0)
    assert status == 0, status
    tm.stop()
    """)


def test_native_memory_is_sampled_too():
    run("""
    from ctracemalloc import _nativeprobe as probe
    tm.start(1, native=True, sample_interval=64 * KiB)
    def native_blocks():
        return [probe.call("malloc", a=4096) for _ in range(5_000)]
    ptrs = native_blocks()
    snap = tm.take_snapshot().filter_traces(
        [tm.DomainFilter(True, tm.NATIVE_DOMAIN)])
    total = sum(t.size for t in snap.traces)
    assert abs(total - 5_000 * 4096) < 0.25 * 5_000 * 4096, total
    # fewer traces than blocks: sampled
    assert len(snap.traces) < 2_000, len(snap.traces)
    for p in ptrs:
        probe.call("free", p)
    snap = tm.take_snapshot().filter_traces(
        [tm.DomainFilter(True, tm.NATIVE_DOMAIN)])
    assert len(snap.traces) == 0, len(snap.traces)
    tm.stop()
    """)


def test_tracer_memory_with_a_million_objects():
    # The goal: the tracer's own memory under 2 MB with a million
    # live objects at a 512 KiB interval.
    out = run("""
    tm.start(1, sample_interval=512 * KiB)
    kept = [object() for _ in range(1_000_000)]
    more = [str(i) for i in range(1_000_000)]
    print(tm.get_tracemalloc_memory())
    tm.stop()
    """)
    assert int(out) < 2 * 1024 * 1024, out
