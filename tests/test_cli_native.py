"""Native memory (NATIVE_DOMAIN) on the command line: run --native,
CTRACEMALLOC_NATIVE, and how top, compare and flamegraph name the native
domain (entries marked [native], totals split, --domain).

The reports are checked on snapshots made from raw traces, whose every
size is known; run --native and startup tracing on a real extension.
"""
import json
import os
import shutil
import subprocess
import sys

import pytest

from test_cli import cli, flame_data, label, no_traceback, run_report, \
    selftest, top_entries, write
from tmhelpers import child_env, patience

pytestmark = pytest.mark.ctm_only

NUMPY_DOMAIN = 389047       # a domain an extension reports to: Python's side


APP = """\
rows = [make_row(i) for i in range(10)]
db.executemany(INSERT, rows)
cache.fill()
"""


@pytest.fixture
def app(tmp_path):
    return write(tmp_path / "app.py", APP)


def mixed_raw(ctm, app, lib, native_scale=1):
    """Raw traces: Python's at lines 1 and 3 (and one block an extension
    reported at line 1), native at lines 2 and 3, and native below a
    frame of lib."""
    native = ctm.NATIVE_DOMAIN
    app, lib = str(app), str(lib)
    return ([(0, 1000, ((app, 1),), 1)] * 10
            + [(NUMPY_DOMAIN, 5000, ((app, 1),), 1)]
            + [(native, 40000, ((app, 2),), 1)] * 5 * native_scale
            + [(0, 100, ((app, 3),), 1)] * 4
            + [(native, 300, ((app, 3),), 1)] * 2
            + [(native, 64, ((lib, 7), (app, 3)), 2)] * 3)


@pytest.fixture
def mixed(ctm, tmp_path, app):
    path = tmp_path / "mixed.snapshot"
    ctm.Snapshot(mixed_raw(ctm, app, tmp_path / "lib.py"), 2).dump(path)
    return path


def test_top_marks_native(ctm, mixed, app, tmp_path):
    proc = cli("top", mixed)
    assert proc.returncode == 0, proc.stderr
    lib = tmp_path / "lib.py"
    assert proc.stdout == f"""\
Top 5 lines
#1: [native] {app}:2: size=195 KiB, count=5, average=39.1 KiB
    db.executemany(INSERT, rows)
#2: {app}:1: size=14.6 KiB, count=11, average=1364 B
    rows = [make_row(i) for i in range(10)]
#3: [native] {app}:3: size=600 B, count=2, average=300 B
    cache.fill()
#4: {app}:3: size=400 B, count=4, average=100 B
    cache.fill()
#5: [native] {lib}:7: size=192 B, count=3, average=64 B
Total: size=211 KiB, count=25
  Python: size=15.0 KiB, count=15
  native: size=196 KiB, count=10
"""


def side_stats(ctm, path, native, key_type="lineno", old=None):
    """The statistics of one side of a snapshot (compare_to's if old)."""
    keep = [ctm.DomainFilter(native, ctm.NATIVE_DOMAIN)]
    snap = ctm.Snapshot.load(path).filter_traces(keep)
    if old is None:
        return snap.statistics(key_type)
    return snap.compare_to(ctm.Snapshot.load(old).filter_traces(keep),
                           key_type)


