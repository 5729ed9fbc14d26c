"""Sampled snapshots (issue 19): Snapshot(..., sample_interval=T).

A sampled snapshot holds each sampled block's true size s and the
interval T; what it shows are the estimates (sampling.h): a trace's size
is round(s / P(s)) and it stands for 1 / P(s) blocks, with P(s) = 1 -
exp(-s / T). The expected values here are computed from that formula,
in Python, over random traces: statistics and compare_to sum the size
estimates as integers and round the count estimates once per traceback
(never below 1 for a traceback that has traces). An exact snapshot
(T = 0, the default) is the stdlib's, unchanged.

Files: a sampled snapshot is written as format 3.0 with a SAMPLING
section after COUNTS (ffspec.h); an exact one as 2.1, byte for byte what
it was. The damage tests use test_fileformat's independent writer.
"""
import collections
import math
import pickle
import random
import struct

import pytest

from test_fileformat import COUNTS, STRINGS, assemble, split, varint
from tmhelpers import plain_trace, plain_traces, raw_frames, require_ctm

SAMPLING = 9
LIMIT = 5


# -- the estimates, from the formula ---------------------------------------

def est_count(size, interval):
    """1 / P(size): how many blocks one sample of size bytes stands for."""
    if interval == 0 or size == 0:
        return 1.0
    # -1 / expm1(-x) is 1 / (1 - exp(-x)), without the cancellation
    return -1.0 / math.expm1(-size / interval)


def est_size(size, interval):
    """The estimated size, to the nearest byte (halves up)."""
    if interval == 0 or size == 0:
        return size
    return int(size * est_count(size, interval) + 0.5)


def test_formula_is_the_documented_one():
    # the helpers above are s / (1 - exp(-s/T)) and 1 / (1 - exp(-s/T))
    for s, t in [(1, 1000), (512, 512), (10**6, 4096), (3, 7)]:
        p = 1 - math.exp(-s / t)
        assert est_count(s, t) == pytest.approx(1 / p, rel=1e-9)
        assert abs(est_size(s, t) - s / p) <= 0.5 + 1e-6 * s / p


def round_count(c):
    """A traceback's count: its count estimates summed, to the nearest,
    at least 1."""
    return max(1, math.floor(c + 0.5))


# -- random traces ----------------------------------------------------------

FILES = ["a.py", "b.py", "lib/c.py"]


def random_raw(seed, n=400):
    """Raw traces over a few tracebacks, interleaved, with sizes from 0
    to far above the intervals used; two tracebacks share frames and
    differ in total_nframe; frames repeat within a traceback."""
    rng = random.Random(seed)
    frames = [(rng.choice(FILES), rng.randrange(1, 30)) for _ in range(12)]
    tracebacks = []
    for _ in range(15):
        depth = rng.randrange(1, 5)
        tb = tuple(rng.choice(frames) for _ in range(depth))
        tracebacks.append((tb, depth + rng.randrange(0, 3)))
    tracebacks.append((tracebacks[0][0], tracebacks[0][1] + 7))
    raw = []
    for _ in range(n):
        tb, total = rng.choice(tracebacks)
        size = rng.choice([0, rng.randrange(1, 64), rng.randrange(64, 4096),
                           rng.randrange(4096, 1 << 20),
                           rng.randrange(1 << 20, 1 << 34)])
        raw.append((rng.choice([0, 0, 0, 5]), size, tb, total))
    return raw


def per_traceback(raw, interval):
    """{(frames, total): [size, count]} as the snapshot sums them: sizes
    as integers, counts rounded once per traceback (in trace order)."""
    sums = collections.OrderedDict()
    for _, size, frames, total in raw:
        acc = sums.setdefault((frames, total), [0, 0.0])
        acc[0] += est_size(size, interval)
        acc[1] += est_count(size, interval)
    return {k: (s, round_count(c)) for k, (s, c) in sums.items()}


