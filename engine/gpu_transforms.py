"""The GPU loop transforms, kept importable under their old name: they live in engine/gpu/
(target, exprs, scalarize, dependence, parts, reduce, bind, schedule); see its docstring."""

from engine.gpu import (  # noqa: F401
    GpuKernel,
    GpuLaunch,
    GpuTarget,
    bind,
    gpu_schedule,
    hoist_common_loops,
    infer_launch,
    parallel_safe,
    scalarize,
    split_parts,
)

__all__ = ["GpuTarget", "GpuLaunch", "GpuKernel", "gpu_schedule", "scalarize", "split_parts",
           "bind", "parallel_safe", "hoist_common_loops", "infer_launch"]
