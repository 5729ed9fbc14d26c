"""Threads allocating with the GIL released.

zlib, bz2 and lzma run their codecs with the GIL released, and zlib and lzma
allocate their state through PyMem_RawMalloc from there: the RAW hooks then
run in several threads at once, without the GIL. These tests run against
both implementations (the stdlib takes the GIL in its RAW hooks; ctracemalloc
must not need it)."""
import bz2
import lzma
import random
import sys
import threading
import time
import zlib

import pytest

from tmhelpers import patience, raw_frames

NTHREADS = 4


def make_data(size, seed):
    """Compressible but not trivial data of size bytes."""
    rng = random.Random(seed)
    words = [bytes(rng.randrange(97, 123) for _ in range(rng.randrange(2, 9)))
             for _ in range(500)]
    out = bytearray()
    while len(out) < size:
        out += rng.choice(words) + b" "
    return bytes(out[:size])


def codec_round_trips(data, rounds, errors):
    try:
        for _ in range(rounds):
            assert zlib.decompress(zlib.compress(data, 6)) == data
            assert bz2.decompress(bz2.compress(data, 9)) == data
            assert lzma.decompress(lzma.compress(data, preset=1)) == data
            # streaming objects: their state lives across calls
            comp = zlib.compressobj(9)
            packed = comp.compress(data) + comp.flush()
            assert zlib.decompressobj().decompress(packed) == data
    except BaseException as exc:  # reported by the main thread
        errors.append(exc)


def run_threads(target, args_list):
    threads = [threading.Thread(target=target, args=args)
               for args in args_list]
    for thread in threads:
        thread.start()
    return threads


def test_codecs_in_threads(tm):
    tm.start(5)
    data = [make_data(1 << 18, seed) for seed in range(NTHREADS)]
    errors = []
    threads = run_threads(codec_round_trips,
                          [(d, 2, errors) for d in data])
    # snapshots and queries while the threads allocate (paced: the GIL
    # must be left to the threads between the RAW calls)
    snapshots = 0
    while any(t.is_alive() for t in threads):
        snapshot = tm.take_snapshot()
        snapshot.statistics("lineno")
        current, peak = tm.get_traced_memory()
        assert 0 <= current <= peak
        snapshots += 1
        time.sleep(0.02)
    for thread in threads:
        thread.join()
    assert not errors, errors
    assert snapshots > 0

    # Quiet now: the traced total is the sum of the traces.
    current = tm.get_traced_memory()[0]
    snapshot = tm.take_snapshot()
    assert abs(current - sum(t.size for t in snapshot.traces)) <= 1024
    # the codecs' buffers were traced while the threads ran
    assert tm.get_traced_memory()[1] >= 1 << 18

    tm.clear_traces()
    assert tm.get_traced_memory() == (0, 0)
    assert tm.is_tracing()


