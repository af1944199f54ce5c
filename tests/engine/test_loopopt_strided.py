"""Strided loads and interleaved store groups in the vectorizer (engine/loopopt.py): an
index ``s*i + c`` along the last axis (2 <= s <= MAX_LOAD_STRIDE) loads the span its lanes
cover as whole vectors and picks every s-th lane with a ``Shuffle``; s stores ``s*i + c + q``
(q = 0..s-1) become s contiguous stores of interleaved lanes. The results equal the scalar
loop's, on the LLVM backend (unit and non-unit runtime strides), in the listing, the
verifier and the GPU scalarizer."""

import numpy as np
import pytest

import engine.kernel_ir as ir
from engine.gpu.scalarize import scalarize
from engine.kernel_ir import BufferParam, Const, Kernel, KernelIRError, Loop, Var
from engine.loopopt import MAX_LOAD_STRIDE

i, r = Var("i"), Var("r")
x, y = BufferParam("x", "float32", 1), BufferParam("y", "float32", 1)
X, Y = BufferParam("X", "float32", 2), BufferParam("Y", "float32", 2)


def _deinterleave(s):
    """y[i] = sum_t (t + 1) * x[s*i + t]: every lane of a stride-s group, each once."""
    val = x[i * s]
    for t in range(1, s):
        val = val + x[i * s + t] * Const(float(t + 1), "float32")
    return Kernel(f"deint{s}", (x, y), Loop(i, 0, y.dim(0), y.store(i, val)))


def _run(kernel, *args):
    from backends.llvm import runtime as rt
    prog = rt.compile_kernels([kernel], opt=1, cache=False)
    prog[kernel.name](*args)


def _shuffles(kernel):
    return [n for n in ir.walk(kernel) if isinstance(n, ir.Shuffle)]


