"""``epochs.jsonl``: a run's epoch-level metrics, on disk before the epoch's checkpoint is.

W&B writes its run file from a separate process, after the training process hands it a row. A run
killed (SIGKILL, a session's end) just after an epoch's ``last.ckpt`` can lose that epoch's row from
W&B's file, and the resumed run starts at the next epoch: the epoch is gone from the learning curve
(the IWAE preset's W&B logs lack epoch 1,162 so). Lightning's CSV logger buffers its rows likewise.

:class:`EpochLog` is a Lightning logger that appends each epoch-level row (the validation metrics,
logged at the validation's end; the training epoch means, logged in the module's
``on_train_epoch_end``) to ``epochs.jsonl`` in the run folder, flushed and ``fsync``-ed before
``log_metrics`` returns. Both rows are logged before Lightning's ``on_train_epoch_end`` checkpoint
save, so every epoch a checkpoint holds is in the file. A resumed run appends to it; a run that
starts from its first epoch in a folder that holds one (a reused ``hydra.run.dir``) moves the old
file aside (``epochs.jsonl-previous``). So a file that begins at epoch 0 holds its run's every
epoch, and :mod:`vibench.curves` reads it alone; otherwise (a run begun before this file existed)
it reads W&B's or the CSV log first and fills the epochs they lack from it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from lightning.pytorch.loggers import Logger
from lightning.pytorch.utilities import rank_zero_only

EPOCH_KEYS = ("val/elbo", "train/elbo_epoch", "train/loss_epoch", "train/kl_epoch", "train/recon_epoch", "train/lr")
FILE_NAME = "epochs.jsonl"


class EpochLog(Logger):
    """Appends rows that carry an ``epoch`` and an :data:`EPOCH_KEYS` metric to ``path``, one JSON
    object a line (``{"epoch": 3, "step": 519, "val/elbo": -97.1, ...}``), synchronously. Rows
    without an epoch (the training windows, the test's metrics) are left to the other loggers."""

    def __init__(self, path: str | Path):
        super().__init__()
        self.path = Path(path)
        self._first = True

    @property
    def name(self) -> str:
        return "epochs"

    @property
    def version(self) -> str:
        return ""

    @rank_zero_only
    def log_hyperparams(self, params: Any, *args: Any, **kwargs: Any) -> None:
        """The configuration is in the run record and W&B; not repeated here."""

    @rank_zero_only
    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        if "epoch" not in metrics or not any(k in metrics for k in EPOCH_KEYS):
            return
        row = {"epoch": int(metrics["epoch"]), "step": step, **{k: float(metrics[k]) for k in EPOCH_KEYS if k in metrics}}
        if self._first and row["epoch"] == 0 and self.path.exists():
            # this run trains from its first epoch: the file is an earlier run's in a reused folder (a resumed
            # run's first row is a later epoch). Kept, renamed, as resume.move_aside does with its checkpoints.
            from vibench.resume import move_aside

            move_aside(self.path, "previous")
        self._first = False
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a") as f:
            f.write(json.dumps(row) + "\n")
            f.flush()
            os.fsync(f.fileno())


def read(path: Path) -> list[dict]:
    """The rows of an ``epochs.jsonl``, in the order written (a row written twice, by an epoch
    trained again after a kill before its checkpoint, comes twice: the later is the one kept). A
    line cut short by a kill mid-write is skipped."""
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return rows
