"""GPU-scheduled kernel IR -> readable CUDA C, one translation unit per function.

``render_module(kernels, launches)`` renders kernels into one source: the helper functions
they use (``kiln_*``, per dtype, only those used), then one ``extern "C" __global__`` function
per kernel, ``__launch_bounds__`` from its launch. Each IR node type has an emitter
method, found by backends/common.py's table; operator spellings live in mathops.py. Names are the
kernel IR's (a name that is a C++/CUDA keyword or a math function gets a ``_`` suffix).

ABI (one ``__global__`` per kernel; pycuda passes the values one by one)
-------------------------------------------------------------------------
Parameters in kernel order, each expanded to plain kernel arguments:

* ``BufferParam x`` of ndim d: ``T* x`` (``const T* __restrict__`` when the kernel never
  stores to it), then ``long long x_shape0 .. x_shape{d-1}``, then ``long long x_stride0 ..
  x_stride{d-1}`` in ELEMENTS, 0 for every size-1 dim (as the LLVM ABI); ``bool`` is 1 byte;
* ``ScalarParam s``: ``T s`` (bool, signed char, short, int, long long, the unsigned ones,
  float, double).

``abi_layout(kernel)`` lists the C arguments (name, C type, what fills it) in order; the runtime
packs from it. Launch shape: ``GpuLaunch.block`` threads (``blockDim``) and a grid computed
on the host from ``GpuLaunch.grid`` (engine/gpu/).

Semantics are kernel_ir's: integer division/modulo by helpers (0 for a zero divisor, Python
floor semantics for ``floordiv``/``mod``), int8/16/32 arithmetic wraps (through unsigned
types), int64 arithmetic is plain C (index math; it never overflows in Kiln's kernels),
shifts by >= the bit width give 0 / the sign fill, ``min``/``max`` propagate NaN, ``mulhi``
uses ``__umulhi``/``__mulhi``/``__umul64hi``/``__mul64hi`` (Philox is exact), ``sigmoid`` is
the stable form, ``fma`` is ``fmaf``/``fma``; no fast-math: nvcc's defaults are IEEE
(``-prec-div=true -prec-sqrt=true -fmad=true``; ``-fmad=false`` is passed so that ``a*b+c``
is never contracted, as in the LLVM backend).
"""

from __future__ import annotations

from backends.common import TableRenderer
from backends.cuda import mathops as M
from engine import kernel_ir as ir
from engine.errors import KilnError


class RenderError(KilnError, ValueError):
    """Kernel IR the CUDA renderer cannot render (names kernel and node)."""


RESERVED = {
    "auto", "bool", "break", "case", "catch", "char", "class", "const", "continue", "default",
    "delete", "do", "double", "else", "enum", "explicit", "extern", "false", "float", "for",
    "friend", "goto", "if", "inline", "int", "long", "mutable", "namespace", "new", "operator",
    "private", "protected", "public", "register", "return", "short", "signed", "sizeof",
    "static", "struct", "switch", "template", "this", "throw", "true", "try", "typedef",
    "typename", "union", "unsigned", "using", "virtual", "void", "volatile", "while", "and",
    "or", "not", "xor", "asm", "alignas", "alignof", "constexpr", "decltype", "noexcept",
    "nullptr", "static_assert", "thread_local", "threadIdx", "blockIdx", "blockDim", "gridDim",
    "warpSize", "min", "max", "abs", "exp", "log", "sqrt", "pow", "sin", "cos", "tanh", "floor",
    "ceil", "trunc", "rint", "fma", "isnan", "isinf", "copysign", "fabs", "fmod", "expm1",
    "log1p", "exp2", "log2", "signbit", "assert", "printf", "malloc", "free", "memcpy",
    "memset", "NULL", "INFINITY", "NAN", "dim3", "uint", "ulong", "ushort",
} | {n + "f" for n in ("exp", "log", "sqrt", "pow", "sin", "cos", "tanh", "floor", "ceil",
                       "trunc", "rint", "fma", "fabs", "fmod", "expm1", "log1p", "exp2",
                       "log2", "copysign", "fmin", "fmax")}


