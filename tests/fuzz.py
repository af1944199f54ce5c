"""Differential fuzzing: random graphs (tests/fuzz_graphs.py) on every backend vs the numpy oracle.

    python -m tests.fuzz --graphs 10000 [--backend llvm] [--seed N] [--out DIR]

Each generated program is compiled with ``backend="numpy", optimizer=None`` (the oracle, the
graph exactly as written) and on every target: numpy with the optimizer on, and each other
registered backend with the optimizer on and off. Every output (forward outputs, then the
gradients of a random scalar cost with respect to every float input) must match the oracle:
same shape and dtype; bool/int exactly; floats to a tolerance made of a dtype-aware base
(``64 eps`` relative to the output's scale) plus 64 times the oracle's own error, measured
against the same program rebuilt in float64 (an ill-conditioned output gets the slack it
needs, a well-conditioned one none). Also checked: the oracle is bit-identical when run again
after the other compilations (no graph mutation, no nondeterminism), and no call writes to its
input arrays.

Findings print with the graph (``engine.debugprint`` of the failing function) and a
self-contained reproducer script; ``--out DIR`` writes each reproducer to a file.
"""

from __future__ import annotations

import argparse
import io
import os
import signal
import sys
import time
import traceback
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from tests.fuzz_graphs import GeneratorError, HypothesisDraw, Program, RandomDraw, generate

BASE_ULPS = 64            # base tolerance, in units of the dtype's eps, relative to the output's scale
ORACLE_ERROR_FACTOR = 64  # slack per unit of the oracle's own (float32 vs float64) error: numpy sums
                          # pairwise, the code generators in blocks (an order of magnitude less accurate)


#: bugs already filed (each has an xfail regression test in tests/test_fuzz.py): a finding on a
#: program with the signature is counted as ``known:<name>`` and does not fail the bounded run.
#: Remove an entry when its bug is fixed and its test's marker flipped.
KNOWN_BUGS = {
    "prod-grad-at-zero": lambda body, detail: "prod(" in body and "NaN" in detail,
}


def known_bug(program: Program | None, finding_detail: str) -> str | None:
    if program is None:
        return None
    body = program.body()
    return next((name for name, sig in KNOWN_BUGS.items() if sig(body, finding_detail)), None)


@dataclass(frozen=True)
class Target:
    backend: str
    optimizer: str | None = "default"

    @property
    def label(self) -> str:
        return f"{self.backend}{'' if self.optimizer else '/unoptimized'}"


ORACLE = Target("numpy", None)


@dataclass
class Finding:
    kind: str            # mismatch | crash | oracle-error | build-error | oracle-unstable | input-mutated | timeout
    target: str
    detail: str
    program: Program | None = None
    graph: str = ""

    def reproducer(self) -> str:
        if self.program is None:
            return ""
        backend, _, opt = self.target.partition("/")
        optimizer = "None" if opt == "unoptimized" else "'default'"
        return self.program.source() + f"""
ref = engine.function(inputs, outputs, backend='numpy', optimizer=None, on_unused_input='ignore')(*values)
got = engine.function(inputs, outputs, backend={backend!r}, optimizer={optimizer}, on_unused_input='ignore')(*values)
for i, (r, g) in enumerate(zip(ref, got)):
    r, g = np.asarray(r), np.asarray(g)
    err = np.max(np.abs(r.astype('float64') - g.astype('float64')), initial=0) if r.shape == g.shape else 'shape'
    print(i, r.dtype, g.dtype, r.shape, g.shape, 'max abs diff', err)
"""

    def report(self) -> str:
        lines = [f"== {self.kind} on {self.target}: {self.detail}"]
        if self.graph:
            lines += ["-- graph (engine.debugprint):", self.graph]
        if self.program is not None:
            lines += ["-- reproducer:", self.reproducer()]
        return "\n".join(lines)


