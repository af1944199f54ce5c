"""Numpy reference ("oracle") for 2D pooling: max, average and L2.

Pure functions over numpy arrays, no graph objects. Pooling runs over the last two
axes of an array of any ndim >= 2 (NCHW in practice). Conventions (DESIGN.md,
"Semantics contract"):

* max: padding counts as -inf; in the gradient, each window's gradient goes to the
  FIRST in-bounds index of its max in row-major order within the window (PyTorch).
* avg: ``count_include_pad=True`` counts padding cells as zeros in the divisor,
  ``False`` divides by the number of in-bounds (input) cells.
* l2: ``sqrt(sum x^2)`` over the window, padding contributes 0; the gradient is
  ``gy * x / y`` and 0 where ``y == 0``.

Output shape: ``ignore_border=True`` is floor mode, ``(H + 2p - k) // s + 1`` (PyTorch
``ceil_mode=False``); ``ignore_border=False`` is ceil mode (Theano's / PyTorch's
``ceil_mode=True``): a last partial window is kept, but every window must start inside
the input plus the low padding. A window never extends the divisor past the padded
extent ``[0, H + 2p)``: cells beyond it (only in ceil mode) are not counted, for
either value of ``count_include_pad`` (PyTorch and Theano agree on this).

Implementation: pad once, take a zero-copy ``sliding_window_view`` and reduce the two
window axes. The adjoints scatter one window tap at a time through strided slices
(KH*KW vectorized adds), never a Python loop over pixels and never ``np.add.at``.
Everything is computed in the input dtype; outputs are fresh C-contiguous arrays.
"""

from __future__ import annotations

import numbers
from typing import Any

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

Pair = tuple[int, int]

MODES = ("max", "avg", "l2")

__all__ = ["MODES", "pool2d", "pool2d_grad", "pool2d_output_shape"]


# ----------------------------------------------------------------------------- helpers


def _is_int(v: Any) -> bool:
    # bool is an Integral, but True as a window size is almost surely a bug.
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def _pair(value: Any, name: str, minimum: int) -> Pair:
    """An int or a pair of ints -> (a, b), each >= minimum."""
    if _is_int(value):
        pair = (int(value), int(value))
    elif isinstance(value, (tuple, list)) and len(value) == 2 and all(map(_is_int, value)):
        pair = (int(value[0]), int(value[1]))
    else:
        raise ValueError(f"{name} must be an int or a pair of ints, got {value!r}")
    if min(pair) < minimum:
        raise ValueError(f"{name} must be >= {minimum} in each dimension, got {value!r}")
    return pair


def _params(ws: Any, stride: Any, padding: Any) -> tuple[Pair, Pair, Pair]:
    # stride=None means non-overlapping windows (stride = ws) and padding=None means 0,
    # as in Theano's pool_2d.
    k = _pair(ws, "ws", 1)
    s = k if stride is None else _pair(stride, "stride", 1)
    p = (0, 0) if padding is None else _pair(padding, "padding", 0)
    if p[0] >= k[0] or p[1] >= k[1]:
        # A window made only of padding would have no input cell: max = -inf and an
        # avg divisor of 0 with count_include_pad=False. Theano forbids it as well.
        raise ValueError(f"padding {p} must be smaller than the window ws {k} in each dimension")
    return k, s, p


