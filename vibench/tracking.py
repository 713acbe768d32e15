"""Experiment tracking: the configured Lightning logger, images, and where things went.

Tracking is configuration (conf/logger/): ``wandb`` (default, offline unless
``logger.mode=online``), ``csv`` or ``none``. One W&B run per Hydra job: :func:`finish` closes it
in the task's ``finally`` so the next job of a multirun opens its own.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from hydra.utils import instantiate
from lightning.pytorch.loggers import Logger, WandbLogger
from omegaconf import DictConfig

from vibench.errors import VibenchError


@dataclass(frozen=True)
class StartOptions:
    """How :func:`start` starts a W&B run (``logger.mode``, ``logger.fallback``), read from the
    logger's config once, where it is built (:func:`make_logger`)."""

    mode: str = "offline"
    fallback: str = "none"  # offline: continue offline if W&B cannot start online


def _wandb_settings(cfg: DictConfig):
    """No W&B terminal output with ``quiet`` (the default: vibench prints where the run went and its
    sync command; W&B's failures still raise), no colour codes when the output is not a terminal,
    and the online start-up time limit."""
    import sys

    import wandb

    quiet = bool(cfg.get("quiet", True))
    return wandb.Settings(init_timeout=float(cfg.get("init_timeout", 10)), quiet=quiet, silent=quiet, show_colors=sys.stderr.isatty())


def make_logger(cfg: DictConfig | None, config: dict[str, Any], group: str | None, name: str, run_id: str, job_type: str | None = None) -> tuple[Logger | bool, StartOptions]:
    """The logger from ``cfg`` (``False`` for none), not started yet, and how to start it:
    :func:`start` starts it, after everything else that can refuse the run (the trainer too) was built.

    W&B gets the resolved config, a group (the sweep), a name, and as ``job_type`` the run's
    configuration group (:func:`~vibench.resume.config_group`, the same for runs that differ only
    in their seed), so that W&B's "group by job type" averages seeds.
    """
    if cfg is None:
        return False, StartOptions()
    if not str(cfg.get("_target_", "")).endswith("WandbLogger"):
        return instantiate(cfg), StartOptions()
    kwargs = {k: v for k, v in cfg.items() if k not in ("init_timeout", "fallback", "quiet")}
    # instantiate's own first parameter is called `config`: build a partial, then call it.
    factory = instantiate(DictConfig(kwargs), _partial_=True)
    ids = {"id": run_id}
    if sweep := os.environ.get("WANDB_SWEEP_ID"):  # under `wandb agent`: the agent names the run; group by sweep
        ids, group = {}, group or f"wandb-sweep-{sweep}"
    logger = factory(group=cfg.get("group") or group, name=cfg.get("name") or name, job_type=cfg.get("job_type") or job_type, config=config, settings=_wandb_settings(cfg), **ids)
    # Lightning passes anonymous=None, which W&B answers on every run with a deprecation warning.
    logger._wandb_init.pop("anonymous", None)
    return logger, StartOptions(mode=str(cfg.get("mode")), fallback=str(cfg.get("fallback", "none")))


def start(options: StartOptions, logger: Logger | bool) -> Logger | bool:
    """Start the W&B run of ``logger`` (other loggers need no start), so its failures come before
    training. Online, it must start within ``init_timeout`` seconds; if it cannot (no API key, no
    network), vibench stops with a message, or continues offline when ``fallback: offline``
    (returning the offline logger that replaces ``logger``)."""
    if not isinstance(logger, WandbLogger):
        return logger
    import wandb

    try:
        logger.experiment  # starts the run
    except Exception as e:  # wandb raises UsageError (no key), CommError (no network), ...
        wandb.finish(exit_code=1, quiet=True) if wandb.run is not None else None
        reason = str(e).splitlines()[0].rstrip(".")
        if options.fallback == "offline" and options.mode != "offline":
            from vibench.report_console import print_error

            print_error(f"W&B could not start online ({reason}); continuing offline as logger.fallback=offline asks.")
            offline = WandbLogger(**{**logger._wandb_init, "mode": "offline", "save_dir": logger.save_dir})
            offline._wandb_init.pop("anonymous", None)
            return offline
        raise VibenchError(
            f"W&B could not start in {options.mode} mode: {reason}. Run `wandb login` (or set WANDB_API_KEY) and check the network, "
            "or run offline with logger.mode=offline (upload later with `wandb sync`), or let it fall back with logger.fallback=offline."
        ) from None
    return logger


def describe(logger: Logger | bool) -> dict[str, Any] | None:
    """Where the logger wrote, for the run record and the final message."""
    from lightning.pytorch.utilities import rank_zero_only

    if rank_zero_only.rank != 0:
        return None  # DDP ranks > 0 log nothing; rank 0 holds the one W&B run
    if isinstance(logger, WandbLogger):
        run = logger.experiment
        mode = "offline" if run.settings._offline else "online"
        info = {"kind": "wandb", "id": run.id, "project": run.project, "group": run.group, "job_type": run.job_type, "name": run.name, "mode": mode, "dir": str(Path(run.dir).parent)}
        info["url"] = run.url if mode == "online" else None
        info["sync_command"] = f"wandb sync {info['dir']}" if mode == "offline" else None
        return info
    if isinstance(logger, Logger):
        return {"kind": type(logger).__name__, "dir": logger.log_dir if hasattr(logger, "log_dir") else logger.save_dir}
    return None


def log_images(logger: Logger | bool, images: dict[str, np.ndarray], folder: Path) -> list[Path]:
    """Save each ``[H, W]`` image in [0, 1] as a PNG in ``folder``, and send it to W&B if that is the logger."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for key, array in images.items():
        path = folder / f"{key.replace('/', '_')}.png"
        Image.fromarray((np.clip(array, 0, 1) * 255).astype(np.uint8)).save(path)
        paths.append(path)
    if isinstance(logger, WandbLogger) and images:
        for key, array in images.items():
            logger.log_image(key=key, images=[array])
    return paths


def finish(logger: Logger | bool) -> None:
    """Close the W&B run of this job (needed once per Hydra job, or multirun jobs share a run)."""
    if isinstance(logger, WandbLogger):
        import wandb

        if wandb.run is not None:
            wandb.finish()
