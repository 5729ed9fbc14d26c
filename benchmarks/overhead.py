"""Tracing overhead: each workload untraced, traced by the stdlib, by
ctracemalloc (exact, and sampled: start(sample_interval=N)) and by
memray, interleaved in one run, as slowdown ratios.

    python benchmarks/overhead.py [--frames 1 25] [--repeat 5] [--quick]
                                  [--tracers ctracemalloc ...]
                                  [--sample BYTES]

The "sampled" column is ctracemalloc with sample_interval=BYTES
(default 524288, 512 KiB).

Needs: ctracemalloc installed, and for the third-party workloads and the
memray column: pip install -r benchmarks/requirements.txt. A missing
package skips its column or workload (said in the output), never fails.

Each measurement runs in a fresh subprocess (a tracer cannot be fully
removed from a process, and imports must not be warm for one tracer and
cold for another); the tracer is started before the workload's imports
and timed around the workload only. The modes are interleaved round after
round so that the noise of a shared machine hits all of them alike; the
figure kept per mode is the median. Ratios are over the untraced median;
the geomean is over the workloads.
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

# The child: start the tracer, run one workload, print its time.
CHILD = r"""
import sys, time
mode, nframe, workload = sys.argv[1], int(sys.argv[2]), sys.argv[3]
sys.path.insert(0, %(here)r)
tracker = None
if mode == "sampled":
    import ctracemalloc
    ctracemalloc.start(nframe, sample_interval=%(sample)d)
if mode == "stdlib":
    import tracemalloc
    tracemalloc.start(nframe)
elif mode == "ctracemalloc":
    import ctracemalloc
    ctracemalloc.start(nframe)
elif mode == "memray":
    import memray, tempfile, os
    path = os.path.join(tempfile.mkdtemp(), "out.bin")
    tracker = memray.Tracker(path, trace_python_allocators=True)
    tracker.__enter__()
import workloads
run = workloads.prepare(workload)
t0 = time.perf_counter()
run()
elapsed = time.perf_counter() - t0
if tracker is not None:
    tracker.__exit__(None, None, None)
print(elapsed)
"""

MODES = ["untraced", "stdlib", "ctracemalloc", "sampled", "memray"]
# the module each tracer needs
NEEDS = {"ctracemalloc": "ctracemalloc", "sampled": "ctracemalloc",
         "memray": "memray"}
SAMPLE = 512 * 1024


def available(module):
    probe = subprocess.run([sys.executable, "-c", "import " + module],
                           capture_output=True)
    return probe.returncode == 0


def usable_workloads(workloads):
    """The names of the workloads whose packages are installed; the
    others said to be skipped."""
    names = []
    for name, needs in workloads.WORKLOADS:
        if all(available(module) for module in needs):
            names.append(name)
        else:
            print("note: workload %s skipped (needs %s)"
                  % (name, ", ".join(needs)))
    return names


def measure(mode, nframe, workload):
    code = CHILD % {"here": HERE, "sample": SAMPLE}
    proc = subprocess.run([sys.executable, "-c", code, mode, str(nframe),
                           workload], capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError("%s/%s failed:\n%s" % (mode, workload,
                                                  proc.stderr[-2000:]))
    return float(proc.stdout.strip().splitlines()[-1])


def main():
    global SAMPLE
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, nargs="+", default=[1, 25])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--quick", action="store_true",
                        help="smaller workloads, 3 rounds: a smoke run")
    parser.add_argument("--tracers", nargs="+", choices=MODES[1:],
                        default=MODES[1:],
                        help="the tracers to run (default: all)")
    parser.add_argument("--sample", type=int, default=SAMPLE,
                        help="the sampled column's sample_interval, in "
                             "bytes (default %(default)s)")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()
    SAMPLE = args.sample
    if args.quick:
        os.environ["CTM_BENCH_QUICK"] = "1"
        args.repeat = min(args.repeat, 3)

    sys.path.insert(0, HERE)
    import workloads

    wanted = [m for m in MODES if m == "untraced" or m in args.tracers]
    modes = [m for m in wanted
             if m in ("untraced", "stdlib")
             or available(NEEDS[m])]
    for missing in sorted(set(wanted) - set(modes)):
        print("note: %s is not installed: no column for it" % missing)
    names = usable_workloads(workloads)

    print("Python %s on %s, %d CPUs; median of %d interleaved rounds"
          % (platform.python_version(), platform.machine(), os.cpu_count(),
             args.repeat))
    results = {}
    for nframe in args.frames:
        times = {(w, m): [] for w in names for m in modes}
        for _ in range(args.repeat):
            for w in names:
                for m in modes:
                    times[w, m].append(measure(m, nframe, w))
        medians = {k: statistics.median(v) for k, v in times.items()}
        traced = [m for m in modes if m != "untraced"]
        print("\nslowdown with %d frame%s (traced time / untraced time)"
              % (nframe, "" if nframe == 1 else "s"))
        header = "%-14s %10s" % ("workload", "untraced") + "".join(
            " %13s" % m for m in traced)
        print(header)
        print("-" * len(header))
        ratios = {m: [] for m in traced}
        for w in names:
            base = medians[w, "untraced"]
            row = "%-14s %9.3fs" % (w, base)
            for m in traced:
                r = medians[w, m] / base
                ratios[m].append(r)
                row += " %12.2fx" % r
            print(row)
        print("-" * len(header))
        row = "%-14s %10s" % ("geomean", "")
        for m in traced:
            g = math.exp(sum(map(math.log, ratios[m])) / len(ratios[m]))
            row += " %12.2fx" % g
        print(row)
        results[nframe] = {"%s/%s" % k: v for k, v in medians.items()}
    if args.json:
        with open(args.json, "w") as fp:
            json.dump(results, fp, indent=1)


if __name__ == "__main__":
    main()
