"""Kiln's loop-level kernel IR: what a backend renders (LLVM for the CPU, CUDA C for GPUs).

A ``Kernel`` is a name, a tuple of parameters and a body of statements. Every node is a
frozen, hashable dataclass; equal trees compare equal, so kernels can be dict keys and
``listing(kernel)`` (the numbered text form) is the cache key of the compiled code.

Types
-----
A dtype is a numpy dtype *name*: ``bool int8 int16 int32 int64 uint8 uint16 uint32 uint64
float32 float64`` (``np.float32`` or ``np.dtype("float32")`` are accepted and normalized).
Every expression has ``.dtype`` and ``.lanes`` (1 for scalars, N for an N-wide vector).
There is no implicit promotion: both operands of a binary op have the same dtype and lanes
(insert ``Cast``/``Broadcast``); Python numbers mixed with an expression take its dtype.

Parameters
----------
``BufferParam(name, dtype, ndim)``  an array: data pointer + runtime shape + strides (in
    elements), so a kernel is generic in every dim. ``A[i, j]`` is ``Load(A, (i, j))`` at
    offset ``i*stride0 + j*stride1``; a stride may be 0 (broadcast). ``A.dim(0)`` and
    ``A.stride(0)`` read the runtime shape/stride. ``A.store((i, j), v)`` builds a ``Store``.
``ScalarParam(name, dtype)``  a scalar argument; it is itself an expression.
``LocalBuffer(name, dtype, shape, scope)``  a fixed-size, row-major scratch array declared
    by ``Alloc``; scope "local" (per thread, stack) or "shared" (a CUDA block's shared memory).

Expressions
-----------
``Const(value, dtype="int64")``  ``Var(name, dtype="int64", lanes=1)`` (loop index, local or
scalar param by name)  ``Load(buf, index, lanes=1)``  ``Dim(buf, axis)``  ``Stride(buf, axis)``
``BinOp(op, a, b)`` with op in BINARY_OPS  ``UnOp(op, a)`` with op in UNARY_OPS
``FMA(a, b, c)`` (fused a*b+c, one rounding)  ``Cast(value, dtype)``  ``Select(cond, a, b)``
``Broadcast(value, lanes)``  ``Ramp(base, stride, lanes)`` (base + k*stride in lane k)
``ReduceLanes(op, value)`` (op in REDUCE_OPS)  ``Shuffle(values, indices)`` (lane k is lane
``indices[k]`` of the vectors ``values`` concatenated)  ``ThreadIdx(axis)`` ``BlockIdx(axis)``
``BlockDim(axis)`` (axis "x"|"y"|"z", int64; GPU only).
Operators build nodes: ``+ - * / // % & | ^ << >> ~ -x`` and ``< <= > >=``. ``==`` and ``!=``
keep structural equality (nodes are dict keys); use ``eq(a, b)`` / ``ne(a, b)`` in the IR.

Semantics: integer ``div`` truncates (C), ``floordiv``/``mod`` follow Python/numpy (``mod``
has the divisor's sign; floats use numpy's divmod); integer division by zero gives 0 (as
numpy). ``shr`` is arithmetic for signed, logical for unsigned; a shift by >= the bit width
gives 0 (or the sign fill). ``mulhi`` is the high half of the double-width product (Philox).
``min``/``max`` propagate NaN (numpy). ``and``/``or``/``xor``/``not`` are bitwise (logical on
bool). A vector ``Load``/``Store`` (lanes N) touches N consecutive elements along the
buffer's LAST axis starting at ``index`` (any runtime stride works; unit stride is fast).

Statements
----------
``Loop(var, start, stop, body, kind="serial", step=1)``  for var in range(start, stop, step);
    kind in LOOP_KINDS: serial parallel vectorize unroll, and block_x.. thread_z for CUDA.
``Store(buf, index, value)``  ``Declare(var, init)``  ``Assign(var, value)``
``If(cond, then, orelse=())``  ``Alloc(buf)`` / ``SharedAlloc(name, dtype, shape)``
``Barrier()``.  Bodies are tuples of statements (lists and single statements are accepted).
Names: strings become ``Var``s (``Loop("i", 0, n, ...)``; ``Declare("acc", 0.0 * x)``), a
name may not shadow another visible one, a loop index is read-only, locals are visible to
the statements after their ``Declare`` in the same body. ``verify(kernel)`` checks all that.

Example::

    A, B = BufferParam("A", "float32", 2), BufferParam("B", "float32", 2)
    i, j = Var("i"), Var("j")
    k = Kernel("double", (A, B), Loop(i, 0, A.dim(0), Loop(j, 0, A.dim(1),
               B.store((i, j), A[i, j] * 2.0))))

Printers (``listing``, ``loop_nest``) live in engine/kernel_print.py and loop transforms
(``split``, ``vectorize``, ``unroll``, ``mark_parallel``) in engine/loopopt.py; both are
re-exported here.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np

from engine.errors import KilnError

DTYPES = ("bool", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64",
          "float32", "float64")
ARITH_OPS = ("add", "sub", "mul", "div", "floordiv", "mod", "min", "max", "pow", "mulhi")
COMPARE_OPS = ("lt", "le", "gt", "ge", "eq", "ne")
BITWISE_OPS = ("and", "or", "xor", "shl", "shr")
BINARY_OPS = ARITH_OPS + COMPARE_OPS + BITWISE_OPS
FLOAT_UNARY_OPS = ("exp", "exp2", "expm1", "log", "log2", "log1p", "sqrt", "tanh", "sigmoid",
                   "floor", "ceil", "trunc", "rint", "sin", "cos")
UNARY_OPS = ("neg", "abs", "not") + FLOAT_UNARY_OPS
REDUCE_OPS = ("add", "mul", "min", "max", "and", "or", "xor")
LOOP_KINDS = ("serial", "parallel", "vectorize", "unroll",
              "block_x", "block_y", "block_z", "thread_x", "thread_y", "thread_z")
GPU_LOOP_KINDS = LOOP_KINDS[4:]


class KernelIRError(KilnError, ValueError):
    """A malformed kernel, or a transform that does not apply; names kernel and node."""


def is_float(dtype):
    return dtype in ("float32", "float64")


def is_int(dtype):
    return dtype.startswith(("int", "uint"))


def is_signed(dtype):
    return dtype.startswith("int")


def bits(dtype):
    return 1 if dtype == "bool" else np.dtype(dtype).itemsize * 8


def itemsize(dtype):
    return np.dtype(dtype).itemsize


def dtype_name(dtype):
    """Normalize a dtype given as a name, numpy type or np.dtype to its name."""
    if isinstance(dtype, str) and dtype in DTYPES:
        return dtype
    try:
        name = np.dtype(dtype).name
    except TypeError:
        raise KernelIRError(f"unknown dtype {dtype!r}; use one of {DTYPES}") from None
    if name not in DTYPES:
        raise KernelIRError(f"unsupported dtype {name!r}; use one of {DTYPES}")
    return name


def _set(obj, **kw):
    for k, v in kw.items():
        object.__setattr__(obj, k, v)


# ----------------------------------------------------------------------------- base classes

class Node:
    """Base of expressions and statements."""

    __slots__ = ()

    def children(self):
        """The Expr/Stmt nodes directly below this one, in field order (binding positions,
        ``Loop.var``/``Declare.var``/``Assign.var``, excluded: they are not reads)."""
        # nodes are immutable and walked many times (printers, transforms, the renderer):
        # the tuple is computed once per node and kept in its __dict__ (not a field)
        try:
            return self.__dict__["_kids"]
        except KeyError:
            pass
        out = []
        for name in _read_fields(type(self)):
            v = getattr(self, name)
            if isinstance(v, Node):
                out.append(v)
            elif isinstance(v, tuple):
                out.extend(x for x in v if isinstance(x, Node))
        kids = self.__dict__["_kids"] = tuple(out)
        return kids


class Expr(Node):
    """An expression: has ``dtype`` and ``lanes``; Python operators build BinOp/UnOp."""

    __slots__ = ()

    def __bool__(self):
        raise TypeError("a kernel-IR expression has no truth value (use If/Select in the IR; "
                        "use eq()/ne() to build comparisons)")

    def __add__(self, o): return binop("add", self, o)
    def __radd__(self, o): return binop("add", o, self)
    def __sub__(self, o): return binop("sub", self, o)
    def __rsub__(self, o): return binop("sub", o, self)
    def __mul__(self, o): return binop("mul", self, o)
    def __rmul__(self, o): return binop("mul", o, self)
    def __truediv__(self, o): return binop("div", self, o)
    def __rtruediv__(self, o): return binop("div", o, self)
    def __floordiv__(self, o): return binop("floordiv", self, o)
    def __rfloordiv__(self, o): return binop("floordiv", o, self)
    def __mod__(self, o): return binop("mod", self, o)
    def __rmod__(self, o): return binop("mod", o, self)
    def __pow__(self, o): return binop("pow", self, o)
    def __and__(self, o): return binop("and", self, o)
    def __rand__(self, o): return binop("and", o, self)
    def __or__(self, o): return binop("or", self, o)
    def __ror__(self, o): return binop("or", o, self)
    def __xor__(self, o): return binop("xor", self, o)
    def __rxor__(self, o): return binop("xor", o, self)
    def __lshift__(self, o): return binop("shl", self, o)
    def __rshift__(self, o): return binop("shr", self, o)
    def __lt__(self, o): return binop("lt", self, o)
    def __le__(self, o): return binop("le", self, o)
    def __gt__(self, o): return binop("gt", self, o)
    def __ge__(self, o): return binop("ge", self, o)
    def __neg__(self): return UnOp("neg", self)
    def __invert__(self): return UnOp("not", self)

    def astype(self, dtype):
        return Cast(self, dtype)


class Stmt(Node):
    __slots__ = ()


def _index(index):
    if not isinstance(index, (tuple, list)):
        index = (index,)
    return tuple(as_expr(x, "int64") for x in index)


def _body(body):
    if isinstance(body, Stmt):
        return (body,)
    body = tuple(body)
    for s in body:
        if not isinstance(s, Stmt):
            raise KernelIRError(f"a body holds statements, got {type(s).__name__}: {s!r}")
    return body


# ----------------------------------------------------------------------------- parameters

@dataclass(frozen=True)
class BufferParam:
    """An array argument: pointer + runtime shape + strides (elements), ``ndim`` dims."""

    name: str
    dtype: str
    ndim: int

    def __post_init__(self):
        _set(self, dtype=dtype_name(self.dtype))

    def __getitem__(self, index):
        return Load(self, index)

    def load(self, index, lanes=1):
        return Load(self, index, lanes)

    def store(self, index, value):
        return Store(self, index, value)

    def dim(self, axis):
        return Dim(self, axis)

    def stride(self, axis):
        return Stride(self, axis)


@dataclass(frozen=True)
class LocalBuffer:
    """A fixed-shape row-major scratch array; scope "local" (stack) or "shared" (CUDA)."""

    name: str
    dtype: str
    shape: tuple
    scope: str = "local"

    def __post_init__(self):
        _set(self, dtype=dtype_name(self.dtype), shape=tuple(int(s) for s in self.shape))

    @property
    def ndim(self):
        return len(self.shape)

    @property
    def strides(self):
        out, acc = [], 1
        for s in reversed(self.shape):
            out.append(acc)
            acc *= s
        return tuple(reversed(out))

    __getitem__ = BufferParam.__getitem__
    load = BufferParam.load
    store = BufferParam.store
    dim = BufferParam.dim
    stride = BufferParam.stride


# ----------------------------------------------------------------------------- expressions

@dataclass(frozen=True)
class Const(Expr):
    value: object
    dtype: str = "int64"

    def __post_init__(self):
        dt = dtype_name(self.dtype)
        v = self.value
        if isinstance(v, np.generic):
            v = v.item()
        if is_float(dt):
            v = float(v)
        elif dt == "bool":
            v = bool(v)
        else:
            if isinstance(v, float) and not v.is_integer():
                raise KernelIRError(f"Const({v!r}, {dt!r}): not an integer")
            v = int(v)
        _set(self, value=v, dtype=dt)

    lanes = 1


@dataclass(frozen=True)
class Var(Expr):
    name: str
    dtype: str = "int64"
    lanes: int = 1

    def __post_init__(self):
        _set(self, dtype=dtype_name(self.dtype))


@dataclass(frozen=True)
class ScalarParam(Expr):
    name: str
    dtype: str

    def __post_init__(self):
        _set(self, dtype=dtype_name(self.dtype))

    lanes = 1


@dataclass(frozen=True)
class Load(Expr):
    buf: object  # BufferParam | LocalBuffer
    index: tuple
    lanes: int = 1

    def __post_init__(self):
        _set(self, index=_index(self.index))

    @property
    def dtype(self):
        return self.buf.dtype


@dataclass(frozen=True)
class Dim(Expr):
    buf: object
    axis: int
    dtype = "int64"
    lanes = 1


@dataclass(frozen=True)
class Stride(Expr):
    buf: object
    axis: int
    dtype = "int64"
    lanes = 1


@dataclass(frozen=True)
class BinOp(Expr):
    op: str
    a: Expr
    b: Expr

    @property
    def dtype(self):
        return "bool" if self.op in COMPARE_OPS else self.a.dtype

    @property
    def lanes(self):
        return self.a.lanes


@dataclass(frozen=True)
class UnOp(Expr):
    op: str
    a: Expr

    @property
    def dtype(self):
        return self.a.dtype

    @property
    def lanes(self):
        return self.a.lanes


@dataclass(frozen=True)
class FMA(Expr):
    a: Expr
    b: Expr
    c: Expr

    @property
    def dtype(self):
        return self.a.dtype

    @property
    def lanes(self):
        return self.a.lanes


@dataclass(frozen=True)
class Cast(Expr):
    value: Expr
    dtype: str

    def __post_init__(self):
        _set(self, dtype=dtype_name(self.dtype))

    @property
    def lanes(self):
        return self.value.lanes


@dataclass(frozen=True)
class Select(Expr):
    cond: Expr
    a: Expr
    b: Expr

    @property
    def dtype(self):
        return self.a.dtype

    @property
    def lanes(self):
        return self.a.lanes


@dataclass(frozen=True)
class Broadcast(Expr):
    value: Expr
    lanes: int

    @property
    def dtype(self):
        return self.value.dtype


@dataclass(frozen=True)
class Ramp(Expr):
    base: Expr
    stride: Expr
    lanes: int

    def __post_init__(self):
        base = as_expr(self.base, "int64")
        _set(self, base=base, stride=as_expr(self.stride, base.dtype))

    @property
    def dtype(self):
        return self.base.dtype


@dataclass(frozen=True)
class ReduceLanes(Expr):
    op: str
    value: Expr
    lanes = 1

    @property
    def dtype(self):
        return self.value.dtype


@dataclass(frozen=True)
class Shuffle(Expr):
    """Lanes picked by constant positions from vectors of one dtype: lane k is lane
    ``indices[k]`` of the concatenation of ``values`` (LLVM shufflevector). The vectorizer's
    strided loads: a stride-s access loads the span its lanes cover as whole vectors and
    keeps every s-th lane."""
    values: tuple
    indices: tuple

    def __post_init__(self):
        _set(self, values=tuple(self.values), indices=tuple(int(k) for k in self.indices))

    @property
    def dtype(self):
        return self.values[0].dtype

    @property
    def lanes(self):
        return len(self.indices)


@dataclass(frozen=True)
class ThreadIdx(Expr):
    axis: str = "x"
    dtype = "int64"
    lanes = 1


@dataclass(frozen=True)
class BlockIdx(Expr):
    axis: str = "x"
    dtype = "int64"
    lanes = 1


@dataclass(frozen=True)
class BlockDim(Expr):
    axis: str = "x"
    dtype = "int64"
    lanes = 1


GPU_INDEX_NODES = (ThreadIdx, BlockIdx, BlockDim)
LEAF_NODES = (Const, Var, ScalarParam, Dim, Stride) + GPU_INDEX_NODES


# ----------------------------------------------------------------------------- statements

@dataclass(frozen=True)
class Loop(Stmt):
    var: Var
    start: Expr
    stop: Expr
    body: tuple
    kind: str = "serial"
    step: int = 1

    def __post_init__(self):
        var = Var(self.var) if isinstance(self.var, str) else self.var
        _set(self, var=var, start=as_expr(self.start, "int64"), stop=as_expr(self.stop, "int64"),
             body=_body(self.body), step=int(self.step))


@dataclass(frozen=True)
class Store(Stmt):
    buf: object
    index: tuple
    value: Expr

    def __post_init__(self):
        _set(self, index=_index(self.index), value=as_expr(self.value, self.buf.dtype))


@dataclass(frozen=True)
class Declare(Stmt):
    var: Var
    init: Expr

    def __post_init__(self):
        if isinstance(self.var, str):
            if not isinstance(self.init, Expr):
                raise KernelIRError(f"Declare({self.var!r}, {self.init!r}): give a Var with a "
                                    "dtype or a typed init such as Const(0.0, 'float32')")
            _set(self, var=Var(self.var, self.init.dtype, self.init.lanes))
        _set(self, init=as_expr(self.init, self.var.dtype, self.var.lanes))


@dataclass(frozen=True)
class Assign(Stmt):
    var: Var
    value: Expr

    def __post_init__(self):
        if isinstance(self.var, str):
            if not isinstance(self.value, Expr):
                raise KernelIRError(f"Assign({self.var!r}, {self.value!r}): give a typed Var")
            _set(self, var=Var(self.var, self.value.dtype, self.value.lanes))
        _set(self, value=as_expr(self.value, self.var.dtype, self.var.lanes))


@dataclass(frozen=True)
class If(Stmt):
    cond: Expr
    then: tuple
    orelse: tuple = ()

    def __post_init__(self):
        _set(self, then=_body(self.then), orelse=_body(self.orelse))


@dataclass(frozen=True)
class Alloc(Stmt):
    buf: LocalBuffer


@dataclass(frozen=True)
class Barrier(Stmt):
    pass


def SharedAlloc(name, dtype, shape):
    """``Alloc`` of a CUDA shared-memory array; returns the statement (its buffer: ``.buf``)."""
    return Alloc(LocalBuffer(name, dtype, shape, "shared"))


@dataclass(frozen=True)
class Kernel:
    name: str
    params: tuple
    body: tuple

    def __post_init__(self):
        _set(self, params=tuple(self.params), body=_body(self.body))

    @property
    def buffers(self):
        return tuple(p for p in self.params if isinstance(p, BufferParam))

    def with_body(self, body):
        return Kernel(self.name, self.params, body)


# ----------------------------------------------------------------------------- builders

def as_expr(x, dtype="int64", lanes=1):
    """An Expr as is; a Python/numpy number as ``Const(x, dtype)`` (broadcast to lanes)."""
    if isinstance(x, Expr):
        return x
    if isinstance(x, (bool, int, float, np.generic)):
        dt = dtype_name(dtype)
        if isinstance(x, (float, np.floating)) and not is_float(dt) and not float(x).is_integer():
            raise KernelIRError(f"cannot mix the float {x!r} with a {dt} operand; Cast first")
        c = Const(x, dt)
        return Broadcast(c, lanes) if lanes > 1 else c
    raise KernelIRError(f"expected a kernel-IR expression or a number, got {type(x).__name__}: {x!r}")


def binop(op, a, b):
    """Build ``BinOp(op, a, b)``: numbers take the other side's dtype, scalars broadcast."""
    if not isinstance(a, Expr):
        if not isinstance(b, Expr):
            raise KernelIRError(f"{op}: at least one operand must be an expression")
        a = as_expr(a, b.dtype, b.lanes)
    b = as_expr(b, a.dtype, a.lanes)
    if a.lanes != b.lanes:
        if a.lanes == 1:
            a = Broadcast(a, b.lanes)
        elif b.lanes == 1:
            b = Broadcast(b, a.lanes)
    if a.dtype != b.dtype:
        raise KernelIRError(f"{op}: operand dtypes differ ({a.dtype} vs {b.dtype}); insert a Cast")
    return BinOp(op, a, b)


