"""The LightningModule of vibench: one module for every inference method.

:class:`VariationalInference` trains a :class:`~vibench.model.GenerativeModel` with an objective
(:mod:`vibench.losses`: ELBO, IWAE, score-function ELBO) under a posterior served by an inference
strategy (:mod:`vibench.strategies`: an amortized encoder, a local table of per-datapoint fits, or
semi-amortized), of any family (:mod:`vibench.families`, :mod:`vibench.flows`), and evaluates it
with the same K-sample evaluator. It never asks which strategy, family or objective it has:
a new one is a class and a config. Training metrics are logged by
:class:`~vibench.train_metrics.TrainingMetrics`.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import torch
from torch import nn

from vibench.compiling import CompiledOrEager
from vibench.data.datamodule import as_minibatches
from vibench.evaluation import CompiledChunk, evaluate_batch, samples_per_chunk_for, summarize
from vibench.losses import ELBO
from vibench.model import GenerativeModel
from vibench.objectives import kl_estimate
from vibench.schedules import KLSchedule, constant, plain_partial
from vibench.train_metrics import TrainingMetrics


class VariationalInference(TrainingMetrics):
    """Variational inference of a generative model: the model, a strategy serving q, an objective.

    Args:
        model: the generative model p(z) p(x | z).
        strategy: where q comes from (:mod:`vibench.strategies`), asked as
            ``strategy.train_q / val_q / test_q(model, x, idx)``.
        optimizer: a factory ``params -> torch.optim.Optimizer`` (a Hydra ``_partial_``).
        objective: the training objective (:mod:`vibench.losses`), ``objective(model, q, x, beta)``.
        annealing: the KL weight beta as a function of the step (:class:`~vibench.schedules.KLSchedule`).
        mc_samples: L, reparameterized samples per datapoint for validation.
        analytic_kl: closed-form KL(q || p) when available; else Monte Carlo over the L samples.
        iw_samples: K, importance samples per test datapoint for the IW log-likelihood.
        eval_chunk_mib: memory budget of one chunk of the K-sample evaluation, in MiB.
        eval_compile, train_compile: ``torch.compile`` the evaluation's likelihood / the training
            loss: ``"auto"``, ``True`` or ``False`` (see conf/config.yaml).
        scheduler: a factory ``optimizer -> torch.optim.lr_scheduler.LRScheduler`` stepped once per
            epoch (``scheduler=``), or ``None`` for a constant learning rate.
        eval_repeats: R, how many times the K-sample estimate is repeated with fresh samples.
    """

    def __init__(self, model: GenerativeModel, strategy: nn.Module, optimizer: Callable, objective: nn.Module | None = None, annealing: KLSchedule | None = None, mc_samples: int = 1, analytic_kl: bool = True, iw_samples: int = 1000, eval_chunk_mib: float = 16.0, eval_compile: str | bool = "auto", train_compile: str | bool = "auto", scheduler: Callable | None = None, eval_repeats: int = 1):
        super().__init__()
        self.scheduler_factory, self.eval_repeats = (plain_partial(scheduler) if scheduler is not None else None), eval_repeats
        self.model, self.strategy, self.optimizer_factory = model, strategy, optimizer
        self.objective = objective if objective is not None else ELBO(mc_samples, analytic_kl)
        self.annealing = annealing or KLSchedule(functools.partial(constant, beta=1.0))
        if not self.objective.supports_annealing and not self.annealing.is_unit:
            raise ValueError(f"objective={self.objective.name} trains on the importance-weighted bound, to which KL annealing does not apply: use annealing=none")
        model.attach(strategy)  # a prior made of the posterior (VampPrior) takes its encoder
        self.mc_samples, self.analytic_kl = mc_samples, analytic_kl
        self.iw_samples, self.eval_chunk_mib, self.eval_compile, self.train_compile = iw_samples, eval_chunk_mib, eval_compile, train_compile
        self._loss = self.eager_loss
        self._compiled_chunk: CompiledChunk | None = None
        self.test_summary: dict[str, float] = {}
        self.test_points: dict[str, torch.Tensor] = {}
        self._test_parts: list[dict[str, torch.Tensor]] = []
        self._steps_per_epoch = 1
        self.automatic_optimization = False

    @property
    def method(self) -> str:
        """``aevb`` or ``svi``, for the record: the strategy's name for itself."""
        return self.strategy.method

    @property
    def encoder(self) -> nn.Module | None:
        """The strategy's encoder, if it has one (the gap decomposition and gradient diagnostics need it)."""
        return self.strategy.encoder

    @property
    def timing(self) -> dict[str, float]:
        return dict(self.strategy.timing)

    def describe(self) -> dict:
        """What ran, for the run record."""
        return {**self.strategy.describe(), "prior": self.model.prior_module.name, "objective": self.objective.describe(), "annealing": self.annealing.describe(),
                "mc_samples": self.mc_samples, "analytic_kl": self.analytic_kl, "eval_compile": self.eval_compile, "train_compile": self.train_compile}

    def beta(self) -> float:
        return self.annealing(self.global_step, self._steps_per_epoch)

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        """A checkpoint from before issue 13's restructuring loads: its keys renamed (:mod:`vibench.legacy_keys`)."""
        from vibench.legacy_keys import renamed

        super().on_load_checkpoint(checkpoint)  # the training metrics' running sums
        checkpoint["state_dict"] = renamed(checkpoint["state_dict"], self.state_dict().keys())

    def setup(self, stage: str) -> None:
        dm = self.trainer.datamodule
        if stage == "fit" and dm is not None:
            self.strategy.setup(dm.sizes()["n_train"], self.device)

    def on_train_start(self) -> None:
        super().on_train_start()  # a mid-epoch checkpoint's training-metric sums
        # optimizer steps per epoch (a Lightning step may hold several: train.steps_per_call)
        dm = self.trainer.datamodule
        self._steps_per_epoch = dm.steps_per_epoch() if dm is not None and hasattr(dm, "steps_per_epoch") else max(1, int(self.trainer.num_training_batches))

    def training_loss(self, x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        """The training objective for a batch; logs the objective's keys: ``train/loss`` (what is
        minimized), ``train/elbo`` (beta = 1), ``train/kl``, ``train/recon`` (and e.g. ``train/iw_bound``), and ``train/beta``."""
        beta = self.beta()
        # beta as a tensor: a compiled loss would recompile for every new Python float
        loss, stats = self._loss(x, idx, torch.tensor(beta, device=x.device, dtype=x.dtype))
        self.track_training(self.objective.keys, stats, beta)
        return loss

    def eager_loss(self, x: torch.Tensor, idx: torch.Tensor, beta) -> tuple[torch.Tensor, torch.Tensor]:
        """``(loss, stats)`` of the objective on q from the strategy (compiled for long runs of an
        amortized VAE, where it is a pure function of the batch: :meth:`on_fit_start`)."""
        return self.objective(self.model, self.strategy.train_q(self.model, x, idx), x, beta)

    def on_train_epoch_end(self) -> None:
        self.log_epoch_means()
        # Manual optimization: Lightning leaves the stepping of the configured scheduler to the module.
        if self.scheduler_factory is not None and (scheduler := self.lr_schedulers()) is not None:
            scheduler.step()

    def on_fit_start(self) -> None:
        # auto: compile the loss for runs of >= 50,000 steps (compiling takes ~12 s).
        # Not trainer.estimated_stepping_batches: it sets the training data up before a checkpoint's
        # loader state is restored, and a resumed run would replay its epoch from the start.
        dm, t = self.trainer.datamodule, self.trainer
        per_epoch = math.ceil(dm.sizes()["n_train"] / dm.batch_size) if dm is not None else 0
        steps = t.max_steps if t.max_steps and t.max_steps > 0 else (t.max_epochs or 0) * per_epoch
        # Compiled, the VAE's step measured 10-15% faster on 2 CPU threads (python -m vibench.bench), the
        # IWAE preset's epoch about 25% shorter on 1 thread (results/anchors.md); compiling takes 3-30 s.
        auto = self.train_compile == "auto" and steps >= 50_000
        if self.strategy.compilable and self.objective.compilable and (self.train_compile is True or auto):
            # torch.distributions resolves a KL pair on first use and memoizes it; resolved inside
            # the compiled loss, that lookup would split it into two graphs (a per-step cost).
            try:
                kl_estimate(self.model.prior(), self.model.prior())
            except NotImplementedError:  # no closed form (a mixture prior): Monte Carlo, nothing to resolve
                pass
            self._loss = CompiledOrEager(self.eager_loss, "the training loss")

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
            self.strategy.after_backward(self.model, x, idx)
            opt.step()
            losses.append(loss.detach())
        return torch.stack(losses)

    def validation_step(self, batch, batch_idx):
        x, idx = batch
        recon, kl = self.model.elbo_terms(x, self.strategy.val_q(self.model, x, idx), self.mc_samples, self.analytic_kl)
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
        q, found = self.strategy.test_q(self.model, x, idx)
        chunk = samples_per_chunk_for(self.model, len(x), self.eval_chunk_mib, x.element_size())
        parts = evaluate_batch(self.model, lambda *_: q, x, idx, self.iw_samples, chunk, self.analytic_kl, self._compiled_chunk)
        if self.eval_repeats > 1:  # R independent K-sample estimates of the same points with the same q
            again = [evaluate_batch(self.model, lambda *_: q, x, idx, self.iw_samples, chunk, self.analytic_kl, self._compiled_chunk)["iw_ll"] for _ in range(self.eval_repeats - 1)]
            parts["iw_ll_repeats"] = torch.stack([parts["iw_ll"], *again], dim=1)  # [B, R]
        marginal = self.model.exact_marginal()
        if marginal is not None:
            parts["exact_ll"] = marginal.log_prob(x)
        parts.update(found)
        parts.update(self.strategy.test_extras(self.model, x, idx))
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
