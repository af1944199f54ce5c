"""Kernel builders for 2-d convolution (forward and both adjoints) and locally-connected layers.

Semantics: backends/numpy/conv.py (NCHW, cross-correlation, ``filter_flip`` flips the taps,
weights (F, C/groups, KH, KW); locally-connected weights (OH, OW, F, C, KH, KW), valid only).
Every builder returns one ``Kernel`` generic in every runtime size (batch, channels, image and,
unless given as ``ksize``, kernel size); the op props (stride, dilation, groups, flip) are baked
in. Padding is a separate pass (``pad_kernel`` into a temp), so the conv kernels themselves are
"valid" correlations with no bounds checks:

* forward: ``pad(x)`` then ``conv2d_fwd``: a parallel loop over (batch, group, block of
  ``choose_block`` output channels); per pair of output rows, the columns vectorized (the last
  vector overlapping the one before, so no scalar remainder) and per column 2 x block
  accumulators summed over (input channel, tap row, tap column) with FMAs (each weight load
  feeds 2 x block FMAs), tap columns unrolled when static;
* input gradient: ``pad(gy, up=stride)`` (zero-inserted and padded by (K-1)*d - p) then
  ``conv2d_grad_input``: the same nest, a stride-1 correlation with the transposed, flipped
  filters (a gather: no scatter, no atomics);
* weight gradient: ``pad(x)`` then ``conv2d_grad_weight``: parallel over (filter, channel), a
  set of taps accumulated at once in vector registers across the whole (batch, row) sum.
"""

from __future__ import annotations

from engine import kernel_ir as ir
from engine.kernel_ir import BufferParam, Const, Var
from engine.lowering.nn_util import (
    apply_chain,
    cdiv,
    clamp,
    declare_ints,
    dt,
    fdiv,
    freeze,
    iadd,
    imax,
    imin,
    imod,
    imul,
    ineg,
    isub,
    land,
    lane_choices,
    pair,
    vector_lanes,
    vector_loop,
    vectorize_overlapped,
)

# ----------------------------------------------------------------------------- names / props


def conv_name(kind, dtype, stride, padding, dilation, groups, filter_flip, ksize=(None, None),
              bias=False, epilogue=(), fblock=None, lanes=()):
    pad = padding if isinstance(padding, str) else pair(padding)
    name = f"conv2d_{kind}_s{pair(stride)}_p{pad}_d{pair(dilation)}_g{groups}"
    if filter_flip:
        name += "_flip"
    if ksize[0] is not None and ksize[1] is not None:
        name += f"_k{pair(ksize)}"
    if bias:
        name += "_bias"
    for e in epilogue:
        name += f"_{e}"
    if fblock:
        name += f"_fb{fblock}"
    if lanes:
        name += "_v" + "v".join(str(w) for w in lanes)
    return f"{name}_{dt(dtype)}"


def _ksize(w, ksize):
    kh = Const(ksize[0]) if ksize[0] is not None else w.dim(2)
    kw = Const(ksize[1]) if ksize[1] is not None else w.dim(3)
    return kh, kw


# ----------------------------------------------------------------------------- padding


def pad_name(dtype, up=(1, 1)):
    return f"pad2d{'' if tuple(up) == (1, 1) else '_up' + pair(up)}_{dt(dtype)}"


