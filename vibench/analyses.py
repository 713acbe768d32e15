"""End-of-run analyses of a trained model: the gap decomposition, AIS, gradient variances, images.

Functions of a trained module, the test points and typed settings (the dataclasses below), run by
the callbacks of :mod:`vibench.callbacks`; none reads the run's config.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, field
from pathlib import Path

import torch

from vibench.allowed import integer, number, one_of, unit
from vibench.errors import ConfigError

# below this fraction of converged per-point fits (gap q*, SVI held-out q_i), the run warns
CONVERGED_ENOUGH = 0.95


@dataclass(frozen=True)
class GapSettings:
    """``gap.*`` (conf/config.yaml): the decomposition's points and the q* fits. Each field says
    what it allows (:mod:`vibench.allowed`); the config's values are checked against it before anything runs."""

    enabled: bool = False
    checkpoint: str | None = None
    n_points: int = field(default=100, metadata={"allowed": integer(1)})
    init: str = field(default="encoder", metadata={"allowed": one_of("prior", "encoder")})
    iw_samples: int = field(default=5000, metadata={"allowed": integer(1)})
    lr: float = field(default=1e-3, metadata={"allowed": number(0, strict=True)})
    samples: int = field(default=50, metadata={"allowed": integer(1)})
    window: int = field(default=100, metadata={"allowed": integer(1)})
    patience: int = field(default=10, metadata={"allowed": integer(0)})
    max_steps: int = field(default=20000, metadata={"allowed": integer(1)})


@dataclass(frozen=True)
class AISSettings:
    """``ais.*`` (conf/config.yaml): annealed importance sampling and the BDMC sandwich."""

    enabled: bool = False
    n_points: int = field(default=100, metadata={"allowed": integer(1)})
    chains: int = field(default=16, metadata={"allowed": integer(1)})
    steps: int = field(default=500, metadata={"allowed": integer(1)})
    leapfrog: int = field(default=5, metadata={"allowed": integer(1)})
    step_size: float = field(default=0.05, metadata={"allowed": number(0, strict=True)})
    target_accept: float = field(default=0.65, metadata={"allowed": unit()})
    start: str = field(default="encoder", metadata={"allowed": one_of("encoder", "prior")})
    iw_samples: int = field(default=5000, metadata={"allowed": integer(1)})
    batch_points: int = field(default=50, metadata={"allowed": integer(1)})
    bdmc_points: int = field(default=0, metadata={"allowed": integer(0)})


def gap_checkpoint(enabled: bool, checkpoint: str | None) -> Path | None:
    """The checkpoint a gap analysis is to analyse instead of training (``gap.checkpoint``), checked to exist."""
    if not enabled or checkpoint is None:
        return None
    path = Path(checkpoint).expanduser()
    if not path.is_file():
        raise ConfigError(f"gap.checkpoint={checkpoint} does not exist. Point it at a trained run's checkpoints/last.ckpt (in its output folder).")
    return path
def load_checkpoint(path: Path) -> dict:
    import torch

    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:
        raise ConfigError(f"gap.checkpoint={path} could not be read ({type(e).__name__}: {e}).") from None
def decompose_gaps(module, test: torch.Tensor, g: GapSettings, ais: AISSettings | None, seed: int, batch_size: int, chunk_mib: float) -> dict[str, float]:
    """The gap decomposition on ``g.n_points`` random test points, in evaluation batches of
    ``batch_size``, with progress; with ``ais``, log p(x) = max(AIS, IW) per point."""
    import functools


    from vibench.data.datamodule import random_subset
    from vibench.evaluation import samples_per_chunk_for
    from vibench.gap import gap_decomposition, summarize_gaps

    idx = random_subset(torch.arange(len(test)), g.n_points, seed + 17).to(test.device)
    optimizer = functools.partial(torch.optim.Adam, lr=g.lr)
    parts = []
    module.eval()
    batches = idx.split(batch_size)
    with fit_progress("gap: fitting q*", len(batches), g.max_steps) as on_window:
        for batch in batches:
            chunk = samples_per_chunk_for(module.model, len(batch), chunk_mib)
            ais_log_px = (lambda x, q: ais_estimates(module, x, q if ais.start == "encoder" else module.model.prior().expand([len(x)]), ais).log_px) if ais is not None else None
            parts.append(gap_decomposition(module.model, module.encoder, test[batch], batch, g.iw_samples, chunk, optimizer, g.samples, g.max_steps, g.window, g.patience, g.init, on_window=on_window, ais_log_px=ais_log_px))
    return summarize_gaps(parts)


