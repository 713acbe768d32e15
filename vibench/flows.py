"""Normalizing-flow families on top of the diagonal Gaussian: planar flows and IAF.

``q(z) = T_K o ... o T_1 # N(mu, diag sigma^2)``, each ``T_k`` an invertible map with a cheap
log-determinant, so that (change of variables)

    log q(z_K) = log N(z_0; mu, diag sigma^2) - sum_k log |det dT_k/dz_{k-1}|.

Every parameter is per datapoint, as in :mod:`vibench.families`: the base Gaussian's ``2 latent``
numbers followed by each layer's. Amortized, the encoder predicts all of them (Rezende & Mohamed
2015 amortize planar flows this way); fitted per point (SVI, the gap decomposition), each q_i
owns its flow. The distributions are :class:`torch.distributions.TransformedDistribution` with
``cache_size=1`` transforms, so the density of q's own samples comes from the forward pass.
All-zero flow parameters make every layer the identity: q is then exactly its base Gaussian.

References
----------
[1] D. J. Rezende, S. Mohamed. Variational Inference with Normalizing Flows. ICML 2015.
[2] D. P. Kingma, T. Salimans, R. Jozefowicz, X. Chen, I. Sutskever, M. Welling. Improved
    Variational Inference with Inverse Autoregressive Flow. NeurIPS 2016.
[3] M. Germain, K. Gregor, I. Murray, H. Larochelle. MADE: Masked Autoencoder for Distribution
    Estimation. ICML 2015.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch.distributions import Distribution, Transform, TransformedDistribution, constraints

from vibench.families import DiagonalGaussian
from vibench.networks import LOGVAR_MAX, LOGVAR_MIN

# m(a) = softplus(a + log(e - 1)) - 1 > -1, with m(0) = 0 (so u = 0 stays the identity)
_SHIFT = math.log(math.e - 1)


class PlanarTransform(Transform):
    """``f(z) = z + u_hat tanh(w^T z + b)`` ([1], eq. 10), ``log|det| = log|1 + (1 - tanh^2(w^T z + b)) w^T u_hat|``.

    ``u_hat = u + (m(w^T u) - w^T u) w / ||w||^2`` with ``m(a) = softplus(a + log(e-1)) - 1``
    keeps ``w^T u_hat > -1``, which makes f invertible ([1], appendix A; their m is shifted here
    so that m(0) = 0). Parameters ``u``, ``w`` ``[..., latent]`` and ``b`` ``[...]`` broadcast
    against z's leading axes. No closed-form inverse: the density is known at q's own samples only.
    """

    domain = constraints.real_vector
    codomain = constraints.real_vector
    bijective = True

    def __init__(self, u: torch.Tensor, w: torch.Tensor, b: torch.Tensor):
        super().__init__(cache_size=1)
        wu = (w * u).sum(-1, keepdim=True)
        self.m_plus_1 = F.softplus(wu + _SHIFT)  # m(w^T u) + 1 = w^T u_hat + 1 > 0
        self.u_hat = u + (self.m_plus_1 - 1 - wu) * w / (w * w).sum(-1, keepdim=True).clamp_min(1e-12)
        self.w, self.b = w, b

    def _call(self, z: torch.Tensor) -> torch.Tensor:
        return z + self.u_hat * torch.tanh((z * self.w).sum(-1) + self.b).unsqueeze(-1)

    def _inverse(self, y: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError("a planar flow's density is known only at its own samples (no closed-form inverse): use posterior=gaussian or posterior=iaf here")

    def log_abs_det_jacobian(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        # w^T u_hat is m(w^T u) exactly; computed as the dot product of large w and u_hat it can
        # round below -1 in float32 (measured: -1.0001 at |w| ~ 40), making f singular there and
        # log|det| explode. Written as 1 + h' m = tanh^2 + sech^2 (m + 1), a sum of two terms >= 0,
        # it has no cancellation: positive wherever the exact value is representable.
        t2 = torch.tanh((z * self.w).sum(-1) + self.b) ** 2
        return torch.log((t2 + (1 - t2) * self.m_plus_1.squeeze(-1)).clamp_min(1e-38))


def made_masks(latent: int, hidden: int, reverse: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """MADE masks ([3]) ``[hidden, latent]`` and ``[2 latent, hidden]``: output i (a shift and a log
    scale per dimension) depends on the inputs before i in the order 1..latent (reversed if ``reverse``)."""
    degrees = torch.arange(1, latent + 1)
    if reverse:
        degrees = degrees.flip(0)
    hidden_degrees = torch.arange(hidden) % max(1, latent - 1) + 1
    first = (hidden_degrees[:, None] >= degrees[None, :]).float()
    second = (degrees.repeat(2)[:, None] > hidden_degrees[None, :]).float()
    return first, second


class IAFTransform(Transform):
    """One inverse autoregressive flow step ([2], eqs. 10-11): ``y = z exp(s(z)) + m(z)``, with
    ``(m, s)`` from a one-hidden-layer MADE so that ``m_i, s_i`` depend on ``z_<i`` only; the
    Jacobian is triangular and ``log|det| = sum_i s_i``. ``s = 3 tanh(raw / 3)`` bounds each
    layer's scale to ``[e^-3, e^3]`` (stability; [2] uses a sigmoid gate for the same reason).

    The MADE's weights are per datapoint (``w1`` ``[..., hidden, latent]``, ``b1`` ``[..., hidden]``,
    ``w2`` ``[..., 2 latent, hidden]``, ``b2`` ``[..., 2 latent]``), masked by ``masks``. The inverse
    takes ``latent`` passes (each fixes one more coordinate), so the density is known at any z.
    """

    domain = constraints.real_vector
    codomain = constraints.real_vector
    bijective = True

    def __init__(self, w1, b1, w2, b2, masks: tuple[torch.Tensor, torch.Tensor]):
        super().__init__(cache_size=1)
        m1, m2 = (m.to(w1) for m in masks)
        self.w1, self.b1, self.w2, self.b2 = w1 * m1, b1, w2 * m2, b2

    def shift_and_log_scale(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = torch.tanh((self.w1 @ z.unsqueeze(-1)).squeeze(-1) + self.b1)
        m, raw = ((self.w2 @ h.unsqueeze(-1)).squeeze(-1) + self.b2).chunk(2, dim=-1)
        return m, 3 * torch.tanh(raw / 3)

    def _call(self, z: torch.Tensor) -> torch.Tensor:
        m, s = self.shift_and_log_scale(z)
        return z * torch.exp(s) + m

    def _inverse(self, y: torch.Tensor) -> torch.Tensor:
        z = torch.zeros_like(y)
        for _ in range(y.shape[-1]):  # pass i fixes coordinate i of the order, which depends on the ones before
            m, s = self.shift_and_log_scale(z)
            z = (y - m) * torch.exp(-s)
        return z

    def log_abs_det_jacobian(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.shift_and_log_scale(z)[1].sum(-1)


class Planar(DiagonalGaussian):
    """A diagonal Gaussian followed by ``layers`` planar flows ([1]); each layer has
    ``2 latent + 1`` parameters (u, w, b). Fits start at the prior with u = b = 0 (the identity)
    and w ~ N(0, init_std^2): at w = 0 too, u's gradient would vanish."""

    name = "planar"
    compilable = False
    density_anywhere = False

    def __init__(self, latent: int, layers: int = 10, init_std: float = 0.1, logvar_min: float = LOGVAR_MIN, logvar_max: float = LOGVAR_MAX):
        super().__init__(latent, logvar_min, logvar_max)
        self.layers, self.init_std = layers, init_std

    @property
    def n_params(self) -> int:
        return 2 * self.latent + self.layers * (2 * self.latent + 1)

    def init_params(self, n: int, device=None, dtype=torch.float32) -> torch.Tensor:
        params = super().init_params(n, device, dtype)
        for u, w, b in self._layer_slices(params):
            w.normal_(0.0, self.init_std)
        return params

    def _layer_slices(self, params: torch.Tensor):
        d, start = self.latent, 2 * self.latent
        for _ in range(self.layers):
            yield params[..., start : start + d], params[..., start + d : start + 2 * d], params[..., start + 2 * d]
            start += 2 * d + 1

    def distribution(self, params: torch.Tensor) -> Distribution:
        transforms = [PlanarTransform(u, w, b) for u, w, b in self._layer_slices(params)]
        return TransformedDistribution(self.base(params), transforms, validate_args=False)

    def describe(self) -> dict:
        return {"family": self.name, "flow_layers": self.layers}


