"""Smoke test of benchmarks/run.py --quick: every row prints (n/a where an engine cannot run
it), nothing crashes. No assertions on time."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_benchmarks_quick_runs():
    pytest.importorskip("llvmlite")
    env = dict(os.environ, KILN_NUM_THREADS="2")
    p = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "run.py"), "--quick", "--no-compile-row",
                        "--only", "sgemm", "--only", "overhead", "--only", "maxpool 2x2"],
                       capture_output=True, text=True, timeout=300, env=env, cwd=ROOT)
    assert p.returncode == 0, p.stderr[-3000:]
    out = p.stdout
    assert "workload" in out and "ratio" in out
    for row in ("sgemm 256x256x256", "sgemm 20x784x500", "call overhead", "maxpool 2x2/2"):
        assert row in out, out
    assert "Traceback" not in p.stderr