def pad_kernel(dtype, up=(1, 1), lanes=None, name=None):
    """out[n, c, r, q] = inp[n, c, (r - pt) / up0, (q - pl) / up1] where that is an element of
    inp (in bounds and, for up > 1, divisible), else 0: zero padding (up = 1) or the
    zero-insertion of a strided conv's output gradient. Params (inp, out, pt, pl); the offsets
    may be negative (cropping)."""
    dtype = ir.dtype_name(dtype)
    inp, out = BufferParam("inp", dtype, 4), BufferParam("out", dtype, 4)
    pt, pl = ir.ScalarParam("pt", "int64"), ir.ScalarParam("pl", "int64")
    lanes = vector_lanes(dtype) if lanes is None else lanes
    zero = Const(0.0, dtype)
    p, n, ch, r, q = (Var(s) for s in ("p", "n", "ch", "r", "q"))
    body = [ir.Declare(n, fdiv(p, out.dim(1))), ir.Declare(ch, imod(p, out.dim(1)))]
    if tuple(up) == (1, 1):
        t = Var("t")
        lo = clamp(pl, 0, out.dim(3))
        hi = clamp(iadd(pl, inp.dim(3)), lo, out.dim(3))
        q0, q1, q2 = Var("q0"), Var("q1"), Var("q2")
        copy = ir.Loop(q1, Var("lo"), Var("hi"), [out.store((n, ch, r, q1),
                                                            inp[n, ch, t, isub(q1, pl)])])
        copy = vector_loop(copy, lanes, idempotent=True)
        row_copy = [ir.Loop(q0, 0, Var("lo"), [out.store((n, ch, r, q0), zero)]), *copy,
                    ir.Loop(q2, Var("hi"), out.dim(3), [out.store((n, ch, r, q2), zero)])]
        zero_row = ir.Loop(q, 0, out.dim(3), [out.store((n, ch, r, q), zero)])
        zero_row = vector_loop(zero_row, lanes, idempotent=True)
        rows = ir.Loop(r, 0, out.dim(2), [
            ir.Declare(t, isub(r, pt)),
            ir.If(land(ir.ge(t, 0), ir.lt(t, inp.dim(2))), row_copy, zero_row)])
        body += [ir.Declare(Var("lo"), lo), ir.Declare(Var("hi"), hi), rows]
    else:
        tr, tq = Var("tr"), Var("tq")
        ok_r = land(ir.ge(tr, 0), ir.eq(imod(tr, up[0]), 0), ir.lt(fdiv(tr, up[0]), inp.dim(2)))
        ok_q = land(ir.ge(tq, 0), ir.eq(imod(tq, up[1]), 0), ir.lt(fdiv(tq, up[1]), inp.dim(3)))
        val = inp[n, ch, fdiv(tr, up[0]), fdiv(tq, up[1])]
        rows = ir.Loop(r, 0, out.dim(2), [ir.Declare(tr, isub(r, pt)), ir.Loop(q, 0, out.dim(3), [
            ir.Declare(tq, isub(q, pl)),
            ir.If(land(ok_r, ok_q), [out.store((n, ch, r, q), val)],
                  [out.store((n, ch, r, q), zero)])])])
        body.append(rows)
    loop = ir.Loop(p, 0, imul(out.dim(0), out.dim(1)), body, kind="parallel")
    return freeze(ir.Kernel(name or pad_name(dtype, up), (inp, out, pt, pl), [loop]))


# ----------------------------------------------------------------------------- direct nest


#: output rows a conv kernel computes together (register blocking along rows)
ROWS = 2


def choose_block(per_group):
    """Output channels computed together (they share every input load): a divisor of the
    static per-group count in 8..4 when there is one (no remainder loop), else 4 (or fewer)."""
    if isinstance(per_group, int):
        for fb in (8, 6, 5, 4):
            if per_group % fb == 0:
                return fb
        if per_group < 4:
            return per_group
    return 4


def _direct(*, inp, n, red, chan, wval, store, nout, stride, dilation, K, OH, OW, lanes, dtype,
            rows=None):
    """Rows of one (batch, channel block): out[a, b] for ``nout`` outputs, each the sum over
    (reduced channel r, tap u, tap v) of inp[n, chan(r), a*sh + u*dh, b*sw + v*dw] *
    wval(k, r, u, v), all in bounds (a "valid" correlation of a padded input).

    ``rows`` output rows are computed together (each weight load feeds rows x nout FMAs; the
    last block is shifted back to end at OH, recomputing a row). When sw == 1 the columns are
    vectorized at the widest of ``lanes`` that fits the row (the last vector overlapping the
    one before); narrower rows run a compact scalar loop."""
    rows = ROWS if rows is None else rows
    sh, sw = stride
    dh, dw = dilation
    kh, kw = K
    zero = Const(0.0, dtype)
    a, b = Var("a"), Var("b")
    rv = [Var(f"a{q}") for q in range(rows)]
    accs = [[Var(f"acc{q}_{k}", dtype) for k in range(nout)] for q in range(rows)]
    wv = [Var(f"w{k}", dtype) for k in range(nout)]
    r, u, v = Var("r"), Var("u"), Var("v")
    upd = [ir.Declare(wk, wval(k, r, u, v)) for k, wk in enumerate(wv)]
    for q in range(rows):
        xv = inp[n, chan(r), iadd(imul(rv[q], sh), imul(u, dh)), iadd(imul(b, sw), imul(v, dw))]
        xq = Var(f"x{q}", dtype)
        upd.append(ir.Declare(xq, xv))
        upd += [ir.Assign(acc, ir.fma(xq, wk, acc)) for acc, wk in zip(accs[q], wv)]

    def cols():
        taps = ir.Loop(u, 0, kh, [ir.Loop(v, 0, kw, upd)])
        body = [ir.Declare(acc, zero) for row in accs for acc in row] + [ir.Loop(r, 0, red, [taps])]
        body += [store(k, rv[q], b, acc) for q in range(rows) for k, acc in enumerate(accs[q])]
        return ir.Loop(b, 0, OW, body)
    row = [cols()]
    if sw == 1:
        for w in sorted(lanes):
            if w > 1:
                row = [ir.If(ir.ge(OW, w), vectorize_overlapped(cols(), w), row)]
    # rows a0 .. a0 + rows - 1, the last block shifted back (and clamped for tiny outputs)
    first = imax(imin(a, isub(OH, rows)), 0)
    pick = [ir.Declare(rv[0], first)] + [ir.Declare(rv[q], imin(iadd(rv[0], q), isub(OH, 1)))
                                         for q in range(1, rows)]
    return [ir.Loop(a, 0, imul(cdiv(OH, rows), rows), pick + row, step=rows)]


