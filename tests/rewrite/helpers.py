"""Helpers of the optimizer tests: rewrite a graph, describe it, run it on the numpy oracle."""

from __future__ import annotations

import numpy as np

import engine
from engine.graph import toposort
from engine.ops.elemwise import Elemwise
from engine.ops.fused import FusedElemwise, FusedReduce, Gemm
from engine.rewrite import rewrite_outputs


def as_list(outputs) -> list:
    return list(outputs) if isinstance(outputs, (list, tuple)) else [outputs]


def rewrite(outputs, fuse: bool = False, only=None) -> list:
    return rewrite_outputs(as_list(outputs), fuse=fuse, only=only)


def describe(outputs) -> list[str]:
    """One short name per node in graph order: the scalar op for Elemwise, else the op class."""
    names = []
    for node in toposort(as_list(outputs)):
        op = node.op
        if isinstance(op, Elemwise):
            names.append(op.scalar_op if op.scalar_op != "cast" else f"cast->{op.cast_to}")
        elif isinstance(op, (FusedElemwise, FusedReduce, Gemm)):
            names.append(str(op))
        else:
            names.append(type(op).__name__)
    return names


def run(inputs, outputs, values):
    """The outputs computed op by op (no optimization) on the numpy oracle."""
    f = engine.function(list(inputs), as_list(outputs), backend="numpy", optimizer=None, on_unused_input="ignore",
                        no_default_updates=True)
    return f(*values)


def same_values(inputs, before, after, values, rtol=1e-5, atol=1e-6):
    for a, b in zip(run(inputs, before, values), run(inputs, after, values)):
        assert a.shape == b.shape and a.dtype == b.dtype, (a.shape, b.shape, a.dtype, b.dtype)
        np.testing.assert_allclose(b, a, rtol=rtol, atol=atol)


def check(inputs, outputs, values, fuse=False, only=None, rtol=1e-5, atol=1e-6) -> list[str]:
    """Rewrite, compare with the unrewritten graph on numpy, and return the new graph's ops."""
    new = rewrite(outputs, fuse, only)
    same_values(inputs, as_list(outputs), new, values, rtol, atol)
    return describe(new)
