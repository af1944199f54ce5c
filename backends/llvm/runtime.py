"""LLVM CPU runtime: compile kernel IR to machine code (cached on disk), load it, launch it.

    prog = compile_kernels([k1, k2])          # one MCJIT engine for the list; opt=3 default
    prog["saxpy"](x, y, np.float32(2))        # arrays/scalars in the kernel's parameter order
    launch = prog["saxpy"].bind(x, y, 2.0)    # pack pointers/shapes/strides once ...
    launch()                                  # ... then a launch is one ctypes call
    prog["saxpy"].source("asm")               # "ir" (listing), "loops", "llvm", "asm"

Compiling: each kernel is verified, then looked up in the kernel-level disk cache
(engine/cache.py, namespace "llvm-kernels") under ``kernel_key``: sha256 of the kernel's
listing, the target triple, CPU name and features, llvmlite, Kiln and renderer versions and
the opt level. A miss renders it (render.py), optimizes it (new pass manager, O3 default;
``opt=`` or ``KILN_LLVM_OPT=0..3``) and emits an object file, which is stored. All objects are
then loaded into one MCJIT engine (its own TargetMachine). ``source("llvm"/"asm")`` re-renders
lazily (rendering is deterministic). ``STATS`` counts compiles and cache hits.

Launching: arguments are checked (dtype, ndim, alignment, writability of the buffers the
kernel stores to) and packed into the ABI's slot array (see
render.py): data pointer, shape, strides in elements, with the stride of every size-1 dim
set to 0 so it broadcasts. Calls release the GIL.

Threads: parallel loops call back into ``kiln_parallel_for``, which splits the trip range
into ``num_threads()`` contiguous row blocks (``KILN_NUM_THREADS``, default os.cpu_count()),
runs block 0 on the calling thread and the others on a persistent pool.

Debug: ``KILN_DEBUG=kernels,llvm,asm,cache`` prints each kernel's listing, optimized LLVM IR,
assembly, and cache hits/misses as kernels are compiled.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import struct
import sys
import threading
import time
import traceback
from concurrent.futures import ThreadPoolExecutor

import llvmlite
import llvmlite.binding as llvm
import numpy as np

from backends.llvm import render
from engine import kernel_ir as kir
from engine.cache import cache_key, get_cache, kiln_version
from engine.debug import debug_enabled, debug_log
from engine.errors import KilnTypeError, KilnValueError

ABI_VERSION = "1"
CACHE_NAMESPACE = "llvm-kernels"
STATS = {"compiled": 0, "cache_hits": 0, "compile_s": 0.0, "load_s": 0.0}
PARALLEL_STATS = {"regions": 0, "chunks": 0, "last_threads": set()}

_LOCK = threading.RLock()
_STATE = {}


# ----------------------------------------------------------------------------- target

def _init():
    if "target" in _STATE:
        return
    with _LOCK:
        if "target" in _STATE:
            return
        llvm.initialize_native_target()
        llvm.initialize_native_asmprinter()
        llvm.add_symbol(render.PARALLEL_FOR, ctypes.cast(_PFOR_CALLBACK, ctypes.c_void_p).value)
        triple = llvm.get_process_triple()
        _STATE["triple"] = triple
        _STATE["cpu"] = llvm.get_host_cpu_name()
        _STATE["features"] = llvm.get_host_cpu_features().flatten()
        _STATE["target"] = llvm.Target.from_triple(triple)
        _STATE["tms"] = {}


def target_info():
    """{"triple", "cpu", "features"} of the host, as used for code generation and cache keys."""
    _init()
    return {k: _STATE[k] for k in ("triple", "cpu", "features")}


def new_target_machine(opt=3):
    _init()
    return _STATE["target"].create_target_machine(
        cpu=_STATE["cpu"], features=_STATE["features"], opt=min(opt, 3), codemodel="jitdefault",
        jit=True)


def _emit_tm(opt):
    """The (shared, never engine-owned) TargetMachine emitting objects at opt."""
    tms = _STATE["tms"]
    if opt not in tms:
        tms[opt] = new_target_machine(opt)
    return tms[opt]


def default_opt():
    v = os.environ.get("KILN_LLVM_OPT", "3").strip().upper().lstrip("O")
    if v not in ("0", "1", "2", "3"):
        raise KilnValueError(f"KILN_LLVM_OPT must be 0..3, got {os.environ['KILN_LLVM_OPT']!r}")
    return int(v)


def renderer_hash():
    """sha256 of the renderer's sources: an edited renderer never serves stale code."""
    if "renderer_hash" not in _STATE:
        h = hashlib.sha256()
        here = os.path.dirname(os.path.abspath(render.__file__))
        for name in ("render.py", "mathops.py"):
            with open(os.path.join(here, name), "rb") as f:
                h.update(f.read())
        _STATE["renderer_hash"] = h.hexdigest()
    return _STATE["renderer_hash"]


