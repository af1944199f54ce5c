"""Convolution as implicit GEMM on the shared-memory tiles of engine/gpu/tile_gemm.py.

Each builder returns a kernel with the parameters of the common "valid" correlation kernel it
replaces (padding stays a separate pass into a temp, so no bounds checks on the image); the
operand that would be an im2col matrix is gathered straight into the shared-memory tile. One
product per convolution group (``block_z``), with ``K = Cg*KH*KW`` taps ``k -> (c, u, v)``
and output columns ``col -> (n, a, b)`` (b fastest: consecutive threads read neighbouring
pixels):

* forward ``(x, w[, bias], out)``: ``out[n, f, a, b] = sum_k W[f, k] * X[k, (n, a, b)]``,
  ``M = F/groups`` filters, ``N = batch*OH*OW``; bias and the fused epilogue in the store;
* input gradient ``(gy, w, gx)`` over the zero-inserted, padded gradient: the same with the
  transposed, flipped filters, ``M = C/groups``, ``K = F/groups*KH*KW`` (a gather: no atomics);
* weight gradient, two kernels (a deterministic two-pass reduction, no atomics):
  ``(x, gy, part)``: ``part[s, f, c, u, v] = sum_{k in part s} GY[f, k] * X[k, (c, u, v)]``
  with ``k -> (n, i, j)`` over batch and output pixels, split into ``S = part.dim(0)`` ranges
  (split-K: the reduction over every pixel of the batch is long, the output small), then
  ``(part, gw)``: ``gw = sum_s part[s]`` in a fixed order.
"""

from __future__ import annotations

from engine import kernel_ir as ir
from engine.gpu.tile_gemm import GemmSpec, Tiles, tiled_gemm
from engine.kernel_ir import BinOp, BufferParam, Const, Declare, Var

#: split-K: at least this many reduction steps per part of the weight gradient ...
SPLIT_K_MIN = 1024
#: ... and at most this many parts
SPLIT_K_MAX = 32


