"""Trace tests/helpers/workload.py with one tracer and print its
statistics as JSON (run by tests/test_workload.py).

    python trace_workload.py stdlib|ctm
"""
import gc
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

if sys.argv[1] == "ctm":
    import ctracemalloc as tracer
else:
    import tracemalloc as tracer
import workload  # noqa: E402


def by_line(stats):
    return {str(s.traceback[0].lineno): [s.size, s.count] for s in stats
            if s.traceback[0].filename == workload.__file__}


# A first run does the lazy imports and fills the caches (re's, docutils'
# and pygments' registries): the traced run is the steady state.
workload.run()
result = {}
for nframe, cumulative in ((1, False), (25, True)):
    gc.collect()
    tracer.start(nframe)
    kept = workload.run()
    snapshot = tracer.take_snapshot()
    tracer.stop()
    stats = snapshot.statistics("lineno", cumulative)
    result["cumulative" if cumulative else "lineno"] = by_line(stats)
    del kept, snapshot, stats
print(json.dumps(result))
