"""Every run-time shape check of a compiled schedule, before any kernel runs (issue 8).

A code-generating backend runs its nodes in order, and each node's lowering checks its input
shapes (``Lowered.output_shapes`` and views raise a ``KilnShapeError`` naming the node) just
before that node's kernels. Without a first pass, the kernels of earlier nodes have already
run when a later node finds a mismatch. ``ShapeChecker.check(plans, values)`` walks the whole
schedule first with stand-ins instead of results:

* a result not yet computed is a ``ShapeOnly`` array: the right shape and dtype, no memory
  (zero strides), and any read of its values raises ``ValueUnknown`` (int(), .min(), ufuncs,
  iteration...), so a check never runs on made-up numbers;
* values that decide shapes are real: constants, small integer / 0-d inputs (``n`` of
  ``T.ones((n,))``), what views compute from shapes alone (``ShapeOf``), and small integer
  results of nodes whose inputs are all real (shape arithmetic), which the numpy oracle
  evaluates on the host;
* a node whose check needs a value that is not known (an index array a kernel computes) is
  skipped, and so is everything downstream of it: those keep their per-node check at run time.

The outcome depends only on the input shapes and the small values, so it is memoized on them:
a repeated call costs one tuple comparison (``x + 1`` on 10 floats: no measurable overhead).
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict

import numpy as np

from engine.errors import KilnError

#: inputs at most this big whose dtype is integer/bool (or 0-d) are real values in the check
SMALL_VALUE = 64
#: integer results at most this big of nodes with real inputs are evaluated by the numpy oracle
SMALL_RESULT = 4096
#: distinct input signatures remembered per function
MEMO_SIZE = 16
_BUFFER = np.zeros(16, np.uint8)  # what every stand-in "points to" (zero strides: one element)


class ValueUnknown(Exception):
    """A check read a value of a result that is not computed yet."""


def _unknown(*args, **kwargs):
    raise ValueUnknown


#: numpy functions that only rearrange shapes (views): allowed on stand-ins
_SHAPE_FUNCTIONS = {np.reshape, np.transpose, np.squeeze, np.expand_dims, np.broadcast_to, np.moveaxis,
                    np.swapaxes, np.shape, np.ndim, np.size, np.result_type, np.may_share_memory,
                    np.shares_memory, np.atleast_1d, np.ravel}


class ShapeOnly(np.ndarray):
    """A stand-in for a result: shape and dtype only; reading a value raises ``ValueUnknown``."""

    __int__ = __float__ = __index__ = __bool__ = __complex__ = __iter__ = _unknown
    item = tolist = tobytes = min = max = sum = prod = any = all = argmax = argmin = mean = _unknown
    astype = copy = _unknown

    def __getitem__(self, key):
        result = super().__getitem__(key)
        if not isinstance(result, np.ndarray):
            raise ValueUnknown
        return result

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        raise ValueUnknown

    def __array_function__(self, func, types, args, kwargs):
        if func not in _SHAPE_FUNCTIONS:
            raise ValueUnknown
        return super().__array_function__(func, types, args, kwargs)


_STAND_INS: dict = {}  # (shape, dtype) -> a read-only ShapeOnly, shared (it holds no data)


def shape_only(shape: tuple, dtype) -> ShapeOnly:
    key = (tuple(shape), dtype)
    found = _STAND_INS.get(key)
    if found is None:
        dt = np.dtype(dtype)
        found = np.ndarray.__new__(ShapeOnly, tuple(int(d) for d in shape), dt, _BUFFER[:dt.itemsize], 0,
                                   (0,) * len(key[0]))
        found.flags.writeable = False
        if len(_STAND_INS) > 4096:
            _STAND_INS.clear()
        _STAND_INS[key] = found
    return found


def _is_value_dtype(dtype) -> bool:
    return dtype.kind in "biu"


def _small_value(value) -> bool:
    return type(value) is np.ndarray and value.size <= SMALL_VALUE and \
        (value.ndim == 0 or _is_value_dtype(value.dtype))


def _stand_in(value, user: bool):
    """An input as the check sees it: a function input's small integer / 0-d value as it is,
    everything else (shared values too: a random state changes every call) shape-only."""
    if user and _small_value(value):
        return value
    return shape_only(value.shape, value.dtype)


class ShapeChecker:
    """The first pass of a compiled graph's ``run``; one per compiled function."""

    def __init__(self, plans: list, init_values: list, input_slots: list, fgraph) -> None:
        self.plans = plans
        self.init_values = init_values
        self.input_slots = input_slots
        self.n_user = fgraph.n_user_inputs
        #: the function inputs whose small values may decide shapes (integer, bool or 0-d)
        self.value_inputs = [k for k, v in enumerate(fgraph.inputs[:self.n_user])
                             if v.ndim == 0 or _is_value_dtype(np.dtype(v.dtype))]
        #: per plan: may its results be computed on the host when its inputs are real (integer
        #: results only, never a random draw)
        self._steps = [(p, all(_is_value_dtype(d) for d in p.dtypes) and type(p.node.op).__name__ != "RandomVariable")
                       for p in plans]
        #: per node: what it gave for the input shapes (and small values) seen before, so that
        #: a call whose values differ (a minibatch index) redoes only the nodes that read them
        self._node_memos: list[dict] = [{} for _ in plans]
        self._memo: OrderedDict = OrderedDict()
        self._lock = threading.Lock()

    def signature(self, arrays: list) -> tuple:
        """What the outcome depends on: every input's shape, the small values of function inputs."""
        key = [a.shape for a in arrays]
        for k in self.value_inputs:
            if arrays[k].size <= SMALL_VALUE:
                key.append(arrays[k].tobytes())
        return tuple(key)

    def check(self, arrays: list) -> None:
        """Raise the first ``KilnShapeError`` any node would raise on these inputs, before any
        kernel runs; return quietly when every check that does not need a computed value passes."""
        signature = self.signature(arrays)
        if signature in self._memo:
            return
        vals = list(self.init_values)
        for k, (slot, a) in enumerate(zip(self.input_slots, arrays)):
            vals[slot] = _stand_in(a, k < self.n_user)
        unknown: set = set()  # slots downstream of a node the pass could not follow
        for (plan, value_results), memo in zip(self._steps, self._node_memos):
            if unknown and not unknown.isdisjoint(plan.in_slots):
                unknown.update(plan.out_slots)
                continue
            ins = [vals[s] for s in plan.in_slots]
            node_key = _node_key(ins)
            outs = memo.get(node_key) if node_key is not None else None
            if outs is None:
                try:
                    outs = _outputs(plan, ins, value_results)
                except KilnError:
                    raise
                except ValueUnknown:
                    outs = _value_free_outputs(plan, ins)
                except Exception:  # noqa: BLE001 - not a check: the node's own run reports it in context
                    outs = _UNKNOWN
                if node_key is not None:
                    if len(memo) >= MEMO_SIZE:
                        memo.clear()
                    memo[node_key] = outs
            if outs is _UNKNOWN:
                unknown.update(plan.out_slots)
                continue
            for s, v in zip(plan.out_slots, outs):
                vals[s] = v
        with self._lock:
            self._memo[signature] = True
            if len(self._memo) > MEMO_SIZE:
                self._memo.popitem(last=False)


