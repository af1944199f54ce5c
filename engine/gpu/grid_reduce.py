"""Grid-wide two-pass reductions: a reduction to block-level locals spread over many blocks.

Without this, a part of the shape ``acc = identity; for ...: acc = acc op x; <rest>`` (a full
sum, a mean, a norm: anything reducing to a scalar) runs on block 0 alone. ``two_pass`` makes
it two launches over a scratch buffer of ``GpuTarget.reduce_blocks`` partials per
accumulator (``GpuLaunch.scratch``: the backend allocates it per call and appends it to the
kernel's parameters):

    pass 1, G blocks:  block gb takes a contiguous chunk of the outer reduction loop's
                       iterations; its threads reduce the chunk cooperatively (engine/gpu/
                       reduce.py: strided partials, shared-memory tree); thread 0 stores
                       part_acc[gb]
    pass 2, block 0:   acc = identity; acc = acc op part_acc[j] for j < G (the threads and the
                       tree again), then <rest> as before

``G = min(trip count, reduce_blocks)`` when the trip count is an expression of the parameters
(else ``reduce_blocks``): the same for every run on the same shapes, and the partials are
combined in a fixed order -- no atomics, the same bits on every run (KILN_DETERMINISTIC
needs nothing more). Accumulators must start at their operator's identity.
"""

from __future__ import annotations

from engine import kernel_ir as ir
from engine.gpu.exprs import _add, _assigned, _max, _min, _mul, _trip, _writes
from engine.gpu.reduce import _Coop, _NoCoop
from engine.gpu.target import GpuLaunch
from engine.kernel_ir import Assign, BinOp, BufferParam, Const, Declare, Kernel, Loop, Var


def _shape(stmts):
    """(pre Declares, the reduction loop, the statements after it, accumulators) or None."""
    stmts = list(stmts)
    k = 0
    while k < len(stmts) and isinstance(stmts[k], Declare):
        k += 1
    if k == len(stmts) or not isinstance(stmts[k], Loop):
        return None
    pre, loop, rest = stmts[:k], stmts[k], stmts[k + 1:]
    if loop.kind not in ("serial", "parallel") or _writes(loop) or \
            any(isinstance(n, (ir.Alloc, ir.Barrier)) for n in ir.walk(loop)):
        return None
    accs = sorted(_assigned(loop) - ir.bound_names(loop))
    declared = {d.var.name: d for d in pre}
    if not accs or any(a not in declared for a in accs):
        return None
    assigned_anywhere = _assigned(tuple(stmts))
    for d in pre:  # the other locals of the prelude are copied into both passes: immutable
        if d.var.name not in accs and d.var.name in assigned_anywhere:
            return None
    return pre, loop, rest, [declared[a] for a in accs]


def two_pass(kernel, stmts, binder, name, grid_of):
    """[pass 1, pass 2] GpuLaunches for one part (see the module docstring), or None when the
    part does not have that shape or its loop does not reduce cooperatively. ``grid_of(body,
    expr)``: the launch grid of a body (bind._grid_expr)."""
    t = binder.t
    if not t.reduce_blocks:
        return None
    shape = _shape(stmts)
    if shape is None:
        return None
    pre, loop, rest, acc_decls = shape
    trip = _trip(loop)
    if isinstance(trip, Const) and trip.value < 2:
        return None
    names = binder.names
    try:
        ops = {d.var.name: _Coop(binder)._reduction_op(loop, d.var.name) for d in acc_decls}
    except _NoCoop:
        return None
    if any(d.init != ir.reduce_identity(ops[d.var.name], d.var.dtype) for d in acc_decls):
        return None
    local = {d.var.name for d in pre}
    ng = Var(names("ngrid"))
    g_expr = Const(t.reduce_blocks) if ir.free_vars(trip) & local else \
        _min(_max(trip, 1), t.reduce_blocks)
    scratch = {d.var.name: BufferParam(names(f"part_{d.var.name}"), d.var.dtype, 1)
               for d in acc_decls}
    params = kernel.params + tuple(scratch[d.var.name] for d in acc_decls)
    spec = tuple((p, t.reduce_blocks) for p in params[len(kernel.params):])
    # pass 1: block gb reduces its chunk of the loop into scratch[gb]
    gb, chunk = Var(names("gb")), Var(names("chunk"))
    lo = _add(loop.start, _mul(_mul(gb, chunk), loop.step))
    hi = _min(_add(lo, _mul(chunk, loop.step)), loop.stop)
    mine = Loop(loop.var, lo, hi, loop.body, "serial", loop.step)
    binder.shared_bytes = 0
    try:
        coop = _Coop(binder)
        inner = coop.block(tuple(acc_decls) + (mine,))
    except _NoCoop:
        return None
    stores = [scratch[d.var.name].store((gb,), d.var) for d in acc_decls]
    body1 = [Declare(ng, g_expr),
             Loop(gb, 0, ng, [*[d for d in pre if d not in acc_decls],
                              Declare(chunk, BinOp("div", trip + (ng - 1), ng)),
                              *coop.allocs, *inner,
                              Loop(Var(names("gt")), 0, 1, tuple(stores), "thread_x")], "block_x")]
    # pass 2: block 0 combines the G partials in order, then runs the rest
    j = Var(names("gj"))
    combine = Loop(j, 0, ng, [Assign(d.var, BinOp(ops[d.var.name], d.var, scratch[d.var.name][j]))
                              for d in acc_decls], "serial")
    binder.shared_bytes = 0
    body2 = [Declare(ng, g_expr)] + binder.one_block(list(pre) + [combine] + list(rest))
    grid = grid_of(body1, ng)
    block = (binder.T, 1, 1)
    return [GpuLaunch(Kernel(f"{name}_r1", params, tuple(body1)), block, (grid, Const(1), Const(1)),
                      spec),
            GpuLaunch(Kernel(f"{name}_r2", params, tuple(body2)), block,
                      (Const(1), Const(1), Const(1)), spec)]
