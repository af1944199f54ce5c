"""canonicalize: constant folding, algebraic identities, shape simplification, dimshuffle and
reshape composition, no-op broadcast / SumToShape removal. (Merging identical nodes, CSE, is
done by ``graph_rewrite`` itself.) Runs for every backend."""

from __future__ import annotations

import numpy as np

from engine.graph import Constant, Variable
from engine.ops import elemwise as E
from engine.ops import reduce as R
from engine.ops import shape as S
from engine.ops.elemwise import Elemwise
from engine.ops.indexing import Subtensor, is_full_slice
from engine.rewrite.pattern import Match, Pat, PatternMatcher, Rule

#: folded results larger than this (elements) are kept out unless no larger than an input
FOLD_MAX_ELEMENTS = 1 << 16

x_ = Pat.var("x")


def same_as(m: Match, x: Variable) -> Variable | None:
    """``x`` as the node's replacement if it provably has the node's dtype and shape."""
    out = m.out
    if x.dtype == out.dtype and m.ctx.same_shape(out, x):
        return x
    return None


# -- constant folding -------------------------------------------------------------------------

def fold_constants(m: Match):
    node = m.node
    if not node.inputs or not all(isinstance(i, Constant) for i in node.inputs):
        return None
    from backends.numpy.table import IMPLS, run_node

    if type(node.op) not in IMPLS or type(node.op).__name__ == "RandomVariable":
        return None
    biggest = max(i.value.size for i in node.inputs)
    for out in node.outputs:
        static = out.type.shape
        if None not in static and int(np.prod(static)) > max(FOLD_MAX_ELEMENTS, biggest):
            return None
    try:
        values = run_node(node, [i.value for i in node.inputs])
    except Exception:  # noqa: BLE001 - a failing node fails at run time, naming the user's line
        return None
    if any(v.size > max(FOLD_MAX_ELEMENTS, biggest) for v in values):
        return None
    return [Constant(np.array(v)) for v in values]


# -- elementwise identities ---------------------------------------------------------------------

def _zeros_like(m: Match, x: Variable) -> Variable:
    zero = Constant(np.zeros((), dtype=m.out.dtype))
    if None not in x.type.shape and x.type.shape == m.out.type.shape and int(np.prod(x.type.shape)) <= 16:
        return Constant(np.zeros(x.type.shape, dtype=m.out.dtype))
    return S.BroadcastLike()(zero, x)


def _cast_same(m: Match):
    return m.x if m.node.op.cast_to == m.x.dtype else None


def _dimshuffle_compose(m: Match):
    inner, outer = m.x.owner.op.new_order, m.node.op.new_order
    order = tuple("x" if a == "x" else inner[a] for a in outer)
    source = m.x.owner.inputs[0]
    if order == tuple(range(source.ndim)):
        return source
    return S.DimShuffle(order)(source)


def _dimshuffle_identity(m: Match):
    return m.x if m.node.op.new_order == tuple(range(m.x.ndim)) else None


def _liftable(v: Variable, m: Match, depth: int = 0) -> bool:
    """A dimshuffle of ``v`` vanishes: v is a constant, a scalar, a dimshuffle (they compose),
    or an elementwise op used only here whose inputs are all liftable."""
    if isinstance(v, Constant) or v.ndim == 0:
        return True
    node = v.owner
    if node is None or depth > 4:
        return False
    if isinstance(node.op, S.DimShuffle):
        return True
    return isinstance(node.op, Elemwise) and m.ctx.single_client(v) and \
        all(_liftable(i, m, depth + 1) for i in node.inputs)


def _dimshuffle_lift(m: Match):
    """DimShuffle(elemwise(a, b)) -> elemwise(DimShuffle(a), DimShuffle(b)) when the shuffles
    then compose or fold away (fewer nodes, and transposes meet and cancel)."""
    inner = m.x.owner
    if not _liftable(m.x, m):
        return None
    order, n = m.node.op.new_order, m.x.ndim
    new_inputs = []
    for inp in inner.inputs:
        if inp.ndim == 0:
            new_inputs.append(inp)  # a scalar broadcasts as it is
            continue
        lead = n - inp.ndim
        new_inputs.append(S.DimShuffle(tuple("x" if a == "x" or a < lead else a - lead for a in order))(inp))
    return inner.op(*new_inputs)


