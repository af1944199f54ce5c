"""GPU convolution kernels: direct convolution, one thread per output element.

The common lowering (engine/lowering/nn.py) plans a convolution as an optional zero-padding
kernel into a temp, then a "valid" correlation kernel scheduled for CPUs (parallel over
batch x channel blocks, vectorized rows). ``gpu_conv_lowering`` keeps that plan (steps, temps,
shape checks) and swaps the correlation kernel for one written for GPUs, with the same
parameters:

* forward ``(x, w[, bias], out)``: a loop nest over (n, f, a, b) whose body sums
  ``x[n, g*Cg + r, a*sh + u*dh, b*sw + v*dw] * w[f, r, u', v']`` over (r, u, v): the binder
  (engine/gpu/) gives one thread per output, b fastest (coalesced stores and
  neighbouring loads), taps unrolled when the kernel size is static;
* input gradient ``(gy, w, gx)``: the same over the zero-inserted, padded gradient with the
  transposed, flipped filters (a gather: no atomics);
* weight gradient ``(x, gy, gw)``: one output per (f, c, u, v), a reduction over all
  (n, i, j) flattened into one loop, so with few filters the binder's block-cooperative
  version spreads it over the threads of a block (shared-memory tree).
"""

from __future__ import annotations

from engine import kernel_ir as ir
from engine.kernel_ir import FMA, Assign, BufferParam, Const, Declare, Loop, Var
from engine.lower import Lowered, Step


def _ops():
    from engine.ops import conv, fused
    return conv, fused


def has_gpu_conv(node):
    try:
        conv, fused = _ops()
    except ImportError:  # pragma: no cover
        return False
    return isinstance(node.op, (conv.Conv2d, conv.Conv2dGradInput, conv.Conv2dGradWeight,
                                fused.FusedConv)) and \
        node.outputs[0].dtype in ("float32", "float64")


def _ks(buf, ksize):
    kh = Const(ksize[0]) if isinstance(ksize[0], int) else buf.dim(2)
    kw = Const(ksize[1]) if isinstance(ksize[1], int) else buf.dim(3)
    return kh, kw


def _tap_kind(k):
    return "unroll" if isinstance(k, Const) and k.value <= 16 else "serial"


def _flip(u, k, flip):
    return (k - 1) - u if flip else u


def conv_fwd_kernel(name, dtype, stride, dilation, groups, flip, ksize, bias_ndim=None,
                    epilogue=()):
    from engine.lowering.nn_util import apply_chain
    x, w, o = BufferParam("x", dtype, 4), BufferParam("w", dtype, 4), BufferParam("out", dtype, 4)
    bias = BufferParam("bias", dtype, bias_ndim) if bias_ndim is not None else None
    kh, kw = _ks(w, ksize)
    n, f, a, b, r, u, v = (Var(s) for s in ("n", "f", "a", "b", "r", "u", "v"))
    g, ci, acc = Var("g"), Var("ci"), Var("acc", dtype)
    cg = w.dim(1)
    fg = w.dim(0) if groups == 1 else ir.BinOp("div", w.dim(0), Const(groups))
    (sh, sw), (dh, dw) = stride, dilation
    tap = Assign(acc, FMA(x[n, ci, a * sh + u * dh, b * sw + v * dw],
                          w[f, r, _flip(u, kh, flip), _flip(v, kw, flip)], acc))
    red = Loop(r, 0, cg, [Declare(ci, g * cg + r),
                          Loop(u, 0, kh, Loop(v, 0, kw, tap, _tap_kind(kw)), _tap_kind(kh))])
    val = acc
    if bias is not None:
        val = val + bias[(n, f, a, b)[4 - bias.ndim:]]
    body = [Declare(g, Const(0) if groups == 1 else ir.BinOp("div", f, fg)),
            Declare(acc, Const(0.0, dtype)), red, o.store((n, f, a, b), apply_chain(epilogue, val))]
    nest = Loop(n, 0, o.dim(0), Loop(f, 0, o.dim(1), Loop(a, 0, o.dim(2), Loop(b, 0, o.dim(3), body))),
                "parallel")
    params = (x, w) + ((bias,) if bias is not None else ()) + (o,)
    return ir.Kernel(name, params, (nest,))


