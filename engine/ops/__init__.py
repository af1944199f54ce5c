"""The op families. Importing this package also gives ``Variable`` its Python operators."""

from engine.ops import blas, conv, elemwise, indexing, lcn, nnet, pool, random, reduce, shape  # noqa: F401
from engine.ops.methods import install_variable_methods

install_variable_methods()
