"""Kiln side by side with numpy, PyTorch (CPU), PyTensor and tinygrad: issue 6's workloads.

    python benchmarks/run.py [--quick] [--only NAME] [--backend llvm|cuda] [--calls N]

Each workload is a small function returning its engines: a builder per engine that compiles
(for Kiln: ``engine.function(..., backend=...)``) and returns the zero-argument call to time.
An engine that cannot run a workload (not installed, the op is missing, compilation fails)
prints ``n/a`` and its reason; nothing else is skipped. Protocol (benchmarks/README.md): every
engine gets the same threads (2, or --threads); OpenBLAS is capped to one thread only while
Kiln is timed (Kiln's kernels never call BLAS, and its idle pool would otherwise fight spinning
OpenBLAS workers); each time is the median of >= 10 calls (--quick: 3) after warm-up calls
for WARMUP_S (at least one), every engine alike; engines rest 0.2 s between
each other so spin-waiting worker threads go back to sleep (OpenBLAS's spin for ~0.1 s after
their last call, capped or not: a Kiln product timed right after numpy's ran 2-5x slower).
Ratio = the best peer's time / Kiln's time (> 1: Kiln is faster).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

ENGINES = ("kiln", "numpy", "torch", "torch.compile", "pytensor", "tinygrad")
PEERS = ENGINES[1:]


class NA(Exception):
    """An engine cannot run this workload; the message says why."""


#: warm-up of every row, for every engine alike: after the rest between
#: engines an idle core runs slowly for its first ~30 ms (the VM's vCPU and clock ramp up: a
#: 500x800x500 product took 11, then ~3 ms a call for 30 ms, then 1.4 ms), longer than one
#: warm-up call and ten timed calls of a sub-millisecond step together
WARMUP_S = 0.05


@dataclass
class Workload:
    name: str
    engines: dict                 # engine -> builder() -> zero-argument callable
    flops: float | None = None    # per call, for GFLOP/s
    target: tuple | None = None   # (peer, ratio): the target
    unit: str = "ms"
    notes: list = field(default_factory=list)
    extra: dict = field(default_factory=dict)   # other Kiln variants, timed like Kiln, noted
    warmup_s: float = WARMUP_S    # warm-up: calls for at least this long (at least one)


WORKLOADS = []   # (name, fn(ctx) -> Workload | list[Workload])


def workload(name):
    def register(fn):
        WORKLOADS.append((name, fn))
        return fn
    return register


@dataclass
class Ctx:
    quick: bool
    backend: str
    threads: int
    calls: int
    rng: np.random.Generator = field(default_factory=lambda: np.random.default_rng(0))

    def randn(self, *shape, scale=1.0):
        return (self.rng.standard_normal(shape) * scale).astype("float32")

    def uniform(self, *shape):
        return self.rng.random(shape, dtype="float32")


# ----------------------------------------------------------------------------- engines

#: --backend cuda: the torch peers run on the same GPU (PyTorch-CUDA, cuDNN), timed to the end
#: of their kernels; set by main()
ON_GPU = {"torch": False}


class _TorchOnGpu:
    """torch with tensors made on the GPU: from_numpy copies there, factories default there."""

    def __init__(self, torch):
        self._torch = torch

    def __getattr__(self, name):
        return getattr(self._torch, name)

    def from_numpy(self, a):
        return self._torch.from_numpy(a).cuda()


def need_torch(threads):
    try:
        import torch
    except Exception as e:  # noqa: BLE001
        raise NA(f"torch not importable: {type(e).__name__}") from None
    torch.set_num_threads(threads)
    if ON_GPU["torch"]:
        if not torch.cuda.is_available():
            raise NA("torch has no CUDA device")
        torch.set_default_device("cuda")
        return _TorchOnGpu(torch)
    return torch


def _synced(fn, sync=None):
    """fn, then wait for the GPU (torch's by default): on --backend cuda calls return early."""
    if sync is None:
        import torch
        sync = torch.cuda.synchronize

    def call():
        out = fn()
        sync()
        return out
    return call


def need_pytensor():
    try:
        import pytensor
        import pytensor.tensor as pt
    except Exception as e:  # noqa: BLE001
        raise NA(f"pytensor not importable: {type(e).__name__}") from None
    pytensor.config.floatX = "float32"
    return pytensor, pt


def pytensor_rng(seed):
    """PyTensor's (Theano-style) RandomStream, without its deprecation warning."""
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from pytensor.tensor.random.utils import RandomStream
        return RandomStream(seed)


def need_tinygrad(threads):
    """tinygrad's (Tensor, TinyJit) on its default device (CPU: C through clang) with ``threads``
    threads; n/a where it is not installed or cannot compile."""
    os.environ.setdefault("NUM_CPU_THREADS", str(threads))  # read when tinygrad is imported
    try:
        from tinygrad import Tensor, TinyJit
        Tensor([1.0]).realize()
    except Exception as e:  # noqa: BLE001
        raise NA("tinygrad not installed" if isinstance(e, ImportError) else _reason(e)) from None
    return Tensor, TinyJit


def tiny_call(fn):
    """A timed tinygrad call: TinyJit replays the captured kernels from the third call on, and
    they run on tinygrad's worker threads, so each call waits for the device."""
    from tinygrad import Device
    dev = Device[Device.DEFAULT]

    def call():
        out = fn()
        dev.synchronize()
        return out
    for _ in range(2):  # the runs TinyJit traces and captures: compile time, not run time
        call()
    return call


def kiln_function(ctx, inputs, outputs, updates=None, givens=None):
    """engine.function on the chosen backend; any failure is n/a with its first line."""
    import engine
    try:
        return engine.function(inputs, outputs, updates=updates, givens=givens, backend=ctx.backend)
    except Exception as e:  # noqa: BLE001
        raise NA(_reason(e)) from None


def _reason(e):
    msg = str(e).strip().splitlines()[0] if str(e).strip() else ""
    return f"{type(e).__name__}: {msg}"[:110]


# ----------------------------------------------------------------------------- GEMM

def _kiln_gemm(ctx, a, b):
    """T.dot through engine.function (MatMul -> the generated GEMM of engine/lowering/gemm.py)."""
    import frontends.tensor as T
    x, y = T.matrix("a"), T.matrix("b")
    f = kiln_function(ctx, [x, y], T.dot(x, y))
    _check(f(a, b), a.astype("float64") @ b)
    return lambda: f(a, b)


def _check(got, want):
    err = float(np.abs(np.asarray(got, "float64") - want).max()) / max(1.0, float(np.abs(want).max()))
    if not err < 1e-4:
        raise NA(f"wrong result (relative error {err:.1e})")


def gemm_workload(ctx, m, k, n, target=None):
    a, b = ctx.randn(m, k), ctx.randn(k, n)

    def torch_():
        torch = need_torch(ctx.threads)
        ta, tb = torch.from_numpy(a), torch.from_numpy(b)
        return lambda: torch.mm(ta, tb)

    def pytensor_():
        pytensor, pt = need_pytensor()
        x, y = pt.matrix("a", dtype="float32"), pt.matrix("b", dtype="float32")
        f = pytensor.function([x, y], pt.dot(x, y))
        return lambda: f(a, b)

    def tiny_():
        Tensor, TinyJit = need_tinygrad(ctx.threads)
        ta, tb = Tensor(a).realize(), Tensor(b).realize()
        mm = TinyJit(lambda p, q: (p @ q).realize())
        return tiny_call(lambda: mm(ta, tb))

    return Workload(f"sgemm {m}x{k}x{n}", {
        "kiln": lambda: _kiln_gemm(ctx, a, b),
        "numpy": lambda: (lambda: a @ b),
        "torch": torch_, "pytensor": pytensor_, "tinygrad": tiny_,
    }, flops=2.0 * m * n * k, target=target)


@workload("sgemm")
def sgemm(ctx):
    if ctx.quick:
        return [gemm_workload(ctx, 256, 256, 256, ("numpy", 0.9)),
                gemm_workload(ctx, 20, 784, 500)]
    return [gemm_workload(ctx, 1024, 1024, 1024, ("numpy", 0.9)),
            gemm_workload(ctx, 2048, 2048, 2048, ("numpy", 0.9)),
            gemm_workload(ctx, 20, 784, 500), gemm_workload(ctx, 100, 784, 500),
            gemm_workload(ctx, 500, 800, 500)]


# ----------------------------------------------------------------------------- conv2d

def conv_workloads(ctx, label, xs, ws):
    x, w = ctx.randn(*xs), ctx.randn(*ws, scale=0.1)
    oh, ow = xs[2] - ws[2] + 1, xs[3] - ws[3] + 1
    gy = ctx.randn(xs[0], ws[0], oh, ow)
    flops = 2.0 * xs[0] * ws[0] * ws[1] * ws[2] * ws[3] * oh * ow
    no_pt = "PyTensor 3 has no conv2d op"

    def kiln(which):
        def build():
            import frontends.nn as nn
            import frontends.tensor as T
            X, W, G = T.tensor4("x"), T.tensor4("w"), T.tensor4("gy")
            if which == "fwd":
                f = kiln_function(ctx, [X, W], nn.conv2d(X, W))
                return lambda: f(x, w)
            if which == "grad input":
                f = kiln_function(ctx, [G, W], nn.conv2d_grad_input(G, W, xs))
                return lambda: f(gy, w)
            f = kiln_function(ctx, [X, G], nn.conv2d_grad_weight(X, G, ws))
            return lambda: f(x, gy)
        return build

    def torch_(which):
        def build():
            torch = need_torch(ctx.threads)
            import torch.nn.functional as F
            tx, tw, tg = (torch.from_numpy(v) for v in (x, w, gy))
            if which == "fwd":
                return lambda: F.conv2d(tx, tw)
            if which == "grad input":
                return lambda: torch.nn.grad.conv2d_input(xs, tw, tg)
            return lambda: torch.nn.grad.conv2d_weight(tx, ws, tg)
        return build

    def tiny_(which):
        def build():
            Tensor, TinyJit = need_tinygrad(ctx.threads)
            tx, tw, tg = (Tensor(v).realize() for v in (x, w, gy))
            if which == "fwd":
                step = TinyJit(lambda a, b: a.conv2d(b).realize())
                return tiny_call(lambda: step(tx, tw))
            # a gradient of conv2d, as tinygrad's autograd derives it
            wrt = 0 if which == "grad input" else 1

            def grad(a, b, g):
                return (a.conv2d(b) * g).sum().gradient((a, b)[wrt])[0].realize()
            step = TinyJit(grad)
            return tiny_call(lambda: step(tx, tw, tg))
        return build

    def pt_():
        raise NA(no_pt)
    return [Workload(f"conv2d {label} {which}", {"kiln": kiln(which), "torch": torch_(which),
                                                 "pytensor": pt_, "tinygrad": tiny_(which)},
                     flops=flops, target=("torch", 1.0))
            for which in ("fwd", "grad input", "grad weight")]


@workload("conv2d")
def conv2d(ctx):
    b = 8 if ctx.quick else None
    return (conv_workloads(ctx, "64x3x32x32*64x3x5x5", (b or 64, 3, 32, 32), (64, 3, 5, 5)) +
            conv_workloads(ctx, "500x20x12x12*50x20x5x5", (b or 500, 20, 12, 12), (50, 20, 5, 5)))


# ----------------------------------------------------------------------------- pooling

def pool_workloads(ctx, ws, st):
    shape = (8, 16, 28, 28) if ctx.quick else (64, 64, 28, 28)
    x = ctx.randn(*shape)
    oh = (shape[2] - ws) // st + 1
    gy = ctx.randn(shape[0], shape[1], oh, oh)
    label = f"maxpool {ws}x{ws}/{st} {'x'.join(map(str, shape))}"
    no_pt = "PyTensor 3 has no pool2d op"

    def kiln(bwd):
        def build():
            import engine
            import frontends.nn as nn
            import frontends.tensor as T
            X, G = T.tensor4("x"), T.tensor4("gy")
            y = nn.pool2d(X, ws=(ws, ws), stride=(st, st), mode="max")
            if not bwd:
                f = kiln_function(ctx, [X], y)
                return lambda: f(x)
            gx = engine.grad(T.sum(y * G), X)
            f = kiln_function(ctx, [X, G], [y, gx])
            return lambda: f(x, gy)
        return build

    def torch_(bwd):
        def build():
            torch = need_torch(ctx.threads)
            import torch.nn.functional as F
            tg = torch.from_numpy(gy)
            if not bwd:
                tx = torch.from_numpy(x)
                return lambda: F.max_pool2d(tx, ws, st)

            def step():
                tx = torch.from_numpy(x).requires_grad_()
                y = F.max_pool2d(tx, ws, st)
                y.backward(tg)
                return y, tx.grad
            return step
        return build

    def numpy_():
        from numpy.lib.stride_tricks import sliding_window_view
        if ws == st and shape[2] % ws == 0:
            n, c, h, w = shape
            return lambda: x.reshape(n, c, h // ws, ws, w // ws, ws).max(axis=(3, 5))
        return lambda: sliding_window_view(x, (ws, ws), axis=(2, 3))[:, :, ::st, ::st].max(axis=(4, 5))

    def tiny_(bwd):
        def build():
            Tensor, TinyJit = need_tinygrad(ctx.threads)
            tx, tg = Tensor(x).realize(), Tensor(gy).realize()
            if not bwd:
                step = TinyJit(lambda t: t.max_pool2d((ws, ws), stride=st).realize())
                return tiny_call(lambda: step(tx))

            def fwd_bwd(t, g):
                y = t.max_pool2d((ws, ws), stride=st)
                return y.realize(), (y * g).sum().gradient(t)[0].realize()
            step = TinyJit(fwd_bwd)
            return tiny_call(lambda: step(tx, tg))
        return build

    def pt_():
        raise NA(no_pt)
    return [Workload(f"{label} fwd", {"kiln": kiln(False), "numpy": numpy_, "torch": torch_(False),
                                      "pytensor": pt_, "tinygrad": tiny_(False)}, target=("tinygrad", 1.0)),
            Workload(f"{label} fwd+bwd", {"kiln": kiln(True), "torch": torch_(True), "pytensor": pt_,
                                          "tinygrad": tiny_(True)}, target=("torch", 3.0))]


@workload("pool")
def pool(ctx):
    return pool_workloads(ctx, 2, 2) + pool_workloads(ctx, 3, 2)


# ----------------------------------------------------------------------------- LCN

def torch_lcn(torch, x, size=9, sigma=None, eps=1e-4):
    """LCN (DESIGN.md) written with conv2d, as a PyTorch user would."""
    import torch.nn.functional as F
    sigma = size / 4.5 if sigma is None else sigma
    r = size // 2
    t = torch.arange(-r, r + 1, dtype=torch.float64)
    g = torch.exp(-t * t / (2 * sigma * sigma))
    w2 = g[:, None] * g[None, :]
    c = x.shape[1]
    w = (w2[None, None] / (w2.sum() * c)).repeat(1, c, 1, 1).to(x.dtype)
    v = x - F.conv2d(x, w, padding=r)
    s = torch.sqrt(F.conv2d(v * v, w, padding=r))
    cm = s.mean(dim=(1, 2, 3), keepdim=True)
    return v / torch.maximum(torch.maximum(s, cm), torch.tensor(eps, dtype=x.dtype))


@workload("lcn")
def lcn(ctx):
    shape = (8, 16, 28, 28) if ctx.quick else (64, 64, 28, 28)
    x = ctx.randn(*shape)
    out = []
    for bwd in (False, True):
        def kiln(bwd=bwd):
            import engine
            import frontends.nn as nn
            import frontends.tensor as T
            X = T.tensor4("x")
            y = nn.lcn(X, 9)
            if not bwd:
                f = kiln_function(ctx, [X], y)
                return lambda: f(x)
            f = kiln_function(ctx, [X], [y, engine.grad(T.sum(y), X)])
            return lambda: f(x)

        def torch_(bwd=bwd):
            torch = need_torch(ctx.threads)
            if not bwd:
                tx = torch.from_numpy(x)
                return lambda: torch_lcn(torch, tx)

            def step():
                tx = torch.from_numpy(x).requires_grad_()
                y = torch_lcn(torch, tx)
                y.sum().backward()
                return y, tx.grad
            return step

        def pt_():
            raise NA("PyTensor 3 has no conv2d op")
        out.append(Workload(f"lcn 9x9 {'x'.join(map(str, shape))} {'fwd+bwd' if bwd else 'fwd'}",
                            {"kiln": kiln, "torch": torch_, "pytensor": pt_}, target=("torch", 5.0)))
    return out


# ----------------------------------------------------------------------------- RBM CD-1

def _sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def _softplus(z):
    return np.logaddexp(np.float32(0), z)


@workload("rbm")
def rbm(ctx):
    out = []
    nv, nh, lr = 784, 500, 0.1
    for batch in ((20,) if ctx.quick else (20, 100)):
        x = (ctx.uniform(batch, nv) > 0.5).astype("float32")
        W0 = ctx.randn(nv, nh, scale=0.01)

        def kiln(x=x, W0=W0):
            import frontends.tensor as T
            from frontends.models import RBM
            X = T.matrix("x")
            model = RBM(X, n_visible=nv, n_hidden=nh, W=W0.copy(), rng=1)
            cost, updates = model.get_cost_updates(lr=lr, k=1)
            f = kiln_function(ctx, [X], cost, updates=updates)
            return lambda: f(x)

        def numpy_(x=x, W0=W0):
            W, hb, vb = W0.copy(), np.zeros(nh, "f4"), np.zeros(nv, "f4")
            r = np.random.default_rng(1)
            lr32 = np.float32(lr)

            def step():
                nonlocal W, hb, vb
                ph = _sigmoid(x @ W + hb)
                h = (r.random(ph.shape, dtype="f4") < ph).astype("f4")
                pre_v = h @ W.T + vb
                v = (r.random(pre_v.shape, dtype="f4") < _sigmoid(pre_v)).astype("f4")
                ph1 = _sigmoid(v @ W + hb)
                cost = np.mean(np.sum(x * -_softplus(-pre_v) + (1 - x) * -_softplus(pre_v), axis=1))
                n = np.float32(x.shape[0])
                W = W + lr32 * (x.T @ ph - v.T @ ph1) / n
                hb = hb + lr32 * (ph - ph1).mean(0)
                vb = vb + lr32 * (x - v).mean(0)
                return cost
            return step

        def torch_(x=x, W0=W0):
            torch = need_torch(ctx.threads)
            tx = torch.from_numpy(x)
            W, hb, vb = torch.from_numpy(W0.copy()), torch.zeros(nh), torch.zeros(nv)
            F = torch.nn.functional

            @torch.no_grad()
            def step():
                ph = torch.sigmoid(tx @ W + hb)
                h = torch.bernoulli(ph)
                pre_v = h @ W.T + vb
                v = torch.bernoulli(torch.sigmoid(pre_v))
                ph1 = torch.sigmoid(v @ W + hb)
                cost = torch.mean(torch.sum(tx * -F.softplus(-pre_v) + (1 - tx) * -F.softplus(pre_v), 1))
                n = tx.shape[0]
                W.add_((tx.T @ ph - v.T @ ph1), alpha=lr / n)
                hb.add_((ph - ph1).mean(0), alpha=lr)
                vb.add_((tx - v).mean(0), alpha=lr)
                return cost
            return step

        def pytensor_(x=x, W0=W0):
            pytensor, pt = need_pytensor()
            srng = pytensor_rng(1)
            X = pt.matrix("x", dtype="float32")
            W = pytensor.shared(W0.copy())
            hb, vb = pytensor.shared(np.zeros(nh, "f4")), pytensor.shared(np.zeros(nv, "f4"))
            sig = pt.sigmoid

            def free_energy(v):
                return -pt.dot(v, vb) - pt.sum(pt.softplus(pt.dot(v, W) + hb), axis=1)
            ph = sig(pt.dot(X, W) + hb)
            h = pt.cast(srng.binomial(size=ph.shape, n=1, p=ph), "float32")
            pre_v = pt.dot(h, W.T) + vb
            v = pt.cast(srng.binomial(size=pre_v.shape, n=1, p=sig(pre_v)), "float32")
            cost = pt.mean(free_energy(X)) - pt.mean(free_energy(v))
            grads = pytensor.grad(cost, [W, hb, vb], consider_constant=[v])
            mon = pt.mean(pt.sum(X * pt.log(sig(pre_v)) + (1 - X) * pt.log(1 - sig(pre_v)), axis=1))
            f = pytensor.function([X], mon, updates=[(p, p - np.float32(lr) * g)
                                                     for p, g in zip([W, hb, vb], grads)])
            return lambda: f(x)

        flops = 2.0 * 5 * batch * nv * nh
        out.append(Workload(f"rbm cd-1 784x500 batch {batch}",
                            {"kiln": kiln, "numpy": numpy_, "torch": torch_, "pytensor": pytensor_},
                            flops=flops, target=("numpy", 1.5)))
    return out


# ----------------------------------------------------------------------------- dA

@workload("dae")
def dae(ctx):
    nv, nh, lr, batch, corruption = 784, 500, 0.1, 20, 0.3
    x = ctx.uniform(batch, nv)
    W0 = ctx.randn(nv, nh, scale=0.01)

    def kiln():
        import frontends.tensor as T
        from frontends.models import DenoisingAutoencoder
        X = T.matrix("x")
        model = DenoisingAutoencoder(X, n_visible=nv, n_hidden=nh, W=W0.copy(), rng=1)
        cost, updates = model.get_cost_updates(corruption_level=corruption, learning_rate=lr)
        f = kiln_function(ctx, [X], cost, updates=updates)
        return lambda: f(x)

    def numpy_():
        W, b, bp = W0.copy(), np.zeros(nh, "f4"), np.zeros(nv, "f4")
        r = np.random.default_rng(1)
        lr32, n = np.float32(lr), np.float32(batch)

        def step():
            nonlocal W, b, bp
            tilde = x * (r.random(x.shape, dtype="f4") >= np.float32(corruption))
            y = _sigmoid(tilde @ W + b)
            pre_z = y @ W.T + bp
            cost = np.mean(np.sum(_softplus(pre_z) - x * pre_z, axis=1))
            dz = (_sigmoid(pre_z) - x) / n
            dy = (dz @ W) * y * (1 - y)
            W = W - lr32 * (tilde.T @ dy + dz.T @ y)
            b = b - lr32 * dy.sum(0)
            bp = bp - lr32 * dz.sum(0)
            return cost
        return step

    def torch_():
        torch = need_torch(ctx.threads)
        tx = torch.from_numpy(x)
        W = torch.from_numpy(W0.copy()).requires_grad_()
        b, bp = torch.zeros(nh, requires_grad=True), torch.zeros(nv, requires_grad=True)
        F = torch.nn.functional

        def step():
            tilde = tx * torch.bernoulli(torch.full_like(tx, 1 - corruption))
            y = torch.sigmoid(tilde @ W + b)
            pre_z = y @ W.T + bp
            cost = torch.mean(torch.sum(F.softplus(pre_z) - tx * pre_z, 1))
            gW, gb, gbp = torch.autograd.grad(cost, [W, b, bp])
            with torch.no_grad():
                W.sub_(gW, alpha=lr)
                b.sub_(gb, alpha=lr)
                bp.sub_(gbp, alpha=lr)
            return cost
        return step

    def pytensor_():
        pytensor, pt = need_pytensor()
        srng = pytensor_rng(1)
        X = pt.matrix("x", dtype="float32")
        W = pytensor.shared(W0.copy())
        b, bp = pytensor.shared(np.zeros(nh, "f4")), pytensor.shared(np.zeros(nv, "f4"))
        tilde = pt.cast(srng.binomial(size=X.shape, n=1, p=1 - corruption), "float32") * X
        y = pt.sigmoid(pt.dot(tilde, W) + b)
        pre_z = pt.dot(y, W.T) + bp
        cost = pt.mean(pt.sum(pt.softplus(pre_z) - X * pre_z, axis=1))
        grads = pytensor.grad(cost, [W, b, bp])
        f = pytensor.function([X], cost, updates=[(p, p - np.float32(lr) * g)
                                                  for p, g in zip([W, b, bp], grads)])
        return lambda: f(x)

    return Workload("dae sgd 784x500 tied batch 20", {"kiln": kiln, "numpy": numpy_, "torch": torch_,
                                                      "pytensor": pytensor_},
                    flops=2.0 * 4 * batch * nv * nh, target=("numpy", 1.5))


# ----------------------------------------------------------------------------- LeNet

LENET_SCRIPT = r"""
import json, sys, time
sys.path.insert(0, {root!r})
import numpy as np
t0 = time.perf_counter()
import engine
import frontends.tensor as T
from frontends.models import LeNet
from frontends.updates import sgd
x, y = T.matrix("x"), T.lvector("y")
net = LeNet(x, rng=0)
cost = net.negative_log_likelihood(y)
t1 = time.perf_counter()
f = engine.function([x, y], cost, updates=sgd(cost, net.params, 0.1), backend={backend!r})
t2 = time.perf_counter()
print(json.dumps({{"import_build_s": t1 - t0, "compile_s": t2 - t1}}))
"""


def kiln_lenet_step(ctx, batch, x, y):
    import frontends.tensor as T
    from frontends.models import LeNet
    from frontends.updates import sgd
    X, Y = T.matrix("x"), T.lvector("y")
    net = LeNet(X, rng=0)
    cost = net.negative_log_likelihood(Y)
    f = kiln_function(ctx, [X, Y], cost, updates=sgd(cost, net.params, 0.1))
    return lambda: f(x, y)


def torch_lenet(torch):
    nn = torch.nn
    return nn.Sequential(nn.Conv2d(1, 20, 5), nn.MaxPool2d(2), nn.Tanh(), nn.Conv2d(20, 50, 5),
                         nn.MaxPool2d(2), nn.Tanh(), nn.Flatten(), nn.Linear(800, 500), nn.Tanh(),
                         nn.Linear(500, 10), nn.LogSoftmax(dim=1))


def tiny_lenet_step(ctx, batch, x, y):
    """The same LeNet-5 SGD step in tinygrad (its layers and optimizer, TinyJit)."""
    def build():
        Tensor, TinyJit = need_tinygrad(ctx.threads)
        from tinygrad import nn
        from tinygrad.helpers import Context
        layers = [nn.Conv2d(1, 20, 5), nn.Conv2d(20, 50, 5), nn.Linear(800, 500), nn.Linear(500, 10)]
        c1, c2, l1, l2 = layers
        opt = nn.optim.SGD(nn.state.get_parameters(layers), lr=0.1)
        tx, ty = Tensor(x).reshape(batch, 1, 28, 28).realize(), Tensor(y).realize()

        @TinyJit
        def step(images, labels):
            with Context(TRAINING=1):  # tinygrad's optimizers refuse to step outside training
                h = c1(images).max_pool2d((2, 2)).tanh()
                h = c2(h).max_pool2d((2, 2)).tanh().flatten(1)
                loss = l2(l1(h).tanh()).sparse_categorical_crossentropy(labels)  # takes logits
                opt.zero_grad()
                loss.backward()
                opt.step()
                return loss.realize()
        return tiny_call(lambda: step(tx, ty))
    return build


@workload("lenet")
def lenet(ctx):
    batch = 50 if ctx.quick else 500
    x = ctx.uniform(batch, 784)
    y = ctx.rng.integers(0, 10, batch).astype("int64")

    def torch_step(compiled):
        def build():
            torch = need_torch(ctx.threads)
            model = torch_lenet(torch)
            opt = torch.optim.SGD(model.parameters(), lr=0.1)
            tx, ty = torch.from_numpy(x).reshape(batch, 1, 28, 28), torch.from_numpy(y)

            def step():
                opt.zero_grad()
                loss = torch.nn.functional.nll_loss(model(tx), ty)
                loss.backward()
                opt.step()
                return loss
            if not compiled:
                return step
            if ctx.quick:
                raise NA("skipped in --quick (compiles for minutes)")
            try:
                fn = torch.compile(step)
                fn()
            except Exception as e:  # noqa: BLE001
                raise NA(_reason(e)) from None
            return fn
        return build

    def pt_():
        raise NA("PyTensor 3 has no conv2d/pool2d ops")
    return Workload(f"lenet-5 train step batch {batch}", {
        "kiln": lambda: kiln_lenet_step(ctx, batch, x, y), "torch": torch_step(False),
        "torch.compile": torch_step(True), "pytensor": pt_, "tinygrad": tiny_lenet_step(ctx, batch, x, y)},
        target=("torch", 1.5))


# ----------------------------------------------------------------------------- overheads

@workload("overhead")
def overhead(ctx):
    x = ctx.randn(10)

    def kiln():
        import frontends.tensor as T
        X = T.vector("x")
        f = kiln_function(ctx, [X], X + 1)
        return lambda: f(x)

    def torch_():
        torch = need_torch(ctx.threads)
        tx = torch.from_numpy(x)
        return lambda: tx + 1

    def pytensor_():
        pytensor, pt = need_pytensor()
        X = pt.vector("x", dtype="float32")
        f = pytensor.function([X], X + 1)
        return lambda: f(x)
    return Workload("call overhead: x + 1, 10 floats", {
        "kiln": kiln, "numpy": lambda: (lambda: x + 1), "torch": torch_, "pytensor": pytensor_},
        unit="us")


def compile_times(ctx):
    """Cold and warm compile of the LeNet training step, each in a fresh process: cold = an
    empty compile cache, warm = the cache the cold run filled. Kiln's modules are byte-compiled
    first, as ``pip install`` does, so neither run times Python compiling Kiln's sources."""
    script = LENET_SCRIPT.format(root=str(ROOT), backend=ctx.backend)
    with tempfile.TemporaryDirectory(prefix="kiln-bench-cache-") as cache:
        env = dict(os.environ, KILN_CACHE_DIR=cache, KILN_NUM_THREADS=str(ctx.threads),
                   PYTHONPYCACHEPREFIX=os.path.join(cache, "pyc"))  # not into the checkout
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        subprocess.run([sys.executable, "-m", "compileall", "-q", *(str(ROOT / d) for d in ("engine", "frontends",
                        "backends"))], env=env, capture_output=True, timeout=300)
        out = {}
        for kind in ("cold", "warm"):
            p = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env,
                               timeout=900)
            if p.returncode != 0:
                lines = [ln for ln in p.stderr.strip().splitlines() if ln.strip()]
                return None, (lines[-1] if lines else f"exit {p.returncode}")[:110]
            out[kind] = json.loads(p.stdout.strip().splitlines()[-1])["compile_s"]
        return out, None


# ----------------------------------------------------------------------------- timing

def blas_cap():
    """A context capping OpenBLAS (and other BLAS pools) to one thread."""
    try:
        from threadpoolctl import threadpool_limits
        return threadpool_limits(1, user_api="blas")
    except ImportError:  # pragma: no cover
        import contextlib
        return contextlib.nullcontext()




def time_calls(fn, calls, warmup_s=0.0):
    t0 = time.perf_counter()
    fn()  # warm-up: at least one call, and calls for warmup_s
    while time.perf_counter() - t0 < warmup_s:
        fn()
    ts = []
    for _ in range(calls):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts)


