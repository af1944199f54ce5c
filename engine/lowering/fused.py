"""Lowering rules of the optimizer's fused ops (engine/ops/fused.py): ``FusedElemwise`` (one
kernel per fused group, several outputs), ``FusedReduce`` (the expression evaluated inside the
reduction loop, never materialized) and ``Gemm`` (alpha * op(a) @ op(b) + beta * c with an
elementwise epilogue applied before the store). ``FusedConv`` / ``FusedPool`` belong with the
nn rules (engine/lowering/nn.py)."""

from __future__ import annotations

import math

from engine import kernel_ir as ir
from engine.kernel_ir import BufferParam, ScalarParam
from engine.lower import HostScalar, In, Lowered, Out, Step, lowering
from engine.lowering.common import (
    Emitter,
    bcast_index,
    broadcast_runtime,
    const,
    expr_ir,
    expr_label,
    input_label,
    kernel_name,
    reduce_body,
    reduce_op,
    shape_error,
    tag,
)
from engine.lowering.core import _padded, embed_constants, fast_gemm, lower_expression, matmul_body
from engine.ops import fused


@lowering(fused.FusedElemwise)
def lower_fused_elemwise(node) -> Lowered:
    return lower_expression(node, node.op.expr, node.op.outputs)


@lowering(fused.FusedReduce)
def lower_fused_reduce(node) -> Lowered:
    op = node.op
    kexpr, slots = embed_constants(node, op.expr)
    last = len(kexpr) - 1
    reads = sorted(k for k in fused.expr_inputs(op.expr, last) if k in set(slots))
    dtype = kexpr[last][1]
    rank = max((node.inputs[k].ndim for k in reads), default=0)
    ins = [BufferParam(f"in{s}", node.inputs[k].dtype, node.inputs[k].ndim) for s, k in enumerate(slots)]
    out = BufferParam("out", dtype, node.outputs[0].ndim)
    extents = [ScalarParam(f"n{a}", "int64") for a in range(rank)]

    def value(vars_):
        em = Emitter("v")
        (v,) = expr_ir(em, kexpr, lambda s: ins[s][bcast_index(ins[s].ndim, vars_)], [last])
        return em.stmts, v
    body = reduce_body(extents, op.axes, value, lambda kv, v: out.store(tuple(kv), v),
                       lambda kv: out[tuple(kv)], reduce_op(op.reducer, dtype), dtype)
    name = kernel_name("R", op.reducer, expr_label(kexpr), tag(dtype), f"{rank}d",
                       "ax" + "".join(map(str, op.axes)))
    kernel = ir.Kernel(name, (*ins, out, *extents), body)

    def domain(arrays):
        return _padded(broadcast_runtime(node, [arrays[k].shape for k in reads], reads), rank)

    def output_shapes(arrays):
        d = domain(arrays)
        kept = tuple(n for i, n in enumerate(d) if i not in op.axes)
        if op.reducer in ("max", "min") and any(d[a] == 0 for a in op.axes) and math.prod(kept):
            raise shape_error(node, f"{op.reducer} of an empty axis (shape {d}); it has no identity")
        return [kept]
    args = tuple(In(k) for k in slots) + (Out(0),) + tuple(
        HostScalar(lambda arrays, a=a: domain(arrays)[a]) for a in range(rank))
    return Lowered([kernel], [Step(name, args)], output_shapes)