def expected_groups(raw, interval, key_type, cumulative=False):
    """{key: (size, count)}: key is a frame (lineno), a filename or the
    raw frames tuple (traceback)."""
    groups = collections.defaultdict(lambda: [0, 0])
    for (frames, _), (size, count) in per_traceback(raw, interval).items():
        if key_type == "traceback":
            keys = [frames]
        else:
            keys = frames if cumulative else frames[:1]
            if key_type == "filename":
                keys = [f[0] for f in keys]
        for k in keys:
            groups[k][0] += size
            groups[k][1] += count
    return {k: tuple(v) for k, v in groups.items()}


def stat_key(stat, key_type):
    if key_type == "traceback":
        return raw_frames(stat.traceback)
    frame = stat.traceback[0]
    return frame.filename if key_type == "filename" else (
        frame.filename, frame.lineno)


def actual_groups(stats, key_type):
    out = {}
    for st in stats:
        key = stat_key(st, key_type)
        assert key not in out
        out[key] = (st.size, st.count)
    return out


def sampled(ctm, raw, interval, limit=LIMIT):
    return ctm.Snapshot(raw, limit, sample_interval=interval)


INTERVALS = [1, 1000, 4096, 1 << 20]


# -- the constructor and the attribute -------------------------------------

def test_sample_interval_attribute(ctm):
    raw = random_raw(1, 20)
    assert ctm.Snapshot(raw, LIMIT).sample_interval == 0
    assert ctm.Snapshot(raw, LIMIT, sample_interval=0).sample_interval == 0
    snap = sampled(ctm, raw, 4096)
    assert snap.sample_interval == 4096
    assert type(snap.sample_interval) is int
    with pytest.raises(AttributeError):
        snap.sample_interval = 5
    assert snap.sample_interval == 4096
    # bool and __index__ objects are ints, as for the stdlib's int args
    assert sampled(ctm, raw, True).sample_interval == 1

    class Index:
        def __index__(self):
            return 77
    assert sampled(ctm, raw, Index()).sample_interval == 77
    assert sampled(ctm, raw, 2**64 - 1).sample_interval == 2**64 - 1


def test_sample_interval_of_uninitialized_snapshot(ctm):
    # made by __new__ only: no traces, so no interval either
    snap = ctm.Snapshot.__new__(ctm.Snapshot)
    with pytest.raises(AttributeError, match="sample_interval"):
        snap.sample_interval


@pytest.mark.parametrize("bad, exc", [
    (1.5, TypeError), ("10", TypeError), (None, TypeError),
    (-1, ValueError), (-2**70, ValueError), (2**64, OverflowError),
])
def test_sample_interval_bad_values(ctm, bad, exc):
    with pytest.raises(exc):
        ctm.Snapshot(random_raw(2, 5), LIMIT, sample_interval=bad)


def test_sample_interval_is_keyword_only(ctm):
    with pytest.raises(TypeError):
        ctm.Snapshot([], LIMIT, 4096)


def test_snapshot_of_traces_keeps_or_sets_the_interval(ctm):
    raw = random_raw(3, 50)
    snap = sampled(ctm, raw, 1000)
    same = ctm.Snapshot(snap.traces, 2)
    assert same.sample_interval == 1000
    assert plain_traces(same) == plain_traces(snap)
    exact = ctm.Snapshot(snap.traces, 2, sample_interval=0)
    assert exact.sample_interval == 0
    # the true sizes are kept: made exact, a trace shows its true size
    assert [t.size for t in exact.traces] == [r[1] for r in raw]
    other = ctm.Snapshot(exact.traces, 2, sample_interval=4096)
    assert [t.size for t in other.traces] == [est_size(r[1], 4096)
                                              for r in raw]
    # the source is unchanged (data is shared or copied, never changed)
    assert snap.sample_interval == 1000
    assert plain_traces(snap) == [
        (d, est_size(s, 1000), f, t) for d, s, f, t in raw]


