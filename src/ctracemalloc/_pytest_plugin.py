"""The pytest plugin (issue 20): memory limits and leak checks per test.

Registered by the `pytest11` entry point; it acts only with
`pytest --ctracemalloc` (or `ctracemalloc = true` in the ini file).
Without it the markers are registered and nothing else happens.

    @pytest.mark.limit_memory("24 MB")   the peak of traced memory during
                                         the test's call over the limit fails
    @pytest.mark.limit_leaks("1 MB", filter_fn=None)
                                         memory allocated during the call and
                                         alive after it (and a collection),
                                         over the limit at one traceback, fails

Tracing is on during each test's call only (not its setup or teardown, nor
pytest's own work between tests): start(nframe, peak=True) before the call,
the measures after it, stop(). So the traces after the call are exactly
what the call allocated and still holds, and get_traced_memory()[1] is its
peak. A test that stops, restarts or starts tracing itself is not measured,
and the session's summary says so. Workers of pytest-xdist measure their
own tests and send each one's figures on its report (an attribute, which
xdist serializes), so the controller prints the summary.

Glue only: the report's helpers are the command line's (_cli.py).
"""
import gc
import heapq
import linecache
import os

import pytest

from ._sizes import parse_size, size_text

MARKERS = (
    "limit_memory(limit, *, current_thread_only=False): with --ctracemalloc, "
    "fail the test if the peak of traced memory during its call exceeds "
    "limit (a size: '24 MB', '512 KiB').",
    "limit_leaks(location_limit, *, filter_fn=None, current_thread_only="
    "False): with --ctracemalloc, fail the test if the memory that its call "
    "allocated and still holds after a garbage collection exceeds "
    "location_limit at one traceback; filter_fn(traceback) returning False "
    "leaves a traceback out.",
)
# The attribute of a call's TestReport that carries its figures (xdist
# sends a report's attributes from the worker to the controller).
REPORT_ATTR = "ctracemalloc"
# Lines shown under a limit_memory failure, locations under limit_leaks'.
SHOWN = 10


def tm():
    import ctracemalloc
    return ctracemalloc


def cli():
    from . import _cli
    return _cli


def pytest_addoption(parser):
    group = parser.getgroup("ctracemalloc", "memory per test (ctracemalloc)")
    group.addoption("--ctracemalloc", action="store_true", default=None,
                    help="trace each test's memory: enforce the limit_memory "
                         "and limit_leaks markers, and list the tests with "
                         "the highest peaks at the end")
    group.addoption("--ctracemalloc-top", type=int, default=5, metavar="N",
                    help="the number of tests listed at the end (default 5;"
                         " 0: none)")
    group.addoption("--ctracemalloc-nframe", type=int, default=5,
                    metavar="N",
                    help="frames kept per traceback (default 5)")
    group.addoption("--ctracemalloc-native", action="store_true",
                    default=False,
                    help="trace native memory too (start(native=True))")
    group.addoption("--ctracemalloc-sample", default=None, metavar="SIZE",
                    help="sampled tracing, one sample every SIZE allocated "
                         "on average (start(sample_interval=SIZE)): sizes "
                         "are estimates")
    parser.addini("ctracemalloc", type="bool", default=False,
                  help="trace each test's memory, as --ctracemalloc")


@pytest.hookimpl(trylast=True)     # after pytest-memray's, if installed
def pytest_configure(config):
    for line in MARKERS:
        config.addinivalue_line("markers", line)
    enabled = config.getoption("ctracemalloc")
    if enabled is None:
        enabled = config.getini("ctracemalloc")
    if enabled:
        tracer = Tracer(config)
        tracer.memray = memray_aside(config)
        config.pluginmanager.register(tracer, "ctracemalloc-tracer")


# pytest-memray's plugin object, registered by its pytest_configure
MEMRAY = "memray_manager"


