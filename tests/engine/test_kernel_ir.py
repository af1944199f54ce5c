"""Kernel IR: verifier errors, golden printer text, and transforms that keep results."""

import numpy as np
import pytest

import engine.kernel_ir as ir
from engine.kernel_ir import (
    Assign,
    BufferParam,
    Cast,
    Const,
    Declare,
    If,
    Kernel,
    KernelIRError,
    Load,
    Loop,
    ScalarParam,
    Var,
    gt,
)

i, j = Var("i"), Var("j")
x, y = BufferParam("x", "float32", 1), BufferParam("y", "float32", 1)
a = ScalarParam("a", "float32")
X, out = BufferParam("X", "float32", 2), BufferParam("out", "float32", 1)
acc = Var("acc", "float32")

SAXPY = Kernel("saxpy", (x, y, a), Loop(i, 0, y.dim(0), y.store(i, a * x[i] + y[i])))
RELU_SUM = Kernel("relu_row_sum", (X, out), Loop(i, 0, X.dim(0), [
    Declare(acc, Const(0.0, "float32")),
    Loop(j, 0, X.dim(1), If(gt(X[i, j], 0.0), Assign(acc, acc + X[i, j]))),
    out.store(i, acc)], kind="parallel"))


# ----------------------------------------------------------------------------- printers

def test_listing_golden():
    assert ir.listing(SAXPY) == """\
kernel saxpy(x: float32[?], y: float32[?], a: float32)
  1  for i = 0 to y.shape[0] step 1 serial {
  2    %0 = load x[i] : float32
  3    %1 = mul a, %0 : float32
  4    %2 = load y[i] : float32
  5    %3 = add %1, %2 : float32
  6    store y[i] = %3
  7  }
"""
    assert ir.listing(RELU_SUM) == """\
kernel relu_row_sum(X: float32[?, ?], out: float32[?])
  1  for i = 0 to X.shape[0] step 1 parallel {
  2    decl acc: float32 = 0.0:float32
  3    for j = 0 to X.shape[1] step 1 serial {
  4      %0 = load X[i, j] : float32
  5      %1 = gt %0, 0.0:float32 : bool
  6      if %1 {
  7        %2 = load X[i, j] : float32
  8        %3 = add acc, %2 : float32
  9        acc = %3
 10      }
 11    }
 12    store out[i] = acc
 13  }
"""


def test_loop_nest_golden():
    assert ir.loop_nest(RELU_SUM) == """\
kernel relu_row_sum(float32 X[?][?], float32 out[?]) {
  parallel for (int64 i = 0; i < X.shape[0]; i += 1) {
    float32 acc = 0.0f;
    for (int64 j = 0; j < X.shape[1]; j += 1) {
      if (X[i, j] > 0.0f) {
        acc = acc + X[i, j];
      }
    }
    out[i] = acc;
  }
}
"""
    assert ir.loop_nest(ir.transform(SAXPY, "i", ir.vectorize, 8)) == """\
kernel saxpy(float32 x[?], float32 y[?], float32 a) {
  vectorize for (int64 i = 0; i < (y.shape[0] // 8) * 8; i += 8) {
    y[i:+8] = (broadcast8(a) * x[i:+8]) + y[i:+8];
  }
  for (int64 i = (y.shape[0] // 8) * 8; i < y.shape[0]; i += 1) {
    y[i] = (a * x[i]) + y[i];
  }
}
"""


def test_nodes_are_hashable_values_and_listing_is_exact():
    again = Kernel("saxpy", (x, y, a), Loop(i, 0, y.dim(0), y.store(i, a * x[i] + y[i])))
    assert again == SAXPY and hash(again) == hash(SAXPY)
    assert len({SAXPY, again, RELU_SUM}) == 2
    f64 = Kernel("k", (y,), y.store(0, Const(0.5, "float32")))
    assert "0.5:float32" in ir.listing(f64)
    with pytest.raises(TypeError, match="no truth value"):
        bool(i < 3)


# ----------------------------------------------------------------------------- verifier

def bad(body, params=(x, y, a), name="bad"):
    return Kernel(name, params, body)


@pytest.mark.parametrize("kernel, message", [
    (bad(Loop(i, 0, x.dim(0), y.store(j, x[i]))), "'j' is not defined"),
    (bad(y.store(0, Cast(x[0], "float64"))), "storing float64 into float32 buffer 'y'"),
    (bad(y.store((0, 1), x[0])), "'y' has 1 dims but is indexed with 2"),
    (bad(Loop(i, 0, 3, Assign(i, Const(1)))), "cannot assign to loop 'i'"),
    (bad(Loop(i, 0, 3, Loop(i, 0, 3, []))), "'i' is already defined"),
    (bad(Assign(acc, Const(1.0, "float32"))), "undeclared 'acc'"),
    (bad([Declare(acc, Const(0.0, "float32")),
          Loop(i, 0, 4, Assign(acc, acc + x[i]), kind="parallel")]), "race"),
    (bad(Loop(i, 0, 4, Loop(j, 0, 4, [], kind="parallel"), kind="parallel")), "nested"),
    (bad(y.store(0, Load(BufferParam("z", "float32", 1), (0,)))), "unknown buffer 'z'"),
    (bad(y.store(0, ir.BinOp("add", x[0], Cast(x[0], "float64")))), "operands differ"),
    (bad(Loop(i, 0, 4, y.store(i, Cast(ir.exp(i), "float32")))), "exp needs a float"),
    (bad(Loop(i, 0, 4, [], kind="warp")), "unknown loop kind"),
    (bad(y.store(0, x[Const(0.5, "float32")])), "must be an int scalar"),
    (bad(y.store(0, Const(1.0, "float32")), name="1bad"), "not a valid identifier"),
    (bad(Loop(i, 0, 4, y.store(i, Var("a", "float64")))), "'a' is float32 but used as float64"),
])
def test_verifier_errors(kernel, message):
    with pytest.raises(KernelIRError, match=message) as info:
        ir.verify(kernel)
    assert f"kernel '{kernel.name}'" in str(info.value)


