"""Real third-party programs, traced from their imports to their end:

    python real_programs.py stdlib|ctm WORKLOAD

Starts the tracer (one frame), imports the libraries and runs WORKLOAD,
which returns what it made; with that still alive, empties the type
attribute cache (see main), takes a snapshot, stops tracing and prints, as
JSON, the snapshot's totals (size and count, all and per domain) and its
statistics('lineno') per domain, largest first (those of at least
1/LINE_SHARE_KEPT of the total).
test_real_programs.py compares the tracers.

The workloads are deterministic for a given PYTHONHASHSEED (random number
generators are seeded); what is left is the stdlib's run-to-run noise
(addresses, and the garbage collector's timing), which the test measures.
"""
import json
import os
import sys
import time

# Both tracers' modules are imported in every run, whichever traces:
# importing one has side effects that show in the other's traces when it
# happens before start() in one run only (a module compiled from source,
# with no .pyc, creates the interpreter's ast types through compile()).
import tracemalloc as stdlib_tracemalloc
import ctracemalloc

TRACER = sys.argv[1]
if TRACER == "stdlib":
    tracemalloc = stdlib_tracemalloc
elif TRACER == "ctm":
    tracemalloc = ctracemalloc
else:
    sys.exit("usage: real_programs.py stdlib|ctm WORKLOAD")

# Lines of at least 1/LINE_SHARE_KEPT of the total are printed: a line
# missing from the list is smaller than that.
LINE_SHARE_KEPT = 10000
NUMPY_DOMAIN = 389047   # numpy's PyTraceMalloc_Track domain


def docutils_rst():
    """reStructuredText to HTML: a document of 40 sections with the usual
    constructs (inline markup, lists, a table, literal blocks, footnotes,
    references, admonitions)."""
    from docutils.core import publish_parts
    parts = ["=================\nA decent document\n=================\n",
             ".. contents::\n"]
    for i in range(40):
        parts.append("""
Section %(i)d
============

Paragraph with *emphasis*, **strong**, ``literal`` text and a link to
`Section %(j)d`_, a footnote [#f%(i)d]_ and a
`target <https://example.com/%(i)d>`_.
Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod
tempor incididunt ut labore et dolore magna aliqua.

- item one of %(i)d
- item two, with ``code``

  1. nested
  2. list

.. note:: A note in section %(i)d.

+--------+--------+-----------+
| name   | value  | comment   |
+========+========+===========+
| a%(i)d | %(i)d  | first     |
+--------+--------+-----------+
| b%(i)d | %(j)d  | second    |
+--------+--------+-----------+

::

    def f%(i)d(x):
        return x * %(i)d

.. [#f%(i)d] Footnote %(i)d.
""" % {"i": i, "j": (i * 7) % 40})
    source = "\n".join(parts)
    return publish_parts(source, writer_name="html",
                         settings_overrides={"report_level": 5})


def pygments_highlight():
    """A big source file (the stdlib's argparse.py) to HTML, and a token
    list kept."""
    import argparse
    from pygments import highlight, lex
    from pygments.formatters import HtmlFormatter
    from pygments.lexers import PythonLexer
    with open(argparse.__file__, encoding="utf-8") as f:
        code = f.read()
    html = highlight(code, PythonLexer(), HtmlFormatter(linenos=True))
    tokens = list(lex(code[:10000], PythonLexer()))
    return html, tokens


def jinja2_templates():
    """Templates with inheritance, macros, loops and filters, compiled and
    rendered over 1,500 rows."""
    import jinja2
    env = jinja2.Environment(loader=jinja2.DictLoader({
        "base.html": """<html><head><title>{% block title %}{% endblock %}
</title></head><body>{% block body %}{% endblock %}</body></html>""",
        "macros.html": """{% macro row(r, loop) -%}
<tr class="{{ loop.cycle('odd', 'even') }}"><td>{{ r.id }}</td>
<td>{{ r.name|title }}</td><td>{{ '%.2f'|format(r.price) }}</td>
<td>{{ r.tags|join(', ')|e }}</td></tr>
{%- endmacro %}""",
        "page.html": """{% extends "base.html" %}
{% import "macros.html" as m %}
{% block title %}{{ title|upper }}{% endblock %}
{% block body %}<table>
{% for r in rows if r.id is odd or r.price > 50 %}{{ m.row(r, loop) }}
{% else %}<tr><td>none</td></tr>{% endfor %}</table>
<p>{{ rows|length }} rows, total {{ rows|sum(attribute='price')|round(2) }}</p>
{% endblock %}""",
    }), autoescape=True)
    rows = [{"id": i, "name": "item number %d" % i,
             "price": (i * 37 % 100) + 0.25,
             "tags": ["t%d" % (i % 7), "<x%d>" % (i % 3)]}
            for i in range(1500)]
    pages = [env.get_template("page.html").render(title="page %d" % k,
                                                  rows=rows[k::3])
             for k in range(3)]
    extra = [env.from_string("{{ a }} + {{ b }} = {{ a + b }} %d" % i)
             for i in range(60)]
    return env, pages, [t.render(a=i, b=2) for i, t in enumerate(extra)]


def sympy_symbolic():
    """Expansion, series, integration, solving and a symbolic
    determinant."""
    import sympy
    x, y, z = sympy.symbols("x y z")
    expanded = sympy.expand((x + y + z + 1) ** 6)
    series = sympy.series(sympy.sin(x) * sympy.exp(x), x, 0, 8)
    integral = sympy.integrate(x ** 3 * sympy.exp(-x), x)
    roots = sympy.solve([x ** 2 + y ** 2 - 25, x - y - 1], [x, y])
    det = sympy.Matrix(3, 3, lambda i, j: (x + i) ** j
                       + (y if i == j else 0)).det()
    factored = sympy.factor(x ** 8 - y ** 8)
    return expanded, series, integral, roots, det, factored


