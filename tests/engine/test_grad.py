"""engine.grad: several wrt, known_grads, consider_constant, stop_gradient, disconnected and
integer inputs, second-order gradients (against analytic values), and verify_grad itself."""

from __future__ import annotations

import dataclasses
import warnings

import numpy as np
import pytest

import engine
import frontends.tensor as T
from engine.errors import DisconnectedInputError
from engine.ops import elemwise as E

RNG = np.random.default_rng(0)


def run(inputs, outputs, *values):
    return engine.function(inputs, outputs, backend="numpy", on_unused_input="ignore")(*values)


def test_grad_several_wrt():
    x, W, b = T.dvector("x"), T.dmatrix("W"), T.dvector("b")
    cost = T.sum(T.tanh(T.dot(x, W) + b))
    gx, gW, gb = engine.grad(cost, [x, W, b])
    xv, Wv, bv = RNG.standard_normal(3), RNG.standard_normal((3, 2)), RNG.standard_normal(2)
    dh = 1 - np.tanh(xv @ Wv + bv) ** 2
    got = run([x, W, b], [gx, gW, gb], xv, Wv, bv)
    np.testing.assert_allclose(got[0], Wv @ dh)
    np.testing.assert_allclose(got[1], np.outer(xv, dh))
    np.testing.assert_allclose(got[2], dh)
    single = engine.grad(cost, b)
    assert not isinstance(single, list)
    assert isinstance(engine.grad(cost, (b,)), list)


def test_grad_of_shared_variables_and_float32():
    W = engine.shared(np.ones((2, 2), "float32"), name="W")
    x = T.matrix("x")
    g = engine.grad((T.dot(x, W) ** 2).sum(), W)
    assert g.dtype == "float32" and g.type.shape == (2, 2)
    xv = np.array([[1.0, 2.0]], "float32")
    np.testing.assert_allclose(run([x], g, xv), 2 * xv.T @ (xv @ np.ones((2, 2))))


def test_same_variable_used_twice_accumulates():
    x = T.dvector("x")
    g = engine.grad((x * x + x).sum(), x)
    np.testing.assert_allclose(run([x], g, np.array([1.0, 2.0])), [3.0, 5.0])


def test_known_grads():
    x = T.dvector("x")
    h = T.tanh(x)
    upstream = T.dvector("upstream")
    g = engine.grad(None, x, known_grads={h: upstream})
    xv, uv = np.array([0.1, -0.5]), np.array([2.0, 3.0])
    np.testing.assert_allclose(run([x, upstream], g, xv, uv), uv * (1 - np.tanh(xv) ** 2))
    # with a cost as well: both contributions add
    g2 = engine.grad(h.sum(), x, known_grads={h: upstream})
    np.testing.assert_allclose(run([x, upstream], g2, xv, uv), (uv + 1) * (1 - np.tanh(xv) ** 2))
    with pytest.raises(engine.KilnValueError, match="cost or known_grads"):
        engine.grad(None, x)


def test_consider_constant_rbm_style_cd_update():
    """The RBM tutorial's CD-k cost: free_energy(v) - free_energy(chain_end), chain end constant."""
    v = T.dvector("v")
    W = engine.shared(RNG.standard_normal((3, 2)) * 0.1, name="W")
    chain_end = T.sigmoid(T.dot(T.sigmoid(T.dot(v, W)), W.T))

    def free_energy(x):
        return -T.sum(T.softplus(T.dot(x, W)))

    cost = free_energy(v) - free_energy(chain_end)
    g_const = engine.grad(cost, W, consider_constant=[chain_end])
    vv = np.array([1.0, 0.0, 1.0])
    Wv = W.get_value()
    chain = 1 / (1 + np.exp(-(1 / (1 + np.exp(-vv @ Wv))) @ Wv.T))

    def dfe(x):  # d free_energy(x) / dW with x held constant
        return -np.outer(x, 1 / (1 + np.exp(-x @ Wv)))

    np.testing.assert_allclose(run([v], g_const, vv), dfe(vv) - dfe(chain), rtol=1e-10)
    g_full = engine.grad(cost, W)
    assert not np.allclose(run([v], g_full, vv), dfe(vv) - dfe(chain))


