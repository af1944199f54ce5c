"""Smoke tests: every example's ``--quick`` run (digits, a few epochs) on the numpy backend, in a
subprocess; asserts a clean exit and the figures it promises. No timing assertions."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# script -> (modules it needs, files it must write into --out, text its output must contain)
EXAMPLES = {
    "logistic_regression": (("frontends.nn",), (), "test error"),
    "mlp": (("frontends.nn", "matplotlib"), ("mlp_curves.png",), "test error"),
    "lenet": (("frontends.nn", "matplotlib"), ("lenet_learning_curves.png",), "test error"),
    "rbm": (("PIL",), ("filters_at_epoch_0.png", "samples.png"), "cost is"),
    "dae": (("PIL",), ("filters_corruption_0.png", "filters_corruption_30.png"), "cost"),
    "sda": (("frontends.nn",), (), "test error"),
    "dbn": (("frontends.nn",), (), "test error"),
    "lcn_pipeline": (("frontends.nn", "PIL", "sklearn"), ("maps0_before_lcn.png", "maps0_after_lcn.png"),
                     "before LCN"),
    "crbm": (("frontends.nn", "PIL", "sklearn"), ("crbm_bases.png", "whitened_patches.png"), "reconstruction"),
}


def _missing(modules: tuple) -> list[str]:
    return [m for m in modules if importlib.util.find_spec(m) is None]


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_example_quick(name, tmp_path):
    needs, files, text = EXAMPLES[name]
    missing = _missing(needs)
    if missing:
        pytest.skip(f"{name} needs {', '.join(missing)}")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    out = tmp_path / "figures"
    proc = subprocess.run([sys.executable, str(ROOT / "examples" / f"{name}.py"), "--quick", "--backend", "numpy",
                           "--out", str(out)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"{name} --quick failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    assert text in proc.stdout, proc.stdout[-2000:]
    for f in files:
        assert (out / f).is_file(), f"{name} did not write {f}; wrote {sorted(p.name for p in out.iterdir())}"


def test_reproduce_writes_a_result_record(tmp_path):
    """``examples/reproduce.py`` runs an experiment and keeps its command, wall time and history."""
    import json

    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    proc = subprocess.run([sys.executable, str(ROOT / "examples" / "reproduce.py"), "--backend", "numpy",
                           "--out", str(tmp_path), "--only", "logistic", "--set", "logistic=--quick --epochs 3"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    record = json.loads((tmp_path / "logistic" / "result.json").read_text())
    assert record["command"].endswith("--quick --epochs 3") and record["backend"] == "numpy"
    history = record["result"]["history"]
    assert len(history["epoch"]) == len(history["test_error"]) == len(history["seconds"]) == record["result"]["epochs"]
    assert history["seconds"] == sorted(history["seconds"]) and record["wall_s"] >= history["seconds"][-1]
