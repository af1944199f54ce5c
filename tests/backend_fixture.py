"""Which backends the parametrized tests run on: every registered backend whose hardware is
here (``KILN_TEST_BACKENDS=numpy,llvm`` narrows the list)."""

from __future__ import annotations

import os


def available_backends() -> list[str]:
    from backends import registered_backends

    names = [b for b in registered_backends() if b != "cuda"]
    wanted = os.environ.get("KILN_TEST_BACKENDS")
    if wanted:
        names = [b for b in names if b in wanted.split(",")]
    return names
