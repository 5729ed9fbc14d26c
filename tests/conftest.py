"""One suite, two implementations.

A test that takes the `tm` fixture runs twice: against the stdlib
`tracemalloc` (id 'stdlib') and against `ctracemalloc` (id 'ctm'). That is
how every behaviour the two must share is tested: the stdlib run shows that
the test itself is right, the ctm run that ctracemalloc agrees.

Tests of what only ctracemalloc has take the `ctm` fixture and carry the
`ctm_only` mark; differential tests, which call both in one test, take
`stdlib` and `ctm`.

Only one tracer traces at a time: every one of these fixtures stops both
tracers before and after its test. (The tests of the two tracers together
run in subprocesses.)

ctracemalloc must be importable: if it is not, its tests fail. To work on
the suite without it, set CTM_ALLOW_MISSING=1 and they are skipped instead.
"""
import tracemalloc as stdlib_tracemalloc

import pytest

from tmhelpers import CTM_IMPORT_ERROR, ctracemalloc, require_ctm


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "ctm_only: a test of what only ctracemalloc has")


def pytest_report_header(config):
    where = (ctracemalloc.__file__ if ctracemalloc is not None
             else "NOT IMPORTABLE: %r" % (CTM_IMPORT_ERROR,))
    return ["ctracemalloc: %s" % where,
            "stdlib tracemalloc: %s" % stdlib_tracemalloc.__file__]


def stop_all():
    stdlib_tracemalloc.stop()
    if ctracemalloc is not None:
        ctracemalloc.stop()


@pytest.fixture(params=["stdlib", "ctm"])
def tm(request):
    """The implementation under test: stdlib tracemalloc, then
    ctracemalloc."""
    module = stdlib_tracemalloc if request.param == "stdlib" else require_ctm()
    stop_all()
    yield module
    stop_all()


@pytest.fixture
def ctm():
    """ctracemalloc, for the tests of what only it has."""
    module = require_ctm()
    stop_all()
    yield module
    stop_all()


@pytest.fixture
def stdlib():
    """The stdlib tracemalloc, the reference in differential tests."""
    stop_all()
    yield stdlib_tracemalloc
    stop_all()


@pytest.fixture
def impl_name(tm):
    return "stdlib" if tm is stdlib_tracemalloc else "ctm"


def pytest_collection_modifyitems(config, items):
    # Tests that take the ctm fixture are ctracemalloc-only by nature.
    for item in items:
        if "ctm" in getattr(item, "fixturenames", ()) and \
                "stdlib" not in item.fixturenames:
            item.add_marker(pytest.mark.ctm_only)

