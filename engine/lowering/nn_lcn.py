"""Local contrast normalization (forward and gradient) as separable passes over temps.

Semantics: backends/numpy/lcn.py. The Gaussian window is separable, so ``conv(z)`` (the local
mean) is a channel mean (``across_channels``; per map: the map itself) followed by a row pass
and a column pass of the 1-d Gaussian ``g`` with zero padding; its taps are baked in as
constants of the input dtype, summed in the oracle's order (tap 0 first, separate multiply and
add). Planes are (N, Cp, H, W) temps, Cp = 1 across channels and C per map; a plane broadcasts
over the channels when Cp = 1.

Forward ("both"): M = conv(x); q = mean_c (x - M)^2; s = sqrt(cols(rows(q))); c[n] = mean(s);
y = (x - M) / max(s, c, eps). Kernels: channel means with the element expression fused in
(``..._chan_mean_x``, ``..._sq``), ``blur_rows`` / ``blur_cols`` (the column pass can end in a
sqrt), ``..._image_mean`` and one pointwise ``..._out``. The gradient recomputes M, s and c, then follows
the oracle's vjp: an image reduction for the gradient of c, conv of gq (self-adjoint), gv,
and gx = gv - conv(gv), with gv written straight into gx.
Every pass is parallel over rows (or images) and vectorized along the rows.
"""

from __future__ import annotations

import numpy as np

from engine import kernel_ir as ir
from engine.kernel_ir import BufferParam, Const, Var
from engine.lower import In, Lowered, Out, Step, Tmp
from engine.lowering.nn_util import (
    clamp,
    dt,
    fconst,
    freeze,
    iadd,
    imin,
    imul,
    isub,
    num,
    vector_lanes,
    vector_loop,
)


def gaussian_1d(size, sigma):
    r = size // 2
    t = np.arange(-r, r + 1, dtype=np.float64)
    g = np.exp(-(t * t) / (2.0 * sigma * sigma))
    return g / g.sum()


def _vec(loop, dtype, idempotent=True):
    return vector_loop(loop, vector_lanes(dtype), idempotent)


# ----------------------------------------------------------------------------- blur passes


def blur_kernel(dtype, size, sigma, axis, sqrt=False, name=None):
    """dst = 1-d Gaussian correlation of src along ``axis`` ("rows": axis 2, "cols": axis 3),
    zero padding "same"; ``sqrt`` takes the square root of the result. Params (src, dst)."""
    dtype = ir.dtype_name(dtype)
    src, dst = BufferParam("src", dtype, 4), BufferParam("dst", dtype, 4)
    g = [fconst(v, dtype) for v in gaussian_1d(size, sigma)]
    r = size // 2
    zero = Const(0.0, dtype)
    p, n, c, i, j = (Var(s) for s in ("p", "n", "c", "i", "j"))
    H, W = dst.dim(2), dst.dim(3)

    def total(terms):
        out = g[0] * terms[0]
        for gu, t in zip(g[1:], terms[1:]):
            out = out + gu * t
        return ir.sqrt(out) if sqrt else out

    def guarded(ok, idx):
        return ir.Select(ok, src[idx], zero)
    body = [ir.Declare(n, ir.binop("floordiv", p, src.dim(1))), ir.Declare(c, ir.binop("mod", p, src.dim(1)))]
    if axis == "rows":  # a select per row (invariant along it), rows clamped: vector loads
        terms = []
        for u in range(size):
            row = iadd(i, u - r)
            terms.append(guarded(ir.binop("and", ir.ge(row, 0), ir.lt(row, H)),
                                 (n, c, clamp(row, 0, isub(H, 1)), j)))
        cols = ir.Loop(j, 0, W, [dst.store((n, c, i, j), total(terms))])
        body.append(ir.Loop(i, 0, H, _vec(cols, dtype)))
    else:
        lo = imin(Const(r), W)
        hi = ir.maximum(isub(W, r), lo)
        jb = Var("jb")
        border = []
        for v in range(size):
            col = iadd(jb, v - r)
            border.append(guarded(ir.binop("and", ir.ge(col, 0), ir.lt(col, W)),
                                  (n, c, i, clamp(col, 0, isub(W, 1)))))
        inner = [src[n, c, i, iadd(j, v - r)] for v in range(size)]
        mid = ir.Loop(j, Var("lo"), Var("hi"), [dst.store((n, c, i, j), total(inner))])
        row = [ir.Loop(jb, 0, Var("lo"), [dst.store((n, c, i, jb), total(border))]),
               *_vec(mid, dtype),
               ir.Loop(Var("jr"), Var("hi"), W, [dst.store((n, c, i, Var("jr")),
                                                          total(ir.substitute(tuple(border), {"jb": Var("jr")})))])]
        body += [ir.Declare(Var("lo"), lo), ir.Declare(Var("hi"), hi), ir.Loop(i, 0, H, row)]
    loop = ir.Loop(p, 0, imul(src.dim(0), src.dim(1)), body, kind="parallel")
    name = name or f"lcn_blur_{axis}_k{size}_sig{num(sigma)}{'_sqrt' if sqrt else ''}_{dt(dtype)}"
    return freeze(ir.Kernel(name, (src, dst), [loop]))