# -- sizes and counts -------------------------------------------------------

@pytest.mark.parametrize("interval", INTERVALS)
def test_trace_sizes_are_estimates(ctm, interval):
    raw = random_raw(4, 300)
    snap = sampled(ctm, raw, interval)
    expected = [(d, est_size(s, interval), f, t) for d, s, f, t in raw]
    assert [plain_trace(t) for t in snap.traces] == [
        (d, s, f, t) for d, s, f, t in expected]
    assert [tuple(t) for t in snap.traces._traces] == expected
    assert snap.traces[7].size == expected[7][1]
    assert snap.traces[-1].size == expected[-1][1]
    assert [t.size for t in snap.traces[10:20]] == [
        e[1] for e in expected[10:20]]
    # the estimates are not the true sizes (the test would not see it)
    assert any(e[1] != r[1] for e, r in zip(expected, raw))


def test_small_sample_stands_for_at_least_the_interval(ctm):
    snap = sampled(ctm, [(0, 1, (("a.py", 1),), 1),
                         (0, 0, (("a.py", 2),), 1)], 1000)
    assert snap.traces[0].size == est_size(1, 1000)
    assert snap.traces[1].size == 0
    assert snap.statistics("lineno")[-1].count == 1


@pytest.mark.parametrize("interval", INTERVALS)
@pytest.mark.parametrize("key_type, cumulative", [
    ("lineno", False), ("filename", False), ("traceback", False),
    ("lineno", True), ("filename", True),
])
def test_statistics(ctm, interval, key_type, cumulative):
    raw = random_raw(5, 500)
    snap = sampled(ctm, raw, interval)
    stats = snap.statistics(key_type, cumulative)
    assert actual_groups(stats, key_type) == expected_groups(
        raw, interval, key_type, cumulative)
    assert stats == sorted(stats, reverse=True,
                           key=lambda s: (s.size, s.count, s.traceback))
    assert all(type(s.size) is int and type(s.count) is int for s in stats)


@pytest.mark.parametrize("interval", INTERVALS)
def test_statistics_total_is_the_traces_total(ctm, interval):
    snap = sampled(ctm, random_raw(6, 500), interval)
    total = sum(t.size for t in snap.traces)
    for key_type in ("lineno", "filename", "traceback"):
        assert sum(s.size for s in snap.statistics(key_type)) == total


def test_count_is_rounded_per_traceback(ctm):
    # Three samples of one traceback, each standing for 1.5 blocks: 4.5
    # blocks, counted 5 (not 2 + 2 + 2, not 3 * 1). Sizes chosen so that
    # 1 / P(s) is the same for all: s = T * ln 3.
    interval = 10**6
    s = round(interval * math.log(3))
    frames = (("a.py", 1),)
    raw = [(0, s, frames, 1)] * 3
    c = est_count(s, interval)
    assert 1.49 < c < 1.51
    (st,) = sampled(ctm, raw, interval).statistics("traceback")
    assert st.count == round_count(3 * c) == 5
    # and a traceback of rare large blocks counts at least one
    big = sampled(ctm, [(0, 10**9, frames, 1)], 10)
    (st,) = big.statistics("lineno")
    assert st.count == 1 and st.size == 10**9


def test_sum_of_estimates_over_64_bits_raises(ctm):
    # each sample of a few bytes stands for about 2**63 bytes: sizes fit,
    # their sums do not, which raises rather than wraps
    snap = sampled(ctm, [(0, 10, (("a.py", 1),), 1)] * 3, 2**63)
    assert snap.traces[0].size == est_size(10, 2**63)
    for key_type in ("lineno", "filename", "traceback"):
        with pytest.raises(OverflowError):
            snap.statistics(key_type)
    with pytest.raises(OverflowError):
        snap._tree()
    with pytest.raises(OverflowError):
        snap.compare_to(ctm.Snapshot([], LIMIT), "lineno")


