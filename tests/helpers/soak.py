"""The soak of tests/test_ctm_internals.py, in a process of its own:
prints JSON with the tracer's memory after each stop(), the C heap's
growth over the cycles after the first three, and the objects made."""
import gc
import json
import os
import sys
import threading
import zlib

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(
    __file__))))
from tmhelpers import heap_in_use, settle_threads  # noqa: E402

import ctracemalloc as ctm  # noqa: E402


def busy(stop):
    data = bytes(range(256)) * 64
    while not stop.is_set():
        zlib.decompress(zlib.compress(data, 1))


made = 0


def cycle(i):
    global made
    ctm.start((1, 5, 25)[i % 3])
    stop = threading.Event()
    threads = [threading.Thread(target=busy, args=(stop,)) for _ in range(2)]
    for t in threads:
        t.start()
    for wave in range(5):
        objects = [(wave, j) for j in range(50_000)]
        made += len(objects)
        if wave == 2:
            ctm.take_snapshot().statistics("traceback")
        if wave == 3:
            ctm.clear_traces()
        del objects
    stop.set()
    for t in threads:
        t.join()
    # a thread's chain memo goes when the thread has exited in C too, a
    # moment after join() returns
    settle_threads()
    ctm.stop()
    return ctm.get_tracemalloc_memory()


memory = [cycle(i) for i in range(3)]
gc.collect()
heap = heap_in_use()
memory += [cycle(i) for i in range(3, 40)]
gc.collect()
print(json.dumps({"tracer_memory": memory,
                  "heap_growth": heap_in_use() - heap,
                  "allocations": made * 2}))
