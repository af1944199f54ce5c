"""RandomStreams: reproducibility, stream advance, re-seeding, the exact Philox mapping of
engine.philox, moments of 10^6 samples, symbolic sizes."""

from __future__ import annotations

import numpy as np
import pytest

import engine
import frontends.tensor as T
from engine import philox


def compile_(outputs, inputs=(), **kwargs):
    return engine.function(list(inputs), outputs, backend="numpy", **kwargs)


def test_same_seed_same_samples_different_seed_different():
    def draw(seed):
        rng = engine.RandomStreams(seed)
        return compile_([rng.uniform((3, 4)), rng.normal((5,)), rng.binomial((6,), p=0.4)])()

    a, b, c = draw(123), draw(123), draw(124)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    assert not np.array_equal(a[0], c[0]) and not np.array_equal(a[1], c[1])


def test_calls_and_functions_advance_one_shared_stream():
    rng = engine.RandomStreams(5)
    u = rng.uniform((2, 3))
    f, g = compile_(u), compile_(u * 1)
    first, second, third = f(), g(), f()
    key = philox.stream_key(5, 0)
    # each draw of 6 elements takes ceil(6 / 4) = 2 counter blocks
    np.testing.assert_array_equal(first, philox.uniform(key, 0, (2, 3)))
    np.testing.assert_array_equal(second, philox.uniform(key, 2, (2, 3)))
    np.testing.assert_array_equal(third, philox.uniform(key, 4, (2, 3)))
    assert not np.array_equal(first, second)


def test_each_random_variable_is_its_own_substream():
    rng = engine.RandomStreams(9)
    u1, u2 = rng.uniform((4,)), rng.uniform((4,))
    a, b = compile_([u1, u2])()
    np.testing.assert_array_equal(a, philox.uniform(philox.stream_key(9, 0), 0, (4,)))
    np.testing.assert_array_equal(b, philox.uniform(philox.stream_key(9, 1), 0, (4,)))
    # using the same random variable twice in one graph gives the same sample
    x, y = compile_([u1, u1 + 0])()
    np.testing.assert_array_equal(x, y)


def test_seed_resets_every_stream():
    rng = engine.RandomStreams(1)
    f = compile_([rng.uniform((3,)), rng.normal((3,))])
    first = f()
    f()
    rng.seed(1)
    for x, y in zip(first, f()):
        np.testing.assert_array_equal(x, y)
    rng.seed(2)
    again = f()
    np.testing.assert_array_equal(again[0], philox.uniform(philox.stream_key(2, 0), 0, (3,)))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_samples_equal_the_philox_reference_exactly(dtype):
    seed = 2**40 + 77  # uses both key words
    rng = engine.RandomStreams(seed)
    u = rng.uniform((3, 5), low=-2.0, high=3.0, dtype=dtype)
    n = rng.normal((7,), avg=1.0, std=2.0, dtype=dtype)
    b = rng.binomial((2, 3), p=0.3, dtype="int32")
    f = compile_([u, n, b])
    for call in range(2):
        got_u, got_n, got_b = f()
        np.testing.assert_array_equal(got_u, philox.uniform(philox.stream_key(seed, 0), call * 4, (3, 5), -2.0, 3.0,
                                                             dtype))
        np.testing.assert_array_equal(got_n, philox.normal(philox.stream_key(seed, 1), call * 2, (7,), 1.0, 2.0, dtype))
        np.testing.assert_array_equal(got_b, philox.binomial(philox.stream_key(seed, 2), call * 2, (2, 3), 0.3,
                                                              "int32"))
        assert got_u.dtype == dtype and got_n.dtype == dtype and got_b.dtype == np.int32


def test_binomial_with_tensor_probabilities_matches_reference():
    rng = engine.RandomStreams(3)
    p = T.matrix("p")
    sample = rng.binomial(size=p.shape, p=p, dtype="float32")
    assert sample.type.shape == (None, None) and sample.dtype == "float32"
    pv = np.array([[0.1, 0.9, 0.5], [0.0, 1.0, 0.3]], "float32")
    got = compile_(sample, [p])(pv)
    np.testing.assert_array_equal(got, philox.binomial(philox.stream_key(3, 0), 0, (2, 3), pv, "float32"))
    assert got[1, 0] == 0 and got[1, 1] == 1


