"""conv2d's weight gradient for few rows as dot products along output rows
(engine/lowering/conv_gw_rows.py) against the numpy oracle: LeNet's first layer, flipped
filters, paddings, filter counts not a multiple of the tile's, rows with and without a masked
last vector, empty and one-image batches."""

import numpy as np
import pytest

pytest.importorskip("llvmlite")

import engine  # noqa: E402
import frontends.nn as nn  # noqa: E402
import frontends.tensor as T  # noqa: E402
from backends.numpy import conv as ref  # noqa: E402
from engine.lowering import conv_gw_rows as RW  # noqa: E402

rng = np.random.default_rng(2)


@pytest.fixture(autouse=True)
def _fast(monkeypatch, tmp_path):
    monkeypatch.setenv("KILN_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("KILN_LLVM_OPT", "0")


def test_rule():
    assert RW.rows_kernel_applies(1, (1, 1), (1, 1), (20, 1, 5, 5), 24, 16)       # LeNet layer 1
    assert not RW.rows_kernel_applies(1, (1, 1), (1, 1), (20, 1, 5, 5), 12, 16)   # row < a vector
    assert not RW.rows_kernel_applies(1, (1, 1), (1, 1), (20, 1, 5, 5), None, 16)  # width not static
    assert not RW.rows_kernel_applies(1, (2, 2), (1, 1), (20, 1, 5, 5), 24, 16)   # strided
    assert not RW.rows_kernel_applies(2, (1, 1), (1, 1), (20, 2, 5, 5), 24, 16)   # grouped
    assert not RW.rows_kernel_applies(1, (1, 1), (1, 1), (20, 1, 7, 7), 24, 16)   # KW > MAX_KW


@pytest.mark.parametrize("shape,f,k,padding,flip", [
    ((6, 1, 28, 28), 20, (5, 5), (0, 0), False),       # LeNet layer 1, small batch
    ((3, 2, 20, 21), 7, (3, 5), (0, 0), True),         # 7 filters: a clamped tile; 17 columns
    ((2, 1, 18, 18), 5, (3, 3), (1, 1), False),        # padded: 18 columns, a masked last vector
    ((4, 1, 19, 19), 4, (4, 4), (0, 0), False),        # exactly one vector per row
    ((0, 1, 28, 28), 20, (5, 5), (0, 0), False),       # empty batch: gw = 0
    ((1, 3, 40, 40), 6, (5, 3), "same", True),         # one image
])
def test_matches_oracle(shape, f, k, padding, flip):
    n, c, h, w = shape
    pad = ref.normalize_padding(padding, k, (1, 1)) if isinstance(padding, str) else padding
    oh, ow = h + 2 * pad[0] - k[0] + 1, w + 2 * pad[1] - k[1] + 1
    xv = rng.standard_normal(shape).astype("float32")
    gy = rng.standard_normal((n, f, oh, ow)).astype("float32")
    X, G = T.tensor("float32", (None, c, h, w), "x"), T.tensor("float32", (None, f, oh, ow), "gy")
    fn = engine.function([X, G], nn.conv2d_grad_weight(X, G, (f, c) + k, padding=padding, filter_flip=flip),
                         backend="llvm")
    assert any(kk.name.startswith("conv2d_bwd_weight_rows") for kk in fn.kernels)
    want = ref.conv2d_grad_weight(xv.astype("f8"), gy.astype("f8"), (f, c) + k, padding=pad, filter_flip=flip)
    np.testing.assert_allclose(fn(xv, gy), want, rtol=0, atol=1e-4 * max(1.0, float(np.abs(want).max(initial=0))))
