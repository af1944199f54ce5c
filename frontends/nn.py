"""Deep-learning ops of the 2014 toolbox: ``import frontends.nn as nn`` (also ``T.nnet``).

    h = nn.pool2d(T.tanh(nn.conv2d(x, W)), ws=(2, 2), mode="max")
    p_y = nn.softmax(T.dot(h.flatten(2), V) + b)
    cost = nn.categorical_crossentropy(p_y, y).mean()   # rewritten into the stable fused form

Conventions (DESIGN.md "Semantics contract"): conv2d is NCHW cross-correlation
(``filter_flip=True`` for Theano's convolution); pooling ties go to the first index; LCN is
Jarrett et al. 2009; dropout's ``p`` is the drop probability.
"""

from __future__ import annotations

from typing import Any

from engine.config import config
from engine.errors import KilnTypeError, KilnValueError
from engine.graph import Variable, as_variable
from engine.ops import elemwise as E
from engine.ops import reduce as R
from engine.ops.conv import (
    Conv2d,
    Conv2dGradInput,
    Conv2dGradWeight,
    LocallyConnected2d,
    shape_arg,
    static_shape_of_arg,
)
from engine.ops.lcn import LCN
from engine.ops.nnet import LogSoftmax, Softmax, SoftmaxCrossEntropy
from engine.ops.pool import Pool2d, ProbMaxPool, ProbMaxPoolSample
from engine.types import is_float, is_integer, promote
from frontends.tensor import relu, sigmoid, softplus, tanh

__all__ = [
    "binary_crossentropy", "categorical_crossentropy", "conv2d", "conv2d_grad_input", "conv2d_grad_weight",
    "dropout", "hard_sigmoid", "kl_sparsity", "l1", "l2", "lcn", "locally_connected2d", "log_softmax", "pool2d",
    "pool_2d", "probabilistic_max_pool", "relu", "sample_probabilistic_max_pool", "sigmoid", "softmax",
    "softmax_cross_entropy", "softplus", "tanh", "ultra_fast_sigmoid",
]


def _float_pair(*values: Any) -> list[Variable]:
    """Variables cast to one float dtype (numpy promotion; ints become floatX)."""
    variables = [as_variable(v) for v in values]
    dtype = promote(*[v.dtype for v in variables])
    if not is_float(dtype):
        dtype = config.floatX
    return [E.cast(v, dtype) for v in variables]


# -- convolution ----------------------------------------------------------------------------------

def _conv_op(cls: type, kernel: tuple, stride, padding, dilation, groups, filter_flip) -> Any:
    op = cls(stride, padding, dilation, groups, filter_flip)
    if isinstance(op.padding, str) and None not in kernel:  # resolve now: code generators prefer ints
        op = cls(stride, op.resolve_padding(*kernel), dilation, groups, filter_flip)
    return op


def conv2d(x: Any, W: Any, stride: Any = 1, padding: Any = "valid", dilation: Any = 1, groups: int = 1,
           filter_flip: bool = False, *, border_mode: Any = None, subsample: Any = None,
           filter_dilation: Any = None, input_shape: Any = None, filter_shape: Any = None) -> Variable:
    """2-d convolution of x (N, C, H, W) with filters W (F, C/groups, KH, KW) -> (N, F, OH, OW).

    ``padding``: "valid", "full", "same" (stride 1, odd kernel), an int or (ph, pw). Theano's
    keywords ``border_mode`` ("half" = "same"), ``subsample`` and ``filter_dilation`` are accepted;
    ``input_shape`` / ``filter_shape`` are hints and ignored. Cross-correlation unless
    ``filter_flip=True`` (note: Theano's conv2d flips by default).
    """
    padding = padding if border_mode is None else border_mode
    stride = stride if subsample is None else subsample
    dilation = dilation if filter_dilation is None else filter_dilation
    x, W = _float_pair(x, W)
    if W.ndim != 4:
        raise KilnTypeError(f"conv2d: filters {W.type} (created at {W.site}) must be 4-d (F, C/groups, KH, KW)")
    return _conv_op(Conv2d, W.type.shape[2:], stride, padding, dilation, groups, filter_flip)(x, W)


def conv2d_grad_input(gy: Any, W: Any, x_shape: Any, stride: Any = 1, padding: Any = "valid", dilation: Any = 1,
                      groups: int = 1, filter_flip: bool = False) -> Variable:
    """The adjoint of conv2d w.r.t. its input (a "transposed convolution"): ``x_shape`` is a
    tuple of ints, an int vector, or a tensor whose shape is meant."""
    gy, W = _float_pair(gy, W)
    kernel = W.type.shape[2:] if W.ndim == 4 else (None, None)
    op = _conv_op(Conv2dGradInput, kernel, stride, padding, dilation, groups, filter_flip)
    return op(gy, W, _shape_input(x_shape))


