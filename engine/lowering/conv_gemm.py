"""conv2d's weight gradient as an implicit GEMM: no im2col buffer, the input read in place.

    gw^T[(c, u, v), f] = sum over (n, i, j) of x[n, c, i*sh + u*dh, j*sw + v*dw] * gy[n, f, i, j]

is a GEMM of M = C*KH*KW rows, F columns and a reduction of K = N*OH*OW. Its "A" operand (the
im2col matrix) is never built: the micro-kernel broadcasts its elements straight from x (row
(c, u, v) is a fixed offset into an image, column (n, i, j) a position), so the kernel reads x
once per row tile from cache instead of writing and re-reading a C*KH*KW x N*OH*OW buffer
(64 MB for LeNet's second layer at batch 500). Its "B" operand is gy transposed to
``gyp[n, i*OW + j, f]`` (``transpose_gy_kernel``, F zero padded to whole micro-tiles), whose
rows are read in place with vector loads. Three steps (``grad_weight_gemm_steps``):

    gyp  = transpose(gy)                 # (N, OH*OW, Fp), Fp = F rounded up to NR
    gwt  = implicit GEMM(x, gyp)         # (C*KH*KW, Fp)
    gw   = gwt[:, :F]^T                  # a copying view into (F, C, KH, KW)

The GEMM kernel (``grad_weight_gemm_kernel``): a parallel loop over contiguous ranges of MR-row
tiles (each thread owns its rows of gwt: no reduction across threads), then blocks of
``images_per_block`` images (a block of gyp, about KC rows x Fp, stays in L2 while every row
tile of the thread runs over it), then per tile and NR-column panel MR x NV vector accumulators
over the block's (n, i, j), added to gwt. Edge rows compute on a clamped row and are not
stored. With ``filter_flip`` the row (c, u, v) of gw reads the tap (KH-1-u, KW-1-v).
"""

from __future__ import annotations

from engine import kernel_ir as ir
from engine.kernel_ir import FMA, Assign, Broadcast, BufferParam, Const, Declare, If, Loop, Var
from engine.lowering.nn_util import cdiv, fdiv, freeze, iadd, imax, imin, imod, imul, isub

#: rows of gyp (positions of a block of images) one K block covers, at least one image
KC = 384
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


def transpose_gy_name(dtype):
    return f"conv2d_gy_transpose_{ir.dtype_name(dtype)}"


def transpose_gy_kernel(dtype, name=None):
    """gyp[n, p, f] = gy[n, f, p // OW, p % OW] for f < F, 0 for F <= f < Fp (the padding
    columns feed only accumulator lanes that are never stored; zeros keep them finite and
    free of denormal stalls). Params (gy (N, F, OH, OW), gyp (N, OH*OW, Fp)); parallel over
    images, each image's gy (F x OH*OW) read in place from L1."""
    dtype = ir.dtype_name(dtype)
    gy, gyp = BufferParam("gy", dtype, 4), BufferParam("gyp", dtype, 3)
    n, p, f, i, j, fz = (Var(s) for s in ("n", "p", "f", "i", "j", "fz"))
    copy = Loop(i, 0, gy.dim(2), [Loop(j, 0, gy.dim(3), [
        Declare(p, iadd(imul(i, gy.dim(3)), j)),
        Loop(f, 0, gy.dim(1), [gyp.store((n, p, f), gy[n, f, i, j])]),
        Loop(fz, gy.dim(1), gyp.dim(2), [gyp.store((n, p, fz), Const(0.0, dtype))]),
    ])])
    loop = Loop(n, 0, gy.dim(0), [copy], kind="parallel")
    return freeze(ir.Kernel(name or transpose_gy_name(dtype), (gy, gyp), [loop]))


def grad_weight_gemm_name(dtype, stride, dilation, filter_flip, ksize, mr, nv, lanes):
    k = f"_k{ksize[0]}x{ksize[1]}" if None not in ksize else ""
    return (f"conv2d_bwd_weight_gemm_s{stride[0]}x{stride[1]}_d{dilation[0]}x{dilation[1]}"
            f"{'_flip' if filter_flip else ''}{k}_{mr}x{nv * lanes}_{ir.dtype_name(dtype)}")


