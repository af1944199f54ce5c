"""The optimized-graph cache: a warm ``engine.function`` restores the rewritten graph instead of
running the rewrite passes (the first of the two function-level steps DESIGN.md's cache skips;
the second, LLVM, is engine/function_cache.py's).

Key: sha256 of the *unoptimized* graph's canonical text (``function_cache.graph_text``: ops by
module, class and props, every type, constants by the digest of their bytes), the fuse flag,
``config.floatX`` (rules that build ops settle dtypes with it), Kiln's version and the sources
of the graph, the ops and the rewrites (``engine/*.py``, ``engine/ops``, ``engine/rewrite``).
A graph holding an op from outside Kiln (a user's Op subclass) is never cached: its behaviour
is not in any hashed source.

Entry (JSON, never pickle; namespace ``graphs`` of engine/cache.py's DiskCache)::

    {"format", "constants": [...], "nodes": [[op, [ref...], site, [site...], [name...]]...],
     "outputs": [ref...], "requirements": [...], "stats": {...}, "text_sha256": ...}

A ref is ``["i", k]`` (the function's k-th input: user inputs, then shared variables),
``["c", k]`` (the entry's k-th constant) or ``["n", node, output]``. Ops are rebuilt as
``cls(*props)`` (every op's constructor takes exactly its props), for classes of Kiln's own
modules that subclass ``Op``; nodes by ``op.make_node``, which recomputes every output type.
Sites and names are not part of the key, so they are stored as the position of a node or
variable of the *current* unoptimized graph carrying the same one: a restored graph names the
user's current source lines. The restored graph's canonical text must hash to
``text_sha256``, else the entry is ignored and the passes run (and store it again).
"""

from __future__ import annotations

import base64
import hashlib
import importlib
import json
import time

import numpy as np

from engine.cache import cache_key, get_cache, kiln_version, sources_sha256
from engine.config import config
from engine.debug import debug_enabled, debug_log
from engine.graph import Apply, Constant, Op, Variable, graph_inputs, toposort

FORMAT = 1
NAMESPACE = "graphs"
SOURCES = ("engine", "engine/ops", "engine/rewrite")
STATS = {"hits": 0, "misses": 0, "stored": 0}
#: modules whose Op classes an entry may name
_KILN_MODULES = ("engine.", "frontends.")


class _Unserializable(Exception):
    pass


def optimize_cached(fgraph, fuse: bool) -> None:
    """``engine.rewrite.optimize(fgraph, fuse)``, restored from the cache when it holds this graph."""
    start = time.perf_counter()
    key = _key(fgraph, fuse) if not debug_enabled("rewrites") else None
    carriers = _Carriers(fgraph) if key else None
    if key and _restore(fgraph, key, carriers):
        fgraph.profile["optimize.restored"] = time.perf_counter() - start
        return
    from engine.rewrite import optimize  # imported on a miss only: a warm process needs no rules

    optimize(fgraph, fuse=fuse)
    if key:
        _store(fgraph, key, carriers)


# ----------------------------------------------------------------------------- key

def _kiln_op(op: Op) -> bool:
    return type(op).__module__.startswith(_KILN_MODULES)


def _key(fgraph, fuse: bool) -> str | None:
    if not get_cache(NAMESPACE).enabled:
        return None
    from engine.function_cache import graph_text

    order = toposort(fgraph.outputs)
    if not all(_kiln_op(node.op) for node in order):
        return None
    return cache_key("kiln-graph", FORMAT, graph_text(fgraph, order), fuse, config.floatX, kiln_version(),
                     sources_sha256(*SOURCES))


