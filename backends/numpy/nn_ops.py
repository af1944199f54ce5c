"""numpy implementations of the deep-learning ops: conv, locally-connected, pooling, LCN,
probabilistic max-pooling and the softmax family. Each calls the independent reference kernels
of this package (conv.py, pool.py, lcn.py, prob_max_pool.py)."""

from __future__ import annotations

import numpy as np

from backends.numpy import conv as C
from backends.numpy import lcn as L
from backends.numpy import pool as P
from backends.numpy import prob_max_pool as PMP
from backends.numpy.table import implements
from engine.errors import KilnValueError
from engine.ops import conv, lcn, nnet, pool


def _shape(arg: np.ndarray) -> tuple:
    """A shape argument: an int vector, or a "like" array whose shape is meant."""
    return tuple(int(d) for d in arg) if arg.ndim == 1 else arg.shape


def _conv_kw(op) -> dict:
    return {"stride": op.stride, "padding": op.padding, "dilation": op.dilation, "groups": op.groups,
            "filter_flip": op.filter_flip}


@implements(conv.Conv2d)
def conv2d_impl(op, x, w):
    return C.conv2d(x, w, **_conv_kw(op))


@implements(conv.Conv2dGradInput)
def conv2d_grad_input_impl(op, gy, w, x_shape):
    return C.conv2d_grad_input(gy, w, _shape(x_shape), **_conv_kw(op))


@implements(conv.Conv2dGradWeight)
def conv2d_grad_weight_impl(op, x, gy, w_shape):
    return C.conv2d_grad_weight(x, gy, _shape(w_shape), **_conv_kw(op))


@implements(conv.LocallyConnected2d)
def locally_connected2d_impl(op, x, w):
    return C.locally_connected2d(x, w, op.stride)


@implements(conv.LocallyConnected2dGradInput)
def locally_connected2d_grad_input_impl(op, gy, w, x_shape):
    return C.locally_connected2d_grad_input(gy, w, _shape(x_shape), op.stride)


@implements(conv.LocallyConnected2dGradWeight)
def locally_connected2d_grad_weight_impl(op, x, gy, w_shape):
    return C.locally_connected2d_grad_weight(x, gy, _shape(w_shape), op.stride)


# -- pooling --------------------------------------------------------------------------------------

def _pool_geometry(op, x):
    out = P.pool2d_output_shape(x.shape, op.ws, op.stride, op.padding, op.ignore_border)[-2:]
    return op.ws, op.stride, op.padding, out


def _sum_pool(op, x):
    # the oracle has no "sum" mode: the same windows as its avg, without the divisor
    k, s, p, out = _pool_geometry(op, x)
    windows = P._windows(P._padded(x, k, s, p, out, 0), k, s, out)
    return np.ascontiguousarray(windows.sum(axis=(-2, -1)), dtype=x.dtype)


def _sum_pool_grad(op, x, gy):
    k, s, p, out = _pool_geometry(op, x)
    gxp = np.zeros(x.shape[:-2] + P._padded_hw(x.shape, k, s, p, out), dtype=x.dtype)
    for _, _, sl in P._tap_slices(k, s, out):
        gxp[(..., *sl)] += gy
    h, w = x.shape[-2:]
    return np.ascontiguousarray(gxp[..., p[0]:p[0] + h, p[1]:p[1] + w])


@implements(pool.Pool2d)
def pool2d_impl(op, x):
    if op.mode == "sum":
        return _sum_pool(op, x)
    return P.pool2d(x, op.ws, op.stride, op.padding, op.mode, op.ignore_border, op.count_include_pad)


@implements(pool.Pool2dGrad)
def pool2d_grad_impl(op, x, y, gy):
    if op.mode == "sum":
        return _sum_pool_grad(op, x, gy)
    return P.pool2d_grad(x, y, gy, op.ws, op.stride, op.padding, op.mode, op.ignore_border,
                         op.count_include_pad)


@implements(pool.MaxPool2dGradGrad)
def max_pool2d_grad_grad_impl(op, x, g):
    """Per window, g at the first in-bounds index of the max (the rule of pool2d_grad)."""
    k, s, p, out = _pool_geometry(op, x)
    h, w = x.shape[-2:]
    win = P._windows(P._padded(x, k, s, p, out, P._lowest(x.dtype)), k, s, out)
    g_win = P._windows(P._padded(g, k, s, p, out, 0), k, s, out)
    inside = np.zeros(P._padded_hw(x.shape, k, s, p, out), dtype=bool)
    inside[p[0]:p[0] + h, p[1]:p[1] + w] = True
    candidates = ((win == win.max(axis=(-2, -1), keepdims=True)) | np.isnan(win)) & P._windows(inside, k, s, out)
    flat = candidates.reshape(candidates.shape[:-2] + (k[0] * k[1],))
    first = flat.argmax(axis=-1)[..., None]
    picked = np.take_along_axis(g_win.reshape(g_win.shape[:-2] + (k[0] * k[1],)), first, axis=-1)
    return np.ascontiguousarray(picked[..., 0], dtype=x.dtype)


@implements(pool.ProbMaxPool)
def prob_max_pool_impl(op, x):
    return PMP.prob_max_pool(x, op.ws)


@implements(pool.ProbMaxPoolGrad)
def prob_max_pool_grad_impl(op, x, g_det, g_pool):
    return PMP.prob_max_pool_grad(x, op.ws, g_det, g_pool)


@implements(pool.ProbMaxPoolSample)
def prob_max_pool_sample_impl(op, x, u):
    return PMP.sample_prob_max_pool(x, op.ws, u)


# -- LCN ------------------------------------------------------------------------------------------

def _lcn_kw(op) -> dict:
    return {"size": op.size, "sigma": op.sigma, "mode": op.mode, "across_channels": op.across_channels,
            "eps": op.eps}


@implements(lcn.LCN)
def lcn_impl(op, x):
    return L.lcn(x, **_lcn_kw(op))


@implements(lcn.LCNGrad)
def lcn_grad_impl(op, x, gy):
    return L.lcn_grad(x, gy, **_lcn_kw(op))


# -- softmax family -----------------------------------------------------------------------------

@implements(nnet.Softmax)
def softmax_impl(op, x):
    e = np.exp(x - x.max(axis=op.axis, keepdims=True))
    return (e / e.sum(axis=op.axis, keepdims=True)).astype(x.dtype, copy=False)


def _log_softmax(x, axis):
    shifted = x - x.max(axis=axis, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=axis, keepdims=True))


@implements(nnet.LogSoftmax)
def log_softmax_impl(op, x):
    return _log_softmax(x, op.axis).astype(x.dtype, copy=False)


@implements(nnet.SoftmaxCrossEntropy)
def softmax_cross_entropy_impl(op, x, y):
    if x.shape[0] != y.shape[0]:
        raise KilnValueError(f"{op}: {x.shape[0]} rows of logits but {y.shape[0]} labels")
    if y.size and (y.min() < 0 or y.max() >= x.shape[1]):
        raise KilnValueError(f"{op}: labels must lie in [0, {x.shape[1]}), given labels from {y.min()} to {y.max()}")
    picked = np.take_along_axis(_log_softmax(x, 1), y.astype(np.int64)[:, None], axis=1)[:, 0]
    return (-picked).astype(x.dtype, copy=False)
