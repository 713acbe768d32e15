"""Fitting per-datapoint Gaussians q_i by gradient steps, vectorized over a batch.

"Inference as optimization": with the generative model fixed, each datapoint's posterior
parameters (a ``[B, n_params]`` tensor of a family, :mod:`vibench.families`) are moved uphill on
its own ELBO. The loss is the *sum* of per-datapoint negative ELBOs, so each
row's gradient is exactly the gradient of its own ELBO, whatever the batch size; gradients are
taken with ``torch.autograd.grad`` with respect to the local parameters only, so the model's
``.grad`` fields are never touched.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch



def negative_elbo_sum(model, family, x: torch.Tensor, params: torch.Tensor, samples: int, analytic_kl: bool = True) -> torch.Tensor:
    """``-sum_i ELBO_i`` for local parameters ``params`` ``[B, n_params]`` with ``samples`` reparameterized draws."""
    return negative_elbos(model, family, x, params, samples, analytic_kl).sum()


def clip_per_datapoint(grad: torch.Tensor, max_norm: float | None) -> torch.Tensor:
    """Scale each datapoint's gradient (a row of ``[B, n_params]``) to norm at most ``max_norm``.

    Kim et al. (2018) clip the local parameters' gradients at norm 5: with SGD at lr 1, the
    per-datapoint ELBO gradient of a 784-dimensional Bernoulli likelihood (hundreds of nats) would
    otherwise throw q_i far off in one step.
    """
    if max_norm is None:
        return grad
    norm = grad.flatten(1).norm(dim=1).clamp_min(1e-12)
    return grad * (max_norm / norm).clamp(max=1.0).view(-1, *([1] * (grad.ndim - 1)))


def gradient_step(model, family, x: torch.Tensor, params: torch.Tensor, opt, samples: int, analytic_kl: bool, max_grad_norm: float | None) -> torch.Tensor:
    """One step of ``opt`` on the local parameters (model untouched); returns the step's summed negative ELBO."""
    loss = negative_elbo_sum(model, family, x, params, samples, analytic_kl)
    (grad,) = torch.autograd.grad(loss, [params])
    params.grad = clip_per_datapoint(grad, max_grad_norm)
    opt.step()
    return loss.detach()


def refine(model, family, x: torch.Tensor, init: torch.Tensor, steps: int, optimizer: Callable, samples: int = 1, analytic_kl: bool = True, max_grad_norm: float | None = 5.0) -> torch.Tensor:
    """``steps`` steps of ``optimizer`` (a factory ``[tensor] -> Optimizer``) from ``init``, each
    datapoint's gradient clipped to ``max_grad_norm``; returns detached parameters."""
    params = init.detach().clone().requires_grad_(True)
    if steps <= 0:
        return params.detach()
    opt = optimizer([params])
    with torch.enable_grad():
        for _ in range(steps):
            gradient_step(model, family, x, params, opt, samples, analytic_kl, max_grad_norm)
    return params.detach()


@dataclass
class FitResult:
    """A held-out fit: ``params`` ``[B, n_params]``, and per datapoint the ``steps`` it took
    ``[B]`` and whether its stopping rule fired (``converged`` ``[B]``; False: stopped at ``max_steps``)."""

    params: torch.Tensor
    steps: torch.Tensor
    converged: torch.Tensor

    @property
    def converged_fraction(self) -> float:
        return float(self.converged.double().mean()) if len(self.converged) else 1.0


def negative_elbos(model, family, x: torch.Tensor, params: torch.Tensor, samples: int, analytic_kl: bool = True) -> torch.Tensor:
    """``-ELBO_i`` per datapoint ``[B]`` for local parameters ``params`` ``[B, n_params]`` of ``family``."""
    recon, kl = model.elbo_terms(x, family.distribution(params), samples, analytic_kl)
    return -(recon - kl)


def _keep_rows(opt: torch.optim.Optimizer, old: torch.Tensor, new: torch.Tensor, keep: torch.Tensor) -> None:
    """Move ``opt``'s state of ``old`` (per-row tensors indexed by ``keep``; scalars as they are) to ``new``."""
    state = opt.state.pop(old, {})
    opt.state[new] = {k: (v[keep] if torch.is_tensor(v) and v.ndim > 0 and v.shape[0] == len(keep) else v) for k, v in state.items()}
    opt.param_groups[0]["params"] = [new]


def fit_heldout(model, family, x: torch.Tensor, init: torch.Tensor, optimizer: Callable, samples: int = 1, max_steps: int = 2000, window: int = 100, patience: int = 10, analytic_kl: bool = True, on_window: Callable[[int, int, int], None] | None = None) -> FitResult:
    """Fit local parameters for held-out points with the model frozen, each point stopping by its own rule.

    Each datapoint's negative ELBO is averaged over windows of ``window`` steps; a point stops once
    more than ``patience`` consecutive windows fail to improve on its best window mean (the rule of
    Cremer, Li & Duvenaud 2018, who fit each point separately: more than 10 non-improving 100-step
    windows), or at ``max_steps``. Points that stopped leave the batch: later steps compute only
    the points still fitting (with their optimizer state), so a fit costs what its slowest points
    need, not the batch times the slowest. ``on_window(step, n_stopped, n)`` is called after every
    window (progress). One host sync per window.
    """
    n = len(x)
    out = init.detach().clone()
    steps = torch.full((n,), max_steps, dtype=torch.long)
    converged = torch.zeros(n, dtype=torch.bool)
    alive = torch.arange(n, device=x.device)  # rows of the batch still fitting
    params = init.detach().clone().requires_grad_(True)
    opt = optimizer([params])
    best = torch.full((n,), math.inf, dtype=torch.float64, device=x.device)
    bad = torch.zeros(n, dtype=torch.long, device=x.device)
    running = torch.zeros(n, dtype=params.dtype, device=x.device)
    step = 0
    with torch.enable_grad():
        while step < max_steps and len(alive):
            loss = negative_elbos(model, family, x[alive], params, samples, analytic_kl)
            (params.grad,) = torch.autograd.grad(loss.sum(), [params])  # row i's gradient is its own ELBO's
            opt.step()
            running = running + loss.detach()
            step += 1
            if step % window:
                continue
            mean = running.double() / window
            running = torch.zeros_like(running)
            improved = mean < best[alive]
            best[alive] = torch.where(improved, mean, best[alive])
            bad[alive] = torch.where(improved, 0, bad[alive] + 1)
            stop = (bad[alive] > patience).cpu()
            if bool(stop.any()):
                done = alive[stop.to(alive.device)].cpu()
                out[done] = params.detach()[stop.to(params.device)]
                steps[done], converged[done] = step, True
                keep = ~stop.to(params.device)
                new = params.detach()[keep].clone().requires_grad_(True)
                _keep_rows(opt, params, new, keep)
                params, alive, running = new, alive[keep], running[keep]
            if on_window is not None:
                on_window(step, n - len(alive), n)
    if len(alive):
        out[alive.cpu()] = params.detach()
    return FitResult(out, steps, converged)
