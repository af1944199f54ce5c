"""Tests of the numpy conv2d / locally-connected reference (backends/numpy/conv.py).

Three independent checks: a naive nested-loop definition written here, the adjoint
identity <A x, y> == <x, A^T y> for every gradient, and PyTorch where installed.
"""

from __future__ import annotations

import numpy as np
import pytest

from backends.numpy.conv import (
    conv2d,
    conv2d_grad_input,
    conv2d_grad_weight,
    conv2d_output_shape,
    locally_connected2d,
    locally_connected2d_grad_input,
    locally_connected2d_grad_weight,
    normalize_padding,
)

# (x_shape, w_shape, stride, padding, dilation, groups); padding may be a mode string.
CONV_CASES = [
    ((2, 3, 5, 6), (4, 3, 3, 3), (1, 1), (0, 0), (1, 1), 1),
    (
        (2, 3, 7, 6),
        (2, 3, 3, 2),
        (2, 1),
        (0, 0),
        (1, 1),
        1,
    ),  # stride leaves last row uncovered
    ((1, 2, 6, 7), (3, 2, 3, 3), (2, 3), (1, 2), (1, 1), 1),
    ((2, 4, 7, 7), (4, 2, 3, 3), (1, 1), "same", (1, 1), 2),
    ((1, 2, 5, 4), (2, 2, 2, 3), (1, 1), "full", (1, 1), 1),
    ((2, 2, 8, 9), (3, 2, 3, 2), (1, 2), "valid", (2, 3), 1),
    ((1, 3, 9, 8), (3, 1, 3, 3), (1, 1), "same", (2, 1), 3),  # depthwise + dilation
    ((1, 6, 5, 5), (4, 3, 1, 1), (1, 1), (0, 0), (1, 1), 2),  # 1x1, grouped
    ((1, 2, 4, 4), (2, 2, 4, 4), (1, 1), "full", (1, 1), 1),  # kernel as big as input
    ((0, 2, 5, 5), (2, 2, 3, 3), (1, 1), (1, 1), (1, 1), 1),  # empty batch
]

LC_CASES = [  # (x_shape, (F, KH, KW), stride)
    ((2, 3, 5, 6), (4, 3, 3), (1, 1)),
    ((1, 2, 7, 6), (3, 2, 3), (2, 2)),  # last row uncovered
    ((2, 1, 6, 5), (2, 1, 2), (3, 1)),
]


def _resolve(case):
    x_shape, w_shape, stride, padding, dilation, groups = case
    if isinstance(padding, str):
        padding = normalize_padding(padding, w_shape[2:], dilation, stride)
    return x_shape, w_shape, stride, padding, dilation, groups


def _rand(rng, shape, dtype):
    return rng.standard_normal(shape).astype(dtype)


# ----------------------------------------------------------------------------- naive references


