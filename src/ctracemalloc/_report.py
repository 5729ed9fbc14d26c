"""The report of a run as one self-contained HTML page (no network).

A Run holds the snapshot at the end, the one at the high-water mark (if
recorded), the timeline of traced memory and what is known of the run
(meta). render() makes the page: a header (command, Python, duration,
peak, end; for a sampled run, that its sizes and counts are estimates,
and at what interval), the memory-over-time chart with the peak marked,
and, at the peak and at the end (switchable), the flame graph and the top
lines and files.

Glue only: the grouping is the C core's (Snapshot.statistics, _tree), so
the page embeds the aggregated tree and the top entries, never a trace;
a million traces from a few lines make a page of a few kilobytes. The
flame graph is the one of `ctracemalloc flamegraph` (_flamegraph.py and
its flamegraph.js); the chart and the tabs are report.html's own script.
"""
import argparse
import html
import linecache

from . import _cli, _flamegraph

TOP = 20


class Run:
    """What a recorded run holds.

    end: the Snapshot at the end of the run.
    peak: the Snapshot at the high-water mark, or None (not recorded).
    timeline: [(seconds since start, traced bytes)], sorted by time.
    meta: "command" (str), "python" (str), "duration" (s), "peak_bytes",
    "peak_time" (s), "end_bytes", "nframe"; any may be missing.
    """

    def __init__(self, end, peak=None, timeline=(), meta=None):
        self.end = end
        self.peak = peak
        self.timeline = list(timeline)
        self.meta = dict(meta or {})


def top_entries(snapshot, key_type):
    """The first TOP statistics grouped by key_type ("lineno" or
    "filename"), most first, with whether each counts native traces
    (a line that allocated both kinds has an entry for each, as in
    `ctracemalloc top`)."""
    args = argparse.Namespace(key_type=key_type, cumulative=False)
    stats, natives = _cli.domain_statistics(args, snapshot)
    if natives is None:
        natives = [False] * len(stats)
    return list(zip(stats, natives))[:TOP]


def place(frame, with_line=True):
    """"func (file:line)" where the function is known, else "file:line"
    (the file alone without with_line)."""
    if not with_line:
        return frame.filename
    at = "%s:%d" % (frame.filename, frame.lineno)
    name = getattr(frame, "function", None)
    return "%s (%s)" % (name, at) if name else at


def table(snapshot, key_type, total):
    """The HTML table of the top entries of snapshot by key_type."""
    lines = key_type == "lineno"
    rows = []
    for rank, (stat, native) in enumerate(
            top_entries(snapshot, key_type), 1):
        frame = stat.traceback[0]
        where = html.escape(place(frame, lines))
        if native:
            where = '<span class="tag">native</span> ' + where
        if lines:
            source = linecache.getline(frame.filename, frame.lineno).strip()
            if source:
                where += "<code>%s</code>" % html.escape(source)
        share = 100.0 * stat.size / total if total else 0.0
        rows.append(
            '<tr><td class="n">%d</td><td class="n">%s</td>'
            '<td class="n">%.1f%%</td><td class="n">%d</td>'
            '<td class="where">%s</td></tr>'
            % (rank, html.escape(_cli.fmt_size(stat.size)), share,
               stat.count, where))
    if not rows:
        rows.append('<tr><td colspan="5" class="none">no memory traced'
                    '</td></tr>')
    return ('<table class="top"><thead><tr><th>#</th><th>size</th>'
            '<th>share</th><th>count</th><th>%s</th></tr></thead>'
            '<tbody>%s</tbody></table>'
            % ("line" if lines else "file", "".join(rows)))


def total_size(snapshot):
    return sum(s.size for s in snapshot.statistics("filename"))


def view(name, snapshot):
    """The section of one snapshot: its flame graph's data and its top
    lines and files."""
    python, native = _cli.split(snapshot)
    tree = _flamegraph.tree_data(python, native)
    total = tree["size"][0]
    section = (
        '<section class="view" id="view-%s" data-view="%s">'
        '<h2>Flame graph <span class="summary"></span>'
        '<span class="legend"></span>'
        '<button type="button" class="reset">Reset zoom</button></h2>'
        '<div class="flame"></div>'
        '<div class="tables"><div><h2>Top lines</h2>%s</div>'
        '<div><h2>Top files</h2>%s</div></div></section>'
        % (name, name, table(snapshot, "lineno", total),
           table(snapshot, "filename", total)))
    return section, tree


def fmt_seconds(seconds):
    return "%.3f s" % seconds if seconds < 10 else "%.1f s" % seconds


def header(run, peak):
    """The header's rows, (name, HTML)."""
    meta = run.meta
    end = meta.get("end_bytes")
    if end is None:
        end = total_size(run.end)
    duration = meta.get("duration")
    if duration is None and run.timeline:
        duration = run.timeline[-1][0]
    if peak is None:
        peak_text = "not recorded"
    else:
        peak_text = _cli.fmt_size(peak[1])
        if peak[0] is not None:
            peak_text += " at " + fmt_seconds(peak[0])
    nframe = meta.get("nframe", run.end.traceback_limit)
    rows = [("command", meta.get("command") or "not recorded"),
            ("Python", meta.get("python") or "not recorded"),
            ("duration", "not recorded" if duration is None
             else fmt_seconds(duration)),
            ("peak", peak_text),
            ("end", "%s, %d trace%s" % (
                _cli.fmt_size(end), len(run.end.traces),
                "" if len(run.end.traces) == 1 else "s")),
            ("frames", "%d a traceback" % nframe)]
    # a sampled run: its snapshots, peak and end, are sampled alike
    rows += [("sampling", line) for line in _cli.sampling_lines(
        [(None, run.end)])]
    return "".join('<div><dt>%s</dt><dd id="meta-%s">%s</dd></div>'
                   % (name, name.lower(), html.escape(str(text)))
                   for name, text in rows)


def peak_point(run):
    """(time or None, bytes) of the high-water mark, or None: from meta,
    else the timeline's highest point, else the peak snapshot's total."""
    meta = run.meta
    if meta.get("peak_bytes") is not None:
        return meta.get("peak_time"), meta["peak_bytes"]
    if run.timeline:
        t, size = max(run.timeline, key=lambda point: point[1])
        return t, size
    if run.peak is not None:
        return None, total_size(run.peak)
    return None


def render(run, title=None):
    """The page of run, as a str."""
    if title is None:
        title = run.meta.get("command") or "ctracemalloc run"
    peak = peak_point(run)
    views, trees = [], {}
    for name, snapshot in (("peak", run.peak), ("end", run.end)):
        if snapshot is None:
            views.append('<section class="view" id="view-%s" '
                         'data-view="%s"><p class="none">The snapshot at '
                         'the peak was not recorded.</p></section>'
                         % (name, name))
        else:
            section, trees[name] = view(name, snapshot)
            views.append(section)
    data = {
        "time": [t for t, _ in run.timeline],
        "bytes": [size for _, size in run.timeline],
        "peak": None if peak is None else list(peak),
        "trees": trees,
    }
    return _flamegraph.page("report.html", {
        "TITLE": html.escape(title),
        "HEADER": header(run, peak),
        "VIEWS": "".join(views),
    }, data)


def write_report(run, path, title=None):
    """Write the page of run to path (OSError if it cannot)."""
    text = render(run, title)
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
