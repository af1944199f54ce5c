"""GPU-specific lowering rules, consulted before the common ones (engine/lower.py): the tiled
GEMM (gemm.py) for MatMul / Gemm (and GemmBernoulli's product, sampled by a second kernel),
tiled implicit-GEMM convolutions (conv.py) for the conv ops, row kernels the binder can give
a block per row (softmax.py) for the softmax family."""

from __future__ import annotations

from backends.cuda import conv, gemm, softmax


def _gemm_bernoulli_product(node):
    """The Gemm node of a GemmBernoulli node's product, or None."""
    from engine.ops.fused import GemmBernoulli
    if not isinstance(node.op, GemmBernoulli):
        return None
    product = node.op.gemm.make_node(*node.inputs[:-1])
    return product if gemm.has_gpu_lowering(product) else None


def has_gpu_lowering(node):
    return gemm.has_gpu_lowering(node) or conv.has_gpu_conv(node) or softmax.has_gpu_softmax(node) or \
        _gemm_bernoulli_product(node) is not None


def gpu_lowering(node, target=None):
    """A Lowered for node written for GPUs, or None (use the common rule)."""
    product = _gemm_bernoulli_product(node)
    if product is not None:
        from engine.lowering.fused import with_bernoulli_pass
        low = gemm.gpu_lowering(product, target)
        return with_bernoulli_pass(node, low) if low is not None else None
    if gemm.has_gpu_lowering(node):
        return gemm.gpu_lowering(node, target)
    if conv.has_gpu_conv(node):
        return conv.gpu_conv_lowering(node, target)
    if softmax.has_gpu_softmax(node):
        return softmax.gpu_softmax_lowering(node)
    return None
