"""Reductions along axes (sum, prod, max, min), argmax/argmin, and the builders for mean, var,
std with ``axis`` and ``keepdims``."""

from __future__ import annotations

from collections.abc import Sequence

from engine.errors import KilnValueError
from engine.graph import Apply, Constant, Op, Variable, as_variable
from engine.types import TensorType, is_float, is_integer

REDUCERS = ("sum", "prod", "max", "min")


def normalize_axes(axis: int | Sequence[int] | None, ndim: int) -> tuple:
    if axis is None:
        return tuple(range(ndim))
    axes = (axis,) if isinstance(axis, int) else tuple(axis)
    normalized = []
    for a in axes:
        if not -ndim <= a < ndim:
            raise KilnValueError(f"axis {a} is out of range for a {ndim}-d tensor")
        normalized.append(a % ndim)
    if len(set(normalized)) != len(normalized):
        raise KilnValueError(f"repeated axis in {axes}")
    return tuple(sorted(normalized))


class Reduce(Op):
    """Reduce ``x`` over ``axes`` with ``reducer``; the reduced axes are removed."""

    props = ("reducer", "axes")

    def __init__(self, reducer: str, axes: tuple) -> None:
        if reducer not in REDUCERS:
            raise KilnValueError(f"unknown reducer {reducer!r}")
        self.reducer = reducer
        self.axes = tuple(axes)

    def make_node(self, x: Variable) -> Apply:
        if any(not 0 <= a < x.ndim for a in self.axes):
            raise KilnValueError(f"{self}: axes out of range for {x.type}")
        if self.reducer in ("max", "min") and 0 in [x.type.shape[a] for a in self.axes]:
            raise KilnValueError(f"{self} of an empty axis of {x.type} (created at {x.site})")
        shape = tuple(d for i, d in enumerate(x.type.shape) if i not in self.axes)
        return Apply(self, [x], [TensorType(x.dtype, shape)])

    def vjp(self, node: Apply, grads: list) -> list:
        from engine.ops import elemwise as E
        from engine.ops.shape import broadcast_like

        x, out = node.inputs[0], node.outputs[0]
        if not is_float(x.dtype):
            return [None]
        g = broadcast_like(keep_dims(grads[0], x.ndim, self.axes), x)
        if self.reducer == "sum":
            return [g]
        if self.reducer == "prod":
            return [E.mul(g, _prod_of_the_others(x, self.axes))]
        out_b = broadcast_like(keep_dims(out, x.ndim, self.axes), x)
        # max/min: every element equal to the extremum gets the gradient (as Theano)
        return [E.where(E.apply("eq", x, out_b), g, 0)]


def _prod_of_the_others(x: Variable, axes: tuple) -> Variable:
    """d prod(x) / d x_i = the product of every other element of x_i's group, zero-safe: not
    ``prod / x_i`` (NaN where x_i is 0) but, from the product of the non-zero elements and the
    count of zeros per group: no zero -> that product / x_i; one zero -> that product at the
    zero and 0 elsewhere; two or more -> 0 everywhere."""
    from engine.ops import elemwise as E

    is_zero = E.apply("eq", x, 0)
    nonzero = E.where(is_zero, 1, x)
    product = keep_dims(Reduce("prod", axes)(nonzero), x.ndim, axes)
    zeros = keep_dims(Reduce("sum", axes)(E.cast(is_zero, x.dtype)), x.ndim, axes)
    lone_zero = E.apply("and", is_zero, E.apply("eq", zeros, 1))
    return E.where(E.apply("eq", zeros, 0), E.true_div(product, nonzero), E.where(lone_zero, product, 0))


