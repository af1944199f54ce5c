"""Reverse-mode differentiation over the ops' ``vjp`` rules, and ``verify_grad``."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from engine.errors import DisconnectedInputError, KilnTypeError, KilnValueError, user_site
from engine.graph import Variable, ancestors, as_variable, toposort
from engine.types import is_differentiable


def grad(cost: Variable | None, wrt: Variable | Sequence[Variable], consider_constant: Sequence[Variable] = (),
         disconnected_inputs: str = "raise", known_grads: dict | None = None,
         return_disconnected: str = "zero") -> Any:
    """Gradient of the scalar ``cost`` with respect to ``wrt`` (one variable or a list).

    ``known_grads`` maps variables to gradients to start from (with or instead of ``cost``);
    the gradient does not flow through ``consider_constant`` variables. A ``wrt`` the cost does
    not depend on raises ``DisconnectedInputError`` unless ``disconnected_inputs`` is "ignore"
    (or "warn"); its gradient is then zeros (or None with ``return_disconnected="none"``).
    """
    from engine.ops.elemwise import add, ones_like, zeros_like

    single = isinstance(wrt, Variable)
    if not single and not isinstance(wrt, (list, tuple)):
        raise KilnTypeError(f"grad: wrt must be a variable or a list of variables, given {wrt!r}")
    wrt_list = [wrt] if single else list(wrt)
    known_grads = dict(known_grads or {})
    if cost is not None:
        cost = as_variable(cost)
        if cost.ndim != 0:
            raise KilnTypeError(f"grad: cost must be a scalar, given {cost.type} (created at {cost.site})")
        if not is_differentiable(cost.dtype):
            raise KilnTypeError(f"grad: cost must be a float, given {cost.type} (created at {cost.site})")
        known_grads[cost] = ones_like(cost)
    if not known_grads:
        raise KilnValueError("grad: give a cost or known_grads")
    for w in wrt_list:
        if not isinstance(w, Variable):
            raise KilnTypeError(f"grad: wrt must be symbolic variables, given {w!r}")

    roots = list(known_grads)
    blocked = {id(v) for v in consider_constant}
    reachable = ancestors(roots, consider_constant)
    # only propagate through nodes that lie between a wrt and the cost
    wanted = _descendants_of(wrt_list, roots, blocked)
    grads: dict[int, Variable] = {}
    for var, g in known_grads.items():
        g = as_variable(g)
        grads[id(var)] = g if id(var) not in grads else add(grads[id(var)], g)

    for node in reversed(toposort(roots)):
        if id(node) not in wanted:
            continue
        out_grads = [grads.get(id(o)) for o in node.outputs]
        if all(g is None for g in out_grads):
            continue
        in_grads = node.op.vjp(node, out_grads)
        if len(in_grads) != len(node.inputs):
            raise KilnValueError(f"{node.op}.vjp returned {len(in_grads)} grads for {len(node.inputs)} inputs")
        for inp, g in zip(node.inputs, in_grads):
            if g is None or id(inp) in blocked or not is_differentiable(inp.dtype):
                continue
            if g.ndim != inp.ndim or any(a is not None and b is not None and a != b
                                         for a, b in zip(g.type.shape, inp.type.shape)):
                raise KilnValueError(f"{node.op}.vjp gave a gradient of type {g.type} for input {inp.type}")
            if g.type.shape != inp.type.shape and None not in inp.type.shape:
                # the gradient has the input's type: state static dims the vjp could not infer
                # (dot(x, W) with x of unknown shape gives a (?, n) gradient for W (m, n))
                from engine.ops.shape import Reshape

                g = Reshape(inp.type.shape)(g)
            if g.dtype != inp.dtype:
                from engine.ops.elemwise import cast

                g = cast(g, inp.dtype)
            grads[id(inp)] = g if id(inp) not in grads else add(grads[id(inp)], g)

    results = []
    for w in wrt_list:
        g = grads.get(id(w))
        if g is None:
            # an integer wrt the cost depends on has a zero gradient (as Theano), not an error
            if id(w) not in reachable:
                _disconnected(w, disconnected_inputs)
            g = None if return_disconnected == "none" else zeros_like(w)
        results.append(g)
    return results[0] if single else results


def _descendants_of(wrt: list[Variable], roots: list[Variable], blocked: set[int]) -> set[int]:
    """ids of Apply nodes that depend on some ``wrt`` (only those need a vjp)."""
    wrt_ids = {id(w) for w in wrt}
    marked: set[int] = set()
    depends: set[int] = set(wrt_ids)
    for node in toposort(roots):
        if any(id(i) in depends and id(i) not in blocked for i in node.inputs):
            marked.add(id(node))
            depends.update(id(o) for o in node.outputs)
    return marked


def _disconnected(w: Variable, policy: str) -> None:
    message = (f"grad: the cost does not depend on {w!r} (created at {w.site}); pass "
               f"disconnected_inputs='ignore' to get a zero gradient (grad called at {user_site()})")
    if policy == "raise":
        raise DisconnectedInputError(message)
    if policy == "warn":
        import warnings

        warnings.warn(message, stacklevel=3)


def verify_grad(fn: Callable, inputs: Sequence[np.ndarray], n_tests: int = 2, rng: Any = None,
                eps: float | None = None, abs_tol: float | None = None, rel_tol: float | None = None,
                backend: str | None = None) -> None:
    """Check the symbolic gradient of ``fn`` against central finite differences (Theano's).

    ``fn`` takes symbolic variables (one per array in ``inputs``) and returns a symbolic
    tensor; the check projects it on a random direction so every output element counts. Step
    and tolerances follow the dtype (float32 needs a larger step and looser tolerance).
    """
    from engine.function import function
    from engine.ops import reduce as R
    from engine.ops.elemwise import mul
    from frontends.tensor import tensor

    rng = rng if rng is not None else np.random.default_rng(42)
    arrays = [np.array(a) for a in inputs]
    # float32 step and tolerances as soon as one float input is float32: a 1e-6 step would
    # round away in it, even when the other inputs (and the cost) are float64
    single = any(a.dtype == np.float32 for a in arrays)
    eps = eps or (1e-2 if single else 1e-6)
    abs_tol = abs_tol if abs_tol is not None else (3e-3 if single else 1e-6)
    rel_tol = rel_tol if rel_tol is not None else (3e-2 if single else 1e-5)

    symbols = [tensor(a.dtype.name, a.shape, name=f"input{i}") for i, a in enumerate(arrays)]
    out = as_variable(fn(*symbols))
    projection = tensor(out.dtype, out.type.shape, name="projection")
    cost = R.reduce(mul(out, projection), "sum")
    float_positions = [i for i, a in enumerate(arrays) if a.dtype.kind == "f"]
    grads = grad(cost, [symbols[i] for i in float_positions], disconnected_inputs="ignore")
    f_cost = function([*symbols, projection], cost, backend=backend, on_unused_input="ignore")
    f_grad = function([*symbols, projection], grads, backend=backend, on_unused_input="ignore")

    out_shape = np.shape(function(symbols, out, backend=backend, on_unused_input="ignore")(*arrays))
    for _ in range(n_tests):
        proj = rng.uniform(-1, 1, size=out_shape).astype(out.dtype)
        analytic = f_grad(*arrays, proj)
        for position, g in zip(float_positions, analytic):
            numeric = _numeric_grad(f_cost, arrays, proj, position, eps)
            error = np.abs(g - numeric)
            tolerance = abs_tol + rel_tol * np.abs(numeric)
            if np.any(error > tolerance):
                worst = tuple(int(i) for i in np.unravel_index(np.argmax(error - tolerance), error.shape))
                raise AssertionError(
                    f"verify_grad: gradient of input {position} (shape {arrays[position].shape}, "
                    f"{arrays[position].dtype}) differs from finite differences: max abs error "
                    f"{float(error.max()):.3g} at {worst}: analytic {float(np.asarray(g)[worst]):.6g}, "
                    f"numeric {float(numeric[worst]):.6g} (eps={eps}, abs_tol={abs_tol}, rel_tol={rel_tol})"
                )


def _numeric_grad(f_cost: Callable, arrays: list, proj: np.ndarray, position: int, eps: float) -> np.ndarray:
    base = arrays[position]
    # differences are taken in float64 so the step itself does not round away
    work = base.astype(np.float64)
    numeric = np.zeros_like(work)
    flat, numeric_flat = work.reshape(-1), numeric.reshape(-1)
    for k in range(flat.size):
        original = flat[k]
        values = []
        for delta in (eps, -eps):
            flat[k] = original + delta
            args = list(arrays)
            args[position] = work.astype(base.dtype)
            values.append(float(f_cost(*args, proj)))
        flat[k] = original
        numeric_flat[k] = (values[0] - values[1]) / (2 * eps)
    return numeric
