"""Block-cooperative code (``Coop``): statements run by all threads of a block together; a
loop that reduces into block-level locals becomes strided per-thread partials combined by a
shared-memory tree (``Barrier`` between levels). See engine/gpu/__init__.py."""

from __future__ import annotations

from engine import kernel_ir as ir
from engine.gpu.dependence import parallel_safe
from engine.gpu.exprs import _add, _assigned, _mul, _reads, _touches_memory, _trip, _writes
from engine.kernel_ir import Alloc, Assign, Barrier, BinOp, Const, Declare, If, Kernel, LocalBuffer, Loop, Store, Var


class _NoCoop(Exception):
    """The statements do not fit the block-cooperative mapping."""


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
