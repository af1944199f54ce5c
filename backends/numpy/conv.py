"""Numpy reference ("oracle") for 2D convolution and locally-connected layers.

Pure functions over numpy arrays, no graph objects. Layout is NCHW; weights are
(F, C // groups, KH, KW); conv2d is cross-correlation as in PyTorch, and
``filter_flip=True`` flips the kernel spatially (Theano's true convolution).

Every gradient here is the exact adjoint (vector-Jacobian product) of its forward
function, because the engine's gradient tests compare against these.

Implementation: im2col through ``sliding_window_view`` (a zero-copy view) and a
BLAS contraction (``tensordot`` / batched ``matmul``). The adjoints scatter one
kernel tap at a time with strided slices: KH*KW vectorized adds, never a Python
loop over pixels, and never ``np.add.at`` (slow and unnecessary here).
"""

from __future__ import annotations

import numbers
from typing import Any

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

Pair = tuple[int, int]

__all__ = [
    "conv2d",
    "conv2d_grad_input",
    "conv2d_grad_weight",
    "conv2d_output_shape",
    "locally_connected2d",
    "locally_connected2d_grad_input",
    "locally_connected2d_grad_weight",
    "normalize_padding",
]


# ----------------------------------------------------------------------------- helpers


def _is_int(v: Any) -> bool:
    # bool is an Integral, but True as a stride is almost surely a bug.
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def _pair(value: Any, name: str, minimum: int) -> Pair:
    """An int or a pair of ints -> (a, b), each >= minimum."""
    if _is_int(value):
        pair = (int(value), int(value))
    elif (
        isinstance(value, (tuple, list))
        and len(value) == 2
        and all(map(_is_int, value))
    ):
        pair = (int(value[0]), int(value[1]))
    else:
        raise ValueError(f"{name} must be an int or a pair of ints, got {value!r}")
    if min(pair) < minimum:
        raise ValueError(
            f"{name} must be >= {minimum} in each dimension, got {value!r}"
        )
    return pair


def _shape(shape: Any, name: str) -> tuple[int, ...]:
    try:
        out = tuple(int(s) for s in shape)
    except TypeError:
        raise ValueError(f"{name} must be a sequence of ints, got {shape!r}") from None
    return out


def _effective(k: int, d: int) -> int:
    # A dilated kernel spans d*(k-1)+1 input positions.
    return d * (k - 1) + 1


# ----------------------------------------------------------------------------- shapes


