"""Lowering: graph ops -> loop-level kernel IR (engine/kernel_ir.py).

One table, ``LOWERINGS``, maps an op class to a rule ``rule(node) -> Lowered``. Rules are
backend-free: they describe *what* a node computes as kernels over ``BufferParam``s whose
shapes and strides are runtime arguments; loop transforms per target (vectorize, parallel,
GPU binding) are applied afterwards by the backend.

A ``Lowered`` says how to run one node:

* ``kernels``: the kernels it needs (usually one; a multi-pass op such as LCN may use more).
* ``steps``: launches in order; each is ``Step(kernel_name, args)`` where an arg is
  ``In(i)`` (the node's i-th input), ``Out(i)``, ``Tmp(i)`` (a scratch buffer from ``temps``)
  or ``HostScalar(fn)`` (a scalar computed on the host from the input arrays: e.g. a
  reshape's size or a random variable's counter start).
* ``output_shapes(inputs) -> [shape, ...]``: the run-time output shapes, from the input
  arrays (only small host-side values such as sizes are read).
* ``temps``: ``[(dtype, shape_fn(inputs) -> shape), ...]``.
* ``view``: for ops that compute nothing (DimShuffle, a contiguous Reshape, Shape, ...): a
  function from input arrays to the output array (a strided view or a tiny host value);
  such nodes launch no kernel.

Kernel parameter convention: a kernel's BufferParams are named after their role (``x``,
``w``, ``out``...); ``Step.args`` lists, in the kernel's parameter order, what to bind.
Kernel names are readable and unique per configuration (``conv2d_fwd_s1_p0``,
``E_tanh_add_f32``): the name plus the IR listing is the cache key.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from engine.errors import KilnError
from engine.kernel_ir import Kernel


@dataclass(frozen=True)
class In:
    index: int


@dataclass(frozen=True)
class Out:
    index: int


@dataclass(frozen=True)
class Tmp:
    index: int


@dataclass(frozen=True)
class HostScalar:
    fn: Callable[[list[np.ndarray]], object]
    dtype: str = "int64"


@dataclass
class Step:
    kernel: str
    args: tuple


@dataclass
class Lowered:
    kernels: list[Kernel] = field(default_factory=list)
    steps: list[Step] = field(default_factory=list)
    output_shapes: Callable[[list[np.ndarray]], list[tuple]] | None = None
    temps: list[tuple[str, Callable[[list[np.ndarray]], tuple]]] = field(default_factory=list)
    view: Callable[[list[np.ndarray]], np.ndarray | tuple] | None = None


class LoweringError(KilnError, NotImplementedError):
    """An op has no lowering (for this configuration)."""


LOWERINGS: dict[type, Callable] = {}


def lowering(*op_classes: type):
    """Register ``rule(node) -> Lowered`` for ``op_classes``."""
    def register(rule: Callable) -> Callable:
        for cls in op_classes:
            LOWERINGS[cls] = rule
        return rule
    return register


def lower(node) -> Lowered:
    _load_rules()
    rule = LOWERINGS.get(type(node.op))
    if rule is None:
        raise LoweringError(f"no kernel lowering for {node.op} (node created at {node.site})")
    return rule(node)


def has_lowering(node) -> bool:
    _load_rules()
    return type(node.op) in LOWERINGS


def _load_rules() -> None:
    import importlib

    for module in ("engine.lowering.core", "engine.lowering.nn", "engine.lowering.fused"):
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as error:
            if error.name != module:
                raise
