"""Printers of kernel IR: ``listing`` (numbered, SSA-ish, exact) and ``loop_nest`` (C-like).

``listing(kernel)`` is the canonical text of a kernel: one node a line, each computed value
named ``%n``, leaves (constants, variables, shapes, strides) written inline, every type
spelled out. It is exact (it determines the kernel), so backends hash it as the cache key::

    kernel saxpy(x: float32[?], y: float32[?], a: float32)
      1  for i = 0 to x.shape[0] step 1 serial {
      2    %0 = load x[i] : float32
      3    %1 = mul a, %0 : float32
      ...

Constants are written ``3`` (int64), ``true``/``false`` (bool), otherwise ``value:dtype``.

``loop_nest(kernel)`` is for reading: a C-like loop nest with infix operators, fully
parenthesized sub-expressions, ``x[i, j:+16]`` for a 16-lane vector access along the last axis.
``describe(node)`` is the one-line C-like text of any node (used by error messages).
"""

from __future__ import annotations

from engine import kernel_ir as ir

_INFIX = {"add": "+", "sub": "-", "mul": "*", "div": "/", "floordiv": "//", "mod": "%",
          "lt": "<", "le": "<=", "gt": ">", "ge": ">=", "eq": "==", "ne": "!=",
          "and": "&", "or": "|", "xor": "^", "shl": "<<", "shr": ">>"}


def _tn(dtype, lanes):
    return dtype if lanes == 1 else f"{dtype}x{lanes}"


def _const(c):
    if c.dtype == "bool":
        return "true" if c.value else "false"
    if c.dtype == "int64":
        return str(c.value)
    return f"{c.value!r}:{c.dtype}"


def _leaf(e):
    """Inline text of a leaf node, or None."""
    t = type(e)
    if t is ir.Const:
        return _const(e)
    if t is ir.Var or t is ir.ScalarParam:
        return e.name
    if t is ir.Dim:
        return f"{e.buf.name}.shape[{e.axis}]"
    if t is ir.Stride:
        return f"{e.buf.name}.strides[{e.axis}]"
    if t in ir.GPU_INDEX_NODES:
        return {"ThreadIdx": "threadIdx", "BlockIdx": "blockIdx", "BlockDim": "blockDim"}[
            t.__name__] + "." + e.axis
    return None


def _param(p):
    if isinstance(p, ir.BufferParam):
        return f"{p.name}: {p.dtype}[{', '.join('?' * p.ndim)}]"
    return f"{p.name}: {p.dtype}"


# ----------------------------------------------------------------------------- listing

