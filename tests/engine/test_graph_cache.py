"""The optimized-graph cache (engine/graph_cache.py): a warm compile restores the rewritten graph."""

import importlib
import inspect
import os
import pkgutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import engine
import engine.ops
import frontends.tensor as T
from engine import graph_cache
from engine.graph import Op

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
rng = np.random.default_rng(0)


@pytest.fixture
def cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("KILN_CACHE_DIR", str(tmp_path))
    return tmp_path


def _all_op_classes() -> list[type]:
    for module in pkgutil.iter_modules(engine.ops.__path__):
        importlib.import_module(f"engine.ops.{module.name}")
    found, todo = [], [Op]
    while todo:
        for sub in todo.pop().__subclasses__():
            todo.append(sub)
            if sub.__module__.startswith("engine."):
                found.append(sub)
    return found


@pytest.mark.parametrize("cls", _all_op_classes(), ids=lambda c: c.__qualname__)
def test_every_op_is_rebuilt_from_its_props(cls):
    """The cache rebuilds ops as cls(*props): constructors must take exactly the props."""
    params = [p for p in inspect.signature(cls.__init__).parameters.values() if p.name != "self"]
    if not cls.props:
        assert all(p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD) for p in params)
    else:
        assert [p.name for p in params] == list(cls.props)


def _mlp_step():
    x, y = T.matrix("x"), T.lvector("y")
    w = engine.shared(np.random.default_rng(1).standard_normal((6, 4)).astype("float32") * 0.1, name="w")
    b = engine.shared(np.zeros(4, "float32"), name="b")
    p = T.nnet.softmax(T.tanh(T.dot(x, w) + b) * 2.5 + 0.5)
    cost = -T.mean(T.log(p)[T.arange(y.shape[0]), y]) + 1e-3 * T.sum(w ** 2)
    gw, gb = T.grad(cost, [w, b])
    return [x, y], cost, [(w, w - 0.1 * gw), (b, b - 0.1 * gb)], (w, b)


@pytest.mark.parametrize("backend", ["numpy", "llvm"])
def test_second_compile_restores_the_optimized_graph(cache_dir, backend):
    data = rng.standard_normal((5, 6)).astype("float32"), np.array([0, 1, 2, 3, 1])
    results = []
    for _ in range(2):
        inputs, cost, updates, params = _mlp_step()
        f = engine.function(inputs, cost, updates=updates, backend=backend)
        results.append((f(*data), [p.get_value() for p in params], f))
    (cold_cost, cold_params, cold), (warm_cost, warm_params, warm) = results
    assert "optimize.restored" not in cold.compile_profile
    assert "optimize.restored" in warm.compile_profile
    assert warm.fgraph.rewrite_stats["restored"]
    assert warm.fgraph.rewrite_stats["nodes_after"] == cold.fgraph.rewrite_stats["nodes_after"]
    assert engine.function_cache.graph_text(warm.fgraph) == engine.function_cache.graph_text(cold.fgraph)
    np.testing.assert_array_equal(warm_cost, cold_cost)
    for a, b in zip(warm_params, cold_params):
        np.testing.assert_array_equal(a, b)


def test_restored_sites_are_the_current_lines(cache_dir):
    """Sites are not in the key: the warm graph names the lines of the graph being compiled."""
    def build_here():
        x = T.matrix("x")
        return engine.function([x], T.exp(x * 2.0).sum(axis=1), backend="numpy")

    def build_there():
        x = T.matrix("x")
        return engine.function([x], T.exp(x * 2.0).sum(axis=1), backend="numpy")

    build_here()
    second = build_there()
    assert "optimize.restored" in second.compile_profile
    line = f"test_graph_cache.py:{build_there.__code__.co_firstlineno + 2}"
    sites = [node.site for node in engine.graph.toposort(second.fgraph.outputs)]
    assert len(sites) == 3 and all(s.endswith(line) for s in sites)


