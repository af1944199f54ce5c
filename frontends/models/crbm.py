"""A convolutional RBM with probabilistic max-pooling: one layer of the convolutional DBN of
Lee, Grosse, Ranganath & Ng, ICML 2009.

Visible ``v`` (N, C, H, W); K filters ``W`` (K, C, f, f) shared across positions; detection units
``h`` (N, K, H-f+1, W-f+1) with energies ``I = conv2d(v, W) + b``, grouped in ``ws`` blocks of
which at most one is on; pooling units ``p`` (N, K, .../ws) on when one of their block is.
Top-down: ``v`` mean ``= conv2d(h, W^T, padding="full", filter_flip=True) + c`` (the adjoint of
the valid cross-correlation), through a sigmoid for binary visible units; real-valued visible
units (``gaussian_visible=True``, the default: for whitened images) have unit variance.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

import engine
from frontends import nn
from frontends import tensor as T
from frontends.models._util import numpy_rng, param, random_streams


class ConvRBM:
    def __init__(self, input: Any = None, filter_shape: Sequence[int] = (24, 1, 10, 10),
                 pool_shape: Sequence[int] = (2, 2), rng: Any = None, theano_rng: Any = None,
                 gaussian_visible: bool = True, sparsity_target: float = 0.02, sparsity_cost: float = 1.0,
                 weight_decay: float = 0.0, init_std: float = 0.01, W: Any = None, hbias: Any = None,
                 vbias: Any = None) -> None:
        rng = numpy_rng(rng)
        self.filter_shape = tuple(int(d) for d in filter_shape)
        self.pool_shape = tuple(int(d) for d in pool_shape)
        self.gaussian_visible = gaussian_visible
        self.sparsity_target, self.sparsity_cost, self.weight_decay = sparsity_target, sparsity_cost, weight_decay
        self.theano_rng = random_streams(theano_rng, rng)
        self.input = T.tensor4("input") if input is None else input
        K, C = self.filter_shape[:2]
        if W is None:
            W = rng.normal(0.0, init_std, size=self.filter_shape)
        self.W = param(W, "W")
        # negative hidden biases start the detection units sparse (Lee et al. use -0.1 .. -2)
        self.hbias = param(np.full((K,), -0.1) if hbias is None else hbias, "hbias")
        self.vbias = param(np.zeros((C,)) if vbias is None else vbias, "vbias")
        self.params = [self.W, self.hbias, self.vbias]

    # -- conditionals ----------------------------------------------------------------------------

    def hidden_energy(self, v: Any) -> Any:
        """``I(v) = conv2d(v, W) + b``: the bottom-up input to each detection unit."""
        return nn.conv2d(v, self.W) + self.hbias.dimshuffle("x", 0, "x", "x")

    def propup(self, v: Any) -> tuple[Any, Any]:
        """``(P(h=1 | v), P(p=1 | v))`` by probabilistic max-pooling."""
        return nn.probabilistic_max_pool(self.hidden_energy(v), self.pool_shape)

    def sample_h_given_v(self, v: Any) -> tuple[Any, Any, Any]:
        """``(detection probabilities, detection sample, pooling sample)``."""
        energy = self.hidden_energy(v)
        h_mean, _ = nn.probabilistic_max_pool(energy, self.pool_shape)
        h_sample, p_sample = nn.sample_probabilistic_max_pool(energy, self.pool_shape, self.theano_rng)
        return h_mean, h_sample, p_sample

    def propdown(self, h: Any) -> tuple[Any, Any]:
        """``(pre-activation, mean)`` of the visible units given detection units ``h``."""
        pre = nn.conv2d(h, self.W.dimshuffle(1, 0, 2, 3), padding="full", filter_flip=True)
        pre = pre + self.vbias.dimshuffle("x", 0, "x", "x")
        return pre, pre if self.gaussian_visible else T.sigmoid(pre)

    def sample_v_given_h(self, h: Any, mean_field: bool | None = None) -> tuple[Any, Any]:
        """``(mean, sample)``; with ``mean_field`` (the default for Gaussian units, as is usual
        for CD with real-valued data) the sample is the mean."""
        _, v_mean = self.propdown(h)
        if mean_field is None:
            mean_field = self.gaussian_visible
        if mean_field:
            return v_mean, v_mean
        if self.gaussian_visible:
            return v_mean, v_mean + self.theano_rng.normal(size=v_mean.shape, dtype=v_mean.dtype)
        return v_mean, self.theano_rng.binomial(size=v_mean.shape, p=v_mean, dtype=v_mean.dtype)

    # -- learning --------------------------------------------------------------------------------

    def _energy_surrogate(self, v: Any, h_prob: Any) -> Any:
        """Mean over images of the energy with the hidden units at their (constant) probabilities;
        its gradient is that of the free energy. The hidden term is averaged over positions and
        the visible term over pixels, a per-parameter scaling of the learning rate."""
        hidden = T.sum(T.mean(h_prob * self.hidden_energy(v), axis=(0, 2, 3)))
        if self.gaussian_visible:
            visible = 0.5 * T.sum(T.mean(T.sqr(v - self.vbias.dimshuffle("x", 0, "x", "x")), axis=(0, 2, 3)))
        else:
            visible = -T.sum(T.mean(v, axis=(0, 2, 3)) * self.vbias)
        return visible - hidden

    def get_cost_updates(self, lr: Any = 0.01, k: int = 1, momentum: Any = 0.0) -> tuple[Any, list]:
        """One CD-k step (``k`` unrolled Gibbs steps), by SGD or with ``momentum``. Returns
        ``(reconstruction error, updates)``: the mean squared difference between the data and the
        chain's last visible mean. The hidden biases are also pulled toward a mean activation of
        ``sparsity_target`` (Lee et al. 2008), and the filters decay by ``weight_decay``."""
        from frontends import updates as U

        v0 = self.input
        h0_mean, h_sample, _ = self.sample_h_given_v(v0)
        for step in range(k):
            v_mean, v_sample = self.sample_v_given_h(h_sample)
            if step < k - 1:
                _, h_sample, _ = self.sample_h_given_v(v_sample)
        hk_mean, _ = self.propup(v_sample)
        self.chain_end = v_sample
        cost = self._energy_surrogate(v0, h0_mean) - self._energy_surrogate(v_sample, hk_mean)
        g_W, g_hbias, g_vbias = engine.grad(cost, self.params, consider_constant=[h0_mean, v_sample, hk_mean])
        if self.weight_decay:
            g_W = g_W + self.weight_decay * self.W
        if self.sparsity_cost:
            g_hbias = g_hbias - self.sparsity_cost * (self.sparsity_target - T.mean(h0_mean, axis=(0, 2, 3)))
        grads = [g_W, g_hbias, g_vbias]
        if isinstance(momentum, (int, float)) and momentum == 0:
            updates = U.sgd(grads, self.params, lr)
        else:
            updates = U.momentum(grads, self.params, lr, momentum)
        self.mean_activation = T.mean(h0_mean)
        return T.mean(T.sqr(v0 - v_mean)), updates
