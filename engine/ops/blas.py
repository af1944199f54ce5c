"""Matrix products: ``MatMul`` (numpy ``matmul`` semantics on >= 2-d operands, batch dims
broadcast) and the ``dot`` builder that handles vectors by adding and removing axes."""

from __future__ import annotations

from engine.errors import KilnShapeError, KilnTypeError
from engine.graph import Apply, Op, Variable, as_variable
from engine.types import TensorType, broadcast_shapes, format_shape


class MatMul(Op):
    """``a @ b`` for a (..., m, k) and b (..., k, n)."""

    def make_node(self, a: Variable, b: Variable) -> Apply:
        if a.ndim < 2 or b.ndim < 2:
            raise KilnTypeError(f"MatMul needs >= 2-d operands, given {a.type} and {b.type}")
        if a.dtype != b.dtype:
            raise KilnTypeError(f"MatMul operands must share a dtype, given {a.type} and {b.type}")
        k1, k2 = a.type.shape[-1], b.type.shape[-2]
        if k1 is not None and k2 is not None and k1 != k2:
            raise KilnShapeError(
                f"matmul: inner dimensions differ: {format_shape(a.type.shape)} @ {format_shape(b.type.shape)} "
                f"({k1} != {k2}); left operand created at {a.site}, right at {b.site}"
            )
        batch = broadcast_shapes(a.type.shape[:-2], b.type.shape[:-2], where="matmul batch dims: ")
        return Apply(self, [a, b], [TensorType(a.dtype, batch + (a.type.shape[-2], b.type.shape[-1]))])

    def vjp(self, node: Apply, grads: list) -> list:
        from engine.ops.elemwise import sum_to
        from engine.ops.shape import transpose

        a, b = node.inputs
        g = grads[0]
        swap_a = tuple(range(a.ndim - 2)) + (a.ndim - 1, a.ndim - 2)
        swap_b = tuple(range(b.ndim - 2)) + (b.ndim - 1, b.ndim - 2)
        ga, gb = MatMul()(g, transpose(b, swap_b)), MatMul()(transpose(a, swap_a), g)
        if a.ndim == b.ndim == 2:  # no batch dims were broadcast: shapes already match
            return [ga, gb]
        return [sum_to(ga, a), sum_to(gb, b)]


def dot(a: object, b: object) -> Variable:
    """numpy ``matmul`` semantics, including 1-d operands (a vector is promoted, then squeezed)."""
    from engine.ops.elemwise import cast
    from engine.ops.shape import dimshuffle
    from engine.types import promote

    a, b = as_variable(a), as_variable(b)
    if a.ndim == 0 or b.ndim == 0:
        from engine.ops.elemwise import mul

        return mul(a, b)
    dtype = promote(a.dtype, b.dtype)
    a, b = cast(a, dtype), cast(b, dtype)
    squeeze_left, squeeze_right = a.ndim == 1, b.ndim == 1
    if squeeze_left:
        a = dimshuffle(a, "x", 0)
    if squeeze_right:
        b = dimshuffle(b, 0, "x")
    out = MatMul()(a, b)
    if squeeze_left or squeeze_right:
        keep = [i for i in range(out.ndim)
                if not (squeeze_left and i == out.ndim - 2) and not (squeeze_right and i == out.ndim - 1)]
        out = dimshuffle(out, keep)
    return out
