"""Shape ops: dimshuffle, reshape, shape, broadcasting helpers, join, arange, stop_gradient."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

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
        g = grads[0]
        if len(squeeze) != len(self.new_order):
            if any(g.type.shape[i] != 1 for i, a in enumerate(self.new_order) if a == "x"):
                # a gradient built with less static shape information: its inserted axes are
                # 1 at run time but not known to be, so state it before dropping them
                pattern = [1 if a == "x" else g.type.shape[i] for i, a in enumerate(self.new_order)]
                g = Reshape(pattern)(g, *[shape_of(g, i) for i, d in enumerate(pattern) if d is None])
            g = DimShuffle(squeeze)(g)
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
    """Reshape to ``shape``: ints (one may be -1), symbolic int scalars, ``y.shape``, or an int
    vector of static length."""
    pattern, sizes = _shape_pattern(shape, "reshape")
    return Reshape(pattern)(as_variable(x), *sizes)


def _shape_pattern(shape, where: str) -> tuple[list, list]:
    """Split a requested shape into a pattern (ints, None = symbolic) and the symbolic sizes."""
    if isinstance(shape, (int, Variable)) and getattr(shape, "ndim", 0) == 0:
        shape = (shape,)
    elif isinstance(shape, Variable):
        shape = _vector_entries(shape, where)
    pattern, sizes = [], []
    for s in shape:
        if isinstance(s, Constant):
            s = s.value
        if isinstance(s, Variable):
            if s.ndim != 0 or not is_integer(s.dtype):
                raise KilnTypeError(f"{where}: symbolic sizes must be integer scalars, given {s.type} "
                                    f"(created at {s.site})")
            pattern.append(None)
            sizes.append(s)
        else:
            pattern.append(int(s))
    return pattern, sizes


def _vector_entries(v: Variable, where: str) -> list:
    """The entries of an int vector of static length (``x.shape`` iterates on its own)."""
    from engine.ops.indexing import subtensor
    from engine.ops.methods import SymbolicShape

    if isinstance(v, SymbolicShape):
        return list(v)
    if v.ndim != 1 or not is_integer(v.dtype) or v.type.shape[0] is None:
        raise KilnTypeError(f"{where}: a shape must be a tuple of ints / int scalars or an int vector of "
                            f"static length, given {v.type} (created at {v.site})")
    if isinstance(v, Constant):
        return [int(d) for d in v.value]
    return [subtensor(v, i) for i in range(v.type.shape[0])]


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


class Alloc(Op):
    """A tensor of shape ``pattern`` filled with ``value`` broadcast (Theano's alloc; backs
    ``T.zeros(x.shape)``). ``None`` entries of the pattern are the next symbolic size inputs."""

    props = ("pattern",)

    def __init__(self, pattern: Sequence) -> None:
        self.pattern = tuple(pattern)

    def make_node(self, value: Variable, *sizes: Variable) -> Apply:
        if self.pattern.count(None) != len(sizes):
            raise KilnValueError(f"{self}: expected {self.pattern.count(None)} symbolic sizes, given {len(sizes)}")
        if any(p is not None and p < 0 for p in self.pattern):
            raise KilnValueError(f"alloc: negative dimension in {self.pattern}")
        if value.ndim > len(self.pattern):
            raise KilnShapeError(f"alloc: value {value.type} has more axes than the shape {self.pattern}")
        shape = list(self.pattern)
        lead = len(shape) - value.ndim
        for i, d in enumerate(value.type.shape):
            target = shape[lead + i]
            if d is not None and d != 1:
                if target is not None and target != d:
                    raise KilnShapeError(f"alloc: value {value.type} cannot be broadcast to shape "
                                         f"{format_shape(self.pattern)}")
                shape[lead + i] = d
        return Apply(self, [value, *sizes], [TensorType(value.dtype, tuple(shape))])

    def vjp(self, node: Apply, grads: list) -> list:
        from engine.ops.elemwise import sum_to

        return [sum_to(grads[0], node.inputs[0])] + [None] * (len(node.inputs) - 1)


def alloc(value, *shape) -> Variable:
    """``value`` broadcast to ``shape`` (ints, symbolic int scalars, or ``x.shape``)."""
    if len(shape) == 1 and not isinstance(shape[0], (int, np.integer)) and \
            not (isinstance(shape[0], Variable) and shape[0].ndim == 0):
        shape = shape[0]
    pattern, sizes = _shape_pattern(shape, "alloc")
    return Alloc(pattern)(as_variable(value), *sizes)


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

        g, grads_out, start = grads[0], [], 0
        for x in node.inputs:
            # Python ints while the sizes are static, so the pieces keep static shapes
            size = x.type.shape[self.axis]
            stop = start + size if size is not None and isinstance(start, int) else start + shape_of(x, self.axis)
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
    """``arange(start, stop, step)`` from scalars of the output dtype."""

    props = ("dtype",)

    def __init__(self, dtype: str = "int64") -> None:
        self.dtype = dtype

    def make_node(self, start: Variable, stop: Variable, step: Variable) -> Apply:
        for v in (start, stop, step):
            if v.ndim != 0:
                raise KilnTypeError(f"arange: bounds must be scalars, given {v.type}")
        if isinstance(step, Constant) and step.value == 0:
            raise KilnValueError("arange: step must not be zero")
        length = None
        if all(isinstance(v, Constant) for v in (start, stop, step)):
            length = len(np.arange(start.value, stop.value, step.value, dtype=self.dtype))
        return Apply(self, [start, stop, step], [TensorType(self.dtype, (length,))])

    def vjp(self, node: Apply, grads: list) -> list:
        return [None, None, None]


def arange(start, stop=None, step=1, dtype: str | None = None) -> Variable:
    """numpy's arange. The dtype follows the bounds (int64 for ints; floatX once a Python float
    is among them), so ``arange(0.0, 1.0, 0.25)`` is not truncated to integers."""
    from engine.ops.elemwise import cast
    from engine.types import promote

    if stop is None:
        start, stop = 0, start
    bounds = [as_variable(v) for v in (start, stop, step)]
    if dtype is None:
        strong = [b.dtype for b in bounds if not (isinstance(b, Constant) and b.weak)]
        weak = [b.python_value for b in bounds if isinstance(b, Constant) and b.weak]
        dtype = promote(*strong, weak=weak)
        dtype = "int64" if is_integer(dtype) else dtype
    return Arange(dtype)(*[cast(b, dtype) for b in bounds])


class StopGradient(Op):
    """Identity whose gradient is zero (``consider_constant`` for one expression)."""

    def make_node(self, x: Variable) -> Apply:
        return Apply(self, [x], [x.type])

    def vjp(self, node: Apply, grads: list) -> list:
        return [None]


def stop_gradient(x: Variable) -> Variable:
    return StopGradient()(as_variable(x))
