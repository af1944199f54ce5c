"""Op table rows for the core ops (elementwise, reductions, shapes, indexing, matmul)."""

from __future__ import annotations

import numpy as np

import frontends.tensor as T
from tests.op_rows import OpRow


def normal(*shapes):
    return lambda rng, dtype: [rng.standard_normal(s).astype(dtype) for s in shapes]


ROWS = [
    OpRow("add_broadcast", lambda a, b: a + b, lambda a, b: a + b, normal((3, 4), (4,))),
    OpRow("tanh", T.tanh, np.tanh, normal((3, 5))),
    OpRow("sum_axis1", lambda a: a.sum(axis=1), lambda a: a.sum(axis=1), normal((3, 5))),
    OpRow("dot", T.dot, np.dot, normal((3, 4), (4, 2))),
]
