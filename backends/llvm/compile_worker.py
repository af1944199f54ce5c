"""Optimizing LLVM IR into object code, in this process or in a compile worker process.

``compile_ir(text, tm, opt, tuning)`` parses, verifies, optimizes (``optimize``: the new pass
manager's O1..O3 pipeline, tuned per kernel: render.tuning) and emits one module: the one
place that says how Kiln's kernels are optimized, used in process (runtime.py) and by worker
processes (``main``, below).

Why workers (backends/llvm/compile_pool.py starts them): llvmlite serializes every LLVM call
behind one global lock, so threads cannot compile two kernels at once, but processes can;
and LLVM's optimizing pipeline leaks native memory per module (llvmlite 0.47), which a worker
takes away from the user's process. A worker imports nothing but the standard library and
llvmlite (it starts in ~0.2 s) and runs ``python compile_worker.py TARGET_JSON``:

* request  (stdin):  ``<IIQ`` job id, opt level | TUNINGS index << 8, n; then n bytes of LLVM
  IR text (utf-8);
* response (stdout): ``<IIQ`` job id, status (0: object code, 1: error text), n; n bytes.

It exits at end of input (its parent closed the pipe or exited). Frames are raw bytes: no
pickle. A reader thread queues requests while the main thread compiles (llvmlite releases
the GIL during LLVM calls), so the parent never waits to hand over the next kernel.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import struct
import sys
import threading

import llvmlite.binding as llvm

REQUEST = struct.Struct("<IIQ")
RESPONSE = struct.Struct("<IIQ")
#: the tunings render.tuning names ("": the plain O``opt`` pipeline); a request sends the index
TUNINGS = ("", "blocked", "streaming")


def optimize(ref, tm, opt: int, tuning: str = "") -> None:
    """Run the O``opt`` pipeline on a module (nothing at O0), tuned (render.tuning says why).

    The SLP vectorizer is off: Kiln's loop transforms (engine/loopopt.py) already wrote the
    vector code, SLP found nothing to add in the GEMM, conv and elementwise kernels, and it
    costs ~5% of the optimization time. The loop vectorizer stays on: it vectorizes the
    scalar remainder loops (a 1000-column tanh is 15% slower without it).

    tuning "blocked" (GEMM, convolutions: register-blocked vector code written by Kiln): at most O2,
    and neither LLVM's loop unroller nor the vectorizer's interleaving. Plain O2 makes GEMM
    15-25% slower (it unrolls the blocked k loop, with a smaller budget than O3); O2 without
    unrolling runs as fast as O3 and compiles ~35% faster.
    """
    if opt <= 0:
        return
    blocked = tuning in ("blocked", "streaming")  # render.tuning says why they share a pipeline
    level = min(opt, 2) if blocked else opt
    try:
        pto = llvm.create_pipeline_tuning_options(speed_level=level, size_level=0)
    except TypeError:  # llvmlite >= 0.50: no size_level
        pto = llvm.create_pipeline_tuning_options(speed_level=level)
    pto.loop_vectorization = opt >= 2
    pto.slp_vectorization = False
    if blocked:
        pto.loop_unrolling = False
        pto.loop_interleaving = False
    pb = llvm.create_pass_builder(tm, pto)
    pb.getModulePassManager().run(ref, pb)


def compile_ir(text: str, tm, opt: int, tuning: str = "") -> bytes:
    """LLVM IR text -> object code (parsed, verified, optimized at opt with tuning, emitted by
    tm)."""
    ref = llvm.parse_assembly(text)
    ref.verify()
    optimize(ref, tm, opt, tuning)
    return tm.emit_object(ref)


def target_machine(target: dict, opt: int):
    """The TargetMachine runtime.py uses for a target {"triple", "cpu", "features"}."""
    return llvm.Target.from_triple(target["triple"]).create_target_machine(
        cpu=target["cpu"], features=target["features"], opt=min(opt, 3), codemodel="jitdefault",
        jit=True)


def _read_exact(f, n: int) -> bytes | None:
    data = f.read(n)
    return data if len(data) == n else None


def _reader(stdin, jobs: queue.Queue) -> None:
    while True:
        head = _read_exact(stdin, REQUEST.size)
        if head is None:
            break
        job, opt, n = REQUEST.unpack(head)
        text = _read_exact(stdin, n)
        if text is None:
            break
        jobs.put((job, opt, text))
    jobs.put(None)


def main(argv: list[str]) -> int:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's; we stop at EOF
    target = json.loads(argv[1])
    llvm.initialize_native_target()
    llvm.initialize_native_asmprinter()
    tms: dict = {}
    # the protocol gets a private copy of fd 1; fd 1 itself goes to stderr, so nothing LLVM or
    # a library prints can land in the middle of a response
    stdin, stdout = sys.stdin.buffer, os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    jobs: queue.Queue = queue.Queue()
    threading.Thread(target=_reader, args=(stdin, jobs), daemon=True).start()
    while True:
        item = jobs.get()
        if item is None:
            return 0
        job, level, text = item
        opt, tuning = level & 0xFF, level >> 8
        try:
            if opt not in tms:
                tms[opt] = target_machine(target, opt)
            out, status = compile_ir(text.decode(), tms[opt], opt, TUNINGS[tuning]), 0
        except Exception as e:  # noqa: BLE001 - reported to the parent, which recompiles in process
            out, status = f"{type(e).__name__}: {e}".encode(), 1
        stdout.write(RESPONSE.pack(job, status, len(out)) + out)
        stdout.flush()


if __name__ == "__main__":
    sys.exit(main(sys.argv))
