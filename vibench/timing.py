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
    """Times the phases of a run. Training time excludes the validation passes run during fit.

    A resumed run's record also gives the training and validation seconds of all its segments
    (``train_s_all_segments``, ``val_s_all_segments``): the clock's totals travel in each
    checkpoint (:meth:`state_dict`), so a run continued over several sessions reports its whole
    cost, not only the last segment's. Time between segments is not counted.
    """

    def __init__(self) -> None:
        self.fit_s = self.val_s = self.test_s = 0.0
        self.earlier_train_s = self.earlier_val_s = 0.0  # segments before a resume, from the checkpoint
        self.resumed = False
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

    def _so_far(self) -> tuple[float, float]:
        """This segment's training and validation seconds up to now (also mid-fit)."""
        fit = self.fit_s + (time.perf_counter() - self._t["fit"] if "fit" in self._t else 0.0)
        val = self.val_s + (time.perf_counter() - self._t["val"] if "val" in self._t else 0.0)
        return max(fit - val, 0.0), val

    def state_dict(self) -> dict[str, float]:
        train, val = self._so_far()
        return {"train_s": self.earlier_train_s + train, "val_s": self.earlier_val_s + val}

    def load_state_dict(self, state: dict[str, float]) -> None:
        self.earlier_train_s, self.earlier_val_s = float(state.get("train_s", 0.0)), float(state.get("val_s", 0.0))
        self.resumed = True

    def summary(self) -> dict[str, float]:
        train_s = max(self.fit_s - self.val_s, 0.0)
        segments = {"train_s_all_segments": round(self.earlier_train_s + train_s, 3), "val_s_all_segments": round(self.earlier_val_s + self.val_s, 3)} if self.resumed else {}
        return {
            "train_s": round(train_s, 3),
            "val_s": round(self.val_s, 3),
            "test_s": round(self.test_s, 3),
            "train_examples": self.train_examples,
            "train_examples_per_s": round(self.train_examples / train_s, 1) if train_s > 0 else None,
            "first_step_at": self.first_step_at,
            **segments,
        }


def busy_cpu_note(device: dict) -> str | None:
    """A warning before training when this run's CPU threads will share the cores with other work:
    the 1-minute load average at its start (``device["load_at_start"]``, the number of threads other
    processes kept busy) plus its own ``torch_threads`` exceed ``cpu_count``. Threads that share
    cores slow each other several-fold (on 2 cores, a 1,000-point test took 31 s on one thread
    beside a 2-thread run and 8 min 50 s on two), and the run's wall-clock then measures the
    sharing. Most of it is OpenMP's idle threads spinning: the default digits run, 2 threads beside
    a 1-thread run, trained in 172 s, and in 2.6 s with ``OMP_WAIT_POLICY=PASSIVE`` (which costs
    15-75% alone, so it is advice, not a default). ``None`` on a GPU, where the load is unknown,
    or with room to spare."""
    load, threads, cpus = device.get("load_at_start"), device.get("torch_threads"), device.get("cpu_count")
    if device.get("type") != "cpu" or None in (load, threads, cpus) or load < 0.5 or load + threads <= cpus + 0.5:
        return None
    return (f"the CPU is busy: other processes kept about {load:.1f} of its {cpus} cores busy over the last minute, and this run adds "
            f"{threads} torch thread{'s' if threads != 1 else ''}. Runs that share cores slow each other several-fold, and this run's "
            "wall-clock will measure the sharing. Give each run one thread (OMP_NUM_THREADS=1), or fewer runs at once; "
            "with several threads, OMP_WAIT_POLICY=PASSIVE set before the run stops idle threads from spinning on the shared cores.")
