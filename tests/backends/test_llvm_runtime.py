"""The LLVM CPU backend on hand-built kernels: results match numpy (bit for bit for ints)."""

import numpy as np
import pytest

pytest.importorskip("llvmlite")

import engine.kernel_ir as ir  # noqa: E402
from backends.llvm import runtime as rt  # noqa: E402
from backends.llvm.render import RenderError  # noqa: E402
from engine.errors import KilnTypeError, KilnValueError  # noqa: E402
from engine.kernel_ir import (  # noqa: E402
    Assign,
    BufferParam,
    Cast,
    Const,
    Declare,
    Kernel,
    Loop,
    ScalarParam,
    Var,
)

i, j, k = Var("i"), Var("j"), Var("k")
rng = np.random.default_rng(0)


def build(*kernels, opt=0):
    return rt.compile_kernels(kernels, opt=opt, cache=False)


def elementwise_2d(name, dtype, fn, n_in=2, scalars=()):
    """out[i, j] = fn(*inputs[i, j], *scalars) over out's runtime shape."""
    ins = [BufferParam(f"x{n}", dtype, 2) for n in range(n_in)]
    out = BufferParam("out", fn.out_dtype if hasattr(fn, "out_dtype") else dtype, 2)
    sc = [ScalarParam(s, dtype) for s in scalars]
    value = fn(*[x[i, j] for x in ins], *sc)
    body = Loop(i, 0, out.dim(0), Loop(j, 0, out.dim(1), out.store((i, j), value)))
    return Kernel(name, (*ins, out, *sc), body)


def test_broadcast_elementwise_runtime_shapes():
    kern = elementwise_2d("bcast", "float32", lambda a, b, c: a * b + c, scalars=("c",))
    prog = build(kern)
    for m, n in ((3, 5), (7, 1), (1, 9), (33, 17)):
        a = rng.standard_normal((m, 1)).astype("float32")        # size-1 dim: stride 0
        b = rng.standard_normal((1, n)).astype("float32")
        out = np.zeros((m, n), "float32")
        prog["bcast"](a, b, out, 0.5)
        np.testing.assert_array_equal(out, a * b + np.float32(0.5))
    # numpy views: a transposed input and an explicit stride-0 broadcast
    a = rng.standard_normal((6, 4)).astype("float32").T
    b = np.broadcast_to(rng.standard_normal(6).astype("float32"), (4, 6))
    out = np.zeros((4, 6), "float32")
    prog["bcast"](a, b, out, np.float32(-1))
    np.testing.assert_array_equal(out, a * b - 1)


def row_sum_kernel(dtype="float32"):
    x, out = BufferParam("x", dtype, 2), BufferParam("out", dtype, 1)
    acc = Var("acc", dtype)
    return Kernel("row_sum", (x, out), Loop(i, 0, x.dim(0), [
        Declare(acc, Const(0, dtype)),
        Loop(j, 0, x.dim(1), Assign(acc, acc + x[i, j])),
        out.store(i, acc)]))


def test_row_reduction_and_vectorized_reduction():
    kern = row_sum_kernel()
    vec = ir.transform(kern, "j", ir.vectorize, 8)
    vec = Kernel("row_sum_v", vec.params, vec.body)
    prog = build(kern, vec)
    x = rng.standard_normal((5, 37)).astype("float32")
    for name in ("row_sum", "row_sum_v"):
        out = np.zeros(5, "float32")
        prog[name](x, out)
        np.testing.assert_allclose(out, x.sum(1), rtol=1e-5, atol=1e-5)


def matmul_kernel(name="matmul"):
    A, B, C = (BufferParam(n, "float32", 2) for n in "ABC")
    acc = Var("acc", "float32")
    return Kernel(name, (A, B, C), Loop(i, 0, C.dim(0), Loop(j, 0, C.dim(1), [
        Declare(acc, Const(0.0, "float32")),
        Loop(k, 0, A.dim(1), Assign(acc, ir.fma(A[i, k], B[k, j], acc))),
        C.store((i, j), acc)])))


