"""What the code-generating backends (llvm, cuda) share, so that each keeps only what differs.

``TableRenderer`` is the base of their kernel renderers: ``block(stmts)`` and ``expr(e)``
dispatch on the kernel-IR node type to the method ``EXPR_METHODS`` / ``STMT_METHODS`` name
(one table for every backend). A renderer implements those methods; a node type whose method
it lacks fails through its ``fail(node, message)``, naming the node.
"""

from __future__ import annotations

from engine import kernel_ir as ir

EXPR_METHODS = {
    ir.Const: "e_const", ir.Var: "e_var", ir.ScalarParam: "e_var", ir.Load: "e_load",
    ir.Dim: "e_dim", ir.Stride: "e_stride", ir.BinOp: "e_binop", ir.UnOp: "e_unop",
    ir.FMA: "e_fma", ir.Cast: "e_cast", ir.Select: "e_select",
    ir.Broadcast: "e_broadcast", ir.Ramp: "e_ramp", ir.ReduceLanes: "e_reduce",
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
