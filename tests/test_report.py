"""The report of a run (_report.py, `ctracemalloc report`): the page is
built from real snapshots and loaded in headless Chromium driven by
Playwright, which checks what a person would see: the chart drawn with
every point of the timeline and the peak marked, the right time and size
on hover, the flame graph at the peak and at the end, the top tables,
no console error and no network request. A screenshot (report.png) goes
to CTRACEMALLOC_TEST_ARTIFACTS (default: the test's tmp_path).

The browser tests fail, saying why, when Playwright or Chromium is
missing: scripts/test installs Playwright (tests/requirements.txt) and
.ci/run Debian's chromium.
"""
import contextlib
import math
import os
import platform
import re
import shutil
import subprocess
import sys
import textwrap
import time

import pytest

from test_cli import cli, no_traceback
from tmhelpers import child_env, patience

pytestmark = pytest.mark.ctm_only

CHROMIUM = "/usr/bin/chromium"

# The program traced: at its high point it holds the bytearrays of
# load_rows (line 6) and the bytes of keep_index (line 10); at its end
# only the bytes.
PROGRAM = """\
import sys
import ctracemalloc


def load_rows():
    return [bytearray(1000) for _ in range(3000)]


def keep_index():
    return [bytes(500) for _ in range(2000)]


def main():
    index = keep_index()
    rows = load_rows()
    ctracemalloc.take_snapshot().dump(sys.argv[1])
    del rows
    ctracemalloc.take_snapshot().dump(sys.argv[2])
    return index


ctracemalloc.start(25)
main()
"""
PEAK_ONLY = "prog.py:6"
KEPT = "prog.py:10"


def ctm_module():
    from conftest import require_ctm
    return require_ctm()


@pytest.fixture(scope="module")
def program(tmp_path_factory):
    """(the program's path, its peak snapshot, its end snapshot)."""
    ctm = ctm_module()
    d = tmp_path_factory.mktemp("report")
    prog = d / "prog.py"
    prog.write_text(PROGRAM)
    proc = subprocess.run(
        [sys.executable, str(prog), str(d / "peak.snap"),
         str(d / "end.snap")], env=child_env(), capture_output=True,
        text=True, timeout=patience(120))
    assert proc.returncode == 0, proc.stderr
    return (prog, ctm.Snapshot.load(str(d / "peak.snap")),
            ctm.Snapshot.load(str(d / "end.snap")))


def total(snapshot):
    return sum(s.size for s in snapshot.statistics("filename"))


def timeline_for(peak_bytes, end_bytes, start_bytes=60_000):
    """A realistic timeline sampled every 20 ms: a climb to the peak at
    0.8 s, a plateau, a fall to the end from 1.1 s."""
    points = []
    for i in range(61):
        t = i * 0.02
        if t <= 0.8:
            size = start_bytes + (peak_bytes - start_bytes) * t / 0.8
        elif t < 1.1:
            size = peak_bytes - 7 * (i % 3)      # noise below the peak
        else:
            size = end_bytes + (peak_bytes - end_bytes) * max(
                0.0, 1 - (t - 1.1) / 0.06)
        points.append((round(t, 3), int(size)))
    return points


@pytest.fixture(scope="module")
def run(program):
    from ctracemalloc import _report
    _, peak, end = program
    timeline = timeline_for(total(peak), total(end))
    peak_time, peak_bytes = max(timeline, key=lambda p: p[1])
    return _report.Run(end, peak, timeline, {
        "command": "prog.py peak.snap end.snap",
        "python": platform.python_version(), "duration": 1.2,
        "peak_bytes": peak_bytes, "peak_time": peak_time,
        "end_bytes": total(end), "nframe": 25})


# -- the browser ---------------------------------------------------------------

@contextlib.contextmanager
def clean_environment():
    """os.environ without the sanitizer run's preloads and options (and
    its PYTHONMALLOC), for the Playwright driver and the browser it
    starts: they inherit it."""
    saved = dict(os.environ)
    for key in list(os.environ):
        if key in ("LD_PRELOAD", "PYTHONMALLOC") or \
                key.endswith("SAN_OPTIONS"):
            del os.environ[key]
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


