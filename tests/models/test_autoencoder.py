"""Autoencoders: the cost against numpy, gradients by finite differences, corruption."""

from __future__ import annotations

import numpy as np

import engine
import frontends.tensor as T
from engine import function
from frontends.models import DenoisingAutoencoder, SparseAutoencoder


def _arrays(seed: int = 0, n_vis: int = 6, n_hid: int = 4, batch: int = 3) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.normal(0, 0.5, (n_vis, n_hid)), rng.normal(0, 0.1, n_hid), rng.normal(0, 0.1, n_vis),
            rng.random((batch, n_vis))]


def _np_cost(W, b, bp, x, loss="cross_entropy"):
    y = 1 / (1 + np.exp(-(x @ W + b)))
    z = 1 / (1 + np.exp(-(y @ W.T + bp)))
    if loss == "squared_error":
        return ((x - z) ** 2).sum(1).mean(), y
    return -(x * np.log(z) + (1 - x) * np.log(1 - z)).sum(1).mean(), y


def test_da_cost_matches_numpy():
    W, b, bp, x = _arrays()
    for loss in ("cross_entropy", "squared_error"):
        xs = T.matrix("x", dtype="float64")
        da = DenoisingAutoencoder(xs, 6, 4, W=T.constant(W), bhid=T.constant(b), bvis=T.constant(bp), loss=loss)
        got = function([xs], da.get_cost(0.0), backend="numpy")(x)
        np.testing.assert_allclose(got, _np_cost(W, b, bp, x, loss)[0], rtol=1e-10)


def test_da_gradient_verify_grad():
    def cost(W, b, bp, x):
        return DenoisingAutoencoder(x, 6, 4, W=W, bhid=b, bvis=bp).get_cost(0.0)

    engine.verify_grad(cost, _arrays(), backend="numpy")


def test_da_squared_error_gradient_verify_grad():
    def cost(W, b, bp, x):
        return DenoisingAutoencoder(x, 6, 4, W=W, bhid=b, bvis=bp, loss="squared_error").get_cost(0.0)

    engine.verify_grad(cost, _arrays(1), backend="numpy")


def test_sparse_autoencoder_penalty_and_gradient():
    W, b, bp, x = _arrays(2)
    rho, beta, wd = 0.1, 3.0, 1e-2
    xs = T.matrix("x", dtype="float64")
    sa = SparseAutoencoder(xs, 6, 4, rho=rho, beta=beta, weight_decay=wd, W=T.constant(W), bhid=T.constant(b),
                           bvis=T.constant(bp))
    base, y = _np_cost(W, b, bp, x)
    rho_hat = y.mean(0)
    kl = (rho * np.log(rho / rho_hat) + (1 - rho) * np.log((1 - rho) / (1 - rho_hat))).sum()
    expected = base + beta * kl + 0.5 * wd * (W ** 2).sum()
    np.testing.assert_allclose(function([xs], sa.get_cost(), backend="numpy")(x), expected, rtol=1e-10)

    def cost(W, b, bp, x):
        return SparseAutoencoder(x, 6, 4, rho=rho, beta=beta, weight_decay=wd, W=W, bhid=b, bvis=bp).get_cost()

    engine.verify_grad(cost, [W, b, bp, x], backend="numpy")


def test_corruption_zeroes_the_expected_fraction():
    x = T.matrix("x")
    da = DenoisingAutoencoder(x, 50, 10, rng=0, theano_rng=1)
    f = function([x], da.get_corrupted_input(x, 0.3), backend="numpy")
    out = f(np.ones((200, 50), "float32"))
    assert out.dtype == np.float32
    assert set(np.unique(out)) <= {0.0, 1.0}
    assert abs((out == 0).mean() - 0.3) < 0.02
    # a symbolic corruption level works too, and 0 is the identity
    level = T.scalar("level")
    g = function([x, level], da.get_corrupted_input(x, level), backend="numpy")
    assert (g(np.ones((10, 50), "float32"), np.float32(0.0)) == 1).all()
    assert da.get_corrupted_input(x, 0) is x


def test_da_updates_keep_float32_and_decrease_cost():
    rng = np.random.default_rng(0)
    data = (rng.random((40, 20)) > 0.5).astype("float32")
    x = T.matrix("x")
    da = DenoisingAutoencoder(x, 20, 8, rng=0, theano_rng=1)
    cost, updates = da.get_cost_updates(corruption_level=0.2, learning_rate=0.1)
    assert all(v.dtype == s.dtype == "float32" for s, v in updates)
    step = function([x], cost, updates=updates, backend="numpy")
    first = np.mean([step(data) for _ in range(5)])
    last = np.mean([step(data) for _ in range(5)])
    assert last < first
