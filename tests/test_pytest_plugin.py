"""The pytest plugin (issue 20): pytest run in a child process on small
test projects, with and without --ctracemalloc, alone and under
pytest-xdist; outcomes and messages checked."""
import os
import re
import subprocess
import sys
import textwrap

import pytest

from tmhelpers import child_env, patience, require_ctm

# The plugin by its module name (a development build on PYTHONPATH has no
# entry point), the entry point's name blocked so that an installed
# package does not register it twice. test_entry_point uses the entry
# point itself.
PLUGIN = ["-p", "no:ctracemalloc", "-p", "ctracemalloc._pytest_plugin"]

BIG = """\
import pytest

@pytest.mark.limit_memory("1 MB")
def test_big():
    blocks = [bytearray(10000) for _ in range(300)]  # the big line
    assert len(blocks) == 300

@pytest.mark.limit_memory("1 MB")
def test_small():
    blocks = [bytearray(1000) for _ in range(100)]
    assert len(blocks) == 100

def test_unmarked():
    blocks = [bytearray(10000) for _ in range(200)]  # the unmarked line
    assert blocks
"""

LEAK = """\
import pytest

CACHE = []

def remember(n):
    CACHE.append(bytearray(n))  # the leaking line

@pytest.mark.limit_leaks("100 KB")
def test_leaks():
    for _ in range(10):
        remember(50000)

@pytest.mark.limit_leaks("100 KB")
def test_frees():
    local = [bytearray(50000) for _ in range(10)]
    assert local

class Cycle:
    def __init__(self):
        self.me = self
        self.data = bytearray(500000)

@pytest.mark.limit_leaks("100 KB")
def test_garbage_cycle():
    for _ in range(4):
        Cycle()

def not_remember(traceback):
    return not any(frame.function == "remember" for frame in traceback)

@pytest.mark.limit_leaks("100 KB", filter_fn=not_remember)
def test_filtered():
    for _ in range(10):
        remember(50000)
"""


def write(folder, files, ini=""):
    (folder / "pytest.ini").write_text("[pytest]\n" + ini)
    for name, text in files.items():
        (folder / name).write_text(textwrap.dedent(text))


def run_pytest(folder, *args, plugin=PLUGIN, env=None):
    require_ctm()
    environ = child_env()
    environ.update(env or {})
    cmd = ([sys.executable, "-m", "pytest", "-rA", "-p", "no:cacheprovider"]
           + plugin + list(args))
    return subprocess.run(cmd, cwd=str(folder), env=environ,
                          capture_output=True, text=True,
                          timeout=patience(300))


def outcomes(proc):
    """{test id: PASSED, FAILED or ERROR} from -rA's summary."""
    found = {}
    for line in proc.stdout.splitlines():
        m = re.match(r"(PASSED|FAILED|ERROR) (\S+)", line)
        if m:
            found[m.group(2)] = m.group(1)
    assert found, proc.stdout + proc.stderr
    return found


def failure_of(proc, name):
    """The text of test `name`'s failure section."""
    out = proc.stdout
    start = re.search(r"_{3,} %s _{3,}\n" % re.escape(name), out)
    assert start, out
    end = re.search(r"\n(_{3,} |={3,} )", out[start.end():])
    return out[start.end():start.end() + (end.start() if end else len(out))]


def lineno(folder, name, marker):
    for n, line in enumerate((folder / name).read_text().splitlines(), 1):
        if marker in line:
            return n
    raise AssertionError(marker)


