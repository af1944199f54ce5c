"""The LLVM CPU backend: kernel IR -> LLVM IR (render.py, mathops.py) -> machine code
(runtime.py), whole functions compiled by backend.py. ``register()`` adds it to the registry."""


def register() -> None:
    from backends import register_backend
    from backends.llvm.backend import LLVMBackend

    register_backend("llvm", LLVMBackend)