def test_exact_snapshot_is_unchanged(ctm):
    raw = random_raw(7, 300)
    exact = ctm.Snapshot(raw, LIMIT)
    assert [t.size for t in exact.traces] == [r[1] for r in raw]
    for key_type in ("lineno", "filename", "traceback"):
        stats = exact.statistics(key_type)
        counts = collections.Counter()
        for d, s, f, t in raw:
            counts[f if key_type == "traceback" else
                   f[0][0] if key_type == "filename" else f[0]] += 1
        assert {stat_key(st, key_type): st.count for st in stats} == counts


@pytest.mark.parametrize("interval", [1000, 1 << 20])
@pytest.mark.parametrize("key_type, cumulative", [
    ("lineno", False), ("filename", True), ("traceback", False)])
def test_compare_to_sampled_and_exact(ctm, interval, key_type, cumulative):
    new_raw = random_raw(8, 400)
    old_raw = random_raw(9, 300)
    new = sampled(ctm, new_raw, interval)
    old = ctm.Snapshot(old_raw, LIMIT)
    for a, b, a_raw, a_t, b_raw, b_t in [
            (new, old, new_raw, interval, old_raw, 0),
            (old, new, old_raw, 0, new_raw, interval)]:
        diffs = a.compare_to(b, key_type, cumulative)
        na = expected_groups(a_raw, a_t, key_type, cumulative)
        nb = expected_groups(b_raw, b_t, key_type, cumulative)
        expected = {}
        for k in set(na) | set(nb):
            size, count = na.get(k, (0, 0))
            osize, ocount = nb.get(k, (0, 0))
            expected[k] = (size, size - osize, count, count - ocount)
        got = {stat_key(d, key_type): (d.size, d.size_diff, d.count,
                                       d.count_diff) for d in diffs}
        assert got == expected
        assert diffs == sorted(diffs, reverse=True, key=lambda d: (
            abs(d.size_diff), d.size, abs(d.count_diff), d.count,
            d.traceback))


def test_compare_to_itself_sampled(ctm):
    snap = sampled(ctm, random_raw(10, 200), 4096)
    for d in snap.compare_to(snap, "lineno"):
        assert d.size_diff == 0 and d.count_diff == 0
    assert [(d.size, d.count) for d in snap.compare_to(snap, "lineno")] == [
        (s.size, s.count) for s in snap.statistics("lineno")]


def test_filter_traces_keeps_the_interval(ctm):
    raw = random_raw(11, 300)
    snap = sampled(ctm, raw, 4096)
    filtered = snap.filter_traces([ctm.Filter(True, "a.py")])
    assert filtered.sample_interval == 4096
    kept = [r for r in raw if r[2][0][0] == "a.py"]
    assert 0 < len(kept) < len(raw)
    assert actual_groups(filtered.statistics("lineno"), "lineno") == \
        expected_groups(kept, 4096, "lineno")
    dom = snap.filter_traces([ctm.DomainFilter(False, 5)])
    assert dom.sample_interval == 4096
    assert [t.size for t in dom.traces] == [
        est_size(r[1], 4096) for r in raw if r[0] != 5]
    assert snap.filter_traces([]).sample_interval == 4096


def test_strip_root_keeps_the_interval(ctm):
    # the runner's frames (the oldest, here one absent frame): a copy
    raw = random_raw(23, 100)
    snap = sampled(ctm, raw, 4096)
    stripped = snap._strip_root((("runner.py", 1),), 2)
    assert stripped.sample_interval == 4096
    assert [t.size for t in stripped.traces] == [
        est_size(r[1], 4096) for r in raw]


