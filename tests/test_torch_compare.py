"""Differential tests of the deep-learning ops against PyTorch (the ``compare`` extra).

Every check goes through ``engine.function`` (graph level) on every available backend: the
forward result and the gradients from ``engine.grad`` against torch's forward and autograd.
"""

from __future__ import annotations

import numpy as np
import pytest

import engine
import frontends.nn as nn
import frontends.tensor as T
from tests.backend_fixture import available_backends

torch = pytest.importorskip("torch")
F = torch.nn.functional

BACKENDS = available_backends()
TOL = {"float64": {"rtol": 1e-8, "atol": 1e-10}, "float32": {"rtol": 2e-4, "atol": 2e-5}}


def _sym(a: np.ndarray, name: str):
    return T.tensor(a.dtype.name, a.shape, name=name)


def kiln_value_and_grads(build, arrays: list, backend: str, seed: int = 0):
    """(output, grads of sum(output * r) w.r.t. every float input, r) for a fixed random r."""
    symbols = [_sym(a, f"in{i}") for i, a in enumerate(arrays)]
    out = build(*symbols)
    r_shape = engine.function(symbols, out, backend=backend, on_unused_input="ignore")(*arrays).shape
    r = np.random.default_rng(seed).standard_normal(r_shape).astype(out.dtype)
    r_sym = _sym(r, "r")
    floats = [s for s, a in zip(symbols, arrays) if a.dtype.kind == "f"]
    grads = engine.grad((out * r_sym).sum(), floats)
    results = engine.function([*symbols, r_sym], [out, *grads], backend=backend, on_unused_input="ignore")(*arrays, r)
    return results[0], results[1:], r


def torch_value_and_grads(fn, arrays: list, r: np.ndarray):
    tensors = [torch.tensor(a, requires_grad=a.dtype.kind == "f") for a in arrays]
    out = fn(*tensors)
    (out * torch.tensor(r)).sum().backward()
    return out.detach().numpy(), [t.grad.numpy() for t in tensors if t.dtype.is_floating_point]


def check(build, fn, arrays: list, backend: str, dtype: str = "float64", **tolerance) -> None:
    got, got_grads, r = kiln_value_and_grads(build, arrays, backend)
    want, want_grads = torch_value_and_grads(fn, arrays, r)
    tol = {**TOL[dtype], **tolerance}
    np.testing.assert_allclose(got, want, **tol, err_msg="forward")
    assert len(got_grads) == len(want_grads)
    for i, (g, w) in enumerate(zip(got_grads, want_grads)):
        np.testing.assert_allclose(g, w, **tol, err_msg=f"gradient of input {i}")


def randn(rng, *shape, dtype="float64"):
    return rng.standard_normal(shape).astype(dtype)


# -- convolution ---------------------------------------------------------------------------------

CONV_CASES = [  # x shape, w shape, kwargs
    ((2, 3, 9, 8), (4, 3, 3, 3), {}),
    ((2, 3, 9, 8), (4, 3, 3, 2), {"stride": (2, 3)}),
    ((2, 3, 9, 8), (4, 3, 3, 3), {"padding": (1, 2), "stride": 2}),
    ((2, 3, 9, 8), (4, 3, 3, 5), {"padding": "same"}),
    ((2, 3, 9, 8), (4, 3, 2, 3), {"padding": "full"}),
    ((2, 3, 9, 8), (4, 3, 3, 2), {"dilation": (2, 3), "padding": 2}),
    ((2, 4, 7, 7), (6, 2, 3, 3), {"groups": 2, "stride": 2, "padding": 1}),
    ((1, 6, 6, 5), (6, 1, 3, 3), {"groups": 6, "dilation": 2, "padding": "same"}),
    ((2, 3, 8, 7), (4, 3, 3, 2), {"filter_flip": True, "stride": (1, 2), "padding": 1}),
]


