"""GPU convolutions: the common plan of a conv node with its correlation kernel swapped for the
shared-memory tiled implicit GEMM of engine/gpu/tile_conv.py.

The common lowering (engine/lowering/nn_conv.py) plans a convolution as an optional
zero-padding kernel into a temp, then a "valid" correlation kernel scheduled for CPUs.
``gpu_conv_lowering`` keeps that plan (steps, temps, shape checks) and replaces the
correlation kernel by one with the same parameters (forward, input gradient) or, for the weight
gradient, by two kernels around a temp of split-K partial sums (``tile_conv.split_k_parts``
of them, summed in a fixed order: no atomics, the same bits on every run). Tile sizes come from
the target's declared capabilities (``choose_tiles``); when none fits, the common plan runs.
"""

from __future__ import annotations

from engine.gpu import tile_conv as tc
from engine.gpu.target import GpuTarget
from engine.gpu.tile_gemm import choose_tiles
from engine.lower import Lowered, Step, Tmp


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


def _split_weight_grad(low, old, node, dt, op, ksize, tiles):
    """The plan with the weight-gradient kernel replaced by its two passes and their temp."""
    name = "gpu_" + old.name
    first = tc.conv_grad_weight_tiled(name, dt, tuple(op.stride), tuple(op.dilation), op.groups,
                                      op.filter_flip, ksize, tiles)
    second = tc.sum_parts_kernel(name + "_sum", dt)
    temp = Tmp(len(low.temps))
    shapes = low.output_shapes

    def part_shape(px):
        gy = px[1].shape  # (batch, F, OH, OW)
        return (tc.split_k_parts(gy[0] * gy[2] * gy[3]),) + tuple(shapes(px)[0])
    steps = []
    for s in low.steps:
        if s.kernel != old.name:
            steps.append(s)
            continue
        x_arg, gy_arg, gw_arg = s.args
        steps += [Step(first.name, (x_arg, gy_arg, temp)), Step(second.name, (temp, gw_arg))]
    kernels = [k for k in low.kernels if k is not old] + [first, second]
    return kernels, steps, list(low.temps) + [(dt, part_shape)]


def gpu_conv_lowering(node, target=None):
    """The common plan of a conv node with its correlation kernel replaced (see above)."""
    if not has_gpu_conv(node):
        return None
    from engine.lower import lower
    conv_ops, fused = _ops()
    dt = node.outputs[0].dtype
    tiles = choose_tiles(target or GpuTarget(), dt)
    if tiles is None:
        return None
    from engine.lowering.nn import direct_formulation
    with direct_formulation():   # the direct plan, whose correlation kernel is replaced below
        low = lower(node)
    op = node.op
    bias_ndim, epilogue = None, ()
    if isinstance(op, fused.FusedConv):
        bias_ndim = node.inputs[2].ndim if op.has_bias else None
        epilogue = tuple(op.epilogue)
        op = op.conv
    stride, dilation = tuple(op.stride), tuple(op.dilation)
    if isinstance(op, conv_ops.Conv2dGradWeight):
        ksize = tuple(node.outputs[0].type.shape[2:])
    else:
        ksize = tuple(node.inputs[1].type.shape[2:])
    ksize = tuple(k if isinstance(k, int) else None for k in ksize)
    target_k = [k for k in low.kernels if k.name.startswith("conv2d_")]
    if len(target_k) != 1:
        return None
    old = target_k[0]
    name = "gpu_" + old.name
    if isinstance(op, conv_ops.Conv2dGradWeight):
        if [p.name for p in old.params] != ["x", "gy", "gw"]:
            return None
        kernels, steps, temps = _split_weight_grad(low, old, node, dt, op, ksize, tiles)
    else:
        if isinstance(op, conv_ops.Conv2dGradInput):
            new = tc.conv_grad_input_tiled(name, dt, dilation, op.groups, op.filter_flip, ksize,
                                           tiles)
        else:
            new = tc.conv_fwd_tiled(name, dt, stride, dilation, op.groups, op.filter_flip, ksize,
                                    bias_ndim, epilogue, tiles)
        if [p.name for p in new.params] != [p.name for p in old.params]:
            return None
        kernels = [new if k is old else k for k in low.kernels]
        steps = [Step(name if s.kernel == old.name else s.kernel, s.args) for s in low.steps]
        temps = list(low.temps)
    out = Lowered(kernels, steps, low.output_shapes, temps, low.view)
    if hasattr(low, "host_outputs"):
        out.host_outputs = low.host_outputs
    return out
