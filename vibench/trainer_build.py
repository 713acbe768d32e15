"""The Lightning Trainer of a run: vibench's callbacks, and one device per job of a parallel sweep."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from vibench.errors import ConfigError


def make_trainer(cfg: DictConfig, output_dir: Path, run_id: str, logger, overrides: dict | None = None, extra_callbacks: tuple = (), config: dict | None = None, resume_from: Path | None = None):
    """The Lightning Trainer of a run with vibench's callbacks: wall-clock, non-finite guard,
    resume state, SIGTERM save and the atomic ``last.ckpt`` (the benchmark builds the same one).
    Besides ``logger`` (W&B, CSV or none), the epoch-level rows go to ``epochs.jsonl`` in
    ``output_dir`` (:mod:`vibench.epoch_log`), on disk before each epoch's checkpoint."""
    from vibench.checkpoints import BestCheckpoint, LastCheckpoint
    from vibench.epoch_log import FILE_NAME, EpochLog
    from vibench.faults import AtomicCheckpointIO, NonFiniteGuard, ResumeState, SaveOnSigterm
    from vibench.records import git_state
    from vibench.run import build
    from vibench.timing import WallClock

    clock = WallClock()
    by_steps = cfg.checkpoint.every_n_steps is not None  # Lightning takes one interval, steps or epochs
    # One file, last.ckpt, rewritten at each interval (Lightning's save_last only copies top-k saves).
    checkpoints = LastCheckpoint(output_dir / "checkpoints", every_n_epochs=None if by_steps else cfg.checkpoint.every_n_epochs, every_n_train_steps=cfg.checkpoint.every_n_steps)
    sigterm = SaveOnSigterm(output_dir / "checkpoints" / "last.ckpt")
    guard = NonFiniteGuard(checkpoints, every=cfg.trainer.get("log_every_n_steps", 1))
    resume_state = ResumeState(run_id, config, git_state())
    callbacks = [clock, guard, resume_state, sigterm, *extra_callbacks, checkpoints]
    if cfg.checkpoint.get("select", "last") == "best":  # model selection on the validation ELBO (pythae, VampPrior)
        callbacks.append(BestCheckpoint(output_dir / "checkpoints", resumed_folder=resume_from.parent if resume_from else None))
    if cfg.get("early_stopping", {}).get("patience") is not None:
        from lightning.pytorch.callbacks import EarlyStopping

        # checked after each validation, not at the end of a training epoch: a run stopped mid-epoch by
        # trainer.max_steps has no val/elbo at that point, and Lightning would raise
        callbacks.append(EarlyStopping(monitor="val/elbo", mode="max", patience=cfg.early_stopping.patience, check_on_train_epoch_end=False))
    if cfg.trainer.get("enable_progress_bar", True):
        from vibench.report_console import PlainProgress, ProgressBar, console

        if console.is_terminal:  # redrawn about every 10 optimizer steps: every step cost ~3% of a small model's step
            callbacks.append(ProgressBar(refresh_rate=max(1, 10 // cfg.train.steps_per_call)))
        else:  # a live bar in a log file shows nothing until the run ends; Lightning's default would add a tqdm bar
            callbacks.append(PlainProgress(every_s=cfg.train.get("progress_every_s", 60)))
            overrides = {**(overrides or {}), "enable_progress_bar": False}
    loggers = [logger] if logger else []
    trainer = build("trainer", cfg.trainer, logger=[*loggers, EpochLog(output_dir / FILE_NAME)], callbacks=callbacks, plugins=[AtomicCheckpointIO()], **(overrides or {}))
    return trainer, clock, sigterm, resume_state


def check_distribution(cfg: DictConfig, job: dict[str, Any]) -> None:
    """Refuse DDP inside a multirun: Lightning re-launches the command line for each rank, so every
    rank would run the whole sweep (Lightning issue 11300)."""
    strategy = str(cfg.trainer.get("strategy", "auto"))
    if job["multirun"] and strategy.startswith("ddp"):
        raise ConfigError(
            f"trainer.strategy={strategy} (trainer=ddp) runs one job across several devices and cannot be combined with -m: "
            "Lightning re-launches the command line for each rank, which would re-run the sweep. "
            "To sweep, give each job one device: hydra/launcher=local_parallel (one machine) or hydra/launcher=slurm (a cluster); "
            "use trainer=ddp for a single large run, without -m."
        )


def pin_parallel_job(job: dict[str, Any]) -> dict[str, Any]:
    """Jobs run side by side by a parallel launcher each get one device (:func:`device_for_job`);
    Hydra's joblib launcher assigns no devices itself."""
    from hydra.core.hydra_config import HydraConfig

    if not job["multirun"] or "Joblib" not in str(HydraConfig.get().launcher.get("_target_", "")):
        return {}
    import torch

    pinned = device_for_job(job["job_num"], torch.cuda.device_count() if torch.cuda.is_available() else 0)
    if pinned["accelerator"] == "cpu":
        torch.set_num_threads(1)
    return pinned


def device_for_job(job_num: int, n_gpus: int) -> dict[str, Any]:
    """The Trainer's device for job ``job_num`` of a parallel sweep: GPU ``job_num mod n_gpus``, so
    ``hydra.launcher.n_jobs = N x n_gpus`` packs N jobs on every GPU; without GPUs, the CPU (with
    one torch thread per job: two multi-threaded torch processes on the same cores slow each other
    several-fold)."""
    if n_gpus > 0:
        return {"accelerator": "gpu", "devices": [job_num % n_gpus]}
    return {"accelerator": "cpu", "devices": 1}
