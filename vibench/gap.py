"""The inference-gap decomposition of Cremer, Li & Duvenaud (2018), "Inference Suboptimality in VAEs".

For a trained amortized model and datapoints x:

    log p(x) - ELBO[q_enc]  =  (log p(x) - ELBO[q*])  +  (ELBO[q*] - ELBO[q_enc])
       inference gap            approximation gap         amortization gap

q* is the best q of the encoder's family (a diagonal Gaussian) for each datapoint, fitted by
gradient steps from the prior with the model frozen (their procedure: Adam lr 1e-3, 50 samples
per step, stop after more than 10 non-improving 100-step windows). log p(x) is estimated with the
K-sample importance-weighted bound using q* as the proposal. The two gaps are computed from the
same three per-datapoint numbers, so they add up to the inference gap exactly.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from vibench.evaluation import evaluate_batch
from vibench.guides import gaussian
from vibench.local_fit import fit_heldout


def gap_decomposition(model, encoder: Callable, x: torch.Tensor, idx: torch.Tensor, iw_samples: int, chunk: int, optimizer: Callable, samples: int = 50, max_steps: int = 20000, window: int = 100, patience: int = 10) -> dict[str, torch.Tensor]:
    """Per-datapoint ``log_px``, ``elbo_encoder``, ``elbo_local`` and the gaps, each ``[B]``; plus ``steps`` (scalar)."""
    q_enc = encoder(x, idx)
    enc = evaluate_batch(model, lambda *_: q_enc, x, idx, iw_samples, chunk)
    init = torch.zeros(len(x), 2, q_enc.event_shape[0], device=x.device, dtype=x.dtype)
    params, steps = fit_heldout(model, x, init, optimizer, samples, max_steps, window, patience)
    q_star = gaussian(params)
    star = evaluate_batch(model, lambda *_: q_star, x, idx, iw_samples, chunk)
    log_px = star["iw_ll"]
    return {
        "log_px": log_px,
        "elbo_encoder": enc["elbo"],
        "elbo_local": star["elbo"],
        "iw_ll_encoder": enc["iw_ll"],
        "inference": log_px - enc["elbo"],
        "approximation": log_px - star["elbo"],
        "amortization": star["elbo"] - enc["elbo"],
        "steps": torch.tensor(float(steps)),
    }


def summarize_gaps(parts: list[dict[str, torch.Tensor]]) -> dict[str, float]:
    """Means over all datapoints, keyed ``gap/<quantity>``; ``gap/n`` points, ``gap/fit_steps`` mean steps per batch."""
    out = {f"gap/{k}": float(torch.cat([p[k] for p in parts]).double().mean()) for k in parts[0] if k != "steps"}
    out["gap/n"] = sum(len(p["log_px"]) for p in parts)
    out["gap/fit_steps"] = float(sum(float(p["steps"]) for p in parts) / len(parts))
    return out
