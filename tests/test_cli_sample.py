"""Sampled tracing on the command line (issue 19): the size parser that
reads what people write (_sizes), run --sample and CTRACEMALLOC_SAMPLE,
and how every report of a sampled snapshot says that its sizes and
counts are estimates, and at what interval.

The reports are checked on snapshots made from raw traces with
Snapshot(raw, limit, sample_interval=T), whose estimates follow from the
formula of sampling.h (a block of s bytes stands for 1/P(s) blocks,
P(s) = 1 - exp(-s/T)); run --sample and startup tracing on programs
whose allocations are known, within the sampling's error. Exact
snapshots print as they always did: test_cli.py checks their output.
"""
import json
import math
import os
import re

import pytest

from test_cli import cli, flame_data, label, no_traceback, peak_report, \
    run_report, selftest, top_entries, write
from test_cli_native import SQLITE, mixed_raw, native_at_insert, nodes, \
    startup_python
from tmhelpers import child_env

pytestmark = pytest.mark.ctm_only

KIB = 1024


@pytest.fixture
def ctm():
    from conftest import require_ctm
    return require_ctm()


@pytest.fixture
def sizes():
    from conftest import require_ctm
    require_ctm()
    from ctracemalloc import _sizes
    return _sizes


# -- the parser ------------------------------------------------------------

@pytest.mark.parametrize("text, size", [
    ("512KiB", 512 * 1024), ("512 KiB", 512 * 1024), ("512kib", 512 * 1024),
    ("512KIB", 512 * 1024), ("1MB", 1000 ** 2), ("1 mb", 1000 ** 2),
    ("1Mb", 1000 ** 2), ("16384", 16384), ("16384B", 16384),
    ("16384 b", 16384), ("2GiB", 2 * 1024 ** 3), ("3 GB", 3 * 1000 ** 3),
    ("1.5MiB", 1572864), ("1.5 MB", 1500000), ("1kb", 1000),
    ("1Kb", 1000), ("1KB", 1000), ("1 KiB", 1024), ("0", 0), ("0 KiB", 0),
    ("  24 MB  ", 24 * 1000 ** 2), ("1.1 MB", 1100000),     # not 1100000.0…2
    ("0.1 KiB", 102), ("0.5KB", 500), ("1.0B", 1), ("2.50 KiB", 2560),
    ("007", 7), (16384, 16384), (0, 0)])
def test_parse_size(sizes, text, size):
    got = sizes.parse_size(text)
    assert got == size and type(got) is int


@pytest.mark.parametrize("text, problem", [
    ("", "not a size"), ("   ", "not a size"), ("abc", "not a size"),
    ("-1", "not a size"), ("-1 KiB", "not a size"), ("512K", "not a size"),
    ("1M", "not a size"), ("1 TB", "not a size"), ("1TiB", "not a size"),
    ("KiB", "not a size"), ("1e3", "not a size"), ("1,000", "not a size"),
    ("1_000", "not a size"), ("0x10", "not a size"), (".5MB", "not a size"),
    ("1.MB", "not a size"), ("1 . 5 MB", "not a size"),
    ("12 KiB extra", "not a size"), ("inf", "not a size"),
    ("nan", "not a size"), ("\u0661\u0662", "not a size"),    # Arabic 12
    ("1\u212aB", "not a size"),                          # Kelvin sign
    (None, "not a size"), (1.5, "not a size"), (True, "not a size"),
    (-5, "not a size"), ("1.5", "not a whole number of bytes"),
    ("1.5B", "not a whole number of bytes")])
def test_parse_size_refuses(sizes, text, problem):
    with pytest.raises(ValueError) as info:
        sizes.parse_size(text)
    message = str(info.value)
    assert message.startswith("%s: %r" % (problem, text)), message
    if problem == "not a size":         # says what a size looks like
        assert "KiB" in message and "MB" in message