@pytest.fixture(scope="module")
def browser():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as exc:
        pytest.fail("Playwright is not installed (%s): pip install -r "
                    "tests/requirements.txt, as scripts/test does" % exc)
    exe = CHROMIUM if os.path.exists(CHROMIUM) else shutil.which("chromium")
    if exe is None:
        pytest.fail("Chromium not found at %s nor on PATH (Debian: apt-get "
                    "install chromium, as scripts/test does): the report's "
                    "browser tests cannot run" % CHROMIUM)
    with clean_environment():
        manager = sync_playwright().start()
        try:
            b = manager.chromium.launch(executable_path=exe,
                                        env=dict(os.environ))
        except Exception:
            manager.stop()
            raise
    yield b
    b.close()
    manager.stop()


class Loaded:
    """A page opened in the browser, with what it logged and fetched."""

    def __init__(self, browser, path):
        self.errors = []
        self.requests = []
        self.url = path.as_uri()
        self.page = browser.new_page(viewport={"width": 1200,
                                               "height": 900})
        self.page.on("console", lambda m: m.type == "error" and
                     self.errors.append(m.text))
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.page.on("request", lambda r: self.requests.append(r.url))
        started = time.perf_counter()
        self.page.goto(self.url)
        self.page.wait_for_function("document.body.dataset.drawn",
                                    timeout=patience(30) * 1000)
        self.seconds = time.perf_counter() - started
        # ms from navigation start to the end of the page's drawing
        self.drawn_ms = float(self.page.evaluate(
            "document.body.dataset.drawn"))

    def texts(self, selector):
        return self.page.eval_on_selector_all(
            selector, "els => els.map(e => e.textContent)")

    def labels(self):
        """The labels of the flame graph boxes on show: "func (file:line)"
        where the function is known."""
        return self.page.eval_on_selector_all(
            ".view:not([hidden]) .flame .node",
            "els => els.map(e => e.textContent)")

    def visible_boxes(self):
        """The places of the flame graph boxes on show ("file:line"),
        without their functions."""
        return [re.sub(r"^.* \((.*)\)$", r"\1", label)
                for label in self.labels()]

    def close(self):
        self.page.close()


@pytest.fixture
def open_page(browser):
    pages = []

    def opener(path):
        pages.append(Loaded(browser, path))
        return pages[-1]
    yield opener
    for p in pages:
        p.close()


def artifacts(tmp_path):
    d = os.environ.get("CTRACEMALLOC_TEST_ARTIFACTS")
    if not d:
        return tmp_path
    os.makedirs(d, exist_ok=True)
    return d


def write(run, path, **kw):
    from ctracemalloc import _report
    path.write_text(_report.render(run, **kw), encoding="utf-8")
    return path


def chart_points(loaded):
    """The polyline's points as [(x, y)], in the SVG's pixels."""
    raw = loaded.page.get_attribute("#memory-line", "points")
    return [tuple(map(float, p.split(","))) for p in raw.split()]


# -- the page ------------------------------------------------------------------

def test_self_contained(run, tmp_path):
    from ctracemalloc import _report
    page = _report.render(run)
    # no resource from elsewhere, nor any address at all outside the
    # embedded data (whose source lines are the program's)
    code = re.sub(r'<script id="data".*?</script>', "", page, flags=re.S)
    assert not re.search(r"https?://", code)
    assert not re.search(r"""(src|href)\s*=|url\(|@import|<link""", code)
    assert "<script src" not in page


