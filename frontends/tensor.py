"""Theano-style symbolic tensors: ``import frontends.tensor as T``.

    x = T.matrix("x")                     # float32 (engine.config.floatX) unless told
    y = T.nnet.sigmoid(T.dot(x, W) + b)   # or T.sigmoid
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from engine import ops  # noqa: F401  (gives Variable its operators)
from engine.config import config
from engine.errors import user_site
from engine.grad import grad  # noqa: F401  (Theano's T.grad)
from engine.graph import Constant, Variable, as_variable
from engine.ops import blas, indexing
from engine.ops import elemwise as E
from engine.ops import reduce as R
from engine.ops import shape as S
from engine.ops.shape import (  # noqa: F401
    alloc,
    arange,
    concatenate,
    dimshuffle,
    flatten,
    reshape,
    stack,
    stop_gradient,
    transpose,
)
from engine.types import TensorType, is_python_data

# -- declaring inputs -----------------------------------------------------------------------


def tensor(dtype: str | None = None, shape: Sequence | None = None, name: str | None = None,
           ndim: int | None = None) -> Variable:
    """A symbolic input of the given dtype and static shape (``None`` = known at run time)."""
    if shape is None:
        shape = (None,) * (ndim or 0)
    return Variable(TensorType(dtype or config.floatX, tuple(shape)), name=name, site=user_site())


def scalar(name: str | None = None, dtype: str | None = None) -> Variable:
    return tensor(dtype, (), name)


def vector(name: str | None = None, dtype: str | None = None, shape: Sequence | None = None) -> Variable:
    return tensor(dtype, shape or (None,), name)


def matrix(name: str | None = None, dtype: str | None = None, shape: Sequence | None = None) -> Variable:
    return tensor(dtype, shape or (None, None), name)


def tensor3(name: str | None = None, dtype: str | None = None, shape: Sequence | None = None) -> Variable:
    return tensor(dtype, shape or (None,) * 3, name)


def tensor4(name: str | None = None, dtype: str | None = None, shape: Sequence | None = None) -> Variable:
    return tensor(dtype, shape or (None,) * 4, name)


def iscalar(name: str | None = None) -> Variable:
    return scalar(name, "int32")


def lscalar(name: str | None = None) -> Variable:
    return scalar(name, "int64")


def ivector(name: str | None = None) -> Variable:
    return vector(name, "int32")


def lvector(name: str | None = None) -> Variable:
    return vector(name, "int64")


def imatrix(name: str | None = None) -> Variable:
    return matrix(name, "int32")


def lmatrix(name: str | None = None) -> Variable:
    return matrix(name, "int64")


# Theano's typed constructors: f = float32, d = float64, b = int8, i = int32, l = int64
def _typed(ctor, prefix: str, dtype: str):
    def fn(name: str | None = None) -> Variable:
        return ctor(name, dtype)
    fn.__name__ = prefix + ctor.__name__
    return fn


_KINDS = (scalar, vector, matrix, tensor3, tensor4)
fscalar, fvector, fmatrix, ftensor3, ftensor4 = (_typed(c, "f", "float32") for c in _KINDS)
dscalar, dvector, dmatrix, dtensor3, dtensor4 = (_typed(c, "d", "float64") for c in _KINDS)
bscalar, bvector, bmatrix = (_typed(c, "b", "int8") for c in _KINDS[:3])
itensor3, itensor4 = (_typed(c, "i", "int32") for c in _KINDS[3:])


def constant(value: Any, dtype: str | None = None, name: str | None = None) -> Constant:
    # Python floats (also in lists) are floatX, as in expressions; numpy values keep their dtype
    if dtype is None and is_python_data(value) and np.asarray(value).dtype.kind == "f":
        dtype = config.floatX
    return Constant(value, dtype=dtype, name=name)


as_tensor_variable = as_variable

# -- elementwise ----------------------------------------------------------------------------


def _unary(name: str):
    def fn(x: Any) -> Variable:
        return E.apply(name, x)
    fn.__name__ = name
    fn.__doc__ = f"Elementwise {name}."
    return fn


abs = abs_ = _unary("abs")  # noqa: A001 - Theano's names
neg = _unary("neg")
exp = _unary("exp")
expm1 = _unary("expm1")
log = _unary("log")
log1p = _unary("log1p")
sqrt = _unary("sqrt")
sqr = square = _unary("sqr")
tanh = _unary("tanh")
sigmoid = _unary("sigmoid")
softplus = _unary("softplus")
relu = _unary("relu")
sin = _unary("sin")
cos = _unary("cos")
sgn = sign = _unary("sign")
floor = _unary("floor")
ceil = _unary("ceil")
round = _unary("round")  # noqa: A001
erf = _unary("erf")
reciprocal = _unary("reciprocal")
invert = _unary("invert")


def pow(a: Any, b: Any) -> Variable:  # noqa: A001
    return E.apply("pow", a, b)


def add(a: Any, b: Any) -> Variable:
    return E.apply("add", a, b)


def sub(a: Any, b: Any) -> Variable:
    return E.apply("sub", a, b)


def mul(a: Any, b: Any) -> Variable:
    return E.apply("mul", a, b)


def true_div(a: Any, b: Any) -> Variable:
    return E.apply("true_div", a, b)


def int_div(a: Any, b: Any) -> Variable:
    return E.apply("floor_div", a, b)


def maximum(a: Any, b: Any) -> Variable:
    return E.apply("maximum", a, b)


def minimum(a: Any, b: Any) -> Variable:
    return E.apply("minimum", a, b)


def clip(x: Any, low: Any, high: Any) -> Variable:
    return minimum(maximum(x, low), high)


def where(condition: Any, a: Any, b: Any) -> Variable:
    return E.apply("where", condition, a, b)


switch = where


def cast(x: Any, dtype: str) -> Variable:
    return E.cast(as_variable(x), dtype)


def eq(a: Any, b: Any) -> Variable:
    return E.apply("eq", a, b)


def neq(a: Any, b: Any) -> Variable:
    return E.apply("neq", a, b)


def lt(a: Any, b: Any) -> Variable:
    return E.apply("lt", a, b)


def le(a: Any, b: Any) -> Variable:
    return E.apply("le", a, b)


def gt(a: Any, b: Any) -> Variable:
    return E.apply("gt", a, b)


def ge(a: Any, b: Any) -> Variable:
    return E.apply("ge", a, b)


def and_(a: Any, b: Any) -> Variable:
    return E.apply("and", a, b)


def or_(a: Any, b: Any) -> Variable:
    return E.apply("or", a, b)


def xor(a: Any, b: Any) -> Variable:
    return E.apply("xor", a, b)


def zeros_like(x: Any, dtype: str | None = None) -> Variable:
    x = as_variable(x)
    return E.zeros_like(x) if dtype is None else cast(E.zeros_like(x), dtype)


def ones_like(x: Any, dtype: str | None = None) -> Variable:
    x = as_variable(x)
    return E.ones_like(x) if dtype is None else cast(E.ones_like(x), dtype)


def fill(like: Any, value: Any) -> Variable:
    return S.broadcast_like(as_variable(value), as_variable(like))


# -- reductions -------------------------------------------------------------------------------


def sum(x: Any, axis: Any = None, keepdims: bool = False) -> Variable:  # noqa: A001
    return R.reduce(x, "sum", axis, keepdims)


def prod(x: Any, axis: Any = None, keepdims: bool = False) -> Variable:
    return R.reduce(x, "prod", axis, keepdims)


def max(x: Any, axis: Any = None, keepdims: bool = False) -> Variable:  # noqa: A001
    return R.reduce(x, "max", axis, keepdims)


def min(x: Any, axis: Any = None, keepdims: bool = False) -> Variable:  # noqa: A001
    return R.reduce(x, "min", axis, keepdims)


mean = R.mean
var = R.var
std = R.std


def argmax(x: Any, axis: int | None = None, keepdims: bool = False) -> Variable:
    return R.argmax(x, axis, keepdims)


def argmin(x: Any, axis: int | None = None, keepdims: bool = False) -> Variable:
    return R.argmax(x, axis, keepdims, minimum=True)


# -- products and shapes ----------------------------------------------------------------------

dot = blas.dot
matmul = blas.dot


def outer(a: Any, b: Any) -> Variable:
    a, b = as_variable(a), as_variable(b)
    return dimshuffle(a, 0, "x") * dimshuffle(b, "x", 0)


def shape(x: Any) -> Variable:
    """The run-time shape of ``x`` as an int64 vector (the same object as ``x.shape``)."""
    return as_variable(x).shape


def shape_padleft(x: Any, n: int = 1) -> Variable:
    x = as_variable(x)
    return dimshuffle(x, *(["x"] * n), *range(x.ndim))


def shape_padright(x: Any, n: int = 1) -> Variable:
    x = as_variable(x)
    return dimshuffle(x, *range(x.ndim), *(["x"] * n))


def squeeze(x: Any, axis: Any = None) -> Variable:
    x = as_variable(x)
    axes = [i for i, d in enumerate(x.type.shape) if d == 1] if axis is None else R.normalize_axes(axis, x.ndim)
    return dimshuffle(x, [i for i in range(x.ndim) if i not in axes])


def expand_dims(x: Any, axis: int) -> Variable:
    x = as_variable(x)
    axis = axis % (x.ndim + 1)
    return dimshuffle(x, *range(axis), "x", *range(axis, x.ndim))


set_subtensor = indexing.set_subtensor
inc_subtensor = indexing.inc_subtensor


def zeros(shape: Any, dtype: str | None = None) -> Variable:
    """Zeros of ``shape``: ints give a constant; symbolic sizes or ``x.shape`` an ``Alloc``."""
    return _filled(0, shape, dtype)


def ones(shape: Any, dtype: str | None = None) -> Variable:
    return _filled(1, shape, dtype)


def _filled(value: int, shape: Any, dtype: str | None) -> Variable:
    dtype = dtype or config.floatX
    dims = (shape,) if isinstance(shape, (int, np.integer)) else shape
    if not isinstance(dims, Variable) and all(isinstance(d, (int, np.integer)) for d in dims):
        return Constant(np.full(tuple(dims), value, dtype=dtype))
    return alloc(Constant(value, dtype=dtype), shape)


def __getattr__(name: str) -> Any:
    # ``T.nnet.sigmoid`` / ``T.nnet.softmax`` as in Theano: the DL ops live in frontends.nn,
    # imported on first use (it builds on this module)
    if name == "nnet":
        import frontends.nn

        return frontends.nn
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
