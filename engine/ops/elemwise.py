"""Elementwise ops: one ``Elemwise`` op class parametrized by a scalar op name.

The scalar ops are a table (name -> arity, output dtype rule, vjp rule); backends register an
implementation per scalar op name. ``make_node`` requires its inputs to share one dtype (the
builders insert explicit casts), so code generators never guess promotions.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from engine.errors import KilnTypeError
from engine.graph import Apply, Constant, Op, Variable, as_variable
from engine.types import TensorType, broadcast_shapes, is_float, promote

# vjp rules: (inputs, output, output_grad) -> input grads; they use the builders below.
VjpRule = Callable[[list, Variable, Variable], list]


@dataclass(frozen=True)
class ScalarOp:
    name: str
    arity: int
    #: "same": dtype of the inputs; "bool": comparisons/logic; "float": float inputs only
    out_dtype: str
    vjp: VjpRule | None
    #: dtypes the op accepts ("any", "float", "int", "bool", "number")
    accepts: str = "number"


SCALAR_OPS: dict[str, ScalarOp] = {}


def scalar_op(name: str, arity: int, out_dtype: str = "same", accepts: str = "number"):
    def register(vjp: VjpRule | None) -> VjpRule | None:
        SCALAR_OPS[name] = ScalarOp(name, arity, out_dtype, vjp, accepts)
        return vjp
    return register


class Elemwise(Op):
    """Apply a scalar op elementwise with numpy broadcasting (also of ``None`` dims at run time)."""

    props = ("scalar_op", "cast_to")

    def __init__(self, scalar_op: str, cast_to: str | None = None) -> None:
        if scalar_op not in SCALAR_OPS:
            raise KilnTypeError(f"unknown elementwise op {scalar_op!r}")
        self.scalar_op = scalar_op
        self.cast_to = cast_to

    def __str__(self) -> str:
        return f"Elemwise{{{self.scalar_op}{'->' + self.cast_to if self.cast_to else ''}}}"

    @property
    def info(self) -> ScalarOp:
        return SCALAR_OPS[self.scalar_op]

    def make_node(self, *inputs: Variable) -> Apply:
        info = self.info
        if len(inputs) != info.arity:
            raise KilnTypeError(f"{self} takes {info.arity} inputs, given {len(inputs)}")
        operands = inputs[1:] if self.scalar_op == "where" else inputs
        if self.scalar_op == "where" and inputs[0].dtype != "bool":
            raise KilnTypeError(f"where/switch: condition must be bool, given {inputs[0].type}")
        dtypes = {v.dtype for v in operands}
        if len(dtypes) != 1 and self.scalar_op != "cast":
            raise KilnTypeError(f"{self}: inputs must share a dtype, given {[str(v.type) for v in inputs]}")
        dtype = next(iter(dtypes))
        _check_accepts(self, info.accepts, dtype, inputs)
        shape = broadcast_shapes(*[v.type.shape for v in inputs], where=f"{self}: ")
        out_dtype = {"same": dtype, "bool": "bool", "float": dtype}.get(info.out_dtype, info.out_dtype)
        if self.cast_to:
            out_dtype = self.cast_to
        return Apply(self, inputs, [TensorType(out_dtype, shape)])

    def vjp(self, node: Apply, output_grads: list) -> list:
        rule = self.info.vjp
        grad = output_grads[0]
        if rule is None or grad is None:
            return [None] * len(node.inputs)
        grads = rule(node.inputs, node.outputs[0], grad)
        # a single-input op never broadcasts, so its gradient already has the input's shape
        reduce = sum_to if len(node.inputs) > 1 else (lambda g, x: g)
        return [None if g is None or not is_float(x.dtype) else reduce(g, x)
                for g, x in zip(grads, node.inputs)]


def _check_accepts(op: Op, accepts: str, dtype: str, inputs: tuple) -> None:
    ok = {
        "any": True,
        "number": dtype != "bool",
        "float": is_float(dtype),
        "int": dtype not in ("bool", "float32", "float64"),
        "bool": dtype == "bool",
        "intbool": not is_float(dtype),
    }[accepts]
    if not ok:
        raise KilnTypeError(f"{op} does not accept dtype {dtype} (inputs {[str(v.type) for v in inputs]}); "
                            f"cast first, e.g. T.cast(x, 'float32')")


# -- builders --------------------------------------------------------------------------------

def apply(name: str, *args: object) -> Variable:
    """Build ``name(*args)`` with numpy-2 promotion: weak Python scalars take the tensor dtype."""
    info = SCALAR_OPS[name]
    variables = [as_variable(a) for a in args]
    operands = variables[1:] if name == "where" else variables
    strong = [v.dtype for v in operands if not (isinstance(v, Constant) and v.weak)]
    weak = [v.python_value for v in operands if isinstance(v, Constant) and v.weak]
    dtype = promote(*strong, weak=weak)
    if info.out_dtype == "float" and not is_float(dtype):
        # DESIGN: integer true division (and every int -> float op: sqrt, exp...) gives floatX,
        # so integer counts never drag a float32 model into float64
        from engine.config import config

        dtype = config.floatX
    cast_operands = [cast(v, dtype) for v in operands]
    if name == "where":
        cond = variables[0] if variables[0].dtype == "bool" else cast(variables[0], "bool")
        cast_operands = [cond, *cast_operands]
    return Elemwise(name)(*cast_operands)


def cast(x: object, dtype: str) -> Variable:
    x = as_variable(x)
    if x.dtype == dtype:
        return x
    if isinstance(x, Constant):
        try:
            with np.errstate(over="ignore", invalid="ignore"):
                return Constant(x.python_value if x.weak else x.value.astype(dtype), dtype=dtype, weak=False)
        except OverflowError:  # numpy 2 (NEP 50): a Python int must fit the tensor's dtype
            raise KilnTypeError(f"the Python integer {x.python_value} does not fit {dtype}, the dtype of the "
                                f"tensor it is combined with; cast the tensor or pass np.int64(...)") from None
    return Elemwise("cast", dtype)(x)


def sum_to(grad: Variable, like: Variable) -> Variable:
    """Reduce a broadcast result's gradient to the shape of the input ``like``."""
    from engine.ops.shape import SumToShape

    if grad.type.shape == like.type.shape and None not in like.type.shape:
        return grad
    return SumToShape()(grad, like)


