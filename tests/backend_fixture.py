"""Which backends the parametrized tests run on: every registered backend whose hardware is
here (``KILN_TEST_BACKENDS=numpy,llvm`` narrows the list, and can name an opt-in backend).

Opt-in only: "cuda" (needs a GPU: tests/backends/test_cuda_gpu.py) and "cuda-emulator" (it
passes the whole op table, forward and verify_grad, but verify_grad takes ~11 minutes there;
tests/backends/test_cuda_emulator.py runs the forward table and a verify_grad subset)."""

from __future__ import annotations

import os

OPT_IN = ("cuda", "cuda-emulator")


def available_backends() -> list[str]:
    from backends import registered_backends

    wanted = os.environ.get("KILN_TEST_BACKENDS")
    if wanted:
        return [b for b in registered_backends() if b in wanted.split(",") and b != "cuda"]
    # A test module may register a variant of an opt-in backend (e.g. the emulator declaring a
    # small device): it must not join every later parametrization, so opt-in covers the family.
    return [b for b in registered_backends() if not b.startswith(OPT_IN)]
