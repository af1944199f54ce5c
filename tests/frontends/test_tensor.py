"""frontends.tensor: every name issue 2 lists exists and works, Theano's spellings, and
``x.shape`` as a symbolic value."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

import engine
import frontends.tensor as T


def run(inputs, outputs, *values):
    return engine.function(inputs, outputs, backend="numpy", on_unused_input="ignore")(*values)


ISSUE_2_NAMES = """scalar vector matrix tensor3 tensor4 tensor abs neg exp log log1p sqrt square tanh sigmoid
softplus relu pow maximum minimum clip where switch cast sum mean max min prod var std argmax dot matmul
reshape flatten dimshuffle transpose concatenate stack set_subtensor inc_subtensor arange shape""".split()

THEANO_EXTRAS = """iscalar lscalar fscalar dscalar ivector lvector fvector dvector bvector imatrix lmatrix fmatrix
dmatrix ftensor3 dtensor3 ftensor4 dtensor4 itensor4 abs_ sqr grad constant as_tensor_variable zeros_like ones_like
zeros ones alloc fill eq neq lt le gt ge and_ or_ xor argmin outer shape_padleft shape_padright squeeze expand_dims
stop_gradient add sub mul true_div int_div expm1 sin cos sgn floor ceil round erf reciprocal""".split()


@pytest.mark.parametrize("name", ISSUE_2_NAMES + THEANO_EXTRAS)
def test_name_exists(name):
    assert callable(getattr(T, name))


def test_declaring_inputs():
    assert T.scalar("s").type.shape == () and T.vector().type.shape == (None,)
    assert T.matrix().ndim == 2 and T.tensor3().ndim == 3 and T.tensor4().ndim == 4
    t = T.tensor("float64", (None, 3, 1), name="t")
    assert t.dtype == "float64" and t.type.shape == (None, 3, 1) and t.name == "t"
    assert T.tensor(ndim=2).type.shape == (None, None)
    assert T.matrix("m", shape=(None, 784)).type.shape == (None, 784)
    assert T.fmatrix("a").dtype == "float32" and T.dvector("b").dtype == "float64"
    assert T.ivector().dtype == "int32" and T.lscalar().dtype == "int64" and T.bvector().dtype == "int8"


def test_python_operators():
    x, y = T.dvector("x"), T.dvector("y")
    xv, yv = np.array([1.0, -2.0, 3.0]), np.array([0.5, 4.0, 3.0])
    exprs = [x + y, x - y, x * y, x / y, x ** 2, -x, abs(x), 2 - x, 1 / y, 2 ** x, x // y, x % y, +x]
    refs = [xv + yv, xv - yv, xv * yv, xv / yv, xv ** 2, -xv, np.abs(xv), 2 - xv, 1 / yv, 2 ** xv, xv // yv,
            xv % yv, xv]
    for got, ref in zip(run([x, y], exprs, xv, yv), refs):
        np.testing.assert_allclose(got, ref)
    comparisons = run([x, y], [x < y, x <= y, x > y, x >= y, T.eq(x, y), T.neq(x, y)], xv, yv)
    for got, ref in zip(comparisons, [xv < yv, xv <= yv, xv > yv, xv >= yv, xv == yv, xv != yv]):
        assert got.dtype == bool
        np.testing.assert_array_equal(got, ref)
    A = T.dmatrix("A")
    Av = np.arange(6.0).reshape(2, 3)
    np.testing.assert_allclose(run([A, x], A @ x, Av, xv), Av @ xv)
    np.testing.assert_allclose(run([A], A.T @ A, Av), Av.T @ Av)
    b = T.vector("b", dtype="bool")
    bv = np.array([True, False, True])
    np.testing.assert_array_equal(run([b], [~b, b & ~b, b | ~b, b ^ b], bv)[0], ~bv)


def test_methods():
    x = T.dmatrix("x")
    xv = np.array([[1.0, 5.0, 2.0], [4.0, 0.5, 3.0]])
    exprs = [x.sum(axis=0), x.mean(axis=1, keepdims=True), x.max(), x.min(axis=-1), x.prod(), x.var(), x.std(axis=0),
             x.argmax(axis=1), x.argmin(), x.reshape((3, 2)), x.flatten(), x.dimshuffle(1, "x", 0), x.transpose(),
             x.astype("int32"), x.exp(), x.log(), x.sqrt(), x.dot(x.T), x[1, ::-1], x.size]
    refs = [xv.sum(0), xv.mean(1, keepdims=True), xv.max(), xv.min(-1), xv.prod(), xv.var(), xv.std(0), xv.argmax(1),
            xv.argmin(), xv.reshape(3, 2), xv.ravel(), xv.T[:, None, :], xv.T, xv.astype("int32"), np.exp(xv),
            np.log(xv), np.sqrt(xv), xv @ xv.T, xv[1, ::-1], xv.size]
    for got, ref in zip(run([x], exprs, xv), refs):
        np.testing.assert_allclose(got, ref)


def test_where_switch_clip_cast_pow():
    x = T.vector("x")
    xv = np.array([-2.0, -0.2, 0.4, 3.0], "float32")
    got = run([x], [T.where(x > 0, x, 0), T.switch(T.lt(x, 0), -1, 1), T.clip(x, -1, 1), T.cast(x, "int8"),
                    T.pow(abs(x), 0.5), T.maximum(x, 0.0), T.minimum(x, 0)], xv)
    np.testing.assert_allclose(got[0], np.where(xv > 0, xv, 0))
    np.testing.assert_array_equal(got[1], np.where(xv < 0, -1, 1))
    np.testing.assert_allclose(got[2], np.clip(xv, -1, 1))
    assert got[3].dtype == np.int8 and list(got[3]) == [-2, 0, 0, 3]
    np.testing.assert_allclose(got[4], np.abs(xv) ** 0.5, rtol=1e-6)
    assert all(g.dtype == np.float32 for i, g in enumerate(got) if i not in (1, 3))


def test_indexing_forms():
    x = T.dmatrix("x")
    i, idx, y = T.lscalar("i"), T.lvector("idx"), T.lvector("y")
    xv = np.arange(12.0).reshape(3, 4)
    got = run([x, i, idx, y],
              [x[i], x[-1, 1:3], x[::2, ::-1], x[idx], x[T.arange(3), y], x[i:, :i], x[..., -1],
               T.set_subtensor(x[1:, 0], 0.0), T.inc_subtensor(x[idx], 1.0), T.set_subtensor(x[T.arange(3), y], -1.0)],
              xv, 1, np.array([2, 0, 2]), np.array([3, 0, 1]))
    refs = [xv[1], xv[-1, 1:3], xv[::2, ::-1], xv[[2, 0, 2]], xv[[0, 1, 2], [3, 0, 1]], xv[1:, :1], xv[..., -1]]
    for g, r in zip(got, refs):
        np.testing.assert_array_equal(g, r)
    expected = xv.copy()
    expected[1:, 0] = 0.0
    np.testing.assert_array_equal(got[7], expected)
    expected = xv.copy()
    np.add.at(expected, [2, 0, 2], 1.0)
    np.testing.assert_array_equal(got[8], expected)
    expected = xv.copy()
    expected[[0, 1, 2], [3, 0, 1]] = -1.0
    np.testing.assert_array_equal(got[9], expected)
    with pytest.raises(engine.KilnTypeError, match="indexed tensor"):
        T.set_subtensor(x, 1.0)
    f = T.fmatrix("f")
    with pytest.raises(engine.KilnTypeError, match="downcast"):
        T.set_subtensor(f[0], T.dvector())
    assert T.inc_subtensor(f[0], T.bvector()).dtype == "float32"  # lossless casts are made
    assert x[None].type.shape == (1, None, None) and x[:, None, 1].type.shape == (None, 1)
    with pytest.raises(engine.KilnValueError, match="newaxis"):
        x[None, idx]


def test_shapes_joins_and_arange():
    x, v = T.dmatrix("x"), T.dvector("v")
    xv, vv = np.arange(6.0).reshape(2, 3), np.array([1.0, 2.0, 3.0])
    n = T.lscalar("n")
    got = run([x, v, n],
              [T.concatenate([x, x], axis=1), T.stack([v, v * 2]), T.stack([v, v], axis=1), T.flatten(x),
               T.reshape(x, (3, -1)), T.dimshuffle(v, "x", 0), T.transpose(x), T.arange(n), T.arange(1, n, 2),
               T.arange(0.0, 1.0, 0.25), T.outer(v, v), T.squeeze(T.shape_padleft(v)), T.expand_dims(v, 1),
               T.shape_padright(v, 2)], xv, vv, 5)
    refs = [np.concatenate([xv, xv], 1), np.stack([vv, vv * 2]), np.stack([vv, vv], 1), xv.ravel(), xv.reshape(3, -1),
            vv[None], xv.T, np.arange(5), np.arange(1, 5, 2), np.arange(0.0, 1.0, 0.25, dtype="float32"),
            np.outer(vv, vv), vv, vv[:, None], vv[:, None, None]]
    for g, r in zip(got, refs):
        np.testing.assert_array_equal(g, r)
        assert g.shape == r.shape
    assert T.arange(5).dtype == "int64" and T.arange(0.0, 1.0, 0.25).dtype == "float32"
    assert T.arange(5).type.shape == (5,)
    with pytest.raises(engine.KilnValueError, match="step"):
        T.arange(0, 5, 0)


def test_symbolic_shape():
    x = T.matrix("x", shape=(None, 6))
    shape = x.shape
    assert isinstance(shape, engine.Variable) and shape.dtype == "int64" and shape.type.shape == (2,)
    assert len(shape) == 2 and isinstance(shape[1], engine.Constant) and int(shape[1].value) == 6
    assert shape[-1].value == 6 and T.shape(x).type.shape == (2,)
    assert T.reshape(x, x.shape).type.shape == (None, 6)  # static dims survive
    assert T.vector().reshape(x.shape).type.shape == (None, 6) and x.reshape(6, -1).ndim == 2
    assert x.reshape(x.shape[:1] + (2, -1)).type.shape == (None, 2, None)
    rng = engine.RandomStreams(0)
    xv = np.ones((4, 6), "float32")
    outs = run([x], [x.shape, shape * 2, T.prod(x.shape), T.zeros(x.shape), T.ones(x.shape, "int32"),
                     T.zeros_like(x), T.ones_like(x, dtype="int8"), rng.binomial(size=x.shape, p=0.5),
                     T.reshape(x, x.shape[::-1]), T.alloc(1.5, x.shape[0], 2), T.cast(x.shape, "float32"),
                     x.size, T.fill(x, 3.0), [x.shape[i] for i in range(2)][0]], xv)
    np.testing.assert_array_equal(outs[0], [4, 6])
    np.testing.assert_array_equal(outs[1], [8, 12])
    assert int(outs[2]) == 24
    assert outs[3].shape == (4, 6) and outs[3].dtype == np.float32 and not outs[3].any()
    assert outs[4].dtype == np.int32 and outs[4].shape == (4, 6) and outs[4].all()
    assert outs[5].shape == (4, 6) and outs[6].dtype == np.int8
    assert outs[7].shape == (4, 6) and set(np.unique(outs[7])) <= {0, 1}
    assert outs[8].shape == (6, 4)
    np.testing.assert_array_equal(outs[9], np.full((4, 2), 1.5, "float32"))
    assert outs[10].dtype == np.float32 and int(outs[11]) == 24
    np.testing.assert_array_equal(outs[12], np.full((4, 6), 3.0))
    assert int(outs[13]) == 4
    assert list(iter(x.shape))[1].value == 6
    with pytest.raises(engine.KilnValueError, match=r"shape\[2\]"):
        x.shape[2]


def test_zeros_and_ones_constant_when_static():
    z = T.zeros((2, 3))
    assert isinstance(z, engine.Constant) and z.dtype == "float32" and z.type.shape == (2, 3)
    assert T.ones(4, dtype="int64").type.shape == (4,)
    n = T.lscalar("n")
    grow = T.zeros((n, 2))
    assert grow.type.shape == (None, 2)
    assert run([n], grow, 3).shape == (3, 2)


def test_grad_via_frontend_and_gradient_of_alloc():
    x = T.dvector("x")
    g = T.grad((T.alloc(x, 3, 2) ** 2).sum(), x)
    np.testing.assert_allclose(run([x], g, np.array([1.0, 2.0])), [6.0, 12.0])  # 3 rows of x**2


@pytest.mark.skipif(importlib.util.find_spec("frontends.nn") is None, reason="frontends.nn not there yet")
def test_nnet_namespace_is_frontends_nn():
    import frontends.nn

    assert T.nnet is frontends.nn
    with pytest.raises(AttributeError):
        T.no_such_name  # noqa: B018
