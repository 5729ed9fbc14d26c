"""The shape of the C core, checked mechanically.

Every C file of src/ctracemalloc/_core/ belongs to one layer of LAYERS, and
calls only into its own layer or the layers below: the objects are
compiled, their defined and undefined symbols read with nm, and any call
up the layers, or any cycle between files, fails. The README's "Layout"
section lists the same files, and no C file grows past MAX_LINES.
"""
import collections
import os
import re
import shutil
import subprocess
import sys
import sysconfig

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CORE = os.path.join(ROOT, "src", "ctracemalloc", "_core")
INCLUDE = os.path.join(ROOT, "src", "ctracemalloc", "include")
MAX_LINES = 1200

# Bottom first; a file may call into its own layer (without a cycle) and
# into the layers before it, never into a later one.
LAYERS = [
    ("utilities", ["mem.c", "index.c", "thread.c", "pyutil.c", "elfgot.c",
                   "sampling.c"]),
    ("tracer tables", ["capture.c", "coderecs.c", "interning.c",
                       "store.c", "placing.c", "timeline.c"]),
    ("tracer", ["tracer.c"]),
    ("tracer clients", ["hooks.c", "reftracer.c", "intercept.c",
                        "native.c"]),
    ("tracer control", ["control.c"]),
    ("snapshot data", ["snapdata.c", "tracersnap.c"]),
    ("analysis", ["glob.c", "selection.c", "grouping.c", "tree.c"]),
    ("file formats", ["fileio.c", "xxh64.c", "ffwrite.c", "ffitems.c",
                      "ffread.c", "pklvm.c", "pklread.c", "pklwrite.c",
                      "load.c"]),
    ("types", ["wrapper.c", "statistic.c", "traceback.c", "trace.c",
               "filter.c", "traces.c", "snapshot.c"]),
    ("module", ["module.c"]),
]

LAYER_OF = {name: i for i, (_, files) in enumerate(LAYERS) for name in files}


def c_files():
    return sorted(f for f in os.listdir(CORE) if f.endswith(".c"))


def test_every_file_has_a_layer():
    assert sorted(LAYER_OF) == c_files()


def test_no_file_is_too_long():
    long = {}
    for name in c_files():
        with open(os.path.join(CORE, name)) as f:
            n = sum(1 for _ in f)
        if n > MAX_LINES:
            long[name] = n
    assert long == {}, "C files over %d lines" % MAX_LINES


def test_readme_layout_lists_every_file():
    with open(os.path.join(ROOT, "README.md")) as f:
        readme = f.read()
    m = re.search(r"^## Layout\n(.*?)(?=^## )", readme, re.S | re.M)
    assert m, "README.md has no '## Layout' section"
    listed = re.findall(r"`([a-z_0-9]+\.c)`", m.group(1))
    assert sorted(set(listed)) == c_files()
    # in the order of the layers, bottom first
    firsts = []
    for name in listed:
        if name not in firsts:
            firsts.append(name)
    assert [LAYER_OF[n] for n in firsts] == sorted(LAYER_OF[n]
                                                   for n in firsts)


def test_version_differences_only_in_compat_h():
    """No preprocessor test of the Python version or of a flag that only
    some versions have outside compat.h."""
    found = []
    for name in sorted(os.listdir(CORE)):
        if name == "compat.h" or not name.endswith((".c", ".h")):
            continue
        with open(os.path.join(CORE, name)) as f:
            for n, line in enumerate(f, 1):
                if re.match(r"\s*#\s*(if|ifdef|ifndef|elif)\b.*\b(PY_|Py_)",
                            line):
                    found.append("%s:%d: %s" % (name, n, line.strip()))
    assert found == []


def symbols(obj):
    out = subprocess.run(["nm", obj], check=True, capture_output=True,
                         text=True).stdout
    defined, undefined = set(), set()
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0] == "U":
            undefined.add(parts[1])
        elif len(parts) == 3 and parts[1] in "TDBRC":
            defined.add(parts[2])
    return defined, undefined


@pytest.fixture(scope="module")
def calls(tmp_path_factory):
    """{file: {file it calls into: [symbols]}} from the objects."""
    cc = shutil.which(sysconfig.get_config_var("CC").split()[0] or "cc")
    if cc is None or shutil.which("nm") is None:
        pytest.fail("the layout test needs the C compiler and nm")
    out = tmp_path_factory.mktemp("objs")
    includes = ["-I" + CORE, "-I" + INCLUDE,
                "-I" + sysconfig.get_paths()["include"]]
    defs, undefs = {}, {}
    for name in c_files():
        obj = str(out / (name + ".o"))
        subprocess.run([cc, "-c", "-O0", "-std=c11", "-fPIC",
                        "-DCTM_DEBUG=1"] + includes
                       + [os.path.join(CORE, name), "-o", obj],
                       check=True, capture_output=True)
        defs[name], undefs[name] = symbols(obj)
    owner = {s: f for f, d in defs.items() for s in d}
    graph = collections.defaultdict(lambda: collections.defaultdict(list))
    for f, u in undefs.items():
        for s in sorted(u):
            if s in owner and owner[s] != f:
                graph[f][owner[s]].append(s)
    return graph


def test_no_call_goes_up_a_layer(calls):
    up = ["%s -> %s (%s)" % (f, g, ", ".join(syms))
          for f, targets in sorted(calls.items())
          for g, syms in sorted(targets.items())
          if LAYER_OF[g] > LAYER_OF[f]]
    assert up == []


def find_cycles(graph, nodes):
    """The cycles that a depth-first walk of graph meets, as lists of
    nodes from the first back to it."""
    state, stack, cycles = {}, [], []

    def visit(f):
        state[f] = "open"
        stack.append(f)
        for g in sorted(graph.get(f, ())):
            if state.get(g) == "open":
                cycles.append(stack[stack.index(g):] + [g])
            elif g not in state:
                visit(g)
        stack.pop()
        state[f] = "done"

    for f in nodes:
        if f not in state:
            visit(f)
    return cycles


def test_no_cycle_between_files(calls):
    cycles = find_cycles(calls, c_files())
    assert [" -> ".join(c) for c in cycles] == []


def test_the_check_sees_a_cycle(tmp_path):
    """The check itself: two objects that call each other make a cycle;
    a third that only calls them does not."""
    cc = shutil.which(sysconfig.get_config_var("CC").split()[0] or "cc")
    sources = {"a.c": "int b(void); int a(void) { return b(); }\n",
               "b.c": "int a(void); int b(void) { return a(); }\n",
               "c.c": "int a(void); int c(void) { return a(); }\n"}
    defs, undefs = {}, {}
    for name, text in sources.items():
        (tmp_path / name).write_text(text)
        obj = str(tmp_path / (name + ".o"))
        subprocess.run([cc, "-c", str(tmp_path / name), "-o", obj],
                       check=True)
        defs[name], undefs[name] = symbols(obj)
    owner = {s: f for f, d in defs.items() for s in d}
    graph = {f: {owner[s] for s in u if s in owner} for f, u in
             undefs.items()}
    assert find_cycles(graph, sorted(sources)) == [["a.c", "b.c", "a.c"]]


if sys.platform != "linux":
    pytestmark = pytest.mark.skip("nm and the ELF objects: Linux only")
