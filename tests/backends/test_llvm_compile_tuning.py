"""Per-kernel tuning of LLVM's pipeline (render.tuning, compile_worker.optimize): register-
blocked and streaming kernels compile at O2 without LLVM's unroller or interleaving, the rest
at full O3.
A tuning changes how a kernel is optimized, never what it computes, and the compile workers
apply the same tuning as this process."""

import numpy as np
import pytest

pytest.importorskip("llvmlite")

import engine.kernel_ir as ir  # noqa: E402
from backends.llvm import compile_pool, compile_worker, render  # noqa: E402
from backends.llvm import runtime as rt  # noqa: E402
from engine.kernel_ir import BufferParam, Kernel, Loop, Var  # noqa: E402

i = Var("i")


def fma_kernel(name, terms):
    """y[i] = sum over t < terms of fma(x[i], c_t, y[i]) written as `terms` chained FMAs,
    vectorized by 16 (a scalar remainder): `terms` vector FMAs in the vectorize loop."""
    x, y = BufferParam("x", "float32", 1), BufferParam("y", "float32", 1)
    acc = y[i]
    for t in range(terms):
        acc = ir.fma(x[i], ir.Const(float(t + 1), "float32"), acc)
    k = ir.transform(Kernel(name, (x, y), Loop(i, 0, y.dim(0), y.store(i, acc))), "i", ir.vectorize, 16)
    return Kernel(name, k.params, k.body)


def expected(x, y, terms):
    acc = y.astype("float32")
    for t in range(terms):
        acc = (x.astype("float64") * (t + 1) + acc).astype("float32")  # one rounding per FMA
    return acc


def window_kernel(name):
    """y[i] = sum over a constant 3-tap window of x[i + t], vectorized along i."""
    x, y = BufferParam("x", "float32", 1), BufferParam("y", "float32", 1)
    t, acc = Var("t"), Var("acc", "float32")
    body = (ir.Declare(acc, ir.Const(0.0, "float32")),
            Loop(t, 0, 3, (ir.Assign(acc, acc + x[i + t]),)),
            y.store(i, acc))
    k = ir.transform(Kernel(name, (x, y), Loop(i, 0, y.dim(0), body)), "i", ir.vectorize, 16)
    return Kernel(name, k.params, k.body)


def test_tuning_names_blocked_streaming_and_the_rest():
    assert render.tuning(fma_kernel("fma_blocked", render.BLOCKED_FMAS)) == "blocked"
    # one straight-line pass over memory, vectorized by Kiln: O2 without unrolling
    assert render.tuning(fma_kernel("fma_plain", render.BLOCKED_FMAS - 1)) == "streaming"
    # a constant window loop (O3 unrolls it), or no Kiln vector loop at all: full O3
    assert render.tuning(window_kernel("window")) == ""
    x, y = BufferParam("x", "float32", 1), BufferParam("y", "float32", 1)
    assert render.tuning(Kernel("scalar", (x, y), Loop(i, 0, y.dim(0), y.store(i, x[i])))) == ""
    assert set(compile_worker.TUNINGS) >= {"", "blocked", "streaming"}


@pytest.mark.parametrize("terms", [render.BLOCKED_FMAS, 2])
def test_tuned_kernels_compute_the_same_in_workers_and_in_process(monkeypatch, terms):
    monkeypatch.setenv("KILN_COMPILE_WORKERS", "2")
    monkeypatch.setitem(compile_pool._STATE, "failures", 0)
    k = fma_kernel(f"fma_tuned_{terms}", terms)
    rng = np.random.default_rng(terms)
    for opt in (2, 3):
        prog = rt.compile_kernels([k], opt=opt, cache=False)
        for n in (0, 15, 40):
            x = rng.standard_normal(n).astype("float32")
            y = rng.standard_normal(n).astype("float32")
            want = expected(x, y, terms)
            prog[k.name](x, y)
            np.testing.assert_allclose(y, want, rtol=1e-5, atol=1e-5)
        # the worker's object code is this process's, tuning included
        text = rt.render_ir(k, opt)
        pool = compile_pool.get_pool(1, rt.target_info())
        assert pool is not None and pool.submit(5, text, opt, render.tuning(k))
        here = compile_worker.compile_ir(text, rt._emit_tm(opt), opt, render.tuning(k))
        assert list(pool.gather()) == [(5, here)]


def test_the_pool_balances_many_jobs_over_its_workers(monkeypatch):
    """Jobs wait in one queue and go to whichever worker is free: every job comes back once,
    with the object code this process emits for it."""
    monkeypatch.setenv("KILN_COMPILE_WORKERS", "2")
    monkeypatch.setitem(compile_pool._STATE, "failures", 0)
    kernels = [fma_kernel(f"fma_many_{n}", 1 + n % 3) for n in range(7)]
    texts = [rt.render_ir(k, 2) for k in kernels]
    pool = compile_pool.get_pool(2, rt.target_info())
    assert pool is not None
    for n, text in enumerate(texts):
        assert pool.submit(n, text, 2)
    got = dict(pool.gather())
    assert sorted(got) == list(range(7))
    for n, text in enumerate(texts):
        assert got[n] == compile_worker.compile_ir(text, rt._emit_tm(2), 2)
