"""``gpu_schedule``: a lowered kernel -> its launches (scalarize -> split -> bind -> verify);
``infer_launch`` for kernels a GPU builder already scheduled."""

from __future__ import annotations

import dataclasses
import math

from engine import kernel_ir as ir
from engine.gpu.bind import bind
from engine.gpu.dependence import _inline
from engine.gpu.exprs import _is_gpu, _max, _min, _touches_memory, _trip
from engine.gpu.scalarize import scalarize
from engine.gpu.target import GpuKernel, GpuLaunch, GpuTarget
from engine.kernel_ir import Const, Declare, KernelIRError, Loop


def infer_launch(kernel, target=None):
    """The launch of a kernel a GPU builder already scheduled: block sizes from the constant
    extents of its thread loops, grid from the trip counts of its block loops."""
    target = target or GpuTarget()
    block = [1, 1, 1]
    grid = [Const(1), Const(1), Const(1)]
    axes = "xyz"
    for n in ir.walk(kernel):
        if isinstance(n, Loop) and n.kind.startswith("thread_"):
            a = axes.index(n.kind[-1])
            ext = _trip(n)
            if isinstance(ext, Const):
                block[a] = max(block[a], ext.value)
        if isinstance(n, Loop) and n.kind.startswith("block_"):
            a = axes.index(n.kind[-1])
            grid[a] = _trip(n)
    defs = {s.var.name: s.init for s in kernel.body if isinstance(s, Declare)}
    out = []
    for a, g in enumerate(grid):
        for _ in range(8):
            g = _inline(g, defs, 0)
        cap = target.max_grid if a == 0 else 65535  # CUDA's limit on gridDim.y / .z
        out.append(None if ir.free_vars(g) or _touches_memory(g) else _min(_max(g, 1), cap))
    if math.prod(block) > target.max_threads_per_block:
        raise KernelIRError(f"kernel {kernel.name!r}: block {block} exceeds "
                            f"{target.max_threads_per_block} threads")
    return GpuLaunch(kernel, tuple(block), tuple(out))


def gpu_schedule(kernel, target=None):
    """A lowered kernel -> GpuKernel with its launches (see the module docstring)."""
    target = target or GpuTarget()
    if _is_gpu(kernel):
        ir.verify(kernel)
        return GpuKernel(kernel.name, kernel, [infer_launch(kernel, target)])
    k = scalarize(kernel)
    k = _normalize_kinds(k)
    launches = bind(k, target)
    for launch in launches:
        ir.verify(launch.kernel)
    return GpuKernel(kernel.name, kernel, launches)


def _normalize_kinds(kernel):
    def fn(n):
        if isinstance(n, Loop) and n.kind == "vectorize":
            return dataclasses.replace(n, kind="serial")
        return n
    return kernel.with_body(ir.map_nodes(kernel.body, fn))
