"""The numpy reference backend: every op run by an independent numpy implementation.

This is the oracle every other backend is tested against. Implementations live in a table
``IMPLS`` (op class -> function), filled by the modules of this package, one per op family.
"""

from __future__ import annotations

import numpy as np

from backends import Backend, Capabilities, CompiledGraph
from backends.numpy.table import IMPLS, run_node


class NumpyCompiledGraph(CompiledGraph):
    def __init__(self, fgraph) -> None:
        from engine.graph import Constant, toposort

        self.fgraph = fgraph
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
        return NumpyCompiledGraph(fgraph)


def _nodes(fgraph):
    from engine.graph import toposort

    return toposort(fgraph.outputs)
