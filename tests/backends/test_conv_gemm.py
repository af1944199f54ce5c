"""The GEMM formulation of conv2d's input gradient (engine/lowering/nn.py ``grad_input_by_gemm``:
a transposing copy of gy, the shared 2-d GEMM, a col2im gather) against the numpy oracle:
paddings, flipped filters, static and run-time kernel sizes, odd widths, empty batches."""

import numpy as np
import pytest

pytest.importorskip("llvmlite")

import engine  # noqa: E402
import frontends.nn as nn  # noqa: E402
import frontends.tensor as T  # noqa: E402
from backends.numpy import conv as ref  # noqa: E402
from engine.lowering import nn as L  # noqa: E402

rng = np.random.default_rng(1)


@pytest.fixture(autouse=True)
def _fast(monkeypatch, tmp_path):
    monkeypatch.setenv("KILN_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("KILN_LLVM_OPT", "0")


def test_formulation_rule():
    assert L.grad_input_by_gemm((1, 1), (1, 1), 1, 20, 50)          # LeNet layer 2
    assert L.grad_input_by_gemm((1, 1), (1, 1), 1, 20, None)        # filters not static
    assert not L.grad_input_by_gemm((1, 1), (1, 1), 1, 3, 64)       # few input channels
    assert not L.grad_input_by_gemm((1, 1), (1, 1), 1, 20, 4)       # few filters
    assert not L.grad_input_by_gemm((2, 2), (1, 1), 1, 20, 50)      # strided
    assert not L.grad_input_by_gemm((1, 1), (1, 1), 2, 20, 50)      # grouped
    assert not L.grad_input_by_gemm((1, 1), (1, 1), 1, None, 50)    # channels not static


@pytest.mark.parametrize("padding,flip,static,shape", [
    ((0, 0), False, True, (6, 20, 12, 12)),
    ((0, 0), True, False, (3, 9, 11, 13)),
    ((1, 2), False, False, (2, 8, 10, 7)),
    ("same", True, True, (4, 16, 9, 9)),
    ("full", False, True, (2, 8, 6, 5)),
    ((0, 0), False, True, (0, 8, 9, 9)),
    ((1, 1), False, True, (70, 8, 7, 7)),      # 14 chunks of 5 images, the last 2 empty
])
def test_grad_input_by_gemm_matches_oracle(padding, flip, static, shape):
    n, c, h, w = shape
    f, kh, kw = 10, 3, 5
    wv = rng.standard_normal((f, c, kh, kw)).astype("float32")
    pad = ref.normalize_padding(padding, (kh, kw), (1, 1)) if isinstance(padding, str) else padding
    oh, ow = h + 2 * pad[0] - kh + 1, w + 2 * pad[1] - kw + 1
    gy = rng.standard_normal((n, f, oh, ow)).astype("float32")
    G = T.tensor4("gy")
    W = engine.shared(wv, name="W") if static else T.tensor4("w")
    out = nn.conv2d_grad_input(G, W, (n, c, h, w), padding=padding, filter_flip=flip)
    fn = engine.function([G] if static else [G, W], out, backend="llvm")
    assert any(k.name.startswith("conv2d_col2im") for k in fn.kernels)
    got = fn(gy) if static else fn(gy, wv)
    want = ref.conv2d_grad_input(gy.astype("f8"), wv.astype("f8"), (n, c, h, w), padding=pad,
                                 filter_flip=flip)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-4 * max(1.0, float(np.abs(want).max(initial=0))))


def test_small_channel_counts_stay_direct():
    G, W = T.tensor4("gy"), T.tensor4("w")
    fn = engine.function([G, W], nn.conv2d_grad_input(G, W, (2, 3, 9, 9)), backend="llvm")
    assert not any(k.name.startswith(("conv2d_col2im", "gemm")) for k in fn.kernels)


