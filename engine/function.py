"""``engine.function``: inputs, outputs, updates and givens -> a compiled, callable function.

The pipeline: substitute givens, add shared variables' default updates, optimize (the rewrite
passes; ``optimizer=None`` runs the graph exactly as written), hand the ``FunctionGraph`` to the
backend, and wrap the result in a thin ``Function`` that validates arguments, runs, and commits
updates only after every check passed.
"""

from __future__ import annotations

import threading
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from engine.config import config
from engine.errors import KilnError, KilnShapeError, KilnTypeError, KilnValueError, user_site, with_site
from engine.graph import Constant, SharedVariable, Variable, as_variable, clone_replace, graph_inputs
from engine.types import TensorType, as_dtype, format_shape, is_python_data


def shared(value: Any, name: str | None = None, borrow: bool = False, shape: Sequence | None = None,
           dtype: str | None = None) -> SharedVariable:
    """A variable whose value persists between calls (Theano's ``shared``).

    The static shape is the value's, unless ``shape`` declares some dims ``None`` so that
    ``set_value`` may change them.
    """
    array = np.asarray(value, dtype=dtype)
    if dtype is None and array.dtype == np.float64 and is_python_data(value):
        array = array.astype(config.floatX)  # Python floats (also in lists) are floatX; numpy arrays keep theirs
    array = array if borrow and array is value else np.array(array, copy=True, order="C")
    tensor_type = TensorType(as_dtype(array.dtype), tuple(array.shape) if shape is None else tuple(shape))
    if not tensor_type.accepts_shape(array.shape):
        raise KilnShapeError(f"shared {name!r}: value of shape {array.shape} does not fit shape {shape}")
    return SharedVariable(array, tensor_type, name=name, site=user_site())


@dataclass
class FunctionGraph:
    """What a backend compiles: inputs (user inputs, then shared variables) -> outputs (user
    outputs, then update values)."""

    inputs: list[Variable]
    outputs: list[Variable]
    n_user_inputs: int
    n_user_outputs: int
    shared: list[SharedVariable]
    updated: list[SharedVariable]
    profile: dict = field(default_factory=dict)
    #: input dims the ops force, found by the optimizer: (input, axis, size, op name, site)
    requirements: list = field(default_factory=list)


def _normalize_updates(updates: Any) -> list[tuple[SharedVariable, Variable]]:
    if updates is None:
        return []
    pairs = list(updates.items()) if isinstance(updates, dict) else list(updates)
    result, seen = [], set()
    for target, value in pairs:
        if not isinstance(target, SharedVariable):
            raise KilnTypeError(f"updates: {target!r} is not a shared variable; only shared variables can be updated")
        if id(target) in seen:
            raise KilnValueError(f"updates: shared variable {target.name!r} is updated twice")
        seen.add(id(target))
        if value is None:
            raise KilnTypeError(f"update of shared variable {target.name!r} (declared at {target.site}) is None")
        if not isinstance(value, Variable):
            # Python numbers take the variable's dtype; numpy arrays keep theirs (and are checked)
            value = as_variable(value, dtype=target.dtype if is_python_data(value) else None)
        if value.dtype != target.dtype:
            raise KilnTypeError(
                f"update of shared variable {target.name!r} (declared at {target.site}): expected dtype "
                f"{target.dtype}, given an expression of dtype {value.dtype} (created at {value.site}); "
                f"updates never change dtype: cast the expression")
        if value.ndim != target.ndim or not _compatible(target.type.shape, value.type.shape):
            raise KilnShapeError(
                f"update of shared variable {target.name!r} (declared at {target.site}): expected shape "
                f"{format_shape(target.type.shape)}, given {value.type} (created at {value.site})")
        result.append((target, value))
    return result


def _compatible(a: tuple, b: tuple) -> bool:
    return all(x is None or y is None or x == y for x, y in zip(a, b))


