"""A shared-memory tiled matrix product in GPU kernel IR, generic in how its operands are read.

    tiles = choose_tiles(target, "float32")                    # None: nothing fits the device
    body = tiled_gemm(spec, tiles)                             # statements of a Kernel body

``GemmSpec`` says what ``out[m, n] = sum_k A(m, k) * B(k, n)`` is: ``load_a(m, k, tag)`` /
``load_b(k, n, tag)`` return ``(declares, expr)`` (a plain matrix, a batched one, or an
implicit im2col gather: engine/gpu/tile_conv.py), ``store(m, n, acc, tag)`` the statements
that write one result (bounds are checked here), and the outer ``block_z`` loop over
independent products (batch entries, convolution groups, split-K parts) with its per-entry
declares and K range.

Schedule (one block of ``tx*ty`` threads per ``bm x bn`` tile of out)::

    block_z over products, block_y over row tiles, block_x over column tiles:
      acc[rm][rn] = 0                  (per thread: rows ty + TY*i, columns tx + TX*j)
      for each K tile of bk:
        threads load the A tile into As[bk][bm+1] and the B tile into Bs[bk][bn+1]
          (zero outside; consecutive threads take consecutive elements along the operand's
          contiguous axis -- ``a_k_fastest`` / ``b_n_fastest`` -- : coalesced), barrier
        for kk < bk (unrolled): rm loads of As, rn loads of Bs, rm*rn FMAs, barrier
      store every acc through spec.store, bounds-checked

Threads read ``As`` along a row (one address per half-warp: broadcast) and ``Bs`` along
consecutive columns (consecutive banks); the +1 padding keeps the transposing tile stores
free of bank conflicts. Accumulators are block-level locals assigned in thread loops of
extent blockDim (registers: every index is constant after unrolling).

Tile sizes come from the target's declared capabilities (``choose_tiles``): the largest of
64x64 (256 threads), 32x32 (64 threads), 16x16 (16 threads) whose threads fit
``max_threads_per_block`` and whose two tiles fit ``shared_memory_bytes``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from engine import kernel_ir as ir
from engine.kernel_ir import FMA, Alloc, Assign, Barrier, BinOp, Const, Declare, If, Loop, Var


@dataclass(frozen=True)
class Tiles:
    """A tile shape: ``bm x bn`` outputs per block of ``tx x ty`` threads, K tiles of ``bk``."""

    bm: int = 64
    bn: int = 64
    bk: int = 16
    tx: int = 16
    ty: int = 16

    @property
    def threads(self) -> int:
        return self.tx * self.ty

    @property
    def rm(self) -> int:
        return self.bm // self.ty

    @property
    def rn(self) -> int:
        return self.bn // self.tx

    def shared_bytes(self, dtype: str) -> int:
        return (self.bm + 1 + self.bn + 1) * self.bk * ir.itemsize(dtype)


CANDIDATES = (Tiles(64, 64, 16, 16, 16), Tiles(32, 32, 16, 8, 8), Tiles(16, 16, 8, 4, 4))


def choose_tiles(target, dtype: str) -> Tiles | None:
    """The largest candidate tile that fits the target's threads and shared memory."""
    for t in CANDIDATES:
        if t.threads <= target.max_threads_per_block and \
                t.shared_bytes(dtype) <= target.shared_memory_bytes:
            return t
    return None


Load = Callable[[ir.Expr, ir.Expr, str], tuple]


