"""Compile worker processes: optimize and emit kernels out of process, several at once.

    pool = get_pool(n_jobs)          # None: no workers here (use the in-process path)
    pool.submit(job, llvm_ir_text, opt)   # returns at once; the least loaded worker takes it
    for job, obj in pool.gather():   # obj: object code, or None (recompile it in process)
        ...

Workers are ``python compile_worker.py`` subprocesses (spawned, never forked: a fork of a
process with running threads may inherit held locks), started on the first optimized cold
compile while the parent goes on rendering, and kept for the process's lifetime: the next
compile pays no start-up. ``KILN_COMPILE_WORKERS`` sets how many (default: the CPU count,
at most 4; ``0`` compiles in process). A worker that dies, cannot start, or reports an error
makes its jobs come back as None; the caller recompiles them in process, so a failure here
costs time, never a result. A worker is replaced after ``RECYCLE_JOBS`` jobs, which bounds
the native memory LLVM leaks in it. A process forked from ours does not share our workers
(it starts its own).
"""

from __future__ import annotations

import atexit
import json
import os
import queue
import subprocess
import sys
import threading

from backends.llvm.compile_worker import REQUEST, RESPONSE
from engine.debug import debug_log

MAX_WORKERS = 4
RECYCLE_JOBS = 500
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
    def __init__(self, target: dict) -> None:
        self.proc = subprocess.Popen([sys.executable, _WORKER, json.dumps(target)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, close_fds=True)
        self.pending: dict[int, int] = {}   # job -> bytes of IR, not yet answered
        self.jobs = 0
        self.dead = False
        self.results: list = []
        self.cond = threading.Condition()
        # requests go through a writer thread: a worker still starting up (or busy reading)
        # must never block the parent, which renders the next kernel meanwhile
        self.outbox: queue.SimpleQueue = queue.SimpleQueue()
        threading.Thread(target=self._write, name="kiln-compile-writer", daemon=True).start()
        threading.Thread(target=self._read, name="kiln-compile-reader", daemon=True).start()

    def load(self) -> int:
        return sum(self.pending.values())

    def submit(self, job: int, text: bytes, opt: int) -> bool:
        with self.cond:
            if self.dead:
                return False
            self.pending[job] = len(text)
        self.jobs += 1
        self.outbox.put(REQUEST.pack(job, opt, len(text)) + text)
        return True

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
                self._died()
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
            with self.cond:
                self.pending.pop(job, None)
                self.results.append((job, data if status == 0 else None))
                self.cond.notify_all()
        self._died()

    def _died(self) -> None:
        with self.cond:
            if not self.dead:
                self.dead = True
                self.results.extend((job, None) for job in self.pending)
                self.pending.clear()
                self.cond.notify_all()

    def take(self) -> list:
        """Wait for at least one result while jobs are pending; all results so far."""
        with self.cond:
            while not self.results and self.pending:
                self.cond.wait()
            out, self.results = self.results, []
            return out

    def close(self) -> None:
        self.outbox.put(None)  # the writer closes stdin after the queued requests: EOF
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()


class Pool:
    def __init__(self, target: dict) -> None:
        self.target = target
        self.workers: list[_Worker] = []

    def ensure(self, n: int) -> bool:
        """At least min(n, worker_count()) live workers; False if none could start."""
        for w in [w for w in self.workers if w.dead or (w.jobs >= RECYCLE_JOBS and not w.pending)]:
            self.workers.remove(w)
            w.close()
        want = min(n, worker_count())
        while len(self.workers) < want and _STATE["failures"] < 3:
            try:
                self.workers.append(_Worker(self.target))
            except OSError as e:
                _STATE["failures"] += 1
                debug_log("kernels", f"cannot start a compile worker ({e}); compiling in process")
                break
        return bool(self.workers)

    def submit(self, job: int, text: str, opt: int) -> bool:
        live = [w for w in self.workers if not w.dead]
        if not live:
            return False
        return min(live, key=_Worker.load).submit(job, text.encode(), opt)

    def gather(self):
        """Yield (job, object bytes or None) for every submitted job, as they complete."""
        for w in self.workers:
            while True:
                got = w.take()
                if not got:
                    break
                yield from got
        for w in [w for w in self.workers if w.dead]:
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
