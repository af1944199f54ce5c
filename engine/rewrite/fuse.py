"""fuse (code generators only): chains of elementwise ops -> one ``FusedElemwise``; an
elementwise producer into its reduction -> ``FusedReduce``; an expensive producer and its
elementwise consumers -> one multi-output ``FusedElemwise``.

Policy: a producer is inlined into a consumer when the consumer is its only client and it has
the consumer's shape (no recomputation per broadcast element), or when it is cheap (at most
two cheap scalar ops), then it may be duplicated; a fused op takes at most
``MAX_FUSED_INPUTS`` inputs. Inlining a producer rebuilds the consumer from the producer's
inputs, which can never create a cycle; grouping siblings into one multi-output node can, so
those groups are checked for convexity first.
"""

from __future__ import annotations

from collections.abc import Sequence

from engine.graph import Apply, Constant, Variable, toposort
from engine.ops.elemwise import Elemwise
from engine.ops.fused import MAX_FUSED_INPUTS, FusedElemwise, FusedReduce
from engine.ops.reduce import Reduce
from engine.rewrite.pattern import Match, Pat, PatternMatcher, RewriteContext, Rule

CHEAP_OPS = frozenset({
    "add", "sub", "mul", "neg", "cast", "identity", "maximum", "minimum", "abs", "sqr", "where", "sign", "relu",
    "lt", "le", "gt", "ge", "eq", "neq", "and", "or", "xor", "invert",
})


def elemwise_like(node: Apply | None) -> bool:
    return node is not None and (isinstance(node.op, Elemwise)
                                 or (isinstance(node.op, FusedElemwise) and len(node.outputs) == 1))


def expression(node: Apply) -> tuple:
    """The instructions of an elementwise-like node (an Elemwise is one instruction)."""
    if isinstance(node.op, FusedElemwise):
        return node.op.expr
    op = node.op
    args = tuple(("in", k) for k in range(len(node.inputs)))
    return ((op.scalar_op, node.outputs[0].dtype, args),)


def is_cheap(node: Apply) -> bool:
    expr = expression(node)
    return len(expr) <= 2 and all(name in CHEAP_OPS for name, _, _ in expr)


class ExprBuilder:
    """Accumulates a fused expression: inputs (deduplicated), instructions (deduplicated)."""

    def __init__(self) -> None:
        self.inputs: list[Variable] = []
        self._slot: dict[int, int] = {}
        self.instrs: list[tuple] = []
        self._instr: dict[tuple, int] = {}

    def ref(self, v: Variable) -> tuple:
        if isinstance(v, Constant) and v.ndim == 0:
            return ("const", v.value.item(), v.dtype)
        k = self._slot.get(id(v))
        if k is None:
            k = self._slot[id(v)] = len(self.inputs)
            self.inputs.append(v)
        return ("in", k)

    def emit(self, instr: tuple) -> tuple:
        j = self._instr.get(instr)
        if j is None:
            j = self._instr[instr] = len(self.instrs)
            self.instrs.append(instr)
        return ("op", j)

    def embed(self, node: Apply, args: Sequence[tuple], which: int = -1) -> tuple:
        """Replay ``node``'s expression with its input slots bound to ``args``; returns the
        reference of its output (``which``: instruction index, default the last / its output)."""
        expr = expression(node)
        refs: list[tuple] = []
        for name, dtype, iargs in expr:
            bound = tuple(args[a[1]] if a[0] == "in" else (refs[a[1]] if a[0] == "op" else a) for a in iargs)
            refs.append(self.emit((name, dtype, bound)))
        if isinstance(node.op, FusedElemwise) and which == -1:
            which = node.op.outputs[0]
        return refs[which]

    def n_inputs_with(self, vs: Sequence[Variable]) -> int:
        extra = {id(v) for v in vs if id(v) not in self._slot and not (isinstance(v, Constant) and v.ndim == 0)}
        return len(self.inputs) + len(extra)


def _inlinable(v: Variable, consumer_out: Variable, ctx: RewriteContext) -> bool:
    node = v.owner
    if not elemwise_like(node):
        return False
    same = ctx.same_shape(v, consumer_out)
    if ctx.single_client(v) and same:
        return True
    tiny = all(d == 1 for d in v.type.shape)  # a scalar, possibly with broadcast axes
    return is_cheap(node) and (same or tiny or ctx.single_client(v))


