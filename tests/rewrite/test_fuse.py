"""fuse (fuse=True): elementwise chains, reductions, multi-output groups; no duplicated
expensive work, no cycles, bounded inputs. Values: fused vs unfused on the numpy oracle."""

from __future__ import annotations

import numpy as np

import frontends.tensor as T
from engine.graph import toposort
from engine.ops.fused import MAX_FUSED_INPUTS, FusedElemwise, FusedReduce
from tests.rewrite.helpers import as_list, check, rewrite, same_values

RNG = np.random.default_rng(0)


def mat(name, shape=(3, 4)):
    return T.tensor("float32", shape, name)


def arr(shape=(3, 4)):
    return RNG.standard_normal(shape).astype("float32")


def fused_nodes(outputs):
    return [n for n in toposort(as_list(outputs)) if isinstance(n.op, (FusedElemwise, FusedReduce))]


def count_op(outputs, name):
    return sum(instr[0] == name for n in fused_nodes(outputs) for instr in n.op.expr) + \
        sum(getattr(n.op, "scalar_op", None) == name for n in toposort(as_list(outputs)))


def test_elementwise_chain_is_one_kernel():
    x, y = mat("x"), mat("y")
    out = T.tanh(x * y + 1.0) - T.exp(x)
    assert check([x, y], [out], [arr(), arr()], fuse=True) == \
        ["FusedElemwise{sub(tanh(add(mul(i0, i1), 1.0)), exp(i0))}"]


def test_reduction_of_an_elementwise_expression_is_one_pass():
    x, y = mat("x"), mat("y")
    names = check([x, y], [(x * y).sum(axis=1)], [arr(), arr()], fuse=True)
    assert names == ["FusedReduce{sum(1,): mul(i0, i1)}"]


def test_expensive_producer_is_not_duplicated_but_shared():
    x = mat("x")
    e = T.exp(x)
    outs = [e * 2.0 + 1.0, T.tanh(e) - 1.0]
    new = rewrite(outs, fuse=True)
    same_values([x], outs, new, [arr()])
    assert count_op(new, "exp") == 1
    (node,) = fused_nodes(new)  # one multi-output kernel computes both
    assert len(node.outputs) == 2 and new[0].owner is new[1].owner


def test_cheap_producer_is_inlined_into_each_consumer():
    x, y = mat("x"), mat("y")
    a = x + y
    outs = [T.exp(a), T.tanh(a)]
    new = rewrite(outs, fuse=True)
    same_values([x, y], outs, new, [arr(), arr()])
    assert all(isinstance(v.owner.op, FusedElemwise) for v in new)
    assert all(v.owner.inputs[:2] == [x, y] for v in new)


def test_broadcast_producer_is_not_recomputed_per_element():
    x, b = mat("x"), mat("b", (4,))
    out = x + T.exp(b)  # exp over 4 values, not over 12
    new = rewrite(out, fuse=True)
    same_values([x, b], [out], new, [arr(), arr((4,))])
    def computes_exp(node):
        op = node.op
        return getattr(op, "scalar_op", None) == "exp" or any(i[0] == "exp" for i in getattr(op, "expr", ()))

    assert [n.outputs[0].type.shape for n in toposort(new) if computes_exp(n)] == [(4,)]


def test_fused_inputs_are_capped():
    xs = [mat(f"x{i}") for i in range(2 * MAX_FUSED_INPUTS + 3)]
    out = xs[0]
    for x in xs[1:]:
        out = T.tanh(out + x)
    new = rewrite(out, fuse=True)
    same_values(xs, [out], new, [arr() for _ in xs], rtol=1e-4)
    nodes = fused_nodes(new)
    assert len(nodes) >= 3 and all(len(n.inputs) <= MAX_FUSED_INPUTS for n in nodes)


def test_multi_output_groups_never_create_cycles():
    x, W = mat("x", (4, 4)), mat("W", (4, 4))
    p = T.exp(x)
    c1 = p + 1.0
    m = T.dot(p, W)  # c2 reads p and, through m, p again: p and c2 cannot share a kernel
    c2 = p * m
    outs = [c1, c2]
    new = rewrite(outs, fuse=True)
    same_values([x, W], outs, new, [arr((4, 4)), arr((4, 4))])
    assert count_op(new, "exp") == 1
    for node in toposort(new):  # a valid DAG (toposort would loop forever otherwise)
        assert all(i.owner is not node for i in node.inputs)


def test_whole_pipeline_on_a_training_step_matches():
    import engine

    x = mat("x", (5, 3))
    W = engine.shared(arr((3, 4)), name="W")
    b = engine.shared(arr((4,)), name="b")
    cost = T.mean(T.log(1 + T.exp(-T.dot(x, W) - b)) + 0.01 * T.sum(T.sqr(W)))
    gW, gb = engine.grad(cost, [W, b])
    outs = [cost, W - 0.1 * gW, b - 0.1 * gb]
    new = rewrite(outs, fuse=True)
    same_values([x], outs, new, [arr((5, 3))], rtol=1e-5)
    assert len(toposort(new)) < len(toposort(outs)) / 2
