"""Lowerings of the deep-learning ops to kernel IR: conv2d (+ both gradients), locally-connected
(+ grads), pooling (+ grad, + max grad-grad), LCN (+ grad), probabilistic max-pooling (+ grad,
+ sampler), softmax / log_softmax / softmax cross-entropy, and the fused conv / pool ops.

Each op has a *plan* function, ``<op>_plan(props..., dtype, static info) -> Lowered``, which the
``@lowering`` rule calls with the node's props and static types, and which tests call directly.
The kernels come from the builders of nn_conv, nn_pool, nn_lcn and nn_softmax; their names
encode the configuration (``conv2d_fwd_s1x1_p0x0_d1x1_g1_k5x5_f32``); op props are baked in,
every ``None`` dim is a run-time size. Kernels are already scheduled for the CPU (parallel outer
loop, vectorized inner loop); a backend that binds loops differently re-lowers from the builders.
"""

from __future__ import annotations

import contextlib
import contextvars

import numpy as np

from engine.errors import KilnShapeError
from engine.lower import HostScalar, In, Lowered, Out, Step, Tmp, lowering
from engine.lowering import nn_conv as C
from engine.lowering import nn_pool as P
from engine.lowering import nn_softmax as S
from engine.lowering.nn_lcn import lcn_grad_plan, lcn_plan  # noqa: F401  (plans of this module)

# ----------------------------------------------------------------------------- helpers


def shape_arg(a: np.ndarray) -> tuple:
    """A shape input: an int vector, or a "like" array whose shape is meant."""
    return tuple(int(d) for d in a) if a.ndim == 1 else tuple(a.shape)


def ir_float(dtype) -> bool:
    """float32/float64: the dtypes the generated GEMM serves."""
    return str(np.dtype(dtype)) in ("float32", "float64")


def _static(dims):
    return tuple(d if isinstance(d, int) else None for d in dims)


def _eff(k, d):
    return d * (k - 1) + 1