def run_workload(wl, ctx, rest):
    """{engine: seconds | NA} for one workload."""
    res = {}
    for name in ENGINES:
        builder = wl.engines.get(name)
        if builder is None:
            continue
        time.sleep(rest)
        try:
            if name == "kiln":
                with blas_cap():
                    fn = builder()
                    if ctx.backend == "cuda":  # a call with no outputs returns before its kernels end
                        from backends import get_backend
                        fn = _synced(fn, get_backend("cuda").executor.synchronize)
                    t = time_calls(fn, ctx.calls, wl.warmup_s)
                note = getattr(fn, "note", None)
                if note:
                    wl.notes.append(f"kiln: {note}")
            else:
                fn = builder()
                if ON_GPU["torch"] and name.startswith("torch"):
                    fn = _synced(fn)
                t = time_calls(fn, ctx.calls, wl.warmup_s)
            res[name] = t
        except NA as e:
            res[name] = e
        except Exception as e:  # noqa: BLE001  (a peer crashing is a row entry, not a crash)
            if os.environ.get("KILN_BENCH_TRACEBACK"):
                traceback.print_exc()
            res[name] = NA(_reason(e))
    return res


def run_extras(wl, ctx, rest, res):
    peers = {n: t for n, t in res.items() if n != "kiln" and not isinstance(t, NA)}
    for label, builder in wl.extra.items():
        time.sleep(rest)
        try:
            with blas_cap():
                t = time_calls(builder(), ctx.calls, wl.warmup_s)
        except NA as e:
            wl.notes.append(f"{label}: n/a ({e})")
            continue
        except Exception as e:  # noqa: BLE001
            wl.notes.append(f"{label}: n/a ({_reason(e)})")
            continue
        line = f"{label}: {fmt_time(t, wl.unit)}"
        if wl.flops:
            line += f", {wl.flops / t / 1e9:.0f} GF/s"
        if peers:
            best = min(peers, key=peers.get)
            line += f", ratio {peers[best] / t:.2f} ({best})"
        wl.notes.append(line)


