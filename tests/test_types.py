"""Frame, Traceback, Trace, Statistic, StatisticDiff, Filter, DomainFilter
and Snapshot as values: attributes, str, repr, equality, hashing, ordering,
sequences, pickling, Traceback.format.

Tests with literal expectations run on both implementations (tm); the
differential ones compare ctracemalloc with the stdlib on many inputs."""
import collections.abc
import copy
import linecache
import pickle

import pytest

from tmhelpers import outcome, raw_frames

# Raw frames, most recent first: a.py:2 was called from b.py:4.
FRAMES = (("a.py", 2), ("b.py", 4))
TB_REPR = ("(<Frame filename='b.py' lineno=4>,"
           " <Frame filename='a.py' lineno=2>)")


# -- Frame ------------------------------------------------------------------

def test_frame(tm):
    frame = tm.Frame(("a.py", 2))
    assert frame.filename == "a.py"
    assert frame.lineno == 2
    assert str(frame) == "a.py:2"
    assert repr(frame) == "<Frame filename='a.py' lineno=2>"


def test_frame_equality_and_hash(tm):
    a = tm.Frame(("a.py", 2))
    assert a == tm.Frame(("a.py", 2))
    assert not (a != tm.Frame(("a.py", 2)))
    assert a != tm.Frame(("a.py", 3))
    assert a != tm.Frame(("b.py", 2))
    assert a != ("a.py", 2)
    assert hash(a) == hash(tm.Frame(("a.py", 2)))
    assert len({a, tm.Frame(("a.py", 2)), tm.Frame(("a.py", 3))}) == 2


def test_frame_ordering(tm):
    frames = [tm.Frame(x) for x in (("b.py", 1), ("a.py", 3), ("a.py", 2))]
    assert sorted(frames) == [tm.Frame(("a.py", 2)), tm.Frame(("a.py", 3)),
                              tm.Frame(("b.py", 1))]
    a, b = tm.Frame(("a.py", 2)), tm.Frame(("a.py", 3))
    assert a < b and a <= b and b > a and b >= a and a <= a and a >= a
    assert not (a > b) and not (b < a)
    with pytest.raises(TypeError):
        a < ("a.py", 3)


def test_frame_read_only(tm):
    frame = tm.Frame(("a.py", 2))
    with pytest.raises(AttributeError):
        frame.filename = "b.py"
    with pytest.raises(AttributeError):
        frame.lineno = 3
    with pytest.raises(AttributeError):
        frame.other = 1


# -- Traceback --------------------------------------------------------------

def test_traceback_sequence(tm):
    tb = tm.Traceback(FRAMES)
    assert isinstance(tb, collections.abc.Sequence)
    assert len(tb) == 2
    # oldest frame first
    assert tb[0] == tm.Frame(("b.py", 4))
    assert tb[1] == tm.Frame(("a.py", 2))
    assert tb[-1] == tm.Frame(("a.py", 2))
    assert tb[:1] == (tm.Frame(("b.py", 4)),)
    assert tb[::-1] == (tm.Frame(("a.py", 2)), tm.Frame(("b.py", 4)))
    assert list(tb) == [tm.Frame(("b.py", 4)), tm.Frame(("a.py", 2))]
    assert list(reversed(tb)) == [tm.Frame(("a.py", 2)),
                                  tm.Frame(("b.py", 4))]
    assert tm.Frame(("a.py", 2)) in tb
    assert tm.Frame(("a.py", 3)) not in tb
    assert tb.index(tm.Frame(("a.py", 2))) == 1
    assert tb.count(tm.Frame(("b.py", 4))) == 1
    with pytest.raises(IndexError):
        tb[2]
    with pytest.raises(IndexError):
        tb[-3]


def test_traceback_str_repr(tm):
    assert str(tm.Traceback(FRAMES)) == "b.py:4"
    assert repr(tm.Traceback(FRAMES)) == "<Traceback %s>" % TB_REPR
    assert (repr(tm.Traceback(FRAMES, 5))
            == "<Traceback %s total_nframe=5>" % TB_REPR)
    assert repr(tm.Traceback(())) == "<Traceback ()>"
    assert repr(tm.Traceback((), 0)) == "<Traceback () total_nframe=0>"


def test_traceback_total_nframe(tm):
    assert tm.Traceback(FRAMES).total_nframe is None
    assert tm.Traceback(FRAMES, 7).total_nframe == 7
    assert tm.Traceback(FRAMES, total_nframe=7).total_nframe == 7
    with pytest.raises(AttributeError):
        tm.Traceback(FRAMES).total_nframe = 3