def test_small_matmul_scalar_vectorized_parallel():
    base = matmul_kernel()
    fast = ir.transform(base, "j", ir.vectorize, 16)
    fast = ir.transform(fast, "i", ir.mark_parallel)
    fast = Kernel("matmul_fast", fast.params, fast.body)
    prog = build(base, fast)
    a = rng.standard_normal((13, 21)).astype("float32")
    b = rng.standard_normal((21, 35)).astype("float32")
    for name in ("matmul", "matmul_fast"):
        c = np.zeros((13, 35), "float32")
        prog[name](a, b, c)
        np.testing.assert_allclose(c, a @ b, rtol=1e-5, atol=1e-5)


def test_vectorized_loop_with_remainder_and_any_stride():
    x, y = BufferParam("x", "float32", 1), BufferParam("y", "float32", 1)
    kern = Kernel("affine", (x, y), Loop(i, 0, y.dim(0), y.store(i, x[i] * 3.0 - 1.0)))
    vec = ir.transform(kern, "i", ir.vectorize, 16)
    assert [s.kind for s in vec.body] == ["vectorize", "serial"]
    prog = build(Kernel("affine_v", vec.params, vec.body))
    for n in (0, 1, 15, 16, 17, 100):
        src = rng.standard_normal(n).astype("float32")
        out = np.zeros(n, "float32")
        prog["affine_v"](src, out)
        np.testing.assert_array_equal(out, src * 3 - 1)
    wide = rng.standard_normal(80).astype("float32")
    out = np.zeros(40, "float32")[::-1]          # negative stride output
    prog["affine_v"](wide[::2], out)              # stride-2 input: the any-stride version
    np.testing.assert_array_equal(out, wide[::2] * 3 - 1)
    out = np.zeros(33, "float32")
    prog["affine_v"](np.broadcast_to(np.float32(2), (33,)), out)   # stride 0
    np.testing.assert_array_equal(out, np.full(33, 5, "float32"))


def test_parallel_loop_uses_threads():
    x, y = BufferParam("x", "float64", 2), BufferParam("y", "float64", 2)
    s = ScalarParam("s", "float64")
    kern = Kernel("scale_rows", (x, y, s), Loop(i, 0, y.dim(0), Loop(
        j, 0, y.dim(1), y.store((i, j), x[i, j] * s + Cast(i, "float64"))), kind="parallel"))
    prog = build(kern)
    old = rt.num_threads()
    rt.set_num_threads(2)
    try:
        a = rng.standard_normal((64, 9))
        out = np.zeros_like(a)
        before = rt.PARALLEL_STATS["regions"]
        prog["scale_rows"](a, out, 2.0)
        np.testing.assert_array_equal(out, a * 2 + np.arange(64)[:, None])
        assert rt.PARALLEL_STATS["regions"] == before + 1
        assert len(rt.PARALLEL_STATS["last_threads"]) == 2
        one = np.zeros((1, 9))
        prog["scale_rows"](a[:1], one, 1.0)          # fewer rows than threads
        np.testing.assert_array_equal(one, a[:1])
        prog["scale_rows"](a[:0], one[:0], 1.0)      # no rows
    finally:
        rt.set_num_threads(old)


def philox_round_kernel():
    """Philox-4x32 rounds on counters c[4, n] with key (k0, k1), as in engine/philox.py."""
    c, out = BufferParam("c", "uint32", 2), BufferParam("out", "uint32", 2)
    k0, k1 = ScalarParam("k0", "uint32"), ScalarParam("k1", "uint32")
    u = "uint32"
    words = [Var(f"w{n}", u) for n in range(4)]
    keys = [Var("key0", u), Var("key1", u)]
    m0, m1 = Const(0xD2511F53, u), Const(0xCD9E8D57, u)
    body = [Declare(w, c[n, i]) for n, w in enumerate(words)]
    body += [Declare(keys[0], k0), Declare(keys[1], k1)]
    for r in range(10):
        if r:
            body += [Assign(keys[0], keys[0] + Const(0x9E3779B9, u)),
                     Assign(keys[1], keys[1] + Const(0xBB67AE85, u))]
        w0, w1, w2, w3 = words
        hi0, lo0 = ir.mulhi(m0, w0), m0 * w0
        hi1, lo1 = ir.mulhi(m1, w2), m1 * w2
        new = [hi1 ^ w1 ^ keys[0], lo1, hi0 ^ w3 ^ keys[1], lo0]
        tmp = [Var(f"t{r}_{n}", u) for n in range(4)]
        body += [Declare(t, v) for t, v in zip(tmp, new)]
        body += [Assign(w, t) for w, t in zip(words, tmp)]
    body += [out.store((n, i), w) for n, w in enumerate(words)]
    return Kernel("philox", (c, out, k0, k1), Loop(i, 0, c.dim(1), body))


