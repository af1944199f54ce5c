"""GPU GEMM: a shared-memory tiled matrix product in kernel IR, for ``MatMul`` and ``Gemm``.

    k = gemm_kernel("gemm_NN_f32", "float32")         # out = a @ b
    gpu_lowering(node, target)                          # Lowered for a MatMul / Gemm node, or None

Schedule (one block of ``TX*TY`` = 256 threads per ``BM x BN`` = 64 x 64 tile of out)::

    block_z over batch entries, block_y over row tiles, block_x over column tiles:
      acc[RM][RN] = 0                  (per thread: rows ty + TY*i, columns tx + TX*j)
      for each K tile of BK = 16:
        threads load the A tile into As[BK][BM+1] and the B tile into Bs[BK][BN+1]
          (zero outside the matrices; consecutive threads read consecutive addresses of
          the layout the node declares: coalesced), barrier
        for kk < BK (unrolled): RM loads of As, RN loads of Bs, RM*RN FMAs, barrier
      store alpha*acc (+ beta*c) through the epilogue, bounds-checked

Threads read ``As`` along a row (one address per half-warp: broadcast) and ``Bs`` along
consecutive columns (consecutive banks); the +1 padding keeps the transposing tile stores
free of bank conflicts. Accumulators are block-level locals (registers: every index is
constant after unrolling). Shared memory: (BM+1 + BN+1) * BK elements (8.3 KB in float32).
Float32/float64 only; other dtypes keep the common lowering.
"""

from __future__ import annotations

from engine import kernel_ir as ir
from engine.kernel_ir import FMA, Alloc, Assign, Barrier, BufferParam, Const, Declare, If, Loop, Var
from engine.lower import In, Lowered, Out, Step

BM, BN, BK = 64, 64, 16
TX, TY = 16, 16
RM, RN = BM // TY, BN // TX
THREADS = TX * TY


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


def _cdiv(a, f):
    return ir.BinOp("div", a + (f - 1), Const(f))


