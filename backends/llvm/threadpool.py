"""A persistent native worker pool for parallel loops, generated with llvmlite (no C compiler).

Kernels call ``kiln_parallel_for(fn, start, end, ctx)`` (see render.py); this module builds
that symbol as machine code, so a parallel region never enters Python (the ctypes-callback
pool it replaces costs 15-60 us a region; this one about 1 us with spinning workers, a
futex wake-up, tens of us, with sleeping ones):

* ``kiln_pool_start(n)`` creates pthread workers (16 MB stacks, detached) until there are
  n - 1 and makes n threads take part in each region (the caller is thread 0);
* ``kiln_parallel_for`` splits [start, end) into ``min(n, trips)`` contiguous chunks,
  publishes the job (body, context, bounds, chunk count) and one 64-bit job word
  ``generation << 32 | next chunk`` with chunk 0 already taken, wakes sleeping workers (the
  mutex is only touched when one sleeps), runs chunk 0, then waits until every chunk is done;
* a worker claims chunks by compare-and-swap on the job word, so a stale view of an old job
  can never run a chunk; after its last chunk it spins on the word (``pause``, a
  ``sched_yield`` every ~2 us so that it never starves a caller sharing its CPU) for
  ``SPIN_TICKS`` (~1.5 ms), then sleeps on a condition variable;
* chunks no worker claimed within ``GRACE_TICKS`` (a worker lost its CPU to another process)
  are run by the caller; a region started while another runs (a second Python thread, or a
  kernel called from a chunk), one thread, or one trip, runs serially on the calling thread.

``kiln_pool_stat(k)`` reads counters (0 regions, 1 chunks, 2 the bit mask of the threads that
ran a chunk of the last region, 3.. internal state for debugging); ``kiln_pool_after_fork()``
forgets the workers in a forked child (they do not exist there).
"""

from __future__ import annotations

import llvmlite.ir as ll

I8, I32, I64 = ll.IntType(8), ll.IntType(32), ll.IntType(64)
PTR, VOID = ll.PointerType(), ll.VoidType()
#: cycle-counter ticks a worker spins after its last job before it sleeps (~1.5 ms at 2.6 GHz).
#: Waking a sleeper costs tens of us on a VM (an idle vCPU's wake-up), and a training step's
#: serial kernels and Python between two parallel GEMMs last ~100 us: spinning ~100 us, the
#: RBM CD-1 step (batch 20) woke a worker before nearly every GEMM, 30-40 us each (kernels
#: 1.03 -> 0.85 ms, step 1.27 -> 1.18 ms with 1 << 22; 1 << 20 and 1 << 24 were slower).
#: The spinner yields every YIELD_TICKS, so a thread waiting for its CPU gets it (OpenMP
#: runtimes spin 200 ms by default)
SPIN_TICKS = 1 << 22
#: ticks between two sched_yield calls of a spinning thread (~2 us)
YIELD_TICKS = 1 << 12
#: ticks the caller waits for workers to claim their chunks before running them itself (~13 ms)
GRACE_TICKS = 1 << 25
#: bytes reserved for each pthread object (glibc x86_64 needs 40-56; aarch64 48-64)
PTHREAD_OBJ = 128
STACK_BYTES = 16 << 20
MAX_THREADS = 64

_COUNTERS = ("word", "done", "fn", "ctx", "start", "end", "nchunks", "nworkers", "active",
             "sleepers", "busy", "regions", "chunks", "mask", "stop")


class _Indirect:
    """An opaque pointer used as a callee of a known function type."""

    def __init__(self, value, fnty):
        self.value, self.function_type, self.type = value, fnty, value.type

    def get_reference(self):
        return self.value.get_reference()


def _i64(v):
    return ll.Constant(I64, v)


