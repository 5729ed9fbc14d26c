"""The snapshot file format (src/ctracemalloc/_core/ffspec.h, written by
ffwrite.c, read by ffread.c and ffitems.c): Snapshot.dump, Snapshot.load
and pickling.

Round trips, then damaged files. The damage tests use an independent
writer of the format, in Python, written from the documentation at the
top of ffspec.h (it must produce the same bytes as the C writer):
with it, files with valid checks but invalid content reach the parser,
which the checks would otherwise stop first.

Every load of a damaged file must raise ValueError (OSError for I/O) or
return a valid snapshot; it must never crash or hang.
"""
import os
import pickle
import random
import struct
import threading

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from tmhelpers import plain_traces

pytestmark = pytest.mark.ctm_only

MAGIC = b"\x89CTM\r\n\x1a\n"
(END, COUNTS, STRINGS, FRAMES, TRACEBACKS, TRACES, LIMIT, EXTRA,
 FUNCTIONS) = range(9)


@pytest.fixture(scope="module")
def ctm():
    from conftest import require_ctm
    return require_ctm()


# -- an independent implementation of the format -------------------------

M64 = 2**64 - 1
P1 = 0x9E3779B185EBCA87
P2 = 0xC2B2AE3D27D4EB4F
P3 = 0x165667B19E3779F9
P4 = 0x85EBCA77C2B2AE63
P5 = 0x27D4EB2F165667C5


def _rotl(x, r):
    return ((x << r) | (x >> (64 - r))) & M64


def _round(acc, value):
    return (_rotl((acc + value * P2) & M64, 31) * P1) & M64


def _merge(acc, value):
    return ((acc ^ _round(0, value)) * P1 + P4) & M64


def xxh64(data):
    """XXH64 with seed 0."""
    n = len(data)
    i = 0
    u64 = lambda j: int.from_bytes(data[j:j + 8], "little")  # noqa: E731
    if n >= 32:
        v = [(P1 + P2) & M64, P2, 0, (-P1) & M64]
        while i + 32 <= n:
            v = [_round(v[k], u64(i + 8 * k)) for k in range(4)]
            i += 32
        h = (_rotl(v[0], 1) + _rotl(v[1], 7) + _rotl(v[2], 12)
             + _rotl(v[3], 18)) & M64
        for k in range(4):
            h = _merge(h, v[k])
    else:
        h = P5
    h = (h + n) & M64
    while i + 8 <= n:
        h = (_rotl(h ^ _round(0, u64(i)), 27) * P1 + P4) & M64
        i += 8
    if i + 4 <= n:
        h ^= (int.from_bytes(data[i:i + 4], "little") * P1) & M64
        h = (_rotl(h, 23) * P2 + P3) & M64
        i += 4
    while i < n:
        h = (_rotl(h ^ ((data[i] * P5) & M64), 11) * P1) & M64
        i += 1
    h ^= h >> 33
    h = (h * P2) & M64
    h ^= h >> 29
    h = (h * P3) & M64
    return h ^ (h >> 32)


def test_xxh64_vectors():
    assert xxh64(b"") == 0xEF46DB3751D8E999
    try:
        import xxhash
    except ImportError:
        return
    rng = random.Random(5)
    for n in list(range(70)) + [100, 1000]:
        data = bytes(rng.randrange(256) for _ in range(n))
        assert xxh64(data) == xxhash.xxh64_intdigest(data)


def varint(v):
    assert 0 <= v < 2**64
    out = bytearray()
    while v >= 0x80:
        out.append((v & 0x7F) | 0x80)
        v >>= 7
    out.append(v)
    return bytes(out)


def zigzag(n):
    return 2 * n if n >= 0 else -2 * n - 1


def read_varint(data, pos):
    value = shift = 0
    while True:
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, pos


def assemble(sections, major=2, minor=1):
    """A file from (tag, payload) pairs, with correct checks."""
    out = bytearray(MAGIC + struct.pack("<HH", major, minor))
    for tag, payload in sections:
        out += bytes([tag]) + varint(len(payload)) + payload
        out += struct.pack("<Q", xxh64(bytes(out)))
    return bytes(out)


def split(data):
    """The (tag, payload) sections of a well-framed file, and the header."""
    pos = 12
    sections = []
    while pos < len(data):
        tag = data[pos]
        length, pos = read_varint(data, pos + 1)
        sections.append((tag, bytes(data[pos:pos + length])))
        pos += length + 8
    return data[:12], sections


SIZE_LEN = (1, 2, 3, 8)


def size_code(v):
    return (v > 0xFF) + (v > 0xFFFF) + (v > 0xFFFFFF)