def const(value, dtype="int64"):
    return Const(value, dtype)


def cast(x, dtype):
    return Cast(x, dtype)


def select(cond, a, b):
    if isinstance(a, Expr):
        b = as_expr(b, a.dtype, a.lanes)
    else:
        a = as_expr(a, b.dtype, b.lanes)
    return Select(cond, a, b)


def fma(a, b, c):
    return FMA(a, as_expr(b, a.dtype, a.lanes), as_expr(c, a.dtype, a.lanes))


def _binfn(op):
    def f(a, b):
        return binop(op, a, b)
    f.__name__ = op
    f.__doc__ = f"``BinOp({op!r}, a, b)`` with numbers lifted to the other operand's dtype."
    return f


def _unfn(op):
    def f(a):
        return UnOp(op, a)
    f.__name__ = op
    f.__doc__ = f"``UnOp({op!r}, a)``."
    return f


lt, le, gt, ge, eq, ne = (_binfn(op) for op in COMPARE_OPS)
minimum, maximum, mulhi, power = _binfn("min"), _binfn("max"), _binfn("mulhi"), _binfn("pow")
(exp, exp2, expm1, log, log2, log1p, sqrt, tanh, sigmoid, floor, ceil, trunc, rint, sin,
 cos) = (_unfn(op) for op in FLOAT_UNARY_OPS)
