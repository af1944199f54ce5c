"""The op table: one ``OpRow`` per op (or per op configuration), collected from the modules of
this package. ``tests/test_ops.py`` runs every row on every backend: forward against the row's
plain-numpy reference, and ``verify_grad`` (finite differences) for differentiable rows.

A row's ``build`` takes symbolic inputs and returns a symbolic output; ``reference`` takes the
same inputs as numpy arrays and returns the expected array, written independently of Kiln;
``make_inputs(rng, dtype)`` returns the input arrays.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np


@dataclass
class OpRow:
    name: str
    build: Callable
    reference: Callable
    make_inputs: Callable[[np.random.Generator, str], list]
    #: verify_grad with respect to the float inputs
    grad: bool = True
    dtypes: tuple = ("float32", "float64")
    rtol: float | None = None
    atol: float | None = None
    #: positions of inputs verify_grad must hold fixed (integer labels, indices...)
    grad_tolerance: dict = field(default_factory=dict)
    #: backends on which the row is known not to run yet, with the reason
    skip: dict = field(default_factory=dict)

    def tolerance(self, dtype: str) -> tuple[float, float]:
        default = (1e-4, 1e-5) if dtype == "float32" else (1e-9, 1e-11)
        return (self.rtol or default[0], self.atol or default[1])


def all_rows() -> list[OpRow]:
    rows: list[OpRow] = []
    for module in pkgutil.iter_modules(__path__):
        rows.extend(importlib.import_module(f"{__name__}.{module.name}").ROWS)
    names = [r.name for r in rows]
    duplicated = {n for n in names if names.count(n) > 1}
    assert not duplicated, f"duplicate op table rows: {duplicated}"
    return rows
