"""Annealed importance sampling (AIS) of log p(x), and its reverse for bidirectional Monte Carlo.

For one datapoint x, a start density q(z) (the prior, or the encoder's q(z|x)) and the
unnormalized target p(x, z), AIS anneals through the geometric path

    pi_t(z) ∝ q(z)^(1 - beta_t) p(x, z)^beta_t,   0 = beta_0 < beta_1 < ... < beta_T = 1,

moving each chain with an HMC transition that leaves pi_t invariant. With
``f(z) = log p(x, z) - log q(z)``, each chain's log weight

    log w = sum_{t=1..T} (beta_t - beta_{t-1}) f(z_{t-1})

is an unbiased estimate of p(x) in expectation (E[w] = p(x); Neal 2001), so with C chains
``log (1/C) sum_c w_c`` is a stochastic lower bound on log p(x) (Jensen), tightening as T grows.
Run backwards from an exact posterior sample z ~ p(z|x) (available for data simulated from the
model: the z that generated x), the same chain gives ``log w_rev = sum_t (beta_{t-1} - beta_t) f(z_t)``
with E[exp(log w_rev)] = 1/p(x), hence a stochastic *upper* bound ``-log (1/C) sum_c exp(log w_rev_c)``.
The two bracket log p(x): bidirectional Monte Carlo (Grosse, Ghahramani & Adams 2015), which
Wu et al. (2017) use to validate AIS for decoder-based models.

Shapes: chains first, ``z`` is ``[C, B, latent]``; per-datapoint outputs ``[B]``. The model is
anything with ``log_joint_terms(x, z) -> (log p(x|z), log p(z))`` for ``z`` ``[S, B, latent]``.

References
----------
[1] R. M. Neal. Annealed importance sampling. Statistics and Computing 11, 2001.
[2] R. B. Grosse, Z. Ghahramani, R. P. Adams. Sandwiching the marginal likelihood using
    bidirectional Monte Carlo. arXiv:1511.02543, 2015.
[3] Y. Wu, Y. Burda, R. Salakhutdinov, R. Grosse. On the quantitative analysis of decoder-based
    generative models. ICLR 2017.
[4] R. M. Neal. MCMC using Hamiltonian dynamics. Handbook of MCMC, 2011 (leapfrog, acceptance).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch.distributions import Distribution


def sigmoid_schedule(steps: int, delta: float = 4.0) -> torch.Tensor:
    """``beta_0..beta_T`` (``[T + 1]``, float64): a sigmoid of ``delta (2t/T - 1)``, rescaled to run
    exactly from 0 to 1. It spends more intermediate distributions near both ends, where the
    geometric path changes fastest ([2], sec. 6)."""
    if steps < 1:
        raise ValueError(f"steps={steps}: AIS needs at least one intermediate distribution")
    s = torch.sigmoid(delta * (2 * torch.arange(steps + 1, dtype=torch.float64) / steps - 1))
    return (s - s[0]) / (s[-1] - s[0])


@dataclass
class AISResult:
    """Per datapoint: ``log_px`` ``[B]`` (log of the mean weight over chains), ``stderr`` ``[B]``
    (delta-method standard error of that log-mean over chains: ``sqrt(sum_c omega_c^2 - 1/C)``,
    omega the normalized weights), ``log_w`` ``[C, B]``, and the HMC ``accept_rate`` overall."""

    log_px: torch.Tensor
    stderr: torch.Tensor
    log_w: torch.Tensor
    accept_rate: float


def log_mean_exp_with_stderr(log_w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(log (1/C) sum_c exp(log_w_c), its delta-method standard error)`` over axis 0.

    ``Var[log mean w] ≈ Var[w] / (C mean(w)^2) = sum_c omega_c^2 - 1/C`` with
    ``omega_c = w_c / sum w``: 0 for equal weights, up to ``1 - 1/C`` when one chain dominates.
    """
    c = log_w.shape[0]
    lse = torch.logsumexp(log_w, dim=0)
    omega2 = torch.exp(2 * (log_w - lse)).sum(dim=0)
    return lse - math.log(c), (omega2 - 1 / c).clamp_min(0).sqrt()