absolute = _unfn("abs")
logical_not = _unfn("not")


def unit_stride_test(bufs, broadcastable=()):
    """The test that each buffer's last stride is 1 (``broadcastable`` ones: 1 or 0, a
    broadcast operand), and-ed (None for none): the condition of an ``If`` whose then-branch
    a backend may specialize (``unit_stride_tested``): the LLVM renderer writes plain vector
    accesses there (a 0-stride operand: one element, splat), and no strided loop copies."""
    cond = None
    for buf in bufs:
        st = buf.stride(buf.ndim - 1)
        test = eq(st, 1) if buf not in broadcastable else binop("or", eq(st, 1), eq(st, 0))
        cond = test if cond is None else binop("and", cond, test)
    return cond


def unit_stride_tested(cond):
    """(names of the buffers whose last stride ``cond`` requires to be 1, names of those it
    requires to be 1 or 0): from the terms of its top-level conjunction, whatever else it tests."""
    if isinstance(cond, BinOp) and cond.op == "and":
        (u1, b1), (u2, b2) = unit_stride_tested(cond.a), unit_stride_tested(cond.b)
        return u1 | u2, b1 | b2
    if isinstance(cond, BinOp) and cond.op == "eq":
        name = _last_stride_is(cond, 1)
        return ({name} if name else set()), set()
    if isinstance(cond, BinOp) and cond.op == "or":
        one, zero = _last_stride_is(cond.a, 1), _last_stride_is(cond.b, 0)
        if one and one == zero:
            return set(), {one}
    return set(), set()


