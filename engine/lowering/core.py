"""Lowering rules of the core ops (engine/ops/{elemwise,reduce,blas,shape,indexing,random}.py).

Each rule returns a ``Lowered`` (engine/lower.py): kernels written over runtime shapes, the
steps launching them, and the host function computing (and checking) the output shapes before
any kernel runs. Ops that compute nothing (DimShuffle, a contiguous Reshape, Shape, ...) are
views. Semantics follow the numpy oracle, backends/numpy/core_ops.py.
"""

from __future__ import annotations

import math
import os

import numpy as np

from engine import kernel_ir as ir
from engine.graph import Constant
from engine.kernel_ir import BufferParam, Cast, Const, Declare, If, Loop, ScalarParam, Select, Var
from engine.lower import HostScalar, In, Lowered, LoweringError, Out, Step, Tmp, lowering
from engine.lowering.common import (
    ArgView,
    Emitter,
    HostLowered,
    bcast_index,
    box_muller,
    broadcast_runtime,
    const,
    copy_kernel,
    dims_of,
    elementwise_kernel,
    expr_label,
    flat,
    input_label,
    kernel_name,
    loop_vars,
    nest,
    outer_parallel,
    per_call,
    philox_words,
    reduce_body,
    reduce_op,
    shape_error,
    tag,
    uniform_unit,
)
from engine.ops import blas, elemwise, indexing, random, reduce, shape
from engine.ops.fused import expr_inputs

# ----------------------------------------------------------------------------- elementwise


def embed_constants(node, expr: tuple) -> tuple:
    """(expr with 0-d constant inputs turned into "const" references and the other inputs
    renumbered, [node input index of each remaining slot])."""
    inputs = node.inputs
    embed = {k: v for k, v in enumerate(inputs) if isinstance(v, Constant) and v.ndim == 0}
    slots = [k for k in range(len(inputs)) if k not in embed]
    slot_of = {k: s for s, k in enumerate(slots)}

    def remap(arg):
        if arg[0] == "in":
            k = arg[1]
            if k in embed:
                return ("const", embed[k].value.item(), embed[k].dtype)
            return ("in", slot_of[k])
        return arg
    return tuple((name, dtype, tuple(remap(a) for a in args)) for name, dtype, args in expr), slots


def lower_expression(node, expr: tuple, outputs: tuple) -> Lowered:
    """One kernel for a (fused) elementwise expression over ``node.inputs``; 0-d constant
    inputs are embedded in the kernel. Output k's shape is the broadcast of the inputs it reads."""
    inputs = node.inputs
    kexpr, slots = embed_constants(node, expr)
    used = set(slots)
    reads = [sorted(k for k in expr_inputs(expr, o) if k in used) for o in outputs]
    out_types = [(o.dtype, o.ndim) for o in node.outputs]
    rank = max((nd for _, nd in out_types), default=0)
    domain_scalars = not (all(r == reads[0] for r in reads) or all(
        o.type.shape == node.outputs[0].type.shape and None not in o.type.shape for o in node.outputs))
    in_types = [(inputs[k].dtype, inputs[k].ndim) for k in slots]
    label = expr_label(kexpr)
    name = kernel_name("E", label, tag(out_types[0][0]), f"{rank}d", f"{len(outputs)}out" if len(outputs) > 1 else "")
    kernel = elementwise_kernel(name, in_types, kexpr, outputs, out_types, domain_scalars)

    def output_shapes(arrays):
        return [broadcast_runtime(node, [arrays[k].shape for k in r], r) if r else () for r in reads]

    args = [In(k) for k in slots] + [Out(m) for m in range(len(outputs))]
    if domain_scalars:
        domain = per_call(lambda arrays: broadcast_runtime(node, [s for s in output_shapes(arrays)]))
        args += [HostScalar(lambda arrays, a=a: _padded(domain(arrays), rank)[a]) for a in range(rank)]
    return Lowered([kernel], [Step(name, tuple(args))], output_shapes)


def _padded(shape: tuple, rank: int) -> tuple:
    return (1,) * (rank - len(shape)) + tuple(shape)


@lowering(elemwise.Elemwise)
def lower_elemwise(node) -> Lowered:
    op = node.op
    args = tuple(("in", k) for k in range(len(node.inputs)))
    expr = ((op.scalar_op, node.outputs[0].dtype, args),)
    return lower_expression(node, expr, (0,))


# ----------------------------------------------------------------------------- reductions

def reduce_kernel(name: str, dtype: str, ndim: int, axes: tuple, reducer: str) -> ir.Kernel:
    x = BufferParam("x", dtype, ndim)
    out = BufferParam("out", dtype, ndim - len(axes))
    body = reduce_body(dims_of(x), axes, lambda v: ([], x[tuple(v)]),
                       lambda kv, val: out.store(tuple(kv), val), lambda kv: out[tuple(kv)],
                       reduce_op(reducer, dtype), dtype)
    return ir.Kernel(name, (x, out), body)


@lowering(reduce.Reduce)
def lower_reduce(node) -> Lowered:
    op, x = node.op, node.inputs[0]
    axes = tuple(op.axes)
    name = kernel_name("R", op.reducer, tag(x.dtype), f"{x.ndim}d", "ax" + "".join(map(str, axes)))
    kernel = reduce_kernel(name, x.dtype, x.ndim, axes, op.reducer)

    def output_shapes(arrays):
        s = arrays[0].shape
        if op.reducer in ("max", "min") and any(s[a] == 0 for a in axes) and \
                math.prod(d for i, d in enumerate(s) if i not in axes):
            raise shape_error(node, f"{op.reducer} of an empty axis (input shape {s}); it has no identity")
        return [tuple(d for i, d in enumerate(s) if i not in axes)]
    return Lowered([kernel], [Step(name, (In(0), Out(0)))], output_shapes)


