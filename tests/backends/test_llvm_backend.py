"""Whole functions on backend="llvm" against the numpy oracle: a training step, fusion,
run-time broadcasting, reductions, random numbers, inspection, caching, errors."""

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

pytest.importorskip("llvmlite")

import engine  # noqa: E402
import frontends.tensor as T  # noqa: E402
from engine.errors import KilnShapeError  # noqa: E402

rng = np.random.default_rng(0)
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def both(inputs, outputs, args, updates_factory=None, **kw):
    """Results of the same graph on numpy and llvm (fresh shared state for each)."""
    results = []
    for backend in ("numpy", "llvm"):
        updates = updates_factory() if updates_factory else None
        f = engine.function(inputs, outputs, updates=updates, backend=backend, **kw)
        results.append((f, f(*args)))
    return results


def mlp(seed=0, n_in=12, n_hidden=16, n_out=5):
    r = np.random.default_rng(seed)
    x, y = T.matrix("x"), T.lvector("y")
    W1 = engine.shared((r.standard_normal((n_in, n_hidden)) * 0.3).astype("float32"), name="W1")
    b1 = engine.shared(np.zeros(n_hidden, "float32"), name="b1")
    W2 = engine.shared((r.standard_normal((n_hidden, n_out)) * 0.3).astype("float32"), name="W2")
    b2 = engine.shared(np.zeros(n_out, "float32"), name="b2")
    h = T.tanh(T.dot(x, W1) + b1)
    z = T.dot(h, W2) + b2
    m = T.max(z, axis=1, keepdims=True)
    logp = z - m - T.log(T.sum(T.exp(z - m), axis=1, keepdims=True))
    cost = -T.mean(logp[T.arange(y.shape[0]), y]) + 1e-3 * T.sum(W1 ** 2)
    params = [W1, b1, W2, b2]
    grads = engine.grad(cost, params)
    return x, y, cost, params, [(p, p - 0.1 * g) for p, g in zip(params, grads)]


def test_mlp_training_step_matches_numpy():
    X = rng.standard_normal((9, 12)).astype("float32")
    Y = rng.integers(0, 5, 9)
    runs = {}
    for backend in ("numpy", "llvm"):
        x, y, cost, params, updates = mlp()
        step = engine.function([x, y], cost, updates=updates, backend=backend)
        costs = [float(step(X, Y)) for _ in range(4)]
        costs.append(float(step(X[:5], Y[:5])))  # a smaller last batch: no recompile
        runs[backend] = (costs, [p.get_value() for p in params])
    np.testing.assert_allclose(runs["llvm"][0], runs["numpy"][0], rtol=1e-5)
    for a, b in zip(runs["llvm"][1], runs["numpy"][1]):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_fused_elementwise_chain_is_one_kernel_with_several_outputs():
    x, y = T.matrix("x"), T.matrix("y")
    t = T.tanh(x * y + 1.5)
    outs = [t - T.sigmoid(x), t * 2.0]
    a = rng.standard_normal((37, 53)).astype("float32")
    b = rng.standard_normal((37, 53)).astype("float32")
    (_, ref), (f, got) = both([x, y], outs, (a, b))
    names = [k.name for k in f.kernels]
    assert any(n.endswith("_2out") for n in names) and len(names) <= 2, names
    for g, r in zip(got, ref):
        np.testing.assert_allclose(g, r, rtol=1e-6, atol=1e-6)


def test_broadcasting_with_runtime_size_one_dims():
    x, y, z = T.matrix("x"), T.matrix("y"), T.tensor3("z")
    out = T.exp(x) * y - z
    for sx, sy, sz in [((3, 1), (1, 4), (2, 3, 4)), ((1, 1), (5, 7), (1, 5, 1)), ((6, 5), (6, 1), (1, 1, 5))]:
        args = [rng.standard_normal(s).astype("float32") for s in (sx, sy, sz)]
        (_, ref), (_, got) = both([x, y, z], out, args)
        np.testing.assert_allclose(got, ref, rtol=1e-6, atol=1e-6)
    f = engine.function([x, y], x + y, backend="llvm")
    big = f(np.ones((300, 1), "float32"), np.arange(400, dtype="float32")[None])  # parallel path
    np.testing.assert_array_equal(big, np.ones((300, 1), "float32") + np.arange(400, dtype="float32"))


