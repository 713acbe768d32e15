"""Priors p(z) of the generative model (``prior=`` config group).

A prior is a module called with no arguments that returns a ``torch.distributions`` object with
event shape ``[latent]``; :class:`~vibench.model.GenerativeModel` calls :meth:`attach` once with
the inference strategy, for priors built from the posterior (the VampPrior).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.distributions import Distribution, Independent, Normal

from vibench.networks import NO_VALIDATION


class StandardNormal(nn.Module):
    """``p(z) = N(0, I)``."""

    name = "standard_normal"

    def __init__(self, latent: int):
        super().__init__()
        # buffers, so that the prior follows the module's device and dtype
        self.register_buffer("loc", torch.zeros(latent))
        self.register_buffer("scale", torch.ones(latent))

    def attach(self, strategy) -> None:
        """Nothing to take from the posterior."""

    def forward(self) -> Distribution:
        return Independent(Normal(self.loc, self.scale, **NO_VALIDATION), 1, **NO_VALIDATION)
