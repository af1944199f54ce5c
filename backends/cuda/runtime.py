"""The CUDA runtime of ``backend="cuda"``: device memory and launches through pycuda.

pycuda is the optional ``cuda`` extra and is imported only here, on first use. ``status()``
says whether the backend can run and, if not, which piece is missing; ``CudaExecutor()``
raises ``CudaUnavailable`` with that message:

* pycuda not installed                       -> "... needs pycuda ... not installed"
* pycuda present, no driver (libcuda) / init  -> "... the CUDA driver could not be initialized"
* driver present, no device                   -> "... no CUDA GPU"
* nvcc missing (kernels cannot be compiled)   -> compile.NvccMissing at the first compile

The executor uses the device's primary context (shared with PyTorch / CuPy in the same
process), compiles a function's kernels as one translation unit for the device's own arch
(``sm_<major><minor>``; compile.py caches PTX and cubin on disk), loads the cubin with
``module_from_buffer`` and launches with ``prepared_call``: the argument format comes from
render.abi_layout (pointer "P", shapes/strides "q", scalars by dtype; bool as "B").
Allocations are pooled by size (backend.GpuExecutor); copies are synchronous on the default
stream, launches asynchronous in stream order. Device limits (threads per block, shared
memory, warp size, SM count) become the ``GpuTarget`` the transforms schedule for.
"""

from __future__ import annotations

import atexit

import numpy as np
from numpy.lib.stride_tricks import as_strided

from backends.cuda.backend import GpuExecutor
from engine import kernel_ir as ir
from engine.errors import KilnError
from engine.gpu import GpuTarget

_STRUCT = {"bool": "B", "int8": "b", "uint8": "B", "int16": "h", "uint16": "H", "int32": "i",
           "uint32": "I", "int64": "q", "uint64": "Q", "float32": "f", "float64": "d"}
_STATE = {}


class CudaUnavailable(KilnError, RuntimeError):
    """backend="cuda" cannot run here; the message says what is missing."""


def _driver():
    """The initialized pycuda.driver module, or CudaUnavailable naming what is missing."""
    if "drv" in _STATE:
        return _STATE["drv"]
    if "error" in _STATE:
        raise CudaUnavailable(_STATE["error"])
    try:
        import pycuda.driver as drv
    except ImportError as e:
        _STATE["error"] = (f"backend='cuda' needs pycuda (the optional 'cuda' extra: pip install "
                           f"pycuda), which is not installed here ({e}); "
                           "backend='cuda-emulator' runs the same kernels on the CPU")
        raise CudaUnavailable(_STATE["error"]) from None
    try:
        drv.init()
    except Exception as e:  # noqa: BLE001 - pycuda raises its own error types
        _STATE["error"] = (f"backend='cuda': pycuda is installed but the CUDA driver could not "
                           f"be initialized ({type(e).__name__}: {e}); is an NVIDIA driver "
                           "installed and loaded?")
        raise CudaUnavailable(_STATE["error"]) from None
    if drv.Device.count() == 0:
        _STATE["error"] = "backend='cuda': the CUDA driver found no GPU"
        raise CudaUnavailable(_STATE["error"])
    _STATE["drv"] = drv
    return drv


def status():
    """(True, device name) when backend="cuda" can run, else (False, what is missing)."""
    try:
        drv = _driver()
    except CudaUnavailable as e:
        return False, str(e)
    from backends.cuda.compile import find_nvcc
    if find_nvcc() is None:
        return False, "backend='cuda': nvcc (the CUDA toolkit) is not installed"
    return True, drv.Device(0).name()


def _context():
    if "ctx" not in _STATE:
        drv = _driver()
        dev = drv.Device(0)
        ctx = dev.retain_primary_context()
        ctx.push()
        _STATE["dev"], _STATE["ctx"] = dev, ctx

        def _pop():
            try:
                drv.Context.pop()
            except Exception:  # noqa: BLE001 - interpreter shutdown
                pass
        atexit.register(_pop)
    return _STATE["dev"]


class CudaAllocation:
    __slots__ = ("mem", "ptr", "nbytes", "kept")

    def __init__(self, mem, nbytes):
        self.mem = mem
        self.ptr = int(mem)
        self.nbytes = nbytes
        self.kept = False


class CudaExecutor(GpuExecutor):
    name = "cuda"

    def __init__(self):
        drv = _driver()
        dev = _context()
        self.drv = drv
        a = drv.device_attribute
        major, minor = dev.compute_capability()
        self.arch = f"sm_{major}{minor}"
        self.target = GpuTarget(
            max_threads_per_block=dev.get_attribute(a.MAX_THREADS_PER_BLOCK),
            shared_memory_bytes=dev.get_attribute(a.MAX_SHARED_MEMORY_PER_BLOCK),
            warp_size=dev.get_attribute(a.WARP_SIZE))
        self.default_grid = 8 * dev.get_attribute(a.MULTIPROCESSOR_COUNT)
        self.device_name = dev.name()
        self.modules = []
        super().__init__()

    def _alloc(self, nbytes):
        return CudaAllocation(self.drv.mem_alloc(nbytes), nbytes)

    def _upload_into(self, dev, host):
        if host.nbytes:
            self.drv.memcpy_htod(dev.ptr, host)

    def download(self, dev):
        out = np.empty(dev.shape, dev.dtype)
        if dev.size == 0:
            return out
        if dev.is_contiguous():
            self.drv.memcpy_dtoh(out, dev.ptr)
            return out
        lo, hi = dev.extent()  # a strided or broadcast view: copy its span, then view it
        span = np.empty((hi - lo) // dev.itemsize + 1, dev.dtype)
        self.drv.memcpy_dtoh(span, dev.ptr + lo)
        out[...] = as_strided(span[(-lo) // dev.itemsize:], dev.shape, dev.strides)
        return out

    def prepare(self, launches):
        from backends.cuda.compile import compile_cubin
        from backends.cuda.render import abi_layout, render_module
        source = render_module([la.kernel for la in launches],
                               {la.kernel.name: la for la in launches})
        cubin = compile_cubin(source, self.arch)
        module = self.drv.module_from_buffer(cubin)
        self.modules.append(module)
        handles = {}
        for la in launches:
            fn = module.get_function(la.kernel.name)
            layout = abi_layout(la.kernel)
            fmt = "".join("P" if what == "data" else
                          "q" if isinstance(what, tuple) else _STRUCT[p.dtype]
                          for _, _, (p, what) in layout)
            fn.prepare(fmt)
            handles[la.kernel.name] = fn
        return handles

    def launch(self, handle, launch, values, grid):
        args = []
        for p, v in zip(launch.kernel.params, values):
            if isinstance(p, ir.BufferParam):
                args.append(v.ptr)
                args.extend(v.shape)
                args.extend(v.elem_strides())
            elif p.dtype == "bool":
                args.append(int(bool(v)))
            elif ir.is_float(p.dtype):
                args.append(float(v))
            else:
                args.append(int(v))
        try:
            handle.prepared_call(tuple(int(g) for g in grid), tuple(launch.block), *args)
        except Exception as e:  # noqa: BLE001 - pycuda's LaunchError & co
            raise KilnError(f"cuda: launching {launch.kernel.name} with grid {grid}, block "
                            f"{launch.block} failed: {type(e).__name__}: {e}") from e

    def synchronize(self):
        self.drv.Context.synchronize()
