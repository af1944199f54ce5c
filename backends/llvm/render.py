"""Kernel IR -> LLVM IR (an ``llvmlite.ir.Module``) for the CPU.

``render_module(kernels)`` renders kernels into one module; each IR node type has an emitter
in the methods backends/common.py dispatches to (arithmetic lives in mathops.py).

ABI (one C entry point per kernel)
----------------------------------
``void NAME(const int64_t *args)``: one packed array of 8-byte slots, parameters in order
(``abi_layout(kernel)`` gives each parameter's first slot):

* ``BufferParam`` of ndim d: ``1 + 2d`` slots: data pointer, ``shape[0..d)``,
  ``strides[0..d)`` in ELEMENTS (0 for a broadcast dim);
* ``ScalarParam``: 1 slot holding the value in its low bytes (little endian), e.g. a
  float32 in bytes 0..3, a bool as one byte 0/1.

The entry loads every pointer/shape/stride/scalar once, in its prologue.

Loops
-----
``serial``: a plain counted loop. ``unroll``: copied per iteration when the bounds are
constants (<= 64 trips), else serial. ``vectorize``: the body already computes vectors (see
engine/loopopt.py); the loop is versioned: when every vector-accessed parameter buffer has
unit stride on its last axis the fast copy uses plain vector loads/stores, otherwise a copy
whose vector accesses check the stride (unit: vector op; other, 0 included: per lane).
``parallel``: the loop body is outlined into ``internal void NAME__parK(int64 t0, int64 t1,
void *ctx)`` running iterations [t0, t1); ``ctx`` holds the args pointer, start, step and the
captured locals. The kernel calls ``kiln_parallel_for(fn, 0, trips, ctx)``, a symbol the
runtime provides, which splits [0, trips) into row blocks over its threads.
``Alloc`` of a local buffer: a stack array in the function's entry block, 64-byte aligned
(``LOCAL_ALIGN``: a vector access at a multiple of 64 bytes never splits a cache line).
GPU-only nodes (``ThreadIdx``/``BlockIdx``/``BlockDim``, shared ``Alloc``, ``Barrier``,
block_*/thread_* loops) raise ``RenderError``.
"""

from __future__ import annotations

import llvmlite.ir as ll

from backends.common import TableRenderer
from backends.llvm.mathops import I32, I64, PTR, VOID, Ops, lane_mask, mem_type, ty, undef
from engine import kernel_ir as kir
from engine.errors import KilnError

PARALLEL_FOR = "kiln_parallel_for"
MAX_RENDER_UNROLL = 64
LOCAL_ALIGN = 64  # bytes, of every local (stack) buffer
BLOCKED_FMAS = 8  # vector FMAs in one vectorize loop that make a kernel "blocked" (tuning)


def _lane_mask(lanes):
    return lane_mask(tuple(lanes))


class _UnitOrZero:
    """A buffer's last stride, known to be 1 or 0 (a broadcast operand) inside a unit-stride
    test's branch: its vector loads are a row or one element splat."""

    def __init__(self, value):
        self.value = value


class _LoopID(ll.values.MDValue):
    """A loop's ``llvm.loop`` node: ``distinct !{!self, options...}`` (LLVM requires the
    self-reference; llvmlite's add_metadata cannot write one)."""

    def __init__(self, module, options):
        super().__init__(module, options, name=str(len(module.metadata)))

    def descr(self, buf):
        refs = ", ".join([self.get_reference()] + [op.get_reference() for op in self.operands])
        buf += (f"distinct !{{{refs}}}", "\n")


class RenderError(KilnError, ValueError):
    """Kernel IR the LLVM backend cannot render (names kernel and node)."""


def abi_layout(kernel):
    """([(param, first slot)], total slots) of a kernel's packed argument array."""
    out, slot = [], 0
    for p in kernel.params:
        out.append((p, slot))
        slot += 1 + 2 * p.ndim if isinstance(p, kir.BufferParam) else 1
    return out, slot


