"""backend="cuda-emulator": the GPU-scheduled kernels run on the CPU against the numpy oracle,
random samples bit-identical, shared values kept on the device, and the emulator's own checks
(races, out-of-bounds, divergent barriers). Also the GPU loop transforms' building blocks.

The whole op table runs forward here (marked slow, about a minute); verify_grad runs on a subset
of rows, one or two per op family (finite differences call a function hundreds of times and
the emulator steps every thread in Python)."""

from __future__ import annotations

import numpy as np
import pytest

import engine
import frontends.tensor as T
from backends.cuda.emulator import EmulatedKernel, EmulatorError, host_eval
from engine import kernel_ir as ir
from engine.gpu_transforms import (
    GpuLaunch,
    GpuTarget,
    gpu_schedule,
    hoist_common_loops,
    parallel_safe,
    scalarize,
    split_parts,
)
from engine.lowering.core import reduce_kernel
from tests.backends.cuda_graphs import GRAPHS, build
from tests.op_rows import all_rows

EMU = "cuda-emulator"


# ----------------------------------------------------------------------------- graphs

def _close(got, want, dtype):
    got, want = np.asarray(got), np.asarray(want)
    assert got.shape == want.shape and got.dtype == want.dtype
    if want.dtype.kind in "biu":
        np.testing.assert_array_equal(got, want)
    else:
        tol = 2e-4 if want.dtype == np.float32 else 1e-10
        np.testing.assert_allclose(got, want, rtol=tol, atol=tol)


@pytest.mark.parametrize("name", sorted(GRAPHS))
def test_graphs_match_the_oracle(name, monkeypatch):
    monkeypatch.setenv("KILN_CUDA_STRICT", "1")  # every node lowered: none on the host
    fn, arrays = build(name, EMU)
    ref, _ = build(name, "numpy")
    assert not fn.compiled.host_nodes
    for _ in range(2):  # a second call reuses device buffers and shared mirrors
        for g, w in zip(fn(*arrays), ref(*arrays)):
            _close(g, w, w.dtype)
    for s in fn.shared:
        other = next(t for t in ref.shared if t.name == s.name) if s.name else None
        if other is not None:
            _close(s.get_value(), other.get_value(), s.dtype)


def test_random_streams_are_bit_identical():
    fn, arrays = build("random", EMU)
    ref, _ = build("random", "numpy")
    for _ in range(3):
        for g, w in zip(fn(*arrays), ref(*arrays)):
            np.testing.assert_array_equal(g, w)


def test_shared_values_stay_on_the_device():
    W = engine.shared(np.ones((3, 4), "float32"), name="W")
    x = T.matrix("x")
    f = engine.function([x], (x * W).sum(), updates={W: W * 2}, backend=EMU)
    ones = np.ones((3, 4), "float32")
    assert f(ones) == 12
    uploads = f.compiled.stats["uploads"]
    assert f(ones) == 24 and f(ones) == 48
    assert f.compiled.stats["uploads"] == uploads + 2  # only x: W stayed on the device
    np.testing.assert_array_equal(W.get_value(), np.full((3, 4), 8, "float32"))
    W.set_value(np.zeros((3, 4), "float32"))  # a new host value is uploaded again
    assert f(ones) == 0 and f.compiled.stats["uploads"] == uploads + 4


def test_views_on_device_arrays():
    x = T.matrix("x")
    f = engine.function([x], [T.exp(x.T) * 2, (x.T).reshape((-1,)), x.dimshuffle(1, "x", 0) + 1],
                        backend=EMU)
    a = np.arange(12, dtype="float32").reshape(3, 4) / 10
    for g, w in zip(f(a), [np.exp(a.T) * 2, a.T.reshape(-1), a.T[:, None, :] + 1]):
        np.testing.assert_allclose(g, w, rtol=1e-6)


def test_cuda_backend_says_what_is_missing():
    from backends.cuda import runtime
    ok, why = runtime.status()
    if ok:
        pytest.skip("a GPU is available here")
    x = T.vector("x")
    with pytest.raises(engine.KilnError, match="pycuda|driver|GPU|nvcc"):
        engine.function([x], x + 1, backend="cuda")
    assert any(w in why for w in ("pycuda", "driver", "GPU", "nvcc"))


# ----------------------------------------------------------------------------- emulator checks

