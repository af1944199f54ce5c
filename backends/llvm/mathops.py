"""Scalar/vector arithmetic for the LLVM renderer: types, intrinsics, ops, casts.

``Ops(builder, module)`` emits one kernel-IR operation on llvmlite values of a given dtype
(scalars or ``<N x T>`` vectors alike). Ops are looked up in tables (``BINARY``/``UNARY``
name -> method), never in if-chains. Semantics follow engine/kernel_ir.py and numpy:

* integer ``div``/``floordiv``/``mod`` never trap: a zero divisor gives 0, MIN // -1 wraps;
* float ``floordiv``/``mod`` are numpy's ``npy_divmod``; ``min``/``max`` are numpy's
  (NaN from either side propagates, ties keep the first operand); shifts by >= the bit width give 0 / the sign fill;
* float32 ``exp``/``expm1``/``log``/``log1p`` are vectorized polynomials (vecmath.py, within
  2 ulp); other math uses LLVM intrinsics (``llvm.sin.v16f32``...; declared by hand) and
  float64 ``expm1``/``log1p`` call libm (per lane for vectors). ``tanh(x) = sign(x) * -t / (2 + t)``
  with ``t = expm1(-2|x|)`` and ``sigmoid`` = ``1/(1+e)`` or ``e/(1+e)``, ``e = exp(-|x|)``,
  are stable for all x. No fast-math flags anywhere: results are IEEE, integer ops exact.
"""

from __future__ import annotations

import functools

import llvmlite.ir as ll
import numpy as np

from backends.llvm.vecmath import VecMath
from engine import kernel_ir as kir

I1, I8, I32, I64 = ll.IntType(1), ll.IntType(8), ll.IntType(32), ll.IntType(64)
F32, F64 = ll.FloatType(), ll.DoubleType()
PTR = ll.PointerType()
VOID = ll.VoidType()


class TextConstant(ll.Constant):
    """A constant operand whose text is written once: llvmlite spells a vector constant (an
    undef, a splat, a lane mask) element by element, through str.format, at every use; that
    was a third of the time spent turning kernels into IR text. ``constant`` is what llvmlite
    inspects (a shuffle mask's lanes), ``text`` what the IR says."""

    def __init__(self, typ, text, constant=None):
        self.type, self.text = typ, text
        self.constant = text if constant is None else constant

    def _to_string(self):
        return f"{self.type} {self.text}"

    def _get_reference(self):
        return self.text


def undef(typ):
    return TextConstant(typ, "undef")


_SPLATS: dict = {}


def splat(element, lanes):
    """The vector constant of ``lanes`` copies of the scalar constant ``element`` (shared per
    element text: -0.0 is not 0.0)."""
    text = str(element)
    key = (text, lanes)
    if key not in _SPLATS:
        zero = text.rsplit(" ", 1)[-1] in ("0", "0x0", "false")
        body = "zeroinitializer" if zero else "<" + ", ".join([text] * lanes) + ">"
        _SPLATS[key] = TextConstant(ll.VectorType(element.type, lanes), body, [element] * lanes)
    return _SPLATS[key]


@functools.lru_cache(maxsize=4096)
def lane_mask(lanes: tuple):
    """The i32 vector constant of a shufflevector's lane indices."""
    consts = [ll.Constant(I32, k) for k in lanes]
    return TextConstant(ll.VectorType(I32, len(lanes)), "<" + ", ".join(f"i32 {k}" for k in lanes) + ">", consts)


def scalar_type(dtype):
    if dtype == "bool":
        return I1
    if dtype == "float32":
        return F32
    if dtype == "float64":
        return F64
    return ll.IntType(kir.bits(dtype))


def mem_type(dtype):
    """How a dtype is stored in memory (bool is a byte)."""
    return I8 if dtype == "bool" else scalar_type(dtype)


def vtype(t, lanes):
    return t if lanes == 1 else ll.VectorType(t, lanes)


def ty(dtype, lanes=1):
    return vtype(scalar_type(dtype), lanes)


def _suffix(t):
    if isinstance(t, ll.VectorType):
        return f"v{t.count}{t.element.intrinsic_name}"
    return t.intrinsic_name


def lanes_of(v):
    return v.type.count if isinstance(v.type, ll.VectorType) else 1