def conv2d_grad_weight(x: Any, gy: Any, w_shape: Any, stride: Any = 1, padding: Any = "valid", dilation: Any = 1,
                       groups: int = 1, filter_flip: bool = False) -> Variable:
    """The adjoint of conv2d w.r.t. its filters; ``w_shape`` as ``x_shape`` of conv2d_grad_input."""
    x, gy = _float_pair(x, gy)
    shape = _shape_input(w_shape)
    op = Conv2dGradWeight(stride, padding, dilation, groups, filter_flip)
    op = _conv_op(Conv2dGradWeight, static_shape_of_arg(op, shape, 4)[2:], stride, padding, dilation, groups,
                  filter_flip)
    return op(x, gy, shape)


def _shape_input(shape: Any) -> Variable:
    import numpy as np

    if isinstance(shape, Variable):
        return shape if shape.ndim == 1 else shape_arg(shape)
    return as_variable(np.asarray(shape, dtype="int64"))


def locally_connected2d(x: Any, W: Any, stride: Any = 1) -> Variable:
    """Untied-weights convolution (Le et al. 2011): x (N, C, H, W), W (OH, OW, F, C, KH, KW)
    -> (N, F, OH, OW), valid padding."""
    x, W = _float_pair(x, W)
    return LocallyConnected2d(stride)(x, W)


# -- pooling --------------------------------------------------------------------------------------

_MODE_ALIASES = {
    "max": ("max", True), "avg": ("avg", None), "average": ("avg", None), "mean": ("avg", None),
    "average_inc_pad": ("avg", True), "average_exc_pad": ("avg", False), "l2": ("l2", True),
    "sum": ("sum", True),
}


def pool2d(x: Any, ws: Any, stride: Any = None, padding: Any = 0, mode: str = "max", ignore_border: bool = True,
           count_include_pad: bool = True, *, pad: Any = None) -> Variable:
    """Pool the last two axes with windows ``ws``; ``stride`` defaults to ``ws``.

    mode: "max", "avg" (divisor per ``count_include_pad``), "l2" (sqrt of the sum of squares),
    "sum", or Theano's "average_inc_pad" / "average_exc_pad". ``ignore_border=False`` keeps a
    last partial window (ceil mode). ``pad`` is Theano's name for ``padding``.
    """
    if mode not in _MODE_ALIASES:
        raise KilnValueError(f"pool2d mode must be one of {sorted(_MODE_ALIASES)}, given {mode!r}")
    mode, include = _MODE_ALIASES[mode]
    include = count_include_pad if include is None else include
    padding = padding if pad is None else pad
    return Pool2d(ws, stride, padding, mode, ignore_border, include)(as_variable(x))


def pool_2d(input: Any, ws: Any, ignore_border: bool = True, stride: Any = None, pad: Any = (0, 0),
            mode: str = "max") -> Variable:
    """Theano's ``pool_2d`` argument order (``theano.tensor.signal.pool.pool_2d``); see ``pool2d``."""
    return pool2d(input, ws, stride, pad, mode, ignore_border)


def probabilistic_max_pool(I: Any, ws: Any) -> tuple[Variable, Variable]:
    """Probabilistic max-pooling (Lee et al. 2009) of energies I (..., H, W) in blocks ws:
    returns (detection_probs (..., H, W), pool_probs (..., H/bh, W/bw))."""
    det, pooled = ProbMaxPool(ws)(as_variable(I))
    return det, pooled


