"""numpy implementations of the optimizer's fused ops (``engine/ops/fused.py``): each computes
exactly what the unfused ops compute (same numpy calls in the same order and dtypes), so the
oracle can check fused graphs against unfused ones bit for bit where the rewrite is exact."""

from __future__ import annotations

import numpy as np

from backends.numpy.core_ops import SCALAR_IMPLS
from backends.numpy.table import IMPLS, implements
from engine.ops import fused


def _scalar(name: str, dtype: str, args: list) -> np.ndarray:
    if name == "cast":
        return np.asarray(args[0]).astype(dtype)
    with np.errstate(all="ignore"):
        result = np.asarray(SCALAR_IMPLS[name](*args))
    return result.astype(dtype, copy=False)


def evaluate(expr: tuple, inputs: tuple, wanted: tuple) -> list[np.ndarray]:
    """The values of instructions ``wanted`` of ``expr`` on ``inputs``."""
    values: list = []
    for name, dtype, args in expr:
        arrays = [inputs[a[1]] if a[0] == "in" else (values[a[1]] if a[0] == "op" else np.asarray(a[1], a[2]))
                  for a in args]
        values.append(_scalar(name, dtype, arrays))
    return [values[j] for j in wanted]


def _epilogue(ops: tuple, out: np.ndarray) -> np.ndarray:
    for name in ops:
        out = _scalar(name, out.dtype.name, [out])
    return out


@implements(fused.FusedElemwise)
def fused_elemwise_impl(op, *inputs):
    results = evaluate(op.expr, inputs, op.outputs)
    shapes = [np.broadcast_shapes(*[np.shape(inputs[k]) for k in fused.expr_inputs(op.expr, o)])
              for o in op.outputs]
    results = [np.array(np.broadcast_to(r, s)) if r.shape != s else r for r, s in zip(results, shapes)]
    return tuple(results) if len(results) > 1 else results[0]


@implements(fused.FusedReduce)
def fused_reduce_impl(op, *inputs):
    (x,) = evaluate(op.expr, inputs, (len(op.expr) - 1,))
    shape = np.broadcast_shapes(*[np.shape(inputs[k]) for k in fused.expr_inputs(op.expr, len(op.expr) - 1)])
    if x.shape != shape:
        x = np.broadcast_to(x, shape)
    fn = {"sum": np.sum, "prod": np.prod, "max": np.max, "min": np.min}[op.reducer]
    return np.asarray(fn(x, axis=op.axes), dtype=x.dtype)


@implements(fused.Gemm)
def gemm_impl(op, a, b, *c):
    a = a.T if op.trans_a else a
    b = b.T if op.trans_b else b
    if a.shape[-1] != b.shape[-2]:
        raise ValueError(f"gemm: inner dimensions differ at run time: {a.shape} @ {b.shape}")
    out = np.matmul(a, b)
    dtype = out.dtype
    if op.alpha != 1.0:
        out = np.multiply(out, np.asarray(op.alpha, dtype))
    if c:
        if op.beta == 1.0:
            out = np.add(out, c[0])
        elif op.beta == -1.0:
            out = np.subtract(out, c[0])
        else:
            out = np.add(out, np.multiply(c[0], np.asarray(op.beta, dtype)))
    return _epilogue(op.epilogue, np.asarray(out, dtype))


@implements(fused.GemmBernoulli)
def gemm_bernoulli_impl(op, a, b, *rest):
    from backends.numpy.core_ops import random_impl
    from engine.ops.random import RandomVariable

    *c, state = rest
    p = gemm_impl(op.gemm, a, b, *c)
    new_state, sample = random_impl(RandomVariable("binomial", op.dtype, 2), state, np.array(p.shape), p)
    return p, new_state, sample


@implements(fused.FusedConv)
def fused_conv_impl(op, x, w, *bias):
    out = IMPLS[type(op.conv)](op.conv, x, w)
    if bias:
        out = np.add(out, bias[0])
    return _epilogue(op.epilogue, out)


@implements(fused.FusedPool)
def fused_pool_impl(op, x):
    return IMPLS[type(op.pool)](op.pool, _epilogue(op.prologue, x))
