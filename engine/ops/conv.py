"""Convolution ops: ``Conv2d`` and its two adjoints, ``LocallyConnected2d`` and its two adjoints.

Layout NCHW; conv filters are (F, C // groups, KH, KW), cross-correlation unless
``filter_flip=True`` (Theano's true convolution); locally-connected filters are
(OH, OW, F, C, KH, KW), valid padding only. Each family is a bilinear map ``y = F(x, w)`` with
adjoints ``GI`` (w.r.t. x) and ``GW`` (w.r.t. w) that share F's props, and the vjps of all three
are again members of the family, so these ops are differentiable to any order:

    F(x, w):      gx   = GI(gy, w, shape(x))     gw  = GW(x, gy, shape(w))
    GI(gy, w, s): g_gy = F(G, w)                 g_w = GW(G, gy, shape(w))
    GW(x, gy, s): g_x  = GI(gy, G, shape(x))     g_gy = F(x, G)

The ``s`` input of the adjoints is the shape of the result: an int64 vector of length 4, or any
4-d tensor whose run-time shape is the one wanted (a "like" tensor).
"""

from __future__ import annotations

import numbers
from typing import Any

import numpy as np

from engine.errors import KilnShapeError, KilnTypeError, KilnValueError
from engine.graph import Apply, Constant, Op, Variable
from engine.types import TensorType, format_shape, is_float, is_integer

PADDING_MODES = ("valid", "full", "same")


# -- helpers shared by the nn op families -----------------------------------------------------

def pair(value: Any, name: str, minimum: int) -> tuple[int, int]:
    """An int or a pair of ints -> (a, b), each >= minimum (KilnValueError otherwise)."""
    def is_int(v):
        return isinstance(v, numbers.Integral) and not isinstance(v, bool)

    if is_int(value):
        result = (int(value), int(value))
    elif isinstance(value, (tuple, list)) and len(value) == 2 and all(is_int(v) for v in value):
        result = (int(value[0]), int(value[1]))
    else:
        raise KilnValueError(f"{name} must be an int or a pair of ints, given {value!r}")
    if min(result) < minimum:
        raise KilnValueError(f"{name} must be >= {minimum} in each dimension, given {value!r}")
    return result


def describe(v: Variable, what: str) -> str:
    """'input x float32(?, 1, 28, 28) (created at model.py:12)'."""
    name = f" {v.name}" if v.name else ""
    return f"{what}{name} {v.type} (created at {v.site})"


def check_float(op: Op, v: Variable, what: str, ndim: int | None = None, min_ndim: int | None = None) -> None:
    if ndim is not None and v.ndim != ndim:
        raise KilnTypeError(f"{op}: {describe(v, what)} must be {ndim}-d, given {v.ndim}-d")
    if min_ndim is not None and v.ndim < min_ndim:
        raise KilnTypeError(f"{op}: {describe(v, what)} must have at least {min_ndim} axes")
    if not is_float(v.dtype):
        raise KilnTypeError(f"{op}: {describe(v, what)} must be float32 or float64; cast it first")


def same_dtype(op: Op, *pairs: tuple[Variable, str]) -> None:
    dtypes = {v.dtype for v, _ in pairs}
    if len(dtypes) > 1:
        described = " and ".join(describe(v, w) for v, w in pairs)
        raise KilnTypeError(f"{op}: inputs must share a dtype, given {described}")


def shape_arg(v: Variable) -> Variable:
    """The run-time shape of ``v`` as an int64 vector (a constant when it is static)."""
    from engine.ops.shape import Shape

    if None not in v.type.shape:
        return Constant(np.asarray(v.type.shape, dtype="int64"))
    return Shape()(v)


def static_shape_of_arg(op: Op, s: Variable, ndim: int) -> tuple:
    """The static shape described by a shape argument (an int vector or a "like" tensor)."""
    from engine.ops.shape import Shape

    if s.ndim == ndim and s.ndim != 1:
        return s.type.shape
    if s.ndim != 1 or not is_integer(s.dtype) or s.type.shape[0] not in (None, ndim):
        raise KilnTypeError(f"{op}: the shape argument must be an int vector of length {ndim} or a {ndim}-d "
                            f"tensor of that shape, given {describe(s, 'shape')}")
    if isinstance(s, Constant):
        return tuple(int(d) for d in s.value)
    if s.owner is not None and isinstance(s.owner.op, Shape) and s.owner.inputs[0].ndim == ndim:
        return s.owner.inputs[0].type.shape
    return (None,) * ndim


