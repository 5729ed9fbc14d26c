"""A snapshot's flame graph as one self-contained HTML file.

The tree comes from the C core (Snapshot._tree(): a node per frame path,
totals included); this module only adds each frame's source line and
fills the template flamegraph.html, whose script draws it. No network:
the script and styles are inline.
"""
import html
import json
import linecache
import os
import re

TEMPLATE = os.path.join(os.path.dirname(__file__), "flamegraph.html")


def tree_data(snapshot):
    """The tree as compact JSON-ready arrays, with the source line of each
    distinct frame."""
    parents, files, linenos, sizes, counts, names = snapshot._tree()
    lines = {}
    for f, lineno in zip(files, linenos):
        if f >= 0 and (f, lineno) not in lines:
            lines[(f, lineno)] = linecache.getline(names[f], lineno).strip()
    sources = sorted(set(lines.values()))
    source_index = {text: i for i, text in enumerate(sources)}
    return {
        "parent": parents,
        "file": files,
        "line": linenos,
        "size": sizes,
        "count": counts,
        "names": names,
        "source": [source_index[lines[(f, n)]] if f >= 0 else -1
                   for f, n in zip(files, linenos)],
        "sources": sources,
    }


def render(snapshot, title="snapshot"):
    with open(TEMPLATE, encoding="utf-8") as f:
        template = f.read()
    data = json.dumps(tree_data(snapshot), separators=(",", ":"))
    # inside <script>, "</script>" or "<!--" in a source line would end
    # or change the element: no "<" at all (\u003c in JSON)
    values = {"TITLE": html.escape(title),
              "DATA": data.replace("<", "\\u003c")}
    # one pass, so that a title or file name holding "{{DATA}}" stays text
    return re.sub(r"\{\{(TITLE|DATA)\}\}", lambda m: values[m.group(1)],
                  template)
