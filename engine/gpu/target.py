"""What GPU schedules are made for and of: the declared capabilities of a device
(``GpuTarget``), one ``__global__`` launch (``GpuLaunch``) and a lowered kernel with its
launches (``GpuKernel``)."""

from __future__ import annotations

from dataclasses import dataclass, field

from engine.kernel_ir import Kernel


@dataclass(frozen=True)
class GpuTarget:
    """What the transforms may use: the declared capabilities of a CUDA device."""

    max_threads_per_block: int = 1024
    shared_memory_bytes: int = 48 * 1024
    warp_size: int = 32
    #: threads per block of the generic mappings (a power of two, a multiple of the warp)
    block_threads: int = 256
    #: reductions with fewer outputs than this run one block per output ...
    coop_outputs: int = 16384
    #: ... when the threads of a block share at least this many iterations
    coop_min_work: int = 32
    #: the most blocks a launch asks for (grid-stride loops cover the rest)
    max_grid: int = 1 << 20
    #: reductions to a scalar run on up to this many blocks, then one (grid_reduce.py; 0: off)
    reduce_blocks: int = 128


@dataclass(frozen=True)
class GpuLaunch:
    """One ``__global__`` function: the scheduled kernel, its block shape and its grid (ints
    or kernel-IR expressions of the kernel's parameters; ``None``: the runtime's default).
    ``scratch``: ``(BufferParam, elements)`` the backend allocates per call and passes after
    the lowered kernel's own parameters (the launches of one kernel share them by name)."""

    kernel: Kernel
    block: tuple
    grid: tuple
    scratch: tuple = ()

    @property
    def threads(self):
        return self.block[0] * self.block[1] * self.block[2]


@dataclass
class GpuKernel:
    """A lowered kernel and the launches that run it on a GPU (usually one)."""

    name: str
    raw: Kernel
    launches: list = field(default_factory=list)
