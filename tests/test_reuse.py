"""Objects reused from free lists, on the tracer's fast path (issue #16):
their captures hit the capture cache, and their retraces wait on a ring
until the tables lock is next taken. Whatever reads the traces must see
every retrace made before it (queries, snapshots, from any thread); a
cache entry must never outlive the meaning of its traceback (a code object
reborn at the same address, clear_traces); captures that differ below the
top frame must not share an entry; a block known to have no trace (reused
while allocated before start()) must lose that mark once it is traced."""
import gc
import os
import subprocess
import sys
import threading
import time
import zlib

import pytest

from tmhelpers import child_env, patience, raw_frames

pytestmark = pytest.mark.ctm_only


@pytest.fixture(autouse=True)
def no_gc():
    """No collection at a random moment: it could free a float allocated
    before start() onto the free list, whose block has no trace."""
    enabled = gc.isenabled()
    gc.disable()
    yield
    if enabled:
        gc.enable()


def prime_free_list():
    """Fill the float free list with blocks allocated while tracing: a
    block allocated before start() has no trace to retrace."""
    floats = [float(i) + 0.25 for i in range(2000)]
    del floats


def churn(n):
    """Floats made and dropped in a loop, all from the free list; the
    last one is returned."""
    x = 0.5
    for _ in range(n):
        x = x * 0.5 + 1.0
    return x


def remake(y, warm=0):
    """One float from the free list; the first call with warm set arms
    this code object's death notice (a large int is an allocation), so
    that its captures can be cached."""
    if warm:
        warm = warm + 10 ** 6
    return y * 3.0


CHURN_LINE = churn.__code__.co_firstlineno + 5
REMAKE_LINE = remake.__code__.co_firstlineno + 6


def line_of(tm, obj, i=0):
    return raw_frames(tm.get_object_traceback(obj))[i]


def test_the_last_reuse_is_seen_by_queries_and_snapshots(ctm):
    """A block traced at one line is reused at another, with a capture
    that hits the cache: a query or a snapshot right after must see the
    new line, not the retrace waiting on the ring."""
    ctm.start(1)
    prime_free_list()
    for _ in range(3):
        remake(1.0, warm=1)
    churn(100)
    for n in (1, 2, 10, 300, 5000):
        prime_free_list()
        x = churn(n)
        assert line_of(ctm, x) == (__file__, CHURN_LINE), n
        del x
        # the float free list gives x's block back first
        x = remake(2.0)
        assert line_of(ctm, x) == (__file__, REMAKE_LINE), n

        # the same, seen by a snapshot: x's block was the only one traced
        # at its first line
        name = "once%d.py" % n
        ns = {}
        exec(compile("def once(y):\n    return y * 5.0\n", name, "exec"),
             ns)
        x = ns["once"](2.0)
        assert line_of(ctm, x) == (name, 2)
        del x
        x = remake(2.0)
        snapshot = ctm.take_snapshot()
        lines = {raw_frames(t.traceback)[0] for t in snapshot.traces}
        assert (name, 2) not in lines, n
        assert (__file__, REMAKE_LINE) in lines, n
    # the per-traceback counts that snapshots rely on stayed right (a test
    # build checks them while placing the traces)
    snapshot = ctm.take_snapshot()
    assert len(snapshot.traces) == sum(
        s.count for s in snapshot.statistics("traceback"))


def test_callers_below_the_top_frame_are_told_apart(ctm):
    """Two captures with the same most recent frame and the same depth,
    from two callers: an entry is compared frame by frame."""
    ctm.start(3)
    prime_free_list()

    def via_a():
        return churn(50)

    def via_b():
        return churn(50)

    for _ in range(20):
        prime_free_list()
        a, b = via_a(), via_b()
        ta, tb = (raw_frames(ctm.get_object_traceback(x)) for x in (a, b))
        assert ta[0] == tb[0] == (__file__, CHURN_LINE)
        assert ta[1][1] == via_a.__code__.co_firstlineno + 1
        assert tb[1][1] == via_b.__code__.co_firstlineno + 1


SOURCE = """\
def f(n):
    x = 0.5
    for i in range(n):
        x = x * 0.5 + 1.0
    return x
"""


def test_code_object_reborn_at_the_same_address(ctm):
    """Each round makes a new code object, often where the last one died:
    the same (code address, offset) must not give the dead one's
    traceback."""
    ctm.start(1)
    prime_free_list()
    addresses = set()
    for k in range(300):
        ns = {}
        exec(compile(SOURCE, "reborn%d.py" % k, "exec"), ns)
        f = ns.pop("f")
        addresses.add(id(f.__code__))
        prime_free_list()
        for n in (3, 200):
            x = f(n)
            assert line_of(ctm, x) == ("reborn%d.py" % k, 4), (k, n)
        del f, x
        gc.collect()
    # the test means something only if addresses came back (an allocator
    # that keeps freed memory aside, as AddressSanitizer does, gives none)
    if len(addresses) == 300:
        pytest.skip("no code object was made at a dead one's address")


def churn_quietly(n):
    """churn without allocating, for n up to 256 (small ints are
    cached): a code object's death notice is armed, or armed again after
    clear_traces, only at an allocation."""
    x = 0.5
    i = 0
    while i < n:
        x = x * 0.5 + 1.0
        i += 1
    return x


QUIET_LINE = churn_quietly.__code__.co_firstlineno + 7

AFTER_CLEAR = """\
def after_clear(others, churn_quietly):
    kept = [f() for f in others]
    floats = [float(i) + 0.25 for i in range(2000)]
    del floats
    return kept, churn_quietly(100)
"""


