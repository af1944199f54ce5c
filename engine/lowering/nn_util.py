"""Helpers shared by the deep-learning lowerings (nn_conv, nn_pool, nn_lcn, nn_softmax).

* folding integer builders (``iadd``, ``imul``, ``cdiv``...) so kernels stay readable;
* ``Axis``: the geometry of a sliding window along one axis (output position ``a``, tap ``u``
  -> input coordinate), with the split of the output range into a border / interior /
  border triple of segments: in the interior every tap is in bounds, so the loops there need
  no checks and (with a unit step) vectorize;
* ``lead_index``: decompose a flat "plane" index into the leading indices of an n-d buffer;
* ``vector_lanes`` / ``vector_loop``: the vector width per dtype, and a loop vectorized at it
  (overlapping last vector for pure stores, else a scalar remainder);
* ``unary``: the epilogue / prologue activations of fused conv / pool ops, as kernel IR;
* ``dt`` / ``num`` / ``pair``: compact, identifier-safe text of props for kernel names;
* ``freeze``: mark a kernel as scheduled by its rule (the CPU scheduler does not vectorize
  its loops again).
"""

from __future__ import annotations

from engine import kernel_ir as ir
from engine.kernel_ir import Const, Var
from engine.loopopt import guard_unit_strides, vectorize

# ----------------------------------------------------------------------------- integers


def c(v):
    """An int64 expression (ints become Const)."""
    return ir.as_expr(v, "int64")


def _val(e):
    return e.value if isinstance(e, Const) else None


def iadd(a, b):
    a, b = c(a), c(b)
    if _val(a) is not None and _val(b) is not None:
        return Const(a.value + b.value)
    if _val(a) == 0:
        return b
    if _val(b) == 0:
        return a
    if _val(b) is not None and b.value < 0:
        return ir.binop("sub", a, Const(-b.value))
    return ir.binop("add", a, b)


def isub(a, b):
    a, b = c(a), c(b)
    if _val(b) is not None:
        return iadd(a, Const(-b.value))
    return ir.binop("sub", a, b)


def imul(a, b):
    a, b = c(a), c(b)
    if _val(a) is not None and _val(b) is not None:
        return Const(a.value * b.value)
    for x, y in ((a, b), (b, a)):
        if _val(x) == 1:
            return y
        if _val(x) == 0:
            return Const(0)
    return ir.binop("mul", a, b)