def _blocked(per_group, groups, nbatch, fblock, body):
    """Parallel loops over (batch, group, block of fblock channels), then the remainder channels
    of each group one at a time. body(n, g, first channel within the group, block size)
    returns statements."""
    out = []
    nblk = fdiv(per_group, fblock)
    parts = [(fblock, nblk, Const(0))]
    if fblock > 1:
        rem = isub(per_group, imul(nblk, fblock))
        if not (isinstance(rem, Const) and rem.value == 0):
            parts.append((1, rem, imul(nblk, fblock)))
    for pi, (fb, count, start) in enumerate(parts):
        if isinstance(count, Const) and count.value == 0:
            continue
        t = Var(f"t{pi}")
        per_n = imul(groups, count)
        decl, nm = declare_ints([("n", fdiv(t, per_n)), (f"rest{pi}", imod(t, per_n))])
        rest = nm[f"rest{pi}"]
        if groups == 1:
            d2, nm2 = declare_ints([("g", Const(0)), ("o0", iadd(start, imul(rest, fb)))])
        else:
            d2, nm2 = declare_ints([("g", fdiv(rest, count)),
                                    ("o0", iadd(start, imul(imod(rest, count), fb)))])
        stmts = decl + d2 + list(body(nm["n"], nm2["g"], nm2["o0"], fb))
        out.append(ir.Loop(t, 0, imul(nbatch, per_n), stmts, kind="parallel"))
    return out


# ----------------------------------------------------------------------------- forward


def conv2d_fwd(dtype, stride=(1, 1), padding=(0, 0), dilation=(1, 1), groups=1, filter_flip=False,
               ksize=(None, None), per_group=None, bias_ndim=None, bias_bcast=None, epilogue=(),
               fblock=None, lanes=None, width=None, name=None):
    """out = epilogue(conv2d(xp, w) [+ b]) of an already zero-padded input xp ("valid").
    Params (x, w[, b], out). ``padding`` only names the kernel (the pad is a separate kernel,
    ``pad_kernel``); ``per_group`` = F / groups when static (picks the channel block).

    ``bias_ndim``: the bias's ndim (None: no bias); it broadcasts to NCHW like numpy, and
    ``bias_bcast`` marks its dims of static size 1 (read at index 0 so loops stay vector).
    """
    dtype = ir.dtype_name(dtype)
    x, w, o = BufferParam("x", dtype, 4), BufferParam("w", dtype, 4), BufferParam("out", dtype, 4)
    bias = None if bias_ndim is None else BufferParam("bias", dtype, bias_ndim)
    kh, kw = _ksize(w, ksize)
    cg = w.dim(1)
    fg = fdiv(w.dim(0), groups)
    lanes = lane_choices(dtype, width) if lanes is None else lanes
    fblock = choose_block(per_group) if fblock is None else fblock
    f0, cin0 = Var("f0"), Var("cin0")

    def body(n, g, o0, fb):
        def wval(k, r, u, v):
            uu = isub(isub(kh, 1), u) if filter_flip else u
            vv = isub(isub(kw, 1), v) if filter_flip else v
            return w[iadd(f0, k), r, uu, vv]

        def store(k, a, b, acc):
            f = iadd(f0, k)
            val = acc
            if bias is not None:
                idx = (n, f, a, b)[4 - bias.ndim:]
                bc = bias_bcast or (False,) * bias.ndim
                val = val + bias[tuple(Const(0) if z else i for i, z in zip(idx, bc))]
            return o.store((n, f, a, b), apply_chain(epilogue, val))
        decl = [ir.Declare(f0, iadd(imul(g, fg), o0)), ir.Declare(cin0, imul(g, cg))]
        return decl + _direct(inp=x, n=n, red=cg, chan=lambda r: iadd(cin0, r), wval=wval,
                              store=store, nout=fb, stride=stride, dilation=dilation,
                              K=(kh, kw), OH=o.dim(2), OW=o.dim(3), lanes=lanes, dtype=dtype)

    loops = _blocked(fg, groups, x.dim(0), fblock, body)
    params = (x, w) + ((bias,) if bias is not None else ()) + (o,)
    name = name or conv_name("fwd", dtype, stride, padding, dilation, groups, filter_flip, ksize,
                             bias is not None, epilogue, fblock, lanes if stride[1] == 1 else ())
    return freeze(ir.Kernel(name, params, loops), keep=("u",))


