"""Op table rows for the deep-learning ops: conv (and its adjoints), locally-connected, pooling
(and its vjp), LCN (and its vjp), probabilistic max-pooling, softmax family and the costs.

The references are naive loops written here, independently of Kiln and of the numpy oracle
kernels, except the vjp of LCN (``lcn_grad``, cross-checked against PyTorch autograd in
tests/test_torch_compare.py). Shapes are small: verify_grad's numeric gradient is O(n) calls.
"""

from __future__ import annotations

import numpy as np

import frontends.nn as nn
import frontends.tensor as T
from engine.ops.conv import LocallyConnected2dGradInput, LocallyConnected2dGradWeight
from engine.ops.lcn import LCNGrad
from engine.ops.nnet import SoftmaxCrossEntropy
from engine.ops.pool import Pool2d, Pool2dGrad, ProbMaxPoolGrad, ProbMaxPoolSample
from tests.op_rows import OpRow

# -- input makers ---------------------------------------------------------------------------------


def normal(*shapes):
    return lambda rng, dtype: [rng.standard_normal(s).astype(dtype) for s in shapes]


def distinct(*shapes, spacing=0.1):
    """Values at least ``spacing`` apart (no max-pool ties within the finite-difference step)."""
    def make(rng, dtype):
        out = []
        for s in shapes:
            n = int(np.prod(s))
            out.append(((rng.permutation(n) - n / 2) * spacing).reshape(s).astype(dtype))
        return out
    return make


def scaled(factor, make):
    """LCN is scale invariant (away from eps): larger inputs make the finite-difference step relatively small."""
    return lambda rng, dtype: [(a * factor).astype(dtype) for a in make(rng, dtype)]


def away_from_zero(*shapes):
    return lambda rng, dtype: [(np.sign(rng.standard_normal(s)) * rng.uniform(0.5, 1.5, s)).astype(dtype)
                               for s in shapes]


def uniform(low, high, *shapes):
    return lambda rng, dtype: [rng.uniform(low, high, s).astype(dtype) for s in shapes]


def with_labels(shape, classes):
    return lambda rng, dtype: [rng.standard_normal(shape).astype(dtype), rng.integers(0, classes, shape[0])]


# -- naive references ----------------------------------------------------------------------------


def _pad4(x, ph, pw):
    return np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))


def _conv_geometry(x_shape, w_shape, stride, pad, dil):
    (_, _, h, w), (_, _, kh, kw) = x_shape, w_shape
    oh = (h + 2 * pad[0] - dil[0] * (kh - 1) - 1) // stride[0] + 1
    ow = (w + 2 * pad[1] - dil[1] * (kw - 1) - 1) // stride[1] + 1
    return oh, ow


def _patch(i, j, w_shape, stride, dil):
    kh, kw = w_shape[2:]
    return (slice(i * stride[0], i * stride[0] + dil[0] * (kh - 1) + 1, dil[0]),
            slice(j * stride[1], j * stride[1] + dil[1] * (kw - 1) + 1, dil[1]))


def conv_ref(x, w, stride=(1, 1), pad=(0, 0), dil=(1, 1), groups=1, flip=False):
    w = w[..., ::-1, ::-1] if flip else w
    n_, f_, cg = x.shape[0], w.shape[0], w.shape[1]
    oh, ow = _conv_geometry(x.shape, w.shape, stride, pad, dil)
    xp = _pad4(x.astype(np.float64), *pad)
    out = np.zeros((n_, f_, oh, ow))
    for n in range(n_):
        for f in range(f_):
            g = f // (f_ // groups)
            for i in range(oh):
                for j in range(ow):
                    rows, cols = _patch(i, j, w.shape, stride, dil)
                    out[n, f, i, j] = np.sum(xp[n, g * cg:(g + 1) * cg, rows, cols] * w[f])
    return out


