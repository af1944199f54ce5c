"""Ops only the optimizer creates (after ``grad``, so they need no vjp): a fused elementwise
expression, an elementwise expression feeding a reduction, gemm with an epilogue, gemm with
Bernoulli samples of its result, and convolution / pooling with an epilogue / prologue.

A fused expression is a tuple of instructions in SSA order, each ``(scalar_op, dtype, args)``:
``scalar_op`` is a name of ``engine.ops.elemwise.SCALAR_OPS`` ("cast" converts to ``dtype``),
``dtype`` the instruction's result dtype (the op is computed as ``Elemwise`` would, then cast
to ``dtype``), and ``args`` a tuple of references:

    ("in", k)                input slot k of the node (broadcast like numpy)
    ("op", j)                the result of instruction j < this one
    ("const", value, dtype)  a scalar constant (a Python bool/int/float)

``outputs`` lists the instructions whose results the node returns (several = multi-output).
Everything is tuples of str/int/float, so the ops are hashable and a backend lowers them
without looking at the graph. ``format_expr`` prints them as nested expressions.
"""

from __future__ import annotations

from engine.errors import KilnShapeError, KilnTypeError, KilnValueError
from engine.graph import Apply, Op, Variable
from engine.types import TensorType, broadcast_shapes

#: most inputs one fused elementwise kernel takes (more would exhaust registers / arguments)
MAX_FUSED_INPUTS = 16


def expr_inputs(expr: tuple, index: int) -> set[int]:
    """Input slots instruction ``index`` depends on."""
    seen, stack, slots = set(), [index], set()
    while stack:
        j = stack.pop()
        if j in seen:
            continue
        seen.add(j)
        for arg in expr[j][2]:
            if arg[0] == "in":
                slots.add(arg[1])
            elif arg[0] == "op":
                stack.append(arg[1])
    return slots


def format_expr(expr: tuple, index: int) -> str:
    name, dtype, args = expr[index]

    def ref(a):
        if a[0] == "in":
            return f"i{a[1]}"
        if a[0] == "op":
            return format_expr(expr, a[1])
        return repr(a[1])

    inner = ", ".join(ref(a) for a in args)
    return f"cast<{dtype}>({inner})" if name == "cast" else f"{name}({inner})"


def _check_expr(op: Op, expr: tuple, inputs: tuple) -> None:
    from engine.ops.elemwise import SCALAR_OPS

    for j, (name, _dtype, args) in enumerate(expr):
        if name not in SCALAR_OPS or len(args) != SCALAR_OPS[name].arity:
            raise KilnValueError(f"{op}: bad instruction {j}: {expr[j]}")
        for a in args:
            if (a[0] == "in" and not 0 <= a[1] < len(inputs)) or (a[0] == "op" and not 0 <= a[1] < j):
                raise KilnValueError(f"{op}: instruction {j} refers to {a}")


class FusedElemwise(Op):
    """Several elementwise ops in one loop nest: ``expr`` over the inputs, ``outputs`` returned."""

    props = ("expr", "outputs")

    def __init__(self, expr: tuple, outputs: tuple | None = None) -> None:
        self.expr = tuple(expr)
        self.outputs = tuple(outputs) if outputs is not None else (len(self.expr) - 1,)
        self.n_outputs = len(self.outputs)

    def __str__(self) -> str:
        body = "; ".join(format_expr(self.expr, o) for o in self.outputs)
        return f"FusedElemwise{{{body if len(body) <= 160 else body[:157] + '...'}}}"

    __repr__ = __str__

    def make_node(self, *inputs: Variable) -> Apply:
        _check_expr(self, self.expr, inputs)
        types = []
        for o in self.outputs:
            slots = sorted(expr_inputs(self.expr, o))
            shape = broadcast_shapes(*[inputs[k].type.shape for k in slots], where=f"{self}: ")
            types.append(TensorType(self.expr[o][1], shape))
        return Apply(self, inputs, types)


class FusedReduce(Op):
    """``reducer`` over ``axes`` of the elementwise expression ``expr`` (its last instruction),
    in one pass: ``sum(x * y)`` never materializes ``x * y``."""

    props = ("reducer", "axes", "expr")

    def __init__(self, reducer: str, axes: tuple, expr: tuple) -> None:
        self.reducer = reducer
        self.axes = tuple(axes)
        self.expr = tuple(expr)

    def __str__(self) -> str:
        return f"FusedReduce{{{self.reducer}{self.axes}: {format_expr(self.expr, len(self.expr) - 1)}}}"

    __repr__ = __str__

    def make_node(self, *inputs: Variable) -> Apply:
        _check_expr(self, self.expr, inputs)
        slots = sorted(expr_inputs(self.expr, len(self.expr) - 1))
        shape = broadcast_shapes(*[inputs[k].type.shape for k in slots], where=f"{self}: ")
        if any(not 0 <= a < len(shape) for a in self.axes):
            raise KilnValueError(f"{self}: axes out of range for shape {shape}")
        out = tuple(d for i, d in enumerate(shape) if i not in self.axes)
        return Apply(self, inputs, [TensorType(self.expr[-1][1], out)])


#: unary scalar ops allowed in epilogues / prologues
EPILOGUE_OPS = ("sigmoid", "tanh", "relu", "softplus", "exp", "neg", "abs", "sqr")


