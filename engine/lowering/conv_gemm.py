"""conv2d's weight gradient as an implicit GEMM: no im2col buffer, the input read in place.

    gw^T[(c, u, v), f] = sum over (n, i, j) of x[n, c, i*sh + u*dh, j*sw + v*dw] * gy[n, f, i, j]

is a GEMM of M = C*KH*KW rows, F columns and a reduction of K = N*OH*OW. Its "A" operand (the
im2col matrix) is never built: the micro-kernel broadcasts its elements straight from x (row
(c, u, v) is a fixed offset into an image, column (n, i, j) a position). Its "B" operand is gy
transposed to rows of F (zero padded to whole micro-tiles), read with vector loads.

The threads split the reduction: each owns a contiguous range of images and sums all of gw^T
over them into its own partial ``gwp[u]`` (M x Fp); a last small kernel adds the partials and
writes gw. So each thread transposes only its own images, a block of output rows at a time
(``block_rows``: about 32 KB of transposed positions), into its own L1-resident buffer
``buf[u]``, right before its tiles run over that block: gy is read from memory once and the
transposed copy never goes to memory (a whole transposed gy written and read back cost 25 MB
of traffic for the 64x3x32x32 benchmark, a third of its time). Splitting rows instead would
have every thread transpose every image, and a C = 3 conv has only 75 rows (13 tiles).

Steps (``_grad_weight_gemm`` in engine/lowering/nn.py):

    gwp = implicit GEMM(x, gy)           # (U, C*KH*KW, Fp), U = threads used
    gw  = sum over u of gwp[u, :, :F]^T  # into (F, C, KH, KW)

The GEMM kernel (``grad_weight_gemm_kernel``): a parallel loop over the U image ranges; per
block the transpose (``transpose_block``: L x L squares in registers), then per MR-row tile
and NR-column panel MR x NV vector accumulators over the block's positions, added to gwp[u].
Edge rows compute on a clamped row and are not stored. With ``filter_flip`` the row (c, u, v)
of gw reads the tap (KH-1-u, KW-1-v).
"""

from __future__ import annotations

from engine import kernel_ir as ir
from engine.kernel_ir import FMA, Assign, Broadcast, BufferParam, Const, Declare, If, Loop, Var
from engine.lowering.nn_util import cdiv, fdiv, freeze, iadd, imax, imin, imod, imul, isub

#: floats of the transposed block of gy the tiles share (32 KB of a 48 KB L1d)
L1_FLOATS = 8192
#: multiply-adds below which the kernel runs on one thread (~7 us of work)
SERIAL_WORK = 1 << 20


