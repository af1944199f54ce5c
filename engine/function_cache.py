"""The function-level compile cache: a compiled function restored without running LLVM.

Two levels (DESIGN.md "caching"): below, the kernel-level cache of backends/llvm/runtime.py
(object code by sha256 of a kernel's IR listing, target, versions); above, this one.

Key: ``function_key(fgraph, backend, target, ...)`` = sha256 of

* ``graph_text(fgraph)``: a canonical text of the *optimized* graph, one node a line in
  schedule order, variables numbered by first appearance, ops spelled by module, class and
  props (recursively, so fused expressions and nested ops are exact), every type, constants
  by dtype, shape and the sha256 of their bytes, which inputs are shared and which outputs
  are updates. Names and source lines are left out: they do not change the code;
* the backend name, the target (triple, CPU name, CPU features), the opt level and whatever
  else the backend passes (vector width, threads);
* versions: Kiln's, llvmlite's, and sha256 of the sources that turn a graph into code (every
  top-level engine module, the ops, the lowering rules, the LLVM backend), so an edited rule
  never serves stale code.

Entry: JSON only (never pickle), in the ``functions`` namespace of engine/cache.py's
DiskCache: ``{"format", "kernels": [{"name", "key", "nodes"}], "n_nodes", "opt"}`` — the
kernel names the lowering produced (the warm path checks it reproduces exactly these) and, per
kernel, the key of its object code in the kernel-level cache. A warm compile lowers the graph
(closures are not serializable: this is Python only, no LLVM), checks the names, loads every
object by its key into one MCJIT engine and runs the loop transforms only if someone asks for
a kernel's source. A missing or corrupt entry, or a missing object, falls back to the cold
path, which recompiles and rewrites the entry.
"""

from __future__ import annotations

import hashlib
import json

import numpy as np

from engine.cache import cache_key, get_cache, kiln_version, sources_sha256

FORMAT = 1
NAMESPACE = "functions"
STATS = {"hits": 0, "misses": 0, "stored": 0}

#: files whose contents determine the code generated for a graph: broadly (every top-level
#: engine module, the ops, the lowering rules, the whole LLVM backend), because the warm path
#: reuses stored kernel keys without re-deriving the kernels, so a missed source would load
#: object code built for another kernel signature. An edit elsewhere only costs a re-lowering:
#: unchanged kernels still hit the kernel-level cache.
SOURCES = ("engine", "engine/ops", "engine/lowering", "backends/common.py", "backends/llvm")


def sources_hash() -> str:
    """sha256 over the code-generating sources (SOURCES)."""
    return sources_sha256(*SOURCES)


def _canon(value) -> str:
    """Exact, deterministic text of an op prop (nested ops by class and props)."""
    from engine.graph import Op

    if isinstance(value, Op):
        cls = type(value)
        return f"{cls.__module__}.{cls.__qualname__}({', '.join(_canon(v) for v in value._prop_values())})"
    if isinstance(value, (tuple, list)):
        return "(" + ", ".join(_canon(v) for v in value) + ",)"
    if isinstance(value, float):
        return float.hex(value)
    if isinstance(value, np.generic):
        return _canon(value.item())
    return repr(value)


def graph_text(fgraph, order: list | None = None) -> str:
    """Canonical text of an optimized FunctionGraph (see the module docstring)."""
    from engine.graph import Constant, SharedVariable, toposort

    names: dict[int, str] = {}
    lines: list[str] = []
    for i, v in enumerate(fgraph.inputs):
        names[id(v)] = f"%{len(names)}"
        kind = "shared" if isinstance(v, SharedVariable) else "input"
        lines.append(f"{names[id(v)]} = {kind} {i} :: {v.type}")

    def name(v) -> str:
        if id(v) not in names:
            names[id(v)] = f"%{len(names)}"
            if isinstance(v, Constant):
                digest = hashlib.sha256(np.ascontiguousarray(v.value).tobytes()).hexdigest()[:32]
                lines.append(f"{names[id(v)]} = const {v.type} {digest} weak={v.weak}")
            else:
                lines.append(f"{names[id(v)]} = free :: {v.type}")
        return names[id(v)]

    for node in order if order is not None else toposort(fgraph.outputs):
        args = ", ".join(name(i) for i in node.inputs)
        outs = []
        for o in node.outputs:
            names[id(o)] = f"%{len(names)}"
            outs.append(names[id(o)])
        types = ", ".join(str(o.type) for o in node.outputs)
        lines.append(f"{', '.join(outs)} = {_canon(node.op)}({args}) :: {types}")
    lines.append("outputs " + ", ".join(name(o) for o in fgraph.outputs))
    lines.append(f"user_outputs {fgraph.n_user_outputs} user_inputs {fgraph.n_user_inputs}")
    lines.append("updated " + ", ".join(names.get(id(s), "?") for s in fgraph.updated))
    return "\n".join(lines)


def function_key(text: str, backend: str, target: dict, extra: tuple = ()) -> str:
    import llvmlite

    return cache_key("kiln-function", FORMAT, text, backend, target.get("triple"), target.get("cpu"),
                     target.get("features"), llvmlite.__version__, kiln_version(), sources_hash(), *extra)


def load(key: str) -> dict | None:
    """The entry under key, or None (missing, corrupt or of another format: a miss)."""
    hit = get_cache(NAMESPACE).get(key)
    if hit is None:
        STATS["misses"] += 1
        return None
    try:
        entry = json.loads(hit[0].decode())
    except (UnicodeDecodeError, ValueError):
        STATS["misses"] += 1
        return None
    if not isinstance(entry, dict) or entry.get("format") != FORMAT or not isinstance(entry.get("kernels"), list):
        STATS["misses"] += 1
        return None
    STATS["hits"] += 1
    return entry


def store(key: str, entry: dict) -> bool:
    entry = dict(entry, format=FORMAT)
    data = json.dumps(entry, sort_keys=True).encode()
    ok = get_cache(NAMESPACE).put(key, data, {"kind": "function", "kernels": len(entry.get("kernels", []))})
    STATS["stored"] += int(ok)
    return ok