def test_traceback_equality_hash_ordering(tm):
    tb = tm.Traceback(FRAMES)
    # total_nframe takes no part in equality
    assert tb == tm.Traceback(FRAMES, 9)
    assert hash(tb) == hash(tm.Traceback(FRAMES, 9))
    assert tb != tm.Traceback(FRAMES[:1])
    assert tb != FRAMES
    older = tm.Traceback((("a.py", 2), ("a.py", 4)))
    # compared oldest frame first
    assert older < tb and tb > older and older <= tb and tb >= older
    with pytest.raises(TypeError):
        tb < FRAMES


def test_traceback_from_list(tm):
    assert tm.Traceback(list(FRAMES)) == tm.Traceback(FRAMES)


# -- Trace ------------------------------------------------------------------

def test_trace(tm):
    trace = tm.Trace((3, 10, FRAMES, 5))
    assert trace.domain == 3
    assert trace.size == 10
    assert trace.traceback == tm.Traceback(FRAMES)
    assert trace.traceback.total_nframe == 5
    assert str(trace) == "b.py:4: 10 B"
    assert repr(trace) == ("<Trace domain=3 size=10 B, traceback=<Traceback"
                           " %s total_nframe=5>>" % TB_REPR)
    with pytest.raises(AttributeError):
        trace.size = 3


def test_trace_equality_hash(tm):
    trace = tm.Trace((0, 10, FRAMES, 5))
    assert trace == tm.Trace((0, 10, FRAMES, 5))
    assert hash(trace) == hash(tm.Trace((0, 10, FRAMES, 5)))
    assert trace != tm.Trace((1, 10, FRAMES, 5))
    assert trace != tm.Trace((0, 11, FRAMES, 5))
    assert trace != tm.Trace((0, 10, FRAMES[:1], 5))
    # unlike Traceback's, Trace's equality sees total_nframe
    assert trace != tm.Trace((0, 10, FRAMES, 6))
    with pytest.raises(TypeError):
        trace < tm.Trace((0, 11, FRAMES, 5))


# -- Statistic and StatisticDiff ----------------------------------------------

def test_statistic(tm):
    tb = tm.Traceback(FRAMES[:1])
    stat = tm.Statistic(tb, 30, 3)
    assert (stat.traceback, stat.size, stat.count) == (tb, 30, 3)
    assert str(stat) == "a.py:2: size=30 B, count=3, average=10 B"
    assert repr(stat) == ("<Statistic traceback=<Traceback (<Frame "
                          "filename='a.py' lineno=2>,)> size=30 count=3>")
    assert str(tm.Statistic(tb, 0, 0)) == "a.py:2: size=0 B, count=0"
    assert stat == tm.Statistic(tb, 30, 3)
    assert stat != tm.Statistic(tb, 30, 4)
    assert hash(stat) == hash(tm.Statistic(tm.Traceback(FRAMES[:1]), 30, 3))
    with pytest.raises(TypeError):
        stat < tm.Statistic(tb, 31, 3)


def test_statistic_diff(tm):
    tb = tm.Traceback(FRAMES[:1])
    diff = tm.StatisticDiff(tb, 5002, 5000, 2, 1)
    assert ((diff.traceback, diff.size, diff.size_diff, diff.count,
             diff.count_diff) == (tb, 5002, 5000, 2, 1))
    assert str(diff) == ("a.py:2: size=5002 B (+5000 B), count=2 (+1), "
                         "average=2501 B")
    assert repr(diff) == ("<StatisticDiff traceback=<Traceback (<Frame "
                          "filename='a.py' lineno=2>,)> size=5002 (+5000) "
                          "count=2 (+1)>")
    gone = tm.StatisticDiff(tb, 0, -66, 0, -1)
    assert str(gone) == "a.py:2: size=0 B (-66 B), count=0 (-1)"
    assert diff == tm.StatisticDiff(tb, 5002, 5000, 2, 1)
    assert diff != tm.StatisticDiff(tb, 5002, 5000, 2, 2)
    assert hash(diff) == hash(tm.StatisticDiff(tb, 5002, 5000, 2, 1))
    with pytest.raises(TypeError):
        diff < gone


