"""GPU loop transforms: a lowered (CPU-style) kernel -> kernels bound to CUDA blocks and threads.

One concern a module: target (GpuTarget, GpuLaunch, GpuKernel), exprs (helpers), scalarize,
dependence (parallel_safe, hoist_common_loops), parts (split_parts), reduce (block-cooperative
reductions), grid_reduce (two-pass reductions over the grid), bind, schedule (gpu_schedule,
infer_launch); kernel builders already scheduled for GPUs: tile_gemm (shared-memory tiled
GEMM, tile sizes from the capabilities), tile_conv (convolutions as implicit GEMM on those
tiles). engine/gpu_transforms.py re-exports.

    gk = gpu_schedule(kernel, GpuTarget())      # GpuKernel(name, raw, launches)
    for launch in gk.launches:                  # launched in order (a kernel may need several)
        launch.kernel, launch.block, launch.grid

Semantics of the GPU loop kinds (the CUDA renderer and the emulator implement exactly this)
---------------------------------------------------------------------------------------------
``Loop(v, a, b, body, kind="block_x", step=s)``   grid-stride over blocks:
    ``for (v = a + blockIdx.x*s; v < b; v += gridDim.x*s)``; any grid size is correct.
``Loop(v, a, b, body, kind="thread_x", step=s)``  block-stride over the threads of a block:
    ``for (v = a + threadIdx.x*s; v < b; v += blockDim.x*s)``; a thread loop of extent
    blockDim runs exactly once per thread, one of extent 1 on thread 0 only.
Everything outside thread loops runs on every thread of the block (uniform code: the same
values in every thread); ``Barrier()`` is ``__syncthreads()`` and only appears in uniform
control flow. Thread loops do not nest. ``*_y``/``*_z`` are the same along y and z.

The transforms (each a pure function of kernel IR)
--------------------------------------------------
``scalarize``     removes CPU vectors: a ``lanes=w`` statement becomes w scalar statements
                  (vector locals ``x`` become ``x_l0 .. x_l{w-1}``, ``ReduceLanes`` the same
                  balanced tree as the LLVM renderer), ``vectorize`` loops become serial.
``split_parts``   top-level statements that depend on each other through memory (a later one
                  reads or writes what an earlier one wrote, or writes what it read) go to
                  separate launches: blocks of one launch never wait for each other.
``bind``          per launch, per top-level statement:
  * a parallel chain (the lowering's ``parallel`` loop, then the perfectly nested loops the
    dependence test ``parallel_safe`` accepts; sibling loops over the same index are fused
    first by ``hoist_common_loops``, e.g. a column reduction's init and update) is flattened
    into one index, one thread per iteration (thread x runs along the innermost, usually
    contiguous, axis: coalesced). When the innermost loop's bounds depend on the outer ones,
    the outer iterations go to blocks and the inner loop to the threads of a block;
  * a chain whose body reduces (``acc = acc op x`` in a loop, op in add mul min max and or
    xor) also gets a block-cooperative version, chosen at run time when there are fewer
    than ``GpuTarget.coop_outputs`` outputs: one block per output, the threads take strided
    parts of the reduction, then a shared-memory tree (``Barrier`` between levels);
    map loops in the same body (softmax's normalization) become thread loops;
  * a part that reduces to block-level locals (``acc = identity; for ...: acc op= x;
    <rest>``: a full sum, mean, max) is two launches (``grid_reduce``): up to
    ``GpuTarget.reduce_blocks`` blocks reduce chunks into scratch partials
    (``GpuLaunch.scratch``), then block 0 combines them in order and runs ``<rest>``;
  * anything else (a tail ``If``, a sequential scatter) runs on block 0: cooperatively when
    it has a reduction or a parallel loop inside, else on one thread.
``gpu_schedule``  scalarize -> split -> bind -> verify; kernels that already contain GPU loops
                  (a dedicated GPU builder's) are only verified, their launch inferred.

Block sizes come from ``GpuTarget`` (threads per block, shared memory, warp size); grids are
kernel-IR expressions of the parameters (``GpuLaunch.grid``), evaluated on the host at launch.
Parallel-loop iterations are independent by the lowering contract (engine/lowering/common.py);
``unroll`` loops are never parallelized. The emulator's race detector checks all of it.
"""

from engine.gpu.bind import bind
from engine.gpu.dependence import hoist_common_loops, parallel_safe
from engine.gpu.parts import split_parts
from engine.gpu.scalarize import scalarize
from engine.gpu.schedule import gpu_schedule, infer_launch
from engine.gpu.target import GpuKernel, GpuLaunch, GpuTarget

__all__ = ["GpuTarget", "GpuLaunch", "GpuKernel", "gpu_schedule", "scalarize", "split_parts",
           "bind", "parallel_safe", "hoist_common_loops", "infer_launch"]
