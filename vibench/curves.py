"""``python -m vibench.curves RUN_FOLDER [RUN_FOLDER ...]``: learning curves from runs' logs.

One run: its learning curve. Several runs (``--out DIR``, optionally ``--labels ...``): their
validation ELBOs in one figure.

Reads the epoch-level history that a run logged (W&B's offline run file, or Lightning's CSV log,
then vibench's own ``epochs.jsonl``, which holds every epoch a checkpoint holds) from the run's
output folder, and writes ``curve.csv`` (one row per epoch: epoch, step, and every
epoch-level metric: ``val/elbo``, ``train/elbo_epoch``, ``train/lr``, ...) and ``curve.png``.
Given several run folders, it writes ``curve-<label>.csv`` for each and ``compare.png``: their
validation (solid) and training (dashed) ELBOs against the epoch, one colour per run. A circle
marks the model a finished run tested (the best validation epoch or the last; from the
``record.json`` in its folder).
Works offline: W&B's run file is read directly (a LevelDB-style log of protobuf records, the
format W&B's own ``wandb sync`` uploads), so no W&B account or network is needed.
"""

from __future__ import annotations

import argparse
import csv
import json
import struct
import sys
from collections import defaultdict
from pathlib import Path

from vibench import epoch_log
from vibench.epoch_log import EPOCH_KEYS

_BLOCK, _HEADER = 32768, 7  # W&B's run file: 32 KiB blocks of records, each with a 7-byte header
_FULL, _FIRST, _MIDDLE, _LAST = 1, 2, 3, 4


def wandb_records(path: Path) -> list[bytes]:
    """The raw records of a W&B run file (``run-*.wandb``): a 7-byte file header (``:W&B``, magic,
    version), then records of ``crc32 (4) | length (2) | type (1) | data``, split across 32 KiB
    blocks as FIRST/MIDDLE/LAST pieces, blocks padded when fewer than 7 bytes remain."""
    data = path.read_bytes()
    if data[:4] != b":W&B":
        raise ValueError(f"{path} is not a W&B run file")
    records, pos, pending = [], _HEADER, b""
    while pos + _HEADER <= len(data):
        left = _BLOCK - pos % _BLOCK
        if left < _HEADER:
            pos += left
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + _HEADER])
        if length == 0 and kind == 0:  # zero padding up to the block's end
            pos += left
            continue
        piece, pos = data[pos + _HEADER:pos + _HEADER + length], pos + _HEADER + length
        if kind == _FULL:
            records.append(piece)
        elif kind == _FIRST:
            pending = piece
        elif kind == _MIDDLE:
            pending += piece
        elif kind == _LAST:
            records.append(pending + piece)
    return records


def wandb_history(path: Path) -> list[dict]:
    """The history rows (``wandb.log`` calls) of a W&B run file, values decoded from JSON."""
    from wandb.proto import wandb_internal_pb2

    rows = []
    for raw in wandb_records(path):
        record = wandb_internal_pb2.Record()
        record.ParseFromString(raw)
        if record.WhichOneof("record_type") == "history":
            rows.append({(item.key or "/".join(item.nested_key)): json.loads(item.value_json) for item in record.history.item})
    return rows


def csv_history(path: Path) -> list[dict]:
    with open(path) as f:
        return [{k: float(v) for k, v in row.items() if v not in ("", None)} for row in csv.DictReader(f)]


def csv_segment(log: Path) -> tuple[str, int]:
    """``(folder, N)`` of Lightning's ``csv/version_N/metrics.csv``: one per segment of a resumed run,
    sorted in the order they ran (``version_10`` after ``version_9``)."""
    n = log.parent.name.rpartition("_")[2]
    return str(log.parent.parent), int(n) if n.isdigit() else -1


def history(run_dir: Path) -> list[dict]:
    """A run folder's logged rows: its ``epochs.jsonl`` (:mod:`vibench.epoch_log`) alone when that
    begins at epoch 0 (it then holds every epoch, and reading W&B's file takes about a minute for
    3,000 epochs); else W&B's offline run file if there is one, or Lightning's CSV log, followed by
    the rows of ``epochs.jsonl``, which fill the epochs those lost to a kill."""
    own = run_dir / epoch_log.FILE_NAME
    own_rows = epoch_log.read(own) if own.is_file() else []
    if own_rows and own_rows[0].get("epoch") == 0:
        return own_rows
    rows = []
    runs = sorted(run_dir.glob("wandb/offline-run-*/run-*.wandb")) or sorted(run_dir.glob("wandb/run-*/run-*.wandb"))
    if runs:
        rows = [row for run in runs for row in wandb_history(run)]
    elif logs := sorted(run_dir.rglob("metrics.csv"), key=csv_segment):
        rows = [row for log in logs for row in csv_history(log)]
    rows += own_rows
    if not rows and not own.is_file():
        raise FileNotFoundError(f"{run_dir} holds no {epoch_log.FILE_NAME}, no W&B run file (wandb/offline-run-*/run-*.wandb) and no Lightning CSV log (metrics.csv). Is it a run's output folder?")
    return rows