def test_report_in_browser(ctm, run, program, tmp_path, open_page):
    """Drawn, hovered and switched as a person would; the screenshot is
    report.png."""
    prog, peak, end = program
    page = open_page(write(run, tmp_path / "report.html"))
    assert page.errors == []
    assert page.requests == [page.url]

    # the chart: a point per sample, the peak marked where it is
    points = chart_points(page)
    assert len(points) == len(run.timeline)
    xs = [x for x, _ in points]
    assert xs == sorted(xs) and len(set(xs)) == len(xs)
    top = points[[b for _, b in run.timeline].index(run.meta["peak_bytes"])]
    dot = page.page.eval_on_selector(
        "#peak-dot", "e => [+e.getAttribute('cx'), +e.getAttribute('cy')]")
    assert dot == pytest.approx(list(top), abs=0.11)
    assert min(y for _, y in points) == pytest.approx(top[1], abs=0.11)
    assert page.texts("#peak-label") == ["peak %s at %.3f s" % (
        ctm._format_size(run.meta["peak_bytes"], False),
        run.meta["peak_time"])]
    labels = page.texts("#chart text")
    assert "0.0 s" in labels and "1.2 s" in labels
    assert any(re.fullmatch(r"\d+ (KiB|MiB)", t) for t in labels), labels
    assert "time since start (s)" in labels

    # hovering: the time and size of the nearest sample
    box = page.page.eval_on_selector(
        "#chart", "e => { var r = e.getBoundingClientRect();"
                  " return [r.left, r.top]; }")
    # (a pixel either side: the nearest sample, not the one before)
    for index, dx in ((7, -1.5), (33, 1.5), (58, -1.5)):
        x, y = points[index]
        page.page.mouse.move(box[0] + x + dx, box[1] + y)
        t, size = run.timeline[index]
        assert page.page.inner_text("#chart-tip") == \
            "%.3f s: %s (%s bytes)" % (t, ctm._format_size(size, False),
                                       "{:,}".format(size))
        assert page.page.is_visible("#chart-tip")
    # the screenshot, with the chart's tooltip on show
    page.page.screenshot(path=os.path.join(artifacts(tmp_path),
                                           "report.png"), full_page=True)

    # the flame graph at the peak: the program's lines
    selected = page.texts('nav.tabs button[aria-selected="true"]')
    assert selected == ["At the peak"]
    boxes = page.visible_boxes()
    assert PEAK_ONLY in boxes and KEPT in boxes
    # hovering a box tells its size
    page.page.locator(".view:not([hidden]) .flame .node").nth(
        boxes.index(PEAK_ONLY)).hover()
    tip = page.page.inner_text("#tip")
    assert str(prog) + ":6" in tip
    assert "bytearray(1000) for _ in range(3000)" in tip
    # the top line at the peak is load_rows', with its size and count
    first = peak.statistics("lineno")[0]
    assert first.traceback[0].lineno == 6
    row = page.texts("#view-peak table.top tbody tr:first-child td")
    assert row[1] == ctm._format_size(first.size, False)
    assert row[3] == str(first.count)
    assert row[4].startswith("load_rows (%s:6)" % prog)

    # switched to the end: the bytearrays are gone, the bytes stay
    page.page.click('nav.tabs button:text-is("At the end")')
    boxes = page.visible_boxes()
    assert KEPT in boxes and PEAK_ONLY not in boxes
    row = page.texts("#view-end table.top tbody tr:first-child td")
    first = end.statistics("lineno")[0]
    assert first.traceback[0].lineno == 10
    assert row[1] == ctm._format_size(first.size, False)
    page.page.click('nav.tabs button:text-is("At the peak")')
    assert PEAK_ONLY in page.visible_boxes()
    assert page.errors == []


def test_header(ctm, run, program, tmp_path, open_page):
    page = open_page(write(run, tmp_path / "report.html"))
    meta = dict(zip(page.texts("dl.meta dt"), page.texts("dl.meta dd")))
    assert meta == {
        "command": "prog.py peak.snap end.snap",
        "Python": platform.python_version(),
        "duration": "1.200 s",
        "peak": "%s at %.3f s" % (
            ctm._format_size(run.meta["peak_bytes"], False),
            run.meta["peak_time"]),
        "end": "%s, %d traces" % (ctm._format_size(total(run.end), False),
                                  len(run.end.traces)),
        "frames": "25 a traceback"}


def test_without_peak_nor_timeline(ctm, program, tmp_path, open_page):
    """A snapshot alone: the page says what was not recorded, and shows
    the end."""
    from ctracemalloc import _report
    _, _, end = program
    page = open_page(write(_report.Run(end), tmp_path / "r.html"))
    assert page.errors == []
    assert page.page.is_visible("#chart-empty")
    assert not page.page.is_visible("#chart")
    assert page.texts('nav.tabs button[aria-selected="true"]') == \
        ["At the end"]
    assert KEPT in page.visible_boxes()
    meta = dict(zip(page.texts("dl.meta dt"), page.texts("dl.meta dd")))
    assert meta["peak"] == "not recorded"
    assert meta["command"] == "not recorded"
    assert meta["duration"] == "not recorded"
    assert meta["end"].startswith(ctm._format_size(total(end), False))
    page.page.click('nav.tabs button:text-is("At the peak")')
    assert page.page.inner_text("#view-peak").strip() == \
        "The snapshot at the peak was not recorded."
    assert page.visible_boxes() == []


