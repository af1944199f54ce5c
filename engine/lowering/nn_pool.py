"""Kernel builders for pooling over the last two axes (max / avg / l2 / sum, their gradients,
max pooling's grad-grad) and probabilistic max-pooling (probabilities, gradient, sampler).

Semantics: backends/numpy/pool.py and prob_max_pool.py (and the "sum" mode of the numpy
backend's table). Buffers have the op's ndim (>= 2); the leading dims are flattened into one
parallel loop over planes. Window geometry (ws, stride, padding) is baked in; sizes are
run-time. Out-of-bounds taps are skipped, which is what padding means for every mode (-inf for
max, 0 for the sums; a window always holds at least one input cell).

Forward: per plane, output rows and columns split into border / interior segments
(``nn_util.Axis``); interior windows are unrolled taps with no checks, vectorized over columns
when the column stride is 1; border windows loop over their in-bounds taps.
Gradient: per plane (parallel), the plane of gx is zeroed, then every window scatters its
contribution serially (max: to the first in-bounds maximum in row-major order, NaN first if
any), so overlapping windows accumulate without races or atomics. L2 then multiplies by x.
"""

from __future__ import annotations

from engine import kernel_ir as ir
from engine.kernel_ir import BufferParam, Const, LocalBuffer, Var
from engine.loopopt import MAX_LOAD_STRIDE
from engine.lowering.nn_util import (
    Axis,
    apply_chain,
    declare_ints,
    dt,
    freeze,
    iadd,
    imax,
    imin,
    imul,
    isub,
    land,
    lead_index,
    pair,
    planes,
    vector_lanes,
    vector_loop,
)
from engine.ops.pool import pool_out_len

# ----------------------------------------------------------------------------- geometry

out_len = pool_out_len  # the op's own rule, so lowering and shape inference agree



def pool_name(kind, mode, dtype, ndim, ws, stride, padding, ignore_border, count_include_pad,
              prologue=()):
    name = f"pool2d_{kind}_{mode}_k{pair(ws)}_s{pair(stride)}_p{pair(padding)}"
    if not ignore_border:
        name += "_ceil"
    if mode == "avg":
        name += "_incpad" if count_include_pad else "_excpad"
    for e in prologue:
        name += f"_{e}"
    return f"{name}_{dt(dtype)}_{ndim}d"


def _axes(x, o, ws, stride, padding, ignore_border):
    """The row and column geometry; without padding and with partial windows dropped, o's
    sizes are exactly the windows that fit (``out_len``: the op's shape rule guarantees the
    kernel's buffers agree), so every window is interior."""
    nd = x.ndim
    rows, cols = (Axis(stride[d], -padding[d], 1, ws[d], x.dim(nd - 2 + d), o.dim(nd - 2 + d),
                       whole_windows=ignore_border and padding[d] == 0) for d in (0, 1))
    return rows, cols


def _count(axis, a, pad, include_pad):
    """Cells of window a counted by avg along one axis (padded extent or input only)."""
    start = imul(a, axis.s)  # in padded coordinates
    if include_pad:
        return isub(imin(iadd(start, axis.K), iadd(axis.L_in, 2 * pad)), start)
    return isub(imin(iadd(start, axis.K), iadd(axis.L_in, pad)), imax(start, pad))


def _empty(lo, hi):
    return isinstance(lo, Const) and isinstance(hi, Const) and lo.value >= hi.value


# ----------------------------------------------------------------------------- forward


