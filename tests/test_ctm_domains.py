"""ctracemalloc.track(domain, ptr, size) and untrack(domain, ptr): blocks
in other domains than Python's, as CPython's PyTraceMalloc_Track and
PyTraceMalloc_Untrack give the stdlib (numpy reports its data buffers in
domain 389047 that way)."""
import sys

import pytest

from tmhelpers import get_frames, plain_traces, raw_frames

pytestmark = pytest.mark.ctm_only

DOMAIN = 389047
PTR = 0x7F0000001000


def in_domain(ctm, domain=DOMAIN):
    snapshot = ctm.take_snapshot()
    return snapshot.filter_traces([ctm.DomainFilter(True, domain)])


def test_track_shows_in_snapshot(ctm):
    ctm.start(5)
    frames = get_frames(5, 1)
    ctm.track(DOMAIN, PTR, 4096)
    traces = in_domain(ctm).traces
    assert len(traces) == 1
    trace = traces[0]
    assert (trace.domain, trace.size) == (DOMAIN, 4096)
    # the caller's traceback, as for any allocation
    assert raw_frames(trace.traceback) == frames
    assert trace.traceback.total_nframe >= len(frames)


def test_track_counts_in_traced_memory(ctm):
    ctm.start()
    before = ctm.get_traced_memory()[0]
    ctm.track(DOMAIN, PTR, 10 ** 9)
    current, peak = ctm.get_traced_memory()
    assert 10 ** 9 <= current - before < 10 ** 9 + 4096
    assert peak >= current
    ctm.untrack(DOMAIN, PTR)
    assert ctm.get_traced_memory()[0] - before < 4096


def test_untrack_removes(ctm):
    ctm.start()
    ctm.track(DOMAIN, PTR, 100)
    ctm.track(DOMAIN, PTR + 64, 200)
    ctm.untrack(DOMAIN, PTR)
    assert [t.size for t in in_domain(ctm).traces] == [200]
    ctm.untrack(DOMAIN, PTR + 64)
    assert len(in_domain(ctm).traces) == 0
    # untracking an unknown block is harmless
    ctm.untrack(DOMAIN, PTR)
    ctm.untrack(DOMAIN + 1, 12345)


def test_track_again_replaces(ctm):
    ctm.start(3)
    ctm.track(DOMAIN, PTR, 100)
    frames = get_frames(3, 1)
    ctm.track(DOMAIN, PTR, 300)
    traces = in_domain(ctm).traces
    assert [(t.size, raw_frames(t.traceback)) for t in traces] == [
        (300, frames)]


def test_domains_are_separate(ctm):
    ctm.start()
    ctm.track(1, PTR, 11)
    ctm.track(2, PTR, 22)
    ctm.track(DOMAIN, PTR, 33)
    assert [t.size for t in in_domain(ctm, 1).traces] == [11]
    assert [t.size for t in in_domain(ctm, 2).traces] == [22]
    ctm.untrack(2, PTR)
    assert [t.size for t in in_domain(ctm, 1).traces] == [11]
    assert len(in_domain(ctm, 2).traces) == 0
    # domain 0 is Python's: tracking a fake address there is allowed
    ctm.track(0, PTR, 44)
    snapshot = ctm.take_snapshot()
    assert [t.size for t in snapshot.traces if t.domain == 0 and
            raw_frames(t.traceback)[0][0] == __file__
            and t.size == 44] == [44]


def test_domain_filters(ctm):
    ctm.start()
    ctm.track(DOMAIN, PTR, 123)
    snapshot = ctm.take_snapshot()
    excluded = snapshot.filter_traces([ctm.DomainFilter(False, DOMAIN)])
    assert all(t.domain != DOMAIN for t in excluded.traces)
    assert len(excluded.traces) == len(snapshot.traces) - 1
    by_file = snapshot.filter_traces([ctm.Filter(True, __file__,
                                                 domain=DOMAIN)])
    assert [(t.domain, t.size) for t in by_file.traces] == [(DOMAIN, 123)]
    other_file = snapshot.filter_traces([ctm.Filter(True, "nowhere.py",
                                                    domain=DOMAIN)])
    assert len(other_file.traces) == 0


def test_tracked_blocks_in_statistics(ctm):
    ctm.start()
    line = sys._getframe().f_lineno + 2
    for i in range(10):
        ctm.track(DOMAIN, PTR + 16 * i, 1000)
    snapshot = in_domain(ctm)
    stats = snapshot.statistics("lineno")
    assert [(raw_frames(s.traceback), s.size, s.count) for s in stats] == [
        (((__file__, line),), 10000, 10)]


def test_tracked_blocks_survive_dump_load(ctm, tmp_path):
    ctm.start()
    ctm.track(DOMAIN, PTR, 77)
    snapshot = in_domain(ctm)
    snapshot.dump(tmp_path / "snap")
    loaded = ctm.Snapshot.load(tmp_path / "snap")
    assert plain_traces(loaded) == plain_traces(snapshot)
    assert loaded.traces[0].domain == DOMAIN


def test_clear_traces_and_stop_forget_tracked_blocks(ctm):
    ctm.start()
    ctm.track(DOMAIN, PTR, 77)
    ctm.clear_traces()
    assert len(in_domain(ctm).traces) == 0
    ctm.track(DOMAIN, PTR, 77)
    ctm.stop()
    ctm.start()
    assert len(in_domain(ctm).traces) == 0


def test_track_when_not_tracing(ctm):
    with pytest.raises(RuntimeError):
        ctm.track(DOMAIN, PTR, 10)
    ctm.start()
    ctm.stop()
    with pytest.raises(RuntimeError):
        ctm.track(DOMAIN, PTR, 10)


def test_untrack_when_not_tracing(ctm):
    # as PyTraceMalloc_Untrack's error (-2), which _testcapi turns into a
    # RuntimeError in the stdlib's test_stop_untrack
    ctm.start()
    ctm.track(DOMAIN, PTR, 10)
    ctm.stop()
    with pytest.raises(RuntimeError):
        ctm.untrack(DOMAIN, PTR)


@pytest.mark.parametrize("args", [
    (),
    (DOMAIN, PTR),
    ("1", PTR, 10),
    (DOMAIN, "p", 10),
    (DOMAIN, PTR, "10"),
    (DOMAIN, PTR, -1),
    (-1, PTR, 10),
    (2 ** 32, PTR, 10),
])
def test_track_bad_arguments(ctm, args):
    ctm.start()
    with pytest.raises((TypeError, ValueError, OverflowError)):
        ctm.track(*args)
    assert len(in_domain(ctm).traces) == 0


def test_track_many_blocks(ctm):
    ctm.start()
    n = 100000
    for i in range(n):
        ctm.track(DOMAIN, PTR + 16 * i, 8)
    snapshot = in_domain(ctm)
    assert len(snapshot.traces) == n
    assert sum(t.size for t in snapshot.traces) == 8 * n
    for i in range(0, n, 2):
        ctm.untrack(DOMAIN, PTR + 16 * i)
    assert len(in_domain(ctm).traces) == n // 2
