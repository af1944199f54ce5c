"""A bounded, seeded differential-fuzzing run (the long run is ``python -m tests.fuzz``), plus the
fuzzer's own checks: the comparison catches wrong numbers and accepts rounding, and a reported
finding's reproducer runs on its own."""

from __future__ import annotations

import contextlib
import io

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import engine
import frontends.tensor as T
from tests.backend_fixture import available_backends
from tests.fuzz import ORACLE, Target, check_program, compare, default_targets
from tests.fuzz_graphs import GeneratorError, HypothesisDraw, RandomDraw, generate

# graphs per target: the numpy oracle is cheap; code generators compile every graph
EXAMPLES = {"numpy": 400}
DEFAULT_EXAMPLES = 200
TARGETS = default_targets([b for b in available_backends()], unoptimized=False)


def _fuzz_settings(n: int):
    return settings(max_examples=n, derandomize=True, database=None, deadline=None, print_blob=False,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                           HealthCheck.filter_too_much])


def _run_target(target: Target, data) -> None:
    try:
        program = generate(HypothesisDraw(data), max_ops=8)
    except GeneratorError as error:
        pytest.fail(f"Kiln refused a graph the generator believes legal: {error}\n{error.program.source()}")
    findings = [f for f in check_program(program, [target]) if not f.kind.startswith("known:")]
    assert not findings, "\n\n".join(f.report() for f in findings)


def _make_test(target: Target):
    n = EXAMPLES.get(target.backend, DEFAULT_EXAMPLES)

    @_fuzz_settings(n)
    @given(data=st.data())
    def run(data):
        _run_target(target, data)

    return run


@pytest.mark.parametrize("target", TARGETS, ids=[t.label for t in TARGETS])
def test_random_graphs_match_the_oracle(target):
    _make_test(target)()


# -- the fuzzer's own checks --------------------------------------------------------------------------

def test_compare_accepts_rounding_and_rejects_errors():
    rng = np.random.default_rng(0)
    ref = rng.standard_normal((4, 5)).astype("float32")
    hi = ref.astype("float64")
    assert compare(ref, ref, hi) is None
    assert compare(ref, np.nextafter(ref, np.inf), hi) is None                     # one ulp
    assert "elements off" in compare(ref, ref + np.float32(1e-3), hi)
    assert "dtype" in compare(ref, ref.astype("float64"), hi)
    assert "shape" in compare(ref, ref.T, hi)
    ints = np.arange(6)
    assert compare(ints, ints, None) is None and "differ exactly" in compare(ints, ints[::-1], None)
    nan = ref.copy()
    nan[0, 0] = np.nan
    hi_nan = nan.astype("float64")
    assert "NaN" in compare(nan, ref, hi_nan) and compare(nan, nan, hi_nan) is None
    assert "NaN" in compare(ref, nan, hi)
    # an ill-conditioned output (the float32 oracle is itself 1e-2 off float64) gets slack
    assert compare(ref + np.float32(1e-2), ref + np.float32(5e-2), hi) is None


def test_a_wrong_backend_is_caught(monkeypatch):
    """A backend that is one ulp-ish off on the optimizer path passes; one 1e-3 off is reported."""
    import backends
    from backends.numpy import NumpyBackend

    class Skewed(NumpyBackend):
        def __init__(self, skew):
            super().__init__()
            self.skew = skew

        def compile(self, fgraph, options):
            inner = super().compile(fgraph, options)
            skew = self.skew

            class Run:
                kernels: list = []

                def run(self, arrays):
                    return [o * (1 + skew) if np.asarray(o).dtype.kind == "f" else o for o in inner.run(arrays)]

            return Run()

    monkeypatch.setitem(backends._REGISTRY, "skewed-tiny", lambda: Skewed(1e-7))
    monkeypatch.setitem(backends._REGISTRY, "skewed-big", lambda: Skewed(1e-3))
    tiny, big = Target("skewed-tiny"), Target("skewed-big")
    caught = 0
    for i in range(30):
        program = generate(RandomDraw(i), max_ops=6)
        findings = check_program(program, [tiny, big])
        assert not [f for f in findings if f.target == tiny.label], [f.report() for f in findings]
        caught += any(f.target == big.label for f in findings)
    assert caught >= 20


def test_a_reproducer_runs_on_its_own():
    from tests.fuzz import Finding

    program = generate(RandomDraw(3), max_ops=6)
    text = Finding("mismatch", "numpy", "demo", program).reproducer()
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(text, "<reproducer>", "exec"), {"__name__": "reproducer"})
    lines = out.getvalue().splitlines()
    assert lines and all("max abs diff" in line for line in lines)


def test_the_oracle_target_is_unoptimized_numpy():
    assert ORACLE == Target("numpy", None)


