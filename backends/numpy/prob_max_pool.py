"""Numpy reference ("oracle") for probabilistic max-pooling (Lee et al., ICML 2009).

Pure functions over numpy arrays, no graph objects. The input ``I`` holds bottom-up
energies, pooled over the last two axes (N, C, H, W in practice; any ndim >= 2 works)
in non-overlapping blocks ``ws = (bh, bw)`` that must divide H and W. Each block is one
multinomial over bh*bw + 1 states: "unit k on" for each of its units (at most one) or
"all off", with

    P(h_k = 1)       = exp(I_k) / (1 + sum_block exp(I))
    P(pool unit on)  = 1 - 1 / (1 + sum_block exp(I)) = sum_block exp(I) / (1 + ...)

i.e. a softmax over the logits (I_1, ..., I_B, 0). It is computed stably by
subtracting m = max(0, block max) from every logit, the "off" logit 0 included; the
pool probability is computed as ``sum exp / Z`` (not ``1 - off / Z``) so that small
probabilities keep their relative precision.

Sampling rule (``sample_prob_max_pool``; the LLVM and CUDA backends reproduce it bit for
bit from the same uniforms):

* the states of a block are ordered: its units in row-major order within the block
  (k = a * bw + b for the unit at block offset (a, b)), then "off" last;
* the running sums ``c_0 = p_0``, ``c_k = c_{k-1} + p_k`` (k < B) of the detection
  probabilities are accumulated sequentially in that order, each addition rounded in the
  probabilities' dtype; "off" takes the remaining mass and is never summed;
* with the block's uniform u (cast to that dtype, round to nearest), the state is the first unit k
  with ``u < c_k`` (strict), and "off" when there is none (u >= c_{B-1});
* detection sample: 1 at that unit, 0 elsewhere (all 0 when off); pool sample
  ``1 - off``, both in the probabilities' dtype.

Everything is computed in the input dtype; outputs are fresh C-contiguous arrays.
"""

from __future__ import annotations

import numbers
from typing import Any

import numpy as np

Pair = tuple[int, int]

__all__ = ["prob_max_pool", "prob_max_pool_grad", "sample_prob_max_pool"]


# ----------------------------------------------------------------------------- helpers


def _ws(ws: Any) -> Pair:
    ok = (isinstance(ws, (tuple, list)) and len(ws) == 2
          and all(isinstance(v, numbers.Integral) and not isinstance(v, bool) for v in ws))
    if not ok or min(ws) < 1:
        raise ValueError(f"ws must be a pair of positive ints (bh, bw), got {ws!r}")
    return int(ws[0]), int(ws[1])


def _check(x: Any, ws: Any, name: str = "I") -> tuple[np.ndarray, Pair]:
    x = np.asarray(x)
    bh, bw = _ws(ws)
    if x.ndim < 2:
        raise ValueError(f"prob_max_pool pools the last two axes: {name} must have ndim >= 2, "
                         f"got shape {x.shape}")
    if not np.issubdtype(x.dtype, np.floating):
        raise TypeError(f"prob_max_pool needs a floating dtype, got {x.dtype}")
    H, W = x.shape[-2:]
    if H % bh or W % bw:
        raise ValueError(f"prob_max_pool: block ws={(bh, bw)} must divide the spatial shape "
                         f"{(H, W)} of {name} with shape {x.shape}")
    return x, (bh, bw)