# ----------------------------------------------------------------------------- input gradient


def conv2d_grad_input(dtype, stride=(1, 1), padding=(0, 0), dilation=(1, 1), groups=1,
                      filter_flip=False, ksize=(None, None), per_group=None, fblock=None,
                      lanes=None, width=None, name=None):
    """gx (N, C, H, W) from gyp, the output gradient zero-inserted (stride) and padded by
    (K-1)*d - p (``pad_kernel`` with up = stride), and w: a valid stride-1 correlation with the
    transposed, flipped filters. Params (gy, w, gx); ``per_group`` = C / groups when static."""
    dtype = ir.dtype_name(dtype)
    gy, w, gx = BufferParam("gy", dtype, 4), BufferParam("w", dtype, 4), BufferParam("gx", dtype, 4)
    kh, kw = _ksize(w, ksize)
    cg = w.dim(1)
    fg = fdiv(w.dim(0), groups)
    lanes = lane_choices(dtype, width) if lanes is None else lanes
    fblock = choose_block(per_group) if fblock is None else fblock
    f0, c0 = Var("f0"), Var("c0")

    def body(n, g, o0, fb):
        def wval(k, r, u, v):
            uu = u if filter_flip else isub(isub(kh, 1), u)
            vv = v if filter_flip else isub(isub(kw, 1), v)
            return w[iadd(f0, r), iadd(o0, k), uu, vv]

        def store(k, a, b, acc):
            return gx.store((n, iadd(c0, k), a, b), acc)
        decl = [ir.Declare(f0, imul(g, fg)), ir.Declare(c0, iadd(imul(g, cg), o0))]
        return decl + _direct(inp=gy, n=n, red=fg, chan=lambda r: iadd(f0, r), wval=wval,
                              store=store, nout=fb, stride=(1, 1), dilation=dilation,
                              K=(kh, kw), OH=gx.dim(2), OW=gx.dim(3), lanes=lanes, dtype=dtype)

    loops = _blocked(cg, groups, gx.dim(0), fblock, body)
    name = name or conv_name("bwd_input", dtype, stride, padding, dilation, groups, filter_flip,
                             ksize, fblock=fblock, lanes=lanes)
    return freeze(ir.Kernel(name, (gy, w, gx), loops), keep=("u",))


# ----------------------------------------------------------------------------- input gradient by GEMM


def col2im_name(dtype, filter_flip=False, ksize=(None, None)):
    k = f"_k{pair(ksize)}" if None not in ksize else ""
    return f"conv2d_col2im{'_flip' if filter_flip else ''}{k}_{dt(dtype)}"