def normalize_padding(
    padding: Any,
    kernel_hw: Any,
    dilation: Any = (1, 1),
    stride: Any = (1, 1),
) -> Pair:
    """Resolve a padding spec to symmetric zero padding (ph, pw).

    Accepts "valid" (0), "full" (k_eff - 1), "same" ((k_eff - 1) // 2; only with
    stride 1 and an odd effective kernel), an int, or a pair of ints.
    ``stride`` is optional and only used to reject "same" with stride > 1.
    """
    kh, kw = _pair(tuple(kernel_hw), "kernel_hw", 1)
    dh, dw = _pair(dilation, "dilation", 1)
    keh, kew = _effective(kh, dh), _effective(kw, dw)
    if isinstance(padding, str):
        mode = padding.lower()
        if mode == "valid":
            return (0, 0)
        if mode == "full":
            return (keh - 1, kew - 1)
        if mode == "same":
            if _pair(stride, "stride", 1) != (1, 1):
                raise ValueError(
                    f"padding='same' requires stride 1, got stride {stride!r}"
                )
            # Asymmetric padding (PyTorch's even-kernel 'same') is deliberately not
            # supported: every backend implements symmetric padding only.
            if keh % 2 == 0 or kew % 2 == 0:
                raise ValueError(
                    "padding='same' requires an odd effective kernel size; kernel "
                    f"{(kh, kw)} with dilation {(dh, dw)} spans {(keh, kew)}"
                )
            return ((keh - 1) // 2, (kew - 1) // 2)
        raise ValueError(
            f"padding must be 'valid', 'full', 'same', an int or a pair, got {padding!r}"
        )
    return _pair(padding, "padding", 0)


def _conv_params(
    x_shape: Any, w_shape: Any, stride: Any, padding: Any, dilation: Any, groups: Any
) -> tuple[tuple[int, ...], tuple[int, ...], Pair, Pair, Pair, int, tuple[int, ...]]:
    """Validate everything once; return normalized params and the output shape."""
    xs, ws = _shape(x_shape, "x_shape"), _shape(w_shape, "w_shape")
    where = f"input shape {xs} and weight shape {ws}"
    if len(xs) != 4 or len(ws) != 4:
        raise ValueError(
            f"conv2d needs 4-d NCHW input and 4-d (F, C/groups, KH, KW) weights: {where}"
        )
    if not _is_int(groups) or groups < 1:
        raise ValueError(
            f"conv2d: groups must be a positive int, got {groups!r} ({where})"
        )
    n, c, h, w = xs
    f, cg, kh, kw = ws
    if min(xs) < 0 or min(c, h, w) < 1 or min(ws) < 1:
        raise ValueError(
            f"conv2d: every dim except the batch must be positive: {where}"
        )
    if c % groups or f % groups:
        raise ValueError(
            f"conv2d: channels C={c} and filters F={f} must both be divisible by groups={groups}: {where}"
        )
    if cg != c // groups:
        raise ValueError(
            f"conv2d: weight shape[1] must be C/groups = {c}/{groups} = {c // groups}, got {cg}: {where}"
        )
    st = _pair(stride, "stride", 1)
    dil = _pair(dilation, "dilation", 1)
    pad = normalize_padding(padding, (kh, kw), dil, st)
    keh, kew = _effective(kh, dil[0]), _effective(kw, dil[1])
    hp, wp = h + 2 * pad[0], w + 2 * pad[1]
    if hp < keh or wp < kew:
        raise ValueError(
            f"conv2d: padded input {(hp, wp)} is smaller than the effective kernel {(keh, kew)} "
            f"(padding {pad}, dilation {dil}): {where}"
        )
    out = (n, f, (hp - keh) // st[0] + 1, (wp - kew) // st[1] + 1)
    return xs, ws, st, pad, dil, groups, out


def conv2d_output_shape(
    x_shape: Any, w_shape: Any, stride: Any, padding: Any, dilation: Any, groups: int
) -> tuple[int, int, int, int]:
    """(N, F, OH, OW) of conv2d; ValueError naming both shapes for illegal combos."""
    return _conv_params(x_shape, w_shape, stride, padding, dilation, groups)[-1]  # type: ignore[return-value]


# ----------------------------------------------------------------------------- conv2d


def _windows(
    xp: np.ndarray, kernel: Pair, stride: Pair, dilation: Pair, out_hw: Pair
) -> np.ndarray:
    """Zero-copy view (N, C, OH, OW, KH, KW) of the receptive fields of padded xp."""
    keh, kew = _effective(kernel[0], dilation[0]), _effective(kernel[1], dilation[1])
    win = sliding_window_view(xp, (keh, kew), axis=(2, 3))
    win = win[:, :, :: stride[0], :: stride[1], :: dilation[0], :: dilation[1]]
    # Strided slicing of the window grid yields exactly OH x OW positions.
    assert win.shape[2:4] == out_hw, (win.shape, out_hw)
    return win


def _pad(x: np.ndarray, pad: Pair) -> np.ndarray:
    if pad == (0, 0):
        return x
    return np.pad(x, ((0, 0), (0, 0), (pad[0], pad[0]), (pad[1], pad[1])))


def _maybe_flip(w: np.ndarray, filter_flip: bool) -> np.ndarray:
    return w[..., ::-1, ::-1] if filter_flip else w


def conv2d(
    x: np.ndarray,
    w: np.ndarray,
    stride: Any = (1, 1),
    padding: Any = (0, 0),
    dilation: Any = (1, 1),
    groups: int = 1,
    filter_flip: bool = False,
) -> np.ndarray:
    """out[n, f, i, j] = sum_{c,u,v} xpad[n, g*Cg+c, i*sh+u*dh, j*sw+v*dw] * w[f, c, u, v].

    g = f // (F/groups). With filter_flip, w[f, c, u, v] becomes w[f, c, KH-1-u, KW-1-v].
    Computes in the inputs' dtype; returns a fresh C-contiguous (N, F, OH, OW) array.
    """
    x, w = np.asarray(x), np.asarray(w)
    _, ws, st, pad, dil, g, oshape = _conv_params(
        x.shape, w.shape, stride, padding, dilation, groups
    )
    _, f, oh, ow = oshape
    _, cg, kh, kw = ws
    dtype = np.result_type(x, w)
    win = _windows(_pad(x, pad), (kh, kw), st, dil, (oh, ow))
    wf = _maybe_flip(w, filter_flip)
    out = np.empty(oshape, dtype=dtype)
    fg = f // g
    for gi in range(g):
        # tensordot copies the window view into an im2col matrix and calls GEMM.
        part = np.tensordot(
            win[:, gi * cg : (gi + 1) * cg],
            wf[gi * fg : (gi + 1) * fg],
            axes=([1, 4, 5], [1, 2, 3]),
        )  # (N, OH, OW, Fg)
        out[:, gi * fg : (gi + 1) * fg] = part.transpose(0, 3, 1, 2)
    return out


def conv2d_grad_input(
    gy: np.ndarray,
    w: np.ndarray,
    x_shape: Any,
    stride: Any = (1, 1),
    padding: Any = (0, 0),
    dilation: Any = (1, 1),
    groups: int = 1,
    filter_flip: bool = False,
) -> np.ndarray:
    """Adjoint of conv2d w.r.t. x: returns gx with exactly shape x_shape.

    x_shape is needed because with stride > 1 several input sizes give the same
    output size; rows/cols no window covers get zero gradient.
    """
    gy, w = np.asarray(gy), np.asarray(w)
    xs, ws, st, pad, dil, g, oshape = _conv_params(
        x_shape, w.shape, stride, padding, dilation, groups
    )
    _check_gy(gy.shape, oshape, xs, ws)
    n, c, h, wd = xs
    f, cg, kh, kw = ws
    oh, ow = oshape[2:]
    fg = f // g
    dtype = np.result_type(gy, w)
    wf = _maybe_flip(w, filter_flip)
    gxp = np.zeros((n, c, h + 2 * pad[0], wd + 2 * pad[1]), dtype=dtype)
    for gi in range(g):
        # cols[n, i, j, c, u, v] = sum_f gy[n, f, i, j] * w[f, c, u, v]  (GEMM)
        cols = np.tensordot(
            gy[:, gi * fg : (gi + 1) * fg], wf[gi * fg : (gi + 1) * fg], axes=([1], [0])
        )
        cols = cols.transpose(0, 3, 1, 2, 4, 5)  # (N, Cg, OH, OW, KH, KW)
        for u in range(kh):
            r0 = u * dil[0]
            rows = slice(r0, r0 + st[0] * (oh - 1) + 1, st[0])
            for v in range(kw):
                c0 = v * dil[1]
                # col2im for one tap: a strided slice, so no index collisions within it.
                gxp[
                    :,
                    gi * cg : (gi + 1) * cg,
                    rows,
                    c0 : c0 + st[1] * (ow - 1) + 1 : st[1],
                ] += cols[..., u, v]
    # Crop the padding: gradient flowing into padded zeros is discarded.
    return np.ascontiguousarray(gxp[:, :, pad[0] : pad[0] + h, pad[1] : pad[1] + wd])


def conv2d_grad_weight(
    x: np.ndarray,
    gy: np.ndarray,
    w_shape: Any,
    stride: Any = (1, 1),
    padding: Any = (0, 0),
    dilation: Any = (1, 1),
    groups: int = 1,
    filter_flip: bool = False,
) -> np.ndarray:
    """Adjoint of conv2d w.r.t. w: returns gw with exactly shape w_shape."""
    x, gy = np.asarray(x), np.asarray(gy)
    xs, ws, st, pad, dil, g, oshape = _conv_params(
        x.shape, w_shape, stride, padding, dilation, groups
    )
    _check_gy(gy.shape, oshape, xs, ws)
    f, cg, kh, kw = ws
    fg = f // g
    win = _windows(_pad(x, pad), (kh, kw), st, dil, oshape[2:])
    gw = np.empty(ws, dtype=np.result_type(x, gy))
    for gi in range(g):
        gw[gi * fg : (gi + 1) * fg] = np.tensordot(
            gy[:, gi * fg : (gi + 1) * fg],
            win[:, gi * cg : (gi + 1) * cg],
            axes=([0, 2, 3], [0, 2, 3]),
        )  # (Fg, Cg, KH, KW)
    # The forward used the flipped kernel, so its gradient lands on flipped taps.
    return np.ascontiguousarray(_maybe_flip(gw, filter_flip))


def _check_gy(
    gy_shape: tuple[int, ...], expected: tuple[int, ...], xs: tuple, ws: tuple
) -> None:
    if tuple(gy_shape) != tuple(expected):
        raise ValueError(
            f"conv2d gradient: output gradient shape {tuple(gy_shape)} does not match the output "
            f"shape {tuple(expected)} of input shape {xs} and weight shape {ws}"
        )


# ----------------------------------------------------------------------------- locally connected


def _lc_params(
    x_shape: Any, w_shape: Any, stride: Any
) -> tuple[tuple[int, ...], tuple[int, ...], Pair, tuple[int, ...]]:
    xs, ws = _shape(x_shape, "x_shape"), _shape(w_shape, "w_shape")
    where = f"input shape {xs} and weight shape {ws}"
    if len(xs) != 4 or len(ws) != 6:
        raise ValueError(
            f"locally_connected2d needs 4-d NCHW input and 6-d (OH, OW, F, C, KH, KW) weights: {where}"
        )
    n, c, h, wd = xs
    oh, ow, f, wc, kh, kw = ws
    if min(xs) < 0 or min(c, h, wd) < 1 or min(ws) < 1:
        raise ValueError(
            f"locally_connected2d: every dim except the batch must be positive: {where}"
        )
    if wc != c:
        raise ValueError(
            f"locally_connected2d: weight shape[3] must equal C={c}, got {wc}: {where}"
        )
    st = _pair(stride, "stride", 1)
    if h < kh or wd < kw:
        raise ValueError(
            f"locally_connected2d: input {(h, wd)} is smaller than the kernel {(kh, kw)}: {where}"
        )
    expect = ((h - kh) // st[0] + 1, (wd - kw) // st[1] + 1)
    if (oh, ow) != expect:
        raise ValueError(
            f"locally_connected2d: weight positions {(oh, ow)} must equal the valid output size "
            f"{expect} for stride {st}: {where}"
        )
    return xs, ws, st, (n, f, oh, ow)


def _lc_cols(x: np.ndarray, ws: tuple[int, ...], st: Pair) -> np.ndarray:
    """im2col as (OH*OW, N, C*KH*KW): one GEMM per output position."""
    oh, ow, _, c, kh, kw = ws
    win = _windows(x, (kh, kw), st, (1, 1), (oh, ow))  # (N, C, OH, OW, KH, KW)
    return win.transpose(2, 3, 0, 1, 4, 5).reshape(oh * ow, x.shape[0], c * kh * kw)


def locally_connected2d(
    x: np.ndarray, w: np.ndarray, stride: Any = (1, 1)
) -> np.ndarray:
    """Untied-weights conv (Le et al. 2011), valid padding only.

    out[n, f, i, j] = sum_{c,u,v} x[n, c, i*sh+u, j*sw+v] * w[i, j, f, c, u, v].
    """
    x, w = np.asarray(x), np.asarray(w)
    _, ws, st, _ = _lc_params(x.shape, w.shape, stride)
    oh, ow, f = ws[:3]
    p = oh * ow
    wm = w.reshape(p, f, -1)
    out = np.matmul(
        _lc_cols(x, ws, st), wm.transpose(0, 2, 1)
    )  # (P, N, F), batched GEMM
    return np.ascontiguousarray(
        out.reshape(oh, ow, x.shape[0], f).transpose(2, 3, 0, 1)
    )


def locally_connected2d_grad_input(
    gy: np.ndarray, w: np.ndarray, x_shape: Any, stride: Any = (1, 1)
) -> np.ndarray:
    """Adjoint of locally_connected2d w.r.t. x; gx has exactly shape x_shape."""
    gy, w = np.asarray(gy), np.asarray(w)
    xs, ws, st, oshape = _lc_params(x_shape, w.shape, stride)
    _check_lc_gy(gy.shape, oshape, xs, ws)
    oh, ow, f, c, kh, kw = ws
    n = xs[0]
    gyp = gy.transpose(2, 3, 0, 1).reshape(oh * ow, n, f)
    cols = np.matmul(gyp, w.reshape(oh * ow, f, c * kh * kw))  # (P, N, C*KH*KW)
    cols = cols.reshape(oh, ow, n, c, kh, kw).transpose(
        2, 3, 0, 1, 4, 5
    )  # (N, C, OH, OW, KH, KW)
    gx = np.zeros(xs, dtype=np.result_type(gy, w))
    for u in range(kh):
        rows = slice(u, u + st[0] * (oh - 1) + 1, st[0])
        for v in range(kw):
            gx[:, :, rows, v : v + st[1] * (ow - 1) + 1 : st[1]] += cols[..., u, v]
    return gx


def locally_connected2d_grad_weight(
    x: np.ndarray, gy: np.ndarray, w_shape: Any, stride: Any = (1, 1)
) -> np.ndarray:
    """Adjoint of locally_connected2d w.r.t. w; gw has exactly shape w_shape."""
    x, gy = np.asarray(x), np.asarray(gy)
    xs, ws, st, oshape = _lc_params(x.shape, w_shape, stride)
    _check_lc_gy(gy.shape, oshape, xs, ws)
    oh, ow, f = ws[:3]
    gyp = gy.transpose(2, 3, 1, 0).reshape(oh * ow, f, xs[0])  # (P, F, N)
    gw = np.matmul(gyp, _lc_cols(x, ws, st))  # (P, F, C*KH*KW)
    return np.ascontiguousarray(gw.reshape(ws))


def _check_lc_gy(
    gy_shape: tuple[int, ...], expected: tuple[int, ...], xs: tuple, ws: tuple
) -> None:
    if tuple(gy_shape) != tuple(expected):
        raise ValueError(
            f"locally_connected2d gradient: output gradient shape {tuple(gy_shape)} does not match "
            f"the output shape {tuple(expected)} of input shape {xs} and weight shape {ws}"
        )
