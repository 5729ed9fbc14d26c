"""Snapshot analysis at scale: every operation timed on the same live set
under the stdlib and ctracemalloc, side by side, as times and ratios.

    python benchmarks/snapshot.py [--traces 700000 2000000] [--frames 1 25]
                                  [--tracers tracemalloc ctracemalloc]

For each size and frame depth, each tracer runs in a fresh subprocess that
builds the same live set (a deterministic program: 40 source files, 400
functions, call chains 30 to 40 frames deep through varied paths: hundreds
of distinct lines, and with 25 frames tens of thousands of distinct
tracebacks), takes a snapshot, changes a tenth of the live set, takes a
second one, and times:

  take_snapshot, statistics (lineno, filename, traceback; cumulative
  lineno and filename), compare_to (lineno, traceback, cumulative lineno),
  filter_traces (include a file pattern, exclude one with all_frames=True,
  a DomainFilter), dump, load; and the stdlib's pickle format: dump as
  pickle (the stdlib's dump, ctracemalloc's dump(format="pickle")) and
  load of a pickle the stdlib wrote.

Each operation runs at least three times and for at least a second, and
its best time is kept, under both tracers alike; one that takes over three
seconds (only the stdlib's slowest) runs once. Memory: the snapshot's
resident memory per trace (measured around a load, with freed heap memory
given back first), for ctracemalloc what sys.getsizeof counts beyond the
tables of tracebacks and frames, the dump file's size, and the peak
resident memory that load adds (also as a multiple of the snapshot's
resident memory). The stdlib's slowest operations take
minutes on two million traces with 25 frames; a full run takes about half
an hour.
"""
import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile

CHILD = r"""
import ctypes, gc, json, os, random, sys, time
module, nframe, target, path = (sys.argv[1], int(sys.argv[2]),
                                int(sys.argv[3]), sys.argv[4])
tm = __import__(module)

NFILES, NFUNCS = 40, 10

def rss(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(field)

def trim():
    # give freed heap memory back, so that resident memory measures what
    # is alive (glibc keeps freed large blocks in its heap otherwise)
    gc.collect()
    ctypes.CDLL(None).malloc_trim(0)

def reset_peak():
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")

# 40 files of 10 functions; function j of file i calls two others chosen
# from (i, j) and the depth left, so chains wander across files.
namespace = {}
for i in range(NFILES):
    lines = []
    for j in range(NFUNCS):
        a = (i * 7 + j * 3 + 1) % NFILES, (j * 5 + 2) % NFUNCS
        b = (i * 11 + j + 5) % NFILES, (j * 3 + 7) % NFUNCS
        lines += [
            "def f%d_%d(depth, n, out):" % (i, j),
            "    if depth == 0:",
            "        for k in range(n):",
            "            out.append(('x%d' % k) * (1 + k % 5))",
            "            out.append([k] * (k % 9))",
            "        return",
            "    if (n * 7 + depth * 3) >> (depth % 4) & 1:",
            "        f%d_%d(depth - 1, n, out)" % a,
            "    else:",
            "        f%d_%d(depth - 1, n, out)" % b,
        ]
    code = compile("\n".join(lines), "/srv/app/pkg%d/module%d.py" % (i % 8, i),
                   "exec")
    exec(code, namespace)
funcs = [namespace["f%d_%d" % (i, j)] for i in range(NFILES)
         for j in range(NFUNCS)]

def build(blocks, salt):
    # an element is a str and a list (1 or 2 blocks): about 1.42 blocks;
    # depth 30 to 40 below this frame
    count = int(blocks / 1.42)
    rng = random.Random(salt)
    out = []
    while len(out) < count:
        f = funcs[rng.randrange(len(funcs))]
        f(30 + rng.randrange(11), 1 + rng.randrange(20), out)
    return out

def timed(op):
    # the best of at least three runs and a second's worth, for both
    # tracers alike; an operation slower than three seconds runs once
    best = None
    total = 0.0
    runs = 0
    result = None
    while True:
        t0 = time.perf_counter()
        result = op()
        dt = time.perf_counter() - t0
        best = dt if best is None else min(best, dt)
        total += dt
        runs += 1
        if (runs >= 3 and total > 1.0) or dt > 3.0:
            return best, result
        result = None

tm.start(nframe)
live = build(target, 0)
times = {}
times["take_snapshot"], snap1 = timed(tm.take_snapshot)
# a tenth of the live set changes
del live[: len(live) // 10]
more = build(target // 10, 1)
snap2 = tm.take_snapshot()
tm.stop()
ntraces = len(snap1.traces)

for key in ("lineno", "filename", "traceback"):
    times["statistics " + key], _ = timed(lambda: snap1.statistics(key))
for key in ("lineno", "filename"):
    times["statistics %s cumulative" % key], _ = timed(
        lambda: snap1.statistics(key, cumulative=True))
times["compare_to lineno"], _ = timed(lambda: snap2.compare_to(snap1, "lineno"))
times["compare_to traceback"], _ = timed(
    lambda: snap2.compare_to(snap1, "traceback"))
times["compare_to lineno cumulative"], _ = timed(
    lambda: snap2.compare_to(snap1, "lineno", cumulative=True))
times["filter include"], _ = timed(lambda: snap1.filter_traces(
    [tm.Filter(True, "/srv/app/pkg3/*")]))
times["filter exclude all_frames"], _ = timed(lambda: snap1.filter_traces(
    [tm.Filter(False, "/srv/app/pkg3/*", all_frames=True)]))
times["filter domain"], _ = timed(lambda: snap1.filter_traces(
    [tm.DomainFilter(False, 1)]))
times["dump"], _ = timed(lambda: snap1.dump(path))
size = os.path.getsize(path)
times["load"], _ = timed(lambda: tm.Snapshot.load(path))

# moving between the two: the stdlib's pickle format, written (by dump,
# or by dump(format="pickle")), and read back from a file the stdlib wrote
pickled = path + ".pickle"
if module == "ctracemalloc":
    times["dump as pickle"], _ = timed(
        lambda: snap1.dump(pickled, format="pickle"))
    import tracemalloc
    tracemalloc.Snapshot(snap1.traces._traces, nframe).dump(pickled)
else:
    times["dump as pickle"], _ = timed(lambda: snap1.dump(pickled))
times["load the stdlib's pickle"], _ = timed(
    lambda: tm.Snapshot.load(pickled))
os.unlink(pickled)

# memory: what a snapshot costs, and what load adds at its peak
trim()
base = rss("VmRSS")
snap = tm.Snapshot.load(path)
trim()
kept = rss("VmRSS") - base
sizeof = None
if module == "ctracemalloc":
    # what the traces cost beyond the tables of tracebacks, frames and
    # filenames: a filtered copy without traces keeps the tables whole
    tables = snap.filter_traces([tm.DomainFilter(True, 12345)])
    sizeof = sys.getsizeof(snap) - sys.getsizeof(tables)
    del tables
del snap
trim()
base = rss("VmRSS")
reset_peak()
snap = tm.Snapshot.load(path)
load_peak = rss("VmHWM") - base
del snap
print(json.dumps({"traces": ntraces, "times": times, "file": size,
                  "snapshot_bytes": kept, "sizeof": sizeof,
                  "load_peak": load_peak,
                  "tracebacks": len({(t.traceback, t.traceback.total_nframe)
                                     for t in snap1.traces})
                  if module == "ctracemalloc" else None}))
"""