def cname(name):
    """The C identifier of a kernel-IR name."""
    if name in RESERVED or name.startswith(("kiln_", "__")):
        return name + "_"
    return name


def abi_layout(kernel):
    """[(C argument name, C type, (param, "data" | ("shape", a) | ("stride", a) | "value"))]."""
    stored = {n.buf.name for n in ir.walk(kernel) if isinstance(n, ir.Store)}
    out = []
    for p in kernel.params:
        if isinstance(p, ir.BufferParam):
            t = M.CTYPE[p.dtype]
            ptr = f"{t}*" if p.name in stored else f"const {t}* __restrict__"
            out.append((cname(p.name), ptr, (p, "data")))
            out += [(f"{cname(p.name)}_shape{a}", "long long", (p, ("shape", a)))
                    for a in range(p.ndim)]
            out += [(f"{cname(p.name)}_stride{a}", "long long", (p, ("stride", a)))
                    for a in range(p.ndim)]
        else:
            out.append((cname(p.name), M.CTYPE[p.dtype], (p, "value")))
    return out


def render_module(kernels, launches=None):
    """One CUDA C translation unit with every kernel (``launches``: {name: GpuLaunch} for
    ``__launch_bounds__``)."""
    helpers = M.Helpers()
    bodies = []
    for k in kernels:
        la = (launches or {}).get(k.name)
        threads = la.threads if la is not None else None
        bodies.append(KernelRenderer(k, helpers, threads).render())
    head = ("// generated by Kiln (backends/cuda/render.py)\n"
            "// ABI: per buffer: data pointer, shape[ndim], strides[ndim] (elements; 0 for a "
            "size-1 dim); per scalar: its value\n")
    return head + helpers.text() + "\n" + "\n".join(bodies)


def render_kernel(kernel, threads=None):
    """One kernel with the helpers it uses (a standalone translation unit)."""
    helpers = M.Helpers()
    body = KernelRenderer(kernel, helpers, threads).render()
    return helpers.text() + "\n" + body


