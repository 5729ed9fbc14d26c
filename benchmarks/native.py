"""Native memory (issue 17): how much of a process's memory growth
ctracemalloc's native domain accounts for, and what tracing native
allocations costs, beside the stdlib and memray, in one run.

    python benchmarks/native.py [--repeat 5] [--quick] [--workloads ...]
                                [--json FILE]

Needs: ctracemalloc installed, and pip install -r
benchmarks/requirements.txt (lxml, Pillow, zstandard, memray and the
overhead workloads' packages). A missing package skips its column or
workload (said in the output), never fails. Where start(native=True) is
not supported (it raises TypeError) the native columns say n/a, and why.

Two tables:

coverage, per native-heavy workload (native_workloads.py), one child
each: the RSS growth over the workload (/proc/self/statm, after
gc.collect(), the result kept alive) in an untraced child; the memory the
stdlib's tracemalloc sees grow in its own child; and in a child traced by
ctracemalloc.start(native=True): the growth of the Python domain (0) and
of NATIVE_DOMAIN, the native domain's share of the untraced RSS growth,
and the native line that grew most (compare_to of the two snapshots,
filtered to NATIVE_DOMAIN). Each workload names the line expected on top
(native_workloads.EXPECTED); the table says whether it is. The RSS growth
comes from an untraced child because in a traced one the memory the first
snapshot used and freed is reused by the workload and hides part of its
growth.

time, per workload, native-heavy and Python-heavy (workloads.py, as in
benchmarks/overhead.py), 1 frame: untraced, the stdlib, ctracemalloc with
native=False and native=True, memray without and with native_traces (both
with trace_python_allocators=True, as in overhead.py), as slowdowns over
the untraced median, with the geomean per group; the "nat/ctm" column is
native=True over native=False. As in overhead.py, every measurement runs
in a fresh interpreter, the tracer started before the workload's imports
and the workload alone timed; the modes are interleaved round after round
(their order rotated each round) and the median of the rounds is kept.
"""
import argparse
import datetime
import json
import math
import os
import platform
import statistics
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from native_workloads import EXPECTED  # noqa: E402
from overhead import available  # noqa: E402

# The child: start a tracer, prepare one workload, then either time it
# ("time") or measure what it leaves in memory ("coverage"). Prints one
# JSON object; {"na": reason} when the mode cannot run here.
CHILD = r"""
import gc, importlib, inspect, json, os, sys, time
action, mode, module, workload = sys.argv[1:5]
sys.path.insert(0, %(here)r)
# 25 frames to measure memory: the largest native traceback must reach
# the workload's line when a library's Python code made the native call.
nframe = 25 if action == "coverage" else 1
tm = tracker = None
if mode == "stdlib":
    import tracemalloc as tm
    tm.start(nframe)
elif mode.startswith("ctracemalloc"):
    import ctracemalloc as tm
    try:
        if mode == "ctracemalloc-native":
            tm.start(nframe, native=True)
        else:
            tm.start(nframe)
    except TypeError as exc:
        print(json.dumps({"na": "start(native=True) raises TypeError: %%s"
                                %% exc}))
        sys.exit(0)
elif mode.startswith("memray"):
    import memray, shutil, tempfile
    tmpdir = tempfile.mkdtemp()
    tracker = memray.Tracker(os.path.join(tmpdir, "out.bin"),
                             trace_python_allocators=True,
                             native_traces=mode == "memray-native")
    tracker.__enter__()
run = importlib.import_module(module).prepare(workload)

def rss():
    with open("/proc/self/statm") as fp:
        return int(fp.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

def domain(snap, number):
    only = snap.filter_traces([tm.DomainFilter(True, number)])
    return only, sum(s.size for s in only.statistics("filename"))

out = {}
if action == "time":
    t0 = time.perf_counter()
    kept = run()
    out["time"] = time.perf_counter() - t0
else:
    snap0 = tm.take_snapshot() if tm else None
    gc.collect()
    rss0 = rss()
    kept = run()
    gc.collect()
    out["rss"] = rss() - rss0  # used from the untraced child only
    if tm:
        snap1 = tm.take_snapshot()
        out["traced"] = (sum(s.size for s in snap1.statistics("filename"))
                         - sum(s.size for s in snap0.statistics("filename")))
    if mode == "ctracemalloc-native":
        out["python"] = domain(snap1, 0)[1] - domain(snap0, 0)[1]
        native0, size0 = domain(snap0, tm.NATIVE_DOMAIN)
        native1, size1 = domain(snap1, tm.NATIVE_DOMAIN)
        out["native"] = size1 - size0
        diff = native1.compare_to(native0, "lineno")
        if diff and diff[0].size_diff > 0:
            frame = diff[0].traceback[0]
            out["top"] = [frame.filename, frame.lineno, diff[0].size_diff]
        diff = native1.compare_to(native0, "traceback")
        if diff and diff[0].size_diff > 0:
            # most recent call first
            out["chain"] = [[frame.filename, frame.lineno]
                            for frame in reversed(list(diff[0].traceback))]
        marker = importlib.import_module(module).EXPECTED.get(workload)
        lines, first = inspect.getsourcelines(run)
        hits = [first + i for i, line in enumerate(lines)
                if marker and marker in line]
        if hits:
            out["expected"] = [run.__code__.co_filename, hits[0]]
if tracker is not None:
    tracker.__exit__(None, None, None)
    shutil.rmtree(tmpdir)
print(json.dumps(out))
"""

