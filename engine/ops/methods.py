"""Python operators and Theano-style methods of ``Variable`` (``x + y``, ``x.sum(axis=1)``,
``x[1:3]``, ``x.T``, ``x.shape``...), built from the op builders."""

from __future__ import annotations

import numpy as np

from engine.errors import KilnValueError
from engine.graph import Variable
from engine.ops import blas, indexing
from engine.ops import elemwise as E
from engine.ops import reduce as R
from engine.ops import shape as S


class SymbolicShape(Variable):
    """``x.shape``: the int64 vector output of a ``Shape`` node, so it works wherever a tensor
    does (``T.zeros(x.shape)``, ``rng.normal(size=x.shape)``, ``x.shape * 2``, as an output).

    Unlike a plain vector it has a known length, iterates, and an integer index gives the
    dimension as a constant where it is static (so ``reshape(y, x.shape)`` keeps static shapes);
    a slice gives a tuple of scalars, so ``x.shape[:2] + (-1,)`` builds a shape as in numpy.
    """

    def __init__(self, x: Variable) -> None:
        node = S.Shape().make_node(x)
        super().__init__(node.outputs[0].type, node, 0)
        node.outputs[0] = self
        self.x = x

    def __getitem__(self, key):
        if isinstance(key, slice):
            return tuple(S.shape_of(self.x, a) for a in range(self.x.ndim)[key])
        if isinstance(key, (int, np.integer)):
            if not -self.x.ndim <= key < self.x.ndim:
                raise KilnValueError(f"shape[{key}] of a {self.x.ndim}-d tensor {self.x.type}")
            return S.shape_of(self.x, int(key))
        return indexing.subtensor(self, key)

    def __len__(self) -> int:
        return self.x.ndim

    def __iter__(self):
        return (S.shape_of(self.x, a) for a in range(self.x.ndim))

    def clone(self) -> Variable:
        return Variable(self.type, None, 0, self.name, self.site)

    def as_variable(self) -> Variable:
        return self


def _binary(name: str, reflected: bool = False):
    if reflected:
        return lambda self, other: E.apply(name, other, self)
    return lambda self, other: E.apply(name, self, other)


def _reshape_method(self: Variable, *shape, ndim=None) -> Variable:
    """``x.reshape(3, 2)``, ``x.reshape((3, 2))``, ``x.reshape(y.shape)``."""
    if len(shape) == 1 and (isinstance(shape[0], (tuple, list)) or getattr(shape[0], "ndim", 0) == 1):
        shape = shape[0]
    return S.reshape(self, shape)


def _getitem(self: Variable, key):
    return indexing.subtensor(self, key)


def install_variable_methods() -> None:
    ops = {
        "__add__": _binary("add"), "__radd__": _binary("add", True),
        "__sub__": _binary("sub"), "__rsub__": _binary("sub", True),
        "__mul__": _binary("mul"), "__rmul__": _binary("mul", True),
        "__truediv__": _binary("true_div"), "__rtruediv__": _binary("true_div", True),
        "__floordiv__": _binary("floor_div"), "__rfloordiv__": _binary("floor_div", True),
        "__mod__": _binary("mod"), "__rmod__": _binary("mod", True),
        "__pow__": _binary("pow"), "__rpow__": _binary("pow", True),
        "__lt__": _binary("lt"), "__le__": _binary("le"), "__gt__": _binary("gt"), "__ge__": _binary("ge"),
        "__and__": _binary("and"), "__or__": _binary("or"), "__xor__": _binary("xor"),
        "__rand__": _binary("and", True), "__ror__": _binary("or", True),
        "__neg__": lambda self: E.apply("neg", self),
        "__pos__": lambda self: self,
        "__abs__": lambda self: E.apply("abs", self),
        "__invert__": lambda self: E.apply("invert", self),
        "__matmul__": lambda self, other: blas.dot(self, other),
        "__rmatmul__": lambda self, other: blas.dot(other, self),
        "__getitem__": _getitem,
        "sum": lambda self, axis=None, keepdims=False: R.reduce(self, "sum", axis, keepdims),
        "prod": lambda self, axis=None, keepdims=False: R.reduce(self, "prod", axis, keepdims),
        "max": lambda self, axis=None, keepdims=False: R.reduce(self, "max", axis, keepdims),
        "min": lambda self, axis=None, keepdims=False: R.reduce(self, "min", axis, keepdims),
        "mean": lambda self, axis=None, keepdims=False: R.mean(self, axis, keepdims),
        "var": lambda self, axis=None, keepdims=False, ddof=0: R.var(self, axis, keepdims, ddof),
        "std": lambda self, axis=None, keepdims=False, ddof=0: R.std(self, axis, keepdims, ddof),
        "argmax": lambda self, axis=None, keepdims=False: R.argmax(self, axis, keepdims),
        "argmin": lambda self, axis=None, keepdims=False: R.argmax(self, axis, keepdims, minimum=True),
        "dot": lambda self, other: blas.dot(self, other),
        "reshape": _reshape_method,
        "flatten": lambda self, ndim=1: S.flatten(self, ndim),
        "dimshuffle": lambda self, *pattern: S.dimshuffle(self, *pattern),
        "transpose": lambda self, *axes: S.transpose(self, axes[0] if len(axes) == 1 else (axes or None)),
        "astype": lambda self, dtype: E.cast(self, dtype),
        "exp": lambda self: E.apply("exp", self),
        "log": lambda self: E.apply("log", self),
        "sqrt": lambda self: E.apply("sqrt", self),
    }
    for name, fn in ops.items():
        setattr(Variable, name, fn)
    Variable.T = property(lambda self: S.transpose(self))
    Variable.shape = property(lambda self: SymbolicShape(self))
    Variable.size = property(lambda self: R.count(self, tuple(range(self.ndim)), "int64"))
