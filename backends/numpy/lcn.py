"""Numpy reference ("oracle") for local contrast normalization (Jarrett et al. 2009).

Pure functions over numpy arrays, no graph objects. Definition (DESIGN.md, "Semantics
contract"), per image of an NCHW batch:

* ``w`` = a size x size Gaussian (sigma default size / 4.5) repeated over the C maps and
  normalized to sum 1 over (C, size, size) when ``across_channels=True``; when False,
  each map's window is normalized to sum 1 on its own and applied per channel.
* ``conv(x, w)[n, c, i, j] = sum_{c', u, v} w[c', u, v] x[n, c', i + u - r, j + v - r]``
  with zero padding "same" (r = size // 2, size odd): across channels the same local
  mean for every c; per channel ``c' = c`` only.
* ``v = x - conv(x, w)``; ``s = sqrt(conv(v * v, w))``; ``c = mean(s)`` over the image
  (all of its (c, i, j): one scalar per image; across channels s is the same for every
  c, so this is the mean over (i, j)); ``y = v / max(s, c, eps)`` elementwise.
* ``mode="subtractive"`` returns v; ``"divisive"`` applies the divisive step to x
  itself (v = x); ``"both"`` (default) is the full LCN.

Gradient tie rule (``lcn_grad``): ``max(s, c, eps)`` sends the gradient to the FIRST of
(s, c, eps) in that order that attains the max, i.e. s when s >= c and s >= eps, else c
when c >= eps, else eps (a constant: no gradient). Where s == 0 the derivative of the
square root is taken as 0 (as L2 pooling's gradient where the norm is 0).

Implementation: the Gaussian is separable, ``w[c', u, v] = g[u] g[v] / C`` with g the
normalized 1D Gaussian, so conv is (mean over channels when across) then a horizontal
and a vertical 1D blur with zero padding. Each 1D blur is ``size`` vectorized
multiply-adds of shifted slices (no (..., W, size) temporary as an im2col would need).
The blur is symmetric (g is symmetric, zero padding), and so is the channel mean, so
conv is self-adjoint: the vjp reuses conv itself.
Everything is computed in the input dtype; outputs are fresh C-contiguous arrays.
"""

from __future__ import annotations

import numbers
from typing import Any

import numpy as np

MODES = ("both", "subtractive", "divisive")

__all__ = ["MODES", "gaussian_window", "lcn", "lcn_grad"]


# ----------------------------------------------------------------------------- helpers


def _check_size_sigma(size: Any, sigma: Any) -> tuple[int, float]:
    if not isinstance(size, numbers.Integral) or isinstance(size, bool) or size < 1 or size % 2 == 0:
        # "same" zero padding needs a centre tap: an even window has none.
        raise ValueError(f"lcn size must be a positive odd int, got {size!r}")
    size = int(size)
    sigma = size / 4.5 if sigma is None else float(sigma)
    if not sigma > 0:
        raise ValueError(f"lcn sigma must be > 0, got {sigma!r}")
    return size, sigma


def _gaussian_1d(size: int, sigma: float) -> np.ndarray:
    """The 1D Gaussian over offsets -r..r, normalized to sum 1, in float64."""
    r = size // 2
    t = np.arange(-r, r + 1, dtype=np.float64)
    g = np.exp(-(t * t) / (2.0 * sigma * sigma))
    return g / g.sum()


def _check_x(x: Any) -> np.ndarray:
    x = np.asarray(x)
    if x.ndim != 4:
        raise ValueError(f"lcn expects an NCHW array (ndim 4), got shape {x.shape}")
    if not np.issubdtype(x.dtype, np.floating):
        raise TypeError(f"lcn needs a floating dtype, got {x.dtype}")
    return x


def _check_mode(mode: str) -> None:
    if mode not in MODES:
        raise ValueError(f"lcn mode must be one of {MODES}, got {mode!r}")


def _blur_axis(x: np.ndarray, g: np.ndarray, axis: int) -> np.ndarray:
    """1D correlation with g along ``axis``, zero padding "same" (g has odd length)."""
    r = len(g) // 2
    n = x.shape[axis]
    pad = [(0, 0)] * x.ndim
    pad[axis] = (r, r)
    xp = np.pad(x, pad)
    out = np.zeros_like(x)
    idx = [slice(None)] * x.ndim
    for u in range(len(g)):  # out[i] = sum_u g[u] x[i + u - r]
        idx[axis] = slice(u, u + n)
        out += g[u] * xp[tuple(idx)]
    return out


def _conv(x: np.ndarray, g: np.ndarray, across_channels: bool) -> np.ndarray:
    """conv(x, w) of the module docstring, for w = g g^T (/ C when across channels)."""
    if across_channels:
        # sum_{c'} w[c'] x[c'] with w[c'] = g g^T / C: the channel mean, blurred, the same
        # for every output channel (broadcast back to C maps).
        m = x.mean(axis=1, keepdims=True, dtype=x.dtype)
        return np.broadcast_to(_blur_axis(_blur_axis(m, g, 2), g, 3), x.shape)
    return _blur_axis(_blur_axis(x, g, 2), g, 3)