def test_tree_sums_estimates(ctm):
    raw = random_raw(12, 300)
    snap = sampled(ctm, raw, 4096)
    parents, files, linenos, sizes, counts, names, _ = snap._tree()
    tbs = per_traceback(raw, 4096)
    assert sizes[0] == sum(s for s, _ in tbs.values())
    assert sizes[0] == sum(t.size for t in snap.traces)
    assert counts[0] == sum(c for _, c in tbs.values())
    # each root child (an oldest frame) totals the tracebacks from it
    oldest = collections.defaultdict(lambda: [0, 0])
    for (frames, _), (s, c) in tbs.items():
        oldest[frames[-1]][0] += s
        oldest[frames[-1]][1] += c
    got = {(names[files[i]], linenos[i]): [sizes[i], counts[i]]
           for i in range(1, len(parents)) if parents[i] == 0}
    assert got == dict(oldest)


def test_trace_search_and_equality_use_estimates(ctm):
    raw = random_raw(13, 100)
    snap = sampled(ctm, raw, 1000)
    t = snap.traces[3]
    assert t in snap.traces
    assert snap.traces.index(t) == plain_traces(snap).index(plain_trace(t))
    assert snap.traces.count(t) == plain_traces(snap).count(plain_trace(t))
    # an exact snapshot of the estimates has equal traces
    same = ctm.Snapshot([tuple(r) for r in snap.traces._traces], LIMIT)
    assert same.traces == snap.traces
    assert snap.traces[3] in same.traces
    assert ctm.Snapshot(raw, LIMIT).traces != snap.traces


def test_reprs_are_the_stdlibs(stdlib, ctm):
    raw = random_raw(14, 100)
    snap = sampled(ctm, raw, 4096)
    est = [tuple(r) for r in snap.traces._traces]
    ref = stdlib.Snapshot(est, LIMIT)
    assert repr(snap.traces[0]) == repr(ref.traces[0])
    assert str(snap.traces[0]) == str(ref.traces[0])
    for st in snap.statistics("lineno")[:5]:
        tb = stdlib.Traceback(raw_frames(st.traceback))
        other = stdlib.Statistic(tb, st.size, st.count)
        assert repr(st) == repr(other)
        assert str(st) == str(other)
    for d in snap.compare_to(ctm.Snapshot(raw[:50], LIMIT), "lineno")[:5]:
        tb = stdlib.Traceback(raw_frames(d.traceback))
        other = stdlib.StatisticDiff(tb, d.size, d.size_diff, d.count,
                                     d.count_diff)
        assert repr(d) == repr(other)
        assert str(d) == str(other)


def test_sizes_are_those_of_an_exact_snapshot_of_the_estimates(tm):
    """What must hold for both: an exact snapshot of the estimated sizes
    has the sampled snapshot's sizes (only the counts differ)."""
    ctm = require_ctm()
    raw = random_raw(15, 300)
    snap = sampled(ctm, raw, 4096)
    est = [(d, est_size(s, 4096), f, t) for d, s, f, t in raw]
    exact = tm.Snapshot(est, LIMIT)
    for key_type in ("lineno", "filename", "traceback"):
        want = {stat_key(s, key_type): s.size
                for s in exact.statistics(key_type)}
        got = {stat_key(s, key_type): s.size
               for s in snap.statistics(key_type)}
        assert got == want


# -- files ------------------------------------------------------------------

def file_bytes(snapshot, tmp_path, name="s.ctm", **kw):
    path = tmp_path / name
    snapshot.dump(path, **kw)
    return path.read_bytes()


@pytest.mark.parametrize("interval", [0, 1, 4096, 2**40])
def test_dump_load_round_trip(ctm, tmp_path, interval):
    raw = random_raw(16, 300)
    snap = sampled(ctm, raw, interval)
    snap.dump(tmp_path / "s.ctm")
    loaded = ctm.Snapshot.load(tmp_path / "s.ctm")
    assert loaded.sample_interval == interval
    assert plain_traces(loaded) == plain_traces(snap)
    assert loaded.traceback_limit == LIMIT
    for key_type in ("lineno", "filename"):
        assert loaded.statistics(key_type) == snap.statistics(key_type)
    # the file holds the true sizes
    exact = ctm.Snapshot(loaded.traces, LIMIT, sample_interval=0)
    assert [t.size for t in exact.traces] == [r[1] for r in raw]


