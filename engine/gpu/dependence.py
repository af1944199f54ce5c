"""Whether loop iterations are independent (``parallel_safe``: threads may run them in any
order) and the fusion of sibling loop nests over one index (``hoist_common_loops``)."""

from __future__ import annotations

from engine import kernel_ir as ir
from engine.gpu.exprs import _assigned, _writes
from engine.kernel_ir import Alloc, Assign, Barrier, BinOp, Const, Declare, LocalBuffer, Loop, Store, Var


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
