"""The LLVM backend's vectorized float32 exp / expm1 / log / log1p (backends/llvm/vecmath.py)
and the activations built on them (tanh, sigmoid, softplus) against numpy's float64, rounded:
within 2 ulp over a sweep of all float32 bit patterns, exact at the edge values (NaN, +-inf,
+-0, overflow and underflow thresholds, subnormals), at -O0 and at -O3."""

import numpy as np
import pytest

pytest.importorskip("llvmlite")

import engine  # noqa: E402
import frontends.tensor as T  # noqa: E402

FUNCTIONS = ("exp", "expm1", "log", "log1p", "tanh", "sigmoid", "softplus")
MAX_ULP = 2


def _truth(name: str, x: np.ndarray) -> np.ndarray:
    d = x.astype(np.float64)
    with np.errstate(all="ignore"):
        if name == "sigmoid":
            e = np.exp(-np.abs(d))
            r = np.where(d >= 0, 1 / (1 + e), e / (1 + e))
        elif name == "softplus":
            r = np.logaddexp(0.0, d)
        else:
            r = getattr(np, name)(d)
        return r.astype(np.float32)


def _sweep() -> np.ndarray:
    """Every 40009th float32 bit pattern (all exponents, both signs) plus dense [-4, 4]."""
    bits = np.arange(0, 2**32, 40009, dtype=np.uint64).astype(np.uint32).view(np.float32)
    dense = np.linspace(-4, 4, 20001, dtype=np.float32)
    return np.concatenate([bits[np.isfinite(bits)], dense])


def _ulps(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Distance in float32 steps (monotone integer map; -0 and +0 are one point)."""
    def ordered(v):
        i = v.view(np.int32).astype(np.int64)
        return np.where(i < 0, -(i & 0x7FFFFFFF), i)
    both_nan = np.isnan(a) & np.isnan(b)
    return np.where(both_nan, 0, np.abs(ordered(a) - ordered(b)))


def _compiled(name: str, opt: str, monkeypatch):
    monkeypatch.setenv("KILN_LLVM_OPT", opt)
    x = T.vector("x")
    return engine.function([x], getattr(T, name)(x), backend="llvm")


@pytest.mark.parametrize("opt", ["0", "3"])
@pytest.mark.parametrize("name", FUNCTIONS)
def test_within_two_ulp_over_all_float32(name, opt, monkeypatch):
    x = _sweep()
    with np.errstate(all="ignore"):
        got = _compiled(name, opt, monkeypatch)(x)
    want = _truth(name, x)
    u = _ulps(got, want)
    worst = int(np.argmax(u))
    assert u[worst] <= MAX_ULP, f"{name}({x[worst]!r}) = {got[worst]!r}, want {want[worst]!r}: {u[worst]} ulp"
    assert np.array_equal(np.isnan(got), np.isnan(want))


TINY = 1e-45   # the smallest subnormal
EDGES = [0.0, -0.0, np.inf, -np.inf, np.nan, 1.0, -1.0, 2.0, -2.0, TINY, -TINY, 1.1754943e-38, 1e-30,
         -30.0, 20.0, -200.0, 100.0, 3.4028235e38, -3.4028235e38,
         88.72283, 88.72284, 89.0, -87.33655, -103.27893, -103.98, -104.0]    # exp's thresholds


@pytest.mark.parametrize("name", FUNCTIONS)
def test_edge_values(name, monkeypatch):
    """NaN, infinities, zeros (with their sign) exact; thresholds and subnormals within 2 ulp;
    each edge both in a full vector and in the scalar tail."""
    f = _compiled(name, "0", monkeypatch)
    x = np.array(EDGES, np.float32)
    want = _truth(name, x)
    for n in (1, 37):
        xs = np.concatenate([np.full((len(x), n - 1), 0.5, np.float32), x[:, None]], 1)
        with np.errstate(all="ignore"):
            got = f(xs.reshape(-1)).reshape(xs.shape)[:, -1]
        special = ~np.isfinite(want) | (want == 0)
        ok = np.where(special, (got == want) & (np.signbit(got) == np.signbit(want)), _ulps(got, want) <= MAX_ULP)
        ok |= np.isnan(got) & np.isnan(want)
        assert ok.all(), [(float(a), float(g), float(w)) for a, g, w, k in zip(x, got, want, ok) if not k]


def test_float64_keeps_libm_accuracy():
    x = T.dvector("x")
    v = np.concatenate([np.linspace(-700, 700, 1001), [0.0, -0.0, 1e-300, np.inf, -np.inf, np.nan]])
    for name in ("exp", "expm1", "log1p", "tanh"):
        f = engine.function([x], getattr(T, name)(x), backend="llvm")
        with np.errstate(all="ignore"):
            np.testing.assert_allclose(f(v), getattr(np, name)(v), rtol=4e-16, atol=0, err_msg=name)