@lowering(reduce.Argmax)
def lower_argmax(node) -> Lowered:
    op, x = node.op, node.inputs[0]
    d, axis, dt = x.ndim, node.op.axis, x.dtype
    X = BufferParam("x", dt, d)
    out = BufferParam("out", "int64", d - 1)
    v = loop_vars("i", d)
    kept = [a for a in range(d) if a != axis]
    best, bi, r = Var("best", dt), Var("best_i"), Var("r")
    at = list(v)
    at[axis] = Const(0)
    first = X[tuple(at)]
    at[axis] = r
    em = Emitter("a")
    cur = em.local(X[tuple(at)])
    better = ir.lt(cur, best) if op.minimum else ir.gt(cur, best)
    if dt in ("float32", "float64"):  # the first NaN wins, as numpy
        better = better | (ir.ne(cur, cur) & ir.eq(best, best))
    take = em.local(better)
    scan = Loop(r, 1, X.dim(axis), em.stmts + [ir.Assign(best, Select(take, cur, best)),
                                                ir.Assign(bi, Select(take, r, bi))], kind="unroll")
    body = (Declare(best, first), Declare(bi, Const(0)), scan, out.store(tuple(v[a] for a in kept), bi))
    kvars = [v[a] for a in kept]
    name = kernel_name("argmin" if op.minimum else "argmax", tag(dt), f"{d}d", f"ax{axis}")
    kernel = ir.Kernel(name, (X, out), nest(kvars, [X.dim(a) for a in kept], body, outer_parallel(len(kept))))

    def output_shapes(arrays):
        s = arrays[0].shape
        rest = tuple(n for i, n in enumerate(s) if i != axis)
        if s[axis] == 0 and math.prod(rest):
            raise shape_error(node, f"argmax/argmin of an empty axis (input shape {s})")
        return [rest]
    return Lowered([kernel], [Step(name, (In(0), Out(0)))], output_shapes)


# ----------------------------------------------------------------------------- matrix products

#: rows of the output computed together (each loaded vector of b feeds ROWS accumulators)
ROWS = 4


