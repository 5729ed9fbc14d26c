"""A snapshot's flame graph as one self-contained HTML file.

The tree comes from the C core (Snapshot._tree(): a node per frame path,
totals included, with its function's name where known); this module only
adds each frame's source line and fills the template flamegraph.html,
whose script draws it: a box says "func (file:line)", or "file:line" for
a frame whose function is not known. No network: the script and styles
are inline. The drawing itself (flamegraph.js,
flamegraph.css) is shared with the report of a run (_report.py), whose
page fills its template the same way (page()).

Native memory (NATIVE_DOMAIN) is drawn as a box of its own kind, "native",
below the Python frame that was running when an extension allocated it,
in its own colour: the native traces' tree is merged into the Python
one, frame path by frame path, so that a frame's box holds both kinds.

A sampled snapshot's page says under its title that its sizes and counts
are estimates, and at what interval (_cli.sampling_lines); the tree's
sizes and counts are the core's estimates, counts in whole blocks. An
exact snapshot's page is what it always was.
"""
import html
import json
import linecache
import os
import re

HERE = os.path.dirname(__file__)


def asset(name):
    """The text of one of the package's page files (templates, scripts,
    styles)."""
    with open(os.path.join(HERE, name), encoding="utf-8") as f:
        return f.read()


def script_json(value):
    """value as JSON to put inside a <script> element: "</script>" or
    "<!--" in a string (a source line, a file name) would end or change
    the element, so no "<" at all (\\u003c in JSON)."""
    return json.dumps(value, separators=(",", ":")).replace("<", "\\u003c")


def page(template, values, data):
    """The template (a page file's name) with each {{KEY}} replaced by
    values[KEY]; {{STYLES}} by the shared styles (flamegraph.css), and
    {{SCRIPTS}} by what every page's script starts from: the tooltip
    element of the flame graph (#tip), data as JSON (#data, read by
    ctmFlame.pageData()) and the flame graph's script (flamegraph.js).
    One pass, so that a value holding "{{DATA}}" (a title, a file name)
    stays text."""
    values = dict(values, STYLES=asset("flamegraph.css"), SCRIPTS=(
        '<div id="tip" class="tip"></div>\n'
        '<script id="data" type="application/json">%s</script>\n'
        '<script>%s</script>' % (script_json(data),
                                 asset("flamegraph.js"))))
    return re.sub(r"\{\{([A-Z_]+)\}\}", lambda m: values[m.group(1)],
                  asset(template))


def with_native(tree, native):
    """tree (Snapshot._tree() lists) with the tree of the native traces
    merged in: their frames added to the nodes of the same path, and
    each node's own native traces (those that end there) in a new child,
    a native node (file -1). Returns the tree and the native nodes."""
    parents, files, linenos, sizes, counts, names, functions = map(
        list, tree)
    (n_parents, n_files, n_linenos, n_sizes, n_counts, n_names,
     n_functions) = native._tree()
    file_index = {name: i for i, name in enumerate(names)}

    def index_of(name):
        if name not in file_index:
            file_index[name] = len(names)
            names.append(name)
        return file_index[name]
    node_of = {(parents[i], files[i], linenos[i]): i
               for i in range(1, len(parents))}
    own = [[size, count] for size, count in zip(n_sizes, n_counts)]
    for i in range(1, len(n_parents)):
        own[n_parents[i]][0] -= n_sizes[i]
        own[n_parents[i]][1] -= n_counts[i]

    def add(parent, file, lineno, size, count, function=-1):
        parents.append(parent)
        files.append(file)
        linenos.append(lineno)
        sizes.append(size)
        counts.append(count)
        functions.append(function)
        return len(parents) - 1

    merged = [0]        # native tree node -> node
    sizes[0] += n_sizes[0]
    counts[0] += n_counts[0]
    for i in range(1, len(n_parents)):
        key = (merged[n_parents[i]], index_of(n_names[n_files[i]]),
               n_linenos[i])
        if key not in node_of:
            # a frame only native traces pass through: the native
            # snapshot's name for it
            node_of[key] = add(*key, 0, 0, -1 if n_functions[i] < 0
                               else index_of(n_names[n_functions[i]]))
        node = node_of[key]
        sizes[node] += n_sizes[i]
        counts[node] += n_counts[i]
        merged.append(node)
    natives = [add(merged[i], -1, 0, size, count)
               for i, (size, count) in enumerate(own) if count]
    return (parents, files, linenos, sizes, counts, names,
            functions), natives


def tree_data(snapshot, native=None):
    """The tree as compact JSON-ready arrays, with the source line of each
    distinct frame; with native, a snapshot of native traces, those
    merged in (with_native) and the native nodes listed. "func" gives
    each node's function name, an index into "funcs" (the names), -1
    where it is not known."""
    tree, natives = snapshot._tree(), []
    if native is not None and len(native.traces):
        tree, natives = with_native(tree, native)
    parents, files, linenos, sizes, counts, names, functions = tree
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
        "funcs": names,
        "func": functions,
        "source": [source_index[lines[(f, n)]] if f >= 0 else -1
                   for f, n in zip(files, linenos)],
        "sources": sources,
        "native": natives,
    }


def sampled_html(snapshot):
    """The element that says a sampled snapshot's numbers are estimates
    (class and id "sampled"), or "" for an exact snapshot, whose page
    stays as it was (hence the style here, not in the page's)."""
    from . import _cli
    return "".join('<div class="sampled" id="sampled" style="color: #a33">'
                   '%s</div>' % html.escape(line)
                   for line in _cli.sampling_lines([(None, snapshot)]))


def render(snapshot, title="snapshot", native=None):
    """The page; snapshot holds the Python traces, native (if any) the
    native ones (both sampled alike, if sampled)."""
    return page("flamegraph.html", {"TITLE": html.escape(title),
                                    "SAMPLED": sampled_html(snapshot)},
                tree_data(snapshot, native))
