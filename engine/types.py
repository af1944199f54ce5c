"""Dtypes, ``TensorType`` and the validation of values handed to compiled functions.

A ``TensorType`` is a dtype plus a static shape in which ``None`` marks a dimension known only
at run time. Dtype promotion follows numpy 2 (NEP 50): Python scalars are *weak* and take the
tensor's dtype, so ``W - 0.1 * g`` stays float32.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from engine.errors import KilnShapeError, KilnTypeError

DTYPES = (
    "bool", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64",
    "float32", "float64",
)
FLOAT_DTYPES = ("float32", "float64")
INT_DTYPES = ("int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64")


def as_dtype(dtype: Any) -> str:
    """Canonical dtype name; raises for dtypes Kiln does not support."""
    name = np.dtype(dtype).name if dtype is not None else None
    if name not in DTYPES:
        raise KilnTypeError(f"unsupported dtype {dtype!r}; Kiln supports {', '.join(DTYPES)}")
    return name


def is_float(dtype: str) -> bool:
    return dtype in FLOAT_DTYPES


def is_integer(dtype: str) -> bool:
    return dtype in INT_DTYPES


def is_differentiable(dtype: str) -> bool:
    return dtype in FLOAT_DTYPES


def promote(*dtypes: str, weak: Sequence[Any] = ()) -> str:
    """Result dtype of combining tensors of ``dtypes`` with weak Python scalars ``weak``.

    numpy 2 rules, except that a Python float meeting only integer/bool tensors gives
    ``config.floatX`` (numpy would say float64): ``ivector * 0.5`` must not drag a float32
    model into float64, just as Python float constants on their own are floatX.
    """
    result = as_dtype(np.result_type(*[np.dtype(d) for d in dtypes], *weak))
    if is_float(result) and not any(is_float(d) for d in dtypes):
        from engine.config import config

        return config.floatX
    return result


def broadcast_shapes(*shapes: tuple, where: str = "") -> tuple:
    """Static broadcast of shapes with ``None`` dims (numpy rules, right-aligned).

    A ``None`` dim against a known dim n > 1 gives n (at run time the ``None`` must be 1 or n);
    two known dims must agree or one must be 1.
    """
    ndim = max((len(s) for s in shapes), default=0)
    result = []
    for axis in range(ndim):
        dims = [s[axis - ndim + len(s)] for s in shapes if axis - ndim + len(s) >= 0]
        known = {d for d in dims if d is not None and d != 1}
        if len(known) > 1:
            raise KilnShapeError(
                f"{where}shapes {' and '.join(format_shape(s) for s in shapes)} cannot be "
                f"broadcast together (axis {axis - ndim} has sizes {sorted(known)})"
            )
        if known:
            result.append(known.pop())
        elif any(d is None for d in dims):
            result.append(None)
        else:
            result.append(1)
    return tuple(result)


def format_shape(shape: Iterable) -> str:
    return "(" + ", ".join("?" if d is None else str(d) for d in shape) + (",)" if len(tuple(shape)) == 1 else ")")


@dataclass(frozen=True)
class TensorType:
    """The type of a symbolic tensor: dtype and static shape (``None`` = known at run time)."""

    dtype: str
    shape: tuple

    def __post_init__(self) -> None:
        object.__setattr__(self, "dtype", as_dtype(self.dtype))
        shape = tuple(None if d is None else int(d) for d in self.shape)
        if any(d is not None and d < 0 for d in shape):
            raise KilnShapeError(f"negative dimension in shape {shape}")
        object.__setattr__(self, "shape", shape)
        # not a field (equality and hashing stay dtype + shape): the call path's exact-dtype test
        object.__setattr__(self, "np_dtype", np.dtype(self.dtype))

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def broadcastable(self) -> tuple:
        return tuple(d == 1 for d in self.shape)

    def __str__(self) -> str:
        return f"{self.dtype}{format_shape(self.shape)}"

    def with_shape(self, shape: tuple) -> TensorType:
        return TensorType(self.dtype, shape)

    def with_dtype(self, dtype: str) -> TensorType:
        return TensorType(dtype, self.shape)

    def accepts_shape(self, shape: tuple) -> bool:
        if len(shape) != len(self.shape):
            return False
        for d, s in zip(self.shape, shape):  # a plain loop: this runs on every call of a function
            if d is not None and d != s:
                return False
        return True

    def filter(self, value: Any, name: str, allow_downcast: bool = False, site: str | None = None,
               kind: str = "input") -> np.ndarray:
        """Check (and convert losslessly) a value handed to a function input of this type.

        Lossless conversions are made (an int8 array for a float32 input); a conversion that
        could lose information needs ``allow_downcast=True``. Python numbers and (nested) lists
        of them are *weak*, as in expressions: they are accepted when every value survives the
        conversion exactly, and Python floats are accepted by any float input. ``kind`` names
        the receiver in messages ("input", "shared variable").
        """
        if type(value) is np.ndarray and value.dtype == self.np_dtype and self.accepts_shape(value.shape):
            return value  # the common call: nothing to convert, nothing to report
        where = f"{kind} '{name}'" + (f" (declared at {site})" if site else "")
        if isinstance(value, np.ndarray) and value.dtype == self.np_dtype:
            array = value
        else:
            array = np.asarray(value)
            given = array.dtype.name
            if given == "object" or array.dtype.kind in "USV":
                raise KilnTypeError(
                    f"{where}: expected {self}, given a {type(value).__name__} of dtype {given}")
            if given != self.dtype:
                lossless = np.can_cast(array.dtype, self.dtype, "safe")
                if not lossless and is_python_data(value):
                    lossless = (is_float(self.dtype) and array.dtype.kind == "f") or _exactly(array, self.dtype)
                if not lossless and not allow_downcast:
                    raise KilnTypeError(
                        f"{where}: expected dtype {self.dtype}, given {given}; converting "
                        f"would lose precision (cast it yourself, or pass allow_input_downcast=True)"
                    )
                array = array.astype(self.dtype)
        if array.ndim != self.ndim:
            raise KilnTypeError(
                f"{where}: expected {self.ndim}-d {self}, given a {array.ndim}-d array "
                f"of shape {format_shape(array.shape)}"
            )
        if not self.accepts_shape(array.shape):
            raise KilnShapeError(
                f"{where}: expected shape {format_shape(self.shape)}, given "
                f"{format_shape(array.shape)}"
            )
        return array


def is_python_data(value: Any) -> bool:
    """A Python number, or a (nested) list/tuple whose first leaf is one (numpy values are strong)."""
    while isinstance(value, (list, tuple)) and value:
        value = value[0]
    return isinstance(value, (bool, int, float)) and not isinstance(value, np.generic)


def _exactly(array: np.ndarray, dtype: str) -> bool:
    """Whether every value of ``array`` survives conversion to ``dtype`` unchanged."""
    with np.errstate(all="ignore"):
        converted = array.astype(dtype)
        return bool(np.all(converted.astype(array.dtype) == array))