N = 10**6


def within_4_sigma(value, expected, sigma):
    assert abs(value - expected) < 4 * sigma, f"{value} is not within 4 sigma ({sigma:.3g}) of {expected}"


def test_moments_of_a_million_samples():
    rng = engine.RandomStreams(2024)
    u, z, b = compile_([rng.uniform((N,), dtype="float64"), rng.normal((1000, 1000), dtype="float64"),
                        rng.binomial((N,), p=0.3)])()
    # uniform [0, 1): mean 1/2, variance 1/12, fourth central moment 1/80
    within_4_sigma(u.mean(), 0.5, np.sqrt(1 / 12 / N))
    within_4_sigma(u.var(), 1 / 12, np.sqrt((1 / 80 - 1 / 144) / N))
    assert u.min() >= 0 and u.max() < 1
    # standard normal: mean 0, variance 1 (fourth moment 3)
    within_4_sigma(z.mean(), 0.0, np.sqrt(1 / N))
    within_4_sigma(z.var(), 1.0, np.sqrt(2 / N))
    # Bernoulli(0.3): mean p, variance p q, fourth central moment p q (1 - 3 p q)
    pq = 0.3 * 0.7
    assert set(np.unique(b)) == {0, 1}
    within_4_sigma(b.mean(), 0.3, np.sqrt(pq / N))
    within_4_sigma(b.var(), pq, np.sqrt((pq * (1 - 3 * pq) - pq**2) / N))


def test_moments_with_parameters_float32():
    rng = engine.RandomStreams(7)
    u, z = compile_([rng.uniform((N,), low=2.0, high=6.0), rng.normal((N,), avg=-1.0, std=3.0)])()
    assert u.dtype == np.float32 and z.dtype == np.float32
    within_4_sigma(float(u.mean(dtype="float64")), 4.0, np.sqrt(16 / 12 / N))
    within_4_sigma(float(z.mean(dtype="float64")), -1.0, np.sqrt(9 / N))
    within_4_sigma(float(z.var(dtype="float64")), 9.0, np.sqrt(2 * 81 / N))


def test_symbolic_sizes():
    rng = engine.RandomStreams(11)
    x = T.matrix("x")
    n = T.lscalar("n")
    like_x = rng.normal(size=x.shape)
    assert like_x.type.shape == (None, None)
    mixed = rng.uniform(size=(x.shape[0], 3))
    counted = rng.uniform(size=(n,))
    f = compile_([like_x, mixed, counted], [x, n])
    a, b, c = f(np.zeros((4, 2), "float32"), 5)
    assert a.shape == (4, 2) and b.shape == (4, 3) and c.shape == (5,)
    static = rng.binomial(size=T.matrix("s", shape=(2, 7)).shape)
    assert static.type.shape == (2, 7)


def test_noise_in_a_training_graph_denoising_autoencoder_style():
    rng = engine.RandomStreams(0)
    x = T.matrix("x")
    corrupted = rng.binomial(size=x.shape, n=1, p=0.7, dtype=x.dtype) * x
    W = engine.shared(np.full((3, 2), 0.1, "float32"), name="W")
    cost = T.sqr(T.dot(corrupted, W)).sum()
    train = engine.function([x], cost, updates={W: W - 0.01 * engine.grad(cost, W)}, backend="numpy")
    xv = np.ones((4, 3), "float32")
    assert train(xv) != train(xv)  # fresh noise each call
    assert W.get_value().dtype == np.float32


def test_sample_dtypes_and_errors():
    rng = engine.RandomStreams(0)
    assert rng.uniform((2,)).dtype == engine.config.floatX
    assert rng.uniform((2,), dtype="float64").dtype == "float64"
    assert rng.binomial((2,)).dtype == "int64"
    with pytest.raises(engine.KilnValueError, match="n=1"):
        rng.binomial((2,), n=3)
