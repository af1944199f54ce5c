"""The numpy reference backend: every op run by an independent numpy implementation.

This is the oracle every other backend is tested against. Implementations live in a table
``IMPLS`` (op class -> function), filled by the modules of this package, one per op family.
"""

from __future__ import annotations

import numpy as np

from backends import Backend, Capabilities, CompiledGraph
from backends.numpy.table import IMPLS, run_node


class NumpyCompiledGraph(CompiledGraph):
    def __init__(self, fgraph, mode: str | None = None) -> None:
        from engine.graph import Constant, toposort

        self.fgraph = fgraph
        #: mode="guard": every float result is checked for NaN/Inf right after its node runs
        self.guard = mode == "guard"
        self.nodes = toposort(fgraph.outputs)
        self.input_ids = [id(v) for v in fgraph.inputs]
        self.constants = {}
        for node in self.nodes:
            for inp in node.inputs:
                if isinstance(inp, Constant):
                    self.constants[id(inp)] = inp.value
        for out in fgraph.outputs:
            if isinstance(out, Constant):
                self.constants[id(out)] = out.value
        self.kernels = []

    def run(self, arrays: list[np.ndarray]) -> list[np.ndarray]:
        values = dict(self.constants)
        values.update(zip(self.input_ids, arrays))
        for node in self.nodes:
            results = run_node(node, [values[id(i)] for i in node.inputs])
            for out, value in zip(node.outputs, results):
                if self.guard:
                    _check_finite(node, out, value)
                values[id(out)] = value
        return [values[id(o)] for o in self.fgraph.outputs]


class NumpyBackend(Backend):
    name = "numpy"
    capabilities = Capabilities()
    fuses = False

    def compile(self, fgraph, options: dict) -> CompiledGraph:
        missing = sorted({type(n.op).__name__ for n in _nodes(fgraph) if type(n.op) not in IMPLS})
        if missing:
            raise NotImplementedError(f"numpy backend: no implementation for {', '.join(missing)}")
        return NumpyCompiledGraph(fgraph, options.get("mode"))


def _check_finite(node, out, value: np.ndarray) -> None:
    """Raise GuardError naming the node (and the user's line) if ``value`` has NaN or Inf."""
    from engine.errors import GuardError, describe_node

    if value.dtype.kind != "f" or np.isfinite(value).all():
        return
    bad = ~np.isfinite(value)
    where = tuple(int(i) for i in np.argwhere(bad)[0]) if value.ndim else ()
    raise GuardError(f"guard: {describe_node(node)} produced {int(bad.sum())} non-finite value(s) in its output "
                     f"{out.index} of type {out.type} (first {value[where]} at index {where}); "
                     f"no shared variable was updated")


def _nodes(fgraph):
    from engine.graph import toposort

    return toposort(fgraph.outputs)