def conv_grad_input_kernel(name, dtype, dilation, groups, flip, ksize):
    gy, w, gx = BufferParam("gy", dtype, 4), BufferParam("w", dtype, 4), BufferParam("gx", dtype, 4)
    kh, kw = _ks(w, ksize)
    n, c, a, b, r, u, v = (Var(s) for s in ("n", "c", "a", "b", "r", "u", "v"))
    g, cw, fi, acc = Var("g"), Var("cw"), Var("fi"), Var("acc", dtype)
    cg = w.dim(1)
    fg = w.dim(0) if groups == 1 else ir.BinOp("div", w.dim(0), Const(groups))
    dh, dw = dilation
    tap = Assign(acc, FMA(gy[n, fi, a + u * dh, b + v * dw],
                          w[fi, cw, _flip(u, kh, not flip), _flip(v, kw, not flip)], acc))
    red = Loop(r, 0, fg, [Declare(fi, g * fg + r),
                          Loop(u, 0, kh, Loop(v, 0, kw, tap, _tap_kind(kw)), _tap_kind(kh))])
    body = [Declare(g, Const(0) if groups == 1 else ir.BinOp("div", c, cg)),
            Declare(cw, c - g * cg), Declare(acc, Const(0.0, dtype)), red,
            gx.store((n, c, a, b), acc)]
    nest = Loop(n, 0, gx.dim(0), Loop(c, 0, gx.dim(1), Loop(a, 0, gx.dim(2),
                                                              Loop(b, 0, gx.dim(3), body))),
                "parallel")
    return ir.Kernel(name, (gy, w, gx), (nest,))


def conv_grad_weight_kernel(name, dtype, stride, dilation, groups, flip, ksize):
    x, gy, gw = BufferParam("x", dtype, 4), BufferParam("gy", dtype, 4), BufferParam("gw", dtype, 4)
    kh, kw = _ks(gw, ksize)
    f, cw, u, v, e = (Var(s) for s in ("f", "cw", "u", "v", "e"))
    n, rem, i, j = Var("n"), Var("rem"), Var("i"), Var("j")
    cin, acc, hw = Var("cin"), Var("acc", dtype), Var("hw")
    cg = gw.dim(1)
    fg = gw.dim(0) if groups == 1 else ir.BinOp("div", gw.dim(0), Const(groups))
    (sh, sw), (dh, dw) = stride, dilation
    oh, ow = gy.dim(2), gy.dim(3)
    step = [Declare(n, ir.BinOp("div", e, hw)), Declare(rem, e - n * hw),
            Declare(i, ir.BinOp("div", rem, ow)), Declare(j, rem - i * ow),
            Assign(acc, FMA(gy[n, f, i, j], x[n, cin, i * sh + u * dh, j * sw + v * dw], acc))]
    body = [Declare(cin, (Const(0) if groups == 1 else ir.BinOp("div", f, fg) * cg) + cw),
            Declare(acc, Const(0.0, dtype)),
            Loop(e, 0, gy.dim(0) * hw, step),
            gw.store((f, cw, _flip(u, kh, flip), _flip(v, kw, flip)), acc)]
    nest = Loop(f, 0, gw.dim(0), Loop(cw, 0, cg, Loop(u, 0, kh, Loop(v, 0, kw, body))),
                "parallel")
    return ir.Kernel(name, (x, gy, gw), (Declare(hw, oh * ow), nest))


def gpu_conv_lowering(node):
    """The common plan of a conv node with its correlation kernel replaced (see above)."""
    if not has_gpu_conv(node):
        return None
    from engine.lower import lower
    conv_ops, fused = _ops()
    low = lower(node)
    op = node.op
    bias_ndim, epilogue = None, ()
    if isinstance(op, fused.FusedConv):
        bias_ndim = node.inputs[2].ndim if op.has_bias else None
        epilogue = tuple(op.epilogue)
        op = op.conv
    dt = node.outputs[0].dtype
    stride, dilation = tuple(op.stride), tuple(op.dilation)
    if isinstance(op, conv_ops.Conv2dGradWeight):
        ksize = tuple(node.outputs[0].type.shape[2:])
    else:
        ksize = tuple(node.inputs[1].type.shape[2:])
    ksize = tuple(k if isinstance(k, int) else None for k in ksize)
    target = [k for k in low.kernels if k.name.startswith("conv2d_")]
    if len(target) != 1:
        return None
    old = target[0]
    name = "gpu_" + old.name
    if isinstance(op, conv_ops.Conv2dGradWeight):
        new = conv_grad_weight_kernel(name, dt, stride, dilation, op.groups, op.filter_flip, ksize)
    elif isinstance(op, conv_ops.Conv2dGradInput):
        new = conv_grad_input_kernel(name, dt, dilation, op.groups, op.filter_flip, ksize)
    else:
        new = conv_fwd_kernel(name, dt, stride, dilation, op.groups, op.filter_flip, ksize,
                              bias_ndim, epilogue)
    if [p.name for p in new.params] != [p.name for p in old.params]:
        return None
    kernels = [new if k is old else k for k in low.kernels]
    steps = [Step(name if s.kernel == old.name else s.kernel, s.args) for s in low.steps]
    out = Lowered(kernels, steps, low.output_shapes, list(low.temps), low.view)
    for attr in ("host_outputs",):
        if hasattr(low, attr):
            setattr(out, attr, getattr(low, attr))
    return out
