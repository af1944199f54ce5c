"""Shape ops: dimshuffle, reshape, shape, broadcasting helpers, join, arange, stop_gradient."""

from __future__ import annotations

from collections.abc import Sequence

from engine.errors import KilnShapeError, KilnTypeError, KilnValueError
from engine.graph import Apply, Constant, Op, Variable, as_variable
from engine.types import TensorType, broadcast_shapes, format_shape, is_integer


class DimShuffle(Op):
    """Permute axes, insert broadcastable axes ('x') and drop length-1 axes (Theano's)."""

    props = ("new_order",)

    def __init__(self, new_order: Sequence) -> None:
        self.new_order = tuple(new_order)

    def make_node(self, x: Variable) -> Apply:
        axes = [a for a in self.new_order if a != "x"]
        if sorted(set(axes)) != sorted(axes) or any(not 0 <= a < x.ndim for a in axes):
            raise KilnValueError(f"dimshuffle{self.new_order}: invalid for a {x.ndim}-d input {x.type}")
        for dropped in set(range(x.ndim)) - set(axes):
            if x.type.shape[dropped] != 1:
                raise KilnShapeError(
                    f"dimshuffle{self.new_order} drops axis {dropped} of {x.type}, which is not known to have "
                    f"length 1 (created at {x.site})"
                )
        shape = tuple(1 if a == "x" else x.type.shape[a] for a in self.new_order)
        return Apply(self, [x], [x.type.with_shape(shape)])

    def vjp(self, node: Apply, grads: list) -> list:
        x = node.inputs[0]
        kept = [a for a in self.new_order if a != "x"]
        # drop the inserted axes, then restore the original order with dropped axes re-inserted
        squeeze = [i for i, a in enumerate(self.new_order) if a != "x"]
        g = DimShuffle(squeeze)(grads[0]) if len(squeeze) != len(self.new_order) else grads[0]
        order = []
        for axis in range(x.ndim):
            order.append(kept.index(axis) if axis in kept else "x")
        return [DimShuffle(order)(g) if order != list(range(len(kept))) else g]


def dimshuffle(x: Variable, *pattern) -> Variable:
    if len(pattern) == 1 and isinstance(pattern[0], (list, tuple)):
        pattern = tuple(pattern[0])
    if tuple(pattern) == tuple(range(x.ndim)):
        return x
    return DimShuffle(pattern)(x)


def transpose(x: Variable, axes: Sequence[int] | None = None) -> Variable:
    axes = tuple(reversed(range(x.ndim))) if axes is None else tuple(a % x.ndim for a in axes)
    return dimshuffle(x, axes)


class Reshape(Op):
    """Reshape to ``pattern``: ints are sizes, -1 is inferred, None takes the next scalar input."""

    props = ("pattern",)

    def __init__(self, pattern: Sequence) -> None:
        self.pattern = tuple(pattern)

    def make_node(self, x: Variable, *sizes: Variable) -> Apply:
        if sum(1 for p in self.pattern if p is None) != len(sizes):
            raise KilnValueError(f"{self}: expected {self.pattern.count(None)} symbolic sizes, given {len(sizes)}")
        for s in sizes:
            if s.ndim != 0 or not is_integer(s.dtype):
                raise KilnTypeError(f"reshape: symbolic sizes must be integer scalars, given {s.type}")
        if sum(1 for p in self.pattern if p == -1) > 1:
            raise KilnValueError(f"reshape{self.pattern}: at most one -1")
        shape = [None if p is None or p == -1 else p for p in self.pattern]
        known_in = _static_size(x.type.shape)
        known_out = _static_size([p for p in self.pattern if p != -1])
        if known_in is not None and known_out is not None:
            if -1 in self.pattern:
                if known_out == 0 or known_in % known_out:
                    raise KilnShapeError(f"cannot reshape {x.type} to {self.pattern}")
                shape[self.pattern.index(-1)] = known_in // known_out
            elif known_in != known_out:
                raise KilnShapeError(
                    f"cannot reshape {x.type} ({known_in} elements) to {format_shape(self.pattern)} "
                    f"({known_out} elements) (input created at {x.site})")
        return Apply(self, [x, *sizes], [x.type.with_shape(tuple(shape))])

    def vjp(self, node: Apply, grads: list) -> list:
        return [reshape_like(grads[0], node.inputs[0])] + [None] * (len(node.inputs) - 1)


