"""Optimized kernels compile in worker processes (backends/llvm/compile_pool.py): same code as
in process, and any failure of a worker falls back to compiling in process."""

import numpy as np
import pytest

pytest.importorskip("llvmlite")

import engine.kernel_ir as ir  # noqa: E402
from backends.llvm import compile_pool, compile_worker  # noqa: E402
from backends.llvm import runtime as rt  # noqa: E402
from engine.kernel_ir import BufferParam, Kernel, Loop, Var  # noqa: E402

i, j = Var("i"), Var("j")
rng = np.random.default_rng(0)


def affine_kernel(name):
    """y[i] = 3 x[i] - 1, vectorized by 16 with a scalar remainder: its any-stride copy
    gathers x and scatters y through the renderer's lane helpers."""
    x, y = BufferParam("x", "float32", 1), BufferParam("y", "float32", 1)
    k = ir.transform(Kernel(name, (x, y), Loop(i, 0, y.dim(0), y.store(i, x[i] * 3.0 - 1.0))),
                     "i", ir.vectorize, 16)
    return Kernel(name, k.params, k.body)


def check_affine(ck):
    for n in (0, 15, 33):
        src = rng.standard_normal(n).astype("float32")
        out = np.zeros(n, "float32")
        ck(src, out)
        np.testing.assert_array_equal(out, src * 3 - 1)
    wide = rng.standard_normal(80).astype("float32")
    out = np.zeros(40, "float32")[::-1]
    ck(wide[::2], out)                              # stride 2 in, stride -1 out
    np.testing.assert_array_equal(out, wide[::2] * 3 - 1)
    out = np.zeros(20, "float32")
    ck(np.broadcast_to(np.float32(2), (20,)), out)  # stride 0
    np.testing.assert_array_equal(out, np.full(20, 5, "float32"))


@pytest.fixture
def workers(monkeypatch):
    monkeypatch.setenv("KILN_COMPILE_WORKERS", "2")
    monkeypatch.setitem(compile_pool._STATE, "failures", 0)
    return compile_pool


def test_optimized_kernels_compile_in_workers_and_match_in_process_code(workers):
    kernels = [affine_kernel(f"affine_w{n}") for n in range(3)]
    before = rt.STATS["in_workers"]
    prog = rt.compile_kernels(kernels, opt=2, cache=False)
    assert rt.STATS["in_workers"] - before == 3
    for k in kernels:
        check_affine(prog[k.name])
    # a worker emits exactly the object code this process would
    text = rt.render_ir(kernels[0], 2)
    pool = workers.get_pool(1, rt.target_info())
    assert pool is not None and pool.submit(7, text, 2)
    assert list(pool.gather()) == [(7, compile_worker.compile_ir(text, rt._emit_tm(2), 2))]


def test_a_worker_error_comes_back_as_none(workers):
    pool = workers.get_pool(1, rt.target_info())
    assert pool.submit(1, "this is not LLVM IR", 2)
    assert list(pool.gather()) == [(1, None)]


def test_dead_workers_fall_back_to_compiling_in_process(workers, monkeypatch):
    submit = workers.Pool.submit

    def submit_then_kill(pool, *args):   # every worker dies with the job in flight
        ok = submit(pool, *args)
        for w in pool.workers:
            w.proc.kill()
        return ok
    monkeypatch.setattr(workers.Pool, "submit", submit_then_kill)
    k = affine_kernel("affine_after_kill")
    check_affine(rt.compile_kernels([k], opt=2, cache=False)[k.name])
    monkeypatch.setattr(workers.Pool, "submit", submit)
    before = rt.STATS["in_workers"]
    k2 = affine_kernel("affine_new_workers")      # the next compile starts new workers
    check_affine(rt.compile_kernels([k2], opt=2, cache=False)[k2.name])
    assert rt.STATS["in_workers"] == before + 1


def test_no_workers_when_turned_off_or_at_o0(monkeypatch):
    monkeypatch.setenv("KILN_COMPILE_WORKERS", "0")
    assert compile_pool.get_pool(4, rt.target_info()) is None
    before = rt.STATS["in_workers"]
    k = affine_kernel("affine_in_process")
    check_affine(rt.compile_kernels([k], opt=2, cache=False)[k.name])
    monkeypatch.setenv("KILN_COMPILE_WORKERS", "2")
    k0 = affine_kernel("affine_o0")
    check_affine(rt.compile_kernels([k0], opt=0, cache=False)[k0.name])
    assert rt.STATS["in_workers"] == before
