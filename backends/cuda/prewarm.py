"""Fill the CUDA compile cache without a GPU, for a GPU machine to start warm.

    KILN_CACHE_DIR=.whl/kiln-cache python -m backends.cuda.prewarm [--arch sm_90] [--rows]

compiles every function of tests/backends/cuda_graphs.py (and with ``--rows`` of the whole op
table, both dtypes) exactly as ``backend="cuda"`` renders it -- same lowering, transforms and
translation units: only the executor differs, which compiles and launches nothing -- into
the kernel cache. Carried to a GPU machine with the same nvcc version (the key includes it),
``backend="cuda"`` loads those cubins instead of running nvcc once per function.
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np

from backends import register_backend
from backends.cuda.backend import GpuBackend, GpuExecutor
from backends.cuda.compile import DEFAULT_ARCH, STATS, compile_cubin
from backends.cuda.render import render_module

NAME = "cuda-prewarm"


class _CompileOnly(GpuExecutor):
    name = NAME
    arch = DEFAULT_ARCH

    def prepare(self, launches):
        compile_cubin(render_module([la.kernel for la in launches],
                                    {la.kernel.name: la for la in launches}), self.arch)
        return {la.kernel.name: None for la in launches}


class _Backend(GpuBackend):
    name = NAME

    def make_executor(self):
        return _CompileOnly()


def main(argv=None):
    import engine
    import frontends.tensor as T
    from tests.backends.cuda_graphs import GRAPHS, build

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arch", default=DEFAULT_ARCH)
    ap.add_argument("--rows", action="store_true", help="also every op-table row")
    args = ap.parse_args(argv)
    _CompileOnly.arch = args.arch
    register_backend(NAME, _Backend)
    t0 = time.perf_counter()
    for name in GRAPHS:
        build(name, NAME)
    if args.rows:
        from tests.op_rows import all_rows
        for row in all_rows():
            for dtype in row.dtypes:
                arrays = row.make_inputs(np.random.default_rng(0), dtype)
                syms = [T.tensor(a.dtype.name, a.shape, name=f"in{i}") for i, a in enumerate(arrays)]
                engine.function(syms, row.build(*syms), backend=NAME, on_unused_input="ignore")
    print(f"prewarm {args.arch}: {STATS['nvcc']} translation units compiled, "
          f"{STATS['cache_hits']} already cached, {time.perf_counter() - t0:.0f} s", file=sys.stderr)


if __name__ == "__main__":
    main()
