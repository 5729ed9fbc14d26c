"""Real programs (issue #16): third-party workloads (docutils, pygments,
jinja2, sympy, networkx, numpy) and the stdlib's email and json, each
traced from its imports to its end by the stdlib and by ctracemalloc in
fresh interpreters (tests/helpers/real_programs.py, one frame), must leave
the same snapshot: the same totals, per domain too (numpy reports its
buffers with PyTraceMalloc_Track in domain 389047), and the same largest
lines of statistics('lineno').

How close is "the same" is measured, not guessed: the stdlib runs each
workload twice, and its own run-to-run difference (addresses, which orders
some iterations, and the collector's timing) is the noise. ctracemalloc,
run once, must be as close to the nearer stdlib run as NOISE_FACTOR times
the two stdlib runs are to each other, with a floor (see `compare`). Unlike test_workload.py,
nothing is forgiven for free lists, code objects or domains: those are
differences a user of a drop-in replacement would see.

The comparison itself is checked on the stdlib's runs: it accepts them,
and rejects one with a top line moved away or its total 5% larger.

CTM_REAL_PROGRAMS_SAVE=FILE writes every run (totals and lines) to FILE
as JSON, to look at the differences beyond the first failure.
"""
import json
import linecache
import os
import subprocess
import sys
import sysconfig
from concurrent.futures import ThreadPoolExecutor

import pytest

from tmhelpers import child_env, patience, require_ctm

pytestmark = pytest.mark.ctm_only

SCRIPT = os.path.join(os.path.dirname(__file__), "helpers",
                      "real_programs.py")
# Longest first, so that the runs in parallel end together.
WORKLOADS = ["sympy_symbolic", "email_messages", "networkx_graphs",
             "json_document", "docutils_rst", "pygments_highlight",
             "numpy_arrays", "jinja2_templates"]
STDLIB_RUNS = ("stdlib-a", "stdlib-b")

TOP = 20                # the lines compared: the top 20 of each run...
LINE_SHARE = 0.005      # ...of at least 0.5% of its total
TOTAL_FLOOR = 0.01      # a total may differ by 1% whatever the noise
LINE_FLOOR = 0.01       # a line by 1% of itself
LINE_TOTAL_FLOOR = 0.001  # or by 0.1% of the total
# Two stdlib runs give one draw of the noise: a third run, the same program
# under the same tracer, lands outside the range of the first two two times
# in three, and by more than their difference often enough. The bound is
# this many times the stdlib's own difference.
NOISE_FACTOR = 3
# Lines whose blocks are all attribute names kept by the interpreter's type
# attribute cache, a getattr with a name made at each call: from 3.10 the
# cache keeps a copy per entry the copies' addresses reach, so these lines
# changed with the heap's layout (ASLR, and anything allocated before:
# either tracer's own memory), 60 to 75 KB at jinja2's under either tracer
# or none. The helper empties the cache before its snapshot (see its
# main): none of them is left. (workload, file under site-packages, line,
# text in the line, to notice a package that moved it)
TYPE_CACHE_LINES = [
    ("jinja2_templates", "jinja2/visitor.py", 33,
     'getattr(self, f"visit_{type(node).__name__}", None)'),
    ("docutils_rst", "docutils/nodes.py", 2778,
     "getattr(self, 'visit_' + node_name, self.unknown_visit)"),
    ("docutils_rst", "docutils/nodes.py", 2791,
     "getattr(self, 'depart_' + node_name, self.unknown_departure)"),
    ("sympy_symbolic", "sympy/printing/printer.py", 329,
     "printmethodname = '_print_' + cls.__name__"),
]


def key_text(key):
    domain, filename, lineno = key
    return "%s:%d%s" % (filename, lineno,
                        " [domain %d]" % domain if domain else "")


def pct(got, want):
    return "%+.2f%%" % (100.0 * (got - want) / want) if want else "new"


def within(got, a, b, floor):
    """The distance from got to the nearer of the stdlib's a and b, and the
    bound: NOISE_FACTOR times the stdlib's own difference, or floor if
    larger."""
    return (min(abs(got - a), abs(got - b)),
            max(floor, NOISE_FACTOR * abs(a - b)))


def top_lines(run):
    total = run["size"]
    return [tuple(line[:3]) for line in run["lines"][:TOP]
            if line[3] >= LINE_SHARE * total]


def compare_totals(a, b, got):
    """Problems (strings) of run `got` against the stdlib's runs a and b:
    the size and count traced, and the size per domain."""
    problems = []
    checks = [("size", a["size"], b["size"], got["size"]),
              ("count", a["count"], b["count"], got["count"])]
    for domain in sorted(set(a["domains"]) | set(b["domains"])
                         | set(got["domains"]), key=int):
        checks.append(("size of domain %s" % domain,
                       a["domains"].get(domain, [0])[0],
                       b["domains"].get(domain, [0])[0],
                       got["domains"].get(domain, [0])[0]))
    for what, want_a, want_b, value in checks:
        diff, bound = within(value, want_a, want_b,
                             TOTAL_FLOOR * max(want_a, want_b))
        if diff > bound:
            problems.append("%s: stdlib %d and %d, this run %d (%s), "
                            "allowed %d" % (what, want_a, want_b, value,
                                            pct(value, want_a), bound))
    return problems