class _Carriers:
    """Sites and names of the unoptimized graph by position, and the position of each."""

    def __init__(self, fgraph) -> None:
        items: list = list(fgraph.inputs)
        for node in toposort(fgraph.outputs):
            items.append(node)
            items.extend(node.outputs)
        self.constants = [v for v in graph_inputs(fgraph.outputs) if isinstance(v, Constant)]
        items.extend(self.constants)
        self.sites = [getattr(x, "site", None) for x in items]
        self.names = [getattr(x, "name", None) for x in items]
        self._site_at: dict = {}
        self._name_at: dict = {}
        for k, (site, name) in enumerate(zip(self.sites, self.names)):
            self._site_at.setdefault(site, k)
            self._name_at.setdefault(name, k)

    def site_ref(self, site):
        k = self._site_at.get(site)
        return k if k is not None else ["s", site]

    def name_ref(self, name):
        if name is None:
            return None
        k = self._name_at.get(name)
        return k if k is not None else ["s", name]

    def site(self, ref):
        return self.sites[ref] if isinstance(ref, int) else ref[1] if ref else None

    def name(self, ref):
        return None if ref is None else self.names[ref] if isinstance(ref, int) else ref[1]


# ----------------------------------------------------------------------------- values

def _encode(value):
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, np.generic):
        return {"np": value.dtype.str, "v": _encode(value.item())}
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return {"f": value.hex()}
    if isinstance(value, tuple):
        return {"t": [_encode(v) for v in value]}
    if isinstance(value, list):
        return {"l": [_encode(v) for v in value]}
    if isinstance(value, np.dtype):
        return {"dtype": value.str}
    if isinstance(value, Op):
        cls = type(value)
        if not _kiln_op(value):
            raise _Unserializable(f"op class {cls.__module__}.{cls.__qualname__}")
        return {"op": f"{cls.__module__}:{cls.__qualname__}", "props": [_encode(v) for v in value._prop_values()]}
    raise _Unserializable(type(value).__name__)


def _decode(value):
    if not isinstance(value, dict):
        if isinstance(value, list):
            raise ValueError("a bare list")
        return value
    if "f" in value:
        return float.fromhex(value["f"])
    if "t" in value:
        return tuple(_decode(v) for v in value["t"])
    if "l" in value:
        return [_decode(v) for v in value["l"]]
    if "np" in value:
        return np.dtype(value["np"]).type(_decode(value["v"]))
    if "dtype" in value:
        return np.dtype(value["dtype"])
    if "op" in value:
        return _op_class(value["op"])(*[_decode(v) for v in value["props"]])
    raise ValueError(f"unknown value tag {sorted(value)}")


def _op_class(path: str) -> type:
    module, _, qualname = path.partition(":")
    if not module.startswith(_KILN_MODULES):
        raise ValueError(f"op class outside Kiln: {path}")
    obj = importlib.import_module(module)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    if not (isinstance(obj, type) and issubclass(obj, Op)):
        raise ValueError(f"{path} is not an Op")
    return obj


def _encode_constant(c: Constant, carriers: _Carriers) -> dict:
    entry = {"weak": c.weak, "site": carriers.site_ref(c.site), "name": carriers.name_ref(c.name)}
    same = next((k for k, o in enumerate(carriers.constants) if o is c or o.signature() == c.signature()), None)
    if same is not None:
        entry["from"] = same
    elif c.weak:
        entry.update(dtype=c.dtype, python=_encode(c.python_value))
    else:
        entry.update(dtype=c.value.dtype.str, shape=list(c.value.shape),
                     data=base64.b64encode(np.ascontiguousarray(c.value).tobytes()).decode())
    return entry


def _decode_constant(entry: dict, carriers: _Carriers) -> Constant:
    if "from" in entry:
        return carriers.constants[entry["from"]]
    site, name = carriers.site(entry["site"]), carriers.name(entry["name"])
    if entry["weak"]:
        return Constant(_decode(entry["python"]), dtype=entry["dtype"], name=name, weak=True, site=site)
    dtype = np.dtype(entry["dtype"])
    raw = base64.b64decode(entry["data"], validate=True)
    value = np.frombuffer(raw, dtype=dtype).reshape(entry["shape"])
    return Constant(value, dtype=dtype.name, name=name, site=site)


# ----------------------------------------------------------------------------- store / restore

