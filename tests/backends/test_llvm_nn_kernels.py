"""The deep-learning lowerings (engine/lowering/nn*.py) compiled by the LLVM backend, against the
numpy reference kernels (backends/numpy/conv.py, pool.py, lcn.py, prob_max_pool.py) on small
random inputs, for every configuration, float32 and float64.

Each test builds a plan (``<op>_plan`` -> ``Lowered``), compiles its kernels with
``compile_kernels`` (O0 for speed; one O3 case) and runs its steps the way a backend does:
outputs from ``output_shapes``, temps from ``temps``, host scalars evaluated on the inputs.
"""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("llvmlite")

from backends.llvm.runtime import compile_kernels  # noqa: E402
from backends.numpy import conv as RC  # noqa: E402
from backends.numpy import lcn as RL  # noqa: E402
from backends.numpy import pool as RP  # noqa: E402
from backends.numpy import prob_max_pool as RM  # noqa: E402
from engine import kernel_ir as ir  # noqa: E402
from engine.lower import In, Out, Tmp  # noqa: E402
from engine.lowering import nn as L  # noqa: E402
from engine.lowering import nn_conv, nn_pool  # noqa: E402
from engine.lowering.common import ArgView  # noqa: E402

DTYPES = ("float32", "float64")


def execute(low, inputs, out_dtypes=None, opt=0):
    """Run a Lowered on numpy inputs like a backend: returns the outputs."""
    prog = compile_kernels(low.kernels, opt=opt)
    shapes = low.output_shapes(inputs)
    out_dtypes = out_dtypes or [inputs[0].dtype] * len(shapes)
    outs = [_garbage(s, d) for s, d in zip(shapes, out_dtypes)]
    temps = [_garbage(fn(inputs), d) for d, fn in low.temps]
    def arg(a):
        if isinstance(a, In):
            return inputs[a.index]
        if isinstance(a, Out):
            return outs[a.index]
        if isinstance(a, Tmp):
            return temps[a.index]
        if isinstance(a, ArgView):
            return a.fn(arg(a.arg), inputs)
        return a.fn(inputs)   # a HostScalar
    for step in low.steps:
        prog[step.kernel](*[arg(a) for a in step.args])
    return outs


def _garbage(shape, dtype):
    """Uninitialized-looking memory: NaN (or a pattern), so an element left unwritten fails."""
    dtype = np.dtype(dtype)
    return np.full(shape, np.nan if dtype.kind == "f" else 123, dtype=dtype)


def close(got, want, dtype, rtol=None):
    rtol = rtol or (2e-5 if dtype == "float32" else 1e-12)
    want = np.asarray(want)
    assert got.shape == want.shape, (got.shape, want.shape)
    scale = max(1.0, float(np.nanmax(np.abs(want))) if want.size else 1.0)
    np.testing.assert_allclose(got, want, rtol=rtol, atol=rtol * scale)


def rand(rng, shape, dtype):
    return rng.standard_normal(shape).astype(dtype)


# ----------------------------------------------------------------------------- convolution

# x shape, w shape, stride, padding, dilation, groups, flip, static ksize
CONV = [
    ((2, 3, 7, 9), (4, 3, 3, 2), (1, 1), (0, 0), (1, 1), 1, False, True),
    ((2, 3, 7, 9), (4, 3, 3, 2), (1, 1), (0, 0), (1, 1), 1, False, False),
    ((2, 4, 9, 11), (6, 2, 3, 3), (2, 1), (1, 2), (1, 2), 2, True, True),
    ((2, 3, 20, 21), (7, 3, 5, 5), (1, 1), (2, 2), (1, 1), 1, False, True),
    ((1, 3, 6, 5), (5, 3, 3, 3), (1, 1), "same", (1, 1), 1, True, False),
    ((1, 3, 4, 5), (5, 3, 3, 3), (2, 2), "full", (1, 1), 1, False, True),
    ((2, 6, 13, 17), (9, 2, 3, 4), (2, 3), (2, 1), (2, 1), 3, True, True),
    ((3, 2, 12, 40), (8, 2, 5, 5), (1, 1), (0, 0), (1, 1), 1, False, True),  # wide rows
    ((2, 4, 5, 6), (4, 1, 2, 2), (1, 1), (3, 3), (1, 1), 4, False, True),  # padding > kernel
    ((0, 3, 6, 6), (2, 3, 3, 3), (1, 1), (1, 1), (1, 1), 1, False, True),  # empty batch
]


