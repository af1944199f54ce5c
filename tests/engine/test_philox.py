"""Tests for engine.philox: known answers, the counter mapping, and the distributions."""

import math

import numpy as np
import pytest

from engine.philox import (
    binomial,
    blocks_needed,
    normal,
    philox4x32_10,
    random_words,
    stream_key,
    uniform,
)

# Random123 tests/kat_vectors, the three "philox4x32 10" lines: counter, key, expected.
KAT = [
    ((0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
    (
        (0xFFFFFFFF,) * 4,
        (0xFFFFFFFF, 0xFFFFFFFF),
        (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD),
    ),
    (
        (0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344),
        (0xA4093822, 0x299F31D0),
        (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1),
    ),
]

KEY = stream_key(1234, 0)
FLOATS = ["float32", "float64"]


@pytest.mark.parametrize("counter,key,expected", KAT)
def test_known_answers(counter, key, expected):
    out = philox4x32_10(np.array(counter, dtype=np.uint32), key)
    assert out.dtype == np.uint32
    assert out.tolist() == list(expected)


def test_known_answers_vectorized():
    counters = np.array([c for c, _, _ in KAT], dtype=np.uint32).reshape(3, 1, 4)
    for j, (_, key, expected) in enumerate(KAT):
        # a batch gives per-row the same answer as one counter at a time
        out = philox4x32_10(counters, key)
        assert out.shape == (3, 1, 4)
        assert out[j, 0].tolist() == list(expected)


def test_philox_rejects_bad_input():
    with pytest.raises(ValueError):
        philox4x32_10(np.zeros(3, np.uint32), (0, 0))
    with pytest.raises(ValueError):
        philox4x32_10(np.zeros(4, np.uint32), (0, 2**32))
    with pytest.raises(ValueError):
        philox4x32_10(np.zeros(4, np.uint32), (0,))


def test_stream_key():
    seed = 0x0123456789ABCDEF
    assert stream_key(seed, 0) == (0x89ABCDEF, 0x01234567)
    assert stream_key(seed, 5) == (0x89ABCDEF, 0x01234567 ^ 5)
    assert stream_key(7, 3) == (7, 3)
    assert stream_key(-1, 0) == (0xFFFFFFFF, 0xFFFFFFFF)  # seed taken modulo 2**64
    with pytest.raises(ValueError):
        stream_key(0, 2**32)


def test_blocks_needed():
    assert [blocks_needed(n) for n in range(10)] == [0, 1, 1, 1, 1, 2, 2, 2, 2, 3]
    assert blocks_needed(10**6 + 1) == 250001


def test_words_mapping_explicit():
    key, start, n = (0xDEADBEEF, 0x12345678), 2**32 - 2, 11  # carries into the high word
    words = random_words(key, start, n)
    assert words.dtype == np.uint32 and words.shape == (n,)
    for i in range(n):
        b = start + i // 4
        ctr = np.array([b & 0xFFFFFFFF, b >> 32, 0, 0], dtype=np.uint32)
        assert words[i] == philox4x32_10(ctr, key)[i % 4]
    assert random_words(key, start, 0).shape == (0,)


def test_words_counter_wraps_modulo_2_64():
    key = (1, 2)
    words = random_words(key, 2**64 - 1, 8)
    assert words[:4].tolist() == philox4x32_10([0xFFFFFFFF] * 2 + [0, 0], key).tolist()
    assert words[4:].tolist() == philox4x32_10([0, 0, 0, 0], key).tolist()


def test_prefix_property():
    # element i does not depend on the sample size
    a, b = random_words(KEY, 7, 10), random_words(KEY, 7, 12)
    np.testing.assert_array_equal(a, b[:10])
    for dt in FLOATS:
        np.testing.assert_array_equal(
            uniform(KEY, 7, 10, -1, 2, dt), uniform(KEY, 7, (3, 4), -1, 2, dt).ravel()[:10]
        )
        np.testing.assert_array_equal(
            normal(KEY, 7, (5, 2), 1, 3, dt).ravel(), normal(KEY, 7, 12, 1, 3, dt)[:10]
        )
    np.testing.assert_array_equal(binomial(KEY, 7, 10, 0.4), binomial(KEY, 7, 12, 0.4)[:10])


@pytest.mark.parametrize("n,m", [(10, 7), (12, 5), (1, 1), (0, 3), (5, 9)])
def test_consecutive_samples_are_slices(n, m):
    start = 100
    first = random_words(KEY, start, n)
    second = random_words(KEY, start + blocks_needed(n), m)
    joint = random_words(KEY, start, 4 * blocks_needed(n) + m)
    np.testing.assert_array_equal(first, joint[:n])
    np.testing.assert_array_equal(second, joint[4 * blocks_needed(n) :])


def test_different_keys_and_starts_differ():
    a = random_words(stream_key(1, 0), 0, 64)
    assert not np.array_equal(a, random_words(stream_key(1, 1), 0, 64))
    assert not np.array_equal(a, random_words(stream_key(2, 0), 0, 64))
    assert not np.array_equal(a, random_words(stream_key(1, 0), 16, 64))


def test_uniform_exact_formula():
    words = random_words(KEY, 3, 9)
    u32 = uniform(KEY, 3, (3, 3), dtype="float32")
    assert u32.dtype == np.float32 and u32.shape == (3, 3)
    np.testing.assert_array_equal(u32.ravel(), (words >> 8).astype(np.float64) / 2**24)
    u64 = uniform(KEY, 3, 9, dtype="float64")
    assert u64.dtype == np.float64
    np.testing.assert_array_equal(u64, words.astype(np.float64) / 2**32)
    lo, hi = np.float32(-3.5), np.float32(0.25)
    got = uniform(KEY, 3, 9, -3.5, 0.25, "float32")
    np.testing.assert_array_equal(got, lo + u32.ravel() * (hi - lo))


@pytest.mark.parametrize("dtype", FLOATS)
def test_uniform_statistics(dtype):
    n, low, high = 10**6, -2.0, 3.0
    x = uniform(stream_key(42, 1), 0, (1000, 1000), low, high, dtype)
    assert x.dtype == np.dtype(dtype) and x.shape == (1000, 1000)
    assert x.min() >= low and x.max() < high
    x = x.astype(np.float64).ravel()
    width = high - low
    var = width**2 / 12
    mu4 = width**4 / 80
    assert abs(x.mean() - (low + high) / 2) < 4 * math.sqrt(var / n)
    assert abs(x.var() - var) < 4 * math.sqrt((mu4 - var**2) / n)


def test_uniform_unit_interval_endpoints():
    # the largest word maps below 1 in both dtypes
    big = np.uint32(0xFFFFFFFF)
    assert (big >> np.uint32(8)).astype(np.float32) * np.float32(2.0**-24) < 1
    assert np.float64(big) * 2.0**-32 < 1
    assert uniform(KEY, 0, 4096).max() < 1 and uniform(KEY, 0, 4096).min() >= 0


@pytest.mark.parametrize("dtype", FLOATS)
def test_normal_statistics(dtype):
    n, mean, std = 10**6, 1.5, 2.0
    x = normal(stream_key(7, 3), 11, n, mean, std, dtype)
    assert x.dtype == np.dtype(dtype) and x.shape == (n,)
    assert np.all(np.isfinite(x))
    x = x.astype(np.float64)
    var = std**2
    assert abs(x.mean() - mean) < 4 * math.sqrt(var / n)
    assert abs(x.var() - var) < 4 * math.sqrt(2 * var**2 / n)  # Var(s^2) = 2 sigma^4 / n
    # even and odd elements separately are standard normal too
    for part in (x[0::2], x[1::2]):
        assert abs(part.mean() - mean) < 4 * math.sqrt(var / part.size)


@pytest.mark.parametrize("dtype", FLOATS)
def test_normal_exact_formula(dtype):
    n, start = 7, 5
    got = normal(KEY, start, n, 0.5, 2.0, dtype)
    words = random_words(KEY, start, 4 * blocks_needed(n))
    dt = np.dtype(dtype)
    for i in range(n):
        w1, w2 = words[i & ~1], words[i | 1]
        if dt == np.float32:  # float32 uniforms, Box-Muller in float64, rounded once below
            u1 = np.float64(int(w1 >> np.uint32(8)) + 1) * 2.0**-24
            u2 = np.float64(int(w2 >> np.uint32(8))) * 2.0**-24
            theta = np.float64(2 * math.pi) * u2
            r = np.sqrt(-2.0 * np.log(u1))
        else:
            u1 = (np.float64(w1) + 1) * 2.0**-32
            u2 = np.float64(w2) * 2.0**-32
            theta = np.float64(2 * math.pi) * u2
            r = np.sqrt(-2.0 * np.log(u1))
        z = r * (np.cos(theta) if i % 2 == 0 else np.sin(theta))
        expected = dt.type(0.5) + dt.type(2.0) * dt.type(z)
        assert got[i].dtype == dt
        assert got[i] == expected, (i, got[i], expected)


def test_normal_pairs_share_radius():
    # (z_2k, z_2k+1) = r (cos t, sin t): the pair's squared norm is -2 log u1
    words = random_words(KEY, 0, 16)
    z = normal(KEY, 0, 16, dtype="float64")
    u1 = (words[0::2].astype(np.float64) + 1) * 2.0**-32
    np.testing.assert_allclose(z[0::2] ** 2 + z[1::2] ** 2, -2 * np.log(u1), rtol=1e-12)


def test_normal_odd_last_element_uses_next_word_of_block():
    # a sample of 5 uses block start+1 words 0 and 1; its element 4 equals element 4 of 6
    np.testing.assert_array_equal(normal(KEY, 9, 5), normal(KEY, 9, 6)[:5])


@pytest.mark.parametrize("dtype", ["int64", "float32", "float64"])
def test_binomial_statistics(dtype):
    n, p = 10**6, 0.3
    x = binomial(stream_key(9, 2), 0, (500, 2000), p, dtype)
    assert x.dtype == np.dtype(dtype) and x.shape == (500, 2000)
    assert set(np.unique(x).tolist()) == {0, 1}
    x = x.astype(np.float64).ravel()
    var = p * (1 - p)
    mu4 = p * (1 - p) * (1 - 3 * p + 3 * p * p)
    assert abs(x.mean() - p) < 4 * math.sqrt(var / n)
    assert abs(x.var() - var) < 4 * math.sqrt((mu4 - var**2) / n)


def test_binomial_float32_p():
    n = 10**6
    p = np.float32(0.7)
    x = binomial(KEY, 0, n, p)
    assert x.dtype == np.int64
    assert abs(x.mean() - 0.7) < 4 * math.sqrt(0.21 / n)


def test_binomial_exact_rule_and_broadcast_p():
    shape = (4, 6)
    u = uniform(KEY, 2, shape, dtype="float32")
    p = np.linspace(0.0, 1.0, 6)  # float64, broadcast along rows
    got = binomial(KEY, 2, shape, p, "float32")
    assert got.dtype == np.float32 and got.shape == shape
    np.testing.assert_array_equal(got, (u.astype(np.float64) < p).astype(np.float32))
    assert np.all(got[:, 0] == 0) and np.all(got[:, -1] == 1)
    # a float32 p compares in float32
    p32 = np.float32(0.1)
    np.testing.assert_array_equal(binomial(KEY, 2, shape, p32), (u < p32).astype(np.int64))


def test_float32_p_versus_float64_p_differ_only_by_rounding_of_p():
    # u = k * 2**-24 exactly; pick p between float32(p) and p so the two rules disagree
    p64 = 0.1
    p32 = np.float32(p64)
    assert float(p32) > p64
    n = 1 << 20
    u = uniform(KEY, 0, n)
    a = binomial(KEY, 0, n, p64)
    b = binomial(KEY, 0, n, p32)
    np.testing.assert_array_equal(a, (u.astype(np.float64) < p64))
    np.testing.assert_array_equal(b, (u < p32))


def test_bad_dtype():
    with pytest.raises(ValueError):
        uniform(KEY, 0, 4, dtype="int32")
    with pytest.raises(ValueError):
        normal(KEY, 0, 4, dtype="float16")


@pytest.mark.parametrize("n", [3, 52_429, 200_001])
def test_llvm_samples_split_over_threads_match_the_oracle(n):
    """Sample kernels of >= ~50k samples run in several chunks (a Philox block counts as its
    ten rounds of work): chunk edges never change a sample, partial last block included."""
    pytest.importorskip("llvmlite")
    import engine
    import frontends.tensor as T
    from backends.llvm import runtime as rt

    old = rt.num_threads()
    rt.set_num_threads(2)
    try:
        p = T.vector("p")
        outs = {}
        for backend in ("numpy", "llvm"):
            srng = engine.RandomStreams(7)
            f = engine.function([p], [srng.uniform(size=(n,)), srng.binomial(size=p.shape, n=1, p=p)],
                                backend=backend)
            outs[backend] = f(np.linspace(0, 1, n, dtype="float32"))
        for got, want in zip(outs["llvm"], outs["numpy"]):
            np.testing.assert_array_equal(got, want)
    finally:
        rt.set_num_threads(old)
