"""Every model's training step lowers its cost on sklearn's digits (numpy backend, small, fast)."""

from __future__ import annotations

import numpy as np
import pytest

import engine
import frontends.tensor as T
from engine import function
from frontends.updates import sgd

nn = pytest.importorskip("frontends.nn")

BACKEND = "numpy"
BS = 50


@pytest.fixture(scope="module")
def digits():
    from examples.datasets import load_dataset

    (tx, ty), (vx, vy), (sx, sy) = load_dataset("digits")
    return {"x": engine.shared(tx[:500]), "y": engine.shared(ty[:500]), "raw": (tx[:500], ty[:500]),
            "valid": (engine.shared(vx[:200]), engine.shared(vy[:200])), "test": (engine.shared(sx[:200]),
                                                                                    engine.shared(sy[:200]))}


def epochs(step, n_batches: int, n_epochs: int) -> list[float]:
    return [float(np.mean([step(i) for i in range(n_batches)])) for _ in range(n_epochs)]


def supervised_step(model, x, y, data, lr, extra_cost=0):
    index = T.lscalar("index")
    cost = model.negative_log_likelihood(y) + extra_cost
    updates = sgd(cost, model.params, lr)
    for shared, value in updates:
        assert value.dtype == shared.dtype == "float32"
    s = slice(index * BS, (index + 1) * BS)
    return function([index], cost, updates=updates, givens={x: data["x"][s], y: data["y"][s]}, backend=BACKEND)


def test_logistic_regression(digits):
    from frontends.models import LogisticRegression

    x, y = T.matrix("x"), T.lvector("y")
    model = LogisticRegression(x, 64, 10)
    costs = epochs(supervised_step(model, x, y, digits, 0.13), 10, 5)
    assert costs[-1] < 0.7 * costs[0]
    err = function([x, y], model.errors(y), backend=BACKEND)(*digits["raw"])
    assert err.dtype == np.float32 and err < 0.3


def test_mlp(digits):
    from frontends.models import MLP

    x, y = T.matrix("x"), T.lvector("y")
    model = MLP(x, 64, 32, 10, rng=0)
    costs = epochs(supervised_step(model, x, y, digits, 0.3, 1e-4 * model.L2_sqr + 0 * model.L1), 10, 5)
    assert costs[-1] < 0.7 * costs[0]


def test_two_hidden_layer_mlp_and_sigmoid(digits):
    from frontends.models import MLP

    x, y = T.matrix("x"), T.lvector("y")
    model = MLP(x, 64, [32, 16], 10, rng=0, activation=T.sigmoid)
    assert len(model.params) == 6
    costs = epochs(supervised_step(model, x, y, digits, 0.5), 10, 4)
    assert costs[-1] < costs[0]


def test_lenet(digits):
    from frontends.models import LeNet

    x, y = T.matrix("x"), T.lvector("y")
    model = LeNet(x, image_shape=(8, 8), nkerns=(6, 8), filter_sizes=(3, 2), pool_sizes=(2, 1), n_hidden=32, rng=0)
    assert model.feature_shape == (8, 2, 2)
    costs = epochs(supervised_step(model, x, y, digits, 0.3), 10, 4)
    assert costs[-1] < 0.8 * costs[0]
    # any batch size: the reshape uses -1
    probs = function([x], model.p_y_given_x, backend=BACKEND)(digits["raw"][0][:7])
    assert probs.shape == (7, 10)
    np.testing.assert_allclose(probs.sum(1), 1, rtol=1e-5)


def test_lenet_mnist_shapes():
    from frontends.models import LeNet

    x = T.matrix("x")
    model = LeNet(x, rng=0)
    assert model.feature_shape == (50, 4, 4)
    assert [p.get_value().shape for p in model.params[:4]] == [(20, 1, 5, 5), (20,), (50, 20, 5, 5), (50,)]
    out = function([x], model.p_y_given_x, backend=BACKEND)(np.zeros((3, 784), "float32"))
    assert out.shape == (3, 10)