def col2im_kernel(dtype, filter_flip=False, ksize=(None, None), lanes=None, name=None):
    """gx[n, c] = sum over the taps (u, v) of cols[(c*KH + u')*KW + v', n] (u' = u, or
    KH-1-u with ``filter_flip``) seen as an OH x OW image, shifted by (u - ph, v - pw) and
    clipped to H x W: the second half of the GEMM formulation of the input gradient of a
    stride-1 conv, cols (C*KH*KW, N, OH*OW) = w^T (C*KH*KW, F) @ gy^T (F, N*OH*OW).
    Params (cols, gx, ph, pw, [kh, kw], ow). Parallel over the (c, n) planes; a plane is
    cleared, then each tap adds its shifted rows (vectors along the row; one thread owns the
    plane, which stays in L1, so the scatter needs no atomics)."""
    dtype = ir.dtype_name(dtype)
    cols, gx = BufferParam("cols", dtype, 3), BufferParam("gx", dtype, 4)
    ph, pw, kh, kw, ow = (ir.ScalarParam(s, "int64") for s in ("ph", "pw", "kh", "kw", "ow"))
    kh = Const(ksize[0]) if ksize[0] is not None else kh
    kw = Const(ksize[1]) if ksize[1] is not None else kw
    lanes = vector_lanes(dtype) if lanes is None else lanes
    oh = fdiv(cols.dim(2), ow)
    p, n, ch, y, x, u, v, i, j = (Var(s) for s in ("p", "n", "ch", "y", "x", "u", "v", "i", "j"))
    row, dy, dx = Var("row"), Var("dy"), Var("dx")
    zero = Const(0.0, dtype)
    clear = ir.Loop(y, 0, gx.dim(2), vector_loop(
        ir.Loop(x, 0, gx.dim(3), [gx.store((n, ch, y, x), zero)]), lanes, idempotent=True))
    uu = isub(isub(kh, 1), u) if filter_flip else u
    vv = isub(isub(kw, 1), v) if filter_flip else v
    add = ir.Loop(j, Var("j0"), Var("j1"), [gx.store(
        (n, ch, iadd(i, dy), iadd(j, dx)),
        ir.binop("add", gx[n, ch, iadd(i, dy), iadd(j, dx)], cols[row, n, iadd(imul(i, ow), j)]))])
    tap = [ir.Declare(row, iadd(imul(iadd(imul(ch, kh), uu), kw), vv)),
           ir.Declare(dy, isub(u, ph)), ir.Declare(dx, isub(v, pw)),
           # output rows/columns whose shifted position lands inside the plane
           ir.Declare(Var("j0"), imax(0, ineg(dx))), ir.Declare(Var("j1"), imin(ow, isub(gx.dim(3), dx))),
           ir.Loop(i, imax(0, ineg(dy)), imin(oh, isub(gx.dim(2), dy)),
                   vector_loop(add, lanes, idempotent=False))]
    # planes in (c, n) order: a thread's KH*KW rows of cols are then read as that many
    # sequential streams (in (n, c) order each plane would touch KH*KW distant pages). Taps
    # by column shift v, then row shift u: consecutive row updates never overlap (v inner, a
    # row's load read the previous, one column over, partly stored: a store-forwarding stall
    # per vector, a third of the kernel's time at LeNet's 8-wide rows)
    body = [ir.Declare(ch, fdiv(p, gx.dim(0))), ir.Declare(n, imod(p, gx.dim(0))), clear,
            ir.Loop(v, 0, kw, [ir.Loop(u, 0, kh, tap)])]
    loop = ir.Loop(p, 0, imul(gx.dim(0), gx.dim(1)), body, kind="parallel")
    params = (cols, gx, ph, pw) + tuple(q for q in (kh, kw) if isinstance(q, ir.ScalarParam)) + (ow,)
    return freeze(ir.Kernel(name or col2im_name(dtype, filter_flip, ksize), params, [loop]))


# ----------------------------------------------------------------------------- weight gradient


