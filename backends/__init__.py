"""The backend interface and the registry of backends by name.

A backend turns an optimized ``FunctionGraph`` into a ``CompiledGraph``: something that maps
the input arrays (function inputs, then shared values) to the output arrays (function outputs,
then update values). The numpy backend runs op by op (the oracle); code generators schedule
kernels, render, compile and launch them.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from engine.errors import KilnValueError


@dataclass
class Capabilities:
    vector_width: int = 1
    threads: int = 1
    shared_memory_bytes: int = 0
    max_threads_per_block: int = 0
    extra: dict = field(default_factory=dict)


class CompiledGraph(ABC):
    """What a backend hands back: run arrays through the compiled graph."""

    #: generated kernels (empty for the numpy backend)
    kernels: list = []
    #: True when ``run`` may return update values that stay on a device: objects with
    #: ``shape``, ``dtype`` and ``to_host()``. engine.function stores them in the shared
    #: variable as they are and passes them back to ``run`` unread; reading the variable
    #: downloads (backends/cuda/backend.py DeviceValue)
    keeps_device_values: bool = False

    @abstractmethod
    def run(self, arrays: list[np.ndarray]) -> list[np.ndarray]:
        """Outputs for ``arrays`` (one per ``FunctionGraph.inputs``, validated by the caller)."""


class Backend(ABC):
    name: str = ""
    capabilities: Capabilities = Capabilities()
    #: whether the fusion passes should run for this backend (code generators fuse)
    fuses: bool = False

    @abstractmethod
    def compile(self, fgraph: object, options: dict) -> CompiledGraph:
        """Compile an optimized FunctionGraph."""


_REGISTRY: dict[str, Callable[[], Backend]] = {}
_INSTANCES: dict[str, Backend] = {}


def register_backend(name: str, factory: Callable[[], Backend]) -> None:
    _REGISTRY[name] = factory


def registered_backends() -> list[str]:
    _load_builtin()
    return sorted(_REGISTRY)


def get_backend(name: str) -> Backend:
    _load_builtin()
    if name not in _REGISTRY:
        raise KilnValueError(f"unknown backend {name!r}; available: {', '.join(sorted(_REGISTRY))}")
    if name not in _INSTANCES:
        _INSTANCES[name] = _REGISTRY[name]()
    return _INSTANCES[name]


def _load_builtin() -> None:
    if "numpy" in _REGISTRY:
        return
    import importlib

    from backends.numpy import NumpyBackend

    register_backend("numpy", NumpyBackend)
    for module in ("backends.llvm", "backends.cuda"):
        try:
            importlib.import_module(module).register()
        except (ImportError, AttributeError):
            pass