def philox_numpy(c, k0, k1):
    c = [x.astype(np.uint64) for x in c]
    k = [np.uint64(k0), np.uint64(k1)]
    mask = np.uint64(0xFFFFFFFF)
    for r in range(10):
        if r:
            k = [(k[0] + np.uint64(0x9E3779B9)) & mask, (k[1] + np.uint64(0xBB67AE85)) & mask]
        p0, p1 = np.uint64(0xD2511F53) * c[0], np.uint64(0xCD9E8D57) * c[2]
        c = [(p1 >> np.uint64(32)) ^ c[1] ^ k[0], p1 & mask, (p0 >> np.uint64(32)) ^ c[3] ^ k[1],
             p0 & mask]
    return np.stack(c).astype(np.uint32)


def test_philox_mulhi_xor_bit_exact():
    kern = philox_round_kernel()
    vec = ir.transform(kern, "i", ir.vectorize, 16)
    prog = build(kern, Kernel("philox_v", vec.params, vec.body))
    c = rng.integers(0, 2**32, size=(4, 37), dtype=np.uint64).astype(np.uint32)
    c[:, 0] = 0
    ref = philox_numpy(c, 0xDEADBEEF, 0x12345678)
    for name in ("philox", "philox_v"):
        out = np.zeros_like(c)
        prog[name](c, out, 0xDEADBEEF, 0x12345678)
        np.testing.assert_array_equal(out, ref)
    # Random123 known answer: counter 0, key 0
    out = np.zeros((4, 1), np.uint32)
    prog["philox"](np.zeros((4, 1), np.uint32), out, 0, 0)
    assert [hex(v) for v in out[:, 0]] == ["0x6627e8d5", "0xe169c58d", "0xbc57ac4c", "0x9b00dbd8"]


@pytest.mark.parametrize("dtype", ["int32", "int8", "uint8", "int64", "uint32"])
def test_integer_arithmetic_matches_numpy(dtype):
    ops = {"add": np.add, "sub": np.subtract, "mul": np.multiply, "floordiv": np.floor_divide,
           "mod": np.mod, "min": np.minimum, "max": np.maximum, "and": np.bitwise_and,
           "xor": np.bitwise_xor}
    kernels = [elementwise_2d(f"k_{op}", dtype, lambda a, b, op=op: ir.binop(op, a, b))
               for op in ops]
    prog = build(*kernels)
    info = np.iinfo(dtype)
    a = rng.integers(info.min, int(info.max) + 1, size=(6, 7), dtype=np.int64).astype(dtype)
    b = rng.integers(info.min, int(info.max) + 1, size=(6, 7), dtype=np.int64).astype(dtype)
    b[0, :3] = 0
    a[1, 0], b[1, 0] = info.min, (-1 if info.min else 1)
    a[2, 1:4], b[2, 1:4] = [-7, 7, -7] if info.min else [7, 7, 9], [2, -2, -2] if info.min else 2
    with np.errstate(all="ignore"):
        for op, f in ops.items():
            out = np.zeros_like(a)
            prog[f"k_{op}"](a, b, out)
            np.testing.assert_array_equal(out, f(a, b), err_msg=op)


