"""What SdA and DBN share: a stack of sigmoid layers, a logistic regression on top, and the
tutorials' fine-tuning functions over shared datasets sliced by a symbolic minibatch index."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import engine
from frontends import tensor as T
from frontends.models._util import numpy_rng, random_streams
from frontends.models.logistic import LogisticRegression
from frontends.models.mlp import HiddenLayer
from frontends.updates import sgd


def batch_slice(index: Any, batch_size: int) -> slice:
    return slice(index * batch_size, (index + 1) * batch_size)


def n_batches(shared_x: Any, batch_size: int) -> int:
    return shared_x.get_value(borrow=True).shape[0] // batch_size


class DeepClassifier:
    """Sigmoid hidden layers (each paired by a subclass with an unsupervised layer sharing its
    weights) and a ``LogisticRegression`` output layer."""

    def __init__(self, numpy_rng_: Any, theano_rng: Any, n_ins: int, hidden_layers_sizes: Sequence[int],
                 n_outs: int, make_unsupervised: Callable) -> None:
        rng = numpy_rng(numpy_rng_)
        self.theano_rng = random_streams(theano_rng, rng)
        self.x = T.matrix("x")
        self.y = T.lvector("y")
        self.sigmoid_layers: list[HiddenLayer] = []
        self.pretrain_layers: list[Any] = []
        self.params: list[Any] = []
        layer_input, n_in = self.x, n_ins
        for i, size in enumerate(hidden_layers_sizes):
            sigmoid_layer = HiddenLayer(layer_input, n_in, size, rng=rng, activation=T.sigmoid, name=f"h{i}.")
            self.sigmoid_layers.append(sigmoid_layer)
            self.params += sigmoid_layer.params
            self.pretrain_layers.append(make_unsupervised(layer_input, n_in, size, rng, sigmoid_layer))
            layer_input, n_in = sigmoid_layer.output, size
        self.logLayer = LogisticRegression(layer_input, n_in, n_outs)
        self.params += self.logLayer.params
        self.finetune_cost = self.logLayer.negative_log_likelihood(self.y)
        self.errors = self.logLayer.errors(self.y)
        self.n_layers = len(self.sigmoid_layers)

    def build_finetune_functions(self, datasets: Sequence, batch_size: int, learning_rate: Any,
                                 **function_kwargs: Any) -> tuple[Callable, Callable, Callable]:
        """``(train_fn(index) -> cost, valid_score() -> [errors per batch], test_score() -> ...)``
        with plain SGD on the fine-tuning cost."""
        (train_x, train_y), (valid_x, valid_y), (test_x, test_y) = datasets
        index = T.lscalar("index")
        s = batch_slice(index, batch_size)
        updates = sgd(self.finetune_cost, self.params, learning_rate)
        train_fn = engine.function([index], self.finetune_cost, updates=updates,
                            givens={self.x: train_x[s], self.y: train_y[s]}, name="train", **function_kwargs)

        def scorer(shared_x: Any, shared_y: Any, name: str) -> Callable:
            fn = engine.function([index], self.errors, givens={self.x: shared_x[s], self.y: shared_y[s]}, name=name,
                          **function_kwargs)
            count = n_batches(shared_x, batch_size)
            return lambda: [float(fn(i)) for i in range(count)]

        return train_fn, scorer(valid_x, valid_y, "valid"), scorer(test_x, test_y, "test")