def conv2d_grad_weight(dtype, stride=(1, 1), padding=(0, 0), dilation=(1, 1), groups=1,
                       filter_flip=False, ksize=(None, None), lanes=None, width=None, name=None):
    """gw (F, C/groups, KH, KW) from the zero-padded input xp and gy: gw[f, c, u, v] =
    sum_{n,i,j} gy[n, f, i, j] xp[n, g*Cg + c, i*sh + u*dh, j*sw + v*dw]. Params (x, gy, gw).

    Parallel over (f, c); a set of taps (all KH*KW when static and <= 25, else a row of KW, else
    one) accumulates at once in vector registers (one gy load feeds every tap) kept across the
    whole (n, i) reduction; the last partial vector of a row is masked. Rows narrower than a
    vector, and strided convs, run a scalar loop."""
    dtype = ir.dtype_name(dtype)
    sh, sw = stride
    dh, dw = dilation
    x, gy, gw = BufferParam("x", dtype, 4), BufferParam("gy", dtype, 4), BufferParam("gw", dtype, 4)
    kh, kw = _ksize(gw, ksize)
    cg = gw.dim(1)
    fg = fdiv(gw.dim(0), groups)
    lanes = (lane_choices(dtype, width) if lanes is None else lanes) if sw == 1 else ()
    zero = Const(0.0, dtype)
    f, cw, cin, n, i = Var("f"), Var("cw"), Var("cin"), Var("n"), Var("i")
    ow = gy.dim(3)

    def xload(tap, j, nl=1):
        u, v = tap
        return x.load((n, cin, iadd(imul(i, sh), imul(u, dh)), iadd(imul(j, sw), imul(v, dw))), nl)

    def stores(taps, vals):
        out = []
        for (u, v), val in zip(taps, vals):
            uu = isub(isub(kh, 1), u) if filter_flip else u
            vv = isub(isub(kw, 1), v) if filter_flip else v
            out.append(gw.store((f, cw, uu, vv), val))
        return out

    def scalar(taps):
        accs = [Var(f"s{k}", dtype) for k in range(len(taps))]
        j, g = Var("j"), Var("g", dtype)
        upd = [ir.Declare(g, gy[n, f, i, j])]
        upd += [ir.Assign(a, ir.fma(xload(t, j), g, a)) for t, a in zip(taps, accs)]
        loops = ir.Loop(n, 0, gy.dim(0), [ir.Loop(i, 0, gy.dim(2), [ir.Loop(j, 0, ow, upd)])])
        return [ir.Declare(a, zero) for a in accs] + [loops] + stores(taps, accs)

    def vector(taps, w):
        accs = [Var(f"a{k}_{w}", dtype, w) for k in range(len(taps))]
        jv, jt, full, gv = Var("jv"), Var("jt"), Var("full"), Var("gv", dtype, w)

        def update(jx, g):
            return [ir.Declare(gv, g)] + [ir.Assign(a, ir.fma(xload(t, jx, w), gv, a))
                                          for t, a in zip(taps, accs)]
        # the tail: the last w columns, those already summed masked to 0
        keep = ir.ge(ir.Ramp(jt, 1, w), ir.Broadcast(full, w))
        tail = ir.Select(keep, gy.load((n, f, i, jt), w), ir.Broadcast(zero, w))
        rows = ir.Loop(n, 0, gy.dim(0), [ir.Loop(i, 0, gy.dim(2), [
            ir.Loop(jv, 0, full, update(jv, gy.load((n, f, i, jv), w)), kind="vectorize", step=w),
            ir.If(ir.lt(full, ow), [ir.Loop(jt, isub(ow, w), iadd(isub(ow, w), 1), update(jt, tail),
                                            kind="vectorize", step=w)])])])
        out = [ir.Declare(full, imul(fdiv(ow, w), w))]
        out += [ir.Declare(a, ir.Broadcast(zero, w)) for a in accs] + [rows]
        return out + stores(taps, [ir.ReduceLanes("add", a) for a in accs])

    def tapset(taps):
        out = scalar(taps)
        for w in sorted(lanes):
            if w > 1:
                out = [ir.If(ir.ge(ow, w), vector(taps, w), out)]
        return out

    u, v = Var("u"), Var("v")
    if isinstance(kh, Const) and isinstance(kw, Const) and kh.value * kw.value <= 25:
        body = tapset([(Const(a), Const(b)) for a in range(kh.value) for b in range(kw.value)])
    elif isinstance(kw, Const) and kw.value <= 16:
        body = [ir.Loop(u, 0, kh, tapset([(u, Const(b)) for b in range(kw.value)]))]
    else:
        body = [ir.Loop(u, 0, kh, [ir.Loop(v, 0, kw, tapset([(u, v)]))])]
    fc = Var("fc")
    decl = [ir.Declare(f, fdiv(fc, cg)), ir.Declare(cw, imod(fc, cg)),
            ir.Declare(cin, iadd(imul(fdiv(f, fg), cg), cw))]
    loop = ir.Loop(fc, 0, imul(gw.dim(0), cg), decl + body, kind="parallel")
    name = name or conv_name("bwd_weight", dtype, stride, padding, dilation, groups, filter_flip,
                             ksize, lanes=lanes)
    return freeze(ir.Kernel(name, (x, gy, gw), [loop]))


# ----------------------------------------------------------------------------- locally connected


def lc_name(kind, dtype, stride):
    return f"locally_connected2d_{kind}_s{pair(stride)}_{dt(dtype)}"


