"""The GPU backends: an optimized FunctionGraph -> GPU-scheduled kernels run by an executor.

``backend="cuda"`` (runtime.py: nvcc + pycuda on an NVIDIA GPU) and ``backend="cuda-emulator"``
(emulator.py: the same kernels run on the CPU) share everything here; only the executor
differs (``GpuExecutor``: alloc / upload / download / prepare / launch).

``GpuBackend.compile(fgraph)``:

1. nodes in topological order; each lowered by a GPU rule when backends/cuda/gemm.py has one
   (MatMul, Gemm: shared-memory tiled GEMM), else by the common lowering (engine/lower.py);
   nodes without any lowering run through the numpy oracle on the host (``host_nodes``;
   ``KILN_CUDA_STRICT=1`` raises instead);
2. every kernel through ``engine.gpu.gpu_schedule`` (bind to blocks and threads,
   block reductions, shared memory; a kernel may become several launches);
3. the executor prepares all launches at once (CUDA: one translation unit, nvcc, cached).

``run(arrays)``: values live where they were made. Function inputs are uploaded when a kernel
first needs them; shared variables stay on the device between calls: an updated value comes
back as a ``DeviceValue`` that engine.function stores in the variable unread (the hook
``CompiledGraph.keeps_device_values``) and the next call uses in place; a value set on the
host is uploaded once and mirrored while unchanged (``SharedMirrors``). Views (DimShuffle,
Reshape, broadcasting...) are computed on device arrays through numpy stand-ins (device.py);
shapes, host scalars and host outputs read device values only when they need them. Only the
function's outputs are downloaded at the end of the call; ``get_value()`` downloads a
DeviceValue once. ``mode="guard"`` checks every float result of every node for NaN/Inf.
"""

from __future__ import annotations

import os
import weakref

import numpy as np

from backends import Backend, Capabilities
from backends.common import PlannedGraph, Slots
from backends.cuda.device import SMALL, DeviceArray, HostProxy, from_standin, standin
from engine import kernel_ir as ir
from engine.debug import debug_enabled, debug_log
from engine.errors import KilnError, KilnShapeError, describe_node
from engine.gpu import GpuTarget, gpu_schedule
from engine.graph import toposort
from engine.lower import HostScalar, In, LoweringError, Out, Tmp, has_lowering, lower


