"""The inference-gap decomposition of Cremer, Li & Duvenaud (2018), "Inference Suboptimality in VAEs".

For a trained amortized model and datapoints x:

    log p(x) - ELBO[q_enc]  =  (log p(x) - ELBO[q*])  +  (ELBO[q*] - ELBO[q_enc])
       inference gap            approximation gap         amortization gap

q* is the best q of the encoder's family (``posterior=``: a diagonal Gaussian, or a flow, as
Cremer et al. compare) for each datapoint, fitted by
gradient steps with the model frozen (their procedure: from the prior, Adam lr 1e-3, 50 samples
per step, stop after more than 10 non-improving 100-step windows). From the prior this takes
thousands of steps; a fit cut short by ``max_steps`` underestimates ELBO[q*] and can make the
amortization gap negative, so every point reports whether it converged (stopped by the window
rule), and ``init="encoder"`` starts q* at the encoder's q instead (faster, and never worse than
the encoder at the start). log p(x) is estimated with the
K-sample importance-weighted bound using q* as the proposal. The two gaps are computed from the
same three per-datapoint numbers, so they add up to the inference gap exactly.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from vibench.evaluation import evaluate_batch
from vibench.local_fit import fit_heldout


def gap_decomposition(model, encoder, x: torch.Tensor, idx: torch.Tensor, iw_samples: int, chunk: int, optimizer: Callable, samples: int = 50, max_steps: int = 20000, window: int = 100, patience: int = 10, init: str = "prior", on_window: Callable | None = None, ais_log_px: Callable | None = None) -> dict[str, torch.Tensor]:
    """Per-datapoint ``log_px``, with ``encoder`` an :class:`~vibench.networks.Encoder` (its family is q*'s), ``elbo_encoder``, ``elbo_local`` and the gaps, plus the fit's
    ``steps`` and ``converged`` (1.0 if the point's window rule stopped it), each ``[B]``.

    With ``ais_log_px(x, q_enc) -> [B]`` (an AIS estimate), ``log_px`` is the larger of AIS and the
    IW bound for each point, Cremer et al.'s convention (both are stochastic lower bounds), and
    ``log_px_iw`` and ``log_px_ais`` are kept beside it."""
    family = encoder.family
    enc = evaluate_batch(model, encoder, x, idx, iw_samples, chunk)
    if init == "encoder":
        start = encoder.params(x).detach()
    elif init == "prior":
        start = family.init_params(len(x), device=x.device, dtype=x.dtype)
    else:
        raise ValueError(f"init={init!r} must be 'prior' or 'encoder'")
    fit = fit_heldout(model, family, x, start, optimizer, samples, max_steps, window, patience, on_window=on_window)
    q_star = family.distribution(fit.params)
    star = evaluate_batch(model, lambda *_: q_star, x, idx, iw_samples, chunk)
    log_px = star["iw_ll"]
    extra = {}
    if ais_log_px is not None:
        ais = ais_log_px(x, encoder(x, idx)).to(log_px.dtype)
        extra = {"log_px_iw": log_px, "log_px_ais": ais}
        log_px = torch.maximum(log_px, ais)
    return {
        **extra,
        "log_px": log_px,
        "elbo_encoder": enc["elbo"],
        "elbo_local": star["elbo"],
        "iw_ll_encoder": enc["iw_ll"],
        "inference": log_px - enc["elbo"],
        "approximation": log_px - star["elbo"],
        "amortization": star["elbo"] - enc["elbo"],
        "steps": fit.steps.to(log_px.dtype),
        "converged": fit.converged.to(log_px.dtype),
    }


def summarize_gaps(parts: list[dict[str, torch.Tensor]]) -> dict[str, float]:
    """Means over all datapoints, keyed ``gap/<quantity>``: ``gap/n`` points, ``gap/fit_steps`` the
    mean steps of a point's fit, ``gap/converged`` the fraction of points whose stopping rule fired."""
    out = {f"gap/{k}": float(torch.cat([p[k].cpu() for p in parts]).double().mean()) for k in parts[0] if k != "steps"}
    out["gap/fit_steps"] = float(torch.cat([p["steps"].cpu() for p in parts]).double().mean())
    out["gap/n"] = sum(len(p["log_px"]) for p in parts)
    return out
