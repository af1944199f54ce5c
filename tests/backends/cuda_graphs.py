"""Representative graphs for the CUDA backend tests (tests/backends/test_cuda_*.py): each entry
``name -> (build(rng) -> (inputs, outputs, arrays, updates), float tolerance)``; the same
graphs are compiled with nvcc and run on the emulator against the numpy oracle."""

from __future__ import annotations

import numpy as np

import engine
import frontends.nn as nn
import frontends.tensor as T


def _f32(rng, *shape):
    return rng.standard_normal(shape).astype("float32")


def elementwise(rng):
    x, y = T.matrix("x"), T.matrix("y")
    i, j = T.tensor("int32", (None, None), name="i"), T.tensor("int32", (None, None), name="j")
    outs = [T.tanh(x) * y + 1, T.sigmoid(x * 30) - T.softplus(-y), T.where(x > y, x, y ** 2),
            (i // j) % 5 + (i * j), T.exp(x).mean(axis=0)]
    a = [_f32(rng, 5, 7), _f32(rng, 5, 7), rng.integers(-50, 50, (5, 7)).astype("int32"),
         rng.choice([-3, -1, 2, 7], (5, 7)).astype("int32")]
    return [x, y, i, j], outs, a, None


def reductions(rng):
    x = T.tensor3("x")
    outs = [x.sum(axis=2), x.max(axis=0), x.sum(), x.argmax(axis=1), x.min(axis=(0, 2)),
            (x * x).sum(axis=1)]
    return [x], outs, [_f32(rng, 3, 40, 300)], None


def matmul(rng):
    x, y, z = T.matrix("x"), T.matrix("y"), T.tensor3("z")
    outs = [T.dot(x, y), T.tanh(T.dot(x, y) + y.sum(axis=0)), T.dot(y.T, x.T), z @ y]
    return [x, y, z], outs, [_f32(rng, 70, 33), _f32(rng, 33, 65), _f32(rng, 2, 5, 33)], None


def conv(rng):
    x = T.tensor4("x")
    W = engine.shared(_f32(rng, 4, 3, 3, 3) * 0.3, name="W")
    h = T.tanh(nn.conv2d(x, W, padding=1, stride=(2, 1)))
    cost = (h * h).mean()
    gx, gw = engine.grad(cost, [x, W])
    return [x], [h, gx, gw], [_f32(rng, 2, 3, 9, 8)], None


def pool(rng):
    x = T.tensor4("x")
    outs = [nn.pool2d(x, (2, 2), mode="max"), nn.pool2d(x, (3, 2), mode="average_inc_pad",
                                                         stride=(2, 2), pad=(1, 0))]
    g = engine.grad((outs[0] ** 2).sum() + outs[1].sum(), x)
    return [x], outs + [g], [_f32(rng, 2, 3, 8, 7)], None


def softmax(rng):
    x, t = T.matrix("x"), T.matrix("t")
    p = nn.softmax(x * 10)
    cost = nn.categorical_crossentropy(p, t).mean()
    return [x, t], [p, nn.log_softmax(x), cost, engine.grad(cost, x)], \
        [_f32(rng, 6, 11), np.eye(11, dtype="float32")[rng.integers(0, 11, 6)]], None


def lcn(rng):
    x = T.tensor4("x")
    y = nn.lcn(x, size=5)
    return [x], [y, engine.grad(y.sum(), x)], [_f32(rng, 1, 2, 9, 9)], None


def random(rng):
    rs = engine.RandomStreams(7)
    p = T.matrix("p")
    outs = [rs.uniform((5, 9)), rs.normal((3, 7), avg=1.0, std=2.0), rs.binomial((4, 6), p=0.25),
            rs.binomial(p.shape, p=p, dtype="float32"), rs.uniform((1, 1031))]
    return [p], outs, [rng.uniform(size=(3, 5)).astype("float32")], None


def training_step(rng):
    """An MLP step with shared parameters and updates (shared values stay on the device)."""
    x, y = T.matrix("x"), T.matrix("y")
    W = engine.shared(_f32(rng, 8, 5) * 0.1, name="W")
    b = engine.shared(np.zeros(5, "float32"), name="b")
    p = nn.softmax(T.dot(x, W) + b)
    cost = nn.categorical_crossentropy(p, y).mean()
    gW, gb = engine.grad(cost, [W, b])
    return [x, y], [cost], [_f32(rng, 16, 8), np.eye(5, dtype="float32")[rng.integers(0, 5, 16)]], \
        {W: W - 0.5 * gW, b: b - 0.5 * gb}


GRAPHS = {"elementwise": elementwise, "reductions": reductions, "matmul": matmul, "conv": conv,
          "pool": pool, "softmax": softmax, "lcn": lcn, "random": random,
          "training_step": training_step}


def build(name, backend, seed=0):
    """(compiled function, argument arrays) of graph ``name`` on backend."""
    inputs, outputs, arrays, updates = GRAPHS[name](np.random.default_rng(seed))
    fn = engine.function(inputs, outputs, updates=updates, backend=backend,
                         on_unused_input="ignore")
    return fn, arrays