def _fuse_inputs(node: Apply, ctx: RewriteContext) -> tuple[ExprBuilder, tuple] | None:
    """Bind the node's inputs, inlining the producers that may be inlined; None if none may."""
    out = node.outputs[0]
    candidates = [_inlinable(v, out, ctx) for v in node.inputs]
    if not any(candidates):
        return None
    builder = ExprBuilder()
    for v, ok in zip(node.inputs, candidates):
        if not ok:
            builder.ref(v)  # keep the slot order stable: inputs first
    args = []
    inlined = False
    for v, ok in zip(node.inputs, candidates):
        if ok and builder.n_inputs_with(v.owner.inputs) <= MAX_FUSED_INPUTS:
            args.append(builder.embed(v.owner, [builder.ref(i) for i in v.owner.inputs], _which(v)))
            inlined = True
        else:
            args.append(builder.ref(v))
    return (builder, tuple(args)) if inlined else None


def _which(v: Variable) -> int:
    node = v.owner
    return node.op.outputs[v.index] if isinstance(node.op, FusedElemwise) else -1


def _fuse_elemwise(m: Match):
    node = m.node
    if not elemwise_like(node):
        return None
    found = _fuse_inputs(node, m.ctx)
    if found is None:
        return None
    builder, args = found
    builder.embed(node, args)
    if len(builder.inputs) > MAX_FUSED_INPUTS:
        return None
    return FusedElemwise(tuple(builder.instrs))(*builder.inputs)


def _fuse_reduce(m: Match):
    x = m.x
    if not elemwise_like(x.owner) or not m.ctx.single_client(x) or m.node.op.reducer not in ("sum", "max", "min"):
        return None
    builder = ExprBuilder()
    out_ref = builder.embed(x.owner, [builder.ref(i) for i in x.owner.inputs], _which(x))
    if len(builder.inputs) > MAX_FUSED_INPUTS:
        return None
    expr = tuple(builder.instrs)
    if out_ref[1] != len(expr) - 1:  # the reduction reads the last instruction
        expr = expr + (("identity", x.dtype, (out_ref,)),)
    return FusedReduce(m.node.op.reducer, m.node.op.axes, expr)(*builder.inputs)


def fuse_elementwise() -> PatternMatcher:
    return PatternMatcher([
        Rule("fuse_elemwise", Pat((Elemwise, FusedElemwise)), _fuse_elemwise),
        Rule("fuse_reduce", Pat(Reduce, [Pat.var("x")]), _fuse_reduce),
    ])


# -- multi-output groups ------------------------------------------------------------------------------

def fuse_multi_output(outputs: Sequence[Variable], ctx: RewriteContext) -> list[Variable]:
    """Merge each elementwise producer that several kernels read with its elementwise consumers
    of the same shape into one multi-output FusedElemwise (when the group is convex)."""
    outputs = list(outputs)
    nodes = toposort(outputs)
    consumers: dict[int, list[Apply]] = {}
    for node in nodes:
        for inp in node.inputs:
            lst = consumers.setdefault(id(inp), [])
            if not any(c is node for c in lst):
                lst.append(node)
    out_ids = {id(o) for o in outputs}
    candidates = []
    for node in nodes:
        if not elemwise_like(node):
            continue
        out = node.outputs[0]
        group = [c for c in consumers.get(id(out), []) if elemwise_like(c) and ctx.same_shape(c.outputs[0], out)]
        if group:
            candidates.append((node, group))
    if not candidates:
        return outputs
    successors: dict[int, set[int]] = {id(node): set() for node in nodes}
    for node in nodes:
        for inp in node.inputs:
            if inp.owner is not None:
                successors[id(inp.owner)].add(id(node))
    index = {id(n): k for k, n in enumerate(nodes)}
    assigned: dict[int, int] = {}
    groups: list[tuple[Apply, list[Apply]]] = []
    for producer, group in candidates:
        if id(producer) in assigned:
            continue
        chosen: list[Apply] = []
        for c in group:
            if id(c) in assigned:
                continue
            trial = [producer, *chosen, c]
            if _n_inputs(trial) <= MAX_FUSED_INPUTS and _convex(successors, {id(n) for n in trial}, index):
                chosen.append(c)
        if chosen:
            for n in (producer, *chosen):
                assigned[id(n)] = len(groups)
            groups.append((producer, chosen))
    if not groups:
        return outputs
    return _rebuild_with_groups(outputs, nodes, groups, assigned, consumers, out_ids)