def test_shifts_comparisons_and_casts():
    u = "uint32"
    x, s = BufferParam("x", u, 1), BufferParam("s", u, 1)
    out = BufferParam("out", u, 2)
    flags = BufferParam("flags", "bool", 1)
    kern = Kernel("shifts", (x, s, out, flags), Loop(i, 0, x.dim(0), [
        out.store((0, i), x[i] << s[i]), out.store((1, i), x[i] >> s[i]),
        out.store((2, i), Cast(Cast(x[i], "int32") >> Cast(s[i], "int32"), u)),
        flags.store(i, ir.lt(x[i], s[i]) | ir.eq(x[i], Const(7, u)))]))
    prog = build(kern)
    xs = np.array([1, 7, 0x80000000, 0xFFFFFFFF, 5, 12345], np.uint32)
    ss = np.array([0, 3, 31, 40, 32, 8], np.uint32)
    o = np.zeros((3, 6), np.uint32)
    fl = np.zeros(6, bool)
    prog["shifts"](xs, ss, o, fl)
    wide = xs.astype(np.uint64)
    np.testing.assert_array_equal(o[0], np.where(ss < 32, (wide << np.minimum(ss, 31)) & 0xFFFFFFFF, 0))
    np.testing.assert_array_equal(o[1], np.where(ss < 32, xs >> np.minimum(ss, 31), 0))
    np.testing.assert_array_equal(o[2], (xs.view(np.int32) >> np.minimum(ss, 31).astype(np.int32)).view(np.uint32))
    np.testing.assert_array_equal(fl, (xs < ss) | (xs == 7))


def test_float64_math_and_divmod():
    unary = {"exp": np.exp, "log": np.log, "log1p": np.log1p, "expm1": np.expm1,
             "tanh": np.tanh, "sqrt": np.sqrt, "floor": np.floor, "sin": np.sin, "cos": np.cos,
             "abs": np.abs, "neg": np.negative, "rint": np.rint,
             "sigmoid": lambda v: 1 / (1 + np.exp(-v))}
    kernels = [elementwise_2d(f"u_{op}", "float64", lambda a, op=op: ir.UnOp(op, a), n_in=1)
               for op in unary]
    binary = {"floordiv": np.floor_divide, "mod": np.mod, "pow": np.power, "min": np.minimum,
              "max": np.maximum, "div": np.divide}
    kernels += [elementwise_2d(f"b_{op}", "float64", lambda a, b, op=op: ir.binop(op, a, b))
                for op in binary]
    prog = build(*kernels)
    x = np.array([[-800.0, -20.5, -1.0, -1e-9, 0.0, 1e-9, 0.3, 2.5, 30.0, 800.0]])
    pos = np.abs(x) + 0.5
    with np.errstate(all="ignore"):
        for op, f in unary.items():
            arg = pos if op in ("log", "sqrt", "log1p") else x
            out = np.zeros_like(arg)
            prog[f"u_{op}"](arg, out)
            np.testing.assert_allclose(out, f(arg), rtol=1e-14, atol=0, err_msg=op)
        a = np.array([[7.5, -7.5, 7.5, -7.5, 0.0, -0.0, 5.0, np.nan, 3.0, 1e300]])
        b = np.array([[2.0, 2.0, -2.0, -2.0, 3.0, 3.0, 0.0, 1.0, np.nan, 1e-300]])
        for op, f in binary.items():
            out = np.zeros_like(a)
            prog[f"b_{op}"](a, b, out)
            np.testing.assert_array_equal(out, f(a, b), err_msg=op)   # NaNs compare equal
            if op in ("floordiv", "mod"):
                np.testing.assert_array_equal(np.signbit(out), np.signbit(f(a, b)))


def test_float32_tanh_sigmoid_stable_and_casts():
    kernels = [elementwise_2d("tanh32", "float32", ir.tanh, n_in=1),
               elementwise_2d("sig32", "float32", ir.sigmoid, n_in=1)]
    x, o = BufferParam("x", "float32", 1), BufferParam("o", "int32", 1)
    kernels.append(Kernel("to_int", (x, o), Loop(i, 0, x.dim(0), o.store(i, Cast(x[i], "int32")))))
    prog = build(*kernels)
    v = np.array([[-1e4, -50, -3, -1e-6, 0, 1e-6, 3, 50, 1e4, np.inf, -np.inf]], "float32")
    out = np.zeros_like(v)
    prog["tanh32"](v, out)
    np.testing.assert_allclose(out, np.tanh(v), rtol=2e-7)
    prog["sig32"](v, out)
    with np.errstate(over="ignore"):
        np.testing.assert_allclose(out, 1 / (1 + np.exp(-v.astype(np.float64))), rtol=2e-7)
    assert np.isfinite(out).all()
    f = np.array([-2.7, -0.5, 0.5, 2.7, 1e6], "float32")
    ints = np.zeros(5, "int32")
    prog["to_int"](f, ints)
    np.testing.assert_array_equal(ints, f.astype("int32"))


