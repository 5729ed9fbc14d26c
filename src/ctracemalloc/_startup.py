"""Startup tracing: CTRACEMALLOC=NFRAME traces from the interpreter's start.

The file ctracemalloc-startup.pth, installed beside the package in
site-packages, imports this module while site runs, before the program's
first import, when the variable is set to something other than 0 (and
only then: the line costs nothing otherwise). Like PYTHONTRACEMALLOC:
NFRAME is the number of frames kept per traceback, from 1 to 65535; unset,
empty or 0 means off, silently. Another value prints one warning on
stderr and leaves tracing off. Python's -E and
-I options (sys.flags.ignore_environment) turn it off, as they do
PYTHONTRACEMALLOC. When tracing
starts, install() makes `import tracemalloc` give ctracemalloc, so that
code written for the stdlib's module sees the traces, unless
PYTHONTRACEMALLOC (set, even empty) or -X tracemalloc names the stdlib's
tracer: then `import tracemalloc` stays the stdlib's, which these configure
(CPython's own test_tracemalloc starts children that way, and inherits
CTRACEMALLOC from the parent).

CTRACEMALLOC_NATIVE=1 with it traces native memory too (start(nframe,
native=True)): what extensions and their libraries allocate with malloc,
mmap and the like. 0 or empty means Python's memory only; alone, without
CTRACEMALLOC, it does nothing. Another value, or a start() that refuses
native tracing, prints one line on stderr and leaves tracing off.

CTRACEMALLOC_SAMPLE=SIZE with it samples (start(nframe,
sample_interval=SIZE), as `ctracemalloc run --sample SIZE`): about one
allocation is traced for every SIZE bytes allocated, and sizes and counts
become estimates. SIZE as people write it (512KiB, 1MB, 16384: see
_sizes); empty or 0 means exact tracing; alone, without CTRACEMALLOC, it
does nothing. Another value, or a start() that refuses it, prints one
line on stderr and leaves tracing off.

CTRACEMALLOC_OUTPUT=FILE with it records the peak too (start(peak=True))
and writes, at the interpreter's exit, what the run recorded (its
snapshot, the peak snapshot and the timeline, see _recording) to FILE, and
prints
nothing else. A FILE that cannot be written (its directory missing or
read-only) prints one line at startup and leaves tracing off. A relative
FILE is taken from the directory the program started in. Empty, or alone
without CTRACEMALLOC, it does nothing. The file is the traced program's:
a child it forks writes nothing, nor does a Python it starts that
inherits both variables (a subprocess, a multiprocessing worker); such a
child traces as CTRACEMALLOC alone asks (see _owned_above). A child
whose parent had exited before it started (a daemon) cannot be told from
a program started with the variables: it writes the file at its exit.
"""
import os
import sys


def _start():
    if sys.flags.ignore_environment:
        return
    value = os.environ.get("CTRACEMALLOC", "")
    if value in ("", "0"):
        return
    try:
        nframe = int(value)
    except ValueError:
        nframe = 0
    if not 1 <= nframe <= 65535:
        sys.stderr.write("ctracemalloc: CTRACEMALLOC=%r is not a number of "
                         "frames from 1 to 65535: tracing stays off\n"
                         % value)
        return
    native = os.environ.get("CTRACEMALLOC_NATIVE", "")
    if native not in ("", "0", "1"):
        sys.stderr.write("ctracemalloc: CTRACEMALLOC_NATIVE=%r is not 0 or "
                         "1: tracing stays off\n" % native)
        return
    sample = os.environ.get("CTRACEMALLOC_SAMPLE", "")
    from ._sizes import parse_size
    try:
        interval = parse_size(sample) if sample else 0
    except ValueError as exc:
        sys.stderr.write("ctracemalloc: CTRACEMALLOC_SAMPLE=%r: %s: tracing "
                         "stays off\n" % (sample, exc))
        return
    output = os.environ.get("CTRACEMALLOC_OUTPUT", "")
    if output and _owned_above(value, output):
        output = ""
    from . import _recording
    problem = output and _recording.output_problem(output)
    if problem:
        sys.stderr.write("ctracemalloc: CTRACEMALLOC_OUTPUT=%r: %s: tracing "
                         "stays off\n" % (output, problem))
        return
    import ctracemalloc
    # a run written at exit records its peak and timeline, as `run` does
    modes = {"peak": True} if output else {}
    # what was asked beyond tracing, named when start() refuses it
    asked = []
    if native == "1":
        modes["native"] = True
        asked.append("CTRACEMALLOC_NATIVE=1")
    if interval:
        modes["sample_interval"] = interval
        asked.append("CTRACEMALLOC_SAMPLE=%r" % sample)
    try:
        ctracemalloc.start(nframe, **modes)
    except (TypeError, ValueError, OverflowError, RuntimeError,
            OSError) as exc:
        if not asked:
            raise
        what = {"native": "trace native memory",
                "sample_interval": "sample"}
        sys.stderr.write("ctracemalloc: %s: cannot %s (%s): tracing stays "
                         "off\n" % (" and ".join(asked), " and ".join(
                             what[m] for m in what if m in modes), exc))
        return
    if "PYTHONTRACEMALLOC" not in os.environ \
            and "tracemalloc" not in sys._xoptions:
        # A program run with PYTHONTRACEMALLOC (even empty, which means
        # off) or -X tracemalloc asks for the stdlib's tracer by name:
        # `import tracemalloc` stays the stdlib's there.
        ctracemalloc.install()
    if output:
        # registered after ctracemalloc's own exit handler: runs before it;
        # the path is fixed now, whatever directory the program is in then
        import atexit
        atexit.register(_write_at_exit, ctracemalloc, os.path.abspath(output),
                        os.getpid())


def _owned_above(nframe, output):
    """Whether CTRACEMALLOC_OUTPUT belongs to a process above this one: a
    parent (or an ancestor through processes started with the same
    variables, a shell between them) that was started with the same
    CTRACEMALLOC and CTRACEMALLOC_OUTPUT and loaded ctracemalloc, so that
    it traces and writes the file at its exit. This process inherited the
    variables: written too, its snapshot would replace the program's (a
    child that outlives its parent, last). Told from /proc, the environment
    each process was started with and the objects it mapped, so that
    nothing the program can see is changed; without /proc, False."""
    want = {os.fsencode("CTRACEMALLOC=" + nframe),
            os.fsencode("CTRACEMALLOC_OUTPUT=" + output)}
    pid = os.getppid()
    for _ in range(64):
        if pid <= 1:
            return False
        try:
            with open("/proc/%d/environ" % pid, "rb") as f:
                if not want <= set(f.read().split(b"\0")):
                    return False
            with open("/proc/%d/maps" % pid, "rb") as f:
                if b"/_ctracemalloc." in f.read():
                    return True
            with open("/proc/%d/stat" % pid, "rb") as f:
                # pid (comm) state ppid ...: comm may hold spaces
                pid = int(f.read().rsplit(b")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            return False
    return False


def _write_at_exit(tm, path, pid):
    """CTRACEMALLOC_OUTPUT: write what the run recorded to path, in the
    process that started tracing."""
    if os.getpid() != pid:
        return
    from . import _recording
    recorded = _recording.finish(tm)
    if recorded is None:
        sys.stderr.write("ctracemalloc: CTRACEMALLOC_OUTPUT: the program "
                         "stopped tracing: no snapshot\n")
        return
    try:
        _recording.write(recorded, path)
    except OSError as exc:
        sys.stderr.write("ctracemalloc: CTRACEMALLOC_OUTPUT: cannot write "
                         "%s: %s\n" % (path, exc.strerror or exc))


_start()