def test_stop_gradient():
    x = T.dvector("x")
    y = engine.stop_gradient(x * x)
    g = engine.grad((y * x).sum(), x)
    xv = np.array([1.0, 3.0])
    np.testing.assert_allclose(run([x], g, xv), xv * xv)
    np.testing.assert_allclose(run([x], y, xv), xv * xv)
    assert T.stop_gradient is engine.stop_gradient


def test_disconnected_inputs_policies():
    x, unused = T.dvector("x"), T.dmatrix("unused")
    cost = (x ** 2).sum()
    with pytest.raises(DisconnectedInputError):
        engine.grad(cost, [x, unused])
    gx, gu = engine.grad(cost, [x, unused], disconnected_inputs="ignore")
    assert gu.type.shape == unused.type.shape and gu.dtype == "float64"
    np.testing.assert_array_equal(run([x, unused], gu, np.ones(2), np.ones((2, 3))), np.zeros((2, 3)))
    with pytest.warns(UserWarning, match="does not depend"):
        engine.grad(cost, unused, disconnected_inputs="warn")
    assert engine.grad(cost, unused, disconnected_inputs="ignore", return_disconnected="none") is None
    # blocked by consider_constant counts as disconnected
    y = x * 2
    with pytest.raises(DisconnectedInputError):
        engine.grad(y.sum(), x, consider_constant=[y])


def test_grad_through_non_differentiable_paths_is_zero():
    x = T.dvector("x")
    cost = T.cast(T.argmax(x), "float64") + T.cast(T.cast(x, "int32"), "float64").sum() + (x > 0).sum()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        g = engine.grad(cost, x)
    np.testing.assert_array_equal(run([x], g, np.array([0.5, 2.5])), [0.0, 0.0])


def test_integer_inputs():
    x = T.dvector("x")
    k = T.lvector("k")
    cost = (x * k).sum() + x[k].sum()
    gx, gk = engine.grad(cost, [x, k])
    assert gk.dtype == "int64"  # an integer wrt the cost depends on gets a zero gradient
    xv, kv = np.array([1.0, 2.0, 3.0]), np.array([2, 0, 2])
    got_x, got_k = run([x, k], [gx, gk], xv, kv)
    np.testing.assert_allclose(got_x, kv + np.bincount(kv, minlength=3))
    np.testing.assert_array_equal(got_k, [0, 0, 0])
    with pytest.raises(engine.KilnTypeError, match="cost must be a float"):
        engine.grad(k.sum(), k)


def test_grad_with_none_dims_broadcast_at_run_time():
    a, b = T.dmatrix("a"), T.dvector("b")
    ga, gb = engine.grad((a * b).sum(), [a, b])
    av, bv = np.ones((3, 1)), np.arange(4.0)
    got_a, got_b = run([a, b], [ga, gb], av, bv)
    np.testing.assert_allclose(got_a, np.full((3, 1), 6.0))
    np.testing.assert_allclose(got_b, np.full(4, 3.0))


# -- second order: grad of grad, against analytic values ---------------------------------------

X = np.array([0.3, -0.7, 1.2, 0.45])


def hessian_vector(expr_fn, xv, vv):
    """d/dx (grad f(x) . v): the Hessian of f times v."""
    x, v = T.dvector("x"), T.dvector("v")
    g = engine.grad(expr_fn(x), x)
    hv = engine.grad((g * v).sum(), x)
    return run([x, v], hv, xv, vv)