class _Path:
    """The annealing path for a batch: at a state z, ``log p(x, z)`` and ``log q(z)`` with their
    gradients, from which ``log pi_beta = (1 - beta) log q + beta log p(x, z)`` and its gradient
    follow for any beta without evaluating the model again."""

    def __init__(self, model, x: torch.Tensor, start: Distribution):
        self.model, self.x, self.start = model, x, start

    def state(self, z: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """``(z, log p(x,z), log q(z), grad log p(x,z), grad log q(z))``; log densities ``[C, B]``."""
        with torch.enable_grad():
            z = z.detach().requires_grad_(True)
            log_px_z, log_pz = self.model.log_joint_terms(self.x, z)
            log_joint = log_px_z + log_pz
            (g_joint,) = torch.autograd.grad(log_joint.sum(), [z])
            z_q = z.detach().requires_grad_(True)
            log_q = self.start.log_prob(z_q)
            (g_q,) = torch.autograd.grad(log_q.sum(), [z_q])
        return z.detach(), log_joint.detach(), log_q.detach(), g_joint, g_q


def _log_pi(state, beta):
    _, log_joint, log_q, g_joint, g_q = state
    return (1 - beta) * log_q + beta * log_joint, (1 - beta) * g_q + beta * g_joint


def hmc_step(path: _Path, state: tuple, beta: torch.Tensor, step_size: torch.Tensor, leapfrog: int) -> tuple[tuple, torch.Tensor]:
    """One HMC transition leaving ``pi_beta`` invariant ([4]): ``leapfrog`` steps of size
    ``step_size`` (``[C, B, 1]``) with unit mass, then a Metropolis test per chain and point.
    Returns the new state (the old one where rejected) and the ``[C, B]`` acceptances."""
    z = state[0]
    log_pi, grad = _log_pi(state, beta)
    p0 = torch.randn_like(z)
    p = p0 + 0.5 * step_size * grad
    new, z_new = state, z
    for i in range(leapfrog):
        z_new = z_new + step_size * p
        new = path.state(z_new)
        _, grad_new = _log_pi(new, beta)
        p = p + (step_size if i < leapfrog - 1 else 0.5 * step_size) * grad_new
    log_pi_new, _ = _log_pi(new, beta)
    log_accept = (log_pi_new - 0.5 * (p**2).sum(-1)) - (log_pi - 0.5 * (p0**2).sum(-1))
    accepted = torch.log(torch.rand_like(log_accept)) < torch.nan_to_num(log_accept, nan=-math.inf)
    keep = accepted.unsqueeze(-1)
    merged = tuple(torch.where(keep if a.dim() == z.dim() else accepted, a, b) for a, b in zip(new, state))
    return merged, accepted


def _anneal(path: _Path, z: torch.Tensor, betas: torch.Tensor, leapfrog: int, step_size: float, target_accept: float | None, forward: bool, on_level: Callable[[], None] | None = None) -> tuple[torch.Tensor, float]:
    """Run the chains along ``betas`` (forward: 0 -> 1 from z ~ q; reverse: 1 -> 0 from z ~ p(z|x));
    returns each chain's log weight ``[C, B]`` and the acceptance rate.

    Forward, level t weighs ``f = log p(x,z) - log q(z)`` at the state left by the move under
    pi_{t-1}, then moves under pi_t; reverse, level t weighs f at the state under pi_t, then moves
    under pi_{t-1}. Step sizes adapt per chain and point toward ``target_accept`` (x1.02 after an
    acceptance, x0.98 after a rejection in Wu et al.'s code; here by factors whose balance point is
    the target rate, kept in [1e-4, 1]); each transition still leaves its pi_t invariant.
    """
    betas = betas.to(z.dtype).to(z.device)
    eps = torch.full((*z.shape[:-1], 1), step_size, dtype=z.dtype, device=z.device)
    log_w = torch.zeros(z.shape[:-1], dtype=z.dtype, device=z.device)
    state = path.state(z)
    accepted_total = 0.0
    levels = list(range(1, len(betas))) if forward else list(range(len(betas) - 1, 0, -1))
    for t in levels:
        f = state[1] - state[2]
        if forward:
            log_w = log_w + (betas[t] - betas[t - 1]) * f
            beta = betas[t]
        else:
            log_w = log_w - (betas[t] - betas[t - 1]) * f
            beta = betas[t - 1]
        state, accepted = hmc_step(path, state, beta, eps, leapfrog)
        if target_accept is not None:  # up by e^(0.02 (1 - tau)) on acceptance, down by e^(-0.02 tau) otherwise: rate -> tau
            eps = (eps * torch.exp(0.02 * (accepted.to(z.dtype) - target_accept)).unsqueeze(-1)).clamp(1e-4, 1.0)
        accepted_total += float(accepted.double().mean())
        if on_level is not None:
            on_level()
    return log_w, accepted_total / max(1, len(levels))


def ais(model, x: torch.Tensor, start: Distribution, chains: int = 16, steps: int = 1000, leapfrog: int = 10, step_size: float = 0.05, target_accept: float = 0.65, on_level: Callable[[], None] | None = None) -> AISResult:
    """Forward AIS estimate of log p(x) for a batch ``x`` ``[B, dim]``.

    Args:
        model: the generative model (``log_joint_terms``).
        start: q(z), batch shape ``[B]`` (``model.prior().expand([B])`` or the encoder's q(z|x)).
        chains: C independent chains per datapoint. steps: T intermediate distributions
            (:func:`sigmoid_schedule`). leapfrog, step_size: HMC; the step size adapts per chain.
    """
    path = _Path(model, x, start)
    with torch.no_grad():
        z = start.sample((chains,))
    log_w, rate = _anneal(path, z, sigmoid_schedule(steps), leapfrog, step_size, target_accept, forward=True, on_level=on_level)
    log_px, stderr = log_mean_exp_with_stderr(log_w)
    return AISResult(log_px, stderr, log_w, rate)


def reverse_ais(model, x: torch.Tensor, start: Distribution, z_posterior: torch.Tensor, chains: int = 16, steps: int = 1000, leapfrog: int = 10, step_size: float = 0.05, target_accept: float = 0.65, on_level: Callable[[], None] | None = None) -> AISResult:
    """Reverse AIS from exact posterior samples ``z_posterior`` ``[B, latent]`` (each chain starts
    there): ``log_px`` is the stochastic upper bound ``-log (1/C) sum_c exp(log w_rev_c)`` ([2])."""
    path = _Path(model, x, start)
    z = z_posterior.detach().unsqueeze(0).expand(chains, *z_posterior.shape).clone()
    log_w, rate = _anneal(path, z, sigmoid_schedule(steps), leapfrog, step_size, target_accept, forward=False, on_level=on_level)
    log_inv, stderr = log_mean_exp_with_stderr(log_w)
    return AISResult(-log_inv, stderr, log_w, rate)
