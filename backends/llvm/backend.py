"""The LLVM CPU backend: an optimized FunctionGraph -> one MCJIT engine of native kernels.

``LLVMBackend().compile(fgraph, options)``:

1. order the nodes (engine/schedule.py's plan when it offers one, else a toposort);
2. lower each node (engine/lower.py; rules in engine/lowering/): kernels + launch steps +
   an output-shape function, or a view; identical kernels are shared, clashing names get a
   suffix;
3. function-level cache (engine/function_cache.py): on a hit, load each kernel's object code by
   its stored key and skip steps 4-5 entirely (no LLVM compilation, no loop transforms);
4. CPU schedule (``cpu_schedule``): loops the rules marked ``parallel`` run on the thread pool
   behind a runtime work guard (an innermost one is split into blocks first); the innermost
   loop the vectorizer accepts (else its parent) becomes ``vector_bytes / itemsize`` lanes;
5. ``compile_kernels`` of all kernels into one engine (O3, ``KILN_LLVM_OPT``), kernel cache.

``CompiledGraph.run(arrays)``: per node, in order, compute and check output shapes (a
``KilnShapeError`` naming the node, before any of its kernels runs), allocate outputs (fresh
arrays for the function's outputs, pooled buffers reused across calls for intermediates,
released after their last reader), then launch the steps with argument packing precomputed per
step. A node remembers its output and temp shapes per input signature (shapes, and the values of
small 0-d / integer inputs), so a repeated call skips that work; constant host scalars (gemm's
alpha, beta) are packed as literals. ``kernels`` lists ``LLVMKernel`` objects (``name``,
``nodes``, ``source(level)`` for "ir" | "loops" | "llvm" | "asm", ``stats``). ``profile()``
gives per-kernel calls and time when profiling is on (``KILN_DEBUG=timing`` or ``compiled.profiling = True``).

Nodes without a lowering (e.g. nn ops before their rules exist) run through the numpy oracle's
implementation on the host and are listed in ``host_nodes`` (``KILN_LLVM_STRICT=1`` raises
instead).
"""

from __future__ import annotations

import ctypes
import os
import threading
import time
from collections import OrderedDict

import numpy as np

from backends import Backend, Capabilities
from backends.common import PlannedGraph, Slots
from backends.llvm import runtime as rt
from engine import function_cache
from engine import kernel_ir as ir
from engine.debug import debug_enabled, debug_log
from engine.errors import KilnError, KilnShapeError, describe_node
from engine.graph import Constant, toposort
from engine.kernel_ir import Var
from engine.loopopt import guard_unit_strides, vectorize
from engine.lower import HostScalar, In, LoweringError, Out, Tmp, has_lowering, lower
from engine.lowering.common import ArgView

#: estimated iterations of work below which a parallel loop runs on the calling thread
PARALLEL_THRESHOLD = 1 << 16
#: most distinct (dtype, shape) buffer keys a function's pool keeps between calls
POOL_KEYS = 256
#: distinct input-shape signatures each node remembers its output / temp shapes for
SHAPE_MEMO_SIZE = 16
#: 0-d / integer inputs at most this big are part of that signature (by value); bigger: no memo
SHAPE_MEMO_VALUE = 64


def vector_bytes() -> int:
    features = rt.target_info()["features"]
    if "+avx512f" in features:
        return 64
    if "+avx" in features or "+avx2" in features:
        return 32
    return 16


# ----------------------------------------------------------------------------- CPU schedule

def _trips(loop):
    zero = isinstance(loop.start, ir.Const) and loop.start.value == 0
    n = loop.stop if zero else ir.binop("sub", loop.stop, loop.start)
    return n if loop.step == 1 else ir.binop("floordiv", n, loop.step)


def _work(loop):
    """Estimated iterations of a loop nest: trips x the summed trips of the loops nested in
    it (three levels, through Ifs; sibling loops add up, so a nest split into border / interior segments
    counts all of them). A nested loop whose bounds use a name bound inside the nest cannot be
    sized before the loop runs: it counts as a whole chunk of work, because such nests are the
    hand-scheduled ones (a GEMM's tile units, a conv's row ranges) whose author already sized
    each iteration for a thread; counting them as one trip left the GEMM on one thread."""
    inside = ir.bound_names(loop) | {loop.var.name}

    def loops_of(body):
        """The loops of a body, seen through Ifs (their then-branch: a unit-stride test's
        vectorized rows, which must not hide the rows' work from the estimate)."""
        out = []
        for s in body:
            if isinstance(s, ir.Loop):
                out.append(s)
            elif isinstance(s, ir.If):
                out += loops_of(s.then) or loops_of(s.orelse)
        return out

    def body_work(body, depth):
        loops = loops_of(body)
        if depth == 0 or not loops:
            return None
        total = None
        for inner in loops:
            free = not (ir.free_vars(inner.start) | ir.free_vars(inner.stop)) & inside
            w = ir.binop("max", _trips(inner), 1) if free else ir.Const(PARALLEL_THRESHOLD)
            sub = body_work(inner.body, depth - 1)
            w = w if sub is None else w * sub
            total = w if total is None else total + w
        return total

    inner = body_work(loop.body, 3)
    return _trips(loop) if inner is None else _trips(loop) * inner


