"""Random well-typed Kiln graphs for differential fuzzing (``tests/fuzz.py`` runs and compares them).

A generated graph is a *program*: Python source that builds it with the public API
(``T.*``, ``nn.*``, ``engine.shared``, operators and methods) and the input arrays, so every
graph prints as a self-contained reproducer. The generator executes each line as it writes it,
so it knows every node's static type, and it tracks for every node:

* its run-time shape (``None`` static dims get concrete sizes, often 1 so that they broadcast);
* an interval that bounds its values, to keep each op in a safe domain (``log``/``sqrt`` of
  values >= 0.05, ``exp`` of values <= 5, divisors away from 0, int values far from overflow);
* whether it is *exact* (a leaf, or shape/sign manipulations of one): only exact values feed
  discontinuous ops (comparisons, floor/round, float->int casts), so a one-ulp difference
  between backends cannot flip a decision. Decisions on inexact values (argmax) are outputs
  only (``terminal``), never inputs of further ops.

The program uses ``F32`` for float32 (and ``floatX``) so that the checker can rebuild it with
``F32 = "float64"`` as a high-precision reference: the float32 oracle's distance from it
estimates, per element, how ill-conditioned an output is, and scales the tolerance.

Choices come from a ``Draw``: ``HypothesisDraw`` (``st.data()``) in the test suite and the long
run, ``RandomDraw`` (a seeded ``random.Random``) for quick replays.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from typing import Any

import numpy as np

FLOATS = ("float32", "float64")
INTS = ("int32", "int64")
MAX_ELEMS = 192          # keep most tensors small: fuzzing wants many graphs, not big ones ...
LARGE_ELEMS = 150_000    # ... but 1 graph in 8 is large: parallel loops, SUM_BLOCK/COL_BLOCK remainders
NN_ELEMS = 4096          # conv/pool/lcn inputs stay below this (the oracle's loops are slow)
FLOAT_BOUND = 1e5        # |values| of float nodes stay below this
INT_BOUND = 2 ** 20      # |values| of int nodes stay below this (int32 never overflows)

PRELUDE = """\
import numpy as np
import engine
import frontends.tensor as T
try:
    import frontends.nn as nn
except ImportError:
    nn = None
F32 = globals().get("F32", "float32")
rng = np.random.default_rng({seed})


def U(lo, hi, shape, dtype):
    return np.asarray(rng.uniform(lo, hi, shape)).astype("float32").astype(dtype)


def I(lo, hi, shape, dtype):
    return np.asarray(rng.integers(lo, hi + 1, shape)).astype(dtype)


def STRIDED(a):
    return np.repeat(a, 2, axis=-1)[..., ::2]


def REVERSED(a):
    return np.flip(np.flip(a, -1).copy(), -1)