def pool_fwd(dtype, ndim, ws, stride, padding, mode, ignore_border=True, count_include_pad=True,
             prologue=(), lanes=None, name=None):
    """out = pool(prologue(x)) over the last two axes. Params (x, out)."""
    dtype = ir.dtype_name(dtype)
    x, o = BufferParam("x", dtype, ndim), BufferParam("out", dtype, ndim)
    rows, cols = _axes(x, o, ws, stride, padding, ignore_border)
    lanes = vector_lanes(dtype) if lanes is None else lanes
    nlead = ndim - 2
    p = Var("p")
    decl, lead = lead_index(x, nlead, p)
    zero = Const(0.0, dtype) if ir.is_float(dtype) else Const(0, dtype)
    init = ir.reduce_identity("max", dtype) if mode == "max" else zero

    def tap(i, j):
        v = apply_chain(prologue, x[(*lead, i, j)])
        return v * v if mode == "l2" else v

    def combine(acc, v):
        return ir.maximum(acc, v) if mode == "max" else acc + v

    def finish(a, b, acc):
        if mode == "l2":
            return ir.sqrt(acc)
        if mode == "avg":
            cnt = imul(_count(rows, a, padding[0], count_include_pad),
                       _count(cols, b, padding[1], count_include_pad))
            return acc / ir.Cast(cnt, dtype)
        return acc

    def row_segment(si, alo, ahi, aint):
        """The loop over output rows [alo, ahi) computing every window directly."""
        a = Var(f"a{si}")
        row = []
        if not aint:
            lo, hi = rows.tap_range(a)
            d, nm = declare_ints([(f"ulo{si}", lo), (f"uhi{si}", hi)])
            row += d
        for sj, (blo, bhi, bint) in enumerate(cols.segments()):
            if _empty(blo, bhi):
                continue
            b = Var(f"b{si}{sj}")
            acc = Var(f"acc{si}{sj}", dtype)
            if aint and bint:  # every tap in bounds: unrolled
                taps = [tap(rows.coord(a, u), cols.coord(b, v)) for u in range(ws[0]) for v in range(ws[1])]
                if mode == "max":  # exact in any order: a tree (short dependency chains)
                    val = _tree(taps, ir.maximum)
                else:  # sums in row-major order, as the oracle
                    val = taps[0]
                    for t in taps[1:]:
                        val = val + t
                col = [o.store((*lead, a, b), finish(a, b, val))]
            else:
                if aint:
                    ulo, uhi = Const(0), Const(ws[0])
                else:
                    ulo, uhi = Var(f"ulo{si}"), Var(f"uhi{si}")
                col = []
                if bint:
                    vlo, vhi = Const(0), Const(ws[1])
                else:
                    lo, hi = cols.tap_range(b)
                    d, nm = declare_ints([(f"vlo{si}{sj}", lo), (f"vhi{si}{sj}", hi)])
                    col += d
                    vlo, vhi = nm[f"vlo{si}{sj}"], nm[f"vhi{si}{sj}"]
                u, v = Var(f"u{si}{sj}"), Var(f"v{si}{sj}")
                upd = ir.Assign(acc, combine(acc, tap(rows.coord(a, u), cols.coord(b, v))))
                col += [ir.Declare(acc, init), ir.Loop(u, ulo, uhi, [ir.Loop(v, vlo, vhi, [upd])]),
                        o.store((*lead, a, b), finish(a, b, acc))]
            loop = ir.Loop(b, blo, bhi, col)
            if bint and stride[1] == 1 and lanes > 1:
                row.extend(vector_loop(loop, lanes, idempotent=True))
            else:
                row.append(loop)
        return ir.Loop(a, alo, ahi, row)
    segments = [(si, seg) for si, seg in enumerate(rows.segments()) if not _empty(seg[0], seg[1])]
    direct = [row_segment(si, *seg) for si, seg in segments]
    body = list(decl)
    if mode == "max" and stride[1] > 1:
        # separable: interior rows take the max down the window's rows first (vectorized
        # along the row, unit stride), then across the strided columns of that row
        rowmax = LocalBuffer("rowmax", dtype, (SEPARABLE_MAX_WIDTH,))
        fast = [row_segment(si, *seg) if not seg[2] else
                _separable_rows(x, o, lead, rowmax, rows, cols, ws, prologue, seg[0], seg[1], lanes, f"{si}")
                for si, seg in segments]
        # (contiguous rows only: the direct windows serve any strides, and the renderer then
        # writes no strided copy of the separable path's vector loops)
        body += [ir.Alloc(rowmax), ir.If(ir.le(x.dim(ndim - 1), SEPARABLE_MAX_WIDTH) & ir.unit_stride_test([x, o], [x]),
                                         fast, direct)]
    else:
        body += direct
    loop = ir.Loop(p, 0, planes(x, nlead), body, kind="parallel")
    name = name or pool_name("fwd", mode, dtype, ndim, ws, stride, padding, ignore_border,
                             count_include_pad, prologue)
    return freeze(ir.Kernel(name, (x, o), [loop]))


#: widest input row the separable max path keeps in its stack row (wider rows: direct windows)
SEPARABLE_MAX_WIDTH = 2048


def _across(loop, lanes, stride):
    """The loop over windows along a stack row (its body reads the row at ``stride * b + v``),
    vectorized with strided loads where the vectorizer takes the stride; it stores pure
    functions of b (idempotent)."""
    if stride > MAX_LOAD_STRIDE:
        return [loop]
    return vector_loop(loop, lanes, idempotent=True)


def _separable_rows(x, o, lead, rowmax, rows, cols, ws, prologue, alo, ahi, lanes, tag):
    """Interior output rows [alo, ahi) of a max pool with a column stride > 1: per row a,
    ``rowmax[c] = max_u f(x[a*s + u, c])`` for every input column (f: the fused activation;
    vector loads along the row),
    then ``out[a, b] = max_v rowmax[b*s + v]`` (the border columns over their in-bounds taps).
    Max is exact in any order, so this equals the direct window scan bit for bit."""
    a, c = Var(f"a{tag}"), Var(f"c{tag}")
    width = x.dim(x.ndim - 1)
    down = _tree([apply_chain(prologue, x[(*lead, rows.coord(a, u), c)]) for u in range(ws[0])], ir.maximum)
    fill = ir.Loop(c, 0, width, [rowmax.store((c,), down)])
    row = vector_loop(fill, lanes, idempotent=True)
    for sj, (blo, bhi, bint) in enumerate(cols.segments()):
        if _empty(blo, bhi):
            continue
        b = Var(f"b{tag}{sj}")
        if bint:  # vectorized: strided loads from the stack row
            val = _tree([rowmax[(cols.coord(b, v),)] for v in range(ws[1])], ir.maximum)
            row += _across(ir.Loop(b, blo, bhi, [o.store((*lead, a, b), val)]), lanes, cols.s)
            continue
        lo, hi = cols.tap_range(b)
        d, nm = declare_ints([(f"vlo{tag}{sj}", lo), (f"vhi{tag}{sj}", hi)])
        v, acc = Var(f"v{tag}{sj}"), Var(f"acc{tag}{sj}", x.dtype)
        scan = ir.Loop(v, nm[f"vlo{tag}{sj}"], nm[f"vhi{tag}{sj}"],
                       [ir.Assign(acc, ir.maximum(acc, rowmax[(cols.coord(b, v),)]))])
        row.append(ir.Loop(b, blo, bhi, d + [ir.Declare(acc, ir.reduce_identity("max", x.dtype)), scan,
                                             o.store((*lead, a, b), acc)]))
    return ir.Loop(a, alo, ahi, row)


