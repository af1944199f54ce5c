"""Error messages name the input or node, the expected and given type/shape, and the user's line.

Each test asserts on the text, including this file's line number where the mistake was made.
"""

from __future__ import annotations

import inspect

import numpy as np
import pytest

import engine
import frontends.tensor as T
from engine.errors import DisconnectedInputError, KilnError, KilnShapeError, KilnTypeError, KilnValueError

HERE = "test_errors.py"


def next_line() -> str:
    """``test_errors.py:N`` for the line after the caller's."""
    return f"{HERE}:{inspect.currentframe().f_back.f_lineno + 1}"


def line() -> str:
    """``test_errors.py:N`` for the caller's own line."""
    return f"{HERE}:{inspect.currentframe().f_back.f_lineno}"


def f32(shape):
    return np.ones(shape, "float32")


def test_wrong_argument_count_names_inputs_and_call_site():
    x, y = T.matrix("x"), T.vector("y")
    f = engine.function([x, y], x + y, backend="numpy")
    with pytest.raises(KilnTypeError) as info:
        site = next_line()
        f(f32((2, 2)))
    message = str(info.value)
    assert "expects 2 arguments (x, y), given 1" in message
    assert site in message


def test_wrong_dtype_names_input_expected_given_and_lines():
    declared = next_line()
    x = T.matrix("images")
    f = engine.function([x], x * 2, backend="numpy")
    with pytest.raises(KilnTypeError) as info:
        call = next_line()
        f(np.ones((2, 2)))
    message = str(info.value)
    assert "'images'" in message
    assert "expected dtype float32, given float64" in message
    assert "declared at" in message and declared in message
    assert call in message


def test_wrong_rank():
    x = T.matrix("x")
    f = engine.function([x], x.sum(), backend="numpy")
    with pytest.raises(KilnTypeError) as info:
        call = next_line()
        f(f32((2, 3, 4)))
    message = str(info.value)
    assert "'x'" in message and "expected 2-d" in message and "given a 3-d array of shape (2, 3, 4)" in message
    assert call in message


def test_wrong_static_dim():
    declared = next_line()
    x = T.matrix("x", shape=(None, 784))
    f = engine.function([x], x.sum(), backend="numpy")
    f(f32((5, 784)))
    with pytest.raises(KilnShapeError) as info:
        call = next_line()
        f(f32((5, 28)))
    message = str(info.value)
    assert "'x'" in message and "expected shape (?, 784), given (5, 28)" in message
    assert declared in message and call in message


def test_static_shape_mismatch_in_dot():
    a = T.matrix("a", shape=(None, 4))
    b = T.matrix("b", shape=(5, 3))
    with pytest.raises(KilnShapeError) as info:
        site = next_line()
        T.dot(a, b)
    message = str(info.value)
    assert "(?, 4) @ (5, 3)" in message and "4 != 5" in message
    assert site in message


def test_shape_mismatch_in_dot_at_run_time_names_node_and_line():
    a, b = T.matrix("a"), T.matrix("b")
    site = next_line()
    product = T.dot(a, b)
    f = engine.function([a, b], product, backend="numpy")
    with pytest.raises(KilnShapeError) as info:
        call = next_line()
        f(f32((2, 3)), f32((4, 5)))
    message = str(info.value)
    assert "MatMul" in message and "(2, 3)" in message and "(4, 5)" in message
    assert site in message and call in message


def test_static_broadcast_mismatch_names_the_line():
    a = T.matrix("a", shape=(2, 3))
    b = T.matrix("b", shape=(3, 3))
    with pytest.raises(KilnShapeError) as info:
        site = next_line()
        a + b
    message = str(info.value)
    assert "(2, 3) and (3, 3) cannot be broadcast" in message and site in message


def test_run_time_broadcast_mismatch_names_node():
    a, b = T.matrix("a"), T.vector("b")
    site = next_line()
    total = a + b
    f = engine.function([a, b], total, backend="numpy")
    with pytest.raises(KilnShapeError) as info:
        f(f32((2, 3)), f32((4,)))
    assert "Elemwise{add}" in str(info.value) and site in str(info.value)


def test_bad_update_dtype():
    declared = next_line()
    W = engine.shared(np.zeros(3, "float32"), name="W")
    site = next_line()
    new_value = T.cast(W, "float64") * 2
    with pytest.raises(KilnTypeError) as info:
        engine.function([], [], updates={W: new_value}, backend="numpy")
    message = str(info.value)
    assert "'W'" in message and "expected dtype float32, given an expression of dtype float64" in message
    assert declared in message and site in message


def test_bad_update_shape():
    declared = next_line()
    W = engine.shared(np.zeros((3, 2), "float32"), name="W")
    site = next_line()
    new_value = W.sum(axis=0)
    with pytest.raises(KilnShapeError) as info:
        engine.function([], [], updates={W: new_value}, backend="numpy")
    message = str(info.value)
    assert "'W'" in message and "expected shape (3, 2), given float32(2,)" in message
    assert declared in message and site in message


