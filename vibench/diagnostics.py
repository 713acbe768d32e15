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


def encoder_gradient_variance(model, encoder, x: torch.Tensor, idx: torch.Tensor, estimator: str, samples: int, repeats: int = 50, analytic_kl: bool = True) -> dict[str, float]:
    """Total variance and mean squared norm of the encoder-gradient estimate over ``repeats`` draws,
    with the ELBO's reparameterized (``reparam``) or score-function (``score``) estimator at L = ``samples``
    (:mod:`vibench.losses`). The parameters are not changed.
    """
    from vibench.losses import ELBO, ScoreFunctionELBO

    objective = (ELBO if estimator == "reparam" else ScoreFunctionELBO)(samples, analytic_kl).to(x.device)
    params = [p for p in encoder.parameters() if p.requires_grad]
    grads = []
    with torch.enable_grad():
        if estimator == "score" and samples == 1:  # warm the running-mean baseline at this point
            for _ in range(20):
                objective(model, encoder(x, idx), x, 1.0)
        for _ in range(repeats):
            loss, _ = objective(model, encoder(x, idx), x, 1.0)
            grads.append(torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss, params)]))
    g = torch.stack(grads).double()
    return {"variance": float(g.var(dim=0).sum()), "mean_sq_norm": float(g.mean(dim=0).square().sum())}