def test_statistic_keyword_arguments(tm):
    tb = tm.Traceback(FRAMES[:1])
    assert (tm.Statistic(traceback=tb, size=1, count=2)
            == tm.Statistic(tb, 1, 2))
    assert (tm.StatisticDiff(traceback=tb, size=1, size_diff=1, count=2,
                             count_diff=2)
            == tm.StatisticDiff(tb, 1, 1, 2, 2))


# The stdlib's _format_size at its unit boundaries, with and without sign.
SIZES = [0, 1, 99, 100, 1023, 1024, 10 * 1024 - 1, 10 * 1024, 10 * 1024 + 1,
         100 * 1024 - 1, 100 * 1024, 1024 ** 2 - 1, 1024 ** 2, 10 * 1024 ** 2,
         123456789, 1024 ** 3, 100 * 1024 ** 3, 1024 ** 4, 5 * 1024 ** 4,
         1024 ** 5, 2 ** 62, 2 ** 64 - 1]


@pytest.mark.parametrize("size", SIZES)
def test_format_size_matches_stdlib(stdlib, ctm, size):
    def texts(m):
        tb = m.Traceback((("f.py", 1),))
        return [str(m.Statistic(tb, size, 1)),
                str(m.Statistic(tb, size, 3)),
                str(m.Statistic(tb, size, 7)),
                str(m.StatisticDiff(tb, size, size, 3, 3)),
                str(m.StatisticDiff(tb, size, -size, 3, -3)),
                str(m.StatisticDiff(tb, 0, -size, 0, -3)),
                str(m.Trace((0, size, (("f.py", 1),), 1)))]
    assert texts(ctm) == texts(stdlib)


def test_format_size_known_values(tm):
    tb = tm.Traceback((("f.py", 1),))

    def text(size):
        return str(tm.Statistic(tb, size, 0)).split("size=")[1][:-len(
            ", count=0")]

    assert text(0) == "0 B"
    assert text(10 * 1024 - 1) == "10239 B"
    assert text(10 * 1024) == "10.0 KiB"
    assert text(100 * 1024) == "100 KiB"
    assert text(1024 ** 2 * 5) == "5120 KiB"
    assert text(1024 ** 3 * 50) == "50.0 GiB"
    assert text(1024 ** 5) == "1024 TiB"


# -- Filters ------------------------------------------------------------------

def test_filter_attributes(tm):
    f = tm.Filter(True, "abc")
    assert (f.inclusive, f.filename_pattern, f.lineno, f.all_frames,
            f.domain) == (True, "abc", None, False, None)
    f = tm.Filter(False, "test.py", 123, True, 5)
    assert (f.inclusive, f.filename_pattern, f.lineno, f.all_frames,
            f.domain) == (False, "test.py", 123, True, 5)
    f = tm.Filter(inclusive=False, filename_pattern="x.py", lineno=1,
                  all_frames=True, domain=2)
    assert (f.inclusive, f.filename_pattern, f.lineno, f.all_frames,
            f.domain) == (False, "x.py", 1, True, 2)
    assert isinstance(f, tm.BaseFilter)


def test_filter_pyc_pattern(tm):
    assert tm.Filter(True, "a.pyc").filename_pattern == "a.py"
    assert tm.Filter(True, "a.pyo").filename_pattern == "a.pyo"


def test_filter_mutability(tm):
    f = tm.Filter(True, "abc")
    f.inclusive = False
    f.lineno = 5
    f.all_frames = True
    f.domain = 3
    assert (f.inclusive, f.lineno, f.all_frames, f.domain) == (False, 5,
                                                                True, 3)
    with pytest.raises(AttributeError):
        f.filename_pattern = "def"


def test_domain_filter(tm):
    f = tm.DomainFilter(True, 5)
    assert (f.inclusive, f.domain) == (True, 5)
    assert isinstance(f, tm.BaseFilter)
    f = tm.DomainFilter(inclusive=False, domain=7)
    assert (f.inclusive, f.domain) == (False, 7)
    f.inclusive = True
    assert f.inclusive is True
    with pytest.raises(AttributeError):
        f.domain = 3


# -- Snapshot.traces as a sequence --------------------------------------------

RAW_TRACES = [
    (0, 10, (("a.py", 2), ("b.py", 4)), 3),
    (1, 2, (("a.py", 5), ("b.py", 4)), 3),
    (2, 66, (("b.py", 1),), 1),
    (3, 7, (("<unknown>", 0),), 1),
]


