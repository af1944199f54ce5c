"""The generated GEMM (engine/lowering/gemm.py) against numpy: shapes with edges, strides and
transposes, float64, batches, epilogues; most kernels at opt=0 (fast to compile), one at O3."""

import numpy as np
import pytest

pytest.importorskip("llvmlite")

from backends.llvm import runtime as rt  # noqa: E402
from engine.lower import HostScalar, In, Out, Tmp  # noqa: E402
from engine.lowering import gemm  # noqa: E402
from engine.lowering.common import ArgView  # noqa: E402

rng = np.random.default_rng(0)
TOL = {"float32": 2e-5, "float64": 1e-12}
_PROGS = {}


def compiled(kernel, opt=0):
    key = (kernel.name, opt)
    if key not in _PROGS:
        _PROGS[key] = rt.compile_kernels([kernel], opt=opt, cache=False)[kernel.name]
    return _PROGS[key]


def run_lowered(lowered, inputs, opt=0):
    """Run a Lowered the way a backend does: output shapes, steps, host scalars."""
    shapes = lowered.output_shapes(inputs)
    outs = [np.empty(s, inputs[0].dtype) for s in shapes]
    temps = [np.empty(fn(inputs), dt) for dt, fn in lowered.temps]
    kernels = {k.name: k for k in lowered.kernels}
    for step in lowered.steps:
        args = []
        for a in step.args:
            if isinstance(a, In):
                args.append(inputs[a.index])
            elif isinstance(a, Out):
                args.append(outs[a.index])
            elif isinstance(a, Tmp):
                args.append(temps[a.index])
            elif isinstance(a, HostScalar):
                args.append(a.fn(inputs))
                continue
            if isinstance(a, ArgView):
                base = a.arg
                arr = (inputs if isinstance(base, In) else outs if isinstance(base, Out) else temps)[base.index]
                args.append(a.fn(arr, inputs))
        compiled(kernels[step.kernel], opt)(*args)
    return outs


def mm(kern, a, b, out, alpha=1.0, nt=2):
    """out = alpha * a @ b with a 2-d kernel (c unused: out itself is bound, never read)."""
    kern(a, b, out, out, alpha, 0.0, False, nt)


def check(got, want, dtype):
    want = np.asarray(want, "float64")
    scale = max(1.0, float(np.abs(want).max())) if want.size else 1.0
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=0, atol=TOL[dtype] * scale * 4)


def rand(*shape, dtype="float32"):
    return rng.standard_normal(shape).astype(dtype)


# small blocks so that modest shapes cross every block boundary (K, M and N blocks)
SMALL = {"float32": gemm.choose_config("float32", kc=48, mc=16, nc=96),
         "float64": gemm.choose_config("float64", kc=40, mc=16, nc=48)}

SHAPES = [(1, 1, 1), (17, 33, 5), (20, 784, 500), (500, 800, 10), (3, 0, 4), (0, 7, 3),
          (37, 129, 97), (9, 200, 161), (64, 64, 64)]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_shapes_threads_and_transposes(dtype):
    f = compiled(gemm.gemm_kernel(SMALL[dtype]))
    f_default = compiled(gemm.gemm_kernel(gemm.choose_config(dtype)))
    f_packed = compiled(gemm.gemm_kernel(gemm.choose_config(dtype, pack_a=True, kc=32, mc=16)))
    for (m, k, n) in SHAPES:
        a, b = rand(m, k, dtype=dtype), rand(k, n, dtype=dtype)
        want = a.astype("f8") @ b.astype("f8")
        for kern in (f, f_default, f_packed):
            for nt in (1, 2, 3):
                out = np.full((m, n), np.nan, dtype)
                mm(kern, a, b, out, nt=nt)
                check(out, want, dtype)
        # transposed operands are views of the transposes: one kernel serves NN, NT, TN, TT
        aT, bT = np.ascontiguousarray(a.T), np.ascontiguousarray(b.T)
        for ta in (False, True):
            for tb in (False, True):
                for kern in (f, f_packed):
                    out = np.full((m, n), np.nan, dtype)
                    mm(kern, aT.T if ta else a, bT.T if tb else b, out, alpha=-0.5)
                    check(out, -0.5 * want, dtype)
        out = np.full((n, m), np.nan, dtype).T                   # a transposed output view
        mm(f, np.asfortranarray(a), np.asfortranarray(b), out)
        check(out, want, dtype)
        if n > 1:   # every other column of a wider b: a strided (non-unit) last axis
            wide = np.repeat(b, 2, axis=1)
            out = np.full((m, n), np.nan, dtype)
            mm(f_default, a, wide[:, ::2], out)
            check(out, want, dtype)


