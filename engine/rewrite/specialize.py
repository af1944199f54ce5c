"""specialize (code generators only): 2-d MatMul -> ``Gemm`` absorbing transposes, scale, bias
(``alpha * a @ b + beta * c``: also the SGD update ``W - lr * dot(x.T, g)``) and an activation
epilogue; ``Conv2d`` + bias + activation -> ``FusedConv``; pooling of an activation ->
``FusedPool``; then (the ``gemm_bernoulli`` pass) Bernoulli samples of a Gemm's result ->
``GemmBernoulli``. Every rewrite keeps the numpy result bit-identical except the transposed-gemm one
(a product computed as (b.T a.T).T), which only reorders the sum."""

from __future__ import annotations

import numpy as np

from engine.graph import Constant, Variable
from engine.ops import elemwise as E
from engine.ops import shape as S
from engine.ops.blas import MatMul
from engine.ops.elemwise import Elemwise
from engine.ops.fused import EPILOGUE_OPS, FusedConv, FusedPool, Gemm
from engine.rewrite.pattern import Match, Pat, PatternMatcher, Rule


def _untransposed(v: Variable) -> tuple[bool, Variable]:
    node = v.owner
    # (1, 0) of a 2-d input only: on a 3-d (a, b, 1) input the same order also drops an axis
    if node is not None and isinstance(node.op, S.DimShuffle) and node.op.new_order == (1, 0) \
            and node.inputs[0].ndim == 2:
        return True, node.inputs[0]
    return False, v


def _gemm(m: Match):
    a, b = m.node.inputs
    if a.ndim != 2 or b.ndim != 2:
        return None
    ta, a = _untransposed(a)
    tb, b = _untransposed(b)
    return Gemm(trans_a=ta, trans_b=tb)(a, b)


def _plain(g: Variable, m: Match, alpha_one: bool = False) -> Gemm | None:
    """The Gemm op of ``g`` if it has no c and no epilogue and only this consumer."""
    op = g.owner.op
    if op.beta != 0.0 or op.epilogue or not m.ctx.single_client(g) or (alpha_one and op.alpha != 1.0):
        return None
    return op


def _with(op: Gemm, **changes) -> Gemm:
    values = {p: getattr(op, p) for p in op.props}
    values.update(changes)
    return Gemm(**values)


def _scalar(c: Variable) -> float | None:
    if isinstance(c, Constant) and c.ndim == 0:
        return float(c.value)
    return None


def _gemm_scale(m: Match):
    op, alpha = _plain(m.g, m, alpha_one=True), _scalar(m.c)
    if op is None or alpha is None:
        return None
    return _with(op, alpha=alpha)(*m.g.owner.inputs)


def _bias_ok(m: Match) -> bool:
    return m.c.ndim <= 2 and m.c.dtype == m.g.dtype and m.ctx.same_shape(m.out, m.g)


def _gemm_add(m: Match):
    op = _plain(m.g, m)
    if op is None or not _bias_ok(m):
        return None
    return _with(op, beta=1.0)(*m.g.owner.inputs, m.c)


def _gemm_rsub(m: Match):  # c - gemm
    op = _plain(m.g, m)
    if op is None or not _bias_ok(m):
        return None
    return _with(op, alpha=-op.alpha, beta=1.0)(*m.g.owner.inputs, m.c)


def _accumulated(w: Variable, scale: float, g: Variable, m: Match) -> Variable | None:
    """``w + scale * g`` as one Gemm accumulating into ``w`` (beta = 1, c = w), when ``g`` is
    a chain of single-client Gemms without epilogue whose c's are Gemms of the product's shape:
    ``w - s * (a1 @ b1 + a0 @ b0)`` (the RBM's CD-1 weight step, the tied autoencoder's weight
    gradient) becomes ``Gemm(-s, 1)(join(a0, a1), join(b0, r * b1), w)`` (r = alpha1 / alpha0;
    terms of different transposes: a chain of Gemms, each adding into the last), so no (M, N)
    sum is written and w is read and written once. Only reorders the sum."""
    terms = []   # (alpha, op, a, b), outermost first
    while True:
        node = g.owner
        if node is None or not isinstance(node.op, Gemm) or node.op.epilogue or not m.ctx.single_client(g):
            return None
        op = node.op
        terms.append((scale * op.alpha, op, *node.inputs[:2]))
        if op.beta == 0.0:
            break
        c = node.inputs[2]
        if not m.ctx.same_shape(c, g):
            return None
        scale, g = scale * op.beta, c
    terms.reverse()
    joined = _joined(terms, w)
    if joined is not None:
        return joined
    for alpha, op, a, b in terms:
        w = _with(op, alpha=alpha, beta=1.0)(a, b, w)
    return w


