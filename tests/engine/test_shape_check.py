"""engine/shape_check.py: the first pass that runs every shape check before any kernel."""

from __future__ import annotations

import numpy as np
import pytest

import engine
import frontends.tensor as T
from engine import shape_check
from engine.errors import KilnShapeError
from engine.shape_check import ValueUnknown, shape_only
from tests.backend_fixture import available_backends

pytestmark = pytest.mark.skipif("llvm" not in available_backends(), reason="needs the llvm backend")


def test_a_stand_in_has_a_shape_and_no_values():
    s = shape_only((3, 4), "float32")
    assert s.shape == (3, 4) and s.dtype == np.float32 and s.nbytes == 48 and not s.flags.writeable
    assert np.transpose(s).shape == (4, 3) and np.broadcast_to(s, (2, 3, 4)).shape == (2, 3, 4)
    for read in (lambda: int(shape_only((), "int64")), lambda: s.min(), lambda: s + 1, lambda: s[0, 0],
                 lambda: list(s), lambda: np.sum(s), lambda: s.tolist()):
        with pytest.raises(ValueUnknown):
            read()
    assert shape_only((3, 4), "float32") is s            # shared: it holds no data


def test_a_repeated_signature_costs_one_lookup(monkeypatch):
    x = T.vector("x")
    f = engine.function([x], T.exp(x).sum() + x[:2], backend="llvm")
    f(np.ones(5, "float32"))
    ran = []
    real = shape_check._outputs
    monkeypatch.setattr(shape_check, "_outputs", lambda *a: ran.append(1) or real(*a))
    f(np.ones(5, "float32"))                              # same shapes: memoized
    assert not ran
    f(np.ones(6, "float32"))                              # new shapes: the pass runs
    assert ran


def test_a_new_value_redoes_only_the_nodes_that_read_it(monkeypatch):
    x, n = T.matrix("x"), T.lscalar("n")
    f = engine.function([x, n], T.tanh(T.dot(x, x.T)).sum(axis=0)[:n], backend="llvm")
    a = np.ones((4, 3), "float32")
    f(a, 2)
    ran = []
    real = shape_check._outputs
    monkeypatch.setattr(shape_check, "_outputs", lambda plan, *a: ran.append(str(plan.node.op)) or real(plan, *a))
    f(a, 3)
    assert ran and all("Subtensor" in r for r in ran), ran  # the gemm and tanh nodes were memoized


def test_a_failing_signature_is_not_remembered():
    x, y = T.vector("x"), T.vector("y")
    f = engine.function([x, y], T.exp(x) + y, backend="llvm")
    for _ in range(2):
        with pytest.raises(KilnShapeError):
            f(np.ones(3, "float32"), np.ones(4, "float32"))
    np.testing.assert_allclose(f(np.zeros(3, "float32"), np.ones(3, "float32")), 2)
