"""Non-amortized SVI (Hoffman et al. 2013): :class:`LocalVI`, the amortized module with a free
Gaussian q_i per datapoint in place of the encoder's q(z | x)."""

from __future__ import annotations

import time
from collections.abc import Callable

import torch
from torch import nn

from vibench.guides import LocalGaussian, gaussian, gaussian_params
from vibench.local_fit import fit_heldout, refine
from vibench.methods import AmortizedVI
from vibench.model import GenerativeModel
from vibench.schedules import plain_partial

FLAVOURS = ("persistent", "reset", "encoder")


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
    compiles_training_loss = False

    def __init__(self, model: GenerativeModel, optimizer: Callable, inner_optimizer: Callable, heldout: dict, flavour: str = "persistent", inner_steps: int = 20, inner_grad_clip: float | None = 5.0, guide: nn.Module | None = None, **kwargs):
        if flavour not in FLAVOURS:
            raise ValueError(f"flavour={flavour!r} is not one of {FLAVOURS}")
        super().__init__(model, guide if flavour == "encoder" else None, optimizer, **kwargs)
        self.flavour, self.inner_steps, self.inner_optimizer, self.inner_grad_clip = flavour, inner_steps, plain_partial(inner_optimizer), inner_grad_clip
        self.heldout = {**heldout, "optimizer": plain_partial(heldout["optimizer"])}
        self.local: LocalGaussian | None = None
        self.heldout_steps: list = []  # the held-out fits (vibench.local_fit.FitResult) of this test epoch

    def describe(self) -> dict:
        opt = self.inner_optimizer
        inner = {"name": getattr(opt, "func", opt).__name__, **getattr(opt, "keywords", {})}
        heldout = {k: v for k, v in self.heldout.items() if k != "optimizer"}
        h_opt = self.heldout["optimizer"]
        heldout["optimizer"] = {"name": getattr(h_opt, "func", h_opt).__name__, **getattr(h_opt, "keywords", {})}
        return {**super().describe(), "svi_flavour": self.flavour, "inner_steps": self.inner_steps, "inner_optimizer": inner, "inner_grad_clip": self.inner_grad_clip, "heldout": heldout}

    def setup(self, stage: str) -> None:
        if self.flavour == "persistent" and self.local is None:
            n_train = self.trainer.datamodule.sizes()["n_train"]
            self.local = LocalGaussian(n_train, self.model.latent).to(self.device)

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        """A persistent run's checkpoint holds its q_i table (``local.table``), which :meth:`setup`
        builds only when training starts: build it to the checkpoint's size first, so that a
        checkpoint can be evaluated or analysed without training (``evaluate=``)."""
        if self.local is None and "local.table" in state_dict:
            self.local = LocalGaussian(state_dict["local.table"].shape[0], self.model.latent).to(self.device)
        return super().load_state_dict(state_dict, strict=strict, assign=assign)

    def initial_params(self, x: torch.Tensor, idx: torch.Tensor, stage: str) -> torch.Tensor:
        if self.flavour == "encoder":
            return gaussian_params(self.guide(x, idx)).detach()
        if self.flavour == "persistent" and stage == "train":
            return self.local.rows(idx)
        return torch.zeros(len(x), 2, self.model.latent, device=x.device, dtype=x.dtype)

    def train_posterior(self, x, idx):
        start = time.perf_counter()
        params = refine(self.model, x, self.initial_params(x, idx, "train"), self.inner_steps, self.inner_optimizer, self.mc_samples, self.analytic_kl, self.inner_grad_clip)
        self._clock("inner_s", start)
        if self.flavour == "persistent":
            self.local.write(idx, params)
        return gaussian(params)

    def eval_posterior(self, x, idx, stage):
        init = self.initial_params(x, idx, stage)
        if stage == "val":
            return gaussian(refine(self.model, x, init, self.inner_steps, self.inner_optimizer, self.mc_samples, self.analytic_kl, self.inner_grad_clip))
        start = time.perf_counter()
        h = self.heldout
        fit = fit_heldout(self.model, x, init, h["optimizer"], h["samples"], h["max_steps"], h["window"], h["patience"], self.analytic_kl)
        self._clock("heldout_fit_s", start)
        self.heldout_steps.append(fit)
        return gaussian(fit.params)

    def after_backward(self, x: torch.Tensor, idx: torch.Tensor) -> None:
        """The model's gradient came from the refined q_i (detached); with ``flavour=encoder`` the
        encoder learns to predict good starting points from its own ELBO, without touching the decoder."""
        if self.flavour == "encoder":
            recon, kl = self.elbo_terms(x, self.guide(x, idx), self.mc_samples)
            grads = torch.autograd.grad(-(recon - kl).mean(), list(self.guide.parameters()))
            for p, g in zip(self.guide.parameters(), grads):
                p.grad = g

    def test_step(self, batch, batch_idx):
        """As the VAE's, plus ``elbo_inner``: the ELBO of q_i after validation's budget (``inner_steps``
        steps from the flavour's start). ``val/elbo`` is measured that way every epoch, while the
        test's q_i get the full held-out fit: ``test/elbo_inner`` is the test number comparable with ``val/elbo``."""
        super().test_step(batch, batch_idx)
        x, idx = batch
        with torch.no_grad():
            recon, kl = self.elbo_terms(x, self.eval_posterior(x, idx, "val"), self.mc_samples)
        self._test_parts[-1]["elbo_inner"] = recon - kl

    def on_test_epoch_end(self) -> None:
        super().on_test_epoch_end()
        if self.heldout_steps:  # per point: mean steps of its fit, and the fraction whose stopping rule fired
            self.test_summary["test/heldout_fit_steps"] = float(torch.cat([f.steps for f in self.heldout_steps]).double().mean())
            self.test_summary["test/heldout_converged"] = float(torch.cat([f.converged for f in self.heldout_steps]).double().mean())
            self.heldout_steps = []