def test_limit_memory(tmp_path):
    write(tmp_path, {"test_big.py": BIG})
    proc = run_pytest(tmp_path, "--ctracemalloc")
    assert outcomes(proc) == {"test_big.py::test_big": "FAILED",
                              "test_big.py::test_small": "PASSED",
                              "test_big.py::test_unmarked": "PASSED"}
    text = failure_of(proc, "test_big")
    line = lineno(tmp_path, "test_big.py", "the big line")
    assert "limit_memory('1 MB')" in text
    assert "over the limit of 1 MB (1000000 B)" in text
    peak = int(re.search(r"during the test was [^(]*\((\d+) B\)",
                         text).group(1))
    assert 3000000 <= peak < 3200000, text
    first = re.search(r"#1: (.*)\n(.*)\n", text)
    assert first.group(1).startswith(
        "%s:%d in test_big: size=" % (tmp_path / "test_big.py", line)), text
    assert "bytearray(10000) for _ in range(300)" in first.group(2)
    assert "Traceback (most recent call last)" not in proc.stdout
    assert proc.returncode == 1


def test_limit_leaks(tmp_path):
    write(tmp_path, {"test_leak.py": LEAK})
    proc = run_pytest(tmp_path, "--ctracemalloc")
    assert outcomes(proc) == {"test_leak.py::test_leaks": "FAILED",
                              "test_leak.py::test_frees": "PASSED",
                              "test_leak.py::test_garbage_cycle": "PASSED",
                              "test_leak.py::test_filtered": "PASSED"}
    text = failure_of(proc, "test_leaks")
    line = lineno(tmp_path, "test_leak.py", "the leaking line")
    assert "limit_leaks('100 KB'): 1 location leaked more than 100 KB" \
        in text
    # labelled by the line that allocated, its traceback under it
    assert "#1: %s:%d in remember: size=" % (tmp_path / "test_leak.py",
                                             line) in text
    assert 'line %d, in remember\n    CACHE.append(bytearray(n))' % line \
        in text
    assert "in test_leaks\n    remember(50000)" in text
    # pytest's own frames, which call every test, are not printed
    assert "pluggy" not in text and "_pytest" not in text, text
    size = re.search(r"size=(\d+) KiB", text)
    assert size and 480 <= int(size.group(1)) <= 500, text


def test_filter_fn_keeps_what_it_returns_true_for(tmp_path):
    write(tmp_path, {"test_keep.py": LEAK.replace(
        "return not any", "return any")})
    found = outcomes(run_pytest(tmp_path, "--ctracemalloc"))
    assert found["test_keep.py::test_filtered"] == "FAILED"


def test_nothing_without_the_flag(tmp_path):
    write(tmp_path, {"test_big.py": BIG, "test_leak.py": LEAK})
    proc = run_pytest(tmp_path, "--strict-markers",
                      "-W", "error::pytest.PytestUnknownMarkWarning")
    assert set(outcomes(proc).values()) == {"PASSED"}
    assert len(outcomes(proc)) == 7
    assert "ctracemalloc" not in proc.stdout, proc.stdout
    assert proc.returncode == 0


def test_ini_enables(tmp_path):
    write(tmp_path, {"test_big.py": BIG}, ini="ctracemalloc = true\n")
    found = outcomes(run_pytest(tmp_path))
    assert found["test_big.py::test_big"] == "FAILED"


def test_fixtures_not_charged(tmp_path):
    write(tmp_path, {"test_fix.py": """\
        import pytest

        KEPT = []

        @pytest.fixture
        def big():
            data = bytearray(5000000)
            yield data
            KEPT.append(bytearray(5000000))  # teardown keeps memory

        @pytest.mark.limit_memory("1 MB")
        @pytest.mark.limit_leaks("1 MB")
        def test_uses_big(big):
            assert len(big) == 5000000

        @pytest.mark.limit_memory("1 MB")
        def test_after():
            pass
        """})
    proc = run_pytest(tmp_path, "--ctracemalloc")
    assert set(outcomes(proc).values()) == {"PASSED"}, proc.stdout


