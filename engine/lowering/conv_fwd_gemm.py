"""conv2d's forward pass as an implicit GEMM: no im2col buffer, the input read in place.

    out[n, f, i, j] = sum over k = (c, u, v) of wq[k, f] * x[n, c, i*sh + u*dh, j*sw + v*dw]

is a GEMM of F filters, K = C*KH*KW and N*OH*OW output positions. Its im2col operand is never
built: the micro-kernels read x where it lies. The filters are packed once per call
(``pack_filters_kernel``) as ``wq[k, f] = w[min(f, F-1), c, u', v']`` ((u', v') the tap,
flipped with ``filter_flip``; F padded with copies of the last filter up to ``padded_filters``
columns, so that no micro-kernel branches: padding columns compute values never stored, or
stored twice). Two tilings, picked per launch (``fwd_gemm_kernel``):

* **by columns** (the output transposed to filters x positions): an MR x NV tile is MR filters
  (broadcasts of wq[k, f]) times NV *slots*, a slot being L consecutive output columns j of
  one output row (n, i), whose im2col column is a plain vector load of x at
  (n, c, i*sh + u*dh, j + v*dw) (stride 1 along the width only). The tile is stored as whole
  vectors straight into NCHW. A row is cut into ``cdiv(OW, L)`` slots, the last one shifted
  back to end at OW (recomputing a few columns: stores are pure, overlapping is harmless);
  so the useful fraction of the work is OW / (cdiv(OW, L) * L).
* **by positions** (the usual orientation, positions x filters, as the weight gradient's GEMM
  in conv_gemm.py): an MR x NV tile is MR output positions (broadcasts of x) times NV vectors
  of filters (vector loads of wq rows). Any stride; the useful fraction is
  F / (cdiv(F, NR) * NR). The tile goes through a small per-thread buffer and is scattered
  into NCHW one element at a time (cheap next to the K multiply-adds of each element).

Rows of narrow outputs (LeNet layer 2: 8 columns, half a float32 AVX-512 vector) waste most
of a column tile and run by positions; wide rows (the 28 columns of the benchmark's 5x5 conv
of 32x32 images) run by columns. ``by_columns_expr`` compares the two fractions at run time
when the width or the filter count is not static.

Both: a parallel loop over contiguous ranges of tiles (each thread owns its outputs), per tile
the index arithmetic once, then per filter tile / panel MR x NV vector accumulators over
(c, u, v) in a ``vectorize`` loop (the renderer versions it on unit strides: plain vector
loads inside), bias (scalar, or a vector when it varies along the width) and epilogue
activations applied on the store.
"""

from __future__ import annotations

from dataclasses import dataclass

from engine import kernel_ir as ir
from engine.kernel_ir import FMA, Assign, Broadcast, BufferParam, Const, Declare, If, Loop, Var
from engine.lowering.nn_util import apply_chain, cdiv, fdiv, freeze, iadd, imax, imin, imod, imul, isub, land

#: multiply-adds below which the kernel runs on one thread (~7 us of work)
SERIAL_WORK = 1 << 20


@dataclass(frozen=True)
class FwdTiles:
    """The tile shapes of both tilings for one dtype / filter count."""

    lanes: int     # L: elements per vector
    col_mr: int    # by columns: filters per tile
    col_nv: int    # by columns: slots (vectors of output columns) per tile
    pos_mr: int    # by positions: output positions per tile
    pos_nv: int    # by positions: vectors of filters per tile

    @property
    def pos_nr(self) -> int:
        return self.pos_nv * self.lanes