# ----------------------------------------------------------------------------- pointwise passes


def rows_kernel(name, dtype, params, across, value, mean_out=None, stores=lambda *idx: (), idempotent=True):
    """A pass over x-shaped rows: per (n, c, i, j), ``value(n, c, i, j) -> (stmts, expr)``;
    with ``mean_out`` (a (N, Cp, H, W) plane) the expr is averaged over c into it (across
    channels) or written to it (per map); ``stores(n, c, i, j, v) -> [Store]`` writes more.
    The reference buffer for the shape is params[0]. Parallel over (n, i) or (n, c, i)."""
    ref = params[0]
    N, C, H, W = (ref.dim(k) for k in range(4))
    n, c, i, j, t = (Var(s) for s in ("n", "c", "i", "j", "t"))
    vv = Var("val", dtype)

    def elem(idx_c):
        stmts, e = value(n, idx_c, i, j)
        out = list(stmts) + [ir.Declare(vv, e)]
        out += list(stores(n, idx_c, i, j, vv))
        return out
    if across and mean_out is not None:
        body = [ir.Declare(n, ir.binop("floordiv", t, H)), ir.Declare(i, ir.binop("mod", t, H))]
        acc = (n, Const(0), i, j)
        first = ir.Loop(j, 0, W, elem(Const(0)) + [mean_out.store(acc, vv)])
        body += _vec(first, dtype)
        rest = ir.Loop(j, 0, W, elem(c) + [mean_out.store(acc, mean_out[acc] + vv)])
        body.append(ir.Loop(c, 1, C, _vec(rest, dtype, False)))
        scale = ir.Loop(j, 0, W, [mean_out.store(acc, mean_out[acc] / ir.Cast(C, dtype))])
        body += _vec(scale, dtype, False)
        total = imul(N, H)
    else:
        body = [ir.Declare(Var("nc"), ir.binop("floordiv", t, H)), ir.Declare(i, ir.binop("mod", t, H)),
                ir.Declare(n, ir.binop("floordiv", Var("nc"), C)), ir.Declare(c, ir.binop("mod", Var("nc"), C))]
        inner = elem(c)
        if mean_out is not None:
            inner.append(mean_out.store((n, c, i, j), vv))
        body += _vec(ir.Loop(j, 0, W, inner), dtype, idempotent)
        total = imul(imul(N, C), H)
    return freeze(ir.Kernel(name, params, [ir.Loop(t, 0, total, body, kind="parallel")]))