def _torch_conv(x, w, stride=1, padding="valid", dilation=1, groups=1, filter_flip=False):
    kh, kw = w.shape[2:]
    dh, dw = (dilation, dilation) if isinstance(dilation, int) else dilation
    if padding == "full":
        padding = (dh * (kh - 1), dw * (kw - 1))
    if filter_flip:
        w = torch.flip(w, [2, 3])
    return F.conv2d(x, w, stride=stride, padding=padding, dilation=dilation, groups=groups)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("x_shape,w_shape,kwargs", CONV_CASES, ids=[str(c[2]) for c in CONV_CASES])
def test_conv2d(backend, x_shape, w_shape, kwargs):
    rng = np.random.default_rng(0)
    arrays = [randn(rng, *x_shape), randn(rng, *w_shape)]
    check(lambda x, w: nn.conv2d(x, w, **kwargs), lambda x, w: _torch_conv(x, w, **kwargs), arrays, backend)


@pytest.mark.parametrize("backend", BACKENDS)
def test_conv2d_float32(backend):
    rng = np.random.default_rng(1)
    arrays = [randn(rng, 2, 3, 10, 9, dtype="float32"), randn(rng, 5, 3, 3, 3, dtype="float32")]
    check(lambda x, w: nn.conv2d(x, w, stride=2, padding=1), lambda x, w: F.conv2d(x, w, stride=2, padding=1),
          arrays, backend, "float32")


@pytest.mark.parametrize("backend", BACKENDS)
def test_conv2d_grad_ops_are_transposed_convolutions(backend):
    """conv2d_grad_input is conv_transpose2d; the gradients of the gradient ops match autograd's."""
    rng = np.random.default_rng(2)
    gy, w = randn(rng, 2, 4, 5, 4), randn(rng, 4, 3, 3, 3)
    x_shape = (2, 3, 9, 8)  # stride 2 with padding 1: output_padding (0, 1) in torch's terms
    check(lambda g, k: nn.conv2d_grad_input(g, k, x_shape, stride=2, padding=1),
          lambda g, k: F.conv_transpose2d(g, k, stride=2, padding=1, output_padding=(0, 1)), [gy, w], backend)
    x = randn(rng, *x_shape)
    check(lambda a, g: nn.conv2d_grad_weight(a, g, (4, 3, 3, 3), stride=2, padding=1),
          lambda a, g: torch.nn.grad.conv2d_weight(a, (4, 3, 3, 3), g, stride=2, padding=1), [x, gy], backend)


@pytest.mark.parametrize("backend", BACKENDS)
def test_conv2d_second_order(backend):
    """Double backprop through conv: d/dx of |dL/dW|^2, against torch autograd."""
    rng = np.random.default_rng(3)
    x0, w0, r = randn(rng, 2, 2, 6, 5), randn(rng, 3, 2, 3, 2), randn(rng, 2, 3, 2, 6)
    x, w = _sym(x0, "x"), _sym(w0, "w")
    y = nn.conv2d(x, w, stride=(2, 1), padding=(0, 1))
    gw = engine.grad((y * r).sum(), w)
    got = engine.function([x, w], engine.grad((gw ** 2).sum(), [x, w]), backend=backend)(x0, w0)
    xt, wt = torch.tensor(x0, requires_grad=True), torch.tensor(w0, requires_grad=True)
    yt = F.conv2d(xt, wt, stride=(2, 1), padding=(0, 1))
    (gwt,) = torch.autograd.grad((yt * torch.tensor(r)).sum(), wt, create_graph=True)
    want = torch.autograd.grad((gwt ** 2).sum(), [xt, wt], allow_unused=True)
    np.testing.assert_allclose(got[0], want[0].numpy(), **TOL["float64"])
    np.testing.assert_allclose(got[1], np.zeros_like(w0) if want[1] is None else want[1].numpy(), **TOL["float64"])


@pytest.mark.parametrize("backend", BACKENDS)
def test_locally_connected2d(backend):
    rng = np.random.default_rng(4)
    x, w = randn(rng, 2, 3, 7, 5), randn(rng, 3, 2, 4, 3, 3, 2)  # stride 2: (7-3)//2+1, (5-2)//2+1

    def torch_lc(x, w):
        cols = F.unfold(x, (3, 2), stride=2)  # (N, C*KH*KW, OH*OW)
        out = torch.einsum("ncp,pfc->nfp", cols, w.reshape(6, 4, 18))
        return out.reshape(2, 4, 3, 2)

    check(lambda a, b: nn.locally_connected2d(a, b, stride=2), torch_lc, [x, w], backend)