def test_verifier_accepts_good_kernels_and_names_the_node():
    assert ir.verify(SAXPY) is SAXPY
    ir.verify(RELU_SUM)
    with pytest.raises(KernelIRError) as info:
        ir.verify(bad(Loop(i, 0, x.dim(0), y.store(i, x[i] + Var("k", "float32")))))
    msg = str(info.value)
    assert "at: k" in msg and "statement: y[i] = x[i] + k;" in msg and "loop i" in msg


def test_builders_refuse_mixed_dtypes():
    with pytest.raises(KernelIRError, match="insert a Cast"):
        x[0] + Cast(x[0], "int32")
    with pytest.raises(KernelIRError, match="cannot mix the float 0.5"):
        i + 0.5


# ----------------------------------------------------------------------------- transforms

def run(kernel, *args):
    from backends.llvm import runtime as rt
    prog = rt.compile_kernels([kernel], opt=0, cache=False)
    prog[kernel.name](*args)


def test_transforms_preserve_results():
    pytest.importorskip("llvmlite")
    rng = np.random.default_rng(1)
    variants = {
        "split": ir.transform(SAXPY, "i", ir.split, 4),
        "unroll": ir.transform(SAXPY, "i", ir.unroll, 3),
        "vectorize": ir.transform(SAXPY, "i", ir.vectorize, 8),
        "split_vec_par": ir.transform(ir.transform(ir.transform(SAXPY, "i", ir.split, 16),
                                                   "i_i", ir.vectorize, 16),
                                      "i_o", ir.mark_parallel),
    }
    for n in (0, 5, 16, 37):
        xs = rng.standard_normal(n).astype("float32")
        ys = rng.standard_normal(n).astype("float32")
        for name, kern in variants.items():
            ir.verify(kern)
            got = ys.copy()
            run(kern, xs, got, 2.0)
            np.testing.assert_array_equal(got, np.float32(2) * xs + ys, err_msg=name)
    sums = {
        "relu": RELU_SUM,
        "relu_unroll": ir.transform(RELU_SUM, "j", ir.unroll, 4),
        "relu_split": ir.transform(RELU_SUM, "j", ir.split, 5),
    }
    mat = rng.standard_normal((6, 23)).astype("float32")
    for name, kern in sums.items():
        got = np.zeros(6, "float32")
        run(kern, mat, got)
        np.testing.assert_allclose(got, np.where(mat > 0, mat, 0).sum(1), rtol=1e-5,
                                   err_msg=name)


def test_constant_bounds_drop_the_remainder():
    k = Kernel("c", (y,), Loop(i, 0, 32, y.store(i, Const(1.0, "float32"))))
    assert len(ir.transform(k, "i", ir.vectorize, 16).body) == 1
    assert len(ir.transform(k, "i", ir.split, 8).body) == 1
    assert len(ir.transform(k, "i", ir.unroll, 5).body) == 2


@pytest.mark.parametrize("body, message", [
    (Loop(i, 0, 8, y.store(0, x[i])), "does not depend on the loop index"),
    (Loop(i, 0, 8, y.store(i, x[i * 5])), "only the last index"),  # strides 2..4 are loads
    (Loop(i, 0, 8, y.store(i * 2, x[i])), "only the last index"),
    (Loop(i, 1, 8, y.store(i, y[i - 1])), "loop-carried dependence"),
    (Loop(i, 0, 8, If(gt(x[i], 0.0), y.store(i, x[i]))), "use Select"),
])
def test_vectorize_refuses_what_it_cannot_do(body, message):
    with pytest.raises(KernelIRError, match=message):
        ir.transform(Kernel("v", (x, y), body), "i", ir.vectorize, 8)


def test_unit_stride_tests_are_recognized_in_conjunctions():
    """A backend specializes the then-branch of an If on the buffers its condition tests
    contiguous (last stride 1; a broadcastable operand: 1 or 0), whatever else it tests."""
    a, b = ir.BufferParam("a", "float32", 2), ir.BufferParam("b", "float32", 1)
    cond = ir.gt(ir.Var("n"), 3) & ir.unit_stride_test([a, b], broadcastable=[b])
    assert ir.unit_stride_tested(cond) == ({"a"}, {"b"})
    assert ir.unit_stride_tested(ir.eq(a.stride(0), 1)) == (set(), set())   # not the last axis
    assert ir.unit_stride_tested(ir.binop("or", ir.eq(a.stride(1), 1), ir.gt(ir.Var("n"), 3))) == (set(), set())
    assert ir.unit_stride_test([]) is None