@pytest.mark.parametrize("dtype", ["float32", "float64", "int32"])
def test_reductions_over_several_axes(dtype):
    x = T.tensor(dtype, (None, None, None), name="x")
    outs = [T.sum(x, axis=(0, 2)), T.sum(x, axis=(1,)), T.max(x, axis=(0, 1)), T.min(x, axis=2),
            T.sum(x), T.argmax(x, axis=1), T.prod(x, axis=0)]
    a = (rng.standard_normal((5, 130, 41)) * 4).astype(dtype)
    (_, ref), (_, got) = both([x], outs, (a,))
    for g, r in zip(got, ref):
        if np.dtype(dtype).kind == "f":
            np.testing.assert_allclose(g, r, rtol=2e-5 if dtype == "float32" else 1e-12, atol=1e-4)
        else:
            np.testing.assert_array_equal(g, r)
    # a long float32 sum is accurate (blocked accumulation)
    v = T.vector("v")
    s = engine.function([v], T.sum(v), backend="llvm")
    big = rng.uniform(0, 1, 1_000_003).astype("float32")
    assert abs(float(s(big)) - big.astype("float64").sum()) / big.sum() < 1e-5


def test_random_samples_match_numpy_backend():
    def graph():
        srng = engine.RandomStreams(seed=1234)
        p = T.vector("p")
        return p, [srng.uniform((7, 5)), srng.binomial((3, 11), p=0.3), srng.normal((13,), avg=1.0, std=2.0),
                   srng.uniform((2, 3), low=-1.0, high=3.0, dtype="float64"),
                   srng.binomial(size=(4, 3), p=p),           # a row of parameters: two-kernel path
                   srng.normal((4, 3), avg=p, dtype="float32")]
    pv = np.array([0.1, 0.5, 0.9], "float32")
    fs = {}
    for backend in ("numpy", "llvm"):
        p, outs = graph()
        fs[backend] = engine.function([p], outs, backend=backend)
    for _ in range(2):  # the second call uses the advanced state
        ref, got = fs["numpy"](pv), fs["llvm"](pv)
        for k, (g, r) in enumerate(zip(got, ref)):
            assert g.dtype == r.dtype and g.shape == r.shape
            if k in (2, 5):  # normal: Box-Muller, transcendental functions within 2 ulp
                np.testing.assert_allclose(g, r, rtol=1e-6, atol=1e-6)
            else:
                np.testing.assert_array_equal(g, r)


@pytest.mark.parametrize("shape", [(2, 3), (5, 8), (3, 100), (2, 70), (37,), (64,)])
def test_samples_with_parameter_arrays_in_one_pass(shape):
    """Parameters of the sample's shape are read in the sampling kernel itself (no raw pass):
    column counts that are and are not multiples of 4 (blocks within rows, or across them),
    vectorized rows, 1-d samples; broadcast, transposed and full parameters; every sample
    equals the numpy backend's, call after call."""
    rows = T.matrix if len(shape) == 2 else T.vector
    def graph():
        srng = engine.RandomStreams(seed=99)
        p, lo = rows("p"), rows("lo")
        return [p, lo], [srng.binomial(size=p.shape, p=p), srng.uniform(size=p.shape, low=lo, high=2.0),
                         srng.normal(size=p.shape, avg=lo, std=p, dtype="float32")]
    rng = np.random.default_rng(len(shape) * 100 + shape[-1])
    full = rng.uniform(size=shape).astype("float32")
    fs = {b: engine.function(*graph(), backend=b) for b in ("numpy", "llvm")}
    names = [k.name for k in fs["llvm"].kernels]
    assert sum("rows" in n for n in names) == 3 and not any("raw" in n for n in names), names
    variants = [(full, full[::-1].copy())]
    if len(shape) == 2:
        variants += [(np.asfortranarray(full), np.broadcast_to(full[:1], shape)),   # strided, broadcast
                     (np.repeat(full, 2, axis=1)[:, ::2], np.broadcast_to(full[:, :1], shape))]
    for pv, lv in variants:
        for _ in range(2):   # the second call uses the advanced state
            ref, got = fs["numpy"](pv, lv), fs["llvm"](pv, lv)
            for k, (g, r) in enumerate(zip(got, ref)):
                assert g.dtype == r.dtype and g.shape == r.shape
                if k == 2:   # normal: Box-Muller, transcendental functions within 2 ulp
                    np.testing.assert_allclose(g, r, rtol=1e-6, atol=1e-6)
                else:
                    np.testing.assert_array_equal(g, r)