# ----------------------------------------------------------------------------- argmax scan


def _first_max(x, lead, rows, cols, a, b, dtype, tag=""):
    """Statements finding the first in-bounds maximum of window (a, b) in row-major order
    (a NaN wins, the first one): declares ``bu{tag}``/``bv{tag}`` (input row / column)."""
    ulo, uhi = rows.tap_range(a)
    vlo, vhi = cols.tap_range(b)
    bu, bv, best = Var(f"bu{tag}"), Var(f"bv{tag}"), Var(f"best{tag}", dtype)
    u, v, val = Var(f"u{tag}"), Var(f"v{tag}"), Var(f"val{tag}", dtype)
    d, nm = declare_ints([(f"ulo{tag}", ulo), (f"uhi{tag}", uhi), (f"vlo{tag}", vlo),
                          (f"vhi{tag}", vhi)])
    r0, c0 = rows.coord(a, nm[f"ulo{tag}"]), cols.coord(b, nm[f"vlo{tag}"])
    stmts = d + [ir.Declare(bu, r0), ir.Declare(bv, c0), ir.Declare(best, x[(*lead, r0, c0)])]
    ri, ci = rows.coord(a, u), cols.coord(b, v)
    take = ir.binop("or", ir.gt(val, best), land(ir.ne(val, val), ir.eq(best, best)))
    scan = ir.Loop(u, nm[f"ulo{tag}"], nm[f"uhi{tag}"], [ir.Loop(v, nm[f"vlo{tag}"], nm[f"vhi{tag}"], [
        ir.Declare(val, x[(*lead, ri, ci)]),
        ir.If(take, [ir.Assign(best, val), ir.Assign(bu, ri), ir.Assign(bv, ci)])])])
    return stmts + [scan]


# ----------------------------------------------------------------------------- gradient


def _tree(items, combine):
    """Pairwise combination of a list, left to right within each level (a balanced tree)."""
    while len(items) > 1:
        items = [combine(items[k], items[k + 1]) if k + 1 < len(items) else items[k]
                 for k in range(0, len(items), 2)]
    return items[0]


def _chain_max(vals, dtype, tag, lanes=1):
    """Statements selecting the first maximum of the expressions ``vals`` (a NaN wins, the
    first one), branch-free, as a tournament tree whose matches keep the left (earlier) entry
    unless the right one is greater or is the first NaN; returns (statements, position).
    With ``lanes`` > 1 the values are vectors and the position a vector of int32."""
    out = []
    entries = []
    for k, val in enumerate(vals):
        vk = Var(f"val{tag}_{k}", dtype, lanes)
        out.append(ir.Declare(vk, val))
        entries.append((vk, Const(k) if lanes == 1 else ir.Broadcast(Const(k, "int32"), lanes)))
    level = 0
    while len(entries) > 1:
        nxt = []
        for k in range(0, len(entries), 2):
            if k + 1 == len(entries):
                nxt.append(entries[k])
                continue
            (lv, lk), (rv, rk) = entries[k], entries[k + 1]
            take = ir.binop("or", ir.gt(rv, lv), land(ir.ne(rv, rv), ir.eq(lv, lv)))
            tv, bv = Var(f"t{tag}_{level}_{k}", "bool", lanes), Var(f"m{tag}_{level}_{k}", dtype, lanes)
            bk = Var(f"k{tag}_{level}_{k}", "int64" if lanes == 1 else "int32", lanes)
            out += [ir.Declare(tv, take), ir.Declare(bv, ir.Select(tv, rv, lv)),
                    ir.Declare(bk, ir.Select(tv, rk, lk))]
            nxt.append((bv, bk))
        entries = nxt
        level += 1
    return out, entries[0][1]