class KernelRenderer(TableRenderer):
    def __init__(self, kernel, helpers, threads=None):
        self.k = kernel
        self.h = helpers
        self.threads = threads
        self.lines = []
        self.depth = 1
        self.bufs = {}

    def fail(self, node, msg):
        raise RenderError(f"CUDA backend, kernel {self.k.name!r}: {msg}\n  at: "
                          f"{ir.describe(node)}")

    def emit(self, text):
        self.lines.append("  " * self.depth + text)

    def render(self):
        args = [f"{t} {n}" for n, t, _ in abi_layout(self.k)]
        bounds = f"__launch_bounds__({self.threads}) " if self.threads else ""
        sig = f'extern "C" __global__ void {bounds}{self.k.name}('
        if args:
            sig += "\n    " + ",\n    ".join(args) + ")"
        else:
            sig += ")"
        for p in self.k.params:
            if isinstance(p, ir.BufferParam):
                self.bufs[p.name] = p
        self.block(self.k.body)
        return sig + " {\n" + "\n".join(self.lines) + "\n}\n"

    # -- statements (TableRenderer.block dispatches on the node type)

    def nested(self, body):
        self.depth += 1
        self.block(body)
        self.depth -= 1

    def s_loop(self, s):
        v = cname(s.var.name)
        start, stop = self.expr(s.start), self.expr(s.stop)
        step = s.step
        kind = s.kind
        if kind.startswith(("block_", "thread_")):
            axis = kind[-1]
            idx, dim = ("blockIdx", "gridDim") if kind.startswith("block_") else \
                ("threadIdx", "blockDim")
            # blockIdx/threadIdx/gridDim/blockDim are unsigned int: they promote to long long
            first = f"{idx}.{axis}" if step == 1 else f"(long long){idx}.{axis} * {step}"
            init = first if start == "0LL" else f"{start} + {first}"
            inc = f"{dim}.{axis}" if step == 1 else f"(long long){dim}.{axis} * {step}"
            head = f"for (long long {v} = {init}; {v} < {stop}; {v} += {inc}) {{  // {kind}"
        else:
            if kind == "unroll" and isinstance(s.start, ir.Const) and \
                    isinstance(s.stop, ir.Const) and \
                    len(range(s.start.value, s.stop.value, step)) <= 64:
                self.emit("#pragma unroll")
            inc = f"++{v}" if step == 1 else f"{v} += {step}"
            head = f"for (long long {v} = {start}; {v} < {stop}; {inc}) {{"
        self.emit(head)
        self.nested(s.body)
        self.emit("}")

    def s_store(self, s):
        if s.value.lanes != 1:
            self.fail(s, "vector values are not rendered (run engine.gpu.scalarize)")
        self.emit(f"{self.access(s.buf, s.index)} = {M.strip(self.expr(s.value))};")

    def s_declare(self, s):
        if s.var.lanes != 1:
            self.fail(s, "vector locals are not rendered (run engine.gpu.scalarize)")
        self.emit(f"{M.CTYPE[s.var.dtype]} {cname(s.var.name)} = {M.strip(self.expr(s.init))};")

    def s_assign(self, s):
        self.emit(f"{cname(s.var.name)} = {M.strip(self.expr(s.value))};")

    def s_if(self, s):
        self.emit(f"if ({M.strip(self.expr(s.cond))}) {{")
        self.nested(s.then)
        if s.orelse:
            self.emit("} else {")
            self.nested(s.orelse)
        self.emit("}")

    def s_alloc(self, s):
        b = s.buf
        n = 1
        for d in b.shape:
            n *= d
        self.bufs[b.name] = b
        qual = "__shared__ " if b.scope == "shared" else ""
        self.emit(f"{qual}{M.CTYPE[b.dtype]} {cname(b.name)}[{n}];")

    def s_barrier(self, s):
        self.emit("__syncthreads();")

    # -- memory
    def access(self, buf, index):
        name = cname(buf.name)
        terms = []
        if isinstance(buf, ir.LocalBuffer):
            for i, st in zip(index, buf.strides):
                e = self.expr(i)
                if e == "0LL":
                    continue
                terms.append(e if st == 1 else f"{e} * {st}")
        else:
            for a, i in enumerate(index):
                e = self.expr(i)
                if e == "0LL":
                    continue
                terms.append(f"{e} * {name}_stride{a}")
        return f"{name}[{' + '.join(terms) or '0'}]"

    # -- expressions: C text, parenthesized unless atomic
    def expr(self, e):
        if getattr(e, "lanes", 1) != 1:
            self.fail(e, "vector values are not rendered (run engine.gpu.scalarize)")
        return super().expr(e)

    def e_const(self, e):
        return M.literal(e.value, e.dtype)

    def e_var(self, e):
        return cname(e.name)

    def e_load(self, e):
        return self.access(e.buf, e.index)

    def e_dim(self, e):
        return f"{cname(e.buf.name)}_shape{e.axis}"

    def e_stride(self, e):
        return f"{cname(e.buf.name)}_stride{e.axis}"

    def e_binop(self, e):
        if e.op == "div" and ir.is_int(e.dtype) and isinstance(e.b, ir.Const) and e.b.value > 0:
            return f"({self.expr(e.a)} / {self.expr(e.b)})"  # no zero or -1 divisor to guard
        return M.binary(self.h, e.op, self.expr(e.a), self.expr(e.b), e.a.dtype)

    def e_unop(self, e):
        return M.unary(self.h, e.op, self.expr(e.a), e.dtype)

    def e_fma(self, e):
        f = "fmaf" if e.dtype == "float32" else "fma"
        return f"{f}({M.strip(self.expr(e.a))}, {M.strip(self.expr(e.b))}, " \
               f"{M.strip(self.expr(e.c))})"

    def e_cast(self, e):
        return M.cast(self.expr(e.value), e.value.dtype, e.dtype)

    def e_select(self, e):
        return f"({self.expr(e.cond)} ? {self.expr(e.a)} : {self.expr(e.b)})"

    def e_gpu_index(self, e):
        return {"ThreadIdx": "threadIdx", "BlockIdx": "blockIdx", "BlockDim": "blockDim"}[
            type(e).__name__].join(("(long long)", "." + e.axis))

    def e_vector(self, e):
        self.fail(e, "vector values are not rendered (run engine.gpu.scalarize)")

    e_broadcast = e_ramp = e_reduce = e_vector

