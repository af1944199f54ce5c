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