_UNKNOWN = "unknown"  # a node's memoized outcome: the pass cannot follow it


def _node_key(ins: list) -> tuple | None:
    """What a node's outcome depends on: its inputs' shapes and dtypes, and the bytes of real
    values (None, not memoized, when a real value is large)."""
    key = []
    for v in ins:
        if type(v) is ShapeOnly:
            key.append((v.shape, v.dtype.char))
        elif v.size <= SMALL_VALUE:
            key.append((v.tobytes(), v.shape, v.dtype.char))
        else:
            return None
    return tuple(key)


def _real(values: list) -> bool:
    return not any(isinstance(v, ShapeOnly) for v in values)


def _outputs(plan, ins: list, value_results: bool) -> list:
    node = plan.node
    real = _real(ins)
    if plan.host:
        if not real:
            raise ValueUnknown
        return _oracle(node, ins)
    low = plan.lowered
    if low.view is not None:
        view = low.view(ins)
        if view is not None:
            views = view if isinstance(view, tuple) else (view,)
            # a view of stand-ins that shares no memory with them was computed from their shapes
            # alone (ShapeOf): a real value
            return [v if real or not any(np.may_share_memory(v, i) for i in ins if isinstance(i, ShapeOnly))
                    else shape_only(np.shape(v), v.dtype) for v in (np.asarray(x) for x in views)]
        if low.output_shapes is None:
            raise ValueUnknown
    shapes = low.output_shapes(ins)
    if real and value_results and sum(math.prod(s) for s in shapes) <= SMALL_RESULT:
        return _oracle(node, ins)
    return [shape_only(s, d) for s, d in zip(shapes, plan.dtypes)]


#: output shapes of ops whose lowering reads index values (a bounds check) before it gives
#: shapes that depend on shapes only: the pass goes on past them (their own check runs later)
_VALUE_FREE_SHAPES = {
    "AdvancedSubtensor": lambda ins: np.broadcast_shapes(*[i.shape for i in ins[1:]]) + ins[0].shape[len(ins) - 1:],
    "AdvancedIncSubtensor": lambda ins: ins[0].shape,
}


def _value_free_outputs(plan, ins: list):
    rule = _VALUE_FREE_SHAPES.get(type(plan.node.op).__name__)
    if rule is None or len(plan.dtypes) != 1:
        return _UNKNOWN
    try:
        return [shape_only(rule(ins), plan.dtypes[0])]
    except ValueError:  # indices that do not broadcast: the node reports it when it runs
        return _UNKNOWN


def _oracle(node, ins: list) -> list:
    from backends.numpy.table import run_node

    return [np.asarray(v) for v in run_node(node, ins)]