def test_bad_update_shape_at_run_time():
    declared = next_line()
    W = engine.shared(np.zeros((3, 2), "float32"), name="W", shape=(None, 2))
    v = T.matrix("v")
    f = engine.function([v], [], updates={W: v}, backend="numpy")
    with pytest.raises(KilnShapeError) as info:
        call = next_line()
        f(f32((3, 5)))
    message = str(info.value)
    assert "'W'" in message and "(3, 5)" in message and declared in message and call in message


def test_update_target_must_be_shared():
    x = T.vector("x")
    with pytest.raises(KilnTypeError, match="not a shared variable"):
        engine.function([x], [], updates={x: x * 2}, backend="numpy")
    s = engine.shared(np.zeros(2, "float32"), name="s")
    with pytest.raises(KilnTypeError, match="'s'.*None"):
        engine.function([], [], updates={s: None}, backend="numpy")


def test_disconnected_grad_names_variable_and_lines():
    x = T.vector("x")
    declared = next_line()
    unused = T.vector("unused")
    with pytest.raises(DisconnectedInputError) as info:
        call = next_line()
        engine.grad(x.sum(), unused)
    message = str(info.value)
    assert "does not depend on" in message and "unused" in message
    assert declared in message and call in message
    assert "disconnected_inputs='ignore'" in message


def test_grad_of_non_scalar_cost():
    x = T.vector("x")
    site = next_line()
    y = x * 2
    with pytest.raises(KilnTypeError) as info:
        engine.grad(y, x)
    assert "cost must be a scalar, given float32(?,)" in str(info.value) and site in str(info.value)
    with pytest.raises(KilnTypeError, match="wrt must be a variable"):
        engine.grad(x.sum(), 3)


def test_bool_of_a_variable_raises():
    site = next_line()
    x = T.scalar("x")
    with pytest.raises(KilnTypeError) as info:
        if x > 0:
            pass
    assert "truth value" in str(info.value) and "T.switch" in str(info.value)
    with pytest.raises(KilnTypeError) as info:
        bool(x)
    assert site in str(info.value)
    with pytest.raises(KilnTypeError, match="not iterable"):
        list(x)
    with pytest.raises(KilnTypeError, match="x.shape"):
        len(x)


def test_equality_is_identity():
    x, y = T.vector("x"), T.vector("y")
    assert (x == x) is True and (x == y) is False and (x != y) is True
    assert len({x, y, x}) == 2
    table = {x: 1, y: 2}
    assert table[x] == 1 and table[y] == 2
    assert x in [y, x] and T.eq(x, y).dtype == "bool"


def test_reshape_errors():
    x = T.matrix("x", shape=(2, 3))
    with pytest.raises(KilnShapeError) as info:
        site = next_line()
        x.reshape((4, 2))
    assert "(6 elements) to (4, 2) (8 elements)" in str(info.value) and site in str(info.value)
    y = T.matrix("y")
    f = engine.function([y], y.reshape((4, 2)), backend="numpy")
    with pytest.raises(KilnShapeError, match=r"shape \(2, 3\) \(6 elements\) to \(4, 2\)"):
        f(f32((2, 3)))


def test_index_errors():
    x = T.matrix("x", shape=(2, 3))
    with pytest.raises(KilnShapeError, match="index 5 is out of bounds for axis 0 with size 2"):
        x[5]
    with pytest.raises(KilnValueError, match="too many indices"):
        x[0, 0, 0]
    with pytest.raises(KilnTypeError, match="index arrays must be integers"):
        x[T.vector("f")]
    y = T.matrix("y")
    f = engine.function([y, T.lvector("i")], [], on_unused_input="ignore", backend="numpy")
    assert f(f32((2, 2)), np.array([0])) == []


def test_axis_errors():
    x = T.matrix("x")
    with pytest.raises(KilnValueError, match="axis 2 is out of range for a 2-d tensor"):
        x.sum(axis=2)
    with pytest.raises(KilnError, match="drops axis 0"):
        x.dimshuffle(1)


def test_python_int_overflow_in_expression():
    with pytest.raises(KilnTypeError, match="does not fit int32"):
        T.iscalar("i") * 2 ** 40


def test_unknown_backend():
    x = T.vector("x")
    with pytest.raises(KilnValueError, match="unknown backend 'tpu'.*numpy"):
        engine.function([x], x, backend="tpu")


def test_error_types_are_builtin_subclasses():
    assert issubclass(KilnTypeError, TypeError) and issubclass(KilnShapeError, ValueError)
    assert issubclass(DisconnectedInputError, ValueError)
    assert line().startswith(HERE)
