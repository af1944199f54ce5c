"""The rewrite mechanism: Pat matching, PatternMatcher, graph_rewrite."""

from __future__ import annotations

import numpy as np

import engine
import frontends.tensor as T
from engine.graph import Constant, toposort
from engine.ops import elemwise as E
from engine.ops.elemwise import Elemwise
from engine.rewrite import PASSES, Pat, PatternMatcher, RewriteContext, Rule, graph_rewrite, passes
from tests.rewrite.helpers import describe, rewrite, run


def test_pat_matches_op_props_inputs_and_captures():
    x, y = T.matrix("x"), T.matrix("y")
    v = T.log(T.exp(x) + y)
    caps = {}
    pat = Pat.elemwise("log", Pat.elemwise("add", Pat.elemwise("exp", Pat.var("a")), Pat.var("b")))
    assert pat.match(v, caps) and caps["a"] is x and caps["b"] is y
    assert not Pat.elemwise("exp", Pat.var()).match(v, {})
    assert Pat(Elemwise, props={"scalar_op": "log"}).match(v, {})
    assert not Pat(Elemwise, props=lambda op: op.scalar_op == "exp").match(v, {})


def test_pat_commutative_and_repeated_names():
    x, y = T.matrix("x"), T.matrix("y")
    pat = Pat.elemwise("add", Pat.var("x"), Pat.elemwise("exp", Pat.var("z")), commutative=True)
    caps = {}
    assert pat.match(T.exp(y) + x, caps) and caps["x"] is x and caps["z"] is y
    same = Pat.elemwise("sub", Pat.var("x"), Pat.var("x"))
    assert same.match(x - x, {}) and not same.match(x - y, {})


def test_pat_const_predicates():
    x = T.matrix("x")
    assert Pat.elemwise("mul", Pat.var(), Pat.const(1)).match(x * 1, {})
    assert not Pat.elemwise("mul", Pat.var(), Pat.const(1)).match(x * 2, {})
    assert Pat.const(where=lambda a: a.ndim == 0, name="c").match(Constant(3.0), {})
    assert not Pat.const(1).match(x, {})


def test_matcher_tries_rules_in_order_and_indexes_by_op():
    x = T.vector("x")
    fired = []
    rules = [
        Rule("first", Pat.elemwise("neg", Pat.var("x")), lambda m: fired.append("first")),  # returns None
        Rule("second", Pat.elemwise("neg", Pat.var("x")), lambda m: E.mul(m.x, -1.0)),
        Rule("never", Pat.elemwise("exp", Pat.var("x")), lambda m: fired.append("never")),
    ]
    matcher = PatternMatcher(rules)
    assert [r.name for r in matcher.candidates(Elemwise("neg"))] == ["first", "second"]
    (new,) = graph_rewrite([-x], matcher)
    assert fired == ["first"] and describe(new) == ["mul"]


def test_graph_rewrite_is_functional_and_merges():
    x = T.vector("x")
    a, b = T.exp(x) + 0, T.exp(x) + 0  # two identical subgraphs
    out = a * b
    snapshot = [(n.op, list(n.inputs)) for n in toposort([out])]
    (new,) = rewrite(out)
    assert [(n.op, list(n.inputs)) for n in toposort([out])] == snapshot  # user graph untouched
    assert describe(new) == ["exp", "mul"]  # add-zero removed, exp merged
    value = np.array([0.5, 1.0], "float32")
    np.testing.assert_allclose(run([x], [new], [value])[0], np.exp(value) ** 2, rtol=1e-6)
    # the user's graph still compiles and runs unchanged for another function
    np.testing.assert_allclose(run([x], [out], [value])[0], np.exp(value) ** 2, rtol=1e-6)


def test_rewrites_reach_a_fixed_point_bounded():
    x = T.vector("x")
    # a rule table that loops (neg -> mul -1 -> neg ...) stops at the firing budget
    matcher = PatternMatcher([
        Rule("to_mul", Pat.elemwise("neg", Pat.var("x")), lambda m: E.mul(m.x, -1.0)),
        Rule("to_neg", Pat.elemwise("mul", Pat.var("x"), Pat.const(-1)), lambda m: E.neg(m.x)),
    ])
    ctx = RewriteContext(budget=50)
    (new,) = graph_rewrite([-x], matcher, max_iterations=100, ctx=ctx)
    assert sum(ctx.fired.values()) == 50
    np.testing.assert_allclose(run([x], [new], [np.ones(2, "float32")])[0], -np.ones(2))


def test_replacements_keep_the_users_site():
    x = T.vector("x")
    y = T.log(T.sigmoid(x))  # this line is the site
    (new,) = rewrite(y)
    sites = {n.site for n in toposort([new])}
    assert sites == {y.owner.site} and "test_pattern.py" in y.owner.site


def test_debug_rewrites_channel_prints_rules_and_sites(monkeypatch, capfd):
    monkeypatch.setenv("KILN_DEBUG", "rewrites")
    x = T.vector("x")
    y = T.log(T.sigmoid(x))
    rewrite(y)
    err = capfd.readouterr().err
    assert "log_sigmoid" in err and y.owner.site in err


def test_passes_are_one_ordered_list():
    names = [name for name, _, _ in PASSES]
    assert names == [name for name, _, _ in passes()]
    assert names[:2] == ["canonicalize", "stabilize"]
    assert {name: when for name, _, when in PASSES}["fuse"] == "fuse"


def test_function_profile_records_each_pass(tmp_path, monkeypatch):
    monkeypatch.setenv("KILN_CACHE_DIR", str(tmp_path))  # a graph restored from the cache ran no pass
    x = T.vector("x")
    f = engine.function([x], T.exp(x) * 1, backend="numpy")
    assert {"optimize.canonicalize", "optimize.stabilize"} <= set(f.compile_profile)
    assert "optimize.fuse" not in f.compile_profile  # numpy does not fuse
    assert f.fgraph.rewrite_stats["nodes_after"] == 1
    g = engine.function([x], T.exp(x) * 1, backend="numpy", optimizer=None)
    assert describe(g.fgraph.outputs) == ["exp", "mul"]
