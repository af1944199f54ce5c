"""Shared values live on the device between calls (backends.CompiledGraph.keeps_device_values),
and mode="guard" on the GPU backends. Run on "cuda-emulator": the same code path as "cuda"
(only the executor's copies differ), so the bookkeeping is tested on every machine."""

from __future__ import annotations

import numpy as np
import pytest

import engine
import frontends.tensor as T
from backends.cuda.backend import DeviceValue

EMU = "cuda-emulator"


def f32(*v):
    return np.array(v, "float32")


def _step():
    W = engine.shared(np.ones(5, "float32"), name="W")
    x = T.vector("x")
    f = engine.function([x], (x * W).sum(), updates={W: W + x}, backend=EMU)
    return W, f


def test_updated_shared_value_stays_on_the_device():
    W, f = _step()
    ones = np.ones(5, "float32")
    for k in range(3):
        assert f(ones) == 5 * (k + 1)
        assert isinstance(W._value, DeviceValue)
    st = f.compiled.stats
    # x crosses the bus every call, W only once (first call); only the output comes back
    assert st["uploads"] == 4 and st["downloads"] == 3
    np.testing.assert_array_equal(W.get_value(), np.full(5, 4, "float32"))
    assert f.compiled.stats["downloads"] == 3  # get_value downloads through the executor
    assert f(ones) == 20  # reading the value does not take it off the device
    assert f.compiled.stats["uploads"] == 5


def test_set_value_replaces_the_device_value_and_frees_it():
    W, f = _step()
    f(np.ones(5, "float32"))
    dev_alloc = W._value.dev.alloc
    assert dev_alloc.kept == 1
    W.set_value(f32(1, 2, 3, 4, 5))
    assert dev_alloc.kept == 0  # dropped: back in the executor's pool
    assert f(np.ones(5, "float32")) == 15
    np.testing.assert_array_equal(W.get_value(), f32(2, 3, 4, 5, 6))


def test_device_value_read_by_other_backends():
    W, f = _step()
    f(np.ones(5, "float32"))
    g = engine.function([], W * 2, backend="numpy")
    np.testing.assert_array_equal(g(), np.full(5, 4, "float32"))
    h = engine.function([], W.sum(), updates={W: W - 1}, backend="llvm")
    assert h() == 10
    assert isinstance(W._value, np.ndarray)
    assert f(np.ones(5, "float32")) == 5  # back on the emulator: uploaded again


def test_identity_and_swapped_updates_share_allocations_safely():
    A = engine.shared(f32(1, 2), name="A")
    B = engine.shared(f32(3, 4), name="B")
    x = T.vector("x")
    f = engine.function([x], (A * x).sum(), updates={A: B, B: A}, backend=EMU)
    for k in range(4):
        f(f32(1, 1))
        want = (f32(1, 2), f32(3, 4)) if k % 2 else (f32(3, 4), f32(1, 2))
        np.testing.assert_array_equal(A.get_value(), want[0])
        np.testing.assert_array_equal(B.get_value(), want[1])


def test_failed_call_commits_nothing_and_keeps_the_device_value():
    W, f = _step()
    f(np.ones(5, "float32"))
    before = W._value
    with pytest.raises(engine.errors.KilnError):
        f(np.ones(4, "float32"))
    assert W._value is before and before.dev.alloc.kept == 1
    np.testing.assert_array_equal(W.get_value(), np.full(5, 2, "float32"))


def test_dataset_in_givens_crosses_the_bus_once():
    data = engine.shared(np.arange(40, dtype="float32").reshape(10, 4), name="data")
    i = T.iscalar("i")
    x = T.matrix("x")
    f = engine.function([i], x.sum(), givens={x: data[i * 2:(i + 1) * 2]}, backend=EMU)
    got = [float(f(np.int32(k))) for k in range(5)]
    assert got == [float(data.get_value()[2 * k:2 * k + 2].sum()) for k in range(5)]
    assert f.compiled.stats["uploads"] == 1 + 5  # the dataset once, i every call


def test_guard_mode_names_the_node_and_commits_nothing():
    x = T.vector("x")
    W = engine.shared(f32(1.0, 2.0), name="W")
    site_line = __import__("inspect").currentframe().f_lineno + 1
    y = T.log(x) * W
    f = engine.function([x], y.sum(), updates={W: W + 1}, mode="guard", backend=EMU)
    np.testing.assert_allclose(f(f32(1.0, 1.0)), 0.0)
    with pytest.raises(engine.GuardError) as info:
        f(f32(0.0, 1.0))
    message = str(info.value)
    assert "guard:" in message and f"test_cuda_resident.py:{site_line}" in message
    np.testing.assert_array_equal(W.get_value(), f32(2.0, 3.0))  # only the first call committed
    unguarded = engine.function([x], T.log(x), backend=EMU)
    assert np.isneginf(unguarded(f32(0.0))[0])


def test_guard_mode_checks_host_nodes(monkeypatch):
    """Nodes without a GPU lowering run on the host; guard checks their results too."""
    from backends.cuda import backend as gb
    monkeypatch.setattr(gb, "has_lowering", lambda node: False)
    monkeypatch.setattr("backends.cuda.rules.has_gpu_lowering", lambda node: False)
    x = T.vector("x")
    f = engine.function([x], T.log(x), mode="guard", backend=EMU)
    assert f.compiled.host_nodes
    with pytest.raises(engine.GuardError):
        f(f32(-1.0))