def _conv_kw(case):
    _, ws, st, pad, dil, g, flip, static = case
    return dict(stride=st, padding=pad, dilation=dil, groups=g, filter_flip=flip,
                ksize=ws[2:] if static else (None, None))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CONV, ids=[f"conv{i}" for i in range(len(CONV))])
def test_conv2d_forward_and_grads(case, dtype):
    rng = np.random.default_rng(0)
    xs, ws, st, pad, dil, g, flip, static = case
    kw = _conv_kw(case)
    x, w = rand(rng, xs, dtype), rand(rng, ws, dtype)
    ref = RC.conv2d(x, w, st, pad, dil, g, flip)
    (out,) = execute(L.conv2d_plan(dtype, nfilters=ws[0] if static else None,
                                   width=ref.shape[3] if static else None, **kw), [x, w])
    close(out, ref, dtype)
    gy = rand(rng, ref.shape, dtype)
    (gx,) = execute(L.conv2d_grad_input_plan(dtype, channels=xs[1] if static else None,
                                             width=xs[3] if static else None, **kw),
                    [gy, w, np.array(xs)])
    close(gx, RC.conv2d_grad_input(gy, w, xs, st, pad, dil, g, flip), dtype)
    (gw,) = execute(L.conv2d_grad_weight_plan(dtype, width=ref.shape[3] if static else None, **kw),
                    [x, gy, np.zeros(ws, dtype)])  # a "like" shape argument
    close(gw, RC.conv2d_grad_weight(x, gy, ws, st, pad, dil, g, flip), dtype)


def test_conv2d_o3_and_kernel_names():
    rng = np.random.default_rng(1)
    x, w = rand(rng, (4, 3, 16, 30), "float32"), rand(rng, (16, 3, 5, 5), "float32")
    with L.direct_formulation():  # the direct kernel (fwd_by_gemm picks the implicit GEMM)
        low = L.conv2d_plan("float32", padding=(2, 2), ksize=(5, 5), nfilters=16, width=30)
    assert [k.name for k in low.kernels] == ["pad2d_f32", "conv2d_fwd_s1x1_p2x2_d1x1_g1_k5x5_fb8_v16_f32"]
    (out,) = execute(low, [x, w], opt=3)
    close(out, RC.conv2d(x, w, padding=(2, 2)), "float32")
    k = nn_conv.conv2d_fwd("float64", groups=2)
    assert k.name == "conv2d_fwd_s1x1_p0x0_d1x1_g2_fb4_v4_f64"
    assert any(isinstance(n, ir.Loop) and n.kind == "parallel" for n in ir.walk(k))
    assert any(isinstance(n, ir.Loop) and n.kind == "vectorize" for n in ir.walk(k))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("epilogue", [(), ("relu",), ("tanh",), ("sigmoid", "sqr")])
def test_fused_conv_bias_epilogue(dtype, epilogue):
    rng = np.random.default_rng(2)
    x, w, b = rand(rng, (2, 3, 8, 9), dtype), rand(rng, (4, 3, 3, 3), dtype), rand(rng, (1, 4, 1, 1), dtype)
    (out,) = execute(L.conv2d_plan(dtype, padding=(1, 1), ksize=(3, 3), nfilters=4,
                                   bias=(4, (1, 4, 1, 1)), epilogue=epilogue), [x, w, b])
    ref = RC.conv2d(x, w, padding=(1, 1)) + b
    acts = {"relu": lambda z: np.maximum(z, 0), "tanh": np.tanh, "sigmoid": lambda z: 1 / (1 + np.exp(-z)),
            "sqr": np.square}
    for e in epilogue:
        ref = acts[e](ref)
    close(out, ref, dtype, rtol=1e-5 if dtype == "float32" else 1e-12)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("stride", [(1, 1), (2, 1), (2, 3)])
def test_locally_connected(dtype, stride):
    rng = np.random.default_rng(3)
    xs, kh, kw, f = (2, 3, 7, 8), 3, 2, 4
    oh, ow = (xs[2] - kh) // stride[0] + 1, (xs[3] - kw) // stride[1] + 1
    x, w = rand(rng, xs, dtype), rand(rng, (oh, ow, f, xs[1], kh, kw), dtype)
    (out,) = execute(L.lc_plan("fwd", dtype, stride), [x, w])
    close(out, RC.locally_connected2d(x, w, stride), dtype)
    gy = rand(rng, out.shape, dtype)
    (gx,) = execute(L.lc_plan("bwd_input", dtype, stride), [gy, w, np.array(xs)])
    close(gx, RC.locally_connected2d_grad_input(gy, w, xs, stride), dtype)
    (gw,) = execute(L.lc_plan("bwd_weight", dtype, stride), [x, gy, np.array(w.shape)])
    close(gw, RC.locally_connected2d_grad_weight(x, gy, w.shape, stride), dtype)