def test_big_and_edge_sizes_default_config():
    f = compiled(gemm.gemm_kernel(gemm.choose_config("float32")))
    for (m, k, n) in [(500, 800, 10), (130, 300, 1100), (1, 600, 700), (700, 3, 1), (13, 500, 96)]:
        a, b = rand(m, k), rand(k, n)
        for bv in (b, np.ascontiguousarray(b.T).T):
            out = np.empty((m, n), "float32")
            mm(f, a, bv, out)
            check(out, a.astype("f8") @ b.astype("f8"), "float32")


def test_thread_splits_and_direct_k_blocks():
    """Rows or columns per thread (M > N / 2 splits rows), uneven splits over 3 threads;
    units reading B in place with K blocks of DIRECT_KC (<= 24 rows, jr outside ir) or of KC,
    and packing ones; c and an epilogue on the last K block."""
    cfg = gemm.choose_config("float32")
    f = compiled(gemm.gemm_kernel(cfg))
    fe = compiled(gemm.gemm_kernel(cfg, epilogue="sigmoid", has_bias=True))
    for (m, k, n) in [(100, 784, 500), (130, 300, 250), (120, 300, 250), (20, 800, 100), (32, 800, 100),
                      (33, 500, 70)]:
        a, b, c, bias = rand(m, k), rand(k, n), rand(m, n), rand(n)
        want = a.astype("f8") @ b.astype("f8")
        for nt in (1, 2, 3):
            out = np.full((m, n), np.nan, "float32")
            mm(f, a, b, out, nt=nt)
            check(out, want, "float32")
            out = np.full((m, n), np.nan, "float32")
            fe(a, b, c, bias, out, 0.5, -1.0, True, nt)
            check(out, 1 / (1 + np.exp(-(0.5 * want - c + bias))), "float32")


@pytest.mark.parametrize("epilogue", ["identity", "tanh", "sigmoid", "relu",
                                      ("softplus", "neg"), ("sqr", "abs", "exp")])
def test_epilogues_bias_and_c(epilogue):
    acts = {"identity": lambda x: x, "tanh": np.tanh, "sigmoid": lambda x: 1 / (1 + np.exp(-x)),
            "relu": lambda x: np.maximum(x, 0), "softplus": lambda x: np.logaddexp(0, x),
            "neg": np.negative, "sqr": np.square, "abs": np.abs, "exp": np.exp}
    ops = (epilogue,) if isinstance(epilogue, str) else epilogue
    scale = 0.05 if "exp" in ops else 1.0

    def act(x):
        for o in ops:
            x = acts[o](x)
        return x
    c_shapes = [None, (), (23,), (1, 23), (19, 1), (19, 23)] if epilogue == "relu" else [(19, 1)]
    f = compiled(gemm.gemm_kernel(SMALL["float32"], ops, has_bias=True))
    for c_shape in c_shapes:
        a, b, bias = rand(19, 130) * scale, rand(130, 23) * scale, rand(23)
        out = np.empty((19, 23), "float32")
        want = 0.75 * (a.astype("f8") @ b.astype("f8")) + bias
        if c_shape is None:
            f(a, b, out, bias, out, 0.75, -2.0, False, 2)
        else:
            cv = rand(*c_shape)
            want = want - 2.0 * cv
            f(a, b, np.broadcast_to(cv, (19, 23)), bias, out, 0.75, -2.0, True, 2)
        check(out, act(want), "float32")


def test_one_kernel_for_every_transpose_and_c():
    """The kernel depends on (dtype, tiles, batch ranks, bias, epilogue) only."""
    names = {gemm.lower_gemm("float32", "tanh", c_ndim=cn, trans_a=ta, trans_b=tb, alpha=al,
                             beta=be).kernels[0].name
             for cn in (None, 0, 1, 2) for ta in (False, True) for tb in (False, True)
             for al, be in ((1.0, None), (-0.1, 0.5))}
    assert names == {gemm.kernel_name(gemm.choose_config("float32"), act_param=True)}


