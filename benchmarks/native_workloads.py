"""Native-heavy workloads for benchmarks/native.py: real libraries whose
work and memory are in C, each keeping what it builds.

As in workloads.py, each workload is a function returning a callable: the
preparation (imports, input data, an empty database) happens before
timing, only the callable is timed. The callable returns what it built,
so that the caller can keep it alive while it measures memory.
CTM_BENCH_QUICK=1 shrinks them for a smoke run.

EXPECTED names, per workload whose memory is native, a text found on
exactly one line of its callable: the line whose native allocations should
be the largest (zstd has none: its memory is in the Python domain).
"""
import io

from workloads import n


def sqlite_fill():
    """An in-memory SQLite database filled with 300,000 rows: the pages
    and the b-tree are malloc'd by libsqlite3."""
    import sqlite3

    rows = [(i, "name-%d" % i, i * 0.25, "x" * (i % 50))
            for i in range(n(300_000))]
    db = sqlite3.connect(":memory:")
    db.execute("create table t (id integer primary key, name text,"
               " value real, pad text)")

    def run():
        db.executemany("insert into t values (?, ?, ?, ?)", rows)
        db.commit()
        return db
    return run


def lxml_parse():
    """A generated XML document of 100,000 items (700,000 elements) parsed by lxml, the
    tree kept: its nodes are libxml2's, malloc'd."""
    from lxml import etree

    doc = ("<catalog>%s</catalog>" % "".join(
        '<item id="%d" kind="k%d"><name>item %d</name><price>%d.50</price>'
        '<tags><tag>a</tag><tag>b%d</tag></tags></item>'
        % (i, i % 7, i, i % 1000, i % 13) for i in range(n(100_000)))
    ).encode()

    def run():
        tree = etree.fromstring(doc)
        return tree
    return run


def pillow_decode():
    """PNG images decoded by Pillow and kept: the pixels are in blocks
    Pillow's C core allocates."""
    from PIL import Image

    size = (1024, 1024)
    noise = Image.effect_noise(size, 40)
    image = Image.merge("RGB", (noise, Image.linear_gradient("L").resize(size),
                                noise.rotate(90)))
    buf = io.BytesIO()
    image.save(buf, format="PNG", compress_level=1)
    data = buf.getvalue()

    def run():
        kept = []
        for _ in range(n(25)):
            im = Image.open(io.BytesIO(data))
            im.load()
            kept.append(im)
        return kept
    return run


def shapely_buffer():
    """Points buffered into polygons by Shapely, the polygons kept: they
    are GEOS geometries (C++), allocated by operator new, that is by
    malloc called from libstdc++."""
    import numpy
    import shapely

    coords = numpy.random.default_rng(17).uniform(0, 1000, (n(100_000), 2))
    points = shapely.points(coords)

    def run():
        polygons = shapely.buffer(points, 2.0, quad_segs=8)
        return polygons
    return run


def zstd_decompress():
    """zstandard frames decompressed into kept buffers: the CPU is in
    libzstd, but the buffers are bytes objects, which come from Python's
    allocator (the Python domain), not from malloc in the extension."""
    import zstandard

    text = "".join("line %d: the quick brown fox %d jumps\n" % (i, i * 7)
                   for i in range(200_000)).encode()
    frame = zstandard.ZstdCompressor(level=3).compress(text)

    def run():
        dctx = zstandard.ZstdDecompressor()
        kept = [dctx.decompress(frame) for _ in range(n(20))]
        return kept
    return run


WORKLOADS = [
    ("sqlite", ["sqlite3"]),
    ("lxml", ["lxml"]),
    ("pillow", ["PIL"]),
    ("shapely", ["shapely"]),
    ("zstd", ["zstandard"]),
]

EXPECTED = {
    "sqlite": "db.executemany(",
    "lxml": "etree.fromstring(",
    "pillow": "im.load()",
    "shapely": "shapely.buffer(",
}

_FUNCS = {
    "sqlite": sqlite_fill,
    "lxml": lxml_parse,
    "pillow": pillow_decode,
    "shapely": shapely_buffer,
    "zstd": zstd_decompress,
}


def prepare(name):
    return _FUNCS[name]()