def test_native_memory_is_labelled(ctm, tmp_path, open_page):
    from ctracemalloc import _report
    frames = (("app.py", 3),)
    snapshot = ctm.Snapshot([
        (0, 4000, frames, 1),
        (ctm.NATIVE_DOMAIN, 90_000, frames, 1),
        (ctm.NATIVE_DOMAIN, 10_000, (("app.py", 5),), 1),
    ], 1)
    page = open_page(write(_report.Run(snapshot), tmp_path / "n.html"))
    assert page.errors == []
    assert "native" in page.visible_boxes()
    rows = page.texts("#view-end table.top tbody tr")
    assert rows[0].startswith("1") and "native app.py:3" in rows[0]
    assert "native" not in [r for r in rows if "4000 B" in r][0]
    # the flame graph's legend splits the total, as the flamegraph's does
    legend = page.texts("#view-end .legend")[0]
    assert "native: size=97.7 KiB, count=2" in legend


def test_function_names(ctm, run, tmp_path, open_page):
    """The core names each frame's function: the page says "func
    (file:line)", in the flame graph and in the tables."""
    page = open_page(write(run, tmp_path / "f.html"))
    stat = run.peak.statistics("lineno")[0]
    frame = stat.traceback[0]
    assert frame.function
    label = "%s (%s:%d)" % (frame.function, os.path.basename(frame.filename),
                            frame.lineno)
    assert label in page.labels()
    row = page.texts("#view-peak table.top tbody tr:first-child td")
    assert row[4].startswith("%s (%s:%d)" % (frame.function, frame.filename,
                                             frame.lineno))


def test_escaping(ctm, tmp_path, open_page):
    from ctracemalloc import _report
    evil = "</script><script>alert(1)</script>{{DATA}}.py"
    snapshot = ctm.Snapshot([(0, 100, ((evil, 1),), 1)], 1)
    run = _report.Run(snapshot, None, [(0.0, 10), (1.0, 100)],
                      {"command": "<b>x</b> {{VIEWS}}"})
    page = open_page(write(run, tmp_path / "e.html"))
    assert page.errors == []
    assert page.page.title() == "<b>x</b> {{VIEWS}}: memory report"
    assert evil + ":1" in page.texts("#view-end table.top tbody td")
    assert len(chart_points(page)) == 2


def test_sampled_run_says_so(ctm, tmp_path, open_page):
    """A sampled run's header says that its sizes and counts are
    estimates, and at what interval; its tables and flame graph show the
    estimates (a block of s bytes sampled at T stands for 1/P(s) blocks,
    P(s) = 1 - exp(-s/T))."""
    from ctracemalloc import _report
    raw = [(0, 1000, (("app.py", 3),), 1)] * 10
    end = ctm.Snapshot(raw, 1, sample_interval=64 * 1024)
    assert end.sample_interval == 64 * 1024
    stat, = end.statistics("lineno")
    assert stat.size == 10 * int(1000 / -math.expm1(-1000 / 65536) + 0.5)
    page = open_page(write(_report.Run(end), tmp_path / "s.html"))
    assert page.errors == []
    meta = dict(zip(page.texts("dl.meta dt"), page.texts("dl.meta dd")))
    assert meta["sampling"] == ("Sampled, one sample every 64 KiB "
                                "allocated on average: sizes and counts "
                                "are estimates")
    row = page.texts("#view-end table.top tbody tr:first-child td")
    assert row[1] == ctm._format_size(stat.size, False)
    assert row[3] == "%d" % stat.count
    assert "size=%s" % ctm._format_size(stat.size, False) in \
        page.texts("#view-end .summary")[0]
    # an exact run's header has no such row
    page = open_page(write(_report.Run(ctm.Snapshot(raw, 1)),
                           tmp_path / "e.html"))
    assert "sampling" not in page.texts("dl.meta dt")


def test_long_timeline_is_thinned(ctm, program, tmp_path, open_page):
    """200,000 samples: at most four points a pixel column are drawn,
    the peak among them, and hovering still reads every sample."""
    from ctracemalloc import _report
    _, _, end = program
    timeline = [(i / 1000, 1_000_000 + (i * 7919) % 100_003)
                for i in range(200_000)]
    timeline[123_457] = (123.457, 5_000_000)
    page = open_page(write(_report.Run(end, None, timeline),
                           tmp_path / "l.html"))
    assert page.errors == []
    points = chart_points(page)
    width = page.page.eval_on_selector("#chart", "e => e.clientWidth")
    assert len(timeline) > len(points) <= 4 * width
    assert min(y for _, y in points) == pytest.approx(
        page.page.eval_on_selector("#peak-dot", "e => +e.getAttribute('cy')"),
        abs=0.11)