def _static_size(dims) -> int | None:
    total = 1
    for d in dims:
        if d is None:
            return None
        total *= d
    return total


def reshape(x: Variable, shape: Sequence, ndim: int | None = None) -> Variable:
    if isinstance(shape, Variable):
        raise KilnTypeError("reshape: pass the new shape as a tuple of ints or symbolic scalars")
    if isinstance(shape, int):
        shape = (shape,)
    pattern, sizes = [], []
    for s in shape:
        s = _maybe_constant(s)
        if isinstance(s, Variable):
            pattern.append(None)
            sizes.append(s)
        else:
            pattern.append(int(s))
    return Reshape(pattern)(x, *sizes)


def _maybe_constant(size):
    if isinstance(size, Constant):
        return int(size.value)
    if isinstance(size, Variable) and size.owner is not None and isinstance(size.owner.op, Elemwise_cast_types()):
        return size
    return size


def Elemwise_cast_types():  # noqa: N802 - tiny indirection avoids an import cycle
    from engine.ops.elemwise import Elemwise

    return Elemwise


def reshape_like(x: Variable, like: Variable) -> Variable:
    """Reshape ``x`` to the run-time shape of ``like``."""
    if None not in like.type.shape:
        return Reshape(like.type.shape)(x)
    sizes = [shape_of(like, i) for i, d in enumerate(like.type.shape) if d is None]
    return Reshape(like.type.shape)(x, *sizes)


def flatten(x: Variable, ndim: int = 1) -> Variable:
    """Keep the first ndim-1 axes and collapse the rest (Theano's flatten)."""
    if ndim < 1 or ndim > max(x.ndim, 1):
        raise KilnValueError(f"flatten(ndim={ndim}) of a {x.ndim}-d tensor")
    lead = [x.type.shape[i] if x.type.shape[i] is not None else shape_of(x, i) for i in range(ndim - 1)]
    return reshape(x, [*lead, -1])


class Shape(Op):
    """The run-time shape of a tensor, as an int64 vector."""

    def make_node(self, x: Variable) -> Apply:
        return Apply(self, [x], [TensorType("int64", (x.ndim,))])

    def vjp(self, node: Apply, grads: list) -> list:
        return [None]


class ShapeOf(Op):
    """One run-time dimension of a tensor, as an int64 scalar."""

    props = ("axis",)

    def __init__(self, axis: int) -> None:
        self.axis = axis

    def make_node(self, x: Variable) -> Apply:
        if not 0 <= self.axis < x.ndim:
            raise KilnValueError(f"shape[{self.axis}] of a {x.ndim}-d tensor {x.type}")
        return Apply(self, [x], [TensorType("int64", ())])

    def vjp(self, node: Apply, grads: list) -> list:
        return [None]


def shape_of(x: Variable, axis: int) -> Variable:
    axis = axis % x.ndim if x.ndim else axis
    if x.type.shape[axis] is not None:
        return Constant(x.type.shape[axis], dtype="int64")
    return ShapeOf(axis)(x)


class BroadcastLike(Op):
    """Broadcast ``x`` to the run-time shape of ``like`` (numpy rules)."""

    def make_node(self, x: Variable, like: Variable) -> Apply:
        if x.ndim > like.ndim:
            raise KilnShapeError(f"cannot broadcast {x.type} to the shape of {like.type}")
        shape = broadcast_shapes(x.type.shape, like.type.shape, where="broadcast: ")
        shape = tuple(d if d is not None else like.type.shape[i] for i, d in enumerate(shape))
        return Apply(self, [x, like], [TensorType(x.dtype, shape)])

    def vjp(self, node: Apply, grads: list) -> list:
        return [SumToShape()(grads[0], node.inputs[0]), None]


def broadcast_like(x: Variable, like: Variable) -> Variable:
    return BroadcastLike()(as_variable(x), like)


