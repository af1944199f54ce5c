"""Shared-memory tiling on the GPU backends (engine/gpu/tile_gemm.py, tile_conv.py): tile sizes
from the declared capabilities, the tiled GEMM and convolutions (forward, both gradients,
split-K weight gradient) against the numpy oracle on the emulator, for the default and a small
device, determinism (no atomics anywhere), and nvcc compiles of every tiled kernel."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

import engine
import frontends.nn as nn
import frontends.tensor as T
from backends import register_backend
from backends.cuda import compile as cc
from backends.cuda.backend import EmulatorBackend
from backends.cuda.render import render_module
from engine.gpu import GpuTarget, gpu_schedule
from engine.gpu import tile_conv as tc
from engine.gpu.tile_gemm import CANDIDATES, Tiles, choose_tiles

EMU = "cuda-emulator"
SMALL = "cuda-emulator-small-device"


class _SmallDevice(EmulatorBackend):
    """The emulator declaring a device of 64 threads per block and 8 KB of shared memory."""

    name = SMALL

    def make_executor(self):
        ex = super().make_executor()
        ex.target = GpuTarget(max_threads_per_block=64, shared_memory_bytes=8 * 1024,
                              block_threads=64)
        return ex


register_backend(SMALL, _SmallDevice)


def test_tiles_follow_the_capabilities():
    assert choose_tiles(GpuTarget(), "float32") == Tiles(64, 64, 16, 16, 16)
    small = GpuTarget(max_threads_per_block=64, shared_memory_bytes=8 * 1024)
    assert choose_tiles(small, "float32") == Tiles(32, 32, 16, 8, 8)
    assert choose_tiles(small, "float64") == Tiles(16, 16, 8, 4, 4)   # 32x32 needs 8448 bytes
    tiny = GpuTarget(max_threads_per_block=64, shared_memory_bytes=1024)
    assert choose_tiles(tiny, "float64") is None
    for t in CANDIDATES:
        assert t.bm % t.ty == 0 and t.bn % t.tx == 0 and (t.bm * t.bk) % t.threads == 0


def _conv_graph(rng, groups, stride, flip, shape, wshape):
    x = T.tensor4("x")
    W = engine.shared((rng.standard_normal(wshape) * 0.3).astype("float32"), name="W")
    b = engine.shared(rng.standard_normal(wshape[0]).astype("float32"), name="b")
    h = T.tanh(nn.conv2d(x, W, padding=1, stride=stride, groups=groups, filter_flip=flip)
               + b.dimshuffle("x", 0, "x", "x"))
    cost = (h * h).mean()
    return [x], [h] + engine.grad(cost, [x, W]), rng.standard_normal(shape).astype("float32")


@pytest.mark.parametrize("backend", [EMU, SMALL])
@pytest.mark.parametrize("groups,stride,flip", [(1, (1, 1), False), (2, (2, 1), True)])
def test_tiled_conv_and_gradients_match_the_oracle(backend, groups, stride, flip):
    rng = np.random.default_rng(3)
    ins, outs, a = _conv_graph(rng, groups, stride, flip, (3, 4, 10, 9), (6, 4 // groups, 3, 3))
    f = engine.function(ins, outs, backend=backend)
    names = [k.name for k in f.kernels]
    for family in ("gpu_conv2d_fwd", "gpu_conv2d_bwd_input", "gpu_conv2d_bwd_weight"):
        assert any(n.startswith(family) for n in names), (family, names)
    threads = 64 if backend == SMALL else 256
    for k in f.kernels:
        if k.name.startswith("gpu_conv2d") and not k.name.endswith("_sum"):
            assert [la.block for la in k.launches] == [(threads, 1, 1)]
    ref = engine.function(ins, outs, backend="numpy")
    for got, want in zip(f(a), ref(a)):
        np.testing.assert_allclose(got, want, rtol=2e-4, atol=2e-5)


def test_split_k_weight_gradient_is_correct_and_deterministic():
    rng = np.random.default_rng(4)
    x = T.tensor4("x")
    W = engine.shared((rng.standard_normal((3, 2, 3, 3)) * 0.3).astype("float32"), name="W")
    gw = engine.grad((nn.conv2d(x, W) ** 2).sum(), W)
    assert tc.split_k_parts(9 * 15 * 14) == 1
    a = rng.standard_normal((12, 2, 17, 16)).astype("float32")  # K = 12*15*14: two parts
    assert tc.split_k_parts(12 * 15 * 14) == 2
    f = engine.function([x], gw, backend=EMU)
    first, second = f(a), f(a)
    np.testing.assert_array_equal(first, second)
    want = engine.function([x], gw, backend="numpy")(a)
    np.testing.assert_allclose(first, want, rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize("backend", [EMU, SMALL])
def test_tiled_gemm_shapes(backend):
    rng = np.random.default_rng(5)
    x, y, z = T.matrix("x"), T.matrix("y"), T.tensor3("z")
    outs = [T.dot(x, y), T.dot(y.T, x.T), z @ y, T.tanh(T.dot(x, y) + y.sum(axis=0))]
    a = [rng.standard_normal(s).astype("float32") for s in ((67, 33), (33, 70), (3, 5, 33))]
    f = engine.function([x, y, z], outs, backend=backend)
    assert any(k.name.startswith(("gpu_gemm", "gpu_matmul")) for k in f.kernels)
    ref = engine.function([x, y, z], outs, backend="numpy")
    for got, want in zip(f(*a), ref(*a)):
        np.testing.assert_allclose(got, want, rtol=2e-4, atol=2e-4)


def test_no_tile_fits_falls_back_to_the_common_lowering():
    from backends.cuda.conv import gpu_conv_lowering
    from backends.cuda.gemm import gpu_lowering
    x, W = T.tensor4("x"), T.tensor4("W")
    tiny = GpuTarget(max_threads_per_block=8, shared_memory_bytes=512)
    assert gpu_conv_lowering(nn.conv2d(x, W).owner, tiny) is None
    assert gpu_lowering(T.dot(T.matrix("a"), T.matrix("b")).owner, tiny) is None


def _tiled_kernels():
    ks = [(3, 3), (None, None)]
    out = []
    for dtype in ("float32", "float64"):
        for tiles in (Tiles(), Tiles(32, 32, 16, 8, 8)):
            for kh, kw in ks:
                tag = f"{dtype[-2:]}_{tiles.bm}_{kh}"
                out += [tc.conv_fwd_tiled(f"fwd_{tag}", dtype, (2, 1), (1, 2), 2, True, (kh, kw), 4,
                                          ("tanh",), tiles),
                        tc.conv_grad_input_tiled(f"gin_{tag}", dtype, (1, 1), 1, False, (kh, kw), tiles),
                        tc.conv_grad_weight_tiled(f"gw_{tag}", dtype, (1, 2), (1, 1), 2, True, (kh, kw),
                                                  tiles)]
            out.append(tc.sum_parts_kernel(f"sum_{dtype[-2:]}_{tiles.bm}", dtype))
    return out


@pytest.mark.skipif(shutil.which("nvcc") is None and cc.find_nvcc() is None,
                    reason="nvcc (the CUDA toolkit) is not installed")
@pytest.mark.parametrize("arch", ["sm_90", "sm_80"])
def test_tiled_kernels_compile(arch):
    launches = {}
    for k in _tiled_kernels():
        for la in gpu_schedule(k, GpuTarget()).launches:
            launches[la.kernel.name] = la
    source = render_module([la.kernel for la in launches.values()], launches)
    assert "__shared__" in source and "atomic" not in source
    assert cc.compile_cubin(source, arch)[:4] == b"\x7fELF"


def test_no_atomics_in_any_generated_kernel(monkeypatch):
    """Reductions are shared-memory trees and fixed-order passes: nothing to turn off under
    KILN_DETERMINISTIC=1, and the same bits on every run."""
    from tests.backends.cuda_graphs import GRAPHS, build
    monkeypatch.setenv("KILN_DETERMINISTIC", "1")
    for name in sorted(GRAPHS):
        fn, _ = build(name, EMU)
        for k in fn.kernels:
            assert "atomic" not in k.source("cuda"), k.name
