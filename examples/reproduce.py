"""Run the DeepLearningTutorials' experiments on Kiln and keep what each run measured.

    python examples/reproduce.py --backend llvm                  # every experiment, in order
    python examples/reproduce.py --only lenet --only mlp         # some of them
    python examples/reproduce.py --only mlp --set 'mlp=--epochs 200'  # change a setting (say so in RESULTS.md)

Each experiment runs the example script's ``main`` with the tutorials' hyper-parameters (the
scripts' defaults) and writes ``<out>/<name>/result.json``: the exact command, the backend, the
thread count, the wall time and whatever the script returned (errors, per-epoch history, cost
curves). Figures land next to it. RESULTS.md is written from these files.
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
import os
import shlex
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

# name -> (example module, the tutorial's reported figure)
EXPERIMENTS: dict[str, tuple[str, str]] = {
    "logistic": ("examples.logistic_regression", "7.489 % test error"),
    "lenet": ("examples.lenet", "0.92 % test error"),
    "rbm": ("examples.rbm", "PCD-15 cost -90.65 -> -62.76 over 15 epochs"),
    "dae": ("examples.dae", "filters at 0 % and 30 % corruption"),
    "mlp": ("examples.mlp", "1.65 % test error"),
    "sda": ("examples.sda", "1.3 % test error"),
    "dbn": ("examples.dbn", "1.34 % test error"),
    "crbm": ("examples.crbm", "edge-like bases"),
}


def _jsonable(value: object) -> object:
    """Results hold numpy scalars, float dict keys and infinities: make them plain JSON."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if hasattr(value, "tolist"):
        return _jsonable(value.tolist())
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


def run_one(name: str, backend: str, out: Path, extra: list[str]) -> dict:
    module_name, reference = EXPERIMENTS[name]
    folder = out / name
    folder.mkdir(parents=True, exist_ok=True)
    argv = ["--backend", backend, "--out", str(folder), *extra]
    command = f"python {module_name.replace('.', '/')}.py {shlex.join(argv)}"
    print(f"== {name}: {command}", flush=True)
    module = importlib.import_module(module_name)
    start = time.perf_counter()
    result = module.main(argv)
    record = {"name": name, "command": command, "backend": backend, "tutorial": reference,
              "threads": os.environ.get("KILN_NUM_THREADS", str(os.cpu_count())),
              "wall_s": time.perf_counter() - start, "result": _jsonable(result)}
    (folder / "result.json").write_text(json.dumps(record, indent=1))
    print(f"== {name}: {record['wall_s']:.0f} s, wrote {folder / 'result.json'}", flush=True)
    return record


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", default="llvm")
    parser.add_argument("--out", default="out/results")
    parser.add_argument("--only", action="append", choices=sorted(EXPERIMENTS), help="repeatable")
    parser.add_argument("--set", action="append", default=[], metavar="NAME=ARGS",
                        help="extra arguments for one experiment, e.g. 'sda=--batch-size 20'")
    args = parser.parse_args(argv)
    extras: dict[str, list[str]] = {}
    for item in args.set:
        name, _, rest = item.partition("=")
        extras.setdefault(name, []).extend(shlex.split(rest))
    for name in args.only or list(EXPERIMENTS):
        run_one(name, args.backend, Path(args.out), extras.get(name, []))


if __name__ == "__main__":
    main()