ELEMENTWISE_SECOND = {
    "tanh": (T.tanh, lambda x: -2 * np.tanh(x) * (1 - np.tanh(x) ** 2)),
    "sigmoid": (T.sigmoid, lambda x: (s := 1 / (1 + np.exp(-x))) * (1 - s) * (1 - 2 * s)),
    "softplus": (T.softplus, lambda x: (s := 1 / (1 + np.exp(-x))) * (1 - s)),
    "exp": (T.exp, np.exp),
    "log": (lambda x: T.log(x + 2), lambda x: -1 / (x + 2) ** 2),
    "sqrt": (lambda x: T.sqrt(x + 2), lambda x: -0.25 * (x + 2) ** -1.5),
    "cube": (lambda x: x ** 3, lambda x: 6 * x),
    "pow_exponent": (lambda x: 2.0 ** x, lambda x: np.log(2.0) ** 2 * 2.0 ** x),
    "reciprocal": (lambda x: 1 / (x + 2), lambda x: 2 / (x + 2) ** 3),
    "sin": (T.sin, lambda x: -np.sin(x)),
    "sqr_of_relu": (lambda x: T.sqr(T.relu(x)), lambda x: np.where(x > 0, 2.0, 0.0)),
    "abs_times_x": (lambda x: abs(x) * x, lambda x: 2 * np.sign(x)),
}


@pytest.mark.parametrize("name", sorted(ELEMENTWISE_SECOND))
def test_second_order_elementwise(name):
    fn, second = ELEMENTWISE_SECOND[name]
    v = np.array([1.0, -2.0, 0.5, 3.0])
    np.testing.assert_allclose(hessian_vector(lambda x: fn(x).sum(), X, v), second(X) * v, rtol=1e-10)


def test_second_order_reductions():
    v = np.array([1.0, -2.0, 0.5, 3.0])
    n = len(X)
    # sum(x)^2: H = 2 * ones
    np.testing.assert_allclose(hessian_vector(lambda x: x.sum() ** 2, X, v), np.full(n, 2 * v.sum()))
    # mean(x)^2: H = 2/n^2 * ones
    np.testing.assert_allclose(hessian_vector(lambda x: x.mean() ** 2, X, v), np.full(n, 2 * v.sum() / n ** 2))
    # var(x): H = 2/n (I - 11^T / n)
    np.testing.assert_allclose(hessian_vector(T.var, X, v), 2 / n * (v - v.mean()))
    # max(x)^2: only the argmax entry, H[i, i] = 2
    expected = np.zeros(n)
    expected[np.argmax(X)] = 2 * v[np.argmax(X)]
    np.testing.assert_allclose(hessian_vector(lambda x: x.max() ** 2, X, v), expected)
    # prod(x): H[i, j] = prod / (x_i x_j) for i != j, 0 on the diagonal
    H = np.prod(X) / np.outer(X, X)
    np.fill_diagonal(H, 0.0)
    np.testing.assert_allclose(hessian_vector(T.prod, X, v), H @ v)
    # sum over an axis of a reshaped vector, squared
    H2 = np.kron(np.eye(2), np.full((2, 2), 2.0))
    np.testing.assert_allclose(hessian_vector(lambda x: (x.reshape((2, 2)).sum(axis=1) ** 2).sum(), X, v), H2 @ v)


def test_second_order_dot():
    A = RNG.standard_normal((4, 4))
    v = np.array([1.0, -2.0, 0.5, 3.0])
    A_sym = T.constant(A)
    # x^T A x: H = A + A^T
    np.testing.assert_allclose(hessian_vector(lambda x: T.dot(x, T.dot(A_sym, x)), X, v), (A + A.T) @ v)
    # || X W ||^2 over a matrix W: d/dW (grad . V) = 2 X^T X V
    Xm = RNG.standard_normal((5, 3))
    W, V = T.dmatrix("W"), T.dmatrix("V")
    g = engine.grad(T.sqr(T.dot(T.constant(Xm), W)).sum(), W)
    hv = engine.grad((g * V).sum(), W)
    Vv = RNG.standard_normal((3, 2))
    np.testing.assert_allclose(run([W, V], hv, RNG.standard_normal((3, 2)), Vv), 2 * Xm.T @ Xm @ Vv)
    # batched matmul
    B = T.dtensor3("B")
    gb = engine.grad(T.sqr(T.matmul(B, B)).sum(), B)
    f2 = engine.grad(gb.sum(), B)
    assert f2.type.ndim == 3
    engine.verify_grad(lambda b: engine.grad(T.sqr(T.matmul(b, b)).sum(), b), [RNG.standard_normal((2, 2, 2))],
                       backend="numpy")


