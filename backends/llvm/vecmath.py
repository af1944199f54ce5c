"""Vectorized float32 exp / expm1 / log / log1p for the LLVM renderer (no libm calls).

LLVM lowers ``llvm.exp.v16f32`` (and libm calls made per lane) to one scalar ``expf`` call
per lane, which makes every fused sigmoid / tanh / softplus kernel (the RBM and autoencoder
steps between their GEMMs) call-bound. These emitters build the functions from plain IEEE
vector arithmetic instead, so a 16-lane kernel stays 16 lanes wide:

* ``exp``: ``x = n ln2 + r`` with ``n = rint(x / ln2)`` and ``r`` reduced in two FMA steps
  (Cody-Waite), a degree-6 polynomial for ``e^r`` on ``|r| <= ln2/2``, then ``2^n`` applied
  as two exact power-of-two factors (so gradual underflow rounds once and ``n = 128``
  overflows to inf without an out-of-range exponent field);
* ``expm1``: the same reduction, a degree-7 polynomial for ``e^r - 1`` and
  ``fma(2^n, q, 2^n - 1)`` (one rounding); beyond 20 it is ``exp``;
* ``log``: ``x = 2^e m`` with ``m`` in ``[sqrt(1/2), sqrt(2))``, ``log(1 + f)`` by a
  degree-9 polynomial in ``f = m - 1`` and ``e ln2`` added in two parts; subnormal inputs are
  scaled by ``2^23`` first;
* ``log1p``: ``u = 1 + x``, ``log(u) - ((u - 1) - x) / u`` (the rounding of ``1 + x``
  corrected to first order).

The minimax coefficients are the classic single-precision ones (Cephes, S. Moshier); every
function is within 2 ulp of the correctly rounded result on all of float32
(tests/backends/test_llvm_vecmath.py sweeps it against numpy's float64). NaN, +-inf, +-0,
overflow and underflow are decided by explicit selects, never by the polynomials; every
value converted to an integer is clamped first (a NaN into ``fptosi`` would be poison).
No fast-math flags: each FMA is explicit, every other operation IEEE-rounded.
"""

from __future__ import annotations

import math

import llvmlite.ir as ll

F32, I32 = ll.FloatType(), ll.IntType(32)


def lanes_of(v):
    return v.type.count if isinstance(v.type, ll.VectorType) else 1


def vtype(t, lanes):
    return t if lanes == 1 else ll.VectorType(t, lanes)

# e^r on |r| <= ln2/2: 1 + r + r^2 (1/2 + r (1/6 + ...)) (Cephes expf)
EXP_P = (1.9875691500e-4, 1.3981999507e-3, 8.3334519073e-3, 4.1665795894e-2,
         1.6666665459e-1, 5.0000001201e-1)
# e^r - 1 on |r| <= ln2/2: r + r^2 (1/2 + r (1/6 + ...)), Taylor to r^8 (error < 2^-30 r)
EXPM1_P = tuple(1.0 / math.factorial(k) for k in range(8, 1, -1))
# log(1 + f) = f - f^2/2 + f^3 P(f) on f in [sqrt(1/2) - 1, sqrt(2) - 1] (Cephes logf)
LOG_P = (7.0376836292e-2, -1.1514610310e-1, 1.1676998740e-1, -1.2420140846e-1,
         1.4249322787e-1, -1.6668057665e-1, 2.0000714765e-1, -2.4999993993e-1,
         3.3333331174e-1)
LN2_HI, LN2_LO = 0.693359375, -2.12194440e-4        # ln 2 = HI + LO, HI exact in 9 bits
LN2_F, LN2_F_LO = 0.693145751953125, 1.428606765330187045e-6   # Cody-Waite pair for exp
LOG2E = 1.44269504088896341
SQRT_HALF = 0.70710678118654752


