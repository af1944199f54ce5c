"""Small models in the style of the DeepLearningTutorials: each builds graph + updates.

    from frontends.models import LogisticRegression, MLP, LeNet, RBM, DBN, ...

Submodules are imported on first use, so ``RBM`` (elementwise ops only) works without
``frontends.nn`` (conv, pooling, softmax) being importable.
"""

from __future__ import annotations

import importlib

_WHERE = {
    "LogisticRegression": "logistic",
    "HiddenLayer": "mlp",
    "MLP": "mlp",
    "LeNetConvPoolLayer": "lenet",
    "LeNet": "lenet",
    "RBM": "rbm",
    "DenoisingAutoencoder": "autoencoder",
    "SparseAutoencoder": "autoencoder",
    "StackedDenoisingAutoencoder": "sda",
    "DBN": "dbn",
    "ConvRBM": "crbm",
}

__all__ = sorted(_WHERE)


def __getattr__(name: str):
    if name in _WHERE:
        return getattr(importlib.import_module(f"frontends.models.{_WHERE[name]}"), name)
    raise AttributeError(f"module 'frontends.models' has no attribute {name!r}")


def __dir__() -> list[str]:
    return __all__