def _last_stride_is(cond, value):
    """The buffer name if cond is ``buf.stride(last) == value``, else None."""
    if isinstance(cond, BinOp) and cond.op == "eq":
        for st, c in ((cond.a, cond.b), (cond.b, cond.a)):
            if isinstance(st, Stride) and isinstance(c, Const) and c.value == value \
                    and st.axis == st.buf.ndim - 1 and isinstance(st.buf, BufferParam):
                return st.buf.name
    return None


def reduce_identity(op, dtype):
    """The neutral element of a REDUCE_OPS op in dtype (what a vector accumulator starts at)."""
    if op == "add" or op == "or" or op == "xor":
        return Const(0, dtype)
    if op == "mul":
        return Const(1, dtype)
    if op == "and":
        return Const(True if dtype == "bool" else -1 if is_signed(dtype) else
                     (1 << bits(dtype)) - 1, dtype)
    if is_float(dtype):
        return Const(math.inf if op == "min" else -math.inf, dtype)
    if dtype == "bool":
        return Const(op == "min", dtype)
    info = np.iinfo(dtype)
    return Const(info.max if op == "min" else info.min, dtype)


# ----------------------------------------------------------------------------- traversal

def walk(node):
    """All Expr/Stmt nodes under node (a Node, Kernel or tuple of nodes), pre-order."""
    stack = list(node.body if isinstance(node, Kernel) else
                 node if isinstance(node, tuple) else (node,))
    stack.reverse()
    while stack:
        n = stack.pop()
        yield n
        stack.extend(reversed(n.children()))


