"""schedule: kernel calls, order, buffer plan. A simulator runs each plan with real aliasing
(a buffer reused or written in place holds the new value) and must reproduce the oracle."""

from __future__ import annotations

import numpy as np
import pytest

import engine
import frontends.tensor as T
from backends.numpy.table import run_node
from engine.graph import Constant, SharedVariable
from engine.schedule import schedule
from tests.rewrite.helpers import rewrite, run

RNG = np.random.default_rng(0)


def simulate(s, inputs, values, outputs):
    """Run the schedule's calls in order, every result stored in its planned buffer."""
    given = {id(v): np.asarray(a) for v, a in zip(inputs, values)}
    mem: dict[int, np.ndarray] = {}
    shapes: dict[int, tuple] = {}
    written_by: dict[int, int] = {}

    def read(v):
        if v.owner is None:
            if id(v) in given:
                return given[id(v)]
            return v.value if isinstance(v, (Constant, SharedVariable)) else given[id(v)]
        bid = s.var_buffer[id(v)]
        if s.buffers[bid].view_of is not None:  # a view: derived from its base's current bytes
            return run_node(v.owner, [read(i) for i in v.owner.inputs])[v.index]
        assert written_by[bid] == id(v), f"buffer b{bid} of {v} was overwritten while still needed"
        count = int(np.prod(shapes[id(v)]))
        return mem[bid][:count * np.dtype(v.dtype).itemsize].view(v.dtype).reshape(shapes[id(v)])

    for call in s.calls:
        if call.kind == "view":
            continue
        results = run_node(call.node, [read(i) for i in call.node.inputs])
        for out, value, bid in zip(call.node.outputs, results, call.outputs):
            buf = s.buffers[bid]
            assert buf.kind in ("temp", "output"), f"{call.node.op} writes into a {buf.kind} buffer"
            raw = np.ascontiguousarray(value).view(np.uint8).reshape(-1)
            if bid not in mem:
                mem[bid] = np.empty(max(raw.size, 1), np.uint8)
            assert raw.size <= mem[bid].size, f"b{bid} reused for a larger result"
            mem[bid][:raw.size] = raw
            shapes[id(out)] = value.shape
            written_by[bid] = id(out)
    return [np.array(read(o)) for o in outputs]


def check_plan(inputs, outputs, values, fuse=True, dims=None, graph_inputs=None):
    new = rewrite(outputs, fuse=fuse)
    s = schedule(new, inputs=graph_inputs or inputs, dims=dims)
    expected = run(inputs, outputs, values)
    for e, g in zip(expected, simulate(s, inputs, values, new)):
        np.testing.assert_allclose(g, e, rtol=1e-5, atol=1e-6)
    return s


def test_chain_runs_in_place_in_one_buffer():
    x = T.tensor("float64", (1000,), "x")
    out = T.tanh(T.exp(x)) * 2.0 + T.sin(x)
    s = check_plan([x], [out], [RNG.standard_normal(1000)], fuse=False)
    assert len(s.kernels) == 5 and s.peak_bytes == 2 * 8000  # exp | sin live together, the rest in place
    assert sum(bool(c.in_place) for c in s.calls) == 3


def test_fused_chain_peak_is_its_output():
    x = T.tensor("float32", (256, 256), "x")
    s = check_plan([x], [T.tanh(T.exp(x)) * 2.0 + T.sin(x)], [RNG.standard_normal((256, 256)).astype("float32")])
    assert len(s.kernels) == 1 and s.peak_bytes == 256 * 256 * 4


def test_never_writes_into_inputs_or_shared_values():
    x = T.matrix("x")
    W = engine.shared(RNG.standard_normal((4, 4)).astype("float32"), name="W")
    outs = [T.exp(x), W * 2.0, T.dot(x, W) + W.sum()]
    s = check_plan([x], outs, [RNG.standard_normal((3, 4)).astype("float32")], dims={x: (3, 4)})
    protected = {b.id for b in s.buffers.values() if b.kind in ("input", "shared", "constant")}
    for call in s.calls:
        assert not (set(call.outputs) & protected) or call.kind == "view"
        assert all(call.inputs[i] not in protected for _, i in call.in_place)


def test_buffers_are_reused_after_their_last_use():
    x = T.tensor("float32", (100, 100), "x")
    a = T.exp(x).sum(axis=0)  # exp(x) dies here ...
    b = T.tanh(x).sum(axis=0)  # ... and tanh(x) can take its buffer
    s = check_plan([x], [a + b], [RNG.standard_normal((100, 100)).astype("float32")], fuse=False)
    big = [buf for buf in s.buffers.values() if buf.nbytes == 40000 and buf.kind == "temp"]
    assert len(big) == 1 and s.peak_bytes < 2 * 40000


def test_views_and_reshapes_of_permuted_views():
    x = T.tensor("float32", (3, 4), "x")
    outs = [(T.exp(x).T * 2.0).reshape((12,)), T.exp(x).dimshuffle("x", 0, 1) + 1.0]
    s = check_plan([x], outs, [RNG.standard_normal((3, 4)).astype("float32")], fuse=False)
    kinds = {type(c.node.op).__name__: c.kind for c in s.calls}
    assert kinds["DimShuffle"] == "view"


def test_training_step_plan_runs(monkeypatch, capfd):
    from tests.rewrite.figures import da_step

    monkeypatch.setenv("KILN_DEBUG", "schedule")
    inputs, cost, updates, dims, values = da_step()
    plain = engine.function(inputs, cost, updates=updates, backend="numpy", optimizer=None)
    outs = plain.fgraph.outputs
    s = check_plan(inputs, outs, values, dims=dims, graph_inputs=plain.fgraph.inputs)
    assert "schedule:" in capfd.readouterr().err
    assert len(s.kernels) < 25 and s.peak_bytes < 2 * 784 * 500 * 4
    text = str(s)
    assert "Gemm" in text and "in place" in text


@pytest.mark.parametrize("fuse", [False, True])
def test_symbolic_sizes_use_the_given_dims(fuse):
    x = T.matrix("x")
    out = T.exp(x) + 1.0
    s20 = schedule(rewrite(out, fuse=fuse), inputs=[x], dims={x: (20, 10)})
    s40 = schedule(rewrite(out, fuse=fuse), inputs=[x], dims={x: (40, 10)})
    assert s40.peak_bytes == 2 * s20.peak_bytes == 2 * 20 * 10 * 4
