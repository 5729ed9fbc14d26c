"""A small program that keeps some memory: trace it from the command line.

    python -m ctracemalloc run examples/workload.py

It knows nothing of tracing: `ctracemalloc run` traces it from its first
line, writes the snapshot and shows the lines that allocated the most.
"""
import json


def build_index(words):
    index = {}
    for i, word in enumerate(words):
        index.setdefault(word[:3], []).append((i, word))
    return index


def render(index):
    return json.dumps({key: [w for _, w in items]
                       for key, items in index.items()})


def workload():
    words = ["%s-%d" % (chr(97 + i % 26) * 3, i) for i in range(100_000)]
    index = build_index(words)
    text = render(index)
    return words, index, text


if __name__ == "__main__":
    words, index, text = workload()
    print("indexed %d words into %d keys, %d characters of JSON"
          % (len(words), len(index), len(text)))