def test_plain_and_activated_products_share_one_kernel():
    """Layers' activations are a run-time argument of the 2-d kernel (RUNTIME_ACTS); a chain
    or a rarer activation is compiled in; batched products have no activation argument."""
    cfg = gemm.choose_config("float32")
    shared = {gemm.lower_gemm("float32", e, c_ndim=1).kernels[0].name for e in (None, "tanh", "sigmoid", "relu")}
    assert shared == {gemm.kernel_name(cfg, act_param=True)}
    assert gemm.lower_gemm("float32", ("tanh", "neg")).kernels[0].name == gemm.kernel_name(cfg, ("tanh", "neg"))
    assert gemm.lower_gemm("float32", "exp").kernels[0].name == gemm.kernel_name(cfg, ("exp",))
    assert gemm.runtime_act("relu", batch=(1, 0, 1)) is None
    with pytest.raises(gemm.LoweringError):
        gemm.gemm_kernel(cfg, "tanh", act_param=True)


@pytest.mark.parametrize("code", range(len(gemm.RUNTIME_ACTS) + 1))
def test_run_time_activation(code):
    """act = 0 (none) or i + 1 (RUNTIME_ACTS[i]), applied once, on the last K block."""
    f = compiled(gemm.gemm_kernel(SMALL["float32"], has_bias=True, act_param=True))
    acts = [lambda x: x, lambda x: 1 / (1 + np.exp(-x)), np.tanh, lambda x: np.maximum(x, 0)]
    for m, k, n in [(19, 130, 23), (40, 20, 100)]:
        a, b, c, bias = rand(m, k) * 0.2, rand(k, n) * 0.2, rand(m, n), rand(n)
        out = np.full((m, n), np.nan, "float32")
        f(a, b, c, bias, out, 0.5, -1.0, True, np.int32(code), 2)
        check(out, acts[code](0.5 * (a.astype("f8") @ b) - c + bias), "float32")


def test_lower_gemm_in_place_c_and_float64_epilogue():
    low = gemm.lower_gemm("float64", "tanh", has_bias=True, c_ndim=2, alpha=2.0, beta=0.5,
                          trans_b=True, cfg=SMALL["float64"])
    a, bt, c, bias = (rand(33, 70, dtype="float64"), rand(41, 70, dtype="float64"),
                      rand(33, 41, dtype="float64"), rand(41, dtype="float64"))
    (out,) = run_lowered(low, [a, bt, c, bias])
    check(out, np.tanh(2.0 * a @ bt.T + 0.5 * c + bias), "float64")
    # out aliasing c (the scheduler's in-place Gemm): each element's c is read before written
    k = compiled(low.kernels[0])
    want = np.tanh(2.0 * a @ bt.T + 0.5 * c + bias)
    k(a, bt.T, c, bias, c, 2.0, 0.5, True, np.int32(gemm.runtime_act("tanh")), 2)
    check(c, want, "float64")


def test_batched_matmul_broadcasting():
    for sa, sb in [((4, 5, 30), (30, 7)), ((3, 1, 9, 20), (2, 20, 6)), ((2, 17, 3), (2, 3, 40))]:
        batch = (len(sa) - 2, len(sb) - 2, max(len(sa), len(sb)) - 2)
        low = gemm.lower_gemm("float32", batch=batch, cfg=SMALL["float32"])
        a, b = rand(*sa), rand(*sb)
        (out,) = run_lowered(low, [a, b])
        check(out, np.matmul(a.astype("f8"), b.astype("f8")), "float32")


def test_gemm_lowered_for_matmul_nodes():
    import frontends.tensor as T
    from engine.ops.blas import MatMul
    from engine.ops.fused import Gemm

    x, w, c = T.matrix("x"), T.matrix("w"), T.vector("c")
    node = MatMul()(x, w).owner
    low = gemm.gemm_lowered_for_matmul(node)
    a, b = rand(20, 50), rand(50, 30)
    check(run_lowered(low, [a, b])[0], a.astype("f8") @ b.astype("f8"), "float32")
    node = Gemm(alpha=0.5, beta=2.0, trans_a=True, epilogue=("relu",))(x, w, c).owner
    low = gemm.gemm_lowered_for_matmul(node)
    at, cv = rand(50, 20), rand(30)
    want = np.maximum(0.5 * at.T.astype("f8") @ b + 2.0 * cv, 0)
    check(run_lowered(low, [at, b, cv])[0], want, "float32")
    with pytest.raises(gemm.LoweringError):
        gemm.gemm_lowered_for_matmul(MatMul()(T.imatrix("i"), T.imatrix("j")).owner)


def test_o3_default_config():
    low = gemm.lower_gemm("float32", "sigmoid", has_bias=True)
    for m, k, n in [(20, 784, 500), (101, 300, 77)]:
        a, b, bias = rand(m, k) * 0.1, rand(k, n) * 0.1, rand(n)
        (out,) = run_lowered(low, [a, b, bias], opt=3)
        check(out, 1 / (1 + np.exp(-(a.astype("f8") @ b + bias))), "float32")