def memray_aside(config):
    """pytest-memray, installed, traces each test that has one of its
    markers, which are ours too, with or without --memray: with
    --ctracemalloc as well, memray's work would be charged to the tests
    and a test over a limit failed twice. So --ctracemalloc unregisters it
    (a suite switches by the flag alone) and returns it, for its cleanup
    at the end; --memray with it is a usage error."""
    manager = config.pluginmanager.get_plugin(MEMRAY)
    if manager is None:
        return None
    if config.getoption("memray", False):
        option_error("--ctracemalloc and pytest-memray's --memray both "
                     "trace each test: give one")
    config.pluginmanager.unregister(manager)
    return manager


def memray_cleanup(manager, config):
    """What pytest-memray's own pytest_unconfigure does (its temporary
    directory, its environment variable): a hook wrapper, driven here.
    Best effort: a version whose wrapper wants the outcome of the hook
    leaves its directory to TemporaryDirectory's own cleanup at exit."""
    finish = getattr(manager, "pytest_unconfigure", None)
    try:
        wrapper = finish(config) if finish is not None else None
        if wrapper is not None and hasattr(wrapper, "send"):
            for _ in wrapper:
                pass
    except Exception:
        pass


def option_error(text):
    raise pytest.UsageError("ctracemalloc: " + text)


class Limits:
    """A test's limits, read from its markers; UsageError if bad."""

    def __init__(self, item):
        self.memory = self.leaks = None
        self.filter_fn = None
        memory = item.get_closest_marker("limit_memory")
        if memory is not None:
            self.memory = self.size(item, memory, ())
        leaks = item.get_closest_marker("limit_leaks")
        if leaks is not None:
            self.leaks = self.size(item, leaks, ("filter_fn",))
            self.filter_fn = leaks.kwargs.get("filter_fn")
            if self.filter_fn is not None and not callable(self.filter_fn):
                self.bad(item, leaks, "filter_fn must be callable, not %r"
                         % (self.filter_fn,))

    def any(self):
        return self.memory is not None or self.leaks is not None

    @staticmethod
    def bad(item, marker, text):
        raise pytest.UsageError("%s: @pytest.mark.%s: %s"
                                % (item.nodeid, marker.name, text))

    def size(self, item, marker, more):
        args = list(marker.args)
        kwargs = dict(marker.kwargs)
        names = {"limit_memory": "limit", "limit_leaks": "location_limit"}
        name = names[marker.name]
        if name in kwargs:
            args.insert(0, kwargs.pop(name))
        if len(args) != 1:
            self.bad(item, marker, "takes one size, as in %s(\"24 MB\"), "
                     "not %d arguments" % (marker.name, len(args)))
        if kwargs.pop("current_thread_only", False):
            self.bad(item, marker, "current_thread_only=True is not "
                     "supported: ctracemalloc traces every thread")
        unknown = sorted(set(kwargs) - set(more))
        if unknown:
            self.bad(item, marker, "unknown argument %s" % unknown[0])
        try:
            return parse_size(args[0])
        except ValueError as exc:
            self.bad(item, marker, str(exc))


def runner_dirs():
    """pytest's and pluggy's folders, each ending with a separator."""
    import _pytest
    import pluggy
    return tuple(os.path.join(os.path.dirname(m.__file__), "")
                 for m in (_pytest, pluggy))


def own_filters():
    """Filters that leave out what pytest, pluggy and this plugin
    allocate during a call (the most recent frame in their files)."""
    Filter = tm().Filter
    return ([Filter(False, d + "*") for d in runner_dirs()]
            + [Filter(False, __file__)])


def shown_frames(traceback):
    """The frames of a traceback worth printing: those below pytest's
    and pluggy's (which call every test), or all if nothing is left."""
    dirs = runner_dirs()
    frames = list(traceback)
    while frames and frames[0].filename.startswith(dirs):
        frames.pop(0)
    return frames or list(traceback)


