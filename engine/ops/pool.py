"""Pooling ops over the last two axes: ``Pool2d`` (max, avg, l2, sum) with ``Pool2dGrad`` and
``MaxPool2dGradGrad``, and probabilistic max-pooling (Lee et al. 2009): ``ProbMaxPool``,
``ProbMaxPoolGrad`` and the sampler ``ProbMaxPoolSample``.

Conventions (DESIGN.md): max ties go to the first index in row-major order, padding is -inf
for max and zeros otherwise; ``count_include_pad`` picks the avg divisor; the L2 gradient is 0
where the pooled norm is 0. ``ignore_border=True`` is floor mode, ``False`` ceil mode (a last
partial window is kept; every window starts inside the input plus the low padding).

Gradients of every order: ``Pool2dGrad`` is linear in gy for avg/sum (its vjp is ``Pool2d``),
picks through the argmax for max (its vjp is ``MaxPool2dGradGrad``, whose vjp is
``Pool2dGrad`` again), and for l2 its vjp is built from sum pooling and elementwise ops.
"""

from __future__ import annotations

from typing import Any

from engine.errors import KilnShapeError, KilnTypeError, KilnValueError
from engine.graph import Apply, Op, Variable
from engine.ops.conv import check_float, composite_vjp, describe, pair, same_dtype
from engine.types import format_shape

MODES = ("max", "avg", "l2", "sum")