def split_k_parts(k_total: int) -> int:
    """How many parts the weight gradient's reduction of ``k_total`` steps is split into."""
    return max(1, min(SPLIT_K_MAX, int(k_total) // SPLIT_K_MIN))


def _div(a, b):
    return BinOp("div", a, b if isinstance(b, ir.Expr) else Const(b))


def _ks(buf, ksize):
    kh = Const(ksize[0]) if isinstance(ksize[0], int) else buf.dim(2)
    kw = Const(ksize[1]) if isinstance(ksize[1], int) else buf.dim(3)
    return kh, kw


def _taps(kh, kw):
    """KH*KW: a constant when both are (divisions by it then compile to multiplications)."""
    if isinstance(kh, Const) and isinstance(kw, Const):
        return Const(kh.value * kw.value)
    return kh * kw


def _flip(u, k, flip):
    return (k - 1) - u if flip else u


def _split3(flat, inner, last, names):
    """Declares (q, r1, r2) = the flat index split over (., inner // last, last), and Vars."""
    q, rem, mid, lo = (Var(n) for n in names)
    return [Declare(q, _div(flat, inner)), Declare(rem, flat - q * inner),
            Declare(mid, _div(rem, last)), Declare(lo, rem - mid * last)], (q, mid, lo)


def _group(groups, total):
    """The per-group extent of a channel count."""
    return total if groups == 1 else _div(total, groups)


def conv_fwd_tiled(name, dtype, stride, dilation, groups, flip, ksize, bias_ndim=None,
                   epilogue=(), tiles=None):
    from engine.lowering.nn_util import apply_chain
    x, w, o = BufferParam("x", dtype, 4), BufferParam("w", dtype, 4), BufferParam("out", dtype, 4)
    bias = BufferParam("bias", dtype, bias_ndim) if bias_ndim is not None else None
    kh, kw = _ks(w, ksize)
    (sh, sw), (dh, dw) = stride, dilation
    fg, cg, g = _group(groups, w.dim(0)), w.dim(1), Var("g")
    KK, OH, OW, OHW = _taps(kh, kw), o.dim(2), o.dim(3), Var("OHW")

    def load_a(m, k, tag):
        d, (c, u, v) = _split3(k, KK, kw, (f"{tag}c", f"{tag}r", f"{tag}u", f"{tag}v"))
        return d, w[g * fg + m, c, _flip(u, kh, flip), _flip(v, kw, flip)]

    def b_cols(col, tag):
        return _split3(col, OHW, OW, (f"{tag}n", f"{tag}q", f"{tag}a", f"{tag}b"))

    def load_b_at(k, nab, tag):
        dk, (c, u, v) = _split3(k, KK, kw, (f"{tag}c", f"{tag}r", f"{tag}u", f"{tag}v"))
        n, a, b = nab
        return dk, x[n, g * cg + c, a * sh + u * dh, b * sw + v * dw]

    def store_at(m, nab, acc, tag):
        (n, a, b), f = nab, Var(f"{tag}f")
        val = acc
        if bias is not None:
            val = val + bias[(n, f, a, b)[4 - bias.ndim:]]
        return [Declare(f, g * fg + m), o.store((n, f, a, b), apply_chain(epilogue, val))]

    spec = GemmSpec(dtype, fg, o.dim(0) * OHW, load_a, None, None, k_stop=cg * KK,
                    b_cols=b_cols, load_b_at=load_b_at, store_at=store_at,
                    nz=Const(groups), decls=lambda bz: [Declare(g, bz)],
                    prelude=[Declare(OHW, OH * OW)])
    params = (x, w) + ((bias,) if bias is not None else ()) + (o,)
    return ir.Kernel(name, params, tuple(tiled_gemm(spec, tiles or Tiles())))


def conv_grad_input_tiled(name, dtype, dilation, groups, flip, ksize, tiles=None):
    gy, w, gx = BufferParam("gy", dtype, 4), BufferParam("w", dtype, 4), BufferParam("gx", dtype, 4)
    kh, kw = _ks(w, ksize)
    dh, dw = dilation
    fg, cg, g = _group(groups, w.dim(0)), w.dim(1), Var("g")
    KK, W_, HW = _taps(kh, kw), gx.dim(3), Var("HW")

    def load_a(m, k, tag):   # the transposed, flipped filters: A[c, (r, u, v)]
        d, (r, u, v) = _split3(k, KK, kw, (f"{tag}r", f"{tag}s", f"{tag}u", f"{tag}v"))
        return d, w[g * fg + r, m, _flip(u, kh, not flip), _flip(v, kw, not flip)]

    def b_cols(col, tag):
        return _split3(col, HW, W_, (f"{tag}n", f"{tag}q", f"{tag}a", f"{tag}b"))

    def load_b_at(k, nab, tag):
        dk, (r, u, v) = _split3(k, KK, kw, (f"{tag}r", f"{tag}s", f"{tag}u", f"{tag}v"))
        n, a, b = nab
        return dk, gy[n, g * fg + r, a + u * dh, b + v * dw]

    def store_at(m, nab, acc, tag):
        n, a, b = nab
        return [gx.store((n, g * cg + m, a, b), acc)]

    spec = GemmSpec(dtype, cg, gx.dim(0) * HW, load_a, None, None, k_stop=fg * KK,
                    b_cols=b_cols, load_b_at=load_b_at, store_at=store_at,
                    nz=Const(groups), decls=lambda bz: [Declare(g, bz)],
                    prelude=[Declare(HW, gx.dim(2) * W_)])
    return ir.Kernel(name, (gy, w, gx), tuple(tiled_gemm(spec, tiles or Tiles())))


def conv_grad_weight_tiled(name, dtype, stride, dilation, groups, flip, ksize, tiles=None):
    """Pass 1 of the weight gradient: per split-K part s, ``part[s] = GY_s @ X_s``."""
    x, gy = BufferParam("x", dtype, 4), BufferParam("gy", dtype, 4)
    part = BufferParam("part", dtype, 5)
    kh = Const(ksize[0]) if isinstance(ksize[0], int) else part.dim(3)
    kw = Const(ksize[1]) if isinstance(ksize[1], int) else part.dim(4)
    (sh, sw), (dh, dw) = stride, dilation
    fg, cg = _group(groups, part.dim(1)), part.dim(2)
    g, s, S = Var("g"), Var("s"), Var("S")
    KK, OW, OHW, chunk = _taps(kh, kw), gy.dim(3), Var("OHW"), Var("chunk")

    def load_a(m, k, tag):
        d, (n, i, j) = _split3(k, OHW, OW, (f"{tag}n", f"{tag}q", f"{tag}i", f"{tag}j"))
        return d, gy[n, g * fg + m, i, j]

    def load_b(k, col, tag):
        dk, (n, i, j) = _split3(k, OHW, OW, (f"{tag}n", f"{tag}q", f"{tag}i", f"{tag}j"))
        dc, (c, u, v) = _split3(col, KK, kw, (f"{tag}c", f"{tag}r", f"{tag}u", f"{tag}v"))
        return dk + dc, x[n, g * cg + c, i * sh + u * dh, j * sw + v * dw]

    def store(m, col, acc, tag):
        d, (c, u, v) = _split3(col, KK, kw, (f"{tag}c", f"{tag}r", f"{tag}u", f"{tag}v"))
        return d + [part.store((s, g * fg + m, c, _flip(u, kh, flip), _flip(v, kw, flip)), acc)]

    bk = (tiles or Tiles()).bk
    k_total = gy.dim(0) * OHW
    spec = GemmSpec(dtype, fg, cg * KK, load_a, load_b, store,
                    k_start=s * chunk, k_stop=ir.minimum(k_total, s * chunk + chunk),
                    nz=Const(groups) * S,
                    decls=lambda bz: [Declare(g, _div(bz, S)), Declare(s, bz - g * S)],
                    a_k_fastest=True, b_n_fastest=False,
                    prelude=[Declare(OHW, gy.dim(2) * OW),
                             Declare(S, part.dim(0)),
                             # a multiple of the K tile per part
                             Declare(chunk, _div(_div(k_total + S - 1, S) + (bk - 1), bk) * bk)])
    return ir.Kernel(name, (x, gy, part), tuple(tiled_gemm(spec, tiles or Tiles())))


def sum_parts_kernel(name, dtype):
    """Pass 2 of the weight gradient: ``gw = sum_s part[s]``, s in order (deterministic)."""
    part, gw = BufferParam("part", dtype, 5), BufferParam("gw", dtype, 4)
    f, c, u, v, s, acc = Var("f"), Var("c"), Var("u"), Var("v"), Var("s"), Var("acc", dtype)
    body = [Declare(acc, Const(0.0, dtype)),
            ir.Loop(s, 0, part.dim(0), [ir.Assign(acc, acc + part[s, f, c, u, v])]),
            gw.store((f, c, u, v), acc)]
    nest = ir.Loop(f, 0, gw.dim(0), ir.Loop(c, 0, gw.dim(1), ir.Loop(
        u, 0, gw.dim(2), ir.Loop(v, 0, gw.dim(3), body))), "parallel")
    return ir.Kernel(name, (part, gw), (nest,))
