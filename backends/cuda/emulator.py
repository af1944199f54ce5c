"""The CUDA emulator: GPU-scheduled kernel IR (engine/gpu/) run on the CPU with numpy.

    prog = EmulatedKernel(launch)                         # a GpuLaunch: kernel, block, grid
    prog.run(args, grid=(g, 1, 1))                        # args: one per kernel parameter

Execution model (the CUDA one, made checkable)
----------------------------------------------
All threads of a batch of blocks run in lockstep: every value is a numpy scalar (the same in
every thread) or a vector with one lane per thread; control flow that differs between threads
runs under a lane mask (``If`` runs both branches under complementary masks, a loop runs
until no active lane continues). Loop kinds follow engine/gpu: ``block_*`` loops are
grid-stride, ``thread_*`` loops block-stride. The grid is run in batches of whole blocks
(``LANES`` threads at most per batch): the grid loop over blocks.

Memory: a ``BufferParam`` argument is a flat numpy view of its (emulated device) allocation
with an element offset, runtime shape and strides in elements (0 for size-1 dims, as on the
GPU); ``Alloc`` scope "local" gives every thread its own array, scope "shared" every block
one (filled with NaN / a pattern: reading it before writing shows), ``Barrier`` ends a
*phase* of the block that executes it; it must be reached by all threads of a block or none
(else ``EmulatorError``: that deadlocks or misbehaves on a GPU).

Checks (``EmulatorError`` names kernel, buffer, index and threads):
* out-of-bounds accesses: every index within its dim (a size-1 dim may be indexed by
  anything: it has stride 0) and inside the allocation;
* races (``check_races=True``, the default; ``KILN_EMULATOR_RACES=0`` turns it off): within
  a launch, an element of a buffer the kernel writes may not be written by one thread and
  read or written by another unless both are in the same block and a barrier of that block
  lies between; a read by one thread and a write by another in the same phase of a block,
  or in different blocks, is also a race. Shared memory is checked the same way per block.
  Lockstep execution alone would hide a missing barrier; the checker reports it.

Semantics of every op are kernel_ir's (= numpy's): integer ops wrap, integer division by
zero gives 0, ``min``/``max`` propagate NaN, shifts by >= the bit width give 0 / the sign
fill, ``mulhi`` is exact, ``sigmoid`` is the stable form of the renderers, ``fma`` rounds once
in float32 (computed in float64) and twice in float64.
"""

from __future__ import annotations

import os

import numpy as np
from numpy.lib.stride_tricks import as_strided

from backends.cuda.backend import GpuExecutor
from backends.cuda.device import DeviceArray
from engine import kernel_ir as ir
from engine.errors import KilnError

#: most threads run in lockstep at once (a batch of whole blocks)
LANES = 1 << 16
_AXES = {"x": 0, "y": 1, "z": 2}


class EmulatorError(KilnError, RuntimeError):
    """A kernel misbehaved in the emulator: out-of-bounds access, race, divergent barrier."""


def races_enabled():
    return os.environ.get("KILN_EMULATOR_RACES", "1") != "0"


_NDARRAY = np.ndarray
_MIN, _MAX = np.minimum.reduce, np.maximum.reduce
_TYPES = {}


def _np(dtype):
    t = _TYPES.get(dtype)
    if t is None:
        t = _TYPES[dtype] = np.dtype(dtype).type
    return t


def _coerce(v, dtype):
    t = _np(dtype)
    if type(v) is _NDARRAY:
        if v.ndim == 0:
            return t(v)
        return v if v.dtype.type is t else v.astype(dtype)
    return v if type(v) is t else t(v)


# ----------------------------------------------------------------------------- ops

def _div(a, b, dt):
    if ir.is_float(dt):
        return np.true_divide(a, b)
    zero = b == 0
    b1 = np.where(zero, _np(dt)(1), b)
    q = np.floor_divide(a, b1)
    r = a - q * b1
    q = np.where((r != 0) & ((a < 0) != (b1 < 0)), q + _np(dt)(1), q)
    return np.where(zero, _np(dt)(0), q).astype(dt)


def _floordiv(a, b, dt):
    if ir.is_float(dt):
        return np.floor_divide(a, b)
    zero = b == 0
    b1 = np.where(zero, _np(dt)(1), b)
    return np.where(zero, _np(dt)(0), np.floor_divide(a, b1)).astype(dt)


