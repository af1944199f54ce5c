"""Softmax family: softmax / log_softmax along any axis, softmax cross-entropy and its gradient.

One parallel loop over rows (every position of the other axes); per row three passes along the
axis: the max, the sum of exp(x - max) (softmax stores the exponentials on the way), the write
(softmax: e / sum; log_softmax: (x - max) - log(sum)). Vectorized along the row when the axis
is the last one (rows of another axis are strided: scalar passes).

Cross-entropy of logits x (N, K) and int labels y (N,): ``log(sum) - (x[y] - max)`` per row;
a label outside [0, K) gives NaN (the numpy backend raises; a kernel cannot, and never reads
out of bounds). Its gradient ``g[n] * (softmax(x) - onehot(y))`` is ``xent_grad_kernel``.
"""

from __future__ import annotations

from engine import kernel_ir as ir
from engine.kernel_ir import BufferParam, Const, Var
from engine.lowering.nn_util import dt, fdiv, freeze, imod, imul, vector_lanes, vector_loop


def _row_index(x, axis, r):
    """(statements, index builder k -> full index) of flat row r (over the axes != axis)."""
    others = [d for d in range(x.ndim) if d != axis]
    stmts, idx, rest = [], {}, r
    for pos, d in enumerate(others):
        inner = Const(1)
        for e in others[pos + 1:]:
            inner = imul(inner, x.dim(e))
        if pos == len(others) - 1:
            val = rest
        else:
            val = fdiv(rest, inner)
        stmts.append(ir.Declare(Var(f"i{d}"), val))
        idx[d] = Var(f"i{d}")
        if pos < len(others) - 1:
            stmts.append(ir.Declare(Var(f"r{d}"), imod(rest, inner)))
            rest = Var(f"r{d}")
    nrows = Const(1)
    for d in others:
        nrows = imul(nrows, x.dim(d))

    def at(k):
        return tuple(k if d == axis else idx[d] for d in range(x.ndim))
    return stmts, at, nrows


def _passes(x, at, n, dtype, vec, store_exp=None):
    """Declares m (row max) and s (sum of exp(x - m)); optionally stores the exponentials."""
    m, s = Var("m", dtype), Var("s", dtype)
    k1, k2 = Var("k1"), Var("k2")
    out = [ir.Declare(m, ir.reduce_identity("max", dtype))]
    out += vec(ir.Loop(k1, 0, n, [ir.Assign(m, ir.maximum(m, x[at(k1)]))]))
    out.append(ir.Declare(s, Const(0.0, dtype)))
    e = ir.exp(x[at(k2)] - m)
    if store_exp is not None:
        ev = Var("e", dtype)
        body = [ir.Declare(ev, e), store_exp.store(at(k2), ev), ir.Assign(s, s + ev)]
    else:
        body = [ir.Assign(s, s + e)]
    out += vec(ir.Loop(k2, 0, n, body))
    return out, m, s


def softmax_kernel(dtype, ndim, axis, log=False, name=None):
    """Params (x, out), both ndim-d; ``axis`` normalized to [0, ndim)."""
    dtype = ir.dtype_name(dtype)
    axis = axis % ndim
    x, o = BufferParam("x", dtype, ndim), BufferParam("out", dtype, ndim)
    r, k3 = Var("r"), Var("k3")
    stmts, at, nrows = _row_index(x, axis, r)
    n = x.dim(axis)
    lanes = vector_lanes(dtype)

    def vec(loop, idempotent=False):
        return vector_loop(loop, lanes, idempotent) if axis == ndim - 1 else [loop]
    passes, m, s = _passes(x, at, n, dtype, vec, store_exp=None if log else o)
    if log:
        ls = Var("ls", dtype)
        write = [ir.Declare(ls, ir.log(s))] + vec(ir.Loop(k3, 0, n, [o.store(at(k3), (x[at(k3)] - m) - ls)]), True)
    else:
        write = vec(ir.Loop(k3, 0, n, [o.store(at(k3), o[at(k3)] / s)]))
    loop = ir.Loop(r, 0, nrows, stmts + passes + write, kind="parallel")
    kind = "log_softmax" if log else "softmax"
    return freeze(ir.Kernel(name or f"{kind}_axis{axis}_{dt(dtype)}_{ndim}d", (x, o), [loop]))


def _label(y, xb, r, dtype):
    """(statements, valid flag, safe label) of row r's label."""
    lab, ok = Var("lab"), Var("ok", "bool")
    return [ir.Declare(lab, ir.Cast(y[r], "int64")),
            ir.Declare(ok, ir.binop("and", ir.ge(lab, 0), ir.lt(lab, xb.dim(1))))], ok, \
        ir.Select(ok, lab, Const(0))


def xent_kernel(dtype, label_dtype, name=None):
    """Per-row loss of logits x (N, K) and labels y (N,). Params (x, y, out)."""
    dtype = ir.dtype_name(dtype)
    x, y, o = BufferParam("x", dtype, 2), BufferParam("y", label_dtype, 1), BufferParam("out", dtype, 1)
    r = Var("r")

    def vec(loop):
        return vector_loop(loop, vector_lanes(dtype), idempotent=False)
    passes, m, s = _passes(x, lambda k: (r, k), x.dim(1), dtype, vec)
    lstmts, ok, lab = _label(y, x, r, dtype)
    loss = ir.log(s) - (x[r, lab] - m)
    nan = Const(float("nan"), dtype)
    body = passes + lstmts + [o.store((r,), ir.Select(ok, loss, nan))]
    loop = ir.Loop(r, 0, x.dim(0), body, kind="parallel")
    return freeze(ir.Kernel(name or f"softmax_xent_{dt(dtype)}_{dt(label_dtype)}", (x, y, o), [loop]))


def xent_grad_kernel(dtype, label_dtype, name=None):
    """gx[n, k] = g[n] * (softmax(x)[n, k] - (k == y[n])). Params (x, y, g, gx)."""
    dtype = ir.dtype_name(dtype)
    x, y = BufferParam("x", dtype, 2), BufferParam("y", label_dtype, 1)
    g, gx = BufferParam("g", dtype, 1), BufferParam("gx", dtype, 2)
    r, k3 = Var("r"), Var("k3")

    def vec(loop, idempotent=False):
        return vector_loop(loop, vector_lanes(dtype), idempotent)
    passes, m, s = _passes(x, lambda k: (r, k), x.dim(1), dtype, vec)
    lstmts, ok, lab = _label(y, x, r, dtype)
    gv = Var("gr", dtype)
    one, zero = Const(1.0, dtype), Const(0.0, dtype)
    p = ir.exp(x[r, k3] - m) / s
    hot = ir.Select(ir.binop("and", ok, ir.eq(k3, Var("lab"))), one, zero)
    write = vec(ir.Loop(k3, 0, x.dim(1), [gx.store((r, k3), (p - hot) * gv)]), True)
    body = passes + lstmts + [ir.Declare(gv, g[r])] + write
    loop = ir.Loop(r, 0, x.dim(0), body, kind="parallel")
    return freeze(ir.Kernel(name or f"softmax_xent_bwd_{dt(dtype)}_{dt(label_dtype)}", (x, y, g, gx), [loop]))
