"""The optimizer: ONE ordered list of named passes.

    PASSES = [(name, matcher_or_function, runs_for), ...]

``runs_for`` is "all" (every backend, the numpy oracle included: the graph must give finite
answers where the naive one overflows) or "fuse" (code generators only: ``fuse=True``). A pass
is a ``PatternMatcher`` applied to a fixed point with ``graph_rewrite``, or a function
``(outputs, ctx) -> outputs`` for whole-graph transforms. ``optimize`` runs them in this order
and records each pass's time in ``fgraph.profile["optimize.<name>"]``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from engine.debug import debug_log
from engine.graph import Variable, toposort
from engine.rewrite.pattern import Match, Pat, PatternMatcher, RewriteContext, Rule, graph_rewrite

__all__ = ["PASSES", "Match", "Pat", "PatternMatcher", "RewriteContext", "Rule", "graph_rewrite", "optimize",
           "rewrite_outputs"]

#: sweeps per pass (each sweep is one bottom-up traversal; a pass stops early at a fixed point)
MAX_SWEEPS = 6


def _passes() -> list[tuple[str, object, str]]:
    from engine.rewrite.canonicalize import canonicalize
    from engine.rewrite.collapse import collapse
    from engine.rewrite.fuse import fuse_elementwise, fuse_multi_output
    from engine.rewrite.specialize import gemm_bernoulli, specialize
    from engine.rewrite.stabilize import stabilize

    return [
        ("canonicalize", canonicalize, "all"),
        ("stabilize", canonicalize + stabilize(), "all"),
        ("specialize", canonicalize + specialize(), "fuse"),
        ("gemm_bernoulli", gemm_bernoulli, "fuse"),
        ("fuse", fuse_elementwise(), "fuse"),
        ("fuse_multi_output", fuse_multi_output, "fuse"),
        ("collapse", collapse(), "fuse"),
    ]


#: THE ordered list of passes: (name, PatternMatcher or function, "all" | "fuse")
PASSES: list[tuple[str, object, str]] = _passes()


def passes() -> list[tuple[str, object, str]]:
    return PASSES


def rewrite_outputs(outputs: Sequence[Variable], fuse: bool = False, profile: dict | None = None,
                    only: Sequence[str] | None = None, ctx: RewriteContext | None = None) -> list[Variable]:
    """The optimized copies of ``outputs`` (the user's graph is left untouched)."""
    ctx = ctx or RewriteContext(budget=200 * (len(toposort(outputs)) + 50))
    outputs = list(outputs)
    outputs = _sharpen_inputs(outputs, ctx)
    for name, step, runs_for in passes():
        if (runs_for == "fuse" and not fuse) or (only is not None and name not in only):
            continue
        start = time.perf_counter()
        if isinstance(step, PatternMatcher):
            outputs = graph_rewrite(outputs, step, MAX_SWEEPS, ctx)
        else:
            outputs = _call(step, outputs, ctx)
        if profile is not None:
            profile[f"optimize.{name}"] = time.perf_counter() - start
    return outputs


def _sharpen_inputs(outputs: list[Variable], ctx: RewriteContext) -> list[Variable]:
    """Dims the ops force (``unify_dims``: a T.matrix multiplied by a (784, 500) matrix has 784
    columns) become static: each such input is read through a Reshape view stating them, so
    every rule sees the static shape (a wrong input still fails, at that Reshape)."""
    from engine.graph import Constant, clone_replace, graph_inputs
    from engine.ops.shape import Reshape, ShapeOf
    from engine.rewrite.shapes import WHY, unify_dims

    if not unify_dims(outputs, ctx.shape_cache):
        return outputs
    replace = {}
    for v in graph_inputs(outputs):
        if isinstance(v, Constant) or None not in v.type.shape:
            continue
        dims = ctx.shape(v)
        if all(isinstance(d, int) == (s is not None) for d, s in zip(dims, v.type.shape)):
            continue
        pattern = [d if isinstance(d, int) else None for d in dims]
        sharp = Reshape(pattern)(v, *[ShapeOf(k)(v) for k, d in enumerate(pattern) if d is None])
        # the function checks these dims before anything runs, naming the op (e.g. the dot) and
        # the line that needs them; should the Reshape still fail, it names that line too
        why = [ctx.shape_cache[WHY].get(("in", v, k)) for k in range(v.ndim)]
        for k, (size, reason) in enumerate(zip(pattern, why)):
            if size is not None and v.type.shape[k] is None:
                op_name, site = reason or ("an op", v.site)
                ctx.requirements.append((v, k, size, op_name, site))
        sharp.site = sharp.owner.site = next((r[1] for r in why if r), v.site)
        replace[v] = sharp
    if not replace:
        return outputs
    return clone_replace(outputs, replace)


def _call(step: Callable, outputs: list[Variable], ctx: RewriteContext) -> list[Variable]:
    return list(step(outputs, ctx))


def optimize(fgraph, fuse: bool = False) -> None:
    """Rewrite ``fgraph.outputs`` in place through every pass, in order."""
    before = len(toposort(fgraph.outputs))
    ctx = RewriteContext(budget=200 * (before + 50))
    fgraph.outputs[:] = rewrite_outputs(fgraph.outputs, fuse, fgraph.profile, ctx=ctx)
    after = len(toposort(fgraph.outputs))
    fgraph.rewrite_stats = {"nodes_before": before, "nodes_after": after, "fired": dict(ctx.fired)}
    fgraph.requirements = list(ctx.requirements)
    debug_log("rewrites", f"optimize(fuse={fuse}): {before} -> {after} nodes; fired {ctx.fired}")
