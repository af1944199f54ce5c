"""The op -> numpy implementation table and the checked call of one node."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from engine.errors import KilnError, KilnShapeError, describe_node

#: op class -> fn(op, *input_arrays) -> array or tuple of arrays
IMPLS: dict[type, Callable] = {}


def implements(*op_classes: type):
    def register(fn: Callable) -> Callable:
        for cls in op_classes:
            IMPLS[cls] = fn
        return fn
    return register


def run_node(node, inputs: list) -> list:
    """Run one node, check its results against the node's types, and name the node on error."""
    try:
        result = IMPLS[type(node.op)](node.op, *inputs)
    except KilnError:
        raise
    except (ValueError, IndexError) as error:
        shapes = ", ".join(f"{np.shape(a)}" for a in inputs)
        raise KilnShapeError(f"{describe_node(node)} failed on input shapes {shapes}: {error}") from error
    results = result if isinstance(result, tuple) else (result,)
    checked = []
    for out, value in zip(node.outputs, results):
        value = np.asarray(value)
        if value.dtype.name != out.type.dtype:
            raise AssertionError(f"numpy backend bug: {describe_node(node)} produced {value.dtype}, "
                                 f"its type says {out.type}")
        if not out.type.accepts_shape(value.shape):
            raise KilnShapeError(f"{describe_node(node)} produced shape {value.shape}, "
                                 f"which does not fit its static type {out.type}")
        checked.append(value)
    return checked


def _load_implementations() -> None:
    from backends.numpy import core_ops, fused_ops, nn_ops  # noqa: F401


_load_implementations()