@pytest.mark.parametrize("backend", available_backends())
@pytest.mark.parametrize("optimizer", ["default", None])
def test_set_subtensor_of_a_full_slice(backend, optimizer):
    """Theano's idiom: ``x[:]`` is a Subtensor node (canonicalize drops the no-op copy)."""
    x, v = T.vector("x"), T.vector("v")
    kw = {} if optimizer else {"optimizer": None}
    f = engine.function([x, v], [T.set_subtensor(x[:], v), T.inc_subtensor(x[:], v), x[:] * 2], backend=backend, **kw)
    zero, one = np.arange(3, dtype="float32"), np.ones(3, "float32")
    got = f(zero, one)
    for g, want in zip(got, [one, zero + 1, zero * 2]):
        np.testing.assert_array_equal(g, want)
    m = T.matrix("m")
    f = engine.function([m], T.set_subtensor(m[:, :], 0.0) + m[::1], backend=backend, **kw)
    a = np.arange(6, dtype="float32").reshape(2, 3)
    np.testing.assert_array_equal(f(a), a)


def test_a_full_slice_is_optimized_away():
    x = T.vector("x")
    f = engine.function([x], x[:] * 2, backend="numpy")
    listing = engine.debugprint(f, file=io.StringIO())
    assert "Subtensor" not in listing, listing


# -- regression tests for what the fuzzer found ---------------------------------------------------------

def test_grad_of_log_softmax_mean_with_the_optimizer():
    import frontends.nn as nn

    a = np.random.default_rng(0).standard_normal((2, 3)).astype("float32")
    x = T.matrix("x")
    g = engine.grad(T.log(nn.softmax(x)).mean(), x)
    s = np.exp(a) / np.exp(a).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(engine.function([x], g, backend="numpy")(a), (1 - 3 * s) / 6, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("backend", available_backends())
@pytest.mark.parametrize("optimizer", ["default", None])
def test_grad_of_prod_with_a_zero_input(backend, optimizer):
    """Reduce{prod}'s vjp is the product of the other elements, finite where inputs are 0."""
    kw = {} if optimizer else {"optimizer": None}
    x, m = T.vector("x"), T.matrix("m")
    g = engine.function([x], engine.grad(T.prod(x), x), backend=backend, **kw)
    np.testing.assert_allclose(g(np.array([0, 2, 3], "float32")), [6, 0, 0])
    np.testing.assert_allclose(g(np.array([0, 2, 0], "float32")), [0, 0, 0])
    np.testing.assert_allclose(g(np.array([4, 2, 3], "float32")), [6, 12, 8])
    rows = np.array([[0, 2, 3], [1, -2, 3], [0, 0, 5], [-0.0, 1, 1]], "float32")
    gm = engine.function([m], engine.grad(T.prod(m, axis=1).sum(), m), backend=backend, **kw)
    np.testing.assert_allclose(gm(rows), [[6, 0, 0], [-6, 3, -2], [0, 0, 0], [1, 0, 0]])


@pytest.mark.parametrize("axis", [None, 0, 1])
def test_verify_grad_of_prod_with_zeros(axis):
    rows = np.array([[0.0, 2.0, 3.0], [1.5, -2.0, 0.5], [0.0, 0.0, 1.2], [0.7, 0.0, -1.1]])
    engine.verify_grad(lambda a: T.prod(a, axis=axis), [rows], backend="numpy")
    engine.verify_grad(lambda a: T.prod(a, axis=axis), [rows.astype("float32")], backend="numpy")


@pytest.mark.parametrize("backend", available_backends())
def test_gemm_does_not_take_an_axis_dropping_dimshuffle_for_a_transpose(backend):
    """Fuzz find (seed 77, graph 278): DimShuffle{(1, 0)} of a (5, 3, 1) tensor drops the last
    axis and transposes; specialize took it for a plain transpose and built a Gemm of the 3-d
    input (a KilnTypeError at compile time)."""
    x, w = T.tensor("float64", (5, 3, 1), name="x"), T.tensor("float64", (3,), name="w")
    g = engine.grad(T.tanh(x.dimshuffle(0, 1).dot(w)).sum(), w)
    a, b = np.random.default_rng(0).standard_normal((5, 3, 1)), np.linspace(-1, 1, 3)
    want = engine.function([x, w], g, backend="numpy", optimizer=None)(a, b)
    np.testing.assert_allclose(engine.function([x, w], g, backend=backend)(a, b), want, rtol=1e-12)


def test_compare_uses_the_float64_value_where_the_naive_oracle_overflowed():
    ref = np.array([-np.inf, 1.0], "float32")          # log(1 - sigmoid(18)) naive in float32
    hi = np.array([-18.0000000152, 1.0])
    assert compare(ref, np.array([-18.0, 1.0], "float32"), hi) is None       # stabilized: right
    assert compare(ref, np.array([-np.inf, 1.0], "float32"), hi) is None     # naive: same overflow
    assert "float64 value" in compare(ref, np.array([-17.0, 1.0], "float32"), hi)
    assert "infinities" in compare(ref, np.array([-17.0, 1.0], "float32"), None)
