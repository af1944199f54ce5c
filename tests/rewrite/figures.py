"""Optimizer figures for the tutorials' training steps: ``python -m tests.rewrite.figures``.

For each step: nodes before / after (numpy: canonicalize + stabilize; fused: all passes), the
kernel calls and peak buffer bytes of the schedule (at the tutorial's batch size), and the
optimization time. Also checks the optimized step against the unoptimized one on numpy.
"""

from __future__ import annotations

import time

import numpy as np

import engine
import frontends.tensor as T
from engine.graph import toposort
from engine.rewrite import rewrite_outputs
from engine.schedule import schedule


def da_step():
    """dA.py: tied 784x500, sigmoid, binomial corruption 0.3, cross-entropy, SGD 0.1."""
    rng = np.random.default_rng(0)
    x = T.matrix("x")
    W = engine.shared(rng.uniform(-0.1, 0.1, (784, 500)).astype("float32"), name="W")
    b = engine.shared(np.zeros(500, "float32"), name="b")
    bp = engine.shared(np.zeros(784, "float32"), name="b_prime")
    srng = engine.RandomStreams(1)
    tilde = srng.binomial(size=x.shape, n=1, p=0.7, dtype="float32") * x
    y = T.sigmoid(T.dot(tilde, W) + b)
    z = T.sigmoid(T.dot(y, W.T) + bp)
    cost = T.mean(-T.sum(x * T.log(z) + (1 - x) * T.log(1 - z), axis=1))
    params = [W, b, bp]
    grads = engine.grad(cost, params)
    updates = [(p, p - 0.1 * g) for p, g in zip(params, grads)]
    data = (rng.uniform(0, 1, (20, 784)) > 0.5).astype("float32")
    return [x], cost, updates, {x: data.shape}, [data]


def rbm_step():
    from frontends.models.rbm import RBM

    rng = np.random.default_rng(0)
    x = T.matrix("x")
    rbm = RBM(input=x, n_visible=784, n_hidden=500, rng=1)
    cost, updates = rbm.get_cost_updates(lr=0.1, k=1)
    data = (rng.uniform(0, 1, (20, 784)) > 0.5).astype("float32")
    return [x], cost, updates, {x: data.shape}, [data]


def lenet_step():
    from frontends.models.lenet import LeNet

    rng = np.random.default_rng(0)
    x, y = T.matrix("x"), T.lvector("y")
    net = LeNet(x, rng=1)
    # the tutorial's cost, on probabilities: the stabilizer makes it SoftmaxCrossEntropy
    cost = -T.mean(T.log(net.p_y_given_x)[T.arange(y.shape[0]), y])
    grads = engine.grad(cost, net.params)
    updates = [(p, p - 0.1 * g) for p, g in zip(net.params, grads)]
    data = rng.standard_normal((500, 784)).astype("float32")
    labels = rng.integers(0, 10, 500)
    return [x, y], cost, updates, {x: data.shape, y: labels.shape}, [data, labels]


def measure(name, build, check=True):
    inputs, cost, updates, dims, values = build()
    plain = engine.function(inputs, cost, updates=updates, backend="numpy", optimizer=None)
    outputs = plain.fgraph.outputs
    before = len(toposort(outputs))
    start = time.perf_counter()
    numpy_graph = rewrite_outputs(outputs, fuse=False)
    t_numpy = time.perf_counter() - start
    start = time.perf_counter()
    fused = rewrite_outputs(outputs, fuse=True)
    t_fused = time.perf_counter() - start
    unfused_sched = schedule(outputs, inputs=plain.fgraph.inputs, dims=dims)
    sched = schedule(fused, inputs=plain.fgraph.inputs, dims=dims)
    row = (f"{name:6s} nodes {before:4d} -> {len(toposort(numpy_graph)):4d} (numpy) -> "
           f"{len(toposort(fused)):4d} (fused); "
           f"kernels {len(unfused_sched.kernels):4d} -> {len(sched.kernels):3d}; peak "
           f"{unfused_sched.peak_bytes / 2**20:6.2f} -> {sched.peak_bytes / 2**20:6.2f} MiB; "
           f"optimize {t_numpy * 1e3:5.0f} ms (numpy) {t_fused * 1e3:5.0f} ms (fused)")
    if check:
        state = [s.get_value() for s in plain.fgraph.shared]
        results = []
        for graph in (outputs, numpy_graph, fused):
            for s, v in zip(plain.fgraph.shared, state):
                s.set_value(v)
            f = engine.function(plain.fgraph.inputs[:len(inputs)], graph, backend="numpy", optimizer=None,
                                on_unused_input="ignore")
            results.append(f(*values))
        worst = max(float(np.max(np.abs(a - b)) / (1 + np.max(np.abs(a))))
                    for r in results[1:] for a, b in zip(results[0], r) if a.dtype.kind == "f")
        row += f"; max rel diff {worst:.1e}"
    return row


if __name__ == "__main__":
    for name, build in (("dA", da_step), ("RBM", rbm_step), ("LeNet", lenet_step)):
        print(measure(name, build))
