"""Weight initializers returning ``engine.config.floatX`` numpy arrays (wrap them in ``engine.shared``).

Fans follow the DeepLearningTutorials: a matrix ``(n_in, n_out)`` has ``fan_in = n_in`` and
``fan_out = n_out``; a conv filter bank ``(F, C, kh, kw)`` has ``fan_in = C * kh * kw`` and
``fan_out = F * kh * kw / prod(poolsize)`` (the LeNet tutorial's ``poolsize`` division)::

    W = engine.shared(init.glorot_uniform((784, 500), rng), name="W")            # tanh layer
    W = engine.shared(init.glorot_uniform((784, 500), rng, gain=4.0), name="W")  # sigmoid layer

``rng`` is a ``numpy.random.Generator``, a ``RandomState`` or an int seed.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from engine.config import config

__all__ = ["compute_fans", "constant", "glorot_normal", "glorot_uniform", "he_normal", "he_uniform",
           "normal", "ones", "uniform", "zeros"]


def _rng(rng: Any) -> Any:
    if rng is None or isinstance(rng, (int, np.integer)):
        return np.random.default_rng(rng)
    return rng


def _cast(array: Any, dtype: str | None) -> np.ndarray:
    return np.asarray(array, dtype=dtype or config.floatX)


def compute_fans(shape: Sequence[int], poolsize: Sequence[int] | None = None) -> tuple[float, float]:
    """``(fan_in, fan_out)`` of a weight of this shape (see the module docstring)."""
    shape = tuple(int(d) for d in shape)
    if len(shape) == 0:
        return 1.0, 1.0
    if len(shape) == 1:
        return float(shape[0]), float(shape[0])
    if len(shape) == 2:
        return float(shape[0]), float(shape[1])
    receptive = float(np.prod(shape[2:]))
    pool = float(np.prod(poolsize)) if poolsize is not None else 1.0
    return shape[1] * receptive, shape[0] * receptive / pool


def uniform(shape: Sequence[int], rng: Any = None, low: float = -0.05, high: float = 0.05,
            dtype: str | None = None) -> np.ndarray:
    """Uniform on ``[low, high)``."""
    return _cast(_rng(rng).uniform(low, high, size=tuple(shape)), dtype)


def normal(shape: Sequence[int], rng: Any = None, std: float = 0.01, mean: float = 0.0,
           dtype: str | None = None) -> np.ndarray:
    """Gaussian with the given mean and standard deviation."""
    return _cast(_rng(rng).normal(mean, std, size=tuple(shape)), dtype)


def glorot_uniform(shape: Sequence[int], rng: Any = None, gain: float = 1.0,
                   poolsize: Sequence[int] | None = None, dtype: str | None = None) -> np.ndarray:
    """Glorot & Bengio 2010: uniform on ``±gain * sqrt(6 / (fan_in + fan_out))``.

    ``gain=1`` is the tutorials' tanh initialization, ``gain=4`` their sigmoid one.
    """
    fan_in, fan_out = compute_fans(shape, poolsize)
    bound = gain * np.sqrt(6.0 / (fan_in + fan_out))
    return uniform(shape, rng, -bound, bound, dtype)


def glorot_normal(shape: Sequence[int], rng: Any = None, gain: float = 1.0,
                  poolsize: Sequence[int] | None = None, dtype: str | None = None) -> np.ndarray:
    """Gaussian with std ``gain * sqrt(2 / (fan_in + fan_out))``."""
    fan_in, fan_out = compute_fans(shape, poolsize)
    return normal(shape, rng, gain * np.sqrt(2.0 / (fan_in + fan_out)), dtype=dtype)


def he_normal(shape: Sequence[int], rng: Any = None, gain: float = 1.0, dtype: str | None = None) -> np.ndarray:
    """He et al. 2015 (for ReLUs): Gaussian with std ``gain * sqrt(2 / fan_in)``."""
    fan_in, _ = compute_fans(shape)
    return normal(shape, rng, gain * np.sqrt(2.0 / fan_in), dtype=dtype)


def he_uniform(shape: Sequence[int], rng: Any = None, gain: float = 1.0, dtype: str | None = None) -> np.ndarray:
    """Uniform on ``±gain * sqrt(6 / fan_in)``."""
    fan_in, _ = compute_fans(shape)
    bound = gain * np.sqrt(6.0 / fan_in)
    return uniform(shape, rng, -bound, bound, dtype)


def constant(shape: Sequence[int], value: float, dtype: str | None = None) -> np.ndarray:
    return np.full(tuple(shape), value, dtype=dtype or config.floatX)


def zeros(shape: Sequence[int], dtype: str | None = None) -> np.ndarray:
    return np.zeros(tuple(shape), dtype=dtype or config.floatX)


def ones(shape: Sequence[int], dtype: str | None = None) -> np.ndarray:
    return np.ones(tuple(shape), dtype=dtype or config.floatX)
