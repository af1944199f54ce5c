"""Every kernel the CUDA backend generates for representative graphs compiles with nvcc (sm_90
and sm_80, one translation unit); the PTX / cubin disk cache; source levels. Skipped cleanly
where nvcc is not installed."""

from __future__ import annotations

import os
import shutil

import pytest

from backends.cuda import compile as cc
from backends.cuda.render import render_module
from engine import kernel_ir as ir
from engine.gpu_transforms import GpuLaunch
from tests.backends.cuda_graphs import GRAPHS, build

pytestmark = pytest.mark.skipif(shutil.which("nvcc") is None and cc.find_nvcc() is None,
                                reason="nvcc (the CUDA toolkit) is not installed")


def _all_launches():
    launches = {}
    for name in GRAPHS:
        fn, _ = build(name, "cuda-emulator")
        for k in fn.kernels:
            for la in k.launches:
                kname, n = la.kernel.name, 1
                while kname in launches and launches[kname].kernel.body != la.kernel.body:
                    n += 1
                    kname = f"{la.kernel.name}_v{n}"
                if kname not in launches:
                    launches[kname] = GpuLaunch(ir.Kernel(kname, la.kernel.params, la.kernel.body),
                                                la.block, la.grid)
    return launches


@pytest.fixture(scope="module")
def translation_unit():
    launches = _all_launches()
    return launches, render_module([la.kernel for la in launches.values()], launches)


@pytest.mark.parametrize("arch", ["sm_90", "sm_80"])
def test_every_kernel_compiles(translation_unit, arch):
    launches, source = translation_unit
    assert len(launches) > 40
    names = {k.kernel.name for k in launches.values()}
    for family in ("gpu_gemm", "gpu_matmul", "gpu_conv2d_fwd", "gpu_conv2d_bwd_weight",
                   "gpu_conv2d_bwd_input", "_sum", "philox",
                   "pool", "softmax", "lcn", "R_"):
        assert any(family in n for n in names), family
    cubin = cc.compile_cubin(source, arch)
    assert cubin[:4] == b"\x7fELF"
    if arch == "sm_90":  # the readable level: one .entry per kernel
        ptx = cc.compile_ptx(source, arch)
        for name in names:
            assert f".entry {name}(" in ptx


def test_cache_hits_and_corrupt_entries(tmp_path, monkeypatch):
    monkeypatch.setenv("KILN_CACHE_DIR", str(tmp_path))
    source = 'extern "C" __global__ void k(float* x) { x[threadIdx.x] *= 2.0f; }\n'
    before = cc.STATS["nvcc"]
    first = cc.compile_cubin(source, "sm_80")
    assert cc.STATS["nvcc"] == before + 1
    assert cc.compile_cubin(source, "sm_80") == first
    assert cc.STATS["nvcc"] == before + 1
    (entry,) = list((tmp_path / cc.CACHE_NAMESPACE).glob("*.bin"))
    entry.write_bytes(entry.read_bytes()[:-7] + b"garbage")
    assert cc.compile_cubin(source, "sm_80") == first  # recompiled, never trusted
    assert cc.STATS["nvcc"] == before + 2
    assert os.stat(tmp_path / cc.CACHE_NAMESPACE).st_mode & 0o777 == 0o700


def test_source_levels():
    fn, _ = build("elementwise", "cuda-emulator")
    k = fn.kernels[0]
    cuda = k.source("cuda")
    assert f"void __launch_bounds__(256) {k.launches[0].kernel.name}(" in cuda
    assert 'extern "C" __global__' in cuda
    ptx = k.source("ptx")
    assert f".entry {k.launches[0].kernel.name}(" in ptx and ".target sm_90" in ptx
    assert "block_x" in k.source("loops") and "thread_x" in k.source("ir")
    assert "parallel" in k.source("lowered")


def test_nvcc_errors_name_the_line():
    with pytest.raises(cc.NvccError, match="undefined_thing"):
        cc.compile_ptx('extern "C" __global__ void k() {\n  undefined_thing();\n}\n', "sm_90",
                       cache=False)
