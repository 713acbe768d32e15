"""Variational families: maps from a flat parameter vector per datapoint to a distribution q.

A family says how many numbers describe one q (``n_params``), where a fit starts
(``init_params``) and which distribution a ``[B, n_params]`` tensor of them means
(``distribution``). Where the numbers come from is the inference strategy's business
(:mod:`vibench.strategies`): an encoder predicts them (amortized), a table stores them per
datapoint (SVI), or an encoder's prediction is refined by gradient steps (semi-amortized). So a
new family is one class and one config (``conf/posterior/``), usable in all three strategies and
in the gap decomposition.

Flows (:mod:`vibench.flows`) extend :class:`DiagonalGaussian`: their parameter vector is the base
Gaussian's followed by the flow's.
"""

from __future__ import annotations

import torch
from torch.distributions import Distribution, Independent, Normal

from vibench.networks import LOGVAR_MAX, LOGVAR_MIN, NO_VALIDATION


class DiagonalGaussian:
    """``q = N(mu, diag sigma^2)``; parameters ``[mu (latent), log sigma^2 (latent)]``.

    Starts at the prior N(0, I) (all zeros). Log-variances are clamped to
    ``[LOGVAR_MIN, LOGVAR_MAX]`` before exponentiation, as everywhere in vibench.
    """

    name = "gaussian"
    compilable = True  # the training loss may be compiled (torch.compile) with this family
    density_anywhere = True  # log q(z) at any z, not only at q's own samples (VampPrior, AIS from q)

    def __init__(self, latent: int):
        self.latent = latent

    @property
    def n_params(self) -> int:
        return 2 * self.latent

    def init_params(self, n: int, device=None, dtype=torch.float32) -> torch.Tensor:
        """``[n, n_params]`` starting parameters of a fit: the prior N(0, I)."""
        return torch.zeros(n, self.n_params, device=device, dtype=dtype)

    def base(self, params: torch.Tensor) -> Independent:
        """The diagonal Gaussian of the first ``2 latent`` parameters; batch shape ``params.shape[:-1]``."""
        mu, logvar = params[..., : 2 * self.latent].chunk(2, dim=-1)
        std = torch.exp(0.5 * logvar.clamp(LOGVAR_MIN, LOGVAR_MAX))
        return Independent(Normal(mu, std, **NO_VALIDATION), 1, **NO_VALIDATION)

    def distribution(self, params: torch.Tensor) -> Distribution:
        return self.base(params)

    def describe(self) -> dict:
        return {"family": self.name}
