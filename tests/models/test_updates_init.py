"""Update builders (sgd, momentum, adam) against numpy, float32 kept; initializers."""

from __future__ import annotations

import numpy as np
import pytest

import engine
import frontends.tensor as T
from frontends import init
from frontends import updates as U


def _quadratic(dtype="float32"):
    target = np.array([1.0, -2.0, 3.0], dtype=dtype)
    w = engine.shared(np.zeros(3, dtype=dtype), name="w")
    cost = T.sum(T.sqr(w - target))
    return w, cost, target


def _run(updates, cost, n=3):
    step = engine.function([], cost, updates=updates, backend="numpy")
    return [float(step()) for _ in range(n)]


def _np_grad(w, target):
    return 2 * (w - target)


def test_sgd_matches_numpy_and_accepts_grads():
    w, cost, target = _quadratic()
    _run(U.sgd(cost, [w], 0.1), cost)
    ref = np.zeros(3)
    for _ in range(3):
        ref = ref - 0.1 * _np_grad(ref, target)
    np.testing.assert_allclose(w.get_value(), ref, rtol=1e-6)
    w2, cost2, _ = _quadratic()
    pairs = U.sgd([engine.grad(cost2, w2)], [w2], 0.1)
    assert pairs[0][0] is w2


@pytest.mark.parametrize("nesterov", [False, True])
def test_momentum_matches_numpy(nesterov):
    w, cost, target = _quadratic()
    _run(U.momentum(cost, [w], 0.05, momentum=0.9, nesterov=nesterov), cost, 4)
    ref, v = np.zeros(3), np.zeros(3)
    for _ in range(4):
        g = _np_grad(ref, target)
        v = 0.9 * v - 0.05 * g
        ref = ref + (0.9 * v - 0.05 * g if nesterov else v)
    np.testing.assert_allclose(w.get_value(), ref, rtol=1e-5)


def test_adam_matches_numpy():
    w, cost, target = _quadratic()
    _run(U.adam(cost, [w], learning_rate=0.1), cost, 5)
    ref, m, v = np.zeros(3), np.zeros(3), np.zeros(3)
    for t in range(1, 6):
        g = _np_grad(ref, target)
        m = 0.9 * m + 0.1 * g
        v = 0.999 * v + 0.001 * g * g
        ref = ref - 0.1 * (m / (1 - 0.9 ** t)) / (np.sqrt(v / (1 - 0.999 ** t)) + 1e-8)
    np.testing.assert_allclose(w.get_value(), ref, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("builder", ["sgd", "momentum", "nesterov_momentum", "adam"])
def test_updates_stay_float32_and_minimize(builder):
    w, cost, target = _quadratic()
    lr = T.scalar("lr", dtype="float64")  # even a float64 symbolic learning rate must not upcast
    pairs = getattr(U, builder)(cost, [w], lr)
    for shared, value in pairs:
        assert value.dtype == shared.dtype == "float32", (builder, shared.name, value.dtype)
    step = engine.function([lr], cost, updates=pairs, backend="numpy")
    costs = [float(step(np.float64(0.05))) for _ in range(30)]
    assert costs[-1] < costs[0]
    assert w.get_value().dtype == np.float32


def test_wrong_number_of_grads():
    w, cost, _ = _quadratic()
    with pytest.raises(ValueError):
        U.sgd([cost, cost], [w], 0.1)


def test_glorot_uniform_bounds_and_dtype():
    rng = np.random.default_rng(0)
    W = init.glorot_uniform((784, 500), rng)
    bound = np.sqrt(6 / (784 + 500))
    assert W.dtype == np.float32 and W.shape == (784, 500)
    assert np.abs(W).max() <= bound and np.abs(W).max() > 0.95 * bound
    W4 = init.glorot_uniform((784, 500), 0, gain=4.0)
    assert np.abs(W4).max() <= 4 * bound and np.abs(W4).max() > 3.8 * bound


def test_conv_fans_as_in_the_lenet_tutorial():
    # filter (50, 20, 5, 5) with 2x2 pooling: fan_in = 20*25, fan_out = 50*25/4
    assert init.compute_fans((50, 20, 5, 5), poolsize=(2, 2)) == (500.0, 312.5)
    W = init.glorot_uniform((50, 20, 5, 5), 0, poolsize=(2, 2))
    assert np.abs(W).max() <= np.sqrt(6 / (500 + 312.5))


def test_normal_initializers():
    rng = np.random.default_rng(1)
    W = init.he_normal((1000, 400), rng)
    assert W.dtype == np.float32 and abs(W.std() - np.sqrt(2 / 1000)) < 2e-3
    G = init.glorot_normal((1000, 400), rng)
    assert abs(G.std() - np.sqrt(2 / 1400)) < 2e-3
    U_ = init.uniform((10, 10), rng, -1, 1)
    assert U_.dtype == np.float32 and U_.min() >= -1 and U_.max() < 1
    assert init.zeros((2, 3)).dtype == np.float32 and not init.zeros((2, 3)).any()
    assert init.zeros((2,), dtype="float64").dtype == np.float64
