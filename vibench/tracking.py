"""Experiment tracking: the configured Lightning logger, images, and where things went.

Tracking is configuration (conf/logger/): ``wandb`` (default, offline unless
``logger.mode=online``), ``csv`` or ``none``. One W&B run per Hydra job: :func:`finish` closes it
in the task's ``finally`` so the next job of a multirun opens its own.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from hydra.utils import instantiate
from lightning.pytorch.loggers import Logger, WandbLogger
from omegaconf import DictConfig


def make_logger(cfg: DictConfig | None, config: dict[str, Any], group: str | None, name: str, run_id: str) -> Logger | bool:
    """The logger from ``cfg`` (``False`` for none). W&B gets the resolved config, a group and a name."""
    if cfg is None:
        return False
    if str(cfg.get("_target_", "")).endswith("WandbLogger"):
        # instantiate's own first parameter is called `config`: build a partial, then call it.
        factory = instantiate(cfg, _partial_=True)
        return factory(group=cfg.get("group") or group, name=cfg.get("name") or name, id=run_id, config=config)
    return instantiate(cfg)


def describe(logger: Logger | bool) -> dict[str, Any] | None:
    """Where the logger wrote, for the run record and the final message."""
    if isinstance(logger, WandbLogger):
        run = logger.experiment
        mode = "offline" if run.settings._offline else "online"
        info = {"kind": "wandb", "id": run.id, "project": run.project, "group": run.group, "name": run.name, "mode": mode, "dir": str(Path(run.dir).parent)}
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