def matmul_body(m, n, k, a_at, b_at, store, dtype: str, parallel: bool, dot_form: bool) -> tuple:
    """Loops computing ``store(i, j, sum_p a_at(i, p) * b_at(p, j))`` for an m x n result.

    axpy form (default): rows in blocks of ROWS (the block loop parallel), a column loop the
    backend vectorizes (one vector of b feeds ROWS vector accumulators), the reduction loop
    innermost, then the remaining rows one at a time. ``dot_form`` (b transposed, contiguous
    along p): a dot product per element, the backend vectorizes p as a reduction."""
    fl = dtype in ("float32", "float64")
    zero = const(0, dtype)
    i, j, p = Var("i"), Var("j"), Var("p")
    if dot_form:
        acc = Var("acc", dtype)
        inner = (Declare(acc, zero), Loop(p, 0, k, ir.Assign(acc, acc + a_at(i, p) * b_at(p, j))),
                 *_stmts(store(i, j, acc)))
        return (Loop(i, 0, m, Loop(j, 0, n, inner), kind="parallel" if parallel else "serial"),)

    def madd(a, b, c):
        return ir.fma(a, b, c) if fl else c + a * b
    io = Var("io")
    rows = [io * ROWS + r for r in range(ROWS)]
    accs = [Var(f"acc{r}", dtype) for r in range(ROWS)]
    bv = Var("bv", dtype)
    block = ([Declare(a, zero) for a in accs]
             + [Loop(p, 0, k, [Declare(bv, b_at(p, j))]
                     + [ir.Assign(a, madd(a_at(row, p), bv, a)) for a, row in zip(accs, rows)])]
             + [s for a, row in zip(accs, rows) for s in _stmts(store(row, j, a))])
    main = Loop(io, 0, m // ROWS, Loop(j, 0, n, block), kind="parallel" if parallel else "serial")
    acc = Var("acc", dtype)
    one = (Declare(acc, zero), Loop(p, 0, k, ir.Assign(acc, madd(a_at(i, p), b_at(p, j), acc))),
           *_stmts(store(i, j, acc)))
    rest = Loop(i, (m // ROWS) * ROWS, m, Loop(j, 0, n, one))
    return (main, rest)


def _stmts(x) -> list:
    return list(x) if isinstance(x, (list, tuple)) else [x]


def fast_gemm(node, output_shapes) -> Lowered | None:
    """The packed, cache-blocked GEMM of engine/lowering/gemm.py for a MatMul / Gemm node
    (float32/float64), with ``output_shapes`` (which names the node) checked first; None when
    it does not apply or ``KILN_GEMM=loops`` asks for the plain loop nest."""
    if os.environ.get("KILN_GEMM", "").strip().lower() == "loops":
        return None
    try:
        from engine.lowering.gemm import gemm_lowered_for_matmul
    except ImportError:
        return None
    try:
        low = gemm_lowered_for_matmul(node)
    except LoweringError:
        return None
    inner = low.output_shapes

    def checked(arrays):
        output_shapes(arrays)
        return inner(arrays)
    low.output_shapes = checked
    return low


@lowering(blas.MatMul)
def lower_matmul(node) -> Lowered:
    a_var, b_var = node.inputs
    out_var = node.outputs[0]
    dt, da, db, do = out_var.dtype, a_var.ndim, b_var.ndim, out_var.ndim
    A, B, OUT = BufferParam("a", dt, da), BufferParam("b", dt, db), BufferParam("out", dt, do)
    bvars = loop_vars("bt", do - 2)
    ab, bb = bcast_index(da - 2, bvars), bcast_index(db - 2, bvars)
    m, n, k = OUT.dim(do - 2), OUT.dim(do - 1), A.dim(da - 1)
    body = matmul_body(m, n, k, lambda i, p: A[ab + (i, p)], lambda p, j: B[bb + (p, j)],
                       lambda i, j, v: OUT.store(tuple(bvars) + (i, j), v), dt, parallel=not bvars,
                       dot_form=False)
    body = nest(bvars, [OUT.dim(x) for x in range(do - 2)], body, outer_parallel(len(bvars)))
    name = kernel_name("matmul", tag(dt), f"{da}d", f"{db}d")
    kernel = ir.Kernel(name, (A, B, OUT), body)

    def output_shapes(arrays):
        a, b = arrays
        if a.shape[-1] != b.shape[-2]:
            raise shape_error(node, f"inner dimensions differ at run time: {input_label(node.inputs[0])} of "
                                    f"shape {a.shape} @ {input_label(node.inputs[1])} of shape {b.shape}")
        batch = broadcast_runtime(node, [a.shape[:-2], b.shape[:-2]], [0, 1])
        return [batch + (a.shape[-2], b.shape[-1])]
    return fast_gemm(node, output_shapes) or Lowered([kernel], [Step(name, (In(0), In(1), Out(0)))], output_shapes)


# ----------------------------------------------------------------------------- views and host values

@lowering(shape.DimShuffle)
def lower_dimshuffle(node) -> Lowered:
    order = node.op.new_order
    kept = [a for a in order if a != "x"]
    dropped = tuple(a for a in range(node.inputs[0].ndim) if a not in kept)
    # planned once: a transpose (kept axes in output order, then the dropped ones), a reshape
    # dropping those trailing size-1 axes, an index inserting the new ones (None): views all
    perm = tuple(kept) + dropped
    if perm == tuple(range(len(perm))):
        perm = None
    new_axes = tuple(None if a == "x" else slice(None) for a in order) if "x" in order else None
    n_kept = len(kept)

    def view(arrays):
        x = arrays[0]
        if dropped and any(x.shape[a] != 1 for a in dropped):
            raise shape_error(node, f"drops axes {dropped} of an input of shape {x.shape}, which are not 1")
        y = x if perm is None else x.transpose(perm)
        if dropped:
            y = y.reshape(y.shape[:n_kept])
        return y if new_axes is None else y[new_axes]
    return Lowered(view=view)


def _reshape_target(node, x_shape, sizes) -> tuple:
    it = iter(sizes)
    target = [int(next(it)) if p is None else p for p in node.op.pattern]
    total = math.prod(x_shape)
    if target.count(-1) == 1:
        known = math.prod(t for t in target if t != -1)
        if known == 0 or total % known:
            raise shape_error(node, f"cannot reshape an array of shape {x_shape} to {tuple(target)}")
        target[target.index(-1)] = total // known
    if any(t < 0 for t in target) or math.prod(target) != total:
        raise shape_error(node, f"cannot reshape an array of shape {x_shape} ({total} elements) to "
                                f"{tuple(target)}")
    return tuple(target)


@lowering(shape.Reshape)
def lower_reshape(node) -> Lowered:
    x = node.inputs[0]
    name = kernel_name("copy", tag(x.dtype), f"{x.ndim}d")
    kernel = copy_kernel(x.dtype, x.ndim, name)
    target = per_call(lambda arrays: _reshape_target(node, arrays[0].shape, arrays[1:]))

    def view(arrays):
        try:
            return np.reshape(arrays[0], target(arrays), copy=False)
        except ValueError:
            return None  # not expressible as a view: run the copy kernel

    def output_shapes(arrays):
        return [target(arrays)]
    out_as_x = ArgView(Out(0), lambda a, arrays: a.reshape(arrays[0].shape))
    return Lowered([kernel], [Step(name, (In(0), out_as_x))], output_shapes, view=view)


@lowering(shape.Shape)
def lower_shape(node) -> Lowered:
    return Lowered(view=lambda arrays: np.array(arrays[0].shape, dtype="int64"))


@lowering(shape.ShapeOf)
def lower_shape_of(node) -> Lowered:
    axis = node.op.axis
    return Lowered(view=lambda arrays: np.array(arrays[0].shape[axis], dtype="int64"))


@lowering(shape.StopGradient)
def lower_stop_gradient(node) -> Lowered:
    return Lowered(view=lambda arrays: arrays[0])


@lowering(shape.BroadcastLike)
def lower_broadcast_like(node) -> Lowered:
    def view(arrays):
        x, like = arrays
        return np.broadcast_to(x, broadcast_runtime(node, [x.shape, like.shape]))
    return Lowered(view=view)


@lowering(shape.Alloc)
def lower_alloc(node) -> Lowered:
    pattern = node.op.pattern

    def view(arrays):
        it = iter(arrays[1:])
        target = tuple(int(next(it)) if p is None else p for p in pattern)
        if any(d < 0 for d in target):
            raise shape_error(node, f"negative dimension in {target}")
        value = arrays[0]
        if broadcast_runtime(node, [value.shape, target]) != target:
            raise shape_error(node, f"a value of shape {value.shape} cannot fill shape {target}")
        return np.broadcast_to(value, target)
    return Lowered(view=view)


@lowering(shape.SumToShape)
def lower_sum_to_shape(node) -> Lowered:
    g_var, like_var = node.inputs
    dt, G, L = g_var.dtype, g_var.ndim, like_var.ndim
    lead = G - L
    static = like_var.type.shape
    gbuf, out = BufferParam("g", dt, G), BufferParam("out", dt, L)

    def output_shapes(arrays):
        g, like = arrays
        for i, d in enumerate(like.shape):
            if d != 1 and g.shape[lead + i] != d:
                raise shape_error(node, f"cannot sum a gradient of shape {g.shape} to shape {like.shape}")
        return [tuple(like.shape)]

    if None not in static:  # the summed axes are known now
        axes = tuple(range(lead)) + tuple(lead + i for i, d in enumerate(static) if d == 1)

        def store(kv, v):
            it = iter(kv)
            return out.store(tuple(Const(0) if d == 1 else next(it) for d in static), v)

        def load(kv):
            it = iter(kv)
            return out[tuple(Const(0) if d == 1 else next(it) for d in static)]
        body = reduce_body(dims_of(gbuf), axes, lambda v: ([], gbuf[tuple(v)]), store, load, "add", dt)
        name = kernel_name("sum_to", tag(dt), f"{G}d", "ax" + "".join(map(str, axes)))
    else:  # run-time axes: zero the output, then accumulate with stride-0 output dims (serial)
        ov, gv = loop_vars("o", L), loop_vars("i", G)
        zero = nest(ov, dims_of(out), out.store(tuple(ov), const(0, dt)), outer_parallel(L))
        at = bcast_index(L, gv)
        acc = nest(gv, dims_of(gbuf), out.store(at, out[at] + gbuf[tuple(gv)]), "unroll")
        body = zero + acc
        name = kernel_name("sum_to_dyn", tag(dt), f"{G}d_{L}d")
    kernel = ir.Kernel(name, (gbuf, out), body)

    def view(arrays):
        # nothing to sum when the gradient already has the target's shape (a run-time
        # broadcast that did not happen, the common case): the gradient itself, no kernel
        output_shapes(arrays)
        g, like = arrays
        return g if g.shape == like.shape else None
    return Lowered([kernel], [Step(name, (In(0), Out(0)))], output_shapes, view=view)


# ----------------------------------------------------------------------------- join, arange

@lowering(shape.Join)
def lower_join(node) -> Lowered:
    axis, n = node.op.axis, len(node.inputs)
    dt, d = node.outputs[0].dtype, node.outputs[0].ndim
    xs = [BufferParam(f"x{k}", dt, d) for k in range(n)]
    out = BufferParam("out", dt, d)
    offs = [ScalarParam(f"off{k}", "int64") for k in range(1, n)]
    body = []
    for k, x in enumerate(xs):
        v = loop_vars(f"i{k}_", d)
        at = list(v)
        if k:
            at[axis] = v[axis] + offs[k - 1]
        body += nest(v, dims_of(x), out.store(tuple(at), x[tuple(v)]), outer_parallel(d))
    name = kernel_name("join", tag(dt), f"{d}d", f"ax{axis}", f"{n}in")
    kernel = ir.Kernel(name, (*xs, out, *offs), tuple(body))

    def output_shapes(arrays):
        first = arrays[0].shape
        for a in arrays[1:]:
            if any(p != q for i, (p, q) in enumerate(zip(first, a.shape)) if i != axis):
                raise shape_error(node, f"concatenate along axis {axis}: input shapes "
                                        f"{[x.shape for x in arrays]} differ off that axis")
        total = sum(a.shape[axis] for a in arrays)
        return [first[:axis] + (total,) + first[axis + 1:]]

    def offset(k):
        return HostScalar(lambda arrays: sum(a.shape[axis] for a in arrays[:k]))
    args = tuple(In(k) for k in range(n)) + (Out(0),) + tuple(offset(k) for k in range(1, n))
    return Lowered([kernel], [Step(name, args)], output_shapes)


@lowering(shape.Arange)
def lower_arange(node) -> Lowered:
    dt = node.op.dtype
    out = BufferParam("out", dt, 1)
    a0, a1, delta = ScalarParam("a0", dt), ScalarParam("a1", dt), ScalarParam("delta", dt)
    i = Var("i")
    value = Select(ir.eq(i, Const(1)), a1, a0 + Cast(i, dt) * delta)
    name = kernel_name("arange", tag(dt))
    kernel = ir.Kernel(name, (out, a0, a1, delta), Loop(i, 0, out.dim(0), out.store(i, value), kind="parallel"))

    def values(arrays):
        start, stop, step = (a.item() for a in arrays)
        if step == 0:
            raise shape_error(node, "arange: step must not be zero")
        if np.dtype(dt).kind in "iu":
            length = len(range(int(start), int(stop), int(step)))
        else:
            length = max(0, math.ceil((stop - start) / step))
        first = np.array(start).astype(dt)
        second = np.array(start + step).astype(dt)
        with np.errstate(all="ignore"):
            return length, first, second, (second - first).astype(dt)
    values = per_call(values)
    args = (Out(0),) + tuple(HostScalar(lambda arrays, k=k: values(arrays)[k], dt) for k in (1, 2, 3))
    return Lowered([kernel], [Step(name, args)], lambda arrays: [(values(arrays)[0],)])


# ----------------------------------------------------------------------------- basic indexing

def _normalize_basic(node, spec: tuple, shape: tuple, bounds: list) -> list:
    """Per axis ("index", i) or ("slice", start, step, length), numpy's normalization."""
    it = iter(bounds)

    def value(v):
        return int(next(it)) if v == indexing.SYMBOLIC else v
    out = []
    for axis, n in enumerate(shape):
        entry = spec[axis] if axis < len(spec) else ("slice", None, None, None)
        if entry[0] == "index":
            i = value(entry[1])
            if not -n <= i < n:
                raise shape_error(node, f"index {i} is out of bounds for axis {axis} with size {n}")
            out.append(("index", i % n if n else i))
        else:
            start, stop, step = (value(v) for v in entry[1:])
            if step == 0:
                raise shape_error(node, "slice step cannot be zero")
            r = range(*slice(start, stop, step).indices(n))
            out.append(("slice", r.start, r.step, len(r)))
    return out


def _basic_access(spec: tuple, ndim: int, region_vars: list, prefix: str):
    """(x index, scalar params, their host keys) for basic indexing; region_vars index the
    slice axes in order. Keys: (axis, field) with field "i" (index), "s" (start), "t" (step)."""
    index, params, keys = [], [], []
    it = iter(region_vars)
    for axis in range(ndim):
        entry = spec[axis] if axis < len(spec) else ("slice", None, None, None)
        if entry[0] == "index":
            p = ScalarParam(f"{prefix}ix{axis}", "int64")
            params.append(p)
            keys.append((axis, "i"))
            index.append(p)
            continue
        o = next(it)
        if entry[1:] == (None, None, None):
            index.append(o)
            continue
        s = ScalarParam(f"{prefix}s{axis}", "int64")
        params.append(s)
        keys.append((axis, "s"))
        if entry[3] in (None, 1):
            index.append(s + o)
        else:
            t = ScalarParam(f"{prefix}t{axis}", "int64")
            params.append(t)
            keys.append((axis, "t"))
            index.append(s + o * t)
    return tuple(index), params, keys


def _host_scalar(norm, key) -> HostScalar:
    axis, field = key
    pos = {"i": 1, "s": 1, "t": 2}[field]
    return HostScalar(lambda arrays: norm(arrays)[axis][pos])


@lowering(indexing.Subtensor)
def lower_subtensor(node) -> Lowered:
    spec = node.op.spec
    x_var = node.inputs[0]
    dt, dx, do = x_var.dtype, x_var.ndim, node.outputs[0].ndim
    X, OUT = BufferParam("x", dt, dx), BufferParam("out", dt, do)
    ov = loop_vars("o", do)
    index, params, keys = _basic_access(spec, dx, ov, "")
    name = kernel_name("subtensor", tag(dt), f"{dx}d", _spec_tag(spec))
    body = nest(ov, dims_of(OUT), OUT.store(tuple(ov), X[index]), outer_parallel(do))
    kernel = ir.Kernel(name, (X, OUT, *params), body)
    norm = per_call(lambda arrays: _normalize_basic(node, spec, arrays[0].shape, arrays[1:]))

    def output_shapes(arrays):
        return [tuple(e[3] for e in norm(arrays) if e[0] == "slice")]
    args = (In(0), Out(0)) + tuple(_host_scalar(norm, key) for key in keys)
    return Lowered([kernel], [Step(name, args)], output_shapes)


def _spec_tag(spec: tuple) -> str:
    parts = []
    for e in spec:
        if e[0] == "index":
            parts.append("i")
        else:
            parts.append("s" if e[3] in (None, 1) else "st")
    return "".join(parts)


@lowering(indexing.IncSubtensor)
def lower_inc_subtensor(node) -> Lowered:
    spec, set_ = node.op.spec, node.op.set_instead_of_inc
    x_var, y_var = node.inputs[:2]
    dt, dx, dy = x_var.dtype, x_var.ndim, y_var.ndim
    copy_name = kernel_name("copy", tag(dt), f"{dx}d")
    copy = copy_kernel(dt, dx, copy_name)
    n_region = sum(1 for a in range(dx) if a >= len(spec) or spec[a][0] == "slice")
    OUT, Y = BufferParam("out", dt, dx), BufferParam("y", dt, dy)
    rv = loop_vars("o", n_region)
    lens = [ScalarParam(f"len{k}", "int64") for k in range(n_region)]
    index, params, keys = _basic_access(spec, dx, rv, "")
    yv = Y[bcast_index(dy, rv)]
    value = yv if set_ else OUT[index] + yv
    body = nest(rv, lens, OUT.store(index, value), outer_parallel(n_region))
    name = kernel_name("set_subtensor" if set_ else "inc_subtensor", tag(dt), f"{dx}d", _spec_tag(spec))
    kernel = ir.Kernel(name, (OUT, Y, *params, *lens), body)
    norm = per_call(lambda arrays: _normalize_basic(node, spec, arrays[0].shape, arrays[2:]))

    def region(arrays):
        return tuple(e[3] for e in norm(arrays) if e[0] == "slice")

    def output_shapes(arrays):
        r = region(arrays)
        if broadcast_runtime(node, [r, arrays[1].shape]) != r:
            raise shape_error(node, f"a value of shape {arrays[1].shape} does not fit x[...] of shape {r}")
        return [arrays[0].shape]
    args = (Out(0), In(1)) + tuple(_host_scalar(norm, key) for key in keys) + \
        tuple(HostScalar(lambda arrays, k=k: region(arrays)[k]) for k in range(n_region))
    return Lowered([copy, kernel], [Step(copy_name, (In(0), Out(0))), Step(name, args)], output_shapes)


# ----------------------------------------------------------------------------- advanced indexing

def _check_indices(node, x_shape, indices) -> tuple:
    """Bounds-check index arrays on the host; returns the broadcast index shape."""
    for axis, idx in enumerate(indices):
        n = x_shape[axis]
        if idx.size:
            lo, hi = int(idx.min()), int(idx.max())
            bad = lo if lo < -n else (hi if hi >= n else None)
            if bad is not None:
                raise shape_error(node, f"index {bad} is out of bounds for axis {axis} with size {n}")
    return broadcast_runtime(node, [i.shape for i in indices])


def _gather_index(idx_bufs, lvars) -> list:
    """The index arrays' values (int64) at the broadcast index position ``lvars``."""
    out = []
    for ib in idx_bufs:
        v = ib[bcast_index(ib.ndim, lvars)]
        out.append(Cast(v, "int64") if ib.dtype != "int64" else v)
    return out


@lowering(indexing.AdvancedSubtensor)
def lower_advanced_subtensor(node) -> Lowered:
    x_var, *idx_vars = node.inputs
    dt, dx, k, do = x_var.dtype, x_var.ndim, len(idx_vars), node.outputs[0].ndim
    nl = do - (dx - k)
    X, OUT = BufferParam("x", dt, dx), BufferParam("out", dt, do)
    idx = [BufferParam(f"idx{a}", v.dtype, v.ndim) for a, v in enumerate(idx_vars)]
    ov = loop_vars("o", do)
    lvars, rest = ov[:nl], ov[nl:]
    em = Emitter("g")
    at = []
    for axis, v in enumerate(_gather_index(idx, lvars)):
        v = em.local(v)
        at.append(Select(ir.lt(v, Const(0)), v + X.dim(axis), v))
    body = nest(ov, dims_of(OUT), em.stmts + [OUT.store(tuple(ov), X[tuple(at) + tuple(rest)])],
                outer_parallel(do))
    name = kernel_name("gather", tag(dt), f"{dx}d", f"{k}idx", f"{nl}l")
    kernel = ir.Kernel(name, (X, *idx, OUT), body)

    def output_shapes(arrays):
        x, *indices = arrays
        return [_check_indices(node, x.shape, indices) + x.shape[k:]]
    return Lowered([kernel], [Step(name, (In(0),) + tuple(In(1 + a) for a in range(k)) + (Out(0),))],
                   output_shapes)


@lowering(indexing.AdvancedIncSubtensor)
def lower_advanced_inc_subtensor(node) -> Lowered:
    set_ = node.op.set_instead_of_inc
    x_var, y_var, *idx_vars = node.inputs
    dt, dx, dy, k = x_var.dtype, x_var.ndim, y_var.ndim, len(idx_vars)
    nl = max((v.ndim for v in idx_vars), default=0)
    copy_name = kernel_name("copy", tag(dt), f"{dx}d")
    copy = copy_kernel(dt, dx, copy_name)
    OUT, Y = BufferParam("out", dt, dx), BufferParam("y", dt, dy)
    idx = [BufferParam(f"idx{a}", v.dtype, v.ndim) for a, v in enumerate(idx_vars)]
    lens = [ScalarParam(f"len{a}", "int64") for a in range(nl)]
    lvars, rest = loop_vars("l", nl), loop_vars("r", dx - k)
    em = Emitter("s")
    at = []
    for axis, v in enumerate(_gather_index(idx, lvars)):
        v = em.local(v)
        at.append(Select(ir.lt(v, Const(0)), v + OUT.dim(axis), v))
    target = tuple(at) + tuple(rest)
    yv = Y[bcast_index(dy, lvars + rest)]
    inner = nest(rest, [OUT.dim(k + r) for r in range(dx - k)],
                 OUT.store(target, yv if set_ else OUT[target] + yv),
                 ["unroll"] * (dx - k - 1) + ["serial"] if dx > k else "unroll")
    # repeated indices must accumulate in order: the index loops are never split across
    # threads or lanes (only the innermost trailing axis, distinct positions, is vectorized)
    body = nest(lvars, lens, em.stmts + list(inner), "unroll")
    name = kernel_name("scatter_set" if set_ else "scatter_add", tag(dt), f"{dx}d", f"{k}idx")
    kernel = ir.Kernel(name, (OUT, Y, *idx, *lens), body)
    lshape = per_call(lambda arrays: _padded(_check_indices(node, arrays[0].shape, arrays[2:]), nl))

    def output_shapes(arrays):
        x, y = arrays[:2]
        full = lshape(arrays) + x.shape[k:]
        if broadcast_runtime(node, [full, y.shape]) != full:
            raise shape_error(node, f"a value of shape {y.shape} does not fit x[indices] of shape {full}")
        return [x.shape]
    args = (Out(0), In(1)) + tuple(In(2 + a) for a in range(k)) + \
        tuple(HostScalar(lambda arrays, a=a: lshape(arrays)[a]) for a in range(nl))
    return Lowered([copy, kernel], [Step(copy_name, (In(0), Out(0))), Step(name, args)], output_shapes)


# ----------------------------------------------------------------------------- random variables

def _distribution_values(em: Emitter, dist: str, words: list, raw_dtype: str) -> list:
    """Per word, the raw value before parameters: u (uniform / binomial) or z (normal)."""
    if dist == "normal":
        z0, z1 = box_muller(em, words[0], words[1], raw_dtype)
        z2, z3 = box_muller(em, words[2], words[3], raw_dtype)
        return [z0, z1, z2, z3]
    return [uniform_unit(w, raw_dtype) for w in words]


def _apply_params(dist: str, raw, params: list, dtype: str):
    if dist == "uniform":
        low, high = params
        return low + raw * (high - low)
    if dist == "normal":
        mean, std = params
        return mean + std * raw
    p = params[0]
    u = Cast(raw, "float64") if p.dtype == "float64" else raw
    return Cast(ir.lt(u, p), dtype)


def _philox_kernel(name: str, dist: str, raw_dtype: str, out_dtype: str, param_types: list | None) -> ir.Kernel:
    """Fill a flat buffer of n samples from counter blocks start.. (4 per block, a partial last
    block); with ``param_types`` the parameters (0-d) are applied, else raw values are stored."""
    out = BufferParam("out", out_dtype, 1)
    pbufs = [BufferParam(f"p{k}", dt, 0) for k, dt in enumerate(param_types or [])]
    k0, k1 = ScalarParam("k0", "uint32"), ScalarParam("k1", "uint32")
    start, n = ScalarParam("start", "uint64"), ScalarParam("n", "int64")
    blk = Var("blk")

    def block_body(em: Emitter, b, guard: bool):
        return _samples(em, dist, raw_dtype, out, pbufs, (k0, k1, start), b, lambda w: (b * 4 + w,),
                        (lambda w: ir.lt(b * 4 + w, n)) if guard else None)
    main = Loop(blk, 0, n // 4, block_body(Emitter("m"), blk, False), kind="parallel")
    tail = If(ir.ne(n % 4, Const(0)), block_body(Emitter("t"), n // 4, True))
    return ir.Kernel(name, (out, *pbufs, k0, k1, start, n), (main, tail))


def _philox_rows_kernel(name: str, dist: str, raw_dtype: str, out_dtype: str, params: list) -> ir.Kernel:
    """Samples with their parameters in one pass over a (rows, cols) output (a 1-d sample is
    one row): parameters are 0-d or (rows, cols) buffers (broadcast views: any strides), so
    a layer's probabilities are read where they lie instead of a raw pass and a combining
    pass (``sample_region`` says how)."""
    out = BufferParam("out", out_dtype, 2)
    pbufs = [BufferParam(f"p{k}", dt, 0 if nd == 0 else 2) for k, (dt, nd) in enumerate(params)]
    k0, k1, start = ScalarParam("k0", "uint32"), ScalarParam("k1", "uint32"), ScalarParam("start", "uint64")
    rows, cols = out.dim(0), out.dim(1)
    c4 = Var("c4")
    body = (Declare(c4, cols // 4),
            If(ir.eq(cols % 4, Const(0)),
               sample_region(dist, raw_dtype, out, pbufs, (k0, k1, start), (Const(0), rows), (Const(0), c4),
                             "parallel"),
               sample_blocks(dist, raw_dtype, out, pbufs, (k0, k1, start))))
    return ir.Kernel(name, (out, *pbufs, k0, k1, start), body)


def _samples(em: Emitter, dist: str, raw_dtype: str, out, pbufs: list, key: tuple, block, at, guard=None) -> list:
    """Statements storing counter block ``block``'s four samples at ``at(w)`` (the index of
    word w), each with its parameters (0-d, or read at the same index; none: raw values)."""
    k0, k1, start = key
    words = philox_words(em, start + Cast(block, "uint64"), k0, k1)
    values = _distribution_values(em, dist, words, raw_dtype)
    scalars = [em.local(p[()], "p") if p.ndim == 0 else None for p in pbufs]
    stmts = list(em.stmts)
    for w, v in enumerate(values):
        pos = at(w)
        ps = [sc if sc is not None else p[pos] for sc, p in zip(scalars, pbufs)]
        st = out.store(pos, _apply_params(dist, v, ps, out.dtype) if pbufs else v)
        stmts.append(If(guard(w), st) if guard else st)
    return stmts


def sample_region(dist: str, raw_dtype: str, out, pbufs: list, key: tuple, rows: tuple, col_blocks: tuple,
                  kind: str = "serial", prefix: str = "m") -> ir.Loop:
    """The samples of rows [rows) x columns [4 * col_blocks) of a (R, C) output with C % 4 ==
    0 (sample f = r * C + c is word f % 4 of block ``start + f // 4``, as everywhere; each
    block lies in one row). The column-block loop vectorizes on the CPU (strided parameter
    loads, interleaved stores). ``key`` = (k0, k1, start)."""
    r, cb = Var(f"{prefix}_r"), Var(f"{prefix}_cb")
    c4 = out.dim(1) // 4
    inner = Loop(cb, col_blocks[0], col_blocks[1], _samples(
        Emitter(prefix), dist, raw_dtype, out, pbufs, key, r * c4 + cb, lambda w: (r, cb * 4 + w)), kind=kind)
    return Loop(r, rows[0], rows[1], inner, kind=kind)


def sample_blocks(dist: str, raw_dtype: str, out, pbufs: list, key: tuple, prefix: str = "g") -> ir.Loop:
    """All samples of a (R, C) output, any C: a parallel loop over counter blocks finding each
    sample's row and column by division (blocks may span rows)."""
    cols = out.dim(1)
    n = out.dim(0) * cols
    blk = Var(f"{prefix}_blk")
    flat = [Var(f"{prefix}_f{w}") for w in range(4)]
    return Loop(blk, 0, (n + 3) // 4, [
        *(Declare(flat[w], blk * 4 + w) for w in range(4)),
        *_samples(Emitter(prefix), dist, raw_dtype, out, pbufs, key, blk, lambda w: (flat[w] // cols, flat[w] % cols),
                  guard=lambda w: ir.lt(flat[w], n)),
    ], kind="parallel")


def philox_key_scalars(state_input: int) -> tuple:
    """HostScalars (k0, k1, start) of a random state (an int64 vector: key words, counter)
    read from node input ``state_input``."""
    return (HostScalar(lambda a: int(a[state_input][0]) & 0xFFFFFFFF, "uint32"),
            HostScalar(lambda a: int(a[state_input][1]) & 0xFFFFFFFF, "uint32"),
            HostScalar(lambda a: int(a[state_input][2]) % 2 ** 64, "uint64"))


def advanced_state(state, n_samples: int):
    """The random state after drawing n samples (blocks of 4 per counter step)."""
    new = state.copy()
    new[2] = (int(new[2]) + (n_samples + 3) // 4) % 2 ** 63
    return new


def _rows_view(shape_of):
    """ArgView function: an array as (rows, cols) of the sample shape (1-d: one row),
    broadcast to it (a view: broadcasting gives 0 strides)."""
    def view(a, arrays):
        shape = shape_of(arrays)
        a = np.broadcast_to(a, shape) if a.shape != shape else a
        return a.reshape(1, -1) if len(shape) == 1 else a
    return view


def _name_of(dist: str) -> str:
    """The distribution in kernel names: KILN_DETERMINISTIC's normal kernels are other code (a
    cached function of the other mode, found by its kernel names, is never reused)."""
    from engine.config import config

    return "normal_det" if dist == "normal" and config.deterministic else dist


@lowering(random.RandomVariable)
def lower_random(node) -> Lowered:
    op = node.op
    dist, dtype = op.distribution, op.dtype
    params = node.inputs[2:]
    raw_dtype = "float32" if dist == "binomial" else dtype

    def sample_shape(arrays):
        shape = tuple(int(d) for d in arrays[1])
        if any(d < 0 for d in shape):
            raise shape_error(node, f"negative sample size {shape}")
        for p in arrays[2:]:
            if broadcast_runtime(node, [p.shape, shape]) != shape:
                raise shape_error(node, f"a parameter of shape {p.shape} does not broadcast to the sample "
                                        f"size {shape}")
        return shape
    sample_shape = per_call(sample_shape)

    def output_shapes(arrays):
        return [arrays[0].shape, sample_shape(arrays)]

    def new_state(arrays):
        return advanced_state(arrays[0], math.prod(sample_shape(arrays)))

    scalars = philox_key_scalars(0) + (HostScalar(lambda a: math.prod(sample_shape(a)), "int64"),)
    flat_out = ArgView(Out(1), flat)
    if all(p.ndim == 0 for p in params):
        name = kernel_name("philox", _name_of(dist), tag(dtype), "p" + "".join(tag(p.dtype) for p in params))
        kernel = _philox_kernel(name, dist, raw_dtype, dtype, [p.dtype for p in params])
        steps = [Step(name, (flat_out,) + tuple(In(2 + k) for k in range(len(params))) + scalars)]
        return HostLowered([kernel], steps, output_shapes, host_outputs={0: new_state})
    nd = node.outputs[1].ndim
    if nd in (1, 2) and all(p.ndim in (0, nd) for p in params):
        # parameters of the sample's shape (a layer's probabilities): sampled where they lie
        name = kernel_name("philox", _name_of(dist), tag(dtype), "rows",
                           "p" + "".join(tag(p.dtype) + ("" if p.ndim == 0 else "a") for p in params))
        kernel = _philox_rows_kernel(name, dist, raw_dtype, dtype, [(p.dtype, p.ndim) for p in params])
        rows_view = _rows_view(sample_shape)
        pargs = tuple(In(2 + k) if p.ndim == 0 else ArgView(In(2 + k), rows_view) for k, p in enumerate(params))
        steps = [Step(name, (ArgView(Out(1), rows_view),) + pargs + scalars[:3])]
        return HostLowered([kernel], steps, output_shapes, host_outputs={0: new_state})
    raw_name = kernel_name("philox", _name_of(dist), "raw", tag(raw_dtype))
    raw = _philox_kernel(raw_name, dist, raw_dtype, raw_dtype, None)
    slot = tuple(("in", k) for k in range(1 + len(params)))
    if dist == "uniform":
        expr = (("sub", dtype, (slot[2], slot[1])), ("mul", dtype, (slot[0], ("op", 0))),
                ("add", dtype, (slot[1], ("op", 1))))
    elif dist == "normal":
        expr = (("mul", dtype, (slot[2], slot[0])), ("add", dtype, (slot[1], ("op", 0))))
    else:
        pdt = params[0].dtype
        expr = (("cast", pdt, (slot[0],)), ("lt", "bool", (("op", 0), slot[1])), ("cast", dtype, (("op", 1),)))
    name = kernel_name("E", "rv", dist, tag(dtype), f"{nd}d", "".join(str(p.ndim) for p in params))
    combine = elementwise_kernel(name, [(raw_dtype, nd)] + [(p.dtype, p.ndim) for p in params], expr,
                                 [len(expr) - 1], [(dtype, nd)])
    tmp_as_sample = ArgView(Tmp(0), lambda a, arrays: a.reshape(sample_shape(arrays)))
    steps = [Step(raw_name, (ArgView(Tmp(0), flat),) + scalars),
             Step(name, (tmp_as_sample,) + tuple(In(2 + k) for k in range(len(params))) + (Out(1),))]
    temps = [(raw_dtype, lambda arrays: sample_shape(arrays))]
    return HostLowered([raw, combine], steps, output_shapes, temps, host_outputs={0: new_state})

