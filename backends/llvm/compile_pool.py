"""Compile worker processes: optimize and emit kernels out of process, several at once.

    pool = get_pool(n_jobs)          # None: no workers here (use the in-process path)
    pool.submit(job, llvm_ir_text, opt, tuning)   # returns at once; queued for the next free worker
    for job, obj in pool.gather():   # obj: object code, or None (recompile it in process)
        ...

Workers are ``python compile_worker.py`` subprocesses (spawned, never forked: a fork of a
process with running threads may inherit held locks), started on the first optimized cold
compile while the parent goes on rendering, and kept for the process's lifetime: the next
compile pays no start-up. ``KILN_COMPILE_WORKERS`` sets how many (default: the CPU count,
at most 4; ``0`` compiles in process). Jobs wait in one queue, in submission order (the
caller submits the biggest first), and a worker gets the next one when it has fewer than
``IN_FLIGHT`` jobs: a worker that drew short jobs takes more, so they finish together
(handing each job to a worker at submission, by IR size, left one worker ~0.4 s of a LeNet
step's ~2 s alone at the end: IR size predicts LLVM time poorly across kernels). A worker
that dies, cannot start, or reports an error makes its jobs come back as None; the caller
recompiles them in process, so a failure here costs time, never a result. A worker is
replaced after ``RECYCLE_JOBS`` jobs, which bounds the native memory LLVM leaks in it. A
process forked from ours does not share our workers (it starts its own).
"""

from __future__ import annotations

import atexit
import collections
import json
import os
import queue
import subprocess
import sys
import threading

from backends.llvm.compile_worker import REQUEST, RESPONSE, TUNINGS
from engine.debug import debug_log

MAX_WORKERS = 4
RECYCLE_JOBS = 500
IN_FLIGHT = 2  # jobs handed to a worker at once: one compiling, the next already read
_WORKER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "compile_worker.py")
_STATE: dict = {"pid": None, "pool": None, "failures": 0}


def worker_count() -> int:
    env = os.environ.get("KILN_COMPILE_WORKERS", "").strip()
    if env:
        try:
            return max(0, int(env))
        except ValueError:
            return 0
    return min(os.cpu_count() or 1, MAX_WORKERS)


