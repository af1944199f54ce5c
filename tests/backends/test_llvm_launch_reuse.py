"""The LLVM backend's per-call fast path (issue 6): what a node remembers from one call to the
next (output and temp shapes per input signature) must never leak into a call whose shapes,
strides or small values differ, nor survive a failing call."""

import threading

import numpy as np
import pytest

pytest.importorskip("llvmlite")

import engine  # noqa: E402
import frontends.tensor as T  # noqa: E402
from engine.errors import KilnShapeError  # noqa: E402

rng = np.random.default_rng(0)


def randn(*shape):
    return rng.standard_normal(shape).astype("float32")


def test_changing_shapes_and_strides_match_numpy():
    x, y = T.matrix("x"), T.matrix("y")
    out = [T.tanh(x * y + 1), T.dot(x, y.T), x.sum(axis=0)]
    f = engine.function([x, y], out, backend="llvm")
    ref = engine.function([x, y], out, backend="numpy")
    big = randn(12, 10)
    cases = [(randn(3, 4), randn(3, 4)), (randn(5, 2), randn(5, 2)), (randn(3, 4), randn(3, 4)),
             (big[::2, 1:5], big[1::2, 3:7]),          # strided views, same shape as the first
             (big[:4, :3].T, big[4:7, :4]),             # a transposed operand
             (randn(1, 4), randn(1, 4)), (randn(3, 4), randn(3, 4))]
    for a, b in cases * 2:
        for got, want in zip(f(a, b), ref(a, b)):
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_runtime_broadcasting_changes_between_calls():
    x, y = T.matrix("x"), T.matrix("y")
    f = engine.function([x, y], x + y, backend="llvm")
    a = randn(4, 3)
    for b in (randn(4, 3), randn(1, 3), randn(4, 1), randn(4, 3), randn(1, 1)):
        np.testing.assert_allclose(f(a, b), a + b, rtol=1e-6)


def test_small_integer_values_that_decide_shapes_are_part_of_the_signature():
    n = T.lscalar("n")
    x = T.vector("x")
    f = engine.function([n, x], [T.ones((n,)) * 2, x + 1], backend="llvm")
    v = randn(5)
    for k in (3, 7, 3, 0, 7):
        ones, shifted = f(k, v)
        assert ones.shape == (k,)
        np.testing.assert_allclose(ones, 2.0)
        np.testing.assert_allclose(shifted, v + 1, rtol=1e-6)


def test_a_failing_call_leaves_nothing_behind():
    x, y = T.matrix("x"), T.matrix("y")
    f = engine.function([x, y], [x * y, T.dot(x, y.T)], backend="llvm")
    a, b = randn(3, 4), randn(3, 4)
    first = f(a, b)
    with pytest.raises(KilnShapeError):
        f(a, randn(2, 4))
    with pytest.raises(KilnShapeError):
        f(a, randn(2, 4))   # the same failure again: it was not remembered as a pass
    again = f(a, b)
    for g, w in zip(again, first):
        np.testing.assert_array_equal(g, w)
    idx = T.lvector("idx")
    h = engine.function([x, idx], x[idx], backend="llvm")
    np.testing.assert_array_equal(h(a, np.array([0, 2])), a[[0, 2]])
    with pytest.raises(KilnShapeError, match="out of bounds"):
        h(a, np.array([0, 7]))   # same shapes as the good call: the bounds check still runs
    big = np.arange(100) % 3
    np.testing.assert_array_equal(h(a, big), a[big])
    bad = big.copy()
    bad[50] = 9
    with pytest.raises(KilnShapeError, match="out of bounds"):
        h(a, bad)


def test_updates_across_calls_and_shapes():
    w = engine.shared(np.zeros(4, "float32"), name="w")
    x = T.matrix("x")
    step = engine.function([x], w.sum(), updates=[(w, w + x.sum(axis=0))], backend="llvm")
    total = np.zeros(4, "float32")
    for rows in (2, 5, 2, 1, 5):
        a = randn(rows, 4)
        step(a)
        total += a.sum(axis=0)
        np.testing.assert_allclose(w.get_value(), total, rtol=1e-5, atol=1e-5)


def test_concurrent_calls_with_different_shapes():
    x = T.matrix("x")
    f = engine.function([x], T.exp(x) * 2 + x.sum(), backend="llvm")
    inputs = [randn(k + 1, 3) for k in range(6)]
    errors = []

    def worker(k):
        try:
            for _ in range(30):
                a = inputs[(k + _) % len(inputs)]
                np.testing.assert_allclose(f(a), np.exp(a) * 2 + a.sum(), rtol=1e-4, atol=1e-4)
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[0]