_BINDERS = {Loop: "var", Declare: "var", Assign: "var"}
_READ_FIELDS: dict = {}


def _read_fields(cls):
    """Names of the fields of a node class that may hold child nodes (binders excluded)."""
    names = _READ_FIELDS.get(cls)
    if names is None:
        skip = _BINDERS.get(cls)
        names = _READ_FIELDS[cls] = tuple(f.name for f in dataclasses.fields(cls) if f.name != skip)
    return names


def map_nodes(node, fn):
    """Rebuild node bottom-up, replacing each Expr/Stmt n by ``fn(n)`` (return n to keep it).

    Binding positions (``Loop.var``, ``Declare.var``, ``Assign.var``) are not visited.
    A tuple of statements maps to a tuple; ``fn`` may turn a statement into a tuple of them.
    Unchanged subtrees are returned as the same objects.
    """
    if isinstance(node, tuple):
        out, changed = [], False
        for s in node:
            r = map_nodes(s, fn)
            if isinstance(r, tuple):
                out.extend(r)
                changed = changed or len(r) != 1 or r[0] is not s
            else:
                out.append(r)
                changed = changed or r is not s
        return tuple(out) if changed else node
    if type(node) in LEAF_NODES:  # no child nodes: the common case, kept cheap
        return fn(node)
    changes = None
    for name in _read_fields(type(node)):
        v = getattr(node, name)
        if isinstance(v, Node):
            nv = map_nodes(v, fn)
        elif isinstance(v, tuple) and v:
            if isinstance(v[0], Stmt):
                nv = map_nodes(v, fn)
            else:
                items = [map_nodes(x, fn) if isinstance(x, Node) else x for x in v]
                nv = v if all(a is b for a, b in zip(items, v)) else tuple(items)
        else:
            continue
        if nv is not v:
            if changes is None:
                changes = {}
            changes[name] = nv
    if changes:
        node = dataclasses.replace(node, **changes)
    return fn(node)


