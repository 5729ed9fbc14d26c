"""Interpreter exit and subinterpreters: tracing still on at exit with
daemon threads allocating, sys.exit from a thread, os._exit, a snapshot
in an atexit handler, ctracemalloc in a subinterpreter. Each case is a
child process that must end with the expected status, in time, without a
crash. Every case runs several times: the races are at exit."""
import subprocess
import sys
import textwrap

import pytest

from tmhelpers import child_env, patience

pytestmark = pytest.mark.ctm_only

RUNS = 5

# Threads that allocate forever, with the GIL (objects) and without it
# (zlib compresses with the GIL released; its state comes from the RAW
# domain).
WORKERS = """
import threading, zlib
def work():
    data = bytes(range(256)) * 400
    while True:
        zlib.decompress(zlib.compress(data, 1))
        junk = [bytes(64) for _ in range(50)]
def spawn(n, daemon=True):
    threads = [threading.Thread(target=work, daemon=daemon)
               for _ in range(n)]
    for t in threads:
        t.start()
    return threads
"""


@pytest.fixture
def ctm():
    from conftest import require_ctm
    return require_ctm()


def run(code, tmp_path):
    script = tmp_path / "case.py"
    script.write_text(textwrap.dedent(code))
    proc = subprocess.run([sys.executable, str(script)], env=child_env(),
                          capture_output=True, text=True, timeout=patience(60),
                          cwd=tmp_path)
    assert "Fatal Python error" not in proc.stderr, proc.stderr[-3000:]
    assert "Segmentation fault" not in proc.stderr
    assert proc.returncode >= 0, "killed by signal %d: %s" % (
        -proc.returncode, proc.stderr[-3000:])
    return proc


@pytest.mark.parametrize("nframe", [1, 25])
def test_exit_with_daemon_threads_allocating(ctm, tmp_path, nframe):
    for i in range(RUNS):
        proc = run(WORKERS + """
import ctracemalloc, time
ctracemalloc.start(%d)
spawn(4)
time.sleep(0.05 * %d)
print("bye")
""" % (nframe, i), tmp_path)
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert proc.stdout == "bye\n"


def test_sys_exit_from_a_thread(ctm, tmp_path):
    for _ in range(RUNS):
        proc = run(WORKERS + """
import ctracemalloc, sys, threading
ctracemalloc.start(5)
spawn(2)
t = threading.Thread(target=sys.exit, args=(3,))
t.start()
t.join()
print(ctracemalloc.is_tracing(), len(ctracemalloc.take_snapshot().traces) > 0)
sys.exit(4)
""", tmp_path)
        assert proc.returncode == 4, proc.stderr[-3000:]
        assert proc.stdout == "True True\n"


def test_os_exit_while_threads_allocate(ctm, tmp_path):
    for _ in range(RUNS):
        proc = run(WORKERS + """
import ctracemalloc, os, sys, time
ctracemalloc.start(10)
spawn(4, daemon=False)
time.sleep(0.05)
sys.stdout.flush()
os._exit(7)
""", tmp_path)
        assert proc.returncode == 7, proc.stderr[-3000:]


@pytest.mark.parametrize("order", ["handler first", "ctracemalloc first"])
def test_snapshot_in_atexit_handler(ctm, tmp_path, order):
    """atexit runs handlers last registered first: a handler registered
    before ctracemalloc's import runs after ctracemalloc's own."""
    setup = {
        "handler first": "import atexit\natexit.register(dump)\n"
                         "import ctracemalloc\n",
        "ctracemalloc first": "import ctracemalloc, atexit\n"
                              "atexit.register(dump)\n",
    }[order]
    for i in range(RUNS):
        out = tmp_path / ("exit%d.snapshot" % i)
        code = WORKERS + """
def dump():
    import ctracemalloc
    s = ctracemalloc.take_snapshot()
    s.dump(%r)
    print("dumped", len(s.traces) > 0)
%s
keep = [bytearray(1000) for _ in range(100)]
ctracemalloc.start(3)
spawn(2)
more = [bytearray(1000) for _ in range(100)]
""" % (str(out), setup)
        proc = run(code, tmp_path)
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert proc.stdout == "dumped True\n"
        snapshot = ctm.Snapshot.load(out)
        assert snapshot.traceback_limit == 3
        more = code.splitlines().index(
            "more = [bytearray(1000) for _ in range(100)]") + 1
        mine = [t for t in snapshot.traces
                if (t.traceback[-1].filename.endswith("case.py")
                    and t.traceback[-1].lineno == more and t.size >= 1000)]
        assert len(mine) == 100       # traced until the very end


def subinterpreters():
    for name in ("_interpreters", "_xxsubinterpreters"):
        try:
            return __import__(name)
        except ImportError:
            pass
    return None


@pytest.mark.skipif(sys.version_info < (3, 12),
                    reason="subinterpreters with their own state: 3.12+")
def test_subinterpreter(ctm, tmp_path):
    """Importing ctracemalloc in a subinterpreter is refused with
    ImportError; the main interpreter's tracing carries on, and code that
    runs in a subinterpreter while the main one traces does not crash,
    nor do its code objects as they die (the tracer's code watcher is the
    main interpreter's only)."""
    if subinterpreters() is None:
        pytest.skip("no subinterpreter module in this build")
    for _ in range(RUNS):
        proc = run("""
import ctracemalloc, sys
try:
    import _interpreters as interpreters
except ImportError:
    import _xxsubinterpreters as interpreters

def run_in(interp, code):
    # None, or the error: 3.12 raises it, 3.13 returns its description
    try:
        result = interpreters.run_string(interp, code)
    except Exception as exc:
        return str(exc)
    return result and (getattr(result, "formatted", None) or str(result))

ctracemalloc.start(5)
interp = interpreters.create()
err = run_in(interp, "import ctracemalloc")
print("import:", "ImportError" in (err or ""), "subinterpreter" in (err or ""))
err = run_in(interp, "x = [bytes(100) for _ in range(10000)]; del x")
print("run:", err)
err = run_in(interp, "for i in range(300):\\n"
             "    exec(compile('def f():\\\\n    return [i] * 3\\\\nx = f()',"
             " '<sub>', 'exec'), {'i': i})")
print("code:", err)
interpreters.destroy(interp)
keep = [bytes(100) for _ in range(1000)]
s = ctracemalloc.take_snapshot()
print("tracing:", ctracemalloc.is_tracing(), len(s.traces) >= 1000)
ctracemalloc.stop()
""", tmp_path)
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert proc.stdout.splitlines() == [
            "import: True True", "run: None", "code: None",
            "tracing: True True"], \
            proc.stdout + proc.stderr[-3000:]