class GpuExecutor:
    """Device memory and kernel launches (subclassed by the emulator and the CUDA runtime)."""

    name = "gpu"
    target = GpuTarget()
    #: blocks of a launch whose grid cannot be computed on the host
    default_grid = 1024

    def __init__(self):
        self.pool = {}
        self.mirrors = SharedMirrors(self)

    # -- memory (subclasses implement _alloc, _upload_into, download)
    def alloc(self, nbytes):
        size = max(256, (int(nbytes) + 255) // 256 * 256)
        free = self.pool.get(size)
        if free:
            a = free.pop()
        else:
            a = self._alloc(size)
            a.nbytes = size
        a.kept = 0
        return a

    def free(self, alloc):
        """Back to the pool, unless something still holds it (``hold``)."""
        if not alloc.kept:
            self.pool.setdefault(alloc.nbytes, []).append(alloc)

    def hold(self, alloc):
        """One more owner beyond the call that made it (a DeviceValue, a shared mirror):
        a held allocation is never handed out again."""
        alloc.kept += 1

    def unhold(self, alloc):
        alloc.kept -= 1
        if alloc.kept == 0:
            self.free(alloc)

    def empty(self, shape, dtype):
        dtype = np.dtype(dtype)
        n = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        return DeviceArray.contiguous(self.alloc(n), tuple(shape), dtype)

    def upload(self, host):
        host = np.asarray(host, order="C")
        d = DeviceArray.contiguous(self.alloc(host.nbytes), host.shape, host.dtype, host=host)
        self._upload_into(d, host)
        return d

    def _alloc(self, nbytes):
        raise NotImplementedError

    def _upload_into(self, dev, host):
        raise NotImplementedError

    def download(self, dev):
        raise NotImplementedError

    # -- kernels
    def prepare(self, launches):
        """{launch kernel name: handle} for a list of GpuLaunch (compiled together)."""
        raise NotImplementedError

    def launch(self, handle, launch, values, grid):
        raise NotImplementedError

    def source(self, launches, level):
        """Source text of launches at a level ("cuda", "ptx")."""
        from backends.cuda import compile as cc
        from backends.cuda.render import render_module
        text = render_module([la.kernel for la in launches], {la.kernel.name: la for la in launches})
        if level == "cuda":
            return text
        if level == "ptx":
            ptx = cc.compile_ptx(text, getattr(self, "arch", cc.DEFAULT_ARCH))
            return "\n".join(cc.ptx_entry(ptx, la.kernel.name) for la in launches)
        raise KilnError(f"source level must be ir, loops, lowered, cuda or ptx; got {level!r}")


class DeviceValue:
    """A shared variable's value left on the device by a call (the hook
    ``CompiledGraph.keeps_device_values``): engine.function stores it in the SharedVariable as
    it is, the next call on this executor uses ``dev`` in place, and reading the variable
    (``get_value``, ``.value``, another backend) calls ``to_host()``, which downloads once.
    It holds its allocation until it is dropped (a later update or set_value replaces it)."""

    __slots__ = ("dev", "executor", "_host", "__weakref__")

    def __init__(self, dev, executor):
        self.dev, self.executor, self._host = dev, executor, None
        executor.hold(dev.alloc)
        weakref.finalize(self, executor.unhold, dev.alloc)

    shape = property(lambda self: self.dev.shape)
    dtype = property(lambda self: self.dev.dtype)
    ndim = property(lambda self: self.dev.ndim)
    size = property(lambda self: self.dev.size)

    def to_host(self):
        if self._host is None:
            self._host = self.executor.download(self.dev)
        return self._host

    def __array__(self, dtype=None, copy=None):
        a = self.to_host()
        return a if dtype is None else a.astype(dtype)

    def __repr__(self):
        return f"<DeviceValue {self.dtype}{list(self.shape)}>"


class SharedMirrors:
    """Device copies of shared values that live on the host (made with ``shared`` or
    ``set_value``): {SharedVariable: (host array, DeviceArray)}. A copy is reused while the
    variable still holds the host array it was made from, so a read-only shared value (a
    dataset sliced through givens) crosses the bus once."""

    def __init__(self, executor):
        self.ex = executor
        self.table = weakref.WeakKeyDictionary()

    def get(self, var, host):
        entry = self.table.get(var)
        if entry is not None and entry[0] is host:
            return entry[1]
        return None

    def put(self, var, host, dev):
        self.ex.hold(dev.alloc)
        self.drop(var)
        self.table[var] = (host, dev)

    def drop(self, var):
        old = self.table.pop(var, None)
        if old is not None:
            self.ex.unhold(old[1].alloc)


# ----------------------------------------------------------------------------- kernels

class GpuCompiledKernel:
    """One generated kernel of a compiled function: ``name``, ``nodes``, ``launches``
    (engine.gpu.GpuLaunch), ``source(level)``: "lowered" (the IR the lowering
    made), "ir" (the GPU-scheduled listing), "loops" (its C-like loop nest), "cuda", "ptx"."""

    def __init__(self, name, gpu, nodes, executor):
        self.name = name
        self.gpu = gpu
        self.raw = gpu.raw
        self.launches = gpu.launches
        self.nodes = nodes
        self.executor = executor
        self.handles = {}
        self._sources = {}

    @property
    def kernel(self):
        return self.launches[0].kernel

    def source(self, level="ir"):
        if level == "lowered":
            return ir.listing(self.raw)
        if level == "ir":
            return "\n".join(ir.listing(la.kernel) for la in self.launches)
        if level == "loops":
            return "\n".join(ir.loop_nest(la.kernel) for la in self.launches)
        if level not in self._sources:
            self._sources[level] = self.executor.source(self.launches, level)
        return self._sources[level]

    def __repr__(self):
        return f"<GpuCompiledKernel {self.name} ({len(self.launches)} launch" \
               f"{'es' if len(self.launches) != 1 else ''})>"


class _Plan:
    __slots__ = ("node", "in_slots", "out_slots", "lowered", "steps", "host", "temp_specs",
                 "host_outputs", "dtypes")

    def __init__(self, node, in_slots, out_slots):
        self.node, self.in_slots, self.out_slots = node, in_slots, out_slots
        self.lowered = None
        self.steps = []
        self.host = False
        self.temp_specs = []
        self.host_outputs = {}
        self.dtypes = [np.dtype(o.dtype) for o in node.outputs]


def _wrap(node, error):
    return KilnShapeError(f"{describe_node(node)}: {error}")


def _strict():
    return os.environ.get("KILN_CUDA_STRICT", "0") == "1"


# ----------------------------------------------------------------------------- one call

class _Call:
    """Where each value of one call lives, and the allocations it made."""

    def __init__(self, ex):
        self.ex = ex
        self.uploads = {}
        self.owned = []

    def device(self, v):
        if isinstance(v, DeviceArray):
            return v
        v = np.asarray(v)
        d = self.uploads.get(id(v))
        if d is None or d.host is not v:
            d = self.ex.upload(v)
            d.host = v
            self.uploads[id(v)] = d
            self.owned.append(d.alloc)
        return d

    def host(self, v):
        if not isinstance(v, DeviceArray):
            return v
        if v.host is None:
            v.host = self.ex.download(v)
        return v.host

    def proxies(self, vals):
        return [v if not isinstance(v, DeviceArray) else
                (v.host if v.host is not None else HostProxy(v, self.host)) for v in vals]

    def view_inputs(self, vals, registry):
        out = []
        for v in vals:
            if not isinstance(v, DeviceArray):
                out.append(v)
            elif v.host is not None or v.size <= SMALL:
                out.append(self.host(v))
            else:
                out.append(standin(v, registry))
        return out

    def empty(self, shape, dtype):
        d = self.ex.empty(shape, dtype)
        self.owned.append(d.alloc)
        return d

    def release(self):
        for a in self.owned:
            self.ex.free(a)
        self.owned = []


def _apply_view(fn, base, vals, call):
    """fn(base, inputs) for an ArgView on a device array base."""
    registry = {}
    inputs = call.view_inputs(vals, registry)
    r = fn(standin(base, registry) if isinstance(base, DeviceArray) else base, inputs)
    d = from_standin(r, registry)
    if d is None:
        raise LoweringError(f"an argument view did not return a view of its array: {fn}")
    return d


def _scalar(value, dtype):
    if ir.is_float(dtype):
        return np.dtype(dtype).type(float(np.asarray(value)))
    if dtype == "bool":
        return np.bool_(bool(np.asarray(value)))
    v = int(np.asarray(value))
    info = np.iinfo(dtype)
    if not info.min <= v <= info.max:
        v &= (1 << info.bits) - 1
        if v > info.max:
            v -= 1 << info.bits
    return np.dtype(dtype).type(v)


class GpuCompiledGraph(PlannedGraph):
    #: updated shared values stay on the device (DeviceValue); see backends.CompiledGraph
    keeps_device_values = True

    def __init__(self, backend, fgraph, plans, n_slots, init_values, input_slots, output_slots,
                 kernels, host_nodes, guard=False):
        super().__init__(fgraph, plans, n_slots, init_values, input_slots, output_slots, kernels,
                         host_nodes)
        self.backend = backend
        self.ex = backend.executor
        self.guard = guard
        self.n_user = fgraph.n_user_inputs
        self.shared_vars = list(fgraph.inputs[self.n_user:])
        self.updated = list(fgraph.updated)
        self.n_out = fgraph.n_user_outputs
        self.stats = {"calls": 0, "launches": 0, "uploads": 0, "downloads": 0}

    def run(self, arrays):
        self.shape_check.check(arrays)
        call = _Call(self.ex)
        vals = list(self.init_values)
        for slot, a in zip(self.input_slots, arrays):
            if isinstance(a, DeviceValue) and a.executor is self.ex:
                a = a.dev  # left on this device by an earlier call
            vals[slot] = a
        mirrors = self.ex.mirrors
        shared_in = arrays[self.n_user:]
        for sv, host, slot in zip(self.shared_vars, shared_in, self.input_slots[self.n_user:]):
            d = mirrors.get(sv, host)
            if d is not None:
                vals[slot] = d
        self.stats["calls"] += 1
        try:
            for plan in self.plans:
                self._node(plan, vals, call)
            results = []
            for k, s in enumerate(self.output_slots):
                v = vals[s]
                if isinstance(v, DeviceArray):
                    if k >= self.n_out and self.keeps_device_values:
                        v = DeviceValue(v, self.ex)  # an update: stays on the device
                    else:
                        v = self.ex.download(v)
                        self.stats["downloads"] += 1
                results.append(v)
            self.stats["uploads"] += len(call.uploads)
            # host shared values uploaded by this call stay mirrored while unchanged
            updated = {id(sv) for sv in self.updated}
            for d in call.uploads.values():
                for sv, host in zip(self.shared_vars, shared_in):
                    if d.host is host and id(sv) not in updated:
                        mirrors.put(sv, host, d)
            return results
        finally:
            call.release()

    def _node(self, plan, vals, call):
        ins = [vals[s] for s in plan.in_slots]
        node = plan.node
        if plan.host:
            from backends.numpy.table import run_node
            outs = run_node(node, [call.host(x) for x in ins])
            for s, v in zip(plan.out_slots, outs):
                vals[s] = v
            if self.guard:
                self._check(plan, outs, call)
            return
        low = plan.lowered
        if low.view is not None:
            registry = {}
            try:
                r = low.view(call.view_inputs(ins, registry))
            except KilnError:
                raise
            except (ValueError, IndexError, TypeError) as e:
                raise _wrap(node, e) from e
            if r is not None:
                views = r if isinstance(r, tuple) else (r,)
                for s, v in zip(plan.out_slots, views):
                    d = from_standin(v, registry) if isinstance(v, np.ndarray) else None
                    vals[s] = d if d is not None else np.asarray(v)
                return
        px = call.proxies(ins)
        try:
            shapes = low.output_shapes(px)
            temps = [call.empty(tuple(fn(px)), dt) for dt, fn in plan.temp_specs]
            outs = []
            for k, (shape, dt) in enumerate(zip(shapes, plan.dtypes)):
                if k in plan.host_outputs:
                    outs.append(np.asarray(plan.host_outputs[k](px)))
                else:
                    outs.append(call.empty(tuple(int(d) for d in shape), dt))
        except KilnError:
            raise
        except (ValueError, IndexError, TypeError, OverflowError) as e:
            raise _wrap(node, e) from e
        for kernel, args in plan.steps:
            self._launch(kernel, args, ins, outs, temps, px, call)
        for s, v in zip(plan.out_slots, outs):
            vals[s] = v
        if self.guard:
            self._check(plan, outs, call)

    def _check(self, plan, outs, call):
        """mode="guard": NaN/Inf in a float result names its node (downloads the result)."""
        from backends.numpy import _check_finite
        for out, v in zip(plan.node.outputs, outs):
            if np.dtype(out.dtype).kind == "f":
                _check_finite(plan.node, out, np.asarray(call.host(v)))

    def _resolve(self, a, ins, outs, temps, call):
        from engine.lowering.common import ArgView
        if isinstance(a, In):
            return call.device(ins[a.index])
        if isinstance(a, Out):
            return call.device(outs[a.index])
        if isinstance(a, Tmp):
            return temps[a.index]
        if isinstance(a, ArgView):
            base = self._resolve(a.arg, ins, outs, temps, call)
            return _apply_view(a.fn, base, ins, call)
        raise LoweringError(f"unknown step argument {a!r}")

    def _launch(self, kernel, args, ins, outs, temps, px, call):
        params = kernel.raw.params
        values = []
        for p, a in zip(params, args):
            if isinstance(p, ir.BufferParam):
                d = self._resolve(a, ins, outs, temps, call)
                if d.dtype != np.dtype(p.dtype) or d.ndim != p.ndim:
                    raise LoweringError(f"kernel {kernel.name}: argument {p.name} expects a "
                                        f"{p.ndim}-d {p.dtype} array, got {d!r}")
                values.append(d)
            else:
                if not isinstance(a, HostScalar):
                    raise LoweringError(f"kernel {kernel.name}: scalar parameter {p.name} "
                                        f"needs a HostScalar, given {a!r}")
                values.append(_scalar(a.fn(px), p.dtype))
        scratch = {}  # per call, shared by the launches of this kernel (GpuLaunch.scratch)
        for la in kernel.launches:
            vals = values
            if la.scratch:
                for p, n in la.scratch:
                    if p.name not in scratch:
                        scratch[p.name] = call.empty((n,), p.dtype)
                vals = values + [scratch[p.name] for p, _ in la.scratch]
            grid = self._grid(la, vals)
            self.ex.launch(kernel.handles[la.kernel.name], la, vals, grid)
            self.stats["launches"] += 1

    def _grid(self, la, values):
        from backends.cuda.emulator import host_eval
        params = la.kernel.params
        meta = [(v.shape, v.elem_strides()) if isinstance(v, DeviceArray) else v for v in values]
        out = []
        for g in la.grid:
            if g is None:
                out.append(self.ex.default_grid)
            elif isinstance(g, ir.Const):
                out.append(max(1, int(g.value)))
            else:
                out.append(max(1, host_eval(g, params, meta)))
        return tuple(out)


# ----------------------------------------------------------------------------- the backend

class GpuBackend(Backend):
    """Shared by "cuda" and "cuda-emulator"; subclasses set ``make_executor``."""

    name = "gpu"
    fuses = True

    def __init__(self):
        self.executor = self.make_executor()
        t = self.executor.target
        self.capabilities = Capabilities(threads=t.block_threads,
                                         shared_memory_bytes=t.shared_memory_bytes,
                                         max_threads_per_block=t.max_threads_per_block,
                                         extra={"warp_size": t.warp_size})

    def make_executor(self):
        raise NotImplementedError

    def lower_node(self, node):
        from backends.cuda.rules import gpu_lowering
        from engine.lowering.nn import direct_formulation
        low = gpu_lowering(node, self.executor.target)
        if low is not None:
            return low
        with direct_formulation():   # the CPU's GEMM formulations (per-thread packed panels) are not for GPUs
            return lower(node)

    def compile(self, fgraph, options):
        target = self.executor.target
        order = toposort(fgraph.outputs)
        slot_of = Slots()
        init_values = slot_of.init_values
        input_slots = [slot_of(v) for v in fgraph.inputs]
        plans, by_name, host_nodes = [], {}, []
        for node in order:
            plan = _Plan(node, [slot_of(i) for i in node.inputs], [slot_of(o) for o in node.outputs])
            plans.append(plan)
            from backends.cuda.rules import has_gpu_lowering
            if not (has_gpu_lowering(node) or has_lowering(node)):
                if _strict():
                    raise LoweringError(f"{self.name} backend: no kernel lowering for "
                                        f"{describe_node(node)}")
                plan.host = True
                host_nodes.append(node)
                debug_log("kernels", f"no lowering for {describe_node(node)}: runs on the host")
                continue
            low = self.lower_node(node)
            plan.lowered = low
            plan.temp_specs = list(low.temps)
            plan.host_outputs = dict(getattr(low, "host_outputs", {}) or {})
            renames = {}
            for k in low.kernels:
                name, n = k.name, 1
                while name in by_name and by_name[name][0] != k:
                    n += 1
                    name = f"{k.name}_{n}"
                if name not in by_name:
                    raw = k if name == k.name else ir.Kernel(name, k.params, k.body)
                    by_name[name] = (k, raw, [node])
                elif not any(m is node for m in by_name[name][2]):
                    by_name[name][2].append(node)
                renames[k.name] = name
            plan.steps = [(renames[s.kernel], s.args) for s in low.steps]
        output_slots = [slot_of(o) for o in fgraph.outputs]
        kernels = {}
        for name, (_, raw, nodes) in by_name.items():
            gk = gpu_schedule(raw, target)
            kernels[name] = GpuCompiledKernel(name, gk, nodes, self.executor)
            if debug_enabled("kernels"):
                debug_log("kernels", f"{name} ({self.name}: {len(gk.launches)} launch(es))\n" +
                          "\n".join(f"block {la.block}\n{ir.loop_nest(la.kernel)}"
                                     for la in gk.launches))
        launches = [la for k in kernels.values() for la in k.launches]
        handles = self.executor.prepare(launches) if launches else {}
        for k in kernels.values():
            k.handles = {la.kernel.name: handles[la.kernel.name] for la in k.launches}
        for plan in plans:
            plan.steps = [(kernels[name], args) for name, args in plan.steps]
        return GpuCompiledGraph(self, fgraph, plans, len(init_values), init_values, input_slots,
                                output_slots, list(kernels.values()), host_nodes,
                                guard=options.get("mode") == "guard")


class EmulatorBackend(GpuBackend):
    name = "cuda-emulator"

    def make_executor(self):
        from backends.cuda.emulator import EmulatorExecutor
        return EmulatorExecutor()


class CudaBackend(GpuBackend):
    name = "cuda"

    def make_executor(self):
        from backends.cuda.runtime import CudaExecutor
        return CudaExecutor()