@pytest.mark.parametrize("size, text", [
    (0, "0 B"), (1, "1 B"), (1234, "1234 B"), (1000, "1 KB"),
    (1024, "1 KiB"), (512 * 1024, "512 KiB"), (1536 * 1024, "1536 KiB"),
    (10 ** 6, "1 MB"), (1024 ** 2, "1 MiB"), (1024000, "1000 KiB"),
    (3 * 10 ** 9, "3 GB"), (2 * 1024 ** 3, "2 GiB"),
    (5 * 1024 ** 4, "5120 GiB")])
def test_size_text(sizes, size, text):
    assert sizes.size_text(size) == text
    assert sizes.parse_size(text) == size


# -- reports of sampled snapshots ------------------------------------------

T = 512 * KIB


def estimate(size, interval):
    """sampling.h's estimates of a block of size bytes sampled at
    interval: (size, count)."""
    count = -1.0 / math.expm1(-size / interval)
    return int(size * count + 0.5), count


def note(interval_text):
    return ("sampled, one sample every %s allocated on average: sizes and "
            "counts are estimates" % interval_text)


def sentence(interval_text):
    text = note(interval_text)
    return text[0].upper() + text[1:]


def app_raw(app):
    """Raw traces of app.py: 10 blocks of 1000 bytes at line 1, 2 of
    1 MiB at line 2, 4 of 100 bytes at line 3 (below line 7 of lib.py)."""
    app = str(app)
    lib = os.path.join(os.path.dirname(app), "lib.py")
    return ([(0, 1000, ((app, 1),), 1)] * 10
            + [(0, 1024 * KIB, ((app, 2),), 1)] * 2
            + [(0, 100, ((lib, 7), (app, 3)), 2)] * 4)


APP = """\
cache = [bytearray(1000) for _ in range(10)]
images = [bytearray(1 << 20) for _ in range(2)]
names = [lib.name(i) for i in range(4)]
"""


@pytest.fixture
def app(tmp_path):
    return write(tmp_path / "app.py", APP)


def expected(raw, interval):
    """{lineno of the most recent frame: (estimated size, count)}."""
    lines = {}
    for _, size, frames, _ in raw:
        est_size, est_count = estimate(size, interval)
        old = lines.get(frames[0][1], (0, 0.0))
        lines[frames[0][1]] = (old[0] + est_size, old[1] + est_count)
    return lines


@pytest.fixture
def sampled(ctm, tmp_path, app):
    path = tmp_path / "sampled.snapshot"
    ctm.Snapshot(app_raw(app), 2, sample_interval=T).dump(path)
    return path


@pytest.fixture
def exact(ctm, tmp_path, app):
    path = tmp_path / "exact.snapshot"
    ctm.Snapshot(app_raw(app), 2).dump(path)
    return path


def test_top_says_the_numbers_are_estimates(ctm, sampled, app):
    snapshot = ctm.Snapshot.load(sampled)
    assert snapshot.sample_interval == T
    stats = snapshot.statistics("lineno")
    # the estimates, not the blocks' true sizes
    want = expected(app_raw(app), T)
    assert {s.traceback[0].lineno: s.size for s in stats} == \
        {line: size for line, (size, _) in want.items()}
    proc = cli("top", sampled)
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == sentence("512 KiB")
    assert lines[1] == "Top 3 lines"
    assert top_entries(proc.stdout) == [label(s) for s in stats]
    assert lines[-1] == "Total: size=%s, count=%d" % (
        ctm._format_size(sum(s.size for s in stats), False),
        sum(s.count for s in stats))
    # 10 blocks of 1000 bytes stand for about 5248 of them
    cache = [s for s in stats if s.traceback[0].lineno == 1][0]
    assert abs(cache.count - want[1][1]) <= 1
    assert cache.size > 5 * 1000 * 1000
    # the other key types and --cumulative say it too
    for options in (["--key-type", "filename"], ["--key-type", "traceback"],
                    ["--cumulative"], ["--limit", "1"]):
        proc = cli("top", sampled, *options)
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.splitlines()[0] == sentence("512 KiB"), options


