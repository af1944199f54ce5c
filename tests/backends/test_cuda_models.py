"""Model training steps on "cuda-emulator" against the numpy oracle: RBM CD-1, a denoising
autoencoder and LeNet, three steps each over a shared dataset sliced through givens (the
parameters and the data stay on the device; random samples are the same on every backend)."""

from __future__ import annotations

import numpy as np
import pytest

import engine
import frontends.tensor as T
from engine import function
from frontends.updates import sgd

BS = 10


def _data(rng, n=30, d=64):
    x = (rng.random((n, d)) < 0.3).astype("float32")
    y = rng.integers(0, 10, n).astype("int64")
    return x, y


def _rbm(backend, x_data, _):
    from frontends.models import RBM
    data, i, x = engine.shared(x_data), T.lscalar("i"), T.matrix("x")
    rbm = RBM(x, 64, 24, rng=0, theano_rng=1)
    cost, updates = rbm.get_cost_updates(lr=0.1, k=1)
    step = function([i], cost, updates=updates, givens={x: data[i * BS:(i + 1) * BS]}, backend=backend)
    return step, rbm.params


def _da(backend, x_data, _):
    from frontends.models import DenoisingAutoencoder
    data, i, x = engine.shared(x_data), T.lscalar("i"), T.matrix("x")
    da = DenoisingAutoencoder(x, 64, 20, rng=0, theano_rng=1)
    cost, updates = da.get_cost_updates(corruption_level=0.3, learning_rate=0.1)
    step = function([i], cost, updates=updates, givens={x: data[i * BS:(i + 1) * BS]}, backend=backend)
    return step, da.params


def _lenet(backend, x_data, y_data):
    from frontends.models import LeNet
    xs, ys = engine.shared(x_data), engine.shared(y_data)
    i, x, y = T.lscalar("i"), T.matrix("x"), T.lvector("y")
    model = LeNet(x, image_shape=(8, 8), nkerns=(4, 6), filter_sizes=(3, 2), pool_sizes=(2, 1),
                  n_hidden=16, rng=0)
    cost = model.negative_log_likelihood(y)
    s = slice(i * BS, (i + 1) * BS)
    step = function([i], cost, updates=sgd(cost, model.params, 0.1), givens={x: xs[s], y: ys[s]},
                    backend=backend)
    return step, model.params


@pytest.mark.parametrize("model", [_rbm, _da, _lenet], ids=["rbm_cd1", "dA", "lenet"])
def test_training_steps_match_the_oracle(model, monkeypatch):
    monkeypatch.setenv("KILN_CUDA_STRICT", "1")  # every node a GPU kernel: none on the host
    x, y = _data(np.random.default_rng(0))
    runs = {}
    for backend in ("numpy", "cuda-emulator"):
        step, params = model(backend, x, y)
        costs = [float(step(np.int64(k))) for k in range(3)]
        runs[backend] = costs, [p.get_value() for p in params]
    (c_ref, p_ref), (c_emu, p_emu) = runs["numpy"], runs["cuda-emulator"]
    np.testing.assert_allclose(c_emu, c_ref, rtol=1e-4, atol=1e-5)
    for got, want in zip(p_emu, p_ref):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