def _mod(a, b, dt):
    if ir.is_float(dt):
        return np.remainder(a, b)
    zero = b == 0
    b1 = np.where(zero, _np(dt)(1), b)
    return np.where(zero, _np(dt)(0), np.remainder(a, b1)).astype(dt)


def _mulhi(a, b, dt):
    n = ir.bits(dt)
    if n < 64:
        wide = np.int64 if ir.is_signed(dt) else np.uint64
        p = np.asarray(a).astype(wide) * np.asarray(b).astype(wide)
        return (p >> wide(n)).astype(dt)
    ua, ub = np.asarray(a).astype(np.uint64), np.asarray(b).astype(np.uint64)
    m32 = np.uint64(0xFFFFFFFF)
    s32 = np.uint64(32)
    a0, a1, b0, b1 = ua & m32, ua >> s32, ub & m32, ub >> s32
    p00, p01, p10, p11 = a0 * b0, a0 * b1, a1 * b0, a1 * b1
    mid = (p00 >> s32) + (p01 & m32) + (p10 & m32)
    hi = p11 + (p01 >> s32) + (p10 >> s32) + (mid >> s32)
    if ir.is_signed(dt):
        hi = hi - np.where(np.asarray(a) < 0, ub, np.uint64(0)) \
            - np.where(np.asarray(b) < 0, ua, np.uint64(0))
    return hi.astype(dt)


def _shl(a, b, dt):
    n = ir.bits(dt)
    big = np.asarray(b).astype(np.uint64) >= np.uint64(n)
    s = np.where(big, _np(dt)(0), b).astype(dt)
    return np.where(big, _np(dt)(0), np.left_shift(a, s)).astype(dt)


def _shr(a, b, dt):
    n = ir.bits(dt)
    big = np.asarray(b).astype(np.uint64) >= np.uint64(n)
    if ir.is_signed(dt):
        return np.right_shift(a, np.where(big, _np(dt)(n - 1), b).astype(dt)).astype(dt)
    s = np.where(big, _np(dt)(0), b).astype(dt)
    return np.where(big, _np(dt)(0), np.right_shift(a, s)).astype(dt)


def _sigmoid(a, dt):
    t = _np(dt)
    e = np.exp(-np.abs(a))
    s = t(1) / (t(1) + e)
    return np.where(a >= t(0), s, e * s).astype(dt)


BINARY = {
    "add": lambda a, b, dt: np.add(a, b), "sub": lambda a, b, dt: np.subtract(a, b),
    "mul": lambda a, b, dt: np.multiply(a, b), "div": _div, "floordiv": _floordiv,
    "mod": _mod, "min": lambda a, b, dt: np.minimum(a, b),
    "max": lambda a, b, dt: np.maximum(a, b), "pow": lambda a, b, dt: np.power(a, b),
    "mulhi": _mulhi,
    "lt": lambda a, b, dt: np.less(a, b), "le": lambda a, b, dt: np.less_equal(a, b),
    "gt": lambda a, b, dt: np.greater(a, b), "ge": lambda a, b, dt: np.greater_equal(a, b),
    "eq": lambda a, b, dt: np.equal(a, b), "ne": lambda a, b, dt: np.not_equal(a, b),
    "and": lambda a, b, dt: np.bitwise_and(a, b), "or": lambda a, b, dt: np.bitwise_or(a, b),
    "xor": lambda a, b, dt: np.bitwise_xor(a, b), "shl": _shl, "shr": _shr,
}
UNARY = {
    "neg": lambda a, dt: np.negative(a), "abs": lambda a, dt: np.abs(a),
    "not": lambda a, dt: np.invert(a), "sigmoid": _sigmoid,
    **{op: (lambda f: lambda a, dt: f(a))(getattr(np, op)) for op in
       ("exp", "exp2", "expm1", "log", "log2", "log1p", "sqrt", "tanh", "floor", "ceil",
        "trunc", "rint", "sin", "cos")},
}
assert set(BINARY) == set(ir.BINARY_OPS) and set(UNARY) == set(ir.UNARY_OPS)


def _cast(v, src, dst):
    if src == dst:
        return v
    if dst == "bool":
        return np.not_equal(v, _np(src)(0))
    return np.asarray(v).astype(dst, casting="unsafe")


def _fma(a, b, c, dt):
    if dt == "float32":
        return (np.asarray(a, np.float64) * b + c).astype(np.float32)
    return a * b + c