def _add_default_updates(outputs: list[Variable], updates: list) -> list:
    updated = {id(s) for s, _ in updates}
    changed = True
    while changed:
        changed = False
        for var in graph_inputs(outputs + [v for _, v in updates]):
            if isinstance(var, SharedVariable) and var.default_update is not None and id(var) not in updated:
                updates.append((var, var.default_update))
                updated.add(id(var))
                changed = True
    return updates


def build_function_graph(inputs: list[Variable], outputs: list[Variable], updates: list,
                         givens: Any, no_default_updates: bool) -> FunctionGraph:
    # default updates first: a random state's update may read a variable that givens replace
    if not no_default_updates:
        updates = _add_default_updates(outputs, updates)
    if givens:
        pairs = list(givens.items()) if isinstance(givens, dict) else list(givens)
        replace = {}
        for old, new in pairs:
            new = as_variable(new)
            if old.type.dtype != new.dtype or old.ndim != new.ndim or not _compatible(old.type.shape, new.type.shape):
                raise KilnTypeError(f"givens: {old!r} (declared at {old.site}) is {old.type} but its replacement is "
                                    f"{new.type} (created at {new.site})")
            replace[old] = new
        targets = [v for _, v in updates]
        cloned = clone_replace(outputs + targets, replace)
        outputs = cloned[:len(outputs)]
        updates = [(s, v) for (s, _), v in zip(updates, cloned[len(outputs):])]
    all_outputs = outputs + [v for _, v in updates]
    shared_vars = [v for v in graph_inputs(all_outputs) if isinstance(v, SharedVariable)]
    for s, _ in updates:
        if s not in shared_vars:
            shared_vars.append(s)
    return FunctionGraph(list(inputs) + shared_vars, all_outputs, len(inputs), len(outputs),
                         shared_vars, [s for s, _ in updates])


class Function:
    """A compiled function. Call it with one array per input (positionally or by name)."""

    def __init__(self, fgraph: FunctionGraph, compiled: Any, backend: str, single_output: bool,
                 allow_input_downcast: bool, sites: list[str], names: list[str]) -> None:
        self.fgraph = fgraph
        self.compiled = compiled
        self.backend = backend
        self.single_output = single_output
        self.allow_input_downcast = allow_input_downcast
        self.input_types = [v.type for v in fgraph.inputs[:fgraph.n_user_inputs]]
        self.input_names = names
        self.input_sites = sites
        self.shared = fgraph.shared
        self.updated_index = [fgraph.shared.index(s) for s in fgraph.updated]
        self.compile_profile = fgraph.profile
        self._requirements = _input_requirements(fgraph, names)
        # one call at a time: a call reads shared values, runs on pooled buffers and commits
        # updates, so concurrent calls from several threads are serialized (safe, not parallel)
        self._call_lock = threading.Lock()

    @property
    def kernels(self) -> list:
        return list(getattr(self.compiled, "kernels", []))

    def profile(self) -> list:
        """Per-kernel calls, time, GB/s and GFLOP/s (collected under KILN_DEBUG=timing or once
        ``f.compiled.profiling = True``); empty for backends that run no kernels."""
        collect = getattr(self.compiled, "profile", None)
        return collect() if collect else []

    def __repr__(self) -> str:
        return f"<kiln Function({', '.join(self.input_names)}) on {self.backend}>"

    def _arguments(self, args: tuple, kwargs: dict) -> list:
        n = len(self.input_types)
        if kwargs:
            args = list(args) + [None] * (n - len(args))
            for key, value in kwargs.items():
                if key not in self.input_names:
                    raise KilnTypeError(
                        f"function got an unexpected keyword argument {key!r}; inputs are {self.input_names}")
                args[self.input_names.index(key)] = value
            if any(a is None for a in args):
                missing = [self.input_names[i] for i, a in enumerate(args) if a is None]
                raise KilnTypeError(f"function is missing inputs {missing}")
        if len(args) != n:
            raise KilnTypeError(f"function expects {n} argument{'s' if n != 1 else ''} "
                                f"({', '.join(self.input_names)}), given {len(args)}")
        return [t.filter(a, name, self.allow_input_downcast, site)
                for t, a, name, site in zip(self.input_types, args, self.input_names, self.input_sites)]

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        try:
            with self._call_lock:
                return self._call(args, kwargs)
        except KilnError as error:
            # every call-time error also names the caller's line
            raise with_site(error, user_site(), "in the call at") from error.__cause__

    def _call(self, args: tuple, kwargs: dict) -> Any:
        arrays = self._arguments(args, kwargs)
        if self.shared:
            # a device-resident backend gets its own device values back unread (no download)
            resident = getattr(self.compiled, "keeps_device_values", False)
            arrays += [s._value if resident else s.value for s in self.shared]
        if self._requirements:
            _check_requirements(self._requirements, arrays)
        results = self.compiled.run(arrays)
        owned = [a for a in arrays if isinstance(a, np.ndarray)]
        n_out = self.fgraph.n_user_outputs
        outputs = _fresh(results[:n_out], owned)
        if len(results) > n_out:
            self._update(results[n_out:], owned + outputs)
        return outputs[0] if self.single_output else outputs

    def _update(self, new_values: list, owned: list) -> None:
        """Give the shared variables their new values, checked first (all or nothing)."""
        for target, value in zip(self.fgraph.updated, new_values):
            if not target.type.accepts_shape(np.shape(value)):
                raise KilnShapeError(f"update of shared variable {target.name!r} (declared at {target.site}): "
                                     f"the new value has shape {format_shape(np.shape(value))}, the variable's "
                                     f"type is {target.type}; nothing was updated")
        host = [k for k, v in enumerate(new_values) if not hasattr(v, "to_host")]
        for k, v in zip(host, _fresh([new_values[k] for k in host], owned)):
            new_values[k] = v
        for target, value in zip(self.fgraph.updated, new_values):
            target._value = value


