"""The interceptors: what the interpreter tells only its own tracer
(PyTraceMalloc_Track/Untrack from extensions, _PyTraceMalloc_GetTraceback,
and before 3.13 _Py_NewReference for objects reused from free lists)
reaches ctracemalloc while it traces, and goes back to the interpreter's
tracer when it stops.

_testcapi calls the track API from an extension module, as numpy does.
Each case runs in a fresh interpreter, so that the extension is loaded
before or after start() as the case needs."""
import subprocess
import sys
import textwrap

import pytest

from tmhelpers import child_env, patience

pytestmark = pytest.mark.ctm_only

DOMAIN = 389047


def run(code, env=None, check=True, args=()):
    environ = child_env()
    environ.update(env or {})
    proc = subprocess.run([sys.executable] + list(args)
                          + ["-c", textwrap.dedent(code)],
                          env=environ, capture_output=True, text=True,
                          timeout=patience(120))
    if check:
        assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


TRACK = """
import sys
import ctracemalloc as tm

def track(ptr, size):
    import _testcapi
    _testcapi.tracemalloc_track(%d, ptr, size, False)
    return sys._getframe().f_lineno - 1

def refused(ptr, size):
    # whether the interpreter refuses the call: no tracer takes it
    try:
        track(ptr, size)
    except RuntimeError:
        return True
    return False

def traces(snapshot):
    return sorted((t.size, t.traceback[0].lineno) for t in snapshot.traces
                  if t.domain == %d)
""" % (DOMAIN, DOMAIN)


@pytest.mark.parametrize("loaded", ["before", "after"])
def test_track_reaches_the_tracer(ctm, loaded):
    """A block an extension reports is traced in its domain, with the
    caller's traceback, whether the extension was loaded before start()
    or after (patched when the interpreter looks up its PyInit)."""
    run(TRACK + """
if %r == "before":
    import _testcapi
tm.start(1)
line = track(1000, 4096)
snapshot = tm.take_snapshot()
assert traces(snapshot) == [(4096, line)], traces(snapshot)
assert tm.get_traced_memory()[0] >= 4096
import _testcapi
_testcapi.tracemalloc_untrack(%d, 1000)
assert traces(tm.take_snapshot()) == []
tm.stop()
""" % (loaded, DOMAIN))


def test_track_after_stop_goes_to_the_stdlib(ctm):
    """stop() puts the calls back: with only the stdlib tracing, they are
    the stdlib's; with none, the interpreter reports 'not tracing'."""
    run(TRACK + """
import tracemalloc
tm.start(1)
tm.stop()
assert refused(1000, 10), "tracked with no tracer"
tracemalloc.start(1)
line = track(1000, 10)
assert traces(tracemalloc.take_snapshot()) == [(10, line)]
try:
    from _testinternalcapi import _PyTraceMalloc_GetTraceback as get
except ImportError:
    from _testcapi import tracemalloc_get_traceback as get
assert get(%d, 1000) == (("<string>", line),)
tracemalloc.stop()
""" % DOMAIN)


def test_both_tracers_see_tracked_blocks(ctm):
    """With the stdlib and ctracemalloc tracing together, each one sees the
    block, whichever started first."""
    run(TRACK + """
import tracemalloc
for first, second in ((tm, tracemalloc), (tracemalloc, tm)):
    first.start(1)
    second.start(1)
    line = track(2000, 77)
    for tracer in (tm, tracemalloc):
        found = traces(tracer.take_snapshot())
        assert found == [(77, line)], (tracer, found)
    import _testcapi
    _testcapi.tracemalloc_untrack(%d, 2000)
    for tracer in (tm, tracemalloc):
        assert traces(tracer.take_snapshot()) == []
    second.stop()
    first.stop()
""" % DOMAIN)


def test_track_in_forked_child(ctm):
    """A fork inherits the redirected calls with the tracer: the child
    traces what it tracks, the parent does not see it."""
    run(TRACK + """
import os
tm.start(1)
pid = os.fork()
if pid == 0:
    line = track(3000, 55)
    ok = traces(tm.take_snapshot()) == [(55, line)]
    os._exit(0 if ok else 1)
_, status = os.waitpid(pid, 0)
assert os.WEXITSTATUS(status) == 0, status
assert traces(tm.take_snapshot()) == []
tm.stop()
""")


def test_free_list_reuse_gets_the_current_traceback(ctm):
    """Floats and lists taken from the interpreter's free lists get the
    traceback of their reuse, as under the stdlib."""
    run("""
import sys
import ctracemalloc as tm
tm.start(1)

def make(n):
    return [float(i) + 0.5 for i in range(n)]

first = make(1000)
del first
second = [float(i) * 2.5 for i in range(1000)]
line = sys._getframe().f_lineno - 1
tracebacks = [tm.get_object_traceback(x) for x in second]
# floats of blocks allocated before start() have no trace (nor under
# the stdlib); the free list holds at most 100 of them
assert {tb[0].lineno for tb in tracebacks if tb} == {line}
assert tracebacks.count(None) <= 100
tm.stop()
""")