# -- reshape / shapes ----------------------------------------------------------------------------

def _reshape_reshape(m: Match):
    inner = m.node.inputs[0].owner
    if inner is None or not isinstance(inner.op, S.Reshape):
        return None
    return S.Reshape(m.node.op.pattern)(inner.inputs[0], *m.node.inputs[1:])


def _shape_of_static(m: Match):
    dim = m.x.type.shape[m.node.op.axis]
    return Constant(np.asarray(dim, dtype="int64")) if dim is not None else None


def _shape_of_input(m: Match):
    """x.shape[k] -> the shape of the variable that dim comes from (an input, or the earliest
    result with it), so reading a shape keeps no large intermediate alive."""
    sym = m.ctx.shape(m.x)[m.node.op.axis]
    if isinstance(sym, int):
        return Constant(np.asarray(sym, dtype="int64"))
    if sym[0] in ("in", "v") and sym[1] is not m.x:
        return S.ShapeOf(sym[2])(sym[1])
    return None


def _shape_static(m: Match):
    if None in m.x.type.shape:
        leaves = {id(d[1]): d[1] for d in m.ctx.shape(m.x) if isinstance(d, tuple) and d[0] == "in"}
        if len(leaves) == 1:
            leaf = next(iter(leaves.values()))
            if leaf is not m.x and m.ctx.same_shape(leaf, m.x):
                return S.Shape()(leaf)
        return None
    return Constant(np.asarray(m.x.type.shape, dtype="int64"))


# -- broadcasting and its adjoint -------------------------------------------------------------------

def _sum_to_shape_as_reduce(m: Match):
    g, like = m.node.inputs
    gs, ls = m.ctx.shape(g), m.ctx.shape(like)
    lead = g.ndim - like.ndim
    axes = list(range(lead))
    for i, d in enumerate(like.type.shape):
        if d == 1:
            if gs[lead + i] != 1:
                axes.append(lead + i)
        elif gs[lead + i] != ls[i]:
            return None  # cannot tell whether this axis was broadcast
    if not axes:
        return None
    total = R.Reduce("sum", tuple(axes))(g)
    pattern, j = [], 0
    for i in range(like.ndim):
        if lead + i in axes:
            pattern.append("x")
        else:
            pattern.append(j)
            j += 1
    return S.DimShuffle(pattern)(total) if len(pattern) != total.ndim or pattern != list(range(total.ndim)) else total


def _sum_of_broadcast(m: Match):
    """sum(broadcast(x, like), axes) -> sum(x over its own axes) * (number of broadcast copies)."""
    b = m.x
    x = b.owner.inputs[0]
    axes = m.node.op.axes
    bs, xs0 = m.ctx.shape(b), m.ctx.shape(x)
    lead = b.ndim - x.ndim
    xs = (1,) * lead + tuple(xs0)
    x_axes, squeeze, copies = [], [], []
    for a in range(b.ndim):
        if a in axes:
            if xs[a] == 1:
                copies.append(a)
                if a >= lead:
                    squeeze.append(a - lead)
            elif xs[a] == bs[a]:
                x_axes.append(a - lead)
            else:
                return None
        elif xs[a] != bs[a]:
            return None
    if not copies:
        return None
    y = R.Reduce("sum", tuple(x_axes))(x) if x_axes else x
    if squeeze:
        kept = [i for i in range(x.ndim) if i not in x_axes]
        y = S.DimShuffle([kept.index(i) for i in kept if i not in squeeze])(y)
    count: Variable | None = None
    static = 1
    for a in copies:
        if isinstance(bs[a], int):
            static *= bs[a]
        else:
            found = _sizes_for(m, (bs[a],))
            if found is None:
                return None
            dim = found[1][0]
            count = dim if count is None else E.mul(count, dim)
    factor = Constant(np.asarray(static, dtype=m.out.dtype))
    if count is not None:
        factor = E.mul(E.cast(count, m.out.dtype), factor) if static != 1 else E.cast(count, m.out.dtype)
    elif static == 1:
        return y if y.type.shape == m.out.type.shape or m.ctx.same_shape(y, m.out) else None
    return E.mul(y, factor)