def kernel_key(kernel, opt, text=None):
    t = target_info()
    return cache_key("kiln-llvm-kernel", ABI_VERSION, text or kir.listing(kernel), t["triple"],
                     t["cpu"], t["features"], llvmlite.__version__, kiln_version(),
                     renderer_hash(), f"O{opt}")


def build_module(kernel, opt):
    """Render, parse, verify and optimize a kernel: an llvm.ModuleRef."""
    _init()
    tm = _emit_tm(opt)
    m = render.render_module([kernel], name=kernel.name)
    m.triple = _STATE["triple"]
    m.data_layout = str(tm.target_data)
    ref = llvm.parse_assembly(str(m))
    ref.verify()
    if opt > 0:
        pto = llvm.create_pipeline_tuning_options(speed_level=opt, size_level=0)
        pto.loop_vectorization = opt >= 2
        pto.slp_vectorization = opt >= 2
        pb = llvm.create_pass_builder(tm, pto)
        pb.getModulePassManager().run(ref, pb)
    return ref


# ----------------------------------------------------------------------------- compile

def compile_kernels(kernels, opt=None, cache=True):
    """Compile kernels into one Program (one MCJIT engine); see the module docstring."""
    kernels = list(kernels)
    opt = default_opt() if opt is None else int(opt)
    names = [k.name for k in kernels]
    if len(set(names)) != len(names):
        raise KilnValueError(f"kernel names must be unique within a compile, got {names}")
    for k in kernels:
        kir.verify(k)
    with _LOCK:
        _init()
        disk = get_cache(CACHE_NAMESPACE) if cache else None
        objects, hits = [], []
        for k in kernels:
            text = kir.listing(k)
            if debug_enabled("kernels"):
                debug_log("kernels", f"{k.name} (O{opt})\n{text}{kir.loop_nest(k)}")
            key = kernel_key(k, opt, text)
            entry = disk.get(key) if disk is not None else None
            if entry is not None:
                STATS["cache_hits"] += 1
                debug_log("cache", f"hit {k.name} {key[:16]}")
                obj = entry[0]
            else:
                t0 = time.perf_counter()
                obj = _emit_tm(opt).emit_object(build_module(k, opt))
                STATS["compiled"] += 1
                STATS["compile_s"] += time.perf_counter() - t0
                stored = disk.put(key, obj, {"kernel": k.name, "opt": opt}) if disk else False
                debug_log("cache", f"miss {k.name} {key[:16]}" + (", stored" if stored else ""))
            if debug_enabled("llvm") or debug_enabled("asm"):
                ref = build_module(k, opt)  # fresh: emitting code rewrites the module
                debug_log("llvm", f"{k.name}\n{ref}")
                if debug_enabled("asm"):
                    debug_log("asm", f"{k.name}\n{_emit_tm(opt).emit_assembly(ref)}")
            objects.append(obj)
            hits.append(entry is not None)
        return Program(kernels, objects, hits, opt)


