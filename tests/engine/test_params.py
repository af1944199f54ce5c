"""save_params / load_params: .npz round trip, no pickle, refusal of mismatches."""

from __future__ import annotations

import numpy as np
import pytest

import engine
from engine.errors import KilnTypeError, KilnValueError


def make_params():
    W = engine.shared(np.arange(6, dtype="float32").reshape(3, 2), name="W")
    b = engine.shared(np.array([0.5, -0.5], "float32"), name="b")
    steps = engine.shared(np.int64(7), name="steps")
    return [W, b, steps]


def test_roundtrip(tmp_path):
    path = tmp_path / "model.params"
    params = make_params()
    engine.save_params(path, params)
    assert path.exists()  # exactly the given path, no ".npz" appended
    saved = [p.get_value() for p in params]
    for p in params:
        p.set_value(np.zeros_like(p.get_value()))
    engine.load_params(path, params)
    for p, value in zip(params, saved):
        np.testing.assert_array_equal(p.get_value(), value)
        assert p.get_value().dtype == value.dtype
    with np.load(path, allow_pickle=False) as data:  # a plain .npz
        assert sorted(data.files) == ["W", "b", "steps"]


def test_unnamed_and_duplicate_names_roundtrip(tmp_path):
    a = engine.shared(np.ones(2, "float32"))
    b = engine.shared(np.zeros(2, "float32"), name="w")
    c = engine.shared(np.full(2, 3.0, "float32"), name="w")
    engine.save_params(tmp_path / "p.npz", [a, b, c])
    a2, b2, c2 = (engine.shared(np.empty(2, "float32"), name=n) for n in (None, "w", "w"))
    engine.load_params(tmp_path / "p.npz", [a2, b2, c2])
    assert [float(v.get_value()[0]) for v in (a2, b2, c2)] == [1.0, 0.0, 3.0]


def test_refuses_mismatches_and_changes_nothing(tmp_path):
    path = tmp_path / "p.npz"
    engine.save_params(path, make_params())

    def fresh(W_shape=(3, 2), W_dtype="float32", b_name="b"):
        return [engine.shared(np.zeros(W_shape, W_dtype), name="W"), engine.shared(np.zeros(2, "float32"), name=b_name),
                engine.shared(np.int64(0), name="steps")]

    wrong_shape = fresh(W_shape=(2, 3))
    with pytest.raises(KilnValueError, match=r"'W'.*float32\(3, 2\).*float32\(2, 3\)"):
        engine.load_params(path, wrong_shape)
    wrong_dtype = fresh(W_dtype="float64")
    with pytest.raises(KilnValueError, match=r"'W'.*float32\(3, 2\).*float64\(3, 2\)"):
        engine.load_params(path, wrong_dtype)
    missing = fresh(b_name="bias")
    with pytest.raises(KilnValueError, match="bias"):
        engine.load_params(path, missing)
    for params in (wrong_shape, wrong_dtype, missing):  # all or nothing
        assert all(not p.get_value().any() for p in params)
    with pytest.raises(KilnValueError, match=r"\['b', 'steps'\].*strict=False"):
        engine.load_params(path, fresh()[:1])
    subset = fresh()[:1]
    engine.load_params(path, subset, strict=False)
    assert subset[0].get_value()[2, 1] == 5.0
    with pytest.raises(KilnTypeError, match="shared variables"):
        engine.save_params(path, [np.zeros(2)])


def test_never_unpickles(tmp_path):
    path = tmp_path / "evil.npz"
    np.savez(path, W=np.array([object()], dtype=object))
    W = engine.shared(np.zeros(1, "float32"), name="W")
    with pytest.raises(ValueError):
        engine.load_params(path, [W])