def add(a, b): return apply("add", a, b)
def sub(a, b): return apply("sub", a, b)
def mul(a, b): return apply("mul", a, b)
def true_div(a, b): return apply("true_div", a, b)
def neg(a): return apply("neg", a)
def exp(a): return apply("exp", a)
def log(a): return apply("log", a)
def sqr(a): return apply("sqr", a)
def sigmoid(a): return apply("sigmoid", a)
def where(c, a, b): return apply("where", c, a, b)
def gt(a, b): return apply("gt", a, b)
def ge(a, b): return apply("ge", a, b)
def lt(a, b): return apply("lt", a, b)
def sign(a): return apply("sign", a)


def zeros_like(x: Variable) -> Variable:
    from engine.ops.shape import broadcast_like

    return broadcast_like(Constant(0, dtype=x.dtype), x)


def ones_like(x: Variable) -> Variable:
    from engine.ops.shape import broadcast_like

    return broadcast_like(Constant(1, dtype=x.dtype), x)


# -- the scalar op table ---------------------------------------------------------------------

scalar_op("add", 2)(lambda i, o, g: [g, g])
scalar_op("sub", 2)(lambda i, o, g: [g, neg(g)])
scalar_op("mul", 2)(lambda i, o, g: [mul(g, i[1]), mul(g, i[0])])
scalar_op("true_div", 2, "float")(lambda i, o, g: [true_div(g, i[1]), neg(true_div(mul(g, o), i[1]))])
scalar_op("floor_div", 2)(None)
scalar_op("mod", 2)(lambda i, o, g: [g, neg(mul(g, apply("floor", true_div(i[0], i[1]))))])
scalar_op("pow", 2)(lambda i, o, g: [
    mul(g, mul(i[1], apply("pow", i[0], sub(i[1], 1)))),
    mul(g, mul(o, log(where(gt(i[0], 0), i[0], 1)))),
])
scalar_op("maximum", 2)(lambda i, o, g: [where(ge(i[0], i[1]), g, 0), where(lt(i[0], i[1]), g, 0)])
scalar_op("minimum", 2)(lambda i, o, g: [where(apply("le", i[0], i[1]), g, 0), where(gt(i[0], i[1]), g, 0)])
for _cmp in ("lt", "le", "gt", "ge", "eq", "neq"):
    scalar_op(_cmp, 2, "bool", "any")(None)
for _logic in ("and", "or", "xor"):
    scalar_op(_logic, 2, "same", "intbool")(None)
scalar_op("invert", 1, "same", "intbool")(None)
scalar_op("where", 3, "same", "any")(lambda i, o, g: [None, where(i[0], g, 0), where(i[0], 0, g)])
scalar_op("cast", 1, "same", "any")(lambda i, o, g: [cast(g, i[0].dtype) if is_float(i[0].dtype) else None])
scalar_op("identity", 1, "same", "any")(lambda i, o, g: [g])

scalar_op("neg", 1)(lambda i, o, g: [neg(g)])
scalar_op("abs", 1)(lambda i, o, g: [mul(g, sign(i[0]))])
scalar_op("sign", 1)(None)
scalar_op("floor", 1)(None)
scalar_op("ceil", 1)(None)
scalar_op("round", 1)(None)
scalar_op("sqr", 1)(lambda i, o, g: [mul(g, mul(i[0], 2))])
scalar_op("sqrt", 1, "float")(lambda i, o, g: [true_div(mul(g, 0.5), o)])
scalar_op("exp", 1, "float")(lambda i, o, g: [mul(g, o)])
scalar_op("expm1", 1, "float")(lambda i, o, g: [mul(g, add(o, 1))])
scalar_op("log", 1, "float")(lambda i, o, g: [true_div(g, i[0])])
scalar_op("log1p", 1, "float")(lambda i, o, g: [true_div(g, add(i[0], 1))])
scalar_op("tanh", 1, "float")(lambda i, o, g: [mul(g, sub(1, sqr(o)))])
scalar_op("sigmoid", 1, "float")(lambda i, o, g: [mul(g, mul(o, sub(1, o)))])
scalar_op("softplus", 1, "float")(lambda i, o, g: [mul(g, sigmoid(i[0]))])
scalar_op("relu", 1)(lambda i, o, g: [where(gt(i[0], 0), g, 0)])
scalar_op("sin", 1, "float")(lambda i, o, g: [mul(g, apply("cos", i[0]))])
scalar_op("cos", 1, "float")(lambda i, o, g: [neg(mul(g, apply("sin", i[0])))])
scalar_op("reciprocal", 1, "float")(lambda i, o, g: [neg(mul(g, sqr(o)))])
scalar_op("erf", 1, "float")(lambda i, o, g: [mul(g, mul(exp(neg(sqr(i[0]))), 1.1283791670955126))])
