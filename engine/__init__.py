"""Kiln's engine: build, differentiate, optimize and compile graphs.

    import engine
    f = engine.function([x], y, updates={W: W - 0.1 * engine.grad(cost, W)})
"""

from engine import ops  # noqa: F401  (gives Variable its operators)
from engine.config import config
from engine.debug import debugprint, to_dot, to_networkx
from engine.errors import DisconnectedInputError, GuardError, KilnError, KilnShapeError, KilnTypeError, KilnValueError
from engine.function import Function, function, shared
from engine.grad import grad, verify_grad
from engine.graph import Apply, Constant, Op, SharedVariable, Variable
from engine.ops.random import RandomStreams
from engine.ops.shape import stop_gradient
from engine.params import load_params, save_params
from engine.types import TensorType

__version__ = "0.1.0"

__all__ = [
    "Apply", "Constant", "DisconnectedInputError", "Function", "GuardError", "KilnError", "KilnShapeError",
    "KilnTypeError", "KilnValueError", "Op", "RandomStreams", "SharedVariable", "TensorType", "Variable",
    "config", "debugprint", "function", "grad", "load_params", "save_params", "shared", "stop_gradient",
    "to_dot", "to_networkx", "verify_grad",
]
