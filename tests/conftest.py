"""Test-wide settings: LLVM kernels compile at -O0 unless KILN_LLVM_OPT says otherwise (tests
are dominated by compile time; the O3 pipeline is exercised where a test asks for it)."""

import os

os.environ.setdefault("KILN_LLVM_OPT", "0")