@lowering(fused.Gemm)
def lower_gemm(node) -> Lowered:
    op = node.op
    a_var, b_var = node.inputs[:2]
    c_var = node.inputs[2] if len(node.inputs) > 2 else None
    dt = node.outputs[0].dtype
    A, B, OUT = BufferParam("a", dt, 2), BufferParam("b", dt, 2), BufferParam("out", dt, 2)
    C = BufferParam("c", dt, c_var.ndim) if c_var is not None else None
    counter = [0]

    def a_at(i, p):
        return A[p, i] if op.trans_a else A[i, p]

    def b_at(p, j):
        return B[j, p] if op.trans_b else B[p, j]

    def store(i, j, acc):
        em = Emitter(f"e{counter[0]}_")
        counter[0] += 1
        v = acc
        if op.alpha != 1.0:
            v = v * const(op.alpha, dt)
        if C is not None:
            cv = C[bcast_index(C.ndim, (i, j))]
            if op.beta == 1.0:
                v = v + cv
            elif op.beta == -1.0:
                v = v - cv
            else:
                v = v + cv * const(op.beta, dt)
        for name in op.epilogue:
            v = em.scalar(name, [em.local(v)], dt)
        return em.stmts + [OUT.store((i, j), v)]
    m, n = OUT.dim(0), OUT.dim(1)
    k = A.dim(0 if op.trans_a else 1)
    body = matmul_body(m, n, k, a_at, b_at, store, dt, parallel=True,
                       dot_form=op.trans_b and not op.trans_a)
    flags = ("T" if op.trans_a else "N") + ("T" if op.trans_b else "N")
    name = kernel_name("gemm", flags, tag(dt), "c" if C is not None else "",
                       "_".join(op.epilogue), "" if op.alpha == 1.0 else "alpha",
                       "" if op.beta in (0.0, 1.0) else "beta")
    params = (A, B) + ((C,) if C is not None else ()) + (OUT,)
    kernel = ir.Kernel(name, params, body)

    def output_shapes(arrays):
        a, b = arrays[:2]
        m_, ka = (a.shape[1], a.shape[0]) if op.trans_a else a.shape
        kb, n_ = (b.shape[1], b.shape[0]) if op.trans_b else b.shape
        if ka != kb:
            raise shape_error(node, f"inner dimensions differ at run time: {input_label(node.inputs[0])} of shape "
                                    f"{a.shape} and {input_label(node.inputs[1])} of shape {b.shape} "
                                    f"(trans_a={op.trans_a}, trans_b={op.trans_b})")
        if c_var is not None and broadcast_runtime(node, [(m_, n_), arrays[2].shape]) != (m_, n_):
            raise shape_error(node, f"c of shape {arrays[2].shape} does not broadcast to the product {(m_, n_)}")
        return [(m_, n_)]
    args = (In(0), In(1)) + ((In(2),) if C is not None else ()) + (Out(0),)
    return fast_gemm(node, output_shapes) or Lowered([kernel], [Step(name, args)], output_shapes)


@lowering(fused.GemmBernoulli)
def lower_gemm_bernoulli(node) -> Lowered:
    """The product p (as ``Gemm``'s rule lowers it) and Bernoulli(p) samples of it. On the CPU's
    GEMM the samples are drawn inside its kernel, each thread unit sampling the tiles it has
    just stored (``gemm.gemm_bernoulli_kernel``); otherwise (``KILN_GEMM=loops``, the direct
    formulations a GPU asks for) ``with_bernoulli_pass`` adds a sampling kernel reading p."""
    from engine.lowering import gemm as G
    from engine.lowering.nn import _DIRECT_ONLY

    op, g = node.op, node.op.gemm
    *operands, _ = node.inputs
    product = g.make_node(*operands)
    base = lower_gemm(product)
    dt = node.outputs[0].dtype
    if not base.steps or not base.steps[0].kernel.startswith("gemm_f") or _DIRECT_ONLY.get() \
            or (g.trans_b and not g.trans_a):
        return with_bernoulli_pass(node, base)
    c = operands[2] if len(operands) > 2 else None
    low = G.lower_gemm(dt, g.epilogue, c_ndim=c.ndim if c is not None else None, alpha=g.alpha, beta=g.beta,
                       trans_a=g.trans_a, trans_b=g.trans_b, sample=(op.dtype, len(operands)))
    return _with_state(node, Lowered(low.kernels, low.steps, base.output_shapes, list(low.temps)))


def with_bernoulli_pass(node, product: Lowered) -> Lowered:
    """A GemmBernoulli node from a Lowered of its product (output 0): a one-pass sampling
    kernel (``core._philox_rows_kernel``) reading p after the product's steps."""
    from engine.lowering.core import _philox_rows_kernel, philox_key_scalars

    p_dt, s_dt = node.outputs[0].dtype, node.op.dtype
    name = kernel_name("philox", "binomial", tag(s_dt), "rows", "p" + tag(p_dt) + "a")
    k = _philox_rows_kernel(name, "binomial", "float32", s_dt, [(p_dt, 2)])
    steps = list(product.steps) + [Step(name, (Out(2), Out(0), *philox_key_scalars(len(node.inputs) - 1)))]
    return _with_state(node, Lowered(list(product.kernels) + [k], steps, product.output_shapes, list(product.temps)))


def _with_state(node, low: Lowered) -> Lowered:
    """The node's three outputs: p and the samples of the product's shape, the new state."""
    from engine.lowering.common import HostLowered
    from engine.lowering.core import advanced_state

    s_in = len(node.inputs) - 1
    inner = low.output_shapes

    def output_shapes(arrays):
        (shape,) = inner(arrays)
        return [shape, tuple(arrays[s_in].shape), shape]

    def new_state(arrays):
        (shape,) = inner(arrays)
        return advanced_state(arrays[s_in], math.prod(shape))
    return HostLowered(low.kernels, low.steps, output_shapes, low.temps, host_outputs={1: new_state})