def conv_padding(padding, dilation, kh, kw):
    """(ph, pw) of a conv op's padding (a pair or "same" / "full") for kernel size (kh, kw)."""
    if not isinstance(padding, str):
        return tuple(padding)
    spans = ((_eff(kh, dilation[0]) - 1), (_eff(kw, dilation[1]) - 1))
    return spans if padding == "full" else (spans[0] // 2, spans[1] // 2)


def _err(node, msg):
    """A KilnShapeError for a run-time shape problem (naming the node when there is one)."""
    if node is not None:
        from engine.lowering.common import shape_error
        return shape_error(node, msg)
    return KilnShapeError(msg)


def _conv_out(node, xs, ws, stride, padding, dilation, groups):
    """The forward conv's output shape for input shape xs and filter shape ws, checked."""
    if len(xs) != 4 or len(ws) != 4:
        raise _err(node, f"conv2d needs 4-d input and filter shapes, given {xs} and {ws}")
    (n, c, h, w), (f, cg, kh, kw) = xs, ws
    if c != cg * groups or f % groups:
        raise _err(node, f"input shape {xs} and filter shape {ws} do not agree for groups={groups} "
                         f"(channels must be {cg} x {groups}, filters divisible by {groups})")
    ph, pw = conv_padding(padding, dilation, kh, kw)
    eh, ew = _eff(kh, dilation[0]), _eff(kw, dilation[1])
    if h + 2 * ph < eh or w + 2 * pw < ew:
        raise _err(node, f"the padded input {(h + 2 * ph, w + 2 * pw)} of input shape {xs} is smaller "
                         f"than the (dilated) kernel {(eh, ew)}")
    return (n, f, (h + 2 * ph - eh) // stride[0] + 1, (w + 2 * pw - ew) // stride[1] + 1)


def _same(node, what, got, want):
    if tuple(got) != tuple(want):
        raise _err(node, f"{what} has shape {tuple(got)}, expected {tuple(want)}")


def _pad_input(dtype, pads):
    """x zero-padded by ``pads(ins) -> (ph, pw)`` into Tmp(0): the pad kernel, its step and the
    temp's (dtype, shape_fn), for the convolutions whose padding is not statically 0."""
    pad = C.pad_kernel(dtype)

    def padded(ins):
        (n, c, h, w), (ph, pw) = ins[0].shape, pads(ins)
        return (n, c, h + 2 * ph, w + 2 * pw)
    step = Step(pad.name, (In(0), Tmp(0), HostScalar(lambda ins: pads(ins)[0]),
                           HostScalar(lambda ins: pads(ins)[1])))
    return pad, step, (dtype, padded)


def _static_padding(padding, dilation, ksize):
    if not isinstance(padding, str):
        return tuple(padding)
    if None in ksize:
        return None
    return conv_padding(padding, dilation, *ksize)


# ----------------------------------------------------------------------------- convolution


def conv2d_plan(dtype, stride=(1, 1), padding=(0, 0), dilation=(1, 1), groups=1, filter_flip=False,
                ksize=(None, None), nfilters=None, bias=None, epilogue=(), width=None,
                node=None, channels=None) -> Lowered:
    """Inputs (x, w[, bias]) -> out. ``bias``: None or (ndim, static shape) of the bias;
    ``nfilters`` / ``width`` / ``channels``: the static filter count / output width / input
    channels per group (w's second dim), when known. By ``fwd_by_gemm``: an implicit GEMM,
    else direct."""
    ksize = _static(ksize)
    per_group = nfilters // groups if isinstance(nfilters, int) else None
    bias_ndim = bias_bcast = None
    if bias is not None:
        bias_ndim = bias[0]
        bias_bcast = tuple(d == 1 for d in bias[1])

    def pads(ins):
        return conv_padding(padding, dilation, *ins[1].shape[2:])

    def out_shape(ins):
        out = _conv_out(node, ins[0].shape, ins[1].shape, stride, padding, dilation, groups)
        if bias is not None:
            b = ins[2].shape
            if len(b) > 4 or any(d not in (1, o) for d, o in zip(b[::-1], out[::-1])):
                raise _err(node, f"the bias of shape {b} does not broadcast to the output {out}")
        return [out]

    extra = (In(2),) if bias is not None else ()
    unpadded = _static_padding(padding, dilation, ksize) == (0, 0)
    if ir_float(dtype) and fwd_by_gemm(groups):
        depth = channels * ksize[0] * ksize[1] if None not in (channels, *ksize) else None
        gemm = _fwd_gemm(dtype, stride, dilation, filter_flip, ksize, nfilters, width, depth,
                         bias_ndim, bias_bcast, epilogue)
        if unpadded:
            return gemm(In(0), [], [], out_shape)
        pad, pad_step, temp = _pad_input(dtype, pads)
        low = gemm(Tmp(0), [pad_step], [temp], out_shape)
        low.kernels.insert(0, pad)
        return low
    conv = C.conv2d_fwd(dtype, stride, padding, dilation, groups, filter_flip, ksize, per_group,
                        bias_ndim, bias_bcast, epilogue, width=width)
    if unpadded:
        return Lowered([conv], [Step(conv.name, (In(0), In(1), *extra, Out(0)))], out_shape)
    pad, pad_step, temp = _pad_input(dtype, pads)
    return Lowered([pad, conv], [pad_step, Step(conv.name, (Tmp(0), In(1), *extra, Out(0)))], out_shape, [temp])


def fwd_by_gemm(groups) -> bool:
    """The formulation rule of the forward conv. Direct (``C.conv2d_fwd``) reuses each weight
    load over 2 rows x a block of <= 8 filters but is bound by its loads; the implicit GEMM
    (engine/lowering/conv_fwd_gemm.py) keeps 24 vector accumulators busy, tiled by output
    columns or by positions (whichever wastes less, per launch), so it serves any size:
    measured on one thread it won on LeNet layer 1 (1 channel, 20 filters: 2.6 vs 2.7 ms),
    layer 2 (13.0 vs 15.2 ms) and the 3-channel 5x5 benchmark conv (3.1 vs 4.9 ms). So: every
    ungrouped conv runs as the GEMM (any stride, dilation, padding, flip, bias and
    epilogue); a grouped one runs direct."""
    return not _DIRECT_ONLY.get() and groups == 1


def _fwd_gemm(dtype, stride, dilation, filter_flip, ksize, nfilters, width, depth, bias_ndim,
              bias_bcast, epilogue):
    """A builder ``(xsrc, pre steps, temps, out_shape) -> Lowered`` of the implicit-GEMM
    forward (engine/lowering/conv_fwd_gemm.py): the filters packed into wq (C*KH*KW, Fp),
    then the GEMM from the (padded) input ``xsrc`` into out, tiled by columns or by positions
    (``by_columns``: decided here when the width and the filter count are static, else per
    launch)."""
    from engine.lowering import conv_fwd_gemm as FG
    from engine.lowering.gemm import num_threads

    tiles = FG.fwd_tiles(dtype, nfilters)
    pk = FG.pack_filters_kernel(dtype, filter_flip)
    gk = FG.fwd_gemm_kernel(dtype, stride, dilation, tiles, FG.by_columns(width, nfilters, depth, tiles),
                            bias_ndim, bias_bcast, epilogue)

    def wq_shape(ins):
        f, c, kh, kw = ins[1].shape
        return (c * kh * kw, FG.padded_filters(f, tiles))
    sizes = [HostScalar(lambda ins: ins[1].shape[2]), HostScalar(lambda ins: ins[1].shape[3])]
    extra = (In(2),) if bias_ndim is not None else ()

    def build(xsrc, pre, temps, out_shape):
        t_wq = len(temps)
        steps = list(pre) + [
            Step(pk.name, (In(1), Tmp(t_wq))),
            Step(gk.name, (xsrc, Tmp(t_wq), *extra, Out(0), *sizes, HostScalar(num_threads))),
        ]
        return Lowered([pk, gk], steps, out_shape, list(temps) + [(dtype, wq_shape)])
    return build


#: channels (input and output, per group) from which the input gradient runs as a GEMM
GEMM_MIN_CHANNELS = 8
_DIRECT_ONLY = contextvars.ContextVar("kiln_conv_direct_only", default=False)


@contextlib.contextmanager
def direct_formulation():
    """Lower conv nodes with the direct formulation only, inside this block: for a target
    that swaps the direct correlation kernel for its own (the CUDA backend's tiled convs)."""
    token = _DIRECT_ONLY.set(True)
    try:
        yield
    finally:
        _DIRECT_ONLY.reset(token)


def grad_input_by_gemm(stride, dilation, groups, channels, nfilters) -> bool:
    """The formulation rule of the input gradient. Direct (a correlation of the zero-padded
    gy with the flipped filters) computes H*W*KH*KW*F*C multiply-adds, of which only
    OH*OW*KH*KW*F*C are not on padding zeros, and keeps up with a GEMM only while its F x C
    block of filters is small. So: a stride-1, undilated, ungrouped conv whose input channels
    (static) and filters (when static) are both >= GEMM_MIN_CHANNELS runs as the shared GEMM
    (cols = gy^T @ w per image) plus a col2im gather; anything else runs direct."""
    return (not _DIRECT_ONLY.get() and tuple(stride) == (1, 1) and tuple(dilation) == (1, 1) and groups == 1 and
            isinstance(channels, int) and channels >= GEMM_MIN_CHANNELS and
            (not isinstance(nfilters, int) or nfilters >= GEMM_MIN_CHANNELS))


#: the input gradient's GEMM + col2im run in this many chunks of images (steps are static; a
#: chunk past the batch is empty), each of at least GRAD_INPUT_MIN_IMAGES images. LeNet layer 2
#: at batch 500 (cols: 128 KB an image), median ms for 16 / 8 / 4 / 2 / 1 chunks: 12.8 / 11.8 /
#: 11.5 / 11.0 / 11.8: bigger GEMMs and fewer launches gain more than cols staying in L2; 4
#: keeps the temporary at a quarter of the batch's cols (16 MB there)
GRAD_INPUT_CHUNKS = 4
GRAD_INPUT_MIN_IMAGES = 4


def _chunk(ins, k):
    """Images [lo, hi) of chunk k of the batch of gy = ins[0]."""
    n = ins[0].shape[0]
    size = max(GRAD_INPUT_MIN_IMAGES, -(-n // GRAD_INPUT_CHUNKS))
    return min(n, k * size), min(n, (k + 1) * size)


def _grad_input_gemm(dtype, padding, filter_flip, ksize, out_shape) -> Lowered:
    """gy^T (F, N, OH*OW) = a copy of gy with its first two axes swapped, then per chunk of
    images [lo, hi): one GEMM (the 2-d kernel every product shares; transposes, reshapes and
    chunk slices are launch-time views) cols (C*KH*KW, (hi-lo)*OH*OW) = w^T (C*KH*KW, F) @
    gy^T[:, lo:hi] (F, (hi-lo)*OH*OW), then gx[lo:hi] = col2im(cols). Chunks bound the cols
    temporary (the whole batch's cols of LeNet layer 2 at batch 500 is 64 MB); GRAD_INPUT_CHUNKS
    says why there are few."""
    from engine.lowering import gemm as G
    from engine.lowering.common import ArgView, copy_kernel

    def gy_swapped(g, ins):   # (N, F, OH, OW) -> (F, N, OH*OW), strides only
        return g.reshape(g.shape[0], g.shape[1], g.shape[2] * g.shape[3]).swapaxes(0, 1)

    def w_t(w, ins):          # (F, C, KH, KW) -> (C*KH*KW, F)
        return w.reshape(w.shape[0], w.shape[1] * w.shape[2] * w.shape[3]).T

    def gy_t_shape(ins):
        n, f, oh, ow = ins[0].shape
        return (f, n, oh * ow)

    def cols_shape(ins):      # one chunk's cols
        (_, _, oh, ow), (_, c, kh, kw) = ins[0].shape, ins[1].shape
        lo, hi = _chunk(ins, 0)
        return (c * kh * kw, hi - lo, oh * ow)

    def chunk_views(k):
        def gy_part(t, ins):    # gy^T[:, lo:hi] as (F, (hi-lo)*OH*OW)
            lo, hi = _chunk(ins, k)
            return t[:, lo:hi].reshape(t.shape[0], (hi - lo) * t.shape[2])

        def cols_part(t, ins):  # the chunk's cols (C*KH*KW, hi-lo, OH*OW)
            lo, hi = _chunk(ins, k)
            return t[:, :hi - lo]

        def cols_flat(t, ins):
            c = cols_part(t, ins)
            return c.reshape(c.shape[0], c.shape[1] * c.shape[2])

        def gx_part(o, ins):
            lo, hi = _chunk(ins, k)
            return o[lo:hi]
        return gy_part, cols_part, cols_flat, gx_part

    def pads(ins):
        return conv_padding(padding, (1, 1), *ins[1].shape[2:])
    copy = copy_kernel(dtype, 3)
    ck = C.col2im_kernel(dtype, filter_flip, ksize)
    sizes = [HostScalar(lambda ins: pads(ins)[0]), HostScalar(lambda ins: pads(ins)[1])]
    if None in ksize:
        sizes += [HostScalar(lambda ins: ins[1].shape[2]), HostScalar(lambda ins: ins[1].shape[3])]
    sizes.append(HostScalar(lambda ins: ins[0].shape[3]))
    steps = [Step(copy.name, (ArgView(In(0), gy_swapped), Tmp(1)))]
    for k in range(GRAD_INPUT_CHUNKS):
        gy_part, cols_part, cols_flat, gx_part = chunk_views(k)
        gk, gstep = G.gemm_step(dtype, ArgView(In(1), w_t), ArgView(Tmp(1), gy_part),
                                ArgView(Tmp(0), cols_flat))
        steps += [gstep, Step(ck.name, (ArgView(Tmp(0), cols_part), ArgView(Out(0), gx_part), *sizes))]
    return Lowered([copy, gk, ck], steps, out_shape, [(dtype, cols_shape), (dtype, gy_t_shape)])


def conv2d_grad_input_plan(dtype, stride=(1, 1), padding=(0, 0), dilation=(1, 1), groups=1,
                           filter_flip=False, ksize=(None, None), channels=None,
                           width=None, node=None, nfilters=None) -> Lowered:
    """Inputs (gy, w, x_shape) -> gx. By ``grad_input_by_gemm``: the shared GEMM plus a
    col2im gather, or direct: gy zero-inserted (stride) and padded by (K-1)*d - p into a
    temp, then a valid correlation with the transposed, flipped filters."""
    ksize = _static(ksize)
    per_group = channels // groups if isinstance(channels, int) else None

    def out_shape(ins):
        xs = shape_arg(ins[2])
        _same(node, "the output gradient", ins[0].shape,
              _conv_out(node, xs, ins[1].shape, stride, padding, dilation, groups))
        return [xs]
    if ir_float(dtype) and grad_input_by_gemm(stride, dilation, groups, channels, nfilters):
        return _grad_input_gemm(dtype, padding, filter_flip, ksize, out_shape)
    conv = C.conv2d_grad_input(dtype, stride, padding, dilation, groups, filter_flip, ksize,
                               per_group, width=width)

    def offsets(ins):
        kh, kw = ins[1].shape[2:]
        ph, pw = conv_padding(padding, dilation, kh, kw)
        return (_eff(kh, dilation[0]) - 1 - ph, _eff(kw, dilation[1]) - 1 - pw)

    sp = _static_padding(padding, dilation, ksize)
    if tuple(stride) == (1, 1) and sp is not None and None not in ksize and \
            sp == (_eff(ksize[0], dilation[0]) - 1, _eff(ksize[1], dilation[1]) - 1):
        return Lowered([conv], [Step(conv.name, (In(0), In(1), Out(0)))], out_shape)
    pad = C.pad_kernel(dtype, stride)

    def padded(ins):
        n, _, h, w = shape_arg(ins[2])
        kh, kw = ins[1].shape[2:]
        return (n, ins[0].shape[1], h + _eff(kh, dilation[0]) - 1, w + _eff(kw, dilation[1]) - 1)
    steps = [Step(pad.name, (In(0), Tmp(0), HostScalar(lambda ins: offsets(ins)[0]),
                             HostScalar(lambda ins: offsets(ins)[1]))),
             Step(conv.name, (Tmp(0), In(1), Out(0)))]
    return Lowered([pad, conv], steps, out_shape, [(dtype, padded)])


#: rows (C*KH*KW) of the weight gradient's GEMM from which it runs as one (grad_weight_by_gemm)
GEMM_MIN_ROWS = 64


def grad_weight_by_gemm(groups, wshape) -> bool:
    """The formulation rule of the weight gradient. Direct (``C.conv2d_grad_weight``: per
    (filter, channel) all KH*KW taps in registers, summed over the whole batch) streams
    x[:, c] and gy[:, f] from memory once per (f, c) pair; the implicit GEMM
    (engine/lowering/conv_gemm.py) reads gy once (each thread its own images) and keeps
    MR x NR accumulators busy, but computes whole tiles: it wins once its C*KH*KW rows fill
    them. So: an ungrouped conv whose filter shape (F, C, KH, KW) is static with
    C*KH*KW >= GEMM_MIN_ROWS (LeNet layer 2: 500; the 3-channel 5x5 benchmark conv: 75) and
    F >= GEMM_MIN_CHANNELS runs as the GEMM; anything else (LeNet layer 1: 25 rows) direct."""
    if _DIRECT_ONLY.get() or groups != 1 or len(wshape) != 4:
        return False
    f, c, kh, kw = wshape
    if not all(isinstance(d, int) for d in (f, c, kh, kw)):
        return False
    return c * kh * kw >= GEMM_MIN_ROWS and f >= GEMM_MIN_CHANNELS


def _partial_units(work: int, images: int) -> int:
    """Partial weight gradients a launch sums: one per thread (each its own images), one for
    small work (~7 us, where waking a thread costs more than it saves)."""
    from engine.lowering import conv_gemm as CG
    from engine.lowering.gemm import num_threads

    return 1 if work < CG.SERIAL_WORK else max(1, min(num_threads(), images))


def _grad_weight_gemm(dtype, stride, dilation, filter_flip, ksize, nfilters, xsrc, pre,
                      out_shape, temps) -> Lowered:
    """``pre`` steps (the padding of x into ``xsrc``), then the implicit GEMM into per-thread
    partials gwp (U, C*KH*KW, Fp) (each thread transposing its own images of gy into its buffer)
    and their sum, transposed, into gw."""
    from engine.lowering import conv_gemm as CG
    from engine.lowering.common import ArgView

    tile = CG.tile_shape(dtype, nfilters)
    lanes, _, nv = tile
    gk = CG.grad_weight_gemm_kernel(dtype, stride, dilation, filter_flip, ksize, tile)
    sk = CG.sum_partials_kernel(dtype)
    t_gwp, t_buf = len(temps), len(temps) + 1

    def units(ins):
        n, f, oh, ow = ins[1].shape
        fo, c, kh, kw = shape_arg(ins[2])
        return _partial_units(c * kh * kw * CG.padded_filters(f, lanes, nv) * n * oh * ow, n)

    def gwp_shape(ins):
        f, c, kh, kw = shape_arg(ins[2])
        return (units(ins), c * kh * kw, CG.padded_filters(f, lanes, nv))

    def buf_shape(ins):
        n, f, oh, ow = ins[1].shape
        fp = CG.padded_filters(f, lanes, nv)
        return (units(ins), CG.block_rows(oh, ow, fp) * ow, fp)

    def gw_flat(o, ins):   # gw (F, C, KH, KW) -> (F, C*KH*KW), a fresh contiguous array
        return o.reshape(o.shape[0], -1)
    sizes = [HostScalar(lambda ins, a=a: shape_arg(ins[2])[a]) for a, k in ((2, ksize[0]), (3, ksize[1]))
             if k is None]
    def gy_flat(g, ins):   # (N, F, OH, OW) -> (N, F, OH*OW): positions run across rows
        n, f, oh, ow = g.shape
        return g.reshape(n, f, oh * ow)
    steps = list(pre) + [
        Step(gk.name, (xsrc, ArgView(In(1), gy_flat), Tmp(t_gwp), Tmp(t_buf), *sizes,
                       HostScalar(lambda ins: ins[1].shape[3]))),
        Step(sk.name, (Tmp(t_gwp), ArgView(Out(0), gw_flat))),
    ]
    return Lowered([gk, sk], steps, out_shape,
                   list(temps) + [(dtype, gwp_shape), (dtype, buf_shape)])


def _rows_apply(dtype, stride, dilation, groups, wshape, width) -> bool:
    """Few rows (below the GEMM's): dot products along output rows (conv_gw_rows.py), when
    its conditions hold (static filters, unit stride, a row of at least one vector)."""
    from engine.lowering import conv_gemm as CG
    from engine.lowering import conv_gw_rows as RW

    return not _DIRECT_ONLY.get() and ir_float(dtype) and RW.rows_kernel_applies(
        groups, stride, dilation, wshape, width, CG.tile_shape(dtype)[0])


def _grad_weight_rows(dtype, filter_flip, wshape, width, xsrc, pre, out_shape, temps) -> Lowered:
    """``pre`` (the padding of x into ``xsrc``), the per-thread partial vector sums, their sum."""
    from engine.lowering import conv_gemm as CG
    from engine.lowering import conv_gw_rows as RW
    from engine.lowering.common import ArgView

    lanes = CG.tile_shape(dtype)[0]
    rk = RW.rows_kernel(dtype, wshape[2:], lanes, width, filter_flip)
    sk = RW.sum_rows_partials_kernel(dtype)
    rows = wshape[0] * wshape[1] * wshape[2] * wshape[3]

    def part_shape(ins):
        n, f, oh, ow = ins[1].shape
        return (_partial_units(rows * n * oh * ow, n), rows, lanes)
    t = len(temps)
    steps = list(pre) + [Step(rk.name, (xsrc, In(1), Tmp(t))),
                         Step(sk.name, (Tmp(t), ArgView(Out(0), lambda o, ins: o.reshape(-1))))]
    return Lowered([rk, sk], steps, out_shape, list(temps) + [(dtype, part_shape)])


def conv2d_grad_weight_plan(dtype, stride=(1, 1), padding=(0, 0), dilation=(1, 1), groups=1,
                            filter_flip=False, ksize=(None, None), width=None, node=None,
                            wshape=()) -> Lowered:
    """Inputs (x, gy, w_shape) -> gw; x zero-padded into a temp when the padding is not 0.
    ``width``: the static width of gy, when known; ``wshape``: gw's static shape (None for
    run-time dims). By ``grad_weight_by_gemm``: an implicit GEMM, else direct."""
    ksize = _static(ksize)

    def out_shape(ins):
        ws = shape_arg(ins[2])
        _same(node, "the output gradient", ins[1].shape,
              _conv_out(node, ins[0].shape, ws, stride, padding, dilation, groups))
        return [ws]

    def pads(ins):
        return conv_padding(padding, dilation, *shape_arg(ins[2])[2:])

    def on_x(build) -> Lowered:
        """``build(x source, steps before, temps)`` on x, or on x zero-padded into a temp."""
        if _static_padding(padding, dilation, ksize) == (0, 0):
            return build(In(0), [], [])
        pad, pad_step, temp = _pad_input(dtype, pads)
        low = build(Tmp(0), [pad_step], [temp])
        low.kernels.insert(0, pad)
        return low

    if ir_float(dtype) and grad_weight_by_gemm(groups, tuple(wshape)):
        return on_x(lambda xsrc, pre, temps: _grad_weight_gemm(
            dtype, stride, dilation, filter_flip, ksize, wshape[0], xsrc, pre, out_shape, temps))
    if _rows_apply(dtype, stride, dilation, groups, tuple(wshape), width):
        return on_x(lambda xsrc, pre, temps: _grad_weight_rows(
            dtype, filter_flip, tuple(wshape), width, xsrc, pre, out_shape, temps))
    conv = C.conv2d_grad_weight(dtype, stride, padding, dilation, groups, filter_flip, ksize,
                                width=width)
    return on_x(lambda xsrc, pre, temps: Lowered(
        [conv], [*pre, Step(conv.name, (xsrc, In(1), Out(0)))], out_shape, temps))


def _lc_out(node, xs, ws, stride):
    if len(xs) != 4 or len(ws) != 6:
        raise _err(node, f"locally_connected2d needs 4-d input and 6-d filter shapes, given {xs} and {ws}")
    (n, c, h, w), (oh, ow, f, wc, kh, kw) = xs, ws
    if wc != c or h < kh or w < kw or (oh, ow) != ((h - kh) // stride[0] + 1, (w - kw) // stride[1] + 1):
        raise _err(node, f"input shape {xs} and filter shape {ws} (OH, OW, F, C, KH, KW) do not agree "
                         f"for stride {tuple(stride)}")
    return (n, f, oh, ow)


def lc_plan(kind, dtype, stride=(1, 1), node=None) -> Lowered:
    """kind "fwd": (x, w) -> out; "bwd_input": (gy, w, x_shape) -> gx; "bwd_weight":
    (x, gy, w_shape) -> gw. float32/float64 run as batched GEMMs (``_lc_gemm``), other dtypes
    and ``direct_formulation()`` as direct loop nests."""
    def out_shape(ins):
        if kind == "fwd":
            return [_lc_out(node, ins[0].shape, ins[1].shape, stride)]
        shape = shape_arg(ins[2])
        xs, ws = (shape, ins[1].shape) if kind == "bwd_input" else (ins[0].shape, shape)
        _same(node, "the output gradient", ins[0 if kind == "bwd_input" else 1].shape,
              _lc_out(node, xs, ws, stride))
        return [shape]
    from engine.kernel_ir import dtype_name
    if not _DIRECT_ONLY.get() and dtype_name(dtype) in ("float32", "float64"):
        return _lc_gemm(kind, dtype_name(dtype), tuple(stride), out_shape)
    build = {"fwd": C.lc_fwd, "bwd_input": C.lc_grad_input, "bwd_weight": C.lc_grad_weight}[kind]
    k = build(dtype, stride)
    return Lowered([k], [Step(k.name, (In(0), In(1), Out(0)))], out_shape)


def _lc_gemm(kind, dtype, stride, out_shape) -> Lowered:
    """A locally-connected layer as batched GEMMs over its P = OH*OW positions, each with its
    own filters w[i, j] (F x K), K = C*KH*KW, on the patches (P, N, K) of the input
    (``C.lc_patches_kernel``; the GEMM reads every operand through launch-time views):

        fwd:        out[:, :, i, j]^T (F x N) = w[i, j] (F x K) @ patches[p]^T (K x N)
        bwd_weight: gw[i, j] (F x K) = gy[:, :, i, j]^T (F x N) @ patches[p] (N x K)
        bwd_input:  gp[p] (N x K) = gy[:, :, i, j] (N x F) @ w[i, j] (F x K), then col2im

    The patches keep a window row contiguous, so building them and col2im stream through
    memory (a (P, K, N) layout, read across images, made col2im 6x slower than the GEMMs).
    A 64x3x32x32 input, 16 filters 5x5, forward and both gradients on 2 threads: 84 ms with
    the direct loop nests, 13 ms so (patches 2 x 3.8, GEMMs 3 x 2.2, col2im 2.3 ms)."""
    from engine.lowering import gemm as G
    from engine.lowering.common import ArgView

    def geometry(ins):   # (N, C, H, W), (OH, OW, F, C, KH, KW)
        if kind == "fwd":
            return ins[0].shape, ins[1].shape
        if kind == "bwd_input":
            return shape_arg(ins[2]), ins[1].shape
        return ins[0].shape, shape_arg(ins[2])

    def patches_shape(ins):
        (n, c, _, _), (oh, ow, _, _, kh, kw) = geometry(ins)
        return (oh * ow, n, c * kh * kw)

    def by_position(w, ins):       # (OH, OW, F, C, KH, KW) -> (P, F, K)
        oh, ow, f, c, kh, kw = w.shape
        return w.reshape(oh * ow, f, c * kh * kw)

    def gy_t(g, ins):              # (N, F, OH, OW) -> (P, F, N), strides only
        n, f, oh, ow = g.shape
        return g.reshape(n, f, oh * ow).transpose(2, 1, 0)

    def gy_p(g, ins):              # (N, F, OH, OW) -> (P, N, F), strides only
        n, f, oh, ow = g.shape
        return g.reshape(n, f, oh * ow).transpose(2, 0, 1)

    sizes = [HostScalar(lambda ins: geometry(ins)[1][4]), HostScalar(lambda ins: geometry(ins)[1][5]),
             HostScalar(lambda ins: geometry(ins)[1][1])]
    patches = C.lc_patches_kernel(dtype, stride)
    gk, _ = G.gemm_step(dtype, In(0), In(1), Out(0), batch=(1, 1, 1))
    if kind == "fwd":
        _, gstep = G.gemm_step(dtype, ArgView(In(1), by_position),
                               ArgView(Tmp(0), lambda t, ins: t.transpose(0, 2, 1)), ArgView(Out(0), gy_t),
                               batch=(1, 1, 1))
        steps = [Step(patches.name, (In(0), Tmp(0), *sizes)), gstep]
        return Lowered([patches, gk], steps, out_shape, [(dtype, patches_shape)])
    if kind == "bwd_weight":
        _, gstep = G.gemm_step(dtype, ArgView(In(1), gy_t), Tmp(0), ArgView(Out(0), by_position), batch=(1, 1, 1))
        steps = [Step(patches.name, (In(0), Tmp(0), *sizes)), gstep]
        return Lowered([patches, gk], steps, out_shape, [(dtype, patches_shape)])
    col2im = C.lc_col2im_kernel(dtype, stride)
    _, gstep = G.gemm_step(dtype, ArgView(In(0), gy_p), ArgView(In(1), by_position), Tmp(0), batch=(1, 1, 1))
    steps = [gstep, Step(col2im.name, (Tmp(0), Out(0), *sizes))]
    return Lowered([gk, col2im], steps, out_shape, [(dtype, patches_shape)])


# ----------------------------------------------------------------------------- pooling


def _pooled(node, shape, ws, stride, padding, ignore_border):
    out = tuple(P.out_len(n, k, st, p, ignore_border) for n, k, st, p in zip(shape[-2:], ws, stride, padding))
    if min(out) < 1 or min(shape[-2:]) < 1:
        raise _err(node, f"the window {tuple(ws)} with padding {tuple(padding)} does not fit the input "
                         f"shape {tuple(shape)}")
    return tuple(shape[:-2]) + out


def pool2d_plan(dtype, ndim, ws, stride=None, padding=(0, 0), mode="max", ignore_border=True,
                count_include_pad=True, prologue=(), node=None) -> Lowered:
    """Pool2d (and FusedPool with a prologue): (x,) -> out."""
    stride = tuple(ws) if stride is None else tuple(stride)
    k = P.pool_fwd(dtype, ndim, tuple(ws), stride, tuple(padding), mode, ignore_border,
                   count_include_pad, prologue)
    return Lowered([k], [Step(k.name, (In(0), Out(0)))],
                   lambda ins: [_pooled(node, ins[0].shape, ws, stride, padding, ignore_border)])


def pool2d_grad_plan(dtype, ndim, ws, stride=None, padding=(0, 0), mode="max", ignore_border=True,
                     count_include_pad=True, node=None) -> Lowered:
    """Pool2dGrad: (x, y, gy) -> gx."""
    stride = tuple(ws) if stride is None else tuple(stride)
    k = P.pool_grad(dtype, ndim, tuple(ws), stride, tuple(padding), mode, ignore_border,
                    count_include_pad)
    args = {"max": (In(0), In(2)), "l2": (In(0), In(1), In(2))}.get(mode, (In(2),))

    def out_shape(ins):
        pooled = _pooled(node, ins[0].shape, ws, stride, padding, ignore_border)
        _same(node, "the output gradient", ins[2].shape, pooled)
        if mode == "l2":
            _same(node, "the pooled output", ins[1].shape, pooled)
        return [ins[0].shape]
    return Lowered([k], [Step(k.name, (*args, Out(0)))], out_shape)


def max_pool2d_grad_grad_plan(dtype, ndim, ws, stride=None, padding=(0, 0), ignore_border=True,
                              node=None) -> Lowered:
    """MaxPool2dGradGrad: (x, g) -> per window, g at the window's argmax."""
    stride = tuple(ws) if stride is None else tuple(stride)
    k = P.max_pool_grad_grad(dtype, ndim, tuple(ws), stride, tuple(padding), ignore_border)

    def out_shape(ins):
        _same(node, "the input-shaped gradient", ins[1].shape, ins[0].shape)
        return [_pooled(node, ins[0].shape, ws, stride, padding, ignore_border)]
    return Lowered([k], [Step(k.name, (In(0), In(1), Out(0)))], out_shape)


def prob_max_pool_plan(kind, dtype, ndim, ws, node=None) -> Lowered:
    """kind "fwd": (x,) -> (det, pool); "bwd": (x, g_det, g_pool) -> gx; "sample": (x, u) ->
    (det sample, pool sample)."""
    ws = tuple(ws)
    build = {"fwd": P.prob_max_pool_fwd, "bwd": P.prob_max_pool_grad, "sample": P.prob_max_pool_sample}
    k = build[kind](dtype, ndim, ws)

    def pooled(ins):
        s = ins[0].shape
        if s[-2] % ws[0] or s[-1] % ws[1]:
            raise _err(node, f"the blocks {ws} do not divide the spatial shape {s[-2:]} of the input {s}")
        return s[:-2] + (s[-2] // ws[0], s[-1] // ws[1])

    if kind == "bwd":
        def grad_shape(ins):
            _same(node, "the detection gradient", ins[1].shape, ins[0].shape)
            _same(node, "the pooling gradient", ins[2].shape, pooled(ins))
            return [ins[0].shape]
        return Lowered([k], [Step(k.name, (In(0), In(1), In(2), Out(0)))], grad_shape)

    def out_shape(ins):
        if kind == "sample":
            _same(node, "the uniforms", ins[1].shape, pooled(ins))
        return [ins[0].shape, pooled(ins)]
    args = (In(0),) if kind == "fwd" else (In(0), In(1))
    return Lowered([k], [Step(k.name, (*args, Out(0), Out(1)))], out_shape)


# ----------------------------------------------------------------------------- LCN


def lcn_op_plan(dtype, grad=False, node=None, **props) -> Lowered:
    """LCN: (x,) -> y; LCNGrad (grad=True): (x, gy) -> gx (gy checked against x)."""
    low = (lcn_grad_plan if grad else lcn_plan)(dtype, **props)
    if grad:
        def out_shape(ins):
            _same(node, "the output gradient", ins[1].shape, ins[0].shape)
            return [ins[0].shape]
        low.output_shapes = out_shape
    return low


# ----------------------------------------------------------------------------- softmax family


def softmax_plan(dtype, ndim, axis=-1, log=False) -> Lowered:
    k = S.softmax_kernel(dtype, ndim, axis, log)
    return Lowered([k], [Step(k.name, (In(0), Out(0)))], lambda ins: [ins[0].shape])


def _xent_rows(node, ins):
    if ins[1].shape[0] != ins[0].shape[0]:
        raise _err(node, f"{ins[0].shape[0]} rows of logits but {ins[1].shape[0]} labels")
    return ins[0].shape[:1]


def softmax_xent_plan(dtype, label_dtype, node=None) -> Lowered:
    """SoftmaxCrossEntropy: (x, y) -> loss (N,); a label outside [0, K) gives NaN."""
    k = S.xent_kernel(dtype, label_dtype)
    return Lowered([k], [Step(k.name, (In(0), In(1), Out(0)))], lambda ins: [_xent_rows(node, ins)])


def softmax_xent_grad_plan(dtype, label_dtype, node=None) -> Lowered:
    """The cross-entropy's gradient fused: (x, y, g) -> g[:, None] * (softmax(x) - onehot(y))."""
    k = S.xent_grad_kernel(dtype, label_dtype)

    def out_shape(ins):
        _same(node, "the loss gradient", ins[2].shape, _xent_rows(node, ins))
        return [ins[0].shape]
    return Lowered([k], [Step(k.name, (In(0), In(1), In(2), Out(0)))], out_shape)


# ----------------------------------------------------------------------------- rules


def _register():
    try:
        from engine.ops import conv as conv_ops
    except ImportError:  # the graph ops are not there yet
        return

    def conv_props(op):
        return dict(stride=op.stride, padding=op.padding, dilation=op.dilation, groups=op.groups,
                    filter_flip=op.filter_flip)

    @lowering(conv_ops.Conv2d)
    def _conv2d(node):
        x, w = node.inputs
        return conv2d_plan(x.dtype, ksize=w.type.shape[2:], nfilters=w.type.shape[0],
                           width=node.outputs[0].type.shape[3], node=node, channels=w.type.shape[1],
                           **conv_props(node.op))

    @lowering(conv_ops.Conv2dGradInput)
    def _conv2d_gi(node):
        gy, w, _ = node.inputs
        out = node.outputs[0].type.shape
        return conv2d_grad_input_plan(gy.dtype, ksize=w.type.shape[2:], channels=out[1],
                                      width=out[3], node=node, nfilters=w.type.shape[0],
                                      **conv_props(node.op))

    @lowering(conv_ops.Conv2dGradWeight)
    def _conv2d_gw(node):
        wshape = node.outputs[0].type.shape
        return conv2d_grad_weight_plan(node.inputs[0].dtype, ksize=wshape[2:],
                                       width=node.inputs[1].type.shape[3], node=node, wshape=wshape,
                                       **conv_props(node.op))

    for cls, kind in ((conv_ops.LocallyConnected2d, "fwd"),
                      (conv_ops.LocallyConnected2dGradInput, "bwd_input"),
                      (conv_ops.LocallyConnected2dGradWeight, "bwd_weight")):
        lowering(cls)(lambda node, kind=kind: lc_plan(kind, node.inputs[0].dtype, node.op.stride, node))

    from engine.ops import lcn as lcn_ops
    from engine.ops import nnet as nnet_ops
    from engine.ops import pool as pool_ops

    def pool_props(op):
        return dict(ws=op.ws, stride=op.stride, padding=op.padding, mode=op.mode,
                    ignore_border=op.ignore_border, count_include_pad=op.count_include_pad)

    @lowering(pool_ops.Pool2d)
    def _pool(node):
        x = node.inputs[0]
        return pool2d_plan(x.dtype, x.ndim, node=node, **pool_props(node.op))

    @lowering(pool_ops.Pool2dGrad)
    def _pool_grad(node):
        x = node.inputs[0]
        return pool2d_grad_plan(x.dtype, x.ndim, node=node, **pool_props(node.op))

    @lowering(pool_ops.MaxPool2dGradGrad)
    def _pool_gg(node):
        x, op = node.inputs[0], node.op
        return max_pool2d_grad_grad_plan(x.dtype, x.ndim, op.ws, op.stride, op.padding, op.ignore_border, node)

    for cls, kind in ((pool_ops.ProbMaxPool, "fwd"), (pool_ops.ProbMaxPoolGrad, "bwd"),
                      (pool_ops.ProbMaxPoolSample, "sample")):
        lowering(cls)(lambda node, kind=kind: prob_max_pool_plan(kind, node.inputs[0].dtype,
                                                                 node.inputs[0].ndim, node.op.ws, node))

    def lcn_props(op):
        return dict(size=op.size, sigma=op.sigma, mode=op.mode, across_channels=op.across_channels,
                    eps=op.eps)

    lowering(lcn_ops.LCN)(lambda node: lcn_op_plan(node.inputs[0].dtype, node=node, **lcn_props(node.op)))
    lowering(lcn_ops.LCNGrad)(lambda node: lcn_op_plan(node.inputs[0].dtype, True, node, **lcn_props(node.op)))

    x_of = lambda node: node.inputs[0]  # noqa: E731
    lowering(nnet_ops.Softmax)(lambda node: softmax_plan(x_of(node).dtype, x_of(node).ndim, node.op.axis))
    lowering(nnet_ops.LogSoftmax)(lambda node: softmax_plan(x_of(node).dtype, x_of(node).ndim,
                                                             node.op.axis, log=True))
    lowering(nnet_ops.SoftmaxCrossEntropy)(lambda node: softmax_xent_plan(x_of(node).dtype,
                                                                           node.inputs[1].dtype, node))

    from engine.ops import fused as fused_ops

    @lowering(fused_ops.FusedConv)
    def _fused_conv(node):
        op = node.op
        x, w = node.inputs[:2]
        bias = (node.inputs[2].ndim, node.inputs[2].type.shape) if op.has_bias else None
        return conv2d_plan(x.dtype, ksize=w.type.shape[2:], nfilters=w.type.shape[0], bias=bias,
                           epilogue=op.epilogue, width=node.outputs[0].type.shape[3], node=node,
                           channels=w.type.shape[1], **conv_props(op.conv))

    @lowering(fused_ops.FusedPool)
    def _fused_pool(node):
        x = node.inputs[0]
        return pool2d_plan(x.dtype, x.ndim, prologue=node.op.prologue, node=node, **pool_props(node.op.pool))


_register()
