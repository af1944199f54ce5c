"""What the code-generating backends (llvm, cuda) share, so that each keeps only what differs.

``Slots`` numbers the values of a compiled graph (constants pre-filled); ``PlannedGraph`` is
the base of their compiled graphs: per-node plans run over those slots, with the run-time
shape check every call starts with (engine/shape_check.py) and the guard-mode flag.

``TableRenderer`` is the base of their kernel renderers: ``block(stmts)`` and ``expr(e)``
dispatch on the kernel-IR node type to the method ``EXPR_METHODS`` / ``STMT_METHODS`` name
(one table for every backend). A renderer implements those methods; a node type whose method
it lacks fails through its ``fail(node, message)``, naming the node.
"""

from __future__ import annotations

from backends import CompiledGraph
from engine import kernel_ir as ir
from engine.graph import Constant

EXPR_METHODS = {
    ir.Const: "e_const", ir.Var: "e_var", ir.ScalarParam: "e_var", ir.Load: "e_load",
    ir.Dim: "e_dim", ir.Stride: "e_stride", ir.BinOp: "e_binop", ir.UnOp: "e_unop",
    ir.FMA: "e_fma", ir.Cast: "e_cast", ir.Select: "e_select",
    ir.Broadcast: "e_broadcast", ir.Ramp: "e_ramp", ir.ReduceLanes: "e_reduce",
    ir.Shuffle: "e_shuffle",
    ir.ThreadIdx: "e_gpu_index", ir.BlockIdx: "e_gpu_index", ir.BlockDim: "e_gpu_index",
}
STMT_METHODS = {
    ir.Loop: "s_loop", ir.Store: "s_store", ir.Declare: "s_declare", ir.Assign: "s_assign",
    ir.If: "s_if", ir.Alloc: "s_alloc", ir.Barrier: "s_barrier",
}


class TableRenderer:
    """Dispatch of kernel-IR nodes to ``e_*`` / ``s_*`` methods (see the module docstring)."""

    def fail(self, node, msg):
        raise NotImplementedError

    @classmethod
    def _tables(cls) -> tuple:
        """({expr node type: function}, {statement node type: function}), once per class."""
        tables = cls.__dict__.get("_emitter_tables")
        if tables is None:
            tables = tuple({t: getattr(cls, m) for t, m in methods.items() if hasattr(cls, m)}
                           for methods in (EXPR_METHODS, STMT_METHODS))
            cls._emitter_tables = tables
        return tables

    def block(self, body):
        table = self._tables()[1]
        for s in body:
            fn = table.get(type(s))
            if fn is None:
                self.fail(s, f"no emitter for {type(s).__name__}")
            fn(self, s)

    def expr(self, e):
        fn = self._tables()[0].get(type(e))
        if fn is None:
            self.fail(e, f"no emitter for {type(e).__name__}")
        return fn(self, e)


class Slots:
    """``slots(v)``: the slot of variable v, numbered on first sight (a Constant's slot starts
    with its value); ``init_values``: the slot values a call starts from."""

    def __init__(self) -> None:
        #: {id(variable): slot}
        self.ids: dict = {}
        self.init_values: list = []

    def __call__(self, v) -> int:
        k = self.ids.get(id(v))
        if k is None:
            k = self.ids[id(v)] = len(self.init_values)
            self.init_values.append(v.value if isinstance(v, Constant) else None)
        return k


class PlannedGraph(CompiledGraph):
    """A compiled graph running per-node plans over numbered value slots (llvm, cuda)."""

    def __init__(self, fgraph, plans, n_slots, init_values, input_slots, output_slots, kernels,
                 host_nodes) -> None:
        from engine.shape_check import ShapeChecker
        self.fgraph = fgraph
        self.plans = plans
        self.n_slots = n_slots
        self.init_values = init_values
        self.input_slots = input_slots
        self.output_slots = output_slots
        self.kernels = kernels
        #: nodes without a kernel lowering, run by the numpy oracle on the host
        self.host_nodes = host_nodes
        #: mode="guard": every float result is checked for NaN/Inf after its node ran
        self.guard = False
        #: every node's run-time shape check, before any kernel runs (engine/shape_check.py)
        self.shape_check = ShapeChecker(plans, init_values, input_slots, fgraph)
