"""specialize (fuse=True): gemm with scale, bias, transposes and an activation epilogue;
conv + bias + activation; pooling of an activation. Values: fused vs unfused on numpy."""

from __future__ import annotations

import numpy as np

import engine
import frontends.nn as nn
import frontends.tensor as T
from engine.ops.fused import FusedConv, FusedPool, Gemm
from tests.rewrite.helpers import check, rewrite

SPEC = ["canonicalize", "stabilize", "specialize"]
RNG = np.random.default_rng(0)


def arr(*shape):
    return RNG.standard_normal(shape).astype("float32")


def gemm_of(v):
    assert isinstance(v.owner.op, Gemm), v.owner.op
    return v.owner.op


def test_dot_is_gemm_absorbing_transposes():
    a, b = T.matrix("a"), T.matrix("b")
    (out,) = rewrite(T.dot(a.T, b.T), fuse=True, only=SPEC)
    op = gemm_of(out)
    assert op.trans_a and op.trans_b and op.beta == 0.0
    check([a, b], [T.dot(a.T, b.T)], [arr(3, 2), arr(4, 3)], fuse=True, only=SPEC)


def mat(name, *shape):
    return T.tensor("float32", shape, name)


def test_gemm_scale_bias_and_epilogue():
    x, W, b = mat("x", None, 3), mat("W", 3, 4), mat("b", 4)
    y = T.tanh(2.0 * T.dot(x, W) + b)
    (out,) = rewrite(y, fuse=True, only=SPEC)
    op = gemm_of(out)
    assert (op.alpha, op.beta, op.epilogue) == (2.0, 1.0, ("tanh",))
    assert check([x, W, b], [y], [arr(5, 3), arr(3, 4), arr(4)], fuse=True, only=SPEC, rtol=0, atol=0) == [str(op)]


def test_sgd_update_is_one_gemm():
    x, g = mat("x", 5, 3), mat("g", 5, 4)
    W = engine.shared(arr(3, 4), name="W")
    new_W = W - 0.1 * T.dot(x.T, g)
    (out,) = rewrite(new_W, fuse=True, only=SPEC)
    op = gemm_of(out)
    assert op.alpha == np.float32(-0.1) and op.beta == 1.0 and op.trans_a
    check([x, g], [new_W], [arr(5, 3), arr(5, 4)], fuse=True, only=SPEC, rtol=0, atol=0)


def test_gemm_minus_c_and_transposed_product():
    a, b, c = mat("a", 2, 3), mat("b", 3, 4), mat("c", 2, 4)
    (out,) = rewrite(T.dot(a, b) - c, fuse=True, only=SPEC)
    assert gemm_of(out).beta == -1.0
    check([a, b, c], [T.dot(a, b) - c], [arr(2, 3), arr(3, 4), arr(2, 4)], fuse=True, only=SPEC, rtol=0, atol=0)
    (out,) = rewrite(T.dot(a, b).T, fuse=True, only=SPEC)  # (ab)^T = b^T a^T: no transpose kernel
    op = gemm_of(out)
    assert op.trans_a and op.trans_b and out.owner.inputs[0] is b
    check([a, b], [T.dot(a, b).T], [arr(2, 3), arr(3, 4)], fuse=True, only=SPEC)


def test_gemm_keeps_a_preactivation_that_is_also_used():
    x, W = T.matrix("x"), T.matrix("W")
    z = T.dot(x, W)
    (out, pre) = rewrite([T.tanh(z), z * 3.0], fuse=True, only=SPEC)
    assert out.owner.op.scalar_op == "tanh"  # z is read twice: no epilogue
    check([x, W], [T.tanh(z), z * 3.0], [arr(2, 3), arr(3, 4)], fuse=True, only=SPEC)


def test_conv_bias_activation():
    x, W, b = T.tensor4("x"), mat("W", 4, 3, 3, 3), mat("b", 4)
    y = T.relu(nn.conv2d(x, W) + b.dimshuffle("x", 0, "x", "x"))
    (out,) = rewrite(y, fuse=True, only=SPEC)
    assert isinstance(out.owner.op, FusedConv) and out.owner.op.has_bias and out.owner.op.epilogue == ("relu",)
    check([x, W, b], [y], [arr(2, 3, 6, 6), arr(4, 3, 3, 3), arr(4)], fuse=True, only=SPEC, rtol=0, atol=0)


def test_pool_of_activation():
    x = T.tensor4("x")
    y = nn.pool2d(T.tanh(x), ws=(2, 2), mode="max")
    (out,) = rewrite(y, fuse=True, only=SPEC)
    assert isinstance(out.owner.op, FusedPool) and out.owner.op.prologue == ("tanh",)
    check([x], [y], [arr(2, 3, 4, 4)], fuse=True, only=SPEC, rtol=0, atol=0)


def test_numpy_backend_does_not_specialize():
    x, W = T.matrix("x"), T.matrix("W")
    f = engine.function([x, W], T.tanh(T.dot(x, W)), backend="numpy")
    assert [type(n.op).__name__ for n in engine.graph.toposort(f.fgraph.outputs)] == ["MatMul", "Elemwise"]


def test_binomial_of_a_gemm_product_is_one_gemm_bernoulli_node():
    """binomial(size=p.shape, p=sigmoid(x @ W + b)): one GemmBernoulli node gives p, the new
    state and the samples (the same values on numpy); not for a product the CPU kernel runs
    transposed (x @ W.T), a size that is not p's shape, or another distribution."""
    from engine.graph import toposort
    from engine.ops.fused import GemmBernoulli

    x, W, Wt, b = mat("x", None, 3), mat("W", 3, 8), mat("Wt", 8, 3), mat("b", 8)

    def sampled(prod, size=None, dist="binomial"):
        srng = engine.RandomStreams(seed=4)
        p = T.sigmoid(prod + b)
        size = p.shape if size is None else size
        s = srng.binomial(size=size, p=p) if dist == "binomial" else srng.normal(size=size, avg=p)
        return p, s
    SPEC_B = SPEC + ["gemm_bernoulli"]
    p, s = sampled(T.dot(x, W))
    outs = rewrite([p, s], fuse=True, only=SPEC_B)
    assert isinstance(outs[1].owner.op, GemmBernoulli) and outs[0].owner is outs[1].owner
    assert outs[0].owner.op.gemm.epilogue == ("sigmoid",)
    check([x, W, b], [p, s], [arr(5, 3), arr(3, 8), arr(8)], fuse=True, only=SPEC_B, rtol=0, atol=0)
    for p, s in (sampled(T.dot(x, Wt.T)), sampled(T.dot(x, W), size=(x.shape[0], 8)),
                 sampled(T.dot(x, W), dist="normal")):
        outs = rewrite([p, s], fuse=True, only=SPEC_B)
        assert not any(isinstance(n.op, GemmBernoulli) for n in toposort(outs))