class Program:
    """Compiled kernels sharing one MCJIT engine: ``prog[name]``, ``prog.kernels``."""

    def __init__(self, kernels, objects, hits, opt):
        t0 = time.perf_counter()
        self.opt = opt
        empty = llvm.parse_assembly("")
        empty.triple = _STATE["triple"]
        self.engine = llvm.create_mcjit_compiler(empty, new_target_machine(opt))
        for obj in objects:
            self.engine.add_object_file(llvm.ObjectFileRef.from_data(obj))
        self.engine.finalize_object()
        self.kernels = {}
        for k, hit in zip(kernels, hits):
            addr = self.engine.get_function_address(k.name)
            if not addr:
                raise RuntimeError(f"kernel {k.name!r} not found in its object code")
            self.kernels[k.name] = CompiledKernel(self, k, addr, opt, hit)
        STATS["load_s"] += time.perf_counter() - t0

    def __getitem__(self, name):
        return self.kernels[name]

    def __iter__(self):
        return iter(self.kernels.values())

    def __len__(self):
        return len(self.kernels)


# ----------------------------------------------------------------------------- launch

_SCALAR_FMT = {"bool": "?7x", "int8": "b7x", "uint8": "B7x", "int16": "h6x", "uint16": "H6x",
               "int32": "i4x", "uint32": "I4x", "int64": "q", "uint64": "Q", "float32": "f4x",
               "float64": "d"}
_ENTRY_T = ctypes.CFUNCTYPE(None, ctypes.c_char_p)


class CompiledKernel:
    """A loaded kernel: call it with numpy arrays and scalars in parameter order."""

    def __init__(self, program, kernel, address, opt, cache_hit):
        self.program = program  # keeps the engine (and the code) alive
        self.kernel = kernel
        self.name = kernel.name
        self.address = address
        self.opt = opt
        self.cache_hit = cache_hit
        self.cfunc = _ENTRY_T(address)
        written = {n.buf.name for n in kir.walk(kernel) if isinstance(n, kir.Store)}
        fmt, plan = "<", []
        for p in kernel.params:
            if isinstance(p, kir.BufferParam):
                fmt += "Q" + "q" * (2 * p.ndim)
                dt = np.dtype(p.dtype)
                plan.append((p, dt, p.ndim, dt.itemsize, p.name in written))
            else:
                fmt += _SCALAR_FMT[p.dtype]
                plan.append((p, None, None, _scalar_converter(p.dtype), False))
        self._struct = struct.Struct(fmt)
        self._plan = plan
        self._sources = {}

    def pack(self, *args):
        """The packed argument slots (bytes) for args; raises on a bad argument."""
        plan = self._plan
        if len(args) != len(plan):
            raise KilnTypeError(f"kernel {self.name!r} takes {len(plan)} arguments "
                                f"({', '.join(p.name for p, *_ in plan)}), got {len(args)}")
        vals = []
        for a, (p, dt, nd, extra, written) in zip(args, plan):
            if dt is None:
                vals.append(extra(a, p, self.name))
                continue
            if not isinstance(a, np.ndarray) or a.dtype != dt or a.ndim != nd:
                raise KilnTypeError(
                    f"kernel {self.name!r}, argument {p.name!r}: expected a {nd}-d {dt} numpy "
                    f"array, got {_describe_arg(a)}")
            flags = a.flags
            if not flags.aligned or (written and not flags.writeable):
                what = "misaligned" if not flags.aligned else "read-only (the kernel writes it)"
                raise KilnValueError(f"kernel {self.name!r}, argument {p.name!r}: the array is "
                                     f"{what}")
            shape = a.shape
            vals.append(a.ctypes.data)
            vals += shape
            vals += [0 if n == 1 else s // extra for n, s in zip(shape, a.strides)]
        return self._struct.pack(*vals)

    def __call__(self, *args):
        self.cfunc(self.pack(*args))

    def bind(self, *args):
        """A zero-argument launcher with the arguments packed once (arrays kept alive)."""
        packed, cfunc = self.pack(*args), self.cfunc

        def launch():
            cfunc(packed)
        launch.args = args
        return launch

    def source(self, level="ir"):
        """The kernel at a level: "ir" (listing), "loops" (C-like), "llvm", "asm"."""
        if level == "ir":
            return kir.listing(self.kernel)
        if level == "loops":
            return kir.loop_nest(self.kernel)
        if level not in ("llvm", "asm"):
            raise KilnValueError(f"source level must be ir, loops, llvm or asm; got {level!r}")
        if level not in self._sources:
            with _LOCK:
                ref = build_module(self.kernel, self.opt)
                self._sources["llvm"] = str(ref)
                self._sources["asm"] = _emit_tm(self.opt).emit_assembly(ref)
        return self._sources[level]

    def __repr__(self):
        return f"<CompiledKernel {self.name} O{self.opt}{' (cached)' if self.cache_hit else ''}>"


def _describe_arg(a):
    if isinstance(a, np.ndarray):
        return f"a {a.ndim}-d {a.dtype} array"
    return f"{type(a).__name__} {a!r}"[:80]


def _scalar_converter(dtype):
    if kir.is_float(dtype):
        conv = float
    elif dtype == "bool":
        conv = bool
    else:
        info = np.iinfo(dtype)

        def conv(v):
            if isinstance(v, (float, np.floating)):
                raise TypeError("a float")
            v = int(v)
            if not info.min <= v <= info.max:
                raise OverflowError(f"{v} does not fit {dtype}")
            return v

    def convert(v, p, kname):
        if isinstance(v, np.ndarray) and v.ndim:
            raise KilnTypeError(f"kernel {kname!r}, argument {p.name!r}: expected a {dtype} "
                                f"scalar, got an array of shape {v.shape}")
        try:
            return conv(v)
        except (TypeError, ValueError, OverflowError) as e:
            raise KilnTypeError(f"kernel {kname!r}, argument {p.name!r}: expected a {dtype} "
                                f"scalar, got {_describe_arg(v)} ({e})") from None
    return convert


# ----------------------------------------------------------------------------- threads

_BODY_T = ctypes.CFUNCTYPE(None, ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p)
_PFOR_T = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p)
_BODIES = {}
_POOL = {}