def test_engine_function_with_this_lowering(monkeypatch, tmp_path):
    """The Lowered contract end to end: MatMul / Gemm nodes lowered by gemm.py inside
    engine.function on the LLVM backend (the registered rules are swapped for the test)."""
    import engine
    import frontends.tensor as T
    from engine import lower as lower_mod
    from engine.ops.blas import MatMul
    from engine.ops.fused import Gemm

    try:
        from backends import get_backend
        get_backend("llvm")
    except Exception as e:  # noqa: BLE001
        pytest.skip(f"llvm backend unavailable: {e}")
    monkeypatch.setenv("KILN_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("KILN_LLVM_OPT", "0")
    lower_mod._load_rules()
    for cls in (MatMul, Gemm):
        monkeypatch.setitem(lower_mod.LOWERINGS, cls, gemm.gemm_lowered_for_matmul)
    x, w, b3 = T.matrix("x"), T.matrix("w"), T.tensor3("b3")
    f = engine.function([x, w, b3], [T.tanh(T.dot(x, w) + 1.0), T.dot(b3, w)], backend="llvm")
    assert any(k.name.startswith("gemm_f32_") for k in f.kernels)
    a, wv, bv = rand(37, 50), rand(50, 29), rand(3, 5, 50)
    y, z = f(a, wv, bv)
    check(y, np.tanh(a.astype("f8") @ wv + 1.0), "float32")
    check(z, np.matmul(bv.astype("f8"), wv), "float32")


def test_native_pool_concurrent_callers_and_fork():
    """The native pool: regions from two Python threads at once (one runs serially), many
    back-to-back regions, and a forked child (which has no workers until it makes new ones)."""
    import os
    import threading

    rt.target_info()   # initializes the runtime (and its pool)
    if rt._STATE.get("pool_start") is None:
        pytest.skip("native thread pool unavailable (KILN_THREADPOOL=python?)")
    f = compiled(gemm.gemm_kernel(SMALL["float32"]))
    a, b = rand(128, 96), rand(96, 100)   # above SERIAL_WORK: two threads
    want = a.astype("f8") @ b
    errors = []

    def worker():
        out = np.empty((128, 100), "float32")
        for _ in range(50):
            mm(f, a, b, out)
            if not np.allclose(out, want, atol=1e-3):
                errors.append("mismatch")
    threads = [threading.Thread(target=worker) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    if not hasattr(os, "fork"):
        return
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child reports through its exit code
        out = np.empty((128, 100), "float32")
        mm(f, a, b, out)
        os._exit(0 if np.allclose(out, want, atol=1e-3) and
                 len(rt.PARALLEL_STATS["last_threads"]) == 2 else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


@pytest.mark.parametrize("m", [1, 7, 20, 33, 50, 65])
def test_few_rows_times_transposed_b(m):
    """``a @ b.T`` with few rows runs as ``out.T = b @ a.T`` (gemm._swapped): with c, alpha,
    beta and an epilogue, and in place on c; M = 65 (or b with < 4 M rows) stays untransposed."""
    low = gemm.lower_gemm("float32", "sigmoid", c_ndim=1, alpha=0.5, beta=2.0, trans_b=True)
    a, bt, c = rand(m, 300), rand(200, 300), rand(200)
    assert gemm._swapped([a, bt, c]) == (m <= gemm.SWAP_ROWS and 200 >= 4 * m)
    want = 1.0 / (1.0 + np.exp(-(0.5 * a.astype("f8") @ bt.T + 2.0 * c)))
    check(run_lowered(low, [a, bt, c])[0], want, "float32")
    plain = gemm.lower_gemm("float32", trans_b=True)
    check(run_lowered(plain, [a, bt])[0], a.astype("f8") @ bt.T, "float32")
    c2 = rand(m, 200)
    inplace = gemm.lower_gemm("float32", c_ndim=2, alpha=-1.0, trans_b=True)
    want = c2 - a.astype("f8") @ bt.T
    args = []
    for arg in inplace.steps[0].args:
        if isinstance(arg, HostScalar):
            args.append(arg.fn([a, bt, c2]))
        elif isinstance(arg, ArgView):
            args.append(arg.fn(c2 if isinstance(arg.arg, Out) else [a, bt, c2][arg.arg.index], [a, bt, c2]))
        else:
            args.append(c2 if isinstance(arg, Out) else [a, bt, c2][arg.index])
    compiled(inplace.kernels[0])(*args)
    check(c2, want, "float32")