def conv_grad_input_ref(gy, w, x_shape, stride=(1, 1), pad=(0, 0), dil=(1, 1), groups=1, flip=False):
    w = w[..., ::-1, ::-1] if flip else w
    f_, cg = w.shape[:2]
    n_, c_, h, wd = x_shape
    gxp = np.zeros((n_, c_, h + 2 * pad[0], wd + 2 * pad[1]))
    for n in range(n_):
        for f in range(f_):
            g = f // (f_ // groups)
            for i in range(gy.shape[2]):
                for j in range(gy.shape[3]):
                    rows, cols = _patch(i, j, w.shape, stride, dil)
                    gxp[n, g * cg:(g + 1) * cg, rows, cols] += gy[n, f, i, j] * w[f]
    return gxp[:, :, pad[0]:pad[0] + h, pad[1]:pad[1] + wd]


def conv_grad_weight_ref(x, gy, w_shape, stride=(1, 1), pad=(0, 0), dil=(1, 1), groups=1, flip=False):
    f_, cg = w_shape[:2]
    xp = _pad4(x.astype(np.float64), *pad)
    gw = np.zeros(w_shape)
    for n in range(x.shape[0]):
        for f in range(f_):
            g = f // (f_ // groups)
            for i in range(gy.shape[2]):
                for j in range(gy.shape[3]):
                    rows, cols = _patch(i, j, w_shape, stride, dil)
                    gw[f] += gy[n, f, i, j] * xp[n, g * cg:(g + 1) * cg, rows, cols]
    return gw[..., ::-1, ::-1] if flip else gw


def lc_ref(x, w, stride=(1, 1)):
    oh, ow, f_, _, kh, kw = w.shape
    out = np.zeros((x.shape[0], f_, oh, ow))
    for n in range(x.shape[0]):
        for i in range(oh):
            for j in range(ow):
                patch = x[n, :, i * stride[0]:i * stride[0] + kh, j * stride[1]:j * stride[1] + kw]
                out[n, :, i, j] = np.tensordot(w[i, j], patch, axes=3)
    return out


def lc_grad_input_ref(gy, w, x_shape, stride=(1, 1)):
    oh, ow, _, _, kh, kw = w.shape
    gx = np.zeros(x_shape)
    for n in range(x_shape[0]):
        for i in range(oh):
            for j in range(ow):
                gx[n, :, i * stride[0]:i * stride[0] + kh, j * stride[1]:j * stride[1] + kw] += \
                    np.tensordot(gy[n, :, i, j], w[i, j], axes=1)
    return gx


def lc_grad_weight_ref(x, gy, w_shape, stride=(1, 1)):
    oh, ow, _, _, kh, kw = w_shape
    gw = np.zeros(w_shape)
    for n in range(x.shape[0]):
        for i in range(oh):
            for j in range(ow):
                patch = x[n, :, i * stride[0]:i * stride[0] + kh, j * stride[1]:j * stride[1] + kw]
                gw[i, j] += np.multiply.outer(gy[n, :, i, j], patch)
    return gw


