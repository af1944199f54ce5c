"""Tests of the numpy oracles for pooling, LCN and probabilistic max-pooling.

Forward passes against naive loops written here independently, vjps against central
finite differences in float64, and differential checks against PyTorch when present.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from backends.numpy.lcn import gaussian_window, lcn, lcn_grad
from backends.numpy.pool import pool2d, pool2d_grad, pool2d_output_shape
from backends.numpy.prob_max_pool import (
    prob_max_pool,
    prob_max_pool_grad,
    sample_prob_max_pool,
)

# ----------------------------------------------------------------------------- helpers


def numeric_vjp(f, x: np.ndarray, gy: np.ndarray, h: float = 1e-6) -> np.ndarray:
    """Central differences of L(x) = sum(gy * f(x)), one element at a time."""
    gx = np.zeros_like(x)
    flat, gflat = x.reshape(-1), gx.reshape(-1)
    for i in range(flat.size):
        old = flat[i]
        flat[i] = old + h
        fp = float(np.sum(gy * f(x)))
        flat[i] = old - h
        fm = float(np.sum(gy * f(x)))
        flat[i] = old
        gflat[i] = (fp - fm) / (2 * h)
    return gx


def distinct_values(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Random float64 values at least 0.01 apart (no ties, no kink within h)."""
    n = math.prod(shape)
    return (rng.permutation(n) * 0.01 - n * 0.005).reshape(shape) + rng.uniform(0, 1e-3)


# ----------------------------------------------------------------------------- naive pooling


def naive_out_len(n: int, k: int, s: int, p: int, ceil: bool) -> int:
    if ceil and n + 2 * p < k:
        return 1
    num = n + 2 * p - k + (s - 1 if ceil else 0)
    out = num // s + 1
    if ceil and (out - 1) * s >= n + p:
        out -= 1
    return out


def naive_windows(n: int, k: int, s: int, p: int, ceil: bool):
    """Per window along one axis: (in-bounds cells, divisor with padding counted)."""
    res = []
    for o in range(naive_out_len(n, k, s, p, ceil)):
        start = o * s - p  # in input coordinates
        cells = [i for i in range(start, start + k) if 0 <= i < n]
        with_pad = min(start + k, n + p) - start
        res.append((cells, with_pad))
    return res


def naive_pool(x, ws, stride, pad, mode, ignore_border=True, count_include_pad=True):
    H, W = x.shape[-2:]
    rows = naive_windows(H, ws[0], stride[0], pad[0], not ignore_border)
    cols = naive_windows(W, ws[1], stride[1], pad[1], not ignore_border)
    y = np.zeros(x.shape[:-2] + (len(rows), len(cols)), dtype=x.dtype)
    for a, (ri, rpad) in enumerate(rows):
        for b, (ci, cpad) in enumerate(cols):
            vals = [x[..., i, j] for i in ri for j in ci]
            if mode == "max":
                y[..., a, b] = np.max(vals, axis=0)
            elif mode == "avg":
                div = rpad * cpad if count_include_pad else len(ri) * len(ci)
                y[..., a, b] = np.sum(vals, axis=0) / div
            else:
                y[..., a, b] = np.sqrt(np.sum(np.square(vals), axis=0))
    return y


def naive_max_grad(x, gy, ws, stride, pad, ignore_border=True):
    """First max in row-major order over the in-bounds cells of each window."""
    H, W = x.shape[-2:]
    rows = naive_windows(H, ws[0], stride[0], pad[0], not ignore_border)
    cols = naive_windows(W, ws[1], stride[1], pad[1], not ignore_border)
    gx = np.zeros_like(x)
    for idx in np.ndindex(x.shape[:-2]):
        for a, (ri, _) in enumerate(rows):
            for b, (ci, _) in enumerate(cols):
                best = None
                for i in ri:
                    for j in ci:
                        if best is None or x[idx + (i, j)] > x[idx + best]:
                            best = (i, j)
                gx[idx + best] += gy[idx + (a, b)]
    return gx