def test_snapshot_traces_sequence(tm):
    snapshot = tm.Snapshot(RAW_TRACES, 2)
    traces = snapshot.traces
    assert snapshot.traceback_limit == 2
    assert isinstance(traces, collections.abc.Sequence)
    assert len(traces) == 4
    assert repr(traces) == "<Traces len=4>"
    assert traces[0] == tm.Trace(RAW_TRACES[0])
    assert traces[-1] == tm.Trace(RAW_TRACES[-1])
    assert traces[1:3] == (tm.Trace(RAW_TRACES[1]), tm.Trace(RAW_TRACES[2]))
    assert list(traces) == [tm.Trace(raw) for raw in RAW_TRACES]
    assert tm.Trace(RAW_TRACES[2]) in traces
    assert tm.Trace((9, 9, (("z.py", 9),), 1)) not in traces
    assert traces == tm.Snapshot(list(RAW_TRACES), 5).traces
    assert traces != tm.Snapshot(RAW_TRACES[:3], 2).traces
    with pytest.raises(IndexError):
        traces[4]
    with pytest.raises(IndexError):
        traces[-5]


def test_snapshot_attributes_are_writable(tm):
    snapshot = tm.Snapshot(RAW_TRACES, 2)
    snapshot.traceback_limit = 5
    assert snapshot.traceback_limit == 5
    snapshot.test_attr = "new"
    assert snapshot.test_attr == "new"


# -- Pickling and copying -------------------------------------------------------

def values(m):
    tb = m.Traceback(FRAMES, 3)
    return {
        "frame": m.Frame(("a.py", 2)),
        "traceback": tb,
        "traceback without total": m.Traceback(FRAMES),
        "trace": m.Trace((0, 10, FRAMES, 3)),
        "statistic": m.Statistic(tb, 30, 3),
        "statistic diff": m.StatisticDiff(tb, 30, -5, 3, -1),
    }


VALUE_NAMES = ["frame", "traceback", "traceback without total", "trace",
               "statistic", "statistic diff"]


@pytest.mark.parametrize("name", VALUE_NAMES)
@pytest.mark.parametrize("protocol", range(2, pickle.HIGHEST_PROTOCOL + 1))
def test_pickle_values(tm, name, protocol):
    value = values(tm)[name]
    clone = pickle.loads(pickle.dumps(value, protocol))
    assert type(clone) is type(value)
    assert clone == value
    assert repr(clone) == repr(value)


@pytest.mark.parametrize("name", VALUE_NAMES)
def test_copy_values(tm, name):
    value = values(tm)[name]
    assert copy.copy(value) == value
    assert copy.deepcopy(value) == value
    assert repr(copy.deepcopy(value)) == repr(value)


@pytest.mark.parametrize("protocol", range(2, pickle.HIGHEST_PROTOCOL + 1))
def test_pickle_filters(tm, protocol):
    f = pickle.loads(pickle.dumps(tm.Filter(False, "a*.py", 3, True, 2),
                                  protocol))
    assert (f.inclusive, f.filename_pattern, f.lineno, f.all_frames,
            f.domain) == (False, "a*.py", 3, True, 2)
    d = pickle.loads(pickle.dumps(tm.DomainFilter(True, 9), protocol))
    assert (type(d), d.inclusive, d.domain) == (tm.DomainFilter, True, 9)


@pytest.mark.parametrize("protocol", range(2, pickle.HIGHEST_PROTOCOL + 1))
def test_pickle_snapshot(tm, protocol):
    snapshot = tm.Snapshot(RAW_TRACES, 2)
    snapshot.extra = [1, 2]
    clone = pickle.loads(pickle.dumps(snapshot, protocol))
    assert type(clone) is type(snapshot)
    assert clone.traces == snapshot.traces
    assert clone.traceback_limit == 2
    assert clone.extra == [1, 2]
    assert clone.statistics("lineno") == snapshot.statistics("lineno")


# -- Differential: the same values through both implementations --------------

def describe(value):
    """Everything observable about a value without identity: type name,
    str, repr, and sequence content."""
    result = {"type": type(value).__name__, "str": str(value),
              "repr": repr(value)}
    if isinstance(value, collections.abc.Sequence):
        result["items"] = [describe(v) for v in value]
    return result


@pytest.mark.parametrize("name", VALUE_NAMES)
def test_values_match_stdlib(stdlib, ctm, name):
    assert describe(values(ctm)[name]) == describe(values(stdlib)[name])


@pytest.mark.parametrize("name", ["frame", "traceback", "trace", "statistic",
                                  "statistic diff"])