@pytest.mark.parametrize("persistent", [False, True])
def test_rbm(digits, persistent):
    from frontends.models import RBM

    index, x = T.lscalar("index"), T.matrix("x")
    rbm = RBM(x, 64, 32, rng=0, theano_rng=1)
    chain = engine.shared(np.zeros((BS, 32), "float32")) if persistent else None
    cost, updates = rbm.get_cost_updates(lr=0.1, persistent=chain, k=1)
    step = function([index], cost, updates=updates, givens={x: digits["x"][index * BS:(index + 1) * BS]},
                    backend=BACKEND)
    costs = epochs(step, 10, 5)
    if persistent:  # pseudo-likelihood (a log-probability) goes up
        assert costs[-1] > costs[0]
    else:  # reconstruction cross-entropy goes down
        assert costs[-1] < costs[0]
    # the free-energy gap between data and random binary vectors grows: the model learned the data
    fe = function([x], T.mean(rbm.free_energy(x)), backend=BACKEND)
    noise = (np.random.default_rng(0).random((100, 64)) > 0.5).astype("float32")
    assert fe(digits["raw"][0][:100]) < fe(noise)


def test_gaussian_rbm(digits):
    from frontends.models import RBM

    index, x = T.lscalar("index"), T.matrix("x")
    rbm = RBM(x, 64, 32, rng=0, theano_rng=1, gaussian_visible=True)
    cost, updates = rbm.get_cost_updates(lr=0.01, k=1)
    step = function([index], cost, updates=updates, givens={x: digits["x"][index * BS:(index + 1) * BS]},
                    backend=BACKEND)
    costs = epochs(step, 10, 5)
    assert costs[-1] < costs[0]


@pytest.mark.parametrize("kind", ["denoising", "sparse"])
def test_autoencoders(digits, kind):
    from frontends.models import DenoisingAutoencoder, SparseAutoencoder

    index, x = T.lscalar("index"), T.matrix("x")
    if kind == "denoising":
        model = DenoisingAutoencoder(x, 64, 32, rng=0, theano_rng=1)
        cost, updates = model.get_cost_updates(corruption_level=0.3, learning_rate=0.1)
    else:
        model = SparseAutoencoder(x, 64, 32, rng=0, theano_rng=1, rho=0.05, beta=0.5)
        cost, updates = model.get_cost_updates(learning_rate=0.1)
    step = function([index], cost, updates=updates, givens={x: digits["x"][index * BS:(index + 1) * BS]},
                    backend=BACKEND)
    costs = epochs(step, 10, 5)
    assert costs[-1] < 0.9 * costs[0]


@pytest.mark.parametrize("kind", ["sda", "dbn"])
def test_deep_models_pretrain_and_finetune(digits, kind):
    from frontends.models import DBN, StackedDenoisingAutoencoder

    if kind == "sda":
        model = StackedDenoisingAutoencoder(0, 1, n_ins=64, hidden_layers_sizes=[32, 16], n_outs=10,
                                            corruption_levels=[0.1, 0.2])
        fns = model.pretraining_functions(digits["x"], BS, backend=BACKEND)
        kwargs = {"lr": 0.1}
    else:
        model = DBN(0, 1, n_ins=64, hidden_layers_sizes=[32, 16], n_outs=10)
        fns = model.pretraining_functions(digits["x"], BS, k=1, backend=BACKEND)
        kwargs = {"lr": 0.1}
    assert len(fns) == 2
    for fn in fns:
        costs = [float(np.mean([fn(i, **kwargs) for i in range(10)])) for _ in range(3)]
        assert costs[-1] < costs[0]
    datasets = [(digits["x"], digits["y"]), digits["valid"], digits["test"]]
    train, valid, test = model.build_finetune_functions(datasets, BS, 1.0, backend=BACKEND)
    before = np.mean(valid())
    assert len(valid()) == 4 and len(test()) == 4
    costs = epochs(train, 10, 8)
    assert costs[-1] < costs[0]
    assert np.mean(valid()) < before


def test_conv_rbm(digits):
    from frontends.models import ConvRBM

    index, x = T.lscalar("index"), T.tensor4("x")
    images = engine.shared(digits["raw"][0][:200].reshape(-1, 1, 8, 8))
    crbm = ConvRBM(x, (6, 1, 3, 3), (2, 2), rng=0, theano_rng=1, gaussian_visible=False, sparsity_target=0.1,
                   init_std=0.1)
    cost, updates = crbm.get_cost_updates(lr=0.1)
    for shared, value in updates:
        assert value.dtype == shared.dtype == "float32"
    step = function([index], cost, updates=updates, givens={x: images[index * 20:(index + 1) * 20]},
                    backend=BACKEND)
    costs = epochs(step, 10, 4)
    assert costs[-1] < costs[0]