def lc_fwd(dtype, stride=(1, 1), name=None):
    """out[n, f, i, j] = sum_{c,u,v} x[n, c, i*sh+u, j*sw+v] * w[i, j, f, c, u, v].
    Params (x, w, out); parallel over output positions (i, j), whose filters are reused
    across the batch."""
    dtype = ir.dtype_name(dtype)
    sh, sw = stride
    x, w, o = BufferParam("x", dtype, 4), BufferParam("w", dtype, 6), BufferParam("out", dtype, 4)
    ow = o.dim(3)
    p, n, f, ch, u, v = (Var(s) for s in ("p", "n", "f", "c", "u", "v"))
    i, j = Var("i"), Var("j")
    acc = Var("acc", dtype)
    upd = ir.Assign(acc, ir.fma(x[n, ch, iadd(imul(i, sh), u), iadd(imul(j, sw), v)],
                                w[i, j, f, ch, u, v], acc))
    red = ir.Loop(ch, 0, x.dim(1), [ir.Loop(u, 0, w.dim(4), [ir.Loop(v, 0, w.dim(5), [upd])])])
    body = [ir.Declare(i, fdiv(p, ow)), ir.Declare(j, imod(p, ow)),
            ir.Loop(n, 0, x.dim(0), [ir.Loop(f, 0, w.dim(2), [
                ir.Declare(acc, Const(0.0, dtype)), red, o.store((n, f, i, j), acc)])])]
    loop = ir.Loop(p, 0, imul(o.dim(2), ow), body, kind="parallel")
    return freeze(ir.Kernel(name or lc_name("fwd", dtype, stride), (x, w, o), [loop]))


def lc_grad_input(dtype, stride=(1, 1), name=None):
    """gx from gy (N, F, OH, OW) and w: per (n, c) plane (parallel) a serial scatter of every
    window's contribution, so overlapping windows accumulate without races. Params (gy, w, gx)."""
    dtype = ir.dtype_name(dtype)
    sh, sw = stride
    gy, w, gx = BufferParam("gy", dtype, 4), BufferParam("w", dtype, 6), BufferParam("gx", dtype, 4)
    pl, n, ch, r, q = (Var(s) for s in ("pl", "n", "c", "r", "q"))
    i, j, f, u, v = (Var(s) for s in ("i", "j", "f", "u", "v"))
    zero = Const(0.0, dtype)
    clear = ir.Loop(r, 0, gx.dim(2), [ir.Loop(q, 0, gx.dim(3), [gx.store((n, ch, r, q), zero)])])
    row, col = iadd(imul(i, sh), u), iadd(imul(j, sw), v)
    g = Var("g", dtype)
    scatter = ir.Loop(i, 0, gy.dim(2), [ir.Loop(j, 0, gy.dim(3), [ir.Loop(f, 0, gy.dim(1), [
        ir.Declare(g, gy[n, f, i, j]),
        ir.Loop(u, 0, w.dim(4), [ir.Loop(v, 0, w.dim(5), [
            gx.store((n, ch, row, col), ir.fma(g, w[i, j, f, ch, u, v], gx[n, ch, row, col]))])])])])])
    body = [ir.Declare(n, fdiv(pl, gx.dim(1))), ir.Declare(ch, imod(pl, gx.dim(1))), clear, scatter]
    loop = ir.Loop(pl, 0, imul(gx.dim(0), gx.dim(1)), body, kind="parallel")
    return freeze(ir.Kernel(name or lc_name("bwd_input", dtype, stride), (gy, w, gx), [loop]))


def lc_grad_weight(dtype, stride=(1, 1), name=None):
    """gw[i, j, f, c, u, v] = sum_n gy[n, f, i, j] * x[n, c, i*sh+u, j*sw+v]. Params (x, gy, gw);
    parallel over (i, j, f)."""
    dtype = ir.dtype_name(dtype)
    sh, sw = stride
    x, gy, gw = BufferParam("x", dtype, 4), BufferParam("gy", dtype, 4), BufferParam("gw", dtype, 6)
    t, i, j, f, ch, u, v, n = (Var(s) for s in ("t", "i", "j", "f", "c", "u", "v", "n"))
    nf, ow = gw.dim(2), gw.dim(1)
    acc = Var("acc", dtype)
    red = ir.Loop(n, 0, x.dim(0), [ir.Assign(acc, ir.fma(
        gy[n, f, i, j], x[n, ch, iadd(imul(i, sh), u), iadd(imul(j, sw), v)], acc))])
    taps = ir.Loop(ch, 0, gw.dim(3), [ir.Loop(u, 0, gw.dim(4), [ir.Loop(v, 0, gw.dim(5), [
        ir.Declare(acc, Const(0.0, dtype)), red, gw.store((i, j, f, ch, u, v), acc)])])])
    body = [ir.Declare(Var("ij"), fdiv(t, nf)), ir.Declare(f, imod(t, nf)),
            ir.Declare(i, fdiv(Var("ij"), ow)), ir.Declare(j, imod(Var("ij"), ow)), taps]
    loop = ir.Loop(t, 0, imul(imul(gw.dim(0), ow), nf), body, kind="parallel")
    return freeze(ir.Kernel(name or lc_name("bwd_weight", dtype, stride), (x, gy, gw), [loop]))


