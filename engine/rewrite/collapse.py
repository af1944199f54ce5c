"""collapse (code generators only): elementwise ops and sums over feature maps with short rows
run over their trailing axes merged into one.

Why: a kernel vectorizes its innermost loop only, 16 lanes at a time; a 12x12 or 4x4 map
(LeNet after pooling) leaves that loop empty and every element takes the scalar tail (the
bias + tanh after LeNet's pools ran scalar tanh: 4 ms of a 60 ms step). Merged, the row is
144 or 16 elements long and runs in whole vectors.

Axes merge when, in every input, they are all static and either all 1 (broadcast) or all
equal to the output's. Inputs are read through a ``Reshape`` and the result reshaped back:
both are views for the contiguous arrays kernels produce (an input that is a strided view is
left alone, a Reshape of it would copy).
"""

from __future__ import annotations

from engine.graph import Variable
from engine.ops.elemwise import Elemwise
from engine.ops.fused import FusedElemwise
from engine.ops.reduce import Reduce
from engine.ops.shape import DimShuffle, Reshape
from engine.rewrite.pattern import Match, Pat, PatternMatcher, Rule

#: merge only when the innermost axis is shorter than this (a longer row already vectorizes),
#: and only maps of rank >= 3 (images, feature maps; a matrix keeps its rows)
SHORT_ROW = 64


def _contiguous_source(v: Variable) -> bool:
    """Whether ``v`` is (as far as the graph tells) a contiguous array, so a Reshape is a view:
    kernels' outputs, shared values and inputs are; a transposing DimShuffle or any other view
    op may not be."""
    owner = v.owner
    if owner is None:
        return True
    if isinstance(owner.op, DimShuffle):
        kept = [a for a in owner.op.new_order if a != "x"]
        return kept == sorted(kept) and _contiguous_source(owner.inputs[0])
    if isinstance(owner.op, Reshape):
        return _contiguous_source(owner.inputs[0])
    return not type(owner.op).__name__.endswith(("Subtensor", "BroadcastLike", "Alloc"))


def _kind(dims: tuple, out: tuple, lo: int, hi: int) -> str | None:
    """'b' if axes lo..hi of ``dims`` are all 1 (broadcast), 'f' if all equal the output's."""
    part, want = dims[lo:hi], out[lo:hi]
    if any(d is None for d in part):
        return None
    if all(d == 1 for d in part):
        return "b"
    return "f" if part == want else None


def _run(shapes: list[tuple], out: tuple) -> int:
    """The first axis of the longest trailing run (ending at the last axis) that merges, or
    len(out) - 1 when none does."""
    last = len(out) - 1
    lo = last
    while lo > 0 and out[lo - 1] is not None and all(_kind(s, out, lo - 1, last + 1) for s in shapes):
        lo -= 1
    return lo


def _merged(dims: tuple, lo: int) -> tuple:
    """``dims`` with axes lo.. merged; -1 for the one unknown dim (at most one allowed)."""
    size = 1
    for d in dims[lo:]:
        size *= d
    head = tuple(-1 if d is None else d for d in dims[:lo])
    return head + (size,)


def _reshape(v: Variable, pattern: tuple) -> Variable:
    return Reshape(pattern)(v)


def _short_rows(dims: tuple) -> bool:
    """A map worth merging: rank >= 3, a static last axis shorter than SHORT_ROW, at most one
    unknown dim (the merged shape's -1) and no empty one."""
    return len(dims) >= 3 and dims[-1] is not None and dims[-1] < SHORT_ROW and dims.count(None) <= 1 \
        and 0 not in dims


def _plan(inputs: list[Variable], out: tuple) -> int | None:
    """The first merged axis, or None when merging is not possible or not worth it."""
    if not _short_rows(out):
        return None
    shapes = [_padded(v, len(out)) for v in inputs]
    if any(s.count(None) > 1 for s in shapes):
        return None
    lo = _run(shapes, out)
    if lo == len(out) - 1:
        return None
    if not all(v.ndim == 0 or _contiguous_source(v) for v in inputs):
        return None
    return lo


def _padded(v: Variable, rank: int) -> tuple:
    return (1,) * (rank - v.ndim) + tuple(v.type.shape)


def _collapse_elemwise(m: Match):
    node = m.node
    out = node.outputs[0].type.shape
    if any(o.type.shape != out for o in node.outputs):
        return None
    lo = _plan(list(node.inputs), out)
    if lo is None:
        return None
    rank = len(out)
    new_inputs = [v if v.ndim == 0 else _reshape(v, _merged(_padded(v, rank), lo)) for v in node.inputs]
    new = node.op(*new_inputs)
    new = new if isinstance(new, (list, tuple)) else [new]
    back = tuple(-1 if d is None else d for d in out)
    results = [_reshape(o, back) for o in new]
    return results if len(node.outputs) > 1 else results[0]


def _collapse_reduce(m: Match):
    """Merge a trailing run of reduced axes: sum over (0, 2, 3) of an NCHW map -> over (0, 2)."""
    node = m.node
    x = node.inputs[0]
    dims, axes = tuple(x.type.shape), tuple(sorted(node.op.axes))
    if not _short_rows(dims):
        return None
    last = x.ndim - 1
    if last not in axes:
        return None
    lo = last
    while lo - 1 in axes and dims[lo - 1] is not None:
        lo -= 1
    if lo == last or not _contiguous_source(x):
        return None
    new_axes = tuple(a for a in axes if a < lo) + (lo,)
    return Reduce(node.op.reducer, new_axes)(_reshape(x, _merged(dims, lo)))


def collapse() -> PatternMatcher:
    return PatternMatcher([
        Rule("collapse_elemwise", Pat((Elemwise, FusedElemwise)), _collapse_elemwise),
        Rule("collapse_reduce", Pat(Reduce), _collapse_reduce),
    ])
