"""The graph IR: types, variables, constants, ops and their props, traversal and cloning."""

from __future__ import annotations

import inspect

import numpy as np
import pytest

import engine
import frontends.tensor as T
from engine.errors import KilnShapeError, KilnTypeError
from engine.graph import Constant, Variable, ancestors, clone_replace, graph_inputs, toposort
from engine.ops.elemwise import Elemwise
from engine.ops.reduce import Reduce
from engine.types import TensorType, broadcast_shapes


def test_tensor_type():
    t = TensorType("float32", (None, 3))
    assert t.ndim == 2 and str(t) == "float32(?, 3)" and t.broadcastable == (False, False)
    assert t == TensorType(np.float32, [None, 3]) and hash(t) == hash(TensorType("float32", (None, 3)))
    assert t.accepts_shape((5, 3)) and not t.accepts_shape((5, 4)) and not t.accepts_shape((3,))
    assert str(TensorType("int64", (2,))) == "int64(2,)" and str(TensorType("bool", ())) == "bool()"
    with pytest.raises(KilnShapeError, match="negative"):
        TensorType("float32", (-1,))
    with pytest.raises(KilnTypeError, match="complex128"):
        TensorType("complex128", ())


def test_static_broadcasting_rules():
    assert broadcast_shapes((None, 1), (3,)) == (None, 3)
    assert broadcast_shapes((2, 1), (1, 4)) == (2, 4)
    assert broadcast_shapes((None,), (None,)) == (None,)
    assert broadcast_shapes((1,), ()) == (1,)
    with pytest.raises(KilnShapeError, match=r"\(2, 3\) and \(4,\)"):
        broadcast_shapes((2, 3), (4,))


def test_variables_record_their_creation_site():
    line = inspect.currentframe().f_lineno + 1
    x = T.matrix("x")
    y = (x * 2).sum()
    assert x.site.endswith(f"test_graph.py:{line}")
    assert y.site.endswith(f"test_graph.py:{line + 1}") and y.owner.site == y.site
    assert y.owner.inputs[0].owner.site == y.site
    assert repr(x) == "<x: float32(?, ?)>" and str(x) == "x"


def test_constants():
    c = T.constant([1.0, 2.0])
    assert c.dtype == "float32" and c.type.shape == (2,)  # Python floats: floatX
    assert T.constant([1, 2]).dtype == "int64" and T.constant(np.zeros(2)).dtype == "float64"
    assert not c.value.flags.writeable
    assert c.clone() is c
    weak = engine.graph.as_variable(0.5)
    assert weak.weak and weak.python_value == 0.5 and weak.dtype == "float32"
    assert Constant(np.int8(3)).dtype == "int8" and not Constant(np.int8(3)).weak
    assert Constant(1.0, dtype="float64").signature() == Constant(1.0, dtype="float64").signature()
    assert repr(T.constant(0.1)) == "Constant{0.1}:float32"


def test_op_identity_is_class_and_props():
    assert Elemwise("add") == Elemwise("add") and hash(Elemwise("add")) == hash(Elemwise("add"))
    assert Elemwise("add") != Elemwise("mul") and Reduce("sum", (0,)) != Reduce("sum", (1,))
    assert len({Elemwise("add"), Elemwise("add"), Elemwise("cast", "int32")}) == 2
    assert str(Reduce("max", (0, 1))) == "Reduce{max, (0, 1)}"
    assert str(Elemwise("cast", "int8")) == "Elemwise{cast->int8}"


def test_toposort_graph_inputs_and_ancestors():
    x, y = T.vector("x"), T.vector("y")
    a = x + y
    b = T.exp(a)
    c = b * a
    order = toposort([c])
    assert [n.op for n in order] == [a.owner.op, b.owner.op, c.owner.op]
    assert order.index(a.owner) < order.index(b.owner) < order.index(c.owner)
    assert graph_inputs([c]) == [x, y]
    assert {id(v) for v in (x, y, a, b, c)} <= ancestors([c])
    assert id(x) not in ancestors([c], blockers=[a, b])


def test_clone_replace_substitutes_and_leaves_the_original():
    x, y, z = T.vector("x"), T.vector("y"), T.matrix("z")
    out = T.tanh(x * 2).sum()
    (new,) = clone_replace([out], {x: y})
    def symbolic_inputs(v):
        return [i for i in graph_inputs([v]) if not isinstance(i, Constant)]

    assert symbolic_inputs(new) == [y] and symbolic_inputs(out) == [x]
    (wider,) = clone_replace([T.tanh(x * 2)], {x: z})  # types are re-inferred
    assert wider.type.ndim == 2
    np.testing.assert_allclose(new.eval({y: np.array([0.5], "float32")}), np.tanh(1.0), rtol=1e-6)


def test_op_call_errors_name_the_users_line():
    a = T.matrix("a", shape=(2, 3))
    line = inspect.currentframe().f_lineno + 2
    with pytest.raises(KilnShapeError) as info:
        T.dot(a, a)
    assert f"test_graph.py:{line}" in str(info.value)


def test_variable_protocols():
    x = T.vector("x")
    assert isinstance(x.shape, Variable) and x.ndim == 1 and x.dtype == "float32"
    assert x.broadcastable == (False,) and x.static_shape == (None,)
    with pytest.raises(KilnTypeError):
        iter(x)
