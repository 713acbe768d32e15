"""LightningModules for the inference methods.

Both methods train the same :class:`~vibench.model.GenerativeModel` on the same ELBO and are
evaluated by the same K-sample evaluator; they differ only in where q comes from:

- :class:`AmortizedVI` (AEVB, Kingma & Welling 2014): q(z | x) from an encoder trained jointly.
- :class:`LocalVI` (SVI, Hoffman et al. 2013): a free Gaussian q_i per datapoint, fitted by
  gradient steps.

Metric keys are ``stage/quantity``. The KL-weighted training loss is logged as ``train/loss``
(with ``train/beta``) and the true ELBO (beta = 1) as ``train/elbo``, never under the same name.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import lightning as L
import torch
from torch import nn
from torch.distributions import Distribution

from vibench.evaluation import evaluate_batch, samples_per_chunk, summarize
from vibench.guides import LocalGaussian, gaussian, gaussian_params
from vibench.local_fit import fit_heldout, refine
from vibench.model import GenerativeModel
from vibench.objectives import kl_estimate

FLAVOURS = ("persistent", "reset", "encoder")


class AmortizedVI(L.LightningModule):
    """Amortized variational inference: q(z | x) from an encoder shared by all datapoints.

    Args:
        model: the generative model p(z) p(x | z).
        guide: the encoder, called as ``guide(x, idx)``, returning q(z | x).
        optimizer: a factory ``params -> torch.optim.Optimizer`` (a Hydra ``_partial_``).
        mc_samples: L, reparameterized samples per datapoint for the training ELBO.
        analytic_kl: closed-form KL(q || p) when available; else Monte Carlo over the L samples.
        beta: weight on the KL term of the training loss (1 gives the ELBO).
        iw_samples: K, importance samples per test datapoint for the IW log-likelihood.
        eval_chunk_mib: memory budget of one chunk of the K-sample evaluation, in MiB.
    """

    method = "aevb"

    def __init__(self, model: GenerativeModel, guide: nn.Module | None, optimizer: Callable, mc_samples: int = 1, analytic_kl: bool = True, beta: float = 1.0, iw_samples: int = 1000, eval_chunk_mib: float = 16.0):
        super().__init__()
        self.model, self.guide, self.optimizer_factory = model, guide, optimizer
        self.mc_samples, self.analytic_kl, self.beta = mc_samples, analytic_kl, beta
        self.iw_samples, self.eval_chunk_mib = iw_samples, eval_chunk_mib
        self.test_summary: dict[str, float] = {}
        self.timing: dict[str, float] = {}
        self._test_parts: list[dict[str, torch.Tensor]] = []

    def describe(self) -> dict:
        """What ran, for the run record."""
        return {"method": self.method, "mc_samples": self.mc_samples, "analytic_kl": self.analytic_kl, "beta": self.beta}

    # --- where q comes from: the only thing the methods disagree on -------------------------
    def train_posterior(self, x: torch.Tensor, idx: torch.Tensor) -> Distribution:
        return self.guide(x, idx)

    def eval_posterior(self, x: torch.Tensor, idx: torch.Tensor, stage: str) -> Distribution:
        return self.guide(x, idx)

    # --- shared ---------------------------------------------------------------------------
    def elbo_terms(self, x: torch.Tensor, q: Distribution, samples: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``(recon, kl)``, each ``[B]``: ``E_q[log p(x|z)]`` over L reparameterized samples, and the KL."""
        z = q.rsample((samples,))  # [L, B, latent]
        recon = self.model.likelihood(z).log_prob(x).mean(dim=0)
        kl = kl_estimate(q, self.model.prior(), z, analytic=self.analytic_kl)
        return recon, kl

    def training_loss(self, x: torch.Tensor, q: Distribution) -> torch.Tensor:
        recon, kl = self.elbo_terms(x, q, self.mc_samples)
        loss = -(recon - self.beta * kl).mean()
        self.log_dict(
            {"train/loss": loss, "train/elbo": (recon - kl).mean(), "train/kl": kl.mean(), "train/recon": recon.mean(), "train/beta": float(self.beta)},
            on_step=True, on_epoch=True, batch_size=len(x),
        )
        return loss

    def training_step(self, batch, batch_idx):
        x, idx = batch
        return self.training_loss(x, self.train_posterior(x, idx))

    def validation_step(self, batch, batch_idx):
        x, idx = batch
        recon, kl = self.elbo_terms(x, self.eval_posterior(x, idx, "val"), self.mc_samples)
        self.log("val/elbo", (recon - kl).mean(), on_epoch=True, prog_bar=True, batch_size=len(x))

    def on_test_epoch_start(self) -> None:
        self._test_parts = []

    def test_step(self, batch, batch_idx):
        x, idx = batch
        q = self.eval_posterior(x, idx, "test")
        widths = [m.out_features for m in self.model.decoder.net if isinstance(m, nn.Linear)]
        chunk = samples_per_chunk(len(x), self.model.latent, widths[:-1], widths[-1], self.eval_chunk_mib, x.element_size())
        parts = evaluate_batch(self.model, lambda *_: q, x, idx, self.iw_samples, chunk, self.analytic_kl)
        marginal = self.model.exact_marginal()
        if marginal is not None:
            parts["exact_ll"] = marginal.log_prob(x)
        self._test_parts.append(parts)

    def on_test_epoch_end(self) -> None:
        per_point = {k: torch.cat([p[k] for p in self._test_parts]).cpu() for k in self._test_parts[0]}
        self._test_parts = []
        self.test_summary = summarize(per_point, "test")
        self.log_dict({k: float(v) for k, v in self.test_summary.items()})

    def configure_optimizers(self):
        return self.optimizer_factory(self.parameters())

    def _clock(self, key: str, since: float) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        self.timing[key] = self.timing.get(key, 0.0) + time.perf_counter() - since