def pool_grad(dtype, ndim, ws, stride, padding, mode, ignore_border=True, count_include_pad=True,
              lanes=None, name=None):
    """gx of pool2d. Params: max (x, gy, gx); avg / sum (gy, gx); l2 (x, y, gy, gx).

    Tiled windows (stride == ws, no padding: each cell in at most one window) write every cell
    of their window (0 or the gradient) and zero the cells no window covers; otherwise the
    plane is zeroed and each window adds its contribution. Interior windows are unrolled and
    branch-free (the first maximum by a chain of selects)."""
    dtype = ir.dtype_name(dtype)
    x, y = BufferParam("x", dtype, ndim), BufferParam("y", dtype, ndim)
    gy, gx = BufferParam("gy", dtype, ndim), BufferParam("gx", dtype, ndim)
    rows, cols = _axes(gx, gy, ws, stride, padding, ignore_border)
    lanes = vector_lanes(dtype) if lanes is None else lanes
    tiled = tuple(stride) == tuple(ws) and tuple(padding) == (0, 0)
    nlead = ndim - 2
    p = Var("p")
    decl, lead = lead_index(gx, nlead, p)
    zero = Const(0.0, dtype)
    H, W = gx.dim(ndim - 2), gx.dim(ndim - 1)
    OH, OW = gy.dim(ndim - 2), gy.dim(ndim - 1)

    def zero_rect(tag, r0, r1, c0, c1):
        r, q = Var(f"zr{tag}"), Var(f"zq{tag}")
        clear = ir.Loop(q, c0, c1, [gx.store((*lead, r, q), zero)])
        return [ir.Loop(r, r0, r1, vector_loop(clear, lanes, idempotent=True))]

    def scale(a, b):
        """The per-window factor of avg / sum / l2."""
        g = gy[(*lead, a, b)]
        if mode == "avg":
            cnt = imul(_count(rows, a, padding[0], count_include_pad),
                       _count(cols, b, padding[1], count_include_pad))
            return g / ir.Cast(cnt, dtype)
        if mode == "l2":
            yv = y[(*lead, a, b)]
            return ir.Select(ir.eq(yv, 0.0), zero, g / ir.Select(ir.eq(yv, 0.0), Const(1.0, dtype), yv))
        return g

    def put(cell, val):
        """Write (tiled) or accumulate val into cell; l2 (tiled) multiplies by x there."""
        if tiled:
            return gx.store(cell, val * x[cell] if mode == "l2" else val)
        return gx.store(cell, gx[cell] + val)

    def window(a, b, interior, tag):
        g = Var(f"g{tag}", dtype)
        out = [ir.Declare(g, gy[(*lead, a, b)] if mode == "max" else scale(a, b))]
        if interior:
            cells = [(*lead, rows.coord(a, u), cols.coord(b, v)) for u in range(ws[0]) for v in range(ws[1])]
            if mode != "max":
                return out + [put(cell, g) for cell in cells]
            stmts, bk = _chain_max([x[cell] for cell in cells], dtype, tag)
            out += stmts
            if tiled:
                return out + [gx.store(cell, ir.Select(ir.eq(bk, k), g, zero)) for k, cell in enumerate(cells)]
            bu, bv = ir.binop("floordiv", bk, Const(ws[1])), ir.binop("mod", bk, Const(ws[1]))
            cell = (*lead, rows.coord(a, bu), cols.coord(b, bv))
            return out + [gx.store(cell, gx[cell] + g)]
        ulo, uhi = rows.tap_range(a)
        vlo, vhi = cols.tap_range(b)
        u, v = Var(f"u{tag}"), Var(f"v{tag}")
        ri, ci = rows.coord(a, u), cols.coord(b, v)
        cell = (*lead, ri, ci)
        if mode != "max":
            return out + [ir.Loop(u, ulo, uhi, [ir.Loop(v, vlo, vhi, [put(cell, g)])])]
        out += _first_max(x, lead, rows, cols, a, b, dtype, tag)
        bu, bv = Var(f"bu{tag}"), Var(f"bv{tag}")
        if tiled:
            hit = land(ir.eq(ri, bu), ir.eq(ci, bv))
            return out + [ir.Loop(u, ulo, uhi, [ir.Loop(v, vlo, vhi, [
                gx.store(cell, ir.Select(hit, g, zero))])])]
        return out + [gx.store((*lead, bu, bv), gx[(*lead, bu, bv)] + g)]

    body = list(decl)
    if not tiled:
        body += zero_rect("", 0, H, 0, W)
    across = mode == "max" and tiled and lanes > 1 and 2 <= ws[1] <= MAX_LOAD_STRIDE

    def row_segment(si, alo, ahi, aint):
        a = Var(f"a{si}")
        row = []
        for sj, (blo, bhi, bint) in enumerate(cols.segments()):
            if _empty(blo, bhi):
                continue
            b, tag = Var(f"b{si}{sj}"), f"{si}{sj}"
            scalar = ir.Loop(b, blo, bhi, window(a, b, aint and bint, tag))
            if aint and bint and across:
                # whole vectors of windows, the last one overlapping the one before (its
                # windows recomputed, the same values stored): 16 lanes for rows of 16 or
                # more windows, else 8 (LeNet's 24- and 8-wide maps: 12 and 4 windows)
                nb = Var(f"nb{tag}")
                row.append(ir.Declare(nb, isub(bhi, blo)))
                for L in (8, lanes) if lanes > 8 else (lanes,):
                    bv, bend, bl = Var(f"bv{tag}_{L}"), Var(f"bend{tag}_{L}"), Var(f"bl{tag}_{L}")
                    whole = [ir.Declare(bend, iadd(blo, imul(ir.binop("floordiv", nb, Const(L)), L))),
                             ir.Loop(bv, blo, bend, _tiled_max_windows(x, gy, gx, lead, rows, cols, ws, a, bv, L,
                                                                      f"{tag}_{L}"), kind="vectorize", step=L),
                             ir.If(ir.lt(bend, bhi), [ir.Loop(bl, isub(bhi, L), iadd(isub(bhi, L), 1),
                                                              _tiled_max_windows(x, gy, gx, lead, rows, cols, ws, a,
                                                                                 bl, L, f"{tag}_{L}l"),
                                                              kind="vectorize", step=L)])]
                    # contiguous rows (or a broadcast gy: the gradient of a sum) only; the
                    # scalar windows serve any strides
                    scalar = ir.If(ir.ge(nb, L) & ir.unit_stride_test([x, gy, gx], [x, gy]), whole, [scalar])
            row.append(scalar)
        return ir.Loop(a, alo, ahi, row)
    segments = [(si, seg) for si, seg in enumerate(rows.segments()) if not _empty(seg[0], seg[1])]
    direct = [row_segment(si, *seg) for si, seg in segments]
    if mode == "max" and not tiled and stride[1] > 1:
        # separable first maximum for interior rows (see _separable_grad_rows): the same
        # winners; a cell shared by windows sums their gradients in another order (rounding)
        scratch = (LocalBuffer("rowmax", dtype, (SEPARABLE_MAX_WIDTH,)),
                   LocalBuffer("rowarg", "int32", (SEPARABLE_MAX_WIDTH,)),
                   LocalBuffer("rowkey", "int32", (SEPARABLE_MAX_WIDTH,)))
        fast = [row_segment(si, *seg) if not seg[2] else
                _separable_grad_rows(x, gy, gx, lead, scratch, rows, cols, ws, seg[0], seg[1], lanes, f"{si}")
                for si, seg in segments]
        body += [ir.Alloc(buf) for buf in scratch]
        body.append(ir.If(ir.le(W, SEPARABLE_MAX_WIDTH) & ir.unit_stride_test([x, gy, gx], [x, gy]), fast, direct))
    else:
        body += direct
    if tiled:  # cells beyond the last window (floor mode)
        rc, cc = imin(imul(OH, ws[0]), H), imin(imul(OW, ws[1]), W)
        body += zero_rect("r", rc, H, 0, W) + zero_rect("c", 0, rc, cc, W)
    elif mode == "l2":
        q2, r2 = Var("q2"), Var("r2")
        sc = ir.Loop(q2, 0, W, [gx.store((*lead, r2, q2), gx[(*lead, r2, q2)] * x[(*lead, r2, q2)])])
        body.append(ir.Loop(r2, 0, H, vector_loop(sc, lanes, idempotent=False)))
    loop = ir.Loop(p, 0, planes(gx, nlead), body, kind="parallel")
    params = {"max": (x, gy, gx), "l2": (x, y, gy, gx)}.get(mode, (gy, gx))
    name = name or pool_name("bwd", mode, dtype, ndim, ws, stride, padding, ignore_border,
                             count_include_pad)
    return freeze(ir.Kernel(name, params, [loop]))


