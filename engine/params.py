"""Saving and loading parameters as ``.npz`` (never pickle)."""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np

from engine.errors import KilnTypeError, KilnValueError
from engine.graph import SharedVariable
from engine.types import format_shape


def _keys(params: Sequence[SharedVariable]) -> list[str]:
    for p in params:
        if not isinstance(p, SharedVariable):
            raise KilnTypeError(f"save_params/load_params take shared variables, given {p!r}")
    keys = [p.name or f"param{i}" for i, p in enumerate(params)]
    if len(set(keys)) != len(keys):
        keys = [f"{i}:{k}" for i, k in enumerate(keys)]
    return keys


def save_params(path: str | os.PathLike, params: Sequence[SharedVariable]) -> None:
    """Write the values of ``params`` to an .npz file at exactly ``path``, keyed by name
    (index-prefixed if names are not unique)."""
    values = {k: p.get_value(borrow=True) for k, p in zip(_keys(params), params)}
    with open(path, "wb") as f:  # a file object: numpy would append ".npz" to a bare name
        np.savez(f, **values)


def load_params(path: str | os.PathLike, params: Sequence[SharedVariable], strict: bool = True) -> None:
    """Set ``params`` from an .npz written by ``save_params``.

    Every entry must exist with exactly the variable's dtype and a shape its type accepts;
    with ``strict`` the file must hold no other entries. Nothing is set unless all entries fit.
    """
    keys = _keys(params)
    with np.load(path, allow_pickle=False) as data:
        extra = sorted(set(data.files) - set(keys))
        if strict and extra:
            raise KilnValueError(f"load_params: {path} has entries {extra} that match none of the given "
                                 f"parameters {keys} (pass strict=False to load a subset)")
        values = []
        for key, p in zip(keys, params):
            if key not in data.files:
                raise KilnValueError(f"load_params: {path} has no entry {key!r} (it has {sorted(data.files)})")
            value = data[key]
            if value.dtype.name != p.dtype or not p.type.accepts_shape(value.shape):
                raise KilnValueError(
                    f"load_params: entry {key!r} of {path} is {value.dtype.name}{format_shape(value.shape)}, "
                    f"but the shared variable (declared at {p.site}) is {p.type}")
            values.append(value)
    for p, value in zip(params, values):
        p.set_value(value, borrow=True)
