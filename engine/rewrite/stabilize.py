"""stabilize: rewrite expressions that overflow or lose all precision into stable forms, in
the forward graph *and* in the gradient graph ``grad`` already built from the naive forward
graph (a stable forward value with a NaN gradient would not help anyone):

* log(sigmoid x) -> -softplus(-x);  log(1 - sigmoid x), log1p(-sigmoid x) -> -softplus(x)
  (so binary cross-entropy of a sigmoid becomes the softplus form); in the gradient,
  (g / s) * s(1 - s) -> g * sigmoid(-x) and (g / (1 - s)) * s(1 - s) -> g * s, distributed over
  sums of such terms;
* log(sum(exp x)) -> max + log(sum(exp(x - max))); its gradient exp(x) / sum(exp x) likewise;
* log(softmax x) -> LogSoftmax; -log(softmax x)[arange(n), y] (also through log_softmax, with
  the minus inside or out) -> SoftmaxCrossEntropy(x, y); in the gradient, the softmax vjp of
  g / softmax(x) -> g - softmax(x) * sum(g).

The nnet rules are active only once ``engine.ops.nnet`` exists.
"""

from __future__ import annotations

from engine.graph import Constant, Variable
from engine.ops import elemwise as E
from engine.ops import reduce as R
from engine.ops import shape as S
from engine.ops.elemwise import Elemwise
from engine.rewrite.pattern import Match, Pat, PatternMatcher, Rule

x_ = Pat.var("x")
one = Pat.const(1)


def _fits(m: Match, r: Variable | None) -> Variable | None:
    if r is None or r.dtype != m.out.dtype or not m.ctx.same_shape(m.out, r):
        return None
    return r


def _is_elemwise(v: Variable, name: str) -> bool:
    n = v.owner
    return n is not None and isinstance(n.op, Elemwise) and n.op.scalar_op == name and n.op.cast_to is None


def _is_one(v: Variable) -> bool:
    return isinstance(v, Constant) and v.value.size > 0 and bool((v.value == 1).all()) and v.ndim == 0


def _is_one_minus(v: Variable, s: Variable) -> bool:
    return _is_elemwise(v, "sub") and _is_one(v.owner.inputs[0]) and v.owner.inputs[1] is s


# -- sigmoid ------------------------------------------------------------------------------------

def _sigmoid_grad(m: Match):
    """t * (s * (1 - s)) where t divides by s or 1 - s: cancel instead of dividing by 0."""
    s, x, d = m.s, m.x, m.d

    def cancel(t: Variable, depth: int) -> Variable | None:
        n = t.owner
        if depth > 6 or n is None or not isinstance(n.op, Elemwise) or n.op.cast_to is not None:
            return None
        op = n.op.scalar_op
        if op == "true_div":
            g, den = n.inputs
            if den is s:
                return E.mul(g, E.sigmoid(E.neg(x)))
            if _is_one_minus(den, s):
                return E.mul(g, s)
            return None
        if op == "neg":
            c = cancel(n.inputs[0], depth + 1)
            return None if c is None else E.neg(c)
        if op in ("add", "sub"):
            a, b = n.inputs
            ca, cb = cancel(a, depth + 1), cancel(b, depth + 1)
            if ca is None and cb is None:
                return None
            return E.apply(op, ca if ca is not None else E.mul(a, d), cb if cb is not None else E.mul(b, d))
        if op == "mul":
            a, b = n.inputs
            ca = cancel(a, depth + 1)
            if ca is not None:
                return E.mul(ca, b)
            cb = cancel(b, depth + 1)
            return None if cb is None else E.mul(a, cb)
        return None

    return _fits(m, cancel(m.t, 0))


# -- log-sum-exp --------------------------------------------------------------------------------

def _shifted_exp(x: Variable, axes: tuple) -> tuple[Variable, Variable]:
    """(max over axes, exp(x - max)) with the max's axes kept for broadcasting."""
    mx = R.Reduce("max", axes)(x)
    return mx, E.exp(E.sub(x, R.keep_dims(mx, x.ndim, axes)))


def _already_shifted(x: Variable) -> bool:
    if not _is_elemwise(x, "sub"):
        return False
    a, b = x.owner.inputs
    while b.owner is not None and isinstance(b.owner.op, (S.DimShuffle, S.BroadcastLike)):
        b = b.owner.inputs[0]
    return b.owner is not None and isinstance(b.owner.op, R.Reduce) and b.owner.op.reducer == "max" \
        and b.owner.inputs[0] is a


def _logsumexp(m: Match):
    x, axes = m.x, m.r.owner.op.axes
    if _already_shifted(x) or not axes:
        return None
    mx, e = _shifted_exp(x, axes)
    return _fits(m, E.add(mx, E.log(R.Reduce("sum", axes)(e))))


def _keep_pattern(ndim: int, axes: tuple) -> tuple:
    pattern, j = [], 0
    for i in range(ndim):
        if i in axes:
            pattern.append("x")
        else:
            pattern.append(j)
            j += 1
    return tuple(pattern)


def _peel(v: Variable, *ops: type) -> Variable:
    while v.owner is not None and isinstance(v.owner.op, ops):
        v = v.owner.inputs[0]
    return v