def _joined(terms: list, w: Variable) -> Variable | None:
    """``w + sum alpha_i op(a_i) @ op(b_i)`` as one Gemm over the terms' K axes joined (all
    terms of one transpose pair): copying the (K_i, M) and (K_i, N) operands costs far less
    than a pass over (M, N) whenever K is a minibatch."""
    alpha0, op0 = terms[0][0], terms[0][1]
    if len(terms) < 2 or alpha0 == 0.0 or any(
            (op.trans_a, op.trans_b) != (op0.trans_a, op0.trans_b) for _, op, _, _ in terms):
        return None
    a_axis, b_axis = (0 if op0.trans_a else 1), (1 if op0.trans_b else 0)
    bs = [b if alpha == alpha0 else E.mul(b, Constant(np.asarray(alpha / alpha0, b.dtype)))
          for alpha, _, _, b in terms]
    a = S.Join(a_axis)(*(t[2] for t in terms))
    return _with(op0, alpha=alpha0, beta=1.0)(a, S.Join(b_axis)(*bs), w)


def _gemm_accumulate(m: Match):  # c - s * gemm (gemm with a c of its own: see _accumulated)
    s = _scalar(m.s)
    if s is None or not m.ctx.single_client(m.scaled) or not _bias_ok(m):
        return None
    return _accumulated(m.c, -s, m.g, m)


def _gemm_rsub_chain(m: Match):  # c - gemm, gemm with a c of its own
    if m.g.owner.op.beta == 0.0 or not _bias_ok(m):
        return None
    return _accumulated(m.c, -1.0, m.g, m)


def _gemm_sub(m: Match):  # gemm - c
    op = _plain(m.g, m)
    if op is None or not _bias_ok(m):
        return None
    return _with(op, beta=-1.0)(*m.g.owner.inputs, m.c)


def _gemm_constant_column(m: Match):
    """``op(a) @ alloc(v, K, 1)`` (the gradient of a mean over the batch, as the RBM's visible
    bias gets it) is ``v * sum(op(a), axis=K)``: a reduction, not an N = 1 GEMM (an edge tile
    of one column) fed by an alloc kernel. Only reorders the sum."""
    node = m.g.owner
    op, (a, b) = node.op, node.inputs[:2]
    alloc = b.owner
    if op.beta != 0.0 or op.epilogue or op.trans_b or alloc is None or not isinstance(alloc.op, S.Alloc) \
            or alloc.op.pattern[-1:] != (1,) or b.ndim != 2:
        return None
    value = alloc.inputs[0]
    if value.ndim > 2 or any(d != 1 for d in value.type.shape) or value.dtype != a.dtype:
        return None
    from engine.ops.reduce import reduce

    rows = reduce(a, "sum", axis=0 if op.trans_a else 1, keepdims=True)
    if op.trans_a:
        rows = S.DimShuffle((1, 0))(rows)
    scale = value if op.alpha == 1.0 else E.mul(value, Constant(np.asarray(op.alpha, a.dtype)))
    return E.mul(rows, scale)


def _gemm_transposed(m: Match):
    if m.node.op.new_order != (1, 0):
        return None
    op = _plain(m.g, m)
    if op is None:
        return None
    a, b = m.g.owner.inputs
    return _with(op, trans_a=not op.trans_b, trans_b=not op.trans_a)(b, a)


def _activation(m: Match) -> str | None:
    op = m.node.op
    return op.scalar_op if op.cast_to is None and op.scalar_op in EPILOGUE_OPS else None


def _gemm_epilogue(m: Match):
    act = _activation(m)
    if act is None or not m.ctx.single_client(m.g):
        return None
    op = m.g.owner.op
    return _with(op, epilogue=op.epilogue + (act,))(*m.g.owner.inputs)


def _conv_rules() -> list[Rule]:
    try:
        from engine.ops.conv import Conv2d
        from engine.ops.pool import Pool2d
    except ImportError:
        return []

    def conv_bias(m: Match):
        conv = m.g
        if not m.ctx.single_client(conv) or m.c.dtype != conv.dtype or m.c.ndim > 4 \
                or not m.ctx.same_shape(m.out, conv):
            return None
        if isinstance(conv.owner.op, FusedConv):
            if conv.owner.op.has_bias or conv.owner.op.epilogue:
                return None
            return FusedConv(conv.owner.op.conv, True)(*conv.owner.inputs, m.c)
        return FusedConv(conv.owner.op, True)(*conv.owner.inputs, m.c)

    def conv_epilogue(m: Match):
        act = _activation(m)
        conv = m.g
        if act is None or not m.ctx.single_client(conv):
            return None
        op = conv.owner.op
        if isinstance(op, FusedConv):
            return FusedConv(op.conv, op.has_bias, op.epilogue + (act,))(*conv.owner.inputs)
        return FusedConv(op, False, (act,))(*conv.owner.inputs)

    def pool_prologue(m: Match):
        inner = m.a.owner
        act = inner.op.scalar_op if inner.op.cast_to is None else None
        if act not in EPILOGUE_OPS or not m.ctx.single_client(m.a):
            return None
        return FusedPool(m.node.op, (act,))(inner.inputs[0])

    conv = Pat((Conv2d, FusedConv), name="g")
    return [
        Rule("conv_bias", Pat.elemwise("add", conv, Pat.var("c"), commutative=True), conv_bias),
        Rule("conv_epilogue", Pat(Elemwise, [conv]), conv_epilogue),
        Rule("pool_prologue", Pat(Pool2d, [Pat(Elemwise, name="a")]), pool_prologue),
    ]


