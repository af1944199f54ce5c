"""Restricted Boltzmann machines (the tutorials' ``rbm.py``): binary-binary and Gaussian-binary.

Energy (binary visible): ``E(v, h) = -v.vbias - h.hbias - v W h``; the free energy is
``F(v) = -v.vbias - sum_j softplus(v W + hbias)_j``. With ``gaussian_visible=True`` the visible
units are real-valued with unit variance: ``F(v) = |v - vbias|^2 / 2 - sum_j softplus(...)``.
"""

from __future__ import annotations

from typing import Any

import engine
from frontends import init
from frontends import tensor as T
from frontends.models._util import as_dtype_of, numpy_rng, param, random_streams


class RBM:
    def __init__(self, input: Any = None, n_visible: int = 784, n_hidden: int = 500, rng: Any = None,
                 theano_rng: Any = None, W: Any = None, hbias: Any = None, vbias: Any = None,
                 gaussian_visible: bool = False) -> None:
        rng = numpy_rng(rng)
        self.n_visible, self.n_hidden = n_visible, n_hidden
        self.gaussian_visible = gaussian_visible
        self.theano_rng = random_streams(theano_rng, rng)
        self.input = T.matrix("input") if input is None else input
        self.W = param(init.glorot_uniform((n_visible, n_hidden), rng, gain=4.0) if W is None else W, "W")
        self.hbias = param(init.zeros((n_hidden,)) if hbias is None else hbias, "hbias")
        self.vbias = param(init.zeros((n_visible,)) if vbias is None else vbias, "vbias")
        self.params = [self.W, self.hbias, self.vbias]

    # -- energies ------------------------------------------------------------------------------

    def free_energy(self, v_sample: Any) -> Any:
        """``F(v)`` per row of ``v_sample`` (a vector of length batch)."""
        wx_b = T.dot(v_sample, self.W) + self.hbias
        hidden_term = T.sum(T.softplus(wx_b), axis=1)
        if self.gaussian_visible:
            return 0.5 * T.sum(T.sqr(v_sample - self.vbias), axis=1) - hidden_term
        return -T.dot(v_sample, self.vbias) - hidden_term

    # -- conditionals and Gibbs steps (each returns pre-activation, mean, sample) -------------

    def propup(self, vis: Any) -> tuple[Any, Any]:
        pre_sigmoid = T.dot(vis, self.W) + self.hbias
        return pre_sigmoid, T.sigmoid(pre_sigmoid)

    def sample_h_given_v(self, v0_sample: Any) -> tuple[Any, Any, Any]:
        pre_sigmoid_h1, h1_mean = self.propup(v0_sample)
        h1_sample = self.theano_rng.binomial(size=h1_mean.shape, n=1, p=h1_mean, dtype=h1_mean.dtype)
        return pre_sigmoid_h1, h1_mean, h1_sample

    def propdown(self, hid: Any) -> tuple[Any, Any]:
        pre_activation = T.dot(hid, self.W.T) + self.vbias
        return pre_activation, pre_activation if self.gaussian_visible else T.sigmoid(pre_activation)

    def sample_v_given_h(self, h0_sample: Any) -> tuple[Any, Any, Any]:
        pre_sigmoid_v1, v1_mean = self.propdown(h0_sample)
        if self.gaussian_visible:
            noise = self.theano_rng.normal(size=v1_mean.shape, avg=0.0, std=1.0, dtype=v1_mean.dtype)
            return pre_sigmoid_v1, v1_mean, v1_mean + noise
        v1_sample = self.theano_rng.binomial(size=v1_mean.shape, n=1, p=v1_mean, dtype=v1_mean.dtype)
        return pre_sigmoid_v1, v1_mean, v1_sample

    def gibbs_hvh(self, h0_sample: Any) -> tuple[Any, ...]:
        """One step h -> v -> h: ``(pre_v1, v1_mean, v1_sample, pre_h1, h1_mean, h1_sample)``."""
        pre_sigmoid_v1, v1_mean, v1_sample = self.sample_v_given_h(h0_sample)
        pre_sigmoid_h1, h1_mean, h1_sample = self.sample_h_given_v(v1_sample)
        return pre_sigmoid_v1, v1_mean, v1_sample, pre_sigmoid_h1, h1_mean, h1_sample

    def gibbs_vhv(self, v0_sample: Any) -> tuple[Any, ...]:
        """One step v -> h -> v: ``(pre_h1, h1_mean, h1_sample, pre_v1, v1_mean, v1_sample)``."""
        pre_sigmoid_h1, h1_mean, h1_sample = self.sample_h_given_v(v0_sample)
        pre_sigmoid_v1, v1_mean, v1_sample = self.sample_v_given_h(h1_sample)
        return pre_sigmoid_h1, h1_mean, h1_sample, pre_sigmoid_v1, v1_mean, v1_sample

    # -- learning ------------------------------------------------------------------------------

    def get_cost_updates(self, lr: Any = 0.1, persistent: Any = None, k: int = 1) -> tuple[Any, list]:
        """CD-k (``persistent=None``) or PCD-k (``persistent``: a shared ``(batch, n_hidden)``
        holding the fantasy particles' hidden states). The Gibbs chain is unrolled ``k`` steps.

        Returns ``(monitoring_cost, updates)``: the pseudo-likelihood for binary PCD, else the
        reconstruction cross-entropy (squared error for Gaussian visible units). The chain's end
        is kept as ``self.chain_end`` (visible sample) and ``self.chain_end_hidden`` (its hidden
        sample) for inspection.
        """
        if k < 1:
            raise ValueError(f"get_cost_updates: k must be >= 1, given {k}")
        _, _, ph_sample = self.sample_h_given_v(self.input)
        chain_start = ph_sample if persistent is None else persistent
        h_sample = chain_start
        for _ in range(k):
            pre_sigmoid_nv, _, nv_sample, _, _, h_sample = self.gibbs_hvh(h_sample)
        chain_end = nv_sample
        self.chain_end, self.chain_end_hidden = chain_end, h_sample
        cost = T.mean(self.free_energy(self.input)) - T.mean(self.free_energy(chain_end))
        gparams = engine.grad(cost, self.params, consider_constant=[chain_end])
        updates = [(p, p - as_dtype_of(lr, p) * g) for p, g in zip(self.params, gparams)]
        if persistent is not None:
            updates.append((persistent, h_sample))
        if persistent is not None and not self.gaussian_visible:
            monitoring_cost, pl_updates = self.get_pseudo_likelihood_cost()
            updates += pl_updates
        else:
            monitoring_cost = self.get_reconstruction_cost(pre_sigmoid_nv)
        return monitoring_cost, updates

    def get_pseudo_likelihood_cost(self) -> tuple[Any, list]:
        """Stochastic approximation to the pseudo-likelihood: flips one bit (cycling through
        the visible units from call to call) and returns ``n_visible * log sigmoid(F(x~) - F(x))``."""
        bit_i_idx = engine.shared(0, name="bit_i_idx", dtype="int64")
        xi = T.round(self.input)
        fe_xi = self.free_energy(xi)
        xi_flip = T.set_subtensor(xi[:, bit_i_idx], 1 - xi[:, bit_i_idx])
        fe_xi_flip = self.free_energy(xi_flip)
        # log(sigmoid(z)) = -softplus(-z), finite for any z
        cost = T.mean(self.n_visible * -T.softplus(fe_xi - fe_xi_flip))
        return cost, [(bit_i_idx, (bit_i_idx + 1) % self.n_visible)]

    def get_reconstruction_cost(self, pre_sigmoid_nv: Any) -> Any:
        """Mean over the minibatch of the summed cross-entropy between the input and
        ``sigmoid(pre_sigmoid_nv)`` (or of the squared error for Gaussian visible units)."""
        if self.gaussian_visible:
            return T.mean(T.sum(T.sqr(self.input - pre_sigmoid_nv), axis=1))
        # -(x log s(a) + (1 - x) log(1 - s(a))) = softplus(a) - x a, finite for any a
        return T.mean(T.sum(T.softplus(pre_sigmoid_nv) - self.input * pre_sigmoid_nv, axis=1))
