"""The end-of-run summary printed to the terminal with rich."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

console = Console()


def print_summary(record: dict[str, Any], path: Path) -> None:
    table = Table(title=f"vibench run {record['run_id']} ({record['method']}, {record['dataset']['variant']})", show_header=True)
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key, value in record["metrics"].items():
        table.add_row(key, f"{value:.4f}" if isinstance(value, float) else str(value))
    for key in ("train_s", "inner_s", "test_s", "heldout_fit_s", "gap_s", "train_examples_per_s", "total_s"):
        if key not in record["timing"]:
            continue
        table.add_row(f"time/{key}", str(record["timing"].get(key)))
    console.print(table)
    console.print(f"[bold]record[/bold]  {path}", soft_wrap=True)
    tracking = record.get("tracking") or {}
    if tracking.get("kind") == "wandb":
        where = tracking["url"] or f"{tracking['dir']} (offline; upload with: {tracking['sync_command']})"
        group = f" in group {tracking['group']}" if tracking.get("group") else ""
        console.print(f"[bold]W&B run[/bold] {tracking['id']}{group}: {where}", soft_wrap=True)
    elif tracking:
        console.print(f"[bold]logs[/bold]    {tracking['dir']}", soft_wrap=True)
    console.print(f"[bold]outputs[/bold] {record['output_dir']}", soft_wrap=True)


def print_note(message: str) -> None:
    """A line the user should see before a run starts (e.g. what happened to an old checkpoint)."""
    Console(stderr=True).print(f"[bold]vibench:[/bold] {message}", highlight=False, soft_wrap=True)


def print_error(message: str) -> None:
    Console(stderr=True).print(f"[bold red]vibench: error:[/bold red] {message}", highlight=False, soft_wrap=True)