def render_module(kernels, name="kiln"):
    """One llvmlite module holding the entry point (and outlined bodies) of each kernel."""
    module = ll.Module(name)
    for k in kernels:
        KernelRenderer(k, module).render()
    return module


def tuning(kernel):
    """How compile_worker.optimize tunes LLVM's pipeline for a kernel (its TUNINGS):

    * "blocked": a register-blocked kernel (GEMM, convolution: a ``vectorize`` loop holding
      >= BLOCKED_FMAS vector FMAs). Kiln's loop transforms wrote its hot loop to the
      register: unrolled, vectorized, blocked. LLVM's loop unroller and the vectorizer's
      interleaving only add copies of it, and O3's extra passes (non-trivial unswitching
      above all) copy its loop nests per invariant condition: O2 without unrolling and
      interleaving compiles it ~40% faster and runs it as fast (sgemm 20..2048 and the LeNet
      convolutions: within 2%).
    * "streaming": every ``vectorize`` loop a straight-line body, no loop of constant bounds
      (window and tap loops) and no reduction across lanes (elementwise kernels, copies): one
      pass over memory that Kiln already vectorized.
      The same pipeline as "blocked": ~35% less LLVM time, and the LeNet step's elementwise
      and copy kernels ran within noise of O3 (-18..+1%) once the collapse pass had made
      their rows long.
    * "": the rest (reductions, pooling, softmax, col2im): the full O3 pipeline. O2, or O3
      without LLVM's unroller or the vectorizer's interleaving, makes some of them run
      6-80% slower (col2im's shifted row adds +80%, a 3-d sum +33%, max pooling +6..10%):
      LLVM unrolls their small window loops and vectorizes their scalar remainders.
    """
    vectorized, streaming = False, True
    for n in kir.walk(kernel.body):
        if isinstance(n, kir.Loop) and n.kind == "vectorize":
            vectorized = True
            inner = list(kir.walk(n.body))
            fmas = sum(1 for m in inner if isinstance(m, kir.FMA) and m.lanes > 1)
            if fmas >= BLOCKED_FMAS:
                return "blocked"
            streaming = streaming and not any(isinstance(m, kir.Loop) for m in inner)
        elif isinstance(n, kir.Loop) and isinstance(n.start, kir.Const) and isinstance(n.stop, kir.Const):
            streaming = False  # a window or tap loop: O3 unrolls it
        elif isinstance(n, kir.ReduceLanes):
            streaming = False
    return "streaming" if vectorized and streaming else ""


def _i64(v):
    return ll.Constant(I64, v)


def _copies(loop):
    """How many statement copies rendering an ``unroll`` loop body per iteration makes, or
    None when it is rendered as a loop: bounds not constant, more than MAX_RENDER_UNROLL
    iterations, or a body holding a loop that stays a loop. Copying pays off for straight-line
    bodies (constant indices fold); copying a loop nest only multiplies the code LLVM must
    optimize (a 5x5 ``unroll`` around vector loops was 30% of a LeNet step's compile time)."""
    if not (isinstance(loop.start, kir.Const) and isinstance(loop.stop, kir.Const)):
        return None
    trips = len(range(loop.start.value, loop.stop.value, loop.step))
    if trips > MAX_RENDER_UNROLL:
        return None
    inner = 1
    for n in kir.walk(loop.body):
        if isinstance(n, kir.Loop):
            k = _copies(n) if n.kind == "unroll" else None
            if k is None:
                return None
            inner = max(inner, k)
    return trips * inner if trips * inner <= MAX_RENDER_UNROLL else None


