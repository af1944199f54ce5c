"""Helpers shared by the models: random sources and parameter creation."""

from __future__ import annotations

from typing import Any

import numpy as np

import engine


def numpy_rng(rng: Any) -> Any:
    """A numpy random source: an int seed, ``None`` (seed 1234) or a Generator/RandomState."""
    if rng is None:
        return np.random.default_rng(1234)
    if isinstance(rng, (int, np.integer)):
        return np.random.default_rng(int(rng))
    return rng


def random_streams(theano_rng: Any, rng: Any) -> engine.RandomStreams:
    """An ``engine.RandomStreams``: the one given, or one seeded from the numpy ``rng``."""
    if isinstance(theano_rng, engine.RandomStreams):
        return theano_rng
    if isinstance(theano_rng, (int, np.integer)):
        return engine.RandomStreams(int(theano_rng))
    return engine.RandomStreams(int(numpy_rng(rng).integers(2**30)))


def param(value: Any, name: str) -> engine.SharedVariable:
    """A shared parameter made from an array; a variable (shared or symbolic, e.g. to check
    gradients with ``verify_grad``) is used as is."""
    if isinstance(value, engine.Variable):
        return value
    return engine.shared(np.asarray(value, dtype=engine.config.floatX), name=name)


def as_dtype_of(value: Any, like: Any) -> Any:
    """Cast a symbolic hyper-parameter to ``like``'s dtype; Python numbers stay weak."""
    from frontends import tensor as T

    if isinstance(value, engine.Variable) and value.dtype != like.dtype:
        return T.cast(value, like.dtype)
    return value
