"""The command line, startup tracing and install(), end to end: commands
run as a user runs them, in subprocesses, on scripts the tests write. What
they print must agree with the snapshot's own statistics.
"""
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from tmhelpers import child_env, patience

pytestmark = pytest.mark.ctm_only


@pytest.fixture
def ctm():
    from conftest import require_ctm
    return require_ctm()


def cli(*args, cwd=None, env=None, timeout=patience(120)):
    return subprocess.run([sys.executable, "-m", "ctracemalloc"]
                          + [str(a) for a in args], cwd=cwd,
                          env=env or child_env(), capture_output=True,
                          text=True, timeout=timeout)


def write(path, code):
    path.write_text(textwrap.dedent(code))
    return path


def no_traceback(proc):
    """Bad input: one line on stderr, no Python traceback."""
    assert "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    return proc.stderr.strip()


# A script whose biggest allocation is known: 2000 bytearrays of 1000 bytes
# at line 3 ("data = ..."), 300 bytes objects at line 4.
SCRIPT = """\
import sys
print("args", sys.argv[1:], __name__, sys.path[0])
data = [bytearray(1000) for _ in range(2000)]
more = [bytes(5000) for _ in range(300)]
sys.exit(int(sys.argv[1]) if len(sys.argv) > 1 else 0)
"""


@pytest.fixture
def script(tmp_path):
    return write(tmp_path / "prog.py", SCRIPT)


# run's default -n (README, Command line)
DEFAULT_NFRAME = 25


def label(stat, key_type="lineno"):
    """The entry top prints for stat: str(stat), but its place names its
    function ("file:line in function") and a traceback is labelled by its
    most recent frame (the tests' files are all the program's own
    code)."""
    text = str(stat)
    if key_type == "filename":
        return text
    frame = stat.traceback[-1 if key_type == "traceback" else 0]
    place = str(frame)
    if frame.function:
        place += " in " + frame.function
    return place + text[len(str(stat.traceback)):]


def run_report(stderr):
    """The lines of run's report of the end snapshot, without the report
    of the peak and the commands to try next that follow it."""
    lines = stderr.splitlines()
    end = lines.index("ctracemalloc: next, try:")
    peak = [i for i, line in enumerate(lines[:end])
            if line.startswith("ctracemalloc: peak ")]
    return lines[:peak[0] if peak else end]


def peak_report(stderr):
    """The lines of run's report of the peak snapshot, from its first
    line ("ctracemalloc: peak SIZE at T s (N traces); at the peak:")."""
    lines = stderr.splitlines()
    start = [i for i, line in enumerate(lines)
             if line.startswith("ctracemalloc: peak ")][0]
    return lines[start:lines.index("ctracemalloc: next, try:")]


def top_entries(text):
    """The '#N: ...' lines of a report."""
    return [line.split(": ", 1)[1] for line in text.splitlines()
            if re.match(r"#\d+: ", line)]


# -- run -------------------------------------------------------------------

def test_run_script(ctm, tmp_path, script):
    out = tmp_path / "out.snapshot"
    proc = cli("run", "-o", out, "--top", 3, script, "7", "x", cwd=tmp_path)
    assert proc.returncode == 7, proc.stderr
    assert proc.stdout.splitlines()[0] == "args %r __main__ %s" % (
        ["7", "x"], str(tmp_path))
    assert "wrote the snapshot to %s" % out in proc.stderr
    snapshot = ctm.Snapshot.load(out)
    stats = snapshot.statistics("lineno")
    # the report is the snapshot's statistics, in the documented format
    assert top_entries("\n".join(run_report(proc.stderr))) == \
        [label(s) for s in stats[:3]]
    first = stats[0]
    assert (first.traceback[0].filename, first.traceback[0].lineno) == \
        (str(script), 3)
    assert first.count >= 2000
    assert first.size >= 2000 * 1000
    assert "    data = [bytearray(1000) for _ in range(2000)]" in proc.stderr
    total = sum(s.size for s in stats)
    assert "Total: size=%s, count=%d" % (
        ctm._format_size(total, False), sum(s.count for s in stats)) \
        in proc.stderr
    assert snapshot.traceback_limit == DEFAULT_NFRAME


