"""Inference strategies: where each datapoint's posterior parameters come from.

Every strategy serves a posterior of some family (:mod:`vibench.families`, ``posterior=``) for a
batch ``(x, idx)``, for training, validation and test; the one LightningModule
(:class:`~vibench.methods.VariationalInference`) asks and never needs to know which it has.

- :class:`Amortized` (AEVB, Kingma & Welling 2014): an encoder predicts them.
- :class:`LocalTable` (SVI, Hoffman et al. 2013): free parameters per datapoint, refined by
  ``inner_steps`` gradient steps on each visit; ``persistent`` keeps them in a table across
  epochs (Hoffman-style local state), else they restart from the family's start for every
  minibatch (Kim et al. 2018's SVI baseline: 20 steps of SGD, lr 1, momentum 0.5).
- :class:`SemiAmortized`: a local fit that starts at an encoder's prediction; the encoder learns
  on its own ELBO, without pushing gradient into the decoder.

Held-out points have no fitted parameters: a local strategy refines them from its start for
``inner_steps`` at validation and fits them with the model frozen and early stopping at test
(``heldout``: ``optimizer``, ``samples``, ``max_steps``, ``window``, ``patience``).
"""

from __future__ import annotations

import time
from collections.abc import Callable

import torch
from torch import nn
from torch.distributions import Distribution

from vibench.local_fit import fit_heldout, refine
from vibench.schedules import plain_partial


def _describe_optimizer(opt: Callable) -> dict:
    return {"name": getattr(opt, "func", opt).__name__, **getattr(opt, "keywords", {})}


class Amortized(nn.Module):
    """q(z | x) from an encoder (:class:`~vibench.networks.Encoder`) shared by all datapoints."""

    method = "aevb"

    def __init__(self, encoder: nn.Module):
        super().__init__()
        self.encoder = encoder
        self.timing: dict[str, float] = {}

    @property
    def family(self):
        return self.encoder.family

    @property
    def compilable(self) -> bool:
        return self.family.compilable  # the loss is a pure function of the batch

    def setup(self, n_train: int, device: torch.device) -> None:
        """Nothing per datapoint to build."""

    def train_q(self, model, x: torch.Tensor, idx: torch.Tensor) -> Distribution:
        return self.encoder(x, idx)

    def val_q(self, model, x: torch.Tensor, idx: torch.Tensor) -> Distribution:
        return self.encoder(x, idx)

    def test_q(self, model, x: torch.Tensor, idx: torch.Tensor) -> tuple[Distribution, dict[str, torch.Tensor]]:
        """q for test points, and per-point values of how it was found (``[B]`` tensors)."""
        return self.encoder(x, idx), {}

    def test_extras(self, model, x: torch.Tensor, idx: torch.Tensor) -> dict[str, torch.Tensor]:
        """Per-point test values beyond the evaluation's, computed after it."""
        return {}

    def after_backward(self, model, x: torch.Tensor, idx: torch.Tensor) -> None:
        """Gradients beyond the loss's own, before the optimizer step (none here)."""

    def describe(self) -> dict:
        return {"method": self.method, **self.family.describe()}


