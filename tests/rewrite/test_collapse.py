"""collapse (fuse=True): elementwise ops and sums over feature maps with short rows run over
their trailing axes merged (12x12 -> 144), through Reshape views; values equal the numpy
oracle's and the LLVM backend's on the original graph."""

from __future__ import annotations

import numpy as np

import engine
import frontends.tensor as T
from engine.graph import toposort
from engine.ops.fused import FusedElemwise
from engine.ops.reduce import Reduce
from engine.rewrite import rewrite_outputs

RNG = np.random.default_rng(0)


def _maps():
    x = T.tensor("float32", (None, 20, 12, 12), "x")
    b = T.tensor("float32", (20,), "b")
    return x, b


def _nodes(outputs, cls):
    return [n for n in toposort(outputs) if isinstance(n.op, cls)]


def test_bias_and_activation_run_over_merged_rows():
    x, b = _maps()
    out = T.tanh(x + b.dimshuffle("x", 0, "x", "x"))
    (new,) = rewrite_outputs([out], fuse=True)
    (node,) = _nodes([new], FusedElemwise)
    assert node.outputs[0].type.shape == (None, 20, 144)
    assert new.type.shape == (None, 20, 12, 12)


def test_sum_over_batch_and_map_merges_the_map_axes():
    x, _ = _maps()
    (new,) = rewrite_outputs([x.sum(axis=(0, 2, 3))], fuse=True)
    (node,) = _nodes([new], Reduce)
    assert node.op.axes == (0, 2) and node.inputs[0].type.shape == (None, 20, 144)


def test_mixed_broadcast_and_long_rows_are_left_alone():
    x = T.tensor("float32", (None, 20, 12, 12), "x")
    row = T.tensor("float32", (1, 1, 1, 12), "r")            # broadcast on 12x1, full on 1x12
    wide = T.tensor("float32", (None, 4, 3, 80), "w")        # a row that already vectorizes
    (a, c) = rewrite_outputs([T.tanh(x * row), T.tanh(wide)], fuse=True)
    assert all(n.outputs[0].ndim == 4 for n in _nodes([a, c], FusedElemwise) + _nodes([a, c], Reduce))
    assert not any(type(n.op).__name__ == "Reshape" for n in toposort([a, c]))


def test_values_match_the_oracle():
    x, b = _maps()
    h = T.tanh(x + b.dimshuffle("x", 0, "x", "x"))
    outs = [h, (h * h).sum(axis=(0, 2, 3)), h.sum(axis=(0, 2, 3))]
    xv = RNG.standard_normal((3, 20, 12, 12)).astype("float32")
    bv = RNG.standard_normal(20).astype("float32")
    want = engine.function([x, b], outs, backend="numpy")(xv, bv)
    got = engine.function([x, b], outs, backend="llvm")(xv, bv)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-5)