def test_top_agrees_with_each_domain(ctm, mixed):
    """Each entry is its side's statistic, in the order statistics()
    sorts; --domain restricts to a side and its entries are that side's
    statistics."""
    for key in ("lineno", "filename", "traceback"):
        python = side_stats(ctm, mixed, False, key)
        native = side_stats(ctm, mixed, True, key)
        proc = cli("top", mixed, "--key-type", key, "--limit", 0)
        assert proc.returncode == 0, proc.stderr
        both = sorted([(s, "") for s in python]
                      + [(s, "[native] ") for s in native],
                      key=lambda e: e[0]._sort_key(), reverse=True)
        assert top_entries(proc.stdout) == [tag + label(s, key)
                                            for s, tag in both]
        proc = cli("top", mixed, "--key-type", key, "--domain", "native")
        assert top_entries(proc.stdout) == ["[native] %s" % label(s, key)
                                            for s in native]
        lines = proc.stdout.splitlines()
        # one side only: the total and that side, no empty Python line
        assert lines[-2:] == ["Total: size=196 KiB, count=10",
                              "  native: size=196 KiB, count=10"]
        proc = cli("top", mixed, "--key-type", key, "--domain", "python")
        assert top_entries(proc.stdout) == [label(s, key) for s in python]
        assert "native" not in proc.stdout
        assert proc.stdout.splitlines()[-1] == "Total: size=15.0 KiB, " \
                                               "count=15"


def test_without_native_traces_nothing_changes(ctm, tmp_path, app):
    """A snapshot without native traces: --domain python prints what
    plain top prints, and that has no trace of the domains."""
    path = tmp_path / "plain.snapshot"
    raw = [t for t in mixed_raw(ctm, app, tmp_path / "lib.py")
           if t[0] != ctm.NATIVE_DOMAIN]
    ctm.Snapshot(raw, 2).dump(path)
    plain = cli("top", path, "--limit", 1)
    assert plain.returncode == 0, plain.stderr
    assert plain.stdout == f"""\
Top 1 lines
#1: {app}:1: size=14.6 KiB, count=11, average=1364 B
    rows = [make_row(i) for i in range(10)]
1 other lines: size=400 B, count=4
Total: size=15.0 KiB, count=15
"""
    assert cli("top", path, "--limit", 1, "--domain", "python").stdout == \
        plain.stdout
    assert cli("top", path, "--domain", "native").stdout == \
        "Top 0 lines\nTotal: size=0 B, count=0\n"
    data = json.loads(cli("top", path, "--json").stdout)
    assert "domains" not in data
    assert all("domain" not in e for e in data["stats"])


def test_include_still_restricts_with_domain(ctm, mixed, app):
    """--include keeps traces of matching files only, --domain too: an
    inclusive DomainFilter among the --include filters would keep any
    trace that matches either."""
    proc = cli("top", mixed, "--domain", "native", "--include", "*app.py",
               "--limit", 0)
    assert proc.returncode == 0, proc.stderr
    entries = top_entries(proc.stdout)
    assert len(entries) == 2
    assert all(e.startswith("[native] %s:" % app) for e in entries)
    # lib.py's native traces have app.py:3 deeper in their traceback
    proc = cli("top", mixed, "--domain", "native", "--exclude", "*lib.py",
               "--limit", 0)
    assert proc.stdout.splitlines()[-1] == "  native: size=196 KiB, count=7"


def test_compare_marks_native(ctm, tmp_path, mixed, app):
    new = tmp_path / "more.snapshot"
    ctm.Snapshot(mixed_raw(ctm, app, tmp_path / "lib.py", native_scale=3),
                 2).dump(new)
    proc = cli("compare", mixed, new, "--limit", 2)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == f"""\
Top 2 lines
#1: [native] {app}:2: size=586 KiB (+391 KiB), count=15 (+10), average=39.1 KiB
    db.executemany(INSERT, rows)
#2: {app}:1: size=14.6 KiB (+0 B), count=11 (+0), average=1364 B
    rows = [make_row(i) for i in range(10)]
3 other lines: size=1192 B, count=9
Total: size=602 KiB (+391 KiB), count=35 (+10)
  Python: size=15.0 KiB (+0 B), count=15 (+0)
  native: size=587 KiB (+391 KiB), count=20 (+10)
"""
    # native memory gone: its entries stay, at size 0, and its side too
    plain = tmp_path / "plain.snapshot"
    ctm.Snapshot([t for t in mixed_raw(ctm, app, tmp_path / "lib.py")
                  if t[0] != ctm.NATIVE_DOMAIN], 2).dump(plain)
    proc = cli("compare", mixed, plain, "--limit", 0)
    diffs = side_stats(ctm, plain, True, old=mixed)
    assert ["[native] %s" % d for d in diffs] == \
        [e for e in top_entries(proc.stdout) if e.startswith("[native]")]
    assert proc.stdout.splitlines()[-1] == \
        "  native: size=0 B (-196 KiB), count=0 (-10)"


