"""``verify(kernel)``: type, scope and well-formedness checks of a kernel-IR Kernel.

Raises ``KernelIRError`` naming the kernel, the problem, the offending node (as C-like text)
and the loop nest around it. Returns the kernel unchanged when it is well formed, so
``compile(verify(k))`` reads naturally. Rules (see engine/kernel_ir.py for the node set):

* every name is defined where read (loop index, ``Declare``d local, scalar parameter);
  no name shadows a visible one; loop indices are read-only; ``Assign`` needs a ``Declare``;
* a Var's dtype/lanes equal its definition's; binary operands agree in dtype and lanes;
  ops are applied to dtypes they support (``pow``/``exp``.. need floats, shifts need ints);
* buffers are kernel parameters or ``Alloc``ed in scope; an index has one int scalar per dim;
* loops: int64 bounds, a known kind, a positive int step, no parallel loop inside another,
  and a parallel body assigns only locals it declares (no races on outer accumulators).
"""

from __future__ import annotations

import re

import numpy as np

from engine import kernel_ir as ir

_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def verify(kernel):
    if not isinstance(kernel, ir.Kernel):
        raise ir.KernelIRError(f"verify() takes a Kernel, got {type(kernel).__name__}")
    _Verifier(kernel).run()
    return kernel


class _Verifier:
    def __init__(self, kernel):
        self.k = kernel
        self.scopes = [{}]          # name -> (kind, dtype, lanes, depth)
        self.buffers = {}           # name -> BufferParam | LocalBuffer
        self.path = []              # enclosing loops, for messages
        self.parallel_depth = None  # scope depth where the innermost parallel loop starts
        self.current = None         # the statement being checked

    def fail(self, node, msg):
        from engine.kernel_print import describe
        where = " > ".join(self.path) or "kernel body"
        stmt = self.current
        ctx = f"\n  statement: {describe(stmt)}" if stmt is not None and stmt is not node else ""
        raise ir.KernelIRError(f"kernel {self.k.name!r}: {msg}\n  at: {describe(node)}{ctx}\n"
                               f"  in: {where}")

    # -- scopes
    def lookup(self, name):
        for scope in reversed(self.scopes):
            if name in scope:
                return scope[name]
        return None

    def define(self, node, name, kind, dtype, lanes):
        if not _IDENT.match(name):
            self.fail(node, f"{name!r} is not a valid identifier")
        if self.lookup(name) is not None or name in self.buffers:
            self.fail(node, f"{name!r} is already defined (names may not shadow)")
        self.scopes[-1][name] = (kind, dtype, lanes, len(self.scopes))

    def run(self):
        k = self.k
        if not isinstance(k.name, str) or not _IDENT.match(k.name):
            raise ir.KernelIRError(f"kernel {k.name!r}: the name is not a valid identifier")
        for p in k.params:
            if isinstance(p, ir.BufferParam):
                if not _IDENT.match(p.name) or p.name in self.buffers or self.lookup(p.name):
                    self.fail(p, f"bad or duplicate parameter name {p.name!r}")
                if not isinstance(p.ndim, int) or p.ndim < 0:
                    self.fail(p, f"buffer {p.name!r}: ndim must be an int >= 0, got {p.ndim!r}")
                self.buffers[p.name] = p
            elif isinstance(p, ir.ScalarParam):
                self.define(p, p.name, "param", p.dtype, 1)
            else:
                raise ir.KernelIRError(f"kernel {k.name!r}: parameter {p!r} is not a "
                                       f"BufferParam or ScalarParam")
        self.block(k.body)

    def block(self, body):
        self.scopes.append({})
        saved = dict(self.buffers)
        for s in body:
            self.stmt(s)
        self.scopes.pop()
        self.buffers = saved

    # -- statements
    def stmt(self, s):
        if not isinstance(s, ir.Stmt):
            self.fail(s, f"expected a statement, got {type(s).__name__}")
        self.current = s
        getattr(self, "s_" + type(s).__name__)(s)

    def s_Loop(self, s):
        if s.kind not in ir.LOOP_KINDS:
            self.fail(s, f"unknown loop kind {s.kind!r}; use one of {ir.LOOP_KINDS}")
        if s.step < 1:
            self.fail(s, f"loop step must be a positive int, got {s.step}")
        for e, what in ((s.start, "start"), (s.stop, "stop")):
            if self.expr(e) != ("int64", 1):
                self.fail(s, f"loop {what} must be an int64 scalar, got {_ty(e)}")
        if not isinstance(s.var, ir.Var) or (s.var.dtype, s.var.lanes) != ("int64", 1):
            self.fail(s, "a loop index must be Var(name, 'int64')")
        outer_parallel = self.parallel_depth
        if s.kind == "parallel":
            if outer_parallel is not None:
                self.fail(s, "a parallel loop may not be nested in another parallel loop")
            self.parallel_depth = len(self.scopes) + 1
        self.scopes.append({})
        self.define(s, s.var.name, "loop", "int64", 1)
        self.path.append(f"loop {s.var.name} ({s.kind})")
        self.block(s.body)
        self.path.pop()
        self.scopes.pop()
        self.parallel_depth = outer_parallel

    def s_Store(self, s):
        buf = self.buffer(s, s.buf)
        self.index(s, buf, s.index)
        dt, lanes = self.expr(s.value)
        if lanes > 1 and buf.ndim == 0:
            self.fail(s, "a vector store needs a buffer with at least one dim")
        if dt != buf.dtype:
            self.fail(s, f"storing {dt} into {buf.dtype} buffer {buf.name!r}; insert a Cast")

    def s_Declare(self, s):
        dt, lanes = self.expr(s.init)
        if (s.var.dtype, s.var.lanes) != (dt, lanes):
            self.fail(s, f"{s.var.name!r} declared {_vt(s.var)} but initialized with {_ty(s.init)}")
        self.define(s, s.var.name, "local", dt, lanes)

    def s_Assign(self, s):
        d = self.lookup(s.var.name)
        if d is None:
            self.fail(s, f"assignment to undeclared {s.var.name!r} (Declare it first)")
        kind, dt, lanes, depth = d
        if kind != "local":
            self.fail(s, f"cannot assign to {kind} {s.var.name!r} (only Declared locals)")
        if self.parallel_depth is not None and depth < self.parallel_depth:
            self.fail(s, f"parallel loop assigns {s.var.name!r}, declared outside it (a race); "
                         "reduce into a buffer or make the loop serial")
        if (s.var.dtype, s.var.lanes) != (dt, lanes):
            self.fail(s, f"{s.var.name!r} is {dt}x{lanes} but the target says {_vt(s.var)}")
        if self.expr(s.value) != (dt, lanes):
            self.fail(s, f"assigning {_ty(s.value)} to {s.var.name!r} of type {_tn(dt, lanes)}")

    def s_If(self, s):
        if self.expr(s.cond) != ("bool", 1):
            self.fail(s, f"If condition must be a bool scalar, got {_ty(s.cond)}")
        self.block(s.then)
        self.block(s.orelse)

    def s_Alloc(self, s):
        b = s.buf
        if not isinstance(b, ir.LocalBuffer):
            self.fail(s, "Alloc takes a LocalBuffer")
        if b.scope not in ("local", "shared"):
            self.fail(s, f"buffer scope must be 'local' or 'shared', got {b.scope!r}")
        if not b.shape or any(d < 1 for d in b.shape):
            self.fail(s, f"local buffer {b.name!r} needs a non-empty positive shape")
        self.define(s, b.name, "buffer", b.dtype, 1)
        self.buffers[b.name] = b

    def s_Barrier(self, s):
        pass

    # -- expressions: return (dtype, lanes)
    def buffer(self, node, buf):
        known = self.buffers.get(getattr(buf, "name", None))
        if known is None:
            self.fail(node, f"unknown buffer {getattr(buf, 'name', buf)!r} (not a parameter "
                            "or Alloc in scope)")
        if known != buf:
            self.fail(node, f"buffer {buf.name!r} does not match its declaration {known!r}")
        return buf

    def index(self, node, buf, index):
        if len(index) != buf.ndim:
            self.fail(node, f"{buf.name!r} has {buf.ndim} dims but is indexed with {len(index)}")
        for e in index:
            dt, lanes = self.expr(e)
            if not ir.is_int(dt) or lanes != 1:
                self.fail(node, f"index {_ty(e)} of {buf.name!r} must be an int scalar")

    def expr(self, e):
        if not isinstance(e, ir.Expr):
            self.fail(e, f"expected an expression, got {type(e).__name__}: {e!r}")
        if e.dtype not in ir.DTYPES:
            self.fail(e, f"unknown dtype {e.dtype!r}")
        if not isinstance(e.lanes, int) or e.lanes < 1:
            self.fail(e, f"lanes must be an int >= 1, got {e.lanes!r}")
        getattr(self, "e_" + type(e).__name__)(e)
        return e.dtype, e.lanes

    def e_Const(self, e):
        if ir.is_int(e.dtype):
            info = np.iinfo(e.dtype)
            if not info.min <= e.value <= info.max:
                self.fail(e, f"constant {e.value} does not fit {e.dtype}")

    def e_Var(self, e):
        d = self.lookup(e.name)
        if d is None:
            self.fail(e, f"{e.name!r} is not defined here")
        if d[0] == "buffer":
            self.fail(e, f"{e.name!r} is a buffer, not a value")
        if (d[1], d[2]) != (e.dtype, e.lanes):
            self.fail(e, f"{e.name!r} is {_tn(d[1], d[2])} but used as {_vt(e)}")

    def e_ScalarParam(self, e):
        if e not in self.k.params:
            self.fail(e, f"scalar {e.name!r} is not a parameter of the kernel")

    def e_Load(self, e):
        self.index(e, self.buffer(e, e.buf), e.index)
        if e.lanes > 1 and e.buf.ndim == 0:
            self.fail(e, "a vector load needs a buffer with at least one dim")

    def e_Dim(self, e):
        buf = self.buffer(e, e.buf)
        if not isinstance(e.axis, int) or not 0 <= e.axis < buf.ndim:
            self.fail(e, f"axis {e.axis!r} out of range for {buf.ndim}-d {buf.name!r}")

    e_Stride = e_Dim

    def e_BinOp(self, e):
        a, b = self.expr(e.a), self.expr(e.b)
        if e.op not in ir.BINARY_OPS:
            self.fail(e, f"unknown binary op {e.op!r}; use one of {ir.BINARY_OPS}")
        if a != b:
            self.fail(e, f"{e.op}: operands differ ({_tn(*a)} vs {_tn(*b)})")
        self.op_dtype(e, e.op, a[0])

    def op_dtype(self, e, op, dt):
        if op in ("pow",) + ir.FLOAT_UNARY_OPS and not ir.is_float(dt):
            self.fail(e, f"{op} needs a float dtype, got {dt}")
        if op in ("shl", "shr", "mulhi") and not ir.is_int(dt):
            self.fail(e, f"{op} needs an int dtype, got {dt}")
        if op in ("and", "or", "xor", "not") and ir.is_float(dt):
            self.fail(e, f"{op} needs an int or bool dtype, got {dt}")
        if op in ("add", "sub", "mul", "div", "floordiv", "mod", "neg") and dt == "bool":
            self.fail(e, f"{op} is not defined on bool; Cast first")

    def e_UnOp(self, e):
        dt, _ = self.expr(e.a)
        if e.op not in ir.UNARY_OPS:
            self.fail(e, f"unknown unary op {e.op!r}; use one of {ir.UNARY_OPS}")
        self.op_dtype(e, e.op, dt)

    def e_FMA(self, e):
        tys = [self.expr(x) for x in (e.a, e.b, e.c)]
        if len(set(tys)) != 1 or not ir.is_float(tys[0][0]):
            self.fail(e, f"fma needs three operands of one float type, got {tys}")

    def e_Cast(self, e):
        self.expr(e.value)

    def e_Select(self, e):
        c, a, b = self.expr(e.cond), self.expr(e.a), self.expr(e.b)
        if c[0] != "bool" or c[1] not in (1, a[1]):
            self.fail(e, f"select condition must be bool with 1 or {a[1]} lanes, got {_tn(*c)}")
        if a != b:
            self.fail(e, f"select branches differ ({_tn(*a)} vs {_tn(*b)})")

    def e_Broadcast(self, e):
        if self.expr(e.value)[1] != 1:
            self.fail(e, "broadcast takes a scalar")

    def e_Ramp(self, e):
        b, s = self.expr(e.base), self.expr(e.stride)
        if b != s or not ir.is_int(b[0]) or b[1] != 1:
            self.fail(e, f"ramp takes int scalars of one dtype, got {_tn(*b)}, {_tn(*s)}")

    def e_Shuffle(self, e):
        tys = [self.expr(x) for x in e.values]
        if not tys or len({dt for dt, _ in tys}) != 1:
            self.fail(e, f"shuffle takes vectors of one dtype, got {[_tn(*t) for t in tys]}")
        n = sum(lanes for _, lanes in tys)
        if not e.indices or any(not 0 <= k < n for k in e.indices):
            self.fail(e, f"shuffle lanes {e.indices} out of the {n} lanes of its values")

    def e_ReduceLanes(self, e):
        dt, _ = self.expr(e.value)
        if e.op not in ir.REDUCE_OPS:
            self.fail(e, f"unknown reduction {e.op!r}; use one of {ir.REDUCE_OPS}")
        self.op_dtype(e, e.op, dt)

    def e_ThreadIdx(self, e):
        if e.axis not in ("x", "y", "z"):
            self.fail(e, f"axis must be 'x', 'y' or 'z', got {e.axis!r}")

    e_BlockIdx = e_BlockDim = e_ThreadIdx


def _tn(dt, lanes):
    return dt if lanes == 1 else f"{dt}x{lanes}"


def _ty(e):
    try:
        return _tn(e.dtype, e.lanes)
    except AttributeError:
        return type(e).__name__


def _vt(v):
    return _tn(v.dtype, v.lanes)
