"""numpy implementations of the core ops: elementwise, reductions, shapes, indexing, matmul,
random sampling."""

from __future__ import annotations

import numpy as np

from backends.numpy.table import implements
from engine import philox
from engine.ops import blas, elemwise, indexing, random, reduce, shape


def _sigmoid(x):
    # the two branches keep exp() from overflowing for large |x|
    out = np.empty_like(x)
    positive = x >= 0
    out[positive] = 1 / (1 + np.exp(-x[positive]))
    e = np.exp(x[~positive])
    out[~positive] = e / (1 + e)
    return out


def _softplus(x):
    return np.logaddexp(np.zeros((), x.dtype), x)


def _pow(a, b):
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.power(a, b)


SCALAR_IMPLS = {
    "add": np.add, "sub": np.subtract, "mul": np.multiply, "true_div": np.true_divide,
    "floor_div": np.floor_divide, "mod": np.mod, "pow": _pow, "maximum": np.maximum, "minimum": np.minimum,
    "lt": np.less, "le": np.less_equal, "gt": np.greater, "ge": np.greater_equal, "eq": np.equal,
    "neq": np.not_equal, "and": np.bitwise_and, "or": np.bitwise_or, "xor": np.bitwise_xor,
    "invert": np.invert, "where": np.where, "identity": lambda x: x.copy(),
    "neg": np.negative, "abs": np.abs, "sign": np.sign, "floor": np.floor, "ceil": np.ceil, "round": np.round,
    "sqr": np.square, "sqrt": np.sqrt, "exp": np.exp, "expm1": np.expm1, "log": np.log, "log1p": np.log1p,
    "tanh": np.tanh, "sigmoid": _sigmoid, "softplus": _softplus, "relu": lambda x: np.maximum(x, 0),
    "sin": np.sin, "cos": np.cos, "reciprocal": np.reciprocal,
    "erf": lambda x: _erf(x),
}


def _erf(x):
    from math import erf

    return np.vectorize(erf, otypes=[x.dtype])(x)


@implements(elemwise.Elemwise)
def elemwise_impl(op, *inputs):
    if op.scalar_op == "cast":
        return inputs[0].astype(op.cast_to)
    with np.errstate(all="ignore"):
        result = SCALAR_IMPLS[op.scalar_op](*inputs)
    result = np.asarray(result)
    expected = op.cast_to or ("bool" if op.info.out_dtype == "bool" else inputs[-1].dtype)
    return result.astype(expected, copy=False)


@implements(reduce.Reduce)
def reduce_impl(op, x):
    fn = {"sum": np.sum, "prod": np.prod, "max": np.max, "min": np.min}[op.reducer]
    return np.asarray(fn(x, axis=op.axes), dtype=x.dtype)


@implements(reduce.Argmax)
def argmax_impl(op, x):
    return (np.argmin if op.minimum else np.argmax)(x, axis=op.axis).astype("int64")


@implements(blas.MatMul)
def matmul_impl(op, a, b):
    if a.shape[-1] != b.shape[-2]:
        # a ValueError, so that run_node names the node and the user's line
        raise ValueError(f"matmul: inner dimensions differ at run time: {a.shape} @ {b.shape}")
    return np.matmul(a, b)


@implements(shape.DimShuffle)
def dimshuffle_impl(op, x):
    kept = [a for a in op.new_order if a != "x"]
    dropped = [a for a in range(x.ndim) if a not in kept]
    y = np.squeeze(x, axis=tuple(dropped)) if dropped else x
    remaining = [a for a in range(x.ndim) if a not in dropped]
    y = np.transpose(y, [remaining.index(a) for a in kept])
    return y.reshape([1 if a == "x" else x.shape[a] for a in op.new_order])


@implements(shape.Reshape)
def reshape_impl(op, x, *sizes):
    sizes = iter(sizes)
    target = [int(next(sizes)) if p is None else p for p in op.pattern]
    if -1 not in target and int(np.prod(target)) != x.size:
        # a ValueError, so that run_node names the node and the user's line
        raise ValueError(f"cannot reshape an array of shape {x.shape} ({x.size} elements) to {tuple(target)}")
    return np.reshape(x, target)


@implements(shape.Shape)
def shape_impl(op, x):
    return np.asarray(x.shape, dtype="int64")


@implements(shape.ShapeOf)
def shape_of_impl(op, x):
    return np.asarray(x.shape[op.axis], dtype="int64")


@implements(shape.BroadcastLike)
def broadcast_like_impl(op, x, like):
    return np.array(np.broadcast_to(x, np.broadcast_shapes(x.shape, like.shape)))


@implements(shape.Alloc)
def alloc_impl(op, value, *sizes):
    sizes = iter(sizes)
    target = tuple(int(next(sizes)) if p is None else p for p in op.pattern)
    if any(d < 0 for d in target):
        raise ValueError(f"alloc: negative dimension in {target}")
    return np.array(np.broadcast_to(value, target))


@implements(shape.SumToShape)
def sum_to_shape_impl(op, g, like):
    lead = g.ndim - like.ndim
    axes = tuple(range(lead)) + tuple(
        lead + i for i, d in enumerate(like.shape) if d == 1 and g.shape[lead + i] != 1)
    result = g.sum(axis=axes, dtype=g.dtype) if axes else g
    return np.asarray(result).reshape(like.shape)


@implements(shape.Join)
def join_impl(op, *xs):
    return np.concatenate(xs, axis=op.axis)


@implements(shape.Arange)
def arange_impl(op, start, stop, step):
    return np.arange(start, stop, step, dtype=op.dtype)


@implements(shape.StopGradient)
def stop_gradient_impl(op, x):
    return x


def _basic_key(spec, bounds):
    bounds = iter(bounds)

    def value(v):
        return int(next(bounds)) if v == indexing.SYMBOLIC else v

    key = []
    for entry in spec:
        if entry[0] == "index":
            key.append(value(entry[1]))
        else:
            key.append(slice(value(entry[1]), value(entry[2]), value(entry[3])))
    return tuple(key)


@implements(indexing.Subtensor)
def subtensor_impl(op, x, *bounds):
    return np.array(x[_basic_key(op.spec, bounds)])


@implements(indexing.IncSubtensor)
def inc_subtensor_impl(op, x, y, *bounds):
    out = x.copy()
    key = _basic_key(op.spec, bounds)
    if op.set_instead_of_inc:
        out[key] = y
    else:
        out[key] += y
    return out


@implements(indexing.AdvancedSubtensor)
def advanced_subtensor_impl(op, x, *indices):
    return x[tuple(indices)]


@implements(indexing.AdvancedIncSubtensor)
def advanced_inc_subtensor_impl(op, x, y, *indices):
    out = x.copy()
    if op.set_instead_of_inc:
        out[tuple(indices)] = y
    else:
        np.add.at(out, tuple(indices), y)
    return out


@implements(random.RandomVariable)
def random_impl(op, state, size, *params):
    key, start = (int(state[0]), int(state[1])), int(state[2])
    shape = tuple(int(d) for d in size)
    for p in params:
        np.broadcast_shapes(np.shape(p), shape)
    if op.distribution == "uniform":
        sample = philox.uniform(key, start, shape, params[0], params[1], op.dtype)
    elif op.distribution == "normal":
        sample = philox.normal(key, start, shape, params[0], params[1], op.dtype)
    else:
        sample = philox.binomial(key, start, shape, params[0], op.dtype)
    new_state = state.copy()
    new_state[2] = (start + philox.blocks_needed(int(np.prod(shape)))) % 2**63
    return new_state, np.asarray(sample, dtype=op.dtype)