def test_local_buffer_and_if():
    x, out = BufferParam("x", "float32", 1), BufferParam("out", "float32", 1)
    tmp = ir.LocalBuffer("tmp", "float32", (4,))
    kern = Kernel("local", (x, out), [
        ir.Alloc(tmp),
        Loop(i, 0, 4, tmp.store(i, Const(0.0, "float32")), kind="unroll"),
        Loop(i, 0, x.dim(0), ir.If(ir.gt(x[i], 0.0),
                                   tmp.store(i % 4, tmp[i % 4] + x[i]),
                                   tmp.store(3, tmp[3] - 1.0))),
        Loop(i, 0, 4, out.store(i, tmp[i]))])
    prog = build(kern)
    xs = np.array([1, -1, 2, 3, 4, -5, 6, 7, 8], "float32")
    o = np.zeros(4, "float32")
    prog["local"](xs, o)
    ref = np.zeros(4, "float32")
    for n, v in enumerate(xs):
        if v > 0:
            ref[n % 4] += v
        else:
            ref[3] -= 1
    np.testing.assert_array_equal(o, ref)


def test_o3_compile_sources_and_errors():
    kern = matmul_kernel("matmul_o3")
    prog = build(kern, opt=3)
    a, b = np.ones((4, 3), "float32"), np.ones((3, 5), "float32")
    c = np.zeros((4, 5), "float32")
    prog["matmul_o3"].bind(a, b, c)()
    np.testing.assert_array_equal(c, np.full((4, 5), 3, "float32"))
    ck = prog["matmul_o3"]
    assert "matmul_o3" in ck.source("llvm") and "matmul_o3" in ck.source("asm")
    assert ck.source("ir").startswith("kernel matmul_o3(")
    with pytest.raises(KilnTypeError, match="argument 'B'.*float32"):
        ck(a, b.astype("float64"), c)
    with pytest.raises(KilnTypeError, match="takes 3 arguments"):
        ck(a, b)
    with pytest.raises(KilnValueError, match="argument 'C'.*read-only"):
        ck(a, b, np.broadcast_to(np.float32(0), (4, 5)))
    gpu = Kernel("gpu", (BufferParam("x", "int64", 1),),
                 BufferParam("x", "int64", 1).store(0, ir.ThreadIdx("x")))
    with pytest.raises(RenderError, match="ThreadIdx is for GPU"):
        build(gpu)


def test_parallel_loop_captures_outer_locals_and_scratch():
    x, out = BufferParam("x", "float32", 2), BufferParam("out", "float32", 2)
    scale = Var("scale", "float32")
    tmp = ir.LocalBuffer("tmp", "float32", (2,))
    row = ir.LocalBuffer("row", "float32", (1,))
    kern = Kernel("captures", (x, out), [
        Loop(i, 0, 2, []),                                   # a sibling loop reusing 'i'
        ir.Alloc(tmp), tmp.store(1, Const(3.0, "float32")),
        Declare(scale, Const(2.0, "float32")),
        Loop(i, 0, out.dim(0), [
            ir.Alloc(row), row.store(0, Cast(i, "float32")),
            Loop(j, 0, out.dim(1), out.store((i, j), x[i, j] * scale + tmp[1] + row[0]))],
            kind="parallel")])
    prog = build(kern)
    a = rng.standard_normal((9, 4)).astype("float32")
    o = np.zeros_like(a)
    prog["captures"](a, o)
    np.testing.assert_array_equal(o, a * 2 + 3 + np.arange(9, dtype="float32")[:, None])