@dataclass
class Stats:
    graphs: int = 0
    compiled: Counter = field(default_factory=Counter)   # target label -> successful comparisons
    findings: list = field(default_factory=list)
    ops: Counter = field(default_factory=Counter)
    outputs: int = 0
    started: float = field(default_factory=time.perf_counter)

    def kinds(self) -> Counter:
        return Counter(f"{f.kind}@{f.target}" for f in self.findings)

    def summary(self) -> str:
        elapsed = time.perf_counter() - self.started
        per = ", ".join(f"{k}: {v}" for k, v in sorted(self.compiled.items()))
        found = ", ".join(f"{k}: {v}" for k, v in sorted(self.kinds().items())) or "none"
        return (f"graphs tried: {self.graphs} ({self.outputs} outputs incl. gradients) in {elapsed:.0f} s; "
                f"compared per target: {per}; findings: {len(self.findings)} ({found})")


def default_targets(backends: list[str] | None = None, unoptimized: bool = True) -> list[Target]:
    """numpy with the optimizer, plus every other registered backend (optimized and not)."""
    from backends import registered_backends

    names = backends if backends is not None else [b for b in registered_backends() if b != "cuda"]
    targets = []
    for name in names:
        if name == "numpy":
            targets.append(Target("numpy", "default"))
            continue
        targets.append(Target(name, "default"))
        if unoptimized:
            targets.append(Target(name, None))
    return targets


# -- running one program ----------------------------------------------------------------------------

def compile_program(ns: dict, target: Target):
    import engine

    return engine.function(ns["inputs"], ns["outputs"], backend=target.backend, optimizer=target.optimizer,
                           on_unused_input="ignore")


def _copy_like(v: np.ndarray) -> np.ndarray:
    """A fresh copy with ``v``'s memory layout (the generator passes strided, reversed and
    Fortran-ordered arguments too)."""
    v = np.asarray(v)
    if v.ndim == 0 or v.flags.c_contiguous:
        return v.copy()
    if v.flags.f_contiguous:
        return v.copy(order="F")
    if any(s < 0 for s in v.strides):
        return np.flip(np.flip(v, -1).copy(), -1)
    return np.repeat(v, 2, axis=-1)[..., ::2]


def _call(fn, values: list) -> list:
    with np.errstate(all="ignore"):       # NaN/Inf are compared, not warned about
        out = fn(*[_copy_like(v) for v in values])
    return [np.asarray(o) for o in (out if isinstance(out, list) else [out])]


def high_precision(program: Program) -> list | None:
    """The oracle on the program rebuilt with every float32 as float64 (None when it fails)."""
    from engine.config import config

    saved = config.floatX
    try:
        ns = program.build("float64")
        config.floatX = "float64"
        return _call(compile_program(ns, ORACLE), ns["values"])
    except Exception:  # noqa: BLE001 - only a tolerance aid
        return None
    finally:
        config.floatX = saved


def compare(ref: np.ndarray, got: np.ndarray, hi: np.ndarray | None) -> str | None:
    """Why ``got`` does not match the oracle's ``ref`` (None when it does)."""
    with np.errstate(all="ignore"):
        return _compare(ref, got, hi)


