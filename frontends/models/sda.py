"""Stacked denoising autoencoders (the tutorials' ``SdA.py``)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

import engine
from engine.config import config
from frontends import tensor as T
from frontends.models._stack import DeepClassifier, batch_slice
from frontends.models.autoencoder import DenoisingAutoencoder


class StackedDenoisingAutoencoder(DeepClassifier):
    """Sigmoid layers, each sharing its weights with a ``DenoisingAutoencoder`` pretrained greedily
    on the previous layer's output; then the whole stack plus a logistic layer is fine-tuned."""

    def __init__(self, numpy_rng: Any = None, theano_rng: Any = None, n_ins: int = 784,
                 hidden_layers_sizes: Sequence[int] = (500, 500), n_outs: int = 10,
                 corruption_levels: Sequence[float] = (0.1, 0.1)) -> None:
        def make_da(layer_input: Any, n_in: int, size: int, rng: Any, sigmoid_layer: Any) -> DenoisingAutoencoder:
            return DenoisingAutoencoder(layer_input, n_in, size, rng=rng, theano_rng=self.theano_rng,
                                        W=sigmoid_layer.W, bhid=sigmoid_layer.b)

        super().__init__(numpy_rng, theano_rng, n_ins, hidden_layers_sizes, n_outs, make_da)
        self.dA_layers = self.pretrain_layers
        self.corruption_levels = list(corruption_levels)

    def pretraining_functions(self, train_set_x: Any, batch_size: int, **function_kwargs: Any) -> list[Callable]:
        """One function per layer: ``fn(index, corruption=level, lr=0.1) -> reconstruction cost``."""
        index = T.lscalar("index")
        corruption_level = T.scalar("corruption")
        learning_rate = T.scalar("lr")
        fns = []
        for i, dA in enumerate(self.dA_layers):
            cost, updates = dA.get_cost_updates(corruption_level, learning_rate)
            fn = engine.function([index, corruption_level, learning_rate], cost, updates=updates,
                          givens={self.x: train_set_x[batch_slice(index, batch_size)]}, name=f"pretrain{i}",
                          **function_kwargs)
            default = self.corruption_levels[i] if i < len(self.corruption_levels) else 0.0
            fns.append(_with_defaults(fn, default, 0.1))
        return fns


def _with_defaults(fn: Callable, corruption: float, lr: float) -> Callable:
    def pretrain(index: int, corruption: float = corruption, lr: float = lr) -> Any:
        return fn(index, _f32(corruption), _f32(lr))
    pretrain.function = fn
    return pretrain


def _f32(value: float) -> np.ndarray:
    return np.asarray(value, dtype=config.floatX)
