"""conv2d's weight gradient for few rows (C*KH*KW small: LeNet's first layer, 1 x 5 x 5) as
dot products along output rows, vectorized over output columns:

    gw[f, c, u, v] = sum over (n, i, j) of gy[n, f, i, j] * x[n, c, i + u, j + v]

For a row i of image n, a tile of FB filters and the KW taps (c, u, 0..KW-1) loads FB vectors of
gy and KW (shifted) vectors of x and does FB*KW multiply-adds (4 x 5: 9 loads for 20 FMAs,
where the direct kernel, all 25 taps of one filter, loads 26 for 25 and is load-bound). The
accumulators stay vectors (lanes are summed once, at the end). The GEMM formulation
(conv_gemm.py) would pad F = 20 to 32 lanes and 25 rows to 32, and transpose gy.

The threads split the reduction: each owns a range of images and adds into its own partial
``part[u]`` (F*C*KH*KW vectors); per image every tile runs over that image's gy and x, which
stay in L1/L2 (LeNet: 46 KB + 3 KB), so gy is read from memory once. A row of OW columns is
covered by whole vectors plus one last vector ending at OW whose already-summed lanes are
masked to 0 (needs OW >= lanes). Stride 1, dilation 1, ungrouped (``rows_kernel_applies``).

Steps: part = this kernel (x zero padded, gy); gw = sum of the partials over threads and lanes
(``sum_rows_partials_kernel``).
"""

from __future__ import annotations

from engine import kernel_ir as ir
from engine.kernel_ir import FMA, Assign, Broadcast, BufferParam, Const, Declare, If, Loop, Var
from engine.lowering.nn_util import cdiv, fdiv, freeze, iadd, imin, imul, isub

#: filters per tile (FB x KW vector accumulators: 20 for KW = 5)
FB = 4
#: the widest filter row a tile takes (FB x KW <= 24 of the 32 AVX-512 vector registers)
MAX_KW = 6


def rows_kernel_applies(groups, stride, dilation, wshape, width, lanes) -> bool:
    """Static filter shape with KW <= MAX_KW, unit stride and dilation, ungrouped, and a
    static output width of at least one vector."""
    if groups != 1 or tuple(stride) != (1, 1) or tuple(dilation) != (1, 1) or len(wshape) != 4:
        return False
    if not all(isinstance(d, int) for d in wshape) or not isinstance(width, int):
        return False
    return lanes > 1 and wshape[3] <= MAX_KW and width >= lanes


def rows_kernel_name(dtype, filter_flip, ksize, lanes, width):
    return (f"conv2d_bwd_weight_rows_k{ksize[0]}x{ksize[1]}_w{width}{'_flip' if filter_flip else ''}"
            f"_{FB}x{ksize[1]}x{lanes}_{ir.dtype_name(dtype)}")