POOL_CASES = [
    # ws, stride, padding, ignore_border, shape
    ((2, 2), (2, 2), (0, 0), True, (2, 3, 6, 7)),
    ((3, 3), (2, 2), (1, 1), True, (2, 2, 7, 8)),
    ((3, 2), (1, 2), (1, 0), True, (1, 2, 5, 6)),
    ((2, 3), (3, 2), (1, 1), True, (2, 1, 7, 7)),
    ((2, 2), (2, 2), (0, 0), False, (2, 3, 5, 7)),
    ((3, 3), (2, 2), (1, 1), False, (2, 2, 8, 6)),
    ((3, 2), (2, 3), (1, 1), False, (1, 2, 7, 8)),
    ((4, 4), (3, 3), (0, 0), False, (1, 1, 3, 2)),  # input smaller than the window
    ((3, 3), (1, 1), (2, 2), False, (1, 1, 4, 5)),  # padding beyond k/2
    ((2, 2), (1, 1), (0, 0), True, (5, 4)),  # ndim 2
    ((2, 2), (2, 1), (1, 0), False, (2, 1, 2, 3, 5)),  # ndim 5
]


# ----------------------------------------------------------------------------- pool2d


@pytest.mark.parametrize("case", POOL_CASES)
@pytest.mark.parametrize("mode", ["max", "avg", "l2"])
@pytest.mark.parametrize("cip", [True, False])
def test_pool2d_forward_vs_naive(case, mode, cip):
    ws, st, pad, ib, shape = case
    rng = np.random.default_rng(0)
    for dtype in (np.float32, np.float64):
        x = rng.standard_normal(shape).astype(dtype)
        y = pool2d(x, ws, st, pad, mode, ib, cip)
        ref = naive_pool(x, ws, st, pad, mode, ib, cip)
        assert y.dtype == dtype
        assert y.flags.c_contiguous
        assert y.shape == ref.shape == pool2d_output_shape(shape, ws, st, pad, ib)
        np.testing.assert_allclose(y, ref, rtol=1e-5 if dtype == np.float32 else 1e-12, atol=1e-6)


@pytest.mark.parametrize("case", POOL_CASES)
@pytest.mark.parametrize("mode", ["max", "avg", "l2"])
@pytest.mark.parametrize("cip", [True, False])
def test_pool2d_grad_finite_differences(case, mode, cip):
    ws, st, pad, ib, shape = case
    rng = np.random.default_rng(1)
    x = distinct_values(rng, shape)
    y = pool2d(x, ws, st, pad, mode, ib, cip)
    gy = rng.standard_normal(y.shape)
    gx = pool2d_grad(x, y, gy, ws, st, pad, mode, ib, cip)
    assert gx.shape == x.shape
    assert gx.flags.c_contiguous
    num = numeric_vjp(lambda z: pool2d(z, ws, st, pad, mode, ib, cip), x, gy)
    np.testing.assert_allclose(gx, num, rtol=1e-6, atol=1e-7)
    if mode == "l2":  # y=None recomputes the forward
        np.testing.assert_array_equal(pool2d_grad(x, None, gy, ws, st, pad, mode, ib, cip), gx)


@pytest.mark.parametrize("case", POOL_CASES)
def test_pool2d_max_grad_ties_go_to_first(case):
    ws, st, pad, ib, shape = case
    rng = np.random.default_rng(2)
    x = rng.integers(0, 3, size=shape).astype(np.float64)  # many ties
    y = pool2d(x, ws, st, pad, "max", ib)
    gy = rng.standard_normal(y.shape)
    gx = pool2d_grad(x, y, gy, ws, st, pad, "max", ib)
    np.testing.assert_allclose(gx, naive_max_grad(x, gy, ws, st, pad, ib), rtol=1e-12)


def test_pool2d_max_tie_explicit():
    x = np.array([[1.0, 2.0, 2.0], [2.0, 0.0, 2.0]])
    gx = pool2d_grad(x, None, np.array([[10.0, 100.0]]), (2, 2), (1, 1), (0, 0), "max")
    # window 0 = [[1, 2], [2, 0]]: tie (0, 1) / (1, 0) -> (0, 1), i.e. x[0, 1];
    # window 1 = [[2, 2], [0, 2]]: three-way tie -> its (0, 0), i.e. x[0, 1] again
    np.testing.assert_array_equal(gx, [[0.0, 110.0, 0.0], [0.0, 0.0, 0.0]])
    # every input -inf: the gradient still goes to an input cell, not to padding
    x = np.full((2, 2), -np.inf)
    gx = pool2d_grad(x, None, np.ones((3, 3)), (2, 2), (1, 1), (1, 1), "max")
    # 9 windows, each to its first in-bounds cell (PyTorch scans input cells only)
    np.testing.assert_array_equal(gx, [[4.0, 2.0], [2.0, 1.0]])


