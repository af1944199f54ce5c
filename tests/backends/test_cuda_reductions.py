"""Reductions on the GPU backends: to a scalar over many blocks then one (engine/gpu/
grid_reduce.py: scratch partials, fixed order), per row one block per output (engine/gpu/
reduce.py; the softmax family's row kernels: backends/cuda/softmax.py); against the oracle on
the emulator, bit-identical run to run, nvcc compiles."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

import engine
import frontends.nn as nn
import frontends.tensor as T
from backends.cuda import compile as cc
from backends.cuda.render import render_module
from engine import kernel_ir as ir
from engine.gpu import GpuTarget, gpu_schedule
from engine.lowering.core import reduce_kernel

EMU = "cuda-emulator"


def test_full_sum_is_two_launches_over_scratch():
    k = reduce_kernel("sum_all", "float32", 2, (0, 1), "sum")
    gk = gpu_schedule(k, GpuTarget(block_threads=32))
    assert [la.kernel.name for la in gk.launches] == ["sum_all_r1", "sum_all_r2"]
    (p1, n1), = gk.launches[0].scratch
    assert gk.launches[1].scratch == gk.launches[0].scratch and n1 == 128 and p1.ndim == 1
    assert gk.launches[1].grid[0] == ir.Const(1)
    off = gpu_schedule(k, GpuTarget(block_threads=32, reduce_blocks=0))
    assert [la.kernel.name for la in off.launches] == ["sum_all"]


def test_accumulator_not_starting_at_identity_stays_on_one_block():
    x, out = ir.BufferParam("x", "float32", 1), ir.BufferParam("out", "float32", 0)
    acc, i = ir.Var("acc", "float32"), ir.Var("i")
    k = ir.Kernel("first_plus_rest", (x, out), (
        ir.Declare(acc, x[0]), ir.Loop(i, 1, x.dim(0), [ir.Assign(acc, acc + x[i])]),
        out.store((), acc)))
    assert [la.kernel.name for la in gpu_schedule(k).launches] == ["first_plus_rest"]


@pytest.mark.parametrize("shape", [(1,), (3, 5), (300, 70), (2, 3, 4000)])
def test_scalar_reductions_match_the_oracle_and_repeat_bit_for_bit(shape):
    rng = np.random.default_rng(0)
    x = T.tensor("float32", (None,) * len(shape), name="x")
    outs = [x.sum(), (x * x).mean(), x.max(), x.min(), T.exp(x - x.max()).sum()]
    a = rng.standard_normal(shape).astype("float32")
    f = engine.function([x], outs, backend=EMU)
    if a.size > 1:
        assert any(k.launches[0].kernel.name.endswith("_r1") for k in f.kernels)
    first, again = f(a), f(a)
    want = engine.function([x], outs, backend="numpy")(a)
    for g, h, w in zip(first, again, want):
        np.testing.assert_array_equal(g, h)
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-5)


def test_softmax_and_lcn_statistics_match_the_oracle():
    """Row statistics (softmax's max and sum; LCN's per-image mean) are block-per-output
    reductions with a shared-memory tree; the losses on top are reductions to a scalar."""
    rng = np.random.default_rng(1)
    x, im = T.matrix("x"), T.tensor4("im")
    outs = [nn.softmax(x), -T.log(nn.softmax(x)).mean(), nn.lcn(im, size=5), nn.lcn(im, size=5).sum()]
    a = [rng.standard_normal((7, 300)).astype("float32"), rng.standard_normal((2, 3, 12, 11)).astype("float32")]
    got = engine.function([x, im], outs, backend=EMU)(*a)
    want = engine.function([x, im], outs, backend="numpy")(*a)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=2e-4, atol=2e-4)


@pytest.mark.parametrize("width", [10, 700])
def test_softmax_family_gets_a_block_per_long_row(width):
    """backends/cuda/softmax.py: scalar passes the binder maps to a block per row (shared-memory
    trees) when rows are long, one thread per row when short; against the oracle."""
    rng = np.random.default_rng(2)
    x, lab, x3 = T.matrix("x"), T.lvector("lab"), T.tensor3("x3")
    outs = [nn.softmax(x), nn.log_softmax(x), nn.categorical_crossentropy(nn.softmax(x), lab),
            nn.softmax(x3, axis=1)]
    a = [rng.standard_normal((5, width)).astype("float32"), rng.integers(0, width, 5),
         rng.standard_normal((2, width, 3)).astype("float32")]
    f = engine.function([x, lab, x3], outs, backend=EMU)
    names = [k.name for k in f.kernels]
    for family in ("gpu_softmax_axis1", "gpu_log_softmax", "gpu_softmax_xent"):
        assert any(n.startswith(family) for n in names), (family, names)
    for k in f.kernels:
        if k.name.startswith("gpu_"):
            shared = [n for la in k.launches for n in ir.walk(la.kernel)
                      if isinstance(n, ir.Alloc) and n.buf.scope == "shared"]
            assert shared  # the block-per-row version exists (chosen at run time by row length)
    want = engine.function([x, lab, x3], outs, backend="numpy")(*a)
    for g, w in zip(f(*a), want):
        np.testing.assert_allclose(g, w, rtol=2e-5, atol=2e-6)


@pytest.mark.skipif(shutil.which("nvcc") is None and cc.find_nvcc() is None,
                    reason="nvcc (the CUDA toolkit) is not installed")
@pytest.mark.parametrize("arch", ["sm_90", "sm_80"])
def test_two_pass_kernels_compile(arch):
    launches = {}
    for dtype, red in (("float32", "sum"), ("float64", "max"), ("int32", "sum"), ("float32", "prod")):
        k = reduce_kernel(f"all_{red}_{dtype}", dtype, 3, (0, 1, 2), red)
        for la in gpu_schedule(k).launches:
            launches[la.kernel.name] = la
    from backends.cuda import softmax as sm
    for dtype in ("float32", "float64"):
        for k in (sm.softmax_kernel(f"sm_{dtype}", dtype, 3, 1, False),
                  sm.softmax_kernel(f"lsm_{dtype}", dtype, 2, 1, True),
                  sm.xent_kernel(f"xent_{dtype}", dtype, "int64")):
            for la in gpu_schedule(k).launches:
                launches[la.kernel.name] = la
    assert sum(name.endswith("_r1") for name in launches) == 4
    source = render_module([la.kernel for la in launches.values()], launches)
    assert "atomic" not in source
    assert cc.compile_cubin(source, arch)[:4] == b"\x7fELF"