class LocalTable(nn.Module):
    """Free posterior parameters per datapoint (non-amortized SVI), refined by gradient steps.

    With ``persistent``, the training points' parameters live in a ``[N, n_params]`` buffer (saved
    in checkpoints, never touched by the model's optimizer); each training step refines the batch's
    rows, writes them back, then the model takes one step on the refined q (detached).
    """

    method = "svi"
    compilable = False  # the refinement is a loop of gradient steps

    def __init__(self, family, inner_optimizer: Callable, heldout: dict, persistent: bool = True, inner_steps: int = 20, inner_grad_clip: float | None = 5.0, mc_samples: int = 1, analytic_kl: bool = True):
        super().__init__()
        self._family, self.persistent, self.inner_steps, self.inner_grad_clip = family, persistent, inner_steps, inner_grad_clip
        self.inner_optimizer, self.mc_samples, self.analytic_kl = plain_partial(inner_optimizer), mc_samples, analytic_kl
        self.heldout = {**heldout, "optimizer": plain_partial(heldout["optimizer"])}
        self.encoder: nn.Module | None = None  # semi-amortized: where fits start
        self.register_buffer("table", None)  # [N, n_params], built by setup (persistent only)
        self.timing: dict[str, float] = {}

    @property
    def family(self):
        return self._family

    @property
    def flavour(self) -> str:
        return "persistent" if self.persistent else "reset"

    def setup(self, n_train: int, device: torch.device) -> None:
        if self.persistent and self.table is None:
            self.table = self.family.init_params(n_train, device=device)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # a persistent run's checkpoint holds the table, built by setup only when training starts:
        # build it to the checkpoint's size first, so a checkpoint can be evaluated without training
        if self.table is None and prefix + "table" in state_dict:
            self.table = torch.empty_like(state_dict[prefix + "table"])
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def start(self, x: torch.Tensor, idx: torch.Tensor, stage: str) -> torch.Tensor:
        """``[B, n_params]`` where the batch's fit starts: its table rows when training a persistent
        table, else the family's start (the prior)."""
        if self.persistent and stage == "train":
            return self.table[idx]
        return self.family.init_params(len(x), device=x.device, dtype=x.dtype)

    def _refine(self, model, x, init):
        return refine(model, self.family, x, init, self.inner_steps, self.inner_optimizer, self.mc_samples, self.analytic_kl, self.inner_grad_clip)

    def _clock(self, key: str, since: float, device: torch.device) -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        self.timing[key] = self.timing.get(key, 0.0) + time.perf_counter() - since

    def train_q(self, model, x, idx):
        started = time.perf_counter()
        params = self._refine(model, x, self.start(x, idx, "train"))
        self._clock("inner_s", started, x.device)
        if self.persistent:
            with torch.no_grad():
                self.table[idx] = params.to(self.table.dtype)
        return self.family.distribution(params)

    def val_q(self, model, x, idx):
        return self.family.distribution(self._refine(model, x, self.start(x, idx, "val")))

    def test_q(self, model, x, idx):
        """The held-out fit; per point, its steps and whether its stopping rule fired."""
        started = time.perf_counter()
        h = self.heldout
        fit = fit_heldout(model, self.family, x, self.start(x, idx, "test"), h["optimizer"], h["samples"], h["max_steps"], h["window"], h["patience"], self.analytic_kl)
        self._clock("heldout_fit_s", started, x.device)
        return self.family.distribution(fit.params), {"heldout_steps": fit.steps.to(x.device, x.dtype), "heldout_converged": fit.converged.to(x.device, x.dtype)}

    def test_extras(self, model, x, idx):
        """``elbo_inner``: the ELBO after validation's budget (``inner_steps`` from the start), the
        test number comparable with ``val/elbo`` (the test's q_i get the full held-out fit)."""
        with torch.no_grad():
            recon, kl = model.elbo_terms(x, self.val_q(model, x, idx), self.mc_samples, self.analytic_kl)
        return {"elbo_inner": recon - kl}

    def after_backward(self, model, x, idx) -> None:
        """The model's gradient came from the refined q (detached): nothing more."""

    def describe(self) -> dict:
        heldout = {k: v for k, v in self.heldout.items() if k != "optimizer"}
        heldout["optimizer"] = _describe_optimizer(self.heldout["optimizer"])
        return {"method": self.method, **self.family.describe(), "svi_flavour": self.flavour, "inner_steps": self.inner_steps,
                "inner_optimizer": _describe_optimizer(self.inner_optimizer), "inner_grad_clip": self.inner_grad_clip, "heldout": heldout}


class SemiAmortized(LocalTable):
    """A local fit that starts at an encoder's prediction (semi-amortized VI, Kim et al. 2018).

    The encoder learns to predict good starting points from its own ELBO, after the model's
    backward pass and without touching the decoder's gradient.
    """

    def __init__(self, encoder: nn.Module, inner_optimizer: Callable, heldout: dict, family=None, persistent: bool = False, **kwargs):
        # family and persistent come with the shared SVI config (conf/inference/svi.yaml): q's family is the encoder's, and no table is kept
        if persistent:
            raise ValueError("semi-amortized fits start at the encoder every time: persistent must be false")
        super().__init__(encoder.family, inner_optimizer, heldout, persistent=False, **kwargs)
        self.encoder = encoder

    @property
    def flavour(self) -> str:
        return "encoder"

    def start(self, x, idx, stage):
        return self.encoder.params(x).detach()

    def after_backward(self, model, x, idx) -> None:
        recon, kl = model.elbo_terms(x, self.encoder(x, idx), self.mc_samples, self.analytic_kl)
        params = list(self.encoder.parameters())
        for p, g in zip(params, torch.autograd.grad(-(recon - kl).mean(), params)):
            p.grad = g