class IAF(DiagonalGaussian):
    """A diagonal Gaussian followed by ``layers`` IAF steps ([2]), alternating the autoregressive
    order; each step's MADE has ``hidden`` units (default ``2 latent``). Fits start at the prior
    with the MADE's output weights zero (the identity) and its input weights ~ N(0, init_std^2)."""

    name = "iaf"
    compilable = False
    density_anywhere = True

    def __init__(self, latent: int, layers: int = 2, hidden: int | None = None, init_std: float = 0.1, logvar_min: float = LOGVAR_MIN, logvar_max: float = LOGVAR_MAX):
        super().__init__(latent, logvar_min, logvar_max)
        self.layers, self.hidden, self.init_std = layers, hidden or 2 * latent, init_std
        self.masks = [made_masks(latent, self.hidden, reverse=bool(k % 2)) for k in range(layers)]

    @property
    def per_layer(self) -> int:
        d, h = self.latent, self.hidden
        return h * d + h + 2 * d * h + 2 * d

    @property
    def n_params(self) -> int:
        return 2 * self.latent + self.layers * self.per_layer

    def _layer_slices(self, params: torch.Tensor):
        d, h, start = self.latent, self.hidden, 2 * self.latent
        lead = params.shape[:-1]
        for _ in range(self.layers):
            sizes = (h * d, h, 2 * d * h, 2 * d)
            w1, b1, w2, b2 = params[..., start : start + self.per_layer].split(sizes, dim=-1)
            yield w1.reshape(*lead, h, d), b1, w2.reshape(*lead, 2 * d, h), b2
            start += self.per_layer

    def init_params(self, n: int, device=None, dtype=torch.float32) -> torch.Tensor:
        params = super().init_params(n, device, dtype)
        d, h, start = self.latent, self.hidden, 2 * self.latent
        for _ in range(self.layers):
            params[:, start : start + h * d].normal_(0.0, self.init_std)
            start += self.per_layer
        return params

    def distribution(self, params: torch.Tensor) -> Distribution:
        transforms = [IAFTransform(*layer, masks) for layer, masks in zip(self._layer_slices(params), self.masks)]
        return TransformedDistribution(self.base(params), transforms, validate_args=False)

    def describe(self) -> dict:
        return {"family": self.name, "flow_layers": self.layers, "made_hidden": self.hidden}