def _pooled_shape(shape: tuple[int, ...], ws: Pair) -> tuple[int, ...]:
    return shape[:-2] + (shape[-2] // ws[0], shape[-1] // ws[1])


def _to_blocks(x: np.ndarray, ws: Pair) -> np.ndarray:
    """(..., H, W) -> (..., H/bh, W/bw, bh*bw): each block's units last, row-major."""
    bh, bw = ws
    lead, (H, W) = x.shape[:-2], x.shape[-2:]
    b = x.reshape(lead + (H // bh, bh, W // bw, bw))
    b = np.moveaxis(b, -3, -2)  # (..., H/bh, W/bw, bh, bw)
    return b.reshape(lead + (H // bh, W // bw, bh * bw))


def _from_blocks(b: np.ndarray, ws: Pair) -> np.ndarray:
    """Inverse of ``_to_blocks``: a fresh C-contiguous (..., H, W) array."""
    bh, bw = ws
    lead, (hb, wb) = b.shape[:-3], b.shape[-3:-1]
    x = b.reshape(lead + (hb, wb, bh, bw))
    x = np.moveaxis(x, -2, -3)  # (..., H/bh, bh, W/bw, bw)
    return np.ascontiguousarray(x).reshape(lead + (hb * bh, wb * bw))


def _block_probs(x: np.ndarray, ws: Pair) -> tuple[np.ndarray, np.ndarray]:
    """Per block: the detection probabilities (..., hb, wb, B) and the pool probability."""
    b = _to_blocks(x, ws)
    # Subtract max(0, block max): every exponent <= 0 (no overflow), and the largest of
    # the B + 1 terms (the "off" term included) is exactly 1, so Z >= 1 (no underflow).
    m = np.maximum(b.max(axis=-1, keepdims=True), np.zeros((), dtype=x.dtype))
    e = np.exp(b - m)
    off = np.exp(-m)
    se = e.sum(axis=-1, keepdims=True)
    z = se + off
    return e / z, (se / z)[..., 0]


# ----------------------------------------------------------------------------- public API


def prob_max_pool(I: np.ndarray, ws: Any) -> tuple[np.ndarray, np.ndarray]:
    """(detection_probs with I's shape, pool_probs with shape (..., H/bh, W/bw))."""
    x, ws = _check(I, ws)
    det, pool = _block_probs(x, ws)
    return _from_blocks(det, ws), np.ascontiguousarray(pool, dtype=x.dtype)


def prob_max_pool_grad(I: np.ndarray, ws: Any, g_det: np.ndarray | None,
                       g_pool: np.ndarray | None) -> np.ndarray:
    """The exact vjp of ``prob_max_pool``; a None gradient means zero.

    With p the softmax over (I_1..I_B, 0): p_k depends on I_j through
    dp_k/dI_j = p_k (delta_kj - p_j) (the off logit is a constant), and
    pool = sum_k p_k. So with g_k = g_det_k + g_pool (and 0 for "off"),
    gI_k = p_k (g_k - sum_j p_j g_j), the sum over the B units.
    """
    x, ws = _check(I, ws)
    det, _ = _block_probs(x, ws)
    g = np.zeros_like(det)
    if g_det is not None:
        g_det = np.asarray(g_det)
        if g_det.shape != x.shape:
            raise ValueError(f"prob_max_pool_grad: g_det has shape {g_det.shape}, "
                             f"expected I's shape {x.shape}")
        g = g + _to_blocks(g_det.astype(x.dtype, copy=False), ws)
    if g_pool is not None:
        g_pool = np.asarray(g_pool)
        want = _pooled_shape(x.shape, ws)
        if g_pool.shape != want:
            raise ValueError(f"prob_max_pool_grad: g_pool has shape {g_pool.shape}, "
                             f"expected {want} for I of shape {x.shape} and ws={ws}")
        g = g + g_pool.astype(x.dtype, copy=False)[..., None]
    dot = (det * g).sum(axis=-1, keepdims=True)
    return _from_blocks(det * (g - dot), ws)


def sample_prob_max_pool(x: np.ndarray, ws: Any, uniforms: np.ndarray,
                         given: str = "energies") -> tuple[np.ndarray, np.ndarray]:
    """(detection_sample, pool_sample) by inverse CDF, one uniform in [0, 1) per block.

    ``x`` holds the energies I (``given="energies"``, the default: the probabilities are
    computed with ``prob_max_pool``) or the detection probabilities (``given="probs"``).
    ``uniforms`` has the pooled shape (..., H/bh, W/bw). The exact rule is in the module
    docstring.
    """
    if given not in ("energies", "probs"):
        raise ValueError(f"given must be 'energies' or 'probs', got {given!r}")
    x, ws = _check(x, ws, "I" if given == "energies" else "det_probs")
    det = _block_probs(x, ws)[0] if given == "energies" else _to_blocks(x, ws)
    u = np.asarray(uniforms)
    want = _pooled_shape(x.shape, ws)
    if u.shape != want:
        raise ValueError(f"sample_prob_max_pool: uniforms have shape {u.shape}, expected "
                         f"{want} (one per block) for input of shape {x.shape} and ws={ws}")
    u = u.astype(x.dtype)
    # np.cumsum accumulates sequentially in the array's dtype: c_k = c_{k-1} + p_k.
    cdf = np.cumsum(det, axis=-1, dtype=x.dtype)
    # The c_k are non-decreasing, so the number of them <= u is the index of the first
    # c_k > u; it equals B ("off") when there is none.
    k = (cdf <= u[..., None]).sum(axis=-1)
    B = det.shape[-1]
    one, zero = np.ones((), dtype=x.dtype), np.zeros((), dtype=x.dtype)
    det_sample = np.where(np.arange(B) == k[..., None], one, zero)
    pool_sample = np.where(k < B, one, zero)
    return _from_blocks(det_sample, ws), np.ascontiguousarray(pool_sample, dtype=x.dtype)
