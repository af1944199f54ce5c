"""Update builders: ``sgd``, ``momentum``, ``adam`` (Lasagne-style).

Each takes a scalar cost (differentiated with ``engine.grad``) or a list of gradients, the
parameters (shared variables) and hyper-parameters, and returns a list of
``(shared_variable, new_value)`` pairs to pass as ``engine.function(..., updates=...)``::

    updates = U.adam(cost, params, learning_rate=1e-3)
    train = engine.function([x, y], cost, updates=updates)

Every new value keeps its parameter's dtype: Python-number hyper-parameters are weak (a
float32 parameter stays float32) and symbolic ones are cast to the parameter's dtype. The
optimizer state (velocities, moments, the step count) is kept in new shared variables.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

import engine
from engine.graph import Variable
from frontends import tensor as T

__all__ = ["adam", "get_or_compute_grads", "momentum", "nesterov_momentum", "sgd"]


def get_or_compute_grads(cost_or_grads: Any, params: Sequence[Variable]) -> list[Variable]:
    """``engine.grad(cost, params)`` for a scalar cost, else the given list of gradients."""
    params = list(params)
    if isinstance(cost_or_grads, Variable):
        return list(engine.grad(cost_or_grads, params))
    grads = list(cost_or_grads)
    if len(grads) != len(params):
        raise ValueError(f"got {len(grads)} gradients for {len(params)} parameters")
    return grads


def _hyper(value: Any, dtype: str) -> Any:
    """A hyper-parameter in the parameter's dtype (Python numbers stay weak)."""
    if isinstance(value, Variable) and value.dtype != dtype:
        return T.cast(value, dtype)
    return value


def _like(param: Variable, name: str) -> engine.SharedVariable:
    value = param.get_value()
    return engine.shared(np.zeros(value.shape, dtype=value.dtype), name=f"{param.name or 'param'}.{name}",
                         shape=param.type.shape)


def sgd(cost_or_grads: Any, params: Sequence[Variable], learning_rate: Any) -> list[tuple]:
    """Plain stochastic gradient descent: ``p <- p - learning_rate * g``."""
    grads = get_or_compute_grads(cost_or_grads, params)
    return [(p, p - _hyper(learning_rate, p.dtype) * _hyper(g, p.dtype)) for p, g in zip(params, grads)]


def momentum(cost_or_grads: Any, params: Sequence[Variable], learning_rate: Any, momentum: Any = 0.9,
             nesterov: bool = False) -> list[tuple]:
    """Heavy-ball momentum: ``v <- momentum * v - learning_rate * g; p <- p + v``.

    With ``nesterov=True`` the parameter step is ``momentum * v_new - learning_rate * g``.
    """
    return _momentum(cost_or_grads, params, learning_rate, momentum, nesterov)


def _momentum(cost_or_grads: Any, params: Sequence[Variable], learning_rate: Any, mu: Any,
              nesterov: bool) -> list[tuple]:
    grads = get_or_compute_grads(cost_or_grads, params)
    updates = []
    for p, g in zip(params, grads):
        lr, m, g = _hyper(learning_rate, p.dtype), _hyper(mu, p.dtype), _hyper(g, p.dtype)
        velocity = _like(p, "velocity")
        v_new = m * velocity - lr * g
        step = m * v_new - lr * g if nesterov else v_new
        updates += [(velocity, v_new), (p, p + step)]
    return updates


def nesterov_momentum(cost_or_grads: Any, params: Sequence[Variable], learning_rate: Any,
                      momentum: Any = 0.9) -> list[tuple]:
    """``momentum(..., nesterov=True)``."""
    return _momentum(cost_or_grads, params, learning_rate, momentum, nesterov=True)


def adam(cost_or_grads: Any, params: Sequence[Variable], learning_rate: Any = 1e-3, beta1: Any = 0.9,
         beta2: Any = 0.999, epsilon: Any = 1e-8) -> list[tuple]:
    """Adam (Kingma & Ba 2014, Algorithm 1 with the bias corrections folded into the step)."""
    grads = get_or_compute_grads(cost_or_grads, params)
    params = list(params)
    dtype = params[0].dtype if params else engine.config.floatX
    t_prev = engine.shared(np.zeros((), dtype=dtype), name="adam.t")
    t = t_prev + 1
    lr, b1, b2 = _hyper(learning_rate, dtype), _hyper(beta1, dtype), _hyper(beta2, dtype)
    step_size = lr * T.sqrt(1 - b2 ** t) / (1 - b1 ** t)
    updates = []
    for p, g in zip(params, grads):
        g = _hyper(g, p.dtype)
        m_prev, v_prev = _like(p, "m"), _like(p, "v")
        m = _hyper(b1, p.dtype) * m_prev + (1 - _hyper(b1, p.dtype)) * g
        v = _hyper(b2, p.dtype) * v_prev + (1 - _hyper(b2, p.dtype)) * T.sqr(g)
        new = p - _hyper(step_size, p.dtype) * m / (T.sqrt(v) + _hyper(epsilon, p.dtype))
        updates += [(m_prev, m), (v_prev, v), (p, new)]
    updates.append((t_prev, t))
    return updates
