"""Indexing: basic slicing (``x[i, a:b]``), integer-array indexing (``p[T.arange(n), y]``), and
their writing forms ``set_subtensor`` / ``inc_subtensor``.

An index is described by a hashable ``spec``: one entry per indexed axis, either
``("index", v)`` or ``("slice", start, stop, step)``, where each bound is an int, ``None``
(absent) or ``"$"`` (the next symbolic scalar input).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from engine.errors import KilnShapeError, KilnTypeError, KilnValueError
from engine.graph import Apply, Constant, Op, Variable, as_variable
from engine.types import broadcast_shapes, is_integer

SYMBOLIC = "$"


def _bound(value: Any, symbolic: list) -> Any:
    if value is None:
        return None
    if isinstance(value, Variable):
        if isinstance(value, Constant) and value.ndim == 0:
            return int(value.value)
        if value.ndim != 0 or not is_integer(value.dtype):
            raise KilnTypeError(f"index bounds must be integer scalars, given {value.type} (created at {value.site})")
        symbolic.append(value)
        return SYMBOLIC
    if isinstance(value, (int, np.integer)):
        return int(value)
    raise KilnTypeError(f"unsupported index {value!r}")


def parse_basic_index(x: Variable, key: tuple) -> tuple[tuple, list]:
    spec, symbolic = [], []
    for entry in key:
        if isinstance(entry, slice):
            bounds = (entry.start, entry.stop, entry.step)
            spec.append(("slice", *(_bound(b, symbolic) for b in bounds)))
        else:
            spec.append(("index", _bound(entry, symbolic)))
    if len(spec) > x.ndim:
        raise KilnValueError(f"too many indices ({len(spec)}) for a {x.ndim}-d tensor {x.type}")
    return tuple(spec), symbolic


def indexed_shape(spec: tuple, shape: tuple) -> tuple:
    out = []
    for axis, dim in enumerate(shape):
        entry = spec[axis] if axis < len(spec) else ("slice", None, None, None)
        if entry[0] == "index":
            if isinstance(entry[1], int) and dim is not None and not -dim <= entry[1] < dim:
                raise KilnShapeError(f"index {entry[1]} is out of bounds for axis {axis} with size {dim}")
            continue
        start, stop, step = entry[1:]
        if step == 0:
            raise KilnValueError("slice step cannot be zero")
        if SYMBOLIC in (start, stop, step) or dim is None:
            full = start is None and stop is None and step in (None, 1)
            out.append(dim if full else None)
        else:
            out.append(len(range(*slice(start, stop, step).indices(dim))))
    return tuple(out)


class Subtensor(Op):
    """``x[spec]`` with basic indexing (a view in numpy; a copy in compiled code)."""

    props = ("spec",)

    def __init__(self, spec: tuple) -> None:
        self.spec = spec

    def make_node(self, x: Variable, *bounds: Variable) -> Apply:
        return Apply(self, [x, *bounds], [x.type.with_shape(indexed_shape(self.spec, x.type.shape))])

    def vjp(self, node: Apply, grads: list) -> list:
        x, *bounds = node.inputs
        from engine.ops.elemwise import zeros_like

        gx = IncSubtensor(self.spec, False)(zeros_like(x), grads[0], *bounds)
        return [gx] + [None] * len(bounds)


class IncSubtensor(Op):
    """A copy of ``x`` with ``x[spec]`` set to (or incremented by) ``y``, broadcast."""

    props = ("spec", "set_instead_of_inc")

    def __init__(self, spec: tuple, set_instead_of_inc: bool) -> None:
        self.spec = spec
        self.set_instead_of_inc = set_instead_of_inc

    def make_node(self, x: Variable, y: Variable, *bounds: Variable) -> Apply:
        target = indexed_shape(self.spec, x.type.shape)
        if y.dtype != x.dtype:
            raise KilnTypeError(f"set/inc_subtensor: value {y.type} must have the dtype of {x.type}")
        if y.ndim > len(target):
            raise KilnShapeError(f"set/inc_subtensor: value {y.type} has more axes than x[...] {target}")
        broadcast_shapes(target, y.type.shape, where="set/inc_subtensor: ")
        return Apply(self, [x, y, *bounds], [x.type])

    def vjp(self, node: Apply, grads: list) -> list:
        from engine.ops.elemwise import sum_to, zeros_like

        x, y, *bounds = node.inputs
        g = grads[0]
        gx = IncSubtensor(self.spec, True)(g, zeros_like(Subtensor(self.spec)(x, *bounds)), *bounds) \
            if self.set_instead_of_inc else g
        gy = sum_to(Subtensor(self.spec)(g, *bounds), y)
        return [gx, gy] + [None] * len(bounds)


class AdvancedSubtensor(Op):
    """``x[i0, i1, ..., ik-1]`` with k leading integer arrays (broadcast together)."""

    def make_node(self, x: Variable, *indices: Variable) -> Apply:
        _check_index_arrays(x, indices)
        lead = broadcast_shapes(*[i.type.shape for i in indices], where="advanced indexing: ")
        return Apply(self, [x, *indices], [x.type.with_shape(lead + x.type.shape[len(indices):])])

    def vjp(self, node: Apply, grads: list) -> list:
        from engine.ops.elemwise import zeros_like

        x, *indices = node.inputs
        return [AdvancedIncSubtensor(False)(zeros_like(x), grads[0], *indices)] + [None] * len(indices)


class AdvancedIncSubtensor(Op):
    """A copy of ``x`` with ``x[indices]`` set to / incremented by ``y`` (repeats accumulate)."""

    props = ("set_instead_of_inc",)

    def __init__(self, set_instead_of_inc: bool) -> None:
        self.set_instead_of_inc = set_instead_of_inc

    def make_node(self, x: Variable, y: Variable, *indices: Variable) -> Apply:
        _check_index_arrays(x, indices)
        if y.dtype != x.dtype:
            raise KilnTypeError(f"set/inc_subtensor: value {y.type} must have the dtype of {x.type}")
        return Apply(self, [x, y, *indices], [x.type])

    def vjp(self, node: Apply, grads: list) -> list:
        from engine.ops.elemwise import sum_to, zeros_like

        x, y, *indices = node.inputs
        g = grads[0]
        gx = AdvancedIncSubtensor(True)(g, zeros_like(AdvancedSubtensor()(x, *indices)), *indices) \
            if self.set_instead_of_inc else g
        return [gx, sum_to(AdvancedSubtensor()(g, *indices), y)] + [None] * len(indices)


def _check_index_arrays(x: Variable, indices) -> None:
    if not indices or len(indices) > x.ndim:
        raise KilnValueError(f"advanced indexing of {x.type} with {len(indices)} index arrays")
    for i in indices:
        if not is_integer(i.dtype):
            raise KilnTypeError(f"index arrays must be integers, given {i.type} (created at {i.site})")


def _is_index_array(entry: Any) -> bool:
    if isinstance(entry, Variable):
        return entry.ndim > 0
    return isinstance(entry, (list, np.ndarray))


def _expand_ellipsis(x: Variable, key: Any) -> tuple:
    key = key if isinstance(key, tuple) else (key,)
    if any(k is Ellipsis for k in key):
        at = key.index(Ellipsis)
        real = sum(1 for k in key if k is not None and k is not Ellipsis)  # None (newaxis) takes no axis
        key = key[:at] + (slice(None),) * (x.ndim - real) + key[at + 1:]
    return key


def _split_key(x: Variable, key: Any) -> tuple[bool, tuple]:
    key = _expand_ellipsis(x, key)
    advanced = [_is_index_array(k) for k in key]
    if any(advanced):
        n = advanced.index(False) if False in advanced else len(advanced)
        rest = key[n:]
        if any(advanced[n:]) or any(not (isinstance(k, slice) and k == slice(None)) for k in rest):
            raise KilnValueError("integer-array indexing is supported on the leading axes followed by full "
                                 "slices only, e.g. p[T.arange(n), y] or x[idx]")
        return True, tuple(as_variable(np.asarray(k) if isinstance(k, list) else k) for k in key[:n])
    return False, key


def subtensor(x: Variable, key: Any) -> Variable:
    key = _expand_ellipsis(x, key)
    if any(k is None for k in key):
        return _with_new_axes(x, key)
    advanced, key = _split_key(x, key)
    if advanced:
        return AdvancedSubtensor()(x, *key)
    spec, symbolic = parse_basic_index(x, key)
    # even ``x[:]`` is a node (Theano's idiom ``set_subtensor(x[:], v)`` needs one); canonicalize
    # removes the no-op copy (rule ``subtensor_full``)
    return Subtensor(spec)(x, *symbolic)


def is_full_slice(spec: tuple) -> bool:
    """True when ``spec`` selects every element of every axis in order (``x[:]``, ``x[::1, :]``)."""
    return all(e[0] == "slice" and e[1:] in ((None, None, None), (None, None, 1)) for e in spec)


def _with_new_axes(x: Variable, key: tuple) -> Variable:
    """numpy's ``x[None, :, 0]``: index without the Nones, then insert length-1 axes where they
    stood (basic indexing only)."""
    from engine.ops.shape import dimshuffle

    rest = tuple(k for k in key if k is not None)
    if any(_is_index_array(k) for k in rest):
        raise KilnValueError("None (newaxis) cannot be combined with integer-array indexing; use "
                             "dimshuffle / T.shape_padleft on the result")
    y = subtensor(x, rest)
    pattern, axis = [], 0
    for k in key:
        if k is None:
            pattern.append("x")
        elif isinstance(k, slice):
            pattern.append(axis)
            axis += 1
    pattern.extend(range(axis, y.ndim))  # axes after the last index entry
    return dimshuffle(y, pattern)


def set_subtensor(target: Variable, value: Any, inc: bool = False) -> Variable:
    """``target`` must be an indexing expression ``x[...]``; returns x with that part replaced."""
    from engine.ops.elemwise import cast

    node = target.owner
    if node is None or not isinstance(node.op, (Subtensor, AdvancedSubtensor)):
        raise KilnTypeError(f"set_subtensor/inc_subtensor need an indexed tensor x[...], given {target!r}")
    x, *rest = node.inputs
    value = as_variable(value)
    if value.dtype != x.dtype:
        # Python numbers take x's dtype; tensors may only be cast without loss (no silent downcast)
        weak = isinstance(value, Constant) and value.weak
        if not weak and not np.can_cast(value.dtype, x.dtype, "safe"):
            raise KilnTypeError(f"set_subtensor/inc_subtensor: the value {value.type} (created at {value.site}) "
                                f"would be downcast to the dtype of {x.type}; cast it explicitly")
        value = cast(value, x.dtype)
    if isinstance(node.op, Subtensor):
        return IncSubtensor(node.op.spec, not inc)(x, value, *rest)
    return AdvancedIncSubtensor(not inc)(x, value, *rest)


def inc_subtensor(target: Variable, value: Any) -> Variable:
    return set_subtensor(target, value, inc=True)