@pytest.mark.parametrize("shape,order", [((2, 3), (1, 0)), ((2, 3), ("x", 0, 1)), ((2, 1), (0,)),
                                         ((1, 1), ()), ((), ("x", "x")), ((), ()), ((3, 1, 4), (2, "x", 0)),
                                         ((1, 5), ("x", 1, "x")), ((4, 1, 1), (2, 0, 1))])
def test_dimshuffle_views(shape, order):
    """DimShuffle runs as a view planned at lowering (transpose, drop, insert): every order
    gives numpy's values, shape and dtype (an array, also when every axis is dropped)."""
    x = T.tensor("float32", tuple(1 if n == 1 else None for n in shape), "x")
    f = engine.function([x], x.dimshuffle(*order) * 2.0, backend="llvm")
    xv = np.arange(int(np.prod(shape)), dtype="float32").reshape(shape)
    want = engine.function([x], x.dimshuffle(*order) * 2.0, backend="numpy")(xv)
    got = f(xv)
    assert isinstance(got, np.ndarray) and got.shape == want.shape and got.dtype == want.dtype
    np.testing.assert_array_equal(got, want)


def test_kernel_sources_at_every_level():
    x = T.matrix("x")
    f = engine.function([x], T.tanh(x) + 1.0, backend="llvm")
    k = f.kernels[0]
    assert k.name.startswith("E_tanh")
    assert k.nodes and k.nodes[0].op is not None
    for level in ("ir", "loops", "llvm", "asm"):
        assert k.source(level).strip(), level
    assert "parallel" in k.source("ir") and "vectorize" in k.source("ir")


def test_strided_operands_run_the_scalar_fallback():
    """Vectorized loops run under a unit-stride test (loopopt.guard_unit_strides): strided
    operands (a column slice, a transposed view) take the scalar loop, which LLVM keeps as
    written (loop metadata), and agree with the numpy oracle."""
    x, y = T.matrix("x"), T.matrix("y")
    outs = [T.tanh(x) * 2.0 + y.T, T.sum(T.exp(x.T), axis=1), T.max(x, axis=1)]
    f = engine.function([x, y], outs, backend="llvm")
    g = engine.function([x, y], outs, backend="numpy")
    a = rng.standard_normal((5, 70)).astype("float32")
    b = rng.standard_normal((35, 5)).astype("float32")
    for xs, ys in ((a[:, ::2], b), (np.ascontiguousarray(a[:, ::2]), np.asfortranarray(b)),
                   (np.asfortranarray(a[:, 1::2]), b[:, ::1])):
        for got, want in zip(f(xs, ys), g(xs, ys)):
            np.testing.assert_allclose(got, want, rtol=2e-6, atol=1e-6)
    llvm_text = "".join(k.source("llvm") for k in f.kernels)
    assert "llvm.loop.vectorize.enable" in llvm_text and "kiln_gather" not in llvm_text


def test_outputs_are_fresh_and_buffers_reused():
    x = T.matrix("x")
    y = T.exp(x) + 1.0
    z = T.sum(T.exp(x) * 3.0 + T.sqrt(T.abs(y)), axis=0)
    f = engine.function([x], [y, z, y.T], backend="llvm")
    a = rng.standard_normal((4, 6)).astype("float32")
    first = f(a)
    second = f(a)
    for u, v in zip(first, second):
        np.testing.assert_array_equal(u, v)
        assert not np.may_share_memory(u, v)
    assert not np.may_share_memory(first[0], first[2])
    np.testing.assert_allclose(first[2], np.exp(a).T + 1, rtol=1e-6)


def test_reshape_of_a_non_contiguous_input_copies():
    x = T.matrix("x")
    f = engine.function([x], T.reshape(x.T, (-1,)) * 2.0, backend="llvm")
    a = rng.standard_normal((3, 4)).astype("float32")
    np.testing.assert_array_equal(f(a), a.T.reshape(-1) * 2)


def test_profile_counts_kernel_calls():
    x = T.matrix("x")
    f = engine.function([x], T.sum(T.exp(x), axis=1), backend="llvm")
    f.compiled.profiling = True
    for _ in range(3):
        f(np.ones((8, 8), "float32"))
    rows = f.compiled.profile()
    assert rows and rows[0]["calls"] == 3 and rows[0]["seconds"] > 0