def pool_out_len(n: int, k: int, s: int, p: int, ignore_border: bool) -> int:
    """Number of windows along an axis of length n (the oracle's rule, backends/numpy/pool.py)."""
    r = n + 2 * p
    if ignore_border:
        return (r - k) // s + 1 if r >= k else 0
    if r < k:
        return 1
    out = -((k - r) // s) + 1
    if (out - 1) * s >= n + p:
        out -= 1
    return out


class _PoolBase(Op):
    props = ("ws", "stride", "padding", "mode", "ignore_border", "count_include_pad")

    def __init__(self, ws: Any, stride: Any = None, padding: Any = 0, mode: str = "max",
                 ignore_border: bool = True, count_include_pad: bool = True) -> None:
        self.ws = pair(ws, "pool2d ws", 1)
        self.stride = self.ws if stride is None else pair(stride, "pool2d stride", 1)
        self.padding = pair(padding, "pool2d padding", 0)
        if self.padding[0] >= self.ws[0] or self.padding[1] >= self.ws[1]:
            raise KilnValueError(f"pool2d padding {self.padding} must be smaller than the window {self.ws}")
        if mode not in MODES:
            raise KilnValueError(f"pool2d mode must be one of {MODES}, given {mode!r}")
        self.mode = mode
        self.ignore_border = bool(ignore_border)
        # the divisor choice only matters for avg: other modes keep one canonical op identity
        self.count_include_pad = bool(count_include_pad) if mode == "avg" else True

    def _with(self, cls: type = None, **changes) -> Op:
        values = {p: getattr(self, p) for p in self.props}
        values.update(changes)
        if "mode" in changes and changes["mode"] != "avg":
            values["count_include_pad"] = True
        return (cls or type(self))(**values)

    def output_shape(self, x: Variable) -> tuple:
        lead, (h, w) = x.type.shape[:-2], x.type.shape[-2:]
        out = []
        for n, k, s, p in zip((h, w), self.ws, self.stride, self.padding):
            if n is None:
                out.append(None)
                continue
            length = pool_out_len(n, k, s, p, self.ignore_border)
            if length < 1:
                raise KilnShapeError(f"{self}: the window {self.ws} with padding {self.padding} does not fit "
                                     f"in the spatial shape {(h, w)} of {describe(x, 'input')} "
                                     f"(ignore_border=True)")
            out.append(length)
        return (*lead, *out)

    def check_pooled(self, x: Variable, v: Variable, what: str) -> None:
        expected = self.output_shape(x)
        if v.ndim != x.ndim or any(a is not None and b is not None and a != b
                                   for a, b in zip(expected, v.type.shape)):
            raise KilnShapeError(f"{self}: {describe(v, what)} must have the pooled shape "
                                 f"{format_shape(expected)} of {describe(x, 'input')}")


class Pool2d(_PoolBase):
    """Pool the last two axes of ``x`` (ndim >= 2) with windows ``ws``."""

    def make_node(self, x: Variable) -> Apply:
        if self.mode == "max":
            if x.ndim < 2:
                raise KilnTypeError(f"{self}: {describe(x, 'input')} must have at least 2 axes")
            if x.dtype == "bool":
                raise KilnTypeError(f"{self}: {describe(x, 'input')}: max pooling of bool; cast it first")
        else:
            check_float(self, x, "input", min_ndim=2)
        return Apply(self, [x], [x.type.with_shape(self.output_shape(x))])

    def vjp(self, node: Apply, grads: list) -> list:
        if grads[0] is None:
            return [None]
        return [self._with(Pool2dGrad)(node.inputs[0], node.outputs[0], grads[0])]


class Pool2dGrad(_PoolBase):
    """The vjp of ``Pool2d``: (x, y = Pool2d(x), gy) -> gx. Only l2 reads y."""

    def make_node(self, x: Variable, y: Variable, gy: Variable) -> Apply:
        check_float(self, x, "input", min_ndim=2)
        same_dtype(self, (x, "input"), (y, "pooled output"), (gy, "output gradient"))
        self.check_pooled(x, y, "pooled output")
        self.check_pooled(x, gy, "output gradient")
        return Apply(self, [x, y, gy], [x.type])

    def vjp(self, node: Apply, grads: list) -> list:
        x, y, gy = node.inputs
        g = grads[0]
        if g is None:
            return [None, None, None]
        if self.mode in ("avg", "sum"):  # gx = A^T gy: linear in gy alone
            return [None, None, self._with(Pool2d)(g)]
        if self.mode == "max":  # piecewise constant in x: the argmax selection, transposed
            return [None, None, self._with(MaxPool2dGradGrad)(x, g)]
        return composite_vjp(self._l2_grad_expression, node.inputs, [g])

    def _l2_grad_expression(self, x: Variable, y: Variable, gy: Variable) -> Variable:
        """gx = x * U(gy / y) (0 where y == 0), U the adjoint of sum pooling, as graph."""
        from engine.ops import elemwise as E

        zero = E.apply("eq", y, 0)
        t = E.where(zero, 0, E.true_div(gy, E.where(zero, 1, y)))
        return E.mul(x, self._with(Pool2dGrad, mode="sum")(x, y, t))


class MaxPool2dGradGrad(_PoolBase):
    """The vjp of max ``Pool2dGrad`` w.r.t. gy: (x, g) -> per window, g at the window's argmax."""

    def __init__(self, ws: Any, stride: Any = None, padding: Any = 0, mode: str = "max",
                 ignore_border: bool = True, count_include_pad: bool = True) -> None:
        if mode != "max":
            raise KilnValueError(f"MaxPool2dGradGrad is for mode='max', given {mode!r}")
        super().__init__(ws, stride, padding, mode, ignore_border, count_include_pad)

    def make_node(self, x: Variable, g: Variable) -> Apply:
        check_float(self, x, "input", min_ndim=2)
        same_dtype(self, (x, "input"), (g, "input-shaped gradient"))
        if g.ndim != x.ndim:
            raise KilnShapeError(f"{self}: {describe(g, 'gradient')} must have the shape of {describe(x, 'input')}")
        return Apply(self, [x, g], [x.type.with_shape(self.output_shape(x))])

    def vjp(self, node: Apply, grads: list) -> list:
        x = node.inputs[0]
        if grads[0] is None:
            return [None, None]
        y = self._with(Pool2d)(x)
        return [None, self._with(Pool2dGrad)(x, y, grads[0])]


# -- probabilistic max-pooling -----------------------------------------------------------------

class _ProbBase(Op):
    props = ("ws",)

    def __init__(self, ws: Any) -> None:
        self.ws = pair(ws, "probabilistic max-pool ws", 1)

    def pooled_shape(self, x: Variable) -> tuple:
        check_float(self, x, "input", min_ndim=2)
        out = []
        for n, b in zip(x.type.shape[-2:], self.ws):
            if n is not None and n % b:
                raise KilnShapeError(f"{self}: the blocks {self.ws} must divide the spatial shape "
                                     f"{format_shape(x.type.shape[-2:])} of {describe(x, 'input')}")
            out.append(None if n is None else n // b)
        return (*x.type.shape[:-2], *out)

    def check_like(self, x: Variable, v: Variable, shape: tuple, what: str) -> None:
        same_dtype(self, (x, "input"), (v, what))
        if v.ndim != len(shape) or any(a is not None and b is not None and a != b
                                       for a, b in zip(shape, v.type.shape)):
            raise KilnShapeError(f"{self}: {describe(v, what)} must have shape {format_shape(shape)} "
                                 f"for {describe(x, 'input')}")


class ProbMaxPool(_ProbBase):
    """I (..., H, W) -> (detection probabilities (..., H, W), pooling probabilities
    (..., H/bh, W/bw)): per block a softmax over its units and one "off" state of energy 0."""

    n_outputs = 2

    def make_node(self, x: Variable) -> Apply:
        pooled = self.pooled_shape(x)
        return Apply(self, [x], [x.type, x.type.with_shape(pooled)])

    def vjp(self, node: Apply, grads: list) -> list:
        from engine.ops.elemwise import zeros_like

        g_det, g_pool = grads
        if g_det is None and g_pool is None:
            return [None]
        g_det = zeros_like(node.outputs[0]) if g_det is None else g_det
        g_pool = zeros_like(node.outputs[1]) if g_pool is None else g_pool
        return [ProbMaxPoolGrad(self.ws)(node.inputs[0], g_det, g_pool)]


class ProbMaxPoolGrad(_ProbBase):
    """The vjp of ``ProbMaxPool``: (I, g_det, g_pool) -> gI = p * (g - blocksum(p * g)),
    with g = g_det + g_pool repeated over each block."""

    def make_node(self, x: Variable, g_det: Variable, g_pool: Variable) -> Apply:
        pooled = self.pooled_shape(x)
        self.check_like(x, g_det, x.type.shape, "detection gradient")
        self.check_like(x, g_pool, pooled, "pooling gradient")
        return Apply(self, [x, g_det, g_pool], [x.type])

    def vjp(self, node: Apply, grads: list) -> list:
        return composite_vjp(self._expression, node.inputs, grads)

    def _expression(self, x: Variable, g_det: Variable, g_pool: Variable) -> Variable:
        from engine.ops import elemwise as E

        block_sum = Pool2d(self.ws, mode="sum")
        repeat = Pool2dGrad(self.ws, mode="sum")  # the adjoint of block sums: y is not read
        p = ProbMaxPool(self.ws)(x)[0]
        g = E.add(g_det, repeat(x, g_pool, g_pool))
        dot = block_sum(E.mul(p, g))
        return E.mul(p, E.sub(g, repeat(x, dot, dot)))


class ProbMaxPoolSample(_ProbBase):
    """(I, u) -> (detection sample, pooling sample): one uniform u in [0, 1) per block picks a
    unit (or "off") by inverse CDF over the block's states (units in row-major order, off last)."""

    n_outputs = 2

    def make_node(self, x: Variable, u: Variable) -> Apply:
        pooled = self.pooled_shape(x)
        self.check_like(x, u, pooled, "uniforms")
        return Apply(self, [x, u], [x.type, x.type.with_shape(pooled)])

    def vjp(self, node: Apply, grads: list) -> list:
        return [None, None]