def test_exact_file_is_unchanged(ctm, tmp_path):
    raw = random_raw(17, 300)
    plain = file_bytes(ctm.Snapshot(raw, LIMIT), tmp_path, "a.ctm")
    zero = file_bytes(sampled(ctm, raw, 0), tmp_path, "b.ctm")
    assert zero == plain
    header, sections = split(plain)
    assert header[8:] == struct.pack("<HH", 2, 1)
    assert SAMPLING not in [tag for tag, _ in sections]
    # a sampled snapshot's file: 3.0, the same sections with SAMPLING
    # after COUNTS
    data = file_bytes(sampled(ctm, raw, 300000), tmp_path, "c.ctm")
    sheader, ssections = split(data)
    assert sheader[:8] == header[:8]
    assert sheader[8:] == struct.pack("<HH", 3, 0)
    assert ssections[0][0] == COUNTS
    assert ssections[1] == (SAMPLING, varint(300000))
    assert ssections[:1] + ssections[2:] == sections
    # and the exact file of the exact copy of it is the exact file again
    loaded = ctm.Snapshot.load(tmp_path / "c.ctm")
    again = ctm.Snapshot(loaded.traces, LIMIT, sample_interval=0)
    assert file_bytes(again, tmp_path, "d.ctm") == plain


def load_bytes(ctm, data):
    func, _ = ctm.Snapshot([], None).__reduce__()
    return func(data)


def sampled_sections(ctm, tmp_path, interval=4096):
    data = file_bytes(sampled(ctm, random_raw(18, 50), interval), tmp_path)
    return split(data)[1]