# -- pooling -------------------------------------------------------------------------------------

def distinct(rng, shape, dtype="float64"):
    n = int(np.prod(shape))
    return ((rng.permutation(n) - n / 2) * 0.1 + rng.uniform(0, 0.01, n)).reshape(shape).astype(dtype)


POOL_CASES = [  # ws, stride, padding, ignore_border
    ((2, 2), None, (0, 0), True),
    ((3, 3), (2, 2), (1, 1), True),
    ((3, 2), (1, 2), (1, 0), True),
    ((3, 3), (2, 2), (1, 1), False),
    ((2, 3), (2, 2), (0, 1), False),
]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("ws,stride,padding,ignore_border", POOL_CASES)
def test_max_pool(backend, ws, stride, padding, ignore_border):
    x = distinct(np.random.default_rng(5), (2, 3, 7, 8))
    check(lambda a: nn.pool2d(a, ws, stride, padding, "max", ignore_border),
          lambda a: F.max_pool2d(a, ws, stride or ws, padding, ceil_mode=not ignore_border), [x], backend)


@pytest.mark.parametrize("backend", BACKENDS)
def test_max_pool_ties_go_to_the_first_index(backend):
    x = np.zeros((1, 1, 4, 4))
    x[0, 0, 1, 1] = x[0, 0, 1, 0] = 1.0
    check(lambda a: nn.pool2d(a, (2, 2), (1, 1)), lambda a: F.max_pool2d(a, 2, 1), [x], backend)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("count_include_pad", [True, False])
@pytest.mark.parametrize("ws,stride,padding,ignore_border", POOL_CASES)
def test_avg_pool(backend, ws, stride, padding, ignore_border, count_include_pad):
    x = randn(np.random.default_rng(6), 2, 3, 7, 8)
    check(lambda a: nn.pool2d(a, ws, stride, padding, "avg", ignore_border, count_include_pad),
          lambda a: F.avg_pool2d(a, ws, stride or ws, padding, ceil_mode=not ignore_border,
                                 count_include_pad=count_include_pad), [x], backend)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("ws,stride", [((2, 2), None), ((3, 2), (1, 2)), ((3, 3), (2, 2))])
def test_l2_pool_vs_lp_pool2d(backend, ws, stride):
    x = randn(np.random.default_rng(7), 2, 3, 7, 8)
    check(lambda a: nn.pool2d(a, ws, stride, mode="l2"), lambda a: F.lp_pool2d(a, 2, ws, stride), [x], backend)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("mode", ["max", "avg"])
def test_pool_float32(backend, mode):
    x = distinct(np.random.default_rng(8), (2, 2, 6, 7), "float32")
    torch_fn = F.max_pool2d if mode == "max" else F.avg_pool2d
    check(lambda a: nn.pool2d(a, (3, 3), (2, 2), (1, 1), mode), lambda a: torch_fn(a, 3, 2, 1), [x], backend,
          "float32")


# -- softmax family ------------------------------------------------------------------------------

@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_softmax_and_log_softmax(backend, dtype):
    x = randn(np.random.default_rng(9), 4, 7, dtype=dtype) * 5
    check(nn.softmax, lambda a: F.softmax(a, -1), [x], backend, dtype)
    check(nn.log_softmax, lambda a: F.log_softmax(a, -1), [x], backend, dtype)
    x3 = randn(np.random.default_rng(10), 3, 4, 2, dtype=dtype)
    check(lambda a: nn.softmax(a, axis=1), lambda a: F.softmax(a, 1), [x3], backend, dtype)
    check(lambda a: nn.log_softmax(a, axis=0), lambda a: F.log_softmax(a, 0), [x3], backend, dtype)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_softmax_cross_entropy_vs_nll(backend, dtype):
    rng = np.random.default_rng(11)
    x, y = randn(rng, 6, 5, dtype=dtype) * 4, rng.integers(0, 5, 6)
    torch_fn = lambda a, b: F.cross_entropy(a, b, reduction="none")
    check(nn.softmax_cross_entropy, torch_fn, [x, y], backend, dtype)
    check(lambda a, b: nn.categorical_crossentropy(nn.softmax(a), b), torch_fn, [x, y], backend, dtype)
    check(lambda a, b: nn.categorical_crossentropy(nn.softmax(a), b).mean(),
          lambda a, b: F.nll_loss(F.log_softmax(a, -1), b), [x, y], backend, dtype)
    onehot = np.eye(5, dtype=dtype)[y]
    check(lambda a, t: nn.categorical_crossentropy(nn.softmax(a), t),
          lambda a, t: -(t * F.log_softmax(a, -1)).sum(-1), [x, onehot], backend, dtype)