def gemm_kernel(name, dtype, trans_a=False, trans_b=False, batch=(0, 0, 0), c_ndim=None,
                alpha=1.0, beta=1.0, epilogue=()):
    """The kernel ``(a, b[, c], out)``: ``out = act(alpha * op(a) @ op(b) + beta * c)``.
    ``batch``: batch ndims of a, b, out (right-aligned, size-1 dims broadcast); ``c``: a
    ``c_ndim``-d array broadcast to (M, N); ``epilogue``: SCALAR_OPS names applied in order."""
    from engine.lowering.common import Emitter, bcast_index, const
    ba, bb, bo = batch
    a = BufferParam("a", dtype, ba + 2)
    b = BufferParam("b", dtype, bb + 2)
    out = BufferParam("out", dtype, bo + 2)
    c = BufferParam("c", dtype, c_ndim) if c_ndim is not None else None
    params = (a, b) + ((c,) if c is not None else ()) + (out,)
    zero = Const(0.0, dtype)
    M, N, K = Var("M"), Var("N"), Var("K")
    nb, bz, bm, bn, kt = Var("nbatch"), Var("bz"), Var("bm"), Var("bn"), Var("kt")
    t, tl, tc = Var("t"), Var("tl"), Var("tc")
    As = ir.LocalBuffer("As", dtype, (BK, BM + 1), "shared")
    Bs = ir.LocalBuffer("Bs", dtype, (BK, BN + 1), "shared")
    acc = [[Var(f"acc{i}{j}", dtype) for j in range(RN)] for i in range(RM)]
    bidx = [Var(f"bi{d}") for d in range(bo)]
    a_bi, b_bi = tuple(bidx[bo - ba:]), tuple(bidx[bo - bb:])

    def A(m, k):
        return a[a_bi + ((k, m) if trans_a else (m, k))]

    def B(k, n):
        return b[b_bi + ((n, k) if trans_b else (k, n))]

    row0, col0, k0 = bm * BM, bn * BN, kt * BK
    # -- cooperative tile loads: consecutive threads along the contiguous axis of the layout
    loads = []
    for q in range(BM * BK // THREADS):
        e, mm, kk = Var(f"ea{q}"), Var(f"ma{q}"), Var(f"ka{q}")
        e_val = t + q * THREADS
        if trans_a:   # a is (K, M): m fastest
            split = [Declare(kk, ir.BinOp("div", e, Const(BM))), Declare(mm, e - kk * BM)]
        else:         # a is (M, K): k fastest
            split = [Declare(mm, ir.BinOp("div", e, Const(BK))), Declare(kk, e - mm * BK)]
        ok = ir.lt(row0 + mm, M) & ir.lt(k0 + kk, K)
        loads += [Declare(e, e_val), *split,
                  If(ok, As.store((kk, mm), A(row0 + mm, k0 + kk)), As.store((kk, mm), zero))]
    for q in range(BN * BK // THREADS):
        e, nn, kk = Var(f"eb{q}"), Var(f"nb{q}"), Var(f"kb{q}")
        e_val = t + q * THREADS
        if trans_b:   # b is (N, K): k fastest
            split = [Declare(nn, ir.BinOp("div", e, Const(BK))), Declare(kk, e - nn * BK)]
        else:         # b is (K, N): n fastest
            split = [Declare(kk, ir.BinOp("div", e, Const(BN))), Declare(nn, e - kk * BN)]
        ok = ir.lt(col0 + nn, N) & ir.lt(k0 + kk, K)
        loads += [Declare(e, e_val), *split,
                  If(ok, Bs.store((kk, nn), B(k0 + kk, col0 + nn)), Bs.store((kk, nn), zero))]
    # -- the multiply-adds of one K tile
    p = Var("p")
    ty, tx = ir.BinOp("div", t, Const(TX)), t - ir.BinOp("div", t, Const(TX)) * TX
    av = [Var(f"av{i}", dtype) for i in range(RM)]
    bv = [Var(f"bv{j}", dtype) for j in range(RN)]
    step = ([Declare(av[i], As[p, Var("ty") + TY * i]) for i in range(RM)] +
            [Declare(bv[j], Bs[p, Var("tx") + TX * j]) for j in range(RN)] +
            [Assign(acc[i][j], FMA(av[i], bv[j], acc[i][j])) for i in range(RM) for j in range(RN)])
    mac = [Declare(Var("ty"), ty), Declare(Var("tx"), tx),
           Loop(p, 0, BK, step, "unroll")]
    # -- the epilogue and the bounds-checked stores
    stores = [Declare(Var("ty"), ty), Declare(Var("tx"), tx)]
    for i in range(RM):
        for j in range(RN):
            r, col = Var(f"r{i}{j}"), Var(f"c{i}{j}")
            em = Emitter(f"e{i}{j}_")
            v = acc[i][j]
            if alpha != 1.0:
                v = v * const(alpha, dtype)
            if c is not None:
                cv = c[bcast_index(c.ndim, (r, col))]
                v = v + cv if beta == 1.0 else v - cv if beta == -1.0 else v + cv * const(beta, dtype)
            for op in epilogue:
                v = em.scalar(op, [em.local(v)], dtype)
            stores += [Declare(r, row0 + Var("ty") + TY * i), Declare(col, col0 + Var("tx") + TX * j),
                       If(ir.lt(r, M) & ir.lt(col, N),
                          em.stmts + [out.store(tuple(bidx) + (r, col), v)])]
    tile = ([Alloc(As), Alloc(Bs)] +
            [Declare(acc[i][j], zero) for i in range(RM) for j in range(RN)] +
            [Loop(kt, 0, _cdiv(K, BK), [
                Loop(tl, 0, THREADS, loads, "thread_x"), Barrier(),
                Loop(tc, 0, THREADS, ir.substitute(tuple(mac), {"t": tc}), "thread_x"), Barrier()]),
             Loop(Var("ts"), 0, THREADS, ir.substitute(tuple(stores), {"t": Var("ts")}), "thread_x")])
    tile = [ir.substitute(s, {"t": tl}) for s in tile]
    batch_decl, rest = [], Var("brest")
    if bo:
        batch_decl.append(Declare(rest, bz))
        for d in reversed(range(bo)):
            batch_decl += [Declare(bidx[d], rest % out.dim(d))]
            if d:
                nxt = Var(f"brest{d}")
                batch_decl.append(Declare(nxt, rest // out.dim(d)))
                rest = nxt
    nbatch = Const(1)
    for d in range(bo):
        nbatch = nbatch * out.dim(d)
    body = [Declare(M, out.dim(bo)), Declare(N, out.dim(bo + 1)),
            Declare(K, a.dim(ba) if trans_a else a.dim(ba + 1)), Declare(nb, nbatch),
            Loop(bz, 0, nb, batch_decl + [
                Loop(bm, 0, _cdiv(M, BM), [
                    Loop(bn, 0, _cdiv(N, BN), tile, "block_x")], "block_y")], "block_z")]
    return ir.Kernel(name, params, tuple(body))


def gpu_lowering(node, target=None):
    """A Lowered running a MatMul / Gemm node with the tiled GPU GEMM, or None."""
    if not has_gpu_lowering(node):
        return None
    from engine.lower import lower
    from engine.lowering.common import tag
    blas, fused = _ops()
    dt = node.outputs[0].dtype
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
                        tuple(op.epilogue))
        args = (In(0), In(1)) + ((In(2),) if c_var is not None else ()) + (Out(0),)
    else:
        a, b = node.inputs
        batch = (a.ndim - 2, b.ndim - 2, node.outputs[0].ndim - 2)
        name = f"gpu_matmul_{tag(dt)}_{a.ndim}d_{b.ndim}d"
        k = gemm_kernel(name, dt, batch=batch)
        args = (In(0), In(1), Out(0))
    return Lowered([k], [Step(k.name, args)], base.output_shapes)
