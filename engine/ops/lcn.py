"""Local contrast normalization (Jarrett et al. 2009): ``LCN`` and its vjp ``LCNGrad``.

Per image of an NCHW batch (DESIGN.md): ``w`` a size x size Gaussian (sigma default size / 4.5)
over all C maps normalized to sum 1 (per map when ``across_channels=False``), zero padding
"same"; ``v = x - conv(x, w)``; ``s = sqrt(conv(v * v, w))``; ``c = mean(s)`` over the image;
``y = v / max(s, c, eps)``. ``mode="subtractive"`` returns v, ``"divisive"`` divides x itself.

LCN is one op (a fused, separable kernel in the code generators). ``lcn_expression`` writes the
same function with ``Conv2d`` and elementwise ops; ``LCNGrad``'s own vjp differentiates that
expression, so LCN is differentiable to any order.
"""

from __future__ import annotations

import numbers

import numpy as np

from engine.errors import KilnValueError
from engine.graph import Apply, Constant, Op, Variable
from engine.ops.conv import check_float, composite_vjp, describe, same_dtype
from engine.types import is_float

MODES = ("both", "subtractive", "divisive")


class _LCNBase(Op):
    props = ("size", "sigma", "mode", "across_channels", "eps")

    def __init__(self, size: int = 9, sigma: float | None = None, mode: str = "both",
                 across_channels: bool = True, eps: float = 1e-4) -> None:
        if not isinstance(size, numbers.Integral) or isinstance(size, bool) or size < 1 or size % 2 == 0:
            raise KilnValueError(f"lcn size must be a positive odd int (a centred window), given {size!r}")
        self.size = int(size)
        self.sigma = float(size / 4.5 if sigma is None else sigma)
        if not self.sigma > 0:
            raise KilnValueError(f"lcn sigma must be > 0, given {sigma!r}")
        if mode not in MODES:
            raise KilnValueError(f"lcn mode must be one of {MODES}, given {mode!r}")
        self.mode = mode
        self.across_channels = bool(across_channels)
        self.eps = float(eps)
        if not self.eps >= 0:
            raise KilnValueError(f"lcn eps must be >= 0, given {eps!r}")

    def _props(self) -> dict:
        return {p: getattr(self, p) for p in self.props}


class LCN(_LCNBase):
    """Local contrast normalization of an NCHW float tensor (see the module docstring)."""

    def make_node(self, x: Variable) -> Apply:
        check_float(self, x, "input", 4)
        return Apply(self, [x], [x.type])

    def vjp(self, node: Apply, grads: list) -> list:
        if grads[0] is None:
            return [None]
        return [LCNGrad(**self._props())(node.inputs[0], grads[0])]


class LCNGrad(_LCNBase):
    """The vjp of ``LCN``: (x, gy) -> gx. Ties in max(s, c, eps) go to the first of (s, c, eps)
    attaining the max; the derivative of the square root is 0 where s == 0."""

    def make_node(self, x: Variable, gy: Variable) -> Apply:
        check_float(self, x, "input", 4)
        same_dtype(self, (x, "input"), (gy, "output gradient"))
        if gy.ndim != 4 or any(a is not None and b is not None and a != b
                               for a, b in zip(x.type.shape, gy.type.shape)):
            raise KilnValueError(f"{self}: {describe(gy, 'output gradient')} must have the shape of "
                                 f"{describe(x, 'input')}")
        return Apply(self, [x, gy], [x.type])

    def vjp(self, node: Apply, grads: list) -> list:
        from engine.grad import grad

        def gradient_expression(x: Variable, gy: Variable) -> Variable:
            y = lcn_expression(x, **self._props())
            return grad(None, x, known_grads={y: gy})

        return composite_vjp(gradient_expression, node.inputs, grads)


def gaussian_window(size: int, sigma: float) -> np.ndarray:
    """The normalized size x size Gaussian, float64 (outer product of the 1-d one)."""
    t = np.arange(size, dtype=np.float64) - size // 2
    g = np.exp(-(t * t) / (2.0 * sigma * sigma))
    g /= g.sum()
    return np.multiply.outer(g, g)


def lcn_expression(x: Variable, size: int = 9, sigma: float | None = None, mode: str = "both",
                   across_channels: bool = True, eps: float = 1e-4) -> Variable:
    """LCN written with ``Conv2d`` and elementwise ops (the same function as the ``LCN`` op)."""
    from engine.ops import elemwise as E
    from engine.ops import reduce as R
    from engine.ops.conv import Conv2d
    from engine.ops.shape import reshape, reshape_like, shape_of

    if not is_float(x.dtype):
        raise KilnValueError(f"lcn: {describe(x, 'input')} must be float")
    sigma = size / 4.5 if sigma is None else sigma
    window = Constant(gaussian_window(size, sigma)[None, None].astype(x.dtype))
    blur = Conv2d(padding=(size // 2, size // 2))

    def conv(z: Variable) -> Variable:
        if across_channels:  # the channel mean blurred, the same for every map (broadcasts)
            return blur(z, window) if z.type.shape[1] == 1 else blur(R.mean(z, axis=1, keepdims=True), window)
        h = z.type.shape[2] if z.type.shape[2] is not None else shape_of(z, 2)
        w = z.type.shape[3] if z.type.shape[3] is not None else shape_of(z, 3)
        return reshape_like(blur(reshape(z, (-1, 1, h, w)), window), z)

    v = x if mode == "divisive" else E.sub(x, conv(x))
    if mode == "subtractive":
        return v
    s = E.apply("sqrt", conv(E.sqr(v)))
    c = R.mean(s, axis=(1, 2, 3), keepdims=True)
    d = E.apply("maximum", E.apply("maximum", s, c), eps)
    return E.true_div(v, d)