def substitute(node, mapping):
    """Replace reads of variables: ``mapping`` is {name: Expr}; binders are left alone."""
    def fn(n):
        if isinstance(n, Var) and n.name in mapping:
            return mapping[n.name]
        return n
    return map_nodes(node, fn)


def rename(node, names):
    """Rename variables everywhere, binders included: ``names`` is {old: new}."""
    def fn(n):
        if isinstance(n, Var) and n.name in names:
            return dataclasses.replace(n, name=names[n.name])
        b = _BINDERS.get(type(n))
        if b and n.var.name in names:
            return dataclasses.replace(n, var=dataclasses.replace(n.var, name=names[n.var.name]))
        return n
    return map_nodes(node, fn)


def free_vars(node):
    """Names of the Vars read in node."""
    return _names_of(node, 0)


def bound_names(node):
    """Names bound (by Loop/Declare) anywhere in node."""
    return _names_of(node, 1)


def _names_of(node, which):
    if isinstance(node, Kernel):
        node = node.body
    if isinstance(node, tuple):
        out = set()
        for s in node:
            out |= _names_of(s, which)
        return out
    if isinstance(node, Stmt):
        return set(_stmt_names(node)[which])
    return {n.name for n in walk(node) if isinstance(n, Var)} if which == 0 else set()