"""


# -- where choices come from -----------------------------------------------------------------------

class Draw:
    def integer(self, lo: int, hi: int) -> int:
        raise NotImplementedError

    def choice(self, seq: Any) -> Any:
        seq = list(seq)
        return seq[self.integer(0, len(seq) - 1)]

    def chance(self, p: float) -> bool:
        return self.integer(0, 999) < p * 1000

    def weighted(self, table: dict) -> Any:
        keys = list(table)
        total = sum(table.values())
        pick = self.integer(0, total - 1)
        for k in keys:
            pick -= table[k]
            if pick < 0:
                return k
        return keys[-1]


class RandomDraw(Draw):
    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)

    def integer(self, lo: int, hi: int) -> int:
        return self.rng.randint(lo, hi)


class HypothesisDraw(Draw):
    def __init__(self, data: Any) -> None:
        from hypothesis import strategies as st

        self.data, self.st = data, st

    def integer(self, lo: int, hi: int) -> int:
        return self.data.draw(self.st.integers(lo, hi))


# -- the program being built -----------------------------------------------------------------------

@dataclass
class Node:
    name: str
    shape: tuple                 # run-time shape
    dtype: str
    tshape: tuple                # static shape (None = known at run time)
    lo: float = 0.0
    hi: float = 0.0
    exact: bool = True
    leaf: bool = False
    differentiable_leaf: bool = False

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))

    @property
    def is_float(self) -> bool:
        return self.dtype in FLOATS

    @property
    def mag(self) -> float:
        return max(abs(self.lo), abs(self.hi))


@dataclass
class Program:
    seed: int
    lines: list = field(default_factory=list)
    inputs: list = field(default_factory=list)     # names of symbolic inputs
    values: list = field(default_factory=list)     # names of their arrays
    outputs: list = field(default_factory=list)    # names of forward outputs
    wrt: list = field(default_factory=list)        # names of leaves the cost is differentiated by
    has_cost: bool = False
    ops: list = field(default_factory=list)        # op kinds used (coverage statistics)

    def body(self) -> str:
        return "\n".join(self.lines)

    def source(self) -> str:
        """Python that builds the graph: defines ``inputs``, ``values``, ``outputs``."""
        tail = [f"inputs = [{', '.join(self.inputs)}]", f"values = [{', '.join(self.values)}]",
                f"outputs = [{', '.join(self.outputs)}]"]
        if self.has_cost:
            tail.append(f"outputs += engine.grad(cost, [{', '.join(self.wrt)}], disconnected_inputs='ignore')")
        return PRELUDE.format(seed=self.seed) + "\n" + self.body() + "\n" + "\n".join(tail) + "\n"

    def build(self, float_dtype: str = "float32") -> dict:
        """Execute the program; ``float_dtype="float64"`` builds the high-precision twin."""
        from engine.config import config

        saved = config.floatX
        config.floatX = float_dtype
        try:
            namespace = {"F32": float_dtype, "__name__": "kiln_fuzz_program"}
            exec(compile(self.source(), f"<fuzz program {self.seed}>", "exec"), namespace)
        finally:
            config.floatX = saved
        return namespace


class GeneratorError(Exception):
    """The generator wrote a line Kiln refused: a bug in Kiln or in the generator (reported)."""

    def __init__(self, program: Program, line: str, error: BaseException) -> None:
        super().__init__(f"building `{line}` raised {type(error).__name__}: {error}")
        self.program, self.line, self.error = program, line, error


def _fmt(x: float) -> str:
    return repr(float(x))


def _tuple(values: Any) -> str:
    values = list(values)
    return "(" + ", ".join(str(v) for v in values) + ("," if len(values) == 1 else "") + ")"


def _dt(dtype: str) -> str:
    return "F32" if dtype == "float32" else repr(dtype)


class GraphGen:
    """Build one random program from a ``Draw``."""

    def __init__(self, draw: Draw, max_ops: int = 10, use_nn: bool = True, grads: bool = True) -> None:
        self.d = draw
        self.max_ops = max_ops
        self.grads = grads
        self.prog = Program(seed=draw.integer(0, 2 ** 31 - 1))
        self.ns: dict = {"F32": "float32", "__name__": "kiln_fuzz_program"}
        exec(PRELUDE.format(seed=self.prog.seed), self.ns)
        self.use_nn = use_nn and self.ns.get("nn") is not None
        self.large = draw.chance(0.125)
        self.max_elems = LARGE_ELEMS if self.large else MAX_ELEMS
        self.pool: list[Node] = []
        self.terminal: list[Node] = []
        self.n = 0

    # -- writing lines ---------------------------------------------------------------------------

    def line(self, text: str) -> None:
        try:
            exec(text, self.ns)
        except Exception as error:  # noqa: BLE001 - every refusal of a legal graph is reported
            self.prog.lines.append(text)
            raise GeneratorError(self.prog, text, error) from error
        self.prog.lines.append(text)

    def emit(self, expr: str, shape: tuple, lo: float, hi: float, exact: bool, kind: str,
             terminal: bool = False) -> Node:
        name = f"v{self.n}"
        self.n += 1
        self.line(f"{name} = {expr}")
        var = self.ns[name]
        node = Node(name, tuple(int(s) for s in shape), var.dtype, tuple(var.type.shape), float(lo), float(hi), exact)
        self._check_static(node, expr)
        (self.terminal if terminal else self.pool).append(node)
        self.prog.ops.append(kind)
        return node

    def _check_static(self, node: Node, expr: str) -> None:
        if len(node.tshape) != len(node.shape) or \
                any(t is not None and t != s for t, s in zip(node.tshape, node.shape)):
            raise GeneratorError(self.prog, f"{node.name} = {expr}", AssertionError(
                f"static shape {node.tshape} does not describe the run-time shape {node.shape}"))

    # -- leaves ----------------------------------------------------------------------------------

    def draw_shape(self, ndim: int | None = None) -> tuple:
        ndim = self.d.weighted({0: 1, 1: 3, 2: 4, 3: 2, 4: 1}) if ndim is None else ndim
        max_elems = self.max_elems
        sizes = {1: 3, 2: 3, 3: 3, 4: 2, 5: 2, 7: 1}
        if self.large:
            sizes = {1: 3, 3: 2, 17: 2, 64: 1, 257: 2, 1025: 2, 2051: 1}
        shape = []
        for _ in range(ndim):
            shape.append(self.d.weighted(sizes))
        while int(np.prod(shape)) > max_elems:
            i = shape.index(max(shape))
            shape[i] = max(1, shape[i] // 2)
        return tuple(shape)

    def leaf(self, shape: tuple | None = None, dtype: str | None = None, lo: float | None = None,
             hi: float | None = None, static: tuple | None = None, allow_shared: bool = True) -> Node:
        shape = self.draw_shape() if shape is None else tuple(shape)
        if dtype is None:
            dtype = self.d.weighted({"float32": 8, "float64": 1, "int32": 1, "int64": 1})
        if dtype == "bool":
            lo, hi = 0, 1
        if lo is None:
            if dtype in FLOATS:
                lo, hi = self.d.choice([(-2.0, 2.0), (0.5, 2.0), (-1.0, 1.0), (0.1, 3.0), (-3.0, -0.5)])
            else:
                lo, hi = self.d.choice([(-4, 4), (1, 5), (0, 3)])
        if static is None:
            static = tuple(s if self.d.chance(0.5) else None for s in shape)
        k = self.n
        self.n += 1
        name, value = f"x{k}", f"a{k}"
        gen = "U" if dtype in FLOATS else "I"
        bounds = f"{_fmt(lo)}, {_fmt(hi)}" if dtype in FLOATS else f"{int(lo)}, {int(hi)}"
        self.line(f"{value} = {gen}({bounds}, {_tuple(shape)}, {_dt(dtype)})")
        if len(shape) >= 1 and self.d.chance(0.15):     # a non-contiguous argument, same values
            layout = self.d.choice(["STRIDED({})", "REVERSED({})", "np.asfortranarray({})"])
            self.line(f"{value} = {layout.format(value)}")
        shared = allow_shared and self.d.chance(0.15)
        if shared:
            spec = "" if None not in static else f", shape={_tuple(static)}"
            self.line(f"{name} = engine.shared({value}, name={name!r}{spec})")
        else:
            self.line(f"{name} = T.tensor({_dt(dtype)}, {_tuple(static)}, name={name!r})")
            self.prog.inputs.append(name)
            self.prog.values.append(value)
        var = self.ns[name]
        node = Node(name, shape, var.dtype, tuple(var.type.shape), float(lo), float(hi), True, leaf=True,
                    differentiable_leaf=dtype in FLOATS)
        self._check_static(node, name)
        self.pool.append(node)
        return node

    # -- picking operands ------------------------------------------------------------------------

    def pick(self, pred=lambda n: True, fresh: dict | None = None) -> Node:
        """A node satisfying ``pred``: often the newest (deep chains), else any; else a new leaf."""
        candidates = [n for n in self.pool if pred(n)]
        if candidates and not self.d.chance(0.12):
            if self.d.chance(0.55):
                return candidates[-1]
            return self.d.choice(candidates)
        for _ in range(8):
            node = self.leaf(**(fresh or {}))
            if pred(node):
                return node
        candidates = [n for n in self.pool if pred(n)]
        if candidates:
            return candidates[-1]
        raise _Skip

    def broadcast_partner(self, a: Node, pred=lambda n: True) -> Node:
        """An operand whose shape broadcasts against ``a``'s (an existing node or a new leaf)."""
        def fits(n: Node) -> bool:
            try:
                out = np.broadcast_shapes(n.shape, a.shape)
            except ValueError:
                return False
            return int(np.prod(out)) <= self.max_elems and pred(n)

        candidates = [n for n in self.pool if fits(n)]
        if candidates and self.d.chance(0.45):
            return self.d.choice(candidates)
        shape = list(a.shape)
        if shape and self.d.chance(0.3):
            shape = shape[self.d.integer(1, len(shape)):]          # fewer (leading) dims
        shape = [1 if self.d.chance(0.25) else s for s in shape]  # size-1 dims broadcast
        if self.d.chance(0.15) and len(shape) == a.ndim < 4:
            extra = self.d.integer(2, 3)                         # a new leading dim
            if extra * max(a.size, int(np.prod(shape))) <= self.max_elems:
                shape = [extra] + shape
        for _ in range(4):
            dtype = a.dtype if self.d.chance(0.7) else None
            node = self.leaf(tuple(shape), dtype=dtype)
            if pred(node):
                return node
        raise _Skip

    # -- the ops ---------------------------------------------------------------------------------

    def generate(self) -> Program:
        n_ops = self.d.integer(1, self.max_ops)
        table = {
            "unary": 10, "binary": 12, "scalar_binary": 4, "compare_where": 3, "cast": 2, "reduce": 7,
            "mean_var": 3, "argmax": 1, "dot": 4, "reshape": 3, "flatten": 2, "dimshuffle": 3, "transpose": 2,
            "slice": 4, "advanced_index": 3, "set_subtensor": 2, "concatenate": 3, "stack": 1, "int_ops": 3,
            "outer": 1, "softmax": 2, "conv2d": 3, "pool2d": 3, "lcn": 1, "clip": 1, "fill": 1, "idiom": 8,
            "xent": 1,
        }
        if not self.use_nn:
            for k in ("softmax", "conv2d", "pool2d", "lcn", "xent"):
                table.pop(k)
        done = 0
        attempts = 0
        while done < n_ops and attempts < n_ops * 6:
            attempts += 1
            kind = self.d.weighted(table)
            try:
                getattr(self, "op_" + kind)()
                done += 1
            except _Skip:
                continue
        if not [n for n in self.pool if not n.leaf]:
            self.op_unary()
        self.finish()
        return self.prog

    def finish(self) -> None:
        built = [n for n in self.pool if not n.leaf]
        outputs = [built[-1]]
        for n in built[:-1] + self.terminal:
            if self.d.chance(0.25) or n in self.terminal:
                outputs.append(n)
        if self.d.chance(0.05) and self.pool[0].leaf:
            outputs.append(self.pool[0])                          # an input as an output
        seen, unique = set(), []
        for n in outputs:
            if n.name not in seen:
                seen.add(n.name)
                unique.append(n)
        self.prog.outputs = [n.name for n in unique]
        wrt = [n for n in self.pool if n.differentiable_leaf]
        floats = [n for n in unique if n.is_float and n in self.pool]
        if not (self.grads and wrt and floats):
            return
        terms = []
        for i, o in enumerate(floats):
            how = self.d.choice(["weighted", "sum", "mean", "sqr"])
            if how == "weighted":
                self.line(f"w{i} = U(-1.0, 1.0, {_tuple(o.shape)}, {_dt(o.dtype)})")
                terms.append(f"({o.name} * T.constant(w{i})).sum()")
            elif how == "sum":
                terms.append(f"{o.name}.sum()")
            elif how == "mean":
                terms.append(f"{o.name}.mean()")
            else:
                terms.append(f"T.sqr({o.name}).sum() * 0.5")
        self.line("cost = " + " + ".join(terms))
        self.prog.wrt = [n.name for n in wrt]
        self.prog.has_cost = True

    # elementwise ---------------------------------------------------------------------------------

    UNARY = ("neg", "abs", "exp", "log", "sqrt", "tanh", "sigmoid", "softplus", "relu", "sin", "cos", "sqr",
             "reciprocal", "expm1", "log1p", "erf", "floor", "ceil", "round", "sign")

    def op_unary(self) -> None:
        a = self.pick(lambda n: n.is_float)
        lo, hi, m = a.lo, a.hi, a.mag
        legal = {
            "neg": True, "abs": True, "tanh": True, "sigmoid": True, "relu": True, "erf": True,
            "exp": hi <= 5, "expm1": hi <= 5, "log": lo >= 0.05, "sqrt": lo >= 0.05, "log1p": lo >= -0.8,
            "softplus": hi <= 30, "sin": m <= 50, "cos": m <= 50, "sqr": m <= 100,
            "reciprocal": lo >= 0.2 or hi <= -0.2,
            "floor": a.exact, "ceil": a.exact, "round": a.exact, "sign": a.exact,
        }
        op = self.d.choice([k for k, ok in legal.items() if ok])
        f = {
            "neg": (-hi, -lo), "abs": (0.0 if lo <= 0 <= hi else min(abs(lo), abs(hi)), m),
            "tanh": (math.tanh(lo), math.tanh(hi)), "sigmoid": (0.0, 1.0), "relu": (max(lo, 0), max(hi, 0)),
            "erf": (-1.0, 1.0), "sin": (-1.0, 1.0), "cos": (-1.0, 1.0),
            "exp": (_exp(lo), _exp(min(hi, 5))), "expm1": (_expm1(lo), _expm1(min(hi, 5))),
            "log": (math.log(max(lo, 0.05)), math.log(max(hi, 0.05))),
            "sqrt": (math.sqrt(max(lo, 0)), math.sqrt(max(hi, 0))),
            "log1p": (math.log1p(max(lo, -0.8)), math.log1p(max(hi, -0.8))),
            "softplus": (0.0, math.log1p(_exp(min(hi, 30)))), "sqr": (0.0, m * m),
            "reciprocal": (min(1 / lo, 1 / hi), max(1 / lo, 1 / hi)) if lo * hi > 0 else (0, 0),
            "floor": (math.floor(lo), math.floor(hi)), "ceil": (math.ceil(lo), math.ceil(hi)),
            "round": (round(lo), round(hi)), "sign": (-1.0, 1.0),
        }[op]
        forms = {"neg": [f"-{a.name}", f"T.neg({a.name})"], "abs": [f"abs({a.name})", f"T.abs({a.name})"],
                 "exp": [f"T.exp({a.name})", f"{a.name}.exp()"], "log": [f"T.log({a.name})", f"{a.name}.log()"],
                 "sqrt": [f"T.sqrt({a.name})", f"{a.name}.sqrt()"]}.get(op, [f"T.{op}({a.name})"])
        exact = a.exact and op in ("neg", "abs", "floor", "ceil", "round", "sign")
        self.emit(self.d.choice(forms), a.shape, *f, exact, "unary:" + op)

    def op_binary(self) -> None:
        a = self.pick(lambda n: n.is_float)
        b = self.broadcast_partner(a, lambda n: n.dtype != "bool")
        shape = np.broadcast_shapes(a.shape, b.shape)
        ops = ["add", "sub", "mul", "maximum", "minimum"]
        if b.lo >= 0.25 or b.hi <= -0.25:
            ops.append("true_div")
        if a.lo >= 0.1 and a.hi <= 10 and b.mag <= 2:
            ops.append("pow")
        op = self.d.choice(ops)
        products = [a.lo * b.lo, a.lo * b.hi, a.hi * b.lo, a.hi * b.hi]
        if op == "true_div":
            inv = [1 / b.lo, 1 / b.hi]
            products = [x * y for x in (a.lo, a.hi) for y in inv]
        corners = [x ** e for x in (a.lo, a.hi) for e in (b.lo, b.hi)] if op == "pow" else [0.0]
        lo, hi = {
            "add": (a.lo + b.lo, a.hi + b.hi), "sub": (a.lo - b.hi, a.hi - b.lo),
            "mul": (min(products), max(products)), "true_div": (min(products), max(products)),
            "maximum": (max(a.lo, b.lo), max(a.hi, b.hi)), "minimum": (min(a.lo, b.lo), min(a.hi, b.hi)),
            "pow": (min(corners), max(corners)),
        }[op]
        if b is a and op in ("sub", "true_div"):     # x - x, x / x: constants (std of them has a NaN grad)
            lo = hi = 0.0 if op == "sub" else 1.0
        if max(abs(lo), abs(hi)) > FLOAT_BOUND:
            raise _Skip
        sym = {"add": "+", "sub": "-", "mul": "*", "true_div": "/", "pow": "**"}
        if op in sym and self.d.chance(0.7):
            expr = f"{a.name} {sym[op]} {b.name}"
        elif op in ("add", "mul", "maximum", "minimum") and self.d.chance(0.3):
            expr = f"T.{op}({b.name}, {a.name})"          # commuted
        else:
            expr = f"T.{op}({a.name}, {b.name})"
        exact = a.exact and b.exact and op in ("maximum", "minimum")
        self.emit(expr, shape, lo, hi, exact, "binary:" + op)

    def op_scalar_binary(self) -> None:
        a = self.pick(lambda n: n.is_float)
        c = self.d.choice([0.5, 2.0, -1.5, 3.0, 0.1])
        form = self.d.integer(0, 5)
        if form == 0:
            expr, lo, hi = f"{a.name} * {c}", min(a.lo * c, a.hi * c), max(a.lo * c, a.hi * c)
        elif form == 1:
            expr, lo, hi = f"{c} - {a.name}", c - a.hi, c - a.lo
        elif form == 2:
            expr, lo, hi = f"{a.name} + {c}", a.lo + c, a.hi + c
        elif form == 3 and (a.lo >= 0.25 or a.hi <= -0.25):
            expr = f"{c} / {a.name}"
            vals = [c / a.lo, c / a.hi]
            lo, hi = min(vals), max(vals)
        elif form == 4 and a.lo >= 0.1 and a.hi <= 10:
            e = self.d.choice([2, 3, 0.5, -1, 1.5])
            expr = f"{a.name} ** {e}"
            vals = [a.lo ** e, a.hi ** e]
            lo, hi = min(vals), max(vals)
        else:
            # a strong numpy scalar: float32 * np.float64 promotes to float64 (NEP 50)
            expr, lo, hi = f"{a.name} * np.float64({c})", min(a.lo * c, a.hi * c), max(a.lo * c, a.hi * c)
        if max(abs(lo), abs(hi)) > FLOAT_BOUND:
            raise _Skip
        self.emit(expr, a.shape, lo, hi, False, "scalar_binary")

    def op_compare_where(self) -> None:
        a = self.pick(lambda n: n.exact and n.dtype != "bool")
        b = self.broadcast_partner(a, lambda n: n.exact and n.dtype != "bool")
        cmp = self.d.choice(["lt", "le", "gt", "ge", "eq", "neq"])
        sym = {"lt": "<", "le": "<=", "gt": ">", "ge": ">="}
        expr = f"({a.name} {sym[cmp]} {b.name})" if cmp in sym and self.d.chance(0.5) else \
            f"T.{cmp}({a.name}, {b.name})"
        shape = np.broadcast_shapes(a.shape, b.shape)
        c = self.emit(expr, shape, 0, 1, True, "compare:" + cmp)
        if self.d.chance(0.25):
            other = self.broadcast_partner(c, lambda n: n.dtype == "bool")
            logic = self.d.choice(["T.and_({}, {})", "T.or_({}, {})", "T.xor({}, {})", "{} & {}", "{} | {}"])
            c = self.emit(logic.format(c.name, other.name), np.broadcast_shapes(c.shape, other.shape), 0, 1, True,
                          "logic")
            if self.d.chance(0.3):
                c = self.emit(f"~{c.name}", c.shape, 0, 1, True, "invert")
        if self.d.chance(0.8):
            x = self.broadcast_partner(c, lambda n: n.dtype != "bool")
            both = np.broadcast_shapes(c.shape, x.shape)
            y = self.broadcast_partner(Node("?", both, x.dtype, both), lambda n: n.dtype != "bool")
            shape = np.broadcast_shapes(c.shape, x.shape, y.shape)
            if int(np.prod(shape)) > self.max_elems:
                raise _Skip
            self.emit(f"T.where({c.name}, {x.name}, {y.name})", shape, min(x.lo, y.lo), max(x.hi, y.hi),
                      x.exact and y.exact, "where")

    def op_cast(self) -> None:
        a = self.pick()
        if a.is_float:
            targets = ["float32", "float64"] + (["int32", "int64"] if a.exact else [])
        else:
            targets = ["float32", "float64", "int32", "int64"]
        to = self.d.choice([t for t in targets if t != a.dtype])
        lo, hi = (a.lo, a.hi)
        if to in INTS and a.is_float:
            lo, hi = math.trunc(a.lo), math.trunc(a.hi)
        expr = f"T.cast({a.name}, {_dt(to)})" if self.d.chance(0.6) else f"{a.name}.astype({_dt(to)})"
        self.emit(expr, a.shape, lo, hi, a.exact or not a.is_float, "cast")

    def op_int_ops(self) -> None:
        a = self.pick(lambda n: n.dtype in INTS, fresh={"dtype": "int32"})
        b = self.broadcast_partner(a, lambda n: n.dtype in INTS)
        shape = np.broadcast_shapes(a.shape, b.shape)
        ops = ["add", "sub", "mul", "maximum", "minimum", "true_div_int"]
        if b.lo >= 1 or b.hi <= -1:
            ops += ["floor_div", "mod", "true_div"]
        op = self.d.choice(ops)
        prods = [a.lo * b.lo, a.lo * b.hi, a.hi * b.lo, a.hi * b.hi]
        if op == "true_div_int":
            if not (b.lo >= 1 or b.hi <= -1):
                raise _Skip
            op = "true_div"
        if op == "true_div":
            vals = [x / y for x in (a.lo, a.hi) for y in (b.lo, b.hi)]
            lo, hi, exact = min(vals), max(vals), False
        elif op == "floor_div":
            vals = [x / y for x in (a.lo, a.hi) for y in (b.lo, b.hi)]
            lo, hi, exact = math.floor(min(vals)) - 1, math.ceil(max(vals)) + 1, True
        elif op == "mod":
            lo, hi, exact = -b.mag, b.mag, True
        else:
            lo, hi = {"add": (a.lo + b.lo, a.hi + b.hi), "sub": (a.lo - b.hi, a.hi - b.lo),
                      "mul": (min(prods), max(prods)), "maximum": (max(a.lo, b.lo), max(a.hi, b.hi)),
                      "minimum": (min(a.lo, b.lo), min(a.hi, b.hi))}[op]
            exact = True
        if max(abs(lo), abs(hi)) > INT_BOUND:
            raise _Skip
        sym = {"add": "+", "sub": "-", "mul": "*", "true_div": "/", "floor_div": "//", "mod": "%"}
        expr = f"{a.name} {sym[op]} {b.name}" if op in sym and self.d.chance(0.7) else (
            f"T.int_div({a.name}, {b.name})" if op == "floor_div" else
            f"({a.name} % {b.name})" if op == "mod" else f"T.{op}({a.name}, {b.name})")
        self.emit(expr, shape, lo, hi, exact, "int:" + op)

    def op_clip(self) -> None:
        a = self.pick(lambda n: n.is_float)
        lo = self.d.choice([-1.0, -0.5, 0.0, 0.25])
        hi = lo + self.d.choice([0.5, 1.0, 2.0])
        self.emit(f"T.clip({a.name}, {lo}, {hi})", a.shape, max(min(a.lo, hi), lo), min(max(a.hi, lo), hi),
                  a.exact, "clip")

    def op_fill(self) -> None:
        a = self.pick(lambda n: n.dtype != "bool")
        form = self.d.integer(0, 2)
        if form == 0:
            self.emit(f"T.zeros_like({a.name})", a.shape, 0, 0, True, "fill:zeros_like")
        elif form == 1:
            self.emit(f"T.ones_like({a.name}) * {a.name}", a.shape, min(a.lo, 0), a.hi, a.exact, "fill:ones_like")
        else:
            self.emit(f"T.fill({a.name}, 2) + {a.name}", a.shape, a.lo + 2, a.hi + 2, a.exact and not a.is_float,
                      "fill:fill")

    def op_idiom(self) -> None:
        """Expressions the rewrite passes target (algebraic identities, stabilization, folding)."""
        a = self.pick(lambda n: n.is_float)
        v, lo, hi, m = a.name, a.lo, a.hi, a.mag
        sp = lambda z: math.log1p(_exp(-abs(z))) + max(z, 0)  # noqa: E731 - softplus
        table = [
            (f"T.log(1 + {v})", lo >= -0.8, (math.log1p(max(lo, -0.8)), math.log1p(hi)) if hi > -1 else (0, 0)),
            (f"T.log(T.sigmoid({v}))", m <= 50, (-sp(-lo), -sp(-hi))),
            (f"T.log(1 - T.sigmoid({v}))", m <= 50, (-sp(hi), -sp(lo))),
            (f"T.exp({v}) - 1", hi <= 5, (_expm1(lo), _expm1(min(hi, 5)))),
            (f"1 / (1 + T.exp(-{v}))", m <= 50, (0.0, 1.0)),
            (f"T.sigmoid({v}) * (1 - T.sigmoid({v}))", True, (0.0, 0.25)),
            (f"{v} * 1", True, (lo, hi)), (f"1 * {v} + 0", True, (lo, hi)), (f"{v} / 1", True, (lo, hi)),
            (f"{v} - 0 * {v}", True, (lo, hi)), (f"{v} - {v}", True, (0.0, 0.0)), (f"{v} * 0", True, (0.0, 0.0)),
            (f"{v} / {v}", lo >= 0.1 or hi <= -0.1, (1.0, 1.0)),
            (f"T.log(T.exp({v}))", hi <= 5, (lo, hi)), (f"T.exp(T.log({v}))", lo >= 0.05, (lo, hi)),
            (f"-(-{v})", True, (lo, hi)), (f"abs(abs({v}))", True, (0.0, m)),
            (f"({v} * 2.0) * 3.0", True, (6 * lo, 6 * hi)), (f"({v} + 1) + 2", True, (lo + 3, hi + 3)),
            (f"T.sqrt(T.sqr({v}))", m <= 100, (0.0, m)), (f"{v} ** 2", m <= 100, (0.0, m * m)),
            (f"{v} ** 0.5", lo >= 0.05, (math.sqrt(max(lo, 0)), math.sqrt(max(hi, 0)))),
            (f"{v} ** -1", lo >= 0.2, (1 / hi if hi else 0, 1 / lo if lo else 0)),
            (f"T.exp({v}) / T.exp({v}).sum(axis=-1, keepdims=True)", a.ndim >= 1 and hi <= 5, (0.0, 1.0)),
            (f"T.log(T.exp({v}).sum())", hi <= 5 and a.size > 0, (lo, hi + math.log(max(a.size, 1)))),
            (f"T.switch({v} > 0, {v}, 0)", a.exact, (max(lo, 0), max(hi, 0))),
            (f"T.maximum({v}, 0) - T.minimum({v}, 0)", True, (0.0, m)),
            (f"{v}.T.T", True, (lo, hi)), (f"T.sum({v}.T, axis=0)" if a.ndim == 2 else f"{v}.T",
                                            a.size * m <= FLOAT_BOUND, (-a.size * m, a.size * m)),
            (f"T.constant(np.float32(2.0)) * T.constant(np.float32(3.0)) * {v}", True, (6 * lo, 6 * hi)),
            (f"T.mean({v}) * 0 + {v}", a.size > 0, (lo, hi)),
            (f"T.tanh({v}) * 0.5 + T.tanh({v}) * 0.5", True, (math.tanh(lo), math.tanh(hi))),
            (f"T.exp({v}) * T.exp({v})", hi <= 2.5, (_exp(2 * lo), _exp(2 * min(hi, 2.5)))),
        ]
        if self.use_nn:
            table += [
                (f"T.log(nn.softmax({v}))", a.ndim >= 1 and m <= 20,
                 (-2 * m - math.log(max(a.shape[-1] if a.ndim else 1, 1)) - 1, 0.0)),
                (f"nn.softmax({v}).sum(axis=-1)", a.ndim >= 1 and m <= 50, (0.0, 2.0)),
            ]
        expr, ok, (out_lo, out_hi) = self.d.choice([t for t in table if t[1]])
        if max(abs(out_lo), abs(out_hi)) > FLOAT_BOUND:
            raise _Skip
        ns = {v: np.ones(a.shape), "T": _ShapeOnly, "np": np, "nn": _ShapeOnly}
        try:
            with np.errstate(all="ignore"):
                out_shape = np.shape(eval(expr, ns))  # noqa: S307 - our own text
        except Exception:  # noqa: BLE001
            raise _Skip from None
        self.emit(expr, out_shape, min(out_lo, out_hi), max(out_lo, out_hi), False, "idiom")

    def op_xent(self) -> None:
        """categorical_crossentropy(softmax(logits), int labels): the stabilizer's fused form."""
        a = self.pick(lambda n: n.is_float and n.ndim == 2 and n.mag <= 20 and n.size > 0,
                      fresh={"shape": (self.d.integer(1, 6), self.d.integer(2, 6))})
        labels = self.leaf((a.shape[0],), dtype="int64" if self.d.chance(0.5) else "int32", lo=0,
                           hi=a.shape[1] - 1, allow_shared=False)
        self.pool.remove(labels)
        form = self.d.choice(["nn.categorical_crossentropy(nn.softmax({a}), {y})",
                              "nn.softmax_cross_entropy({a}, {y})",
                              "-T.log(nn.softmax({a}))[T.arange({a}.shape[0]), {y}]"])
        bound = 2 * a.mag + math.log(a.shape[1]) + 1
        self.emit(form.format(a=a.name, y=labels.name), (a.shape[0],), 0.0, bound, False, "xent")

    # reductions ----------------------------------------------------------------------------------

    def _axes(self, a: Node) -> tuple[str, tuple]:
        """(the axis argument as source, the normalized axes)."""
        if a.ndim == 0 or self.d.chance(0.2):
            return "None", tuple(range(a.ndim))
        k = self.d.integer(1, a.ndim)
        axes = sorted(self.d.choice([c for c in _combinations(a.ndim, k)]))
        spelled = [ax - a.ndim if self.d.chance(0.3) else ax for ax in axes]
        if len(spelled) == 1 and self.d.chance(0.6):
            return str(spelled[0]), tuple(axes)
        return _tuple(spelled), tuple(axes)

    def op_reduce(self) -> None:
        a = self.pick(lambda n: n.size > 0)
        axis, axes = self._axes(a)
        keep = self.d.chance(0.35)
        n = int(np.prod([a.shape[i] for i in axes], dtype=np.int64))
        shape = tuple(1 if i in axes else s for i, s in enumerate(a.shape)) if keep else tuple(
            s for i, s in enumerate(a.shape) if i not in axes)
        ops = ["sum"] if a.dtype == "bool" else ["sum", "max", "min"]
        if a.dtype != "bool" and a.mag <= 2 and n <= 8:
            ops.append("prod")
        op = self.d.choice(ops)
        lo, hi = a.lo, a.hi
        if op == "sum":
            lo, hi = n * a.lo, n * a.hi
        elif op == "prod":
            m = a.mag ** n
            lo, hi = (a.lo ** n, a.hi ** n) if a.lo >= 0 else (-m, m)
        if max(abs(lo), abs(hi)) > (FLOAT_BOUND if a.is_float else INT_BOUND):
            raise _Skip
        kd = ", keepdims=True" if keep else ""
        if self.d.chance(0.5):
            expr = f"{a.name}.{op}(axis={axis}{kd})"
        else:
            expr = f"T.{op}({a.name}, axis={axis}{kd})"
        exact = (not a.is_float) or (a.exact and op in ("max", "min"))
        self.emit(expr, shape, lo, hi, exact, "reduce:" + op)

    def op_mean_var(self) -> None:
        a = self.pick(lambda n: n.dtype != "bool" and n.size > 0)
        axis, axes = self._axes(a)
        keep = self.d.chance(0.35)
        n = int(np.prod([a.shape[i] for i in axes], dtype=np.int64))
        shape = tuple(1 if i in axes else s for i, s in enumerate(a.shape)) if keep else tuple(
            s for i, s in enumerate(a.shape) if i not in axes)
        # std's gradient is inf * 0 = NaN at zero variance (constant data): a naive graph's honest
        # answer that the optimizer may fold away, so not a finding; keep std off constant nodes
        ops = ["mean", "var"] + (["std"] if n >= 2 and a.hi > a.lo else [])
        op = self.d.choice(ops)
        width = a.hi - a.lo
        lo, hi = {"mean": (a.lo, a.hi), "var": (0, width * width), "std": (0, width)}[op]
        kd = ", keepdims=True" if keep else ""
        expr = f"{a.name}.{op}(axis={axis}{kd})" if self.d.chance(0.5) else f"T.{op}({a.name}, axis={axis}{kd})"
        self.emit(expr, shape, lo, hi, False, "reduce:" + op)

    def op_argmax(self) -> None:
        a = self.pick(lambda n: n.dtype != "bool" and n.ndim >= 1)
        op = self.d.choice(["argmax", "argmin"])
        if self.d.chance(0.3):
            axis, shape = None, ()
            expr = f"T.{op}({a.name})"
        else:
            axis = self.d.integer(0, a.ndim - 1)
            keep = self.d.chance(0.3)
            shape = tuple(1 if i == axis else s for i, s in enumerate(a.shape)) if keep else tuple(
                s for i, s in enumerate(a.shape) if i != axis)
            expr = f"{a.name}.{op}(axis={axis}{', keepdims=True' if keep else ''})"
        # a decision on inexact values: an output only, never an input of further ops
        self.emit(expr, shape, 0, max(a.size - 1, 0), True, "reduce:" + op, terminal=not a.exact)

    # products ------------------------------------------------------------------------------------

    def op_dot(self) -> None:
        a = self.pick(lambda n: n.ndim in (1, 2) and n.dtype != "bool")
        k = a.shape[-1]
        form = self.d.choice(["vec", "mat"])
        if form == "vec":
            bshape = (k,)
        else:
            bshape = (k, self.d.integer(1, 5))
        b = None
        existing = [n for n in self.pool if n.shape == bshape and n.dtype != "bool" and n is not a]
        if existing and self.d.chance(0.4):
            b = self.d.choice(existing)
        if b is None:
            b = self.leaf(bshape, dtype=a.dtype if self.d.chance(0.8) else None)
        shape = a.shape[:-1] + bshape[1:]
        bound = k * a.mag * b.mag
        if bound > (FLOAT_BOUND if (a.is_float or b.is_float) else INT_BOUND):
            raise _Skip
        expr = self.d.choice([f"T.dot({a.name}, {b.name})", f"{a.name} @ {b.name}", f"{a.name}.dot({b.name})"])
        self.emit(expr, shape, -bound, bound, not (a.is_float or b.is_float), "dot")

    def op_outer(self) -> None:
        a = self.pick(lambda n: n.ndim == 1 and n.is_float)
        b = self.pick(lambda n: n.ndim == 1 and n.is_float)
        if a.size * b.size > self.max_elems:
            raise _Skip
        prods = [x * y for x in (a.lo, a.hi) for y in (b.lo, b.hi)]
        self.emit(f"T.outer({a.name}, {b.name})", (a.shape[0], b.shape[0]), min(prods), max(prods), False, "outer")

    # shapes --------------------------------------------------------------------------------------

    def op_reshape(self) -> None:
        a = self.pick(lambda n: n.size > 0)
        size = a.size
        ndim = self.d.integer(0 if size == 1 else 1, 4)
        shape = []
        rest = size
        for _ in range(ndim - 1):
            divisors = [d for d in range(1, rest + 1) if rest % d == 0]
            d = self.d.choice(divisors)
            shape.append(d)
            rest //= d
        if ndim:
            shape.append(rest)
        shape = tuple(shape)
        spelled = list(shape)
        if spelled and self.d.chance(0.4):
            spelled[self.d.integer(0, len(spelled) - 1)] = -1
        form = self.d.integer(0, 2)
        if form == 0:
            expr = f"{a.name}.reshape({_tuple(spelled)})"
        elif form == 1 or a.ndim == 0 or not spelled or shape[0] != a.shape[0]:
            expr = f"T.reshape({a.name}, {_tuple(spelled)})"
        else:  # a symbolic size taken from the input's own shape
            expr = f"{a.name}.reshape({_tuple([f'{a.name}.shape[0]'] + spelled[1:])})"
        self.emit(expr, shape, a.lo, a.hi, a.exact, "reshape")

    def op_flatten(self) -> None:
        a = self.pick(lambda n: n.ndim >= 1)
        nd = self.d.integer(1, a.ndim)
        shape = a.shape[:nd - 1] + (int(np.prod(a.shape[nd - 1:])),)
        expr = f"{a.name}.flatten({nd})" if self.d.chance(0.5) else f"T.flatten({a.name}, {nd})"
        self.emit(expr, shape, a.lo, a.hi, a.exact, "flatten")

    def op_dimshuffle(self) -> None:
        a = self.pick()
        axes = list(range(a.ndim))
        keep = [ax for ax in axes if not (a.tshape[ax] == 1 and self.d.chance(0.5))]
        order = [keep[i] for i in _permutation(self.d, len(keep))]
        for _ in range(self.d.integer(0, 2)):
            if len(order) < 5:
                order.insert(self.d.integer(0, len(order)), "x")
        if order == axes:
            order = ["x"] + order
        shape = tuple(1 if o == "x" else a.shape[o] for o in order)
        spelled = ", ".join(repr(o) if o == "x" else str(o) for o in order)
        form = self.d.integer(0, 3)
        if form == 0 and a.ndim >= 0 and order == ["x"] + axes:
            expr = f"T.shape_padleft({a.name})"
        elif form == 1 and order == axes + ["x"]:
            expr = f"T.shape_padright({a.name})"
        else:
            expr = f"{a.name}.dimshuffle({spelled})"
        self.emit(expr, shape, a.lo, a.hi, a.exact, "dimshuffle")

    def op_transpose(self) -> None:
        a = self.pick(lambda n: n.ndim >= 2)
        if self.d.chance(0.5):
            perm = list(reversed(range(a.ndim)))
            expr = f"{a.name}.T"
        else:
            perm = _permutation(self.d, a.ndim)
            expr = f"{a.name}.transpose({_tuple(perm)})" if self.d.chance(0.5) else \
                f"T.transpose({a.name}, {_tuple(perm)})"
        self.emit(expr, tuple(a.shape[p] for p in perm), a.lo, a.hi, a.exact, "transpose")

    def _basic_key(self, a: Node) -> tuple[str, tuple]:
        parts = []
        naxes = self.d.integer(1, a.ndim)
        for ax in range(naxes):
            n = a.shape[ax]
            if self.d.chance(0.25):
                i = self.d.integer(-n, n - 1)
                parts.append(str(i))
                continue
            start = self.d.choice([None, None, self.d.integer(-n - 1, n)])
            stop = self.d.choice([None, None, self.d.integer(-n - 1, n + 1)])
            step = self.d.choice([None, None, 1, 2, -1, -2, 3])
            text = ("" if start is None else str(start)) + ":" + ("" if stop is None else str(stop))
            if step is not None:
                text += ":" + str(step)
            parts.append(text)
        key = ", ".join(parts)
        shape = eval(f"np.empty({_tuple(a.shape)})[{key}]", {"np": np}).shape  # noqa: S307 - our own text
        return key, shape

    def op_slice(self) -> None:
        a = self.pick(lambda n: n.ndim >= 1 and n.size > 0)
        key, shape = self._basic_key(a)
        if 0 in shape and self.d.chance(0.8):
            raise _Skip
        # an empty result is an output only (reductions of it would be errors)
        self.emit(f"{a.name}[{key}]", shape, a.lo, a.hi, a.exact, "slice", terminal=0 in shape)

    def _index_array(self, n: int, count_shape: tuple, unique: bool = False) -> str:
        """Source of an int index array into an axis of length n (a constant list or an int input);
        ``unique``: no position twice (set_subtensor with repeats has no defined winner)."""
        rng = np.random.default_rng(self.d.integer(0, 10 ** 6))
        if unique:
            values = rng.permutation(n)[:count_shape[0]]
            values = np.where(rng.random(values.shape) < 0.3, values - n, values)
            return str(values.tolist())
        if self.d.chance(0.5):
            return str(rng.integers(-n, n, count_shape).tolist())
        leaf = self.leaf(count_shape, dtype=self.d.choice(INTS), lo=-n if self.d.chance(0.3) else 0, hi=n - 1,
                         allow_shared=False)
        self.pool.remove(leaf)            # an index: keep it out of arithmetic
        return leaf.name

    def op_advanced_index(self) -> None:
        a = self.pick(lambda n: n.ndim >= 1 and n.size > 0)
        k = 1 if a.ndim == 1 or self.d.chance(0.7) else 2
        count = self.d.integer(1, 5)
        if k == 1:
            idx = [self._index_array(a.shape[0], (count,))]
            lead = (count,)
        else:
            idx = [self._index_array(a.shape[0], (count,)), self._index_array(a.shape[1], (count,))]
            lead = (count,)
        shape = lead + a.shape[k:]
        if int(np.prod(shape)) > self.max_elems:
            raise _Skip
        self.emit(f"{a.name}[{', '.join(idx)}]", shape, a.lo, a.hi, a.exact, f"advanced_index:{k}")

    def op_set_subtensor(self) -> None:
        a = self.pick(lambda n: n.ndim >= 1 and n.size > 0 and n.is_float)
        advanced = self.d.chance(0.4)
        inc = self.d.chance(0.5)
        if advanced:
            count = self.d.integer(1, 4) if inc else self.d.integer(1, a.shape[0])
            key = self._index_array(a.shape[0], (count,), unique=not inc)
            sub = (count,) + a.shape[1:]
        else:
            key, sub = self._basic_key(a)
            if sub == a.shape and all(part.strip() in (":", "::", "::1", ":" + str(a.shape[i]))
                                      for i, part in enumerate(key.split(","))):
                raise _Skip   # x[:] is x itself, not an indexing expression (see test_fuzz)
            if 0 in sub:
                raise _Skip
        value_shape = tuple(1 if self.d.chance(0.3) else s for s in sub)
        if sub and self.d.chance(0.3):
            value_shape = value_shape[1:]
        v = self.leaf(value_shape, dtype=a.dtype, static=value_shape if self.d.chance(0.5) else None)
        fn = "inc_subtensor" if inc else "set_subtensor"
        lo, hi = (min(a.lo, v.lo), max(a.hi, v.hi))
        if inc:
            reps = count if advanced else 1
            lo, hi = a.lo + reps * min(v.lo, 0), a.hi + reps * max(v.hi, 0)
        self.emit(f"T.{fn}({a.name}[{key}], {v.name})", a.shape, lo, hi, False, fn + (":adv" if advanced else ""))

    def op_concatenate(self) -> None:
        a = self.pick(lambda n: n.ndim >= 1)
        axis = self.d.integer(0, a.ndim - 1)
        parts = [a]
        for _ in range(self.d.integer(1, 2)):
            shape = list(a.shape)
            shape[axis] = self.d.integer(1, 3)
            same = [n for n in self.pool if n.ndim == a.ndim and n.dtype == a.dtype and all(
                s == t for i, (s, t) in enumerate(zip(n.shape, a.shape)) if i != axis)]
            if same and self.d.chance(0.4):
                parts.append(self.d.choice(same))
            else:
                parts.append(self.leaf(tuple(shape), dtype=a.dtype))
        shape = list(a.shape)
        shape[axis] = sum(p.shape[axis] for p in parts)
        if int(np.prod(shape)) > self.max_elems:
            raise _Skip
        spelled = axis - a.ndim if self.d.chance(0.3) else axis
        self.emit(f"T.concatenate([{', '.join(p.name for p in parts)}], axis={spelled})", tuple(shape),
                  min(p.lo for p in parts), max(p.hi for p in parts), all(p.exact for p in parts), "concatenate")

    def op_stack(self) -> None:
        a = self.pick(lambda n: n.size * 2 <= self.max_elems)
        others = [n for n in self.pool if n.shape == a.shape and n.dtype == a.dtype and n is not a]
        b = self.d.choice(others) if others and self.d.chance(0.5) else self.leaf(a.shape, dtype=a.dtype)
        axis = self.d.integer(0, a.ndim)
        shape = list(a.shape)
        shape.insert(axis, 2)
        self.emit(f"T.stack([{a.name}, {b.name}], axis={axis})", tuple(shape), min(a.lo, b.lo), max(a.hi, b.hi),
                  a.exact and b.exact, "stack")

    # deep-learning ops ---------------------------------------------------------------------------

    def op_softmax(self) -> None:
        a = self.pick(lambda n: n.is_float and n.ndim >= 1 and n.mag <= 50)
        axis = self.d.integer(-a.ndim, a.ndim - 1)
        if self.d.chance(0.5):
            self.emit(f"nn.softmax({a.name}, axis={axis})", a.shape, 0, 1, False, "softmax")
        else:
            self.emit(f"nn.log_softmax({a.name}, axis={axis})", a.shape, -2 * a.mag - math.log(a.shape[axis]) - 1,
                      0, False, "log_softmax")

    def _image(self) -> Node:
        def ok(n: Node) -> bool:
            return n.ndim == 4 and n.is_float and n.shape[2] >= 3 and n.shape[3] >= 3 and n.mag <= 100 and \
                n.size <= NN_ELEMS

        fresh = {"shape": (self.d.integer(1, 2), self.d.integer(1, 3), self.d.integer(3, 7), self.d.integer(3, 7)),
                 "dtype": "float32" if self.d.chance(0.85) else "float64"}
        return self.pick(ok, fresh=fresh)

    def op_conv2d(self) -> None:
        x = self._image()
        n, c, h, w = x.shape
        groups = self.d.choice([g for g in (1, 2, 3) if c % g == 0])
        f = groups * self.d.integer(1, 2)
        kh, kw = self.d.integer(1, 3), self.d.integer(1, 3)
        stride = self.d.choice([1, 1, 2, (1, 2)])
        dilation = self.d.choice([1, 1, 2])
        padding = self.d.choice(["valid", "full", "same", 0, 1, (1, 0)])
        st, dl = _pair(stride), _pair(dilation)
        keff = [dl[0] * (kh - 1) + 1, dl[1] * (kw - 1) + 1]
        if padding == "same" and (st != (1, 1) or keff[0] % 2 == 0 or keff[1] % 2 == 0):
            padding = "valid"
        pads = {"valid": (0, 0), "full": (keff[0] - 1, keff[1] - 1),
                "same": ((keff[0] - 1) // 2, (keff[1] - 1) // 2)}.get(padding) if isinstance(padding, str) else _pair(
            padding)
        out = [(size + 2 * p - k) // s + 1 for size, p, k, s in zip((h, w), pads, keff, st)]
        if min(out) < 1 or n * f * out[0] * out[1] > min(self.max_elems, NN_ELEMS):
            raise _Skip
        W = self.leaf((f, c // groups, kh, kw), dtype=x.dtype, lo=-1.0, hi=1.0,
                      static=(f, c // groups, kh, kw) if self.d.chance(0.7) else None)
        args = [x.name, W.name]
        if stride != 1:
            args.append(f"stride={stride!r}")
        if padding != "valid" or self.d.chance(0.2):
            args.append(f"padding={padding!r}")
        if dilation != 1:
            args.append(f"dilation={dilation}")
        if groups != 1:
            args.append(f"groups={groups}")
        if self.d.chance(0.3):
            args.append("filter_flip=True")
        bound = (c // groups) * kh * kw * x.mag
        self.emit(f"nn.conv2d({', '.join(args)})", (n, f, *out), -bound, bound, False, "conv2d")

    def op_pool2d(self) -> None:
        x = self.pick(lambda n: n.ndim >= 2 and n.is_float and n.shape[-1] >= 2 and n.shape[-2] >= 2 and
                      n.size <= NN_ELEMS,
                      fresh={"shape": (1, self.d.integer(1, 3), self.d.integer(2, 7), self.d.integer(2, 7))})
        ws = (self.d.integer(1, 3), self.d.integer(1, 3))
        stride = self.d.choice([None, None, 1, 2, (1, 2)])
        st = ws if stride is None else _pair(stride)
        padding = self.d.choice([0, 0, 1, (1, 0)])
        pad = _pair(padding)
        if pad[0] >= ws[0] or pad[1] >= ws[1]:
            padding, pad = 0, (0, 0)
        mode = self.d.choice(["max", "max", "avg", "average_exc_pad", "sum", "l2"])
        ignore_border = self.d.chance(0.7)
        from engine.ops.pool import pool_out_len

        out = [pool_out_len(x.shape[-2 + i], ws[i], st[i], pad[i], ignore_border) for i in range(2)]
        if min(out) < 1:
            raise _Skip
        args = [x.name, f"ws={ws}"]
        if stride is not None:
            args.append(f"stride={stride!r}")
        if padding != 0:
            args.append(f"padding={padding!r}")
        if mode != "max" or self.d.chance(0.3):
            args.append(f"mode={mode!r}")
        if not ignore_border:
            args.append("ignore_border=False")
        k = ws[0] * ws[1]
        lo, hi = {"max": (x.lo, x.hi), "avg": (min(x.lo, 0), max(x.hi, 0)),
                  "average_exc_pad": (x.lo, x.hi), "sum": (k * min(x.lo, 0), k * max(x.hi, 0)),
                  "l2": (0, math.sqrt(k) * x.mag)}[mode]
        if mode == "max" and pad != (0, 0):
            lo = x.lo
        self.emit(f"nn.pool2d({', '.join(args)})", x.shape[:-2] + tuple(out), lo, hi,
                  x.exact and mode == "max", "pool2d:" + mode)

    def op_lcn(self) -> None:
        x = self._image()
        size = self.d.choice([3, 5, 9])
        mode = self.d.choice(["both", "both", "subtractive", "divisive"])
        args = [x.name]
        if size != 9 or self.d.chance(0.5):
            args.append(f"size={size}")
        if mode != "both":
            args.append(f"mode={mode!r}")
        if self.d.chance(0.2):
            args.append("across_channels=False")
        bound = 2 * x.mag + 1 if mode == "subtractive" else max(50.0, 2 * x.mag + 1)
        self.emit(f"nn.lcn({', '.join(args)})", x.shape, -bound, bound, False, "lcn:" + mode)


def _exp(x: float) -> float:
    """exp that saturates instead of raising (the interval tables are evaluated for every op)."""
    return math.exp(min(x, 700.0))


def _expm1(x: float) -> float:
    return math.expm1(min(x, 700.0))


class _ShapeOnly:
    """Stands in for ``T`` / ``nn`` when working out an idiom's output shape with numpy."""

    log = exp = sqrt = sqr = sigmoid = tanh = staticmethod(lambda x: np.asarray(x))
    softmax = staticmethod(lambda x, axis=-1: np.asarray(x))
    switch = staticmethod(lambda c, a, b: np.broadcast_arrays(c, a, b)[0])
    maximum = minimum = staticmethod(lambda a, b: np.broadcast_arrays(a, b)[0])
    mean = staticmethod(lambda x: np.mean(x))
    sum = staticmethod(lambda x, axis=None, keepdims=False: np.sum(x, axis=axis, keepdims=keepdims))
    constant = staticmethod(lambda x: np.asarray(x))


class _Skip(Exception):
    """This op does not fit the current graph; draw another."""


def _pair(v: Any) -> tuple:
    return tuple(v) if isinstance(v, (tuple, list)) else (v, v)


def _combinations(n: int, k: int) -> list:
    from itertools import combinations

    return list(combinations(range(n), k))


def _permutation(d: Draw, n: int) -> list:
    items = list(range(n))
    out = []
    while items:
        out.append(items.pop(d.integer(0, len(items) - 1)))
    return out


def generate(draw: Draw, max_ops: int = 10, use_nn: bool = True, grads: bool = True) -> Program:
    """One random program (raises ``GeneratorError`` when Kiln refuses a line the generator
    believes legal)."""
    return GraphGen(draw, max_ops=max_ops, use_nn=use_nn, grads=grads).generate()
