"""Images of a trained model as arrays in [0, 1]: reconstructions, prior samples, 2-D manifold."""

from __future__ import annotations

import numpy as np
import torch
from torch.distributions import Normal


def tile(images: np.ndarray, ncol: int, pad: int = 1) -> np.ndarray:
    """Tile ``[N, H, W]`` images into one ``[rows*(H+pad)-pad, ncol*(W+pad)-pad]`` array (pad = 1)."""
    n, h, w = images.shape
    rows = -(-n // ncol)
    out = np.ones((rows * (h + pad) - pad, ncol * (w + pad) - pad), dtype=np.float32)
    for i, img in enumerate(images):
        r, c = divmod(i, ncol)
        out[r * (h + pad) : r * (h + pad) + h, c * (w + pad) : c * (w + pad) + w] = img
    return out


@torch.no_grad()
def reconstructions(model, guide, x: torch.Tensor, idx: torch.Tensor, shape: tuple[int, int]) -> np.ndarray:
    """Rows of (data, reconstruction) pairs: decoder mean at q's mean (a flow's: over 100 of its samples)."""
    q = guide(x, idx)
    try:
        z = q.mean
    except NotImplementedError:
        z = q.sample((100,)).mean(0)
    recon = model.likelihood(z).mean
    pairs = torch.stack([x, recon], dim=1).reshape(-1, *shape)
    return tile(pairs.clamp(0, 1).cpu().numpy(), ncol=16)


@torch.no_grad()
def samples(model, n: int, shape: tuple[int, int]) -> np.ndarray:
    """Decoder means at ``n`` draws from the prior."""
    z = model.prior().sample((n,))
    return tile(model.likelihood(z).mean.reshape(-1, *shape).clamp(0, 1).cpu().numpy(), ncol=int(np.ceil(np.sqrt(n))))


@torch.no_grad()
def manifold(model, shape: tuple[int, int], n: int = 20) -> np.ndarray:
    """Decoder means over a 2-D latent grid through the Gaussian inverse CDF (Kingma & Welling Fig. 4)."""
    p = torch.linspace(0.05, 0.95, n, device=model.decoder.net[0].weight.device, dtype=model.decoder.net[0].weight.dtype)
    g = Normal(0.0, 1.0).icdf(p)
    z = torch.stack(torch.meshgrid(g, g.flip(0), indexing="xy"), dim=-1).reshape(-1, 2)
    return tile(model.likelihood(z).mean.reshape(-1, *shape).clamp(0, 1).cpu().numpy(), ncol=n)
