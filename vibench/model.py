"""The generative model p(z) p(x | z), shared unchanged by every inference method.

Inference methods (amortized VAE, per-datapoint SVI) swap the guide q, never this model, so
their numbers are comparable.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.distributions import Distribution, MultivariateNormal

from vibench.networks import Decoder, initialize
from vibench.objectives import kl_estimate
from vibench.priors import StandardNormal


OUTPUT_BIAS = ("train_mean",)  # model.output_bias's values besides null (GenerativeModel.start_at_data)


class GenerativeModel(nn.Module):
    """A prior ``p(z)`` (``prior=``: N(0, I) unless given, :mod:`vibench.priors`) and a decoder
    likelihood ``p(x | z)``.

    ``init`` re-initializes the decoder's linear layers (:func:`~vibench.networks.initialize`);
    the encoder takes the same ``model.init`` from its config. ``output_bias="train_mean"`` then
    starts the decoder's output bias at the training data's mean (:meth:`start_at_data`), as
    IWAE's code does; ``None`` leaves it as ``init`` made it.
    """

    def __init__(self, latent: int, decoder: Decoder, init: str = "default", prior: nn.Module | None = None, output_bias: str | None = None):
        super().__init__()
        if output_bias not in (None, *OUTPUT_BIAS):
            raise ValueError(f"model.output_bias={output_bias!r} is not one of null, " + ", ".join(OUTPUT_BIAS))
        self.latent, self.output_bias = latent, output_bias
        self.decoder = initialize(decoder, init)
        self.prior_module = prior if prior is not None else StandardNormal(latent)

    def start_at_data(self, train: torch.Tensor) -> None:
        """Apply ``output_bias`` given the training data ``[N, dim]`` (before training; a resumed
        run's checkpoint then overwrites it)."""
        if self.output_bias == "train_mean":
            self.decoder.start_at_mean(train.mean(dim=0))

    def prior(self) -> Distribution:
        return self.prior_module()

    def attach(self, strategy) -> None:
        """Called once by the inference module with its strategy: a prior built from the posterior
        (the VampPrior) takes the encoder from it."""
        self.prior_module.attach(strategy)

    def likelihood(self, z: torch.Tensor) -> Distribution:
        """p(x | z); batch shape is z's shape without its last axis."""
        return self.decoder(z)

    def log_joint_terms(self, x: torch.Tensor, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(log p(x | z), log p(z))`` for samples ``z`` of shape ``[S, B, latent]``; each ``[S, B]``."""
        return self.likelihood(z).log_prob(x), self.prior().log_prob(z)

    def elbo_terms(self, x: torch.Tensor, q: Distribution, samples: int, analytic_kl: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """``(recon, kl)``, each ``[B]``: the two terms of the ELBO ``E_q[log p(x|z)] - KL(q || p)``
        (Kingma & Welling 2014, eq. 7), the first averaged over ``samples`` reparameterized draws
        z ~ q, the second in closed form when ``analytic_kl`` and torch knows it, else Monte Carlo
        over the same draws (:func:`~vibench.objectives.kl_estimate`).

        The one ELBO of vibench: training, validation, SVI's inner and held-out fits and the
        diagnostics all call it (the K-sample evaluation reuses its IW samples instead).
        """
        z = q.rsample((samples,))  # [L, B, latent]
        recon = self.likelihood(z).log_prob(x).mean(dim=0)
        return recon, kl_estimate(q, self.prior(), z, analytic=analytic_kl)

    def exact_marginal(self) -> Distribution | None:
        """The exact marginal p(x) when the model is linear-Gaussian, else ``None``.

        With ``z ~ N(0, I)`` and ``x | z ~ N(W z + b, diag sigma^2)``:
        ``p(x) = N(b, W W^T + diag sigma^2)`` (Bishop, PRML eq. 12.35).
        """
        if not self.decoder.is_linear_gaussian:
            return None
        layer = self.decoder.net[0]
        w, b = layer.weight, layer.bias
        sigma2 = self.decoder.sigma().expand(w.shape[0]) ** 2
        return MultivariateNormal(b, covariance_matrix=w @ w.T + torch.diag(sigma2))

    def exact_posterior(self, x: torch.Tensor) -> Distribution | None:
        """The exact posterior p(z | x) when the model is linear-Gaussian, else ``None``.

        ``p(z | x) = N(Sigma W^T D^{-1} (x - b), Sigma)``, ``Sigma = (I + W^T D^{-1} W)^{-1}``,
        ``D = diag sigma^2`` (Bishop, PRML eqs. 2.116-2.117). Batch shape ``[B]``.
        """
        if not self.decoder.is_linear_gaussian:
            return None
        layer = self.decoder.net[0]
        w, b = layer.weight, layer.bias
        d_inv = self.decoder.sigma().expand(w.shape[0]) ** -2
        precision = torch.eye(self.latent, dtype=w.dtype, device=w.device) + (w.T * d_inv) @ w
        cov = torch.linalg.inv(precision)
        mean = ((x - b) * d_inv) @ w @ cov
        return MultivariateNormal(mean, covariance_matrix=cov)