def test_pool2d_l2_grad_zero_where_norm_zero():
    x = np.zeros((1, 1, 4, 4))
    x[0, 0, 0, 0] = 3.0
    gy = np.ones((1, 1, 2, 2))
    gx = pool2d_grad(x, pool2d(x, (2, 2), None, None, "l2"), gy, (2, 2), None, None, "l2")
    assert np.isfinite(gx).all()
    np.testing.assert_array_equal(gx[0, 0, 0, 0], 1.0)
    assert (gx.reshape(-1)[1:] == 0).all()


def test_pool2d_max_integer_dtype():
    x = np.arange(-8, 8, dtype=np.int32).reshape(4, 4)
    y = pool2d(x, (3, 3), (2, 2), (1, 1), "max")
    assert y.dtype == np.int32
    np.testing.assert_array_equal(y, naive_pool(x, (3, 3), (2, 2), (1, 1), "max"))


def test_pool2d_errors():
    x = np.zeros((1, 1, 4, 4))
    with pytest.raises(ValueError, match="padding"):
        pool2d(x, (2, 2), (1, 1), (2, 0), "max")
    with pytest.raises(ValueError, match=r"\(1, 1, 2, 2\)"):
        pool2d_output_shape((1, 1, 2, 2), (3, 3), (1, 1), (0, 0), True)
    with pytest.raises(ValueError, match="mode"):
        pool2d(x, (2, 2), None, None, "min")
    with pytest.raises(ValueError, match="ndim"):
        pool2d(np.zeros(4), (2, 2), None, None, "max")
    with pytest.raises(TypeError):
        pool2d(x.astype(np.int64), (2, 2), None, None, "avg")
    with pytest.raises(ValueError, match="gy"):
        pool2d_grad(x, None, np.zeros((1, 1, 3, 3)), (2, 2), None, None, "avg")
    assert pool2d_output_shape((1, 1, 2, 2), (3, 3), (1, 1), (0, 0), False) == (1, 1, 1, 1)


# ----------------------------------------------------------------------------- vs torch