def test_run_default_name(ctm, tmp_path, script):
    proc = cli("run", script, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    name = re.search(r"wrote the snapshot to (\S+) ", proc.stderr).group(1)
    assert re.fullmatch(r"ctracemalloc-prog-\d+\.snapshot", name)
    assert ctm.Snapshot.load(tmp_path / name).traceback_limit == \
        DEFAULT_NFRAME


DEEP = """\
import os, sys
def alloc(n):
    return [bytearray(1000) for _ in range(n)]
def down(depth, n):
    return down(depth - 1, n) if depth else alloc(n)
data = down(6, 500)
more = [bytes(5000) for _ in range(300)]
if os.environ.get("DIRECT"):
    import tracemalloc
    tracemalloc.take_snapshot().dump(sys.argv[1])
"""


def script_traces(snapshot, script):
    """(frames, total_nframe, size) of the buffers allocated in alloc(), at
    the bottom of a recursion. Not the module's own lines, which differ a
    little (the runner made __main__'s dict, so it grows at other lines),
    nor small objects, which may come from a free list the runner filled
    (before 3.13: README, Differences from the stdlib)."""
    return sorted(
        (tuple((f.filename, f.lineno) for f in t.traceback),
         t.traceback.total_nframe, t.size)
        for t in snapshot.traces
        if (t.traceback[-1].filename, t.traceback[-1].lineno) == (str(script),
                                                                3)
        and t.size >= 1000)


@pytest.mark.parametrize("nframe", [1, 5, 25])
def test_run_tracebacks_are_the_programs(ctm, tmp_path, nframe):
    """The runner's frames are not in the tracebacks: they are those that
    PYTHONTRACEMALLOC=NFRAME python SCRIPT records."""
    import tracemalloc
    prog = write(tmp_path / "deep.py", DEEP)
    direct = tmp_path / "direct.pickle"
    env = child_env()
    env.update(PYTHONTRACEMALLOC=str(nframe), DIRECT="1")
    subprocess.run([sys.executable, str(prog), str(direct)], env=env,
                   check=True, timeout=patience(120))
    ours = tmp_path / "ours.snapshot"
    proc = cli("run", "-n", nframe, "-o", ours, prog)
    assert proc.returncode == 0, proc.stderr
    snapshot = ctm.Snapshot.load(ours)
    assert snapshot.traceback_limit == nframe
    expected = script_traces(tracemalloc.Snapshot.load(str(direct)), prog)
    assert expected
    assert script_traces(snapshot, prog) == expected
    assert max(len(t.traceback) for t in snapshot.traces) <= nframe


def test_run_module_and_code(ctm, tmp_path):
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    write(pkg / "tool.py", """\
        import sys
        print(repr(sys.argv), __name__, sys.path[0])
        keep = [bytearray(100) for _ in range(1000)]
        """)
    proc = cli("run", "-o", tmp_path / "m.snapshot", "-m", "pkg.tool",
               "--top", "a", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "%r __main__ %s" % (
        [str(pkg / "tool.py"), "--top", "a"], tmp_path)
    stats = ctm.Snapshot.load(tmp_path / "m.snapshot").statistics("lineno")
    assert any(s.traceback[0].filename == str(pkg / "tool.py")
               and s.traceback[0].lineno == 3 for s in stats[:3])

    proc = cli("run", "-o", tmp_path / "c.snapshot", "-c",
               "import sys; print(sys.argv, __name__); "
               "x = [bytearray(99) for _ in range(500)]", "a", "b",
               cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "['-c', 'a', 'b'] __main__"
    stats = ctm.Snapshot.load(tmp_path / "c.snapshot").statistics("lineno")
    assert stats[0].traceback[0].filename == "<string>"


def test_run_uncaught_exception(ctm, tmp_path):
    prog = write(tmp_path / "boom.py", """\
        keep = [bytearray(1000) for _ in range(100)]
        def f():
            return 1 / 0
        f()
        """)
    proc = cli("run", "-o", tmp_path / "b.snapshot", prog, cwd=tmp_path)
    assert proc.returncode == 1
    # python's own report of the exception, without the runner's frames
    assert "Traceback (most recent call last):" in proc.stderr
    assert "ZeroDivisionError: division by zero" in proc.stderr
    assert 'File "%s", line 4, in <module>' % prog in proc.stderr
    report = proc.stderr.split("ZeroDivisionError")[0]
    assert "runpy" not in report and "_cli.py" not in report
    assert (tmp_path / "b.snapshot").exists()


def test_run_sys_exit_message(ctm, tmp_path):
    prog = write(tmp_path / "exit.py", "import sys\nsys.exit('bye now')\n")
    proc = cli("run", "-o", tmp_path / "e.snapshot", prog, cwd=tmp_path)
    assert proc.returncode == 1
    assert proc.stderr.splitlines()[0] == "bye now"
    assert (tmp_path / "e.snapshot").exists()


def test_run_ctrl_c(ctm, tmp_path):
    prog = write(tmp_path / "intr.py", """\
        import os, signal
        keep = [bytearray(1000) for _ in range(100)]
        os.kill(os.getpid(), signal.SIGINT)
        """)
    proc = cli("run", "-o", tmp_path / "i.snapshot", prog, cwd=tmp_path)
    assert proc.returncode == -signal.SIGINT
    assert "KeyboardInterrupt" in proc.stderr
    assert "wrote the snapshot" in proc.stderr
    assert ctm.Snapshot.load(tmp_path / "i.snapshot").traces


def test_run_program_that_forks(ctm, tmp_path):
    """A child the program forks and lets run to the end writes no
    snapshot of its own: the parent's report is the one."""
    prog = write(tmp_path / "forks.py", """\
        import os, sys
        keep = [bytearray(1000) for _ in range(100)]
        pid = os.fork()
        if pid == 0:
            child_data = [bytearray(2000) for _ in range(50)]
            sys.exit(5)         # ends through the runner, like the parent
        _, status = os.waitpid(pid, 0)
        print("child status", os.waitstatus_to_exitcode(status))
        """)
    proc = cli("run", "-o", tmp_path / "f.snapshot", prog, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "child status 5"
    assert proc.stderr.count("wrote the snapshot") == 1
    snapshot = ctm.Snapshot.load(tmp_path / "f.snapshot")
    sizes = {t.size for t in snapshot.traces}
    assert not any(2000 <= size < 2100 for size in sizes)   # no child data


def test_run_console_script(ctm, tmp_path, script):
    exe = shutil.which("ctracemalloc",
                       path=os.path.dirname(sys.executable))
    if exe is None:
        pytest.skip("ctracemalloc is not installed in this environment "
                    "(a development build): no console script")
    proc = subprocess.run([exe, "run", "-o", tmp_path / "s.snapshot",
                           script, "3"], cwd=tmp_path, env=child_env(),
                          capture_output=True, text=True,
                          timeout=patience(120))
    assert proc.returncode == 3, proc.stderr
    assert (tmp_path / "s.snapshot").exists()


def test_run_checks_the_output_first(ctm, tmp_path):
    """A snapshot path that cannot be written fails before the program
    runs, in one line: not after a long run, with its status lost."""
    marker = tmp_path / "ran"
    prog = write(tmp_path / "p.py", "open(%r, 'w').close()\n" % str(marker))
    for out, problem in [(tmp_path / "none" / "x.snap", "no directory"),
                         (tmp_path, "it is a directory")]:
        proc = cli("run", "-o", out, prog, cwd=tmp_path)
        assert proc.returncode == 1
        assert no_traceback(proc) == "ctracemalloc: error: cannot write " \
            "the snapshot to %s: %s" % (out, problem) + (
                " %s" % (tmp_path / "none") if problem == "no directory"
                else "")
        assert not marker.exists()
    assert cli("run", "-o", tmp_path / "ok.snap", prog).returncode == 0
    assert marker.exists()


def test_run_says_what_to_try_next(ctm, tmp_path, script):
    out = tmp_path / "my run.snapshot"
    proc = cli("run", "-o", out, script, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stderr.splitlines()
    start = lines.index("ctracemalloc: next, try:")
    commands = [shlex.split(line.split(" # ")[0])
                for line in lines[start + 1:]]
    html = str(tmp_path / "my run.html")
    flame = str(tmp_path / "my run-flamegraph.html")
    assert commands == [
        ["ctracemalloc", "top", str(out), "--key-type", "traceback"],
        ["ctracemalloc", "top", str(out), "--peak"],
        ["ctracemalloc", "report", str(out), "-o", html],
        ["ctracemalloc", "flamegraph", str(out), "-o", flame],
        ["ctracemalloc", "compare", "OLD", str(out)]]
    # they work (OLD: an earlier snapshot)
    for command in commands:
        args = [str(out) if a == "OLD" else a for a in command[1:]]
        done = cli(*args, cwd=tmp_path)
        assert done.returncode == 0, (args, done.stderr)
    assert os.path.exists(html) and os.path.exists(flame)


PEAKY = """\
def temporary():
    big = [bytes(1000) for _ in range(30_000)]
    return len(big)
def kept():
    return [bytes(1000) for _ in range(1_000)]
temporary()
keep = kept()
"""


def test_run_reports_the_peak(ctm, tmp_path):
    prog = write(tmp_path / "peaky.py", PEAKY)
    out = tmp_path / "peaky.snapshot"
    proc = cli("run", "-o", out, "--top", 2, prog, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    snapshot = ctm.Snapshot.load(out)
    peak = snapshot.peak
    stats = peak.statistics("lineno")
    assert stats[0].traceback[0].lineno == 2
    assert stats[0].count >= 30_000
    assert stats[0].size >= 30_000_000
    # the end snapshot has no trace of it (3.9 keeps a few bytes there)
    assert sum(s.size for s in snapshot.statistics("lineno")
               if s.traceback[0].lineno == 2) < 1000
    # the summary: peak N MiB at T s, then the top lines at the peak
    info = snapshot.run
    assert info["peak_bytes"] == sum(t.size for t in peak.traces)
    assert 0 < info["peak_time"] <= info["duration"]
    assert info["command"] == str(prog)
    assert info["nframe"] == 25
    assert info["end_bytes"] == sum(t.size for t in snapshot.traces)
    first = peak_report(proc.stderr)[0]
    assert first == "ctracemalloc: peak %s at %.3g s (%d traces); at the " \
        "peak:" % (ctm._format_size(info["peak_bytes"], False),
                   info["peak_time"], len(peak.traces)), first
    assert top_entries("\n".join(peak_report(proc.stderr))) == \
        [label(s) for s in stats[:2]]
    # the timeline: from the start, sorted, its highest point the peak's
    times = [t for t, _ in snapshot.timeline]
    assert times == sorted(times) and times[0] == 0
    assert max(b for _, b in snapshot.timeline) >= info["peak_bytes"]
    # top, compare and flamegraph read it with --peak
    done = cli("top", out, "--peak", "--limit", 1)
    assert done.returncode == 0, done.stderr
    assert top_entries(done.stdout) == [label(stats[0])]
    done = cli("compare", out, out, "--peak")
    assert done.returncode == 0, done.stderr
    html = tmp_path / "peak.html"
    done = cli("flamegraph", out, "--peak", "-o", html)
    assert done.returncode == 0, done.stderr
    assert "peaky.py" in html.read_text()


def test_run_without_the_peak(ctm, tmp_path):
    prog = write(tmp_path / "peaky.py", PEAKY)
    out = tmp_path / "flat.snapshot"
    proc = cli("run", "--no-peak", "-o", out, prog, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "ctracemalloc: peak" not in proc.stderr
    assert "--peak" not in proc.stderr
    assert ctm.Snapshot.load(out).peak is None
    for args in (["top", out, "--peak"], ["flamegraph", out, "--peak"]):
        done = cli(*args)
        assert done.returncode == 1
        assert done.stderr == "ctracemalloc: error: %s has no peak " \
            "snapshot: ctracemalloc run records one unless given " \
            "--no-peak, and CTRACEMALLOC_OUTPUT too\n" % out, done.stderr
    # a snapshot of a program's own has none either
    plain = tmp_path / "plain.snapshot"
    ctm.start()
    ctm.take_snapshot().dump(plain)
    ctm.stop()
    done = cli("top", plain, "--peak")
    assert done.returncode == 1 and "has no peak snapshot" in done.stderr


OWN = """\
import sys, threading
data = [bytearray(1000) for _ in range(200)]
box = []
t = threading.Thread(target=lambda: box.append(
    [bytearray(3000) for _ in range(50)]))
t.start(); t.join()
if sys.argv[1:] == ["raise"]:
    raise ValueError("boom")
"""


@pytest.mark.parametrize("how", ["ends", "raise"])
def test_run_report_has_none_of_its_own_allocations(ctm, tmp_path, how):
    """What the runner allocates itself (its snapshot call, its handling
    of the program's end) is not in the snapshot nor in the report: no
    trace has a frame in ctracemalloc's own files, while a thread of the
    program, whose traces have no frame of the runner, keeps its own."""
    prog = write(tmp_path / "own.py", OWN)
    out = tmp_path / "own.snapshot"
    proc = cli("run", "-o", out, "--top", 0, prog, how, cwd=tmp_path)
    assert proc.returncode == (1 if how == "raise" else 0), proc.stderr
    package = os.path.join(os.path.dirname(os.path.abspath(ctm.__file__)),
                           "")
    snapshot = ctm.Snapshot.load(out)
    assert snapshot.traceback_limit == DEFAULT_NFRAME
    ours = [t.traceback for t in snapshot.traces
            if any(f.filename.startswith(package) for f in t.traceback)]
    assert ours == []
    report = proc.stderr.split("wrote the snapshot")[1]
    assert package not in report and "_cli.py" not in report
    thread_blocks = [t for t in snapshot.traces if 3000 <= t.size < 3100]
    assert len(thread_blocks) >= 50


# -- top and compare -------------------------------------------------------

@pytest.fixture
def snapshots(ctm, tmp_path, script):
    """Two snapshots of the script: the second with more memory."""
    old, new = tmp_path / "old.snapshot", tmp_path / "new.snapshot"
    assert cli("run", "-n", 3, "-o", old, script).returncode == 0
    grow = write(tmp_path / "grow.py", SCRIPT.replace(
        "range(300)", "range(900)"))
    assert cli("run", "-n", 3, "-o", new, grow).returncode == 0
    return old, new


def test_top(ctm, snapshots):
    old, _ = snapshots
    snapshot = ctm.Snapshot.load(old)
    for key in ("lineno", "filename", "traceback"):
        proc = cli("top", old, "--key-type", key, "--limit", 4)
        assert proc.returncode == 0, proc.stderr
        stats = snapshot.statistics(key)
        shown = min(4, len(stats))
        assert top_entries(proc.stdout) == [label(s, key) for s in stats[:4]]
        lines = proc.stdout.splitlines()
        noun = {"lineno": "lines", "filename": "files",
                "traceback": "tracebacks"}[key]
        assert lines[0] == "Top %d %s" % (shown, noun)
        assert lines[-1] == "Total: size=%s, count=%d" % (
            ctm._format_size(sum(s.size for s in stats), False),
            sum(s.count for s in stats))
        if len(stats) > 4:
            assert lines[-2] == "%d other %s: size=%s, count=%d" % (
                len(stats) - 4, noun,
                ctm._format_size(sum(s.size for s in stats[4:]), False),
                sum(s.count for s in stats[4:]))
        else:
            assert " other " not in proc.stdout
    proc = cli("top", old, "--key-type", "traceback", "--limit", 1)
    assert proc.stdout.splitlines()[2].startswith('  File "')
    proc = cli("top", old, "--cumulative", "--limit", 0)
    stats = snapshot.statistics("lineno", cumulative=True)
    assert top_entries(proc.stdout) == [label(s) for s in stats]
    # the entries overlap: said, and the total is the traces' own
    lines = proc.stdout.splitlines()
    assert lines[:2] == ["Top %d lines (cumulative)" % len(stats),
                         "(a block counts at every line of its traceback, "
                         "so rows overlap; the total counts each block "
                         "once)"]
    assert lines[-1] == "Total: size=%s, count=%d" % (
        ctm._format_size(sum(t.size for t in snapshot.traces), False),
        len(snapshot.traces))
    assert proc.stderr == ""


def test_top_filters_and_json(ctm, snapshots, script):
    old, _ = snapshots
    snapshot = ctm.Snapshot.load(old)
    proc = cli("top", old, "--include", "*prog.py", "--json", "--limit", 2)
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    stats = snapshot.filter_traces(
        [ctm.Filter(True, "*prog.py")]).statistics("lineno")
    assert [(e["traceback"][0]["filename"], e["traceback"][0]["lineno"],
             e["size"], e["count"]) for e in data["stats"]] == \
        [(s.traceback[0].filename, s.traceback[0].lineno, s.size, s.count)
         for s in stats[:2]]
    assert data["total"] == {"size": sum(s.size for s in stats),
                             "count": sum(s.count for s in stats)}
    assert data["other"]["entries"] == len(stats) - 2
    proc = cli("top", old, "--exclude", str(script), "--limit", 0)
    assert str(script) not in proc.stdout


def test_compare(ctm, snapshots):
    old, new = snapshots
    diffs = ctm.Snapshot.load(new).compare_to(ctm.Snapshot.load(old),
                                              "lineno")
    proc = cli("compare", old, new, "--limit", 3)
    assert proc.returncode == 0, proc.stderr
    assert top_entries(proc.stdout) == [label(d) for d in diffs[:3]]
    assert "(+" in top_entries(proc.stdout)[0]
    total = proc.stdout.splitlines()[-1]
    assert total == "Total: size=%s (%s), count=%d (%+d)" % (
        ctm._format_size(sum(d.size for d in diffs), False),
        ctm._format_size(sum(d.size_diff for d in diffs), True),
        sum(d.count for d in diffs), sum(d.count_diff for d in diffs))
    data = json.loads(cli("compare", old, new, "--json").stdout)
    assert data["stats"][0]["size_diff"] == diffs[0].size_diff


def test_top_labels_a_traceback_by_the_programs_frame(ctm, tmp_path):
    """--key-type traceback labels each entry by its most recent frame in
    the program's own code: not the stdlib's, an installed package's or
    ctracemalloc's; by its most recent frame when it has none."""
    import json as stdlib_json
    app = str(tmp_path / "app.py")
    json_file = stdlib_json.__file__
    package = os.path.join(os.path.dirname(ctm.__file__), "_cli.py")
    installed = "/venv/lib/python3.11/site-packages/lib/core.py"
    raw = [  # frames most recent first
        (0, 5000, ((json_file, 353), (json_file, 337), (app, 11),
                   (app, 21)), 4),
        (0, 4000, ((installed, 7), (app, 12), (app, 21)), 3),
        (0, 3000, ((package, 400), (app, 13), (app, 21)), 3),
        (0, 2000, ((json_file, 40), ("<frozen runpy>", 88)), 2),
        (0, 1000, ((app, 14), (app, 21)), 2),
    ]
    path = tmp_path / "labels.snapshot"
    ctm.Snapshot(raw, 4).dump(path)
    proc = cli("top", path, "--key-type", "traceback")
    assert proc.returncode == 0, proc.stderr
    stats = ctm.Snapshot.load(path).statistics("traceback")
    labels = ["%s:11" % app, "%s:12" % app, "%s:13" % app,
              "%s:40" % json_file, "%s:14" % app]
    assert top_entries(proc.stdout) == [
        "%s%s" % (name, str(s)[len(str(s.traceback)):])
        for name, s in zip(labels, stats)]
    # compare labels its entries alike
    proc = cli("compare", path, path, "--key-type", "traceback", "--limit", 1)
    assert top_entries(proc.stdout)[0].startswith("%s:11: size=" % app)


LEAK = """\
import json
CACHE = []
def handle(i):
    body = json.dumps({"id": i, "items": list(range(20))})
    CACHE.append(json.loads(body))
for i in range(3000):
    handle(i)
"""


@pytest.fixture
def leak(ctm, tmp_path):
    """A leak allocated in json, called from the program's file: its
    snapshot (run's default frames) and the program."""
    prog = write(tmp_path / "leak.py", LEAK)
    out = tmp_path / "leak.snapshot"
    assert cli("run", "-o", out, prog, cwd=tmp_path).returncode == 0
    return out, prog


def test_top_on_a_leak_through_a_library(ctm, leak):
    out, prog = leak
    snapshot = ctm.Snapshot.load(out)
    # the biggest traceback: json's, labelled by the program's line
    proc = cli("top", out, "--key-type", "traceback", "--limit", 1)
    first = top_entries(proc.stdout)[0]
    assert first.startswith("%s:5 in handle: size=" % prog), proc.stdout
    json_dir = "%sjson%s" % (os.sep, os.sep)
    assert json_dir in proc.stdout.split(first)[1]
    # its frames name their functions, as Python's tracebacks do
    assert '  File "%s", line 5, in handle' % prog in proc.stdout
    assert '  File "%s", line 7, in <module>' % prog in proc.stdout
    data = json.loads(cli("top", out, "--json", "--key-type", "traceback",
                          "--limit", 1).stdout)
    assert {"filename": str(prog), "lineno": 5, "function": "handle"} in \
        data["stats"][0]["traceback"]

    def entries(filters):
        stats = snapshot.filter_traces(filters).statistics("lineno")
        return [label(s) for s in stats]

    # --include keeps the program's own lines; --include-any-frame also
    # what it allocated through json
    proc = cli("top", out, "--include", "*leak.py", "--limit", 0)
    assert top_entries(proc.stdout) == entries([ctm.Filter(True, "*leak.py")])
    assert json_dir not in proc.stdout
    proc = cli("top", out, "--include-any-frame", "*leak.py", "--limit", 0)
    assert proc.returncode == 0, proc.stderr
    expected = entries([ctm.Filter(True, "*leak.py", all_frames=True)])
    assert top_entries(proc.stdout) == expected
    assert json_dir in expected[0]
    proc = cli("top", out, "--exclude-any-frame", "*leak.py", "--limit", 0)
    assert top_entries(proc.stdout) == entries(
        [ctm.Filter(False, "*leak.py", all_frames=True)])
    assert str(prog) not in proc.stdout

    # a filter that matches nothing says so, in one line
    for args, given in [
            (["--include", "*x.py"], "--include '*x.py'"),
            (["--include", "*leak.py", "--exclude-any-frame", "*leak.py"],
             "--include '*leak.py' --exclude-any-frame '*leak.py'"),
            (["--json", "--include-any-frame", "x y.py"],
             "--include-any-frame 'x y.py'")]:
        proc = cli("top", out, *args)
        assert proc.returncode == 1
        assert proc.stdout == ""
        assert no_traceback(proc) == "ctracemalloc: error: no trace " \
            "matches %s" % given
    proc = cli("compare", out, out, "--include", "*x.py")
    assert proc.returncode == 1 and "no trace matches" in proc.stderr


def test_cumulative_total(ctm, leak):
    out, _ = leak
    snapshot = ctm.Snapshot.load(out)
    size = sum(t.size for t in snapshot.traces)
    count = len(snapshot.traces)
    # the rows add up to more than the total: the program's file counts
    # what it allocated through json too
    cumulative = snapshot.statistics("filename", cumulative=True)
    assert sum(s.size for s in cumulative) > size
    proc = cli("top", out, "--cumulative", "--key-type", "filename")
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    assert top_entries(proc.stdout) == [label(s, "filename") for s in cumulative[:10]]
    lines = proc.stdout.splitlines()
    assert lines[1] == ("(a block counts at every file of its traceback, "
                        "so rows overlap; the total counts each block once)")
    assert lines[-1] == "Total: size=%s, count=%d" % (
        ctm._format_size(size, False), count)
    data = json.loads(cli("top", out, "--cumulative", "--json").stdout)
    assert data["total"] == {"size": size, "count": count}
    proc = cli("compare", out, out, "--cumulative")
    assert proc.stdout.splitlines()[-1] == \
        "Total: size=%s (+0 B), count=%d (+0)" % (
            ctm._format_size(size, False), count)


def test_one_frame_is_said(ctm, tmp_path, script):
    """--cumulative, --key-type traceback and the flame graph show nothing
    more than plain top on a snapshot of one frame: one line says so,
    and what to do."""
    one = tmp_path / "one.snapshot"
    assert cli("run", "-n", 1, "-o", one, script).returncode == 0
    note = ("ctracemalloc: %s keeps 1 frame per traceback, so %%s: rerun "
            "with -n N (ctracemalloc run -n 25 ..., or CTRACEMALLOC=25)"
            % one)
    cases = [(("top", one, "--cumulative"), "--cumulative adds nothing"),
             (("top", one, "--key-type", "traceback"),
              "--key-type traceback adds nothing"),
             (("compare", one, one, "--cumulative"),
              "--cumulative adds nothing"),
             (("flamegraph", one, "-o", tmp_path / "one.html"),
              "its flame graph is one row of boxes")]
    for args, what in cases:
        proc = cli(*args)
        assert proc.returncode == 0, proc.stderr
        assert proc.stderr.splitlines()[0] == note % what
        if args[0] != "flamegraph":
            assert proc.stdout.startswith("Top ")
    deep = tmp_path / "deep.snapshot"
    assert cli("run", "-n", 3, "-o", deep, script).returncode == 0
    for args in (("top", deep, "--cumulative"),
                 ("top", deep, "--key-type", "traceback")):
        assert cli(*args).stderr == ""


# -- flamegraph ------------------------------------------------------------

def flame_data(html):
    m = re.search(r'<script id="data" type="application/json">(.*?)'
                  r'</script>', html, re.S)
    return json.loads(m.group(1))


def test_flamegraph(ctm, snapshots, tmp_path):
    _, new = snapshots
    out = tmp_path / "f.html"
    proc = cli("flamegraph", new, "-o", out)
    assert proc.returncode == 0, proc.stderr
    html = out.read_text()
    # self-contained: nothing fetched
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", html)
    assert "<link" not in html
    data = flame_data(html)
    snapshot = ctm.Snapshot.load(new)
    stats = snapshot.statistics("traceback")
    assert data["size"][0] == sum(s.size for s in stats)
    assert data["count"][0] == sum(s.count for s in stats)
    # the tree: a node holds at least its children, and the most recent
    # frames of every traceback are leaves holding their statistic
    n = len(data["parent"])
    child_sum = [0] * n
    for i in range(1, n):
        assert data["parent"][i] < i
        child_sum[data["parent"][i]] += data["size"][i]
    assert all(child_sum[i] <= data["size"][i] for i in range(n))
    names = data["names"]
    for stat in stats[:5]:
        node = 0
        for frame in stat.traceback:            # oldest first
            node = next(i for i in range(n) if data["parent"][i] == node
                        and names[data["file"][i]] == frame.filename
                        and data["line"][i] == frame.lineno)
        assert data["size"][node] >= stat.size
    # the source line of the script's biggest line is in the page
    assert "data = [bytearray(1000) for _ in range(2000)]" in \
        data["sources"]
    # the default name
    proc = cli("flamegraph", new, cwd=tmp_path)
    assert (tmp_path / "new-flamegraph.html").exists()


def test_flamegraph_escapes(ctm, tmp_path):
    raw = [(0, 10, (("</script><script>alert(1)</script>{{DATA}}", 1),), 1)]
    path = tmp_path / "evil{{DATA}}.snapshot"
    ctm.Snapshot(raw, 1).dump(path)
    assert cli("flamegraph", path, "-o", tmp_path / "e.html").returncode == 0
    html = (tmp_path / "e.html").read_text()
    assert "<script>alert" not in html
    assert html.count("{{DATA}}") == 0 or "evil{{DATA}}" in html
    assert flame_data(html)["names"] == [raw[0][2][0][0]]


def chromium():
    for name in ("chromium", "chromium-browser", "google-chrome"):
        exe = shutil.which(name)
        if exe:
            return exe
    return None


def selftest(page):
    """The page's own test run in Chromium: (its title, the DOM)."""
    exe = chromium()
    if exe is None:
        pytest.skip("Chromium is not installed (Debian: apt-get install "
                    "chromium): the page's own test cannot run")
    # the browser gets none of the sanitizer run's preloads and options
    env = {k: v for k, v in os.environ.items()
           if k != "LD_PRELOAD" and not k.endswith("SAN_OPTIONS")}
    proc = subprocess.run(
        [exe, "--headless", "--no-sandbox", "--disable-gpu",
         "--window-size=1200,800", "--virtual-time-budget=5000",
         "--dump-dom", page.as_uri() + "#selftest"],
        capture_output=True, text=True, timeout=patience(120), env=env)
    title = re.search(r"<title>(.*?)</title>", proc.stdout)
    assert title is not None, proc.stderr[-2000:]
    return title.group(1), proc.stdout


def test_flamegraph_in_chromium(ctm, snapshots, tmp_path):
    _, new = snapshots
    out = tmp_path / "f.html"
    assert cli("flamegraph", new, "-o", out).returncode == 0
    title, _ = selftest(out)
    assert title.startswith("selftest: ok"), title


# -- bad input ---------------------------------------------------------------

def test_bad_input(ctm, tmp_path, script):
    damaged = tmp_path / "damaged.snapshot"
    ctm.Snapshot([(0, 1, (("a.py", 1),), 1)], 1).dump(damaged)
    damaged.write_bytes(damaged.read_bytes()[:-3])
    cases = [
        (("top", tmp_path / "missing.snapshot"), 1, "No such file"),
        (("top", damaged), 1, "truncated snapshot file"),
        (("top", script), 1, "not a ctracemalloc snapshot"),
        (("compare", damaged, damaged), 1, "truncated"),
        (("flamegraph", tmp_path), 1, "cannot"),
        (("top",), 2, "required: FILE"),
        (("top", damaged, "--limit", "x"), 2, "not a number"),
        (("top", damaged, "--limit", "-1"), 2, "must not be negative"),
        (("top", damaged, "--key-type", "size"), 2, "invalid choice"),
        (("top", damaged, "--bogus"), 2, "unrecognized arguments: --bogus"),
        (("frobnicate",), 2, "invalid choice"),
        (("run",), 2, "give a SCRIPT"),
        (("run", "-n", "0", script), 2, "from 1 to 65535"),
        (("run", "-n", "x", script), 2, "not a number"),
        (("run", tmp_path / "nope.py"), 1, "cannot open file"),
        (("run", "-m", "no_such_module_here"), 1, "no module named"),
        (("run", "-m", "no_such_module_here", "-c", "y"), 1,
         "no module named"),
        (("run", "--output"), 2, "expected one argument"),
    ]
    for args, status, message in cases:
        proc = cli(*args, cwd=tmp_path)
        assert proc.returncode == status, (args, proc.stderr)
        line = no_traceback(proc)
        assert line.startswith("ctracemalloc: error: "), line
        assert message in line, (args, line)
    good = tmp_path / "good.snapshot"
    ctm.Snapshot([(0, 1, (("a.py", 1),), 1)], 1).dump(good)
    proc = cli("top", good, "--key-type", "traceback", "--cumulative")
    assert proc.returncode == 2
    assert "cumulative" in no_traceback(proc)
    assert cli().returncode == 2
    for command in ("run", "top", "compare", "flamegraph"):
        proc = cli(command, "--help")
        assert proc.returncode == 0 and "usage:" in proc.stdout


def test_usage_errors_point_to_the_commands_help(ctm, tmp_path, script):
    good = tmp_path / "good.snapshot"
    ctm.Snapshot([(0, 1, (("a.py", 1),), 1)], 1).dump(good)
    cases = [("top", (good, "--unknown"), "unrecognized arguments: --unknown"),
             ("compare", (good, good, "--x", "1"),
              "unrecognized arguments: --x 1"),
             ("flamegraph", (good, "--limit", "3"),
              "unrecognized arguments: --limit 3"),
             ("top", (good, "--limit", "x"), "not a number"),
             ("run", ("--bogus", script), "unrecognized arguments: --bogus"),
             ("run", ("-n", "0", script), "from 1 to 65535")]
    for command, args, message in cases:
        proc = cli(command, *args, cwd=tmp_path)
        assert proc.returncode == 2
        line = no_traceback(proc)
        assert message in line, line
        assert line.endswith("(see ctracemalloc %s --help)" % command), line


def test_version(ctm):
    proc = cli("--version")
    assert proc.returncode == 0
    assert proc.stdout == "ctracemalloc %s\n" % ctm.__version__
    # the package's version is the project's
    pyproject = os.path.join(SOURCES, os.pardir, "pyproject.toml")
    with open(pyproject) as f:
        declared = re.search(r'^version = "(.*)"$', f.read(), re.M).group(1)
    assert ctm.__version__ == declared


def test_top_into_closed_pipe(ctm, snapshots):
    old, _ = snapshots
    proc = subprocess.run(
        "%s -m ctracemalloc top %s --limit 0 --key-type traceback | head -1"
        % (sys.executable, old), shell=True, env=child_env(),
        capture_output=True, text=True, timeout=patience(120))
    assert proc.stdout.startswith("Top")
    assert "Traceback" not in proc.stderr


# -- progress ----------------------------------------------------------------

def big_snapshot(ctm, path):
    """A file of several MiB: 400k traces of 5-byte sizes."""
    raw = [(0, (i * 2654435761) % 2**40, (("a.py", i % 100),), 1)
           for i in range(400_000)]
    ctm.Snapshot(raw, 1).dump(path)
    return path


def test_load_progress(ctm, tmp_path):
    path = big_snapshot(ctm, tmp_path / "big.snapshot")
    size = path.stat().st_size
    assert size > 3 * 2**20
    calls = []
    ctm.Snapshot.load(path, progress=lambda *a: calls.append(a))
    assert calls and all(total == size for _, total in calls)
    done = [d for d, _ in calls]
    assert done == sorted(done) and done[-1] > size - 2**21
    # the stdlib's pickle: the parse is reported
    pickled = tmp_path / "big.pickle"
    ctm.Snapshot.load(path).dump(pickled, format="pickle")
    calls.clear()
    ctm.Snapshot.load(pickled, progress=lambda *a: calls.append(a))
    assert len(calls) > 5
    assert all(total == pickled.stat().st_size for _, total in calls)

    def stop(done, total):
        raise RuntimeError("stop at %d" % done)

    for p in (path, pickled):
        with pytest.raises(RuntimeError, match="stop at"):
            ctm.Snapshot.load(p, progress=stop)
    with pytest.raises(TypeError, match="progress must be callable"):
        ctm.Snapshot.load(path, progress=3)


def test_cli_progress_on_terminal(ctm, tmp_path):
    path = big_snapshot(ctm, tmp_path / "big.snapshot")
    master, slave = os.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "ctracemalloc", "top",
                             str(path)], stdout=subprocess.PIPE,
                            stderr=slave, env=child_env())
    os.close(slave)
    seen = b""
    while True:
        try:
            chunk = os.read(master, 4096)
        except OSError:         # EIO: the other side closed
            break
        if not chunk:
            break
        seen += chunk
    os.close(master)
    out = proc.stdout.read().decode()
    assert proc.wait(timeout=patience(60)) == 0
    assert b"loading big.snapshot: " in seen and b"%" in seen
    assert seen.endswith(b"\r\x1b[K")      # the line is cleared at the end
    assert out.startswith("Top 10 lines")
    # not a terminal: no progress
    proc = cli("top", path)
    assert proc.returncode == 0 and proc.stderr == ""


# -- startup tracing and install() -------------------------------------------

STARTUP_PROBE = ("import tracemalloc, sys; "
                 "print(tracemalloc.__name__, tracemalloc.is_tracing(), "
                 "tracemalloc.get_traceback_limit())")


# the source tree's, for development builds
SOURCES = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir,
                       "src")


def startup_installed():
    import ctracemalloc
    site = os.path.dirname(os.path.dirname(ctracemalloc.__file__))
    return os.path.exists(os.path.join(site, "ctracemalloc-startup.pth"))


def with_startup(code):
    """code, run as startup tracing runs it: where pip has not installed
    ctracemalloc-startup.pth beside the package (a development build),
    code first has site read the source tree's, as it reads it at
    startup, later (after the interpreter's own imports, before the
    program's)."""
    if startup_installed():
        return code
    return "import site; site.addsitedir(%r)\n%s" % (SOURCES, code)


def python(code, env_extra, cwd=None, options=()):
    env = child_env()
    env.update(env_extra)
    return subprocess.run([sys.executable, *options, "-c",
                           with_startup(code)], env=env, cwd=cwd,
                          capture_output=True, text=True,
                          timeout=patience(120))


def test_startup_tracing(ctm, tmp_path):
    proc = python(STARTUP_PROBE, {"CTRACEMALLOC": "7"})
    assert proc.stdout.split() == ["ctracemalloc", "True", "7"], proc.stderr
    assert proc.stderr == ""
    for value in ("", "0", None):       # off, silently, as for the stdlib
        env = {} if value is None else {"CTRACEMALLOC": value}
        proc = python(STARTUP_PROBE, env)
        assert proc.stdout.split() == ["tracemalloc", "False", "1"]
        assert proc.stderr == ""
    for value in ("abc", "00", "-3", "70000"):
        proc = python(STARTUP_PROBE, {"CTRACEMALLOC": value})
        assert proc.stdout.split() == ["tracemalloc", "False", "1"]
        line = no_traceback(proc)
        assert line == ("ctracemalloc: CTRACEMALLOC=%r is not a number of "
                        "frames from 1 to 65535: tracing stays off" % value)
    # before the program's first import: a module's import is traced
    write(tmp_path / "heavy.py", "TABLE = [bytearray(100) for _ in "
                                 "range(3000)]\n")
    proc = python("import heavy, ctracemalloc; "
                  "s = ctracemalloc.take_snapshot(); "
                  "print(sum(st.count for st in s.statistics('lineno') "
                  "if st.traceback[0].filename.endswith('heavy.py')))",
                  {"CTRACEMALLOC": "1", "PYTHONPATH": "%s%s%s" % (
                      tmp_path, os.pathsep, child_env()["PYTHONPATH"])},
                  cwd=tmp_path)
    assert int(proc.stdout) >= 3000, proc.stderr


@pytest.mark.parametrize("option", ["-E", "-I"])
def test_startup_tracing_ignores_the_environment_as_python_does(ctm, option):
    """-E and -I turn CTRACEMALLOC off, as they turn PYTHONTRACEMALLOC off
    (the stdlib's tracer, checked here the same way)."""
    probe = "import tracemalloc; print(tracemalloc.is_tracing())"
    for var in ("CTRACEMALLOC", "PYTHONTRACEMALLOC"):
        proc = python(probe, {var: "7"})
        assert proc.stdout.split() == ["True"], (var, proc.stderr)
        proc = python(probe, {var: "7"}, options=[option])
        assert proc.stdout.split() == ["False"], (var, option, proc.stderr)
        assert proc.stderr == ""


def test_startup_tracing_leaves_the_stdlib_to_who_names_it(ctm):
    """With PYTHONTRACEMALLOC set (even empty: off) or -X tracemalloc, the
    program asks for the stdlib's tracer: `import tracemalloc` stays the
    stdlib's, configured as asked, while ctracemalloc traces as well
    (CPython's test_tracemalloc starts its children this way, and they
    inherit CTRACEMALLOC)."""
    probe = STARTUP_PROBE + "; import ctracemalloc; " \
        "print(ctracemalloc.is_tracing())"
    cases = [({"PYTHONTRACEMALLOC": "10"}, (), ["tracemalloc", "True", "10"]),
             ({"PYTHONTRACEMALLOC": ""}, (), ["tracemalloc", "False", "1"]),
             ({}, ("-X", "tracemalloc=4"), ["tracemalloc", "True", "4"])]
    for env, options, expected in cases:
        proc = python(probe, dict(env, CTRACEMALLOC="3"), options=options)
        assert proc.stdout.split() == expected + ["True"], (env, proc.stderr)


def test_startup_output(ctm, tmp_path):
    """CTRACEMALLOC_OUTPUT=FILE: the snapshot is written at exit, and
    nothing else printed; a path that cannot be written warns once at
    startup; alone, or with CTRACEMALLOC=0, it does nothing."""
    out = tmp_path / "at exit.snapshot"
    code = ("import atexit\n"
            "keep = [bytearray(1000) for _ in range(300)]\n"
            "temp = [bytearray(1000) for _ in range(3000)]; del temp\n"
            "atexit.register(lambda: print('bye'))\n")
    proc = python(code, {"CTRACEMALLOC": "4",
                         "CTRACEMALLOC_OUTPUT": str(out)}, cwd=tmp_path)
    assert proc.returncode == 0
    assert (proc.stdout, proc.stderr) == ("bye\n", "")
    snapshot = ctm.Snapshot.load(out)
    assert snapshot.traceback_limit == 4
    # the peak is recorded too: the temporary on the line after keep's
    top = snapshot.peak.statistics("lineno")[0]
    keep = snapshot.statistics("lineno")[0]
    assert top.traceback[0].lineno == keep.traceback[0].lineno + 1
    assert top.size >= 3000 * 1000
    stats = snapshot.statistics("lineno")
    assert stats[0].traceback[-1].filename == "<string>"
    assert stats[0].count >= 300 and stats[0].size >= 300 * 1000
    # ctracemalloc's own allocations (the hook, the exit's writing) are
    # not in it
    package = os.path.join(os.path.dirname(os.path.abspath(ctm.__file__)),
                           "")
    assert not [t for t in snapshot.traces
                if any(f.filename.startswith(package) for f in t.traceback)]
    out.unlink()
    for env in ({"CTRACEMALLOC_OUTPUT": str(out)},
                {"CTRACEMALLOC": "0", "CTRACEMALLOC_OUTPUT": str(out)}):
        proc = python(STARTUP_PROBE, env, cwd=tmp_path)
        assert proc.stdout.split() == ["tracemalloc", "False", "1"]
        assert proc.stderr == ""
        assert not out.exists()
    bad = tmp_path / "missing" / "x.snapshot"
    proc = python(STARTUP_PROBE, {"CTRACEMALLOC": "4",
                                  "CTRACEMALLOC_OUTPUT": str(bad)})
    assert proc.stdout.split() == ["tracemalloc", "False", "1"]
    assert no_traceback(proc) == (
        "ctracemalloc: CTRACEMALLOC_OUTPUT=%r: no directory %s: tracing "
        "stays off" % (str(bad), tmp_path / "missing"))


def test_startup_output_is_the_programs(ctm, tmp_path):
    """The file is the traced program's: a Python it starts inherits both
    variables and traces, but writes nothing, whether it ends before the
    program, through a shell, or after it (it wrote its own snapshot over
    the program's). A relative FILE is taken from the directory the program
    started in, wherever it is at its exit."""
    child = with_startup(
        "import sys, tracemalloc\n"
        "assert tracemalloc.is_tracing()\n"
        "mine = [bytearray(77777) for _ in range(50)]\n"
        "print('ready', flush=True)\n"
        "sys.stdin.read()\n")      # until the program's end closes the pipe
    code = textwrap.dedent("""\
        import os, subprocess, sys
        child = %r
        keep = [bytearray(1000) for _ in range(100)]
        subprocess.run([sys.executable, "-c", child], input="", text=True,
                       capture_output=True, check=True)
        subprocess.run(["sh", "-c", '"$0" -c "$1" </dev/null; true',
                        sys.executable, child], capture_output=True,
                       check=True)
        assert not os.path.exists("out.snapshot")
        late = subprocess.Popen([sys.executable, "-c", child],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                text=True)
        assert late.stdout.readline() == "ready\\n"
        print(late.pid)
        os.mkdir("elsewhere")
        os.chdir("elsewhere")
        """) % child
    proc = python(code, {"CTRACEMALLOC": "4",
                         "CTRACEMALLOC_OUTPUT": "out.snapshot"}, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    late = int(proc.stdout)
    deadline = time.monotonic() + patience(60)
    while time.monotonic() < deadline:     # gone, or a zombie nobody reaps
        try:
            with open("/proc/%d/stat" % late) as f:
                if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                    break
        except FileNotFoundError:
            break
        time.sleep(0.05)
    else:
        raise AssertionError("the late child did not end")
    assert not (tmp_path / "elsewhere" / "out.snapshot").exists()
    sizes = [t.size for t in ctm.Snapshot.load(tmp_path / "out.snapshot")
             .traces]
    assert sum(size in (1000, 1001) for size in sizes) >= 100
    assert not [size for size in sizes if 77777 <= size <= 77778]


def test_install_resource_warning(ctm, tmp_path):
    code = textwrap.dedent("""\
        import ctracemalloc, warnings, gc
        previous = ctracemalloc.install()
        import tracemalloc
        assert tracemalloc is ctracemalloc, tracemalloc
        assert previous is None or previous.__name__ == "tracemalloc"
        ctracemalloc.start(5)
        def leak():
            f = open(__file__ if False else %r)
            return None
        leak()
        gc.collect()
        """ % os.devnull)
    prog = write(tmp_path / "leak.py", code)
    env = child_env()
    proc = subprocess.run([sys.executable, "-W", "always::ResourceWarning",
                           str(prog)], env=env, capture_output=True,
                          text=True, timeout=patience(120))
    assert proc.returncode == 0, proc.stderr
    assert "ResourceWarning: unclosed file" in proc.stderr
    assert "Object allocated at (most recent call last):" in proc.stderr
    assert 'File "%s", lineno 8' % prog in proc.stderr