def _forward(x: np.ndarray, g: np.ndarray, mode: str, across_channels: bool,
             eps: np.ndarray) -> dict[str, np.ndarray]:
    """Every intermediate the vjp needs."""
    v = x - _conv(x, g, across_channels) if mode != "divisive" else x
    if mode == "subtractive":
        return {"v": v, "y": v}
    s = np.sqrt(_conv(v * v, g, across_channels))
    c = s.mean(axis=(1, 2, 3), keepdims=True, dtype=x.dtype)  # one scalar per image
    d = np.maximum(np.maximum(s, c), eps)
    return {"v": v, "s": s, "c": c, "d": d, "y": v / d}


# ----------------------------------------------------------------------------- public API


def gaussian_window(size: int, sigma: float | None, channels: int, across_channels: bool,
                    dtype: Any = np.float64) -> np.ndarray:
    """The LCN window ``w`` of shape (channels, size, size).

    ``across_channels=True``: the 2D Gaussian repeated over the maps, normalized to sum 1
    over all of (channels, size, size); False: each map's copy sums to 1 on its own.
    """
    size, sigma = _check_size_sigma(size, sigma)
    if not isinstance(channels, numbers.Integral) or channels < 1:
        raise ValueError(f"channels must be a positive int, got {channels!r}")
    g = _gaussian_1d(size, sigma)
    w2 = np.multiply.outer(g, g)
    w2 = w2 / w2.sum()
    w = np.repeat(w2[None], int(channels), axis=0)
    if across_channels:
        w = w / int(channels)
    return np.ascontiguousarray(w, dtype=dtype)


def lcn(x: np.ndarray, size: int = 9, sigma: float | None = None, mode: str = "both",
        across_channels: bool = True, eps: float = 1e-4) -> np.ndarray:
    """Local contrast normalization of an NCHW array (see the module docstring)."""
    x = _check_x(x)
    _check_mode(mode)
    size, sigma = _check_size_sigma(size, sigma)
    g = _gaussian_1d(size, sigma).astype(x.dtype)
    y = _forward(x, g, mode, across_channels, np.asarray(eps, dtype=x.dtype))["y"]
    return np.ascontiguousarray(y, dtype=x.dtype)


def lcn_grad(x: np.ndarray, gy: np.ndarray, size: int = 9, sigma: float | None = None,
             mode: str = "both", across_channels: bool = True, eps: float = 1e-4) -> np.ndarray:
    """The exact vjp of ``lcn``: gx given gy. Ties in max(s, c, eps) go to the first of
    (s, c, eps) that attains the max; d sqrt / dq is taken as 0 where s == 0."""
    x = _check_x(x)
    _check_mode(mode)
    size, sigma = _check_size_sigma(size, sigma)
    gy = np.asarray(gy)
    if gy.shape != x.shape:
        raise ValueError(f"lcn_grad: gy has shape {gy.shape}, expected x's shape {x.shape}")
    gy = gy.astype(x.dtype, copy=False)
    g = _gaussian_1d(size, sigma).astype(x.dtype)
    eps_ = np.asarray(eps, dtype=x.dtype)  # compare in the input dtype, as the forward
    f = _forward(x, g, mode, across_channels, eps_)
    zero = np.zeros((), dtype=x.dtype)

    if mode == "subtractive":
        gv = gy
    else:
        v, s, c, d = f["v"], f["s"], f["c"], f["d"]
        # y = v / d
        gv = gy / d
        gd = -gy * v / (d * d)
        # d = max(s, c, eps): the first of (s, c, eps) attaining the max takes gd.
        to_s = (s >= c) & (s >= eps_)
        to_c = ~to_s & (c >= eps_)
        # c = mean(s) over the image: its gradient reaches every s of the image equally.
        gc = np.where(to_c, gd, zero).sum(axis=(1, 2, 3), keepdims=True, dtype=x.dtype)
        gs = np.where(to_s, gd, zero) + gc / x.dtype.type(x[0].size)
        # s = sqrt(q): dq = gs / (2 s), 0 where s == 0.
        safe = np.where(s == 0, np.ones((), dtype=x.dtype), s)
        gq = np.where(s == 0, zero, gs / (2 * safe))
        # q = conv(v * v): conv is self-adjoint, d(v*v)/dv = 2 v.
        gv = gv + 2 * v * _conv(gq, g, across_channels)

    # v = x - conv(x) (subtractive step) or v = x (divisive only).
    gx = gv if mode == "divisive" else gv - _conv(gv, g, across_channels)
    return np.ascontiguousarray(gx, dtype=x.dtype)