def _args(kernel, arrays):
    out = []
    for p, a in zip(kernel.params, arrays):
        if isinstance(p, ir.BufferParam):
            strides = [0 if n == 1 else s // a.itemsize for n, s in zip(a.shape, a.strides)]
            out.append((a.reshape(-1), 0, a.shape, strides, id(a)))
        else:
            out.append(a)
    return out


def _run(launch, arrays):
    args = _args(launch.kernel, arrays)
    meta = [(a[2], a[3]) if isinstance(a, tuple) else a for a in args]
    grid = [1 if g is None else max(1, host_eval(g, launch.kernel.params, meta)) for g in launch.grid]
    EmulatedKernel(launch).run(args, grid)


def _without(kernel, cls):
    """kernel without its first statement of type cls."""
    done = []

    def strip(stmts):
        out = []
        for s in stmts:
            if isinstance(s, cls) and not done:
                done.append(s)
                continue
            if isinstance(s, ir.Loop):
                s = ir.Loop(s.var, s.start, s.stop, strip(s.body), s.kind, s.step)
            elif isinstance(s, ir.If):
                s = ir.If(s.cond, strip(s.then), strip(s.orelse))
            out.append(s)
        return tuple(out)
    return kernel.with_body(strip(kernel.body))


def test_block_reduction_and_thread_per_row_agree():
    x = np.random.default_rng(0).standard_normal((7, 3000)).astype("float32")
    k = reduce_kernel("rsum", "float32", 2, (1,), "sum")
    for target in (GpuTarget(), GpuTarget(coop_outputs=0)):
        (la,) = gpu_schedule(k, target).launches
        out = np.zeros(7, "float32")
        _run(la, [x, out])
        np.testing.assert_allclose(out, x.sum(1), rtol=1e-5)


def test_a_missing_barrier_is_a_race():
    (la,) = gpu_schedule(reduce_kernel("rsum", "float32", 2, (1,), "sum")).launches
    broken = GpuLaunch(_without(la.kernel, ir.Barrier), la.block, la.grid)
    x = np.ones((3, 500), "float32")
    with pytest.raises(EmulatorError, match="race|read after write"):
        _run(broken, [x, np.zeros(3, "float32")])


def test_parallel_writes_to_one_element_are_a_race():
    x, out = ir.BufferParam("x", "float32", 1), ir.BufferParam("out", "float32", 0)
    i = ir.Var("i")
    k = ir.Kernel("bad", (x, out), ir.Loop(i, 0, x.dim(0), [out.store((), x[i])], kind="parallel"))
    (la,) = gpu_schedule(k).launches  # the lowering promised independent iterations: wrongly
    with pytest.raises(EmulatorError, match="race|two threads"):
        _run(la, [np.ones(10, "float32"), np.zeros((), "float32")])


def test_out_of_bounds_and_divergent_barriers():
    x = ir.BufferParam("x", "float32", 1)
    t = ir.Var("t")
    oob = ir.Kernel("oob", (x,), ir.Loop(ir.Var("b"), 0, 1, ir.Loop(t, 0, 64, x.store(t + 1, 1.0),
                                                                      "thread_x"), "block_x"))
    with pytest.raises(EmulatorError, match="out-of-bounds"):
        _run(GpuLaunch(oob, (64, 1, 1), (ir.Const(1), ir.Const(1), ir.Const(1))), [np.zeros(64, "float32")])
    div = ir.Kernel("div", (x,), ir.If(ir.lt(ir.ThreadIdx("x"), 3), ir.Barrier()))
    with pytest.raises(EmulatorError, match="divergent"):
        _run(GpuLaunch(div, (64, 1, 1), (ir.Const(1), ir.Const(1), ir.Const(1))), [np.zeros(64, "float32")])


# ----------------------------------------------------------------------------- transforms

def test_parallel_safe():
    x, out = ir.BufferParam("x", "float32", 2), ir.BufferParam("out", "float32", 2)
    i, j = ir.Var("i"), ir.Var("j")
    ok = ir.Loop(j, 0, 9, out.store((i, j), out[i, j] + x[i, j]))
    assert parallel_safe(ok)
    assert not parallel_safe(ir.Loop(j, 0, 9, out.store((i, 0), out[i, 0] + x[i, j])))  # a reduction
    assert not parallel_safe(ir.Loop(j, 0, 9, out.store((i, j), out[i, j + 1])))       # reads a neighbour
    assert not parallel_safe(ir.Loop(j, 0, 9, out.store((i, j), x[i, j]), kind="unroll"))
    rows = [out.store((j * 4 + r, i), x[i, j]) for r in range(4)]
    assert parallel_safe(ir.Loop(j, 0, 9, rows))   # offsets 0..3 within a stride of 4
    assert not parallel_safe(ir.Loop(j, 0, 9, rows + [out.store((j * 4 + 4, i), x[i, j])]))


def test_hoist_and_split():
    x, out = ir.BufferParam("x", "float32", 2), ir.BufferParam("out", "float32", 1)
    r, j = ir.Var("r"), ir.Var("j")
    init = ir.Loop(j, 0, out.dim(0), out.store(j, 0.0))
    upd = ir.Loop(r, 0, x.dim(0), ir.Loop(j, 0, out.dim(0), out.store(j, out[j] + x[r, j])))
    (fused,) = hoist_common_loops((init, upd))
    assert fused.var == j and isinstance(fused.body[1], ir.Loop) and fused.body[1].var == r
    y = ir.BufferParam("y", "float32", 1)
    parts = split_parts((init, ir.Loop(ir.Var("k"), 0, y.dim(0), y.store(ir.Var("k"), out[0]))))
    assert len(parts) == 2  # the second reads what the first wrote: another launch


def test_scalarize_matches_the_vector_kernel():
    from engine.loopopt import transform, vectorize
    x, out = ir.BufferParam("x", "float32", 1), ir.BufferParam("out", "float32", 0)
    i, acc = ir.Var("i"), ir.Var("acc", "float32")
    k = ir.Kernel("vsum", (x, out), [ir.Declare(acc, ir.Const(0.0, "float32")),
                                     ir.Loop(i, 0, x.dim(0), ir.Assign(acc, acc + x[i] * x[i])),
                                     out.store((), acc)])
    kv = transform(k, "i", vectorize, 8)
    ks = scalarize(kv)
    assert not any(getattr(n, "lanes", 1) > 1 for n in ir.walk(ks))
    a = np.random.default_rng(3).standard_normal(37).astype("float32")
    got = np.zeros((), "float32")
    _run(gpu_schedule(ks).launches[0], [a, got])
    np.testing.assert_allclose(got, (a * a).sum(), rtol=1e-5)


# ----------------------------------------------------------------------------- the op table

ROWS = all_rows()
CASES = [(row, dtype) for row in ROWS for dtype in row.dtypes]


def _symbols(arrays):
    return [T.tensor(a.dtype.name, a.shape, name=f"in{i}") for i, a in enumerate(arrays)]


@pytest.mark.slow
@pytest.mark.parametrize("row,dtype", CASES, ids=[f"{r.name}-{d}" for r, d in CASES])
def test_op_table_forward(row, dtype, monkeypatch):
    if EMU in row.skip:
        pytest.skip(row.skip[EMU])
    monkeypatch.setenv("KILN_CUDA_STRICT", "1")
    arrays = row.make_inputs(np.random.default_rng(0), dtype)
    symbols = _symbols(arrays)
    fn = engine.function(symbols, row.build(*symbols), backend=EMU, on_unused_input="ignore")
    got, expected = fn(*arrays), np.asarray(row.reference(*arrays))
    assert got.shape == expected.shape
    if expected.dtype.kind in "biu":
        np.testing.assert_array_equal(got, expected)
    else:
        rtol, atol = row.tolerance(dtype)
        np.testing.assert_allclose(got, expected, rtol=rtol, atol=atol)


GRAD_ROWS = ("tanh", "softplus", "add_broadcast_col_row", "pow", "where", "sum_axes_0_2",
             "max_axis1", "prod_axis1", "std_axis1", "matmul_batched_broadcast", "dot_matrix_matrix",
             "reshape_minus1", "transpose_axes", "concatenate_axis_neg1", "slice_negative_step",
             "advanced_nll_mean_log", "inc_subtensor_advanced_repeats", "conv2d_stride_pad",
             "conv2d_groups", "conv2d_grad_weight", "locally_connected2d", "pool2d_grad_max",
             "pool2d_avg_exc_pad", "pool2d_l2", "lcn_both_across", "prob_max_pool",
             "softmax_axis0_3d", "categorical_crossentropy_softmax", "binary_crossentropy")
GRAD_CASES = [(r, "float64") for r in ROWS if r.name in GRAD_ROWS]


def test_grad_subset_is_current():
    assert {r.name for r, _ in GRAD_CASES} == set(GRAD_ROWS)


@pytest.mark.slow
@pytest.mark.parametrize("row,dtype", GRAD_CASES, ids=[f"{r.name}-{d}" for r, d in GRAD_CASES])
def test_op_table_verify_grad(row, dtype):
    arrays = row.make_inputs(np.random.default_rng(1), dtype)
    engine.verify_grad(row.build, arrays, backend=EMU, rng=np.random.default_rng(2), **row.grad_tolerance)


def test_lazy_updates_stay_on_the_device():
    """The backend half of keeping updated shared values on the device: the compiled graph
    returns DeviceValue objects (downloaded only when read); fed back as the shared values,
    they are used in place (engine.function's half: test_cuda_resident.py)."""
    from backends.cuda.backend import DeviceValue
    W = engine.shared(np.ones(5, "float32"), name="W")
    x = T.vector("x")
    f = engine.function([x], (x * W).sum(), updates={W: W + x}, backend=EMU)
    g = f.compiled
    assert g.keeps_device_values
    w, ones = W.get_value(), np.ones(5, "float32")
    for k in range(3):
        total, w = g.run([ones, w])
        assert isinstance(w, DeviceValue) and total == 5 * (k + 1)
    assert g.stats["uploads"] == 4 and g.stats["downloads"] == 3   # x each call, W once
    np.testing.assert_array_equal(np.asarray(w), np.full(5, 4, "float32"))
