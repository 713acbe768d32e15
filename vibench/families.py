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

    Starts at the prior N(0, I) (all zeros). Log-variances are clamped to ``[logvar_min,
    logvar_max]`` before exponentiation: by default ``[LOGVAR_MIN, LOGVAR_MAX]``, wide enough only
    to keep float32 finite; the VampPrior code bounds them to [-6, 2] (its encoder's hardtanh).
    """

    name = "gaussian"
    compilable = True  # the training loss may be compiled (torch.compile) with this family
    density_anywhere = True  # log q(z) at any z, not only at q's own samples (VampPrior, AIS from q)

    def __init__(self, latent: int, logvar_min: float = LOGVAR_MIN, logvar_max: float = LOGVAR_MAX):
        if not logvar_min < logvar_max:
            raise ValueError(f"posterior.logvar_min={logvar_min} must be below posterior.logvar_max={logvar_max}")
        self.latent, self.logvar_min, self.logvar_max = latent, float(logvar_min), float(logvar_max)

    @property
    def n_params(self) -> int:
        return 2 * self.latent

    def init_params(self, n: int, device=None, dtype=torch.float32) -> torch.Tensor:
        """``[n, n_params]`` starting parameters of a fit: the prior N(0, I)."""
        return torch.zeros(n, self.n_params, device=device, dtype=dtype)

    def base(self, params: torch.Tensor) -> Independent:
        """The diagonal Gaussian of the first ``2 latent`` parameters; batch shape ``params.shape[:-1]``."""
        mu, logvar = params[..., : 2 * self.latent].chunk(2, dim=-1)
        std = torch.exp(0.5 * logvar.clamp(self.logvar_min, self.logvar_max))
        return Independent(Normal(mu, std, **NO_VALIDATION), 1, **NO_VALIDATION)

    def distribution(self, params: torch.Tensor) -> Distribution:
        return self.base(params)

    def describe(self) -> dict:
        return {"family": self.name}