# ----------------------------------------------------------------------------- locally connected by GEMM
#
# Per output position p = (i, j) a locally-connected layer is a GEMM with its own filters:
# out[:, :, i, j]^T (F x N) = w[i, j] (F x K) @ patches[p]^T (K x N), K = C*KH*KW. The patches
# of every position, (P, N, K) with k = (c*KH + u)*KW + v (a window row is a contiguous run
# in x and in the patches), make the three products batched GEMMs over P
# (engine/lowering/nn.py: _lc_gemm); col2im adds the input gradient's patches back.


def lc_patches_kernel(dtype, stride=(1, 1), name=None):
    """patches[p, n, (c*KH + u)*KW + v] = x[n, c, i*sh + u, j*sw + v], p = i*OW + j. Params
    (x, patches, kh, kw, ow); parallel over positions."""
    dtype = ir.dtype_name(dtype)
    sh, sw = stride
    x, pt = BufferParam("x", dtype, 4), BufferParam("patches", dtype, 3)
    kh, kw, ow = ir.ScalarParam("kh", "int64"), ir.ScalarParam("kw", "int64"), ir.ScalarParam("ow", "int64")
    p, ch, u, v, n, i, j = (Var(s) for s in ("p", "c", "u", "v", "n", "i", "j"))
    row = ir.Loop(v, 0, kw, [pt.store((p, n, iadd(imul(iadd(imul(ch, kh), u), kw), v)),
                                      x[n, ch, iadd(imul(i, sh), u), iadd(imul(j, sw), v)])])
    taps = ir.Loop(n, 0, x.dim(0), [ir.Loop(ch, 0, x.dim(1), [ir.Loop(u, 0, kh, [row])])])
    body = [ir.Declare(i, fdiv(p, ow)), ir.Declare(j, imod(p, ow)), taps]
    loop = ir.Loop(p, 0, pt.dim(0), body, kind="parallel")
    return freeze(ir.Kernel(name or f"lc_patches_s{pair(stride)}_{dt(dtype)}", (x, pt, kh, kw, ow), [loop]))


def lc_col2im_kernel(dtype, stride=(1, 1), name=None):
    """gx[n, c, i*sh + u, j*sw + v] = sum over the windows covering it of gp[p, n, (c*KH + u)*KW
    + v]: per (n, c) plane (parallel) cleared, then every window added in order (overlaps
    accumulate without races; a window row is a contiguous run of gp). Params (gp, gx, kh,
    kw, ow)."""
    dtype = ir.dtype_name(dtype)
    sh, sw = stride
    gp, gx = BufferParam("gp", dtype, 3), BufferParam("gx", dtype, 4)
    kh, kw, ow = ir.ScalarParam("kh", "int64"), ir.ScalarParam("kw", "int64"), ir.ScalarParam("ow", "int64")
    pl, n, ch, r, q, p, u, v, i, j = (Var(s) for s in ("pl", "n", "c", "r", "q", "p", "u", "v", "i", "j"))
    zero = Const(0.0, dtype)
    clear = ir.Loop(r, 0, gx.dim(2), [ir.Loop(q, 0, gx.dim(3), [gx.store((n, ch, r, q), zero)])])
    row, col = iadd(imul(i, sh), u), iadd(imul(j, sw), v)
    add = ir.Loop(p, 0, gp.dim(0), [
        ir.Declare(i, fdiv(p, ow)), ir.Declare(j, imod(p, ow)),
        ir.Loop(u, 0, kh, [ir.Loop(v, 0, kw, [gx.store(
            (n, ch, row, col), gx[n, ch, row, col] + gp[p, n, iadd(imul(iadd(imul(ch, kh), u), kw), v)])])])])
    body = [ir.Declare(n, fdiv(pl, gx.dim(1))), ir.Declare(ch, imod(pl, gx.dim(1))), clear, add]
    loop = ir.Loop(pl, 0, imul(gx.dim(0), gx.dim(1)), body, kind="parallel")
    return freeze(ir.Kernel(name or f"lc_col2im_s{pair(stride)}_{dt(dtype)}", (gp, gx, kh, kw, ow), [loop]))