def tile_shape(dtype, nfilters=None):
    """(lanes, MR, NV) for F = ``nfilters`` (None: not static): NV vectors cover F when it
    fits 4 (LeNet: F = 50 -> 4 x 16 lanes), MR rows use the rest of the accumulator budget
    (24 of 32 AVX-512 registers; 12 of 16 with AVX2)."""
    from engine.lowering.gemm import target_vector_info
    bits, regs = target_vector_info()
    lanes = max(1, bits // (ir.itemsize(dtype) * 8))
    budget = 24 if regs >= 32 else 12
    nv = 4 if not isinstance(nfilters, int) else max(1, min(4, -(-nfilters // lanes)))
    nv = min(nv, budget // 2)
    return lanes, min(8, budget // nv), nv


def padded_filters(f, lanes, nv):
    """F rounded up to whole NR = nv * lanes column panels."""
    nr = lanes * nv
    return -(-f // nr) * nr


def block_rows(oh, ow, fp):
    """Output rows of one block: their transposed positions (rows of buf, Fp wide) fill about
    L1_FLOATS, at least one row. The block stays in L1 while every tile runs over it: from L2
    (a whole 28x28 image is 200 KB at Fp = 64) the tiles' vector loads ran at half speed."""
    return max(1, min(oh, L1_FLOATS // max(fp, 1) // max(ow, 1)))


def transpose_block(gy, buf, u, n, p0, count, F, L):
    """buf[u, p, f] = gy[n, f, p0 + p] for p < count, f < F: L x L squares transposed in
    registers (L vector loads along positions, log2(L) rounds of two-vector shuffles, L vector
    stores along filters: about a quarter of a shuffle per element, where a scalar copy took
    over a cycle per element and, for C = 3, as long as the GEMM itself), the edges scalar."""
    fb, pb, f, p = Var("tf"), Var("tp"), Var("f"), Var("p")
    fl, pl = Var("f_full"), Var("p_full")
    stmts = [Declare(fl, imul(fdiv(F, L), L)), Declare(pl, imul(fdiv(count, L), L))]
    if L > 1:
        dtype = gy.dtype
        rows = [Var(f"t0_{k}", dtype, L) for k in range(L)]
        square = [Declare(rows[k], gy.load((n, iadd(fb, k), iadd(p0, pb)), L)) for k in range(L)]
        b, stage = L // 2, 1
        while b >= 1:
            new = [Var(f"t{stage}_{k}", dtype, L) for k in range(L)]
            for r in range(L):
                if r & b:
                    continue
                lo = [k if not k & b else L + k - b for k in range(L)]
                hi = [k + b if not k & b else L + k for k in range(L)]
                square += [Declare(new[r], ir.Shuffle((rows[r], rows[r + b]), lo)),
                           Declare(new[r + b], ir.Shuffle((rows[r], rows[r + b]), hi))]
            rows, b, stage = new, b // 2, stage + 1
        square += [buf.store((u, iadd(pb, k), fb), rows[k]) for k in range(L)]
        # a "vectorize" loop: versioned once on the unit last strides of gy and buf
        stmts.append(Loop(fb, 0, fl, [Loop(pb, 0, pl, square, kind="vectorize", step=L)], step=L))
    stmts += [Loop(f, fl, F, [Loop(p, 0, count, [buf.store((u, p, f), gy[n, f, iadd(p0, p)])])]),
              Loop(f, 0, fl, [Loop(p, pl, count, [buf.store((u, p, f), gy[n, f, iadd(p0, p)])])])]
    return stmts


def grad_weight_gemm_name(dtype, stride, dilation, filter_flip, ksize, mr, nv, lanes):
    k = f"_k{ksize[0]}x{ksize[1]}" if None not in ksize else ""
    return (f"conv2d_bwd_weight_gemm_s{stride[0]}x{stride[1]}_d{dilation[0]}x{dilation[1]}"
            f"{'_flip' if filter_flip else ''}{k}_{mr}x{nv * lanes}_{ir.dtype_name(dtype)}")


def grad_weight_gemm_kernel(dtype, stride=(1, 1), dilation=(1, 1), filter_flip=False,
                            ksize=(None, None), tile=None, name=None):
    """The implicit GEMM. Params (x (N, C, H, W) zero padded, gy (N, F, OH*OW) (a view), gwp
    (U, M, Fp), buf (U, block_rows(OH, OW, Fp) * OW, Fp), [kh, kw], ow); ``tile`` = (lanes, MR, NV)
    (default ``tile_shape``), Fp a multiple of NV * lanes. U image ranges run in parallel."""
    dtype = ir.dtype_name(dtype)
    L, MR, NV = tile or tile_shape(dtype)
    NR = L * NV
    sh, sw = stride
    dh, dw = dilation
    x, gy = BufferParam("x", dtype, 4), BufferParam("gy", dtype, 3)
    gwp, buf = BufferParam("gwp", dtype, 3), BufferParam("buf", dtype, 3)
    khp, kwp, OW = (ir.ScalarParam(s, "int64") for s in ("kh", "kw", "ow"))
    kh = Const(ksize[0]) if ksize[0] is not None else khp
    kw = Const(ksize[1]) if ksize[1] is not None else kwp
    zero = Const(0.0, dtype)
    (M, F, OH, RB, ntiles, npan, U, u, na, nb, nblk, blk, i0, i1, t, r0, jp, n, i, j, z,
     col) = (Var(s) for s in "M F OH RB ntiles npan U u na nb nblk blk i0 i1 t r0 jp n i j z col".split())
    N = x.dim(0)
    rows, hoff, woff, chan = ([Var(f"{s}{q}") for q in range(MR)] for s in ("row", "h", "w", "c"))

    def tap_of(q):
        """(c, tap row offset, tap column offset) of the clamped row rows[q]."""
        uq, vq = imod(fdiv(rows[q], kw), kh), imod(rows[q], kw)
        if filter_flip:
            uq, vq = isub(isub(kh, 1), uq), isub(isub(kw, 1), vq)
        return [Declare(rows[q], imin(iadd(r0, q), isub(M, 1))),
                Declare(chan[q], fdiv(rows[q], imul(kh, kw))),
                Declare(hoff[q], imul(uq, dh)), Declare(woff[q], imul(vq, dw))]

    acc = [[Var(f"acc{q}_{w}", dtype, L) for w in range(NV)] for q in range(MR)]
    hi, pos = Var("hi"), Var("pos")
    step = []
    for q in range(MR):
        aq = Var(f"a{q}", dtype, L)
        step.append(Declare(aq, Broadcast(x[n, chan[q], iadd(hi, hoff[q]), iadd(imul(j, sw), woff[q])], L)))
        step += [Assign(acc[q][w], FMA(aq, buf.load((u, iadd(pos, j), iadd(col, w * L)), L), acc[q][w]))
                 for w in range(NV)]
    # a "vectorize" loop: the renderer versions it on buf's unit last stride (plain vector
    # loads at constant offsets inside)
    reduce_ = Loop(i, i0, i1, [Declare(hi, imul(i, sh)), Declare(pos, imul(isub(i, i0), OW)),
                               Loop(j, 0, OW, step)], kind="vectorize")
    store = [If(ir.lt(iadd(r0, q), M), [gwp.store((u, iadd(r0, q), iadd(col, w * L)),
                                                  gwp.load((u, iadd(r0, q), iadd(col, w * L)), L) + acc[q][w])
                                        for w in range(NV)]) for q in range(MR)]
    panel = Loop(jp, 0, npan, [Declare(col, imul(jp, NR))] +
                 [Declare(a, Broadcast(zero, L)) for row in acc for a in row] + [reduce_] + store)
    tile_loop = Loop(t, 0, ntiles, [Declare(r0, imul(t, MR))] + [s for q in range(MR) for s in tap_of(q)] + [panel])
    transpose = transpose_block(gy, buf, u, n, imul(i0, OW), imul(isub(i1, i0), OW), F, L)
    zc = Var("zc")
    clear = [Loop(z, 0, M, [Loop(zc, 0, gwp.dim(2), [gwp.store((u, z, zc), zero)])]),
             # padding columns: they feed only accumulator lanes never stored; zeros keep them
             # finite and free of denormal stalls
             Loop(z, 0, buf.dim(1), [Loop(zc, F, buf.dim(2), [buf.store((u, z, zc), zero)])])]
    unit = [Declare(na, fdiv(imul(u, N), U)), Declare(nb, fdiv(imul(iadd(u, 1), N), U)), *clear,
            Loop(n, na, nb, [Loop(blk, 0, nblk, [
                Declare(i0, imul(blk, RB)), Declare(i1, imin(OH, iadd(i0, RB))), *transpose, tile_loop])])]
    body = [
        Declare(M, gwp.dim(1)), Declare(F, gy.dim(1)), Declare(OH, fdiv(gy.dim(2), imax(OW, 1))),
        Declare(RB, imax(fdiv(buf.dim(1), imax(OW, 1)), 1)), Declare(nblk, cdiv(OH, RB)),
        Declare(ntiles, cdiv(M, MR)), Declare(npan, fdiv(gwp.dim(2), NR)), Declare(U, gwp.dim(0)),
        Loop(u, 0, U, unit, kind="parallel"),
    ]
    params = (x, gy, gwp, buf) + tuple(p for p, k in ((khp, ksize[0]), (kwp, ksize[1])) if k is None) + (OW,)
    name = name or grad_weight_gemm_name(dtype, stride, dilation, filter_flip, ksize, MR, NV, L)
    return freeze(ir.Kernel(name, params, body))


def sum_partials_name(dtype):
    return f"conv2d_bwd_weight_sum_{ir.dtype_name(dtype)}"


def sum_partials_kernel(dtype, name=None):
    """gw[f, r] = sum over u of gwp[u, r, f], for f < F. Params (gwp (U, M, Fp), gw (F, M));
    serial: M * F * U adds (75 x 64 x 2 for the 64x3 benchmark conv), a few microseconds."""
    dtype = ir.dtype_name(dtype)
    gwp, gw = BufferParam("gwp", dtype, 3), BufferParam("gw", dtype, 2)
    r, f, u, s = Var("r"), Var("f"), Var("u"), Var("s", dtype)
    body = [Loop(r, 0, gw.dim(1), [Loop(f, 0, gw.dim(0), [
        Declare(s, gwp[0, r, f]),
        Loop(u, 1, gwp.dim(0), [Assign(s, s + gwp[u, r, f])]),
        gw.store((f, r), s)])])]
    return freeze(ir.Kernel(name or sum_partials_name(dtype), (gwp, gw), body))