@dataclass
class GemmSpec:
    """What a tiled product computes (see the module docstring): ``M x N`` outputs (the same
    for every product; expressions of the parameters and ``prelude``), for each entry ``bz``
    of the ``nz`` independent products the declares ``decls(bz)`` and the K range
    ``k_start`` .. ``k_stop`` (which may use them)."""

    dtype: str
    M: ir.Expr
    N: ir.Expr
    load_a: Load
    load_b: Load | None
    store: Callable[[ir.Expr, ir.Expr, ir.Expr, str], list] | None
    k_stop: ir.Expr
    k_start: ir.Expr = field(default_factory=lambda: Const(0))
    nz: ir.Expr = field(default_factory=lambda: Const(1))
    decls: Callable[[Var], list] = lambda bz: []
    a_k_fastest: bool = True
    b_n_fastest: bool = True
    prelude: list = field(default_factory=list)
    #: optional split of B's reads: ``b_cols(n, tag) -> (declares, coords)`` depends on the
    #: output column only, ``load_b_at(k, coords, tag) -> (declares, expr)``. Then the column
    #: coordinates (an im2col gather's divisions) are computed once per tile, not per K tile.
    b_cols: Callable | None = None
    load_b_at: Callable | None = None
    #: with b_cols: ``store_at(m, coords, acc, tag)``, the store given the column's coordinates
    store_at: Callable | None = None


def _split(e, fast_extent, slow, fast):
    """Declares splitting the flat element e of a tile into (slow, fast) coordinates."""
    return [Declare(slow, BinOp("div", e, Const(fast_extent))), Declare(fast, e - slow * fast_extent)]


def _hoistable(spec: GemmSpec, tiles: Tiles) -> bool:
    """Whether every B load of a thread reads the same column: n fastest and the block's
    threads a multiple of the tile width (element e = t + q*threads, column e mod bn)."""
    return spec.b_cols is not None and spec.b_n_fastest and tiles.threads % tiles.bn == 0


def _column_setup(spec: GemmSpec, tiles: Tiles, col0):
    """(block-level declares, the thread loop computing them, coords): a thread's column
    coordinates as per-thread locals, assigned once per tile (the accumulators' pattern)."""
    t = Var("tsu")
    decls, coords = spec.b_cols(col0 + (t - BinOp("div", t, Const(tiles.bn)) * tiles.bn), "bc_")
    top = [Declare(d.var, Const(0, d.var.dtype)) for d in decls]
    loop = Loop(t, 0, tiles.threads, [Assign(d.var, d.init) for d in decls], "thread_x")
    return top, loop, coords


