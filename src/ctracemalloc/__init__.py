"""ctracemalloc: the tracemalloc API, implemented in C.

A drop-in for the standard library's tracemalloc module::

    import ctracemalloc as tracemalloc

Same functions, classes, reprs, output formats, exceptions and semantics;
faster tracing and analysis. Beyond the stdlib: start(native=True) for
what extension modules and their libraries take from malloc and mmap
(traced in NATIVE_DOMAIN), start(peak=True) for take_peak_snapshot()
(what held the memory at its high-water mark) and get_timeline(),
track()/untrack() for
blocks in other domains, a C API for extensions (get_include()),
install() to stand in for `import tracemalloc`, a command line
(python -m ctracemalloc) and startup tracing (CTRACEMALLOC=NFRAME).
"""
import atexit as _atexit
import linecache  # noqa: F401  (Traceback.format reads linecache.getline)
from collections.abc import Iterable, Sequence  # noqa: F401

from . import _ctracemalloc
from ._ctracemalloc import (
    NATIVE_DOMAIN,
    BaseFilter,
    DomainFilter,
    Filter,
    Frame,
    Snapshot,
    Statistic,
    StatisticDiff,
    Trace,
    Traceback,
    _Traces,
    _format_size,
    _get_object_traceback,
    _get_traces,
    _normalize_filename,
    clear_traces,
    get_object_traceback,
    get_timeline,
    get_traceback_limit,
    get_traced_memory,
    get_tracemalloc_memory,
    is_tracing,
    reset_peak,
    start,
    stop,
    take_peak_snapshot,
    take_snapshot,
    track,
    untrack,
)
from ._coexist import watch_stdlib as _watch_stdlib

__version__ = "0.1.0"

Sequence.register(Traceback)
Sequence.register(_Traces)

_atexit.register(_ctracemalloc._at_exit)
_watch_stdlib()


def install():
    """Make `import tracemalloc` give ctracemalloc from now on, so that code
    written for the stdlib's module uses this one: the warnings module's
    "Object allocated at" tracebacks of ResourceWarning, asyncio's debug
    mode, test runners. Modules that imported tracemalloc before keep
    what they imported. Returns what sys.modules held before (None if
    tracemalloc was not imported yet)."""
    import sys

    previous = sys.modules.get("tracemalloc")
    sys.modules["tracemalloc"] = sys.modules[__name__]
    return previous


def get_include():
    """The folder holding ctracemalloc.h, for C extensions that report
    their allocations through ctracemalloc's C API."""
    import os

    return os.path.join(os.path.dirname(__file__), "include")
