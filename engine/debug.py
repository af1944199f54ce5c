"""Inspection: ``debugprint``, DOT export, a networkx view, and ``KILN_DEBUG`` channels.

``KILN_DEBUG`` is a comma-separated list of channels (``rewrites``, ``schedule``, ``kernels``,
``llvm``, ``asm``, ``timing``, ``cache``); ``debug_enabled("kernels")`` tells whether one is on.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterable
from typing import Any

from engine.graph import Constant, SharedVariable, Variable, toposort


def debug_channels() -> set[str]:
    return {c.strip() for c in os.environ.get("KILN_DEBUG", "").split(",") if c.strip()}


def debug_enabled(channel: str) -> bool:
    channels = debug_channels()
    return channel in channels or "all" in channels


def debug_log(channel: str, message: str) -> None:
    if debug_enabled(channel):
        print(f"[kiln:{channel}] {message}", file=sys.stderr)


def _outputs_of(obj: Any) -> list[Variable]:
    if isinstance(obj, Variable):
        return [obj]
    fgraph = getattr(obj, "fgraph", None)
    if fgraph is not None:
        return list(fgraph.outputs)
    return list(obj)


def _label(v: Variable, names: dict[int, str]) -> str:
    if id(v) in names:
        return names[id(v)]
    if isinstance(v, Constant):
        return repr(v)
    return v.name or f"%{v.id}"


def debugprint(obj: Any, file: Any = None, print_sites: bool = True) -> str:
    """Print the graph of a variable, a list of them, or a compiled function: one node a line,
    ``%id = Op(inputs) :: dtype(shape)   # file:line``. Returns the text as well."""
    outputs = _outputs_of(obj)
    names: dict[int, str] = {}
    lines = []
    fgraph = getattr(obj, "fgraph", None)
    if fgraph is not None:
        for v in fgraph.inputs:
            kind = "shared" if isinstance(v, SharedVariable) else "input"
            lines.append(f"{kind} {v.name or f'%{v.id}'} :: {v.type}")
    for node in toposort(outputs):
        args = ", ".join(_label(i, names) for i in node.inputs)
        outs = ", ".join(f"%{o.id}" for o in node.outputs)
        types = ", ".join(str(o.type) for o in node.outputs)
        site = f"   # {node.site}" if print_sites else ""
        lines.append(f"{outs} = {node.op}({args}) :: {types}{site}")
    if fgraph is not None:
        n_out = fgraph.n_user_outputs
        lines.append("outputs: " + ", ".join(_label(o, names) for o in outputs[:n_out]))
        for target, value in zip(fgraph.updated, outputs[n_out:]):
            lines.append(f"update {target.name or target.id} <- {_label(value, names)}")
    else:
        lines.append("outputs: " + ", ".join(_label(o, names) for o in outputs))
    text = "\n".join(lines)
    print(text, file=file or sys.stdout)
    return text


def to_networkx(obj: Any):
    """A networkx DiGraph: variables and apply nodes as nodes, data flow as edges."""
    import networkx as nx

    graph = nx.DiGraph()
    for node in toposort(_outputs_of(obj)):
        graph.add_node(id(node), kind="apply", op=str(node.op), site=node.site)
        for inp in node.inputs:
            graph.add_node(id(inp), kind="variable", type=str(inp.type), label=_label(inp, {}))
            graph.add_edge(id(inp), id(node))
        for out in node.outputs:
            graph.add_node(id(out), kind="variable", type=str(out.type), label=_label(out, {}))
            graph.add_edge(id(node), id(out))
    return graph


def to_dot(obj: Any, path: str | None = None) -> str:
    """DOT text of the graph; with ``path`` ending in .png/.svg, also rendered by graphviz."""
    lines = ["digraph kiln {", "  rankdir=TB;", "  node [fontname=monospace];"]
    seen: set[int] = set()
    outputs = _outputs_of(obj)

    def var_node(v: Variable) -> str:
        if id(v) not in seen:
            seen.add(id(v))
            shape = "box" if v.owner is None else "ellipse"
            label = f"{_label(v, {})}\\n{v.type}".replace('"', "'")
            lines.append(f'  v{id(v)} [shape={shape}, label="{label}"];')
        return f"v{id(v)}"

    for node in toposort(outputs):
        # a plain box: in graphviz "record" shapes the braces of Elemwise{tanh} would be fields
        op_label = str(node.op).replace('"', "'")
        lines.append(f'  a{id(node)} [shape=box, style=filled, fillcolor=lightgrey, label="{op_label}"];')
        for inp in node.inputs:
            lines.append(f"  {var_node(inp)} -> a{id(node)};")
        for out in node.outputs:
            lines.append(f"  a{id(node)} -> {var_node(out)};")
    for o in outputs:
        var_node(o)
    lines.append("}")
    text = "\n".join(lines)
    if path:
        fmt = os.path.splitext(path)[1].lstrip(".")
        if fmt == "dot" or not shutil.which("dot"):
            with open(path if fmt == "dot" else path + ".dot", "w") as f:
                f.write(text)
        else:
            subprocess.run(["dot", f"-T{fmt}", "-o", path], input=text.encode(), check=True)
    return text


def iter_nodes(obj: Any) -> Iterable:
    return toposort(_outputs_of(obj))