def _affine(start, k, step):
    """start + k * step, without the + 0 and * 1."""
    term = k if step == 1 else k * step
    return term if isinstance(start, ir.Const) and start.value == 0 else start + term


def _ir_size(kernel: ir.Kernel) -> int:
    return sum(1 for _ in ir.walk(kernel.body))


def _innermost(loop) -> bool:
    return not any(isinstance(n, ir.Loop) for n in ir.walk(loop.body))


def _lanes(loop, vbytes: int) -> int:
    sizes = [ir.itemsize(n.buf.dtype) for n in ir.walk(loop.body) if isinstance(n, (ir.Load, ir.Store))]
    sizes += [ir.itemsize(n.var.dtype) for n in ir.walk(loop.body) if isinstance(n, ir.Declare)]
    return max(2, min(32, vbytes // max(sizes, default=4)))


class _Scheduler:
    def __init__(self, vbytes: int, threads: int, taken: set | None = None) -> None:
        self.vbytes, self.threads = vbytes, threads
        self.taken = set(taken or ())  # every name of the kernel: new locals must not clash

    def body(self, body, in_parallel: bool) -> tuple[tuple, bool]:
        out, vec = [], False
        for s in body:
            stmts, v = self.stmt(s, in_parallel)
            out.extend(stmts)
            vec |= v
        return tuple(out), vec

    def stmt(self, s, in_parallel: bool) -> tuple[tuple, bool]:
        if isinstance(s, ir.If):
            then, v1 = self.body(s.then, in_parallel)
            other, v2 = self.body(s.orelse, in_parallel)
            return (ir.If(s.cond, then, other),), v1 or v2
        if not isinstance(s, ir.Loop):
            return (s,), False
        if s.kind == "unroll":
            body, vec = self.body(s.body, in_parallel)
            return (ir.Loop(s.var, s.start, s.stop, body, s.kind, s.step),), vec
        if s.kind == "parallel" and (self.threads > 1 and not in_parallel):
            return self.parallel(s)
        if s.kind in ("parallel", "serial"):
            return self.serial(ir.Loop(s.var, s.start, s.stop, s.body, "serial", s.step), in_parallel)
        return (s,), False

    def serial(self, loop, in_parallel: bool) -> tuple[tuple, bool]:
        if _innermost(loop) or loop.step != 1:
            return self.try_vectorize(loop)
        body, vec = self.body(loop.body, in_parallel)
        if vec:
            return (ir.Loop(loop.var, loop.start, loop.stop, body, loop.kind, loop.step),), True
        return self.try_vectorize(loop)

    def try_vectorize(self, loop) -> tuple[tuple, bool]:
        if loop.step != 1:
            return (loop,), False
        try:
            out = tuple(vectorize(loop, _lanes(loop, self.vbytes)))
        except ir.KernelIRError:
            return (loop,), False
        return guard_unit_strides(self.unique(out, loop), loop), True

    def unique(self, stmts: tuple, loop) -> tuple:
        """Rename the locals a transform introduced that clash with a name elsewhere."""
        new = ir.bound_names(stmts) - ir.bound_names(loop)
        renames = {}
        for n in sorted(new):
            if n in self.taken:
                k, cand = 1, f"{n}_{1}"
                while cand in self.taken or cand in new:
                    k += 1
                    cand = f"{n}_{k}"
                renames[n] = cand
                self.taken.add(cand)
            else:
                self.taken.add(n)
        return ir.rename(stmts, renames) if renames else stmts

    def fresh(self, name: str) -> str:
        cand, k = name, 1
        while cand in self.taken:
            k += 1
            cand = f"{name}{k}"
        self.taken.add(cand)
        return cand

    def parallel(self, loop) -> tuple[tuple, bool]:
        """``parallel for c < nchunks: for i in chunk c: body`` with nchunks = work / threshold
        (at least 1, at most the trips): small work is one chunk, which the runtime runs on
        the calling thread without touching the pool, so no serial copy of the loop is needed."""
        trips = _trips(loop)
        work = _work(loop)
        nchunks = Var(self.fresh(f"{loop.var.name}_nchunks"))
        c = Var(self.fresh(f"{loop.var.name}_chunk"))
        lo = _affine(loop.start, (trips * c) // nchunks, loop.step)
        hi = _affine(loop.start, (trips * (c + 1)) // nchunks, loop.step)
        hi = ir.minimum(hi, loop.stop) if loop.step != 1 else hi
        inner = ir.Loop(loop.var, lo, hi, loop.body, "serial", loop.step)
        stmts, vec = self.serial(inner, True)
        count = ir.maximum(ir.minimum(ir.binop("floordiv", work, PARALLEL_THRESHOLD), trips), ir.Const(1))
        par = ir.Loop(c, 0, nchunks, stmts, "parallel")
        return (ir.Declare(nchunks, count), par), vec


def cpu_schedule(kernel: ir.Kernel, vbytes: int | None = None, threads: int | None = None) -> ir.Kernel:
    """Loop transforms for the CPU (see the module docstring)."""
    taken = {p.name for p in kernel.params} | ir.free_vars(kernel.body) | ir.bound_names(kernel.body)
    sched = _Scheduler(vbytes or vector_bytes(), rt.num_threads() if threads is None else threads, taken)
    body, _ = sched.body(kernel.body, False)
    return ir.Kernel(kernel.name, kernel.params, body)


# ----------------------------------------------------------------------------- kernels

class LLVMKernel:
    """One generated kernel of a compiled function: ``name``, ``nodes`` (the Apply nodes it
    was lowered from), ``source(level)``, ``stats`` (calls, seconds, bytes, flops)."""

    def __init__(self, name: str, raw: ir.Kernel, nodes: list, opt: int, scheduled: ir.Kernel | None,
                 vbytes: int, threads: int) -> None:
        self.name = name
        self.raw = raw
        self.nodes = nodes
        self.opt = opt
        self._scheduled = scheduled
        self._vbytes, self._threads = vbytes, threads
        self.compiled = None  # runtime.CompiledKernel
        self.cache_key = None
        self.stats = {"calls": 0, "seconds": 0.0, "bytes": 0, "flops": 0}
        self._sources: dict = {}

    @property
    def kernel(self) -> ir.Kernel:
        """The scheduled kernel IR (what was compiled)."""
        if self._scheduled is None:
            self._scheduled = cpu_schedule(self.raw, self._vbytes, self._threads)
        return self._scheduled

    def source(self, level: str = "ir") -> str:
        """"ir" (numbered listing), "loops" (C-like loop nest), "llvm" (optimized LLVM IR),
        "asm" (machine assembly)."""
        if level == "ir":
            return ir.listing(self.kernel)
        if level == "loops":
            return ir.loop_nest(self.kernel)
        if level not in ("llvm", "asm"):
            raise KilnError(f"source level must be ir, loops, llvm or asm; got {level!r}")
        if level not in self._sources:
            with rt._LOCK:
                ref = rt.build_module(self.kernel, self.opt)
                self._sources["llvm"] = str(ref)
                self._sources["asm"] = rt._emit_tm(self.opt).emit_assembly(ref)
        return self._sources[level]

    def __repr__(self) -> str:
        return f"<LLVMKernel {self.name} ({len(self.nodes)} node{'s' if len(self.nodes) != 1 else ''})>"


# ----------------------------------------------------------------------------- buffers

class BufferPool:
    """Intermediate buffers by (dtype, shape), kept between calls of one function."""

    def __init__(self) -> None:
        self.free: OrderedDict = OrderedDict()

    def get(self, shape: tuple, dtype: np.dtype) -> np.ndarray:
        lst = self.free.get((dtype, shape))
        if lst:
            return lst.pop()
        return np.empty(shape, dtype)

    def put(self, array: np.ndarray) -> None:
        key = (array.dtype, array.shape)
        lst = self.free.get(key)
        if lst is None:
            if len(self.free) >= POOL_KEYS:
                self.free.popitem(last=False)
            lst = self.free[key] = []
        lst.append(array)


def _pointer_reader() -> str:
    """How a launch function reads an array's data address: the ``data`` field of the array
    object itself (offset 16 in CPython's PyArrayObject, after the object header), inlined as
    ``read(id(a) + 16).value`` (no Python call per argument, 8x faster than ``a.ctypes.data``);
    verified on a few arrays and views, else ``a.ctypes.data``."""
    read = ctypes.c_uint64.from_address
    try:
        base = np.arange(64, dtype=np.float64)
        samples = [base, base[3:], base.reshape(8, 8)[:, 2:].T, np.empty((0,), np.int8), np.zeros(3, bool)]
        if all(read(id(x) + 16).value == x.ctypes.data for x in samples):
            return "read(id({}) + 16).value"
    except Exception:  # noqa: BLE001 - any doubt: the documented way
        pass
    return "{}.ctypes.data"


_PTR = _pointer_reader()  # text with one {} for the array


class _Launch:
    """One step: a compiled kernel and how to fetch each argument. Calling it packs the
    argument slots with a Python function generated for this step (one expression, no loops
    or per-argument dispatch: the thin per-call path) and runs the kernel."""

    __slots__ = ("kernel", "sources", "flops_k", "call")

    def __init__(self, kernel: LLVMKernel, args: tuple) -> None:
        self.kernel = kernel
        ck = kernel.compiled
        env = {"cfunc": ck.cfunc, "pack": ck._struct.pack, "read": ctypes.c_uint64.from_address}
        lines, slots, sources = [], [], []
        for n, (p, a) in enumerate(zip(kernel.raw.params, args)):
            if isinstance(p, ir.BufferParam):
                isz = np.dtype(p.dtype).itemsize
                lines.append(f"    b{n} = {_fetch(a, env, n)}")
                if p.ndim:
                    lines.append(f"    s{n} = b{n}.shape; t{n} = b{n}.strides")
                slots.append(_PTR.format(f"b{n}"))
                slots += [f"s{n}[{d}]" for d in range(p.ndim)]
                slots += [f"(0 if s{n}[{d}] == 1 else t{n}[{d}] // {isz})" for d in range(p.ndim)]
                sources.append(_source(a))
            else:
                if not isinstance(a, HostScalar):
                    raise LoweringError(f"kernel {kernel.name}: scalar parameter {p.name} needs a HostScalar, "
                                        f"given {a!r}")
                conv = float if ir.is_float(p.dtype) else (bool if p.dtype == "bool" else int)
                if _is_constant(a):  # alpha, beta, use_c: evaluated once, here, not per call
                    env[f"h{n}"] = conv(a.fn(()))
                    slots.append(f"h{n}")
                else:
                    env[f"h{n}"] = a.fn
                    slots.append(f"{conv.__name__}(h{n}(ins))")
        src = "def launch(ins, outs, temps):\n" + "\n".join(lines) + \
            f"\n    cfunc(pack({', '.join(slots)}))\n"
        exec(compile(src, f"<kiln launch {kernel.name}>", "exec"), env)  # noqa: S102 - our own text
        self.call = env["launch"]
        self.sources = sources
        self.flops_k = kernel.name.startswith(("matmul", "gemm"))

    def buffers(self, ins, outs, temps) -> list:
        return [src(ins, outs, temps) for src in self.sources]

    def __call__(self, ins, outs, temps) -> None:
        self.call(ins, outs, temps)


def _is_constant(scalar: HostScalar) -> bool:
    """Whether a host scalar is one of the lowering rules' constants (``_constant(value)``),
    the same value on every call whatever the inputs."""
    from engine.lowering.gemm import _constant

    return getattr(scalar.fn, "__code__", None) is _constant(None).__code__


def _fetch(a, env: dict, n: int) -> str:
    """Python text fetching a step argument (In/Out/Tmp/ArgView) inside a launch function."""
    if isinstance(a, In):
        return f"ins[{a.index}]"
    if isinstance(a, Out):
        return f"outs[{a.index}]"
    if isinstance(a, Tmp):
        return f"temps[{a.index}]"
    if isinstance(a, ArgView):
        env[f"view{n}"] = a.fn
        return f"view{n}({_fetch(a.arg, env, n)}, ins)"
    raise LoweringError(f"unknown step argument {a!r}")


def _source(a):
    if isinstance(a, In):
        k = a.index
        return lambda ins, outs, temps: ins[k]
    if isinstance(a, Out):
        k = a.index
        return lambda ins, outs, temps: outs[k]
    if isinstance(a, Tmp):
        k = a.index
        return lambda ins, outs, temps: temps[k]
    if isinstance(a, ArgView):
        base, fn = _source(a.arg), a.fn
        return lambda ins, outs, temps: fn(base(ins, outs, temps), ins)
    raise LoweringError(f"unknown step argument {a!r}")


# ----------------------------------------------------------------------------- node plans

class _NodePlan:
    __slots__ = ("node", "in_slots", "out_slots", "lowered", "launches", "fresh", "dtypes", "release",
                 "host", "temp_specs", "host_outputs", "out_kind", "execute", "run_kernels", "value_inputs",
                 "shape_memo", "temp_dtypes")

    def __init__(self, node, in_slots, out_slots) -> None:
        self.node = node
        self.in_slots = in_slots
        self.out_slots = out_slots
        self.lowered = None
        self.launches: list = []
        self.fresh: list = []
        self.dtypes = [np.dtype(o.dtype) for o in node.outputs]
        self.release: list = []
        self.host = False
        self.temp_specs: list = []
        self.temp_dtypes: list = []
        self.host_outputs: dict = {}
        self.out_kind: list = []   # per output: 0 fresh array, 1 pooled buffer, 2 computed on the host
        self.execute = None
        self.run_kernels = None   # the node's generated executor (``_kernel_executor``)
        #: inputs whose values (not only shapes) may decide the output shapes: 0-d or integer,
        #: constants excepted (a constant's value never changes: ``x + 1.0`` keys on shapes only)
        self.value_inputs = tuple(k for k, v in enumerate(node.inputs)
                                  if (v.ndim == 0 or np.dtype(v.dtype).kind in "biu") and not isinstance(v, Constant))
        #: _shape_key(ins) -> (output shapes, temp shapes): output_shapes and the temps' shape
        #: functions read only shapes and small values, so a repeated signature skips them
        self.shape_memo: dict = {}


def _wrap(node, error: Exception) -> KilnShapeError:
    return KilnShapeError(f"{describe_node(node)}: {error}")


def _release(plan, vals, owned, pool) -> None:
    for s in plan.release:
        if s in owned:
            pool.put(vals[s])
            owned.discard(s)
        vals[s] = None


def _exec_host(plan, vals, owned, pool, profiling) -> None:
    from backends.numpy.table import run_node

    for s, v in zip(plan.out_slots, run_node(plan.node, [vals[s] for s in plan.in_slots])):
        vals[s] = v
    _release(plan, vals, owned, pool)


def _exec_view(plan, vals, owned, pool, profiling) -> None:
    ins = [vals[s] for s in plan.in_slots]
    try:
        view = plan.lowered.view(ins)
    except KilnError:
        raise
    except (ValueError, IndexError, TypeError) as e:
        raise _wrap(plan.node, e) from e
    if view is None:  # no view possible (a non-contiguous reshape): run the kernels
        return plan.run_kernels(plan, vals, owned, pool, profiling)
    for s, v in zip(plan.out_slots, view if isinstance(view, tuple) else (view,)):
        vals[s] = v
    if plan.release:
        _release(plan, vals, owned, pool)


def _shape_key(plan, ins) -> tuple | None:
    """What a node's output and temp shapes depend on: its inputs' shapes and the bytes of its
    small 0-d / integer inputs (None: not memoizable, e.g. a large index array whose values the
    lowering bounds-checks on every call)."""
    try:
        key = tuple([a.shape for a in ins])
        if plan.value_inputs:
            extra = []
            for k in plan.value_inputs:
                a = ins[k]
                if a.size > SHAPE_MEMO_VALUE:
                    return None
                extra.append(a.tobytes())
            key += tuple(extra)
    except AttributeError:  # a host value that is not an array (a Python scalar): no memo
        return None
    return key


def _shapes(plan, ins) -> tuple:
    """(output shapes, temp shapes) of a node for these inputs, memoized on ``_shape_key``."""
    key = _shape_key(plan, ins)
    memo = plan.shape_memo
    found = memo.get(key) if key is not None else None
    if found is not None:
        return found
    try:
        shapes = tuple(tuple(s) for s in plan.lowered.output_shapes(ins))
        temps = tuple(tuple(fn(ins)) for _, fn in plan.temp_specs)
    except KilnError:
        raise
    except (ValueError, IndexError, TypeError, OverflowError) as e:
        raise _wrap(plan.node, e) from e
    found = (shapes, temps)
    if key is not None:  # only a check that passed is remembered: a failing one raises every time
        if len(memo) >= SHAPE_MEMO_SIZE:
            memo.clear()
        memo[key] = found
    return found


def _kernel_executor(plan):
    """How a kernel node runs, as Python generated for it (the thin per-call path, like
    ``_Launch``): output and temp shapes (``_shapes``; a repeated input-shape signature is one
    dict lookup), outputs fresh, pooled or computed on the host, the launches (or, while
    profiling, ``_profiled``), then the temps back to the pool and the node's releases. Its
    slots, dtypes, output kinds and launches are constants of the text: ~2 us a node less
    than a generic loop over them (an RBM step runs 23 kernel nodes)."""
    n_in = len(plan.in_slots)
    env = {"plan": plan, "memo": plan.shape_memo, "shapes_of": _shapes, "KilnError": KilnError, "wrap": _wrap,
           "profiled": _profiled, "release": _release, "empty": np.empty}
    lines = ["def execute(plan, vals, owned, pool, profiling):"]
    names = [f"i{k}" for k in range(n_in)]
    lines += [f"    {n} = vals[{s}]" for n, s in zip(names, plan.in_slots)]
    lines.append(f"    ins = [{', '.join(names)}]")
    if plan.value_inputs:
        lines.append("    found = shapes_of(plan, ins)")
    else:
        key = "(" + "".join(f"{n}.shape, " for n in names) + ")"
        lines += ["    try:", f"        found = memo.get({key})",
                  "    except AttributeError:   # a host value that is not an array",
                  "        found = None",
                  "    if found is None:", "        found = shapes_of(plan, ins)"]
    lines += ["    shapes, temp_shapes = found", "    try:"]
    temps = []
    for k, dt in enumerate(plan.temp_dtypes):
        env[f"tdt{k}"] = dt
        lines.append(f"        t{k} = pool.get(temp_shapes[{k}], tdt{k})")
        temps.append(f"t{k}")
    outs = []
    for k, kind in enumerate(plan.out_kind):
        env[f"dt{k}"] = plan.dtypes[k]
        if kind == 0:
            lines.append(f"        o{k} = empty(shapes[{k}], dt{k})")
        elif kind == 1:
            lines += [f"        o{k} = pool.get(shapes[{k}], dt{k})", f"        owned.add({plan.out_slots[k]})"]
        else:
            env[f"host{k}"] = plan.host_outputs[k]
            lines.append(f"        o{k} = host{k}(ins)")
        outs.append(f"o{k}")
    if not temps and not outs:
        lines.append("        pass")
    lines += ["    except KilnError:", "        raise",
              "    except (ValueError, IndexError, TypeError, OverflowError) as e:",
              "        raise wrap(plan.node, e) from e",
              f"    outs = [{', '.join(outs)}]", f"    temps = [{', '.join(temps)}]",
              "    if profiling:", "        profiled(plan, ins, outs, temps)", "    else:"]
    for j, launch in enumerate(plan.launches):
        env[f"launch{j}"] = launch.call
        lines.append(f"        launch{j}(ins, outs, temps)")
    if not plan.launches:
        lines.append("        pass")
    lines += [f"    vals[{s}] = o{k}" for k, s in enumerate(plan.out_slots)]
    lines += [f"    pool.put(t{k})" for k in range(len(temps))]
    if plan.release:
        lines.append("    release(plan, vals, owned, pool)")
    src = "\n".join(lines) + "\n"
    exec(compile(src, f"<kiln node {describe_node(plan.node)[:60]}>", "exec"), env)  # noqa: S102 - our own text
    return env["execute"]


def _profiled(plan, ins, outs, temps) -> None:
    for launch in plan.launches:
        t0 = time.perf_counter()
        launch.call(ins, outs, temps)
        elapsed = time.perf_counter() - t0
        st = launch.kernel.stats
        st["calls"] += 1
        st["seconds"] += elapsed
        st["bytes"] += sum(b.nbytes for b in launch.buffers(ins, outs, temps))
        if launch.flops_k and ins:
            trans_a = getattr(plan.node.op, "trans_a", False)
            st["flops"] += 2 * outs[0].size * ins[0].shape[-2 if trans_a else -1]
        debug_log("timing", f"{launch.kernel.name}: {elapsed * 1e6:.1f} us")


class LLVMCompiledGraph(PlannedGraph):
    def __init__(self, fgraph, plans, n_slots, init_values, input_slots, output_slots, kernels,
                 host_nodes, profiling: bool, warm: bool) -> None:
        super().__init__(fgraph, plans, n_slots, init_values, input_slots, output_slots, kernels,
                         host_nodes)
        self.profiling = profiling
        self.warm = warm
        self.pool = BufferPool()
        self._lock = threading.Lock()
        self.calls = 0
        self.threads = rt.num_threads()

    def run(self, arrays: list) -> list:
        self.shape_check.check(arrays)
        threads = rt.num_threads()
        if threads != self.threads:   # temp shapes may depend on it (a conv's per-thread partials)
            self.threads = threads
            for plan in self.plans:
                plan.shape_memo.clear()
        if not self._lock.acquire(blocking=False):  # another thread is running: a private pool
            return self._run(arrays, BufferPool())
        try:
            return self._run(arrays, self.pool)
        finally:
            self._lock.release()

    def _run(self, arrays: list, pool: BufferPool) -> list:
        vals = self.init_values.copy()
        owned: set = set()  # slots holding a buffer taken from the pool in this call
        for slot, a in zip(self.input_slots, arrays):
            vals[slot] = a if a.flags.aligned else np.array(a)
        self.calls += 1
        profiling = self.profiling
        if self.guard:
            from backends.numpy import _check_finite

            for plan in self.plans:
                plan.execute(plan, vals, owned, pool, profiling)
                for s, out in zip(plan.out_slots, plan.node.outputs):
                    if vals[s] is not None:
                        _check_finite(plan.node, out, vals[s])
        else:
            for plan in self.plans:
                plan.execute(plan, vals, owned, pool, profiling)
        return [vals[s] for s in self.output_slots]

    # -- profiling
    def profile(self) -> list[dict]:
        """Per-kernel rows (most time first): kernel, nodes, calls, seconds, us_per_call, GB/s,
        GFLOP/s (matmul/gemm). Collected while ``profiling`` is on (KILN_DEBUG=timing)."""
        rows = []
        for k in self.kernels:
            st = k.stats
            secs = st["seconds"]
            rows.append({"kernel": k.name, "nodes": [str(n.op) for n in k.nodes], "calls": st["calls"],
                         "seconds": secs, "us_per_call": secs / st["calls"] * 1e6 if st["calls"] else 0.0,
                         "GB/s": st["bytes"] / secs / 1e9 if secs else 0.0,
                         "GFLOP/s": st["flops"] / secs / 1e9 if secs and st["flops"] else None})
        rows.sort(key=lambda r: -r["seconds"])
        return rows

    def reset_profile(self) -> None:
        for k in self.kernels:
            k.stats.update(calls=0, seconds=0.0, bytes=0, flops=0)


def format_profile(rows: list[dict]) -> str:
    lines = [f"{'kernel':48s} {'calls':>7s} {'total ms':>9s} {'us/call':>9s} {'GB/s':>7s} {'GFLOP/s':>8s}"]
    for r in rows:
        gf = f"{r['GFLOP/s']:8.2f}" if r["GFLOP/s"] is not None else f"{'':8s}"
        lines.append(f"{r['kernel'][:48]:48s} {r['calls']:7d} {r['seconds'] * 1e3:9.3f} "
                     f"{r['us_per_call']:9.1f} {r['GB/s']:7.2f} {gf}")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- the backend

def _order(fgraph) -> list:
    nodes = toposort(fgraph.outputs)
    try:
        from engine import schedule  # noqa: F401  (the optimizer's plan, once it exists)

        plan = schedule.plan(fgraph) if hasattr(schedule, "plan") else None
        order = list(getattr(plan, "order", None) or [])
        if order and {id(n) for n in order} == {id(n) for n in nodes}:
            done: set = set()
            for n in order:  # usable only if it is a topological order of the same nodes
                if any(i.owner is not None and id(i.owner) not in done for i in n.inputs):
                    raise ValueError
                done.add(id(n))
            return order
    except Exception:  # noqa: BLE001 - no or unusable plan: the toposort is always correct
        pass
    return nodes


def _strict() -> bool:
    return os.environ.get("KILN_LLVM_STRICT", "0") == "1"


class LLVMBackend(Backend):
    name = "llvm"
    fuses = True

    def __init__(self) -> None:
        vb = vector_bytes()
        self.capabilities = Capabilities(vector_width=vb // 4, threads=rt.num_threads(),
                                         extra={"vector_bytes": vb, "target": rt.target_info()["cpu"]})

    def compile(self, fgraph, options: dict) -> LLVMCompiledGraph:
        t_start = time.perf_counter()
        opt = rt.default_opt()
        vbytes, threads = vector_bytes(), rt.num_threads()
        order = _order(fgraph)
        if "optimize.restored" not in fgraph.profile:
            # the rewrites ran, so this graph was not compiled before: the function cache will
            # miss too. Start the compile workers now (~0.2 s each), while the nodes are lowered,
            # not when the first kernel is ready (LeNet's first kernels waited for them)
            rt.prestart_workers(len(order), opt)
        slot_of = Slots()
        init_values = slot_of.init_values
        input_slots = [slot_of(v) for v in fgraph.inputs]
        result_ids = {id(o) for o in fgraph.outputs}
        plans, kernels_by_name, host_nodes = [], {}, []
        raw_kernels: list = []
        for node in order:
            plan = _NodePlan(node, [slot_of(i) for i in node.inputs], [slot_of(o) for o in node.outputs])
            plan.fresh = [id(o) in result_ids for o in node.outputs]
            if not has_lowering(node):
                if _strict():
                    raise LoweringError(f"llvm backend: no kernel lowering for {describe_node(node)}")
                plan.host = True
                host_nodes.append(node)
                debug_log("kernels", f"no lowering for {describe_node(node)}: runs on the host (numpy)")
                plans.append(plan)
                continue
            try:
                low = lower(node)
            except LoweringError as error:  # a rule that does not cover this configuration
                if _strict():
                    raise
                plan.host = True
                host_nodes.append(node)
                debug_log("kernels", f"{error}: {describe_node(node)} runs on the host (numpy)")
                plans.append(plan)
                continue
            plan.lowered = low
            plan.temp_specs = list(low.temps)
            plan.temp_dtypes = [np.dtype(dt) for dt, _ in low.temps]
            plan.host_outputs = dict(getattr(low, "host_outputs", {}) or {})
            renames = {}
            for k in low.kernels:
                name = k.name
                existing = kernels_by_name.get(name)
                n = 1
                while existing is not None and existing[0] != k:
                    n += 1
                    name = f"{k.name}_{n}"
                    existing = kernels_by_name.get(name)
                if existing is None:
                    k2 = k if name == k.name else ir.Kernel(name, k.params, k.body)
                    kernels_by_name[name] = (k, k2, [node])
                    raw_kernels.append(name)
                elif not any(m is node for m in existing[2]):
                    existing[2].append(node)
                renames[k.name] = name
            plan.launches = [(renames[s.kernel], s.args) for s in low.steps]
            plans.append(plan)
        output_slots = [slot_of(o) for o in fgraph.outputs]
        # lifetimes of pooled buffers: released after the last node reading them (or a view of them)
        self._plan_releases(plans, fgraph, slot_of.ids, input_slots)
        t_lower = time.perf_counter()
        text = function_cache.graph_text(fgraph, order)
        key = function_cache.function_key(text, self.name, rt.target_info(),
                                          (f"O{opt}", vbytes, threads > 1, sorted(raw_kernels)))
        entry = function_cache.load(key) if raw_kernels else None
        names = list(raw_kernels)
        llvm_kernels = {}
        program = None
        if entry is not None and [k["name"] for k in entry["kernels"]] == names:
            program = self._warm_program(entry, kernels_by_name, opt)
        warm = program is not None
        if program is None:
            rt.prestart_workers(len(names), opt)  # they start up while the loops are scheduled
            scheduled_by_name, keys = {}, []
            if names:
                with rt.Compilation(len(names), opt) as compilation:
                    # biggest first (by raw IR size): the longest LLVM jobs must not come last
                    for n in sorted(names, key=lambda n: -_ir_size(kernels_by_name[n][1])):
                        scheduled_by_name[n] = cpu_schedule(kernels_by_name[n][1], vbytes, threads)
                        compilation.add(scheduled_by_name[n])
                    program = compilation.finish()
                key_of = dict(zip(program.kernels, program.keys))  # kernel names, in add order
                keys = [key_of[n] for n in names]
                function_cache.store(key, {"kernels": [{"name": n, "key": kk, "nodes": len(kernels_by_name[n][2])}
                                                       for n, kk in zip(names, keys)],
                                           "n_nodes": len(order), "opt": opt})
            scheduled = [scheduled_by_name[n] for n in names]
        else:
            scheduled = [None] * len(names)
            keys = [k["key"] for k in entry["kernels"]]
        for n, s, kk in zip(names, scheduled, keys):
            _, k2, nodes = kernels_by_name[n]
            lk = LLVMKernel(n, k2, nodes, opt, s, vbytes, threads)
            lk.compiled = program[n]
            lk.cache_key = kk
            llvm_kernels[n] = lk
        for plan in plans:
            if plan.host:
                plan.execute = _exec_host
                continue
            plan.launches = [_Launch(llvm_kernels[name], args) for name, args in plan.launches]
            plan.out_kind = [2 if k in plan.host_outputs else (0 if fresh else 1)
                             for k, fresh in enumerate(plan.fresh)]
            plan.run_kernels = _kernel_executor(plan)
            plan.execute = _exec_view if plan.lowered.view is not None else plan.run_kernels
        profiling = debug_enabled("timing")
        compiled = LLVMCompiledGraph(fgraph, plans, len(init_values), init_values, input_slots, output_slots,
                                     [llvm_kernels[n] for n in names], host_nodes, profiling, warm)
        compiled.guard = options.get("mode") == "guard"
        compiled.compile_profile = {"lower": t_lower - t_start, "llvm": time.perf_counter() - t_lower,
                                    "warm": warm, "key": key}
        debug_log("cache", f"function {key[:16]}: {'warm (no LLVM)' if warm else 'cold'}, {len(names)} kernels, "
                           f"{time.perf_counter() - t_start:.3f}s")
        return compiled

    @staticmethod
    def _warm_program(entry, kernels_by_name, opt):
        disk = rt.get_cache(rt.CACHE_NAMESPACE)
        objects = []
        for k in entry["kernels"]:
            hit = disk.get(k["key"]) if isinstance(k.get("key"), str) else None
            if hit is None:
                return None
            objects.append(hit[0])
        raw = [kernels_by_name[k["name"]][1] for k in entry["kernels"]]
        with rt._LOCK:
            rt._init()
            rt.STATS["cache_hits"] += len(raw)
            return rt.Program(raw, objects, [True] * len(raw), opt)

    @staticmethod
    def _plan_releases(plans, fgraph, slot, input_slots) -> None:
        pooled: dict[int, int] = {}  # slot -> index of the plan producing it in a pooled buffer
        bases: dict[int, set] = {}   # slot -> pooled slots its memory may belong to
        for t, plan in enumerate(plans):
            view_like = plan.host or (plan.lowered is not None and plan.lowered.view is not None)
            in_bases = set().union(*[bases.get(s, set()) for s in plan.in_slots]) if plan.in_slots else set()
            for k, s in enumerate(plan.out_slots):
                if plan.host:  # numpy results may be views of their inputs
                    bases[s] = set(in_bases)
                elif view_like:
                    # a view (or, when it falls back to its kernel, a pooled copy) of its inputs
                    bases[s] = in_bases | ({s} if not plan.fresh[k] else set())
                    if not plan.fresh[k]:
                        pooled[s] = t
                elif not plan.fresh[k] and k not in plan.host_outputs:
                    bases[s] = {s}
                    pooled[s] = t
                else:
                    bases[s] = set()
        last: dict[int, int] = {s: t for s, t in pooled.items()}
        for t, plan in enumerate(plans):
            for s in plan.in_slots:
                for b in bases.get(s, ()):
                    last[b] = max(last[b], t)
        keep = set()
        for o in fgraph.outputs:
            keep |= bases.get(slot[id(o)], set())
        for b, t in last.items():
            if b not in keep:
                plans[t].release.append(b)