@contextlib.contextmanager
def fit_progress(what: str, n_batches: int, max_steps: int):
    """A rich progress bar for per-point fits: steps of the current batch (the ETA is an upper
    bound, for a fit that runs to max_steps) and how many points have stopped. Yields the fit's
    ``on_window(step, stopped, n)`` callback."""
    import time

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("steps · {task.fields[stopped]} pts done"), TimeElapsedColumn(), TextColumn("≤"), TimeRemainingColumn())
    with Progress(*columns, transient=True) as progress:
        task = progress.add_task(what, total=n_batches * max_steps, stopped="0/?")
        state = {"batch_start": 0, "last": 0, "start": time.perf_counter(), "printed": time.perf_counter()}
        plain = not progress.console.is_terminal  # a log file: a plain line every 30 s instead of a live bar

        def on_window(step: int, stopped: int, n: int) -> None:
            if step < state["last"]:  # a new batch began
                state["batch_start"] += max_steps
            state["last"] = step
            progress.update(task, completed=state["batch_start"] + step, stopped=f"{stopped}/{n}")
            now = time.perf_counter()
            if plain and now - state["printed"] >= 30:
                state["printed"] = now
                print(f"{what}: step {step} of at most {max_steps}, {stopped}/{n} points stopped, {now - state['start']:.0f} s", flush=True)

        yield on_window
def gap_warning(gaps: dict[str, float], max_steps: int, init: str) -> str | None:
    """A warning when q*'s fits did not converge: ELBO[q*] is then underestimated, the amortization gap too."""
    if gaps["gap/converged"] >= CONVERGED_ENOUGH:
        return None
    return (f"the q* fits of {1 - gaps['gap/converged']:.0%} of the gap points stopped at gap.max_steps={max_steps} before converging: "
            f"ELBO[q*] and the amortization gap ({gaps['gap/amortization']:.2f} nats) are underestimated. "
            + ("Raise gap.max_steps, or start q* at the encoder with gap.init=encoder." if init == "prior" else "Raise gap.max_steps."))
def heldout_warning(metrics: dict[str, float], max_steps: int | None) -> str | None:
    """SVI: a warning when fewer than 95% of the test points' q_i fits converged: the test ELBO and
    IW bound then understate what the fitted q_i would reach (every comparison with SVI inherits it)."""
    converged = metrics.get("test/heldout_converged")
    if converged is None or converged >= CONVERGED_ENOUGH:
        return None
    return (f"the held-out q_i fits of {1 - converged:.0%} of the test points stopped at inference.strategy.heldout.max_steps={max_steps} "
            f"before their stopping rule fired: test/elbo and test/iw_ll are underestimated. Raise inference.strategy.heldout.max_steps.")


def gradient_variances(module, test: torch.Tensor, samples: list[int], repeats: int, n_points: int, seed: int, analytic_kl: bool = True) -> dict[str, float]:
    """``gradvar/<estimator>_L<L>``: total variance of the encoder-gradient estimate on random test points."""
    import torch

    from vibench.data.datamodule import random_subset
    from vibench.diagnostics import encoder_gradient_variance

    idx = random_subset(torch.arange(len(test)), n_points, seed + 23).to(test.device)
    out = {}
    for estimator in ("reparam", "score"):
        for n in samples:
            v = encoder_gradient_variance(module.model, module.encoder, test[idx], idx, estimator, n, repeats, analytic_kl)
            out[f"gradvar/{estimator}_L{n}"] = v["variance"]
    return out
def make_images(module, test: torch.Tensor, image_shape: tuple[int, int], seed: int) -> dict:
    """Reconstructions of 32 random test images, 64 prior samples, and the manifold when latent = 2."""
    import torch

    from vibench import figures

    model = module.model.eval()
    idx = torch.randperm(len(test), generator=torch.Generator().manual_seed(seed))[:32].to(test.device)
    posterior = lambda x, i: module.strategy.val_q(model, x, i)  # noqa: E731  (SVI refines q_i for these points)
    images = {
        "test/reconstructions": figures.reconstructions(model, posterior, test[idx], idx, image_shape),
        "test/samples": figures.samples(model, 64, image_shape),
    }
    if model.latent == 2:
        images["test/manifold"] = figures.manifold(model, image_shape)
    return images