def _store(fgraph, key: str, carriers: _Carriers) -> None:
    from engine.function_cache import graph_text

    inputs = {id(v): k for k, v in enumerate(fgraph.inputs)}
    refs: dict[int, list] = {}
    constants: list[dict] = []

    def ref(v: Variable) -> list:
        if id(v) in inputs:
            return ["i", inputs[id(v)]]
        if id(v) not in refs:
            if not isinstance(v, Constant):
                raise _Unserializable(f"free variable {v!r}")
            refs[id(v)] = ["c", len(constants)]
            constants.append(_encode_constant(v, carriers))
        return refs[id(v)]

    try:
        order = toposort(fgraph.outputs)
        nodes = []
        for k, node in enumerate(order):
            nodes.append([_encode(node.op), [ref(i) for i in node.inputs], carriers.site_ref(node.site),
                          [carriers.site_ref(o.site) for o in node.outputs],
                          [carriers.name_ref(o.name) for o in node.outputs]])
            for j, o in enumerate(node.outputs):
                refs[id(o)] = ["n", k, j]
        entry = {
            "format": FORMAT, "constants": constants, "nodes": nodes,
            "outputs": [ref(o) for o in fgraph.outputs],
            "requirements": [[inputs[id(v)], axis, size, op_name, carriers.site_ref(site)]
                             for v, axis, size, op_name, site in fgraph.requirements],
            "stats": getattr(fgraph, "rewrite_stats", {}),
            "text_sha256": hashlib.sha256(graph_text(fgraph, order).encode()).hexdigest(),
        }
        data = json.dumps(entry, sort_keys=True).encode()
    except (_Unserializable, KeyError, TypeError, ValueError) as why:
        debug_log("cache", f"optimized graph not cached: {why}")
        return
    STATS["stored"] += int(get_cache(NAMESPACE).put(key, data, {"kind": "graph", "nodes": len(nodes)}))


def _restore(fgraph, key: str, carriers: _Carriers) -> bool:
    from engine.function_cache import graph_text

    hit = get_cache(NAMESPACE).get(key)
    if hit is None:
        STATS["misses"] += 1
        return False
    outputs_before = list(fgraph.outputs)
    try:
        entry = json.loads(hit[0].decode())
        if entry.get("format") != FORMAT:
            raise ValueError(f"format {entry.get('format')}")
        constants = [_decode_constant(c, carriers) for c in entry["constants"]]
        built: list[Apply] = []

        def var(r) -> Variable:
            kind = r[0]
            if kind == "i":
                return fgraph.inputs[r[1]]
            if kind == "c":
                return constants[r[1]]
            if kind == "n":
                return built[r[1]].outputs[r[2]]
            raise ValueError(f"bad reference {r!r}")

        for op, args, site, out_sites, out_names in entry["nodes"]:
            node = _decode(op).make_node(*[var(a) for a in args])
            node.site = carriers.site(site)
            for o, s, n in zip(node.outputs, out_sites, out_names, strict=True):
                o.site, o.name = carriers.site(s), carriers.name(n)
            built.append(node)
        fgraph.outputs[:] = [var(r) for r in entry["outputs"]]
        text = graph_text(fgraph)
        if hashlib.sha256(text.encode()).hexdigest() != entry["text_sha256"]:
            raise ValueError("the restored graph differs from the one stored")
        fgraph.requirements = [(fgraph.inputs[i], axis, size, op_name, carriers.site(site))
                               for i, axis, size, op_name, site in entry["requirements"]]
        fgraph.rewrite_stats = dict(entry.get("stats") or {}, restored=True)
    except Exception as why:  # noqa: BLE001 - any bad entry is a miss: the passes run again
        fgraph.outputs[:] = outputs_before
        STATS["misses"] += 1
        debug_log("cache", f"optimized graph {key[:16]}: bad entry ({type(why).__name__}: {why}); rewriting")
        return False
    STATS["hits"] += 1
    debug_log("cache", f"optimized graph {key[:16]}: restored {len(built)} nodes, no rewrites")
    return True