def _sizes_for(m: Match, syms: tuple) -> tuple[list, list] | None:
    """An Alloc pattern and size inputs for symbolic dims, when each is static or an input's dim."""
    pattern, sizes = [], []
    for d in syms:
        if isinstance(d, int):
            pattern.append(d)
        elif d[0] in ("in", "v"):
            pattern.append(None)
            sizes.append(S.ShapeOf(d[2])(d[1]))
        else:
            return None
    return pattern, sizes


def _broadcast_like_to_alloc(m: Match):
    """broadcast_like(x, like) -> alloc(x, shape): only the graph inputs' dims are read, so the
    (often large) ``like`` need not be computed or kept alive for its shape."""
    found = _sizes_for(m, m.ctx.shape(m.out))
    if found is None:
        return None
    return S.Alloc(found[0])(m.x, *found[1])


def _dimshuffle_of_alloc(m: Match):
    node = m.x.owner
    v, sizes = node.inputs[0], list(node.inputs[1:])
    pattern, order = node.op.pattern, m.node.op.new_order
    size_of, it = {}, iter(sizes)
    for a, p in enumerate(pattern):
        size_of[a] = next(it) if p is None else None
    lead = len(pattern) - v.ndim
    for a in range(len(pattern)):
        if a not in order and a >= lead and v.type.shape[a - lead] != 1:
            return None
    new_pattern, new_sizes = [], []
    for a in order:
        if a == "x":
            new_pattern.append(1)
        else:
            new_pattern.append(pattern[a])
            if pattern[a] is None:
                new_sizes.append(size_of[a])
    v_order = tuple("x" if a == "x" or a < lead else a - lead for a in order)
    v2 = v if v.ndim == 0 else (S.DimShuffle(v_order)(v) if v_order != tuple(range(v.ndim)) else v)
    return S.Alloc(new_pattern)(v2, *new_sizes)


def _elemwise_absorb_broadcast(m: Match):
    """An elementwise op broadcasts by itself: alloc / broadcast_like inputs are dropped when the
    output's shape provably stays the same."""
    node = m.node
    inputs = list(node.inputs)
    changed = False
    for k, v in enumerate(inputs):
        if v.owner is not None and isinstance(v.owner.op, (S.Alloc, S.BroadcastLike)):
            trial = inputs[:k] + [v.owner.inputs[0]] + inputs[k + 1:]
            from engine.rewrite.shapes import broadcast

            if broadcast(*[m.ctx.shape(i) for i in trial]) == m.ctx.shape(m.out):
                inputs = trial
                changed = True
    return node.op(*inputs) if changed else None


def _neg_out(m: Match, build) -> Variable | None:
    """op(neg(a), ...) -> neg(op(a, ...)) (exact), so negations meet and cancel."""
    if not m.ctx.single_client(m.n):
        return None
    return build(m.n.owner.inputs[0])


def _alloc_lift(m: Match):
    """op(alloc(v, shape), scalars) -> alloc(op(v, scalars), shape): the op runs on v alone."""
    node = m.node
    allocs = [i for i in node.inputs if i.owner is not None and isinstance(i.owner.op, S.Alloc)]
    if len(allocs) != 1 or any(i.ndim != 0 for i in node.inputs if i is not allocs[0]):
        return None
    a = allocs[0]
    if not m.ctx.same_shape(a, m.out) or not m.ctx.single_client(a):
        return None
    inner = node.op(*[a.owner.inputs[0] if i is a else i for i in node.inputs])
    return S.Alloc(a.owner.op.pattern)(inner, *a.owner.inputs[1:])


