"""Op table rows for the core ops: elementwise, reductions, matmul, shapes, indexing, arange.

References are plain numpy, written without Kiln. Inputs keep away from the points where an
op is not differentiable (abs/relu at 0, ties of max/min, clip bounds) or not defined (log of
non-positives), by more than verify_grad's finite-difference step (1e-2 in float32).
"""

from __future__ import annotations

import numpy as np

import frontends.tensor as T
from engine.ops.shape import Reshape, ShapeOf
from tests.op_rows import OpRow

# -- input makers: (rng, dtype) -> list of arrays ---------------------------------------------


def normal(*shapes):
    return lambda rng, dtype: [rng.standard_normal(s).astype(dtype) for s in shapes]


def positive(*shapes, low=0.5, high=2.0):
    return lambda rng, dtype: [rng.uniform(low, high, s).astype(dtype) for s in shapes]


def nonzero(*shapes):
    """|x| in [0.3, 1.5] with random signs."""
    def make(rng, dtype):
        return [(rng.uniform(0.3, 1.5, s) * rng.choice([-1, 1], s)).astype(dtype) for s in shapes]
    return make


def distinct(shape):
    """Values at least 0.25 apart (no ties for max/min/argmax, even after a 1e-2 step)."""
    def make(rng, dtype):
        n = int(np.prod(shape))
        values = rng.permutation(n) * 0.25 - n * 0.125 + rng.uniform(0, 0.05, n)
        return [values.reshape(shape).astype(dtype)]
    return make


def pair_apart(shape):
    """Two arrays whose elements differ by at least 0.3 everywhere (for maximum/minimum)."""
    def make(rng, dtype):
        a = rng.standard_normal(shape)
        b = a + rng.uniform(0.3, 1.0, shape) * rng.choice([-1, 1], shape)
        return [a.astype(dtype), b.astype(dtype)]
    return make


def with_ints(make_floats, *ints):
    """Float inputs from ``make_floats`` followed by fixed integer arrays (indices, sizes)."""
    return lambda rng, dtype: [*make_floats(rng, dtype), *[np.asarray(i, dtype="int64") for i in ints]]


def dynamic(x):
    """``x`` with every static dim hidden (``None``), so the op meets its shapes at run time."""
    return Reshape((None,) * x.ndim)(x, *[ShapeOf(i)(x) for i in range(x.ndim)])


def sigmoid(x):
    return np.exp(-np.logaddexp(0, -x))  # 1 / (1 + exp(-x)) without overflow


def erf(x):
    from math import erf as scalar_erf

    return np.array([scalar_erf(v) for v in x.ravel()], dtype=x.dtype).reshape(x.shape)


def with_nonzero_last(make, shape):
    """``make``'s inputs followed by one input of ``shape`` away from zero (a divisor)."""
    return lambda rng, dtype: [*make(rng, dtype), *nonzero(shape)(rng, dtype)]


# -- elementwise --------------------------------------------------------------------------------

