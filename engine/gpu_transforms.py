"""GPU loop transforms: a lowered (CPU-style) kernel -> kernels bound to CUDA blocks and threads.

    gk = gpu_schedule(kernel, GpuTarget())      # GpuKernel(name, raw, launches)
    for launch in gk.launches:                  # launched in order (a kernel may need several)
        launch.kernel, launch.block, launch.grid

Semantics of the GPU loop kinds (the CUDA renderer and the emulator implement exactly this)
---------------------------------------------------------------------------------------------
``Loop(v, a, b, body, kind="block_x", step=s)``   grid-stride over blocks:
    ``for (v = a + blockIdx.x*s; v < b; v += gridDim.x*s)``; any grid size is correct.
``Loop(v, a, b, body, kind="thread_x", step=s)``  block-stride over the threads of a block:
    ``for (v = a + threadIdx.x*s; v < b; v += blockDim.x*s)``; a thread loop of extent
    blockDim runs exactly once per thread, one of extent 1 on thread 0 only.
Everything outside thread loops runs on every thread of the block (uniform code: the same
values in every thread); ``Barrier()`` is ``__syncthreads()`` and only appears in uniform
control flow. Thread loops do not nest. ``*_y``/``*_z`` are the same along y and z.

The transforms (each a pure function of kernel IR)
--------------------------------------------------
``scalarize``     removes CPU vectors: a ``lanes=w`` statement becomes w scalar statements
                  (vector locals ``x`` become ``x_l0 .. x_l{w-1}``, ``ReduceLanes`` the same
                  balanced tree as the LLVM renderer), ``vectorize`` loops become serial.
``split_parts``   top-level statements that depend on each other through memory (a later one
                  reads or writes what an earlier one wrote, or writes what it read) go to
                  separate launches: blocks of one launch never wait for each other.
``bind``          per launch, per top-level statement:
  * a parallel chain (the lowering's ``parallel`` loop, then the perfectly nested loops the
    dependence test ``parallel_safe`` accepts; sibling loops over the same index are fused
    first by ``hoist_common_loops``, e.g. a column reduction's init and update) is flattened
    into one index, one thread per iteration (thread x runs along the innermost, usually
    contiguous, axis: coalesced). When the innermost loop's bounds depend on the outer ones,
    the outer iterations go to blocks and the inner loop to the threads of a block;
  * a chain whose body reduces (``acc = acc op x`` in a loop, op in add mul min max and or
    xor) also gets a block-cooperative version, chosen at run time when there are fewer
    than ``GpuTarget.coop_outputs`` outputs: one block per output, the threads take strided
    parts of the reduction, then a shared-memory tree (``Barrier`` between levels);
    map loops in the same body (softmax's normalization) become thread loops;
  * anything else (a tail ``If``, a full reduction to a scalar, a sequential scatter) runs
    on block 0: cooperatively when it has a reduction or a parallel loop inside, else on
    one thread.
``gpu_schedule``  scalarize -> split -> bind -> verify; kernels that already contain GPU loops
                  (a dedicated GPU builder's) are only verified, their launch inferred.

Block sizes come from ``GpuTarget`` (threads per block, shared memory, warp size); grids are
kernel-IR expressions of the parameters (``GpuLaunch.grid``), evaluated on the host at launch.
Parallel-loop iterations are independent by the lowering contract (engine/lowering/common.py);
``unroll`` loops are never parallelized. The emulator's race detector checks all of it.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

from engine import kernel_ir as ir
from engine.kernel_ir import (
    Alloc,
    Assign,
    Barrier,
    BinOp,
    Const,
    Declare,
    If,
    Kernel,
    KernelIRError,
    LocalBuffer,
    Loop,
    Store,
    Var,
)


@dataclass(frozen=True)
class GpuTarget:
    """What the transforms may use: the declared capabilities of a CUDA device."""

    max_threads_per_block: int = 1024
    shared_memory_bytes: int = 48 * 1024
    warp_size: int = 32
    #: threads per block of the generic mappings (a power of two, a multiple of the warp)
    block_threads: int = 256
    #: reductions with fewer outputs than this run one block per output ...
    coop_outputs: int = 16384
    #: ... when the threads of a block share at least this many iterations
    coop_min_work: int = 32
    #: the most blocks a launch asks for (grid-stride loops cover the rest)
    max_grid: int = 1 << 20


@dataclass(frozen=True)
class GpuLaunch:
    """One ``__global__`` function: the scheduled kernel, its block shape and its grid (ints
    or kernel-IR expressions of the kernel's parameters; ``None``: the runtime's default)."""

    kernel: Kernel
    block: tuple
    grid: tuple

    @property
    def threads(self):
        return self.block[0] * self.block[1] * self.block[2]


@dataclass
class GpuKernel:
    """A lowered kernel and the launches that run it on a GPU (usually one)."""

    name: str
    raw: Kernel
    launches: list = field(default_factory=list)


# ----------------------------------------------------------------------------- helpers

class _Names:
    """Fresh identifiers that clash with nothing in a kernel."""

    def __init__(self, kernel):
        self.taken = {p.name for p in kernel.params}
        for n in ir.walk(kernel):
            if isinstance(n, Var):
                self.taken.add(n.name)
            elif isinstance(n, (Loop, Declare)):
                self.taken.add(n.var.name)
            elif isinstance(n, Alloc):
                self.taken.add(n.buf.name)

    def __call__(self, base):
        name, k = base, 0
        while name in self.taken:
            k += 1
            name = f"{base}{k}"
        self.taken.add(name)
        return name


def _c(v):
    return v if isinstance(v, ir.Expr) else Const(v)


def _add(a, b):
    a, b = _c(a), _c(b)
    if isinstance(a, Const) and isinstance(b, Const):
        return Const(a.value + b.value)
    if isinstance(a, Const) and a.value == 0:
        return b
    if isinstance(b, Const) and b.value == 0:
        return a
    return a + b


def _sub(a, b):
    a, b = _c(a), _c(b)
    if isinstance(a, Const) and isinstance(b, Const):
        return Const(a.value - b.value)
    if isinstance(b, Const) and b.value == 0:
        return a
    return a - b


def _mul(a, b):
    a, b = _c(a), _c(b)
    if isinstance(a, Const) and isinstance(b, Const):
        return Const(a.value * b.value)
    for x, y in ((a, b), (b, a)):
        if isinstance(x, Const) and x.value == 1:
            return y
        if isinstance(x, Const) and x.value == 0:
            return Const(0)
    return a * b


def _min(a, b):
    a, b = _c(a), _c(b)
    if isinstance(a, Const) and isinstance(b, Const):
        return Const(min(a.value, b.value))
    return ir.minimum(a, b)


def _max(a, b):
    a, b = _c(a), _c(b)
    if isinstance(a, Const) and isinstance(b, Const):
        return Const(max(a.value, b.value))
    return ir.maximum(a, b)


def _cdiv(a, f):
    """ceil(a / f) for a >= 0, f a positive int."""
    a = _c(a)
    if isinstance(a, Const):
        return Const(-(-a.value // f))
    return a if f == 1 else BinOp("div", a + (f - 1), Const(f))


def _trip(loop):
    """The trip count of a loop, >= 0."""
    n = _sub(loop.stop, loop.start)
    if isinstance(n, Const):
        return Const(max(0, -(-n.value // loop.step)))
    if loop.step != 1:
        n = _cdiv(n, loop.step)
    if isinstance(n, ir.Dim) or isinstance(loop.start, Const) and loop.start.value == 0 \
            and isinstance(loop.stop, ir.ScalarParam):
        return n
    return _max(n, 0)


def _reads(node):
    """Names of the buffers loaded under node."""
    return {n.buf.name for n in ir.walk(node) if isinstance(n, ir.Load)}


def _writes(node):
    return {n.buf.name for n in ir.walk(node) if isinstance(n, Store)}


def _global_writes(node):
    return {n.buf.name for n in ir.walk(node) if isinstance(n, Store)
            and isinstance(n.buf, ir.BufferParam)}


def _touches_memory(node):
    return any(isinstance(n, (ir.Load, Store)) for n in ir.walk(node))


def _assigned(node):
    return {n.var.name for n in ir.walk(node) if isinstance(n, Assign)}


def _is_gpu(kernel):
    return any(isinstance(n, Loop) and n.kind in ir.GPU_LOOP_KINDS or
               isinstance(n, (ir.Barrier,) + ir.GPU_INDEX_NODES) or
               isinstance(n, Alloc) and n.buf.scope == "shared" for n in ir.walk(kernel))


# ----------------------------------------------------------------------------- scalarize

def scalarize(kernel):
    """The kernel with every vector (lanes > 1) value expanded into scalars; see the module
    docstring. Kernels without vectors come back unchanged."""
    if not any(getattr(n, "lanes", 1) > 1 or isinstance(n, (ir.ReduceLanes, ir.Ramp,
                                                            ir.Broadcast))
               or isinstance(n, Loop) and n.kind == "vectorize" for n in ir.walk(kernel)):
        return kernel
    return kernel.with_body(_Scalarizer(kernel).body(kernel.body))


class _Scalarizer:
    def __init__(self, kernel):
        self.names = _Names(kernel)
        self.lane_names = {}  # (vector var name, lane) -> scalar name

    def lname(self, name, k):
        key = (name, k)
        if key not in self.lane_names:
            self.lane_names[key] = self.names(f"{name}_l{k}")
        return self.lane_names[key]

    def body(self, stmts):
        out = []
        for s in stmts:
            out.extend(self.stmt(s))
        return tuple(out)

    def stmt(self, s):
        t = type(s)
        if t is Loop:
            kind = "serial" if s.kind == "vectorize" else s.kind
            return (Loop(s.var, self.scalar(s.start), self.scalar(s.stop), self.body(s.body),
                         kind, s.step),)
        if t is If:
            return (If(self.scalar(s.cond), self.body(s.then), self.body(s.orelse)),)
        if t is Store:
            w = s.value.lanes
            idx = tuple(self.scalar(x) for x in s.index)
            if w == 1:
                return (Store(s.buf, idx, self.scalar(s.value)),)
            return tuple(Store(s.buf, idx[:-1] + (_add(idx[-1], k),), self.lane(s.value, k))
                         for k in range(w))
        if t in (Declare, Assign):
            val = s.init if t is Declare else s.value
            if s.var.lanes == 1:
                return (t(s.var, self.scalar(val)),)
            return tuple(t(Var(self.lname(s.var.name, k), s.var.dtype), self.lane(val, k))
                         for k in range(s.var.lanes))
        return (s,)

    def scalar(self, e):
        """A lanes-1 expression with any vector subexpressions (under ReduceLanes) expanded."""
        if e.lanes != 1:
            raise KernelIRError(f"scalarize: expected a scalar, got {ir.describe(e)}")
        if not any(isinstance(n, ir.ReduceLanes) for n in ir.walk(e)):
            return e

        def fn(n):
            if isinstance(n, ir.ReduceLanes):
                vals = [self.lane(n.value, k) for k in range(n.value.lanes)]
                while len(vals) > 1 and len(vals) % 2 == 0:
                    h = len(vals) // 2
                    vals = [BinOp(n.op, vals[k], vals[k + h]) for k in range(h)]
                acc = vals[0]
                for v in vals[1:]:
                    acc = BinOp(n.op, acc, v)
                return acc
            return n
        return ir.map_nodes(e, fn)

    def lane(self, e, k):
        """Lane k of expression e (a scalar expression: broadcast values are the same)."""
        if e.lanes == 1:
            return self.scalar(e)
        t = type(e)
        if t is Var:
            return Var(self.lname(e.name, k), e.dtype)
        if t is ir.Load:
            idx = tuple(self.scalar(x) for x in e.index)
            return ir.Load(e.buf, idx[:-1] + (_add(idx[-1], k),))
        if t is ir.Broadcast:
            return self.scalar(e.value)
        if t is ir.Ramp:
            base, stride = self.scalar(e.base), self.scalar(e.stride)
            if k == 0:
                return base
            if isinstance(stride, Const):
                return base + Const(stride.value * k, stride.dtype)
            return base + stride * Const(k, stride.dtype)
        if t is BinOp:
            return BinOp(e.op, self.lane(e.a, k), self.lane(e.b, k))
        if t is ir.UnOp:
            return ir.UnOp(e.op, self.lane(e.a, k))
        if t is ir.FMA:
            return ir.FMA(self.lane(e.a, k), self.lane(e.b, k), self.lane(e.c, k))
        if t is ir.Cast:
            return ir.Cast(self.lane(e.value, k), e.dtype)
        if t is ir.Select:
            return ir.Select(self.lane(e.cond, k), self.lane(e.a, k), self.lane(e.b, k))
        raise KernelIRError(f"scalarize: cannot take a lane of {ir.describe(e)}")


# ----------------------------------------------------------------------------- dependence

def _affine(e, v):
    """(c, rest, k) with e == c*v + rest + k, rest a tuple of v-free terms (added), or None."""
    if isinstance(e, Var) and e.name == v:
        return 1, (), 0
    if isinstance(e, Const) and ir.is_int(e.dtype):
        return 0, (), e.value
    if v not in ir.free_vars(e):
        return 0, (e,), 0
    if isinstance(e, BinOp) and e.op in ("add", "sub"):
        a, b = _affine(e.a, v), _affine(e.b, v)
        if a is None or b is None:
            return None
        if e.op == "add":
            return a[0] + b[0], a[1] + b[1], a[2] + b[2]
        if b[1]:
            return None  # rest - rest: keep it simple
        return a[0] - b[0], a[1], a[2] - b[2]
    if isinstance(e, BinOp) and e.op == "mul":
        for x, y in ((e.a, e.b), (e.b, e.a)):
            if isinstance(y, Const):
                r = _affine(x, v)
                if r is None or r[1]:
                    return None
                return r[0] * y.value, (), r[2] * y.value
    return None


def _immutable_defs(body):
    """{name: init} of the locals Declared in body (at any depth) and never assigned."""
    assigned = _assigned(body)
    return {n.var.name: n.init for n in ir.walk(body)
            if isinstance(n, Declare) and n.var.name not in assigned and n.var.lanes == 1}


def _inline(e, defs, depth=0):
    if depth > 8 or not defs:
        return e
    names = ir.free_vars(e) & set(defs)
    if not names:
        return e
    return _inline(ir.substitute(e, {n: defs[n] for n in names}), defs, depth + 1)


def parallel_safe(loop, trust_parallel=True):
    """Whether the iterations of loop are independent, so threads may run them in any order:
    kind ``parallel`` (the lowering's promise, unless ``trust_parallel=False``) or a
    ``serial`` loop that assigns no outer local, writes each buffer at an index with a
    position ``c*i + rest + k`` (rest free of anything the loop binds, the offsets k of all
    its stores to that buffer within a window narrower than |c|), reads a buffer it writes
    only at an index it stores to, and writes no local buffer allocated outside it."""
    if not isinstance(loop, Loop) or loop.kind == "unroll" or loop.kind in ir.GPU_LOOP_KINDS:
        return False
    if loop.kind == "parallel" and trust_parallel:
        return True
    body = loop.body
    inner = ir.bound_names(body) | {loop.var.name}
    for n in ir.walk(body):
        if isinstance(n, Assign) and n.var.name not in inner:
            return False
        if isinstance(n, (Barrier,) + ir.GPU_INDEX_NODES):
            return False
    allocated = {n.buf.name for n in ir.walk(body) if isinstance(n, Alloc)}
    defs = _immutable_defs(body)
    stores, loads = {}, {}
    for n in ir.walk(body):
        if isinstance(n, Store):
            if isinstance(n.buf, LocalBuffer) and n.buf.name not in allocated:
                return False
            stores.setdefault(n.buf.name, []).append(n.index)
        elif isinstance(n, ir.Load):
            loads.setdefault(n.buf.name, []).append(n.index)
    v = loop.var.name
    for name, indices in stores.items():
        if name in allocated:
            continue
        for idx in loads.get(name, ()):
            if idx not in indices:
                return False
        if not _injective(indices, v, inner, defs):
            return False
    return True


def _injective(indices, v, inner, defs):
    ndim = len(indices[0])
    for pos in range(ndim):
        forms = []
        for idx in indices:
            f = _affine(_inline(idx[pos], defs), v)
            if f is None or f[0] == 0:
                break
            if any(ir.free_vars(t) & inner for t in f[1]):
                break
            forms.append(f)
        else:
            c, rest = forms[0][0], sorted(map(repr, forms[0][1]))
            if all(f[0] == c and sorted(map(repr, f[1])) == rest for f in forms):
                ks = [f[2] for f in forms]
                if max(ks) - min(ks) < abs(c):
                    return True
    return False


def hoist_common_loops(stmts):
    """Fuse sibling loop nests ending in loops over the same index and bounds into one loop
    over that index around them (``for j: init[j]; for r: for j: upd[j]`` ->
    ``for j: init[j]; for r: upd[j]``) when every buffer written is accessed at one index
    containing ``j`` as a plain position and the other loops' bounds do not use ``j``.
    Returns the statements unchanged when that does not apply."""
    stmts = tuple(stmts)
    if len(stmts) < 2 or not all(isinstance(s, Loop) for s in stmts):
        return stmts
    paths = []
    for s in stmts:
        path, cur = [], s
        while True:
            path.append(cur)
            inner = [x for x in cur.body if isinstance(x, Loop)]
            if len(cur.body) == 1 and len(inner) == 1:
                cur = inner[0]
                continue
            break
        paths.append(path)
    last = [p[-1] for p in paths]
    key = (last[0].var, last[0].start, last[0].stop, last[0].step)
    if any((x.var, x.start, x.stop, x.step) != key for x in last):
        return stmts
    j = last[0].var.name
    if last[0].kind == "unroll" or any(x.kind == "unroll" for x in last):
        return stmts
    for p in paths:
        for outer in p[:-1]:
            if j in ir.free_vars(outer.start) | ir.free_vars(outer.stop):
                return stmts
    written = set()
    for s in stmts:
        written |= _writes(s)
        if _assigned(s) - ir.bound_names(s):
            return stmts
    index_of = {}
    for s in stmts:
        for n in ir.walk(s):
            if isinstance(n, (Store, ir.Load)) and n.buf.name in written:
                if index_of.setdefault(n.buf.name, n.index) != n.index:
                    return stmts
    for idx in index_of.values():
        if Var(j) not in idx:
            return stmts
    if not all(parallel_safe(x, trust_parallel=False) or x.kind == "parallel" for x in last):
        return stmts

    def strip(path):
        inner = tuple(path[-1].body)
        for outer in reversed(path[:-1]):
            inner = (Loop(outer.var, outer.start, outer.stop, inner, outer.kind, outer.step),)
        return inner
    body = []
    for p in paths:
        body.extend(strip(p))
    return (Loop(last[0].var, last[0].start, last[0].stop, tuple(body), "serial", last[0].step),)


# ----------------------------------------------------------------------------- parts

def _top_groups(body):
    """Top-level statements as groups that must stay together: the span from the first to the
    last statement touching a mutable top-level local (declared at the top, assigned
    anywhere) or a top-level Alloc, grown until no Declare inside a span is read after it."""
    body = tuple(body)

    def refs(s, name):
        return (name in ir.free_vars(s) or name in _assigned(s) or
                isinstance(s, Declare) and s.var.name == name or
                isinstance(s, Alloc) and s.buf.name == name or
                any(isinstance(n, (ir.Load, Store)) and n.buf.name == name for n in ir.walk(s)))
    decl = {s.var.name for s in body if isinstance(s, Declare)}
    keys = ({n for n in _assigned(body) if n in decl} |
            {s.buf.name for s in body if isinstance(s, Alloc)})
    spans = []
    for name in sorted(keys):
        idx = [k for k, s in enumerate(body) if refs(s, name)]
        spans.append([min(idx), max(idx)])
    changed = True
    while changed:
        changed = False
        spans.sort()
        merged = []
        for lo, hi in spans:
            if merged and lo <= merged[-1][1]:
                merged[-1][1] = max(merged[-1][1], hi)
            else:
                merged.append([lo, hi])
        spans = merged
        for sp in spans:
            for k in range(sp[0], sp[1] + 1):
                s = body[k]
                if isinstance(s, Declare):
                    later = [j for j in range(sp[1] + 1, len(body)) if refs(body[j], s.var.name)]
                    if later:
                        sp[1] = max(later)
                        changed = True
    groups, k = [], 0
    starts = {lo: hi for lo, hi in spans}
    while k < len(body):
        if k in starts:
            groups.append(list(body[k:starts[k] + 1]))
            k = starts[k] + 1
        else:
            groups.append([body[k]])
            k += 1
    return groups


def split_parts(body):
    """Lists of top-level statements, each list one launch, in order (see the module
    docstring). Immutable top-level Declares are copied into every part that reads them."""
    body = tuple(body)
    groups = _top_groups(body)
    decl_of = {}
    parts, cur, cur_r, cur_w = [], [], set(), set()
    for g in groups:
        if len(g) == 1 and isinstance(g[0], Declare) and g[0].var.name not in _assigned(body):
            decl_of[g[0].var.name] = g[0]
            cur.append(g)
            cur_r |= _reads(g[0])
            continue
        r = set().union(*(_reads(s) for s in g))
        w = set().union(*(_global_writes(s) for s in g))
        if cur and ((r | w) & cur_w or w & cur_r):
            parts.append(cur)
            cur, cur_r, cur_w = [], set(), set()
        cur.append(g)
        cur_r |= r
        cur_w |= w
    if cur:
        parts.append(cur)
    out = []
    written_before = set()
    for p in parts:
        stmts = [s for g in p for s in g]
        have = {s.var.name for s in stmts if isinstance(s, Declare)}
        need = set().union(*(ir.free_vars(s) for s in stmts)) if stmts else set()
        extra, todo = [], sorted(need - have)
        while todo:
            name = todo.pop()
            d = decl_of.get(name)
            if d is None or name in have:
                continue
            if _reads(d) & written_before:
                return None  # the Declare would see a later value: cannot split
            have.add(name)
            extra.append(d)
            todo.extend(sorted(ir.free_vars(d.init) - have))
        order = {id(d): k for k, d in enumerate(body)}
        extra.sort(key=lambda d: order[id(d)])
        stmts = extra + stmts
        if any(isinstance(s, Declare) for s in stmts) and not [s for s in stmts if not
                                                              isinstance(s, Declare)]:
            continue  # only Declares: nothing to launch
        out.append(stmts)
        written_before |= set().union(*(_global_writes(s) for s in stmts)) if stmts else set()
    return out


# ----------------------------------------------------------------------------- binding

class _NoCoop(Exception):
    """The statements do not fit the block-cooperative mapping."""


class _Binder:
    def __init__(self, kernel, target):
        self.k = kernel
        self.t = target
        self.T = target.block_threads
        self.names = _Names(kernel)
        self.shared_bytes = 0

    # -- one part
    def part(self, stmts):
        out, grids = [], []
        for s in stmts:
            if isinstance(s, Declare):
                out.append(s)
                continue
            chain = self.chain(s) if isinstance(s, Loop) and parallel_safe(s) else None
            if chain is not None:
                stmts_, grid = self.bind_chain(chain)
                out.extend(stmts_)
                grids.append(grid)
                continue
            out.extend(self.one_block([s]))
            grids.append(Const(1))
        return out, grids

    def bind_group(self, group):
        """A group of top-level statements sharing mutable locals: block 0."""
        return self.one_block(group)

    # -- chains
    def chain(self, loop):
        """[(loop, prelude Declares), ...] of a parallel chain starting at loop, and the
        innermost body."""
        links = []
        cur = loop
        while True:
            body = hoist_common_loops_in(cur.body)
            pre = []
            k = 0
            while k < len(body) and isinstance(body[k], Declare):
                pre.append(body[k])
                k += 1
            rest = body[k:]
            assigned = _assigned(body)
            nxt = rest[0] if len(rest) == 1 and isinstance(rest[0], Loop) else None
            if nxt is not None and not any(d.var.name in assigned for d in pre) and \
                    parallel_safe(nxt, trust_parallel=True) and \
                    not (_reads(tuple(pre)) & _writes(nxt)):
                links.append((cur, tuple(pre)))
                cur = nxt
                continue
            links.append((cur, ()))
            return links, tuple(body)

    def bind_chain(self, chain):
        links, body = chain
        loops = [lp for lp, _ in links]
        bound = set()
        rect = len(loops)
        for i, lp in enumerate(loops):
            used = ir.free_vars(lp.start) | ir.free_vars(lp.stop)
            if used & bound:
                rect = i
                break
            bound.add(lp.var.name)
            bound |= {d.var.name for d in links[i][1]}
        if rect == len(loops):
            flat = self.flatten(links, body)
            coop = self.coop_version(links, body)
            if coop is None:
                return flat
            (stmts_a, grid_a), (stmts_c, grid_c, total) = flat, coop
            cond = ir.lt(total, Const(self.t.coop_outputs))
            if self.coop_work is not None:
                cond = cond & self.coop_work
            pre = [s for s in stmts_a if isinstance(s, Declare)]
            loop_a = [s for s in stmts_a if not isinstance(s, Declare)]
            loop_c = [s for s in stmts_c if not isinstance(s, Declare)]
            pre_c = [s for s in stmts_c if isinstance(s, Declare) and s not in pre]
            return pre + pre_c + [If(cond, loop_c, loop_a)], ir.Select(cond, grid_c, grid_a)
        if rect == len(loops) - 1:
            return self.outer_blocks(links, body)
        # truncate the chain at the first loop whose bounds depend on the outer ones
        inner = links[rect][0]
        new_body = tuple(links[rect - 1][1]) + (inner,)
        links = links[:rect - 1] + [(links[rect - 1][0], ())]
        return self.flatten(links, new_body)

    def decompose(self, links, flat_var, trips, prefix):
        """Declares giving each chain loop's index (then the preludes) from a flat index:
        the innermost index varies fastest (coalesced accesses along the last axis)."""
        stmts, rem = [], flat_var
        for i in reversed(range(len(links))):
            lp = links[i][0]
            if i == 0:
                stmts.append(Declare(lp.var, _add(lp.start, _mul(rem, lp.step))))
                break
            q = Var(self.names(f"{prefix}{i - 1}"))
            stmts.append(Declare(q, BinOp("div", rem, trips[i])))   # rem, trips >= 0
            stmts.append(Declare(lp.var, _add(lp.start, _mul(rem - q * trips[i], lp.step))))
            rem = q
        for _, pre in links:
            stmts += list(pre)
        return stmts

    def trips(self, links):
        pre, trips = [], []
        for lp, _ in links:
            t = _trip(lp)
            if not isinstance(t, (Const, ir.Dim, ir.ScalarParam)):
                v = Var(self.names(f"{lp.var.name}_n"))
                pre.append(Declare(v, t))
                t = v
            trips.append(t)
        total = trips[0]
        for t in trips[1:]:
            total = _mul(total, t)
        if len(trips) > 1:
            v = Var(self.names("n_total"))
            pre.append(Declare(v, total))
            total = v
        return pre, trips, total

    def flatten(self, links, body):
        """One thread per iteration of the (rectangular) chain."""
        T = self.T
        gb = Var(self.names("gb"))
        if len(links) == 1 and links[0][0].step == 1:
            lp = links[0][0]
            lo = _add(lp.start, _mul(gb, T))
            trip = _trip(lp)
            inner = Loop(lp.var, lo, _min(_add(lo, T), lp.stop), body, "thread_x")
            return [Loop(gb, 0, _cdiv(trip, T), (inner,), "block_x")], _cdiv(trip, T)
        pre, trips, total = self.trips(links)
        g = Var(self.names("gi"))
        lo = _mul(gb, T)
        dec = self.decompose(links, g, trips, "gq")
        inner = Loop(g, lo, _min(_add(lo, T), total), tuple(dec) + tuple(body), "thread_x")
        return pre + [Loop(gb, 0, _cdiv(total, T), (inner,), "block_x")], _cdiv(total, T)

    def outer_blocks(self, links, body):
        """Blocks over the flattened outer loops, the threads of a block over the last one."""
        outer, (last, _) = links[:-1], links[-1]
        pre, trips, total = self.trips(outer)
        gb = Var(self.names("gb"))
        dec = self.decompose(outer, gb, trips, "gq")
        inner = Loop(last.var, last.start, last.stop, body, "thread_x", last.step)
        return pre + [Loop(gb, 0, total, tuple(dec) + (inner,), "block_x")], total

    def coop_version(self, links, body):
        """(statements, grid, total) of the block-per-output mapping, or None."""
        if not any(isinstance(s, Loop) and _assigned(s) - ir.bound_names(s) for s in body):
            return None
        try:
            coop = _Coop(self)
            coop.local = ir.bound_names(tuple(body)) | {lp.var.name for lp, _ in links} | \
                {d.var.name for _, pre in links for d in pre}
            inner = coop.block(body)
        except _NoCoop:
            return None
        if not coop.reductions:
            return None
        if all(isinstance(w, Const) and w.value < self.t.coop_min_work for w in coop.work):
            return None  # short reductions: one thread per output does them as fast
        pre, trips, total = self.trips(links)
        self.coop_work = None
        if None not in coop.work and not any(isinstance(w, Const) and
                                             w.value >= self.t.coop_min_work for w in coop.work):
            for w in coop.work:
                c = ir.ge(w, Const(self.t.coop_min_work))
                self.coop_work = c if self.coop_work is None else self.coop_work | c
        gb = Var(self.names("gb"))
        dec = self.decompose(links, gb, trips, "gq")
        blk = tuple(coop.allocs) + tuple(dec) + tuple(inner) + (Barrier(),)
        return pre + [Loop(gb, 0, total, blk, "block_x")], total, total

    # -- block 0
    def one_block(self, stmts):
        b = Var(self.names("gb"))
        try:
            coop = _Coop(self)
            inner = coop.block(tuple(stmts))
            if coop.parallel:
                return [Loop(b, 0, 1, tuple(coop.allocs) + tuple(inner), "block_x")]
        except _NoCoop:
            pass
        t = Var(self.names("gt"))
        return [Loop(b, 0, 1, (Loop(t, 0, 1, tuple(stmts), "thread_x"),), "block_x")]


def hoist_common_loops_in(body):
    """hoist_common_loops applied to the trailing run of loops of a body (after Declares)."""
    body = tuple(body)
    k = 0
    while k < len(body) and isinstance(body[k], Declare):
        k += 1
    rest = body[k:]
    if len(rest) >= 2:
        return body[:k] + tuple(hoist_common_loops(rest))
    return body


class _Coop:
    """Statements run by all threads of a block together (see the module docstring)."""

    def __init__(self, binder):
        self.b = binder
        self.T = binder.T
        self.allocs = []
        self.reductions = 0
        #: whether a loop was spread over the threads (else one thread would do as well)
        self.parallel = False
        #: per reduction, the iterations its threads share (an Expr, or None: unknown)
        self.work = []
        #: names bound inside the statements being transformed (not visible at the top)
        self.local = set()

    def fail(self, why):
        raise _NoCoop(why)

    def block(self, stmts):
        out = []
        dirty = False     # threads wrote memory since the last barrier
        uread = set()     # buffers uniform code read since the last barrier

        def sync():
            nonlocal dirty, uread
            if out and not isinstance(out[-1], Barrier):
                out.append(Barrier())
            dirty, uread = False, set()

        for s in stmts:
            t = type(s)
            if t is Barrier:
                sync()
                continue
            if t is Alloc:
                self.fail("a local buffer in a block-cooperative body")
            if dirty and _touches_memory(s):
                sync()
            if t in (Declare, Assign):
                uread |= _reads(s)
                out.append(s)
            elif t is Store:
                if s.buf.name in uread:
                    sync()
                out.append(self.single(s))
                dirty = True
            elif t is If:
                if _writes(s) & uread:
                    sync()
                out.append(If(s.cond, tuple(self.block(s.then)) + (Barrier(),),
                              tuple(self.block(s.orelse)) + (Barrier(),)))
                dirty, uread = False, set()
            elif t is Loop:
                outer = _assigned(s) - ir.bound_names(s)
                if not outer and parallel_safe(s, trust_parallel=True):
                    if _writes(s) & uread:
                        sync()
                    out.append(Loop(s.var, s.start, s.stop, s.body, "thread_x", s.step))
                    self.parallel = True
                    dirty = dirty or bool(_writes(s))
                elif outer:
                    if _writes(s):
                        self.fail("a reduction loop that also stores")
                    out.extend(self.reduction(s, outer))
                    sync()
                else:
                    if s.kind in ir.GPU_LOOP_KINDS:
                        self.fail("a GPU loop")
                    inner = tuple(self.block(s.body))
                    sync()
                    out.append(Loop(s.var, s.start, s.stop, inner + (Barrier(),), "serial",
                                    s.step))
            else:
                self.fail(f"cannot run a {t.__name__} cooperatively")
        return out

    def single(self, s):
        t = Var(self.b.names("gt"))
        return Loop(t, 0, 1, (s,), "thread_x")

    # -- reductions
    def reduction(self, loop, accs):
        """A loop that reduces into the block-level locals accs: threads take strided parts
        of its innermost loop, then a shared-memory tree combines their partials."""
        ops = {}
        defs = {}
        for n in ir.walk(loop):
            if isinstance(n, Declare):
                defs[n.var.name] = n
        # the distributed loop: the innermost on the single-loop spine
        spine, cur = [loop], loop
        while True:
            inner = [x for x in cur.body if isinstance(x, Loop)]
            if len(inner) != 1 or any(isinstance(x, (If, Alloc, Store)) for x in cur.body):
                break
            cur = inner[0]
            spine.append(cur)
        d = spine[-1]
        if d.kind in ir.GPU_LOOP_KINDS or any(isinstance(n, (Store, Alloc, Barrier))
                                              for n in ir.walk(loop)):
            self.fail("not a pure reduction")
        partial = _assigned(d) - ir.bound_names(d)
        for acc in partial | accs:
            ops[acc] = self._reduction_op(loop if acc in accs else d, acc)
        inner_partials = partial - accs
        outside_d = _assigned(tuple(x for x in ir.walk(loop) if isinstance(x, Assign)
                                    and not any(x is y for y in ir.walk(d))))
        for p in inner_partials:
            if p in outside_d:
                self.fail(f"partial {p} is also assigned outside the distributed loop")
            dp = defs.get(p)
            if dp is None or dp.init != ir.reduce_identity(ops[p], dp.var.dtype):
                self.fail(f"partial {p} does not start at its identity")
            # used after d only as `a = a op p` with the same op
            for n in ir.walk(loop):
                if isinstance(n, Assign) and n.var.name not in partial and \
                        p in ir.free_vars(n.value):
                    if n.var.name not in ops or ops[n.var.name] != ops[p] or \
                            n.value != BinOp(ops[p], n.var, Var(p, n.var.dtype)) and \
                            n.value != BinOp(ops[p], Var(p, n.var.dtype), n.var):
                        self.fail(f"partial {p} is used otherwise")
        for lp in spine[:-1]:
            if (ir.free_vars(lp.start) | ir.free_vars(lp.stop)) & (partial | accs):
                self.fail("loop bounds depend on an accumulator")
        if (ir.free_vars(d.start) | ir.free_vars(d.stop)) & (partial | accs):
            self.fail("loop bounds depend on an accumulator")
        for acc in accs:
            if acc not in _assigned(loop):
                self.fail("?")
        T = self.T
        # how many iterations the threads share: the distributed loop's trip count, outer
        # spine loops at their first iteration (None: unknown here)
        est = _trip(d)
        est = ir.substitute(est, {lp.var.name: lp.start for lp in spine[:-1]}) \
            if not isinstance(est, Const) else est
        self.work.append(est if not (ir.free_vars(est) & self.local) else None)
        names = self.b.names
        t = Var(names("gt"))
        renames = {a: names(f"{a}_p") for a in sorted(accs)}
        new_d = Loop(d.var, _add(d.start, _mul(t, d.step)), d.stop, d.body, "serial",
                     d.step * T)
        new_loop = ir.replace_stmt(Kernel("tmp", (), (loop,)), d, new_d).body[0]
        new_loop = ir.rename(new_loop, renames)
        dtypes = {}
        for n in ir.walk(loop):
            if isinstance(n, Assign) and n.var.name in accs:
                dtypes[n.var.name] = n.var.dtype
        shared = {}
        for a in sorted(accs):
            sm = LocalBuffer(names(f"red_{a}"), dtypes[a], (T,), "shared")
            self.allocs.append(Alloc(sm))
            self.b.shared_bytes += T * ir.itemsize(dtypes[a])
            shared[a] = sm
        if self.b.shared_bytes > self.b.t.shared_memory_bytes:
            self.fail("too much shared memory")
        body = [Declare(Var(renames[a], dtypes[a]), ir.reduce_identity(ops[a], dtypes[a]))
                for a in sorted(accs)]
        body.append(new_loop)
        body += [shared[a].store((t,), Var(renames[a], dtypes[a])) for a in sorted(accs)]
        out = [Loop(t, 0, T, tuple(body), "thread_x"), Barrier()]
        s = T // 2
        while s >= 1:
            u = Var(names("gt"))
            out.append(Loop(u, 0, s, tuple(
                shared[a].store((u,), BinOp(ops[a], shared[a][u], shared[a][u + s]))
                for a in sorted(accs)), "thread_x"))
            out.append(Barrier())
            s //= 2
        for a in sorted(accs):
            v = Var(a, dtypes[a])
            out.append(Assign(v, BinOp(ops[a], v, shared[a][Const(0)])))
        self.reductions += 1
        self.parallel = True
        return out

    def _reduction_op(self, loop, acc):
        op = None
        for n in ir.walk(loop):
            if isinstance(n, Assign) and n.var.name == acc:
                v = n.value
                x, vop = None, None
                if isinstance(v, BinOp) and v.op in ir.REDUCE_OPS:
                    vop = v.op
                    if v.a == n.var:
                        x = v.b
                    elif v.b == n.var:
                        x = v.a
                elif isinstance(v, ir.FMA) and v.c == n.var:  # acc = a*b + acc
                    vop, x = "add", BinOp("mul", v.a, v.b)
                if x is None or acc in ir.free_vars(x):
                    self.fail(f"{acc} is not reduced with a reduction op")
                if op not in (None, vop):
                    self.fail(f"{acc} is reduced with two ops")
                op = vop
        reads = sum(1 for n in ir.walk(loop) if isinstance(n, Var) and n.name == acc)
        assigns = sum(1 for n in ir.walk(loop) if isinstance(n, Assign) and n.var.name == acc)
        if reads != assigns:
            self.fail(f"{acc} is read inside its reduction")
        if op is None:
            self.fail(f"{acc} is not assigned")
        return op


# ----------------------------------------------------------------------------- entry point

def bind(kernel, target=None):
    """GpuLaunches for a (scalar) kernel: see the module docstring."""
    target = target or GpuTarget()
    parts = split_parts(kernel.body)
    binder = _Binder(kernel, target)
    if parts is None:  # dependences that launches cannot express: all of it on block 0
        parts = None
        body = binder.one_block(list(kernel.body))
        return [GpuLaunch(kernel.with_body(body), (binder.T, 1, 1), (Const(1), Const(1), Const(1)))]
    launches = []
    for k, stmts in enumerate(parts):
        binder.shared_bytes = 0
        groups = _top_groups(tuple(stmts))
        out, grids = [], []
        for g in groups:
            if len(g) > 1:
                out.extend(binder.bind_group(g))
                grids.append(Const(1))
            else:
                o, gr = binder.part(g)
                out.extend(o)
                grids.extend(gr)
        grid = grids[0] if grids else Const(1)
        for g in grids[1:]:
            grid = _max(grid, g)
        grid = _grid_expr(out, grid, target)
        name = kernel.name if len(parts) == 1 else f"{kernel.name}_p{k}"
        launches.append(GpuLaunch(Kernel(name, kernel.params, tuple(out)), (binder.T, 1, 1),
                                  (grid, Const(1), Const(1))))
    return launches


def _grid_expr(body, grid, target):
    """The grid expression with top-level Declares inlined and clamped to [1, max_grid];
    None when it reads memory (the runtime then picks a default)."""
    defs = {s.var.name: s.init for s in body if isinstance(s, Declare)}
    g = _inline(grid, defs, 0)
    for _ in range(8):
        g = _inline(g, defs, 0)
    if ir.free_vars(g) or _touches_memory(g):
        return None
    return _min(_max(g, 1), target.max_grid)


def infer_launch(kernel, target=None):
    """The launch of a kernel a GPU builder already scheduled: block sizes from the constant
    extents of its thread loops, grid from the trip counts of its block loops."""
    target = target or GpuTarget()
    block = [1, 1, 1]
    grid = [Const(1), Const(1), Const(1)]
    axes = "xyz"
    for n in ir.walk(kernel):
        if isinstance(n, Loop) and n.kind.startswith("thread_"):
            a = axes.index(n.kind[-1])
            ext = _trip(n)
            if isinstance(ext, Const):
                block[a] = max(block[a], ext.value)
        if isinstance(n, Loop) and n.kind.startswith("block_"):
            a = axes.index(n.kind[-1])
            grid[a] = _trip(n)
    defs = {s.var.name: s.init for s in kernel.body if isinstance(s, Declare)}
    out = []
    for a, g in enumerate(grid):
        for _ in range(8):
            g = _inline(g, defs, 0)
        cap = target.max_grid if a == 0 else 65535  # CUDA's limit on gridDim.y / .z
        out.append(None if ir.free_vars(g) or _touches_memory(g) else _min(_max(g, 1), cap))
    if math.prod(block) > target.max_threads_per_block:
        raise KernelIRError(f"kernel {kernel.name!r}: block {block} exceeds "
                            f"{target.max_threads_per_block} threads")
    return GpuLaunch(kernel, tuple(block), tuple(out))


def gpu_schedule(kernel, target=None):
    """A lowered kernel -> GpuKernel with its launches (see the module docstring)."""
    target = target or GpuTarget()
    if _is_gpu(kernel):
        ir.verify(kernel)
        return GpuKernel(kernel.name, kernel, [infer_launch(kernel, target)])
    k = scalarize(kernel)
    k = _normalize_kinds(k)
    launches = bind(k, target)
    for launch in launches:
        ir.verify(launch.kernel)
    return GpuKernel(kernel.name, kernel, launches)


def _normalize_kinds(kernel):
    def fn(n):
        if isinstance(n, Loop) and n.kind == "vectorize":
            return dataclasses.replace(n, kind="serial")
        return n
    return kernel.with_body(ir.map_nodes(kernel.body, fn))


__all__ = ["GpuTarget", "GpuLaunch", "GpuKernel", "gpu_schedule", "scalarize", "split_parts",
           "bind", "parallel_safe", "hoist_common_loops", "infer_launch"]