def average(size, count):
    return tm()._format_size(size // count if count else 0, False)


def program_lines(snapshot):
    """The snapshot's memory grouped by the program's own line (_cli's
    program_frame of each traceback), most first: [(frame, size, count)]."""
    program_frame = cli().program_frame
    rows = {}
    for stat in snapshot.statistics("traceback"):
        frame = program_frame(stat.traceback)
        key = (frame.filename, frame.lineno)
        old = rows.get(key)
        if old is None:
            rows[key] = [frame, stat.size, stat.count]
        else:
            old[1] += stat.size
            old[2] += stat.count
    return sorted(rows.values(), key=lambda r: (-r[1], -r[2]))


def line_text(frame, size, count):
    fmt = tm()._format_size
    return "%s: size=%s, count=%d, average=%s" % (
        cli().place(frame), fmt(size, False), count, average(size, count))


def source(frame):
    line = linecache.getline(frame.filename, frame.lineno).strip()
    return ["    " + line] if line else []


def sampling_lines(snapshot):
    from . import _recording
    note = _recording.sampling_note(snapshot)
    return ["(" + note + ")"] if note else []


class Tracer:
    """The plugin's state while it is enabled: the tracing options, and
    (on the controller, or without xdist) what the summary lists."""

    def __init__(self, config):
        self.config = config
        nframe = config.getoption("ctracemalloc_nframe")
        if not 1 <= nframe <= 65535:
            option_error("--ctracemalloc-nframe must be from 1 to 65535, "
                         "not %d" % nframe)
        self.top = config.getoption("ctracemalloc_top")
        if self.top < 0:
            option_error("--ctracemalloc-top must not be negative: %d"
                         % self.top)
        sample = config.getoption("ctracemalloc_sample")
        try:
            sample = parse_size(sample) if sample is not None else 0
        except ValueError as exc:
            option_error("--ctracemalloc-sample: %s" % exc)
        self.start_args = dict(peak=True,
                               native=config.getoption("ctracemalloc_native"),
                               sample_interval=sample)
        self.nframe = nframe
        self.filters = None
        self.memray = None      # pytest-memray's plugin, set aside
        # this process's top peaks: a heap of (peak, nodeid)
        self.heap = []
        # the summary's: {nodeid: figures}, and the tests not measured
        self.measured = {}
        self.aside = []
        self.session_aside = None
        if tm().is_tracing():
            self.session_aside = (
                "tracing was already on when pytest started (startup "
                "tracing, or `ctracemalloc run`): the plugin leaves it "
                "alone and measures nothing")

    # -- collection: the markers' arguments, checked before any test runs

    def pytest_collection_modifyitems(self, items):
        worker = hasattr(self.config, "workerinput")
        for item in items:
            try:
                item._ctracemalloc_limits = Limits(item)
            except pytest.UsageError as exc:
                if not worker:
                    raise
                # an xdist worker cannot end the session with a usage
                # error (the controller reports a crash): the test errors
                # at its setup with the same line
                item._ctracemalloc_error = str(exc)

    def pytest_runtest_setup(self, item):
        error = getattr(item, "_ctracemalloc_error", None)
        if error:
            pytest.fail(error, pytrace=False)

    def pytest_report_header(self, config):
        if self.session_aside:
            return "ctracemalloc: " + self.session_aside
        note = ""
        if self.start_args["sample_interval"]:
            note = ", sampled every %s (sizes are estimates)" % size_text(
                self.start_args["sample_interval"])
        lines = ["ctracemalloc: tracing each test's call, %d frames%s%s"
                 % (self.nframe, ", native memory too"
                    if self.start_args["native"] else "", note)]
        if self.memray is not None:
            lines.append("ctracemalloc: pytest-memray is installed: its "
                         "markers' handling is off for this run")
        return lines

    def pytest_unconfigure(self, config):
        if self.memray is not None:
            memray_cleanup(self.memray, config)

    # -- each test's call

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_call(self, item):
        if self.session_aside:
            yield
            return
        ctm = tm()
        if ctm.is_tracing():
            item._ctracemalloc = {"aside": "tracing was already on when the "
                                           "test's call began"}
            yield
            return
        ctm.start(self.nframe, **self.start_args)
        try:
            yield
        finally:
            item._ctracemalloc = self.measure(item)

    def changed(self):
        ctm = tm()
        if not ctm.is_tracing():
            return "the test stopped tracing"
        if ctm.get_traceback_limit() != self.nframe:
            return "the test restarted tracing with other options"
        return None

    def measure(self, item):
        """The call's figures, taken before tracing stops: its peak, the
        peak snapshot when needed, the leak snapshot for limit_leaks."""
        ctm = tm()
        limits = getattr(item, "_ctracemalloc_limits", None) or Limits(item)
        change = self.changed()
        if change is not None:
            if ctm.is_tracing():
                ctm.stop()
            return {"aside": change}
        figures = {"peak": ctm.get_traced_memory()[1]}
        try:
            over = (limits.memory is not None
                    and figures["peak"] > limits.memory)
            if over or self.enters_top(figures["peak"]):
                figures["peak_snapshot"] = ctm.take_peak_snapshot()
            if limits.leaks is not None:
                figures["leak_snapshot"] = self.leak_snapshot(limits)
        except RuntimeError:    # peak=False: the test restarted tracing
            return {"aside": "the test restarted tracing with other options"}
        finally:
            if ctm.is_tracing():
                ctm.stop()
        figures["limits"] = limits
        return figures

    def leak_snapshot(self, limits):
        """The traces alive after the call and a garbage collection. A
        full collection takes milliseconds in a large suite, and only
        frees: it runs only when some traceback is over the limit
        without it."""
        snapshot = tm().take_snapshot()
        if self.over_limit(snapshot, limits):
            gc.collect()
            snapshot = tm().take_snapshot()
        return snapshot

    def over_limit(self, snapshot, limits):
        """The statistics of the tracebacks that hold more than the leak
        limit, pytest's and this plugin's own allocations left out."""
        return [s for s in self.own_left_out(snapshot).statistics("traceback")
                if s.size > limits.leaks]

    def own_left_out(self, snapshot):
        if self.filters is None:
            self.filters = own_filters()
        return snapshot.filter_traces(self.filters)

    def enters_top(self, peak):
        return self.top and (len(self.heap) < self.top
                             or peak > self.heap[0][0])

    # -- the call's report: failures, and the figures for the summary

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_makereport(self, item, call):
        outcome = yield
        if call.when != "call":
            return
        report = outcome.get_result()
        figures = item.__dict__.pop("_ctracemalloc", None)
        if figures is None:
            return
        if "aside" in figures:
            limits = getattr(item, "_ctracemalloc_limits", None)
            note = figures["aside"]
            if limits is not None and limits.any():
                note += "; its limit markers were not checked"
            setattr(report, REPORT_ATTR, {"aside": note})
            return
        texts = self.failures(figures)
        sent = {"peak": figures["peak"], "top": None}
        if figures.get("peak_snapshot") is not None and \
                self.enters_top(figures["peak"]):
            heapq.heappush(self.heap, (figures["peak"], item.nodeid))
            if len(self.heap) > self.top:
                heapq.heappop(self.heap)
            sent["top"] = self.top_line(figures["peak_snapshot"])
        setattr(report, REPORT_ATTR, sent)
        if texts:
            text = "\n\n".join(texts)
            if report.passed:
                report.outcome = "failed"
                report.longrepr = text
            else:
                report.sections.append(("ctracemalloc", text))

    def top_line(self, snapshot):
        """The summary's line for a test: its largest line at the peak,
        and that line's source."""
        lines = program_lines(self.own_left_out(snapshot))
        if not lines:
            return None
        frame, size, count = lines[0]
        return "\n".join([line_text(frame, size, count)] + source(frame))

    def failures(self, figures):
        limits = figures["limits"]
        texts = []
        fmt = tm()._format_size
        peak = figures["peak"]
        if limits.memory is not None and peak > limits.memory:
            snapshot = figures["peak_snapshot"]
            lines = [
                "ctracemalloc: limit_memory(%r): the peak of traced memory "
                "during the test was %s (%d B), over the limit of %s (%d B)"
                % (size_text(limits.memory), fmt(peak, False), peak,
                   size_text(limits.memory), limits.memory)]
            lines += sampling_lines(snapshot)
            rows = program_lines(self.own_left_out(snapshot))
            # the lines that held 1% of the peak or more, at most SHOWN
            shown = [r for r in rows[:SHOWN] if r[1] * 100 >= peak] or rows[:1]
            lines.append("Top %d line%s at the peak:" % (
                len(shown), "" if len(shown) == 1 else "s"))
            for index, (frame, size, count) in enumerate(shown):
                lines.append("#%d: %s" % (index + 1,
                                          line_text(frame, size, count)))
                lines += source(frame)
            rest = rows[len(shown):]
            if rest:
                size = sum(r[1] for r in rest)
                lines.append("%d other lines: size=%s, count=%d" % (
                    len(rest), fmt(size, False), sum(r[2] for r in rest)))
            texts.append("\n".join(lines))
        if limits.leaks is not None:
            text = self.leaks(figures["leak_snapshot"], limits)
            if text:
                texts.append(text)
        return texts

    def leaks(self, snapshot, limits):
        """The text of the tracebacks that leaked more than the limit
        (those filter_fn keeps), or None."""
        over = self.over_limit(snapshot, limits)
        kept = []
        for stat in over:
            if limits.filter_fn is None:
                kept.append(stat)
                continue
            try:
                keep = limits.filter_fn(stat.traceback)
            except Exception as exc:
                return ("ctracemalloc: limit_leaks: filter_fn raised %s: %s"
                        % (type(exc).__name__, exc))
            if keep:
                kept.append(stat)
        if not kept:
            return None
        total = sum(s.size for s in kept)
        lines = [
            "ctracemalloc: limit_leaks(%r): %d location%s leaked more than "
            "%s each (%s in all): memory allocated during the test and "
            "still alive after it and a garbage collection"
            % (size_text(limits.leaks), len(kept),
               "" if len(kept) == 1 else "s", size_text(limits.leaks),
               tm()._format_size(total, False))]
        lines += sampling_lines(snapshot)
        _cli = cli()
        for index, stat in enumerate(kept[:SHOWN]):
            lines.append("#%d: %s" % (index + 1,
                                      _cli.entry_text(stat, "traceback")))
            lines += _cli.traceback_lines(shown_frames(stat.traceback))
        if len(kept) > SHOWN:
            lines.append("... and %d more locations" % (len(kept) - SHOWN))
        return "\n".join(lines)

    # -- the summary (on the controller with xdist)

    def pytest_runtest_logreport(self, report):
        figures = getattr(report, REPORT_ATTR, None)
        if report.when != "call" or not figures:
            return
        if "aside" in figures:
            self.aside.append((report.nodeid, figures["aside"]))
        else:
            self.measured[report.nodeid] = figures

    def pytest_terminal_summary(self, terminalreporter):
        if hasattr(self.config, "workerinput"):
            return          # an xdist worker: the controller prints it
        write = terminalreporter.write_line
        if self.session_aside:
            terminalreporter.write_sep("=", "ctracemalloc")
            write("ctracemalloc: " + self.session_aside)
            return
        if not self.top and not self.aside:
            return
        top = heapq.nlargest(self.top, self.measured.items(),
                             key=lambda kv: kv[1]["peak"])
        terminalreporter.write_sep(
            "=", "ctracemalloc: the %d tests with the highest peaks"
            % len(top))
        if self.start_args["sample_interval"]:
            write("(sampled, one sample every %s allocated on average: sizes "
                  "are estimates)"
                  % size_text(self.start_args["sample_interval"]))
        fmt = tm()._format_size
        for index, (nodeid, figures) in enumerate(top):
            write("#%d: %s: peak %s" % (index + 1, nodeid,
                                        fmt(figures["peak"], False)))
            for line in (figures.get("top") or "").splitlines():
                write("    " + line)
        for nodeid, note in self.aside:
            write("not measured: %s: %s (the plugin traces the next tests "
                  "again)" % (nodeid, note))
