"""backend="cuda" on a real GPU: the representative graphs and the whole op table against the
numpy oracle, random samples bit-identical, shared values kept on the device, PTX per kernel.
Marked ``gpu``; skipped cleanly without pycuda, a driver, a GPU or nvcc.

On a lent GPU machine: backends/cuda/GPU.md (the recipe that ran; 441 passed on an H200).
"""

from __future__ import annotations

import numpy as np
import pytest

import engine
import frontends.tensor as T
from backends.cuda import runtime
from tests.backends.cuda_graphs import GRAPHS, build
from tests.op_rows import all_rows

_OK, _WHY = runtime.status()
pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not _OK, reason=_WHY)]


def _close(got, want):
    got, want = np.asarray(got), np.asarray(want)
    assert got.shape == want.shape and got.dtype == want.dtype
    if want.dtype.kind in "biu":
        np.testing.assert_array_equal(got, want)
    else:
        tol = 2e-4 if want.dtype == np.float32 else 1e-10
        np.testing.assert_allclose(got, want, rtol=tol, atol=tol)


@pytest.mark.parametrize("name", sorted(GRAPHS))
def test_graphs_on_the_gpu(name, monkeypatch):
    monkeypatch.setenv("KILN_CUDA_STRICT", "1")
    fn, arrays = build(name, "cuda")
    ref, _ = build(name, "numpy")
    emu, _ = build(name, "cuda-emulator")
    for _ in range(2):
        got, want, emulated = fn(*arrays), ref(*arrays), emu(*arrays)
        for g, w in zip(got, want):
            _close(g, w)
        if name == "random":
            for g, e in zip(got, emulated):
                np.testing.assert_array_equal(g, e)


def test_shared_values_stay_on_the_gpu():
    W = engine.shared(np.ones((300, 40), "float32"), name="W")
    x = T.matrix("x")
    f = engine.function([x], (T.dot(x, W)).sum(), updates={W: W * 0.5}, backend="cuda")
    a = np.ones((10, 300), "float32")
    f(a)
    uploads = f.compiled.stats["uploads"]
    f(a)
    assert f.compiled.stats["uploads"] == uploads + 1
    np.testing.assert_array_equal(W.get_value(), np.full((300, 40), 0.25, "float32"))


def test_ptx_of_each_kernel():
    fn, _ = build("softmax", "cuda")
    for k in fn.kernels:
        assert ".entry" in k.source("ptx") and 'extern "C"' in k.source("cuda")


CASES = [(row, dtype) for row in all_rows() for dtype in row.dtypes]


@pytest.mark.parametrize("row,dtype", CASES, ids=[f"{r.name}-{d}" for r, d in CASES])
def test_op_table_on_the_gpu(row, dtype):
    if "cuda" in row.skip:
        pytest.skip(row.skip["cuda"])
    arrays = row.make_inputs(np.random.default_rng(0), dtype)
    symbols = [T.tensor(a.dtype.name, a.shape, name=f"in{i}") for i, a in enumerate(arrays)]
    fn = engine.function(symbols, row.build(*symbols), backend="cuda", on_unused_input="ignore")
    got, expected = fn(*arrays), np.asarray(row.reference(*arrays))
    assert got.shape == expected.shape
    if expected.dtype.kind in "biu":
        np.testing.assert_array_equal(got, expected)
    else:
        rtol, atol = row.tolerance(dtype)
        np.testing.assert_allclose(got, expected, rtol=rtol, atol=atol)