def via(f, n):
    return f(n)


def test_reuse_after_clear_traces(ctm):
    """clear_traces starts the traceback ids again: an id remembered from
    before would now name another traceback. Nothing here allocates from
    a code object that allocated before the clear, between the clear and
    the reuse: its death notice, armed again, would hide a cache that
    the clear forgot to empty."""
    source = "".join("def f%d():\n    return [0] * %d\n" % (i, i + 1)
                     for i in range(64))
    ns = {}
    exec(compile(source, "many.py", "exec"), ns)
    exec(compile(AFTER_CLEAR, "after_clear.py", "exec"), ns)
    others = [ns["f%d" % i] for i in range(64)]
    after_clear = ns["after_clear"]
    ctm.start(1)
    prime_free_list()
    churn_quietly(1000)     # large ints: an allocation arms its code
    # at the depth of the call after the clear (a capture counts every
    # frame), through a function that does not allocate either
    for _ in range(2):
        x = via(churn_quietly, 200)
    assert line_of(ctm, x) == (__file__, QUIET_LINE)
    ctm.clear_traces()
    kept, x = after_clear(others, churn_quietly)
    assert line_of(ctm, x) == (__file__, QUIET_LINE)
    del kept


def test_restart_with_another_frame_limit(ctm):
    """Captures of 1 to 4 frames go through the cache, longer ones do
    not."""
    for nframe in (1, 4, 2, 30, 1):
        ctm.start(nframe)
        prime_free_list()
        x = churn(500)
        frames = raw_frames(ctm.get_object_traceback(x))
        assert frames[0] == (__file__, CHURN_LINE)
        assert len(frames) == nframe    # the stack under pytest is deeper
        ctm.stop()


def take(n, y=1.5):
    """n floats, from the free list while it lasts, then allocated."""
    return [y * 2.0 for _ in range(n)]


def take_elsewhere(n, y=1.5):
    """take, at another line."""
    return [y * 3.0 for _ in range(n)]


TAKE_LINE = take.__code__.co_firstlineno + 2

UNTRACED_THEN_TRACED = """
import sys
sys.path.insert(0, %r)
import gc
import ctracemalloc as tm
from test_reuse import take, take_elsewhere, TAKE_LINE, line_of

gc.disable()
old = [float(i) + 0.5 for i in range(1000)]     # untraced
tm.start(1)
drain = take(100)           # the free list is empty now
del old[-100:]              # 100 untraced blocks on it
ours = take(100)            # reused: no trace, and known so
assert all(tm.get_object_traceback(x) is None for x in ours)
fresh = take(100)           # allocated: traced
del fresh                   # back on the free list, which is full
del ours                    # so ours go back to the allocator
a = take_elsewhere(200)     # 100 from the free list, then ours, traced
del a                       # ours on the free list again
b = take(100)               # ours, reused: traced, so retraced
lines = [line_of(tm, x) if tm.get_object_traceback(x) else None
         for x in b]
assert set(lines) == {(take.__code__.co_filename, TAKE_LINE)}, set(lines)
"""


def test_blocks_untraced_then_traced(ctm):
    """Floats allocated before start() are reused, and their blocks are
    known to have no trace; then the same blocks are allocated again while
    tracing, and reused: they must get the traceback of their reuse."""
    proc = subprocess.run(
        [sys.executable, "-c",
         UNTRACED_THEN_TRACED % os.path.dirname(os.path.abspath(__file__))],
        env=child_env(), capture_output=True, text=True,
        timeout=patience(120))
    assert proc.returncode == 0, proc.stdout + proc.stderr


def churn_in_thread(seconds, results, index, errors):
    try:
        deadline = time.monotonic() + seconds
        out = []
        while time.monotonic() < deadline:
            x = 1.5
            for _ in range(2000):
                x = x * 0.5 + 1.0   # the thread's line
            out.append(x)
            del out[:-10]
        results[index] = out
    except BaseException as exc:
        errors.append(exc)


THREAD_LINE = churn_in_thread.__code__.co_firstlineno + 7


def compress_in_thread(seconds, errors):
    """Allocations without the GIL (zlib's state), which take the lock
    and so apply the ring, from another thread."""
    try:
        data = bytes(range(256)) * 2000
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            assert zlib.decompress(zlib.compress(data, 1)) == data
    except BaseException as exc:
        errors.append(exc)


def test_reuse_in_threads_with_gil_free_allocations(ctm):
    """Threads that reuse floats hand the GIL to each other often, while
    another allocates without it and snapshots are taken."""
    ctm.start(2)
    prime_free_list()
    results, errors = [None] * 3, []
    threads = [threading.Thread(target=churn_in_thread,
                                args=(1.0, results, i, errors))
               for i in range(3)]
    threads += [threading.Thread(target=compress_in_thread,
                                 args=(1.0, errors))]
    switch = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)     # the GIL changes hands often
    try:
        for t in threads:
            t.start()
        while any(t.is_alive() for t in threads):
            snapshot = ctm.take_snapshot()
            assert len(snapshot.traces) == sum(
                s.count for s in snapshot.statistics("traceback"))
            time.sleep(0.01)
        for t in threads:
            t.join()
    finally:
        sys.setswitchinterval(switch)
    assert not errors, errors
    lines = {line_of(ctm, x) for out in results for x in out
             if ctm.get_object_traceback(x) is not None}
    assert lines == {(__file__, THREAD_LINE)}
