"""Max pooling on the LLVM backend against the numpy oracle, aimed at the separable kernels
(engine/lowering/nn_pool.py): a column stride > 1 takes the max down the window's rows first
(vectorized), then across the strided columns; its gradient picks the first maximum in
row-major order from per-column maxima. Covered: overlapping and tiled windows, padding, ceil
mode, rows narrower than a vector, rows wider than the stack row (the direct fallback), ties
(integer-valued inputs), NaNs, a fused activation, float64. Tiled windows (stride == ws) vectorize
the gradient across a row's windows: 8 lanes for 8-15 windows, 16 from 16 on."""

import numpy as np
import pytest

pytest.importorskip("llvmlite")

import engine  # noqa: E402
import frontends.nn as nn  # noqa: E402
import frontends.tensor as T  # noqa: E402
from engine.lowering.nn_pool import SEPARABLE_MAX_WIDTH  # noqa: E402

CASES = [  # (ws, stride, padding, ignore_border)
    ((3, 3), (2, 2), (0, 0), True),
    ((2, 2), (2, 2), (0, 0), True),
    ((3, 3), (2, 2), (1, 1), True),
    ((3, 2), (2, 3), (1, 0), True),
    ((3, 3), (2, 2), (0, 0), False),
    ((2, 3), (1, 2), (0, 1), True),
    ((4, 4), (3, 3), (2, 2), False),
    ((3, 3), (3, 3), (0, 0), True),     # tiled: windows vectorized across the row (8 or 16)
    ((2, 4), (2, 4), (0, 0), True),
]
SHAPES = [(2, 3, 28, 28), (1, 2, 9, 7), (1, 1, 5, SEPARABLE_MAX_WIDTH + 11)]


def _inputs(shape, kind, dtype, seed=0):
    r = np.random.default_rng(seed)
    if kind == "ties":  # few distinct values: many windows with several maxima
        return r.integers(-2, 3, shape).astype(dtype)
    x = r.standard_normal(shape).astype(dtype)
    if kind == "nan":
        x.reshape(-1)[r.choice(x.size, max(1, x.size // 15), replace=False)] = np.nan
    return x


def _pair(build, *args):
    return [engine.function(*build(), backend=b)(*args) for b in ("numpy", "llvm")]


@pytest.mark.parametrize("kind", ["normal", "ties", "nan"])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("ws,stride,padding,ignore_border", CASES)
def test_max_pool_forward_and_gradient_match_the_oracle(ws, stride, padding, ignore_border, shape, kind):
    x = _inputs(shape, kind, "float32")

    def build():
        X, G = T.tensor4("x"), T.tensor4("g")
        y = nn.pool2d(X, ws=ws, stride=stride, padding=padding, mode="max", ignore_border=ignore_border)
        return [X, G], [y, engine.grad(T.sum(y * G), X)]
    X = T.tensor4("x")
    ref_y = engine.function([X], nn.pool2d(X, ws=ws, stride=stride, padding=padding, mode="max",
                                           ignore_border=ignore_border), backend="numpy")(x)
    g = np.random.default_rng(1).standard_normal(ref_y.shape).astype("float32")
    (y0, gx0), (y1, gx1) = _pair(build, x, g)
    np.testing.assert_array_equal(y1, y0)                    # max is exact: bit for bit, NaNs too
    np.testing.assert_allclose(gx1, gx0, rtol=1e-6, atol=1e-6)
    if kind != "normal":   # the gradient lands on the same cells (the first maximum)
        np.testing.assert_array_equal(gx1 != 0, gx0 != 0)


@pytest.mark.parametrize("ws,stride", [((3, 3), (2, 2)), ((2, 2), (2, 2))])
def test_fused_activation_and_float64(ws, stride):
    x = _inputs((2, 2, 17, 23), "ties", "float64") * 0.7

    def build():
        X = T.tensor4("x", dtype="float64")
        y = nn.pool2d(T.tanh(X), ws=ws, stride=stride, mode="max")
        return [X], [y, engine.grad(T.sum(y * y), X)]
    (y0, gx0), (y1, gx1) = _pair(build, x)
    np.testing.assert_allclose(y1, y0, rtol=1e-14)
    np.testing.assert_allclose(gx1, gx0, rtol=1e-12, atol=1e-14)