def specialize() -> PatternMatcher:
    gemm = Pat(Gemm, name="g")
    c = Pat.var("c")
    return PatternMatcher([
        Rule("gemm", Pat(MatMul), _gemm),
        Rule("gemm_constant_column", gemm, _gemm_constant_column),
        Rule("gemm_scale", Pat.elemwise("mul", gemm, c, commutative=True), _gemm_scale),
        Rule("gemm_bias", Pat.elemwise("add", gemm, c, commutative=True), _gemm_add),
        Rule("gemm_rsub", Pat.elemwise("sub", c, gemm), _gemm_rsub),
        Rule("gemm_sub", Pat.elemwise("sub", gemm, c), _gemm_sub),
        Rule("gemm_accumulate", Pat.elemwise("sub", c, Pat.elemwise("mul", gemm, Pat.var("s"), name="scaled",
                                                                    commutative=True)), _gemm_accumulate),
        Rule("gemm_rsub_chain", Pat.elemwise("sub", c, gemm), _gemm_rsub_chain),
        Rule("gemm_transposed", Pat(S.DimShuffle, [gemm]), _gemm_transposed),
        Rule("gemm_epilogue", Pat(Elemwise, [gemm]), _gemm_epilogue),
        *_conv_rules(),
    ])


def _is_shape_of(size: Variable, p: Variable) -> bool:
    """Whether a sample size is p's shape: ``p.shape``, or the constant the shapes rewrite made
    of it when p's shape is static."""
    from engine.ops.shape import Shape

    if isinstance(size, Constant):
        return None not in p.type.shape and tuple(int(d) for d in size.value) == p.type.shape
    return size.owner is not None and isinstance(size.owner.op, Shape) and size.owner.inputs[0] is p


def gemm_bernoulli(outputs: list, ctx) -> list:
    """A whole-graph pass after ``specialize``: ``binomial(size=p.shape, p=p)`` of a 2-d
    ``Gemm`` result p (an RBM's hidden units) becomes one ``GemmBernoulli`` node giving p, the
    new random state and the samples, drawn in the GEMM's kernel from the product it stored.
    The state must be a graph input (a stream's shared state), and the product one the CPU
    kernel never computes transposed (``a @ b.T`` with few rows is: its samples would be
    scattered). A graph rebuild, not a rule: p's other consumers must read the fused node."""
    from engine.graph import toposort
    from engine.ops.fused import GemmBernoulli
    from engine.ops.random import RandomVariable

    nodes = toposort(outputs)
    pairs: dict[int, object] = {}   # id(gemm node) -> its random variable node
    for node in nodes:
        if not isinstance(node.op, RandomVariable) or node.op.distribution != "binomial" or node.op.ndim != 2:
            continue
        state, size, p = node.inputs
        g = p.owner
        if g is None or type(g.op) is not Gemm or p.dtype not in ("float32", "float64") or state.owner is not None \
                or not _is_shape_of(size, p) or (g.op.trans_b and not g.op.trans_a) or id(g) in pairs:
            continue
        pairs[id(g)] = node
    if not pairs:
        return outputs
    fused_rvs = {id(rv) for rv in pairs.values()}
    memo: dict[int, Variable] = {}

    def get(v: Variable) -> Variable:
        return memo.get(id(v), v)

    for node in nodes:
        if id(node) in fused_rvs:
            continue
        inputs = [get(i) for i in node.inputs]
        rv = pairs.get(id(node))
        if rv is not None:
            new = GemmBernoulli(node.op, rv.op.dtype).make_node(*inputs, rv.inputs[0])
            new.site = node.site
            for old, out in zip((node.outputs[0], *rv.outputs), new.outputs):
                out.site = old.site
                memo[id(old)] = out
        elif any(a is not b for a, b in zip(inputs, node.inputs)):
            for old, out in zip(node.outputs, node.clone_with_new_inputs(inputs).outputs):
                memo[id(old)] = out
    return [get(o) for o in outputs]