class LocalVI(AmortizedVI):
    """Non-amortized SVI: a free Gaussian q_i(z) per datapoint, refined by ``inner_steps`` gradient steps.

    Flavours (recorded as ``svi_flavour``):

    - ``persistent``: q_i live in a table across epochs (Hoffman-style local state); each training
      step refines the batch's rows, writes them back, then takes one step on the model.
    - ``reset``: q_i start at the prior (mean 0, unit variance) for every minibatch (the SVI
      baseline of Kim et al. 2018: 20 steps of SGD, lr 1, momentum 0.5).
    - ``encoder``: q_i start at an encoder's prediction and are refined (semi-amortized); the
      encoder is trained on its own ELBO, without pushing gradient into the decoder.

    Held-out points (validation, test) have no fitted q_i: validation refines from the flavour's
    starting point for ``inner_steps`` steps; test fits them with the model frozen and early
    stopping (``heldout``: ``max_steps``, ``window``, ``patience``, ``samples``, ``optimizer``).
    Wall-clock of the inner steps and of the held-out fits is reported separately
    (``timing.inner_s``, ``timing.heldout_fit_s``).
    """

    method = "svi"

    def __init__(self, model: GenerativeModel, optimizer: Callable, inner_optimizer: Callable, heldout: dict, flavour: str = "persistent", inner_steps: int = 20, guide: nn.Module | None = None, **kwargs):
        if flavour not in FLAVOURS:
            raise ValueError(f"flavour={flavour!r} is not one of {FLAVOURS}")
        super().__init__(model, guide if flavour == "encoder" else None, optimizer, **kwargs)
        self.flavour, self.inner_steps, self.inner_optimizer = flavour, inner_steps, inner_optimizer
        self.heldout = dict(heldout)
        self.local: LocalGaussian | None = None
        self.heldout_steps: list[int] = []
        self.automatic_optimization = False

    def describe(self) -> dict:
        opt = self.inner_optimizer
        inner = {"name": getattr(opt, "func", opt).__name__, **getattr(opt, "keywords", {})}
        heldout = {k: v for k, v in self.heldout.items() if k != "optimizer"}
        h_opt = self.heldout["optimizer"]
        heldout["optimizer"] = {"name": getattr(h_opt, "func", h_opt).__name__, **getattr(h_opt, "keywords", {})}
        return {**super().describe(), "svi_flavour": self.flavour, "inner_steps": self.inner_steps, "inner_optimizer": inner, "heldout": heldout}

    def setup(self, stage: str) -> None:
        if self.flavour == "persistent" and self.local is None:
            n_train = self.trainer.datamodule.sizes()["n_train"]
            self.local = LocalGaussian(n_train, self.model.latent).to(self.device)

    def initial_params(self, x: torch.Tensor, idx: torch.Tensor, stage: str) -> torch.Tensor:
        if self.flavour == "encoder":
            return gaussian_params(self.guide(x, idx)).detach()
        if self.flavour == "persistent" and stage == "train":
            return self.local.rows(idx)
        return torch.zeros(len(x), 2, self.model.latent, device=x.device, dtype=x.dtype)

    def train_posterior(self, x, idx):
        start = time.perf_counter()
        params = refine(self.model, x, self.initial_params(x, idx, "train"), self.inner_steps, self.inner_optimizer, self.mc_samples, self.analytic_kl)
        self._clock("inner_s", start)
        if self.flavour == "persistent":
            self.local.write(idx, params)
        return gaussian(params)

    def eval_posterior(self, x, idx, stage):
        init = self.initial_params(x, idx, stage)
        if stage == "val":
            return gaussian(refine(self.model, x, init, self.inner_steps, self.inner_optimizer, self.mc_samples, self.analytic_kl))
        start = time.perf_counter()
        h = self.heldout
        params, steps = fit_heldout(self.model, x, init, h["optimizer"], h["samples"], h["max_steps"], h["window"], h["patience"], self.analytic_kl)
        self._clock("heldout_fit_s", start)
        self.heldout_steps.append(steps)
        return gaussian(params)

    def training_step(self, batch, batch_idx):
        x, idx = batch
        opt = self.optimizers()
        loss = self.training_loss(x, self.train_posterior(x, idx))  # q's parameters are detached
        opt.zero_grad()
        self.manual_backward(loss)
        if self.flavour == "encoder":  # the encoder learns to predict good starting points
            recon, kl = self.elbo_terms(x, self.guide(x, idx), self.mc_samples)
            grads = torch.autograd.grad(-(recon - kl).mean(), list(self.guide.parameters()))
            for p, g in zip(self.guide.parameters(), grads):
                p.grad = g
        opt.step()
        return loss

    def on_test_epoch_end(self) -> None:
        super().on_test_epoch_end()
        if self.heldout_steps:
            self.test_summary["test/heldout_fit_steps"] = sum(self.heldout_steps) / len(self.heldout_steps)