def test_errors_name_the_node_before_running():
    x, y = T.matrix("x"), T.matrix("y")
    f = engine.function([x, y], x * y, backend="llvm")
    with pytest.raises(KilnShapeError, match=r"(?s)created at .*test_llvm_backend.py.*\(3, 4\)"):
        f(np.ones((3, 4), "float32"), np.ones((2, 4), "float32"))
    g = engine.function([x, y], T.dot(x, y), backend="llvm")
    with pytest.raises(KilnShapeError, match="inner dimensions"):
        g(np.ones((3, 4), "float32"), np.ones((5, 2), "float32"))
    idx = T.lvector("idx")
    h = engine.function([x, idx], x[idx], backend="llvm")
    with pytest.raises(KilnShapeError, match=r"(?s)AdvancedSubtensor.*created at.*index 7 is out of bounds"):
        h(np.ones((3, 4), "float32"), np.array([0, 7]))


def test_second_process_compiles_nothing(tmp_path):
    script = textwrap.dedent("""
        import sys, numpy as np
        sys.path.insert(0, sys.argv[1])
        import engine, frontends.tensor as T
        from backends.llvm import runtime as rt
        from engine import function_cache
        x, y = T.matrix("x"), T.vector("b")
        f = engine.function([x, y], T.tanh(T.dot(x, x.T) + y).sum(axis=0), backend="llvm")
        out = f(np.ones((3, 3), "float32"), np.ones(3, "float32"))
        print(rt.STATS["compiled"], int(f.compiled.warm), function_cache.STATS["hits"], float(out.sum()))
    """)
    env = dict(os.environ, KILN_CACHE_DIR=str(tmp_path), KILN_LLVM_OPT="0")
    runs = [subprocess.run([sys.executable, "-c", script, ROOT], env=env, capture_output=True, text=True,
                           timeout=120) for _ in range(2)]
    for r in runs:
        assert r.returncode == 0, r.stderr
    cold, warm = (r.stdout.split() for r in runs)
    assert int(cold[0]) > 0 and cold[1] == "0"
    assert warm[:3] == ["0", "1", "1"] and warm[3] == cold[3]


def test_corrupt_function_entry_is_recompiled(tmp_path, monkeypatch):
    monkeypatch.setenv("KILN_CACHE_DIR", str(tmp_path))
    x = T.matrix("x")

    def build():
        return engine.function([x], T.sum(T.exp(x) * 2.0, axis=1), backend="llvm")
    a = rng.standard_normal((3, 5)).astype("float32")
    cold = build()
    assert not cold.compiled.warm
    assert build().compiled.warm
    for path in (tmp_path / "functions").glob("*.bin"):
        path.write_bytes(b"{not json")
    again = build()
    assert not again.compiled.warm
    np.testing.assert_allclose(again(a), np.exp(a).sum(1) * 2, rtol=1e-6)
    assert build().compiled.warm  # the entry was rewritten


def test_a_broadcastable_buffer_cannot_be_stored_to():
    """Inside a unit-stride test that lets a buffer be a broadcast (last stride 0), the
    renderer loads it as one element or a row; a store to it is an error, not a silent write
    to one element."""
    import engine.kernel_ir as ir
    from backends.llvm import render

    b = ir.BufferParam("b", "float32", 1)
    i = ir.Var("i")
    ones = ir.Broadcast(ir.Const(1.0, "float32"), 16)
    store = ir.Loop(i, 0, 16, [ir.Store(b, (i,), ones)], kind="vectorize", step=16)
    k = ir.Kernel("bad_store", (b,), [ir.If(ir.unit_stride_test([b], [b]), [store], [])])
    with pytest.raises(render.RenderError, match="stored to"):
        render.render_module([k])