def _tiled_max_windows(x, gy, gx, lead, rows, cols, ws, a, b0, lanes, tag):
    """``lanes`` interior windows b0.. of output row a of a tiled max pooling's gradient (stride
    == ws, ws[1] <= 4), vectorized over the windows: each window row's ws[1] vectors of x split
    into one vector per tap column (two-vector shuffles), the first maximum by ``_chain_max``
    on vectors, and each tap's 0-or-gy vector interleaved back into whole rows of gx (plain
    vector stores; the scalar windows stored one cell at a time, a quarter of the time of the
    LeNet step's pooling gradient went there)."""
    kh, kw = ws
    L = lanes
    c0 = cols.coord(b0, 0)
    g = Var(f"vg{tag}", x.dtype, L)
    out = [ir.Declare(g, gy.load((*lead, a, b0), L))]
    taps = []
    for u in range(kh):
        r = rows.coord(a, u)
        span = [x.load((*lead, r, iadd(c0, w * L)), L) for w in range(kw)]
        taps += [ir.Shuffle(span, [kw * lane + v for lane in range(L)]) for v in range(kw)]
    stmts, best = _chain_max(taps, x.dtype, f"v{tag}", L)
    out += stmts
    zero = ir.Broadcast(Const(0.0, x.dtype), L)
    for u in range(kh):
        r = rows.coord(a, u)
        cells = [ir.Select(ir.eq(best, ir.Broadcast(Const(u * kw + v, "int32"), L)), g, zero) for v in range(kw)]
        for w in range(kw):   # element e of the row's span: window e // kw, tap e % kw
            idx = [((w * L + lane) % kw) * L + (w * L + lane) // kw for lane in range(L)]
            out.append(gx.store((*lead, r, iadd(c0, w * L)), ir.Shuffle(cells, idx)))
    return out


def _take(val_r, val_l, u_r, u_l):
    """Whether candidate r replaces the current first maximum l (r comes later in its row):
    r is a NaN and l is not, or an earlier-row NaN; or neither is NaN and r is greater, or
    equal from an earlier row (so the winner is the first maximum in row-major order)."""
    r_nan, l_nan = ir.ne(val_r, val_r), ir.ne(val_l, val_l)
    earlier = ir.lt(u_r, u_l)
    nan_wins = land(r_nan, ir.binop("or", ir.logical_not(l_nan), earlier))
    bigger = ir.binop("or", ir.gt(val_r, val_l), land(ir.eq(val_r, val_l), earlier))
    return ir.binop("or", nan_wins, land(ir.logical_not(l_nan), bigger))


def _separable_grad_rows(x, gy, gx, lead, scratch, rows, cols, ws, alo, ahi, lanes, tag):
    """Interior output rows [alo, ahi) of max pooling's gradient with a column stride > 1:
    per row a, ``rowmax[c]``/``rowarg[c]`` = the first maximum of column c over the window's
    rows (a NaN wins, the first one) and its row offset, vectorized along the row; then each
    window picks the first maximum among its columns (interior windows: ``_first_of_row``;
    border windows fold their in-bounds columns left to right, ``_take``) and adds gy to gx
    at the winner."""
    rowmax, rowarg, rowkey = scratch
    a, c = Var(f"a{tag}"), Var(f"c{tag}")
    dtype = x.dtype
    width = x.dim(x.ndim - 1)
    best, arg = Var(f"cbest{tag}", dtype), Var(f"carg{tag}", "int32")
    down = [ir.Declare(best, x[(*lead, rows.coord(a, 0), c)]), ir.Declare(arg, Const(0, "int32"))]
    for u in range(1, ws[0]):
        val, t = Var(f"cval{tag}_{u}", dtype), Var(f"ctake{tag}_{u}", "bool")
        # a later row wins only if greater, or the first NaN (no earlier-row ties to break)
        take = ir.binop("or", ir.gt(val, best), land(ir.ne(val, val), ir.eq(best, best)))
        down += [ir.Declare(val, x[(*lead, rows.coord(a, u), c)]), ir.Declare(t, take),
                 ir.Assign(best, ir.Select(t, val, best)), ir.Assign(arg, ir.Select(t, Const(u, "int32"), arg))]
    down += [rowmax.store((c,), best), rowarg.store((c,), arg)]
    row = vector_loop(ir.Loop(c, 0, width, down), lanes, idempotent=True)
    for sj, (blo, bhi, bint) in enumerate(cols.segments()):
        if _empty(blo, bhi):
            continue
        if bint:
            row += _first_of_row(gy, gx, lead, scratch, rows, cols, ws, a, blo, bhi, lanes, f"{tag}{sj}")
            continue
        b = Var(f"b{tag}{sj}")
        # border columns: fold the in-bounds columns left to right
        mv, mu, mc = Var(f"mv{tag}{sj}", dtype), Var(f"mu{tag}{sj}", "int32"), Var(f"mc{tag}{sj}")
        lo, hi = cols.tap_range(b)
        pre, nm = declare_ints([(f"vlo{tag}{sj}", lo), (f"vhi{tag}{sj}", hi)])
        vlo, vhi = nm[f"vlo{tag}{sj}"], nm[f"vhi{tag}{sj}"]
        c0 = cols.coord(b, vlo)
        win = pre + [ir.Declare(mv, rowmax[(c0,)]), ir.Declare(mu, rowarg[(c0,)]), ir.Declare(mc, c0)]
        v = Var(f"v{tag}{sj}")
        cv = cols.coord(b, v)
        rv, ru, tk = Var(f"rv{tag}{sj}", dtype), Var(f"ru{tag}{sj}", "int32"), Var(f"tk{tag}{sj}", "bool")
        step = [ir.Declare(rv, rowmax[(cv,)]), ir.Declare(ru, rowarg[(cv,)]), ir.Declare(tk, _take(rv, mv, ru, mu)),
                ir.Assign(mv, ir.Select(tk, rv, mv)), ir.Assign(mu, ir.Select(tk, ru, mu)),
                ir.Assign(mc, ir.Select(tk, cv, mc))]
        win.append(ir.Loop(v, iadd(vlo, 1), vhi, step))
        cell = (*lead, rows.coord(a, ir.Cast(mu, "int64")), mc)
        win.append(gx.store(cell, gx[cell] + gy[(*lead, a, b)]))
        row.append(ir.Loop(b, blo, bhi, win))
    return ir.Loop(a, alo, ahi, row)


def _first_of_row(gy, gx, lead, scratch, rows, cols, ws, a, blo, bhi, lanes, tag):
    """The interior windows [blo, bhi) of output row a in ``_separable_grad_rows``, in two
    loops. First, per window without a dependency chain: the window max ``m`` (a max tree),
    then the smallest row-major key ``u << 16 | v`` over the columns whose maximum is ``m``
    (or a NaN: then ``m`` is NaN and only NaN columns match, each with its first NaN row) by a
    min tree, into ``rowkey[b]``; vectorized over b (strided loads of rowmax / rowarg), as
    scalar code LLVM turns the min tree's selects into unpredictable branches. Then gy is
    added to gx at each window's winner, serially: neighbouring windows may pick one cell."""
    rowmax, rowarg, rowkey = scratch
    b = Var(f"b{tag}")
    vals = [Var(f"hv{tag}_{v}", rowmax.dtype) for v in range(ws[1])]
    out = [ir.Declare(vals[v], rowmax[(cols.coord(b, v),)]) for v in range(ws[1])]
    m = Var(f"hm{tag}", rowmax.dtype)
    out.append(ir.Declare(m, _tree(list(vals), ir.maximum)))
    big = Const(0x7FFFFFFF, "int32")
    keys = []
    for v in range(ws[1]):
        hit = ir.binop("or", ir.eq(vals[v], m), ir.ne(vals[v], vals[v]))
        key = (rowarg[(cols.coord(b, v),)] << Const(16, "int32")) | Const(v, "int32")
        keys.append(ir.Select(hit, key, big))
    out.append(rowkey.store((b,), _tree(keys, ir.minimum)))
    find = _across(ir.Loop(b, blo, bhi, out), lanes, cols.s)
    bs, k = Var(f"bs{tag}"), Var(f"hk{tag}", "int32")
    u = ir.Cast(k >> Const(16, "int32"), "int64")
    v = ir.Cast(k & Const(0xFFFF, "int32"), "int64")
    cell = (*lead, rows.coord(a, u), cols.coord(bs, v))
    add = [ir.Declare(k, rowkey[(bs,)]), gx.store(cell, gx[cell] + gy[(*lead, a, bs)])]
    # windows ``apart`` positions apart share no cell: one pass per residue class keeps each
    # gx load clear of the store just before it (a same-cell chain stalls on every window)
    apart = -(-ws[1] // cols.s)
    return find + [ir.Loop(bs, iadd(blo, t), bhi, add, step=apart) for t in range(apart)]


def max_pool_grad_grad(dtype, ndim, ws, stride, padding, ignore_border=True, name=None):
    """out[window] = g at the window's first maximum of x. Params (x, g, out)."""
    dtype = ir.dtype_name(dtype)
    x, g, o = (BufferParam(n, dtype, ndim) for n in ("x", "g", "out"))
    rows, cols = _axes(x, o, ws, stride, padding, ignore_border)
    nlead = ndim - 2
    p, a, b = Var("p"), Var("a"), Var("b")
    decl, lead = lead_index(x, nlead, p)
    win = _first_max(x, lead, rows, cols, a, b, dtype)
    win.append(o.store((*lead, a, b), g[(*lead, Var("bu"), Var("bv"))]))
    body = list(decl) + [ir.Loop(a, 0, o.dim(ndim - 2), [ir.Loop(b, 0, o.dim(ndim - 1), win)])]
    loop = ir.Loop(p, 0, planes(x, nlead), body, kind="parallel")
    name = name or pool_name("bwd_bwd", "max", dtype, ndim, ws, stride, padding, ignore_border,
                             True)
    return freeze(ir.Kernel(name, (x, g, o), [loop]))


# ----------------------------------------------------------------------------- prob max pool


def np_sum(terms):
    """The sum of a list of expressions in numpy's order for a contiguous float reduction
    (pairwise_sum: sequential below 8 terms, 8 interleaved partial sums up to 128, halves
    above), so probabilities match the oracle's bit for bit where the math functions do."""
    n = len(terms)
    if n < 8:
        out = terms[0]
        for t in terms[1:]:
            out = out + t
        return out
    if n <= 128:
        r = list(terms[:8])
        i = 8
        while i < n - n % 8:
            r = [r[j] + terms[i + j] for j in range(8)]
            i += 8
        out = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]))
        for t in terms[i:]:
            out = out + t
        return out
    n2 = n // 2
    n2 -= n2 % 8
    return np_sum(terms[:n2]) + np_sum(terms[n2:])