# ----------------------------------------------------------------------------- race tracking

class _Tracker:
    """Who wrote / read each element of one tracked memory in this launch (see the module
    docstring). Lanes are global thread ids, blocks global block ids. Arrays of the
    accesses of one statement: e (elements), lane, block, phase (or scalars)."""

    def __init__(self, n, label):
        self.label = label
        self.w_lane = np.full(n, -1, np.int64)
        self.w_block = np.full(n, -1, np.int64)   # -2: several blocks
        self.w_phase = np.zeros(n, np.int64)
        self.r_lane = np.full(n, -1, np.int64)    # -2: several threads in r_phase
        self.r_block = np.full(n, -1, np.int64)   # -2: several blocks
        self.r_phase = np.full(n, -1, np.int64)

    def _fail(self, kind, kernel, e, lane, other, T):
        other = int(other)
        who = "another thread" if other < 0 else f"thread {other % T} of block {other // T}"
        raise EmulatorError(
            f"emulator, kernel {kernel!r}: {kind} on {self.label} element {int(e)}: thread "
            f"{int(lane) % T} of block {int(lane) // T} and {who} without a barrier between "
            "(a race on the GPU)")

    def read(self, e, lane, block, phase, kernel, T):
        wl, wb = self.w_lane[e], self.w_block[e]
        bad = (wb == -2) | ((wb >= 0) & (wb != block)) | \
            ((wl >= 0) & (wl != lane) & (self.w_phase[e] == phase))
        if bad.any():
            k = int(np.argmax(bad))
            self._fail("read after write", kernel, e[k], np.broadcast_to(lane, e.shape)[k],
                       wl[k], T)
        old_l = np.where(self.r_phase[e] == phase, self.r_lane[e], -1)
        old_b = self.r_block[e]
        self.r_lane[e] = lane
        self.r_block[e] = block
        multi_l = ((old_l != -1) & (old_l != lane)) | (self.r_lane[e] != lane)
        multi_b = ((old_b != -1) & (old_b != block)) | (self.r_block[e] != block)
        if multi_l.any():
            self.r_lane[e[multi_l]] = -2
        if multi_b.any():
            self.r_block[e[multi_b]] = -2
        self.r_phase[e] = phase

    def write(self, e, lane, block, phase, kernel, T):
        wl, wb = self.w_lane[e], self.w_block[e]
        rl, rb = self.r_lane[e], self.r_block[e]
        bad_w = (wb == -2) | ((wb >= 0) & (wb != block)) | \
            ((wl >= 0) & (wl != lane) & (self.w_phase[e] == phase))
        bad_r = (rb == -2) | ((rb >= 0) & (rb != block)) | \
            ((self.r_phase[e] == phase) & (rl != -1) & (rl != lane))
        bad = bad_w | bad_r
        if bad.any():
            k = int(np.argmax(bad))
            kind = "write after write" if bad_w[k] else "write after read"
            self._fail(kind, kernel, e[k], np.broadcast_to(lane, e.shape)[k],
                       wl[k] if bad_w[k] else rl[k], T)
        self.w_lane[e] = lane
        dup = self.w_lane[e] != lane
        if dup.any():
            k = int(np.argmax(dup))
            self._fail("write by two threads in one statement", kernel, e[k],
                       np.broadcast_to(lane, e.shape)[k], self.w_lane[e[k]], T)
        self.w_block[e] = block
        self.w_phase[e] = phase


# ----------------------------------------------------------------------------- state

class _Buf:
    """A buffer as the running batch sees it."""

    __slots__ = ("name", "kind", "flat", "base", "shape", "strides", "size", "tracker",
                 "dtype", "const_strides")

    def __init__(self, name, kind, flat, base, shape, strides, dtype, tracker=None):
        self.name, self.kind, self.flat, self.base = name, kind, flat, base
        self.shape, self.strides, self.dtype, self.tracker = shape, strides, dtype, tracker
        self.size = flat.shape[-1]


