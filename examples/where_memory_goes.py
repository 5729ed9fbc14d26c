"""Trace a small program with ctracemalloc and show where its memory goes.

    python examples/where_memory_goes.py

The same code runs with the standard library's tracer if you replace the
import by ``import tracemalloc``: that is the point of ctracemalloc.
"""
import linecache

import ctracemalloc as tracemalloc
from workload import workload   # the program: build an index, render it


def main():
    tracemalloc.start(10)
    kept = workload()
    snapshot = tracemalloc.take_snapshot()
    tracemalloc.stop()

    snapshot = snapshot.filter_traces([
        tracemalloc.Filter(False, "<frozen importlib._bootstrap*>"),
        tracemalloc.Filter(False, tracemalloc.__file__),
    ])
    stats = snapshot.statistics("lineno")
    print("Top 5 lines")
    for index, stat in enumerate(stats[:5], 1):
        frame = stat.traceback[0]
        print("#%s: %s:%s: %.1f KiB"
              % (index, frame.filename, frame.lineno, stat.size / 1024))
        line = linecache.getline(frame.filename, frame.lineno).strip()
        if line:
            print("    %s" % line)
    total = sum(stat.size for stat in stats)
    print("Total allocated size: %.1f KiB" % (total / 1024))

    print("\nWhere the biggest block came from:")
    print("\n".join(stats[0].traceback.format()))
    return kept


if __name__ == "__main__":
    main()
