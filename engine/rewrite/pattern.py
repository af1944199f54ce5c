"""The one rewrite mechanism: patterns matched against nodes, each with an action.

    rule = Rule("mul_one", Pat.elemwise("mul", Pat(name="x"), Pat.const(1), commutative=True),
                lambda m: same_as(m, m.x))

* ``Pat`` matches a variable: its producer's op class (``op``), op props (``props`` dict, or a
  predicate on the op), the inputs (sub-patterns, exact arity; ``commutative`` also tries the
  two inputs swapped), a constant's value (``const`` predicate on a numpy array; matches
  ``Constant`` leaves only), any other predicate (``where``), and a capture ``name`` (a name
  used twice must capture the same variable: ``sub(x, x)``).
* A ``Rule`` has a name, a pattern and an action ``action(m) -> Variable | list | None``: ``m``
  is a ``Match`` (``m.node``, ``m.ctx``, captures as attributes ``m.x``). ``None`` means "no
  change"; a list replaces every output of a multi-output node.
* ``PatternMatcher(rules)`` indexes the rules by the root's op class (and scalar op) and tries
  them in order; ``graph_rewrite(outputs, matcher)`` applies it to a fixed point and returns
  new outputs. It is functional: nodes are rebuilt, never mutated, so the user's graph stays
  reusable. Each sweep goes bottom-up, memoized by node: a node's inputs are final before the
  node is matched; the nodes a rule builds are rewritten in turn; identical nodes (same op,
  same inputs; constants by value) are merged (CSE). Sweeps repeat while rules fire (client
  counts refresh), bounded by ``max_iterations`` sweeps and ``ctx.budget`` rule firings.

``KILN_DEBUG=rewrites`` prints every rule that fired with the node's creation site; the nodes
a rule builds take the matched node's ``site``, so later errors point at the user's line.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np

from engine.debug import debug_enabled, debug_log
from engine.graph import Apply, Constant, Op, Variable, toposort


class Pat:
    """A pattern over a variable (see the module docstring)."""

    def __init__(self, op: type | tuple | None = None, inputs: Sequence[Pat] | None = None,
                 name: str | None = None, props: dict | Callable | None = None,
                 const: Callable[[np.ndarray], bool] | None = None,
                 where: Callable[[Variable], bool] | None = None, commutative: bool = False,
                 index: int | None = None, scalar_keys: tuple | None = None) -> None:
        self.scalar_keys = scalar_keys  # Elemwise scalar op names (for the matcher's index)
        self.op = op if op is None or isinstance(op, tuple) else (op,)
        self.inputs = tuple(inputs) if inputs is not None else None
        self.name = name
        self.props = props
        self.const = const
        self.where = where
        self.commutative = commutative
        self.index = index

    # -- convenience constructors ------------------------------------------------------------
    @staticmethod
    def var(name: str | None = None, where: Callable | None = None) -> Pat:
        """Any variable."""
        return Pat(name=name, where=where)

    @staticmethod
    def const(value: Any = None, name: str | None = None, where: Callable | None = None) -> Pat:
        """A ``Constant``: every element equal to ``value`` (or ``where(array)`` true)."""
        if value is None and where is None:
            return Pat(name=name, const=lambda a: True)
        if where is not None:
            return Pat(name=name, const=where)
        return Pat(name=name, const=lambda a: a.size > 0 and bool(np.all(a == value)))

    @staticmethod
    def elemwise(scalar_op: str | tuple, *inputs: Pat, name: str | None = None, commutative: bool = False,
           where: Callable | None = None) -> Pat:
        """An ``Elemwise`` of the scalar op(s) ``scalar_op`` (no ``cast_to``)."""
        from engine.ops.elemwise import Elemwise

        names = (scalar_op,) if isinstance(scalar_op, str) else tuple(scalar_op)
        return Pat(Elemwise, inputs or None, name,
                   props=lambda op: op.scalar_op in names and (op.cast_to is None or op.scalar_op == "cast"),
                   commutative=commutative, where=where, scalar_keys=names)

    # -- matching ----------------------------------------------------------------------------
    def match(self, var: Variable, caps: dict) -> bool:
        if self.const is not None:
            if not isinstance(var, Constant) or not self.const(var.value):
                return False
        if self.op is not None:
            node = var.owner
            if node is None or not isinstance(node.op, self.op):
                return False
            if self.index is not None and var.index != self.index:
                return False
            if not self._match_node(node, caps):
                return False
        if self.where is not None and not self.where(var):
            return False
        return self._capture(var, caps)

    def match_node(self, node: Apply, caps: dict) -> bool:
        """Match the root pattern against a node (captures its first output under ``name``)."""
        if self.op is not None and not isinstance(node.op, self.op):
            return False
        if not self._match_node(node, caps):
            return False
        if self.where is not None and not self.where(node.outputs[0]):
            return False
        return self._capture(node.outputs[0], caps)

    def _capture(self, var: Variable, caps: dict) -> bool:
        if self.name is None:
            return True
        if self.name in caps:
            return caps[self.name] is var
        caps[self.name] = var
        return True

    def _match_node(self, node: Apply, caps: dict) -> bool:
        if self.props is not None:
            if callable(self.props):
                if not self.props(node.op):
                    return False
            elif any(getattr(node.op, k, _MISSING) != v for k, v in self.props.items()):
                return False
        if self.inputs is None:
            return True
        if len(self.inputs) != len(node.inputs):
            return False
        orders = [self.inputs]
        if self.commutative and len(self.inputs) == 2:
            orders.append(self.inputs[::-1])
        for order in orders:
            trial = dict(caps)
            if all(p.match(v, trial) for p, v in zip(order, node.inputs)):
                caps.clear()
                caps.update(trial)
                return True
        return False

    def keys(self) -> list[tuple]:
        """Index keys of a root pattern: (op class, scalar op or None)."""
        if self.op is None:
            return [(None, None)]
        return [(cls, s) for cls in self.op for s in (self.scalar_keys or (None,))]


_MISSING = object()


class Match:
    """What an action sees: the node, the rewrite context, and the captures as attributes."""

    def __init__(self, node: Apply, caps: dict, ctx: RewriteContext) -> None:
        self.node = node
        self.ctx = ctx
        self.caps = caps

    @property
    def out(self) -> Variable:
        return self.node.outputs[0]

    def __getattr__(self, name: str) -> Variable:
        try:
            return self.__dict__["caps"][name]
        except KeyError:
            raise AttributeError(name) from None


class Rule:
    def __init__(self, name: str, pat: Pat, action: Callable[[Match], Any]) -> None:
        self.name = name
        self.pat = pat
        self.action = action

    def __repr__(self) -> str:
        return f"Rule({self.name})"


class PatternMatcher:
    """A table of rules, tried in order on each node (indexed by the root's op)."""

    def __init__(self, rules: Iterable[Rule]) -> None:
        self.rules = list(rules)
        names = [r.name for r in self.rules]
        duplicated = {n for n in names if names.count(n) > 1}
        if duplicated:
            raise ValueError(f"duplicate rule names: {sorted(duplicated)}")
        self._by_key: dict[tuple, list[tuple[int, Rule]]] = {}
        for order, rule in enumerate(self.rules):
            for key in rule.pat.keys():
                self._by_key.setdefault(key, []).append((order, rule))
        self._cache: dict[tuple, list[Rule]] = {}

    def __add__(self, other: PatternMatcher) -> PatternMatcher:
        return PatternMatcher(self.rules + other.rules)

    def candidates(self, op: Op) -> list[Rule]:
        scalar = getattr(op, "scalar_op", None)
        key = (type(op), scalar)
        found = self._cache.get(key)
        if found is None:
            hits: dict[int, Rule] = {}
            for cls in (*type(op).__mro__, None):
                for s in ({scalar, None} if scalar is not None else {None}):
                    for order, rule in self._by_key.get((cls, s), ()):
                        hits[order] = rule
            found = self._cache[key] = [hits[k] for k in sorted(hits)]
        return found

    def rewrite(self, node: Apply, ctx: RewriteContext) -> tuple[Rule, list] | None:
        """The first rule that fires on ``node`` and its replacement (one variable per output).
        The nodes the action built take ``node.site``."""
        from engine.graph import _ids

        for rule in self.candidates(node.op):
            caps: dict = {}
            if not rule.pat.match_node(node, caps):
                continue
            marker = next(_ids)  # variables the action builds get larger ids
            result = rule.action(Match(node, caps, ctx))
            if result is None:
                continue
            result = list(result) if isinstance(result, (list, tuple)) else [result]
            if len(result) != len(node.outputs):
                raise ValueError(f"rule {rule.name} returned {len(result)} variables for {len(node.outputs)} outputs")
            if any(r is not o and not compatible(o, r) for o, r in zip(node.outputs, result)):
                debug_log("rewrites", f"rule {rule.name} at {node.site} skipped: the replacement's type "
                                      f"{[str(r.type) for r in result]} does not fit "
                                      f"{[str(o.type) for o in node.outputs]}")
                continue
            if all(r is o for r, o in zip(result, node.outputs)):
                continue
            if _refers_to(result, node, marker):
                continue  # the replacement uses the node it replaces: would never converge
            _adopt_site(result, node.site, marker)
            return rule, result
        return None


def compatible(old: Variable, new: Variable) -> bool:
    """A replacement must keep dtype and rank and be at least as specific in static shape."""
    return (old.dtype == new.dtype and old.ndim == new.ndim
            and all(o is None or o == n for o, n in zip(old.type.shape, new.type.shape)))


class RewriteContext:
    """State shared by the passes of one ``optimize`` call: canonical constants, the symbolic
    shape cache, client counts of the current sweep, and the rule-firing budget."""

    def __init__(self, budget: int = 100_000) -> None:
        self.budget = budget
        self.fired: dict[str, int] = {}
        self.constants: dict[tuple, Constant] = {}
        self.shape_cache: dict[int, tuple] = {}
        self._clients: dict[int, int] = {}
        self._origin: dict[int, Variable] = {}
        self.outputs: set[int] = set()
        #: input dims the ops force (see ``rewrite._sharpen_inputs``): (input, axis, size, op
        #: name, site), checked by ``Function`` before anything runs
        self.requirements: list[tuple] = []

    # -- client counts (of the graph at the start of the current sweep) ----------------------
    def begin_sweep(self, outputs: Sequence[Variable]) -> None:
        counts: dict[int, int] = {}
        for node in toposort(outputs):
            for key in {id(inp) for inp in node.inputs}:  # distinct consumers: x * x has one
                counts[key] = counts.get(key, 0) + 1
        for out in outputs:
            counts[id(out)] = counts.get(id(out), 0) + 1
        self._clients = counts
        self._origin = {}
        self.outputs = {id(o) for o in outputs}
        self._sweep_vars = list(outputs)  # keeps ids valid

    def clients(self, var: Variable) -> int | None:
        """How many nodes (plus graph outputs) consume ``var``; None when unknown (a variable a
        rule built during this sweep)."""
        origin = self._origin.get(id(var), var)
        return self._clients.get(id(origin))

    def is_output(self, var: Variable) -> bool:
        return id(self._origin.get(id(var), var)) in self.outputs

    def single_client(self, var: Variable) -> bool:
        return self.clients(var) == 1 and not self.is_output(var)

    def set_origin(self, new: Variable, old: Variable) -> None:
        if new is not old:
            self._origin[id(new)] = self._origin.get(id(old), old)

    # -- symbolic shapes ---------------------------------------------------------------------
    def shape(self, var: Variable) -> tuple:
        from engine.rewrite.shapes import symbolic_shape

        return symbolic_shape(var, self.shape_cache)

    def same_shape(self, a: Variable, b: Variable) -> bool:
        return a is b or (a.ndim == b.ndim and self.shape(a) == self.shape(b))

    # -- constants ---------------------------------------------------------------------------
    def canonical_constant(self, c: Constant) -> Constant:
        key = (c.type, c.value.tobytes())
        found = self.constants.get(key)
        if found is None:
            self.constants[key] = found = c
        return found


def graph_rewrite(outputs: Sequence[Variable], matcher: PatternMatcher, max_iterations: int = 8,
                  ctx: RewriteContext | None = None) -> list[Variable]:
    """Apply ``matcher`` to a fixed point (at most ``max_iterations`` sweeps); new outputs."""
    ctx = ctx or RewriteContext()
    outputs = list(outputs)
    for _ in range(max_iterations):
        outputs, fired = _sweep(outputs, matcher, ctx)
        if not fired:
            break
    return outputs


def _rebuild(node: Apply, inputs: list[Variable]) -> Apply:
    new = node.op.make_node(*inputs)
    new.site = node.site
    for old, out in zip(node.outputs, new.outputs):
        out.site = node.site
        if old.name and not out.name:
            out.name = old.name
    return new


def _sweep(outputs: list[Variable], matcher: PatternMatcher, ctx: RewriteContext) -> tuple[list[Variable], int]:
    ctx.begin_sweep(outputs)
    final: dict[int, Variable] = {}
    keep: list = []  # holds every variable whose id is a key, so ids stay unique
    replaced: dict[int, list[Variable]] = {}
    built: dict[tuple, Apply] = {}
    fired = 0
    log = debug_enabled("rewrites")
    stack: list[Variable] = list(reversed(outputs))
    while stack:
        v = stack[-1]
        if id(v) in final:
            stack.pop()
            continue
        node = v.owner
        if node is None:
            final[id(v)] = ctx.canonical_constant(v) if isinstance(v, Constant) else v
            keep.append(v)
            stack.pop()
            continue
        reps = replaced.get(id(node))
        if reps is not None:
            missing = [r for r in reps if id(r) not in final]
            if missing:
                stack.extend(missing)
                continue
            for o, r in zip(node.outputs, reps):
                final[id(o)] = final[id(r)]
                ctx.set_origin(final[id(r)], o)
            keep.append(node)
            stack.pop()
            continue
        missing = [i for i in node.inputs if id(i) not in final]
        if missing:
            stack.extend(reversed(missing))
            continue
        new_inputs = [final[id(i)] for i in node.inputs]
        if all(a is b for a, b in zip(new_inputs, node.inputs)):
            cand = node
        else:
            cand = _rebuild(node, new_inputs)
            for o, n in zip(node.outputs, cand.outputs):
                ctx.set_origin(n, o)
        key = (cand.op, tuple(id(i) for i in cand.inputs))
        existing = built.get(key)
        if existing is not None:
            cand = existing  # merge (CSE)
        else:
            built[key] = cand
            result = matcher.rewrite(cand, ctx) if ctx.budget > 0 else None
            if result is not None:
                rule, reps = result
                ctx.budget -= 1
                fired += 1
                ctx.fired[rule.name] = ctx.fired.get(rule.name, 0) + 1
                if log:
                    debug_log("rewrites", f"{rule.name}: {cand.op} at {cand.site} -> "
                                          f"{', '.join(_describe(r) for r in reps)}")
                for o, r in zip(node.outputs, reps):
                    ctx.set_origin(r, o)
                replaced[id(node)] = reps
                keep.append(node)
                continue
        for o, n in zip(node.outputs, cand.outputs):
            final[id(o)] = n
            final[id(n)] = n
        keep.append(node)
        keep.append(cand)
        stack.pop()
    return [final[id(o)] for o in outputs], fired


def _refers_to(reps: list[Variable], node: Apply, marker: int) -> bool:
    """Whether the nodes a rule built consume an output of the node they replace."""
    outs = {id(o) for o in node.outputs}
    stack, seen = [r for r in reps if r.id > marker], set()
    while stack:
        v = stack.pop()
        if v.id <= marker or id(v) in seen or v.owner is None:
            continue
        seen.add(id(v))
        for i in v.owner.inputs:
            if id(i) in outs:
                return True
            stack.append(i)
    return False


def _adopt_site(reps: list[Variable], site: str, marker: int) -> None:
    """Give the nodes a rule built (variables newer than ``marker``) the matched node's site."""
    stack = list(reps)
    seen: set[int] = set()
    while stack:
        v = stack.pop()
        if v.id <= marker or id(v) in seen or v.owner is None:
            continue
        seen.add(id(v))
        v.site = site
        v.owner.site = site
        stack.extend(v.owner.inputs)


def _describe(v: Variable) -> str:
    if v.owner is None:
        return repr(v)
    return f"{v.owner.op}"
