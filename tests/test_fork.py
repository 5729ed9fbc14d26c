"""os.fork() while tracing: the child keeps tracing and can take snapshots,
even when other threads were allocating (and maybe holding the tracer's
locks) at the moment of the fork."""
import os
import threading
import time
import warnings
import zlib

import pytest

from tmhelpers import (allocate_bytes, find_traces, patience, raw_frames,
                       settle_threads)

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork")

CHILD_TIMEOUT = patience(60)


def wait_child(pid, timeout=CHILD_TIMEOUT):
    """Exit status of the child; kill it and fail if it hangs."""
    deadline = time.monotonic() + timeout
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status) \
                if hasattr(os, "waitstatus_to_exitcode") else status >> 8
        if time.monotonic() > deadline:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
            pytest.fail("the child hung (deadlock after fork?)")
        time.sleep(0.01)


def child_checks(tm, parent_obj, parent_frames):
    """Run in the child; return 0 if all is well, else a failure code."""
    if not tm.is_tracing():
        return 2
    # traces from before the fork are still there
    tb = tm.get_object_traceback(parent_obj)
    if tb is None or raw_frames(tb) != parent_frames:
        return 3
    obj, frames = allocate_bytes(tm, 23456)
    tb = tm.get_object_traceback(obj)
    if tb is None or raw_frames(tb) != frames:
        return 4
    snapshot = tm.take_snapshot()
    if len(find_traces(snapshot, frames, size=23456)) != 1:
        return 5
    if not snapshot.statistics("lineno"):
        return 6
    current = tm.get_traced_memory()[0]
    if current < 23456:
        return 7
    tm.clear_traces()
    if tm.get_traced_memory() != (0, 0):
        return 8
    tm.stop()
    if tm.is_tracing():
        return 9
    return 0


def fork_child(check):
    """Fork; the child exits with check()'s result (1 if it raises). The
    child's pid."""
    with warnings.catch_warnings():
        # 3.12+ warns about fork() in a process with threads
        warnings.simplefilter("ignore", DeprecationWarning)
        pid = os.fork()
    if pid == 0:
        code = 1
        try:
            code = check()
        finally:
            os._exit(code)
    return pid


def fork_and_check(tm, parent_obj, parent_frames):
    settle_threads()
    return wait_child(fork_child(
        lambda: child_checks(tm, parent_obj, parent_frames)))


def test_fork_keeps_tracing(tm):
    tm.start(3)
    obj, frames = allocate_bytes(tm, 34567)
    assert fork_and_check(tm, obj, frames) == 0
    # the parent goes on tracing too
    assert raw_frames(tm.get_object_traceback(obj)) == frames
    obj2, frames2 = allocate_bytes(tm, 45678)
    assert raw_frames(tm.get_object_traceback(obj2)) == frames2


def test_fork_not_tracing(tm):
    tm.start()
    tm.stop()
    settle_threads()

    def check():
        ok = (not tm.is_tracing()
              and tm.get_object_traceback(b"x" * 1000) is None)
        tm.start()
        obj, frames = allocate_bytes(tm, 1000)
        ok = ok and raw_frames(tm.get_object_traceback(obj)) == frames
        return 0 if ok else 2

    assert wait_child(fork_child(check)) == 0


def busy(stop):
    data = bytes(range(256)) * 4096
    packed = zlib.compress(data)
    while not stop.is_set():
        zlib.decompress(packed)                  # RAW, without the GIL
        [bytes(64) for _ in range(50)]           # MEM and OBJ


def test_fork_while_threads_allocate(tm):
    tm.start()
    stop = threading.Event()
    threads = [threading.Thread(target=busy, args=(stop,)) for _ in range(3)]
    for thread in threads:
        thread.start()
    try:
        obj, frames = allocate_bytes(tm, 34567)
        for _ in range(10):
            assert fork_and_check(tm, obj, frames) == 0
    finally:
        stop.set()
        for thread in threads:
            thread.join()


