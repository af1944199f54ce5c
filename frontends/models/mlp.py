"""Fully connected layers and the multilayer perceptron (the tutorials' ``mlp.py``)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from frontends import init
from frontends import tensor as T
from frontends.models._util import numpy_rng, param
from frontends.models.logistic import LogisticRegression


class HiddenLayer:
    """``output = activation(input W + b)``, Glorot-initialized (x4 for the sigmoid)."""

    def __init__(self, input: Any, n_in: int, n_out: int, rng: Any = None, W: Any = None, b: Any = None,
                 activation: Callable | None = T.tanh, name: str = "") -> None:
        self.input = input
        if W is None:
            gain = 4.0 if activation is T.sigmoid else 1.0
            W = init.glorot_uniform((n_in, n_out), numpy_rng(rng), gain=gain)
        self.W = param(W, f"{name}W")
        self.b = param(init.zeros((n_out,)) if b is None else b, f"{name}b")
        lin_output = T.dot(input, self.W) + self.b
        self.output = lin_output if activation is None else activation(lin_output)
        self.params = [self.W, self.b]


class MLP:
    """Hidden layer(s) of ``n_hidden`` units (an int or a list) followed by a logistic regression."""

    def __init__(self, input: Any, n_in: int, n_hidden: int | Sequence[int], n_out: int, rng: Any = None,
                 activation: Callable = T.tanh) -> None:
        rng = numpy_rng(rng)
        sizes = [n_hidden] if isinstance(n_hidden, int) else list(n_hidden)
        self.input = input
        self.hidden_layers = []
        layer_input, layer_in = input, n_in
        for i, size in enumerate(sizes):
            layer = HiddenLayer(layer_input, layer_in, size, rng=rng, activation=activation, name=f"h{i}.")
            self.hidden_layers.append(layer)
            layer_input, layer_in = layer.output, size
        self.hiddenLayer = self.hidden_layers[0]
        self.logRegressionLayer = LogisticRegression(layer_input, layer_in, n_out)
        weights = [layer.W for layer in self.hidden_layers] + [self.logRegressionLayer.W]
        self.L1 = sum((abs(W).sum() for W in weights[1:]), abs(weights[0]).sum())
        self.L2_sqr = sum(((W ** 2).sum() for W in weights[1:]), (weights[0] ** 2).sum())
        self.negative_log_likelihood = self.logRegressionLayer.negative_log_likelihood
        self.errors = self.logRegressionLayer.errors
        self.p_y_given_x = self.logRegressionLayer.p_y_given_x
        self.y_pred = self.logRegressionLayer.y_pred
        self.params = [p for layer in self.hidden_layers for p in layer.params] + self.logRegressionLayer.params
