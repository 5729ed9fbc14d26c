"""A snapshot's flame graph as one self-contained HTML file.

The tree comes from the C core (Snapshot._tree(): a node per frame path,
totals included); this module only adds each frame's source line and
fills the template flamegraph.html, whose script draws it. No network:
the script and styles are inline. The drawing itself (flamegraph.js,
flamegraph.css) is shared with the report of a run (_report.py), whose
page fills its template the same way (page()).

Native memory (NATIVE_DOMAIN) is drawn as a box of its own kind, "native",
below the Python frame that was running when an extension allocated it,
in its own colour: the native traces' tree is merged into the Python
one, frame path by frame path, so that a frame's box holds both kinds.
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


def frame_functions(snapshot):
    """{(filename, lineno): function name} for the frames of the
    snapshot's tracebacks, where the core records function names
    (Frame.function); empty where it does not. Walks the distinct
    tracebacks (statistics('traceback')), not the traces."""
    from . import Frame
    if not hasattr(Frame, "function"):
        return {}
    functions = {}
    for stat in snapshot.statistics("traceback"):
        for frame in stat.traceback:
            name = getattr(frame, "function", None)
            if name:
                functions[(frame.filename, frame.lineno)] = name
    return functions


def with_native(tree, native):
    """tree (Snapshot._tree() lists) with the tree of the native traces
    merged in: their frames added to the nodes of the same path, and
    each node's own native traces (those that end there) in a new child,
    a native node (file -1). Returns the tree and the native nodes."""
    parents, files, linenos, sizes, counts, names = map(list, tree)
    n_parents, n_files, n_linenos, n_sizes, n_counts, n_names = \
        native._tree()
    file_index = {name: i for i, name in enumerate(names)}
    node_of = {(parents[i], files[i], linenos[i]): i
               for i in range(1, len(parents))}
    own = [[size, count] for size, count in zip(n_sizes, n_counts)]
    for i in range(1, len(n_parents)):
        own[n_parents[i]][0] -= n_sizes[i]
        own[n_parents[i]][1] -= n_counts[i]

    def add(parent, file, lineno, size, count):
        parents.append(parent)
        files.append(file)
        linenos.append(lineno)
        sizes.append(size)
        counts.append(count)
        return len(parents) - 1

    merged = [0]        # native tree node -> node
    sizes[0] += n_sizes[0]
    counts[0] += n_counts[0]
    for i in range(1, len(n_parents)):
        name = n_names[n_files[i]]
        if name not in file_index:
            file_index[name] = len(names)
            names.append(name)
        key = (merged[n_parents[i]], file_index[name], n_linenos[i])
        if key not in node_of:
            node_of[key] = add(*key, 0, 0)
        node = node_of[key]
        sizes[node] += n_sizes[i]
        counts[node] += n_counts[i]
        merged.append(node)
    natives = [add(merged[i], -1, 0, size, count)
               for i, (size, count) in enumerate(own) if count]
    return (parents, files, linenos, sizes, counts, names), natives


def tree_data(snapshot, native=None, functions=None):
    """The tree as compact JSON-ready arrays, with the source line of each
    distinct frame; with native, a snapshot of native traces, those
    merged in (with_native) and the native nodes listed. functions:
    {(filename, lineno): name} (default: frame_functions of both), the
    nodes' function names, given as "func" (an index into "funcs", -1
    where unknown) when any is known."""
    tree, natives = snapshot._tree(), []
    if functions is None:
        functions = frame_functions(snapshot)
        if native is not None:
            functions.update(frame_functions(native))
    if native is not None and len(native.traces):
        tree, natives = with_native(tree, native)
    parents, files, linenos, sizes, counts, names = tree
    lines = {}
    for f, lineno in zip(files, linenos):
        if f >= 0 and (f, lineno) not in lines:
            lines[(f, lineno)] = linecache.getline(names[f], lineno).strip()
    sources = sorted(set(lines.values()))
    source_index = {text: i for i, text in enumerate(sources)}
    data = {
        "parent": parents,
        "file": files,
        "line": linenos,
        "size": sizes,
        "count": counts,
        "names": names,
        "source": [source_index[lines[(f, n)]] if f >= 0 else -1
                   for f, n in zip(files, linenos)],
        "sources": sources,
        "native": natives,
    }
    if functions:
        funcs = sorted(set(functions.values()))
        func_index = {name: i for i, name in enumerate(funcs)}
        data["funcs"] = funcs
        data["func"] = [
            func_index.get(functions.get((names[f], n)), -1) if f >= 0
            else -1 for f, n in zip(files, linenos)]
    return data


def render(snapshot, title="snapshot", native=None):
    """The page; snapshot holds the Python traces, native (if any) the
    native ones."""
    return page("flamegraph.html", {"TITLE": html.escape(title)},
                tree_data(snapshot, native))
