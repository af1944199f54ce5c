"""The CUDA C renderer: golden sources of small kernels (one shared-memory tiled conv), literals, names, the ABI."""

from __future__ import annotations

import math
import os

import pytest

from backends.cuda import mathops as M
from backends.cuda.render import RenderError, abi_layout, cname, render_kernel, render_module
from engine import kernel_ir as ir
from engine.gpu import GpuTarget, gpu_schedule
from engine.gpu.tile_conv import conv_fwd_tiled
from engine.gpu.tile_gemm import Tiles
from engine.lowering.core import reduce_kernel


def _render(kernel, target=None):
    gk = gpu_schedule(kernel, target)
    return render_module([la.kernel for la in gk.launches], {la.kernel.name: la for la in gk.launches})


def _saxpy():
    x, y = ir.BufferParam("x", "float32", 1), ir.BufferParam("y", "float32", 1)
    out, a, i = ir.BufferParam("out", "float32", 1), ir.ScalarParam("a", "float32"), ir.Var("i")
    return ir.Kernel("saxpy", (x, y, out, a),
                     ir.Loop(i, 0, out.dim(0), out.store(i, a * x[i] + y[i]), kind="parallel"))


GOLDEN = os.path.join(os.path.dirname(__file__), "cuda_golden")


def _ints():
    u, o, q = ir.BufferParam("u", "uint32", 1), ir.BufferParam("o", "uint32", 1), ir.BufferParam("q", "int64", 1)
    i, w = ir.Var("i"), ir.Var("w", "uint32")
    return ir.Kernel("philox_step", (u, o, q), ir.Loop(i, 0, u.dim(0), [
        ir.Declare(w, u[i]),
        o.store(i, ir.mulhi(w, ir.Const(0xD2511F53, "uint32")) ^ (w >> ir.Const(3, "uint32"))),
        q.store(i, (ir.Cast(w, "int64") // -3) % 7)], kind="parallel"))


@pytest.mark.parametrize("name,kernel,target", [
    ("saxpy", _saxpy(), None),
    ("row_max_block_reduction", reduce_kernel("row_max", "float32", 2, (1,), "max"),
     GpuTarget(block_threads=32)),
    ("philox_int_ops", _ints(), None),
    ("conv_fwd_tiled_16x16", conv_fwd_tiled("conv_fwd_tiled", "float32", (1, 1), (1, 1), 1, False,
                                            (3, 3), tiles=Tiles(16, 16, 8, 4, 4)), None),
])
def test_golden(name, kernel, target):
    """tests/backends/cuda_golden/<name>.cu; KILN_REGEN_GOLDEN=1 rewrites them (read the diff)."""
    path = os.path.join(GOLDEN, name + ".cu")
    text = _render(kernel, target)
    if os.environ.get("KILN_REGEN_GOLDEN") == "1":
        with open(path, "w") as f:
            f.write(text)
    with open(path) as f:
        assert text == f.read()


def test_literals():
    assert M.literal(0.1, "float32") == "0.10000000149011612f"   # exactly float32(0.1)
    assert M.literal(-2.5, "float64") == "(-2.5)"
    assert M.literal(math.inf, "float32") == "__int_as_float(0x7f800000)"
    assert M.literal(-math.inf, "float64") == "__longlong_as_double((long long)0xfff0000000000000ULL)"
    assert M.literal(math.nan, "float32") == "__int_as_float(0x7fc00000)"
    assert M.literal(-(2 ** 63), "int64") == "(-9223372036854775807LL - 1LL)"
    assert M.literal(-(2 ** 31), "int32") == "(-2147483647 - 1)"
    assert M.literal(2 ** 64 - 1, "uint64") == "18446744073709551615ULL"
    assert M.literal(-5, "int8") == "((signed char)-5)"
    assert M.literal(True, "bool") == "true"


def test_names_and_abi():
    assert cname("float") == "float_" and cname("exp") == "exp_" and cname("acc") == "acc"
    x, out = ir.BufferParam("x", "bool", 2), ir.BufferParam("float", "int8", 0)
    s = ir.ScalarParam("n", "uint16")
    k = ir.Kernel("k", (x, out, s), out.store((), ir.Cast(x[0, 1], "int8")))
    layout = [(n, t) for n, t, _ in abi_layout(k)]
    assert layout == [("x", "const bool* __restrict__"), ("x_shape0", "long long"),
                      ("x_shape1", "long long"), ("x_stride0", "long long"),
                      ("x_stride1", "long long"), ("float_", "signed char*"),
                      ("n", "unsigned short")]
    assert "float_[0] = (signed char)x[1LL * x_stride1];" in render_kernel(k)


def test_vectors_are_refused():
    x = ir.BufferParam("x", "float32", 1)
    k = ir.Kernel("v", (x,), x.store(0, ir.ReduceLanes("add", x.load(0, 4))))
    with pytest.raises(RenderError, match="scalarize"):
        render_kernel(k)