def test_fork_from_a_thread(tm):
    tm.start()
    obj, frames = allocate_bytes(tm, 34567)
    result = []

    def run():
        result.append(fork_and_check(tm, obj, frames))

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    assert result == [0]


@pytest.mark.ctm_only
def test_fork_frees_capture_state_of_other_threads(ctm):
    # Each thread that allocates while tracing gets capture state (3 KiB
    # or more, counted by get_tracemalloc_memory) that its exit frees. In
    # a child those threads do not exist: the child frees their state.
    # After stop() the tracer's memory is little more than that state, so
    # the parent's and the child's differ by the 32 threads' share.
    nthreads = 32
    ctm.start(5)
    ready = threading.Barrier(nthreads + 1)
    done = threading.Event()

    def traced_then_waits():
        junk = [bytes(64) for _ in range(10)]
        ready.wait()
        done.wait()
        del junk

    threads = [threading.Thread(target=traced_then_waits)
               for _ in range(nthreads)]
    for thread in threads:
        thread.start()
    r, w = os.pipe()
    try:
        ready.wait()

        def report():
            ctm.stop()
            os.write(w, b"%d" % ctm.get_tracemalloc_memory())
            return 0

        assert wait_child(fork_child(report)) == 0
        in_child = int(os.read(r, 100))
        ctm.stop()
        assert ctm.get_tracemalloc_memory() - in_child >= nthreads * 2048
    finally:
        os.close(r)
        os.close(w)
        done.set()
        for thread in threads:
            thread.join()


def test_fork_child_and_parent_are_separate(tm):
    # a block freed in the parent after the fork is still in the child
    tm.start()
    obj, frames = allocate_bytes(tm, 56789)
    r, w = os.pipe()
    settle_threads()

    def check():
        os.close(w)
        os.read(r, 1)          # wait for the parent to free obj
        snapshot = tm.take_snapshot()
        return 0 if len(find_traces(snapshot, frames, 56789)) == 1 else 2

    pid = fork_child(check)
    os.close(r)
    del obj
    os.write(w, b"x")
    os.close(w)
    assert wait_child(pid) == 0
    assert find_traces(tm.take_snapshot(), frames, 56789) == []


# -- multiprocessing ----------------------------------------------------------

def mp_child(module_name, results):
    """In a multiprocessing child: trace (still, after fork; anew after
    spawn), allocate, take a snapshot, and report."""
    import importlib
    tm = importlib.import_module(module_name)
    inherited = tm.is_tracing()
    if not inherited:
        tm.start(3)
    keep = [bytearray(4321) for _ in range(300)]
    snapshot = tm.take_snapshot()
    found = len([t for t in snapshot.traces
                 if t.traceback[-1].filename == __file__
                 and t.size >= 4321])
    results.put((inherited, found, tm.get_traced_memory()[0] > 300 * 4321))
    del keep


@pytest.mark.parametrize("method", ["fork", "spawn", "forkserver"])
def test_multiprocessing_from_threaded_parent(tm, method):
    import multiprocessing
    if method not in multiprocessing.get_all_start_methods():
        pytest.skip("no %s start method here" % method)
    ctx = multiprocessing.get_context(method)
    tm.start(5)
    stop = threading.Event()
    threads = [threading.Thread(target=busy, args=(stop,)) for _ in range(3)]
    for thread in threads:
        thread.start()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            results = ctx.Queue()
            for _ in range(3):
                settle_threads()
                proc = ctx.Process(target=mp_child,
                                   args=(tm.__name__, results))
                proc.start()
                inherited, found, counted = results.get(
                    timeout=CHILD_TIMEOUT)
                proc.join(CHILD_TIMEOUT)
                assert proc.exitcode == 0
                assert inherited == (method == "fork")
                assert found >= 300 and counted
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    # the parent traced on, undisturbed
    obj, frames = allocate_bytes(tm, 7777)
    assert raw_frames(tm.get_object_traceback(obj)) == frames