def test_top_json_gives_the_interval(ctm, sampled, exact, app):
    data = json.loads(cli("top", sampled, "--json").stdout)
    assert data["sample_interval"] == [T]
    assert data["files"] == [str(sampled)]
    want = expected(app_raw(app), T)
    assert data["total"]["size"] == sum(size for size, _ in want.values())
    assert abs(data["total"]["count"] -
               sum(count for _, count in want.values())) <= 3
    # an exact snapshot's JSON is what it was: no such field
    assert "sample_interval" not in json.loads(cli("top", exact,
                                                   "--json").stdout)


def test_filtered_sampled_snapshot_stays_sampled(ctm, sampled, app):
    """Filters (--include..., --domain) keep the interval: the estimates
    and the sentence stay."""
    for options in (["--include", "*app.py"], ["--exclude-any-frame",
                                               "*lib.py"],
                    ["--domain", "python"]):
        proc = cli("top", sampled, *options)
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.splitlines()[0] == sentence("512 KiB"), options
    snapshot = ctm.Snapshot.load(sampled).filter_traces(
        [ctm.Filter(False, "*lib.py", all_frames=True)])
    proc = cli("top", sampled, "--exclude-any-frame", "*lib.py")
    assert top_entries(proc.stdout) == [
        label(s) for s in snapshot.statistics("lineno")]


def test_exact_snapshot_says_nothing(ctm, exact):
    proc = cli("top", exact)
    assert proc.stdout.splitlines()[0] == "Top 3 lines"
    assert "sampl" not in proc.stdout + proc.stderr
    proc = cli("compare", exact, exact)
    assert proc.stdout.splitlines()[0] == "Top 3 lines"
    assert "sampl" not in proc.stdout + proc.stderr
    assert "sample_interval" not in json.loads(
        cli("compare", exact, exact, "--json").stdout)


def test_compare_says_which_side_is_sampled(ctm, tmp_path, sampled, exact,
                                            app):
    proc = cli("compare", exact, sampled, "--limit", 2)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[:3] == [
        "OLD %s: exact, every allocation traced" % exact,
        "NEW %s: %s" % (sampled, note("512 KiB")),
        "Top 2 lines"]
    diffs = ctm.Snapshot.load(sampled).compare_to(
        ctm.Snapshot.load(exact), "lineno")
    assert top_entries(proc.stdout) == [label(d) for d in diffs[:2]]
    proc = cli("compare", sampled, exact)
    assert proc.stdout.splitlines()[:2] == [
        "OLD %s: %s" % (sampled, note("512 KiB")),
        "NEW %s: exact, every allocation traced" % exact]
    # both sampled, at other intervals: each said
    other = tmp_path / "other.snapshot"
    ctm.Snapshot(app_raw(app), 2, sample_interval=10 ** 6).dump(other)
    proc = cli("compare", other, sampled)
    assert proc.stdout.splitlines()[:2] == [
        "OLD %s: %s" % (other, note("1 MB")),
        "NEW %s: %s" % (sampled, note("512 KiB"))]
    data = json.loads(cli("compare", exact, sampled, "--json").stdout)
    assert data["files"] == [str(exact), str(sampled)]
    assert data["sample_interval"] == [0, T]
    data = json.loads(cli("compare", other, sampled, "--json").stdout)
    assert data["sample_interval"] == [10 ** 6, T]