def epoch_curve(rows: list[dict]) -> list[dict]:
    """One row per epoch with the epoch-level metrics logged for it (later values win)."""
    by_epoch: dict[int, dict] = defaultdict(dict)
    for row in rows:
        if "epoch" not in row or not any(k in row for k in EPOCH_KEYS):
            continue
        epoch = int(row["epoch"])
        by_epoch[epoch].update({k: row[k] for k in EPOCH_KEYS if k in row})
        by_epoch[epoch].setdefault("step", row.get("trainer/global_step", row.get("step")))
    return [{"epoch": e, **v} for e, v in sorted(by_epoch.items())]


def missing_epochs(curve: list[dict]) -> list[int]:
    """Epochs between a curve's first and last that its logs lack (a run killed after an epoch's
    checkpoint and before its logger wrote that epoch resumes at the next one, leaving a gap)."""
    epochs = {r["epoch"] for r in curve}
    return sorted(set(range(min(epochs), max(epochs) + 1)) - epochs) if epochs else []


def gap_message(label: str, curve: list[dict]) -> str | None:
    """A warning naming the epochs that ``label``'s curve lacks, or None; at most 10 listed."""
    gaps = missing_epochs(curve)
    if not gaps:
        return None
    shown = ", ".join(map(str, gaps[:10])) + (f" and {len(gaps) - 10} more" if len(gaps) > 10 else "")
    return f"curves: {label}'s logs lack epoch{'s' if len(gaps) > 1 else ''} {shown}; the curve joins its neighbours there"


def tested_point(run_dir: Path, curve: list[dict]) -> tuple[int, float, str] | None:
    """Where the model a run tested sits on its validation curve, from the ``record.json`` that a
    completed run leaves in its folder: ``(epochs of training behind it, its validation ELBO, a
    label)``, or None (a run still training, or no validation that epoch). The curve's x is the
    number of epochs trained (epoch index + 1), as the record's ``evaluated_checkpoint.epoch``."""
    try:
        record = json.loads((run_dir / "record.json").read_text())
    except (OSError, json.JSONDecodeError):
        return None
    tested = record.get("evaluated_checkpoint") or {}
    if record.get("status") != "completed" or tested.get("epoch") is None:
        return None
    epochs = int(tested["epoch"])
    row = next((r for r in curve if r["epoch"] + 1 == epochs and "val/elbo" in r), None)
    if row is None:
        return None
    how = {"best": "the best validation ELBO", "last": "the last epoch", "given": "the given checkpoint"}.get(tested.get("select"), str(tested.get("select")))
    return epochs, float(row["val/elbo"]), f"tested: {how}, epoch {epochs}"


def mark_tested(ax, tested: tuple[int, float, str] | None, colour: str = "black", prefix: str = "") -> None:
    if tested is not None:
        ax.plot([tested[0]], [tested[1]], ls="none", marker="o", ms=8, mfc="none", mew=1.5, color=colour, label=prefix + tested[2], zorder=5)


def write_csv(curve: list[dict], path: Path) -> None:
    """One row per epoch: epoch, step and the epoch-level metrics the run logged."""
    keys = ["epoch", "step", *[k for k in EPOCH_KEYS if any(k in r for r in curve)]]
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=keys, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(curve)


