"""``bind``: per launch, per top-level statement, loops bound to blocks and threads (flat
parallel chains, outer loops to blocks, block-per-output reductions, block 0 for the rest);
see engine/gpu/__init__.py."""

from __future__ import annotations

from engine import kernel_ir as ir
from engine.gpu.dependence import _inline, hoist_common_loops_in, parallel_safe
from engine.gpu.exprs import (
    _add,
    _assigned,
    _cdiv,
    _max,
    _min,
    _mul,
    _Names,
    _reads,
    _touches_memory,
    _trip,
    _writes,
)
from engine.gpu.grid_reduce import two_pass
from engine.gpu.parts import _top_groups, split_parts
from engine.gpu.reduce import _Coop, _NoCoop
from engine.gpu.target import GpuLaunch, GpuTarget
from engine.kernel_ir import Barrier, BinOp, Const, Declare, If, Kernel, Loop, Var


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
        name = kernel.name if len(parts) == 1 else f"{kernel.name}_p{k}"
        two = two_pass(kernel, stmts, binder, name,
                       lambda body, g: _grid_expr(body, g, target)) if len(groups) == 1 else None
        if two is not None:  # a reduction to a scalar: over many blocks, then one
            launches.extend(two)
            continue
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