def compare_lines(a, b, got):
    """Problems of run `got` against the stdlib's runs a and b: each line
    in the top 20 of a or of got, and at least 0.5% of that run's total,
    must have the same size in the other (a line not listed is counted as
    0: it is below 1/10,000 of the total)."""
    sizes = [{tuple(line[:3]): line[3:] for line in run["lines"]}
             for run in (a, b, got)]
    keys = sorted(set(top_lines(a)) | set(top_lines(got)),
                  key=lambda k: -max(s.get(k, (0, 0))[0] for s in sizes))
    problems = []
    for key in keys:
        (size_a, count_a), (size_b, _), (size, count) = (
            s.get(key, (0, 0)) for s in sizes)
        floor = max(LINE_FLOOR * max(size_a, size_b),
                    LINE_TOTAL_FLOOR * a["size"])
        diff, bound = within(size, size_a, size_b, floor)
        if diff > bound:
            problems.append("%s: stdlib %d and %d B (%d blocks), this run "
                            "%d B (%s, %d blocks), allowed +-%d"
                            % (key_text(key), size_a, size_b, count_a, size,
                               pct(size, size_a), count, bound))
    return problems


def compare(a, b, got):
    return compare_totals(a, b, got) + compare_lines(a, b, got)


def trace(run):
    workload, tracer = run
    env = child_env()
    env["PYTHONHASHSEED"] = "0"
    proc = subprocess.run(
        [sys.executable, SCRIPT, tracer.split("-")[0], workload], env=env,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        timeout=patience(300))
    assert proc.returncode == 0, ("%s under %s failed:\n%s"
                                  % (workload, tracer, proc.stderr))
    return json.loads(proc.stdout)


@pytest.fixture(scope="module")
def runs():
    """{workload: {"stdlib-a": run, "stdlib-b": run, "ctm": run}}; the
    runs are independent processes, a few at a time."""
    ctm = require_ctm()
    wanted = [(w, t) for w in WORKLOADS for t in STDLIB_RUNS + ("ctm",)]
    jobs = min(4, os.cpu_count() or 1)
    with ThreadPoolExecutor(jobs) as pool:
        results = dict(zip(wanted, pool.map(trace, wanted)))
    for (workload, tracer), run in results.items():
        # the ctracemalloc under test, not another one found on the path
        if tracer == "ctm":
            assert run["tracer"] == os.path.abspath(ctm.__file__)
    runs = {w: {t: results[w, t] for t in STDLIB_RUNS + ("ctm",)}
            for w in WORKLOADS}
    if os.environ.get("CTM_REAL_PROGRAMS_SAVE"):
        with open(os.environ["CTM_REAL_PROGRAMS_SAVE"], "w") as f:
            json.dump(runs, f)
    return runs


@pytest.mark.parametrize("workload", WORKLOADS)
def test_same_totals(runs, workload):
    r = runs[workload]
    problems = compare_totals(r["stdlib-a"], r["stdlib-b"], r["ctm"])
    if problems:
        pytest.fail("\n".join(problems), pytrace=False)


@pytest.mark.parametrize("workload", WORKLOADS)
def test_same_top_lines(runs, workload):
    r = runs[workload]
    problems = compare_lines(r["stdlib-a"], r["stdlib-b"], r["ctm"])
    if problems:
        pytest.fail("\n".join(problems), pytrace=False)


def moved(run, key):
    """run with line key's size and blocks moved to a line of its own:
    the same totals, a top line gone."""
    run = json.loads(json.dumps(run))
    for line in run["lines"]:
        if tuple(line[:3]) == key:
            line[1], line[2] = "<moved>", 0
    return run


@pytest.mark.parametrize("workload", WORKLOADS)
def test_comparison_itself(runs, workload):
    """The comparison accepts the stdlib's runs and rejects a run that
    lost a top line or grew by 5%: otherwise passing says nothing."""
    a, b = runs[workload]["stdlib-a"], runs[workload]["stdlib-b"]
    assert a["size"] >= 1024 * 1024, "the workload allocates too little"
    assert compare(a, b, a) == [] and compare(a, b, b) == []
    keys = top_lines(a)
    assert keys
    for key in keys:
        problems = compare(a, b, moved(b, key))
        assert any(p.startswith(key_text(key) + ":") for p in problems), (
            "%s moved away was not noticed" % key_text(key))
    bigger = dict(b, size=int(b["size"] * 1.05))
    assert any(p.startswith("size:") for p in compare(a, b, bigger))


@pytest.mark.parametrize("workload, path, lineno, text", TYPE_CACHE_LINES,
                         ids=["%s:%d" % line[1:3] for line in TYPE_CACHE_LINES])
def test_type_cache_left_out(runs, workload, path, lineno, text):
    """No run keeps the attribute names that only the type attribute
    cache holds: the comparison is not of where the heap happens to lie."""
    filename = os.path.join(sysconfig.get_paths()["purelib"],
                            *path.split("/"))
    assert text in linecache.getline(filename, lineno), (
        "%s:%d is no longer the line in TYPE_CACHE_LINES" % (path, lineno))
    for tracer, run in sorted(runs[workload].items()):
        kept = [line[3:] for line in run["lines"]
                if line[1] == filename and line[2] == lineno]
        assert not kept, ("%s under %s: %s:%d holds %d B (%d blocks)"
                          % (workload, tracer, path, lineno, *kept[0]))


def test_numpy_reports_its_domain(runs):
    """The stdlib sees numpy's buffers in numpy's domain: the numpy
    workload tests what it should."""
    run = runs["numpy_arrays"]["stdlib-a"]
    assert run["domains"].get("389047", [0])[0] >= 4 * 1024 * 1024
