"""The op families. Importing this package also gives ``Variable`` its Python operators."""

from engine.ops import blas, elemwise, indexing, random, reduce, shape  # noqa: F401
from engine.ops.methods import install_variable_methods

install_variable_methods()