def rows_kernel(dtype, ksize, lanes, width, filter_flip=False, name=None):
    """Params (x (N, C, H, W) zero padded, gy (N, F, OH, OW = width), part (U, F*C*KH*KW,
    lanes)); ``width`` >= lanes, static."""
    dtype = ir.dtype_name(dtype)
    KH, KW = ksize
    L = lanes
    x, gy, part = BufferParam("x", dtype, 4), BufferParam("gy", dtype, 4), BufferParam("part", dtype, 3)
    F, C, OH, U, u, na, nb, n, fb, c, uu, i = (Var(s) for s in "F C OH U u na nb n fb c uu i".split())
    N = x.dim(0)
    zero = Const(0.0, dtype)
    fk = [Var(f"f{k}") for k in range(FB)]            # the tile's filters, clamped to F - 1
    acc = [[Var(f"acc{k}_{v}", dtype, L) for v in range(KW)] for k in range(FB)]

    def update(j, gload, tag):
        g = [Var(f"g{tag}_{k}", dtype, L) for k in range(FB)]
        body = [Declare(g[k], gload(fk[k], j)) for k in range(FB)]
        for v in range(KW):
            xv = Var(f"x{tag}_{v}", dtype, L)
            body.append(Declare(xv, x.load((n, c, iadd(i, uu), iadd(j, v)), L)))
            body += [Assign(acc[k][v], FMA(g[k], xv, acc[k][v])) for k in range(FB)]
        return body

    def plain(f, j):
        return gy.load((n, f, i, j), L)

    # the last vector ends at OW; its lanes below ``full`` were summed by the whole vectors
    full = width // L * L
    keep = ir.ge(ir.Ramp(Const(width - L), 1, L), Broadcast(Const(full), L))

    def masked(f, j):
        return ir.Select(keep, gy.load((n, f, i, j), L), Broadcast(zero, L))

    def slot(k, v):
        """part's row of (filter fk[k], channel c, tap (uu, v)) (the flipped tap with filter_flip)."""
        a, b = (isub(KH - 1, uu), KW - 1 - v) if filter_flip else (uu, v)
        return iadd(imul(iadd(imul(iadd(imul(fk[k], C), c), KH), a), KW), b)

    # the row's vectors at constant columns (OW is static): straight-line code per row, where
    # a loop over one or two vectors cost as much as its FMAs; a "vectorize" loop is versioned
    # once on the unit last strides of x and gy
    row = [s for t, j0 in enumerate(range(0, full, L)) for s in update(Const(j0), plain, t)]
    if full < width:
        row += update(Const(width - L), masked, "t")
    rows = Loop(i, 0, OH, row, kind="vectorize")
    load = [Declare(acc[k][v], part.load((u, slot(k, v), 0), L)) for k in range(FB) for v in range(KW)]
    # a clamped filter (past F) computes a duplicate that is not stored
    store = [If(ir.lt(iadd(imul(fb, FB), k), F), [part.store((u, slot(k, v), 0), acc[k][v]) for v in range(KW)])
             for k in range(FB)]
    tile = Loop(uu, 0, KH, load + [rows] + store)
    per_image = Loop(fb, 0, cdiv(F, FB), [
        Declare(fk[k], imin(iadd(imul(fb, FB), k), isub(F, 1))) for k in range(FB)] + [Loop(c, 0, C, [tile])])
    z, zl = Var("z"), Var("zl")
    unit = [Declare(na, fdiv(imul(u, N), U)), Declare(nb, fdiv(imul(iadd(u, 1), N), U)),
            Loop(z, 0, part.dim(1), [Loop(zl, 0, L, [part.store((u, z, zl), zero)])]),
            Loop(n, na, nb, [per_image])]
    body = [Declare(F, gy.dim(1)), Declare(C, x.dim(1)), Declare(OH, gy.dim(2)), Declare(U, part.dim(0)),
            Loop(u, 0, U, unit, kind="parallel")]
    return freeze(ir.Kernel(name or rows_kernel_name(dtype, filter_flip, ksize, L, width), (x, gy, part), body))


def sum_rows_partials_name(dtype):
    return f"conv2d_bwd_weight_rows_sum_{ir.dtype_name(dtype)}"


def sum_rows_partials_kernel(dtype, name=None):
    """gw_flat[r] = sum over (u, lane) of part[u, r, lane]. Params (part (U, R, L), gw (R,))."""
    dtype = ir.dtype_name(dtype)
    part, gw = BufferParam("part", dtype, 3), BufferParam("gw", dtype, 1)
    r, u, lane, s = Var("r"), Var("u"), Var("lane"), Var("s", dtype)
    body = [Loop(r, 0, gw.dim(0), [
        Declare(s, Const(0.0, dtype)),
        Loop(u, 0, part.dim(0), [Loop(lane, 0, part.dim(2), [Assign(s, s + part[u, r, lane])])]),
        gw.store((r,), s)])]
    return freeze(ir.Kernel(name or sum_rows_partials_name(dtype), (part, gw), body))
