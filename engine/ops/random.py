"""Random sampling ops and ``RandomStreams``.

Each random variable owns a state: a shared int64 vector ``(k0, k1, start)`` holding its Philox
key and block counter (see ``engine.philox`` for the exact counter -> sample mapping every
backend reproduces). A ``RandomVariable`` node maps ``(state, size, *params)`` to
``(new_state, sample)``; the state's default update is ``new_state``, so every call of a
compiled function draws fresh numbers, exactly as Theano's ``RandomStreams``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from engine import philox
from engine.errors import KilnTypeError, KilnValueError
from engine.graph import Apply, Constant, Op, SharedVariable, Variable, as_variable
from engine.types import TensorType, broadcast_shapes, is_float, is_integer

DISTRIBUTIONS = {"uniform": 2, "normal": 2, "binomial": 1}


class RandomVariable(Op):
    """Sample ``distribution`` with the given params; outputs ``(new_state, sample)``."""

    props = ("distribution", "dtype", "ndim")
    n_outputs = 2

    def __init__(self, distribution: str, dtype: str, ndim: int) -> None:
        if distribution not in DISTRIBUTIONS:
            raise KilnValueError(f"unknown distribution {distribution!r}")
        self.distribution = distribution
        self.dtype = dtype
        self.ndim = ndim

    def make_node(self, state: Variable, size: Variable, *params: Variable) -> Apply:
        if len(params) != DISTRIBUTIONS[self.distribution]:
            raise KilnValueError(f"{self} takes {DISTRIBUTIONS[self.distribution]} parameters")
        if size.ndim != 1 or not is_integer(size.dtype):
            raise KilnTypeError(f"random size must be an int vector (a tuple of ints / int scalars or x.shape), "
                                f"given {size.type}")
        shape = static_size(size, self.ndim)
        for p in params:
            broadcast_shapes(shape, p.type.shape, where=f"{self.distribution}: parameter vs size: ")
        return Apply(self, [state, size, *params], [state.type, TensorType(self.dtype, shape)])

    def vjp(self, node: Apply, grads: list) -> list:
        return [None] * len(node.inputs)


def static_size(size: Variable, ndim: int) -> tuple:
    """The static shape a size vector describes, as far as it is known."""
    from engine.ops.shape import Shape

    if isinstance(size, Constant):
        return tuple(int(d) for d in size.value)
    if size.owner is not None and isinstance(size.owner.op, Shape):
        return size.owner.inputs[0].type.shape
    return (None,) * ndim


def _size_vector(size: Any, params: Sequence[Variable]) -> Variable:
    from engine.ops.shape import Shape, stack

    if size is None:
        tensors = [p for p in params if p.ndim > 0]
        if not tensors:
            return Constant(np.zeros(0, dtype="int64"))
        return Shape()(max(tensors, key=lambda p: p.ndim))
    if isinstance(size, Variable):
        return size
    if isinstance(size, int):
        size = (size,)
    if all(isinstance(d, (int, np.integer)) for d in size):
        return Constant(np.asarray(size, dtype="int64"))
    return stack([as_variable(d, dtype="int64") for d in size])


class RandomStreams:
    """A source of random variables, seeded once (Theano's ``RandomStreams``)."""

    def __init__(self, seed: int | None = None) -> None:
        self._seed = int(np.random.SeedSequence().entropy % 2**63) if seed is None else int(seed)
        self.states: list[SharedVariable] = []

    def seed(self, seed: int) -> None:
        """Re-seed: every random variable made from this stream restarts from its first block."""
        self._seed = int(seed)
        for j, state in enumerate(self.states):
            state.set_value(self._initial_state(j))

    def _initial_state(self, j: int) -> np.ndarray:
        k0, k1 = philox.stream_key(self._seed % 2**64, j)
        return np.array([k0, k1, 0], dtype="int64")

    def _sample(self, distribution: str, size: Any, params: list, dtype: str) -> Variable:
        from engine.function import shared

        j = len(self.states)
        state = shared(self._initial_state(j), name=f"rng_state{j}")
        self.states.append(state)
        size_vector = _size_vector(size, params)
        ndim = int(size_vector.type.shape[0])
        new_state, sample = RandomVariable(distribution, dtype, ndim)(state, size_vector, *params)
        state.default_update = new_state
        return sample

    def uniform(self, size: Any = None, low: Any = 0.0, high: Any = 1.0, dtype: str | None = None) -> Variable:
        dtype = _float_dtype(dtype, low, high)
        params = [_param(low, dtype), _param(high, dtype)]
        return self._sample("uniform", size, params, dtype)

    def normal(self, size: Any = None, avg: Any = 0.0, std: Any = 1.0, dtype: str | None = None) -> Variable:
        dtype = _float_dtype(dtype, avg, std)
        params = [_param(avg, dtype), _param(std, dtype)]
        return self._sample("normal", size, params, dtype)

    def binomial(self, size: Any = None, n: int = 1, p: Any = 0.5, dtype: str = "int64") -> Variable:
        if n != 1:
            raise KilnValueError("binomial: only n=1 (Bernoulli) is supported")
        p_var = as_variable(p)
        p_dtype = p_var.dtype if is_float(p_var.dtype) and not getattr(p_var, "weak", False) else "float64"
        return self._sample("binomial", size, [_param(p, p_dtype)], dtype)


def _float_dtype(dtype: str | None, *params: Any) -> str:
    from engine.config import config

    if dtype is not None:
        return dtype
    strong = [p.dtype for p in params if isinstance(p, Variable) and is_float(p.dtype)]
    return strong[0] if strong else config.floatX


def _param(value: Any, dtype: str) -> Variable:
    from engine.ops.elemwise import cast

    return cast(as_variable(value), dtype)
