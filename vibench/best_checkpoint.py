"""The checkpoint of the best validation ELBO (``checkpoint.select=best``), kept across a resume into
another output folder."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

from lightning.pytorch.callbacks import ModelCheckpoint


class BestCheckpoint(ModelCheckpoint):
    """``<dirpath>/best.ckpt``: the model of the highest ``val/elbo`` so far, over the whole run.

    Lightning's ModelCheckpoint reloads its best score only when the checkpoint folder is unchanged
    (otherwise it warns and keeps just the path). A run continued with ``resume=PATH`` in another
    output folder would then count its first validation as the best and select among the new
    epochs alone, silently. On such a resume this callback copies the earlier ``best.ckpt`` into the
    new folder (the old folder is never changed) and restores the score with it; a folder moved
    whole to another place (the old path gone, ``best.ckpt`` beside the resumed ``last.ckpt``) keeps
    its own copy.
    """

    def __init__(self, dirpath: str | Path):
        super().__init__(dirpath=dirpath, filename="best", monitor="val/elbo", mode="max", save_top_k=1, enable_version_counter=False)

    @property
    def state_key(self) -> str:
        """ModelCheckpoint's own key, so that checkpoints written before this class still restore it."""
        return "ModelCheckpoint" + super().state_key.removeprefix(type(self).__qualname__)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        old_dir, old_best = state_dict.get("dirpath"), state_dict.get("best_model_path")
        if old_dir and old_best and Path(old_dir).resolve() != Path(self.dirpath).resolve():
            here = Path(self.dirpath) / Path(old_best).name
            score = state_dict["best_model_score"]
            if not self._holds(here, score) and self._holds(Path(old_best), score):
                here.parent.mkdir(parents=True, exist_ok=True)
                tmp = here.with_name(here.name + ".tmp")
                shutil.copy2(old_best, tmp)
                os.replace(tmp, here)
            if self._holds(here, score):
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
