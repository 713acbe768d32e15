"""What a run prints with rich: the training progress bar and the end-of-run summary."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from lightning.pytorch.callbacks import RichProgressBar
from rich.console import Console
from rich.table import Table

console = Console()


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
        start, done = self._segment_start, run_fraction(trainer)
        if start[1] is not None and done is not None and done > start[1]:
            elapsed = time.monotonic() - start[0]
            if elapsed >= 10:  # the first seconds (compiling, warm-up) say little about the rate
                metrics["run left"] = duration(elapsed / (done - start[1]) * (1 - done))
        return metrics


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