def test_starting_again_writes_the_slots_of_the_last_scan(ctm):
    """start() after stop() with the same objects loaded writes the slots
    the last scan found without scanning again; an object loaded or
    unloaded while stopped makes it scan. Either way the calls arrive
    (the probe of each start would warn, here an error, if they did not),
    and stop() puts them back."""
    run(TRACK + """
import ctypes, _ctypes, os, shutil, tempfile
from ctracemalloc import _ctracemalloc, _nativeprobe

def rounds(n):
    before = _ctracemalloc._got_counts()
    for _ in range(n):
        tm.start(1)
        line = track(1000, 64)
        assert traces(tm.take_snapshot()) == [(64, line)]
        import _testcapi
        _testcapi.tracemalloc_untrack(%d, 1000)
        tm.stop()
        assert refused(1000, 10), "tracked after stop()"
    after = _ctracemalloc._got_counts()
    return (after["scans"] - before["scans"],
            after["replays"] - before["replays"])

import _testcapi
rounds(1)
scans, replays = rounds(5)
assert scans == 0 and replays >= 5, (scans, replays)

# loaded while stopped: the next start scans, and patches it
d = tempfile.mkdtemp()
copy = os.path.join(d, "copy.so")
shutil.copy(_nativeprobe.__file__, copy)
lib = ctypes.CDLL(copy)
scans, replays = rounds(1)
assert scans >= 1, (scans, replays)
scans, replays = rounds(3)
assert scans == 0, (scans, replays)

# unloaded while stopped, then loaded and unloaded while tracing
_ctypes.dlclose(lib._handle)
scans, replays = rounds(1)
assert scans >= 1, (scans, replays)
tm.start(1)
lib = ctypes.CDLL(copy)
line = track(1000, 32)
_ctypes.dlclose(lib._handle)
assert traces(tm.take_snapshot()) == [(32, line)]
_testcapi.tracemalloc_untrack(%d, 1000)
tm.stop()
assert refused(1000, 10), "tracked after stop()"
scans, replays = rounds(2)
assert scans >= 1, (scans, replays)
shutil.rmtree(d)
""" % (DOMAIN, DOMAIN), args=["-W", "error::RuntimeWarning"])


FALLBACK = TRACK + """
import warnings
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    for _ in range(2):
        tm.start(1)
        tm.stop()
    tm.start(1)
messages = [str(w.message) for w in caught
            if issubclass(w.category, RuntimeWarning)]
print(messages)
"""


def test_failed_track_probe_warns_once_and_puts_the_calls_back(ctm):
    """When the probe of the track API fails, start() warns once, with
    what will not be traced, and leaves the calls where they were: the
    interpreter's tracer, not tracing, refuses them; the rest is traced."""
    proc = run(FALLBACK + """
assert len(messages) == 1, messages
assert "PyTraceMalloc_Track" in messages[0], messages
assert refused(1000, 10), "the failed probe left the calls redirected"
assert tm.is_tracing()
data = bytes(10000)
assert tm.get_object_traceback(data) is not None
tm.stop()
""", env={"CTRACEMALLOC_TEST_FAIL_PROBE": "track"})
    assert proc.stdout.count("PyTraceMalloc_Track") == 1


@pytest.mark.skipif(sys.version_info >= (3, 13),
                    reason="3.13's reference tracer needs no interception")
def test_failed_new_reference_probe_warns_once(ctm):
    """When the probe of new objects fails, start() warns once that reused
    objects keep their first traceback, and they do; the track API is
    still traced."""
    run(FALLBACK + """
assert len(messages) == 1, messages
assert "free lists" in messages[0], messages

def make():
    return [float(i) + 0.5 for i in range(1000)]

first = make()          # more than the free list holds: the last are new
first_line = tm.get_object_traceback(first[-1])[0].lineno
del first
second = [float(i) * 2.5 for i in range(1000)]
tracebacks = [tm.get_object_traceback(x) for x in second]
lines = {tb[0].lineno for tb in tracebacks if tb}
assert first_line in lines, (first_line, lines)
line = track(1000, 10)
assert traces(tm.take_snapshot()) == [(10, line)]
tm.stop()
""", env={"CTRACEMALLOC_TEST_FAIL_PROBE": "newref"})


def test_failed_probe_under_warnings_as_errors(ctm):
    """A warning turned into an error fails start(), which leaves nothing
    traced and nothing redirected."""
    run(TRACK + """
try:
    tm.start(1)
except RuntimeWarning as exc:
    assert "PyTraceMalloc_Track" in str(exc), exc
else:
    raise AssertionError("no error")
assert not tm.is_tracing()
assert refused(1000, 10), "tracked with no tracer"
""", env={"CTRACEMALLOC_TEST_FAIL_PROBE": "track"}, args=["-W", "error"])


def test_numpy_buffers_as_under_the_stdlib(ctm):
    """numpy reports its array buffers with PyTraceMalloc_Track: each
    tracer finds them in numpy's domain, at the lines that made them, with
    the same sizes."""
    code = """
import sys
import %s as tm
tm.start(1)
import numpy as np
big = np.ones(1_000_000)
small = [np.arange(2000) for _ in range(100)]
square = np.zeros((300, 300))
snapshot = tm.take_snapshot().filter_traces([tm.DomainFilter(True, %d)])
for stat in snapshot.statistics("lineno")[:3]:
    print(stat.traceback[0].lineno, stat.size, stat.count)
"""
    outputs = [run(code % (name, DOMAIN)).stdout.split()
               for name in ("tracemalloc", "ctracemalloc")]
    assert outputs[0], "the stdlib saw no numpy buffer"
    assert outputs[1] == outputs[0]
