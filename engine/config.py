"""Process-wide settings: ``engine.config.floatX``, ``engine.config.backend``, ...

Environment variables give the defaults so that scripts and CI can switch behaviour without
code changes: ``KILN_FLOATX``, ``KILN_BACKEND``, ``KILN_DETERMINISTIC``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

FLOAT_DTYPES = ("float32", "float64")


def _default_backend() -> str:
    requested = os.environ.get("KILN_BACKEND")
    if requested:
        return requested
    try:
        import llvmlite  # noqa: F401

        from backends import registered_backends

        return "llvm" if "llvm" in registered_backends() else "numpy"
    except ImportError:
        return "numpy"


@dataclass
class Config:
    floatX: str = field(default_factory=lambda: os.environ.get("KILN_FLOATX", "float32"))
    backend: str = ""
    deterministic: bool = field(default_factory=lambda: os.environ.get("KILN_DETERMINISTIC", "0") == "1")
    compute_test_value: bool = False

    def __setattr__(self, name: str, value: object) -> None:
        if name == "floatX" and value not in FLOAT_DTYPES:
            raise ValueError(f"config.floatX must be one of {FLOAT_DTYPES}, given {value!r}")
        super().__setattr__(name, value)

    def resolved_backend(self) -> str:
        if not self.backend:
            self.backend = _default_backend()
        return self.backend


config = Config()
