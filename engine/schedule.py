"""schedule: an optimized graph -> kernel calls, an order that keeps peak memory low, and a
buffer plan from liveness.

    sched = schedule(fgraph)                       # or schedule(outputs, inputs=[...])
    for call in sched.calls:                       # in execution order
        call.node, call.inputs, call.outputs       # buffer ids; call.kind: kernel | view | shape
    sched.buffers[bid]                             # Buffer(id, dtype, shape, kind, nbytes, view_of)
    sched.buffer_of(var), sched.peak_bytes, print(sched)

* one ``KernelCall`` per node: "kernel" (computes), "view" (DimShuffle, Reshape of a
  contiguous buffer, StopGradient: a new Buffer with ``view_of`` = its base, no data moves) or
  "shape" (Shape / ShapeOf: reads only metadata);
* the order: greedy list scheduling over the ready calls, picking the call that adds the fewest
  live bytes (bytes allocated minus bytes its last uses free), ties in graph order;
* buffers: a temporary buffer is freed after its last reader (a view's reads count for its
  base) and reused by a later result of the same dtype and size; an elementwise kernel (or a
  Gemm over its ``c``) writes in place into an input that dies there and has its shape. Never
  reused or written: function inputs, shared values, constants, outputs.
* sizes: ``dims`` maps a function input to its run-time shape (a symbolic shape is otherwise
  counted with ``default_dim`` for each unknown dim); ``peak_bytes`` counts the buffers Kiln
  allocates (temporaries and outputs), not the caller's inputs or the shared values.

``KILN_DEBUG=schedule`` prints every schedule built.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from engine.debug import debug_enabled, debug_log
from engine.graph import Apply, Constant, SharedVariable, Variable, toposort
from engine.types import format_shape

VIEW_OPS = ("DimShuffle", "Reshape", "StopGradient")
SHAPE_OPS = ("Shape", "ShapeOf")
IN_PLACE_OPS = ("Elemwise", "FusedElemwise")


@dataclass
class Buffer:
    id: int
    dtype: str
    #: static dims (ints) and symbolic ones ("x.0": dim 0 of input x; "?": unknown)
    shape: tuple
    #: "input" | "shared" | "constant" | "temp" | "output"
    kind: str
    #: bytes with the dims given to ``schedule`` (views: 0)
    nbytes: int
    view_of: int | None = None
    name: str = ""

    def __str__(self) -> str:
        dims = "(" + ", ".join(str(d) for d in self.shape) + (",)" if len(self.shape) == 1 else ")")
        base = f" view of b{self.view_of}" if self.view_of is not None else ""
        label = f" {self.name}" if self.name else ""
        return f"b{self.id:<3} {self.kind:<8}{label} {self.dtype}{dims}{base}" + \
            (f"  {_bytes(self.nbytes)}" if self.nbytes else "")


@dataclass
class KernelCall:
    node: Apply
    inputs: tuple
    outputs: tuple
    #: "kernel" | "view" | "shape"
    kind: str = "kernel"
    #: (output index, input index) pairs: that output is written over that input's buffer
    in_place: tuple = ()
    #: buffers whose last use this call is (free after it)
    frees: tuple = ()

    @property
    def name(self) -> str:
        return type(self.node.op).__name__


@dataclass
class Schedule:
    calls: list
    buffers: dict
    var_buffer: dict = field(repr=False, default_factory=dict)
    inputs: list = field(default_factory=list)
    outputs: list = field(default_factory=list)
    peak_bytes: int = 0
    dims: dict = field(default_factory=dict)

    def buffer_of(self, var: Variable) -> Buffer:
        return self.buffers[self.var_buffer[id(var)]]

    @property
    def kernels(self) -> list:
        return [c for c in self.calls if c.kind == "kernel"]

    def __str__(self) -> str:
        return format_schedule(self)


def _bytes(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def format_schedule(s: Schedule) -> str:
    n_views = sum(c.kind == "view" for c in s.calls)
    lines = [f"schedule: {len(s.kernels)} kernel calls, {n_views} views, {len(s.buffers)} buffers, "
             f"peak {_bytes(s.peak_bytes)} ({s.peak_bytes} bytes)"]
    lines.append("buffers:")
    lines.extend("  " + str(b) for b in s.buffers.values())
    lines.append("calls:")
    for k, c in enumerate(s.calls):
        outs = ", ".join(f"b{b}" for b in c.outputs)
        ins = ", ".join(f"b{b}" for b in c.inputs)
        extra = []
        if c.in_place:
            extra.append("in place " + ", ".join(f"out{o}<-in{i}" for o, i in c.in_place))
        if c.frees:
            extra.append("frees " + ", ".join(f"b{b}" for b in c.frees))
        tag = "" if c.kind == "kernel" else f"{c.kind} "
        note = f"  [{'; '.join(extra)}]" if extra else ""
        lines.append(f"  {k:>3}  {outs} = {tag}{c.node.op}({ins}){note}   # {c.node.site}")
    lines.append("outputs: " + ", ".join(f"b{b}" for b in s.outputs))
    return "\n".join(lines)


def schedule(graph, inputs: Sequence[Variable] | None = None, dims: dict | None = None,
             default_dim: int = 1) -> Schedule:
    """Plan a (fused) graph: a ``FunctionGraph`` or a list of output variables."""
    from engine.rewrite.shapes import symbolic_shape

    if isinstance(graph, (list, tuple)):
        outputs = list(graph)
        inputs = list(inputs or [])
    else:
        outputs, inputs = list(graph.outputs), list(graph.inputs) if inputs is None else list(inputs)
    dims = {id(k): tuple(v) for k, v in (dims or {}).items()}
    shape_cache: dict = {}
    names = {id(v): v.name or f"input{i}" for i, v in enumerate(inputs)}

    def concrete(d) -> int:
        if isinstance(d, int):
            return d
        if d[0] == "in" and id(d[1]) in dims:
            return int(dims[id(d[1])][d[2]])
        if d[0] == "max":
            return max(concrete(e) for e in d[1])
        if d[0] == "v" and d[1].owner is not None and type(d[1].owner.op).__name__ == "Reshape" \
                and d[1].owner.op.pattern[d[2]] == -1:  # -1: the input's size over the other dims
            total = int(np.prod([concrete(e) for e in symbolic_shape(d[1].owner.inputs[0], shape_cache)]))
            rest = int(np.prod([concrete(e) for k, e in enumerate(symbolic_shape(d[1], shape_cache)) if k != d[2]]))
            return total // rest if rest else default_dim
        return default_dim

    def label(d) -> object:
        if isinstance(d, int):
            return d
        if d[0] == "in":
            return f"{names.get(id(d[1]), d[1].name or 'v')}.{d[2]}"
        if d[0] == "max":
            return "max(" + ",".join(str(label(e)) for e in d[1]) + ")"
        return "?"

    buffers: dict[int, Buffer] = {}
    var_buffer: dict[int, int] = {}
    sym_of: dict[int, tuple] = {}

    def new_buffer(v: Variable, kind: str, view_of: int | None = None) -> int:
        syms = symbolic_shape(v, shape_cache)
        size = int(np.prod([concrete(d) for d in syms], dtype=np.int64)) * np.dtype(v.dtype).itemsize
        bid = len(buffers)
        buffers[bid] = Buffer(bid, v.dtype, tuple(label(d) for d in syms), kind,
                              0 if view_of is not None else size, view_of,
                              names.get(id(v), v.name or "") if kind in ("input", "shared") else "")
        sym_of[bid] = (v.dtype, syms, size)
        var_buffer[id(v)] = bid
        return bid

    nodes = toposort(outputs)
    index = {id(n): k for k, n in enumerate(nodes)}
    # leaves
    for v in inputs:
        new_buffer(v, "shared" if isinstance(v, SharedVariable) else "input")
    for node in nodes:
        for v in node.inputs:
            if v.owner is None and id(v) not in var_buffer:
                shared = isinstance(v, SharedVariable)
                new_buffer(v, "constant" if isinstance(v, Constant) else ("shared" if shared else "input"))
    for v in outputs:
        if v.owner is None and id(v) not in var_buffer:
            new_buffer(v, "constant" if isinstance(v, Constant) else "input")

    # uses of each variable (a view's uses count for its base variable)
    readers: dict[int, list[Apply]] = {}
    for node in nodes:
        for v in node.inputs:
            readers.setdefault(id(v), []).append(node)
    output_ids = {id(o) for o in outputs}

    def kind_of(node: Apply) -> str:
        name = type(node.op).__name__
        if name in SHAPE_OPS:
            return "shape"
        if name in VIEW_OPS:
            if name == "Reshape" and _is_strided_view(node.inputs[0]):
                return "kernel"
            return "view"
        return "kernel"

    kinds = {id(n): kind_of(n) for n in nodes}
    root: dict[int, Variable] = {}  # id(var) -> the variable owning its storage

    def root_of(v: Variable) -> Variable:
        return root.get(id(v), v)

    for node in nodes:
        if kinds[id(node)] == "view":
            root[id(node.outputs[0])] = root_of(node.inputs[0])

    # remaining reads of each root's storage (outputs pin theirs forever)
    pending: dict[int, int] = {}
    for node in nodes:
        for v in {id(i): i for i in node.inputs}.values():
            r = root_of(v)
            pending[id(r)] = pending.get(id(r), 0) + 1
    pinned = {id(root_of(o)) for o in outputs}

    # greedy order
    producers_left = {id(n): len({id(i.owner) for i in n.inputs if i.owner is not None}) for n in nodes}
    consumers: dict[int, list[Apply]] = {}
    for node in nodes:
        for p in {id(i.owner): i.owner for i in node.inputs if i.owner is not None}.values():
            consumers.setdefault(id(p), []).append(node)
    ready = [n for n in nodes if producers_left[id(n)] == 0]
    calls: list[KernelCall] = []
    free_pool: dict[tuple, list[int]] = {}
    owned: dict[int, int] = {}  # id(root var) -> buffer id, for temporaries

    def size_of(v: Variable) -> int:
        syms = symbolic_shape(v, shape_cache)
        return int(np.prod([concrete(d) for d in syms], dtype=np.int64)) * np.dtype(v.dtype).itemsize

    def delta(node: Apply) -> int:
        if kinds[id(node)] == "view":
            return 0
        alloc = sum(size_of(o) for o in node.outputs)
        freed = 0
        for v in {id(i): i for i in node.inputs}.values():
            r = root_of(v)
            if pending.get(id(r)) == 1 and id(r) in owned and id(r) not in pinned:
                freed += buffers[owned[id(r)]].nbytes
        return alloc - freed

    while ready:
        best = min(ready, key=lambda n: (delta(n), index[id(n)]))
        ready.remove(best)
        node = best
        kind = kinds[id(node)]
        in_bids = tuple(var_buffer[id(i)] for i in node.inputs)
        dying = []
        for v in {id(i): i for i in node.inputs}.values():
            r = root_of(v)
            pending[id(r)] -= 1
            if pending[id(r)] == 0 and id(r) in owned and id(r) not in pinned:
                dying.append(r)
        out_bids, in_place = [], []
        for k, out in enumerate(node.outputs):
            if kind == "view":
                out_bids.append(new_buffer(out, "temp", view_of=var_buffer[id(root_of(out))]))
                continue
            out_kind = "output" if id(out) in output_ids else "temp"
            reuse = _in_place_candidate(node, out, dying, owned, buffers, shape_cache, in_place, root_of)
            if reuse is not None:
                dying.remove(reuse[0])
                bid = owned.pop(id(reuse[0]))
                in_place.append((k, reuse[1]))
            else:
                pool = free_pool.get((out.dtype, symbolic_shape(out, shape_cache), size_of(out)))
                bid = pool.pop() if pool else None
            if bid is None:
                bid = new_buffer(out, out_kind)
            else:
                var_buffer[id(out)] = bid
                if out_kind == "output":
                    buffers[bid].kind = "output"
            owned[id(out)] = bid
            out_bids.append(bid)
        frees = []
        for r in dying:
            bid = owned.pop(id(r))
            dtype, syms, size = sym_of[bid]
            free_pool.setdefault((dtype, syms, size), []).append(bid)
            frees.append(bid)
        # a result nobody reads (an unused output of a multi-output node) is free at once
        for out in node.outputs:
            if kind != "view" and id(out) not in output_ids and not readers.get(id(out)) and id(out) in owned:
                bid = owned.pop(id(out))
                dtype, syms, size = sym_of[bid]
                free_pool.setdefault((dtype, syms, size), []).append(bid)
                frees.append(bid)
        calls.append(KernelCall(node, in_bids, tuple(out_bids), kind, tuple(in_place), tuple(frees)))
        for c in consumers.get(id(node), []):
            producers_left[id(c)] -= 1
            if producers_left[id(c)] == 0:
                ready.append(c)
    result = Schedule(calls, buffers, var_buffer, [var_buffer[id(v)] for v in inputs],
                      [var_buffer[id(o)] for o in outputs], 0,
                      {names.get(k, str(k)): v for k, v in dims.items()})
    result.peak_bytes = _peak(result)
    if debug_enabled("schedule"):
        debug_log("schedule", "\n" + format_schedule(result))
    return result


def _is_strided_view(v: Variable) -> bool:
    """Whether ``v`` is a permuted view (a Reshape of it must copy; it may not be overwritten
    elementwise in the order of its base)."""
    node = v.owner
    while node is not None and type(node.op).__name__ in VIEW_OPS:
        if type(node.op).__name__ == "DimShuffle":
            kept = [a for a in node.op.new_order if a != "x"]
            if kept != sorted(kept):
                return True
        v = node.inputs[0]
        node = v.owner
    return False


def _in_place_candidate(node, out, dying, owned, buffers, cache, taken, root_of) -> tuple | None:
    """(root variable, input index) of a dying input ``out`` may overwrite, or None."""
    from engine.rewrite.shapes import symbolic_shape

    name = type(node.op).__name__
    if name == "Gemm":
        positions = [2] if len(node.inputs) == 3 else []
    elif name in IN_PLACE_OPS:
        positions = range(len(node.inputs))
    else:
        return None
    used = {i for _, i in taken}
    out_syms = symbolic_shape(out, cache)
    for pos in positions:
        v = node.inputs[pos]
        r = root_of(v)
        if pos in used or r.owner is None or (r is not v and _is_strided_view(v)):
            continue  # (a contiguous view, e.g. a Reshape, shares its base's layout)
        if r not in dying or id(r) not in owned or buffers[owned[id(r)]].kind != "temp":
            continue
        if any(u is not v and root_of(u) is r for u in node.inputs):
            continue  # also read through another view: overwriting would change those reads
        if v.dtype == out.dtype and symbolic_shape(v, cache) == out_syms \
                and _same_size(v, r, cache):
            return r, pos
    return None


def _same_size(v: Variable, r: Variable, cache: dict) -> bool:
    from engine.rewrite.shapes import symbolic_shape

    a = sorted(map(repr, (d for d in symbolic_shape(v, cache) if d != 1)))
    b = sorted(map(repr, (d for d in symbolic_shape(r, cache) if d != 1)))
    return a == b


def _peak(s: Schedule) -> int:
    """Replay the plan: the most bytes held in Kiln-owned (temp/output) buffers at once."""
    alive: set[int] = set()
    peak = 0
    for c in s.calls:
        for b in c.outputs:
            buf = s.buffers[b]
            if buf.view_of is None and buf.kind in ("temp", "output"):
                alive.add(b)
        peak = max(peak, sum(s.buffers[b].nbytes for b in alive))
        for b in c.frees:
            alive.discard(b)
    return peak


def format_dims(shape) -> str:
    return format_shape(shape)
