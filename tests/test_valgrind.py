"""valgrind's memcheck on every part of ctracemalloc
(helpers/valgrind_workload.py), with PYTHONMALLOC=malloc so that every
block is valgrind's to check: no error, and no block definitely lost,
whose stack or origin is in ctracemalloc. (CPython itself has a few
reports of its own, about uninitialised digits of ints on some versions:
they are not ours, and the test reads each report to tell.)"""
import os
import shutil
import subprocess
import sys

import pytest

from tmhelpers import child_env, memcheck_reports, patience

pytestmark = pytest.mark.ctm_only

WORKLOAD = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                        "helpers", "valgrind_workload.py")


def test_memcheck(tmp_path):
    if "asan" in os.environ.get("LD_PRELOAD", ""):
        pytest.skip("the sanitizer run: valgrind and ASan do not mix")
    valgrind = shutil.which("valgrind")
    if valgrind is None:
        pytest.skip("valgrind is not installed")
    env = child_env()
    env["PYTHONMALLOC"] = "malloc"
    log = tmp_path / "valgrind.log"
    proc = subprocess.run(
        [valgrind, "--tool=memcheck", "--track-origins=yes",
         "--leak-check=full", "--show-leak-kinds=definite",
         "--num-callers=40", "--log-file=%s" % log,
         sys.executable, WORKLOAD, str(tmp_path)],
        env=env, capture_output=True, text=True, timeout=patience(900))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout == "ok\n"
    text = log.read_text()
    assert "ERROR SUMMARY" in text
    _, ours = memcheck_reports(text)
    assert not ours, "\n\n".join(ours[:3])
