"""canonicalize: each rule's graph after rewriting, and its values before vs after (numpy)."""

from __future__ import annotations

import numpy as np
import pytest

import engine
import frontends.tensor as T
from engine.graph import Constant, toposort
from engine.ops import shape as S
from tests.rewrite.helpers import check, describe, rewrite

RNG = np.random.default_rng(0)
CANON = ["canonicalize"]


def m34(name="x"):
    return T.tensor("float32", (3, 4), name)


def v34():
    return RNG.standard_normal((3, 4)).astype("float32")


def test_constant_folding():
    x = m34()
    c = T.exp(T.constant(np.ones((2, 2), "float32")) * 2).sum()
    assert check([x], [x + c], [v34()], only=CANON) == ["add"]
    (new,) = rewrite(c)
    assert isinstance(new, Constant) and np.isclose(new.value, 4 * np.exp(2))


def test_constant_folding_keeps_huge_results_and_randomness_out():
    x = m34()
    big = S.Alloc((1000, 1000))(T.constant(np.float32(1)))  # a 4 MB constant is not baked in
    assert describe(rewrite(big)) == ["Alloc"]
    srng = engine.RandomStreams(0)
    assert "RandomVariable" in describe(rewrite(srng.uniform((3,)) + x.sum()))


def test_merge_identical_nodes_and_constants_by_value():
    x = m34()
    a = T.exp(x) * T.constant(np.float32(2))
    b = T.exp(x) * T.constant(np.float32(2))
    assert check([x], [a + b], [v34()], only=CANON) == ["exp", "mul", "add"]


@pytest.mark.parametrize("build,expected", [
    (lambda x: x * 1, []), (lambda x: 1 * x, []), (lambda x: x + 0, []), (lambda x: 0 + x, []),
    (lambda x: x - 0, []), (lambda x: x / 1, []), (lambda x: x ** 1, []),
    (lambda x: T.neg(T.neg(x)), []), (lambda x: T.exp(T.log(x)), []), (lambda x: T.log(T.exp(x)), []),
    (lambda x: x - (-T.exp(x)), ["exp", "add"]), (lambda x: x + (-T.exp(x)), ["exp", "sub"]),
    (lambda x: -(x - T.exp(x)), ["exp", "sub"]), (lambda x: T.cast(x, "float32"), []),
    (lambda x: T.stop_gradient(x), []),
    (lambda x: (-x) * T.exp(x), ["exp", "mul", "neg"]),
    (lambda x: -(-x).sum(), ["Reduce"]),
])
def test_algebraic_identities(build, expected):
    x = m34()
    value = np.abs(v34()) + 0.5  # positive, for log
    assert check([x], [build(x)], [value], only=CANON) == expected


def test_identity_with_broadcasting_is_kept():
    x = T.vector("x")
    ones = T.constant(np.ones((3, 1), "float32"))
    assert check([x], [x * ones], [np.arange(4, dtype="float32")], only=CANON) == ["mul"]  # (3, 4), not x


def test_sub_self_is_zeros():
    x = T.matrix("x")
    names = check([x], [x - x], [v34()], only=CANON)
    assert names[-1] == "Alloc" and "sub" not in names


def test_dimshuffle_composition_and_identity():
    x = m34()
    assert check([x], [x.T.T], [v34()], only=CANON) == []
    names = check([x], [x.dimshuffle("x", 0, 1).dimshuffle(2, 1, 0)], [v34()], only=CANON)
    assert names == ["DimShuffle"]


def test_dimshuffle_lifted_through_elementwise():
    x, y = m34("x"), m34("y")
    out = (x.T * y.T + 2.0).T  # the transposes meet and cancel
    assert check([x, y], [out], [v34(), v34()], only=CANON) == ["mul", "add"]


def test_reshape_of_reshape_and_noop_reshape():
    x = m34()
    assert check([x], [x.reshape((12,)).reshape((4, 3))], [v34()], only=CANON) == ["Reshape"]
    assert check([x], [x.reshape((3, 4))], [v34()], only=CANON) == []


def test_shape_ops_of_static_dims_fold():
    x = T.tensor("float32", (None, 4), "x")
    out = T.cast(x.shape[1], "float32") * x  # x.shape[1] is 4
    assert check([x], [out], [v34()], only=CANON) == ["mul"]
    y = T.exp(x)
    names = describe(rewrite(T.cast(y.shape[0], "float32") + 0 * y.sum()))
    assert "exp" in names  # (y.sum() still needs it) ...
    (n,) = rewrite(y.shape[0])  # ... but the shape is read from the input
    assert n.owner.inputs[0] is x


def test_sum_of_broadcast():
    x = T.tensor("float32", (None, 4), "x")
    s = T.scalar("s")
    out = S.broadcast_like(s, x).sum()  # s * x.size, without materializing the broadcast
    names = check([x, s], [out], [v34(), np.float32(1.5)], only=CANON)
    assert "BroadcastLike" not in names and "Alloc" not in names and "Reduce" not in names


def test_broadcast_and_sum_to_shape_removed_when_shapes_are_provably_equal():
    x, b = T.matrix("x"), T.tensor("float32", (3,), "b")
    W = engine.shared(np.ones((4, 3), "float32"))
    y = T.tanh(T.dot(x, W) + b)
    gb = engine.grad(y.sum(), b)
    names = check([x, b], [gb], [v34(), np.ones(3, "float32")], only=CANON)
    assert "SumToShape" not in names and "BroadcastLike" not in names and "Reduce" in names
    w = T.matrix("w")
    same = S.SumToShape()(T.exp(w), w)  # same symbolic shape: a no-op
    assert check([w], [same], [v34()], only=CANON) == ["exp"]


def test_reduce_of_reduce_merges():
    x = m34()
    assert check([x], [x.sum(axis=1).sum()], [v34()], only=CANON) == ["Reduce"]


def test_mean_gradient_has_no_materialized_broadcast():
    x = T.matrix("x")
    g = engine.grad(T.mean(T.exp(x)), x)
    names = check([x], [g], [v34()], only=CANON)
    assert names.count("exp") == 1 and "BroadcastLike" not in names


def test_canonicalize_is_idempotent():
    x = T.matrix("x")
    once = rewrite(engine.grad(T.mean(T.tanh(x) * 2), x), only=CANON)
    twice = rewrite(once, only=CANON)
    assert len(toposort(once)) == len(toposort(twice))


def test_gradient_seed_of_a_sum_costs_no_kernel():
    """grad(sum(y * g)): the seed (ones like y * g) times g is g itself, and y * g is needed
    for its shape only: one multiply is left, exp(x) * g."""
    x, g = T.matrix("x"), T.matrix("g")
    gx = engine.grad(T.sum(T.exp(x) * g), x)
    names = check([x, g], [gx], [v34(), v34()], only=CANON)
    assert names.count("mul") == 1


def test_shape_reference_of_lower_rank_operands():
    a, b = T.matrix("a"), T.vector("b")
    ga, gb = engine.grad(T.sum(a * b), [a, b])
    check([a, b], [ga, gb], [np.ones((3, 1), "float32"), np.arange(4, dtype="float32")], only=CANON)