def test_json_names_domains(ctm, tmp_path, mixed, app):
    data = json.loads(cli("top", mixed, "--json", "--limit", 3).stdout)
    assert [(e["domain"], e["traceback"][0]["lineno"], e["size"])
            for e in data["stats"]] == [("native", 2, 200000),
                                        ("python", 1, 15000),
                                        ("native", 3, 600)]
    assert data["total"] == {"size": 216192, "count": 25}
    assert data["domains"] == {"python": {"size": 15400, "count": 15},
                               "native": {"size": 200792, "count": 10}}
    assert data["other"] == {"entries": 2, "size": 592, "count": 7}
    data = json.loads(cli("compare", mixed, mixed, "--json").stdout)
    assert data["domains"]["native"] == {"size": 200792, "count": 10,
                                         "size_diff": 0, "count_diff": 0}


def test_bad_domain(ctm, mixed):
    for command in (("top", mixed), ("compare", mixed, mixed),
                    ("flamegraph", mixed)):
        proc = cli(*command, "--domain", "c")
        assert proc.returncode == 2
        line = no_traceback(proc)
        assert line.startswith("ctracemalloc: error: argument --domain: "
                               "invalid choice: 'c'"), line
    for command in ("top", "compare", "flamegraph"):
        proc = cli(command, "--help")
        assert "--domain {all,python,native}" in proc.stdout


def test_run_summary_marks_native(ctm, tmp_path):
    """run's report names the domains too (here of blocks the program
    tracks in NATIVE_DOMAIN itself)."""
    prog = write(tmp_path / "tracks.py", """\
        import ctracemalloc
        NATIVE = ctracemalloc.NATIVE_DOMAIN
        keep = [bytearray(1000) for _ in range(300)]
        for i in range(50):
            ctracemalloc.track(NATIVE, 0x10000 + 64 * i, 100000)
        """)
    out = tmp_path / "t.snapshot"
    proc = cli("run", "-o", out, "--top", 2, prog)
    assert proc.returncode == 0, proc.stderr
    native = side_stats(ctm, out, True)
    assert [(s.traceback[0].lineno, s.size) for s in native] == \
        [(5, 5000000)]
    entries = top_entries("\n".join(run_report(proc.stderr)))
    assert entries[0] == "[native] %s" % label(native[0])
    assert not entries[1].startswith("[native]")
    python = side_stats(ctm, out, False)
    assert run_report(proc.stderr)[-2:] == [
        "  Python: size=%s, count=%d" % (
            ctm._format_size(sum(s.size for s in python), False),
            sum(s.count for s in python)),
        "  native: size=4883 KiB, count=50"]


# -- flamegraph ------------------------------------------------------------

def nodes(data):
    """{path of (filename, lineno) from the root, "native" for a native
    node: (size, count)}."""
    paths = {0: ()}
    result = {}
    native = set(data["native"])
    for i in range(1, len(data["parent"])):
        step = "native" if i in native else \
            (data["names"][data["file"][i]], data["line"][i])
        paths[i] = paths[data["parent"][i]] + (step,)
        assert paths[i] not in result
        result[paths[i]] = (data["size"][i], data["count"][i])
    return result