def _out_len(n: int, k: int, s: int, p: int, ignore_border: bool) -> int:
    """Number of windows along one axis of length n (see the module docstring)."""
    r = n + 2 * p
    if ignore_border:
        return (r - k) // s + 1 if r >= k else 0
    if r < k:
        # Theano keeps one partial window when the input is smaller than the window.
        return 1
    out = -((k - r) // s) + 1  # ceil((r - k) / s) + 1
    # The last window must start inside the input plus the low padding (never in the
    # high padding only). With p < k one decrement is always enough (as in PyTorch).
    if (out - 1) * s >= n + p:
        out -= 1
    return out


def _window_counts(out: int, k: int, s: int, lo: int, hi: int) -> np.ndarray:
    """Per window along one axis: how many of its cells lie in [lo, hi) (padded coords)."""
    start = np.arange(out) * s
    return np.minimum(start + k, hi) - np.maximum(start, lo)


def _check_x(x: Any, name: str = "x") -> np.ndarray:
    x = np.asarray(x)
    if x.ndim < 2:
        raise ValueError(f"pool2d pools the last two axes: {name} must have ndim >= 2, got shape {x.shape}")
    return x


def _check_mode(mode: str) -> None:
    if mode not in MODES:
        raise ValueError(f"pool2d mode must be one of {MODES}, got {mode!r}")


def _padded_hw(x_shape: tuple[int, ...], k: Pair, s: Pair, p: Pair, out: Pair) -> Pair:
    """Spatial size of the padded array: the input plus p on each side, plus whatever the
    last ceil-mode window needs beyond the high padding."""
    H, W = x_shape[-2:]
    return (max(H + 2 * p[0], (out[0] - 1) * s[0] + k[0]),
            max(W + 2 * p[1], (out[1] - 1) * s[1] + k[1]))


def _padded(x: np.ndarray, k: Pair, s: Pair, p: Pair, out: Pair, fill: Any) -> np.ndarray:
    """x padded by p at the low end and by p plus whatever the last ceil-mode window needs
    at the high end, filled with ``fill``; the result is a fresh array."""
    H, W = x.shape[-2:]
    xp = np.full(x.shape[:-2] + _padded_hw(x.shape, k, s, p, out), fill, dtype=x.dtype)
    xp[..., p[0] : p[0] + H, p[1] : p[1] + W] = x
    return xp


def _windows(xp: np.ndarray, k: Pair, s: Pair, out: Pair) -> np.ndarray:
    """Zero-copy view (..., OH, OW, KH, KW) of the windows of the padded array."""
    v = sliding_window_view(xp, k, axis=(-2, -1))
    return v[..., : (out[0] - 1) * s[0] + 1 : s[0], : (out[1] - 1) * s[1] + 1 : s[1], :, :]


def _tap_slices(k: Pair, s: Pair, out: Pair) -> list[tuple[int, int, tuple[slice, slice]]]:
    """For each window tap (u, v): the strided slice of the padded array that the taps
    (u, v) of all windows cover. Within one tap the cells are distinct, so ``+=`` on the
    slice accumulates correctly; overlapping windows accumulate across taps."""
    taps = []
    for u in range(k[0]):
        for v in range(k[1]):
            sl = (
                slice(u, u + (out[0] - 1) * s[0] + 1, s[0]),
                slice(v, v + (out[1] - 1) * s[1] + 1, s[1]),
            )
            taps.append((u, v, sl))
    return taps


def _lowest(dtype: np.dtype) -> Any:
    # -inf for floats; the smallest value for integers and bool, so a padded cell never
    # wins a max against an input cell.
    if np.issubdtype(dtype, np.floating):
        return -np.inf
    if dtype == np.bool_:
        return False
    if np.issubdtype(dtype, np.integer):
        return np.iinfo(dtype).min
    raise TypeError(f"pool2d max: unsupported dtype {dtype}")


def _avg_divisor(x_shape: tuple[int, ...], k: Pair, s: Pair, p: Pair, out: Pair,
                 count_include_pad: bool, dtype: np.dtype) -> np.ndarray:
    """(OH, OW) divisor of each avg window (see the module docstring)."""
    H, W = x_shape[-2:]
    if count_include_pad:
        # The padded extent [0, H + 2p): equals KH*KW except for ceil-mode partial windows.
        ch = _window_counts(out[0], k[0], s[0], 0, H + 2 * p[0])
        cw = _window_counts(out[1], k[1], s[1], 0, W + 2 * p[1])
    else:
        ch = _window_counts(out[0], k[0], s[0], p[0], p[0] + H)
        cw = _window_counts(out[1], k[1], s[1], p[1], p[1] + W)
    return np.multiply.outer(ch, cw).astype(dtype)


# ----------------------------------------------------------------------------- public API


def pool2d_output_shape(x_shape: tuple[int, ...], ws: Any, stride: Any, padding: Any,
                        ignore_border: bool) -> tuple[int, ...]:
    """Shape of ``pool2d``'s output for an input of shape ``x_shape``.

    ``ignore_border=True``: ``(H + 2p - k) // s + 1`` (PyTorch ceil_mode=False); an input
    whose padded size is smaller than the window is an error (no window fits).
    ``ignore_border=False``: ceil mode, a last partial window is used, but a window must
    start inside the input plus the low padding; an input smaller than the window gives
    one partial window (Theano).
    """
    try:
        shape = tuple(int(d) for d in x_shape)
    except TypeError:
        raise ValueError(f"x_shape must be a tuple of ints, got {x_shape!r}") from None
    if len(shape) < 2:
        raise ValueError(f"pool2d pools the last two axes: x_shape must have ndim >= 2, got {shape}")
    k, s, p = _params(ws, stride, padding)
    H, W = shape[-2:]
    if H < 1 or W < 1:
        raise ValueError(f"pool2d needs non-empty spatial dims, got x_shape {shape}")
    oh = _out_len(H, k[0], s[0], p[0], ignore_border)
    ow = _out_len(W, k[1], s[1], p[1], ignore_border)
    if oh < 1 or ow < 1:
        raise ValueError(
            f"pool2d with ignore_border=True: window ws={k} with padding={p} does not fit "
            f"in input x_shape={shape} (padded spatial size {(H + 2 * p[0], W + 2 * p[1])})"
        )
    return shape[:-2] + (oh, ow)


def pool2d(x: np.ndarray, ws: Any, stride: Any, padding: Any, mode: str,
           ignore_border: bool = True, count_include_pad: bool = True) -> np.ndarray:
    """Pool the last two axes of ``x`` with mode "max" | "avg" | "l2"."""
    x = _check_x(x)
    _check_mode(mode)
    if mode != "max" and not np.issubdtype(x.dtype, np.floating):
        # avg and l2 in an integer dtype would silently truncate.
        raise TypeError(f"pool2d mode {mode!r} needs a floating dtype, got {x.dtype}")
    k, s, p = _params(ws, stride, padding)
    out_shape = pool2d_output_shape(x.shape, k, s, p, ignore_border)
    out = out_shape[-2:]

    if mode == "max":
        win = _windows(_padded(x, k, s, p, out, _lowest(x.dtype)), k, s, out)
        y = win.max(axis=(-2, -1))
    elif mode == "avg":
        win = _windows(_padded(x, k, s, p, out, 0), k, s, out)
        y = win.sum(axis=(-2, -1)) / _avg_divisor(x.shape, k, s, p, out, count_include_pad, x.dtype)
    else:
        win = _windows(_padded(x * x, k, s, p, out, 0), k, s, out)
        y = np.sqrt(win.sum(axis=(-2, -1)))
    return np.ascontiguousarray(y, dtype=x.dtype)


def pool2d_grad(x: np.ndarray, y: np.ndarray | None, gy: np.ndarray, ws: Any, stride: Any,
                padding: Any, mode: str, ignore_border: bool = True,
                count_include_pad: bool = True) -> np.ndarray:
    """The exact vjp of ``pool2d``: gx given the output gradient gy.

    ``y`` is pool2d's output (only "l2" uses it; None recomputes it).
    """
    x = _check_x(x)
    _check_mode(mode)
    if not np.issubdtype(x.dtype, np.floating):
        raise TypeError(f"pool2d_grad needs a floating dtype, got {x.dtype}")
    k, s, p = _params(ws, stride, padding)
    out_shape = pool2d_output_shape(x.shape, k, s, p, ignore_border)
    out = out_shape[-2:]
    gy = np.asarray(gy)
    if gy.shape != out_shape:
        raise ValueError(f"pool2d_grad: gy has shape {gy.shape}, expected the output shape "
                         f"{out_shape} for x of shape {x.shape}")
    gy = gy.astype(x.dtype, copy=False)
    H, W = x.shape[-2:]
    taps = _tap_slices(k, s, out)
    # Gradient w.r.t. the padded input (zeros); padding cells are cropped at the end.
    gxp = np.zeros(x.shape[:-2] + _padded_hw(x.shape, k, s, p, out), dtype=x.dtype)

    if mode == "max":
        win = _windows(_padded(x, k, s, p, out, _lowest(x.dtype)), k, s, out)
        m = win.max(axis=(-2, -1), keepdims=True)
        # In-bounds mask of every window: a padding cell can never receive the gradient,
        # even when every input cell of the window is -inf (PyTorch scans input cells only).
        inb = np.zeros(gxp.shape[-2:], dtype=bool)
        inb[p[0] : p[0] + H, p[1] : p[1] + W] = True
        inb_win = _windows(inb, k, s, out)
        # Candidates: cells equal to the max, or NaN (a NaN max comes from the first NaN,
        # as in PyTorch); argmax over a bool array returns the FIRST True -> the tie rule.
        cand = ((win == m) | np.isnan(win)) & inb_win
        flat = cand.reshape(cand.shape[:-2] + (k[0] * k[1],))
        first = flat.argmax(axis=-1)
        zero = np.zeros((), dtype=x.dtype)
        for u, v, sl in taps:
            gxp[(..., *sl)] += np.where(first == u * k[1] + v, gy, zero)
    else:
        if mode == "avg":
            t = gy / _avg_divisor(x.shape, k, s, p, out, count_include_pad, x.dtype)
        else:
            if y is None:
                y = pool2d(x, k, s, p, "l2", ignore_border, count_include_pad)
            y = np.asarray(y)
            if y.shape != out_shape:
                raise ValueError(f"pool2d_grad: y has shape {y.shape}, expected {out_shape}")
            y = y.astype(x.dtype, copy=False)
            # d sqrt(sum x^2) / dx = x / y; the contract sets it to 0 where y == 0 (the
            # whole window is 0 there, so x / y would be 0/0).
            safe = np.where(y == 0, np.ones((), dtype=x.dtype), y)
            t = np.where(y == 0, np.zeros((), dtype=x.dtype), gy / safe)
        for _, _, sl in taps:
            gxp[(..., *sl)] += t

    gx = gxp[..., p[0] : p[0] + H, p[1] : p[1] + W]
    if mode == "l2":
        gx = gx * x  # gy / y summed over the windows containing x, times x
    return np.ascontiguousarray(gx, dtype=x.dtype)