def _pool_len(n, k, s, p, ignore_border):
    if ignore_border:
        return (n + 2 * p - k) // s + 1
    out = max(0, -(-(n + 2 * p - k) // s)) + 1  # ceil, keeping a last partial window
    return out - 1 if (out - 1) * s >= n + p else out


def _pool_windows(x, ws, stride, pad, ignore_border):
    """Yield (i, j, in-bounds slices, size of the window inside the padded extent)."""
    h, w = x.shape[-2:]
    oh = _pool_len(h, ws[0], stride[0], pad[0], ignore_border)
    ow = _pool_len(w, ws[1], stride[1], pad[1], ignore_border)
    for i in range(oh):
        for j in range(ow):
            r0, c0 = i * stride[0] - pad[0], j * stride[1] - pad[1]
            r1, c1 = min(r0 + ws[0], h + pad[0]), min(c0 + ws[1], w + pad[1])
            inside = (slice(max(r0, 0), min(r1, h)), slice(max(c0, 0), min(c1, w)))
            yield i, j, oh, ow, inside, (r1 - r0) * (c1 - c0)


def pool_ref(x, ws, stride, pad, mode, ignore_border=True, count_include_pad=True):
    x = x.astype(np.float64)
    out = None
    for i, j, oh, ow, (rows, cols), padded_size in _pool_windows(x, ws, stride, pad, ignore_border):
        if out is None:
            out = np.zeros(x.shape[:-2] + (oh, ow))
        region = x[..., rows, cols]
        if mode == "max":
            out[..., i, j] = region.max(axis=(-2, -1))
        elif mode == "l2":
            out[..., i, j] = np.sqrt((region ** 2).sum(axis=(-2, -1)))
        elif mode == "sum":
            out[..., i, j] = region.sum(axis=(-2, -1))
        else:
            divisor = padded_size if count_include_pad else region.shape[-1] * region.shape[-2]
            out[..., i, j] = region.sum(axis=(-2, -1)) / divisor
    return out


def pool_grad_ref(x, gy, ws, stride, pad, mode, ignore_border=True, count_include_pad=True):
    """gx by the definition of each mode's derivative (max: the first maximum in row-major order)."""
    x = x.astype(np.float64)
    y = pool_ref(x, ws, stride, pad, mode, ignore_border, count_include_pad)
    gx = np.zeros_like(x)
    for index in np.ndindex(*x.shape[:-2]):
        for i, j, _, _, (rows, cols), padded_size in _pool_windows(x, ws, stride, pad, ignore_border):
            region = x[index][rows, cols]
            g = gy[index][i, j]
            if mode == "max":
                a, b = np.unravel_index(np.argmax(region), region.shape)
                gx[index][rows.start + a, cols.start + b] += g
            elif mode == "l2":
                gx[index][rows, cols] += g * region / y[index][i, j]
            elif mode == "sum":
                gx[index][rows, cols] += g
            else:
                gx[index][rows, cols] += g / (padded_size if count_include_pad else region.size)
    return gx


def lcn_ref(x, size, sigma=None, mode="both", across=True, eps=1e-4):
    x = x.astype(np.float64)
    sigma = size / 4.5 if sigma is None else sigma
    t = np.arange(size) - size // 2
    g = np.exp(-t * t / (2 * sigma * sigma))
    window = np.outer(g, g) / np.outer(g, g).sum()
    r, channels = size // 2, x.shape[1]

    def conv(z):
        zp = _pad4(z, r, r)
        out = np.zeros_like(z)
        for n, c, i, j in np.ndindex(*z.shape):
            if across:
                out[n, c, i, j] = np.sum(zp[n, :, i:i + size, j:j + size] * window) / channels
            else:
                out[n, c, i, j] = np.sum(zp[n, c, i:i + size, j:j + size] * window)
        return out

    v = x if mode == "divisive" else x - conv(x)
    if mode == "subtractive":
        return v
    s = np.sqrt(conv(v * v))
    c = s.mean(axis=(1, 2, 3), keepdims=True)
    return v / np.maximum(np.maximum(s, c), eps)


def prob_max_pool_ref(x, ws):
    x = x.astype(np.float64)
    det, pool = np.zeros_like(x), np.zeros(x.shape[:-2] + (x.shape[-2] // ws[0], x.shape[-1] // ws[1]))
    for index in np.ndindex(*pool.shape):
        *lead, i, j = index
        block = (*lead, slice(i * ws[0], (i + 1) * ws[0]), slice(j * ws[1], (j + 1) * ws[1]))
        e = np.exp(x[block])
        det[block] = e / (1 + e.sum())
        pool[index] = e.sum() / (1 + e.sum())
    return det, pool


def prob_max_pool_grad_ref(x, g_det, g_pool, ws):
    det, _ = prob_max_pool_ref(x, ws)
    gx = np.zeros_like(det)
    for index in np.ndindex(*g_pool.shape):
        *lead, i, j = index
        block = (*lead, slice(i * ws[0], (i + 1) * ws[0]), slice(j * ws[1], (j + 1) * ws[1]))
        p, g = det[block], g_det[block] + g_pool[index]
        gx[block] = p * (g - np.sum(p * g))
    return gx


def prob_max_pool_sample_ref(x, u, ws):
    det, _ = prob_max_pool_ref(x, ws)
    det_s, pool_s = np.zeros_like(det), np.zeros(u.shape)
    for index in np.ndindex(*u.shape):
        *lead, i, j = index
        block = (*lead, slice(i * ws[0], (i + 1) * ws[0]), slice(j * ws[1], (j + 1) * ws[1]))
        cdf = np.cumsum(det[block].reshape(-1))
        k = int(np.sum(cdf <= u[index]))  # the first unit with u < cdf, or "off"
        if k < cdf.size:
            a, b = divmod(k, ws[1])
            det_s[(*lead, i * ws[0] + a, j * ws[1] + b)] = 1
            pool_s[index] = 1
    return np.concatenate([det_s.reshape(-1), pool_s.reshape(-1)])


def softmax_ref(x, axis=-1):
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def both(det_pool):
    det, pool = det_pool
    return T.concatenate([det.flatten(), pool.flatten()])


def both_ref(det_pool):
    return np.concatenate([a.reshape(-1) for a in det_pool])


# -- rows ----------------------------------------------------------------------------------------

X = (2, 3, 5, 6)
ROWS = [
    OpRow("conv2d_valid", lambda x, w: nn.conv2d(x, w), conv_ref, normal(X, (4, 3, 3, 2))),
    OpRow("conv2d_stride_pad", lambda x, w: nn.conv2d(x, w, stride=(2, 1), padding=(1, 2)),
          lambda x, w: conv_ref(x, w, (2, 1), (1, 2)), normal(X, (4, 3, 3, 2))),
    OpRow("conv2d_full", lambda x, w: nn.conv2d(x, w, padding="full"),
          lambda x, w: conv_ref(x, w, pad=(2, 1)), normal(X, (2, 3, 3, 2))),
    OpRow("conv2d_same", lambda x, w: nn.conv2d(x, w, padding="same"),
          lambda x, w: conv_ref(x, w, pad=(1, 2)), normal(X, (2, 3, 3, 5))),
    OpRow("conv2d_int_pad_stride2", lambda x, w: nn.conv2d(x, w, stride=2, padding=1),
          lambda x, w: conv_ref(x, w, (2, 2), (1, 1)), normal(X, (2, 3, 2, 3))),
    OpRow("conv2d_dilation", lambda x, w: nn.conv2d(x, w, dilation=(2, 1), padding=(1, 0)),
          lambda x, w: conv_ref(x, w, pad=(1, 0), dil=(2, 1)), normal(X, (2, 3, 2, 3))),
    OpRow("conv2d_groups", lambda x, w: nn.conv2d(x, w, groups=2, padding=1),
          lambda x, w: conv_ref(x, w, pad=(1, 1), groups=2), normal((2, 4, 4, 5), (6, 2, 3, 3))),
    OpRow("conv2d_filter_flip", lambda x, w: nn.conv2d(x, w, stride=(1, 2), filter_flip=True),
          lambda x, w: conv_ref(x, w, (1, 2), flip=True), normal(X, (2, 3, 3, 2))),
    OpRow("conv2d_grad_input", lambda gy, w: nn.conv2d_grad_input(gy, w, (2, 3, 6, 5), stride=2, padding=1),
          lambda gy, w: conv_grad_input_ref(gy, w, (2, 3, 6, 5), (2, 2), (1, 1)),
          normal((2, 4, 3, 3), (4, 3, 3, 3))),
    OpRow("conv2d_grad_input_groups_flip",
          lambda gy, w: nn.conv2d_grad_input(gy, w, (1, 4, 5, 5), groups=2, dilation=2, filter_flip=True),
          lambda gy, w: conv_grad_input_ref(gy, w, (1, 4, 5, 5), dil=(2, 2), groups=2, flip=True),
          normal((1, 4, 1, 3), (4, 2, 3, 2))),
    OpRow("conv2d_grad_weight", lambda x, gy: nn.conv2d_grad_weight(x, gy, (4, 3, 3, 3), stride=2, padding=1),
          lambda x, gy: conv_grad_weight_ref(x, gy, (4, 3, 3, 3), (2, 2), (1, 1)),
          normal((2, 3, 6, 5), (2, 4, 3, 3))),
    OpRow("conv2d_grad_weight_groups_flip",
          lambda x, gy: nn.conv2d_grad_weight(x, gy, (4, 2, 3, 2), groups=2, padding="full", filter_flip=True),
          lambda x, gy: conv_grad_weight_ref(x, gy, (4, 2, 3, 2), pad=(2, 1), groups=2, flip=True),
          normal((1, 4, 4, 3), (1, 4, 6, 4))),
    OpRow("locally_connected2d", nn.locally_connected2d, lc_ref, normal((2, 2, 4, 5), (3, 4, 3, 2, 2, 2))),
    OpRow("locally_connected2d_stride2", lambda x, w: nn.locally_connected2d(x, w, stride=2),
          lambda x, w: lc_ref(x, w, (2, 2)), normal((2, 2, 5, 6), (2, 3, 2, 2, 2, 2))),
    OpRow("locally_connected2d_grad_input",
          lambda gy, w: LocallyConnected2dGradInput(2)(gy, w, T.constant(np.array([2, 2, 6, 7]))),
          lambda gy, w: lc_grad_input_ref(gy, w, (2, 2, 6, 7), (2, 2)), normal((2, 3, 3, 3), (3, 3, 3, 2, 2, 2))),
    OpRow("locally_connected2d_grad_weight",
          lambda x, gy: LocallyConnected2dGradWeight(2)(x, gy, T.constant(np.array([3, 3, 3, 2, 2, 2]))),
          lambda x, gy: lc_grad_weight_ref(x, gy, (3, 3, 3, 2, 2, 2), (2, 2)), normal((2, 2, 6, 7), (2, 3, 3, 3))),
]

def _with_pooled_gradient(make, *pool_args):
    def make_inputs(rng, dtype):
        x = make(rng, dtype)[0]
        return [x, rng.standard_normal(pool_ref(x, *pool_args).shape).astype(dtype)]
    return make_inputs


POOL_CASES = [  # name, ws, stride, padding, mode, ignore_border, count_include_pad
    ("max", (2, 2), None, 0, "max", True, True),
    ("max_stride_pad", (3, 2), (2, 1), (1, 1), "max", True, True),
    ("max_ceil", (3, 3), (2, 2), (1, 0), "max", False, True),
    ("avg_inc_pad", (3, 2), (2, 1), (1, 1), "avg", True, True),
    ("avg_exc_pad", (3, 2), (2, 1), (1, 1), "avg", True, False),
    ("avg_ceil_exc_pad", (3, 3), (2, 2), (1, 1), "avg", False, False),
    ("avg_ceil_inc_pad", (3, 3), (2, 2), (1, 1), "avg", False, True),
    ("l2", (2, 3), (1, 2), (1, 1), "l2", True, True),
    ("l2_ceil", (3, 3), (2, 2), 0, "l2", False, True),
    ("sum_ceil", (2, 3), (2, 2), (1, 1), "sum", False, True),
]
for name, ws, st, pad, mode, ib, cip in POOL_CASES:
    st_ = ws if st is None else st
    pad_ = (pad, pad) if isinstance(pad, int) else pad
    make = {"max": distinct, "l2": away_from_zero}.get(mode, normal)((2, 2, 5, 6))
    ROWS.append(OpRow(
        f"pool2d_{name}",
        lambda x, ws=ws, st=st, pad=pad, mode=mode, ib=ib, cip=cip: nn.pool2d(x, ws, st, pad, mode, ib, cip),
        lambda x, ws=ws, st=st_, pad=pad_, mode=mode, ib=ib, cip=cip: pool_ref(x, ws, st, pad, mode, ib, cip),
        make))
    grad_make = _with_pooled_gradient(make, ws, st_, pad_, mode, ib, cip)
    ROWS.append(OpRow(
        f"pool2d_grad_{name}",
        lambda x, gy, ws=ws, st=st, pad=pad, mode=mode, ib=ib, cip=cip: Pool2dGrad(ws, st, pad, mode, ib, cip)(
            x, Pool2d(ws, st, pad, mode, ib, cip)(x), gy),
        lambda x, gy, ws=ws, st=st_, pad=pad_, mode=mode, ib=ib, cip=cip: pool_grad_ref(x, gy, ws, st, pad, mode, ib,
                                                                                      cip),
        grad_make))
ROWS.append(OpRow("pool2d_theano_alias_3d", lambda x: nn.pool2d(x, (2, 2), mode="average_exc_pad", pad=(1, 1)),
                  lambda x: pool_ref(x, (2, 2), (2, 2), (1, 1), "avg", True, False), normal((3, 4, 5))))

for mode in ("both", "subtractive", "divisive"):
    for across in (True, False):
        tag = "across" if across else "per_map"
        ROWS.append(OpRow(
            f"lcn_{mode}_{tag}",
            lambda x, mode=mode, across=across: nn.lcn(x, size=3, mode=mode, across_channels=across),
            lambda x, mode=mode, across=across: lcn_ref(x, 3, None, mode, across),
            scaled(5, normal((2, 2, 4, 5))), rtol=1e-3))


def _lcn_grad_reference(x, gy):
    from backends.numpy.lcn import lcn_grad  # the oracle kernel: cross-checked against torch autograd

    return lcn_grad(x.astype(np.float64), gy.astype(np.float64), 5, 1.5, "both", True, 1e-4)


ROWS += [
    OpRow("lcn_size5_sigma", lambda x: nn.lcn(x, size=5, sigma=1.5, eps=1e-3),
          lambda x: lcn_ref(x, 5, 1.5, eps=1e-3), scaled(5, normal((1, 3, 6, 5))), rtol=1e-3),
    OpRow("lcn_grad", lambda x, gy: LCNGrad(5, 1.5)(x, gy), _lcn_grad_reference, normal((1, 2, 5, 5), (1, 2, 5, 5)),
          rtol=1e-3),
    OpRow("prob_max_pool", lambda x: both(nn.probabilistic_max_pool(x, (2, 2))),
          lambda x: both_ref(prob_max_pool_ref(x, (2, 2))), normal((2, 2, 4, 4))),
    OpRow("prob_max_pool_2x3_3d", lambda x: both(nn.probabilistic_max_pool(x * 3, (2, 3))),
          lambda x: both_ref(prob_max_pool_ref(x * 3, (2, 3))), normal((2, 4, 6))),
    OpRow("prob_max_pool_grad", lambda x, gd, gp: ProbMaxPoolGrad((2, 2))(x, gd, gp),
          lambda x, gd, gp: prob_max_pool_grad_ref(x, gd, gp, (2, 2)),
          normal((1, 2, 4, 2), (1, 2, 4, 2), (1, 2, 2, 1))),
    OpRow("prob_max_pool_sample", lambda x, u: both(ProbMaxPoolSample((2, 2))(x, u)),
          lambda x, u: prob_max_pool_sample_ref(x, u, (2, 2)),
          lambda rng, dtype: [rng.standard_normal((3, 2, 4, 4)).astype(dtype), rng.uniform(0, 1, (3, 2, 2, 2))
                              .astype(dtype)], grad=False),
    OpRow("softmax", nn.softmax, softmax_ref, normal((3, 5))),
    OpRow("softmax_axis0_3d", lambda x: nn.softmax(x, axis=0), lambda x: softmax_ref(x, 0), normal((3, 2, 4))),
    OpRow("softmax_large", lambda x: nn.softmax(x * 100), lambda x: softmax_ref(x * 100), normal((2, 4)),
          grad=False),
    OpRow("log_softmax", nn.log_softmax, lambda x: np.log(softmax_ref(x)), normal((3, 5))),
    OpRow("log_softmax_axis1_3d", lambda x: nn.log_softmax(x, axis=1), lambda x: np.log(softmax_ref(x, 1)),
          normal((2, 3, 2))),
    OpRow("softmax_cross_entropy", lambda x, y: SoftmaxCrossEntropy()(x, y),
          lambda x, y: -np.log(softmax_ref(x))[np.arange(len(y)), y], with_labels((4, 5), 5)),
    OpRow("softmax_cross_entropy_large", lambda x, y: nn.softmax_cross_entropy(x * 1000, y),
          lambda x, y: (np.log(np.exp(x * 1000 - (x * 1000).max(1, keepdims=True)).sum(1)) + (x * 1000).max(1)
                        - (x * 1000)[np.arange(len(y)), y]), with_labels((4, 3), 3), grad=False),
    OpRow("categorical_crossentropy_int", lambda p, y: nn.categorical_crossentropy(p, y),
          lambda p, y: -np.log(p[np.arange(len(y)), y]),
          lambda rng, dtype: [rng.uniform(0.2, 1, (4, 3)).astype(dtype), rng.integers(0, 3, 4).astype("int32")]),
    OpRow("categorical_crossentropy_onehot", nn.categorical_crossentropy, lambda p, t: -(t * np.log(p)).sum(-1),
          lambda rng, dtype: [rng.uniform(0.2, 1, (4, 3)).astype(dtype), np.eye(3, dtype=dtype)[[0, 2, 1, 2]]]),
    OpRow("categorical_crossentropy_softmax", lambda x, y: nn.categorical_crossentropy(nn.softmax(x), y),
          lambda x, y: -np.log(softmax_ref(x))[np.arange(len(y)), y], with_labels((4, 5), 5)),
    OpRow("binary_crossentropy", nn.binary_crossentropy, lambda p, t: -(t * np.log(p) + (1 - t) * np.log(1 - p)),
          uniform(0.2, 0.8, (3, 4), (3, 4))),
    # rho = 0.125: a Python float constant is rounded to float32 before it meets a float64 tensor
    OpRow("kl_sparsity", lambda r: nn.kl_sparsity(0.125, r),
          lambda r: np.sum(0.125 * np.log(0.125 / r) + 0.875 * np.log(0.875 / (1 - r))), uniform(0.1, 0.9, (6,))),
    OpRow("kl_sparsity_tensor_rho", nn.kl_sparsity,
          lambda rho, r: np.sum(rho * np.log(rho / r) + (1 - rho) * np.log((1 - rho) / (1 - r))),
          uniform(0.1, 0.9, (5,), (5,))),
    OpRow("l1", nn.l1, lambda x: np.abs(x).sum(),
          lambda rng, dtype: [(np.sign(rng.standard_normal((3, 4))) * rng.uniform(0.2, 1, (3, 4))).astype(dtype)]),
    OpRow("l2", nn.l2, lambda x: (x * x).sum(), normal((3, 4))),
    OpRow("hard_sigmoid", nn.hard_sigmoid, lambda x: np.clip(0.2 * x + 0.5, 0, 1),
          lambda rng, dtype: [np.array([-4.0, -2.0, 0.3, 1.7, 3.1, 6.0], dtype)]),
    OpRow("dropout_deterministic", lambda x: nn.dropout(x, 0.5, None, deterministic=True), lambda x: x,
          normal((3, 4))),
]


def _hidden_sample(x, W, b):
    """An RBM's hidden units: Bernoulli samples of sigmoid(x @ W + b) (on the code generators
    one GemmBernoulli node: the samples drawn in the GEMM's kernel)."""
    import engine
    p = T.sigmoid(T.dot(x, W) + b)
    return engine.RandomStreams(seed=5).binomial(size=p.shape, p=p, dtype=x.dtype)


def _hidden_sample_ref(x, W, b):
    from engine import philox
    p = 1.0 / (1.0 + np.exp(-(x @ W + b)))
    return philox.binomial(philox.stream_key(5, 0), 0, p.shape, p, x.dtype)


ROWS.append(OpRow("rbm_hidden_sample", _hidden_sample, _hidden_sample_ref, normal((4, 3), (3, 8), (8,)), grad=False))
