"""Gradient-estimator diagnostics: how noisy is the encoder's gradient, per estimator and L?

At fixed parameters and a fixed batch, the encoder gradient of the batch-mean ELBO is estimated
``repeats`` times with fresh samples; the reported number is the total variance
``sum_j Var[g_j]`` over all encoder parameters j (the trace of the estimator's covariance),
which is what slows SGD down. Averaging L independent samples divides it by L; the
reparameterization estimator (Kingma & Welling 2014) is usually orders of magnitude below the
score-function estimator (REINFORCE, Williams 1992) at the same L.
"""

from __future__ import annotations

import torch


def encoder_gradient_variance(module, x: torch.Tensor, idx: torch.Tensor, estimator: str, samples: int, repeats: int = 50) -> dict[str, float]:
    """Total variance and mean squared norm of the encoder-gradient estimate over ``repeats`` draws.

    ``module`` is an :class:`~vibench.methods.AmortizedVI`; its parameters are not changed.
    """
    params = [p for p in module.guide.parameters() if p.requires_grad]
    grads = []
    with torch.enable_grad():
        if estimator == "score" and samples == 1:  # warm the running-mean baseline at this point
            for _ in range(20):
                module.score_function_terms(x, module.guide(x, idx), 1, 1.0)
        for _ in range(repeats):
            q = module.guide(x, idx)
            if estimator == "reparam":
                recon, kl = module.elbo_terms(x, q, samples)
                loss = -(recon - kl).mean()
            else:
                recon, kl, surrogate = module.score_function_terms(x, q, samples, 1.0)
                loss = -(recon - kl + surrogate).mean()
            grads.append(torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss, params)]))
    g = torch.stack(grads).double()
    return {"variance": float(g.var(dim=0).sum()), "mean_sq_norm": float(g.mean(dim=0).square().sum())}
