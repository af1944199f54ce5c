"""Saving and loading parameters as ``.npz`` (never pickle)."""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np

from engine.errors import KilnValueError
from engine.graph import SharedVariable


def _keys(params: Sequence[SharedVariable]) -> list[str]:
    keys = [p.name or f"param{i}" for i, p in enumerate(params)]
    if len(set(keys)) != len(keys):
        keys = [f"{i}:{k}" for i, k in enumerate(keys)]
    return keys


def save_params(path: str | os.PathLike, params: Sequence[SharedVariable]) -> None:
    """Write the values of ``params`` to an .npz file, keyed by name (index-prefixed if not unique)."""
    np.savez(path, **{k: p.get_value(borrow=True) for k, p in zip(_keys(params), params)})


def load_params(path: str | os.PathLike, params: Sequence[SharedVariable]) -> None:
    """Set ``params`` from an .npz written by ``save_params``; dtypes and shapes must match."""
    with np.load(path, allow_pickle=False) as data:
        for key, p in zip(_keys(params), params):
            if key not in data:
                raise KilnValueError(f"load_params: {path} has no entry {key!r} (it has {sorted(data.files)})")
            p.set_value(data[key])
