"""A linear-Gaussian model with known parameters, in float64, for exact-answer tests."""

from __future__ import annotations

import torch
from torch.distributions import Independent, Normal

from vibench.model import GenerativeModel
from vibench.networks import Decoder


def make_model(dim: int = 5, latent: int = 2, sigma: float = 0.7, seed: int = 0, orthogonal: bool = False) -> GenerativeModel:
    g = torch.Generator().manual_seed(seed)
    decoder = Decoder(latent, dim, hidden=[], likelihood="gaussian", sigma=sigma)
    model = GenerativeModel(latent, decoder).double()
    w = torch.randn(dim, latent, generator=g, dtype=torch.float64)
    if orthogonal:
        w = torch.linalg.qr(w).Q * 1.5
    with torch.no_grad():
        decoder.net[0].weight.copy_(w)
        decoder.net[0].bias.copy_(torch.randn(dim, generator=g, dtype=torch.float64))
    return model


def sample_data(model: GenerativeModel, n: int, seed: int = 1) -> torch.Tensor:
    torch.manual_seed(seed)
    with torch.no_grad():
        z = model.prior().sample((n,))
        return model.likelihood(z).sample()


class FixedGuide:
    """guide(x, idx) returning a given distribution (the exact posterior, or a perturbed one)."""

    def __init__(self, make):
        self.make = make

    def __call__(self, x, idx=None):
        return self.make(x)


def perturbed_posterior(model: GenerativeModel, shift: float = 0.5, scale: float = 1.5):
    """A mean-field q that is deliberately wrong: shifted means, inflated standard deviations."""

    def make(x):
        post = model.exact_posterior(x)
        return Independent(Normal(post.mean + shift, post.variance.sqrt() * scale), 1)

    return FixedGuide(make)
