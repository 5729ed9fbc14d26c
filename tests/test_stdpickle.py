"""Moving between the stdlib and ctracemalloc: Snapshot.load reads a file
written by the stdlib's tracemalloc.Snapshot.dump, and
Snapshot.dump(filename, format="pickle") writes one that the stdlib's
Snapshot.load reads (src/ctracemalloc/_core/pklread.c, pklwrite.c).

The reader runs no code from the file: anything but data and the two
snapshot classes is refused. Damaged files raise ValueError, never crash.
"""
import glob
import os
import pickle
import random
import subprocess
import tracemalloc

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from test_fileformat import RAW, check_valid, limit_st, trace_st
from tmhelpers import patience, plain_traces

pytestmark = pytest.mark.ctm_only


def stdlib_raw(snapshot):
    """The raw traces of a stdlib snapshot, as plain tuples."""
    return [tuple(t) for t in snapshot.traces._traces]


def ctm_from_pickle(ctm, tmp_path, data, name="std.pickle"):
    path = tmp_path / name
    path.write_bytes(data)
    return ctm.Snapshot.load(path)


def stdlib_pickle(raw, limit=5, **attributes):
    snapshot = tracemalloc.Snapshot(raw, limit)
    snapshot.__dict__.update(attributes)
    return pickle.dumps(snapshot, pickle.HIGHEST_PROTOCOL)


def traced_snapshot(nframe):
    """A real stdlib snapshot of this process, with shared tracebacks."""
    tracemalloc.start(nframe)
    try:
        keep = [str(i) * 3 for i in range(3000)]
        keep += [bytes(i % 50) for i in range(2000)]
        return tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
        del keep


# -- reading the stdlib's files ---------------------------------------------

@pytest.mark.parametrize("nframe", [1, 25])
def test_load_stdlib_dump(ctm, tmp_path, nframe):
    std = traced_snapshot(nframe)
    path = tmp_path / "std.pickle"
    std.dump(str(path))
    loaded = ctm.Snapshot.load(path)
    assert plain_traces(loaded) == stdlib_raw(std)
    assert loaded.traceback_limit == nframe
    for key in ("lineno", "filename", "traceback"):
        for cumulative in ((False, True) if key != "traceback" else (False,)):
            assert ([str(s) for s in loaded.statistics(key, cumulative)]
                    == [str(s) for s in std.statistics(key, cumulative)])


@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
def test_load_every_protocol(ctm, tmp_path, protocol):
    if protocol > pickle.HIGHEST_PROTOCOL:
        pytest.skip("protocol %d is newer than this Python" % protocol)
    data = pickle.dumps(tracemalloc.Snapshot(RAW, 5), protocol)
    loaded = ctm_from_pickle(ctm, tmp_path, data)
    assert plain_traces(loaded) == RAW
    assert loaded.traceback_limit == 5


def test_load_python_38_traces(ctm, tmp_path):
    """Python 3.6 to 3.8 wrote (domain, size, frames): no total_nframe."""
    raw = [(0, 10, (("a.py", 1),)), (1, 20, ())] * 2
    loaded = ctm_from_pickle(ctm, tmp_path, stdlib_pickle(raw, 1))
    assert plain_traces(loaded) == [t + (None,) for t in raw]


def test_repeated_trace_objects(ctm, tmp_path):
    """A list that holds one trace object several times pickles it once
    and refers to it again."""
    trace = (0, 10, (("a.py", 1),), 1)
    raw = [trace, (0, 5, (), 0), trace, trace]
    data = stdlib_pickle(raw)
    assert data.count(b"a.py") == 1
    assert plain_traces(ctm_from_pickle(ctm, tmp_path, data)) == raw


def test_load_attributes_and_limits(ctm, tmp_path):
    values = {"tag": "x", "n": 2**100, "neg": -2**70, "f": 1.5,
              "b": b"\0\xff", "nested": [(1, None), {"k": {1, 2}},
                                         frozenset({3})],
              "flags": (True, False)}
    data = stdlib_pickle(RAW, "limit", **values)
    loaded = ctm_from_pickle(ctm, tmp_path, data)
    assert loaded.traceback_limit == "limit"
    for name, value in values.items():
        assert getattr(loaded, name) == value
    assert plain_traces(loaded) == RAW