def num_threads():
    """Threads for parallel loops: set_num_threads(), else $KILN_NUM_THREADS, else cpu_count."""
    n = _POOL.get("n")
    if n is None:
        env = os.environ.get("KILN_NUM_THREADS", "").strip()
        n = int(env) if env else (os.cpu_count() or 1)
        _POOL["n"] = n = max(1, n)
    return n


def set_num_threads(n):
    with _LOCK:
        old = _POOL.pop("pool", None)
        _POOL["n"] = max(1, int(n))
    if old is not None:
        old[0].shutdown(wait=False)


def _pool(workers):
    entry = _POOL.get("pool")
    if entry is None or entry[1] < workers:
        with _LOCK:
            entry = _POOL.get("pool")
            if entry is None or entry[1] < workers:
                entry = _POOL["pool"] = (ThreadPoolExecutor(workers, thread_name_prefix="kiln"),
                                         workers)
    return entry[0]


def _run_chunk(body, a, b, ctx, seen):
    seen.add(threading.get_ident())
    body(a, b, ctx)


def _parallel_for(fn, start, end, ctx):
    try:
        body = _BODIES.get(fn)
        if body is None:
            body = _BODIES[fn] = _BODY_T(fn)
        n = end - start
        nt = min(num_threads(), n)
        seen = set()
        PARALLEL_STATS["regions"] += 1
        PARALLEL_STATS["last_threads"] = seen
        if nt <= 1:
            PARALLEL_STATS["chunks"] += 1
            _run_chunk(body, start, end, ctx, seen)
            return
        bounds = [start + n * k // nt for k in range(nt + 1)]
        PARALLEL_STATS["chunks"] += nt
        pool = _pool(nt - 1)
        futures = [pool.submit(_run_chunk, body, bounds[k], bounds[k + 1], ctx, seen)
                   for k in range(1, nt)]
        _run_chunk(body, bounds[0], bounds[1], ctx, seen)
        for f in futures:
            f.result()
    except BaseException:  # cannot propagate through C; never leave a worker half-done
        traceback.print_exc(file=sys.stderr)


_PFOR_CALLBACK = _PFOR_T(_parallel_for)