def fwd_tiles(dtype, nfilters=None) -> FwdTiles:
    """Accumulators within 24 of the 32 AVX-512 vector registers (12 of 16 with AVX2). By
    columns, MR divides a static F when a divisor in 8..4 exists (LeNet: 20 and 50 filters
    -> 5; 64 -> 8) and NV fills the rest; by positions, the weight gradient's tiles
    (conv_gemm.tile_shape: NV vectors cover F up to 4 of them, MR rows the rest)."""
    from engine.lowering import conv_gemm
    from engine.lowering.gemm import target_vector_info
    _, regs = target_vector_info()
    budget = 24 if regs >= 32 else 12
    mr = 8 if budget >= 24 else 4
    if isinstance(nfilters, int):
        mr = min(mr, max(nfilters, 1))
        mr = next((d for d in range(mr, 3, -1) if nfilters % d == 0), mr)
    lanes, pmr, pnv = conv_gemm.tile_shape(dtype, nfilters)
    return FwdTiles(lanes, mr, max(1, budget // mr), pmr, pnv)


def padded_filters(f: int, tiles: FwdTiles) -> int:
    """Columns of wq: F rounded up to whole MR-filter tiles (by columns), then to whole
    NR-filter panels (by positions)."""
    f = -(-f // tiles.col_mr) * tiles.col_mr
    return -(-f // tiles.pos_nr) * tiles.pos_nr


#: the by-positions tiling's scatter of one output element into NCHW, in vector
#: multiply-adds (measured: 64x3x32x32 * 64x3x5x5 by positions 4.4 ms, by columns 3.3 ms on
#: one thread, where the columns waste 4 of 32 lanes and the filters none)
SCATTER = 5 / 2


def by_columns(width, nfilters, depth, tiles: FwdTiles) -> bool | None:
    """``by_columns_expr`` for a static output width, filter count and depth C*KH*KW (None:
    the launch decides; False already when the width is static and below one vector)."""
    if isinstance(width, int) and width < tiles.lanes:
        return False
    if not all(isinstance(d, int) for d in (width, nfilters, depth)):
        return None
    return bool(by_columns_expr(Const(width), Const(nfilters), Const(depth), tiles).value)


def by_columns_expr(ow, f, k, tiles: FwdTiles):
    """Whether the by-columns tiling is the cheaper: rows of at least L columns, and per
    output element, in vector multiply-adds, K * cols / (OW * L) <= K * Fp / (F * L) + SCATTER
    (cols = cdiv(OW, L) * L, Fp = cdiv(F, NR) * NR), in integers."""
    L, NR = tiles.lanes, tiles.pos_nr
    num, den = SCATTER.as_integer_ratio()
    if all(isinstance(e, Const) for e in (ow, f, k)):
        ow, f, k = ow.value, f.value, k.value
        if ow < L:
            return Const(False, "bool")
        cols, fp = -(-ow // L) * L, -(-f // NR) * NR
        return Const(den * k * cols * f <= den * k * fp * ow + num * L * ow * f, "bool")
    cols, fp = imul(cdiv(ow, L), L), imul(cdiv(f, NR), NR)
    lhs = imul(imul(imul(den, k), cols), f)
    rhs = iadd(imul(imul(imul(den, k), fp), ow), imul(imul(num * L, ow), f))
    return land(ir.ge(ow, L), ir.le(lhs, rhs))


def pack_filters_name(dtype, filter_flip):
    return f"conv2d_pack_filters{'_flip' if filter_flip else ''}_{ir.dtype_name(dtype)}"


def pack_filters_kernel(dtype, filter_flip=False, name=None) -> ir.Kernel:
    """wq[(c*KH + u)*KW + v, f] = w[min(f, F-1), c, u', v'] (u' = u, or KH-1-u with
    ``filter_flip``; same for v). Params (w (F, C, KH, KW), wq (C*KH*KW, Fp))."""
    dtype = ir.dtype_name(dtype)
    w, wq = BufferParam("w", dtype, 4), BufferParam("wq", dtype, 2)
    c, u, v, f, k = (Var(s) for s in ("c", "u", "v", "f", "k"))
    kh, kw = w.dim(2), w.dim(3)
    uu = isub(isub(kh, 1), u) if filter_flip else u
    vv = isub(isub(kw, 1), v) if filter_flip else v
    body = [Loop(u, 0, kh, [Loop(v, 0, kw, [
        Declare(k, iadd(imul(iadd(imul(c, kh), u), kw), v)),
        Loop(f, 0, wq.dim(1), [wq.store((k, f), w[imin(f, isub(w.dim(0), 1)), c, uu, vv])])])])]
    loop = Loop(c, 0, w.dim(1), body, kind="parallel")
    return freeze(ir.Kernel(name or pack_filters_name(dtype, filter_flip), (w, wq), [loop]))


def fwd_gemm_name(dtype, stride, dilation, tiles, columns, bias=False, epilogue=()):
    tail = ("_bias" if bias else "") + "".join(f"_{e}" for e in epilogue)
    parts = []
    if columns is not False:
        parts.append(f"c{tiles.col_mr}x{tiles.col_nv}")
    if columns is not True:
        parts.append(f"p{tiles.pos_mr}x{tiles.pos_nr}")
    return (f"conv2d_fwd_gemm_s{stride[0]}x{stride[1]}_d{dilation[0]}x{dilation[1]}_"
            f"{'_'.join(parts)}{tail}_{ir.dtype_name(dtype)}")


def fwd_gemm_kernel(dtype, stride=(1, 1), dilation=(1, 1), tiles=None, columns=None, bias_ndim=None,
                    bias_bcast=None, epilogue=(), name=None) -> ir.Kernel:
    """The implicit GEMM of an already zero-padded input ("valid"). Params (x (N, C, H, W),
    wq (C*KH*KW, Fp), [bias], out (N, F, OH, OW), kh, kw, nthreads). ``tiles``: default
    ``fwd_tiles(dtype)``; ``columns``: True / False builds one tiling, None both (picked per
    launch by ``by_columns_expr``); the by-columns tiling needs ``stride[1] == 1``.
    ``bias_ndim`` / ``bias_bcast`` as ``nn_conv.conv2d_fwd``'s."""
    dtype = ir.dtype_name(dtype)
    tiles = tiles or fwd_tiles(dtype)
    if stride[1] != 1:
        columns = False
    x, wq, out = BufferParam("x", dtype, 4), BufferParam("wq", dtype, 2), BufferParam("out", dtype, 4)
    bias = None if bias_ndim is None else BufferParam("bias", dtype, bias_ndim)
    # the kernel size is a run-time argument even when static: constant tap loops would be
    # unrolled (25 copies of the micro-kernel step for 5x5), which measured 1.5x slower
    kh, kw, nthreads = (ir.ScalarParam(s, "int64") for s in ("kh", "kw", "nthreads"))
    g = _Geometry(x, wq, out, bias, bias_bcast, kh, kw, stride, dilation, epilogue, dtype)
    N, OH, OW, F = x.dim(0), out.dim(2), out.dim(3), out.dim(1)
    work = imul(imul(F, wq.dim(0)), imul(imul(N, OH), OW))
    g.threads = ir.select(ir.lt(work, SERIAL_WORK), Const(1), imax(nthreads, 1))
    if columns is True:
        body = _by_columns(g, tiles)
    elif columns is False:
        body = _by_positions(g, tiles)
    else:
        body = [If(by_columns_expr(OW, F, wq.dim(0), tiles), _by_columns(g, tiles), _by_positions(g, tiles))]
    params = (x, wq) + ((bias,) if bias is not None else ()) + (out,)
    params += (kh, kw, nthreads)
    name = name or fwd_gemm_name(dtype, stride, dilation, tiles, columns, bias is not None, epilogue)
    return freeze(ir.Kernel(name, params, body))


@dataclass
class _Geometry:
    """What both tilings read: the buffers, kernel size, props and epilogue."""

    x: BufferParam
    wq: BufferParam
    out: BufferParam
    bias: BufferParam | None
    bias_bcast: tuple | None
    kh: ir.Expr
    kw: ir.Expr
    stride: tuple
    dilation: tuple
    epilogue: tuple
    dtype: str
    threads: ir.Expr | None = None

    def result(self, acc, idx, lanes):
        """The stored value of accumulator ``acc`` at output index ``idx``."""
        if self.bias is not None:
            acc = acc + _bias_term(self.bias, self.bias_bcast, idx, lanes)
        return apply_chain(self.epilogue, acc)

    def units(self, ntiles, names, tile_body, scratch=()):
        """Parallel over min(threads, ntiles) contiguous ranges of tiles; ``tile_body(t)``;
        ``scratch``: local buffers, allocated per thread."""
        T, units, u, t0, t1, t = names
        unit = [ir.Alloc(b) for b in scratch] + [
                Declare(t0, fdiv(imul(u, ntiles), units)),
                Declare(t1, fdiv(imul(iadd(u, 1), ntiles), units)),
                Loop(t, t0, t1, tile_body(t))]
        return [Declare(T, self.threads), Declare(units, imin(T, ntiles)),
                Loop(u, 0, units, unit, kind="parallel")]


def _names(sfx, text):
    return [Var(s + sfx) for s in text.split()]


def _by_columns(g: _Geometry, tiles: FwdTiles):
    """Filters x slots of L output columns (see the module docstring)."""
    L, MR, NV = tiles.lanes, tiles.col_mr, tiles.col_nv
    x, wq, out = g.x, g.wq, g.out
    sh, dh, dw = g.stride[0], g.dilation[0], g.dilation[1]
    N, C, F, OH, OW = x.dim(0), x.dim(1), out.dim(1), out.dim(2), out.dim(3)
    VPR, S, ST, FT, ft, f0, c, uu, k0, v = _names("_c", "VPR S ST FT ft f0 c uu k0 v")
    slot_n, slot_i, slot_j, slot_h, row_h = ([Var(f"{p}{w}_c") for w in range(NV)]
                                             for p in ("sn", "si", "sj", "sh", "rh"))
    filt = [Var(f"fq{q}_c") for q in range(MR)]
    acc = [[Var(f"acc{q}_{w}_c", g.dtype, L) for w in range(NV)] for q in range(MR)]
    per_image = imul(OH, VPR)

    def tile(st):
        # the slots of tile st: (image, output row, first column), the last tile's clamped
        slots = []
        for w in range(NV):
            s, r = Var(f"s{w}_c"), Var(f"r{w}_c")
            slots += [Declare(s, imin(iadd(imul(st, NV), w), isub(S, 1))),
                      Declare(slot_n[w], fdiv(s, per_image)), Declare(r, imod(s, per_image)),
                      Declare(slot_i[w], fdiv(r, VPR)),
                      Declare(slot_j[w], imin(imul(imod(r, VPR), L), isub(OW, L))),
                      Declare(row_h[w], imul(slot_i[w], sh))]
        # one k = (c, u, v): NV loads of x, MR broadcasts of wq, MR x NV FMAs
        xs = [Var(f"x{w}_c", g.dtype, L) for w in range(NV)]
        step = [Declare(xs[w], x.load((slot_n[w], c, slot_h[w], iadd(slot_j[w], imul(v, dw))), L))
                for w in range(NV)]
        for q in range(MR):
            aq = Var(f"a{q}_c", g.dtype, L)
            step.append(Declare(aq, Broadcast(wq[iadd(k0, v), iadd(f0, q)], L)))
            step += [Assign(acc[q][w], FMA(aq, xs[w], acc[q][w])) for w in range(NV)]
        tap_row = [Declare(k0, imul(iadd(imul(c, g.kh), uu), g.kw))]
        tap_row += [Declare(slot_h[w], iadd(row_h[w], imul(uu, dh))) for w in range(NV)]
        # a "vectorize" loop: the renderer versions it on x's unit last stride (plain vector
        # loads inside); the CPU scheduler leaves it and the loops inside alone
        reduce_ = Loop(c, 0, C, [Loop(uu, 0, g.kh, tap_row + [Loop(v, 0, g.kw, step)])],
                       kind="vectorize")
        store = [Declare(f0, imul(ft, MR))]
        store += [Declare(filt[q], imin(iadd(f0, q), isub(F, 1))) for q in range(MR)]
        store += [Declare(a, Broadcast(Const(0.0, g.dtype), L)) for row in acc for a in row]
        store.append(reduce_)
        for q in range(MR):
            for w in range(NV):
                idx = (slot_n[w], filt[q], slot_i[w], slot_j[w])
                store.append(out.store(idx, g.result(acc[q][w], idx, L)))
        return slots + [Loop(ft, 0, FT, store)]
    return ([Declare(VPR, cdiv(OW, L)), Declare(S, imul(N, per_image)), Declare(ST, cdiv(S, NV)),
             Declare(FT, cdiv(F, MR))] + g.units(ST, _names("_c", "T units u t0 t1 st"), tile))


def _by_positions(g: _Geometry, tiles: FwdTiles):
    """Output positions x vectors of filters (see the module docstring)."""
    L, MR, NV, NR = tiles.lanes, tiles.pos_mr, tiles.pos_nv, tiles.pos_nr
    x, wq, out = g.x, g.wq, g.out
    (sh, sw), (dh, dw) = g.stride, g.dilation
    N, C, F, OH, OW = x.dim(0), x.dim(1), out.dim(1), out.dim(2), out.dim(3)
    P, PI, NT, npan, jp, col, ncol, c, uu, k0, v, fi = _names(
        "_p", "P PI NT npan jp col ncol c uu k0 v fi")
    pn, pi, pj, ph, pw, hh = ([Var(f"{s}{q}_p") for q in range(MR)] for s in ("pn", "pi", "pj", "ph", "pw", "hh"))
    acc = [[Var(f"acc{q}_{w}_p", g.dtype, L) for w in range(NV)] for q in range(MR)]
    ct = ir.LocalBuffer("ct_p", g.dtype, (MR, NR))

    def tile(t):
        rows = []
        for q in range(MR):
            p, r = Var(f"p{q}_p"), Var(f"r{q}_p")
            rows += [Declare(p, imin(iadd(imul(t, MR), q), isub(P, 1))),
                     Declare(pn[q], fdiv(p, PI)), Declare(r, imod(p, PI)),
                     Declare(pi[q], fdiv(r, OW)), Declare(pj[q], imod(r, OW)),
                     Declare(ph[q], imul(pi[q], sh)), Declare(pw[q], imul(pj[q], sw))]
        # one k = (c, u, v): NV vector loads of a wq row, MR broadcasts of x, MR x NV FMAs
        bs = [Var(f"b{w}_p", g.dtype, L) for w in range(NV)]
        step = [Declare(bs[w], wq.load((iadd(k0, v), iadd(col, w * L)), L)) for w in range(NV)]
        for q in range(MR):
            aq = Var(f"a{q}_p", g.dtype, L)
            step.append(Declare(aq, Broadcast(x[pn[q], c, hh[q], iadd(pw[q], imul(v, dw))], L)))
            step += [Assign(acc[q][w], FMA(aq, bs[w], acc[q][w])) for w in range(NV)]
        tap_row = [Declare(k0, imul(iadd(imul(c, g.kh), uu), g.kw))]
        tap_row += [Declare(hh[q], iadd(ph[q], imul(uu, dh))) for q in range(MR)]
        # "vectorize": versioned on wq's unit last stride (plain vector loads inside)
        reduce_ = Loop(c, 0, C, [Loop(uu, 0, g.kh, tap_row + [Loop(v, 0, g.kw, step)])],
                       kind="vectorize")
        panel = [Declare(col, imul(jp, NR)), Declare(ncol, imin(NR, isub(F, col)))]
        panel += [Declare(a, Broadcast(Const(0.0, g.dtype), L)) for row in acc for a in row]
        panel.append(reduce_)
        panel += [ct.store((q, w * L), acc[q][w]) for q in range(MR) for w in range(NV)]
        for q in range(MR):   # the scatter into NCHW: F elements per position, stride OH*OW
            idx = (pn[q], iadd(col, fi), pi[q], pj[q])
            panel.append(Loop(fi, 0, ncol, [out.store(idx, g.result(ct[q, fi], idx, 1))]))
        return rows + [Loop(jp, 0, npan, panel)]
    return ([Declare(PI, imul(OH, OW)), Declare(P, imul(N, PI)), Declare(NT, cdiv(P, MR)),
             Declare(npan, cdiv(F, NR))] + g.units(NT, _names("_p", "T units u t0 t1 t"), tile, [ct]))


def _bias_term(bias, bcast, idx, L):
    """The bias at output (n, f, i, j..j+L) as an L-lane value: numpy broadcasting from the
    right; a dim of static size 1 reads index 0; a bias constant along the width (ndim < 1 or
    a broadcast last dim) is one broadcast load, else a vector load along it."""
    bcast = tuple(bcast) if bcast else (False,) * bias.ndim
    index = tuple(Const(0) if z else i for i, z in zip(idx[4 - bias.ndim:], bcast))
    if L == 1:
        return bias[index]
    if bias.ndim == 0 or bcast[-1]:
        return Broadcast(bias[index], L)
    return bias.load(index, L)
