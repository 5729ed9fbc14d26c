"""The loader's libFuzzer target (tests/fuzz/), built and run for a bounded
time: every mutation of the seed files (snapshot files and the stdlib's
pickles) must raise ValueError or load a snapshot that keeps every
invariant and round-trips; a crash, a sanitizer report or a leak of an
invariant aborts the run and fails the test.

Needs clang with compiler-rt (Debian: apt-get install clang
libclang-rt-14-dev); CTM_FUZZ_SECONDS sets the time (default 15)."""
import os
import re
import shutil
import subprocess
import sys
import sysconfig

import pytest

from tmhelpers import patience

pytestmark = pytest.mark.ctm_only

HERE = os.path.dirname(os.path.abspath(__file__))
FUZZ = os.path.join(HERE, "fuzz")


def base_python():
    """The interpreter this venv was made from: it has python3-config and
    libpython, which the target embeds."""
    name = "python%d.%d" % sys.version_info[:2]
    for candidate in (os.path.join(sys.base_prefix, "bin", name),
                      os.path.join(sys.base_prefix, "bin", "python3")):
        if os.path.exists(candidate):
            return candidate
    return None


def test_fuzz_the_loader(tmp_path):
    if "asan" in os.environ.get("LD_PRELOAD", ""):
        pytest.skip("the sanitizer run: the target carries its own "
                    "sanitizers, and runs in the plain test run")
    if shutil.which("clang") is None:
        pytest.skip("clang is not installed (apt-get install clang "
                    "libclang-rt-14-dev): the libFuzzer target cannot be "
                    "built")
    if not sysconfig.get_config_var("Py_ENABLE_SHARED"):
        pytest.skip("this Python has no shared libpython to embed")
    py = base_python()
    assert py is not None, "no base interpreter under %s" % sys.base_prefix
    target = tmp_path / "fuzz_load"
    build = subprocess.run(["bash", os.path.join(FUZZ, "build.sh"),
                            str(target), py], capture_output=True, text=True,
                           timeout=patience(600))
    if build.returncode != 0 and "libclang_rt.fuzzer" in build.stderr:
        pytest.skip("clang has no libFuzzer runtime (apt-get install "
                    "libclang-rt-14-dev)")
    assert build.returncode == 0, build.stderr[-3000:]
    corpus = tmp_path / "corpus"
    subprocess.run([sys.executable, os.path.join(FUZZ, "make_corpus.py"),
                    str(corpus)], check=True, timeout=patience(300))
    seconds = int(os.environ.get("CTM_FUZZ_SECONDS", "15"))
    env = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD"}
    env["ASAN_OPTIONS"] = "detect_leaks=0"
    env["PYTHONHOME"] = sys.base_prefix
    proc = subprocess.run(
        [str(target), "-max_total_time=%d" % seconds,
         "-dict=" + os.path.join(FUZZ, "snapshot.dict"), "-rss_limit_mb=2048",
         str(corpus)], cwd=tmp_path, env=env, capture_output=True,
        text=True, timeout=seconds + patience(300))
    runs = re.search(r"Done (\d+) runs in (\d+) second", proc.stderr)
    assert proc.returncode == 0 and runs, proc.stderr[-4000:]
    executions = int(runs.group(1))
    print("fuzzed the loader: %d executions in %s s" % (executions,
                                                        runs.group(2)))
    assert executions > 1000