def _compare(ref: np.ndarray, got: np.ndarray, hi: np.ndarray | None) -> str | None:
    ref, got = np.asarray(ref), np.asarray(got)
    if got.shape != ref.shape:
        return f"shape {got.shape} != oracle {ref.shape}"
    if got.dtype != ref.dtype:
        return f"dtype {got.dtype} != oracle {ref.dtype}"
    if hi is not None and np.shape(hi) != ref.shape:
        hi = None
    if ref.size == 0:
        return None
    if ref.dtype.kind in "biu":
        bad = got != ref
        if hi is not None:
            bad &= np.asarray(hi).astype(ref.dtype) == ref      # elements decided by a near-tie: skip
        if bad.any():
            i = tuple(int(k) for k in np.argwhere(bad)[0])
            return f"{int(bad.sum())} of {ref.size} elements differ exactly, first at {i}: {got[i]} vs oracle {ref[i]}"
        return None
    eps = float(np.finfo(ref.dtype).eps)
    if hi is not None:                     # float64 outputs computed from float32 carry float32 error
        eps = max(eps, float(np.finfo(np.float32).eps))
    r, g = ref.astype(np.float64), got.astype(np.float64)
    rn, gn = np.isnan(r), np.isnan(g)
    h = None if hi is None else np.asarray(hi, dtype=np.float64)
    nan_bad = rn != gn
    if h is not None:
        nan_bad &= np.isnan(h) == rn
    if nan_bad.any():
        i = tuple(int(k) for k in np.argwhere(nan_bad)[0])
        return f"NaN at different positions, first at {i}: {got[i]} vs oracle {ref[i]}"
    finite = np.isfinite(r) & np.isfinite(g)
    inf_bad = ~finite & ~(rn | gn) & (r != g)
    if h is not None:
        # the naive float32 oracle overflowed where float64 did not (log(1 - sigmoid(x)) at x = 18):
        # a stabilized target may be finite there, and must then match the float64 value
        overflowed = ~np.isfinite(r) & np.isfinite(h)
        inf_bad &= ~overflowed
        rescued = overflowed & np.isfinite(g)
        if rescued.any():
            err = np.abs(g[rescued] - h[rescued])
            limit = BASE_ULPS * eps * np.maximum(1.0, np.abs(h[rescued])) * 4
            if (err > limit).any():
                i = tuple(int(k) for k in np.argwhere(rescued)[int(np.argmax(err > limit))])
                return f"where the oracle overflowed, {got[i]!r} is not the float64 value {h[i]!r}"
    if inf_bad.any():
        i = tuple(int(k) for k in np.argwhere(inf_bad)[0])
        return f"infinities differ, first at {i}: {got[i]} vs oracle {ref[i]}"
    if not finite.any():
        return None
    scale = max(1.0, float(np.max(np.abs(r[finite]))))
    atol = BASE_ULPS * eps * scale
    if h is not None:
        oracle_error = np.abs(r - h)
        oracle_error = oracle_error[np.isfinite(oracle_error)]
        if oracle_error.size:
            atol += ORACLE_ERROR_FACTOR * float(np.max(oracle_error))
    rtol = BASE_ULPS * eps
    err = np.abs(g - r)
    bad = finite & (err > atol + rtol * np.abs(r))
    if bad.any():
        i = tuple(int(k) for k in np.argwhere(bad)[0])
        worst = float(np.max(err[finite]))
        return (f"{int(bad.sum())} of {ref.size} elements off, first at {i}: {got[i]!r} vs oracle {ref[i]!r}; "
                f"max abs error {worst:.3g}, tolerance {atol:.3g} + {rtol:.2g}*|ref|")
    return None


def _graph_text(fn) -> str:
    import engine

    try:
        return engine.debugprint(fn, file=io.StringIO())
    except Exception as error:  # noqa: BLE001
        return f"(debugprint failed: {error!r})"


def _error_text(error: BaseException) -> str:
    text = f"{type(error).__name__}: {error}"
    tb = traceback.extract_tb(error.__traceback__)
    if tb:
        last = tb[-1]
        text += f"  [raised at {os.path.relpath(last.filename)}:{last.lineno}]"
    return text