def networkx_graphs():
    """Graph algorithms on a seeded random graph of 1,000 nodes."""
    import networkx as nx
    g = nx.gnm_random_graph(1000, 4000, seed=1)
    for i, (u, v) in enumerate(g.edges()):
        g[u][v]["weight"] = (i * 31) % 17 + 1
    paths = nx.single_source_dijkstra_path(g, 0)
    lengths = dict(nx.all_pairs_shortest_path_length(g.subgraph(range(200))))
    components = list(nx.connected_components(g))
    mst = nx.minimum_spanning_tree(g)
    clustering = nx.clustering(g)
    core = nx.core_number(g)
    between = nx.betweenness_centrality(g, k=10, seed=2)
    return g, paths, lengths, components, mst, clustering, core, between


def numpy_arrays():
    """Arrays of a few MB: numpy reports their buffers in its own domain;
    small arrays and views besides."""
    import numpy as np
    rng = np.random.default_rng(0)
    a = rng.random((400, 400))
    b = a @ a.T
    c = np.sort(rng.integers(0, 1000, size=200_000))
    d = np.linalg.inv(b + np.eye(400) * 400)
    small = [np.arange(i, i + 50) * 2 for i in range(2000)]
    text = np.array(["word%d" % i for i in range(10000)])
    return a, b, c, d, small, text, np.unique(c), b[::2, ::3].copy()


def email_messages():
    """3,000 generated messages parsed (headers read and decoded, bodies
    decoded) and kept."""
    import email
    import email.utils
    from email.header import decode_header
    messages = []
    for i in range(3000):
        raw = ("From: Sender %d <sender%d@example.com>\n"
               "To: rcpt%d@example.org, other%d@example.net\n"
               "Subject: =?utf-8?q?Message_number_%d_=C3=A9t=C3=A9?=\n"
               "Date: Mon, 1 Jan 2024 10:%02d:00 +0000\n"
               "Message-ID: <%d.%d@example.com>\n"
               "MIME-Version: 1.0\n"
               "Content-Type: text/plain; charset=utf-8\n"
               "Content-Transfer-Encoding: quoted-printable\n\n"
               "Hello %d,\n\nThis is line one of message %d =C3=A9.\n"
               "And another line with some text in it.\n"
               % (i, i, i, i, i, i % 60, i, i * 7, i, i))
        msg = email.message_from_string(raw)
        messages.append((msg, decode_header(msg["subject"]),
                         email.utils.getaddresses(msg.get_all("to")),
                         msg.get_payload(decode=True)))
    return messages


def json_document():
    """A big document (about 2.5 MB of JSON) loaded and kept."""
    import json
    doc = {"items": [{"id": i, "name": "item %d" % i, "price": i * 1.25,
                      "tags": ["a%d" % (i % 13), "b%d" % (i % 7)],
                      "nested": {"ok": i % 2 == 0, "ratio": i / 7.0,
                                 "note": None if i % 5 else "five"}}
                     for i in range(15000)],
           "meta": {"count": 15000, "source": "generated"}}
    text = json.dumps(doc)
    del doc
    return json.loads(text)


WORKLOADS = {f.__name__: f for f in (
    docutils_rst, pygments_highlight, jinja2_templates, sympy_symbolic,
    networkx_graphs, numpy_arrays, email_messages, json_document)}


def lines(snapshot):
    """[domain, filename, lineno, size, count] of every line, per domain,
    largest first."""
    zero = snapshot.filter_traces([tracemalloc.DomainFilter(True, 0)])
    rest = snapshot.filter_traces([tracemalloc.DomainFilter(False, 0)])
    result = []
    for domain in [0] + sorted({t.domain for t in rest.traces}):
        part = zero if domain == 0 else snapshot.filter_traces(
            [tracemalloc.DomainFilter(True, domain)])
        for stat in part.statistics("lineno"):
            frame = stat.traceback[0]
            result.append([domain, frame.filename, frame.lineno,
                           stat.size, stat.count])
    result.sort(key=lambda line: (-line[3], -line[4], line[:3]))
    return result


def main():
    workload = WORKLOADS[sys.argv[2]]
    started = time.perf_counter()
    tracemalloc.start(1)
    kept = workload()
    # The interpreter's type attribute cache holds a reference to the name
    # of each of its 4,096 entries, and from 3.10 picks the entry by the
    # name's address: a name made at every lookup (jinja2's visitor.py:33,
    # getattr(self, f"visit_{...}")) is kept in as many copies as entries
    # the copies' addresses reach, over a thousand copies of 63 names on
    # 3.12, 50 to 75 KB that change with ASLR and with anything allocated
    # before (on 3.12 without ASLR, an unused environment variable's length
    # moves it by 15%), traced by either tracer or none. No tracer decides
    # it: it is left out of every run.
    sys._clear_type_cache()
    snapshot = tracemalloc.take_snapshot()
    tracemalloc.stop()
    seconds = time.perf_counter() - started
    all_lines = lines(snapshot)
    domains = {}
    for domain, _, _, size, count in all_lines:
        total = domains.setdefault(str(domain), [0, 0])
        total[0] += size
        total[1] += count
    size = sum(size for size, _ in domains.values())
    json.dump({
        "tracer": os.path.abspath(tracemalloc.__file__),
        "seconds": round(seconds, 2),
        "size": size,
        "count": sum(count for _, count in domains.values()),
        "domains": domains,
        "lines": [line for line in all_lines
                  if line[3] * LINE_SHARE_KEPT >= size],
    }, sys.stdout)
    del kept


if __name__ == "__main__":
    main()