def test_flamegraph_of_a_sampled_snapshot(ctm, tmp_path, sampled, exact,
                                          app):
    out = tmp_path / "s.html"
    proc = cli("flamegraph", sampled, "-o", out)
    assert proc.returncode == 0, proc.stderr
    html = out.read_text()
    found = re.findall(r'<div class="sampled" id="sampled"[^>]*>(.*?)</div>',
                       html)
    assert found == [sentence("512 KiB")]
    data = flame_data(html)
    want = expected(app_raw(app), T)
    assert data["size"][0] == sum(size for size, _ in want.values())
    # counts are whole (estimated) blocks
    assert all(type(c) is int for c in data["count"])
    assert abs(data["count"][0] -
               sum(count for _, count in want.values())) <= 1
    title, dom = selftest(out)
    assert title.startswith("selftest: ok"), title
    assert sentence("512 KiB") in dom
    # an exact snapshot's page has no such line
    proc = cli("flamegraph", exact, "-o", tmp_path / "e.html")
    assert proc.returncode == 0, proc.stderr
    assert 'id="sampled"' not in (tmp_path / "e.html").read_text()


def test_flamegraph_of_sampled_native_memory(ctm, tmp_path, app):
    """Native memory, sampled: its boxes hold the estimates, as the
    Python ones do."""
    path = tmp_path / "mixed.snapshot"
    raw = mixed_raw(ctm, app, tmp_path / "lib.py")
    ctm.Snapshot(raw, 2, sample_interval=T).dump(path)
    out = tmp_path / "m.html"
    proc = cli("flamegraph", path, "-o", out)
    assert proc.returncode == 0, proc.stderr
    data = flame_data(out.read_text())
    native = [t for t in raw if t[0] == ctm.NATIVE_DOMAIN]
    at_line_2 = [t for t in native if t[2] == ((str(app), 2),)]
    size, count = estimate(at_line_2[0][1], T)
    assert nodes(data)[((str(app), 2), "native")] == (
        size * len(at_line_2), round(count * len(at_line_2)))
    assert sum(data["size"][n] for n in data["native"]) == sum(
        estimate(t[1], T)[0] for t in native)
    title, dom = selftest(out)
    assert title.startswith("selftest: ok native "), title
    assert sentence("512 KiB") in dom


def test_report_of_a_sampled_snapshot(ctm, tmp_path, sampled, exact):
    out = tmp_path / "r.html"
    proc = cli("report", sampled, "-o", out)
    assert proc.returncode == 0, proc.stderr
    rows = re.findall(r'<dt>([^<]*)</dt><dd id="meta-([^"]*)">([^<]*)</dd>',
                      out.read_text())
    assert ("sampling", "sampling", sentence("512 KiB")) in rows
    proc = cli("report", exact, "-o", out)
    assert proc.returncode == 0, proc.stderr
    assert "meta-sampling" not in out.read_text()


# -- run --sample ----------------------------------------------------------

@pytest.fixture
def script(tmp_path):
    return write(tmp_path / "prog.py", "print('ran')\n")


@pytest.mark.parametrize("value", [
    "512K", "abc", "-1", "1.5", "", "1 TB", "10000000000 GiB"])
def test_run_sample_bad_value(ctm, tmp_path, script, value):
    out = tmp_path / "x.snapshot"
    proc = cli("run", "--sample", value, "-o", out, script)
    assert proc.returncode == 2
    line = no_traceback(proc)
    assert line.startswith("ctracemalloc: error: argument --sample: "), line
    assert line.endswith(" (see ctracemalloc run --help)"), line
    if value == "10000000000 GiB":
        assert "must be at most 9223372036854775807 bytes" in line
    else:
        assert ("not a size: %r" % value in line
                or "not a whole number of bytes: %r" % value in line), line
    # nothing ran, nothing written
    assert proc.stdout == "" and not out.exists()


def test_run_sample_help(ctm):
    proc = cli("run", "--help")
    assert proc.returncode == 0
    assert "[--sample SIZE]" in proc.stdout.splitlines()[0]
    text = " ".join(proc.stdout.split())
    assert "sizes and counts become unbiased estimates" in text
    assert "512KiB" in text


# Known allocations: 20,000 blocks of 1000 bytes kept at line 2, 30,000
# temporary ones at line 4 (the peak).
SAMPLED_PROGRAM = """\
def kept():
    return [bytearray(1000) for _ in range(20_000)]
def temporary():
    big = [bytearray(1000) for _ in range(30_000)]
    return len(big)
keep = kept()
temporary()
"""