def elbo_axes(ax, *series: list[float]) -> None:
    """Epochs across, ELBO (nats per image) up. Each series is one curve's values in epoch order;
    the axis starts at the lowest value any curve takes after its first tenth of epochs, so that
    the first epochs do not flatten the rest, a curve that falls late (overfitting) stays in view,
    and a short run's whole curve does too."""
    series = tuple(s for s in series if s)
    if series:
        low = min(min(s[len(s) // 10 :]) for s in series)
        ax.set_ylim(low - 0.2, max(max(s) for s in series) + 0.5)
    ax.set_xlabel("epoch")
    ax.set_ylabel("ELBO, nats per image")
    ax.grid(alpha=0.3)


def write(curve: list[dict], out: Path, title: str, tested: tuple[int, float, str] | None = None) -> tuple[Path, Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    write_csv(curve, out / "curve.csv")
    fig, ax = plt.subplots(figsize=(8, 4.2), dpi=110)
    values = []  # one list per curve
    for key, label in (("train/elbo_epoch", "training ELBO (epoch mean)"), ("val/elbo", "validation ELBO")):
        points = [(r["epoch"] + 1, r[key]) for r in curve if key in r]
        if points:
            ax.plot(*zip(*points), label=label)
            values.append([v for _, v in points])
    mark_tested(ax, tested)
    elbo_axes(ax, *values)
    if any("train/lr" in r for r in curve):
        lr = ax.twinx()
        lr.plot([r["epoch"] + 1 for r in curve if "train/lr" in r], [r["train/lr"] for r in curve if "train/lr" in r], color="grey", lw=0.8, ls=":", label="learning rate")
        lr.set_yscale("log")
        lr.set_ylabel("learning rate")
    ax.legend(loc="lower right", fontsize=8)
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(out / "curve.png")
    plt.close(fig)
    return out / "curve.csv", out / "curve.png"


def write_comparison(curves: dict[str, list[dict]], out: Path, title: str, tested: dict[str, tuple[int, float, str] | None] | None = None) -> Path:
    """``curve-<label>.csv`` per run and ``compare.png``: validation (solid) and training (dashed)
    ELBO of every run against the epoch, and a circle on the model each finished run tested."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(8, 4.2), dpi=110)
    values = []  # one list per curve
    for (label, curve), colour in zip(curves.items(), plt.rcParams["axes.prop_cycle"].by_key()["color"] * 10):
        write_csv(curve, out / f"curve-{label}.csv")
        for key, style, what in (("val/elbo", "-", "validation"), ("train/elbo_epoch", "--", "training")):
            points = [(r["epoch"] + 1, r[key]) for r in curve if key in r]
            if points:
                ax.plot(*zip(*points), ls=style, color=colour, lw=1.0, label=f"{label}: {what}")
                values.append([v for _, v in points])
        mark_tested(ax, (tested or {}).get(label), colour, f"{label}: ")
    elbo_axes(ax, *values)
    ax.legend(loc="best", fontsize=8)
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(out / "compare.png")
    plt.close(fig)
    return out / "compare.png"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m vibench.curves", description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", metavar="run", help="a run's output folder (outputs/DATE/TIME, or multirun/DATE/TIME/N); several: compare.png")
    parser.add_argument("--out", default=None, help="where the CSV and PNG files go (default: the run folder; with several runs, required)")
    parser.add_argument("--labels", nargs="+", default=None, help="one name per run for the comparison (default: run1, run2, ...)")
    parser.add_argument("--title", default=None)
    args = parser.parse_args(argv)
    if len(args.runs) > 1 and args.out is None:
        print("curves: several runs need --out DIR for their comparison", file=sys.stderr)
        return 2
    labels = args.labels or [f"run{i + 1}" for i in range(len(args.runs))]
    if len(labels) != len(args.runs) or any(not l.replace("-", "").replace("_", "").replace(".", "").isalnum() for l in labels):
        print(f"curves: give one --labels name per run ({len(args.runs)}), of letters, digits, '-', '_' or '.'", file=sys.stderr)
        return 2
    curves, tested = {}, {}
    for label, run in zip(labels, args.runs):
        try:
            curve = epoch_curve(history(Path(run)))
        except (FileNotFoundError, ValueError) as e:
            print(f"curves: {e}", file=sys.stderr)
            return 2
        if not curve:
            print(f"curves: {run}'s logs hold no epoch-level metrics", file=sys.stderr)
            return 2
        curves[label], tested[label] = curve, tested_point(Path(run), curve)
        if (gap := gap_message(run if len(args.runs) == 1 else label, curve)) is not None:
            print(gap, file=sys.stderr)
    if len(curves) == 1:
        ((_, curve),) = curves.items()
        paths = write(curve, Path(args.out) if args.out else Path(args.runs[0]), args.title or args.runs[0], tested[labels[0]])
        print(f"curves: {len(curve)} epochs -> {paths[0]}, {paths[1]}")
        return 0
    png = write_comparison(curves, Path(args.out), args.title or " vs ".join(labels), tested)
    print(f"curves: {', '.join(f'{k} ({len(v)} epochs)' for k, v in curves.items())} -> {png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
