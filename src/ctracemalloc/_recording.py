"""What a traced run recorded, and its file: the end of `ctracemalloc run`
and of startup tracing with CTRACEMALLOC_OUTPUT both go through here, so
that what a run's file holds is decided in one place.

Glue only: the snapshot, its filters and its file are the C core's.
"""
import glob
import os

from ._sizes import size_text


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


def finish(tm, chain=(), nframe=None, command=None):
    """Stop tracing and return what the run recorded (None if tracing
    was off): the snapshot at its end and, when the peak was recorded
    (start(peak=True)), the snapshot at the peak and the timeline. Both
    snapshots lose the runner's frames below the program's (chain, see
    _cli.Program; kept to nframe frames) and ctracemalloc's own
    allocations. The end snapshot carries the rest as attributes, which
    its file keeps (Snapshot.dump writes a snapshot's attributes):
    .peak (a Snapshot, or None), .timeline ([(seconds, bytes)]) and
    .run (a dict: command, python, duration, peak_bytes, peak_time,
    end_bytes, nframe)."""
    if not tm.is_tracing():
        tm.stop()
        return None
    try:
        # first: the end snapshot's own allocations make no peak then
        peak = tm.take_peak_snapshot()
    except RuntimeError:
        peak = None
    timeline = tm.get_timeline() if peak is not None else []
    limit = tm.get_traceback_limit()
    recorded = tm.take_snapshot()
    tm.stop()
    recorded, peak = [_own_part(tm, s, chain, nframe)
                      for s in (recorded, peak)]
    recorded.peak = peak
    recorded.timeline = timeline
    recorded.run = run_info(recorded, peak, timeline, command,
                            nframe or limit)
    return recorded


def _own_part(tm, snapshot, chain, nframe):
    """snapshot without the runner's frames and ctracemalloc's own
    allocations (None stays None)."""
    if snapshot is None:
        return None
    # filtered first: a trace of the runner alone has no frame left once
    # stripped
    snapshot = snapshot.filter_traces(own_filters(tm))
    if nframe is not None:
        snapshot = snapshot._strip_root(tuple(chain), nframe)
    return snapshot


def run_info(recorded, peak, timeline, command, nframe):
    """What a report says of the run (see finish)."""
    import platform

    info = {"command": command, "python": platform.python_version(),
            "nframe": nframe,
            "end_bytes": sum(t.size for t in recorded.traces)}
    if timeline:
        info["duration"] = timeline[-1][0]
    if peak is not None:
        info["peak_bytes"] = sum(t.size for t in peak.traces)
        if timeline:
            info["peak_time"] = max(timeline, key=lambda p: p[1])[0]
    return info


def sampling_note(snapshot):
    """What every report of a sampled snapshot says of its numbers (a
    sentence without its capital), or None for an exact snapshot."""
    interval = snapshot.sample_interval
    if not interval:
        return None
    return ("sampled, one sample every %s allocated on average: sizes and "
            "counts are estimates" % size_text(interval))


def peak_of(recorded):
    """The peak snapshot that a run's file holds, or None."""
    return getattr(recorded, "peak", None)


def write(recorded, path):
    """Write what finish() returned to path (OSError if it cannot)."""
    recorded.dump(path)
