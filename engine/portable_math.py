"""Box-Muller built from IEEE basic operations only: the same bits on every backend.

``normal`` samples need ``log``, ``cos`` and ``sin``, which every math library (numpy's SIMD
loops, the C library, the CUDA math library, Kiln's own vector polynomials) rounds a little
differently. Under ``KILN_DETERMINISTIC=1`` (``engine.config.deterministic``) the Philox
reference (engine/philox.py) and the code generators (engine/lowering/common.py ``box_muller``)
both evaluate the algorithm below instead. It uses only float64 ``+ - * /``, ``floor``,
comparisons, selects and ``sqrt`` — all correctly rounded by IEEE 754 in numpy, in LLVM
without fast-math flags, and in CUDA with ``-fmad=false`` — and a fixed order of operations,
so the result is bit-identical everywhere. float32 samples are computed in float64 and rounded
once at the end.

The algorithm is written once, over a small ``ops`` namespace, so that numpy arrays and kernel
IR expressions run exactly the same sequence of operations:

* ``log(u1)``, ``u1`` in (0, 1] (at least 2**-32): ``u1 = m * 2**-e`` with ``m`` in
  [sqrt(1/2), sqrt(2)) found by six exact power-of-two scalings (32, 16, ..., 1), then
  ``log(m) = 2 atanh(s)``, ``s = (m - 1) / (m + 1)``, ``|s| <= 0.1716``, by its odd series to
  ``s**23`` (truncation below 2**-60), minus ``e ln 2`` in two parts;
* ``cos(2 pi u2)``, ``sin(2 pi u2)``, ``u2`` in [0, 1): the quadrant comes from ``u2`` itself,
  exactly: ``q = floor(4 u2 + 1/2)``, ``g = 4 u2 - q`` in [-1/2, 1/2] (exact), the angle
  ``a = g pi/2`` in [-pi/4, pi/4]; Taylor series of ``sin a`` to ``a**17`` and ``cos a`` to
  ``a**18`` (truncation below 2**-60); then the quadrant's rotation by selects.

Accuracy: a few float64 ulp, so float32 samples are within an ulp of the correctly rounded
value (and within the 2 ulp of the contract of the default, library-based path).
"""

from __future__ import annotations

import math
from typing import Any

LN2_HI = 6.93147180369123816490e-01   # 32 significant bits: e * LN2_HI is exact for |e| < 2**21
LN2_LO = 1.90821492927058770002e-10
PIO2_HI = 1.5707963267341256e+00      # 33 significant bits
PIO2_LO = 6.0771005065061922e-11
SQRT_TWO = 1.4142135623730950488
_SIN = [(-1.0) ** j / math.factorial(2 * j + 1) for j in range(9)]    # to a**17
_COS = [(-1.0) ** j / math.factorial(2 * j) for j in range(10)]       # to a**18


def _log_unit(u1: Any, ops: Any) -> Any:
    """log(u1) for u1 in [2**-64, 1]."""
    m, e = u1, ops.const(0.0)
    for step in (32, 16, 8, 4, 2, 1):
        small = ops.lt(m, ops.const(SQRT_TWO * 2.0 ** -step))
        m = ops.local(ops.select(small, m * ops.const(2.0 ** step), m))
        e = ops.local(ops.select(small, e + ops.const(float(step)), e))
    s = ops.local((m - ops.const(1.0)) / (m + ops.const(1.0)))
    s2 = ops.local(s * s)
    series = ops.const(1.0 / 23.0)
    for k in range(21, 0, -2):
        series = ops.local(series * s2 + ops.const(1.0 / k))
    log_m = ops.const(2.0) * s * series
    return (log_m - e * ops.const(LN2_LO)) - e * ops.const(LN2_HI)


def _cos_sin_turn(u2: Any, ops: Any) -> tuple:
    """(cos(2 pi u2), sin(2 pi u2)) for u2 in [0, 1)."""
    four = ops.local(u2 * ops.const(4.0))
    q = ops.local(ops.floor(four + ops.const(0.5)))     # 0..4; 4 is quadrant 0 again
    g = ops.local(four - q)                              # in [-1/2, 1/2], exact
    a = ops.local(g * ops.const(PIO2_HI) + g * ops.const(PIO2_LO))
    a2 = ops.local(a * a)
    # Horner in a**2 with the alternating Taylor coefficients (-1)**j / (2j + 1)! and / (2j)!
    sin_p = ops.const(_SIN[-1])
    for c in reversed(_SIN[:-1]):
        sin_p = ops.local(sin_p * a2 + ops.const(c))
    sin_a = ops.local(a * sin_p)
    cos_p = ops.const(_COS[-1])
    for c in reversed(_COS[:-1]):
        cos_p = ops.local(cos_p * a2 + ops.const(c))
    cos_a = cos_p
    neg_sin, neg_cos = ops.const(-1.0) * sin_a, ops.const(-1.0) * cos_a
    q1, q2, q3 = (ops.eq(q, ops.const(v)) for v in (1.0, 2.0, 3.0))
    cos_t = ops.select(q1, neg_sin, ops.select(q2, neg_cos, ops.select(q3, sin_a, cos_a)))
    sin_t = ops.select(q1, cos_a, ops.select(q2, neg_sin, ops.select(q3, neg_cos, sin_a)))
    return cos_t, sin_t


def box_muller(u1: Any, u2: Any, ops: Any) -> tuple:
    """(r cos(2 pi u2), r sin(2 pi u2)) with r = sqrt(-2 log u1), all in float64."""
    r = ops.local(ops.sqrt(_log_unit(u1, ops) * ops.const(-2.0)))
    cos_t, sin_t = _cos_sin_turn(u2, ops)
    return r * cos_t, r * sin_t


class NumpyOps:
    """``ops`` for numpy float64 arrays (the Philox reference)."""

    def __init__(self) -> None:
        import numpy as np

        self.np = np

    def const(self, value: float) -> Any:
        return self.np.float64(value)

    def local(self, x: Any) -> Any:
        return x

    def lt(self, a: Any, b: Any) -> Any:
        return self.np.less(a, b)

    def eq(self, a: Any, b: Any) -> Any:
        return self.np.equal(a, b)

    def select(self, c: Any, a: Any, b: Any) -> Any:
        return self.np.where(c, a, b)

    def floor(self, x: Any) -> Any:
        return self.np.floor(x)

    def sqrt(self, x: Any) -> Any:
        return self.np.sqrt(x)


class IROps:
    """``ops`` for kernel-IR expressions (the code generators); intermediate values become
    locals of the emitter ``em``, so the expression is a sequence, not a tree."""

    def __init__(self, em: Any) -> None:
        from engine import kernel_ir as ir

        self.ir, self.em = ir, em

    def const(self, value: float) -> Any:
        return self.ir.Const(float(value), "float64")

    def local(self, x: Any) -> Any:
        return self.em.local(x, "bm")

    def lt(self, a: Any, b: Any) -> Any:
        return self.ir.lt(a, b)

    def eq(self, a: Any, b: Any) -> Any:
        return self.ir.eq(a, b)

    def select(self, c: Any, a: Any, b: Any) -> Any:
        return self.ir.select(c, a, b)

    def floor(self, x: Any) -> Any:
        return self.ir.floor(x)

    def sqrt(self, x: Any) -> Any:
        return self.ir.sqrt(x)
