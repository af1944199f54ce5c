"""The CUDA backends: kernel IR bound to GPU blocks and threads (engine/gpu/),
rendered to CUDA C (render.py), compiled with nvcc (compile.py) and launched with pycuda
(runtime.py) -- ``backend="cuda"`` --, or run on the CPU by the emulator (emulator.py) --
``backend="cuda-emulator"``. backend.py holds what both share. ``register()`` adds both to the
registry; "cuda" raises a clear error at first use when pycuda, the driver or a GPU is missing.
"""


def register() -> None:
    from backends import register_backend
    from backends.cuda.backend import CudaBackend, EmulatorBackend

    register_backend("cuda", CudaBackend)
    register_backend("cuda-emulator", EmulatorBackend)