def naive_conv2d(x, w, stride, padding, dilation, groups, filter_flip):
    """Direct definition: explicit bounds checks instead of padding the input."""
    n_, _, h_, w_ = x.shape
    f_, cg, kh, kw = w.shape
    (sh, sw), (ph, pw), (dh, dw) = stride, padding, dilation
    oh = (h_ + 2 * ph - dh * (kh - 1) - 1) // sh + 1
    ow = (w_ + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    fg = f_ // groups
    out = np.zeros((n_, f_, oh, ow), dtype=np.float64)
    for n in range(n_):
        for f in range(f_):
            g = f // fg
            for i in range(oh):
                for j in range(ow):
                    acc = 0.0
                    for c in range(cg):
                        for u in range(kh):
                            for v in range(kw):
                                r = i * sh - ph + u * dh
                                s = j * sw - pw + v * dw
                                if 0 <= r < h_ and 0 <= s < w_:
                                    uu, vv = (
                                        (kh - 1 - u, kw - 1 - v)
                                        if filter_flip
                                        else (u, v)
                                    )
                                    acc += float(x[n, g * cg + c, r, s]) * float(
                                        w[f, c, uu, vv]
                                    )
                    out[n, f, i, j] = acc
    return out


def naive_lc(x, w, stride):
    n_ = x.shape[0]
    oh, ow, f_, _, kh, kw = w.shape
    sh, sw = stride
    out = np.zeros((n_, f_, oh, ow))
    for n in range(n_):
        for f in range(f_):
            for i in range(oh):
                for j in range(ow):
                    patch = x[n, :, i * sh : i * sh + kh, j * sw : j * sw + kw].astype(
                        np.float64
                    )
                    out[n, f, i, j] = np.sum(patch * w[i, j, f])
    return out


def _lc_w_shape(x_shape, fk, stride):
    f, kh, kw = fk
    oh = (x_shape[2] - kh) // stride[0] + 1
    ow = (x_shape[3] - kw) // stride[1] + 1
    return (oh, ow, f, x_shape[1], kh, kw)


# ----------------------------------------------------------------------------- forward


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("filter_flip", [False, True])
@pytest.mark.parametrize("case", CONV_CASES)
def test_conv2d_matches_naive(case, filter_flip, dtype):
    x_shape, w_shape, stride, padding, dilation, groups = _resolve(case)
    rng = np.random.default_rng(0)
    x, w = _rand(rng, x_shape, dtype), _rand(rng, w_shape, dtype)
    out = conv2d(x, w, stride, padding, dilation, groups, filter_flip)
    expect = naive_conv2d(x, w, stride, padding, dilation, groups, filter_flip)
    assert out.shape == conv2d_output_shape(
        x_shape, w_shape, stride, padding, dilation, groups
    )
    assert out.dtype == dtype and out.flags.c_contiguous
    tol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(out, expect, rtol=tol, atol=tol)


def test_conv2d_output_is_fresh_and_accepts_views():
    rng = np.random.default_rng(1)
    base = rng.standard_normal((4, 4, 2, 3))
    x = base.transpose(2, 3, 0, 1)  # non-contiguous (2, 3, 4, 4)
    w = np.ones((3, 3, 1, 1))
    out = conv2d(x, w)
    assert not np.shares_memory(out, x) and out.flags.c_contiguous
    np.testing.assert_allclose(out, np.broadcast_to(x.sum(1, keepdims=True), out.shape))


def test_filter_flip_is_flipped_kernel():
    rng = np.random.default_rng(2)
    x, w = rng.standard_normal((2, 2, 6, 6)), rng.standard_normal((3, 2, 3, 2))
    np.testing.assert_array_equal(
        conv2d(x, w, (1, 2), (1, 1), (1, 1), 1, True),
        conv2d(x, w[..., ::-1, ::-1], (1, 2), (1, 1)),
    )


@pytest.mark.parametrize("case", LC_CASES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_locally_connected_matches_naive(case, dtype):
    x_shape, fk, stride = case
    w_shape = _lc_w_shape(x_shape, fk, stride)
    rng = np.random.default_rng(3)
    x, w = _rand(rng, x_shape, dtype), _rand(rng, w_shape, dtype)
    out = locally_connected2d(x, w, stride)
    assert out.dtype == dtype and out.flags.c_contiguous
    tol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(out, naive_lc(x, w, stride), rtol=tol, atol=tol)


def test_locally_connected_with_tied_weights_is_conv():
    rng = np.random.default_rng(4)
    x, wt = rng.standard_normal((2, 3, 7, 6)), rng.standard_normal((4, 3, 3, 2))
    w = np.broadcast_to(wt, (3, 3, *wt.shape))  # stride 2 -> 3x3 positions
    np.testing.assert_allclose(
        locally_connected2d(x, w, (2, 2)), conv2d(x, wt, (2, 2)), rtol=1e-12
    )


# ----------------------------------------------------------------------------- adjoints


@pytest.mark.parametrize("filter_flip", [False, True])
@pytest.mark.parametrize("case", CONV_CASES)
def test_conv2d_adjoints(case, filter_flip):
    x_shape, w_shape, stride, padding, dilation, groups = _resolve(case)
    args = (stride, padding, dilation, groups, filter_flip)
    rng = np.random.default_rng(5)
    x, w = rng.standard_normal(x_shape), rng.standard_normal(w_shape)
    y = conv2d(x, w, *args)
    gy = rng.standard_normal(y.shape)
    gx = conv2d_grad_input(gy, w, x_shape, *args)
    gw = conv2d_grad_weight(x, gy, w_shape, *args)
    assert gx.shape == x_shape and gw.shape == w_shape
    lhs = np.vdot(y, gy)
    np.testing.assert_allclose(np.vdot(x, gx), lhs, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(np.vdot(w, gw), lhs, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("case", LC_CASES)
def test_locally_connected_adjoints(case):
    x_shape, fk, stride = case
    w_shape = _lc_w_shape(x_shape, fk, stride)
    rng = np.random.default_rng(6)
    x, w = rng.standard_normal(x_shape), rng.standard_normal(w_shape)
    y = locally_connected2d(x, w, stride)
    gy = rng.standard_normal(y.shape)
    gx = locally_connected2d_grad_input(gy, w, x_shape, stride)
    gw = locally_connected2d_grad_weight(x, gy, w_shape, stride)
    assert gx.shape == x_shape and gw.shape == w_shape
    lhs = np.vdot(y, gy)
    np.testing.assert_allclose(np.vdot(x, gx), lhs, rtol=1e-12)
    np.testing.assert_allclose(np.vdot(w, gw), lhs, rtol=1e-12)


def test_uncovered_rows_get_zero_grad():
    rng = np.random.default_rng(7)
    w = rng.standard_normal((2, 1, 3, 3))
    gy = rng.standard_normal((1, 2, 2, 2))
    gx = conv2d_grad_input(gy, w, (1, 1, 6, 6), (2, 2), (0, 0), (1, 1), 1, False)
    assert gx.shape == (1, 1, 6, 6)
    assert not gx[..., 5, :].any() and not gx[..., :, 5].any()
    assert gx[..., :5, :5].any()
    gxl = locally_connected2d_grad_input(
        gy, rng.standard_normal((2, 2, 2, 1, 3, 3)), (1, 1, 6, 6), (2, 2)
    )
    assert not gxl[..., 5, :].any() and not gxl[..., :, 5].any()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_grads_keep_dtype(dtype):
    rng = np.random.default_rng(8)
    x, w = _rand(rng, (1, 2, 5, 5), dtype), _rand(rng, (3, 2, 3, 3), dtype)
    gy = _rand(rng, (1, 3, 3, 3), dtype)
    assert conv2d_grad_input(gy, w, x.shape).dtype == dtype
    assert conv2d_grad_weight(x, gy, w.shape).dtype == dtype
    wl = _rand(rng, (3, 3, 3, 2, 3, 3), dtype)
    assert locally_connected2d_grad_input(gy, wl, x.shape).dtype == dtype
    assert locally_connected2d_grad_weight(x, gy, wl.shape).dtype == dtype


# ----------------------------------------------------------------------------- padding modes


def test_normalize_padding():
    assert normalize_padding("valid", (3, 5), (1, 1)) == (0, 0)
    assert normalize_padding("full", (3, 5), (1, 1)) == (2, 4)
    assert normalize_padding("full", (3, 2), (2, 3)) == (4, 3)  # k_eff = d*(k-1)+1
    assert normalize_padding("same", (3, 5), (1, 1)) == (1, 2)
    assert normalize_padding("same", (3, 3), (2, 1)) == (2, 1)
    assert normalize_padding(2, (3, 3), (1, 1)) == (2, 2)
    assert normalize_padding((1, 0), (3, 3), (1, 1)) == (1, 0)


@pytest.mark.parametrize("k, d", [((2, 3), (1, 1)), ((3, 4), (1, 1))])
def test_same_rejects_even_effective_kernel(k, d):
    with pytest.raises(ValueError, match="odd effective kernel"):
        normalize_padding("same", k, d)


def test_same_rejects_stride():
    with pytest.raises(ValueError, match="stride 1"):
        normalize_padding("same", (3, 3), (1, 1), (2, 1))
    with pytest.raises(ValueError, match="stride 1"):
        conv2d_output_shape((1, 1, 5, 5), (1, 1, 3, 3), (2, 2), "same", (1, 1), 1)


@pytest.mark.parametrize("bad", ["circular", -1, (1, -1), (1, 2, 3), 1.5])
def test_bad_padding(bad):
    with pytest.raises(ValueError, match="padding"):
        normalize_padding(bad, (3, 3), (1, 1))


def test_same_keeps_size():
    x, w = np.ones((1, 1, 7, 6)), np.ones((1, 1, 3, 5))
    assert conv2d(x, w, padding=normalize_padding("same", (3, 5), (1, 1))).shape == (
        1,
        1,
        7,
        6,
    )


# ----------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    "x_shape, w_shape, kw",
    [
        ((1, 3, 5, 5), (2, 2, 3, 3), {}),  # C/groups mismatch
        ((1, 3, 5, 5), (2, 3, 3, 3), {"groups": 2}),  # C not divisible
        ((1, 4, 5, 5), (3, 2, 3, 3), {"groups": 2}),  # F not divisible
        ((1, 3, 2, 5), (2, 3, 3, 3), {}),  # kernel larger than input
        ((1, 3, 5, 5), (2, 3, 3, 3), {"dilation": (3, 1)}),  # dilated kernel too large
        ((3, 5, 5), (2, 3, 3, 3), {}),  # not 4-d
        ((1, 3, 5, 5), (2, 3, 3), {}),
        ((1, 3, 5, 5), (2, 3, 0, 3), {}),  # empty kernel
        ((1, 3, 5, 5), (2, 3, 3, 3), {"groups": 0}),
    ],
)
def test_conv_shape_errors_name_shapes(x_shape, w_shape, kw):
    args = {"stride": (1, 1), "padding": (0, 0), "dilation": (1, 1), "groups": 1, **kw}
    with pytest.raises(ValueError) as exc:
        conv2d_output_shape(x_shape, w_shape, **args)
    assert str(x_shape) in str(exc.value) and str(w_shape) in str(exc.value)
    with pytest.raises(ValueError):
        conv2d(np.zeros(x_shape), np.zeros(w_shape), **args)


def test_bad_stride_and_dilation():
    for kw in ({"stride": (0, 1)}, {"dilation": 0}, {"stride": 1.0}):
        args = {"stride": 1, "padding": 0, "dilation": 1, "groups": 1, **kw}
        with pytest.raises(ValueError):
            conv2d_output_shape((1, 1, 5, 5), (1, 1, 3, 3), **args)


def test_grad_shape_mismatch_errors():
    w = np.zeros((2, 3, 3, 3))
    with pytest.raises(ValueError, match=r"\(1, 2, 4, 4\).*\(1, 2, 3, 3\)"):
        conv2d_grad_input(np.zeros((1, 2, 4, 4)), w, (1, 3, 5, 5))
    with pytest.raises(ValueError, match=r"\(1, 3, 5, 5\)"):
        conv2d_grad_weight(np.zeros((1, 3, 5, 5)), np.zeros((1, 2, 4, 4)), w.shape)
    wl = np.zeros((3, 3, 2, 3, 3, 3))
    with pytest.raises(ValueError, match=r"\(1, 2, 4, 4\)"):
        locally_connected2d_grad_input(np.zeros((1, 2, 4, 4)), wl, (1, 3, 5, 5))
    with pytest.raises(ValueError, match=r"\(1, 2, 4, 4\)"):
        locally_connected2d_grad_weight(
            np.zeros((1, 3, 5, 5)), np.zeros((1, 2, 4, 4)), wl.shape
        )


@pytest.mark.parametrize(
    "x_shape, w_shape, stride",
    [
        ((1, 3, 5, 5), (3, 3, 2, 2, 3, 3), (1, 1)),  # channel mismatch
        ((1, 3, 5, 5), (2, 3, 2, 3, 3, 3), (1, 1)),  # wrong number of positions
        ((1, 3, 5, 5), (3, 3, 2, 3, 3, 3), (2, 2)),  # positions do not match the stride
        ((1, 3, 2, 5), (1, 3, 2, 3, 3, 3), (1, 1)),  # kernel larger than input
        ((1, 3, 5, 5), (3, 3, 2, 3, 3), (1, 1)),  # not 6-d
    ],
)
def test_lc_shape_errors_name_shapes(x_shape, w_shape, stride):
    with pytest.raises(ValueError) as exc:
        locally_connected2d(np.zeros(x_shape), np.zeros(w_shape), stride)
    assert str(x_shape) in str(exc.value) and str(w_shape) in str(exc.value)


# ----------------------------------------------------------------------------- PyTorch


TORCH_CASES = [c for c in CONV_CASES if c[0][0] > 0] + [
    ((2, 4, 9, 8), (6, 2, 3, 3), (2, 2), (1, 0), (2, 1), 2),
    ((3, 8, 6, 7), (8, 1, 3, 2), (3, 2), (2, 1), (1, 2), 8),
]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", TORCH_CASES)
def test_conv2d_against_torch(case, dtype):
    torch = pytest.importorskip("torch")
    x_shape, w_shape, stride, padding, dilation, groups = _resolve(case)
    rng = np.random.default_rng(9)
    x, w = _rand(rng, x_shape, dtype), _rand(rng, w_shape, dtype)
    tx = torch.from_numpy(x).requires_grad_(True)
    tw = torch.from_numpy(w).requires_grad_(True)
    ty = torch.nn.functional.conv2d(
        tx, tw, stride=stride, padding=padding, dilation=dilation, groups=groups
    )
    gy = _rand(rng, tuple(ty.shape), dtype)
    ty.backward(torch.from_numpy(gy))
    args = (stride, padding, dilation, groups, False)
    tol = (
        {"rtol": 1e-4, "atol": 1e-5}
        if dtype == np.float32
        else {"rtol": 1e-11, "atol": 1e-12}
    )
    np.testing.assert_allclose(conv2d(x, w, *args), ty.detach().numpy(), **tol)
    np.testing.assert_allclose(
        conv2d_grad_input(gy, w, x_shape, *args), tx.grad.numpy(), **tol
    )
    np.testing.assert_allclose(
        conv2d_grad_weight(x, gy, w_shape, *args), tw.grad.numpy(), **tol
    )