def traces_payload(traces):
    """TRACES payload for [(traceback, domain, size)]."""
    runs = bytearray()
    nruns = 0
    prev_tb, prev_dom = -1, 0
    i = 0
    while i < len(traces):
        tb, dom, _ = traces[i]
        j = i + 1
        while j < len(traces) and traces[j][:2] == (tb, dom):
            j += 1
        explicit_tb = tb != prev_tb + 1
        explicit_dom = dom != prev_dom
        runs += varint(((j - i - 1) << 2) | explicit_tb | explicit_dom << 1)
        if explicit_tb:
            runs += varint(zigzag(tb - prev_tb - 1))
        if explicit_dom:
            runs += varint(dom)
        nruns += 1
        prev_tb, prev_dom = tb, dom
        i = j
    ctrl = bytearray((len(traces) + 3) // 4)
    data = bytearray()
    for i, (_, _, size) in enumerate(traces):
        code = size_code(size)
        ctrl[i // 4] |= code << (2 * (i % 4))
        data += size.to_bytes(SIZE_LEN[code], "little")
    return (varint(len(traces)) + varint(nruns) + bytes(runs) + bytes(ctrl)
            + bytes(data))


def functions_payload(functions):
    """FUNCTIONS: frames by gap from the previous named one."""
    out, previous = bytearray(varint(len(functions))), -1
    for frame in sorted(functions):
        out += varint(frame - previous - 1) + varint(functions[frame])
        previous = frame
    return bytes(out)


def limit_payload(limit):
    if limit is None:
        return b"\x00"
    if type(limit) is int and -2**63 <= limit < 2**63:
        return b"\x01" + varint(zigzag(limit))
    return b"\x02" + pickle.dumps(limit, 4)


class Tables:
    """The arrays of a snapshot, built from raw traces as snapdata.c's
    builder does (first seen first)."""

    def __init__(self, raw):
        self.strings, self.frames, self.tracebacks, self.traces = \
            [], [], [], []
        # frame index -> string index of its function name (FUNCTIONS)
        self.functions = {}
        sx, fx, tx = {}, {}, {}
        for trace in raw:
            domain, size, frames = trace[:3]
            total = trace[3] if len(trace) > 3 else None
            ids = []
            for filename, lineno in frames:
                s = sx.setdefault(filename, len(sx))
                if s == len(self.strings):
                    self.strings.append(filename)
                f = fx.setdefault((s, lineno), len(fx))
                if f == len(self.frames):
                    self.frames.append((s, lineno))
                ids.append(f)
            key = (tuple(ids), total)
            t = tx.setdefault(key, len(tx))
            if t == len(self.tracebacks):
                self.tracebacks.append(key)
            self.traces.append((t, domain, size))

    def sections(self, limit=None, extra=None, major=2):
        """The sections the C writer makes, in one block each (it cuts
        them at 64 KiB or 16384 traces: keep test snapshots smaller).
        major=1: those of format 1.0, whose frame references are
        varints."""
        nrefs = sum(len(ids) for ids, _ in self.tracebacks)
        secs = [(COUNTS, b"".join(varint(n) for n in (
            len(self.strings), len(self.frames), len(self.tracebacks),
            nrefs, len(self.traces))))]
        if self.strings:
            secs.append((STRINGS, varint(len(self.strings)) + b"".join(
                varint(len(b)) + b for b in
                (s.encode("utf-8", "surrogatepass") for s in self.strings))))
        if self.frames:
            secs.append((FRAMES, varint(len(self.frames)) + b"".join(
                varint(s) + varint(zigzag(line)) for s, line in self.frames)))
        if self.functions:
            secs.append((FUNCTIONS, functions_payload(self.functions)))
        if self.tracebacks:
            if major == 1:
                head, ref = b"", varint
            else:
                width = next(w for w in (1, 2, 4)
                             if len(self.frames) <= 1 << (8 * w))
                head = bytes([width])
                ref = lambda f: f.to_bytes(width, "little")  # noqa: E731
            secs.append((TRACEBACKS, varint(len(self.tracebacks)) + head
                         + b"".join(
                             varint(len(ids))
                             + varint(0 if total is None else total + 1)
                             + b"".join(ref(f) for f in ids)
                             for ids, total in self.tracebacks)))
        if self.traces:
            secs.append((TRACES, traces_payload(self.traces)))
        secs.append((LIMIT, limit_payload(limit)))
        if extra:
            secs.append((EXTRA, pickle.dumps(extra, 4)))
        secs.append((END, b""))
        return secs


# -- helpers ---------------------------------------------------------------

def dump_bytes(snapshot):
    """The format in memory: what pickling stores (ctm_dump_bytes)."""
    func, args = snapshot.__reduce__()
    return args[0]


def load_bytes(ctm, data):
    """ctm_load_bytes, through the pickling entry point."""
    func, _ = ctm.Snapshot([], None).__reduce__()
    return func(data)


def load_file(ctm, tmp_path, data, name="snap.ctm"):
    path = tmp_path / name
    path.write_bytes(data)
    return ctm.Snapshot.load(path)


def check_valid(ctm, snapshot):
    """A loaded snapshot is usable and round-trips."""
    traces = plain_traces(snapshot)
    for key, cumulative in (("traceback", False), ("filename", True)):
        try:
            snapshot.statistics(key, cumulative=cumulative)
        except OverflowError:
            pass    # sizes that add up beyond 64 bits: valid, unsummable
    again = load_bytes(ctm, dump_bytes(snapshot))
    assert plain_traces(again) == traces
    assert frame_functions(again) == frame_functions(snapshot)


def frame_functions(snapshot):
    """(filename, lineno, function) of every frame the traces name."""
    return sorted({(f.filename, f.lineno, f.function)
                   for t in snapshot.traces for f in t.traceback},
                  key=repr)


def try_load(ctm, data):
    """Load damaged data: ValueError, or a valid snapshot."""
    try:
        snapshot = load_bytes(ctm, data)
    except ValueError as exc:
        assert str(exc)
        return exc
    check_valid(ctm, snapshot)
    return snapshot


RAW = [
    (0, 10, (("a.py", 1), ("b.py", 2)), 5),
    (0, 20, (("a.py", 1), ("b.py", 2)), 5),
    (0, 30, (("a.py", 1), ("b.py", 2)), 5),
    (1, 2**64 - 1, (("\udc80\xe9\u20ac\U0001f600.py", -3),), None),
    (2**32 - 1, 0, (), 0),
    (0, 7, (("a.py", 1), ("b.py", 2)), None),
    (0, 300, (("b.py", 2),), 2**32 - 2),
    (0, 70000, (("b.py", 2),), 2**32 - 2),
    (0, 2**24, (("b.py", 2),), 2**32 - 2),
    (7, 1, (("a.py", 2**31 - 1), ("a.py", -2**31)), 3),
]


# -- round trips -------------------------------------------------------------

@pytest.mark.parametrize("limit", [
    None, 0, 1, 25, -1, 2**63 - 1, -2**63, 2**63, -2**64, 10**30,
    True, False, "text", 1.5, (1, 2)])
def test_round_trip_limit(ctm, tmp_path, limit):
    snapshot = ctm.Snapshot(RAW, limit)
    path = tmp_path / "snap"
    snapshot.dump(path)
    loaded = ctm.Snapshot.load(path)
    assert plain_traces(loaded) == plain_traces(snapshot)
    assert loaded.traceback_limit == limit
    assert type(loaded.traceback_limit) is type(limit)
    loaded = pickle.loads(pickle.dumps(snapshot))
    assert plain_traces(loaded) == plain_traces(snapshot)
    assert type(loaded.traceback_limit) is type(limit)


def test_round_trip_values(ctm, tmp_path):
    snapshot = ctm.Snapshot(RAW, 5)
    snapshot.dump(str(tmp_path / "a"))
    loaded = ctm.Snapshot.load(str(tmp_path / "a"))
    assert plain_traces(loaded) == RAW
    # Loaded data is identical: dumping it again gives the same bytes.
    loaded.dump(str(tmp_path / "b"))
    assert (tmp_path / "a").read_bytes() == (tmp_path / "b").read_bytes()
    assert dump_bytes(loaded) == (tmp_path / "a").read_bytes()


def many_frames(n):
    """Traces naming n distinct frames: frame references of one, two or
    four bytes."""
    return [(0, i, (("f%d.py" % (i % 7), i),) * (1 + i % 3), i % 5)
            for i in range(n)]


def test_matches_independent_writer(ctm):
    """The C writer produces exactly what the documented format says."""
    for raw, limit, extra in [
            (RAW, 5, None), ([], None, None), (RAW, "x", {"a": 1}),
            ([(3, 5, (), None)] * 10, -7, None),
            (many_frames(256), 3, None), (many_frames(257), 3, None)]:
        snapshot = ctm.Snapshot(raw, limit)
        if extra:
            for key, value in extra.items():
                setattr(snapshot, key, value)
        expected = assemble(Tables(raw).sections(limit, extra))
        assert dump_bytes(snapshot) == expected
        loaded = load_bytes(ctm, expected)
        assert plain_traces(loaded) == plain_traces(snapshot)


def test_reads_version_1(ctm):
    """Files of format 1.0 (frame references as varints) still load."""
    for raw in (RAW, many_frames(300), many_frames(20000)):
        data = assemble(Tables(raw).sections(5, major=1), major=1)
        assert plain_traces(load_bytes(ctm, data)) == plain_traces(
            ctm.Snapshot(raw, 5))
    tables = Tables(RAW)
    tables.tracebacks.append(((99,), 1))
    with pytest.raises(ValueError, match="reference out of range"):
        load_bytes(ctm, assemble(tables.sections(5, major=1), major=1))


def test_four_byte_references(ctm):
    """More than 65536 frames: the C writer's blocks (several, unlike the
    independent writer's one a kind) say four-byte references, and both
    files load to the same traces."""
    raw = many_frames(65537)
    data = dump_bytes(ctm.Snapshot(raw, 3))
    widths = {payload[read_varint(payload, 0)[1]]
              for tag, payload in split(data)[1] if tag == TRACEBACKS}
    assert widths == {4}
    expected = plain_traces(ctm.Snapshot(raw, 3))
    assert plain_traces(load_bytes(ctm, data)) == expected
    ours = assemble(Tables(raw).sections(3))
    assert plain_traces(load_bytes(ctm, ours)) == expected


def test_empty(ctm, tmp_path):
    snapshot = ctm.Snapshot([], None)
    snapshot.dump(tmp_path / "e")
    loaded = ctm.Snapshot.load(tmp_path / "e")
    assert plain_traces(loaded) == []
    assert loaded.traceback_limit is None
    assert len((tmp_path / "e").read_bytes()) < 64


def test_attributes(ctm, tmp_path):
    snapshot = ctm.Snapshot(RAW, 1)
    snapshot.note = "é\udc80"
    snapshot.data = {"nested": [1, 2.5, None]}
    snapshot.dump(tmp_path / "x")
    loaded = ctm.Snapshot.load(tmp_path / "x")
    assert loaded.note == "é\udc80"
    assert loaded.data == {"nested": [1, 2.5, None]}


def test_unpicklable_attribute_keeps_old_file(ctm, tmp_path):
    """The attributes are pickled before the file is opened: a failure
    leaves an existing file as it was."""
    path = tmp_path / "keep"
    ctm.Snapshot(RAW, 1).dump(path)
    before = path.read_bytes()
    snapshot = ctm.Snapshot(RAW, 2)
    snapshot.callback = lambda: None
    with pytest.raises(Exception):
        snapshot.dump(path)
    assert path.read_bytes() == before


def test_paths(ctm, tmp_path):
    snapshot = ctm.Snapshot(RAW, 1)
    names = ["plain", "\xe9t\xe9 \u20ac"]
    try:
        os.fsencode("\udcff")
        names.append("surrogate-\udcff")
    except UnicodeEncodeError:
        pass
    for name in names:
        path = tmp_path / name
        for form in (str(path), os.fsencode(path), path):
            snapshot.dump(form)
            assert plain_traces(ctm.Snapshot.load(form)) == RAW


def test_missing_file(ctm, tmp_path):
    with pytest.raises(FileNotFoundError) as info:
        ctm.Snapshot.load(tmp_path / "missing")
    assert info.value.filename == str(tmp_path / "missing")
    with pytest.raises(FileNotFoundError):
        ctm.Snapshot(RAW, 1).dump(tmp_path / "no" / "dir")
    with pytest.raises(IsADirectoryError):
        ctm.Snapshot.load(tmp_path)
    with pytest.raises(TypeError):
        ctm.Snapshot.load(42)


def test_pipe(ctm, tmp_path):
    """A file without a size (a pipe) loads too."""
    data = dump_bytes(ctm.Snapshot(RAW * 1000, 3))
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)

    def write():
        with open(fifo, "wb") as f:
            f.write(data)
    writer = threading.Thread(target=write)
    writer.start()
    try:
        loaded = ctm.Snapshot.load(fifo)
    finally:
        writer.join()
    assert plain_traces(loaded) == RAW * 1000


def test_large_and_blocks(ctm, tmp_path):
    """Many traces, tracebacks and strings: several sections of each
    kind, runs across section boundaries, long strings."""
    rng = random.Random(3)
    raw = []
    names = ["f%d%s.py" % (i, "x" * rng.randrange(100)) for i in range(3000)]
    names.append("big" * 100000)
    for i in range(20000):
        frames = tuple((rng.choice(names), rng.randrange(-5, 10**6))
                       for _ in range(rng.randrange(4)))
        for _ in range(rng.choice([1, 1, 2, 20])):
            raw.append((rng.choice([0, 0, 0, 1, 2**32 - 1]),
                        rng.choice([0, 1, 255, 256, 65535, 65536,
                                    2**24 - 1, 2**24, 2**64 - 1,
                                    rng.randrange(2**rng.randrange(64))]),
                        frames, rng.choice([None, len(frames), 99])))
    snapshot = ctm.Snapshot(raw, 10)
    snapshot.dump(tmp_path / "big")
    data = (tmp_path / "big").read_bytes()
    loaded = ctm.Snapshot.load(tmp_path / "big")
    assert plain_traces(loaded) == plain_traces(snapshot)
    assert dump_bytes(loaded) == data
    tags = [tag for tag, _ in split(data)[1]]
    for tag in (STRINGS, FRAMES, TRACEBACKS, TRACES):
        assert tags.count(tag) > 1


# -- hypothesis round trip -------------------------------------------------

# Any str, lone surrogates included (rare in st.characters: add some).
any_text = (st.text(st.characters(codec=None, categories=None), max_size=8)
            | st.sampled_from(["a.py", "b.py", "\xe9", "\udc80x",
                               "\ud83d", "\ud83d\ude00", "\U0001f600"]))
frames_st = st.lists(st.tuples(any_text, st.integers(-2**31, 2**31 - 1)),
                     max_size=4).map(tuple)
trace_st = st.tuples(
    st.sampled_from([0, 0, 1, 2**32 - 1]) | st.integers(0, 2**32 - 1),
    st.sampled_from([0, 1, 127, 128, 255, 256, 2**24, 2**64 - 1])
    | st.integers(0, 2**64 - 1),
    frames_st,
    st.none() | st.integers(0, 2**32 - 2))
limit_st = (st.none() | st.integers() | st.booleans() | st.text(max_size=3)
            | st.floats(allow_nan=False))


@settings(max_examples=300, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(traces=st.lists(st.tuples(trace_st, st.integers(1, 5)), max_size=40),
       limit=limit_st)
def test_hypothesis_round_trip(ctm, tmp_path, traces, limit):
    raw = [trace for trace, repeat in traces for _ in range(repeat)]
    snapshot = ctm.Snapshot(raw, limit)
    path = tmp_path / "h"
    snapshot.dump(path)
    data = path.read_bytes()
    assert data == assemble(Tables(raw).sections(limit))
    for loaded in (ctm.Snapshot.load(path), load_bytes(ctm, data)):
        assert plain_traces(loaded) == raw
        assert loaded.traceback_limit == limit
        assert type(loaded.traceback_limit) is type(limit)


# -- damaged files -----------------------------------------------------------

def small_file(ctm):
    snapshot = ctm.Snapshot(RAW, 5)
    snapshot.tag = "x"
    return dump_bytes(snapshot)


def test_truncated_at_every_offset(ctm, tmp_path):
    data = small_file(ctm)
    for n in range(len(data)):
        with pytest.raises(ValueError) as info:
            load_bytes(ctm, data[:n])
        msg = str(info.value)
        if n == 0:
            assert "empty" in msg
        else:
            assert "truncated snapshot file" in msg, (n, msg)
    # and through a file (the streaming reader)
    for n in range(0, len(data), 7):
        with pytest.raises(ValueError, match="truncated|not a"):
            load_file(ctm, tmp_path, data[:n])


def test_bit_flips(ctm, tmp_path):
    data = small_file(ctm)
    for i in range(len(data)):
        for bit in range(8):
            damaged = bytearray(data)
            damaged[i] ^= 1 << bit
            with pytest.raises(ValueError) as info:
                load_bytes(ctm, bytes(damaged))
            assert str(info.value)
    for i in range(0, len(data), 5):
        damaged = bytearray(data)
        damaged[i] ^= 0x10
        with pytest.raises(ValueError):
            load_file(ctm, tmp_path, bytes(damaged))


def test_trailing_data(ctm):
    data = small_file(ctm)
    with pytest.raises(ValueError, match="after the end"):
        load_bytes(ctm, data + b"\0")
    with pytest.raises(ValueError, match="after the end"):
        load_bytes(ctm, data + data)


def test_random_bytes(ctm):
    rng = random.Random(7)
    for _ in range(2000):
        n = rng.randrange(200)
        data = bytes(rng.randrange(256) for _ in range(n))
        if rng.random() < 0.5:
            data = MAGIC + b"\1\0\0\0" + data
        with pytest.raises(ValueError):
            load_bytes(ctm, data)


def test_spliced_files(ctm):
    a = small_file(ctm)
    b = dump_bytes(ctm.Snapshot(RAW[::-1] * 3, None))
    for i in range(1, len(a)):
        for j in range(0, len(b), 3):
            spliced = a[:i] + b[j:]
            if spliced in (a, b):
                continue
            try_load(ctm, spliced)


def test_not_a_snapshot(ctm, tmp_path):
    with pytest.raises(ValueError, match="not a ctracemalloc snapshot"):
        load_bytes(ctm, b"hello, world")
    with pytest.raises(ValueError, match="empty"):
        load_bytes(ctm, b"")
    with pytest.raises(ValueError, match="empty"):
        ctm.Snapshot.load(os.devnull)


def test_versions(ctm):
    secs = Tables(RAW).sections(5)
    with pytest.raises(ValueError,
                       match=r"unsupported snapshot format version 9\.0"):
        load_bytes(ctm, assemble(secs, major=9, minor=0))
    with pytest.raises(ValueError,
                       match=r"unsupported snapshot format version 0\.3"):
        load_bytes(ctm, assemble(secs, major=0, minor=3))
    # A newer minor version: unknown sections are skipped, and fields
    # added at the end of known sections are ignored.
    newer = [(200, b"future")] + [
        (tag, payload + (b"\xff\x01" if tag != END else b""))
        for tag, payload in secs]
    newer.insert(4, (99, b""))
    loaded = load_bytes(ctm, assemble(newer, minor=2))
    assert plain_traces(loaded) == RAW
    assert loaded.traceback_limit == 5
    # ... but not in a file of this minor version
    with pytest.raises(ValueError, match="unknown section"):
        load_bytes(ctm, assemble(newer[:1] + secs))
    with pytest.raises(ValueError, match="unexpected bytes"):
        load_bytes(ctm, assemble(newer[1:]))


def wide_reference(tables, ref):
    """Enough frames for two-byte references, and one just past them."""
    tables.frames.extend((0, line) for line in range(100, ref + 100
                                                     - len(tables.frames)))
    assert len(tables.frames) == ref
    tables.tracebacks.append(((1, 0, ref), 1))


@pytest.mark.parametrize("mutate, message", [
    (lambda t: t.strings.append("a.py"), "duplicate string"),
    (lambda t: t.frames.append(t.frames[0]), "duplicate frame"),
    (lambda t: t.tracebacks.append(t.tracebacks[0]), "duplicate traceback"),
    (lambda t: t.frames.append((99, 1)), "filename index out of range"),
    (lambda t: t.tracebacks.append(((99,), 1)), "reference out of range"),
    (lambda t: wide_reference(t, 300), "reference out of range"),
    (lambda t: t.traces.append((99, 0, 1)), "traceback index out of range"),
    (lambda t: t.traces.append((-5, 0, 1)), "traceback index out of range"),
    (lambda t: t.frames.append((0, 2**31)), "line number out of range"),
    (lambda t: t.tracebacks.append(((), 2**32)), "total_nframe out of range"),
])
def test_invalid_content(ctm, mutate, message):
    tables = Tables(RAW)
    mutate(tables)
    with pytest.raises(ValueError, match=message):
        load_bytes(ctm, assemble(tables.sections(5)))


def test_invalid_structure(ctm):
    tables = Tables(RAW)
    secs = tables.sections(5)
    by_tag = dict(secs)

    def bad(sections, message):
        with pytest.raises(ValueError, match=message):
            load_bytes(ctm, assemble(sections))

    bad([s for s in secs if s[0] != COUNTS], "COUNTS section must come first")
    bad([s for s in secs if s[0] != LIMIT], "no traceback limit")
    bad([s for s in secs if s[0] != END], "truncated")
    bad([s for s in secs if s[0] != FRAMES], "fewer frames")
    bad([s for s in secs if s[0] != TRACES], "fewer traces")
    bad(secs[:1] + secs[2:3] + secs[1:2] + secs[3:], "fewer strings")
    bad(secs[:3] + secs[1:2] + secs[3:], "out of order")
    bad(secs[:-1] + [(LIMIT, b"\x00"), (END, b"")], "repeated")
    bad([(t, p + b"\0" if t == FRAMES else p) for t, p in secs],
        "unexpected bytes")
    bad([(t, b"\x07" if t == LIMIT else p) for t, p in secs],
        "unknown kind")
    bad([(t, b"\x01\x80" if t == LIMIT else p) for t, p in secs],
        "malformed")
    bad([(t, p[:-1] if t == TRACES else p) for t, p in secs], "malformed")
    for width in (0, 3, 8, 255):
        bad([(t, p[:1] + bytes([width]) + p[2:] if t == TRACEBACKS else p)
             for t, p in secs], "bad frame reference width")
    bad([(t, p[:2] if t == TRACEBACKS else p) for t, p in secs],
        "malformed")
    bad([(t, b"\x01\x01\x00\xff" if t == TRACES else p) for t, p in secs],
        "bad size codes|fewer traces")
    bad(secs[:-1] + [(EXTRA, pickle.dumps([1], 4)), (END, b"")],
        "not a dict")
    bad(secs[:-1] + [(EXTRA, b"\x80\x04garbage."), (END, b"")],
        "cannot unpickle")
    bad([(t, b"\x01\x01\xff\xfe" if t == STRINGS else p) for t, p in secs],
        "not valid UTF-8")
    bad([(COUNTS, b"\0\0\0\0\0"), (LIMIT, b"\0"), (TRACES, b""), (END, b"")],
        "out of order")
    # runs that do not add up to the section's count
    bad([(t, varint(3) + varint(1) + varint(1 << 2) + b"\0\1\1\1"
          if t == TRACES else p) for t, p in secs], "shorter|fewer")
    bad([(t, varint(1) + varint(1) + varint(5 << 2) + b"\0\1"
          if t == TRACES else p) for t, p in secs], "longer")
    assert by_tag[END] == b""


def named_tables():
    """RAW's tables with function names: frame 0 (a.py:1) is "f",
    frame 2 (the odd filename) "C.m"; b.py:2 has none."""
    tables = Tables(RAW)
    tables.strings += ["f", "C.m"]
    n = len(tables.strings)
    tables.functions = {0: n - 2, 2: n - 1}
    return tables


def test_functions_section(ctm):
    """FUNCTIONS (2.1) names frames; the C writer writes what the
    independent one does, and what it reads back."""
    loaded = load_bytes(ctm, assemble(named_tables().sections(5)))
    assert plain_traces(loaded) == plain_traces(ctm.Snapshot(RAW, 5))
    names = {(f[0], f[1]): f[2] for f in frame_functions(loaded)}
    assert names[("a.py", 1)] == "f"
    assert names[("\udc80\xe9\u20ac\U0001f600.py", -3)] == "C.m"
    assert names[("b.py", 2)] is None
    again = dump_bytes(loaded)
    assert dict(split(again)[1])[FUNCTIONS] == functions_payload(
        named_tables().functions)
    assert frame_functions(load_bytes(ctm, again)) == frame_functions(loaded)
    # no name, no section
    assert FUNCTIONS not in dict(split(dump_bytes(ctm.Snapshot(RAW, 5)))[1])


def test_reads_version_2_0(ctm):
    """A file of 2.0 (no FUNCTIONS section) loads, without names; one
    that has the section is damaged: 2.0 does not know tag 8."""
    loaded = load_bytes(ctm, assemble(Tables(RAW).sections(5), minor=0))
    assert plain_traces(loaded) == RAW
    assert {f[2] for f in frame_functions(loaded)} == {None}
    with pytest.raises(ValueError, match="unknown section"):
        load_bytes(ctm, assemble(named_tables().sections(5), minor=0))


@pytest.mark.parametrize("payload, message", [
    (varint(1) + varint(5) + varint(0), "function frame index out of range"),
    (varint(2) + varint(0) + varint(0) + varint(4) + varint(0),
     "function frame index out of range"),
    (varint(1) + varint(2**64 - 1) + varint(0),
     "function frame index out of range"),
    (varint(1) + varint(0) + varint(99), "function name index out of range"),
    (varint(2) + varint(0) + varint(0), "malformed"),
    (varint(1) + varint(0) + varint(0) + b"\0", "unexpected bytes"),
])
def test_invalid_functions(ctm, payload, message):
    """RAW has 5 frames: a gap past the last one, a name that is no
    string, a short or long payload."""
    secs = [(t, payload if t == FUNCTIONS else p)
            for t, p in named_tables().sections(5)]
    with pytest.raises(ValueError, match=message):
        load_bytes(ctm, assemble(secs))


def test_functions_section_order(ctm):
    secs = named_tables().sections(5)
    tags = [t for t, _ in secs]
    i = tags.index(FUNCTIONS)
    functions = secs[i]
    rest = secs[:i] + secs[i + 1:]
    # before FRAMES: the frames it names are not there yet
    j = tags.index(FRAMES)
    with pytest.raises(ValueError, match="fewer frames"):
        load_bytes(ctm, assemble(rest[:j] + [functions] + rest[j:]))
    # after TRACEBACKS
    k = [t for t, _ in rest].index(TRACES)
    with pytest.raises(ValueError, match="out of order"):
        load_bytes(ctm, assemble(rest[:k] + [functions] + rest[k:]))
    # repeated sections continue from the frame named last
    two = [(FUNCTIONS, varint(1) + varint(0) + varint(0)),
           (FUNCTIONS, varint(1) + varint(0) + varint(1))]
    loaded = load_bytes(ctm, assemble(secs[:i] + two + secs[i + 1:]))
    names = {(f[0], f[1]): f[2] for f in frame_functions(loaded)}
    assert names[("a.py", 1)] == "a.py"
    assert names[("b.py", 2)] == "b.py"


def test_unpickle_error_chained(ctm):
    """A pickle that this process cannot load (not damage: the checks
    match) says so, with pickle's error as the cause."""
    data = assemble(Tables(RAW).sections(5)[:-1] + [
        (EXTRA, b"cno_such_module_here\nobj\n."), (END, b"")])
    with pytest.raises(ValueError, match="cannot unpickle") as info:
        load_bytes(ctm, data)
    assert isinstance(info.value.__cause__, ImportError)


def test_counts_cannot_force_allocation(ctm):
    """Counts and lengths are checked against the bytes left before
    anything is allocated from them."""
    for counts in [(0, 0, 0, 0, 2**40), (2**32 - 1, 0, 0, 0, 0),
                   (0, 2**32 - 1, 2**32 - 1, 2**32 - 1, 0),
                   (0, 0, 0, 0, 1000)]:
        data = assemble([(COUNTS, b"".join(varint(c) for c in counts)),
                         (LIMIT, b"\0"), (END, b"")])
        with pytest.raises(ValueError, match="truncated|impossible"):
            load_bytes(ctm, data)
    # a section length far beyond the end of the file
    head = MAGIC + b"\1\0\0\0" + bytes([TRACES]) + varint(2**62)
    with pytest.raises(ValueError, match="truncated"):
        load_bytes(ctm, head + b"\0" * 100)


@settings(max_examples=1500, deadline=None)
@given(data=st.data())
def test_hypothesis_mutations(ctm, data):
    """Mutated payloads with valid checks: the parser itself must cope."""
    raw = data.draw(st.lists(trace_st, max_size=12))
    limit = data.draw(st.none() | st.integers(-3, 3))
    tables = Tables(raw)
    if tables.frames and tables.strings:
        named = data.draw(st.sets(st.integers(0, len(tables.frames) - 1)))
        tables.functions = {f: data.draw(st.integers(
            0, len(tables.strings) - 1)) for f in named}
    secs = tables.sections(limit)
    for _ in range(data.draw(st.integers(1, 3))):
        kind = data.draw(st.sampled_from(
            ["flip", "set", "insert", "delete", "truncate", "drop",
             "dup", "swap", "tag"]))
        i = data.draw(st.integers(0, len(secs) - 1))
        tag, payload = secs[i]
        pos = data.draw(st.integers(0, max(len(payload) - 1, 0)))
        if kind == "flip" and payload:
            payload = (payload[:pos] + bytes([payload[pos] ^ (1 << data.draw(
                st.integers(0, 7)))]) + payload[pos + 1:])
        elif kind == "set" and payload:
            payload = (payload[:pos] + bytes([data.draw(st.sampled_from(
                [0, 1, 0x7F, 0x80, 0xFF]))]) + payload[pos + 1:])
        elif kind == "insert":
            payload = payload[:pos] + data.draw(st.binary(
                min_size=1, max_size=3)) + payload[pos:]
        elif kind == "delete":
            payload = payload[:pos] + payload[pos + 1:]
        elif kind == "truncate":
            payload = payload[:pos]
        elif kind == "drop":
            secs = secs[:i] + secs[i + 1:]
            continue
        elif kind == "dup":
            secs = secs[:i] + [secs[i]] + secs[i:]
            continue
        elif kind == "swap" and i + 1 < len(secs):
            secs = secs[:i] + [secs[i + 1], secs[i]] + secs[i + 2:]
            continue
        elif kind == "tag":
            tag = data.draw(st.integers(0, 9))
        secs = secs[:i] + [(tag, payload)] + secs[i + 1:]
        if not secs:
            break
    try_load(ctm, assemble(secs, minor=data.draw(st.sampled_from([0, 1, 2]))))
