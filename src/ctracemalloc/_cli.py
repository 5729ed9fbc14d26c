"""The ctracemalloc command line (python -m ctracemalloc, or ctracemalloc).

    ctracemalloc run [-n NFRAME] [-o FILE] [--top N] [--native]
                     [--no-peak] [--sample SIZE] SCRIPT [ARGS...]
    ctracemalloc run [...] -m MODULE [ARGS...]
    ctracemalloc run [...] -c CODE [ARGS...]
    ctracemalloc top FILE [--key-type K] [--cumulative] [--limit N]
                          [--include PATTERN]... [--exclude PATTERN]...
                          [--include-any-frame PATTERN]...
                          [--exclude-any-frame PATTERN]...
                          [--domain D] [--json]
    ctracemalloc compare OLD NEW [same options as top]
    ctracemalloc flamegraph FILE [-o OUT.html] [--domain D]
    ctracemalloc report RUN [-o OUT.html]
    ctracemalloc --version

Native memory (NATIVE_DOMAIN: what extensions and their libraries allocate
with malloc, mmap and the like, traced by run --native) is named wherever
a snapshot has some: entries marked [native], totals split into Python
and native. A snapshot without native traces prints as it always did.

Sampled snapshots (run --sample SIZE: start(sample_interval=SIZE)) hold
estimates: every report says so, and at what interval, before anything
else (compare: of each side); --json gives "sample_interval", one per
file. An exact snapshot prints as it always did.

Glue only: tracing, snapshots, statistics, files and the flame graph's
tree are the C core's. Bad input never shows a Python traceback: one line
on stderr naming the problem, and exit status 2 for a bad command line, 1
for a file that cannot be read or written.
"""
import argparse
import functools
import heapq
import json
import linecache
import os
import re
import shlex
import signal
import sys

from . import __version__, _recording
from ._sizes import parse_size, size_text

PROG = "ctracemalloc"
KEY_TYPES = ("lineno", "filename", "traceback")
KEY_NOUNS = {"lineno": "lines", "filename": "files",
             "traceback": "tracebacks"}
KEY_NOUN = {"lineno": "line", "filename": "file"}
# Frames per traceback that run keeps unless -n says otherwise: 25 frames
# cost little more than 1 (README, Command line: the measure).
DEFAULT_NFRAME = 25
DOMAINS = ("all", "python", "native")
NATIVE_TAG = "[native] "
DOMAIN_LABELS = {"python": "Python", "native": "native"}


class UsageError(Exception):
    """A bad command line: exit status 2."""


class Failure(Exception):
    """Something the command could not do: exit status 1."""


class CannotStart(Exception):
    """start() refused: run's own failure, not the program's exception."""


class Parser(argparse.ArgumentParser):
    """argparse, with one line per error instead of a usage block."""

    def error(self, message):
        raise UsageError("%s (see %s --help)" % (message, self.prog))


def tm():
    import ctracemalloc
    return ctracemalloc


def int_arg(low, high, problem):
    """An argparse type: an int from low to high (None: no bound)."""
    def parse(text):
        try:
            n = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError("not a number: %r" % text)
        if n < low or (high is not None and n > high):
            raise argparse.ArgumentTypeError(problem % n)
        return n
    return parse


nframe_arg = int_arg(1, 65535, "the number of frames must be from 1 to "
                               "65535, not %d")
count_arg = int_arg(0, None, "must not be negative: %d")

# The largest sampling interval start() takes (a signed 64-bit count).
MAX_SAMPLE_INTERVAL = 2 ** 63 - 1


def sample_arg(text):
    """An argparse type: a sampling interval in bytes (_sizes.parse_size:
    512KiB, 1MB...), 0 for exact tracing."""
    try:
        size = parse_size(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc))
    if size > MAX_SAMPLE_INTERVAL:
        raise argparse.ArgumentTypeError(
            "the sampling interval must be at most %d bytes, not %d"
            % (MAX_SAMPLE_INTERVAL, size))
    return size


# -- reading snapshots -------------------------------------------------------

def load_for(args, path):
    """The snapshot of path that args ask for: the end snapshot, or with
    --peak the peak snapshot a run recorded with it."""
    snapshot = load(path)
    if not getattr(args, "peak", False):
        return snapshot
    peak = _recording.peak_of(snapshot)
    if peak is None:
        raise Failure("%s has no peak snapshot: ctracemalloc run records "
                      "one unless given --no-peak, and CTRACEMALLOC_OUTPUT "
                      "too" % path)
    return peak