def _check_epilogue(op: Op, ops: tuple) -> None:
    bad = [e for e in ops if e not in EPILOGUE_OPS]
    if bad:
        raise KilnValueError(f"{op}: unsupported epilogue ops {bad}; allowed: {EPILOGUE_OPS}")


class Gemm(Op):
    """``epilogue(alpha * op(a) @ op(b) + beta * c)`` for 2-d a, b (op = transpose when
    ``trans_a`` / ``trans_b``); ``c`` (present iff beta != 0) broadcasts to the result;
    ``epilogue`` is a tuple of unary scalar op names applied in order."""

    props = ("alpha", "beta", "trans_a", "trans_b", "epilogue")

    def __init__(self, alpha: float = 1.0, beta: float = 0.0, trans_a: bool = False, trans_b: bool = False,
                 epilogue: tuple = ()) -> None:
        self.alpha = float(alpha)
        self.beta = float(beta)
        self.trans_a = bool(trans_a)
        self.trans_b = bool(trans_b)
        self.epilogue = tuple(epilogue)
        _check_epilogue(self, self.epilogue)

    def make_node(self, a: Variable, b: Variable, *c: Variable) -> Apply:
        if a.ndim != 2 or b.ndim != 2 or a.dtype != b.dtype:
            raise KilnTypeError(f"{self}: needs 2-d operands of one dtype, given {a.type} and {b.type}")
        if (len(c) == 1) != (self.beta != 0.0) or len(c) > 1:
            raise KilnValueError(f"{self}: give c exactly when beta != 0")
        m, k1 = a.type.shape[::-1] if self.trans_a else a.type.shape
        k2, n = b.type.shape[::-1] if self.trans_b else b.type.shape
        if k1 is not None and k2 is not None and k1 != k2:
            raise KilnShapeError(f"{self}: inner dimensions differ: {a.type} and {b.type}")
        shape = (m, n)
        if c:
            if c[0].dtype != a.dtype or c[0].ndim > 2:
                raise KilnTypeError(f"{self}: c {c[0].type} must be a <= 2-d {a.dtype} tensor")
            full = broadcast_shapes(shape, c[0].type.shape, where=f"{self}: ")
            if any(s is not None and f != s for s, f in zip(shape, full)):
                raise KilnShapeError(f"{self}: c {c[0].type} does not broadcast to the product {shape}")
            shape = tuple(s if s is not None else (f if f != 1 else None) for s, f in zip(shape, full))
        return Apply(self, [a, b, *c], [TensorType(a.dtype, shape)])


class GemmBernoulli(Op):
    """A ``Gemm`` (``gemm``) whose result p also gives Bernoulli(p) samples: inputs ``(a, b[,
    c], state)``, outputs ``(p, new_state, sample)``, exactly ``p = gemm(a, b[, c])`` and
    ``RandomVariable("binomial", dtype, 2)(state, shape(p), p)`` (an RBM's hidden units: the
    samples are drawn in the GEMM's kernel, on the product it just stored)."""

    props = ("gemm", "dtype")
    n_outputs = 3

    def __init__(self, gemm: Gemm, dtype: str) -> None:
        self.gemm = gemm
        self.dtype = dtype

    def make_node(self, a: Variable, b: Variable, *rest: Variable) -> Apply:
        if not rest:
            raise KilnValueError(f"{self}: needs the random state after the gemm's operands")
        *c, state = rest
        p = self.gemm.make_node(a, b, *c).outputs[0].type
        return Apply(self, [a, b, *c, state], [p, state.type, TensorType(self.dtype, p.shape)])


class FusedConv(Op):
    """``epilogue(conv(x, w) + bias)``: ``conv`` is the ``Conv2d`` op (its props are this op's
    identity too); ``bias`` (optional) broadcasts to the NCHW result, e.g. shape (1, F, 1, 1)."""

    props = ("conv", "has_bias", "epilogue")

    def __init__(self, conv: Op, has_bias: bool, epilogue: tuple = ()) -> None:
        self.conv = conv
        self.has_bias = bool(has_bias)
        self.epilogue = tuple(epilogue)
        _check_epilogue(self, self.epilogue)

    def make_node(self, x: Variable, w: Variable, *bias: Variable) -> Apply:
        if len(bias) != int(self.has_bias):
            raise KilnValueError(f"{self}: expected {int(self.has_bias)} bias inputs, given {len(bias)}")
        out = self.conv.make_node(x, w).outputs[0].type
        if bias:
            full = broadcast_shapes(out.shape, bias[0].type.shape, where=f"{self}: ")
            if bias[0].ndim > 4 or bias[0].dtype != out.dtype or any(
                    s is not None and f != s for s, f in zip(out.shape, full)):
                raise KilnShapeError(f"{self}: bias {bias[0].type} does not broadcast to {out}")
        return Apply(self, [x, w, *bias], [out])


class FusedPool(Op):
    """``pool(prologue(x))``: an elementwise activation read inside the pooling loop."""

    props = ("pool", "prologue")

    def __init__(self, pool: Op, prologue: tuple) -> None:
        self.pool = pool
        self.prologue = tuple(prologue)
        _check_epilogue(self, self.prologue)

    def make_node(self, x: Variable) -> Apply:
        return Apply(self, [x], [self.pool.make_node(x).outputs[0].type])