@pytest.mark.parametrize("s", range(2, MAX_LOAD_STRIDE + 1))
def test_strided_loads_become_whole_vector_loads_and_a_shuffle(s):
    k = ir.transform(_deinterleave(s), "i", ir.vectorize, 8)
    ir.verify(k)
    shuffles = _shuffles(k)
    assert len(shuffles) == s
    span = 7 * s + 1  # the elements 8 lanes at stride s cover: nothing past the last is read
    for sh in shuffles:
        assert sh.lanes == 8 and all(v.lanes == 8 for v in sh.values)
        assert len(sh.values) == -(-span // 8)
    assert "shuffle" in ir.listing(k)


@pytest.mark.parametrize("s", range(2, MAX_LOAD_STRIDE + 1))
@pytest.mark.parametrize("n", [1, 8, 13, 37])
def test_strided_loads_match_the_scalar_loop(s, n):
    pytest.importorskip("llvmlite")
    base = _deinterleave(s)
    xs = np.random.default_rng(s).standard_normal(s * n).astype("float32")
    want = np.zeros(n, "float32")
    _run(base, xs, want)
    for lanes in (4, 8, 16):
        got = np.zeros(n, "float32")
        _run(ir.transform(base, "i", ir.vectorize, lanes), xs, got)
        np.testing.assert_array_equal(got, want, err_msg=f"lanes {lanes}")


def test_strided_loads_of_a_non_contiguous_row():
    """A strided view (runtime stride 3 along the last axis): the loads go lane by lane."""
    pytest.importorskip("llvmlite")
    diff = X[r, 2 * i + 1] - X[r, 2 * i]
    k = Kernel("rows", (X, Y), Loop(r, 0, Y.dim(0), Loop(i, 0, Y.dim(1), Y.store((r, i), diff))))
    v = ir.transform(k, "i", ir.vectorize, 8)
    full = np.random.default_rng(0).standard_normal((3, 3 * 42)).astype("float32")
    for xs in (full[:, :42], full[:, ::3]):
        want, got = np.zeros((3, 20), "float32"), np.zeros((3, 20), "float32")
        _run(k, xs, want)
        _run(v, xs, got)
        np.testing.assert_array_equal(got, want)
        np.testing.assert_array_equal(want, xs[:, 1:41:2] - xs[:, 0:40:2])


def _interleave(s, c=0):
    """y[s*i + c + q] = (q + 1) * x[i] + q: one store per phase q, in order."""
    stores = [y.store(i * s + (c + q) if c + q else i * s, x[i] * Const(float(q + 1), "float32")
                      + Const(float(q), "float32")) for q in range(s)]
    return Kernel(f"inter{s}_{c}", (x, y), Loop(i, 0, x.dim(0), stores))


@pytest.mark.parametrize("s", range(2, MAX_LOAD_STRIDE + 1))
@pytest.mark.parametrize("n", [1, 8, 13, 37])
def test_interleaved_store_groups_match_the_scalar_loop(s, n):
    base = _interleave(s, c=1)
    k = ir.transform(base, "i", ir.vectorize, 8)
    ir.verify(k)
    assert len(_shuffles(k)) == s   # s contiguous 8-lane stores, no strided one
    pytest.importorskip("llvmlite")
    xs = np.random.default_rng(n).standard_normal(n).astype("float32")
    want = np.zeros(s * n + 1, "float32")
    _run(base, xs, want)
    np.testing.assert_array_equal(want[1:].reshape(n, s), xs[:, None] * np.arange(1, s + 1, dtype="float32")
                                  + np.arange(s, dtype="float32"))
    for lanes in (4, 8, 16):
        got = np.zeros(s * n + 1, "float32")
        _run(ir.transform(base, "i", ir.vectorize, lanes), xs, got)
        np.testing.assert_array_equal(got, want, err_msg=f"lanes {lanes}")


def test_strided_stores_and_wide_strides_are_refused():
    with pytest.raises(KernelIRError, match="only the last index"):
        ir.transform(Kernel("st", (x, y), Loop(i, 0, 8, y.store(i * 2, x[i]))), "i", ir.vectorize, 8)
    # an incomplete or out-of-order group is not interleaved
    gap = Kernel("gap", (x, y), Loop(i, 0, 8, [y.store(i * 2, x[i]), y.store(i * 2 + 2, x[i])]))
    swapped = Kernel("sw", (x, y), Loop(i, 0, 8, [y.store(i * 2 + 1, x[i]), y.store(i * 2, x[i])]))
    for k in (gap, swapped):
        with pytest.raises(KernelIRError, match="only the last index"):
            ir.transform(k, "i", ir.vectorize, 8)
    wide = MAX_LOAD_STRIDE + 1
    with pytest.raises(KernelIRError, match="only the last index"):
        ir.transform(Kernel("w", (x, y), Loop(i, 0, 8, y.store(i, x[i * wide]))), "i", ir.vectorize, 8)


def test_shuffle_verify_print_and_scalarize():
    v = ir.Load(x, (i,), 4)
    w = ir.Load(x, (i + 4,), 4)
    sh = ir.Shuffle((v, w), (0, 2, 4, 6))
    assert (sh.dtype, sh.lanes) == ("float32", 4)
    k = Kernel("sh", (x, y), Loop(i, 0, 4, y.store(i, sh), kind="vectorize", step=4))
    ir.verify(k)
    assert "shuffle %0, %2 [0 2 4 6] : float32x4" in ir.listing(k)
    bad = Kernel("bad", (x, y), Loop(i, 0, 4, y.store(i, ir.Shuffle((v,), (0, 1, 2, 4))),
                                     kind="vectorize", step=4))
    with pytest.raises(KernelIRError, match="out of the 4 lanes"):
        ir.verify(bad)
    # the GPU path expands vectors lane by lane: lane k of the shuffle is the load it picks
    flat = scalarize(k)
    assert not _shuffles(flat) and all(n.lanes == 1 for n in ir.walk(flat) if isinstance(n, ir.Expr))
    pytest.importorskip("llvmlite")
    xs = np.arange(8, dtype="float32")
    for kern in (k, flat):
        got = np.zeros(4, "float32")
        _run(kern, xs, got)
        np.testing.assert_array_equal(got, xs[0:8:2])
