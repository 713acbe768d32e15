"""Which model a run tests: the end of training, the best validation epoch, or a given checkpoint.

Each function loads the weights it chooses into the module and returns the record's
``evaluated_checkpoint`` entry: how it was selected, the file, and its epochs of training.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from vibench.analyses import load_checkpoint
from vibench.errors import ConfigError

# Settings of a run that may differ between a checkpoint's training and a run that tests it
# (``evaluate=``, ``gap.checkpoint=``): how and on what it is tested, and how long its training was
# meant to be (a look at a run under way). Everything else describes the model, and the record of
# the test must describe the model it tested. Prefixes end with a dot.
TEST_ONLY_KEYS = (
    "evaluate", "iw_samples", "inference.iw_samples", "eval.", "inference.eval_repeats", "inference.eval_chunk_mib", "inference.eval_compile",
    "inference.train_compile", "checkpoint.select",
    "dataset.test_subset", "dataset.eval_batch_size", "gap.", "ais.", "diagnostics.",
    "trainer.max_epochs", "trainer.max_steps", "early_stopping.", "trainer.accelerator", "trainer.devices", "trainer.deterministic",
    "trainer.inference_mode", "trainer.num_sanity_val_steps", "trainer.enable_model_summary",
)


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


def model_differences(trained: dict[str, Any], tested: dict[str, Any]) -> list[str]:
    """Settings (``key: trained -> tested``, of two :func:`~vibench.resume.result_config` dicts)
    that describe the model and differ between a checkpoint's training and the run testing it.
    ``dataset.subset_seed`` picks the test subset, and may differ, unless it also picked the
    training or validation subset."""
    from vibench.resume import differences, same_run_keys

    trained, tested = same_run_keys(trained), same_run_keys(tested)
    test_only = list(TEST_ONLY_KEYS)
    if all(c.get(f"dataset.{s}_subset") is None for c in (trained, tested) for s in ("train", "val")):
        test_only.append("dataset.subset_seed")
    key = lambda d: d.split(":", 1)[0]  # noqa: E731
    return [d for d in differences(trained, tested) if not any(key(d) == k or (k.endswith(".") and key(d).startswith(k)) for k in test_only)]


def check_same_model(path: Path, config: dict[str, Any], what: str = "evaluate") -> str | None:
    """Refuse to test the checkpoint at ``path`` under settings that describe another model than
    the one it trained (the record would say, and ``vibench.check`` and ``vibench.compare`` would
    believe, that it is that other model). ``config`` is this run's result config. Returns a note
    when the checkpoint stores no configuration to check against (an older vibench)."""
    from vibench.resume import saved_state

    trained = saved_state(path).get("config")
    if trained is None:
        return f"{what}={path}: the checkpoint stores no configuration (an older vibench): make sure this command has the settings it was trained with."
    diff = model_differences(trained, config)
    if diff:
        raise ConfigError(
            f"{what}={path}: that checkpoint was trained with other settings than this command gives ({'; '.join(diff[:8])}{'; ...' if len(diff) > 8 else ''}; "
            "as 'trained -> this command'). The record would describe another model than the one tested. Give the settings it was trained with "
            "(its preset, seed and overrides: its record.json or .hydra/overrides.yaml); only how it is tested may differ (iw_samples, eval.*, "
            "dataset.test_subset, the training length, ...)."
        )
    return None


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
