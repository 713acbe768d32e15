"""Fitting per-datapoint Gaussians q_i by gradient steps, vectorized over a batch.

"Inference as optimization": with the generative model fixed, each datapoint's (mean, log-variance)
is moved uphill on its own ELBO. The loss is the *sum* of per-datapoint negative ELBOs, so each
row's gradient is exactly the gradient of its own ELBO, whatever the batch size; gradients are
taken with ``torch.autograd.grad`` with respect to the local parameters only, so the model's
``.grad`` fields are never touched.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from vibench.guides import gaussian
from vibench.objectives import kl_estimate


def negative_elbo_sum(model, x: torch.Tensor, params: torch.Tensor, samples: int, analytic_kl: bool = True) -> torch.Tensor:
    """``-sum_i ELBO_i`` for local parameters ``params`` ``[B, 2, latent]`` with ``samples`` reparameterized draws."""
    q = gaussian(params)
    z = q.rsample((samples,))
    recon = model.likelihood(z).log_prob(x).mean(dim=0)
    return -(recon - kl_estimate(q, model.prior(), z, analytic=analytic_kl)).sum()


def clip_per_datapoint(grad: torch.Tensor, max_norm: float | None) -> torch.Tensor:
    """Scale each datapoint's gradient (a ``[2, latent]`` slice of ``[B, 2, latent]``) to norm at most ``max_norm``.

    Kim et al. (2018) clip the local parameters' gradients at norm 5: with SGD at lr 1, the
    per-datapoint ELBO gradient of a 784-dimensional Bernoulli likelihood (hundreds of nats) would
    otherwise throw q_i far off in one step.
    """
    if max_norm is None:
        return grad
    norm = grad.flatten(1).norm(dim=1).clamp_min(1e-12)
    return grad * (max_norm / norm).clamp(max=1.0).view(-1, *([1] * (grad.ndim - 1)))


def gradient_step(model, x: torch.Tensor, params: torch.Tensor, opt, samples: int, analytic_kl: bool, max_grad_norm: float | None) -> torch.Tensor:
    """One step of ``opt`` on the local parameters (model untouched); returns the step's summed negative ELBO."""
    loss = negative_elbo_sum(model, x, params, samples, analytic_kl)
    (grad,) = torch.autograd.grad(loss, [params])
    params.grad = clip_per_datapoint(grad, max_grad_norm)
    opt.step()
    return loss.detach()


def refine(model, x: torch.Tensor, init: torch.Tensor, steps: int, optimizer: Callable, samples: int = 1, analytic_kl: bool = True, max_grad_norm: float | None = 5.0) -> torch.Tensor:
    """``steps`` steps of ``optimizer`` (a factory ``[tensor] -> Optimizer``) from ``init``, each
    datapoint's gradient clipped to ``max_grad_norm``; returns detached parameters."""
    params = init.detach().clone().requires_grad_(True)
    if steps <= 0:
        return params.detach()
    opt = optimizer([params])
    with torch.enable_grad():
        for _ in range(steps):
            gradient_step(model, x, params, opt, samples, analytic_kl, max_grad_norm)
    return params.detach()


def fit_heldout(model, x: torch.Tensor, init: torch.Tensor, optimizer: Callable, samples: int = 1, max_steps: int = 2000, window: int = 100, patience: int = 10, analytic_kl: bool = True) -> tuple[torch.Tensor, int]:
    """Fit local parameters for held-out points with the model frozen, stopping on a windowed mean.

    The batch's summed negative ELBO is averaged over windows of ``window`` steps; fitting stops
    once more than ``patience`` consecutive windows fail to improve on the best window mean (the
    rule of Cremer, Li & Duvenaud 2018: more than 10 non-improving 100-step windows), or at
    ``max_steps``. The test is batch-level: the batch stops together. Returns
    ``(parameters, steps taken)``. Only one host sync per window.
    """
    params = init.detach().clone().requires_grad_(True)
    opt = optimizer([params])
    best, bad, running, step = math.inf, 0, 0.0, 0
    with torch.enable_grad():
        while step < max_steps:
            running = running + gradient_step(model, x, params, opt, samples, analytic_kl, None)
            step += 1
            if step % window == 0:
                mean = float(running) / window
                running = 0.0
                if mean < best:
                    best, bad = mean, 0
                else:
                    bad += 1
                    if bad > patience:
                        break
    return params.detach(), step
