"""What a traced run recorded, and its file: the end of `ctracemalloc run`
and of startup tracing with CTRACEMALLOC_OUTPUT both go through here, so
that what a run's file holds is decided in one place.

Glue only: the snapshot, its filters and its file are the C core's.
"""
import glob
import os


def output_problem(path):
    """Why a snapshot cannot be written to path (its directory missing or
    not writable, or path a directory), or None. Checked before the run,
    so that a bad path fails at once instead of after the program."""
    folder = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        return "it is a directory"
    if not os.path.isdir(folder):
        return "no directory %s" % folder
    if not os.access(folder, os.W_OK | os.X_OK):
        return "the directory %s is not writable" % folder
    if os.path.exists(path) and not os.access(path, os.W_OK):
        return "it is not writable"
    return None


def own_filters(tm):
    """Filters dropping the traces ctracemalloc allocated itself: those
    whose most recent frame is in one of the package's files (the runner
    after the program, its snapshot call), and those with any frame in
    the startup hook or this module, which never run the program (the
    hook's imports once tracing started, the exit's writing). A
    program's traces have no most recent frame in the package: the
    runner's frames sit below the program's (and are stripped), and the
    functions of ctracemalloc that a program calls are C. Not any frame
    of the runner: its frames stay in the tracebacks of a program run
    through runpy (a directory or a zip file)."""
    here = glob.escape(os.path.dirname(os.path.abspath(__file__)))
    return [tm.Filter(False, os.path.join(here, "*"))] + [
        tm.Filter(False, os.path.join(here, name), all_frames=True)
        for name in ("_startup.py", "_recording.py")]


def finish(tm, chain=(), nframe=None):
    """Stop tracing and return what the run recorded (None if tracing
    was off): today the snapshot at its end, without the runner's frames
    below the program's (chain, see _cli.Program) kept to nframe frames,
    and without ctracemalloc's own allocations."""
    recorded = tm.take_snapshot() if tm.is_tracing() else None
    tm.stop()
    if recorded is None:
        return None
    if nframe is not None:
        recorded = recorded._strip_root(tuple(chain), nframe)
    return recorded.filter_traces(own_filters(tm))


def write(recorded, path):
    """Write what finish() returned to path (OSError if it cannot)."""
    recorded.dump(path)
