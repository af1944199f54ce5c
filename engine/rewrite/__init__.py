"""The optimizer: ONE ordered list of named passes (filled by the rewrite modules)."""

from __future__ import annotations


def optimize(fgraph, fuse: bool = False) -> None:
    """Rewrite ``fgraph.outputs`` in place through every pass, in order."""