SECOND_ORDER_VERIFY = {
    "logistic_regression": (lambda W, x: engine.grad(T.mean(T.softplus(-T.dot(x, W))), W),
                            [RNG.standard_normal((3, 2)), RNG.standard_normal((4, 3))]),
    "broadcast_mul_div": (lambda a, b: engine.grad((a * b / (b * b + 1)).sum(), a) * b,
                          [RNG.standard_normal((2, 3)), RNG.standard_normal((3,))]),
    "max_axis": (lambda a: engine.grad((a.max(axis=1) ** 2).sum(), a), [np.array([[0.1, 0.9, -0.5], [1.5, 0.2, 0.3]])]),
    "std": (lambda a: engine.grad(a.std(axis=0).sum(), a), [RNG.standard_normal((4, 2))]),
    "subtensor": (lambda a: engine.grad((a[1:, ::-1] ** 3).sum(), a), [RNG.standard_normal((3, 3))]),
    "advanced": (lambda a: engine.grad((a[np.array([0, 2, 0])] ** 3).sum(), a), [RNG.standard_normal((3, 2))]),
    "set_subtensor": (lambda a, b: engine.grad((T.set_subtensor(a[1:], b * a[0]) ** 2).sum(), a),
                      [RNG.standard_normal((3, 2)), RNG.standard_normal((2,))]),
    "concatenate_reshape": (lambda a: engine.grad((T.concatenate([a, a ** 2]).reshape((2, -1)) ** 2).sum(), a),
                            [RNG.standard_normal((2, 3))]),
    "where_clip": (lambda a: engine.grad((T.where(a > 0, a ** 3, T.clip(a, -0.5, 0.5) ** 2)).sum(), a),
                   [np.array([-1.0, -0.2, 0.3, 0.8])]),
}


@pytest.mark.parametrize("name", sorted(SECOND_ORDER_VERIFY))
def test_second_order_against_finite_differences(name):
    fn, inputs = SECOND_ORDER_VERIFY[name]
    engine.verify_grad(fn, inputs, backend="numpy", rng=np.random.default_rng(1))


# -- verify_grad itself -----------------------------------------------------------------------------


def test_verify_grad_catches_a_wrong_gradient(monkeypatch):
    wrong = dataclasses.replace(E.SCALAR_OPS["tanh"], vjp=lambda i, o, g: [E.mul(g, E.sub(1.05, E.sqr(o)))])
    monkeypatch.setitem(E.SCALAR_OPS, "tanh", wrong)
    for dtype in ("float32", "float64"):
        with pytest.raises(AssertionError, match="differs from finite differences"):
            engine.verify_grad(T.tanh, [RNG.standard_normal((2, 3)).astype(dtype)], backend="numpy")


def test_verify_grad_holds_integer_inputs_fixed_and_handles_0d():
    p = RNG.uniform(0.5, 1.5, (3, 4))
    y = np.array([0, 3, 1])
    engine.verify_grad(lambda p, y: -T.mean(T.log(p)[T.arange(3), y]), [p, y], backend="numpy")
    engine.verify_grad(lambda a: a * 3, [np.array(2.0)], backend="numpy")  # 0-d input and output
    engine.verify_grad(lambda a: a.sum(), [np.ones((2, 2), "float32")], backend="numpy")
    engine.verify_grad(lambda a, n: a * T.cast(n, "float64"), [np.ones(3), np.array(4)], backend="numpy")
