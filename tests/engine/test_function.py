"""Semantics of compiled functions: updates, givens, shared variables, outputs, arguments.

Run on every registered backend: these are the contract every backend keeps.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import engine
import frontends.tensor as T
from engine.errors import KilnError
from tests.backend_fixture import available_backends


@pytest.fixture(params=available_backends())
def backend(request) -> str:
    return request.param


def f32(*values) -> np.ndarray:
    return np.array(values, dtype="float32")


# -- updates ------------------------------------------------------------------------------------


def test_updates_are_simultaneous_swap(backend):
    a = engine.shared(f32(1.0, 2.0), name="a")
    b = engine.shared(f32(3.0, 4.0), name="b")
    swap = engine.function([], [], updates={a: b, b: a}, backend=backend)
    swap()
    np.testing.assert_array_equal(a.get_value(), f32(3.0, 4.0))
    np.testing.assert_array_equal(b.get_value(), f32(1.0, 2.0))
    swap()
    np.testing.assert_array_equal(a.get_value(), f32(1.0, 2.0))


def test_updates_see_old_values_and_outputs_are_computed_before(backend):
    count = engine.shared(np.int64(0), name="count")
    total = engine.shared(np.float32(0.0), name="total")
    x = T.scalar("x")
    step = engine.function([x], [count, total + x], updates=[(count, count + 1), (total, total + x)],
                           backend=backend)
    assert [float(v) for v in step(2.0)] == [0.0, 2.0]
    assert [float(v) for v in step(3.0)] == [1.0, 5.0]
    assert int(count.get_value()) == 2 and float(total.get_value()) == 5.0


def test_sgd_step_keeps_float32(backend):
    x, y = T.matrix("x"), T.vector("y")
    W = engine.shared(np.zeros((3,), "float32"), name="W")
    cost = T.mean(T.sqr(T.dot(x, W) - y))
    g = engine.grad(cost, W)
    assert (W - 0.1 * g).dtype == "float32"
    train = engine.function([x, y], cost, updates={W: W - 0.1 * g}, backend=backend)
    xv = np.eye(3, dtype="float32")
    yv = f32(1.0, 2.0, 3.0)
    first = float(train(xv, yv))
    for _ in range(20):
        last = float(train(xv, yv))
    assert last < first
    assert W.get_value().dtype == np.float32


def test_update_values_that_are_not_expressions(backend):
    a = engine.shared(np.float64(0.0), name="a")
    b = engine.shared(np.zeros(2, "float32"), name="b")
    engine.function([], [], updates=[(a, 1.5), (b, [1, 2])], backend=backend)()
    assert a.get_value().dtype == np.float64 and float(a.get_value()) == 1.5
    np.testing.assert_array_equal(b.get_value(), [1, 2])
    with pytest.raises(KilnError, match="dtype float32, given an expression of dtype float64"):
        engine.function([], [], updates=[(b, np.ones(2))], backend=backend)
    with pytest.raises(KilnError, match=r"expected shape \(2,\)"):  # never broadcast to fit
        engine.function([], [], updates=[(b, 1.0)], backend=backend)


def test_update_may_change_a_none_dim(backend):
    s = engine.shared(np.ones((2, 3), "float32"), name="s", shape=(None, 3))
    engine.function([], [], updates={s: s[:1]}, backend=backend)()
    assert s.get_value().shape == (1, 3)


def test_failed_call_leaves_shared_variables_unchanged(backend):
    W = engine.shared(f32(1.0, 2.0), name="W")
    x = T.matrix("x")
    step = engine.function([x], T.dot(x, W), updates={W: W * 2}, backend=backend)
    with pytest.raises(KilnError):
        step(np.ones((2, 3), "float32"))  # inner dims differ at run time
    with pytest.raises(KilnError):
        step(np.ones(2, "float32"))  # wrong rank
    np.testing.assert_array_equal(W.get_value(), f32(1.0, 2.0))
    step(np.ones((1, 2), "float32"))
    np.testing.assert_array_equal(W.get_value(), f32(2.0, 4.0))


def test_failed_update_shape_check_changes_nothing(backend):
    a = engine.shared(f32(1.0), name="a")
    s = engine.shared(np.ones((2, 3), "float32"), name="s", shape=(None, 3))
    v = T.matrix("v")
    # the update of s has 3 columns statically unknown: checked at run time, before anything commits
    f = engine.function([v], [], updates=[(a, a + 1), (s, v)], backend=backend)
    with pytest.raises(KilnError, match="'s'"):
        f(np.ones((2, 4), "float32"))
    np.testing.assert_array_equal(a.get_value(), f32(1.0))
    assert s.get_value().shape == (2, 3)


# -- givens ---------------------------------------------------------------------------------------


def test_givens_shared_dataset_sliced_with_symbolic_index(backend):
    """The DeepLearningTutorials idiom: a shared dataset, minibatches selected through givens."""
    data = np.arange(20, dtype="float32").reshape(10, 2)
    labels = np.arange(10, dtype="int64") % 3
    train_x = engine.shared(data, name="train_x")
    train_y = engine.shared(labels, name="train_y")
    index = T.lscalar("index")
    x, y = T.matrix("x"), T.lvector("y")
    batch_size = 3
    f = engine.function(
        [index], [x.sum(axis=1), y],
        givens={x: train_x[index * batch_size:(index + 1) * batch_size],
                y: train_y[index * batch_size:(index + 1) * batch_size]},
        backend=backend)
    for i in range(4):  # the last minibatch is smaller: the slice clips, as numpy's
        sums, ys = f(i)
        np.testing.assert_array_equal(sums, data[i * 3:(i + 1) * 3].sum(axis=1))
        np.testing.assert_array_equal(ys, labels[i * 3:(i + 1) * 3])


def test_givens_with_int32_index_and_updates(backend):
    data = engine.shared(np.arange(12, dtype="float32").reshape(6, 2), name="data")
    W = engine.shared(np.zeros(2, "float32"), name="W")
    i = T.iscalar("i")
    x = T.matrix("x")
    f = engine.function([i], x.sum(), updates={W: W + x.sum(axis=0)}, givens={x: data[i * 2:i * 2 + 2]},
                        backend=backend)
    assert float(f(1)) == 4 + 5 + 6 + 7
    np.testing.assert_array_equal(W.get_value(), f32(10.0, 12.0))


def test_givens_pairs_and_type_check(backend):
    x = T.vector("x")
    y = T.vector("y")
    f = engine.function([y], x * 2, givens=[(x, y + 1)], backend=backend)
    np.testing.assert_array_equal(f(f32(1.0, 2.0)), f32(4.0, 6.0))
    with pytest.raises(KilnError, match="givens"):
        engine.function([y], x * 2, givens={x: T.lvector("z")}, backend=backend)
    with pytest.raises(KilnError, match=r"givens: .*float32\(\?,\).*float32\(\?, \?\)"):
        engine.function([], x * 2, givens={x: T.matrix("m")}, backend=backend)


# -- shared variables ------------------------------------------------------------------------------


def test_shared_get_set_copy_and_borrow():
    value = f32(1.0, 2.0)
    s = engine.shared(value, name="s")
    value[0] = 100.0  # shared() copied
    assert s.get_value()[0] == 1.0
    got = s.get_value()
    got[1] = 50.0  # get_value() copies
    assert s.get_value()[1] == 2.0
    s.get_value(borrow=True)[1] = 7.0  # borrow gives the internal buffer
    assert s.get_value()[1] == 7.0
    new = f32(3.0, 4.0)
    s.set_value(new)
    new[0] = -1.0
    assert s.get_value()[0] == 3.0
    s.set_value(new, borrow=True)
    new[1] = -2.0
    assert s.get_value()[1] == -2.0
    borrowed = np.ones(3, "float32")
    t = engine.shared(borrowed, borrow=True)
    borrowed[0] = 9.0
    assert t.get_value()[0] == 9.0


def test_shared_set_value_checks_type():
    s = engine.shared(np.zeros((2, 2), "float32"), name="weights")
    with pytest.raises(KilnError, match=r"shared variable 'weights'.*float32.*float64"):
        s.set_value(np.zeros((2, 2)))
    with pytest.raises(KilnError, match=r"\(2, 2\).*\(3, 2\)"):
        s.set_value(np.zeros((3, 2), "float32"))
    s.set_value([[1, 2], [3, 4]])  # Python numbers convert exactly
    assert s.get_value().dtype == np.float32


def test_shared_python_float_is_floatx():
    assert engine.shared(0.5).dtype == engine.config.floatX
    assert engine.shared(np.float64(0.5)).dtype == "float64"
    assert engine.shared(3).dtype == "int64"
    assert engine.shared([0.5, 1.5]).dtype == engine.config.floatX
    assert engine.shared([1, 2]).dtype == "int64" and engine.shared(np.zeros(2)).dtype == "float64"


def test_shared_value_used_by_later_calls(backend):
    s = engine.shared(f32(1.0, 2.0), name="s")
    f = engine.function([], s * 2, backend=backend)
    np.testing.assert_array_equal(f(), f32(2.0, 4.0))
    s.set_value(f32(5.0, 6.0))
    np.testing.assert_array_equal(f(), f32(10.0, 12.0))


# -- outputs and arguments ----------------------------------------------------------------------


def test_outputs_are_fresh_arrays_the_caller_owns(backend):
    s = engine.shared(f32(1.0, 2.0), name="s")
    x = T.vector("x")
    f = engine.function([x], [x, s, x * 1, T.constant(np.ones(2, "float32"))], backend=backend)
    xv = f32(3.0, 4.0)
    outs = f(xv)
    for out in outs:
        assert isinstance(out, np.ndarray) and out.flags.writeable
        assert not np.shares_memory(out, xv)
        assert not np.shares_memory(out, s.get_value(borrow=True))
        out[...] = -1.0
    np.testing.assert_array_equal(xv, f32(3.0, 4.0))
    np.testing.assert_array_equal(s.get_value(), f32(1.0, 2.0))
    again = f(xv)
    np.testing.assert_array_equal(again[3], f32(1.0, 1.0))
    a, b = engine.function([x], [x + 1, x + 1], backend=backend)(xv)
    assert not np.shares_memory(a, b)


def test_output_of_updated_shared_is_not_its_new_value(backend):
    s = engine.shared(f32(1.0), name="s")
    f = engine.function([], s, updates={s: s + 1}, backend=backend)
    out = f()
    assert float(out[0]) == 1.0 and float(s.get_value()[0]) == 2.0
    out[0] = 100.0
    assert float(s.get_value()[0]) == 2.0


def test_single_output_and_list_outputs(backend):
    x = T.vector("x")
    single = engine.function([x], x * 2, backend=backend)(f32(1.0))
    assert isinstance(single, np.ndarray)
    listed = engine.function([x], [x * 2], backend=backend)(f32(1.0))
    assert isinstance(listed, list) and len(listed) == 1
    pair = engine.function([x], (x * 2, x * 3), backend=backend)(f32(1.0))
    assert [float(v[0]) for v in pair] == [2.0, 3.0]
    assert engine.function([x], [], on_unused_input="ignore", backend=backend)(f32(1.0)) == []


def test_keyword_arguments(backend):
    x, y = T.scalar("x"), T.scalar("y")
    f = engine.function([x, y], x - y, backend=backend)
    assert float(f(y=1.0, x=3.0)) == 2.0
    assert float(f(3.0, y=1.0)) == 2.0
    with pytest.raises(KilnError, match="unexpected keyword argument 'z'"):
        f(x=1.0, z=2.0)
    with pytest.raises(KilnError, match=r"missing inputs \['y'\]"):
        f(x=1.0)


def test_python_numbers_and_lists_as_arguments(backend):
    x, i = T.matrix("x"), T.iscalar("i")
    f = engine.function([x, i], x * i, backend=backend)
    out = f([[1, 2], [3, 4.5]], 2)
    assert out.dtype == np.float64  # float32 * int32 -> float64 (numpy promotion)
    np.testing.assert_array_equal(out, [[2, 4], [6, 9]])


def test_on_unused_input(backend):
    x, y = T.vector("x"), T.vector("y")
    with pytest.raises(KilnError, match=r"input 1 \('y'"):
        engine.function([x, y], x * 2, backend=backend)
    with pytest.warns(UserWarning, match="is not used"):
        engine.function([x, y], x * 2, on_unused_input="warn", backend=backend)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        f = engine.function([x, y], x * 2, on_unused_input="ignore", backend=backend)
    np.testing.assert_array_equal(f(f32(1.0), f32(7.0, 8.0, 9.0)), f32(2.0))
    with pytest.raises(KilnError, match="on_unused_input"):
        engine.function([x], x, on_unused_input="sometimes", backend=backend)


def test_missing_input_is_an_error_at_compile_time(backend):
    x, y = T.vector("x"), T.vector("y")
    with pytest.raises(KilnError, match=r"depend on y .*not among the function's inputs"):
        engine.function([x], x + y, backend=backend)


def test_inputs_must_be_symbolic_inputs(backend):
    x = T.vector("x")
    s = engine.shared(f32(1.0))
    with pytest.raises(KilnError, match="list of variables"):
        engine.function(x, x * 2, backend=backend)
    with pytest.raises(KilnError, match="must be a symbolic input"):
        engine.function([x * 2], x, backend=backend)
    with pytest.raises(KilnError, match="must be a symbolic input"):
        engine.function([s], s, backend=backend)
    with pytest.raises(KilnError, match="twice"):
        engine.function([x, x], x, backend=backend)


def test_optimizer_none_runs_the_graph_as_written(backend):
    x = T.vector("x")
    y = T.log(T.exp(x)) * 1 + 0
    f = engine.function([x], y, optimizer=None, backend=backend)
    np.testing.assert_allclose(f(f32(0.5, 1.5)), f32(0.5, 1.5), rtol=1e-6)
    ops = [str(node.op) for node in engine.debug.iter_nodes(f)]
    assert "Elemwise{exp}" in ops and "Elemwise{log}" in ops


def test_allow_input_downcast(backend):
    x = T.vector("x")
    with pytest.raises(KilnError, match="allow_input_downcast"):
        engine.function([x], x * 2, backend=backend)(np.ones(2))
    f = engine.function([x], x * 2, allow_input_downcast=True, backend=backend)
    out = f(np.array([0.1, 0.2]))
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, [0.2, 0.4], rtol=1e-6)


# -- eval --------------------------------------------------------------------------------------


def test_eval_with_and_without_inputs():
    x = T.vector("x")
    np.testing.assert_array_equal((x * 2).eval({x: f32(1.0, 2.0)}), f32(2.0, 4.0))
    assert float((T.constant(2.0) * 3).eval()) == 6.0
    s = engine.shared(f32(1.0, 2.0))
    np.testing.assert_array_equal((s + 1).eval(), f32(2.0, 3.0))
    y = T.vector("y")
    np.testing.assert_array_equal((x + y + s).eval({x: f32(1.0, 1.0), y: [1.0, 2.0]}), f32(3.0, 5.0))
    with pytest.raises(KilnError, match="not among the function's inputs"):
        (x + y).eval({x: f32(1.0)})


def test_function_with_random_default_updates(backend):
    rng = engine.RandomStreams(3)
    u = rng.uniform((4,))
    f = engine.function([], u, backend=backend)
    first, second = f(), f()
    assert not np.array_equal(first, second)
    g = engine.function([], u, no_default_updates=True, backend=backend)
    np.testing.assert_array_equal(g(), g())


def test_guard_mode_names_the_node_and_commits_nothing():
    x = T.vector("x")
    W = engine.shared(f32(1.0, 2.0), name="W")
    site_line = __import__("inspect").currentframe().f_lineno + 1
    y = T.log(x) * W
    f = engine.function([x], y.sum(), updates={W: W + 1}, mode="guard", backend="numpy")
    np.testing.assert_allclose(f(f32(1.0, 1.0)), 0.0)
    with pytest.raises(engine.GuardError) as info:
        f(f32(0.0, 1.0))
    message = str(info.value)
    assert "Elemwise{log}" in message and "-inf" in message and f"test_function.py:{site_line}" in message
    np.testing.assert_array_equal(W.get_value(), f32(2.0, 3.0))  # only the first call committed
    unguarded = engine.function([x], T.log(x), backend="numpy")
    assert np.isneginf(unguarded(f32(0.0))[0])