def prob_name(kind, dtype, ndim, ws):
    return f"prob_max_pool_{kind}_k{pair(ws)}_{dt(dtype)}_{ndim}d"


def _block_probs(x, lead, a, b, ws, dtype):
    """(statements, unit expressions p_k (as declared locals), pool probability local) of block
    (a, b): a softmax over its units and one "off" state of energy 0, stabilized by max(0, max)."""
    bh, bw = ws
    xs = [x[(*lead, iadd(imul(a, bh), i), iadd(imul(b, bw), j))] for i in range(bh) for j in range(bw)]
    stmts = []
    xv = [Var(f"x{k}", dtype) for k in range(len(xs))]
    stmts += [ir.Declare(v, e) for v, e in zip(xv, xs)]
    m = xv[0]
    for v in xv[1:]:
        m = ir.maximum(m, v)
    mv = Var("m", dtype)
    stmts.append(ir.Declare(mv, ir.maximum(m, Const(0.0, dtype))))
    ev = [Var(f"e{k}", dtype) for k in range(len(xs))]
    stmts += [ir.Declare(e, ir.exp(v - mv)) for e, v in zip(ev, xv)]
    se, z = Var("se", dtype), Var("z", dtype)
    stmts += [ir.Declare(se, np_sum(ev)), ir.Declare(z, se + ir.exp(-mv))]
    pv = [Var(f"p{k}", dtype) for k in range(len(xs))]
    stmts += [ir.Declare(p, e / z) for p, e in zip(pv, ev)]
    pool = Var("ppool", dtype)
    stmts.append(ir.Declare(pool, se / z))
    return stmts, pv, pool


