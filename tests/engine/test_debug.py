"""Inspection: debugprint, to_dot, to_networkx, KILN_DEBUG channels."""

from __future__ import annotations

import inspect
import io
import os

import numpy as np

import engine
import frontends.tensor as T
from engine.debug import debug_enabled, debug_log


def line_after() -> str:
    return f"test_debug.py:{inspect.currentframe().f_back.f_lineno + 1}"


def model():
    x = T.matrix("x", shape=(None, 3))
    W = engine.shared(np.ones((3, 2), "float32"), name="W")
    site = line_after()
    cost = T.tanh(T.dot(x, W)).sum()
    return x, W, cost, site


def test_debugprint_of_a_function_lists_inputs_nodes_types_sites_and_updates():
    x, W, cost, site = model()
    f = engine.function([x], cost, updates={W: W - 0.1 * engine.grad(cost, W)}, backend="numpy")
    buffer = io.StringIO()
    text = engine.debugprint(f, file=buffer)
    assert buffer.getvalue().strip() == text.strip()
    lines = text.splitlines()
    assert "input x :: float32(?, 3)" in lines
    assert "shared W :: float32(3, 2)" in lines
    matmul = next(line for line in lines if "MatMul(x, W)" in line)
    assert ":: float32(?, 2)" in matmul and site in matmul
    assert any("Elemwise{tanh}" in line and ":: float32(?, 2)" in line for line in lines)
    assert any("Reduce{sum, (0, 1)}" in line and ":: float32()" in line for line in lines)
    assert any(line.startswith("outputs: %") for line in lines)
    assert any(line.startswith("update W <- %") for line in lines)
    # one node a line: every node line has an id, an op, a type and a site
    node_lines = [line for line in lines if line.startswith("%")]
    assert len(node_lines) == len(list(engine.debug.iter_nodes(f)))
    assert all(" = " in line and " :: " in line and "# " in line for line in node_lines)


def test_debugprint_of_variables_without_sites():
    x, _, cost, site = model()
    text = engine.debugprint([cost, x * 2], file=io.StringIO(), print_sites=False)
    assert site not in text and "Elemwise{mul}(x, Constant{2.0}:float32)" in text
    assert text.splitlines()[-1].startswith("outputs: %")
    assert "Constant{0.5}:float32" in engine.debugprint(T.constant(0.5), file=io.StringIO())


def test_to_dot_returns_dot_text_and_writes_files(tmp_path):
    x, _, cost, _ = model()
    text = engine.to_dot(cost)
    assert text.startswith("digraph kiln {") and text.rstrip().endswith("}")
    assert 'label="MatMul"' in text and 'label="Elemwise{tanh}"' in text
    assert "float32(?, 3)" in text and text.count("->") == 7  # MatMul: 2 in, 1 out; tanh, sum: 1 in, 1 out
    path = tmp_path / "graph.dot"
    engine.to_dot(cost, str(path))
    assert path.read_text() == text
    f = engine.function([x], cost, backend="numpy")
    assert engine.to_dot(f).count('label="MatMul"') == 1


def test_to_networkx_nodes_and_edges():
    import networkx as nx

    x = T.vector("x")
    y = T.tanh(x).sum()
    graph = engine.to_networkx(y)
    assert isinstance(graph, nx.DiGraph)
    assert graph.number_of_nodes() == 5  # x, tanh, tanh's output, sum, sum's output
    assert graph.number_of_edges() == 4
    kinds = [data["kind"] for _, data in graph.nodes(data=True)]
    assert kinds.count("apply") == 2 and kinds.count("variable") == 3
    assert nx.is_directed_acyclic_graph(graph)
    ops = [data["op"] for _, data in graph.nodes(data=True) if data["kind"] == "apply"]
    assert ops == [str(y.owner.inputs[0].owner.op), str(y.owner.op)] or sorted(ops) == sorted(
        [str(y.owner.inputs[0].owner.op), str(y.owner.op)])


def test_debug_channels(monkeypatch, capsys):
    monkeypatch.setenv("KILN_DEBUG", "kernels, timing")
    assert debug_enabled("kernels") and debug_enabled("timing") and not debug_enabled("rewrites")
    debug_log("timing", "hello")
    assert "[kiln:timing] hello" in capsys.readouterr().err
    monkeypatch.setenv("KILN_DEBUG", "all")
    assert debug_enabled("anything")
    monkeypatch.delenv("KILN_DEBUG")
    assert not debug_enabled("kernels")
    assert os.environ.get("KILN_DEBUG") is None
