"""Wall-clock accounting for a run: training, validation and test seconds, examples per second."""

from __future__ import annotations

import time

import lightning as L
import torch

from vibench.data.datamodule import as_minibatches


def _sync(pl_module: L.LightningModule) -> None:
    if pl_module.device.type == "cuda":  # CUDA runs asynchronously: wait before reading the clock
        torch.cuda.synchronize(pl_module.device)


class WallClock(L.Callback):
    """Times the phases of a run. Training time excludes the validation passes run during fit."""

    def __init__(self) -> None:
        self.fit_s = self.val_s = self.test_s = 0.0
        self.train_examples, self.world_size = 0, 1
        self.first_step_at: float | None = None
        self._t: dict[str, float] = {}

    def _start(self, key: str, pl_module) -> None:
        _sync(pl_module)
        self._t[key] = time.perf_counter()

    def _stop(self, key: str, pl_module) -> float:
        _sync(pl_module)
        return time.perf_counter() - self._t.pop(key, time.perf_counter())

    def on_fit_start(self, trainer, pl_module) -> None:
        self.world_size = trainer.world_size  # each rank sees its share: count them all
        self._start("fit", pl_module)

    def on_fit_end(self, trainer, pl_module) -> None:
        self.fit_s += self._stop("fit", pl_module)

    def on_validation_epoch_start(self, trainer, pl_module) -> None:
        self._start("val", pl_module)

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        self.val_s += self._stop("val", pl_module)

    def on_test_epoch_start(self, trainer, pl_module) -> None:
        self._start("test", pl_module)

    def on_test_epoch_end(self, trainer, pl_module) -> None:
        self.test_s += self._stop("test", pl_module)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if self.first_step_at is None:
            self.first_step_at = time.time()  # wall time: the benchmark measures start-up latency from it

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.train_examples += sum(len(x) for x, _ in as_minibatches(batch)) * self.world_size

    def summary(self) -> dict[str, float]:
        train_s = max(self.fit_s - self.val_s, 0.0)
        return {
            "train_s": round(train_s, 3),
            "val_s": round(self.val_s, 3),
            "test_s": round(self.test_s, 3),
            "train_examples": self.train_examples,
            "train_examples_per_s": round(self.train_examples / train_s, 1) if train_s > 0 else None,
            "first_step_at": self.first_step_at,
        }