def test_flamegraph_native_boxes(ctm, mixed, app, tmp_path):
    out = tmp_path / "m.html"
    proc = cli("flamegraph", mixed, "-o", out)
    assert proc.returncode == 0, proc.stderr
    data = flame_data(out.read_text())
    a, lib = (str(app), 1), (str(tmp_path / "lib.py"), 7)
    a2, a3 = (str(app), 2), (str(app), 3)
    # the native traces' frames merged with the Python ones, and below
    # each frame that called into an extension a native box of its own
    assert nodes(data) == {
        (a,): (15000, 11),
        (a2,): (200000, 5), (a2, "native"): (200000, 5),
        (a3,): (1192, 9), (a3, "native"): (600, 2),
        (a3, lib): (192, 3), (a3, lib, "native"): (192, 3)}
    assert (data["size"][0], data["count"][0]) == (216192, 25)
    assert all(data["file"][n] == -1 and data["source"][n] == -1
               for n in data["native"])
    # one side: the native boxes alone, or none
    assert cli("flamegraph", mixed, "-o", out, "--domain",
               "native").returncode == 0
    data = flame_data(out.read_text())
    assert nodes(data) == {
        (a2,): (200000, 5), (a2, "native"): (200000, 5),
        (a3,): (792, 5), (a3, "native"): (600, 2),
        (a3, lib): (192, 3), (a3, lib, "native"): (192, 3)}
    assert cli("flamegraph", mixed, "-o", out, "--domain",
               "python").returncode == 0
    data = flame_data(out.read_text())
    assert data["native"] == []
    assert nodes(data) == {(a,): (15000, 11), (a3,): (400, 4)}


def test_flamegraph_native_in_chromium(ctm, mixed, tmp_path):
    out = tmp_path / "m.html"
    assert cli("flamegraph", mixed, "-o", out).returncode == 0
    title, dom = selftest(out)
    # the page checked that a native box is drawn, labelled and coloured
    # as the legend says, with its own tooltip
    assert title.startswith("selftest: ok native "), title
    assert "native: size=196 KiB, count=10" in dom


# -- startup tracing ---------------------------------------------------------

def startup_python(tmp_path, code, env_extra):
    """python with startup tracing as installed: site runs the .pth file
    from a site directory of its own (-S, then site.addsitedir), so that
    the test runs with a development build too."""
    site_dir = tmp_path / "site"
    site_dir.mkdir(exist_ok=True)
    pth = os.path.join(os.path.dirname(__file__), os.pardir, "src",
                       "ctracemalloc-startup.pth")
    shutil.copy(pth, site_dir)
    env = child_env()
    env.update(env_extra)
    return subprocess.run(
        [sys.executable, "-S", "-c",
         "import site; site.addsitedir(%r)\n%s" % (str(site_dir), code)],
        env=env, capture_output=True, text=True, timeout=patience(120))


PROBE = ("import ctracemalloc; print(ctracemalloc.is_tracing(), "
         "ctracemalloc.get_traceback_limit())")


def test_startup_native_bad_value(ctm, tmp_path):
    proc = startup_python(tmp_path, PROBE, {"CTRACEMALLOC": "4",
                                            "CTRACEMALLOC_NATIVE": "0"})
    assert proc.stdout.split() == ["True", "4"], proc.stderr
    assert proc.stderr == ""
    for value in ("yes", "2", " 1", "true"):
        proc = startup_python(tmp_path, PROBE, {
            "CTRACEMALLOC": "4", "CTRACEMALLOC_NATIVE": value})
        assert proc.stdout.split() == ["False", "1"], proc.stderr
        assert no_traceback(proc) == (
            "ctracemalloc: CTRACEMALLOC_NATIVE=%r is not 0 or 1: tracing "
            "stays off" % value)
    # alone, it does nothing, and says nothing
    proc = startup_python(tmp_path, PROBE, {"CTRACEMALLOC_NATIVE": "1"})
    assert proc.stdout.split() == ["False", "1"]
    assert proc.stderr == ""
    # a bad CTRACEMALLOC is the one line, as before
    proc = startup_python(tmp_path, PROBE, {"CTRACEMALLOC": "x",
                                            "CTRACEMALLOC_NATIVE": "x"})
    assert no_traceback(proc).startswith("ctracemalloc: CTRACEMALLOC='x' ")


