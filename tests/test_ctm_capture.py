"""The stack capture (capture.c) counts total_nframe with a per-thread memo
of the last chain it walked. These tests make the chain change in every
way the memo must notice, and check each allocation's total_nframe
against the depth Python itself sees at the allocation.

Each allocation is a bytes object of its own size (100000 + 64 * i), so
its trace is found in the snapshot by size."""
import sys
import threading

import pytest

pytestmark = pytest.mark.ctm_only

BASE = 100000


def python_depth():
    """Frames from the caller down (the caller allocates), as
    PyFrame_GetBack counts them."""
    f = sys._getframe(1)
    n = 0
    while f is not None:
        n += 1
        f = f.f_back
    return n


class Recorder:
    def __init__(self):
        self.expected = {}
        self.keep = []
        self.lock = threading.Lock()

    def alloc(self):
        depth = python_depth()
        with self.lock:
            i = len(self.expected)
            self.expected[i] = depth
        self.keep.append(bytes(BASE + 64 * i))

    def check(self, ctm):
        traces = ctm.take_snapshot().traces
        found = {}
        for trace in traces:
            if trace.size >= BASE and (trace.size - BASE) % 64 < 48:
                found[(trace.size - BASE) // 64] = \
                    trace.traceback.total_nframe
        assert found == self.expected


def recurse(rec, depth):
    if depth:
        return recurse(rec, depth - 1)
    rec.alloc()


def test_recursion_up_and_down(ctm):
    # frames at the same addresses, with other frames under them
    ctm.start(1)
    rec = Recorder()
    for depth in [0, 5, 50, 3, 50, 49, 51, 0, 120, 7, 7, 200, 1]:
        recurse(rec, depth)
        rec.alloc()
    rec.check(ctm)


def gen(rec):
    while True:
        rec.alloc()
        yield


def test_generator_resumed_from_different_depths(ctm):
    # a generator frame's caller changes from one resumption to the next
    ctm.start(1)
    rec = Recorder()
    g = gen(rec)

    def resume(depth):
        if depth:
            return resume(depth - 1)
        next(g)

    for depth in [0, 10, 2, 30, 30, 1, 0, 60]:
        resume(depth)
    rec.check(ctm)


def test_same_function_different_callers(ctm):
    ctm.start(1)
    rec = Recorder()

    def leaf():
        rec.alloc()

    def a():
        leaf()

    def b():
        c()

    def c():
        leaf()

    for caller in [a, b, a, a, b, leaf, b]:
        caller()
    rec.check(ctm)


def with_cell(rec, depth):
    # x is a cell: its frame makes it in its prologue, an allocation
    # captured while that frame is the top and not yet complete (not
    # counted); the frame is complete, and counted, below the next ones
    x = depth

    def inner():
        return x

    if depth:
        return with_cell(rec, depth - 1)
    rec.alloc()
    return inner


def test_frames_that_were_incomplete_at_the_top(ctm):
    # the memo keeps a count per frame; one counted as the top, in its
    # prologue, must be counted again once it is under other frames
    ctm.start(1)
    rec = Recorder()
    for depth in [0, 3, 3, 40, 1, 0, 2, 80, 79]:
        with_cell(rec, depth)
        rec.alloc()
        recurse(rec, depth)
    rec.check(ctm)


def test_allocation_in_a_finalizer(ctm):
    # Python code run by the interpreter from inside another operation
    ctm.start(1)
    rec = Recorder()

    class Finalized:
        def __del__(self):
            rec.alloc()

    def drop(depth):
        if depth:
            return drop(depth - 1)
        x = Finalized()
        del x

    for depth in [0, 20, 3]:
        drop(depth)
    rec.check(ctm)


def test_threads_keep_their_own_chains(ctm):
    ctm.start(1)
    rec = Recorder()
    barrier = threading.Barrier(3)

    def worker(base):
        barrier.wait()
        for depth in [base, base + 10, base, 0]:
            recurse(rec, depth)

    threads = [threading.Thread(target=worker, args=(b,)) for b in (5, 40)]
    for t in threads:
        t.start()
    barrier.wait()
    for depth in [80, 2, 80]:
        recurse(rec, depth)
    for t in threads:
        t.join()
    rec.check(ctm)


def test_deeper_than_the_memo_grows(ctm):
    ctm.start(1)
    rec = Recorder()
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(limit, 5000))
    try:
        for depth in [3000, 10, 3000, 2999]:
            recurse(rec, depth)
    finally:
        sys.setrecursionlimit(limit)
    rec.check(ctm)