class SumToShape(Op):
    """Sum ``g`` over the axes along which ``like`` was broadcast (the adjoint of broadcasting)."""

    def make_node(self, g: Variable, like: Variable) -> Apply:
        if g.ndim < like.ndim:
            raise KilnShapeError(f"SumToShape: gradient {g.type} has fewer axes than {like.type}")
        return Apply(self, [g, like], [TensorType(g.dtype, like.type.shape)])

    def vjp(self, node: Apply, grads: list) -> list:
        return [BroadcastLike()(grads[0], node.inputs[0]), None]


class Join(Op):
    """Concatenate tensors along an axis."""

    props = ("axis",)

    def __init__(self, axis: int) -> None:
        self.axis = axis

    def make_node(self, *xs: Variable) -> Apply:
        if not xs:
            raise KilnValueError("concatenate of no tensors")
        ndim, dtypes = xs[0].ndim, {x.dtype for x in xs}
        if len(dtypes) != 1 or any(x.ndim != ndim for x in xs):
            raise KilnTypeError(f"concatenate: tensors must share dtype and rank, given {[str(x.type) for x in xs]}")
        if not 0 <= self.axis < ndim:
            raise KilnValueError(f"concatenate axis {self.axis} out of range for {ndim}-d tensors")
        shape = []
        for axis in range(ndim):
            dims = [x.type.shape[axis] for x in xs]
            if axis == self.axis:
                shape.append(None if None in dims else sum(dims))
            else:
                known = {d for d in dims if d is not None}
                if len(known) > 1:
                    raise KilnShapeError(f"concatenate along {self.axis}: axis {axis} sizes differ: {dims}")
                shape.append(known.pop() if known else None)
        return Apply(self, list(xs), [TensorType(xs[0].dtype, tuple(shape))])

    def vjp(self, node: Apply, grads: list) -> list:
        from engine.ops.indexing import subtensor

        g, grads_out, start = grads[0], [], Constant(0, dtype="int64")
        for x in node.inputs:
            stop = start + shape_of(x, self.axis)
            index = [slice(None)] * x.ndim
            index[self.axis] = slice(start, stop)
            grads_out.append(subtensor(g, tuple(index)))
            start = stop
        return grads_out


def concatenate(xs: Sequence, axis: int = 0) -> Variable:
    from engine.ops.elemwise import cast
    from engine.types import promote

    xs = [as_variable(x) for x in xs]
    dtype = promote(*[x.dtype for x in xs])
    xs = [cast(x, dtype) for x in xs]
    return Join(axis % xs[0].ndim)(*xs)


def stack(xs: Sequence, axis: int = 0) -> Variable:
    xs = [as_variable(x) for x in xs]
    ndim = xs[0].ndim + 1
    axis = axis % ndim
    expanded = [dimshuffle(x, *range(axis), "x", *range(axis, x.ndim)) for x in xs]
    return concatenate(expanded, axis)


class Arange(Op):
    """``arange(start, stop, step)`` from integer scalars."""

    props = ("dtype",)

    def __init__(self, dtype: str = "int64") -> None:
        self.dtype = dtype

    def make_node(self, start: Variable, stop: Variable, step: Variable) -> Apply:
        for v in (start, stop, step):
            if v.ndim != 0:
                raise KilnTypeError(f"arange: bounds must be scalars, given {v.type}")
        length = None
        if all(isinstance(v, Constant) for v in (start, stop, step)):
            import numpy as np

            length = len(np.arange(start.value, stop.value, step.value))
        return Apply(self, [start, stop, step], [TensorType(self.dtype, (length,))])

    def vjp(self, node: Apply, grads: list) -> list:
        return [None, None, None]


def arange(start, stop=None, step=1, dtype: str = "int64") -> Variable:
    if stop is None:
        start, stop = 0, start
    return Arange(dtype)(*[as_variable(v, dtype="int64") for v in (start, stop, step)])


class StopGradient(Op):
    """Identity whose gradient is zero (``consider_constant`` for one expression)."""

    def make_node(self, x: Variable) -> Apply:
        return Apply(self, [x], [x.type])

    def vjp(self, node: Apply, grads: list) -> list:
        return [None]


def stop_gradient(x: Variable) -> Variable:
    return StopGradient()(as_variable(x))
