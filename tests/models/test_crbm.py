"""ConvRBM: probabilistic max-pooling conditionals by enumeration, sampling constraints, and a
CD-1 update against a hand-written numpy formula on the chain the graph drew."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

import frontends.tensor as T
from engine import function

pytest.importorskip("frontends.nn")
from frontends.models import ConvRBM  # noqa: E402


def _correlate_valid(v: np.ndarray, W: np.ndarray) -> np.ndarray:
    """(N, C, H, W) x (K, C, f, f) -> (N, K, H-f+1, W-f+1) cross-correlation."""
    K, C, f, _ = W.shape
    N, _, H, Wd = v.shape
    out = np.zeros((N, K, H - f + 1, Wd - f + 1))
    for a, b in itertools.product(range(f), range(f)):
        out += np.einsum("nchw,kc->nkhw", v[:, :, a:a + H - f + 1, b:b + Wd - f + 1], W[:, :, a, b])
    return out


def _model(gaussian=True, seed=0):
    x = T.tensor4("x")
    crbm = ConvRBM(x, (3, 2, 3, 3), (2, 2), rng=seed, theano_rng=seed + 1, gaussian_visible=gaussian,
                   sparsity_cost=0.0, init_std=0.3)
    v = np.random.default_rng(seed + 2).normal(size=(2, 2, 6, 6)).astype("float32")
    return crbm, x, v


def test_detection_and_pooling_probabilities_by_enumeration():
    crbm, x, v = _model()
    det, pool = function([x], list(crbm.propup(x)), backend="numpy")(v)
    W, b = crbm.W.get_value().astype(np.float64), crbm.hbias.get_value().astype(np.float64)
    energy = _correlate_valid(v.astype(np.float64), W) + b[None, :, None, None]
    assert det.shape == (2, 3, 4, 4) and pool.shape == (2, 3, 2, 2)
    for n, k, i, j in itertools.product(range(2), range(3), range(2), range(2)):
        block = energy[n, k, 2 * i:2 * i + 2, 2 * j:2 * j + 2].ravel()
        # enumerate the 5 legal states of a 2x2 block: all off, or exactly one unit on
        states = [np.zeros(4)] + [np.eye(4)[u] for u in range(4)]
        weights = np.array([np.exp(s @ block) for s in states])
        probs = weights / weights.sum()
        np.testing.assert_allclose(det[n, k, 2 * i:2 * i + 2, 2 * j:2 * j + 2].ravel(), probs[1:], rtol=1e-4)
        np.testing.assert_allclose(pool[n, k, i, j], 1 - probs[0], rtol=1e-4)
        assert det[n, k, 2 * i:2 * i + 2, 2 * j:2 * j + 2].sum() + (1 - pool[n, k, i, j]) == pytest.approx(1, 1e-5)


def test_samples_have_at_most_one_unit_on_per_block():
    crbm, x, v = _model()
    _, h, p = crbm.sample_h_given_v(x)
    hs, ps = function([x], [h, p], backend="numpy")(v)
    blocks = hs.reshape(2, 3, 2, 2, 2, 2).sum(axis=(3, 5))
    assert set(np.unique(hs)) <= {0.0, 1.0} and blocks.max() <= 1
    np.testing.assert_array_equal(blocks, ps)


def test_cd1_update_matches_numpy_formula():
    crbm, x, v = _model(gaussian=True)
    lr = 0.05
    W0, b0, c0 = (p.get_value().astype(np.float64) for p in crbm.params)
    cost, updates = crbm.get_cost_updates(lr=lr)
    v1, err = function([x], [crbm.chain_end, cost], updates=updates, backend="numpy")(v)
    v0, v1 = v.astype(np.float64), v1.astype(np.float64)

    def det_probs(vis):
        e = _correlate_valid(vis, W0) + b0[None, :, None, None]
        blocks = e.reshape(2, 3, 2, 2, 2, 2)
        ex = np.exp(blocks)
        return (ex / (1 + ex.sum(axis=(3, 5), keepdims=True))).reshape(e.shape)

    h0, h1 = det_probs(v0), det_probs(v1)
    positions = 2 * 4 * 4
    grad_W = np.zeros_like(W0)
    for a, b in itertools.product(range(3), range(3)):
        grad_W[:, :, a, b] = (np.einsum("nkhw,nchw->kc", h0, v0[:, :, a:a + 4, b:b + 4])
                              - np.einsum("nkhw,nchw->kc", h1, v1[:, :, a:a + 4, b:b + 4])) / positions
    np.testing.assert_allclose(crbm.W.get_value(), W0 + lr * grad_W, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(crbm.hbias.get_value(), b0 + lr * (h0 - h1).mean(axis=(0, 2, 3)), rtol=1e-4,
                               atol=1e-6)
    np.testing.assert_allclose(crbm.vbias.get_value(), c0 + lr * (v0 - v1).mean(axis=(0, 2, 3)), rtol=1e-4,
                               atol=1e-6)
    # the top-down pass is the adjoint of the bottom-up valid cross-correlation
    h = np.random.default_rng(9).random((2, 3, 4, 4)).astype("float32")
    hid = T.tensor4("h")
    down = function([hid], crbm.propdown(hid)[0], backend="numpy")(h) - crbm.vbias.get_value()[None, :, None, None]
    up = _correlate_valid(v0, crbm.W.get_value().astype(np.float64))
    np.testing.assert_allclose((down * v0).sum(), (up * h).sum(), rtol=1e-4)