# ----------------------------------------------------------------------------- pooling

# ws, stride, padding, mode, ignore_border, count_include_pad
POOL = [
    ((2, 2), None, (0, 0), "max", True, True),
    ((2, 2), None, (0, 0), "max", False, True),
    ((3, 2), (3, 2), (0, 0), "avg", False, False),
    ((2, 3), (2, 3), (0, 0), "l2", True, True),
    ((3, 2), (2, 1), (1, 1), "max", True, True),
    ((3, 3), (2, 2), (1, 0), "max", False, True),
    ((3, 3), (1, 1), (1, 1), "max", True, True),
    ((3, 2), (2, 1), (1, 1), "avg", True, True),
    ((3, 2), (2, 1), (1, 1), "avg", True, False),
    ((3, 3), (2, 2), (1, 1), "avg", False, False),
    ((3, 3), (2, 2), (1, 1), "avg", False, True),
    ((2, 2), (1, 1), (1, 1), "avg", True, False),
    ((2, 3), (1, 2), (1, 1), "l2", True, True),
    ((3, 3), (2, 2), (0, 0), "l2", False, True),
    ((2, 3), (2, 2), (1, 1), "sum", False, True),
    ((2, 2), (1, 1), (0, 0), "sum", True, True),
]


def _pool_ref(x, ws, st, pad, mode, ib, cip):
    from backends.numpy.nn_ops import pool2d_impl
    from engine.ops.pool import Pool2d

    if mode == "sum":
        return pool2d_impl(Pool2d(ws, st, pad, mode, ib, cip), x)
    return RP.pool2d(x, ws, st, pad, mode, ib, cip)


def _pool_grad_ref(x, y, gy, ws, st, pad, mode, ib, cip):
    from backends.numpy.nn_ops import pool2d_grad_impl
    from engine.ops.pool import Pool2dGrad

    if mode == "sum":
        return pool2d_grad_impl(Pool2dGrad(ws, st, pad, mode, ib, cip), x, y, gy)
    return RP.pool2d_grad(x, y, gy, ws, st, pad, mode, ib, cip)


def _pool_input(rng, shape, dtype, mode):
    x = rand(rng, shape, dtype)
    if mode == "max":  # ties: the gradient goes to the first maximum
        x = np.round(x * 2) / 2
    if mode == "l2":
        x[..., 0, 0] = 0  # some all-zero windows: gradient 0 there
        x[..., :2, :2] = 0
    return x


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(2, 3, 7, 9), (3, 5, 6), (6, 20)], ids=["4d", "3d", "2d"])
@pytest.mark.parametrize("case", POOL, ids=[f"{c[3]}{i}" for i, c in enumerate(POOL)])
def test_pool2d_and_grad(case, shape, dtype):
    ws, st, pad, mode, ib, cip = case
    rng = np.random.default_rng(4)
    x = _pool_input(rng, shape, dtype, mode)
    kw = dict(ws=ws, stride=st, padding=pad, mode=mode, ignore_border=ib, count_include_pad=cip)
    (y,) = execute(L.pool2d_plan(dtype, len(shape), **kw), [x])
    ref = _pool_ref(x, ws, st, pad, mode, ib, cip)
    close(y, ref, dtype)
    gy = rand(rng, ref.shape, dtype)
    (gx,) = execute(L.pool2d_grad_plan(dtype, len(shape), **kw), [x, ref, gy])
    close(gx, _pool_grad_ref(x, ref, gy, ws, st, pad, mode, ib, cip), dtype)
    if mode == "max":
        from backends.numpy.nn_ops import max_pool2d_grad_grad_impl
        from engine.ops.pool import MaxPool2dGradGrad

        g = rand(rng, x.shape, dtype)
        (gg,) = execute(L.max_pool2d_grad_grad_plan(dtype, len(shape), ws, st, pad, ib), [x, g])
        close(gg, max_pool2d_grad_grad_impl(MaxPool2dGradGrad(ws, st, pad, "max", ib), x, g), dtype)