def build_module(triple):
    """The pool's llvmlite module for a target triple."""
    m = ll.Module("kiln_threadpool")
    m.triple = triple
    g = {}
    for name in _COUNTERS:
        t = I64   # fn and ctx are pointers stored as integers (atomics need typed globals)
        var = ll.GlobalVariable(m, t, name=f"kiln_pool.{name}")
        var.initializer = ll.Constant(t, None)
        var.linkage = "internal"
        var.align = 64   # one cache line each: no false sharing between the hot counters
        g[name] = var
    objs = {}
    for name in ("mutex", "cond"):
        t = ll.ArrayType(I8, PTHREAD_OBJ)
        var = ll.GlobalVariable(m, t, name=f"kiln_pool.{name}")
        var.initializer = ll.Constant(t, None)
        var.linkage = "internal"
        var.align = 64
        objs[name] = var

    def fn(name, ret, args, linkage=None):
        f = ll.Function(m, ll.FunctionType(ret, args), name=name)
        if linkage:
            f.linkage = linkage
        return f
    body_t = ll.FunctionType(VOID, [I64, I64, PTR])
    mutex_lock = fn("pthread_mutex_lock", I32, [PTR])
    mutex_unlock = fn("pthread_mutex_unlock", I32, [PTR])
    mutex_init = fn("pthread_mutex_init", I32, [PTR, PTR])
    cond_init = fn("pthread_cond_init", I32, [PTR, PTR])
    cond_wait = fn("pthread_cond_wait", I32, [PTR, PTR])
    cond_broadcast = fn("pthread_cond_broadcast", I32, [PTR])
    attr_init = fn("pthread_attr_init", I32, [PTR])
    attr_stack = fn("pthread_attr_setstacksize", I32, [PTR, I64])
    attr_detach = fn("pthread_attr_setdetachstate", I32, [PTR, I32])
    attr_destroy = fn("pthread_attr_destroy", I32, [PTR])
    create = fn("pthread_create", I32, [PTR, PTR, PTR, PTR])
    sched_yield = fn("sched_yield", I32, [])
    cycles = fn("llvm.readcyclecounter", I64, [])
    x86 = triple.startswith(("x86_64", "i686", "i386"))
    pause_fn = fn("llvm.x86.sse2.pause", VOID, []) if x86 else None

    def pause(b):
        if pause_fn is not None:
            b.call(pause_fn, [])

    def load(b, name, order="acquire"):
        v = b.load_atomic(g[name], order, 8, typ=I64)
        return b.inttoptr(v, PTR) if name in ("fn", "ctx") else v

    def store(b, name, v, order="release"):
        if name in ("fn", "ctx"):
            v = b.ptrtoint(v, I64)
        b.store_atomic(v, g[name], order, 8)

    def icall(b, ptr, args):
        """An indirect call of a body ``void (i64, i64, ptr)`` through an opaque pointer."""
        return b.call(_Indirect(ptr, body_t), args)

    def chunk_bounds(b, start, n, k, nch):
        lo = b.add(start, b.sdiv(b.mul(n, k), nch))
        hi = b.add(start, b.sdiv(b.mul(n, b.add(k, _i64(1))), nch))
        return lo, hi

    def gen_of(b, w):
        return b.lshr(w, _i64(32))

    def claim_loop(b, f, tid, seen, after):
        """Blocks of f claiming and running chunks of job ``seen`` (a generation) until none
        is left (or the job is over), then branching to ``after``; returns the entry block.
        A claim is a compare-and-swap of the job word (generation << 32 | next chunk), so a
        stale view of the job can never run a chunk."""
        blk = {n: f.append_basic_block(f"claim.{n}") for n in ("top", "check", "cas", "run")}
        b.position_at_end(blk["top"])
        w = load(b, "word")
        b.cbranch(b.icmp_unsigned("==", gen_of(b, w), seen), blk["check"], after)
        b.position_at_end(blk["check"])
        k = b.and_(w, _i64(0xFFFFFFFF))
        nch = load(b, "nchunks")
        b.cbranch(b.icmp_signed("<", k, nch), blk["cas"], after)
        b.position_at_end(blk["cas"])
        res = b.cmpxchg(g["word"], w, b.add(w, _i64(1)), "acq_rel", "acquire")
        b.cbranch(b.extract_value(res, 1), blk["run"], blk["top"])
        b.position_at_end(blk["run"])
        start = load(b, "start")
        n = b.sub(load(b, "end"), start)
        lo, hi = chunk_bounds(b, start, n, k, nch)
        icall(b, load(b, "fn"), [lo, hi, load(b, "ctx")])
        b.atomic_rmw("or", g["mask"], b.shl(_i64(1), tid), "monotonic")
        b.atomic_rmw("add", g["done"], _i64(1), "release")
        b.branch(blk["top"])
        return blk["top"]

    # -- worker: void *kiln_pool_worker(void *index)
    worker = fn("kiln_pool_worker", PTR, [PTR], "internal")
    blocks = {n: worker.append_basic_block(n) for n in (
        "entry", "spin", "spun", "sleep", "recheck", "wait", "woke", "job", "rest", "exit")}
    b = ll.IRBuilder(blocks["entry"])
    arg = b.ptrtoint(worker.args[0], I64, name="arg")   # generation at creation << 8 | index
    wid = b.and_(arg, _i64(0xFF), name="id")
    seen = b.alloca(I64, name="seen")
    since = b.alloca(I64, name="since")
    newgen = b.alloca(I64, name="newgen")
    yielded = b.alloca(I64, name="yielded")
    b.store(b.lshr(arg, _i64(8)), seen)   # not the word now: a job may be out already
    b.store(b.call(cycles, []), since)
    b.store(b.call(cycles, []), yielded)
    b.branch(blocks["spin"])
    # spin on the job word's generation
    b.position_at_end(blocks["spin"])
    gen = gen_of(b, load(b, "word"))
    b.store(gen, newgen)
    b.cbranch(b.icmp_unsigned("!=", gen, b.load(seen)), blocks["job"], blocks["spun"])
    b.position_at_end(blocks["spun"])
    pause(b)
    now = b.call(cycles, [])
    # yield now and then: a worker woken onto its caller's CPU must not spin the caller out
    with b.if_then(b.icmp_unsigned(">", b.sub(now, b.load(yielded)), _i64(YIELD_TICKS))):
        b.call(sched_yield, [])
        b.store(now, yielded)
    spun = b.sub(now, b.load(since))
    b.cbranch(b.icmp_unsigned("<", spun, _i64(SPIN_TICKS)), blocks["spin"], blocks["sleep"])
    # sleep: sleepers += 1 under the mutex, re-check, wait
    b.position_at_end(blocks["sleep"])
    b.call(mutex_lock, [objs["mutex"]])
    b.atomic_rmw("add", g["sleepers"], _i64(1), "seq_cst")
    b.branch(blocks["recheck"])
    b.position_at_end(blocks["recheck"])
    gen = gen_of(b, load(b, "word", "seq_cst"))
    b.store(gen, newgen)
    changed = b.or_(b.icmp_unsigned("!=", gen, b.load(seen)),
                    b.icmp_signed("!=", load(b, "stop"), _i64(0)))
    b.cbranch(changed, blocks["woke"], blocks["wait"])
    b.position_at_end(blocks["wait"])
    b.call(cond_wait, [objs["cond"], objs["mutex"]])
    b.branch(blocks["recheck"])
    b.position_at_end(blocks["woke"])
    b.atomic_rmw("sub", g["sleepers"], _i64(1), "seq_cst")
    b.call(mutex_unlock, [objs["mutex"]])
    b.branch(blocks["job"])
    # a new job: claim and run chunks, then spin again
    b.position_at_end(blocks["job"])
    cur = b.load(newgen)
    b.store(cur, seen)
    stop = b.icmp_signed("!=", load(b, "stop"), _i64(0))
    top = claim_loop(b, worker, wid, cur, blocks["rest"])
    b.position_at_end(blocks["job"])
    b.cbranch(stop, blocks["exit"], top)
    b.position_at_end(blocks["rest"])     # the job is done: spin from now on
    b.store(b.call(cycles, []), since)
    b.branch(blocks["spin"])
    b.position_at_end(blocks["exit"])
    b.ret(ll.Constant(PTR, None))

    # -- void kiln_parallel_for(fn, start, end, ctx)
    pfor = fn("kiln_parallel_for", VOID, [PTR, I64, I64, PTR])
    f_body, f_start, f_end, f_ctx = pfor.args
    blk = {n: pfor.append_basic_block(n) for n in (
        "entry", "serial", "try", "publish", "wake", "work", "wait", "waitspin", "steal", "yield",
        "done")}
    b = ll.IRBuilder(blk["entry"])
    yielded = b.alloca(I64, name="yielded")
    b.atomic_rmw("add", g["regions"], _i64(1), "monotonic")
    n = b.sub(f_end, f_start)
    act = load(b, "active", "monotonic")
    nt = b.select(b.icmp_signed("<", act, n), act, n)
    b.cbranch(b.icmp_signed("<=", nt, _i64(1)), blk["serial"], blk["try"])
    b.position_at_end(blk["serial"])
    icall(b, f_body, [f_start, f_end, f_ctx])
    b.atomic_rmw("add", g["chunks"], _i64(1), "monotonic")
    store(b, "mask", _i64(1), "monotonic")
    b.ret_void()
    b.position_at_end(blk["try"])
    res = b.cmpxchg(g["busy"], _i64(0), _i64(1), "acquire", "monotonic")
    b.cbranch(b.extract_value(res, 1), blk["publish"], blk["serial"])
    b.position_at_end(blk["publish"])
    store(b, "fn", f_body, "monotonic")
    store(b, "ctx", f_ctx, "monotonic")
    store(b, "start", f_start, "monotonic")
    store(b, "end", f_end, "monotonic")
    store(b, "nchunks", nt, "monotonic")
    store(b, "mask", _i64(0), "monotonic")
    store(b, "done", _i64(0), "monotonic")
    newg = b.and_(b.add(gen_of(b, load(b, "word", "monotonic")), _i64(1)), _i64(0xFFFFFFFF))
    # publishes the stores above; chunk 0 is the caller's (claimed already)
    store(b, "word", b.or_(b.shl(newg, _i64(32)), _i64(1)), "seq_cst")
    sleepers = load(b, "sleepers", "seq_cst")
    b.cbranch(b.icmp_signed(">", sleepers, _i64(0)), blk["wake"], blk["work"])
    b.position_at_end(blk["wake"])
    b.call(mutex_lock, [objs["mutex"]])
    b.call(cond_broadcast, [objs["cond"]])
    b.call(mutex_unlock, [objs["mutex"]])
    b.branch(blk["work"])
    b.position_at_end(blk["work"])
    lo, hi = chunk_bounds(b, f_start, n, _i64(0), nt)
    icall(b, f_body, [lo, hi, f_ctx])
    b.atomic_rmw("or", g["mask"], _i64(1), "monotonic")
    b.atomic_rmw("add", g["done"], _i64(1), "release")
    t0 = b.call(cycles, [])
    b.store(t0, yielded)
    b.branch(blk["wait"])
    # wait for the workers; after GRACE_TICKS, run the chunks none of them claimed (a worker
    # that lost its core to another process must not stall the region)
    b.position_at_end(blk["wait"])
    b.cbranch(b.icmp_signed("==", load(b, "done"), nt), blk["done"], blk["waitspin"])
    b.position_at_end(blk["waitspin"])
    pause(b)
    now = b.call(cycles, [])
    with b.if_then(b.icmp_unsigned(">", b.sub(now, b.load(yielded)), _i64(YIELD_TICKS))):
        b.call(sched_yield, [])   # now and then: a worker may be waiting for our CPU
        b.store(now, yielded)
    late = b.icmp_unsigned(">", b.sub(now, t0), _i64(GRACE_TICKS))
    b.cbranch(late, blk["steal"], blk["wait"])
    steal = claim_loop(b, pfor, _i64(0), newg, blk["yield"])
    b.position_at_end(blk["steal"])
    b.branch(steal)
    b.position_at_end(blk["yield"])
    b.call(sched_yield, [])   # a worker holding a chunk lost its core: let it run
    b.branch(blk["wait"])
    b.position_at_end(blk["done"])
    b.atomic_rmw("add", g["chunks"], nt, "monotonic")
    store(b, "busy", _i64(0))
    b.ret_void()

    # -- i64 kiln_pool_start(i64 n): n - 1 workers, n threads per region
    start_fn = fn("kiln_pool_start", I64, [I64])
    (want,) = start_fn.args
    blk = {k: start_fn.append_basic_block(k) for k in ("entry", "lock", "init", "grow", "make",
                                                        "made", "done")}
    b = ll.IRBuilder(blk["entry"])
    attr = b.alloca(ll.ArrayType(I8, PTHREAD_OBJ))
    tid = b.alloca(ll.ArrayType(I8, 16))
    want = b.select(b.icmp_signed("<", want, _i64(1)), _i64(1), want)
    want = b.select(b.icmp_signed(">", want, _i64(MAX_THREADS)), _i64(MAX_THREADS), want)
    b.branch(blk["lock"])
    b.position_at_end(blk["lock"])   # own the pool: no region runs while workers are added
    res = b.cmpxchg(g["busy"], _i64(0), _i64(1), "acquire", "monotonic")
    b.cbranch(b.extract_value(res, 1), blk["init"], blk["lock"])
    b.position_at_end(blk["init"])
    first = b.icmp_signed("==", load(b, "nworkers"), _i64(0))
    with b.if_then(first):
        b.call(mutex_init, [objs["mutex"], ll.Constant(PTR, None)])
        b.call(cond_init, [objs["cond"], ll.Constant(PTR, None)])
    b.branch(blk["grow"])
    b.position_at_end(blk["grow"])
    have = load(b, "nworkers")
    b.cbranch(b.icmp_signed("<", b.add(have, _i64(1)), want), blk["make"], blk["done"])
    b.position_at_end(blk["make"])
    b.call(attr_init, [attr])
    b.call(attr_stack, [attr, _i64(STACK_BYTES)])
    b.call(attr_detach, [attr, ll.Constant(I32, 1)])   # PTHREAD_CREATE_DETACHED (glibc)
    index = b.add(have, _i64(1))
    warg = b.or_(b.shl(gen_of(b, load(b, "word")), _i64(8)), index)
    rc = b.call(create, [tid, attr, worker, b.inttoptr(warg, PTR)])
    b.call(attr_destroy, [attr])
    b.cbranch(b.icmp_signed("==", rc, ll.Constant(I32, 0)), blk["made"], blk["done"])
    b.position_at_end(blk["made"])
    store(b, "nworkers", index)
    b.branch(blk["grow"])
    b.position_at_end(blk["done"])
    have = load(b, "nworkers")
    total = b.add(have, _i64(1))
    store(b, "active", b.select(b.icmp_signed("<", total, want), total, want))
    store(b, "busy", _i64(0))
    b.ret(have)

    # -- i64 kiln_pool_stat(i64 which)
    stat = fn("kiln_pool_stat", I64, [I64])
    b = ll.IRBuilder(stat.append_basic_block("entry"))
    w = stat.args[0]
    names = ("regions", "chunks", "mask", "word", "sleepers", "nworkers", "done", "active")
    v = _i64(-1)
    for k, name in reversed(list(enumerate(names))):
        v = b.select(b.icmp_signed("==", w, _i64(k)), load(b, name, "monotonic"), v)
    b.ret(v)

    # -- void kiln_pool_after_fork(void): the child has no workers
    fork = fn("kiln_pool_after_fork", VOID, [])
    b = ll.IRBuilder(fork.append_basic_block("entry"))
    for name in ("nworkers", "sleepers", "busy", "done"):
        store(b, name, _i64(0), "monotonic")
    store(b, "active", _i64(1), "monotonic")
    b.ret_void()
    return m