ELEMWISE = [
    OpRow("abs", T.abs, np.abs, nonzero((3, 4))),
    OpRow("neg", T.neg, np.negative, normal((3, 4))),
    OpRow("neg_operator", lambda a: -a, lambda a: -a, normal((5,))),
    OpRow("exp", T.exp, np.exp, normal((3, 4))),
    OpRow("expm1", T.expm1, np.expm1, normal((3, 4))),
    OpRow("log", T.log, np.log, positive((3, 4))),
    OpRow("log1p", T.log1p, np.log1p, positive((3, 4), low=-0.5, high=2.0)),
    OpRow("sqrt", T.sqrt, np.sqrt, positive((3, 4))),
    OpRow("sqr", T.sqr, np.square, normal((3, 4))),
    OpRow("square", T.square, lambda a: a * a, normal((2, 3, 2))),
    OpRow("tanh", T.tanh, np.tanh, normal((3, 5))),
    OpRow("sigmoid", T.sigmoid, sigmoid, normal((3, 5))),
    OpRow("sigmoid_saturated", T.sigmoid, sigmoid,
          lambda rng, dtype: [np.array([-120.0, -30.0, 0.0, 30.0, 120.0], dtype)], grad=False),
    OpRow("softplus", T.softplus, lambda a: np.log1p(np.exp(a)), normal((3, 5))),
    OpRow("softplus_large", T.softplus, lambda a: np.where(a > 30, a, np.log1p(np.exp(np.minimum(a, 30)))),
          lambda rng, dtype: [np.array([-200.0, -5.0, 0.5, 50.0, 200.0], dtype)], grad=False),
    OpRow("relu", T.relu, lambda a: np.maximum(a, 0), nonzero((3, 4))),
    OpRow("sin", T.sin, np.sin, normal((3, 4))),
    OpRow("cos", T.cos, np.cos, normal((3, 4))),
    OpRow("reciprocal", T.reciprocal, lambda a: 1 / a, nonzero((3, 4))),
    OpRow("erf", T.erf, erf, normal((3, 4))),
    OpRow("sign", T.sign, np.sign, nonzero((3, 4)), grad=False),
    OpRow("floor", T.floor, np.floor, normal((3, 4)), grad=False),
    OpRow("ceil", T.ceil, np.ceil, normal((3, 4)), grad=False),
    # binary ops, with numpy broadcasting
    OpRow("add", lambda a, b: a + b, np.add, normal((3, 4), (3, 4))),
    OpRow("add_broadcast_row", lambda a, b: a + b, lambda a, b: a + b, normal((3, 4), (4,))),
    OpRow("add_broadcast_col_row", lambda a, b: a + b, lambda a, b: a + b, normal((3, 1), (1, 4))),
    OpRow("add_scalar_tensor", lambda a, b: a + b, lambda a, b: a + b, normal((), (2, 3))),
    OpRow("add_python_scalar", lambda a: a + 1.5, lambda a: a + 1.5, normal((3, 4))),
    OpRow("add_none_dim_broadcast", lambda a, b: dynamic(a) + dynamic(b), lambda a, b: a + b,
          normal((3, 1), (1, 4))),
    OpRow("mul_none_dim_broadcast_rank", lambda a, b: dynamic(a) * b, lambda a, b: a * b, normal((2, 1, 3), (4, 1))),
    OpRow("sub", lambda a, b: a - b, np.subtract, normal((2, 3), (3,))),
    OpRow("rsub_python_scalar", lambda a: 2 - a, lambda a: 2 - a, normal((2, 3))),
    OpRow("mul", lambda a, b: a * b, np.multiply, normal((2, 3), (2, 1))),
    OpRow("true_div", lambda a, b: a / b, np.divide, with_nonzero_last(normal((3, 4)), (4,))),
    OpRow("rtrue_div_python_scalar", lambda a: 1.0 / a, lambda a: 1.0 / a, nonzero((3, 4))),
    OpRow("pow", T.pow, np.power, lambda rng, dtype: [rng.uniform(0.5, 2.0, (3, 4)).astype(dtype),
                                                      rng.uniform(-1.5, 1.5, (3, 4)).astype(dtype)]),
    OpRow("pow_int_exponent", lambda a: a ** 3, lambda a: a ** 3, normal((3, 4))),
    OpRow("rpow", lambda a: 2 ** a, lambda a: 2.0 ** a, normal((3, 4))),
    OpRow("maximum", T.maximum, np.maximum, pair_apart((3, 4))),
    OpRow("minimum", T.minimum, np.minimum, pair_apart((3, 4))),
    OpRow("maximum_broadcast", T.maximum, np.maximum,
          lambda rng, dtype: [np.array([[-1.0, 0.3, 2.0]], dtype), np.array([[0.0], [1.0]], dtype)]),
    OpRow("clip", lambda a: T.clip(a, -0.5, 0.5), lambda a: np.clip(a, -0.5, 0.5),
          lambda rng, dtype: [np.array([[-1.3, -0.7, -0.2, 0.1], [0.35, 0.8, 1.6, -0.45]], dtype)]),
    OpRow("where", lambda c, a, b: T.where(c > 0, a, b), lambda c, a, b: np.where(c > 0, a, b),
          lambda rng, dtype: [*nonzero((3, 4))(rng, dtype), *normal((3, 4), (4,))(rng, dtype)]),
    OpRow("switch_python_scalar", lambda a: T.switch(T.lt(a, 0), 0.5 * a, a), lambda a: np.where(a < 0, 0.5 * a, a),
          nonzero((3, 4))),
    OpRow("cast_float", lambda a: T.cast(a, "float64") * 2, lambda a: a.astype("float64") * 2, normal((3, 4))),
    OpRow("cast_int32", lambda a: T.cast(a * 3, "int32"), lambda a: (a * 3).astype("int32"),
          distinct((3, 4)), grad=False),
    OpRow("cast_bool", lambda a: T.cast(a, "bool"), lambda a: a.astype(bool),
          lambda rng, dtype: [np.array([0.0, 1.5, -2.0, 0.0], dtype)], grad=False),
    # comparisons (bool results, no gradient)
    OpRow("lt", lambda a, b: a < b, np.less, pair_apart((3, 4)), grad=False),
    OpRow("le", lambda a, b: a <= b, np.less_equal,
          lambda rng, dtype: [np.array([1.0, 2.0, 3.0], dtype), np.array([2.0, 2.0, 2.0], dtype)], grad=False),
    OpRow("gt_broadcast", lambda a, b: a > b, np.greater, normal((3, 4), (4,)), grad=False),
    OpRow("ge_python_scalar", lambda a: a >= 0.5, lambda a: a >= 0.5, normal((3, 4)), grad=False),
    OpRow("eq", T.eq, np.equal,
          lambda rng, dtype: [np.array([1.0, 2.0, 3.0], dtype), np.array([1.0, 2.5, 3.0], dtype)], grad=False),
    OpRow("neq", T.neq, np.not_equal,
          lambda rng, dtype: [np.array([1.0, 2.0, 3.0], dtype), np.array([1.0, 2.5, 3.0], dtype)], grad=False),
    OpRow("and_or", lambda a, b: T.and_(a > 0, b > 0) | (a < -1),
          lambda a, b: ((a > 0) & (b > 0)) | (a < -1), normal((4, 3), (4, 3)), grad=False),
]


