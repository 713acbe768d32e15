"""LightningModules for the inference methods.

The amortized VAE (AEVB, Kingma & Welling 2014) trains a generative model and an encoder guide
jointly on the ELBO. Metric keys are ``stage/quantity``; the KL-weighted training loss is logged as
``train/loss`` (with ``train/beta``) and the true ELBO (beta = 1) as ``train/elbo``, never under
the same name.
"""

from __future__ import annotations

from collections.abc import Callable

import lightning as L
import torch
from torch import nn

from vibench.evaluation import evaluate_batch, samples_per_chunk, summarize
from vibench.model import GenerativeModel
from vibench.objectives import kl_estimate


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

    def __init__(self, model: GenerativeModel, guide: nn.Module, optimizer: Callable, mc_samples: int = 1, analytic_kl: bool = True, beta: float = 1.0, iw_samples: int = 1000, eval_chunk_mib: float = 16.0):
        super().__init__()
        self.model, self.guide, self.optimizer_factory = model, guide, optimizer
        self.mc_samples, self.analytic_kl, self.beta = mc_samples, analytic_kl, beta
        self.iw_samples, self.eval_chunk_mib = iw_samples, eval_chunk_mib
        self.test_summary: dict[str, float] = {}
        self._test_parts: list[dict[str, torch.Tensor]] = []

    def elbo_terms(self, x: torch.Tensor, idx: torch.Tensor, samples: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``(recon, kl)``, each ``[B]``: ``E_q[log p(x|z)]`` over L reparameterized samples, and the KL."""
        q = self.guide(x, idx)
        z = q.rsample((samples,))  # [L, B, latent]
        recon = self.model.likelihood(z).log_prob(x).mean(dim=0)
        kl = kl_estimate(q, self.model.prior(), z, analytic=self.analytic_kl)
        return recon, kl

    def training_step(self, batch, batch_idx):
        x, idx = batch
        recon, kl = self.elbo_terms(x, idx, self.mc_samples)
        loss = -(recon - self.beta * kl).mean()
        self.log_dict(
            {"train/loss": loss, "train/elbo": (recon - kl).mean(), "train/kl": kl.mean(), "train/recon": recon.mean(), "train/beta": float(self.beta)},
            on_step=True, on_epoch=True, batch_size=len(x),
        )
        return loss

    def validation_step(self, batch, batch_idx):
        x, idx = batch
        recon, kl = self.elbo_terms(x, idx, self.mc_samples)
        self.log("val/elbo", (recon - kl).mean(), on_epoch=True, prog_bar=True, batch_size=len(x))

    def on_test_epoch_start(self) -> None:
        self._test_parts = []

    def test_step(self, batch, batch_idx):
        x, idx = batch
        widths = [m.out_features for m in self.model.decoder.net if isinstance(m, nn.Linear)]
        chunk = samples_per_chunk(len(x), self.model.latent, widths[:-1], widths[-1], self.eval_chunk_mib, x.element_size())
        parts = evaluate_batch(self.model, self.guide, x, idx, self.iw_samples, chunk, self.analytic_kl)
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
