"""Variational families q. Every guide is called as ``guide(x, idx)`` and returns a distribution.

- :class:`vibench.networks.GaussianEncoder`: amortized, q(z | x) from an encoder.
- :class:`LocalGaussian`: non-amortized, a free diagonal Gaussian q_i(z) per datapoint i, stored
  as a table of parameters indexed by the datapoint's id (Hoffman et al. 2013's local variables).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.distributions import Independent, Normal

from vibench.networks import LOGVAR_MAX, LOGVAR_MIN, NO_VALIDATION


def gaussian(params: torch.Tensor) -> Independent:
    """Diagonal Gaussian from ``params`` of shape ``[B, 2, latent]``: (mean, log-variance) per row."""
    mean, logvar = params.unbind(dim=-2)
    return Independent(Normal(mean, torch.exp(0.5 * logvar.clamp(LOGVAR_MIN, LOGVAR_MAX)), **NO_VALIDATION), 1, **NO_VALIDATION)


def gaussian_params(q: Independent) -> torch.Tensor:
    """The inverse of :func:`gaussian`: ``[B, 2, latent]`` (mean, log-variance) of a diagonal Gaussian."""
    return torch.stack([q.base_dist.loc, 2 * q.base_dist.scale.log()], dim=-2)


class LocalGaussian(nn.Module):
    """Per-datapoint q_i(z) = N(mu_i, diag sigma_i^2): a ``[N, 2, latent]`` table indexed by datapoint id.

    Initialised to the prior (mean 0, log-variance 0). The table is a buffer, not a parameter:
    it is saved in checkpoints but never touched by the model's optimizer; SVI writes the rows
    of each batch after refining them.
    """

    def __init__(self, n: int, latent: int):
        super().__init__()
        self.register_buffer("table", torch.zeros(n, 2, latent))

    def forward(self, x: torch.Tensor | None, idx: torch.Tensor) -> Independent:
        return gaussian(self.table[idx])

    def rows(self, idx: torch.Tensor) -> torch.Tensor:
        return self.table[idx]

    @torch.no_grad()
    def write(self, idx: torch.Tensor, params: torch.Tensor) -> None:
        self.table[idx] = params.to(self.table.dtype)
