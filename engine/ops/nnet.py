"""Softmax family: ``Softmax(axis)``, ``LogSoftmax(axis)`` and ``SoftmaxCrossEntropy()``.

All three are computed stably (the max is subtracted before exponentiating). The optimizer's
stabilize pass rewrites ``log(softmax(x))`` into ``LogSoftmax`` and
``-log(softmax(x))[arange(n), y]`` into ``SoftmaxCrossEntropy()(x, y)``; their vjps build graph
(softmax itself is differentiable), so every order of gradient exists.
"""

from __future__ import annotations

from engine.errors import KilnShapeError, KilnTypeError, KilnValueError
from engine.graph import Apply, Op, Variable
from engine.ops.conv import check_float, describe
from engine.types import TensorType, is_integer


class _AxisOp(Op):
    props = ("axis",)

    def __init__(self, axis: int = -1) -> None:
        if not isinstance(axis, int) or isinstance(axis, bool):
            raise KilnValueError(f"{type(self).__name__}: axis must be an int, given {axis!r}")
        self.axis = axis

    def make_node(self, x: Variable) -> Apply:
        check_float(self, x, "input", min_ndim=1)
        if not -x.ndim <= self.axis < x.ndim:
            raise KilnValueError(f"{self}: axis {self.axis} is out of range for {describe(x, 'input')}")
        return Apply(self, [x], [x.type])

    def _sum(self, z: Variable) -> Variable:
        from engine.ops.reduce import reduce

        return reduce(z, "sum", self.axis, keepdims=True)


class Softmax(_AxisOp):
    """exp(x) / sum(exp(x)) along ``axis``."""

    def vjp(self, node: Apply, grads: list) -> list:
        from engine.ops import elemwise as E

        y, g = node.outputs[0], grads[0]
        if g is None:
            return [None]
        return [E.mul(y, E.sub(g, self._sum(E.mul(g, y))))]


class LogSoftmax(_AxisOp):
    """x - logsumexp(x) along ``axis``."""

    def vjp(self, node: Apply, grads: list) -> list:
        from engine.ops import elemwise as E

        g = grads[0]
        if g is None:
            return [None]
        return [E.sub(g, E.mul(Softmax(self.axis)(node.inputs[0]), self._sum(g)))]


class SoftmaxCrossEntropy(Op):
    """Per-example loss of logits x (N, K) and int labels y (N,): logsumexp(x_i) - x_i[y_i]."""

    def make_node(self, x: Variable, y: Variable) -> Apply:
        check_float(self, x, "logits", 2)
        if y.ndim != 1 or not is_integer(y.dtype):
            raise KilnTypeError(f"{self}: {describe(y, 'labels')} must be an int vector (one class index "
                                f"per row of the logits)")
        n, m = x.type.shape[0], y.type.shape[0]
        if n is not None and m is not None and n != m:
            raise KilnShapeError(f"{self}: {describe(x, 'logits')} has {n} rows but {describe(y, 'labels')} "
                                 f"has {m} labels")
        return Apply(self, [x, y], [TensorType(x.dtype, (n if n is not None else m,))])

    def vjp(self, node: Apply, grads: list) -> list:
        from engine.ops import elemwise as E
        from engine.ops.shape import arange, dimshuffle, shape_of

        x, y = node.inputs
        g = grads[0]
        if g is None:
            return [None, None]
        classes = arange(shape_of(x, 1))
        onehot = E.cast(E.apply("eq", dimshuffle(classes, "x", 0), dimshuffle(y, 0, "x")), x.dtype)
        return [E.mul(E.sub(Softmax(1)(x), onehot), dimshuffle(g, 0, "x")), None]