def check_program(program: Program, targets: list[Target], stats: Stats | None = None) -> list[Finding]:
    """Run ``program`` on the oracle and every target; return what did not match."""
    findings: list[Finding] = []
    try:
        ns = program.build("float32")
    except Exception as error:  # noqa: BLE001
        return [Finding("build-error", "-", _error_text(error), program)]
    values = ns["values"]
    snapshot = [np.array(v, copy=True) for v in values]
    try:
        oracle = compile_program(ns, ORACLE)
        ref = _call(oracle, values)
    except Exception as error:  # noqa: BLE001
        return [Finding("oracle-error", ORACLE.label, _error_text(error), program)]
    hi = high_precision(program)
    if hi is not None and len(hi) != len(ref):
        hi = None
    if stats is not None:
        stats.outputs += len(ref)
    for target in targets:
        try:
            fn = compile_program(ns, target)
        except Exception as error:  # noqa: BLE001
            findings.append(Finding("crash", target.label, "compile: " + _error_text(error), program))
            continue
        try:
            got = _call(fn, values)
        except Exception as error:  # noqa: BLE001
            findings.append(Finding("crash", target.label, "call: " + _error_text(error), program,
                                    _graph_text(fn)))
            continue
        problems = []
        if len(got) != len(ref):
            problems.append(f"{len(got)} outputs, oracle {len(ref)}")
        for i, (r, g) in enumerate(zip(ref, got)):
            why = compare(r, g, None if hi is None else hi[i])
            if why:
                n_out = len(program.outputs)
                what = f"output {i} ({program.outputs[i]})" if i < n_out else \
                    f"gradient {i - n_out} (d cost/d {program.wrt[i - n_out]})"
                problems.append(f"{what}: {why}")
        if problems:
            detail = "; ".join(problems)
            known = known_bug(program, detail)
            findings.append(Finding(f"known:{known}" if known else "mismatch", target.label, detail, program,
                                    _graph_text(fn)))
        elif stats is not None:
            stats.compiled[target.label] += 1
    for v, s in zip(values, snapshot):
        if not np.array_equal(v, s, equal_nan=True):
            findings.append(Finding("input-mutated", "?", "a call wrote into an input array", program))
            break
    try:
        again = _call(oracle, values)
        if any(a.dtype != r.dtype or not np.array_equal(a, r, equal_nan=True) for a, r in zip(again, ref)):
            findings.append(Finding("oracle-unstable", ORACLE.label, "the oracle gave different bits when called "
                                    "again after the other compilations (graph mutated or nondeterministic)",
                                    program))
    except Exception as error:  # noqa: BLE001
        findings.append(Finding("oracle-unstable", ORACLE.label, "second call: " + _error_text(error), program))
    return findings


def fuzz_one(draw, targets: list[Target], stats: Stats, max_ops: int = 10, use_nn: bool = True) -> list[Finding]:
    try:
        program = generate(draw, max_ops=max_ops, use_nn=use_nn)
    except GeneratorError as error:
        stats.graphs += 1
        finding = Finding("build-error", "-", str(error), error.program)
        stats.findings.append(finding)
        return [finding]
    except Exception as error:  # noqa: BLE001 - a generator bug must not end a long run
        if type(error).__module__.startswith("hypothesis"):
            raise
        stats.graphs += 1
        finding = Finding("generator-crash", "-", _error_text(error))
        stats.findings.append(finding)
        return [finding]
    stats.graphs += 1      # counted once generated (hypothesis may abandon a draw half way)
    stats.ops.update(k.split(":")[0] for k in program.ops)
    findings = check_program(program, targets, stats)
    stats.findings.extend(findings)
    return findings


# -- the long run -----------------------------------------------------------------------------------

class _Timeout(Exception):
    pass


class _StopFuzz(BaseException):
    """The run's time limit passed."""


def _alarm(signum, frame):  # noqa: ARG001
    raise _Timeout()