def _reduce_reduce(m: Match):
    inner = m.x.owner
    if inner.op.reducer != m.node.op.reducer or not m.ctx.single_client(m.x):
        return None
    kept = [i for i in range(inner.inputs[0].ndim) if i not in inner.op.axes]
    axes = tuple(sorted(set(inner.op.axes) | {kept[a] for a in m.node.op.axes}))
    return R.Reduce(m.node.op.reducer, axes)(inner.inputs[0])


def _broadcast_like_of_elemwise(m: Match):
    """broadcast_like(x, op(a, b)) -> broadcast_like(broadcast_like(x, a), b): only the shape of
    the reference is read, and an elementwise op's shape is its inputs' broadcast, so the op
    (``y * g`` of ``grad(sum(y * g))``: a full pass over memory) need not run for it. The same
    run-time broadcast checks, as views."""
    ref = m.node.inputs[1]
    operands = [v for v in ref.owner.inputs if v.ndim > 0]
    if not operands:
        return None
    rank = ref.ndim
    if m.x.ndim > rank:
        return None
    out = m.x
    for v in operands:   # a lower-rank operand gets leading 1s (a view), as broadcasting does
        lead = rank - v.ndim
        out = S.BroadcastLike()(out, S.DimShuffle(("x",) * lead + tuple(range(v.ndim)))(v) if lead else v)
    return out if out.type == m.out.type else None


def _is_one(v: Variable) -> bool:
    return isinstance(v, Constant) and v.value.size > 0 and bool(np.all(v.value == 1))


def _mul_broadcast_one(m: Match):
    """mul(ones, x) -> broadcast_like(x, ones), ``ones`` a broadcast or alloc of the constant 1
    (a view): the gradient seed of a sum, multiplied through, costs no kernel (1 * x is x)."""
    if m.x.dtype != m.out.dtype or m.o.owner.inputs[0].dtype != m.out.dtype:
        return None
    out = S.BroadcastLike()(m.x, m.o)
    return out if out.type == m.out.type else None


def _elemwise(name: str, *inputs: Pat, **kw) -> Pat:
    return Pat.elemwise(name, *inputs, **kw)


def _ds(name: str | None = None) -> Pat:
    return Pat(S.DimShuffle, name=name)


one, zero = Pat.const(1), Pat.const(0)