def _stmt_names(s):
    """(free, bound) names of a statement, kept on it: loop transforms ask for the names of
    the same (immutable) loop nests over and over, which walked them whole each time."""
    hit = s.__dict__.get("_names")
    if hit is None:
        free, bound = set(), set()
        for c in s.children():
            if isinstance(c, Stmt):
                f, b = _stmt_names(c)
                free |= f
                bound |= b
            else:
                free.update(n.name for n in walk(c) if isinstance(n, Var))
        if isinstance(s, (Loop, Declare)):
            bound.add(s.var.name)
        hit = s.__dict__["_names"] = (frozenset(free), frozenset(bound))
    return hit


def find_loop(kernel, var):
    """The loop of kernel whose index is named var (a str or Var)."""
    name = var.name if isinstance(var, Var) else var
    for n in walk(kernel):
        if isinstance(n, Loop) and n.var.name == name:
            return n
    raise KernelIRError(f"kernel {kernel.name!r} has no loop over {name!r}")


def replace_stmt(kernel, old, new):
    """A copy of kernel with the statement ``old`` (by identity) replaced by ``new`` (a
    statement or a tuple of them)."""
    found = []

    def fn(n):
        if n is old:
            found.append(n)
            return new
        return n
    body = map_nodes(kernel.body, fn)
    if not found:
        raise KernelIRError(f"kernel {kernel.name!r}: statement to replace not found")
    return kernel.with_body(body)


_LAZY = {"verify": "engine.kernel_verify", "listing": "engine.kernel_print", "loop_nest": "engine.kernel_print",
         "describe": "engine.kernel_print", "split": "engine.loopopt",
         "vectorize": "engine.loopopt", "unroll": "engine.loopopt",
         "mark_parallel": "engine.loopopt", "transform": "engine.loopopt"}


def __getattr__(name):
    if name in _LAZY:
        import importlib
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'engine.kernel_ir' has no attribute {name!r}")