def image_sum_kernel(name, dtype, params, out, value, scale_by_size=False):
    """out[n] = sum over (c, i, j) of value(n, c, i, j) (divided by the element count when
    ``scale_by_size``: a mean). params[0] gives the shape. Parallel over images."""
    ref = params[0]
    N, C, H, W = (ref.dim(k) for k in range(4))
    n, c, i, j = (Var(s) for s in ("n", "c", "i", "j"))
    acc = Var("acc", dtype)
    stmts, e = value(n, c, i, j)
    row = ir.Loop(j, 0, W, list(stmts) + [ir.Assign(acc, acc + e)])
    body = [ir.Declare(acc, Const(0.0, dtype)), ir.Loop(c, 0, C, [ir.Loop(i, 0, H, _vec(row, dtype, False))])]
    res = acc / ir.Cast(imul(imul(C, H), W), dtype) if scale_by_size else acc
    body.append(out.store((n,), res))
    return freeze(ir.Kernel(name, params, [ir.Loop(n, 0, N, body, kind="parallel")]))


# ----------------------------------------------------------------------------- plans


class _LCN:
    """The kernels and steps of one LCN configuration; ``fwd()`` / ``grad()`` give Lowered."""

    def __init__(self, dtype, size=9, sigma=None, mode="both", across_channels=True, eps=1e-4):
        self.dtype = dtype = ir.dtype_name(dtype)
        self.size, self.sigma = int(size), float(size / 4.5 if sigma is None else sigma)
        self.mode, self.across, self.eps = mode, bool(across_channels), float(eps)
        self.tag = (f"lcn_{mode}_{'across' if self.across else 'permap'}_k{size}_sig{num(self.sigma)}"
                    f"_eps{num(self.eps)}_{dt(dtype)}")
        self.kernels, self.steps, self.temps = {}, [], []
        self.scratch = None

    # -- plumbing
    def kernel(self, k):
        self.kernels.setdefault(k.name, k)
        return k.name

    def tmp(self, plane=True):
        def shape(ins, plane=plane, across=self.across):
            n, c, h, w = ins[0].shape
            return (n, 1 if across else c, h, w) if plane else (n,)
        self.temps.append((self.dtype, shape))
        return Tmp(len(self.temps) - 1)

    def step(self, name, *args):
        self.steps.append(Step(name, tuple(args)))

    def buf(self, name, nd=4):
        return BufferParam(name, self.dtype, nd)

    def pl(self, buf, n, c, i, j):
        """Read plane buf at (n, c, i, j), broadcast over channels when across."""
        return buf[n, Const(0) if self.across else c, i, j]

    def blur(self, src, dst, sqrt=False):
        """dst = rows then cols pass of src (through the scratch plane); dst may be src."""
        if self.scratch is None:
            self.scratch = self.tmp()
        rows = self.kernel(blur_kernel(self.dtype, self.size, self.sigma, "rows"))
        cols = self.kernel(blur_kernel(self.dtype, self.size, self.sigma, "cols", sqrt))
        self.step(rows, src, self.scratch)
        self.step(cols, self.scratch, dst)

    def conv(self, label, src_arg, value_params, value, dst):
        """dst = conv(z) for z given by value over the x-shaped arg(s) src_arg."""
        if self.across:
            k = rows_kernel(f"{self.tag}__chan_mean_{label}", self.dtype,
                            value_params + (self.buf("plane"),), True, value, mean_out=self.buf("plane"))
            self.step(self.kernel(k), *src_arg, dst)
            self.blur(dst, dst)
        else:
            self.blur(src_arg[0], dst)

    # -- shared pieces of the forward
    def stats(self):
        """Steps computing M (local mean, unless divisive), s and c; returns their Tmps."""
        dtype = self.dtype
        x = self.buf("x")
        m_t = self.tmp()
        t1 = self.tmp()
        if self.mode != "divisive":
            def xval(n, c, i, j):
                return [], x[n, c, i, j]
            self.conv("x", (In(0),), (x,), xval, m_t)
        if self.mode == "subtractive":
            return m_t, None, None
        mb = self.buf("locmean")

        def sq(n, c, i, j):
            v = x[n, c, i, j] if self.mode == "divisive" else x[n, c, i, j] - self.pl(mb, n, c, i, j)
            return [], v * v
        k = rows_kernel(f"{self.tag}__sq", dtype, (x, mb, self.buf("plane")), self.across, sq,
                        mean_out=self.buf("plane"))
        self.step(self.kernel(k), In(0), m_t, t1)
        self.blur(t1, t1, sqrt=True)  # s in t1
        c_t = self.tmp(plane=False)
        sb = self.buf("stdev")
        k = image_sum_kernel(f"{self.tag}__image_mean", dtype, (sb, self.buf("imgmean", 1)), self.buf("imgmean", 1),
                             lambda n, c, i, j: ([], sb[n, c, i, j]), scale_by_size=True)
        self.step(self.kernel(k), t1, c_t)
        return m_t, t1, c_t

    def v_d(self, x, mb, sb, cb, n, c, i, j):
        """(v, s, c, d) expressions at (n, c, i, j)."""
        v = x[n, c, i, j] if self.mode == "divisive" else x[n, c, i, j] - self.pl(mb, n, c, i, j)
        s, cn = self.pl(sb, n, c, i, j), cb[n]
        return v, s, cn, ir.maximum(ir.maximum(s, cn), fconst(self.eps, self.dtype))

    def lowered(self):
        def out_shape(ins):
            return [ins[0].shape]
        return Lowered(list(self.kernels.values()), self.steps, out_shape, self.temps)

    # -- forward
    def fwd(self):
        x, y, mb, sb, cb = self.buf("x"), self.buf("y"), self.buf("locmean"), self.buf("stdev"), self.buf("imgmean", 1)
        m_t, s_t, c_t = self.stats()
        if self.mode == "subtractive":
            def val(n, c, i, j):
                return [], x[n, c, i, j] - self.pl(mb, n, c, i, j)
            k = rows_kernel(f"{self.tag}__out", self.dtype, (x, mb, y), False, val,
                            stores=lambda n, c, i, j, v: [y.store((n, c, i, j), v)])
            self.step(self.kernel(k), In(0), m_t, Out(0))
            return self.lowered()

        def val(n, c, i, j):
            v, _, _, d = self.v_d(x, mb, sb, cb, n, c, i, j)
            return [], v / d
        k = rows_kernel(f"{self.tag}__out", self.dtype, (x, mb, sb, cb, y), False, val,
                        stores=lambda n, c, i, j, v: [y.store((n, c, i, j), v)])
        self.step(self.kernel(k), In(0), m_t, s_t, c_t, Out(0))
        return self.lowered()

    # -- gradient
    def grad(self):
        dtype = self.dtype
        x, gy, gx = self.buf("x"), self.buf("gy"), self.buf("gx")
        mb, sb, cb = self.buf("locmean"), self.buf("stdev"), self.buf("imgmean", 1)
        gcb, qb = self.buf("gimgmean", 1), self.buf("convq")
        zero, one = Const(0.0, dtype), Const(1.0, dtype)
        eps = fconst(self.eps, dtype)
        t_a = self.tmp()
        if self.mode == "subtractive":  # gx = gy - conv(gy)
            def gyval(n, c, i, j):
                return [], gy[n, c, i, j]
            self.conv("gy", (In(1),), (gy,), gyval, t_a)

            def out(n, c, i, j):
                return [], gy[n, c, i, j] - self.pl(qb, n, c, i, j)
            k = rows_kernel(f"{self.tag}__grad_out", dtype, (gy, qb, gx), False, out,
                            stores=lambda n, c, i, j, v: [gx.store((n, c, i, j), v)])
            self.step(self.kernel(k), In(1), t_a, Out(0))
            return self.lowered()
        m_t, s_t, c_t = self.stats()

        def parts(n, c, i, j):
            v, s, cn, d = self.v_d(x, mb, sb, cb, n, c, i, j)
            g = gy[n, c, i, j]
            names = [Var(k, dtype) for k in ("v", "s", "cn", "d", "g")]
            stmts = [ir.Declare(a, b) for a, b in zip(names, (v, s, cn, d, g))]
            v, s, cn, d, g = names
            gd = (-g) * v / (d * d)
            to_s = ir.binop("and", ir.ge(s, cn), ir.ge(s, eps))
            to_c = ir.binop("and", ir.logical_not(to_s), ir.ge(cn, eps))
            return stmts, v, s, cn, d, g, gd, to_s, to_c
        # gradient of c per image
        gc_t = self.tmp(plane=False)

        def gcval(n, c, i, j):
            stmts, *_, gd, _, to_c = parts(n, c, i, j)
            return stmts, ir.Select(to_c, gd, zero)
        k = image_sum_kernel(f"{self.tag}__grad_c", dtype, (x, gy, mb, sb, cb, gcb), gcb, gcval)
        self.step(self.kernel(k), In(0), In(1), m_t, s_t, c_t, gc_t)

        # conv(gq) into q
        def gqval(n, c, i, j):
            stmts, v, s, cn, d, g, gd, to_s, to_c = parts(n, c, i, j)
            size = ir.Cast(imul(imul(x.dim(1), x.dim(2)), x.dim(3)), dtype)
            gs = ir.Select(to_s, gd, zero) + gcb[n] / size
            safe = ir.Select(ir.eq(s, 0.0), one, s)
            return stmts, ir.Select(ir.eq(s, 0.0), zero, gs / (Const(2.0, dtype) * safe))
        q_t = self.tmp()
        k = rows_kernel(f"{self.tag}__grad_q", dtype, (x, gy, mb, sb, cb, gcb, self.buf("plane")),
                        self.across, gqval, mean_out=self.buf("plane"))
        self.step(self.kernel(k), In(0), In(1), m_t, s_t, c_t, gc_t, q_t)
        self.blur(q_t, q_t)

        # gv = gy / d + 2 v conv(gq), written to gx (and its channel mean to a plane)
        def gvval(n, c, i, j):
            stmts, v, s, cn, d, g, *_ = parts(n, c, i, j)
            return stmts, g / d + Const(2.0, dtype) * v * self.pl(qb, n, c, i, j)
        params = (x, gy, mb, sb, cb, qb, gx)
        mean = None
        if self.mode != "divisive" and self.across:
            params, mean = params + (self.buf("plane"),), self.buf("plane")
        k = rows_kernel(f"{self.tag}__grad_v", dtype, params, self.across, gvval, mean_out=mean,
                        stores=lambda n, c, i, j, v: [gx.store((n, c, i, j), v)])
        args = [In(0), In(1), m_t, s_t, c_t, q_t, Out(0)] + ([t_a] if mean is not None else [])
        self.step(self.kernel(k), *args)
        if self.mode == "divisive":
            return self.lowered()
        # gx -= conv(gv)
        self.blur(t_a if self.across else Out(0), t_a)

        def sub(n, c, i, j):
            return [], gx[n, c, i, j] - self.pl(qb, n, c, i, j)
        k = rows_kernel(f"{self.tag}__grad_out", dtype, (gx, qb), False, sub,
                        stores=lambda n, c, i, j, v: [gx.store((n, c, i, j), v)], idempotent=False)
        self.step(self.kernel(k), Out(0), t_a)
        return self.lowered()


def lcn_plan(dtype, size=9, sigma=None, mode="both", across_channels=True, eps=1e-4) -> Lowered:
    """LCN: input (x,) -> y."""
    return _LCN(dtype, size, sigma, mode, across_channels, eps).fwd()


def lcn_grad_plan(dtype, size=9, sigma=None, mode="both", across_channels=True, eps=1e-4) -> Lowered:
    """LCNGrad: inputs (x, gy) -> gx."""
    return _LCN(dtype, size, sigma, mode, across_channels, eps).grad()
