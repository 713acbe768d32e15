"""Priors p(z) of the generative model (``prior=`` config group).

A prior is a module called with no arguments that returns a ``torch.distributions`` object with
event shape ``[latent]``; :class:`~vibench.model.GenerativeModel` calls :meth:`attach` once with
the inference strategy, for priors built from the posterior (the VampPrior).

References
----------
[1] J. M. Tomczak, M. Welling. VAE with a VampPrior. AISTATS 2018 (arXiv:1705.07120).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.distributions import Categorical, Distribution, Independent, MixtureSameFamily, Normal

from vibench.errors import ConfigError
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


class VampPrior(nn.Module):
    """The VampPrior ([1], eq. 9): ``p(z) = (1/K) sum_k q(z | u_k)``, the mixture of the encoder's
    posteriors at K learned pseudo-inputs ``u_k``, trained with the rest of the model.

    Pseudo-inputs are ``hardtanh(v_k, 0, 1)`` (pixel intensities in [0, 1]), ``v_k`` initialized
    ``N(init_mean, init_std^2)`` ([1]'s code: 0.05 and 0.01; [1] uses K = 500 on MNIST). The
    encoder is the inference strategy's, attached by :meth:`attach`; it is not registered here, so
    its weights appear once in a checkpoint. Its family needs a density at any z (gaussian, iaf).
    """

    name = "vampprior"

    def __init__(self, latent: int, dim: int, components: int = 500, init_mean: float = 0.05, init_std: float = 0.01):
        super().__init__()
        self.latent, self.components = latent, components
        self.pseudo_inputs = nn.Parameter(torch.empty(components, dim).normal_(init_mean, init_std))
        self.__dict__["_encoder"] = None

    def attach(self, strategy) -> None:
        encoder = getattr(strategy, "encoder", None)
        if encoder is None:
            raise ConfigError("prior=vamp is a mixture of the encoder's posteriors, and this inference has no encoder: use inference=vae or inference=svi_encoder.")
        if not encoder.family.density_anywhere:
            raise ConfigError(f"prior=vamp evaluates the encoder's q at any z, which posterior={encoder.family.name} cannot give (no inverse): use posterior=gaussian or posterior=iaf.")
        self.__dict__["_encoder"] = encoder

    def forward(self) -> Distribution:
        if self._encoder is None:
            raise RuntimeError("VampPrior used before attach(strategy): build it through GenerativeModel.attach")
        components = self._encoder(torch.nn.functional.hardtanh(self.pseudo_inputs, 0.0, 1.0))
        mixing = Categorical(logits=torch.zeros(self.components, device=self.pseudo_inputs.device, dtype=self.pseudo_inputs.dtype), **NO_VALIDATION)
        return MixtureSameFamily(mixing, components, **NO_VALIDATION)
