"""Shared helpers for lowering rules (core, fused, nn): index arithmetic over broadcast strides,
scalar-op expressions from ``SCALAR_OPS`` names, loop nests, reductions, Philox, host checks.

Conventions every rule follows (the LLVM backend, backends/llvm/backend.py, relies on them)
-----------------------------------------------------------------------------------------
* Buffers are ``BufferParam``s with runtime shapes and strides in elements; the runtime packs
  stride 0 for every size-1 dim, so **indexing a size-1 dim with any loop index broadcasts**.
  Broadcasting an input of rank r into a domain of rank d is right-aligned:
  ``x[bcast_index(x.ndim, vars)]`` (see ``bcast_index``).
* Loop kinds are *hints* for the backend's CPU schedule (``backends/llvm/backend.py``):
  ``"parallel"``  iterations are independent: the backend runs the loop on the thread pool
                  when the estimated work is large enough (a runtime guard), serially otherwise;
                  an innermost parallel loop is first split into a parallel block loop and an
                  inner loop;
  ``"serial"``    the backend may vectorize it (innermost first, else its parent, whichever
                  the vectorizer accepts: the last index of a load/store is ``... + var``);
  ``"unroll"``    leave it alone: serial, never vectorized nor parallelized (use it where a
                  runtime stride-0 alias or repeated indices make lanes/threads unsafe, e.g. a
                  scatter-add).
* Expressions that are used more than once go through ``Declare``d locals (the renderer does
  not CSE a DAG): builders here return ``(statements, expr)`` pairs where needed.

Extensions of the lowering contract (engine/lower.py), understood by the LLVM backend
------------------------------------------------------------------------------------
``ArgView(arg, fn)``      a Step argument: bind ``fn(array, inputs)`` instead of the In/Out/Tmp
                          array (e.g. a flat view of an output: ``ArgView(Out(0), flat)``).
``HostLowered``           a ``Lowered`` with ``host_outputs = {i: fn(inputs) -> array}``:
                          outputs computed on the host (a random variable's new state).
``Lowered.view`` may return ``None`` at run time: "no view possible, run the steps" (a reshape
                          of a non-contiguous input runs its copy kernel).
``per_call(fn)``          memoizes a host function of the input list for the duration of one
                          node launch, so ``output_shapes`` and several ``HostScalar``s can
                          share one normalization (of slice bounds, say).

Output-shape functions raise ``KilnShapeError`` through ``shape_error(node, ...)``, which names
the node and the user's line where it was created; the backend calls them before any kernel of
the node runs.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from engine import kernel_ir as ir
from engine.config import config
from engine.errors import KilnShapeError, describe_node
from engine.kernel_ir import BufferParam, Cast, Const, Declare, Loop, ScalarParam, Select, Var
from engine.lower import In, Lowered, Out, Tmp  # noqa: F401  (re-exported for rule modules)

# ----------------------------------------------------------------------------- contract extensions


@dataclass(frozen=True)
class ArgView:
    """Bind ``fn(array, inputs)`` instead of the array of ``arg`` (In/Out/Tmp)."""

    arg: object
    fn: Callable


@dataclass
class HostLowered(Lowered):
    """A Lowered with outputs computed on the host: ``{output index: fn(inputs) -> array}``."""

    host_outputs: dict = field(default_factory=dict)


def per_call(fn: Callable) -> Callable:
    """``fn(inputs)`` memoized on the identity of the input list (one node launch; per thread,
    so two threads running one function never see each other's values)."""
    memo = threading.local()

    def wrapped(inputs):
        if getattr(memo, "key", None) is not inputs:
            value = fn(inputs)
            memo.key, memo.value = inputs, value  # holds the list: its id is never reused meanwhile
            return value
        return memo.value
    wrapped.__wrapped__ = fn
    return wrapped


def flat(array: np.ndarray, inputs=None) -> np.ndarray:
    """A 1-d view of a contiguous array (for ``ArgView``)."""
    return array.reshape(-1)


# ----------------------------------------------------------------------------- names and types

_TAGS = {"bool": "b", "int8": "i8", "int16": "i16", "int32": "i32", "int64": "i64", "uint8": "u8",
         "uint16": "u16", "uint32": "u32", "uint64": "u64", "float32": "f32", "float64": "f64"}


def tag(dtype: str) -> str:
    """Short dtype tag for kernel names: float32 -> f32."""
    return _TAGS[dtype]


def kernel_name(*parts) -> str:
    """A readable identifier from parts (non-identifier characters become '_')."""
    text = "_".join(str(p) for p in parts if p != "" and p is not None)
    out = "".join(c if c.isalnum() or c == "_" else "_" for c in text)
    while "__" in out:
        out = out.replace("__", "_")
    return out.strip("_")[:96] or "kernel"


# ----------------------------------------------------------------------------- host-side checks

def shape_error(node, message: str) -> KilnShapeError:
    """A KilnShapeError naming the node and its creation site."""
    return KilnShapeError(f"{describe_node(node)}: {message}")


def input_label(var) -> str:
    """How an error names a node input: 'x' for a named variable, else its producer and line."""
    if var.name:
        return repr(var.name)
    if var.owner is not None:
        return f"the result of {describe_node(var.owner)}"
    return f"a constant {var.type}" if getattr(var, "value", None) is not None else repr(var)


def broadcast_runtime(node, shapes: Sequence[tuple], inputs: Sequence[int] | None = None) -> tuple:
    """numpy broadcast of run-time shapes; a KilnShapeError naming node (and, given the indices
    of the node inputs the shapes belong to, those inputs) on a mismatch."""
    first = shapes[0] if shapes else ()
    if all(s == first for s in shapes):
        return tuple(first)
    ndim = max((len(s) for s in shapes), default=0)
    out = [1] * ndim
    for s in shapes:
        off = ndim - len(s)
        for i, d in enumerate(s):
            o = out[off + i]
            if d != o:
                if o == 1:
                    out[off + i] = d
                elif d != 1:
                    if inputs is not None:
                        given = ", ".join(f"{input_label(node.inputs[k])} of shape {tuple(x)}"
                                          for k, x in zip(inputs, shapes))
                    else:
                        given = " and ".join(str(tuple(x)) for x in shapes)
                    raise shape_error(node, f"{given} cannot be broadcast together at run time "
                                            f"(axis {off + i - ndim}: {o} vs {d})")
    return tuple(out)


def static_ints(values) -> bool:
    return all(isinstance(v, int) for v in values)


# ----------------------------------------------------------------------------- index arithmetic

def loop_vars(prefix: str, n: int) -> list[Var]:
    return [Var(f"{prefix}{k}") for k in range(n)]


def bcast_index(ndim: int, vars: Sequence) -> tuple:
    """Right-aligned index of an ``ndim``-d operand inside a domain indexed by ``vars`` (numpy
    broadcasting; its size-1 dims have stride 0 at run time, so any index reads element 0)."""
    if ndim > len(vars):
        raise ValueError(f"a {ndim}-d operand cannot be broadcast into a {len(vars)}-d domain")
    return tuple(vars[len(vars) - ndim:])


def nest(vars: Sequence[Var], extents: Sequence, body, kinds: Sequence[str] | str = "serial",
         starts: Sequence | None = None) -> tuple:
    """``for v0 in [s0, e0): for v1 ...: body`` (kinds per loop, or one kind for all); with no
    vars, the body itself."""
    body = ir._body(body)
    if isinstance(kinds, str):
        kinds = [kinds] * len(vars)
    for k in reversed(range(len(vars))):
        start = 0 if starts is None else starts[k]
        body = (Loop(vars[k], start, extents[k], body, kind=kinds[k]),)
    return body


def outer_parallel(n: int) -> list[str]:
    """Kinds for an n-loop nest: the outermost parallel, the rest serial."""
    return ["parallel"] + ["serial"] * (n - 1) if n else []


def dims_of(buf: BufferParam) -> list:
    return [buf.dim(a) for a in range(buf.ndim)]


def product(exprs: Sequence):
    out = None
    for e in exprs:
        out = e if out is None else out * e
    return Const(1) if out is None else out


# ----------------------------------------------------------------------------- scalar ops

def is_float(dtype: str) -> bool:
    return dtype in ("float32", "float64")


def const(value, dtype: str) -> Const:
    if dtype == "bool":
        return Const(bool(value), "bool")
    if is_float(dtype):
        return Const(float(value), dtype)
    return Const(int(value), dtype)


class Emitter:
    """Builds expressions that may need statements (locals): ``stmts`` collects them.

    ``local(expr)`` binds an expression to a fresh Declare'd local and returns its Var, so a
    value used several times is computed once (the renderer does not CSE DAGs)."""

    def __init__(self, prefix: str = "t") -> None:
        self.stmts: list = []
        self.prefix = prefix
        self.count = 0

    def local(self, expr, hint: str = "") -> ir.Expr:
        if isinstance(expr, (Const, Var, ScalarParam)):
            return expr
        name = f"{self.prefix}{hint}{self.count}"
        self.count += 1
        var = Var(name, expr.dtype, expr.lanes)
        self.stmts.append(Declare(var, expr))
        return var

    def scalar(self, name: str, args: Sequence, out_dtype: str) -> ir.Expr:
        """The IR of ``SCALAR_OPS[name](*args)`` computed as ``Elemwise`` would (in the
        operands' dtype; comparisons give bool), then cast to ``out_dtype``."""
        value = scalar_op_ir(self, name, list(args), out_dtype)
        if value.dtype != out_dtype:
            value = Cast(value, out_dtype)
        return value


def _sign(x):
    dt = x.dtype
    one, zero = const(1, dt), const(0, dt)
    if is_float(dt):
        return Select(ir.gt(x, zero), one, Select(ir.lt(x, zero), const(-1, dt), x))
    if dt.startswith("uint"):
        return Select(ir.gt(x, zero), one, zero)
    return Select(ir.gt(x, zero), one, Select(ir.lt(x, zero), const(-1, dt), zero))


def _softplus(em: Emitter, x):
    # log(1 + exp(x)) = max(x, 0) + log1p(exp(-|x|)): no overflow, accurate for x << 0
    x = em.local(x)
    return ir.maximum(x, const(0, x.dtype)) + ir.log1p(ir.exp(-ir.absolute(x)))


def _int_pow(em: Emitter, a, b):
    """Integer power by squaring over the exponent's bits (negative exponents give 0, except
    for bases 1 and -1, like C integer division)."""
    dt = a.dtype
    n = em.count
    em.count += 1
    r, base, e = Var(f"pw_r{n}", dt), Var(f"pw_b{n}", dt), Var(f"pw_e{n}", dt)
    k = Var(f"pw_k{n}")
    one = const(1, dt)
    em.stmts += [Declare(r, one), Declare(base, a), Declare(e, b),
                 Loop(k, 0, ir.bits(dt), [
                     ir.Assign(r, Select(ir.ne(e & one, const(0, dt)), r * base, r)),
                     ir.Assign(base, base * base),
                     ir.Assign(e, e >> one)], kind="unroll")]
    if dt.startswith("int"):
        neg = ir.lt(b, const(0, dt))
        small = Select(ir.eq(a, one), one, Select(ir.eq(a, const(-1, dt)),
                                                  Select(ir.eq(b & one, const(0, dt)), one, const(-1, dt)),
                                                  const(0, dt)))
        return Select(neg, small, r)
    return r


# Chebyshev interpolants of math.erf (numpy.polynomial.chebyshev.Chebyshev.interpolate, made
# for Kiln): erf(x) = x * A(x*x) on |x| <= 3 (A on t in [0, 9]); erfc(x) = exp(-x*x) * B(x) on
# [3, 6]; erf(x) = 1 beyond 6 in float64. Max relative error about 2e-14.
ERF_A = (0.585385266754624, -0.346699204962506, 0.12916620611705087, -0.046075073389869846,
         0.015042247941480845, -0.004448393879812358, 0.0011916693524233143, -0.0002902659855750488,
         6.461049130034036e-05, -1.3212173017097394e-05, 2.494836372333937e-06, -4.371175243264942e-07,
         7.137877747077974e-08, -1.0907226047472624e-08, 1.565436099589281e-09, -2.117330257378963e-10,
         2.706989161812508e-11, -3.2802154712270424e-12, 3.765731687829667e-13, -4.070656855071281e-14,
         2.7610763916764763e-15)
ERF_B = (0.12902689965474168, -0.042042678139511826, 0.0066984871210927985, -0.001045091679174349,
         0.00015985899884950696, -2.399826158723319e-05, 3.5390641050316492e-06, -5.13130320027514e-07,
         7.320268609322125e-08, -1.0282193129433953e-08, 1.4229088508002173e-09, -1.9411155053776097e-10,
         2.6117908276198647e-11, -3.467865233209091e-12, 4.5451830644395926e-13, -5.888501143450457e-14,
         7.497097479178173e-15, -9.993586172588854e-16)


def clenshaw(em: Emitter, coefs: Sequence[float], t, lo: float, hi: float):
    """sum_k coefs[k] T_k(u), u = (2t - (lo + hi)) / (hi - lo), with locals per step."""
    dt = t.dtype
    u = em.local((t * const(2.0 / (hi - lo), dt)) - const((lo + hi) / (hi - lo), dt))
    u2 = em.local(u * const(2.0, dt))
    b1, b2 = const(0.0, dt), const(0.0, dt)
    for c in reversed(coefs[1:]):
        b0 = em.local(const(c, dt) + u2 * b1 - b2)
        b1, b2 = b0, b1
    return const(coefs[0], dt) + u * b1 - b2


def _erf(em: Emitter, x):
    src = x.dtype
    xd = em.local(Cast(x, "float64") if src != "float64" else x)
    ax = em.local(ir.absolute(xd))
    small = em.local(ir.minimum(ax, const(3.0, "float64")))
    a = em.local(small * clenshaw(em, ERF_A, small * small, 0.0, 9.0))
    mid = em.local(ir.minimum(ir.maximum(ax, const(3.0, "float64")), const(6.0, "float64")))
    b = em.local(const(1.0, "float64") - ir.exp(-(mid * mid)) * clenshaw(em, ERF_B, mid, 3.0, 6.0))
    r = Select(ir.le(ax, const(3.0, "float64")), a,
               Select(ir.lt(ax, const(6.0, "float64")), b, const(1.0, "float64")))
    r = em.local(Select(ir.ne(ax, ax), xd, r))  # NaN stays NaN
    r = Select(ir.lt(xd, const(0.0, "float64")), -r, r)
    return Cast(r, src) if src != "float64" else r


def scalar_op_ir(em: Emitter, name: str, args: list, out_dtype: str):
    """Kernel IR for one ``SCALAR_OPS`` name (see Emitter.scalar). Semantics follow
    backends/numpy/core_ops.py: integer ops exact, sigmoid/softplus/tanh stable."""
    a = args[0]
    dt = a.dtype
    if name == "cast":
        return Cast(a, out_dtype) if dt != out_dtype else a
    if name == "identity":
        return a
    if name == "where":
        return Select(a, args[1], args[2])
    b = args[1] if len(args) > 1 else None
    binary = {"add": "add", "sub": "sub", "mul": "mul", "true_div": "div", "floor_div": "floordiv",
              "mod": "mod", "maximum": "max", "minimum": "min", "lt": "lt", "le": "le", "gt": "gt",
              "ge": "ge", "eq": "eq", "neq": "ne", "and": "and", "or": "or", "xor": "xor"}
    if name in binary:
        return ir.binop(binary[name], a, b)
    if name == "pow":
        return ir.power(a, b) if is_float(dt) else _int_pow(em, a, b)
    unary = {"neg": "neg", "abs": "abs", "invert": "not", "sqrt": "sqrt", "exp": "exp", "expm1": "expm1",
             "log": "log", "log1p": "log1p", "tanh": "tanh", "sigmoid": "sigmoid", "sin": "sin", "cos": "cos"}
    if name in unary:
        if dt == "bool" and name in ("neg", "abs"):
            return a
        if dt.startswith("uint") and name == "abs":
            return a
        return ir.UnOp(unary[name], a)
    if name in ("floor", "ceil", "round"):
        if not is_float(dt):
            return a
        return ir.UnOp({"floor": "floor", "ceil": "ceil", "round": "rint"}[name], a)
    if name == "sign":
        return _sign(em.local(a))
    if name == "sqr":
        a = em.local(a)
        return a * a
    if name == "relu":
        return ir.maximum(a, const(0, dt))
    if name == "softplus":
        return _softplus(em, a)
    if name == "reciprocal":
        return const(1, dt) / a
    if name == "erf":
        return _erf(em, a)
    raise NotImplementedError(f"no kernel-IR rule for the scalar op {name!r}")


def expr_ir(em: Emitter, expr: tuple, load: Callable[[int], ir.Expr], wanted: Sequence[int]) -> list:
    """IR values of instructions ``wanted`` of a fused expression (engine/ops/fused.py format):
    ``load(k)`` gives input slot k's value at the current index. Instructions used more than
    once (or wanted) are bound to locals; inputs loaded once each."""
    uses = [0] * len(expr)
    for _, _, args in expr:
        for a in args:
            if a[0] == "op":
                uses[a[1]] += 1
    for w in wanted:
        uses[w] += 1
    loaded: dict[int, ir.Expr] = {}
    values: list = []
    needed = _needed(expr, wanted)
    for j, (name, dtype, args) in enumerate(expr):
        if j not in needed:
            values.append(None)
            continue
        operands = []
        for a in args:
            if a[0] == "in":
                if a[1] not in loaded:
                    loaded[a[1]] = em.local(load(a[1]), "in")
                operands.append(loaded[a[1]])
            elif a[0] == "op":
                operands.append(values[a[1]])
            else:
                operands.append(const(a[1], a[2]))
        value = em.scalar(name, operands, dtype)
        if uses[j] > 1:
            value = em.local(value)
        values.append(value)
    return [values[w] for w in wanted]


def _needed(expr: tuple, wanted: Sequence[int]) -> set:
    seen, stack = set(), list(wanted)
    while stack:
        j = stack.pop()
        if j in seen:
            continue
        seen.add(j)
        stack.extend(a[1] for a in expr[j][2] if a[0] == "op")
    return seen


def expr_label(expr: tuple, wanted: Sequence[int] = ()) -> str:
    """Readable op names of an expression for kernel names (``tanh_add``)."""
    names = [n for n, _, _ in expr if n not in ("identity",)]
    short = []
    for n in names:
        if not short or short[-1] != n:
            short.append(n)
    text = "_".join(short[:5]) + ("_etc" if len(short) > 5 else "")
    return text or "copy"


# ----------------------------------------------------------------------------- elementwise kernels

def elementwise_kernel(name: str, in_types: Sequence[tuple], expr: tuple, outputs: Sequence[int],
                       out_types: Sequence[tuple], domain_scalars: bool = False) -> ir.Kernel:
    """One kernel evaluating a fused expression over a broadcast domain.

    ``in_types``: (dtype, ndim) per input slot (``in0``...); ``out_types``: (dtype, ndim) per
    output (``out0``...), ``outputs`` the instruction of each. The domain has the rank of the
    largest output; its extents are ``out0``'s dims, or scalar params ``n0``.. when
    ``domain_scalars`` (outputs of different shapes: each output is stored right-aligned, its
    size-1 dims re-stored with stride 0). The outermost loop is parallel."""
    ins = [BufferParam(f"in{k}", dt, nd) for k, (dt, nd) in enumerate(in_types)]
    outs = [BufferParam(f"out{m}", dt, nd) for m, (dt, nd) in enumerate(out_types)]
    rank = max((nd for _, nd in out_types), default=0)
    scalars = [ScalarParam(f"n{a}", "int64") for a in range(rank)] if domain_scalars else []
    extents = scalars if domain_scalars else dims_of(outs[[nd for _, nd in out_types].index(rank)])
    idx = loop_vars("i", rank)
    em = Emitter("v")
    values = expr_ir(em, expr, lambda k: ins[k][bcast_index(ins[k].ndim, idx)], outputs)
    stores = [o.store(bcast_index(o.ndim, idx), v) for o, v in zip(outs, values)]
    body = nest(idx, extents, em.stmts + stores, outer_parallel(rank))
    return ir.Kernel(name, (*ins, *outs, *scalars), body)


def copy_kernel(dtype: str, ndim: int, name: str | None = None) -> ir.Kernel:
    """``out0[...] = in0[...]`` (in0 broadcast), over out0's shape."""
    return elementwise_kernel(name or f"copy_{tag(dtype)}_{ndim}d", [(dtype, ndim)],
                              (("identity", dtype, (("in", 0),)),), [0], [(dtype, ndim)])


# ----------------------------------------------------------------------------- reductions

REDUCE_BINOP = {"sum": "add", "prod": "mul", "max": "max", "min": "min"}
#: float sums accumulate in blocks of this many elements (then the blocks are summed)
SUM_BLOCK = 1024
#: columns per block when the last axis is kept (a reduction over rows)
COL_BLOCK = 512


def reduce_op(reducer: str, dtype: str) -> str:
    """The kernel-IR reduction op of a Reduce reducer (bool: max/sum -> or, min/prod -> and)."""
    if dtype == "bool":
        return {"sum": "or", "max": "or", "min": "and", "prod": "and"}[reducer]
    return REDUCE_BINOP[reducer]


def reduce_body(extents: Sequence, axes: Sequence[int], value: Callable[[list], tuple],
                store: Callable[[list, ir.Expr], ir.Stmt], load_out: Callable[[list], ir.Expr] | None,
                op: str, dtype: str, prefix: str = "r") -> tuple:
    """Statements reducing ``value(vars)`` over ``axes`` of a domain with ``extents``.

    ``value(vars) -> (stmts, expr)`` gives the element at the domain index ``vars``;
    ``store(kept_vars, v)`` stores a result at the kept index (kept axes in order);
    ``load_out(kept_vars)`` reads it back (needed when the last axis is kept: the rows are
    then accumulated in the output, vectorized along the last axis).

    Last axis reduced: for each kept index (outermost kept loop parallel) a register
    accumulator, float sums in blocks of ``SUM_BLOCK``. Last axis kept: the output row is set
    to the identity, then every reduced row is combined into it (column blocks of
    ``COL_BLOCK``; the first kept loop, or the column-block loop, is parallel)."""
    d = len(extents)
    axes = sorted(axes)
    kept = [a for a in range(d) if a not in axes]
    vars_ = loop_vars(prefix, d)
    ident = ir.reduce_identity(op, dtype)
    if d == 0 or (d - 1) in axes:
        acc = Var(f"{prefix}acc", dtype)
        inner_ax = axes[-1]
        outer_red = axes[:-1]
        iv = vars_[inner_ax]
        n_inner = extents[inner_ax]
        stmts, v = value(vars_) if d else value([])
        if d == 0:
            return tuple(stmts) + (store([], v),)
        if op == "add" and is_float(dtype):
            blk = Var(f"{prefix}blk", dtype)
            bv = Var(f"{prefix}b")
            start = bv * SUM_BLOCK
            stop = ir.minimum(start + SUM_BLOCK, n_inner)
            inner = (Declare(blk, ident),
                     Loop(iv, start, stop, tuple(stmts) + (ir.Assign(blk, blk + v),)),
                     ir.Assign(acc, acc + blk))
            inner_loop = (Loop(bv, 0, (n_inner + (SUM_BLOCK - 1)) // SUM_BLOCK, inner),)
        else:
            inner_loop = (Loop(iv, 0, n_inner, tuple(stmts) + (ir.Assign(acc, ir.BinOp(op, acc, v)),)),)
        red = nest([vars_[a] for a in outer_red], [extents[a] for a in outer_red], inner_loop)
        body = (Declare(acc, ident),) + red + (store([vars_[a] for a in kept], acc),)
        return nest([vars_[a] for a in kept], [extents[a] for a in kept], body, outer_parallel(len(kept)))
    # the last axis is kept: accumulate rows into the output
    last = d - 1
    jv, n_j = vars_[last], extents[last]
    outer_kept = kept[:-1]
    kvars = [vars_[a] for a in kept]
    jb = Var(f"{prefix}jb")
    j0 = jb * COL_BLOCK
    j1 = ir.minimum(j0 + COL_BLOCK, n_j)
    init = Loop(jv, j0, j1, store(kvars, ident))
    stmts, v = value(vars_)
    update = Loop(jv, j0, j1, tuple(stmts) + (store(kvars, ir.BinOp(op, load_out(kvars), v)),))
    red = nest([vars_[a] for a in axes], [extents[a] for a in axes], update)
    block = Loop(jb, 0, (n_j + (COL_BLOCK - 1)) // COL_BLOCK, (init,) + red,
                 kind="serial" if outer_kept else "parallel")
    return nest([vars_[a] for a in outer_kept], [extents[a] for a in outer_kept], block,
                outer_parallel(len(outer_kept)))


# ----------------------------------------------------------------------------- Philox-4x32-10

PHILOX_M0, PHILOX_M1 = 0xD2511F53, 0xCD9E8D57
PHILOX_W0, PHILOX_W1 = 0x9E3779B9, 0xBB67AE85


def philox_words(em: Emitter, block, k0, k1) -> list:
    """The four uint32 output words of Philox-4x32-10 for the 64-bit block counter ``block``
    (uint64 expr; counter words ``(lo, hi, 0, 0)``) and key ``(k0, k1)`` (uint32 exprs), as
    locals (engine/philox.py is the reference).

    The ten rounds are an ``unroll`` loop of constant trips (rendered as straight-line code,
    as before), so that a backend's estimate of a loop's work counts a block as the ten
    round-steps it costs, not as one elementwise step: the LLVM backend's parallel threshold
    then splits sample kernels of >= ~50k samples over the threads (it counted 4 samples per
    step and ran everything below ~500k samples on one thread)."""
    u32 = "uint32"
    names = [f"{em.prefix}ph{em.count}_{w}" for w in ("c0", "c1", "c2", "c3", "ka", "kb", "r")]
    em.count += 1
    c0, c1, c2, c3, ka, kb = (Var(n, u32) for n in names[:6])
    r = Var(names[6])
    m0, m1 = Const(PHILOX_M0, u32), Const(PHILOX_M1, u32)
    em.stmts += [Declare(c0, Cast(block, u32)), Declare(c1, Cast(block >> Const(32, "uint64"), u32)),
                 Declare(c2, Const(0, u32)), Declare(c3, Const(0, u32)),
                 Declare(ka, k0), Declare(kb, k1)]
    hi0, lo0, hi1, lo1 = (Var(f"{names[0]}_{t}", u32) for t in ("hi0", "lo0", "hi1", "lo1"))
    em.stmts.append(Loop(r, 0, 10, [
        Declare(hi0, ir.mulhi(m0, c0)), Declare(lo0, m0 * c0),
        Declare(hi1, ir.mulhi(m1, c2)), Declare(lo1, m1 * c2),
        ir.Assign(c0, hi1 ^ c1 ^ ka), ir.Assign(c1, lo1),
        ir.Assign(c2, hi0 ^ c3 ^ kb), ir.Assign(c3, lo0),
        ir.Assign(ka, ka + Const(PHILOX_W0, u32)), ir.Assign(kb, kb + Const(PHILOX_W1, u32)),
    ], kind="unroll"))
    return [c0, c1, c2, c3]


def uniform_unit(word, dtype: str):
    """``u`` in [0, 1) from a uint32 word, exactly as engine/philox.py."""
    if dtype == "float32":
        return Cast(word >> Const(8, "uint32"), "float32") * Const(2.0 ** -24, "float32")
    return Cast(word, "float64") * Const(2.0 ** -32, "float64")


def _box_muller_uniforms(w1, w2, dtype: str) -> tuple:
    """(u1 in (0, 1], u2 in [0, 1)) in float64 from a pair of words; for float32 they are the
    float32 uniforms, exact in float64 (engine/philox.py)."""
    if dtype == "float32":
        scale = Const(2.0 ** -24, "float64")
        return (Cast((w1 >> Const(8, "uint32")) + Const(1, "uint32"), "float64") * scale,
                Cast(w2 >> Const(8, "uint32"), "float64") * scale)
    scale = Const(2.0 ** -32, "float64")
    return (Cast(w1, "float64") + Const(1.0, "float64")) * scale, Cast(w2, "float64") * scale


def box_muller(em: Emitter, w1, w2, dtype: str) -> tuple:
    """(z_even, z_odd) from a pair of words: Box-Muller in float64, rounded once to ``dtype``
    (engine/philox.py). Under config.deterministic, engine/portable_math.py's version, which
    gives the same bits on every backend."""
    u1, u2 = _box_muller_uniforms(w1, w2, dtype)
    if config.deterministic:
        from engine import portable_math

        ops = portable_math.IROps(em)
        z0, z1 = portable_math.box_muller(ops.local(u1), ops.local(u2), ops)
    else:
        r = em.local(ir.sqrt(ir.log(u1) * Const(-2.0, "float64")), "r")
        theta = em.local(Const(2.0 * math.pi, "float64") * u2, "th")
        z0, z1 = r * ir.cos(theta), r * ir.sin(theta)
    return (Cast(z0, dtype), Cast(z1, dtype)) if dtype != "float64" else (z0, z1)