def test_a_million_traces_open_quickly(ctm, tmp_path, open_page):
    """A run whose snapshots hold a million traces: the page embeds the
    grouped tree and tables, and opens (navigation to drawn) in under two
    seconds."""
    from ctracemalloc import _report
    ctm.start(5)
    a = [object() for _ in range(500_000)]
    b = [object() for _ in range(300_000)]
    c = [bytes(40) for _ in range(200_000)]
    peak = ctm.take_snapshot()
    del b
    end = ctm.take_snapshot()
    ctm.stop()
    del a, c
    assert len(peak.traces) >= 1_000_000
    timeline = [(i * 0.01, 1_000_000 + 30_000 * min(i, 1000))
                for i in range(2000)]
    started = time.perf_counter()
    path = write(_report.Run(end, peak, timeline), tmp_path / "m.html")
    rendered = time.perf_counter() - started
    assert path.stat().st_size < 2_000_000
    page = open_page(path)
    print("million traces: render %.3f s, page drawn %.0f ms after "
          "navigation start, %.3f s from goto" % (
              rendered, page.drawn_ms, page.seconds))
    assert page.errors == []
    assert page.drawn_ms < 2000
    assert len(chart_points(page)) == len(timeline)
    assert any(label.startswith("test_report.py:") for label in
               page.visible_boxes())


# -- the command ---------------------------------------------------------------

def test_report_command(ctm, tmp_path, open_page):
    """run -n 25 -o x.snap, then report x.snap -o r.html, opened."""
    script = tmp_path / "app.py"
    script.write_text(textwrap.dedent("""\
        data = [bytearray(1000) for _ in range(2000)]
        more = [bytes(5000) for _ in range(300)]
        temp = [bytes(1000) for _ in range(20000)]; del temp
        """))
    snap = tmp_path / "x.snap"
    proc = cli("run", "-n", 25, "-o", snap, script, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    out = tmp_path / "r.html"
    proc = cli("report", snap, "-o", out, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.strip() == \
        "ctracemalloc: wrote the report of %s to %s" % (snap, out)
    page = open_page(out)
    assert page.errors == []
    assert page.requests == [page.url]
    snapshot = ctm.Snapshot.load(str(snap))
    info = snapshot.run
    # the peak's tab opens first: the temporary of line 3 held it
    assert "app.py:3" in page.visible_boxes()
    # the run file's timeline, drawn, its peak marked
    assert len(chart_points(page)) == len(snapshot.timeline)
    assert page.texts("#peak-label") == ["peak %s at %.3f s" % (
        ctm._format_size(info["peak_bytes"], False), info["peak_time"])]
    meta = dict(zip(page.texts("dl.meta dt"), page.texts("dl.meta dd")))
    assert meta["frames"] == "25 a traceback"
    assert meta["end"] == "%s, %d traces" % (
        ctm._format_size(total(snapshot), False), len(snapshot.traces))
    assert meta["command"] == str(script)
    assert meta["peak"] == "%s at %.3f s" % (
        ctm._format_size(info["peak_bytes"], False), info["peak_time"])
    page.page.click("text=At the end")
    assert "app.py:1" in page.visible_boxes()
    assert "app.py:3" not in page.visible_boxes()
    row = page.texts("#view-end table.top tbody tr:first-child td")
    assert row[4] == "<module> (%s:1)data = [bytearray(1000) for _ in " \
        "range(2000)]" % script


def test_report_command_bad_input(ctm, tmp_path):
    snap = tmp_path / "x.snap"
    ctm.Snapshot([(0, 1, (("a.py", 1),), 1)], 1).dump(str(snap))
    cases = [
        (("report", tmp_path / "missing.snap", "-o", tmp_path / "r.html"),
         1, "cannot read"),
        (("report", tmp_path / "prog.txt", "-o", tmp_path / "r.html"),
         1, "not a ctracemalloc snapshot"),
        (("report", snap, "-o", tmp_path / "no" / "r.html"), 1,
         "cannot write"),
        (("report",), 2, "required: RUN"),
        (("report", snap, "-o"), 2, "expected one argument"),
    ]
    (tmp_path / "prog.txt").write_text("print(1)\n")
    for args, status, message in cases:
        proc = cli(*args, cwd=tmp_path)
        assert proc.returncode == status, (args, proc.stderr)
        line = no_traceback(proc)
        assert line.startswith("ctracemalloc: error: "), line
        assert message in line, (args, line)
    proc = cli("report", "--help")
    assert proc.returncode == 0 and "usage:" in proc.stdout
    # the default name, in the current directory
    assert cli("report", snap, cwd=tmp_path).returncode == 0
    assert (tmp_path / "x-report.html").exists()
