"""Every part of ctracemalloc once, for tests/test_valgrind.py: tracing
with threads (zlib without the GIL), snapshots, every analysis, both file
formats, pickling, the tree, the runner's strip, the track API, a fork
while another thread has traced (its capture state, which the child has
no thread for), clear and stop; then sampled tracing with the peak record,
and a sampled snapshot through the analyses and a file. Prints "ok" at
the end."""
import os
import pickle
import sys
import threading
import zlib

import ctracemalloc as tm

out = sys.argv[1]
tm.start(5)


def work():
    data = bytes(range(256)) * 100
    for _ in range(20):
        zlib.decompress(zlib.compress(data))
        junk = [bytes(50) for _ in range(30)]
        del junk


def in_threads(target, n=3):
    threads = [threading.Thread(target=target) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


in_threads(work)
keep = [bytearray(100) for _ in range(2000)]
s = tm.take_snapshot()
for key in ("lineno", "filename", "traceback"):
    s.statistics(key)
s.statistics("lineno", cumulative=True)
s2 = tm.take_snapshot()
s2.compare_to(s, "lineno")
s2.compare_to(s, "traceback")
s.filter_traces([tm.Filter(False, "*zlib*"), tm.DomainFilter(True, 0)])
path = os.path.join(out, "a.snapshot")
s.dump(path)
tm.Snapshot.load(path, progress=lambda done, total: None)
s.dump(path + ".pickle", format="pickle")
tm.Snapshot.load(path + ".pickle")
pickle.loads(pickle.dumps(s))
s._tree()
s._strip_root(((__file__, 1),), 3)
tm.get_object_traceback(keep[0])

ready, done = threading.Event(), threading.Event()


def traced_then_waits():
    junk = [bytes(50) for _ in range(30)]
    ready.set()
    done.wait()
    del junk


waiting = threading.Thread(target=traced_then_waits)
waiting.start()
ready.wait()
pid = os.fork()
if pid == 0:
    junk = [bytes(50) for _ in range(30)]
    code = 0 if len(tm.take_snapshot().traces) > 30 else 1
    os._exit(code)
done.set()
waiting.join()
assert os.waitpid(pid, 0)[1] == 0
tm.track(5, 0x1000, 10)
tm.untrack(5, 0x1000)
tm.clear_traces()
tm.reset_peak()
tm.get_traced_memory()
tm.get_tracemalloc_memory()
tm.stop()

tm.start(5, sample_interval=1024, peak=True)
in_threads(work)
keep = [bytearray(100) for _ in range(2000)]
s = tm.take_snapshot()
s.statistics("lineno")
s.compare_to(tm.take_peak_snapshot(), "traceback")
s._tree()
s.dump(path + ".sampled")
tm.Snapshot.load(path + ".sampled").statistics("filename")
del keep
tm.stop()
print("ok")
