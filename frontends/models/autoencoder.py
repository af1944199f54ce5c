"""Tied-weight autoencoders: denoising (the tutorials' ``dA.py``) and sparse (KL penalty).

``y = sigmoid(x~ W + b)``, ``z = sigmoid(y W' + b')`` where ``x~`` is the input with a
fraction ``corruption_level`` of its entries set to zero (binomial masking noise).
"""

from __future__ import annotations

from typing import Any

import engine
from frontends import init
from frontends import tensor as T
from frontends.models._util import as_dtype_of, numpy_rng, param, random_streams

LOSSES = ("cross_entropy", "squared_error")


class DenoisingAutoencoder:
    def __init__(self, input: Any = None, n_visible: int = 784, n_hidden: int = 500, rng: Any = None,
                 theano_rng: Any = None, W: Any = None, bhid: Any = None, bvis: Any = None,
                 loss: str = "cross_entropy") -> None:
        if loss not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES}, given {loss!r}")
        rng = numpy_rng(rng)
        self.n_visible, self.n_hidden, self.loss = n_visible, n_hidden, loss
        self.theano_rng = random_streams(theano_rng, rng)
        self.x = T.matrix("input") if input is None else input
        self.W = param(init.glorot_uniform((n_visible, n_hidden), rng, gain=4.0) if W is None else W, "W")
        self.b = param(init.zeros((n_hidden,)) if bhid is None else bhid, "bhid")
        self.b_prime = param(init.zeros((n_visible,)) if bvis is None else bvis, "bvis")
        self.W_prime = self.W.T
        self.params = [self.W, self.b, self.b_prime]

    def get_corrupted_input(self, input: Any, corruption_level: Any) -> Any:
        """Zero each entry with probability ``corruption_level`` (a number or a symbolic scalar)."""
        if isinstance(corruption_level, (int, float)) and corruption_level == 0:
            return input
        keep = 1 - as_dtype_of(corruption_level, input)
        return self.theano_rng.binomial(size=input.shape, n=1, p=keep, dtype=input.dtype) * input

    def get_hidden_values(self, input: Any) -> Any:
        return T.sigmoid(T.dot(input, self.W) + self.b)

    def get_reconstruction_preactivation(self, hidden: Any) -> Any:
        return T.dot(hidden, self.W_prime) + self.b_prime

    def get_reconstructed_input(self, hidden: Any) -> Any:
        return T.sigmoid(self.get_reconstruction_preactivation(hidden))

    def reconstruction_loss(self, x: Any, pre_z: Any) -> Any:
        """Per example: summed cross-entropy of ``x`` and ``sigmoid(pre_z)`` (or squared error)."""
        if self.loss == "squared_error":
            return T.sum(T.sqr(x - T.sigmoid(pre_z)), axis=1)
        # -(x log z + (1 - x) log(1 - z)) with z = sigmoid(a) is softplus(a) - x a: finite everywhere
        return T.sum(T.softplus(pre_z) - x * pre_z, axis=1)

    def penalty(self, hidden: Any) -> Any:
        """Extra cost on the hidden code (none for the denoising autoencoder)."""
        return 0

    def get_cost(self, corruption_level: Any = 0.0) -> Any:
        tilde_x = self.get_corrupted_input(self.x, corruption_level)
        y = self.get_hidden_values(tilde_x)
        pre_z = self.get_reconstruction_preactivation(y)
        return T.mean(self.reconstruction_loss(self.x, pre_z)) + self.penalty(y)

    def get_cost_updates(self, corruption_level: Any = 0.0, learning_rate: Any = 0.1) -> tuple[Any, list]:
        cost = self.get_cost(corruption_level)
        gparams = engine.grad(cost, self.params)
        return cost, [(p, p - as_dtype_of(learning_rate, p) * g) for p, g in zip(self.params, gparams)]


class SparseAutoencoder(DenoisingAutoencoder):
    """An autoencoder whose cost adds ``beta * sum_j KL(rho || rho_hat_j)``, ``rho_hat`` the mean
    hidden activation over the minibatch, and ``weight_decay / 2 * |W|^2`` (Ng's sparse autoencoder)."""

    def __init__(self, input: Any = None, n_visible: int = 784, n_hidden: int = 500, rng: Any = None,
                 theano_rng: Any = None, rho: float = 0.05, beta: float = 3.0, weight_decay: float = 0.0,
                 loss: str = "cross_entropy", **kwargs: Any) -> None:
        super().__init__(input, n_visible, n_hidden, rng, theano_rng, loss=loss, **kwargs)
        self.rho, self.beta, self.weight_decay = rho, beta, weight_decay

    def penalty(self, hidden: Any) -> Any:
        from frontends import nn

        rho_hat = T.mean(hidden, axis=0)
        cost = self.beta * T.sum(nn.kl_sparsity(self.rho, rho_hat))
        if self.weight_decay:
            cost = cost + 0.5 * self.weight_decay * T.sum(T.sqr(self.W))
        return cost
