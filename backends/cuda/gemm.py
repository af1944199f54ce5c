"""GPU GEMM: ``MatMul`` and ``Gemm`` as the shared-memory tiled product of engine/gpu/tile_gemm.py.

    k = gemm_kernel("gemm_NN_f32", "float32")         # out = a @ b
    gpu_lowering(node, target)                          # Lowered for a MatMul / Gemm node, or None

Operands are read in the layout the node declares (``trans_a`` / ``trans_b``), consecutive
threads along its contiguous axis; batch dims (right-aligned, size-1 dims broadcast) are the
``block_z`` products. Tile sizes come from the target's capabilities (``choose_tiles``); when
none fits, or for dtypes other than float32/float64, the common lowering runs instead.
"""

from __future__ import annotations

from engine import kernel_ir as ir
from engine.gpu.target import GpuTarget
from engine.gpu.tile_gemm import GemmSpec, Tiles, choose_tiles, tiled_gemm
from engine.kernel_ir import BufferParam, Declare, Var
from engine.lower import In, Lowered, Out, Step


def _ops():
    from engine.ops import blas, fused
    return blas, fused


def has_gpu_lowering(node):
    try:
        blas, fused = _ops()
    except ImportError:  # pragma: no cover
        return False
    return isinstance(node.op, (blas.MatMul, fused.Gemm)) and \
        node.outputs[0].dtype in ("float32", "float64")


def gemm_kernel(name, dtype, trans_a=False, trans_b=False, batch=(0, 0, 0), c_ndim=None,
                alpha=1.0, beta=1.0, epilogue=(), tiles=None):
    """The kernel ``(a, b[, c], out)``: ``out = act(alpha * op(a) @ op(b) + beta * c)``.
    ``batch``: batch ndims of a, b, out (right-aligned, size-1 dims broadcast); ``c``: a
    ``c_ndim``-d array broadcast to (M, N); ``epilogue``: SCALAR_OPS names applied in order."""
    from engine.lowering.common import Emitter, bcast_index, const
    tiles = tiles or Tiles()
    ba, bb, bo = batch
    a = BufferParam("a", dtype, ba + 2)
    b = BufferParam("b", dtype, bb + 2)
    out = BufferParam("out", dtype, bo + 2)
    c = BufferParam("c", dtype, c_ndim) if c_ndim is not None else None
    params = (a, b) + ((c,) if c is not None else ()) + (out,)
    bidx = [Var(f"bi{d}") for d in range(bo)]
    a_bi, b_bi = tuple(bidx[bo - ba:]), tuple(bidx[bo - bb:])

    def load_a(m, k, tag):
        return [], a[a_bi + ((k, m) if trans_a else (m, k))]

    def load_b(k, n, tag):
        return [], b[b_bi + ((n, k) if trans_b else (k, n))]

    def store(r, col, acc, tag):
        em = Emitter(tag)
        v = acc
        if alpha != 1.0:
            v = v * const(alpha, dtype)
        if c is not None:
            cv = c[bcast_index(c.ndim, (r, col))]
            v = v + cv if beta == 1.0 else v - cv if beta == -1.0 else v + cv * const(beta, dtype)
        for op in epilogue:
            v = em.scalar(op, [em.local(v)], dtype)
        return em.stmts + [out.store(tuple(bidx) + (r, col), v)]

    def decls(bz):
        stmts, rest = [], bz
        for d in reversed(range(bo)):
            stmts.append(Declare(bidx[d], rest % out.dim(d)))
            if d:
                nxt = Var(f"brest{d}")
                stmts.append(Declare(nxt, rest // out.dim(d)))
                rest = nxt
        return stmts
    nbatch = ir.Const(1)
    for d in range(bo):
        nbatch = nbatch * out.dim(d)
    spec = GemmSpec(dtype, out.dim(bo), out.dim(bo + 1), load_a, load_b, store,
                    k_stop=a.dim(ba) if trans_a else a.dim(ba + 1), nz=nbatch, decls=decls,
                    a_k_fastest=not trans_a, b_n_fastest=not trans_b)
    return ir.Kernel(name, params, tuple(tiled_gemm(spec, tiles)))


def gpu_lowering(node, target=None):
    """A Lowered running a MatMul / Gemm node with the tiled GPU GEMM, or None."""
    if not has_gpu_lowering(node):
        return None
    from engine.lower import lower
    from engine.lowering.common import tag
    blas, fused = _ops()
    dt = node.outputs[0].dtype
    tiles = choose_tiles(target or GpuTarget(), dt)
    if tiles is None:
        return None
    base = lower(node)  # the common rule: output shapes and their checks
    if isinstance(node.op, fused.Gemm):
        op = node.op
        c_var = node.inputs[2] if len(node.inputs) > 2 else None
        flags = ("T" if op.trans_a else "N") + ("T" if op.trans_b else "N")
        name = "gpu_gemm_" + "_".join(x for x in (
            flags, tag(dt), "c" if c_var is not None else "", "_".join(op.epilogue),
            "" if op.alpha == 1.0 else "alpha", "" if op.beta in (0.0, 1.0) else "beta") if x)
        if op.alpha != 1.0 or op.beta not in (0.0, 1.0, -1.0):
            name += f"_{abs(hash((op.alpha, op.beta))) % 10**8}"
        k = gemm_kernel(name, dt, op.trans_a, op.trans_b, (0, 0, 0),
                        c_var.ndim if c_var is not None else None, op.alpha, op.beta,
                        tuple(op.epilogue), tiles)
        args = (In(0), In(1)) + ((In(2),) if c_var is not None else ()) + (Out(0),)
    else:
        a, b = node.inputs
        batch = (a.ndim - 2, b.ndim - 2, node.outputs[0].ndim - 2)
        name = f"gpu_matmul_{tag(dt)}_{a.ndim}d_{b.ndim}d"
        k = gemm_kernel(name, dt, batch=batch, tiles=tiles)
        args = (In(0), In(1), Out(0))
    return Lowered([k], [Step(k.name, args)], base.output_shapes)
