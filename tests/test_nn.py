"""frontends.nn beyond the op table: probabilistic max-pooling by enumeration and sampler
frequencies, dropout statistics, symbolic shapes, the graph the stabilizer matches, Theano
spellings, and error messages."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

import engine
import frontends.nn as nn
import frontends.tensor as T
from engine.errors import KilnError, KilnShapeError, KilnTypeError, KilnValueError
from engine.ops.conv import Conv2d, Conv2dGradInput
from engine.ops.indexing import AdvancedSubtensor
from engine.ops.lcn import lcn_expression
from engine.ops.pool import Pool2d
from tests.backend_fixture import available_backends

BACKENDS = available_backends()


# -- probabilistic max-pooling -------------------------------------------------------------------

@pytest.mark.parametrize("backend", BACKENDS)
def test_prob_max_pool_matches_enumeration_of_a_2x2_block(backend):
    """Enumerate every binary state of a 2x2 detection block plus its pooling unit: the legal
    states (at most one unit on, pool = OR of the units) weighted by exp(sum I h)."""
    energies = np.array([[[[0.3, -1.2], [2.0, 0.7]]]])
    I = T.tensor4("I", "float64")
    det, pool = engine.function([I], nn.probabilistic_max_pool(I, (2, 2)), backend=backend)(energies)
    weights, marginals, p_on = 0.0, np.zeros(4), 0.0
    for h in itertools.product([0, 1], repeat=4):
        if sum(h) > 1:
            continue  # illegal under probabilistic max-pooling
        weight = np.exp(np.dot(h, energies.reshape(-1)))
        weights += weight
        marginals += weight * np.array(h)
        p_on += weight * (sum(h) == 1)
    np.testing.assert_allclose(det.reshape(-1), marginals / weights, rtol=1e-12)
    np.testing.assert_allclose(pool.reshape(-1), [p_on / weights], rtol=1e-12)
    np.testing.assert_allclose(det.sum() + (1 - pool.sum()), 1.0, rtol=1e-12)


@pytest.mark.parametrize("backend", BACKENDS)
def test_prob_max_pool_is_stable_for_large_energies(backend):
    energies = np.array([[[[800.0, -900.0], [799.0, 0.0]]]], dtype="float32")
    I = T.tensor4("I")
    det, pool = engine.function([I], nn.probabilistic_max_pool(I, (2, 2)), backend=backend)(energies)
    assert np.all(np.isfinite(det)) and np.all(np.isfinite(pool))
    np.testing.assert_allclose(det.reshape(-1), [1 / (1 + np.exp(-1)), 0, np.exp(-1) / (1 + np.exp(-1)), 0],
                               rtol=1e-5)
    np.testing.assert_allclose(pool, [[[[1.0]]]])


@pytest.mark.parametrize("backend", BACKENDS)
def test_prob_max_pool_sampler_frequencies(backend):
    blocks = 4000
    energies = np.tile(np.array([0.5, -1.0, 1.0, 0.0]).reshape(1, 1, 2, 2), (blocks, 1, 1, 1))
    I = T.tensor4("I", "float64")
    rng = engine.RandomStreams(seed=7)
    det_sample, pool_sample = nn.sample_probabilistic_max_pool(I, (2, 2), rng)
    det_prob, pool_prob = nn.probabilistic_max_pool(I, (2, 2))
    f = engine.function([I], [det_sample, pool_sample, det_prob, pool_prob], backend=backend)
    det, pool, p_det, p_pool = f(energies)
    assert set(np.unique(det)) <= {0.0, 1.0} and set(np.unique(pool)) <= {0.0, 1.0}
    units_on = det.reshape(blocks, 4).sum(axis=1)
    assert units_on.max() <= 1, "at most one detection unit per block"
    np.testing.assert_array_equal(units_on, pool.reshape(blocks), "the pooling unit is on iff a unit is on")
    for freq, p in zip(det.reshape(blocks, 4).mean(axis=0), p_det[0].reshape(-1)):
        assert abs(freq - p) < 4 * np.sqrt(p * (1 - p) / blocks), (freq, p)
    p = p_pool.reshape(-1)[0]
    assert abs(pool.mean() - p) < 4 * np.sqrt(p * (1 - p) / blocks)
    det2, _, _, _ = f(energies)
    assert not np.array_equal(det, det2), "each call draws fresh uniforms"


def test_prob_max_pool_sampler_symbolic_shapes():
    I = T.tensor4("I", "float64")
    det, pool = nn.sample_probabilistic_max_pool(I, (2, 3), engine.RandomStreams(1))
    det_v, pool_v = engine.function([I], [det, pool], backend="numpy")(np.zeros((2, 3, 4, 6)))
    assert det_v.shape == (2, 3, 4, 6) and pool_v.shape == (2, 3, 2, 2)


# -- dropout -------------------------------------------------------------------------------------

@pytest.mark.parametrize("backend", BACKENDS)
def test_dropout_statistics(backend):
    x = T.matrix("x")
    drop = engine.function([x], nn.dropout(x, 0.3, engine.RandomStreams(3)), backend=backend)
    ones = np.ones((200, 100), dtype="float32")
    out = drop(ones)
    assert out.dtype == np.float32
    kept = out != 0
    np.testing.assert_allclose(out[kept], 1 / 0.7, rtol=1e-6)
    assert abs(kept.mean() - 0.7) < 4 * np.sqrt(0.21 / kept.size)
    assert abs(out.mean() - 1) < 0.02, "inverted dropout keeps the expectation"
    assert not np.array_equal(out, drop(ones)), "a fresh mask each call"


def test_dropout_identity_cases():
    x = T.matrix("x")
    assert nn.dropout(x, 0.5, engine.RandomStreams(0), deterministic=True) is x
    assert nn.dropout(x, 0.0, engine.RandomStreams(0)) is x
    with pytest.raises(KilnValueError, match="drop probability"):
        nn.dropout(x, 1.0, engine.RandomStreams(0))


# -- graph shapes, symbolic dims, Theano spellings -----------------------------------------------

def test_categorical_crossentropy_graph_is_the_stabilizer_pattern():
    """-log(probs)[arange(n), y] (Theano's graph), which the stabilize pass rewrites."""
    x, y = T.matrix("x"), T.lvector("y")
    cost = nn.categorical_crossentropy(nn.softmax(x), y)
    node = cost.owner
    assert node.op.scalar_op == "neg"
    index = node.inputs[0].owner
    assert isinstance(index.op, AdvancedSubtensor)
    log = index.inputs[0].owner
    assert log.op.scalar_op == "log" and type(log.inputs[0].owner.op).__name__ == "Softmax"
    assert log.inputs[0].owner.op.axis == 1, "axis normalized to be non-negative"
    assert index.inputs[2] is y


def test_theano_nnet_namespace():
    assert T.nnet is nn
    assert T.nnet.sigmoid is T.sigmoid and T.nnet.softmax is nn.softmax


@pytest.mark.parametrize("backend", BACKENDS)
def test_symbolic_shapes_and_string_padding(backend):
    """Unknown kernel sizes keep "same"/"full" in the op; the reference resolves them at run time."""
    x, w = T.tensor4("x", "float64"), T.tensor4("w", "float64")
    same, full = nn.conv2d(x, w, padding="same"), nn.conv2d(x, w, padding="full", filter_flip=True)
    assert same.owner.op.padding == "same"
    rng = np.random.default_rng(0)
    xv, wv = rng.standard_normal((2, 3, 6, 5)), rng.standard_normal((4, 3, 3, 5))
    grads = engine.grad((same ** 2).sum() + (full ** 2).sum(), [x, w])
    out = engine.function([x, w], [same, full, *grads], backend=backend)(xv, wv)
    assert out[0].shape == (2, 4, 6, 5) and out[1].shape == (2, 4, 8, 9)
    assert out[2].shape == xv.shape and out[3].shape == wv.shape
    static = nn.conv2d(T.tensor4("x", shape=(None, 3, 6, 5)), T.tensor4("w", shape=(4, 3, 3, 5)), padding="full")
    assert static.owner.op.padding == (2, 4) and static.type.shape == (None, 4, 8, 9)


def test_theano_keyword_spellings():
    x, w = T.tensor4("x", shape=(2, 3, 9, 9)), T.tensor4("w", shape=(4, 3, 3, 3))
    y = nn.conv2d(x, w, border_mode="half", subsample=(1, 1), filter_dilation=(1, 1))
    assert y.owner.op == Conv2d(padding=(1, 1)) and y.type.shape == (2, 4, 9, 9)
    p = nn.pool2d(x, (2, 2), mode="average_inc_pad", pad=(1, 1), ignore_border=False)
    assert p.owner.op == Pool2d((2, 2), (2, 2), (1, 1), "avg", False, True) and p.type.shape == (2, 3, 5, 5)
    q = nn.pool_2d(x, (3, 3), False, (2, 2), (1, 1), "average_exc_pad")
    assert q.owner.op == Pool2d((3, 3), (2, 2), (1, 1), "avg", False, False)


@pytest.mark.parametrize("backend", BACKENDS)
def test_conv_grad_input_accepts_a_like_tensor(backend):
    rng = np.random.default_rng(1)
    x, gy, w = T.tensor4("x", "float64"), T.tensor4("gy", "float64"), T.tensor4("w", "float64")
    by_like = Conv2dGradInput(stride=2)(gy, w, x)
    by_vector = nn.conv2d_grad_input(gy, w, T.shape(x), stride=2)
    xv, gyv = rng.standard_normal((1, 2, 8, 7)), rng.standard_normal((1, 3, 3, 3))
    wv = rng.standard_normal((3, 2, 3, 2))
    a, b = engine.function([x, gy, w], [by_like, by_vector], backend=backend)(xv, gyv, wv)
    assert a.shape == (1, 2, 8, 7)
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("mode", ["both", "subtractive", "divisive"])
@pytest.mark.parametrize("across", [True, False])
def test_lcn_op_equals_its_conv_expression(backend, mode, across):
    """LCNGrad's own gradient differentiates this expression: it must be the same function."""
    x = T.tensor4("x", "float64")
    f = engine.function([x], [nn.lcn(x, 5, 1.2, mode, across), lcn_expression(x, 5, 1.2, mode, across)],
                        backend=backend)
    a, b = f(np.random.default_rng(2).standard_normal((2, 3, 7, 6)))
    np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("backend", BACKENDS)
def test_stable_softmax_family(backend):
    x, y = T.matrix("x"), T.lvector("y")
    big = np.array([[1000.0, 0.0, -1000.0], [-5e4, 5e4, 0.0]], dtype="float32")
    sm, lsm, xent = engine.function([x, y], [nn.softmax(x), nn.log_softmax(x), nn.softmax_cross_entropy(x, y)],
                                    backend=backend)(big, np.array([2, 0]))
    assert np.all(np.isfinite(lsm)) and np.all(np.isfinite(xent))
    np.testing.assert_allclose(sm, [[1, 0, 0], [0, 1, 0]], atol=1e-30)
    np.testing.assert_allclose(xent, [2000.0, 1e5], rtol=1e-6)


@pytest.mark.parametrize("backend", BACKENDS)
def test_second_order_through_pooling_lcn_and_prob_max_pool(backend):
    """verify_grad of a gradient: every op here is differentiable twice."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((1, 2, 4, 4))

    def grad_of(build):
        return lambda a: engine.grad((build(a) ** 3).sum(), a)

    engine.verify_grad(grad_of(lambda a: nn.pool2d(a, (2, 2), (1, 1), mode="l2")), [x], backend=backend)
    engine.verify_grad(grad_of(lambda a: nn.lcn(a, 3)), [x], backend=backend)
    engine.verify_grad(grad_of(lambda a: nn.probabilistic_max_pool(a, (2, 2))[1]), [x], backend=backend)


# -- errors --------------------------------------------------------------------------------------

def test_conv_errors_name_shapes_and_sites():
    x, w = T.tensor4("x", shape=(None, 3, 8, 8)), T.tensor4("w", shape=(4, 2, 3, 3))
    with pytest.raises(KilnShapeError) as info:
        nn.conv2d(x, w)
    message = str(info.value)
    assert "3 channels" in message and "(?, 3, 8, 8)" in message and "(4, 2, 3, 3)" in message
    assert "test_nn.py" in message
    with pytest.raises(KilnShapeError, match="smaller than the effective kernel"):
        nn.conv2d(T.tensor4("x", shape=(1, 2, 2, 8)), w, dilation=2)
    with pytest.raises(KilnValueError, match="stride 1"):
        nn.conv2d(x, w, stride=2, padding="same")
    with pytest.raises(KilnShapeError, match="odd effective kernel"):
        nn.conv2d(x, T.tensor4("w", shape=(4, 3, 2, 3)), padding="same")
    with pytest.raises(KilnTypeError, match="share a dtype"):
        Conv2d()(x, T.tensor4("w", "float64"))


def test_pool_and_other_errors():
    x = T.tensor4("x", shape=(1, 1, 3, 3))
    with pytest.raises(KilnShapeError, match="does not fit"):
        nn.pool2d(x, (4, 4))
    with pytest.raises(KilnValueError, match="smaller than the window"):
        nn.pool2d(x, (2, 2), padding=2)
    with pytest.raises(KilnValueError, match="mode"):
        nn.pool2d(x, (2, 2), mode="median")
    with pytest.raises(KilnShapeError, match="divide"):
        nn.probabilistic_max_pool(x, (2, 2))
    with pytest.raises(KilnTypeError, match="int vector"):
        nn.softmax_cross_entropy(T.matrix("x"), T.vector("y"))
    with pytest.raises(KilnValueError, match="odd"):
        nn.lcn(T.tensor4("x"), size=4)
    with pytest.raises(KilnTypeError, match="4-d"):
        nn.lcn(T.matrix("x"))


def test_run_time_shape_errors_name_the_node():
    x, w = T.tensor4("x"), T.tensor4("w")
    f = engine.function([x, w], nn.conv2d(x, w), backend="numpy")
    with pytest.raises(KilnError, match="Conv2d"):
        f(np.zeros((1, 3, 5, 5), "float32"), np.zeros((2, 2, 3, 3), "float32"))
    y = T.lvector("y")
    g = engine.function([x, y], nn.softmax_cross_entropy(x.flatten(2), y), backend="numpy")
    with pytest.raises(KilnValueError, match="labels must lie in"):
        g(np.zeros((2, 1, 1, 3), "float32"), np.array([0, 3]))