def test_hash_values_match_stdlib(stdlib, ctm, name):
    # Equal hashes give sets and dicts of these values the same iteration
    # order as with the stdlib.
    assert hash(values(ctm)[name]) == hash(values(stdlib)[name])


TYPE_ATTRIBUTES = [
    ("frame", "filename"), ("frame", "lineno"), ("frame", "new_attr"),
    ("traceback", "total_nframe"), ("traceback", "new_attr"),
    ("trace", "domain"), ("trace", "size"), ("trace", "traceback"),
    ("trace", "new_attr"),
    ("statistic", "traceback"), ("statistic", "size"), ("statistic", "count"),
    ("statistic", "new_attr"),
    ("statistic diff", "size"), ("statistic diff", "size_diff"),
    ("statistic diff", "count"), ("statistic diff", "count_diff"),
    ("statistic diff", "new_attr"),
]


@pytest.mark.parametrize("name, attr", TYPE_ATTRIBUTES)
def test_setattr_matches_stdlib(stdlib, ctm, name, attr):
    def attempt(m):
        value = values(m)[name]
        error = outcome(lambda: setattr(value, attr, 42))[0]
        after = outcome(lambda: repr(getattr(value, attr)))
        # (the messages name the type, whose module differs)
        return error, after if after[0] is None else after[0]
    assert attempt(ctm) == attempt(stdlib)


@pytest.mark.parametrize("attr", ["inclusive", "filename_pattern", "lineno",
                                  "all_frames", "domain", "new_attr"])
def test_filter_setattr_matches_stdlib(stdlib, ctm, attr):
    def attempt(m):
        for f in (m.Filter(True, "a.py"), m.DomainFilter(True, 1)):
            yield outcome(lambda: setattr(f, attr, 42))[0]
            after = outcome(lambda: getattr(f, attr))
            yield after if after[0] is None else after[0]
    assert list(attempt(ctm)) == list(attempt(stdlib))


def test_sorting_matches_stdlib(stdlib, ctm):
    raw = [("b.py", 1), ("a.py", 10), ("a.py", 2), ("", 0), ("a.py", 2),
           ("<unknown>", 0), ("b.py", 0)]

    def frames(m):
        return [str(f) for f in sorted(m.Frame(x) for x in raw)]

    def tracebacks(m):
        tbs = [m.Traceback(tuple(raw[i:i + n]))
               for i in range(len(raw)) for n in (1, 2, 3)]
        return [repr(tb) for tb in sorted(tbs)]

    assert frames(ctm) == frames(stdlib)
    assert tracebacks(ctm) == tracebacks(stdlib)


# -- Traceback.format -------------------------------------------------------------

def format_cases(m):
    here = __file__
    real = ((here, 1), (here, 20), (here, 30), (here, 99999))
    fake = (("does/not/exist.py", 3), ("<unknown>", 0))
    results = []
    for frames in (real, fake, real + fake, ()):
        tb = m.Traceback(frames)
        for limit in (None, 0, 1, -1, 2, -2, 5, -5):
            for recent in (False, True):
                results.append(tb.format(limit, recent))
                results.append(tb.format(limit=limit,
                                         most_recent_first=recent))
    return results


def test_format_matches_stdlib(stdlib, ctm):
    assert format_cases(ctm) == format_cases(stdlib)


def test_format(tm):
    lineno = 1 + open(__file__).read().splitlines().index(
        'FRAMES = (("a.py", 2), ("b.py", 4))')
    this = '  File "%s", line %d' % (__file__, lineno)
    source = '    FRAMES = (("a.py", 2), ("b.py", 4))'
    tb = tm.Traceback(((__file__, lineno), ("nowhere.py", 3)))
    assert tb.format() == ['  File "nowhere.py", line 3', this, source]
    assert tb.format(1) == [this, source]
    assert tb.format(-1) == ['  File "nowhere.py", line 3']
    assert tb.format(most_recent_first=True) == [
        this, source, '  File "nowhere.py", line 3']
    assert tb.format(0) == []


def test_format_uses_linecache(tm, monkeypatch):
    monkeypatch.setattr(linecache, "getline",
                        lambda filename, lineno: "<%s %s>" % (filename,
                                                              lineno))
    tb = tm.Traceback((("a.py", 2),))
    assert tb.format() == ['  File "a.py", line 2', '    <a.py 2>']


def test_raw_frames_helper(tm):
    # the helper the other tests rely on
    assert raw_frames(tm.Traceback(FRAMES)) == FRAMES