def test_summary(tmp_path):
    write(tmp_path, {"test_big.py": BIG})
    proc = run_pytest(tmp_path, "--ctracemalloc", "--ctracemalloc-top", "2")
    out = proc.stdout
    assert "ctracemalloc: the 2 tests with the highest peaks" in out
    summary = out[out.index("highest peaks"):out.index("short test summary")]
    assert re.search(r"#1: test_big.py::test_big: peak \d+ KiB\n"
                     r"    .*test_big.py:%d in test_big: size="
                     % lineno(tmp_path, "test_big.py", "the big line"),
                     summary), summary
    assert re.search(r"#2: test_big.py::test_unmarked: peak \d+ KiB\n"
                     r"    .*test_big.py:%d in test_unmarked: size="
                     % lineno(tmp_path, "test_big.py", "the unmarked line"),
                     summary), summary
    assert "test_small" not in summary


def test_xdist_same_outcomes(tmp_path):
    pytest.importorskip("xdist")
    write(tmp_path, {"test_big.py": BIG, "test_leak.py": LEAK})
    alone = run_pytest(tmp_path, "--ctracemalloc")
    spread = run_pytest(tmp_path, "--ctracemalloc", "-n", "2")
    assert outcomes(spread) == outcomes(alone)
    assert "[gw" in spread.stdout            # the workers ran the tests
    for proc in (alone, spread):
        assert "the 5 tests with the highest peaks" in proc.stdout
        assert re.search(r"#1: test_big.py::test_big: peak \d+ KiB\n"
                         r"    .*test_big.py:\d+ in test_big",
                         proc.stdout), proc.stdout
    text = failure_of(spread, "test_leaks")
    assert "in remember: size=" in text


def test_unittest_case(tmp_path):
    write(tmp_path, {"test_ut.py": """\
        import unittest
        import pytest

        class Case(unittest.TestCase):
            @pytest.mark.limit_memory("1 MB")
            def test_big(self):
                data = bytes(3000000)  # the unittest line
                self.assertTrue(data is not None)

            @pytest.mark.limit_memory("1 MB")
            def test_small(self):
                self.assertEqual(len(bytes(1000)), 1000)
        """})
    proc = run_pytest(tmp_path, "--ctracemalloc")
    assert outcomes(proc) == {"test_ut.py::Case::test_big": "FAILED",
                              "test_ut.py::Case::test_small": "PASSED"}
    text = failure_of(proc, "Case.test_big")
    assert ":%d in Case.test_big: size=" % lineno(
        tmp_path, "test_ut.py", "the unittest line") in text or \
        ":%d in test_big: size=" % lineno(
            tmp_path, "test_ut.py", "the unittest line") in text, text


def test_tests_that_trace_themselves(tmp_path):
    write(tmp_path, {"test_own.py": """\
        import tracemalloc
        import ctracemalloc
        import pytest

        @pytest.mark.limit_memory("1 MB")
        def test_a_stops():
            ctracemalloc.stop()
            data = bytes(3000000)

        def test_b_restarts():
            ctracemalloc.stop()
            ctracemalloc.start(1)

        @pytest.mark.limit_memory("1 MB")
        def test_c_measured_again():
            data = bytes(3000000)

        @pytest.mark.limit_memory("1 MB")
        def test_d_stdlib_tracer():
            tracemalloc.start()
            data = bytes(3000000)
            tracemalloc.stop()
        """})
    proc = run_pytest(tmp_path, "--ctracemalloc")
    assert outcomes(proc) == {"test_own.py::test_a_stops": "PASSED",
                              "test_own.py::test_b_restarts": "PASSED",
                              "test_own.py::test_c_measured_again": "FAILED",
                              "test_own.py::test_d_stdlib_tracer": "FAILED"}
    out = proc.stdout
    assert ("not measured: test_own.py::test_a_stops: the test stopped "
            "tracing; its limit markers were not checked") in out
    assert ("not measured: test_own.py::test_b_restarts: the test "
            "restarted tracing with other options") in out


def test_bad_marker_argument(tmp_path):
    write(tmp_path, {"test_bad.py": """\
        import pytest

        @pytest.mark.limit_memory("12 XB")
        def test_bad():
            pass
        """})
    proc = run_pytest(tmp_path, "--ctracemalloc")
    assert proc.returncode == 4
    assert "ERROR: test_bad.py::test_bad: @pytest.mark.limit_memory: not a " \
           "size: '12 XB'" in proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr
    # without the flag the markers do nothing, bad or not
    assert run_pytest(tmp_path).returncode == 0


