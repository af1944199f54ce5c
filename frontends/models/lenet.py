"""Convolution + max-pooling layers and LeNet5 (the tutorials' ``convolutional_mlp.py``)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from frontends import init, nn
from frontends import tensor as T
from frontends.models._util import numpy_rng, param
from frontends.models.logistic import LogisticRegression
from frontends.models.mlp import HiddenLayer


def _pair(v: int | Sequence[int]) -> tuple[int, int]:
    return (int(v), int(v)) if isinstance(v, int) else (int(v[0]), int(v[1]))


class LeNetConvPoolLayer:
    """``activation(maxpool(conv2d(input, W)) + b)`` with filters ``(F, C, kh, kw)`` (valid conv)."""

    def __init__(self, input: Any, filter_shape: Sequence[int], poolsize: int | Sequence[int] = (2, 2),
                 rng: Any = None, image_shape: Sequence[int] | None = None, activation: Callable = T.tanh,
                 W: Any = None, b: Any = None, name: str = "") -> None:
        filter_shape = tuple(int(d) for d in filter_shape)
        if image_shape is not None and image_shape[1] != filter_shape[1]:
            raise ValueError(f"image_shape {tuple(image_shape)} has {image_shape[1]} channels, "
                             f"filter_shape {filter_shape} expects {filter_shape[1]}")
        self.poolsize = _pair(poolsize)
        self.input = input
        if W is None:
            W = init.glorot_uniform(filter_shape, numpy_rng(rng), poolsize=self.poolsize)
        self.W = param(W, f"{name}W")
        self.b = param(init.zeros((filter_shape[0],)) if b is None else b, f"{name}b")
        conv_out = nn.conv2d(input, self.W)
        pooled = conv_out if self.poolsize == (1, 1) else nn.pool2d(conv_out, ws=self.poolsize, mode="max",
                                                                     ignore_border=True)
        self.output = activation(pooled + self.b.dimshuffle("x", 0, "x", "x"))
        self.params = [self.W, self.b]


class LeNet:
    """conv-pool, conv-pool, a fully connected tanh layer and a softmax (LeNet5 of the tutorial).

    ``input`` is a matrix of flattened images ``(batch, channels * height * width)`` (any batch
    size) or already a 4-D tensor. The defaults are the tutorial's MNIST network (20 and 50 5x5
    filters, 2x2 max-pooling, 500 tanh units); for digits' 8x8 images use e.g.
    ``image_shape=(8, 8), filter_sizes=(3, 2), pool_sizes=(2, 1)``.
    """

    def __init__(self, input: Any, image_shape: Sequence[int] = (28, 28), n_channels: int = 1,
                 nkerns: Sequence[int] = (20, 50), filter_sizes: Sequence[Any] = (5, 5),
                 pool_sizes: Sequence[Any] = ((2, 2), (2, 2)), n_hidden: int = 500, n_out: int = 10,
                 rng: Any = None) -> None:
        rng = numpy_rng(rng)
        height, width = _pair(image_shape)
        self.input = input
        x = input if input.ndim == 4 else input.reshape((-1, n_channels, height, width))
        self.layers: list[Any] = []
        channels = n_channels
        for i, (k, f, p) in enumerate(zip(nkerns, filter_sizes, pool_sizes)):
            (fh, fw), (ph, pw) = _pair(f), _pair(p)
            layer = LeNetConvPoolLayer(x, (k, channels, fh, fw), poolsize=(ph, pw), rng=rng, name=f"conv{i}.")
            self.layers.append(layer)
            height, width = (height - fh + 1) // ph, (width - fw + 1) // pw
            if height < 1 or width < 1:
                raise ValueError(f"LeNet: layer {i} leaves no output pixels; use smaller filters or pools")
            x, channels = layer.output, k
        self.feature_shape = (channels, height, width)
        hidden = HiddenLayer(x.flatten(2), channels * height * width, n_hidden, rng=rng, activation=T.tanh,
                             name="fc.")
        self.logistic = LogisticRegression(hidden.output, n_hidden, n_out)
        self.layers += [hidden, self.logistic]
        self.p_y_given_x = self.logistic.p_y_given_x
        self.y_pred = self.logistic.y_pred
        self.negative_log_likelihood = self.logistic.negative_log_likelihood
        self.errors = self.logistic.errors
        self.params = [p for layer in self.layers for p in layer.params]
