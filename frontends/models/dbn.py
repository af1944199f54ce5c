"""Deep belief networks (the tutorials' ``DBN.py``): RBMs pretrained greedily, then fine-tuned."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

import engine
from engine.config import config
from frontends import tensor as T
from frontends.models._stack import DeepClassifier, batch_slice
from frontends.models.rbm import RBM


class DBN(DeepClassifier):
    """Sigmoid layers, each sharing its weights and hidden biases with an ``RBM`` trained by CD-k
    on the previous layer's (mean-field) output, then a logistic layer; fine-tuned by SGD."""

    def __init__(self, numpy_rng: Any = None, theano_rng: Any = None, n_ins: int = 784,
                 hidden_layers_sizes: Sequence[int] = (500, 500), n_outs: int = 10) -> None:
        def make_rbm(layer_input: Any, n_in: int, size: int, rng: Any, sigmoid_layer: Any) -> RBM:
            return RBM(layer_input, n_in, size, rng=rng, theano_rng=self.theano_rng, W=sigmoid_layer.W,
                       hbias=sigmoid_layer.b)

        super().__init__(numpy_rng, theano_rng, n_ins, hidden_layers_sizes, n_outs, make_rbm)
        self.rbm_layers = self.pretrain_layers

    def pretraining_functions(self, train_set_x: Any, batch_size: int, k: int = 1,
                              **function_kwargs: Any) -> list[Callable]:
        """One function per layer: ``fn(index, lr=0.1) -> monitoring cost`` (one CD-k step)."""
        index = T.lscalar("index")
        learning_rate = T.scalar("lr")
        fns = []
        for i, rbm in enumerate(self.rbm_layers):
            cost, updates = rbm.get_cost_updates(learning_rate, persistent=None, k=k)
            fn = engine.function([index, learning_rate], cost, updates=updates,
                          givens={self.x: train_set_x[batch_slice(index, batch_size)]}, name=f"pretrain{i}",
                          **function_kwargs)
            fns.append(_with_default_lr(fn))
        return fns


def _with_default_lr(fn: Callable) -> Callable:
    def pretrain(index: int, lr: float = 0.1) -> Any:
        return fn(index, np.asarray(lr, dtype=config.floatX))
    pretrain.function = fn
    return pretrain
