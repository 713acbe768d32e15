"""Training objectives (``objective=`` config group), built by ``_target_``.

Each is called as ``objective(model, q, x, beta) -> (loss, stats)``: the scalar to minimize for a
batch ``x`` ``[B, dim]`` under the posterior ``q`` (batch ``[B]``) and the KL weight ``beta``,
and the step's metrics ``stats``, one detached tensor in the order of ``objective.keys``. The
maths lives in :mod:`vibench.objectives` (pure functions of log densities) and in
:meth:`~vibench.model.GenerativeModel.elbo_terms` (the one ELBO); these classes only choose.

- :class:`ELBO`: the reparameterized ELBO with L samples (Kingma & Welling 2014).
- :class:`IWAE`: the importance-weighted bound with k samples (Burda et al. 2016).
- :class:`ScoreFunctionELBO`: the ELBO's score-function (REINFORCE) gradient with a baseline.
"""

from __future__ import annotations

import torch
from torch import nn

from vibench.objectives import iw_bound, kl_estimate, log_weights
from vibench.train_metrics import TRAIN_KEYS, step_stats


class ELBO(nn.Module):
    """``-(E_q[log p(x|z)] - beta KL(q || p))``, batch mean, L = ``samples`` reparameterized draws."""

    name, estimator = "elbo", "reparam"
    keys = TRAIN_KEYS
    compilable = True  # a pure function of the batch: may be torch.compile'd
    supports_annealing = True

    def __init__(self, samples: int = 1, analytic_kl: bool = True):
        super().__init__()
        self.samples, self.analytic_kl = samples, analytic_kl

    def forward(self, model, q, x: torch.Tensor, beta) -> tuple[torch.Tensor, torch.Tensor]:
        recon, kl = model.elbo_terms(x, q, self.samples, self.analytic_kl)
        loss = -(recon - beta * kl).mean()
        return loss, step_stats(loss, recon, kl)

    def describe(self) -> dict:
        return {"name": self.name, "samples": self.samples, "estimator": self.estimator}


class IWAE(ELBO):
    """``-L_k``, the k-sample importance-weighted bound (Burda et al. 2016, eq. 8), batch mean;
    k = ``samples``, reparameterized. KL annealing does not apply to it. Logs ``train/iw_bound``
    beside the ELBO's terms (recon and KL averaged over the same k samples). A pure function of the
    batch, like the ELBO: compiled for long runs (``train.compile``)."""

    name = "iwae"
    keys = (*TRAIN_KEYS, "train/iw_bound")
    supports_annealing = False

    def forward(self, model, q, x, beta):
        z = q.rsample((self.samples,))
        log_px_z, log_pz = model.log_joint_terms(x, z)
        bound = iw_bound(log_weights(log_px_z, log_pz, q.log_prob(z)))
        loss = -bound.mean()
        recon, kl = log_px_z.mean(0), kl_estimate(q, model.prior(), z, analytic=self.analytic_kl)
        return loss, torch.cat([step_stats(loss, recon, kl), bound.mean().detach()[None]])


class ScoreFunctionELBO(ELBO):
    """The ELBO with the score-function (REINFORCE) gradient for q (Williams 1992).

    ``loss = -(recon - beta kl + surrogate)`` with ``grad surrogate = E_q[(f(z) - b) grad log q(z)]``:
    z is sampled without reparameterization, so q's parameters learn only through the surrogate
    (and the analytic KL). ``f = log p(x|z)`` with analytic KL, else ``log p(x|z) - beta (log q - log p)``.
    The baseline b is the mean of the other samples' f (leave-one-out) when L > 1, else a running
    mean of f over batches (Mnih & Gregor 2014), a buffer saved in checkpoints. The surrogate's
    value is 0 in expectation.
    """

    estimator = "score"
    compilable = False

    def __init__(self, samples: int = 1, analytic_kl: bool = True):
        super().__init__(samples, analytic_kl)
        self.register_buffer("baseline", torch.zeros(()))

    def terms(self, model, q, x, beta) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(recon, kl, surrogate)``, each ``[B]``."""
        z = q.sample((self.samples,))
        log_px_z, log_pz = model.log_joint_terms(x, z)
        log_qz = q.log_prob(z)
        kl = kl_estimate(q, model.prior(), z, analytic=self.analytic_kl)
        f = (log_px_z if self.analytic_kl else log_px_z - beta * (log_qz - log_pz)).detach()
        if self.samples > 1:
            baseline = (f.sum(0, keepdim=True) - f) / (self.samples - 1)
        else:  # the baseline must not depend on this batch's samples: copy it before the update
            baseline = self.baseline.clone()
            self.baseline.mul_(0.9).add_(0.1 * f.mean())
        return log_px_z.mean(0), kl, ((f - baseline) * log_qz).mean(0)

    def forward(self, model, q, x, beta):
        recon, kl, surrogate = self.terms(model, q, x, beta)
        loss = -(recon - beta * kl + surrogate).mean()
        return loss, step_stats(loss, recon, kl)