def fmt_time(t, unit):
    if isinstance(t, NA):
        return "n/a"
    if unit == "us":
        return f"{t * 1e6:.1f} us"
    v = t * 1e3
    return f"{v:.3f} ms" if v < 10 else f"{v:.1f} ms"


def print_row(wl, res, widths, columns):
    cells = [wl.name.ljust(widths[0])]
    for k, name in enumerate(columns):
        cells.append(fmt_time(res[name], wl.unit).rjust(widths[k + 1]) if name in res else
                     "-".rjust(widths[k + 1]))
    kiln = res.get("kiln")
    peers = {n: t for n, t in res.items() if n != "kiln" and not isinstance(t, NA)}
    gf = ratio = target = ""
    if wl.flops and not isinstance(kiln, NA) and kiln is not None:
        gf = f"{wl.flops / kiln / 1e9:.0f}"
    if peers:
        best = min(peers, key=peers.get)
        if wl.flops:
            gf += f"/{wl.flops / peers[best] / 1e9:.0f}"
        if not isinstance(kiln, NA) and kiln is not None:
            ratio = f"{peers[best] / kiln:.2f} ({best})"
    if wl.target:
        peer, want = wl.target
        target = f">= {want} x {peer}"
        if peer in peers and not isinstance(kiln, NA) and kiln is not None:
            got = peers[peer] / kiln
            target += f": {got:.2f} {'ok' if got >= want else 'MISS'}"
    cells += [gf.rjust(9), ratio.rjust(17), " " + target]
    print(" ".join(cells), flush=True)
    for name, t in res.items():
        if isinstance(t, NA) and name in ("kiln",) + PEERS:
            print(f"    {name}: n/a ({t})", flush=True)
    for note in wl.notes:
        print(f"    {note}", flush=True)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="small sizes, 3 calls (a smoke test)")
    p.add_argument("--only", action="append", default=[],
                   help="run workloads whose group or row name contains this (repeatable)")
    p.add_argument("--backend", default="llvm", choices=("llvm", "cuda"),
                   help="cuda: Kiln and the torch peers on the GPU (needs pycuda, a driver, nvcc)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--calls", type=int, default=None, help="timed calls per engine (default 10, quick 3)")
    p.add_argument("--no-compile-row", action="store_true")
    args = p.parse_args(argv)
    if args.backend == "cuda":
        from backends.cuda import runtime as cuda_runtime
        ok, what = cuda_runtime.status()
        if not ok:
            sys.exit(f"benchmarks: --backend cuda cannot run here: {what}")
        print(f"GPU: {what}; the torch peers run on it too (PyTorch-CUDA)")
        ON_GPU["torch"] = True
    ctx = Ctx(quick=args.quick, backend=args.backend, threads=args.threads,
              calls=args.calls or (3 if args.quick else 10))
    os.environ.setdefault("KILN_NUM_THREADS", str(args.threads))
    try:
        from backends.llvm import runtime as rt
        rt.set_num_threads(args.threads)
    except ImportError:
        pass
    try:
        from threadpoolctl import threadpool_limits
        threadpool_limits(args.threads)           # numpy/pytensor BLAS: the same threads
    except ImportError:
        print("threadpoolctl missing: OpenBLAS is not capped while Kiln is timed")
    rest = 0.02 if args.quick else 0.2
    columns = [e for e in ENGINES]
    widths = [44] + [11] * len(columns)
    print(f"Kiln benchmarks: backend {args.backend}, {args.threads} threads, median of {ctx.calls} calls"
          f"{' (quick)' if args.quick else ''}; ratio = best peer time / Kiln time")
    print(" ".join(["workload".ljust(widths[0])] + [c.rjust(w) for c, w in zip(columns, widths[1:])] +
                   ["GF/s k/p".rjust(9), "ratio".rjust(17), " target"]))
    wanted = [w.lower() for w in args.only]
    for group, fn in WORKLOADS:
        try:
            wls = fn(ctx)
        except Exception as e:  # noqa: BLE001
            print(f"{group}: could not set up ({_reason(e)})")
            continue
        for wl in (wls if isinstance(wls, list) else [wls]):
            if wanted and not any(w in group or w in wl.name.lower() for w in wanted):
                continue
            res = run_workload(wl, ctx, rest)
            run_extras(wl, ctx, rest, res)
            print_row(wl, res, widths, columns)
    if args.quick and not args.no_compile_row:
        print(f"{'compile lenet step (cold / warm)'.ljust(widths[0])} skipped in --quick "
              "(a cold compile takes tens of seconds)")
    elif not args.no_compile_row and (not wanted or any(w in "compile" for w in wanted)):
        times, err = compile_times(ctx)
        if times is None:
            print(f"{'compile lenet step (cold / warm)'.ljust(widths[0])} n/a ({err})")
        else:
            print(f"{'compile lenet step (cold / warm)'.ljust(widths[0])} "
                  f"{times['cold']:.2f} s / {times['warm']:.2f} s")


if __name__ == "__main__":
    main()
