"""Allocation-heavy workloads for the overhead benchmark.

Each workload is a function returning a callable: the preparation (imports,
input data) happens before timing, only the callable is timed.
CTM_BENCH_QUICK=1 shrinks them for a smoke run.
"""
import os

QUICK = os.environ.get("CTM_BENCH_QUICK", "") not in ("", "0")
SCALE = 0.1 if QUICK else 1.0


def n(count):
    return max(1, int(count * SCALE))


def containers():
    """dicts, lists, tuples and small strings: the allocator's daily bread."""
    def run():
        for _ in range(n(3)):
            d = {}
            for i in range(100_000):
                d[str(i)] = [i, (i, str(i * 2))]
            del d
    return run


def json_roundtrip():
    import json

    doc = {"items": [{"id": i, "name": "item-%d" % i, "tags": ["a", "b"],
                      "price": i * 1.5} for i in range(20_000)]}

    def run():
        for _ in range(n(5)):
            json.loads(json.dumps(doc))
    return run


def deep_stack():
    """Allocations 100 frames down: what a real application's stack is."""
    def alloc(k):
        return [str(i) for i in range(k)]

    def down(depth, k):
        if depth:
            return down(depth - 1, k)
        return alloc(k)

    def run():
        for _ in range(n(2000)):
            down(100, 100)
    return run


def nbody():
    """Float arithmetic in a loop (pyperformance's nbody, written anew):
    nearly every float comes from the float free list, the worst case for
    a tracer that gives a reused object its current traceback."""
    bodies = [([float(i), float(i) * 0.5, float(-i)],
               [0.01 * i, 0.02, -0.01 * i], 1.0 + i) for i in range(5)]
    pairs = [(bodies[i], bodies[j]) for i in range(5) for j in range(i + 1, 5)]

    def run():
        for _ in range(n(20_000)):
            for ((x1, y1, z1), v1, m1), ((x2, y2, z2), v2, m2) in pairs:
                dx, dy, dz = x1 - x2, y1 - y2, z1 - z2
                mag = 0.01 * (dx * dx + dy * dy + dz * dz + 0.01) ** -1.5
                b1, b2 = m1 * mag, m2 * mag
                v1[0] -= dx * b2
                v1[1] -= dy * b2
                v1[2] -= dz * b2
                v2[0] += dx * b1
                v2[1] += dy * b1
                v2[2] += dz * b1
            for (r, (vx, vy, vz), _m) in bodies:
                r[0] += 0.01 * vx
                r[1] += 0.01 * vy
                r[2] += 0.01 * vz
    return run


def docutils_rst():
    """Parsing: reStructuredText to HTML."""
    from docutils.core import publish_string

    text = "\n\n".join(
        "Section %d\n==========\n\nSome *emphasis*, ``literal``, a `link "
        "<https://example.org/%d>`_ and a list:\n\n- one\n- two\n- three\n"
        % (i, i) for i in range(n(60)))

    def run():
        publish_string(text, writer_name="html",
                       settings_overrides={"report_level": 5})
    return run


def pygments_highlight():
    """Highlighting: this repository's own C source to HTML."""
    from pygments import highlight
    from pygments.formatters import HtmlFormatter
    from pygments.lexers import CLexer

    root = os.path.join(os.path.dirname(__file__), "..", "src",
                        "ctracemalloc", "_core")
    source = "".join(open(os.path.join(root, name)).read()
                     for name in sorted(os.listdir(root))
                     if name.endswith(".c"))
    source = source[:int(len(source) * SCALE) or 1000]

    def run():
        highlight(source, CLexer(), HtmlFormatter())
    return run


def jinja2_render():
    """Templating: a table rendered by jinja2."""
    import jinja2

    template = jinja2.Template(
        "<table>{% for row in rows %}<tr>{% for c in row %}"
        "<td>{{ c|e }}</td>{% endfor %}</tr>{% endfor %}</table>")
    rows = [["cell %d-%d <&>" % (i, j) for j in range(10)]
            for i in range(n(5000))]

    def run():
        for _ in range(3):
            template.render(rows=rows)
    return run


WORKLOADS = [
    ("containers", []),
    ("json", []),
    ("deep_stack", []),
    ("nbody", []),
    ("docutils", ["docutils"]),
    ("pygments", ["pygments"]),
    ("jinja2", ["jinja2"]),
]

_FUNCS = {
    "containers": containers,
    "json": json_roundtrip,
    "deep_stack": deep_stack,
    "nbody": nbody,
    "docutils": docutils_rst,
    "pygments": pygments_highlight,
    "jinja2": jinja2_render,
}


def prepare(name):
    return _FUNCS[name]()