def ais_estimates(module, x: torch.Tensor, start, a: AISSettings, progress=None):
    """Forward AIS (:class:`vibench.ais.AISResult`) for a batch of points, from ``start`` (a distribution, batch ``[B]``)."""
    from vibench.ais import ais

    return ais(module.model, x, start, chains=a.chains, steps=a.steps, leapfrog=a.leapfrog, step_size=a.step_size, target_accept=a.target_accept, on_level=progress)


def ais_start(module, x: torch.Tensor, idx, start: str):
    """Where AIS chains start: the encoder's q(z|x) (``ais.start=encoder``, needs an encoder) or the prior."""
    if start == "encoder" and module.encoder is not None:
        with torch.no_grad():
            return module.encoder(x, idx)
    return module.model.prior().expand([len(x)])


def ais_evaluation(module, test: torch.Tensor, a: AISSettings, seed: int, chunk_mib: float) -> dict[str, float]:
    """AIS log p(x) on ``ais.n_points`` random test points beside the IW bound with ``ais.iw_samples``
    on the same points; with ``ais.bdmc_points``, the BDMC sandwich on points simulated from the model.
    Points go in batches of ``ais.batch_points`` (memory: chains x batch x the decoder's width)."""
    import time

    from rich.progress import Progress

    from vibench.ais import reverse_ais
    from vibench.data.datamodule import random_subset
    from vibench.evaluation import evaluate_batch, samples_per_chunk_for

    module.eval()
    started = time.perf_counter()
    idx = random_subset(torch.arange(len(test)), a.n_points, seed + 29).to(test.device)
    batches = idx.split(a.batch_points)
    n_sim = a.bdmc_points
    log_px, se2, iw, rates = [], [], [], []
    with Progress(transient=True) as progress:
        task = progress.add_task("AIS", total=(len(batches) + 2 * math.ceil(n_sim / a.batch_points)) * a.steps)
        advance = lambda: progress.advance(task)  # noqa: E731  (one intermediate distribution done)
        for batch in batches:
            x = test[batch]
            res = ais_estimates(module, x, ais_start(module, x, batch, a.start), a, advance)
            log_px.append(res.log_px), se2.append(res.stderr**2), rates.append(res.accept_rate)
            q = module.encoder if module.encoder is not None else (lambda x_, i_: module.strategy.test_q(module.model, x_, i_)[0])
            chunk = samples_per_chunk_for(module.model, len(x), chunk_mib)
            iw.append(evaluate_batch(module.model, q, x, batch, a.iw_samples, chunk)["iw_ll"])
        out = summarize_ais(torch.cat(log_px), torch.cat(se2), torch.cat(iw), sum(rates) / len(rates))
        if n_sim:
            lower, upper = [], []
            with torch.no_grad():
                z = module.model.prior().sample((n_sim,)).to(test.device)
                x_sim = module.model.likelihood(z).sample()
            for zb, xb in zip(z.split(a.batch_points), x_sim.split(a.batch_points)):
                prior = module.model.prior().expand([len(xb)])
                lower.append(ais_estimates(module, xb, prior, a, advance).log_px)
                upper.append(reverse_ais(module.model, xb, prior, zb, chains=a.chains, steps=a.steps, leapfrog=a.leapfrog, step_size=a.step_size, target_accept=a.target_accept, on_level=advance).log_px)
            lo, up = torch.cat(lower).double(), torch.cat(upper).double()
            out.update({"bdmc/lower": float(lo.mean()), "bdmc/upper": float(up.mean()), "bdmc/width": float((up - lo).mean()), "bdmc/n": n_sim})
    out["ais/seconds"] = time.perf_counter() - started
    return out


def summarize_ais(log_px: torch.Tensor, se2: torch.Tensor, iw: torch.Tensor, accept_rate: float) -> dict[str, float]:
    """``ais/log_px`` (mean over points) with its Monte Carlo error over chains (``ais/mc_stderr``:
    ``sqrt(sum_i se_i^2) / n``), the IW bound on the same points, their difference, and ``ais/accept_rate``."""
    n = len(log_px)
    log_px, iw = log_px.double().cpu(), iw.double().cpu()
    return {
        "ais/log_px": float(log_px.mean()), "ais/mc_stderr": float(se2.double().sum().sqrt() / n), "ais/iw_ll": float(iw.mean()),
        "ais/minus_iw": float((log_px - iw).mean()), "ais/minus_iw_stderr": float((log_px - iw).std() / n**0.5) if n > 1 else 0.0,
        "ais/accept_rate": accept_rate, "ais/n": n,
    }