@pytest.mark.parametrize("dtype", ["int32", "int8", "float32"])
def test_max_pool_other_dtypes_and_nan(dtype):
    rng = np.random.default_rng(5)
    x = (rng.standard_normal((2, 2, 6, 7)) * 50).astype(dtype)
    if dtype == "float32":
        x[0, 0, 1, 1] = np.nan
        x[0, 1, 2:4, 2:4] = -np.inf
    (y,) = execute(L.pool2d_plan(dtype, 4, (3, 3), (2, 2), (1, 1), "max"), [x])
    np.testing.assert_array_equal(y, RP.pool2d(x, (3, 3), (2, 2), (1, 1), "max"))
    if dtype == "float32":
        gy = rand(rng, y.shape, dtype)
        (gx,) = execute(L.pool2d_grad_plan(dtype, 4, (3, 3), (2, 2), (1, 1), "max"), [x, y, gy])
        np.testing.assert_array_equal(gx, RP.pool2d_grad(x, y, gy, (3, 3), (2, 2), (1, 1), "max"))


@pytest.mark.parametrize("prologue", [("relu",), ("tanh", "abs")])
def test_fused_pool_prologue(prologue):
    rng = np.random.default_rng(6)
    x = rand(rng, (2, 3, 8, 8), "float32")
    acts = {"relu": lambda z: np.maximum(z, 0), "tanh": np.tanh, "abs": np.abs}
    z = x
    for p in prologue:
        z = acts[p](z)
    for mode in ("max", "avg"):
        (y,) = execute(L.pool2d_plan("float32", 4, (2, 2), None, (1, 1), mode, prologue=prologue), [x])
        close(y, RP.pool2d(z, (2, 2), None, (1, 1), mode), "float32", rtol=1e-6)


# ----------------------------------------------------------------------------- LCN

LCN = [(3, None, "both", True), (3, None, "both", False), (5, 1.5, "subtractive", True),
       (5, None, "subtractive", False), (9, None, "divisive", True), (3, None, "divisive", False),
       (9, 2.0, "both", True), (5, 1.0, "both", False)]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", LCN, ids=[f"{c[2]}_{c[0]}_{'across' if c[3] else 'map'}" for c in LCN])
def test_lcn_and_grad(case, dtype):
    size, sigma, mode, across = case
    rng = np.random.default_rng(7)
    x = rand(rng, (2, 3, 7, 11), dtype) * 3
    x[1] *= 1e-5  # a low-contrast image: eps / the image mean c wins somewhere
    kw = dict(size=size, sigma=sigma, mode=mode, across_channels=across, eps=1e-4)
    (y,) = execute(L.lcn_plan(dtype, **kw), [x])
    rtol = 1e-4 if dtype == "float32" else 1e-10
    close(y, RL.lcn(x, **kw), dtype, rtol)
    gy = rand(rng, x.shape, dtype)
    (gx,) = execute(L.lcn_grad_plan(dtype, **kw), [x, gy])
    close(gx, RL.lcn_grad(x, gy, **kw), dtype, rtol)


def test_lcn_image_smaller_than_window():
    rng = np.random.default_rng(8)
    x = rand(rng, (1, 2, 3, 4), "float64")
    (y,) = execute(L.lcn_plan("float64", size=9), [x])
    close(y, RL.lcn(x, size=9), "float64", 1e-10)


# ----------------------------------------------------------------------------- prob max pool


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape,ws", [((2, 3, 4, 6), (2, 2)), ((3, 4, 6), (2, 3)), ((1, 2, 6, 6), (3, 3)),
                                      ((2, 8, 8), (4, 2))])
def test_prob_max_pool(shape, ws, dtype):
    rng = np.random.default_rng(9)
    x = rand(rng, shape, dtype) * 3
    x.flat[0] = 80.0  # overflow without the max shift
    det, pool = execute(L.prob_max_pool_plan("fwd", dtype, len(shape), ws), [x])
    rdet, rpool = RM.prob_max_pool(x, ws)
    close(det, rdet, dtype)
    close(pool, rpool, dtype)
    gd, gp = rand(rng, det.shape, dtype), rand(rng, pool.shape, dtype)
    (gx,) = execute(L.prob_max_pool_plan("bwd", dtype, len(shape), ws), [x, gd, gp])
    close(gx, RM.prob_max_pool_grad(x, ws, gd, gp), dtype)
    u = rng.uniform(0, 1, pool.shape).astype(dtype)
    ds, ps = execute(L.prob_max_pool_plan("sample", dtype, len(shape), ws), [x, u])
    rds, rps = RM.sample_prob_max_pool(x, ws, u)
    np.testing.assert_array_equal(ds, rds)
    np.testing.assert_array_equal(ps, rps)