def ints(*shapes, low=-5, high=6):
    return lambda rng, dtype: [rng.integers(low, high, s).astype(dtype) for s in shapes]


INT_DTYPES = ("int8", "int32", "int64")

INTEGER = [
    OpRow("int_add_mul_broadcast", lambda a, b: a * b + a - 1, lambda a, b: a * b + a - 1, ints((3, 4), (4,)),
          grad=False, dtypes=INT_DTYPES),
    OpRow("int_floor_div_mod", lambda a, b: T.stack([a // b, a % b]), lambda a, b: np.stack([a // b, a % b]),
          lambda rng, dtype: [rng.integers(-9, 10, (3, 4)).astype(dtype), rng.integers(1, 4, (4,)).astype(dtype)],
          grad=False, dtypes=INT_DTYPES),
    OpRow("int_true_div_is_floatx", lambda a, b: a / b, lambda a, b: (a / b).astype("float32"),
          lambda rng, dtype: [rng.integers(-9, 10, (3, 4)).astype(dtype), rng.integers(1, 4, (4,)).astype(dtype)],
          grad=False, dtypes=INT_DTYPES, rtol=1e-6),
    OpRow("int_abs_neg_maximum", lambda a, b: T.maximum(abs(a), -b), lambda a, b: np.maximum(np.abs(a), -b),
          ints((3, 4), (3, 4)), grad=False, dtypes=INT_DTYPES),
    OpRow("int_sum_max_argmax",
          lambda a: T.concatenate([a.sum(axis=0), a.max(axis=0), T.cast(a.argmax(axis=0), a.dtype)]),
          lambda a: np.concatenate([a.sum(axis=0), a.max(axis=0), a.argmax(axis=0).astype(a.dtype)]),
          ints((3, 4)), grad=False, dtypes=INT_DTYPES),
    OpRow("int_mean_is_floatx", T.mean, lambda a: np.float32(a.mean()), ints((3, 4)), grad=False, dtypes=INT_DTYPES,
          rtol=1e-6),
    OpRow("int_comparisons", lambda a, b: T.and_(a < b, T.neq(a, 0)), lambda a, b: (a < b) & (a != 0),
          ints((3, 4), (3, 4)), grad=False, dtypes=INT_DTYPES),
    OpRow("int_index_and_set", lambda a: T.set_subtensor(a[1:, ::2], a[:-1, ::2] * 2),
          lambda a: np.concatenate([a[:1], np.where(np.arange(a.shape[1]) % 2 == 0, a[:-1] * 2, a[1:])]),
          ints((3, 4)), grad=False, dtypes=INT_DTYPES),
    OpRow("mod_float", lambda a, b: a % b, np.mod,
          lambda rng, dtype: [(rng.uniform(0.1, 0.9, (3, 4)) + rng.integers(-3, 3, (3, 4))).astype(dtype),
                              np.ones((4,), dtype)]),
]

# -- reductions ---------------------------------------------------------------------------------

REDUCTIONS = [
    OpRow("sum_all", T.sum, np.sum, normal((3, 4))),
    OpRow("sum_axis0", lambda a: a.sum(axis=0), lambda a: a.sum(axis=0), normal((3, 4))),
    OpRow("sum_axis_neg1_keepdims", lambda a: a.sum(axis=-1, keepdims=True), lambda a: a.sum(-1, keepdims=True),
          normal((3, 4))),
    OpRow("sum_axes_0_2", lambda a: T.sum(a, axis=(0, 2)), lambda a: a.sum(axis=(0, 2)), normal((2, 3, 4))),
    OpRow("sum_none_dim", lambda a: dynamic(a).sum(axis=1), lambda a: a.sum(axis=1), normal((3, 4))),
    OpRow("mean_all", T.mean, np.mean, normal((3, 4))),
    OpRow("mean_axis1", lambda a: a.mean(axis=1), lambda a: a.mean(axis=1), normal((3, 4))),
    OpRow("mean_axes_keepdims", lambda a: T.mean(a, axis=(1, 2), keepdims=True),
          lambda a: a.mean(axis=(1, 2), keepdims=True), normal((2, 3, 4))),
    OpRow("mean_none_dim", lambda a: T.mean(dynamic(a), axis=0), lambda a: a.mean(axis=0), normal((3, 4))),
    OpRow("max_all", T.max, np.max, distinct((3, 4))),
    OpRow("max_axis1", lambda a: a.max(axis=1), lambda a: a.max(axis=1), distinct((3, 4))),
    OpRow("max_axis0_keepdims", lambda a: T.max(a, axis=0, keepdims=True), lambda a: a.max(0, keepdims=True),
          distinct((3, 4))),
    OpRow("min_all", T.min, np.min, distinct((3, 4))),
    OpRow("min_axis_neg1", lambda a: a.min(axis=-1), lambda a: a.min(axis=-1), distinct((2, 3, 4))),
    OpRow("prod_all", T.prod, np.prod, positive((2, 3))),
    OpRow("prod_axis1", lambda a: a.prod(axis=1), lambda a: a.prod(axis=1), nonzero((3, 4))),
    OpRow("var_all", T.var, np.var, normal((3, 4))),
    OpRow("var_axis0_keepdims", lambda a: T.var(a, axis=0, keepdims=True), lambda a: a.var(0, keepdims=True),
          normal((4, 3))),
    OpRow("std_axis1", lambda a: T.std(a, axis=1), lambda a: a.std(axis=1), normal((3, 5))),
    OpRow("std_ddof1", lambda a: a.std(ddof=1), lambda a: a.std(ddof=1), normal((3, 5))),
    OpRow("argmax_axis1", lambda a: T.argmax(a, axis=1), lambda a: a.argmax(axis=1), distinct((3, 4)), grad=False),
    OpRow("argmax_all", T.argmax, np.argmax, distinct((3, 4)), grad=False),
    OpRow("argmax_keepdims", lambda a: a.argmax(axis=0, keepdims=True),
          lambda a: a.argmax(axis=0)[None, :], distinct((3, 4)), grad=False),
    OpRow("argmax_all_keepdims", lambda a: T.argmax(a, keepdims=True), lambda a: np.argmax(a, keepdims=True),
          distinct((3, 4)), grad=False),
    OpRow("var_of_ints", lambda a: T.var(T.cast(a * 4, "int32"), axis=0), lambda a: (a * 4).astype("int32").var(0),
          distinct((3, 4)), grad=False, dtypes=("float32",)),  # floatX result whatever the input
    OpRow("argmin_axis_neg1", lambda a: T.argmin(a, axis=-1), lambda a: a.argmin(axis=-1), distinct((2, 3, 4)),
          grad=False),
]

# -- matrix products ----------------------------------------------------------------------------

BLAS = [
    OpRow("dot_vector_vector", T.dot, np.dot, normal((4,), (4,))),
    OpRow("dot_vector_matrix", T.dot, np.dot, normal((3,), (3, 4))),
    OpRow("dot_matrix_vector", T.dot, np.dot, normal((3, 4), (4,))),
    OpRow("dot_matrix_matrix", T.dot, np.dot, normal((3, 4), (4, 2))),
    OpRow("matmul_operator", lambda a, b: a @ b, lambda a, b: a @ b, normal((2, 3), (3, 3))),
    OpRow("matmul_batched", T.matmul, np.matmul, normal((2, 3, 4), (2, 4, 2))),
    OpRow("matmul_batched_broadcast", T.matmul, np.matmul, normal((2, 3, 4), (4, 2))),
    OpRow("matmul_batched_broadcast_1", T.matmul, np.matmul, normal((2, 1, 2, 3), (3, 3, 2))),
    OpRow("dot_none_dims", lambda a, b: T.dot(dynamic(a), dynamic(b)), np.dot, normal((3, 4), (4, 2))),
]

# -- shapes ---------------------------------------------------------------------------------------

SHAPES = [
    OpRow("reshape", lambda a: a.reshape((4, 3)), lambda a: a.reshape(4, 3), normal((3, 4))),
    OpRow("reshape_minus1", lambda a: T.reshape(a, (2, -1)), lambda a: a.reshape(2, -1), normal((3, 4))),
    OpRow("reshape_symbolic", lambda a: T.reshape(dynamic(a), (a.shape[1], -1)), lambda a: a.reshape(a.shape[1], -1),
          normal((3, 4))),
    OpRow("reshape_to_shape_of", lambda a, b: T.reshape(a, b.shape), lambda a, b: a.reshape(b.shape),
          normal((3, 4), (2, 6))),
    OpRow("flatten", T.flatten, np.ravel, normal((2, 3, 2))),
    OpRow("flatten_ndim2", lambda a: T.flatten(a, 2), lambda a: a.reshape(a.shape[0], -1), normal((2, 3, 2))),
    OpRow("flatten_ndim2_none_dims", lambda a: dynamic(a).flatten(2), lambda a: a.reshape(a.shape[0], -1),
          normal((2, 3, 2))),
    OpRow("dimshuffle_permute", lambda a: a.dimshuffle(2, 0, 1), lambda a: a.transpose(2, 0, 1), normal((2, 3, 4))),
    OpRow("dimshuffle_expand", lambda a: a.dimshuffle("x", 0, "x", 1), lambda a: a[None, :, None, :],
          normal((3, 4))),
    OpRow("dimshuffle_drop", lambda a: T.dimshuffle(a, 2, 1), lambda a: a[0].T, normal((1, 3, 4))),
    OpRow("transpose", T.transpose, np.transpose, normal((3, 4))),
    OpRow("transpose_axes", lambda a: a.transpose(1, 2, 0), lambda a: a.transpose(1, 2, 0), normal((2, 3, 4))),
    OpRow("transpose_T", lambda a: a.T, lambda a: a.T, normal((2, 3, 4))),
    OpRow("concatenate_axis0", lambda a, b: T.concatenate([a, b]), lambda a, b: np.concatenate([a, b]),
          normal((2, 3), (4, 3))),
    OpRow("concatenate_axis_neg1", lambda a, b: T.concatenate([a, b, a], axis=-1),
          lambda a, b: np.concatenate([a, b, a], axis=-1), normal((2, 3), (2, 1))),
    OpRow("concatenate_none_dims", lambda a, b: T.concatenate([dynamic(a), b], axis=1),
          lambda a, b: np.concatenate([a, b], axis=1), normal((2, 3), (2, 2))),
    OpRow("stack_axis0", lambda a, b: T.stack([a, b]), lambda a, b: np.stack([a, b]), normal((2, 3), (2, 3))),
    OpRow("stack_axis1", lambda a, b: T.stack([a, b], axis=1), lambda a, b: np.stack([a, b], axis=1),
          normal((2, 3), (2, 3))),
    OpRow("shape_padleft", lambda a: T.shape_padleft(a) * 2, lambda a: a[None] * 2, normal((3,))),
    OpRow("fill_zeros_like", lambda a: T.zeros_like(a) + T.ones_like(a) * a, lambda a: a.copy(), normal((3, 2))),
    OpRow("zeros_of_shape", lambda a: T.zeros(a.shape) + a, lambda a: a.copy(), normal((3, 2))),
    OpRow("alloc_symbolic", lambda a: T.alloc(a, 2, dynamic(a).shape[0]) * 1.5,
          lambda a: np.broadcast_to(a, (2, a.shape[0])) * 1.5, normal((3,))),
    OpRow("arange_times", lambda a: a * T.cast(T.arange(a.shape[0]), a.dtype), lambda a: a * np.arange(len(a)),
          normal((5,))),
    OpRow("arange_symbolic", lambda n: T.arange(1, n, 2), lambda n: np.arange(1, n, 2),
          lambda rng, dtype: [np.asarray(9, "int64")], grad=False, dtypes=("int64",)),
    OpRow("arange_float", lambda a: a + T.arange(0.0, 1.0, 0.25, dtype=a.dtype),
          lambda a: a + np.arange(0.0, 1.0, 0.25, dtype=a.dtype), normal((4,))),
]

def set_ref(select):
    def reference(a, b):
        out = a.copy()
        select(out)[...] = b
        return out
    return reference


def inc_ref(select):
    def reference(a, b):
        out = a.copy()
        select(out)[...] += b
        return out
    return reference


def _set_rows(a, b, idx):
    out = a.copy()
    for row, i in enumerate(idx):
        out[i] = b[row]
    return out


def _inc_rows(a, b, idx):
    out = a.copy()
    for row, i in enumerate(idx):
        out[i] += b[row]
    return out


def _inc_pairs(p, v, y):
    out = p.copy()
    for row, col in enumerate(y):
        out[row, col] += v[row]
    return out


# -- indexing -------------------------------------------------------------------------------------

INDEXING = [
    OpRow("slice", lambda a: a[1:3], lambda a: a[1:3], normal((4, 3))),
    OpRow("slice_negative", lambda a: a[-3:-1, -2:], lambda a: a[-3:-1, -2:], normal((4, 3))),
    OpRow("slice_step", lambda a: a[::2, 1::2], lambda a: a[::2, 1::2], normal((5, 4))),
    OpRow("slice_negative_step", lambda a: a[::-1, -1::-2], lambda a: a[::-1, -1::-2], normal((3, 5))),
    OpRow("index_int", lambda a: a[1], lambda a: a[1], normal((3, 4))),
    OpRow("index_negative_int", lambda a: a[:, -1], lambda a: a[:, -1], normal((3, 4))),
    OpRow("index_ellipsis", lambda a: a[..., 0], lambda a: a[..., 0], normal((2, 3, 4))),
    OpRow("index_newaxis", lambda a: a[None, 1:, None, 0], lambda a: a[None, 1:, None, 0], normal((3, 4))),
    OpRow("index_newaxis_ellipsis", lambda a: a[..., None], lambda a: a[..., None], normal((2, 3))),
    OpRow("index_symbolic", lambda a, i: a[i:i + 2, i], lambda a, i: a[i:i + 2, i], with_ints(normal((4, 3)), 1)),
    OpRow("slice_none_dims", lambda a: dynamic(a)[1:, :-1], lambda a: a[1:, :-1], normal((3, 4))),
    OpRow("advanced_rows", lambda a, idx: a[idx], lambda a, idx: a[idx], with_ints(normal((4, 3)), [2, 0, 2, 3])),
    OpRow("advanced_nll_pattern", lambda p, y: p[T.arange(y.shape[0]), y],
          lambda p, y: p[np.arange(len(y)), y], with_ints(positive((3, 4)), [0, 3, 3])),
    OpRow("advanced_nll_mean_log", lambda p, y: -T.mean(T.log(p)[T.arange(y.shape[0]), y]),
          lambda p, y: -np.mean(np.log(p)[np.arange(len(y)), y]), with_ints(positive((3, 4)), [1, 0, 2])),
    OpRow("advanced_negative_index", lambda a, idx: a[idx], lambda a, idx: a[idx], with_ints(normal((4,)), [-1, 0])),
    OpRow("set_subtensor", lambda a, b: T.set_subtensor(a[1:3], b), set_ref(lambda a: a[1:3]),
          normal((4, 3), (2, 3))),
    OpRow("set_subtensor_broadcast", lambda a, b: T.set_subtensor(a[:, ::2], b), set_ref(lambda a: a[:, ::2]),
          normal((3, 4), (2,))),
    OpRow("set_subtensor_scalar", lambda a: T.set_subtensor(a[0, 1], 5.0),
          lambda a: np.where(np.arange(a.size).reshape(a.shape) == 1, 5.0, a), normal((2, 3))),
    OpRow("inc_subtensor", lambda a, b: T.inc_subtensor(a[:, 1], b), inc_ref(lambda a: a[:, 1]),
          normal((3, 4), (3,))),
    OpRow("inc_subtensor_negative_step", lambda a, b: T.inc_subtensor(a[::-2], b), inc_ref(lambda a: a[::-2]),
          normal((5, 2), (3, 2))),
    OpRow("set_subtensor_advanced", lambda a, b, idx: T.set_subtensor(a[idx], b),
          lambda a, b, idx: _set_rows(a, b, idx), with_ints(normal((4, 3), (2, 3)), [3, 1])),
    OpRow("inc_subtensor_advanced_repeats", lambda a, b, idx: T.inc_subtensor(a[idx], b),
          lambda a, b, idx: _inc_rows(a, b, idx), with_ints(normal((4, 3), (3, 3)), [2, 0, 2])),
    OpRow("inc_subtensor_nll_pattern", lambda p, v, y: T.inc_subtensor(p[T.arange(3), y], v),
          lambda p, v, y: _inc_pairs(p, v, y), with_ints(normal((3, 4), (3,)), [1, 1, 3])),
]


ROWS = ELEMWISE + INTEGER + REDUCTIONS + BLAS + SHAPES + INDEXING