class _Worker:
    def __init__(self, target: dict, pool: Pool) -> None:
        self.proc = subprocess.Popen([sys.executable, _WORKER, json.dumps(target)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, close_fds=True)
        self.pool = pool
        self.pending: set[int] = set()   # jobs sent, not yet answered (under pool.cond)
        self.jobs = 0
        self.dead = False
        # requests go through a writer thread: a worker still starting up (or busy reading)
        # must never block the parent, which renders the next kernel meanwhile
        self.outbox: queue.SimpleQueue = queue.SimpleQueue()
        threading.Thread(target=self._write, name="kiln-compile-writer", daemon=True).start()
        threading.Thread(target=self._read, name="kiln-compile-reader", daemon=True).start()

    def send(self, job: int, frame: bytes) -> None:
        """Hand a job over (the caller holds pool.cond)."""
        self.pending.add(job)
        self.jobs += 1
        self.outbox.put(frame)

    def _write(self) -> None:
        while True:
            frame = self.outbox.get()
            try:
                if frame is None:
                    self.proc.stdin.close()
                    return
                self.proc.stdin.write(frame)
                self.proc.stdin.flush()
            except (OSError, ValueError):
                self.pool.died(self)
                return

    def _read(self) -> None:
        out = self.proc.stdout
        while True:
            head = out.read(RESPONSE.size)
            if len(head) != RESPONSE.size:
                break
            job, status, n = RESPONSE.unpack(head)
            data = out.read(n)
            if len(data) != n:
                break
            if status != 0:
                debug_log("kernels", f"compile worker {self.proc.pid}: {data.decode(errors='replace')}; "
                                     "recompiling in process")
            self.pool.done(self, job, data if status == 0 else None)
        self.pool.died(self)

    def close(self) -> None:
        self.outbox.put(None)  # the writer closes stdin after the queued requests: EOF
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()


class Pool:
    """The workers and one queue of jobs; results come back through gather().

    All state below is guarded by ``cond`` (the worker threads report through done/died)."""

    def __init__(self, target: dict) -> None:
        self.target = target
        self.workers: list[_Worker] = []
        self.cond = threading.Condition()
        self.queue: collections.deque = collections.deque()   # (job, request frame), not yet sent
        self.results: list = []
        self.outstanding = 0   # submitted jobs whose result gather() has not yielded yet

    def ensure(self, n: int) -> bool:
        """At least min(n, worker_count()) live workers; False if none could start."""
        with self.cond:
            stale = [w for w in self.workers if w.dead or (w.jobs >= RECYCLE_JOBS and not w.pending)]
            for w in stale:
                self.workers.remove(w)
        for w in stale:
            w.close()
        want = min(n, worker_count())
        while len(self.workers) < want and _STATE["failures"] < 3:
            try:
                w = _Worker(self.target, self)
            except OSError as e:
                _STATE["failures"] += 1
                debug_log("kernels", f"cannot start a compile worker ({e}); compiling in process")
                break
            with self.cond:
                self.workers.append(w)
                self._dispatch()
        return bool(self.workers)

    def submit(self, job: int, text: str, opt: int, tuning: str = "") -> bool:
        data = text.encode()
        with self.cond:
            if not any(not w.dead for w in self.workers):
                return False
            self.queue.append((job, REQUEST.pack(job, opt | TUNINGS.index(tuning) << 8, len(data)) + data))
            self.outstanding += 1
            self._dispatch()
        return True

    def _dispatch(self) -> None:
        """Hand queued jobs to the live workers with room (the caller holds cond); with none
        left alive, the queued jobs come back as None."""
        live = [w for w in self.workers if not w.dead]
        if not live:
            self.results.extend((job, None) for job, _ in self.queue)
            self.queue.clear()
            self.cond.notify_all()
            return
        while self.queue:
            w = min(live, key=lambda w: len(w.pending))
            if len(w.pending) >= IN_FLIGHT:
                return
            w.send(*self.queue.popleft())

    def done(self, worker: _Worker, job: int, obj: bytes | None) -> None:
        with self.cond:
            worker.pending.discard(job)
            self.results.append((job, obj))
            self._dispatch()
            self.cond.notify_all()

    def died(self, worker: _Worker) -> None:
        with self.cond:
            if worker.dead:
                return
            worker.dead = True
            self.results.extend((job, None) for job in worker.pending)
            worker.pending.clear()
            self._dispatch()
            self.cond.notify_all()

    def gather(self):
        """Yield (job, object bytes or None) for every submitted job, as they complete."""
        while True:
            with self.cond:
                while not self.results and self.outstanding:
                    self.cond.wait()
                if not self.outstanding:
                    break
                got, self.results = self.results, []
                self.outstanding -= len(got)
            yield from got
        dead = [w for w in self.workers if w.dead]
        for w in dead:
            _STATE["failures"] += 1
            self.workers.remove(w)
            w.close()

    def close(self) -> None:
        for w in self.workers:
            w.close()
        self.workers = []


def get_pool(n_jobs: int, target: dict) -> Pool | None:
    """The process's worker pool, grown to serve n_jobs; None where workers are off or fail."""
    if worker_count() <= 0 or _STATE["failures"] >= 3:
        return None
    if _STATE["pid"] != os.getpid():  # first use, or a fork of a process that had a pool
        _STATE.update(pid=os.getpid(), pool=Pool(target))
    pool = _STATE["pool"]
    return pool if pool.ensure(n_jobs) else None


@atexit.register
def _shutdown() -> None:
    if _STATE["pid"] == os.getpid() and _STATE["pool"] is not None:
        _STATE["pool"].close()
