"""specialize: an update ``w - s * (a1 @ b1 + a0 @ b0)`` (the RBM's CD-1 weight step, the tied
autoencoder's weight gradient) becomes one Gemm accumulating into w (beta = 1, c = w) over the
joined K axes, or a chain of Gemms adding into w when the terms' transposes differ: no (M, N)
sum of products and no separate update pass. Values: numpy, before vs after the rewrite."""

from __future__ import annotations

import numpy as np

import engine
import frontends.tensor as T
from engine.ops.fused import Gemm
from engine.ops.shape import Join
from tests.rewrite.helpers import check, rewrite

SPEC = ["canonicalize", "stabilize", "specialize"]
RNG = np.random.default_rng(3)


def arr(*shape):
    return RNG.standard_normal(shape).astype("float32")


def mat(name, *shape):
    return T.tensor("float32", shape, name)


def gemm_chain(v):
    """The Gemm ops from v down through their c inputs, outermost first, and the base c."""
    ops = []
    while v.owner is not None and isinstance(v.owner.op, Gemm):
        ops.append(v.owner.op)
        if v.owner.op.beta == 0.0:
            break
        v = v.owner.inputs[2]
    return ops, v


def joined_axes(v):
    a, b = v.owner.inputs[:2]
    assert isinstance(a.owner.op, Join) and isinstance(b.owner.op, Join)
    return a.owner.op.axis, b.owner.op.axis


def test_cd1_weight_step_is_one_gemm_into_the_shared_weight():
    x, h, v, h1 = mat("x", 5, 3), mat("h", 5, 4), mat("v", 5, 3), mat("h1", 5, 4)
    W = engine.shared(arr(3, 4), name="W")
    new_W = W - 0.1 * (T.dot(x.T, h) - T.dot(v.T, h1))
    (out,) = rewrite(new_W, fuse=True, only=SPEC)
    ops, base = gemm_chain(out)
    assert len(ops) == 1 and base is W, (ops, base)
    op = ops[0]
    assert op.beta == 1.0 and op.trans_a and not op.trans_b and abs(op.alpha) == float(np.float32(0.1))
    assert joined_axes(out) == (0, 0)
    check([x, h, v, h1], [new_W], [arr(5, 3), arr(5, 4), arr(5, 3), arr(5, 4)], fuse=True, only=SPEC)


def test_scale_reaches_each_product():
    a = [mat(f"a{i}", 2, 3) for i in range(2)]
    b = [mat(f"b{i}", 3, 4) for i in range(2)]
    w = mat("w", 2, 4)
    y = w - 0.5 * (T.dot(a[0], b[0]) + 2.0 * T.dot(a[1], b[1]))
    (out,) = rewrite(y, fuse=True, only=SPEC)
    ops, base = gemm_chain(out)
    assert len(ops) == 1 and base is w and ops[0].alpha in (-0.5, -1.0)
    assert joined_axes(out) == (1, 0)
    check(a + b + [w], [y], [arr(2, 3) for _ in a] + [arr(3, 4) for _ in b] + [arr(2, 4)], fuse=True, only=SPEC)


def test_c_minus_sum_of_products_and_broadcast_base():
    a, b, a1, b1 = mat("a", 2, 3), mat("b", 3, 4), mat("a1", 2, 3), mat("b1", 3, 4)
    bias = mat("bias", 4)
    y = bias - (T.dot(a, b) + T.dot(a1, b1))
    (out,) = rewrite(y, fuse=True, only=SPEC)
    ops, base = gemm_chain(out)
    assert len(ops) == 1 and base is bias and ops[0].alpha == -1.0
    check([a, b, a1, b1, bias], [y], [arr(2, 3), arr(3, 4), arr(2, 3), arr(3, 4), arr(4)], fuse=True, only=SPEC)


def test_terms_of_different_transposes_chain_into_w():
    a, b, a1, b1 = mat("a", 3, 2), mat("b", 3, 4), mat("a1", 2, 3), mat("b1", 3, 4)
    w = mat("w", 2, 4)
    y = w - 0.1 * (T.dot(a.T, b) + T.dot(a1, b1))
    (out,) = rewrite(y, fuse=True, only=SPEC)
    ops, base = gemm_chain(out)
    assert len(ops) == 2 and base is w and all(op.beta == 1.0 for op in ops)
    assert sorted(op.trans_a for op in ops) == [False, True]
    check([a, b, a1, b1, w], [y], [arr(3, 2), arr(3, 4), arr(2, 3), arr(3, 4), arr(2, 4)], fuse=True, only=SPEC)


def test_shared_sum_or_epilogue_is_not_folded():
    a, b, a1, b1, w = mat("a", 2, 3), mat("b", 3, 4), mat("a1", 2, 3), mat("b1", 3, 4), mat("w", 2, 4)
    s = T.dot(a, b) + T.dot(a1, b1)
    y = w - 0.1 * s
    outs = rewrite([y, s], fuse=True, only=SPEC)   # s has a second client: stays one sum
    ops, base = gemm_chain(outs[1])
    assert len(ops) == 2 and base is not w
    t = w - 0.1 * T.tanh(T.dot(a, b) + T.dot(a1, b1))
    (out,) = rewrite(t, fuse=True, only=SPEC)
    assert not (out.owner is not None and isinstance(out.owner.op, Gemm) and out.owner.inputs[2] is w)
    vals = [arr(2, 3), arr(3, 4), arr(2, 3), arr(3, 4), arr(2, 4)]
    check([a, b, a1, b1, w], [y, s, t], vals, fuse=True, only=SPEC)


def test_product_with_a_constant_column_is_a_sum():
    """``a.T @ alloc(v, K, 1)`` (a batch mean's gradient) becomes ``v * sum(a, 0)``."""
    a, a2 = mat("a", 5, 3), mat("a2", 3, 5)
    n = T.iscalar("n")
    v = T.tensor("float32", (1, 1), "v")
    ones = T.alloc(v, n, 1)
    y, y2 = T.dot(a.T, ones), 2.0 * T.dot(a2, ones)
    outs = rewrite([y, y2], fuse=True, only=SPEC)
    assert not any(isinstance(node.op, Gemm) for node in _nodes(outs))
    check([a, a2, v, n], [y, y2], [arr(5, 3), arr(3, 5), arr(1, 1), np.int32(5)], fuse=True, only=SPEC)


def _nodes(outs):
    from engine.graph import toposort

    return toposort(list(outs))