def _prob_kernel(kind, dtype, ndim, ws, params, per_block, name):
    dtype = ir.dtype_name(dtype)
    x = params[0]
    nlead = ndim - 2
    p, a, b = Var("p"), Var("a"), Var("b")
    decl, lead = lead_index(x, nlead, p)
    stmts, pv, pool = _block_probs(x, lead, a, b, ws, dtype)
    win = stmts + per_block(lead, a, b, pv, pool)
    bh, bw = ws
    nd = ndim
    body = list(decl) + [ir.Loop(a, 0, ir.binop("floordiv", x.dim(nd - 2), Const(bh)), [
        ir.Loop(b, 0, ir.binop("floordiv", x.dim(nd - 1), Const(bw)), win)])]
    loop = ir.Loop(p, 0, planes(x, nlead), body, kind="parallel")
    return freeze(ir.Kernel(name or prob_name(kind, dtype, ndim, ws), params, [loop]))


def _units(ws):
    return [(i, j) for i in range(ws[0]) for j in range(ws[1])]


def _unit_index(lead, a, b, ws, k):
    i, j = _units(ws)[k]
    return (*lead, iadd(imul(a, ws[0]), i), iadd(imul(b, ws[1]), j))


def prob_max_pool_fwd(dtype, ndim, ws, name=None):
    """(I) -> (detection probabilities, pool probabilities). Params (x, det, pool)."""
    x, det, pool = (BufferParam(n, dtype, ndim) for n in ("x", "det", "pool"))

    def per_block(lead, a, b, pv, pp):
        out = [det.store(_unit_index(lead, a, b, ws, k), pk) for k, pk in enumerate(pv)]
        return out + [pool.store((*lead, a, b), pp)]
    return _prob_kernel("fwd", dtype, ndim, ws, (x, det, pool), per_block, name)