def fdiv(a, b):
    """floor(a / b) (Python semantics)."""
    a, b = c(a), c(b)
    if _val(a) is not None and _val(b) not in (None, 0):
        return Const(a.value // b.value)
    if _val(b) == 1:
        return a
    return ir.binop("floordiv", a, b)


def cdiv(a, b):
    """ceil(a / b) for b > 0."""
    a, b = c(a), c(b)
    if _val(a) is not None and _val(b) not in (None, 0):
        return Const(-(-a.value // b.value))
    if _val(b) == 1:
        return a
    return ineg(fdiv(ineg(a), b))


def imod(a, b):
    a, b = c(a), c(b)
    if _val(a) is not None and _val(b) not in (None, 0):
        return Const(a.value % b.value)
    if _val(b) == 1:
        return Const(0)
    return ir.binop("mod", a, b)


def ineg(a):
    a = c(a)
    if _val(a) is not None:
        return Const(-a.value)
    return isub(Const(0), a)


def imin(a, b):
    a, b = c(a), c(b)
    if _val(a) is not None and _val(b) is not None:
        return Const(min(a.value, b.value))
    return ir.minimum(a, b)


def imax(a, b):
    a, b = c(a), c(b)
    if _val(a) is not None and _val(b) is not None:
        return Const(max(a.value, b.value))
    return ir.maximum(a, b)


def clamp(a, lo, hi):
    return imin(imax(a, lo), hi)


def land(*conds):
    conds = [x for x in conds if x is not None]
    out = conds[0]
    for x in conds[1:]:
        out = ir.binop("and", out, x)
    return out


# ----------------------------------------------------------------------------- window axes


class Axis:
    """Sliding-window geometry along one axis.

    Output position ``a`` in [0, L_out) and tap ``u`` in [0, K) read input index
    ``t = a*s + off + u*d``, in bounds when ``0 <= t < L_in``. ``K``, ``off`` and the lengths
    may be expressions (runtime) or ints.
    """

    def __init__(self, s, off, d, K, L_in, L_out, whole_windows=False):
        self.s, self.off, self.d = int(s), c(off), int(d)
        self.K, self.L_in, self.L_out = c(K), c(L_in), c(L_out)
        # L_out counts exactly the windows that fit from offset 0 (no padding, partial windows
        # dropped): every position is interior, so no border code need be generated
        self.whole_windows = whole_windows

    def base(self, a):
        return iadd(imul(a, self.s), self.off)

    def tap_range(self, a):
        """[u_lo, u_hi) of the taps of output a that land in bounds (possibly empty)."""
        t0 = self.base(a)
        lo = imax(0, cdiv(ineg(t0), self.d))
        hi = imin(self.K, cdiv(isub(self.L_in, t0), self.d))
        return lo, hi

    def coord(self, a, u):
        return iadd(self.base(a), imul(u, self.d))

    def segments(self):
        """[(lo, hi, interior)]: the output range split so that every tap of an interior
        position is in bounds."""
        if self.whole_windows:
            return [(Const(0), self.L_out, True)]
        lo = clamp(cdiv(ineg(self.off), self.s), 0, self.L_out)
        last = isub(isub(isub(self.L_in, 1), self.off), imul(isub(self.K, 1), self.d))
        hi = imax(imin(iadd(fdiv(last, self.s), 1), self.L_out), lo)
        return [(Const(0), lo, False), (lo, hi, True), (hi, self.L_out, False)]


def declare_ints(names_values):
    """Declares for int64 locals; returns (stmts, {name: Var})."""
    stmts, out = [], {}
    for name, value in names_values:
        value = c(value)
        if isinstance(value, (Const, Var, ir.Dim)):
            out[name] = value  # no local needed for a leaf
            continue
        stmts.append(ir.Declare(Var(name), value))
        out[name] = Var(name)
    return stmts, out


def lead_index(buf, nlead, p, prefix="l"):
    """Statements declaring the leading indices of flat plane index p of buf (row-major over
    its first nlead dims), and the index expressions."""
    if nlead == 0:
        return [], []
    if nlead == 1:
        return [], [p]
    stmts, idx = [], []
    rest = p
    for k in range(nlead):
        inner = Const(1)
        for j in range(k + 1, nlead):
            inner = imul(inner, buf.dim(j))
        if k == nlead - 1:
            e = rest
        else:
            e = fdiv(rest, inner)
        name = f"{prefix}{k}"
        stmts.append(ir.Declare(Var(name), e))
        idx.append(Var(name))
        if k < nlead - 1:
            rname = f"{prefix}r{k}"
            stmts.append(ir.Declare(Var(rname), imod(rest, inner)))
            rest = Var(rname)
    return stmts, idx


def planes(buf, nlead):
    n = Const(1)
    for k in range(nlead):
        n = imul(n, buf.dim(k))
    return n


# ----------------------------------------------------------------------------- vectors

#: bytes of the widest vectors the lowerings use (AVX-512; on AVX2 LLVM splits them in two,
#: which still acts as register blocking), and of the narrower ones used for small images
VECTOR_BYTES = 64
NARROW_BYTES = 32


def vector_lanes(dtype, width=None):
    """The one vector width of a loop over rows of a static ``width`` (None: unknown)."""
    return lane_choices(dtype, width)[0]


def lane_choices(dtype, width=None):
    """Vector widths for rows of a static ``width`` (None: unknown): the widest that fits a
    known width, else the narrow one (each extra width is another copy of the loop body, and
    compile time matters as much as run time here)."""
    wide, narrow = VECTOR_BYTES // ir.itemsize(dtype), NARROW_BYTES // ir.itemsize(dtype)
    if isinstance(width, int) and width >= wide:
        return (wide,)
    return (narrow,)


def vectorize_overlapped(loop, lanes):
    """The loop vectorized at ``lanes`` with no scalar remainder: the last vector is shifted
    back to end at ``stop`` (it recomputes a few elements). Only for bodies whose iterations
    store pure functions of their index (no accumulation into memory); the caller guarantees
    ``stop - start >= lanes`` at run time."""
    parts = vectorize(loop, lanes)
    main = next(p for p in parts if isinstance(p, ir.Loop) and p.kind == "vectorize")
    if len(parts) > 2 or (len(parts) == 2 and parts[1] is main):
        raise ValueError("vectorize_overlapped: the loop has reductions")
    var = loop.var
    shifted = Var(var.name + "_v")
    body = ir.substitute(main.body, {var.name: shifted})
    body = (ir.Declare(shifted, imin(var, isub(loop.stop, lanes))),) + tuple(body)
    stop = iadd(loop.start, imul(cdiv(isub(loop.stop, loop.start), lanes), lanes))
    return (ir.Loop(var, loop.start, stop, body, kind="vectorize", step=lanes),)


def vector_loop(loop, lanes, idempotent):
    """The loop vectorized at ``lanes``, on rows whose vector operands are contiguous or (loaded
    only) broadcasts (loopopt.guard_unit_strides: the gradient of a sum is a 0-stride array
    of ones; the scalar loop runs on others). ``idempotent`` (its iterations only store pure
    functions of their index): the last vector overlaps the previous one, and rows shorter
    than a vector run the scalar loop; otherwise (accumulations, reductions): full vectors
    then a scalar remainder. Partial sums of reductions are named ``acc_v<lanes>``."""
    if lanes <= 1:
        return [loop]
    if idempotent:
        fits = ir.ge(isub(loop.stop, loop.start), lanes)
        return list(guard_unit_strides(vectorize_overlapped(loop, lanes), loop, fits))
    parts = vectorize(loop, lanes)
    partials = {st.var.name: f"{st.var.name}{lanes}" for st in parts if isinstance(st, ir.Declare)}
    return list(guard_unit_strides(ir.rename(tuple(parts), partials) if partials else parts, loop))


# ----------------------------------------------------------------------------- activations


def unary(name, x):
    """An activation of fused conv / pool ops (engine.ops.fused.EPILOGUE_OPS) as kernel IR, with
    the semantics of engine/lowering/common.py's ``scalar_op_ir`` (relu propagates NaN,
    softplus is the stable form)."""
    if name == "relu":
        return ir.maximum(x, ir.as_expr(0.0, x.dtype, x.lanes))
    if name == "sqr":
        return x * x
    if name == "neg":
        return -x
    if name == "abs":
        return ir.absolute(x)
    if name == "softplus":
        return ir.maximum(x, 0.0) + ir.log1p(ir.exp(-ir.absolute(x)))
    if name in ("sigmoid", "tanh", "exp"):
        return ir.UnOp(name, x)
    raise ValueError(f"unsupported activation {name!r}")


def apply_chain(names, x):
    for n in names:
        x = unary(n, x)
    return x


# ----------------------------------------------------------------------------- names

_DT = {"float32": "f32", "float64": "f64", "int8": "i8", "int16": "i16", "int32": "i32",
       "int64": "i64", "uint8": "u8", "uint16": "u16", "uint32": "u32", "uint64": "u64",
       "bool": "b1"}


def dt(dtype):
    return _DT[ir.dtype_name(dtype)]


def num(v):
    """A float as identifier-safe text: 2.0 -> 2, 1.5 -> 1p5, 1e-4 -> 1em4."""
    if float(v).is_integer() and abs(v) < 1e15:
        s = str(int(v))
    else:
        s = f"{float(v):.6g}"
    return s.replace("-", "m").replace(".", "p").replace("+", "")


def pair(p, sep="x"):
    return f"{p[0]}{sep}{p[1]}"


def fconst(value, dtype):
    """A float constant rounded to dtype (as numpy would store it)."""
    if ir.is_float(dtype):
        import numpy as np
        return Const(float(np.asarray(value, dtype=dtype)), dtype)
    return Const(value, dtype)


# ----------------------------------------------------------------------------- scheduling


def freeze(kernel, keep=()):
    """Mark a kernel scheduled by its rule: its serial loops become ``unroll`` (the backend's
    "leave it alone": rendered as a plain loop unless the bounds are constants, then unrolled,
    which only the short tap loops have), so the CPU scheduler does not vectorize scalar
    remainders and fallbacks again. Loops whose index is in ``keep`` and with more than 8
    constant trips stay serial."""
    def fn(n):
        if isinstance(n, ir.Loop) and n.kind == "serial" and n.var.name not in keep:
            const = isinstance(n.start, Const) and isinstance(n.stop, Const)
            if not const or n.stop.value - n.start.value <= 8:
                return ir.Loop(n.var, n.start, n.stop, n.body, "unroll", n.step)
        return n
    return kernel.with_body(ir.map_nodes(kernel.body, fn))
