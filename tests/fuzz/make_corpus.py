"""Write seed inputs for fuzz_load: small valid snapshot files made by
the independent writer of tests/test_fileformat.py, and pickles of
snapshots written by the stdlib.

    python tests/fuzz/make_corpus.py CORPUS_DIR
"""
import os
import random
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from test_fileformat import RAW, Tables, assemble, named_tables, \
    varint  # noqa: E402


def seeds():
    yield "empty", assemble(Tables([]).sections(None))
    yield "raw", assemble(Tables(RAW).sections(5, {"a": 1}))
    yield "raw-limit-pickled", assemble(Tables(RAW).sections("x"))
    secs = Tables(RAW).sections(None)
    yield "newer-minor", assemble([(200, b"x")] + secs[:3] + [(9, b"")]
                                  + secs[3:], minor=2)
    # function names (2.1), and a file of 2.0, which has none
    yield "functions", assemble(named_tables().sections(5))
    yield "version-2.0", assemble(secs, minor=0)
    rng = random.Random(1)
    raw = []
    for i in range(40):
        frames = tuple(("f%d.py" % rng.randrange(5), rng.randrange(-3, 300))
                       for _ in range(rng.randrange(4)))
        for _ in range(rng.choice([1, 1, 3, 9])):
            raw.append((rng.choice([0, 0, 1, 2**32 - 1]),
                        rng.choice([0, 1, 200, 300, 70000, 2**24, 2**64 - 1]),
                        frames, rng.choice([None, len(frames), 7])))
    yield "random", assemble(Tables(raw).sections(3))
    # a sampled snapshot (3.0): the SAMPLING section after COUNTS
    secs = Tables(raw).sections(3)
    yield "sampled", assemble(secs[:1] + [(9, varint(4096))] + secs[1:],
                              major=3, minor=0)
    # format 1.0 (varint frame references), which load still reads
    yield "version-1", assemble(Tables(raw).sections(3, major=1), major=1)
    # the stdlib's pickle format (pklread.c), as the stdlib writes it
    import pickle
    import tracemalloc
    snapshot = tracemalloc.Snapshot(raw, 3)
    snapshot.tag = {"a": [1.5, None, b"x", (True, -2**70)]}
    yield "stdlib-pickle", pickle.dumps(snapshot, pickle.HIGHEST_PROTOCOL)
    yield "stdlib-pickle-2", pickle.dumps(tracemalloc.Snapshot(RAW, None), 2)


def main():
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    for name, data in seeds():
        with open(os.path.join(out, name), "wb") as f:
            f.write(data)


if __name__ == "__main__":
    main()
