"""The dtype rules of DESIGN's semantics contract, and engine.config.floatX."""

from __future__ import annotations

import numpy as np
import pytest

import engine
import frontends.tensor as T
from engine.errors import KilnTypeError


@pytest.fixture
def floatx64():
    """Switch floatX to float64 for one test."""
    old = engine.config.floatX
    engine.config.floatX = "float64"
    yield
    engine.config.floatX = old


def test_declared_inputs_default_to_floatx():
    assert T.matrix("x").dtype == "float32"
    assert T.tensor4().dtype == "float32"
    assert T.matrix("x", dtype="float64").dtype == "float64"
    assert T.lvector().dtype == "int64" and T.iscalar().dtype == "int32"
    assert T.dmatrix().dtype == "float64" and T.fvector().dtype == "float32"


def test_floatx_switch(floatx64):
    assert T.matrix("x").dtype == "float64"
    assert T.scalar().dtype == "float64"
    assert T.constant(0.5).dtype == "float64"
    assert engine.shared(0.5).dtype == "float64"
    assert (T.ivector() / 2).dtype == "float64"
    assert T.ivector().mean().dtype == "float64"
    assert (T.ivector() * 0.5).dtype == "float64"


def test_floatx_rejects_other_values():
    with pytest.raises(ValueError, match="floatX"):
        engine.config.floatX = "float16"
    assert engine.config.floatX == "float32"


def test_python_scalars_are_weak():
    x = T.matrix("x")
    W = engine.shared(np.ones((2, 2), "float32"))
    assert (W - 0.1 * W).dtype == "float32"
    assert (x * 2).dtype == "float32"
    assert (2.5 ** x).dtype == "float32"
    assert (x + 1e300).dtype == "float32"  # weak even when the value does not fit
    assert (T.dmatrix() * 0.5).dtype == "float64"
    assert (T.bvector() + 1).dtype == "int8"
    assert (T.ivector() * 2).dtype == "int32"


def test_numpy_scalars_are_strong():
    x = T.vector("x")
    assert (x * np.float64(2.0)).dtype == "float64"
    assert (x * np.float32(2.0)).dtype == "float32"
    assert T.constant(np.float64(0.5)).dtype == "float64"


def test_tensor_tensor_promotion_follows_numpy():
    f32, f64 = T.vector(dtype="float32"), T.vector(dtype="float64")
    i32, i64, i8 = T.ivector(), T.lvector(), T.bvector()
    assert (f32 + f64).dtype == "float64"
    assert (f32 * i8).dtype == "float32"
    assert (f32 * i64).dtype == "float64"
    assert (i32 + i64).dtype == "int64"
    assert T.dot(T.matrix(dtype="float32"), T.matrix(dtype="float64")).dtype == "float64"
    assert T.concatenate([f32, i8]).dtype == "float32"


def test_integer_true_division_gives_floatx():
    i, j = T.iscalar("i"), T.lscalar("j")
    assert (i / j).dtype == "float32"
    assert (T.lvector() / 2).dtype == "float32"
    assert (T.ivector() * 0.5).dtype == "float32"
    assert T.sqrt(T.lvector()).dtype == "float32"
    assert (i // j).dtype == "int64"
    f = engine.function([i, j], i / j, backend="numpy")
    out = f(7, 2)
    assert out.dtype == np.float32 and float(out) == 3.5


def test_mean_of_integers_gives_floatx():
    y = T.lvector("y")
    assert y.mean().dtype == "float32"
    assert T.mean(T.imatrix(), axis=0).dtype == "float32"
    out = engine.function([y], y.mean(), backend="numpy")(np.array([1, 2], "int64"))
    assert out.dtype == np.float32 and float(out) == 1.5
    assert (T.vector() > 0).sum().dtype == "int64"
    assert T.bvector().sum().dtype == "int64" and T.imatrix().prod(axis=0).dtype == "int64"  # as numpy
    assert T.vector(dtype="uint8").sum().dtype == "uint64" and T.bvector().max().dtype == "int8"
    out = engine.function([b := T.bvector("b")], b.sum(), backend="numpy")(np.full(100, 100, "int8"))
    assert int(out) == 10000
    assert T.var(T.lvector()).dtype == "float32" and T.std(T.imatrix(), axis=1).dtype == "float32"


def test_comparisons_are_bool_and_casts_are_explicit():
    x = T.vector("x")
    assert (x < 1).dtype == "bool" and T.eq(x, x).dtype == "bool"
    assert T.cast(x, "int32").dtype == "int32"
    assert x.astype("float64").dtype == "float64"
    assert T.switch(x > 0, x, 0).dtype == "float32"


def test_no_silent_downcast_of_call_inputs():
    x = T.vector("x")
    i = T.iscalar("i")
    f = engine.function([x], x * 2, backend="numpy")
    with pytest.raises(KilnTypeError, match="float32.*float64"):
        f(np.ones(3))
    with pytest.raises(KilnTypeError, match="float32.*int64"):
        f(np.ones(3, "int64"))
    with pytest.raises(KilnTypeError, match="float32.*float64"):
        f(np.float64(1.0).reshape(1))
    assert f(np.ones(3, "int8")).dtype == np.float32  # lossless conversions are made
    assert f([1.0, 2.5]).dtype == np.float32  # Python floats are weak, as in expressions
    g = engine.function([i], i + 1, backend="numpy")
    assert int(g(3)) == 4
    with pytest.raises(KilnTypeError, match="int32.*float64"):
        g(1.5)
    with pytest.raises(KilnTypeError, match="int32"):
        g(2 ** 40)
    assert engine.function([x], x * 2, allow_input_downcast=True, backend="numpy")(np.ones(3)).dtype == np.float32


def test_updates_never_change_dtype():
    W = engine.shared(np.ones(2, "float32"), name="W")
    with pytest.raises(KilnTypeError, match="expected dtype float32, given an expression of dtype float64"):
        engine.function([], [], updates={W: W * np.float64(2.0)})
    engine.function([], [], updates={W: W * 2.0})()  # weak scalar: stays float32
    assert W.get_value().dtype == np.float32


def test_config_backend_is_the_default_backend():
    old = engine.config.backend
    try:
        engine.config.backend = "numpy"
        x = T.vector("x")
        assert engine.function([x], x).backend == "numpy"
        engine.config.backend = "no-such-backend"
        with pytest.raises(engine.KilnValueError, match="unknown backend 'no-such-backend'"):
            engine.function([x], x)
    finally:
        engine.config.backend = old


def test_unsupported_dtype():
    with pytest.raises(KilnTypeError, match="float16"):
        T.vector(dtype="float16")