def damaged_class(ctm, tmp_path):
    """The class the loader raises for a damaged file (a flipped bit)."""
    data = bytearray(file_bytes(sampled(ctm, random_raw(18, 50), 4096),
                                tmp_path, "x.ctm"))
    data[len(data) // 2] ^= 0x10
    with pytest.raises(Exception) as info:
        load_bytes(ctm, bytes(data))
    return info.type


@pytest.mark.parametrize("payload, message", [
    (varint(0), "sampling interval of 0"),
    (b"", "malformed|short|payload"),
    (b"\x80", "malformed|short|payload"),
    (b"\xff" * 10 + b"\x01", "malformed|short|payload"),
    (varint(10) + b"\x00", "unexpected bytes"),
])
def test_damaged_interval_raises(ctm, tmp_path, payload, message):
    cls = damaged_class(ctm, tmp_path)
    secs = sampled_sections(ctm, tmp_path)
    assert secs[1][0] == SAMPLING
    secs[1] = (SAMPLING, payload)
    with pytest.raises(cls, match=message):
        load_bytes(ctm, assemble(secs, major=3, minor=0))
    assert cls is ValueError


def test_sampling_section_misplaced(ctm, tmp_path):
    secs = sampled_sections(ctm, tmp_path)
    sampling = secs[1]
    rest = secs[:1] + secs[2:]
    assert rest[1][0] == STRINGS
    with pytest.raises(ValueError, match="out of order"):
        load_bytes(ctm, assemble(rest[:2] + [sampling] + rest[2:],
                                 major=3, minor=0))
    with pytest.raises(ValueError, match="repeated"):
        load_bytes(ctm, assemble(rest[:1] + [sampling, sampling] + rest[1:],
                                 major=3, minor=0))
    with pytest.raises(ValueError, match="must come first"):
        load_bytes(ctm, assemble([sampling] + rest, major=3, minor=0))
    # a 2.1 file knows no SAMPLING: an unknown section of its own version
    with pytest.raises(ValueError, match="unknown section"):
        load_bytes(ctm, assemble(secs, major=2, minor=1))
    # a newer 2.x skips it (a tag of that version), and is exact
    assert load_bytes(ctm, assemble(secs, major=2, minor=5)) \
        .sample_interval == 0
    # without SAMPLING, a 3.0 file is exact; a newer 3.x adds sections
    assert load_bytes(ctm, assemble(rest, major=3, minor=0)) \
        .sample_interval == 0
    newer = secs[:2] + [(200, b"later")] + secs[2:]
    assert load_bytes(ctm, assemble(newer, major=3, minor=1)) \
        .sample_interval == 4096
    with pytest.raises(ValueError, match="unknown section"):
        load_bytes(ctm, assemble(newer, major=3, minor=0))
    with pytest.raises(ValueError, match=r"version 4\.0"):
        load_bytes(ctm, assemble(secs, major=4, minor=0))


def test_damaged_sampling_byte(ctm, tmp_path):
    data = bytearray(file_bytes(sampled(ctm, random_raw(19, 50), 4096),
                                tmp_path))
    header, secs = split(bytes(data))
    # the SAMPLING payload's first byte: after header, COUNTS (tag,
    # length, payload, check), SAMPLING's tag and length
    offset = 12 + 1 + len(varint(len(secs[0][1]))) + len(secs[0][1]) + 8 + 2
    assert data[offset:offset + 2] == varint(4096)
    data[offset] ^= 0x01
    with pytest.raises(ValueError, match="checksum"):
        load_bytes(ctm, bytes(data))


# -- pickling and the stdlib's format --------------------------------------

@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
def test_pickle_keeps_the_interval(ctm, protocol):
    raw = random_raw(20, 200)
    snap = sampled(ctm, raw, 777)
    snap.note = "kept"
    copy = pickle.loads(pickle.dumps(snap, protocol))
    assert copy.sample_interval == 777
    assert copy.note == "kept"
    assert plain_traces(copy) == plain_traces(snap)
    assert copy.statistics("lineno") == snap.statistics("lineno")
    exact = pickle.loads(pickle.dumps(ctm.Snapshot(raw, LIMIT), protocol))
    assert exact.sample_interval == 0


def test_pickle_of_subclass_keeps_the_interval(ctm):
    class Sub(ctm.Snapshot):
        pass
    # pickle finds the class by its module and name
    Sub.__qualname__ = Sub.__name__ = "SampledSub"
    globals()["SampledSub"] = Sub
    snap = Sub(random_raw(21, 50), LIMIT, sample_interval=99)
    copy = pickle.loads(pickle.dumps(snap))
    assert type(copy) is Sub and copy.sample_interval == 99


def test_stdlib_pickle_format_has_the_estimates(stdlib, ctm, tmp_path):
    raw = random_raw(22, 300)
    snap = sampled(ctm, raw, 4096)
    path = tmp_path / "s.pickle"
    snap.dump(path, format="pickle")
    ref = stdlib.Snapshot.load(path)
    assert [t.size for t in ref.traces] == [t.size for t in snap.traces]
    got = {stat_key(s, "lineno"): (s.size, s.count)
           for s in ref.statistics("lineno")}
    # sizes are the estimates; counts are the numbers of samples
    counts = collections.Counter(r[2][0] for r in raw)
    assert got == {k: (size, counts[k]) for k, (size, _) in
                   expected_groups(raw, 4096, "lineno").items()}
    back = ctm.Snapshot.load(path)
    assert back.sample_interval == 0
    assert plain_traces(back) == plain_traces(snap)


# -- the tracer -------------------------------------------------------------

def test_tracer_snapshots_are_exact_without_sampling(ctm):
    ctm.start(3)
    try:
        data = [bytearray(100) for _ in range(10)]
        snap = ctm.take_snapshot()
        assert snap.sample_interval == 0
        assert len(snap.traces) > 0
        assert snap.filter_traces([]).sample_interval == 0
        del data
    finally:
        ctm.stop()