@pytest.mark.parametrize("backend", BACKENDS)
def test_binary_crossentropy(backend):
    rng = np.random.default_rng(12)
    p, t = rng.uniform(0.05, 0.95, (4, 3)), rng.uniform(0, 1, (4, 3))
    check(nn.binary_crossentropy, lambda a, b: F.binary_cross_entropy(a, b, reduction="none"), [p, t], backend)


# -- LCN -----------------------------------------------------------------------------------------

def torch_lcn(x, size=9, sigma=None, mode="both", across_channels=True, eps=1e-4):
    """The DESIGN.md formula written with torch's conv2d."""
    n, c, h, w = x.shape
    sigma = size / 4.5 if sigma is None else sigma
    t = torch.arange(size, dtype=x.dtype) - size // 2
    g = torch.exp(-t * t / (2 * sigma * sigma))
    window = torch.outer(g, g)
    window = window / window.sum()
    if across_channels:
        kernel, groups = (window / c).expand(1, c, size, size), 1
    else:
        kernel, groups = window.expand(c, 1, size, size), c
    conv = lambda z: F.conv2d(z, kernel, padding=size // 2, groups=groups)
    v = x if mode == "divisive" else x - conv(x)
    if mode == "subtractive":
        return v
    s = torch.sqrt(conv(v * v))
    mean = s.mean(dim=(1, 2, 3), keepdim=True)
    return v / torch.clamp(torch.maximum(s, mean), min=eps)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("mode", ["both", "subtractive", "divisive"])
@pytest.mark.parametrize("across_channels", [True, False])
def test_lcn(backend, mode, across_channels):
    x = randn(np.random.default_rng(13), 2, 3, 8, 7)
    kwargs = {"size": 5, "mode": mode, "across_channels": across_channels}
    check(lambda a: nn.lcn(a, **kwargs), lambda a: torch_lcn(a, **kwargs), [x], backend, rtol=1e-7, atol=1e-9)


@pytest.mark.parametrize("backend", BACKENDS)
def test_lcn_default_window_float32(backend):
    x = randn(np.random.default_rng(14), 1, 2, 12, 11, dtype="float32")
    check(nn.lcn, torch_lcn, [x], backend, "float32", rtol=1e-3, atol=1e-4)


# -- probabilistic max-pooling -------------------------------------------------------------------

@pytest.mark.parametrize("backend", BACKENDS)
def test_probabilistic_max_pool(backend):
    x = randn(np.random.default_rng(15), 2, 3, 4, 6) * 3

    def torch_pmp(a):
        blocks = a.reshape(2, 3, 2, 2, 2, 3).permute(0, 1, 2, 4, 3, 5).reshape(2, 3, 2, 2, 6)
        probs = F.softmax(torch.cat([blocks, torch.zeros_like(blocks[..., :1])], -1), -1)
        det = probs[..., :6].reshape(2, 3, 2, 2, 2, 3).permute(0, 1, 2, 4, 3, 5).reshape(2, 3, 4, 6)
        return torch.cat([det.reshape(-1), (1 - probs[..., 6]).reshape(-1)])

    def kiln_pmp(a):
        det, pool = nn.probabilistic_max_pool(a, (2, 3))
        return T.concatenate([det.flatten(), pool.flatten()])

    check(kiln_pmp, torch_pmp, [x], backend)
