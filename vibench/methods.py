"""LightningModules for the inference methods.

Both methods train the same :class:`~vibench.model.GenerativeModel` on the same ELBO and are
evaluated by the same K-sample evaluator; they differ only in where q comes from:

- :class:`AmortizedVI` (AEVB, Kingma & Welling 2014): q(z | x) from an encoder trained jointly.
- :class:`~vibench.svi.LocalVI` (SVI, Hoffman et al. 2013): a free Gaussian q_i per datapoint, fitted by
  gradient steps.
Training metrics are logged by :class:`~vibench.train_metrics.TrainingMetrics`.
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Callable

import torch
from torch import nn
from torch.distributions import Distribution

from vibench.compiling import CompiledOrEager
from vibench.data.datamodule import as_minibatches
from vibench.evaluation import CompiledChunk, evaluate_batch, samples_per_chunk_for, summarize
from vibench.model import GenerativeModel
from vibench.objectives import iw_bound, kl_estimate, log_weights
from vibench.schedules import KLSchedule, constant, plain_partial
from vibench.train_metrics import TRAIN_KEYS, TrainingMetrics, step_stats

OBJECTIVES = ("elbo", "iwae")
ESTIMATORS = ("reparam", "score")


class AmortizedVI(TrainingMetrics):
    """Amortized variational inference: q(z | x) from an encoder shared by all datapoints.

    Args:
        model: the generative model p(z) p(x | z).
        guide: the encoder, called as ``guide(x, idx)``, returning q(z | x).
        optimizer: a factory ``params -> torch.optim.Optimizer`` (a Hydra ``_partial_``).
        objective: ``{"name": "elbo" | "iwae", "samples": L or k, "estimator": "reparam" | "score"}``.
        annealing: the KL weight beta as a function of the step (:class:`~vibench.schedules.KLSchedule`).
        mc_samples: L, reparameterized samples per datapoint for validation and SVI's inner steps.
        analytic_kl: closed-form KL(q || p) when available; else Monte Carlo over the L samples.
        iw_samples: K, importance samples per test datapoint for the IW log-likelihood.
        eval_chunk_mib: memory budget of one chunk of the K-sample evaluation, in MiB.
        eval_compile, train_compile: ``torch.compile`` the evaluation's likelihood / the training
            loss: ``"auto"``, ``True`` or ``False`` (see conf/config.yaml).
        scheduler: a factory ``optimizer -> torch.optim.lr_scheduler.LRScheduler`` stepped once per
            epoch (``scheduler=``), or ``None`` for a constant learning rate.
        eval_repeats: R, how many times the K-sample estimate is repeated with fresh samples.
    """

    method = "aevb"
    compiles_training_loss = True  # train.compile applies: the loss is a pure function of the batch (SVI's refines q_i first)

    def __init__(self, model: GenerativeModel, guide: nn.Module | None, optimizer: Callable, objective: dict | None = None, annealing: KLSchedule | None = None, mc_samples: int = 1, analytic_kl: bool = True, iw_samples: int = 1000, eval_chunk_mib: float = 16.0, eval_compile: str | bool = "auto", train_compile: str | bool = "auto", scheduler: Callable | None = None, eval_repeats: int = 1):
        super().__init__()
        self.scheduler_factory, self.eval_repeats = (plain_partial(scheduler) if scheduler is not None else None), eval_repeats
        self.model, self.guide, self.optimizer_factory = model, guide, optimizer
        self.objective = dict(objective or {"name": "elbo", "samples": mc_samples, "estimator": "reparam"})
        if self.objective["name"] not in OBJECTIVES or self.objective["estimator"] not in ESTIMATORS:
            raise ValueError(f"objective {self.objective} is not supported: name in {OBJECTIVES}, estimator in {ESTIMATORS}")
        if self.objective["name"] == "iwae" and self.objective["estimator"] != "reparam":
            raise ValueError("objective.name=iwae trains with reparameterized gradients only: use objective.estimator=reparam")
        self.annealing = annealing or KLSchedule(functools.partial(constant, beta=1.0))
        if self.objective["name"] == "iwae" and not self.annealing.is_unit:
            raise ValueError("objective=iwae trains on the importance-weighted bound, to which KL annealing does not apply: use annealing=none")
        self.mc_samples, self.analytic_kl = mc_samples, analytic_kl
        self.iw_samples, self.eval_chunk_mib, self.eval_compile, self.train_compile = iw_samples, eval_chunk_mib, eval_compile, train_compile
        self._reparam_loss = self.reparam_elbo_loss
        self._compiled_chunk: CompiledChunk | None = None
        self.register_buffer("score_baseline", torch.zeros(()))  # running mean for the score-function estimator at L = 1
        self.test_summary: dict[str, float] = {}
        self.test_points: dict[str, torch.Tensor] = {}
        self.timing: dict[str, float] = {}
        self._test_parts: list[dict[str, torch.Tensor]] = []
        self._steps_per_epoch = 1
        self.automatic_optimization = False

    def describe(self) -> dict:
        """What ran, for the run record."""
        return {"method": self.method, "objective": self.objective, "annealing": self.annealing.describe(), "mc_samples": self.mc_samples, "analytic_kl": self.analytic_kl, "eval_compile": self.eval_compile, "train_compile": self.train_compile}

    # --- where q comes from: the only thing the methods disagree on -------------------------
    def train_posterior(self, x: torch.Tensor, idx: torch.Tensor) -> Distribution:
        return self.guide(x, idx)

    def eval_posterior(self, x: torch.Tensor, idx: torch.Tensor, stage: str) -> Distribution:
        return self.guide(x, idx)

    # --- shared ---------------------------------------------------------------------------
    def elbo_terms(self, x: torch.Tensor, q: Distribution, samples: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``(recon, kl)``, each ``[B]``: :meth:`GenerativeModel.elbo_terms` with this run's KL setting."""
        return self.model.elbo_terms(x, q, samples, self.analytic_kl)

    def beta(self) -> float:
        return self.annealing(self.global_step, self._steps_per_epoch)

    def on_train_start(self) -> None:
        # optimizer steps per epoch (a Lightning step may hold several: train.steps_per_call)
        dm = self.trainer.datamodule
        self._steps_per_epoch = dm.steps_per_epoch() if dm is not None and hasattr(dm, "steps_per_epoch") else max(1, int(self.trainer.num_training_batches))

    def training_loss(self, x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        """The training objective for a batch; logs ``train/loss`` (what is minimized), ``train/elbo``
        (beta = 1), ``train/kl``, ``train/recon``, ``train/beta`` and, for IWAE, ``train/iw_bound``."""
        name, samples, estimator = self.objective["name"], self.objective["samples"], self.objective["estimator"]
        beta = self.beta()
        if estimator == "reparam" and name == "elbo":  # the hot path (compiled for long VAE runs)
            loss, stats = self._reparam_loss(x, idx, torch.tensor(beta, device=x.device, dtype=x.dtype))
            self.track_training(TRAIN_KEYS, stats, beta)
            return loss
        q = self.train_posterior(x, idx)
        if name == "iwae":
            z = q.rsample((samples,))
            log_px_z, log_pz = self.model.log_joint_terms(x, z)
            bound = iw_bound(log_weights(log_px_z, log_pz, q.log_prob(z)))
            loss = -bound.mean()
            recon, kl = log_px_z.mean(0), kl_estimate(q, self.model.prior(), z, analytic=self.analytic_kl)
            self.track_training((*TRAIN_KEYS, "train/iw_bound"), torch.cat([step_stats(loss, recon, kl), bound.mean().detach()[None]]), beta)
            return loss
        recon, kl, surrogate = self.score_function_terms(x, q, samples, beta)
        loss = -(recon - beta * kl + surrogate).mean()
        self.track_training(TRAIN_KEYS, step_stats(loss, recon, kl), beta)
        return loss

    def on_train_epoch_end(self) -> None:
        self.log_epoch_means()
        # Manual optimization: Lightning leaves the stepping of the configured scheduler to the module.
        if self.scheduler_factory is not None and (scheduler := self.lr_schedulers()) is not None:
            scheduler.step()

    def reparam_elbo_loss(self, x: torch.Tensor, idx: torch.Tensor, beta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(loss, stats)`` of the reparameterized ELBO with L = ``objective.samples``, ``stats`` as
        :func:`step_stats` (inside the compiled graph when compiled, where its reductions are free);
        q from :meth:`train_posterior` (SVI's refinement is not compiled: only the amortized VAE's loss is)."""
        recon, kl = self.elbo_terms(x, self.train_posterior(x, idx), self.objective["samples"])
        loss = -(recon - beta * kl).mean()
        return loss, step_stats(loss, recon, kl)

    def on_fit_start(self) -> None:
        # auto: compile the loss for runs of >= 50,000 steps (compiling takes ~12 s).
        # Not trainer.estimated_stepping_batches: it sets the training data up before a checkpoint's
        # loader state is restored, and a resumed run would replay its epoch from the start.
        dm, t = self.trainer.datamodule, self.trainer
        per_epoch = math.ceil(dm.sizes()["n_train"] / dm.batch_size) if dm is not None else 0
        steps = t.max_steps if t.max_steps and t.max_steps > 0 else (t.max_epochs or 0) * per_epoch
        # Compiled, the VAE's step measured 10-15% faster on 2 CPU threads (python -m vibench.bench); compiling takes 3-15 s.
        auto = self.train_compile == "auto" and steps >= 50_000
        if self.compiles_training_loss and (self.train_compile is True or auto):
            # torch.distributions resolves a KL pair on first use and memoizes it; resolved inside
            # the compiled loss, that lookup would split it into two graphs (a per-step cost).
            kl_estimate(self.model.prior(), self.model.prior())
            self._reparam_loss = CompiledOrEager(self.reparam_elbo_loss, "the training loss")

    def score_function_terms(self, x: torch.Tensor, q: Distribution, samples: int, beta: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """REINFORCE: ``(recon, kl, surrogate)`` with ``grad surrogate = E_q[(f(z) - b) grad log q(z)]``.

        z is sampled without reparameterization, so the encoder learns only through the surrogate
        (and the analytic KL). ``f = log p(x|z)`` with analytic KL, else ``log p(x|z) - beta (log q - log p)``.
        The baseline b is the mean of the other samples' f (leave-one-out) when L > 1, else a running
        mean of f over batches (Williams 1992; Mnih & Gregor 2014). The surrogate's value is 0 in expectation.
        """
        z = q.sample((samples,))
        log_px_z, log_pz = self.model.log_joint_terms(x, z)
        log_qz = q.log_prob(z)
        kl = kl_estimate(q, self.model.prior(), z, analytic=self.analytic_kl)
        f = (log_px_z if self.analytic_kl else log_px_z - beta * (log_qz - log_pz)).detach()
        if samples > 1:
            baseline = (f.sum(0, keepdim=True) - f) / (samples - 1)
        else:  # the baseline must not depend on this batch's samples: copy it before the update
            baseline = self.score_baseline.clone()
            self.score_baseline.mul_(0.9).add_(0.1 * f.mean())
        surrogate = ((f - baseline) * log_qz).mean(0)
        return log_px_z.mean(0), kl, surrogate

    def training_step(self, batch, batch_idx):
        """One optimizer step per minibatch of ``batch``, a list of ``(x, idx)`` minibatches
        (``train.steps_per_call`` of them; a lone ``(x, idx)`` is one). Returns the ``[steps]`` losses.

        Several steps per Lightning step spread Lightning's fixed per-step cost (hook dispatch over
        the callbacks, batch transfer, loop bookkeeping: ~0.8 ms on a CPU, 15% of a small VAE's
        step) over them; each minibatch still gets its own optimizer step, KL weight and noise, in
        the same order as with one per call. Optimized by hand: Lightning's automatic-optimization
        closure costs more than it gives a single-optimizer model (and SVI needs manual steps anyway).
        """
        minibatches = as_minibatches(batch)
        opt, max_steps = self.optimizers(), self.trainer.max_steps if self._trainer is not None else -1
        losses = []
        for x, idx in minibatches:
            if 0 <= max_steps <= self.global_step:  # the last call of a run may stop mid-list
                break
            loss = self.training_loss(x, idx)
            opt.zero_grad(set_to_none=True)
            self.manual_backward(loss)
            self.after_backward(x, idx)
            opt.step()
            losses.append(loss.detach())
        return torch.stack(losses)

    def after_backward(self, x: torch.Tensor, idx: torch.Tensor) -> None:
        """Gradients beyond the loss's own, before the optimizer step (none for the amortized VAE)."""

    def validation_step(self, batch, batch_idx):
        x, idx = batch
        recon, kl = self.elbo_terms(x, self.eval_posterior(x, idx, "val"), self.mc_samples)
        elbo = recon - kl
        # for the progress bar, checkpoint selection and early stopping; the loggers get the epoch mean below
        self.log("val/elbo", elbo.mean(), on_epoch=True, prog_bar=True, batch_size=len(x), sync_dist=True, logger=False)
        self._val_sum = self._val_sum + torch.stack([elbo.detach().sum(), torch.tensor(float(len(x)), device=elbo.device)])

    def on_validation_epoch_start(self) -> None:
        self._val_sum = torch.zeros(2, device=self.device)

    def on_validation_epoch_end(self) -> None:
        total = self.trainer.strategy.reduce(self._val_sum, reduce_op="sum") if self.trainer.world_size > 1 else self._val_sum
        if float(total[1]) > 0:
            self.log_to_loggers({"val/elbo": float(total[0] / total[1])})

    def on_test_epoch_start(self) -> None:
        self._test_parts = []
        n_test = self.trainer.datamodule.sizes()["n_test"] if self.trainer.datamodule is not None else 0
        # auto: compile when the evaluation is long enough (>= 1e7 sample-points, a minute or more on a CPU) to repay ~8 s of compiling
        if self.eval_compile is True or (self.eval_compile == "auto" and self.iw_samples * n_test >= 10_000_000):
            self._compiled_chunk = self._compiled_chunk or CompiledChunk(self.model)

    def test_step(self, batch, batch_idx):
        x, idx = batch
        q = self.eval_posterior(x, idx, "test")
        chunk = samples_per_chunk_for(self.model, len(x), self.eval_chunk_mib, x.element_size())
        parts = evaluate_batch(self.model, lambda *_: q, x, idx, self.iw_samples, chunk, self.analytic_kl, self._compiled_chunk)
        if self.eval_repeats > 1:  # R independent K-sample estimates of the same points with the same q
            again = [evaluate_batch(self.model, lambda *_: q, x, idx, self.iw_samples, chunk, self.analytic_kl, self._compiled_chunk)["iw_ll"] for _ in range(self.eval_repeats - 1)]
            parts["iw_ll_repeats"] = torch.stack([parts["iw_ll"], *again], dim=1)  # [B, R]
        marginal = self.model.exact_marginal()
        if marginal is not None:
            parts["exact_ll"] = marginal.log_prob(x)
        parts["idx"] = idx
        self._test_parts.append(parts)

    def on_test_epoch_end(self) -> None:
        per_point = {k: torch.cat([p[k] for p in self._test_parts]) for k in self._test_parts[0]}
        self._test_parts = []
        if self.trainer.world_size > 1:  # every rank evaluated a share (padded): gather, drop duplicates
            per_point = {k: self.all_gather(v).flatten(0, 1) for k, v in per_point.items()}
            order = torch.argsort(per_point["idx"], stable=True)
            ids = per_point["idx"][order]
            first = torch.cat([torch.ones(1, dtype=torch.bool, device=ids.device), ids[1:] != ids[:-1]])
            per_point = {k: v[order[first]] for k, v in per_point.items()}
        per_point = {k: v.cpu() for k, v in per_point.items()}
        self.test_points = {k: v for k, v in per_point.items() if k != "z_mean"}  # for the per-point sidecar
        self.test_summary = summarize({k: v for k, v in per_point.items() if k != "idx"}, "test")
        self.log_to_loggers({k: float(v) for k, v in self.test_summary.items() if not isinstance(v, list)})

    def configure_optimizers(self):
        optimizer = self.optimizer_factory(self.parameters())
        if self.scheduler_factory is None:
            return optimizer
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": self.scheduler_factory(optimizer), "interval": "epoch"}}

    def _clock(self, key: str, since: float) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        self.timing[key] = self.timing.get(key, 0.0) + time.perf_counter() - since