def test_bad_marker_argument_xdist(tmp_path):
    pytest.importorskip("xdist")
    write(tmp_path, {"test_bad.py": """\
        import pytest

        @pytest.mark.limit_leaks("1 MB", filter_fn=3)
        def test_bad():
            pass
        """})
    proc = run_pytest(tmp_path, "--ctracemalloc", "-n", "2")
    assert outcomes(proc) == {"test_bad.py::test_bad": "ERROR"}
    assert "test_bad.py::test_bad: @pytest.mark.limit_leaks: filter_fn " \
           "must be callable, not 3" in proc.stdout
    assert "INTERNALERROR" not in proc.stdout + proc.stderr


# pytest-memray's shape, as far as the plugin relies on it: a --memray
# option, and a plugin object named "memray_manager", registered at
# configure, that acts on the markers without the option (this one fails
# each marked test) and cleans up in a pytest_unconfigure hook wrapper.
FAKE_MEMRAY = """\
import pytest

def pytest_addoption(parser):
    parser.addoption("--memray", action="store_true", default=False)

class Manager:
    @pytest.hookimpl(hookwrapper=True)
    def pytest_pyfunc_call(self, pyfuncitem):
        marked = [m for m in pyfuncitem.iter_markers()
                  if m.name in ("limit_memory", "limit_leaks")]
        outcome = yield
        if marked:
            outcome.force_exception(AssertionError("the memray stand-in"))

    @pytest.hookimpl(hookwrapper=True)
    def pytest_unconfigure(self, config):
        yield
        open("cleaned", "w").close()

def pytest_configure(config):
    config.pluginmanager.register(Manager(), "memray_manager")
"""


def test_pytest_memray_steps_aside(tmp_path):
    """With pytest-memray installed, its markers act in every run;
    --ctracemalloc unregisters it (and says so), so that a suite switches
    by the flag alone, and still lets it clean up; --memray with it is a
    usage error."""
    write(tmp_path, {"test_big.py": BIG, "fake_memray.py": FAKE_MEMRAY})
    memray = ["-p", "fake_memray"]
    proc = run_pytest(tmp_path, *memray)
    assert outcomes(proc)["test_big.py::test_small"] == "FAILED"
    assert "the memray stand-in" in proc.stdout
    (tmp_path / "cleaned").unlink()
    proc = run_pytest(tmp_path, "--ctracemalloc", *memray)
    assert outcomes(proc) == {"test_big.py::test_big": "FAILED",
                              "test_big.py::test_small": "PASSED",
                              "test_big.py::test_unmarked": "PASSED"}
    assert "the memray stand-in" not in proc.stdout
    assert "limit_memory('1 MB')" in failure_of(proc, "test_big")
    assert ("ctracemalloc: pytest-memray is installed: its markers' "
            "handling is off for this run") in proc.stdout
    assert (tmp_path / "cleaned").exists()
    proc = run_pytest(tmp_path, "--ctracemalloc", "--memray", *memray)
    assert proc.returncode == 4
    assert ("ERROR: ctracemalloc: --ctracemalloc and pytest-memray's "
            "--memray both trace each test: give one") in proc.stderr


@pytest.mark.parametrize("option, message", [
    (["--ctracemalloc-sample", "12 XB"],
     "ctracemalloc: --ctracemalloc-sample: not a size: '12 XB'"),
    (["--ctracemalloc-nframe", "0"],
     "ctracemalloc: --ctracemalloc-nframe must be from 1 to 65535, not 0"),
])
def test_bad_option(tmp_path, option, message):
    write(tmp_path, {"test_big.py": BIG})
    proc = run_pytest(tmp_path, "--ctracemalloc", *option)
    assert proc.returncode == 4
    assert "ERROR: " + message in proc.stderr
    assert "Traceback" not in proc.stderr


