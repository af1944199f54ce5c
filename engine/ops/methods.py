"""Python operators and Theano-style methods of ``Variable`` (``x + y``, ``x.sum(axis=1)``,
``x[1:3]``, ``x.T``, ``x.shape``...), built from the op builders."""

from __future__ import annotations

from engine.graph import Variable
from engine.ops import blas, indexing
from engine.ops import elemwise as E
from engine.ops import reduce as R
from engine.ops import shape as S


class SymbolicShape:
    """``x.shape``: indexable to symbolic int64 scalars (constants where the dim is static)."""

    def __init__(self, x: Variable) -> None:
        self.x = x

    def __getitem__(self, axis):
        if isinstance(axis, slice):
            return tuple(S.shape_of(self.x, a) for a in range(self.x.ndim)[axis])
        return S.shape_of(self.x, axis)

    def __len__(self) -> int:
        return self.x.ndim

    def __iter__(self):
        return (S.shape_of(self.x, a) for a in range(self.x.ndim))

    def as_variable(self) -> Variable:
        return S.Shape()(self.x)


def _binary(name: str, reflected: bool = False):
    if reflected:
        return lambda self, other: E.apply(name, other, self)
    return lambda self, other: E.apply(name, self, other)


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
        "reshape": lambda self, *shape, ndim=None: S.reshape(
            self, shape[0] if len(shape) == 1 and isinstance(shape[0], (tuple, list)) else shape),
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
