"""stabilize: each rule's structure and values, and logits of +-1000 giving finite, correct
values and gradients on the numpy backend (the naive graphs give inf / nan there)."""

from __future__ import annotations

import numpy as np
import pytest

import engine
import frontends.nn as nn
import frontends.tensor as T
from tests.rewrite.helpers import check, describe, rewrite

STAB = ["canonicalize", "stabilize"]
RNG = np.random.default_rng(0)
BIG = np.array([[-1000.0, -30.0, 0.0, 30.0, 1000.0], [1000.0, 2.0, -1000.0, 0.5, -3.0]], "float32")


def logits():
    return RNG.standard_normal((2, 5)).astype("float32")


def numpy_step(inputs, outputs, optimizer="default"):
    return engine.function(inputs, outputs, backend="numpy", optimizer=optimizer, on_unused_input="ignore")


def softplus(z):
    return np.logaddexp(0, z.astype("float64"))


def sigmoid(z):
    return 0.5 * (1 + np.tanh(z.astype("float64") / 2))


@pytest.mark.parametrize("build,expected", [
    (lambda x: T.log(T.sigmoid(x)), ["neg", "softplus", "neg"]),
    (lambda x: T.log(1 - T.sigmoid(x)), ["softplus", "neg"]),
    (lambda x: T.log1p(-T.sigmoid(x)), ["softplus", "neg"]),
])
def test_log_sigmoid_rules(build, expected):
    x = T.matrix("x")
    assert check([x], [build(x)], [logits()], only=STAB) == expected


def test_log_sigmoid_gradient_cancels_the_division():
    x = T.matrix("x")
    g = engine.grad(T.log(T.sigmoid(x)).sum(), x)
    names = check([x], [g], [logits()], only=STAB)
    assert "true_div" not in names
    f = numpy_step([x], [T.log(T.sigmoid(x)).sum(), g])
    value, grad = f(BIG)
    assert np.isclose(value, -softplus(-BIG).sum(), rtol=1e-6)
    np.testing.assert_allclose(grad, 1 - sigmoid(BIG), atol=1e-6)
    naive_value, naive_grad = numpy_step([x], [T.log(T.sigmoid(x)).sum(), g], optimizer=None)(BIG)
    assert not np.isfinite(naive_value) and not np.isfinite(naive_grad).all()


def test_binary_cross_entropy_of_sigmoid_is_finite_with_gradient():
    z, t = T.matrix("z"), T.matrix("t")
    cost = T.mean(nn.binary_crossentropy(T.sigmoid(z), t))
    gz = engine.grad(cost, z)
    targets = (RNG.uniform(size=BIG.shape) > 0.5).astype("float32")
    value, grad = numpy_step([z, t], [cost, gz])(BIG, targets)
    expected = np.mean(softplus(BIG) - targets * BIG)
    assert np.isclose(value, expected, rtol=1e-6)
    np.testing.assert_allclose(grad, (sigmoid(BIG) - targets) / BIG.size, atol=1e-7)
    names = describe(rewrite([cost, gz], only=STAB))
    assert "log" not in names and "softplus" in names
    # and on ordinary values the rewritten graph matches the naive one
    check([z, t], [cost, gz], [logits(), targets], only=STAB)


def test_log_softmax():
    x = T.matrix("x")
    assert check([x], [T.log(nn.softmax(x))], [logits()], only=STAB) == ["LogSoftmax"]


@pytest.mark.parametrize("form", ["neg_outside", "neg_inside", "log_softmax", "mean", "categorical"])
def test_softmax_cross_entropy(form):
    x, y = T.matrix("x"), T.lvector("y")
    n = y.shape[0]
    build = {
        "neg_outside": lambda: -T.log(nn.softmax(x))[T.arange(n), y],
        "neg_inside": lambda: (-T.log(nn.softmax(x)))[T.arange(n), y],
        "log_softmax": lambda: -nn.log_softmax(x)[T.arange(n), y],
        "mean": lambda: -T.mean(T.log(nn.softmax(x))[T.arange(n), y]),
        "categorical": lambda: nn.categorical_crossentropy(nn.softmax(x), y),
    }[form]
    out = build()
    labels = np.array([4, 2], "int64")
    names = check([x, y], [out], [logits(), labels], only=STAB)
    assert "SoftmaxCrossEntropy" in names and "LogSoftmax" not in names and "Softmax" not in names
    cost = out if out.ndim == 0 else out.mean()
    gx = engine.grad(cost, x)
    value, grad = numpy_step([x, y], [cost, gx])(BIG, labels)
    lse = np.log(np.sum(np.exp(BIG.astype("float64") - BIG.max(1, keepdims=True)), 1)) + BIG.max(1)
    expected = np.mean(lse - BIG[np.arange(2), labels])
    assert np.isfinite(value) and np.isclose(value, expected, rtol=1e-6)
    p = np.exp(BIG.astype("float64") - lse[:, None])
    onehot = np.eye(5)[labels]
    np.testing.assert_allclose(grad, (p - onehot) / 2, atol=1e-7)


def test_softmax_gradient_through_log_is_stable():
    x = T.matrix("x")
    w = T.constant(np.arange(5, dtype="float32"))
    cost = (T.log(nn.softmax(x)) * w).sum()
    gx = engine.grad(cost, x)
    value, grad = numpy_step([x], [cost, gx])(BIG)
    assert np.isfinite(value) and np.isfinite(grad).all()
    check([x], [cost, gx], [logits()], only=STAB)


def test_logsumexp():
    x = T.matrix("x")
    out = T.log(T.sum(T.exp(x), axis=1))
    names = check([x], [out], [logits()], only=STAB)
    assert "Reduce" in names and names.count("exp") == 1
    gx = engine.grad(out.sum(), x)
    value, grad = numpy_step([x], [out, gx])(BIG)
    shifted = BIG.astype("float64") - BIG.max(1, keepdims=True)
    np.testing.assert_allclose(value, np.log(np.exp(shifted).sum(1)) + BIG.max(1), rtol=1e-6)
    np.testing.assert_allclose(grad, np.exp(shifted) / np.exp(shifted).sum(1, keepdims=True), atol=1e-7)
    check([x], [out, gx], [logits()], only=STAB)
    twice = rewrite(rewrite(out, only=STAB), only=STAB)  # the stable form is a fixed point
    assert describe(twice) == names