def test_load_runs_no_code(ctm, tmp_path):
    marker = tmp_path / "ran"

    class Evil:
        def __reduce__(self):
            return (os.system, ("touch %s" % marker,))

    data = stdlib_pickle(RAW, 5, evil=Evil())
    with pytest.raises(ValueError, match=r"refers to (posix|os)\.system"):
        ctm_from_pickle(ctm, tmp_path, data)
    assert not marker.exists()
    # an ordinary class is refused as well: the load would lose it
    data = stdlib_pickle(RAW, 5, when=__import__("datetime").date.today())
    with pytest.raises(ValueError, match=r"refers to datetime\.date"):
        ctm_from_pickle(ctm, tmp_path, data)


def test_pickle_of_other_objects(ctm, tmp_path):
    for obj, message in ([1, 2], "does not hold a tracemalloc.Snapshot"), \
            ((tracemalloc.Snapshot, 1), "does not hold"), \
            (tracemalloc.Filter(True, "x"), r"refers to tracemalloc\.Filter"):
        with pytest.raises(ValueError, match=message):
            ctm_from_pickle(ctm, tmp_path, pickle.dumps(obj, 4))


@pytest.mark.parametrize("raw, message", [
    ([(0, 1)], "invalid trace"),
    ([(0, -1, (), 1)], "invalid trace"),
    ([(0, 1, (("a.py", "x"),), 1)], "invalid trace"),
    ([(2**32, 1, (), 1)], "invalid trace"),
    ([(0, 1, (), 1)] * 2 + ["x"], "invalid trace"),
])
def test_invalid_traces(ctm, tmp_path, raw, message):
    with pytest.raises(ValueError, match=message) as info:
        ctm_from_pickle(ctm, tmp_path, stdlib_pickle(raw))
    assert info.value.__cause__ is not None


# -- writing files the stdlib reads -----------------------------------------

@pytest.mark.parametrize("nframe", [1, 25])
def test_stdlib_loads_our_pickle(ctm, tmp_path, nframe):
    ctm.start(nframe)
    keep = [str(i) * 3 for i in range(3000)]
    snapshot = ctm.take_snapshot()
    ctm.stop()
    del keep
    path = tmp_path / "ctm.pickle"
    snapshot.dump(path, format="pickle")
    std = tracemalloc.Snapshot.load(str(path))
    assert stdlib_raw(std) == plain_traces(snapshot)
    assert std.traceback_limit == nframe
    assert vars(std).keys() == {"traces", "traceback_limit"}
    assert ([str(s) for s in std.statistics("traceback")]
            == [str(s) for s in snapshot.statistics("traceback")])
    # and back
    assert plain_traces(ctm.Snapshot.load(path)) == plain_traces(snapshot)


def test_written_pickle_shares_tracebacks(ctm, tmp_path):
    """Like the stdlib's, each traceback is one object, memoised."""
    raw = [(0, i, (("a.py", 1), ("b.py", 2)), 2) for i in range(5000)]
    path = tmp_path / "ctm.pickle"
    ctm.Snapshot(raw, 1).dump(path, format="pickle")
    std = tracemalloc.Snapshot.load(str(path))
    traces = std.traces._traces
    assert len({id(t[2]) for t in traces}) == 1
    assert path.stat().st_size < 12 * len(raw)     # 11 bytes a trace
    assert path.stat().st_size <= len(stdlib_pickle(raw, 1))


def test_written_pickle_keeps_attributes(ctm, tmp_path):
    snapshot = ctm.Snapshot(RAW, "lim")
    snapshot.tag = {"a": [1, 2]}
    snapshot.date = __import__("datetime").date(2026, 12, 1)
    path = tmp_path / "ctm.pickle"
    snapshot.dump(path, format="pickle")
    std = tracemalloc.Snapshot.load(str(path))
    assert (std.traceback_limit, std.tag, std.date) == \
        ("lim", {"a": [1, 2]}, snapshot.date)
    assert list(vars(std)) == ["traces", "traceback_limit", "tag", "date"]
    # ours refuses the date (it would need to run code to make one)
    with pytest.raises(ValueError, match=r"datetime\.date"):
        ctm.Snapshot.load(path)


