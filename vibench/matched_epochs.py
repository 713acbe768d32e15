"""Runs side by side at the same epochs: windowed means of a logged metric (``vibench.curves --at``).

Two runs of one protocol (two seeds, a preset and a variant, a finished run and one still
training) are compared fairly only at the same point of their schedules. An epoch's validation
ELBO moves by a few tenths of a nat from one epoch to the next, so each value is the mean over a
window of epochs centred on the one asked for (11 by default: epochs e - 5 .. e + 5). A window
that the run's logs do not fully cover (a run still training, a gap in its logs) gives no value,
never a mean over fewer epochs.

Epochs are the logged epoch indices, from 0 (the ``epoch`` column of ``curve.csv``), not the
epochs-trained count on the figures' x axis (index + 1).
"""

from __future__ import annotations

import csv
from pathlib import Path
from statistics import fmean


def check_window(window: int) -> None:
    """Raise ValueError unless ``window`` is an odd number of epochs (a window centred on an epoch)."""
    if window < 1 or window % 2 == 0:
        raise ValueError(f"window must be an odd number of epochs, got {window}")


def by_epoch(curve: list[dict], key: str) -> dict[int, float]:
    """``{epoch: value of key}`` for the epochs of ``curve`` that logged it."""
    return {int(r["epoch"]): float(r[key]) for r in curve if r.get(key) is not None}


def centred_mean(values: dict[int, float], epoch: int, window: int) -> float | None:
    """Mean of ``values`` over the ``window`` epochs centred on ``epoch``; None if one is missing."""
    half = window // 2
    span = [values.get(e) for e in range(epoch - half, epoch + half + 1)]
    return None if any(v is None for v in span) else fmean(span)


def window_mean(curve: list[dict], epoch: int, window: int = 11, key: str = "val/elbo") -> float | None:
    """Mean of ``key`` over the ``window`` epochs centred on ``epoch`` (``window`` odd), or None
    when any of those epochs lacks the value. ``curve``: one dict per epoch with ``epoch`` and the
    metrics (:func:`vibench.run_logs.epoch_curve`)."""
    check_window(window)
    return centred_mean(by_epoch(curve, key), epoch, window)


def matched_rows(curves: dict[str, list[dict]], epochs: list[int], window: int = 11, key: str = "val/elbo") -> list[dict]:
    """One row per epoch: ``{"epoch": e, <label>: mean or None, ..., "<label> - <first>": difference
    or None}`` for every run after the first, in the order given."""
    check_window(window)
    labels = list(curves)
    values = {label: by_epoch(curve, key) for label, curve in curves.items()}  # once per run, not per epoch asked
    rows = []
    for e in epochs:
        row: dict = {"epoch": e}
        for label in labels:
            row[label] = centred_mean(values[label], e, window)
        for label in labels[1:]:
            a, b = row[labels[0]], row[label]
            row[f"{label} - {labels[0]}"] = None if a is None or b is None else b - a
        rows.append(row)
    return rows


def print_matched(rows: list[dict], window: int, key: str) -> None:
    """The rows as a table on the terminal; an empty cell is a window the run's logs do not cover."""
    from rich.console import Console
    from rich.table import Table

    columns = [c for c in rows[0] if c != "epoch"] if rows else []
    table = Table(title=f"{key}: {window}-epoch means centred on each epoch",
                  caption="an empty cell: the run's logs do not cover that window")
    table.add_column("epoch", justify="right")
    for c in columns:
        table.add_column(c, justify="right")
    for r in rows:
        cells = ["" if r[c] is None else (f"{r[c]:+.2f}" if " - " in c else f"{r[c]:.2f}") for c in columns]
        table.add_row(f"{r['epoch']:,}", *cells)
    Console(width=None if Console().is_terminal else 160).print(table)


def write_matched(rows: list[dict], path: Path) -> Path:
    """The rows as a CSV (an empty field where a run's logs do not cover the window)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]) if rows else ["epoch"])
        writer.writeheader()
        writer.writerows({k: "" if v is None else v for k, v in r.items()} for r in rows)
    return path