def _input_requirements(fgraph: FunctionGraph, names: list[str]) -> list[tuple]:
    """(position among the run's arrays, label, declared shape, axis, size, op name, site) for
    each dim an op forces on an input (a T.matrix multiplied by a (3, 5) matrix has 3 columns)."""
    position = {id(v): i for i, v in enumerate(fgraph.inputs)}
    result = []
    for v, axis, size, op_name, site in fgraph.requirements:
        i = position.get(id(v))
        if i is None:
            continue
        label = f"input {names[i]!r}" if i < fgraph.n_user_inputs else f"shared variable {v.name or '?'!r}"
        result.append((i, label, v.type.shape, axis, size, op_name, site))
    return result


def _check_requirements(requirements: list[tuple], arrays: list) -> None:
    """Raise before anything runs when an input's dim differs from the one an op needs: the
    error names the input and the op's line (the optimizer's internal Reshape never shows)."""
    for i, label, declared, axis, size, op_name, site in requirements:
        shape = arrays[i].shape
        if shape[axis] != size:
            expected = tuple(size if k == axis else d for k, d in enumerate(declared))
            raise KilnShapeError(f"{label}: expected shape {format_shape(expected)}, given {format_shape(shape)}: "
                                 f"the {op_name} created at {site} needs size {size} along axis {axis}")


def _fresh(values: list, owned: list) -> list:
    """Copies of results that alias memory the caller or Kiln owns, so callers own outputs."""
    result = []
    taken = {id(o) for o in owned}
    for value in values:
        if type(value) is not np.ndarray:
            value = np.asarray(value)
        # also copy read-only results (a constant's frozen array) so the caller can write to them.
        # An array that owns its memory can only alias another by being that very object (a
        # view owns nothing, and views are always copied: they may look into Kiln's buffers)
        flags = value.flags
        if not flags.owndata or not flags.writeable or id(value) in taken:
            value = value.copy()
        taken.add(id(value))
        result.append(value)
    return result