class VecMath:
    """float32 transcendental emitters over an ``Ops`` (scalars and vectors alike)."""

    def __init__(self, ops):
        self.o = ops
        self.b = ops.b

    # -- small helpers
    def c(self, like, value, dtype="float32"):
        return self.o.like(like, dtype, value)

    def fma(self, a, b, c):
        return self.o.intrinsic("fma", a, b, c)

    def horner(self, x, coefs):
        acc = self.c(x, coefs[0])
        for k in coefs[1:]:
            acc = self.fma(acc, x, self.c(x, k))
        return acc

    def clamp(self, x, lo, hi):
        # minnum/maxnum return the number when one side is NaN: NaN never reaches fptosi
        x = self.o.intrinsic("maxnum", x, self.c(x, lo))
        return self.o.intrinsic("minnum", x, self.c(x, hi))

    def ints(self, x):
        return vtype(I32, lanes_of(x))

    def pow2(self, n_int):
        """2^n as float32 from int32 n in [-126, 127] (n = 128 gives inf)."""
        k = self.b.add(n_int, self.c(n_int, 127, "int32"))
        bits = self.b.shl(k, self.c(n_int, 23, "int32"))
        return self.b.bitcast(bits, vtype(F32, lanes_of(n_int)))

    def is_nan(self, x):
        return self.b.fcmp_unordered("uno", x, x)

    # -- reduction shared by exp and expm1: x = n ln2 + r
    def reduce_ln2(self, x):
        n = self.o.intrinsic("rint", self.b.fmul(x, self.c(x, LOG2E)))
        r = self.fma(n, self.c(x, -LN2_F), x)
        r = self.fma(n, self.c(x, -LN2_F_LO), r)
        return n, r

    def exp(self, x):
        B = self.b
        xc = self.clamp(x, -104.0, 89.0)
        n, r = self.reduce_ln2(xc)
        r2 = B.fmul(r, r)
        p = B.fadd(self.fma(self.horner(r, EXP_P), r2, r), self.c(x, 1.0))
        ni = B.fptosi(n, self.ints(x))                      # in [-150, 128]
        n1 = B.ashr(ni, self.c(ni, 1, "int32"))             # two factors in [-75, 64]
        y = B.fmul(B.fmul(p, self.pow2(n1)), self.pow2(B.sub(ni, n1)))
        return self.o.select(self.is_nan(x), x, y)

    def expm1(self, x):
        B = self.b
        xc = self.clamp(x, -25.0, 20.0)                      # n in [-36, 29]: 2^n exact
        n, r = self.reduce_ln2(xc)
        r2 = B.fmul(r, r)
        q = self.fma(self.horner(r, EXPM1_P), r2, r)
        s = self.pow2(B.fptosi(n, self.ints(x)))
        y = self.fma(s, q, B.fsub(s, self.c(x, 1.0)))
        big = B.fcmp_ordered(">", x, self.c(x, 20.0))       # e^x - 1 rounds to e^x there
        y = self.o.select(big, self.exp(x), y)
        # NaN stays NaN; -0 stays -0 (the polynomial's r + 0 would give +0)
        keep = B.or_(self.is_nan(x), B.fcmp_ordered("==", x, self.c(x, 0.0)))
        return self.o.select(keep, x, y)

    def log(self, x):
        B = self.b
        i32 = self.ints(x)
        tiny = B.fcmp_ordered("<", x, self.c(x, 1.1754943508222875e-38))   # subnormal (or <= 0)
        xs = self.o.select(tiny, B.fmul(x, self.c(x, 8388608.0)), x)       # * 2^23: normal
        bits = B.bitcast(xs, i32)
        e = B.sub(B.lshr(bits, self.c(bits, 23, "int32")), self.c(bits, 127, "int32"))
        e = B.sub(e, self.o.select(tiny, self.c(bits, 23, "int32"), self.c(bits, 0, "int32")))
        mbits = B.or_(B.and_(bits, self.c(bits, 0x7FFFFF, "int32")), self.c(bits, 0x3F800000, "int32"))
        m = B.bitcast(mbits, x.type)                                       # [1, 2)
        big = B.fcmp_ordered(">", m, self.c(x, 2 * SQRT_HALF))
        m = self.o.select(big, B.fmul(m, self.c(x, 0.5)), m)              # [sqrt(1/2), sqrt(2))
        e = B.add(e, B.zext(big, i32))
        f = B.fsub(m, self.c(x, 1.0))                                      # exact
        ef = B.sitofp(e, x.type)
        z = B.fmul(f, f)
        y = B.fmul(B.fmul(z, f), self.horner(f, LOG_P))
        y = self.fma(ef, self.c(x, LN2_LO), y)
        y = self.fma(z, self.c(x, -0.5), y)
        y = B.fadd(f, y)
        y = self.fma(ef, self.c(x, LN2_HI), y)
        # edges: log(+-0) = -inf, log(x < 0) = NaN, log(inf) = inf, NaN stays NaN
        zero = self.c(x, 0.0)
        y = self.o.select(B.fcmp_ordered("==", x, self.c(x, math.inf)), x, y)
        y = self.o.select(B.fcmp_ordered("==", x, zero), self.c(x, -math.inf), y)
        return self.o.select(B.fcmp_unordered("<", x, zero), self.c(x, math.nan), y)

    def log1p(self, x):
        B = self.b
        one = self.c(x, 1.0)
        u = B.fadd(x, one)
        corr = B.fdiv(B.fsub(B.fsub(u, one), x), u)
        y = B.fsub(self.log(u), corr)
        # u == 1: log1p(x) = x (tiny x, subnormals and -0 included); u == 0: -inf; inf: inf
        y = self.o.select(B.fcmp_ordered("==", u, one), x, y)
        y = self.o.select(B.fcmp_ordered("==", u, self.c(x, 0.0)), self.c(x, -math.inf), y)
        y = self.o.select(B.fcmp_ordered("==", x, self.c(x, math.inf)), x, y)
        return self.o.select(B.fcmp_unordered("<", x, self.c(x, -1.0)), self.c(x, math.nan), y)