def _n_inputs(members: list[Apply]) -> int:
    produced = {id(o) for n in members for o in n.outputs}
    return len({id(i) for n in members for i in n.inputs
                if id(i) not in produced and not (isinstance(i, Constant) and i.ndim == 0)})


def _convex(successors: dict[int, set[int]], members: set[int], index: dict[int, int]) -> bool:
    """No path leaves the group and comes back (else one kernel would wait on itself). The
    search from the group's outside successors stops past the last member in topological order."""
    last = max(index[m] for m in members)
    stack = [s for m in members for s in successors[m] if s not in members]
    seen: set[int] = set()
    while stack:
        n = stack.pop()
        if n in members:
            return False
        if n in seen or index[n] > last:
            continue
        seen.add(n)
        stack.extend(successors[n])
    return True


def _rebuild_with_groups(outputs, nodes, groups, assigned, consumers, out_ids) -> list[Variable]:
    order_index = {id(n): k for k, n in enumerate(nodes)}

    def unit(node: Apply):
        return ("g", assigned[id(node)]) if id(node) in assigned else ("n", id(node))

    by_id = {id(n): n for n in nodes}
    unit_edges: dict[tuple, set[tuple]] = {}
    for node in nodes:
        u = unit(node)
        unit_edges.setdefault(u, set())
        for inp in node.inputs:
            if inp.owner is not None and unit(inp.owner) != u:
                unit_edges.setdefault(unit(inp.owner), set()).add(u)
    order = _ordered_toposort(unit_edges, lambda u: _first_index(u, groups, order_index))
    if order is None:
        return outputs
    memo: dict[int, Variable] = {}

    def get(v: Variable) -> Variable:
        return memo.get(id(v), v)

    for u in order:
        if u[0] == "n":
            node = by_id[u[1]]
            inputs = [get(i) for i in node.inputs]
            if any(a is not b for a, b in zip(inputs, node.inputs)):
                for o, n in zip(node.outputs, node.clone_with_new_inputs(inputs).outputs):
                    memo[id(o)] = n
            continue
        producer, members = groups[u[1]]
        member_ids = {id(producer)} | {id(c) for c in members}
        builder = ExprBuilder()
        p_ref = builder.embed(producer, [builder.ref(get(i)) for i in producer.inputs])
        out_refs, replaced = [], []
        p_out = producer.outputs[0]
        outside = [c for c in consumers.get(id(p_out), []) if id(c) not in member_ids]
        if outside or id(p_out) in out_ids:
            out_refs.append(p_ref)
            replaced.append(p_out)
        for c in members:
            args = [p_ref if i is p_out else builder.ref(get(i)) for i in c.inputs]
            out_refs.append(builder.embed(c, args))
            replaced.append(c.outputs[0])
        op = FusedElemwise(tuple(builder.instrs), tuple(r[1] for r in out_refs))
        new = op.make_node(*builder.inputs)
        new.site = producer.site
        for old, n in zip(replaced, new.outputs):
            n.site = old.site
            memo[id(old)] = n
    return [get(o) for o in outputs]


def _ordered_toposort(successors: dict, key) -> list | None:
    """A topological order that always takes the ready unit of smallest key (so groups keep
    the original schedule's order as far as the edges allow); None when there is a cycle."""
    import heapq

    indegree = dict.fromkeys(successors, 0)
    for targets in successors.values():
        for t in targets:
            indegree[t] += 1
    ready = [(key(u), u) for u, d in indegree.items() if d == 0]
    heapq.heapify(ready)
    order = []
    while ready:
        _, u = heapq.heappop(ready)
        order.append(u)
        for t in successors[u]:
            indegree[t] -= 1
            if indegree[t] == 0:
                heapq.heappush(ready, (key(t), t))
    return order if len(order) == len(successors) else None


def _first_index(u, groups, order_index) -> int:
    if u[0] == "n":
        return order_index[u[1]]
    producer, members = groups[u[1]]
    return min(order_index[id(n)] for n in (producer, *members))
