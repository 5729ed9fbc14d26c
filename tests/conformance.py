#!/usr/bin/env python3
"""Run the interpreter's own tracemalloc tests against ctracemalloc.

    python tests/conformance.py [--stdlib] [-v] [--json FILE]

The tests are the running interpreter's `test.test_tracemalloc`, imported
from its standard library (never copied into this repository), with
`sys.modules['tracemalloc']` replaced by ctracemalloc before the import, so
that every `tracemalloc.X` in them means `ctracemalloc.X`.

Only the classes that test the module's behaviour are run: TestTraceback,
TestTracemallocEnabled, TestSnapshot, TestFilters and TestCAPI (those that
exist in this version); TestCAPI calls the interpreter's C API through
_testcapi, which reaches ctracemalloc through its interceptors.
TestCommandLine starts new interpreters with -X tracemalloc and
PYTHONTRACEMALLOC, which always mean the stdlib.

The run happens a dozen frames deep, as under the interpreter's own test
runner: test_snapshot checks that a trace's total_nframe is over 10.

--stdlib runs the same tests against the stdlib itself, to check this
harness: everything must pass there.

Exit status: 0 if every test passed (or failed as expected), 1 otherwise.
"""
import argparse
import json
import os
import sys
import tempfile
import unittest

CLASSES = ("TestTraceback", "TestTracemallocEnabled", "TestSnapshot",
           "TestFilters", "TestCAPI")

# Tests that may fail for a reason this run reports, by version: none
# today. (test_new_reference, an object reused from a free list, needs the
# interceptors before 3.13; TestCAPI needs them on every version.)
KNOWN_LIMITATIONS = {}

# Nested calls around the run: with unittest's own frames this gives the
# depth of a run under the interpreter's test runner (regrtest).
DEPTH = 12

# The public API, whose objects must be ctracemalloc's own.
API = ("start", "stop", "is_tracing", "clear_traces", "get_traceback_limit",
       "get_traced_memory", "reset_peak", "get_tracemalloc_memory",
       "take_snapshot", "get_object_traceback", "Snapshot", "Statistic",
       "StatisticDiff", "Trace", "Traceback", "Frame", "Filter",
       "DomainFilter", "BaseFilter")


def import_tests(use_stdlib):
    """Import test.test_tracemalloc with the implementation under test in
    sys.modules['tracemalloc']. Return (test module, implementation)."""
    import tracemalloc as stdlib_tracemalloc
    if "test.test_tracemalloc" in sys.modules:
        raise RuntimeError("test.test_tracemalloc was imported too early")
    if use_stdlib:
        impl = stdlib_tracemalloc
    else:
        import ctracemalloc as impl
        # A package that fell back on the stdlib would pass for nothing.
        same = [name for name in API
                if getattr(impl, name, None) is getattr(stdlib_tracemalloc,
                                                        name)]
        if same:
            raise RuntimeError("ctracemalloc reuses the stdlib's %s"
                               % ", ".join(same))
        sys.modules["tracemalloc"] = impl
    from test import test_tracemalloc
    if test_tracemalloc.tracemalloc is not impl:
        raise RuntimeError("test_tracemalloc did not import the module "
                           "under test")
    return test_tracemalloc, impl


def build_suite(module, use_stdlib):
    """Return (suite, names of the tests expected to fail)."""
    loader = unittest.TestLoader()
    suite = unittest.TestSuite()
    expected = set()
    for name in CLASSES:
        cls = getattr(module, name, None)
        if cls is None:
            continue
        for key, (applies, _why) in KNOWN_LIMITATIONS.items():
            cls_name, method = key.split(".")
            if cls_name != name or use_stdlib or not applies():
                continue
            if not hasattr(cls, method):
                raise RuntimeError("%s no longer exists: update "
                                   "KNOWN_LIMITATIONS" % key)
            setattr(cls, method, unittest.expectedFailure(getattr(cls,
                                                                  method)))
            expected.add(key)
        suite.addTests(loader.loadTestsFromTestCase(cls))
    return suite, expected


def run_nested(depth, func):
    if depth <= 0:
        return func()
    return run_nested(depth - 1, func)


def test_name(test):
    return "%s.%s" % (type(test).__name__, test._testMethodName)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--stdlib", action="store_true",
                        help="test the stdlib tracemalloc (harness check)")
    parser.add_argument("-v", "--verbose", action="store_true")
    parser.add_argument("--json", metavar="FILE",
                        help="also write the counts to FILE")
    args = parser.parse_args(argv)

    what = "stdlib tracemalloc" if args.stdlib else "ctracemalloc"
    version = "%d.%d.%d" % sys.version_info[:3]
    module, impl = import_tests(args.stdlib)
    print("conformance: %s (%s) against %s, Python %s"
          % (what, impl.__file__, module.__file__, version))
    suite, expected = build_suite(module, args.stdlib)

    # The tests dump snapshots to os_helper.TESTFN, in the current directory.
    cwd = os.getcwd()
    with tempfile.TemporaryDirectory(prefix="ctm-conformance-") as tmp:
        os.chdir(tmp)
        try:
            runner = unittest.TextTestRunner(stream=sys.stdout,
                                             verbosity=2 if args.verbose
                                             else 1)
            result = run_nested(DEPTH, lambda: runner.run(suite))
        finally:
            os.chdir(cwd)
            impl.stop()

    xfailed = [test_name(t) for t, _ in result.expectedFailures]
    for test in result.unexpectedSuccesses:
        name = test_name(test)
        print("UNEXPECTED SUCCESS: %s passed although it was expected to "
              "fail (%s): find out why, then update KNOWN_LIMITATIONS in "
              "tests/conformance.py" % (name, KNOWN_LIMITATIONS[name][1]))
    for name in xfailed:
        print("expected failure: %s (%s)" % (name, KNOWN_LIMITATIONS[name][1]))
    failed = (len(result.failures) + len(result.errors)
              + len(result.unexpectedSuccesses))
    skipped = len(result.skipped)
    passed = result.testsRun - failed - skipped - len(xfailed)
    if result.testsRun == 0:
        failed += 1
        print("no test ran")
    counts = {"passed": passed, "failed": failed, "skipped": skipped,
              "xfailed": len(xfailed)}
    if args.json:
        with open(args.json, "w") as fp:
            json.dump(counts, fp)
    print("conformance: %d passed, %d failed, %d skipped, "
          "%d expected failures" % (passed, failed, skipped, len(xfailed)))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