def test_thread_count_changes_reach_per_thread_temporaries():
    """A conv weight gradient sums one partial per thread (a temporary sized by the thread
    count); its remembered temp shapes are dropped when set_num_threads changes the count, so
    the new count is used, and the result stays the numpy backend's."""
    import frontends.nn as nn
    from backends.llvm import runtime as rt
    X, G = T.tensor4("x"), T.tensor4("gy")
    ws = (16, 3, 5, 5)
    rng = np.random.default_rng(5)
    x, gy = rng.standard_normal((8, 3, 20, 20)).astype("f4"), rng.standard_normal((8, 16, 16, 16)).astype("f4")
    want = engine.function([X, G], nn.conv2d_grad_weight(X, G, ws), backend="numpy")(x, gy)
    f = engine.function([X, G], nn.conv2d_grad_weight(X, G, ws), backend="llvm")
    old = rt.num_threads()

    def partials():
        shapes = [t for p in f.compiled.plans for _, (_, temps) in p.shape_memo.items() for t in temps]
        return {s[0] for s in shapes if len(s) == 3 and s[1] == 75}
    try:
        for n in (2, 1, 2):
            rt.set_num_threads(n)
            np.testing.assert_allclose(f(x, gy), want, rtol=2e-4, atol=2e-4)
            assert partials() == {n}
    finally:
        rt.set_num_threads(old)


def _hidden_sample_graph(k, n, trans=False, size_of_p=True, dtype="float32"):
    """sigmoid(x @ W + b) and binomial samples of it (an RBM's hidden units; W, b of static
    shapes, as shared weights are, so that the bias joins the product)."""
    srng = engine.RandomStreams(seed=21)
    x = T.tensor(dtype, (None, k), "x")
    W, b = T.tensor(dtype, (n, k) if trans else (k, n), "W"), T.tensor(dtype, (n,), "b")
    p = T.sigmoid(T.dot(x, W.T if trans else W) + b)
    size = p.shape if size_of_p else (x.shape[0], W.shape[0] if trans else W.shape[1])
    return [x, W, b], [p, srng.binomial(size=size, p=p, dtype=dtype)]


@pytest.mark.parametrize("m,n", [(20, 500), (7, 30), (130, 64), (3, 10)])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_gemm_draws_bernoulli_samples_of_its_product(m, n, dtype):
    """binomial(size=p.shape, p=sigmoid(x @ W + b)) runs as one GEMM kernel that samples the
    tiles it stored (row and column thread units; n % 4 != 0: after the units): p and every
    sample equal the numpy backend's, call after call (the stream advances)."""
    rng = np.random.default_rng(m * n)
    xs = [rng.standard_normal((m, 40)).astype(dtype), rng.standard_normal((40, n)).astype(dtype),
          rng.standard_normal(n).astype(dtype)]
    fs = {bk: engine.function(*_hidden_sample_graph(40, n, dtype=dtype), backend=bk) for bk in ("numpy", "llvm")}
    names = [k.name for k in fs["llvm"].kernels]
    assert any("bernoulli" in k for k in names) and not any(k.startswith("philox") for k in names), names
    for _ in range(3):
        (p_ref, s_ref), (p, s) = fs["numpy"](*xs), fs["llvm"](*xs)
        np.testing.assert_allclose(p, p_ref, rtol=1e-5 if dtype == "float32" else 1e-12, atol=1e-6)
        # a sample differs only where p itself differs in its last bits across the threshold
        close = np.abs(p - p_ref) > 0
        np.testing.assert_array_equal(s[~close], s_ref[~close])
        assert s.dtype == np.dtype(dtype) and set(np.unique(s)) <= {0, 1}


def test_samples_outside_the_gemm_when_it_cannot_draw_them(monkeypatch):
    """A product the CPU kernel runs transposed (x @ W.T with few rows), a size that is not p's
    shape, and KILN_GEMM=loops: sampled by the one-pass kernel, the same samples."""
    rng = np.random.default_rng(9)
    xs = [rng.standard_normal((6, 12)).astype("f4"), rng.standard_normal((32, 12)).astype("f4"),
          rng.standard_normal(32).astype("f4")]
    for kw, env in (({"trans": True}, None), ({"size_of_p": False}, None), ({}, "loops")):
        if env:
            monkeypatch.setenv("KILN_GEMM", env)
        ws = [xs[0], xs[1] if kw.get("trans") else np.ascontiguousarray(xs[1].T), xs[2]]
        ref = engine.function(*_hidden_sample_graph(12, 32, **kw), backend="numpy")(*ws)
        f = engine.function(*_hidden_sample_graph(12, 32, **kw), backend="llvm")
        got = f(*ws)
        np.testing.assert_allclose(got[0], ref[0], rtol=1e-5, atol=1e-6)
        np.testing.assert_array_equal(got[1], ref[1])
        assert not any("bernoulli" in k.name for k in f.kernels), (kw, env)