def sample_probabilistic_max_pool(I: Any, ws: Any, rng: Any) -> tuple[Variable, Variable]:
    """(detection_sample, pool_sample) of probabilistic max-pooling: per block at most one unit
    on, drawn with one ``rng.uniform`` number per block (``rng`` an ``engine.RandomStreams``)."""
    from engine.ops.shape import shape_of

    I = as_variable(I)
    op = ProbMaxPoolSample(ws)
    pooled = op.pooled_shape(I)
    lead = [d if d is not None else shape_of(I, i) for i, d in enumerate(pooled[:-2])]
    spatial = [d if d is not None else shape_of(I, I.ndim - 2 + j) // op.ws[j] for j, d in enumerate(pooled[-2:])]
    size = tuple(lead + spatial)
    u = rng.uniform(size=tuple(size), dtype=I.dtype)
    det, pooled_sample = op(I, u)
    return det, pooled_sample


# -- activations Theano's nnet also had ------------------------------------------------------------

def ultra_fast_sigmoid(x: Any) -> Variable:
    """Theano's fast approximation; here the exact (stable) sigmoid."""
    return sigmoid(x)


def hard_sigmoid(x: Any) -> Variable:
    """clip(0.2 x + 0.5, 0, 1), as Theano's."""
    return E.apply("minimum", E.apply("maximum", E.add(E.mul(x, 0.2), 0.5), 0), 1)


# -- normalization ------------------------------------------------------------------------------

def lcn(x: Any, size: int = 9, sigma: float | None = None, mode: str = "both", across_channels: bool = True,
        eps: float = 1e-4) -> Variable:
    """Local contrast normalization (Jarrett et al. 2009) of x (N, C, H, W): subtract the
    Gaussian-weighted local mean, divide by max(local std, its mean over the image, eps).
    ``mode``: "both", "subtractive" or "divisive"; ``sigma`` defaults to size / 4.5."""
    return LCN(size, sigma, mode, across_channels, eps)(as_variable(x))


# -- softmax and costs ----------------------------------------------------------------------------

def _axis(x: Variable, axis: int) -> int:
    if not -x.ndim <= axis < x.ndim:
        raise KilnValueError(f"axis {axis} is out of range for a {x.ndim}-d tensor {x.type} (created at {x.site})")
    return axis % x.ndim


def softmax(x: Any, axis: int = -1) -> Variable:
    x = as_variable(x)
    return Softmax(_axis(x, axis))(x)


def log_softmax(x: Any, axis: int = -1) -> Variable:
    x = as_variable(x)
    return LogSoftmax(_axis(x, axis))(x)


def softmax_cross_entropy(logits: Any, labels: Any) -> Variable:
    """Per-example -log softmax(logits)[i, labels[i]], computed stably: logits (N, K), labels (N,)."""
    return SoftmaxCrossEntropy()(as_variable(logits), as_variable(labels))


def categorical_crossentropy(probs: Any, targets: Any) -> Variable:
    """Theano's: the per-example cross-entropy of probabilities ``probs`` (N, K) against int labels
    (N,) -> ``-log(probs)[arange(N), targets]``, or one-hot/soft targets (N, K) ->
    ``-sum(targets * log(probs), axis=-1)``. Built from plain graph, so the stabilizer turns
    ``categorical_crossentropy(softmax(x), y)`` into the fused ``SoftmaxCrossEntropy``."""
    from engine.ops.shape import arange, shape_of

    probs, targets = as_variable(probs), as_variable(targets)
    if targets.ndim == probs.ndim - 1 and is_integer(targets.dtype):
        if probs.ndim != 2:
            raise KilnTypeError(f"categorical_crossentropy with int labels needs 2-d probabilities, given "
                                f"{probs.type} (created at {probs.site})")
        return -(E.apply("log", probs)[arange(shape_of(probs, 0)), targets])
    if targets.ndim == probs.ndim:
        return -R.reduce(E.mul(targets, E.apply("log", probs)), "sum", -1)
    raise KilnTypeError(f"categorical_crossentropy: targets {targets.type} (created at {targets.site}) must be int "
                        f"labels with one axis less than the probabilities {probs.type}, or one-hot of their shape")


def binary_crossentropy(p: Any, t: Any) -> Variable:
    """Elementwise -(t log p + (1 - t) log(1 - p))."""
    return -(t * E.apply("log", p) + (1 - t) * E.apply("log", 1 - as_variable(p)))


def dropout(x: Any, p: Any, rng: Any, deterministic: bool = False) -> Variable:
    """Drop each unit with probability ``p`` and scale the kept ones by 1 / (1 - p) (inverted
    dropout); the identity when ``deterministic`` or p == 0. ``rng``: an engine.RandomStreams."""
    from engine.ops.shape import Shape

    x = as_variable(x)
    if deterministic or (isinstance(p, (int, float)) and p == 0):
        return x
    if isinstance(p, (int, float)) and not 0 <= p < 1:
        raise KilnValueError(f"dropout: p is the drop probability and must lie in [0, 1), given {p!r}")
    keep = 1 - p
    mask = rng.binomial(size=Shape()(x), p=keep, dtype=x.dtype)
    return x * mask / keep


def l1(x: Any) -> Variable:
    """sum(|x|)."""
    return R.reduce(E.apply("abs", x), "sum")


def l2(x: Any) -> Variable:
    """sum(x ** 2) (no square root, as weight decay uses it)."""
    return R.reduce(E.sqr(as_variable(x)), "sum")


def kl_sparsity(rho: Any, rho_hat: Any) -> Variable:
    """The sparse autoencoder penalty sum(rho log(rho / rho_hat) + (1 - rho) log((1 - rho) / (1 - rho_hat)))
    of the target activation ``rho`` against the mean activations ``rho_hat``."""
    rho_hat = as_variable(rho_hat)
    log = lambda z: E.apply("log", z)
    return R.reduce(rho * log(rho / rho_hat) + (1 - rho) * log((1 - rho) / (1 - rho_hat)), "sum")