def _tile_loads(spec: GemmSpec, tiles: Tiles, t, As, Bs, row0, col0, k0, M, N, kend,
                hoisted=None):
    zero = Const(0.0, spec.dtype)
    out = []
    for q in range(tiles.bm * tiles.bk // tiles.threads):
        e, mm, kk = Var(f"ea{q}"), Var(f"ma{q}"), Var(f"ka{q}")
        split = _split(e, tiles.bk, mm, kk) if spec.a_k_fastest else _split(e, tiles.bm, kk, mm)
        decls, val = spec.load_a(row0 + mm, k0 + kk, f"a{q}_")
        ok = ir.lt(row0 + mm, M) & ir.lt(k0 + kk, kend)
        out += [Declare(e, t + q * tiles.threads), *split,
                If(ok, list(decls) + [As.store((kk, mm), val)], As.store((kk, mm), zero))]
    for q in range(tiles.bn * tiles.bk // tiles.threads):
        e, nn, kk = Var(f"eb{q}"), Var(f"nb{q}"), Var(f"kb{q}")
        split = _split(e, tiles.bn, kk, nn) if spec.b_n_fastest else _split(e, tiles.bk, nn, kk)
        if hoisted is not None:    # the column's coordinates were computed before the K loop
            decls, val = spec.load_b_at(k0 + kk, hoisted, f"b{q}_")
        elif spec.b_cols is not None:
            dc, coords = spec.b_cols(col0 + nn, f"b{q}_")
            decls, val = spec.load_b_at(k0 + kk, coords, f"b{q}_")
            decls = list(dc) + list(decls)
        else:
            decls, val = spec.load_b(k0 + kk, col0 + nn, f"b{q}_")
        ok = ir.lt(col0 + nn, N) & ir.lt(k0 + kk, kend)
        out += [Declare(e, t + q * tiles.threads), *split,
                If(ok, list(decls) + [Bs.store((kk, nn), val)], Bs.store((kk, nn), zero))]
    return out


def tiled_gemm(spec: GemmSpec, tiles: Tiles) -> list:
    """The statements of a kernel body computing spec with tiles (see the module docstring)."""
    T, TX, TY, RM, RN = tiles.threads, tiles.tx, tiles.ty, tiles.rm, tiles.rn
    dtype = spec.dtype
    bz, bm, bn, kt = Var("bz"), Var("bm"), Var("bn"), Var("kt")
    tl, tc, ts = Var("tl"), Var("tc"), Var("ts")
    M, N, kend = Var("M"), Var("N"), Var("kend")
    As = ir.LocalBuffer("As", dtype, (tiles.bk, tiles.bm + 1), "shared")
    Bs = ir.LocalBuffer("Bs", dtype, (tiles.bk, tiles.bn + 1), "shared")
    acc = [[Var(f"acc{i}{j}", dtype) for j in range(RN)] for i in range(RM)]
    row0, col0 = bm * tiles.bm, bn * tiles.bn
    k0 = Var("kbeg") + kt * tiles.bk
    ty, tx = Var("ty"), Var("tx")

    def coords(t):
        return [Declare(ty, BinOp("div", t, Const(TX))), Declare(tx, t - BinOp("div", t, Const(TX)) * TX)]
    p = Var("p")
    av = [Var(f"av{i}", dtype) for i in range(RM)]
    bv = [Var(f"bv{j}", dtype) for j in range(RN)]
    step = ([Declare(av[i], As[p, ty + TY * i]) for i in range(RM)] +
            [Declare(bv[j], Bs[p, tx + TX * j]) for j in range(RN)] +
            [Assign(acc[i][j], FMA(av[i], bv[j], acc[i][j])) for i in range(RM) for j in range(RN)])
    mac = coords(tc) + [Loop(p, 0, tiles.bk, step, "unroll")]
    stores = coords(ts)
    cols = [Var(f"c{j}") for j in range(RN)]
    stores += [Declare(cols[j], col0 + tx + TX * j) for j in range(RN)]
    at = [None] * RN
    if spec.store_at is not None:  # a thread's RN columns decomposed once, not per row
        for j in range(RN):
            decls, at[j] = spec.b_cols(cols[j], f"sc{j}_")
            stores += decls
    for i in range(RM):
        for j in range(RN):
            r = Var(f"r{i}{j}")
            st = spec.store(r, cols[j], acc[i][j], f"e{i}{j}_") if at[j] is None else \
                spec.store_at(r, at[j], acc[i][j], f"e{i}{j}_")
            stores += [Declare(r, row0 + ty + TY * i), If(ir.lt(r, M) & ir.lt(cols[j], N), st)]
    setup, hoisted = [], None
    if _hoistable(spec, tiles):
        top, loop, hoisted = _column_setup(spec, tiles, col0)
        setup = top + [loop]
    loads = _tile_loads(spec, tiles, tl, As, Bs, row0, col0, k0, M, N, kend, hoisted)
    ktiles = BinOp("div", kend - Var("kbeg") + (tiles.bk - 1), Const(tiles.bk))
    tile = ([Alloc(As), Alloc(Bs)] +
            [Declare(acc[i][j], Const(0.0, dtype)) for i in range(RM) for j in range(RN)] +
            setup + [Loop(kt, 0, ktiles, [
                Loop(tl, 0, T, loads, "thread_x"), Barrier(),
                Loop(tc, 0, T, mac, "thread_x"), Barrier()]),
             Loop(ts, 0, T, stores, "thread_x")])
    per_z = list(spec.decls(bz)) + [
        Declare(Var("kbeg"), spec.k_start), Declare(kend, spec.k_stop),
        Loop(bm, 0, BinOp("div", M + (tiles.bm - 1), Const(tiles.bm)), [
            Loop(bn, 0, BinOp("div", N + (tiles.bn - 1), Const(tiles.bn)), tile, "block_x")],
            "block_y")]
    # M, N and nz at the top: the launch's grid is computed from them on the host
    return list(spec.prelude) + [Declare(M, spec.M), Declare(N, spec.N), Declare(Var("nz"), spec.nz),
                                 Loop(bz, 0, Var("nz"), per_z, "block_z")]
