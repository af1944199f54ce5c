"""RBM: free energy and likelihood by enumerating a tiny RBM's states; CD-1 and PCD updates
against hand-written numpy formulas on the samples the graph drew."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

import engine
import frontends.tensor as T
from engine import function
from frontends.models import RBM

N_VIS, N_HID = 5, 4


def all_states(n: int) -> np.ndarray:
    return np.array(list(itertools.product([0, 1], repeat=n)), dtype=np.float64)


def tiny_rbm(gaussian: bool = False, seed: int = 0) -> tuple[RBM, dict]:
    rng = np.random.default_rng(seed)
    p = {"W": rng.normal(0, 1, (N_VIS, N_HID)), "hbias": rng.normal(0, 0.5, N_HID),
         "vbias": rng.normal(0, 0.5, N_VIS)}
    rbm = RBM(T.matrix("v"), N_VIS, N_HID, rng=1, theano_rng=2, gaussian_visible=gaussian,
              **{k: v.astype("float32") for k, v in p.items()})
    return rbm, {k: v.astype("float32").astype(np.float64) for k, v in p.items()}


def energy(v: np.ndarray, h: np.ndarray, p: dict, gaussian: bool = False) -> np.ndarray:
    """E(v, h) for every pair of rows: shape (len(v), len(h))."""
    visible = 0.5 * ((v - p["vbias"]) ** 2).sum(1) if gaussian else -(v @ p["vbias"])
    return visible[:, None] - (h @ p["hbias"])[None, :] - v @ p["W"] @ h.T


def test_free_energy_matches_enumeration_of_hidden_states():
    rbm, p = tiny_rbm()
    v, h = all_states(N_VIS), all_states(N_HID)
    expected = -np.log(np.exp(-energy(v, h, p)).sum(axis=1))
    fe = function([rbm.input], rbm.free_energy(rbm.input), backend="numpy")
    np.testing.assert_allclose(fe(v.astype("float32")), expected, rtol=1e-5, atol=1e-5)


def test_exact_log_likelihood_by_enumerating_all_joint_states():
    rbm, p = tiny_rbm()
    v, h = all_states(N_VIS), all_states(N_HID)
    joint = np.exp(-energy(v, h, p))  # all 2^(5+4) = 512 states
    log_z = np.log(joint.sum())
    log_p_v = np.log(joint.sum(axis=1)) - log_z
    fe = function([rbm.input], rbm.free_energy(rbm.input), backend="numpy")(v.astype("float32")).astype(np.float64)
    model_log_z = np.log(np.exp(-fe).sum())
    np.testing.assert_allclose(model_log_z, log_z, rtol=1e-5)
    np.testing.assert_allclose(-fe - model_log_z, log_p_v, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(np.exp(log_p_v).sum(), 1.0, rtol=1e-6)


def test_gaussian_free_energy_matches_enumeration():
    rbm, p = tiny_rbm(gaussian=True)
    v = np.random.default_rng(3).normal(size=(7, N_VIS))
    h = all_states(N_HID)
    v32 = v.astype("float32")
    expected = -np.log(np.exp(-energy(v32.astype(np.float64), h, p, gaussian=True)).sum(axis=1))
    fe = function([rbm.input], rbm.free_energy(rbm.input), backend="numpy")
    np.testing.assert_allclose(fe(v32), expected, rtol=1e-5, atol=1e-4)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1 / (1 + np.exp(-x))


def test_cd1_update_matches_numpy_formula_on_the_drawn_samples():
    rbm, p = tiny_rbm()
    lr = 0.1
    cost, updates = rbm.get_cost_updates(lr=lr, k=1)
    step = function([rbm.input], [rbm.chain_end, cost], updates=updates, backend="numpy")
    v0 = (np.random.default_rng(4).random((6, N_VIS)) > 0.5).astype("float32")
    vk, _ = step(v0)
    assert set(np.unique(vk)) <= {0.0, 1.0}
    v0, vk = v0.astype(np.float64), vk.astype(np.float64)
    ph0, phk = _sigmoid(v0 @ p["W"] + p["hbias"]), _sigmoid(vk @ p["W"] + p["hbias"])
    n = len(v0)
    expected = {
        "W": p["W"] + lr * (v0.T @ ph0 - vk.T @ phk) / n,
        "hbias": p["hbias"] + lr * (ph0 - phk).mean(0),
        "vbias": p["vbias"] + lr * (v0 - vk).mean(0),
    }
    for name, value in expected.items():
        np.testing.assert_allclose(getattr(rbm, name).get_value(), value, rtol=1e-5, atol=1e-6, err_msg=name)


def test_cd_k_monitoring_cost_is_the_reconstruction_cross_entropy():
    rbm, p = tiny_rbm()
    cost, _ = rbm.get_cost_updates(lr=0.0, k=2)
    _, v_mean = rbm.propdown(rbm.chain_end_hidden)  # not the same step; only checks the range
    f = function([rbm.input], [cost, v_mean], backend="numpy")
    c, _ = f(np.ones((3, N_VIS), "float32"))
    assert np.isfinite(c) and c > 0
    # saturated pre-activations stay finite (softplus form, no log(0))
    big = tiny_rbm()[0]
    big.vbias.set_value(np.full(N_VIS, -200, "float32"))
    cost_big, _ = big.get_cost_updates(lr=0.0, k=1)
    assert np.isfinite(function([big.input], cost_big, backend="numpy")(np.ones((3, N_VIS), "float32")))


def test_pcd_updates_the_persistent_chain_and_returns_pseudo_likelihood():
    rbm, p = tiny_rbm()
    persistent = engine.shared(np.zeros((6, N_HID), "float32"), name="chain")
    cost, updates = rbm.get_cost_updates(lr=0.0, persistent=persistent, k=3)
    targets = [s for s, _ in updates]
    assert any(s is persistent for s in targets)
    step = function([rbm.input], [rbm.chain_end_hidden, cost], updates=updates, backend="numpy")
    v0 = (np.random.default_rng(5).random((6, N_VIS)) > 0.5).astype("float32")
    h_end, pl = step(v0)
    np.testing.assert_array_equal(persistent.get_value(), h_end)
    # pseudo-likelihood for bit 0 (lr=0 keeps the parameters), by hand
    v = v0.astype(np.float64)
    flip = v.copy()
    flip[:, 0] = 1 - flip[:, 0]
    fe = lambda x: -(x @ p["vbias"]) - np.logaddexp(0, x @ p["W"] + p["hbias"]).sum(1)
    expected = np.mean(N_VIS * np.log(_sigmoid(fe(flip) - fe(v))))
    np.testing.assert_allclose(pl, expected, rtol=1e-5)
    _, pl2 = step(v0)  # the next call flips bit 1
    flip = v.copy()
    flip[:, 1] = 1 - flip[:, 1]
    np.testing.assert_allclose(pl2, np.mean(N_VIS * np.log(_sigmoid(fe(flip) - fe(v)))), rtol=1e-5)


def test_gibbs_samples_are_binary_and_float32():
    rbm, _ = tiny_rbm()
    outs = rbm.gibbs_vhv(rbm.input)
    f = function([rbm.input], list(outs), backend="numpy")
    results = f(np.ones((4, N_VIS), "float32"))
    for r in results:
        assert r.dtype == np.float32
    assert set(np.unique(results[2])) <= {0.0, 1.0} and set(np.unique(results[5])) <= {0.0, 1.0}


@pytest.mark.parametrize("gaussian", [False, True])
def test_rbm_updates_keep_float32(gaussian):
    rbm, _ = tiny_rbm(gaussian)
    lr = T.scalar("lr", dtype="float64")
    _, updates = rbm.get_cost_updates(lr=lr, k=1)
    for shared, value in updates:
        assert value.dtype == shared.dtype