class Ops:
    def __init__(self, builder, module):
        self.b = builder
        self.m = module

    # -- helpers
    def declare(self, name, ret, args):
        fn = self.m.globals.get(name)
        if fn is None:
            fn = ll.Function(self.m, ll.FunctionType(ret, args), name=name)
        return fn

    def intrinsic(self, base, *vals, ret=None):
        t = vals[0].type
        fn = self.declare(f"llvm.{base}.{_suffix(t)}", ret or t, [v.type for v in vals])
        return self.b.call(fn, list(vals))

    def const(self, dtype, value, lanes=1):
        t = scalar_type(dtype)
        value = int(value) if isinstance(t, ll.IntType) else float(value)
        c = ll.Constant(t, value)
        return c if lanes == 1 else splat(c, lanes)

    def like(self, v, dtype, value):
        return self.const(dtype, value, lanes_of(v))

    def broadcast(self, v, lanes):
        if type(v) is ll.Constant:   # a constant vector, not an insert and a shuffle
            return splat(v, lanes)
        vt = ll.VectorType(v.type, lanes)
        x = self.b.insert_element(undef(vt), v, ll.Constant(I32, 0))
        return self.b.shuffle_vector(x, undef(vt), lane_mask((0,) * lanes))

    def per_lane(self, fn, *vals):
        """Apply a scalar emitter fn lane by lane (for libm calls on vectors)."""
        n = lanes_of(vals[0])
        if n == 1:
            return fn(*vals)
        out = undef(vals[0].type)
        for k in range(n):
            idx = ll.Constant(I32, k)
            r = fn(*(self.b.extract_element(v, idx) for v in vals))
            out = self.b.insert_element(out, r, idx)
        return out

    def libm(self, name, x, dtype):
        fname = name + ("f" if dtype == "float32" else "")
        t = scalar_type(dtype)
        fn = self.declare(fname, t, [t])
        return self.per_lane(lambda s: self.b.call(fn, [s]), x)

    def select(self, c, a, b):
        return self.b.select(c, a, b)

    # -- dispatch
    def binary(self, op, a, b, dtype):
        kind = "f" if kir.is_float(dtype) else "i"
        return getattr(self, BINARY[op])(a, b, dtype, kind)

    def unary(self, op, a, dtype):
        return getattr(self, UNARY[op])(a, dtype, op)

    # -- binary ops: (a, b, dtype, kind) with kind "f" or "i"
    def add(self, a, b, dt, k):
        return self.b.fadd(a, b) if k == "f" else self.b.add(a, b)

    def sub(self, a, b, dt, k):
        return self.b.fsub(a, b) if k == "f" else self.b.sub(a, b)

    def mul(self, a, b, dt, k):
        return self.b.fmul(a, b) if k == "f" else self.b.mul(a, b)

    @staticmethod
    def _positive_constant(b):
        return type(b) is ll.Constant and isinstance(b.constant, int) and b.constant > 0

    def _safe_divisor(self, a, b, dt):
        """(divisor safe to divide by, divisor == 0: None when it cannot be)."""
        if self._positive_constant(b):   # (index arithmetic: x // 48) no checks to write
            return b, None
        zero = self.b.icmp_unsigned("==", b, self.like(b, dt, 0))
        bad = zero
        if kir.is_signed(dt):
            imin = int(np.iinfo(dt).min)
            ovf = self.b.and_(self.b.icmp_signed("==", a, self.like(a, dt, imin)),
                              self.b.icmp_signed("==", b, self.like(b, dt, -1)))
            bad = self.b.or_(zero, ovf)
        return self.select(bad, self.like(b, dt, 1), b), zero

    def div(self, a, b, dt, k):
        if k == "f":
            return self.b.fdiv(a, b)
        d, zero = self._safe_divisor(a, b, dt)
        q = self.b.sdiv(a, d) if kir.is_signed(dt) else self.b.udiv(a, d)
        return q if zero is None else self.select(zero, self.like(a, dt, 0), q)

    def _int_divmod(self, a, b, dt):
        d, zero = self._safe_divisor(a, b, dt)
        if not kir.is_signed(dt):
            return self.b.udiv(a, d), self.b.urem(a, d), zero
        q, r = self.b.sdiv(a, d), self.b.srem(a, d)
        if zero is None:   # d > 0: round towards -inf exactly when the remainder is negative
            adj = self.b.icmp_signed("<", r, self.like(r, dt, 0))
        else:
            adj = self.b.and_(self.b.icmp_signed("!=", r, self.like(r, dt, 0)),
                              self.b.icmp_signed("<", self.b.xor(r, d), self.like(r, dt, 0)))
        q = self.select(adj, self.b.sub(q, self.like(q, dt, 1)), q)
        r = self.select(adj, self.b.add(r, d), r)
        return q, r, zero

    def _float_divmod(self, a, b, dt):
        """numpy's npy_divmod: (floordiv, mod)."""
        B, z = self.b, self.like(a, dt, 0)
        mod0 = B.frem(a, b)
        div0 = B.fdiv(B.fsub(a, mod0), b)
        mod_nz = B.fcmp_unordered("!=", mod0, z)
        adj = B.and_(mod_nz, B.xor(B.fcmp_ordered("<", b, z), B.fcmp_ordered("<", mod0, z)))
        mod1 = self.select(adj, B.fadd(mod0, b), mod0)
        div1 = self.select(adj, B.fsub(div0, self.like(a, dt, 1)), div0)
        mod = self.select(mod_nz, mod1, self.intrinsic("copysign", z, b))
        fl = self.intrinsic("floor", div1)
        fl = self.select(B.fcmp_ordered(">", B.fsub(div1, fl), self.like(a, dt, 0.5)),
                         B.fadd(fl, self.like(a, dt, 1)), fl)
        q = B.fdiv(a, b)
        fdiv = self.select(B.fcmp_unordered("!=", div1, z), fl, self.intrinsic("copysign", z, q))
        bzero = B.fcmp_ordered("==", b, z)
        return self.select(bzero, q, fdiv), self.select(bzero, mod0, mod)

    def floordiv(self, a, b, dt, k):
        if k == "f":
            return self._float_divmod(a, b, dt)[0]
        q, _, zero = self._int_divmod(a, b, dt)
        return q if zero is None else self.select(zero, self.like(a, dt, 0), q)

    def mod(self, a, b, dt, k):
        if k == "f":
            return self._float_divmod(a, b, dt)[1]
        return self._int_divmod(a, b, dt)[1]  # x % 0 == 0 falls out of the safe divisor

    def _minmax(self, a, b, dt, k, which):
        if k == "f":
            # numpy's rule: a if (a >= b or a is NaN) else b (NaN from either side, ties keep
            # a); a compare pair and a blend, where llvm.maximum also orders -0 < +0 with
            # a sign test per operand (three times the instructions on x86)
            keep = self.b.or_(self.b.fcmp_ordered(which + "=", a, b), self.b.fcmp_unordered("uno", a, a))
            return self.select(keep, a, b)
        cmp = self.b.icmp_signed if kir.is_signed(dt) else self.b.icmp_unsigned
        return self.select(cmp(which, a, b), a, b)

    def min(self, a, b, dt, k):
        return self._minmax(a, b, dt, k, "<")

    def max(self, a, b, dt, k):
        return self._minmax(a, b, dt, k, ">")

    def pow(self, a, b, dt, k):
        return self.intrinsic("pow", a, b)

    def mulhi(self, a, b, dt, k):
        n = kir.bits(dt)
        wide = vtype(ll.IntType(2 * n), lanes_of(a))
        ext = self.b.sext if kir.is_signed(dt) else self.b.zext
        p = self.b.mul(ext(a, wide), ext(b, wide))
        return self.b.trunc(self.b.lshr(p, self._wide_const(p, n)), a.type)

    def _wide_const(self, p, n):
        t = p.type.element if isinstance(p.type, ll.VectorType) else p.type
        c = ll.Constant(t, n)
        return c if lanes_of(p) == 1 else splat(c, lanes_of(p))

    def _cmp(self, a, b, dt, k, op):
        if k == "f":
            if op == "!=":
                return self.b.fcmp_unordered(op, a, b)
            return self.b.fcmp_ordered(op, a, b)
        if kir.is_signed(dt):
            return self.b.icmp_signed(op, a, b)
        return self.b.icmp_unsigned(op, a, b)

    def lt(self, a, b, dt, k): return self._cmp(a, b, dt, k, "<")
    def le(self, a, b, dt, k): return self._cmp(a, b, dt, k, "<=")
    def gt(self, a, b, dt, k): return self._cmp(a, b, dt, k, ">")
    def ge(self, a, b, dt, k): return self._cmp(a, b, dt, k, ">=")
    def eq(self, a, b, dt, k): return self._cmp(a, b, dt, k, "==")
    def ne(self, a, b, dt, k): return self._cmp(a, b, dt, k, "!=")
    def and_(self, a, b, dt, k): return self.b.and_(a, b)
    def or_(self, a, b, dt, k): return self.b.or_(a, b)
    def xor(self, a, b, dt, k): return self.b.xor(a, b)

    def shl(self, a, b, dt, k):
        big = self.b.icmp_unsigned(">=", b, self.like(b, dt, kir.bits(dt)))
        return self.select(big, self.like(a, dt, 0), self.b.shl(a, b))

    def shr(self, a, b, dt, k):
        n = kir.bits(dt)
        big = self.b.icmp_unsigned(">=", b, self.like(b, dt, n))
        if kir.is_signed(dt):
            return self.b.ashr(a, self.select(big, self.like(b, dt, n - 1), b))
        return self.select(big, self.like(a, dt, 0), self.b.lshr(a, b))

    # -- unary ops: (a, dtype, op)
    def neg(self, a, dt, op):
        return self.b.fneg(a) if kir.is_float(dt) else self.b.sub(self.like(a, dt, 0), a)

    def abs(self, a, dt, op):
        if kir.is_float(dt):
            return self.intrinsic("fabs", a)
        if not kir.is_signed(dt):
            return a
        neg = self.b.icmp_signed("<", a, self.like(a, dt, 0))
        return self.select(neg, self.b.sub(self.like(a, dt, 0), a), a)

    def not_(self, a, dt, op):
        return self.b.not_(a)

    def simple_intrinsic(self, a, dt, op):
        return self.intrinsic(op, a)

    def transcendental(self, a, dt, op):
        """exp / expm1 / log / log1p: vector polynomials in float32, libm or intrinsics else."""
        if dt == "float32":
            return getattr(VecMath(self), op)(a)
        return self.libm(op, a, dt) if op in ("expm1", "log1p") else self.intrinsic(op, a)

    def tanh(self, a, dt, op):
        ax = self.intrinsic("fabs", a)
        t = self.transcendental(self.b.fmul(ax, self.like(a, dt, -2.0)), dt, "expm1")
        r = self.b.fdiv(self.b.fneg(t), self.b.fadd(t, self.like(a, dt, 2.0)))
        return self.intrinsic("copysign", r, a)

    def sigmoid(self, a, dt, op):
        e = self.transcendental(self.b.fneg(self.intrinsic("fabs", a)), dt, "exp")
        s = self.b.fdiv(self.like(a, dt, 1.0), self.b.fadd(self.like(a, dt, 1.0), e))
        pos = self.b.fcmp_ordered(">=", a, self.like(a, dt, 0.0))
        return self.select(pos, s, self.b.fmul(e, s))

    # -- casts
    def cast(self, v, src, dst):
        if src == dst:
            return v
        lanes = lanes_of(v)
        t = ty(dst, lanes)
        B = self.b
        if dst == "bool":
            if kir.is_float(src):
                return B.fcmp_unordered("!=", v, self.like(v, src, 0))
            return B.icmp_unsigned("!=", v, self.like(v, src, 0))
        if kir.is_float(src):
            if kir.is_float(dst):
                return B.fpext(v, t) if kir.bits(dst) > kir.bits(src) else B.fptrunc(v, t)
            return B.fptosi(v, t) if kir.is_signed(dst) else B.fptoui(v, t)
        if kir.is_float(dst):
            return B.sitofp(v, t) if kir.is_signed(src) else B.uitofp(v, t)
        sb, db = kir.bits(src), kir.bits(dst)
        if db < sb:
            return B.trunc(v, t)
        if db == sb:
            return v
        return B.sext(v, t) if kir.is_signed(src) else B.zext(v, t)

    def to_mem(self, v, dtype):
        """A register value of dtype as stored in memory (bool -> byte)."""
        return self.b.zext(v, vtype(I8, lanes_of(v))) if dtype == "bool" else v

    def from_mem(self, v, dtype):
        if dtype == "bool":
            return self.b.icmp_unsigned("!=", v, ll.Constant(v.type, None))
        return v

    def reduce(self, op, v, dtype):
        """Combine the lanes of v with a binary op, as a balanced tree."""
        n = lanes_of(v)
        while n > 1 and n % 2 == 0:
            h = n // 2
            lo = self.b.shuffle_vector(v, undef(v.type), lane_mask(tuple(range(h))))
            hi = self.b.shuffle_vector(v, undef(v.type), lane_mask(tuple(range(h, n))))
            v, n = self.binary(op, lo, hi, dtype), h
        if n == 1:
            return v if lanes_of(v) == 1 and not isinstance(v.type, ll.VectorType) else \
                self.b.extract_element(v, ll.Constant(I32, 0))
        acc = self.b.extract_element(v, ll.Constant(I32, 0))
        for k in range(1, n):
            acc = self.binary(op, acc, self.b.extract_element(v, ll.Constant(I32, k)), dtype)
        return acc


BINARY = {op: op for op in kir.ARITH_OPS + kir.COMPARE_OPS + ("shl", "shr")}
BINARY.update({"and": "and_", "or": "or_", "xor": "xor"})
UNARY = {"neg": "neg", "abs": "abs", "not": "not_", "tanh": "tanh", "sigmoid": "sigmoid"}
UNARY.update({op: "transcendental" for op in ("exp", "expm1", "log", "log1p")})
UNARY.update({op: "simple_intrinsic" for op in
              ("exp2", "log2", "sqrt", "floor", "ceil", "trunc", "rint", "sin", "cos")})
assert set(BINARY) == set(kir.BINARY_OPS) and set(UNARY) == set(kir.UNARY_OPS)
