"""Startup tracing: CTRACEMALLOC=NFRAME traces from the interpreter's start.

The file ctracemalloc-startup.pth, installed beside the package in
site-packages, imports this module while site runs, before the program's
first import, when the variable is set (and only then: the line costs
nothing otherwise). Like PYTHONTRACEMALLOC: NFRAME is the number of frames
kept per traceback, from 1 to 65535; unset or empty means off. An invalid
value prints one warning on stderr and leaves tracing off. Python's -E and
-I options (sys.flags.ignore_environment) turn it off, as they do
PYTHONTRACEMALLOC. When tracing
starts, install() makes `import tracemalloc` give ctracemalloc, so that
code written for the stdlib's module sees the traces, unless
PYTHONTRACEMALLOC (set, even empty) or -X tracemalloc names the stdlib's
tracer: then `import tracemalloc` stays the stdlib's, which these configure
(CPython's own test_tracemalloc starts children that way, and inherits
CTRACEMALLOC from the parent).
"""
import os
import sys


def _start():
    if sys.flags.ignore_environment:
        return
    value = os.environ.get("CTRACEMALLOC", "")
    if not value:
        return
    try:
        nframe = int(value)
    except ValueError:
        nframe = 0
    if not 1 <= nframe <= 65535:
        sys.stderr.write("ctracemalloc: CTRACEMALLOC=%r is not a number of "
                         "frames from 1 to 65535: tracing stays off\n"
                         % value)
        return
    import ctracemalloc
    if "PYTHONTRACEMALLOC" not in os.environ \
            and "tracemalloc" not in sys._xoptions:
        # A program run with PYTHONTRACEMALLOC (even empty, which means
        # off) or -X tracemalloc asks for the stdlib's tracer by name:
        # `import tracemalloc` stays the stdlib's there.
        ctracemalloc.install()
    ctracemalloc.start(nframe)


_start()
