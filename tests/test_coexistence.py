"""ctracemalloc and the stdlib tracer together, in both start orders and
both stop orders, with allocations between the steps. Each run is a
subprocess (tests/helpers/coexist.py): a crash must not take the suite
down."""
import os
import subprocess
import sys

import pytest

from tmhelpers import child_env, patience

pytestmark = pytest.mark.ctm_only

SCRIPT = os.path.join(os.path.dirname(__file__), "helpers", "coexist.py")
ORDERS = ["stdlib,ctm", "ctm,stdlib"]


def run(*args):
    proc = subprocess.run([sys.executable, SCRIPT] + list(args),
                          env=child_env(), capture_output=True,
                          text=True, timeout=patience(120))
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output
    assert output.strip().endswith("ok"), output


@pytest.mark.parametrize("stop_order", ORDERS)
@pytest.mark.parametrize("start_order", ORDERS)
def test_both_tracers(ctm, start_order, stop_order):
    run(start_order, stop_order)


@pytest.mark.parametrize("stop_order", ORDERS)
def test_stdlib_started_before_import(ctm, stop_order):
    run("stdlib,ctm", stop_order, "--early")


@pytest.mark.parametrize("stop_order", ORDERS)
@pytest.mark.parametrize("start_order", ORDERS)
def test_stdlib_functions_bound_before_import(ctm,
                                              start_order, stop_order):
    # ctracemalloc cannot see these calls: it must still never crash,
    # never trace wrongly, and leave the allocators as they were.
    run(start_order, stop_order, "--unwrapped")