def grad_weight_gemm_kernel(dtype, stride=(1, 1), dilation=(1, 1), filter_flip=False,
                            ksize=(None, None), tile=None, name=None):
    """The implicit GEMM. Params (x (N, C, H, W) zero padded, gyp (N, OH*OW, Fp), gwt
    (C*KH*KW, Fp), [kh, kw], ow, nthreads); ``tile`` = (lanes, MR, NV) (default
    ``tile_shape``), Fp a multiple of NV * lanes."""
    dtype = ir.dtype_name(dtype)
    L, MR, NV = tile or tile_shape(dtype)
    NR = L * NV
    sh, sw = stride
    dh, dw = dilation
    x, gyp, gwt = BufferParam("x", dtype, 4), BufferParam("gyp", dtype, 3), BufferParam("gwt", dtype, 2)
    khp, kwp, owp, nthreads = (ir.ScalarParam(s, "int64") for s in ("kh", "kw", "ow", "nthreads"))
    kh = Const(ksize[0]) if ksize[0] is not None else khp
    kw = Const(ksize[1]) if ksize[1] is not None else kwp
    zero = Const(0.0, dtype)
    (M, P, OH, nbk, nblk, ntiles, npan, T, units, u, t0, t1, blk, n0, n1, t, r0, jp, n, i, j, z,
     col) = (Var(s) for s in ("M P OH nbk nblk ntiles npan T units u t0 t1 blk n0 n1 t r0 jp n i "
                              "j z col").split())
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
    hi = Var("hi")
    step = []
    for q in range(MR):
        aq = Var(f"a{q}", dtype, L)
        step.append(Declare(aq, Broadcast(x[n, chan[q], iadd(hi, hoff[q]), iadd(imul(j, sw), woff[q])], L)))
        step += [Assign(acc[q][w], FMA(aq, gyp.load((n, iadd(imul(i, owp), j), iadd(col, w * L)), L),
                                       acc[q][w])) for w in range(NV)]
    # a "vectorize" loop: the renderer versions it on gyp's unit last stride (plain vector
    # loads at constant offsets inside)
    reduce_ = Loop(n, n0, n1, [Loop(i, 0, OH, [Declare(hi, imul(i, sh)), Loop(j, 0, owp, step)])],
                   kind="vectorize")
    store = [If(ir.lt(iadd(r0, q), M), [gwt.store((iadd(r0, q), iadd(col, w * L)),
                                                  gwt.load((iadd(r0, q), iadd(col, w * L)), L) + acc[q][w])
                                        for w in range(NV)]) for q in range(MR)]
    panel = Loop(jp, 0, npan, [Declare(col, imul(jp, NR))] +
                 [Declare(a, Broadcast(zero, L)) for row in acc for a in row] + [reduce_] + store)
    tile_loop = Loop(t, t0, t1, [Declare(r0, imul(t, MR))] + [s for q in range(MR) for s in tap_of(q)] + [panel])
    zc = Var("zc")
    clear = Loop(z, imul(t0, MR), imin(imul(t1, MR), M), [
        Loop(zc, 0, gwt.dim(1), [gwt.store((z, zc), zero)])])
    unit = [
        Declare(t0, fdiv(imul(u, ntiles), units)), Declare(t1, fdiv(imul(iadd(u, 1), ntiles), units)),
        clear,
        Loop(blk, 0, nblk, [Declare(n0, imul(blk, nbk)), Declare(n1, imin(N, iadd(n0, nbk))), tile_loop]),
    ]
    body = [
        Declare(M, gwt.dim(0)), Declare(P, gyp.dim(1)), Declare(OH, fdiv(P, imax(owp, 1))),
        Declare(nbk, imax(fdiv(Const(KC), imax(P, 1)), 1)), Declare(nblk, cdiv(N, nbk)),
        Declare(ntiles, cdiv(M, MR)), Declare(npan, fdiv(gwt.dim(1), NR)),
        Declare(T, ir.select(ir.lt(imul(imul(M, gwt.dim(1)), imul(N, P)), SERIAL_WORK), Const(1),
                             imax(nthreads, 1))),
        Declare(units, imin(T, ntiles)),
        Loop(u, 0, units, unit, kind="parallel"),
    ]
    params = (x, gyp, gwt) + tuple(p for p, k in ((khp, ksize[0]), (kwp, ksize[1])) if k is None) + (
        owp, nthreads)
    name = name or grad_weight_gemm_name(dtype, stride, dilation, filter_flip, ksize, MR, NV, L)
    return freeze(ir.Kernel(name, params, body))