def load(path):
    """Snapshot.load, with progress on stderr when it is a terminal (the
    loader reports every 1% of a file of more than a MiB)."""
    shown = []

    def progress(done, total):
        sys.stderr.write("\rloading %s: %d%%" % (
            os.path.basename(path), 100 * done // max(total, 1)))
        sys.stderr.flush()
        shown.append(done)

    try:
        return tm().Snapshot.load(
            path, progress=progress if sys.stderr.isatty() else None)
    except OSError as exc:
        raise Failure("cannot read %s: %s" % (path, exc.strerror or exc))
    except ValueError as exc:
        raise Failure("cannot load %s: %s" % (path, exc))
    finally:
        if shown:
            sys.stderr.write("\r\033[K")     # the line, cleared
            sys.stderr.flush()


# -- domains -----------------------------------------------------------------

def domain_filter(native):
    """A DomainFilter keeping the native traces (native true) or all the
    others (Python's, and the domains extensions report to)."""
    return tm().DomainFilter(native, tm().NATIVE_DOMAIN)


def split(snapshot):
    """(python, native): the snapshot's traces outside NATIVE_DOMAIN and
    in it. Without native traces, python is the snapshot itself."""
    native = snapshot.filter_traces([domain_filter(True)])
    if not len(native.traces):
        return snapshot, native
    return snapshot.filter_traces([domain_filter(False)]), native


def restricted(snapshot, domain):
    """The snapshot with the traces of --domain."""
    if domain == "all":
        return snapshot
    return snapshot.filter_traces([domain_filter(domain == "native")])


# The file filters: option, inclusive, all_frames (Filter's arguments).
FILE_FILTERS = (("include", True, False), ("include_any_frame", True, True),
                ("exclude", False, False), ("exclude_any_frame", False, True))


def filtered(args, *snapshots):
    """The snapshots with the traces that --domain and the file filters
    keep. The domain goes first and alone: inclusive filters are
    alternatives, so an inclusive DomainFilter among --include patterns
    would add traces instead of restricting them. File filters that
    leave no trace of snapshots that had some fail with one line, not an
    empty report (the domain alone does not: a snapshot without native
    traces prints as it always did)."""
    snapshots = [restricted(s, args.domain) for s in snapshots]
    given = [(option, inclusive, all_frames, pattern)
             for option, inclusive, all_frames in FILE_FILTERS
             for pattern in getattr(args, option)]
    if not given:
        return snapshots
    filters = [tm().Filter(inclusive, pattern, all_frames=all_frames)
               for _, inclusive, all_frames, pattern in given]
    kept = [s.filter_traces(filters) for s in snapshots]
    if any(len(s.traces) for s in snapshots) \
            and not any(len(s.traces) for s in kept):
        raise Failure("no trace matches %s" % " ".join(
            "--%s %s" % (option.replace("_", "-"), shlex.quote(pattern))
            for option, _, _, pattern in given))
    return kept


def note_one_frame(paths, snapshots, what):
    """One line on stderr when a snapshot keeps one frame per traceback,
    where what (--cumulative, --key-type traceback, the flame graph) needs
    more to show anything more."""
    for path, snapshot in zip(paths, snapshots):
        if snapshot.traceback_limit == 1:
            print("%s: %s keeps 1 frame per traceback, so %s: rerun with "
                  "-n N (%s run -n %d ..., or CTRACEMALLOC=%d)"
                  % (PROG, path, what, PROG, DEFAULT_NFRAME, DEFAULT_NFRAME),
                  file=sys.stderr)
            return


# -- statistics --------------------------------------------------------------

def statistics(args, snapshot, old=None):
    try:
        if old is None:
            return snapshot.statistics(args.key_type, args.cumulative)
        return snapshot.compare_to(old, args.key_type, args.cumulative)
    except ValueError as exc:       # cumulative with 'traceback'
        raise UsageError(str(exc))
    except OverflowError as exc:    # sizes that add up beyond 64 bits
        raise Failure(str(exc))


def domain_statistics(args, snapshot, old=None):
    """(stats, natives): statistics (compare_to's when old is given), most
    first, and for each whether it counts native traces. When neither
    snapshot has native traces, natives is None and stats are those of
    the whole snapshot, as ever. Otherwise each side is grouped on its
    own, so that a line that allocated both has an entry for each, and
    the two lists are merged in the order statistics() sorts."""
    sides = [split(s) for s in (snapshot, old) if s is not None]
    if not any(len(native.traces) for _, native in sides):
        return statistics(args, snapshot, old), None
    merged = heapq.merge(*(
        [(stat, native) for stat in statistics(
            args, *[pair[native] for pair in sides])]
        for native in (False, True)),
        key=lambda entry: entry[0]._sort_key(), reverse=True)
    entries = list(merged)
    return [s for s, _ in entries], [n for _, n in entries]


def overall(args, snapshot, old=None):
    """With --cumulative, the (stats, natives) whose sums are the totals:
    those of the traces counted once, as cumulative entries overlap.
    Otherwise None: the entries' own."""
    if not args.cumulative:
        return None
    once = argparse.Namespace(key_type="filename", cumulative=False)
    return domain_statistics(once, snapshot, old)


# Frames of code that is not the program's own: the stdlib (lib/pythonX.Y),
# installed packages and frozen modules, wherever the snapshot was written.
LIBRARY_PATH = re.compile(r"[/\\](site-packages|dist-packages|"
                          r"lib(64)?[/\\]python\d+(\.\d+)?)[/\\]|^<frozen ")


@functools.lru_cache(maxsize=None)
def library_dirs():
    """This interpreter's stdlib and site-packages directories, and
    ctracemalloc's own, each ending with a separator."""
    import site
    import sysconfig
    paths = sysconfig.get_paths()
    dirs = {paths.get(k) for k in ("stdlib", "platstdlib", "purelib",
                                   "platlib")}
    dirs.update(site.getsitepackages() if hasattr(site, "getsitepackages")
                else ())
    dirs.add(os.path.dirname(os.path.abspath(__file__)))
    return tuple(os.path.join(d, "") for d in dirs if d)


def program_frame(traceback):
    """The traceback's most recent frame in the program's own code (not
    the stdlib's, an installed package's or ctracemalloc's), or else its
    most recent frame."""
    for frame in reversed(traceback):
        name = frame.filename
        if not (name.startswith(library_dirs()) or LIBRARY_PATH.search(name)):
            return frame
    return traceback[-1]


def place(frame):
    """"file:line in function" (Python's traceback says "line N, in
    function"), or "file:line" where the function is not known."""
    name = getattr(frame, "function", None)
    return "%s in %s" % (frame, name) if name else str(frame)


def entry_text(stat, key_type):
    """An entry as tracemalloc prints the statistic, its place named with
    its function, and a traceback labelled by its program_frame:
    tracemalloc labels it by its oldest frame, the same <module> line for
    most entries."""
    text = str(stat)
    if key_type == "filename" or not len(stat.traceback):
        return text
    frame = (program_frame(stat.traceback) if key_type == "traceback"
             else stat.traceback[0])
    return place(frame) + text[len(str(stat.traceback)):]


def traceback_lines(traceback):
    """Traceback.format(), each frame's line naming its function as
    Python's tracebacks do ('  File "f", line 4, in main')."""
    lines = []
    for frame in traceback:             # oldest first, as format()
        name = getattr(frame, "function", None)
        lines.append('  File "%s", line %s%s' % (
            frame.filename, frame.lineno, ", in %s" % name if name else ""))
        source = linecache.getline(frame.filename, frame.lineno).strip()
        if source:
            lines.append("    %s" % source)
    return lines


def fmt_size(size, sign=False):
    return tm()._format_size(size, sign)


def source_lines(stat, key_type):
    """What goes under an entry: the source line, or the traceback."""
    if key_type == "traceback":
        return traceback_lines(stat.traceback)
    if key_type == "lineno":
        frame = stat.traceback[0]
        line = linecache.getline(frame.filename, frame.lineno).strip()
        return ["    " + line] if line else []
    return []


def sums(stats, diff):
    """The totals of stats: size and count, and their changes if diff."""
    fields = ("size", "count") + (("size_diff", "count_diff") if diff else ())
    return {k: sum(getattr(s, k) for s in stats) for k in fields}


def fmt_sums(stats, diff):
    t = sums(stats, diff)
    if diff:
        return "size=%s (%s), count=%d (%+d)" % (
            fmt_size(t["size"]), fmt_size(t["size_diff"], True), t["count"],
            t["count_diff"])
    return "size=%s, count=%d" % (fmt_size(t["size"]), t["count"])


def sides_of(stats, natives):
    """(name, stats) for the Python side and the native side."""
    return [(name, [s for s, n in zip(stats, natives) if n == native])
            for name, native in (("python", False), ("native", True))]


def sampling_lines(named):
    """The lines saying that the numbers of sampled snapshots are
    estimates: none if every snapshot of named ([(label, snapshot)]) is
    exact; one for a single snapshot; else one for each, sampled or
    exact, labelled."""
    notes = [(label, _recording.sampling_note(s)) for label, s in named]
    if not any(note for _, note in notes):
        return []
    if len(notes) == 1:
        note = notes[0][1]
        return [note[0].upper() + note[1:]]
    return ["%s: %s" % (label, note or "exact, every allocation traced")
            for label, note in notes]


def report(args, stats, diff, out, natives=None, totals=None, notes=()):
    """The entries of stats in the documented format, most first, at most
    args.limit of them (0: all), then the rest and the total: that of
    totals (overall()'s) if given, else of stats. With natives, native
    entries are marked and the total is split by domain. The lines of
    notes (sampling_lines) go first."""
    for line in notes:
        print(line, file=out)
    shown = stats[:args.limit] if args.limit else stats
    noun = KEY_NOUNS[args.key_type]
    print("Top %d %s%s" % (len(shown), noun,
                           " (cumulative)" if args.cumulative else ""),
          file=out)
    if args.cumulative:
        print("(a block counts at every %s of its traceback, so rows "
              "overlap; the total counts each block once)"
              % KEY_NOUN[args.key_type], file=out)
    for index, stat in enumerate(shown):
        tag = NATIVE_TAG if natives and natives[index] else ""
        print("#%d: %s%s" % (index + 1, tag, entry_text(stat, args.key_type)),
              file=out)
        for line in source_lines(stat, args.key_type):
            print(line, file=out)
    rest = stats[len(shown):]
    if rest:
        print("%d other %s: %s" % (len(rest), noun, fmt_sums(rest, False)),
              file=out)
    if totals is not None:
        stats, natives = totals
    print("Total: %s" % fmt_sums(stats, diff), file=out)
    if natives is not None:
        for name, part in sides_of(stats, natives):
            if part:        # (not the Python side of --domain native)
                print("  %s: %s" % (DOMAIN_LABELS[name],
                                    fmt_sums(part, diff)), file=out)


def frame_dict(frame):
    d = {"filename": frame.filename, "lineno": frame.lineno}
    name = getattr(frame, "function", None)
    if name:
        d["function"] = name
    return d


def as_json(args, stats, diff, files, natives=None, totals=None,
            intervals=None):
    """The JSON of report(); intervals, the files' sampling intervals,
    are given as "sample_interval" when any is not 0 (exact)."""
    shown = stats[:args.limit] if args.limit else stats
    fields = ("size", "count") + (("size_diff", "count_diff") if diff else ())

    def entry(index, stat):
        d = {"traceback": [frame_dict(f) for f in stat.traceback]}
        d.update((k, getattr(stat, k)) for k in fields)
        if natives is not None:
            d["domain"] = "native" if natives[index] else "python"
        return d

    result = {"files": files, "key_type": args.key_type,
              "cumulative": args.cumulative,
              "stats": [entry(i, s) for i, s in enumerate(shown)],
              "other": dict(entries=len(stats) - len(shown),
                            **sums(stats[len(shown):], False))}
    if totals is not None:
        stats, natives = totals
    result["total"] = sums(stats, diff)
    if intervals is not None and any(intervals):
        result["sample_interval"] = list(intervals)
    if natives is not None:
        result["domains"] = {name: sums(part, diff)
                             for name, part in sides_of(stats, natives)}
    return json.dumps(result, indent=1)


def note_frames(args, paths, snapshots):
    """What needs more than one frame per traceback and gets one: said in
    one line on stderr, the report still printed."""
    needs = [what for what, asked in (
        ("--cumulative", args.cumulative),
        ("--key-type traceback", args.key_type == "traceback")) if asked]
    if needs:
        note_one_frame(paths, snapshots, "%s adds nothing"
                       % " and ".join(needs))


def cmd_top(args):
    snapshot, = filtered(args, load_for(args, args.file))
    stats, natives = domain_statistics(args, snapshot)
    note_frames(args, [args.file], [snapshot])
    totals = overall(args, snapshot)
    if args.json:
        print(as_json(args, stats, False, [args.file], natives, totals,
                      [snapshot.sample_interval]))
    else:
        report(args, stats, False, sys.stdout, natives, totals,
               sampling_lines([(args.file, snapshot)]))


def cmd_compare(args):
    old, new = filtered(args, load_for(args, args.old),
                        load_for(args, args.new))
    stats, natives = domain_statistics(args, new, old)
    note_frames(args, [args.new, args.old], [new, old])
    totals = overall(args, new, old)
    if args.json:
        print(as_json(args, stats, True, [args.old, args.new], natives,
                      totals, [old.sample_interval, new.sample_interval]))
    else:
        report(args, stats, True, sys.stdout, natives, totals,
               sampling_lines([("OLD " + args.old, old),
                               ("NEW " + args.new, new)]))


def cmd_flamegraph(args):
    from . import _flamegraph
    snapshot = load_for(args, args.file)
    note_one_frame([args.file], [snapshot],
                   "its flame graph is one row of boxes")
    python, native = split(restricted(snapshot, args.domain))
    out = args.output or default_name(args.file, "-flamegraph.html")
    html = _flamegraph.render(python, title=os.path.basename(args.file),
                              native=native)
    try:
        with open(out, "w", encoding="utf-8") as f:
            f.write(html)
    except OSError as exc:
        raise Failure("cannot write %s: %s" % (out, exc.strerror or exc))
    print("%s: wrote the flame graph of %s to %s" % (PROG, args.file, out),
          file=sys.stderr)


def cmd_report(args):
    """The report of a run: its file holds the snapshot at the end, and,
    as its attributes (see _recording.finish), the peak snapshot, the
    timeline and what the run was. A snapshot file of another origin
    gives the end alone."""
    from . import _report
    end = load(args.run)
    meta = dict(getattr(end, "run", None) or {})
    meta.setdefault("nframe", end.traceback_limit)
    run = _report.Run(end, peak=_recording.peak_of(end),
                      timeline=getattr(end, "timeline", None) or (),
                      meta=meta)
    out = args.output or default_name(args.run, "-report.html")
    try:
        _report.write_report(run, out, title=os.path.basename(args.run))
    except OSError as exc:
        raise Failure("cannot write %s: %s" % (out, exc.strerror or exc))
    print("%s: wrote the report of %s to %s" % (PROG, args.run, out),
          file=sys.stderr)


def default_name(path, suffix):
    stem = os.path.splitext(os.path.basename(path))[0]
    return stem + suffix


# -- run ---------------------------------------------------------------------

RUN_VALUE_OPTIONS = ("-n", "--nframe", "-o", "--output", "--top",
                     "--sample")


def split_run(argv):
    """Split run's arguments into ours and the program's: as for python,
    everything after the script, or after -m MODULE or -c CODE, is the
    program's."""
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--":
            return argv[:i], argv[i + 1:]
        if arg in ("-m", "-c"):
            return argv[:i + 2], argv[i + 2:]
        if arg in RUN_VALUE_OPTIONS:
            i += 2
        elif arg.startswith("-") and arg != "-":
            i += 1
        else:
            return argv[:i], argv[i:]
    return argv, []


def trim_traceback(tb):
    """The traceback of the program's exception without the frames of the
    runner (this module and runpy, which may be frozen) that python would
    not show."""
    while tb is not None and tb.tb_frame.f_globals.get("__name__") in (
            __name__, "runpy"):
        tb = tb.tb_next
    return tb


def exit_status(code):
    """The status python exits with for SystemExit(code)."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code & 0xFF
    print(code, file=sys.stderr)
    return 1


class Program:
    """The program run runs: its code, compiled before tracing starts (as
    python compiles before running), and the __main__ module it runs in.

    The runner's own frames sit below the program's on the stack. run()
    notes them (the chain), starts tracing with NFRAME more frames than
    asked, and the snapshot drops them again (Snapshot._strip_root): the
    tracebacks are those of `PYTHONTRACEMALLOC=NFRAME python SCRIPT`. A
    directory or zip file goes through runpy, whose frames stay."""

    def __init__(self, name, code=None, main=None, runpy_path=None):
        self.name = name
        self.code = code
        self.main = main
        self.runpy_path = runpy_path
        self.chain = ()

    def run(self, start):
        """Run the program; start(extra_frames) starts tracing. Returns its
        globals."""
        if self.runpy_path is not None:
            import runpy
            start(0)
            return runpy.run_path(self.runpy_path, run_name="__main__")
        saved = sys.modules.get("__main__")
        sys.modules["__main__"] = self.main
        try:
            # one line: the chain's most recent frame is at the line of exec
            self.chain = frames_here(); start(len(self.chain)); exec(self.code, self.main.__dict__)  # noqa: E501,E702
        finally:
            sys.modules["__main__"] = saved
        return self.main.__dict__


def frames_here():
    """The caller's stack as raw frames, most recent first."""
    frame = sys._getframe(1)
    frames = []
    while frame is not None:
        frames.append((frame.f_code.co_filename, frame.f_lineno))
        frame = frame.f_back
    return tuple(frames)


def main_module(**attributes):
    import builtins
    import types
    main = types.ModuleType("__main__")
    main.__builtins__ = builtins
    for key, value in attributes.items():
        setattr(main, key, value)
    return main


def compiled(source, filename):
    try:
        return compile(source, filename, "exec", dont_inherit=True)
    except (SyntaxError, ValueError) as exc:
        # as python reports it, before anything runs
        import traceback
        traceback.print_exception(type(exc), exc, None)
        raise Failure("%s does not compile" % filename)


def prepare(args, program):
    """Set sys.argv and sys.path[0] as python would, and return the
    Program to run."""
    import importlib.machinery
    import importlib.util
    if args.code is not None:
        sys.argv = ["-c"] + program
        sys.path[0] = ""
        return Program("c", compiled(args.code, "<string>"), main_module(
            __loader__=importlib.machinery.BuiltinImporter, __spec__=None,
            __package__=None))
    if args.module is not None:
        sys.path[0] = os.getcwd()
        name = args.module
        try:
            spec = importlib.util.find_spec(name)
            if spec is not None and spec.submodule_search_locations:
                name += ".__main__"         # a package: its __main__
                spec = importlib.util.find_spec(name)
            code = spec.loader.get_code(name) if spec is not None else None
        except (ImportError, ValueError, AttributeError, OSError) as exc:
            raise Failure("cannot run module %s: %s" % (args.module, exc))
        if code is None:
            raise Failure("no module named %s" % name)
        sys.argv = [spec.origin] + program
        return Program(args.module.rpartition(".")[2], code, main_module(
            __file__=spec.origin, __cached__=spec.cached, __spec__=spec,
            __loader__=spec.loader, __package__=spec.parent))
    if not program:
        raise UsageError("run: give a SCRIPT, -m MODULE or -c CODE "
                         "(see %s run --help)" % PROG)
    script = program[0]
    name = os.path.splitext(os.path.basename(script))[0]
    sys.argv = list(program)
    sys.path[0] = os.path.dirname(os.path.realpath(script))
    if os.path.isdir(script) or (os.path.isfile(script)
                                 and zipfile_like(script)):
        import pkgutil  # noqa: F401  (runpy imports it late)
        return Program(name, runpy_path=script)
    try:
        with open(script, "rb") as f:
            source = f.read()
    except OSError as exc:
        raise Failure("cannot open file %r: %s" % (script,
                                                    exc.strerror or exc))
    return Program(name, compiled(source, script), main_module(
        __file__=script, __cached__=None, __spec__=None, __package__=None,
        __loader__=importlib.machinery.SourceFileLoader("__main__", script)))


def zipfile_like(path):
    import zipfile
    try:
        return zipfile.is_zipfile(path)
    except OSError:
        return False


def next_commands(out, peak=False):
    """The commands to try on run's snapshot, one per line."""
    out_q = shlex.quote(out)
    html = shlex.quote(os.path.splitext(out)[0] + ".html")
    return [
        ("%s top %s --key-type traceback" % (PROG, out_q),
         "where the biggest entries were allocated from"),
    ] + ([
        ("%s top %s --peak" % (PROG, out_q),
         "what held the memory at its peak"),
    ] if peak else []) + [
        ("%s report %s -o %s" % (PROG, out_q, html),
         "memory over time, and the flame graphs and top lines at the "
         "peak and at the end, as a web page"),
        ("%s flamegraph %s -o %s" % (PROG, out_q,
                                     shlex.quote(os.path.splitext(out)[0]
                                                 + "-flamegraph.html")),
         "the traceback tree, as a web page"),
        ("%s compare OLD %s" % (PROG, out_q),
         "what grew since an earlier snapshot OLD"),
    ]


def program_command(args, program):
    """The program's command line, as given to run."""
    if args.code is not None:
        words = ["-c", args.code]
    elif args.module is not None:
        words = ["-m", args.module]
    else:
        words = []
    return " ".join(shlex.quote(w) for w in words + list(program))


def run_notes(snapshot):
    """What run's summary says of a sampled snapshot, after the line that
    introduces it: its sizes and counts are estimates."""
    note = _recording.sampling_note(snapshot)
    return ["%s: %s" % (PROG, note)] if note else []


def cmd_run(args, program):
    command = program_command(args, program)
    prog = prepare(args, program)
    out = args.output or "%s-%s-%d.snapshot" % (PROG, prog.name,
                                                  os.getpid())
    problem = _recording.output_problem(out)
    if problem is not None:     # now, not after the program has run
        raise Failure("cannot write the snapshot to %s: %s" % (out, problem))
    ctm = tm()
    ctm.install()
    interrupted = False
    status = 0
    error = None
    # What the program holds when its main module ends, kept alive until
    # the snapshot: its globals, or the exception that ended it, whose
    # traceback holds the frames and their globals.
    held = None
    runner = os.getpid()
    options = {"native": True} if args.native else {}
    if args.peak:
        options["peak"] = True
    if args.sample:
        options["sample_interval"] = args.sample

    def start(extra):
        try:
            ctm.start(args.nframe + extra, **options)
        except (TypeError, ValueError, OverflowError, RuntimeError,
                OSError) as exc:
            raise CannotStart(exc)

    try:
        held = prog.run(start)
    except CannotStart as exc:
        raise Failure("cannot start tracing%s%s: %s" % (
            " native memory" if args.native else "",
            " sampled every %s" % size_text(args.sample)
            if args.sample else "", exc))
    except SystemExit as exc:
        status = exc.code
        held = exc
    except KeyboardInterrupt as exc:
        interrupted = True
        error = held = exc
    except BaseException as exc:
        status = 1
        error = held = exc
    # A child the program forked and let reach the end of the main module
    # ends as python would, without a snapshot: the report is the
    # parent's.
    child = os.getpid() != runner
    if child:
        ctm.stop()
        snapshot = None
    else:
        snapshot = _recording.finish(ctm, prog.chain, args.nframe, command)
    del held
    try:
        sys.stdout.flush()      # the program's output before our report
    except (OSError, ValueError):
        pass
    if error is not None:
        tb = trim_traceback(error.__traceback__)
        # some Pythons print the exception's own __traceback__
        sys.excepthook(type(error), error.with_traceback(tb), tb)
        error = None
    if not interrupted:
        status = exit_status(status)
    if snapshot is None:
        if not child:
            print("%s: the program stopped tracing: no snapshot" % PROG,
                  file=sys.stderr)
    else:
        try:
            _recording.write(snapshot, out)
        except OSError as exc:
            raise Failure("cannot write %s: %s" % (out, exc.strerror or exc))
        top = argparse.Namespace(key_type="lineno", cumulative=False,
                                 limit=args.top)
        stats, natives = domain_statistics(top, snapshot)
        print("%s: wrote the snapshot to %s (%d traces, %s)"
              % (PROG, out, len(snapshot.traces),
                 fmt_size(sum(s.size for s in stats))), file=sys.stderr)
        report(top, stats, False, sys.stderr, natives,
               notes=run_notes(snapshot))
        peak = _recording.peak_of(snapshot)
        if peak is not None:
            stats, natives = domain_statistics(top, peak)
            info = snapshot.run
            when = (" at %.3g s" % info["peak_time"]
                    if "peak_time" in info else "")
            print("%s: peak %s%s (%d traces); at the peak:"
                  % (PROG, fmt_size(info["peak_bytes"]), when,
                     len(peak.traces)), file=sys.stderr)
            report(top, stats, False, sys.stderr, natives,
                   notes=run_notes(peak))
        print("%s: next, try:" % PROG, file=sys.stderr)
        for line, what in next_commands(out, peak is not None):
            print("  %-50s # %s" % (line, what), file=sys.stderr)
    sys.stderr.flush()
    if interrupted:
        # as python does: die of SIGINT, so that the shell sees it
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGINT)
    return status


# -- the parser ----------------------------------------------------------------

def domain_option(p):
    p.add_argument("--domain", choices=DOMAINS, default="all",
                   help="which traces: all (default), python (all but "
                        "native memory) or native (what extensions "
                        "allocated with malloc, mmap..., traced by run "
                        "--native)")


FILTER_HELP = {
    "include": "keep only traces allocated in files matching this fnmatch "
               "pattern: their most recent frame's (repeatable; a trace "
               "matching any --include or --include-any-frame stays)",
    "include_any_frame": "keep only traces with any frame of their "
                         "traceback in a file matching PATTERN: what the "
                         "program's file allocated through json and other "
                         "libraries too (Filter(True, PATTERN, "
                         "all_frames=True); repeatable)",
    "exclude": "drop traces allocated in files matching this pattern "
               "(repeatable)",
    "exclude_any_frame": "drop traces with any frame in a file matching "
                         "PATTERN (repeatable)",
}


def analysis_options(p):
    p.add_argument("--key-type", choices=KEY_TYPES, default="lineno",
                   help="group by line (default), file or whole traceback "
                        "(labelled by its most recent frame in the "
                        "program's own code, not the stdlib's or an "
                        "installed package's)")
    p.add_argument("--cumulative", action="store_true",
                   help="count a trace under every frame of its traceback, "
                        "not only the most recent: entries overlap (the "
                        "total counts each trace once); needs snapshots "
                        "of more than 1 frame")
    p.add_argument("--limit", type=count_arg, default=10, metavar="N",
                   help="show the first N entries (default 10; 0: all)")
    for option, _, _ in FILE_FILTERS:
        p.add_argument("--" + option.replace("_", "-"), action="append",
                       default=[], metavar="PATTERN",
                       help=FILTER_HELP[option])
    domain_option(p)
    peak_option(p)
    p.add_argument("--json", action="store_true",
                   help="print JSON instead of text")


def peak_option(p):
    p.add_argument("--peak", action="store_true",
                   help="read the snapshot taken at the peak of traced "
                        "memory, which ctracemalloc run records with the "
                        "end snapshot, instead of the end snapshot")


def make_parser():
    parser = Parser(prog=PROG, description=(
        "Trace a Python program's memory and read its snapshots: the "
        "stdlib's tracemalloc, in C."))
    parser.add_argument("--version", action="version",
                        version="%s %s" % (PROG, __version__))
    sub = parser.add_subparsers(dest="command", metavar="COMMAND",
                                parser_class=Parser)
    run = sub.add_parser(
        "run", help="run a program traced, then write and show its snapshot",
        description=(
            "Run SCRIPT (or -m MODULE, or -c CODE) as python would, tracing "
            "its memory from its first line. When it ends (normally, by "
            "sys.exit, by an exception or by Ctrl-C), write the snapshot "
            "(without ctracemalloc's own allocations), print the lines "
            "that allocated the most to stderr, and the commands to try "
            "next. Exit with the program's status. A FILE that cannot be "
            "written fails before the program runs."),
        usage="%(prog)s [-n NFRAME] [-o FILE] [--top N] [--native] "
              "[--no-peak] [--sample SIZE] (SCRIPT | -m MODULE | -c CODE) "
              "[ARGS...]")
    run.add_argument("-n", "--nframe", type=nframe_arg,
                     default=DEFAULT_NFRAME,
                     help="frames kept per traceback (default %d: in "
                          "benchmarks/overhead.py, traced runs took 2.4x "
                          "their untraced time with 25 frames, 2.1x with "
                          "1)" % DEFAULT_NFRAME)
    run.add_argument("-o", "--output", metavar="FILE",
                     help="snapshot file (default: "
                          "ctracemalloc-NAME-PID.snapshot)")
    run.add_argument("--top", type=count_arg, default=10, metavar="N",
                     help="lines shown at the end (default 10; 0: all)")
    run.add_argument("--native", action="store_true",
                     help="trace native memory too: what extension "
                          "modules and the libraries they load allocate "
                          "with malloc, calloc, realloc, posix_memalign, "
                          "mmap and the like, with the Python traceback "
                          "of the calling thread (ctracemalloc."
                          "NATIVE_DOMAIN); reports mark it [native]")
    run.add_argument("--no-peak", dest="peak", action="store_false",
                     help="do not record the snapshot at the peak of "
                          "traced memory and the memory over time "
                          "(recorded by default: in benchmarks/peak.py "
                          "they cost a few percent)")
    run.add_argument("--sample", type=sample_arg, default=0,
                     metavar="SIZE",
                     help="sample allocations instead of tracing them "
                          "all: about one allocation is traced for every "
                          "SIZE bytes allocated (a block of s bytes with "
                          "probability 1-exp(-s/SIZE)), and stands for the "
                          "others: sizes and counts become unbiased "
                          "estimates, and every report says so. SIZE: "
                          "512KiB, 1MB, 16384... (KB, MB, GB: powers of "
                          "1000; KiB, MiB, GiB: of 1024); 0 (default): "
                          "exact, every allocation traced")
    run.add_argument("-m", dest="module", metavar="MODULE",
                     help="run a library module as a script")
    run.add_argument("-c", dest="code", metavar="CODE",
                     help="run a program passed as a string")
    top = sub.add_parser(
        "top", help="show the statistics of a snapshot",
        description="The entries that allocated the most in a snapshot, "
                    "most first, in tracemalloc's format.")
    top.add_argument("file", metavar="FILE")
    analysis_options(top)
    compare = sub.add_parser(
        "compare", help="show what grew between two snapshots",
        description="Snapshot NEW compared to OLD (compare_to), biggest "
                    "change first, in tracemalloc's format.")
    compare.add_argument("old", metavar="OLD")
    compare.add_argument("new", metavar="NEW")
    analysis_options(compare)
    flame = sub.add_parser(
        "flamegraph", help="write a snapshot's flame graph as HTML",
        description="A single self-contained HTML file: the traceback "
                    "tree as an interactive flame graph (hover for size, "
                    "count and file:line; click to zoom).")
    flame.add_argument("file", metavar="FILE")
    flame.add_argument("-o", "--output", metavar="OUT.html",
                       help="default: NAME-flamegraph.html")
    domain_option(flame)
    peak_option(flame)
    rep = sub.add_parser(
        "report", help="write the report of a run as HTML",
        description="A single self-contained HTML page of a run: memory "
                    "over time, and at the peak and at the end the flame "
                    "graph and the top lines and files. RUN is the file "
                    "that ctracemalloc run (or CTRACEMALLOC_OUTPUT) "
                    "wrote; any snapshot file gives the end alone.")
    rep.add_argument("run", metavar="RUN")
    rep.add_argument("-o", "--output", metavar="OUT.html",
                     help="default: NAME-report.html")
    return parser, run


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    parser, run_parser = make_parser()
    try:
        if argv and argv[0] == "run":
            ours, program = split_run(argv[1:])
            # as for python, what follows -m MODULE or -c CODE is the
            # program's: the two never meet
            return cmd_run(run_parser.parse_args(ours), program)
        args, unknown = parser.parse_known_args(argv)
        if unknown:     # the command's own help, not the program's
            raise UsageError("unrecognized arguments: %s (see %s --help)"
                             % (" ".join(unknown), " ".join(
                                 filter(None, (PROG, args.command)))))
        if args.command is None:
            parser.print_help(sys.stderr)
            return 2
        {"top": cmd_top, "compare": cmd_compare,
         "flamegraph": cmd_flamegraph,
         "report": cmd_report}[args.command](args)
        return 0
    except UsageError as exc:
        print("%s: error: %s" % (PROG, exc), file=sys.stderr)
        return 2
    except Failure as exc:
        print("%s: error: %s" % (PROG, exc), file=sys.stderr)
        return 1
    except BrokenPipeError:
        # the reader of our output went away (| head): not an error
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    except KeyboardInterrupt:
        print("%s: interrupted" % PROG, file=sys.stderr)
        return 130
