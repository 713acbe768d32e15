"""Held-out evaluation: K-sample importance-weighted log-likelihood in memory-bounded chunks.

Works on any model with ``log_joint_terms(x, z)`` and any guide ``q = guide(x, idx)`` returning a
``torch.distributions`` object, with no Lightning in sight, so it is tested directly.

Memory: the K samples of a batch of B datapoints are drawn ``chunk`` at a time; live tensors are
about ``chunk * B * (2 latent + 2 sum(hidden) + 3 dim)`` elements (samples, hidden activations
before and after the nonlinearity, logits, and the log-probability temporaries), so
:func:`samples_per_chunk` picks ``chunk`` to keep that under a budget in MiB. Chunks of a few MiB
stay in cache and run fastest on CPU; the per-datapoint results kept across chunks are O(B).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

import torch

from vibench.objectives import combine_iw_chunks, kl_estimate, log_weights


def samples_per_chunk(batch: int, latent: int, hidden: Sequence[int], dim: int, budget_mib: float, element_size: int = 4) -> int:
    """Samples per chunk so that one chunk's activations fit in ``budget_mib`` MiB (at least 1)."""
    per_sample = batch * (2 * latent + 2 * sum(hidden) + 3 * dim) * element_size
    return max(1, int(budget_mib * 2**20 // per_sample))


def samples_per_chunk_for(model, batch: int, budget_mib: float, element_size: int = 4) -> int:
    """:func:`samples_per_chunk` for a :class:`~vibench.model.GenerativeModel`'s MLP decoder."""
    widths = [m.out_features for m in model.decoder.net if isinstance(m, torch.nn.Linear)]
    return samples_per_chunk(batch, model.latent, widths[:-1], widths[-1], budget_mib, element_size)


def _chunks(total: int, size: int) -> Iterator[int]:
    for start in range(0, total, size):
        yield min(size, total - start)


class CompiledLikelihood:
    """``(z, x) -> log p(x | z)`` of a model, compiled with ``torch.compile`` (dynamic shapes).

    The same ``torch.distributions`` code, with its elementwise passes (tanh, the Bernoulli
    log-probability and its sum) fused: on CPU the decoder then runs at 85-90% of the
    matrix-multiply rate instead of 65-75%. Compiling costs ~8 s once, so it pays for long
    evaluations only (``eval.compile=auto``). Falls back to eager, once and with a warning, if
    compilation fails (no C++ compiler, an unsupported device).
    """

    def __init__(self, model):
        self.model = model
        self.compiled = torch.compile(self._eager, dynamic=True)
        self.failed = False

    def _eager(self, z: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return self.model.likelihood(z).log_prob(x)

    def __call__(self, z: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        if not self.failed:
            try:
                return self.compiled(z, x)
            except Exception as e:  # noqa: BLE001 - any compiler failure: evaluate eagerly instead
                import warnings

                warnings.warn(f"torch.compile of the evaluation failed ({type(e).__name__}); evaluating eagerly")
                self.failed = True
        return self._eager(z, x)


@torch.no_grad()
def evaluate_batch(model, guide: Callable, x: torch.Tensor, idx: torch.Tensor | None, num_samples: int, chunk: int, analytic_kl: bool = True, log_likelihood: Callable | None = None) -> dict[str, torch.Tensor]:
    """Per-datapoint bounds and their parts for one batch, with ``num_samples`` = K samples of q.

    Returns a dict of ``[B]`` tensors (and ``z_mean`` ``[B, latent]``):

    - ``iw_ll``: the K-sample IW bound ``log (1/K) sum_k w_k`` (Burda et al. 2016, eq. 8);
    - ``recon``: ``E_q[log p(x | z)]`` averaged over the same K samples (distortion, negated);
    - ``kl``: ``KL(q(z|x) || p(z))`` (rate), analytic when available, else over the K samples;
    - ``elbo``: ``recon - kl``;
    - ``z_mean``: ``E_q[z]``, for counting active units.

    ``log_likelihood(z, x)``, if given, replaces ``model.likelihood(z).log_prob(x)`` (e.g. a
    :class:`CompiledLikelihood` of the same model).
    """
    q = guide(x, idx)
    prior = model.prior()
    chunk_lse, recon_sum, kl_mc_sum = [], 0.0, 0.0
    for size in _chunks(num_samples, chunk):
        z = q.sample((size,))
        log_px_z = log_likelihood(z, x) if log_likelihood is not None else model.likelihood(z).log_prob(x)
        log_pz = prior.log_prob(z)
        log_qz = q.log_prob(z)
        chunk_lse.append(torch.logsumexp(log_weights(log_px_z, log_pz, log_qz), dim=0))
        recon_sum = recon_sum + log_px_z.sum(dim=0)
        kl_mc_sum = kl_mc_sum + (log_qz - log_pz).sum(dim=0)
    recon = recon_sum / num_samples
    try:
        kl = kl_estimate(q, prior, analytic=True) if analytic_kl else kl_mc_sum / num_samples
    except NotImplementedError:
        kl = kl_mc_sum / num_samples
    return {
        "iw_ll": combine_iw_chunks(torch.stack(chunk_lse), num_samples),
        "recon": recon,
        "kl": kl,
        "elbo": recon - kl,
        "z_mean": q.mean,
    }


def active_units(z_mean: torch.Tensor, threshold: float = 0.01) -> int:
    """Number of latent units u with ``Cov_x(E_q[z_u | x]) > threshold`` (Burda et al. 2016, sec. 5.2).

    Args:
        z_mean: ``[N, latent]`` posterior means over a dataset.
    """
    if z_mean.shape[0] < 2:
        return 0
    return int((z_mean.double().var(dim=0) > threshold).sum())


def summarize(per_point: dict[str, torch.Tensor], prefix: str = "test") -> dict[str, float]:
    """Dataset-level metrics from per-datapoint tensors (each ``[N]``; ``z_mean`` ``[N, latent]``).

    Means of each quantity, the standard error of the mean of ``iw_ll`` and ``elbo`` over
    datapoints (``std / sqrt(N)``: the uncertainty a comparison between runs must allow for), and
    the number of active units.
    """
    n = per_point["iw_ll"].shape[0]
    out: dict[str, float] = {}
    for key in ("elbo", "iw_ll", "kl", "recon", "exact_ll"):
        if key in per_point:
            values = per_point[key].double()
            out[f"{prefix}/{key}"] = float(values.mean())
            if key in ("elbo", "iw_ll") and n > 1:
                out[f"{prefix}/{key}_stderr"] = float(values.std() / n**0.5)
    if "z_mean" in per_point:
        out[f"{prefix}/active_units"] = active_units(per_point["z_mean"])
    out[f"{prefix}/n"] = n
    return out
