"""Loop transforms on kernel IR: pure functions from a ``Loop`` to the statements replacing it.

Each transform takes a ``Loop`` and returns a tuple of statements; ``transform(kernel, var,
fn, *args)`` applies one to the loop over ``var`` and returns the new kernel::

    k = transform(k, "j", vectorize, 16)     # j-loop -> 16-lane vector loop + scalar rest
    k = transform(k, "i", mark_parallel)      # i-loop runs over row blocks on all threads

``split(loop, f)``       i -> i_o * f + i_i: an outer loop over blocks of f, an inner loop of
                         f iterations, and a remainder loop (omitted when bounds are constant
                         and f divides the trip count).
``vectorize(loop, w)``   a ``kind="vectorize"`` loop of step w whose body computes w lanes at
                         once, then a scalar remainder loop. The loop index may appear in the
                         LAST index of loads/stores with coefficient 1 (``A[r, i + c]``), and of
                         loads with a constant coefficient 2..MAX_LOAD_STRIDE (``A[r, 2*i + c]``:
                         the span the lanes cover is loaded and every s-th lane kept, a
                         ``Shuffle``); other uses become ``Ramp``s; locals that vary with i
                         become vectors. An interleaved store group, s consecutive stores
                         ``A[r, s*i + c] .. A[r, s*i + c + s-1]`` (s <= MAX_LOAD_STRIDE: Philox's
                         four words a block), becomes s contiguous vector stores of lanes
                         interleaved by ``Shuffle``s.
                         Accumulators declared outside (``acc = acc + x``, op in add mul min max
                         and or xor) get a vector partial and a ``ReduceLanes`` after the loop
                         (this reassociates float sums, as any vectorizer does). Refused, with
                         a KernelIRError: gathers, other strided stores, stores to an index invariant
                         in i, an If on a condition that varies with i, and loads of a stored
                         buffer at another index (a possible loop-carried dependence).
``unroll(loop, f)``      f copies of the body per iteration (step f) and a remainder loop;
                         locals of copies 1.. are renamed ``name_u1``...
``mark_parallel(loop)``  the same loop with ``kind="parallel"``.

Loops with ``step != 1`` are refused by split/vectorize/unroll (transform them first).
"""

from __future__ import annotations

import dataclasses

from engine import kernel_ir as ir
from engine.kernel_ir import Const, KernelIRError, Var

#: the largest constant stride along the loop index a vectorized load takes (as a load of the
#: (lanes - 1) * stride + 1 elements the lanes span and a shuffle); larger: refused
MAX_LOAD_STRIDE = 4

# ----------------------------------------------------------------------------- arithmetic
# Tiny constant-folding builders so transformed kernels stay readable.

def _add(a, b):
    if isinstance(a, Const) and isinstance(b, Const):
        return Const(a.value + b.value, a.dtype)
    if isinstance(a, Const) and a.value == 0:
        return b
    if isinstance(b, Const) and b.value == 0:
        return a
    return ir.binop("add", a, b)


def _sub(a, b):
    if isinstance(a, Const) and isinstance(b, Const):
        return Const(a.value - b.value, a.dtype)
    if isinstance(b, Const) and b.value == 0:
        return a
    return ir.binop("sub", a, b)


def _mul(a, f):
    if isinstance(a, Const):
        return Const(a.value * f, a.dtype)
    return a if f == 1 else ir.binop("mul", a, f)