MODES = ["untraced", "stdlib", "ctracemalloc", "ctracemalloc-native",
         "memray", "memray-native"]
HEADS = {"untraced": "untraced", "stdlib": "stdlib",
         "ctracemalloc": "ctm", "ctracemalloc-native": "ctm native",
         "memray": "memray", "memray-native": "memray nat"}


def child(action, mode, module, workload):
    code = CHILD % {"here": HERE}
    proc = subprocess.run([sys.executable, "-c", code, action, mode, module,
                           workload], capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError("%s %s/%s failed:\n%s" % (action, mode, workload,
                                                     proc.stderr[-2000:]))
    return json.loads(proc.stdout.strip().splitlines()[-1])


def native_support():
    """None if ctracemalloc.start(native=True) works here, else why not."""
    code = ("import ctracemalloc\n"
            "try:\n"
            "    ctracemalloc.start(native=True)\n"
            "except TypeError as exc:\n"
            "    print('start(native=True) raises TypeError: %s' % exc)\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True,
                          text=True)
    if proc.returncode != 0:
        return "ctracemalloc failed: " + proc.stderr.strip()[-300:]
    return proc.stdout.strip() or None


def geomean(values):
    return math.exp(sum(map(math.log, values)) / len(values))


def mb(size):
    if size is None:
        return "n/a"
    return "%.1f MB" % (size / 1e6 if abs(size) >= 50_000 else 0.0)


def pct(part, whole):
    if part is None or not whole:
        return "n/a"
    return "%.0f%%" % (100.0 * part / whole)


def where(frame):
    if not frame:
        return "-"
    return "%s:%d" % (os.path.basename(frame[0]), frame[1])


def check(workload, expected, top, chain):
    """Whether the workload's own line is the top native line, or, where a
    library's Python code made the native calls, in its traceback."""
    text = "%s: the %s line (%s) is the top native line: " % (
        workload, EXPECTED[workload].rstrip("("), where(expected))
    if top and top[:2] == expected:
        return text + "yes"
    if chain and expected in chain:
        chain = chain[:chain.index(expected) + 1]
        return text + "no, it calls it (%s)" % " <- ".join(map(where, chain))
    return text + "NO"


def coverage_table(names, modes, na):
    print("\ncoverage: memory kept by each workload (RSS growth of an "
          "untraced child, after gc)")
    header = ("%-8s %10s %10s %10s %10s %7s %8s  %s"
              % ("workload", "RSS", "stdlib", "ctm python", "ctm native",
                 "native", "nat+py", "top native line"))
    print(header)
    print("-" * len(header))
    results = {}
    checks = []
    for w in names:
        base = child("coverage", "untraced", "native_workloads", w)
        std = child("coverage", "stdlib", "native_workloads", w)
        ctm = {"na": na} if na else child("coverage", "ctracemalloc-native",
                                          "native_workloads", w)
        rss = base["rss"]
        native, python = ctm.get("native"), ctm.get("python")
        both = None if native is None else native + python
        top = ctm.get("top")
        print("%-8s %10s %10s %10s %10s %7s %8s  %s"
              % (w, mb(rss), mb(std["traced"]), mb(python), mb(native),
                 pct(native, rss), pct(both, rss),
                 where(top) if not na else "n/a"))
        if "expected" in ctm:
            checks.append(check(w, ctm["expected"], top, ctm.get("chain")))
        results[w] = {"untraced": base, "stdlib": std, "native": ctm}
    print("-" * len(header))
    print("RSS: untraced child; stdlib: growth of the stdlib's traces; "
          "ctm: start(native=True), by domain;\nnative and nat+py: ctm "
          "native, and native + python, over RSS")
    for line in checks:
        print(line)
    if na:
        print("ctm: n/a, " + na)
    return results


def time_table(groups, modes, repeat, na):
    work = [(module, w) for module, names in groups for w in names]
    times = {(w, m): [] for _, w in work for m in modes}
    for r in range(repeat):
        order = modes[r % len(modes):] + modes[:r % len(modes)]
        for module, w in work:
            for m in order:
                times[w, m].append(child("time", m, module, w)["time"])
    medians = {k: statistics.median(v) for k, v in times.items()}
    traced = MODES[1:]
    print("\ntime: slowdown with 1 frame (traced time / untraced time), "
          "median of %d interleaved rounds" % repeat)
    header = "%-12s %9s" % ("workload", "untraced") + "".join(
        " %10s" % HEADS[m] for m in traced[:3]) + " %8s" % "nat/ctm" + "".join(
        " %10s" % HEADS[m] for m in traced[3:])
    print(header)
    for title, (module, names) in zip(("native-heavy", "Python-heavy"),
                                      groups):
        if not names:
            continue
        print("-" * len(header))
        print("%s (%s)" % (title, module + ".py"))
        ratios = {m: [] for m in traced + ["nat/ctm"]}
        for w in names:
            base = medians[w, "untraced"]
            cells = {}
            for m in traced:
                if m in modes:
                    cells[m] = medians[w, m] / base
            if "ctracemalloc" in cells and "ctracemalloc-native" in cells:
                cells["nat/ctm"] = (cells["ctracemalloc-native"]
                                    / cells["ctracemalloc"])
            for m, v in cells.items():
                ratios[m].append(v)
            print(row(w, "%8.3fs" % base, cells))
        print(row("geomean", "", {m: geomean(v)
                                  for m, v in ratios.items() if v}))
    print("-" * len(header))
    if na:
        print("ctm native: n/a, " + na)
    return {"%s/%s" % k: v for k, v in medians.items()}


def row(name, base, cells):
    def cell(m, width):
        return (" %*.2fx" % (width - 1, cells[m]) if m in cells
                else " %*s" % (width, "n/a"))
    text = "%-12s %9s" % (name, base)
    for m in MODES[1:4]:
        text += cell(m, 10)
    text += cell("nat/ctm", 8)
    for m in MODES[4:]:
        text += cell(m, 10)
    return text


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--quick", action="store_true",
                        help="smaller workloads, 3 rounds: a smoke run")
    parser.add_argument("--workloads", nargs="+",
                        help="run only these workloads (native-heavy or "
                        "Python-heavy; default: all)")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()
    if args.quick:
        os.environ["CTM_BENCH_QUICK"] = "1"
        args.repeat = min(args.repeat, 3)

    import native_workloads
    import workloads

    groups = []
    for module in (native_workloads, workloads):
        names = []
        for name, needs in module.WORKLOADS:
            if args.workloads and name not in args.workloads:
                continue
            if all(available(m) for m in needs):
                names.append(name)
            else:
                print("note: workload %s skipped (needs %s)"
                      % (name, ", ".join(needs)))
        groups.append((module.__name__, names))

    modes = ["untraced", "stdlib"]
    if available("ctracemalloc"):
        modes += ["ctracemalloc", "ctracemalloc-native"]
    else:
        print("note: ctracemalloc is not installed: no column for it")
    na = native_support() if "ctracemalloc" in modes else None
    if na:
        modes.remove("ctracemalloc-native")
    if available("memray"):
        modes += ["memray", "memray-native"]
    else:
        print("note: memray is not installed: no column for it")

    print("%s, Python %s on %s, %d CPUs, load average %.2f"
          % (datetime.date.today(), platform.python_version(),
             platform.machine(), os.cpu_count(), os.getloadavg()[0]))
    sys.stdout.flush()
    results = {}
    if groups[0][1]:
        results["coverage"] = coverage_table(groups[0][1], modes, na)
        sys.stdout.flush()
    results["time"] = time_table(groups, modes, args.repeat, na)
    print("load average at the end %.2f" % os.getloadavg()[0])
    if args.json:
        with open(args.json, "w") as fp:
            json.dump(results, fp, indent=1)


if __name__ == "__main__":
    main()
