"""Coexistence with the stdlib tracer.

Both tracers hook the same allocators, each calling the one it found
underneath. The stdlib's stop() restores the allocators it saved when it
started; if ctracemalloc was started in between, that silently drops
ctracemalloc's hooks from the chain. So the stdlib's stop is wrapped:
after it, ctracemalloc puts its hooks back on top if they fell out. The
stdlib's start is wrapped too, for 3.13: it replaces the reference
tracer that ctracemalloc uses to see objects reused from free lists.
"""
import sys

from . import _ctracemalloc


def _wrap(fn, stopped):
    if getattr(fn, "_ctracemalloc_wrapped", False):
        return fn

    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        finally:
            _ctracemalloc._after_other_tracer(stopped)

    wrapper.__name__ = fn.__name__
    wrapper.__qualname__ = getattr(fn, "__qualname__", fn.__name__)
    wrapper.__doc__ = fn.__doc__
    wrapper.__wrapped__ = fn
    wrapper._ctracemalloc_wrapped = True
    return wrapper


def watch_stdlib():
    try:
        import _tracemalloc
    except ImportError:  # pragma: no cover - CPython always has it
        return
    modules = [_tracemalloc]
    stdlib = sys.modules.get("tracemalloc")
    if stdlib is not None and getattr(stdlib, "__name__", "") == "tracemalloc":
        modules.append(stdlib)
    for module in modules:
        for name in ("start", "stop"):
            fn = getattr(module, name, None)
            if fn is not None:
                setattr(module, name, _wrap(fn, name == "stop"))
