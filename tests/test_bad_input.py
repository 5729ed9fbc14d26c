"""Wrong arguments: every function and constructor must fail as the stdlib
does. Each case runs against the stdlib and against ctracemalloc; the
exception types must be the same (and no exception when the stdlib raises
none), and so must the messages where the stdlib's says something about
tracemalloc (not only Python's generic argument errors, whose wording
varies with the version and with C or Python code)."""
import pytest

from tmhelpers import outcome

FRAMES = (("a.py", 2), ("b.py", 4))
RAW = [(0, 10, FRAMES, 3), (1, 2, (("a.py", 5),), 1)]


def snapshot(m):
    return m.Snapshot(list(RAW), 2)


class Index:
    def __index__(self):
        return 2


# (case id, call, compare messages)
CASES = [
    # start
    ("start(-1)", lambda m: m.start(-1), True),
    ("start(0)", lambda m: m.start(0), True),
    ("start(65536)", lambda m: m.start(65536), True),
    ("start(2**30)", lambda m: m.start(2 ** 30), True),
    ("start(2**31)", lambda m: m.start(2 ** 31), False),
    ("start(-2**31-1)", lambda m: m.start(-2 ** 31 - 1), False),
    ("start(2**64)", lambda m: m.start(2 ** 64), False),
    ("start('1')", lambda m: m.start("1"), False),
    ("start(1.0)", lambda m: m.start(1.0), False),
    ("start(None)", lambda m: m.start(None), False),
    ("start(1, 2)", lambda m: m.start(1, 2), False),
    ("start(nframe=2)", lambda m: m.start(nframe=2), False),
    ("start(Index())", lambda m: m.start(Index()), False),
    # functions without arguments
    ("stop(1)", lambda m: m.stop(1), False),
    ("is_tracing(1)", lambda m: m.is_tracing(1), False),
    ("clear_traces(1)", lambda m: m.clear_traces(1), False),
    ("get_traceback_limit(1)", lambda m: m.get_traceback_limit(1), False),
    ("get_traced_memory(1)", lambda m: m.get_traced_memory(1), False),
    ("reset_peak(1)", lambda m: m.reset_peak(1), False),
    ("get_tracemalloc_memory(1)", lambda m: m.get_tracemalloc_memory(1),
     False),
    ("take_snapshot(1)", lambda m: m.take_snapshot(1), False),
    ("take_snapshot() not tracing", lambda m: m.take_snapshot(), True),
    ("is_tracing(x=1)", lambda m: m.is_tracing(x=1), False),
    # get_object_traceback
    ("get_object_traceback()", lambda m: m.get_object_traceback(), False),
    ("get_object_traceback(1, 2)",
     lambda m: m.get_object_traceback(1, 2), False),
    ("get_object_traceback(None)",
     lambda m: m.get_object_traceback(None), True),
    ("get_object_traceback(obj=1)",
     lambda m: m.get_object_traceback(obj=1), True),
    # Frame
    ("Frame()", lambda m: m.Frame(), False),
    ("Frame(1)", lambda m: m.Frame(1).filename, False),
    ("Frame(None)", lambda m: m.Frame(None).lineno, False),
    ("Frame(a, b)", lambda m: m.Frame("a.py", 2), False),
    ("Frame(('a.py',))", lambda m: m.Frame(("a.py",)).lineno, False),
    # Traceback
    ("Traceback()", lambda m: m.Traceback(), False),
    ("Traceback(1)", lambda m: m.Traceback(1), False),
    ("Traceback(None)", lambda m: m.Traceback(None), False),
    ("Traceback(frames, 1, 2)", lambda m: m.Traceback(FRAMES, 1, 2), False),
    ("Traceback(frames, x=1)", lambda m: m.Traceback(FRAMES, x=1), False),
    ("Traceback[2]", lambda m: m.Traceback(FRAMES)[2], True),
    ("Traceback[-3]", lambda m: m.Traceback(FRAMES)[-3], True),
    ("Traceback['x']", lambda m: m.Traceback(FRAMES)["x"], False),
    ("Traceback[None]", lambda m: m.Traceback(FRAMES)[None], False),
    ("Traceback.format('x')", lambda m: m.Traceback(FRAMES).format("x"),
     False),
    ("Traceback.format(1.5)", lambda m: m.Traceback(FRAMES).format(1.5),
     False),
    ("Traceback.format(1, True, 3)",
     lambda m: m.Traceback(FRAMES).format(1, True, 3), False),
    ("Traceback.format(x=1)",
     lambda m: m.Traceback(FRAMES).format(x=1), False),
    ("Traceback < 1", lambda m: m.Traceback(FRAMES) < 1, False),
    ("Traceback < tuple", lambda m: m.Traceback(FRAMES) < FRAMES, False),
    ("Frame < 1", lambda m: m.Frame(FRAMES[0]) < 1, False),
    ("Frame >= None", lambda m: m.Frame(FRAMES[0]) >= None, False),
    ("hash(Traceback)", lambda m: hash(m.Traceback(FRAMES)) is None, True),
    ("1 in Traceback", lambda m: 1 in m.Traceback(FRAMES), False),
    # Trace
    ("Trace()", lambda m: m.Trace(), False),
    ("Trace(1)", lambda m: m.Trace(1).size, False),
    ("Trace(1, 2)", lambda m: m.Trace(1, 2), False),
    ("Trace < Trace", lambda m: m.Trace(RAW[0]) < m.Trace(RAW[1]), False),
    # Statistic, StatisticDiff
    ("Statistic()", lambda m: m.Statistic(), False),
    ("Statistic(tb, 1)", lambda m: m.Statistic(m.Traceback(FRAMES), 1),
     False),
    ("Statistic(tb, 1, 2, 3)",
     lambda m: m.Statistic(m.Traceback(FRAMES), 1, 2, 3), False),
    ("Statistic < Statistic",
     lambda m: m.Statistic(m.Traceback(FRAMES), 1, 1)
     < m.Statistic(m.Traceback(FRAMES), 2, 1), False),
    ("StatisticDiff()", lambda m: m.StatisticDiff(), False),
    ("StatisticDiff(tb, 1, 2, 3)",
     lambda m: m.StatisticDiff(m.Traceback(FRAMES), 1, 2, 3), False),
    ("StatisticDiff > StatisticDiff",
     lambda m: m.StatisticDiff(m.Traceback(FRAMES), 1, 1, 1, 1)
     > m.StatisticDiff(m.Traceback(FRAMES), 1, 1, 1, 1), False),
    # Filter, DomainFilter
    ("Filter()", lambda m: m.Filter(), False),
    ("Filter(True)", lambda m: m.Filter(True), False),
    ("Filter(True, 1)", lambda m: m.Filter(True, 1), True),
    ("Filter(True, None)", lambda m: m.Filter(True, None), True),
    ("Filter(True, b'a.py')", lambda m: m.Filter(True, b"a.py"), False),
    ("Filter(True, 'a', 1, False, None, 6)",
     lambda m: m.Filter(True, "a", 1, False, None, 6), False),
    ("Filter(x=1)", lambda m: m.Filter(True, "a", x=1), False),
    ("Filter.filename_pattern=",
     lambda m: setattr(m.Filter(True, "a"), "filename_pattern", "b"), False),
    ("Filter(True, Path)",
     lambda m: m.Filter(True, __import__("pathlib").Path("a.pyc"))
     .filename_pattern, True),
    ("Filter lineno=0", lambda m: m.Filter(True, "a", 0).lineno, True),
    ("Filter inclusive=1", lambda m: m.Filter(1, "a").inclusive == 1, True),
    ("DomainFilter()", lambda m: m.DomainFilter(), False),
    ("DomainFilter(True)", lambda m: m.DomainFilter(True), False),
    ("DomainFilter(True, 1, 2)", lambda m: m.DomainFilter(True, 1, 2), False),
    ("DomainFilter.domain=",
     lambda m: setattr(m.DomainFilter(True, 1), "domain", 2), False),
    # Snapshot
    ("Snapshot()", lambda m: m.Snapshot(), False),
    ("Snapshot([])", lambda m: m.Snapshot([]), False),
    ("Snapshot(traces, 1, 2)", lambda m: m.Snapshot(RAW, 1, 2), False),
    ("statistics()", lambda m: snapshot(m).statistics(), False),
    ("statistics('x')", lambda m: snapshot(m).statistics("x"), True),
    ("statistics('')", lambda m: snapshot(m).statistics(""), True),
    ("statistics(1)", lambda m: snapshot(m).statistics(1), True),
    ("statistics(None)", lambda m: snapshot(m).statistics(None), True),
    ("statistics('LINENO')", lambda m: snapshot(m).statistics("LINENO"),
     True),
    ("statistics('traceback', True)",
     lambda m: snapshot(m).statistics("traceback", True), True),
    ("statistics('x', True)",
     lambda m: snapshot(m).statistics("x", True), True),
    ("statistics(1, 2, 3)", lambda m: snapshot(m).statistics(1, 2, 3),
     False),
    ("statistics(key_type=)",
     lambda m: len(snapshot(m).statistics(key_type="lineno")), True),
    ("compare_to()", lambda m: snapshot(m).compare_to(), False),
    ("compare_to(s)", lambda m: snapshot(m).compare_to(snapshot(m)), False),
    ("compare_to(s, 'x')",
     lambda m: snapshot(m).compare_to(snapshot(m), "x"), True),
    ("compare_to(s, 'traceback', True)",
     lambda m: snapshot(m).compare_to(snapshot(m), "traceback", True), True),
    ("compare_to(None, 'lineno')",
     lambda m: snapshot(m).compare_to(None, "lineno"), False),
    ("compare_to(None, 'x')",
     lambda m: snapshot(m).compare_to(None, "x"), True),
    ("compare_to(1, 'lineno')",
     lambda m: snapshot(m).compare_to(1, "lineno"), False),
    ("filter_traces()", lambda m: snapshot(m).filter_traces(), False),
    ("filter_traces(1)", lambda m: snapshot(m).filter_traces(1), True),
    ("filter_traces(None)", lambda m: snapshot(m).filter_traces(None), True),
    ("filter_traces(Filter)",
     lambda m: snapshot(m).filter_traces(m.Filter(True, "a.py")), True),
    ("filter_traces([1])", lambda m: snapshot(m).filter_traces([1]), False),
    ("filter_traces([None])",
     lambda m: snapshot(m).filter_traces([None]), False),
    ("filter_traces('abc')", lambda m: snapshot(m).filter_traces("abc"),
     False),
    ("traces[2]", lambda m: snapshot(m).traces[2], True),
    ("traces[-3]", lambda m: snapshot(m).traces[-3], True),
    ("traces['x']", lambda m: snapshot(m).traces["x"], False),
    ("traces[1.0]", lambda m: snapshot(m).traces[1.0], False),
    ("load()", lambda m: m.Snapshot.load(), False),
    ("load(None)", lambda m: m.Snapshot.load(None), False),
    ("load(1.5)", lambda m: m.Snapshot.load(1.5), False),
    ("load('')", lambda m: m.Snapshot.load(""), True),
    ("load(missing)", lambda m: m.Snapshot.load("/nonexistent/x/y"), True),
    ("load(dir)", lambda m: m.Snapshot.load("/"), True),
    ("dump()", lambda m: snapshot(m).dump(), False),
    ("dump(None)", lambda m: snapshot(m).dump(None), False),
    ("dump(1.5)", lambda m: snapshot(m).dump(1.5), False),
    ("dump('')", lambda m: snapshot(m).dump(""), True),
    ("dump(missing dir)", lambda m: snapshot(m).dump("/nonexistent/x/y"),
     True),
    ("dump(dir)", lambda m: snapshot(m).dump("/"), True),
    # the stdlib's Python functions take their arguments by keyword too
    ("start(nframe=)", lambda m: m.start(nframe=2), False),
    ("get_object_traceback(obj=)",
     lambda m: m.get_object_traceback(obj=1), False),
    ("statistics(key_type=, cumulative=)",
     lambda m: snapshot(m).statistics(key_type="lineno", cumulative=True),
     False),
    ("compare_to(old_snapshot=, ...)",
     lambda m: snapshot(m).compare_to(old_snapshot=snapshot(m),
                                      key_type="filename", cumulative=False),
     False),
    ("filter_traces(filters=)",
     lambda m: snapshot(m).filter_traces(filters=[]), False),
    ("dump(filename=)",
     lambda m: snapshot(m).dump(filename="/nonexistent/x/y"), True),
    ("load(filename=)",
     lambda m: m.Snapshot.load(filename="/nonexistent/x/y"), True),
    ("Snapshot(traces=, traceback_limit=)",
     lambda m: m.Snapshot(traces=list(RAW), traceback_limit=2), False),
    ("Filter(keywords)",
     lambda m: m.Filter(inclusive=True, filename_pattern="a*", lineno=3,
                        all_frames=True, domain=1), False),
    ("DomainFilter(keywords)",
     lambda m: m.DomainFilter(inclusive=False, domain=2), False),
    ("Traceback(frames=, total_nframe=)",
     lambda m: m.Traceback(frames=FRAMES, total_nframe=5), False),
    ("Traceback.format(limit=, most_recent_first=)",
     lambda m: m.Traceback(FRAMES).format(limit=1, most_recent_first=True),
     False),
    ("Frame(frame=)", lambda m: m.Frame(frame=FRAMES[0]), False),
    ("Trace(trace=)", lambda m: m.Trace(trace=RAW[0]), False),
    ("Statistic(keywords)",
     lambda m: m.Statistic(traceback=None, size=1, count=1), False),
    ("StatisticDiff(keywords)",
     lambda m: m.StatisticDiff(traceback=None, size=1, size_diff=1, count=1,
                               count_diff=1), False),
    ("_format_size(size=, sign=)",
     lambda m: m._format_size(size=1, sign=True), False),
    ("_normalize_filename(filename=)",
     lambda m: m._normalize_filename(filename="a.pyc"), False),
]


@pytest.mark.parametrize("call, messages", [c[1:] for c in CASES],
                         ids=[c[0] for c in CASES])
def test_same_error_as_stdlib(stdlib, ctm, call, messages):
    expected = outcome(lambda: call(stdlib))
    stdlib.stop()
    got = outcome(lambda: call(ctm))
    ctm.stop()
    assert got[0] is expected[0], (
        "stdlib: %s: %s; ctracemalloc: %s: %s"
        % (getattr(expected[0], "__name__", "no error"), expected[1],
           getattr(got[0], "__name__", "no error"), got[1]))
    if messages:
        assert got[1] == expected[1]


def test_start_error_does_not_start(tm):
    for bad in (-1, 0, 65536, "1", None):
        with pytest.raises((ValueError, TypeError)):
            tm.start(bad)
        assert not tm.is_tracing()


def test_start_error_while_tracing_keeps_tracing(tm):
    tm.start(3)
    with pytest.raises(ValueError):
        tm.start(0)
    assert tm.is_tracing()
    assert tm.get_traceback_limit() == 3