def merge_dims(op: Op, a: tuple, b: tuple, what: str) -> tuple:
    """Two partial descriptions of one shape -> the most known, raising where they disagree."""
    out = []
    for i, (x, y) in enumerate(zip(a, b)):
        if x is not None and y is not None and x != y:
            raise KilnShapeError(f"{op}: {what}: shapes {format_shape(a)} and {format_shape(b)} disagree "
                                 f"on axis {i}")
        out.append(x if x is not None else y)
    return tuple(out)


def check_output_grad(op: Op, expected: tuple, gy: Variable, where: str) -> None:
    """The output gradient must have the forward output's shape."""
    merge_dims(op, expected, gy.type.shape, f"the forward output shape of {where} vs the "
               f"{describe(gy, 'output gradient')}")


# -- convolution -------------------------------------------------------------------------------

def _effective(k: int | None, d: int) -> int | None:
    return None if k is None else d * (k - 1) + 1


class _ConvBase(Op):
    props = ("stride", "padding", "dilation", "groups", "filter_flip")

    def __init__(self, stride: Any = 1, padding: Any = (0, 0), dilation: Any = 1, groups: int = 1,
                 filter_flip: bool = False) -> None:
        self.stride = pair(stride, "conv2d stride", 1)
        self.dilation = pair(dilation, "conv2d dilation", 1)
        if isinstance(padding, str):
            mode = {"half": "same"}.get(padding.lower(), padding.lower())
            if mode not in PADDING_MODES:
                raise KilnValueError(f"conv2d padding must be one of {PADDING_MODES}, an int or a pair, "
                                     f"given {padding!r}")
            if mode == "same" and self.stride != (1, 1):
                raise KilnValueError(f"conv2d padding='same' needs stride 1, given stride {self.stride}")
            self.padding = (0, 0) if mode == "valid" else mode
        else:
            self.padding = pair(padding, "conv2d padding", 0)
        if not isinstance(groups, numbers.Integral) or isinstance(groups, bool) or groups < 1:
            raise KilnValueError(f"conv2d groups must be a positive int, given {groups!r}")
        self.groups = int(groups)
        self.filter_flip = bool(filter_flip)

    def _same_props(self, cls: type) -> Op:
        return cls(**{p: getattr(self, p) for p in self.props})

    def resolve_padding(self, kh: int | None, kw: int | None) -> tuple:
        """(ph, pw), with None for a side whose kernel size is not static under "full"/"same"."""
        if not isinstance(self.padding, str):
            return self.padding
        out = []
        for k, d in ((kh, self.dilation[0]), (kw, self.dilation[1])):
            keff = _effective(k, d)
            if keff is None:
                out.append(None)
            elif self.padding == "full":
                out.append(keff - 1)
            else:
                if keff % 2 == 0:
                    raise KilnShapeError(f"{self}: padding='same' needs an odd effective kernel size, the "
                                         f"kernel {(kh, kw)} with dilation {self.dilation} spans {keff}")
                out.append((keff - 1) // 2)
        return tuple(out)

    def output_shape(self, xs: tuple, ws: tuple, where: str) -> tuple:
        """The static (N, F, OH, OW) of the forward conv; ``where`` names the operands."""
        n, c, h, wd = xs
        f, cg, kh, kw = ws
        if c is not None and cg is not None and c != cg * self.groups:
            raise KilnShapeError(f"{self}: the input has {c} channels but the filters expect "
                                 f"{cg} x groups={self.groups} = {cg * self.groups}: {where}")
        for what, size in (("channels", c), ("filters", f)):
            if size is not None and size % self.groups:
                raise KilnShapeError(f"{self}: the number of {what} ({size}) is not divisible by "
                                     f"groups={self.groups}: {where}")
        pads = self.resolve_padding(kh, kw)
        out = []
        for size, k, p, s, d in zip((h, wd), (kh, kw), pads, self.stride, self.dilation):
            keff = _effective(k, d)
            if size is None or keff is None or p is None:
                out.append(None)
                continue
            if size + 2 * p < keff:
                raise KilnShapeError(f"{self}: the padded input ({size} + 2 x {p}) is smaller than the effective "
                                     f"kernel size {keff}: {where}")
            out.append((size + 2 * p - keff) // s + 1)
        return (n, f, *out)


class Conv2d(_ConvBase):
    """2-d convolution (cross-correlation), NCHW: x (N, C, H, W), w (F, C/groups, KH, KW)."""

    def make_node(self, x: Variable, w: Variable) -> Apply:
        check_float(self, x, "input", 4)
        check_float(self, w, "filters", 4)
        same_dtype(self, (x, "input"), (w, "filters"))
        shape = self.output_shape(x.type.shape, w.type.shape, f"{describe(x, 'input')} and {describe(w, 'filters')}")
        return Apply(self, [x, w], [TensorType(x.dtype, shape)])

    def vjp(self, node: Apply, grads: list) -> list:
        x, w = node.inputs
        g = grads[0]
        if g is None:
            return [None, None]
        return [self._same_props(Conv2dGradInput)(g, w, shape_arg(x)),
                self._same_props(Conv2dGradWeight)(x, g, shape_arg(w))]


class Conv2dGradInput(_ConvBase):
    """The adjoint of ``Conv2d`` w.r.t. its input: (gy, w, shape of x) -> gx."""

    def make_node(self, gy: Variable, w: Variable, x_shape: Variable) -> Apply:
        check_float(self, gy, "output gradient", 4)
        check_float(self, w, "filters", 4)
        same_dtype(self, (gy, "output gradient"), (w, "filters"))
        xs = static_shape_of_arg(self, x_shape, 4)
        xs = merge_dims(self, xs, (gy.type.shape[0], None if w.type.shape[1] is None
                                   else w.type.shape[1] * self.groups, None, None), "input shape vs filters")
        where = f"input shape {format_shape(xs)} and {describe(w, 'filters')}"
        expected = self.output_shape(xs, w.type.shape, where)
        check_output_grad(self, expected, gy, where)
        return Apply(self, [gy, w, x_shape], [TensorType(gy.dtype, xs)])

    def vjp(self, node: Apply, grads: list) -> list:
        gy, w, _ = node.inputs
        g = grads[0]
        if g is None:
            return [None, None, None]
        return [self._same_props(Conv2d)(g, w), self._same_props(Conv2dGradWeight)(g, gy, shape_arg(w)), None]


class Conv2dGradWeight(_ConvBase):
    """The adjoint of ``Conv2d`` w.r.t. its filters: (x, gy, shape of w) -> gw."""

    def make_node(self, x: Variable, gy: Variable, w_shape: Variable) -> Apply:
        check_float(self, x, "input", 4)
        check_float(self, gy, "output gradient", 4)
        same_dtype(self, (x, "input"), (gy, "output gradient"))
        ws = static_shape_of_arg(self, w_shape, 4)
        c = x.type.shape[1]
        ws = merge_dims(self, ws, (gy.type.shape[1], None if c is None else c // self.groups, None, None),
                        "filter shape vs input and output gradient")
        where = f"{describe(x, 'input')} and filter shape {format_shape(ws)}"
        expected = self.output_shape(x.type.shape, ws, where)
        check_output_grad(self, expected, gy, where)
        return Apply(self, [x, gy, w_shape], [TensorType(x.dtype, ws)])

    def vjp(self, node: Apply, grads: list) -> list:
        x, gy, _ = node.inputs
        g = grads[0]
        if g is None:
            return [None, None, None]
        return [self._same_props(Conv2dGradInput)(gy, g, shape_arg(x)), self._same_props(Conv2d)(x, g), None]


# -- locally connected -------------------------------------------------------------------------

class _LocalBase(Op):
    props = ("stride",)

    def __init__(self, stride: Any = 1) -> None:
        self.stride = pair(stride, "locally_connected2d stride", 1)

    def check(self, xs: tuple, ws: tuple, where: str) -> tuple:
        """The static (N, F, OH, OW); ``where`` names the operands."""
        n, c, h, wd = xs
        oh, ow, f, wc, kh, kw = ws
        if c is not None and wc is not None and c != wc:
            raise KilnShapeError(f"{self}: the input has {c} channels, the filters (OH, OW, F, C, KH, KW) "
                                 f"expect {wc}: {where}")
        for size, k, o, s in zip((h, wd), (kh, kw), (oh, ow), self.stride):
            if size is None or k is None:
                continue
            if size < k:
                raise KilnShapeError(f"{self}: the input ({size}) is smaller than the kernel ({k}): {where}")
            if o is not None and o != (size - k) // s + 1:
                raise KilnShapeError(f"{self}: the filters have {o} output positions, the valid output of "
                                     f"an input of {size} with kernel {k} and stride {s} has "
                                     f"{(size - k) // s + 1}: {where}")
        return (n, f, oh, ow)


class LocallyConnected2d(_LocalBase):
    """Untied-weights convolution (Le et al. 2011): x (N, C, H, W), w (OH, OW, F, C, KH, KW)."""

    def make_node(self, x: Variable, w: Variable) -> Apply:
        check_float(self, x, "input", 4)
        check_float(self, w, "filters", 6)
        same_dtype(self, (x, "input"), (w, "filters"))
        shape = self.check(x.type.shape, w.type.shape, f"{describe(x, 'input')} and {describe(w, 'filters')}")
        return Apply(self, [x, w], [TensorType(x.dtype, shape)])

    def vjp(self, node: Apply, grads: list) -> list:
        x, w = node.inputs
        g = grads[0]
        if g is None:
            return [None, None]
        return [LocallyConnected2dGradInput(self.stride)(g, w, shape_arg(x)),
                LocallyConnected2dGradWeight(self.stride)(x, g, shape_arg(w))]


class LocallyConnected2dGradInput(_LocalBase):
    """The adjoint of ``LocallyConnected2d`` w.r.t. its input: (gy, w, shape of x) -> gx."""

    def make_node(self, gy: Variable, w: Variable, x_shape: Variable) -> Apply:
        check_float(self, gy, "output gradient", 4)
        check_float(self, w, "filters", 6)
        same_dtype(self, (gy, "output gradient"), (w, "filters"))
        xs = static_shape_of_arg(self, x_shape, 4)
        xs = merge_dims(self, xs, (gy.type.shape[0], w.type.shape[3], None, None), "input shape vs filters")
        where = f"input shape {format_shape(xs)} and {describe(w, 'filters')}"
        expected = self.check(xs, w.type.shape, where)
        check_output_grad(self, expected, gy, where)
        return Apply(self, [gy, w, x_shape], [TensorType(gy.dtype, xs)])

    def vjp(self, node: Apply, grads: list) -> list:
        gy, w, _ = node.inputs
        g = grads[0]
        if g is None:
            return [None, None, None]
        return [LocallyConnected2d(self.stride)(g, w),
                LocallyConnected2dGradWeight(self.stride)(g, gy, shape_arg(w)), None]


class LocallyConnected2dGradWeight(_LocalBase):
    """The adjoint of ``LocallyConnected2d`` w.r.t. its filters: (x, gy, shape of w) -> gw."""

    def make_node(self, x: Variable, gy: Variable, w_shape: Variable) -> Apply:
        check_float(self, x, "input", 4)
        check_float(self, gy, "output gradient", 4)
        same_dtype(self, (x, "input"), (gy, "output gradient"))
        ws = static_shape_of_arg(self, w_shape, 6)
        ws = merge_dims(self, ws, (gy.type.shape[2], gy.type.shape[3], gy.type.shape[1], x.type.shape[1],
                                   None, None), "filter shape vs input and output gradient")
        where = f"{describe(x, 'input')} and filter shape {format_shape(ws)}"
        expected = self.check(x.type.shape, ws, where)
        check_output_grad(self, expected, gy, where)
        return Apply(self, [x, gy, w_shape], [TensorType(x.dtype, ws)])

    def vjp(self, node: Apply, grads: list) -> list:
        x, gy, _ = node.inputs
        g = grads[0]
        if g is None:
            return [None, None, None]
        return [LocallyConnected2dGradInput(self.stride)(gy, g, shape_arg(x)),
                LocallyConnected2d(self.stride)(x, g), None]


def composite_vjp(expression, inputs: list, output_grads: list) -> list:
    """The vjp of a node from a graph ``expression(*inputs)`` that computes the same outputs.

    The expression is built on fresh placeholders, differentiated with ``engine.grad``, and the
    placeholders are then replaced by the node's inputs, so each input's gradient is a partial
    derivative even when the inputs depend on each other. Used for the higher-order gradients of
    ops whose first-order gradient is an op of its own (``LCNGrad``, ``ProbMaxPoolGrad``, ...).
    """
    from engine.grad import grad
    from engine.graph import clone_replace

    placeholders = [Variable(v.type, name=v.name) for v in inputs]
    outputs = expression(*placeholders)
    outputs = outputs if isinstance(outputs, (list, tuple)) else [outputs]
    known = {o: g for o, g in zip(outputs, output_grads) if g is not None}
    if not known:
        return [None] * len(inputs)
    positions = [i for i, v in enumerate(inputs) if is_float(v.dtype)]
    grads = grad(None, [placeholders[i] for i in positions], known_grads=known,
                 disconnected_inputs="ignore", return_disconnected="none")
    present = [g for g in grads if g is not None]
    replaced = iter(clone_replace(present, dict(zip(placeholders, inputs))))
    result = [None] * len(inputs)
    for i, g in zip(positions, grads):
        result[i] = None if g is None else next(replaced)
    return result