def test_dump_arguments(ctm, tmp_path):
    snapshot = ctm.Snapshot(RAW, 5)
    snapshot.dump(filename=tmp_path / "a")
    snapshot.dump(tmp_path / "b", format="ctracemalloc")
    assert (tmp_path / "a").read_bytes() == (tmp_path / "b").read_bytes()
    assert plain_traces(ctm.Snapshot.load(filename=tmp_path / "a")) == RAW
    with pytest.raises(ValueError, match="format must be"):
        snapshot.dump(tmp_path / "c", format="json")
    with pytest.raises(TypeError):
        snapshot.dump(tmp_path / "c", format=1)
    with pytest.raises(TypeError):
        snapshot.dump(tmp_path / "c", "pickle")     # keyword only
    with pytest.raises(IsADirectoryError):
        snapshot.dump(tmp_path, format="pickle")
    assert not (tmp_path / "c").exists()


any_limit = limit_st | st.lists(st.integers(), max_size=3)


@settings(max_examples=200, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(traces=st.lists(st.tuples(trace_st, st.integers(1, 3)), max_size=30),
       limit=any_limit,
       attributes=st.dictionaries(
           st.from_regex(r"[a-z][a-z0-9_]{0,5}", fullmatch=True).filter(
               lambda s: s not in ("traces", "traceback_limit")),
           any_limit, max_size=3))
def test_hypothesis_round_trips(ctm, tmp_path, traces, limit, attributes):
    raw = [trace for trace, repeat in traces for _ in range(repeat)]
    snapshot = ctm.Snapshot(raw, limit)
    snapshot.__dict__.update(attributes)
    path = tmp_path / "h.pickle"
    snapshot.dump(path, format="pickle")
    # the stdlib reads ours
    std = tracemalloc.Snapshot.load(str(path))
    assert stdlib_raw(std) == raw
    assert std.traceback_limit == limit
    # ours reads ours, and the stdlib's
    for data in (path.read_bytes(), pickle.dumps(std, 4)):
        loaded = ctm_from_pickle(ctm, tmp_path, data)
        assert plain_traces(loaded) == raw
        assert loaded.traceback_limit == limit
        assert type(loaded.traceback_limit) is type(limit)
        assert {k: getattr(loaded, k) for k in attributes} == attributes


# -- other Pythons -----------------------------------------------------------

def other_pythons():
    root = os.environ.get("PYENV_ROOT") or os.path.expanduser("~/.pyenv")
    found = []
    for minor in ("3.9", "3.10", "3.11", "3.12", "3.13"):
        for exe in sorted(glob.glob(os.path.join(root, "versions", minor + ".*",
                                                 "bin", "python3"))):
            found.append(exe)
            break
    return found


def test_other_pythons(ctm, tmp_path):
    """Files move between every supported Python's stdlib and this one's
    ctracemalloc, both ways."""
    pythons = other_pythons()
    if not pythons:
        pytest.skip("no pyenv Pythons to exchange files with")
    ours = tmp_path / "ours.pickle"
    ctm.Snapshot(RAW, 5).dump(ours, format="pickle")
    for exe in pythons:
        theirs = tmp_path / "theirs.pickle"
        code = (
            "import sys, tracemalloc\n"
            "s = tracemalloc.Snapshot.load(sys.argv[1])\n"
            "assert [tuple(t) for t in s.traces._traces] == %r\n"
            "assert s.traceback_limit == 5\n"
            "tracemalloc.Snapshot(s.traces._traces, 7).dump(sys.argv[2])\n"
            % (RAW,))
        env = {k: v for k, v in os.environ.items()
               if not k.startswith("PYTHON")}
        subprocess.run([exe, "-c", code, str(ours), str(theirs)], check=True,
                       env=env, timeout=patience(60))
        loaded = ctm.Snapshot.load(theirs)
        assert plain_traces(loaded) == RAW, exe
        assert loaded.traceback_limit == 7


# -- damaged files -----------------------------------------------------------

def small_pickle():
    return stdlib_pickle(RAW, 5, tag="x")


def try_load(ctm, tmp_path, data):
    """ValueError, or a snapshot that works."""
    try:
        snapshot = ctm_from_pickle(ctm, tmp_path, data)
    except ValueError as exc:
        assert str(exc)
        return exc
    check_valid(ctm, snapshot)
    return snapshot


def test_truncated_at_every_offset(ctm, tmp_path):
    data = small_pickle()
    for n in range(1, len(data)):
        with pytest.raises(ValueError, match="truncated|corrupted"):
            ctm_from_pickle(ctm, tmp_path, data[:n])


def test_bit_flips(ctm, tmp_path):
    data = small_pickle()
    for i in range(len(data)):
        for bit in range(8):
            damaged = bytearray(data)
            damaged[i] ^= 1 << bit
            try_load(ctm, tmp_path, bytes(damaged))


def test_random_and_spliced(ctm, tmp_path):
    rng = random.Random(11)
    a = small_pickle()
    b = stdlib_pickle(RAW[::-1] * 2, None)
    for _ in range(1500):
        n = rng.randrange(120)
        junk = bytes(rng.randrange(256) for _ in range(n))
        try_load(ctm, tmp_path, b"\x80\x04" + junk)
        i, j = rng.randrange(len(a)), rng.randrange(len(b))
        try_load(ctm, tmp_path, a[:i] + b[j:])


def test_hostile_structures(ctm, tmp_path):
    head = b"\x80\x04"
    cases = {
        # a million nested tuples used as a dict key: hashing would recurse
        head + b"}" + b")" + b"\x85" * 100000 + b"N" + b"s.":
            "nests too deeply",
        head + b"N\x94h\x05.": "memo index not defined",
        head + b"Nr\x00\x00\x00\x10.": "memo index out of order",
        head + b"0.": "no mark",
        head + b"(0t.": "no mark",      # POP with nothing above the mark
        head + b"t.": "no mark",
        head + b"\xff": "unsupported pickle opcode 0xff",
        head + b"X\xff\xff\xff\xff": "truncated",
        head + b"\x8b\x00\x00\x00\xff": "negative LONG4 length",
        head + b"\x95" + (2**40).to_bytes(8, "little"): "truncated",
        head + b"\x8c\x01\xff.": "not valid UTF-8",
        head + b"ctracemalloc\nSnapshot\n)\x81ctracemalloc\nSnapshot\n)\x81.":
            "more than one instance",
        head + b"ctracemalloc\nSnapshot\nK\x01\x85\x81.": "with arguments",
        head + b"ctracemalloc\nSnapshot\n)\x81K\x01b.": "state is not a dict",
        head + b"]K\x01b.": "BUILD of something",
        head + b"]K\x01K\x02s.": "SETITEM to a non-dict",
        head + b"K\x01K\x02s.": "stack underflow",
        head + b"ctracemalloc\n_Traces\n)\x81K\x01K\x02s.": "non-dict",
        head + b"cos\nsystem\n.": r"refers to os\.system",
        head + b"\x8c\x02os\x8c\x06system\x93.": r"refers to os\.system",
        head + b"\x80\x09": "unsupported pickle protocol",
        b"\x80\x04}]K\x01s.": "invalid content",    # unhashable key
        head + b"K\x01.": "does not hold a tracemalloc.Snapshot",
    }
    for data, message in cases.items():
        with pytest.raises(ValueError, match=message):
            ctm_from_pickle(ctm, tmp_path, data)


def test_trailing_bytes_ignored_like_pickle(ctm, tmp_path):
    data = small_pickle() + b"garbage"
    assert plain_traces(ctm_from_pickle(ctm, tmp_path, data)) == RAW
    assert pickle.loads(data).tag == "x"
