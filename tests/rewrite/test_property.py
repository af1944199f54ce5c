"""Property: random elementwise / reduction / dot graphs (and their gradients) give the same
values before and after optimization, with and without fusion, on the numpy oracle."""

from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import engine
import frontends.tensor as T
from tests.rewrite.helpers import rewrite, run

UNARY = {
    "exp_tanh": lambda a: T.exp(T.tanh(a)), "tanh": T.tanh, "sigmoid": T.sigmoid, "neg": lambda a: -a,
    "sqr": T.sqr, "abs": abs, "softplus": T.softplus, "log1p_abs": lambda a: T.log(1 + abs(a)),
    "log_sigmoid": lambda a: T.log(T.sigmoid(a)), "times_one": lambda a: a * 1, "plus_zero": lambda a: a + 0,
    "sum0": lambda a: a.sum(axis=0) if a.ndim == 2 else a.sum(),
    "sum1k": lambda a: a.sum(axis=1, keepdims=True) if a.ndim == 2 else a,
    "max_all": lambda a: a.max(), "mean": lambda a: a.mean(), "double_t": lambda a: a.T.T,
}
BINARY = {
    "add": lambda a, b: a + b, "sub": lambda a, b: a - b, "mul": lambda a, b: a * b,
    "max": T.maximum, "div": lambda a, b: a / (1 + T.sqr(b)), "self_sub": lambda a, b: a - a + b,
}
OPS = sorted(UNARY) + sorted(BINARY)


def fits(a, b) -> bool:
    try:
        np.broadcast_shapes(a.type.shape, b.type.shape)
        return True
    except ValueError:
        return False


def build(program, pool, W):
    for op_index, i, j in program:
        name = OPS[op_index % len(OPS)]
        a, b = pool[i % len(pool)], pool[j % len(pool)]
        if name in UNARY:
            pool.append(UNARY[name](a))
        elif fits(a, b):
            pool.append(BINARY[name](a, b))
        elif a.ndim == 2:
            pool.append(T.dot(a, W))
    return pool[-1], pool[-2]


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.integers(0, 63), st.integers(0, 63), st.integers(0, 63)), min_size=1, max_size=8),
       st.integers(0, 2**16))
def test_optimized_graphs_compute_the_same_values(program, seed):
    rng = np.random.default_rng(seed)
    x, y = T.tensor("float64", (3, 4), "x"), T.tensor("float64", (3, 4), "y")
    v, s = T.tensor("float64", (4,), "v"), T.tensor("float64", (), "s")
    W = engine.shared(rng.standard_normal((4, 4)), name="W")
    out, other = build(program, [x, y, v, s], W)
    outs = [out, other, engine.grad(out.sum() + other.sum(), x, disconnected_inputs="ignore")]
    values = [rng.standard_normal((3, 4)), rng.standard_normal((3, 4)), rng.standard_normal(4),
              np.float64(rng.standard_normal())]
    expected = run([x, y, v, s], outs, values)
    for fuse in (False, True):
        got = run([x, y, v, s], rewrite(outs, fuse=fuse), values)
        for e, g in zip(expected, got):
            assert e.shape == g.shape and e.dtype == g.dtype
            np.testing.assert_allclose(g, e, rtol=1e-9, atol=1e-9)
