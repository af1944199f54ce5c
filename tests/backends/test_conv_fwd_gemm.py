"""The implicit-GEMM forward conv (engine/lowering/conv_fwd_gemm.py, picked by
engine/lowering/nn.py ``fwd_by_gemm``) against the numpy oracle: both tilings (by output
columns and by positions, static and picked per launch), strides, dilations, paddings, flipped
filters, odd sizes, float64, batch 1 and empty batches, bias + epilogue; and the rules."""

import numpy as np
import pytest

pytest.importorskip("llvmlite")

import engine  # noqa: E402
import frontends.nn as nn  # noqa: E402
import frontends.tensor as T  # noqa: E402
from backends.numpy import conv as ref  # noqa: E402
from engine.lowering import conv_fwd_gemm as FG  # noqa: E402
from engine.lowering import nn as L  # noqa: E402
from tests.backends.test_llvm_nn_kernels import execute  # noqa: E402

rng = np.random.default_rng(7)


@pytest.fixture(autouse=True)
def _fast(monkeypatch, tmp_path):
    monkeypatch.setenv("KILN_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("KILN_LLVM_OPT", "0")


def test_formulation_rule():
    assert L.fwd_by_gemm(1)
    assert not L.fwd_by_gemm(2)                      # grouped: direct
    with L.direct_formulation():
        assert not L.fwd_by_gemm(1)


def test_tiling_rule():
    tiles = FG.FwdTiles(lanes=16, col_mr=8, col_nv=3, pos_mr=6, pos_nv=4)
    assert FG.by_columns(28, 64, 75, tiles)          # the benchmark's 3-channel 5x5 conv
    assert not FG.by_columns(8, 50, 500, tiles)      # LeNet layer 2: rows of half a vector
    assert FG.by_columns(24, 20, 25, tiles)          # LeNet layer 1
    assert not FG.by_columns(28, 64, 500, tiles)     # deep: the columns' waste outweighs the scatter
    assert FG.by_columns(None, 64, 75, tiles) is None
    assert FG.by_columns(12, None, None, tiles) is False


def _oracle(xv, wv, **kw):
    return ref.conv2d(xv.astype("f8"), wv.astype("f8"), **kw)


def _check(got, want, dtype):
    tol = (2e-5 if dtype == "float32" else 1e-12) * max(1.0, float(np.abs(want).max(initial=0)))
    np.testing.assert_allclose(got, want, rtol=0, atol=tol * 10)


CASES = [  # x shape, w shape, conv props
    ((3, 3, 20, 21), (10, 3, 5, 5), {}),                                   # by columns, 2 slots a row
    ((2, 4, 9, 11), (7, 4, 3, 3), dict(padding=(1, 2))),                   # by positions (narrow)
    ((1, 5, 19, 23), (17, 5, 3, 2), dict(stride=(2, 1), filter_flip=True)),
    ((2, 3, 13, 40), (9, 3, 3, 3), dict(stride=(2, 2), dilation=(1, 2))),  # strided width: positions
    ((2, 2, 30, 30), (33, 2, 3, 3), dict(dilation=(2, 2), padding="same")),
    ((3, 6, 7, 5), (70, 6, 3, 3), dict(padding="full", filter_flip=True)),  # several filter panels
    ((1, 1, 4, 3), (1, 1, 2, 2), {}),                                       # one filter, tiny image
    ((0, 3, 9, 20), (8, 3, 3, 3), {}),                                      # empty batch
]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("static", [False, True])
@pytest.mark.parametrize("case", CASES, ids=[f"c{i}" for i in range(len(CASES))])
def test_matches_oracle(case, static, dtype):
    xs, ws, kw = case
    xv, wv = rng.standard_normal(xs).astype(dtype), rng.standard_normal(ws).astype(dtype)
    X = T.tensor4("x", dtype=dtype, shape=xs if static else None)
    W = engine.shared(wv, name="W") if static else T.tensor4("w", dtype=dtype)
    fn = engine.function([X] if static else [X, W], nn.conv2d(X, W, **kw), backend="llvm")
    assert any(k.name.startswith("conv2d_fwd_gemm") for k in fn.kernels)
    got = fn(xv) if static else fn(xv, wv)
    _check(got, _oracle(xv, wv, **kw), dtype)


@pytest.mark.parametrize("columns", [True, False])
@pytest.mark.parametrize("bias_shape", [(1, 12, 1, 1), (12, 1, 1), (1, 1, 1, 18), (2, 12, 6, 18), ()])
def test_bias_and_epilogue(columns, bias_shape):
    """FusedConv's plan: bias broadcast like numpy (constant along the width, or not) and the
    activations applied on the store, for both tilings."""
    xv, wv = rng.standard_normal((2, 3, 8, 20)), rng.standard_normal((12, 3, 3, 3))
    b = rng.standard_normal(bias_shape)
    low = L.conv2d_plan("float64", ksize=(3, 3), nfilters=12, channels=3, width=18 if columns else None,
                        bias=(len(bias_shape), bias_shape), epilogue=("tanh",))
    names = [k.name for k in low.kernels]
    assert names[-1].startswith("conv2d_fwd_gemm") and names[-1].endswith("_bias_tanh_float64")
    if not columns:  # built with both tilings: the launch picks by positions for a deep conv
        low = L.conv2d_plan("float64", ksize=(3, 3), nfilters=12, channels=3, width=None,
                            bias=(len(bias_shape), bias_shape), epilogue=("tanh",))
    (got,) = execute(low, [xv, wv, b])
    _check(got, np.tanh(_oracle(xv, wv) + b), "float64")


@pytest.mark.parametrize("columns", [True, False])
def test_each_tiling_alone(columns):
    """A kernel built with one tiling (as for static shapes), run directly."""
    from backends.llvm.runtime import compile_kernels
    xv = rng.standard_normal((2, 5, 10, 19)).astype("float32")
    wv = rng.standard_normal((11, 5, 3, 4)).astype("float32")
    want = _oracle(xv, wv)
    tiles = FG.fwd_tiles("float32", 11)
    pk, gk = FG.pack_filters_kernel("float32"), FG.fwd_gemm_kernel("float32", tiles=tiles, columns=columns)
    prog = compile_kernels([pk, gk], opt=0)
    wq = np.full((5 * 3 * 4, FG.padded_filters(11, tiles)), np.nan, "float32")
    out = np.full(want.shape, np.nan, "float32")
    prog[pk.name](wv, wq)
    prog[gk.name](xv, wq, out, 3, 4, 2)
    _check(out, want, "float32")


def test_grouped_stays_direct():
    X, W = T.tensor4("x"), T.tensor4("w")
    fn = engine.function([X, W], nn.conv2d(X, W, groups=2), backend="llvm")
    assert not any(k.name.startswith("conv2d_fwd_gemm") for k in fn.kernels)