def test_input_requirements_survive_the_cache(cache_dir):
    for _ in range(2):
        x = T.matrix("x")
        f = engine.function([x], T.dot(x, np.ones((3, 2), "float32")), backend="numpy")
    assert "optimize.restored" in f.compile_profile
    with pytest.raises(engine.errors.KilnShapeError, match="input 'x'.*needs size 3 along axis 1"):
        f(np.ones((4, 5), "float32"))


def test_folded_constants_are_restored_exactly(cache_dir):
    for _ in range(2):
        x = T.vector("x")
        table = T.constant(np.arange(5, dtype="float64"))
        f = engine.function([x], x * T.cast(T.exp(table) * 1.1, "float32") + 0.1, backend="numpy")
    assert "optimize.restored" in f.compile_profile
    a = np.ones(5, "float32")
    expected = a * (np.exp(np.arange(5.0)) * 1.1).astype("float32") + np.float32(0.1)
    np.testing.assert_array_equal(f(a), expected)


@pytest.mark.parametrize("damage", ["garbage", "other graph"])
def test_a_bad_entry_is_ignored_and_rewritten(cache_dir, damage):
    def build(scale):
        x = T.matrix("x")
        return engine.function([x], T.tanh(x * scale).sum(axis=0), backend="numpy")
    build(2.0)
    entries = list((cache_dir / graph_cache.NAMESPACE).glob("*.bin"))
    assert len(entries) == 1
    if damage == "garbage":
        entries[0].write_bytes(b"{not json")
    else:  # a well-formed entry of another graph under this key: the text check refuses it
        build(3.0)
        other = next(p for p in (cache_dir / graph_cache.NAMESPACE).glob("*.bin") if p != entries[0])
        entries[0].write_bytes(other.read_bytes())
    for meta in (cache_dir / graph_cache.NAMESPACE).glob("*.json"):  # keep the entries' checksums valid
        import hashlib
        import json
        info = json.loads(meta.read_text())
        data = meta.with_suffix(".bin").read_bytes()
        info.update(sha256=hashlib.sha256(data).hexdigest(), size=len(data))
        meta.write_text(json.dumps(info))
    again = build(2.0)
    assert "optimize.restored" not in again.compile_profile
    a = rng.standard_normal((3, 4)).astype("float32")
    np.testing.assert_allclose(again(a), np.tanh(a * 2).sum(0), rtol=1e-6)
    assert "optimize.restored" in build(2.0).compile_profile


def test_graphs_with_foreign_ops_are_not_cached(cache_dir):
    """A user's Op subclass may behave in ways no hashed source records: never cached."""
    from engine.function import build_function_graph
    from engine.graph import Apply
    from engine.types import TensorType

    class Twice(Op):
        def make_node(self, x):
            return Apply(self, [x], [TensorType(x.dtype, x.type.shape)])

    x = T.vector("x")
    assert graph_cache._key(build_function_graph([x], [T.exp(x)], [], None, False), fuse=False) is not None
    assert graph_cache._key(build_function_graph([x], [T.exp(Twice()(x))], [], None, False), fuse=False) is None


def test_a_second_process_runs_no_rewrites(tmp_path):
    script = textwrap.dedent("""
        import sys, numpy as np
        sys.path.insert(0, sys.argv[1])
        import engine, frontends.tensor as T
        from engine import graph_cache
        x = T.matrix("x")
        f = engine.function([x], T.nnet.softmax(T.dot(x, x.T) * 0.5).sum(axis=1), backend="numpy")
        out = float(f(np.eye(3, dtype="float32")).sum())
        print(graph_cache.STATS["hits"], "engine.rewrite.fuse" in sys.modules, out)
    """)
    env = dict(os.environ, KILN_CACHE_DIR=str(tmp_path))
    runs = [subprocess.run([sys.executable, "-c", script, ROOT], env=env, capture_output=True, text=True,
                           timeout=120) for _ in range(2)]
    for r in runs:
        assert r.returncode == 0, r.stderr
    cold, warm = (r.stdout.split() for r in runs)
    assert cold[0] == "0" and warm[0] == "1"
    assert warm[1] == "False"  # no rule module was even imported
    assert warm[2] == cold[2]
