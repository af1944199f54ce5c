"""Small helpers of the GPU transforms: fresh names, constant-folding integer arithmetic on
kernel-IR expressions, trip counts, and which buffers and locals a statement touches."""

from __future__ import annotations

from engine import kernel_ir as ir
from engine.kernel_ir import Alloc, Assign, BinOp, Const, Declare, Loop, Store, Var


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