class Argmax(Op):
    """Index of the first maximum (or minimum) along one axis, int64."""

    props = ("axis", "minimum")

    def __init__(self, axis: int, minimum: bool = False) -> None:
        self.axis = axis
        self.minimum = minimum

    def make_node(self, x: Variable) -> Apply:
        if not 0 <= self.axis < x.ndim:
            raise KilnValueError(f"argmax axis {self.axis} out of range for {x.type}")
        shape = tuple(d for i, d in enumerate(x.type.shape) if i != self.axis)
        return Apply(self, [x], [TensorType("int64", shape)])

    def vjp(self, node: Apply, grads: list) -> list:
        return [None]


def keep_dims(y: Variable, ndim: int, axes: tuple) -> Variable:
    """Re-insert the reduced ``axes`` of an ``ndim``-d input as length-1 axes."""
    from engine.ops.shape import dimshuffle

    pattern, j = [], 0
    for i in range(ndim):
        if i in axes:
            pattern.append("x")
        else:
            pattern.append(j)
            j += 1
    return dimshuffle(y, pattern)


def reduce(x: object, reducer: str, axis=None, keepdims: bool = False) -> Variable:
    x = as_variable(x)
    axes = normalize_axes(axis, x.ndim)
    if reducer in ("sum", "prod") and (x.dtype == "bool" or is_integer(x.dtype)):
        # numpy: sums and products of bool and small integers accumulate in (u)int64
        from engine.ops.elemwise import cast

        x = cast(x, "uint64" if x.dtype.startswith("uint") else "int64")
    y = Reduce(reducer, axes)(x) if axes else x
    return keep_dims(y, x.ndim, axes) if keepdims and axes else y


def count(x: Variable, axes: tuple, dtype: str) -> Variable:
    """Number of elements over ``axes`` (a constant when the dims are static)."""
    from engine.ops import elemwise as E
    from engine.ops.shape import shape_of

    total, n = 1, None
    for a in axes:
        if x.type.shape[a] is not None:
            total *= x.type.shape[a]
        else:
            n = shape_of(x, a) if n is None else E.mul(n, shape_of(x, a))
    if n is None:
        return Constant(total, dtype=dtype)
    return E.cast(n if total == 1 else E.mul(n, total), dtype)


def mean(x: object, axis=None, keepdims: bool = False) -> Variable:
    from engine.config import config
    from engine.ops import elemwise as E

    x = as_variable(x)
    dtype = x.dtype if is_float(x.dtype) else config.floatX
    axes = normalize_axes(axis, x.ndim)
    total = reduce(E.cast(x, dtype), "sum", axes, keepdims)
    return E.true_div(total, count(x, axes, dtype))


def var(x: object, axis=None, keepdims: bool = False, ddof: int = 0) -> Variable:
    from engine.ops import elemwise as E

    x = as_variable(x)
    if not is_float(x.dtype):  # as mean: integers give floatX, not int - float32 -> float64
        from engine.config import config

        x = E.cast(x, config.floatX)
    axes = normalize_axes(axis, x.ndim)
    centered = E.sub(x, mean(x, axes, keepdims=True))
    total = reduce(E.sqr(centered), "sum", axes, keepdims)
    n = count(x, axes, total.dtype)
    return E.true_div(total, E.sub(n, ddof) if ddof else n)


def std(x: object, axis=None, keepdims: bool = False, ddof: int = 0) -> Variable:
    from engine.ops import elemwise as E

    return E.apply("sqrt", var(x, axis, keepdims, ddof))


def argmax(x: object, axis: int | None = None, keepdims: bool = False, minimum: bool = False) -> Variable:
    from engine.ops.shape import flatten

    x = as_variable(x)
    if axis is None:
        y = Argmax(0, minimum)(flatten(x, 1))
        # numpy: keepdims with axis=None keeps every axis, each of length 1
        return keep_dims(y, x.ndim, tuple(range(x.ndim))) if keepdims else y
    axis = normalize_axes(axis, x.ndim)[0]
    y = Argmax(axis, minimum)(x)
    return keep_dims(y, x.ndim, (axis,)) if keepdims else y
