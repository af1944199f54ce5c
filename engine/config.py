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


def _flag(name: str) -> bool:
    """An on/off environment variable: 1/true/yes/on (any case) is on, unset or 0/false/no/off
    is off; anything else is refused rather than guessed."""
    value = os.environ.get(name, "").strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("", "0", "false", "no", "off"):
        return False
    raise ValueError(f"{name}={os.environ[name]!r}: expected 1 or 0")


@dataclass
class Config:
    floatX: str = field(default_factory=lambda: os.environ.get("KILN_FLOATX", "float32"))
    backend: str = ""
    #: KILN_DETERMINISTIC=1: bit-reproducible results on every backend, and ``normal`` samples
    #: bit-identical to the Philox reference (Box-Muller from IEEE basic operations,
    #: engine/portable_math.py). Read when a function is compiled (engine/DETERMINISM.md)
    deterministic: bool = field(default_factory=lambda: _flag("KILN_DETERMINISTIC"))
    compute_test_value: bool = False

    def __setattr__(self, name: str, value: object) -> None:
        if name == "floatX" and value not in FLOAT_DTYPES:
            raise ValueError(f"config.floatX must be one of {FLOAT_DTYPES}, given {value!r}")
        if name == "deterministic" and not isinstance(value, bool):
            raise ValueError(f"config.deterministic must be True or False, given {value!r}")
        super().__setattr__(name, value)

    def resolved_backend(self) -> str:
        if not self.backend:
            self.backend = _default_backend()
        return self.backend


config = Config()