TORCH_CASES = [
    c for c in POOL_CASES
    # torch needs 3 or 4 dims and padding <= k / 2; ceil mode with an input smaller than
    # the window is an error there
    if len(c[4]) in (3, 4)
    and all(p <= k // 2 for p, k in zip(c[2], c[0], strict=True))
    and all(n + 2 * p >= k for n, p, k in zip(c[4][-2:], c[2], c[0], strict=True))
]


@pytest.mark.parametrize("case", TORCH_CASES)
def test_pool2d_vs_torch(case):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    ws, st, pad, ib, shape = case
    rng = np.random.default_rng(3)
    x = rng.integers(-3, 3, size=shape).astype(np.float64)  # ties in max windows
    x = x + 0.5 * (rng.random(shape) < 0.5)
    tx = torch.tensor(x, requires_grad=True)
    runs = [("max", True, lambda t: F.max_pool2d(t, ws, st, pad, ceil_mode=not ib))]
    for cip in (True, False):
        runs.append(("avg", cip, lambda t, cip=cip: F.avg_pool2d(
            t, ws, st, pad, ceil_mode=not ib, count_include_pad=cip)))
    for mode, cip, f in runs:
        ty = f(tx)
        y = pool2d(x, ws, st, pad, mode, ib, cip)
        np.testing.assert_allclose(y, ty.detach().numpy(), rtol=1e-12, atol=1e-12)
        gy = rng.standard_normal(y.shape)
        (tgx,) = torch.autograd.grad(ty, tx, torch.tensor(gy))
        gx = pool2d_grad(x, y, gy, ws, st, pad, mode, ib, cip)
        np.testing.assert_allclose(gx, tgx.numpy(), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("case", [c for c in TORCH_CASES if c[3] and c[2] == (0, 0)])
def test_pool2d_l2_vs_torch_lp_pool(case):
    torch = pytest.importorskip("torch")
    ws, st, pad, _, shape = case
    x = np.random.default_rng(4).standard_normal(shape)
    ty = torch.nn.functional.lp_pool2d(torch.tensor(x), 2, ws, st)
    # torch computes sqrt(avg(x^2) * kh * kw): equal to sqrt(sum x^2) up to rounding
    np.testing.assert_allclose(pool2d(x, ws, st, pad, "l2"), ty.numpy(), rtol=1e-13)


# ----------------------------------------------------------------------------- lcn

LCN_MODES = ["both", "subtractive", "divisive"]


def torch_lcn(torch, x, size, sigma, mode, across, eps):
    """The DESIGN.md formula with a full 2-D Gaussian kernel and conv2d(padding=same)."""
    F = torch.nn.functional
    C = x.shape[1]
    sigma = size / 4.5 if sigma is None else sigma
    r = size // 2
    t = torch.arange(-r, r + 1, dtype=x.dtype)
    g2 = torch.exp(-(t[:, None] ** 2 + t[None, :] ** 2) / (2 * sigma**2))
    if across:
        w = g2.expand(C, size, size)
        w = (w / w.sum())[None]  # (1, C, size, size): one map, the same for every c
        groups = 1
    else:
        w = (g2 / g2.sum()).expand(C, 1, size, size)
        groups = C

    def conv(z):
        return F.conv2d(z, w, padding=r, groups=groups)

    v = x - conv(x) if mode != "divisive" else x
    if mode == "subtractive":
        return v
    s = torch.sqrt(conv(v * v))
    c = s.mean(dim=(1, 2, 3), keepdim=True)
    d = torch.maximum(torch.maximum(s, c), torch.tensor(eps, dtype=x.dtype))
    return v / d


@pytest.mark.parametrize("across", [True, False])
def test_gaussian_window(across):
    w = gaussian_window(5, None, 3, across)
    assert w.shape == (3, 5, 5)
    sums = w.sum(axis=(1, 2))
    np.testing.assert_allclose(sums, 1 / 3 if across else 1.0, rtol=1e-14)
    t = np.arange(-2, 3)
    ref = np.exp(-(t[:, None] ** 2 + t[None] ** 2) / (2 * (5 / 4.5) ** 2))
    np.testing.assert_allclose(w[1] / w[1].sum(), ref / ref.sum(), rtol=1e-14)
    assert gaussian_window(5, 1.0, 2, True, dtype=np.float32).dtype == np.float32
    with pytest.raises(ValueError, match="odd"):
        gaussian_window(4, None, 1, True)


@pytest.mark.parametrize("mode", LCN_MODES)
@pytest.mark.parametrize("across", [True, False])
def test_lcn_vs_torch(mode, across):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(5)
    x = rng.standard_normal((2, 3, 11, 10))
    x[1] *= 0.01  # low contrast image: the c branch of the max wins more often
    for size, sigma, eps in ((9, None, 1e-4), (5, 1.3, 1e-2)):
        tx = torch.tensor(x, requires_grad=True)
        ty = torch_lcn(torch, tx, size, sigma, mode, across, eps)
        y = lcn(x, size, sigma, mode, across, eps)
        assert y.flags.c_contiguous
        np.testing.assert_allclose(y, ty.detach().numpy(), rtol=1e-10, atol=1e-12)
        gy = rng.standard_normal(x.shape)
        (tgx,) = torch.autograd.grad(ty, tx, torch.tensor(gy))
        gx = lcn_grad(x, gy, size, sigma, mode, across, eps)
        np.testing.assert_allclose(gx, tgx.numpy(), rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("mode", LCN_MODES)
@pytest.mark.parametrize("across", [True, False])
@pytest.mark.parametrize("eps", [1e-4, 0.5, 100.0])  # mixes the s, c and eps branches
def test_lcn_grad_finite_differences(mode, across, eps):
    rng = np.random.default_rng(6)
    x = rng.standard_normal((2, 2, 6, 5))
    gy = rng.standard_normal(x.shape)
    gx = lcn_grad(x, gy, 5, None, mode, across, eps)
    num = numeric_vjp(lambda z: lcn(z, 5, None, mode, across, eps), x, gy)
    np.testing.assert_allclose(gx, num, rtol=1e-6, atol=1e-8)


def test_lcn_float32_and_zero_image():
    rng = np.random.default_rng(7)
    x = rng.standard_normal((2, 3, 12, 12)).astype(np.float32)
    y = lcn(x)
    assert y.dtype == np.float32
    np.testing.assert_allclose(y, lcn(x.astype(np.float64)), rtol=1e-4, atol=1e-5)
    # s == 0 everywhere: y = v / eps, the gradient is finite (d sqrt taken as 0 at 0)
    z = np.zeros((1, 2, 5, 5))
    gy = rng.standard_normal(z.shape)
    gx = lcn_grad(z, gy, 3)
    num = numeric_vjp(lambda t: lcn(t, 3), z, gy, h=1e-9)
    np.testing.assert_allclose(gx, num, rtol=1e-5, atol=1e-6)


def test_lcn_grad_tie_goes_to_s():
    # size 1 per channel, divisive: s = |x| and c = mean|x|; with |x| = 1 everywhere
    # s == c exactly. The tie goes to s, so y = x / |x| = sign(x) has zero gradient
    # (had it gone to c, gx would be gy - mean(gy * x) * x).
    rng = np.random.default_rng(8)
    x = rng.choice([-1.0, 1.0], size=(2, 3, 4, 4))
    gy = rng.standard_normal(x.shape)
    np.testing.assert_array_equal(lcn_grad(x, gy, 1, None, "divisive", False, 1e-4), 0.0)


def test_lcn_errors():
    x = np.zeros((1, 1, 4, 4))
    with pytest.raises(ValueError, match="odd"):
        lcn(x, size=4)
    with pytest.raises(ValueError, match="mode"):
        lcn(x, mode="foo")
    with pytest.raises(ValueError, match="NCHW"):
        lcn(np.zeros((4, 4)))


# ----------------------------------------------------------------------------- prob max pool


def brute_force_block(energies: np.ndarray):
    """Enumerate all 2^B configurations h of one block; those with more than one unit on
    have probability 0 (the constraint). E(h) = -sum I h, P(h) ~ exp(-E(h))."""
    B = energies.size
    det, z, p_off = np.zeros(B), 0.0, 0.0
    for h in itertools.product((0, 1), repeat=B):
        h = np.array(h)
        if h.sum() > 1:
            continue
        w = math.exp(float(np.dot(energies, h)))
        z += w
        det += w * h
        if h.sum() == 0:
            p_off = w
    return det / z, 1 - p_off / z


@pytest.mark.parametrize("ws", [(2, 2), (1, 3), (3, 1)])
def test_prob_max_pool_vs_brute_force(ws):
    rng = np.random.default_rng(9)
    I = rng.normal(0, 2, size=(2, 3, 6, 6))
    det, pool = prob_max_pool(I, ws)
    assert det.shape == I.shape and pool.shape == (2, 3, 6 // ws[0], 6 // ws[1])
    assert det.flags.c_contiguous and pool.flags.c_contiguous
    bh, bw = ws
    for n, c, a, b in np.ndindex(pool.shape):
        block = I[n, c, a * bh : (a + 1) * bh, b * bw : (b + 1) * bw]
        rdet, rpool = brute_force_block(block.reshape(-1))
        got = det[n, c, a * bh : (a + 1) * bh, b * bw : (b + 1) * bw].reshape(-1)
        np.testing.assert_allclose(got, rdet, rtol=1e-12)
        np.testing.assert_allclose(pool[n, c, a, b], rpool, rtol=1e-12)
        # units plus the off state sum to 1
        np.testing.assert_allclose(got.sum() + (1 - pool[n, c, a, b]), 1.0, rtol=1e-14)


def test_prob_max_pool_stable_and_dtype():
    I = np.array([[1000.0, -1000.0], [999.0, 0.0]], dtype=np.float32)[None, None]
    det, pool = prob_max_pool(I, (2, 2))
    assert det.dtype == pool.dtype == np.float32
    assert np.isfinite(det).all() and np.isfinite(pool).all()
    e = 1 / (1 + math.exp(-1))
    np.testing.assert_allclose(det.reshape(-1), [e, 0, 1 - e, 0], rtol=1e-6)
    np.testing.assert_allclose(pool, 1.0)
    det, pool = prob_max_pool(np.full((1, 1, 2, 2), -1000.0), (2, 2))
    np.testing.assert_allclose(pool, 4 * math.exp(-1000.0) if math.exp(-1000.0) else 0.0)
    with pytest.raises(ValueError, match="divide"):
        prob_max_pool(np.zeros((1, 1, 3, 4)), (2, 2))


@pytest.mark.parametrize("which", ["both", "det", "pool"])
def test_prob_max_pool_grad_finite_differences(which):
    rng = np.random.default_rng(10)
    I = rng.normal(0, 1.5, size=(2, 2, 4, 6))
    ws = (2, 3)
    g_det = rng.standard_normal(I.shape) if which != "pool" else None
    g_pool = rng.standard_normal((2, 2, 2, 2)) if which != "det" else None

    def loss(z):
        d, p = prob_max_pool(z, ws)
        return (0 if g_det is None else np.sum(g_det * d)) + (0 if g_pool is None else np.sum(g_pool * p))

    gI = prob_max_pool_grad(I, ws, g_det, g_pool)
    num = numeric_vjp(lambda z: np.array(loss(z)), I, np.array(1.0))
    np.testing.assert_allclose(gI, num, rtol=1e-6, atol=1e-9)
    assert gI.flags.c_contiguous


def test_prob_max_pool_grad_none_none_is_zero():
    I = np.ones((1, 1, 2, 2))
    np.testing.assert_array_equal(prob_max_pool_grad(I, (2, 2), None, None), 0.0)


def test_sampler_rule_exact():
    p = np.array([0.1, 0.2, 0.3, 0.15])  # off: 0.25
    c = [0.1]
    for q in p[1:]:
        c.append(c[-1] + q)  # sequential running sums, as the rule says
    probs = np.broadcast_to(p.reshape(1, 1, 2, 2), (9, 1, 2, 2))
    probs = np.ascontiguousarray(probs)
    u = np.array([0.0, np.nextafter(c[0], 0), c[0], c[1], np.nextafter(c[2], 0), c[2], c[3],
                  np.nextafter(c[3], 0), 0.999999]).reshape(9, 1, 1, 1)
    det, pool = sample_prob_max_pool(probs, (2, 2), u, given="probs")
    states = [int(np.argmax(d.reshape(-1))) if pl else 4 for d, pl in zip(det, pool.reshape(-1), strict=True)]
    assert states == [0, 0, 1, 2, 2, 3, 4, 3, 4]
    np.testing.assert_array_equal(det.reshape(9, -1).sum(axis=1), pool.reshape(-1))


def test_sampler_frequencies_match_probabilities():
    rng = np.random.default_rng(11)
    n = 40000
    energies = np.array([[0.5, -1.0], [1.5, 0.2]])
    I = np.broadcast_to(energies, (n, 1, 2, 2)).copy()
    det_p, pool_p = prob_max_pool(I[:1], (2, 2))
    probs = np.append(det_p.reshape(-1), 1 - pool_p.reshape(-1))
    u = rng.random((n, 1, 1, 1))
    det, pool = sample_prob_max_pool(I, (2, 2), u)
    assert det.dtype == pool.dtype == I.dtype
    # one-hot or all off, and pool = 1 - off
    assert set(np.unique(det)) <= {0.0, 1.0}
    np.testing.assert_array_equal(det.sum(axis=(2, 3)), pool[:, :, 0, 0])
    counts = np.append(det.reshape(n, 4).sum(axis=0), n - pool.sum())
    freq = counts / n
    tol = 5 * np.sqrt(probs * (1 - probs) / n)
    assert (np.abs(freq - probs) < tol).all(), (freq, probs)
    # the energies path and the probabilities path agree sample for sample
    d2, p2 = sample_prob_max_pool(prob_max_pool(I, (2, 2))[0], (2, 2), u, given="probs")
    np.testing.assert_array_equal(d2, det)
    np.testing.assert_array_equal(p2, pool)
    with pytest.raises(ValueError, match="uniforms"):
        sample_prob_max_pool(I, (2, 2), u[:, :, :, :0])
