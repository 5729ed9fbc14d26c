"""The core's assertions (CTM_ASSERT in util.h) run in the builds the suite
uses: the test build (scripts/test), the sanitizer build (scripts/sanitize)
and the debug build define CTM_DEBUG.

scripts/test and scripts/sanitize set CTM_EXPECT_ASSERTIONS=1, so there
the installed extension must carry them; a plain `pytest` against a
release install checks only the mechanism.
"""
import os
import shutil
import signal
import subprocess
import sys
import sysconfig

import pytest

from tmhelpers import ctracemalloc, require_ctm

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CORE = os.path.join(ROOT, "src", "ctracemalloc", "_core")

pytestmark = pytest.mark.ctm_only


def extension_path():
    require_ctm()
    return ctracemalloc._ctracemalloc.__file__


def test_the_installed_extension_checks_its_invariants():
    if os.environ.get("CTM_EXPECT_ASSERTIONS") != "1":
        pytest.skip("only where the suite's own build is installed "
                    "(scripts/test, scripts/sanitize set "
                    "CTM_EXPECT_ASSERTIONS=1)")
    if shutil.which("nm") is None:
        pytest.fail("nm is needed to read the extension's symbols")
    out = subprocess.run(["nm", extension_path()], check=True,
                         capture_output=True, text=True).stdout
    assert "ctm_assert_failed" in out


@pytest.mark.skipif(sys.platform != "linux", reason="gcc and POSIX signals")
def test_a_false_assertion_stops_the_process_and_says_where(tmp_path):
    cc = sysconfig.get_config_var("CC").split()[0]
    src = tmp_path / "assert_fails.c"
    src.write_text(
        '#include "util.h"\n'
        "int main(void) {\n"
        "    int traced = 1;\n"
        "    CTM_ASSERT(traced == 1);\n"
        "    CTM_ASSERT(traced >= 2);\n"
        "    return 0;\n"
        "}\n")
    exe = tmp_path / "assert_fails"
    subprocess.run(
        [cc, "-std=c11", "-DCTM_DEBUG=1", "-I" + CORE,
         "-I" + sysconfig.get_paths()["include"], str(src),
         os.path.join(CORE, "mem.c"), "-o", str(exe)],
        check=True, capture_output=True)
    run = subprocess.run([str(exe)], capture_output=True, text=True)
    assert run.returncode == -signal.SIGABRT
    assert run.stderr == (
        "ctracemalloc: %s:5: assertion failed: traced >= 2\n" % src)
    # and without CTM_DEBUG the same program runs through
    subprocess.run(
        [cc, "-std=c11", "-I" + CORE,
         "-I" + sysconfig.get_paths()["include"], str(src),
         os.path.join(CORE, "mem.c"), "-o", str(exe)],
        check=True, capture_output=True)
    assert subprocess.run([str(exe)]).returncode == 0
