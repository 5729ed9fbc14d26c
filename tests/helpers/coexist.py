"""Both tracers in one process (run by tests/test_coexistence.py).

    python coexist.py START_ORDER STOP_ORDER [--early] [--unwrapped]

START_ORDER and STOP_ORDER are "stdlib,ctm" or "ctm,stdlib". --early starts
the stdlib before ctracemalloc is imported; --unwrapped drives the stdlib
through functions taken from _tracemalloc before ctracemalloc was imported
(which ctracemalloc cannot see). Exits 0 when every check passed, else
prints what failed and exits 1.
"""
import ctypes
import sys


class PyMemAllocatorEx(ctypes.Structure):
    _fields_ = [(name, ctypes.c_void_p)
                for name in ("ctx", "malloc", "calloc", "realloc", "free")]


get_allocator = ctypes.pythonapi.PyMem_GetAllocator
get_allocator.restype = None
get_allocator.argtypes = [ctypes.c_int, ctypes.POINTER(PyMemAllocatorEx)]


def allocators():
    """The RAW, MEM and OBJ allocators in place now."""
    result = []
    for domain in range(3):
        alloc = PyMemAllocatorEx()
        get_allocator(domain, ctypes.byref(alloc))
        result.append(tuple(getattr(alloc, name) for name, _ in
                            PyMemAllocatorEx._fields_))
    return result


ORIGINAL = allocators()
start_order = sys.argv[1].split(",")
stop_order = sys.argv[2].split(",")
early = "--early" in sys.argv
unwrapped = "--unwrapped" in sys.argv

import tracemalloc as stdlib  # noqa: E402
import _tracemalloc  # noqa: E402

raw_start, raw_stop = _tracemalloc.start, _tracemalloc.stop
if early:
    assert start_order[0] == "stdlib"
    stdlib.start(5)

import ctracemalloc as ctm  # noqa: E402

TRACERS = {"stdlib": stdlib, "ctm": ctm}
failures = []


def check(condition, message):
    if not condition:
        failures.append(message)


def start(name):
    if name == "stdlib" and unwrapped:
        raw_start(5)
    elif not (name == "stdlib" and early):
        TRACERS[name].start(5)


def stop(name):
    if name == "stdlib" and unwrapped:
        raw_stop()
    else:
        TRACERS[name].stop()


def new_object(tag):
    """A fresh object and the line that allocated it."""
    return bytearray(1000 + len(tag)), sys._getframe().f_lineno


def traceback_line(name, obj):
    tb = TRACERS[name].get_object_traceback(obj)
    return None if tb is None else tb[-1].lineno


def check_state(step, tracing, stopped, objects):
    """The tracers in tracing must trace, right; those in stopped must
    not."""
    obj, line = new_object(step)
    objects.append((obj, line, set(tracing)))
    for name in tracing:
        if unwrapped and name == "ctm" and not ctm.is_tracing():
            # its hooks were dropped by a stop it could not see: saying
            # so is allowed, tracing wrongly is not
            continue
        check(TRACERS[name].is_tracing(), "%s: %s is not tracing"
              % (step, name))
        for old, old_line, tracers in objects:
            if name in tracers:
                got = traceback_line(name, old)
                check(got == old_line, "%s: %s gives line %s for an object "
                      "of line %s" % (step, name, got, old_line))
    for name in stopped:
        check(not TRACERS[name].is_tracing(), "%s: %s still tracing"
              % (step, name))
        check(traceback_line(name, obj) is None, "%s: stopped %s traced a "
              "new object" % (step, name))
        check(TRACERS[name].get_traced_memory() == (0, 0),
              "%s: stopped %s counts memory" % (step, name))


objects = []
tracing, stopped = [], ["stdlib", "ctm"]
for name in start_order:
    start(name)
    tracing.append(name)
    stopped.remove(name)
    check_state("after starting " + name, tracing, stopped, objects)
for name in stop_order:
    stop(name)
    tracing.remove(name)
    stopped.append(name)
    objects = [o for o in objects if tracing and tracing[0] in o[2]]
    check_state("after stopping " + name, tracing, stopped, objects)

check(allocators() == ORIGINAL, "allocators not restored after both "
      "stopped: %s, originally %s" % (allocators(), ORIGINAL))

# Both work again afterwards, alone.
for name in ("ctm", "stdlib"):
    TRACERS[name].start(5)
    obj, line = new_object("again")
    check(traceback_line(name, obj) == line, "%s does not trace after the "
          "run" % name)
    TRACERS[name].stop()
check(allocators() == ORIGINAL, "allocators not restored at the end")

for failure in failures:
    print("FAIL:", failure)
print("ok" if not failures else "%d failures" % len(failures))
sys.exit(1 if failures else 0)
