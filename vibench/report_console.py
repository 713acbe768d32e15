"""What a run prints: the training progress (a rich bar on a terminal, plain lines in a log file)
and the end-of-run summary."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from lightning.pytorch.callbacks import Callback, RichProgressBar
from rich.console import Console
from rich.table import Table

console = Console()
progress_log = logging.getLogger("vibench.progress")  # Hydra's job log: stdout and <output_dir>/__main__.log


def run_fraction(trainer) -> float | None:
    """How much of the run is done, 0 to 1: by optimizer steps against ``trainer.max_steps`` and by
    epochs against ``trainer.max_epochs``, whichever is further (the first limit reached ends it)."""
    fractions = []
    if trainer.max_steps and trainer.max_steps > 0:
        fractions.append(trainer.global_step / trainer.max_steps)
    batches = trainer.num_training_batches
    if trainer.max_epochs and trainer.max_epochs > 0 and batches and batches != float("inf"):
        within = trainer.fit_loop.epoch_loop.batch_progress.current.processed / batches
        fractions.append((trainer.current_epoch + within) / trainer.max_epochs)
    return min(1.0, max(fractions)) if fractions else None


def duration(seconds: float) -> str:
    """``45s``, ``13m20s``, ``2h05m``, ``3d04h``."""
    s = int(round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


def time_left(segment_start: tuple[float | None, float | None], trainer) -> float | None:
    """Seconds to the run's ``max_epochs``/``max_steps`` at the rate since ``segment_start`` =
    (clock, run fraction) of this segment's start; ``None`` before 10 s (compiling and warm-up
    say little about the rate) or before any progress."""
    start, done = segment_start, run_fraction(trainer)
    if start[0] is None or start[1] is None or done is None or done <= start[1]:
        return None
    elapsed = time.monotonic() - start[0]
    return elapsed / (done - start[1]) * (1 - done) if elapsed >= 10 else None


class ProgressBar(RichProgressBar):
    """Lightning's rich progress bar, without ``v_num`` (the logger's version: a W&B run id's tail,
    or 0.000 for the CSV logger, shown as if it were a metric), and with ``run left``: the time to
    the run's ``max_epochs``/``max_steps`` at the rate of this segment so far (a resumed run counts
    from its resume; early stopping may end it sooner). Lightning's own bar gives the epoch's time
    only, and an anchor protocol has thousands of epochs."""

    _segment_start: tuple[float | None, float | None] = (None, None)  # (clock, run fraction) at the segment's start

    def on_train_start(self, trainer, pl_module) -> None:
        super().on_train_start(trainer, pl_module)
        self._segment_start = (time.monotonic(), run_fraction(trainer))

    def get_metrics(self, trainer, pl_module):
        metrics = super().get_metrics(trainer, pl_module)
        metrics.pop("v_num", None)
        if (left := time_left(self._segment_start, trainer)) is not None:
            metrics["run left"] = duration(left)
        return metrics


class PlainProgress(Callback):
    """The training progress as plain log lines, for a run whose output goes to a file (``nohup``,
    a batch job), where a live bar shows nothing until the run ends. At the end of an epoch, at most
    one line every ``every_s`` seconds (and always for the segment's first and last epoch), e.g.

        epoch 22/3280 done: train ELBO -95.12, val ELBO -96.30, lr 1.0e-03; 2m48s in this segment, run left 6h20m

    through the ``vibench.progress`` logger: Hydra's job log sends it to stdout and to the run's
    ``<output_dir>/__main__.log``, which stays with its checkpoints. An epoch's line is written
    when the next one starts (or training ends): the module logs its epoch means after the
    callbacks' ``on_train_epoch_end``. The test (minutes at K = 5000) reports its batches the same way."""

    def __init__(self, every_s: float = 60.0):
        self.every_s = every_s
        self._segment_start: tuple[float | None, float | None] = (None, None)
        self._last_line = self._test_start = -float("inf")
        self._first_epoch = 0

    def on_train_start(self, trainer, pl_module) -> None:
        self._segment_start, self._last_line = (time.monotonic(), run_fraction(trainer)), -float("inf")
        self._first_epoch = trainer.current_epoch
        if not trainer.is_global_zero:  # DDP: one process reports, not one line per rank
            return
        first = "resumed at" if trainer.current_epoch > 0 or trainer.global_step > 0 else "training from"
        progress_log.info(f"{first} {position(trainer)}; a line at most every {self.every_s:g} s")

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        if trainer.is_global_zero and trainer.current_epoch > self._first_epoch and time.monotonic() - self._last_line >= self.every_s:
            self._line(trainer)

    def on_train_end(self, trainer, pl_module) -> None:
        if trainer.is_global_zero:
            self._line(trainer)

    def on_test_start(self, trainer, pl_module) -> None:
        if not trainer.is_global_zero:
            return
        self._test_start = self._last_line = time.monotonic()
        k, repeats = getattr(pl_module, "iw_samples", None), getattr(pl_module, "eval_repeats", 1)
        what = f", K = {k} importance samples a point" + (f", {repeats} times" if repeats > 1 else "") if k else ""
        n = sum(trainer.num_test_batches)
        progress_log.info(f"testing: {n} batch{'es' if n != 1 else ''}{what}")

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        if trainer.is_global_zero and time.monotonic() - self._last_line >= self.every_s:
            self._last_line, (done, total) = time.monotonic(), (batch_idx + 1, sum(trainer.num_test_batches))
            elapsed = self._last_line - self._test_start
            progress_log.info(f"testing: batch {done}/{total}; {duration(elapsed)}, test left {duration(elapsed / done * (total - done))}")

    def on_test_end(self, trainer, pl_module) -> None:
        if trainer.is_global_zero:
            progress_log.info(f"testing done in {duration(time.monotonic() - self._test_start)}")

    def _line(self, trainer) -> None:
        self._last_line = time.monotonic()
        m = trainer.callback_metrics
        parts = [f"{label} {float(m[key]):{fmt}}" for key, label, fmt in
                 (("train/elbo_epoch", "train ELBO", ".2f"), ("val/elbo", "val ELBO", ".2f"), ("train/lr", "lr", ".1e")) if key in m]
        timing = f"{duration(self._last_line - self._segment_start[0])} in this segment"
        if (left := time_left(self._segment_start, trainer)) is not None and left > 0:
            timing += f", run left {duration(left)}"
        best = [c.best_model_score for c in trainer.checkpoint_callbacks if getattr(c, "monitor", None) == "val/elbo" and c.best_model_score is not None]
        if best:  # checkpoint.select=best: the model that will be tested
            parts.append(f"best val ELBO {float(best[0]):.2f}")
        if (stopper := trainer.early_stopping_callback) is not None and stopper.stopped_epoch > 0:
            timing += f"; stopped early: no better val ELBO in {stopper.patience} epochs"
        progress_log.info(f"{position(trainer)} done: {', '.join(parts) or 'no metrics yet'}; {timing}")


def position(trainer) -> str:
    """``epoch 22/3280``, followed by ``, step 5000/20000`` when ``max_steps`` limits the run."""
    where = f"epoch {trainer.current_epoch}" + (f"/{trainer.max_epochs}" if trainer.max_epochs and trainer.max_epochs > 0 else "")
    return where + (f", step {trainer.global_step}/{trainer.max_steps}" if trainer.max_steps and trainer.max_steps > 0 else "")


def print_summary(record: dict[str, Any], path: Path) -> None:
    table = Table(title=f"vibench run {record['run_id']} ({record['method']}, {record['dataset']['variant']})", show_header=True)
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key, value in record["metrics"].items():
        if isinstance(value, list):  # e.g. test/iw_ll_repeats: one estimate per eval.repeats
            value = ", ".join(f"{v:.3f}" for v in value)
        table.add_row(key, f"{value:.4f}" if isinstance(value, float) else str(value))
    for key in ("train_s", "inner_s", "test_s", "heldout_fit_s", "gap_s", "train_examples_per_s", "total_s"):
        if key not in record["timing"]:
            continue
        table.add_row(f"time/{key}", str(record["timing"].get(key)))
    console.print(table)
    if note := svi_note(record):
        console.print(note, soft_wrap=True)
    console.print(f"[bold]record[/bold]  {path}", soft_wrap=True)
    tracking = record.get("tracking") or {}
    if tracking.get("kind") == "wandb":
        where = tracking["url"] or f"{tracking['dir']} (offline; upload with: {tracking['sync_command']})"
        group = f" in group {tracking['group']}" if tracking.get("group") else ""
        console.print(f"[bold]W&B run[/bold] {tracking['id']}{group}: {where}", soft_wrap=True)
    elif tracking:
        console.print(f"[bold]logs[/bold]    {tracking['dir']}", soft_wrap=True)
    console.print(f"[bold]outputs[/bold] {record['output_dir']}", soft_wrap=True)


def svi_note(record: dict[str, Any]) -> str | None:
    """Why an SVI run's val/elbo and test/elbo differ: different fit budgets for q_i, by design."""
    inference, m = record.get("inference") or {}, record.get("metrics") or {}
    if record.get("method") != "svi" or "test/elbo_inner" not in m:
        return None
    steps = inference.get("inner_steps")
    return (f"[bold]note[/bold]    SVI: val/elbo and test/elbo_inner use q_i after {steps} inner steps (the training-time budget); "
            f"test/elbo and test/iw_ll use the full held-out fit ({m.get('test/heldout_fit_steps', 0):.0f} steps per point on average, "
            f"{m.get('test/heldout_converged', 0):.0%} converged). Compare val/elbo with test/elbo_inner.")


def print_note(message: str) -> None:
    """A line the user should see before a run starts (e.g. what happened to an old checkpoint)."""
    Console(stderr=True).print(f"[bold]vibench:[/bold] {message}", highlight=False, soft_wrap=True)


def print_error(message: str) -> None:
    Console(stderr=True).print(f"[bold red]vibench: error:[/bold red] {message}", highlight=False, soft_wrap=True)