# The sampler's seed (CTRACEMALLOC_SAMPLE_SEED, the core's): the same run
# takes the same samples, so that a test's outcome does not vary
SEED = {"CTRACEMALLOC_SAMPLE_SEED": "19"}


def seeded():
    """The environment of a run whose sampler is seeded."""
    return dict(child_env(), **SEED)


def size_at(snapshot, lineno):
    return sum(s.size for s in snapshot.statistics("lineno")
               if s.traceback[0].lineno == lineno)


def test_run_sample(ctm, tmp_path):
    prog = write(tmp_path / "sampled.py", SAMPLED_PROGRAM)
    out = tmp_path / "sampled.snapshot"
    proc = cli("run", "--sample", "64KiB", "-n", 5, "-o", out, "--top", 3,
               prog, cwd=tmp_path, env=seeded())
    assert proc.returncode == 0, proc.stderr
    snapshot = ctm.Snapshot.load(out)
    assert snapshot.sample_interval == 64 * KIB
    assert snapshot.traceback_limit == 5
    # about 20 MB / 64 KiB = 305 samples stand for the 20,000 blocks: the
    # estimate is within a few percent (25% is over 4 standard errors)
    assert len(snapshot.traces) < 2000
    assert abs(size_at(snapshot, 2) - 20_000_000) < 0.25 * 20_000_000
    # the peak (recorded by default) is sampled alike
    peak = snapshot.peak
    assert peak.sample_interval == 64 * KIB
    assert abs(size_at(peak, 4) - 30_000_000) < 0.25 * 30_000_000
    # the summary says so, for the end and the peak
    end = run_report(proc.stderr)
    assert end[0].startswith("ctracemalloc: wrote the snapshot to %s "
                             % out), end
    assert end[1] == "ctracemalloc: " + note("64 KiB")
    stats = snapshot.statistics("lineno")
    assert end[2] == "Top %d lines" % min(3, len(stats))
    assert top_entries("\n".join(end)) == [label(s) for s in stats[:3]]
    at_peak = peak_report(proc.stderr)
    assert at_peak[1] == "ctracemalloc: " + note("64 KiB")
    assert top_entries("\n".join(at_peak)) == [
        label(s) for s in peak.statistics("lineno")[:3]]
    # --sample=SIZE, and a quoted "SIZE UNIT"; 0 is exact
    for value in (["--sample=64KiB"], ["--sample", "64 KiB"]):
        proc = cli("run", *value, "-o", out, prog, cwd=tmp_path,
                   env=seeded())
        assert proc.returncode == 0, proc.stderr
        assert ctm.Snapshot.load(out).sample_interval == 64 * KIB
    proc = cli("run", "--sample", "0", "-o", out, prog, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert ctm.Snapshot.load(out).sample_interval == 0
    assert "one sample every" not in proc.stderr


def test_run_sample_native(ctm, tmp_path):
    """--sample composes with --native: the extension's memory is sampled
    too, and its estimate is of the right size."""
    prog = write(tmp_path / "rows.py", SQLITE)
    out = tmp_path / "n.snapshot"
    proc = cli("run", "--native", "--sample", "16KiB", "-o", out, prog,
               cwd=tmp_path, env=seeded())
    assert proc.returncode == 0, proc.stderr
    snapshot = ctm.Snapshot.load(out)
    assert snapshot.sample_interval == 16 * KIB
    assert snapshot.peak.sample_interval == 16 * KIB
    # the table's pages take hundreds of KiB (test_run_native), about 1 MB
    # here: some 60 samples, whose estimate is rarely off by a third
    assert native_at_insert(ctm, snapshot, str(prog)) > 256 * KIB
    assert "ctracemalloc: " + note("16 KiB") in proc.stderr.splitlines()
    assert "  native: size=" in proc.stderr


# -- CTRACEMALLOC_SAMPLE ---------------------------------------------------

PROBE = ("import ctracemalloc; print(ctracemalloc.is_tracing(), "
         "ctracemalloc.get_traceback_limit())")


@pytest.fixture
def startup(monkeypatch):
    """startup_python, its environment without this one's own
    CTRACEMALLOC_SAMPLE and CTRACEMALLOC_OUTPUT."""
    monkeypatch.delenv("CTRACEMALLOC_SAMPLE", raising=False)
    monkeypatch.delenv("CTRACEMALLOC_OUTPUT", raising=False)
    return startup_python


def test_startup_sample_bad_value(ctm, tmp_path, startup):
    for value in ("512K", "x", "-1", "1.5", "1 TB"):
        proc = startup(tmp_path, PROBE, {"CTRACEMALLOC": "4",
                                         "CTRACEMALLOC_SAMPLE": value})
        assert proc.stdout.split() == ["False", "1"], proc.stderr
        line = no_traceback(proc)
        assert line.startswith("ctracemalloc: CTRACEMALLOC_SAMPLE=%r: not "
                               "a " % value), line
        assert line.endswith(": tracing stays off"), line
    # empty or 0: exact tracing, silently
    for value in ("", "0", "0 KiB"):
        proc = startup(tmp_path, PROBE, {"CTRACEMALLOC": "4",
                                         "CTRACEMALLOC_SAMPLE": value})
        assert proc.stdout.split() == ["True", "4"], proc.stderr
        assert proc.stderr == ""
    # alone, it does nothing, and says nothing, even if bad
    for value in ("64KiB", "x"):
        proc = startup(tmp_path, PROBE, {"CTRACEMALLOC_SAMPLE": value})
        assert proc.stdout.split() == ["False", "1"]
        assert proc.stderr == ""
    # a bad CTRACEMALLOC is the one line, as before
    proc = startup(tmp_path, PROBE, {"CTRACEMALLOC": "x",
                                     "CTRACEMALLOC_SAMPLE": "x"})
    assert no_traceback(proc).startswith("ctracemalloc: CTRACEMALLOC='x' ")


def test_startup_sample(ctm, tmp_path, startup):
    prog = write(tmp_path / "sampled.py", SAMPLED_PROGRAM)
    code = ("import runpy, ctracemalloc\n"
            "kept = runpy.run_path(%r)\n"
            "s = ctracemalloc.take_snapshot()\n"
            "print(s.sample_interval, s.traceback_limit, len(s.traces))"
            % str(prog))
    proc = startup(tmp_path, code, {"CTRACEMALLOC": "3",
                                    "CTRACEMALLOC_SAMPLE": "64KiB", **SEED})
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    interval, limit, traces = map(int, proc.stdout.split())
    assert (interval, limit) == (64 * KIB, 3)
    assert traces < 5000        # 20,000 kept blocks, sampled
    # with CTRACEMALLOC_OUTPUT: the file's snapshots, end and peak, are
    # sampled, and their estimates of the right size
    out = tmp_path / "startup.snapshot"
    proc = startup(tmp_path, "import runpy; kept = runpy.run_path(%r)"
                   % str(prog), {"CTRACEMALLOC": "3",
                                 "CTRACEMALLOC_SAMPLE": "64KiB",
                                 "CTRACEMALLOC_OUTPUT": str(out), **SEED})
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    snapshot = ctm.Snapshot.load(out)
    assert snapshot.sample_interval == 64 * KIB
    assert snapshot.peak.sample_interval == 64 * KIB
    assert abs(size_at(snapshot, 2) - 20_000_000) < 0.25 * 20_000_000
    # and with CTRACEMALLOC_NATIVE=1
    proc = startup(tmp_path, code, {"CTRACEMALLOC": "3",
                                    "CTRACEMALLOC_SAMPLE": "1MB",
                                    "CTRACEMALLOC_NATIVE": "1", **SEED})
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    assert proc.stdout.split()[:2] == [str(10 ** 6), "3"]
