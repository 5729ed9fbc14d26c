"""Property-based differential tests: random snapshots, built from raw
traces, grouped, compared and filtered by ctracemalloc and by the stdlib
must give the same results, down to str and repr."""
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tmhelpers import plain_diff, plain_stat, plain_traces

# Few distinct names and lines, so that grouping and matching have work.
FILENAMES = ["a.py", "b.py", "a.pyc", "dir/c.py", "dir/sub/d.py", "<unknown>",
             "<frozen importlib._bootstrap>", "", "é.py", "A.PY", "x[1].py"]
PATTERN_PIECES = ["a", "b", ".py", ".pyc", "*", "?", "[ab]", "[!a]", "dir/",
                  "<", ">", "unknown", "é", "A", "[", "]", "x[1]"]

frames = st.tuples(st.sampled_from(FILENAMES), st.integers(0, 6))
raw_traces = st.tuples(
    st.integers(0, 4),                                  # domain
    st.integers(0, 2 ** 40),                            # size
    st.lists(frames, min_size=1, max_size=4).map(tuple),
    st.integers(1, 8),                                  # total_nframe
).map(lambda t: (t[0], t[1], t[2], max(t[3], len(t[2]))))
snapshots = st.tuples(st.lists(raw_traces, max_size=30), st.integers(1, 5))
patterns = st.lists(st.sampled_from(PATTERN_PIECES), max_size=4).map("".join)
filters = st.one_of(
    st.builds(lambda *a: ("Filter",) + a, st.booleans(),
              st.one_of(patterns, st.sampled_from(FILENAMES)),
              st.one_of(st.none(), st.integers(0, 6)), st.booleans(),
              st.one_of(st.none(), st.integers(0, 4))),
    st.builds(lambda *a: ("DomainFilter",) + a, st.booleans(),
              st.integers(0, 4)),
)

SETTINGS = settings(max_examples=150, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.function_scoped_fixture,
                                           HealthCheck.too_slow])


def make_filter(m, spec):
    kind, *args = spec
    return getattr(m, kind)(*args)


def texts(result):
    return [(str(x), repr(x)) for x in result]


@SETTINGS
@given(snap=snapshots)
def test_statistics(stdlib, ctm, snap):
    raw, limit = snap
    for key, cumulative in (("filename", False), ("lineno", False),
                            ("traceback", False), ("filename", True),
                            ("lineno", True)):
        want = stdlib.Snapshot(raw, limit).statistics(key, cumulative)
        got = ctm.Snapshot(raw, limit).statistics(key, cumulative)
        assert [plain_stat(s) for s in got] == [plain_stat(s) for s in want]
        assert texts(got) == texts(want)


@SETTINGS
@given(new=snapshots, old=snapshots)
def test_compare_to(stdlib, ctm, new, old):
    for key, cumulative in (("filename", False), ("lineno", False),
                            ("traceback", False), ("filename", True),
                            ("lineno", True)):
        want = stdlib.Snapshot(*new).compare_to(stdlib.Snapshot(*old), key,
                                                cumulative)
        got = ctm.Snapshot(*new).compare_to(ctm.Snapshot(*old), key,
                                            cumulative)
        assert [plain_diff(s) for s in got] == [plain_diff(s) for s in want]
        assert texts(got) == texts(want)


@SETTINGS
@given(snap=snapshots, specs=st.lists(filters, max_size=4))
def test_filter_traces(stdlib, ctm, snap, specs):
    raw, limit = snap
    want = stdlib.Snapshot(raw, limit).filter_traces(
        [make_filter(stdlib, s) for s in specs])
    got = ctm.Snapshot(raw, limit).filter_traces(
        [make_filter(ctm, s) for s in specs])
    assert plain_traces(got) == plain_traces(want)
    assert got.traceback_limit == want.traceback_limit
    # and what comes out of a filtered snapshot
    assert ([plain_stat(s) for s in got.statistics("lineno", True)]
            == [plain_stat(s) for s in want.statistics("lineno", True)])


@SETTINGS
@given(snap=snapshots)
def test_traces(stdlib, ctm, snap):
    raw, limit = snap
    want = stdlib.Snapshot(raw, limit)
    got = ctm.Snapshot(raw, limit)
    assert plain_traces(got) == plain_traces(want) == [tuple(t) for t in raw]
    assert len(got.traces) == len(want.traces)
    assert texts(got.traces) == texts(want.traces)
    if raw:
        assert texts(got.traces[1:-1]) == texts(want.traces[1:-1])
        assert texts(got.traces[::-2]) == texts(want.traces[::-2])


@SETTINGS
@given(snap=snapshots)
def test_dump_load(ctm, tmp_path, snap):
    raw, limit = snap
    path = tmp_path / "snap"
    ctm.Snapshot(raw, limit).dump(path)
    loaded = ctm.Snapshot.load(path)
    assert plain_traces(loaded) == [tuple(t) for t in raw]
    assert loaded.traceback_limit == limit


@pytest.mark.parametrize("pattern", ["*", "**", "a*", "*a", "*.py", "?",
                                     "[a-c]*", "[!a-c]*", "[]]", "[!]]",
                                     "[", "a[", "[a", "\\*", "*[*]",
                                     ".py", "a.pyc", "a.PYC", "é*"])
def test_patterns_match_fnmatch(stdlib, ctm, pattern):
    names = FILENAMES + ["]", "[", "*", "?", "\\", "\\*", "a*", "a.py.py",
                         "a.pycc", "ab", "b/a.py"]
    raw = [(0, 1, ((name, 1),), 1) for name in names]

    def matched(m):
        kept = m.Snapshot(raw, 1).filter_traces([m.Filter(True, pattern)])
        return [t.traceback[0].filename for t in kept.traces]
    assert matched(ctm) == matched(stdlib)
