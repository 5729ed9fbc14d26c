"""Helpers shared by the test modules (imported as a plain module: pytest
puts tests/ on sys.path)."""
import os
import re
import sys
import threading
import time

import pytest

try:
    import ctracemalloc
except Exception as exc:  # ImportError, or an error in its init
    ctracemalloc = None
    CTM_IMPORT_ERROR = exc
else:
    CTM_IMPORT_ERROR = None

# Every timeout in the suite is a net against a hang, sized for an ordinary
# run. scripts/valgrind runs the suite (children included) under memcheck,
# tens of times slower, and stretches them all with CTM_TIMEOUT_SCALE.
TIMEOUT_SCALE = float(os.environ.get("CTM_TIMEOUT_SCALE", "1"))


def patience(seconds):
    """A timeout of `seconds` in an ordinary run, stretched by
    CTM_TIMEOUT_SCALE."""
    return seconds * TIMEOUT_SCALE


def require_ctm():
    """ctracemalloc; the test fails if it is not importable (or is skipped
    if CTM_ALLOW_MISSING is set, to work on the suite without it)."""
    if ctracemalloc is None:
        if os.environ.get("CTM_ALLOW_MISSING"):
            pytest.skip("ctracemalloc is not importable and "
                        "CTM_ALLOW_MISSING is set")
        pytest.fail("ctracemalloc is not importable: %r"
                    % (CTM_IMPORT_ERROR,), pytrace=False)
    return ctracemalloc


def child_env():
    """Environment for a child Python that must import the same ctracemalloc
    as this process, and tracing nothing at startup."""
    env = dict(os.environ)
    for startup in ("PYTHONTRACEMALLOC", "CTRACEMALLOC", "CTRACEMALLOC_NATIVE",
                    "CTRACEMALLOC_OUTPUT", "CTRACEMALLOC_SAMPLE",
                    "CTRACEMALLOC_SAMPLE_SEED"):
        env.pop(startup, None)
    if ctracemalloc is not None:
        # the directory that holds the ctracemalloc package
        paths = [os.path.dirname(os.path.dirname(ctracemalloc.__file__))]
        if env.get("PYTHONPATH"):
            paths.append(env["PYTHONPATH"])
        env["PYTHONPATH"] = os.pathsep.join(paths)
    return env

EMPTY_BYTES_SIZE = sys.getsizeof(b"")


def run_python(code, env=None, timeout=180):
    """code in a fresh interpreter (the suite's child environment, plus
    env), which must succeed; its CompletedProcess."""
    import subprocess
    environ = child_env()
    environ.update(env or {})
    proc = subprocess.run([sys.executable, "-c", code], env=environ,
                          capture_output=True, text=True,
                          timeout=patience(timeout))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


def under_each_tracer(code, timeout=120):
    """Run code, a program that traces with the module sys.argv[1] names,
    in a fresh interpreter under the stdlib's tracemalloc and under
    ctracemalloc: {"tracemalloc": its stdout, "ctracemalloc": ...}."""
    import subprocess
    out = {}
    for name in ("tracemalloc", "ctracemalloc"):
        proc = subprocess.run([sys.executable, "-c", code, name],
                              env=child_env(), capture_output=True,
                              text=True, timeout=patience(timeout))
        assert proc.returncode == 0, proc.stderr[-3000:]
        out[name] = proc.stdout
    return out


def get_frames(nframe, lineno_delta=0):
    """The caller's stack as (filename, lineno) pairs, most recent first,
    at most nframe of them; lineno_delta is added to the caller's line."""
    frames = []
    frame = sys._getframe(1)
    for _ in range(nframe):
        frames.append((frame.f_code.co_filename,
                       frame.f_lineno + lineno_delta))
        lineno_delta = 0
        frame = frame.f_back
        if frame is None:
            break
    return tuple(frames)


def stack_depth():
    """Number of Python frames of the caller's stack, the caller included."""
    depth = 0
    frame = sys._getframe(1)
    while frame is not None:
        depth += 1
        frame = frame.f_back
    return depth


def allocate_bytes(tm, size):
    """Allocate one bytes object whose memory block has exactly size bytes.
    Return (object, the raw frames of its allocation, most recent first)."""
    nframe = tm.get_traceback_limit()
    frames = get_frames(nframe, 1)
    data = b"x" * (size - EMPTY_BYTES_SIZE)
    return data, frames


def raw_frames(traceback):
    """A Traceback as raw frames, most recent first (the order of the
    stdlib's _get_traces() and of the Traceback constructor)."""
    return tuple((f.filename, f.lineno) for f in reversed(list(traceback)))


def plain_traceback(traceback):
    return (raw_frames(traceback), traceback.total_nframe)


def plain_trace(trace):
    return (trace.domain, trace.size) + plain_traceback(trace.traceback)


def plain_stat(stat):
    return (raw_frames(stat.traceback), stat.size, stat.count)


def plain_diff(stat):
    return (raw_frames(stat.traceback), stat.size, stat.size_diff,
            stat.count, stat.count_diff)


def plain_traces(snapshot):
    return [plain_trace(t) for t in snapshot.traces]