def prob_max_pool_grad(dtype, ndim, ws, name=None):
    """gI = p * (g - sum_block(p * g)), g = g_det + g_pool. Params (x, gdet, gpool, gx)."""
    dtype = ir.dtype_name(dtype)
    x, gd, gp, gx = (BufferParam(n, dtype, ndim) for n in ("x", "gdet", "gpool", "gx"))

    def per_block(lead, a, b, pv, pp):
        gpv = Var("gp", dtype)
        out = [ir.Declare(gpv, gp[(*lead, a, b)])]
        gk = [Var(f"g{k}", dtype) for k in range(len(pv))]
        out += [ir.Declare(g, gd[_unit_index(lead, a, b, ws, k)] + gpv) for k, g in enumerate(gk)]
        dot = Var("dot", dtype)
        out.append(ir.Declare(dot, np_sum([p * g for p, g in zip(pv, gk)])))
        out += [gx.store(_unit_index(lead, a, b, ws, k), p * (g - dot))
                for k, (p, g) in enumerate(zip(pv, gk))]
        return out
    return _prob_kernel("bwd", dtype, ndim, ws, (x, gd, gp, gx), per_block, name)


def prob_max_pool_sample(dtype, ndim, ws, name=None):
    """(I, u) -> (detection sample, pool sample) by inverse CDF over the block's states
    (units row-major, "off" last; sequential running sums). Params (x, u, det, pool)."""
    dtype = ir.dtype_name(dtype)
    x, u, det, pool = (BufferParam(n, dtype, ndim) for n in ("x", "u", "det", "pool"))
    one, zero = Const(1.0, dtype), Const(0.0, dtype)

    def per_block(lead, a, b, pv, pp):
        uv, cnt = Var("uu", dtype), Var("cnt")
        out = [ir.Declare(uv, u[(*lead, a, b)])]
        cdf, count = None, Const(0)
        for k, p in enumerate(pv):
            cdf = p if cdf is None else Var(f"c{k - 1}", dtype) + p
            out.append(ir.Declare(Var(f"c{k}", dtype), cdf))
            le = ir.Cast(ir.le(Var(f"c{k}", dtype), uv), "int64")
            count = le if k == 0 else count + le
        out.append(ir.Declare(cnt, count))
        out += [det.store(_unit_index(lead, a, b, ws, k), ir.Select(ir.eq(cnt, k), one, zero))
                for k in range(len(pv))]
        out.append(pool.store((*lead, a, b), ir.Select(ir.lt(cnt, len(pv)), one, zero)))
        return out
    return _prob_kernel("sample", dtype, ndim, ws, (x, u, det, pool), per_block, name)