def test_startup_native(ctm, tmp_path):
    """CTRACEMALLOC_NATIVE=1 traces the table's pages from the start; 0,
    or nothing, leaves them out."""
    prog = write(tmp_path / "rows.py", SQLITE)
    code = ("import runpy, ctracemalloc\n"
            "kept = runpy.run_path(%r)  # the table, alive\n"
            "s = ctracemalloc.take_snapshot()\n"
            "print(ctracemalloc.get_traceback_limit(), sum(t.size for t in "
            "s.traces if t.domain == ctracemalloc.NATIVE_DOMAIN and "
            "t.traceback[-1].lineno == %d))" % (str(prog), INSERT_LINE))
    for native, traced in (("1", True), ("0", False), ("", False)):
        proc = startup_python(tmp_path, code, {
            "CTRACEMALLOC": "3", "CTRACEMALLOC_NATIVE": native})
        assert proc.returncode == 0 and proc.stderr == "", proc.stderr
        limit, size = map(int, proc.stdout.split())
        assert limit == 3
        assert (size > 256 * 1024) if traced else size == 0, (native, size)


# -- run --native ------------------------------------------------------------

# An extension's memory: the sqlite3 module's library allocates the pages of
# an in-memory table with its own malloc, which only native tracing sees.
# (A ctypes call to libc's malloc would not do: it goes through a pointer
# from dlsym, not through a GOT slot.)
SQLITE = """\
import sqlite3
conn = sqlite3.connect(":memory:")
conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT)")
rows = [(i, "name %d" % i) for i in range(50_000)]
conn.executemany("INSERT INTO t VALUES (?, ?)", rows)
"""
INSERT_LINE = 5


def native_at_insert(ctm, snapshot, filename):
    """The native memory the executemany line holds, in bytes."""
    native = snapshot.filter_traces([ctm.DomainFilter(True,
                                                      ctm.NATIVE_DOMAIN)])
    return sum(s.size for s in native.statistics("lineno")
               if (s.traceback[0].filename, s.traceback[0].lineno) ==
               (filename, INSERT_LINE))


def test_run_native(ctm, tmp_path):
    prog = write(tmp_path / "rows.py", SQLITE)
    out = tmp_path / "n.snapshot"
    proc = cli("run", "--native", "-o", out, "--top", 3, prog, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    snapshot = ctm.Snapshot.load(out)
    # the table's pages: 50,000 short rows take hundreds of KiB
    assert native_at_insert(ctm, snapshot, str(prog)) > 256 * 1024
    insert = side_stats(ctm, out, True)[0]
    assert (insert.traceback[0].filename, insert.traceback[0].lineno) == \
        (str(prog), INSERT_LINE)
    assert "[native] %s" % label(insert) in top_entries(proc.stderr)
    assert '    conn.executemany("INSERT INTO t VALUES (?, ?)", rows)' in \
        proc.stderr
    lines = run_report(proc.stderr)
    assert lines[-2].startswith("  Python: size=")
    assert lines[-1].startswith("  native: size=")
    # without --native, none of it
    proc = cli("run", "-o", out, prog, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert not ctm.Snapshot.load(out).filter_traces(
        [ctm.DomainFilter(True, ctm.NATIVE_DOMAIN)]).traces
    assert "[native]" not in proc.stderr and "  native:" not in proc.stderr
    # -m MODULE, the option before the module as for any of run's
    proc = cli("run", "--native", "-o", out, "-m", "rows", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert native_at_insert(ctm, ctm.Snapshot.load(out),
                            str(prog)) > 256 * 1024


def test_run_native_help(ctm):
    proc = cli("run", "--help")
    assert proc.returncode == 0
    assert "[--native]" in proc.stdout.splitlines()[0]
    assert "NATIVE_DOMAIN" in proc.stdout