class _State:
    def __init__(self, kernel_name, nb, T, block_dims, grid, first_block):
        self.kernel = kernel_name
        self.nb, self.T = nb, T
        self.L = nb * T
        self.block_dims = block_dims
        self.grid = grid
        lane = np.arange(self.L, dtype=np.int64)
        self.lane_block = lane // T                  # block within the batch
        gblock = first_block + self.lane_block       # global block id
        self.gblock = gblock
        self.tid = lane % T
        self.gid = gblock * T + self.tid             # global thread id
        bx = block_dims[0]
        by = block_dims[1]
        self.thread_idx = (self.tid % bx, (self.tid // bx) % by, self.tid // (bx * by))
        gx, gy = grid[0], grid[1]
        self.block_idx = (gblock % gx, (gblock // gx) % gy, gblock // (gx * gy))
        self.bphase = np.zeros(nb, np.int64)
        self._mask, self._sel = None, None
        self.env = {}
        self.bufs = {}
        self.check = True

    def phase(self, idx=None):
        """The barrier phase of each lane's block (of the lanes idx); a scalar for one block."""
        if self.nb == 1:
            return self.bphase[0]
        return self.bphase[self.lane_block if idx is None else self.lane_block[idx]]

    def select(self, m):
        """Indices of the active lanes of mask m (cached for the last mask)."""
        if m is not self._mask:
            self._mask, self._sel = m, np.flatnonzero(m)
        return self._sel


def _active(mask, L):
    return np.ones(L, bool) if mask is None else mask


# ----------------------------------------------------------------------------- compiler

class _Compiler:
    """Kernel IR -> Python closures ``f(state, mask)`` over lane vectors."""

    def __init__(self, kernel):
        self.k = kernel

    # -- expressions
    def expr(self, e):
        return getattr(self, "e_" + type(e).__name__)(e)

    def e_Const(self, e):
        v = _np(e.dtype)(e.value)
        return lambda st, m: v

    def e_Var(self, e):
        name = e.name
        return lambda st, m: st.env[name]

    e_ScalarParam = e_Var

    def e_Dim(self, e):
        name, axis = e.buf.name, e.axis
        return lambda st, m: np.int64(st.bufs[name].shape[axis])

    def e_Stride(self, e):
        name, axis = e.buf.name, e.axis
        return lambda st, m: np.int64(st.bufs[name].strides[axis])

    def e_ThreadIdx(self, e):
        a = _AXES[e.axis]
        return lambda st, m: st.thread_idx[a]

    def e_BlockIdx(self, e):
        a = _AXES[e.axis]
        return lambda st, m: st.block_idx[a]

    def e_BlockDim(self, e):
        a = _AXES[e.axis]
        return lambda st, m: np.int64(st.block_dims[a])

    def e_BinOp(self, e):
        fa, fb, op, dt = self.expr(e.a), self.expr(e.b), BINARY[e.op], e.a.dtype
        out = e.dtype
        t = _np(out)

        def f(st, m):
            r = op(fa(st, m), fb(st, m), dt)
            return r if type(r) is t or type(r) is _NDARRAY and r.dtype.type is t and r.ndim \
                else _coerce(r, out)
        return f

    def e_UnOp(self, e):
        fa, op, dt = self.expr(e.a), UNARY[e.op], e.dtype
        t = _np(dt)

        def f(st, m):
            r = op(fa(st, m), dt)
            return r if type(r) is t or type(r) is _NDARRAY and r.dtype.type is t and r.ndim \
                else _coerce(r, dt)
        return f

    def e_FMA(self, e):
        fa, fb, fc, dt = self.expr(e.a), self.expr(e.b), self.expr(e.c), e.dtype
        return lambda st, m: _coerce(_fma(fa(st, m), fb(st, m), fc(st, m), dt), dt)

    def e_Cast(self, e):
        fv, src, dst = self.expr(e.value), e.value.dtype, e.dtype
        return lambda st, m: _coerce(_cast(fv(st, m), src, dst), dst)

    def e_Select(self, e):
        fc, fa, fb, dt = self.expr(e.cond), self.expr(e.a), self.expr(e.b), e.dtype

        def f(st, m):
            c = fc(st, m)
            if np.ndim(c) == 0:
                return fa(st, m) if c else fb(st, m)
            return np.where(c, fa(st, m), fb(st, m)).astype(dt, copy=False)
        return f

    def e_Load(self, e):
        name = e.buf.name
        idx = [self.expr(i) for i in e.index]
        kname = self.k.name

        def f(st, m):
            b = st.bufs[name]
            return _access(st, b, [g(st, m) for g in idx], m, kname, None)
        return f

    def _vector(self, e):
        raise EmulatorError(f"emulator, kernel {self.k.name!r}: vector values are not "
                            f"emulated (scalarize first): {ir.describe(e)}")

    e_Broadcast = e_Ramp = e_ReduceLanes = _vector

    # -- statements
    def body(self, stmts):
        fns = [self.stmt(s) for s in stmts]

        def run(st, m):
            for fn in fns:
                fn(st, m)
        return run

    def stmt(self, s):
        return getattr(self, "s_" + type(s).__name__)(s)

    def s_Declare(self, s):
        name, f, dt = s.var.name, self.expr(s.init), s.var.dtype
        if s.var.lanes != 1:
            self._vector(s.init)

        def run(st, m):
            st.env[name] = _coerce(f(st, m), dt)
        return run

    def s_Assign(self, s):
        name, f, dt = s.var.name, self.expr(s.value), s.var.dtype

        def run(st, m):
            v = _coerce(f(st, m), dt)
            if m is not None:
                v = np.where(m, v, st.env[name]).astype(dt, copy=False)
            st.env[name] = v
        return run

    def s_Store(self, s):
        name = s.buf.name
        idx = [self.expr(i) for i in s.index]
        fv = self.expr(s.value)
        dt = s.buf.dtype
        kname = self.k.name

        def run(st, m):
            b = st.bufs[name]
            _access(st, b, [g(st, m) for g in idx], m, kname, _coerce(fv(st, m), dt))
        return run

    def s_If(self, s):
        fc, then, other = self.expr(s.cond), self.body(s.then), self.body(s.orelse)

        def run(st, m):
            c = fc(st, m)
            if np.ndim(c) == 0:
                (then if c else other)(st, m)
                return
            m1 = c if m is None else c & m
            if m1.any():
                then(st, m1)
            if s.orelse:
                m2 = ~c if m is None else ~c & m
                if m2.any():
                    other(st, m2)
        return run

    def s_Alloc(self, s):
        buf = s.buf
        name, size, dt, scope = buf.name, int(np.prod(buf.shape)), buf.dtype, buf.scope
        strides = buf.strides

        def run(st, m):
            if scope == "shared":
                b = st.bufs.get(name)
                if b is not None and b.kind == "shared":
                    return  # static shared memory: one array per block for the whole launch
                arr = np.empty((st.nb, size), dt)
                if ir.is_float(dt):
                    arr.fill(np.nan)
                elif dt != "bool":
                    arr.fill(_np(dt)(0x5A5A5A5A5A5A5A5A & ((1 << (ir.bits(dt) - 1)) - 1)))
                tr = _Tracker(st.nb * size, f"shared {name!r}") if st.check else None
                st.bufs[name] = _Buf(name, "shared", arr, 0, buf.shape, strides, dt, tr)
            else:
                arr = np.zeros((st.L, size), dt)
                st.bufs[name] = _Buf(name, "local", arr, 0, buf.shape, strides, dt)
        return run

    def s_Barrier(self, s):
        kname = self.k.name

        def run(st, m):
            if m is None:
                st.bphase += 1
                return
            per_block = m.reshape(st.nb, st.T)
            some, every = per_block.any(1), per_block.all(1)
            if (some & ~every).any():
                b = int(np.argmax(some & ~every))
                raise EmulatorError(f"emulator, kernel {kname!r}: a barrier reached by only "
                                    f"some threads of block {int(st.gblock[b * st.T])} "
                                    f"({int(per_block[b].sum())} of {st.T}): divergent "
                                    "__syncthreads()")
            st.bphase += every
        return run

    def s_Loop(self, s):
        name, fstart, fstop, step = s.var.name, self.expr(s.start), self.expr(s.stop), s.step
        body = self.body(s.body)
        kind = s.kind
        if kind.startswith(("block_", "thread_")):
            axis = _AXES[kind[-1]]
            is_block = kind.startswith("block_")

            def run(st, m):
                start, stop = fstart(st, m), fstop(st, m)
                if is_block:
                    first, stride = st.block_idx[axis], st.grid[axis] * step
                else:
                    first, stride = st.thread_idx[axis], st.block_dims[axis] * step
                v = start + first * np.int64(step)
                stride = np.int64(stride)
                while True:
                    go = v < stop
                    mm = go if m is None else go & m
                    if not mm.any():
                        return
                    st.env[name] = v
                    body(st, mm)
                    v = v + stride
            return run

        def run(st, m):
            start, stop = fstart(st, m), fstop(st, m)
            if np.ndim(start) == 0 and np.ndim(stop) == 0:
                for i in range(int(start), int(stop), step):
                    st.env[name] = np.int64(i)
                    body(st, m)
                return
            v = np.broadcast_to(np.asarray(start, np.int64), (st.L,)).copy()
            while True:
                go = v < stop
                mm = go if m is None else go & m
                if not mm.any():
                    return
                st.env[name] = v
                body(st, mm)
                v = v + np.int64(step)
        return run


def _access(st, b, idx, m, kname, value):
    """Load (value None) or store one element per active lane of buffer b."""
    sel = None if m is None else st.select(m)
    if sel is not None and len(sel) == 0:
        return np.zeros(st.L, b.dtype) if value is None else None
    uniform = True
    # the indices of the active lanes, bounds-checked per dim
    act = []
    for a, (i, n) in enumerate(zip(idx, b.shape)):
        if type(i) is _NDARRAY:
            uniform = False
            iv = i if sel is None else i[sel]
            lo, hi = _MIN(iv), _MAX(iv)
        else:
            iv = lo = hi = i
        if (lo < 0 or hi >= n) and not (b.kind == "global" and n == 1 and b.strides[a] == 0):
            _oob(st, b, idx, sel, kname, a)
        act.append(iv)
    off = b.base
    for iv, s in zip(act, b.strides):
        if s:
            off = off + iv * s
    uniform = type(off) is not _NDARRAY  # every active lane touches one element
    if b.kind == "global":
        if type(off) is _NDARRAY and (_MIN(off) < 0 or _MAX(off) >= b.size) or \
                type(off) is not _NDARRAY and not 0 <= off < b.size:
            raise EmulatorError(f"emulator, kernel {kname!r}: access to {b.name!r} outside its "
                                f"allocation ({b.size} elements)")
        flat, e = b.flat, off
    else:
        rows = (np.arange(st.L) if sel is None else sel) if b.kind == "local" else \
            (st.lane_block if sel is None else st.lane_block[sel])
        if b.kind == "shared" and st.nb == 1:
            rows = 0
        flat, e = b.flat, (rows, off)
    n_act = st.L if sel is None else len(sel)
    tr = b.tracker
    if tr is not None:
        if b.kind == "global":
            te = off
        else:
            te = (0 if st.nb == 1 else rows * b.size) + off
        te = np.full(n_act, te, np.int64) if type(te) is not _NDARRAY else te
        lanes = st.gid if sel is None else st.gid[sel]
        blocks = st.gblock if sel is None else st.gblock[sel]
        ph = st.phase(sel)
        (tr.read if value is None else tr.write)(te, lanes, blocks, ph, kname, st.T)
    if value is None:
        v = flat[e]
        if sel is None or uniform and b.kind != "local":
            return v
        out = np.zeros(st.L, b.dtype)
        out[sel] = v
        return out
    if type(value) is _NDARRAY:
        value = value if sel is None else value[sel]
    if uniform and b.kind != "local":
        if n_act > 1 and tr is None and st.check:
            _race_uniform(st, b, kname)
        if type(value) is _NDARRAY:
            value = value[-1]
    flat[e] = value
    return None


def _oob(st, b, idx, sel, kname, axis):
    lanes = np.arange(st.L) if sel is None else sel
    for k in lanes:
        at = tuple(int(i[k]) if np.ndim(i) else int(i) for i in idx)
        if not 0 <= at[axis] < b.shape[axis]:
            break
    raise EmulatorError(f"emulator, kernel {kname!r}: out-of-bounds access to {b.kind} buffer "
                        f"{b.name!r} of shape {tuple(b.shape)} at index {at} (axis {axis}), "
                        f"thread {int(st.tid[k])} of block {int(st.gblock[k])}")


def _race_uniform(st, b, kname):
    raise EmulatorError(f"emulator, kernel {kname!r}: several threads store to one element "
                        f"of {b.name!r} in one statement (a race on the GPU; wrap the store in "
                        "a thread loop of extent 1)")


# ----------------------------------------------------------------------------- kernels

class EmulatedKernel:
    """One GpuLaunch, compiled to closures once; ``run`` executes a launch."""

    def __init__(self, launch):
        self.launch = launch
        self.kernel = launch.kernel
        self.name = launch.kernel.name
        self._fn = _Compiler(launch.kernel).body(launch.kernel.body)
        self.written = {n.buf.name for n in ir.walk(launch.kernel)
                        if isinstance(n, ir.Store) and isinstance(n.buf, ir.BufferParam)}

    def run(self, args, grid, block=None, check_races=None):
        """Run the kernel over ``grid`` blocks of ``block`` threads. ``args`` (parameter
        order): for a BufferParam ``(flat, base, shape, strides, key)`` -- a 1-d numpy array
        of the allocation, the element offset, the shape, the element strides, an id of the
        allocation (buffers on one allocation share race tracking) --, for a ScalarParam a
        numpy scalar of its dtype."""
        block = tuple(block or self.launch.block)
        grid = tuple(int(g) for g in grid)
        T = block[0] * block[1] * block[2]
        nblocks = grid[0] * grid[1] * grid[2]
        check = races_enabled() if check_races is None else check_races
        params = self.kernel.params
        trackers = {}
        bufs, scalars = {}, {}
        for p, a in zip(params, args):
            if isinstance(p, ir.BufferParam):
                flat, base, shape, strides, key = a
                tr = None
                if check and p.name in self.written:
                    tk = (key, flat.dtype.str)
                    if tk not in trackers:
                        trackers[tk] = _Tracker(flat.shape[0], f"buffer {p.name!r}")
                    tr = trackers[tk]
                bufs[p.name] = _Buf(p.name, "global", flat, base, tuple(shape), tuple(strides),
                                    p.dtype, tr)
            else:
                scalars[p.name] = _coerce(a, p.dtype)
        per = max(1, LANES // T)
        with np.errstate(all="ignore"):
            for first in range(0, nblocks, per):
                nb = min(per, nblocks - first)
                st = _State(self.name, nb, T, block, grid, first)
                st.check = check
                st.bufs.update(bufs)
                st.env.update(scalars)
                self._fn(st, None)


def host_eval(expr, params, args):
    """Evaluate a kernel-IR expression of scalar params, dims and strides on the host (launch
    grids); ``args``: per BufferParam ``(shape, element strides)``, per ScalarParam its value.
    Returns a Python int."""
    st = _State("host", 1, 1, (1, 1, 1), (1, 1, 1), 0)
    empty = np.empty(0, np.uint8)
    for p, a in zip(params, args):
        if isinstance(p, ir.BufferParam):
            shape, strides = a
            st.bufs[p.name] = _Buf(p.name, "global", empty, 0, tuple(shape), tuple(strides),
                                   p.dtype)
        else:
            st.env[p.name] = _coerce(a, p.dtype)
    with np.errstate(all="ignore"):
        return int(_Compiler(ir.Kernel("host", params, ())).expr(expr)(st, None))


# ----------------------------------------------------------------------------- executor

class EmuAllocation:
    """Emulated device memory: a host byte buffer with a fake device address."""

    __slots__ = ("buf", "nbytes", "ptr", "kept")
    _next = [1 << 32]

    def __init__(self, nbytes):
        self.buf = np.empty(nbytes, np.uint8)
        self.nbytes = nbytes
        self.ptr = EmuAllocation._next[0]
        EmuAllocation._next[0] += nbytes + 4096
        self.kept = False


class EmulatorExecutor(GpuExecutor):
    """backend="cuda-emulator": device memory in host buffers, launches run by the emulator."""

    name = "cuda-emulator"

    def _alloc(self, nbytes):
        return EmuAllocation(nbytes)

    def _upload_into(self, dev, host):
        dev.alloc.buf[dev.offset:dev.offset + host.nbytes] = host.reshape(-1).view(np.uint8)

    @staticmethod
    def _flat(dev):
        a = dev.alloc
        return a.buf[:a.nbytes - a.nbytes % dev.itemsize].view(dev.dtype)

    def download(self, dev):
        if dev.size == 0:
            return np.empty(dev.shape, dev.dtype)
        start = self._flat(dev)[dev.offset // dev.itemsize:]
        return np.array(as_strided(start, dev.shape, dev.strides), order="C")

    def prepare(self, launches):
        return {la.kernel.name: EmulatedKernel(la) for la in launches}

    def launch(self, handle, launch, values, grid):
        args = []
        for v in values:
            if isinstance(v, DeviceArray):
                args.append((self._flat(v), v.offset // v.itemsize, v.shape, v.elem_strides(),
                             id(v.alloc)))
            else:
                args.append(v)
        handle.run(args, grid, launch.block)
