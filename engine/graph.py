"""The graph: ``Variable``, ``Constant``, ``SharedVariable``, ``Apply`` and ``Op``.

A graph is a bipartite DAG: variables are produced by at most one ``Apply`` node (their
``owner``), and an ``Apply`` applies an ``Op`` to input variables. Ops are identified by their
class and ``props`` (hashable attributes), so two ops with equal props are interchangeable.
Every variable and node records the user's source line where it was created.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np

from engine.errors import KilnError, KilnTypeError, user_site, with_site
from engine.types import TensorType, as_dtype

_ids = itertools.count()


class Variable:
    """A symbolic tensor: a type, an optional owner node and a name."""

    __array_priority__ = 1000  # numpy scalars on the left must defer to our operators

    def __init__(self, type: TensorType, owner: Apply | None = None, index: int = 0,
                 name: str | None = None, site: str | None = None) -> None:
        self.type = type
        self.owner = owner
        self.index = index
        self.name = name
        self.site = site or (owner.site if owner is not None else user_site())
        self.id = next(_ids)

    # -- type shortcuts ---------------------------------------------------------------------
    @property
    def dtype(self) -> str:
        return self.type.dtype

    @property
    def ndim(self) -> int:
        return self.type.ndim

    @property
    def static_shape(self) -> tuple:
        return self.type.shape

    @property
    def broadcastable(self) -> tuple:
        return self.type.broadcastable

    def __repr__(self) -> str:
        label = self.name or (f"{self.owner.op}.out{self.index}" if self.owner else "var")
        return f"<{label}: {self.type}>"

    def __str__(self) -> str:
        return self.name or repr(self)

    # Identity semantics so that variables work in sets and as dict keys (DESIGN: `==` keeps
    # Python identity; use T.eq / T.neq for elementwise comparison).
    __eq__ = object.__eq__
    __ne__ = object.__ne__
    __hash__ = object.__hash__

    def __bool__(self) -> bool:
        raise KilnTypeError(
            f"the truth value of symbolic variable {self!r} (created at {self.site}) is not known "
            f"when the graph is built; use T.switch / T.where for data-dependent choices"
        )

    def __iter__(self):
        raise KilnTypeError(f"symbolic variable {self!r} is not iterable; index it explicitly")

    def __len__(self) -> int:
        raise KilnTypeError(f"len() of symbolic variable {self!r} is unknown; use x.shape[0]")

    def clone(self) -> Variable:
        return type(self)(self.type, None, 0, self.name, self.site)

    def eval(self, inputs_to_values: dict | None = None, backend: str | None = None) -> np.ndarray:
        """Compile and run the graph computing this variable, e.g. ``y.eval({x: value})``."""
        from engine.function import function

        inputs_to_values = inputs_to_values or {}
        fn = function(list(inputs_to_values), self, backend=backend, on_unused_input="ignore")
        return fn(*inputs_to_values.values())


class Constant(Variable):
    """A value baked into the graph. Python scalars are *weak* (they take the other dtype)."""

    def __init__(self, value: Any, dtype: str | None = None, name: str | None = None,
                 weak: bool = False, site: str | None = None) -> None:
        with np.errstate(over="ignore"):  # a weak 1e300 is inf as float32, but see python_value
            array = np.asarray(value, dtype=dtype)
        array = array.astype(as_dtype(array.dtype), copy=False)
        array.setflags(write=False)
        super().__init__(TensorType(array.dtype.name, array.shape), name=name, site=site)
        self.value = array
        self.weak = weak
        #: the Python scalar of a weak constant: builders that settle its dtype start from it, so
        #: ``float64_x * 0.1`` uses 0.1 itself, not 0.1 rounded to floatX first
        self.python_value = value if weak else None

    def __repr__(self) -> str:
        if self.value.size <= 4:
            # numpy's str is the shortest text that round-trips in the value's own dtype
            # (0.1, not float32(0.1) widened to 0.10000000149011612)
            text = str(self.value[()]) if self.value.ndim == 0 else np.array2string(self.value, separator=", ")
            return f"Constant{{{text}}}:{self.type.dtype}"
        return f"Constant{{...}}: {self.type}"

    def clone(self) -> Constant:
        return self

    def signature(self) -> tuple:
        """Hashable content identity, used by CSE and constant folding."""
        return (self.type, self.value.tobytes(), self.weak)


class SharedVariable(Variable):
    """A variable with a value that persists between calls of compiled functions."""

    def __init__(self, value: np.ndarray, type: TensorType, name: str | None = None,
                 site: str | None = None) -> None:
        super().__init__(type, name=name, site=site)
        self._value = value
        self.default_update: Variable | None = None

    def get_value(self, borrow: bool = False) -> np.ndarray:
        return self.value if borrow else self.value.copy()

    def set_value(self, value: Any, borrow: bool = False) -> None:
        array = self.type.filter(value, self.name or "?", site=self.site, kind="shared variable")
        # without borrow the variable owns a private copy: later changes to `value` do not leak in
        self._value = array if borrow else np.array(array, order="C", copy=True)

    def clone(self) -> SharedVariable:
        return self

    @property
    def value(self) -> np.ndarray:
        if hasattr(self._value, "to_host"):  # left on a device by a compiled function: read it back
            return self._value.to_host()
        return self._value


class Apply:
    """One application of an ``Op`` to input variables, producing output variables."""

    def __init__(self, op: Op, inputs: Sequence[Variable], output_types: Sequence[TensorType],
                 site: str | None = None) -> None:
        self.op = op
        self.inputs = list(inputs)
        self.site = site or user_site()
        self.outputs = [Variable(t, self, i, site=self.site) for i, t in enumerate(output_types)]

    @property
    def out(self) -> Variable:
        return self.outputs[0]

    def __repr__(self) -> str:
        return f"Apply({self.op}, inputs={self.inputs})"

    def clone_with_new_inputs(self, inputs: Sequence[Variable]) -> Apply:
        node = self.op.make_node(*inputs)
        node.site = self.site
        for out in node.outputs:
            out.site = self.site
        return node


class Op:
    """An operation. Subclasses set ``props`` and implement ``make_node`` and ``vjp``.

    Backends never live here: the numpy reference and the code generators register per-op
    rules in tables of their own.
    """

    props: tuple[str, ...] = ()
    #: number of outputs; make_node must produce exactly this many
    n_outputs: int = 1

    def _prop_values(self) -> tuple:
        return tuple(getattr(self, p) for p in self.props)

    def __eq__(self, other: object) -> bool:
        return type(self) is type(other) and self._prop_values() == other._prop_values()

    def __hash__(self) -> int:
        return hash((type(self).__name__, self._prop_values()))

    def __str__(self) -> str:
        values = self._prop_values()
        if not values:
            return type(self).__name__
        inner = ", ".join(_short(v) for v in values)
        return f"{type(self).__name__}{{{inner}}}"

    __repr__ = __str__

    def make_node(self, *inputs: Variable) -> Apply:  # pragma: no cover - abstract
        raise NotImplementedError

    def vjp(self, node: Apply, output_grads: list[Variable | None]) -> list[Variable | None]:
        """Input gradients given output gradients (None = zero). Builds graph."""
        raise NotImplementedError(f"{self} has no gradient (node created at {node.site})")

    def __call__(self, *inputs: Any) -> Any:
        try:
            node = self.make_node(*[as_variable(x) for x in inputs])
        except KilnError as error:
            # name the user's line that built the failing expression
            raise with_site(error, user_site()) from error.__cause__
        return node.outputs[0] if len(node.outputs) == 1 else node.outputs


def _short(value: Any) -> str:
    if isinstance(value, tuple):
        return "(" + ", ".join(_short(v) for v in value) + ("," if len(value) == 1 else "") + ")"
    return str(value)


def as_variable(value: Any, dtype: str | None = None) -> Variable:
    """A Variable for ``value``: variables pass through, everything else becomes a Constant."""
    if isinstance(value, Variable):
        return value
    weak = isinstance(value, (bool, int, float)) and not isinstance(value, np.generic)
    if weak and dtype is None:
        from engine.config import config

        dtype = config.floatX if isinstance(value, float) else ("bool" if isinstance(value, bool) else "int64")
    return Constant(value, dtype=dtype, weak=weak)


# -- traversal ------------------------------------------------------------------------------

def toposort(outputs: Iterable[Variable]) -> list[Apply]:
    """Apply nodes reachable from ``outputs``, each after the producers of its inputs."""
    order: list[Apply] = []
    done: set[int] = set()
    stack: list[tuple[Apply, bool]] = [(v.owner, False) for v in reversed(list(outputs)) if v.owner]
    while stack:
        node, expanded = stack.pop()
        if id(node) in done:
            continue
        if expanded:
            done.add(id(node))
            order.append(node)
            continue
        stack.append((node, True))
        for inp in reversed(node.inputs):
            if inp.owner is not None and id(inp.owner) not in done:
                stack.append((inp.owner, False))
    return order


def graph_inputs(outputs: Iterable[Variable]) -> list[Variable]:
    """Ownerless variables (inputs, shared variables, constants) the outputs depend on."""
    outputs = list(outputs)
    seen: dict[int, Variable] = {}
    for v in outputs:
        if v.owner is None:
            seen.setdefault(id(v), v)
    for node in toposort(outputs):
        for inp in node.inputs:
            if inp.owner is None:
                seen.setdefault(id(inp), inp)
    return list(seen.values())


def ancestors(outputs: Iterable[Variable], blockers: Iterable[Variable] = ()) -> set[int]:
    """ids of every variable the outputs depend on, not looking behind ``blockers``."""
    blocked = {id(b) for b in blockers}
    seen: set[int] = set()
    stack = list(outputs)
    while stack:
        v = stack.pop()
        if id(v) in seen:
            continue
        seen.add(id(v))
        if v.owner is not None and id(v) not in blocked:
            stack.extend(v.owner.inputs)
    return seen


def clone_replace(outputs: Sequence[Variable], replace: dict[Variable, Variable] | None = None,
                  rebuild: Callable[[Apply, list[Variable]], Apply] | None = None) -> list[Variable]:
    """Copies of ``outputs`` with variables substituted by ``replace`` (types re-inferred)."""
    memo: dict[int, Variable] = {id(k): v for k, v in (replace or {}).items()}
    for node in toposort(outputs):
        if any(id(o) in memo for o in node.outputs):
            continue
        new_inputs = [memo.get(id(i), i) for i in node.inputs]
        if all(a is b for a, b in zip(new_inputs, node.inputs)):
            continue
        new_node = rebuild(node, new_inputs) if rebuild else node.clone_with_new_inputs(new_inputs)
        for old, new in zip(node.outputs, new_node.outputs):
            if old.name and not new.name:
                new.name = old.name
            memo[id(old)] = new
    return [memo.get(id(v), v) for v in outputs]
