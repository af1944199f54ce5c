"""``scalarize``: a kernel's CPU vectors (lanes > 1) expanded into scalar statements; see
engine/gpu/__init__.py."""

from __future__ import annotations

from engine import kernel_ir as ir
from engine.gpu.exprs import _add, _Names
from engine.kernel_ir import Assign, BinOp, Const, Declare, If, KernelIRError, Loop, Store, Var


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
        if t is ir.Shuffle:
            j = e.indices[k]
            for v in e.values:
                if j < v.lanes:
                    return self.lane(v, j)
                j -= v.lanes
        raise KernelIRError(f"scalarize: cannot take a lane of {ir.describe(e)}")