def measure(python, module, nframe, traces):
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "snapshot")
        proc = subprocess.run([python, "-c", CHILD, module, str(nframe),
                               str(traces), path],
                              capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError("%s failed:\n%s" % (module, proc.stderr[-3000:]))
    return json.loads(proc.stdout.strip().splitlines()[-1])


def fmt_time(seconds):
    if seconds is None:
        return "-"
    if seconds >= 1:
        return "%.2f s" % seconds
    if seconds >= 1e-3:
        return "%.1f ms" % (seconds * 1e3)
    return "%.0f us" % (seconds * 1e6)


def mib(n):
    return "%.1f MiB" % (n / 2**20)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--traces", type=int, nargs="+",
                        default=[700_000, 2_000_000],
                        help="live blocks to build (about; default: "
                             "700000 2000000)")
    parser.add_argument("--frames", type=int, nargs="+", default=[1, 25])
    parser.add_argument("--tracers", nargs="+",
                        default=["tracemalloc", "ctracemalloc"],
                        choices=["tracemalloc", "ctracemalloc"])
    parser.add_argument("--python", default=sys.executable)
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()
    print("Python %s, %s, %d CPUs" % (platform.python_version(),
                                      platform.machine(), os.cpu_count()))
    results = []
    for traces in args.traces:
        for nframe in args.frames:
            row = {"target": traces, "nframe": nframe}
            for module in args.tracers:
                row[module] = measure(args.python, module, nframe, traces)
            results.append(row)
            report(row, args.tracers)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)


def report(row, tracers):
    std = row.get("tracemalloc")
    ctm = row.get("ctracemalloc")
    first = ctm or std
    print()
    print("%d traces, %d frame%s" % (first["traces"], row["nframe"],
                                      "" if row["nframe"] == 1 else "s"))
    print()
    print("| operation | %s |" % " | ".join(tracers)
          + (" ratio |" if len(tracers) == 2 else ""))
    print("| --- |" + " ---: |" * (len(tracers) + (len(tracers) == 2)))
    for op in first["times"]:
        cells = [fmt_time(row[m]["times"][op]) for m in tracers]
        if std and ctm:
            cells.append("%.0fx" % (std["times"][op] / ctm["times"][op]))
        print("| %s | %s |" % (op, " | ".join(cells)))
    cells = [mib(row[m]["file"]) for m in tracers]
    if std and ctm:
        cells.append("%.2f" % (ctm["file"] / std["file"]))
    print("| file size | %s |" % " | ".join(cells))
    cells = ["%.1f B/trace" % (row[m]["snapshot_bytes"] / row[m]["traces"])
             for m in tracers]
    if std and ctm:
        cells.append("%.2f" % (ctm["snapshot_bytes"] / std["snapshot_bytes"]))
    print("| snapshot memory (resident) | %s |" % " | ".join(cells))
    if ctm and ctm.get("sizeof"):
        print("| snapshot memory beyond its tracebacks (sys.getsizeof) "
              "| %s%.1f B/trace | |"
              % ("- | " if std else "", ctm["sizeof"] / ctm["traces"]))
    cells = [mib(row[m]["load_peak"]) for m in tracers]
    if std and ctm:
        cells.append("%.2f" % (ctm["load_peak"] / std["load_peak"]))
    print("| load peak memory | %s |" % " | ".join(cells))
    # the bar: reading a file back costs no more than the
    # snapshot it holds
    cells = ["%.2f" % (row[m]["load_peak"] / row[m]["snapshot_bytes"])
             for m in tracers]
    print("| load peak / snapshot memory | %s |%s"
          % (" | ".join(cells), " |" if std and ctm else ""))
    if ctm and ctm.get("tracebacks") is not None:
        print("(%d distinct tracebacks)" % ctm["tracebacks"])
    sys.stdout.flush()


if __name__ == "__main__":
    main()