def test_sampling_says_estimates(tmp_path):
    write(tmp_path, {"test_big.py": BIG.replace("range(300)", "range(3000)")})
    proc = run_pytest(tmp_path, "--ctracemalloc", "--ctracemalloc-sample",
                      "64KiB")
    assert outcomes(proc)["test_big.py::test_big"] == "FAILED"
    text = failure_of(proc, "test_big")
    assert "sampled, one sample every 64 KiB allocated on average: sizes " \
           "and counts are estimates" in text
    summary = proc.stdout[proc.stdout.index("highest peaks"):]
    assert "sizes are estimates" in summary


def test_nframe(tmp_path):
    write(tmp_path, {"test_leak.py": LEAK})
    proc = run_pytest(tmp_path, "--ctracemalloc", "--ctracemalloc-nframe",
                      "1")
    text = failure_of(proc, "test_leaks")
    assert text.count('  File "') == 1, text


def installed_entry_point():
    """Whether ctracemalloc's installed metadata names the plugin."""
    from importlib import metadata
    try:
        dist = metadata.distribution("ctracemalloc")
    except metadata.PackageNotFoundError:
        return False
    return any(ep.group == "pytest11"
               and ep.value == "ctracemalloc._pytest_plugin"
               for ep in dist.entry_points)


def test_entry_point(tmp_path):
    """Installed, the package registers the plugin by itself."""
    ctm = require_ctm()
    if not installed_entry_point():
        pytest.skip("ctracemalloc is a build on PYTHONPATH (%s), not an "
                    "installed package: no entry point to test"
                    % os.path.dirname(ctm.__file__))
    write(tmp_path, {"test_big.py": BIG})
    proc = run_pytest(tmp_path, "--ctracemalloc", plugin=[])
    assert outcomes(proc)["test_big.py::test_big"] == "FAILED"
    proc = run_pytest(tmp_path, "--strict-markers", plugin=[])
    assert proc.returncode == 0, proc.stdout


NATIVE = """\
import pytest
from ctracemalloc import _nativeprobe

@pytest.mark.limit_memory("1 MB")
def test_native():
    ptr = _nativeprobe.call("malloc", 0, 3000000)  # the native line
    _nativeprobe.call("free", ptr)
"""


def test_native_option(tmp_path):
    """--ctracemalloc-native counts what extensions take from malloc."""
    write(tmp_path, {"test_native.py": NATIVE})
    plain = run_pytest(tmp_path, "--ctracemalloc")
    assert outcomes(plain) == {"test_native.py::test_native": "PASSED"}
    native = run_pytest(tmp_path, "--ctracemalloc", "--ctracemalloc-native")
    assert outcomes(native) == {"test_native.py::test_native": "FAILED"}
    text = failure_of(native, "test_native")
    assert ":%d in test_native: size=" % lineno(
        tmp_path, "test_native.py", "the native line") in text, text
    assert "native memory too" in native.stdout


def test_already_tracing(tmp_path):
    """Under `ctracemalloc run`, the plugin leaves the run's tracing
    alone, and says so."""
    require_ctm()
    write(tmp_path, {"test_big.py": BIG})
    cmd = ([sys.executable, "-m", "ctracemalloc", "run", "-o",
            str(tmp_path / "run.snapshot"), "-m", "pytest", "-rA",
            "-p", "no:cacheprovider"] + PLUGIN + ["--ctracemalloc"])
    proc = subprocess.run(cmd, cwd=str(tmp_path), env=child_env(),
                          capture_output=True, text=True,
                          timeout=patience(300))
    assert set(outcomes(proc).values()) == {"PASSED"}, proc.stdout
    note = ("ctracemalloc: tracing was already on when pytest started "
            "(startup tracing, or `ctracemalloc run`): the plugin leaves it "
            "alone and measures nothing")
    assert proc.stdout.count(note) == 2     # the header and the end
    assert (tmp_path / "run.snapshot").exists()   # the run's tracing went on
