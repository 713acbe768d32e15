"""Training metrics logged in windows of steps, on the same step axis as everything else.

Metric keys are ``stage/quantity``. The KL-weighted training loss is logged as ``train/loss``
(with ``train/beta``) and the true ELBO (beta = 1) as ``train/elbo``, never under the same name.
"""

from __future__ import annotations

import lightning as L
import torch

TRAIN_KEYS = ("train/loss", "train/elbo", "train/kl", "train/recon")


def step_stats(loss: torch.Tensor, recon: torch.Tensor, kl: torch.Tensor) -> torch.Tensor:
    """A step's training metrics in :data:`TRAIN_KEYS` order, one detached ``[4]`` tensor: the
    minimized loss, the ELBO (beta = 1), KL and reconstruction, each a batch mean."""
    recon_mean, kl_mean = recon.mean(), kl.mean()
    return torch.stack([loss, recon_mean - kl_mean, kl_mean, recon_mean]).detach()


class TrainingMetrics(L.LightningModule):
    """A LightningModule that accumulates its training metrics on the device and logs window and
    epoch means itself (:meth:`track_training`, :meth:`log_epoch_means`, :meth:`log_to_loggers`)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._window = self._epoch = None
        self._window_steps = self._epoch_steps = 0
        self._keys: tuple[str, ...] = TRAIN_KEYS
        self._restored: dict | None = None  # the sums of a checkpoint saved mid-epoch, until training starts

    def track_training(self, keys: tuple[str, ...], stats: torch.Tensor, beta: float) -> None:
        """Accumulate a step's training metrics (``stats[i]`` for ``keys[i]``) on the device; log
        their window means every ``trainer.log_every_n_steps`` steps with one host sync.

        Lightning's ``self.log`` re-walks its whole result collection on every call (about 1 ms a
        metric a step on a CPU, a quarter of a VAE step here): training metrics bypass it and go to
        the loggers directly; epoch means are logged through ``self.log`` once per epoch.
        """
        self._keys = keys
        self._window = stats if self._window is None else self._window + stats
        self._window_steps += 1
        every = self.trainer.log_every_n_steps if self._trainer is not None else 1
        if (self.global_step + 1) % max(1, every) == 0:
            self._flush_window(beta)

    def _flush_window(self, beta: float | None) -> None:
        if self._window is None:
            return
        self._epoch = self._window if self._epoch is None else self._epoch + self._window
        self._epoch_steps += self._window_steps
        if beta is not None:
            means = dict(zip(self._keys, (self._window / self._window_steps).tolist()))
            means["train/beta"] = beta
            means["train/lr"] = self.current_lr()
            for logger in self.loggers:
                logger.log_metrics(means, step=self.global_step)
        self._window, self._window_steps = None, 0

    def log_epoch_means(self) -> None:
        """At the end of a training epoch: the epoch means of the training metrics, then a fresh window."""
        self._flush_window(None)  # steps since the last logged window count towards the epoch means
        if self._epoch is not None:
            means = (self._epoch / self._epoch_steps).tolist()
            epoch_means = {**{f"{k}_epoch": v for k, v in zip(self._keys, means)}, "train/lr": self.current_lr()}
            self.log_to_loggers(epoch_means)
            if self._trainer is not None:  # for callbacks (the plain progress lines of a run logged to a file), not the loggers again;
                self.log_dict(epoch_means, logger=False, sync_dist=True)  # DDP: the mean over ranks, once an epoch
        self._epoch, self._epoch_steps, self._window, self._window_steps = None, 0, None, 0

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        """The running sums of the epoch and the window travel in the checkpoint: a run stopped
        mid-epoch and resumed logs the same epoch means as one never stopped, not the means of the
        steps after its resume."""
        as_list = lambda t: None if t is None else t.tolist()  # noqa: E731
        checkpoint["training_metrics"] = {"epoch": as_list(self._epoch), "window": as_list(self._window), "epoch_steps": self._epoch_steps, "window_steps": self._window_steps,
                                          "keys": list(self._keys), "at_epoch": self.current_epoch if self._trainer is not None else None}

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self._restored = checkpoint.get("training_metrics")  # put back when training starts, on its device

    def on_train_start(self) -> None:
        """A run resumed in the epoch its checkpoint was saved in goes on with that epoch's sums (a
        checkpoint saved at an epoch's end holds none). Once, here, not in the per-step path; the
        resume fingerprint guarantees the same objective, hence the same metric keys."""
        state, self._restored = self._restored, None
        if not state or state.get("at_epoch") != self.current_epoch:
            return
        as_tensor = lambda v: None if v is None else torch.tensor(v, dtype=self.dtype, device=self.device)  # noqa: E731
        self._epoch, self._window = as_tensor(state["epoch"]), as_tensor(state["window"])
        self._epoch_steps, self._window_steps, self._keys = state["epoch_steps"], state["window_steps"], tuple(state["keys"])

    def log_to_loggers(self, metrics: dict[str, float]) -> None:
        """Epoch-level metrics to the loggers at the index of the last optimizer step taken, the
        same step axis as the training windows (Lightning's own ``self.log`` counts its calls, which
        hold ``train.steps_per_call`` steps each), with the epoch."""
        if self._trainer is None or self.trainer.sanity_checking:
            return
        for logger in self.loggers:
            logger.log_metrics({**metrics, "epoch": self.current_epoch}, step=max(0, self.global_step - 1))

    def current_lr(self) -> float:
        """The learning rate of the (first) optimizer's first parameter group right now."""
        return float(self.optimizers().optimizer.param_groups[0]["lr"]) if self._trainer is not None else float("nan")
