"""Which model a run tests: the end of training, the best validation epoch, or a given checkpoint.

Each function loads the weights it chooses into the module and returns the record's
``evaluated_checkpoint`` entry: how it was selected, the file, and its epochs of training.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from vibench.analyses import load_checkpoint
from vibench.errors import ConfigError


def evaluate_request(evaluate: str | None) -> Path | None:
    """``evaluate=PATH``: the checkpoint (or run folder's ``checkpoints/last.ckpt``) to test without training."""
    if evaluate is None:
        return None
    path = Path(str(evaluate)).expanduser()
    if path.is_dir():
        path = path / "checkpoints" / "last.ckpt"
    if not path.is_file():
        raise ConfigError(f"evaluate={evaluate}: no checkpoint at {path}. Give a .ckpt file (e.g. a run's checkpoints/best.ckpt) or a run's output folder.")
    return path


def epochs_trained(state: dict, datamodule) -> int:
    """Whole epochs of training behind a checkpoint, from its optimizer steps (Lightning's own
    ``epoch`` field counts differently in a validation-end save and in the end-of-fit save)."""
    return int(state.get("global_step", 0)) // max(1, datamodule.steps_per_epoch())


def load_weights(path: Path, module) -> dict:
    """Load the weights of the checkpoint at ``path`` into ``module`` (old keys renamed by its
    ``on_load_checkpoint``); returns the checkpoint."""
    state = load_checkpoint(path)
    module.on_load_checkpoint(state)
    module.load_state_dict(state["state_dict"])
    return state


def given(path: Path, module, datamodule) -> tuple[dict[str, Any], int | None]:
    """Load a given checkpoint (``evaluate=``, ``gap.checkpoint=``): its record entry and its global step."""
    state = load_weights(path, module)
    return {"select": "given", "path": str(path), "epoch": epochs_trained(state, datamodule)}, state.get("global_step")


def after_training(select: str, trainer, module, output_dir: Path, datamodule) -> dict[str, Any]:
    """Load the model that is to be tested into ``module`` and say which one it is, for the record.

    ``last``: the weights at the end of training, as they are. ``best``: ``checkpoints/best.ckpt``,
    the epoch with the best ``val/elbo`` (Lightning's ModelCheckpoint monitoring it).
    """
    last_epoch = trainer.current_epoch  # epochs completed
    if select != "best":
        return {"select": "last", "epoch": last_epoch, "path": str(output_dir / "checkpoints" / "last.ckpt")}
    best = next((c for c in trainer.checkpoint_callbacks if c.monitor == "val/elbo"), None)
    if best is None or not best.best_model_path:
        raise ConfigError("checkpoint.select=best needs a validation ELBO, and no validation epoch ran: validate at least once (trainer.limit_val_batches > 0).")
    state = load_weights(Path(best.best_model_path), module)
    return {"select": "best", "epoch": epochs_trained(state, datamodule), "path": best.best_model_path, "val_elbo": float(best.best_model_score), "last_epoch": last_epoch}
