"""backends/cuda/runtime.py without a GPU: a fake ``pycuda.driver`` whose device memory is a
numpy buffer and whose ``prepared_call`` unpacks the packed arguments (the format ``prepare``
was given) and runs the kernel in the emulator. Checks the runtime's argument packing,
pointers into views, strided downloads, the allocation pool and the launch path end to end.
Needs nvcc (the runtime compiles the cubin it would load)."""

from __future__ import annotations

import struct
import sys
import types

import numpy as np
import pytest

import engine
import frontends.tensor as T
from backends.cuda import compile as cc
from backends.cuda.emulator import EmulatedKernel
from engine import kernel_ir as ir
from tests.backends.cuda_graphs import build

pytestmark = pytest.mark.skipif(cc.find_nvcc() is None, reason="nvcc is not installed")

BASE = 1 << 40


class _FakeDriver(types.ModuleType):
    def __init__(self):
        super().__init__("pycuda.driver")
        self.mem = np.zeros(1 << 24, np.uint8)
        self.top = 0
        self.calls = []
        drv = self

        class device_attribute:  # noqa: N801 - pycuda's spelling
            MAX_THREADS_PER_BLOCK, MAX_SHARED_MEMORY_PER_BLOCK, WARP_SIZE, MULTIPROCESSOR_COUNT = range(4)

        class Device:
            @staticmethod
            def count():
                return 1

            def __init__(self, k):
                pass

            def retain_primary_context(self):
                return types.SimpleNamespace(push=lambda: None)

            def compute_capability(self):
                return (9, 0)

            def get_attribute(self, a):
                return (1024, 49152, 32, 132)[a]

            def name(self):
                return "Fake H100"

        class Function:
            def __init__(self, name):
                self.name, self.fmt, self.launch = name, None, None

            def prepare(self, fmt):
                self.fmt = fmt

            def prepared_call(self, grid, block, *args):
                assert len(grid) == 3 and len(block) == 3
                assert all(isinstance(g, int) and g >= 1 for g in grid + block)
                packed = struct.pack("@" + self.fmt, *args)   # what pycuda packs
                values = list(struct.unpack("@" + self.fmt, packed))
                drv.calls.append((self.name, grid, block))
                k = self.launch.kernel
                out = []
                for p in k.params:
                    if isinstance(p, ir.BufferParam):
                        ptr = values.pop(0)
                        shape = [values.pop(0) for _ in range(p.ndim)]
                        strides = [values.pop(0) for _ in range(p.ndim)]
                        isz = np.dtype(p.dtype).itemsize
                        assert (ptr - BASE) % isz == 0
                        out.append((drv.mem.view(p.dtype), (ptr - BASE) // isz, shape, strides, 0))
                    else:
                        out.append(values.pop(0))
                assert not values
                EmulatedKernel(self.launch).run(out, grid, block)

        class Module:
            def get_function(self, name):
                return Function(name)

        self.device_attribute, self.Device = device_attribute, Device
        self.Context = types.SimpleNamespace(pop=lambda: None, synchronize=lambda: None)
        self.module_from_buffer = lambda cubin: (cubin[:4] == b"\x7fELF" or None) and Module()

    def init(self):
        pass

    def mem_alloc(self, n):
        ptr = BASE + self.top
        self.top += (n + 255) // 256 * 256
        assert self.top <= self.mem.size
        return _Ptr(ptr)  # pycuda's DeviceAllocation: int() is the address

    def memcpy_htod(self, ptr, host):
        b = np.ascontiguousarray(host).reshape(-1).view(np.uint8)
        self.mem[ptr - BASE:ptr - BASE + b.size] = b

    def memcpy_dtoh(self, out, ptr):
        b = out.reshape(-1).view(np.uint8)
        b[:] = self.mem[ptr - BASE:ptr - BASE + b.size]


class _Ptr(int):
    pass


@pytest.fixture
def fake_cuda(monkeypatch):
    from backends import _INSTANCES
    from backends.cuda import runtime
    drv = _FakeDriver()
    pkg = types.ModuleType("pycuda")
    pkg.driver = drv
    monkeypatch.setitem(sys.modules, "pycuda", pkg)
    monkeypatch.setitem(sys.modules, "pycuda.driver", drv)
    monkeypatch.setattr(runtime, "_STATE", {})
    monkeypatch.delitem(_INSTANCES, "cuda", raising=False)
    prepare = runtime.CudaExecutor.prepare

    def remember(self, launches):
        handles = prepare(self, launches)
        for la in launches:
            handles[la.kernel.name].launch = la
        return handles
    monkeypatch.setattr(runtime.CudaExecutor, "prepare", remember)
    yield drv
    _INSTANCES.pop("cuda", None)


def test_status_and_target(fake_cuda):
    from backends.cuda import runtime
    assert runtime.status() == (True, "Fake H100")
    ex = runtime.CudaExecutor()
    assert ex.arch == "sm_90" and ex.target.shared_memory_bytes == 49152 and ex.default_grid == 1056


@pytest.mark.parametrize("name", ["elementwise", "matmul", "softmax", "random", "training_step"])
def test_graphs_through_the_runtime(fake_cuda, name):
    fn, arrays = build(name, "cuda")
    ref, _ = build(name, "numpy")
    for _ in range(2):
        for g, w in zip(fn(*arrays), ref(*arrays)):
            if w.dtype.kind in "biu" or name == "random":
                np.testing.assert_array_equal(g, w)
            else:
                np.testing.assert_allclose(g, w, rtol=2e-4, atol=2e-4)
    assert fake_cuda.calls


def test_views_and_strided_downloads(fake_cuda):
    x = T.matrix("x")
    f = engine.function([x], [x.T, (x.T * 2)[1:, ::2], x.dimshuffle(1, "x", 0)], backend="cuda")
    a = np.arange(20, dtype="float32").reshape(4, 5)
    for g, w in zip(f(a), [a.T, (a.T * 2)[1:, ::2], a.T[:, None, :]]):
        np.testing.assert_array_equal(g, w)