def decompress_half(kind, stream, keep, lines, errors):
    try:
        if kind == "lzma":
            decompressor = lzma.LZMADecompressor()
        else:
            decompressor = zlib.decompressobj()
        # The codec allocates its window here, with the GIL released.
        lines[kind] = sys._getframe().f_lineno + 1
        decompressor.decompress(stream[:len(stream) // 2], 100)
        keep.append(decompressor)
    except BaseException as exc:
        errors.append(exc)


def test_traceback_of_allocation_without_gil(tm):
    data = make_data(1 << 20, 1)
    streams = {"lzma": lzma.compress(data, preset=1),   # 1 MiB dictionary
               "zlib": zlib.compress(data)}              # 32 KiB window
    tm.start(3)
    keep, lines, errors = [], {}, []
    threads = run_threads(decompress_half,
                          [(kind, stream, keep, lines, errors)
                           for kind, stream in streams.items()])
    for thread in threads:
        thread.join()
    assert not errors, errors
    snapshot = tm.take_snapshot()
    for kind, size in (("lzma", 1 << 20), ("zlib", 32768)):
        where = (__file__, lines[kind])
        sizes = [t.size for t in snapshot.traces
                 if raw_frames(t.traceback)[0] == where]
        assert size in sizes, (kind, sizes)
        # the thread's own stack: its function, then threading's
        tracebacks = [raw_frames(t.traceback) for t in snapshot.traces
                      if raw_frames(t.traceback)[0] == where]
        assert all(tb[1][0] == threading.__file__ for tb in tracebacks)
    del keep


def allocate_in_loop(stop, errors):
    try:
        data = make_data(200_000, 2)
        packed = zlib.compress(data)
        while not stop.is_set():
            assert zlib.decompress(packed) == data
            [bytes(100) for _ in range(100)]  # made and freed
    except BaseException as exc:
        errors.append(exc)


@pytest.mark.parametrize("action", ["stop", "clear_traces", "restart"])
def test_stop_and_clear_while_threads_allocate(tm, action):
    stop, errors = threading.Event(), []
    tm.start()
    threads = run_threads(allocate_in_loop,
                          [(stop, errors) for _ in range(NTHREADS)])
    try:
        for i in range(30):
            if action == "stop":
                tm.stop()
                tm.start(1 + i % 3)
            elif action == "clear_traces":
                tm.clear_traces()
            else:
                tm.stop()
                assert tm.get_traced_memory() == (0, 0)
                tm.start()
            tm.take_snapshot()
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    assert not errors, errors
    current = tm.get_traced_memory()[0]
    assert abs(current - sum(t.size for t in tm.take_snapshot().traces)) \
        <= 1024


# -- every operation while threads allocate ---------------------------------

NWORKERS = 6
PHASES = 100


def phase_worker(barrier, stop, errors, seed, markers):
    """Allocate and free in phases (with the GIL: objects and their
    buffers; without: zlib, bz2 and lzma state), ending each phase with a
    marker object and a wait at the barrier, where the main thread checks
    the tracer and acts on it while every worker stands still."""
    rng = random.Random(seed)
    data = make_data(10_000, seed)
    live = []
    try:
        while True:
            for _ in range(rng.randrange(5, 20)):
                r = rng.random()
                if r < 0.25:
                    assert zlib.decompress(zlib.compress(data, 1)) == data
                elif r < 0.28:
                    assert bz2.decompress(bz2.compress(data[:3000], 1)) \
                        == data[:3000]
                elif r < 0.31:
                    lzma.compress(data[:3000], preset=0)
                elif r < 0.75:
                    live.append([bytes(rng.randrange(1, 300))
                                 for _ in range(20)])
                elif live:
                    live.pop(rng.randrange(len(live)))
                if len(live) > 100:
                    del live[:50]
            line = sys._getframe().f_lineno + 1
            markers.append((bytearray(777), line))
            barrier.wait()          # the main thread checks
            barrier.wait()          # and acts
            if stop.is_set():
                return
    except threading.BrokenBarrierError:
        pass
    except BaseException as exc:
        errors.append(exc)
        barrier.abort()


def check_quiet_tracer(tm, markers):
    """Checks while no worker runs: every marker of the phase is traced at
    its line; the traced total is the sum of the live traces (but for
    what this thread allocates between the two calls); peak >= current."""
    for obj, line in markers:
        tb = tm.get_object_traceback(obj)
        assert tb is not None, "a block allocated while tracing is untraced"
        assert (tb[-1].filename, tb[-1].lineno) == (__file__, line)
    current, peak = tm.get_traced_memory()
    snapshot = tm.take_snapshot()
    total = sum(t.size for t in snapshot.traces)
    assert abs(total - current) <= 4096, (total, current)
    assert peak >= current
    return len(snapshot.traces)


def test_every_operation_while_threads_allocate(tm):
    barrier = threading.Barrier(NWORKERS + 1, timeout=patience(60))
    stop, errors = threading.Event(), []
    markers = [[] for _ in range(NWORKERS)]
    rng = random.Random(5)
    tm.start(5)
    threads = run_threads(phase_worker,
                          [(barrier, stop, errors, seed, markers[seed])
                           for seed in range(NWORKERS)])
    actions = []
    done = False
    try:
        for phase in range(PHASES):
            barrier.wait()
            phase_markers = [m for ms in markers for m in ms]
            for ms in markers:
                ms.clear()
            if tm.is_tracing():
                assert check_quiet_tracer(tm, phase_markers) > NWORKERS
            action = rng.choice(["none", "snapshot", "clear", "reset_peak",
                                 "stop", "restart"])
            actions.append(action)
            if action == "clear":
                tm.clear_traces()
                assert tm.get_traced_memory()[0] < 4096
            elif action == "reset_peak":
                tm.reset_peak()
                current, peak = tm.get_traced_memory()
                assert 0 <= peak - current < 4096
            elif action == "stop":
                tm.stop()
                assert tm.get_traced_memory() == (0, 0)
            elif action == "restart":
                tm.stop()
                tm.start(rng.choice([1, 5, 25]))
            elif action == "snapshot" and tm.is_tracing():
                tm.take_snapshot()
            if action in ("clear", "stop", "restart"):
                # nothing from before is left: no trace invented
                for obj, _ in phase_markers:
                    assert tm.get_object_traceback(obj) is None
            if not tm.is_tracing() and rng.random() < 0.5:
                tm.start(rng.choice([1, 5, 25]))
            del phase_markers
            if phase == PHASES - 1:
                stop.set()
            barrier.wait()
        done = True
    except threading.BrokenBarrierError:
        assert errors, "the barrier broke, yet no worker failed"
    finally:
        stop.set()
        if not done:
            barrier.abort()     # a failed check: let the workers go
        for thread in threads:
            thread.join(60)
    assert not errors, errors
    assert not any(t.is_alive() for t in threads)
    assert {"clear", "stop", "restart", "reset_peak"} <= set(actions)
    tm.clear_traces()
    assert tm.get_traced_memory()[0] < 4096
    tm.stop()
    assert tm.get_traced_memory() == (0, 0)