RULES = [
    Rule("constant_fold", Pat(), fold_constants),
    # elementwise identities
    Rule("mul_one", _elemwise("mul", x_, one, commutative=True), lambda m: same_as(m, m.x)),
    Rule("add_zero", _elemwise("add", x_, zero, commutative=True), lambda m: same_as(m, m.x)),
    Rule("sub_zero", _elemwise("sub", x_, zero), lambda m: same_as(m, m.x)),
    Rule("div_one", _elemwise("true_div", x_, one), lambda m: same_as(m, m.x)),
    Rule("pow_one", _elemwise("pow", x_, one), lambda m: same_as(m, m.x)),
    Rule("sub_self", _elemwise("sub", x_, x_), lambda m: _zeros_like(m, m.x)),
    Rule("neg_neg", _elemwise("neg", _elemwise("neg", x_)), lambda m: m.x),
    Rule("exp_log", _elemwise("exp", _elemwise("log", x_)), lambda m: m.x),
    Rule("log_exp", _elemwise("log", _elemwise("exp", x_)), lambda m: m.x),
    Rule("sub_neg", _elemwise("sub", Pat.var("a"), _elemwise("neg", Pat.var("b"))), lambda m: E.add(m.a, m.b)),
    Rule("add_neg", _elemwise("add", Pat.var("a"), _elemwise("neg", Pat.var("b")), commutative=True),
         lambda m: E.sub(m.a, m.b)),
    Rule("neg_sub", _elemwise("neg", _elemwise("sub", Pat.var("a"), Pat.var("b"))), lambda m: E.sub(m.b, m.a)),
    Rule("mul_neg", _elemwise("mul", Pat.elemwise("neg", Pat.var(), name="n"), Pat.var("b"), commutative=True),
         lambda m: _neg_out(m, lambda a: E.neg(E.mul(a, m.b)))),
    Rule("div_neg", _elemwise("true_div", Pat.elemwise("neg", Pat.var(), name="n"), Pat.var("b")),
         lambda m: _neg_out(m, lambda a: E.neg(E.true_div(a, m.b)))),
    Rule("sum_neg", Pat(R.Reduce, [Pat.elemwise("neg", Pat.var(), name="n")], props={"reducer": "sum"}),
         lambda m: _neg_out(m, lambda a: E.neg(m.node.op(a)))),
    Rule("cast_same", Pat(Elemwise, [x_], props={"scalar_op": "cast"}), _cast_same),
    Rule("identity", _elemwise("identity", x_), lambda m: m.x),
    # shape ops
    Rule("stop_gradient", Pat(S.StopGradient, [x_]), lambda m: m.x),
    Rule("dimshuffle_identity", Pat(S.DimShuffle, [x_]), _dimshuffle_identity),
    Rule("dimshuffle_compose", Pat(S.DimShuffle, [_ds("x")]), _dimshuffle_compose),
    Rule("dimshuffle_lift", Pat(S.DimShuffle, [Pat(Elemwise, name="x")]), _dimshuffle_lift),
    Rule("subtensor_full", Pat(Subtensor, [x_]), lambda m: m.x if is_full_slice(m.node.op.spec) else None),
    Rule("reshape_noop", Pat(S.Reshape), lambda m: same_as(m, m.node.inputs[0])),
    Rule("reshape_reshape", Pat(S.Reshape), _reshape_reshape),
    Rule("shape_of_static", Pat(S.ShapeOf, [x_]), _shape_of_static),
    Rule("shape_of_input", Pat(S.ShapeOf, [x_]), _shape_of_input),
    Rule("shape_static", Pat(S.Shape, [x_]), _shape_static),
    Rule("broadcast_like_noop", Pat(S.BroadcastLike, [x_, Pat.var()]), lambda m: same_as(m, m.x)),
    Rule("alloc_noop", Pat(S.Alloc), lambda m: same_as(m, m.node.inputs[0])),
    Rule("broadcast_like_to_alloc", Pat(S.BroadcastLike, [x_, Pat.var()]), _broadcast_like_to_alloc),
    Rule("broadcast_like_of_elemwise", Pat(S.BroadcastLike, [x_, Pat(Elemwise)]), _broadcast_like_of_elemwise),
    Rule("mul_broadcast_one", _elemwise("mul", Pat((S.BroadcastLike, S.Alloc), name="o",
                                                   where=lambda v: _is_one(v.owner.inputs[0])), x_,
                                         commutative=True), _mul_broadcast_one),
    Rule("dimshuffle_of_alloc", Pat(S.DimShuffle, [Pat(S.Alloc, name="x")]), _dimshuffle_of_alloc),
    Rule("elemwise_absorb_broadcast", Pat(Elemwise), _elemwise_absorb_broadcast),
    Rule("alloc_lift", Pat(Elemwise), _alloc_lift),
    Rule("sum_to_shape_noop", Pat(S.SumToShape, [x_, Pat.var("like")]),
         lambda m: m.x if m.x.ndim == m.like.ndim and m.ctx.same_shape(m.x, m.like) else None),
    Rule("sum_to_shape_as_reduce", Pat(S.SumToShape, [x_, Pat.var()]), _sum_to_shape_as_reduce),
    Rule("reduce_no_axes", Pat(R.Reduce, [x_], props={"axes": ()}), lambda m: m.x),
    Rule("sum_of_broadcast", Pat(R.Reduce, [Pat((S.BroadcastLike, S.Alloc), name="x")], props={"reducer": "sum"}),
         _sum_of_broadcast),
    Rule("reduce_reduce", Pat(R.Reduce, [Pat(R.Reduce, name="x")]), _reduce_reduce),
]

canonicalize = PatternMatcher(RULES)