def test_np_sum_order_matches_numpy_pairwise():
    vals = np.random.default_rng(10).standard_normal(37).astype("float32")
    got = nn_pool.np_sum([float(v) for v in vals])  # plain floats: the same order, in float64
    assert abs(got - float(vals.astype("float64").sum())) < 1e-9


# ----------------------------------------------------------------------------- softmax family


def _softmax(x, axis):
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape,axis", [((5, 37), -1), ((3, 5), 0), ((3, 4, 6), 1), ((2, 3, 21), 2),
                                        ((7,), 0)])
def test_softmax_log_softmax(shape, axis, dtype):
    x = rand(np.random.default_rng(11), shape, dtype) * 10
    (y,) = execute(L.softmax_plan(dtype, len(shape), axis), [x])
    close(y, _softmax(x, axis), dtype)
    (ly,) = execute(L.softmax_plan(dtype, len(shape), axis, log=True), [x])
    sh = x - x.max(axis=axis, keepdims=True)
    close(ly, sh - np.log(np.exp(sh).sum(axis=axis, keepdims=True)), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("label_dtype", ["int64", "int32", "uint8"])
def test_softmax_cross_entropy_and_grad(dtype, label_dtype):
    rng = np.random.default_rng(12)
    x = rand(rng, (6, 19), dtype) * 30
    y = rng.integers(0, 19, 6).astype(label_dtype)
    (loss,) = execute(L.softmax_xent_plan(dtype, label_dtype), [x, y])
    sh = x - x.max(axis=1, keepdims=True)
    lsm = sh - np.log(np.exp(sh).sum(axis=1, keepdims=True))
    close(loss, -lsm[np.arange(6), y], dtype)
    g = rand(rng, (6,), dtype)
    (gx,) = execute(L.softmax_xent_grad_plan(dtype, label_dtype), [x, y, g])
    close(gx, (_softmax(x, 1) - np.eye(19, dtype=dtype)[y]) * g[:, None], dtype)
    bad = y.copy()
    bad[2] = 19
    (loss,) = execute(L.softmax_xent_plan(dtype, label_dtype), [x, bad])
    assert np.isnan(loss[2]) and np.isfinite(np.delete(loss, 2)).all()


# ----------------------------------------------------------------------------- run-time shape checks


def test_runtime_shape_errors_name_the_problem():
    from engine.errors import KilnShapeError

    f32 = np.float32
    cases = [
        (L.conv2d_plan("float32"), [np.zeros((1, 3, 8, 8), f32), np.zeros((4, 2, 3, 3), f32)], "groups"),
        (L.conv2d_plan("float32"), [np.zeros((1, 3, 2, 8), f32), np.zeros((4, 3, 3, 3), f32)], "smaller"),
        (L.conv2d_grad_input_plan("float32"), [np.zeros((1, 4, 5, 5), f32), np.zeros((4, 3, 3, 3), f32),
                                               np.array([1, 3, 8, 8])], "output gradient"),
        (L.lc_plan("fwd", "float32"), [np.zeros((1, 2, 5, 5), f32), np.zeros((2, 3, 2, 2, 3, 3), f32)], "agree"),
        (L.pool2d_plan("float32", 4, (3, 3)), [np.zeros((1, 1, 2, 5), f32)], "does not fit"),
        (L.pool2d_grad_plan("float32", 4, (2, 2)), [np.zeros((1, 1, 4, 4), f32), np.zeros((1, 1, 2, 2), f32),
                                                    np.zeros((1, 1, 3, 2), f32)], "output gradient"),
        (L.prob_max_pool_plan("fwd", "float32", 4, (2, 2)), [np.zeros((1, 1, 4, 5), f32)], "divide"),
        (L.softmax_xent_plan("float32", "int64"), [np.zeros((3, 4), f32), np.zeros(2, np.int64)], "labels"),
    ]
    for low, ins, words in cases:
        with pytest.raises(KilnShapeError, match=words):
            low.output_shapes(ins)


def test_conv_shape_error_through_a_function():
    import engine
    import frontends.nn as nn
    import frontends.tensor as T
    from engine.errors import KilnShapeError

    x, w = T.tensor4("x"), T.tensor4("w")
    f = engine.function([x, w], nn.conv2d(x, w), backend="llvm")
    with pytest.raises(KilnShapeError, match="smaller than"):
        f(np.zeros((1, 1, 2, 2), "float32"), np.zeros((1, 1, 3, 3), "float32"))
