"""A run's checkpoint files, ``last.ckpt`` and ``best.ckpt`` (``checkpoint.select=best``), which stay
right when the run is resumed in another folder or on another machine."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

from lightning.pytorch.callbacks import ModelCheckpoint


class _MovableCheckpoint(ModelCheckpoint):
    """A ModelCheckpoint under ModelCheckpoint's own state key (so that checkpoints written before
    these classes still restore them) that can tell when the run was resumed from another folder."""

    @property
    def state_key(self) -> str:
        return "ModelCheckpoint" + super().state_key.removeprefix(type(self).__qualname__)

    def moved(self, state_dict: dict[str, Any]) -> bool:
        """Whether the checkpoint's recorded folder is another one than this callback's."""
        old_dir = state_dict.get("dirpath")
        return bool(old_dir) and Path(old_dir).resolve() != Path(self.dirpath).resolve()


class BestCheckpoint(_MovableCheckpoint):
    """``<dirpath>/best.ckpt``: the model of the highest ``val/elbo`` so far, over the whole run.

    Lightning's ModelCheckpoint reloads its best score only when the checkpoint folder is unchanged
    (otherwise it warns and keeps just the path). A run continued with ``resume=PATH`` in another
    output folder would then count its first validation as the best and select among the new
    epochs alone, silently. On such a resume this callback copies the earlier ``best.ckpt`` into the
    new folder (the old folder is never changed) and restores the score with it. The earlier best
    is looked for in the new folder (a run folder moved whole), at its recorded path, and beside
    the checkpoint resumed from (``resumed_folder``: a run folder copied from another machine); a
    file is taken only if it was saved with the run's best score.
    """

    def __init__(self, dirpath: str | Path, resumed_folder: str | Path | None = None):
        super().__init__(dirpath=dirpath, filename="best", monitor="val/elbo", mode="max", save_top_k=1, enable_version_counter=False)
        self.resumed_folder = Path(resumed_folder) if resumed_folder else None

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        old_best = state_dict.get("best_model_path")
        if old_best and self.moved(state_dict):
            name, score = Path(old_best).name, state_dict["best_model_score"]
            here = Path(self.dirpath) / name
            candidates = [here, Path(old_best)] + ([self.resumed_folder / name] if self.resumed_folder else [])
            found = next((p for p in candidates if self._holds(p, score)), None)
            if found is not None:
                if found != here:
                    here.parent.mkdir(parents=True, exist_ok=True)
                    tmp = here.with_name(f"{here.name}.{os.getpid()}.tmp")  # one per process: DDP ranks copy side by side
                    shutil.copy2(found, tmp)
                    os.replace(tmp, here)
                state_dict = {**state_dict, "dirpath": self.dirpath, "best_model_path": str(here), "kth_best_model_path": str(here), "best_k_models": {str(here): score}, "kth_value": score, "last_model_path": ""}
        super().load_state_dict(state_dict)

    def _holds(self, path: Path, score: Any) -> bool:
        """Whether ``path`` is this run's best checkpoint: a file saved with this best score (a path
        from another machine may name another run's file here)."""
        if score is None or not path.is_file():
            return False
        import torch

        saved = torch.load(path, map_location="cpu", weights_only=False).get("callbacks", {}).get(self.state_key, {})
        return saved.get("best_model_score") is not None and float(saved["best_model_score"]) == float(score)


class LastCheckpoint(_MovableCheckpoint):
    """``<dirpath>/last.ckpt``, rewritten at each interval (Lightning's ``save_last`` only copies top-k
    saves). It monitors nothing, so a resume from another folder has no score to lose: the folder
    recorded in the checkpoint is taken as this one, without Lightning's warning that best scores
    "won't be reloaded" (which, printed on every move of a run, read as if selection were broken)."""

    def __init__(self, dirpath: str | Path, every_n_epochs: int | None, every_n_train_steps: int | None):
        super().__init__(dirpath=dirpath, filename="last", save_top_k=1, enable_version_counter=False, every_n_epochs=every_n_epochs, every_n_train_steps=every_n_train_steps)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if self.moved(state_dict):
            here = Path(self.dirpath) / "last.ckpt"
            state_dict = {**state_dict, "dirpath": self.dirpath, "best_model_path": str(here) if here.is_file() else "", "last_model_path": ""}
        super().load_state_dict(state_dict)
