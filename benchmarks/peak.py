"""The peak record (start(peak=True)): what it adds to tracing's cost, in
time and in memory, beside the stdlib, in one run.

    python benchmarks/peak.py [--frames 1 25] [--repeat 5] [--quick]
                              [--json FILE]

Needs: ctracemalloc installed; the workloads of benchmarks/overhead.py
(pip install -r benchmarks/requirements.txt; a missing package skips its
workload, said in the output).

Two tables:

time, per workload, 1 and 25 frames: untraced, the stdlib,
ctracemalloc.start(n) and ctracemalloc.start(n, peak=True), as
slowdowns over the untraced median, and "peak/ctm", peak=True over
peak=False. The workloads are overhead.py's, and "growing", an
allocation-dense loop whose memory only grows: every allocation is a new
peak, the record's worst case (each new peak moves the record on). As in
overhead.py, every measurement runs in a fresh interpreter, the tracer
started before the workload's imports and the workload alone timed, the
modes interleaved round after round; the median of the rounds is kept.

memory: a million blocks allocated and freed (the peak), then a million
others kept: get_tracemalloc_memory() with and without peak=True, and
what the record adds, per trace of the peak and against the 16 bytes a
trace that a snapshot takes (its tracebacks aside).
"""
import argparse
import json
import math
import os
import platform
import statistics
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from overhead import usable_workloads  # noqa: E402

CHILD = r"""
import sys, time
mode, nframe, workload = sys.argv[1], int(sys.argv[2]), sys.argv[3]
sys.path.insert(0, %(here)r)
if mode == "stdlib":
    import tracemalloc
    tracemalloc.start(nframe)
elif mode.startswith("ctracemalloc"):
    import ctracemalloc
    ctracemalloc.start(nframe, **({"peak": True} if mode.endswith("peak")
                                  else {}))
if workload == "growing":
    n = 300_000 if %(quick)r else 2_000_000
    def run():
        keep = []
        for i in range(n):
            keep.append(bytearray(16))
        return keep
else:
    import workloads
    run = workloads.prepare(workload)
t0 = time.perf_counter()
result = run()
elapsed = time.perf_counter() - t0
print(elapsed)
"""

MEMORY = r"""
import sys
import ctracemalloc as tm
peak = sys.argv[1] == "peak"
tm.start(1, **({"peak": True} if peak else {}))
def temporary():
    return [bytes(10) for _ in range(1_000_000)]
def kept():
    return [bytes(10) for _ in range(1_000_000)]
t = temporary()
del t
k = kept()
memory = tm.get_tracemalloc_memory()
traces = len(tm.take_peak_snapshot().traces) if peak else 0
print(memory, traces)
"""

MODES = ["untraced", "stdlib", "ctracemalloc", "ctracemalloc-peak"]


def measure(mode, nframe, workload, quick):
    code = CHILD % {"here": HERE, "quick": quick}
    proc = subprocess.run([sys.executable, "-c", code, mode, str(nframe),
                           workload], capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError("%s/%s failed:\n%s" % (mode, workload,
                                                  proc.stderr[-2000:]))
    return float(proc.stdout.strip().splitlines()[-1])


def geomean(values):
    return math.exp(sum(map(math.log, values)) / len(values))


def time_table(names, nframe, repeat, quick):
    times = {(w, m): [] for w in names for m in MODES}
    for r in range(repeat):
        for w in names:
            # the order of the modes turns each round
            for m in MODES[r % len(MODES):] + MODES[:r % len(MODES)]:
                times[w, m].append(measure(m, nframe, w, quick))
    med = {k: statistics.median(v) for k, v in times.items()}
    print("\ntime: slowdown with %d frame%s (traced time / untraced time)"
          % (nframe, "" if nframe == 1 else "s"))
    header = "%-12s %9s %9s %9s %9s %9s" % (
        "workload", "untraced", "stdlib", "ctm", "ctm peak", "peak/ctm")
    print(header)
    print("-" * len(header))
    rows = {}
    for w in names:
        base = med[w, "untraced"]
        row = [med[w, m] / base for m in MODES[1:]]
        row.append(med[w, "ctracemalloc-peak"] / med[w, "ctracemalloc"])
        rows[w] = row
        print("%-12s %8.3fs" % (w, base)
              + "".join(" %8.2fx" % x for x in row))
    print("-" * len(header))
    others = [w for w in names if w != "growing"]
    if others:
        print("%-12s %9s" % ("geomean*", "")
              + "".join(" %8.2fx" % geomean([rows[w][i] for w in others])
                        for i in range(4)))
        print("* over overhead.py's workloads (without growing)")
    return rows


def memory_table():
    got = {}
    for mode in ("plain", "peak"):
        proc = subprocess.run([sys.executable, "-c", MEMORY, mode],
                              capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(proc.stderr[-2000:])
        memory, traces = map(int, proc.stdout.split())
        got[mode] = (memory, traces)
    plain, (peak, traces) = got["plain"][0], got["peak"]
    added = peak - plain
    print("\nmemory: a million blocks freed after the peak, a million kept")
    print("get_tracemalloc_memory(): %.1f MiB without the record, %.1f MiB "
          "with it" % (plain / 2**20, peak / 2**20))
    print("the record: %.1f MiB for %d traces at the peak, %.1f B a trace "
          "(a snapshot: 16 B a trace, tracebacks aside)"
          % (added / 2**20, traces, added / max(traces, 1)))
    return {"plain": plain, "peak": peak, "peak_traces": traces}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, nargs="+", default=[1, 25])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--quick", action="store_true",
                        help="smaller workloads, 3 rounds: a smoke run")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()
    if args.quick:
        os.environ["CTM_BENCH_QUICK"] = "1"
        args.repeat = min(args.repeat, 3)
    import workloads

    names = ["growing"] + usable_workloads(workloads)
    print("Python %s on %s, %d CPUs; median of %d interleaved rounds; "
          "load average %.2f" % (platform.python_version(),
                                 platform.machine(), os.cpu_count(),
                                 args.repeat, os.getloadavg()[0]))
    results = {"time": {}, "memory": None}
    for nframe in args.frames:
        results["time"][nframe] = time_table(names, nframe, args.repeat,
                                             args.quick)
    results["memory"] = memory_table()
    print("\nload average at the end %.2f" % os.getloadavg()[0])
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