def _logsumexp_grad(m: Match):
    """keep(g / sum(exp x)) * exp(x) (broadcast or not) -> keep(g) * exp(x - max) / keep(sum(exp(x - max)))."""
    e, x = m.e, m.x
    b = _peel(m.b, S.BroadcastLike, S.Alloc)
    if b.owner is None or not isinstance(b.owner.op, S.DimShuffle) or not _is_elemwise(b.owner.inputs[0], "true_div"):
        return None
    g, ssum = b.owner.inputs[0].owner.inputs
    if ssum.owner is None or not isinstance(ssum.owner.op, R.Reduce) or ssum.owner.op.reducer != "sum" \
            or ssum.owner.inputs[0] is not e:
        return None
    axes = ssum.owner.op.axes
    if b.owner.op.new_order != _keep_pattern(x.ndim, axes):
        return None
    mx, shifted = _shifted_exp(x, axes)
    ratio = E.true_div(shifted, R.keep_dims(R.Reduce("sum", axes)(shifted), x.ndim, axes))
    return _fits(m, E.mul(R.keep_dims(g, x.ndim, axes), ratio))


# -- softmax family ----------------------------------------------------------------------------------

def _nnet_rules() -> list[Rule]:
    try:
        from engine.ops.nnet import LogSoftmax, Softmax, SoftmaxCrossEntropy
    except ImportError:
        return []
    from engine.ops.indexing import AdvancedSubtensor
    from engine.ops.shape import Arange

    def axis_of(op, ndim: int) -> int:
        return op.axis % ndim

    def xent(m: Match):
        logits, labels, ar = m.x, m.y, m.ar
        if logits.ndim != 2 or labels.ndim != 1 or axis_of(m.ls.owner.op, 2) != 1:
            return None
        start, stop, step = ar.owner.inputs
        if not (isinstance(start, Constant) and int(start.value) == 0 and isinstance(step, Constant)
                and int(step.value) == 1):
            return None
        from engine.rewrite.shapes import value_of

        n = value_of(stop, m.ctx.shape_cache)
        if n not in (m.ctx.shape(logits)[0], m.ctx.shape(labels)[0]):
            return None
        # the rows of the logits and the labels may only be known equal at run time, where the
        # op checks them (a mismatch is a user error in the original graph as well)
        return SoftmaxCrossEntropy()(logits, labels)

    def softmax_grad(m: Match):
        """y * (q - keep(sum(q * y))) with q = +-g / y -> +-(g - y * keep(sum(g))): the vjp of
        log(softmax), without dividing by a softmax that underflowed to 0."""
        y, q, r = m.y, m.q, m.r
        axis = axis_of(y.owner.op, y.ndim)
        if r.owner.op.axes != (axis,) or r.owner.op.reducer != "sum" \
                or m.ds.owner.op.new_order != _keep_pattern(y.ndim, (axis,)):
            return None
        negate = False
        while _is_elemwise(q, "neg"):
            negate, q = not negate, q.owner.inputs[0]
        if not _is_elemwise(q, "true_div") or q.owner.inputs[1] is not y:
            return None
        # g may have been broadcast against y (e.g. the gradient of a mean): its sum along the
        # axis must count every broadcast copy, so broadcast it to y's shape first
        g = S.broadcast_like(q.owner.inputs[0], y)
        out = E.sub(g, E.mul(y, R.reduce(g, "sum", axis, keepdims=True)))
        return _fits(m, E.neg(out) if negate else out)

    q_times_y = Pat.elemwise("mul", Pat.var("q"), Pat.var("y"), commutative=True)
    keep_sum = Pat(S.DimShuffle, [Pat(R.Reduce, [q_times_y], name="r")], name="ds")
    log_softmax = Pat(LogSoftmax, [x_], name="ls")
    ar = Pat(Arange, name="ar")
    labels = Pat.var("y")
    return [
        Rule("log_softmax", Pat.elemwise("log", Pat(Softmax, [x_], name="sm")),
             lambda m: LogSoftmax(m.sm.owner.op.axis)(m.x)),
        Rule("softmax_xent", Pat(AdvancedSubtensor, [log_softmax, ar, labels]),
             lambda m: _negated(xent(m))),
        Rule("softmax_xent_neg_inside", Pat(AdvancedSubtensor, [Pat.elemwise("neg", log_softmax), ar, labels]), xent),
        Rule("softmax_grad_of_log", Pat.elemwise("mul", Pat(Softmax, name="y"),
                                                 Pat.elemwise("sub", Pat.var("q"), keep_sum), commutative=True),
             softmax_grad),
    ]


def _negated(v: Variable | None) -> Variable | None:
    return None if v is None else E.neg(v)


def stabilize() -> PatternMatcher:
    sigmoid = Pat.elemwise("sigmoid", x_, name="s")
    exp_x = Pat.elemwise("exp", x_, name="e")
    # s * (1 - s): the derivative of the sigmoid s, as its vjp builds it
    dsigmoid = Pat.elemwise("mul", sigmoid, Pat.elemwise("sub", one, Pat.var("s")), commutative=True, name="d")
    rules = [
        Rule("log_sigmoid", Pat.elemwise("log", sigmoid), lambda m: _fits(m, E.neg(E.apply("softplus", E.neg(m.x))))),
        Rule("log_one_minus_sigmoid", Pat.elemwise("log", Pat.elemwise("sub", one, sigmoid)),
             lambda m: _fits(m, E.neg(E.apply("softplus", m.x)))),
        Rule("log1p_neg_sigmoid", Pat.elemwise("log1p", Pat.elemwise("neg", sigmoid)),
             lambda m: _fits(m, E.neg(E.apply("softplus", m.x)))),
        Rule("sigmoid_grad", Pat.elemwise("mul", Pat.var("t"), dsigmoid, commutative=True), _sigmoid_grad),
        Rule("logsumexp", Pat.elemwise("log", Pat(R.Reduce, [exp_x], name="r", props={"reducer": "sum"})), _logsumexp),
        Rule("logsumexp_grad", Pat.elemwise("mul", Pat.var("b"), exp_x, commutative=True), _logsumexp_grad),
    ]
    return PatternMatcher(rules + _nnet_rules())
