"""The tracer's own memory per live trace: get_tracemalloc_memory() over
the number of traces, with about two million blocks alive, for the stdlib
and ctracemalloc side by side, as bytes per trace and as a ratio. Then
the memory left after code that comes and goes: many generated modules,
each compiled, run and dropped, in one file or each in its own.

    python benchmarks/memory.py [--traces 2000000] [--frames 1 25]
                                [--modules 50000]

Each measurement runs in a fresh subprocess. The live blocks are a mix of
what programs keep: strs, ints, floats, tuples, lists, dicts and bytes of
a few sizes (bytes above 512 come from the RAW allocator, not pymalloc),
made by a handful of call sites.
"""
import argparse
import json
import platform
import subprocess
import sys

CHILD = r"""
import json, sys
module, nframe, target = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
tm = __import__(module)
tm.start(nframe)

def strings(n):
    return ["item-%d" % i for i in range(n)]

def numbers(n):
    return [(i * 7919, i * 0.5) for i in range(n)]

def containers(n):
    return [[i] * (i % 7) for i in range(n)] + [{"k": i} for i in range(n)]

def blobs(n):
    return [bytes(16 + (i * 37) % 1500) for i in range(n)]

# Each row makes about 10 traced blocks.
rows = target // 10
keep = [strings(rows), numbers(rows), containers(rows), blobs(rows // 2)]
snap = tm.take_snapshot()
ntraces = len(snap.traces)
print(json.dumps({"traces": ntraces,
                  "memory": tm.get_tracemalloc_memory()}))
"""


MODULES = r"""
import gc, json, sys
module, nframe, n, distinct = (sys.argv[1], int(sys.argv[2]),
                               int(sys.argv[3]), sys.argv[4] == "1")
import ctracemalloc, tracemalloc
tm = __import__(module)
tm.start(nframe)
for i in range(n):
    src = ("def f(a):\n    return [a] * %d\nx = f(3)\n"
           "class C:\n    y = x\n" % (i % 7 + 1))
    code = compile(src, "<gen%d>" % i if distinct else "<gen>", "exec")
    exec(code, {})
    del code
gc.collect()
print(json.dumps({"traced": tm.get_traced_memory()[0],
                  "memory": tm.get_tracemalloc_memory()}))
"""


def measure(module, nframe, traces, child=CHILD, *more):
    proc = subprocess.run([sys.executable, "-c", child, module, str(nframe),
                           str(traces)] + [str(m) for m in more],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError("%s failed:\n%s" % (module, proc.stderr[-2000:]))
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--traces", type=int, default=2_000_000)
    parser.add_argument("--frames", type=int, nargs="+", default=[1, 25])
    parser.add_argument("--modules", type=int, default=50_000)
    args = parser.parse_args()
    print("Python %s, %s" % (platform.python_version(), platform.machine()))
    print()
    print("| frames | live traces | stdlib B/trace | ctracemalloc B/trace "
          "| ratio |")
    print("| ---: | ---: | ---: | ---: | ---: |")
    for nframe in args.frames:
        std = measure("tracemalloc", nframe, args.traces)
        ctm = measure("ctracemalloc", nframe, args.traces)
        per_std = std["memory"] / std["traces"]
        per_ctm = ctm["memory"] / ctm["traces"]
        print("| %d | %d | %.1f | %.1f | %.2f |"
              % (nframe, ctm["traces"], per_std, per_ctm, per_ctm / per_std))
        sys.stdout.flush()
    print()
    print("%d generated modules run and dropped, at the end:" % args.modules)
    print()
    print("| frames | files | stdlib KiB | ctracemalloc KiB | ratio |")
    print("| ---: | --- | ---: | ---: | ---: |")
    for nframe in args.frames:
        for distinct in (0, 1):
            std = measure("tracemalloc", nframe, args.modules, MODULES,
                          distinct)
            ctm = measure("ctracemalloc", nframe, args.modules, MODULES,
                          distinct)
            print("| %d | %s | %.0f | %.0f | %.2f |"
                  % (nframe, "one each" if distinct else "one for all",
                     std["memory"] / 1024, ctm["memory"] / 1024,
                     ctm["memory"] / std["memory"]))
            sys.stdout.flush()


if __name__ == "__main__":
    main()