def find_traces(snapshot, frames=None, size=None, domain=None):
    """Traces of snapshot whose raw frames start with frames (most recent
    first) and whose size and domain match, when given."""
    found = []
    for trace in snapshot.traces:
        if size is not None and trace.size != size:
            continue
        if domain is not None and trace.domain != domain:
            continue
        if frames is not None and \
                raw_frames(trace.traceback)[:len(frames)] != tuple(frames):
            continue
        found.append(trace)
    return found


def outcome(func):
    """(exception type, message) if func() raises, else (None, result)."""
    try:
        result = func()
    except Exception as exc:
        return type(exc), str(exc)
    return None, result


def settle_threads():
    """Wait until every thread Python has joined is gone from the process.

    join() returns before a thread has finished exiting in C (thread-local
    destructors, the C library's and sanitizers' bookkeeping). A fork at
    that moment is legal, but GCC 12's AddressSanitizer has no fork
    handlers: if the exiting thread holds one of its allocator locks, the
    child deadlocks in its first malloc. That happens without any tracer
    (fork in a loop while short threads come and go, under LD_PRELOAD of
    libasan: the child waits on a futex inside ASan's allocator), so the
    tests that fork from a thread wait for the process's own thread count
    (Linux /proc) to match Python's first."""
    try:
        os.listdir("/proc/self/task")
    except OSError:
        return
    deadline = time.monotonic() + patience(5.0)
    while (len(os.listdir("/proc/self/task")) > threading.active_count()
           and time.monotonic() < deadline):
        time.sleep(0.001)


# valgrind memcheck's logs, as scripts/valgrind and test_valgrind write
# them (--fullpath-after= shows source paths, so that a frame in
# ctracemalloc's code says so even when the build has debug information).
MEMCHECK_KINDS = re.compile(
    r"(Invalid|Conditional|Use of|Syscall|Mismatched|Source and|"
    r"[\d,]+ (\([\d,]+ direct, [\d,]+ indirect\) )?bytes in [\d,]+ "
    r"blocks are definitely)")
MEMCHECK_FRAME = re.compile(r"^\s*(at|by) 0x[0-9A-Fa-f]+: (.*)$")
MEMCHECK_OURS = re.compile(r"/ctracemalloc/_core/|_ctracemalloc\.")
MEMCHECK_ALLOCATOR = re.compile(r"^(malloc|calloc|realloc|free|memalign|"
                                r"posix_memalign|aligned_alloc|operator) "
                                r".*vgpreload")


def memcheck_ours(report):
    """Whether one memcheck report is about ctracemalloc: where an error
    happened, a frame of ours (not counting the allocator hooks, which
    pass the program's requests through); for a block (lost, or where an
    error's memory was allocated or freed), the caller of the allocator
    is our code, and not a hook or a native replacement passing the
    program's request on."""
    stacks, stack = [], None
    for line in report.splitlines():
        m = MEMCHECK_FRAME.match(line)
        if m is None:
            stack = None
        elif m.group(1) == "at" or stack is None:
            stack = [m.group(2)]
            stacks.append(stack)
        else:
            stack.append(m.group(2))

    def ours(frame):
        return MEMCHECK_OURS.search(frame) is not None

    def passes_through(frame):
        # the allocator hooks, and native tracing's replacements of malloc
        # and the rest (native.c)
        return ours(frame) and frame.startswith(("hook_", "native_"))

    for frames in stacks:
        if MEMCHECK_ALLOCATOR.match(frames[0]):
            caller = next((f for f in frames
                           if not MEMCHECK_ALLOCATOR.match(f)), "")
            if ours(caller) and not passes_through(caller):
                return True
        elif any(ours(f) and not passes_through(f) for f in frames):
            return True
    return False


def memcheck_reports(log):
    """valgrind memcheck's reports in the text of its log: the errors and
    definitely lost blocks, and those of them that are about ctracemalloc
    (memcheck_ours). A report runs from the line that names its kind to
    the next blank line; valgrind's own messages may come just before it
    (with -v: "--pid--" lines, and redirection warnings)."""
    found = []
    for block in re.split(r"\n==\d+== ?\n", log):
        lines = [re.sub(r"^==\d+== ?", "", line)
                 for line in block.splitlines()
                 if not re.match(r"--\d+--", line)]
        first = next((i for i, line in enumerate(lines)
                      if MEMCHECK_KINDS.match(line)), None)
        if first is not None:
            found.append("\n".join(lines[first:]).strip())
    return found, [b for b in found if memcheck_ours(b)]


def heap_in_use():
    """Bytes of C heap in use: the sanitizer's count under ASan (whose
    quarantine keeps freed memory mapped), else glibc's mallinfo2."""
    import ctypes
    libc = ctypes.CDLL(None)
    if hasattr(libc, "__sanitizer_get_current_allocated_bytes"):
        libc.__sanitizer_get_current_allocated_bytes.restype = ctypes.c_size_t
        return libc.__sanitizer_get_current_allocated_bytes()
    if not hasattr(libc, "mallinfo2"):
        pytest.skip("needs glibc's mallinfo2 or ASan")

    class Mallinfo2(ctypes.Structure):
        _fields_ = [(name, ctypes.c_size_t) for name in (
            "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
            "fsmblks", "uordblks", "fordblks", "keepcost")]

    libc.mallinfo2.restype = Mallinfo2
    info = libc.mallinfo2()
    return info.uordblks + info.hblkhd
