"""The op table, run on every backend: forward vs the numpy reference, and verify_grad."""

from __future__ import annotations

import numpy as np
import pytest

import engine
from tests.backend_fixture import available_backends
from tests.op_rows import OpRow, all_rows

ROWS = all_rows()
CASES = [(row, dtype) for row in ROWS for dtype in row.dtypes]
IDS = [f"{row.name}-{dtype}" for row, dtype in CASES]


def _symbols(arrays: list) -> list:
    import frontends.tensor as T

    return [T.tensor(a.dtype.name, a.shape, name=f"in{i}") for i, a in enumerate(arrays)]


@pytest.mark.parametrize("backend", available_backends())
@pytest.mark.parametrize("row,dtype", CASES, ids=IDS)
def test_forward(row: OpRow, dtype: str, backend: str) -> None:
    if backend in row.skip:
        pytest.skip(row.skip[backend])
    arrays = row.make_inputs(np.random.default_rng(0), dtype)
    symbols = _symbols(arrays)
    fn = engine.function(symbols, row.build(*symbols), backend=backend, on_unused_input="ignore")
    got = fn(*arrays)
    expected = np.asarray(row.reference(*arrays))
    assert got.shape == expected.shape, f"{row.name}: shape {got.shape} != reference {expected.shape}"
    if expected.dtype.kind in "biu":  # bool and integer results are exact
        assert got.dtype.kind == expected.dtype.kind, f"{row.name}: dtype {got.dtype} vs reference {expected.dtype}"
        np.testing.assert_array_equal(got, expected, err_msg=row.name)
        return
    rtol, atol = row.tolerance(dtype)
    np.testing.assert_allclose(got, expected, rtol=rtol, atol=atol, err_msg=row.name)


GRAD_CASES = [(row, dtype) for row, dtype in CASES if row.grad]


@pytest.mark.parametrize("backend", available_backends())
@pytest.mark.parametrize("row,dtype", GRAD_CASES, ids=[f"{r.name}-{d}" for r, d in GRAD_CASES])
def test_verify_grad(row: OpRow, dtype: str, backend: str) -> None:
    if backend in row.skip:
        pytest.skip(row.skip[backend])
    arrays = row.make_inputs(np.random.default_rng(1), dtype)
    engine.verify_grad(row.build, arrays, backend=backend, rng=np.random.default_rng(2), **row.grad_tolerance)