def test_grad_weight_rule():
    assert L.grad_weight_by_gemm(1, (50, 20, 5, 5))        # LeNet layer 2: 500 rows
    assert L.grad_weight_by_gemm(1, (64, 3, 5, 5))         # 75 rows
    assert not L.grad_weight_by_gemm(1, (20, 1, 5, 5))     # LeNet layer 1: 25 rows
    assert not L.grad_weight_by_gemm(2, (50, 20, 5, 5))    # grouped
    assert not L.grad_weight_by_gemm(1, (4, 20, 5, 5))     # few filters
    assert not L.grad_weight_by_gemm(1, (50, None, 5, 5))  # channels not static


@pytest.mark.parametrize("padding,flip,stride,dilation,shape,f", [
    ((0, 0), False, (1, 1), (1, 1), (6, 20, 12, 12), 50),    # LeNet layer 2, small batch
    ((0, 0), True, (1, 1), (1, 1), (3, 9, 11, 13), 10),
    ((1, 2), False, (2, 1), (1, 1), (2, 8, 10, 7), 17),
    ("same", True, (1, 1), (2, 2), (4, 16, 9, 9), 33),
    ((0, 0), False, (1, 1), (1, 1), (0, 8, 9, 9), 8),       # empty batch: gw = 0
    ((0, 0), False, (1, 3), (1, 1), (9, 12, 7, 20), 70),     # several column panels
    ((0, 0), True, (1, 1), (1, 1), (3, 8, 40, 37), 64),      # row blocks, a partial last
    ((0, 0), False, (1, 1), (1, 1), (1, 8, 30, 30), 33),     # one image: one partial sum
])
def test_grad_weight_by_gemm_matches_oracle(padding, flip, stride, dilation, shape, f):
    n, c, h, w = shape
    kh, kw = 3, 3
    xv = rng.standard_normal(shape).astype("float32")
    pad = ref.normalize_padding(padding, (kh, kw), dilation) if isinstance(padding, str) else padding
    oh = (h + 2 * pad[0] - dilation[0] * (kh - 1) - 1) // stride[0] + 1
    ow = (w + 2 * pad[1] - dilation[1] * (kw - 1) - 1) // stride[1] + 1
    gy = rng.standard_normal((n, f, oh, ow)).astype("float32")
    X, G = T.tensor4("x"), T.tensor4("gy")
    out = nn.conv2d_grad_weight(X, G, (f, c, kh, kw), padding=padding, filter_flip=flip,
                                stride=stride, dilation=dilation)
    fn = engine.function([X, G], out, backend="llvm")
    assert any(k.name.startswith("conv2d_bwd_weight_gemm") for k in fn.kernels)
    got = fn(xv, gy)
    want = ref.conv2d_grad_weight(xv.astype("f8"), gy.astype("f8"), (f, c, kh, kw), stride=stride,
                                  padding=pad, dilation=dilation, filter_flip=flip)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-4 * max(1.0, float(np.abs(want).max(initial=0))))


def test_few_rows_stay_direct():
    X, G = T.tensor4("x"), T.tensor4("gy")
    fn = engine.function([X, G], nn.conv2d_grad_weight(X, G, (20, 1, 5, 5)), backend="llvm")
    assert not any(k.name.startswith("conv2d_bwd_weight_gemm") for k in fn.kernels)


def test_grad_weight_by_gemm_reads_strided_gy():
    """gy's positions are read as one run per (image, filter): a strided gy is copied first."""
    xv = rng.standard_normal((4, 8, 12, 12)).astype("float32")
    gy = rng.standard_normal((4, 32, 10, 20)).astype("float32")[..., ::2]
    X, G = T.tensor4("x"), T.tensor4("gy")
    fn = engine.function([X, G], nn.conv2d_grad_weight(X, G, (32, 8, 3, 3)), backend="llvm")
    assert any(k.name.startswith("conv2d_bwd_weight_gemm") for k in fn.kernels)
    want = ref.conv2d_grad_weight(xv.astype("f8"), gy.astype("f8"), (32, 8, 3, 3))
    np.testing.assert_allclose(fn(xv, gy), want, rtol=0, atol=1e-4 * float(np.abs(want).max()))