def function(inputs: Sequence[Variable], outputs: Any = None, updates: Any = None, givens: Any = None,
             backend: str | None = None, mode: str | None = None, optimizer: str | None = "default",
             on_unused_input: str = "raise", allow_input_downcast: bool = False,
             no_default_updates: bool = False, name: str | None = None) -> Function:
    """Compile ``inputs -> outputs`` (one variable or a list), applying ``updates`` after each call."""
    start = time.perf_counter()
    if isinstance(inputs, Variable):
        raise KilnTypeError(f"function: inputs must be a list of variables, given the variable {inputs!r}; "
                            f"write function([x], ...)")
    inputs = list(inputs)
    for i, v in enumerate(inputs):
        if not isinstance(v, Variable) or isinstance(v, (Constant, SharedVariable)) or v.owner is not None:
            raise KilnTypeError(f"function input {i} ({v!r}) must be a symbolic input variable made with "
                                f"T.scalar / T.matrix / ...; shared variables and expressions cannot be inputs")
    if len({id(v) for v in inputs}) != len(inputs):
        raise KilnValueError("function: the same variable is given twice as an input")
    single = outputs is not None and not isinstance(outputs, (list, tuple))
    out_list = [] if outputs is None else ([outputs] if single else list(outputs))
    out_list = [as_variable(o) for o in out_list]
    update_pairs = _normalize_updates(updates)

    fgraph = build_function_graph(inputs, out_list, update_pairs, givens, no_default_updates)
    _check_missing(inputs, fgraph)
    _check_unused(inputs, fgraph, on_unused_input)
    backend_name = backend or config.resolved_backend()
    from backends import get_backend

    backend_impl = get_backend(backend_name)
    fgraph.profile["graph"] = time.perf_counter() - start
    if optimizer is not None:
        from engine.graph_cache import optimize_cached

        optimize_cached(fgraph, fuse=backend_impl.fuses)
    fgraph.profile["optimize"] = time.perf_counter() - start - fgraph.profile["graph"]
    before = time.perf_counter()
    compiled = backend_impl.compile(fgraph, {"mode": mode, "name": name})
    fgraph.profile["backend"] = time.perf_counter() - before
    names = [v.name or f"input{i}" for i, v in enumerate(inputs)]
    return Function(fgraph, compiled, backend_name, single, allow_input_downcast,
                    [v.site for v in inputs], names)


def _check_missing(inputs: list[Variable], fgraph: FunctionGraph) -> None:
    """Every symbolic input the outputs depend on must be an input (or replaced by givens)."""
    given = {id(v) for v in inputs}
    for v in graph_inputs(fgraph.outputs):
        if not isinstance(v, (Constant, SharedVariable)) and id(v) not in given:
            names = ", ".join(i.name or repr(i) for i in inputs) or "none"
            raise KilnValueError(
                f"function: the outputs depend on {v.name or repr(v)} ({v.type}, declared at {v.site}), which is "
                f"not among the function's inputs ({names}); add it to the inputs or replace it with givens")


def _check_unused(inputs: list[Variable], fgraph: FunctionGraph, policy: str) -> None:
    if policy not in ("raise", "warn", "ignore"):
        raise KilnValueError(f"on_unused_input must be 'raise', 'warn' or 'ignore', given {policy!r}")
    used = {id(v) for v in graph_inputs(fgraph.outputs)}
    for i, v in enumerate(inputs):
        if id(v) not in used and policy != "ignore":
            message = (f"function input {i} ({v.name or v!r}, declared at {v.site}) is not used to compute "
                       f"any output; pass on_unused_input='ignore' (or 'warn') if that is intended")
            if policy == "raise":
                raise KilnValueError(message)
            warnings.warn(message, stacklevel=3)