def _floordiv(a, f):
    if isinstance(a, Const):
        return Const(a.value // f, a.dtype)
    return a if f == 1 else ir.binop("floordiv", a, f)


def _trip(loop):
    """max(stop - start, 0), folded; Dim - 0 needs no max."""
    n = _sub(loop.stop, loop.start)
    if isinstance(n, Const):
        return Const(max(n.value, 0))
    if isinstance(n, ir.Dim):
        return n
    return ir.binop("max", n, 0)


def _check(loop, factor, what):
    if not isinstance(loop, ir.Loop):
        raise KernelIRError(f"{what} takes a Loop, got {type(loop).__name__}")
    if loop.step != 1:
        raise KernelIRError(f"{what}: loop {loop.var.name!r} has step {loop.step}; only step 1")
    if not isinstance(factor, int) or factor < 1:
        raise KernelIRError(f"{what}: factor must be an int >= 1, got {factor!r}")


def _offset(e):
    """(base, c) with e = base + c for a constant int c (0 when e has no constant term)."""
    if isinstance(e, ir.BinOp) and e.op == "add" and isinstance(e.b, Const):
        return e.a, e.b.value
    return e, 0


def _fresh(name, taken):
    cand, k = name, 0
    while cand in taken:
        k += 1
        cand = f"{name}{k}"
    taken.add(cand)
    return cand


def _names(node):
    return ir.free_vars(node) | ir.bound_names(node)


def _main_and_rest(loop, factor):
    """(end of the main part, whether a remainder loop is needed)."""
    n = _trip(loop)
    main = _mul(_floordiv(n, factor), factor)
    exact = isinstance(n, Const) and n.value % factor == 0
    return _add(loop.start, main), not exact


# ----------------------------------------------------------------------------- transforms

def split(loop, factor):
    _check(loop, factor, "split")
    taken = _names(loop)
    i = loop.var
    io, ii = Var(_fresh(i.name + "_o", taken)), Var(_fresh(i.name + "_i", taken))
    body = ir.substitute(loop.body, {i.name: _add(loop.start, _add(_mul(io, factor), ii))})
    inner = ir.Loop(ii, 0, factor, body)
    outer = ir.Loop(io, 0, _floordiv(_trip(loop), factor), (inner,), kind=loop.kind)
    end, rest = _main_and_rest(loop, factor)
    out = (outer,)
    if rest:
        out += (ir.Loop(i, end, loop.stop, loop.body),)
    return out


def unroll(loop, factor):
    _check(loop, factor, "unroll")
    taken = _names(loop)
    i = loop.var
    declared = ir.bound_names(loop.body)
    copies = []
    for k in range(factor):
        body = loop.body
        if k:
            body = ir.rename(body, {n: _fresh(f"{n}_u{k}", taken) for n in sorted(declared)})
        copies.extend(ir.substitute(body, {i.name: _add(i, Const(k))}))
    end, rest = _main_and_rest(loop, factor)
    kind = "serial" if loop.kind == "unroll" else loop.kind
    out = (ir.Loop(i, loop.start, end, tuple(copies), kind=kind, step=factor),)
    if rest:
        out += (ir.Loop(i, end, loop.stop, loop.body),)
    return out


def mark_parallel(loop):
    if not isinstance(loop, ir.Loop):
        raise KernelIRError(f"mark_parallel takes a Loop, got {type(loop).__name__}")
    return (dataclasses.replace(loop, kind="parallel"),)


def vectorize(loop, width):
    _check(loop, width, "vectorize")
    v = _Vectorizer(loop, width)
    body = v.body(loop.body)
    end, rest = _main_and_rest(loop, width)
    pro, epi = [], []
    for acc, (op, vec) in v.reductions.items():
        pro.append(ir.Declare(vec, ir.Broadcast(ir.reduce_identity(op, vec.dtype), width)))
        scalar = Var(acc, vec.dtype)
        epi.append(ir.Assign(scalar, ir.BinOp(op, scalar, ir.ReduceLanes(op, vec))))
    main = ir.Loop(loop.var, loop.start, end, body, kind="vectorize", step=width)
    out = (*pro, main, *epi)
    if rest:
        out += (ir.Loop(loop.var, end, loop.stop, loop.body),)
    return out


def vector_buffers(stmts):
    """(buffer params that stmts load or store whole vectors of, sorted by name; the names of
    those only loaded)."""
    bufs, stored = {}, set()
    for n in ir.walk(tuple(stmts)):
        if isinstance(n, ir.Load) and n.lanes > 1 or isinstance(n, ir.Store) and n.value.lanes > 1:
            if isinstance(n.buf, ir.BufferParam):
                bufs[n.buf.name] = n.buf
        if isinstance(n, ir.Store):
            stored.add(n.buf.name)
    return [bufs[k] for k in sorted(bufs)], {k for k in bufs if k not in stored}


def guard_unit_strides(parts, loop, cond=None):
    """``if (cond and every vector-accessed buffer is contiguous along its last axis) parts
    else loop``: the vectorized form runs on contiguous rows (a buffer only loaded may also
    be a broadcast, last stride 0: the gradient of a sum is a 0-stride array of ones), the
    scalar loop on any others. A backend specializes the branch on the test
    (kernel_ir.unit_stride_tested): without it, the LLVM renderer wrote a second, gathering
    copy of every vector loop, a quarter of a LeNet step's LLVM time, for strided operands
    that the scalar loop handles in a fraction of the code."""
    bufs, loaded = vector_buffers(parts)
    test = ir.unit_stride_test(bufs, [b for b in bufs if b.name in loaded])
    if test is not None:
        cond = test if cond is None else ir.binop("and", cond, test)
    if cond is None:
        return tuple(parts)
    return (ir.If(cond, tuple(parts), (loop,)),)


def transform(kernel, var, fn, *args, **kwargs):
    """Apply ``fn(loop, *args)`` to the loop of kernel over ``var``; returns the new kernel."""
    loop = ir.find_loop(kernel, var)
    return ir.replace_stmt(kernel, loop, tuple(fn(loop, *args, **kwargs)))


class _Vectorizer:
    def __init__(self, loop, width):
        self.loop, self.i, self.w = loop, loop.var.name, width
        self.taken = _names(loop)
        self.local = ir.bound_names(loop.body)
        self.reductions = {}  # outer accumulator name -> (op, vector Var)
        # locals whose value depends on i, directly or through other locals: a fixpoint over
        # the names each definition reads (collected in one walk)
        defs = [(n.var.name, ir.free_vars(n.init if isinstance(n, ir.Declare) else n.value))
                for n in ir.walk(loop.body)
                if isinstance(n, (ir.Declare, ir.Assign)) and n.var.name in self.local]
        self.varying = set()
        changed = True
        while changed:
            changed = False
            for name, reads in defs:
                if name not in self.varying and (self.i in reads or reads & self.varying):
                    self.varying.add(name)
                    changed = True
        self._dep = {}  # id(expr) -> (expr, depends on i); stable once varying is known
        self.check_memory(loop.body)

    def fail(self, node, msg):
        raise KernelIRError(f"vectorize loop {self.i!r}: {msg}\n  at: {ir.describe(node)}")

    def dep(self, e):
        hit = self._dep.get(id(e))
        if hit is None:
            d = any(isinstance(n, Var) and (n.name == self.i or n.name in self.varying)
                    for n in ir.walk(e))
            hit = self._dep[id(e)] = (e, d)  # the node is kept: its id stays unique
        return hit[1]

    def check_memory(self, body):
        stores = {}
        for n in ir.walk(body):
            if isinstance(n, ir.Store):
                stores.setdefault(n.buf.name, set()).add(n.index)
        for n in ir.walk(body):
            if isinstance(n, ir.Load) and n.buf.name in stores \
                    and stores[n.buf.name] != {n.index}:
                self.fail(n, f"{n.buf.name!r} is loaded and stored at different indices "
                             "(a possible loop-carried dependence)")

    def coef(self, e):
        """Coefficient of i if e is affine in i with a constant coefficient, else None."""
        if not self.dep(e):
            return 0
        t = type(e)
        if t is Var:
            return 1 if e.name == self.i else None
        if t is ir.BinOp and e.op in ("add", "sub"):
            a, b = self.coef(e.a), self.coef(e.b)
            if a is None or b is None:
                return None
            return a + b if e.op == "add" else a - b
        if t is ir.BinOp and e.op == "mul":
            for x, y in ((e.a, e.b), (e.b, e.a)):
                if isinstance(y, Const):
                    c = self.coef(x)
                    return None if c is None else c * y.value
        return None

    def access(self, node, index, max_stride=1):
        """The stride of the access along the last axis per step of i: 0 when invariant, 1
        when contiguous, up to ``max_stride``; else fail."""
        coefs = [self.coef(x) for x in index]
        if all(c == 0 for c in coefs):
            return 0
        if all(c == 0 for c in coefs[:-1]) and isinstance(coefs[-1], int) \
                and 1 <= coefs[-1] <= max_stride:
            return coefs[-1]
        self.fail(node, "only the last index may depend on the loop index, as index + "
                        "invariant (gathers and other strided accesses are not vectorized)")

    def load(self, e):
        """A vector load; stride s > 1: the n = (w - 1) * s + 1 elements the lanes span as
        whole w-lane loads (the last one ends at the span's end: nothing past the last lane's
        element is read), then every s-th element picked by a ``Shuffle``."""
        s = self.access(e, e.index, MAX_LOAD_STRIDE)
        w = self.w
        if s == 1:
            return ir.Load(e.buf, e.index, w)
        n = (w - 1) * s + 1
        starts = [k * w for k in range(-(-n // w) - 1)] + [n - w]
        head, last = e.index[:-1], e.index[-1]
        pieces = tuple(ir.Load(e.buf, head + (_add(last, Const(o)),), w) for o in starts)
        picks = []
        for elem in range(0, n, s):
            k = min(elem // w, len(starts) - 1)
            picks.append(k * w + elem - starts[k])
        return ir.Shuffle(pieces, picks)

    def bc(self, e):
        return ir.Broadcast(e, self.w) if e.lanes == 1 else e

    def expr(self, e):
        if e.lanes != 1:
            self.fail(e, "the loop body is already vectorized")
        if not self.dep(e):
            return e
        t = type(e)
        if t is Var:
            if e.name == self.i:
                return ir.Ramp(e, Const(1, e.dtype), self.w)
            return Var(e.name, e.dtype, self.w)
        if t is ir.Load:
            return self.load(e)
        if t is ir.Select:
            cond = self.expr(e.cond)
            return ir.Select(cond, self.bc(self.expr(e.a)), self.bc(self.expr(e.b)))
        if t is ir.Cast:
            return ir.Cast(self.expr(e.value), e.dtype)
        if t in (ir.BinOp, ir.UnOp, ir.FMA):
            kids = {f.name: getattr(e, f.name) for f in dataclasses.fields(e)}
            for k, x in kids.items():
                if isinstance(x, ir.Expr):
                    kids[k] = self.bc(self.expr(x))
            return t(**kids)
        self.fail(e, f"cannot vectorize a {t.__name__}")

    def body(self, body):
        body, out, k = tuple(body), [], 0
        while k < len(body):
            group = self.store_group(body, k)
            if group:
                out += self.interleaved(group)
                k += len(group)
            else:
                out.append(self.stmt(body[k]))
                k += 1
        return tuple(out)

    def store_group(self, body, k):
        """The stores body[k:k+s] if they are an interleaved group: one buffer, the same
        invariant leading indices, last indices ``s*i + c + q`` for q = 0..s-1 in order,
        s in 2..MAX_LOAD_STRIDE; else None."""
        first = body[k]
        if type(first) is not ir.Store or any(self.coef(x) != 0 for x in first.index[:-1]):
            return None
        s = self.coef(first.index[-1])
        if not isinstance(s, int) or not 2 <= s <= MAX_LOAD_STRIDE or k + s > len(body):
            return None
        base, c = _offset(first.index[-1])
        for q in range(1, s):
            st = body[k + q]
            if type(st) is not ir.Store or st.buf != first.buf or st.index[:-1] != first.index[:-1] \
                    or _offset(st.index[-1]) != (base, c + q):
                return None
        return body[k:k + s]

    def interleaved(self, group):
        """An interleaved group's s vectors (lane l of vector q: element s*(i+l) + c + q) as s
        contiguous w-lane stores from element s*i + c: vector j's lane t is element
        e = j*w + t of the span, lane e // s of vector e % s."""
        s, w = len(group), self.w
        buf = group[0].buf
        lanes = [Var(_fresh(f"{buf.name}_q{q}", self.taken), buf.dtype, w) for q in range(s)]
        head, last = group[0].index[:-1], group[0].index[-1]
        return [*(ir.Declare(v, self.bc(self.expr(st.value))) for v, st in zip(lanes, group)),
                *(ir.Store(buf, head + (_add(last, Const(j * w)),),
                           ir.Shuffle(lanes, [(e % s) * w + e // s for e in range(j * w, (j + 1) * w)]))
                  for j in range(s))]

    def stmt(self, s):
        t = type(s)
        if t is ir.Store:
            if not self.access(s, s.index):
                self.fail(s, "the store's index does not depend on the loop index "
                             "(every lane would write the same element)")
            return ir.Store(s.buf, s.index, self.bc(self.expr(s.value)))
        if t is ir.Declare:
            if s.var.name in self.varying:
                return ir.Declare(Var(s.var.name, s.var.dtype, self.w), self.bc(self.expr(s.init)))
            return s
        if t is ir.Assign:
            if s.var.name in self.local:
                if s.var.name in self.varying:
                    return ir.Assign(Var(s.var.name, s.var.dtype, self.w),
                                     self.bc(self.expr(s.value)))
                return s
            return self.reduction(s)
        if t is ir.Loop:
            if self.dep(s.start) or self.dep(s.stop):
                self.fail(s, "inner loop bounds depend on the vectorized index")
            return dataclasses.replace(s, body=self.body(s.body))
        if t is ir.If:
            if self.dep(s.cond):
                self.fail(s, "an If on a condition that varies with the loop index (use Select)")
            return ir.If(s.cond, self.body(s.then), self.body(s.orelse))
        self.fail(s, f"cannot vectorize a {t.__name__}")

    def reduction(self, s):
        acc, v = s.var.name, s.value
        ok = isinstance(v, ir.BinOp) and v.op in ir.REDUCE_OPS
        if ok:
            if v.a == Var(acc, s.var.dtype):
                x = v.b
            elif v.b == Var(acc, s.var.dtype):
                x = v.a
            else:
                ok = False
        if not ok or acc in ir.free_vars(x):
            self.fail(s, f"assignment to {acc!r}, declared outside the loop, is not a "
                         "reduction acc = acc <op> x (op in add mul min max and or xor)")
        reads = sum(1 for n in ir.walk(self.loop.body) if isinstance(n, Var) and n.name == acc)
        assigns = sum(1 for n in ir.walk(self.loop.body)
                      if isinstance(n, ir.Assign) and n.var.name == acc)
        if reads != assigns:
            self.fail(s, f"accumulator {acc!r} is read in the loop outside its reduction")
        if acc in self.reductions and self.reductions[acc][0] != v.op:
            self.fail(s, f"accumulator {acc!r} is reduced with two different ops")
        if acc not in self.reductions:
            vec = Var(_fresh(acc + "_v", self.taken), s.var.dtype, self.w)
            self.reductions[acc] = (v.op, vec)
        vec = self.reductions[acc][1]
        return ir.Assign(vec, ir.BinOp(v.op, vec, self.bc(self.expr(x))))
