"""A deterministic, allocation-heavy workload for the differential test
(tests/test_workload.py): the same run traced by the stdlib and by
ctracemalloc must give the same statistics for the lines of this file.

Everything it builds is kept alive and returned, so that the snapshot
taken after run() sees it."""
import collections
import json
import re
import textwrap

try:
    import docutils.core
except ImportError:  # optional: scripts/test installs it
    docutils = None
try:
    import pygments
    import pygments.formatters
    import pygments.lexers
except ImportError:
    pygments = None

RST = """
Title
=====

A paragraph with *emphasis*, ``code`` and a list:

- item one
- item two with a `link <https://example.invalid/>`_

.. code-block:: text

   literal block
""" * 8


class Point:
    def __init__(self, x, y):
        self.x = x
        self.y = y


def third_party(keep):
    if docutils is not None:
        parts = docutils.core.publish_parts(
            RST, writer_name="html",
            settings_overrides={"report_level": 5, "halt_level": 5})
        keep.append(parts["body"])
    if pygments is not None:
        source = open(__file__).read() * 2
        lexer = pygments.lexers.PythonLexer()
        html = pygments.highlight(source, lexer,
                                  pygments.formatters.HtmlFormatter())
        keep.append(html)


def run(scale=1):
    keep = []
    n = 4000 * scale
    records = [{"id": i, "name": "item-%05d" % i,
                "tags": ["t%d" % (i % 7), "u%d" % (i % 11)],
                "score": i * 1.5}
               for i in range(n)]
    keep.append(records)
    text = " ".join(r["name"] for r in records)
    keep.append(text)
    words = text.split()
    keep.append(words)
    keep.append(collections.Counter(w[-2:] for w in words))
    document = json.dumps({"records": records, "text": text}, indent=1)
    keep.append(document)
    keep.append(json.loads(document))
    pattern = re.compile(r"item-(\d+)")
    keep.append([m.group(1) for m in pattern.finditer(text)])
    keep.append(pattern.sub(lambda m: m.group(1)[::-1], text))
    keep.append(textwrap.wrap(text[:100000], width=70))
    keep.append(textwrap.fill(text[:50000], width=50))
    blob = bytearray()
    for i in range(n):
        blob += b"%d," % i
    keep.append(bytes(blob))
    keep.append([Point(i, -i) for i in range(n)])
    keep.append({i: str(i) * 3 for i in range(n)})
    keep.append(set(range(0, 10 * n, 3)))
    keep.append(tuple(str(i) for i in range(n)))
    third_party(keep)
    return keep
