"""GPU-specific lowering rules, consulted before the common ones (engine/lower.py): the tiled
GEMM (gemm.py) for MatMul / Gemm, tiled implicit-GEMM convolutions (conv.py) for the conv ops,
row kernels the binder can give a block per row (softmax.py) for the softmax family."""

from __future__ import annotations

from backends.cuda import conv, gemm, softmax


def has_gpu_lowering(node):
    return gemm.has_gpu_lowering(node) or conv.has_gpu_conv(node) or softmax.has_gpu_softmax(node)


def gpu_lowering(node, target=None):
    """A Lowered for node written for GPUs, or None (use the common rule)."""
    if gemm.has_gpu_lowering(node):
        return gemm.gpu_lowering(node, target)
    if conv.has_gpu_conv(node):
        return conv.gpu_conv_lowering(node, target)
    if softmax.has_gpu_softmax(node):
        return softmax.gpu_softmax_lowering(node)
    return None