class _Lister:
    def __init__(self):
        self.lines = []
        self.next_value = 0

    def emit(self, depth, text):
        self.lines.append(f"{len(self.lines) + 1:>3}  {'  ' * depth}{text}")

    def expr(self, e, depth, memo):
        leaf = _leaf(e)
        if leaf is not None:
            return leaf
        if e in memo:
            return memo[e]
        t = type(e)
        if t is ir.Load:
            idx = ", ".join(self.expr(x, depth, memo) for x in e.index)
            text = f"load {e.buf.name}[{idx}]" + (f" x{e.lanes}" if e.lanes > 1 else "")
        elif t is ir.BinOp or t is ir.FMA or t is ir.Select or t is ir.Ramp:
            ops = [self.expr(x, depth, memo) for x in e.children()]
            name = {ir.BinOp: getattr(e, "op", ""), ir.FMA: "fma", ir.Select: "select",
                    ir.Ramp: "ramp"}[t]
            text = f"{name} {', '.join(ops)}"
        elif t is ir.UnOp:
            text = f"{e.op} {self.expr(e.a, depth, memo)}"
        elif t is ir.Cast:
            text = f"cast {self.expr(e.value, depth, memo)}"
        elif t is ir.Broadcast:
            text = f"broadcast {self.expr(e.value, depth, memo)}"
        elif t is ir.ReduceLanes:
            text = f"reduce_{e.op} {self.expr(e.value, depth, memo)}"
        elif t is ir.Shuffle:
            ops = ", ".join(self.expr(x, depth, memo) for x in e.values)
            text = f"shuffle {ops} [{' '.join(map(str, e.indices))}]"
        else:
            text = f"<{t.__name__}>"
        name = f"%{self.next_value}"
        self.next_value += 1
        self.emit(depth, f"{name} = {text} : {_tn(e.dtype, e.lanes)}")
        memo[e] = name
        return name

    def body(self, body, depth):
        for s in body:
            self.stmt(s, depth)

    def stmt(self, s, depth):
        memo = {}
        t = type(s)
        if t is ir.Loop:
            a, b = self.expr(s.start, depth, memo), self.expr(s.stop, depth, memo)
            self.emit(depth, f"for {s.var.name} = {a} to {b} step {s.step} {s.kind} {{")
            self.body(s.body, depth + 1)
            self.emit(depth, "}")
        elif t is ir.Store:
            idx = ", ".join(self.expr(x, depth, memo) for x in s.index)
            v = self.expr(s.value, depth, memo)
            lanes = f" x{s.value.lanes}" if s.value.lanes > 1 else ""
            self.emit(depth, f"store {s.buf.name}[{idx}]{lanes} = {v}")
        elif t is ir.Declare:
            v = self.expr(s.init, depth, memo)
            self.emit(depth, f"decl {s.var.name}: {_tn(s.var.dtype, s.var.lanes)} = {v}")
        elif t is ir.Assign:
            v = self.expr(s.value, depth, memo)
            self.emit(depth, f"{s.var.name} = {v}")
        elif t is ir.If:
            c = self.expr(s.cond, depth, memo)
            self.emit(depth, f"if {c} {{")
            self.body(s.then, depth + 1)
            if s.orelse:
                self.emit(depth, "} else {")
                self.body(s.orelse, depth + 1)
            self.emit(depth, "}")
        elif t is ir.Alloc:
            b = s.buf
            self.emit(depth, f"alloc {b.scope} {b.name}: {b.dtype}{list(b.shape)}")
        elif t is ir.Barrier:
            self.emit(depth, "barrier")
        else:
            self.emit(depth, f"<{t.__name__}>")


def listing(kernel):
    """The numbered, exact text of a kernel (see the module docstring)."""
    lst = _Lister()
    lst.body(kernel.body, 0)
    head = f"kernel {kernel.name}({', '.join(_param(p) for p in kernel.params)})"
    return "\n".join([head] + lst.lines) + "\n"


# ----------------------------------------------------------------------------- loop nest

_C_CONST_SUFFIX = {"float32": "f", "uint32": "u", "uint64": "u"}


def cexpr(e, top=True):
    """C-like text of an expression."""
    t = type(e)
    if t is ir.Const:
        if e.dtype == "bool":
            return "true" if e.value else "false"
        return repr(e.value) + _C_CONST_SUFFIX.get(e.dtype, "")
    leaf = _leaf(e)
    if leaf is not None:
        return leaf
    if t is ir.Load:
        idx = [cexpr(x) for x in e.index]
        if e.lanes > 1:
            idx[-1] += f":+{e.lanes}"
        return f"{e.buf.name}[{', '.join(idx)}]"
    if t is ir.BinOp:
        if e.op in _INFIX:
            s = f"{cexpr(e.a, False)} {_INFIX[e.op]} {cexpr(e.b, False)}"
            return s if top else f"({s})"
        return f"{e.op}({cexpr(e.a)}, {cexpr(e.b)})"
    if t is ir.UnOp:
        if e.op == "neg":
            return f"-{cexpr(e.a, False)}"
        if e.op == "not":
            return ("!" if e.dtype == "bool" else "~") + cexpr(e.a, False)
        return f"{e.op}({cexpr(e.a)})"
    if t is ir.FMA:
        return f"fma({cexpr(e.a)}, {cexpr(e.b)}, {cexpr(e.c)})"
    if t is ir.Cast:
        return f"({_tn(e.dtype, e.lanes)}){cexpr(e.value, False)}"
    if t is ir.Select:
        s = f"{cexpr(e.cond, False)} ? {cexpr(e.a, False)} : {cexpr(e.b, False)}"
        return s if top else f"({s})"
    if t is ir.Broadcast:
        return f"broadcast{e.lanes}({cexpr(e.value)})"
    if t is ir.Ramp:
        return f"ramp{e.lanes}({cexpr(e.base)}, {cexpr(e.stride)})"
    if t is ir.ReduceLanes:
        return f"reduce_{e.op}({cexpr(e.value)})"
    if t is ir.Shuffle:
        return f"shuffle({', '.join(cexpr(x) for x in e.values)}, {{{', '.join(map(str, e.indices))}}})"
    return repr(e)


