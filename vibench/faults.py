"""Surviving faults: atomic checkpoints, SIGTERM saves, exact resume, and non-finite losses.

- :class:`AtomicCheckpointIO` writes every checkpoint to a temporary file and renames it into
  place, so a SIGKILL mid-write never leaves a truncated ``last.ckpt``.
- :class:`ResumeState` stores what Lightning does not: the torch RNG states (reparameterization
  noise, dynamic binarization) and the vibench run id (so a resumed run continues the same W&B
  run and record id). With the stateful batch iterator (:class:`vibench.data.IndexBatches`), a run
  resumed from a mid-epoch checkpoint replays exactly the batches and noise it would have seen.
- :class:`SaveOnSigterm`: SLURM sends SIGTERM before preemption; Lightning stops at the end of
  the current batch and this callback saves a checkpoint there.
- :class:`NonFiniteGuard` stops a run whose loss turns NaN or infinite, naming the step and the
  last good checkpoint, and refuses to save a checkpoint after it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO
from lightning.pytorch.utilities.exceptions import SIGTERMException

from vibench.atomic import atomic_write
from vibench.compiling import CompiledOrEager
from vibench.errors import NonFiniteLoss
from vibench.records import now as records_now


class AtomicCheckpointIO(TorchCheckpointIO):
    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options=None) -> None:
        atomic_write(path, lambda f: torch.save(checkpoint, f))


# What a checkpoint from before the parts were recorded (2026-11-23) says of the steps it trained.
UNRECORDED_PART = {"commit": None, "dirty": None, "from_step": 0, "from_epoch": 0, "started": None, "note": "not recorded: resumed from a checkpoint older than the parts' record"}


class ResumeState(L.Callback):
    """Saves and restores the RNG states and the run id with every checkpoint, and what
    :mod:`vibench.resume` decides by: the run's result-relevant configuration and whether training
    had ``finished`` (set just before the final save).

    It also keeps the run's **parts**: one per start or resume, each with the code it ran (``code``:
    ``{"commit", "dirty", "changed"}``), its first step and epoch and its start time, and how its
    training loss ran (``training_loss``: ``eager``, ``compiled``, or ``compiled, fell back to
    eager``; ``train.compile=auto`` decides at each start, and the compiled loss, given the same
    noise, rounds differently in its last digits, which training amplifies: the same seed trains
    another model compiled than eager). A run resumed
    across sessions and commits says in its record which code trained which steps (:meth:`parts`).
    """

    def __init__(self, run_id: str, config: dict[str, Any] | None = None, code: dict[str, Any] | None = None):
        self.run_id, self.config, self.finished = run_id, config, False
        self.code = code or {"commit": None, "dirty": None}
        self.earlier: list[dict[str, Any]] = []  # the parts before this one, from the checkpoint resumed
        self.current: dict[str, Any] | None = None
        self._loss = None  # the module's training loss in this part (a CompiledOrEager may fall back later)

    def on_train_start(self, trainer, pl_module) -> None:
        # after a resume's restore and the module's on_fit_start (which decides on compiling): the
        # step and epoch this part starts from
        self.current = {**self.code, "from_step": trainer.global_step, "from_epoch": trainer.current_epoch, "started": records_now()}
        self._loss = getattr(pl_module, "_loss", None)

    def parts(self) -> list[dict[str, Any]]:
        """The run's parts so far, oldest first (none before training starts)."""
        if self.current is None:
            return list(self.earlier)
        compiled = isinstance(self._loss, CompiledOrEager)
        how = ("compiled, fell back to eager" if self._loss.failed else "compiled") if compiled else "eager"
        return [*self.earlier, {**self.current, "training_loss": how}]

    def state_dict(self) -> dict[str, Any]:
        state = {"run_id": self.run_id, "config": self.config, "finished": self.finished, "torch_rng": torch.get_rng_state(), "parts": self.parts()}
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            state["cuda_rng"] = torch.cuda.get_rng_state_all()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.run_id = state["run_id"]
        self.earlier = list(state["parts"]) if "parts" in state else [dict(UNRECORDED_PART)]
        torch.set_rng_state(state["torch_rng"])
        if "cuda_rng" in state and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda_rng"])


class SaveOnSigterm(L.Callback):
    """On SIGTERM (Lightning raises at the end of the current batch), save a checkpoint to resume from."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.saved: Path | None = None

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        if isinstance(exception, SIGTERMException) and trainer.state.fn == "fit":
            trainer.save_checkpoint(self.path)
            self.saved = self.path


class NonFiniteGuard(L.Callback):
    """Stops training at the first non-finite loss, naming its step.

    Each step only appends its loss tensor (no host sync); every ``every`` steps, and before any
    checkpoint is saved, the window is checked in one vectorized pass, so a checkpoint never holds
    weights from after a NaN and the first bad step is named exactly.
    """

    def __init__(self, checkpoint_callback=None, every: int = 1):
        self.every, self.checkpoint_callback = max(1, every), checkpoint_callback
        self._losses: list[torch.Tensor] = []
        self._first_step = self._pending = 0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        if loss is None:
            return
        loss = loss.detach().reshape(-1)  # one loss per optimizer step of this Lightning step
        if not self._losses:
            self._first_step = trainer.global_step - len(loss)  # the first step's own index (global_step counts completed steps)
        self._losses.append(loss)
        self._pending += len(loss)
        if self._pending >= self.every:
            self.check(trainer)

    def on_save_checkpoint(self, trainer, pl_module, checkpoint) -> None:
        self.check(trainer)

    def check(self, trainer) -> None:
        if not self._losses:
            return
        finite = torch.isfinite(torch.cat(self._losses))
        self._losses, self._pending = [], 0
        if bool(finite.all()):
            return
        step = self._first_step + int((~finite).nonzero()[0])
        last = getattr(self.checkpoint_callback, "best_model_path", "") or None  # with no monitor: the latest save
        where = f"The last good checkpoint is {last}." if last else "No checkpoint was saved before it."
        raise NonFiniteLoss(
            f"the training loss became NaN or infinite at step {step}; training stopped and no result was recorded as valid. {where} "
            "Lower optimizer.lr, check the data, or resume from the checkpoint with resume=PATH."
        )
