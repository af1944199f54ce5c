"""GPU-specific lowering rules, consulted before the common ones (engine/lower.py): the tiled
GEMM (gemm.py) for MatMul / Gemm, direct convolutions (conv.py) for the conv ops."""

from __future__ import annotations

from backends.cuda import conv, gemm


def has_gpu_lowering(node):
    return gemm.has_gpu_lowering(node) or conv.has_gpu_conv(node)


def gpu_lowering(node, target=None):
    """A Lowered for node written for GPUs, or None (use the common rule)."""
    if gemm.has_gpu_lowering(node):
        return gemm.gpu_lowering(node, target)
    if conv.has_gpu_conv(node):
        return conv.gpu_conv_lowering(node, target)
    return None
