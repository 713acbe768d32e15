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
from torch.distributions import Distribution, Independent, Normal

from vibench.compiling import CompiledOrEager
from vibench.objectives import combine_iw_chunks, iw_mc_variance, kl_estimate, log_weights


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


def chunk_terms(log_px_z: torch.Tensor, log_pz: torch.Tensor, log_qz: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """What the evaluation keeps of one chunk of S samples, each ``[B]`` from ``[S, B]`` log densities:
    ``(logsumexp_s log w_s, sum_s log p(x | z_s), sum_s [log q(z_s) - log p(z_s)], logsumexp_s 2 log w_s)``
    (the last for the Monte Carlo error, :func:`~vibench.objectives.iw_mc_variance`)."""
    log_w = log_weights(log_px_z, log_pz, log_qz)
    return torch.logsumexp(log_w, dim=0), log_px_z.sum(dim=0), (log_qz - log_pz).sum(dim=0), torch.logsumexp(2 * log_w, dim=0)


class CompiledChunk:
    """One chunk of the K-sample evaluation as a single ``torch.compile`` graph (dynamic shapes),
    for a diagonal-Gaussian q (every guide in vibench).

    Called as ``(eps, loc, scale, x)`` with standard-normal noise ``eps`` ``[S, B, latent]``,
    ``z = loc + scale * eps`` (q's reparameterized sample), it returns :func:`chunk_terms`. The
    likelihood is the decoder's :meth:`~vibench.networks.Decoder.fast_log_prob` (tanh and the
    Bernoulli log-probability with fewer transcendental evaluations), and the sample, the
    densities of q and p(z), the weights and the chunk's logsumexp fuse around the two matrix
    products: on CPU the decoder then runs at ~80% of the matrix-multiply rate instead of 65-70%
    eagerly (``python -m vibench.bench``). Compiling costs ~10 s once, so it pays for long
    evaluations only (``eval.compile=auto``). Falls back to eager if compiling fails
    (:class:`~vibench.compiling.CompiledOrEager`).
    """

    def __init__(self, model):
        self.model = model
        self._call = CompiledOrEager(self._eager, "the evaluation", dynamic=True)

    @property
    def failed(self) -> bool:
        return self._call.failed

    @staticmethod
    def supports(q: Distribution) -> bool:
        return isinstance(q, Independent) and isinstance(q.base_dist, Normal) and q.reinterpreted_batch_ndims == 1

    def _eager(self, eps: torch.Tensor, loc: torch.Tensor, scale: torch.Tensor, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        z = loc + scale * eps
        q = Independent(Normal(loc, scale, validate_args=False), 1, validate_args=False)
        return chunk_terms(self.model.decoder.fast_log_prob(z, x), self.model.prior().log_prob(z), q.log_prob(z))

    def __call__(self, eps: torch.Tensor, loc: torch.Tensor, scale: torch.Tensor, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self._call(eps, loc, scale, x)


@torch.no_grad()
def evaluate_batch(model, guide: Callable, x: torch.Tensor, idx: torch.Tensor | None, num_samples: int, chunk: int, analytic_kl: bool = True, compiled: CompiledChunk | None = None) -> dict[str, torch.Tensor]:
    """Per-datapoint bounds and their parts for one batch, with ``num_samples`` = K samples of q.

    Returns a dict of ``[B]`` tensors (and ``z_mean`` ``[B, latent]``):

    - ``iw_ll``: the K-sample IW bound ``log (1/K) sum_k w_k`` (Burda et al. 2016, eq. 8);
    - ``iw_ll_mc_var``: its Monte Carlo variance by the delta method (:func:`~vibench.objectives.iw_mc_variance`);
    - ``recon``: ``E_q[log p(x | z)]`` averaged over the same K samples (distortion, negated);
    - ``kl``: ``KL(q(z|x) || p(z))`` (rate), analytic when available, else over the K samples;
    - ``elbo``: ``recon - kl``;
    - ``z_mean``: ``E_q[z]`` (a flow's: the mean of the K samples), for counting active units.

    ``compiled``, a :class:`CompiledChunk` of the same model, computes the chunks when q is a
    diagonal Gaussian (the same quantities, faster).
    """
    q = guide(x, idx)
    prior = model.prior()
    fast = compiled is not None and compiled.supports(q)
    try:
        z_mean = q.mean
    except NotImplementedError:  # a flow: E_q[z] from the K samples
        z_mean = None
    chunk_lse, chunk_lse2, recon_sum, kl_mc_sum, z_sum = [], [], 0.0, 0.0, 0.0
    for size in _chunks(num_samples, chunk):
        if fast:
            eps = torch.randn((size, *q.batch_shape, *q.event_shape), dtype=x.dtype, device=x.device)
            lse, recon_s, kl_s, lse2 = compiled(eps, q.base_dist.loc, q.base_dist.scale, x)
        else:
            z = q.sample((size,))
            lse, recon_s, kl_s, lse2 = chunk_terms(model.likelihood(z).log_prob(x), prior.log_prob(z), q.log_prob(z))
            if z_mean is None:
                z_sum = z_sum + z.sum(dim=0)
        chunk_lse.append(lse)
        chunk_lse2.append(lse2)
        recon_sum = recon_sum + recon_s
        kl_mc_sum = kl_mc_sum + kl_s
    recon = recon_sum / num_samples
    try:
        kl = kl_estimate(q, prior, analytic=True) if analytic_kl else kl_mc_sum / num_samples
    except NotImplementedError:
        kl = kl_mc_sum / num_samples
    lse_all, lse2_all = torch.logsumexp(torch.stack(chunk_lse), dim=0), torch.logsumexp(torch.stack(chunk_lse2), dim=0)
    return {
        "iw_ll": combine_iw_chunks(torch.stack(chunk_lse), num_samples),
        "iw_ll_mc_var": iw_mc_variance(lse_all.double(), lse2_all.double(), num_samples),
        "recon": recon,
        "kl": kl,
        "elbo": recon - kl,
        "z_mean": z_mean if z_mean is not None else z_sum / num_samples,
    }


def active_units(z_mean: torch.Tensor, threshold: float = 0.01) -> int:
    """Number of latent units u with ``Cov_x(E_q[z_u | x]) > threshold`` (Burda et al. 2016, sec. 5.2).

    Args:
        z_mean: ``[N, latent]`` posterior means over a dataset.
    """
    if z_mean.shape[0] < 2:
        return 0
    return int((z_mean.double().var(dim=0) > threshold).sum())


def average_repeats(per_point: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """With ``iw_ll_repeats`` (``[N, R]``, from ``eval.repeats``): each point's ``iw_ll`` becomes the
    mean of its R estimates and ``iw_ll_mc_var`` that mean's Monte Carlo variance (divided by R);
    without, ``per_point`` as it is."""
    if "iw_ll_repeats" not in per_point:
        return per_point
    repeats = per_point["iw_ll_repeats"].double()
    out = {**per_point, "iw_ll": repeats.mean(dim=1)}
    if "iw_ll_mc_var" in per_point:
        out["iw_ll_mc_var"] = per_point["iw_ll_mc_var"] / repeats.shape[1]
    return out


def summarize(per_point: dict[str, torch.Tensor], prefix: str = "test") -> dict[str, float]:
    """Dataset-level metrics from per-datapoint tensors (each ``[N]``; ``z_mean`` ``[N, latent]``).

    Means of each quantity, the standard error of the mean of ``iw_ll`` and ``elbo`` over
    datapoints (``std / sqrt(N)``: the uncertainty a comparison between runs must allow for), and
    the number of active units; with ``iw_ll_mc_var``, ``iw_ll_mc_stderr``: the Monte Carlo standard
    error of the mean IW estimate (what re-running the estimator on the same points would change),
    not to be confused with the standard error over datapoints. With ``iw_ll_repeats`` (``[N, R]``, from ``eval.repeats``): each
    point's ``iw_ll`` is the mean of its R estimates, ``iw_ll_repeats`` lists the R dataset means and
    ``iw_ll_repeat_sd`` is their sample standard deviation (pythae reports IS-200 this way, R = 5).
    """
    per_point = average_repeats(per_point)
    n = per_point["iw_ll"].shape[0]
    out: dict[str, float] = {}
    if "iw_ll_repeats" in per_point:  # [N, R]: R estimates with fresh samples; the point's estimate is their mean
        means = per_point["iw_ll_repeats"].double().mean(dim=0)  # the dataset-level estimate of each repeat, [R]
        out[f"{prefix}/iw_ll_repeats"] = [float(m) for m in means]
        out[f"{prefix}/iw_ll_repeat_sd"] = float(means.std()) if len(means) > 1 else 0.0
    for key in ("elbo", "iw_ll", "kl", "recon", "exact_ll", "elbo_inner"):
        if key in per_point:
            values = per_point[key].double()
            out[f"{prefix}/{key}"] = float(values.mean())
            if key in ("elbo", "iw_ll") and n > 1:
                out[f"{prefix}/{key}_stderr"] = float(values.std() / n**0.5)
    if "iw_ll_mc_var" in per_point:  # independent across points: Var[mean] = sum_i Var_i / N^2
        out[f"{prefix}/iw_ll_mc_stderr"] = float(per_point["iw_ll_mc_var"].double().sum().sqrt() / n)
    for key, name in (("heldout_steps", "heldout_fit_steps"), ("heldout_converged", "heldout_converged")):  # local fits: mean steps, fraction converged
        if key in per_point:
            out[f"{prefix}/{name}"] = float(per_point[key].double().mean())
    if "z_mean" in per_point:
        out[f"{prefix}/active_units"] = active_units(per_point["z_mean"])
    out[f"{prefix}/n"] = n
    return out