def _cstmt(s, depth, out):
    pad = "  " * depth
    t = type(s)
    if t is ir.Loop:
        v = s.var.name
        prefix = "" if s.kind == "serial" else s.kind + " "
        out.append(f"{pad}{prefix}for (int64 {v} = {cexpr(s.start)}; {v} < {cexpr(s.stop)}; "
                   f"{v} += {s.step}) {{")
        for x in s.body:
            _cstmt(x, depth + 1, out)
        out.append(pad + "}")
    elif t is ir.Store:
        idx = [cexpr(x) for x in s.index]
        if s.value.lanes > 1:
            idx[-1] += f":+{s.value.lanes}"
        out.append(f"{pad}{s.buf.name}[{', '.join(idx)}] = {cexpr(s.value)};")
    elif t is ir.Declare:
        out.append(f"{pad}{_tn(s.var.dtype, s.var.lanes)} {s.var.name} = {cexpr(s.init)};")
    elif t is ir.Assign:
        out.append(f"{pad}{s.var.name} = {cexpr(s.value)};")
    elif t is ir.If:
        out.append(f"{pad}if ({cexpr(s.cond)}) {{")
        for x in s.then:
            _cstmt(x, depth + 1, out)
        if s.orelse:
            out.append(pad + "} else {")
            for x in s.orelse:
                _cstmt(x, depth + 1, out)
        out.append(pad + "}")
    elif t is ir.Alloc:
        b = s.buf
        shared = "__shared__ " if b.scope == "shared" else ""
        out.append(f"{pad}{shared}{b.dtype} {b.name}{''.join(f'[{d}]' for d in b.shape)};")
    elif t is ir.Barrier:
        out.append(f"{pad}__syncthreads();")
    else:
        out.append(f"{pad}{s!r};")


def _cparam(p):
    if isinstance(p, ir.BufferParam):
        return f"{p.dtype} {p.name}[{']['.join('?' * p.ndim)}]" if p.ndim else \
            f"{p.dtype} {p.name}[]"
    return f"{p.dtype} {p.name}"


def loop_nest(kernel):
    """A readable C-like loop nest of the kernel."""
    out = [f"kernel {kernel.name}({', '.join(_cparam(p) for p in kernel.params)}) {{"]
    for s in kernel.body:
        _cstmt(s, 1, out)
    out.append("}")
    return "\n".join(out) + "\n"


def describe(node):
    """One-line C-like text of any node (for error messages)."""
    try:
        if isinstance(node, ir.Expr):
            return cexpr(node)
        if isinstance(node, ir.Stmt):
            out = []
            _cstmt(node, 0, out)
            return out[0] + (" ... }" if len(out) > 1 else "")
        if isinstance(node, (ir.BufferParam, ir.ScalarParam)):
            return _param(node)
    except Exception:  # a malformed node must still get a message
        pass
    return repr(node)
