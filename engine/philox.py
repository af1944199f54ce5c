"""Philox-4x32-10: the counter-based random number generator behind ``RandomStreams``.

This module is the reference every backend (numpy, LLVM, CUDA) reproduces bit for bit.
It is pure numpy, vectorized, and knows nothing about graphs.

The generator
-------------
``philox4x32_10`` is Random123's Philox-4x32 with 10 rounds (Salmon et al., SC'11).
A counter is four uint32 words ``(c0, c1, c2, c3)``, a key two uint32 words ``(k0, k1)``.
One round, with ``mulhilo(a, b) = (a * b mod 2**32, a * b >> 32)`` on the 64-bit product::

    lo0, hi0 = mulhilo(0xD2511F53, c0)
    lo1, hi1 = mulhilo(0xCD9E8D57, c2)
    (c0, c1, c2, c3) = (hi1 ^ c1 ^ k0, lo1, hi0 ^ c3 ^ k1, lo0)

Ten rounds are applied; before each round but the first the key is bumped by the Weyl
constants: ``k0 += 0x9E3779B9``, ``k1 += 0xBB67AE85`` (mod 2**32). The output is the final
``(c0, c1, c2, c3)``. Known answers (Random123 ``kat_vectors``) are in the tests.

The mapping (the contract; the LLVM and CUDA backends must reproduce it exactly)
-------------------------------------------------------------------------------
Key.  A random variable is keyed by ``(k0, k1)`` with, for a ``RandomStreams(seed)`` (the
seed taken modulo 2**64) and ``j`` the substream index (the j-th random variable created
from that ``RandomStreams``, counting from 0, a 32-bit number)::

    k0 = seed & 0xFFFFFFFF
    k1 = (j ^ (seed >> 32)) & 0xFFFFFFFF

(``stream_key(seed, j)`` computes this.)

State.  The state of a random variable is a 64-bit block counter ``start`` (initially 0).

Words.  A sample of ``n`` elements (flat row-major index ``i``, ``0 <= i < n``) takes
element ``i`` from counter block ``b = (start + i // 4) mod 2**64``, laid out as the
counter words ``(b & 0xFFFFFFFF, b >> 32, 0, 0)``, output word ``w = i % 4``::

    word[i] = philox4x32_10((b & 0xFFFFFFFF, b >> 32, 0, 0), (k0, k1))[i % 4]

Afterwards the state advances to ``start + ceil(n / 4)`` (``blocks_needed(n)``), so the
unused words of a last, partial block are skipped.  Element ``i`` therefore depends only
on ``(key, start, i)``, never on ``n``, fusion or tiling.

Distributions (``word`` is ``word[i]`` above, a uint32; ``2**-24`` and ``2**-32`` are exact)
-------------------------------------------------------------------------------------------
``uniform(low, high)``, dtype float32 or float64:

* float32: ``u = float32(word >> 8) * 2**-24``, exactly, in ``[0, 1)``;
* float64: ``u = float64(word) * 2**-32``, exactly, in ``[0, 1)``;
* ``low`` and ``high`` are first cast to the dtype; then, each step rounded in the dtype:
  ``d = high - low``; ``t = u * d``; ``result = low + t``.
  (So ``low + u * (high - low)``; with rounding the result may equal ``high``.)

``binomial(p)`` (n = 1, i.e. Bernoulli):

* ``u`` is the float32 uniform above (``(word >> 8) * 2**-24``);
* the result is 1 where ``u < p`` and 0 elsewhere, cast to the output dtype;
* the comparison is done in float32 when ``p`` has dtype float32 (a numpy float32 scalar
  or array), in float64 otherwise (Python floats, float64, integers); ``u`` is exact in
  both, so only the rounding of ``p`` differs.  ``p`` broadcasts to the sample's shape.

``normal(mean, std)``, Box-Muller on PAIRS of words within a block:

* element ``i`` uses ``w1 = word[i & ~1]`` and ``w2 = word[i | 1]`` (the words
  ``(i % 4) & ~1`` and ``(i % 4) | 1`` of block ``start + i // 4``; both always exist
  because whole blocks are generated, so the partner of a last, odd element is the
  otherwise unused next word of its block);
* float32: the uniforms of float32 precision, then Box-Muller in float64 and ONE rounding::

      u1 = ((w1 >> 8) + 1) * 2**-24                 in (0, 1], exact (in float64)
      u2 = (w2 >> 8) * 2**-24                       in [0, 1), exact
      r  = sqrt(-2 * log(u1))                        float64: log, then * -2 (exact), then sqrt
      theta = float64(2 * pi) * u2                   float64
      z  = float32(r * cos(theta))   if i is even    rounded to float32 once
      z  = float32(r * sin(theta))   if i is odd

  (each step in float32 would make the result depend on the float32 ``log``/``sin`` of
  the library: numpy's SIMD ``logf`` alone is up to 4 ulp from the rounded value, so no
  backend could stay within 2 ulp of it; in float64 two good libraries agree after the
  final rounding except for values within a few float64 ulp of a float32 tie);
* float64: ``u1 = (float64(w1) + 1) * 2**-32`` (in (0, 1], exact),
  ``u2 = float64(w2) * 2**-32`` (in [0, 1), exact), the same steps in float64;
* ``mean`` and ``std`` are cast to the dtype; ``t = std * z``; ``result = mean + t``.
* The reference uses numpy's float64 ``log``, ``sqrt``, ``cos``, ``sin``; backends use
  their own, so float64 results may differ by an ulp or two and float32 results (almost
  always bit-identical) by one ulp (the semantics contract allows 2 ulp for ``normal``),
  everything else is exact.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = [
    "PHILOX_M0",
    "PHILOX_M1",
    "PHILOX_W0",
    "PHILOX_W1",
    "binomial",
    "blocks_needed",
    "normal",
    "philox4x32_10",
    "random_words",
    "stream_key",
    "uniform",
]

PHILOX_M0 = 0xD2511F53
PHILOX_M1 = 0xCD9E8D57
PHILOX_W0 = 0x9E3779B9
PHILOX_W1 = 0xBB67AE85
ROUNDS = 10

_MASK32 = 0xFFFFFFFF
_MASK64 = 0xFFFFFFFFFFFFFFFF
_U64_MASK32 = np.uint64(_MASK32)
_U64_32 = np.uint64(32)

def _check_u32(value, what: str) -> int:
    v = int(value)
    if not 0 <= v <= _MASK32:
        raise ValueError(f"{what} must be a uint32 in [0, 2**32), got {value!r}")
    return v


def _check_key(key) -> tuple[int, int]:
    try:
        k0, k1 = key
    except (TypeError, ValueError):
        raise ValueError(f"key must be a pair (k0, k1) of uint32, got {key!r}") from None
    return _check_u32(k0, "key[0]"), _check_u32(k1, "key[1]")


def _check_start(start) -> int:
    s = int(start)
    if not 0 <= s <= _MASK64:
        raise ValueError(f"start (the block counter) must be in [0, 2**64), got {start!r}")
    return s


def _shape_tuple(shape) -> tuple[int, ...]:
    if isinstance(shape, (int, np.integer)):
        shape = (int(shape),)
    shape = tuple(int(d) for d in shape)
    if any(d < 0 for d in shape):
        raise ValueError(f"shape must have non-negative dims, got {shape}")
    return shape


def _float_dtype(dtype, fn: str) -> np.dtype:
    dt = np.dtype(dtype)
    if dt not in (np.dtype(np.float32), np.dtype(np.float64)):
        raise ValueError(f"{fn}: dtype must be float32 or float64, got {dt}")
    return dt


def philox4x32_10(counter, key) -> np.ndarray:
    """Random123's Philox-4x32-10 applied to every counter of ``counter``.

    ``counter``: array-like of uint32 with last axis 4 (words c0..c3).
    ``key``: ``(k0, k1)``, two uint32.
    Returns a uint32 array of the same shape as ``counter``.
    """
    c = np.asarray(counter)
    if c.ndim == 0 or c.shape[-1] != 4:
        raise ValueError(f"counter must have a last axis of length 4, got shape {c.shape}")
    if c.dtype != np.uint32 and (
        c.dtype.kind not in "iu" or (c.size and (c.min() < 0 or c.max() > _MASK32))
    ):
        raise ValueError("counter words must be uint32 values")
    k0, k1 = (np.uint64(k) for k in _check_key(key))
    m0, m1 = np.uint64(PHILOX_M0), np.uint64(PHILOX_M1)
    w0, w1 = np.uint64(PHILOX_W0), np.uint64(PHILOX_W1)

    x0, x1, x2, x3 = (c[..., j].astype(np.uint64) for j in range(4))
    for r in range(ROUNDS):
        if r:
            k0 = (k0 + w0) & _U64_MASK32
            k1 = (k1 + w1) & _U64_MASK32
        p0 = x0 * m0  # < 2**64: an exact 32x32 -> 64 product
        p1 = x2 * m1
        x0, x1, x2, x3 = (
            (p1 >> _U64_32) ^ x1 ^ k0,
            p1 & _U64_MASK32,
            (p0 >> _U64_32) ^ x3 ^ k1,
            p0 & _U64_MASK32,
        )
    return np.stack([x0, x1, x2, x3], axis=-1).astype(np.uint32)


def stream_key(seed: int, index: int) -> tuple[int, int]:
    """The key of the ``index``-th random variable of ``RandomStreams(seed)``.

    ``k0 = seed & 0xFFFFFFFF``, ``k1 = (index ^ (seed >> 32)) & 0xFFFFFFFF`` with the
    seed taken modulo 2**64 and ``index`` a uint32.
    """
    s = int(seed) & _MASK64
    j = _check_u32(index, "substream index")
    return s & _MASK32, (j ^ (s >> 32)) & _MASK32


def blocks_needed(n: int) -> int:
    """Counter blocks a sample of ``n`` elements consumes: ``ceil(n / 4)``."""
    n = int(n)
    if n < 0:
        raise ValueError(f"n must be non-negative, got {n}")
    return (n + 3) // 4


def _blocks(key, start, nblocks: int) -> np.ndarray:
    """Words of ``nblocks`` consecutive blocks from ``start``, shape (nblocks, 4)."""
    start = _check_start(start)
    b = np.arange(nblocks, dtype=np.uint64) + np.uint64(start)  # wraps modulo 2**64
    ctr = np.zeros((nblocks, 4), dtype=np.uint32)
    ctr[:, 0] = (b & _U64_MASK32).astype(np.uint32)
    ctr[:, 1] = (b >> _U64_32).astype(np.uint32)
    return philox4x32_10(ctr, key)


def random_words(key, start: int, n: int) -> np.ndarray:
    """The ``n`` uint32 words of a sample of ``n`` elements (see the module docstring).

    Element ``i`` is word ``i % 4`` of counter block ``start + i // 4``.
    """
    n = int(n)
    if n < 0:
        raise ValueError(f"n must be non-negative, got {n}")
    return _blocks(key, start, blocks_needed(n)).reshape(-1)[:n]


def _uniform_u(words: np.ndarray, dt: np.dtype) -> np.ndarray:
    if dt == np.float32:
        return (words >> np.uint32(8)).astype(np.float32) * np.float32(2.0**-24)
    return words.astype(np.float64) * np.float64(2.0**-32)


def uniform(key, start: int, shape, low=0.0, high=1.0, dtype="float32") -> np.ndarray:
    """Uniform samples in ``[low, high)`` (up to rounding) of the given shape.

    float32: ``u = (word >> 8) * 2**-24``; float64: ``u = word * 2**-32``;
    ``result = low + u * (high - low)``, every step in ``dtype``.
    ``low`` and ``high`` may be arrays broadcasting to ``shape``.
    """
    dt = _float_dtype(dtype, "uniform")
    shape = _shape_tuple(shape)
    n = math.prod(shape)
    u = _uniform_u(random_words(key, start, n), dt).reshape(shape)
    lo = np.asarray(low, dtype=dt)
    hi = np.asarray(high, dtype=dt)
    d = np.subtract(hi, lo, dtype=dt)
    out = np.add(lo, np.multiply(u, d, dtype=dt), dtype=dt)
    return np.ascontiguousarray(np.broadcast_to(out, shape))


def binomial(key, start: int, shape, p=0.5, dtype="int64") -> np.ndarray:
    """Bernoulli (binomial with n = 1) samples: 1 where ``u < p``, else 0.

    ``u = (word >> 8) * 2**-24`` (the float32 uniform). Compared in float32 when ``p``
    has dtype float32, in float64 otherwise. ``p`` broadcasts to ``shape``.
    """
    shape = _shape_tuple(shape)
    n = math.prod(shape)
    p_arr = np.asarray(p)
    cmp_dt = np.dtype(np.float32) if p_arr.dtype == np.float32 else np.dtype(np.float64)
    p_arr = np.broadcast_to(p_arr.astype(cmp_dt), shape)
    u = _uniform_u(random_words(key, start, n), np.dtype(np.float32)).reshape(shape)
    return (u.astype(cmp_dt) < p_arr).astype(np.dtype(dtype))


def normal(key, start: int, shape, mean=0.0, std=1.0, dtype="float32") -> np.ndarray:
    """Normal samples by Box-Muller on pairs of words (see the module docstring).

    Element ``i`` uses ``w1 = word[i & ~1]``, ``w2 = word[i | 1]``;
    ``z = sqrt(-2 log u1) * (cos if i even else sin)(2 pi u2)``; ``result = mean + std * z``.
    """
    dt = _float_dtype(dtype, "normal")
    shape = _shape_tuple(shape)
    n = math.prod(shape)
    words = _blocks(key, start, blocks_needed(n)).reshape(-1)
    npairs = (n + 1) // 2
    w1 = words[0 : 2 * npairs : 2]
    w2 = words[1 : 2 * npairs : 2]
    from engine.config import config

    if config.deterministic:  # IEEE basic operations only: the same bits on every backend
        return _portable_normal(w1, w2, n, shape, mean, std, dt)
    if dt == np.float32:  # the float32 uniforms, exact in float64
        u1 = ((w1 >> np.uint32(8)) + np.uint32(1)).astype(np.float64) * np.float64(2.0**-24)
        u2 = (w2 >> np.uint32(8)).astype(np.float64) * np.float64(2.0**-24)
    else:
        scale = np.float64(2.0**-32)
        u1 = (w1.astype(np.float64) + np.float64(1.0)) * scale
        u2 = w2.astype(np.float64) * scale
    # Box-Muller in float64 for both dtypes; float32 is rounded once, at the end
    r = np.sqrt(np.log(u1) * np.float64(-2.0))
    theta = np.float64(2.0 * math.pi) * u2
    z = np.empty(2 * npairs, dtype=dt)
    z[0::2] = (r * np.cos(theta)).astype(dt)
    z[1::2] = (r * np.sin(theta)).astype(dt)
    z = z[:n].reshape(shape)
    m = np.asarray(mean, dtype=dt)
    s = np.asarray(std, dtype=dt)
    out = np.add(m, np.multiply(s, z, dtype=dt), dtype=dt)
    return np.ascontiguousarray(np.broadcast_to(out, shape))


def _portable_normal(w1, w2, n, shape, mean, std, dt) -> np.ndarray:
    """``normal`` under ``KILN_DETERMINISTIC=1`` (engine/portable_math.py): the float32 or
    float64 uniforms exactly in float64, Box-Muller from basic operations, one rounding."""
    from engine import portable_math

    if dt == np.float32:
        u1 = ((w1 >> np.uint32(8)) + np.uint32(1)).astype(np.float64) * 2.0**-24
        u2 = (w2 >> np.uint32(8)).astype(np.float64) * 2.0**-24
    else:
        u1 = (w1.astype(np.float64) + 1.0) * 2.0**-32
        u2 = w2.astype(np.float64) * 2.0**-32
    even, odd = portable_math.box_muller(u1, u2, portable_math.NumpyOps())
    z = np.empty(2 * len(w1), dtype=dt)
    z[0::2] = even.astype(dt)
    z[1::2] = odd.astype(dt)
    z = z[:n].reshape(shape)
    m = np.asarray(mean, dtype=dt)
    s = np.asarray(std, dtype=dt)
    out = np.add(m, np.multiply(s, z, dtype=dt), dtype=dt)
    return np.ascontiguousarray(np.broadcast_to(out, shape))