class KernelRenderer(TableRenderer):
    def __init__(self, kernel, module):
        self.k = kernel
        self.m = module
        self.n_outlined = 0

    def fail(self, node, msg):
        raise RenderError(f"LLVM backend, kernel {self.k.name!r}: {msg}\n  at: "
                          f"{kir.describe(node)}")

    # -- function state (swapped while outlining a parallel loop)
    def begin(self, fn):
        fn.attributes.add("nounwind")
        self.fn = fn
        self.entry = fn.append_basic_block("entry")  # allocas only; ends by jumping to start
        self.b = ll.IRBuilder(fn.append_basic_block("start"))
        self.alloca_b = ll.IRBuilder(self.entry)
        self.ops = Ops(self.b, self.m)
        self.env = {}    # name -> (SSA value, None, dtype) | (alloca, type, dtype)
        self.bufs = {}   # name -> (data pointer, [dims], [strides]) as i64 values
        self.fallback = False      # rendering a unit-stride test's else branch (s_if)
        self.scratch = {}          # splat_scratch's locals
        self.no_vectorize = None   # its loops' metadata options (scalar_loop_id)

    def save(self):
        return {k: getattr(self, k) for k in
                ("fn", "entry", "b", "alloca_b", "ops", "env", "bufs", "args_ptr")}

    def restore(self, state):
        for k, v in state.items():
            setattr(self, k, v)

    def splat_scratch(self, vt):
        """A zeroed local of one vector (per function and type): the address a branch-free
        broadcast load reads when its operand is a single element."""
        key = (id(self.fn), str(vt))
        if key not in self.scratch:
            a = self.alloca(vt, "bcast.scratch")
            self.alloca_b.store(ll.Constant(vt, None), a)
            self.scratch[key] = a
        return self.scratch[key]

    def alloca(self, t, name):
        a = self.alloca_b.alloca(t, name=name)
        a.type = PTR  # an opaque pointer, like every other pointer here
        return a

    def finish(self):
        self.b.ret_void()
        self.alloca_b.branch(self.fn.blocks[1])

    def block_named(self, name):
        return self.fn.append_basic_block(name)

    def render(self):
        fn = ll.Function(self.m, ll.FunctionType(VOID, [PTR]), name=self.k.name)
        fn.args[0].name = "args"
        self.begin(fn)
        self.prologue(fn.args[0])
        self.block(self.k.body)
        self.finish()

    def prologue(self, args):
        b = self.b
        self.args_ptr = args

        def slot(i, t, name):
            return b.load(b.gep(args, [_i64(i)], source_etype=I64), typ=t, name=name)
        layout, _ = abi_layout(self.k)
        for p, s in layout:
            if isinstance(p, kir.BufferParam):
                d = p.ndim
                self.bufs[p.name] = (
                    slot(s, PTR, f"{p.name}.data"),
                    [slot(s + 1 + a, I64, f"{p.name}.shape{a}") for a in range(d)],
                    [slot(s + 1 + d + a, I64, f"{p.name}.stride{a}") for a in range(d)])
            else:
                v = slot(s, mem_type(p.dtype), p.name)
                self.env[p.name] = (self.ops.from_mem(v, p.dtype), None, p.dtype)

    # -- statements
    def emit_loop(self, name, start, stop, step, body):
        """for (i = start; i < stop; i += step) body(i); leaves the builder after the loop."""
        b = self.b
        ivar = self.alloca(I64, name + ".addr")
        b.store(start, ivar)
        cond, loop, done = (self.block_named(f"{name}.{x}") for x in ("cond", "body", "end"))
        b.branch(cond)
        b.position_at_end(cond)
        i = b.load(ivar, typ=I64, name=name)
        b.cbranch(b.icmp_signed("<", i, stop), loop, done)
        b.position_at_end(loop)
        body(i)
        b.store(b.add(i, _i64(step)), ivar)
        latch = b.branch(cond)
        if self.fallback:
            latch.set_metadata("llvm.loop", self.scalar_loop_id())
        b.position_at_end(done)

    def scalar_loop_id(self):
        """Loop metadata keeping a loop as written: not vectorized, not unrolled. For the
        loops of a unit-stride test's else branch (loopopt.guard_unit_strides): the strided
        fallback runs rarely, and LLVM would otherwise vectorize it again (with runtime
        checks) at as much compile time as the fast path."""
        m = self.m
        if self.no_vectorize is None:
            self.no_vectorize = (m.add_metadata(["llvm.loop.vectorize.enable", ll.Constant(ll.IntType(1), 0)]),
                                 m.add_metadata(["llvm.loop.unroll.disable"]))
        return _LoopID(m, self.no_vectorize)

    def loop_body(self, s):
        def body(i):
            self.env[s.var.name] = (i, None, "int64")
            self.block(s.body)
        return body

    def s_loop(self, s):
        if s.kind in kir.GPU_LOOP_KINDS:
            self.fail(s, f"loop kind {s.kind!r} is for GPU backends")
        if s.kind == "parallel":
            return self.parallel(s)
        name = s.var.name
        if s.kind == "unroll" and _copies(s) is not None:
            for i in range(s.start.value, s.stop.value, s.step):
                self.env[name] = (_i64(i), None, "int64")
                self.block(s.body)
            return
        start, stop = self.expr(s.start), self.expr(s.stop)
        vec_bufs = () if s.kind != "vectorize" else sorted(
            {n.buf.name for n in kir.walk(s.body) if isinstance(n, (kir.Load, kir.Store))
             and isinstance(n.buf, kir.BufferParam) and not self.known_unit(n.buf)
             and (n.lanes if isinstance(n, kir.Load) else n.value.lanes) > 1})
        if not vec_bufs:
            return self.emit_loop(name, start, stop, s.step, self.loop_body(s))
        b = self.b
        unit = None
        for bn in vec_bufs:
            c = b.icmp_signed("==", self.bufs[bn][2][-1], _i64(1))
            unit = c if unit is None else b.and_(unit, c)
        fast, slow, done = (self.block_named(f"{name}.{x}")
                            for x in ("unit_stride", "any_stride", "versions_end"))
        b.cbranch(unit, fast, slow)
        b.position_at_end(fast)
        # in this copy the last strides are the constant 1: plain vector accesses, no multiplies
        # (and no versions of the loops inside)
        outer_bufs = self.bufs
        self.bufs = dict(outer_bufs)
        for bn in vec_bufs:
            data, dims, strides = self.bufs[bn]
            self.bufs[bn] = (data, dims, strides[:-1] + [_i64(1)])
        self.emit_loop(name, start, stop, s.step, self.loop_body(s))
        self.bufs = outer_bufs
        b.branch(done)
        b.position_at_end(slow)
        self.emit_loop(name, start, stop, s.step, self.loop_body(s))
        b.branch(done)
        b.position_at_end(done)

    def parallel(self, s):
        b = self.b
        start, stop = self.expr(s.start), self.expr(s.stop)
        diff = b.sub(stop, start)
        trips = b.select(b.icmp_signed(">", diff, _i64(0)),
                         b.sdiv(b.add(diff, _i64(s.step - 1)), _i64(s.step)), _i64(0))
        # capture the outer names the body reads (params are reloaded from args)
        params = {p.name for p in self.k.params}
        names = sorted(kir.free_vars(s) - kir.bound_names(s) - params)
        values = [self.read(n) for n in names]
        inner = {n.buf.name for n in kir.walk(s) if isinstance(n, kir.Alloc)}
        local_bufs = sorted({n.buf.name for n in kir.walk(s) if isinstance(n, (kir.Load, kir.Store))
                             and isinstance(n.buf, kir.LocalBuffer)} - inner)
        fields = [PTR, I64] + [v.type for v in values] + [PTR] * len(local_bufs)
        ctx_t = ll.LiteralStructType(fields)
        ctx = self.alloca(ctx_t, f"{s.var.name}.ctx")

        def field(base, k):
            return self.b.gep(base, [ll.Constant(I32, 0), ll.Constant(I32, k)],
                              source_etype=ctx_t)
        stored = [self.args_ptr, start] + values + [self.bufs[n][0] for n in local_bufs]
        for k, v in enumerate(stored):
            b.store(v, field(ctx, k))
        outlined = ll.Function(self.m, ll.FunctionType(VOID, [I64, I64, PTR]),
                               name=f"{self.k.name}__par{self.n_outlined}")
        outlined.linkage = "internal"
        self.n_outlined += 1
        outer = self.save()
        self.begin(outlined)
        t0, t1, cp = outlined.args
        t0.name, t1.name, cp.name = "t0", "t1", "ctx"
        loaded = [self.b.load(field(cp, k), typ=t) for k, t in enumerate(fields)]
        self.prologue(loaded[0])
        for n, v in zip(names, loaded[2:2 + len(names)]):
            self.env[n] = (v, None, outer["env"][n][2])
        for n, v in zip(local_bufs, loaded[2 + len(names):]):
            self.bufs[n] = (v,) + outer["bufs"][n][1:]
        first = loaded[1]

        def body(t):
            i = self.b.add(first, self.b.mul(t, _i64(s.step)), name=s.var.name)
            self.env[s.var.name] = (i, None, "int64")
            self.block(s.body)
        self.emit_loop("t", t0, t1, 1, body)
        self.finish()
        self.restore(outer)
        pfor = self.ops.declare(PARALLEL_FOR, VOID, [PTR, I64, I64, PTR])
        self.b.call(pfor, [outlined, _i64(0), trips, ctx])

    def s_store(self, s):
        value = self.ops.to_mem(self.expr(s.value), s.buf.dtype)
        ptr, stride = self.element_ptr(s.buf, s.index)
        lanes = s.value.lanes
        align = kir.itemsize(s.buf.dtype)
        if isinstance(stride, _UnitOrZero):
            self.fail(s, f"{s.buf.name!r} is stored to inside a test that lets it be a broadcast "
                         "(kernel_ir.unit_stride_test: only loaded buffers may be broadcastable)")
        if lanes == 1 or self.contiguous(s.buf):
            self.b.store(value, ptr, align=align)
            return

        def scalar_path():
            self.b.call(self.lane_helper("scatter", s.buf.dtype, lanes), [ptr, stride, value])

        def vector_path():
            self.b.store(value, ptr, align=align)
        self.stride_switch(stride, vector_path, scalar_path)

    def s_declare(self, s):
        t = ty(s.var.dtype, s.var.lanes)
        p = self.alloca(t, s.var.name)
        self.b.store(self.expr(s.init), p)
        self.env[s.var.name] = (p, t, s.var.dtype)

    def s_assign(self, s):
        self.b.store(self.expr(s.value), self.env[s.var.name][0])

    def s_if(self, s):
        b = self.b
        cond = self.expr(s.cond)
        then, other, done = (self.block_named(x) for x in ("if.then", "if.else", "if.end"))
        b.cbranch(cond, then, other)
        outer_bufs, outer_fallback = self.bufs, self.fallback
        facts = self.unit_stride_facts(s.cond)
        for blk, body in ((then, s.then), (other, s.orelse)):
            b.position_at_end(blk)
            if blk is then:
                self.bufs = facts
            elif facts is not outer_bufs:
                self.fallback = True
            self.block(body)
            self.bufs, self.fallback = outer_bufs, outer_fallback
            b.branch(done)
        b.position_at_end(done)

    def unit_stride_facts(self, cond):
        """self.bufs, with the last stride of every buffer that ``cond`` (a conjunction) tests
        ``== 1`` made the constant 1: accesses inside the branch are plain vector loads and
        stores, and its ``vectorize`` loops need no strided version (kir.unit_stride_test)."""
        unit, unit_or_zero = kir.unit_stride_tested(cond)
        if not unit and not unit_or_zero:
            return self.bufs
        bufs = dict(self.bufs)
        for name in unit:
            if name in bufs:
                data, dims, strides = bufs[name]
                bufs[name] = (data, dims, strides[:-1] + [_i64(1)])
        for name in unit_or_zero:
            if name in bufs and name not in unit:
                data, dims, strides = bufs[name]
                if not isinstance(strides[-1], (_UnitOrZero, ll.Constant)):   # (an outer test knew)
                    bufs[name] = (data, dims, strides[:-1] + [_UnitOrZero(strides[-1])])
        return bufs

    def s_alloc(self, s):
        buf = s.buf
        if buf.scope != "local":
            self.fail(s, f"{buf.scope} memory is for GPU backends")
        n = 1
        for d in buf.shape:
            n *= d
        arr = self.alloca(ll.ArrayType(mem_type(buf.dtype), n), buf.name)
        arr.align = LOCAL_ALIGN  # whole cache lines: vector accesses never split a line
        self.bufs[buf.name] = (arr, [_i64(d) for d in buf.shape], [_i64(d) for d in buf.strides])

    def s_barrier(self, s):
        self.fail(s, f"{type(s).__name__} is for GPU backends")

    # -- memory
    def contiguous(self, buf):
        return isinstance(buf, kir.LocalBuffer) or self.known_unit(buf)

    def known_unit(self, buf):
        """Whether buf's last stride is known to be 1 (or, for loads, 1 or 0) here: an
        enclosing unit-stride test."""
        st = self.bufs[buf.name][2]
        return bool(st) and (isinstance(st[-1], _UnitOrZero) or isinstance(st[-1], ll.Constant)
                             and st[-1].constant == 1)

    def element_ptr(self, buf, index):
        data, _, strides = self.bufs[buf.name]
        off = None
        for idx, st in zip(index, strides):
            v = self.ops.cast(self.expr(idx), idx.dtype, "int64")
            st = st.value if isinstance(st, _UnitOrZero) else st
            if isinstance(st, ll.Constant) and st.constant == 0:
                continue
            term = v if isinstance(st, ll.Constant) and st.constant == 1 else self.b.mul(v, st)
            off = term if off is None else self.b.add(off, term)
        ptr = self.b.gep(data, [off if off is not None else _i64(0)],
                         source_etype=mem_type(buf.dtype))
        return ptr, (strides[-1] if strides else None)

    def stride_switch(self, stride, unit, other):
        """if (stride == 1) unit() else other(); returns the phi of their values (if any)."""
        b = self.b
        fast, slow, done = (self.block_named(x) for x in ("unit", "strided", "access_end"))
        b.cbranch(b.icmp_signed("==", stride, _i64(1)), fast, slow)
        out = []
        for blk, fn in ((fast, unit), (slow, other)):
            b.position_at_end(blk)
            out.append((fn(), b.block))
            b.branch(done)
        b.position_at_end(done)
        if out[0][0] is None:
            return None
        phi = b.phi(out[0][0].type)
        for v, blk in out:
            phi.add_incoming(v, blk)
        return phi

    def lane_helper(self, kind, dtype, lanes):
        """``kiln_gather_<dtype>x<lanes>(ptr, stride) -> vector`` or ``kiln_scatter_...(ptr,
        stride, vector)``: a vector access along a non-unit (or 0) stride, lane by lane.

        Defined once per module and never inlined: a strided vector access is rare and slow
        anyway, and one call in place of 4 x lanes instructions per access keeps the
        generated code (and the time LLVM spends on it) small."""
        name = f"kiln_{kind}_{dtype}x{lanes}"
        if name in self.m.globals:
            return self.m.globals[name]
        mt = mem_type(dtype)
        vt = ll.VectorType(mt, lanes)
        align = kir.itemsize(dtype)
        args = [PTR, I64] + ([vt] if kind == "scatter" else [])
        fn = ll.Function(self.m, ll.FunctionType(vt if kind == "gather" else VOID, args), name=name)
        fn.linkage = "internal"
        fn.attributes.add("nounwind")
        fn.attributes.add("noinline")
        b = ll.IRBuilder(fn.append_basic_block("entry"))
        ptr, stride = fn.args[:2]
        out = undef(vt)
        for k in range(lanes):
            p = b.gep(ptr, [b.mul(_i64(k), stride)], source_etype=mt)
            if kind == "gather":
                out = b.insert_element(out, b.load(p, typ=mt, align=align), ll.Constant(I32, k))
            else:
                b.store(b.extract_element(fn.args[2], ll.Constant(I32, k)), p, align=align)
        if kind == "gather":
            b.ret(out)
        else:
            b.ret_void()
        return fn

    # -- expressions
    def e_const(self, e):
        return self.ops.const(e.dtype, e.value)

    def e_var(self, e):
        if e.name not in self.env:
            self.fail(e, f"{e.name!r} is not defined (run kernel_ir.verify)")
        return self.read(e.name)

    def read(self, name):
        v, t, _ = self.env[name]
        return v if t is None else self.b.load(v, typ=t)

    def e_load(self, e):
        ptr, stride = self.element_ptr(e.buf, e.index)
        mt, align, n = mem_type(e.dtype), kir.itemsize(e.dtype), e.lanes
        b = self.b
        if isinstance(stride, _UnitOrZero) and n > 1:
            # a row, or one element broadcast: no branch in the loop (a per-load branch cost a
            # LeNet step 15%); the vector load reads a zeroed local when the row is one element
            unit = b.icmp_signed("==", stride.value, _i64(1))
            vt = ll.VectorType(mt, n)
            row = b.load(b.select(unit, ptr, self.splat_scratch(vt)), typ=vt, align=align)
            one = self.ops.broadcast(b.load(ptr, typ=mt, align=align), n)
            return self.ops.from_mem(b.select(unit, row, one), e.dtype)
        if n == 1 or self.contiguous(e.buf):
            v = b.load(ptr, typ=mt if n == 1 else ll.VectorType(mt, n), align=align)
            return self.ops.from_mem(v, e.dtype)

        def lanes():
            return b.call(self.lane_helper("gather", e.dtype, n), [ptr, stride])
        v = self.stride_switch(stride, lambda: b.load(ptr, typ=ll.VectorType(mt, n), align=align),
                               lanes)
        return self.ops.from_mem(v, e.dtype)

    def e_dim(self, e):
        return self.bufs[e.buf.name][1][e.axis]

    def e_stride(self, e):
        st = self.bufs[e.buf.name][2][e.axis]
        return st.value if isinstance(st, _UnitOrZero) else st

    def e_binop(self, e):
        return self.ops.binary(e.op, self.expr(e.a), self.expr(e.b), e.a.dtype)

    def e_unop(self, e):
        return self.ops.unary(e.op, self.expr(e.a), e.dtype)

    def e_fma(self, e):
        return self.ops.intrinsic("fma", self.expr(e.a), self.expr(e.b), self.expr(e.c))

    def e_cast(self, e):
        return self.ops.cast(self.expr(e.value), e.value.dtype, e.dtype)

    def e_select(self, e):
        return self.b.select(self.expr(e.cond), self.expr(e.a), self.expr(e.b))

    def e_broadcast(self, e):
        return self.ops.broadcast(self.expr(e.value), e.lanes)

    def e_ramp(self, e):
        n, dt = e.lanes, e.dtype
        base = self.ops.broadcast(self.expr(e.base), n)
        step = self.ops.broadcast(self.expr(e.stride), n)
        lanes = ll.Constant(ty(dt, n), [ll.Constant(ty(dt), k) for k in range(n)])
        return self.b.add(base, self.b.mul(lanes, step))

    def e_reduce(self, e):
        return self.ops.reduce(e.op, self.expr(e.value), e.dtype)

    def e_shuffle(self, e):
        """shufflevector of the values concatenated: one instruction for one value or two of
        one type (a stride-2 load), else the values are concatenated first."""
        vals = [self.expr(x) for x in e.values]
        while len(vals) > 2 or len(vals) == 2 and vals[0].type != vals[1].type:
            vals[:2] = [self.concat(vals[0], vals[1])]
        other = vals[1] if len(vals) == 2 else undef(vals[0].type)
        return self.b.shuffle_vector(vals[0], other, _lane_mask(e.indices))

    def concat(self, a, b):
        """The lanes of a then b (shufflevector's operands share a type: widen the shorter)."""
        n, m = a.type.count, b.type.count
        w = max(n, m)

        def widen(v):
            k = v.type.count
            if k == w:
                return v
            pad = _lane_mask(list(range(k)) + [0] * (w - k))
            return self.b.shuffle_vector(v, undef(v.type), pad)
        return self.b.shuffle_vector(widen(a), widen(b), _lane_mask(list(range(n)) + [w + k for k in range(m)]))

    def e_gpu_index(self, e):
        self.fail(e, f"{type(e).__name__} is for GPU backends")