def run(n_graphs: int, targets: list[Target], seed: int, driver: str = "hypothesis", max_ops: int = 10,
        use_nn: bool = True, time_limit: float | None = None, per_graph_timeout: int = 120,
        progress_every: int = 100, on_finding=None) -> Stats:
    stats = Stats()
    deadline = None if time_limit is None else time.perf_counter() + time_limit
    signal.signal(signal.SIGALRM, _alarm)

    def one(draw) -> None:
        if deadline is not None and time.perf_counter() > deadline:
            raise _StopFuzz
        signal.alarm(per_graph_timeout)
        try:
            found = fuzz_one(draw, targets, stats, max_ops, use_nn)
        except _Timeout:
            found = [Finding("timeout", "?", f"graph {stats.graphs} took over {per_graph_timeout} s")]
            stats.findings.extend(found)
        finally:
            signal.alarm(0)
        for f in found:
            if on_finding:
                on_finding(stats, f)
        if progress_every and stats.graphs % progress_every == 0:
            print(f"[fuzz] {stats.summary()}", flush=True)

    if driver == "random":
        try:
            for i in range(n_graphs):
                one(RandomDraw(seed * 1_000_003 + i))
        except _StopFuzz:
            pass
        return stats

    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis import seed as hseed
    from hypothesis import strategies as st

    @hseed(seed)
    @settings(max_examples=n_graphs, database=None, phases=[Phase.generate], deadline=None,
              suppress_health_check=list(HealthCheck), derandomize=False)
    @given(st.data())
    def driver_fn(data):
        one(HypothesisDraw(data))

    try:
        driver_fn()
    except (_StopFuzz, Exception):
        # hypothesis reports the stop as a failure (or as "flaky" data generation); only a
        # stop we asked for is swallowed
        if deadline is None or time.perf_counter() <= deadline:
            raise
        print(f"[fuzz] time limit of {time_limit:.0f} s reached", flush=True)
    return stats


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.fuzz", description=__doc__.split("\n\n")[0])
    parser.add_argument("--graphs", type=int, default=1000)
    parser.add_argument("--backend", action="append", help="a backend to compare (repeatable); default: all "
                        "registered (numpy means numpy with the optimizer on)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--driver", choices=("hypothesis", "random"), default="hypothesis")
    parser.add_argument("--max-ops", type=int, default=10)
    parser.add_argument("--no-nn", action="store_true", help="leave out conv2d/pool2d/lcn/softmax")
    parser.add_argument("--no-unoptimized", action="store_true", help="do not also run code generators with "
                        "optimizer=None")
    parser.add_argument("--time-limit", type=float, default=None, help="stop after this many seconds")
    parser.add_argument("--out", help="write every finding's report and reproducer to this directory")
    parser.add_argument("--show", type=int, default=5, help="print this many findings in full (default 5)")
    args = parser.parse_args(argv)

    import engine  # noqa: F401
    from backends import registered_backends

    wanted = args.backend
    if wanted:
        missing = [b for b in wanted if b not in registered_backends()]
        if missing:
            print(f"backend(s) {missing} not registered; available: {registered_backends()}", file=sys.stderr)
            return 2
    targets = default_targets(wanted, unoptimized=not args.no_unoptimized)
    print(f"[fuzz] targets: {', '.join(t.label for t in targets)}; oracle: numpy/unoptimized; "
          f"seed {args.seed}; driver {args.driver}", flush=True)
    if args.out:
        os.makedirs(args.out, exist_ok=True)
    shown = [0]

    def on_finding(stats: Stats, finding: Finding) -> None:
        index = len(stats.findings)
        print(f"[fuzz] graph {stats.graphs}: {finding.kind} on {finding.target}: {finding.detail[:300]}", flush=True)
        if args.out:
            with open(os.path.join(args.out, f"finding_{index:04d}.py"), "w") as f:
                f.write('"""' + finding.report().replace('"""', "'''").split("-- reproducer:")[0] + '"""\n')
                f.write(finding.reproducer())
        if shown[0] < args.show:
            shown[0] += 1
            print(finding.report(), flush=True)

    stats = run(args.graphs, targets, args.seed, args.driver, args.max_ops, not args.no_nn, args.time_limit,
                on_finding=on_finding)
    print(f"[fuzz] done. {stats.summary()}")
    print(f"[fuzz] op coverage: {dict(stats.ops.most_common())}")
    return 1 if stats.findings else 0


if __name__ == "__main__":
    sys.exit(main())
